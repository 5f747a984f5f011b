/*
 * mt_avg_pool_s8: int8 average pooling, NHWC; also GlobalAveragePool and ReduceMean over H, W (window = the
 * whole image). acc = sum of (x + input_offset) over the in-bounds taps; a window with v in-bounds taps out
 * of KH*KW is requantised with table entry KH*KW - v (see mt_avg_pool_params).
 *
 * DSP path (windows of at most 256 taps): 4 channels per word, summed in 16-bit lanes with SXTAB16 (a sum
 * of 256 int8 values fits in int16); the input offset is added once per window as v * input_offset.
 * Cortex-M3 (MT_USE_SMLAL) does the same with plain word arithmetic: each byte biased by 128 (x ^ 0x80) and
 * bytes 0, 2 / 1, 3 summed in the 16-bit lanes of two words (256 * 255 fits), the bias taken off per window.
 */
#include "mt_support.h"

mt_status mt_avg_pool_s8(const mt_avg_pool_params *pool_params,
                         const mt_dims *input_dims,
                         const int8_t *input,
                         const mt_dims *pool_dims,
                         const mt_dims *output_dims,
                         int8_t *output)
{
    if (pool_params == 0 || input_dims == 0 || input == 0 || pool_dims == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_avg_pool_params *p = pool_params;
    const int32_t area = pool_dims->h * pool_dims->w;
    const int32_t min_valid = mt_pool_check(&p->stride, &p->padding, &p->activation, input_dims, pool_dims,
                                            output_dims);
    if (min_valid == 0 || !mt_offsets_ok(p->input_offset, p->output_offset) || p->multiplier == 0 ||
        p->shift == 0 || p->num_multipliers < 1 || area - min_valid >= p->num_multipliers) {
        return MT_ARG_ERROR;
    }
    for (int32_t i = 0; i < p->num_multipliers; i++) {
        if (p->shift[i] < -31 || p->shift[i] > 30) {
            return MT_ARG_ERROR;
        }
    }
    const int32_t c = input_dims->c;
    const int32_t in_w = input_dims->w;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    const int32_t out_off = p->output_offset;

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
                const int32_t valid = (ky1 - ky0) * (kx1 - kx0);
                const int32_t idx = area - valid;
                const int32_t mult = p->multiplier[idx];
                const int32_t shift = p->shift[idx];
                const int32_t off_sum = valid * p->input_offset;
                const int8_t *base = in + ((iy0 + ky0) * in_w + ix0 + kx0) * c;
                int32_t ch = 0;
#if MT_USE_DSP
                if (area <= 256) {
                    for (; ch + 4 <= c; ch += 4) {
                        int32_t s02 = 0, s13 = 0; /* 16-bit lanes: channels (0, 2) and (1, 3) */
                        const int8_t *row = base + ch;
                        for (int32_t ky = ky0; ky < ky1; ky++) {
                            const int8_t *px = row;
                            for (int32_t kx = kx0; kx < kx1; kx++) {
                                const int32_t v = mt_read_s32(px);
                                px += c;
                                s02 = mt_lo_off(v, s02);
                                s13 = mt_hi_off(v, s13);
                            }
                            row += in_w * c;
                        }
                        output[ch] = mt_output_s8((int16_t)s02 + off_sum, mult, shift, lo, hi, out_off);
                        output[ch + 1] = mt_output_s8((int16_t)s13 + off_sum, mult, shift, lo, hi, out_off);
                        output[ch + 2] = mt_output_s8((s02 >> 16) + off_sum, mult, shift, lo, hi, out_off);
                        output[ch + 3] = mt_output_s8((s13 >> 16) + off_sum, mult, shift, lo, hi, out_off);
                    }
                }
#elif MT_USE_SMLAL
                if (area <= 256) {
                    const int32_t off_biased = off_sum - 128 * valid;
                    for (; ch + 4 <= c; ch += 4) {
                        uint32_t s02 = 0, s13 = 0; /* 16-bit lanes: channels (0, 2) and (1, 3), each + 128 a tap */
                        const int8_t *row = base + ch;
                        for (int32_t ky = ky0; ky < ky1; ky++) {
                            const int8_t *px = row;
                            for (int32_t kx = kx0; kx < kx1; kx++) {
                                const uint32_t u = (uint32_t)mt_read_s32(px) ^ 0x80808080u;
                                px += c;
                                s02 += u & 0x00FF00FFu;
                                s13 += (u >> 8) & 0x00FF00FFu;
                            }
                            row += in_w * c;
                        }
                        output[ch] = mt_output_s8((int32_t)(s02 & 0xFFFFu) + off_biased, mult, shift, lo, hi, out_off);
                        output[ch + 1] = mt_output_s8((int32_t)(s13 & 0xFFFFu) + off_biased, mult, shift, lo, hi,
                                                      out_off);
                        output[ch + 2] = mt_output_s8((int32_t)(s02 >> 16) + off_biased, mult, shift, lo, hi, out_off);
                        output[ch + 3] = mt_output_s8((int32_t)(s13 >> 16) + off_biased, mult, shift, lo, hi,
                                                      out_off);
                    }
                }
#endif
                for (; ch < c; ch++) {
                    int32_t s = 0;
                    const int8_t *row = base + ch;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = 0; kx < kx1 - kx0; kx++) {
                            s += row[kx * c];
                        }
                        row += in_w * c;
                    }
                    output[ch] = mt_output_s8(s + off_sum, mult, shift, lo, hi, out_off);
                }
                output += c;
            }
        }
    }
    return MT_SUCCESS;
}
