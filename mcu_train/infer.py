"""Run a compiled model on a board over the protocol: `mcu-train infer`, and the CLASSIFY client that the
tests, the benchmark and the monitor use."""
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen import quant
from codegen.reference import threshold_to_q16
from mcu_train.errors import McuTrainError
from mcu_train.files import load_npz_array, save_npz_atomically
from mcu_train.protocol import Msg


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
    x = np.moveaxis(x, 1, -1)  # channels last
    q = quant.quantize(x, meta["input_scale"], meta["input_zero_point"])
    return q.reshape(len(x), -1)


def check_model_hash(link, meta):
    """Refuse a board whose firmware runs another model than the compiled one described by `meta`."""
    hello = link.hello
    if hello is not None and hello.model_hash != meta["model_hash"]:
        raise McuTrainError(f"the board runs model {hello.model_hash or '(none)'}, not the compiled model "
                            f"{meta['model_hash']}: build and flash this model first")


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
        reply = self.link.request(Msg.CLASSIFY, head + np.asarray(x_q, np.int8).tobytes(), timeout=10.0)
        exit_k, n, conf, cost = struct.unpack_from("<BBII", reply)
        return Classification(exit_k, np.frombuffer(reply[10:10 + n], np.int8).copy(), conf, cost)

    def step_costs(self):
        """Cost of each kernel step in the last classification (schedule order)."""
        reply = self.link.request(Msg.PROFILE)
        return list(struct.unpack(f"<{len(reply) // 4}I", reply))

    def dequantize(self, exit_k, logits_q):
        e = self.meta["exits"][exit_k]
        return (logits_q.astype(np.float32) - e["zero_point"]) * np.float32(e["scale"])


def run_inference(model_dir, board, x, force_exit=None, thresholds=None, progress=None):
    """Build the firmware for `board`, boot it, classify every input; returns the arrays infer saves."""
    from mcu_train.build import build_firmware
    from mcu_train.runner import session
    meta = load_model_meta(model_dir)
    rows = to_wire(meta, x)
    firmware = build_firmware(board, model_dir)
    max_classes = max(e["classes"] for e in meta["exits"])
    exits = np.zeros(len(rows), np.int64)
    logits_q = np.zeros((len(rows), max_classes), np.int8)
    logits = np.zeros((len(rows), max_classes), np.float32)
    cost = np.zeros(len(rows), np.int64)
    with session(board, firmware.elf) as (running, link):
        client = ModelClient(link, meta)
        for i, row in enumerate(rows):
            r = client.classify(row, force_exit, thresholds)
            n = len(r.logits_q)
            exits[i], cost[i] = r.exit, r.cost
            logits_q[i, :n] = r.logits_q
            logits[i, :n] = client.dequantize(r.exit, r.logits_q)
            if progress:
                progress(i + 1, len(rows))
        unit = link.hello.counter_unit
    return dict(exit=exits, logits=logits, logits_q=logits_q, cost=cost), unit


def infer_command(args):
    from rich.progress import Progress
    from mcu_train.boards import get_board
    board = get_board(args.board)
    x = load_npz_array(args.input)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else None
    with Progress(transient=True) as bar:
        task = bar.add_task(f"classifying on {board.name}", total=len(x))
        results, unit = run_inference(args.model_dir, board, x, args.exit, thresholds,
                                      progress=lambda done, total: bar.update(task, completed=done))
    save_npz_atomically(args.output, **results)
    counts = np.bincount(results["exit"], minlength=len(load_model_meta(args.model_dir)["exits"]))
    print(f"{len(x)} inputs on {board.name} -> {args.output}")
    print(f"  exits taken: {', '.join(f'exit {k}: {c}' for k, c in enumerate(counts))}")
    print(f"  mean cost: {results['cost'].mean():,.0f} {unit}")
