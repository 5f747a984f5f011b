/*
 * mt_concat_s8: one input of a channel Concat (NHWC) written into its channel range of the output, copied
 * when it already has the output's quantisation (the compiler arranges that where it can), else requantised.
 */
#include <string.h>

#include "mt_support.h"

mt_status mt_concat_s8(const mt_concat_params *concat_params,
                       const int8_t *input,
                       int32_t pixels,
                       int32_t in_channels,
                       int8_t *output,
                       int32_t out_channels,
                       int32_t channel_start)
{
    const mt_concat_params *p = concat_params;
    if (p == 0 || input == 0 || output == 0 || pixels < 0 || in_channels < 1 || channel_start < 0 ||
        channel_start + in_channels > out_channels || !mt_offsets_ok(p->input_offset, p->output_offset) ||
        p->multiplier < 0 || p->shift < -31 || p->shift > 30) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = -128 - p->output_offset;
    const int32_t hi = 127 - p->output_offset;
    int8_t *out = output + channel_start;
    for (int32_t i = 0; i < pixels; i++) {
        if (!p->requantize) {
            memcpy(out, input, (size_t)in_channels);
        } else {
            for (int32_t c = 0; c < in_channels; c++) {
                out[c] = mt_output_s8((int32_t)input[c] + p->input_offset, p->multiplier, p->shift, lo, hi,
                                      p->output_offset);
            }
        }
        input += in_channels;
        out += out_channels;
    }
    return MT_SUCCESS;
}
