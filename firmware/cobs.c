#include "cobs.h"

int cobs_decode_in_place(uint8_t *buf, size_t n)
{
    size_t in = 0, out = 0;
    while (in < n) {
        uint8_t code = buf[in++];
        if (code == 0 || in + code - 1 > n)
            return -1;
        for (uint8_t i = 1; i < code; i++) {
            if (buf[in] == 0)
                return -1;
            buf[out++] = buf[in++];
        }
        /* A code below 0xFF stands for a zero, except at the very end of the frame. */
        if (code != 0xFF && in < n)
            buf[out++] = 0;
    }
    return (int)out;
}

void cobs_encode_stream(const uint8_t *body, size_t n, void (*put)(const uint8_t *p, size_t len))
{
    size_t start = 0;
    for (;;) {
        /* A block is up to 254 non-zero bytes, ended by a zero or by the end of the body. */
        size_t end = start;
        while (end < n && body[end] != 0 && end - start < 254)
            end++;
        uint8_t code = (uint8_t)(end - start + 1);
        put(&code, 1);
        put(body + start, end - start);
        if (end == n)
            return;
        /* A full block (code 0xFF) implies no zero; any other code stands for the zero at body[end]. */
        start = (end - start == 254) ? end : end + 1;
    }
}
