/* The backward pass of the on-device trainer, in integers (docs/training.md): per layer of a unit, from the
 * error at its output to the error at its input, and for conv / dense layers the gradient of each kept output
 * channel, applied to its int8 weights at once. Activations are the int8 tensors the
 * personalised head's forward left in the arena; error maps are int16 values (|e| <= 2^14) with one float
 * scale per map. codegen/train_reference.py follows the same arithmetic, so both give the same bits. */
#ifndef MT_TRAIN_LAYERS_H
#define MT_TRAIN_LAYERS_H

#include <stdint.h>

#include "mt_kernels.h"

enum { TL_CONV = 0, TL_MAXPOOL = 1, TL_AVGPOOL = 2, TL_ACT = 3 };
enum { TL_ACT_NONE = 0, TL_ACT_RELU = 1, TL_ACT_CLIP = 2 };

/* One layer of a unit: the int8 step that computes it, and what its backward needs (generated tables). */
typedef struct {
    uint8_t kind;
    uint8_t act;   /* the gate of its backward: relu passes y > act_min, clip act_min < y < act_max */
    uint8_t dense; /* a dense layer: pruned only when tl_hyper.prune_dense is set */
    int8_t act_min, act_max;
    uint8_t step;
    uint16_t kh, kw, sh, sw, pad_t, pad_l;
    mt_dims in, out;
    uint32_t in_offset, out_offset; /* arena offsets of its int8 input and output */
    int32_t in_zp;
    float in_scale, out_scale;
    float bound; /* largest magnitude a weight or bias of this layer may take */
    float keep_max; /* pruning keeps at most this fraction of its channels (unless prune_keep is 1: no pruning) */
    uint32_t w, ch; /* first weight and first channel in the unit's arrays */
} tl_layer;

/* A unit's personalised head in RAM (its params buffer: firmware/trainer.c unit_params): per weight the int8
 * weight the kernels read and training updates; per channel its weight scale, int32 bias (scale in_scale *
 * weight scale), and the kernels' multiplier and shift. */
typedef struct {
    float *scale;
    int32_t *bias, *mult, *shift;
    int8_t *w;
    int16_t *vw; /* momentum, in the weights' units; NULL unless compiled with --momentum */
    int32_t *vb;
} tl_params;

/* An error map: int16 values with real value sigma * e; broadcast: one value per channel for every position. */
typedef struct {
    int16_t *e;
    uint8_t broadcast;
    float sigma;
} tl_error;

typedef struct {
    float lr, momentum, weight_decay, clip_norm, prune_keep, prune_weight_l1;
    uint8_t prune_dense;
} tl_hyper;

/* Scratch of one unit's training event (planned in the arena). */
typedef struct {
    int32_t *input_error; /* conv / dense input errors before scaling */
    int16_t *fold;        /* the output error weighted by each channel's scale */
    int32_t *row;         /* one output channel's gradient, then its new master values */
    float *scores;        /* error-map pruning */
    uint8_t *kept;
} tl_work;

typedef struct {
    uint32_t backward, backward_dense; /* MACs executed, and without pruning */
    uint32_t skipped;                  /* channel updates skipped: a value would have left its bound */
} tl_stats;

/* Error map of n int32 values of scale sigma, as int16 with |e| <= 2^14 (block floating point). */
void tl_normalise(const int32_t *v, int32_t n, float sigma, tl_error *out);

/* Backward of layer l: out is the error at its output (not yet gated by its activation); writes the error at
 * its input into in (unless NULL: the unit's first layer), and updates the kept channels of a conv / dense
 * layer. Reads the layer's int8 input and output from arena. */
void tl_backward(const tl_layer *l, const uint8_t *arena, const tl_params *p, const tl_error *out, tl_error *in,
                 const tl_hyper *h, const tl_work *w, tl_stats *st);

#endif
