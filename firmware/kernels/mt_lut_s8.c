/*
 * mt_lut_s8: any elementwise function of one int8 tensor as a 256-entry table (the compiler fills it from the
 * function and the input / output quantisation), so the result is exact and no float is needed on the board.
 *
 * DSP path: one word in, four lookups, one word out.
 */
#include "mt_support.h"

mt_status mt_lut_s8(const int8_t table[256], const int8_t *input, int8_t *output, int32_t size)
{
    if (table == 0 || input == 0 || output == 0 || size < 0) {
        return MT_ARG_ERROR;
    }
    const int8_t *t = table + 128;
    int32_t i = 0;
#if MT_USE_DSP
    for (; i + 4 <= size; i += 4) {
        const uint32_t v = (uint32_t)mt_read_s32(input + i);
        mt_write_s32(output + i, (int32_t)mt_pack4(t[(int8_t)v], t[(int8_t)(v >> 8)], t[(int8_t)(v >> 16)],
                                                   t[(int8_t)(v >> 24)]));
    }
#endif
    for (; i < size; i++) {
        output[i] = t[input[i]];
    }
    return MT_SUCCESS;
}
