"""One interface over every way a board runs its firmware, like microTVM's Project API: build, start (flash or
boot), open the serial transport, the cost counter's unit, stop. QEMU (qemu.py), a Linux process (host.py)
and a real board flashed through pyOCD (pyocd.py) implement it; the monitor, infer, bench and selftest only
ever see a BoardRunner.

    runner = runner_for(board)
    firmware = runner.build(model_dir)
    with runner.start(firmware.elf):
        ser = runner.open_transport()     # pyserial object; Link(ser) speaks the protocol over it
"""
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import serial

from mcu_train.errors import BoardTimeout, McuTrainError
from mcu_train.link import Link, connect_serial

START_TIMEOUT = 10.0  # seconds for the emulator or process to start listening


class BoardRunner:
    """How one board runs firmware. Subclasses implement start() and url; the rest is shared."""
    how = "a board"  # how it runs, for messages ("QEMU", "a Linux process")
    counter_unit = "cycles"  # what the board's cost counter counts (HELLO reports the same)

    def __init__(self, board):
        self.board = board

    def build(self, model_dir=None, out_dir=None):
        """The protocol server firmware (with the compiled model in `model_dir`): a BuildResult."""
        from mcu_train.boards.build import build_firmware
        return build_firmware(self.board, model_dir, out_dir)

    def start(self, elf, **options):
        """Flash or boot `elf`; returns self (a context manager that stops the board)."""
        raise NotImplementedError

    @property
    def url(self):
        """Where pyserial finds the board's serial line once started."""
        raise NotImplementedError

    def open_transport(self, timeout=5.0):
        return connect_serial(self.url, timeout)

    @property
    def link_timeout(self):
        """Seconds a request waits for its reply on this board's line (None: the Link's default)."""
        return None

    def stop(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


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


class SocketProcessRunner(BoardRunner):
    """A board that is a local process serving its serial line as a TCP server on 127.0.0.1, which waits for
    one client before the firmware starts, so nothing it prints is lost. Subclasses give the command."""

    def command(self, elf, port, **options):
        raise NotImplementedError

    def environment(self, port):
        return dict(os.environ)

    def start(self, elf, port=0, detach=False, flash_file=None, **options):
        """`flash_file`: the board's persistent flash (default: next to the ELF, so a restart finds it)."""
        self.elf = Path(elf)
        if not self.elf.is_file():
            raise McuTrainError(f"firmware {elf} not found")
        self.flash_file = Path(flash_file) if flash_file else self.elf.with_suffix(".flash")
        for _ in range(3):  # another process may grab the free port first
            self.port = port or free_port()
            self._log = tempfile.TemporaryFile()
            self.command_line = self.command(self.elf, self.port, **options)
            self.process = subprocess.Popen(self.command_line, stdin=subprocess.DEVNULL, stdout=self._log,
                                            stderr=self._log, env=self.environment(self.port),
                                            start_new_session=detach)
            if self._wait_listening():
                return self
            if port:
                break
        raise McuTrainError(f"{self.board.name} did not start: {self.log_tail()}")

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _listening(self.port):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.01)
        self.stop()
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

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    close = stop


def runner_for(board) -> BoardRunner:
    """The runner the board's manifest asks for ([run] in board.toml)."""
    from mcu_train.boards.host import HostProcessRunner
    from mcu_train.boards.pyocd import PyocdRunner
    from mcu_train.boards.qemu import QemuRunner
    if board.qemu_machine:
        return QemuRunner(board)
    if board.run.get("process"):
        return HostProcessRunner(board)
    if board.pyocd_target:
        return PyocdRunner(board)
    raise McuTrainError(f"{board.name}'s manifest says neither how to emulate nor how to flash it")


def start_board(board, elf, **options) -> BoardRunner:
    """Start `elf` on `board` (a context manager that stops it): `runner_for(board).start(elf, **options)`."""
    return runner_for(board).start(elf, **options)


@contextlib.contextmanager
def session(board, elf, handshake_timeout=5.0, **link_args):
    """Boot `elf` on `board`, handshake, and yield (runner, link); both are closed afterwards."""
    with start_board(board, elf) as running:
        if running.link_timeout is not None:  # a real line: never wait less than its speed needs
            link_args["timeout"] = max(link_args.get("timeout", 0), running.link_timeout)
        link = Link(running.open_transport(), **link_args)
        link.url = running.url
        try:
            link.handshake(handshake_timeout)
            yield running, link
        finally:
            link.close()


def run_to_exit(board, elf, timeout=60, stdin=b"", extra_args=()):
    """Run a program that talks on the UART and exits (on-target tests): (exit code, UART output).
    `extra_args` are appended to the emulator's command line (e.g. a TCG plugin)."""
    with start_board(board, elf, extra_args=extra_args) as running:
        ser = running.open_transport()
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
