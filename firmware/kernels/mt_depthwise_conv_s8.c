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
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0); /* taps outside the input are zero padding: skipped */
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(filter_dims->w, input_dims->w - ix0);
                for (int32_t oc = 0; oc < c_out; oc++) {
                    const int32_t ic = oc / p->ch_mult;
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int32_t x = in[((iy0 + ky) * input_dims->w + ix0 + kx) * c_in + ic];
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
typedef struct {
    int32_t c;        /* channels (input = output, ch_mult = 1) */
    int32_t x_row;    /* bytes between input rows */
    int32_t w_row;    /* bytes between filter rows */
    int32_t off16x2;  /* input offset in both halfwords */
    int32_t out_off;
    uint32_t min4, max4;
    int32_t lo, hi;   /* activation bounds minus the output offset (scalar tail) */
    int32_t input_offset;
} mt_dw_ctx;

/* One tap for 4 channels: widen a word of input (+ offset) and of filter, 4 lane-wise MACs. */
#define MT_DW_TAP(xp, wp) \
    do { \
        const int32_t xv_ = mt_read_s32(xp); \
        const int32_t wv_ = mt_read_s32(wp); \
        const int32_t xl_ = mt_lo_off(xv_, off16x2); \
        const int32_t wl_ = mt_lo(wv_); \
        a0 = __smlabb(xl_, wl_, a0); \
        a2 = __smlatt(xl_, wl_, a2); \
        const int32_t xh_ = mt_hi_off(xv_, off16x2); \
        const int32_t wh_ = mt_hi(wv_); \
        a1 = __smlabb(xh_, wh_, a1); \
        a3 = __smlatt(xh_, wh_, a3); \
    } while (0)

/* All channels of one output pixel: window rows x taps starting at x (input) and w (filter). */
static __attribute__((noinline)) MT_NO_PRESCHED void mt_dw_pixel(const mt_dw_ctx *k, const int8_t *x,
                                                                 const int8_t *w, int32_t rows, int32_t taps,
                                                                 const int32_t *bias, const int32_t *mult,
                                                                 const int32_t *shift, int8_t *out)
{
    const int32_t c = k->c;
    const int32_t off16x2 = k->off16x2;
    int32_t ch = 0;
    for (; ch + 4 <= c; ch += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        if (bias) {
            a0 = bias[ch];
            a1 = bias[ch + 1];
            a2 = bias[ch + 2];
            a3 = bias[ch + 3];
        }
        const int8_t *xr = x + ch;
        const int8_t *wr = w + ch;
        if (taps == 3) { /* the common 3-wide window: input and filter taps are both c bytes apart */
            const int32_t c2 = 2 * c;
            for (int32_t r = rows; r > 0; r--) {
                MT_DW_TAP(xr, wr);
                MT_DW_TAP(xr + c, wr + c);
                MT_DW_TAP(xr + c2, wr + c2);
                xr += k->x_row;
                wr += k->w_row;
            }
        } else {
            for (int32_t r = rows; r > 0; r--) {
                const int8_t *xp = xr;
                const int8_t *wp = wr;
                for (int32_t i = taps; i > 0; i--) {
                    MT_DW_TAP(xp, wp);
                    xp += c;
                    wp += c;
                }
                xr += k->x_row;
                wr += k->w_row;
            }
        }
        const uint32_t v = mt_pack4(mt_requant_sat8(a0, mult[ch], shift[ch], k->out_off),
                                    mt_requant_sat8(a1, mult[ch + 1], shift[ch + 1], k->out_off),
                                    mt_requant_sat8(a2, mult[ch + 2], shift[ch + 2], k->out_off),
                                    mt_requant_sat8(a3, mult[ch + 3], shift[ch + 3], k->out_off));
        mt_write_s32(out + ch, (int32_t)mt_clamp4(v, k->min4, k->max4));
    }
    for (; ch < c; ch++) {
        int32_t a = bias ? bias[ch] : 0;
        const int8_t *xr = x + ch;
        const int8_t *wr = w + ch;
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t i = 0; i < taps; i++) {
                a += ((int32_t)xr[i * c] + k->input_offset) * (int32_t)wr[i * c];
            }
            xr += k->x_row;
            wr += k->w_row;
        }
        out[ch] = mt_output_s8(a, mult[ch], shift[ch], k->lo, k->hi, k->out_off);
    }
}

static void mt_dw_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *input_dims,
                      const int8_t *input, const mt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                      const mt_dims *output_dims, int8_t *output)
{
    const int32_t c = input_dims->c;
    const int32_t in_w = input_dims->w;
    const int32_t kw = filter_dims->w;
    const mt_dw_ctx k = {c, in_w * c, kw * c, mt_pack_off16x2(p->input_offset), p->output_offset,
                         mt_splat4(p->activation.min), mt_splat4(p->activation.max),
                         p->activation.min - p->output_offset, p->activation.max - p->output_offset,
                         p->input_offset};

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
                /* rows / taps may be <= 0 only when a window lies entirely in the padding: then the pointers
                 * below are never dereferenced */
                const int32_t rows = MT_MAX(0, ky1 - ky0);
                const int32_t taps = MT_MAX(0, kx1 - kx0);
                const int8_t *x = in + ((iy0 + ky0) * in_w + ix0 + kx0) * c;
                const int8_t *w = filter + (ky0 * kw + kx0) * c;
                mt_dw_pixel(&k, x, w, taps ? rows : 0, taps, bias, q->multiplier, q->shift, output);
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
