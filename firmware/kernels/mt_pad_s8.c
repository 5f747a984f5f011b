/*
 * mt_pad_s8: constant padding of H and W (NHWC), for a Pad the compiler could not fold into the padding of the
 * op after it (a convolution pads with real zeros, a max pool ignores padded taps).
 */
#include <string.h>

#include "mt_support.h"

mt_status mt_pad_s8(const mt_dims *input_dims,
                    const int8_t *input,
                    const mt_padding *padding,
                    int32_t pad_value,
                    const mt_dims *output_dims,
                    int8_t *output)
{
    if (input_dims == 0 || input == 0 || padding == 0 || output_dims == 0 || output == 0 ||
        !mt_dims_positive(input_dims) || !mt_padding_ok(padding) || pad_value < -128 || pad_value > 127 ||
        output_dims->n != input_dims->n || output_dims->c != input_dims->c ||
        output_dims->h != input_dims->h + padding->top + padding->bottom ||
        output_dims->w != input_dims->w + padding->left + padding->right) {
        return MT_ARG_ERROR;
    }
    const int32_t c = input_dims->c;
    const size_t row_in = (size_t)input_dims->w * (size_t)c;
    const size_t row_out = (size_t)output_dims->w * (size_t)c;
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t y = 0; y < output_dims->h; y++) {
            const int32_t iy = y - padding->top;
            if (iy < 0 || iy >= input_dims->h) {
                memset(output, pad_value, row_out);
            } else {
                memset(output, pad_value, (size_t)padding->left * (size_t)c);
                memcpy(output + padding->left * c, input + (size_t)iy * row_in, row_in);
                memset(output + padding->left * c + (int32_t)row_in, pad_value, (size_t)padding->right * (size_t)c);
            }
            output += row_out;
        }
        input += (size_t)input_dims->h * row_in;
    }
    return MT_SUCCESS;
}
