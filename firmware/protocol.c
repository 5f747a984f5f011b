#include "protocol.h"

#include <string.h>

#include "board.h"
#include "crc16.h"

#ifndef MT_FIRMWARE_VERSION
#define MT_FIRMWARE_VERSION "0.1.0"
#endif

/* Counters reported by LINK_STATS, in this order. */
typedef struct {
    uint32_t frames_ok, bad_crc, bad_length, too_long, bad_frame, unknown_type, out_of_order, replayed, sent;
} link_stats;

static const mt_route *app_routes;
static size_t app_route_count;
static const uint8_t *model_hash;
static uint8_t model_hash_len;
static uint32_t restored_seq;

static uint8_t rx_buf[MT_MAX_ENCODED]; /* encoded bytes since the last delimiter, decoded in place */
static size_t rx_len;
static int rx_overflow;

/* The last reply is kept so a repeated request (same seq) is answered again without running twice. */
static uint8_t tx_body[MT_MAX_BODY];
static size_t tx_len; /* 0: nothing to replay */
/* The replies to the MT_REPLAY_DEPTH - 1 requests accepted before the last one, when their payload is at
 * most MT_REPLAY_SHORT_PAYLOAD bytes (TRAIN and CLASSIFY replies are), so a host with several requests in
 * flight can have any of them answered again. A ring: older[(older_next - 1) % N] is the most recent. */
#define OLDER_REPLIES (MT_REPLAY_DEPTH - 1)
#define OLDER_BODY_MAX (MT_HEADER_SIZE + MT_REPLAY_SHORT_PAYLOAD + MT_CRC_SIZE)
static uint8_t older_body[OLDER_REPLIES][OLDER_BODY_MAX];
static uint8_t older_len[OLDER_REPLIES]; /* 0: that request's reply was too long to keep (or none) */
static uint8_t older_next;
/* Errors about frames that were not accepted go out of their own buffer, so the reply cache survives. */
static uint8_t error_body[MT_HEADER_SIZE + 5 + MT_CRC_SIZE];
static int synced;     /* has any request been accepted since boot? */
static uint16_t last_seq;
static link_stats stats;

void protocol_init(const mt_route *routes, size_t n_routes)
{
    app_routes = routes;
    app_route_count = n_routes;
}

void protocol_set_model_hash(const uint8_t *hash, uint8_t len)
{
    model_hash = hash;
    model_hash_len = len;
}

void protocol_set_restored(uint32_t seq) { restored_seq = seq; }

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) { put_u16(p, (uint16_t)v); put_u16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void uart_put(const uint8_t *p, size_t n) { board_uart_write(p, n); }

static void send_encoded(const uint8_t *body, size_t n)
{
    static const uint8_t delimiter = 0;
    board_uart_write(&delimiter, 1);
    cobs_encode_stream(body, n, uart_put);
    board_uart_write(&delimiter, 1);
    stats.sent++;
}

/* Finish a body whose payload is already in place (header, CRC), send it, return its length. */
static size_t send_frame(uint8_t *body, uint8_t type, uint16_t seq, uint16_t payload_len)
{
    body[0] = type;
    put_u16(body + 1, seq);
    put_u16(body + 3, payload_len);
    size_t n = MT_HEADER_SIZE + payload_len;
    put_u16(body + n, crc16_ccitt(body, n));
    send_encoded(body, n + MT_CRC_SIZE);
    return n + MT_CRC_SIZE;
}

static uint16_t error_payload(uint8_t *p, uint8_t reason, uint16_t detail)
{
    p[0] = reason;
    put_u16(p + 1, (uint16_t)(synced ? last_seq + 1 : 0)); /* the sequence number expected next */
    put_u16(p + 3, detail);
    return 5;
}

/* An error about a frame that was not accepted: no sequence state changes, the reply cache is kept. */
static void send_unaccepted_error(uint8_t reason, uint16_t seq, uint16_t detail)
{
    send_frame(error_body, MSG_ERROR, seq, error_payload(error_body + MT_HEADER_SIZE, reason, detail));
}

static void send_link_error(uint8_t reason, uint16_t detail)
{
    send_unaccepted_error(reason, (uint16_t)(synced ? last_seq + 1 : 0), detail);
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    if (n > 255)
        n = 255;
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

static int handle_hello(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    (void)payload;
    (void)len;
    uint8_t *p = reply;
    *p++ = MT_PROTOCOL_VERSION;
    *p++ = (uint8_t)((board_is_emulated() ? HELLO_FLAG_EMULATED : 0) | (restored_seq ? HELLO_FLAG_RESTORED : 0));
    put_u16(p, MT_MAX_PAYLOAD);
    p += 2;
    put_u32(p, board_counter_hz());
    p += 4;
    p += put_str(p, board_name());
    p += put_str(p, MT_FIRMWARE_VERSION);
    p += put_str(p, board_counter_unit());
    *p++ = model_hash_len;
    if (model_hash_len)
        memcpy(p, model_hash, model_hash_len);
    p += model_hash_len;
    put_u32(p, restored_seq);
    p += 4;
    return (int)(p - reply);
}

static int handle_ping(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    memcpy(reply, payload, len);
    return len;
}

static int handle_link_stats(const uint8_t *payload, uint16_t len, uint8_t *reply)
{
    (void)payload;
    (void)len;
    const uint32_t *counters = &stats.frames_ok;
    size_t n = sizeof stats / sizeof(uint32_t);
    for (size_t i = 0; i < n; i++)
        put_u32(reply + 4 * i, counters[i]);
    put_u32(reply + 4 * n, board_stack_unused());
    uint64_t now = board_counter();
    put_u32(reply + 4 * n + 4, (uint32_t)now);
    put_u32(reply + 4 * n + 8, (uint32_t)(now >> 32));
    put_u32(reply + 4 * n + 12, board_uart_overruns());
    return (int)(4 * n + 16);
}

static const mt_route link_routes[] = {
    {MSG_HELLO, handle_hello},
    {MSG_PING, handle_ping},
    {MSG_LINK_STATS, handle_link_stats},
};

static mt_handler find_handler(uint8_t type)
{
    for (size_t i = 0; i < sizeof link_routes / sizeof link_routes[0]; i++)
        if (link_routes[i].type == type)
            return link_routes[i].handle;
    for (size_t i = 0; i < app_route_count; i++)
        if (app_routes[i].type == type)
            return app_routes[i].handle;
    return 0;
}

static void forget_replies(void)
{
    tx_len = 0;
    memset(older_len, 0, sizeof older_len);
}

void protocol_send_hello(void)
{
    int n = handle_hello(0, 0, tx_body + MT_HEADER_SIZE);
    tx_body[MT_HEADER_SIZE + 1] |= HELLO_FLAG_BOOT;
    send_frame(tx_body, MSG_HELLO | MT_REPLY, 0, (uint16_t)n);
    forget_replies();
}

/* The last reply becomes an older one (kept if short) before the next reply overwrites tx_body. */
static void age_last_reply(void)
{
    size_t n = tx_len <= OLDER_BODY_MAX ? tx_len : 0;
    memcpy(older_body[older_next], tx_body, n);
    older_len[older_next] = (uint8_t)n;
    older_next = (uint8_t)((older_next + 1) % OLDER_REPLIES);
}

/* Send the stored reply to `seq` again; 0 if it is not stored. */
static int replay(uint16_t seq)
{
    uint16_t age = (uint16_t)(last_seq - seq); /* 0: the last accepted request */
    if (age == 0 && tx_len) {
        send_encoded(tx_body, tx_len);
        return 1;
    }
    if (age == 0 || age >= MT_REPLAY_DEPTH)
        return 0;
    unsigned slot = (older_next + OLDER_REPLIES - age) % OLDER_REPLIES;
    if (!older_len[slot])
        return 0;
    send_encoded(older_body[slot], older_len[slot]);
    return 1;
}

void protocol_send_report(uint8_t *frame, uint16_t payload_len)
{
    static uint16_t report_seq;
    send_frame(frame, MSG_REPORT | MT_REPLY, report_seq++, payload_len);
}

static void handle_request(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len)
{
    if (type != MSG_HELLO && synced) {
        if (replay(seq)) {
            /* The host did not get our reply: send the same bytes again, do not run the request twice. */
            stats.replayed++;
            return;
        }
        if (seq != (uint16_t)(last_seq + 1)) {
            stats.out_of_order++;
            send_unaccepted_error(ERR_OUT_OF_ORDER, seq, seq);
            return;
        }
        age_last_reply();
    } else {
        forget_replies(); /* HELLO (re)synchronises: stored replies belong to the old numbering */
    }
    /* HELLO (re)synchronises: any sequence number is accepted and becomes the last one. */
    synced = 1;
    last_seq = seq;
    stats.frames_ok++;
    uint8_t *reply = tx_body + MT_HEADER_SIZE;
    mt_handler handle = find_handler(type);
    int n = handle ? handle(payload, len, reply) : -ERR_UNKNOWN_TYPE;
    if (n < 0) {
        if (n == -ERR_UNKNOWN_TYPE)
            stats.unknown_type++;
        const uint8_t reason = (uint8_t)(-n & 0xFF);
        const uint16_t detail = (-n >> 8) ? (uint16_t)(-n >> 8) : type;
        tx_len = send_frame(tx_body, MSG_ERROR, seq, error_payload(reply, reason, detail));
    } else {
        tx_len = send_frame(tx_body, (uint8_t)(type | MT_REPLY), seq, (uint16_t)n);
    }
}

static void end_of_frame(void)
{
    if (rx_overflow) {
        stats.too_long++;
        send_link_error(ERR_TOO_LONG, 0);
        return;
    }
    if (rx_len == 0)
        return; /* back-to-back delimiters: idle line */
    int n = cobs_decode_in_place(rx_buf, rx_len);
    if (n < 0) {
        stats.bad_frame++;
        send_link_error(ERR_BAD_FRAME, 0);
        return;
    }
    if (n < MT_HEADER_SIZE + MT_CRC_SIZE) {
        stats.bad_length++;
        send_link_error(ERR_BAD_LENGTH, (uint16_t)n);
        return;
    }
    size_t body = (size_t)n - MT_CRC_SIZE;
    if (crc16_ccitt(rx_buf, body) != get_u16(rx_buf + body)) {
        stats.bad_crc++;
        send_link_error(ERR_BAD_CRC, 0);
        return;
    }
    uint16_t len = get_u16(rx_buf + 3);
    if (len > MT_MAX_PAYLOAD || len != body - MT_HEADER_SIZE) {
        stats.bad_length++;
        send_link_error(ERR_BAD_LENGTH, len);
        return;
    }
    handle_request(rx_buf[0], get_u16(rx_buf + 1), rx_buf + MT_HEADER_SIZE, len);
}

void protocol_poll(void)
{
    int c;
    while ((c = board_uart_read_byte()) >= 0) {
        if (c == 0) {
            end_of_frame();
            rx_len = 0;
            rx_overflow = 0;
        } else if (rx_len < sizeof rx_buf) {
            rx_buf[rx_len++] = (uint8_t)c;
        } else {
            rx_overflow = 1; /* keep discarding until the next delimiter */
        }
    }
}
