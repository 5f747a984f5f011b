"""mcu-train as a Python library: what each command does, as a function. The `mcu-train` command (cli.py) only
parses arguments, calls these and prints. Boards are given by name ("mps2-an386") or as a Board; paths naming
the shipped model (models/har.onnx, models/har_calib.npz) work in any folder.

    from mcu_train import api
    api.compile_model("models/har.onnx", "out/har", calib="models/har_calib.npz", board="mps2-an386")
    firmware = api.build("mps2-an386", "out/har")                 # out/har/build-mps2-an386/firmware.elf
    results, unit = api.infer("out/har", x, board="mps2-an386")   # arrays exit, logits, logits_q, cost
    with api.session("mps2-an386", firmware.elf) as (runner, link):   # booted, handshake done
        client = api.ModelClient(link, api.load_model_meta("out/har"))
        client.classify(api.to_wire(client.meta, x[:1])[0])
    api.demo(person=27, labels=0.1, shift="rotate")                # compile, build, boot, stream, summary

Every function raises mcu_train.errors.McuTrainError (or a subclass) for anything a user can fix."""
import numpy as np

from mcu_train.boards import Board, get_board, list_boards  # noqa: F401
from mcu_train.boards.runner import BoardRunner, runner_for  # noqa: F401
from mcu_train.link import Link, Pipeline  # noqa: F401
from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire  # noqa: F401
from mcu_train.link.trainer_client import TrainConfig, Trainer  # noqa: F401
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL, shipped_path  # noqa: F401

DEFAULT_BOARD = "mps2-an386"


def board_of(board) -> Board:
    """A Board from a name, or the Board given."""
    return board if isinstance(board, Board) else get_board(board)


def compile_model(model, out_dir, calib=None, board=DEFAULT_BOARD, exits=None, train=None, quiet=True,
                  momentum=False, replay_bytes=None, block_keep=None):
    """ONNX model (+ calibration .npz) -> int8 C and reports in `out_dir` (`mcu-train compile`). `train`:
    None, "exits" or "exits+last-block"; `momentum`: also the trainer's momentum buffers; `replay_bytes`: the
    trainer's replay memory budget (None: codegen.trainer.DEFAULT_REPLAY_BYTES, 0: none); `block_keep`: with
    exits+last-block, the most of the last block's channels a window updates (None: 1). Returns the compiled
    model (codegen.compile.Compiled)."""
    from codegen.compile import compile_model as compile_onnx
    return compile_onnx(shipped_path(model), board_of(board), out_dir,
                        calib=shipped_path(calib) if calib else None, exits=exits, quiet=quiet, train=train,
                        momentum=momentum, replay_bytes=replay_bytes, block_keep=block_keep)


def build(board=DEFAULT_BOARD, model_dir=None, out_dir=None):
    """Firmware for `board`, with the compiled model in `model_dir` when given (`mcu-train build`):
    a BuildResult (elf path, flash and RAM bytes)."""
    return runner_for(board_of(board)).build(model_dir, out_dir)


def session(board, elf, **link_options):
    """Start `elf` on `board` and handshake: a context manager yielding (runner, link)."""
    from mcu_train.boards.runner import session as board_session
    return board_session(board_of(board), elf, **link_options)


def start(board, elf, **options) -> BoardRunner:
    """Start `elf` on `board` and leave it running (`mcu-train flash`): the runner (runner.url, runner.stop())."""
    return runner_for(board_of(board)).start(elf, **options)


def infer(model_dir, x, board=DEFAULT_BOARD, force_exit=None, thresholds=None, progress=None):
    """Build the firmware for `board`, boot it and classify every input of `x` (float, the model's input
    layout; every value finite) (`mcu-train infer`). Returns (arrays exit, logits, logits_q, cost, and for a
    model without classes `outputs` in the model's output shape; the cost counter's unit)."""
    from codegen.files import check_real_array
    board = board_of(board)
    meta = load_model_meta(model_dir)
    rows = to_wire(meta, check_real_array(x, "the input"))
    firmware = build(board, model_dir)
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
    results = dict(exit=exits, logits=logits, logits_q=logits_q, cost=cost)
    if meta.get("output_kind") == "values":  # the output in the model's own shape and layout, dequantised
        e = meta["exits"][0]
        stored = [e["shape"][a] for a in np.argsort(e["transpose"])]
        results["outputs"] = logits.reshape(len(rows), *stored[1:]).transpose(e["transpose"])
    return results, unit


def selftest(board=DEFAULT_BOARD, pings=200, seed=0, console=None):
    """Build, boot, handshake, ping and fault-inject a board (`mcu-train selftest`): True when every check passed."""
    from mcu_train.boards.selftest import run_selftest
    return run_selftest(board_of(board), pings=pings, seed=seed, console=console)


def bench(boards=(DEFAULT_BOARD,), model=DEFAULT_MODEL, calib=DEFAULT_CALIB, inputs=20, output=None,
          markdown_path=None):
    """Cost per exit and per layer, measured on each board (`mcu-train bench`)."""
    from mcu_train.bench.model_bench import bench as run_bench
    return run_bench(boards=list(boards), model=shipped_path(model), calib=shipped_path(calib), inputs=inputs,
                     output=output, markdown_path=markdown_path)


def bench_report(out="docs/RESULTS.md", quick=False, boards=None, scheduler=None, workers=None, model=DEFAULT_MODEL,
                 calib=DEFAULT_CALIB, command=None):
    """Every benchmark in one report (`mcu-train bench --out FILE [--quick]`): markdown in `out`, PNG plots and
    results.json beside it; the sweep on local processes or the Dask scheduler at `scheduler`. Returns results.json."""
    from mcu_train.bench.report import bench_report as run_report
    return run_report(out=out, quick=quick, boards=boards, scheduler=scheduler, workers=workers,
                      model=shipped_path(model), calib=shipped_path(calib), command=command)


def personalise(board=DEFAULT_BOARD, model=DEFAULT_MODEL, calib=DEFAULT_CALIB, **options):
    """One person's HAPT windows, or your recordings (source=SOURCE), through the on-device trainer
    (`mcu-train personalise`); the report."""
    from mcu_train.stream.personalise import personalise as run_personalise
    return run_personalise(board=board, model=shipped_path(model), calib=shipped_path(calib), **options)


def monitor(port=None, board=None, **options):
    """Stream a HAPT person's windows, or your recordings (source=SOURCE, "-" for standard input), to a running
    board at serial URL `port`; live display, JSONL log, plot (`mcu-train monitor`). A real `board` (name or
    Board) without `port`: its USB serial port is found by VID/PID."""
    from mcu_train.stream.monitor import monitor as run_monitor
    return run_monitor(port=port, board=board_of(board) if board else None, **options)


def flash(board, elf, probe=None, progress=None) -> BoardRunner:
    """Flash `elf` into a real board through pyOCD, verify, reset (`mcu-train flash`); `probe`: the debug
    probe's unique ID when several are connected; `progress(fraction)`. The runner (runner.url: its serial
    port, found on first use)."""
    return runner_for(board_of(board)).start(elf, probe=probe, progress=progress)


def demo(board=DEFAULT_BOARD, person=27, labels=0.1, shift="rotate", seed=0, output="build/demo", resume=False,
         quiet=False):
    """Compile, build, boot, stream one person and show the board personalising itself (`mcu-train demo`)."""
    from mcu_train.stream.demo import demo as run_demo
    return run_demo(board=board, person=person, labels=labels, shift=shift, seed=seed, output=output,
                    resume=resume, quiet=quiet)


def pretrain(output=None, seed=0, epochs=None, dataset="hapt", **data_options):
    """Pretrain the early-exit CNN and export ONNX with its calibration windows (`mcu-train pretrain`): on HAPT
    (output default models/har.onnx), or with source=SOURCE on your labelled recordings (options classes,
    validation, window, hop, sample_rate, resample; docs/data.md)."""
    from mcu_train.learn.pretrain import pretrain_and_report
    return pretrain_and_report(dataset=dataset, output=output, seed=seed, epochs=epochs, **data_options)
