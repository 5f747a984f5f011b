"""The connection to one board: the HELLO handshake, and requests with timeouts and bounded retries, over a
transport from mcu_train.link.transport."""
import contextlib
import time

import serial

from mcu_train.errors import BoardGone, BoardTimeout, McuTrainError, ProtocolError
from mcu_train.link.protocol import (LINK_REASONS, MAX_PAYLOAD, REPLY, SEQ_MODULO, ErrorInfo, FrameDecoder, Hello, Msg,
                                     Reason, encode_frame, is_boot_hello, unpack_link_stats)
from mcu_train.link.transport import open_serial

# A request's reply must arrive within `timeout` seconds; it is sent at most `1 + retries` times.
# So a board that is gone is reported after (1 + retries) * timeout seconds: 4 s by default.
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 3
# Retransmissions caused by error frames (damaged frames) are bounded separately.
MAX_LINK_ERROR_RETRANSMITS = 16


class BoardError(McuTrainError):
    """The board answered a request with an error frame."""

    def __init__(self, request, info: ErrorInfo):
        self.info = info
        super().__init__(f"board rejected {request}: {info.reason_name} (detail {info.detail})")


class BoardRestarted(ProtocolError):
    """The board sent its boot announcement in the middle of a session: it lost its state."""


def _msg_name(msg_type):
    try:
        return Msg(msg_type).name
    except ValueError:
        return f"type {msg_type:#04x}"


class Link:
    def __init__(self, ser, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES):
        self.ser = ser
        self.timeout = timeout
        self.retries = retries
        self.decoder = FrameDecoder()
        self.pending = []  # frames read but not yet consumed
        self.next_seq = 0
        self.hello = None
        self.link_errors_seen = 0
        self.url = None  # set by open(); reopen() needs it
        self.baudrate = 115200

    @classmethod
    def open(cls, url, baudrate=115200, **kw):
        """A Link over the serial line at `url` (`baudrate`: for real serial ports)."""
        link = cls(open_serial(url, baudrate=baudrate), **kw)
        link.url = url
        link.baudrate = baudrate
        return link

    def reopen(self, url=None, timeout=3.0):
        """Open the serial line again after it dropped (same board, same sequence numbers); retries for
        `timeout` seconds while nothing listens at `url` (default: where the link was opened), then raises
        BoardGone."""
        url = url or self.url
        if url is None:
            raise BoardGone("the serial line dropped and its URL is not known: cannot reopen it")
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Exception):
            self.ser.close()
        while True:
            try:
                self.ser = open_serial(url, baudrate=self.baudrate)
                break
            except BoardGone:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.decoder = FrameDecoder()
        self.pending = []

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def max_payload(self):
        """The largest request payload the board accepts (its HELLO says; the protocol's maximum before)."""
        return self.hello.max_payload if self.hello else MAX_PAYLOAD

    def check_payload(self, msg_type, payload):
        if len(payload) > self.max_payload:
            raise ProtocolError(f"{_msg_name(msg_type)} payload of {len(payload)} B exceeds the board's maximum of "
                                f"{self.max_payload} B")

    # --- raw frames ---
    def write(self, data: bytes):
        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise BoardGone(f"connection to the board lost while sending: {e}") from e

    def read_frame(self, deadline):
        """The next frame, or None at the deadline."""
        while not self.pending:
            if time.monotonic() >= deadline:
                return None
            try:
                data = self.ser.read(max(1, self.ser.in_waiting))
            except (serial.SerialException, OSError) as e:
                raise BoardGone(f"connection to the board lost: {e}") from e
            if data:
                self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def drain(self, quiet=0.05):
        """Discard everything the board sends until it has been quiet for `quiet` seconds."""
        while self.read_frame(time.monotonic() + quiet) is not None:
            pass

    # --- requests ---
    def handshake(self, timeout=5.0):
        """Wait for the board's boot HELLO (it may already be past), then synchronise with a HELLO request."""
        deadline = time.monotonic() + timeout
        # The boot announcement tells us the board's UART is ready; some boards drop earlier bytes.
        while (frame := self.read_frame(min(deadline, time.monotonic() + 1.0))) is not None:
            if is_boot_hello(frame):
                break
        self.next_seq = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoardTimeout(f"no HELLO from the board within {timeout:.1f} s")
            try:
                payload = self.request(Msg.HELLO, timeout=min(remaining, self.timeout), retries=0)
                break
            except BoardTimeout:
                continue
        self.hello = Hello.unpack(payload)
        if self.hello.protocol_version != 1:
            raise ProtocolError(f"board speaks protocol version {self.hello.protocol_version}, host speaks 1")
        return self.hello

    def request(self, msg_type, payload=b"", timeout=None, retries=None):
        """Send one request and return its reply payload; retransmit on timeouts and damaged-frame errors."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        self.check_payload(msg_type, payload)
        seq = self.next_seq
        self.next_seq = (seq + 1) % SEQ_MODULO
        frame_bytes = encode_frame(msg_type, seq, payload)
        timeouts = link_retransmits = 0
        self.write(frame_bytes)
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(deadline)
            if frame is None:
                timeouts += 1
                if timeouts > retries:
                    raise BoardTimeout(f"no reply to {_msg_name(msg_type)} (seq {seq}) after {timeouts} "
                                       f"attempt(s) of {timeout:.1f} s: is the board running?")
            elif frame.type == Msg.ERROR:
                info = ErrorInfo.unpack(frame.payload)
                if info.reason in LINK_REASONS:
                    # Something we sent arrived damaged (maybe this request): send it again.
                    self.link_errors_seen += 1
                    link_retransmits += 1
                    if link_retransmits > MAX_LINK_ERROR_RETRANSMITS:
                        raise ProtocolError(f"{_msg_name(msg_type)} kept arriving damaged "
                                            f"({info.reason_name}); check the serial line")
                elif frame.seq == seq:
                    if info.reason == Reason.OUT_OF_ORDER:
                        raise ProtocolError(f"board expected sequence number {info.expected_seq}, got {seq} "
                                            "(did it restart?)")
                    raise BoardError(_msg_name(msg_type), info)
                else:
                    continue  # a stale error about an earlier request
            elif frame.seq == seq and frame.type == msg_type | REPLY:
                return frame.payload
            elif is_boot_hello(frame):
                raise BoardRestarted("the board restarted (it sent a boot HELLO) in the middle of a session")
            else:
                continue  # a repeated reply to an earlier request
            self.write(frame_bytes)
            deadline = time.monotonic() + timeout

    def ping(self, payload=b""):
        return self.request(Msg.PING, payload)

    def link_stats(self):
        return unpack_link_stats(self.request(Msg.LINK_STATS))
