/*
 * QEMU TCG plugin: count guest instructions executed inside address ranges and estimate their Cortex-M4 cycles,
 * with snapshots at a marker.
 *
 *   qemu-system-arm ... -plugin insn_count.so,out=FILE[,range=LO:HI]...[,mark=ADDR]...
 *
 * range=LO:HI (hex or decimal, repeatable): count instructions whose address is in [LO, HI); with no range,
 *   every instruction counts.
 * mark=ADDR (up to 8): each time the instruction at one of them executes, "mark INSNS CYCLES" (the counts so far)
 *   is appended to FILE. At exit FILE gets "total INSNS CYCLES". Built at run time by mcu_train/bench/insn_count.py.
 * profile=1 (with ranges): at exit FILE also gets "insn ADDR COUNT CYCLES" for every counted instruction executed
 *   (the per-address profile a kernel is tuned with; CYCLES excludes the refill of taken branches).
 *
 * Instructions are counted when issued: a conditional instruction that fails its condition counts too.
 *
 * Estimated cycles: a Cortex-M4 timing model from the Technical Reference Manual (ARM DDI 0439, section 3.3:
 * the instruction set summary and the load/store timings), zero wait states. It is an estimate: QEMU runs no
 * pipeline, and DWT CYCCNT reads 0 under emulation, so it cannot be checked against a cycle counter here.
 *   - 1 cycle: data processing, shifts, MOVW/MOVT, bit field, extend, saturate, every multiply and multiply-
 *     accumulate (MUL, MLA, MLS, SMULL, UMLAL, SMLAD, SMLAxy, SMMUL, ...), SIMD (SXTB16, SADD16, SSUB8, SEL,
 *     QADD, ...), IT, NOP, compares. SDIV / UDIV: 2-12 depending on the operands; counted as 12 (the model
 *     cannot see operands).
 *   - LDR (word, halfword, byte, literal, exclusive): 2, or 1 when it follows a single LDR whose destination is
 *     not one of its address registers (the TRM's pipelined loads: N neighbouring loads take N + 1 cycles).
 *   - STR with an immediate offset (any indexing): 1 ("always one cycle"); with a register offset: 2, or 1 after
 *     a single LDR as above. Nothing pipelines after a store.
 *   - LDRD / STRD: 3 (two words, not pipelined with their neighbours). LDM / STM / PUSH / POP of N registers:
 *     1 + N (not pipelined with their neighbours).
 *   - A load or store whose address register was written by the instruction just before it (a data processing
 *     instruction; there is no forwarding path): + 1.
 *   - Branches: 1, plus the pipeline refill P when taken: P = 1 for an immediate target (B, B<c>, BL, CBZ,
 *     CBNZ: the address is known at decode), 2 for a register target (BX, BLX, MOV / ADD to PC), 3 when PC is
 *     loaded (LDR PC, POP / LDM with PC: "three cycles for the pipeline reload"), plus 1 when the target is a
 *     32-bit instruction that is not word aligned (fetched in two parts); at most 3. TBB / TBH: 3 + P (3).
 *     A branch counts as taken when the next block executed does not start at the instruction after it.
 *   - FPU: VADD / VSUB / VMUL / VNMUL / VABS / VNEG / VCMP / VCVT / VMOV: 1, VMLA / VMLS / VNMLA / VNMLS / VFMA /
 *     VFMS / VFNMA / VFNMS: 3, VDIV / VSQRT: 14, VLDR / VSTR: 2, VLDM / VSTM / VPUSH / VPOP: 1 + N words, VMOV of
 *     two core registers: 2.
 *   - ISB: 1 + 2 (a pipeline refill); other barriers, hints, MRS / MSR, CPS, SVC, BKPT: 1. Anything else
 *     (e.g. M-profile vector instructions): 1.
 * Not modelled: unaligned accesses (+1 or +2 each), a conditional instruction that fails its condition (costed
 * as executed), IT folding (IT costs 1), wait states, and pipelining across the boundary of two translation
 * blocks (they nearly always meet at a branch, after which nothing pipelines anyway).
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below. They are those of
 * plugin API version 1 (QEMU 7.x): qemu_plugin_register_vcpu_insn_exec_inline with a plain pointer.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plugin API, version 1 (include/qemu/qemu-plugin.h of QEMU 7.2) ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not inspected */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* ---- end of plugin API ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define MAX_RANGES 256
#define MAX_MARKS 8
#define PC 15

/* ---------------------------------------------------------------------------------------------------------
 * Instruction classes and their static cost
 * ------------------------------------------------------------------------------------------------------- */

enum kind {
    K_OTHER,      /* 1 cycle, writes `writes` (data processing) or nothing */
    K_LOAD,       /* single load: `dest`, address registers `addr` */
    K_STORE_IMM,  /* single store, immediate offset */
    K_STORE_REG,  /* single store, register offset */
    K_MULTI,      /* LDRD / STRD / LDM / STM / PUSH / POP / VLDM ...: `cycles` fixed, address registers `addr` */
    K_FIXED,      /* any other fixed cost in `cycles` (divide, FP, VLDR ...) */
};

enum branch { BR_NONE, BR_IMM, BR_REG, BR_LOAD, BR_TABLE };

typedef struct {
    enum kind kind;
    enum branch branch;
    int cycles;      /* K_MULTI / K_FIXED; others derive it */
    int dest;        /* K_LOAD: destination register (-1 none) */
    uint32_t addr;   /* register mask used to form the address (loads / stores) */
    uint32_t writes; /* register mask written by a data processing instruction (for the address stall) */
} insn_class;

static int popcount16(uint32_t v)
{
    return __builtin_popcount(v & 0xFFFFu);
}

static insn_class cls(enum kind k)
{
    insn_class c = {k, BR_NONE, 1, -1, 0, 0};
    return c;
}

static insn_class dp(int rd) /* data processing writing rd (rd < 0: nothing) */
{
    insn_class c = cls(K_OTHER);
    if (rd >= 0 && rd != PC) {
        c.writes = 1u << rd;
    } else if (rd == PC) {
        c.branch = BR_REG;
    }
    return c;
}

static insn_class fixed(int cycles)
{
    insn_class c = cls(K_FIXED);
    c.cycles = cycles;
    return c;
}

static insn_class load(int rt, uint32_t addr)
{
    insn_class c = cls(K_LOAD);
    c.dest = rt;
    c.addr = addr;
    if (rt == PC) {
        c.branch = BR_LOAD;
    }
    return c;
}

static insn_class store(int reg_offset, uint32_t addr)
{
    insn_class c = cls(reg_offset ? K_STORE_REG : K_STORE_IMM);
    c.addr = addr;
    return c;
}

static insn_class multi(int cycles, uint32_t addr, int loads_pc)
{
    insn_class c = cls(K_MULTI);
    c.cycles = cycles;
    c.addr = addr;
    if (loads_pc) {
        c.branch = BR_LOAD;
    }
    return c;
}

static insn_class branch(enum branch b, int cycles)
{
    insn_class c = cls(K_FIXED);
    c.branch = b;
    c.cycles = cycles;
    return c;
}

#define BIT(v, n) (((v) >> (n)) & 1u)
#define BITS(v, hi, lo) (((v) >> (lo)) & ((1u << ((hi) - (lo) + 1)) - 1u))

static insn_class decode16(uint32_t h)
{
    const uint32_t top5 = h >> 11;
    if (top5 <= 0x03) { /* shift by immediate, add / subtract register or 3-bit immediate */
        return dp((int)BITS(h, 2, 0));
    }
    if (top5 <= 0x07) { /* MOV / CMP / ADD / SUB 8-bit immediate */
        return dp(BITS(h, 12, 11) == 1 ? -1 : (int)BITS(h, 10, 8));
    }
    if ((h >> 10) == 0x10) { /* data processing (register) */
        const uint32_t op = BITS(h, 9, 6);
        const int no_write = op == 0x8 || op == 0xA || op == 0xB; /* TST, CMP, CMN */
        return dp(no_write ? -1 : (int)BITS(h, 2, 0));
    }
    if ((h >> 10) == 0x11) { /* special data processing, branch and exchange */
        const uint32_t op = BITS(h, 9, 8);
        const int rd = (int)(BIT(h, 7) << 3 | BITS(h, 2, 0));
        if (op == 3) { /* BX / BLX register */
            insn_class c = branch(BR_REG, 1);
            if (BIT(h, 7)) {
                c.writes = 1u << 14;
            }
            return c;
        }
        return dp(op == 1 ? -1 : rd); /* ADD / MOV (to PC: a register branch), CMP */
    }
    if (top5 == 0x09) { /* LDR literal */
        return load((int)BITS(h, 10, 8), 1u << PC);
    }
    if ((h >> 12) == 0x5) { /* load / store, register offset */
        const uint32_t addr = 1u << BITS(h, 5, 3) | 1u << BITS(h, 8, 6);
        return BITS(h, 11, 9) <= 2 ? store(1, addr) : load((int)BITS(h, 2, 0), addr);
    }
    if (top5 >= 0x0C && top5 <= 0x11) { /* LDR / STR (word, byte, halfword), immediate offset */
        const uint32_t addr = 1u << BITS(h, 5, 3);
        return BIT(h, 11) ? load((int)BITS(h, 2, 0), addr) : store(0, addr);
    }
    if (top5 == 0x12 || top5 == 0x13) { /* LDR / STR SP-relative */
        return BIT(h, 11) ? load((int)BITS(h, 10, 8), 1u << 13) : store(0, 1u << 13);
    }
    if (top5 == 0x14 || top5 == 0x15) { /* ADR, ADD Rd, SP, #imm */
        return dp((int)BITS(h, 10, 8));
    }
    if ((h >> 12) == 0xB) { /* miscellaneous */
        const uint32_t op = BITS(h, 11, 5);
        if ((op & 0x78) == 0x00) { /* ADD / SUB SP, SP, #imm */
            return dp(13);
        }
        if ((op & 0x28) == 0x08) { /* CBZ / CBNZ */
            return branch(BR_IMM, 1);
        }
        if ((op & 0x70) == 0x20) { /* PUSH */
            return multi(1 + popcount16(h & 0xFF) + (int)BIT(h, 8), 1u << 13, 0);
        }
        if ((op & 0x70) == 0x60) { /* POP */
            return multi(1 + popcount16(h & 0xFF) + (int)BIT(h, 8), 1u << 13, (int)BIT(h, 8));
        }
        if ((op & 0x78) == 0x10 || (op & 0x78) == 0x50) { /* SXTH / SXTB / UXTH / UXTB, REV / REV16 / REVSH */
            return dp((int)BITS(h, 2, 0));
        }
        return cls(K_OTHER); /* IT, NOP and other hints, CPS, BKPT */
    }
    if (top5 == 0x18 || top5 == 0x19) { /* STM / LDM (no PC in a 16-bit list) */
        return multi(1 + popcount16(h & 0xFF), 1u << BITS(h, 10, 8), 0);
    }
    if ((h >> 12) == 0xD) { /* B<c>, UDF, SVC */
        const uint32_t cond = BITS(h, 11, 8);
        return cond >= 0xE ? cls(K_OTHER) : branch(BR_IMM, 1);
    }
    if (top5 == 0x1C) { /* B */
        return branch(BR_IMM, 1);
    }
    return cls(K_OTHER);
}

/* Coprocessor space: the FPU (coprocessors 10 and 11); anything else (MVE on v8.1-M) costs 1. */
static insn_class decode_coproc(uint32_t h1, uint32_t h2)
{
    const uint32_t top = h1 >> 8;
    const uint32_t coproc = BITS(h2, 11, 8);
    if (top < 0xEC || top > 0xEE || (coproc != 10 && coproc != 11)) {
        return cls(K_OTHER);
    }
    if ((h1 & 0xFE00) == 0xEC00) { /* extension register load / store, 64-bit transfers */
        const uint32_t op = BITS(h1, 8, 4);
        const uint32_t rn = BITS(h1, 3, 0);
        if ((op & 0x1E) == 0x04) { /* VMOV two core registers <-> two singles / a double */
            insn_class c = fixed(2);
            if (BIT(h1, 4)) {
                c.writes = 1u << BITS(h2, 15, 12) | 1u << BITS(h1, 3, 0);
            }
            return c;
        }
        if ((op & 0x12) == 0x10) { /* VSTR / VLDR */
            insn_class c = fixed(2);
            c.addr = 1u << rn;
            return c;
        }
        return multi(1 + (int)BITS(h2, 7, 0), 1u << rn, 0); /* VLDM / VSTM / VPUSH / VPOP: N words */
    }
    if ((h1 & 0xFF00) == 0xEE00) {
        if (BIT(h2, 4)) { /* 8/16/32-bit transfer: VMOV core <-> single, VMRS, VMSR */
            const int rt = (int)BITS(h2, 15, 12);
            return dp(BIT(h1, 4) && rt != PC ? rt : -1); /* VMRS to APSR_nzcv writes no register */
        }
        const uint32_t o1 = BIT(h1, 7) << 2 | BITS(h1, 5, 4);
        switch (o1) {
        case 0: case 1: case 5: case 6: /* VMLA / VMLS, VNMLA / VNMLS, VFNMA / VFNMS, VFMA / VFMS */
            return fixed(3);
        case 4: /* VDIV */
            return fixed(14);
        case 7: /* VSQRT has opc2 = 0001, opc3 = 11; the rest of this group (VMOV, VABS, VNEG, VCVT, VCMP): 1 */
            return (BITS(h1, 3, 0) == 1 && BITS(h2, 7, 6) == 3) ? fixed(14) : fixed(1);
        default: /* VMUL / VNMUL, VADD / VSUB */
            return fixed(1);
        }
    }
    return cls(K_OTHER);
}

static insn_class decode32(uint32_t h1, uint32_t h2)
{
    const uint32_t op1 = BITS(h1, 12, 11);
    const uint32_t op2 = BITS(h1, 10, 4);
    const uint32_t rn = BITS(h1, 3, 0);
    if (op1 == 1) {
        if ((op2 & 0x64) == 0x00) { /* load / store multiple */
            const int loads = (int)BIT(h1, 4);
            return multi(1 + popcount16(h2), 1u << rn, loads && BIT(h2, 15));
        }
        if ((op2 & 0x64) == 0x04) { /* load / store dual or exclusive, table branch */
            const uint32_t a = BITS(h1, 8, 7), b = BITS(h1, 5, 4);
            if (a == 0 && b <= 1) { /* STREX / LDREX: like a single STR (register-offset timing) / LDR */
                return b ? load((int)BITS(h2, 15, 12), 1u << rn) : store(1, 1u << rn);
            }
            if (a == 1 && b == 1 && BITS(h2, 7, 5) == 0) { /* TBB / TBH: load, add, then the refill */
                insn_class c = branch(BR_TABLE, 3);
                c.addr = 1u << rn | 1u << BITS(h2, 3, 0);
                return c;
            }
            if (a == 1 && b <= 1) { /* STREXB / H, LDREXB / H */
                return b ? load((int)BITS(h2, 15, 12), 1u << rn) : store(1, 1u << rn);
            }
            return multi(3, 1u << rn, 0); /* STRD / LDRD */
        }
        if ((op2 & 0x60) == 0x20) { /* data processing (shifted register) */
            const uint32_t op = BITS(h1, 8, 5);
            const int rd = (int)BITS(h2, 11, 8);
            const int test = (op == 0x0 || op == 0x4 || op == 0x8 || op == 0xD) && rd == PC && BIT(h1, 4);
            return dp(test ? -1 : rd);
        }
        return decode_coproc(h1, h2);
    }
    if (op1 == 2) {
        if (!BIT(h2, 15)) { /* data processing (modified or plain immediate) */
            const uint32_t op = BITS(h1, 8, 5);
            const int rd = (int)BITS(h2, 11, 8);
            const int test = !BIT(h1, 9) && (op == 0x0 || op == 0x4 || op == 0x8 || op == 0xD) && rd == PC &&
                             BIT(h1, 4);
            return dp(test ? -1 : rd);
        }
        /* branches and miscellaneous control */
        const uint32_t o = BITS(h2, 14, 12);
        if ((o & 0x5) == 0x0 && (op2 & 0x38) != 0x38) { /* B<c>.W */
            return branch(BR_IMM, 1);
        }
        if ((o & 0x5) == 0x1) { /* B.W */
            return branch(BR_IMM, 1);
        }
        if ((o & 0x5) == 0x5) { /* BL */
            insn_class c = branch(BR_IMM, 1);
            c.writes = 1u << 14;
            return c;
        }
        if ((op2 & 0x7F) == 0x3B && BITS(h2, 7, 4) == 0x6) { /* ISB */
            return fixed(3);
        }
        if ((op2 & 0x7E) == 0x3E) { /* MRS */
            return dp((int)BITS(h2, 11, 8));
        }
        return cls(K_OTHER); /* MSR, hints, barriers, UDF */
    }
    /* op1 == 3 */
    if ((op2 & 0x71) == 0x00) { /* store single data item */
        const int reg_offset = !BIT(h1, 7) && BITS(h2, 11, 6) == 0;
        return store(reg_offset, 1u << rn | (reg_offset ? 1u << BITS(h2, 3, 0) : 0));
    }
    if ((op2 & 0x67) == 0x01 || (op2 & 0x67) == 0x03 || (op2 & 0x67) == 0x05) { /* load byte / half / word */
        const int rt = (int)BITS(h2, 15, 12);
        const int reg_offset = rn != PC && !BIT(h1, 7) && BITS(h2, 11, 6) == 0;
        if (rt == PC && (op2 & 0x67) != 0x05) { /* PLD / PLI hints */
            return cls(K_OTHER);
        }
        return load(rt, 1u << rn | (reg_offset ? 1u << BITS(h2, 3, 0) : 0));
    }
    if ((op2 & 0x70) == 0x20) { /* data processing (register), parallel add / subtract, miscellaneous */
        return dp((int)BITS(h2, 11, 8));
    }
    if ((op2 & 0x78) == 0x30) { /* multiply, multiply-accumulate, absolute difference */
        return dp((int)BITS(h2, 11, 8));
    }
    if ((op2 & 0x78) == 0x38) { /* long multiply, long multiply-accumulate, divide */
        const uint32_t op = BITS(h1, 6, 4);
        if (op == 1 || op == 3) { /* SDIV / UDIV */
            insn_class c = fixed(12);
            c.writes = 1u << BITS(h2, 11, 8);
            return c;
        }
        insn_class c = dp((int)BITS(h2, 15, 12));
        c.writes |= 1u << BITS(h2, 11, 8);
        return c;
    }
    if ((op2 & 0x40) == 0x40) {
        return decode_coproc(h1, h2);
    }
    return cls(K_OTHER);
}

static insn_class decode(const uint8_t *bytes, size_t size)
{
    const uint32_t h1 = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8;
    if (size < 4) {
        return decode16(h1);
    }
    const uint32_t h2 = (uint32_t)bytes[2] | (uint32_t)bytes[3] << 8;
    return decode32(h1, h2);
}

/* The cycles of `c` given the instruction issued just before it (`prev`, NULL at the start of a block). */
static int cost(const insn_class *c, const insn_class *prev)
{
    const int after_load = prev && prev->kind == K_LOAD && prev->branch == BR_NONE &&
                           !(prev->dest >= 0 && (c->addr >> prev->dest) & 1u);
    int n;
    switch (c->kind) {
    case K_LOAD:
        n = after_load && c->branch == BR_NONE ? 1 : 2; /* LDR PC is always blocking */
        break;
    case K_STORE_IMM:
        n = 1;
        break;
    case K_STORE_REG:
        n = after_load ? 1 : 2;
        break;
    case K_MULTI:
    case K_FIXED:
        n = c->cycles;
        break;
    default:
        n = 1;
    }
    if (prev && (c->addr & prev->writes) && prev->kind != K_LOAD) {
        n += 1; /* address generation waits for the register bank */
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------------------
 * Counting
 * ------------------------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t start;      /* address of the block's first instruction */
    int first_wide;      /* that instruction is 32-bit */
    enum branch branch;  /* how the block's last instruction leaves it (BR_NONE: it falls through) */
    int branch_counted;  /* the last instruction lies in a counted range */
    uint64_t next;       /* the address after the last instruction */
} tb_info;

static uint64_t count, cycles; /* one vCPU: plain counters are enough */
static uint64_t lo[MAX_RANGES], hi[MAX_RANGES];
static int n_ranges;
static uint64_t mark_addrs[MAX_MARKS];
static int n_marks;
static const tb_info *last_tb;
static FILE *out;
static int profile;
static uint64_t prof_base, prof_words; /* profile counters: one per halfword of [prof_base, ...) */
static uint64_t *prof, *prof_cycles;

static int in_ranges(uint64_t a)
{
    if (n_ranges == 0) {
        return 1;
    }
    for (int i = 0; i < n_ranges; i++) {
        if (a >= lo[i] && a < hi[i]) {
            return 1;
        }
    }
    return 0;
}

static int is_mark(uint64_t a)
{
    for (int i = 0; i < n_marks; i++) {
        if (a == mark_addrs[i]) {
            return 1;
        }
    }
    return 0;
}

static void on_mark(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    fprintf(out, "mark %" PRIu64 " %" PRIu64 "\n", count, cycles);
}

/* Runs before each block: if the previous block ended in a branch that was taken, add its pipeline refill. */
static void on_block(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    const tb_info *t = udata;
    const tb_info *p = last_tb;
    if (p && p->branch != BR_NONE && p->branch_counted && t->start != p->next) {
        int refill = p->branch == BR_IMM ? 1 : p->branch == BR_REG ? 2 : 3;
        if (t->first_wide && (t->start & 2)) {
            refill += 1;
        }
        cycles += (uint64_t)(refill > 3 ? 3 : refill);
    }
    last_tb = t;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    tb_info *info = calloc(1, sizeof(*info)); /* lives as long as the block may run */
    if (info == NULL) {
        return;
    }
    info->start = qemu_plugin_tb_vaddr(tb);
    insn_class prev = cls(K_OTHER);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint64_t a = qemu_plugin_insn_vaddr(insn);
        const size_t size = qemu_plugin_insn_size(insn);
        const insn_class c = decode(qemu_plugin_insn_data(insn), size);
        const int counted = in_ranges(a);
        if (i == 0) {
            info->first_wide = size == 4;
        }
        if (is_mark(a)) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (counted) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &count, 1);
            const uint64_t n_cycles = (uint64_t)cost(&c, i ? &prev : NULL);
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &cycles, n_cycles);
            if (prof && a >= prof_base && (a - prof_base) / 2 < prof_words) {
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                           &prof[(a - prof_base) / 2], 1);
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                           &prof_cycles[(a - prof_base) / 2], n_cycles);
            }
        }
        if (i == n - 1) {
            info->branch = c.branch;
            info->branch_counted = counted;
            info->next = a + size;
        }
        prev = c;
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, info);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    fprintf(out, "total %" PRIu64 " %" PRIu64 "\n", count, cycles);
    for (uint64_t i = 0; prof && i < prof_words; i++) {
        if (prof[i]) {
            fprintf(out, "insn %#" PRIx64 " %" PRIu64 " %" PRIu64 "\n", prof_base + 2 * i, prof[i], prof_cycles[i]);
        }
    }
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "out=", 4) == 0) {
            path = a + 4;
        } else if (strncmp(a, "range=", 6) == 0 && n_ranges < MAX_RANGES) {
            char *end;
            lo[n_ranges] = strtoull(a + 6, &end, 0);
            if (*end != ':') {
                fprintf(stderr, "insn_count: bad %s (want range=LO:HI)\n", a);
                return -1;
            }
            hi[n_ranges] = strtoull(end + 1, NULL, 0);
            n_ranges++;
        } else if (strncmp(a, "mark=", 5) == 0 && n_marks < MAX_MARKS) {
            mark_addrs[n_marks++] = strtoull(a + 5, NULL, 0);
        } else if (strcmp(a, "profile=1") == 0) {
            profile = 1;
        } else {
            fprintf(stderr, "insn_count: unknown argument %s\n", a);
            return -1;
        }
    }
    out = path ? fopen(path, "w") : stderr;
    if (out == NULL) {
        fprintf(stderr, "insn_count: cannot open %s\n", path);
        return -1;
    }
    setvbuf(out, NULL, _IOLBF, 0);
    if (profile && n_ranges > 0) {
        uint64_t top = 0;
        prof_base = UINT64_MAX;
        for (int i = 0; i < n_ranges; i++) {
            prof_base = lo[i] < prof_base ? lo[i] : prof_base;
            top = hi[i] > top ? hi[i] : top;
        }
        prof_words = (top - prof_base + 1) / 2;
        prof = calloc(prof_words, sizeof(*prof));
        prof_cycles = calloc(prof_words, sizeof(*prof_cycles));
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
