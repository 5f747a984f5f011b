"""The monitor's JSONL log: one run record, one line per window, one summary line (docs/monitor.md).

Every line is flushed as soon as it is written, so after a crash the log holds every acknowledged window;
a trailing partial line (the host itself was killed mid-write) is dropped when the log is read back.
`summarise()` computes every figure of the summary line from the window lines alone, so anyone can check it."""
import json
import os
from pathlib import Path

import numpy as np

from codegen.files import write_atomically
from mcu_train.errors import McuTrainError

ROLLING = 50  # windows in the rolling accuracies (display and plot)
TRAINING_KINDS = ("trained", "filtered", "skipped")
# TRAIN outcome -> what happened to the window: trained on, dropped by the instance filter, or not trained on
# for another reason (no label or pseudo-label, saturated or invalid input, an update beyond the weights' bound).
OUTCOME_KIND = {"TRAINED": "trained", "FILTERED": "filtered", "NO_TARGET": "skipped", "SATURATED": "skipped",
                "INVALID": "skipped", "SKIPPED": "skipped", "NONFINITE": "skipped"}


class RunLog:
    """Append-only writer; each record is one JSON line, flushed at once."""

    def __init__(self, path, records=()):
        """Start the file at `path` with `records` (written atomically first), then append."""
        self.path = Path(path)
        text = "".join(json.dumps(r) + "\n" for r in records)
        write_atomically(self.path, text.encode())
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record):
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


def read_log(path):
    """(run record, window records, summary record or None, partial line dropped?) of a log. Window records
    must be numbered 0, 1, 2, ... in order."""
    path = Path(path)
    if not path.is_file():
        raise McuTrainError(f"no log at {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    partial = False
    if lines and lines[-1] == "":
        lines.pop()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                partial = True  # the writer was killed in the middle of this line
                break
            raise McuTrainError(f"{path} line {i + 1} is not JSON") from None
    if not records or records[0].get("type") != "run":
        raise McuTrainError(f"{path} does not start with a run record")
    run, windows, summary = records[0], [], None
    for r in records[1:]:
        if r.get("type") == "window":
            if summary is not None:
                raise McuTrainError(f"{path}: a window line after the summary")
            if r["seq"] != len(windows):
                raise McuTrainError(f"{path}: window {r['seq']} where window {len(windows)} was expected")
            windows.append(r)
        elif r.get("type") == "summary":
            summary = r
    return run, windows, summary, partial


def _accuracy(windows, key):
    """Share of the windows with a known truth (and a prediction under `key`) where they agree."""
    hits = [w[key] == w["truth"] for w in windows if w["truth"] is not None and w.get(key) is not None]
    return float(np.mean(hits)) if hits else None


def rolling_mean(values, n=ROLLING):
    """Mean of the last n values at each position (fewer at the start)."""
    values = np.asarray(values, np.float64)
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - n)
    return (c[i] - c[lo]) / (i - lo)


def session_rate(run, windows):
    """Windows per second while streaming: windows over time, per session (a resume starts a new one; the
    first window of each session has no interval before it)."""
    starts = {r["at"] for r in run.get("resumes", [])} | {0}
    count, seconds = 0, 0.0
    for i in range(1, len(windows)):
        if i not in starts:
            count += 1
            seconds += windows[i]["time"] - windows[i - 1]["time"]
    return count / seconds if seconds > 0 else None


def summarise(run, windows, stopped=None):
    """The summary line: every number from the window lines (and the run record's stream length; a live
    stream's is not known ahead (null): then the windows logged)."""
    n_total = run["windows"] if run["windows"] is not None else len(windows)
    half = n_total // 2
    first, second = windows[:half], windows[half:]
    num_exits = len(run["thresholds"])
    cost = np.array([w["cost"] for w in windows], np.float64)
    kinds = [w["training"] for w in windows]
    outcomes = {}
    for w in windows:
        outcomes[w["outcome"]] = outcomes.get(w["outcome"], 0) + 1
    rate = session_rate(run, windows)
    return {
        "type": "summary",
        "complete": len(windows) == n_total,
        "stopped": stopped,
        "windows": len(windows),
        "windows_total": n_total,
        "accuracy": _accuracy(windows, "prediction"),
        "generic_accuracy": _accuracy(windows, "generic_prediction"),
        "second_half": {"from": half, "windows": len(second), "accuracy": _accuracy(second, "prediction"),
                        "generic_accuracy": _accuracy(second, "generic_prediction")},
        "first_half": {"windows": len(first), "accuracy": _accuracy(first, "prediction"),
                       "generic_accuracy": _accuracy(first, "generic_prediction")},
        "exits": np.bincount([w["exit"] for w in windows], minlength=num_exits).tolist(),
        "generic_exits": np.bincount([w["generic_exit"] for w in windows if w["generic_exit"] is not None],
                                     minlength=num_exits).tolist(),
        "labelled": sum(w["labelled"] for w in windows),
        **{k: kinds.count(k) for k in TRAINING_KINDS},
        "outcomes": outcomes,
        "cost_mean": float(cost.mean()) if len(cost) else None,
        "cost_inference_mean": float(np.mean([w["cost_inference"] for w in windows])) if windows else None,
        "cost_training_mean": float(np.mean([w["cost_training"] for w in windows])) if windows else None,
        "counter_unit": run.get("counter_unit"),
        "windows_per_s": rate,
    }
