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

    def node(self, op, inputs, base=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"{op}_"), **attrs))
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


# The MLPerf Tiny reference architectures (github.com/mlcommons/tiny, benchmark/training), with seeded random
# weights, BatchNorm after every conv, TF 'same' padding written as explicit pads (a stride-2 layer pads the
# extra row and column at the end) and without the trailing Softmax.
SAME_STRIDE2 = [0, 0, 1, 1]  # a 3x3 stride-2 conv on an even size


def resnet8(seed=3):
    """Image classification (CIFAR-10): ResNet-8 on (1, 3, 32, 32), three residual stacks of 16, 32, 64
    channels (1x1 stride-2 convs on the shortcuts of the last two), 8x8 average pooling, 10 classes."""
    b = Builder(seed)
    y = b.conv("x", 3, 16, 3, dims=2, bn=True)
    for c_in, c_out, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        z = b.conv(y, c_in, c_out, 3, dims=2, stride=stride, pad=1 if stride == 1 else SAME_STRIDE2, bn=True)
        z = b.conv(z, c_out, c_out, 3, dims=2, bn=True, relu=False)
        if stride != 1:
            y = b.conv(y, c_in, c_out, 1, dims=2, stride=stride, pad=0, relu=False)
        y = b.node("Relu", [b.node("Add", [y, z])])
    y = b.node("AveragePool", [y], kernel_shape=[8, 8], strides=[8, 8])
    return b.model([1, 3, 32, 32], [b.dense(b.node("Flatten", [y], axis=1), 64, 10)])


def ds_cnn(seed=4):
    """Keyword spotting: DS-CNN on (1, 1, 49, 10) MFCC features: a 10x4 stride-2 conv to 64 channels (25x5),
    four depthwise-separable blocks, average pooling over the 25x5 map, 12 classes."""
    b = Builder(seed)
    y = b.conv("x", 1, 64, (10, 4), dims=2, stride=2, pad=[4, 1, 5, 1], bn=True)
    for _ in range(4):
        y = b.conv(y, 64, 64, 3, dims=2, group=64, bn=True)
        y = b.conv(y, 64, 64, 1, dims=2, pad=0, bn=True)
    y = b.node("AveragePool", [y], kernel_shape=[25, 5], strides=[25, 5])
    return b.model([1, 1, 49, 10], [b.dense(b.node("Flatten", [y], axis=1), 64, 12)])


def mobilenet_v1_025(seed=5):
    """Visual wake words: MobileNetV1 with width 0.25 on (1, 3, 96, 96): a stride-2 conv to 8 channels, 13
    depthwise-separable blocks (ReLU6) up to 256 channels at 3x3, average pooling, 2 classes."""
    b = Builder(seed)

    def relu6(y):
        return b.node("Clip", [y, b.const(np.float32(0)), b.const(np.float32(6))])
    y = relu6(b.conv("x", 3, 8, 3, dims=2, stride=2, pad=SAME_STRIDE2, bn=True, relu=False))
    c = 8
    for c_out, stride in [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), *[(128, 1)] * 5, (256, 2), (256, 1)]:
        y = relu6(b.conv(y, c, c, 3, dims=2, group=c, stride=stride, pad=1 if stride == 1 else SAME_STRIDE2,
                         bn=True, relu=False))
        y = relu6(b.conv(y, c, c_out, 1, dims=2, pad=0, bn=True, relu=False))
        c = c_out
    y = b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[3, 3])
    return b.model([1, 3, 96, 96], [b.dense(b.node("Flatten", [y], axis=1), 256, 2)])


def calibration(model, n=64, seed=0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(0, 1, (n, *shape[1:])).astype(np.float32)


def save_mlperf(out_dir):
    """Write the MLPerf Tiny architectures and their calibration inputs into out_dir (docs/RESULTS.md benches
    them): `python tests/model_zoo.py build/mlperf`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for build in (resnet8, ds_cnn, mobilenet_v1_025):
        model = build()
        onnx.save(model, out / f"{build.__name__}.onnx")
        np.savez(out / f"{build.__name__}_calib.npz", x=calibration(model))


if __name__ == "__main__":
    save_mlperf(sys.argv[1] if len(sys.argv) > 1 else "build/mlperf")
