#ifndef MT_CRC16_H
#define MT_CRC16_H
#include <stddef.h>
#include <stdint.h>

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor ("123456789" -> 0x29B1). */
uint16_t crc16_ccitt(const uint8_t *data, size_t n);

#endif
