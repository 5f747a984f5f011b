"""ONNX models written by the tests (onnx.helper, seeded random weights): each exercises a different part
of the compiler. Weights are scaled so activations stay in a sensible range."""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, value, base="c"):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, base=None, name=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or self.name(f"{op}_"), **attrs))
        return out

    def conv(self, x, c_in, c_out, k, dims=1, group=1, stride=1, pad=None, bn=False, relu=True):
        """k: the kernel size, or one per dimension; pad: the same on every side, or ONNX's list of pads."""
        ks = list(k) if isinstance(k, (tuple, list)) else [k] * dims
        fan_in = c_in // group * int(np.prod(ks))
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, *ks)).astype(np.float32)
        b = self.rng.normal(0, 0.1, c_out).astype(np.float32)
        pad = ks[0] // 2 if pad is None else pad
        pads = list(pad) if isinstance(pad, (tuple, list)) else [pad] * (2 * dims)
        y = self.node("Conv", [x, self.const(w, "w"), self.const(b, "b")], kernel_shape=ks, strides=[stride] * dims,
                      pads=pads, group=group)
        if bn:
            y = self.node("BatchNormalization", [y, self.const(self.rng.uniform(0.5, 1.5, c_out).astype(np.float32)),
                                                 self.const(self.rng.normal(0, 0.1, c_out).astype(np.float32)),
                                                 self.const(self.rng.normal(0, 0.1, c_out).astype(np.float32)),
                                                 self.const(self.rng.uniform(0.5, 2, c_out).astype(np.float32))])
        return self.node("Relu", [y]) if relu else y

    def dense(self, x, k, m, gemm=True):
        w = self.rng.normal(0, np.sqrt(1.0 / k), (m, k)).astype(np.float32)
        b = self.rng.normal(0, 0.1, m).astype(np.float32)
        if gemm:
            return self.node("Gemm", [x, self.const(w), self.const(b)], transB=1)
        y = self.node("MatMul", [x, self.const(w.T.copy())])
        return self.node("Add", [y, self.const(b)])

    def head(self, x, c_in, classes, dims=1):
        y = self.conv(x, c_in, 16, 1, dims=dims, pad=0)
        y = self.node("GlobalAveragePool", [y])
        y = self.node("Flatten", [y], axis=1)
        return self.dense(y, 16, classes)

    def model(self, input_shape, outputs, metadata=None, opset=17):
        g = helper.make_graph(self.nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", f"{o}_classes"]) for o in outputs], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        for k, v in (metadata or {}).items():
            m.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(m)
        return m


def har_like(seed=0, channels=3):
    """1-D CNN on (1, channels, 128) with BatchNorm, max pooling and two early exits plus the final classifier."""
    b = Builder(seed)
    x = "x"
    y = b.node("MaxPool", [b.conv(x, channels, 8, 5, bn=True)], kernel_shape=[2], strides=[2])
    e0 = b.head(y, 8, 6)
    y = b.node("MaxPool", [b.conv(y, 8, 16, 5, bn=True)], kernel_shape=[2], strides=[2])
    e1 = b.head(y, 16, 6)
    y = b.conv(y, 16, 16, 3)
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    final = b.dense(y, 16, 6, gemm=False)
    m = b.model([1, channels, 128], [e0, e1, final], {"mcu_train.exits": f"{e0},{e1},{final}"})
    return m


def cnn2d_residual(seed=1):
    """2-D CNN on (1, 3, 16, 16): strided conv, depthwise conv, residual Add, average pooling, an exit,
    and a final dense layer over a flattened 4x4 feature map (NCHW flatten order)."""
    b = Builder(seed)
    y = b.conv("x", 3, 8, 3, dims=2, stride=2)  # 8x8
    dw = b.conv(y, 8, 8, 3, dims=2, group=8)
    pw = b.conv(dw, 8, 8, 1, dims=2, pad=0, relu=False)
    y = b.node("Relu", [b.node("Add", [y, pw])])
    e0 = b.head(y, 8, 5, dims=2)
    y = b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 4x4
    y = b.node("Clip", [b.conv(y, 8, 4, 3, dims=2, relu=False), b.const(np.float32(0)), b.const(np.float32(6))])
    y = b.node("Flatten", [y], axis=1)
    final = b.dense(y, 64, 5)
    return b.model([1, 3, 16, 16], [e0, final])


def cnn1d_plain(seed=2):
    """1-D CNN without early exits: one output, ReduceMean over time (as PyTorch exports x.mean(-1))."""
    b = Builder(seed)
    y = b.conv("x", 4, 12, 7, stride=2)
    y = b.conv(y, 12, 12, 3)
    y = b.node("ReduceMean", [y], axes=[-1], keepdims=0)
    return b.model([1, 4, 64], [b.dense(y, 12, 3)])


def calibration(model, n=64, seed=0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(0, 1, (n, *shape[1:])).astype(np.float32)


# --- the ops and patterns of published models (issue 10); inputs of at most 1,022 bytes so they run on a board


def softmax_autopad(seed=10):
    """auto_pad SAME_UPPER / SAME_LOWER / VALID on convs and pools, a Softmax at the end (absorbed)."""
    b = Builder(seed)
    y = b.node("Conv", ["x", b.const(b.rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32))], auto_pad="SAME_UPPER",
               strides=[2, 2])  # 12x12 -> 6x6, pads (0, 0, 1, 1)
    y = b.node("Relu", [y])
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], strides=[1, 1], auto_pad="VALID")  # 5x5
    y = b.node("Conv", [y, b.const(b.rng.normal(0, 0.3, (8, 8, 2, 2)).astype(np.float32))], auto_pad="SAME_LOWER")
    y = b.node("MaxPool", [b.node("Relu", [y])], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    probs = b.node("Softmax", [b.dense(y, 8, 5)], axis=-1)
    return b.model([1, 3, 12, 12], [probs])


def nhwc_input(seed=11):
    """A TFLite conversion's layout: an NHWC input transposed to NCHW, a conv whose bias is a separate Add,
    a Mul / Add affine after a conv, and a no-op Transpose before the flatten."""
    b = Builder(seed)
    y = b.node("Transpose", ["x"], perm=[0, 3, 1, 2])
    y = b.node("Conv", [y, b.const(b.rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32))], pads=[1, 1, 1, 1])
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.2, (1, 6, 1, 1)).astype(np.float32))])  # unfused bias
    y = b.node("Conv", [b.node("Relu", [y]), b.const(b.rng.normal(0, 0.3, (8, 6, 3, 3)).astype(np.float32))],
               strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.node("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, (8, 1, 1)).astype(np.float32))])  # BatchNorm as affine
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.2, (8, 1, 1)).astype(np.float32))])
    y = b.node("GlobalAveragePool", [b.node("Relu", [y])])
    y = b.node("Transpose", [y], perm=[0, 2, 3, 1])  # (1, 1, 1, 8): moves no data
    y = b.node("Flatten", [y], axis=1)
    return b.model([1, 12, 12, 3], [b.dense(y, 8, 4)])


def one_d_views(seed=12):
    """1-D data through 2-D convs (Unsqueeze / Squeeze, as tf2onnx writes them), a dilated conv, and
    AdaptiveAvgPool1d as PyTorch's default exporter writes it (Unsqueeze -> ReduceMean -> Squeeze)."""
    b = Builder(seed)
    y = b.node("Unsqueeze", ["x", b.const(np.array([2], np.int64))])  # (1, 3, 1, 40)
    y = b.node("Conv", [y, b.const(b.rng.normal(0, 0.4, (8, 3, 1, 5)).astype(np.float32)),
                        b.const(b.rng.normal(0, 0.1, 8).astype(np.float32))], pads=[0, 2, 0, 2])
    y = b.node("Squeeze", [b.node("Relu", [y]), b.const(np.array([2], np.int64))])  # (1, 8, 40)
    y = b.node("Conv", [y, b.const(b.rng.normal(0, 0.3, (8, 8, 3)).astype(np.float32))], dilations=[2],
               pads=[2, 2])
    y = b.node("LeakyRelu", [y], alpha=0.1)
    y = b.node("Unsqueeze", [y, b.const(np.array([-1], np.int64))])  # (1, 8, 40, 1)
    y = b.node("ReduceMean", [y, b.const(np.array([-2, -1], np.int64))], keepdims=1)
    y = b.node("Squeeze", [y, b.const(np.array([-1], np.int64))])  # (1, 8, 1)
    y = b.node("Flatten", [y], axis=1)
    return b.model([1, 3, 40], [b.dense(y, 8, 3)], opset=18)


def fire_concat(seed=13):
    """SqueezeNet's fire module (1x1 squeeze, 1x1 and 3x3 expands concatenated along channels), a Pad fused into
    the next conv, MaxPool with ceil_mode, a nearest Resize and GlobalMaxPool."""
    b = Builder(seed)
    y = b.conv("x", 3, 8, 3, dims=2, stride=2, pad=0)  # 12 -> 5
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)  # 5 -> 3
    s = b.conv(y, 8, 4, 1, dims=2, pad=0)
    e1 = b.conv(s, 4, 6, 1, dims=2, pad=0)
    e3 = b.conv(b.node("Pad", [s, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]), 4, 6, 3, dims=2, pad=0)
    y = b.node("Concat", [e1, e3], axis=1)  # 12 channels
    y = b.node("Resize", [y, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")  # 6x6
    y = b.conv(y, 12, 8, 3, dims=2)
    y = b.node("Flatten", [b.node("GlobalMaxPool", [y])], axis=1)
    return b.model([1, 3, 12, 12], [b.dense(y, 8, 4)], opset=13)


def gates(seed=14):
    """Activations of mobile nets: HardSwish, HardSigmoid, SiLU (x * Sigmoid(x)), a squeeze-excitation gate
    (x * Sigmoid(conv(pool(x))) per channel), Clip with min / max as inputs, Mul / Div / Sub by constants, a
    Pad the next op cannot take (kept as a step)."""
    b = Builder(seed)
    y = b.node("Sub", ["x", b.const(np.float32(0.1))])
    y = b.node("Div", [y, b.const(np.float32(2.0))])
    y = b.conv(y, 4, 8, 3, dims=2, relu=False)
    y = b.node("HardSwish", [y])
    y = b.node("Mul", [y, b.node("Sigmoid", [y])])  # SiLU
    g = b.node("GlobalAveragePool", [y])
    g = b.node("HardSigmoid", [b.conv(g, 8, 8, 1, dims=2, pad=0, relu=False)], alpha=0.2, beta=0.5)
    y = b.node("Mul", [y, g])  # the gate, one value per channel
    lo, hi = b.node("Constant", [], value=helper.make_tensor("lo", TensorProto.FLOAT, [], [-1.0])), \
        b.node("Constant", [], value=helper.make_tensor("hi", TensorProto.FLOAT, [], [1.5]))
    y = b.node("Clip", [b.conv(y, 8, 8, 3, dims=2, relu=False), lo, hi])
    y = b.node("Pad", [y, b.const(np.array([0, 0, 1, 1, 0, 0, 0, 0], np.int64)), b.const(np.float32(0.5))])
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])  # 9x9 -> 4x4
    y = b.node("Mul", [y, b.const(np.float32(3.0))])
    y = b.node("Flatten", [b.node("Tanh", [y])], axis=1)
    return b.model([1, 4, 8, 8], [b.dense(y, 128, 6)])


def mlp_autoencoder(seed=15, features=64, hidden=(32, 8, 32)):
    """A flat (N, features) input through Gemm / MatMul layers back to (N, features): no classes."""
    b = Builder(seed)
    y, k = "x", features
    for i, m in enumerate([*hidden, features]):
        y = b.dense(y, k, m, gemm=i % 2 == 0)
        if i < len(hidden):
            y = b.node("Relu", [y])
        k = m
    return b.model([1, features], [y])


def conv_map(seed=16):
    """A model whose output is a map (segmentation-style values), not class logits."""
    b = Builder(seed)
    y = b.conv("x", 2, 6, 3, dims=2)
    y = b.conv(y, 6, 3, 3, dims=2, relu=False)
    m = b.model([1, 2, 8, 8], [])
    m.graph.output.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 3, 8, 8]))
    return m


def pooled_concat(seed=17):
    """Multi-scale 1-D branches, each pooled, concatenated along channels before the classifier: the pooled
    features are one pixel, so the Concat is written in place."""
    b = Builder(seed)
    a = b.node("GlobalAveragePool", [b.conv("x", 3, 6, 3)])
    c = b.node("GlobalAveragePool", [b.conv("x", 3, 10, 7, stride=2)])
    y = b.node("Flatten", [b.node("Concat", [a, c], axis=1)], axis=1)
    return b.model([1, 3, 32], [b.dense(y, 16, 5)])


def save_mlperf(out_dir):
    """Write the MLPerf Tiny architectures and their calibration inputs into out_dir (docs/RESULTS.md benches
    them): `python tests/model_zoo.py build/mlperf`."""
    import mlperf_tiny
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("resnet8", "ds_cnn", "mobilenet_v1_025"):
        model, x = getattr(mlperf_tiny, name)()
        onnx.save(model, out / f"{name}.onnx")
        np.savez(out / f"{name}_calib.npz", x=x)


if __name__ == "__main__":
    save_mlperf(sys.argv[1] if len(sys.argv) > 1 else "build/mlperf")
