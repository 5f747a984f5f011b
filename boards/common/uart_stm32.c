/* STM32F4 USART (USART v1: QEMU netduinoplus2, Nucleo-F446RE): SR +0x0 (TXE bit7, RXNE bit5, ORE bit3),
 * DR +0x4, BRR +0x8, CR1 +0xC (UE bit13, RXNEIE bit5, TE bit3, RE bit2). An overrun is cleared by reading
 * SR then DR; with RXNEIE set it also raises the interrupt. */
#include "board.h"
#include "board_internal.h"

#define USART_SR REG32(MT_UART_BASE + 0x0)
#define USART_DR REG32(MT_UART_BASE + 0x4)
#define USART_BRR REG32(MT_UART_BASE + 0x8)
#define USART_CR1 REG32(MT_UART_BASE + 0xC)
#define SR_ORE (1u << 3)
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_ON ((1u << 13) | (1u << 3) | (1u << 2))
#define CR1_RXNEIE (1u << 5)

void uart_init(void)
{
#ifdef MT_UART_RCC_ENABLE_REG
    REG32(MT_UART_RCC_ENABLE_REG) |= MT_UART_RCC_ENABLE_BIT;
#endif
    USART_BRR = (MT_UART_CLOCK_HZ + MT_UART_BAUD / 2) / MT_UART_BAUD; /* 16x oversampling: mantissa.fraction */
    USART_CR1 = CR1_ON | CR1_RXNEIE;
    nvic_enable(MT_UART_IRQ);
}

void uart_rx_irq(int on) { USART_CR1 = CR1_ON | (on ? CR1_RXNEIE : 0); }

void uart_rx_drain(void)
{
    uint32_t sr;
    while (((sr = USART_SR) & (SR_RXNE | SR_ORE)) && rx_ring_room()) {
        uint8_t c = (uint8_t)USART_DR; /* reading DR after SR also clears ORE */
        if (sr & SR_ORE)
            rx_count_overrun();
        rx_ring_put(c);
    }
}

void uart_irq_handler(void) { uart_rx_drain(); }

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (!(USART_SR & SR_TXE))
            ;
        USART_DR = data[i];
    }
}
