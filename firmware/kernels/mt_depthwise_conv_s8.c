/*
 * mt_depthwise_conv_s8: int8 depthwise convolution (groups = C_in, channel multiplier ch_mult), NHWC input,
 * filter [1][KH][KW][C_out], per-channel requantisation.
 *
 * Reference path: one loop nest per output value (also used on the DSP build when ch_mult > 1).
 * DSP path (ch_mult = 1): 4 channels at a time; per tap one word of input and one of filter are widened with
 * SXTAB16 / SXTB16 and multiplied lane by lane with SMLABB / SMLATT; only in-bounds taps are visited.
 */
#include "mt_support.h"

int32_t mt_depthwise_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
    (void)input_dims;
    (void)filter_dims;
    return 0;
}

static void mt_dw_reference(const mt_dw_conv_params *p, const mt_per_channel_quant_params *q,
                            const mt_dims *input_dims, const int8_t *input, const mt_dims *filter_dims,
                            const int8_t *filter, const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * input_dims->w * c_in;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t iy0 = oy * p->stride.h - p->padding.top;
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                for (int32_t oc = 0; oc < c_out; oc++) {
                    const int32_t ic = oc / p->ch_mult;
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = 0; ky < filter_dims->h; ky++) {
                        const int32_t iy = iy0 + ky;
                        if (iy < 0 || iy >= input_dims->h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < filter_dims->w; kx++) {
                            const int32_t ix = ix0 + kx;
                            if (ix < 0 || ix >= input_dims->w) {
                                continue;
                            }
                            const int32_t x = in[(iy * input_dims->w + ix) * c_in + ic];
                            const int32_t w = filter[(ky * filter_dims->w + kx) * c_out + oc];
                            acc += (x + p->input_offset) * w;
                        }
                    }
                    *output++ = mt_output_s8(acc, q->multiplier[oc], q->shift[oc], lo, hi, p->output_offset);
                }
            }
        }
    }
}

#if MT_USE_DSP
static void mt_dw_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *input_dims,
                      const int8_t *input, const mt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                      const mt_dims *output_dims, int8_t *output)
{
    const int32_t c = input_dims->c;
    const int32_t in_w = input_dims->w;
    const int32_t kw = filter_dims->w;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    const int32_t out_off = p->output_offset;
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);
    const int32_t row_step = in_w * c;

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * in_w * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0);
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(kw, in_w - ix0);
                const int32_t nkx = kx1 - kx0;
                const int8_t *x_base = in + ((iy0 + ky0) * in_w + ix0 + kx0) * c;
                const int8_t *w_base = filter + (ky0 * kw + kx0) * c;
                int32_t ch = 0;
                for (; ch + 4 <= c; ch += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    if (bias) {
                        a0 = bias[ch];
                        a1 = bias[ch + 1];
                        a2 = bias[ch + 2];
                        a3 = bias[ch + 3];
                    }
                    const int8_t *xr = x_base + ch;
                    const int8_t *wr = w_base + ch;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int8_t *xp = xr;
                        const int8_t *wp = wr;
                        for (int32_t i = nkx; i > 0; i--) {
                            const int32_t xv = mt_read_s32(xp);
                            const int32_t wv = mt_read_s32(wp);
                            xp += c;
                            wp += c;
                            const int32_t xl = mt_lo_off(xv, off16x2);
                            const int32_t wl = mt_lo(wv);
                            const int32_t xh = mt_hi_off(xv, off16x2);
                            const int32_t wh = mt_hi(wv);
                            a0 = __smlabb(xl, wl, a0);
                            a2 = __smlatt(xl, wl, a2);
                            a1 = __smlabb(xh, wh, a1);
                            a3 = __smlatt(xh, wh, a3);
                        }
                        xr += row_step;
                        wr += kw * c;
                    }
                    output[ch] = mt_output_s8(a0, q->multiplier[ch], q->shift[ch], lo, hi, out_off);
                    output[ch + 1] = mt_output_s8(a1, q->multiplier[ch + 1], q->shift[ch + 1], lo, hi, out_off);
                    output[ch + 2] = mt_output_s8(a2, q->multiplier[ch + 2], q->shift[ch + 2], lo, hi, out_off);
                    output[ch + 3] = mt_output_s8(a3, q->multiplier[ch + 3], q->shift[ch + 3], lo, hi, out_off);
                }
                for (; ch < c; ch++) {
                    int32_t a = bias ? bias[ch] : 0;
                    const int8_t *xr = x_base + ch;
                    const int8_t *wr = w_base + ch;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t i = 0; i < nkx; i++) {
                            a += ((int32_t)xr[i * c] + p->input_offset) * (int32_t)wr[i * c];
                        }
                        xr += row_step;
                        wr += kw * c;
                    }
                    output[ch] = mt_output_s8(a, q->multiplier[ch], q->shift[ch], lo, hi, out_off);
                }
                output += c;
            }
        }
    }
}
#endif

mt_status mt_depthwise_conv_s8(const mt_context *ctx,
                               const mt_dw_conv_params *dw_conv_params,
                               const mt_per_channel_quant_params *quant_params,
                               const mt_dims *input_dims,
                               const int8_t *input,
                               const mt_dims *filter_dims,
                               const int8_t *filter,
                               const int32_t *bias,
                               const mt_dims *output_dims,
                               int8_t *output)
{
    (void)ctx;
    if (dw_conv_params == 0 || quant_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 ||
        filter == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_dw_conv_params *p = dw_conv_params;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        p->ch_mult < 1 || filter_dims->n != 1 || filter_dims->c != input_dims->c * p->ch_mult ||
        output_dims->c != filter_dims->c || output_dims->n != input_dims->n || p->stride.h < 1 ||
        p->stride.w < 1 || p->dilation.h != 1 || p->dilation.w != 1 || !mt_padding_ok(&p->padding) ||
        !mt_offsets_ok(p->input_offset, p->output_offset) || !mt_activation_ok(&p->activation) ||
        !mt_quant_ok(quant_params, output_dims->c) ||
        output_dims->h != mt_out_len(input_dims->h, p->padding.top, p->padding.bottom, filter_dims->h, p->stride.h) ||
        output_dims->w != mt_out_len(input_dims->w, p->padding.left, p->padding.right, filter_dims->w, p->stride.w)) {
        return MT_ARG_ERROR;
    }
#if MT_USE_DSP
    if (p->ch_mult == 1) {
        mt_dw_dsp(p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
        return MT_SUCCESS;
    }
#endif
    mt_dw_reference(p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
    return MT_SUCCESS;
}
