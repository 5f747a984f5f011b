"""The firmware compiled for Linux: the same protocol code the boards run, behind a loopback socket."""
import os
import signal
import time

import pytest

from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.boards.selftest import run_faults, run_pings
from mcu_train.errors import BoardTimeout
from mcu_train.link import BoardGone

HOST = get_board("host")


def test_pings_and_every_fault(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        assert run_pings(link, 300, seed=1).ok
        for check in run_faults(link, seed=1):
            assert check.ok, f"{check.name}: {check.detail}"
        stats = link.link_stats()
        assert stats["bad_crc"] >= 1 and stats["too_long"] == 1 and stats["replayed"] == 1


@pytest.mark.parametrize("seed", range(3))
def test_fault_sequence_other_seeds(firmware, seed):
    with session(HOST, firmware("host").elf) as (running, link):
        for check in run_faults(link, seed=100 + seed):
            assert check.ok, f"{check.name}: {check.detail}"


def test_board_that_exits_is_reported_at_once(firmware):
    with session(HOST, firmware("host").elf, timeout=0.5, retries=3) as (running, link):
        running.process.kill()
        running.process.wait()
        t0 = time.monotonic()
        with pytest.raises((BoardGone, BoardTimeout)):
            link.ping(b"anyone?")
        assert time.monotonic() - t0 < 2.5


def test_frozen_board_times_out_within_stated_time(firmware):
    with session(HOST, firmware("host").elf, timeout=0.3, retries=2) as (running, link):
        os.kill(running.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(BoardTimeout, match="no reply to PING"):
                link.ping(b"anyone?")
            assert 0.85 < time.monotonic() - t0 < 1.5  # (1 + retries) * timeout
        finally:
            os.kill(running.pid, signal.SIGCONT)
