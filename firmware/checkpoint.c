#include "checkpoint.h"

#include <string.h>

#include "crc32.h"
#include "fmath.h"
#include "model.h"
#include "trainer.h"

#define MAGIC 0x4B43544Du /* "MTCK" */
#define VERSION 3u /* 3: the replay memory follows the state */
#define HEADER_BYTES 32u

_Static_assert(sizeof(tr_state) == 4 * (8 + 5 * MODEL_NUM_EXITS), "tr_state must be 4-byte words, unpadded");

enum { IDLE, VERIFYING, VERIFIED, COMMITTING };
static struct {
    uint8_t phase;
    uint32_t received, crc, verified_crc, image_crc, word;
    int bad_value;
    uint8_t header[HEADER_BYTES];
} put;

uint32_t checkpoint_size(void) { return tr_checkpoint_bytes; }

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void header(uint8_t *h)
{
    uint32_t params = 0;
    for (int u = 0; u < tr_num_units; u++)
        params += tr_units[u].params_bytes;
    put_u32(h, MAGIC);
    h[4] = (uint8_t)VERSION;
    h[5] = 0;
    h[6] = MODEL_NUM_EXITS;
    h[7] = tr_num_units;
    memcpy(h + 8, model_hash, 16);
    put_u32(h + 24, params);
    put_u32(h + 28, (uint32_t)sizeof(tr_state));
}

/* Where body byte `offset` lives: its segment (-1 header, u < units: unit u's params, units: the state), its
 * offset in the segment, the bytes left in the segment, and its live memory (NULL for the header). */
static uint8_t *locate(uint32_t offset, int *seg, uint32_t *rel, uint32_t *left)
{
    if (offset < HEADER_BYTES) {
        *seg = -1;
        *rel = offset;
        *left = HEADER_BYTES - offset;
        return 0;
    }
    offset -= HEADER_BYTES;
    for (int u = 0; u < tr_num_units; u++) {
        if (offset < tr_units[u].params_bytes) {
            *seg = u;
            *rel = offset;
            *left = tr_units[u].params_bytes - offset;
            return trainer_unit_params(u) + offset;
        }
        offset -= tr_units[u].params_bytes;
    }
    if (offset < sizeof(tr_state)) {
        *seg = tr_num_units;
        *rel = offset;
        *left = (uint32_t)sizeof(tr_state) - offset;
        return (uint8_t *)trainer_state() + offset;
    }
    offset -= (uint32_t)sizeof(tr_state);
    *seg = tr_num_units + 1;
    *rel = offset;
    *left = tr_memory_bytes - offset;
    return trainer_memory() + offset;
}

/* The image without its CRC. */
static void read_body(uint32_t offset, uint8_t *dst, uint32_t n)
{
    uint8_t h[HEADER_BYTES];
    header(h);
    while (n) {
        int seg;
        uint32_t rel, left;
        const uint8_t *src = locate(offset, &seg, &rel, &left);
        const uint32_t take = left < n ? left : n;
        memcpy(dst, src ? src : h + rel, take);
        dst += take;
        offset += take;
        n -= take;
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

static float as_float(uint32_t w)
{
    float f;
    memcpy(&f, &w, 4);
    return f;
}

/* Whether a 4-byte word of unit u's params buffer at offset rel is valid: a scale finite, positive and
 * within its layer's bound, a multiplier 0 or in [2^30, 2^31), a shift in [-31, 30]. */
static int params_word_ok(int u, uint32_t rel, uint32_t word)
{
    const tr_unit *un = &tr_units[u];
    const uint32_t c = rel / 4, channels = un->n_channels;
    if (c < channels) {
        const float s = as_float(word);
        for (int j = 0; j < un->n_layers; j++) {
            const tl_layer *l = &un->layers[j];
            if (l->kind == TL_CONV && c >= l->ch && c < l->ch + (uint32_t)l->out.c)
                return fm_isfinite(s) && s > 0.0f && 127.0f * s <= l->bound;
        }
    }
    if (c >= 2 * channels && c < 3 * channels)
        return word == 0 || (word >= 0x40000000u && word <= 0x7FFFFFFFu);
    if (c >= 3 * channels && c < 4 * channels)
        return (int32_t)word >= -31 && (int32_t)word <= 30;
    return 1;
}

/* Whether the 4-byte word at offset rel of the state is valid: every float finite. */
static int state_word_ok(uint32_t rel, uint32_t word)
{
    const uint32_t i = rel / 4;
    const int is_float = i < 8 ? i != 6 : (i - 8) % 5 != 4;
    return !is_float || fm_isfinite(as_float(word));
}

/* Whether byte rel of the replay memory is valid (codegen/trainer.py memory_layout): its label credit and
 * cut finite (checked at their last byte), each label a class or none, each mask a set of units. */
static int memory_byte_ok(uint32_t rel, uint8_t b)
{
    const uint32_t n = tr_memory_slots + 1u, marks = 16;
    if (rel == 7 || rel == 11)
        return fm_isfinite(as_float(put.word));
    if (rel >= marks && rel < marks + n)
        return b == 0xFF || b < model_exit_classes[MODEL_NUM_EXITS - 1];
    if (rel >= marks + n && rel < marks + 2 * n)
        return (b >> tr_num_units) == 0;
    return 1;
}

/* First pass: checks one body byte. Returns CKPT_OK or the header's reason; remembers a bad value. */
static int check_byte(uint32_t at, uint8_t b)
{
    int seg;
    uint32_t rel, left;
    locate(at, &seg, &rel, &left);
    put.word = (put.word >> 8) | ((uint32_t)b << 24);
    if (seg < 0) {
        put.header[rel] = b;
        if (rel < HEADER_BYTES - 1)
            return CKPT_OK;
        uint8_t h[HEADER_BYTES];
        header(h);
        if (memcmp(put.header, h, 8) || memcmp(put.header + 24, h + 24, 8))
            return CKPT_BAD_FORMAT;
        return memcmp(put.header + 8, h + 8, 16) ? CKPT_BAD_HASH : CKPT_OK;
    }
    if (seg < tr_num_units) {
        const tr_unit *un = &tr_units[seg];
        const uint32_t w0 = 16 * un->n_channels;
        if (rel >= w0 && rel < w0 + un->n_weights && b == 0x80) /* served weights are in [-127, 127] */
            put.bad_value = 1;
        else if (rel % 4 == 3 && !params_word_ok(seg, rel - 3, put.word))
            put.bad_value = 1;
    } else if (seg == tr_num_units) {
        if (rel % 4 == 3 && !state_word_ok(rel - 3, put.word))
            put.bad_value = 1;
    } else if (!memory_byte_ok(rel, b)) {
        put.bad_value = 1;
    }
    return CKPT_OK;
}

/* Second pass: body bytes into the live weights and state (the header is not stored anywhere). */
static void write_body(uint32_t offset, const uint8_t *data, uint32_t n)
{
    while (n) {
        int seg;
        uint32_t rel, left;
        uint8_t *dst = locate(offset, &seg, &rel, &left);
        const uint32_t take = left < n ? left : n;
        if (dst)
            memcpy(dst, data, take);
        data += take;
        offset += take;
        n -= take;
    }
}

void checkpoint_interrupt(void)
{
    if (put.phase == COMMITTING)
        trainer_reset_weights();
    put.phase = IDLE;
}

int checkpoint_put(uint32_t total, uint32_t offset, const uint8_t *data, uint32_t n, uint32_t *staged,
                   int *committed)
{
    *committed = CKPT_RECEIVING;
    if (offset == 0) {
        const int commit = put.phase == VERIFIED && total == tr_checkpoint_bytes;
        checkpoint_interrupt();
        put.phase = commit ? COMMITTING : VERIFYING;
        put.received = put.crc = put.image_crc = 0;
        put.bad_value = 0;
    }
    *staged = put.received;
    if (total != tr_checkpoint_bytes) {
        checkpoint_interrupt();
        return CKPT_BAD_SIZE;
    }
    if ((put.phase != VERIFYING && put.phase != COMMITTING) || offset != put.received || n > total - offset) {
        checkpoint_interrupt();
        return CKPT_BAD_ORDER;
    }
    const uint32_t body = total - 4, in_body = offset >= body ? 0 : body - offset < n ? body - offset : n;
    put.crc = crc32_update(put.crc, data, in_body);
    if (put.phase == VERIFYING) {
        for (uint32_t i = 0; i < in_body; i++) {
            const int reason = check_byte(offset + i, data[i]);
            if (reason != CKPT_OK) {
                put.phase = IDLE;
                return reason;
            }
        }
    } else {
        write_body(offset, data, in_body);
    }
    for (uint32_t i = in_body; i < n; i++) /* the image's CRC, little-endian */
        put.image_crc |= (uint32_t)data[i] << (8 * (offset + i - body));
    put.received += n;
    *staged = put.received;
    if (put.received < total)
        return CKPT_OK;
    if (put.phase == VERIFYING) {
        put.phase = IDLE;
        if (put.image_crc != put.crc)
            return CKPT_BAD_CRC;
        if (put.bad_value)
            return CKPT_BAD_VALUE;
        put.verified_crc = put.crc;
        put.phase = VERIFIED;
        *committed = CKPT_VERIFIED;
        return CKPT_OK;
    }
    put.phase = IDLE;
    if (put.crc != put.verified_crc || put.image_crc != put.verified_crc) {
        trainer_reset_weights();
        return CKPT_BAD_COMMIT;
    }
    trainer_reset_momentum();
    *committed = CKPT_COMMITTED;
    return CKPT_OK;
}
