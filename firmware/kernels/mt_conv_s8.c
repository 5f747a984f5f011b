/*
 * mt_conv_s8: int8 convolution, groups = 1, NHWC input, OHWI filter, per-channel requantisation.
 *
 * Reference path: one loop nest per output value.
 * DSP path (Cortex-M4/M7/M33): im2col of two output positions at a time into int16 columns (input offset
 * added, padded taps 0, each group of 4 values stored as SXTB16 pairs (x0,x2),(x1,x3), the two columns
 * interleaved), then a 2 output channels x 2 positions SMLAD kernel over the columns, reading the int8
 * filter directly; the 4 results are requantised, packed and clamped together (SSUB8 / SEL). K = KH*KW*C_in
 * need not be a multiple of 4: the last partial group reads the row's last 4 filter bytes and shifts the
 * extra ones out, so no byte outside the filter array is read.
 * 1x1 filters without padding (C_in >= 4, C_out >= 2) take their own DSP route, mt_conv_1x1() below: no
 * im2col (a position's input row is already contiguous), the filter rows widened once per output-channel pair.
 */
#include "mt_support.h"

#if MT_USE_DSP
/* im2col words per group of 4 K values: column 0 (x0,x2), column 1 (x0,x2), column 0 (x1,x3), column 1 (x1,x3),
 * so the 2-column kernel fetches a group with two LDRDs. */
static int32_t mt_conv_groups(int32_t k)
{
    return (k + 3) >> 2;
}
#endif

int32_t mt_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
    (void)input_dims;
#if MT_USE_DSP
    const int32_t groups = mt_conv_groups(filter_dims->h * filter_dims->w * filter_dims->c);
    /* interleaved int16 columns (16 bytes per group) + one int8 staging column; the 1x1 route uses the first
     * 16 bytes per group, for two widened filter rows */
    return groups * 16 + groups * 4;
#else
    (void)filter_dims;
    return 0;
#endif
}

#if MT_USE_DSP

/* Fills one column of the interleaved im2col buffer for output position (oy, ox): cols points at word 0 of
 * the buffer for column 0 and at word 1 for column 1. stage holds 4 * groups int8 bytes. */
static void mt_conv_im2col(const int8_t *in, const mt_dims *input_dims, const mt_dims *filter_dims,
                           const mt_conv_params *p, int32_t oy, int32_t ox, int8_t *stage, int32_t *cols,
                           int32_t groups, int32_t off16x2)
{
    const int32_t c_in = input_dims->c;
    const int32_t kw = filter_dims->w;
    const int32_t row_len = kw * c_in;
    const int32_t iy0 = oy * p->stride.h - p->padding.top;
    const int32_t ix0 = ox * p->stride.w - p->padding.left;
    const int32_t kx0 = MT_MAX(0, -ix0);
    const int32_t kx1 = MT_MIN(kw, input_dims->w - ix0);
    const int8_t pad = (int8_t)(-p->input_offset); /* the input zero point: widens to 0 */
    int8_t *s = stage;

    for (int32_t ky = 0; ky < filter_dims->h; ky++) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= input_dims->h || kx0 >= kx1) {
            __builtin_memset(s, pad, (uint32_t)row_len);
        } else {
            const int32_t before = kx0 * c_in;
            const int32_t valid = (kx1 - kx0) * c_in;
            if (before > 0) {
                __builtin_memset(s, pad, (uint32_t)before);
            }
            __builtin_memcpy(s + before, in + (iy * input_dims->w + ix0 + kx0) * c_in, (uint32_t)valid);
            if (before + valid < row_len) {
                __builtin_memset(s + before + valid, pad, (uint32_t)(row_len - before - valid));
            }
        }
        s += row_len;
    }
    /* pad the last partial group (the filter side is zero there, any finite value works) */
    while (s < stage + 4 * groups) {
        *s++ = pad;
    }

    /* widen: each 4 bytes -> (x0,x2),(x1,x3) + offset, into this column's slots */
    for (int32_t i = groups; i > 0; i--) {
        const int32_t w = mt_read_s32(stage);
        stage += 4;
        cols[0] = mt_lo_off(w, off16x2);
        cols[2] = mt_hi_off(w, off16x2);
        cols += 4;
    }
}

/* One group of 4 K values for 2 filter rows (w0, w1) x 2 columns (x): 2 LDR, 2 LDRD, 4 SXTB16, 8 SMLAD. */
#define MT_CONV_GROUP_2X2() \
    do { \
        const int32_t wa_ = mt_read_s32(w0); \
        const int32_t wb_ = mt_read_s32(w1); \
        w0 += 4; \
        w1 += 4; \
        int32_t c0_ = x[0]; \
        int32_t c1_ = x[1]; \
        int32_t t_ = mt_lo(wa_); \
        a00 = mt_smlad(t_, c0_, a00); \
        a01 = mt_smlad(t_, c1_, a01); \
        t_ = mt_lo(wb_); \
        a10 = mt_smlad(t_, c0_, a10); \
        a11 = mt_smlad(t_, c1_, a11); \
        c0_ = x[2]; \
        c1_ = x[3]; \
        x += 4; \
        t_ = mt_hi(wa_); \
        a00 = mt_smlad(t_, c0_, a00); \
        a01 = mt_smlad(t_, c1_, a01); \
        t_ = mt_hi(wb_); \
        a10 = mt_smlad(t_, c0_, a10); \
        a11 = mt_smlad(t_, c1_, a11); \
    } while (0)

/* C_out x 2 positions over the interleaved columns; out0 / out1 are the two output pixels. */
static __attribute__((noinline)) MT_NO_PRESCHED void mt_conv_mat_mult_2col(
    const int8_t *filter, const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t c_out, int32_t k,
    const int32_t *cols, int32_t out_off, uint32_t min4, uint32_t max4, int8_t *out0, int8_t *out1)
{
    const int32_t groups = k >> 2;
    const int32_t rem = k & 3;
    int32_t oc = 0;

    for (; oc + 1 < c_out; oc += 2) {
        const int8_t *w0 = filter + oc * k;
        const int8_t *w1 = w0 + k;
        const int32_t b0 = bias ? bias[oc] : 0;
        const int32_t b1 = bias ? bias[oc + 1] : 0;
        int32_t a00 = b0, a01 = b0, a10 = b1, a11 = b1;
        const int32_t *x = cols;

        for (int32_t i = groups; i > 0; i--) {
            MT_CONV_GROUP_2X2();
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            const int32_t wb = mt_read_tail(filter + oc * k + k, k);
            a00 = mt_smlad(mt_lo(wa), x[0], a00);
            a01 = mt_smlad(mt_lo(wa), x[1], a01);
            a10 = mt_smlad(mt_lo(wb), x[0], a10);
            a11 = mt_smlad(mt_lo(wb), x[1], a11);
            a00 = mt_smlad(mt_hi(wa), x[2], a00);
            a01 = mt_smlad(mt_hi(wa), x[3], a01);
            a10 = mt_smlad(mt_hi(wb), x[2], a10);
            a11 = mt_smlad(mt_hi(wb), x[3], a11);
        }
        const int32_t m0 = mult[oc], s0 = shift[oc];
        const int32_t m1 = mult[oc + 1], s1 = shift[oc + 1];
        const uint32_t v = mt_clamp4(mt_pack4(mt_requant_sat8(a00, m0, s0, out_off),
                                              mt_requant_sat8(a10, m1, s1, out_off),
                                              mt_requant_sat8(a01, m0, s0, out_off),
                                              mt_requant_sat8(a11, m1, s1, out_off)),
                                     min4, max4);
        const uint16_t v0 = (uint16_t)v, v1 = (uint16_t)(v >> 16);
        __builtin_memcpy(out0 + oc, &v0, 2);
        __builtin_memcpy(out1 + oc, &v1, 2);
    }
    if (oc < c_out) {
        const int8_t *w0 = filter + oc * k;
        const int32_t b0 = bias ? bias[oc] : 0;
        int32_t a00 = b0, a01 = b0;
        const int32_t *x = cols;
        for (int32_t i = groups; i > 0; i--) {
            const int32_t wa = mt_read_s32(w0);
            w0 += 4;
            int32_t t = mt_lo(wa);
            a00 = mt_smlad(t, x[0], a00);
            a01 = mt_smlad(t, x[1], a01);
            t = mt_hi(wa);
            a00 = mt_smlad(t, x[2], a00);
            a01 = mt_smlad(t, x[3], a01);
            x += 4;
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            a00 = mt_smlad(mt_lo(wa), x[0], a00);
            a01 = mt_smlad(mt_lo(wa), x[1], a01);
            a00 = mt_smlad(mt_hi(wa), x[2], a00);
            a01 = mt_smlad(mt_hi(wa), x[3], a01);
        }
        const uint32_t v = mt_clamp4(mt_pack4(mt_requant_sat8(a00, mult[oc], shift[oc], out_off),
                                              mt_requant_sat8(a01, mult[oc], shift[oc], out_off), 0, 0),
                                     min4, max4);
        out0[oc] = (int8_t)v;
        out1[oc] = (int8_t)(v >> 8);
    }
}

/* C_out x 1 position (the odd last position), column 0 of the interleaved buffer. */
static void mt_conv_mat_mult_1col(const int8_t *filter, const int32_t *bias, const mt_per_channel_quant_params *q,
                                  int32_t c_out, int32_t k, const int32_t *cols, int32_t lo, int32_t hi,
                                  int32_t out_off, int8_t *out0)
{
    const int32_t groups = k >> 2;
    const int32_t rem = k & 3;
    for (int32_t oc = 0; oc < c_out; oc++) {
        const int8_t *w0 = filter + oc * k;
        int32_t a = bias ? bias[oc] : 0;
        const int32_t *x = cols;
        for (int32_t i = groups; i > 0; i--) {
            const int32_t wa = mt_read_s32(w0);
            w0 += 4;
            a = mt_smlad(mt_lo(wa), x[0], a);
            a = mt_smlad(mt_hi(wa), x[2], a);
            x += 4;
        }
        if (rem) {
            const int32_t wa = mt_read_tail(filter + oc * k, k);
            a = mt_smlad(mt_lo(wa), x[0], a);
            a = mt_smlad(mt_hi(wa), x[2], a);
        }
        out0[oc] = mt_output_s8(a, q->multiplier[oc], q->shift[oc], lo, hi, out_off);
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * 1x1 convolution without padding, any stride. A position's K = C_in input values are already contiguous in
 * NHWC, so nothing is copied: the int8 input of two positions is read in place and widened with SXTB16.
 * Output channels go in pairs: the pair's two filter rows are widened once into the scratch buffer (per group
 * of 4 input channels: row 0 (w0,w2), row 1 (w0,w2), row 0 (w1,w3), row 1 (w1,w3), fetched with two LDRDs),
 * and input_offset * sum(w) is folded into the bias, so the input needs no offset. For 2 positions x 2
 * channels a group of 16 MACs takes 2 LDR + 4 SXTB16 + 2 LDRD + 8 SMLAD; the pair's requantisation
 * parameters stay fixed while it sweeps the positions. A run of n positions with a constant input step (all
 * of them with stride 1, else one output row) is swept as the pairs (i, i + n / 2): with stride 1 the MAC
 * loop then leaves the input pointer at the next pair's first position. An odd n ends with its last position
 * taken twice (same input, same output address). A C_in that is not a multiple of 4 ends with the row's last
 * 4 input bytes, whose weights for the bytes already counted are 0 (so C_in >= 4). An odd C_out ends with
 * the overlapping pair (C_out - 2, C_out - 1). So every store writes values that are correct where it writes.
 * ------------------------------------------------------------------------------------------------------- */

/* Everything a sweep needs, in memory: the MAC loop takes all registers but one, so the step loop keeps only
 * this struct's address and the input pointer in registers and loads the rest where it is used (pairs of
 * fields that are loaded together are adjacent, for LDRD). */
typedef struct {
    const int32_t *w;     /* the pair's widened filter rows, 4 words per group (+ 4 for the tail word) */
    int32_t n;            /* MAC loop count: C_in >> 4 on the fast path (4 groups an iteration), else C_in >> 2 */
    int32_t x_step;       /* input bytes from a step's first position to its second */
    int32_t x_adv;        /* from where the MAC loop leaves x to the next step's first position (fast path: 0) */
    int32_t bias[4];      /* bias + input_offset * sum of the row: rows 0, 1, 0, 1 (two LDRDs fill a00..a11) */
    int32_t mk[4];        /* multiplier and k = ~shift (mt_requantize's shift amount when shift < 0): row 0, row 1 */
    uint32_t min4, max4;
    int32_t out_off;
    int32_t back;         /* C_in & 3 ? 4 - (C_in & 3) : 0: the tail word starts this far before the row's end */
    int8_t *out;          /* the step's first output (first position, channel 0 of the pair) */
    int32_t out_half;     /* output bytes from a step's first position to its second */
    int32_t out_inc;      /* output bytes from one step to the next (C_out) */
    const int8_t *out_end;
} mt_conv_1x1_pair;

/* a = s->f0, b = s->f1 for a struct pointer s and two adjacent 4-byte members: one LDRD on Thumb-2 (GCC splits
 * a 64-bit load of 4-byte aligned data into two LDRs, and its "m" operands for LDRD take no offset). */
#if defined(__GNUC__) && defined(__thumb2__)
#define MT_LDRD(s, f0, f1, a, b) \
    do { \
        _Static_assert(__builtin_offsetof(__typeof__(*(s)), f1) == __builtin_offsetof(__typeof__(*(s)), f0) + 4, \
                       "LDRD needs adjacent members"); \
        __asm__("ldrd %0, %1, [%2, %3]" \
                : "=r"(a), "=r"(b) \
                : "r"(s), "i"(__builtin_offsetof(__typeof__(*(s)), f0)), "m"((s)->f0), "m"((s)->f1)); \
    } while (0)
#else
#define MT_LDRD(s, f0, f1, a, b) \
    do { \
        (a) = (s)->f0; \
        (b) = (s)->f1; \
    } while (0)
#endif

#if defined(__GNUC__) && defined(__thumb2__)
/* One group (4 input channels) of the MAC loop below. */
#define MT_CONV_1X1_GROUP \
    "ldr %[vb], [%[x], %[xs]]\n\t" \
    "ldr %[va], [%[x]], #4\n\t" \
    "ldrd %[w0], %[w1], [%[w]], #16\n\t" \
    "sxtb16 %[t], %[va]\n\t" \
    "smlad %[a00], %[w0], %[t], %[a00]\n\t" \
    "smlad %[a10], %[w1], %[t], %[a10]\n\t" \
    "sxtb16 %[t], %[vb]\n\t" \
    "smlad %[a01], %[w0], %[t], %[a01]\n\t" \
    "smlad %[a11], %[w1], %[t], %[a11]\n\t" \
    "ldrd %[w0], %[w1], [%[w], #-8]\n\t" \
    "sxtb16 %[va], %[va], ror #8\n\t" \
    "smlad %[a00], %[w0], %[va], %[a00]\n\t" \
    "smlad %[a10], %[w1], %[va], %[a10]\n\t" \
    "sxtb16 %[vb], %[vb], ror #8\n\t" \
    "smlad %[a01], %[w0], %[vb], %[a01]\n\t" \
    "smlad %[a11], %[w1], %[vb], %[a11]\n\t"

/* The MAC loop of one step: the input rows x and x + x_step against the widened rows at w, into a00 (row 0 x x),
 * a01 (row 0 x x + x_step), a10, a11 (row 1); x and w advance. 16 instructions per group of 16 MACs with 5
 * scratch registers (GCC's own code for it spends 19 a group and spills). `body` is the unrolled groups of
 * one iteration; `entry` either is empty (count = the number of iterations) or, with two groups an iteration,
 * takes an odd group count (count = groups): its LSRS sets C to the odd bit and Z for a single group (loads
 * and SMLAD leave the flags). */
#define MT_CONV_1X1_MAC_ASM(entry, body, px, xstep, pw, count, s00, s01, s10, s11) \
    do { \
        int32_t va_, vb_, t_, w0_, w1_, n_ = (count); \
        __asm__(entry "1:\n\t" body "subs %[n], %[n], #1\n\t" \
                "bne 1b\n" \
                "2:" \
                : [a00] "+r"(s00), [a01] "+r"(s01), [a10] "+r"(s10), [a11] "+r"(s11), [x] "+r"(px), [w] "+r"(pw), \
                  [n] "+r"(n_), [va] "=&r"(va_), [vb] "=&r"(vb_), [t] "=&r"(t_), [w0] "=&r"(w0_), [w1] "=&r"(w1_) \
                : [xs] "r"(xstep) \
                : "cc", "memory"); \
    } while (0)
#define MT_CONV_1X1_GROUP2 MT_CONV_1X1_GROUP MT_CONV_1X1_GROUP
#define MT_CONV_1X1_ODD_ENTRY "lsrs %[n], %[n], #1\n\tbcc 1f\n\t" MT_CONV_1X1_GROUP "beq 2f\n"
/* fast: count = C_in / 16, four groups an iteration; else count = C_in / 4 groups, two an iteration */
#define MT_CONV_1X1_MAC(fast, px, xstep, pw, count, s00, s01, s10, s11) \
    do { \
        if (fast) { \
            MT_CONV_1X1_MAC_ASM("", MT_CONV_1X1_GROUP2 MT_CONV_1X1_GROUP2, px, xstep, pw, count, s00, s01, s10, s11); \
        } else { \
            MT_CONV_1X1_MAC_ASM(MT_CONV_1X1_ODD_ENTRY, MT_CONV_1X1_GROUP2, px, xstep, pw, count, s00, s01, s10, s11); \
        } \
    } while (0)
#else
#define MT_CONV_1X1_MAC(fast, px, xstep, pw, count, s00, s01, s10, s11) \
    do { \
        for (int32_t i_ = (fast) ? 4 * (count) : (count); i_ > 0; i_--) { \
            const int32_t va_ = mt_read_s32(px); \
            const int32_t vb_ = mt_read_s32((px) + (xstep)); \
            (px) += 4; \
            s00 = mt_smlad((pw)[0], mt_lo(va_), s00); \
            s10 = mt_smlad((pw)[1], mt_lo(va_), s10); \
            s01 = mt_smlad((pw)[0], mt_lo(vb_), s01); \
            s11 = mt_smlad((pw)[1], mt_lo(vb_), s11); \
            s00 = mt_smlad((pw)[2], mt_hi(va_), s00); \
            s10 = mt_smlad((pw)[3], mt_hi(va_), s10); \
            s01 = mt_smlad((pw)[2], mt_hi(vb_), s01); \
            s11 = mt_smlad((pw)[3], mt_hi(vb_), s11); \
            (pw) += 4; \
        } \
    } while (0)
#endif

/* Steps from x until c->out reaches c->out_end (at least one): x, x + x_step (input rows) -> out,
 * out + out_half (the pair's 2 channels), then x moves to the next step's first position and out by out_inc.
 * fast: C_in is a multiple of 16, the stride 1 (x_adv = 0) and both shifts are < 0 (which lets the compiler
 * drop mt_requantize's branch); otherwise the tail word, the group count, x_adv and the shift signs are
 * handled at run time. */
MT_INLINE void mt_conv_1x1_steps(mt_conv_1x1_pair *c, const int8_t *x, int fast)
{
    do {
        int32_t a00, a10, a01, a11;
        MT_LDRD(c, bias[0], bias[1], a00, a10);
        MT_LDRD(c, bias[2], bias[3], a01, a11);
        const int32_t *w = c->w;
        MT_CONV_1X1_MAC(fast, x, c->x_step, w, c->n, a00, a01, a10, a11);
        if (!fast && c->back) {
            const int32_t va = mt_read_s32(x - c->back);
            const int32_t vb = mt_read_s32(x + c->x_step - c->back);
            a00 = mt_smlad(w[0], mt_lo(va), a00);
            a01 = mt_smlad(w[0], mt_lo(vb), a01);
            a10 = mt_smlad(w[1], mt_lo(va), a10);
            a11 = mt_smlad(w[1], mt_lo(vb), a11);
            a00 = mt_smlad(w[2], mt_hi(va), a00);
            a01 = mt_smlad(w[2], mt_hi(vb), a01);
            a10 = mt_smlad(w[3], mt_hi(va), a10);
            a11 = mt_smlad(w[3], mt_hi(vb), a11);
        }
        int32_t m0, k0, m1, k1;
        MT_LDRD(c, mk[0], mk[1], m0, k0);
        MT_LDRD(c, mk[2], mk[3], m1, k1);
        if (fast) {
            MT_ASSUME(k0 >= 0);
            MT_ASSUME(k1 >= 0);
        }
        const int32_t off = c->out_off;
        const uint32_t v = mt_clamp4(mt_pack4(mt_requant_sat8(a00, m0, ~k0, off), mt_requant_sat8(a10, m1, ~k1, off),
                                              mt_requant_sat8(a01, m0, ~k0, off), mt_requant_sat8(a11, m1, ~k1, off)),
                                     c->min4, c->max4);
        const uint16_t v0 = (uint16_t)v, v1 = (uint16_t)(v >> 16);
        int8_t *out;
        int32_t out_half, out_inc;
        const int8_t *out_end;
        MT_LDRD(c, out, out_half, out, out_half);
        __builtin_memcpy(out + out_half, &v1, 2); /* the second position first: a lone position has 0 */
        __builtin_memcpy(out, &v0, 2);
        MT_LDRD(c, out_inc, out_end, out_inc, out_end);
        out += out_inc;
        c->out = out;
        if (!fast) {
            x += c->x_adv;
        }
        if (out == out_end) {
            break;
        }
    } while (1);
}

static __attribute__((noinline)) MT_NO_PRESCHED void mt_conv_1x1_steps_fast(mt_conv_1x1_pair *c, const int8_t *x)
{
    mt_conv_1x1_steps(c, x, 1);
}

static __attribute__((noinline)) MT_NO_PRESCHED void mt_conv_1x1_steps_any(mt_conv_1x1_pair *c, const int8_t *x)
{
    mt_conv_1x1_steps(c, x, 0);
}

/* The words va, vb (4 filter values of row 0 and of row 1) widened into w[0..3] (layout above), input_offset *
 * their sums added to s0 and s1. */
MT_INLINE void mt_conv_1x1_widen_group(int32_t va, int32_t vb, int32_t off16x2, int32_t *w, int32_t *s0,
                                       int32_t *s1)
{
    w[0] = mt_lo(va);
    w[1] = mt_lo(vb);
    w[2] = mt_hi(va);
    w[3] = mt_hi(vb);
    *s0 = mt_smlad(w[0], off16x2, mt_smlad(w[2], off16x2, *s0));
    *s1 = mt_smlad(w[1], off16x2, mt_smlad(w[3], off16x2, *s1));
}

/* Widens the 2 filter rows at r (row length c_in >= 4) into w (layout above); returns input_offset * the sum
 * of each row. The loop over whole groups (at least one) is written out on Thumb-2: 14 instructions a group,
 * GCC's own takes 20. */
MT_INLINE void mt_conv_1x1_widen(const int8_t *r, int32_t c_in, int32_t off16x2, int32_t *w, int32_t *sum0,
                                 int32_t *sum1)
{
    int32_t s0 = 0, s1 = 0;
    const int8_t *end = r + (c_in & ~3);
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t va, vb, t0, t1;
    __asm__("1:\n\t"
            "ldr %[vb], [%[r], %[k]]\n\t"
            "ldr %[va], [%[r]], #4\n\t"
            "sxtb16 %[t0], %[va]\n\t"
            "sxtb16 %[t1], %[vb]\n\t"
            "strd %[t0], %[t1], [%[w]], #8\n\t"
            "smlad %[s0], %[t0], %[off], %[s0]\n\t"
            "smlad %[s1], %[t1], %[off], %[s1]\n\t"
            "sxtb16 %[t0], %[va], ror #8\n\t"
            "sxtb16 %[t1], %[vb], ror #8\n\t"
            "strd %[t0], %[t1], [%[w]], #8\n\t"
            "smlad %[s0], %[t0], %[off], %[s0]\n\t"
            "smlad %[s1], %[t1], %[off], %[s1]\n\t"
            "cmp %[r], %[end]\n\t"
            "bne 1b"
            : [r] "+r"(r), [w] "+r"(w), [s0] "+r"(s0), [s1] "+r"(s1), [va] "=&r"(va), [vb] "=&r"(vb),
              [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [k] "r"(c_in), [off] "r"(off16x2), [end] "r"(end)
            : "cc", "memory");
#else
    for (; r < end; r += 4, w += 4) {
        mt_conv_1x1_widen_group(mt_read_s32(r), mt_read_s32(r + c_in), off16x2, w, &s0, &s1);
    }
#endif
    const int32_t rem = c_in & 3;
    if (rem) { /* the row's last 4 bytes, with the ones already counted set to 0 */
        const uint32_t keep = 0xFFFFFFFFu << (8 * (4 - rem));
        mt_conv_1x1_widen_group((int32_t)((uint32_t)mt_read_s32(r + rem - 4) & keep),
                                (int32_t)((uint32_t)mt_read_s32(r + c_in + rem - 4) & keep), off16x2, w, &s0, &s1);
    }
    *sum0 = s0;
    *sum1 = s1;
}

/* The whole 1x1 convolution (the caller checked KH = KW = 1, no padding, C_in >= 4, C_out >= 2). Scratch:
 * 16 bytes per group of 4 input channels, rounded up: within mt_conv_s8_get_buffer_size(). */
static __attribute__((noinline)) void mt_conv_1x1(const mt_conv_params *p, const mt_per_channel_quant_params *q,
                                                  const mt_dims *input_dims, const int8_t *input,
                                                  const int8_t *filter, const int32_t *bias,
                                                  const mt_dims *output_dims, int8_t *output, int32_t *wbuf)
{
    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);
    const int32_t one_run = p->stride.h == 1 && p->stride.w == 1;
    const int32_t runs = one_run ? 1 : output_dims->n * output_dims->h;
    const int32_t run_len = one_run ? output_dims->n * output_dims->h * output_dims->w : output_dims->w;
    const int32_t half = run_len >> 1;
    const int32_t pos_step = p->stride.w * c_in; /* input bytes from one position of a run to the next */
    const int32_t fast_shape = (c_in & 15) == 0 && p->stride.w == 1;
    mt_conv_1x1_pair c;
    c.w = wbuf;
    c.x_adv = pos_step - (c_in & ~3);
    c.min4 = mt_splat4(p->activation.min);
    c.max4 = mt_splat4(p->activation.max);
    c.out_off = p->output_offset;
    c.back = (c_in & 3) ? 4 - (c_in & 3) : 0;
    c.x_step = half * pos_step;
    c.out_half = half * c_out;
    c.out_inc = c_out;

    for (int32_t oc = 0; oc < c_out; oc += 2) {
        const int32_t o = MT_MIN(oc, c_out - 2); /* odd C_out: the last pair overlaps the one before */
        int32_t sum0, sum1;
        mt_conv_1x1_widen(filter + o * c_in, c_in, off16x2, wbuf, &sum0, &sum1);
        /* int32 wraps like the accumulator (the sum is the same modulo 2^32 in any order) */
        c.bias[0] = c.bias[2] = (int32_t)((uint32_t)(bias ? bias[o] : 0) + (uint32_t)sum0);
        c.bias[1] = c.bias[3] = (int32_t)((uint32_t)(bias ? bias[o + 1] : 0) + (uint32_t)sum1);
        c.mk[0] = q->multiplier[o];
        c.mk[1] = ~q->shift[o];
        c.mk[2] = q->multiplier[o + 1];
        c.mk[3] = ~q->shift[o + 1];
        const int32_t fast = fast_shape && c.mk[1] >= 0 && c.mk[3] >= 0; /* both shifts < 0 */
        void (*const steps)(mt_conv_1x1_pair *, const int8_t *) = fast ? mt_conv_1x1_steps_fast
                                                                       : mt_conv_1x1_steps_any;
        c.n = fast ? c_in >> 4 : c_in >> 2;
        const int8_t *x = input;
        int8_t *out = output + o;
        for (int32_t r = 0; r < runs; r++) {
            if (!one_run) { /* output row r = (b, oy) reads input row (b, oy * stride.h) */
                const int32_t b = r / output_dims->h;
                x = input + ((b * input_dims->h + (r - b * output_dims->h) * p->stride.h) * input_dims->w) * c_in;
            }
            if (half > 0) { /* positions (i, i + half) */
                c.out = out;
                c.out_end = out + c.out_half;
                steps(&c, x);
            }
            if (run_len & 1) { /* the last position, twice */
                c.x_step = 0;
                c.out_half = 0;
                c.out = out + (run_len - 1) * c_out;
                c.out_end = c.out + c_out;
                steps(&c, x + (run_len - 1) * pos_step);
                c.x_step = half * pos_step;
                c.out_half = half * c_out;
            }
            out += run_len * c_out;
        }
    }
}

#endif /* MT_USE_DSP */

mt_status mt_conv_s8(const mt_context *ctx,
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
    if (conv_params == 0 || quant_params == 0 || input_dims == 0 || input == 0 || filter_dims == 0 ||
        filter == 0 || output_dims == 0 || output == 0) {
        return MT_ARG_ERROR;
    }
    const mt_conv_params *p = conv_params;
    if (!mt_dims_positive(input_dims) || !mt_dims_positive(filter_dims) || !mt_dims_positive(output_dims) ||
        filter_dims->c != input_dims->c || output_dims->c != filter_dims->n || output_dims->n != input_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h != 1 || p->dilation.w != 1 ||
        !mt_padding_ok(&p->padding) || !mt_offsets_ok(p->input_offset, p->output_offset) ||
        !mt_activation_ok(&p->activation) || !mt_quant_ok(quant_params, filter_dims->n) ||
        output_dims->h != mt_out_len(input_dims->h, p->padding.top, p->padding.bottom, filter_dims->h, p->stride.h) ||
        output_dims->w != mt_out_len(input_dims->w, p->padding.left, p->padding.right, filter_dims->w, p->stride.w)) {
        return MT_ARG_ERROR;
    }

    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t k = filter_dims->h * filter_dims->w * c_in;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    const int32_t in_image = input_dims->h * input_dims->w * c_in;
    const int32_t out_positions = output_dims->h * output_dims->w;

#if MT_USE_DSP
    const int32_t need = mt_conv_s8_get_buffer_size(input_dims, filter_dims);
    if (ctx == 0 || ctx->buf == 0 || ctx->size < need || ((uintptr_t)ctx->buf & 3u) != 0) {
        return MT_ARG_ERROR;
    }
    if (filter_dims->h == 1 && filter_dims->w == 1 && p->padding.top == 0 && p->padding.left == 0 &&
        p->padding.bottom == 0 && p->padding.right == 0 && c_in >= 4 && c_out >= 2) {
        mt_conv_1x1(p, quant_params, input_dims, input, filter, bias, output_dims, output, (int32_t *)ctx->buf);
        return MT_SUCCESS;
    }
    const int32_t groups = mt_conv_groups(k);
    int32_t *cols = (int32_t *)ctx->buf;
    int8_t *stage = (int8_t *)(cols + 4 * groups);
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);
    const uint32_t min4 = mt_splat4(p->activation.min);
    const uint32_t max4 = mt_splat4(p->activation.max);

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * in_image;
        int8_t *out = output + b * out_positions * c_out;
        int32_t pos = 0;
        int32_t oy = 0, ox = 0;
        for (; pos + 1 < out_positions; pos += 2) {
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols, groups, off16x2);
            if (++ox == output_dims->w) {
                ox = 0;
                oy++;
            }
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols + 1, groups, off16x2);
            if (++ox == output_dims->w) {
                ox = 0;
                oy++;
            }
            mt_conv_mat_mult_2col(filter, bias, quant_params->multiplier, quant_params->shift, c_out, k, cols,
                                  p->output_offset, min4, max4, out, out + c_out);
            out += 2 * c_out;
        }
        if (pos < out_positions) {
            mt_conv_im2col(in, input_dims, filter_dims, p, oy, ox, stage, cols, groups, off16x2);
            mt_conv_mat_mult_1col(filter, bias, quant_params, c_out, k, cols, lo, hi, p->output_offset, out);
        }
    }
#else
    (void)ctx;
    (void)k;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *in = input + b * in_image;
        int8_t *out = output + b * out_positions * c_out;
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t iy0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = MT_MAX(0, -iy0); /* taps outside the input are zero padding: skipped */
            const int32_t ky1 = MT_MIN(filter_dims->h, input_dims->h - iy0);
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t ix0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = MT_MAX(0, -ix0);
                const int32_t kx1 = MT_MIN(filter_dims->w, input_dims->w - ix0);
                for (int32_t oc = 0; oc < c_out; oc++) {
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const int8_t *x = in + ((iy0 + ky) * input_dims->w + ix0 + kx) * c_in;
                            const int8_t *w = filter + ((oc * filter_dims->h + ky) * filter_dims->w + kx) * c_in;
                            for (int32_t ic = 0; ic < c_in; ic++) {
                                acc += ((int32_t)x[ic] + p->input_offset) * (int32_t)w[ic];
                            }
                        }
                    }
                    *out++ = mt_output_s8(acc, quant_params->multiplier[oc], quant_params->shift[oc], lo, hi,
                                          p->output_offset);
                }
            }
        }
    }
#endif
    return MT_SUCCESS;
}
