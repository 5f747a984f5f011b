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
    const uint32_t lo4 = 0x01010101u * (uint8_t)(int8_t)lo;
    const uint32_t hi4 = 0x01010101u * (uint8_t)(int8_t)hi;
    for (; i + 4 <= size; i += 4) {
        uint32_t v = (uint32_t)mt_read_s32(input + i);
        (void)__ssub8((int8x4_t)v, (int8x4_t)lo4); /* GE[i] = v[i] >= lo */
        v = __sel(v, lo4);
        (void)__ssub8((int8x4_t)v, (int8x4_t)hi4); /* GE[i] = v[i] >= hi */
        v = __sel(hi4, v);
        mt_write_s32(output + i, (int32_t)v);
    }
#endif
    for (; i < size; i++) {
        const int32_t v = input[i];
        output[i] = (int8_t)MT_MIN(MT_MAX(v, lo), hi);
    }
    return MT_SUCCESS;
}
