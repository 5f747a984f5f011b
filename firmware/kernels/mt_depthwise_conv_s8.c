/*
 * mt_depthwise_conv_s8: int8 depthwise convolution (groups = C_in, channel multiplier ch_mult), NHWC input,
 * filter [1][KH][KW][C_out], per-channel requantisation.
 *
 * Reference path: one loop nest per output value (also used on the DSP build when ch_mult > 1).
 * DSP path (ch_mult = 1, C >= 4) with the scratch buffer of mt_depthwise_conv_s8_get_buffer_size(): the channels
 * go in quads (the last one overlaps its neighbour when C % 4 != 0). The scratch holds, per quad, a record
 * (mt_pass, mt_support.h) followed by its KH x KW taps' weights widened once ((c0, c2), (c1, c3) per tap), then a
 * ring of KH + 1 input rows (plus a zero row for vertical padding), each widened once with the input offset added
 * (SXTAB16) and zero padding at both ends, quad-major so that one quad's words of neighbouring columns are 8 bytes
 * apart. A pass computes two horizontally adjacent outputs x every quad: per tap one weight pair and two input
 * pairs and 8 SMLABB / SMLATT, then the shared output stage (single rounding, packed clamp, one word per output
 * position). 3x3 with stride 1 runs as assembly (mt_dw_pair_asm) when every shift is in [-23, -2]: there each
 * kernel row loads its 4 input columns once (column k + 1 serves the second output's tap k, then the first
 * output's tap k + 1); the last column of an odd output width goes in vertical pairs, output rows 2i and 2i + 1
 * (mt_dw_vpair_asm: each of the KH + 1 input rows loaded once for both windows, the reason for the ring's extra
 * row), with a one-output pass (mt_dw_one_asm) for the last row of an odd height or stride 2 rows. Other
 * shapes and shifts run the pass in C, where an odd output width pairs its last column with a dummy whose
 * outputs go to a trash area.
 * DSP path without that scratch (or C < 4): 4 channels at a time; per tap one word of input and one of filter
 * are widened with SXTAB16 / SXTB16 and multiplied lane by lane with SMLABB / SMLATT (mt_dw_pixel).
 */
#include "mt_support.h"

#if MT_USE_DSP
static int32_t mt_dw_rec_words(const mt_dims *f)
{
    return MT_PASS_REC_WORDS + 2 * f->h * f->w;
}

/* Ring columns for an output row of w_out positions (rounded up to pairs) at the given stride. */
static int32_t mt_dw_cols(int32_t w_out, int32_t kw, int32_t stride)
{
    return stride * (((w_out + 1) & ~1) - 1) + kw;
}

/* The ring: KH + 1 rows (the windows of two output rows) and one zero row, each cols x quads x 2 words. */
static int32_t mt_dw_ring_bytes(const mt_dims *f, int32_t cols)
{
    return (f->h + 2) * cols * ((f->c + 3) >> 2) * 8;
}
#endif

int32_t mt_depthwise_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
#if MT_USE_DSP
    /* Records and weights, the ring for output rows as wide as the input plus KW - 1 (padding up to KW - 1 on
     * each side) at stride 1, the trash outputs; 0 where the scratch path does not apply. */
    if (filter_dims->c != input_dims->c || filter_dims->c < 4) {
        return 0;
    }
    const int32_t quads = (filter_dims->c + 3) >> 2;
    const int32_t cols = mt_dw_cols(input_dims->w + filter_dims->w - 1, filter_dims->w, 1);
    return quads * mt_dw_rec_words(filter_dims) * 4 + mt_dw_ring_bytes(filter_dims, cols) +
           ((filter_dims->c + 3) & ~3);
#else
    (void)input_dims;
    (void)filter_dims;
    return 0;
#endif
}

static void mt_dw_reference(const mt_dw_conv_params *p, const mt_per_channel_quant_params *q,
                            const mt_dims *input_dims, const int8_t *input, const mt_dims *filter_dims,
                            const int8_t *filter, const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * input_dims->w * c_in;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0); /* taps outside the input are zero padding: skipped */
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(filter_dims->w, input_dims->w - ix0);
                for (int32_t oc = 0; oc < c_out; oc++) {
                    const int32_t ic = oc / p->ch_mult;
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int32_t x = in[((iy0 + ky) * input_dims->w + ix0 + kx) * c_in + ic];
                            const int32_t w = filter[(ky * filter_dims->w + kx) * c_out + oc];
                            acc += (x + p->input_offset) * w;
                        }
                    }
                    *output++ = mt_output_s8(acc, q->multiplier[oc], q->shift[oc], lo, hi, p->output_offset);
                }
            }
        }
    }
}

#if MT_USE_DSP
typedef struct {
    int32_t c;        /* channels (input = output, ch_mult = 1) */
    int32_t x_row;    /* bytes between input rows */
    int32_t w_row;    /* bytes between filter rows */
    int32_t off16x2;  /* input offset in both halfwords */
    int32_t out_off;
    uint32_t min4, max4;
    int32_t lo, hi;   /* activation bounds minus the output offset (scalar tail) */
    int32_t input_offset;
} mt_dw_ctx;

/* One tap for 4 channels: widen a word of input (+ offset) and of filter, 4 lane-wise MACs. */
#define MT_DW_TAP(xp, wp) \
    do { \
        const int32_t xv_ = mt_read_s32(xp); \
        const int32_t wv_ = mt_read_s32(wp); \
        const int32_t xl_ = mt_lo_off(xv_, off16x2); \
        const int32_t wl_ = mt_lo(wv_); \
        a0 = __smlabb(xl_, wl_, a0); \
        a2 = __smlatt(xl_, wl_, a2); \
        const int32_t xh_ = mt_hi_off(xv_, off16x2); \
        const int32_t wh_ = mt_hi(wv_); \
        a1 = __smlabb(xh_, wh_, a1); \
        a3 = __smlatt(xh_, wh_, a3); \
    } while (0)

/* All channels of one output pixel: window rows x taps starting at x (input) and w (filter). */
static __attribute__((noinline)) MT_NO_PRESCHED void mt_dw_pixel(const mt_dw_ctx *k, const int8_t *x,
                                                                 const int8_t *w, int32_t rows, int32_t taps,
                                                                 const int32_t *bias, const int32_t *mult,
                                                                 const int32_t *shift, int8_t *out)
{
    const int32_t c = k->c;
    const int32_t off16x2 = k->off16x2;
    int32_t ch = 0;
    for (; ch + 4 <= c; ch += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        if (bias) {
            a0 = bias[ch];
            a1 = bias[ch + 1];
            a2 = bias[ch + 2];
            a3 = bias[ch + 3];
        }
        const int8_t *xr = x + ch;
        const int8_t *wr = w + ch;
        if (taps == 3) { /* the common 3-wide window: input and filter taps are both c bytes apart */
            const int32_t c2 = 2 * c;
            for (int32_t r = rows; r > 0; r--) {
                MT_DW_TAP(xr, wr);
                MT_DW_TAP(xr + c, wr + c);
                MT_DW_TAP(xr + c2, wr + c2);
                xr += k->x_row;
                wr += k->w_row;
            }
        } else {
            for (int32_t r = rows; r > 0; r--) {
                const int8_t *xp = xr;
                const int8_t *wp = wr;
                for (int32_t i = taps; i > 0; i--) {
                    MT_DW_TAP(xp, wp);
                    xp += c;
                    wp += c;
                }
                xr += k->x_row;
                wr += k->w_row;
            }
        }
        const uint32_t v = mt_pack4(mt_requant_sat8(a0, mult[ch], shift[ch], k->out_off),
                                    mt_requant_sat8(a1, mult[ch + 1], shift[ch + 1], k->out_off),
                                    mt_requant_sat8(a2, mult[ch + 2], shift[ch + 2], k->out_off),
                                    mt_requant_sat8(a3, mult[ch + 3], shift[ch + 3], k->out_off));
        mt_write_s32(out + ch, (int32_t)mt_clamp4(v, k->min4, k->max4));
    }
    for (; ch < c; ch++) {
        int32_t a = bias ? bias[ch] : 0;
        const int8_t *xr = x + ch;
        const int8_t *wr = w + ch;
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t i = 0; i < taps; i++) {
                a += ((int32_t)xr[i * c] + k->input_offset) * (int32_t)wr[i * c];
            }
            xr += k->x_row;
            wr += k->w_row;
        }
        out[ch] = mt_output_s8(a, mult[ch], shift[ch], k->lo, k->hi, k->out_off);
    }
}

static void mt_dw_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *input_dims,
                      const int8_t *input, const mt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                      const mt_dims *output_dims, int8_t *output)
{
    const int32_t c = input_dims->c;
    const int32_t in_w = input_dims->w;
    const int32_t kw = filter_dims->w;
    const mt_dw_ctx k = {c, in_w * c, kw * c, mt_pack_off16x2(p->input_offset), p->output_offset,
                         mt_splat4(p->activation.min), mt_splat4(p->activation.max),
                         p->activation.min - p->output_offset, p->activation.max - p->output_offset,
                         p->input_offset};

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * in_w * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0);
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(kw, in_w - ix0);
                /* rows / taps may be <= 0 only when a window lies entirely in the padding: then the pointers
                 * below are never dereferenced */
                const int32_t rows = MT_MAX(0, ky1 - ky0);
                const int32_t taps = MT_MAX(0, kx1 - kx0);
                const int8_t *x = in + ((iy0 + ky0) * in_w + ix0 + kx0) * c;
                const int8_t *w = filter + (ky0 * kw + kx0) * c;
                mt_dw_pixel(&k, x, w, taps ? rows : 0, taps, bias, q->multiplier, q->shift, output);
                output += c;
            }
        }
    }
}
#endif

#if MT_USE_DSP
/* The pass in C: x points at the KH row pointers (quad 0, the first output's window column). */
static void mt_dw_pair_c(const mt_pass *j, const mt_dims *f, int32_t stride, int32_t cols)
{
    const int32_t *const *rows = (const int32_t *const *)(const void *)j->x;
    const int32_t *r = j->w;
    for (int32_t q = 0; q < j->quads; q++, r += mt_dw_rec_words(f)) {
        int32_t a[8];
        for (int32_t c = 0; c < 4; c++) {
            a[c] = a[c + 4] = r[c];
        }
        for (int32_t ky = 0; ky < f->h; ky++) {
            const int32_t *x = rows[ky] + 2 * q * cols;
            for (int32_t kx = 0; kx < f->w; kx++) {
                const int32_t *w = r + MT_PASS_REC_WORDS + 2 * (ky * f->w + kx);
                const int32_t *x0 = x + 2 * kx, *x1 = x + 2 * (kx + stride);
                a[0] = __smlabb(x0[0], w[0], a[0]);
                a[2] = __smlatt(x0[0], w[0], a[2]);
                a[1] = __smlabb(x0[1], w[1], a[1]);
                a[3] = __smlatt(x0[1], w[1], a[3]);
                a[4] = __smlabb(x1[0], w[0], a[4]);
                a[6] = __smlatt(x1[0], w[0], a[6]);
                a[5] = __smlabb(x1[1], w[1], a[5]);
                a[7] = __smlatt(x1[1], w[1], a[7]);
            }
        }
        mt_pass_store(j, r, a);
    }
}

#if defined(__GNUC__) && defined(__thumb2__)
void mt_dw_pair_asm(const mt_pass *j);
void mt_dw_one_asm(const mt_pass *j);
void mt_dw_vpair_asm(const mt_pass *j);

/* 4 lane-wise MACs of the input pair r8 / r9 with the weight pair r10 / r11: A0-A3 = B0-B3 + the products. */
#define MT_DW_MAC(A0, A1, A2, A3, B0, B1, B2, B3) \
    "smlabb " A0 ", r8, r10, " B0 "\n\t" \
    "smlatt " A2 ", r8, r10, " B2 "\n\t" \
    "smlabb " A1 ", r9, r11, " B1 "\n\t" \
    "smlatt " A3 ", r9, r11, " B3 "\n\t"
#define MT_DW_OUT0 MT_DW_MAC("r0", "r1", "r2", "r3", "r0", "r1", "r2", "r3")
#define MT_DW_OUT1 MT_DW_MAC("r4", "r5", "r6", "r7", "r4", "r5", "r6", "r7")
/* The first MAC of the first output: the biases are in r4-r7 (the second output's accumulators). */
#define MT_DW_OUT0_BIAS MT_DW_MAC("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7")

/* Kernel row ky of a 3x3 window for two outputs (r12 = the row's first column for this quad, lr = the record,
 * W0 / W1 / W2 the byte offsets of its taps' weight pairs, FIRST the first MAC block): input column k + 1 serves
 * the second output's tap k and then the first output's tap k + 1, so each of the 4 columns is loaded once (the
 * first with the weights as a pipelined LDR chain). */
#define MT_DW_ROW2(FIRST, W0, W04, W1, W2) \
    "ldr r8, [r12]\n\t" \
    "ldr r9, [r12, #4]\n\t" \
    "ldr r10, [lr, #" W0 "]\n\t" \
    "ldr r11, [lr, #" W04 "]\n\t" FIRST \
    "ldrd r8, r9, [r12, #8]\n\t" MT_DW_OUT1 \
    "ldrd r10, r11, [lr, #" W1 "]\n\t" MT_DW_OUT0 \
    "ldrd r8, r9, [r12, #16]\n\t" MT_DW_OUT1 \
    "ldrd r10, r11, [lr, #" W2 "]\n\t" MT_DW_OUT0 \
    "ldrd r8, r9, [r12, #24]\n\t" MT_DW_OUT1

/* Kernel row ky for one output: its 3 columns in one LDM (r4-r9), the weights tap by tap. */
#define MT_DW_ROW1(W0, W1, W2) \
    "ldm r12, {r4, r5, r6, r7, r8, r9}\n\t" \
    "ldrd r10, r11, [lr, #" W0 "]\n\t" \
    "smlabb r0, r4, r10, r0\n\t" \
    "smlatt r2, r4, r10, r2\n\t" \
    "smlabb r1, r5, r11, r1\n\t" \
    "smlatt r3, r5, r11, r3\n\t" \
    "ldrd r10, r11, [lr, #" W1 "]\n\t" \
    "smlabb r0, r6, r10, r0\n\t" \
    "smlatt r2, r6, r10, r2\n\t" \
    "smlabb r1, r7, r11, r1\n\t" \
    "smlatt r3, r7, r11, r3\n\t" \
    "ldrd r10, r11, [lr, #" W2 "]\n\t" MT_DW_OUT0

/* The frame of a 3x3 pass over every quad (NAME: a global function taking the mt_pass; BODY one quad's MACs and
 * output stage, which leaves lr alone; ROWS the registers of its 3 or 4 input rows, ADVANCE their step to the next
 * quad's, in r9). Registers: r0-r3 (and r4-r7 for two outputs) the accumulators, r8-r11 input and weight words,
 * r12 the kernel row's input, lr the record. Stack: [0] job, [4] quads left, [8..20] the rows' input for this
 * quad, [24] the quad step. */
#define MT_DW_ASM_FRAME(NAME, ROWS, ADVANCE, BODY) \
    MT_ASM_FUNCTION(NAME) \
    "push {r4-r11, lr}\n\t" \
    "sub sp, #28\n\t" \
    "str r0, [sp]\n\t" \
    "ldr r1, [r0, #8]\n\t" \
    "ldm r1, {" ROWS "}\n\t" \
    "add r1, sp, #8\n\t" \
    "stm r1, {" ROWS "}\n\t" \
    "ldr r2, [r0, #4]\n\t" \
    "ldr r3, [r0, #12]\n\t" \
    "str r2, [sp, #4]\n\t" \
    "str r3, [sp, #24]\n\t" \
    "ldr lr, [r0]\n" \
    "1:\n\t" BODY \
    "ldr r9, [sp, #24]\n\t" /* the next quad: its rows and its record */ \
    "add r10, sp, #8\n\t" \
    "ldm r10, {" ROWS "}\n\t" ADVANCE \
    "stm r10, {" ROWS "}\n\t" \
    "add lr, lr, #140\n\t" \
    "ldr r3, [sp, #4]\n\t" \
    "subs r3, r3, #1\n\t" \
    "str r3, [sp, #4]\n\t" \
    "bne 1b\n\t" \
    "add sp, #28\n\t" \
    "pop {r4-r11, pc}\n" \
    ".size " NAME ", . - " NAME "\n"
#define MT_DW_ADVANCE3 "add r2, r2, r9\n\t" "add r3, r3, r9\n\t" "add r4, r4, r9\n\t"

/* A pass of one output or two horizontally adjacent ones (INIT loads the biases from the record at lr, ROW0 / ROW
 * the first / other kernel rows, OUTPUT the output stage). */
#define MT_DW_ASM_PASS(NAME, INIT, ROW0, ROW, OUTPUT) \
    MT_DW_ASM_FRAME(NAME, "r2, r3, r4", MT_DW_ADVANCE3, \
                    INIT "ldr r12, [sp, #8]\n\t" ROW0("68", "72", "76", "84") \
                    "ldr r12, [sp, #12]\n\t" ROW("92", "96", "100", "108") \
                    "ldr r12, [sp, #16]\n\t" ROW("116", "120", "124", "132") "mov r12, lr\n\t" OUTPUT)
#define MT_DW_ROW2_FIRST(W0, W04, W1, W2) MT_DW_ROW2(MT_DW_OUT0_BIAS, W0, W04, W1, W2)
#define MT_DW_ROW2_NEXT(W0, W04, W1, W2) MT_DW_ROW2(MT_DW_OUT0, W0, W04, W1, W2)
#define MT_DW_ROW1_OF(W0, W04, W1, W2) MT_DW_ROW1(W0, W1, W2)

/* Input row R (0-3) of a vertical pair's 3x3 windows (the first output's rows 0-2, the second's 1-3): each of
 * its 3 columns is loaded once and serves the first output's tap (R, kx) (weights at WA*) and the second's tap
 * (R - 1, kx) (WB*); row 0 only the first output (FIRST: its first MAC takes the biases), row 3 only the
 * second. */
#define MT_DW_VCOL(X, A, B) "ldrd r8, r9, [r12, #" X "]\n\t" B A
#define MT_DW_WA(W, MAC) "ldrd r10, r11, [lr, #" W "]\n\t" MAC
#define MT_DW_VROW0 \
    "ldr r12, [sp, #8]\n\t" \
    MT_DW_VCOL("0", MT_DW_WA("68", MT_DW_OUT0_BIAS), "") \
    MT_DW_VCOL("8", MT_DW_WA("76", MT_DW_OUT0), "") \
    MT_DW_VCOL("16", MT_DW_WA("84", MT_DW_OUT0), "")
#define MT_DW_VROW(SP, WA0, WA1, WA2, WB0, WB1, WB2) \
    "ldr r12, [sp, #" SP "]\n\t" \
    MT_DW_VCOL("0", MT_DW_WA(WA0, MT_DW_OUT0), MT_DW_WA(WB0, MT_DW_OUT1)) \
    MT_DW_VCOL("8", MT_DW_WA(WA1, MT_DW_OUT0), MT_DW_WA(WB1, MT_DW_OUT1)) \
    MT_DW_VCOL("16", MT_DW_WA(WA2, MT_DW_OUT0), MT_DW_WA(WB2, MT_DW_OUT1))
#define MT_DW_VROW3 \
    "ldr r12, [sp, #20]\n\t" \
    MT_DW_VCOL("0", "", MT_DW_WA("116", MT_DW_OUT1)) \
    MT_DW_VCOL("8", "", MT_DW_WA("124", MT_DW_OUT1)) \
    MT_DW_VCOL("16", "", MT_DW_WA("132", MT_DW_OUT1))

/* Two vertically adjacent outputs (the last column of an odd width, two output rows) x every quad. */
#define MT_DW_ASM_VPAIR(NAME) \
    MT_DW_ASM_FRAME(NAME, "r2, r3, r4, r5", MT_DW_ADVANCE3 "add r5, r5, r9\n\t", \
                    "ldm lr, {r4, r5, r6, r7}\n\t" MT_DW_VROW0 \
                    MT_DW_VROW("12", "92", "100", "108", "68", "76", "84") \
                    MT_DW_VROW("16", "116", "124", "132", "92", "100", "108") MT_DW_VROW3 \
                    "mov r12, lr\n\t" MT_ASM_PASS_OUTPUT)

__asm__(".syntax unified\n"
        ".thumb\n"
        MT_DW_ASM_PASS("mt_dw_pair_asm", "ldm lr, {r4, r5, r6, r7}\n\t", MT_DW_ROW2_FIRST, MT_DW_ROW2_NEXT,
                       MT_ASM_PASS_OUTPUT)
        MT_DW_ASM_PASS("mt_dw_one_asm", "ldm lr, {r0, r1, r2, r3}\n\t", MT_DW_ROW1_OF, MT_DW_ROW1_OF,
                       MT_ASM_PASS_OUTPUT1)
        MT_DW_ASM_VPAIR("mt_dw_vpair_asm")
        ".text\n");
#endif

/* n words of input (4 channels each) widened with the offset added into one column of n quads of a ring row
 * (qstep words apart); returns where quad n goes. */
MT_INLINE int32_t *mt_dw_widen_quads(const int8_t *src, int32_t n, int32_t off16x2, int32_t qstep, int32_t *d)
{
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t a, b, t;
    const int32_t step = 4 * qstep;
    __asm__ volatile("subs %[n], %[n], #2\n\t" /* two quads a round (LDRs: the input may be unaligned) */
                     "blt 2f\n"
                     "1:\n\t"
                     "ldr %[a], [%[s]], #4\n\t"
                     "ldr %[b], [%[s]], #4\n\t"
                     "sxtab16 %[t], %[off], %[a]\n\t"
                     "sxtab16 %[a], %[off], %[a], ror #8\n\t"
                     "str %[t], [%[d]]\n\t"
                     "str %[a], [%[d], #4]\n\t"
                     "add %[d], %[d], %[step]\n\t"
                     "sxtab16 %[t], %[off], %[b]\n\t"
                     "sxtab16 %[b], %[off], %[b], ror #8\n\t"
                     "str %[t], [%[d]]\n\t"
                     "str %[b], [%[d], #4]\n\t"
                     "add %[d], %[d], %[step]\n\t"
                     "subs %[n], %[n], #2\n\t"
                     "bge 1b\n"
                     "2:\n\t"
                     "adds %[n], %[n], #2\n\t" /* 0 or 1 quad left */
                     "beq 3f\n\t"
                     "ldr %[a], [%[s]], #4\n\t"
                     "sxtab16 %[t], %[off], %[a]\n\t"
                     "sxtab16 %[a], %[off], %[a], ror #8\n\t"
                     "str %[t], [%[d]]\n\t"
                     "str %[a], [%[d], #4]\n\t"
                     "add %[d], %[d], %[step]\n"
                     "3:"
                     : [s] "+r"(src), [n] "+r"(n), [d] "+r"(d), [a] "=&r"(a), [b] "=&r"(b), [t] "=&r"(t)
                     : [off] "r"(off16x2), [step] "r"(step)
                     : "cc", "memory");
#else
    for (; n > 0; n--, src += 4, d += qstep) {
        const int32_t v = mt_read_s32(src);
        d[0] = mt_lo_off(v, off16x2);
        d[1] = mt_hi_off(v, off16x2);
    }
#endif
    return d;
}

/* Widens input row `row` into a ring row: for each quad, cols columns of 2 words, column j holding input column
 * j - left. The columns outside the input are zeros, written once per ring row by a call with row NULL (which
 * writes nothing else). */
static void mt_dw_ring_row(const int8_t *row, int32_t w_in, int32_t c, int32_t left, int32_t cols, int32_t off16x2,
                           int32_t *dst)
{
    const int32_t quads = (c + 3) >> 2, qstep = 2 * cols;
    for (int32_t j = 0; j < cols; j++) {
        const int32_t ix = j - left;
        int32_t *d = dst + 2 * j;
        if (ix < 0 || ix >= w_in) {
            for (int32_t q = 0; q < quads && !row; q++, d += qstep) {
                d[0] = d[1] = 0;
            }
            continue;
        }
        if (!row) {
            continue;
        }
        d = mt_dw_widen_quads(row + ix * c, quads - 1, off16x2, qstep, d);
        const int32_t v = mt_read_s32(row + ix * c + c - 4); /* the last quad overlaps when C % 4 != 0 */
        d[0] = mt_lo_off(v, off16x2);
        d[1] = mt_hi_off(v, off16x2);
    }
}

/* The depthwise convolution with scratch (ch_mult = 1, C >= 4; arguments checked). Returns 0 when the scratch
 * is too small for this shape (the caller falls back). */
static MT_NO_LIBCALLS int mt_dw_scratch(const mt_context *ctx, const mt_dw_conv_params *p,
                                        const mt_per_channel_quant_params *q, const mt_dims *input_dims,
                                        const int8_t *input, const mt_dims *filter_dims, const int8_t *filter,
                                        const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c = input_dims->c, quads = (c + 3) >> 2, kh = filter_dims->h, kw = filter_dims->w;
    const int32_t w_out = output_dims->w, sw = p->stride.w;
    const int32_t cols = mt_dw_cols(w_out, kw, sw);
    const int32_t rec_words = mt_dw_rec_words(filter_dims);
    const int32_t ring_bytes = mt_dw_ring_bytes(filter_dims, cols);
    if (ctx == 0 || ctx->buf == 0 || ((uintptr_t)ctx->buf & 3u) != 0 || kh > 8 ||
        quads * rec_words * 4 + ring_bytes + ((c + 3) & ~3) > ctx->size) {
        return 0;
    }
    int32_t *recs = (int32_t *)ctx->buf;
    int32_t *ring = recs + quads * rec_words;
    const int32_t row_words = 2 * cols * quads;
    int32_t *zero_row = ring + (kh + 1) * row_words;
    int8_t *trash = (int8_t *)(zero_row + row_words);
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);

    int fast = kh == 3 && kw == 3 && sw == 1;
    int32_t *r = recs;
    for (int32_t qi = 0; qi < quads; qi++, r += rec_words) {
        const int32_t ch = MT_MIN(4 * qi, c - 4);
        fast &= mt_pass_record(r, bias, q, ch, c, p->output_offset);
        for (int32_t t = 0; t < kh * kw; t++) {
            const int32_t v = mt_read_s32(filter + t * c + ch);
            r[MT_PASS_REC_WORDS + 2 * t] = mt_lo(v);
            r[MT_PASS_REC_WORDS + 2 * t + 1] = mt_hi(v);
        }
    }
    for (int32_t i = 0; i < row_words; i++) { /* a loop: GCC's memset call costs more here */
        zero_row[i] = 0;
    }
    for (int32_t k = 0; k <= kh; k++) {
        mt_dw_ring_row(0, input_dims->w, c, p->padding.left, cols, off16x2, ring + k * row_words);
    }

    mt_pass j;
    j.w = recs;
    j.quads = quads;
    j.step = 8 * cols; /* bytes from one quad's row to the next's */
    j.out_off = p->output_offset;
    j.min4 = mt_splat4(p->activation.min);
    j.max4 = mt_splat4(p->activation.max);
    j.tail = 4;
    int32_t ring_row[9]; /* the input row (batch * H + y) each ring row holds, or -1 */
    for (int32_t k = 0; k <= kh; k++) {
        ring_row[k] = -1;
    }
    /* an odd width's last column goes in vertical pairs (rows 2i and 2i + 1, the ring holding both windows) */
    const int vertical = fast && (w_out & 1) && p->stride.h == 1;
    for (int32_t b = 0; b < output_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * input_dims->w * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int vpair = vertical && (oy & 1) == 0 && oy + 1 < output_dims->h;
            const int32_t *rows[9];
            for (int32_t ky = 0; ky < kh + vpair; ky++) {
                const int32_t iy = oy * p->stride.h - p->padding.top + ky;
                if (iy < 0 || iy >= input_dims->h) {
                    rows[ky] = zero_row;
                    continue;
                }
                const int32_t slot = iy % (kh + 1);
                int32_t *dst = ring + slot * row_words;
                if (ring_row[slot] != b * input_dims->h + iy) {
                    ring_row[slot] = b * input_dims->h + iy;
                    mt_dw_ring_row(in + iy * input_dims->w * c, input_dims->w, c, p->padding.left, cols, off16x2,
                                   dst);
                }
                rows[ky] = dst;
            }
            int8_t *out_row = output + (b * output_dims->h + oy) * w_out * c;
            for (int32_t ox = 0; ox < w_out; ox += 2) {
                const int32_t *x[9];
                for (int32_t ky = 0; ky < kh + vpair; ky++) {
                    x[ky] = rows[ky] + 2 * ox * sw;
                }
                j.x = (const int32_t *)(const void *)x;
                j.out0 = out_row + ox * c;
                j.out1 = ox + 1 < w_out ? j.out0 + c : trash;
#if defined(__GNUC__) && defined(__thumb2__)
                if (fast) {
                    if (ox + 1 < w_out) {
                        mt_dw_pair_asm(&j);
                    } else if (vpair) {
                        j.out1 = j.out0 + w_out * c; /* the same column of the next row */
                        mt_dw_vpair_asm(&j);
                    } else if (!vertical || (oy & 1) == 0) {
                        mt_dw_one_asm(&j); /* no partner (stride 2 rows, or the last of an odd height) */
                    }
                    continue;
                }
#endif
                mt_dw_pair_c(&j, filter_dims, sw, cols);
            }
        }
    }
    return 1;
}
#endif

#if MT_USE_MVE
/* Helium path (ch_mult = 1): per output pixel, 8 channels per step as int16 lanes: each in-bounds tap widens 8
 * input bytes (VLDRB.S16) and adds the input offset, widens 8 weights, and multiplies into 32-bit even-lane and
 * odd-lane accumulators (VMULLB / VMULLT); then two vector requantisations (mt_mve_store4 on the even and odd
 * channels, the parameters deinterleaved beforehand into the scratch buffer) scatter the 8 bytes; channel tails
 * predicated. Scratch: those parameters (the DSP path's scratch is larger); returns 0 without it. */
static int mt_dw_mve(const mt_context *ctx, const mt_dw_conv_params *p, const mt_per_channel_quant_params *q,
                     const mt_dims *input_dims, const int8_t *input, const mt_dims *f, const int8_t *filter,
                     const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c = input_dims->c, c8 = (c + 7) & ~7;
    if (ctx == 0 || ctx->buf == 0 || ((uintptr_t)ctx->buf & 3u) != 0 || 24 * c8 > ctx->size) {
        return 0;
    }
    int32_t *prm = (int32_t *)ctx->buf; /* per 8 channels: bias, multiplier, rnd, nk, each even then odd lanes */
    int32_t *rnd = prm + 4 * c8, *nk = rnd + c8; /* staging for mt_mve_round, channel order */
    if (!mt_mve_round(q, c, p->output_offset, rnd, nk)) {
        return 0;
    }
    for (int32_t ch = 0; ch < c8; ch++) {
        const int32_t g = ch >> 3, lane = (ch & 7) >> 1, odd = ch & 1;
        int32_t *d = prm + 32 * g + 4 * odd + lane; /* [bias e, bias o, mult e, mult o, rnd e, rnd o, nk e, nk o] */
        const int valid = ch < c;
        d[0] = valid && bias ? bias[ch] : 0;
        d[8] = valid ? q->multiplier[ch] : 0;
        d[16] = valid ? rnd[ch] : 0;
        d[24] = valid ? nk[ch] : 0;
    }
    static const uint32_t even_off[4] = {0, 2, 4, 6};
    const uint32x4_t evens = vldrwq_u32(even_off), odds = vaddq_n_u32(evens, 1);
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * input_dims->h * input_dims->w * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0), ky1 = MT_MIN(f->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++, output += c) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0), kx1 = MT_MIN(f->w, input_dims->w - ix0);
                const int32_t taps = kx1 - kx0;
                for (int32_t ch = 0; ch < c; ch += 8) {
                    const int32_t *g = prm + 4 * ch;
                    int32x4_t even = vldrwq_s32(g), odd = vldrwq_s32(g + 4);
                    const int8_t *xr = in + ((iy0 + ky0) * input_dims->w + ix0 + kx0) * c + ch;
                    const int8_t *wr = filter + (ky0 * f->w + kx0) * c + ch;
                    if (ch + 8 <= c) { /* a whole group: no predicates */
                        for (int32_t ky = ky0; ky < ky1; ky++, xr += input_dims->w * c, wr += f->w * c) {
                            const int8_t *x = xr, *w = wr;
                            for (int32_t t = taps; t > 0; t--, x += c, w += c) {
                                const int16x8_t xv = vaddq_n_s16(vldrbq_s16(x), (int16_t)p->input_offset);
                                const int16x8_t wv = vldrbq_s16(w);
                                even = vaddq_s32(even, vmullbq_int_s16(xv, wv));
                                odd = vaddq_s32(odd, vmulltq_int_s16(xv, wv));
                            }
                        }
                    } else {
                        const mve_pred16_t p8 = vctp16q((uint32_t)(c - ch));
                        for (int32_t ky = ky0; ky < ky1; ky++, xr += input_dims->w * c, wr += f->w * c) {
                            const int8_t *x = xr, *w = wr;
                            for (int32_t t = taps; t > 0; t--, x += c, w += c) {
                                const int16x8_t xv = vaddq_n_s16(vldrbq_z_s16(x, p8), (int16_t)p->input_offset);
                                const int16x8_t wv = vldrbq_z_s16(w, p8);
                                even = vaddq_s32(even, vmullbq_int_s16(xv, wv));
                                odd = vaddq_s32(odd, vmulltq_int_s16(xv, wv));
                            }
                        }
                    }
                    /* even lanes are channels ch, ch + 2, ..; requantise, clamp, scatter the bytes */
                    for (int32_t half = 0; half < 2; half++) {
                        const int32x4_t acc = half ? odd : even;
                        int32x4_t v = vmulhq_s32(acc, vldrwq_s32(g + 8 + 4 * half));
                        v = vshlq_s32(vaddq_s32(v, vldrwq_s32(g + 16 + 4 * half)), vldrwq_s32(g + 24 + 4 * half));
                        v = vminq_s32(vmaxq_s32(v, vdupq_n_s32(p->activation.min)), vdupq_n_s32(p->activation.max));
                        const uint32x4_t offs = half ? odds : evens;
                        const mve_pred16_t in_range = vcmphiq_u32(vdupq_n_u32((uint32_t)(c - ch)), offs);
                        vstrbq_scatter_offset_p_s32(output + ch, offs, v, in_range);
                    }
                }
            }
        }
    }
    return 1;
}
#endif

mt_status mt_depthwise_conv_s8(const mt_context *ctx,
                               const mt_dw_conv_params *dw_conv_params,
                               const mt_per_channel_quant_params *quant_params,
                               const mt_dims *input_dims,
                               const int8_t *input,
                               const mt_dims *filter_dims,
                               const int8_t *filter,
                               const int32_t *bias,
                               const mt_dims *output_dims,
                               int8_t *output)
{
    (void)ctx; /* only the DSP path uses scratch */
    if (dw_conv_params == 0 || quant_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 ||
        filter == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_dw_conv_params *p = dw_conv_params;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        p->ch_mult < 1 || filter_dims->n != 1 || filter_dims->c != input_dims->c * p->ch_mult ||
        output_dims->c != filter_dims->c || output_dims->n != input_dims->n || p->stride.h < 1 ||
        p->stride.w < 1 || p->dilation.h != 1 || p->dilation.w != 1 || !mt_padding_ok(&p->padding) ||
        !mt_offsets_ok(p->input_offset, p->output_offset) || !mt_activation_ok(&p->activation) ||
        !mt_quant_ok(quant_params, output_dims->c) ||
        output_dims->h != mt_out_len(input_dims->h, p->padding.top, p->padding.bottom, filter_dims->h, p->stride.h) ||
        output_dims->w != mt_out_len(input_dims->w, p->padding.left, p->padding.right, filter_dims->w, p->stride.w)) {
        return MT_ARG_ERROR;
    }
#if MT_USE_MVE
    if (p->ch_mult == 1 &&
        mt_dw_mve(ctx, p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output)) {
        return MT_SUCCESS;
    }
#endif
#if MT_USE_DSP
    if (p->ch_mult == 1 && input_dims->c >= 4 &&
        mt_dw_scratch(ctx, p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output)) {
        return MT_SUCCESS;
    }
    if (p->ch_mult == 1) {
        mt_dw_dsp(p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
        return MT_SUCCESS;
    }
#endif
    mt_dw_reference(p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
    return MT_SUCCESS;
}
