/*
 * mcu-train int8 kernel library: public API.
 *
 * Quantisation follows the TFLite int8 scheme, written down in docs/quantisation.md:
 *   real = scale * (q - zero_point)
 *   weights: per output channel, symmetric (zero point 0), int8 in [-127, 127]
 *   activations: per tensor, asymmetric int8 (zero point in [-128, 127])
 *   bias: int32 with scale input_scale * weight_scale[channel], zero point 0
 *   requantisation: out = clamp(requantize(acc, multiplier, shift) + output_offset, act_min, act_max)
 * where requantize() is the double-rounding rule below (SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT), the same function in every kernel and in codegen/quant.py.
 *
 * Layout is channels-last: NHWC for 2-D tensors; a 1-D tensor (N, W, C) is NHWC with H = 1.
 * Conv filters are OHWI [C_out][KH][KW][C_in]; depthwise filters are [1][KH][KW][C_out];
 * fully connected weights are [M][K] (one row per output feature).
 *
 * Every kernel has a plain C reference path and, when __ARM_FEATURE_DSP is defined (Cortex-M4/M7/M33),
 * a SIMD path built on ACLE intrinsics that gives bit-identical results. Define MT_FORCE_REFERENCE to
 * build the reference path on a DSP core (the on-target tests compare both).
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
 * The rounding rule (TFLite's default, "double rounding"). Used by every kernel and by codegen/quant.py.
 * ------------------------------------------------------------------------------------------------------- */

/** round(a * b / 2^31), ties towards +infinity; saturates the single overflow case a = b = INT32_MIN.
 *  Equal to gemmlowp's SaturatingRoundingDoublingHighMul. */
MT_INLINE int32_t mt_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
#if defined(__GNUC__) && defined(__thumb2__)
    /* one SMLAL (GCC sometimes turns the C form into a 64 x 64-bit multiply) */
    uint32_t lo = 1u << 30;
    int32_t hi = 0;
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(a), "r"(b));
    return (int32_t)((lo >> 31) | ((uint32_t)hi << 1));
#else
    const int64_t ab = (int64_t)a * (int64_t)b + ((int64_t)1 << 30);
    return (int32_t)(ab >> 31); /* arithmetic shift: floor */
#endif
}

/** round(x / 2^exponent), ties away from zero, exponent in [0, 31]. Equal to gemmlowp's RoundingDivideByPOT. */
MT_INLINE int32_t mt_divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/** x * 2^n saturated to int32 (n in [0, 30]). */
MT_INLINE int32_t mt_saturating_left_shift(int32_t x, int32_t n)
{
    if (x > (INT32_MAX >> n)) {
        return INT32_MAX;
    }
    if (x < (INT32_MIN >> n)) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << n);
}

/**
 * acc * multiplier * 2^(shift - 31), rounded twice as TFLite does (shift in [-31, 30]):
 *   shift > 0:  mt_doubling_high_mul(mt_saturating_left_shift(acc, shift), multiplier)
 *   shift <= 0: mt_divide_by_pot(mt_doubling_high_mul(acc, multiplier), -shift)
 * For shift < 0 the division is written in a cheaper form that gives the same value for every x the
 * multiply can return (x > INT32_MIN): with e = -shift >= 1, y = x - (x < 0) and t = y >> (e - 1),
 *   round-half-away(x / 2^e) = floor((y + 2^(e-1)) / 2^e) = ceil(t / 2) = (t >> 1) + (t & 1).
 * (For x < 0 with remainder r, y's remainder is r - 1, so a tie r = 2^(e-1) no longer rounds up.)
 * tests/test_kernels_host.py checks it against the two-function form on random and edge values.
 */
MT_INLINE int32_t mt_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    if (shift >= 0) {
        return mt_doubling_high_mul(shift > 0 ? mt_saturating_left_shift(acc, shift) : acc, multiplier);
    }
    const int32_t x = mt_doubling_high_mul(acc, multiplier); /* never INT32_MIN */
    const int32_t y = x + (x >> 31);
    const int32_t t = y >> (-shift - 1);
    return (t >> 1) + (t & 1);
}

/* ---------------------------------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------------------------------- */

/** Scratch bytes mt_conv_s8() needs for this filter (0 on the reference path). */
int32_t mt_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims);

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

/** Scratch bytes mt_depthwise_conv_s8() needs (currently always 0). */
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

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_H */
