/*
 * mt_max_pool_s8: int8 max pooling, NHWC. Padded taps are ignored (ONNX pads with -inf); the result is then
 * clamped to the activation range. Input and output share scale and zero point.
 *
 * DSP path: 4 channels per word, running maximum with SSUB8 (sets the GE flags per byte) and SEL. Cores with
 * Thumb-2 but no DSP (Cortex-M3; MT_USE_SMLAL) do the same with plain word arithmetic (SWAR); ARMv6-M keeps
 * the byte loop.
 */
#include "mt_support.h"

#if MT_USE_DSP
MT_INLINE uint32_t mt_max4(uint32_t a, uint32_t b)
{
    (void)__ssub8((int8x4_t)a, (int8x4_t)b); /* GE[i] = a[i] >= b[i] */
    return __sel(a, b);
}

MT_INLINE uint32_t mt_pool_clamp4(uint32_t m, uint32_t min4, uint32_t max4)
{
    return mt_clamp4(m, min4, max4);
}
#elif MT_USE_SMLAL
/* 0xFF in each byte where the signed byte a[i] >= b[i]. Per byte (a | 0x80) - (b & 0x7F) never borrows from the
 * next byte and its bit 7 says a[i] >= b[i] on the low 7 bits; the sign bits decide where they differ. */
MT_INLINE uint32_t mt_ge4(uint32_t a, uint32_t b)
{
    const uint32_t diff = (a | 0x80808080u) - (b & 0x7F7F7F7Fu);
    const uint32_t ge = ((b & ~a) | (diff & ~(a ^ b))) & 0x80808080u;
    return (ge - (ge >> 7)) | ge;
}

MT_INLINE uint32_t mt_max4(uint32_t a, uint32_t b)
{
    return b ^ ((a ^ b) & mt_ge4(a, b));
}

/* The clamp costs as much as a tap here: skipped where the bound is the int8 limit. */
MT_INLINE uint32_t mt_pool_clamp4(uint32_t m, uint32_t min4, uint32_t max4)
{
    if (min4 != 0x80808080u) {
        m = mt_max4(m, min4);
    }
    if (max4 != 0x7F7F7F7Fu) {
        m ^= (m ^ max4) & mt_ge4(m, max4); /* the smaller */
    }
    return m;
}
#endif

mt_status mt_max_pool_s8(const mt_pool_params *pool_params,
                         const mt_dims *input_dims,
                         const int8_t *input,
                         const mt_dims *pool_dims,
                         const mt_dims *output_dims,
                         int8_t *output)
{
    if (pool_params == 0 || input_dims == 0 || input == 0 || pool_dims == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_pool_params *p = pool_params;
    if (mt_pool_check(&p->stride, &p->padding, &p->activation, input_dims, pool_dims, output_dims) == 0) {
        return MT_ARG_ERROR;
    }
    const int32_t c = input_dims->c;
    const int32_t in_w = input_dims->w;
    const int32_t act_min = p->activation.min;
    const int32_t act_max = p->activation.max;
#if MT_USE_DSP || MT_USE_SMLAL
    const uint32_t min4 = mt_splat4(act_min);
    const uint32_t max4 = mt_splat4(act_max);
#endif

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * in_w * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0);
            const int32_t ky1 = MT_MIN(pool_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(pool_dims->w, in_w - ix0);
                const int8_t *base = in + ((iy0 + ky0) * in_w + ix0 + kx0) * c;
                int32_t ch = 0;
#if MT_USE_SMLAL
                if (ky1 - ky0 == 1) { /* one row (1-D pooling): the first tap starts the maximum */
                    for (; ch + 4 <= c; ch += 4) {
                        const int8_t *px = base + ch;
                        uint32_t m = (uint32_t)mt_read_s32(px);
                        for (int32_t kx = kx0 + 1; kx < kx1; kx++) {
                            px += c;
                            m = mt_max4((uint32_t)mt_read_s32(px), m);
                        }
                        mt_write_s32(output + ch, (int32_t)mt_pool_clamp4(m, min4, max4));
                    }
                }
#endif
#if MT_USE_DSP || MT_USE_SMLAL
                for (; ch + 4 <= c; ch += 4) {
                    uint32_t m = 0x80808080u; /* -128 in every byte */
                    const int8_t *row = base + ch;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int8_t *px = row;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const uint32_t v = (uint32_t)mt_read_s32(px);
                            px += c;
                            m = mt_max4(v, m);
                        }
                        row += in_w * c;
                    }
                    mt_write_s32(output + ch, (int32_t)mt_pool_clamp4(m, min4, max4));
                }
#endif
                for (; ch < c; ch++) {
                    int32_t m = -128;
                    const int8_t *row = base + ch;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = 0; kx < kx1 - kx0; kx++) {
                            m = MT_MAX(m, (int32_t)row[kx * c]);
                        }
                        row += in_w * c;
                    }
                    m = MT_MAX(m, act_min);
                    m = MT_MIN(m, act_max);
                    output[ch] = (int8_t)m;
                }
                output += c;
            }
        }
    }
    return MT_SUCCESS;
}
