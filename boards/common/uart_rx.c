/* Interrupt-driven reception shared by every UART driver: the driver's interrupt handler moves received bytes
 * into this ring; the protocol loop takes them out with board_uart_read_byte(). When the ring is full the
 * handler switches the receive interrupt off instead of dropping bytes, so they wait in the UART (QEMU holds
 * them back; silicon overruns, which the driver counts) until the loop has made room. */
#include "board.h"
#include "board_internal.h"

#define RX_SIZE MT_UART_RX_BUFFER
_Static_assert((RX_SIZE & (RX_SIZE - 1)) == 0, "the receive ring's size must be a power of two");

static uint8_t ring[RX_SIZE];
static volatile uint32_t head, tail; /* head: written by the interrupt, tail: by the loop; free-running */
static volatile uint8_t paused;
static volatile uint32_t overruns;

int rx_ring_room(void)
{
    if (head - tail < RX_SIZE)
        return 1;
    uart_rx_irq(0);
    paused = 1;
    return 0;
}

void rx_ring_put(uint8_t c)
{
    ring[head % RX_SIZE] = c;
    head++;
}

void rx_count_overrun(void) { overruns++; }
uint32_t board_uart_overruns(void) { return overruns; }

int board_uart_read_byte(void)
{
    if (head == tail)
        return -1;
    uint8_t c = ring[tail % RX_SIZE];
    __asm volatile("" ::: "memory"); /* read the byte before its slot is handed back to the interrupt */
    tail++;
    if (paused) {
        /* Some UARTs raise no interrupt for a byte that arrived while it was off: take those now. */
        __asm volatile("cpsid i" ::: "memory");
        paused = 0;
        uart_rx_irq(1);
        uart_rx_drain();
        __asm volatile("cpsie i" ::: "memory");
    }
    return c;
}

void board_wait_for_input(void)
{
    /* With interrupts masked, a byte arriving between the check and WFI still wakes the core; its handler
     * runs when they are unmasked. */
    __asm volatile("cpsid i" ::: "memory");
    if (head == tail)
        __asm volatile("wfi");
    __asm volatile("cpsie i" ::: "memory");
}
