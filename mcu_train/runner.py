"""Running firmware: QEMU for emulated boards, a Linux process for the host board. Either way the serial
line is a TCP server on 127.0.0.1 that waits for one client before the firmware starts, so nothing it prints
is lost; `RunningBoard.url` is what pyserial opens."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import serial

from mcu_train.errors import BoardTimeout, McuTrainError
from mcu_train.link import BoardGone, Link, open_serial

START_TIMEOUT = 10.0  # seconds for the emulator to start listening


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port):
    """Is something listening on 127.0.0.1:port? Read from /proc, because connecting would be the one
    client the emulator accepts."""
    needle = f"0100007F:{port:04X} 00000000:0000 0A"
    with contextlib.suppress(OSError):
        return needle in Path("/proc/net/tcp").read_text()
    return False


def qemu_command(board, elf, port, icount=True, extra_args=()):
    cmd = ["qemu-system-arm", "-M", board.qemu_machine, "-kernel", str(elf), "-display", "none",
           "-monitor", "none", "-semihosting-config", "enable=on,target=native",
           "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
    if icount:
        # One instruction = 1 ns of virtual time: SysTick becomes an exact instruction counter.
        cmd += ["-icount", "shift=0"]
    return cmd + list(extra_args)


class RunningBoard:
    """A started board: `url` for the serial line, `pid`, and `close()`."""

    def __init__(self, board, elf, port=0, icount=True, extra_args=(), detach=False):
        self.board = board
        self.elf = Path(elf)
        if not self.elf.is_file():
            raise McuTrainError(f"firmware {elf} not found")
        for _ in range(3):  # another process may grab the free port first
            self.port = port or free_port()
            self._start(icount, extra_args, detach)
            if self._wait_listening():
                return
            if port:
                break
        raise McuTrainError(f"{board.name} did not start: {self.log_tail()}")

    def _start(self, icount, extra_args, detach):
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ)
        if self.board.is_host:
            cmd = [str(self.elf)]
            env["MT_SERIAL_PORT"] = str(self.port)
        else:
            if shutil.which("qemu-system-arm") is None:
                raise McuTrainError("qemu-system-arm not found: run `make setup`")
            cmd = qemu_command(self.board, self.elf, self.port, icount, extra_args)
        self.command = cmd
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                        env=env, start_new_session=detach)

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _listening(self.port):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.01)
        self.close()
        return False

    @property
    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid

    def log_tail(self, n=2000):
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:].strip() or "(no output)"

    def wait(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BoardTimeout(f"{self.board.name} did not exit within {timeout} s") from None

    def close(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_serial(url, timeout=5.0):
    """Open `url`, retrying while the server is not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_serial(url)
        except BoardGone:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def session(board, elf, handshake_timeout=5.0, **link_args):
    """Boot `elf` on `board`, handshake, and yield (running board, link); both are closed afterwards."""
    with RunningBoard(board, elf) as running:
        link = Link(connect_serial(running.url), **link_args)
        link.url = running.url
        try:
            link.handshake(handshake_timeout)
            yield running, link
        finally:
            link.close()


def run_to_exit(board, elf, timeout=60, stdin=b"", extra_args=()):
    """Run a program that talks on the UART and exits (on-target tests): (exit code, UART output).
    `extra_args` are appended to the emulator's command line (e.g. a TCG plugin)."""
    with RunningBoard(board, elf, extra_args=extra_args) as running:
        ser = connect_serial(running.url)
        try:
            if stdin:
                ser.write(stdin)
            output = bytearray()
            deadline = time.monotonic() + timeout
            while running.process.poll() is None or ser.in_waiting:
                if time.monotonic() > deadline:
                    raise BoardTimeout(f"{Path(elf).name} on {board.name} did not exit within {timeout} s; "
                                       f"output so far: {bytes(output[-500:])!r}")
                try:
                    output += ser.read(max(1, ser.in_waiting))
                except (serial.SerialException, OSError):
                    break  # the emulator closed the socket on exit
        finally:
            ser.close()
        return running.wait(5), bytes(output)


def flash_command(board, firmware, detach=False, port=0):
    """`mcu-train flash`: start an emulated board and show where to connect."""
    if not board.emulated:
        raise McuTrainError(f"{board.name}: flashing real boards with pyOCD is not supported yet")
    running = RunningBoard(board, firmware, port=port, detach=detach)
    print(f"{board.name} running {Path(firmware).name}")
    print(f"serial: {running.url}")
    print(f"pid: {running.pid}")
    if detach:
        return
    print("Ctrl-C stops it.")
    try:
        running.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.close()
