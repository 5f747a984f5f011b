/*
 * mcu-train int8 kernel library: public API.
 *
 * Quantisation follows the TFLite int8 scheme, written down in docs/quantisation.md:
 *   real = scale * (q - zero_point)
 *   weights: per output channel, symmetric (zero point 0), int8 in [-127, 127]
 *   activations: per tensor, asymmetric int8 (zero point in [-128, 127])
 *   bias: int32 with scale input_scale * weight_scale[channel], zero point 0
 *   requantisation: out = clamp(requantize(acc, multiplier, shift) + output_offset, act_min, act_max)
 * where requantize() is the single-rounding rule below (round(acc * multiplier / 2^(31 - shift)) with one
 * 64-bit product, ties towards +infinity), the same function in every kernel and in codegen/quant.py.
 *
 * Layout is channels-last: NHWC for 2-D tensors; a 1-D tensor (N, W, C) is NHWC with H = 1.
 * Conv filters are OHWI [C_out][KH][KW][C_in]; depthwise filters are [1][KH][KW][C_out];
 * fully connected weights are [M][K] (one row per output feature).
 *
 * Every kernel has a plain C reference path and, when __ARM_FEATURE_DSP is defined (Cortex-M4/M7/M33/M55),
 * a SIMD path built on ACLE intrinsics and Thumb-2 assembly that gives bit-identical results; with Helium
 * (__ARM_FEATURE_MVE, Cortex-M55) conv, depthwise and dense take an MVE path first. Define
 * MT_FORCE_REFERENCE to build the reference path on a DSP core (the on-target tests compare both).
 *
 * No kernel allocates memory: kernels that need scratch take it in an mt_context whose size the caller
 * obtained from the kernel's *_get_buffer_size() query (0 means no scratch is needed). The scratch
 * buffer must be 4-byte aligned.
 */
#ifndef MT_KERNELS_H
#define MT_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__ARM_FEATURE_DSP) && !defined(MT_FORCE_REFERENCE)
#define MT_USE_DSP 1
#else
#define MT_USE_DSP 0
#endif

#if defined(__GNUC__)
#define MT_INLINE static inline __attribute__((always_inline))
#else
#define MT_INLINE static inline
#endif

/** Status returned by every kernel. */
typedef enum {
    MT_SUCCESS = 0,
    MT_ARG_ERROR = -1, /**< unsupported shape or parameter, or scratch buffer missing / too small */
} mt_status;

/** Tensor or filter shape. Tensors: N, H, W, C. Conv filter: n = C_out, h = KH, w = KW, c = C_in. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} mt_dims;

/** A pair of values along the two spatial axes. */
typedef struct {
    int32_t h;
    int32_t w;
} mt_tile;

/** Zero padding around the input (asymmetric allowed). 1-D layers use left/right only. */
typedef struct {
    int32_t top;
    int32_t left;
    int32_t bottom;
    int32_t right;
} mt_padding;

/** Output clamp in the int8 output domain (ReLU / ReLU6 fused here), min <= max, both in [-128, 127]. */
typedef struct {
    int32_t min;
    int32_t max;
} mt_activation;

/** Caller-owned scratch memory. buf may be NULL when size is 0. */
typedef struct {
    void *buf;
    int32_t size; /**< bytes */
} mt_context;

/** Per output channel requantisation: real_scale[c] ~= multiplier[c] * 2^(shift[c] - 31). */
typedef struct {
    const int32_t *multiplier; /**< Q31, >= 0: in [2^30, 2^31), or 0 for a flushed scale */
    const int32_t *shift;      /**< in [-31, 30]; > 0 is a left shift */
} mt_per_channel_quant_params;

/** Per tensor requantisation, same meaning as one entry of mt_per_channel_quant_params. */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} mt_per_tensor_quant_params;

/** Convolution (groups = 1). Dilation must be 1. */
typedef struct {
    int32_t input_offset;  /**< -input_zero_point, in [-127, 128] */
    int32_t output_offset; /**< output_zero_point, in [-128, 127] */
    mt_tile stride;        /**< >= 1 */
    mt_padding padding;    /**< >= 0 */
    mt_tile dilation;      /**< must be {1, 1} */
    mt_activation activation;
    /** mt_conv_s8 on the DSP path: NULL, or the filter, bias and requantisation already widened into its records
     *  (made at compile time, codegen/lower.py pack_conv_filter): no weights in the scratch buffer, which then needs
     *  only mt_conv_s8_get_packed_buffer_size() bytes. Other paths ignore it. */
    const int32_t *packed;
} mt_conv_params;

/** Depthwise convolution (groups = C_in). C_out = C_in * ch_mult; output channel o reads input o / ch_mult. */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    int32_t ch_mult; /**< >= 1 */
    mt_tile stride;
    mt_padding padding;
    mt_tile dilation; /**< must be {1, 1} */
    mt_activation activation;
} mt_dw_conv_params;

/** Fully connected (Gemm / MatMul with constant weights). */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    mt_activation activation;
} mt_fc_params;

/** Max pooling. Padded taps are ignored (ONNX semantics); the output keeps the input's scale and zero point. */
typedef struct {
    mt_tile stride;
    mt_padding padding;
    mt_activation activation;
} mt_pool_params;

/**
 * Average pooling, global average pooling and ReduceMean over H, W.
 * acc = sum over the window's in-bounds taps of (x + input_offset); a window with v in-bounds taps out of
 * KH*KW uses requantisation entry i = KH*KW - v:
 *   out = clamp(requantize(acc, multiplier[i], shift[i]) + output_offset, activation)
 * so entry i encodes input_scale / (output_scale * divisor) with divisor = v (ONNX count_include_pad = 0)
 * or KH*KW (count_include_pad = 1). Without padding only entry 0 is used (num_multipliers = 1).
 * codegen/quant.py:avg_pool_multipliers() builds the table.
 */
typedef struct {
    mt_tile stride;
    mt_padding padding;
    mt_activation activation;
    int32_t input_offset;
    int32_t output_offset;
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t num_multipliers; /**< entries in multiplier[] / shift[]; a window needing more is an error */
} mt_avg_pool_params;

/**
 * Elementwise add of two int8 tensors with their own scales (residual connection), TFLite's scheme:
 *   a = requantize((x1 + input1_offset) << left_shift, input1_multiplier, input1_shift)
 *   b = requantize((x2 + input2_offset) << left_shift, input2_multiplier, input2_shift)
 *   out = clamp(requantize(a + b, output_multiplier, output_shift) + output_offset, activation)
 * Input shifts must be <= 0 (multipliers below one), left_shift in [0, 20].
 */
typedef struct {
    int32_t input1_offset;
    int32_t input1_multiplier;
    int32_t input1_shift;
    int32_t input2_offset;
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t left_shift;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    mt_activation activation;
} mt_add_params;

/* ---------------------------------------------------------------------------------------------------------
 * The rounding rule: single rounding (TFLite's TFLITE_SINGLE_ROUNDING, CMSIS-NN's CMSIS_NN_USE_SINGLE_ROUNDING).
 * Used by every kernel and by codegen/quant.py:requantize (docs/quantisation.md, section 4).
 * ------------------------------------------------------------------------------------------------------- */

/**
 * acc * multiplier * 2^(shift - 31) rounded once to nearest, ties towards +infinity, saturated to int32:
 *   total = 31 - shift                                                    (1..62)
 *   mt_requantize = sat32((int64(acc) * multiplier + 2^(total - 1)) >> total)   (arithmetic shift)
 * Defined for every int32 acc and multiplier and shift in [-31, 30]; the kernels pass multipliers in
 * [2^30, 2^31) or 0, for which the result can only saturate when shift > 0.
 *
 * Thumb-2, shift < 0 (total >= 32, every realistic conv / dense / pooling scale): with P = acc * multiplier
 * = hi * 2^32 + lo (SMULL) and k = total - 32 = ~shift in [0, 30], round-half-up of P / 2^total is
 * floor(P / 2^total) + bit (total - 1) of P = (hi >> k) + carry. ASRS by k >= 1 leaves bit k - 1 of hi in the
 * carry flag; for k = 0 the bit needed is bit 31 of lo, which LSLS #1 puts in the carry, and ASRS by a
 * register holding 0 leaves the carry alone. ADC adds it. |hi| <= 2^30, so nothing overflows: four
 * instructions plus the MVN that makes k. tests/test_kernels_qemu.py checks it on the target.
 */
MT_INLINE int32_t mt_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
#if defined(__GNUC__) && defined(__thumb2__)
    const int32_t k = ~shift; /* -shift - 1; >= 0 exactly when shift < 0 (one MVNS sets the flag too) */
    if (__builtin_expect(k >= 0, 1)) {
        int32_t lo, hi;
        __asm__("smull %0, %1, %2, %3\n\t"
                "lsls %0, %0, #1\n\t"
                "asrs %1, %1, %4\n\t"
                "adc %1, %1, #0"
                : "=&r"(lo), "=&r"(hi)
                : "r"(acc), "r"(multiplier), "r"(k)
                : "cc");
        return hi;
    }
    /* shift >= 0: total in [1, 31], so the 64-bit shift is written on 32-bit halves (13 instructions;
     * GCC's inline int64 shift by a variable amount, which must also handle amounts >= 32, takes 24). */
    const int64_t p = (int64_t)acc * multiplier + (int64_t)(1 << (30 - shift));
    const uint32_t lo = (uint32_t)p;
    const int32_t hi = (int32_t)(p >> 32);
    const int32_t total = 31 - shift;
    const int32_t r_hi = hi >> total;
    const int32_t r_lo = (int32_t)((lo >> total) | ((uint32_t)hi << (shift + 1)));
    if (r_hi != (r_lo >> 31)) { /* the 64-bit result does not fit in int32 */
        return r_hi < 0 ? INT32_MIN : INT32_MAX;
    }
    return r_lo;
#else
    const int32_t total = 31 - shift;
    const int64_t r = ((int64_t)acc * multiplier + ((int64_t)1 << (total - 1))) >> total;
    return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
#endif
}

/* ---------------------------------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------------------------------- */

/** Scratch bytes mt_conv_s8() takes at full speed for this input and filter (0 on the reference path). */
int32_t mt_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims);

/** Scratch bytes mt_conv_s8() needs with conv_params->packed set (0 on the reference path). */
int32_t mt_conv_s8_get_packed_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims);

/** The least scratch mt_conv_s8() accepts (0 on the reference path). Any size from this up gives the same
 * outputs; a smaller one widens fewer output channels per pass over the input (more instructions). */
int32_t mt_conv_s8_get_min_buffer_size(const mt_dims *filter_dims);

/**
 * 1-D / 2-D convolution, groups = 1, NHWC input, OHWI filter, per-channel requantisation.
 * bias (int32[C_out]) may be NULL. output_dims must equal the shape implied by input, filter, stride and
 * padding: H_out = (H + top + bottom - KH) / stride.h + 1 (same for W).
 */
mt_status mt_conv_s8(const mt_context *ctx,
                     const mt_conv_params *conv_params,
                     const mt_per_channel_quant_params *quant_params,
                     const mt_dims *input_dims,
                     const int8_t *input,
                     const mt_dims *filter_dims,
                     const int8_t *filter,
                     const int32_t *bias,
                     const mt_dims *output_dims,
                     int8_t *output);

/** Scratch bytes mt_depthwise_conv_s8() wants on the DSP path (0 on the reference path, for ch_mult > 1 and
 *  for fewer than 4 channels). Given less (or no) scratch the kernel still runs, on a slower DSP path. */
int32_t mt_depthwise_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims);

/**
 * Depthwise convolution, NHWC input, filter [1][KH][KW][C_out] (filter_dims: n = 1, c = C_out),
 * per-channel requantisation over C_out, bias (int32[C_out]) may be NULL.
 */
mt_status mt_depthwise_conv_s8(const mt_context *ctx,
                               const mt_dw_conv_params *dw_conv_params,
                               const mt_per_channel_quant_params *quant_params,
                               const mt_dims *input_dims,
                               const int8_t *input,
                               const mt_dims *filter_dims,
                               const int8_t *filter,
                               const int32_t *bias,
                               const mt_dims *output_dims,
                               int8_t *output);

/** Scratch bytes mt_fully_connected_s8() needs (currently always 0). */
int32_t mt_fully_connected_s8_get_buffer_size(const mt_dims *filter_dims);

/**
 * Fully connected: output[b][m] = requant(bias[m] + sum_k (input[b][k] + input_offset) * filter[m][k]).
 * input_dims: n = batch, h * w * c = K. filter_dims: n = M, c = K (h = w = 1). output_dims: n = batch, c = M
 * (h = w = 1). Per output feature requantisation (pass M equal entries for per-tensor). bias may be NULL.
 */
mt_status mt_fully_connected_s8(const mt_context *ctx,
                                const mt_fc_params *fc_params,
                                const mt_per_channel_quant_params *quant_params,
                                const mt_dims *input_dims,
                                const int8_t *input,
                                const mt_dims *filter_dims,
                                const int8_t *filter,
                                const int32_t *bias,
                                const mt_dims *output_dims,
                                int8_t *output);

/** Max pooling, NHWC; pool_dims: h = KH, w = KW. output_dims.c must equal input_dims.c. */
mt_status mt_max_pool_s8(const mt_pool_params *pool_params,
                         const mt_dims *input_dims,
                         const int8_t *input,
                         const mt_dims *pool_dims,
                         const mt_dims *output_dims,
                         int8_t *output);

/** Average pooling / global average pooling / ReduceMean over H and W (see mt_avg_pool_params). */
mt_status mt_avg_pool_s8(const mt_avg_pool_params *pool_params,
                         const mt_dims *input_dims,
                         const int8_t *input,
                         const mt_dims *pool_dims,
                         const mt_dims *output_dims,
                         int8_t *output);

/** Elementwise add of size elements (see mt_add_params). output may alias either input. */
mt_status mt_add_s8(const mt_add_params *add_params,
                    const int8_t *input1,
                    const int8_t *input2,
                    int8_t *output,
                    int32_t size);

/** Standalone ReLU / ReLU6 / Clip on a tensor with unchanged quantisation: clamp to [activation.min, max].
 *  output may alias input. Prefer fusing the clamp into the producing kernel's activation. */
mt_status mt_relu_s8(const mt_activation *activation, const int8_t *input, int8_t *output, int32_t size);

/* ---------------------------------------------------------------------------------------------------------
 * Kernels added for published models (docs/compiler.md)
 * ------------------------------------------------------------------------------------------------------- */

/** Scratch bytes mt_conv_dilated_s8() needs: the taps of up to 8 output pixels (KH * KW * C_in each). */
int32_t mt_conv_dilated_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims,
                                           const mt_dims *output_dims);

/**
 * Dilated convolution (groups = 1): as mt_conv_s8, with taps conv_params->dilation apart (any dilation >= 1).
 * H_out = (H + top + bottom - ((KH - 1) * dilation.h + 1)) / stride.h + 1 (same for W). The taps of a few
 * output pixels are gathered into the scratch buffer (padded taps as the input zero point), then
 * mt_fully_connected_s8 computes them: its DSP path is this kernel's.
 */
mt_status mt_conv_dilated_s8(const mt_context *ctx,
                             const mt_conv_params *conv_params,
                             const mt_per_channel_quant_params *quant_params,
                             const mt_dims *input_dims,
                             const int8_t *input,
                             const mt_dims *filter_dims,
                             const int8_t *filter,
                             const int32_t *bias,
                             const mt_dims *output_dims,
                             int8_t *output);

/** Elementwise table lookup: output[i] = table[input[i] + 128]. Any function of one int8 tensor
 *  (Sigmoid, HardSwish, SiLU, LeakyReLU, a scalar Mul / Add, ...) is exact as a table. output may alias input. */
mt_status mt_lut_s8(const int8_t table[256], const int8_t *input, int8_t *output, int32_t size);

/** Elementwise product of two int8 tensors (TFLite's int8 Mul):
 *    out = clamp(requantize((x1 + input1_offset) * (x2 + input2_offset), multiplier, shift) + output_offset)
 *  input2 holds input2_size values repeated along input1 (size must be a multiple of it): the same shape, one
 *  value per channel of NHWC data (a gate), or one value. */
typedef struct {
    int32_t input1_offset;
    int32_t input2_offset;
    int32_t output_offset;
    int32_t multiplier; /**< Q31, >= 0 */
    int32_t shift;      /**< in [-31, 30] */
    mt_activation activation;
} mt_mul_params;

mt_status mt_mul_s8(const mt_mul_params *mul_params,
                    const int8_t *input1,
                    const int8_t *input2,
                    int32_t input2_size,
                    int8_t *output,
                    int32_t size);

/** One input of a channel Concat: requantise (or copy, when requantize is 0) to the output's quantisation. */
typedef struct {
    int32_t requantize; /**< 0: the input has the output's scale and zero point, copy it */
    int32_t input_offset;
    int32_t output_offset;
    int32_t multiplier;
    int32_t shift;
} mt_concat_params;

/** Writes one input of a channel Concat (NHWC): pixels x in_channels values into channels
 *  [channel_start, channel_start + in_channels) of an output with out_channels channels. */
mt_status mt_concat_s8(const mt_concat_params *concat_params,
                       const int8_t *input,
                       int32_t pixels,
                       int32_t in_channels,
                       int8_t *output,
                       int32_t out_channels,
                       int32_t channel_start);

/** Constant padding of H and W (NHWC): the padded border holds pad_value (the quantised constant). */
mt_status mt_pad_s8(const mt_dims *input_dims,
                    const int8_t *input,
                    const mt_padding *padding,
                    int32_t pad_value,
                    const mt_dims *output_dims,
                    int8_t *output);

/** Nearest-neighbour resize (NHWC): output pixel (y, x) copies input pixel (rows[y], cols[x]). The compiler
 *  derives rows / cols from the model's Resize, so every ONNX coordinate mode and rounding is covered. */
mt_status mt_resize_nearest_s8(const mt_dims *input_dims,
                               const int8_t *input,
                               const int32_t *rows,
                               const int32_t *cols,
                               const mt_dims *output_dims,
                               int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_H */
