/*
 * mt_fully_connected_s8: int8 dense layer (Gemm / MatMul with constant weights [M][K]), per output feature
 * requantisation.
 *
 * Reference path: one dot product per output.
 * DSP path: 4 output rows at a time; each input word is widened once (SXTAB16 with the input offset) and
 * used by the 4 rows (SXTB16 + SMLAD); the 4 results are requantised, packed and clamped together. A K that is not a multiple of 4 ends with one partial group whose
 * input and weight words are the last 4 bytes of each row shifted down (weights there are 0), so no byte
 * outside the arrays is read.
 */
#include "mt_support.h"

int32_t mt_fully_connected_s8_get_buffer_size(const mt_dims *filter_dims)
{
    (void)filter_dims;
    return 0;
}

#if MT_USE_DSP && !MT_USE_MVE
/* 4 dot products of int8 rows w, w + k, w + 2k, w + 3k with x (groups words), input offset added to x.
 * Rows 1 and 3 are addressed from rows 0 and 2 with a register offset, which keeps the loop within the 14
 * usable registers. */
static __attribute__((noinline)) MT_NO_PRESCHED void mt_fc_dot4(const int8_t *x, const int8_t *w, int32_t k,
                                                                int32_t groups, int32_t off16x2, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int8_t *w0 = w;
    const int8_t *w2 = w + 2 * k;
    for (int32_t i = groups; i > 0; i--) {
        const int32_t xv = mt_read_s32(x);
        x += 4;
        const int32_t xl = mt_lo_off(xv, off16x2);
        const int32_t xh = mt_hi_off(xv, off16x2);
        int32_t wv = mt_read_s32(w0 + k); /* row 1 before row 0, so row 0's load can post-increment */
        a1 = mt_smlad(mt_lo(wv), xl, a1);
        a1 = mt_smlad(mt_hi(wv), xh, a1);
        wv = mt_read_s32(w0);
        w0 += 4;
        a0 = mt_smlad(mt_lo(wv), xl, a0);
        a0 = mt_smlad(mt_hi(wv), xh, a0);
        wv = mt_read_s32(w2 + k);
        a3 = mt_smlad(mt_lo(wv), xl, a3);
        a3 = mt_smlad(mt_hi(wv), xh, a3);
        wv = mt_read_s32(w2);
        w2 += 4;
        a2 = mt_smlad(mt_lo(wv), xl, a2);
        a2 = mt_smlad(mt_hi(wv), xh, a2);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

static void mt_fc_dsp_row(const int8_t *x, const int8_t *filter, const int32_t *bias, const int32_t *mult,
                          const int32_t *shift, int32_t k, int32_t m_rows, int32_t off16x2, int32_t out_off,
                          uint32_t min4, uint32_t max4, int32_t lo, int32_t hi, int8_t *out)
{
    const int32_t groups = k >> 2;
    const int32_t rem = k & 3;
    int32_t xt_lo = 0, xt_hi = 0;
    if (rem) {
        const int32_t xt = mt_read_tail(x, k);
        xt_lo = mt_lo_off(xt, off16x2);
        xt_hi = mt_hi_off(xt, off16x2);
    }
    int32_t m = 0;
    for (; m + 4 <= m_rows; m += 4) {
        const int8_t *row = filter + m * k;
        int32_t a[4] = {0, 0, 0, 0};
        if (bias) {
            a[0] = bias[m];
            a[1] = bias[m + 1];
            a[2] = bias[m + 2];
            a[3] = bias[m + 3];
        }
        mt_fc_dot4(x, row, k, groups, off16x2, a);
        if (rem) {
            for (int32_t r = 0; r < 4; r++) {
                const int32_t wv = mt_read_tail(row + r * k, k);
                a[r] = mt_smlad(mt_lo(wv), xt_lo, a[r]);
                a[r] = mt_smlad(mt_hi(wv), xt_hi, a[r]);
            }
        }
        const uint32_t v = mt_pack4(mt_requant_sat8(a[0], mult[m], shift[m], out_off),
                                    mt_requant_sat8(a[1], mult[m + 1], shift[m + 1], out_off),
                                    mt_requant_sat8(a[2], mult[m + 2], shift[m + 2], out_off),
                                    mt_requant_sat8(a[3], mult[m + 3], shift[m + 3], out_off));
        mt_write_s32(out + m, (int32_t)mt_clamp4(v, min4, max4));
    }
    for (; m < m_rows; m++) {
        const int8_t *w0 = filter + m * k;
        int32_t a0 = bias ? bias[m] : 0;
        const int8_t *xp = x;
        for (int32_t i = groups; i > 0; i--) {
            const int32_t xv = mt_read_s32(xp);
            const int32_t wv = mt_read_s32(w0);
            xp += 4;
            w0 += 4;
            a0 = mt_smlad(mt_lo(wv), mt_lo_off(xv, off16x2), a0);
            a0 = mt_smlad(mt_hi(wv), mt_hi_off(xv, off16x2), a0);
        }
        if (rem) {
            const int32_t wv = mt_read_tail(filter + m * k, k);
            a0 = mt_smlad(mt_lo(wv), xt_lo, a0);
            a0 = mt_smlad(mt_hi(wv), xt_hi, a0);
        }
        out[m] = mt_output_s8(a0, mult[m], shift[m], lo, hi, out_off);
    }
}
#endif

#if MT_USE_MVE
/* Helium path: 4 rows at a time, 16 K values per VMLADAVA on the raw int8 operands (the input vector loaded once
 * for the 4 rows), each row's weight sum by VADDVA for the input offset (bias + offset * sum(w)), K tails through
 * predicated loads; scalar requantisation. */
static void mt_fc_mve_row(const int8_t *x, const int8_t *filter, const int32_t *bias,
                          const mt_per_channel_quant_params *q, int32_t k, int32_t m_rows, int32_t input_offset,
                          int32_t lo, int32_t hi, int32_t out_off, int8_t *out)
{
    for (int32_t m = 0; m < m_rows; m += 4) {
        const int32_t rows = MT_MIN(4, m_rows - m);
        int32_t a[4] = {0, 0, 0, 0}, sw[4] = {0, 0, 0, 0};
        for (int32_t i = 0; i < k; i += 16) {
            const mve_pred16_t pk = vctp8q((uint32_t)(k - i));
            const int8x16_t xv = vldrbq_z_s8(x + i, pk);
            for (int32_t r = 0; r < rows; r++) {
                const int8x16_t wv = vldrbq_z_s8(filter + (m + r) * k + i, pk);
                a[r] = vmladavaq_s8(a[r], xv, wv);
                sw[r] = vaddvaq_s8(sw[r], wv);
            }
        }
        for (int32_t r = 0; r < rows; r++) {
            const uint32_t acc = (uint32_t)(bias ? bias[m + r] : 0) + (uint32_t)a[r]
                                 + (uint32_t)input_offset * (uint32_t)sw[r];
            out[m + r] = mt_output_s8((int32_t)acc, q->multiplier[m + r], q->shift[m + r], lo, hi, out_off);
        }
    }
}
#endif

mt_status mt_fully_connected_s8(const mt_context *ctx,
                                const mt_fc_params *fc_params,
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
    if (fc_params == 0 || quant_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 ||
        filter == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_fc_params *p = fc_params;
    const int32_t k = filter_dims->c;
    const int32_t m_rows = filter_dims->n;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        filter_dims->h != 1 || filter_dims->w != 1 || input_dims->h * input_dims->w * input_dims->c != k ||
        output_dims->n != input_dims->n || output_dims->h != 1 || output_dims->w != 1 ||
        output_dims->c != m_rows || !mt_offsets_ok(p->input_offset, p->output_offset) ||
        !mt_activation_ok(&p->activation) || !mt_quant_ok(quant_params, m_rows)) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *x = input + b * k;
        int8_t *out = output + b * m_rows;
#if MT_USE_MVE
        mt_fc_mve_row(x, filter, bias, quant_params, k, m_rows, p->input_offset, lo, hi, p->output_offset, out);
#elif MT_USE_DSP
        mt_fc_dsp_row(x, filter, bias, quant_params->multiplier, quant_params->shift, k, m_rows,
                      mt_pack_off16x2(p->input_offset), p->output_offset, mt_splat4(p->activation.min),
                      mt_splat4(p->activation.max), lo, hi, out);
#else
        for (int32_t m = 0; m < m_rows; m++) {
            const int8_t *w = filter + m * k;
            int32_t acc = bias ? bias[m] : 0;
            for (int32_t i = 0; i < k; i++) {
                acc += ((int32_t)x[i] + p->input_offset) * (int32_t)w[i];
            }
            out[m] = mt_output_s8(acc, quant_params->multiplier[m], quant_params->shift[m], lo, hi,
                                  p->output_offset);
        }
#endif
    }
    return MT_SUCCESS;
}
