"""Shared by the trainer tests: the default HAR model (models/har.onnx when it is there, else the zoo's
har_like stand-in calibrated on HAPT windows), real HAPT windows, and running a board and the reference
side by side."""
from pathlib import Path

import numpy as np
import onnx
from repo import ROOT

from codegen.compile import compile_model
from codegen.train_reference import TrainerReference, UnitParams
from codegen.trainer import CHECKPOINT_HEADER_BYTES
from mcu_train import data
from mcu_train.boards.build import build_firmware
from mcu_train.link.model_client import load_model_meta, to_wire

HAR = ROOT / "models" / "har.onnx"
HAR_CALIB = ROOT / "models" / "har_calib.npz"


def default_model(tmp):
    """(onnx path, calibration path) of the default HAR model."""
    if HAR.is_file() and HAR_CALIB.is_file():
        return HAR, HAR_CALIB
    import model_zoo
    path, calib = Path(tmp) / "har_like.onnx", Path(tmp) / "har_like_calib.npz"
    onnx.save(model_zoo.har_like(), path)
    np.savez(calib, x=data.split_windows("pretrain").x[::40])
    return path, calib


def compile_trainer(tmp, board, mode="exits", name=None, model=None, momentum=False, block_keep=None):
    """Compile (and build firmware for) the default model with a trainer: (compiled, out dir, elf)."""
    onnx_path, calib = model or default_model(tmp)
    out = Path(tmp) / (name or f"{mode}-{board.name}")
    compiled = compile_model(onnx_path, board, out, calib=calib, quiet=True, train=mode, momentum=momentum,
                             block_keep=block_keep)
    elf = build_firmware(board, out, out / "fw").elf
    return compiled, out, elf


def hapt_stream(meta, n, person=25, label_fraction=0.1, seed=0, shift=False):
    """n windows of one person in time order as int8 rows, their labels, and which labels the host sends."""
    w = data.person_windows(person, shift=shift, seed=seed)
    n = min(n, len(w))
    return to_wire(meta, w.x[:n]), w.y[:n], data.label_mask(n, label_fraction, seed=seed)


def reference(compiled, config=None):
    return TrainerReference(compiled, config)


def run_both(trainer, ref, rows, labels, mask):
    """Train the board and the reference on the same windows; returns both lists of TrainStep."""
    got, want = [], []
    for row, y, m in zip(rows, labels, mask):
        label = int(y) if m else None
        got.append(trainer.train(row, label))
        want.append(ref.train(row, label))
    return got, want


def first_mismatch(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g.decisions() != w.decisions():
            return i, g, w
    return None


def params_of(image, compiled):
    """Every unit's parameters in a checkpoint image (codegen.train_reference.UnitParams)."""
    out, pos = [], CHECKPOINT_HEADER_BYTES
    for unit in compiled.train.units:
        p = UnitParams(unit)
        p.load(image[pos:pos + unit.params_bytes])
        out.append(p)
        pos += unit.params_bytes
    return out


def real_weights(image, compiled):
    """Every trainable weight and bias of a checkpoint image in real units, as one vector."""
    return np.concatenate([np.concatenate([p.real(l)[0].reshape(-1), p.real(l)[1]])
                           for p in params_of(image, compiled) for l in p.unit.trainable])


def load_meta(out):
    return load_model_meta(out)
