"""Issue 14: prototype (nearest-class-mean) heads on the exits' pooled int8 features (docs/RESULTS.md, "Issue 14:
prototype heads"). Two studies: --offline, one exit's prototype head alone on cached features (the backbone and
generic heads are frozen, so each window's pooled features and generic logits are computed once per stream, in
build/prototype_cache); and the board's whole loop on the numpy reference (early exits, thresholds, do-no-harm
guard) with prototype heads (`TrainerReference(..., prototypes=True)`) or, with --sgd, today's SGD heads.

    PYTHONPATH=. python tools/prototype_study.py --offline --people 25-30 --seeds 0-2
    PYTHONPATH=. python tools/prototype_study.py --people 21-24 --seeds 0 --set proto_temperature=16.0
    PYTHONPATH=. python tools/prototype_study.py --people 25-30 --seeds 0-2 [--sgd --replay-bytes 37888]
"""
import argparse
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np

CACHE = Path("build/prototype_cache")
POOLED = ("exit0.gap.pooled", "exit1.gap.pooled", "exit2.gap.pooled", "final.gap.pooled")


def span(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def features(key):
    """(person, shift, seed) -> cached dict: pooled int8 features per exit, generic int8 logits per exit, truth,
    labelled (10% random labels, the streams' own mask), invalid."""
    person, shift, seed = key
    path = CACHE / f"p{person}-{shift}-s{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    from codegen.reference import _run_step
    from mcu_train.bench.streams import StreamTask, task_stream
    compiled, stream = task_stream(StreamTask(person, seed, 0.1, shift))
    dims = compiled.meta["input_dims_nhwc"]
    feats = {name: [] for name in POOLED}
    logits = [[] for _ in compiled.meta["exits"]]
    for row in stream.rows:
        acts = {compiled.graph.input: np.asarray(row, np.int8).reshape(dims)}
        for step in compiled.steps:
            acts[step.output] = _run_step(step, acts)
            if step.exit_index >= 0:
                logits[step.exit_index].append(acts[step.output].reshape(-1))
        for name in POOLED:
            feats[name].append(acts[name].reshape(-1))
    out = dict(truth=np.asarray(stream.truth), labelled=np.asarray(stream.labelled), invalid=np.asarray(stream.invalid),
               **{f"f{k}": np.array(feats[n], np.int8) for k, n in enumerate(POOLED)},
               **{f"z{k}": np.array(z, np.int8) for k, z in enumerate(logits)})
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def cache_all(keys, jobs):
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(features, keys))


def ncm_logits(x, sums, counts, metric):
    """Logits of the nearest-class-mean head (classes without an example: -inf): -|x - m_c|^2 (euclid) or the
    cosine of x and m_c in the features' real coordinates (cosine; x, m offset by the zero point given)."""
    z = np.full(len(counts), -np.inf)
    have = counts > 0
    m = sums[have] / counts[have, None]
    if metric == "euclid":
        z[have] = -np.sum((x[None, :] - m) ** 2, axis=1)
    else:
        z[have] = (m @ x) / (np.linalg.norm(m, axis=1) * np.linalg.norm(x) + 1e-9)
    return z


def simulate(d, k, metric="euclid", zp=-128, fallback="generic"):
    """Prequential predictions of exit k's generic head and of its prototype head (running class means of the
    labelled windows' pooled features, updated after each labelled window is predicted). The prototype head
    chooses among the classes it has an example of; before it has two, the generic head answers. With
    fallback "generic", a window the generic head gives to a class without a prototype keeps that answer."""
    f = d[f"f{k}"].astype(np.float64) - (zp if metric == "cosine" else 0)
    classes = d["z3"].shape[1]
    sums, counts = np.zeros((classes, f.shape[1])), np.zeros(classes)
    gen = np.argmax(d[f"z{k}"], axis=1)
    proto = gen.copy()
    for i, (x, y, lab) in enumerate(zip(f, d["truth"], d["labelled"])):
        if np.sum(counts > 0) >= 2 and not (fallback == "generic" and counts[gen[i]] == 0):
            proto[i] = int(np.argmax(ncm_logits(x, sums, counts, metric)))
        if lab and y >= 0:
            sums[y] += x
            counts[y] += 1
    return gen, proto


def second_half(pred, truth):
    h = len(truth) // 2
    return 100.0 * np.mean(pred[h:] == truth[h:])


def offline(people, seeds, shifts, metrics, fallbacks):
    print("| stream | exit | generic | " + " | ".join(f"{m}, {c}" for m in metrics for c in fallbacks) + " |")
    for shift, k in product(shifts, range(4)):
        cells = []
        ds = [features((p, shift, s)) for p in people for s in seeds]
        gen = np.mean([second_half(simulate(d, k)[0], d["truth"]) for d in ds])
        for m, c in product(metrics, fallbacks):
            cells.append(np.mean([second_half(simulate(d, k, m, fallback=c)[1], d["truth"]) for d in ds]))
        print(f"| {shift} | {k} | {gen:.1f} | " + " | ".join(f"{v:.1f}" for v in cells) + " |")


def board_run(arg):
    """(StreamTask, prototypes?, overrides) -> the reference board's second-half accuracy next to the generic
    model's, on the stream's random 10% labels (the firmware's defaults and streaming configuration)."""
    from codegen.train_reference import TrainerReference
    from mcu_train.bench.analysis import stream_accuracies
    from mcu_train.bench.streams import _Recorder, labelled_stream, task_config, task_stream
    from codegen import train_reference
    task, prototypes, overrides = arg
    compiled, stream = task_stream(task)
    cfg = task_config(task, len(compiled.meta["exits"]))
    for key, value in overrides:
        if key == "proto_temperature":  # compile-time constants, not CONFIG fields
            train_reference.PROTO_TEMPERATURE = value
        elif key == "threshold_max":
            cfg.threshold_max = [value] * len(cfg.threshold_max)
        else:
            setattr(cfg, key, value)
    rec = _Recorder.__new__(_Recorder)
    rec.trainer = TrainerReference(compiled, cfg.rounded(), prototypes=prototypes)
    rec.rows = {k: [] for k in ("thresholds", "served_conf", "served_pred", "served_personal", "generic_conf",
                                "generic_pred")}
    steps, _, _ = labelled_stream(stream, "random", task.labels, rec.train, None)
    r = dict(truth=stream.truth, prediction=np.array([s.prediction for s in steps]),
             **{k: np.array(v) for k, v in rec.rows.items()})
    generic, board = stream_accuracies(r)
    h = len(steps) // 2
    return dict(person=task.person, seed=task.seed, shift=task.shift, generic=generic, board=board,
                exits=np.bincount([s.exit for s in steps[h:]], minlength=4).tolist(),
                served=np.mean(r["served_personal"][h:], axis=0).round(2).tolist())


def board_table(people, seeds, shifts, prototypes, overrides=(), jobs=2, replay_bytes=0, replays=None):
    from mcu_train.bench.streams import StreamTask
    tasks = [(StreamTask(p, s, 0.1, sh, replay_bytes=replay_bytes, replays=replays), prototypes, tuple(overrides))
             for sh in shifts for p in people for s in seeds]
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(board_run, tasks))
    for sh in shifts:
        print(f"\n{sh}, 10% labels, {'prototype heads' if prototypes else 'SGD heads'} {dict(overrides)}")
        print("| person | generic | board | board - generic | worst seed | exits 0-3 (second half) | served |")
        print("|---|---|---|---|---|---|---|")
        sel = [r for r in rows if r["shift"] == sh]
        for p in people:
            rs = [r for r in sel if r["person"] == p]
            g, b = np.mean([r["generic"] for r in rs]), np.mean([r["board"] for r in rs])
            worst = min(r["board"] - r["generic"] for r in rs)
            ex = np.sum([r["exits"] for r in rs], axis=0)
            sv = np.mean([r["served"] for r in rs], axis=0).round(2).tolist()
            print(f"| {p} | {g:.1f} | {b:.1f} | {b - g:+.1f} | {worst:+.1f} | {' / '.join(map(str, ex))} | {sv} |")
        g, b = np.mean([r["generic"] for r in sel]), np.mean([r["board"] for r in sel])
        print(f"| mean | {g:.1f} | **{b:.1f}** | {b - g:+.1f} | {min(r['board'] - r['generic'] for r in sel):+.1f} | | |")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", default="21-24")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--offline", action="store_true", help="the offline study on cached features")
    ap.add_argument("--sgd", action="store_true", help="the SGD heads (today's board) instead of prototype heads")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="CONFIG overrides, and proto_temperature")
    ap.add_argument("--replay-bytes", type=int, default=0, help="the SGD heads' replay memory (--sgd)")
    ap.add_argument("--replays", type=int, default=None)
    ap.add_argument("--shifts", default="rotate,none")
    a = ap.parse_args()
    people, seeds = span(a.people), span(a.seeds)
    if a.offline:
        cache_all([(p, sh, s) for p in people for sh in ("rotate", "none") for s in seeds], a.jobs)
        offline(people, seeds, ("rotate", "none"), ("euclid", "cosine"), ("generic", "none"))
    else:
        from mcu_train.bench.defaults import parse_overrides
        board_table(people, seeds, a.shifts.split(","), not a.sgd, parse_overrides(a.set), a.jobs, a.replay_bytes,
                    a.replays)
