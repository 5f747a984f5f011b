"""`mcu-train pretrain --data SOURCE`: the early-exit CNN trained with the HAPT recipe on a user's labelled
recordings (docs/data.md): classes from the data (or --classes), windows cut as a model would cut them, a
validation split, and the same outputs as the HAPT pretraining (ONNX with its metadata, calibration set,
report).

Validation: the windows of --validation SOURCE; else, in each recording, the last fifth (rounded down) of
each class's windows in time order, and the training windows that share samples with one of them are left
out, so no reading is both trained and validated on."""
import time
from dataclasses import asdict

import numpy as np
from rich.table import Table

from mcu_train.data import ClassMap, WindowSet, WindowSpec, classes_in
from mcu_train.data.recording import Recording
from mcu_train.data.source import STDIN, FileSource
from mcu_train.errors import DataError
from mcu_train.learn.model import exit_costs
from mcu_train.learn.onnx_export import LAYOUTS, ModelInfo, build_onnx
from mcu_train.learn.pretrain import Recipe, calibration_set, evaluate, train, write_outputs

VALIDATION_SHARE = 5  # the last 1/5 of each class's windows in each recording


def usable(w: WindowSet) -> WindowSet:
    """The windows training can use: labelled, every reading a number."""
    return w.select((w.y >= 0) & np.isfinite(w.x).all(axis=(1, 2)))


def validation_split(w: WindowSet, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) masks: the module's default split."""
    val = np.zeros(len(w), bool)
    for r, c in set(zip(w.recording.tolist(), w.y.tolist())):
        members = np.flatnonzero((w.recording == r) & (w.y == c))
        val[members[len(members) - len(members) // VALIDATION_SHARE:]] = True
    overlaps = np.zeros(len(w), bool)
    for r in np.unique(w.recording):
        starts = np.sort(w.start[(w.recording == r) & val])
        if len(starts):
            here = np.flatnonzero(w.recording == r)
            at = np.searchsorted(starts, w.start[here])
            nearest = np.minimum(np.abs(w.start[here] - starts[np.clip(at - 1, 0, len(starts) - 1)]),
                                 np.abs(w.start[here] - starts[np.clip(at, 0, len(starts) - 1)]))
            overlaps[here] = nearest < window
    return val, ~val & ~overlaps


class DataPretraining:
    """Reads and checks the data when made (a bad file is refused before training starts); run() trains,
    writes and returns the report."""

    def __init__(self, source, output, *, classes=None, validation=None, window=128, hop=None, sample_rate=None,
                 resample=False, seed=0, recipe=Recipe()):
        if str(source) == STDIN or str(validation) == STDIN:
            raise DataError("pretrain reads recordings, not a live stream (-): save the rows to a .csv first")
        self.source, self.output, self.seed, self.recipe = source, output, seed, recipe
        recordings = FileSource(source)  # the first file names the channels
        first = recordings.recordings[0]
        rate = sample_rate or (first.sample_rate() if isinstance(first, Recording) else first.rate_hz)
        if rate is None:
            raise DataError(f"{first.name} says nothing about its sample rate (no time column): pass --sample-rate")
        hop = hop or window // 2
        if window < 1 or hop < 1:
            raise DataError(f"--window {window}, --hop {hop}: both must be at least 1 sample")
        self.spec = WindowSpec(len(recordings.channels), window, hop, float(f"{rate:.4g}"), recordings.channels)
        self.classes = tuple(c.strip() for c in classes) if classes else classes_in(recordings.label_texts())
        if len(self.classes) < 2:
            raise DataError(f"{source}: its labels name {len(self.classes)} class(es) "
                            f"({', '.join(self.classes) or 'none'}); training needs two or more (a label column, "
                            "Edge Impulse file names or label fields, or y in an .npz)")
        class_map = ClassMap(self.classes)
        windows = usable(recordings.windows(self.spec, class_map, resample))
        self.data, self.notes = recordings, recordings.notes
        if validation is not None:
            held_out = FileSource(validation, self.spec.channels, self.spec.num_channels)
            self.train_set = windows
            self.validation_set = usable(held_out.windows(self.spec, class_map, resample))
            self.validation_names, self.validation_what = held_out.record()["files"], held_out.record()
        else:
            val, keep = validation_split(windows, window)
            self.train_set, self.validation_set = windows.select(keep), windows.select(val)
            self.validation_names = recordings.record()["files"]
            self.validation_what = (f"the last 1/{VALIDATION_SHARE} of each class's windows in each recording; "
                                    "training windows overlapping them left out")
        if not len(self.validation_set):
            raise DataError(f"{validation or source}: no labelled validation window (each class needs "
                            f"{VALIDATION_SHARE} windows in a recording): record more, or pass --validation")
        self.resample = resample

    def describe(self) -> str:
        counts = np.bincount(self.train_set.y, minlength=len(self.classes))
        return (f"{len(self.train_set)} training windows ({', '.join(f'{c} {n}' for c, n in zip(self.classes, counts))}"
                f"), {len(self.validation_set)} validation windows; {self.spec.num_channels} channels "
                f"({', '.join(self.spec.channels)}) at {self.spec.sample_rate_hz:g} Hz, window {self.spec.window}, "
                f"hop {self.spec.hop}")

    def run(self, on_step=None) -> dict:
        start = time.monotonic()
        model = train(self.train_set, self.recipe, self.seed, on_step, num_classes=len(self.classes))
        train_seconds = time.monotonic() - start
        spec = self.spec
        info = ModelInfo(exits=tuple(model.exit_names), layout=LAYOUTS[model.spec.dims],
                         sample_rate_hz=spec.sample_rate_hz, window=spec.window, classes=self.classes,
                         input_offset=(0.0,), input_scale=(1.0,), channels=spec.channels, hop=spec.hop)
        onnx_bytes = build_onnx(model, info).SerializeToString()
        report = {
            "command": f"mcu-train pretrain --data {self.source} --classes {','.join(self.classes)} -o {self.output} "
                       f"--seed {self.seed} --epochs {self.recipe.epochs}",
            "seed": self.seed,
            "recipe": asdict(self.recipe),
            "train_seconds": round(train_seconds, 1),
            "exits": [asdict(c) for c in exit_costs(model)],
            "data": self.data.record(),
            "classes": list(self.classes),
            "windowing": {"sample_rate_hz": spec.sample_rate_hz, "window": spec.window, "hop": spec.hop,
                          "channels": list(spec.channels), "resample": self.resample},
            "validation": self.validation_what,
            "windows": {"train": len(self.train_set), "validation": len(self.validation_set)},
            "accuracy_pct": evaluate(onnx_bytes, model.exit_names, {"validation": self.validation_set},
                                     group="recording", names=self.validation_names),
        }
        calib = calibration_set(self.train_set, self.recipe.calib_per_class, self.seed, len(self.classes),
                                group="recording")
        write_outputs(self.output, onnx_bytes, calib, report)
        return report


def print_data_report(report: dict, console) -> None:
    validation = report["accuracy_pct"]["validation"]
    table = Table(title=f"Accuracy per exit on the validation windows (%, {validation['windows']} windows)")
    for column in ("exit", "MACs", "params", "accuracy"):
        table.add_column(column, justify="right" if column != "exit" else "left")
    for e in report["exits"]:
        table.add_row(e["name"], f"{e['macs']:,}", f"{e['params']:,}", f"{validation[e['name']]:.2f}")
    console.print(table)
    exits = [e["name"] for e in report["exits"]]
    per = Table(title="Per recording (%)")
    for column in ("recording", "windows", *exits):
        per.add_column(column, justify="right")
    for name, row in validation["per_recording"].items():
        per.add_row(name, str(row["windows"]), *(f"{row[e]:.2f}" for e in exits))
    console.print(per)
