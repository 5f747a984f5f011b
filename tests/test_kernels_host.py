"""firmware/kernels built with the host gcc vs the numpy golden model (codegen.int8_ops), bit for bit.

Both kernel paths are checked: "ref" (plain C) and "dsp" (the SIMD path, with a C model of the ACLE
intrinsics in tests/host_c/acle). The real instructions are checked on QEMU by test_kernels_qemu.py."""
from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import mt_host_lib as H
import numpy as np
import pytest

from codegen import int8_ops as R
from codegen import quant as Q

I32_MIN, I32_MAX = Q.INT32_MIN, Q.INT32_MAX
VARIANTS = ("ref", "dsp")


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mt_host")
    return {v: H.Kernels(H.build(d, v)) for v in VARIANTS}


# ---------------------------------------------------------------------------------------------------------------
# The rounding rule
# ---------------------------------------------------------------------------------------------------------------

def single_round(acc: int, m: int, shift: int) -> int:
    """The rule, transcribed literally with Python's unbounded integers (>> is floor division by 2^total)."""
    total = 31 - shift
    r = (acc * m + (1 << (total - 1))) >> total
    return min(max(r, I32_MIN), I32_MAX)


HAND_REQUANT = [  # (acc, multiplier, shift, expected): worked by hand from the exact real value
    (100, 1 << 30, 0, 50),        # x 0.5
    (100, 1 << 30, -1, 25),       # x 0.25
    (5, 1 << 30, -1, 1),          # 1.25 -> 1 (TFLite's double rounding: 2.5 -> 3, then 1.5 -> 2)
    (-5, 1 << 30, -1, -1),        # -1.25 -> -1
    (6, 1 << 30, -2, 1),          # 0.75 -> 1
    (2, 1 << 30, -1, 1),          # 0.5: ties round towards +infinity ...
    (-2, 1 << 30, -1, 0),         # -0.5 -> 0 (... not away from zero)
    (3, 1 << 30, 0, 2),           # 1.5 -> 2
    (-3, 1 << 30, 0, -1),         # -1.5 -> -1
    (-1, 1 << 30, 0, 0),          # -0.5 -> 0
    (19, 1 << 30, -4, 1),         # 19/32 = 0.59 -> 1
    (-17, 1 << 30, -4, -1),       # -17/32 = -0.53 -> -1
    (3, 1 << 30, 1, 3),           # x 1.0
    (1 << 29, 1 << 30, 2, 1 << 30),          # x 2.0: fits
    (1 << 29, 1 << 30, 3, I32_MAX),          # x 4.0: 2^31 saturates
    (-(1 << 29), 1 << 30, 3, I32_MIN),       # -2^31 is exact, no saturation
    (-(1 << 29) - 1, 1 << 30, 3, I32_MIN),   # saturates
    (1, (1 << 30) + 1, 30, (1 << 29) + 1),   # total = 1: 2^29 + 0.5 ties up
    (-1, (1 << 30) + 1, 30, -(1 << 29)),     # -2^29 - 0.5 ties up
    (I32_MAX, I32_MAX, 30, I32_MAX),         # the largest product, smallest divisor: saturates
    (I32_MIN, I32_MAX, 30, I32_MIN),
    (I32_MAX, I32_MAX, 0, I32_MAX - 1),      # (2^31-1)^2 / 2^31 = 2^31 - 2 + 2^-31
    (I32_MIN, I32_MAX, 0, -I32_MAX),         # -2^31 (2^31-1) / 2^31 exactly
    (I32_MAX, I32_MAX, -31, 1),              # (2^31-1)^2 / 2^62 = 1 - 2^-30 + 2^-62 -> 1
    (I32_MIN, I32_MAX, -31, -1),             # -1 + 2^-31 -> -1
    (I32_MIN, 1 << 30, -31, 0),              # -2^61 / 2^62 = -0.5 ties up
    (I32_MAX, 1 << 30, -31, 0),              # 0.4999999998 -> 0
    (I32_MIN, I32_MIN, 0, I32_MAX),          # outside the kernels' contract (multiplier < 0) but defined:
    (I32_MIN, I32_MIN, -31, 1),              # 2^62 / 2^31 = 2^31 saturates; 2^62 / 2^62 = 1
    (1000, 0, 0, 0),              # multiplier 0 (flushed scale)
    (I32_MIN, 0, 30, 0),
]


@pytest.mark.parametrize("acc,m,shift,expected", HAND_REQUANT)
def test_requantize_hand(libs, acc, m, shift, expected):
    assert single_round(acc, m, shift) == expected
    assert int(Q.requantize(acc, m, shift)) == expected
    assert libs["ref"].requantize(acc, m, shift) == expected
    assert libs["dsp"].requantize(acc, m, shift) == expected


REQUANT_EDGES = [I32_MIN, I32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3, 1 << 30,
                 (1 << 30) + 1, I32_MAX - 1, I32_MAX]


def test_requantize_matches_formula(libs):
    """numpy and C (both paths) against the literal formula: random int32 operands (any sign; the function is
    defined for all of them), every edge pair, at every shift in [-31, 30]."""
    rng = np.random.default_rng(1)
    n = 600
    acc = np.concatenate([rng.integers(I32_MIN, I32_MAX, n, endpoint=True),          # anything
                          rng.integers(-(1 << 20), 1 << 20, n),                          # realistic accumulators
                          np.repeat(REQUANT_EDGES, len(REQUANT_EDGES))])
    m = np.concatenate([rng.integers(I32_MIN, I32_MAX, n, endpoint=True),
                        rng.integers(1 << 30, I32_MAX, n, endpoint=True),                # the kernels' range
                        np.tile(REQUANT_EDGES, len(REQUANT_EDGES))])
    for shift in range(-31, 31):
        got = Q.requantize(acc, m, shift)
        want = [single_round(int(a), int(b), shift) for a, b in zip(acc, m)]
        assert got.tolist() == want, shift
        step = 1 if shift in (-31, -1, 0, 1, 30) else 7
        for i in range(0, len(acc), step):
            for v in VARIANTS:
                assert libs[v].requantize(int(acc[i]), int(m[i]), shift) == want[i], (v, acc[i], m[i], shift)


def test_requantize_ties_round_up(libs):
    """Exact ties (fraction exactly .5) at every shift and of both signs round towards +infinity.
    A tie is acc * m = odd * 2^(total - 1): take m = odd * 2^a in [2^30, 2^31) and acc = odd * 2^b."""
    rng = np.random.default_rng(7)
    for shift in range(-31, 31):
        total = 31 - shift
        a = min(30, total - 1)
        b = total - 1 - a                      # 0..31
        for _ in range(12):
            m = (int(rng.integers(1 << (30 - a), 1 << (31 - a))) | 1) << a
            if b == 31:
                acc = I32_MIN
            else:
                acc = int(rng.choice([-1, 1])) * (2 * int(rng.integers(0, 1 << (30 - b))) + 1) << b
            p = acc * m
            assert (1 << 30) <= m <= I32_MAX and I32_MIN <= acc <= I32_MAX and p % (1 << total) == 1 << (total - 1)
            want = min(max((p >> total) + 1, I32_MIN), I32_MAX)   # floor(x) + 1 = x + 1/2: towards +infinity
            assert single_round(acc, m, shift) == want
            assert int(Q.requantize(acc, m, shift)) == want
            assert libs["ref"].requantize(acc, m, shift) == want
            assert libs["dsp"].requantize(acc, m, shift) == want


def test_quantize_multiplier():
    assert Q.quantize_multiplier(0.0) == (0, 0)
    assert Q.quantize_multiplier(0.5) == (1 << 30, 0)
    assert Q.quantize_multiplier(1.0) == (1 << 30, 1)
    assert Q.quantize_multiplier(0.75) == (3 << 29, 0)
    assert Q.quantize_multiplier(0.1) == (1717986918, -3)         # TFLite's value
    assert Q.quantize_multiplier(1 - 2**-40) == (1 << 30, 1)       # mantissa rounds up to 1.0
    assert Q.quantize_multiplier(2**-33) == (0, 0)                 # below 2^-32: flushed
    assert Q.quantize_multiplier(2**-32) == (1 << 30, -31)
    assert Q.quantize_multiplier(2.0**40) == (I32_MAX, 30)          # saturated
    with pytest.raises(ValueError):
        Q.quantize_multiplier(-1.0)
    rng = np.random.default_rng(2)
    for r in np.exp(rng.uniform(np.log(1e-9), np.log(1e3), 500)):
        m, s = Q.quantize_multiplier(r)
        assert (1 << 30) <= m < (1 << 31) and -31 <= s <= 30
        assert abs(m * 2.0 ** (s - 31) - r) <= r * 2**-30


def test_requantize_is_exact_rounding_of_the_quantised_scale():
    """Single rounding is round-half-up of the exact product acc * multiplier * 2^(shift - 31) (exact in float64
    here: < 2^52), so within 0.5 LSB of the real scale's product up to the multiplier's 2^-31 error."""
    rng = np.random.default_rng(3)
    reals = np.exp(rng.uniform(np.log(1e-5), np.log(0.9), 3000))
    acc = rng.integers(-(1 << 20), 1 << 20, 3000)
    m, s = Q.quantize_multipliers(reals)
    got = Q.requantize(acc, m, s)
    exact = acc * (m.astype(np.float64) * 2.0 ** (s.astype(np.float64) - 31))
    assert np.array_equal(got, np.floor(exact + 0.5))
    assert np.all(np.abs(got - acc * reals) <= 0.5 + np.abs(acc) * reals * 2.0**-30)


def test_weight_and_bias_helpers():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(8, 3, 3, 5)).astype(np.float32)
    w[3] = 0
    q, sc = Q.quantize_weights_per_channel(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127 and sc.shape == (8,) and sc[3] == 1.0
    assert np.all(np.abs(q.reshape(8, -1)).max(axis=1)[[0, 1, 2, 4, 5, 6, 7]] == 127)
    assert np.allclose(q * sc[:, None, None, None], w, atol=sc.max() / 2 + 1e-7)
    b = Q.quantize_bias([1.0, -1.0], 0.5, [0.25, 0.1])
    assert b.tolist() == [8, -20]
    scale, zp = Q.choose_activation_qparams(-1.0, 3.0)
    assert Q.quantize(0.0, scale, zp) == zp
    assert Q.activation_range("relu", scale, zp) == (zp, 127)
    lo, hi = Q.activation_range("relu6", 0.05, -128)
    assert (lo, hi) == (-128, -8)


# ---------------------------------------------------------------------------------------------------------------
# Kernels vs numpy, randomised
# ---------------------------------------------------------------------------------------------------------------

def _rand_quant(rng, n, extreme=False):
    if extreme and rng.random() < 0.5:
        m = rng.choice([0, 1 << 30, I32_MAX, (1 << 30) + 1], n).astype(np.int64)
        s = rng.choice([-31, -20, -1, 0, 1, 5], n).astype(np.int64)
        return m, s
    return Q.quantize_multipliers(np.exp(rng.uniform(np.log(1e-4), np.log(0.2), n)))


def _rand_common(rng, extreme):
    act_min, act_max = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.random() < 0.4 else (-128, 127)
    return dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
                act_min=act_min, act_max=act_max)


def _check(libs, name, args, kwargs, expect_ok=True):
    try:
        ref = getattr(R, name)(*args, **kwargs)
    except ValueError:
        ref = None
    for v, lib in libs.items():
        st, out = getattr(lib, name)(*args, **kwargs)
        if ref is None:
            assert st == H.MT_ARG_ERROR, (v, name, kwargs)
        else:
            assert st == H.MT_SUCCESS, (v, name, kwargs)
            if not np.array_equal(out, ref):
                idx = np.argwhere(out != ref)[0]
                raise AssertionError(f"{v} {name}: {np.sum(out != ref)} mismatches, first at {tuple(idx)}: "
                                     f"C {out[tuple(idx)]} numpy {ref[tuple(idx)]}; {kwargs}")
    if expect_ok:
        assert ref is not None
    return ref


def test_conv_random(libs):
    rng = np.random.default_rng(10)
    done = 0
    while done < 160:
        n, h = int(rng.integers(1, 3)), int(rng.integers(1, 7))
        if rng.random() < 0.3:
            h = 1  # 1-D
        w, ci, co = int(rng.integers(1, 12)), int(rng.integers(1, 11)), int(rng.integers(1, 10))
        kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, 6))
        pad = tuple(int(v) for v in rng.integers(0, 3, 4)) if h > 1 else (0, int(rng.integers(0, 3)), 0,
                                                                            int(rng.integers(0, 3)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        if h + pad[0] + pad[2] < kh or w + pad[1] + pad[3] < kw:
            continue
        x = rng.integers(-128, 128, (n, h, w, ci), dtype=np.int8)
        wt = rng.integers(-127, 128, (co, kh, kw, ci), dtype=np.int8)
        bias = rng.integers(-20000, 20000, co).astype(np.int32) if rng.random() < 0.8 else None
        m, s = _rand_quant(rng, co, extreme=True)
        _check(libs, "conv2d", (x, wt, bias), dict(multiplier=m, shift=s, stride=stride, padding=pad,
                                                   **_rand_common(rng, True)))
        done += 1


def test_conv_saturating_accumulators(libs):
    """Extreme inputs and offsets: every product at its maximum, outputs saturate both ways."""
    for val, off in ((-128, -127), (127, 128), (-128, 128)):
        x = np.full((1, 3, 5, 7), val, np.int8)
        wt = np.full((3, 3, 3, 7), -127, np.int8)
        wt[1] = 127
        _check(libs, "conv2d", (x, wt, np.array([I32_MAX - 10**7, 0, I32_MIN + 10**7], np.int32)),
               dict(input_offset=off, output_offset=5, multiplier=[I32_MAX] * 3, shift=[0, 3, -31],
                    padding=(1, 1, 1, 1)))


def test_conv1d_helper_matches_conv2d():
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (2, 17, 3), dtype=np.int8)
    w = rng.integers(-127, 128, (5, 5, 3), dtype=np.int8)
    kw = dict(input_offset=3, output_offset=-4, multiplier=1 << 30, shift=-8)
    a = R.conv1d(x, w, None, padding=(2, 2), stride=2, **kw)
    b = R.conv2d(x[:, None], w[:, None], None, padding=(0, 2, 0, 2), stride=(1, 2), **kw)[:, 0]
    assert a.shape == (2, 9, 5) and np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# 1x1 convolutions: mt_conv_s8's DSP path takes its own route for KH = KW = 1 without padding when C_in >= 4 and
# C_out >= 2 (input read in place, filter rows widened per output-channel pair); the rest goes the generic way
# ---------------------------------------------------------------------------------------------------------------

CONV_1X1_SHAPES = [  # (N, H, W, C_in, C_out): the HAR model's exit-head 1x1 convs, and one odd in every dimension
    (1, 1, 64, 16, 32), (1, 1, 32, 32, 32), (1, 1, 16, 64, 32), (1, 1, 33, 17, 19)]


def _model_like_quant(rng, c_in, c_out):
    return Q.quantize_multipliers(50.0 / (np.sqrt(c_in) * 74.0 * 74.0) * np.exp(rng.uniform(-0.7, 0.7, c_out)))


@pytest.mark.parametrize("shape", CONV_1X1_SHAPES)
def test_conv_1x1_model_shapes(libs, shape):
    n, h, w, ci, co = shape
    rng = np.random.default_rng(100 * ci + co)
    x = rng.integers(-128, 128, (n, h, w, ci), dtype=np.int8)
    wt = rng.integers(-127, 128, (co, 1, 1, ci), dtype=np.int8)
    bias = rng.integers(-3000, 3000, co).astype(np.int32)
    m, s = _model_like_quant(rng, ci, co)
    _check(libs, "conv2d", (x, wt, bias), dict(input_offset=5, output_offset=-3, multiplier=m, shift=s, act_min=-3))
    # every product at its extreme, biases near the int32 limits (the bias with the input offset folded in
    # wraps like the accumulator), outputs saturating both ways; all shifts < 0 (the fast steps) or mixed
    b = np.where(np.arange(co) % 2, I32_MAX - 4 * 10**6, I32_MIN + 4 * 10**6).astype(np.int32)
    for xv, off, wv in ((127, 128, 127), (-128, -127, -127), (-128, 128, 127)):
        for shifts in (np.full(co, -1), np.resize([-31, 0, 3, -8], co)):
            _check(libs, "conv2d", (np.full_like(x, xv), np.full_like(wt, wv), b),
                   dict(input_offset=off, output_offset=7, multiplier=[I32_MAX] * co, shift=shifts))


def test_conv_1x1_random(libs):
    """Every route of the 1x1 path: C_in a multiple of 16 (the fast steps), of 4 only, or not (the tail word);
    odd and even C_out and position counts; 1-D and 2-D; strides (runs per output row); zero points; clamps;
    shifts >= 0 (the general steps); no bias; and the shapes that stay on the generic path (C_in < 4,
    C_out = 1)."""
    rng = np.random.default_rng(19)
    for _ in range(300):
        n = int(rng.integers(1, 3))
        h = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
        w = int(rng.integers(1, 24))
        ci = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 17, 18, 19, 24, 31, 32, 33, 40, 64, 70]))
        co = int(rng.integers(1, 20)) if rng.random() < 0.7 else int(rng.integers(20, 40))
        stride = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        x = rng.integers(-128, 128, (n, h, w, ci), dtype=np.int8)
        wt = rng.integers(-127, 128, (co, 1, 1, ci), dtype=np.int8)
        bias = rng.integers(-20000, 20000, co).astype(np.int32) if rng.random() < 0.8 else None
        m, s = _rand_quant(rng, co, extreme=True) if rng.random() < 0.5 else _model_like_quant(rng, ci, co)
        _check(libs, "conv2d", (x, wt, bias), dict(multiplier=m, shift=s, stride=stride, **_rand_common(rng, True)))


_GUARDED_MAPS = []  # the mappings behind _guarded() arrays (a numpy view of ctypes memory does not keep them)


def _guarded(nbytes: int, dtype, shape, guard_before: bool) -> np.ndarray:
    """An array of nbytes that starts right after (guard_before) or ends right before an inaccessible page."""
    page = mmap.PAGESIZE
    span = -(-max(nbytes, 1) // page) * page
    m = mmap.mmap(-1, span + 2 * page)
    anchor = ctypes.c_char.from_buffer(m)
    _GUARDED_MAPS.append((m, anchor))
    base = ctypes.addressof(anchor)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base, page, 0) == 0 and libc.mprotect(base + page + span, page, 0) == 0
    start = base + page if guard_before else base + page + span - nbytes
    return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(start), dtype=dtype).reshape(shape)


def _touches_only_its_arrays(lib, op, x, wt, bias, kw, size):
    """Runs `lib`'s `op` with input, filter, scratch (`size` bytes) and output each against an
    inaccessible page, on one side and then the other, in a child process (a stray access kills it, not the test
    run), and asserts the child computed numpy's result."""
    expected = getattr(R, op)(x, wt, bias, **kw)
    for guard_before in (False, True):
        pid = os.fork()
        if pid == 0:  # child: report through the exit status only
            code = 3
            try:
                gx = _guarded(x.nbytes, np.int8, x.shape, guard_before)
                gw = _guarded(wt.nbytes, np.int8, wt.shape, guard_before)
                gs = _guarded(size, np.uint8, (size,), guard_before)
                gx[...] = x
                gw[...] = wt
                if op == "conv2d":
                    go = _guarded(expected.nbytes, np.int8, expected.shape, guard_before)
                    st, out = lib.conv2d(gx, gw, bias, scratch_buf=gs, out=go, **kw)
                else:
                    st, out = lib.depthwise_conv2d(gx, gw, bias, scratch_buf=gs, **kw)
                code = 0 if st == H.MT_SUCCESS and np.array_equal(out, expected) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status), f"guard_before={guard_before}: killed by signal {os.WTERMSIG(status)}"
        assert os.WEXITSTATUS(status) == 0, f"guard_before={guard_before}: exit status {os.WEXITSTATUS(status)}"


@pytest.mark.parametrize("shape,kernel,stride,pad", [
    ((1, 1, 33, 17, 19), (1, 1), (1, 1), (0, 0, 0, 0)), ((1, 1, 64, 16, 32), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((2, 3, 5, 6, 3), (1, 1), (2, 2), (0, 0, 0, 0)), ((1, 1, 9, 7, 2), (1, 1), (1, 3), (0, 0, 0, 0)),
    ((1, 5, 7, 8, 5), (3, 3), (1, 1), (1, 1, 1, 1)), ((1, 6, 9, 12, 6), (3, 3), (2, 2), (0, 0, 1, 1)),
    ((1, 7, 7, 3, 16), (3, 3), (1, 1), (1, 1, 1, 1)), ((1, 1, 20, 3, 16), (1, 5), (1, 1), (0, 2, 0, 2))])
def test_conv_touches_only_its_arrays(libs, shape, kernel, stride, pad):
    """The DSP passes read no byte outside the input and the filter (tail words are the rows' last 4 bytes, band
    and im2col reads stay inside the rows), write none outside the output, and need no more scratch than the
    size query returns."""
    n, h, w, ci, co = shape
    rng = np.random.default_rng(ci + co)
    x = rng.integers(-128, 128, (n, h, w, ci), dtype=np.int8)
    wt = rng.integers(-127, 128, (co, *kernel, ci), dtype=np.int8)
    bias = rng.integers(-3000, 3000, co).astype(np.int32)
    m, s = _model_like_quant(rng, ci * kernel[0] * kernel[1], co)
    size = libs["dsp"].lib.mt_conv_s8_get_buffer_size(ctypes.byref(H.Dims(n, h, w, ci)),
                                                       ctypes.byref(H.Dims(co, *kernel, ci)))
    _touches_only_its_arrays(libs["dsp"], "conv2d", x, wt, bias, dict(input_offset=-9, output_offset=4, multiplier=m, shift=s,
                                                         stride=stride, padding=pad), size)


@pytest.mark.parametrize("shape,stride", [((1, 5, 7, 8), (1, 1)), ((2, 6, 5, 13), (1, 1)), ((1, 7, 8, 12), (2, 2))])
def test_depthwise_touches_only_its_arrays(libs, shape, stride):
    n, h, w, c = shape
    rng = np.random.default_rng(c)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    wt = rng.integers(-127, 128, (3, 3, c), dtype=np.int8)
    m, s = _model_like_quant(rng, 9, c)
    size = libs["dsp"].lib.mt_depthwise_conv_s8_get_buffer_size(ctypes.byref(H.Dims(*shape)),
                                                                 ctypes.byref(H.Dims(1, 3, 3, c)))
    assert size > 0
    _touches_only_its_arrays(libs["dsp"], "depthwise_conv2d", x, wt, None, dict(input_offset=7, output_offset=-5, multiplier=m,
                                                                   shift=s, stride=stride, padding=(1, 1, 1, 1)),
                             size)


def test_depthwise_random(libs):
    rng = np.random.default_rng(12)
    done = 0
    while done < 120:
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 10))
        ci, mult = int(rng.integers(1, 13)), int(rng.choice([1, 1, 1, 2, 3]))
        kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, 5))
        pad = tuple(int(v) for v in rng.integers(0, 3, 4))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if h + pad[0] + pad[2] < kh or w + pad[1] + pad[3] < kw:
            continue
        co = ci * mult
        x = rng.integers(-128, 128, (n, h, w, ci), dtype=np.int8)
        wt = rng.integers(-127, 128, (kh, kw, co), dtype=np.int8)
        bias = rng.integers(-20000, 20000, co).astype(np.int32) if rng.random() < 0.8 else None
        m, s = _rand_quant(rng, co, extreme=True)
        _check(libs, "depthwise_conv2d", (x, wt, bias), dict(multiplier=m, shift=s, ch_mult=mult, stride=stride,
                                                             padding=pad, **_rand_common(rng, True)))
        done += 1


def test_depthwise_without_scratch(libs):
    """A caller that passes no scratch (ctx {NULL, 0}) still gets the exact result (the per-pixel DSP path)."""
    rng = np.random.default_rng(21)
    x = rng.integers(-128, 128, (1, 6, 7, 12), dtype=np.int8)
    wt = rng.integers(-127, 128, (3, 3, 12), dtype=np.int8)
    m, s = _model_like_quant(rng, 9, 12)
    kw = dict(input_offset=-9, output_offset=4, multiplier=m, shift=s, padding=(1, 1, 1, 1))
    for lib in libs.values():
        st, out = lib.depthwise_conv2d(x, wt, None, scratch=0, **kw)
        assert st == H.MT_SUCCESS and np.array_equal(out, R.depthwise_conv2d(x, wt, None, **kw))


def test_pass_cases_on_host(libs):
    """The randomised cases aimed at the DSP passes (kernel_harness.dsp_pass_cases: band and im2col convs,
    depthwise shapes, requantisation edges) through the C passes of the host build."""
    from mcu_train.bench.kernel_harness import dsp_pass_cases
    for case in dsp_pass_cases(seed=11, count=60):
        d = case.data()
        common = dict(input_offset=case.input_offset, output_offset=case.output_offset, multiplier=case.multiplier,
                      shift=case.shift, stride=case.stride, padding=case.padding, act_min=case.act_min,
                      act_max=case.act_max)
        bias = None if case.bias is None else np.asarray(case.bias, np.int32)
        w = d["w"] if case.op == "conv" else d["w"].reshape(case.filter_dims[1:])
        _check(libs, "conv2d" if case.op == "conv" else "depthwise_conv2d", (d["x"], w, bias), common)


def test_scratch_sizes_match_the_compiler(libs):
    """codegen.lower mirrors the kernels' scratch size queries (the planner reserves what they will ask for)."""
    from codegen.lower import conv_scratch_bytes, dwconv_scratch_bytes
    lib = libs["dsp"].lib
    rng = np.random.default_rng(22)
    for _ in range(300):
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        c_in, c_out = int(rng.integers(1, 80)), int(rng.integers(1, 80))
        kh, kw = int(rng.integers(1, 11)), int(rng.integers(1, 6))
        idims, fdims = H.Dims(n, h, w, c_in), H.Dims(c_out, kh, kw, c_in)
        assert lib.mt_conv_s8_get_buffer_size(ctypes.byref(idims), ctypes.byref(fdims)) == \
            conv_scratch_bytes((n, h, w, c_in), kh, kw, c_out, dsp=True)
        mult = int(rng.choice([1, 1, 2]))
        ddims = H.Dims(1, kh, kw, c_in * mult)
        assert lib.mt_depthwise_conv_s8_get_buffer_size(ctypes.byref(idims), ctypes.byref(ddims)) == \
            dwconv_scratch_bytes((n, h, w, c_in), kh, kw, c_in * mult, dsp=True)
        assert libs["ref"].lib.mt_conv_s8_get_buffer_size(ctypes.byref(idims), ctypes.byref(fdims)) == 0


def test_fully_connected_random(libs):
    rng = np.random.default_rng(13)
    for _ in range(120):
        n, k, m = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 20))
        x = rng.integers(-128, 128, (n, k), dtype=np.int8)
        wt = rng.integers(-127, 128, (m, k), dtype=np.int8)
        bias = rng.integers(-20000, 20000, m).astype(np.int32) if rng.random() < 0.8 else None
        mm, s = _rand_quant(rng, m, extreme=True)
        _check(libs, "fully_connected", (x, wt, bias), dict(multiplier=mm, shift=s, **_rand_common(rng, True)))


def _random_pool_cases(rng, count):
    """`count` random (x, kernel, stride, padding) pooling cases whose windows fit the padded input."""
    done = 0
    while done < count:
        n, h, w, c = (int(v) for v in (rng.integers(1, 3), rng.integers(1, 8), rng.integers(1, 10),
                                       rng.integers(1, 14)))
        kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, 4))
        pad = (int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if h + pad[0] + pad[2] < kh or w + pad[1] + pad[3] < kw:
            continue
        yield rng.integers(-128, 128, (n, h, w, c), dtype=np.int8), (kh, kw), stride, pad
        done += 1


def test_max_pool_random(libs):
    rng = np.random.default_rng(14)
    for x, (kh, kw), stride, pad in _random_pool_cases(rng, 120):
        c_ = _rand_common(rng, False)
        _check(libs, "max_pool2d", (x, (kh, kw), stride, pad), dict(act_min=c_["act_min"], act_max=c_["act_max"]))


def test_avg_pool_random(libs):
    rng = np.random.default_rng(15)
    for x, (kh, kw), stride, pad in _random_pool_cases(rng, 120):
        nm = Q.avg_pool_num_multipliers(x.shape[1:3], (kh, kw), stride, pad)
        m, s = Q.avg_pool_multipliers(rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.1), (kh, kw), nm,
                                      count_include_pad=bool(rng.random() < 0.3))
        _check(libs, "avg_pool2d", (x, (kh, kw), stride, pad), dict(multiplier=m, shift=s,
                                                                   **_rand_common(rng, False)))


@pytest.mark.parametrize("shape", [(1, 1, 128, 64), (2, 1, 7, 5), (1, 4, 4, 33), (1, 16, 17, 3), (1, 1, 300, 6)])
def test_global_avg_pool(libs, shape):
    """GlobalAveragePool / ReduceMean: window = whole image (300 taps also exercises the >256-tap path)."""
    rng = np.random.default_rng(16)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    m, s = Q.avg_pool_multipliers(0.05, 0.03, shape[1:3])
    ref = _check(libs, "avg_pool2d", (x, shape[1:3], (1, 1)),
                 dict(input_offset=7, output_offset=-3, multiplier=m, shift=s))
    assert np.array_equal(ref, R.global_avg_pool(x, input_offset=7, output_offset=-3, multiplier=m, shift=s))
    real = (x.astype(np.float64) - (-7)).mean(axis=(1, 2), keepdims=True) * 0.05 / 0.03 - 3
    assert np.all(np.abs(ref - np.clip(real, -128, 127)) <= 1.0)


def test_add_random(libs):
    rng = np.random.default_rng(17)
    for _ in range(60):
        size = int(rng.integers(1, 70))
        s1, s2, so = rng.uniform(0.005, 0.2, 3)
        zp1, zp2, zpo = (int(v) for v in rng.integers(-128, 128, 3))
        c_ = _rand_common(rng, False)
        p = Q.add_params(s1, zp1, s2, zp2, so, zpo, c_["act_min"], c_["act_max"])
        x1 = rng.integers(-128, 128, size, dtype=np.int8)
        x2 = rng.integers(-128, 128, size, dtype=np.int8)
        ref = _check(libs, "add", (x1, x2), p)
        real = (s1 * (x1.astype(np.float64) - zp1) + s2 * (x2.astype(np.float64) - zp2)) / so + zpo
        assert np.all(np.abs(ref - np.clip(real, c_["act_min"], c_["act_max"])) <= 1.0)


def test_relu_random(libs):
    rng = np.random.default_rng(18)
    for _ in range(30):
        x = rng.integers(-128, 128, int(rng.integers(1, 50)), dtype=np.int8)
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        _check(libs, "relu", (x,), dict(act_min=lo, act_max=hi))


# ---------------------------------------------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------------------------------------------

def test_argument_errors(libs):
    x = np.zeros((1, 4, 4, 3), np.int8)
    w = np.zeros((2, 3, 3, 3), np.int8)
    ok = dict(input_offset=0, output_offset=0, multiplier=1 << 30, shift=-4)
    for v, lib in libs.items():
        assert lib.conv2d(x, w, **ok)[0] == H.MT_SUCCESS
        assert lib.conv2d(x, w, **{**ok, "input_offset": 129})[0] == H.MT_ARG_ERROR
        assert lib.conv2d(x, w, **{**ok, "shift": 31})[0] == H.MT_ARG_ERROR
        assert lib.conv2d(x, w, **ok, act_min=10, act_max=5)[0] == H.MT_ARG_ERROR
        assert lib.conv2d(x, w, **ok, out_hw=(3, 2))[0] == H.MT_ARG_ERROR   # wrong output shape
        assert lib.conv2d(x, w, **ok, stride=(0, 1))[0] == H.MT_ARG_ERROR
        assert lib.max_pool2d(x, (2, 2), (1, 1), (2, 0, 0, 0))[0] == H.MT_ARG_ERROR  # a window all padding
        m, s = Q.avg_pool_multipliers(1.0, 1.0, (3, 3), 1)
        assert lib.avg_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1), input_offset=0, output_offset=0,
                              multiplier=m, shift=s)[0] == H.MT_ARG_ERROR  # table too short for padded windows
        assert lib.add(x, x, **{**Q.add_params(0.1, 0, 0.1, 0, 0.1, 0), "left_shift": 21})[0] == H.MT_ARG_ERROR
        assert lib.relu(x, act_min=1, act_max=0)[0] == H.MT_ARG_ERROR
    dsp = libs["dsp"]
    assert dsp.conv2d(x, w, **ok, scratch=0)[0] == H.MT_ARG_ERROR  # DSP path needs its scratch buffer
    assert libs["ref"].conv2d(x, w, **ok, scratch=0)[0] == H.MT_SUCCESS


# ---------------------------------------------------------------------------------------------------------------
# Warning-free on every supported core
# ---------------------------------------------------------------------------------------------------------------

CORES = {
    "cortex-m0plus": ["-mfloat-abi=soft"],
    "cortex-m3": ["-mfloat-abi=soft"],
    "cortex-m4": ["-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m7": ["-mfloat-abi=hard", "-mfpu=fpv5-d16"],
    "cortex-m33": ["-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"],
}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc (make setup)")
def test_kernels_compile_warning_free_for_every_core(tmp_path):
    """-Wall -Wextra -Werror for M0+ (soft), M3 (soft), M4 / M7 / M33 (hard float), both paths."""
    srcs = sorted(str(p) for p in H.KERNELS.glob("mt_*.c"))
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]

    def build(job):
        (cpu, extra), ref = job
        out = tmp_path / f"{cpu}{'-ref' if ref else ''}"
        out.mkdir()
        cmd = ["arm-none-eabi-gcc", "-mthumb", f"-mcpu={cpu}", *extra, *flags, f"-I{H.KERNELS}", "-c", *srcs]
        r = subprocess.run(cmd + (["-DMT_FORCE_REFERENCE"] if ref else []), cwd=out, capture_output=True,
                           text=True)
        return cpu, ref, r.returncode, r.stderr

    jobs = [(c, ref) for c in CORES.items() for ref in (False, True)]
    with ThreadPoolExecutor(4) as pool:
        for cpu, ref, code, err in pool.map(build, jobs):
            assert code == 0 and not err.strip(), f"{cpu} {'reference' if ref else 'default'}:\n{err}"
