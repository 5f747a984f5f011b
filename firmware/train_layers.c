#include "train_layers.h"

#include <math.h>
#include <string.h>

#include "fmath.h"

#define WEIGHT_MAX 127                        /* int8 weights are symmetric, [-127, 127] */
#define WEIGHT_REFIT 120                      /* a channel's largest |weight| after its scale is refitted */
#define WEIGHT_LOW 96                         /* below this the scale is refitted, when it can be */
#define UPDATE_RANGE ((int64_t)1 << 30)       /* an update that takes a weight beyond this is never applied */
#define ERROR_BITS 14

static int gate(const tl_layer *l, int8_t y) /* conv_backward has its own copy, with the fields in locals */
{
    if (l->act == TL_ACT_RELU)
        return y > l->act_min;
    if (l->act == TL_ACT_CLIP)
        return y > l->act_min && y < l->act_max;
    return 1;
}

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
    uint32_t count = 0;
    for (int32_t o = 0; o < n; o++) {
        int32_t rank = 0;
        for (int32_t j = 0; j < n; j++)
            if (scores[j] > scores[o] || (scores[j] == scores[o] && j < o))
                rank++;
        kept[o] = rank < k;
        count += rank < k;
    }
    return count;
}

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* New weights w - d of a row, d = round(g * f_w) (+ decay, + momentum), into g (saturated to +-2^30); returns
 * their largest magnitude (and the momentum's in *vmax). The common case (no decay, no momentum,
 * f_w < 2^-1) is one 64-bit multiply and a rounding shift per weight. */
__attribute__((noinline)) static int64_t new_weights(int32_t *g, const int8_t *w, const int16_t *vw, int32_t K,
                                                     float f_w, float f_d, float mu, int64_t *vmax)
{
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
        for (int32_t t = 0; t < K; t++) {
            const int32_t d = ((int32_t)(((int64_t)g[t] * mm + half) >> 32) + post_half) >> post;
            const int32_t nw = w[t] - d, a = nw < 0 ? -nw : nw;
            if (a > m32)
                m32 = a;
            g[t] = nw;
        }
        return m32;
    }
    for (int32_t t = 0; t < K; t++) {
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
    if (h->clip_norm > 0.0f) {
        uint32_t m = 0;
        for (int32_t t = 0; t < K; t++) {
            const uint32_t a = g[t] < 0 ? (uint32_t)0 - (uint32_t)g[t] : (uint32_t)g[t];
            if (a > m)
                m = a;
        }
        int sh = fx_bitlen(m) - 15;
        if (sh < 0)
            sh = 0;
        int64_t sum2 = 0;
        for (int32_t t = 0; t < K; t++) {
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
    const int64_t m = new_weights(g, w, vw, K, f_w, f_d, h->momentum, &vmax);
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
    p->bias[c] = (int32_t)nb;
    if (p->vb)
        p->vb[c] = (int32_t)nvb;
    if (refitted) {
        p->scale[c] = s_new;
        fx_qmult(s_in * s_new / l->out_scale, &p->mult[c], &p->shift[c]);
    }
    return 1;
}

/* acc[2j], acc[2j + 1] += the 4 int8 values x[4j..4j+3] as x + 128 in two 16-bit lanes each: (x[4j], x[4j+2])
 * and (x[4j+1], x[4j+3]). Plain 32-bit arithmetic (any Cortex-M): a lane holds the sum of up to 257 of them. */
static void add_packed(uint32_t *acc, const int8_t *x, int32_t groups)
{
    for (int32_t j = 0; j < groups; j++) {
        uint32_t w;
        memcpy(&w, x + 4 * j, 4);
        w ^= 0x80808080u;
        acc[2 * j] += w & 0x00FF00FFu;
        acc[2 * j + 1] += (w >> 8) & 0x00FF00FFu;
    }
}

/* The n / 2 words add_packed filled, as n sums (of x + 128), in place. */
static void unpack(int32_t *g, int32_t n)
{
    const uint32_t *acc = (const uint32_t *)g;
    for (int32_t j = n / 4 - 1; j >= 0; j--) {
        const uint32_t even = acc[2 * j], odd = acc[2 * j + 1];
        g[4 * j] = (int32_t)(even & 0xFFFFu);
        g[4 * j + 1] = (int32_t)(odd & 0xFFFFu);
        g[4 * j + 2] = (int32_t)(even >> 16);
        g[4 * j + 3] = (int32_t)(odd >> 16);
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
    const uint8_t act = l->act;
    const int8_t amin = l->act_min, amax = l->act_max;
    const int16_t *e = out->e;
    const int broadcast = out->broadcast;
    /* The error at the layer's output, gated by its activation. */
#define GATE(yv) (act == TL_ACT_RELU ? (yv) > amin : act == TL_ACT_CLIP ? (yv) > amin && (yv) < amax : 1)
#define ERR(pos, o) (GATE(y[(pos) * CO + (o)]) ? e[broadcast ? (o) : (pos) * CO + (o)] : 0)
    uint8_t *kept = wk->kept;
    uint32_t n_kept = (uint32_t)CO;
    if (!l->dense || h->prune_dense) {
        float *scores = wk->scores;
        for (int32_t o = 0; o < CO; o++) {
            uint32_t sum = 0;
            if (broadcast) {
                for (int32_t pos = 0; pos < P; pos++)
                    sum += GATE(y[pos * CO + o]);
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
        n_kept = choose_channels(scores, CO, h->prune_keep, kept);
    } else {
        memset(kept, 1, (size_t)CO);
    }
    const uint32_t per_channel = (uint32_t)(P * K), passes = in ? 2u : 1u;
    st->backward += n_kept * per_channel * passes;
    st->backward_dense += (uint32_t)CO * per_channel * passes;

    if (in) {
        /* The input error with the served weights (before this window's update): each kept channel's error
         * is first weighted by its scale, as multiplier * 2^shift (proportional to it), relative to the
         * largest; then sums gathered per input element over (kh, kw) and the channels. */
        int32_t smax = shift[0];
        for (int32_t o = 1; o < CO; o++)
            if (shift[o] > smax)
                smax = shift[o];
        int16_t *fold = wk->fold;
        for (int32_t pos = 0; pos < P; pos++)
            for (int32_t o = 0; o < CO; o++)
                fold[pos * CO + o] =
                    kept[o] ? (int16_t)fx_round_shift((int64_t)ERR(pos, o) * mult[o], 31 + smax - shift[o]) : 0;
        int32_t *acc = wk->input_error;
        for (int32_t ih = 0; ih < H; ih++)
            for (int32_t iw = 0; iw < W; iw++)
                for (int32_t c = 0; c < CI; c++) {
                    int32_t a = 0;
                    for (int32_t i = 0; i < KH; i++) {
                        const int32_t ph = ih + PT - i;
                        if (ph < 0 || ph % SH || ph / SH >= OH)
                            continue;
                        for (int32_t j = 0; j < KW; j++) {
                            const int32_t pw = iw + PL - j;
                            if (pw < 0 || pw % SW || pw / SW >= OW)
                                continue;
                            const int16_t *f = fold + ((ph / SH) * OW + pw / SW) * CO;
                            const int8_t *wt = wq + (i * KW + j) * CI + c;
                            for (int32_t o = 0; o < CO; o++)
                                a += f[o] * wt[o * K];
                        }
                    }
                    acc[(ih * W + iw) * CI + c] = a;
                }
        tl_normalise(acc, H * W * CI, out->sigma * (l->out_scale / l->in_scale) * fx_pow2(smax), in);
    }

    /* Each kept channel's gradient, applied at once: g[t] = sum over positions of e * (x - zero point). With
     * one error per channel (after global average pooling) and no tap in the padding it is e times (the sum of
     * the gated inputs - zero point * their count). */
    const int raw = broadcast && PT == 0 && PL == 0 && (OH - 1) * SH + KH <= H && (OW - 1) * SW + KW <= W;
    const int packed = raw && CI % 4 == 0 && P <= 257;
    int32_t *g = wk->row;
    for (int32_t o = 0; o < CO; o++) {
        if (!kept[o])
            continue;
        memset(g, 0, sizeof(int32_t) * (size_t)K);
        int32_t gb = 0, gated = 0;
        for (int32_t pr = 0; pr < OH; pr++)
            for (int32_t qc = 0; qc < OW; qc++) {
                const int32_t pq = pr * OW + qc;
                if (raw) { /* every tap inside the input: whole rows of KW * CI values */
                    if (!GATE(y[pq * CO + o]))
                        continue;
                    gated++;
                    for (int32_t i = 0; i < KH; i++) {
                        const int8_t *xr = x + ((pr * SH + i) * W + qc * SW) * CI;
                        if (packed)
                            add_packed((uint32_t *)g + i * KW * CI / 2, xr, KW * CI / 4);
                        else
                            for (int32_t c = 0, *gr = g + i * KW * CI; c < KW * CI; c++)
                                gr[c] += xr[c];
                    }
                    continue;
                }
                const int32_t v = ERR(pq, o);
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
                        const int8_t *xr = x + (ih * W + iw) * CI;
                        int32_t *gr = g + (i * KW + j) * CI;
                        for (int32_t c = 0; c < CI; c++)
                            gr[c] += v * (xr[c] - zp);
                    }
                }
            }
        if (raw) {
            const int32_t offset = (packed ? 128 + zp : zp) * gated;
            if (packed)
                unpack(g, K);
            gb = e[o] * gated;
            for (int32_t t = 0; t < K; t++)
                g[t] = e[o] * (g[t] - offset);
        }
        if (!update_row(l, p, o, g, gb, out->sigma, h))
            st->skipped++;
    }
#undef ERR
#undef GATE
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
