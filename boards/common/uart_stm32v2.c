/* STM32F7 USART (the newer USART IP, also on L4/G4/H7): CR1 +0x00 (UE bit0, RE bit2, TE bit3, RXNEIE bit5),
 * BRR +0x0C, ISR +0x1C (ORE bit3, RXNE bit5, TXE bit7), ICR +0x20 (ORECF bit3), RDR +0x24, TDR +0x28.
 * RXNEIE also enables the overrun interrupt; an overrun is cleared through ICR. */
#include "board.h"
#include "board_internal.h"

#define USART_CR1 REG32(MT_UART_BASE + 0x00)
#define USART_BRR REG32(MT_UART_BASE + 0x0C)
#define USART_ISR REG32(MT_UART_BASE + 0x1C)
#define USART_ICR REG32(MT_UART_BASE + 0x20)
#define USART_RDR REG32(MT_UART_BASE + 0x24)
#define USART_TDR REG32(MT_UART_BASE + 0x28)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)
#define CR1_ON ((1u << 0) | (1u << 2) | (1u << 3))
#define CR1_RXNEIE (1u << 5)

void uart_init(void)
{
    USART_CR1 = 0;
    USART_BRR = (MT_UART_CLOCK_HZ + MT_UART_BAUD / 2) / MT_UART_BAUD; /* 16x oversampling */
    USART_CR1 = CR1_ON | CR1_RXNEIE;
    nvic_enable(MT_UART_IRQ);
}

void uart_rx_irq(int on) { USART_CR1 = CR1_ON | (on ? CR1_RXNEIE : 0); }

void uart_rx_drain(void)
{
    while ((USART_ISR & ISR_RXNE) && rx_ring_room())
        rx_ring_put((uint8_t)USART_RDR);
}

void uart_irq_handler(void)
{
    if (USART_ISR & ISR_ORE) {
        USART_ICR = ISR_ORE;
        rx_count_overrun();
    }
    uart_rx_drain();
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (!(USART_ISR & ISR_TXE))
            ;
        USART_TDR = data[i];
    }
}
