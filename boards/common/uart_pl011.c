/* ARM PL011 UART (Stellaris LM3S6965): DR +0x0, FR +0x18 (TXFF bit5, RXFE bit4), IBRD/FBRD +0x24/+0x28,
 * LCRH +0x2C, CR +0x30. */
#include "board.h"
#include "board_internal.h"

#define UART_DR REG32(MT_UART_BASE + 0x00)
#define UART_FR REG32(MT_UART_BASE + 0x18)
#define UART_IBRD REG32(MT_UART_BASE + 0x24)
#define UART_FBRD REG32(MT_UART_BASE + 0x28)
#define UART_LCRH REG32(MT_UART_BASE + 0x2C)
#define UART_CR REG32(MT_UART_BASE + 0x30)

void uart_init(void)
{
    uint32_t divisor_x64 = (uint32_t)((MT_CLOCK_HZ * 4ull) / 115200); /* baud divisor in 1/64ths */
    UART_CR = 0;
    UART_IBRD = divisor_x64 >> 6;
    UART_FBRD = divisor_x64 & 63;
    UART_LCRH = (3u << 5) | (1u << 4); /* 8 bits, FIFOs on */
    UART_CR = (1u << 0) | (1u << 8) | (1u << 9); /* enable, TX, RX */
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (UART_FR & (1u << 5))
            ;
        UART_DR = data[i];
    }
}

int board_uart_read_byte(void)
{
    return (UART_FR & (1u << 4)) ? -1 : (int)(UART_DR & 0xFF);
}
