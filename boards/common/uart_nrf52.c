/* Nordic nRF52 UARTE (UART with EasyDMA; nRF52840): TASKS_STARTRX +0x000, TASKS_STARTTX +0x008,
 * EVENTS_ENDRX +0x110, EVENTS_ERROR +0x124, EVENTS_ENDTX +0x120, EVENTS_RXSTARTED +0x14C, SHORTS +0x200
 * (ENDRX_STARTRX bit 5), INTENSET +0x304 (ENDRX bit 4, ERROR bit 9, RXSTARTED bit 19), ERRORSRC +0x480
 * (OVERRUN bit 0), ENABLE +0x500 (8), PSEL.TXD/RXD +0x50C/+0x514, BAUDRATE +0x524, RXD.PTR/MAXCNT/AMOUNT
 * +0x534/+0x538/+0x53C, TXD.PTR/MAXCNT +0x544/+0x548, CONFIG +0x56C.
 * Reception never stops: DMA fills two one-byte buffers in turn (the ENDRX->STARTRX short restarts it at once;
 * RXD.PTR is double-buffered, so the next buffer is set as soon as the current one has started) and the
 * interrupt copies each into the ring. A full ring cannot hold bytes back here: they are counted as lost. */
#include "board.h"
#include "board_internal.h"

#define UARTE(off) REG32(MT_UART_BASE + (off))
#define TASKS_STARTRX UARTE(0x000)
#define TASKS_STARTTX UARTE(0x008)
#define EVENTS_ENDRX UARTE(0x110)
#define EVENTS_ENDTX UARTE(0x120)
#define EVENTS_ERROR UARTE(0x124)
#define EVENTS_RXSTARTED UARTE(0x14C)
#define SHORTS UARTE(0x200)
#define INTENSET UARTE(0x304)
#define ERRORSRC UARTE(0x480)
#define ENABLE UARTE(0x500)
#define PSEL_TXD UARTE(0x50C)
#define PSEL_RXD UARTE(0x514)
#define BAUDRATE UARTE(0x524)
#define RXD_PTR UARTE(0x534)
#define RXD_MAXCNT UARTE(0x538)
#define RXD_AMOUNT UARTE(0x53C)
#define TXD_PTR UARTE(0x544)
#define TXD_MAXCNT UARTE(0x548)
#define CONFIG UARTE(0x56C)
#define BAUD_115200 0x01D60000u
#define DK_TX_PIN 6 /* P0.06 and P0.08: the J-Link's virtual COM port on the nRF52840 DK */
#define DK_RX_PIN 8
#define P0_OUTSET REG32(0x50000508u)
#define P0_PIN_CNF(n) REG32(0x50000700u + 4u * (n)) /* bit 0: output; bit 1: input buffer disconnected */

static uint8_t rx_buf[2];
static volatile uint8_t filling; /* the buffer DMA is writing */
static uint8_t tx_buf[64];       /* EasyDMA reads RAM only: frames are copied here */

void uart_init(void)
{
    P0_OUTSET = 1u << DK_TX_PIN; /* TX idles high, also before the UARTE takes the pin */
    P0_PIN_CNF(DK_TX_PIN) = 1u;
    P0_PIN_CNF(DK_RX_PIN) = 0u;
    PSEL_TXD = DK_TX_PIN;
    PSEL_RXD = DK_RX_PIN;
    BAUDRATE = BAUD_115200;
    CONFIG = 0; /* 8N1, no flow control */
    ENABLE = 8;
    RXD_PTR = (uint32_t)&rx_buf[0];
    RXD_MAXCNT = 1;
    SHORTS = 1u << 5;
    INTENSET = (1u << 4) | (1u << 9) | (1u << 19);
    nvic_enable(MT_UART_IRQ);
    TASKS_STARTRX = 1;
}

void uart_rx_irq(int on) { (void)on; }
void uart_rx_drain(void) {}

void uart_irq_handler(void)
{
    if (EVENTS_ERROR) {
        EVENTS_ERROR = 0;
        uint32_t src = ERRORSRC;
        ERRORSRC = src;
        if (src & 1u)
            rx_count_overrun();
    }
    if (EVENTS_ENDRX) { /* before RXSTARTED: `filling` moves on to the buffer that has just started */
        EVENTS_ENDRX = 0;
        if (RXD_AMOUNT) {
            if (rx_ring_room())
                rx_ring_put(rx_buf[filling]);
            else
                rx_count_overrun();
        }
        filling ^= 1;
    }
    if (EVENTS_RXSTARTED) {
        EVENTS_RXSTARTED = 0;
        RXD_PTR = (uint32_t)&rx_buf[filling ^ 1];
    }
}

void board_uart_write(const uint8_t *data, size_t n)
{
    while (n) {
        size_t chunk = n < sizeof tx_buf ? n : sizeof tx_buf;
        for (size_t i = 0; i < chunk; i++)
            tx_buf[i] = data[i];
        TXD_PTR = (uint32_t)tx_buf;
        TXD_MAXCNT = chunk;
        EVENTS_ENDTX = 0;
        TASKS_STARTTX = 1;
        while (!EVENTS_ENDTX)
            ;
        data += chunk;
        n -= chunk;
    }
}
