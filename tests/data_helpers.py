"""Shared by the tests of user data: HAPT recordings written out as a user would have them (CSV, Edge Impulse
JSON), so every stream has a known answer (the HAPT windows), and the check that a monitor log of such a
stream is complete, in order, and equal to the numpy golden model's decisions."""
import json

import numpy as np

from codegen.train_reference import TrainerReference
from mcu_train import data
from mcu_train.stream.runlog import read_log, summarise

CSV_HEADER = "time,acc_x,acc_y,acc_z,label"


def label_names(labels):
    """HAPT labels -> class names; transitions and unlabelled samples have none ("")."""
    return ["" if not 1 <= v <= 6 else data.CLASS_NAMES[v - 1] for v in labels]


def csv_text(person, recording=0, rows=None, first_row=0):
    """A HAPT recording as CSV: time in seconds, the accelerometer in g, the class name (or nothing)."""
    acc, labels = data.load_recordings()[person][recording]
    end = len(labels) if rows is None else first_row + rows
    names = label_names(labels[first_row:end])
    lines = [CSV_HEADER] + [f"{i / 50:.2f},{a[0]!r},{a[1]!r},{a[2]!r},{n}"  # repr: the float64 exactly
                            for i, a, n in zip(range(first_row, end), acc[first_row:end].tolist(), names)]
    return "\n".join(lines) + "\n"


def write_csv(path, person, recording=0, rows=None):
    path.write_text(csv_text(person, recording, rows))
    return path


def write_edge_impulse(folder, person, recording=0, runs=None):
    """Each run of one activity of a HAPT recording as an Edge Impulse file named <CLASS>.p<person>r<rec>s<start>
    .json (the label from its name, as their uploader takes it). Returns the files in name order."""
    acc, labels = data.load_recordings()[person][recording]
    change = np.flatnonzero(np.diff(labels)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for begin, end in list(zip(np.r_[0, change], np.r_[change, len(labels)]))[:runs]:
        if 1 <= labels[begin] <= 6:
            doc = {"protected": {"ver": "v1", "alg": "none"}, "signature": "0" * 64,
                   "payload": {"device_type": "HAPT phone", "interval_ms": 20,
                               "sensors": [{"name": n, "units": "g"} for n in ("accX", "accY", "accZ")],
                               "values": acc[begin:end].tolist()}}
            path = folder / f"{data.CLASS_NAMES[labels[begin] - 1]}.p{person}r{recording}s{begin:06d}.json"
            path.write_text(json.dumps(doc))
            written.append(path)
    return sorted(written)


def reference_steps(compiled, stream, cfg):
    """The numpy golden model's TRAIN replies on the same stream (labels as sent, invalid windows flagged)."""
    ref = TrainerReference(compiled, cfg)
    return [ref.train(r, int(y) if m else None, bool(inv))
            for r, y, m, inv in zip(stream.rows, stream.truth, stream.labelled, stream.invalid)]


def check_data_log(path, compiled, stream, cfg, source_kind):
    """A --data run's log: the run record names the source (and its sha256 for files), every window once and
    in order, the summary recomputable, every decision equal to the reference's. Returns (run, windows)."""
    run, windows, summary, partial = read_log(path)
    assert not partial and run["type"] == "run" and "person" not in run and "dataset" not in run
    assert run["format"] == source_kind and (run["sha256"] is None) == (run["source"] == "-")
    assert run["windowing"]["window"] == 128 and run["windowing"]["hop"] == 64
    assert [w["seq"] for w in windows] == list(range(len(stream))) and summary["complete"]
    assert {k: summary[k] for k in summarise(run, windows, summary["stopped"])} == \
        summarise(run, windows, summary["stopped"])
    for w, s, truth, labelled in zip(windows, reference_steps(compiled, stream, cfg), stream.truth, stream.labelled):
        assert (w["prediction"], w["exit"], w["outcome"], w["loss"]) == (s.prediction, s.exit, s.outcome_name,
                                                                         s.loss), w["seq"]
        assert w["truth"] == (None if truth < 0 else truth) and w["labelled"] == labelled
    return run, windows
