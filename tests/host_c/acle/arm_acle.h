/*
 * Test-only stand-in for <arm_acle.h> on the host: plain C models of the few ACLE SIMD intrinsics the kernels
 * use, so the kernels' DSP paths can be built with the host compiler (-D__ARM_FEATURE_DSP=1 -Itests/host_c/acle)
 * and compared with numpy quickly. Semantics follow the Armv7-M ARM; the GE flags live in a static variable.
 * The on-target tests (tests/test_kernels_qemu.py) check the real instructions.
 */
#ifndef MT_HOST_ACLE_H
#define MT_HOST_ACLE_H

#include <stdint.h>

typedef int32_t int16x2_t;
typedef uint32_t uint16x2_t;
typedef int32_t int8x4_t;
typedef uint32_t uint8x4_t;

static uint32_t mt_host_ge; /* GE[3:0] */

static inline int16_t mt_h_lo(uint32_t v) { return (int16_t)(v & 0xFFFFu); }
static inline int16_t mt_h_hi(uint32_t v) { return (int16_t)(v >> 16); }
static inline uint32_t mt_h_pack(int32_t lo, int32_t hi) { return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16); }

static inline int16x2_t __sxtb16(int8x4_t a)
{
    const uint32_t u = (uint32_t)a;
    return (int16x2_t)mt_h_pack((int8_t)(u & 0xFF), (int8_t)((u >> 16) & 0xFF));
}

static inline int16x2_t __sxtab16(int16x2_t a, int8x4_t b)
{
    const uint32_t u = (uint32_t)b;
    return (int16x2_t)mt_h_pack(mt_h_lo((uint32_t)a) + (int8_t)(u & 0xFF),
                                mt_h_hi((uint32_t)a) + (int8_t)((u >> 16) & 0xFF));
}

static inline int32_t __smlad(int16x2_t a, int16x2_t b, int32_t c)
{
    const int64_t r = (int64_t)c + (int32_t)mt_h_lo((uint32_t)a) * mt_h_lo((uint32_t)b) +
                      (int32_t)mt_h_hi((uint32_t)a) * mt_h_hi((uint32_t)b);
    return (int32_t)(uint32_t)r; /* wraps, as the instruction does (it sets Q) */
}

static inline int32_t __smlabb(int32_t a, int32_t b, int32_t c)
{
    return (int32_t)((uint32_t)c + (uint32_t)((int32_t)mt_h_lo((uint32_t)a) * mt_h_lo((uint32_t)b)));
}

static inline int32_t __smlatt(int32_t a, int32_t b, int32_t c)
{
    return (int32_t)((uint32_t)c + (uint32_t)((int32_t)mt_h_hi((uint32_t)a) * mt_h_hi((uint32_t)b)));
}

static inline int8x4_t __ssub8(int8x4_t a, int8x4_t b)
{
    uint32_t r = 0;
    mt_host_ge = 0;
    for (int i = 0; i < 4; i++) {
        const int32_t d = (int8_t)(((uint32_t)a >> (8 * i)) & 0xFF) - (int8_t)(((uint32_t)b >> (8 * i)) & 0xFF);
        r |= ((uint32_t)d & 0xFFu) << (8 * i);
        if (d >= 0) {
            mt_host_ge |= 1u << i;
        }
    }
    return (int8x4_t)r;
}

static inline uint8x4_t __sel(uint8x4_t a, uint8x4_t b)
{
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        const uint32_t m = 0xFFu << (8 * i);
        r |= ((mt_host_ge >> i) & 1u) ? (a & m) : (b & m);
    }
    return r;
}

static inline int32_t __qadd(int32_t a, int32_t b)
{
    const int64_t r = (int64_t)a + b;
    return r > INT32_MAX ? INT32_MAX : r < INT32_MIN ? INT32_MIN : (int32_t)r;
}

static inline int32_t mt_host_ssat(int32_t a, int bits)
{
    const int32_t hi = (int32_t)((1u << (bits - 1)) - 1u);
    return a > hi ? hi : a < -hi - 1 ? -hi - 1 : a;
}
#define __ssat(a, bits) mt_host_ssat((a), (bits))

#endif
