"""The MLPerf Tiny reference models, built the way the benchmark defines them (its Keras models, as a TFLite ->
ONNX conversion writes them), with seeded random weights: each function returns (onnx.ModelProto,
calibration inputs). Other tests import these (compile, run on a board, benchmark).

- resnet8(): image classification, 32x32x3 (NHWC input transposed to NCHW, 'same' padding as auto_pad,
  BatchNorm, residual stacks 16/32/64 with 1x1 shortcuts, 8x8 average pool, dense 10, Softmax).
- ds_cnn(): keyword spotting, 49x10x1 MFCC: conv 10x4 stride 2 (64), four depthwise-separable blocks,
  average pool 25x5, dense 12, Softmax.
- mobilenet_v1_025(): visual wake words, 96x96x3, width 0.25 (8 ... 256 channels), ReLU6, global average
  pool, dense 2, Softmax.
- fc_autoencoder(): anomaly detection, 640 -> 4 x 128 -> 8 -> 4 x 128 -> 640 dense layers with BatchNorm and
  ReLU; its output is values (the reconstruction), not classes."""
import numpy as np

from model_zoo import Builder


class _Net(Builder):
    def bn(self, x, c):
        return self.node("BatchNormalization", [x, self.const(self.rng.uniform(0.5, 1.5, c).astype(np.float32)),
                                                self.const(self.rng.normal(0, 0.1, c).astype(np.float32)),
                                                self.const(self.rng.normal(0, 0.1, c).astype(np.float32)),
                                                self.const(self.rng.uniform(0.5, 1.5, c).astype(np.float32))])

    def conv_same(self, x, c_in, c_out, k, stride=1, group=1, act="Relu"):
        """Conv (auto_pad SAME_UPPER, as Keras 'same') + BatchNorm + activation."""
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.rng.normal(0, np.sqrt(2.0 / (c_in // group * kh * kw)), (c_out, c_in // group, kh, kw))
        y = self.node("Conv", [x, self.const(w.astype(np.float32)), self.const(np.zeros(c_out, np.float32))],
                      auto_pad="SAME_UPPER", strides=[stride, stride], group=group, kernel_shape=[kh, kw])
        y = self.bn(y, c_out)
        if act == "Relu6":
            return self.node("Clip", [y, self.const(np.float32(0)), self.const(np.float32(6))])
        return self.node(act, [y]) if act else y


def _softmax_head(b, x, k, classes):
    return b.node("Softmax", [b.dense(x, k, classes)], axis=-1)


def _images(shape, n, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


def resnet8(seed=0, calib=32):
    b = _Net(seed)
    y = b.node("Transpose", ["x"], perm=[0, 3, 1, 2])  # NHWC input, as converted from TFLite
    y = b.conv_same(y, 3, 16, 3)
    c_in = 16
    for c, stride in ((16, 1), (32, 2), (64, 2)):
        r = b.conv_same(y, c_in, c, 3, stride)
        r = b.conv_same(r, c, c, 3, act=None)
        short = y if stride == 1 and c == c_in else b.conv_same(y, c_in, c, 1, stride, act=None)
        y = b.node("Relu", [b.node("Add", [short, r])])
        c_in = c
    y = b.node("AveragePool", [y], kernel_shape=[8, 8], strides=[8, 8])
    y = b.node("Flatten", [y], axis=1)
    m = b.model([1, 32, 32, 3], [_softmax_head(b, y, 64, 10)])
    return m, _images((32, 32, 3), calib, seed)


def ds_cnn(seed=0, calib=32):
    b = _Net(seed)
    y = b.conv_same("x", 1, 64, (10, 4), stride=2)  # 49x10 -> 25x5
    for _ in range(4):
        y = b.conv_same(y, 64, 64, 3, group=64)
        y = b.conv_same(y, 64, 64, 1)
    y = b.node("AveragePool", [y], kernel_shape=[25, 5], strides=[25, 5])
    y = b.node("Flatten", [y], axis=1)
    m = b.model([1, 1, 49, 10], [_softmax_head(b, y, 64, 12)])
    return m, np.random.default_rng(seed).normal(0, 1, (calib, 1, 49, 10)).astype(np.float32)


def mobilenet_v1_025(seed=0, calib=16):
    b = _Net(seed)
    y = b.conv_same("x", 3, 8, 3, stride=2, act="Relu6")  # 96 -> 48
    c_in = 8
    for c, stride in ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), *[(128, 1)] * 5, (256, 2), (256, 1)):
        y = b.conv_same(y, c_in, c_in, 3, stride, group=c_in, act="Relu6")
        y = b.conv_same(y, c_in, c, 1, act="Relu6")
        c_in = c
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    m = b.model([1, 3, 96, 96], [_softmax_head(b, y, 256, 2)])
    return m, _images((3, 96, 96), calib, seed)


def fc_autoencoder(seed=0, calib=64, features=640):
    b = _Net(seed)
    y, k = "x", features
    for m in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        y = b.node("Relu", [b.bn(b.dense(y, k, m), m)])
        k = m
    out = b.dense(y, k, features)
    m = b.model([1, features], [out])
    return m, np.random.default_rng(seed).normal(0, 1, (calib, features)).astype(np.float32)
