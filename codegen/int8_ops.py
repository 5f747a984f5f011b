"""Numpy golden model of every kernel in firmware/kernels/ (same parameters, same results bit for bit).

Written independently of the C loop order: whole-tensor numpy (padding, sliding windows, tensordot), int64
accumulation, then :func:`codegen.quant.output_stage`. Layouts match the C kernels:

* activations NHWC int8 (1-D: N, W, C is NHWC with H = 1; :func:`conv1d` does the reshaping);
* conv filters OHWI ``[C_out, KH, KW, C_in]``; depthwise filters ``[KH, KW, C_out]`` (a leading 1 is accepted);
  dense weights ``[M, K]``;
* ``padding = (top, left, bottom, right)``; ``stride = (sh, sw)``;
* ``input_offset = -input_zero_point``, ``output_offset = output_zero_point`` (as in the C structs);
* ``multiplier`` / ``shift``: int arrays per output channel (or scalars, broadcast).

Semantics (docs/quantisation.md): padded conv / avg-pool taps are real zeros (they add nothing to the
accumulator); padded max-pool taps are ignored; every MAC kernel ends with
``clamp(requantize(acc) + output_offset, act_min, act_max)``. Accumulators wrap to int32 as in C.
Unsupported arguments raise ValueError where the C kernel returns MT_ARG_ERROR.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from codegen.quant import output_stage, requantize

__all__ = ["conv2d", "conv1d", "depthwise_conv2d", "fully_connected", "max_pool2d", "avg_pool2d",
           "global_avg_pool", "add", "relu", "out_len", "lut", "mul", "concat_channels", "pad", "resize_nearest"]


def out_len(n: int, k: int, stride: int, pad_a: int, pad_b: int) -> int:
    """Output length along one axis (floor mode); ValueError when the window never fits."""
    span = n + pad_a + pad_b - k
    if span < 0:
        raise ValueError("kernel larger than the padded input")
    return span // stride + 1


def _check_common(x, stride, padding, input_offset, output_offset, act_min, act_max):
    if x.dtype != np.int8 or x.ndim != 4:
        raise ValueError("input must be int8 NHWC")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError("stride must be >= 1 and padding >= 0")
    if not (-127 <= input_offset <= 128 and -128 <= output_offset <= 127):
        raise ValueError("offset out of range")
    if not (-128 <= act_min <= act_max <= 127):
        raise ValueError("bad activation range")


def _windows(xp: np.ndarray, kh: int, kw: int, stride, oh: int, ow: int, dilation=(1, 1)) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) view of the padded input's sliding windows (taps `dilation` apart)."""
    dh, dw = dilation
    v = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))[..., ::dh, ::dw]
    return v[:, : (oh - 1) * stride[0] + 1: stride[0], : (ow - 1) * stride[1] + 1: stride[1]]


def _wrap32(acc: np.ndarray) -> np.ndarray:
    return acc.astype(np.int64).astype(np.int32).astype(np.int64)


def conv2d(x, w, bias=None, *, input_offset: int, output_offset: int, multiplier, shift,
           stride=(1, 1), padding=(0, 0, 0, 0), act_min: int = -128, act_max: int = 127,
           dilation=(1, 1)) -> np.ndarray:
    """Convolution with groups = 1 (``mt_conv_s8``; with dilation ``mt_conv_dilated_s8``). x: (N, H, W, C_in)
    int8; w: (C_out, KH, KW, C_in) int8; bias: int32[C_out] or None. Returns (N, OH, OW, C_out) int8."""
    x = np.asarray(x)
    w = np.asarray(w)
    _check_common(x, stride, padding, input_offset, output_offset, act_min, act_max)
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[3] != x.shape[3]:
        raise ValueError("filter must be int8 OHWI with C_in matching the input")
    n, h, wd, _ = x.shape
    co, kh, kw, _ = w.shape
    t, l, b, r = padding
    dh, dw = dilation
    oh, ow = out_len(h, (kh - 1) * dh + 1, stride[0], t, b), out_len(wd, (kw - 1) * dw + 1, stride[1], l, r)
    xp = pad(x.astype(np.int64) + input_offset, padding, 0)
    win = _windows(xp, kh, kw, stride, oh, ow, dilation)  # N, OH, OW, C, KH, KW
    acc = np.tensordot(win, w.astype(np.int64).transpose(3, 1, 2, 0), axes=([3, 4, 5], [0, 1, 2]))
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return output_stage(_wrap32(acc), multiplier, shift, output_offset, act_min, act_max)


def conv1d(x, w, bias=None, *, padding=(0, 0), stride: int = 1, **kw) -> np.ndarray:
    """1-D convolution on (N, W, C_in) with w (C_out, K, C_in) and padding (left, right): conv2d with H = 1."""
    x = np.asarray(x)
    w = np.asarray(w)
    y = conv2d(x[:, None], w[:, None], bias, stride=(1, stride), padding=(0, padding[0], 0, padding[1]), **kw)
    return y[:, 0]


def depthwise_conv2d(x, w, bias=None, *, input_offset: int, output_offset: int, multiplier, shift,
                     ch_mult: int = 1, stride=(1, 1), padding=(0, 0, 0, 0), act_min: int = -128,
                     act_max: int = 127) -> np.ndarray:
    """Depthwise convolution (``mt_depthwise_conv_s8``): output channel o = i * ch_mult + m reads input
    channel i. x: (N, H, W, C_in) int8; w: (KH, KW, C_in * ch_mult) int8 (or (1, KH, KW, C_out))."""
    x = np.asarray(x)
    w = np.asarray(w)
    if w.ndim == 4:
        if w.shape[0] != 1:
            raise ValueError("depthwise filter must be [1, KH, KW, C_out]")
        w = w[0]
    _check_common(x, stride, padding, input_offset, output_offset, act_min, act_max)
    if ch_mult < 1 or w.dtype != np.int8 or w.ndim != 3 or w.shape[2] != x.shape[3] * ch_mult:
        raise ValueError("filter must be int8 [KH, KW, C_in * ch_mult]")
    n, h, wd, ci = x.shape
    kh, kw, co = w.shape
    t, l, b, r = padding
    oh, ow = out_len(h, kh, stride[0], t, b), out_len(wd, kw, stride[1], l, r)
    xp = pad(x.astype(np.int64) + input_offset, padding, 0)
    xp = np.repeat(xp, ch_mult, axis=3)  # channel o <- input o // ch_mult
    win = _windows(xp, kh, kw, stride, oh, ow)  # N, OH, OW, C_out, KH, KW
    acc = np.einsum("nhwcij,ijc->nhwc", win, w.astype(np.int64))
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return output_stage(_wrap32(acc), multiplier, shift, output_offset, act_min, act_max)


def fully_connected(x, w, bias=None, *, input_offset: int, output_offset: int, multiplier, shift,
                    act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Dense layer (``mt_fully_connected_s8``). x: (N, K) int8 (or any shape flattened to (N, K));
    w: (M, K) int8; bias int32[M] or None. Returns (N, M) int8."""
    x = np.asarray(x)
    w = np.asarray(w)
    x2 = x.reshape(x.shape[0], -1)
    if x.dtype != np.int8 or w.dtype != np.int8 or w.ndim != 2 or w.shape[1] != x2.shape[1]:
        raise ValueError("need int8 x (N, K) and int8 w (M, K)")
    _check_common(x2[:, None, None, :], (1, 1), (0, 0, 0, 0), input_offset, output_offset, act_min, act_max)
    acc = (x2.astype(np.int64) + input_offset) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return output_stage(_wrap32(acc), multiplier, shift, output_offset, act_min, act_max)


def max_pool2d(x, kernel, stride, padding=(0, 0, 0, 0), act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Max pooling (``mt_max_pool_s8``); padded taps are ignored; then clamp to [act_min, act_max]."""
    x = np.asarray(x)
    _check_common(x, stride, padding, 0, 0, act_min, act_max)
    n, h, wd, c = x.shape
    kh, kw = kernel
    t, l, b, r = padding
    oh, ow = out_len(h, kh, stride[0], t, b), out_len(wd, kw, stride[1], l, r)
    xp = pad(x.astype(np.int16), padding, -32768)
    m = _windows(xp, kh, kw, stride, oh, ow).max(axis=(4, 5))
    if np.any(m == -32768):
        raise ValueError("a pooling window lies entirely in the padding")
    return np.clip(m, act_min, act_max).astype(np.int8)


def avg_pool2d(x, kernel, stride, padding=(0, 0, 0, 0), *, input_offset: int, output_offset: int,
               multiplier, shift, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Average pooling (``mt_avg_pool_s8``). acc = sum of (x + input_offset) over in-bounds taps; a window
    with v in-bounds taps uses table entry i = KH*KW - v of ``multiplier`` / ``shift``
    (see :func:`codegen.quant.avg_pool_multipliers`)."""
    x = np.asarray(x)
    _check_common(x, stride, padding, input_offset, output_offset, act_min, act_max)
    mult = np.atleast_1d(np.asarray(multiplier, dtype=np.int64))
    shf = np.atleast_1d(np.asarray(shift, dtype=np.int64))
    n, h, wd, c = x.shape
    kh, kw = kernel
    t, l, b, r = padding
    oh, ow = out_len(h, kh, stride[0], t, b), out_len(wd, kw, stride[1], l, r)
    xp = pad(x.astype(np.int64) + input_offset, padding, 0)
    acc = _windows(xp, kh, kw, stride, oh, ow).sum(axis=(4, 5))  # N, OH, OW, C
    ones = pad(np.ones((1, h, wd, 1), np.int64), padding, 0)
    valid = _windows(ones, kh, kw, stride, oh, ow).sum(axis=(4, 5))  # 1, OH, OW, 1
    if np.any(valid == 0):
        raise ValueError("a pooling window lies entirely in the padding")
    idx = kh * kw - valid
    if np.any(idx >= len(mult)) or len(shf) != len(mult):
        raise ValueError("requantisation table too short for the padded windows")
    return output_stage(_wrap32(acc), mult[idx], shf[idx], output_offset, act_min, act_max)


def global_avg_pool(x, **kw) -> np.ndarray:
    """GlobalAveragePool / ReduceMean over H and W: avg_pool2d with the whole image as the window."""
    x = np.asarray(x)
    return avg_pool2d(x, (x.shape[1], x.shape[2]), (1, 1), **kw)


def add(x1, x2, *, input1_offset: int, input1_multiplier: int, input1_shift: int, input2_offset: int,
        input2_multiplier: int, input2_shift: int, left_shift: int, output_offset: int, output_multiplier: int,
        output_shift: int, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Elementwise add with two input scales (``mt_add_s8``, TFLite's scheme); keyword names match
    ``codegen.quant.add_params()``."""
    x1 = np.asarray(x1)
    x2 = np.asarray(x2)
    if x1.dtype != np.int8 or x2.dtype != np.int8 or x1.shape != x2.shape:
        raise ValueError("inputs must be int8 of the same shape")
    if not (0 <= left_shift <= 20 and -31 <= input1_shift <= 0 and -31 <= input2_shift <= 0):
        raise ValueError("left_shift must be in [0, 20] and input shifts in [-31, 0]")
    if not (-127 <= input1_offset <= 128 and -127 <= input2_offset <= 128 and -128 <= output_offset <= 127):
        raise ValueError("offset out of range")
    if not (-128 <= act_min <= act_max <= 127):
        raise ValueError("bad activation range")
    a = requantize((x1.astype(np.int64) + input1_offset) << left_shift, input1_multiplier, input1_shift)
    b = requantize((x2.astype(np.int64) + input2_offset) << left_shift, input2_multiplier, input2_shift)
    return output_stage(a + b, output_multiplier, output_shift, output_offset, act_min, act_max)


def relu(x, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Standalone ReLU / ReLU6 / Clip on an unchanged quantisation (``mt_relu_s8``): a clamp."""
    x = np.asarray(x)
    if x.dtype != np.int8 or not (-128 <= act_min <= act_max <= 127):
        raise ValueError("need int8 input and -128 <= act_min <= act_max <= 127")
    return np.clip(x, act_min, act_max).astype(np.int8)


def lut(x, table) -> np.ndarray:
    """Elementwise table lookup (``mt_lut_s8``): out = table[x + 128]."""
    x = np.asarray(x)
    table = np.asarray(table)
    if x.dtype != np.int8 or table.dtype != np.int8 or table.shape != (256,):
        raise ValueError("need int8 input and an int8[256] table")
    return table[x.astype(np.int64) + 128]


def mul(x1, x2, *, input1_offset: int, input2_offset: int, output_offset: int, multiplier: int, shift: int,
        act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Elementwise product (``mt_mul_s8``); x2 repeats along x1's flat order (its size divides x1's: the same
    shape, one value per channel of NHWC data, or one value):
    out = clamp(requantize((x1 + off1) * (x2 + off2)) + output_offset)."""
    x1 = np.asarray(x1)
    x2 = np.asarray(x2).reshape(-1)
    if x1.dtype != np.int8 or x2.dtype != np.int8 or x1.size % x2.size:
        raise ValueError("need int8 inputs, the second's size dividing the first's")
    a = x1.reshape(-1, x2.size).astype(np.int64) + input1_offset
    acc = a * (x2.astype(np.int64) + input2_offset)
    return output_stage(acc, multiplier, shift, output_offset, act_min, act_max).reshape(x1.shape)


def concat_channels(inputs, params) -> np.ndarray:
    """Channel concatenation of NHWC tensors (``mt_concat_s8``, once per input), each input copied or
    requantised to the output's quantisation (``codegen.quant.copy_params``)."""
    parts = []
    for x, p in zip(inputs, params):
        x = np.asarray(x)
        if p["requantize"]:
            x = output_stage(x.astype(np.int64) + p["input_offset"], p["multiplier"], p["shift"], p["output_offset"])
        parts.append(x)
    return np.concatenate(parts, axis=-1).astype(np.int8)


def pad(x, padding, pad_value: int) -> np.ndarray:
    """Constant padding of H and W (``mt_pad_s8``); padding = (top, left, bottom, right)."""
    x = np.asarray(x)
    t, l, b, r = padding
    if min(padding) < 0:
        raise ValueError("padding must be >= 0")
    if not (t or l or b or r):
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + t + b, w + l + r, c), pad_value, x.dtype)
    out[:, t:t + h, l:l + w] = x
    return out


def resize_nearest(x, rows, cols) -> np.ndarray:
    """Nearest-neighbour resize (``mt_resize_nearest_s8``): output (i, j) is input (rows[i], cols[j])."""
    x = np.asarray(x)
    return x[:, np.asarray(rows)][:, :, np.asarray(cols)]
