"""Talking to a board: a pyserial transport (socket:// for QEMU and the host board, /dev/tty* for real
boards, loop:// in unit tests), the HELLO handshake, and requests with timeouts and bounded retries."""
import contextlib
import socket
import time
from dataclasses import dataclass

import serial

from mcu_train.errors import BoardTimeout, McuTrainError, ProtocolError
from mcu_train.protocol import (LINK_REASONS, MAX_PAYLOAD, REPLAY_DEPTH, REPLY, SEQ_MODULO, ErrorInfo,
                                FrameDecoder, Hello, Msg, Reason, encode_frame, is_boot_hello, unpack_link_stats)

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


class BoardGone(McuTrainError):
    """The serial connection closed (the emulator exited, the cable was pulled)."""


class BoardRestarted(ProtocolError):
    """The board sent its boot announcement in the middle of a session: it lost its state."""


def open_serial(url, timeout=0.05):
    """pyserial for any URL; TCP_NODELAY on sockets, or every reply stalls ~40 ms in Nagle's algorithm."""
    try:
        ser = serial.serial_for_url(url, timeout=timeout, baudrate=115200)
    except (serial.SerialException, OSError) as e:
        raise BoardGone(f"cannot open {url}: {e}") from e
    sock = getattr(ser, "_socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ser


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

    @classmethod
    def open(cls, url, **kw):
        link = cls(open_serial(url), **kw)
        link.url = url
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
                self.ser = open_serial(url)
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
        max_payload = self.hello.max_payload if self.hello else MAX_PAYLOAD
        if len(payload) > max_payload:
            raise ValueError(f"{_msg_name(msg_type)} payload of {len(payload)} B exceeds the maximum "
                             f"of {max_payload} B")
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


def _ahead(a, b):
    """Is sequence number a after b (modulo 2^16)?"""
    return 0 < (a - b) % SEQ_MODULO < SEQ_MODULO // 2


# A silence of QUIET_FACTOR times the board's usual time per request (at least QUIET_MIN seconds) makes the
# pipeline send its unanswered requests again before the timeout.
QUIET_FACTOR = 5
QUIET_MIN = 0.05


@dataclass
class _Outstanding:
    msg_type: int
    frame: bytes
    tag: object
    sent_at: float = 0.0  # last (re)transmission
    reply: object = None  # payload bytes, or a BoardError for a request-level error
    answered: bool = False


class Pipeline:
    """Up to `window` requests in flight on a Link (docs/protocol.md, "Several requests in flight").

    `send()` numbers and writes a request; `poll()` returns the completed ones in request order as
    (tag, reply payload). A damaged or lost request, a lost reply, an OUT_OF_ORDER error or a timeout makes
    the pipeline send again, in order, every outstanding request without a reply (go-back-N); the board
    answers those it had accepted from its stored replies, so no request runs twice and none is skipped.
    Only requests whose replies are at most REPLAY_SHORT_PAYLOAD bytes may be pipelined (TRAIN, CLASSIFY).
    The Link's own `request()` can be used between pipelined requests once `drain()` returned."""

    def __init__(self, link, window=REPLAY_DEPTH, timeout=None, retries=DEFAULT_RETRIES,
                 max_go_backs=MAX_LINK_ERROR_RETRANSMITS):
        if not 1 <= window <= REPLAY_DEPTH:
            raise ValueError(f"window of {window} requests: the board replays at most {REPLAY_DEPTH}")
        self.link = link
        self.window = window
        self.timeout = link.timeout if timeout is None else timeout
        self.retries = retries
        self.max_go_backs = max_go_backs
        self.outstanding = {}  # seq -> _Outstanding, in sending order (dicts keep insertion order)
        self.unanswered_frames = 0  # frames written whose answer has not arrived (every frame gets one)
        self.stale = 0  # answers still due to frames written before the last retransmission
        self.timeouts = 0  # consecutive timeouts without progress
        self.go_backs_without_progress = 0
        # How long the board takes per request (moving average), and so how long a silence means a lost reply.
        self.service_time = None
        self.last_completion = 0.0
        self.quiet = None  # seconds of silence after which the unanswered requests are sent again (no retry)
        # Counters for reports.
        self.sent = 0
        self.retransmitted = 0
        self.go_backs = 0
        self.link_errors = 0
        self.stale_ignored = 0
        self.total_timeouts = 0
        self.nudges = 0

    def __len__(self):
        return len(self.outstanding)

    def full(self):
        return len(self.outstanding) >= self.window

    def send(self, msg_type, payload=b"", tag=None):
        """Write one request; the caller keeps at most `window` outstanding (see full())."""
        if self.full():
            raise RuntimeError("pipeline full: poll() first")
        link = self.link
        max_payload = link.hello.max_payload if link.hello else MAX_PAYLOAD
        if len(payload) > max_payload:
            raise ValueError(f"{_msg_name(msg_type)} payload of {len(payload)} B exceeds {max_payload} B")
        seq = link.next_seq
        link.next_seq = (seq + 1) % SEQ_MODULO
        req = _Outstanding(msg_type, encode_frame(msg_type, seq, payload), tag, time.monotonic())
        self.outstanding[seq] = req
        self.sent += 1
        self._write(req.frame)  # if the line is gone, the request stays outstanding: reset_line() resends it
        return seq

    def _write(self, frame):
        self.link.write(frame)
        self.unanswered_frames += 1

    def go_back(self, reason="", presume_lost=False, counted=True):
        """Send again, in order, every outstanding request that has no reply yet."""
        self.go_backs += 1
        if counted:
            self.go_backs_without_progress += 1
        if self.go_backs_without_progress > self.max_go_backs:
            raise ProtocolError(f"requests kept failing ({reason}) after {self.max_go_backs} retransmissions; "
                                "check the serial line")
        if presume_lost:
            self.unanswered_frames = 0
        self.stale = self.unanswered_frames
        now = time.monotonic()
        for req in self.outstanding.values():
            if not req.answered:
                self._write(req.frame)
                req.sent_at = now
                self.retransmitted += 1

    def reset_line(self):
        """After the serial line was reopened: everything in flight is presumed lost; send it again."""
        self.unanswered_frames = self.stale = 0
        if any(not r.answered for r in self.outstanding.values()):
            self.go_back("connection dropped", presume_lost=True)

    def _completed(self):
        done = []
        while self.outstanding:
            seq, req = next(iter(self.outstanding.items()))
            if not req.answered:
                break
            del self.outstanding[seq]
            done.append((req.tag, req.reply))
        return done

    def poll(self, timeout=None):
        """Wait for the oldest outstanding request's reply; returns every reply now complete, in order, as
        (tag, payload). A request-level error is raised as BoardError when its turn comes."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        quiet = self.quiet
        silent_since = time.monotonic()
        while self.outstanding:
            done = self._completed()
            if done:
                for tag, reply in done:
                    if isinstance(reply, BoardError):
                        raise reply
                return done
            wake = deadline if quiet is None else min(deadline, silent_since + quiet)
            frame = self.link.read_frame(wake)
            if frame is None and time.monotonic() < deadline:
                # Silent for several times what a request usually takes: a reply (or the last request) was
                # probably lost, and nothing after it will reveal the gap. Send the unanswered ones again (the
                # board replays what it already ran); not a retry, and the wait doubles each time.
                self.nudges += 1
                self.go_back("silence", counted=False)
                quiet *= 2
                silent_since = time.monotonic()
                continue
            if frame is None:
                self.timeouts += 1
                self.total_timeouts += 1
                if self.timeouts > self.retries:
                    oldest = next(iter(self.outstanding))
                    raise BoardTimeout(f"no reply to {_msg_name(self.outstanding[oldest].msg_type)} (seq {oldest}) "
                                       f"after {self.timeouts} attempt(s) of {timeout:.1f} s: is the board running?")
                self.go_back("timeout", presume_lost=True)
                deadline = time.monotonic() + timeout
                silent_since = time.monotonic()
                continue
            silent_since = time.monotonic()
            self._receive(frame)
        return []

    def drain(self):
        """Wait for every outstanding reply; returns them in order."""
        out = []
        while self.outstanding:
            out += self.poll()
        return out

    def _receive(self, frame):
        self.unanswered_frames = max(0, self.unanswered_frames - 1)
        stale = self.stale > 0
        if stale:
            self.stale -= 1
        req = self.outstanding.get(frame.seq)
        if frame.type == Msg.ERROR:
            info = ErrorInfo.unpack(frame.payload)
            if info.reason in LINK_REASONS:
                self.link_errors += 1
                self.link.link_errors_seen += 1
                if stale:
                    self.stale_ignored += 1
                else:
                    self.go_back(info.reason_name)
            elif info.reason == Reason.OUT_OF_ORDER:
                if stale or req is None or req.answered:
                    self.stale_ignored += 1
                elif _ahead(info.expected_seq, frame.seq):
                    raise ProtocolError(f"the board no longer has its reply to seq {frame.seq} (it expects "
                                        f"{info.expected_seq}): only requests with replies of at most 48 bytes "
                                        "may be pipelined")
                else:
                    self.go_back("OUT_OF_ORDER")
            elif req is not None and not req.answered:
                req.reply, req.answered = BoardError(_msg_name(req.msg_type), info), True
                self._progress(req)
        elif req is not None and frame.type == req.msg_type | REPLY:
            if not req.answered:
                req.reply, req.answered = frame.payload, True
                self._progress(req)
                # Replies come in request order: an earlier request still without one lost its reply.
                earlier_missing = False
                for seq, r in self.outstanding.items():
                    if seq == frame.seq:
                        break
                    earlier_missing |= not r.answered
                if earlier_missing and not stale:
                    self.go_back("reply lost")
        elif is_boot_hello(frame):
            raise BoardRestarted("the board restarted (it sent a boot HELLO) in the middle of a session")

    def _progress(self, req):
        self.timeouts = 0
        self.go_backs_without_progress = 0
        now = time.monotonic()
        # The board's time for this request: from when it could start on it to its reply.
        took = now - max(req.sent_at, self.last_completion)
        self.last_completion = now
        self.service_time = took if self.service_time is None else 0.8 * self.service_time + 0.2 * took
        self.quiet = min(self.timeout / 2, max(QUIET_MIN, QUIET_FACTOR * self.service_time))

    def stats(self):
        return dict(sent=self.sent, retransmitted=self.retransmitted, go_backs=self.go_backs,
                    link_errors=self.link_errors, stale_ignored=self.stale_ignored, timeouts=self.total_timeouts,
                    nudges=self.nudges)
