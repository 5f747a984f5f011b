"""On-device training, host side: `Trainer`, the client that drives a board built with `mcu-train compile
--train ...` (TRAIN / CONFIG / STATS / CHECKPOINT, docs/protocol.md). The records it sends and receives are
codegen.trainer_abi's, shared with the golden model."""
import struct
from dataclasses import dataclass

import numpy as np

from codegen import quant
from codegen.trainer_abi import (FLAG_INVALID, FLAG_LABEL, NO_CLASS, PUT_COMMITTED, PUT_RECEIVING,  # noqa: F401
                                 PUT_VERIFIED, STEP_ASKED, STEP_EXPLORED, STEP_LABEL, STEP_PERSONALISED, STEP_PREDICTED_HARD,
                                 STEP_PSEUDO, ExitStats, FilterMode, Outcome, ServeMode, TrainConfig, TrainStats,
                                 TrainStep, checkpoint_crc)
from mcu_train.errors import McuTrainError
from mcu_train.link.model_client import check_model_hash, input_requests, request_each
from mcu_train.link.protocol import Msg, encode_frame

CHECKPOINT_CHUNK = 1016  # data bytes per CHECKPOINT_GET / _PUT frame (payload maximum 1024 - 8 header bytes)
# A flash write erases a sector (up to seconds on STM32) before its reply: PERSIST waits this long.
PERSIST_TIMEOUT = 15.0


@dataclass(frozen=True)
class PersistStatus:
    """PERSIST reply: the board's persisted trained state (docs/protocol.md)."""
    seq: int  # sequence number of the newest valid slot; 0: nothing stored
    slot: int  # which slot holds it; 255: none
    restored_seq: int  # sequence number restored at boot; 0: none
    stored_bytes: int  # bytes a write programs (header page, CONFIG, checkpoint image)
    slot_bytes: int  # capacity of a slot
    writes: int  # slots written since boot
    cost: int  # cost counter units of the last write
    last_error: int  # of the last write: 0, or the STORAGE_FAILED detail
    STRUCT = struct.Struct("<IBIIIIIB")


class PersistOp:
    STATUS, WRITE, FORGET, WRITE_AND_HALT = range(4)
def window_to_wire(meta, x):
    """One float window in the model's layout (C, L) -> (int8 NHWC bytes, invalid flag). Non-finite
    readings cannot be quantised: they are sent as the saturation code -128 and the window is flagged."""
    x = np.asarray(x, np.float32)
    want = tuple(meta["input_shape"][1:])
    if x.shape != want:
        raise McuTrainError(f"a window has shape {x.shape}; the model takes {want}")
    bad = ~np.isfinite(x)
    q = quant.quantize(np.where(bad, 0.0, x), meta["input_scale"], meta["input_zero_point"])
    q = np.where(bad, -128, q).astype(np.int8)
    return np.ascontiguousarray(np.moveaxis(q, 0, -1)).reshape(-1), bool(bad.any())


class Trainer:
    """TRAIN / CONFIG / STATS / CHECKPOINT over a Link to a board built with a trainer."""

    def __init__(self, link, meta):
        if "train" not in meta:
            raise McuTrainError("this model was compiled without --train: the board has no trainer")
        check_model_hash(link, meta)
        self.link = link
        self.meta = meta
        self.num_exits = len(meta["exits"])

    def train(self, x_q, label=None, invalid=False) -> TrainStep:
        """One window (int8 NHWC, as CLASSIFY takes it), optionally labelled."""
        return TrainStep.unpack(request_each(self.link, self.train_requests(x_q, label, invalid), timeout=30.0))

    def train_requests(self, x_q, label=None, invalid=False):
        """The requests of one TRAIN window, as (type, payload): several when the input is staged first (a
        Pipeline sends them with submit())."""
        flags = (FLAG_LABEL if label is not None else 0) | (FLAG_INVALID if invalid else 0)
        head = struct.pack("<BB", flags, 0 if label is None else int(label))
        return input_requests(Msg.TRAIN, head, x_q, self.link.max_payload)

    def label(self, label, age=0) -> TrainStep:
        """LABEL: the label of the window whose TRAIN reply asked for it (STEP_ASKED), `age` TRAIN requests
        ago; the reply says how the board trained on it."""
        return TrainStep.unpack(self.link.request(Msg.LABEL, self.label_request(label, age), timeout=30.0))

    @staticmethod
    def label_request(label, age=0):
        return struct.pack("<BI", int(label), int(age))

    def train_window(self, x, label=None) -> TrainStep:
        """One float window in the model's layout (C, L)."""
        row, invalid = window_to_wire(self.meta, x)
        return self.train(row, label, invalid)

    def config(self, cfg: TrainConfig = None) -> TrainConfig:
        """Set the runtime parameters (when given) and return the board's values."""
        return TrainConfig.unpack(self.link.request(Msg.CONFIG, b"" if cfg is None else cfg.pack()))

    def stats(self) -> TrainStats:
        return TrainStats.unpack(self.link.request(Msg.STATS))

    def checkpoint_get(self) -> bytes:
        image, total = bytearray(), None
        while total is None or len(image) < total:
            reply = self.link.request(Msg.CHECKPOINT_GET, struct.pack("<IH", len(image), CHECKPOINT_CHUNK))
            total, offset = struct.unpack_from("<II", reply)
            if offset != len(image):
                raise McuTrainError(f"CHECKPOINT_GET answered offset {offset}, asked {len(image)}")
            image += reply[8:]
            if len(reply) == 8 and len(image) < total:
                raise McuTrainError("CHECKPOINT_GET returned no data")
        return bytes(image)

    def persist(self, op=PersistOp.WRITE, halt_after=None) -> PersistStatus:
        """Write the trained state to the board's flash now (op WRITE), read where it stands (STATUS), erase it
        (FORGET), or write but stop after `halt_after` bytes as if the power were cut (WRITE_AND_HALT: no
        reply comes; for power-loss tests)."""
        payload = bytes([op]) + (struct.pack("<I", halt_after) if op == PersistOp.WRITE_AND_HALT else b"")
        if op == PersistOp.WRITE_AND_HALT:
            self.link.write(encode_frame(Msg.PERSIST, self.link.next_seq, payload))
            self.link.next_seq += 1
            return None
        return PersistStatus(*PersistStatus.STRUCT.unpack(self.link.request(Msg.PERSIST, payload,
                                                                             timeout=PERSIST_TIMEOUT)))

    def checkpoint_put(self, image: bytes) -> None:
        """Send a checkpoint in chunks, twice: the board checks the image as it streams by (nothing stored), then
        writes the same chunks into its weights. A refused image fails the first pass with BAD_CHECKPOINT and
        leaves the board's weights untouched."""
        for want in (PUT_VERIFIED, PUT_COMMITTED):
            state = PUT_RECEIVING
            for offset in range(0, max(len(image), 1), CHECKPOINT_CHUNK):
                chunk = image[offset:offset + CHECKPOINT_CHUNK]
                reply = self.link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), offset) + chunk,
                                          timeout=10.0)
                _staged, state = struct.unpack("<IB", reply)
            if state != want:
                raise McuTrainError(f"the board answered state {state} to the checkpoint's last chunk, not {want}")
