"""Arithmetic of the on-device trainer, written so numpy and firmware/fmath.c give identical bits: the float32
scalars, and the fixed-point helpers of the integer backward pass.

Rules both sides follow (docs/training.md):
- integers are exact; every float value is float32 and every operation rounds once (the firmware is built with
  -ffp-contract=off, so no fused multiply-add; numpy's elementwise float32 ufuncs round each operation);
- sums run sequentially in a fixed order (never numpy's pairwise reduction);
- exp and log are our own routines (Cephes' float polynomials with explicit evaluation order), since libm's
  differ between newlib, glibc and numpy.
"""
import numpy as np

F = np.float32
_LOG2E = F(1.44269504088896341)
_LN2_HI = F(0.693359375)
_LN2_LO = F(-2.12194440e-4)
_EXP_P = [F(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                         1.6666665459e-1, 5.0000001201e-1)]
_LOG_P = [F(v) for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                         3.3333331174e-1)]
EXP_MIN = F(-87.0)  # exp(x) = 0 below this (keeps 2^n a normal float)


def expf(x):
    """exp(x) for x <= 0 (float32 array or scalar); 0 below EXP_MIN."""
    x = np.asarray(x, F)
    under = x < EXP_MIN
    x = np.where(under, F(0), x).astype(F)
    t = x * _LOG2E
    n = (t - F(0.5)).astype(np.int32)  # truncation toward zero, as C's (int) cast: round to nearest for t <= 0
    fn = n.astype(F)
    r = x - fn * _LN2_HI
    r = r - fn * _LN2_LO
    z = r * r
    p = np.full_like(r, _EXP_P[0])
    for c in _EXP_P[1:]:
        p = p * r + c
    y = p * z
    y = y + r
    y = y + F(1)
    scale = ((n + 127).astype(np.uint32) << np.uint32(23)).view(F)
    return np.where(under, F(0), y * scale).astype(F)


def logf(x):
    """log(x) for positive normal x."""
    x = np.asarray(x, F)
    bits = x.view(np.uint32)
    e = (bits >> np.uint32(23)).astype(np.int32) - 127
    m = ((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(F)
    big = m > F(1.41421356)
    m = np.where(big, m * F(0.5), m).astype(F)
    e = np.where(big, e + 1, e)
    f = m - F(1)
    z = f * f
    y = np.full_like(f, _LOG_P[0])
    for c in _LOG_P[1:]:
        y = y * f + c
    y = y * f
    y = y * z
    fe = e.astype(F)
    y = y + fe * _LN2_LO
    y = y - F(0.5) * z
    r = f + y
    return (r + fe * _LN2_HI).astype(F)


def sigmoid(s):
    """1 / (1 + exp(-s)) for a float32 scalar, with exp only of non-positive arguments."""
    s = F(s)
    if s >= F(0):
        e = expf(-s)
        return F(F(1) / (F(1) + e))
    e = expf(s)
    return F(e / (F(1) + e))


def seq_sum(values, start=0.0):
    """Sequential float32 sum (the order the C loops use)."""
    acc = F(start)
    for v in np.asarray(values, F).reshape(-1):
        acc = F(acc + v)
    return acc


def argmax(z):
    """Index of the first largest value."""
    z = np.asarray(z)
    best = 0
    for j in range(1, len(z)):
        if z[j] > z[best]:
            best = j
    return best


def bit_lengths(m):
    """bit_length of each non-negative int64 value below 2^53 (exact in float64: frexp's exponent)."""
    return np.frexp(np.asarray(m, np.int64).astype(np.float64))[1].astype(np.int64)


class XorShift32:
    """The trainer's PRNG (C: tr_prng_next): x ^= x << 13; x ^= x >> 17; x ^= x << 5."""

    def __init__(self, seed):
        self.state = (int(seed) & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x


def q24(p):
    """A probability as a 24-bit threshold for PRNG draws: trunc(p * 2^24)."""
    return int(F(F(p) * F(16777216.0)))


# ------------------------------------------------------------------------ fixed point (the trainer's bulk work)

FX_SAT = 1 << 46  # |round(v * f)| saturates here: far beyond any weight a layer's bound allows


def f32_parts(f):
    """(mant, exp) with f = mant * 2^exp exactly, mant < 2^24, for a finite float32 f >= 0 (from its bits)."""
    b = int(np.array(F(f)).view(np.uint32))
    e, m = (b >> 23) & 0xFF, b & 0x7FFFFF
    return (m, -149) if e == 0 else (m | 0x800000, e - 150)


def pow2(n):
    """2^n as a float32 (exact)."""
    return F(2.0 ** int(n))


def round_shift(v, n):
    """v / 2^n rounded to nearest, ties up: (v + 2^(n-1)) >> n (v: int64 values, n >= 0); 0 when n > 62.
    n may be an array broadcasting against v (a shift per row or column)."""
    v = np.asarray(v, np.int64)
    if np.ndim(n) == 0:
        if n > 62:
            return np.zeros_like(v)
        return v if n == 0 else (v + (np.int64(1) << np.int64(n - 1))) >> np.int64(n)
    n = np.asarray(n, np.int64)
    nc = np.clip(n, 1, 62)
    return np.where(n > 62, 0, np.where(n == 0, v, (v + (np.int64(1) << (nc - 1))) >> nc))


def scaled(v, f):
    """round(v * f) for int64 values v (|v| < 2^31) and a finite float32 f >= 0: v times f's mantissa, then
    shifted by its exponent (right shifts round ties up); saturated to +-FX_SAT. A Python int gives an int."""
    mant, e = f32_parts(f)
    if isinstance(v, (int, np.integer)):  # scalars: plain integers (the same rule, faster)
        p = int(v) * mant
        if e >= 0:
            return max(-FX_SAT, min(FX_SAT, p << e)) if e <= 46 else (0 if p == 0 else FX_SAT * (1 if p > 0 else -1))
        return 0 if -e > 62 else max(-FX_SAT, min(FX_SAT, (p + (1 << (-e - 1))) >> -e))
    p = np.asarray(v, np.int64) * np.int64(mant)
    if e <= -9:  # |v * mant| < 2^55: the shifted value is within FX_SAT
        return round_shift(p, -e)
    if e >= 0:
        lim = FX_SAT >> e if e <= 46 else 0
        r = np.where(np.abs(p) > lim, np.sign(p) * FX_SAT, p << np.int64(min(e, 46)))
    else:
        r = round_shift(p, -e)
    return np.clip(r, -FX_SAT, FX_SAT)


def scaled_rows(v, f):
    """scaled(v[i], f[i]) for every row i at once: v (n, ...) int64 values, f (n,) finite float32 factors
    (the same rule: a row's values times its factor's mantissa, shifted by its exponent, saturated)."""
    bits = np.asarray(f, F).view(np.uint32).astype(np.int64)
    ebits, m = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    mant, e = np.where(ebits == 0, m, m | 0x800000), np.where(ebits == 0, -149, ebits - 150)
    v = np.asarray(v, np.int64)
    mant, e = (a.reshape((-1,) + (1,) * (v.ndim - 1)) for a in (mant, e))
    p = v * mant
    down = round_shift(p, np.maximum(-e, 0))
    if np.all(e <= -9):  # the usual case: |v * mant| < 2^55, so the result is within FX_SAT
        return down
    up_shift = np.minimum(np.maximum(e, 0), 46)
    lim = np.where(e <= 46, FX_SAT >> up_shift, 0)
    up = np.where(np.abs(p) > lim, np.sign(p) * FX_SAT, p << up_shift)
    return np.clip(np.where(e >= 0, up, down), -FX_SAT, FX_SAT)


def qmult(r):
    """A float32 rescale factor r >= 0 as the kernels' (multiplier, shift): r = multiplier * 2^(shift - 31),
    exact for a float32 (codegen.quant.quantize_multiplier's rule, without its rounding)."""
    mant, e = f32_parts(r)
    if mant == 0:
        return 0, 0
    while mant < 1 << 23:
        mant, e = mant << 1, e - 1
    shift = e + 24
    if shift < -31:
        return 0, 0
    if shift > 30:
        return 2**31 - 1, 30
    return mant << 7, shift


def bit_length(m):
    """Bits needed for the non-negative integer m (0 for 0)."""
    return int(m).bit_length()
