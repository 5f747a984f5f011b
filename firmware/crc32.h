/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF; zlib.crc32). */
#ifndef MT_CRC32_H
#define MT_CRC32_H
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0, feed the bytes in any number of calls. */
uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t n);

#endif
