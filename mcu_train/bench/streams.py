"""One person's stream through the on-device trainer, the unit of the benchmark's sweeps: prequential (each
window classified, then maybe trained on), on the numpy golden model of the board's arithmetic
(codegen.train_reference) or on a board. `run_stream(task)` records, per window, what the board reports
(decisions; costs on a board) and, from the reference, every exit's served and generic confidence and
prediction, so accuracy and cost at any exit threshold can be read off afterwards: nothing the trainer
learns depends on the thresholds (they only choose which exit answers), so one run serves a whole
speed-accuracy curve."""
import functools
import os
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from codegen.trainer import RECOMMENDED_REPLAY_BYTES
from mcu_train.errors import McuTrainError
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL, OUTPUT_DIR

# Labels the host sends: "random" (a fixed random subset, data.keep_labels, sent with TRAIN); "active" (the
# board asks for the labels it wants, TRAIN reply flag STEP_ASKED, and the host answers with LABEL, at most the
# same fraction of the windows so far).
LABEL_POLICIES = ("random", "active")

# Trainer settings on top of the streaming configuration (mcu_train.stream.monitor.stream_config, what
# `mcu-train monitor` and `mcu-train demo` run). "random" keeps the fraction of unlabelled windows that makes it
# train on as many windows as "filter+pruning" does on the same stream (same training budget).
SETTINGS = {
    "stream": {},
    "dense": dict(filter_mode=0, prune_keep=1.0),
    "filter": dict(filter_mode=1, prune_keep=1.0),
    "filter+pruning": dict(filter_mode=1),
    "random": dict(filter_mode=2),
}
PER_EXIT = ("served_conf", "served_pred", "served_personal", "generic_conf", "generic_pred", "thresholds")


@dataclass(frozen=True)
class StreamTask:
    person: int
    seed: int = 0
    labels: float = 0.1  # fraction of windows sent with their label
    shift: str = "none"  # or "rotate": the placement shift (docs/data.md)
    label_policy: str = "random"
    train: str = "exits"  # or "exits+last-block"
    setting: str = "stream"  # a key of SETTINGS
    windows: int | None = None  # the first N windows of the person (default: all)
    replay_bytes: int = RECOMMENDED_REPLAY_BYTES  # the trainer's replay memory (`--replay-bytes`)
    block_keep: float | None = None  # `--block-keep` (with exits+last-block; None: not given)
    replays: int | None = None  # CONFIG replays (None: the firmware's default; 0: the replay memory is not replayed)
    board: str | None = None  # None: the numpy reference
    model: str = str(DEFAULT_MODEL)
    calib: str = str(DEFAULT_CALIB)

    @property
    def label(self):
        return (f"person {self.person} seed {self.seed} labels {self.labels:g} ({self.label_policy}) {self.shift} "
                f"{self.train} {self.setting} on {self.board or 'reference'}")


@functools.cache
def compiled_model(model, calib, train, replay_bytes=RECOMMENDED_REPLAY_BYTES, block_keep=None):
    """The compiled model with its trainer, for the reference (cached per process)."""
    from codegen.compile import build
    from mcu_train.boards import get_board
    return build(model, get_board("host"), calib, train=train, replay_bytes=replay_bytes, block_keep=block_keep)


@functools.cache
def firmware(board_name, model, calib, train=None, replay_bytes=RECOMMENDED_REPLAY_BYTES, block_keep=None):
    """(model.json, ELF) of the model compiled and built for a board, once per process (the folder names the
    process, so parallel workers never build into the same place)."""
    from codegen.compile import compile_model
    from mcu_train.boards import get_board
    from mcu_train.boards.runner import runner_for
    from mcu_train.link.model_client import load_model_meta
    board = get_board(board_name)
    work = OUTPUT_DIR / "bench" / f"{board_name}-{train or 'inference'}-{os.getpid()}"
    compile_model(model, board, work / "model", calib=calib, quiet=True, train=train,
                  replay_bytes=replay_bytes if train else None, block_keep=block_keep)
    return load_model_meta(work / "model"), runner_for(board).build(work / "model", work / "firmware").elf


def task_config(task, num_exits, keep=None):
    from mcu_train.stream.monitor import stream_config
    cfg = stream_config(num_exits)
    for key, value in SETTINGS[task.setting].items():
        setattr(cfg, key, value)
    if keep is not None:
        cfg.filter_keep = keep
    if task.replays is not None:
        cfg.replays = task.replays
    cfg.label_budget = task.labels if task.label_policy == "active" else cfg.label_budget
    return cfg.rounded()


def task_stream(task):
    from mcu_train.stream.monitor import person_stream
    if task.label_policy not in LABEL_POLICIES:
        raise McuTrainError(f"label policy {task.label_policy!r} is not in this build (have: "
                            f"{', '.join(LABEL_POLICIES)})")
    if task.setting not in SETTINGS:
        raise McuTrainError(f"unknown setting {task.setting!r}: one of {', '.join(SETTINGS)}")
    compiled = compiled_model(task.model, task.calib, task.train, task.replay_bytes, task.block_keep)
    return compiled, person_stream(compiled.meta, task.person, task.labels, task.shift, task.seed, task.windows)


class _Recorder:
    """The reference trainer, keeping what each window's evaluation saw (every exit, served and generic)."""

    def __init__(self, compiled, cfg):
        from codegen.train_reference import TrainerReference
        self.trainer = TrainerReference(compiled, cfg)
        self.rows = {k: [] for k in PER_EXIT}

    def train(self, row, label, invalid):
        thresholds = self.trainer._thresholds_q16()  # what this window's prediction is made with
        recs = self.trainer.exit_records(row)
        step = self.trainer.train(row, label, invalid)
        self.rows["thresholds"].append(thresholds)
        self.rows["served_conf"].append([r["served_conf"] for r in recs])
        self.rows["served_pred"].append([r["served_pred"] for r in recs])
        self.rows["served_personal"].append([r["serve_personalised"] for r in recs])
        self.rows["generic_conf"].append([r["generic_conf"] for r in recs])
        self.rows["generic_pred"].append([r["generic_pred"] for r in recs])
        return step


def _steps_arrays(steps):
    names = [f.name for f in fields(steps[0])] if steps else []
    return {n: np.array([getattr(s, n) for s in steps]) for n in names}


def labelled_stream(stream, policy, budget, train, label):
    """Every window through train(row, label or None, invalid) -> TrainStep: "random" sends the stream's labels
    with TRAIN; "active" answers a window whose reply asks (STEP_ASKED) with label(class) -> TrainStep while
    the labels given stay within `budget` x the windows so far, and folds that reply's cost into the window's.
    Returns (steps, which windows were labelled, which asked)."""
    from codegen.trainer_abi import STEP_ASKED
    steps, given, asked = [], np.zeros(len(stream.truth), bool), np.zeros(len(stream.truth), bool)
    for i, (r, y, m, b) in enumerate(zip(stream.rows, stream.truth, stream.labelled, stream.invalid)):
        step = train(r, int(y) if m and policy == "random" else None, bool(b))
        asked[i] = bool(step.flags & STEP_ASKED)
        if policy == "random":
            given[i] = bool(m)
        elif asked[i] and y >= 0 and given.sum() + 1 <= budget * (i + 1):
            given[i] = True
            lab = label(int(y))
            for key in ("cost_training", "macs_forward", "macs_backward", "macs_backward_dense"):
                setattr(step, key, getattr(step, key) + getattr(lab, key))
        steps.append(step)
    return steps, given, asked


def _run_reference(compiled, stream, cfg, policy="random", budget=0.0):
    rec = _Recorder(compiled, cfg)
    steps, given, asked = labelled_stream(stream, policy, budget, rec.train, lambda y: rec.trainer.label(y, 0))
    out = {k: np.array(v) for k, v in rec.rows.items()}
    return steps, dict(out, labelled=given, asked=asked)


def _run_board(task, compiled, stream, cfg):
    from mcu_train.boards import get_board
    from mcu_train.boards.runner import session
    from mcu_train.link.trainer_client import Trainer
    meta, elf = firmware(task.board, task.model, task.calib, task.train, task.replay_bytes, task.block_keep)
    with session(get_board(task.board), elf) as (_, link):
        trainer = Trainer(link, meta)
        trainer.config(cfg)
        return labelled_stream(stream, task.label_policy, task.labels, trainer.train, trainer.label)[0]


def trained_windows(task, keep=None):
    """How many windows the reference trains on in this task's stream (setting's filter, `keep`)."""
    compiled, stream = task_stream(task)
    steps, _ = _run_reference(compiled, stream, task_config(task, len(compiled.meta["exits"]), keep))
    return sum(s.outcome in (0, 5) for s in steps)


@functools.cache
def matched_keep(task):
    """The random filter's keep fraction at which it trains on as many windows as the learned filter with
    pruning on the same stream (bisection on the reference; the random draws are nested as keep grows)."""
    want = trained_windows(replace(task, setting="filter+pruning", board=None))
    lo, hi = 0.0, 1.0
    probe = replace(task, setting="random", board=None)
    for _ in range(8):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if trained_windows(probe, mid) < want else (lo, mid)
    return round((lo + hi) / 2, 4)


def run_stream(task):
    """Run one stream (on task.board, or the reference when it is None): a dict of per-window arrays:
    truth, labelled; the TRAIN reply fields (TrainStep); the per-exit reference records (PER_EXIT, (N, exits));
    on a board also `mismatches` (windows whose decisions differ from the reference)."""
    compiled, stream = task_stream(task)
    keep = matched_keep(replace(task, board=None)) if task.setting == "random" else None
    cfg = task_config(task, len(compiled.meta["exits"]), keep)
    ref_steps, per_exit = _run_reference(compiled, stream, cfg, task.label_policy, task.labels)
    out = dict(task=asdict(task), keep=cfg.filter_keep, truth=stream.truth, **per_exit)
    steps = ref_steps
    if task.board:
        steps = _run_board(task, compiled, stream, cfg)
        out["mismatches"] = sum(a.decisions() != b.decisions() for a, b in zip(steps, ref_steps))
    out.update(_steps_arrays(steps))
    return out
