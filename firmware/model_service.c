/* CLASSIFY: run the compiled model on one int8 input and report the exit taken, its logits, its
 * confidence and the cost. Layouts are in docs/protocol.md. */
#include "model_service.h"

#include <string.h>

#include "board.h"
#include "model.h"
#ifdef MT_HAVE_TRAINER
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

void model_service_init(void)
{
    init_status = model_init();
#ifdef MT_HAVE_TRAINER
    trainer_init();
    protocol_set_restored(persist_restore());
#endif
    protocol_set_model_hash(model_hash, MODEL_HASH_BYTES);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Request: i8 force_exit (-1: thresholds), u8 n (0 or MODEL_NUM_EXITS), n x u32 threshold (Q16),
 *          int8 input[MODEL_INPUT_SIZE] (NHWC).
 * Reply:   u8 exit, u8 num_classes, u32 confidence (Q16), u32 cost, int8 logits[num_classes]. */
static int handle_classify(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    if (init_status != MT_SUCCESS)
        return -ERR_MODEL_FAILED;
    if (len < 2)
        return -ERR_BAD_PAYLOAD;
    model_exit_policy policy;
    policy.force_exit = (int8_t)payload[0];
    int n = payload[1];
    if ((n != 0 && n != MODEL_NUM_EXITS) || policy.force_exit >= MODEL_NUM_EXITS || policy.force_exit < -1 ||
        len != 2 + 4 * n + MODEL_INPUT_SIZE)
        return -ERR_BAD_PAYLOAD;
    for (int k = 0; k < MODEL_NUM_EXITS; k++)
        policy.threshold_q16[k] = n ? get_u32(payload + 2 + 4 * k) : DEFAULT_THRESHOLD(k);
    const int8_t *input = (const int8_t *)(payload + 2 + 4 * n);

    model_result result;
    uint64_t start = board_counter();
    mt_status status = RUN_MODEL(input, &policy, &result);
    uint64_t cost = board_counter() - start;
    if (status != MT_SUCCESS)
        return -ERR_MODEL_FAILED;
    reply[0] = result.exit;
    reply[1] = result.num_classes;
    put_u32(reply + 2, result.confidence_q16);
    put_u32(reply + 6, cost > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)cost);
    memcpy(reply + 10, result.logits, result.num_classes);
    return 10 + result.num_classes;
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
#ifdef MT_HAVE_TRAINER
    {MSG_TRAIN, handle_train},
    {MSG_CONFIG, handle_config},
    {MSG_STATS, handle_stats},
    {MSG_CHECKPOINT_GET, handle_checkpoint_get},
    {MSG_CHECKPOINT_PUT, handle_checkpoint_put},
    {MSG_PERSIST, handle_persist},
#endif
};
const size_t model_route_count = sizeof model_routes / sizeof model_routes[0];
