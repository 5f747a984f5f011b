"""The compiler on models written by the tests: C equals the numpy reference bit for bit, the reference
agrees with onnxruntime, and every kind of bad input is refused clearly with nothing written."""
import dataclasses
import json
import subprocess
import sys

import model_zoo
import numpy as np
import onnx
import pytest
from compiler_helpers import (assert_exits_agree, board_vs_reference, compile_zoo, onnxruntime_exits,
                              quantise_with_onnxruntime, quantised_model_exits, random_inputs)
from onnx import TensorProto, helper

from codegen.compile import RUNTIME_FLASH_BYTES
from codegen.ir import CompileError
from mcu_train.boards import get_board
from mcu_train.link.model_client import load_model_meta, to_wire

AN386 = get_board("mps2-an386")
HOST = get_board("host")
ZOO = {"har_like": model_zoo.har_like, "cnn2d_residual": model_zoo.cnn2d_residual,
       "cnn1d_plain": model_zoo.cnn1d_plain}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zoo")
    return {name: compile_zoo(make(), tmp, AN386, name) for name, make in ZOO.items()}


@pytest.mark.parametrize("name", ZOO)
def test_reference_agrees_with_onnxruntime(zoo, name):
    compiled, out = zoo[name]
    meta = load_model_meta(out)
    x = random_inputs(meta, 200)
    assert_exits_agree(compiled, meta, x, onnxruntime_exits(out / "model_qdq.onnx", x))


@pytest.mark.parametrize("name", ZOO)
def test_host_board_equals_reference(zoo, name):
    compiled, out = zoo[name]
    mismatches, total = board_vs_reference(compiled, out, HOST, random_inputs(load_model_meta(out), 200))
    assert total >= 400 and not mismatches, mismatches[:3]


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_mps2_an386_equals_reference(zoo, name):
    compiled, out = zoo[name]
    mismatches, total = board_vs_reference(compiled, out, AN386, random_inputs(load_model_meta(out), 200))
    assert total >= 400 and not mismatches, mismatches[:3]


@pytest.mark.qemu
@pytest.mark.slow
def test_packed_and_run_time_widened_convs_in_one_firmware(zoo, tmp_path):
    """On a board whose flash has no room to pack every conv's weights (codegen/compile.py _pack_conv_filters),
    the packed layers and the ones widened at run time run in one firmware, bit for bit as the reference."""
    full = zoo["har_like"][0]
    assert all("packed" in s.arrays for s in full.steps if s.kernel == "conv")
    small = dataclasses.replace(AN386, flash=dataclasses.replace(AN386.flash, size=RUNTIME_FLASH_BYTES +
                                                                 full.weights_bytes - 1))
    compiled, out = compile_zoo(model_zoo.har_like(), tmp_path, small, "har_like")
    packed = {"packed" in s.arrays for s in compiled.steps if s.kernel == "conv"}
    assert packed == {True, False}
    mismatches, total = board_vs_reference(compiled, out, AN386, random_inputs(load_model_meta(out), 100))
    assert total >= 200 and not mismatches, mismatches[:3]


def test_reports(zoo):
    compiled, out = zoo["har_like"]
    memory = json.loads((out / "memory.json").read_text())
    for key in ("arena_bytes", "weights_bytes", "macs_per_exit", "board_ram_bytes", "board_flash_bytes", "tensors"):
        assert key in memory
    assert memory["board_ram_bytes"] == AN386.ram.size and len(memory["macs_per_exit"]) == 3
    assert memory["macs_per_exit"] == sorted(memory["macs_per_exit"])
    for t in memory["tensors"]:
        assert {"name", "offset", "size", "first_use", "last_use"} <= set(t)
        assert t["offset"] + t["size"] <= memory["arena_bytes"]
    c = (out / "model.c").read_text()
    assert "static uint8_t arena[MODEL_ARENA_BYTES]" in c and "malloc" not in c
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "memory.json", "model.c", "model.h", "model.json", "model_qdq.onnx", "plan.txt"]


def test_quantize_static_model(tmp_path):
    """A QDQ model quantised by onnxruntime (the user's own quantisation) compiles without calibration data,
    runs bit-exactly against the reference, and agrees with onnxruntime on that QDQ model."""
    qdq_path = quantise_with_onnxruntime(model_zoo.har_like(seed=4), tmp_path)
    from codegen.compile import compile_model
    compiled = compile_model(qdq_path, HOST, tmp_path / "out", quiet=True)
    meta = load_model_meta(tmp_path / "out")
    x = random_inputs(meta, 200)
    mismatches, total = board_vs_reference(compiled, tmp_path / "out", HOST, x[:50])
    assert not mismatches
    # onnxruntime on the user's QDQ model: exits are float outputs there; compare after our dequantisation.
    assert_exits_agree(compiled, meta, x, quantised_model_exits(qdq_path, meta, x))


# --- bad inputs: a clear error, a non-zero exit code, nothing written ----------------------------------------

def run_compile(*args):
    return subprocess.run([sys.executable, "-m", "mcu_train.cli", "compile", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def save(model, path):
    onnx.save(model, path)
    return path


def test_unsupported_op_names_the_node(tmp_path):
    m = model_zoo.cnn1d_plain()
    m.graph.node.append(helper.make_node("Cos", [m.graph.output[0].name], ["cos"], name="the_cos"))
    m.graph.output[0].name = "cos"
    out = run_compile(save(m, tmp_path / "m.onnx"), "--calib", "x.npz", "-o", tmp_path / "out")
    assert out.returncode == 2
    assert "node 'the_cos' (Cos): op type Cos, which mcu-train cannot compile" in out.stderr
    assert "Supported op types: Conv" in out.stderr
    assert not (tmp_path / "out").exists()


def test_dynamic_shape_is_refused(tmp_path):
    m = model_zoo.cnn1d_plain()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "time"
    out = run_compile(save(m, tmp_path / "m.onnx"), "-o", tmp_path / "out")
    assert out.returncode == 2 and "dynamic dimension 'time' at axis 2" in out.stderr
    assert not (tmp_path / "out").exists()


def test_model_without_exits_is_refused(tmp_path):
    """Two outputs, neither (N, classes) logits: which is the exit cannot be guessed."""
    b = model_zoo.Builder(0)
    y = b.conv("x", 3, 4, 3)
    z = b.conv(y, 4, 4, 3)
    m = b.model([1, 3, 32], [])
    m.graph.output.extend([helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4, 32]) for t in (y, z)])
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).normal(0, 1, (4, 3, 32)).astype(np.float32))
    out = run_compile(save(m, tmp_path / "m.onnx"), "--calib", tmp_path / "c.npz", "-o", tmp_path / "out")
    assert out.returncode == 2 and "has no exits" in out.stderr
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_refused(tmp_path):
    data = model_zoo.cnn1d_plain().SerializeToString()
    (tmp_path / "m.onnx").write_bytes(data[: len(data) // 2])
    out = run_compile(tmp_path / "m.onnx", "-o", tmp_path / "out")
    assert out.returncode == 2 and "not a readable ONNX model" in out.stderr
    assert not (tmp_path / "out").exists()


def test_calibration_of_wrong_shape_is_refused(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 3, 64), np.float32))
    out = run_compile(save(model_zoo.cnn1d_plain(), tmp_path / "m.onnx"), "--calib", tmp_path / "c.npz",
                      "-o", tmp_path / "out")
    assert out.returncode == 2
    assert "has shape (10, 3, 64), but the model input needs (N, 4, 64)" in out.stderr
    assert not (tmp_path / "out").exists()


def test_model_too_large_for_board(tmp_path):
    b = model_zoo.Builder(0)
    y = b.conv("x", 3, 64, 3)  # 64 x 2048 activations: 128 KB of int8, twice the LM3S6965's RAM
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    m = b.model([1, 3, 2048], [b.dense(y, 64, 4)])
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).normal(0, 1, (4, 3, 2048)).astype(np.float32))
    out = run_compile(save(m, tmp_path / "m.onnx"), "--calib", tmp_path / "c.npz", "--board", "lm3s6965evb",
                      "-o", tmp_path / "out")
    assert out.returncode == 2
    assert "does not fit lm3s6965evb's RAM: it needs" in out.stderr and "65,536 B available" in out.stderr
    assert not (tmp_path / "out").exists()


def test_float_model_without_calibration_is_refused(tmp_path):
    with pytest.raises(CompileError, match="pass --calib"):
        from codegen.compile import build
        build(save(model_zoo.cnn1d_plain(), tmp_path / "m.onnx"), AN386)


def test_infer_cli_contract(zoo, tmp_path):
    """`mcu-train infer` on the host board: the documented npz keys, forced exits and thresholds."""
    compiled, out = zoo["har_like"]
    meta = load_model_meta(out)
    x = random_inputs(meta, 12)
    np.savez(tmp_path / "in.npz", x=x)
    rows = to_wire(meta, x)
    for extra, force, th in [(["--exit", "-1"], -1, None), (["--exit", "0"], 0, None),
                             (["--thresholds", "0.5,0.5,0.5"], None, [32768] * 3)]:
        res = subprocess.run([sys.executable, "-m", "mcu_train.cli", "infer", str(out), "--board", "host",
                              "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), *extra],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        y = np.load(tmp_path / "out.npz")
        assert sorted(y.keys()) == ["cost", "exit", "logits", "logits_q"]
        assert y["exit"].dtype.kind == "i" and y["logits_q"].dtype == np.int8 and y["logits"].dtype.kind == "f"
        assert len(y["exit"]) == 12 and np.all(y["cost"] > 0)
        for i, r in enumerate(rows):
            k, logits_q, _ = compiled.reference.run(r.reshape(meta["input_dims_nhwc"]), th, force)
            assert y["exit"][i] == k and np.array_equal(y["logits_q"][i], logits_q)
            e = meta["exits"][k]
            assert np.allclose(y["logits"][i], (logits_q.astype(np.float32) - e["zero_point"]) * e["scale"])


def test_infer_refuses_a_board_running_another_model(zoo):
    from mcu_train.boards.build import build_firmware
    from mcu_train.boards.runner import session
    from mcu_train.errors import McuTrainError
    from mcu_train.link.model_client import ModelClient
    _, out_a = zoo["har_like"]
    _, out_b = zoo["cnn1d_plain"]
    with session(HOST, build_firmware(HOST, out_a, out_a / "fw-hash").elf) as (running, link):
        with pytest.raises(McuTrainError, match="not the compiled model"):
            ModelClient(link, load_model_meta(out_b))


def test_infer_input_of_wrong_shape_is_clear(zoo, tmp_path):
    _, out = zoo["cnn1d_plain"]
    np.savez(tmp_path / "in.npz", x=np.zeros((3, 4, 65), np.float32))
    res = subprocess.run([sys.executable, "-m", "mcu_train.cli", "infer", str(out), "--board", "host",
                          "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "the model takes (N, 4, 64)" in res.stderr
    assert not (tmp_path / "out.npz").exists()
