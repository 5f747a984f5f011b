/* The board interface: everything the portable runtime needs from a board.
 * One implementation per UART/timer kind lives in boards/common/, selected by the board manifest;
 * the `host` board implements it over a TCP socket so the same firmware runs on Linux. */
#ifndef MT_BOARD_H
#define MT_BOARD_H

#include <stddef.h>
#include <stdint.h>

void board_init(void);

/* Blocking write of n bytes to the serial line. */
void board_uart_write(const uint8_t *data, size_t n);

/* One received byte (0..255), or -1 when none is waiting. Never blocks. */
int board_uart_read_byte(void);

/* Monotonic cost counter in board_counter_unit() units, board_counter_hz() per second:
 * DWT cycles on silicon, instructions under QEMU -icount shift=0 (SysTick scaled), ns on the host board. */
uint64_t board_counter(void);
const char *board_counter_unit(void);
uint32_t board_counter_hz(void);

/* Bytes of the stack reserve never used since reset (stack painting); 0 where not measured. */
uint32_t board_stack_unused(void);

/* Name from the manifest, and whether the board is emulated (QEMU or host). */
const char *board_name(void);
int board_is_emulated(void);

/* Stop the program: semihosting exit under QEMU (the exit code becomes QEMU's), exit() on the host,
 * a breakpoint loop on silicon. */
void board_exit(int code) __attribute__((noreturn));

#endif
