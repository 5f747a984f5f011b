"""int8 quantisation arithmetic, bit-exact with firmware/kernels/mt_kernels.h.

The scheme (docs/quantisation.md) is TFLite's int8 scheme:

* ``real = scale * (q - zero_point)``;
* weights: per output channel, symmetric (zero point 0), int8 in [-127, 127];
* activations: per tensor, asymmetric int8;
* bias: int32 with scale ``input_scale * weight_scale[c]`` and zero point 0;
* a real rescale factor ``M`` is stored as a Q31 ``multiplier`` in [2^30, 2^31) and a ``shift`` in
  [-31, 30] with ``M ~= multiplier * 2^(shift - 31)``;
* ``requantize(acc, multiplier, shift)`` rounds once (TFLite's TFLITE_SINGLE_ROUNDING, CMSIS-NN's
  CMSIS_NN_USE_SINGLE_ROUNDING): ``(acc * multiplier + 2^(total-1)) >> total`` with ``total = 31 - shift``
  on the exact 64-bit product, ties towards +infinity, saturated to int32.

Every function works on numpy arrays (int64 internally, no float on the integer path) and broadcasts, so
per-channel parameters are plain arrays along the channel axis.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
SHIFT_MIN = -31
SHIFT_MAX = 30
ADD_LEFT_SHIFT = 20  # TFLite's left shift for int8 Add


# --------------------------------------------------------------------------------------------------------------
# float scale -> (multiplier, shift)
# --------------------------------------------------------------------------------------------------------------

def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return ``(multiplier, shift)`` with ``real ~= multiplier * 2**(shift - 31)`` (TFLite QuantizeMultiplier).

    ``multiplier`` is in [2^30, 2^31) (or 0 for ``real == 0`` and for scales below 2^-32, which flush to zero);
    ``shift`` is in [-31, 30]. The mantissa is rounded half away from zero; scales of 2^30 or more saturate
    to ``(2**31 - 1, 30)``. ``real`` is taken as a Python float (double).
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"rescale factor must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2**shift, q in [0.5, 1)
    q_fixed = math.floor(q * 2**31 + 0.5)  # exact: q * 2^31 has at most 22 fraction bits
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < SHIFT_MIN:
        return 0, 0
    if shift > SHIFT_MAX:
        return INT32_MAX, SHIFT_MAX
    return int(q_fixed), int(shift)


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of :func:`quantize_multiplier`: returns int32 arrays ``(multiplier, shift)``."""
    pairs = [quantize_multiplier(r) for r in np.asarray(reals, dtype=np.float64).ravel()]
    m = np.array([p[0] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    s = np.array([p[1] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    return m, s


def effective_scale(input_scale, weight_scale, output_scale):
    """Real rescale of a conv / dense output channel, computed in double from the (float32) scales."""
    return (np.float64(np.float32(input_scale)) * np.asarray(weight_scale, np.float32).astype(np.float64)
            / np.float64(np.float32(output_scale)))


def conv_quant_params(input_scale, weight_scales, output_scale) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(multiplier, shift)`` for a conv / depthwise / dense layer."""
    return quantize_multipliers(effective_scale(input_scale, weight_scales, output_scale))


# --------------------------------------------------------------------------------------------------------------
# The rounding rule (mirrors mt_requantize in firmware/kernels/mt_kernels.h)
# --------------------------------------------------------------------------------------------------------------

def requantize(acc, multiplier, shift) -> np.ndarray:
    """``acc * multiplier * 2^(shift - 31)`` rounded once, exactly as ``mt_requantize`` does::

        total = 31 - shift                                   # 1..62
        sat32((acc * multiplier + 2^(total - 1)) >> total)   # floor: ties round towards +infinity

    ``acc`` and ``multiplier`` must hold int32 values, ``shift`` values in [-31, 30]; they broadcast (per
    channel: the last axis). The product and the sum fit in int64 (|acc * multiplier| <= 2^62). Returns int64
    values in int32 range.
    """
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if np.any((acc < INT32_MIN) | (acc > INT32_MAX)):
        raise ValueError("accumulator outside int32")
    if np.any((m < INT32_MIN) | (m > INT32_MAX)):
        raise ValueError("multiplier outside int32")
    if np.any((s < SHIFT_MIN) | (s > SHIFT_MAX)):
        raise ValueError("shift must be in [-31, 30]")
    total = 31 - s
    r = (acc * m + (np.int64(1) << (total - 1))) >> total
    return np.clip(r, INT32_MIN, INT32_MAX)


def output_stage(acc, multiplier, shift, output_offset, act_min=-128, act_max=127) -> np.ndarray:
    """``clamp(requantize(acc) + output_offset, act_min, act_max)`` as int8 (the MAC kernels' last step)."""
    r = requantize(acc, multiplier, shift) + int(output_offset)
    return np.clip(r, act_min, act_max).astype(np.int8)


# --------------------------------------------------------------------------------------------------------------
# Tensors: float <-> int8
# --------------------------------------------------------------------------------------------------------------

def choose_activation_qparams(rmin: float, rmax: float) -> tuple[float, int]:
    """Per-tensor asymmetric int8 ``(scale, zero_point)`` covering [rmin, rmax] (the range is widened to
    include 0, so 0.0 is exactly representable, which zero padding relies on)."""
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    if rmax == rmin:
        return 1.0, 0
    scale = float(np.float32((rmax - rmin) / 255.0))
    zp = int(round(-128 - rmin / scale))
    return scale, int(np.clip(zp, -128, 127))


def quantize(x, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 with round-half-away-from-zero and saturation."""
    v = np.asarray(x, dtype=np.float64) / float(scale)
    v = np.sign(v) * np.floor(np.abs(v) + 0.5) + int(zero_point)
    return np.clip(v, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point=0) -> np.ndarray:
    """int8 -> float32 (``scale`` may be per channel, broadcasting on the last axis)."""
    return ((np.asarray(q, dtype=np.float32) - np.asarray(zero_point, np.float32))
            * np.asarray(scale, np.float32)).astype(np.float32)


def quantize_weights_per_channel(w, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights: ``scale[c] = max|w[c]| / 127`` and ``q = round(w / scale)`` in
    [-127, 127]. ``axis`` is the output-channel axis. All-zero channels get scale 1.0 (q = 0).
    Returns ``(q int8 with w's shape, scales float32[C])``."""
    w = np.asarray(w, dtype=np.float32)
    axis = axis % w.ndim
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=reduce_axes) if reduce_axes else np.abs(w)
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    v = w.astype(np.float64) / scales.reshape(shape).astype(np.float64)
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8)
    return q, scales


def quantize_bias(b, input_scale: float, weight_scales) -> np.ndarray:
    """int32 bias with scale ``input_scale * weight_scale[c]`` (zero point 0), rounded half away from zero
    and saturated to int32."""
    s = np.float64(np.float32(input_scale)) * np.asarray(weight_scales, np.float32).astype(np.float64)
    v = np.asarray(b, dtype=np.float64) / s
    v = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(v, INT32_MIN, INT32_MAX).astype(np.int32)


def activation_range(kind: str | None, output_scale: float, output_zero_point: int,
                     clip_min: float | None = None, clip_max: float | None = None) -> tuple[int, int]:
    """Fused activation as an int8 clamp ``(act_min, act_max)``: kind None/'none', 'relu', 'relu6' or 'clip'
    (with clip_min / clip_max)."""
    lo, hi = -128, 127
    if kind in (None, "none"):
        return lo, hi
    if kind == "relu":
        clip_min, clip_max = 0.0, None
    elif kind == "relu6":
        clip_min, clip_max = 0.0, 6.0
    elif kind != "clip":
        raise ValueError(f"unknown activation {kind!r}")
    if clip_min is not None:
        lo = max(lo, int(quantize(clip_min, output_scale, output_zero_point)))
    if clip_max is not None:
        hi = min(hi, int(quantize(clip_max, output_scale, output_zero_point)))
    return lo, hi


# --------------------------------------------------------------------------------------------------------------
# Parameters of the non-MAC kernels
# --------------------------------------------------------------------------------------------------------------

def add_params(scale1: float, zp1: int, scale2: float, zp2: int, out_scale: float, out_zp: int,
               act_min: int = -128, act_max: int = 127, left_shift: int = ADD_LEFT_SHIFT) -> dict:
    """Parameters of ``mt_add_s8`` (TFLite's int8 Add): both inputs are rescaled to ``2 * max(scale1, scale2)``
    with 20 extra fraction bits, summed, then rescaled to the output. Keys match ``mt_add_params``."""
    s1, s2, so = (float(np.float32(s)) for s in (scale1, scale2, out_scale))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left_shift) * so))
    return dict(input1_offset=-int(zp1), input1_multiplier=m1, input1_shift=sh1,
                input2_offset=-int(zp2), input2_multiplier=m2, input2_shift=sh2,
                left_shift=int(left_shift), output_offset=int(out_zp),
                output_multiplier=mo, output_shift=sho, act_min=int(act_min), act_max=int(act_max))


def copy_params(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> dict:
    """Parameters of ``mt_concat_s8`` for one input: a plain copy when the quantisation is the same, else
    ``clamp(requantize(x - in_zp, M) + out_zp)`` with ``M = in_scale / out_scale``."""
    same = float(np.float32(in_scale)) == float(np.float32(out_scale)) and int(in_zp) == int(out_zp)
    m, s = (0, 0) if same else quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    return dict(requantize=int(not same), input_offset=-int(in_zp), output_offset=int(out_zp), multiplier=m, shift=s)


def avg_pool_multipliers(input_scale: float, output_scale: float, kernel: tuple[int, int],
                         num_multipliers: int = 1, count_include_pad: bool = False):
    """Requantisation table of ``mt_avg_pool_s8``: entry ``i`` serves windows with ``KH*KW - i`` in-bounds taps
    and encodes ``input_scale / (output_scale * divisor)``, divisor = in-bounds taps (ONNX default) or KH*KW
    (``count_include_pad``). Returns int32 arrays ``(multiplier, shift)`` of length ``num_multipliers``."""
    area = int(kernel[0]) * int(kernel[1])
    if not 1 <= num_multipliers <= area:
        raise ValueError("num_multipliers must be in [1, KH*KW]")
    ratio = float(np.float32(input_scale)) / float(np.float32(output_scale))
    divisors = [area if count_include_pad else area - i for i in range(num_multipliers)]
    return quantize_multipliers([ratio / d for d in divisors])


def avg_pool_num_multipliers(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                             padding: tuple[int, int, int, int]) -> int:
    """Length of the table ``mt_avg_pool_s8`` needs: 1 + the most padded taps any window holds.
    padding is (top, left, bottom, right)."""
    def min_valid(n, k, s, pa, pb):
        out = (n + pa + pb - k) // s + 1
        return min(min(o * s - pa + k, n) - max(o * s - pa, 0) for o in range(out))
    vh = min_valid(in_hw[0], kernel[0], stride[0], padding[0], padding[2])
    vw = min_valid(in_hw[1], kernel[1], stride[1], padding[1], padding[3])
    if vh <= 0 or vw <= 0:
        raise ValueError("a pooling window lies entirely in the padding")
    return kernel[0] * kernel[1] - vh * vw + 1
