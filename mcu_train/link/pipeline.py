"""Several requests in flight on one Link (docs/protocol.md, "Several requests in flight"): sequence numbers,
go-back-N retransmission, and the board's replay store, so that nothing is lost or run twice."""
import time
from collections import deque
from dataclasses import dataclass

from mcu_train.errors import BoardTimeout, ProtocolError
from mcu_train.link.connection import DEFAULT_RETRIES, MAX_LINK_ERROR_RETRANSMITS, BoardError, BoardRestarted, _msg_name
from mcu_train.link.protocol import (LINK_REASONS, REPLAY_DEPTH, REPLY, SEQ_MODULO, ErrorInfo, Msg, Reason,
                                     encode_frame, is_boot_hello)


def _ahead(a, b):
    """Is sequence number a after b (modulo 2^16)?"""
    return 0 < (a - b) % SEQ_MODULO < SEQ_MODULO // 2


# A silence of QUIET_FACTOR times the board's usual time per request (at least QUIET_MIN seconds) makes the
# pipeline send its unanswered requests again before the timeout.
QUIET_FACTOR = 5
QUIET_MIN = 0.05
_STEP = object()  # the tag of a request submitted before the last of its group: its reply is not returned


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
    Only requests whose replies are at most REPLAY_SHORT_PAYLOAD bytes may be pipelined (TRAIN, CLASSIFY,
    INPUT_PUT). `submit()` queues a group of requests (the INPUT_PUT chunks of a large input, then its TRAIN)
    that go out as the window allows; only the last one's reply is returned.
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
        self.backlog = deque()  # (type, payload, tag) submitted, not sent yet: the window was full
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
        return len(self.outstanding) + len(self.backlog)

    def full(self):
        return len(self.outstanding) >= self.window or bool(self.backlog)

    def send(self, msg_type, payload=b"", tag=None):
        """Write one request; the caller keeps at most `window` outstanding (see full())."""
        if self.full():
            raise RuntimeError("pipeline full: poll() first")
        return self._send(msg_type, payload, tag)

    def submit(self, requests, tag=None):
        """Queue a group of requests, (type, payload) each, to be sent in order as the window allows (now and
        by poll()). poll() returns the last one's reply as (tag, payload); the replies of those before it are
        dropped, their errors raised."""
        *steps, (msg_type, payload) = requests
        self.backlog.extend([(t, p, _STEP) for t, p in steps] + [(msg_type, payload, tag)])
        self._feed()

    def _feed(self):
        while self.backlog and len(self.outstanding) < self.window:
            self._send(*self.backlog.popleft())

    def _send(self, msg_type, payload, tag):
        link = self.link
        link.check_payload(msg_type, payload)
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
            if req.tag is not _STEP or isinstance(req.reply, BoardError):
                done.append((req.tag, req.reply))
        return done

    def poll(self, timeout=None):
        """Wait for the oldest outstanding request's reply; returns every reply now complete, in order, as
        (tag, payload). A request-level error is raised as BoardError when its turn comes."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        quiet = self.quiet
        silent_since = time.monotonic()
        while self.outstanding or self.backlog:
            done = self._completed()
            self._feed()
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
            deadline = silent_since + timeout  # a timeout is a silence: a group of requests may take long
            self._receive(frame)
        return []

    def drain(self):
        """Wait for every outstanding reply; returns them in order."""
        out = []
        while len(self):
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
