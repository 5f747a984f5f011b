/*
 * mt_conv_dilated_s8: convolution whose taps are `dilation` apart (TCN-style 1-D models, context modules).
 *
 * The taps of up to MT_DILATED_PIXELS output pixels are gathered into the scratch buffer in the filter's
 * OHWI order (a padded tap is the input zero point, i.e. a real zero), which turns the convolution into a
 * dense layer over those pixels: mt_fully_connected_s8 then computes them, with its own DSP path. The gather
 * costs about one load and one store per tap and output pixel, a fraction of the C_out MACs it feeds.
 */
#include <string.h>

#include "mt_support.h"

#define MT_DILATED_PIXELS 8

static int32_t mt_dilated_pixels(const mt_dims *output_dims)
{
    const int32_t n = output_dims->h * output_dims->w;
    return n < MT_DILATED_PIXELS ? n : MT_DILATED_PIXELS;
}

int32_t mt_conv_dilated_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims,
                                           const mt_dims *output_dims)
{
    (void)input_dims;
    const int32_t k = filter_dims->h * filter_dims->w * filter_dims->c;
    return (mt_dilated_pixels(output_dims) * k + 3) / 4 * 4;
}

/* The K = KH * KW * C_in taps of output pixel (oy, ox), in OHWI order. */
static void mt_gather_taps(const int8_t *in, const mt_dims *input_dims, const mt_dims *filter_dims,
                           const mt_conv_params *p, int32_t oy, int32_t ox, int8_t *col)
{
    const int32_t c = input_dims->c;
    const int8_t pad = (int8_t)(-p->input_offset); /* the zero point: a real zero */
    for (int32_t ky = 0; ky < filter_dims->h; ky++) {
        const int32_t iy = oy * p->stride.h - p->padding.top + ky * p->dilation.h;
        for (int32_t kx = 0; kx < filter_dims->w; kx++) {
            const int32_t ix = ox * p->stride.w - p->padding.left + kx * p->dilation.w;
            if (iy < 0 || iy >= input_dims->h || ix < 0 || ix >= input_dims->w) {
                memset(col, pad, (size_t)c);
            } else {
                memcpy(col, in + ((size_t)iy * (size_t)input_dims->w + (size_t)ix) * (size_t)c, (size_t)c);
            }
            col += c;
        }
    }
}

mt_status mt_conv_dilated_s8(const mt_context *ctx,
                             const mt_conv_params *conv_params,
                             const mt_per_channel_quant_params *quant_params,
                             const mt_dims *input_dims,
                             const int8_t *input,
                             const mt_dims *filter_dims,
                             const int8_t *filter,
                             const int32_t *bias,
                             const mt_dims *output_dims,
                             int8_t *output)
{
    if (ctx == 0 || conv_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 || output_dims == 0 ||
        output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_conv_params *p = conv_params;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        filter_dims->c != input_dims->c || output_dims->c != filter_dims->n || output_dims->n != input_dims->n ||
        p->dilation.h < 1 || p->dilation.w < 1 || p->stride.h < 1 || p->stride.w < 1 ||
        !mt_padding_ok(&p->padding) || !mt_offsets_ok(p->input_offset, p->output_offset) ||
        output_dims->h != mt_out_len(input_dims->h, p->padding.top, p->padding.bottom,
                                     (filter_dims->h - 1) * p->dilation.h + 1, p->stride.h) ||
        output_dims->w != mt_out_len(input_dims->w, p->padding.left, p->padding.right,
                                     (filter_dims->w - 1) * p->dilation.w + 1, p->stride.w)) {
        return MT_ARG_ERROR;
    }
    const int32_t k = filter_dims->h * filter_dims->w * filter_dims->c;
    const int32_t chunk = mt_dilated_pixels(output_dims);
    if (ctx->buf == 0 || ctx->size < chunk * k) {
        return MT_ARG_ERROR;
    }
    int8_t *col = (int8_t *)ctx->buf;
    const mt_fc_params fc = {p->input_offset, p->output_offset, p->activation};
    const mt_dims fc_filter = {filter_dims->n, 1, 1, k};
    const int32_t pixels = output_dims->h * output_dims->w;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + (size_t)b * (size_t)input_dims->h * (size_t)input_dims->w * (size_t)input_dims->c;
        for (int32_t first = 0; first < pixels; first += chunk) {
            const int32_t count = MT_MIN(chunk, pixels - first);
            for (int32_t i = 0; i < count; i++) {
                const int32_t pix = first + i;
                mt_gather_taps(in, input_dims, filter_dims, p, pix / output_dims->w, pix % output_dims->w, col + i * k);
            }
            const mt_dims fc_in = {count, 1, 1, k}, fc_out = {count, 1, 1, filter_dims->n};
            const mt_status st = mt_fully_connected_s8(ctx, &fc, quant_params, &fc_in, col, &fc_filter, filter, bias,
                                                       &fc_out, output);
            if (st != MT_SUCCESS) {
                return st;
            }
            output += count * filter_dims->n;
        }
    }
    return MT_SUCCESS;
}
