import pytest

from mcu_train.boards import get_board
from mcu_train.boards.build import build_firmware


@pytest.fixture(scope="session")
def firmware(tmp_path_factory):
    """Build the protocol firmware once per board per test session: firmware(board_name) -> BuildResult."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_firmware(get_board(name), out_dir=tmp_path_factory.mktemp(name))
        return built[name]
    return get
