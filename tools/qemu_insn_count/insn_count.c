/*
 * QEMU TCG plugin: count guest instructions executed inside address ranges, with snapshots at a marker.
 *
 *   qemu-system-arm ... -plugin insn_count.so,out=FILE[,range=LO:HI]...[,mark=ADDR]
 *
 * range=LO:HI (hex or decimal, repeatable): count instructions whose address is in [LO, HI); with no range,
 *   every instruction counts.
 * mark=ADDR: each time the instruction at ADDR executes, the count so far is appended to FILE as "mark N".
 * At exit FILE gets "total N". Built at run time by mcu_train/insn_count.py with the host gcc.
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below. They are those of
 * plugin API version 1 (QEMU 7.x): qemu_plugin_register_vcpu_insn_exec_inline with a plain pointer.
 * Instructions are counted when issued: a conditional instruction that fails its condition counts too.
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
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* ---- end of plugin API ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define MAX_RANGES 256

static uint64_t count; /* one vCPU: a plain counter is enough */
static uint64_t lo[MAX_RANGES], hi[MAX_RANGES];
static int n_ranges;
static uint64_t mark_addr = UINT64_MAX;
static FILE *out;

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

static void on_mark(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    fprintf(out, "mark %" PRIu64 "\n", count);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint64_t a = qemu_plugin_insn_vaddr(insn);
        if (a == mark_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (in_ranges(a)) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &count, 1);
        }
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    fprintf(out, "total %" PRIu64 "\n", count);
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
        } else if (strncmp(a, "mark=", 5) == 0) {
            mark_addr = strtoull(a + 5, NULL, 0);
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
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
