#include "checkpoint.h"

#include <string.h>

#include "crc32.h"
#include "fmath.h"
#include "model.h"
#include "trainer.h"

#define MAGIC 0x4B43544Du /* "MTCK" */
#define VERSION 1u
#define HEADER_BYTES 32u

_Static_assert(sizeof(tr_state) == 4 * (8 + 5 * MODEL_NUM_EXITS), "tr_state must be 4-byte words, unpadded");

static uint32_t staged_bytes;

uint32_t checkpoint_size(void) { return tr_checkpoint_bytes; }

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void header(uint8_t *h)
{
    put_u32(h, MAGIC);
    h[4] = (uint8_t)VERSION;
    h[5] = 0;
    h[6] = MODEL_NUM_EXITS;
    h[7] = tr_num_units;
    memcpy(h + 8, model_hash, 16);
    put_u32(h + 24, tr_num_params);
    put_u32(h + 28, (uint32_t)sizeof(tr_state));
}

/* The image without its CRC, as a list of segments. */
static void read_body(uint32_t offset, uint8_t *dst, uint32_t n)
{
    uint8_t h[HEADER_BYTES];
    header(h);
    uint32_t seg_start = 0;
    for (int seg = -1; seg <= tr_num_units && n; seg++) {
        const uint8_t *src;
        uint32_t len;
        if (seg < 0) {
            src = h;
            len = HEADER_BYTES;
        } else if (seg < tr_num_units) {
            src = (const uint8_t *)trainer_params(seg);
            len = 4 * tr_units[seg].n_params;
        } else {
            src = (const uint8_t *)trainer_state();
            len = (uint32_t)sizeof(tr_state);
        }
        if (offset < seg_start + len) {
            uint32_t from = offset - seg_start, take = len - from < n ? len - from : n;
            memcpy(dst, src + from, take);
            dst += take;
            offset += take;
            n -= take;
        }
        seg_start += len;
    }
}

static uint32_t body_crc(void)
{
    uint8_t chunk[64];
    uint32_t crc = 0, body = tr_checkpoint_bytes - 4;
    for (uint32_t at = 0; at < body; at += sizeof chunk) {
        uint32_t n = body - at < sizeof chunk ? body - at : (uint32_t)sizeof chunk;
        read_body(at, chunk, n);
        crc = crc32_update(crc, chunk, n);
    }
    return crc;
}

void checkpoint_read(uint32_t offset, uint8_t *dst, uint32_t n)
{
    const uint32_t body = tr_checkpoint_bytes - 4;
    if (offset < body) {
        uint32_t take = body - offset < n ? body - offset : n;
        read_body(offset, dst, take);
        dst += take;
        offset += take;
        n -= take;
    }
    if (n) {
        uint8_t crc[4];
        put_u32(crc, body_crc());
        memcpy(dst, crc + (offset - body), n);
    }
}

static int all_finite(const uint8_t *p, uint32_t words)
{
    for (uint32_t i = 0; i < words; i++) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        if (!fm_isfinite(f))
            return 0;
    }
    return 1;
}

static int check(const uint8_t *img)
{
    uint8_t h[HEADER_BYTES];
    header(h);
    if (memcmp(img, h, 8) || get_u32(img + 24) != tr_num_params || get_u32(img + 28) != sizeof(tr_state))
        return CKPT_BAD_FORMAT;
    if (memcmp(img + 8, model_hash, 16))
        return CKPT_BAD_HASH;
    const uint32_t body = tr_checkpoint_bytes - 4;
    if (crc32_update(0, img, body) != get_u32(img + body))
        return CKPT_BAD_CRC;
    const uint8_t *state = img + HEADER_BYTES + 4 * tr_num_params;
    if (!all_finite(img + HEADER_BYTES, tr_num_params) || !all_finite(state, 6) || !all_finite(state + 28, 1))
        return CKPT_BAD_VALUE;
    for (int k = 0; k < MODEL_NUM_EXITS; k++)
        if (!all_finite(state + 4 * (8 + 5 * k), 4))
            return CKPT_BAD_VALUE;
    return CKPT_OK;
}

static void commit(const uint8_t *img)
{
    const uint8_t *p = img + HEADER_BYTES;
    for (int u = 0; u < tr_num_units; u++) {
        memcpy(trainer_params(u), p, 4 * tr_units[u].n_params);
        p += 4 * tr_units[u].n_params;
    }
    memcpy(trainer_state(), p, sizeof(tr_state));
    trainer_reset_momentum();
}

int checkpoint_put(uint32_t total, uint32_t offset, const uint8_t *data, uint32_t n, uint32_t *staged,
                   int *committed)
{
    *committed = 0;
    if (offset == 0) {
        staged_bytes = 0;
        trainer_set_staging_valid(1);
    }
    *staged = staged_bytes;
    if (total != tr_checkpoint_bytes) {
        trainer_set_staging_valid(0);
        return CKPT_BAD_SIZE;
    }
    if (!trainer_staging_valid() || offset != staged_bytes || n > total - offset) {
        trainer_set_staging_valid(0);
        return CKPT_BAD_ORDER;
    }
    uint8_t *img = trainer_staging();
    memcpy(img + offset, data, n);
    staged_bytes += n;
    *staged = staged_bytes;
    if (staged_bytes < total)
        return CKPT_OK;
    trainer_set_staging_valid(0);
    int reason = check(img);
    if (reason == CKPT_OK) {
        commit(img);
        *committed = 1;
    }
    return reason;
}
