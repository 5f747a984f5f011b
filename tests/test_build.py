"""Building firmware for every board: sizes, link map, no heap, clear errors."""
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from mcu_train.boards import get_board, list_boards
from mcu_train.boards.build import build_elf
from mcu_train.errors import BuildError, McuTrainError

HEAP_SYMBOLS = {"malloc", "free", "calloc", "realloc", "_malloc_r", "_free_r", "_sbrk", "_sbrk_r", "sbrk"}
CROSS_BOARDS = [b.name for b in list_boards() if not b.is_host]


def elf_symbols(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        names = set()
        for section in elf.iter_sections():
            if isinstance(section, SymbolTableSection):
                names |= {s.name for s in section.iter_symbols() if s.name}
        return names


@pytest.mark.parametrize("name", CROSS_BOARDS)
def test_firmware_links_without_heap(firmware, name):
    result = firmware(name)
    symbols = elf_symbols(result.elf)
    assert {"Reset_Handler", "protocol_poll", "main"} <= symbols
    assert not symbols & HEAP_SYMBOLS, f"heap functions linked: {symbols & HEAP_SYMBOLS}"
    link_map = result.elf.with_suffix(".map").read_text()
    assert "malloc" not in link_map.split("Linker script and memory map")[1]


@pytest.mark.parametrize("name", CROSS_BOARDS)
def test_sizes_fit_and_are_reported(firmware, name):
    result = firmware(name)
    board = get_board(name)
    assert 1000 < result.flash_bytes < 16 * 1024
    assert board.stack_bytes < result.ram_bytes < board.stack_bytes + 8 * 1024
    assert f"flash {result.flash_bytes:,} / {board.flash.size:,} B" in result.size_line()


def test_host_board_builds(firmware):
    assert firmware("host").elf.is_file()


def test_compile_error_is_clear_and_leaves_nothing(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undefined_thing; }\n")
    out = tmp_path / "out" / "broken.elf"
    with pytest.raises(BuildError, match="undefined_thing"):
        build_elf(get_board("mps2-an386"), [src], out)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_ram_overflow_fails_at_link_time(tmp_path):
    src = tmp_path / "big.c"
    src.write_text("#include <stdint.h>\nvolatile uint8_t big[70000];\n"
                   "int main(void) { big[1] = 1; return big[0]; }\n")
    with pytest.raises(BuildError, match="RAM"):
        build_elf(get_board("lm3s6965evb"), [src], tmp_path / "big.elf")  # 64 KB of RAM


def test_unknown_board():
    with pytest.raises(McuTrainError, match="unknown board 'nope'; known boards: .*mps2-an386"):
        get_board("nope")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mcu_train.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_boards_lists_every_board():
    out = cli("boards")
    assert out.returncode == 0
    for board in list_boards():
        assert board.name in out.stdout
    assert "emulated" in out.stdout and "cortex-m33" in out.stdout


def test_cli_build_prints_elf_and_sizes(tmp_path):
    out = cli("build", "--board", "netduinoplus2", "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "firmware.elf" in out.stdout and "flash" in out.stdout and "RAM" in out.stdout


def test_cli_unknown_board_is_one_clear_line():
    out = cli("build", "--board", "nope")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("mcu-train: error: unknown board 'nope'")
