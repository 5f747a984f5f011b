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

int fm_argmax(const float *z, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (z[j] > z[best])
            best = j;
    return best;
}

uint32_t fm_softmax(const float *z, int n, float *p, int target, float *loss)
{
    float m = z[0];
    for (int j = 1; j < n; j++)
        if (z[j] > m)
            m = z[j];
    float s = 0.0f;
    for (int j = 0; j < n; j++)
        s = s + fm_expf(z[j] - m);
    if (p)
        for (int j = 0; j < n; j++)
            p[j] = fm_expf(z[j] - m) / s;
    if (target >= 0 && loss)
        *loss = fm_logf(s) - (z[target] - m);
    float conf = 65536.0f / s;
    if (!(conf < 65536.0f))
        return 65536u;
    return (uint32_t)conf;
}

int8_t fm_quantize(float z, float scale, int32_t zero_point)
{
    float v = z / scale;
    v = v >= 0.0f ? v + 0.5f : v - 0.5f;
    if (v > 1e6f)
        v = 1e6f;
    if (v < -1e6f)
        v = -1e6f;
    int32_t q = (int32_t)v + zero_point;
    return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
}
