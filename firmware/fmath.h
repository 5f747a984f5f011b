/* float32 arithmetic of the on-device trainer, bit for bit equal to codegen/fmath.py: our own exp and log
 * (Cephes' float polynomials, fixed evaluation order), sequential sums, no fused multiply-add (the
 * firmware is built with -ffp-contract=off). See docs/training.md. */
#ifndef MT_FMATH_H
#define MT_FMATH_H

#include <stdint.h>

/* exp(x) for x <= 0; 0 below -87. */
float fm_expf(float x);
/* log(x) for positive normal x. */
float fm_logf(float x);
/* 1 / (1 + exp(-s)), evaluating exp only at non-positive arguments. */
float fm_sigmoid(float s);
/* 1 when x is neither infinite nor NaN. */
int fm_isfinite(float x);
/* Index of the first largest of n values. */
int fm_argmax(const float *z, int n);

/* Softmax of n logits into p (may be NULL). Returns the confidence (top probability) in Q16;
 * when target >= 0 also writes the cross-entropy log(sum) - (z[target] - max) to *loss. */
uint32_t fm_softmax(const float *z, int n, float *p, int target, float *loss);

/* float -> int8 with the exit's scale and zero point: trunc(z / scale +- 0.5) + zero point, saturated. */
int8_t fm_quantize(float z, float scale, int32_t zero_point);

#endif
