/*
 * mt_mul_s8: elementwise product of two int8 tensors with their own scales (TFLite's int8 Mul): a gate
 * (x * sigmoid(s) per channel), a product of two maps, or a per-channel constant. The second input repeats
 * along the first, so broadcasting over H and W needs no copy.
 */
#include "mt_support.h"

mt_status mt_mul_s8(const mt_mul_params *mul_params,
                    const int8_t *input1,
                    const int8_t *input2,
                    int32_t input2_size,
                    int8_t *output,
                    int32_t size)
{
    if (mul_params == 0 || input1 == 0 || input2 == 0 || output == 0 || size < 0 || input2_size < 1 ||
        size % input2_size != 0) {
        return MT_ARG_ERROR;
    }
    const mt_mul_params *p = mul_params;
    if (!mt_offsets_ok(p->input1_offset, p->output_offset) || !mt_offsets_ok(p->input2_offset, 0) ||
        p->multiplier < 0 || p->shift < -31 || p->shift > 30 || !mt_activation_ok(&p->activation)) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    for (int32_t base = 0; base < size; base += input2_size) {
        const int8_t *x1 = input1 + base;
        int8_t *out = output + base;
        for (int32_t j = 0; j < input2_size; j++) {
            const int32_t prod = ((int32_t)x1[j] + p->input1_offset) * ((int32_t)input2[j] + p->input2_offset);
            out[j] = mt_output_s8(prod, p->multiplier, p->shift, lo, hi, p->output_offset);
        }
    }
    return MT_SUCCESS;
}
