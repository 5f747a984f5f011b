/*
 * mt_add_s8: elementwise int8 add of two tensors with their own scales (residual connection), TFLite's
 * scheme (see mt_add_params): both inputs are rescaled to a common scale with left_shift extra fraction bits,
 * summed, and rescaled to the output.
 *
 * DSP path: an input rescale requantize((x + offset) << left_shift, m, s) is exactly SMMULR((x + offset) <<
 * (1 + s + left_shift), m) whenever that shift is >= 0 (both divide the same product by a power of two and round
 * once, ties up: docs/quantisation.md section 5), and (x + offset) << sh is one MLA (x * 2^sh + offset * 2^sh);
 * SMMLAR adds the second rescale to the first. With both input shifts >= -1 - left_shift and an output shift in
 * [-23, -2], the output requantisation is (hi + round) >> k as in the conv passes (mt_pass_record), so an element
 * costs LDRSB x 2, MLA x 2, SMMULR, SMMLAR, SMMLA, ASR, SSAT, STRB, and the activation clamp runs on each
 * stored word (SSUB8 / SEL). Other parameters take the per-element C path.
 */
#include "mt_support.h"

/* One element: a and b already include their input offsets. */
MT_INLINE int8_t mt_add_one(int32_t a, int32_t b, const mt_add_params *p, int32_t lo, int32_t hi)
{
    const int32_t sa = mt_requantize(a * (1 << p->left_shift), p->input1_multiplier, p->input1_shift);
    const int32_t sb = mt_requantize(b * (1 << p->left_shift), p->input2_multiplier, p->input2_shift);
    return mt_output_s8(sa + sb, p->output_multiplier, p->output_shift, lo, hi, p->output_offset);
}

#if MT_USE_DSP
/* The fast path's constants (field offsets are used by the assembly): rescale i of x is
 * SMMULR(x * e_i + c_i, m_i); the output is SSAT(SMMLA(sum, mo, round) >> k); end = the output's end. */
typedef struct {
    int32_t e1, c1, m1, e2, c2, m2, mo, round, k; /* 0 .. 32 */
    uint32_t min4, max4;                          /* 36, 40 */
    int8_t *end;                                  /* 44 */
} mt_add_fast;

/* Whole words of elements: in1 / in2 / out up to f->end (at least one word). */
#if defined(__GNUC__) && defined(__thumb2__)
void mt_add_words(const mt_add_fast *f, const int8_t *in1, const int8_t *in2, int8_t *out);

/* One element at byte offset j: r0 / r1 the inputs, r2 the output; constants in r3-r11, r12 / lr temporaries. */
#define MT_ADD_ELEMENT(j) \
    "ldrsb r12, [r0, #" j "]\n\t" \
    "ldrsb lr, [r1, #" j "]\n\t" \
    "mla r12, r12, r3, r4\n\t" \
    "mla lr, lr, r6, r7\n\t" \
    "smmulr r12, r12, r5\n\t" \
    "smmlar r12, lr, r8, r12\n\t" \
    "smmla r12, r12, r9, r10\n\t" \
    "asr r12, r12, r11\n\t" \
    "ssat r12, #8, r12\n\t" \
    "strb r12, [r2, #" j "]\n\t"

/* Registers: r0 / r1 / r2 the pointers, r3-r11 e1, c1, m1, e2, c2, m2, mo, round, k. Stack: [0] f. */
__asm__(".syntax unified\n"
        ".thumb\n"
        ".section .text.mt_add_words,\"ax\",%progbits\n"
        ".global mt_add_words\n"
        ".type mt_add_words, %function\n"
        ".p2align 2\n"
        "mt_add_words:\n\t"
        "push {r4-r11, lr}\n\t"
        "sub sp, #4\n\t"
        "str r0, [sp]\n\t"
        "mov r12, r0\n\t"
        "mov r0, r1\n\t"
        "mov r1, r2\n\t"
        "mov r2, r3\n\t"
        "ldm r12, {r3-r11}\n"
        "1:\n\t" MT_ADD_ELEMENT("0") MT_ADD_ELEMENT("1") MT_ADD_ELEMENT("2") MT_ADD_ELEMENT("3")
        "ldr r12, [sp]\n\t" /* clamp the word with SSUB8 / SEL (r3 / r4 borrowed for min4 / max4) */
        "ldrd r3, r4, [r12, #36]\n\t"
        "ldr r12, [r2]\n\t"
        "ssub8 lr, r12, r3\n\t"
        "sel r12, r12, r3\n\t"
        "ssub8 lr, r12, r4\n\t"
        "sel r12, r4, r12\n\t"
        "str r12, [r2], #4\n\t"
        "adds r0, r0, #4\n\t"
        "adds r1, r1, #4\n\t"
        "ldr r12, [sp]\n\t"
        "ldrd r3, r4, [r12]\n\t"
        "ldr lr, [r12, #44]\n\t"
        "cmp r2, lr\n\t"
        "bne 1b\n\t"
        "add sp, #4\n\t"
        "pop {r4-r11, pc}\n"
        ".size mt_add_words, . - mt_add_words\n"
        ".text\n");
#else
static void mt_add_words(const mt_add_fast *f, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    for (; out < f->end; in1 += 4, in2 += 4, out += 4) {
        int32_t r[4];
        for (int32_t j = 0; j < 4; j++) {
            const int32_t a = mt_smmulr(in1[j] * f->e1 + f->c1, f->m1);
            const int32_t sum = mt_smmlar(in2[j] * f->e2 + f->c2, f->m2, a);
            const int32_t hi = (int32_t)(((int64_t)sum * f->mo) >> 32);
            r[j] = __ssat((hi + f->round) >> f->k, 8);
        }
        mt_write_s32(out, (int32_t)mt_clamp4(mt_pack4(r[0], r[1], r[2], r[3]), f->min4, f->max4));
    }
}
#endif
#endif

mt_status mt_add_s8(const mt_add_params *add_params,
                    const int8_t *input1,
                    const int8_t *input2,
                    int8_t *output,
                    int32_t size)
{
    if (add_params == 0 || input1 == 0 || input2 == 0 || output == 0 || size < 0) {
        return MT_ARG_ERROR;
    }
    const mt_add_params *p = add_params;
    if (p->left_shift < 0 || p->left_shift > 20 || p->input1_shift < -31 || p->input1_shift > 0 ||
        p->input2_shift < -31 || p->input2_shift > 0 || p->output_shift < -31 || p->output_shift > 30 ||
        !mt_offsets_ok(p->input1_offset, p->output_offset) || !mt_offsets_ok(p->input2_offset, 0) ||
        !mt_activation_ok(&p->activation)) {
        return MT_ARG_ERROR;
    }
    const int32_t lo = p->activation.min - p->output_offset;
    const int32_t hi = p->activation.max - p->output_offset;
    int32_t i = 0;
#if MT_USE_DSP
    const int32_t sh1 = 1 + p->input1_shift + p->left_shift, sh2 = 1 + p->input2_shift + p->left_shift;
    const int32_t k = ~p->output_shift;
    if (sh1 >= 0 && sh2 >= 0 && k >= 1 && k <= 22 && size >= 4) {
        const mt_add_fast f = {1 << sh1, p->input1_offset * (1 << sh1), p->input1_multiplier, 1 << sh2,
                               p->input2_offset * (1 << sh2), p->input2_multiplier, p->output_multiplier,
                               (int32_t)((1u << (k - 1)) + (uint32_t)p->output_offset * (1u << k)), k,
                               mt_splat4(p->activation.min), mt_splat4(p->activation.max),
                               output + (size & ~3)};
        mt_add_words(&f, input1, input2, output);
        i = size & ~3;
    }
#endif
    for (; i < size; i++) {
        output[i] = mt_add_one((int32_t)input1[i] + p->input1_offset, (int32_t)input2[i] + p->input2_offset, p, lo,
                               hi);
    }
    return MT_SUCCESS;
}
