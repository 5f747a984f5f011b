"""Issue 13: which labelled windows the final exit's unit learns from, and how many of the last block's
channels each one updates, with `--train exits+last-block` (docs/RESULTS.md, "The last block's training cost"
and "The last block's channels"). On the numpy reference (codegen.train_reference FINAL_UNIT_RULE; `mcu-train
compile --block-keep`), the benchmark's streams (`mcu-train bench` personalisation: stream settings, 10% random
labels, the recommended replay memory), second-half accuracy per rule, natural and shifted streams.

    PYTHONPATH=. python tools/final_unit_study.py --people 21 22 23 24 --rules all reached evidence-reached
    PYTHONPATH=. python tools/final_unit_study.py --people 25 26 27 28 29 30 --rules all reached-or-wrong
    PYTHONPATH=. python tools/final_unit_study.py --rules all --block-keep 1 0.25 0.125
"""
import argparse

import numpy as np

from codegen.train_reference import FINAL_UNIT_RULES
from mcu_train.bench.analysis import stream_accuracies
from mcu_train.bench.streams import StreamTask, _run_reference, task_config, task_stream
from mcu_train.bench.sweep import run_tasks

SHIFTS = ("rotate", "none")


def evaluate(arg):
    """(StreamTask, rule) -> the stream's generic and board second-half accuracy and mean MACs a trained window."""
    from codegen import train_reference
    task, rule = arg
    train_reference.FINAL_UNIT_RULE = rule
    compiled, stream = task_stream(task)
    steps, per_exit = _run_reference(compiled, stream, task_config(task, len(compiled.meta["exits"])))
    generic, board = stream_accuracies(dict(truth=stream.truth, prediction=np.array([s.prediction for s in steps]),
                                            **per_exit))
    trained = [s for s in steps if s.outcome in (0, 5)]
    macs = [s.macs_forward + s.macs_backward for s in trained]
    return dict(shift=task.shift, rule=rule, keep=task.block_keep or 1, generic=generic, board=board,
                macs=float(np.mean(macs or [0])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, nargs="+", default=[21, 22, 23, 24])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rules", nargs="+", default=["all", "reached", "evidence-reached"],
                    choices=FINAL_UNIT_RULES)
    ap.add_argument("--block-keep", type=float, nargs="+", default=[1.0],
                    help="the most of the last block's channels a window updates (1: as CONFIG prune_keep says)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tasks = [(evaluate, (StreamTask(p, s, 0.1, shift, train="exits+last-block", block_keep=keep), rule))
             for keep in args.block_keep for rule in args.rules for shift in SHIFTS for p in args.people
             for s in args.seeds]
    results = run_tasks(tasks, workers=args.workers, log=lambda line: None)
    print("| block keep | rule | stream | generic | board | worst stream vs generic | MACs a trained window |")
    print("|---|---|---|---|---|---|---|")
    for keep in args.block_keep:
        for rule in args.rules:
            for shift in SHIFTS:
                rs = [r for r in results if (r["keep"], r["rule"], r["shift"]) == (keep, rule, shift)]
                print(f"| {keep:g} | {rule} | {'placement shift' if shift == 'rotate' else 'natural'} | "
                      f"{np.mean([r['generic'] for r in rs]):.1f} | {np.mean([r['board'] for r in rs]):.1f} | "
                      f"{min(r['board'] - r['generic'] for r in rs):+.1f} | "
                      f"{np.mean([r['macs'] for r in rs]):,.0f} |")


if __name__ == "__main__":
    main()
