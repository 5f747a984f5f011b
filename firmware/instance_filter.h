/* Self-supervised instance filter (Wu et al., arXiv 2007.03213), in its smallest form: logistic regression
 * on three features of exit 0's served logits predicts whether training on a window would give a loss above an
 * adaptive threshold tau. tau tracks the quantile of the observed losses that makes a target fraction of them
 * "high"; the predictor learns online from the losses of the windows actually trained on; a window is kept
 * when its score reaches a cut that tracks the same target fraction of kept windows; a fraction epsilon of
 * predicted-easy windows is trained anyway so the predictor's mistakes get corrected.
 * Same arithmetic as codegen/train_reference.py; docs/training.md explains the choices. */
#ifndef MT_INSTANCE_FILTER_H
#define MT_INSTANCE_FILTER_H

#include <stdint.h>

#define IF_FEATURES 4 /* bias, top probability, margin to the second, sum of squared probabilities */

typedef struct {
    float w[IF_FEATURES];
    float tau;  /* loss threshold; 0 until the first trained window sets it */
    float kept; /* moving fraction of windows kept (reported) */
    uint32_t prng;
    float cut; /* a window is predicted hard when its score >= cut */
} if_state;

/* Features of n int8 logits (n <= 32), probabilities p_j = T_j / S from the exit's confidence table
 * (T_j = table[max - logit_j], S = sum T_j). */
void if_features(const int8_t *logits, int n, const uint32_t *table, float f[IF_FEATURES]);
/* The logistic score: >= 0 predicts a loss above the threshold. */
float if_score(const if_state *s, const float f[IF_FEATURES]);
/* xorshift32; the state is never 0. */
uint32_t if_prng_next(if_state *s);
void if_seed(if_state *s, uint32_t seed);
/* trunc(p * 2^24): compare with if_prng_next() >> 8. */
uint32_t if_q24(float p);
/* After one keep/drop decision: the moving kept fraction (rate) and, when adapt is set, the cut:
 * cut += step * (kept - target), so the kept fraction settles at target. */
void if_note_decision(if_state *s, int kept, float rate, int adapt, float step, float target);
/* Learn from a trained window's loss: label = loss > tau, one SGD step on the log loss, then tau is multiplied
 * by 1 + step * (1 - target) when the loss was above it, else by 1 - step * target (so a fraction target of the
 * observed losses lie above tau). */
void if_learn(if_state *s, const float f[IF_FEATURES], float score, float loss, float lr, float step, float target);

#endif
