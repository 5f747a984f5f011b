/* Arithmetic of the on-device trainer, bit for bit equal to codegen/fmath.py: the few float32 scalars (our own
 * exp and log: Cephes' float polynomials, fixed evaluation order; no fused multiply-add, the trainer is built
 * with -ffp-contract=off) and the fixed-point helpers of the integer backward pass. See docs/training.md. */
#ifndef MT_FMATH_H
#define MT_FMATH_H

#include <stdint.h>

/* exp(x) for x <= 0; 0 below -87. */
float fm_expf(float x);
/* log(x) for positive normal x. */
float fm_logf(float x);
/* 1 / (1 + exp(-s)), evaluating exp only at non-positive arguments. */
float fm_sigmoid(float s);
/* 1 when x is neither infinite nor NaN. */
int fm_isfinite(float x);
/* Softmax of n int8 logits through an exit's confidence table (exp(-d * logit scale) in Q16, d = 0..255):
 * t[j] = table[max z - z_j]; returns S = sum t[j], so p_j = t[j] / S. */
uint32_t fm_table_softmax(const int8_t *z, int n, const uint32_t *table, uint32_t *t);

/* |round(v * f)| saturates here: far beyond any weight a layer's bound allows. */
#define FX_SAT ((int64_t)1 << 46)
/* f = mant * 2^exp exactly (mant < 2^24) for a finite float f >= 0, from its bits. */
void fx_parts(float f, int32_t *mant, int32_t *exp);
/* 2^n as a float, n in [-126, 127]. */
float fx_pow2(int n);
/* v / 2^n rounded to nearest, ties up ((v + 2^(n-1)) >> n); 0 when n > 62. */
static inline int64_t fx_round_shift(int64_t v, int n)
{
    if (n == 0)
        return v;
    if (n > 62)
        return 0;
    return (v + ((int64_t)1 << (n - 1))) >> n;
}
/* round(v * f) for |v| < 2^31 and a finite float f >= 0 (v times f's mantissa, shifted by its exponent),
 * saturated to +-FX_SAT. */
int64_t fx_scaled(int64_t v, float f);
/* The same with f given as its parts (fx_parts), for loops that scale many values by one f. */
static inline int64_t fx_scaled_parts(int64_t v, int32_t mant, int32_t e)
{
    const int64_t p = v * mant;
    int64_t r;
    if (e >= 0) {
        const int64_t lim = e <= 46 ? FX_SAT >> e : 0;
        if (p > lim || p < -lim)
            return p > 0 ? FX_SAT : -FX_SAT;
        r = p * ((int64_t)1 << e);
    } else {
        r = fx_round_shift(p, -e);
    }
    return r > FX_SAT ? FX_SAT : r < -FX_SAT ? -FX_SAT : r;
}
/* A rescale factor r >= 0 as the kernels' multiplier and shift: r = mult * 2^(shift - 31), exact. */
void fx_qmult(float r, int32_t *mult, int32_t *shift);
/* Bits needed for m (0 for 0). */
int fx_bitlen(uint64_t m);

#endif
