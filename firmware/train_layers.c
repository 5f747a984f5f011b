#include "train_layers.h"

#include <math.h>
#include <string.h>

#include "fmath.h"
#include "mt_support.h"

#define WEIGHT_MAX 127                        /* int8 weights are symmetric, [-127, 127] */
#define WEIGHT_REFIT 120                      /* a channel's largest |weight| after its scale is refitted */
#define WEIGHT_LOW 96                         /* below this the scale is refitted, when it can be */
#define UPDATE_RANGE ((int64_t)1 << 30)       /* an update that takes a weight beyond this is never applied */
#define STEP_MAX (((int32_t)1 << 30) - 128)     /* a step below which w - step needs no saturation */
#define ERROR_BITS 14
/* Row loops over a channel's weights: unrolled, their loop overhead is a third of their cost. */
#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL _Pragma("GCC unroll 4")
#else
#define UNROLL
#endif

/* A layer's gate as one unsigned compare: y passes when (uint32_t)(y - base) < span (relu: y > act_min, clip:
 * act_min < y < act_max, none: always). */
typedef struct {
    int32_t base;
    uint32_t span;
} tl_gate;

static tl_gate gate_of(const tl_layer *l)
{
    const int32_t lo = l->act_min, hi = l->act == TL_ACT_CLIP ? l->act_max : 128;
    if (l->act == TL_ACT_NONE)
        return (tl_gate){-128, 256};
    return (tl_gate){lo + 1, hi > lo ? (uint32_t)(hi - lo - 1) : 0};
}

static inline int passes(tl_gate g, int8_t y) { return (uint32_t)((int32_t)y - g.base) < g.span; }

static int gate(const tl_layer *l, int8_t y) { return passes(gate_of(l), y); }

static inline int32_t error_at(const tl_error *e, int32_t pos, int32_t c, int32_t channels)
{
    return e->broadcast ? e->e[c] : e->e[pos * channels + c];
}

void tl_normalise(const int32_t *v, int32_t n, float sigma, tl_error *out)
{
    uint32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        const uint32_t a = v[i] < 0 ? (uint32_t)0 - (uint32_t)v[i] : (uint32_t)v[i];
        if (a > m)
            m = a;
    }
    int sh = fx_bitlen(m) - ERROR_BITS;
    if (sh < 0)
        sh = 0;
    for (int32_t i = 0; i < n; i++) /* in increasing order: out->e may be the same memory as v */
        out->e[i] = (int16_t)fx_round_shift(v[i], sh);
    out->broadcast = 0;
    out->sigma = sigma * fx_pow2(sh);
}

static inline uint32_t float_bits(const float *f)
{
    uint32_t b;
    memcpy(&b, f, 4);
    return b;
}

/* Marks in kept[] the ceil(keep * n) highest scores, ties to the lower index; returns how many. */
static uint32_t choose_channels(const float *scores, int32_t n, float keep, uint8_t *kept)
{
    const float kf = keep * (float)n;
    int32_t k = (int32_t)kf;
    if ((float)k < kf)
        k++;
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    /* Scores are >= 0 (sigma > 0 times sums, plus a non-negative L1 term): as long as none is NaN or -0, their
     * bits order them as the floats do, and integer compares are much cheaper (without an FPU above all). */
    int as_bits = 1;
    for (int32_t o = 0; o < n; o++)
        as_bits &= float_bits(scores + o) <= 0x7F800000u;
    uint32_t count = 0;
    for (int32_t o = 0; o < n; o++) {
        int32_t rank = 0;
        if (as_bits) {
            const uint32_t s = float_bits(scores + o);
            for (int32_t j = 0; j < o; j++)
                rank += float_bits(scores + j) >= s;
            for (int32_t j = o + 1; j < n; j++)
                rank += float_bits(scores + j) > s;
        } else {
            for (int32_t j = 0; j < n; j++)
                if (scores[j] > scores[o] || (scores[j] == scores[o] && j < o))
                    rank++;
        }
        kept[o] = rank < k;
        count += rank < k;
    }
    return count;
}

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* g[t] = w[t] - d; returns the larger of m and its magnitude. */
static inline int32_t store_new(int32_t *g, const int8_t *w, int32_t t, int32_t d, int32_t m)
{
    const int32_t nw = w[t] - d, a = nw < 0 ? -nw : nw;
    g[t] = nw;
    return a > m ? a : m;
}

/* The trainer's own DSP instructions, as inline assembly (Thumb-2 cores with the DSP extension). */
#if MT_USE_DSP && defined(__thumb2__)
#define TL_DSP 1
#else
#define TL_DSP 0
#endif
#if TL_DSP
/* a's low halfword below b's (PKHBT). */
static inline int32_t low_halves(uint32_t a, uint32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* Both pairings of a's and b's halfwords: the low ones (PKHBT) and the high ones (PKHTB), a's below b's. */
static inline void pair_halves(uint32_t a, uint32_t b, uint32_t *low, uint32_t *high)
{
    __asm__("pkhbt %0, %2, %3, lsl #16\n\tpkhtb %1, %3, %2, asr #16" : "=&r"(*low), "=r"(*high) : "r"(a), "r"(b));
}

/* Each signed halfword of acc becomes the larger (max16) or the smaller (min16) of its and v's: SSUB16 sets
 * the GE flags that SEL reads. */
static inline void max16(uint32_t *acc, uint32_t v)
{
    uint32_t scratch;
    __asm__("ssub16 %1, %2, %0\n\tsel %0, %2, %0" : "+r"(*acc), "=&r"(scratch) : "r"(v) : "cc");
}

static inline void min16(uint32_t *acc, uint32_t v)
{
    uint32_t scratch;
    __asm__("ssub16 %1, %2, %0\n\tsel %0, %0, %2" : "+r"(*acc), "=&r"(scratch) : "r"(v) : "cc");
}

/* A weight's step on the DSP path, from the high word of g * mm: rounded by SMMULR (post 0), or truncated by
 * SMMUL and then rounded by `post` bits. Called with constant post 0 or not, to keep the branch out of loops. */
__attribute__((always_inline)) static inline int32_t dsp_step(int32_t g, int32_t mm, int32_t post_half, int post)
{
    int32_t d;
    if (!post) {
        __asm__("smmulr %0, %1, %2" : "=r"(d) : "r"(g), "r"(mm));
        return d;
    }
    __asm__("smmul %0, %1, %2" : "=r"(d) : "r"(g), "r"(mm));
    return (d + post_half) >> post;
}

/* New weights g = w - d two at a time while every one fits 16 bits (the caller bounds the steps), their
 * largest and smallest kept in the halfwords of two words; *m32 = their largest magnitude. Returns how many
 * weights are done (all but an odd last one). */
__attribute__((always_inline)) static inline int32_t steps16(int32_t *g, const int8_t *w, int32_t K, int32_t mm,
                                                             int32_t post_half, int post, int32_t *m32)
{
    uint32_t hi = 0, lo = 0;
    int32_t t = 0;
    for (; t + 2 <= K; t += 2) {
        const int32_t n0 = w[t] - dsp_step(g[t], mm, post_half, post);
        const int32_t n1 = w[t + 1] - dsp_step(g[t + 1], mm, post_half, post);
        g[t] = n0;
        g[t + 1] = n1;
        const uint32_t pk = (uint32_t)low_halves((uint32_t)n0, (uint32_t)n1);
        max16(&hi, pk);
        min16(&lo, pk);
    }
    const int32_t top = (int16_t)(hi & 0xFFFFu) > (int16_t)(hi >> 16) ? (int16_t)(hi & 0xFFFFu) : (int16_t)(hi >> 16);
    const int32_t bottom = (int16_t)(lo & 0xFFFFu) < (int16_t)(lo >> 16) ? (int16_t)(lo & 0xFFFFu) : (int16_t)(lo >> 16);
    *m32 = top > -bottom ? top : -bottom;
    return t;
}
#endif

/* New weights w - d of a row, d = round(g * f_w) (+ decay, + momentum), into g (saturated to +-2^30); returns
 * their largest magnitude (and the momentum's in *vmax). The common case (no decay, no momentum,
 * f_w < 2^-1) is one 64-bit multiply and a rounding shift per weight. */
__attribute__((noinline)) static int64_t new_weights(int32_t *g, const int8_t *w, const int16_t *vw, int32_t K,
                                                     uint32_t gmag, float f_w, float f_d, float mu, int64_t *vmax)
{
    (void)gmag; /* bounds the steps, on the DSP path: |d| <= gmag * mm / 2^32 + 1 */
    int32_t mw, ew, md, ed, mv, ev;
    fx_parts(f_w, &mw, &ew);
    fx_parts(f_d, &md, &ed);
    fx_parts(mu, &mv, &ev);
    int64_t m = 0;
    *vmax = 0;
    if (!md && !vw && ew <= -25) {
        /* d = (g * mw + 2^(n-1)) >> n < 2^30 fits 32 bits: taken from the high word of one 64-bit product. */
        const int n = -ew > 62 ? 62 : -ew; /* beyond 62 every rounded product is 0, as with 62 */
        const int32_t mm = n <= 32 ? mw << (32 - n) : mw, post = n <= 32 ? 0 : n - 32;
        const int64_t half = n <= 32 ? (int64_t)1 << 31 : 0;
        const int32_t post_half = post ? 1 << (post - 1) : 0;
        int32_t m32 = 0;
#if TL_DSP
        int32_t t = 0;
        if ((((uint64_t)gmag * (uint32_t)mm) >> 32) < 32767 - 128)
            t = post ? steps16(g, w, K, mm, post_half, post, &m32) : steps16(g, w, K, mm, 0, 0, &m32);
        if (!post) {
            UNROLL for (; t < K; t++)
                m32 = store_new(g, w, t, dsp_step(g[t], mm, 0, 0), m32);
        } else {
            UNROLL for (; t < K; t++)
                m32 = store_new(g, w, t, dsp_step(g[t], mm, post_half, post), m32);
        }
        return m32;
#endif
        for (int32_t t = 0; t < K; t++)
            m32 = store_new(g, w, t, ((int32_t)(((int64_t)g[t] * mm + half) >> 32) + post_half) >> post, m32);
        return m32;
    }
    int32_t t = 0;
    if (!md && !vw && ew < 0) {
        /* 2^-25 <= f_w < 1: d = (g * mw + 2^(n-1)) >> n with n = -ew, in 64 bits, for as long as no step is
         * large enough to need the saturations of the general loop, which then takes over. */
        const int n = -ew;
        const int64_t half = (int64_t)1 << (n - 1);
        int32_t m32 = 0;
        for (; t < K; t++) {
            const int64_t d = ((int64_t)g[t] * mw + half) >> n;
            if (d > STEP_MAX || d < -STEP_MAX)
                break;
            m32 = store_new(g, w, t, (int32_t)d, m32);
        }
        m = m32;
    }
    for (; t < K; t++) {
        int64_t d = fx_scaled_parts(g[t], mw, ew);
        if (md)
            d += fx_scaled_parts(w[t], md, ed);
        if (vw) {
            d = fx_scaled_parts(vw[t], mv, ev) + d;
            if (abs64(d) > *vmax)
                *vmax = abs64(d);
        }
        const int64_t nw = w[t] - d;
        if (abs64(nw) > m)
            m = abs64(nw);
        g[t] = (int32_t)(nw > UPDATE_RANGE ? UPDATE_RANGE : nw < -UPDATE_RANGE ? -UPDATE_RANGE : nw);
    }
    return m;
}

/* SGD on output channel o from its weight gradient g[K] (scale sigma * in_scale) and bias gradient gb (scale
 * sigma), written into the int8 weights at once. g is overwritten. Returns 0 (nothing changed) when a weight
 * or bias would leave the layer's bound. */
__attribute__((noinline)) static int update_row(const tl_layer *l, const tl_params *p, int32_t o, int32_t *g,
                                                int32_t gb, float sigma, const tl_hyper *h)
{
    const int32_t c = (int32_t)l->ch + o, K = l->kh * l->kw * l->in.c;
    int8_t *w = p->w + l->w + o * K;
    int16_t *vw = p->vw ? p->vw + l->w + o * K : 0;
    const float s = p->scale[c], s_in = l->in_scale, sigma_g = sigma * s_in;
    float lr = h->lr;
    uint32_t gmag = UINT32_MAX; /* the OR of the gradient's magnitudes (at least the largest), when known */
    if (h->clip_norm > 0.0f) {
        uint32_t m = 0; /* the OR of the magnitudes has the bit length of the largest */
        UNROLL for (int32_t t = 0; t < K; t++)
            m |= g[t] < 0 ? (uint32_t)0 - (uint32_t)g[t] : (uint32_t)g[t];
        gmag = m;
        int sh = fx_bitlen(m) - 15;
        if (sh < 0)
            sh = 0;
        int64_t sum2 = 0;
        UNROLL for (int32_t t = 0; t < K; t++) {
            const int32_t v = g[t] >> sh;
            sum2 += (int64_t)v * v;
        }
        const float a = sigma_g * fx_pow2(sh), b = sigma * (float)gb;
        const float norm2 = a * a * (float)sum2 + b * b;
        if (norm2 > h->clip_norm * h->clip_norm)
            lr = lr * (h->clip_norm / sqrtf(norm2));
    }
    /* Steps of the channel's scale (weights) and of in_scale * scale (bias) per unit of gradient. */
    const float f_w = lr * sigma_g / s, f_b = lr * sigma / (s_in * s), f_d = h->lr * h->weight_decay;
    if (!fm_isfinite(f_w) || !fm_isfinite(f_b) || !fm_isfinite(f_d))
        return 0;
    int64_t vmax;
    const int64_t m = new_weights(g, w, vw, K, gmag, f_w, f_d, h->momentum, &vmax);
    int64_t db = fx_scaled(gb, f_b) + fx_scaled(p->bias[c], f_d);
    if (p->vb)
        db = fx_scaled(p->vb[c], h->momentum) + db;
    int64_t nb = (int64_t)p->bias[c] - db;
    if (vmax > 32767 || abs64(db) > INT32_MAX || m > UPDATE_RANGE || abs64(nb) > INT32_MAX)
        return 0;
    /* Refit the channel's scale (the compiler's per-channel scheme, with headroom: largest weight at 120)
     * when its weights outgrew the int8 range (required) or shrank below 96 (when the new values fit). */
    float s_new = s, ratio = 1.0f;
    int64_t nvb = db;
    int refitted = 0;
    if (m > WEIGHT_MAX || (m > 0 && m < WEIGHT_LOW)) {
        const float refit = s * (float)m / (float)WEIGHT_REFIT, r = (float)WEIGHT_REFIT / (float)m;
        const int64_t rb = fx_scaled(nb, r), rvb = fx_scaled(db, r);
        const int fits = fm_isfinite(refit) && 127.0f * refit <= l->bound && abs64(rb) <= INT32_MAX &&
                         fx_scaled(vmax, r) <= 32767 && abs64(rvb) <= INT32_MAX;
        if (fits) {
            refitted = 1;
            s_new = refit;
            ratio = r;
            nb = rb;
            nvb = rvb;
        } else if (m > WEIGHT_MAX) {
            return 0;
        }
    }
    if ((float)abs64(nb) * (s_in * s_new) > l->bound)
        return 0;
    int32_t mr, er;
    fx_parts(ratio, &mr, &er);
    if (!refitted && !vw) { /* the common case */
        UNROLL for (int32_t t = 0; t < K; t++)
            w[t] = (int8_t)g[t];
    } else if (!vw && er < 0 && er >= -62) {
        /* A refit without momentum: round(nw * ratio) as fx_scaled_parts computes it, whose saturation a
         * result of at most about WEIGHT_REFIT never reaches. */
        const int n = -er;
        const int64_t half = (int64_t)1 << (n - 1);
        for (int32_t t = 0; t < K; t++)
            w[t] = (int8_t)(((int64_t)g[t] * mr + half) >> n);
    } else {
        for (int32_t t = 0; t < K; t++) {
            int32_t nw = g[t], v = w[t] - nw;
            if (refitted) {
                nw = (int32_t)fx_scaled_parts(nw, mr, er);
                v = (int32_t)fx_scaled_parts(v, mr, er);
            }
            w[t] = (int8_t)nw;
            if (vw)
                vw[t] = (int16_t)v;
        }
    }
    p->bias[c] = (int32_t)nb;
    if (p->vb)
        p->vb[c] = (int32_t)nvb;
    if (refitted) {
        p->scale[c] = s_new;
        fx_qmult(s_in * s_new / l->out_scale, &p->mult[c], &p->shift[c]);
    }
    return 1;
}

/* Two 16-bit lanes per word sum 4 int8 values at a time: even lanes take bytes 0 and 2, odd lanes 1 and 3. With
 * DSP, SXTAB16 adds them sign-extended (a lane holds up to 256 of them); plain C adds x + 128 (up to 257). */
#if MT_USE_DSP
#define LANE_BIAS 0
#define ADD4(even, odd, w) ((even) = (uint32_t)mt_lo_off((int32_t)(w), (int32_t)(even)), \
                            (odd) = (uint32_t)mt_hi_off((int32_t)(w), (int32_t)(odd)))
#define LANE_LO(a) ((int32_t)(int16_t)((a) & 0xFFFFu))
#define LANE_HI(a) ((int32_t)(int16_t)((a) >> 16))
#else
#define LANE_BIAS 128
#define ADD4(even, odd, w) ((w) ^= 0x80808080u, (even) += (w) & 0x00FF00FFu, (odd) += ((w) >> 8) & 0x00FF00FFu)
#define LANE_LO(a) ((int32_t)((a) & 0xFFFFu))
#define LANE_HI(a) ((int32_t)((a) >> 16))
#endif
#define LANE_MAX 256

static inline uint32_t read4(const int8_t *x)
{
    uint32_t w;
    memcpy(&w, x, 4);
    return w;
}

/* g[0..4n) += the lanes of n words' even / odd accumulators, less LANE_BIAS per summed value. */
static void unpack_lanes(int32_t *g, const uint32_t *even, const uint32_t *odd, int32_t n, int32_t bias)
{
    for (int32_t j = 0; j < n; j++) {
        g[4 * j] += LANE_LO(even[j]) - bias;
        g[4 * j + 1] += LANE_LO(odd[j]) - bias;
        g[4 * j + 2] += LANE_HI(even[j]) - bias;
        g[4 * j + 3] += LANE_HI(odd[j]) - bias;
    }
}

/* For a conv whose every tap lies inside its input: g[t] = the sum of input tap t over the positions where
 * channel o's gate passes (its output column yo, stride CO), for the K taps; returns how many passed. Each kernel
 * row's KW * CI input bytes are contiguous: they are summed 16 at a time in registers, over the passing
 * positions (a bit mask). */
static int32_t gated_sums(const tl_layer *l, const int8_t *x, const int8_t *yo, tl_gate gt, int32_t *g)
{
    const int32_t W = l->in.w, CI = l->in.c, OW = l->out.w, CO = l->out.c, KH = l->kh;
    const int32_t L = l->kw * CI, row_step = l->sh * W * CI, col_step = l->sw * CI, P = l->out.h * OW;
    memset(g, 0, sizeof(int32_t) * (size_t)(KH * L));
    if (L % 4 || P > LANE_MAX) {
        int32_t gated = 0;
        for (int32_t pos = 0; pos < P; pos++)
            if (passes(gt, yo[pos * CO])) {
                gated++;
                for (int32_t i = 0; i < KH; i++) {
                    const int8_t *xr = x + (pos / OW) * row_step + (pos % OW) * col_step + i * W * CI;
                    for (int32_t c = 0; c < L; c++)
                        g[i * L + c] += xr[c];
                }
            }
        return gated;
    }
    uint32_t mask[LANE_MAX / 32];
    int32_t gated = 0;
    const int32_t words = (P + 31) / 32;
    for (int32_t k = 0; k < words; k++) {
        uint32_t bits = 0;
        for (int32_t b = 0, n = P - 32 * k < 32 ? P - 32 * k : 32; b < n; b++) {
            const uint32_t pass = (uint32_t)passes(gt, yo[(32 * k + b) * CO]);
            bits |= pass << b;
            gated += (int32_t)pass;
        }
        mask[k] = bits;
    }
    const int32_t bias = LANE_BIAS * gated;
#define OFFSET(pos) ((pos) < OW ? (pos) * col_step : ((pos) / OW) * row_step + ((pos) % OW) * col_step)
    for (int32_t i = 0; i < KH; i++)
        for (int32_t c0 = 0; c0 < L;) {
            const int8_t *xrow = x + i * W * CI + c0;
            if (L - c0 >= 16) {
                uint32_t e0 = 0, e1 = 0, e2 = 0, e3 = 0, o0 = 0, o1 = 0, o2 = 0, o3 = 0;
                for (int32_t k = 0; k < words; k++)
                    for (uint32_t bits = mask[k]; bits; bits &= bits - 1) {
                        const int32_t pos = 32 * k + __builtin_ctz(bits);
                        const int8_t *xr = xrow + OFFSET(pos);
                        uint32_t w0 = read4(xr), w1 = read4(xr + 4), w2 = read4(xr + 8), w3 = read4(xr + 12);
                        ADD4(e0, o0, w0);
                        ADD4(e1, o1, w1);
                        ADD4(e2, o2, w2);
                        ADD4(e3, o3, w3);
                    }
                const uint32_t even[4] = {e0, e1, e2, e3}, odd[4] = {o0, o1, o2, o3};
                unpack_lanes(g + i * L + c0, even, odd, 4, bias);
                c0 += 16;
            } else {
                uint32_t e0 = 0, o0 = 0;
                for (int32_t k = 0; k < words; k++)
                    for (uint32_t bits = mask[k]; bits; bits &= bits - 1) {
                        uint32_t w0 = read4(xrow + OFFSET(32 * k + __builtin_ctz(bits)));
                        ADD4(e0, o0, w0);
                    }
                unpack_lanes(g + i * L + c0, &e0, &o0, 1, bias);
                c0 += 4;
            }
        }
#undef OFFSET
    return gated;
}

/* gr[c] += v * (xr[c] - zp) for c < n, |v| <= 2^14: with DSP, 4 at a time (SXTAB16 takes x - zp into 16-bit
 * lanes, SMLABB / SMLABT multiply-accumulate them). */
static void add_scaled_row(int32_t *gr, const int8_t *xr, int32_t n, int32_t v, int32_t zp)
{
    int32_t c = 0;
#if MT_USE_DSP
    const int32_t off = (int32_t)(((uint32_t)-zp & 0xFFFFu) * 0x10001u); /* -zp in both halfwords */
    UNROLL for (; c + 4 <= n; c += 4) {
        const int32_t w = (int32_t)read4(xr + c), lo = mt_lo_off(w, off), hi = mt_hi_off(w, off);
        gr[c] = __smlabb(v, lo, gr[c]);
        gr[c + 1] = __smlabb(v, hi, gr[c + 1]);
        gr[c + 2] = __smlabt(v, lo, gr[c + 2]);
        gr[c + 3] = __smlabt(v, hi, gr[c + 3]);
    }
#endif
    UNROLL for (; c < n; c++)
        gr[c] += v * (xr[c] - zp);
}

/* A full error map's gradient rows, one kernel tap (CI weights) at a time with its sums in registers:
 * g[t] = sum over positions of v * (x - zp) over the positions whose error v is not zero (listed once, at most
 * MAP_LISTED of them) and whose input of that tap is not padding, two positions at a time (their errors in
 * the halfwords of one word: with DSP, each channel's two inputs are packed into one word for SMLAD). Returns
 * the bias gradient (the sum of the v), or MAP_UNLISTED for one position or too many to list. */
#define MAP_LISTED 32
#define MAP_UNLISTED INT32_MIN
typedef struct {
    int16_t v, row, col; /* the error, the input row and column of tap (0, 0) */
} map_pos;
typedef struct {
    const int8_t *a, *b; /* the two positions' inputs of the tap */
    uint32_t v;          /* their errors, a's in the low halfword (b's is 0 when b only pads an odd count) */
} map_pair;

__attribute__((noinline)) static int32_t map_gradient(const tl_layer *l, const int8_t *x, const int8_t *yo,
                                                      const int16_t *eo, tl_gate gt, int32_t *g)
{
    const int32_t H = l->in.h, W = l->in.w, CI = l->in.c, OW = l->out.w, CO = l->out.c, P = l->out.h * OW;
    const int32_t zp = l->in_zp;
    if (P < 2 || P > MAP_LISTED) /* one position (a dense layer): add_scaled_row's single pass is cheaper */
        return MAP_UNLISTED;
    map_pos at[MAP_LISTED];
    map_pair pairs[MAP_LISTED / 2];
    int32_t gb = 0, n = 0;
    for (int32_t pos = 0; pos < P; pos++) {
        const int32_t v = passes(gt, yo[pos * CO]) ? eo[pos * CO] : 0;
        if (v) {
            gb += v;
            at[n++] = (map_pos){(int16_t)v, (int16_t)((pos / OW) * l->sh - l->pad_t),
                                (int16_t)((pos % OW) * l->sw - l->pad_l)};
        }
    }
#if TL_DSP
    const int32_t off = (int32_t)(((uint32_t)-zp & 0xFFFFu) * 0x10001u); /* -zp in both halfwords */
#endif
    for (int32_t i = 0; i < l->kh; i++)
        for (int32_t j = 0; j < l->kw; j++) {
            int32_t m = 0; /* listed positions whose input of tap (i, j) is not padding */
            for (int32_t k = 0; k < n; k++) {
                const int32_t ih = at[k].row + i, iw = at[k].col + j;
                if ((uint32_t)ih < (uint32_t)H && (uint32_t)iw < (uint32_t)W) {
                    map_pair *q = pairs + m / 2;
                    const int8_t *xr = x + (ih * W + iw) * CI;
                    if (m % 2) {
                        q->b = xr;
                        q->v |= (uint32_t)at[k].v << 16;
                    } else {
                        *q = (map_pair){xr, xr, (uint32_t)at[k].v & 0xFFFFu};
                    }
                    m++;
                }
            }
            const map_pair *end = pairs + (m + 1) / 2;
            int32_t *gr = g + (i * l->kw + j) * CI, c = 0;
            for (; c + 4 <= CI; c += 4) {
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (const map_pair *q = pairs; q < end; q++) {
#if TL_DSP
                    const int32_t wa = (int32_t)read4(q->a + c), wb = (int32_t)read4(q->b + c), v = (int32_t)q->v;
                    const uint32_t la = (uint32_t)mt_lo_off(wa, off), ha = (uint32_t)mt_hi_off(wa, off);
                    const uint32_t lb = (uint32_t)mt_lo_off(wb, off), hb = (uint32_t)mt_hi_off(wb, off);
                    uint32_t c0, c2, c1, c3;
                    pair_halves(la, lb, &c0, &c2);
                    pair_halves(ha, hb, &c1, &c3);
                    a0 = mt_smlad((int32_t)c0, v, a0);
                    a1 = mt_smlad((int32_t)c1, v, a1);
                    a2 = mt_smlad((int32_t)c2, v, a2);
                    a3 = mt_smlad((int32_t)c3, v, a3);
#else
                    const int8_t *xa = q->a + c, *xb = q->b + c;
                    const int32_t va = (int16_t)(q->v & 0xFFFFu), vb = (int16_t)(q->v >> 16);
                    a0 += va * (xa[0] - zp) + vb * (xb[0] - zp);
                    a1 += va * (xa[1] - zp) + vb * (xb[1] - zp);
                    a2 += va * (xa[2] - zp) + vb * (xb[2] - zp);
                    a3 += va * (xa[3] - zp) + vb * (xb[3] - zp);
#endif
                }
                gr[c] = a0;
                gr[c + 1] = a1;
                gr[c + 2] = a2;
                gr[c + 3] = a3;
            }
            for (; c < CI; c++) {
                int32_t a = 0;
                for (const map_pair *q = pairs; q < end; q++)
                    a += (int16_t)(q->v & 0xFFFFu) * (q->a[c] - zp) + (int16_t)(q->v >> 16) * (q->b[c] - zp);
                gr[c] = a;
            }
        }
    return gb;
}

/* The input error with the served weights (before this window's update), as int32 sums in acc (H * W * CI):
 * each output position's scale-weighted errors (fold, one per channel; 0 for pruned channels) spread over the
 * input elements its taps read. */
static void input_error_sums(const tl_layer *l, const int8_t *wq, const int16_t *fold, int32_t *acc)
{
    const int32_t H = l->in.h, W = l->in.w, CI = l->in.c, OH = l->out.h, OW = l->out.w, CO = l->out.c;
    const int32_t KH = l->kh, KW = l->kw, K = KH * KW * CI;
    memset(acc, 0, sizeof(int32_t) * (size_t)(H * W * CI));
    for (int32_t pr = 0; pr < OH; pr++)
        for (int32_t qc = 0; qc < OW; qc++) {
            const int16_t *f = fold + (pr * OW + qc) * CO;
            for (int32_t i = 0; i < KH; i++) {
                const int32_t ih = pr * l->sh + i - l->pad_t;
                if (ih < 0 || ih >= H)
                    continue;
                for (int32_t j = 0; j < KW; j++) {
                    const int32_t iw = qc * l->sw + j - l->pad_l;
                    if (iw < 0 || iw >= W)
                        continue;
                    int32_t *a = acc + (ih * W + iw) * CI;
                    const int8_t *wt = wq + (i * KW + j) * CI;
                    for (int32_t o = 0; o < CO; o++) {
                        const int32_t fo = f[o];
                        if (!fo)
                            continue;
                        const int8_t *wr = wt + o * K;
                        for (int32_t c = 0; c < CI; c++)
                            a[c] += fo * wr[c];
                    }
                }
            }
        }
}

static void conv_backward(const tl_layer *l, const uint8_t *arena, const tl_params *p, const tl_error *out,
                          tl_error *in, const tl_hyper *h, const tl_work *wk, tl_stats *st)
{
    const int32_t H = l->in.h, W = l->in.w, CI = l->in.c, OH = l->out.h, OW = l->out.w, CO = l->out.c;
    const int32_t KH = l->kh, KW = l->kw, SH = l->sh, SW = l->sw, PT = l->pad_t, PL = l->pad_l;
    const int32_t K = KH * KW * CI, P = OH * OW, zp = l->in_zp;
    const int8_t *x = (const int8_t *)(arena + l->in_offset), *y = (const int8_t *)(arena + l->out_offset);
    const int8_t *wq = p->w + l->w;
    const int32_t *mult = p->mult + l->ch, *shift = p->shift + l->ch;
    const tl_gate gt = gate_of(l);
    const int16_t *e = out->e;
    const int broadcast = out->broadcast;
    /* The error at the layer's output, gated by its activation. */
#define ERR(pos, o) (passes(gt, y[(pos) * CO + (o)]) ? e[broadcast ? (o) : (pos) * CO + (o)] : 0)
    uint8_t *kept = wk->kept;
    uint32_t n_kept = (uint32_t)CO;
    if (!l->dense || h->prune_dense) {
        float *scores = wk->scores;
        for (int32_t o = 0; o < CO; o++) {
            uint32_t sum = 0;
            if (broadcast) {
                for (int32_t pos = 0; pos < P; pos++)
                    sum += passes(gt, y[pos * CO + o]);
                sum *= (uint32_t)(e[o] < 0 ? -e[o] : e[o]);
            } else {
                for (int32_t pos = 0; pos < P; pos++) {
                    const int32_t v = ERR(pos, o);
                    sum += (uint32_t)(v < 0 ? -v : v);
                }
            }
            scores[o] = out->sigma * (float)sum;
            if (h->prune_weight_l1 != 0.0f) {
                uint32_t l1 = 0;
                for (int32_t t = 0; t < K; t++)
                    l1 += (uint32_t)(wq[o * K + t] < 0 ? -wq[o * K + t] : wq[o * K + t]);
                scores[o] = scores[o] + h->prune_weight_l1 * (p->scale[l->ch + o] * (float)l1);
            }
        }
        const float keep = h->prune_keep < 1.0f && l->keep_max < h->prune_keep ? l->keep_max : h->prune_keep;
        n_kept = choose_channels(scores, CO, keep, kept);
    } else {
        memset(kept, 1, (size_t)CO);
    }
    const uint32_t per_channel = (uint32_t)(P * K), passes_ = in ? 2u : 1u;
    st->backward += n_kept * per_channel * passes_;
    st->backward_dense += (uint32_t)CO * per_channel * passes_;

    if (in) {
        /* Each kept channel's error is first weighted by its scale, as multiplier * 2^shift (proportional to
         * it), relative to the largest. */
        int32_t smax = shift[0];
        for (int32_t o = 1; o < CO; o++)
            if (shift[o] > smax)
                smax = shift[o];
        int16_t *fold = wk->fold;
        for (int32_t pos = 0; pos < P; pos++)
            for (int32_t o = 0; o < CO; o++)
                fold[pos * CO + o] =
                    kept[o] ? (int16_t)fx_round_shift((int64_t)ERR(pos, o) * mult[o], 31 + smax - shift[o]) : 0;
        input_error_sums(l, wq, fold, wk->input_error);
        tl_normalise(wk->input_error, H * W * CI, out->sigma * (l->out_scale / l->in_scale) * fx_pow2(smax), in);
    }

    /* Each kept channel's gradient, applied at once: g[t] = sum over positions of e * (x - zero point). With
     * one error per channel (after global average pooling) and no tap in the padding it is e times (the sum of
     * the gated inputs - zero point * their count). */
    const int raw = broadcast && PT == 0 && PL == 0 && (OH - 1) * SH + KH <= H && (OW - 1) * SW + KW <= W;
    int32_t *g = wk->row;
    for (int32_t o = 0; o < CO; o++) {
        if (!kept[o])
            continue;
        int32_t gb = broadcast ? MAP_UNLISTED : map_gradient(l, x, y + o, e + o, gt, g);
        if (raw) {
            const int32_t gated = gated_sums(l, x, y + o, gt, g), offset = zp * gated;
            gb = e[o] * gated;
            for (int32_t t = 0; t < K; t++)
                g[t] = e[o] * (g[t] - offset);
        } else if (gb == MAP_UNLISTED) {
            gb = 0;
            memset(g, 0, sizeof(int32_t) * (size_t)K);
            for (int32_t pr = 0; pr < OH; pr++)
                for (int32_t qc = 0; qc < OW; qc++) {
                    const int32_t v = ERR(pr * OW + qc, o);
                    if (!v)
                        continue;
                    gb += v;
                    for (int32_t i = 0; i < KH; i++) {
                        const int32_t ih = pr * SH + i - PT;
                        if (ih < 0 || ih >= H)
                            continue;
                        for (int32_t j = 0; j < KW; j++) {
                            const int32_t iw = qc * SW + j - PL;
                            if (iw < 0 || iw >= W)
                                continue;
                            add_scaled_row(g + (i * KW + j) * CI, x + (ih * W + iw) * CI, CI, v, zp);
                        }
                    }
                }
        }
        if (!update_row(l, p, o, g, gb, out->sigma, h))
            st->skipped++;
    }
#undef ERR
}

void tl_backward(const tl_layer *l, const uint8_t *arena, const tl_params *p, const tl_error *out, tl_error *in,
                 const tl_hyper *h, const tl_work *w, tl_stats *st)
{
    if (l->kind == TL_CONV) {
        conv_backward(l, arena, p, out, in, h, w, st);
        return;
    }
    if (!in)
        return;
    const int32_t H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
    const int8_t *x = (const int8_t *)(arena + l->in_offset), *y = (const int8_t *)(arena + l->out_offset);
    in->sigma = out->sigma;
    in->broadcast = 0;
    switch (l->kind) {
    case TL_AVGPOOL: /* global: every position gets the channel's error / (H * W), kept as one value */
        for (int32_t c = 0; c < C; c++)
            in->e[c] = (int16_t)(gate(l, y[c]) ? out->e[c] : 0);
        in->broadcast = 1;
        in->sigma = out->sigma / (float)(H * W);
        break;
    case TL_MAXPOOL: /* windows do not overlap: the error goes to each window's first largest input */
        memset(in->e, 0, sizeof(int16_t) * (size_t)(H * W * C));
        for (int32_t pr = 0; pr < OH; pr++)
            for (int32_t qc = 0; qc < OW; qc++)
                for (int32_t c = 0; c < C; c++) {
                    const int32_t pos = pr * OW + qc;
                    int32_t best_at = ((pr * l->kh) * W + qc * l->kw) * C + c;
                    for (int32_t i = 0; i < l->kh; i++)
                        for (int32_t j = 0; j < l->kw; j++) {
                            const int32_t at = ((pr * l->kh + i) * W + qc * l->kw + j) * C + c;
                            if (x[at] > x[best_at])
                                best_at = at;
                        }
                    in->e[best_at] = (int16_t)(gate(l, y[pos * C + c]) ? error_at(out, pos, c, C) : 0);
                }
        break;
    case TL_ACT:
        for (int32_t i = 0; i < H * W * C; i++)
            in->e[i] = (int16_t)(gate(l, y[i]) ? error_at(out, i / C, i % C, C) : 0);
        break;
    default:
        break;
    }
}
