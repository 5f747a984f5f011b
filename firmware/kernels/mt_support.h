/*
 * mcu-train int8 kernels: internal helpers shared by the kernel files (not part of the public API).
 */
#ifndef MT_SUPPORT_H
#define MT_SUPPORT_H

#include "mt_kernels.h"

#if MT_USE_DSP
#include <arm_acle.h>
#endif

#define MT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MT_MIN(a, b) ((a) < (b) ? (a) : (b))

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

/* The output stage shared by all MAC kernels: requantise, add the output zero point, clamp.
 * lo = act_min - output_offset and hi = act_max - output_offset are precomputed, so the sum cannot overflow
 * and the result equals clamp(requantize(acc) + output_offset, act_min, act_max) in exact arithmetic. */
MT_INLINE int8_t mt_output_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
                              int32_t output_offset)
{
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

/* Checks every per-channel shift is in range (multipliers are unrestricted). */
MT_INLINE int mt_quant_ok(const mt_per_channel_quant_params *q, int32_t n)
{
    if (q == 0 || q->multiplier == 0 || q->shift == 0) {
        return 0;
    }
    for (int32_t i = 0; i < n; i++) {
        if (q->shift[i] < -31 || q->shift[i] > 30) {
            return 0;
        }
    }
    return 1;
}

#if MT_USE_DSP
/* Sign-extend bytes 0 and 2 / 1 and 3 of a word into two halfwords (SXTB16, SXTB16 with ROR #8).
 * Pairs from mt_lo() multiply with pairs from mt_lo() of the matching word (same for mt_hi), so the int8
 * order never has to be restored. */
MT_INLINE int32_t mt_lo(int32_t w)
{
    return (int32_t)__sxtb16((uint32_t)w);
}

MT_INLINE int32_t mt_hi(int32_t w)
{
    return (int32_t)__sxtb16(__ror((uint32_t)w, 8));
}

/* Same with a per-halfword offset added (SXTAB16): off16x2 holds the offset in both halfwords. */
MT_INLINE int32_t mt_lo_off(int32_t w, int32_t off16x2)
{
    return (int32_t)__sxtab16((uint32_t)off16x2, (uint32_t)w);
}

MT_INLINE int32_t mt_hi_off(int32_t w, int32_t off16x2)
{
    return (int32_t)__sxtab16((uint32_t)off16x2, __ror((uint32_t)w, 8));
}

MT_INLINE int32_t mt_smlad(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)__smlad((int16x2_t)a, (int16x2_t)b, acc);
}

MT_INLINE int32_t mt_pack_off16x2(int32_t offset)
{
    return (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
}
#endif

#endif /* MT_SUPPORT_H */
