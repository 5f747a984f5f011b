/* The serial protocol, board side. The specification is docs/protocol.md; constants here and in
 * mcu_train/protocol.py are checked against it by tests/test_protocol_doc.py. */
#ifndef MT_PROTOCOL_H
#define MT_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include "cobs.h"

#define MT_PROTOCOL_VERSION 1
#define MT_MAX_PAYLOAD 1024
#define MT_HEADER_SIZE 5 /* type u8, seq u16 LE, payload length u16 LE */
#define MT_CRC_SIZE 2
#define MT_MAX_BODY (MT_HEADER_SIZE + MT_MAX_PAYLOAD + MT_CRC_SIZE)
#define MT_MAX_ENCODED COBS_MAX_ENCODED(MT_MAX_BODY)

#define MT_REPLY 0x80 /* a reply's type is its request's type | MT_REPLY */

/* Replies kept for repeated requests: the last one in full, and those of the MT_REPLAY_DEPTH - 1 requests
 * before it when their payload is at most MT_REPLAY_SHORT_PAYLOAD bytes. A host may have up to
 * MT_REPLAY_DEPTH such requests in flight. */
#define MT_REPLAY_DEPTH 4
#define MT_REPLAY_SHORT_PAYLOAD 48

enum mt_msg_type {
    MSG_HELLO = 0x01,
    MSG_PING = 0x02,
    MSG_LINK_STATS = 0x03,
    MSG_CLASSIFY = 0x10,
    MSG_PROFILE = 0x11,
    MSG_MODEL_INFO = 0x12,
    MSG_INPUT_PUT = 0x13,
    MSG_TRAIN = 0x20,
    MSG_CONFIG = 0x21,
    MSG_STATS = 0x22,
    MSG_CHECKPOINT_GET = 0x23,
    MSG_CHECKPOINT_PUT = 0x24,
    MSG_PERSIST = 0x25, /* the trained state in the board's own flash (firmware/persist.h) */
    MSG_LABEL = 0x26,   /* the label of the window the board asked about (TRAIN reply flag 0x20) */
    MSG_REPORT = 0x30, /* never requested: sent unsolicited (as MSG_REPORT | MT_REPLY) by protocol_send_report */
    MSG_ERROR = 0x7F,
};

/* HELLO reply flags */
#define HELLO_FLAG_EMULATED 0x01
#define HELLO_FLAG_BOOT 0x02 /* the unsolicited announcement after reset */
#define HELLO_FLAG_RESTORED 0x04 /* the trained state was restored from flash at boot (restored_seq) */

/* MODEL_INFO reply flags */
#define MODEL_INFO_FLAG_TRAINER 0x01 /* TRAIN, CONFIG, STATS and the CHECKPOINT messages are served */

enum mt_error_reason {
    ERR_BAD_CRC = 1,      /* link: CRC mismatch (damaged or truncated frame) */
    ERR_BAD_LENGTH = 2,   /* link: shorter than a header, or length field disagrees / exceeds the maximum */
    ERR_UNKNOWN_TYPE = 3, /* request: no handler for this type */
    ERR_OUT_OF_ORDER = 4, /* request: sequence number neither the expected one nor a repeat of the last */
    ERR_TOO_LONG = 5,     /* link: more bytes than the largest frame before a delimiter */
    ERR_BAD_FRAME = 6,    /* link: not valid COBS */
    ERR_BAD_PAYLOAD = 7,  /* request: payload malformed for its type */
    ERR_MODEL_FAILED = 8, /* request: the model could not run (a kernel rejected its arguments) */
    ERR_BAD_CHECKPOINT = 9, /* request: a checkpoint was refused (detail: which check failed) */
    ERR_BAD_INPUT_CHUNK = 10, /* request: INPUT_PUT refused a chunk (detail: which check failed) */
    ERR_NO_INPUT = 11,      /* request: CLASSIFY/TRAIN without input bytes, and no whole input staged */
    ERR_STORAGE_FAILED = 12, /* request: PERSIST could not write or verify a slot (detail: which step) */
    ERR_NOT_ASKED = 13,      /* request: LABEL refused (detail 1: no request pending, 2: a newer one replaced it) */
};

/* ERR_BAD_INPUT_CHUNK details: the INPUT_PUT check that failed */
enum { INPUT_CHUNK_BAD_OFFSET = 1, /* the offset is not where the staged bytes end (nor 0) */
       INPUT_CHUNK_PAST_END = 2 }; /* the chunk runs past the end of the model's input */

/* A handler that wants an error frame with its own detail (instead of the request type) returns
 * -MT_ERROR_WITH_DETAIL(reason, detail). */
#define MT_ERROR_WITH_DETAIL(reason, detail) ((int)(reason) | ((int)(detail) << 8))

/* A request handler reads the request payload and writes its reply payload (capacity MT_MAX_PAYLOAD).
 * Returns the reply length, or -(mt_error_reason) to answer with an error frame. */
typedef int (*mt_handler)(const uint8_t *payload, uint16_t len, uint8_t *reply);

typedef struct {
    uint8_t type;
    mt_handler handle;
} mt_route;

/* Routes for application messages (the link messages HELLO, PING, LINK_STATS are built in). */
void protocol_init(const mt_route *routes, size_t n_routes);
void protocol_set_model_hash(const uint8_t *hash, uint8_t len);
/* HELLO says the trained state was restored from flash at boot: the slot's sequence number (0: none). */
void protocol_set_restored(uint32_t seq);

/* Announce readiness: an unsolicited HELLO reply with sequence number 0. */
void protocol_send_hello(void);

/* Read every waiting byte and answer every complete frame. Never blocks on input. */
void protocol_poll(void);

/* For firmware that trains on its own sensor: send one unsolicited REPORT frame (docs/protocol.md). `frame`
 * holds MT_HEADER_SIZE free bytes, then the payload_len bytes of the payload, then MT_CRC_SIZE free bytes;
 * the header and CRC are written in place. Reports are numbered by their own counter. */
void protocol_send_report(uint8_t *frame, uint16_t payload_len);

#endif
