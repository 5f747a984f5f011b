/* ARM PL011 UART (Stellaris LM3S6965 under QEMU; UART0 of the RP2040): DR +0x00 (bit 11 overrun), FR +0x18
 * (TXFF bit5, RXFE bit4), IBRD/FBRD +0x24/+0x28, LCRH +0x2C, CR +0x30, IMSC +0x38 (RXIM bit4, RTIM bit6),
 * ICR +0x44. With the FIFO on, the receive interrupt fires at the FIFO's trigger level and the receive
 * timeout interrupt picks up the bytes below it. */
#include "board.h"
#include "board_internal.h"

#define UART_DR REG32(MT_UART_BASE + 0x00)
#define UART_FR REG32(MT_UART_BASE + 0x18)
#define UART_IBRD REG32(MT_UART_BASE + 0x24)
#define UART_FBRD REG32(MT_UART_BASE + 0x28)
#define UART_LCRH REG32(MT_UART_BASE + 0x2C)
#define UART_CR REG32(MT_UART_BASE + 0x30)
#define UART_IMSC REG32(MT_UART_BASE + 0x38)
#define UART_ICR REG32(MT_UART_BASE + 0x44)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define DR_OVERRUN (1u << 11)
#define RX_IRQS ((1u << 4) | (1u << 6)) /* receive, receive timeout */

void uart_init(void)
{
    uint32_t divisor_x64 = (uint32_t)((MT_UART_CLOCK_HZ * 4ull + MT_UART_BAUD / 2) / MT_UART_BAUD); /* 1/64ths */
    UART_CR = 0;
    UART_IBRD = divisor_x64 >> 6;
    UART_FBRD = divisor_x64 & 63;
    UART_LCRH = (3u << 5) | (1u << 4); /* 8 bits, FIFOs on */
    UART_IMSC = RX_IRQS;
    UART_CR = (1u << 0) | (1u << 8) | (1u << 9); /* enable, TX, RX */
    nvic_enable(MT_UART_IRQ);
}

void uart_rx_irq(int on) { UART_IMSC = on ? RX_IRQS : 0; }

void uart_rx_drain(void)
{
    while (!(UART_FR & FR_RXFE) && rx_ring_room()) {
        uint32_t dr = UART_DR;
        if (dr & DR_OVERRUN)
            rx_count_overrun();
        rx_ring_put((uint8_t)dr);
    }
}

void uart_irq_handler(void)
{
    UART_ICR = RX_IRQS;
    uart_rx_drain();
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (UART_FR & FR_TXFF)
            ;
        UART_DR = data[i];
    }
}
