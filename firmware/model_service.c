/* CLASSIFY: run the compiled model on one int8 input and report the exit taken, its logits, its
 * confidence and the cost. MODEL_INFO: the model's input and exits. INPUT_PUT: an input larger than a frame,
 * staged chunk by chunk in the arena's input buffer. Layouts are in docs/protocol.md. */
#include "model_service.h"

#include <string.h>

#include "board.h"
#include "model.h"
#ifdef MT_HAVE_TRAINER
#include "checkpoint.h"
#include "persist.h"
#include "train_service.h"
#include "trainer.h"
/* With a trainer, CLASSIFY serves the personalised heads where do-no-harm allows, and its default
 * thresholds are the board's adapted ones. */
#define RUN_MODEL trainer_classify
#define DEFAULT_THRESHOLD(k) trainer_threshold_q16(k)
#else
#define RUN_MODEL model_run
#define DEFAULT_THRESHOLD(k) DEFAULT_THRESHOLD_Q16
#endif

#define DEFAULT_THRESHOLD_Q16 58982u /* 0.9 */

static mt_status init_status;
/* Bytes of the model input staged by INPUT_PUT, from offset 0, in the arena's input buffer (model_input()). */
static uint32_t input_staged;

void model_service_init(void)
{
    init_status = model_init();
#ifdef MT_HAVE_TRAINER
    trainer_init();
    protocol_set_restored(persist_restore());
#endif
    protocol_set_model_hash(model_hash, MODEL_HASH_BYTES);
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_f32(uint8_t *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(p, v);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint32_t model_service_unstage_input(void)
{
    const uint32_t staged = input_staged;
    input_staged = 0;
    return staged;
}

int model_service_pick_input(const uint8_t *bytes, int32_t n, uint32_t staged, const int8_t **input)
{
    if (n == MODEL_INPUT_SIZE)
        *input = (const int8_t *)bytes;
    else if (n == 0 && staged == MODEL_INPUT_SIZE)
        *input = model_input(); /* the staged bytes are already where the model reads its input */
    else
        return n == 0 ? -ERR_NO_INPUT : -ERR_BAD_PAYLOAD;
    return 0;
}

/* Request: i8 force_exit (-1: thresholds), u8 n (0 or MODEL_NUM_EXITS), n x u32 threshold (Q16),
 *          int8 input[MODEL_INPUT_SIZE] (NHWC), or no input bytes: the staged input.
 * Reply:   u8 exit, u8 num_classes, u32 confidence (Q16), u32 cost, int8 logits[num_classes]. */
static int handle_classify(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    const uint32_t staged = model_service_unstage_input(); /* running the model reuses the arena */
#ifdef MT_HAVE_TRAINER
    checkpoint_interrupt();
#endif
    if (init_status != MT_SUCCESS)
        return -ERR_MODEL_FAILED;
    if (len < 2)
        return -ERR_BAD_PAYLOAD;
    model_exit_policy policy;
    policy.force_exit = (int8_t)payload[0];
    int n = payload[1];
    if ((n != 0 && n != MODEL_NUM_EXITS) || policy.force_exit >= MODEL_NUM_EXITS || policy.force_exit < -1 ||
        len < 2 + 4 * n)
        return -ERR_BAD_PAYLOAD;
    const int8_t *input;
    int err = model_service_pick_input(payload + 2 + 4 * n, len - (2 + 4 * n), staged, &input);
    if (err)
        return err;
    for (int k = 0; k < MODEL_NUM_EXITS; k++)
        policy.threshold_q16[k] = n ? get_u32(payload + 2 + 4 * k) : DEFAULT_THRESHOLD(k);

    model_result result;
    uint64_t start = board_counter();
    mt_status status = RUN_MODEL(input, &policy, &result);
    uint64_t cost = board_counter() - start;
    if (status != MT_SUCCESS || result.num_classes > 255)
        return -ERR_MODEL_FAILED; /* more outputs than the reply's u8 count can carry: refused, not truncated */
    reply[0] = result.exit;
    reply[1] = result.num_classes;
    put_u32(reply + 2, result.confidence_q16);
    put_u32(reply + 6, cost > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)cost);
    memcpy(reply + 10, result.logits, result.num_classes);
    return 10 + result.num_classes;
}

/* Request: u32 offset, the chunk. Reply: u32 bytes staged. Chunks come in order from offset 0 (which starts a
 * new input); a refused request discards the staged bytes. */
static int handle_input_put(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
#ifdef MT_HAVE_TRAINER
    checkpoint_interrupt(); /* staging an input ends a checkpoint pass, as CLASSIFY and TRAIN do */
#endif
    if (len < 4) {
        input_staged = 0;
        return -ERR_BAD_PAYLOAD;
    }
    const uint32_t offset = get_u32(payload), n = len - 4u;
    if (offset == 0)
        input_staged = 0;
    const int check = offset != input_staged ? INPUT_CHUNK_BAD_OFFSET
                      : n > MODEL_INPUT_SIZE - offset ? INPUT_CHUNK_PAST_END : 0;
    if (check) {
        input_staged = 0;
        return -MT_ERROR_WITH_DETAIL(ERR_BAD_INPUT_CHUNK, check);
    }
    memcpy(model_input() + offset, payload + 4, n);
    input_staged += n;
    put_u32(reply, input_staged);
    return 4;
}

/* Reply: u32 input size, 4 x u16 input dims (N, H, W, C), f32 input scale, i8 input zero point, u8 flags,
 * u8 exits, then per exit: u16 outputs, f32 scale, i8 zero point. */
static int handle_model_info(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    (void)payload;
    if (len != 0)
        return -ERR_BAD_PAYLOAD;
    put_u32(reply, MODEL_INPUT_SIZE);
    for (int i = 0; i < 4; i++)
        put_u16(reply + 4 + 2 * i, model_input_dims[i]);
    put_f32(reply + 12, model_input_scale);
    reply[16] = (uint8_t)model_input_zero_point;
#ifdef MT_HAVE_TRAINER
    reply[17] = MODEL_INFO_FLAG_TRAINER;
#else
    reply[17] = 0;
#endif
    reply[18] = MODEL_NUM_EXITS;
    uint8_t *p = reply + 19;
    for (int k = 0; k < MODEL_NUM_EXITS; k++, p += 7) {
        put_u16(p, model_exit_classes[k]);
        put_f32(p + 2, model_exit_scale[k]);
        p[6] = (uint8_t)model_exit_zero_point[k];
    }
    return (int)(p - reply);
}

/* Reply: u32 cost of each kernel step of the last CLASSIFY, in schedule order. */
static int handle_profile(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    (void)payload;
    if (len != 0 || 4 * MODEL_NUM_STEPS > MT_MAX_PAYLOAD)
        return -ERR_BAD_PAYLOAD;
    for (int i = 0; i < MODEL_NUM_STEPS; i++)
        put_u32(reply + 4 * i, model_step_cost[i]);
    return 4 * MODEL_NUM_STEPS;
}

const mt_route model_routes[] = {
    {MSG_CLASSIFY, handle_classify},
    {MSG_PROFILE, handle_profile},
    {MSG_MODEL_INFO, handle_model_info},
    {MSG_INPUT_PUT, handle_input_put},
#ifdef MT_HAVE_TRAINER
    {MSG_TRAIN, handle_train},
    {MSG_CONFIG, handle_config},
    {MSG_STATS, handle_stats},
    {MSG_CHECKPOINT_GET, handle_checkpoint_get},
    {MSG_CHECKPOINT_PUT, handle_checkpoint_put},
    {MSG_LABEL, handle_label},
    {MSG_PERSIST, handle_persist},
#endif
};
const size_t model_route_count = sizeof model_routes / sizeof model_routes[0];
