/*
 * mcu-train int8 kernels: internal helpers shared by the kernel files (not part of the public API).
 */
#ifndef MT_SUPPORT_H
#define MT_SUPPORT_H

#include "mt_kernels.h"

#if MT_USE_DSP
#include <arm_acle.h>
#endif

/* Helium (M-profile vector extension, Cortex-M55): the conv, depthwise and dense kernels take an MVE path first. */
#if MT_USE_DSP && defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define MT_USE_MVE 1
#include <arm_mve.h>
#else
#define MT_USE_MVE 0
#endif

/* Plain C on cores without the DSP extension takes blocked loops built on 64-bit multiply-accumulates (SMLAL),
 * except on ARMv6-M (Cortex-M0/M0+), where a 64-bit multiply is a library call: it keeps the simple loops. */
#if !MT_USE_DSP && !defined(__ARM_ARCH_6M__)
#define MT_USE_SMLAL 1
#else
#define MT_USE_SMLAL 0
#endif

#define MT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MT_MIN(a, b) ((a) < (b) ? (a) : (b))

/* For the SIMD inner loops: GCC's pre-allocation scheduler hoists loads and then runs out of the 14 usable
 * registers, spilling inside the loop; without it the 2x2 conv loop is 19 instructions per 16 MACs. */
#if defined(__GNUC__) && !defined(__clang__)
#define MT_NO_PRESCHED __attribute__((optimize("no-schedule-insns")))
#else
#define MT_NO_PRESCHED
#endif

/* For short copy / fill loops: GCC would turn them into memcpy / memset calls, which cost more than the loop
 * for the few bytes they move. */
#if defined(__GNUC__) && !defined(__clang__)
#define MT_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define MT_NO_LIBCALLS
#endif

/* Tell the compiler something the argument checks guaranteed (lets it drop dead branches). */
#if defined(__GNUC__)
#define MT_ASSUME(cond) \
    do { \
        if (!(cond)) { \
            __builtin_unreachable(); \
        } \
    } while (0)
#else
#define MT_ASSUME(cond) ((void)0)
#endif

/* Load / store 4 bytes from any address. On ARMv7-M this is one LDR/STR (unaligned access is allowed);
 * __builtin_memcpy keeps it a single instruction even where memcpy would be a library call. */
MT_INLINE int32_t mt_read_s32(const void *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

MT_INLINE void mt_write_s32(void *p, int32_t v)
{
    __builtin_memcpy(p, &v, 4);
}

/* The last (k & 3) bytes of a k-byte row as a word whose unused high bytes are 0. For k >= 4 this reads the
 * row's last 4 bytes and shifts the extra ones out, so nothing outside the row is touched. */
MT_INLINE int32_t mt_read_tail(const int8_t *row, int32_t k)
{
    const int32_t r = k & 3;
    if (k >= 4) {
        return (int32_t)((uint32_t)mt_read_s32(row + k - 4) >> (8 * (4 - r)));
    }
    uint32_t w = 0;
    for (int32_t i = 0; i < r; i++) {
        w |= (uint32_t)(uint8_t)row[k - r + i] << (8 * i);
    }
    return (int32_t)w;
}

/* The output stage shared by all MAC kernels: requantise, add the output zero point, clamp.
 * lo = act_min - output_offset and hi = act_max - output_offset are precomputed, so the sum cannot overflow
 * and the result equals clamp(requantize(acc) + output_offset, act_min, act_max) in exact arithmetic. */
MT_INLINE int8_t mt_output_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
                              int32_t output_offset)
{
    MT_ASSUME(multiplier >= 0); /* checked by mt_quant_ok(): the INT32_MIN * INT32_MIN case cannot occur */
    int32_t r = mt_requantize(acc, multiplier, shift);
    r = MT_MAX(r, lo);
    r = MT_MIN(r, hi);
    return (int8_t)(r + output_offset);
}

/* Common argument checks. */
MT_INLINE int mt_activation_ok(const mt_activation *a)
{
    return a->min >= -128 && a->max <= 127 && a->min <= a->max;
}

MT_INLINE int mt_offsets_ok(int32_t input_offset, int32_t output_offset)
{
    return input_offset >= -127 && input_offset <= 128 && output_offset >= -128 && output_offset <= 127;
}

MT_INLINE int mt_padding_ok(const mt_padding *p)
{
    return p->top >= 0 && p->left >= 0 && p->bottom >= 0 && p->right >= 0;
}

MT_INLINE int mt_dims_positive(const mt_dims *d)
{
    return d->n > 0 && d->h > 0 && d->w > 0 && d->c > 0;
}

/* Output length along one axis, or -1 when the window does not fit once. */
MT_INLINE int32_t mt_out_len(int32_t in, int32_t pad_a, int32_t pad_b, int32_t k, int32_t stride)
{
    const int32_t span = in + pad_a + pad_b - k;
    return span < 0 ? -1 : span / stride + 1;
}

/* Smallest number of in-bounds taps along one axis over all output positions (<= 0: some window is empty). */
MT_INLINE int32_t mt_min_valid_taps(int32_t in, int32_t out, int32_t k, int32_t stride, int32_t pad)
{
    int32_t best = k;
    for (int32_t o = 0; o < out; o++) {
        const int32_t start = o * stride - pad;
        const int32_t v = MT_MIN(start + k, in) - MT_MAX(start, 0);
        best = MT_MIN(best, v);
    }
    return best;
}

/* Checks shared by the pooling kernels; returns the smallest in-bounds tap count of any window (0 = error). */
MT_INLINE int32_t mt_pool_check(const mt_tile *stride, const mt_padding *padding, const mt_activation *act,
                                const mt_dims *input_dims, const mt_dims *pool_dims, const mt_dims *output_dims)
{
    if (!mt_dims_positive(input_dims) || pool_dims->h < 1 || pool_dims->w < 1 || !mt_dims_positive(output_dims) ||
        output_dims->n != input_dims->n || output_dims->c != input_dims->c || stride->h < 1 || stride->w < 1 ||
        !mt_padding_ok(padding) || !mt_activation_ok(act) ||
        output_dims->h != mt_out_len(input_dims->h, padding->top, padding->bottom, pool_dims->h, stride->h) ||
        output_dims->w != mt_out_len(input_dims->w, padding->left, padding->right, pool_dims->w, stride->w)) {
        return 0;
    }
    const int32_t vh = mt_min_valid_taps(input_dims->h, output_dims->h, pool_dims->h, stride->h, padding->top);
    const int32_t vw = mt_min_valid_taps(input_dims->w, output_dims->w, pool_dims->w, stride->w, padding->left);
    return (vh <= 0 || vw <= 0) ? 0 : vh * vw;
}

/* Checks every per-channel multiplier is >= 0 and every shift in [-31, 30]. */
MT_INLINE int mt_quant_ok(const mt_per_channel_quant_params *q, int32_t n)
{
    if (q == 0 || q->multiplier == 0 || q->shift == 0) {
        return 0;
    }
    for (int32_t i = 0; i < n; i++) {
        if (q->multiplier[i] < 0 || q->shift[i] < -31 || q->shift[i] > 30) {
            return 0;
        }
    }
    return 1;
}

MT_INLINE uint32_t mt_splat4(int32_t v)
{
    return 0x01010101u * (uint8_t)(int8_t)v;
}

#if MT_USE_DSP
/* Sign-extend bytes 0 and 2 / 1 and 3 of a word into two halfwords (SXTB16, SXTB16 with ROR #8).
 * Pairs from mt_lo() multiply with pairs from mt_lo() of the matching word (same for mt_hi), so the int8
 * order never has to be restored. GCC 12 has no __ror and does not fold a rotate into SXTB16, so on Thumb-2
 * the rotated forms are written as one instruction in inline assembly (as CMSIS-NN does). */
MT_INLINE uint32_t mt_ror8(uint32_t w)
{
    return (w >> 8) | (w << 24);
}

MT_INLINE int32_t mt_lo(int32_t w)
{
    return (int32_t)__sxtb16((uint32_t)w);
}

MT_INLINE int32_t mt_hi(int32_t w)
{
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
#else
    return (int32_t)__sxtb16(mt_ror8((uint32_t)w));
#endif
}

/* Same with a per-halfword offset added (SXTAB16): off16x2 holds the offset in both halfwords. */
MT_INLINE int32_t mt_lo_off(int32_t w, int32_t off16x2)
{
    return (int32_t)__sxtab16((uint32_t)off16x2, (uint32_t)w);
}

MT_INLINE int32_t mt_hi_off(int32_t w, int32_t off16x2)
{
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off16x2), "r"(w));
    return r;
#else
    return (int32_t)__sxtab16((uint32_t)off16x2, mt_ror8((uint32_t)w));
#endif
}

MT_INLINE int32_t mt_smlad(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)__smlad((int16x2_t)a, (int16x2_t)b, acc);
}

/* DSP output stage, first half: requantise, add the output offset with saturation (QADD), saturate to int8
 * (SSAT). Followed by the activation clamp (mt_clamp4 on 4 packed outputs, or MT_MAX/MT_MIN); together
 * this equals mt_output_s8: clamp(sat8(sat32(r + off)), min, max) = clamp(r + off, min, max) for
 * -128 <= min <= max <= 127. */
MT_INLINE int32_t mt_requant_sat8(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset)
{
    MT_ASSUME(multiplier >= 0);
    return __ssat(__qadd(mt_requantize(acc, multiplier, shift), output_offset), 8);
}

/* (a * b + 2^31) >> 32 on the exact 64-bit product (SMMULR): a * b / 2^32 rounded, ties towards +infinity. */
MT_INLINE int32_t mt_smmulr(int32_t a, int32_t b)
{
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32);
#endif
}

/* acc + mt_smmulr(a, b), exactly (SMMLAR: acc is added as the product's high word). */
MT_INLINE int32_t mt_smmlar(int32_t a, int32_t b, int32_t acc)
{
#if defined(__GNUC__) && defined(__thumb2__)
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
#else
    return (int32_t)((((int64_t)acc << 32) + (int64_t)a * b + 0x80000000LL) >> 32);
#endif
}

/* Four int8 values (held in int32) packed into one word, v0 in the lowest byte: three BFIs on Thumb-2
 * (GCC does not find them from the C form). */
MT_INLINE uint32_t mt_pack4(int32_t v0, int32_t v1, int32_t v2, int32_t v3)
{
#if defined(__GNUC__) && defined(__thumb2__)
    uint32_t v = (uint32_t)v0;
    __asm__("bfi %0, %1, #8, #8\n\tbfi %0, %2, #16, #8\n\tbfi %0, %3, #24, #8"
            : "+r"(v)
            : "r"(v1), "r"(v2), "r"(v3));
    return v;
#else
    return ((uint32_t)v0 & 0xFFu) | (((uint32_t)v1 & 0xFFu) << 8) | (((uint32_t)v2 & 0xFFu) << 16) |
           ((uint32_t)v3 << 24);
#endif
}

/* Bytewise clamp of 4 packed int8 to [min4, max4] (each the bound repeated in every byte): SSUB8 + SEL. */
MT_INLINE uint32_t mt_clamp4(uint32_t v, uint32_t min4, uint32_t max4)
{
    (void)__ssub8((int8x4_t)v, (int8x4_t)min4); /* GE[i] = v[i] >= min */
    v = __sel(v, min4);
    (void)__ssub8((int8x4_t)v, (int8x4_t)max4); /* GE[i] = v[i] >= max */
    return __sel(max4, v);
}

MT_INLINE int32_t mt_pack_off16x2(int32_t offset)
{
    return (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
}

/* ---------------------------------------------------------------------------------------------------------
 * A pass of the conv and depthwise DSP paths: 2 output positions x 4 output channels accumulated in 8 registers,
 * then requantised, packed, clamped and stored as one word per position. The channel quad's parameters come
 * from a record in the scratch buffer (MT_PASS_REC_WORDS words, filled by mt_pass_record), followed by the
 * kernel's widened weights: {bias 0..3, channel offset, then per channel: multiplier, round, k}, with k = ~shift
 * and round = 2^(k - 1) + output_offset * 2^k. For 1 <= k <= 22, requantize(acc) + output_offset =
 * (hi + round) >> k exactly, hi the top word of acc * multiplier (SMULL): the rounding bit's constant lies in hi
 * (the low word only adds a fraction below 1, which the floor drops), the offset is a whole multiple of 2^k, and
 * nothing overflows (|hi| <= 2^30). Field offsets of mt_pass are used by the assembly passes.
 * ------------------------------------------------------------------------------------------------------- */
#define MT_PASS_REC_WORDS 17

typedef struct {
    const int32_t *w;    /*  0: the first quad's record */
    int32_t quads;       /*  4: quads in this pass */
    const int32_t *x;    /*  8: the first input word of the pass */
    int32_t step;        /* 12: conv: bytes per quad (record + weights); depthwise: from one quad's input to the next */
    int32_t entry;       /* 16: conv: code bytes into the MAC loop where the first round starts */
    int32_t n;           /* 20: conv: K-pairs */
    int32_t out_off;     /* 24 */
    uint32_t min4, max4; /* 28, 32: the activation bounds in every byte */
    int8_t *out0, *out1; /* 36, 40: channel 0 of the two output positions */
    int32_t tail;        /* 44: channels stored per quad: 4, or C_out when C_out < 4 */
} mt_pass;

/* Fills the record of output channels ch .. ch + 3 (channels >= c_out get zeros); returns 1 when the assembly
 * output stage can take all four (every shift in [-23, -2]). */
MT_INLINE int mt_pass_record(int32_t *rec, const int32_t *bias, const mt_per_channel_quant_params *q, int32_t ch,
                             int32_t c_out, int32_t output_offset)
{
    int fast = 1;
    for (int32_t c = 0; c < 4; c++) {
        const int32_t oc = ch + c;
        const int valid = oc < c_out;
        const int32_t k = valid ? ~q->shift[oc] : 1;
        const int ok = k >= 1 && k <= 22;
        rec[c] = valid && bias ? bias[oc] : 0;
        rec[5 + 3 * c] = valid ? q->multiplier[oc] : 0;
        rec[6 + 3 * c] = ok ? (int32_t)((1u << (k - 1)) + (uint32_t)output_offset * (1u << k)) : 0;
        rec[7 + 3 * c] = k;
        fast &= ok;
    }
    rec[4] = ch;
    return fast;
}

/* The output stage in C: accumulators a[0..3] (first position, channels 0..3) and a[4..7] (second). */
MT_INLINE void mt_pass_store(const mt_pass *j, const int32_t *rec, const int32_t *a)
{
    int32_t v[8];
    for (int32_t i = 0; i < 8; i++) {
        const int32_t c = i & 3;
        v[i] = mt_requant_sat8(a[i], rec[5 + 3 * c], ~rec[7 + 3 * c], j->out_off);
    }
    const uint32_t v0 = mt_clamp4(mt_pack4(v[0], v[1], v[2], v[3]), j->min4, j->max4);
    const uint32_t v1 = mt_clamp4(mt_pack4(v[4], v[5], v[6], v[7]), j->min4, j->max4);
    if (j->tail == 4) {
        mt_write_s32(j->out0 + rec[4], (int32_t)v0);
        mt_write_s32(j->out1 + rec[4], (int32_t)v1);
    } else {
        for (int32_t c = 0; c < j->tail; c++) {
            j->out0[rec[4] + c] = (int8_t)(v0 >> (8 * c));
            j->out1[rec[4] + c] = (int8_t)(v1 >> (8 * c));
        }
    }
}

#if MT_USE_MVE
/* The rounding constants of a vector requantisation (see mt_pass_record): for channels 0 .. n - 1, rnd[c] =
 * 2^(k - 1) + output_offset * 2^k and nk[c] = -k, k = ~shift[c]; returns 1 when every k is in [1, 22]. */
MT_INLINE int mt_mve_round(const mt_per_channel_quant_params *q, int32_t n, int32_t output_offset, int32_t *rnd,
                           int32_t *nk)
{
    int ok = 1;
    for (int32_t c = 0; c < n; c++) {
        const int32_t k = ~q->shift[c];
        ok &= k >= 1 && k <= 22;
        rnd[c] = k >= 1 && k <= 22 ? (int32_t)((1u << (k - 1)) + (uint32_t)output_offset * (1u << k)) : 0;
        nk[c] = -k;
    }
    return ok;
}

/* Four accumulators of channels c .. c + 3 (predicate pc: those < C) requantised, clamped to [lo, hi] (the
 * activation bounds) and stored as bytes: ((hi(acc * m) + rnd) >> k) per lane, as mt_pass_record explains. */
MT_INLINE void mt_mve_store4(int32x4_t acc, const int32_t *mult, const int32_t *rnd, const int32_t *nk,
                             mve_pred16_t pc, int32_t lo, int32_t hi, int8_t *out)
{
    int32x4_t v = vmulhq_s32(acc, vldrwq_z_s32(mult, pc));
    v = vshlq_s32(vaddq_s32(v, vldrwq_z_s32(rnd, pc)), vldrwq_z_s32(nk, pc));
    v = vminq_s32(vmaxq_s32(v, vdupq_n_s32(lo)), vdupq_n_s32(hi));
    vstrbq_p_s32(out, v, pc);
}
#endif

#if defined(__GNUC__) && defined(__thumb2__)
/* The output stage in assembly (records whose mt_pass_record() returned 1): r0-r3 / r4-r7 the accumulators, r12
 * the record, [sp] the mt_pass; clobbers r0-r12 and lr. Per channel one LDM of (multiplier, round, k), then for
 * both positions SMMLA (round + the top word of acc * multiplier: SMULL's hi plus round in one instruction), ASR;
 * SSAT, BFI, SSUB8 / SEL, one STR per position. */
#define MT_ASM_REQ1(p) \
    "smmla " p ", " p ", r8, r9\n\t" \
    "asr " p ", " p ", r10\n\t"
#define MT_ASM_REQ(p0, p1) \
    "ldm r12!, {r8, r9, r10}\n\t" MT_ASM_REQ1(p0) MT_ASM_REQ1(p1)
/* Saturate 4 values to int8 and pack them into the first one's register; clamp a packed word V to the bounds
 * in r9 / r10 (r1 a scratch register). */
#define MT_ASM_PACK4(A, B, C, D) \
    "ssat " A ", #8, " A "\n\t" \
    "ssat " B ", #8, " B "\n\t" \
    "ssat " C ", #8, " C "\n\t" \
    "ssat " D ", #8, " D "\n\t" \
    "bfi " A ", " B ", #8, #8\n\t" \
    "bfi " A ", " C ", #16, #8\n\t" \
    "bfi " A ", " D ", #24, #8\n\t"
/* The head of a global Thumb function NAME in its own section (so --gc-sections can drop it). */
#define MT_ASM_FUNCTION(NAME) \
    ".section .text." NAME ",\"ax\",%progbits\n" \
    ".global " NAME "\n" \
    ".type " NAME ", %function\n" \
    ".p2align 2\n" \
    NAME ":\n\t"
#define MT_ASM_CLAMP4(V) \
    "ssub8 r1, " V ", r9\n\t" \
    "sel " V ", " V ", r9\n\t" \
    "ssub8 r1, " V ", r10\n\t" \
    "sel " V ", r10, " V "\n\t"
/* (The loads come early and the store addresses in registers not written just before: no address-dependency
 * stalls.) */
#define MT_ASM_PASS_OUTPUT \
    "add r12, r12, #20\n\t" \
    MT_ASM_REQ("r0", "r4") MT_ASM_REQ("r1", "r5") MT_ASM_REQ("r2", "r6") MT_ASM_REQ("r3", "r7") \
    "ldr r8, [sp]\n\t" \
    "ldr r11, [r12, #-52]\n\t" \
    MT_ASM_PACK4("r0", "r1", "r2", "r3") MT_ASM_PACK4("r4", "r5", "r6", "r7") \
    "ldrd r9, r10, [r8, #28]\n\t" \
    "ldrd r2, r3, [r8, #36]\n\t" MT_ASM_CLAMP4("r0") MT_ASM_CLAMP4("r4") \
    "str r0, [r2, r11]\n\t" \
    "str r4, [r3, r11]\n\t"
/* The same for one position (accumulators r0-r3, stored to out0). */
#define MT_ASM_PASS_OUTPUT1 \
    "add r12, r12, #20\n\t" \
    "ldm r12!, {r8, r9, r10}\n\t" MT_ASM_REQ1("r0") \
    "ldm r12!, {r8, r9, r10}\n\t" MT_ASM_REQ1("r1") \
    "ldm r12!, {r8, r9, r10}\n\t" MT_ASM_REQ1("r2") \
    "ldm r12!, {r8, r9, r10}\n\t" MT_ASM_REQ1("r3") \
    "ldr r8, [sp]\n\t" \
    "ldr r11, [r12, #-52]\n\t" \
    MT_ASM_PACK4("r0", "r1", "r2", "r3") \
    "ldrd r9, r10, [r8, #28]\n\t" \
    "ldr r2, [r8, #36]\n\t" MT_ASM_CLAMP4("r0") \
    "str r0, [r2, r11]\n\t"
#endif
#endif

#endif /* MT_SUPPORT_H */
