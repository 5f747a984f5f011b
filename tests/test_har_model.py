"""The default HAR model (models/har.onnx) compiled for mps2-an386, on real HAPT windows of the validation
people: int8 accuracy within 1 point of float, agreement with onnxruntime, bit-exact C on host and QEMU."""
import time

import numpy as np
import pytest
from compiler_helpers import (assert_exits_agree, board_vs_reference, onnxruntime_exits, ort_session,
                              reference_exit_logits)
from repo import ROOT

from codegen.compile import compile_model
from mcu_train import data
from mcu_train.boards import get_board
from mcu_train.link.model_client import load_model_meta, to_wire

MODEL = ROOT / "models" / "har.onnx"
CALIB = ROOT / "models" / "har_calib.npz"
AN386 = get_board("mps2-an386")


@pytest.fixture(scope="module")
def har(tmp_path_factory):
    out = tmp_path_factory.mktemp("har") / "out"
    t0 = time.monotonic()
    compiled = compile_model(MODEL, AN386, out, calib=CALIB, quiet=True)
    return compiled, out, time.monotonic() - t0


@pytest.fixture(scope="module")
def validation():
    w = data.split_windows("validation")
    return data.to_model_input(w.x), w.y


def test_compiles_in_under_five_seconds(har):
    compiled, out, seconds = har
    assert seconds < 5.0
    assert len(load_model_meta(out)["exits"]) == 4


def test_int8_accuracy_within_one_point_of_float(har, validation):
    compiled, out, _ = har
    x, y = validation
    meta = load_model_meta(out)
    sess = ort_session(MODEL)
    names = [e["name"] for e in meta["exits"]]
    input_name = sess.get_inputs()[0].name
    runs = [sess.run(names, {input_name: xi[None]}) for xi in x]  # exported with batch size 1
    float_logits = [np.concatenate([r[k] for r in runs]) for k in range(len(names))]
    rows = to_wire(meta, x)
    for k, name in enumerate(names):
        ours = reference_exit_logits(compiled, meta, rows, k)
        acc_int8 = np.mean(np.argmax(ours, 1) == y) * 100
        acc_float = np.mean(np.argmax(float_logits[k], 1) == y) * 100
        print(f"{name}: float {acc_float:.2f}%, int8 {acc_int8:.2f}%")
        assert abs(acc_int8 - acc_float) <= 1.0, f"{name}: float {acc_float:.2f}%, int8 {acc_int8:.2f}%"
        if name == "final":
            assert acc_int8 >= 95.0


def test_agrees_with_onnxruntime_on_real_windows(har, validation):
    compiled, out, _ = har
    x = validation[0][::7][:200]
    meta = load_model_meta(out)
    assert_exits_agree(compiled, meta, x, onnxruntime_exits(out / "model_qdq.onnx", x))


def test_host_board_equals_reference_on_real_windows(har, validation):
    compiled, out, _ = har
    mismatches, total = board_vs_reference(compiled, out, get_board("host"), validation[0][::7][:200],
                                           thresholds=(0.9,))
    assert total == 200 * 5 and not mismatches, mismatches[:3]


@pytest.mark.qemu
@pytest.mark.slow
def test_mps2_an386_equals_reference_on_real_windows(har, validation):
    compiled, out, _ = har
    mismatches, total = board_vs_reference(compiled, out, AN386, validation[0][::7][:200], thresholds=(0.9,))
    assert total == 200 * 5 and not mismatches, mismatches[:3]
