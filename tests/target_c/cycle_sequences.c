/*
 * Instruction sequences of known Cortex-M4 cost (the TRM's instruction timings and load/store pairing rules), for
 * tests/test_cycle_model.py: each seq_* function's body is the counted range (its `bx lr` sits in the separate
 * tail_* function after it), and main() brackets every call with hx_mark() for the counting plugin.
 */
#include <stdint.h>

#include "board.h"

__attribute__((noinline)) void hx_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

#define SEQ(name, body) \
    ".global seq_" #name "\n.type seq_" #name ", %function\n.p2align 2\nseq_" #name ":\n" body \
    ".size seq_" #name ", . - seq_" #name "\n.type tail_" #name ", %function\ntail_" #name ":\n\tbx lr\n" \
    ".size tail_" #name ", . - tail_" #name "\n"

__asm__(".syntax unified\n.thumb\n.text\n"
        SEQ(alu, "\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n"
                 "\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n\tadds r1, r1, #1\n")
        SEQ(ldr_chain, "\tldr r1, [r0]\n\tldr r2, [r0, #4]\n\tldr r3, [r0, #8]\n")
        SEQ(ldr_dependent, "\tldr r1, [r0]\n\tldr r2, [r1, #4]\n")
        SEQ(agu_stall, "\tadds r1, r0, #4\n\tldr r2, [r1]\n")
        SEQ(str_imm, "\tstr r1, [r0, #16]\n\tstr r1, [r0, #20]\n\tstr r1, [r0, #24]\n")
        SEQ(ldr_str, "\tldr r1, [r0, #4]\n\tstr r1, [r0, #20]\n\tmovs r2, #24\n\tldr r3, [r0]\n\tstr r1, [r0, r2]\n")
        SEQ(ldrd_ldm, "\tldrd r1, r2, [r0]\n\tldm r0, {r1, r2, r3}\n\tldr r1, [r0, #4]\n")
        SEQ(push_pop, "\tpush {r4, r5, r6, r7}\n\tpop {r4, r5, r6, r7}\n")
        SEQ(dsp, "\tsmlad r1, r2, r3, r1\n\tsmull r1, r2, r3, r12\n\tmla r1, r2, r3, r1\n\tsxtb16 r1, r2\n"
                 "\tssat r1, #8, r2\n\tsel r1, r2, r3\n\tqadd r1, r2, r3\n\tmovs r3, #7\n\tsdiv r1, r2, r3\n")
        SEQ(loop, "\tmovs r1, #4\n1:\tsubs r1, #1\n\tbne 1b\n")
        SEQ(loop_wide_target, "\tmovs r1, #4\n1:\tsubs.w r1, r1, #1\n\tbne 1b\n")
        SEQ(call, "\tpush {lr}\n\tbl seq_leaf\n\tpop {pc}\n")
        ".global seq_leaf\n.type seq_leaf, %function\n.p2align 2\nseq_leaf:\n\tadds r1, r1, #1\n\tbx lr\n"
        ".size seq_leaf, . - seq_leaf\n"
        SEQ(fpu, "\tvldr s0, [r0, #4]\n\tvadd.f32 s1, s0, s0\n\tvmla.f32 s1, s0, s0\n\tvdiv.f32 s2, s1, s0\n"
                 "\tvsqrt.f32 s3, s1\n\tvstr s2, [r0, #8]\n\tvmov r1, s2\n"));

void seq_alu(uint32_t *p);
void seq_ldr_chain(uint32_t *p);
void seq_ldr_dependent(uint32_t *p);
void seq_agu_stall(uint32_t *p);
void seq_str_imm(uint32_t *p);
void seq_ldr_str(uint32_t *p);
void seq_ldrd_ldm(uint32_t *p);
void seq_push_pop(uint32_t *p);
void seq_dsp(uint32_t *p);
void seq_loop(uint32_t *p);
void seq_loop_wide_target(uint32_t *p);
void seq_call(uint32_t *p);
void seq_fpu(uint32_t *p);

static uint32_t data[16] __attribute__((aligned(8)));

int main(void)
{
    static void (*const seqs[])(uint32_t *) = {seq_alu, seq_ldr_chain, seq_ldr_dependent, seq_agu_stall,
                                               seq_str_imm, seq_ldr_str, seq_ldrd_ldm, seq_push_pop, seq_dsp,
                                               seq_loop, seq_loop_wide_target, seq_call, seq_fpu};
    board_init();
    data[0] = (uint32_t)(uintptr_t)data;
    data[1] = 0x3F800000u; /* 1.0f */
    for (uint32_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        hx_mark();
        seqs[i](data);
        hx_mark();
    }
    board_uart_write((const uint8_t *)"DONE\n", 5);
    return 0;
}
