"""`mcu-train flash` for emulated boards: starts the emulator, prints where to connect, cleans up."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mcu_train.link import connect_serial
from mcu_train.link import Link


def start_flash(elf, board, *extra):
    proc = subprocess.Popen([sys.executable, "-m", "mcu_train.cli", "flash", "--board", board, str(elf), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = {}
    while len(lines) < 2:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        if m := re.match(r"(serial|pid): (\S+)", line):
            lines[m.group(1)] = m.group(2)
    return proc, lines["serial"], int(lines["pid"])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.qemu
def test_flash_foreground_until_ctrl_c(firmware):
    proc, url, pid = start_flash(firmware("mps2-an386").elf, "mps2-an386")
    assert url.startswith("socket://127.0.0.1:")
    with Link(connect_serial(url)) as link:
        assert link.handshake().board == "mps2-an386"
        assert link.ping(b"hello") == b"hello"
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(30) == 0  # it stops QEMU first: slow on a loaded machine
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"flash did not stop on Ctrl-C; it printed {proc.communicate()}")
    time.sleep(0.2)
    assert not alive(pid)


def test_flash_detach_leaves_board_running(firmware):
    proc, url, pid = start_flash(firmware("host").elf, "host", "--detach")
    assert proc.wait(10) == 0
    try:
        with Link(connect_serial(url)) as link:
            assert link.handshake().board == "host"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_flash_missing_firmware_is_clear(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mcu_train.cli", "flash", "--board", "host",
                          str(tmp_path / "none.elf")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not found" in out.stderr
