"""The byte stream to a board: pyserial for any URL (socket:// for QEMU and the host board, /dev/tty* for real
boards, loop:// in unit tests)."""
import socket
import time

import serial

from mcu_train.errors import BoardGone


def open_serial(url, timeout=0.05, baudrate=115200):
    """pyserial for any URL (`baudrate` matters for real ports only); TCP_NODELAY on sockets, or every reply
    stalls ~40 ms in Nagle's algorithm."""
    try:
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
