/* ARM CMSDK APB UART (MPS2 boards): DATA +0x0, STATE +0x4 (bit0 TX full, bit1 RX full, bit3 RX overrun),
 * CTRL +0x8 (bit0 TX, bit1 RX, bit3 RX interrupt), INTSTATUS/INTCLEAR +0xC (bit1 RX), BAUDDIV +0x10. */
#include "board.h"
#include "board_internal.h"

#define UART_DATA REG32(MT_UART_BASE + 0x0)
#define UART_STATE REG32(MT_UART_BASE + 0x4)
#define UART_CTRL REG32(MT_UART_BASE + 0x8)
#define UART_INTCLEAR REG32(MT_UART_BASE + 0xC)
#define UART_BAUDDIV REG32(MT_UART_BASE + 0x10)
#define CTRL_TX_RX 3u
#define CTRL_RX_IRQ (1u << 3)
#define STATE_RX_FULL (1u << 1)
#define STATE_RX_OVERRUN (1u << 3)

void uart_init(void)
{
    UART_BAUDDIV = MT_UART_CLOCK_HZ / MT_UART_BAUD;
    UART_CTRL = CTRL_TX_RX | CTRL_RX_IRQ;
    nvic_enable(MT_UART_IRQ);
}

void uart_rx_irq(int on) { UART_CTRL = CTRL_TX_RX | (on ? CTRL_RX_IRQ : 0); }

void uart_rx_drain(void)
{
    while ((UART_STATE & STATE_RX_FULL) && rx_ring_room())
        rx_ring_put((uint8_t)UART_DATA);
}

void uart_irq_handler(void)
{
    UART_INTCLEAR = 2; /* RX */
    if (UART_STATE & STATE_RX_OVERRUN) {
        UART_STATE = STATE_RX_OVERRUN;
        rx_count_overrun();
    }
    uart_rx_drain();
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (UART_STATE & 1)
            ;
        UART_DATA = data[i];
    }
}
