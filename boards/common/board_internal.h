/* Hooks between the shared board files. The manifest picks one UART driver and the build passes MT_BOARD_NAME,
 * MT_UART_BASE, MT_UART_IRQ, MT_UART_CLOCK_HZ, MT_UART_BAUD, MT_UART_RX_BUFFER, MT_CLOCK_HZ and MT_EMULATED. */
#ifndef MT_BOARD_INTERNAL_H
#define MT_BOARD_INTERNAL_H
#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* Clocks and pins before anything else (boards/<name>/soc.c; nothing on emulated boards). */
void soc_init(void);
void counter_init(void);

/* The UART driver (uart_<kind>.c): set up the line with its receive interrupt on; switch that interrupt on
 * or off; move the bytes waiting in the UART into the ring while it has room; the interrupt handler (the
 * vector of MT_UART_IRQ: clears the UART's flags, counts overruns, drains). */
void uart_init(void);
void uart_rx_irq(int on);
void uart_rx_drain(void);
void uart_irq_handler(void);

/* The receive ring (uart_rx.c), for the driver: is there room for one more byte (when not, the receive
 * interrupt has been switched off and the byte must stay in the UART)? Store one byte. Count an overrun. */
int rx_ring_room(void);
void rx_ring_put(uint8_t c);
void rx_count_overrun(void);

/* ARM semihosting call (emulated boards): operation, parameter block; returns r0. */
int semihost_call(int op, const void *args);

static inline void nvic_enable(unsigned irq) { REG32(0xE000E100 + 4 * (irq / 32)) = 1u << (irq % 32); }

#endif
