/*
 * mt_add_s8: elementwise int8 add of two tensors with their own scales (residual connection), TFLite's
 * scheme (see mt_add_params): both inputs are rescaled to a common scale with left_shift extra fraction bits,
 * summed, and rescaled to the output.
 *
 * DSP path: an input rescale requantize((x + offset) << left_shift, m, s) is exactly SMMULR((x + offset) <<
 * (1 + s + left_shift), m) whenever that shift is >= 0 (both divide the same product by a power of two and round
 * once, ties up: docs/quantisation.md section 5), so with both input shifts >= -1 - left_shift and an output shift
 * < 0 an element costs two LDRSB / ADD / LSL / SMMULR, an ADD, mt_requant_off, SSAT, and a quarter of a pack,
 * clamp and store. Other parameters take the per-element C path.
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
    const int32_t sh1 = 1 + p->input1_shift + p->left_shift, sh2 = 1 + p->input2_shift + p->left_shift;
    if (sh1 >= 0 && sh2 >= 0 && p->output_shift < 0) {
        /* (x + offset) << sh as one MLA: x * 2^sh + offset * 2^sh; the second rescale's SMMLAR adds the first */
        const int32_t m1 = p->input1_multiplier, m2 = p->input2_multiplier, mo = p->output_multiplier;
        const int32_t k = ~p->output_shift, oo = p->output_offset;
        const int32_t e1 = 1 << sh1, c1 = p->input1_offset * e1, e2 = 1 << sh2, c2 = p->input2_offset * e2;
        const uint32_t min4 = mt_splat4(p->activation.min), max4 = mt_splat4(p->activation.max);
        for (; i + 4 <= size; i += 4) {
#define MT_ADD_ONE(j) __ssat(mt_requant_off(mt_smmlar((int32_t)input2[i + (j)] * e2 + c2, m2, \
                                                       mt_smmulr((int32_t)input1[i + (j)] * e1 + c1, m1)), \
                                            mo, k, oo), 8)
            const uint32_t v = mt_pack4(MT_ADD_ONE(0), MT_ADD_ONE(1), MT_ADD_ONE(2), MT_ADD_ONE(3));
#undef MT_ADD_ONE
            mt_write_s32(output + i, (int32_t)mt_clamp4(v, min4, max4));
        }
    }
#endif
    for (; i < size; i++) {
        output[i] = mt_add_one((int32_t)input1[i] + p->input1_offset, (int32_t)input2[i] + p->input2_offset, p, lo,
                               hi);
    }
    return MT_SUCCESS;
}
