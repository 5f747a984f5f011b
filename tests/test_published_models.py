"""The models people actually have (issue 10): the ops and patterns of published models, built here
(onnx.helper graphs, PyTorch with both exporters, onnxruntime's quantize_static in QDQ and QOperator formats,
the MLPerf Tiny reference models). Each compiles, the numpy reference equals the C on the host and on
mps2-an386 bit for bit (through `mcu-train infer`), agrees with onnxruntime on model_qdq.onnx within 1 LSB
and follows the original float model; what cannot compile is listed all at once."""
import json
import subprocess
import sys

import mlperf_tiny
import model_zoo
import numpy as np
import onnx
import pytest
from compiler_helpers import (board_vs_reference, compile_zoo, onnxruntime_exits, ort_session,
                              quantise_with_onnxruntime, quantised_model_exits, random_inputs)

from codegen.compile import build, compile_model
from codegen.errors import McuTrainError
from mcu_train.boards import get_board
from mcu_train.link.model_client import load_model_meta, to_wire

AN386 = get_board("mps2-an386")
HOST = get_board("host")
ZOO = ("softmax_autopad", "nhwc_input", "one_d_views", "fire_concat", "pooled_concat", "gates", "mlp_autoencoder",
       "conv_map")
ON_AN386 = ("gates", "fire_concat", "pooled_concat", "one_d_views", "mlp_autoencoder")  # a representative subset


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("published")
    return {name: compile_zoo(getattr(model_zoo, name)(), tmp, AN386, name) for name in ZOO}


def reference_outputs(compiled, meta, x):
    """int8 outputs of every exit from the numpy reference, one row per input."""
    rows = to_wire(meta, x)
    return [np.stack([compiled.reference.run(r.reshape(meta["input_dims_nhwc"]), force_exit=k)[1] for r in rows])
            for k in range(len(meta["exits"]))]


def onnx_order(meta, k, flat):
    """An exit's outputs (stored channels last) in the ONNX model's layout."""
    e = meta["exits"][k]
    if "transpose" not in e:
        return flat
    stored = [e["shape"][a] for a in np.argsort(e["transpose"])]
    return flat.reshape(len(flat), *stored[1:]).transpose(e["transpose"])


def assert_follows_float_model(model_path, meta, ours, x):
    """The int8 model's last exit against onnxruntime on the original float model: same top class for
    classifiers (a Softmax does not move it), a small error in LSB for values."""
    sess = ort_session(model_path)
    theirs = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: xi[None]})[0] for xi in x])
    e = meta["exits"][-1]
    ours_f = onnx_order(meta, len(meta["exits"]) - 1, (ours[-1].astype(np.float32) - e["zero_point"]) * e["scale"])
    if meta["output_kind"] == "values":
        err = np.abs(ours_f.reshape(theirs.shape) - theirs) / e["scale"]
        assert err.mean() < 1.5, f"mean error {err.mean():.2f} LSB"
    else:
        assert np.mean(np.argmax(ours_f, 1) == np.argmax(theirs.reshape(len(x), -1), 1)) >= 0.95


@pytest.mark.parametrize("name", ZOO)
def test_reference_matches_onnxruntime_and_the_float_model(zoo, name, tmp_path):
    compiled, out = zoo[name]
    meta = load_model_meta(out)
    x = random_inputs(meta, 100)
    ours = reference_outputs(compiled, meta, x)
    for k, theirs in enumerate(onnxruntime_exits(out / "model_qdq.onnx", x)):
        diff = np.abs(onnx_order(meta, k, ours[k]).astype(np.int32) - theirs.astype(np.int32))
        assert diff.max() <= 1, f"exit {k}: {np.mean(diff > 1):.4f} of outputs beyond 1 LSB"
    onnx.save(getattr(model_zoo, name)(), tmp_path / "float.onnx")
    assert_follows_float_model(tmp_path / "float.onnx", meta, ours, x)


def test_patterns_compile_to_the_planned_kernels(zoo):
    """The layout decisions are views and fusions, not copies: what each pattern lowers to."""
    kernels = {name: [s.kernel for s in zoo[name][0].steps] for name in ZOO}
    assert kernels["nhwc_input"] == ["conv", "conv", "avgpool", "dense"]  # transposes, bias Add, Mul/Add affine
    assert kernels["softmax_autopad"][-1] == "dense"  # the Softmax is absorbed
    assert kernels["one_d_views"] == ["conv", "conv_dilated", "lut", "avgpool", "dense"]  # Unsqueeze/Squeeze
    assert kernels["fire_concat"].count("pad") == 0 and "concat" in kernels["fire_concat"]  # a copy per pixel
    assert kernels["pooled_concat"] == ["conv", "avgpool", "conv", "avgpool", "dense"]  # Concat in place
    views = [s.view for s in zoo["pooled_concat"][0].steps if s.view]
    assert [v[1:] for v in views] == [(0, 16), (6, 16)]
    assert kernels["gates"].count("pad") == 1 and "mul" in kernels["gates"]  # the Pad avgpool cannot take
    meta = {name: load_model_meta(zoo[name][1]) for name in ZOO}
    assert meta["nhwc_input"]["input_transpose"] == [0, 1, 2, 3]  # the NHWC input is taken as it is
    assert meta["softmax_autopad"]["exits"][0]["softmax"] and not meta["nhwc_input"]["exits"][0]["softmax"]
    assert [meta[n]["output_kind"] for n in ("mlp_autoencoder", "conv_map", "gates")] == ["values", "values",
                                                                                          "logits"]
    assert meta["conv_map"]["exits"][0]["shape"] == [1, 3, 8, 8]


@pytest.mark.parametrize("name", ZOO)
def test_host_board_equals_reference(zoo, name):
    compiled, out = zoo[name]
    mismatches, total = board_vs_reference(compiled, out, HOST, random_inputs(load_model_meta(out), 20))
    assert total >= 20 and not mismatches, mismatches[:1]


def run_infer(out, board, x, tmp_path):
    np.savez(tmp_path / "in.npz", x=x)
    res = subprocess.run([sys.executable, "-m", "mcu_train.cli", "infer", str(out), "--board", board,
                          "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return dict(np.load(tmp_path / "out.npz"))


@pytest.mark.qemu
def test_mps2_an386_infer_equals_reference(zoo, tmp_path):
    """`mcu-train infer` on the Cortex-M4F (DSP kernels): bit-exact with the reference for a representative
    subset (tables, Mul, Concat, Resize, dilated conv, an autoencoder's values in the model's own shape) and
    MLPerf Tiny's DS-CNN."""
    ds_cnn, calib = mlperf_tiny.ds_cnn()
    cases = {name: zoo[name] for name in ON_AN386}
    cases["ds_cnn"] = compile_zoo(ds_cnn, tmp_path, AN386, "ds_cnn")
    for name, (compiled, out) in cases.items():
        meta = load_model_meta(out)
        x = random_inputs(meta, 8)
        assert int(np.prod(meta["input_dims_nhwc"])) <= 1022
        y = run_infer(out, "mps2-an386", x, tmp_path)
        ours = reference_outputs(compiled, meta, x)[-1]
        n = ours.shape[1]
        assert np.array_equal(y["logits_q"][:, :n], ours), name
        if meta["output_kind"] == "values":
            e = meta["exits"][0]
            want = onnx_order(meta, 0, (ours.astype(np.float32) - e["zero_point"]) * np.float32(e["scale"]))
            assert y["outputs"].shape == (len(x), *e["shape"][1:]) and np.allclose(y["outputs"], want), name


# --- quantised by onnxruntime: QOperator (QLinearConv, QGemm, QLinearAdd, QLinearConcat, ...) and QDQ ----------

@pytest.mark.parametrize("name,fmt,act", [("cnn2d_residual", "QOperator", "QUInt8"),
                                          ("fire_concat", "QOperator", "QInt8"), ("softmax_autopad", "QDQ", "QUInt8")])
def test_onnxruntime_quantised_models(tmp_path, name, fmt, act):
    path = quantise_with_onnxruntime(getattr(model_zoo, name)(), tmp_path, fmt, act, calib=32)
    if fmt == "QOperator":
        assert any(n.op_type.startswith("QLinear") for n in onnx.load(path).graph.node)
    compiled = compile_model(path, HOST, tmp_path / "out", quiet=True)  # no calibration needed
    meta = load_model_meta(tmp_path / "out")
    x = random_inputs(meta, 60)
    mismatches, _ = board_vs_reference(compiled, tmp_path / "out", HOST, x[:10])
    assert not mismatches
    ours = reference_outputs(compiled, meta, x)
    for k, theirs in enumerate(quantised_model_exits(path, meta, x)):
        if meta["exits"][k]["softmax"]:  # theirs are the probabilities, ours the logits before them
            assert np.mean(np.argmax(ours[k], 1) == np.argmax(theirs, 1)) >= 0.98
        else:
            assert np.mean(np.abs(ours[k].astype(np.int32) - theirs) <= 1) >= 0.999, f"exit {k}"


# --- PyTorch: the legacy exporter at opset 13 and 17 and the default (dynamo) exporter -----------------------------

def torch_modules():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    nn = torch.nn

    class Har1d(nn.Module):  # HAR-style 1-D CNN: AdaptiveAvgPool1d, HardSwish, SiLU, dilation, ceil_mode
        def __init__(self):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.BatchNorm1d(8), nn.Hardswish(),
                                    nn.MaxPool1d(3, 2, ceil_mode=True))
            self.c2 = nn.Sequential(nn.Conv1d(8, 16, 3, padding=2, dilation=2), nn.SiLU(), nn.LeakyReLU(0.1))
            self.pool = nn.AdaptiveAvgPool1d(1)
            self.fc = nn.Linear(16, 6)

        def forward(self, x):
            return torch.softmax(self.fc(self.pool(self.c2(self.c1(x))).flatten(1)), -1)

    class Fire2d(nn.Module):  # fire module, squeeze-excitation gate, nearest upsampling, global max
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6())
            self.sq, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 3, padding=1)
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(12, 12, 1), nn.Hardsigmoid())
            self.fc = nn.Linear(12, 4)

        def forward(self, x):
            q = torch.relu(self.sq(self.stem(x)))
            y = torch.cat([torch.relu(self.e1(q)), torch.relu(self.e3(q))], 1)
            y = nn.functional.interpolate(y * self.se(y), scale_factor=2, mode="nearest")
            return self.fc(torch.amax(y, dim=(2, 3)))

    return torch, [(Har1d, (1, 3, 32)), (Fire2d, (1, 3, 12, 12))]


def test_pytorch_exporters_compile_to_one_result(tmp_path):
    torch, modules = torch_modules()
    for module, shape in modules:
        torch.manual_seed(0)
        net = module().eval()
        for buf in net.buffers():  # non-trivial BatchNorm statistics
            if buf.dtype.is_floating_point:
                buf.data.uniform_(0.5, 1.5)
        calib = tmp_path / "calib.npz"
        np.savez(calib, x=np.random.default_rng(1).normal(0, 1, (32, *shape[1:])).astype(np.float32))
        results = {}
        for how in ("legacy-13", "legacy-17", "dynamo"):
            path = tmp_path / f"{module.__name__}-{how}.onnx"
            options = dict(dynamo=True) if how == "dynamo" else dict(dynamo=False, opset_version=int(how[-2:]))
            torch.onnx.export(net, (torch.randn(*shape),), path, input_names=["x"], output_names=["y"], **options)
            c = compile_model(path, HOST, tmp_path / how, calib=calib, quiet=True)
            results[how] = dict(kernels=[(s.kernel, s.in_dims, s.out_dims, s.macs) for s in c.steps],
                                filters=[s.arrays["filter"].tolist() for s in c.steps if "filter" in s.arrays],
                                arena=c.arena_bytes, weights=c.weights_bytes, macs=c.meta["macs_per_exit"])
        assert results["legacy-13"] == results["legacy-17"] == results["dynamo"], module.__name__
        meta = load_model_meta(tmp_path / "dynamo")
        x = random_inputs(meta, 50)
        assert_follows_float_model(tmp_path / f"{module.__name__}-dynamo.onnx", meta,
                                   reference_outputs(c, meta, x), x)
        mismatches, _ = board_vs_reference(c, tmp_path / "dynamo", HOST, x[:10])
        assert not mismatches


# --- MLPerf Tiny ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,macs,kind", [("resnet8", 12_501_632, "logits"), ("ds_cnn", 2_656_768, "logits"),
                                            ("mobilenet_v1_025", 7_489_664, "logits"),
                                            ("fc_autoencoder", 264_192, "values")])
def test_mlperf_tiny_models_compile_and_match_onnxruntime(tmp_path, name, macs, kind):
    model, calib = getattr(mlperf_tiny, name)()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=calib)
    compiled = compile_model(tmp_path / "m.onnx", AN386, tmp_path / "out", calib=tmp_path / "calib.npz", quiet=True)
    meta = load_model_meta(tmp_path / "out")
    assert meta["macs_per_exit"] == [macs] and meta["output_kind"] == kind
    assert meta["exits"][0]["softmax"] == (kind == "logits")
    x = calib[:4]
    ours = reference_outputs(compiled, meta, x)[0]
    theirs = onnxruntime_exits(tmp_path / "out" / "model_qdq.onnx", x)[0].reshape(len(x), -1)
    assert np.abs(ours.astype(np.int32) - theirs.astype(np.int32)).max() <= 1
    assert_follows_float_model(tmp_path / "m.onnx", meta, [ours], x)


# --- every problem at once; bad data refused; a folder used before -------------------------------------------------

def run_compile(*args):
    return subprocess.run([sys.executable, "-m", "mcu_train.cli", "compile", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_every_unsupported_node_is_reported_in_one_run(tmp_path):
    b = model_zoo.Builder(0)
    y = b.conv("x", 4, 8, 3, dims=2)
    y = b.node("Conv", [y, b.const(np.ones((8, 4, 3, 3), np.float32))], group=2, name="grouped")
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], dilations=[2, 2])
    y = b.node("Resize", [y, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="linear")
    y = b.node("Softmax", [y], axis=1)
    y = b.node("Cos", [y])
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    m = b.model([1, 4, 8, 8], [b.dense(y, 8, 3)])
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=model_zoo.calibration(m, 4))
    out = run_compile(tmp_path / "m.onnx", "--calib", tmp_path / "c.npz", "-o", tmp_path / "out")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert "5 nodes cannot be compiled" in lines[0], out.stderr
    for want in ["(Conv): attribute group=2 is not supported", "(MaxPool): attribute dilations=[2, 2]",
                 "(Resize): attribute mode=linear is not supported", "(Softmax): attribute axis=1",
                 "(Cos): op type Cos, which mcu-train cannot compile"]:
        assert sum(want in line for line in lines) == 1, (want, out.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad,message", [
    (np.array([[[np.nan] * 64] * 4] * 3, np.float32), "holds nan at index [0, 0, 0]"),
    (np.full((3, 4, 64), np.inf, np.float32), "holds inf at index [0, 0, 0]"),
    (np.zeros((3, 4, 64), np.float32), "is constant (every value is 0)"),
    (np.full((3, 4, 64), 2.5, np.float32), "is constant (every value is 2.5)"),
    (np.zeros((0, 4, 64), np.float32), "is empty"),
    (np.ones((3, 4, 64), np.complex64), "has dtype complex64"),
    (np.array([["a"] * 64] * 4), "has dtype <U1"),
])
def test_bad_calibration_data_is_refused(tmp_path, bad, message):
    onnx.save(model_zoo.cnn1d_plain(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=bad)
    with pytest.raises(McuTrainError) as e:
        compile_model(tmp_path / "m.onnx", HOST, tmp_path / "out", calib=tmp_path / "c.npz", quiet=True)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_data_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    onnx.save(model_zoo.cnn1d_plain(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(0, 1, (3, 4, 64)).astype(np.float32)
    x[1, 2, 7] = np.nan
    np.savez(tmp_path / "c.npz", x=x)
    out = run_compile(tmp_path / "m.onnx", "--calib", tmp_path / "c.npz", "-o", tmp_path / "out")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "index [1, 2, 7]" in out.stderr
    assert not (tmp_path / "out").exists()


def test_infer_refuses_non_finite_inputs(zoo, tmp_path):
    _, out = zoo["one_d_views"]
    x = random_inputs(load_model_meta(out), 3)
    x[2, 1, 5] = -np.inf
    np.savez(tmp_path / "in.npz", x=x)
    res = subprocess.run([sys.executable, "-m", "mcu_train.cli", "infer", str(out), "--board", "host",
                          "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "holds -inf at index [2, 1, 5]" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and not (tmp_path / "out.npz").exists()


def test_compiling_into_a_used_folder_leaves_exactly_the_new_files(tmp_path):
    """A --train compile then a plain one: model_train.c goes, and the folder builds; an error leaves the
    previous compile untouched."""
    from mcu_train.boards.build import build_firmware
    onnx.save(model_zoo.har_like(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=model_zoo.calibration(model_zoo.har_like()))
    out = tmp_path / "out"
    compile_model(tmp_path / "m.onnx", HOST, out, calib=tmp_path / "c.npz", quiet=True, train="exits")
    assert (out / "model_train.c").is_file()
    compile_model(tmp_path / "m.onnx", HOST, out, calib=tmp_path / "c.npz", quiet=True)
    assert sorted(p.name for p in out.iterdir()) == ["memory.json", "model.c", "model.h", "model.json",
                                                     "model_qdq.onnx", "plan.txt"]
    build_firmware(HOST, out, tmp_path / "fw")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 3, 128), np.float32))
    with pytest.raises(McuTrainError):
        compile_model(tmp_path / "m.onnx", HOST, out, calib=tmp_path / "bad.npz", quiet=True, train="exits")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_model_without_classes_compiles_without_a_confidence_policy(zoo):
    compiled, out = zoo["mlp_autoencoder"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["output_kind"] == "values" and len(meta["exits"]) == 1 and meta["exits"][0]["classes"] == 64
    assert "#define MODEL_HAS_CLASSES 0" in (out / "model.h").read_text()
    with pytest.raises(McuTrainError, match="has no classes"):
        build(out.parent / "mlp_autoencoder.onnx", HOST, calib=out.parent / "mlp_autoencoder_calib.npz", train="exits")


def test_a_softmax_in_the_middle_is_refused_with_what_to_do(tmp_path):
    b = model_zoo.Builder(0)
    y = b.node("Softmax", [b.dense("x", 16, 16)], axis=-1, name="middle")
    onnx.save(b.model([1, 16], [b.dense(y, 16, 4)]), tmp_path / "m.onnx")
    with pytest.raises(McuTrainError, match="only as the model's last op"):
        build(tmp_path / "m.onnx", HOST)
