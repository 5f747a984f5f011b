#include "fmath.h"

#include <string.h>

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

int fm_isfinite(float x) { return (to_bits(x) & 0x7F800000u) != 0x7F800000u; }

float fm_expf(float x)
{
    if (x < -87.0f)
        return 0.0f;
    float t = x * 1.44269504088896341f;
    int n = (int)(t - 0.5f); /* truncation toward zero: round to nearest for t <= 0 */
    float fn = (float)n;
    float r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * z;
    y = y + r;
    y = y + 1.0f;
    return y * from_bits((uint32_t)(n + 127) << 23);
}

float fm_logf(float x)
{
    uint32_t bits = to_bits(x);
    int e = (int)(bits >> 23) - 127;
    float m = from_bits((bits & 0x7FFFFFu) | 0x3F800000u);
    if (m > 1.41421356f) {
        m = m * 0.5f;
        e = e + 1;
    }
    float f = m - 1.0f;
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f + -1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f + -1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f + -1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f + -2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f;
    y = y * z;
    float fe = (float)e;
    y = y + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = f + y;
    return r + fe * 0.693359375f;
}

float fm_sigmoid(float s)
{
    if (s >= 0.0f) {
        float e = fm_expf(-s);
        return 1.0f / (1.0f + e);
    }
    float e = fm_expf(s);
    return e / (1.0f + e);
}

uint32_t fm_table_softmax(const int8_t *z, int n, const uint32_t *table, uint32_t *t)
{
    int8_t top = z[0];
    for (int j = 1; j < n; j++)
        if (z[j] > top)
            top = z[j];
    uint32_t s = 0;
    for (int j = 0; j < n; j++) {
        t[j] = table[top - z[j]];
        s += t[j];
    }
    return s;
}

void fx_parts(float f, int32_t *mant, int32_t *exp)
{
    const uint32_t b = to_bits(f), e = (b >> 23) & 0xFFu, m = b & 0x7FFFFFu;
    *mant = (int32_t)(e ? m | 0x800000u : m);
    *exp = e ? (int32_t)e - 150 : -149;
}

float fx_pow2(int n) { return from_bits((uint32_t)(n + 127) << 23); }

int64_t fx_scaled(int64_t v, float f)
{
    int32_t mant, e;
    fx_parts(f, &mant, &e);
    return fx_scaled_parts(v, mant, e);
}

void fx_qmult(float r, int32_t *mult, int32_t *shift)
{
    int32_t mant, e;
    fx_parts(r, &mant, &e);
    *mult = 0;
    *shift = 0;
    if (mant == 0)
        return;
    while (mant < (1 << 23)) {
        mant <<= 1;
        e--;
    }
    const int32_t s = e + 24;
    if (s > 30) {
        *mult = INT32_MAX;
        *shift = 30;
    } else if (s >= -31) {
        *mult = mant << 7;
        *shift = s;
    }
}

int fx_bitlen(uint64_t m) { return m ? 64 - __builtin_clzll(m) : 0; }
