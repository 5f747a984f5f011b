"""ONNX export of an EarlyExitCNN (tinygrad has no exporter), our metadata, and importing it back.

The graph uses standard ops only: Conv, Relu, MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm. Batch norm
is folded into the conv before export. One graph output per exit, ordered shallow to deep, the final classifier
last. metadata_props (keys below) say how to feed the model; docs/data.md explains them.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from codegen.files import write_atomically
from mcu_train import __version__
from mcu_train.errors import McuTrainError
from mcu_train.learn.model import (BatchNormLayer, Conv, Dense, EarlyExitCNN, GlobalAvgPool, ModelSpec, Pool, ReLU,
                                   exit_costs, fold_batchnorm, set_weights)

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17: readable by older runtimes too
INPUT_NAME = "input"
LAYOUTS = {1: "NCL", 2: "NCHW"}


class OnnxModelError(McuTrainError):
    """A model cannot be exported, or an ONNX file is missing, unreadable or not written by mcu-train."""


@dataclass(frozen=True)
class ModelInfo:
    """What metadata_props say about an exported model. Model input = (reading - input_offset) * input_scale."""
    exits: tuple[str, ...]          # output names, shallow to deep; the final classifier is the last
    layout: str                     # "NCL" (1-D) or "NCHW" (2-D)
    sample_rate_hz: float
    window: int                     # samples per window (L)
    classes: tuple[str, ...]        # in logit order
    input_offset: tuple[float, ...]  # one value for every channel, or one per channel
    input_scale: tuple[float, ...]
    channels: tuple[str, ...] = ()  # what each input channel holds, e.g. acc-x, acc-y, acc-z
    hop: int | None = None          # samples between the starts of two windows (None: not stated, half a window)

    def to_metadata(self) -> dict[str, str]:
        numbers = lambda values: ",".join(format(float(v), ".9g") for v in values)  # noqa: E731
        meta = {
            "mcu_train.exits": ",".join(self.exits),
            "mcu_train.layout": self.layout,
            "mcu_train.sample_rate_hz": format(float(self.sample_rate_hz), ".9g"),
            "mcu_train.window": str(int(self.window)),
            "mcu_train.classes": ",".join(self.classes),
            "mcu_train.input_offset": numbers(self.input_offset),
            "mcu_train.input_scale": numbers(self.input_scale),
        }
        if self.channels:
            meta["mcu_train.channels"] = ",".join(self.channels)
        if self.hop:
            meta["mcu_train.hop"] = str(int(self.hop))
        return meta

    @staticmethod
    def from_metadata(meta: dict[str, str]) -> "ModelInfo":
        numbers = lambda key: tuple(float(v) for v in meta[key].split(","))  # noqa: E731
        try:
            return ModelInfo(
                exits=tuple(meta["mcu_train.exits"].split(",")), layout=meta["mcu_train.layout"],
                sample_rate_hz=float(meta["mcu_train.sample_rate_hz"]), window=int(meta["mcu_train.window"]),
                classes=tuple(meta["mcu_train.classes"].split(",")),
                input_offset=numbers("mcu_train.input_offset"), input_scale=numbers("mcu_train.input_scale"),
                channels=tuple(meta["mcu_train.channels"].split(",")) if meta.get("mcu_train.channels") else (),
                hop=int(meta["mcu_train.hop"]) if meta.get("mcu_train.hop") else None)
        except KeyError as e:
            raise OnnxModelError(f"metadata key {e.args[0]} is missing: not a model exported by mcu-train") from None
        except ValueError as e:
            raise OnnxModelError(f"metadata value is malformed: {e}") from None


# ---------------------------------------------------------------- export

def _conv(layer, x, out):
    dims = layer.dims
    return [helper.make_node("Conv", [x, f"{layer.name}.weight", f"{layer.name}.bias"], [out], name=layer.name,
                             kernel_shape=[layer.kernel] * dims, pads=[layer.pad] * (2 * dims), strides=[1] * dims)]


def _relu(layer, x, out):
    return [helper.make_node("Relu", [x], [out], name=layer.name)]


def _pool(layer, x, out):
    op = "MaxPool" if layer.kind == "max" else "AveragePool"
    size = [layer.size] * layer.dims
    return [helper.make_node(op, [x], [out], name=layer.name, kernel_shape=size, strides=size)]


def _global_avg_pool(layer, x, out):
    pooled = f"{layer.name}.pooled"
    return [helper.make_node("GlobalAveragePool", [x], [pooled], name=layer.name),
            helper.make_node("Flatten", [pooled], [out], name=f"{layer.name}.flatten", axis=1)]


def _dense(layer, x, out):
    return [helper.make_node("Gemm", [x, f"{layer.name}.weight", f"{layer.name}.bias"], [out], name=layer.name,
                             transB=1)]


EMITTERS = {Conv: _conv, ReLU: _relu, Pool: _pool, GlobalAvgPool: _global_avg_pool, Dense: _dense}


def build_onnx(model: EarlyExitCNN, info: ModelInfo) -> onnx.ModelProto:
    """The ONNX graph of `model` (batch norm folded), with `info` and our own bookkeeping in metadata_props."""
    for layer in model.layers():
        if type(layer) not in EMITTERS and not isinstance(layer, BatchNormLayer):
            raise OnnxModelError(f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX export")
    if tuple(info.exits) != tuple(model.exit_names):
        raise OnnxModelError(f"info.exits {info.exits} do not match the model's exits {model.exit_names}")
    folded = fold_batchnorm(model) if model.spec.batchnorm else model

    nodes, initializers = [], []
    def emit(layer, x):
        nodes.extend(EMITTERS[type(layer)](layer, x, layer.name))
        for key, t in layer.tensors().items():
            initializers.append(numpy_helper.from_array(t.numpy().astype(np.float32), f"{layer.name}.{key}"))
        return layer.name

    exit_tensors = dict(zip(folded.walk(INPUT_NAME, emit), model.exit_names))
    for node in nodes:  # the last node of each head writes the exit's output by name
        node.output[:] = [exit_tensors.get(o, o) for o in node.output]

    num_classes = model.spec.num_classes
    graph = helper.make_graph(
        nodes, "early_exit_cnn",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *model.spec.input_shape])],
        outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", num_classes])
                 for name in model.exit_names],
        initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mcu-train",
                              producer_version=__version__, doc_string=_describe(info))
    proto.ir_version = IR_VERSION
    costs = exit_costs(model)
    helper.set_model_props(proto, {
        **info.to_metadata(),
        "mcu_train.exit_macs": ",".join(str(c.macs) for c in costs),
        "mcu_train.exit_params": ",".join(str(c.params) for c in costs),
        "mcu_train.spec": folded.spec.to_json(),
    })
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _describe(info: ModelInfo) -> str:
    channels = f" ({', '.join(info.channels)})" if info.channels else ""
    return (f"Early-exit CNN. Input {INPUT_NAME} ({info.layout}): channels{channels} x {info.window} samples "
            f"at {info.sample_rate_hz:g} Hz; "
            f"model input = (reading - mcu_train.input_offset) * mcu_train.input_scale. "
            f"Outputs {', '.join(info.exits)} (shallow to deep) are logits over {', '.join(info.classes)}.")


def export_onnx(model: EarlyExitCNN, path, *, classes, sample_rate_hz, window, input_offset=0.0, input_scale=1.0,
                channels=(), hop=None) -> ModelInfo:
    """Write `model` as ONNX to `path` (atomically). input_offset / input_scale: one number or one per channel."""
    as_tuple = lambda v: tuple(np.atleast_1d(np.asarray(v, np.float64)).tolist())  # noqa: E731
    info = ModelInfo(exits=tuple(model.exit_names), layout=LAYOUTS[model.spec.dims],
                     sample_rate_hz=float(sample_rate_hz), window=int(window), classes=tuple(classes),
                     input_offset=as_tuple(input_offset), input_scale=as_tuple(input_scale), channels=tuple(channels),
                     hop=hop)
    if len(info.classes) != model.spec.num_classes:
        raise OnnxModelError(f"{len(info.classes)} class names for {model.spec.num_classes} logits")
    write_atomically(path, build_onnx(model, info).SerializeToString())
    return info


# ---------------------------------------------------------------- reading back

def load_onnx(path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"model file {path} not found")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError, among others
        raise OnnxModelError(f"model file {path} is not a readable ONNX model: {e}") from e


def metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def read_model_info(path) -> ModelInfo:
    """The metadata of an exported model: exits, layout, sample rate, window, classes, input scaling."""
    return ModelInfo.from_metadata(metadata(load_onnx(path)))


def import_onnx(path) -> tuple[EarlyExitCNN, ModelInfo]:
    """Rebuild the tinygrad model (batch norm already folded) from an ONNX file written by export_onnx."""
    proto = load_onnx(path)
    meta = metadata(proto)
    info = ModelInfo.from_metadata(meta)
    if "mcu_train.spec" not in meta:
        raise OnnxModelError(f"{path}: metadata key mcu_train.spec is missing: not a model exported by mcu-train")
    model = EarlyExitCNN(ModelSpec.from_json(meta["mcu_train.spec"]))
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for layer in model.layers():
        names = {key: f"{layer.name}.{key}" for key in layer.tensors()}
        missing = [n for n in names.values() if n not in weights]
        if missing:
            raise OnnxModelError(f"{path}: initializer {missing[0]} is missing")
        try:
            set_weights(layer, {key: weights[name] for key, name in names.items()})
        except ValueError as e:
            raise OnnxModelError(f"{path}: {e}") from None
    return model, info
