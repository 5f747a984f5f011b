"""`mcu-train monitor`: stream windows to a board with a trainer and watch it personalise: one person's HAPT
windows, or a user's recordings or live sensor rows (--data; the sources are in mcu_train.data.source).

Prequential: each window goes out as one TRAIN request, which the board classifies before it trains on it (a
window larger than a frame goes first in INPUT_PUT chunks, then a TRAIN without input bytes).
Up to 4 requests are in flight (mcu_train.link.Pipeline: sequence numbers, go-back-N, the board's replay
store), so nothing is lost or run twice. The host computes the generic model's prediction for the same
window with the numpy reference of the same compiled model. A live display shows progress, rolling
accuracies, exits, training outcomes and cost; at the end come a summary table, the JSONL log
(mcu_train.stream.runlog; docs/monitor.md) and a PNG (mcu_train.stream.plots).

Robustness: every window line is flushed when its reply arrives; a dropped serial connection is reopened
and the outstanding requests resent; the board's trainer is saved to a checkpoint file every
`checkpoint_every` windows (atomically), so `--resume` can restore a new board (CHECKPOINT_PUT), replay the
windows logged since the checkpoint (checking that the board makes the same decisions again, not logging
them twice) and continue with the next window. Ctrl-C stops sending, waits for the replies in flight, and
writes the summary and the plot."""
import contextlib
import math
import signal
import struct
import time
import zlib
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from codegen.files import write_atomically
from mcu_train import data
from mcu_train.errors import DataError, McuTrainError
from mcu_train.link import BoardGone, Pipeline
from mcu_train.link.model_client import check_model_hash
from mcu_train.link.protocol import REPLAY_DEPTH, Msg
from mcu_train.link.trainer_client import (STEP_ASKED, STEP_PERSONALISED, FilterMode, TrainConfig,
                                           Trainer, TrainStep, window_to_wire)
from mcu_train.resources import DEFAULT_CALIB, shipped_path
from mcu_train.stream.runlog import OUTCOME_KIND, ROLLING, RunLog, read_log, summarise

DEFAULT_MODEL_DIR = Path("build") / "demo" / "model"
CHECKPOINT_EVERY = 100  # acknowledged windows between two checkpoints
MAX_RECONNECTS = 10
LOG_VERSION = 1
LABEL_POLICIES = ("random", "active")  # --label-policy: labels sent at random with TRAIN, or those the board asks for
LIVE_RESUME = ("--resume replays the windows logged since the checkpoint, and a live stream from stdin cannot be "
               "read again: start a new run (with another --log)")
SHIFT_NOTE = ("placement shift: this person's phone is carried differently (axes turned {angle:.0f} degrees), "
              "the case where personalisation matters: the generic model was trained on phones worn the usual way")


# ------------------------------------------------------------------------------------------------ inputs

def load_model(model_dir, calib=None):
    """(model.json, compiled model) of a `mcu-train compile` output folder. The compiled model is rebuilt
    from the ONNX source the folder names, with `calib`, and must give the same model hash: the host's
    references (generic predictions, the trainer's golden model) are then exactly what the board runs."""
    from codegen.compile import build, render
    from mcu_train.boards import get_board
    from mcu_train.link.model_client import load_model_meta
    model_dir = Path(model_dir)
    if not (model_dir / "model.json").is_file():
        raise McuTrainError(f"{model_dir} is not an output folder of `mcu-train compile` (no model.json): run "
                            "`mcu-train demo`, or `mcu-train compile models/har.onnx --calib models/har_calib.npz "
                            f"--train exits -o {model_dir}`")
    meta = load_model_meta(model_dir)
    if "train" not in meta:
        raise McuTrainError(f"{model_dir} was compiled without --train: the board would have no trainer")
    source = shipped_path(meta["source"])
    if not source.is_file():
        raise McuTrainError(f"the model's source {meta['source']} (named in {model_dir}/model.json) is missing")
    calib = Path(calib) if calib else DEFAULT_CALIB
    compiled = build(source, get_board(meta["board"]), calib, train=meta["train"]["mode"],
                     replay_bytes=meta["train"].get("replay_bytes", 0))
    _, digest = render(compiled, source.name)
    if digest != meta["model_hash"]:
        raise McuTrainError(f"rebuilding {model_dir} from {source} with calibration {calib} gives model "
                            f"{digest}, not {meta['model_hash']}: pass the --calib it was compiled with")
    compiled.meta["model_hash"] = digest
    return meta, compiled


def _metadata_number(meta, key, default):
    text = meta.get("metadata", {}).get(f"mcu_train.{key}")
    if text is None:
        return default
    values = [float(v) for v in str(text).split(",")]
    return values[0] if len(values) == 1 else values


class Stream:
    """Windows as they go to the board, from a source (mcu_train.data.source: HAPT, a user's recordings, a
    live stream). Files and HAPT are known before the run starts; a live stream's windows arrive while it
    runs (`ready`, `wait` and `ended` follow it). Per window: the int8 model input (channels-last), whether
    it has non-finite readings (sent flagged invalid), its class (-1: no label), whether its label is sent,
    and the recording it comes from."""

    def __init__(self, meta, source, label_ratio, seed, limit=None):
        self.meta, self.spec = meta, data.WindowSpec.from_model(meta)
        self.record = source.record()  # what the run record says about the data
        self.live, self.notes = source.live, []  # notes: what the user should know before streaming
        self.label_ratio, self.seed, self.limit = label_ratio, seed, limit
        self.label_policy = "random"  # "active": no label goes with TRAIN; the board asks (Monitor answers)
        self.person, self.rotation = getattr(source, "person", None), getattr(source, "rotation", None)
        self.rows, self.invalid, self.truth, self.labelled, self.recording = [], [], [], [], []
        self.feed = None  # a live source's LiveFeed
        self.error = None  # the DataError that ended a live stream (a bad row)
        self._rng = np.random.default_rng(seed)  # a live stream keeps each label with probability label_ratio

    def __len__(self):
        return len(self.truth)

    def add(self, windows, labelled):
        for x in self.spec.to_model_input(windows.x):
            row, invalid = window_to_wire(self.meta, x)
            self.rows.append(row)
            self.invalid.append(invalid)
        self.truth += windows.y.tolist()
        self.labelled += labelled.tolist()
        self.recording += windows.recording.tolist()

    def _take(self, chunk):
        chunk = chunk.select(slice(0, None if self.limit is None else self.limit - len(self)))
        self.add(chunk, (chunk.y >= 0) & (self._rng.random(len(chunk)) < self.label_ratio))

    def _full(self):
        return self.limit is not None and len(self) >= self.limit

    def ready(self, i):
        """Is window i known? A live stream takes what has arrived, without waiting."""
        while self.feed is not None and i >= len(self) and not self._full():
            chunk = self._get()
            if chunk is None:
                break
            self._take(chunk)
        return i < len(self)

    def wait(self, i, timeout=0.1):
        """Wait up to `timeout` seconds for window i of a live stream."""
        if not self.ready(i) and self.feed is not None and not self._full():
            chunk = self._get(timeout)
            if chunk is not None:
                self._take(chunk)

    def _get(self, timeout=0.0):
        try:
            return self.feed.get(timeout)
        except DataError as e:  # a bad row ends the stream there; the monitor logs what came before it
            self.error = e
            return None

    def ended(self, i):
        """No window i, and none will come."""
        return not self.ready(i) and (self.feed is None or self.feed.done or self._full())

    def rotation_degrees(self):
        if self.rotation is None:
            return 0.0
        return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(self.rotation) - 1) / 2))))


def source_stream(meta, source, label_ratio=0.1, seed=0, limit=None, resample=False):
    """The Stream of a source's windows. Files: every window now (a bad file is refused here), `--labels`
    keeps exactly round(label_ratio x windows with a label) labels, chosen by the seed (data.keep_labels).
    A live stream: windows are gathered while the monitor runs."""
    stream = Stream(meta, source, label_ratio, seed, limit)
    classes = data.ClassMap(meta["classes"] or [str(k) for k in range(meta["exits"][-1]["classes"])])
    if stream.record.get("dataset") is None:
        spec = stream.spec
        stream.record["windowing"] = {"sample_rate_hz": spec.sample_rate_hz, "window": spec.window, "hop": spec.hop,
                                      "channels": list(source.channels), "resample": bool(resample)}
    chunks = source.iter_windows(stream.spec, classes, resample)
    if source.live:
        stream.feed = data.LiveFeed(chunks)
    else:
        w = data.WindowSet.concat(list(chunks), stream.spec.num_channels, stream.spec.window).select(slice(0, limit))
        stream.add(w, data.keep_labels(w.y, label_ratio, seed))
        stream.notes = list(source.notes)
    return stream


def person_stream(meta, person, label_ratio=0.1, shift="none", seed=0, limit=None):
    """One HAPT person's windows (with --shift rotate: under the placement shift)."""
    return source_stream(meta, data.HaptSource(person, shift, seed), label_ratio, seed, limit)


def generic_predictions(compiled, rows, thresholds):
    """The generic (not personalised) int8 model on each row, early exits at `thresholds`: (class, exit)."""
    from codegen.reference import threshold_to_q16
    dims = compiled.meta["input_dims_nhwc"]
    q16 = [threshold_to_q16(t) for t in thresholds]
    pred, exits = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    for i, row in enumerate(rows):
        k, logits, _ = compiled.reference.run(row.reshape(dims), q16)
        pred[i], exits[i] = int(np.argmax(logits)), k
    return pred, exits


def stream_config(num_exits, lr=None, pseudo_threshold=None, filter_mode=None, keep=None, seed=None,
                  label_budget=None):
    """The firmware's boot configuration (TrainConfig.default, from the sweep in docs/training.md), with the
    parameters given here (not None) overriding it."""
    from codegen.reference import threshold_to_q16
    cfg = TrainConfig.default(num_exits)
    if lr is not None:
        cfg.lr = lr
    if pseudo_threshold is not None:
        cfg.pseudo_threshold_q16 = threshold_to_q16(pseudo_threshold)
    if filter_mode is not None:
        cfg.filter_mode = FilterMode[filter_mode.upper()]
    if keep is not None:
        cfg.filter_keep = keep
    if seed is not None:
        cfg.seed = seed
    if label_budget is not None:  # --label-policy active: the board may ask for this fraction of the labels
        cfg.label_budget = label_budget
    return cfg.rounded()


# ------------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_MAGIC = b"MTMC"  # monitor checkpoint: magic, windows acknowledged before it, CRC-32 of the image
_CKPT_HEAD = struct.Struct("<4sII")


def checkpoint_path(log_path):
    return Path(f"{log_path}.ckpt")


def save_checkpoint(path, windows, image):
    write_atomically(path, _CKPT_HEAD.pack(CHECKPOINT_MAGIC, windows, zlib.crc32(image)) + image)


def load_checkpoint(path):
    """(windows acknowledged before the checkpoint, trainer image)."""
    raw = Path(path).read_bytes()
    magic, windows, crc = _CKPT_HEAD.unpack_from(raw)
    image = raw[_CKPT_HEAD.size:]
    if magic != CHECKPOINT_MAGIC or zlib.crc32(image) != crc:
        raise McuTrainError(f"{path} is not a valid monitor checkpoint")
    return windows, image


def check_resumable(log_path, meta, stream, cfg):
    """The log and checkpoint of a run with these options, checked before any board is touched:
    (run record, window records, windows before the checkpoint, checkpoint image)."""
    if stream.live:
        raise McuTrainError(LIVE_RESUME)
    run, windows, _summary, _partial = read_log(log_path)
    data_record = {k: v for k, v in stream.record.items() if k != "source"}  # the data is its sha256, not its path
    mine = {"model_hash": meta["model_hash"], **data_record, "label_ratio": stream.label_ratio,
            "label_policy": stream.label_policy, "seed": stream.seed,
            "windows": len(stream), "config": asdict(cfg)}
    for key, value in mine.items():
        if run.get(key, "random" if key == "label_policy" else None) != value:  # older logs: random labels
            raise McuTrainError(f"{log_path} is a run with {key} {run.get(key)!r}, this one has {value!r}: "
                                "resume with the same options and model")
    ckpt = checkpoint_path(log_path)
    if not ckpt.is_file():
        raise McuTrainError(f"no checkpoint {ckpt} next to the log: cannot resume")
    done, image = load_checkpoint(ckpt)
    if done > len(windows):
        raise McuTrainError(f"the checkpoint is after window {done}, the log ends at window {len(windows) - 1}")
    return run, windows, done, image


# ------------------------------------------------------------------------------------------------ display

class Dashboard:
    """The live view: a rich renderable rebuilt from the records so far."""

    def __init__(self, run, title, notes=()):
        self.run, self.title, self.notes = run, title, list(notes)
        self.records = []
        self.t0 = time.monotonic()
        self.session_start = 0  # windows already logged when this session started
        self.link = {}
        self.status = "streaming"

    def __rich__(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text
        run, recs = self.run, self.records
        done = len(recs)
        n_total = run["windows"] if run["windows"] is not None else done  # a live stream's length is not known
        elapsed = time.monotonic() - self.t0
        rate = (done - self.session_start) / elapsed if elapsed > 0 else 0.0
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=max(n_total, 1), completed=done, width=40),
                     Text(f"{done}/{n_total if run['windows'] is not None else '?'} windows  {rate:5.1f} windows/s  "
                          f"{self.status}"))
        acc = Table(box=None, padding=(0, 2))
        for col in ("", f"last {ROLLING}", "so far", "second half"):
            acc.add_column(col, justify="right" if col else "left")
        half = n_total // 2
        for name, key in (("personalised (board)", "prediction"), ("generic (host reference)", "generic_prediction")):
            vals = [r for r in recs if r["truth"] is not None and r.get(key) is not None]
            ok = np.array([r[key] == r["truth"] for r in vals], float)
            second = np.array([r[key] == r["truth"] for r in vals if r["seq"] >= half], float)
            acc.add_row(name, _pct(ok[-ROLLING:].mean() if len(ok) else None), _pct(ok.mean() if len(ok) else None),
                        _pct(second.mean() if len(second) else None))
        exits = np.bincount([r["exit"] for r in recs], minlength=len(run["thresholds"])) if recs else \
            np.zeros(len(run["thresholds"]), int)
        names = run.get("exit_names") or [f"exit {k}" for k in range(len(exits))]
        hist = Table(box=None, padding=(0, 1))
        hist.add_column("exit")
        hist.add_column("windows", justify="right")
        hist.add_column("")
        for name, c in zip(names, exits):
            share = c / max(done, 1)
            hist.add_row(name, str(c), Text("█" * int(round(30 * share)), style="cyan"))
        kinds = {k: sum(r["training"] == k for r in recs) for k in ("trained", "filtered", "skipped")}
        unit = run.get("counter_unit") or ""
        costs = [r["cost"] for r in recs[-ROLLING:]]
        counts = Text(f"trained {kinds['trained']}  filtered {kinds['filtered']}  skipped {kinds['skipped']}  "
                      f"(labelled {sum(r['labelled'] for r in recs)})")
        cost = Text(f"cost per window (last {ROLLING}): " + (f"{np.mean(costs):,.0f} {unit}" if costs else "-") +
                    (f"  (inference {np.mean([r['cost_inference'] for r in recs[-ROLLING:]]):,.0f})" if costs else ""))
        parts = [head, *[Text(n, style="yellow") for n in self.notes], acc, hist, counts, cost]
        if self.link and (self.link.get("retransmitted") or self.link.get("reconnects")):
            parts.append(Text("link: " + ", ".join(f"{k} {v}" for k, v in self.link.items() if v), style="dim"))
        return Panel(Group(*parts), title=self.title)


def _pct(v):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}%"


def summary_table(summary, title="summary"):
    from rich.table import Table
    t = Table(title=title)
    t.add_column("")
    t.add_column("personalised (board)", justify="right")
    t.add_column("generic model", justify="right")
    t.add_row("accuracy, all windows", _pct(summary["accuracy"]), _pct(summary["generic_accuracy"]))
    t.add_row("accuracy, first half", _pct(summary["first_half"]["accuracy"]),
              _pct(summary["first_half"]["generic_accuracy"]))
    t.add_row("accuracy, second half", _pct(summary["second_half"]["accuracy"]),
              _pct(summary["second_half"]["generic_accuracy"]))
    n = max(summary["windows"], 1)
    t.add_row("exit usage", " ".join(f"{100 * c / n:.0f}%" for c in summary["exits"]),
              " ".join(f"{100 * c / n:.0f}%" for c in summary["generic_exits"]))
    unit = summary.get("counter_unit") or ""
    if summary["cost_mean"] is not None:
        t.add_row(f"cost per window ({unit})", f"{summary['cost_mean']:,.0f}", "-")
        t.add_row("  of which the prediction", f"{summary['cost_inference_mean']:,.0f}", "-")
    t.add_row("windows trained / filtered / skipped",
              f"{summary['trained']} / {summary['filtered']} / {summary['skipped']}", "-")
    t.add_row("windows (labelled)", f"{summary['windows']} of {summary['windows_total']} ({summary['labelled']})", "")
    if summary.get("windows_per_s"):
        t.add_row("throughput", f"{summary['windows_per_s']:.1f} windows/s", "")
    return t


# ------------------------------------------------------------------------------------------------ the run

class StopRequested(Exception):
    pass


class Monitor:
    """Streams `stream` to the board behind `link` and logs it; see the module docstring."""

    def __init__(self, link, url, meta, compiled, stream, cfg, log_path, checkpoint_every=CHECKPOINT_EVERY,
                 window=REPLAY_DEPTH, rate=None, console=None, live=True, notes=()):
        self.link, self.url, self.meta, self.compiled = link, url, meta, compiled
        self.stream, self.cfg = stream, cfg
        self.log_path = Path(log_path)
        self.ckpt_path = checkpoint_path(self.log_path)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.window, self.rate = window, rate
        self.console, self.live, self.notes = console, live, list(notes)
        self.trainer = Trainer(link, meta)  # refuses a board that runs another model
        self.pipe = Pipeline(link, window)
        self.records = []
        self.reconnects = 0
        self.stop = False
        self.generic_pred, self.generic_exit = generic_predictions(compiled, stream.rows, cfg.thresholds)

    def _generic(self, i):
        """The generic model's (class, exit) for window i; a live stream's windows are run as they arrive."""
        if i >= len(self.generic_pred):
            pred, ex = generic_predictions(self.compiled, self.stream.rows[len(self.generic_pred):i + 1],
                                           self.cfg.thresholds)
            self.generic_pred = np.concatenate([self.generic_pred, pred])
            self.generic_exit = np.concatenate([self.generic_exit, ex])
        return int(self.generic_pred[i]), int(self.generic_exit[i])

    # --- records ---
    def run_record(self):
        h, m, s = self.link.hello, self.meta, self.stream
        return {"type": "run", "version": LOG_VERSION, "command": "monitor",
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "board": h.board, "emulated": h.emulated, "firmware": h.firmware_version,
                "model_hash": h.model_hash, "counter_unit": h.counter_unit,
                **s.record, "label_ratio": s.label_ratio, "label_policy": s.label_policy, "seed": s.seed,
                "windows": None if s.live else len(s),
                "thresholds": list(self.cfg.thresholds), "classes": list(m["classes"]),
                "exit_names": [e["name"] for e in m["exits"]],
                "input_offset": _metadata_number(m, "input_offset", 0.0),
                "input_scale": _metadata_number(m, "input_scale", 1.0),
                "generic": "the same compiled int8 model, not trained, early exits at `thresholds` "
                           "(codegen/reference.py on the host)",
                "config": asdict(self.cfg), "checkpoint_every": self.checkpoint_every, "rolling": ROLLING,
                "resumes": []}

    def window_record(self, i, step: TrainStep):
        s = self.stream
        generic_prediction, generic_exit = self._generic(i)
        return {"type": "window", "seq": i, "truth": None if s.truth[i] < 0 else int(s.truth[i]),
                "prediction": step.prediction, "exit": step.exit, "confidence": step.confidence_q16 / 65536,
                "labelled": bool(s.labelled[i]) and s.label_policy == "random", "asked": bool(step.flags & STEP_ASKED),
                "training": OUTCOME_KIND[step.outcome_name], "outcome": step.outcome_name,
                "target": None if step.target == 0xFF else step.target, "loss": step.loss,
                "cost": step.cost_inference + step.cost_training, "cost_inference": step.cost_inference,
                "cost_training": step.cost_training, "personalised_head": bool(step.flags & STEP_PERSONALISED),
                "generic_prediction": generic_prediction, "generic_exit": generic_exit,
                "recording": int(s.recording[i]), "time": round(time.time(), 3)}

    def _requests(self, i):
        """Window i's TRAIN (after the INPUT_PUT chunks of its input when it does not fit one frame)."""
        s = self.stream
        label = int(s.truth[i]) if s.labelled[i] and s.label_policy == "random" else None
        return self.trainer.train_requests(s.rows[i], label, s.invalid[i])

    def _answer(self, i, step, sent):
        """--label-policy active: when window i's reply asks for its label and the labels given stay within
        the budget (label_ratio x the windows so far), LABEL follows the `sent` windows sent so far. Returns
        the LABEL's age, or None."""
        s = self.stream
        if s.label_policy != "active" or not step.flags & STEP_ASKED or s.truth[i] < 0:
            return None
        if sum(r["labelled"] for r in self.records) + 1 > s.label_ratio * (i + 1):
            return None
        age = sent - 1 - i
        self.pipe.submit([(Msg.LABEL, Trainer.label_request(int(s.truth[i]), age))], tag=("label", i))
        return age

    # --- starting ---
    def start(self):
        """A fresh run: set the runtime parameters, save the initial checkpoint, write the run record."""
        self.run = self.run_record()
        self.trainer.config(self.cfg)
        self._checkpoint(0)
        self.log = RunLog(self.log_path, [self.run])

    def resume(self):
        """Continue the run in the log: restore the last checkpoint, replay the windows logged since, continue."""
        run, windows, done, image = check_resumable(self.log_path, self.meta, self.stream, self.cfg)
        self.trainer.config(self.cfg)
        self.trainer.checkpoint_put(image)
        self.records = windows
        self.run = run
        self.last_checkpoint = done
        self._catch_up(done, windows)
        run.setdefault("resumes", []).append({"at": len(windows), "time": round(time.time(), 3)})
        self.log = RunLog(self.log_path, [run, *windows])  # without a partial last line or an old summary
        return done

    def _catch_up(self, start, windows):
        """Replay windows start.. of the log on the restored board (not logged again): afterwards the board
        is exactly where it was after the last logged window. Its decisions must equal the logged ones."""
        labels_after = {}  # window j -> the LABELs (window, label) that followed its TRAIN
        for i in range(start, len(windows)):
            if windows[i].get("label_age") is not None:
                labels_after.setdefault(i + windows[i]["label_age"], []).append((i, windows[i]["truth"]))
        for i in range(start, len(windows)):
            while self.pipe.full():
                self._check_replayed(self._poll(), windows)
            self.pipe.submit(self._requests(i), tag=i)
            for j, label in labels_after.get(i, []):
                self.pipe.submit([(Msg.LABEL, Trainer.label_request(label, i - j))], tag=("label", j))
        while len(self.pipe):
            self._check_replayed(self._poll(), windows)

    def _check_replayed(self, done, windows):
        for i, payload in done:
            if isinstance(i, tuple):  # a LABEL's reply
                continue
            step, logged = TrainStep.unpack(payload), windows[i]
            if (step.prediction, step.exit, step.outcome_name) != (logged["prediction"], logged["exit"],
                                                                   logged["outcome"]):
                raise McuTrainError(f"resuming: the restored board decided differently on window {i} than the "
                                    "log says: was the log written with another board or model?")

    # --- streaming ---
    def _poll(self):
        try:
            return self.pipe.poll()
        except BoardGone as e:
            self._reconnect(e)
            return []

    def _send(self, i):
        try:
            self.pipe.submit(self._requests(i), tag=i)
        except BoardGone as e:
            self._reconnect(e)

    def _reconnect(self, error):
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS or not self.url:
            raise error
        try:
            self.link.reopen(self.url)
        except BoardGone:
            raise error from None
        if len(self.pipe):
            self.pipe.reset_line()  # resend what is in flight with the same numbers: nothing runs twice
        else:
            self.link.request(Msg.HELLO)  # nothing in flight: resynchronise

    def _request(self, fn, *args):
        """A plain request (nothing in flight), retried once over a reopened line."""
        try:
            return fn(*args)
        except BoardGone as e:
            self._reconnect(e)
            return fn(*args)

    def _checkpoint(self, windows):
        image = self._request(self.trainer.checkpoint_get)
        save_checkpoint(self.ckpt_path, windows, image)
        self.last_checkpoint = windows

    def _record(self, done, sent):
        for i, payload in done:
            if isinstance(i, tuple):  # a LABEL's reply: window i[1]'s record says it was labelled
                continue
            step = TrainStep.unpack(payload)
            rec = self.window_record(i, step)
            age = self._answer(i, step, sent)
            if age is not None:
                rec.update(labelled=True, label_age=age)
            self.log.write(rec)
            self.records.append(rec)

    def stream_windows(self, dashboard=None):
        """Send every remaining window; returns None when complete, else why it stopped."""
        nxt = len(self.records)
        self.last_checkpoint = getattr(self, "last_checkpoint", nxt)
        t0, sent0 = time.monotonic(), nxt
        while True:
            checkpoint_due = nxt - self.last_checkpoint >= self.checkpoint_every
            while not self.stop and not self.pipe.full() and not checkpoint_due and self.stream.ready(nxt):
                if self.rate:
                    wait = t0 + (nxt - sent0) / self.rate - time.monotonic()
                    if wait > 0:
                        if len(self.pipe):
                            break  # collect replies meanwhile
                        time.sleep(wait)
                self._send(nxt)
                nxt += 1
                checkpoint_due = nxt - self.last_checkpoint >= self.checkpoint_every
            if len(self.pipe):
                self._record(self._poll(), nxt)
            elif checkpoint_due and not self.stop:
                self._checkpoint(len(self.records))
            elif self.stop or self.stream.ended(nxt):
                break
            else:
                self.stream.wait(nxt)  # a live stream: the next window has not filled yet
            if dashboard is not None:
                dashboard.link = dict(self.pipe.stats(), reconnects=self.reconnects)
        n = len(self.records)
        if self.stream.error is not None:
            return f"error: {self.stream.error}"
        complete = self.stream.ended(n)
        if complete and self.last_checkpoint != n:
            self._checkpoint(n)
        return None if complete else "interrupted"

    def finish(self, stopped=None):
        """Write the summary line (with the board's own counters when it still answers) and the plot."""
        from mcu_train.stream.plots import plot_run
        summary = summarise(self.run, self.records, stopped)
        summary["link"] = dict(self.pipe.stats(), reconnects=self.reconnects)
        if stopped is None or stopped == "interrupted":
            try:
                summary["board_stats"] = asdict(self._request(self.trainer.stats))
            except McuTrainError:
                pass
        self.log.write(summary)
        self.log.close()
        plot = plot_run(self.run, self.records, self.log_path.with_suffix(".png"))
        return summary, plot


def run_monitor(link, url, meta, compiled, stream, cfg, log_path, resume=False, console=None, live=True,
                checkpoint_every=CHECKPOINT_EVERY, rate=None, notes=(), title="mcu-train monitor",
                in_flight=REPLAY_DEPTH):
    """Stream, display, log, plot. Returns (summary, plot path). Ctrl-C stops cleanly (the summary says
    "interrupted"); a lost board raises McuTrainError after the summary and the plot are written."""
    from rich.console import Console
    from rich.live import Live
    console = console or Console()
    mon = Monitor(link, url, meta, compiled, stream, cfg, log_path, checkpoint_every, window=in_flight, rate=rate,
                  console=console, notes=notes)
    if resume:
        done = mon.resume()
        console.print(f"resuming {log_path}: {len(mon.records)} windows logged; board restored from the checkpoint "
                      f"after window {done} and {len(mon.records) - done} windows replayed")
    else:
        mon.start()
    dash = Dashboard(mon.run, title, notes)
    dash.records = mon.records
    dash.session_start = len(mon.records)
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        mon.stop = True
        dash.status = "stopping: waiting for the replies in flight (Ctrl-C again to abort)"
        signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)
    error = None
    try:
        display = Live(dash, console=console, refresh_per_second=4) if live else contextlib.nullcontext()
        with display:
            try:
                stopped = mon.stream_windows(dash)
            except BoardGone as e:
                error, stopped = e, f"board lost: {e}"
            except McuTrainError as e:  # a timeout, a restarted board, a protocol error
                error, stopped = e, f"error: {e}"
            dash.status = "done" if stopped is None else stopped
        if live:
            console.print()
    finally:
        signal.signal(signal.SIGINT, previous)
    summary, plot = mon.finish(stopped)
    if stream.error is not None:
        raise DataError(f"{stream.error} (the stream stopped there: the log {log_path} holds the "
                        f"{len(mon.records)} windows before it)")
    if error is not None:
        complete = f"{error}\n  the log {log_path} is complete up to window {len(mon.records) - 1} " \
                   f"({len(mon.records)} windows)"
        if stream.live:  # a live stream cannot be replayed
            raise McuTrainError(f"{complete}.") from error
        raise McuTrainError(f"{complete}; the last checkpoint was taken after {mon.last_checkpoint} windows. Start "
                            "the board again and rerun with --resume to continue.") from error
    return summary, plot, mon


# ------------------------------------------------------------------------------------------------ listen

REPORT_HEAD = struct.Struct("<IB")  # the board's window number, truth (255: unknown); then a TRAIN reply


def pack_report(board_window, truth, step: TrainStep):
    return REPORT_HEAD.pack(board_window, 255 if truth is None else truth) + step.pack()


def unpack_report(payload):
    """(board's window number, truth or None, TrainStep) of a REPORT frame (docs/protocol.md)."""
    board_window, truth = REPORT_HEAD.unpack_from(payload)
    return board_window, None if truth == 255 else truth, TrainStep.unpack(payload[REPORT_HEAD.size:])


def listen(link, log_path, meta=None, console=None, live=True, limit=None):
    """`--listen`: log and display the REPORT frames of a board that trains on its own sensor."""
    from rich.console import Console
    from rich.live import Live

    from mcu_train.link.protocol import REPLY, Hello, encode_frame
    console = console or Console()
    link.write(encode_frame(Msg.HELLO, 0))
    link.next_seq = 1
    reports, hello = [], None
    deadline = time.monotonic() + 5.0
    while hello is None:
        frame = link.read_frame(deadline)
        if frame is None:
            raise McuTrainError("no HELLO from the board within 5 s")
        if frame.type == Msg.HELLO | REPLY and frame.seq == 0:
            hello = Hello.unpack(frame.payload)
        elif frame.type == Msg.REPORT | REPLY:
            reports.append(frame)
    link.hello = hello
    if meta is not None:
        check_model_hash(link, meta)
    num_exits = len(meta["exits"]) if meta else 4
    run = {"type": "run", "version": LOG_VERSION, "command": "listen",
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "board": hello.board, "emulated": hello.emulated, "firmware": hello.firmware_version,
           "model_hash": hello.model_hash, "counter_unit": hello.counter_unit, "dataset": None, "person": None,
           "label_ratio": None, "seed": None, "shift": None, "windows": limit or 0,
           "thresholds": [None] * num_exits, "classes": list(meta["classes"]) if meta else list(data.CLASS_NAMES),
           "exit_names": [e["name"] for e in meta["exits"]] if meta else None,
           "input_offset": _metadata_number(meta, "input_offset", 0.0) if meta else None,
           "input_scale": _metadata_number(meta, "input_scale", 1.0) if meta else None, "resumes": []}
    log = RunLog(log_path, [run])
    records = []
    dash = Dashboard(run, f"mcu-train monitor --listen: {hello.board}", ["the board reads its own sensor"])
    dash.records = records

    def take(frame):
        board_window, truth, step = unpack_report(frame.payload)
        rec = {"type": "window", "seq": len(records), "board_window": board_window, "truth": truth,
               "prediction": step.prediction, "exit": step.exit, "confidence": step.confidence_q16 / 65536,
               "labelled": bool(step.flags & 1), "training": OUTCOME_KIND[step.outcome_name],
               "outcome": step.outcome_name, "target": None if step.target == 0xFF else step.target,
               "loss": step.loss, "cost": step.cost_inference + step.cost_training,
               "cost_inference": step.cost_inference, "cost_training": step.cost_training,
               "personalised_head": bool(step.flags & STEP_PERSONALISED), "generic_prediction": None,
               "generic_exit": None, "time": round(time.time(), 3)}
        log.write(rec)
        records.append(rec)

    stopped = None
    previous = signal.getsignal(signal.SIGINT)
    try:
        display = Live(dash, console=console, refresh_per_second=4) if live else contextlib.nullcontext()
        with display:
            for frame in reports:
                take(frame)
            while limit is None or len(records) < limit:
                try:
                    frame = link.read_frame(time.monotonic() + 0.25)
                except BoardGone:
                    stopped = "the board closed the connection"
                    break
                if frame is not None and frame.type == Msg.REPORT | REPLY:
                    take(frame)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        signal.signal(signal.SIGINT, previous)
    run["windows"] = max(run["windows"], len(records))
    summary = summarise(run, records, stopped)
    log.write(summary)
    log.close()
    from mcu_train.stream.plots import plot_run
    plot = plot_run(run, records, Path(log_path).with_suffix(".png"))
    return summary, plot


# ------------------------------------------------------------------------------------------------ command

def _print_end(console, summary, log_path, plot):
    console.print(summary_table(summary))
    console.print(f"log:  {log_path}")
    console.print(f"plot: {plot}")


def serial_line(port=None, board=None):
    """(port, baud rate, reply timeout or None) for `monitor`: the port given, or a real board's USB serial port
    found by its VID/PID, with the board's baud rate and timeouts that follow from its link's speed."""
    from mcu_train.boards.ports import find_port, link_timeout
    if board is None or board.emulated:
        if not port:
            how = (f"{board.name} is emulated: start it with `mcu-train flash --board {board.name} FIRMWARE "
                   "--detach` and pass the socket:// URL it prints" if board else "name the board (--board)")
            raise McuTrainError(f"no serial port given (--port): {how}")
        return port, 115200, None
    return port or find_port(board), board.baud, link_timeout(board)


def monitor(*, port=None, board=None, model=None, calib=None, source=None, person=None, labels=0.1, shift="none",
            label_policy="random", seed=0, log="runs/monitor.jsonl", resume=False, listen_only=False, windows=None, lr=None,
            pseudo_threshold=None, filter_mode=None, keep=None,
            checkpoint_every=CHECKPOINT_EVERY, rate=None, in_flight=REPLAY_DEPTH, resample=False, quiet=False):
    """`mcu-train monitor`: stream windows to the board at serial URL `port` (running the compiled model in
    `model`): a HAPT person's (default 27), or with `source` a user's recordings (a CSV, Edge Impulse JSON or
    NPZ file or folder; "-": CSV rows from standard input, live). Show it live, log every window to `log`
    (JSONL) and plot it; with `listen_only`, log what a board reading its own sensor reports. Returns the
    run's summary. A real `board` (a Board) without `port`: its USB serial port is found, its baud rate and
    timeouts used."""
    from rich.console import Console

    from mcu_train.link import Link
    port, baudrate, timeout = serial_line(port, board)
    console = Console()
    log_path = Path(log)
    if listen_only:
        meta = None
        if model:  # only then is the board's model checked
            from mcu_train.link.model_client import load_model_meta
            meta = load_model_meta(model)
        link = Link.open(port, baudrate)
        try:
            summary, plot = listen(link, log_path, meta, console, live=not quiet, limit=windows)
        finally:
            link.close()
        _print_end(console, summary, log_path, plot)
        return summary
    if source is not None and (person is not None or shift != "none"):
        raise McuTrainError("--person and --shift choose and turn a HAPT person's windows: not with --data")
    if resume and source is not None and str(source) == data.source.STDIN:
        raise McuTrainError(LIVE_RESUME)
    meta, compiled = load_model(model or DEFAULT_MODEL_DIR, calib)
    if source is None:
        person = 27 if person is None else person
        stream = person_stream(meta, person, labels, shift, seed, windows)
        what = f"person {person}"
    else:
        stream = data_stream(meta, source, labels, seed, windows, resample)
        what = str(source) if str(source) != data.source.STDIN else "stdin"
    if label_policy not in LABEL_POLICIES:
        raise McuTrainError(f"--label-policy {label_policy!r}: one of {', '.join(LABEL_POLICIES)}")
    if label_policy == "active" and not meta["train"].get("replay_slots"):
        raise McuTrainError(f"--label-policy active: the board in {model or DEFAULT_MODEL_DIR} was compiled without a "
                            "replay memory (the default: compile with --replay-bytes 37888), so it cannot ask for labels")
    stream.label_policy = label_policy
    cfg = stream_config(len(meta["exits"]), lr, pseudo_threshold, filter_mode, keep,
                        label_budget=labels if label_policy == "active" else None)
    if resume:
        check_resumable(log_path, meta, stream, cfg)
    link = Link.open(port, baudrate, timeout=timeout or 2.0)
    try:
        link.handshake()
        check_model_hash(link, meta)
        notes = [SHIFT_NOTE.format(angle=stream.rotation_degrees())] if stream.rotation is not None else []
        summary, plot, _ = run_monitor(link, port, meta, compiled, stream, cfg, log_path, resume=resume,
                                       console=console, live=not quiet, checkpoint_every=checkpoint_every,
                                       rate=rate, notes=notes + stream.notes, in_flight=in_flight,
                                       title=f"{what} on {link.hello.board}")
    finally:
        link.close()
    _print_end(console, summary, log_path, plot)
    if summary["stopped"] == "interrupted":
        console.print(f"stopped after {summary['windows']} windows" +
                      ("" if stream.live else ": rerun with --resume to continue"))
        raise KeyboardInterrupt
    return summary


def data_stream(meta, source, labels=0.1, seed=0, limit=None, resample=False):
    """The Stream of a user's recordings (path) or of standard input ("-") for the model in `meta`. A live
    stream's first window is waited for here, so a bad header, rate or first rows are refused before
    anything is written."""
    spec = data.WindowSpec.from_model(meta)
    stream = source_stream(meta, data.open_source(source, spec.channels, spec.num_channels), labels, seed, limit,
                           resample)
    while stream.live and not stream.ready(0) and not stream.ended(0):
        stream.wait(0, timeout=0.5)
    if stream.error is not None:
        raise stream.error
    return stream
