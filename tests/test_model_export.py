"""Early-exit CNN builder, costs per exit, ONNX export / import, and agreement of three runtimes."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tinygrad import Tensor
from tinygrad.nn.onnx import OnnxRunner

from mcu_train import data
from mcu_train.learn.model import (BatchNormLayer, BlockSpec, EarlyExitCNN, ModelSpec, exit_costs, fold_batchnorm,
                                   predict)
from mcu_train.learn.onnx_export import (OnnxModelError, build_onnx, export_onnx, import_onnx, load_onnx, metadata,
                                         read_model_info)

MODEL = Path(__file__).resolve().parents[1] / "models" / "har.onnx"
ALLOWED_OPS = {"Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Add", "Flatten",
               "Reshape"}
TOLERANCE = 1e-4


def har_export(model, path):
    return export_onnx(model, path, classes=data.CLASS_NAMES, sample_rate_hz=data.SAMPLE_RATE_HZ,
                       window=data.WINDOW, input_offset=data.INPUT_OFFSET, input_scale=data.INPUT_SCALE,
                       channels=data.AXES)


def with_random_batchnorm(model, seed=1):
    """Give batch norm non-trivial statistics so folding it actually changes the weights."""
    rng = np.random.default_rng(seed)
    for layer in model.layers():
        if isinstance(layer, BatchNormLayer):
            n = layer.bn.running_mean.shape[0]
            layer.bn.running_mean = Tensor(rng.normal(size=n).astype(np.float32))
            layer.bn.running_var = Tensor(rng.uniform(0.5, 2.0, size=n).astype(np.float32))
            layer.bn.weight = Tensor(rng.uniform(0.5, 2.0, size=n).astype(np.float32))
            layer.bn.bias = Tensor(rng.normal(size=n).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def real_windows():
    return data.to_model_input(data.split_windows("validation").x[::15])  # 100 windows from people 21-24


def run_onnxruntime(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


def run_tinygrad_onnx(path, x, exits):
    outputs = OnnxRunner(str(path))({"input": Tensor(x)})
    return [outputs[name].numpy() for name in exits]


def assert_all_close(a, b):
    for one, other in zip(a, b, strict=True):
        np.testing.assert_allclose(one, other, atol=TOLERANCE, rtol=0)


def test_default_model_costs_match_the_baseline():
    costs = exit_costs(EarlyExitCNN())
    assert [c.name for c in costs] == ["exit0", "exit1", "exit2", "final"]
    assert [c.macs for c in costs] == [63_680, 260_480, 621_120, 949_184]
    assert [c.params for c in costs] == [998, 4_844, 17_426, 38_360]


def test_builder_rejects_exits_that_are_not_before_the_last_block():
    with pytest.raises(ValueError, match="exits_after"):
        EarlyExitCNN(ModelSpec(exits_after=(3,)))
    with pytest.raises(ValueError, match="odd"):
        EarlyExitCNN(ModelSpec(blocks=(BlockSpec(8, kernel=4), BlockSpec(8)), exits_after=(0,)))


def test_export_agrees_with_tinygrad_in_onnxruntime_and_tinygrads_runner(tmp_path, real_windows):
    Tensor.manual_seed(3)
    model = with_random_batchnorm(EarlyExitCNN())
    path = tmp_path / "m.onnx"
    info = har_export(model, path)
    expected = predict(model, real_windows)
    assert_all_close(run_onnxruntime(path, real_windows), expected)
    assert_all_close(run_tinygrad_onnx(path, real_windows, info.exits), expected)
    assert_all_close(predict(fold_batchnorm(model), real_windows), expected)


def test_graph_uses_standard_ops_and_names_exits_shallow_to_deep(tmp_path):
    path = tmp_path / "m.onnx"
    har_export(EarlyExitCNN(), path)
    proto = load_onnx(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.op_type for node in proto.graph.node} <= ALLOWED_OPS
    assert [o.name for o in proto.graph.output] == ["exit0", "exit1", "exit2", "final"]
    meta = metadata(proto)
    assert meta["mcu_train.exits"] == "exit0,exit1,exit2,final"
    assert meta["mcu_train.layout"] == "NCL"
    assert meta["mcu_train.sample_rate_hz"] == "50" and meta["mcu_train.window"] == "128"
    assert meta["mcu_train.classes"] == "WALKING,WALKING_UPSTAIRS,WALKING_DOWNSTAIRS,SITTING,STANDING,LAYING"
    assert meta["mcu_train.input_offset"] == "0" and meta["mcu_train.input_scale"] == "1"
    assert meta["mcu_train.exit_macs"] == "63680,260480,621120,949184"


def test_round_trip_export_import_export_is_identical(tmp_path, real_windows):
    Tensor.manual_seed(4)
    model = with_random_batchnorm(EarlyExitCNN())
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    info = har_export(model, first)
    imported, imported_info = import_onnx(first)
    assert imported_info == info == read_model_info(first)
    assert not imported.spec.batchnorm
    har_export(imported, second)
    assert first.read_bytes() == second.read_bytes()
    assert_all_close(predict(imported, real_windows), predict(model, real_windows))


def test_per_channel_scaling_is_written_comma_separated(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(EarlyExitCNN(ModelSpec(batchnorm=False)), path, classes=data.CLASS_NAMES, sample_rate_hz=50,
                window=128, input_offset=[0.8, 0.0, 0.1], input_scale=[2.0, 2.5, 3.0])
    assert metadata(load_onnx(path))["mcu_train.input_offset"] == "0.8,0,0.1"
    assert read_model_info(path).input_scale == (2.0, 2.5, 3.0)


def test_2d_model_with_average_pooling_and_plain_heads_exports(tmp_path):
    spec = ModelSpec(input_shape=(1, 16, 16), num_classes=4, exits_after=(0,), exit_channels=0,
                     blocks=(BlockSpec(8, kernel=3, pool_kind="avg"), BlockSpec(8, kernel=3)))
    Tensor.manual_seed(5)
    model = with_random_batchnorm(EarlyExitCNN(spec))
    path = tmp_path / "m2d.onnx"
    info = export_onnx(model, path, classes="abcd", sample_rate_hz=1, window=16)
    assert info.layout == "NCHW" and info.exits == ("exit0", "final")
    x = np.random.default_rng(0).normal(size=(8, 1, 16, 16)).astype(np.float32)
    expected = predict(model, x)
    assert_all_close(run_onnxruntime(path, x), expected)
    assert_all_close(run_tinygrad_onnx(path, x, info.exits), expected)
    assert "AveragePool" in {n.op_type for n in load_onnx(path).graph.node}


def test_unknown_layer_fails_with_its_name_and_writes_nothing(tmp_path):
    class Dropout:
        name = "block1.dropout"
        def __call__(self, x): return x
        def tensors(self): return {}
        def shape_and_macs(self, shape): return shape, 0

    model = EarlyExitCNN()
    model.blocks[1].insert(2, Dropout())
    path = tmp_path / "m.onnx"
    with pytest.raises(OnnxModelError, match="block1.dropout"):
        har_export(model, path)
    assert list(tmp_path.iterdir()) == []


def test_bad_model_files_are_clear_errors(tmp_path):
    with pytest.raises(OnnxModelError, match="not found"):
        import_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        read_model_info(garbage)
    foreign = tmp_path / "foreign.onnx"
    proto = build_onnx(EarlyExitCNN(), read_model_info(MODEL))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(OnnxModelError, match="mcu_train.exits"):
        import_onnx(foreign)


def test_committed_model_agrees_across_runtimes_on_real_windows(real_windows):
    model, info = import_onnx(MODEL)
    onnx.checker.check_model(load_onnx(MODEL), full_check=True)
    assert info.exits == ("exit0", "exit1", "exit2", "final") and info.classes == data.CLASS_NAMES
    expected = predict(model, real_windows)
    assert_all_close(run_onnxruntime(MODEL, real_windows), expected)
    assert_all_close(run_tinygrad_onnx(MODEL, real_windows, info.exits), expected)
