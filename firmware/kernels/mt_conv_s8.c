/*
 * mt_conv_s8: int8 convolution, groups = 1, NHWC input, OHWI filter, per-channel requantisation.
 *
 * Reference path: one loop nest per output value.
 * DSP path (Cortex-M4/M7/M33): im2col of two output positions at a time into int16 columns (input offset
 * added, padded taps 0, each group of 4 values stored as SXTB16 pairs (x0,x2),(x1,x3), the two columns
 * interleaved), then a 2 output channels x 2 positions SMLAD kernel over the columns, reading the int8
 * filter directly; the 4 results are requantised, packed and clamped together (SSUB8 / SEL). K = KH*KW*C_in
 * need not be a multiple of 4: the last partial group reads the row's last 4 filter bytes and shifts the
 * extra ones out, so no byte outside the filter array is read.
 */
#include "mt_support.h"

#if MT_USE_DSP
/* im2col words per group of 4 K values: column 0 (x0,x2), column 1 (x0,x2), column 0 (x1,x3), column 1 (x1,x3),
 * so the 2-column kernel fetches a group with two LDRDs. */
static int32_t mt_conv_groups(int32_t k)
{
    return (k + 3) >> 2;
}
#endif

int32_t mt_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
    (void)input_dims;
#if MT_USE_DSP
    const int32_t groups = mt_conv_groups(filter_dims->h * filter_dims->w * filter_dims->c);
    /* interleaved int16 columns (16 bytes per group) + one int8 staging column */
    return groups * 16 + groups * 4;
#else
    (void)filter_dims;
    return 0;
#endif
}

#if MT_USE_DSP

/* Fills one column of the interleaved im2col buffer for output position (oy, ox): cols points at word 0 of
 * the buffer for column 0 and at word 1 for column 1. stage holds 4 * groups int8 bytes. */
static void mt_conv_im2col(const int8_t *in, const mt_dims *input_dims, const mt_dims *filter_dims,
                           const mt_conv_params *p, int32_t oy, int32_t ox, int8_t *stage, int32_t *cols,
                           int32_t groups, int32_t off16x2)
{
    const int32_t c_in = input_dims->c;
    const int32_t kw = filter_dims->w;
    const int32_t row_len = kw * c_in;
    const int32_t iy0 = oy * p->stride.h - p->padding.top;
    const int32_t ix0 = ox * p->stride.w - p->padding.left;
    const int32_t kx0 = MT_MAX(0, -ix0);
    const int32_t kx1 = MT_MIN(kw, input_dims->w - ix0);
    const int8_t pad = (int8_t)(-p->input_offset); /* the input zero point: widens to 0 */
    int8_t *s = stage;

    for (int32_t ky = 0; ky < filter_dims->h; ky++) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= input_dims->h || kx0 >= kx1) {
            __builtin_memset(s, pad, (uint32_t)row_len);
        } else {
            const int32_t before = kx0 * c_in;
            const int32_t valid = (kx1 - kx0) * c_in;
            if (before > 0) {
                __builtin_memset(s, pad, (uint32_t)before);
            }
            __builtin_memcpy(s + before, in + (iy * input_dims->w + ix0 + kx0) * c_in, (uint32_t)valid);
            if (before + valid < row_len) {
                __builtin_memset(s + before + valid, pad, (uint32_t)(row_len - before - valid));
            }
        }
        s += row_len;
    }
    /* pad the last partial group (the filter side is zero there, any finite value works) */
    while (s < stage + 4 * groups) {
        *s++ = pad;
    }

    /* widen: each 4 bytes -> (x0,x2),(x1,x3) + offset, into this column's slots */
    for (int32_t i = groups; i > 0; i--) {
        const int32_t w = mt_read_s32(stage);
        stage += 4;
        cols[0] = mt_lo_off(w, off16x2);
        cols[2] = mt_hi_off(w, off16x2);
        cols += 4;
    }
}

/* One group of 4 K values for 2 filter rows (w0, w1) x 2 columns (x): 2 LDR, 2 LDRD, 4 SXTB16, 8 SMLAD. */
#define MT_CONV_GROUP_2X2() \
    do { \
        const int32_t wa_ = mt_read_s32(w0); \
        const int32_t wb_ = mt_read_s32(w1); \
        w0 += 4; \
        w1 += 4; \
        int32_t c0_ = x[0]; \
        int32_t c1_ = x[1]; \
        int32_t t_ = mt_lo(wa_); \
        a00 = mt_smlad(t_, c0_, a00); \
        a01 = mt_smlad(t_, c1_, a01); \
        t_ = mt_lo(wb_); \
        a10 = mt_smlad(t_, c0_, a10); \
        a11 = mt_smlad(t_, c1_, a11); \
        c0_ = x[2]; \
        c1_ = x[3]; \
        x += 4; \
        t_ = mt_hi(wa_); \
        a00 = mt_smlad(t_, c0_, a00); \
        a01 = mt_smlad(t_, c1_, a01); \
        t_ = mt_hi(wb_); \
        a10 = mt_smlad(t_, c0_, a10); \
        a11 = mt_smlad(t_, c1_, a11); \
    } while (0)

/* C_out x 2 positions over the interleaved columns; out0 / out1 are the two output pixels. */
static __attribute__((noinline)) MT_NO_PRESCHED void mt_conv_mat_mult_2col(
    const int8_t *filter, const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t c_out, int32_t k,
    const int32_t *cols, int32_t out_off, uint32_t min4, uint32_t max4, int8_t *out0, int8_t *out1)
{
    const int32_t groups = k >> 2;
    const int32_t rem = k & 3;
    int32_t oc = 0;

    for (; oc + 1 < c_out; oc += 2) {
        const int8_t *w0 = filter + oc * k;
        const int8_t *w1 = w0 + k;
        const int32_t b0 = bias ? bias[oc] : 0;
        const int32_t b1 = bias ? bias[oc + 1] : 0;
        int32_t a00 = b0, a01 = b0, a10 = b1, a11 = b1;
        const int32_t *x = cols;

        for (int32_t i = groups; i > 0; i--) {
            MT_CONV_GROUP_2X2();
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            const int32_t wb = mt_read_tail(filter + oc * k + k, k);
            a00 = mt_smlad(mt_lo(wa), x[0], a00);
            a01 = mt_smlad(mt_lo(wa), x[1], a01);
            a10 = mt_smlad(mt_lo(wb), x[0], a10);
            a11 = mt_smlad(mt_lo(wb), x[1], a11);
            a00 = mt_smlad(mt_hi(wa), x[2], a00);
            a01 = mt_smlad(mt_hi(wa), x[3], a01);
            a10 = mt_smlad(mt_hi(wb), x[2], a10);
            a11 = mt_smlad(mt_hi(wb), x[3], a11);
        }
        const int32_t m0 = mult[oc], s0 = shift[oc];
        const int32_t m1 = mult[oc + 1], s1 = shift[oc + 1];
        const uint32_t v = mt_clamp4(mt_pack4(mt_requant_sat8(a00, m0, s0, out_off),
                                              mt_requant_sat8(a10, m1, s1, out_off),
                                              mt_requant_sat8(a01, m0, s0, out_off),
                                              mt_requant_sat8(a11, m1, s1, out_off)),
                                     min4, max4);
        const uint16_t v0 = (uint16_t)v, v1 = (uint16_t)(v >> 16);
        __builtin_memcpy(out0 + oc, &v0, 2);
        __builtin_memcpy(out1 + oc, &v1, 2);
    }
    if (oc < c_out) {
        const int8_t *w0 = filter + oc * k;
        const int32_t b0 = bias ? bias[oc] : 0;
        int32_t a00 = b0, a01 = b0;
        const int32_t *x = cols;
        for (int32_t i = groups; i > 0; i--) {
            const int32_t wa = mt_read_s32(w0);
            w0 += 4;
            int32_t t = mt_lo(wa);
            a00 = mt_smlad(t, x[0], a00);
            a01 = mt_smlad(t, x[1], a01);
            t = mt_hi(wa);
            a00 = mt_smlad(t, x[2], a00);
            a01 = mt_smlad(t, x[3], a01);
            x += 4;
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            a00 = mt_smlad(mt_lo(wa), x[0], a00);
            a01 = mt_smlad(mt_lo(wa), x[1], a01);
            a00 = mt_smlad(mt_hi(wa), x[2], a00);
            a01 = mt_smlad(mt_hi(wa), x[3], a01);
        }
        const uint32_t v = mt_clamp4(mt_pack4(mt_requant_sat8(a00, mult[oc], shift[oc], out_off),
                                              mt_requant_sat8(a01, mult[oc], shift[oc], out_off), 0, 0),
                                     min4, max4);
        out0[oc] = (int8_t)v;
        out1[oc] = (int8_t)(v >> 8);
    }
}

/* C_out x 1 position (the odd last position), column 0 of the interleaved buffer. */
static void mt_conv_mat_mult_1col(const int8_t *filter, const int32_t *bias, const mt_per_channel_quant_params *q,
                                  int32_t c_out, int32_t k, const int32_t *cols, int32_t lo, int32_t hi,
                                  int32_t out_off, int8_t *out0)
{
    const int32_t groups = k >> 2;
    const int32_t rem = k & 3;
    for (int32_t oc = 0; oc < c_out; oc++) {
        const int8_t *w0 = filter + oc * k;
        int32_t a = bias ? bias[oc] : 0;
        const int32_t *x = cols;
        for (int32_t i = groups; i > 0; i--) {
            const int32_t wa = mt_read_s32(w0);
            w0 += 4;
            a = mt_smlad(mt_lo(wa), x[0], a);
            a = mt_smlad(mt_hi(wa), x[2], a);
            x += 4;
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            a = mt_smlad(mt_lo(wa), x[0], a);
            a = mt_smlad(mt_hi(wa), x[2], a);
        }
        out0[oc] = mt_output_s8(a, q->multiplier[oc], q->shift[oc], lo, hi, out_off);
    }
}

#endif /* MT_USE_DSP */

mt_status mt_conv_s8(const mt_context *ctx,
                     const mt_conv_params *conv_params,
                     const mt_per_channel_quant_params *quant_params,
                     const mt_dims *input_dims,
                     const int8_t *input,
                     const mt_dims *filter_dims,
                     const int8_t *filter,
                     const int32_t *bias,
                     const mt_dims *output_dims,
                     int8_t *output)
{
    if (conv_params == 0 || quant_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 ||
        filter == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_conv_params *p = conv_params;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        filter_dims->c != input_dims->c || output_dims->c != filter_dims->n || output_dims->n != input_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h != 1 || p->dilation.w != 1 ||
        !mt_padding_ok(&p->padding) || !mt_offsets_ok(p->input_offset, p->output_offset) ||
        !mt_activation_ok(&p->activation) || !mt_quant_ok(quant_params, filter_dims->n) ||
        output_dims->h != mt_out_len(input_dims->h, p->padding.top, p->padding.bottom, filter_dims->h, p->stride.h) ||
        output_dims->w != mt_out_len(input_dims->w, p->padding.left, p->padding.right, filter_dims->w, p->stride.w)) {
        return MT_ARG_ERROR;
    }

    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t k = filter_dims->h * filter_dims->w * c_in;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    const int32_t in_image = input_dims->h * input_dims->w * c_in;
    const int32_t out_positions = output_dims->h * output_dims->w;

#if MT_USE_DSP
    const int32_t need = mt_conv_s8_get_buffer_size(input_dims, filter_dims);
    if (ctx == 0 || ctx->buf == 0 || ctx->size < need || ((uintptr_t)ctx->buf & 3u) != 0) {
        return MT_ARG_ERROR;
    }
    const int32_t groups = mt_conv_groups(k);
    int32_t *cols = (int32_t *)ctx->buf;
    int8_t *stage = (int8_t *)(cols + 4 * groups);
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);
    const uint32_t min4 = mt_splat4(p->activation.min);
    const uint32_t max4 = mt_splat4(p->activation.max);

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * in_image;
        int8_t *out = output + b * out_positions * c_out;
        int32_t pos = 0;
        int32_t oy = 0, ox = 0;
        for (; pos + 1 < out_positions; pos += 2) {
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols, groups, off16x2);
            if (++ox == output_dims->w) {
                ox = 0;
                oy++;
            }
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols + 1, groups, off16x2);
            if (++ox == output_dims->w) {
                ox = 0;
                oy++;
            }
            mt_conv_mat_mult_2col(filter, bias, quant_params->multiplier, quant_params->shift, c_out, k, cols,
                                  p->output_offset, min4, max4, out, out + c_out);
            out += 2 * c_out;
        }
        if (pos < out_positions) {
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols, groups, off16x2);
            mt_conv_mat_mult_1col(filter, bias, quant_params, c_out, k, cols, lo, hi, p->output_offset, out);
        }
    }
#else
    (void)ctx;
    (void)k;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * in_image;
        int8_t *out = output + b * out_positions * c_out;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0); /* taps outside the input are zero padding: skipped */
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(filter_dims->w, input_dims->w - ix0);
                for (int32_t oc = 0; oc < c_out; oc++) {
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int8_t *x = in + ((iy0 + ky) * input_dims->w + ix0 + kx) * c_in;
                            const int8_t *w = filter + ((oc * filter_dims->h + ky) * filter_dims->w + kx) * c_in;
                            for (int32_t ic = 0; ic < c_in; ic++) {
                                acc += ((int32_t)x[ic] + p->input_offset) * (int32_t)w[ic];
                            }
                        }
                    }
                    *out++ = mt_output_s8(acc, quant_params->multiplier[oc], quant_params->shift[oc], lo, hi,
                                          p->output_offset);
                }
            }
        }
    }
#endif
    return MT_SUCCESS;
}
