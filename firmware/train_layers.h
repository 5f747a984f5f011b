/* Float32 layers of the on-device trainer: forward, and backward with error-map pruning.
 * Layout is channels-last (NHWC, N = 1); conv filters are OHWI, a dense layer is a 1x1 conv over one
 * position. The loop orders are part of the specification (docs/training.md): codegen/train_reference.py
 * follows them so both give the same bits. */
#ifndef MT_TRAIN_LAYERS_H
#define MT_TRAIN_LAYERS_H

#include <stdint.h>

#include "mt_kernels.h"

enum { TL_CONV = 0, TL_MAXPOOL = 1, TL_AVGPOOL = 2, TL_ACT = 3 };
enum { TL_ACT_NONE = 0, TL_ACT_RELU = 1, TL_ACT_CLIP = 2 };

typedef struct {
    uint8_t kind;
    uint8_t act;   /* activation on the output */
    uint8_t dense; /* a dense layer: pruned only when tl_prune.dense is set */
    uint16_t kh, kw, sh, sw, pad_t, pad_l;
    float act_lo, act_hi; /* TL_ACT_CLIP bounds */
    mt_dims in, out;
    uint32_t w, b; /* offsets (in floats) of the filter and bias in the unit's parameter vector */
} tl_layer;

/* A layer input: float, or int8 dequantised on the fly as (q - zero_point) * scale. */
typedef struct {
    const float *f;
    const int8_t *q;
    float scale;
    int32_t zero_point;
} tl_input;

typedef struct {
    float keep;      /* fraction of output channels kept, (0, 1] */
    float weight_l1; /* channel score = L1(error map) + weight_l1 * L1(filter) */
    uint8_t dense;   /* prune dense layers too */
} tl_prune;

typedef struct {
    uint32_t backward;       /* MACs executed */
    uint32_t backward_dense; /* MACs without pruning */
} tl_macs;

/* y = act(layer(x)). */
void tl_forward(const tl_layer *l, const float *params, tl_input x, float *y);

/* e: error at the layer's output, already gated by its activation. Writes the layer's weight and bias
 * gradients into grad (zeros for pruned channels). If dx is not NULL, writes the error at the input gated by
 * the previous layer's activation (prev_act, whose output is x.f); dx may be the same memory as x.f.
 * scratch: 2 * out.c floats. */
void tl_backward(const tl_layer *l, const float *params, tl_input x, const float *e, float *grad, float *dx,
                 uint8_t prev_act, float prev_lo, float prev_hi, const tl_prune *prune, float *scratch,
                 tl_macs *macs);

/* v if the activation that produced y passes the gradient, else 0. */
float tl_gate(uint8_t act, float lo, float hi, float y, float v);

#endif
