"""Whole-model and per-layer cost of a compiled model on an emulated board, without the serial protocol.

    python -m mcu_train.bench.model_cost [--model har resnet8 ds-cnn] [--board mps2-an386] [--define NAME]
                                         [--markdown]

The model is compiled by `mcu-train compile` (codegen) for the board and linked with a small harness
(firmware/kernels/harness/hx_model.c) that runs it on a pseudo-random input: each step once, then model_run()
along the path through every exit (the early-exit path on which no early exit passes: every head runs, as
`mcu-train bench` measures the final exit). The counting plugin (mcu_train/bench/insn_count.py) counts every
instruction executed between the marks and estimates its Cortex-M4 cycles. The final logits are checked against
the numpy golden model (codegen/reference.py) first, so the figures are for bit-exact code. ResNet-8 and DS-CNN
are MLPerf Tiny's (mcu_train/bench/mlperf_tiny.py, seeded random weights, calibrated on random inputs); `har`
is the default model (models/har.onnx with its calibration windows).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mcu_train.bench.insn_count import CYCLE_MODEL, Cost, run_counting
from mcu_train.bench.kernel_harness import HARNESS_DIR, KERNELS_DIR, XorShift32
from mcu_train.errors import McuTrainError
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL

MODEL_NAMES = ("har", "resnet8", "ds-cnn")


def model_files(name: str, out_dir: Path) -> tuple[Path, Path]:
    """(ONNX path, calibration npz) of a named model; MLPerf Tiny models are written into out_dir."""
    if name == "har":
        return DEFAULT_MODEL, DEFAULT_CALIB
    from mcu_train.bench import mlperf_tiny
    if name not in mlperf_tiny.MODELS:
        raise McuTrainError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    model = mlperf_tiny.MODELS[name]()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, calib = out_dir / f"{name}.onnx", out_dir / f"{name}_calib.npz"
    onnx_path.write_bytes(model.SerializeToString())
    np.savez(calib, x=mlperf_tiny.calibration(model))
    return onnx_path, calib


def measure_model(board, onnx_path, calib, out_dir, seed: int = 12345, defines=()) -> dict:
    """{model, board, macs, total: Cost, steps: [{name, kernel, in_dims, out_dims, macs, cost: Cost}]} for the
    compiled model on `board` (kernels built with the extra preprocessor `defines`); raises if the board's logits
    differ from the numpy golden model's."""
    from codegen.compile import compile_model
    from mcu_train.boards.build import build_elf
    out_dir = Path(out_dir)
    compiled = compile_model(onnx_path, board, out_dir / "model", calib=calib, quiet=True)
    model_dir = out_dir / "model"
    elf = build_elf(board, [HARNESS_DIR / "hx_model.c", model_dir / "model.c", *sorted(KERNELS_DIR.glob("mt_*.c"))],
                    out_dir / "model_harness.elf", include_dirs=[KERNELS_DIR, model_dir],
                    defines=[f"HX_SEED={seed}u", *defines]).elf
    res = run_counting(board, elf, mark="hx_mark", timeout=300)
    if res.exit_code != 0:
        raise McuTrainError(f"the model harness exited with {res.exit_code}: {res.output[-300:]!r}")
    steps = compiled.steps
    spans = res.spans()
    if len(spans) != len(steps) + 1:
        raise McuTrainError(f"expected {len(steps) + 1} measured calls, got {len(spans)}: {res.output[-300:]!r}")
    x = XorShift32(seed).int8(int(np.prod(steps[0].in_dims))).reshape(steps[0].in_dims)
    n_exits = len(compiled.meta["exits"])
    _, logits, _ = compiled.reference.run(x, thresholds_q16=[0xFFFFFFFF] * (n_exits - 1) + [0])
    if f"S 0\nL {bytes(np.asarray(logits, np.int8).view(np.uint8)).hex()}\n".encode() not in res.output:
        raise McuTrainError(f"{Path(onnx_path).name} on {board.name}: the board's logits differ from the numpy "
                            f"golden model's {bytes(np.asarray(logits, np.int8).view(np.uint8)).hex()}: "
                            f"{res.output[-200:]!r}")
    layers = [dict(name=s.name, kernel=s.kernel, in_dims=tuple(s.in_dims), out_dims=tuple(s.out_dims), macs=s.macs,
                   cost=c) for s, c in zip(steps, spans)]
    return dict(model=Path(onnx_path).stem, board=board.name, macs=compiled.meta["macs_per_exit"][-1],
                total=spans[-1], steps=layers)


def format_model(r: dict, markdown: bool = False) -> str:
    """The per-layer table and the whole-model line."""
    head = ["step", "kernel", "in (NHWC)", "out (NHWC)", "MACs", "instructions", "instr/MAC", "est. cycles",
            "est. cycles/MAC"]
    rows = []
    for i, s in enumerate(r["steps"]):
        c: Cost = s["cost"]
        per = c.per_mac(s["macs"]) if s["macs"] else None
        rows.append([str(i), s["kernel"], "x".join(map(str, s["in_dims"][1:])), "x".join(map(str, s["out_dims"][1:])),
                     f"{s['macs']:,}", f"{c.instructions:,}", f"{per[0]:.2f}" if per else "",
                     f"{c.cycles:,}", f"{per[1]:.2f}" if per else ""])
    t = r["total"]
    ipm, cpm = t.per_mac(r["macs"])
    rows.append(["all", "whole model", "", "", f"{r['macs']:,}", f"{t.instructions:,}", f"{ipm:.2f}",
                 f"{t.cycles:,}", f"{cpm:.2f}"])
    return _table(head, rows, markdown)


def _table(head, rows, markdown):
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in [head, *rows])


def main(argv=None):
    from mcu_train.boards import get_board
    p = argparse.ArgumentParser(prog="python -m mcu_train.bench.model_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    p.add_argument("--board", default="mps2-an386")
    p.add_argument("--define", action="append", default=[], metavar="NAME",
                   help="build the kernels with -DNAME (e.g. MT_FORCE_REFERENCE); repeatable")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    board = get_board(args.board)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            onnx_path, calib = model_files(name, Path(tmp) / "models")
            r = measure_model(board, onnx_path, calib, Path(tmp) / name, defines=args.define)
            built = "".join(f" -D{d}" for d in args.define)
            print(f"\n{name} on {board.name} ({board.cpu}){built}: instructions counted exactly; {CYCLE_MODEL}, "
                  "an estimate")
            print(format_model(r, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
