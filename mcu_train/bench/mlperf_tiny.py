"""MLPerf Tiny's image-classification and keyword-spotting networks as ONNX graphs with seeded random weights, for
measuring the kernels on real model shapes (weights do not change the cost; the requantisation they lead to is
realistic because the models are calibrated on random inputs like any other).

- ResNet-8 (``resnet8``): MLPerf Tiny's ``resnet_v1_eembc``, input 32x32x3: conv 3x3 16; three stacks of two
  3x3 convs (16, 32, 64 filters; the second and third stacks start with stride 2 and add a strided 1x1 conv
  shortcut), each ending in a residual add and ReLU; 8x8 average pool; dense 10. 12.5 M MACs.
- DS-CNN (``ds_cnn``): MLPerf Tiny's keyword-spotting ``ds_cnn``, input 49x10x1: conv 10x4 stride 2 to 64
  channels; four depthwise-separable blocks (3x3 depthwise, 1x1 conv 64); average pool (24, 5) (the reference
  model pools the first 24 of the 25 rows); dense 12. 2.66 M MACs.
- MobileNetV1 0.25 (``mobilenet_v1_025``): visual wake words, input 96x96x3: conv 3x3 stride 2 to 8 channels,
  13 depthwise-separable blocks (8 ... 256 channels), ReLU6 (as Clip 0..6), global average pool, dense 2.
- FC autoencoder (``fc_autoencoder``): anomaly detection, 640 -> 4 x 128 -> 8 -> 4 x 128 -> 640 dense layers with
  batch norm and ReLU; its output is the reconstruction (values, not classes).
Padding is TensorFlow's 'same' (the extra row / column at the end), batch norm follows every conv but the
shortcuts, as in the Keras reference models.
"""
from __future__ import annotations

import numpy as np


class _Graph:
    """A few onnx.helper calls behind conv / add / pool / dense methods."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def _name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def _const(self, value):
        from onnx import numpy_helper
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self._name(f"{op}_"), **attrs))
        return out

    def bn(self, x, c):
        return self.node("BatchNormalization", [x, self._const(self.rng.uniform(0.7, 1.3, c)),
                                                self._const(self.rng.normal(0, 0.1, c)),
                                                self._const(self.rng.normal(0, 0.1, c)),
                                                self._const(self.rng.uniform(0.7, 1.5, c))])

    def conv(self, x, c_in, c_out, kernel, stride=(1, 1), pads=None, group=1, bn=True, relu=True):
        kh, kw = kernel
        fan_in = c_in // group * kh * kw
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, kh, kw))
        b = self.rng.normal(0, 0.05, c_out)
        y = self.node("Conv", [x, self._const(w), self._const(b)], kernel_shape=[kh, kw], strides=list(stride),
                      pads=list(pads or (0, 0, 0, 0)), group=group)
        if bn:
            y = self.bn(y, c_out)
        if relu == "relu6":
            return self.node("Clip", [y, self._const(0.0), self._const(6.0)])
        return self.node("Relu", [y]) if relu else y

    def dense(self, x, k, m):
        w = self.rng.normal(0, np.sqrt(1.0 / k), (m, k))
        return self.node("Gemm", [x, self._const(w), self._const(self.rng.normal(0, 0.05, m))], transB=1)

    def model(self, input_shape, output):
        import onnx
        from onnx import TensorProto, helper
        g = helper.make_graph(self.nodes, "mlperf_tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                        input_shape)],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", "outputs"])],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _same(size, k, s):
    """TensorFlow 'same' padding (before, after) along one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _same_pads(hw, kernel, stride):
    (t, b), (l, r) = _same(hw[0], kernel[0], stride[0]), _same(hw[1], kernel[1], stride[1])
    return (t, l, b, r)


def resnet8(seed: int = 0):
    """MLPerf Tiny ResNet-8 (CIFAR-10, 32x32x3) as an ONNX ModelProto."""
    g = _Graph(seed)
    x = g.conv("x", 3, 16, (3, 3), pads=_same_pads((32, 32), (3, 3), (1, 1)))
    hw, c = 32, 16
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = g.conv(x, c, filters, (3, 3), (stride, stride), _same_pads((hw, hw), (3, 3), (stride, stride)))
        out = -(-hw // stride)
        y = g.conv(y, filters, filters, (3, 3), pads=_same_pads((out, out), (3, 3), (1, 1)), relu=False)
        if stride > 1:  # the shortcut: a strided 1x1 conv without batch norm
            x = g.conv(x, c, filters, (1, 1), (stride, stride), bn=False, relu=False)
        x = g.node("Relu", [g.node("Add", [x, y])])
        hw, c = out, filters
    x = g.node("Flatten", [g.node("AveragePool", [x], kernel_shape=[hw, hw], strides=[hw, hw])], axis=1)
    return g.model([1, 3, 32, 32], g.dense(x, 64, 10))


def ds_cnn(seed: int = 0):
    """MLPerf Tiny DS-CNN (keyword spotting, 49x10 MFCC) as an ONNX ModelProto."""
    g = _Graph(seed)
    x = g.conv("x", 1, 64, (10, 4), (2, 2), _same_pads((49, 10), (10, 4), (2, 2)))
    for _ in range(4):
        x = g.conv(x, 64, 64, (3, 3), pads=(1, 1, 1, 1), group=64)
        x = g.conv(x, 64, 64, (1, 1))
    x = g.node("Flatten", [g.node("AveragePool", [x], kernel_shape=[24, 5], strides=[24, 5])], axis=1)
    return g.model([1, 1, 49, 10], g.dense(x, 64, 12))


def mobilenet_v1_025(seed: int = 0):
    """MLPerf Tiny MobileNetV1 0.25 (visual wake words, 96x96x3) as an ONNX ModelProto."""
    g = _Graph(seed)
    x = g.conv("x", 3, 8, (3, 3), (2, 2), _same_pads((96, 96), (3, 3), (2, 2)), relu="relu6")
    hw, c = 48, 8
    for filters, stride in ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), *[(128, 1)] * 5, (256, 2),
                            (256, 1)):
        x = g.conv(x, c, c, (3, 3), (stride, stride), _same_pads((hw, hw), (3, 3), (stride, stride)), group=c,
                   relu="relu6")
        hw = -(-hw // stride)
        x = g.conv(x, c, filters, (1, 1), relu="relu6")
        c = filters
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    return g.model([1, 3, 96, 96], g.dense(x, c, 2))


def fc_autoencoder(seed: int = 0, features: int = 640):
    """MLPerf Tiny's anomaly-detection autoencoder (640 features in, 640 out) as an ONNX ModelProto."""
    g = _Graph(seed)
    x, k = "x", features
    for m in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = g.node("Relu", [g.bn(g.dense(x, k, m), m)])
        k = m
    return g.model([1, features], g.dense(x, k, features))


MODELS = {"resnet8": resnet8, "ds-cnn": ds_cnn, "mobilenet-v1-0.25": mobilenet_v1_025,
          "fc-autoencoder": fc_autoencoder}


def calibration(model, n: int = 32, seed: int = 0) -> np.ndarray:
    """Random standard-normal calibration inputs in the model's input shape (N, C, H, W)."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(0, 1, (n, *shape[1:])).astype(np.float32)
