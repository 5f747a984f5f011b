#include "train_layers.h"

#include <string.h>

static inline float load(const tl_input *x, int32_t i)
{
    return x->q ? (float)((int32_t)x->q[i] - x->zero_point) * x->scale : x->f[i];
}

static float activate(const tl_layer *l, float y)
{
    if (l->act == TL_ACT_RELU)
        return y > 0.0f ? y : 0.0f;
    if (l->act == TL_ACT_CLIP)
        return y < l->act_lo ? l->act_lo : y > l->act_hi ? l->act_hi : y;
    return y;
}

float tl_gate(uint8_t act, float lo, float hi, float y, float v)
{
    if (act == TL_ACT_RELU)
        return y > 0.0f ? v : 0.0f;
    if (act == TL_ACT_CLIP)
        return (y > lo && y < hi) ? v : 0.0f;
    return v;
}

static void conv_forward(const tl_layer *l, const float *params, const tl_input *x, float *y)
{
    const int32_t H = l->in.h, W = l->in.w, CI = l->in.c, OH = l->out.h, OW = l->out.w, CO = l->out.c;
    const float *w = params + l->w, *b = params + l->b;
    for (int32_t p = 0; p < OH; p++)
        for (int32_t q = 0; q < OW; q++)
            for (int32_t o = 0; o < CO; o++) {
                float acc = 0.0f;
                const float *wo = w + (size_t)o * l->kh * l->kw * CI;
                for (int32_t i = 0; i < l->kh; i++) {
                    const int32_t ih = p * l->sh + i - l->pad_t;
                    for (int32_t j = 0; j < l->kw; j++) {
                        const int32_t iw = q * l->sw + j - l->pad_l;
                        const float *wt = wo + (i * l->kw + j) * CI;
                        const int32_t at = (ih * W + iw) * CI;
                        /* Same operations in each branch: acc + w * x, x = 0 in the padding. */
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                            for (int32_t c = 0; c < CI; c++)
                                acc = acc + wt[c] * 0.0f;
                        } else if (x->q) {
                            const int8_t *xq = x->q + at;
                            for (int32_t c = 0; c < CI; c++)
                                acc = acc + wt[c] * ((float)((int32_t)xq[c] - x->zero_point) * x->scale);
                        } else {
                            const float *xf = x->f + at;
                            for (int32_t c = 0; c < CI; c++)
                                acc = acc + wt[c] * xf[c];
                        }
                    }
                }
                y[(p * OW + q) * CO + o] = activate(l, acc + b[o]);
            }
}

void tl_forward(const tl_layer *l, const float *params, tl_input x, float *y)
{
    const int32_t H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
    switch (l->kind) {
    case TL_CONV:
        conv_forward(l, params, &x, y);
        break;
    case TL_AVGPOOL: {
        const float inv = 1.0f / (float)(H * W);
        for (int32_t c = 0; c < C; c++) {
            float acc = 0.0f;
            for (int32_t i = 0; i < H * W; i++)
                acc = acc + load(&x, i * C + c);
            y[c] = acc * inv;
        }
        break;
    }
    case TL_MAXPOOL:
        for (int32_t p = 0; p < OH; p++)
            for (int32_t q = 0; q < OW; q++)
                for (int32_t c = 0; c < C; c++) {
                    float best = load(&x, ((p * l->kh) * W + q * l->kw) * C + c);
                    for (int32_t i = 0; i < l->kh; i++)
                        for (int32_t j = 0; j < l->kw; j++) {
                            const float v = load(&x, ((p * l->kh + i) * W + q * l->kw + j) * C + c);
                            if (v > best)
                                best = v;
                        }
                    y[(p * OW + q) * C + c] = best;
                }
        break;
    case TL_ACT:
        for (int32_t i = 0; i < H * W * C; i++)
            y[i] = activate(l, load(&x, i));
        break;
    default:
        break;
    }
}

/* Marks in kept[] the ceil(keep * n) highest scores, ties to the lower index. */
static uint32_t choose_channels(const float *scores, int32_t n, float keep, float *kept)
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
        kept[o] = rank < k ? 1.0f : 0.0f;
        count += rank < k;
    }
    return count;
}

static void conv_backward(const tl_layer *l, const float *params, const tl_input *x, const float *e, float *grad,
                          float *dx, uint8_t prev_act, float prev_lo, float prev_hi, const tl_prune *prune,
                          float *scratch, tl_macs *macs)
{
    const int32_t H = l->in.h, W = l->in.w, CI = l->in.c, OH = l->out.h, OW = l->out.w, CO = l->out.c;
    const int32_t KH = l->kh, KW = l->kw, K = KH * KW * CI;
    const float *w = params + l->w;
    float *scores = scratch, *kept = scratch + CO;
    uint32_t n_kept = (uint32_t)CO;
    if (!l->dense || prune->dense) {
        for (int32_t o = 0; o < CO; o++)
            scores[o] = 0.0f;
        for (int32_t pq = 0; pq < OH * OW; pq++)
            for (int32_t o = 0; o < CO; o++) {
                const float v = e[pq * CO + o];
                scores[o] = scores[o] + (v < 0.0f ? -v : v);
            }
        if (prune->weight_l1 != 0.0f)
            for (int32_t o = 0; o < CO; o++) {
                float acc = 0.0f;
                for (int32_t t = 0; t < K; t++) {
                    const float v = w[o * K + t];
                    acc = acc + (v < 0.0f ? -v : v);
                }
                scores[o] = scores[o] + prune->weight_l1 * acc;
            }
        n_kept = choose_channels(scores, CO, prune->keep, kept);
    } else {
        for (int32_t o = 0; o < CO; o++)
            kept[o] = 1.0f;
    }
    const uint32_t per_channel = (uint32_t)(OH * OW * K), passes = dx ? 2u : 1u;
    macs->backward += n_kept * per_channel * passes;
    macs->backward_dense += (uint32_t)CO * per_channel * passes;

    /* Weight and bias gradients of the kept channels: sums over output positions, row-major. */
    float *gw = grad + l->w, *gb = grad + l->b;
    memset(gw, 0, sizeof(float) * (size_t)CO * K);
    memset(gb, 0, sizeof(float) * (size_t)CO);
    for (int32_t o = 0; o < CO; o++) {
        if (kept[o] == 0.0f)
            continue;
        for (int32_t i = 0; i < KH; i++)
            for (int32_t j = 0; j < KW; j++)
                for (int32_t c = 0; c < CI; c++) {
                    float acc = 0.0f;
                    for (int32_t p = 0; p < OH; p++) {
                        const int32_t ih = p * l->sh + i - l->pad_t;
                        const float *ep = e + p * OW * CO + o;
                        for (int32_t q = 0; q < OW; q++) {
                            const int32_t iw = q * l->sw + j - l->pad_l;
                            float xv = 0.0f;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                                const int32_t at = (ih * W + iw) * CI + c;
                                xv = x->q ? (float)((int32_t)x->q[at] - x->zero_point) * x->scale : x->f[at];
                            }
                            acc = acc + ep[q * CO] * xv;
                        }
                    }
                    gw[o * K + (i * KW + j) * CI + c] = acc;
                }
        float acc = 0.0f;
        for (int32_t pq = 0; pq < OH * OW; pq++)
            acc = acc + e[pq * CO + o];
        gb[o] = acc;
    }
    if (!dx)
        return;
    /* Input error, gathered per input element over (kh, kw), then the kept channels in order. Each element
     * reads x only at its own index (the gate), so dx may overwrite x. */
    for (int32_t ih = 0; ih < H; ih++)
        for (int32_t iw = 0; iw < W; iw++)
            for (int32_t c = 0; c < CI; c++) {
                float acc = 0.0f;
                for (int32_t i = 0; i < KH; i++) {
                    const int32_t ph = ih + l->pad_t - i;
                    if (ph < 0 || ph % l->sh || ph / l->sh >= OH)
                        continue;
                    for (int32_t j = 0; j < KW; j++) {
                        const int32_t pw = iw + l->pad_l - j;
                        if (pw < 0 || pw % l->sw || pw / l->sw >= OW)
                            continue;
                        const float *ep = e + ((ph / l->sh) * OW + pw / l->sw) * CO;
                        for (int32_t o = 0; o < CO; o++)
                            if (kept[o] != 0.0f)
                                acc = acc + ep[o] * w[o * K + (i * KW + j) * CI + c];
                    }
                }
                const int32_t at = (ih * W + iw) * CI + c;
                dx[at] = tl_gate(prev_act, prev_lo, prev_hi, load(x, at), acc);
            }
}

void tl_backward(const tl_layer *l, const float *params, tl_input x, const float *e, float *grad, float *dx,
                 uint8_t prev_act, float prev_lo, float prev_hi, const tl_prune *prune, float *scratch,
                 tl_macs *macs)
{
    const int32_t H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
    if (l->kind == TL_CONV) {
        conv_backward(l, params, &x, e, grad, dx, prev_act, prev_lo, prev_hi, prune, scratch, macs);
        return;
    }
    if (!dx)
        return;
    switch (l->kind) {
    case TL_AVGPOOL: {
        const float inv = 1.0f / (float)(H * W);
        for (int32_t i = 0; i < H * W; i++)
            for (int32_t c = 0; c < C; c++)
                dx[i * C + c] = tl_gate(prev_act, prev_lo, prev_hi, load(&x, i * C + c), e[c] * inv);
        break;
    }
    case TL_MAXPOOL: {
        /* Windows do not overlap (stride = kernel): each is read whole before it is written. */
        for (int32_t p = 0; p < OH; p++)
            for (int32_t q = 0; q < OW; q++)
                for (int32_t c = 0; c < C; c++) {
                    int32_t best_at = ((p * l->kh) * W + q * l->kw) * C + c;
                    float best = load(&x, best_at);
                    for (int32_t i = 0; i < l->kh; i++)
                        for (int32_t j = 0; j < l->kw; j++) {
                            const int32_t at = ((p * l->kh + i) * W + q * l->kw + j) * C + c;
                            const float v = load(&x, at);
                            if (v > best) {
                                best = v;
                                best_at = at;
                            }
                        }
                    const float g = tl_gate(prev_act, prev_lo, prev_hi, best, e[(p * OW + q) * C + c]);
                    for (int32_t i = 0; i < l->kh; i++)
                        for (int32_t j = 0; j < l->kw; j++)
                            dx[((p * l->kh + i) * W + q * l->kw + j) * C + c] = 0.0f;
                    dx[best_at] = g;
                }
        /* Rows and columns no window covers get no gradient. */
        for (int32_t ih = 0; ih < H; ih++)
            for (int32_t iw = 0; iw < W; iw++)
                if (ih >= OH * l->kh || iw >= OW * l->kw)
                    for (int32_t c = 0; c < C; c++)
                        dx[(ih * W + iw) * C + c] = 0.0f;
        break;
    }
    case TL_ACT:
        for (int32_t i = 0; i < H * W * C; i++)
            dx[i] = tl_gate(prev_act, prev_lo, prev_hi, load(&x, i), e[i]);
        break;
    default:
        break;
    }
}
