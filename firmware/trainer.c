#include "trainer.h"

#include <math.h>
#include <string.h>

#include "board.h"
#include "fmath.h"

#define K MODEL_NUM_EXITS
#define ARENA_F(offset) ((float *)(model_arena + (offset)))
#define CHECK(call)                        \
    do {                                   \
        mt_status status_ = (call);        \
        if (status_ != MT_SUCCESS)         \
            return status_;                \
    } while (0)

extern const float tr_exit_scale[K];
extern const int32_t tr_exit_zero_point[K];

static tr_config cfg;
static tr_counters counters;
static int staging_valid;

/* What the current window has computed so far, per exit. */
static struct {
    uint8_t labelled, teacher;
    uint8_t serve_personal[K];
    int8_t generic_logits[K][MODEL_MAX_CLASSES];
    float personal_logits[K][MODEL_MAX_CLASSES];
    uint8_t generic_pred[K], personal_pred[K];
    uint32_t generic_conf[K], personal_conf[K];
} win;
static uint64_t extra_cost; /* heads computed before the prediction only to compare them (do no harm) */
static uint64_t window_start, prediction_end;

tr_state *trainer_state(void) { return (tr_state *)(model_arena + tr_state_offset); }
const tr_config *trainer_config(void) { return &cfg; }
const tr_counters *trainer_counters(void) { return &counters; }
float *trainer_params(int u) { return ARENA_F(tr_units[u].params_offset); }
uint8_t *trainer_staging(void) { return model_arena + tr_staging_offset; }
int trainer_staging_valid(void) { return staging_valid; }
void trainer_set_staging_valid(int valid) { staging_valid = valid; }

void trainer_reset_momentum(void)
{
    for (int u = 0; u < tr_num_units; u++)
        memset(ARENA_F(tr_units[u].momentum_offset), 0, sizeof(float) * tr_units[u].n_params);
}

static int finite_in(float v, float lo, float hi) { return fm_isfinite(v) && v >= lo && v <= hi; }

int trainer_set_config(const tr_config *c)
{
    const float big = 3.0e38f;
    int ok = finite_in(c->lr, 0, big) && finite_in(c->momentum, 0, 0.999999f) &&
             finite_in(c->weight_decay, 0, big) && finite_in(c->clip_norm, 0, big) &&
             finite_in(c->prune_keep, 1e-6f, 1) && finite_in(c->prune_weight_l1, 0, big) && c->prune_dense <= 1 &&
             c->filter_mode <= TR_FILTER_RANDOM && c->serve_mode <= TR_SERVE_GENERIC && c->adapt_thresholds <= 1 &&
             c->pseudo_threshold_q16 <= MODEL_Q16_ONE && finite_in(c->filter_keep, 0, 1) &&
             finite_in(c->filter_epsilon, 0, 1) && finite_in(c->filter_lr, 0, big) &&
             finite_in(c->filter_step, 0, 0.5f) && finite_in(c->filter_rate, 0, 1) && finite_in(c->dnh_rate, 0, 1) &&
             finite_in(c->agree_rate, 0, 1) && finite_in(c->agree_target, 0, 1) &&
             finite_in(c->threshold_step, 0, 1);
    for (int k = 0; k < K; k++)
        ok = ok && finite_in(c->threshold_min[k], 0, 1) && finite_in(c->threshold_max[k], c->threshold_min[k], 1) &&
             fm_isfinite(c->threshold[k]);
    if (!ok)
        return -1;
    cfg = *c;
    tr_state *s = trainer_state();
    for (int k = 0; k < K; k++) {
        float t = c->threshold[k];
        s->exits[k].threshold = t < c->threshold_min[k] ? c->threshold_min[k] : t > c->threshold_max[k] ? c->threshold_max[k] : t;
    }
    if_seed(&s->filter, c->seed);
    return 0;
}

void trainer_init(void)
{
    memset(&counters, 0, sizeof counters);
    for (int u = 0; u < tr_num_units; u++)
        memcpy(trainer_params(u), tr_units[u].init, sizeof(float) * tr_units[u].n_params);
    trainer_reset_momentum();
    tr_state *s = trainer_state();
    memset(s, 0, sizeof *s);
    for (int k = 0; k < K; k++)
        s->exits[k].agreement = 1.0f;
    trainer_set_config(&tr_default_config);
    staging_valid = 0;
}

uint8_t trainer_serving(int k)
{
    if (tr_exit_unit[k] < 0)
        return 255;
    if (cfg.serve_mode != TR_SERVE_AUTO)
        return cfg.serve_mode == TR_SERVE_PERSONALISED;
    const tr_exit_state *e = &trainer_state()->exits[k];
    return e->labelled >= cfg.dnh_min_labels && e->acc_personal >= e->acc_generic;
}

uint32_t trainer_threshold_q16(int k) { return (uint32_t)(trainer_state()->exits[k].threshold * 65536.0f); }

/* --- the forward pass, event by event ------------------------------------------------------------------ */

static void begin_window(const int8_t *input, int labelled, int teacher)
{
    staging_valid = 0; /* the arena is about to be reused */
    memset(model_step_cost, 0, sizeof(uint32_t) * MODEL_NUM_STEPS);
    if (input != model_input())
        memcpy(model_input(), input, MODEL_INPUT_SIZE);
    win.labelled = (uint8_t)labelled;
    win.teacher = (uint8_t)teacher;
    for (int k = 0; k < K; k++)
        win.serve_personal[k] = trainer_serving(k) == 1;
    extra_cost = 0;
}

static uint8_t served_pred(int k) { return win.serve_personal[k] ? win.personal_pred[k] : win.generic_pred[k]; }
static uint32_t served_conf(int k) { return win.serve_personal[k] ? win.personal_conf[k] : win.generic_conf[k]; }

static int need_generic(int k)
{
    return tr_exit_unit[k] < 0 || !win.serve_personal[k] || win.labelled || (win.teacher && k == K - 1);
}

static int need_personal(int k) { return tr_exit_unit[k] >= 0 && (win.serve_personal[k] || win.labelled); }

static void record_generic(int k)
{
    const int n = model_exit_classes[k];
    const int8_t *logits = model_exit_logits(k);
    memcpy(win.generic_logits[k], logits, (size_t)n);
    int best = 0;
    for (int j = 1; j < n; j++)
        if (logits[j] > logits[best])
            best = j;
    win.generic_pred[k] = (uint8_t)best;
    win.generic_conf[k] = model_exit_confidence_q16(k, logits);
}

static tl_input unit_input(const tr_unit *u)
{
    tl_input in = {0, (const int8_t *)(model_arena + u->input_offset), u->in_scale, u->in_zero_point};
    return in;
}

/* Forward through unit u's layers into the given buffers; returns the logits. */
static const float *unit_forward(const tr_unit *u, const uint32_t *outputs)
{
    const float *params = ARENA_F(u->params_offset);
    tl_input x = unit_input(u);
    for (int j = 0; j < u->n_layers; j++) {
        float *y = ARENA_F(outputs[j]);
        tl_forward(&u->layers[j], params, x, y);
        x.f = y;
        x.q = 0;
    }
    return x.f;
}

static void run_head(int unit)
{
    const tr_unit *u = &tr_units[unit];
    const int k = u->exit, n = model_exit_classes[k];
    const float *z = unit_forward(u, u->infer_offsets);
    memcpy(win.personal_logits[k], z, sizeof(float) * (size_t)n);
    win.personal_pred[k] = (uint8_t)fm_argmax(z, n);
    win.personal_conf[k] = fm_softmax(z, n, 0, -1, 0);
}

/* Runs events from *e. deciding: stop after the exit event that takes the window (its index in *taken);
 * force_exit >= 0 runs only what that exit needs. Always stops at the first training event. */
static mt_status run_events(int *e, int deciding, int force_exit, const uint32_t *thr, int *taken)
{
    for (; *e < tr_num_events; (*e)++) {
        const tr_event *ev = &tr_events[*e];
        if (ev->kind == TR_EV_TRAIN || ev->kind == TR_EV_CHECKPOINT)
            return MT_SUCCESS;
        if (ev->kind == TR_EV_STEP) {
            const int i = ev->arg, u = tr_step_unit[i], k = u >= 0 ? tr_units[u].exit : -1;
            if (force_exit >= 0 && !((model_step_exits_needing[i] >> force_exit) & 1u))
                continue;
            if (u >= 0 && !need_generic(k))
                continue;
            const uint64_t t0 = board_counter();
            CHECK(model_run_step(i));
            if (model_step_exit[i] != MODEL_NO_EXIT)
                record_generic(model_step_exit[i]);
            if (deciding && u >= 0 && win.serve_personal[k])
                extra_cost += board_counter() - t0;
        } else if (ev->kind == TR_EV_HEAD) {
            const int k = tr_units[ev->arg].exit;
            if ((force_exit >= 0 && force_exit != k) || !need_personal(k))
                continue;
            const uint64_t t0 = board_counter();
            run_head(ev->arg);
            if (deciding && !win.serve_personal[k])
                extra_cost += board_counter() - t0;
        } else if (deciding) {
            const int k = ev->arg;
            if (force_exit >= 0 ? k == force_exit : (k == K - 1 || served_conf(k) >= thr[k])) {
                *taken = k;
                (*e)++;
                return MT_SUCCESS;
            }
        }
    }
    return MT_SUCCESS;
}

mt_status trainer_classify(const int8_t *input, const model_exit_policy *policy, model_result *result)
{
    if (policy->force_exit >= K)
        return MT_ARG_ERROR;
    begin_window(input, 0, 0);
    int e = 0, k = -1;
    CHECK(run_events(&e, 1, policy->force_exit, policy->threshold_q16, &k));
    if (k < 0)
        return MT_ARG_ERROR;
    const int n = model_exit_classes[k];
    result->exit = (uint8_t)k;
    result->num_classes = (uint8_t)n;
    result->confidence_q16 = served_conf(k);
    for (int j = 0; j < n; j++)
        result->logits[j] = win.serve_personal[k]
                                ? fm_quantize(win.personal_logits[k][j], tr_exit_scale[k], tr_exit_zero_point[k])
                                : win.generic_logits[k][j];
    return MT_SUCCESS;
}

/* --- training ------------------------------------------------------------------------------------------ */

/* SGD with momentum and weight decay on one exit's parameters after norm clipping. Applied only if every new
 * weight and momentum value is finite (checked in a first pass that computes them without storing). */
static int sgd(float *w, float *v, const float *g, uint32_t n)
{
    float norm2 = 0.0f;
    for (uint32_t i = 0; i < n; i++)
        norm2 = norm2 + g[i] * g[i];
    const int scaled = cfg.clip_norm > 0.0f && norm2 > cfg.clip_norm * cfg.clip_norm;
    const float sc = scaled ? cfg.clip_norm / sqrtf(norm2) : 1.0f;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n; i++) {
            float gi = scaled ? g[i] * sc : g[i];
            gi = gi + cfg.weight_decay * w[i];
            const float vn = cfg.momentum * v[i] + gi;
            const float wn = w[i] - cfg.lr * vn;
            if (pass == 0) {
                if (!fm_isfinite(vn) || !fm_isfinite(wn))
                    return 0;
            } else {
                v[i] = vn;
                w[i] = wn;
            }
        }
    return 1;
}

/* Forward with saved activations, loss, backward with error-map pruning, update. Returns 0 when skipped. */
static int train_unit(int unit, int target, float *loss, tr_step_result *r)
{
    const tr_unit *u = &tr_units[unit];
    float *params = ARENA_F(u->params_offset);
    float *z = (float *)unit_forward(u, u->train_offsets);
    r->macs_forward += u->forward_macs;
    const tl_layer *last = &u->layers[u->n_layers - 1];
    const int n = last->out.c;
    for (int j = 0; j < n; j++)
        if (!fm_isfinite(z[j]))
            return 0;
    float p[MODEL_MAX_CLASSES];
    fm_softmax(z, n, p, target, loss);
    if (!fm_isfinite(*loss))
        return 0;
    for (int j = 0; j < n; j++) /* the error map overwrites the logits */
        z[j] = tl_gate(last->act, last->act_lo, last->act_hi, z[j], p[j] - (j == target ? 1.0f : 0.0f));
    const tl_prune prune = {cfg.prune_keep, cfg.prune_weight_l1, cfg.prune_dense};
    tl_macs macs = {0, 0};
    float *grad = ARENA_F(u->grad_offset), *scratch = ARENA_F(u->scratch_offset);
    for (int j = u->n_layers - 1; j >= 0; j--) {
        tl_input x = unit_input(u);
        float *dx = 0;
        uint8_t prev_act = TL_ACT_NONE;
        float lo = 0.0f, hi = 0.0f;
        if (j > 0) {
            const tl_layer *prev = &u->layers[j - 1];
            x.f = dx = ARENA_F(u->train_offsets[j - 1]);
            x.q = 0;
            prev_act = prev->act;
            lo = prev->act_lo;
            hi = prev->act_hi;
        }
        tl_backward(&u->layers[j], params, x, ARENA_F(u->train_offsets[j]), grad, dx, prev_act, lo, hi, &prune,
                    scratch, &macs);
    }
    r->macs_backward += macs.backward;
    r->macs_backward_dense += macs.backward_dense;
    return sgd(params, ARENA_F(u->momentum_offset), grad, u->n_params);
}

static void served_exit0_logits(float *z)
{
    const int n = model_exit_classes[0];
    for (int j = 0; j < n; j++)
        z[j] = win.serve_personal[0] ? win.personal_logits[0][j]
                                     : (float)((int32_t)win.generic_logits[0][j] - tr_exit_zero_point[0]) *
                                           tr_exit_scale[0];
}

static void adapt_thresholds(void)
{
    tr_state *s = trainer_state();
    const uint8_t final = served_pred(K - 1);
    for (int k = 0; k < K - 1; k++) {
        tr_exit_state *e = &s->exits[k];
        const float agree = served_pred(k) == final ? 1.0f : 0.0f;
        e->agreement = e->agreement + cfg.agree_rate * (agree - e->agreement);
        if (cfg.adapt_thresholds) {
            float t = e->agreement >= cfg.agree_target ? e->threshold - cfg.threshold_step
                                                       : e->threshold + cfg.threshold_step;
            const float lo = cfg.threshold_min[k], hi = cfg.threshold_max[k];
            e->threshold = t < lo ? lo : t > hi ? hi : t;
        }
    }
}

static mt_status train_window(const int8_t *input, int has_label, int label, int invalid, tr_step_result *r)
{
    tr_state *s = trainer_state();
    counters.windows++;
    uint32_t saturated = 0; /* counted before the forward pass reuses the input's memory */
    for (int i = 0; i < MODEL_INPUT_SIZE; i++)
        saturated += input[i] == -128 || input[i] == 127;
    begin_window(input, has_label, 1);
    uint32_t thr[K];
    for (int k = 0; k < K; k++)
        thr[k] = trainer_threshold_q16(k);
    int e = 0, taken = -1;
    CHECK(run_events(&e, 1, -1, thr, &taken));
    prediction_end = board_counter();
    r->exit = (uint8_t)taken;
    r->prediction = served_pred(taken);
    r->confidence_q16 = served_conf(taken);
    r->target = TR_NO_CLASS;
    r->flags = win.serve_personal[taken] ? TR_STEP_PERSONALISED : 0;
    r->outcome = TR_TRAINED;
    if (invalid) {
        counters.invalid++;
        r->outcome = TR_INVALID;
        return MT_SUCCESS;
    }
    if (saturated > cfg.max_saturated) {
        counters.saturated++;
        r->outcome = TR_SATURATED;
        return MT_SUCCESS;
    }
    /* Instance filter on exit 0's served logits. */
    float features[IF_FEATURES] = {0}, score = 0.0f;
    if (cfg.filter_mode == TR_FILTER_LEARNED) {
        float z[MODEL_MAX_CLASSES];
        served_exit0_logits(z);
        if_features(z, model_exit_classes[0], features);
        score = if_score(&s->filter, features);
        r->filter_score = score;
        if (score >= s->filter.cut)
            r->flags |= TR_STEP_PREDICTED_HARD;
    }
    if (!has_label && cfg.filter_mode != TR_FILTER_OFF) {
        int keep;
        if (cfg.filter_mode == TR_FILTER_LEARNED) {
            keep = score >= s->filter.cut;
            if (!keep && (if_prng_next(&s->filter) >> 8) < if_q24(cfg.filter_epsilon)) {
                keep = 1;
                r->flags |= TR_STEP_EXPLORED;
                counters.explored++;
            }
        } else {
            keep = (if_prng_next(&s->filter) >> 8) < if_q24(cfg.filter_keep);
        }
        if_note_decision(&s->filter, keep, cfg.filter_rate, cfg.filter_mode == TR_FILTER_LEARNED, cfg.filter_step,
                         cfg.filter_keep);
        if (!keep) {
            counters.filtered++;
            r->outcome = TR_FILTERED;
            return MT_SUCCESS;
        }
    }
    /* The rest of the forward: every exit's served head, the generic final exit (the teacher). */
    CHECK(run_events(&e, 0, -1, thr, &taken));
    int target = -1;
    if (has_label) {
        target = label;
        counters.labelled++;
        r->flags |= TR_STEP_LABEL;
    } else if (win.generic_conf[K - 1] >= cfg.pseudo_threshold_q16) {
        target = win.generic_pred[K - 1];
        counters.pseudo_labelled++;
        r->flags |= TR_STEP_PSEUDO;
    }
    if (has_label)
        for (int k = 0; k < K; k++) {
            if (tr_exit_unit[k] < 0)
                continue;
            tr_exit_state *es = &s->exits[k];
            const float cp = win.personal_pred[k] == target ? 1.0f : 0.0f;
            const float cg = win.generic_pred[k] == target ? 1.0f : 0.0f;
            es->acc_personal = es->acc_personal + cfg.dnh_rate * (cp - es->acc_personal);
            es->acc_generic = es->acc_generic + cfg.dnh_rate * (cg - es->acc_generic);
            es->labelled++;
        }
    adapt_thresholds();
    if (target < 0) {
        counters.no_target++;
        r->outcome = TR_NO_TARGET;
        return MT_SUCCESS;
    }
    r->target = (uint8_t)target;
    float loss_sum = 0.0f;
    int n_loss = 0, skipped = 0;
    for (int u = 0; u < tr_num_units; u++) {
        float loss = 0.0f;
        if (train_unit(u, target, &loss, r)) {
            loss_sum = loss_sum + loss;
            n_loss++;
        } else {
            skipped = 1;
            counters.nonfinite++;
        }
    }
    r->loss = n_loss ? loss_sum / (float)n_loss : 0.0f;
    counters.macs_forward += r->macs_forward;
    counters.macs_backward += r->macs_backward;
    counters.macs_backward_dense += r->macs_backward_dense;
    counters.trained++;
    r->outcome = skipped ? TR_NONFINITE : TR_TRAINED;
    if (cfg.filter_mode == TR_FILTER_LEARNED && !skipped)
        if_learn(&s->filter, features, score, r->loss, cfg.filter_lr, cfg.filter_step, cfg.filter_keep);
    return MT_SUCCESS;
}

mt_status trainer_train(const int8_t *input, int has_label, int label, int invalid, tr_step_result *r)
{
    memset(r, 0, sizeof *r);
    if (has_label && (label < 0 || label >= model_exit_classes[K - 1]))
        return MT_ARG_ERROR;
    window_start = prediction_end = board_counter();
    mt_status status = train_window(input, has_label, label, invalid, r);
    /* The prediction's cost: up to the exit taken, less heads computed only for the do-no-harm comparison;
     * everything else is the cost of training. */
    const uint64_t end = board_counter(), predict = prediction_end - window_start - extra_cost;
    const uint64_t train = end - prediction_end + extra_cost;
    r->cost_inference = predict > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)predict;
    r->cost_training = train > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)train;
    return status;
}
