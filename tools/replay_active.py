"""Issue 14: replay memory and active labels, measured on the numpy golden model of the board (docs/RESULTS.md,
"Issue 14: replay memory and active labels"). Under the placement shift with 10% labels, people 25-30 x seeds
0-2: second-half prequential accuracy of the generic model and of the personalised board (`--train exits`),
random vs active labels, replay on (the firmware's default `replays`) vs off (replays 0).

    PYTHONPATH=. python tools/replay_active.py [--replays 0,2] [--people 25-30] [--seeds 0-2] [--jobs 2]
"""
import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from itertools import product

import numpy as np

from codegen.trainer_abi import TrainConfig
from mcu_train.bench import analysis
from mcu_train.bench.streams import StreamTask, run_stream


def span(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def measure(task):
    out = run_stream(task)
    generic, personal = analysis.stream_accuracies(out)
    return dict(person=task.person, seed=task.seed, policy=task.label_policy, replays=task.replays,
                generic=generic, personalised=personal, labelled=int(np.sum(out["labelled"])),
                asked=int(np.sum(out["asked"])), windows=len(out["truth"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replays", default=f"0,{TrainConfig.replays}")
    p.add_argument("--people", default="25-30")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--labels", type=float, default=0.1)
    p.add_argument("--shift", default="rotate")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", help="also write every stream's numbers here")
    a = p.parse_args()
    tasks = [StreamTask(person, seed, a.labels, a.shift, policy, replays=int(r))
             for r, policy, person, seed in product(a.replays.split(","), ("random", "active"), span(a.people),
                                                    span(a.seeds))]
    with ProcessPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(measure, tasks))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("| replays | labels | generic | personalised | vs generic | worst stream vs generic | labels used |")
    print("|---|---|---|---|---|---|---|")
    for r, policy in product(a.replays.split(","), ("random", "active")):
        sel = [x for x in rows if x["replays"] == int(r) and x["policy"] == policy]
        g, acc = np.mean([x["generic"] for x in sel]), np.mean([x["personalised"] for x in sel])
        worst = min(x["personalised"] - x["generic"] for x in sel)
        used = np.mean([x["labelled"] / x["windows"] for x in sel])
        print(f"| {r} | {policy} | {g:.1f} | {acc:.1f} | {acc - g:+.1f} | {worst:+.1f} | {100 * used:.1f}% |")


if __name__ == "__main__":
    main()
