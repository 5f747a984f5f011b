/*
 * mt_resize_nearest_s8: nearest-neighbour resize (upsampling or downsampling) of H and W, NHWC. The source row
 * and column of each output row and column are tables computed by the compiler from the model's Resize.
 */
#include <string.h>

#include "mt_support.h"

mt_status mt_resize_nearest_s8(const mt_dims *input_dims,
                               const int8_t *input,
                               const int32_t *rows,
                               const int32_t *cols,
                               const mt_dims *output_dims,
                               int8_t *output)
{
    if (input_dims == 0 || input == 0 || rows == 0 || cols == 0 || output_dims == 0 || output == 0 ||
        !mt_dims_positive(input_dims) || !mt_dims_positive(output_dims) || output_dims->n != input_dims->n ||
        output_dims->c != input_dims->c) {
        return MT_ARG_ERROR;
    }
    for (int32_t i = 0; i < output_dims->h; i++) {
        if (rows[i] < 0 || rows[i] >= input_dims->h) {
            return MT_ARG_ERROR;
        }
    }
    for (int32_t j = 0; j < output_dims->w; j++) {
        if (cols[j] < 0 || cols[j] >= input_dims->w) {
            return MT_ARG_ERROR;
        }
    }
    const int32_t c = input_dims->c;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + (size_t)b * (size_t)input_dims->h * (size_t)input_dims->w * (size_t)c;
        for (int32_t i = 0; i < output_dims->h; i++) {
            const int8_t *row = in + (size_t)rows[i] * (size_t)input_dims->w * (size_t)c;
            for (int32_t j = 0; j < output_dims->w; j++) {
                memcpy(output, row + (size_t)cols[j] * (size_t)c, (size_t)c);
                output += c;
            }
        }
    }
    return MT_SUCCESS;
}
