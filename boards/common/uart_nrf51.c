/* Nordic nRF51 UART (no DMA; QEMU microbit): TASKS_STARTRX +0x000, TASKS_STARTTX +0x008,
 * EVENTS_RXDRDY +0x108, EVENTS_TXDRDY +0x11C, EVENTS_ERROR +0x124, INTENSET/INTENCLR +0x304/+0x308
 * (RXDRDY bit 2), ERRORSRC +0x480 (OVERRUN bit 0, write 1 to clear), ENABLE +0x500 (4), PSELTXD/PSELRXD
 * +0x50C/+0x514, RXD +0x518, TXD +0x51C, BAUDRATE +0x524. An event is cleared by writing 0; RXDRDY is
 * cleared before RXD is read, so a byte arriving meanwhile raises it again. */
#include "board.h"
#include "board_internal.h"

#define UART_STARTRX REG32(MT_UART_BASE + 0x000)
#define UART_STARTTX REG32(MT_UART_BASE + 0x008)
#define UART_RXDRDY REG32(MT_UART_BASE + 0x108)
#define UART_TXDRDY REG32(MT_UART_BASE + 0x11C)
#define UART_ERROR REG32(MT_UART_BASE + 0x124)
#define UART_INTENSET REG32(MT_UART_BASE + 0x304)
#define UART_INTENCLR REG32(MT_UART_BASE + 0x308)
#define UART_ERRORSRC REG32(MT_UART_BASE + 0x480)
#define UART_ENABLE REG32(MT_UART_BASE + 0x500)
#define UART_PSELTXD REG32(MT_UART_BASE + 0x50C)
#define UART_PSELRXD REG32(MT_UART_BASE + 0x514)
#define UART_RXD REG32(MT_UART_BASE + 0x518)
#define UART_TXD REG32(MT_UART_BASE + 0x51C)
#define UART_BAUDRATE REG32(MT_UART_BASE + 0x524)
#define INT_RXDRDY (1u << 2)
#define BAUD_115200 0x01D7E000u
#define MICROBIT_TX_PIN 24 /* to the interface chip's USB serial port */
#define MICROBIT_RX_PIN 25

void uart_init(void)
{
    UART_PSELTXD = MICROBIT_TX_PIN;
    UART_PSELRXD = MICROBIT_RX_PIN;
    UART_BAUDRATE = BAUD_115200;
    UART_ENABLE = 4;
    UART_INTENSET = INT_RXDRDY;
    UART_STARTTX = 1;
    UART_STARTRX = 1;
    nvic_enable(MT_UART_IRQ);
}

void uart_rx_irq(int on)
{
    if (on)
        UART_INTENSET = INT_RXDRDY;
    else
        UART_INTENCLR = INT_RXDRDY;
}

void uart_rx_drain(void)
{
    while (UART_RXDRDY && rx_ring_room()) {
        UART_RXDRDY = 0;
        rx_ring_put((uint8_t)UART_RXD);
    }
}

void uart_irq_handler(void)
{
    if (UART_ERROR) {
        UART_ERROR = 0;
        if (UART_ERRORSRC & 1u) {
            UART_ERRORSRC = 1u;
            rx_count_overrun();
        }
    }
    uart_rx_drain();
}

void board_uart_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        UART_TXDRDY = 0;
        UART_TXD = data[i];
        while (!UART_TXDRDY)
            ;
    }
}
