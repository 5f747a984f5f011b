"""The client of a compiled model on a board: CLASSIFY, PROFILE and MODEL_INFO (docs/protocol.md), the model's
description (model.json), its inputs' wire form, and inputs larger than a frame (staged with INPUT_PUT).
`mcu-train infer`, the benchmark, the monitor and the tests use it."""
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen import quant
from codegen.reference import threshold_to_q16
from mcu_train.errors import McuTrainError
from mcu_train.link.protocol import INPUT_PUT_HEAD, ModelInfo, Msg


@dataclass
class Classification:
    exit: int
    logits_q: np.ndarray
    confidence_q16: int
    cost: int


def load_model_meta(model_dir):
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise McuTrainError(f"{model_dir} is not an output folder of `mcu-train compile` (no model.json)")
    return json.loads(path.read_text())


def to_wire(meta, x):
    """Float inputs in the ONNX model's layout (N, C, L) / (N, C, H, W) -> int8 NHWC rows, one per input."""
    x = np.asarray(x, np.float32)
    want = tuple(meta["input_shape"][1:])
    if tuple(x.shape[1:]) != want:
        raise McuTrainError(f"inputs have shape {x.shape}; the model takes (N, {', '.join(map(str, want))})")
    x = np.transpose(x, meta.get("input_transpose") or (0, *range(2, x.ndim), 1))  # as the board stores it
    q = quant.quantize(x, meta["input_scale"], meta["input_zero_point"])
    return q.reshape(len(x), -1)


def check_model_hash(link, meta):
    """Refuse a board whose firmware runs another model than the compiled one described by `meta`."""
    hello = link.hello
    if hello is not None and hello.model_hash != meta["model_hash"]:
        raise McuTrainError(f"the board runs model {hello.model_hash or '(none)'}, not the compiled model "
                            f"{meta['model_hash']}: build and flash this model first")


def input_requests(msg_type, head, x_q, max_payload):
    """The requests that run `msg_type` (CLASSIFY, TRAIN) on one int8 input, as (type, payload): the request with
    the input after its `head` when that fits one frame; else INPUT_PUT chunks that stage the input on the board,
    then the request without input bytes (docs/protocol.md, "Inputs larger than a frame")."""
    data = np.asarray(x_q, np.int8).tobytes()
    if len(head) + len(data) <= max_payload:
        return [(msg_type, head + data)]
    chunk = max_payload - INPUT_PUT_HEAD.size
    puts = [(Msg.INPUT_PUT, INPUT_PUT_HEAD.pack(at) + data[at:at + chunk]) for at in range(0, len(data), chunk)]
    return puts + [(msg_type, head)]


def request_each(link, requests, timeout=None):
    """Send `requests` one at a time on `link`; returns the last one's reply (it waits up to `timeout`)."""
    for msg_type, payload in requests[:-1]:
        link.request(msg_type, payload)
    msg_type, payload = requests[-1]
    return link.request(msg_type, payload, timeout=timeout)


class ModelClient:
    def __init__(self, link, meta):
        check_model_hash(link, meta)
        self.link = link
        self.meta = meta
        self.num_exits = len(meta["exits"])

    def classify(self, x_q, force_exit=None, thresholds=None, thresholds_q16=None):
        if force_exit is not None:
            k = force_exit + self.num_exits if force_exit < 0 else force_exit
            if not 0 <= k < self.num_exits:
                raise McuTrainError(f"exit {force_exit} does not exist: the model has {self.num_exits} exits")
            head = struct.pack("<bB", k, 0)
        else:
            if thresholds_q16 is not None:
                head = struct.pack(f"<bB{self.num_exits}I", -1, self.num_exits, *thresholds_q16)
            elif thresholds is None:
                head = struct.pack("<bB", -1, 0)
            else:
                if len(thresholds) != self.num_exits:
                    raise McuTrainError(f"{len(thresholds)} thresholds given; the model has {self.num_exits} exits")
                head = struct.pack(f"<bB{self.num_exits}I", -1, self.num_exits,
                                   *(threshold_to_q16(t) for t in thresholds))
        requests = input_requests(Msg.CLASSIFY, head, x_q, self.link.max_payload)
        reply = request_each(self.link, requests, timeout=10.0)
        exit_k, n, conf, cost = struct.unpack_from("<BBII", reply)
        return Classification(exit_k, np.frombuffer(reply[10:10 + n], np.int8).copy(), conf, cost)

    def info(self) -> ModelInfo:
        """The board's own description of its model (MODEL_INFO)."""
        return ModelInfo.unpack(self.link.request(Msg.MODEL_INFO))

    def step_costs(self):
        """Cost of each kernel step in the last classification (schedule order)."""
        reply = self.link.request(Msg.PROFILE)
        return list(struct.unpack(f"<{len(reply) // 4}I", reply))

    def dequantize(self, exit_k, logits_q):
        e = self.meta["exits"][exit_k]
        return (logits_q.astype(np.float32) - e["zero_point"]) * np.float32(e["scale"])
