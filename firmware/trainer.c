#include "trainer.h"

#include <string.h>

#include "board.h"
#include "checkpoint.h"
#include "fmath.h"

#define K MODEL_NUM_EXITS
#define DNH_WINS 1 /* do no harm: the personalised head's lead needed to serve, in steps of the moving accuracies */
/* When examples are replayed they are evidence too; the personalised head has trained on them, so its
 * lead must be larger (docs/RESULTS.md "Replayed examples as do-no-harm evidence"). */
#define DNH_WINS_REPLAY 2
#define CHECK(call)                        \
    do {                                   \
        mt_status status_ = (call);        \
        if (status_ != MT_SUCCESS)         \
            return status_;                \
    } while (0)

static tr_config cfg;
static tr_counters counters;

/* What the current window has computed so far. Both heads of a unit write the same buffers: the generic one
 * always runs first, so the buffers hold the personalised activations the backward needs. */
static struct {
    uint8_t labelled;
    uint8_t serve_personal[K];
    uint8_t has_generic[K], has_personal[K];
    int8_t generic[K][MODEL_MAX_CLASSES], personal[K][MODEL_MAX_CLASSES];
    uint8_t personal_valid[K]; /* per unit: its buffers hold the personalised head's activations */
    uint8_t ran[MODEL_NUM_STEPS];
} win;
static uint64_t extra_cost; /* heads computed before the prediction only to compare them (do no harm) */
static uint64_t window_start, prediction_end;

tr_state *trainer_state(void) { return (tr_state *)(model_arena + tr_state_offset); }
const tr_config *trainer_config(void) { return &cfg; }
const tr_counters *trainer_counters(void) { return &counters; }
uint8_t *trainer_unit_params(int u) { return model_arena + tr_units[u].params_offset; }

/* The parts of unit u's params buffer (codegen/trainer.py param_layout) and its momentum. */
static tl_params unit_params(int u)
{
    const tr_unit *un = &tr_units[u];
    uint8_t *b = trainer_unit_params(u);
    const uint32_t c = un->n_channels;
    tl_params p = {(float *)b, (int32_t *)(b + 4 * c), (int32_t *)(b + 8 * c), (int32_t *)(b + 12 * c),
                   (int8_t *)(b + 16 * c), 0, 0};
    if (tr_momentum_compiled) {
        uint8_t *m = model_arena + un->momentum_offset;
        p.vw = (int16_t *)m;
        p.vb = (int32_t *)(m + ((2 * un->n_weights + 3) & ~3u));
    }
    return p;
}

/* --- the replay memory (codegen/trainer.py memory_layout) ----------------------------------------------- */

#define MEMORY_SEED 0x6D656D30u /* its PRNG starts from CONFIG's seed XOR this ("mem0") */
#define ASK_SPACING 4u          /* no new label request while an unanswered one is younger (windows) */
#define ASK_CREDIT_MAX 2.0f
#define ASK_STEP 0.02f
#define ASK_CUT_START 0.5f
typedef struct {
    uint32_t prng;
    float credit, cut;  /* label credit; the uncertainty score at which the board asks */
    uint32_t since_ask; /* TRAIN requests since the pending request */
} tr_memory_head;

uint8_t *trainer_memory(void) { return model_arena + tr_memory_offset; }
static tr_memory_head *mem_head(void) { return (tr_memory_head *)trainer_memory(); }
static uint8_t *mem_labels(void) { return trainer_memory() + sizeof(tr_memory_head); } /* slot S: pending */
static uint8_t *mem_masks(void) { return mem_labels() + tr_memory_slots + 1; }
static int8_t *mem_input(int slot, int u)
{
    return (int8_t *)(trainer_memory() + tr_memory_examples_offset + (uint32_t)slot * tr_memory_example_bytes +
                      tr_units[u].memory_offset);
}
static int8_t *unit_input(int u) { return (int8_t *)(model_arena + tr_units[u].layers[0].in_offset); }

static uint32_t mem_rand(void)
{
    uint32_t x = mem_head()->prng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    mem_head()->prng = x;
    return x;
}

static int mem_count(int c)
{
    int n = 0;
    for (int s = 0; s < tr_memory_slots; s++)
        n += mem_labels()[s] == c;
    return n;
}

/* The s-th (from 0) slot in slot order with this label, among those allowed (skip, unit bit). */
static int mem_nth(int label, int u, int skip, int nth)
{
    for (int s = 0; s < tr_memory_slots; s++)
        if (s != skip && mem_labels()[s] == label && (u < 0 || ((mem_masks()[s] >> u) & 1u)) && nth-- == 0)
            return s;
    return -1;
}

/* A labelled example into a free slot, else over a random example of the most frequent class (of its own
 * class when that is among the most frequent). Copies the units in mask from `from` (a slot) or, when
 * from < 0, from the arena. Returns the slot. */
static int mem_store(int label, uint8_t mask, int from)
{
    int slot = -1;
    for (int s = 0; s < tr_memory_slots && slot < 0; s++)
        if (mem_labels()[s] == TR_NO_CLASS)
            slot = s;
    if (slot < 0) {
        int c = 0, most = -1;
        for (int j = 0; j < model_exit_classes[K - 1]; j++) {
            const int n = mem_count(j);
            if (n > most)
                most = n, c = j;
        }
        if (mem_count(label) == most)
            c = label;
        slot = mem_nth(c, -1, -1, (int)(mem_rand() % (uint32_t)most));
    }
    mem_labels()[slot] = (uint8_t)label;
    mem_masks()[slot] = mask;
    for (int u = 0; u < tr_num_units; u++)
        if ((mask >> u) & 1u)
            memcpy(mem_input(slot, u), from < 0 ? unit_input(u) : mem_input(from, u), tr_units[u].input_bytes);
    return slot;
}

/* Class-balanced: a random class among the examples unit u can replay (not slot skip), then a random example
 * of it; -1 when there is none. */
static int mem_pick(int u, int skip)
{
    int counts[MODEL_MAX_CLASSES] = {0}, classes = 0;
    for (int s = 0; s < tr_memory_slots; s++)
        if (s != skip && mem_labels()[s] != TR_NO_CLASS && ((mem_masks()[s] >> u) & 1u))
            classes += counts[mem_labels()[s]]++ == 0;
    if (!classes)
        return -1;
    int pick = (int)(mem_rand() % (uint32_t)classes), c = 0;
    while (counts[c] == 0 || pick-- > 0)
        c++;
    return mem_nth(c, u, skip, (int)(mem_rand() % (uint32_t)counts[c]));
}

void trainer_reset_momentum(void)
{
    if (tr_momentum_compiled)
        for (int u = 0; u < tr_num_units; u++) {
            const tl_params p = unit_params(u);
            memset(p.vw, 0, 2 * tr_units[u].n_weights);
            memset(p.vb, 0, 4 * tr_units[u].n_channels);
        }
}

static int finite_in(float v, float lo, float hi) { return fm_isfinite(v) && v >= lo && v <= hi; }

int trainer_set_config(const tr_config *c)
{
    const float big = 3.0e38f;
    int ok = finite_in(c->lr, 0, big) && finite_in(c->momentum, 0, tr_momentum_compiled ? 0.999999f : 0.0f) &&
             finite_in(c->weight_decay, 0, big) && finite_in(c->clip_norm, 0, big) &&
             finite_in(c->prune_keep, 1e-6f, 1) && finite_in(c->prune_weight_l1, 0, big) && c->prune_dense <= 1 &&
             c->filter_mode <= TR_FILTER_GRADNORM && c->serve_mode <= TR_SERVE_GENERIC && c->adapt_thresholds <= 1 &&
             c->pseudo_threshold_q16 <= MODEL_Q16_ONE && finite_in(c->filter_keep, 0, 1) &&
             finite_in(c->filter_epsilon, 0, 1) && finite_in(c->filter_lr, 0, big) &&
             finite_in(c->filter_step, 0, 0.5f) && finite_in(c->filter_rate, 0, 1) && finite_in(c->dnh_rate, 0, 1) &&
             finite_in(c->agree_rate, 0, 1) && finite_in(c->agree_target, 0, 1) &&
             finite_in(c->threshold_step, 0, 1) && finite_in(c->label_budget, 0, 1) && c->replays <= 255;
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
    if (tr_memory_slots)
        mem_head()->prng = (c->seed ^ MEMORY_SEED) ? (c->seed ^ MEMORY_SEED) : 0x9E3779B9u;
    return 0;
}

void trainer_reset_weights(void)
{
    for (int u = 0; u < tr_num_units; u++)
        memcpy(trainer_unit_params(u), tr_units[u].init, tr_units[u].params_bytes);
    trainer_reset_momentum();
    tr_state *s = trainer_state();
    memset(s, 0, sizeof *s);
    for (int k = 0; k < K; k++)
        s->exits[k].agreement = 1.0f;
    if (tr_memory_slots) {
        memset(trainer_memory(), 0, tr_memory_bytes);
        memset(mem_labels(), TR_NO_CLASS, tr_memory_slots + 1u);
        mem_head()->cut = ASK_CUT_START;
    }
    trainer_set_config(&cfg);
}

void trainer_init(void)
{
    memset(&counters, 0, sizeof counters);
    cfg = tr_default_config;
    trainer_reset_weights();
}

uint8_t trainer_serving(int k)
{
    if (tr_exit_unit[k] < 0)
        return 255;
    if (cfg.serve_mode != TR_SERVE_AUTO)
        return cfg.serve_mode == TR_SERVE_PERSONALISED;
    /* Do no harm: the personalised head serves only with a lead of DNH_WINS steps of the moving accuracies, on
     * labelled evidence once the exit has dnh_min_labels labels, or before its first label on label-free
     * evidence (docs/training.md). */
    const tr_exit_state *e = &trainer_state()->exits[k];
    if (e->labelled > 0 && e->labelled < cfg.dnh_min_labels)
        return 0;
    const int replayed = tr_memory_slots && cfg.replays; /* replayed examples are evidence too */
    return e->acc_personal - e->acc_generic >= (float)(replayed ? DNH_WINS_REPLAY : DNH_WINS) * cfg.dnh_rate;
}

uint32_t trainer_threshold_q16(int k) { return (uint32_t)(trainer_state()->exits[k].threshold * 65536.0f); }

/* --- the forward pass ----------------------------------------------------------------------------------- */

static void begin_window(const int8_t *input, int labelled)
{
    checkpoint_interrupt(); /* the arena and the weights are about to be used */
    memset(model_step_cost, 0, sizeof(uint32_t) * MODEL_NUM_STEPS);
    memset(&win, 0, sizeof win);
    if (input != model_input())
        memcpy(model_input(), input, MODEL_INPUT_SIZE);
    win.labelled = (uint8_t)labelled;
    for (int k = 0; k < K; k++)
        win.serve_personal[k] = trainer_serving(k) == 1;
    extra_cost = 0;
}

static int argmax8(const int8_t *z, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (z[j] > z[best])
            best = j;
    return best;
}

/* Exit k's served logits, or NULL when this window has not computed them. */
static const int8_t *served(int k)
{
    if (win.serve_personal[k])
        return win.has_personal[k] ? win.personal[k] : 0;
    return win.has_generic[k] ? win.generic[k] : 0;
}

static mt_status run_step(int i)
{
    CHECK(model_run_step(i));
    win.ran[i] = 1;
    const int k = model_step_exit[i];
    if (k != MODEL_NO_EXIT) {
        memcpy(win.generic[k], model_exit_logits(k), model_exit_classes[k]);
        win.has_generic[k] = 1;
    }
    return MT_SUCCESS;
}

/* Unit u's steps with its generic (flash) or personalised (arena) weights; records its logits. */
static mt_status run_head(int u, int personal)
{
    const tr_unit *un = &tr_units[u];
    const tl_params p = unit_params(u);
    for (int j = 0; j < un->n_layers; j++) {
        const tl_layer *l = &un->layers[j];
        const model_weights w = {p.w + l->w, p.bias + l->ch, p.mult + l->ch, p.shift + l->ch};
        CHECK(model_run_step_with(un->first_step + j, personal && l->kind == TL_CONV ? &w : 0));
    }
    const int k = un->exit;
    memcpy(personal ? win.personal[k] : win.generic[k], model_exit_logits(k), model_exit_classes[k]);
    *(personal ? &win.has_personal[k] : &win.has_generic[k]) = 1;
    win.personal_valid[u] = (uint8_t)personal;
    return MT_SUCCESS;
}

/* The early-exit prediction with the served heads: runs events from 0 up to the exit event that takes the
 * window (force_exit >= 0: only what that exit needs, up to it). On a labelled window whose exit serves its
 * personalised head the generic head runs first, for the do-no-harm comparison (counted as training). */
static mt_status predict(int force_exit, const uint32_t *thr, int *taken)
{
    for (int e = 0; e < tr_num_events; e++) {
        const tr_event *ev = &tr_events[e];
        if (ev->kind == TR_EV_STEP) {
            if (force_exit < 0 || ((model_step_exits_needing[ev->arg] >> force_exit) & 1u))
                CHECK(run_step(ev->arg));
        } else if (ev->kind == TR_EV_HEAD) {
            const int k = tr_units[ev->arg].exit;
            if (force_exit >= 0 && force_exit != k)
                continue;
            if (win.serve_personal[k] && win.labelled) {
                const uint64_t t0 = board_counter();
                CHECK(run_head(ev->arg, 0));
                extra_cost += board_counter() - t0;
            }
            CHECK(run_head(ev->arg, win.serve_personal[k]));
        } else if (ev->kind == TR_EV_EXIT) {
            const int k = ev->arg;
            if (force_exit >= 0 ? k == force_exit
                                : k == K - 1 || model_exit_confidence_q16(k, served(k)) >= thr[k]) {
                *taken = k;
                return MT_SUCCESS;
            }
        }
    }
    return MT_ARG_ERROR;
}

/* What a stage of training needs beyond what the window has computed, in schedule order: the backbone steps
 * the exits in `exits` (bit k) need, the generic heads of the exits in `generic`, and the personalised head of
 * every unit in `units` whose buffers do not hold it (its MACs count as macs_forward). A head may so run after
 * later steps: the memory plan keeps its kernels' scratch clear of everything alive until training. */
static mt_status complete(uint32_t exits, uint32_t generic, uint32_t units, uint32_t *macs_forward)
{
    const uint32_t mask = exits | generic;
    for (int e = 0; e < tr_num_events; e++) {
        const tr_event *ev = &tr_events[e];
        if (ev->kind == TR_EV_STEP) {
            if (!win.ran[ev->arg] && (model_step_exits_needing[ev->arg] & mask))
                CHECK(run_step(ev->arg));
        } else if (ev->kind == TR_EV_HEAD) {
            const int u = ev->arg, k = tr_units[u].exit;
            if (((generic >> k) & 1u) && !win.has_generic[k])
                CHECK(run_head(u, 0));
            if (((units >> u) & 1u) && !win.personal_valid[u]) {
                CHECK(run_head(u, 1));
                *macs_forward += tr_units[u].forward_macs;
            }
        }
    }
    return MT_SUCCESS;
}

mt_status trainer_classify(const int8_t *input, const model_exit_policy *policy, model_result *result)
{
    if (policy->force_exit >= K)
        return MT_ARG_ERROR;
    begin_window(input, 0);
    int k = -1;
    CHECK(predict(policy->force_exit, policy->threshold_q16, &k));
    const int8_t *logits = served(k);
    const int n = model_exit_classes[k];
    result->exit = (uint8_t)k;
    result->num_classes = (uint8_t)n;
    result->confidence_q16 = model_exit_confidence_q16(k, logits);
    memcpy(result->logits, logits, (size_t)n);
    return MT_SUCCESS;
}

/* --- training ------------------------------------------------------------------------------------------ */

/* The error p - onehot(target) at exit k's int8 logits, with p_j = T_j / S from the exit's confidence table
 * (T_j = table[max z - z_j], S = sum T_j), as integers 2^30 p_j - 2^30 [j == target]; returns the
 * cross-entropy log S - log T_target (T at least 1). */
static float logits_error(int k, const int8_t *z, int target, int32_t *e)
{
    uint32_t t[MODEL_MAX_CLASSES];
    const int n = model_exit_classes[k];
    const uint32_t s = fm_table_softmax(z, n, model_exit_table(k), t);
    for (int j = 0; j < n; j++)
        e[j] = (int32_t)(((uint64_t)t[j] << 30) / s);
    e[target] -= (int32_t)1 << 30;
    return fm_logf((float)s) - fm_logf((float)(t[target] ? t[target] : 1u));
}

/* Backward through unit u's layers from its head's activations, each channel's update applied as its
 * gradient is produced. Returns the loss. */
static float train_unit(int u, int target, tr_step_result *r, uint32_t *skipped)
{
    const tr_unit *un = &tr_units[u];
    const tl_params p = unit_params(u);
    const tl_hyper h = {cfg.lr, cfg.momentum, cfg.weight_decay, cfg.clip_norm, cfg.prune_keep, cfg.prune_weight_l1,
                        cfg.prune_dense};
    const tl_work w = {(int32_t *)(model_arena + un->input_error_offset), (int16_t *)(model_arena + un->fold_offset),
                       (int32_t *)(model_arena + un->row_offset), (float *)(model_arena + un->scores_offset),
                       model_arena + un->kept_offset};
    tl_error maps[2] = {{(int16_t *)(model_arena + un->error_offset[0]), 0, 0.0f},
                        {(int16_t *)(model_arena + un->error_offset[1]), 0, 0.0f}};
    int32_t e[MODEL_MAX_CLASSES];
    const int last = un->n_layers - 1;
    const float loss = logits_error(un->exit, model_exit_logits(un->exit), target, e);
    tl_normalise(e, model_exit_classes[un->exit], fx_pow2(-30), &maps[last % 2]);
    tl_stats st = {0, 0, 0};
    for (int j = last; j >= 0; j--)
        tl_backward(&un->layers[j], model_arena, &p, &maps[j % 2], j > 0 ? &maps[(j - 1) % 2] : 0, &h, &w, &st);
    r->macs_backward += st.backward;
    r->macs_backward_dense += st.backward_dense;
    *skipped += st.skipped;
    return loss;
}

/* Per early exit: agreement of its served head with the final exit's, when this window computed both. */
static void adapt_thresholds(void)
{
    tr_state *s = trainer_state();
    const int8_t *final = served(K - 1);
    if (!final)
        return;
    const int final_pred = argmax8(final, model_exit_classes[K - 1]);
    for (int k = 0; k < K - 1; k++) {
        const int8_t *mine = served(k);
        if (!mine)
            continue;
        tr_exit_state *e = &s->exits[k];
        const float agree = argmax8(mine, model_exit_classes[k]) == final_pred ? 1.0f : 0.0f;
        e->agreement = e->agreement + cfg.agree_rate * (agree - e->agreement);
        if (cfg.adapt_thresholds) {
            float t = e->agreement >= cfg.agree_target ? e->threshold - cfg.threshold_step
                                                       : e->threshold + cfg.threshold_step;
            const float lo = cfg.threshold_min[k], hi = cfg.threshold_max[k];
            e->threshold = t < lo ? lo : t > hi ? hi : t;
        }
    }
}

/* Every TRAIN (codegen/train_reference.py _note_window, _ask): the label credit grows by label_budget. An
 * unlabelled window, filtered or not, before any training (which reuses the arena) asks for its label when a
 * credit is there, no recent request waits, and its uncertainty score (1 - confidence, + 1/2 for a class the memory has few examples of, + 1/2 when the exits
 * computed disagree) reaches the adaptive cut. Its units' inputs go to the pending slot. */
static void note_window(void)
{
    tr_memory_head *h = mem_head();
    if (mem_masks()[tr_memory_slots] && h->since_ask < 0xFFFFFFFFu)
        h->since_ask++;
    const float credit = h->credit + cfg.label_budget;
    h->credit = credit < ASK_CREDIT_MAX ? credit : ASK_CREDIT_MAX;
}

static void ask(tr_step_result *r)
{
    tr_memory_head *h = mem_head();
    const int pending = tr_memory_slots;
    if (!pending || !(h->credit >= 1.0f) || (mem_masks()[pending] && h->since_ask < ASK_SPACING))
        return;
    float score = 1.0f - (float)r->confidence_q16 * (1.0f / 65536.0f);
    if (mem_count(r->prediction) * model_exit_classes[K - 1] < tr_memory_slots)
        score = score + 0.5f;
    int disagree = 0;
    for (int k = 0; k < K; k++) {
        const int8_t *z = served(k);
        disagree |= z && argmax8(z, model_exit_classes[k]) != r->prediction;
    }
    if (disagree)
        score = score + 0.5f;
    const int asked = score >= h->cut;
    h->cut = h->cut + ASK_STEP * (asked ? 3.0f : -1.0f);
    if (!asked)
        return;
    h->credit = h->credit - 1.0f;
    uint8_t mask = 0;
    for (int u = 0; u < tr_num_units; u++)
        if (tr_units[u].exit <= r->exit) {
            mask |= (uint8_t)(1u << u);
            memcpy(mem_input(pending, u), unit_input(u), tr_units[u].input_bytes);
        }
    mem_masks()[pending] = mask;
    h->since_ask = 0;
    r->flags |= TR_STEP_ASKED;
}

/* Do-no-harm bookkeeping of exit k: is each head's prediction the target? A pseudo-label is evidence only until
 * the exit's first label, which replaces that label-free estimate. */
static void note_evidence(int k, int target, int has_label)
{
    const int n = model_exit_classes[k];
    tr_exit_state *es = &trainer_state()->exits[k];
    if (has_label && es->labelled == 0)
        es->acc_personal = es->acc_generic = 0.0f;
    const float cp = argmax8(win.personal[k], n) == target ? 1.0f : 0.0f;
    const float cg = argmax8(win.generic[k], n) == target ? 1.0f : 0.0f;
    es->acc_personal = es->acc_personal + cfg.dnh_rate * (cp - es->acc_personal);
    es->acc_generic = es->acc_generic + cfg.dnh_rate * (cg - es->acc_generic);
    if (has_label)
        es->labelled++;
}

/* After training on a labelled example (in slot skip): per unit in mask, cfg.replays examples of the memory
 * through both heads, as do-no-harm evidence, and the same backward (their MACs count as training). */
static mt_status replay(uint8_t mask, int skip, tr_step_result *r, uint32_t *skipped)
{
    for (int u = 0; u < tr_num_units; u++)
        for (uint32_t j = 0; ((mask >> u) & 1u) && j < cfg.replays; j++) {
            const int s = mem_pick(u, skip);
            if (s < 0)
                break;
            memcpy(unit_input(u), mem_input(s, u), tr_units[u].input_bytes);
            CHECK(run_head(u, 0));
            CHECK(run_head(u, 1));
            r->macs_forward += 2 * tr_units[u].forward_macs;
            counters.macs_forward += 2 * tr_units[u].forward_macs;
            note_evidence(tr_units[u].exit, mem_labels()[s], 1);
            train_unit(u, mem_labels()[s], r, skipped);
        }
    return MT_SUCCESS;
}

static mt_status label_pending(int label, tr_step_result *r, uint32_t *skipped)
{
    const int pending = tr_memory_slots;
    const uint8_t mask = mem_masks()[pending];
    float loss_sum = 0.0f;
    int n = 0;
    for (int u = 0; u < tr_num_units; u++)
        if ((mask >> u) & 1u) {
            memcpy(unit_input(u), mem_input(pending, u), tr_units[u].input_bytes);
            CHECK(run_head(u, 0));
            CHECK(run_head(u, 1));
            r->macs_forward += 2 * tr_units[u].forward_macs;
            counters.macs_forward += 2 * tr_units[u].forward_macs;
            note_evidence(tr_units[u].exit, label, 1);
            loss_sum = loss_sum + train_unit(u, label, r, skipped);
            n++;
        }
    const int slot = mem_store(label, mask, pending);
    mem_masks()[pending] = 0;
    CHECK(replay(mask, slot, r, skipped));
    r->loss = loss_sum / (float)n;
    return MT_SUCCESS;
}

int trainer_label(int label, uint32_t age, tr_step_result *r)
{
    memset(r, 0, sizeof *r);
    if (!tr_memory_slots || !mem_masks()[tr_memory_slots])
        return TR_LABEL_NOT_PENDING;
    if (age != mem_head()->since_ask)
        return TR_LABEL_OTHER_WINDOW;
    if (label < 0 || label >= model_exit_classes[K - 1])
        return TR_LABEL_BAD_CLASS;
    const uint64_t t0 = board_counter();
    begin_window(model_input(), 1);
    counters.labelled++;
    r->outcome = TR_TRAINED;
    r->exit = r->prediction = TR_NO_CLASS;
    r->target = (uint8_t)label;
    r->flags = TR_STEP_LABEL;
    uint32_t skipped = 0;
    if (label_pending(label, r, &skipped) != MT_SUCCESS)
        return -1;
    counters.macs_backward += r->macs_backward;
    counters.macs_backward_dense += r->macs_backward_dense;
    counters.skipped_updates += skipped;
    if (skipped)
        r->outcome = TR_SKIPPED;
    else
        counters.trained++;
    const uint64_t cost = board_counter() - t0;
    r->cost_training = cost > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)cost;
    return 0;
}

static mt_status train_window(const int8_t *input, int has_label, int label, int invalid, tr_step_result *r)
{
    tr_state *s = trainer_state();
    counters.windows++;
    if (tr_memory_slots)
        note_window();
    uint32_t saturated = 0; /* counted before the forward pass reuses the input's memory */
    for (int i = 0; i < MODEL_INPUT_SIZE; i++)
        saturated += input[i] == -128 || input[i] == 127;
    begin_window(input, has_label);
    uint32_t thr[K];
    for (int k = 0; k < K; k++)
        thr[k] = trainer_threshold_q16(k);
    int taken = -1;
    CHECK(predict(-1, thr, &taken));
    prediction_end = board_counter();
    const int8_t *logits = served(taken);
    r->exit = (uint8_t)taken;
    r->prediction = (uint8_t)argmax8(logits, model_exit_classes[taken]);
    r->confidence_q16 = model_exit_confidence_q16(taken, logits);
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
    const int scored = cfg.filter_mode == TR_FILTER_LEARNED || cfg.filter_mode == TR_FILTER_GRADNORM;
    if (scored) {
        if_features(served(0), model_exit_classes[0], model_exit_table(0), features);
        /* learned: the logistic score; gradnorm: |p - onehot(argmax p)|^2 = 1 - 2 p1 + sum p^2 */
        score = cfg.filter_mode == TR_FILTER_LEARNED ? if_score(&s->filter, features)
                                                     : (1.0f - 2.0f * features[1]) + features[3];
        r->filter_score = score;
        if (score >= s->filter.cut)
            r->flags |= TR_STEP_PREDICTED_HARD;
    }
    if (!has_label && cfg.filter_mode != TR_FILTER_OFF) {
        int keep;
        if (scored) {
            keep = score >= s->filter.cut;
            if (!keep && (if_prng_next(&s->filter) >> 8) < if_q24(cfg.filter_epsilon)) {
                keep = 1;
                r->flags |= TR_STEP_EXPLORED;
                counters.explored++;
            }
        } else {
            keep = (if_prng_next(&s->filter) >> 8) < if_q24(cfg.filter_keep);
        }
        if_note_decision(&s->filter, keep, cfg.filter_rate, scored, cfg.filter_step,
                         cfg.filter_keep);
        if (!keep) {
            counters.filtered++;
            ask(r);
            r->outcome = TR_FILTERED;
            return MT_SUCCESS;
        }
    }
    /* The target: the label, or the generic final exit's confident prediction (the teacher). */
    int target = -1;
    if (has_label) {
        target = label;
        counters.labelled++;
        r->flags |= TR_STEP_LABEL;
    } else { /* the rest of the network with every exit's served head (the teacher, and the agreements) */
        uint32_t generic = 1u << (K - 1), served_units = 0;
        for (int u = 0; u < tr_num_units; u++)
            if (win.serve_personal[tr_units[u].exit])
                served_units |= 1u << u;
        for (int k = 0; k < K; k++)
            if (!win.serve_personal[k])
                generic |= 1u << k;
        CHECK(complete((1u << K) - 1u, generic, served_units, &r->macs_forward));
        if (model_exit_confidence_q16(K - 1, win.generic[K - 1]) >= cfg.pseudo_threshold_q16) {
            target = argmax8(win.generic[K - 1], model_exit_classes[K - 1]);
            counters.pseudo_labelled++;
            r->flags |= TR_STEP_PSEUDO;
        }
    }
    /* Every unit trains, with its personalised head (and the generic heads the do-no-harm comparison needs): a
     * label is rare, so it teaches every exit and is evidence for every exit's guard. */
    uint32_t units = 0, exits = 0, evidence = 0;
    for (int u = 0; u < tr_num_units; u++) {
        units |= 1u << u;
        exits |= 1u << tr_units[u].exit;
        /* Do-no-harm evidence: labelled windows; on exits that never saw a label, the confident teacher's
         * pseudo-labels (label-free: the generic final exit always agrees with itself, so it keeps serving). */
        if (has_label || s->exits[tr_units[u].exit].labelled == 0)
            evidence |= 1u << u;
    }
    uint32_t evidence_exits = 0;
    for (int u = 0; u < tr_num_units; u++)
        if ((evidence >> u) & 1u)
            evidence_exits |= 1u << tr_units[u].exit;
    if (target >= 0) {
        CHECK(complete(exits, evidence_exits, units, &r->macs_forward));
        for (int u = 0; u < tr_num_units; u++)
            if ((evidence >> u) & 1u)
                note_evidence(tr_units[u].exit, target, has_label);
    }
    counters.macs_forward += r->macs_forward;
    adapt_thresholds();
    if (target < 0) {
        counters.no_target++;
        ask(r);
        r->outcome = TR_NO_TARGET;
        return MT_SUCCESS;
    }
    r->target = (uint8_t)target;
    int slot = -1;
    if (!has_label)
        ask(r);
    else if (tr_memory_slots) /* remember the example (replayed after training) */
        slot = mem_store(target, (uint8_t)units, -1);
    float loss_sum = 0.0f;
    uint32_t skipped = 0, trained_units = 0;
    for (int u = 0; u < tr_num_units; u++)
        if ((units >> u) & 1u) {
            loss_sum = loss_sum + train_unit(u, target, r, &skipped);
            trained_units++;
        }
    r->loss = trained_units ? loss_sum / (float)trained_units : 0.0f;
    if (slot >= 0)
        CHECK(replay((uint8_t)units, slot, r, &skipped));
    counters.macs_backward += r->macs_backward;
    counters.macs_backward_dense += r->macs_backward_dense;
    counters.skipped_updates += skipped;
    if (skipped) {
        r->outcome = TR_SKIPPED;
        return MT_SUCCESS;
    }
    counters.trained++;
    if (cfg.filter_mode == TR_FILTER_LEARNED)
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
    const uint64_t end = board_counter(), predict_cost = prediction_end - window_start - extra_cost;
    const uint64_t train = end - prediction_end + extra_cost;
    r->cost_inference = predict_cost > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)predict_cost;
    r->cost_training = train > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)train;
    return status;
}
