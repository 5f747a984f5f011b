"""Every emulated board: real firmware booted in QEMU, talked to over its serial socket."""
import signal
import time

import pytest

from mcu_train.boards import emulated_boards, get_board
from mcu_train.boards.runner import session
from mcu_train.boards.selftest import FAULTS, run_faults, run_pings
from mcu_train.errors import BoardTimeout
from mcu_train.link import BoardGone

BOARDS = [b.name for b in emulated_boards()]
pytestmark = pytest.mark.qemu


def test_every_emulated_board_is_known():
    assert set(BOARDS) == {"mps2-an386", "mps2-an500", "mps2-an505", "netduinoplus2", "lm3s6965evb", "microbit",
                           "mps3-an547"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in BOARDS if b != "microbit"])  # its self-test: tests/test_microbit.py
def test_boot_pings_and_faults(firmware, name):
    board = get_board(name)
    t0 = time.monotonic()
    with session(board, firmware(name).elf, handshake_timeout=5.0) as (running, link):
        assert time.monotonic() - t0 < 5.0
        assert link.hello.board == name and link.hello.counter_unit == "instructions"
        before = link.link_stats()
        assert before["stack_unused"] > 0  # stack painting works
        pings = 1000 if name == "mps2-an386" else 250  # the other boards share the protocol code, not the UART
        check = run_pings(link, pings, seed=hash(name) % 1000)
        assert check.ok, check.detail
        for check in run_faults(link, seed=3):
            assert check.ok, f"{name}: {check.name}: {check.detail}"
        after = link.link_stats()
        # The board never reset: its counters only grew, and the request count covers every request.
        assert all(after[k] >= before[k] for k in before if k != "stack_unused")
        assert 0 < after["stack_unused"] <= before["stack_unused"]
        assert after["frames_ok"] >= before["frames_ok"] + pings + len(FAULTS)
        assert after["counter"] > before["counter"]
        assert running.process.poll() is None


def test_emulator_killed_mid_session_is_reported(firmware):
    board = get_board("mps2-an386")
    with session(board, firmware(board.name).elf, timeout=0.5, retries=3) as (running, link):
        assert link.ping(b"x") == b"x"
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
        t0 = time.monotonic()
        with pytest.raises((BoardGone, BoardTimeout)):
            link.ping(b"anyone?")
        assert time.monotonic() - t0 < 2.5


def test_frozen_emulator_times_out(firmware):
    board = get_board("mps2-an386")
    with session(board, firmware(board.name).elf, timeout=0.3, retries=2) as (running, link):
        running.process.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(BoardTimeout):
                link.ping(b"anyone?")
            assert time.monotonic() - t0 < 1.5
        finally:
            running.process.send_signal(signal.SIGCONT)


def test_fault_handler_exits_emulator_instead_of_hanging(tmp_path):
    """A program that faults makes QEMU exit with code 0xFA (via semihosting), never hang."""
    from mcu_train.boards.build import build_elf
    from mcu_train.boards.runner import run_to_exit
    src = tmp_path / "fault.c"
    src.write_text('#include "board.h"\nint main(void) { board_init();\n'
                   '  board_uart_write((const uint8_t *)"bye", 3);\n'
                   '  return *(volatile int *)0xFFFFFFF0; }\n')
    board = get_board("mps2-an386")
    elf = build_elf(board, [src], tmp_path / "fault.elf").elf
    code, output = run_to_exit(board, elf, timeout=20)
    assert output == b"bye" and code == 0xFA
