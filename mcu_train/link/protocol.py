"""The serial protocol, host side: framing (COBS + CRC-16), message types and payload layouts.
The specification is docs/protocol.md; tests check this module and firmware/protocol.h against it."""
import struct
from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 1024
HEADER = struct.Struct("<BHH")  # type, seq, payload length
CRC_SIZE = 2
MAX_BODY = HEADER.size + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1
REPLY = 0x80
SEQ_MODULO = 1 << 16
# The board keeps the replies of the last REPLAY_DEPTH accepted requests (all but the last only when their
# payload is at most REPLAY_SHORT_PAYLOAD bytes): so many requests may be in flight at once.
REPLAY_DEPTH = 4
REPLAY_SHORT_PAYLOAD = 48


class Msg(IntEnum):
    HELLO = 0x01
    PING = 0x02
    LINK_STATS = 0x03
    CLASSIFY = 0x10
    PROFILE = 0x11
    MODEL_INFO = 0x12
    INPUT_PUT = 0x13
    TRAIN = 0x20
    CONFIG = 0x21
    STATS = 0x22
    CHECKPOINT_GET = 0x23
    CHECKPOINT_PUT = 0x24
    PERSIST = 0x25  # the trained state in the board's own flash
    LABEL = 0x26  # the label of the window the board asked about (TRAIN reply flag STEP_ASKED)
    REPORT = 0x30  # never requested: a board that trains on its own sensor sends REPORT | REPLY frames unsolicited
    ERROR = 0x7F


class Reason(IntEnum):
    BAD_CRC = 1
    BAD_LENGTH = 2
    UNKNOWN_TYPE = 3
    OUT_OF_ORDER = 4
    TOO_LONG = 5
    BAD_FRAME = 6
    BAD_PAYLOAD = 7
    MODEL_FAILED = 8
    BAD_CHECKPOINT = 9
    BAD_INPUT_CHUNK = 10
    NO_INPUT = 11
    STORAGE_FAILED = 12
    NOT_ASKED = 13  # LABEL refused: detail LabelCheck


class LabelCheck(IntEnum):
    """The detail of a NOT_ASKED error: why LABEL was refused."""
    NOT_PENDING = 1  # the board has no label request waiting
    OTHER_WINDOW = 2  # its request is for another window (the age differs: a newer request replaced it)


class InputChunkCheck(IntEnum):
    """The detail of a BAD_INPUT_CHUNK error: which check of INPUT_PUT failed."""
    BAD_OFFSET = 1  # the offset is not where the staged bytes end (nor 0)
    PAST_END = 2  # the chunk runs past the end of the model's input


HELLO_FLAG_EMULATED = 0x01
HELLO_FLAG_BOOT = 0x02  # the unsolicited announcement after reset
MODEL_INFO_FLAG_TRAINER = 0x01  # the firmware serves TRAIN, CONFIG, STATS and the CHECKPOINT messages
INPUT_PUT_HEAD = struct.Struct("<I")  # offset of the chunk in the model's input; the chunk follows
HELLO_FLAG_RESTORED = 0x04  # the trained state was restored from the board's flash at boot

# Errors about a frame the board could not accept at all: the sender should retransmit.
LINK_REASONS = {Reason.BAD_CRC, Reason.BAD_LENGTH, Reason.TOO_LONG, Reason.BAD_FRAME}


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(body: bytes) -> bytes:
    out = bytearray()
    start = 0
    while True:
        end = start
        while end < len(body) and body[end] != 0 and end - start < 254:
            end += 1
        out.append(end - start + 1)
        out += body[start:end]
        if end == len(body):
            return bytes(out)
        start = end if end - start == 254 else end + 1


def cobs_decode(data: bytes) -> bytes | None:
    """The decoded body, or None when `data` is not valid COBS."""
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        i += 1
        if code == 0 or i + code - 1 > len(data) or 0 in data[i:i + code - 1]:
            return None
        out += data[i:i + code - 1]
        i += code - 1
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def encode_body(msg_type: int, seq: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """Header + payload + CRC. `length` overrides the length field (only fault tests want that)."""
    body = HEADER.pack(msg_type, seq % SEQ_MODULO, len(payload) if length is None else length) + payload
    return body + struct.pack("<H", crc16_ccitt(body))


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """A frame as sent on the wire: delimiter, COBS(body), delimiter."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} B exceeds the protocol maximum of {MAX_PAYLOAD} B")
    return b"\x00" + cobs_encode(encode_body(msg_type, seq, payload)) + b"\x00"


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


class FrameDecoder:
    """Splits a byte stream into frames. Damaged frames are counted in `dropped` and skipped."""

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for chunk_end, part in _split_keep(data):
            if not self._overflow:
                self._buf += part
                if len(self._buf) > MAX_ENCODED:
                    self._overflow = True
                    self._buf.clear()
            if chunk_end:
                frame = self._finish()
                if frame:
                    frames.append(frame)
        return frames

    def _finish(self):
        encoded, overflow = bytes(self._buf), self._overflow
        self._buf.clear()
        self._overflow = False
        if overflow:
            self.dropped += 1
            return None
        if not encoded:
            return None
        frame = decode_body(cobs_decode(encoded))
        if frame is None:
            self.dropped += 1
        return frame


def _split_keep(data):
    """(ends_a_frame, bytes) pieces of `data` split at 0x00 delimiters."""
    parts = data.split(b"\x00")
    for i, part in enumerate(parts):
        yield i < len(parts) - 1, part


def decode_body(body: bytes | None) -> Frame | None:
    if body is None or len(body) < HEADER.size + CRC_SIZE:
        return None
    if crc16_ccitt(body[:-CRC_SIZE]) != struct.unpack("<H", body[-CRC_SIZE:])[0]:
        return None
    msg_type, seq, length = HEADER.unpack_from(body)
    payload = body[HEADER.size:-CRC_SIZE]
    if length != len(payload) or length > MAX_PAYLOAD:
        return None
    return Frame(msg_type, seq, payload)


# --- payloads -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    protocol_version: int
    emulated: bool
    boot: bool  # True for the unsolicited announcement after reset
    max_payload: int
    counter_hz: int
    board: str
    firmware_version: str
    counter_unit: str
    model_hash: str  # hex; empty when no model is compiled in
    restored_seq: int = 0  # sequence number of the flash slot restored at boot (flag 0x04); 0: none

    @property
    def restored(self):
        """Did the board restore its trained state from its own flash at boot?"""
        return self.restored_seq != 0

    @classmethod
    def unpack(cls, p: bytes):
        version, flags, max_payload, counter_hz = struct.unpack_from("<BBHI", p)
        pos = 8
        fields = []
        for _ in range(4):
            n = p[pos]
            fields.append(p[pos + 1:pos + 1 + n])
            pos += 1 + n
        (restored_seq,) = struct.unpack_from("<I", p, pos)
        if pos + 4 != len(p):
            raise ValueError("HELLO payload has trailing bytes")
        if bool(flags & HELLO_FLAG_RESTORED) != (restored_seq != 0):
            raise ValueError("HELLO's restored flag and sequence number disagree")
        board, fw, unit, model_hash = fields
        return cls(version, bool(flags & HELLO_FLAG_EMULATED), bool(flags & HELLO_FLAG_BOOT), max_payload, counter_hz, board.decode(), fw.decode(),
                   unit.decode(), model_hash.hex(), restored_seq)

    def pack(self) -> bytes:
        """The board's encoding (used by tests and by the doc's examples)."""
        flags = (HELLO_FLAG_EMULATED if self.emulated else 0) | (HELLO_FLAG_BOOT if self.boot else 0) | \
            (HELLO_FLAG_RESTORED if self.restored else 0)
        out = struct.pack("<BBHI", self.protocol_version, flags, self.max_payload, self.counter_hz)
        for field in (self.board.encode(), self.firmware_version.encode(), self.counter_unit.encode(),
                      bytes.fromhex(self.model_hash)):
            out += bytes([len(field)]) + field
        return out + struct.pack("<I", self.restored_seq)


@dataclass(frozen=True)
class ErrorInfo:
    reason: int
    expected_seq: int
    detail: int
    STRUCT = struct.Struct("<BHH")

    @classmethod
    def unpack(cls, p: bytes):
        return cls(*cls.STRUCT.unpack(p))

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.reason, self.expected_seq, self.detail)

    @property
    def reason_name(self):
        try:
            return Reason(self.reason).name
        except ValueError:
            return f"reason {self.reason}"


@dataclass(frozen=True)
class ExitInfo:
    outputs: int  # logits (classes)
    scale: float
    zero_point: int


@dataclass(frozen=True)
class ModelInfo:
    """The MODEL_INFO reply: the compiled model's input and exits, as the board describes them."""
    input_size: int  # bytes of one int8 input
    input_dims: tuple  # (N, H, W, C) of the input as sent: channels last
    input_scale: float
    input_zero_point: int
    trainer: bool  # the firmware serves TRAIN, CONFIG, STATS and the CHECKPOINT messages
    exits: tuple  # ExitInfo per exit, shallow to deep
    HEAD = struct.Struct("<I4HfbBB")
    EXIT = struct.Struct("<Hfb")

    @classmethod
    def unpack(cls, p: bytes):
        size, n, h, w, c, scale, zero_point, flags, num_exits = cls.HEAD.unpack_from(p)
        if len(p) != cls.HEAD.size + num_exits * cls.EXIT.size:
            raise ValueError(f"MODEL_INFO payload of {len(p)} B for {num_exits} exits")
        exits = tuple(ExitInfo(*cls.EXIT.unpack_from(p, cls.HEAD.size + k * cls.EXIT.size)) for k in range(num_exits))
        return cls(size, (n, h, w, c), scale, zero_point, bool(flags & MODEL_INFO_FLAG_TRAINER), exits)


def is_boot_hello(frame: Frame) -> bool:
    return frame.type == Msg.HELLO | REPLY and len(frame.payload) > 1 and bool(frame.payload[1] & HELLO_FLAG_BOOT)


LINK_STATS_FIELDS = ("frames_ok", "bad_crc", "bad_length", "too_long", "bad_frame", "unknown_type",
                     "out_of_order", "replayed", "sent", "stack_unused")
# ... then the cost counter (u64) and the bytes lost on reception (u32, appended later).
LINK_STATS_TAIL = ("counter", "rx_overrun")
LINK_STATS = struct.Struct(f"<{len(LINK_STATS_FIELDS)}IQI")


def unpack_link_stats(p: bytes) -> dict:
    return dict(zip(LINK_STATS_FIELDS + LINK_STATS_TAIL, LINK_STATS.unpack(p)))


def pack_link_stats(stats: dict) -> bytes:
    return LINK_STATS.pack(*(stats[k] for k in LINK_STATS_FIELDS + LINK_STATS_TAIL))
