#include "persist.h"

#include <string.h>

#include "board.h"
#include "checkpoint.h"
#include "crc32.h"
#include "model.h"
#include "protocol.h"
#include "train_service.h"
#include "trainer.h"

/* A slot: the header in its first page (programmed last), then the CONFIG payload and the checkpoint image,
 * back to back from the second page on. */
#define MAGIC 0x5350544Du /* "MTPS" */
#define VERSION 1u
#define PAGE BOARD_PAGE_BYTES
#define HEADER_BYTES 44u /* u32 magic, u16 version, u16 header bytes, u32 seq, u32 config bytes, u32 image
                            bytes, u8[16] model hash, u32 payload CRC-32, u32 header CRC-32 */
#define NO_SLOT 255u
#define NEVER 0xFFFFFFFFu

enum { OP_STATUS = 0, OP_WRITE = 1, OP_FORGET = 2, OP_WRITE_AND_HALT = 3 };
enum { FAIL_VERIFY = 3, FAIL_TOO_SMALL = 4 }; /* besides BOARD_STORAGE_* (erase 1, program 2, none 5) */

typedef struct {
    uint32_t seq, config_bytes, image_bytes, payload_crc;
} slot_header;

static struct {
    uint8_t slot;            /* holding the newest valid image, or NO_SLOT */
    uint32_t seq;            /* its sequence number */
    uint32_t restored;       /* sequence number restored at boot */
    uint32_t writes;         /* slots written since boot */
    uint32_t cost;           /* counter units of the last write */
    uint8_t last_error;      /* of the last write (0: it succeeded) */
    uint32_t trained_at_write; /* the trainer's trained-window count at the last write */
} st = {NO_SLOT, 0, 0, 0, 0, 0, 0};

static uint8_t page[PAGE];
static uint8_t config_wire[TRAIN_CONFIG_BYTES];

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint32_t round_up(uint32_t n, uint32_t unit) { return (n + unit - 1) / unit * unit; }

static uint32_t config_size(void) { return (uint32_t)train_config_to_wire(config_wire); }
static uint32_t stored_bytes(uint32_t config_bytes) { return PAGE + round_up(config_bytes + checkpoint_size(), PAGE); }

/* Bytes [offset, offset + n) of what a slot stores after its header: config_wire, then the live checkpoint. */
static void payload_read(uint32_t config_bytes, uint32_t offset, uint8_t *dst, uint32_t n)
{
    while (n && offset < config_bytes) {
        *dst++ = config_wire[offset++];
        n--;
    }
    if (n)
        checkpoint_read(offset - config_bytes, dst, n);
}

/* The header of `slot` if it is complete and belongs to this firmware's model and trainer (0), else -1. */
static int read_header(int slot, slot_header *h)
{
    uint8_t raw[HEADER_BYTES];
    if (board_slot_read(slot, 0, raw, sizeof raw) != 0 || get_u32(raw) != MAGIC ||
        raw[4] != VERSION || raw[5] != 0 || raw[6] != HEADER_BYTES || raw[7] != 0 ||
        crc32_update(0, raw, HEADER_BYTES - 4) != get_u32(raw + HEADER_BYTES - 4) ||
        memcmp(raw + 20, model_hash, 16) != 0)
        return -1;
    h->seq = get_u32(raw + 8);
    h->config_bytes = get_u32(raw + 12);
    h->image_bytes = get_u32(raw + 16);
    h->payload_crc = get_u32(raw + 36);
    if (h->seq == 0 || h->config_bytes != config_size() || h->image_bytes != checkpoint_size() ||
        stored_bytes(h->config_bytes) > board_slot_bytes())
        return -1;
    return 0;
}

/* CRC-32 of the payload stored in `slot`. */
static uint32_t stored_crc(int slot, uint32_t bytes)
{
    uint32_t crc = 0;
    for (uint32_t at = 0; at < bytes; at += PAGE) {
        uint32_t n = bytes - at < PAGE ? bytes - at : PAGE;
        board_slot_read(slot, PAGE + at, page, n);
        crc = crc32_update(crc, page, n);
    }
    return crc;
}

static int slot_valid(int slot, slot_header *h)
{
    return read_header(slot, h) == 0 && stored_crc(slot, h->config_bytes + h->image_bytes) == h->payload_crc;
}

/* Apply a valid slot: its CONFIG first, then its checkpoint (whose state overrides what CONFIG sets). */
static int apply(int slot, const slot_header *h)
{
    board_slot_read(slot, PAGE, config_wire, h->config_bytes);
    if (train_config_from_wire(config_wire, (uint16_t)h->config_bytes) != 0)
        return -1;
    uint32_t staged = 0;
    int committed = 0;
    for (int pass = 0; pass < 2; pass++) /* checkpoint_put checks an image, then takes it again to commit it */
        for (uint32_t at = 0; at < h->image_bytes; at += PAGE) {
            uint32_t n = h->image_bytes - at < PAGE ? h->image_bytes - at : PAGE;
            board_slot_read(slot, PAGE + h->config_bytes + at, page, n);
            if (checkpoint_put(h->image_bytes, at, page, n, &staged, &committed) != CKPT_OK)
                return -1;
        }
    return committed == CKPT_COMMITTED ? 0 : -1;
}

uint32_t persist_restore(void)
{
    slot_header h[2];
    int valid[2];
    for (int s = 0; s < 2; s++)
        valid[s] = slot_valid(s, &h[s]);
    for (int attempt = 0; attempt < 2; attempt++) {
        int best = -1;
        for (int s = 0; s < 2; s++)
            if (valid[s] && (best < 0 || h[s].seq > h[best].seq))
                best = s;
        if (best < 0)
            break;
        if (apply(best, &h[best]) == 0) {
            st.slot = (uint8_t)best;
            st.seq = st.restored = h[best].seq;
            return st.restored;
        }
        valid[best] = 0;
        trainer_init(); /* a refused image may have applied its CONFIG: back to the compiled defaults */
    }
    return 0;
}

/* Program one page of the slot, or only its first `limit` bytes (the rest left erased) and then halt. */
static int program(int slot, uint32_t offset, uint32_t *programmed, uint32_t halt_after)
{
    uint32_t limit = halt_after - *programmed;
    if (limit < PAGE)
        memset(page + limit, 0xFF, PAGE - limit);
    int err = board_slot_program(slot, offset, page);
    *programmed += PAGE;
    if (limit < PAGE)
        board_halt("mcu-train: power cut in the middle of a flash write\n");
    return err;
}

/* Write the trained state to the slot not holding the newest image; programs `halt_after` bytes at most,
 * then halts (NEVER: the whole slot). Returns 0 or a failure code. */
static int write_slot(uint32_t halt_after)
{
    uint64_t start = board_counter();
    const uint32_t config_bytes = config_size(), image_bytes = checkpoint_size();
    const uint32_t payload = config_bytes + image_bytes;
    const int slot = st.slot == 0 ? 1 : 0;
    if (stored_bytes(config_bytes) > board_slot_bytes())
        return FAIL_TOO_SMALL;
    int err = board_slot_erase(slot, stored_bytes(config_bytes));
    if (err)
        return err;
    if (halt_after == 0)
        board_halt("mcu-train: power cut after erasing a slot\n");
    uint32_t crc = 0, programmed = 0;
    for (uint32_t at = 0; at < payload && !err; at += PAGE) {
        uint32_t n = payload - at < PAGE ? payload - at : PAGE;
        memset(page, 0xFF, PAGE);
        payload_read(config_bytes, at, page, n);
        crc = crc32_update(crc, page, n);
        err = program(slot, PAGE + at, &programmed, halt_after);
    }
    if (err)
        return err;
    uint8_t *p = page;
    memset(page, 0xFF, PAGE);
    put_u32(p, MAGIC);
    p[4] = VERSION;
    p[5] = 0;
    p[6] = HEADER_BYTES;
    p[7] = 0;
    put_u32(p + 8, st.seq + 1);
    put_u32(p + 12, config_bytes);
    put_u32(p + 16, image_bytes);
    memcpy(p + 20, model_hash, 16);
    put_u32(p + 36, crc);
    put_u32(p + 40, crc32_update(0, page, HEADER_BYTES - 4));
    err = program(slot, 0, &programmed, halt_after);
    if (err)
        return err;
    slot_header h;
    if (!slot_valid(slot, &h) || h.seq != st.seq + 1)
        return FAIL_VERIFY;
    st.slot = (uint8_t)slot;
    st.seq = h.seq;
    st.writes++;
    st.cost = (uint32_t)(board_counter() - start);
    return 0;
}

static int write_now(uint32_t halt_after)
{
    st.trained_at_write = trainer_counters()->trained;
    st.last_error = (uint8_t)write_slot(halt_after);
    return st.last_error;
}

void persist_after_train(void)
{
    uint32_t every = trainer_config()->persist_every;
    if (every && trainer_counters()->trained - st.trained_at_write >= every)
        write_now(NEVER);
}

/* Request: u8 op (0 status, 1 write, 2 forget, 3 write and halt) [, u32 halt_after bytes for op 3].
 * Reply: u32 seq, u8 slot, u32 restored seq, u32 stored bytes, u32 slot bytes, u32 writes, u32 cost,
 * u8 last error. */
int handle_persist(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    if (len < 1 || payload[0] > OP_WRITE_AND_HALT || len != (payload[0] == OP_WRITE_AND_HALT ? 5 : 1))
        return -ERR_BAD_PAYLOAD;
    int err = 0;
    if (payload[0] == OP_WRITE) {
        err = write_now(NEVER);
    } else if (payload[0] == OP_WRITE_AND_HALT) {
        err = write_now(get_u32(payload + 1));
    } else if (payload[0] == OP_FORGET) {
        for (int s = 0; s < 2 && !err; s++)
            err = board_slot_erase(s, PAGE); /* an erased header: the slot is empty */
        if (!err)
            st.slot = NO_SLOT, st.seq = 0;
    }
    if (err)
        return -MT_ERROR_WITH_DETAIL(ERR_STORAGE_FAILED, err);
    uint8_t *p = reply;
    put_u32(p, st.seq);
    p[4] = st.slot;
    put_u32(p + 5, st.restored);
    put_u32(p + 9, stored_bytes(config_size()));
    put_u32(p + 13, board_slot_bytes());
    put_u32(p + 17, st.writes);
    put_u32(p + 21, st.cost);
    p[25] = st.last_error;
    return 26;
}
