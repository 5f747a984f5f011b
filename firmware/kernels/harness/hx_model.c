/*
 * Whole-model cost harness (mcu_train/bench/model_cost.py): runs a model compiled by `mcu-train compile` (its
 * model.c) on a pseudo-random input without the serial protocol. Every step runs once between two calls of
 * hx_mark(), then the whole model_run() along the path through every exit (no early exit passes) between two
 * more, so the counting plugin sees each layer and the model. Prints "S <status>" and "L <logits, hex>".
 */
#include <stdint.h>

#include "board.h"
#include "model.h"

__attribute__((noinline)) void hx_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

static void hx_puts(const char *s)
{
    int32_t n = 0;
    while (s[n]) {
        n++;
    }
    board_uart_write((const uint8_t *)s, (size_t)n);
}

/* xorshift32 from HX_SEED, the top byte of each draw: mcu_train/bench/kernel_harness.py:XorShift32.int8 */
static void hx_fill_input(void)
{
    uint32_t x = HX_SEED;
    int8_t *in = model_input();
    for (int32_t i = 0; i < MODEL_INPUT_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        in[i] = (int8_t)(x >> 24);
    }
}

int main(void)
{
    board_init();
    mt_status status = model_init();
    hx_fill_input();
    for (int i = 0; i < MODEL_NUM_STEPS && status == MT_SUCCESS; i++) {
        hx_mark();
        status = model_run_step(i);
        hx_mark();
    }
    model_exit_policy policy = {-1, {0}};
    for (int k = 0; k < MODEL_NUM_EXITS - 1; k++) {
        policy.threshold_q16[k] = 0xFFFFFFFFu; /* above 1.0: no early exit passes */
    }
    model_result result;
    hx_fill_input(); /* the steps above may have reused the input's arena bytes */
    hx_mark();
    if (status == MT_SUCCESS) {
        status = model_run(model_input(), &policy, &result);
    }
    hx_mark();
    hx_puts(status == MT_SUCCESS ? "S 0\nL " : "S -1\nL ");
    for (int i = 0; status == MT_SUCCESS && i < result.num_classes; i++) {
        char hex[3] = {"0123456789abcdef"[(uint8_t)result.logits[i] >> 4],
                       "0123456789abcdef"[(uint8_t)result.logits[i] & 15u], 0};
        hx_puts(hex);
    }
    hx_puts("\n");
    return 0;
}
