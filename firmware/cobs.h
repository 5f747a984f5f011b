/* Consistent Overhead Byte Stuffing: removes every 0x00 from a frame body so 0x00 can delimit frames.
 * Overhead: at most one byte per 254 bytes of body, plus one. */
#ifndef MT_COBS_H
#define MT_COBS_H
#include <stddef.h>
#include <stdint.h>

#define COBS_MAX_ENCODED(n) ((n) + (n) / 254 + 1)

/* Decode in place (the output is never longer than the input). Returns the decoded length,
 * or -1 when the input is not valid COBS (a zero byte, or a code that runs past the end). */
int cobs_decode_in_place(uint8_t *buf, size_t n);

/* Stream the encoding of body[0..n) through put(), without a second buffer. */
void cobs_encode_stream(const uint8_t *body, size_t n, void (*put)(const uint8_t *p, size_t len));

#endif
