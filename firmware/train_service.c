#include "train_service.h"

#include <string.h>

#include "checkpoint.h"
#include "model_service.h"
#include "persist.h"
#include "protocol.h"
#include "trainer.h"

#define K MODEL_NUM_EXITS
#define TRAIN_FLAG_LABEL 0x01u
#define TRAIN_FLAG_INVALID 0x02u

/* Little-endian field writer / reader. */
typedef struct {
    uint8_t *p;
} wr;
typedef struct {
    const uint8_t *p;
} rd;

static void w_u8(wr *w, uint8_t v) { *w->p++ = v; }
static void w_u16(wr *w, uint16_t v) { w_u8(w, (uint8_t)v); w_u8(w, (uint8_t)(v >> 8)); }
static void w_u32(wr *w, uint32_t v) { w_u16(w, (uint16_t)v); w_u16(w, (uint16_t)(v >> 16)); }
static void w_u64(wr *w, uint64_t v) { w_u32(w, (uint32_t)v); w_u32(w, (uint32_t)(v >> 32)); }
static void w_f32(wr *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    w_u32(w, v);
}
static uint8_t r_u8(rd *r) { return *r->p++; }
static uint16_t r_u16(rd *r)
{
    uint16_t v = (uint16_t)(r->p[0] | (r->p[1] << 8));
    r->p += 2;
    return v;
}
static uint32_t r_u32(rd *r)
{
    uint32_t v = (uint32_t)r_u16(r);
    return v | ((uint32_t)r_u16(r) << 16);
}
static float r_f32(rd *r)
{
    uint32_t v = r_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* Request: u8 flags (bit 0 label, bit 1 invalid readings), u8 label, int8 input[MODEL_INPUT_SIZE] or no input
 * bytes (the staged input). */
/* The TRAIN (and LABEL) reply. */
static int step_to_wire(const tr_step_result *r, uint8_t *reply)
{
    wr w = {reply};
    w_u8(&w, r->outcome);
    w_u8(&w, r->exit);
    w_u8(&w, r->prediction);
    w_u8(&w, r->target);
    w_u8(&w, r->flags);
    w_u32(&w, r->confidence_q16);
    w_f32(&w, r->loss);
    w_f32(&w, r->filter_score);
    w_u32(&w, r->cost_inference);
    w_u32(&w, r->cost_training);
    w_u32(&w, r->macs_forward);
    w_u32(&w, r->macs_backward);
    w_u32(&w, r->macs_backward_dense);
    return (int)(w.p - reply);
}

int handle_train(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    const uint32_t staged = model_service_unstage_input(); /* training reuses the arena */
    checkpoint_interrupt();
    if (len < 2 || (payload[0] & ~(TRAIN_FLAG_LABEL | TRAIN_FLAG_INVALID)))
        return -ERR_BAD_PAYLOAD;
    const int has_label = payload[0] & TRAIN_FLAG_LABEL;
    if (has_label && payload[1] >= model_exit_classes[K - 1])
        return -ERR_BAD_PAYLOAD;
    const int8_t *input;
    const int err = model_service_pick_input(payload + 2, len - 2, staged, &input);
    if (err)
        return err;
    tr_step_result r;
    if (trainer_train(input, has_label, payload[1], payload[0] & TRAIN_FLAG_INVALID, &r) != MT_SUCCESS)
        return -ERR_MODEL_FAILED;
    persist_after_train();
    return step_to_wire(&r, reply);
}

/* Request: u8 label, u32 age (TRAIN requests since the one whose reply asked). Reply: as TRAIN's. */
int handle_label(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    model_service_unstage_input(); /* training reuses the arena */
    checkpoint_interrupt();
    if (len != 5)
        return -ERR_BAD_PAYLOAD;
    rd r = {payload};
    const int label = r_u8(&r);
    const uint32_t age = r_u32(&r);
    tr_step_result step;
    const int refused = trainer_label(label, age, &step);
    if (refused == TR_LABEL_BAD_CLASS)
        return -ERR_BAD_PAYLOAD;
    if (refused > 0)
        return -MT_ERROR_WITH_DETAIL(ERR_NOT_ASKED, refused);
    if (refused < 0)
        return -ERR_MODEL_FAILED;
    persist_after_train();
    return step_to_wire(&step, reply);
}

int train_config_to_wire(uint8_t *out)
{
    const tr_config *c = trainer_config();
    const tr_state *s = trainer_state();
    wr w = {out};
    const float head[6] = {c->lr, c->momentum, c->weight_decay, c->clip_norm, c->prune_keep, c->prune_weight_l1};
    for (int i = 0; i < 6; i++)
        w_f32(&w, head[i]);
    w_u8(&w, c->prune_dense);
    w_u8(&w, c->filter_mode);
    w_u8(&w, c->serve_mode);
    w_u8(&w, c->adapt_thresholds);
    w_u32(&w, c->pseudo_threshold_q16);
    w_u16(&w, c->max_saturated);
    w_u16(&w, c->dnh_min_labels);
    w_u32(&w, c->seed);
    const float tail[9] = {c->filter_keep, c->filter_epsilon, c->filter_lr, c->filter_step, c->filter_rate,
                           c->dnh_rate, c->agree_rate, c->agree_target, c->threshold_step};
    for (int i = 0; i < 9; i++)
        w_f32(&w, tail[i]);
    w_u32(&w, c->persist_every);
    w_f32(&w, c->label_budget);
    w_u32(&w, c->replays);
    for (int k = 0; k < K; k++) {
        w_f32(&w, s->exits[k].threshold); /* the current (adapted) threshold */
        w_f32(&w, c->threshold_min[k]);
        w_f32(&w, c->threshold_max[k]);
    }
    return (int)(w.p - out);
}

int train_config_from_wire(const uint8_t *payload, uint16_t len)
{
    if (len != TRAIN_CONFIG_BYTES)
        return -1;
    tr_config c;
    rd r = {payload};
    c.lr = r_f32(&r);
    c.momentum = r_f32(&r);
    c.weight_decay = r_f32(&r);
    c.clip_norm = r_f32(&r);
    c.prune_keep = r_f32(&r);
    c.prune_weight_l1 = r_f32(&r);
    c.prune_dense = r_u8(&r);
    c.filter_mode = r_u8(&r);
    c.serve_mode = r_u8(&r);
    c.adapt_thresholds = r_u8(&r);
    c.pseudo_threshold_q16 = r_u32(&r);
    c.max_saturated = r_u16(&r);
    c.dnh_min_labels = r_u16(&r);
    c.seed = r_u32(&r);
    c.filter_keep = r_f32(&r);
    c.filter_epsilon = r_f32(&r);
    c.filter_lr = r_f32(&r);
    c.filter_step = r_f32(&r);
    c.filter_rate = r_f32(&r);
    c.dnh_rate = r_f32(&r);
    c.agree_rate = r_f32(&r);
    c.agree_target = r_f32(&r);
    c.threshold_step = r_f32(&r);
    c.persist_every = r_u32(&r);
    c.label_budget = r_f32(&r);
    c.replays = r_u32(&r);
    for (int k = 0; k < K; k++) {
        c.threshold[k] = r_f32(&r);
        c.threshold_min[k] = r_f32(&r);
        c.threshold_max[k] = r_f32(&r);
    }
    return trainer_set_config(&c);
}

/* Empty request: read. Otherwise the whole configuration (same layout as the reply) is validated and set. */
int handle_config(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    if (len != 0 && train_config_from_wire(payload, len) != 0)
        return -ERR_BAD_PAYLOAD;
    return train_config_to_wire(reply);
}

int handle_stats(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    (void)payload;
    if (len != 0)
        return -ERR_BAD_PAYLOAD;
    const tr_counters *c = trainer_counters();
    const tr_state *s = trainer_state();
    wr w = {reply};
    const uint32_t counts[10] = {c->windows, c->trained, c->filtered, c->no_target, c->saturated, c->invalid,
                                 c->skipped_updates, c->labelled, c->pseudo_labelled, c->explored};
    for (int i = 0; i < 10; i++)
        w_u32(&w, counts[i]);
    w_u64(&w, c->macs_forward);
    w_u64(&w, c->macs_backward);
    w_u64(&w, c->macs_backward_dense);
    w_f32(&w, s->filter.tau);
    w_f32(&w, s->filter.kept);
    w_f32(&w, s->filter.cut);
    for (int i = 0; i < IF_FEATURES; i++)
        w_f32(&w, s->filter.w[i]);
    w_u8(&w, K);
    for (int k = 0; k < K; k++) {
        const tr_exit_state *e = &s->exits[k];
        w_f32(&w, e->threshold);
        w_f32(&w, e->agreement);
        w_f32(&w, e->acc_personal);
        w_f32(&w, e->acc_generic);
        w_u32(&w, e->labelled);
        w_u8(&w, trainer_serving(k));
    }
    return (int)(w.p - reply);
}

/* Request: u32 offset, u16 max bytes. Reply: u32 total image size, u32 offset, the bytes. */
int handle_checkpoint_get(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    if (len != 6)
        return -ERR_BAD_PAYLOAD;
    rd r = {payload};
    const uint32_t offset = r_u32(&r), total = checkpoint_size();
    uint32_t n = r_u16(&r);
    if (offset > total)
        return -ERR_BAD_PAYLOAD;
    if (n > MT_MAX_PAYLOAD - 8)
        n = MT_MAX_PAYLOAD - 8;
    if (n > total - offset)
        n = total - offset;
    wr w = {reply};
    w_u32(&w, total);
    w_u32(&w, offset);
    checkpoint_read(offset, w.p, n);
    return (int)(8 + n);
}

/* Request: u32 total image size, u32 offset, the bytes. Reply: u32 bytes staged, u8 committed. */
int handle_checkpoint_put(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    model_service_unstage_input(); /* a checkpoint pass and a staged input never mix (docs/protocol.md) */
    if (len < 8)
        return -ERR_BAD_PAYLOAD;
    rd r = {payload};
    const uint32_t total = r_u32(&r), offset = r_u32(&r);
    uint32_t staged = 0;
    int committed = 0;
    int reason = checkpoint_put(total, offset, payload + 8, len - 8u, &staged, &committed);
    if (reason != CKPT_OK)
        return -MT_ERROR_WITH_DETAIL(ERR_BAD_CHECKPOINT, reason);
    wr w = {reply};
    w_u32(&w, staged);
    w_u8(&w, (uint8_t)committed);
    return 5;
}
