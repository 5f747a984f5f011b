/*
 * mt_conv_s8: int8 convolution, groups = 1, NHWC input, OHWI filter, per-channel requantisation.
 *
 * Reference path: one loop nest per output value.
 * DSP path (Cortex-M4/M7/M33): two output positions x four output channels per pass, every operand widened to
 * int16 beforehand, so the inner step is 3 LDRD + 8 SMLAD for 16 MACs (no SXTB16 in the loop):
 *   - weights: the output channels go in quads (the last one overlaps its neighbour when C_out % 4 != 0); a
 *     block of quads (as many as the scratch holds: the weight budget at full size, one at the minimum) is
 *     widened into the scratch buffer once per call, each quad as a record {4 biases, channel offset,
 *     4 x (multiplier, ~shift)} followed by its weights: per group of 4 K values the quad's pairs (k0, k2),
 *     then its pairs (k1, k3), as SXTB16 produces them;
 *   - inputs: the same pairs with the input offset added (SXTAB16), the two positions' words interleaved so
 *     one LDRD fetches both, and a position's whole window contiguous, so the MAC loop is one run of K / 2
 *     steps. Two ways to lay them out:
 *       band (C_in % 4 == 0, KH x KW > 1): per output row, the positions are paired as (ox, ox + half) and
 *         band column j holds the KH input rows' values at input column j - left (first position) and
 *         j - left + stride * half (second), zeros outside the input; a window is KW consecutive columns,
 *         read in place (no im2col: each input value is widened once per output row, not once per tap; the
 *         weights are widened in the matching (kx, ky, c) order);
 *       im2col (any other shape, or when the band does not fit the scratch): the K values (OHWI order,
 *         padded to a multiple of 4) of two consecutive positions gathered and widened; padding taps are the
 *         input zero point, which widens to 0. When a window's rows are whole groups (KW x C_in % 4 == 0, e.g.
 *         a first conv with one input channel) it is widened row by row, rows in the padding written as zeros;
 *         1x1 convs with stride 1 and no padding widen two consecutive runs of C_in input values per pass.
 * A pass (mt_conv_pair: two positions x every quad of the block) runs the MAC loop 16 K-pairs (32 with packed
 * filters) at a time, entering the first round part way (Duff's device) so any K works, then requantises the 8
 * accumulators (SMULL, LSLS, ASRS, ADC with the output offset, SSAT: single rounding), packs each position's 4 outputs into a
 * word, clamps them with SSUB8 / SEL and stores one word per position. On Thumb-2 with every shift of the block
 * < 0 the pass is one assembly function; otherwise (shifts >= 0, C_out < 4, the host tests) the same pass runs
 * in C (mt_conv_pair_c). Two assembly passes: filters packed at compile time (mt_conv_params.packed, already in
 * the record layout) take mt_conv_pair_chain_asm, whose step loads 4 of its 6 words as a pipelined LDR chain
 * (16 estimated Cortex-M4 cycles per 16 MACs instead of 17, 2 more instructions); weights widened at run time
 * take mt_conv_pair_asm (the LDRD step: fewer instructions, which is what their layer targets count). An odd position count pairs its last position with a dummy whose
 * outputs go to a trash area of the scratch buffer (band) or with itself (im2col: the same outputs twice).
 */
#include "mt_support.h"

#if MT_USE_DSP
/* Code bytes of one K-pair step of the assembly passes (every instruction of them is 32-bit): the LDRD step, the
 * load-chain step (packed filters). */
#define MT_CONV_STEP_BYTES 44
#define MT_CONV_CHAIN_STEP_BYTES 52
/* K-pairs per round of the MAC loop: 16 LDRD steps, 32 chain steps (fewer round ends for the common K of 64 to
 * 576 per quad; the pass of packed filters runs on every layer that is not trained). */
#define MT_CONV_ROUND 16
#define MT_CONV_CHAIN_ROUND 32
/* Bytes of widened weights per channel block (at least one quad is taken whatever the budget): 8 times the input
 * tensor, within [8 KB, 32 KB]. A bigger block rebuilds the input band or im2col columns fewer times; a layer
 * with small activations, which take little of the arena, gets a small block. */
static int32_t mt_conv_weight_budget(const mt_dims *input_dims)
{
    return MT_MIN(32768, MT_MAX(8192, 8 * input_dims->n * input_dims->h * input_dims->w * input_dims->c));
}

/* K-pairs of the widened weights: K rounded up to a multiple of 4, halved. */
static int32_t mt_conv_kpairs(const mt_dims *f)
{
    return ((f->h * f->w * f->c + 3) >> 2) * 2;
}

static int32_t mt_conv_quad_bytes(const mt_dims *f)
{
    return 4 * MT_PASS_REC_WORDS + 16 * mt_conv_kpairs(f);
}

/* Two interleaved int16 columns (8 bytes per K-pair) plus the int8 staging column (2 bytes per K-pair). */
static int32_t mt_conv_im2col_bytes(const mt_dims *f)
{
    return 10 * mt_conv_kpairs(f);
}

static int mt_conv_band_shape(const mt_dims *f)
{
    return (f->c & 3) == 0 && f->h * f->w > 1 && f->h <= 16;
}

/* Band columns for an output row of w_out positions paired as (ox, ox + half). */
static int32_t mt_conv_band_cols(int32_t w_out, int32_t kw, int32_t stride)
{
    return stride * ((w_out + 1) / 2 - 1) + kw;
}

/* Each band column: KH rows x C_in values x 2 positions, int16. */
static int32_t mt_conv_band_bytes(const mt_dims *f, int32_t cols)
{
    return cols * f->h * f->c * 4;
}

static int32_t mt_conv_trash_bytes(const mt_dims *f)
{
    return (f->n + 3) & ~3;
}
#endif

int32_t mt_conv_s8_get_packed_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
#if MT_USE_DSP
    /* The input area (the band for output rows as wide as the input plus KW - 1, i.e. padding up to KW - 1 on
     * each side, or the im2col columns), the trash outputs. */
    int32_t x = mt_conv_im2col_bytes(filter_dims);
    if (mt_conv_band_shape(filter_dims)) {
        x = MT_MAX(x, mt_conv_band_bytes(filter_dims,
                                         mt_conv_band_cols(input_dims->w + filter_dims->w - 1, filter_dims->w, 1)));
    }
    return x + mt_conv_trash_bytes(filter_dims);
#else
    (void)input_dims;
    (void)filter_dims;
    return 0;
#endif
}

int32_t mt_conv_s8_get_buffer_size(const mt_dims *input_dims, const mt_dims *filter_dims)
{
#if MT_USE_DSP
    /* The widened weights of one channel block, then what a packed filter needs. */
    const int32_t quads = (filter_dims->n + 3) >> 2;
    const int32_t qb = mt_conv_quad_bytes(filter_dims);
    const int32_t block = MT_MIN(quads, MT_MAX(1, mt_conv_weight_budget(input_dims) / qb));
    return block * qb + mt_conv_s8_get_packed_buffer_size(input_dims, filter_dims);
#else
    (void)input_dims;
    (void)filter_dims;
    return 0;
#endif
}

int32_t mt_conv_s8_get_min_buffer_size(const mt_dims *filter_dims)
{
#if MT_USE_DSP
    /* One quad of widened weights and the im2col columns (the band, and its trash, only when they fit). */
    return mt_conv_quad_bytes(filter_dims) + mt_conv_im2col_bytes(filter_dims);
#else
    (void)filter_dims;
    return 0;
#endif
}

#if MT_USE_DSP

/* The pass in C (mt_pass, mt_support.h): the reference for mt_conv_pair_asm, and what runs when it cannot (any
 * shift, any C_out). */
static void mt_conv_pair_c(const mt_pass *j)
{
    const int32_t *r = j->w;
    for (int32_t q = 0; q < j->quads; q++) {
        int32_t a[8];
        for (int32_t c = 0; c < 4; c++) {
            a[c] = a[c + 4] = r[c];
        }
        const int32_t *w = r + MT_PASS_REC_WORDS;
        const int32_t *x = j->x;
        for (int32_t i = 0; i < j->n; i++, x += 2, w += 4) {
            for (int32_t c = 0; c < 4; c++) {
                a[c] = mt_smlad(w[c], x[0], a[c]);
                a[c + 4] = mt_smlad(w[c], x[1], a[c + 4]);
            }
        }
        mt_pass_store(j, r, a);
        r = w;
    }
}

#if defined(__GNUC__) && defined(__thumb2__)
void mt_conv_pair_asm(const mt_pass *j);
void mt_conv_pair_chain_asm(const mt_pass *j);

/* One K-pair with the first four loads as a pipelined LDR chain (5 cycles for 4 words on Cortex-M4 instead of
 * 6 for two LDRDs): 13 instructions, 16 estimated cycles for 16 MACs (52 bytes). The pass of packed filters. */
#define MT_CONV_CHAIN_STEP \
    "ldr r8, [r12], #8\n\t" \
    "ldr r9, [r12, #-4]\n\t" \
    "ldr r10, [lr], #16\n\t" \
    "ldr r11, [lr, #-12]\n\t" \
    "smlad r0, r10, r8, r0\n\t" \
    "smlad r4, r10, r9, r4\n\t" \
    "smlad r1, r11, r8, r1\n\t" \
    "smlad r5, r11, r9, r5\n\t" \
    "ldrd r10, r11, [lr, #-8]\n\t" \
    "smlad r2, r10, r8, r2\n\t" \
    "smlad r6, r10, r9, r6\n\t" \
    "smlad r3, r11, r8, r3\n\t" \
    "smlad r7, r11, r9, r7\n\t"
/* One K-pair: the two positions' words, the quad's 4 weight words in two LDRDs, 8 SMLAD: 11 instructions, 17
 * estimated cycles for 16 MACs (44 bytes), 0.69 instructions per MAC where the chain step takes 0.81. The pass of
 * weights widened at run time (kept for the instruction count, which their layer targets are set in). */
#define MT_CONV_STEP \
    "ldrd r8, r9, [r12], #8\n\t" \
    "ldrd r10, r11, [lr], #8\n\t" \
    "smlad r0, r10, r8, r0\n\t" \
    "smlad r4, r10, r9, r4\n\t" \
    "smlad r1, r11, r8, r1\n\t" \
    "smlad r5, r11, r9, r5\n\t" \
    "ldrd r10, r11, [lr], #8\n\t" \
    "smlad r2, r10, r8, r2\n\t" \
    "smlad r6, r10, r9, r6\n\t" \
    "smlad r3, r11, r8, r3\n\t" \
    "smlad r7, r11, r9, r7\n\t"
#define MT_CONV_X4(S) S S S S

/* A conv pass NAME (mt_pass, a quad's bytes in `step`) whose MAC loop is one ROUND of steps. Registers: r0-r3
 * position 0 x channels 0-3, r4-r7 position 1, r8 / r9 input words, r10 / r11 weight words, r12 input pointer,
 * lr weight pointer. Stack: [0] job, [4] the input's end (x + 8 n: the MAC loop runs n K-pairs whatever its
 * entry), [8] this record, [12] the records' end, [16] the loop entry address, [20] the input. */
#define MT_CONV_PAIR_ASM(NAME, ROUND) \
    MT_ASM_FUNCTION(NAME) \
    "push {r4-r11, lr}\n\t" \
    "sub sp, #28\n\t" \
    "str r0, [sp]\n\t" \
    "ldr r1, [r0]\n\t" \
    "ldr r2, [r0, #4]\n\t" \
    "ldr r3, [r0, #12]\n\t" \
    "mla r2, r2, r3, r1\n\t" \
    "str r2, [sp, #12]\n\t" \
    "ldr r12, [r0, #8]\n\t" \
    "ldr r3, [r0, #20]\n\t" \
    "add r3, r12, r3, lsl #3\n\t" \
    "str r3, [sp, #4]\n\t" \
    "str r12, [sp, #20]\n\t" \
    "ldr r2, [r0, #16]\n\t" \
    "adr r3, 3f\n\t" \
    "add r3, r3, r2\n\t" \
    "str r3, [sp, #16]\n\t" \
    "ldr r1, [r0]\n" \
    "1:\n\t" /* quad loop, r1 = record */ \
    "str r1, [sp, #8]\n\t" \
    "add lr, r1, #68\n\t" \
    "ldm r1, {r0, r1, r2, r3}\n\t" \
    "mov r4, r0\n\t" \
    "mov r5, r1\n\t" \
    "mov r6, r2\n\t" \
    "mov r7, r3\n\t" \
    "ldr r12, [sp, #20]\n\t" \
    "ldr r11, [sp, #16]\n\t" \
    "mov pc, r11\n\t" \
    ".p2align 2\n" \
    "3:\n\t" ROUND \
    "ldr r8, [sp, #4]\n\t" \
    "cmp r12, r8\n\t" \
    "bne 3b\n\t" \
    "ldr r12, [sp, #8]\n\t" MT_ASM_PASS_OUTPUT /* requantise, pack, clamp, store (lr kept) */ \
    "mov r1, lr\n\t" /* the next record */ \
    "ldr r2, [sp, #12]\n\t" \
    "cmp r1, r2\n\t" \
    "bne 1b\n\t" \
    "add sp, #28\n\t" \
    "pop {r4-r11, pc}\n" \
    ".size " NAME ", . - " NAME "\n"

__asm__(".syntax unified\n"
        ".thumb\n"
        MT_CONV_PAIR_ASM("mt_conv_pair_asm", MT_CONV_X4(MT_CONV_X4(MT_CONV_STEP)))
        MT_CONV_PAIR_ASM("mt_conv_pair_chain_asm", MT_CONV_X4(MT_CONV_X4(MT_CONV_CHAIN_STEP MT_CONV_CHAIN_STEP)))
        ".text\n");
#endif

/* fast: the assembly pass can take the records; chain: with the load-chain step (packed filters). */
static void mt_conv_run(const mt_pass *j, int fast, int chain)
{
#if defined(__GNUC__) && defined(__thumb2__)
    if (fast) {
        (chain ? mt_conv_pair_chain_asm : mt_conv_pair_asm)(j);
        return;
    }
#endif
    (void)fast;
    (void)chain;
    mt_conv_pair_c(j);
}

/* Widens quads q0 .. q0 + nq - 1 (records and weights, layout above) into dst, the K groups in OHWI order or,
 * for the band (kx_major), in (kx, ky, c) order. Returns 1 when mt_conv_pair_asm can take every record. */
static int mt_conv_widen_block(const int8_t *filter, const mt_dims *f, const int32_t *bias,
                               const mt_per_channel_quant_params *q, int32_t out_off, int32_t q0, int32_t nq,
                               int kx_major, int32_t *dst)
{
    const int32_t c_out = f->n, k = f->h * f->w * f->c;
    const int32_t groups = (k + 3) >> 2, row_groups = f->c >> 2;
    int fast = 1;
    for (int32_t qi = q0; qi < q0 + nq; qi++) {
        const int32_t ch = c_out >= 4 ? MT_MIN(4 * qi, c_out - 4) : 0;
        fast &= mt_pass_record(dst, bias, q, ch, c_out, out_off);
        dst += MT_PASS_REC_WORDS;
        for (int32_t c = 0; c < 4; c++) {
            const int8_t *row = filter + (ch + c) * k;
            int32_t *d = dst + c;
            if (ch + c >= c_out) {
                for (int32_t g = 0; g < groups; g++, d += 8) {
                    d[0] = d[4] = 0;
                }
            } else if (kx_major) {
                for (int32_t kx = 0; kx < f->w; kx++) {
                    for (int32_t ky = 0; ky < f->h; ky++) {
                        const int8_t *src = row + (ky * f->w + kx) * f->c;
                        for (int32_t g = 0; g < row_groups; g++, src += 4, d += 8) {
                            const int32_t v = mt_read_s32(src);
                            d[0] = mt_lo(v);
                            d[4] = mt_hi(v);
                        }
                    }
                }
            } else {
                const int8_t *src = row;
                for (int32_t g = k >> 2; g > 0; g--, src += 4, d += 8) {
                    const int32_t v = mt_read_s32(src);
                    d[0] = mt_lo(v);
                    d[4] = mt_hi(v);
                }
                if (k & 3) {
                    const int32_t v = mt_read_tail(row, k);
                    d[0] = mt_lo(v);
                    d[4] = mt_hi(v);
                }
            }
        }
        dst += 8 * groups;
    }
    return fast;
}

/* Whether mt_conv_pair_asm can take every record of a packed filter (as mt_conv_widen_block says). */
static int mt_conv_packed_fast(const int32_t *rec, int32_t quads, int32_t kpairs)
{
    for (int32_t qi = 0; qi < quads; qi++, rec += MT_PASS_REC_WORDS + 4 * kpairs) {
        for (int32_t c = 0; c < 4; c++) {
            if (rec[7 + 3 * c] < 1 || rec[7 + 3 * c] > 22) {
                return 0;
            }
        }
    }
    return 1;
}

/* Two runs of n int8 values (s0 and s1; NULL: padding, which widens to 0) widened with the input offset added
 * into interleaved words at dst: per group of 4 values (x0, x2) of s0, of s1, then (x1, x3) of s0, of s1. n is a
 * multiple of 4. */
MT_INLINE void mt_conv_widen_pair(const int8_t *s0, const int8_t *s1, int32_t n, int32_t off16x2, int32_t *dst)
{
    if (s0 && s1) {
#if defined(__GNUC__) && defined(__thumb2__)
        int32_t a, b, t0, t1;
        __asm__ volatile("1:\n\t"
                         "ldr %[a], [%[s0]], #4\n\t"
                         "ldr %[b], [%[s1]], #4\n\t"
                         "sxtab16 %[t0], %[off], %[a]\n\t"
                         "sxtab16 %[t1], %[off], %[b]\n\t"
                         "sxtab16 %[a], %[off], %[a], ror #8\n\t"
                         "sxtab16 %[b], %[off], %[b], ror #8\n\t"
                         "str %[t0], [%[d]], #16\n\t" /* STRs: 1 cycle each on Cortex-M4, STRD 3 */
                         "str %[t1], [%[d], #-12]\n\t"
                         "str %[a], [%[d], #-8]\n\t"
                         "subs %[n], %[n], #4\n\t"
                         "str %[b], [%[d], #-4]\n\t"
                         "bne 1b"
                         : [s0] "+r"(s0), [s1] "+r"(s1), [d] "+r"(dst), [n] "+r"(n), [a] "=&r"(a), [b] "=&r"(b),
                           [t0] "=&r"(t0), [t1] "=&r"(t1)
                         : [off] "r"(off16x2)
                         : "cc", "memory");
#else
        for (; n > 0; n -= 4, s0 += 4, s1 += 4, dst += 4) {
            const int32_t v0 = mt_read_s32(s0), v1 = mt_read_s32(s1);
            dst[0] = mt_lo_off(v0, off16x2);
            dst[1] = mt_lo_off(v1, off16x2);
            dst[2] = mt_hi_off(v0, off16x2);
            dst[3] = mt_hi_off(v1, off16x2);
        }
#endif
        return;
    }
    const int32_t first = s0 == 0; /* the word slot of the position that is padding */
    const int8_t *src = s0 ? s0 : s1;
    for (; n > 0; n -= 4, dst += 4) {
        const int32_t v = src ? mt_read_s32(src) : 0;
        dst[first] = src ? mt_lo_off(v, off16x2) : 0;
        dst[first ^ 1] = 0;
        dst[2 + first] = src ? mt_hi_off(v, off16x2) : 0;
        dst[3 - first] = 0;
        src += src ? 4 : 0;
    }
}

/* n int8 values at src widened into every other word pair of dst (one position of the im2col column: words 0
 * and 2 of each 4); a last partial group takes the row's last bytes (mt_read_tail: the filter is zero beyond). */
static void mt_conv_widen_col(const int8_t *src, int32_t n, int32_t off16x2, int32_t *dst)
{
    const int32_t whole = n & ~3;
    for (int32_t i = 0; i < whole; i += 4, dst += 4) {
        const int32_t v = mt_read_s32(src + i);
        dst[0] = mt_lo_off(v, off16x2);
        dst[2] = mt_hi_off(v, off16x2);
    }
    if (n & 3) {
        const int32_t v = mt_read_tail(src, n);
        dst[0] = mt_lo_off(v, off16x2);
        dst[2] = mt_hi_off(v, off16x2);
    }
}

/* mt_conv_widen_pair as a call (inlined into the im2col loop it costs that loop registers). */
static __attribute__((noinline)) void mt_conv_widen_runs(const int8_t *s0, const int8_t *s1, int32_t n,
                                                         int32_t off16x2, int32_t *dst)
{
    mt_conv_widen_pair(s0, s1, n, off16x2, dst);
}

/* n bytes: a copy of src, or (src NULL) the byte pad; returns dst + n. */
MT_INLINE int8_t *mt_conv_copy(int8_t *dst, const int8_t *src, int32_t n, int8_t pad)
{
    if (src) {
        for (; n >= 4; n -= 4, src += 4, dst += 4) {
            mt_write_s32(dst, mt_read_s32(src));
        }
        for (; n > 0; n--) {
            *dst++ = *src++;
        }
    } else {
        const int32_t pad4 = (int32_t)mt_splat4(pad);
        for (; n >= 4; n -= 4, dst += 4) {
            mt_write_s32(dst, pad4);
        }
        for (; n > 0; n--) {
            *dst++ = pad;
        }
    }
    return dst;
}

/* Fills one column of the interleaved im2col buffer for output position (oy, ox) of image `in` (any position;
 * mt_conv_gather is the faster way for windows inside the input): cols points at word 0 of the buffer for the
 * first position and at word 1 for the second. The window is gathered into the int8 stage (padding: the input
 * zero point, which widens to 0; K padded to whole groups), then widened. */
static MT_NO_LIBCALLS void mt_conv_im2col(const int8_t *in, const mt_dims *input_dims, const mt_dims *filter_dims,
                                          const mt_conv_params *p, int32_t oy, int32_t ox, int8_t *stage,
                                          int32_t *cols, int32_t groups, int32_t off16x2)
{
    const int32_t c_in = input_dims->c, kw = filter_dims->w, kh = filter_dims->h;
    const int32_t in_row = input_dims->w * c_in;
    const int32_t iy0 = oy * p->stride.h - p->padding.top;
    const int32_t ix0 = ox * p->stride.w - p->padding.left;
    const int32_t kx0 = MT_MAX(0, -ix0);
    const int32_t kx1 = MT_MAX(kx0, MT_MIN(kw, input_dims->w - ix0));
    const int8_t *src = in + iy0 * in_row + ix0 * c_in;
    const int8_t pad = (int8_t)(-p->input_offset);
    int8_t *s = stage;
    for (int32_t ky = 0; ky < kh; ky++, src += in_row) {
        const int row_in = iy0 + ky >= 0 && iy0 + ky < input_dims->h;
        s = mt_conv_copy(s, 0, (row_in ? kx0 : kw) * c_in, pad);
        if (row_in) {
            s = mt_conv_copy(s, src + kx0 * c_in, (kx1 - kx0) * c_in, pad);
            s = mt_conv_copy(s, 0, (kw - kx1) * c_in, pad);
        }
    }
    mt_conv_copy(s, 0, (int32_t)(stage + 4 * groups - s), pad);
    mt_conv_widen_col(stage, 4 * groups, off16x2, cols);
}

/* What mt_conv_window needs of the layer. */
typedef struct {
    int32_t kh, in_row, row_len; /* row_len = KW x C_in, a multiple of 4 */
    int32_t off16x2, pad4;       /* the input offset in both halfwords, the zero point in every byte */
} mt_conv_rows;

/* n values of padding (the zero point, which widens to 0) into one position's words at cols; returns the end. */
MT_INLINE int32_t *mt_conv_zeros(int32_t *cols, int32_t n)
{
    for (; n > 0; n -= 4, cols += 4) {
        cols[0] = cols[2] = 0;
    }
    return cols;
}

/* n >= 1 rows of row_len values (a multiple of 4, rows in_row bytes apart) widened into one position's words at
 * cols; returns the end. */
MT_INLINE int32_t *mt_conv_widen_rows(const int8_t *src, int32_t n, int32_t in_row, int32_t row_len, int32_t off16x2,
                                      int32_t *cols)
{
#if defined(__GNUC__) && defined(__thumb2__)
    const int8_t *s;
    int32_t i, v, t;
    __asm__ volatile("1:\n\t"
                     "mov %[s], %[src]\n\t"
                     "mov %[i], %[len]\n"
                     "2:\n\t"
                     "ldr %[v], [%[s]], #4\n\t"
                     "sxtab16 %[t], %[off], %[v]\n\t"
                     "sxtab16 %[v], %[off], %[v], ror #8\n\t"
                     "str %[t], [%[d]], #16\n\t"
                     "str %[v], [%[d], #-8]\n\t"
                     "subs %[i], %[i], #4\n\t"
                     "bne 2b\n\t"
                     "add %[src], %[src], %[row]\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b"
                     : [src] "+r"(src), [n] "+r"(n), [d] "+r"(cols), [s] "=&r"(s), [i] "=&r"(i), [v] "=&r"(v),
                       [t] "=&r"(t)
                     : [len] "r"(row_len), [row] "r"(in_row), [off] "r"(off16x2)
                     : "cc", "memory");
#else
    for (; n > 0; n--, src += in_row) {
        for (int32_t i = 0; i < row_len; i += 4, cols += 4) {
            const int32_t v = mt_read_s32(src + i);
            cols[0] = mt_lo_off(v, off16x2);
            cols[2] = mt_hi_off(v, off16x2);
        }
    }
#endif
    return cols;
}

/* One position's window (rows of whole groups) into one column of the im2col buffer: rows outside ky0 .. ky1 - 1
 * are padding; a row whose bytes outside b0 .. b1 - 1 are padding goes through the stage (zero points, then its
 * part inside the input). src: the window's first row and column, read only inside those bounds. */
static MT_NO_LIBCALLS void mt_conv_window(const mt_conv_rows *r, const int8_t *src, int32_t ky0, int32_t ky1,
                                          int32_t b0, int32_t b1, int8_t *stage, int32_t *cols)
{
    const int32_t row_len = r->row_len, in_row = r->in_row, off16x2 = r->off16x2;
    ky0 = MT_MIN(ky0, r->kh);
    ky1 = b1 > b0 ? MT_MAX(ky0, ky1) : ky0; /* no column inside the input: every row is padding */
    cols = mt_conv_zeros(cols, ky0 * row_len);
    src += ky0 * in_row;
    const int32_t rows = ky1 - ky0;
    if (rows > 0 && (b0 > 0 || b1 < row_len)) { /* the rows into the stage, one after another (it holds K values) */
        for (int32_t i = 0; i < rows * row_len; i += 4) {
            mt_write_s32(stage + i, r->pad4);
        }
        int8_t *d = stage;
        for (int32_t ky = ky0; ky < ky1; ky++, src += in_row, d += row_len) {
            for (int32_t i = b0; i < b1; i++) {
                d[i] = src[i];
            }
        }
        cols = mt_conv_widen_rows(stage, rows, row_len, row_len, off16x2, cols);
    } else if (rows > 0) {
        cols = mt_conv_widen_rows(src, rows, in_row, row_len, off16x2, cols);
    }
    mt_conv_zeros(cols, (r->kh - ky1) * row_len);
}

/* The window at src, inside the input, into one column of the im2col buffer (as mt_conv_im2col). direct: its
 * rows are whole groups of 4 (or there is one row), widened straight from the input; else the rows are copied in
 * whole words into the stage first (a row's copy may run up to 3 bytes past it, into stage bytes the next row
 * overwrites or beyond K, where the filter is zero; the caller checked the reads stay inside the input). */
MT_INLINE void mt_conv_gather(const int8_t *src, int32_t kh, int32_t in_row, int32_t row_len, int direct,
                              int8_t *stage, int32_t groups, int32_t off16x2, int32_t *cols)
{
    if (direct) {
        for (int32_t ky = 0; ky < kh; ky++, src += in_row, cols += row_len) {
            mt_conv_widen_col(src, row_len, off16x2, cols);
        }
        return;
    }
    int8_t *s = stage;
    for (int32_t ky = 0; ky < kh; ky++, src += in_row, s += row_len) {
        for (int32_t i = 0; i < row_len; i += 4) {
            mt_write_s32(s + i, mt_read_s32(src + i));
        }
    }
    mt_conv_widen_col(stage, 4 * groups, off16x2, cols);
}

/* The band for output row oy of image `in` (layout above): cols columns; column j holds, for each of the KH
 * input rows, input column j - left for the first position and j - left + d for the second. */
static void mt_conv_band(const int8_t *in, const mt_dims *input_dims, const mt_dims *filter_dims,
                         const mt_conv_params *p, int32_t oy, int32_t d, int32_t cols, int32_t off16x2, int32_t *dst)
{
    const int32_t c_in = input_dims->c, w_in = input_dims->w, kh = filter_dims->h;
    const int32_t iy0 = oy * p->stride.h - p->padding.top;
    const int8_t *rows[16]; /* the KH input rows (NULL: padding); taller filters go the im2col way */
    for (int32_t ky = 0; ky < kh; ky++) {
        const int32_t iy = iy0 + ky;
        rows[ky] = iy >= 0 && iy < input_dims->h ? in + (iy * w_in - p->padding.left) * c_in : 0;
    }
    for (int32_t j = 0; j < cols; j++) {
        const int32_t c0 = j - p->padding.left, c1 = c0 + d;
        const int32_t o0 = c0 >= 0 && c0 < w_in ? j * c_in : -1, o1 = c1 >= 0 && c1 < w_in ? (j + d) * c_in : -1;
        for (int32_t ky = 0; ky < kh; ky++, dst += c_in) {
            const int8_t *r = rows[ky];
            mt_conv_widen_pair(r && o0 >= 0 ? r + o0 : 0, r && o1 >= 0 ? r + o1 : 0, c_in, off16x2, dst);
        }
    }
}

/* The DSP convolution (arguments already checked, the scratch at least mt_conv_s8_get_min_buffer_size()): the
 * channel block is as many quads as the scratch holds; the outputs do not depend on it. */
static mt_status mt_conv_dsp(const mt_context *ctx, const mt_conv_params *p, const mt_per_channel_quant_params *q,
                             const mt_dims *input_dims, const int8_t *input, const mt_dims *filter_dims,
                             const int8_t *filter, const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c_in = input_dims->c, c_out = output_dims->c;
    const int32_t kpairs = mt_conv_kpairs(filter_dims);
    const int32_t qb = mt_conv_quad_bytes(filter_dims);
    const int32_t quads = (c_out + 3) >> 2;
    const int32_t w_out = output_dims->w;
    const int32_t half = (w_out + 1) >> 1;
    const int32_t cols = mt_conv_band_cols(w_out, filter_dims->w, p->stride.w);
    /* a packed filter is widened for the band whenever the layer has its shape (its scratch then always fits) */
    const int32_t wbytes = p->packed ? 0 : qb;
    const int band = mt_conv_band_shape(filter_dims) &&
                     mt_conv_band_bytes(filter_dims, cols) + mt_conv_trash_bytes(filter_dims) + wbytes <= ctx->size;
    /* im2col pairs an odd last position with itself (the same outputs written twice): no trash */
    const int32_t trash = band ? mt_conv_trash_bytes(filter_dims) : 0;
    const int32_t x_bytes = band ? mt_conv_band_bytes(filter_dims, cols) : mt_conv_im2col_bytes(filter_dims);
    const int32_t block = p->packed ? quads : MT_MIN(quads, (ctx->size - x_bytes - trash) / qb);
    if (block < 1 || (p->packed && band != mt_conv_band_shape(filter_dims))) {
        return MT_ARG_ERROR;
    }
    int32_t *wbuf = p->packed ? 0 : (int32_t *)ctx->buf;
    int32_t *xbuf = p->packed ? (int32_t *)ctx->buf : wbuf + block * qb / 4;
    int8_t *trash_out = (int8_t *)xbuf + x_bytes;
    const int32_t off16x2 = mt_pack_off16x2(p->input_offset);
    const int32_t in_image = input_dims->h * input_dims->w * c_in;

    mt_pass j;
    j.w = p->packed ? p->packed : wbuf;
    j.n = kpairs;
    j.step = qb;
    j.entry = p->packed ? (-kpairs & (MT_CONV_CHAIN_ROUND - 1)) * MT_CONV_CHAIN_STEP_BYTES
                        : (-kpairs & (MT_CONV_ROUND - 1)) * MT_CONV_STEP_BYTES;
    j.out_off = p->output_offset;
    j.min4 = mt_splat4(p->activation.min);
    j.max4 = mt_splat4(p->activation.max);
    j.tail = MT_MIN(c_out, 4);
    for (int32_t q0 = 0; q0 < quads; q0 += block) {
        j.quads = MT_MIN(block, quads - q0);
        const int fast = (p->packed ? mt_conv_packed_fast(p->packed, quads, kpairs)
                                    : mt_conv_widen_block(filter, filter_dims, bias, q, p->output_offset, q0, j.quads,
                                                          band, wbuf)) && c_out >= 4;
        if (band) {
            for (int32_t b = 0; b < output_dims->n; b++) {
                for (int32_t oy = 0; oy < output_dims->h; oy++) {
                    mt_conv_band(input + b * in_image, input_dims, filter_dims, p, oy, p->stride.w * half, cols,
                                 off16x2, xbuf);
                    int8_t *out_row = output + ((b * output_dims->h + oy) * w_out) * c_out;
                    for (int32_t ox = 0; ox < half; ox++) {
                        j.x = xbuf + ox * p->stride.w * filter_dims->h * c_in; /* a band column is KH x C_in words */
                        j.out0 = out_row + ox * c_out;
                        j.out1 = ox + half < w_out ? out_row + (ox + half) * c_out : trash_out;
                        mt_conv_run(&j, fast, p->packed != 0);
                    }
                }
            }
        } else if (filter_dims->h == 1 && filter_dims->w == 1 && (c_in & 3) == 0 && p->stride.h == 1 &&
                   p->stride.w == 1 && (p->padding.top | p->padding.left | p->padding.bottom | p->padding.right) == 0) {
            /* 1x1, stride 1, no padding: position i's window is the i-th run of C_in input values */
            const int32_t positions = output_dims->n * output_dims->h * w_out;
            j.x = xbuf;
            for (int32_t i = 0; i < positions; i += 2) {
                const int8_t *s0 = input + i * c_in;
                const int last = i + 1 == positions; /* an odd count pairs its last position with itself */
                mt_conv_widen_runs(s0, last ? s0 : s0 + c_in, c_in, off16x2, xbuf);
                j.out0 = output + i * c_out;
                j.out1 = last ? j.out0 : j.out0 + c_out;
                mt_conv_run(&j, fast, p->packed != 0);
            }
        } else {
            const int32_t groups = kpairs >> 1;
            int8_t *stage = (int8_t *)(xbuf + 4 * groups);
            const int32_t positions = output_dims->n * output_dims->h * w_out;
            j.x = xbuf;
            int32_t b = 0, oy = 0, ox = 0;
            const int32_t kh = filter_dims->h, kw = filter_dims->w, in_row = input_dims->w * c_in;
            const int32_t row_len = kw * c_in;
            const int direct = kh == 1 || (row_len & 3) == 0;
            const int one_row = kh == 1 && (row_len & 3) == 0; /* a window is one run of whole groups */
            const int whole_rows = kh > 1 && (row_len & 3) == 0; /* every window row by row (mt_conv_window) */
            const mt_conv_rows rows = {kh, in_row, row_len, off16x2, (int32_t)mt_splat4(-p->input_offset)};
            const int8_t *input_end = input + input_dims->n * in_image - (kh - 1) * in_row - ((row_len + 3) & ~3);
            for (int32_t i = 0; i < positions; i += 2) {
                const int8_t *runs[2] = {0, 0}; /* one-row windows inside the input, widened below */
                for (int32_t c = 0; c < 2; c++) { /* positions i and i + 1 (the last one twice) */
                    const int32_t iy0 = oy * p->stride.h - p->padding.top, ix0 = ox * p->stride.w - p->padding.left;
                    const int8_t *src = input + b * in_image + iy0 * in_row + ix0 * c_in;
                    if (whole_rows) {
                        mt_conv_window(&rows, src, MT_MAX(0, -iy0), MT_MIN(kh, input_dims->h - iy0),
                                       MT_MAX(0, -ix0) * c_in, MT_MIN(kw, input_dims->w - ix0) * c_in, stage,
                                       xbuf + c);
                    } else if (iy0 >= 0 && iy0 + kh <= input_dims->h && ix0 >= 0 && ix0 + kw <= input_dims->w &&
                        (direct || src <= input_end)) {
                        if (one_row) {
                            runs[c] = src;
                        } else {
                            mt_conv_gather(src, kh, in_row, row_len, direct, stage, groups, off16x2, xbuf + c);
                        }
                    } else {
                        mt_conv_im2col(input + b * in_image, input_dims, filter_dims, p, oy, ox, stage, xbuf + c,
                                       groups, off16x2);
                    }
                    if (i + c + 1 < positions && ++ox == w_out) {
                        ox = 0;
                        if (++oy == output_dims->h) {
                            oy = 0;
                            b++;
                        }
                    }
                }
                if (runs[0] && runs[1]) {
                    mt_conv_widen_runs(runs[0], runs[1], row_len, off16x2, xbuf); /* the same layout in one loop */
                } else {
                    for (int32_t c = 0; c < 2; c++) {
                        if (runs[c]) {
                            mt_conv_widen_col(runs[c], row_len, off16x2, xbuf + c);
                        }
                    }
                }
                j.out0 = output + i * c_out;
                j.out1 = i + 1 < positions ? j.out0 + c_out : j.out0;
                mt_conv_run(&j, fast, p->packed != 0);
            }
        }
    }
    return MT_SUCCESS;
}

#if MT_USE_MVE
/* The int8 K values of output position pos (an index over N x H_out x W_out), padding taps the input zero point:
 * a pointer into the input for 1x1 filters without padding, else the gathered copy in col. */
static const int8_t *mt_conv_mve_col(const int8_t *input, const mt_dims *in, const mt_dims *f, const mt_dims *out,
                                     const mt_conv_params *p, int32_t pos, int8_t *col)
{
    const int32_t per_image = out->h * out->w;
    const int32_t b = pos / per_image, oy = (pos - b * per_image) / out->w, ox = pos - b * per_image - oy * out->w;
    const int32_t iy0 = oy * p->stride.h - p->padding.top, ix0 = ox * p->stride.w - p->padding.left;
    const int8_t *img = input + b * in->h * in->w * in->c;
    if (f->h == 1 && f->w == 1 && iy0 >= 0 && iy0 < in->h && ix0 >= 0 && ix0 < in->w) {
        return img + (iy0 * in->w + ix0) * in->c;
    }
    int8_t *d = col;
    const int8x16_t pad = vdupq_n_s8((int8_t)(-p->input_offset));
    for (int32_t ky = 0; ky < f->h; ky++) {
        for (int32_t kx = 0; kx < f->w; kx++, d += in->c) {
            const int32_t iy = iy0 + ky, ix = ix0 + kx;
            const int inside = iy >= 0 && iy < in->h && ix >= 0 && ix < in->w;
            const int8_t *src = img + (iy * in->w + ix) * in->c;
            for (int32_t c = 0; c < in->c; c += 16) {
                const mve_pred16_t pc = vctp8q((uint32_t)(in->c - c));
                vstrbq_p_s8(d + c, inside ? vldrbq_z_s8(src + c, pc) : pad, pc);
            }
        }
    }
    return col;
}

/* Four dot products of the K int8 values at x with filter rows w, w + k, w + 2k, w + 3k, added to a[0..3]: 16 K
 * values per VMLADAVA, the input vector loaded once for the four rows; the K tail with predicated loads. */
MT_INLINE void mt_conv_mve_dot4(const int8_t *x, const int8_t *w, int32_t k, int32_t *a)
{
    const int8_t *w1 = w + k, *w2 = w1 + k, *w3 = w2 + k;
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const int8x16_t v = vldrbq_s8(x + i);
        a0 = vmladavaq_s8(a0, v, vldrbq_s8(w + i));
        a1 = vmladavaq_s8(a1, v, vldrbq_s8(w1 + i));
        a2 = vmladavaq_s8(a2, v, vldrbq_s8(w2 + i));
        a3 = vmladavaq_s8(a3, v, vldrbq_s8(w3 + i));
    }
    if (i < k) {
        const mve_pred16_t pk = vctp8q((uint32_t)(k - i));
        const int8x16_t v = vldrbq_z_s8(x + i, pk);
        a0 = vmladavaq_s8(a0, v, vldrbq_z_s8(w + i, pk));
        a1 = vmladavaq_s8(a1, v, vldrbq_z_s8(w1 + i, pk));
        a2 = vmladavaq_s8(a2, v, vldrbq_z_s8(w2 + i, pk));
        a3 = vmladavaq_s8(a3, v, vldrbq_z_s8(w3 + i, pk));
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
}

/* One dot product of K int8 values (a short last quad's rows), predicated loads throughout. */
MT_INLINE int32_t mt_conv_mve_dot1(const int8_t *x, const int8_t *w, int32_t k, int32_t a)
{
    for (int32_t i = 0; i < k; i += 16) {
        const mve_pred16_t pk = vctp8q((uint32_t)(k - i));
        a = vmladavaq_s8(a, vldrbq_z_s8(x + i, pk), vldrbq_z_s8(w + i, pk));
    }
    return a;
}

/* Helium path: one output position x four output channels, 16 K values per VMLADAVA on the raw int8 operands;
 * the input offset enters through the bias (bias + offset * sum(w), so a padding tap, the zero point, adds 0);
 * 4 outputs per vector requantisation. Returns 0 when the scratch (the DSP path's, which is larger) does not
 * fit; the DSP path runs then. */
static int mt_conv_mve(const mt_context *ctx, const mt_conv_params *p, const mt_per_channel_quant_params *q,
                       const mt_dims *input_dims, const int8_t *input, const mt_dims *f, const int8_t *filter,
                       const int32_t *bias, const mt_dims *output_dims, int8_t *output)
{
    const int32_t c_out = f->n, k = f->h * f->w * f->c, k16 = (k + 15) & ~15, c4 = (c_out + 3) & ~3;
    if (12 * c4 + k16 > ctx->size) {
        return 0;
    }
    int32_t *fold = (int32_t *)ctx->buf, *rnd = fold + c4, *nk = rnd + c4;
    int8_t *col = (int8_t *)(nk + c4);
    const int vector_out = mt_mve_round(q, c_out, p->output_offset, rnd, nk);
    for (int32_t oc = 0; oc < c_out; oc++) {
        int32_t sw = 0;
        for (int32_t i = 0; i < k; i += 16) {
            sw = vaddvaq_s8(sw, vldrbq_z_s8(filter + oc * k + i, vctp8q((uint32_t)(k - i))));
        }
        fold[oc] = (int32_t)((uint32_t)(bias ? bias[oc] : 0) + (uint32_t)p->input_offset * (uint32_t)sw);
    }
    const int32_t lo = p->activation.min, hi = p->activation.max;
    const int32_t positions = output_dims->n * output_dims->h * output_dims->w;
    for (int32_t pos = 0; pos < positions; pos++) {
        const int8_t *x = mt_conv_mve_col(input, input_dims, f, output_dims, p, pos, col);
        int8_t *out = output + pos * c_out;
        for (int32_t oc = 0; oc < c_out; oc += 4) {
            const int32_t rows = MT_MIN(4, c_out - oc);
            int32_t a[4] = {fold[oc], 0, 0, 0};
            if (rows == 4) {
                a[1] = fold[oc + 1], a[2] = fold[oc + 2], a[3] = fold[oc + 3];
                mt_conv_mve_dot4(x, filter + oc * k, k, a);
            } else {
                for (int32_t r = 0; r < rows; r++) {
                    a[r] = mt_conv_mve_dot1(x, filter + (oc + r) * k, k, fold[oc + r]);
                }
            }
            if (vector_out) {
                mt_mve_store4(vldrwq_s32(a), q->multiplier + oc, rnd + oc, nk + oc, vctp32q((uint32_t)rows), lo, hi,
                              out + oc);
            } else {
                for (int32_t r = 0; r < rows; r++) {
                    out[oc + r] = mt_output_s8(a[r], q->multiplier[oc + r], q->shift[oc + r], lo - p->output_offset,
                                               hi - p->output_offset, p->output_offset);
                }
            }
        }
    }
    return 1;
}
#endif

#endif /* MT_USE_DSP */

#if MT_USE_SMLAL
/* Blocked plain C for cores with a 32 x 32 -> 64-bit multiply-accumulate (SMLAL) but no DSP extension
 * (Cortex-M3): 4 output channels x 2 output positions per inner loop. The two positions' int8 inputs xa, xb are
 * packed into one word X = xa + xb * 2^23 (|xb| * 2^23 <= 2^30, so it fits), and one SMLAL per channel adds
 * X * w to a 64-bit sum S = A + B * 2^23, A and B the two positions' dot products. After at most MT_PAIR_TAPS
 * taps |A| <= 255 * 2^14 < 2^22, so A is S's low 23 bits sign-extended and B = (S - A) / 2^23, exactly: 2 MACs per
 * multiply instruction, each input byte loaded once for 4 channels, each weight byte once for 2 positions. The
 * inputs are raw (no input offset in the loop): the offset enters through fold = bias + offset * sum(w), which is
 * right for windows inside the input. Windows that touch padding, and a row's unpaired last position, take a
 * 4-channel, one-position loop with the offset added per tap (mt_conv_quad1). */
#define MT_PAIR_TAPS 255

/* With S[c] = sum over i < n of (x[i] + x[i + x_step] * 2^23) * w[c * w_row + i] (c = 0..3, 1 <= n <=
 * MT_PAIR_TAPS): ab[c] += A[c] (the first position's dot product: S's low 23 bits sign-extended) and ab[4 + c] +=
 * B[c] = (S[c] - A[c]) / 2^23 (the second's), wrapping as the reference's int32 sums. Repeated for `pairs` >= 1
 * pairs of positions, x advancing by pair_step and ab by 8 each time (one call for a row's pairs). */
#if defined(__GNUC__) && defined(__thumb2__)
void mt_conv_dot4x2(const int8_t *x, int32_t x_step, const int8_t *w, int32_t w_row, int32_t n, int32_t *ab,
                    int32_t pairs, int32_t pair_step);

/* One tap: the packed input word in r12, 4 weights in turn in lr, 4 SMLAL (12 instructions, 8 MACs). */
#define MT_DOT4X2_STEP \
    "ldr lr, [sp]\n\t" \
    "ldrsb lr, [r8, lr]\n\t" \
    "ldrsb r12, [r8], #1\n\t" \
    "add r12, r12, lr, lsl #23\n\t" \
    "ldrsb lr, [r9, r10]\n\t" \
    "smlal r2, r3, r12, lr\n\t" \
    "ldrsb lr, [r9], #1\n\t" \
    "smlal r0, r1, r12, lr\n\t" \
    "ldrsb lr, [r11, r10]\n\t" \
    "smlal r6, r7, r12, lr\n\t" \
    "ldrsb lr, [r11], #1\n\t" \
    "smlal r4, r5, r12, lr\n\t"

/* Splits channel c's sum (lo, hi) into A (r12) and B (lo) and adds them to ab[c] and ab[4 + c] (ab in lr). */
#define MT_DOT4X2_SPLIT(lo, hi, c) \
    "sbfx r12, " lo ", #0, #23\n\t" \
    "subs " lo ", " lo ", r12\n\t" \
    "sbc " hi ", " hi ", r12, asr #31\n\t" \
    "lsrs " lo ", " lo ", #23\n\t" \
    "orr " lo ", " lo ", " hi ", lsl #9\n\t" \
    "ldr r9, [lr, #" #c " * 4]\n\t" \
    "add r9, r9, r12\n\t" \
    "str r9, [lr, #" #c " * 4]\n\t" \
    "ldr r9, [lr, #16 + " #c " * 4]\n\t" \
    "add r9, r9, " lo "\n\t" \
    "str r9, [lr, #16 + " #c " * 4]\n\t"

/* Registers: r0-r7 the four 64-bit sums, r8 x, r9 / r11 the weights of channels 0 / 2 (channels 1 / 3 at +r10),
 * r12 the packed input, lr a loaded byte. Stack: [0] x_step, [4] x + n % 4 (end of the single-tap loop), [8] x + n
 * (end of the loop of 4 taps), [12] w; the arguments n, ab, pairs, pair_step at [52], [56], [60], [64]. */
__asm__(".syntax unified\n"
        ".thumb\n"
        ".section .text.mt_conv_dot4x2,\"ax\",%progbits\n"
        ".global mt_conv_dot4x2\n"
        ".type mt_conv_dot4x2, %function\n"
        ".p2align 2\n"
        "mt_conv_dot4x2:\n\t"
        "push {r4-r11, lr}\n\t"
        "sub sp, #16\n\t"
        "mov r8, r0\n\t"
        "str r1, [sp]\n\t"
        "str r2, [sp, #12]\n\t"
        "mov r10, r3\n"
        "5:\n\t"
        "ldr r9, [sp, #12]\n\t"
        "add r11, r9, r10, lsl #1\n\t"
        "ldr r0, [sp, #52]\n\t" /* n */
        "add r1, r8, r0\n\t"
        "str r1, [sp, #8]\n\t"
        "and r0, r0, #3\n\t"
        "add r0, r8, r0\n\t"
        "str r0, [sp, #4]\n\t"
        "movs r0, #0\n\t"
        "movs r1, #0\n\t"
        "movs r2, #0\n\t"
        "movs r3, #0\n\t"
        "movs r4, #0\n\t"
        "movs r5, #0\n\t"
        "movs r6, #0\n\t"
        "movs r7, #0\n\t"
        "ldr lr, [sp, #4]\n\t"
        "cmp r8, lr\n\t"
        "beq 2f\n"
        "1:\n\t" MT_DOT4X2_STEP
        "ldr lr, [sp, #4]\n\t"
        "cmp r8, lr\n\t"
        "bne 1b\n"
        "2:\n\t"
        "ldr lr, [sp, #8]\n\t"
        "cmp r8, lr\n\t"
        "beq 4f\n"
        "3:\n\t" MT_DOT4X2_STEP MT_DOT4X2_STEP MT_DOT4X2_STEP MT_DOT4X2_STEP
        "ldr lr, [sp, #8]\n\t"
        "cmp r8, lr\n\t"
        "bne 3b\n"
        "4:\n\t"
        "ldr lr, [sp, #56]\n\t" /* ab */
        MT_DOT4X2_SPLIT("r0", "r1", 0) MT_DOT4X2_SPLIT("r2", "r3", 1) MT_DOT4X2_SPLIT("r4", "r5", 2)
        MT_DOT4X2_SPLIT("r6", "r7", 3)
        "add lr, lr, #32\n\t"
        "str lr, [sp, #56]\n\t"
        "ldr r0, [sp, #52]\n\t" /* x back to the pair's start, on to the next pair */
        "sub r8, r8, r0\n\t"
        "ldr r0, [sp, #64]\n\t"
        "add r8, r8, r0\n\t"
        "ldr r0, [sp, #60]\n\t"
        "subs r0, r0, #1\n\t"
        "str r0, [sp, #60]\n\t"
        "bne 5b\n\t"
        "add sp, #16\n\t"
        "pop {r4-r11, pc}\n"
        ".size mt_conv_dot4x2, . - mt_conv_dot4x2\n"
        ".text\n");
#else
static void mt_conv_dot4x2(const int8_t *x, int32_t x_step, const int8_t *w, int32_t w_row, int32_t n, int32_t *ab,
                           int32_t pairs, int32_t pair_step)
{
    for (; pairs > 0; pairs--, x += pair_step, ab += 8) {
        int64_t s[4] = {0, 0, 0, 0};
        for (int32_t i = 0; i < n; i++) {
            const int32_t xx = (int32_t)x[i] + (int32_t)x[i + x_step] * (1 << 23);
            for (int32_t c = 0; c < 4; c++) {
                s[c] += (int64_t)xx * w[c * w_row + i];
            }
        }
        for (int32_t c = 0; c < 4; c++) {
            const int32_t lo = (int32_t)((uint32_t)s[c] << 9) >> 9;
            ab[c] = (int32_t)((uint32_t)ab[c] + (uint32_t)lo);
            ab[4 + c] = (int32_t)((uint32_t)ab[4 + c] + (uint32_t)((s[c] - lo) >> 23));
        }
    }
}
#endif

/* Channels oc .. oc + 3 of output position (oy, ox), any window: acc = bias + sum over the taps inside the input
 * of (x + input_offset) * w. */
static void mt_conv_quad1(const mt_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *in_d,
                          const int8_t *in, const mt_dims *f, const int8_t *filter, const int32_t *bias, int32_t oy,
                          int32_t ox, int32_t oc, int8_t *out)
{
    const int32_t c_in = in_d->c, k = f->h * f->w * c_in, off = p->input_offset;
    const int32_t iy0 = oy * p->stride.h - p->padding.top, ix0 = ox * p->stride.w - p->padding.left;
    const int32_t ky0 = MT_MAX(0, -iy0), ky1 = MT_MIN(f->h, in_d->h - iy0);
    const int32_t kx0 = MT_MAX(0, -ix0), kx1 = MT_MIN(f->w, in_d->w - ix0);
    const int32_t n = (kx1 - kx0) * c_in; /* <= 0 when the window lies in the padding */
    int32_t a0 = bias ? bias[oc] : 0, a1 = bias ? bias[oc + 1] : 0, a2 = bias ? bias[oc + 2] : 0,
            a3 = bias ? bias[oc + 3] : 0;
    for (int32_t ky = ky0; ky < ky1; ky++) {
        const int8_t *x = in + ((iy0 + ky) * in_d->w + ix0 + kx0) * c_in;
        const int8_t *w = filter + oc * k + (ky * f->w + kx0) * c_in;
        const int8_t *w2 = w + 2 * k;
        for (int32_t i = n; i > 0; i--, x++, w++, w2++) {
            const int32_t v = *x + off;
            a0 += v * w[0];
            a1 += v * w[k];
            a2 += v * w2[0];
            a3 += v * w2[k];
        }
    }
    const int32_t lo = p->activation.min - p->output_offset, hi = p->activation.max - p->output_offset;
    const int32_t a[4] = {a0, a1, a2, a3};
    for (int32_t c = 0; c < 4; c++) {
        out[oc + c] = mt_output_s8(a[c], q->multiplier[oc + c], q->shift[oc + c], lo, hi, p->output_offset);
    }
}

/* Channels oc .. oc + 3 of output positions (oy, ox) and (oy, ox + 1), both windows inside the input; fold[c] =
 * bias + input_offset * (sum of channel oc + c's weights). */
static void mt_conv_quad2(const mt_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *in_d,
                          const int8_t *in, const mt_dims *f, const int8_t *filter, const int32_t *fold, int32_t oy,
                          int32_t ox, int32_t oc, int8_t *out0, int8_t *out1)
{
    const int32_t c_in = in_d->c, k = f->h * f->w * c_in, run = f->w * c_in, in_row = in_d->w * c_in;
    const int8_t *x = in + ((oy * p->stride.h - p->padding.top) * in_d->w + ox * p->stride.w - p->padding.left) *
                               c_in;
    const int8_t *w = filter + oc * k;
    int32_t ab[8] = {fold[0], fold[1], fold[2], fold[3], fold[0], fold[1], fold[2], fold[3]};
    for (int32_t ky = 0; ky < f->h; ky++, x += in_row, w += run) {
        for (int32_t i = 0; i < run; i += MT_PAIR_TAPS) {
            mt_conv_dot4x2(x + i, p->stride.w * c_in, w + i, k, MT_MIN(run - i, MT_PAIR_TAPS), ab, 1, 0);
        }
    }
    const int32_t lo = p->activation.min - p->output_offset, hi = p->activation.max - p->output_offset;
    for (int32_t c = 0; c < 4; c++) {
        const int32_t m = q->multiplier[oc + c], sh = q->shift[oc + c];
        out0[oc + c] = mt_output_s8(ab[c], m, sh, lo, hi, p->output_offset);
        out1[oc + c] = mt_output_s8(ab[4 + c], m, sh, lo, hi, p->output_offset);
    }
}

/* Most position pairs one mt_conv_quad_run call takes (its sums on the stack: 32 B a pair). */
#define MT_RUN_PAIRS 16

/* Channels oc .. oc + 3 of `pairs` consecutive position pairs from the window at x on (one row of taps, at most
 * MT_PAIR_TAPS, every window inside the input): one assembly call for all pairs. out points at the first
 * position's output pixel (c_out bytes a position). */
static void mt_conv_quad_run(const mt_conv_params *p, const mt_per_channel_quant_params *q, const int8_t *x,
                             const mt_dims *f, const int8_t *filter, const int32_t *fold, int32_t oc, int32_t pairs,
                             int8_t *out, int32_t c_out)
{
    const int32_t k = f->w * f->c, x_step = p->stride.w * f->c;
    int32_t ab[8 * MT_RUN_PAIRS];
    for (int32_t j = 0; j < 8 * pairs; j += 4) {
        ab[j] = fold[0], ab[j + 1] = fold[1], ab[j + 2] = fold[2], ab[j + 3] = fold[3];
    }
    mt_conv_dot4x2(x, x_step, filter + oc * k, k, k, ab, pairs, 2 * x_step);
    const int32_t lo = p->activation.min - p->output_offset, hi = p->activation.max - p->output_offset;
    for (int32_t c = 0; c < 4; c++) {
        const int32_t m = q->multiplier[oc + c], sh = q->shift[oc + c];
        int8_t *o = out + oc + c;
        for (int32_t j = c; j < 8 * pairs; j += 4, o += c_out) {
            *o = mt_output_s8(ab[j], m, sh, lo, hi, p->output_offset);
        }
    }
}

/* The blocked loops over all outputs; C_out >= 4. */
static void mt_conv_smlal(const mt_conv_params *p, const mt_per_channel_quant_params *q, const mt_dims *in_d,
                          const int8_t *input, const mt_dims *f, const int8_t *filter, const int32_t *bias,
                          const mt_dims *out_d, int8_t *output)
{
    const int32_t c_out = out_d->c, in_image = in_d->h * in_d->w * in_d->c, w_out = out_d->w;
    const int32_t k = f->h * f->w * f->c;
    const int row_runs = f->h == 1 && k <= MT_PAIR_TAPS; /* a pair's taps in one assembly pass */
    for (int32_t oc0 = 0; oc0 < c_out; oc0 += 4) {
        const int32_t oc = MT_MIN(oc0, c_out - 4); /* the last quad overlaps its neighbour */
        int32_t fold[4];
        for (int32_t c = 0; c < 4; c++) {
            int32_t sum = 0;
            for (int32_t i = 0; i < k; i++) {
                sum += filter[(oc + c) * k + i];
            }
            fold[c] = (int32_t)((uint32_t)(bias ? bias[oc + c] : 0) + (uint32_t)(p->input_offset * sum));
        }
        for (int32_t b = 0; b < in_d->n; b++) {
            const int8_t *in = input + b * in_image;
            for (int32_t oy = 0; oy < out_d->h; oy++) {
                const int32_t iy0 = oy * p->stride.h - p->padding.top;
                const int rows_in = iy0 >= 0 && iy0 + f->h <= in_d->h;
                int8_t *out = output + (b * out_d->h + oy) * w_out * c_out;
                for (int32_t ox = 0; ox < w_out;) {
                    const int32_t ix0 = ox * p->stride.w - p->padding.left;
                    if (row_runs && rows_in && ix0 >= 0 && ox + 1 < w_out && ix0 + p->stride.w + f->w <= in_d->w) {
                        int32_t pairs = 1; /* and the pairs after it inside the input */
                        while (pairs < MT_RUN_PAIRS && ox + 2 * pairs + 1 < w_out &&
                               ix0 + (2 * pairs + 1) * p->stride.w + f->w <= in_d->w) {
                            pairs++;
                        }
                        mt_conv_quad_run(p, q, in + (iy0 * in_d->w + ix0) * in_d->c, f, filter, fold, oc, pairs,
                                         out + ox * c_out, c_out);
                        ox += 2 * pairs;
                    } else if (rows_in && ix0 >= 0 && ox + 1 < w_out && ix0 + p->stride.w + f->w <= in_d->w) {
                        mt_conv_quad2(p, q, in_d, in, f, filter, fold, oy, ox, oc, out + ox * c_out,
                                      out + (ox + 1) * c_out);
                        ox += 2;
                    } else {
                        mt_conv_quad1(p, q, in_d, in, f, filter, bias, oy, ox, oc, out + ox * c_out);
                        ox++;
                    }
                }
            }
        }
    }
}
#endif /* MT_USE_SMLAL */

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

#if MT_USE_DSP
    const int32_t needed = p->packed ? mt_conv_s8_get_packed_buffer_size(input_dims, filter_dims)
                                     : mt_conv_s8_get_min_buffer_size(filter_dims);
    if (ctx == 0 || ctx->buf == 0 || ctx->size < needed ||
        ((uintptr_t)ctx->buf & 3u) != 0) {
        return MT_ARG_ERROR;
    }
#if MT_USE_MVE
    /* Below 32 taps per output, or 16 output channels per position, the DSP path's overheads are the smaller. */
    if (filter_dims->h * filter_dims->w * filter_dims->c >= 32 && filter_dims->n >= 16 &&
        mt_conv_mve(ctx, p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output)) {
        return MT_SUCCESS;
    }
#endif
    return mt_conv_dsp(ctx, p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
#else
    (void)ctx;
#if MT_USE_SMLAL
    if (output_dims->c >= 4) {
        mt_conv_smlal(p, quant_params, input_dims, input, filter_dims, filter, bias, output_dims, output);
        return MT_SUCCESS;
    }
#endif
    const int32_t c_in = input_dims->c;
    const int32_t c_out = output_dims->c;
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    const int32_t in_image = input_dims->h * input_dims->w * c_in;
    const int32_t out_positions = output_dims->h * output_dims->w;
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
    return MT_SUCCESS;
#endif
}
