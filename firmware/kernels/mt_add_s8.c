/*
 * mt_add_s8: elementwise int8 add of two tensors with their own scales (residual connection), TFLite's
 * scheme (see mt_add_params): both inputs are rescaled to a common scale with left_shift extra fraction bits,
 * summed, and rescaled to the output.
 *
 * DSP path: 4 elements per word pair, offsets added with SXTAB16; the requantisation stays per element.
 */
#include "mt_support.h"

/* One element: a and b already include their input offsets. */
MT_INLINE int8_t mt_add_one(int32_t a, int32_t b, const mt_add_params *p, int32_t lo, int32_t hi)
{
    const int32_t sa = mt_requantize(a * (1 << p->left_shift), p->input1_multiplier, p->input1_shift);
    const int32_t sb = mt_requantize(b * (1 << p->left_shift), p->input2_multiplier, p->input2_shift);
    return mt_output_s8(sa + sb, p->output_multiplier, p->output_shift, lo, hi, p->output_offset);
}

mt_status mt_add_s8(const mt_add_params *add_params,
                    const int8_t *input1,
                    const int8_t *input2,
                    int8_t *output,
                    int32_t size)
{
    if (add_params == 0 || input1 == 0 || input2 == 0 || output == 0 || size < 0) {
        return MT_ARG_ERROR;
    }
    const mt_add_params *p = add_params;
    if (p->left_shift < 0 || p->left_shift > 20 || p->input1_shift < -31 || p->input1_shift > 0 ||
        p->input2_shift < -31 || p->input2_shift > 0 || p->output_shift < -31 || p->output_shift > 30 ||
        !mt_offsets_ok(p->input1_offset, p->output_offset) || !mt_offsets_ok(p->input2_offset, 0) ||
        !mt_activation_ok(&p->activation)) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    int32_t i = 0;
#if MT_USE_DSP
    const int32_t off1 = mt_pack_off16x2(p->input1_offset);
    const int32_t off2 = mt_pack_off16x2(p->input2_offset);
    for (; i + 4 <= size; i += 4) {
        const int32_t v1 = mt_read_s32(input1 + i);
        const int32_t v2 = mt_read_s32(input2 + i);
        const int32_t a02 = mt_lo_off(v1, off1), a13 = mt_hi_off(v1, off1);
        const int32_t b02 = mt_lo_off(v2, off2), b13 = mt_hi_off(v2, off2);
        int8_t r[4];
        r[0] = mt_add_one((int16_t)a02, (int16_t)b02, p, lo, hi);
        r[1] = mt_add_one((int16_t)a13, (int16_t)b13, p, lo, hi);
        r[2] = mt_add_one(a02 >> 16, b02 >> 16, p, lo, hi);
        r[3] = mt_add_one(a13 >> 16, b13 >> 16, p, lo, hi);
        __builtin_memcpy(output + i, r, 4);
    }
#endif
    for (; i < size; i++) {
        output[i] = mt_add_one((int32_t)input1[i] + p->input1_offset, (int32_t)input2[i] + p->input2_offset, p, lo,
                               hi);
    }
    return MT_SUCCESS;
}
