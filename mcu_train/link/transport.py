"""The byte stream to a board: pyserial for any URL (socket:// for QEMU and the host board, /dev/tty* for real
boards, loop:// in unit tests)."""
import socket
import time

import serial
from serial.urlhandler import protocol_socket

from mcu_train.errors import BoardGone


class _SocketSerial(protocol_socket.Serial):
    """socket:// that keeps what arrives while it opens. pyserial's open() ends by discarding the input, but an
    emulator starts the firmware when the connection is accepted: what it prints at once (a kernel harness's
    first results) was lost whenever this process was slow to finish opening."""
    _opening = False

    def open(self):
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def reset_input_buffer(self):
        if not self._opening:
            super().reset_input_buffer()


def open_serial(url, timeout=0.05, baudrate=115200):
    """pyserial for any URL (`baudrate` matters for real ports only); TCP_NODELAY on sockets, or every reply
    stalls ~40 ms in Nagle's algorithm."""
    try:
        if url.startswith("socket://"):
            ser = _SocketSerial(url, timeout=timeout, baudrate=baudrate)
        else:
            ser = serial.serial_for_url(url, timeout=timeout, baudrate=baudrate)
    except (serial.SerialException, OSError) as e:
        raise BoardGone(f"cannot open {url}: {e}") from e
    sock = getattr(ser, "_socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ser


def connect_serial(url, timeout=5.0, baudrate=115200):
    """Open `url`, retrying while the server (or the USB serial port after a reset) is not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_serial(url, baudrate=baudrate)
        except BoardGone:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
