/* Hooks between the shared board files; the manifest picks one UART driver and the build passes
 * MT_BOARD_NAME, MT_UART_BASE, MT_CLOCK_HZ and MT_EMULATED. */
#ifndef MT_BOARD_INTERNAL_H
#define MT_BOARD_INTERNAL_H
#include <stdint.h>

void counter_init(void);
void uart_init(void);

#define REG32(addr) (*(volatile uint32_t *)(addr))

#endif
