"""`mcu-train pretrain`: train the early-exit CNN on HAPT people 1-20, report accuracy per exit, export ONNX.
(`--data`: on a user's recordings instead, with the same recipe: mcu_train/learn/pretrain_data.py.)

Writes three files (each atomically, all computed before any is written):
  <output>              the generic model, e.g. models/har.onnx (batch norm folded), see onnx_export.py
  <stem>_calib.npz      calibration windows for the int8 compiler: x (N, 3, 128) float32 in model-input units,
                        y (class index in logit order), person
  <stem>_report.json    accuracy per exit and per person, MACs and parameters per exit, recipe, timing
"""
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import Context
from tinygrad.nn.optim import Adam

from codegen.files import write_atomically
from mcu_train import data
from mcu_train.errors import DatasetError, McuTrainError
from mcu_train.learn.model import EarlyExitCNN, ModelSpec, exit_costs
from mcu_train.learn.onnx_export import LAYOUTS, ModelInfo, build_onnx


@dataclass(frozen=True)
class Recipe:
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3        # Adam, cosine decay over the epochs
    augment_rotation_deg: float = 15.0  # each training window turned by a random angle up to this; phones sit
                                        # a little differently on every belt (the placement shift is 30-60 degrees)
    calib_per_class: int = 50          # calibration windows per class, from pretraining people


def train(windows: data.Windows, recipe: Recipe = Recipe(), seed: int = 0, on_step=None,
          num_classes: int = len(data.CLASS_NAMES)) -> EarlyExitCNN:
    """Train backbone and all exits jointly (mean of the exits' cross-entropies). Seeded: same seed, same model.
    on_step(epoch, step, steps_per_epoch, loss) is called after every step. The input shape is the windows'
    (C, L); the rotation augmentation applies to three channels only (an accelerometer's axes)."""
    Tensor.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = EarlyExitCNN(ModelSpec(input_shape=tuple(windows.x.shape[1:]), num_classes=num_classes))
    rotate = recipe.augment_rotation_deg and windows.x.shape[1] == 3
    optimizer = Adam(model.state_tensors(), lr=recipe.learning_rate)  # running stats ride along to be realized

    @TinyJit
    def step(x, y):
        optimizer.zero_grad()
        outputs = model(x)
        loss = sum(out.sparse_categorical_crossentropy(y) for out in outputs) / len(outputs)
        loss.backward()
        return loss.realize(*optimizer.schedule_step())

    x_all, y_all = data.to_model_input(windows.x), windows.y.astype(np.int32)
    steps = len(y_all) // recipe.batch_size  # whole batches only: the JIT replays one shape
    if steps == 0:
        raise DatasetError(f"{len(y_all)} training windows: fewer than one batch of {recipe.batch_size}")
    for epoch in range(recipe.epochs):
        lr = recipe.learning_rate * 0.5 * (1 + np.cos(np.pi * epoch / recipe.epochs))
        optimizer.lr.assign(Tensor([lr], dtype=optimizer.lr.dtype)).realize()
        order = rng.permutation(len(y_all))
        for i in range(steps):
            batch = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = x_all[batch]
            if rotate:
                turns = data.random_rotations(rng, len(batch), 0.0, recipe.augment_rotation_deg)
                x = np.einsum("nij,njl->nil", turns, x)
            with Context(TRAINING=1):
                loss = step(Tensor(x.astype(np.float32)), Tensor(y_all[batch]))
            if on_step:
                on_step(epoch, i, steps, loss.item())
    return model


def calibration_set(windows: data.Windows, per_class: int, seed: int, num_classes: int = len(data.CLASS_NAMES),
                    group: str = "person") -> dict[str, np.ndarray]:
    """A seeded, class-balanced sample in time order (a class with fewer windows gives all it has): x in
    model-input units, y, and the person (HAPT) or recording each window comes from."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(windows.y == c) for c in range(num_classes)]
    picked = np.sort(np.concatenate([rng.choice(m, min(per_class, len(m)), replace=False) for m in members]))
    return {"x": data.to_model_input(windows.x[picked]), "y": windows.y[picked], group: getattr(windows, group)[picked]}


def accuracy(logits: list[np.ndarray], y: np.ndarray) -> list[float]:
    """Percent correct per exit."""
    return [round(100.0 * float(np.mean(out.argmax(1) == y)), 2) for out in logits]


def evaluate(onnx_bytes: bytes, exits: list[str], sets: dict[str, data.Windows], group: str = "person",
             names=None) -> dict:
    """Accuracy per exit of the exported model (run by onnxruntime) on each set, overall and per person (or
    per recording: `group`, with `names` for its numbers)."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    report = {}
    for name, w in sets.items():
        logits = session.run(exits, {"input": data.to_model_input(w.x)})
        per_group = {}
        for g in np.unique(getattr(w, group)):
            keep = getattr(w, group) == g
            per_group[str(g) if names is None else names[g]] = {
                "windows": int(keep.sum()), **dict(zip(exits, accuracy([out[keep] for out in logits], w.y[keep])))}
        report[name] = {"windows": len(w), **dict(zip(exits, accuracy(logits, w.y))), f"per_{group}": per_group}
    return report


def pretrain(output, seed: int = 0, recipe: Recipe = Recipe(), on_step=None) -> dict:
    """Train, export, evaluate; write the ONNX model, calibration set and report. Returns the report."""
    pretrain_set = data.split_windows("pretrain")
    sets = {"validation": data.split_windows("validation"),
            "personalise": data.split_windows("personalise"),
            "personalise_shifted": data.split_windows("personalise", shift=True, seed=seed)}

    start = time.monotonic()
    model = train(pretrain_set, recipe, seed, on_step)
    train_seconds = time.monotonic() - start

    info = ModelInfo(exits=tuple(model.exit_names), layout=LAYOUTS[model.spec.dims],
                     sample_rate_hz=float(data.SAMPLE_RATE_HZ), window=data.WINDOW, classes=data.CLASS_NAMES,
                     input_offset=(data.INPUT_OFFSET,), input_scale=(data.INPUT_SCALE,), channels=data.AXES,
                     hop=data.HOP)
    onnx_bytes = build_onnx(model, info).SerializeToString()
    report = {
        "command": f"mcu-train pretrain --dataset hapt -o {output} --seed {seed} --epochs {recipe.epochs}",
        "seed": seed,
        "recipe": asdict(recipe),
        "train_seconds": round(train_seconds, 1),
        "exits": [asdict(c) for c in exit_costs(model)],
        "windows": {"pretrain": len(pretrain_set)},
        "accuracy_pct": evaluate(onnx_bytes, model.exit_names, sets),
    }
    write_outputs(output, onnx_bytes, calibration_set(pretrain_set, recipe.calib_per_class, seed), report)
    return report


def write_outputs(output, onnx_bytes: bytes, calib: dict, report: dict) -> None:
    """The model, <stem>_calib.npz and <stem>_report.json, each atomically, all computed before any is written."""
    output = Path(output)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **calib)
    write_atomically(output.with_name(f"{output.stem}_calib.npz"), buffer.getvalue())
    write_atomically(output.with_name(f"{output.stem}_report.json"), (json.dumps(report, indent=1) + "\n").encode())
    write_atomically(output, onnx_bytes)


def print_report(report: dict, console) -> None:
    accuracy_pct = report["accuracy_pct"]
    exits = [e["name"] for e in report["exits"]]
    table = Table(title="Generic model: accuracy per exit (%)")
    table.add_column("exit")
    table.add_column("MACs", justify="right")
    table.add_column("params", justify="right")
    for name, label in (("validation", "validation 21-24"), ("personalise", "personalise 25-30"),
                        ("personalise_shifted", "25-30 rotated")):
        table.add_column(f"{label}\n({accuracy_pct[name]['windows']} windows)", justify="right")
    for e in report["exits"]:
        table.add_row(e["name"], f"{e['macs']:,}", f"{e['params']:,}",
                      *(f"{accuracy_pct[s][e['name']]:.2f}" for s in ("validation", "personalise",
                                                                       "personalise_shifted")))
    console.print(table)

    people = Table(title="Per person (%)")
    for column in ("person", "windows", *exits):
        people.add_column(column, justify="right")
    for s in ("validation", "personalise"):
        for person, row in accuracy_pct[s]["per_person"].items():
            people.add_row(person, str(row["windows"]), *(f"{row[e]:.2f}" for e in exits))
    console.print(people)


def pretrain_and_report(*, dataset="hapt", output=None, seed=0, epochs=None, source=None, **data_options) -> dict:
    """`mcu-train pretrain`: on HAPT (default output models/har.onnx), or with `source` on a user's labelled
    recordings (mcu_train.learn.pretrain_data; `data_options`: classes, validation, window, hop,
    sample_rate, resample). Shows progress, prints accuracy per exit."""
    if dataset != "hapt":
        raise DatasetError(f"unknown dataset {dataset!r}: only 'hapt'")
    recipe = Recipe() if epochs is None else Recipe(epochs=epochs)
    if recipe.epochs < 1:
        raise McuTrainError(f"--epochs {recipe.epochs}: at least 1")
    console = Console()
    if source is not None:
        from mcu_train.learn.pretrain_data import DataPretraining, print_data_report
        if output is None:
            raise McuTrainError("pretrain --data needs -o MODEL.onnx: where to write your model")
        prepared = DataPretraining(source, output, seed=seed, recipe=recipe, **data_options)  # reads and checks
        console.print(f"pretraining on {source}: {prepared.describe()}, seed {seed}, {recipe.epochs} epochs "
                      "(the first steps compile the train step: ~25 s)")
        report = _with_progress(console, recipe, prepared.run)
        print_data_report(report, console)
    else:
        output = output or "models/har.onnx"
        console.print(f"pretraining on HAPT people 1-20, seed {seed}, {recipe.epochs} epochs "
                      f"(the first steps compile the train step: ~25 s)")
        report = _with_progress(console, recipe, lambda on_step: pretrain(output, seed=seed, recipe=recipe,
                                                                          on_step=on_step))
        print_report(report, console)
    console.print(f"trained in {report['train_seconds']:.0f} s; wrote {output}, "
                  f"its _calib.npz and _report.json")
    return report


def _with_progress(console, recipe, run):
    """run(on_step) under a progress bar of the training steps."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=None, loss=float("nan"))

        def on_step(epoch, step, steps, loss):
            progress.update(task, total=steps * recipe.epochs, completed=epoch * steps + step + 1, loss=loss,
                            description=f"epoch {epoch + 1}/{recipe.epochs}")

        return run(on_step)
