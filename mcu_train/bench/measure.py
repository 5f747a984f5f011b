"""The benchmark's measurements on boards, each a task function for mcu_train.bench.sweep (a module-level
function of one picklable argument): a board's size, memory and cost tables; the kernels under the QEMU
instruction counter; whole models; the serial link's throughput. The personalisation streams are in
mcu_train.bench.streams."""
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcu_train.errors import McuTrainError
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL, OUTPUT_DIR

TRAIN_MODES = ("exits", "exits+last-block")
NEVER = 0xFFFFFFFF  # a Q16 threshold no confidence reaches


@dataclass(frozen=True)
class BoardTask:
    board: str
    model: str = str(DEFAULT_MODEL)
    calib: str = str(DEFAULT_CALIB)
    inputs: int = 20
    train_windows: int = 40

    @property
    def label(self):
        return self.board


def path_costs(client, rows, num_exits):
    """Mean cost of an inference that leaves at exit k (no earlier exit passes, exit k always does), per k."""
    return [float(np.mean([client.classify(r, thresholds_q16=[NEVER] * k + [0] * (num_exits - k)).cost
                           for r in rows])) for k in range(num_exits)]


def _training_build(task, board, mode):
    """Flash, planned arena and (emulated boards) measured training peak SRAM of the model compiled with a
    trainer; on the default trainer build also the cost of each exit's path with generic and personalised
    heads (the cost model of mcu_train.bench.report). A model that does not fit says so."""
    from codegen.compile import compile_model
    from mcu_train.boards.build import build_firmware
    from mcu_train.boards.runner import session
    from mcu_train.link.model_client import ModelClient, load_model_meta
    from mcu_train.link.trainer_client import ServeMode, TrainConfig, Trainer
    from mcu_train.stream.monitor import person_stream
    from mcu_train.stream.personalise import peak_sram, static_ram
    work = OUTPUT_DIR / "bench" / f"{board.name}-{mode}"
    try:
        compiled = compile_model(task.model, board, work / "model", calib=task.calib, quiet=True, train=mode)
    except McuTrainError as e:
        return dict(mode=mode, error=str(e).splitlines()[0])
    fw = build_firmware(board, work / "model", work / "firmware")
    static, symbols = static_ram(board, fw.elf)
    out = dict(mode=mode, flash_bytes=fw.flash_bytes, arena_bytes=compiled.memory["training_arena_bytes"],
               static_bytes=static, trainable_parameters=compiled.memory["trainable_parameters"])
    if not board.qemu_machine:
        return out
    meta = load_model_meta(work / "model")
    stream = person_stream(meta, 25, 1.0, "rotate", 0, task.train_windows)
    with session(board, fw.elf) as (_, link):
        trainer = Trainer(link, meta)
        if mode == TRAIN_MODES[0]:
            client, cfg = ModelClient(link, meta), TrainConfig.default(len(meta["exits"]))
            for serve in (ServeMode.GENERIC, ServeMode.PERSONALISED):
                cfg.serve_mode = serve
                trainer.config(cfg)
                out[f"path_costs_{serve.name.lower()}"] = path_costs(client, stream.rows[:4], len(meta["exits"]))
            cfg.serve_mode = ServeMode.AUTO
            trainer.config(cfg)
        # Every window labelled: each one runs the whole training path, so the stack reaches its deepest.
        for row, y in zip(stream.rows, stream.truth):
            trainer.train(row, int(y))
        out["sram"] = peak_sram(board, fw.elf, link)
    return out


def board_task(task):
    """A board's figures: the inference build (flash, RAM, cost per exit and per layer, stack) and each
    trainer build (_training_build). Real boards are built, not run."""
    from codegen.compile import compile_model
    from mcu_train.bench.model_bench import bench_board
    from mcu_train.boards import get_board
    from mcu_train.boards.build import build_firmware
    from mcu_train.stream.personalise import static_ram
    board = get_board(task.board)
    work = OUTPUT_DIR / "bench" / board.name
    if board.qemu_machine:
        result = bench_board(board, task.model, task.calib, task.inputs, work_dir=work)
        result["static_bytes"], _ = static_ram(board, work / "firmware" / "firmware.elf")
    else:
        compiled = compile_model(task.model, board, work / "model", calib=task.calib, quiet=True)
        fw = build_firmware(board, work / "model", work / "firmware")
        result = dict(board=board.name, cpu=board.cpu, flash_bytes=fw.flash_bytes, ram_bytes=fw.ram_bytes,
                      arena_bytes=compiled.arena_bytes, static_bytes=static_ram(board, fw.elf)[0])
    result.update(emulated=bool(board.qemu_machine), ram_size=board.ram.size, flash_size=board.flash.size,
                  training=[_training_build(task, board, mode) for mode in TRAIN_MODES])
    return result


def kernel_task(arg):
    """(board, reference): instructions per MAC of the kernel benchmark's layers (exact QEMU counts)."""
    from mcu_train.bench.kernel_bench import measure
    from mcu_train.boards import get_board
    board_name, reference = arg
    rows = measure(get_board(board_name), reference=reference)
    return [dict(layer=r["case"].name, op=r["case"].op, macs=r["macs"], instructions=r["instructions"],
                 per_mac=r["per_mac"], cmsis=r["cmsis"], cycles=r.get("cycles")) for r in rows]


def cycle_estimator():
    """Estimated cycles per inference from a Cortex-M4 timing model of the instruction-counting plugin (issue
    16), when this build has one: `mcu_train.bench.cycles.estimate_model_cycles(board, elf, meta, rows)`. The
    kernel table reads `cycles` from kernel_bench.measure()'s rows the same way. None: the report says "not
    available in this build"."""
    try:
        from mcu_train.bench.cycles import estimate_model_cycles
    except ImportError:
        return None
    return estimate_model_cycles


# ------------------------------------------------------------------------------------------------ models

# MLPerf Tiny architectures: (name, input, candidate builder names in tests/mlperf_tiny.py).
MLPERF_TINY = (  # (name in the report, input, mcu_train.bench.mlperf_tiny.MODELS key)
    ("ResNet-8", "32x32x3", "resnet8"),
    ("DS-CNN", "49x10", "ds-cnn"),
    ("MobileNetV1-0.25", "96x96x3", "mobilenet-v1-0.25"),
    ("FC autoencoder", "640", "fc-autoencoder"),
)


def _mlperf_model(key, folder):
    """The named MLPerf Tiny model (mcu_train.bench.mlperf_tiny) written as an ONNX file: its path."""
    import onnx

    from mcu_train.bench import mlperf_tiny
    path = Path(folder) / f"{key}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(mlperf_tiny.MODELS[key](), path)
    return path


def _calibration(onnx_path, folder, n=8):
    """Random calibration inputs (standard normal) in the model's input shape: costs do not depend on them."""
    import onnx
    graph = onnx.load(onnx_path).graph
    inits = {i.name for i in graph.initializer}
    dims = [d.dim_value for d in next(i for i in graph.input if i.name not in inits).type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal((n, *dims[1:])).astype(np.float32)
    path = Path(folder) / f"{Path(onnx_path).stem}_calib.npz"
    np.savez(path, x=x)
    return path


def model_task(arg):
    """(model name, board): MACs and instructions per inference to the final exit, measured on the board
    (mean of 3 inputs); the default model is "har"."""
    from codegen.compile import compile_model
    from mcu_train.boards import get_board
    from mcu_train.boards.build import build_firmware
    from mcu_train.boards.runner import session
    from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire
    name, board_name = arg
    board = get_board(board_name)
    work = OUTPUT_DIR / "bench" / "models" / name.replace(" ", "_")
    out = dict(model=name, board=board_name)
    if name == "har":
        onnx_path, calib = Path(DEFAULT_MODEL), Path(DEFAULT_CALIB)
    else:
        entry = next(m for m in MLPERF_TINY if m[0] == name)
        out["input"] = entry[1]
        onnx_path = _mlperf_model(entry[2], work)
        calib = _calibration(onnx_path, work)
    try:
        compiled = compile_model(onnx_path, board, work / "model", calib=calib, quiet=True)
        fw = build_firmware(board, work / "model", work / "firmware")
        meta = load_model_meta(work / "model")
        rows = to_wire(meta, np.load(calib)["x"][:3])
        with session(board, fw.elf) as (_, link):
            client = ModelClient(link, meta)
            cost = float(np.mean([client.classify(r, force_exit=-1).cost for r in rows]))
        estimate = cycle_estimator()
        out["cycles"] = estimate(board, fw.elf, meta, rows) if estimate else None
    except McuTrainError as e:
        return dict(out, error=f"not available in this build: {str(e).splitlines()[0]}")
    final = len(meta["exits"]) - 1
    macs = sum(s.macs for s in compiled.steps if s.exits_needing >> final & 1)
    return dict(out, macs=int(macs), instructions=cost, flash_bytes=fw.flash_bytes,
                arena_bytes=compiled.arena_bytes)


# ------------------------------------------------------------------------------------------------ link

BAUD = 115_200
BYTES_PER_S = BAUD / 10  # 8N1: a start and a stop bit per byte


def link_task(arg):
    """(board, windows, person): windows per second of TRAIN requests through the serial protocol (4 and 1 in
    flight; the demo's stream), and the bytes per window on the wire."""
    from mcu_train.bench.streams import firmware
    from mcu_train.boards import get_board
    from mcu_train.boards.runner import session
    from mcu_train.link import Pipeline
    from mcu_train.link.protocol import REPLY, Msg, encode_frame
    from mcu_train.link.trainer_client import Trainer
    from mcu_train.link.model_client import input_requests
    from mcu_train.link.protocol import MAX_PAYLOAD
    from mcu_train.link.trainer_client import FLAG_INVALID, FLAG_LABEL
    from mcu_train.stream.monitor import person_stream, stream_config
    board_name, windows, person = arg
    meta, elf = firmware(board_name, str(DEFAULT_MODEL), str(DEFAULT_CALIB), "exits")
    stream = person_stream(meta, person, 0.1, "rotate", 0, windows)
    requests = [input_requests(Msg.TRAIN, struct.pack("<BB", (FLAG_LABEL if m else 0) | (FLAG_INVALID if b else 0),
                                                      int(y) if m else 0), r, MAX_PAYLOAD)
                for r, y, m, b in zip(stream.rows, stream.truth, stream.labelled, stream.invalid)]
    payloads = [group[-1][1] for group in requests]  # the default model's window fits one TRAIN frame
    out = dict(board=board_name, windows=len(payloads), person=person, rate={})
    replies = []
    for in_flight in (4, 1):
        with session(get_board(board_name), elf) as (_, link):
            Trainer(link, meta).config(stream_config(len(meta["exits"])))
            pipe = Pipeline(link, window=in_flight)
            t0, sent, got = time.monotonic(), 0, []
            while len(got) < len(payloads):
                while sent < len(payloads) and not pipe.full():
                    pipe.submit(requests[sent], tag=sent)
                    sent += 1
                got += pipe.poll()
            out["rate"][in_flight] = len(payloads) / (time.monotonic() - t0)
            replies = [reply for _, reply in got]
    request_bytes = np.mean([len(encode_frame(Msg.TRAIN, i, p)) for i, p in enumerate(payloads)])
    reply_bytes = np.mean([len(encode_frame(Msg.TRAIN | REPLY, i, r)) for i, r in enumerate(replies)])
    classify = [struct.pack("<bB", -1, 0) + r.tobytes() for r in stream.rows]
    out.update(request_bytes=float(request_bytes), reply_bytes=float(reply_bytes),
               classify_request_bytes=float(np.mean([len(encode_frame(Msg.CLASSIFY, i, p))
                                                     for i, p in enumerate(classify)])),
               payload_bytes=len(payloads[0]), reply_payload_bytes=len(replies[0]))
    return out
