/* STM32F4 USART: SR +0x0 (TXE bit7, RXNE bit5), DR +0x4, BRR +0x8, CR1 +0xC (UE bit13, TE bit3, RE bit2).
 * The same IP is on real STM32F4 boards; the RCC clock enable is harmless under QEMU. */
#include "board.h"
#include "board_internal.h"

#define USART_SR REG32(MT_UART_BASE + 0x0)
#define USART_DR REG32(MT_UART_BASE + 0x4)
#define USART_BRR REG32(MT_UART_BASE + 0x8)
#define USART_CR1 REG32(MT_UART_BASE + 0xC)

void uart_init(void)
{
#ifdef MT_UART_RCC_ENABLE_REG
    REG32(MT_UART_RCC_ENABLE_REG) |= MT_UART_RCC_ENABLE_BIT;
#endif
    USART_BRR = MT_CLOCK_HZ / 115200;
    USART_CR1 = (1u << 13) | (1u << 3) | (1u << 2);
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (!(USART_SR & (1u << 7)))
            ;
        USART_DR = data[i];
    }
}

int board_uart_read_byte(void)
{
    return (USART_SR & (1u << 5)) ? (int)(USART_DR & 0xFF) : -1;
}
