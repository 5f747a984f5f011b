"""The sweep behind the firmware's boot values (codegen.trainer_abi.TrainConfig.default, docs/training.md):
a greedy coordinate search over the CONFIG parameters that matter, on the validation people (21-24) only, on
the numpy golden model of the board (codegen.train_reference), over three kinds of stream: the placement shift
with 10% labels, natural streams with 10% labels and with none. A candidate is feasible when no natural
stream's second half is more than GUARD_PT below the generic model's; among the feasible ones the best has
the highest mean second-half accuracy under the shift, less the worst shifted stream's loss beyond GUARD_PT
(then: on natural streams). A parameter that sets what a prediction costs (COST_PARAMS) takes the cheapest
candidate (mean MACs of the exits taken) whose accuracies are within TIE_PT of the best one's. `--report` runs
the chosen (or current) defaults on the reporting people 25-30 instead.

    python -m mcu_train.bench.defaults              # the sweep (about 15 min on 2 cores)
    python -m mcu_train.bench.defaults --params threshold_max --seeds 0 1 2   # one step, from the shipped defaults
    python -m mcu_train.bench.defaults --report     # the defaults on people 25-30 x seeds 0-2
    python -m mcu_train.bench.defaults --report --replay-bytes 0   # ... in a build without the replay memory
"""
import argparse
import numpy as np

from codegen import train_reference
from codegen.trainer import RECOMMENDED_REPLAY_BYTES
from mcu_train.bench.analysis import second_half, stream_accuracies
from mcu_train.bench.streams import SETTINGS, StreamTask, _run_reference, task_stream
from mcu_train.bench.sweep import run_tasks

VALIDATION = (21, 22, 23, 24)
REPORTING = (25, 26, 27, 28, 29, 30)
STREAMS = (("rotate", 0.1), ("none", 0.1), ("none", 0.0))  # (shift, fraction of windows labelled)
GUARD_PT = 0.5
TIE_PT = 0.2  # accuracies this close are equal for a cost parameter
COST_PARAMS = ("threshold_max",)
DNH_WINS, DNH_WINS_REPLAY = train_reference.DNH_WINS, train_reference.DNH_WINS_REPLAY  # as shipped
# Where the search started: the boot values before issue 14 (so a rerun reproduces docs/training.md's table).
START = dict(lr=0.1, pseudo_threshold=0.9, dnh_wins=3, threshold_min=0.6, dnh_rate=0.05, dnh_min_labels=0)
# The search, in order: each parameter's values are tried with the others at the best so far. lr and the
# pseudo-label threshold first, jointly (they interact most).
GRID = (
    (("lr", "pseudo_threshold"), [(lr, p) for lr in (0.1, 0.2, 0.3, 0.5) for p in (0.9, 0.97, 1.0)]),
    (("dnh_wins",), [(1,), (2,), (3,), (5,)]),
    (("threshold_min",), [(0.6,), (0.75,), (0.9,)]),
    (("clip_norm",), [(0.25,), (0.5,), (1.0,)]),
    (("dnh_rate",), [(0.02,), (0.05,), (0.1,)]),
    (("dnh_min_labels",), [(0,), (4,)]),
    (("prune_keep",), [(0.5,), (1.0,)]),
    (("filter_mode", "filter_keep"), [(1, 0.3), (1, 0.6), (3, 0.3), (3, 0.6), (2, 0.3), (0, 0.3)]),
    (("threshold_max",), [(0.99,), (0.95,), (0.93,)]),  # the exits' thresholds adapt up to this (COST_PARAMS)
)


def config(num_exits, overrides=(), setting="stream"):
    """TrainConfig.default with `overrides` ((name, value) pairs; pseudo_threshold, threshold_min and
    threshold_max as real numbers) and a bench setting on top."""
    from codegen.reference import threshold_to_q16
    from codegen.trainer_abi import TrainConfig
    cfg = TrainConfig.default(num_exits)
    for key, value in list(overrides) + list(SETTINGS[setting].items()):
        if key == "pseudo_threshold":
            cfg.pseudo_threshold_q16 = threshold_to_q16(value)
        elif key in ("threshold_min", "threshold_max"):
            setattr(cfg, key, [value] * num_exits)
        else:
            setattr(cfg, key, value)
    return cfg.rounded()


def evaluate(arg):
    """(StreamTask, overrides) -> second-half accuracy (%) of the generic model and of the board."""
    task, overrides = arg
    overrides = dict(overrides)
    # The guard's margin is a compile-time constant of the firmware, not a CONFIG field: set for this task
    # only (`dnh_wins` sets it with and without a replay memory), then the shipped values again.
    wins = overrides.pop("dnh_wins", None)
    train_reference.DNH_WINS = DNH_WINS if wins is None else wins
    train_reference.DNH_WINS_REPLAY = DNH_WINS_REPLAY if wins is None else wins
    compiled, stream = task_stream(task)
    cfg = config(len(compiled.meta["exits"]), overrides.items(), task.setting)
    try:
        steps, per_exit = _run_reference(compiled, stream, cfg)
    finally:
        train_reference.DNH_WINS, train_reference.DNH_WINS_REPLAY = DNH_WINS, DNH_WINS_REPLAY
    r = dict(truth=stream.truth, prediction=np.array([s.prediction for s in steps]), **per_exit)
    generic, board = stream_accuracies(r)
    exits = np.array([s.exit for s in steps])[second_half(r)]
    return dict(person=task.person, seed=task.seed, shift=task.shift, labels=task.labels, generic=generic,
                board=board, trained=sum(s.outcome in (0, 5) for s in steps),
                macs=float(np.mean(np.array(compiled.meta["macs_per_exit"])[exits])))


def tasks(overrides, people, seeds, windows, replay_bytes=RECOMMENDED_REPLAY_BYTES):
    return [(evaluate, (StreamTask(p, s, labels, shift, windows=windows, replay_bytes=replay_bytes),
                        tuple(overrides)))
            for shift, labels in STREAMS for p in people for s in seeds]


def summarise(results):
    """Per kind of stream: mean generic, mean board, worst board - generic (points)."""
    out = {}
    for shift, labels in STREAMS:
        rs = [r for r in results if (r["shift"], r["labels"]) == (shift, labels)]
        out[(shift, labels)] = dict(generic=np.mean([r["generic"] for r in rs]),
                                    board=np.mean([r["board"] for r in rs]),
                                    worst=min(r["board"] - r["generic"] for r in rs),
                                    macs=np.mean([r["macs"] for r in rs]))
    return out


def score(summary):
    """(no natural stream loses more than GUARD_PT, mean under the shift less the worst shifted stream's loss
    beyond GUARD_PT, mean on natural streams): the larger the better."""
    natural = [v for (shift, _), v in summary.items() if shift == "none"]
    feasible = all(v["worst"] >= -GUARD_PT for v in natural)
    shifted = summary[("rotate", 0.1)]
    return (feasible, shifted["board"] + min(0.0, shifted["worst"] + GUARD_PT), np.mean([v["board"] for v in natural]))


def cost(summary):
    """Mean MACs of the exits taken, over every kind of stream."""
    return float(np.mean([v["macs"] for v in summary.values()]))


def choose(scored, names):
    """Index of the best candidate of [(score, cost)]; for a cost parameter the cheapest within TIE_PT."""
    best = max(range(len(scored)), key=lambda i: scored[i][0])
    if not set(names) & set(COST_PARAMS):
        return best
    (feasible, shifted, natural), _ = scored[best]
    ties = [i for i, ((f, s, n), _) in enumerate(scored) if f >= feasible and s >= shifted - TIE_PT
            and n >= natural - TIE_PT]
    return min(ties, key=lambda i: scored[i][1])


def row(overrides, summary):
    cells = " ".join(f"{v['generic']:5.1f} {v['board']:5.1f} {v['worst']:+5.1f} |" for v in summary.values())
    name = ", ".join(f"{k}={v:g}" for k, v in overrides) or "(defaults)"
    return f"| {name:58s} | {cells} {cost(summary) / 1e3:,.0f} k |"


HEADER = ("| candidate" + " " * 50 + "| " + " | ".join(f"{s}+{int(l * 100)}%: gen board worst" for s, l in STREAMS)
          + " | MACs a prediction |")


def search(people, seeds, windows, workers, params=None, log=print):
    """The greedy search over GRID from START; with `params`, only those steps, from the shipped defaults."""
    best = {} if params else dict(START)
    for names, values in GRID:
        if params and not set(names) & set(params):
            continue
        candidates = [{**best, **dict(zip(names, v))} for v in values]
        grid = [t for c in candidates for t in tasks(c.items(), people, seeds, windows)]
        results = run_tasks(grid, workers=workers, log=lambda line: None)
        n = len(grid) // len(candidates)
        scored = []
        for i, c in enumerate(candidates):
            s = summarise(results[i * n:(i + 1) * n])
            log(row(sorted(c.items()), s))
            scored.append((score(s), cost(s)))
        best = candidates[choose(scored, names)]
        log(f"-> {', '.join(f'{k}={v:g}' for k, v in sorted(best.items()))}")
    return best


def report(overrides, people, seeds, windows, workers, replay_bytes=RECOMMENDED_REPLAY_BYTES, log=print):
    results = run_tasks(tasks(overrides, people, seeds, windows, replay_bytes), workers=workers,
                        log=lambda line: None)
    for shift, labels in STREAMS:
        log(f"\n{shift} stream, {labels:.0%} labels: second-half accuracy (%), mean over seeds {list(seeds)}")
        log("| person | generic | board | board - generic |")
        rs = [r for r in results if (r["shift"], r["labels"]) == (shift, labels)]
        for p in people:
            g = np.mean([r["generic"] for r in rs if r["person"] == p])
            b = np.mean([r["board"] for r in rs if r["person"] == p])
            worst = min(r["board"] - r["generic"] for r in rs if r["person"] == p)
            log(f"| {p} | {g:.1f} | {b:.1f} | {b - g:+.1f} (worst seed {worst:+.1f}) |")
        g, b = np.mean([r["generic"] for r in rs]), np.mean([r["board"] for r in rs])
        log(f"| mean | {g:.1f} | {b:.1f} | {b - g:+.1f} |")
    return results


FILTERS = (("learned", 1), ("gradnorm", 3))


def matched_random(arg):
    """(StreamTask, overrides, filter mode) -> the filter's result and random subsampling's at the keep fraction
    that trains on as many windows (bisection, 6 steps; the random draws are nested as keep grows)."""
    task, overrides, mode = arg
    scored = evaluate((task, tuple(overrides) + (("filter_mode", mode),)))
    lo, hi, best = 0.0, 1.0, None
    for _ in range(6):
        mid = (lo + hi) / 2
        r = evaluate((task, tuple(overrides) + (("filter_mode", 2), ("filter_keep", mid))))
        if best is None or abs(r["trained"] - scored["trained"]) <= abs(best["trained"] - scored["trained"]):
            best = r
        lo, hi = (mid, hi) if r["trained"] < scored["trained"] else (lo, mid)
    return dict(scored, random=best["board"], random_trained=best["trained"])


def compare_filters(overrides, people, seeds, windows, workers, replay_bytes=RECOMMENDED_REPLAY_BYTES, log=print):
    streams = [(shift, labels) for shift, labels in STREAMS if labels > 0]
    grid = [(matched_random, (StreamTask(p, s, labels, shift, windows=windows, replay_bytes=replay_bytes),
                              tuple(overrides), mode))
            for shift, labels in streams for p in people for s in seeds for _, mode in FILTERS]
    results = run_tasks(grid, workers=workers, log=lambda line: None)
    log("\n| stream | filter | generic | filter | random at equal cost | windows trained (filter / random) |")
    for shift, labels in streams:
        for name, mode in FILTERS:
            rs = [r for (_, (t, _, m)), r in zip(grid, results) if (t.shift, t.labels, m) == (shift, labels, mode)]
            mean = {k: np.mean([r[k] for r in rs]) for k in ("generic", "board", "random", "trained",
                                                             "random_trained")}
            log(f"| {shift}+{labels:.0%} | {name} | {mean['generic']:.1f} | {mean['board']:.1f} | "
                f"{mean['random']:.1f} | {mean['trained']:.0f} / {mean['random_trained']:.0f} |")
    return results


def parse_overrides(items):
    out = []
    for item in items:
        key, value = item.split("=")
        out.append((key, float(value) if "." in value else int(value)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", action="store_true", help="run the defaults on the reporting people 25-30")
    ap.add_argument("--filters", action="store_true",
                    help="compare the instance filters with random subsampling at equal cost (people 25-30)")
    ap.add_argument("--people", type=int, nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--windows", type=int, default=None, help="first N windows per stream (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--params", nargs="+", metavar="NAME",
                    help="search only the steps of these parameters, from the shipped defaults")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="overrides on the defaults")
    ap.add_argument("--replay-bytes", type=int, default=RECOMMENDED_REPLAY_BYTES,
                    help="the trainer's replay memory (0: a default build's, none)")
    a = ap.parse_args(argv)
    if a.filters:
        compare_filters(parse_overrides(a.set), a.people or REPORTING, a.seeds or (0,), a.windows, a.workers,
                        a.replay_bytes)
    elif a.report:
        report(parse_overrides(a.set), a.people or REPORTING, a.seeds or (0, 1, 2), a.windows, a.workers,
               a.replay_bytes)
    else:
        print(HEADER)
        known = {n for names, _ in GRID for n in names}
        unknown = sorted(set(a.params or ()) - known)
        if unknown:
            ap.error(f"no search step for {', '.join(unknown)} (have: {', '.join(sorted(known))})")
        best = search(a.people or VALIDATION, a.seeds or (0,), a.windows, a.workers, a.params)
        print("best:", best)


if __name__ == "__main__":
    main()
