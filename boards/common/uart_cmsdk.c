/* ARM CMSDK APB UART (MPS2 boards): DATA +0x0, STATE +0x4 (bit0 TX full, bit1 RX full), CTRL +0x8. */
#include "board.h"
#include "board_internal.h"

#define UART_DATA REG32(MT_UART_BASE + 0x0)
#define UART_STATE REG32(MT_UART_BASE + 0x4)
#define UART_CTRL REG32(MT_UART_BASE + 0x8)
#define UART_BAUDDIV REG32(MT_UART_BASE + 0x10)

void uart_init(void)
{
    UART_BAUDDIV = MT_CLOCK_HZ / 115200;
    UART_CTRL = 3; /* TX and RX enabled, no interrupts */
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (UART_STATE & 1)
            ;
        UART_DATA = data[i];
    }
}

int board_uart_read_byte(void)
{
    return (UART_STATE & 2) ? (int)(UART_DATA & 0xFF) : -1;
}
