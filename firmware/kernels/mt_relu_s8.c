/*
 * mt_relu_s8: standalone ReLU / ReLU6 / Clip on an int8 tensor whose quantisation does not change: a clamp to
 * [activation.min, activation.max]. The compiler fuses activations into the producing kernel when it can.
 *
 * DSP path: 4 bytes per word with SSUB8 + SEL.
 */
#include "mt_support.h"

mt_status mt_relu_s8(const mt_activation *activation, const int8_t *input, int8_t *output, int32_t size)
{
    if (activation == 0 || input == 0 || output == 0 || size < 0 || !mt_activation_ok(activation)) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = activation->min;
    const int32_t hi = activation->max;
    int32_t i = 0;
#if MT_USE_DSP
    const uint32_t lo4 = mt_splat4(lo);
    const uint32_t hi4 = mt_splat4(hi);
    for (; i + 4 <= size; i += 4) {
        mt_write_s32(output + i, (int32_t)mt_clamp4((uint32_t)mt_read_s32(input + i), lo4, hi4));
    }
#endif
    for (; i < size; i++) {
        const int32_t v = input[i];
        output[i] = (int8_t)MT_MIN(MT_MAX(v, lo), hi);
    }
    return MT_SUCCESS;
}
