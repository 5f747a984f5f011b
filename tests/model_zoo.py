"""ONNX models written by the tests (onnx.helper, seeded random weights): each exercises a different part
of the compiler. Weights are scaled so activations stay in a sensible range."""
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
        ks = [k] * dims
        fan_in = c_in // group * k ** dims
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, *ks)).astype(np.float32)
        b = self.rng.normal(0, 0.1, c_out).astype(np.float32)
        pad = k // 2 if pad is None else pad
        y = self.node("Conv", [x, self.const(w, "w"), self.const(b, "b")], kernel_shape=ks, strides=[stride] * dims,
                      pads=[pad] * (2 * dims), group=group)
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


def har_like(seed=0):
    """1-D CNN on (1, 3, 128) with BatchNorm, max pooling and two early exits plus the final classifier."""
    b = Builder(seed)
    x = "x"
    y = b.node("MaxPool", [b.conv(x, 3, 8, 5, bn=True)], kernel_shape=[2], strides=[2])
    e0 = b.head(y, 8, 6)
    y = b.node("MaxPool", [b.conv(y, 8, 16, 5, bn=True)], kernel_shape=[2], strides=[2])
    e1 = b.head(y, 16, 6)
    y = b.conv(y, 16, 16, 3)
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    final = b.dense(y, 16, 6, gemm=False)
    m = b.model([1, 3, 128], [e0, e1, final], {"mcu_train.exits": f"{e0},{e1},{final}"})
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
