"""`mcu-train selftest`: build the firmware, boot it, handshake, echo pings of random sizes, then damage frames
in every way docs/protocol.md describes and check the documented reaction and that the board recovers."""
import contextlib
import random
import time
from dataclasses import dataclass

from mcu_train.boards.runner import runner_for, session
from mcu_train.link import Pipeline
from mcu_train.link.protocol import (LINK_REASONS, MAX_PAYLOAD, REPLAY_DEPTH, REPLAY_SHORT_PAYLOAD, REPLY, ErrorInfo,
                                     Msg, Reason, cobs_encode, encode_body, encode_frame)

QUIET = 0.3  # seconds of silence that end an exchange


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def exchange(link, raw: bytes, pauses=()):
    """Write raw bytes (in pieces, sleeping between them when `pauses` is given) and collect every frame
    the board sends until it has been quiet for QUIET seconds."""
    pieces = [raw] if not pauses else _split(raw, len(pauses) + 1)
    for i, piece in enumerate(pieces):
        link.write(piece)
        if i < len(pauses):
            time.sleep(pauses[i])
    frames = []
    while (frame := link.read_frame(time.monotonic() + QUIET)) is not None:
        frames.append(frame)
    return frames


def _split(data, n):
    cuts = [len(data) * i // n for i in range(n + 1)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def _errors(frames):
    return [ErrorInfo.unpack(f.payload).reason for f in frames if f.type == Msg.ERROR]


def _wire(body: bytes) -> bytes:
    return b"\x00" + cobs_encode(body) + b"\x00"


def _describe(frames):
    out = []
    for f in frames:
        if f.type == Msg.ERROR:
            out.append(f"ERROR {ErrorInfo.unpack(f.payload).reason_name} seq {f.seq}")
        else:
            out.append(f"{f.type:#04x} seq {f.seq} {len(f.payload)} B")
    return ", ".join(out) or "nothing"


def _valid_ping(link, rng):
    """A valid PING frame with the link's next sequence number, and a check of its reply among `frames`."""
    seq = link.next_seq
    payload = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 64)))
    link.next_seq += 1

    def answered(frames):
        return any(f.type == Msg.PING | REPLY and f.seq == seq and f.payload == payload for f in frames)
    return encode_frame(Msg.PING, seq, payload), answered


# Each fault: (name, documented reaction, function(link, rng) -> (ok, frames seen)).
def fault_bit_flip(link, rng):
    body = bytearray(encode_body(Msg.PING, link.next_seq, bytes(range(1, 41))))
    body[rng.randrange(5, 45)] ^= 1 << rng.randrange(8)
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, _wire(bytes(body)) + ping)
    return _errors(frames) == [Reason.BAD_CRC] and answered(frames), frames


def fault_truncated(link, rng):
    damaged = encode_frame(Msg.PING, link.next_seq, bytes(rng.randrange(1, 256) for _ in range(200)))
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, damaged[:len(damaged) // 2] + ping)  # the next frame's delimiter ends the stub
    errors = _errors(frames)
    return len(errors) == 1 and errors[0] in LINK_REASONS and answered(frames), frames


def fault_oversize(link, rng):
    body = encode_body(Msg.PING, link.next_seq, bytes([0x55]) * (MAX_PAYLOAD + 200))
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, _wire(body) + ping)
    return _errors(frames) == [Reason.TOO_LONG] and answered(frames), frames


def fault_bad_length_field(link, rng):
    body = encode_body(Msg.PING, link.next_seq, b"abc", length=MAX_PAYLOAD + 1)  # CRC valid, length lies
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, _wire(body) + ping)
    return _errors(frames) == [Reason.BAD_LENGTH] and answered(frames), frames


def fault_runt(link, rng):
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, b"\x00\x03\x01\x02\x00" + ping)  # decodes to 3 bytes: shorter than any frame
    return _errors(frames) == [Reason.BAD_LENGTH] and answered(frames), frames


def fault_bad_cobs(link, rng):
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, b"\x00\x09\x01\x02\x00" + ping)  # the code byte runs past the frame's end
    return _errors(frames) == [Reason.BAD_FRAME] and answered(frames), frames


def fault_garbage(link, rng):
    garbage = bytes(rng.randrange(256) for _ in range(300))
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, garbage + ping)
    before_reply = [f for f in frames if f.type == Msg.ERROR]
    only_link_errors = all(r in LINK_REASONS for r in _errors(before_reply))
    return only_link_errors and answered(frames), frames


def fault_split_with_pauses(link, rng):
    ping, answered = _valid_ping(link, rng)
    frames = exchange(link, ping, pauses=(0.1, 0.1, 0.1))
    return len(frames) == 1 and answered(frames), frames


def fault_unknown_type(link, rng):
    seq = link.next_seq
    link.next_seq += 1  # an accepted request, answered with an error: the sequence advances
    frames = exchange(link, encode_frame(0x55, seq, b"?"))
    ok = len(frames) == 1 and frames[0].seq == seq and _errors(frames) == [Reason.UNKNOWN_TYPE]
    return ok, frames


def fault_out_of_order(link, rng):
    frames = exchange(link, encode_frame(Msg.PING, link.next_seq + 5, b"skip"))
    ping, answered = _valid_ping(link, rng)
    frames += exchange(link, ping)
    return _errors(frames) == [Reason.OUT_OF_ORDER] and answered(frames), frames


def fault_duplicate(link, rng):
    ping, answered = _valid_ping(link, rng)
    first = exchange(link, ping)
    again = exchange(link, ping)  # as if our first copy's reply was lost: same bytes back, not run twice
    return answered(first) and again == first, first + again


FAULTS = [
    ("bit flip", "ERROR BAD_CRC, frame dropped", fault_bit_flip),
    ("truncated frame", "one ERROR (BAD_CRC/BAD_FRAME/BAD_LENGTH)", fault_truncated),
    ("oversize frame", "ERROR TOO_LONG once, bytes discarded to the next delimiter", fault_oversize),
    ("length field wrong", "ERROR BAD_LENGTH", fault_bad_length_field),
    ("runt frame", "ERROR BAD_LENGTH", fault_runt),
    ("invalid COBS", "ERROR BAD_FRAME", fault_bad_cobs),
    ("garbage between frames", "link-level ERRORs only", fault_garbage),
    ("frame split with pauses", "reassembled and answered", fault_split_with_pauses),
    ("unknown type", "ERROR UNKNOWN_TYPE with the request's seq", fault_unknown_type),
    ("out-of-order seq", "ERROR OUT_OF_ORDER, sequence unchanged", fault_out_of_order),
    ("duplicate seq", "the cached reply again", fault_duplicate),
]


def run_faults(link, seed=0):
    """Every fault, each followed by a normal PING; returns a list of Check."""
    rng = random.Random(seed)
    checks = []
    for name, reaction, inject in FAULTS:
        ok, frames = inject(link, rng)
        probe = bytes(rng.randrange(256) for _ in range(32))
        recovered = link.ping(probe) == probe
        checks.append(Check(name, ok and recovered, f"expect {reaction}; got {_describe(frames)}"))
    return checks


def run_pings(link, count, seed=0, max_size=None):
    """`count` PINGs of random sizes up to the maximum; each echo must match, in order."""
    rng = random.Random(seed)
    max_size = link.hello.max_payload if max_size is None else max_size
    sent = 0
    for i in range(count):
        size = rng.randrange(max_size + 1)
        payload = (i.to_bytes(4, "little") + bytes(rng.randrange(256) for _ in range(size)))[:size]
        echo = link.ping(payload)
        if echo != payload:
            return Check(f"{count} pings", False, f"ping {i} ({size} B) echoed {len(echo)} B differing")
        sent += size
    return Check(f"{count} pings", True, f"{sent:,} B echoed")


class FaultyLine:
    """Damages a Link's traffic in both directions while active (a context manager): of the frames the host
    writes, some get a bit flipped, some are not sent, some are sent twice, some follow a burst of garbage;
    some frames the board sends are dropped on arrival. Each with probability `rate`, from `rng`."""

    def __init__(self, link, rng, rate=0.08):
        self.link, self.rng, self.rate = link, rng, rate
        self.injected = dict(flipped=0, not_sent=0, duplicated=0, garbage=0, replies_dropped=0)

    def __enter__(self):
        self._write, self._read_frame = self.link.write, self.link.read_frame
        self.link.write, self.link.read_frame = self.write, self.read_frame
        return self

    def __exit__(self, *exc):
        del self.link.write, self.link.read_frame  # back to the class's methods

    def _hit(self):
        return self.rng.random() < self.rate

    def write(self, data):
        rng = self.rng
        if self._hit():
            self.injected["not_sent"] += 1
            return
        if self._hit():
            self.injected["garbage"] += 1
            self._write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
        if self._hit() and len(data) > 4:
            self.injected["flipped"] += 1
            data = bytearray(data)
            data[rng.randrange(1, len(data) - 1)] ^= 1 << rng.randrange(8)
            data = bytes(data)
        self._write(data)
        if self._hit():
            self.injected["duplicated"] += 1
            self._write(data)

    def read_frame(self, deadline):
        frame = self._read_frame(deadline)
        if frame is not None and self._hit():
            self.injected["replies_dropped"] += 1
            return self._read_frame(deadline)
        return frame


def run_pipelined_pings(link, count, seed=0, faults=False, window=REPLAY_DEPTH):
    """`count` PINGs of up to 48 bytes with `window` in flight (go-back-N), optionally through a FaultyLine.
    Every echo must come back once, in order, and the board must have executed each PING exactly once
    (LINK_STATS frames_ok grows by `count`)."""
    rng = random.Random(seed)
    sizes = [rng.randrange(REPLAY_SHORT_PAYLOAD - 3) for _ in range(count)]  # 4 + size <= 48: replayable
    payloads = [i.to_bytes(4, "little") + bytes(rng.randrange(256) for _ in range(size))
                for i, size in enumerate(sizes)]
    before = link.link_stats()["frames_ok"]
    pipe = Pipeline(link, window, timeout=0.5, retries=6, max_go_backs=64)
    echoes, injected = [], {}
    t0 = time.monotonic()
    line = FaultyLine(link, random.Random(seed + 1)) if faults else contextlib.nullcontext()
    with line:
        for i, payload in enumerate(payloads):
            while pipe.full():
                echoes += pipe.poll()
            pipe.send(Msg.PING, payload, tag=i)
        echoes += pipe.drain()
    if faults:
        injected = line.injected
    elapsed = time.monotonic() - t0
    link.drain(0.2)  # answers to duplicates sent at the very end
    executed = link.link_stats()["frames_ok"] - before - 1  # minus this LINK_STATS
    ok = [tag for tag, _ in echoes] == list(range(count)) and [e for _, e in echoes] == payloads \
        and executed == count
    stats = pipe.stats()
    detail = (f"{count} echoes in order, {executed} executed, {count / elapsed:.0f}/s; retransmitted "
              f"{stats['retransmitted']}, go-backs {stats['go_backs']}")
    if faults:
        detail += "; injected " + ", ".join(f"{k} {v}" for k, v in injected.items())
    return Check(f"{count} pipelined pings" + (" with faults" if faults else ""), ok, detail)


def run_selftest(board, pings=200, seed=0, console=None):
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    result = runner_for(board).build()
    console.print(f"built {result.elf}: {result.size_line()}")
    checks = []
    t0 = time.monotonic()
    with session(board, result.elf) as (running, link):
        boot = time.monotonic() - t0
        hello = link.hello
        checks.append(Check("boot + HELLO", boot < 5.0, f"{boot:.2f} s; {hello.board} firmware "
                            f"{hello.firmware_version}, counter in {hello.counter_unit} at {hello.counter_hz:,} Hz"))
        t = time.monotonic()
        check = run_pings(link, pings, seed)
        elapsed = time.monotonic() - t
        check.detail += f" in {elapsed:.1f} s ({pings / elapsed:.0f} round trips/s)"
        checks.append(check)
        checks += run_faults(link, seed)
        checks.append(run_pipelined_pings(link, pings, seed))
        checks.append(run_pipelined_pings(link, pings, seed, faults=True))
        stats = link.link_stats()
        checks.append(Check("no reset, counters", stats["frames_ok"] > pings,
                            ", ".join(f"{k} {v}" for k, v in stats.items())))
    table = Table(title=f"self-test on {board.name}")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, "[green]pass" if c.ok else "[red]FAIL", c.detail)
    console.print(table)
    ok = all(c.ok for c in checks)
    console.print(f"[bold {'green' if ok else 'red'}]{board.name}: {sum(c.ok for c in checks)}/{len(checks)} "
                  f"checks passed")
    return ok
