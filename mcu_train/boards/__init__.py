"""Boards: their manifests (boards/<name>/board.toml, manifest.py), building firmware for them (build.py), and
the one interface that runs them whatever they are (runner.py: QEMU in qemu.py, a Linux process in host.py),
plus the link self-test (selftest.py)."""
from mcu_train.boards.manifest import Board, emulated_boards, get_board, list_boards  # noqa: F401
