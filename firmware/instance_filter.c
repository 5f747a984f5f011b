#include "instance_filter.h"

#include "fmath.h"

void if_features(const int8_t *logits, int n, const uint32_t *table, float f[IF_FEATURES])
{
    uint32_t t[32];
    const uint32_t s = fm_table_softmax(logits, n, table, t);
    float p[32];
    int i1 = 0;
    for (int j = 0; j < n; j++) {
        p[j] = (float)t[j] / (float)s;
        if (p[j] > p[i1])
            i1 = j;
    }
    float p2 = -1.0f;
    for (int j = 0; j < n; j++)
        if (j != i1 && p[j] > p2)
            p2 = p[j];
    float sq = 0.0f;
    for (int j = 0; j < n; j++)
        sq = sq + p[j] * p[j];
    f[0] = 1.0f;
    f[1] = p[i1];
    f[2] = p[i1] - p2;
    f[3] = sq;
}

float if_score(const if_state *s, const float f[IF_FEATURES])
{
    float score = s->w[0];
    for (int i = 1; i < IF_FEATURES; i++)
        score = score + s->w[i] * f[i];
    return score;
}

uint32_t if_prng_next(if_state *s)
{
    uint32_t x = s->prng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s->prng = x;
    return x;
}

void if_seed(if_state *s, uint32_t seed) { s->prng = seed ? seed : 0x9E3779B9u; }

uint32_t if_q24(float p) { return (uint32_t)(p * 16777216.0f); }

void if_note_decision(if_state *s, int kept, float rate, int adapt, float step, float target)
{
    const float k = kept ? 1.0f : 0.0f;
    s->kept = s->kept + rate * (k - s->kept);
    if (adapt)
        s->cut = s->cut + step * (k - target);
}

void if_learn(if_state *s, const float f[IF_FEATURES], float score, float loss, float lr, float step, float target)
{
    if (!(s->tau > 0.0f))
        s->tau = loss;
    const float y = loss > s->tau ? 1.0f : 0.0f;
    const float err = fm_sigmoid(score) - y;
    for (int i = 0; i < IF_FEATURES; i++)
        s->w[i] = s->w[i] - lr * (err * f[i]);
    const float factor = y != 0.0f ? 1.0f + step * (1.0f - target) : 1.0f - step * target;
    s->tau = s->tau * factor;
}
