/*
 * On-target kernel harness: runs every case of the generated table hx_cases.h, prints one line per case
 *   R <index> <status> <fnv1a-32 of the output, hex>
 * then "DONE" and exits with 0. Each kernel call sits between two calls of hx_mark(), where the instruction
 * counting plugin (mcu_train/insn_count.py) takes its snapshots. Built twice by the tests: DSP path and
 * -DMT_FORCE_REFERENCE.
 */
#include <stdint.h>

#include "board.h"
#include "hx_cases.h"
#include "mt_kernels.h"

static int8_t hx_input[HX_MAX_INPUT];
static int8_t hx_input2[HX_MAX_INPUT];
static int8_t hx_filter[HX_MAX_FILTER];
static int8_t hx_output[HX_MAX_OUTPUT] __attribute__((aligned(4)));
static uint32_t hx_scratch[(HX_SCRATCH_BYTES + 3) / 4 + 1];
static uint32_t hx_state;

/* xorshift32: the same generator as mcu_train/kernel_harness.py:XorShift32 */
static uint32_t hx_next(void)
{
    uint32_t x = hx_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    hx_state = x;
    return x;
}

static void hx_fill(int8_t *p, int32_t n, int weights)
{
    for (int32_t i = 0; i < n; i++) {
        int8_t v = (int8_t)(hx_next() >> 24);
        if (weights && v == -128) {
            v = -127;
        }
        p[i] = v;
    }
}

/* The counting plugin snapshots its count whenever this function's first instruction executes. */
__attribute__((noinline)) void hx_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

static int32_t hx_size(const mt_dims *d)
{
    return d->n * d->h * d->w * d->c;
}

static void hx_puts(const char *s)
{
    int32_t n = 0;
    while (s[n]) {
        n++;
    }
    board_uart_write((const uint8_t *)s, (size_t)n);
}

static void hx_put_int(int32_t v)
{
    char buf[12];
    int32_t i = 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0) {
        buf[--i] = '-';
    }
    hx_puts(buf + i);
}

static void hx_put_hex(uint32_t v)
{
    char buf[9];
    for (int32_t i = 7; i >= 0; i--) {
        buf[i] = "0123456789abcdef"[v & 15u];
        v >>= 4;
    }
    buf[8] = 0;
    hx_puts(buf);
}

/* Random (acc, multiplier, shift) triples, every fourth one built from edge values; results as int32. */
static int32_t hx_requantize(int32_t n)
{
    static const int32_t edges[8] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, 1 << 30, INT32_MAX - 1, INT32_MAX};
    int32_t *out = (int32_t *)(void *)hx_output;
    for (int32_t i = 0; i < n; i++) {
        int32_t acc = (int32_t)hx_next();
        int32_t mult = (int32_t)hx_next();
        const int32_t shift = (int32_t)(hx_next() % 62u) - 31;
        if ((i & 3) == 0) {
            acc = edges[hx_next() & 7u];
            mult = edges[hx_next() & 7u];
        }
        out[i] = mt_requantize(acc, mult, shift);
    }
    return MT_SUCCESS;
}

static int32_t hx_run(const hx_case *c)
{
    const mt_per_channel_quant_params q = {c->multiplier, c->shift};
    switch (c->op) {
    case HX_CONV: {
        const mt_conv_params p = {c->input_offset, c->output_offset, c->stride, c->padding, {1, 1}, c->activation,
                                  c->packed};
        const int32_t need = c->packed ? mt_conv_s8_get_packed_buffer_size(&c->input, &c->filter)
                                       : mt_conv_s8_get_buffer_size(&c->input, &c->filter);
        if (need > HX_SCRATCH_BYTES) {
            return -99;
        }
        const mt_context ctx = {hx_scratch, need};
        return mt_conv_s8(&ctx, &p, &q, &c->input, hx_input, &c->filter, hx_filter, c->bias, &c->output,
                          hx_output);
    }
    case HX_DEPTHWISE: {
        const mt_dw_conv_params p = {c->input_offset, c->output_offset, c->ch_mult, c->stride, c->padding, {1, 1},
                                     c->activation};
        const int32_t need = mt_depthwise_conv_s8_get_buffer_size(&c->input, &c->filter);
        if (need > HX_SCRATCH_BYTES) {
            return -99;
        }
        const mt_context ctx = {hx_scratch, need};
        return mt_depthwise_conv_s8(&ctx, &p, &q, &c->input, hx_input, &c->filter, hx_filter, c->bias, &c->output,
                                    hx_output);
    }
    case HX_FC: {
        const mt_fc_params p = {c->input_offset, c->output_offset, c->activation};
        const mt_context ctx = {0, 0};
        return mt_fully_connected_s8(&ctx, &p, &q, &c->input, hx_input, &c->filter, hx_filter, c->bias,
                                     &c->output, hx_output);
    }
    case HX_MAX_POOL: {
        const mt_pool_params p = {c->stride, c->padding, c->activation};
        return mt_max_pool_s8(&p, &c->input, hx_input, &c->filter, &c->output, hx_output);
    }
    case HX_AVG_POOL: {
        const mt_avg_pool_params p = {c->stride, c->padding, c->activation, c->input_offset, c->output_offset,
                                      c->multiplier, c->shift, c->num_multipliers};
        return mt_avg_pool_s8(&p, &c->input, hx_input, &c->filter, &c->output, hx_output);
    }
    case HX_ADD:
        return mt_add_s8(&c->add, hx_input, hx_input2, hx_output, hx_size(&c->input));
    case HX_RELU:
        return mt_relu_s8(&c->activation, hx_input, hx_output, hx_size(&c->input));
    case HX_REQUANTIZE:
        return hx_requantize(c->input.n);
    default:
        return -98;
    }
}

int main(void)
{
    board_init();
    hx_puts("HARNESS " MT_BOARD_NAME
#if MT_USE_DSP
            " dsp\n"
#else
            " reference\n"
#endif
    );
    for (int32_t i = 0; i < HX_NUM_CASES; i++) {
        const hx_case *c = &hx_cases[i];
        hx_state = c->seed;
        if (c->op != HX_REQUANTIZE) {
            hx_fill(hx_input, hx_size(&c->input), 0);
        }
        if (c->op == HX_ADD) {
            hx_fill(hx_input2, hx_size(&c->input), 0);
        }
        if (c->op == HX_CONV || c->op == HX_DEPTHWISE || c->op == HX_FC) {
            hx_fill(hx_filter, hx_size(&c->filter), 1);
        }
        const int32_t out_size = hx_size(&c->output);
        for (int32_t j = 0; j < out_size; j++) {
            hx_output[j] = 0;
        }
        hx_mark();
        const int32_t status = hx_run(c);
        hx_mark();
        uint32_t h = 2166136261u; /* FNV-1a */
        for (int32_t j = 0; j < out_size; j++) {
            h = (h ^ (uint8_t)hx_output[j]) * 16777619u;
        }
        hx_puts("R ");
        hx_put_int(i);
        hx_puts(" ");
        hx_put_int(status);
        hx_puts(" ");
        hx_put_hex(h);
        hx_puts("\n");
    }
    hx_puts("DONE\n");
    board_exit(0);
}
