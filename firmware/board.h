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

/* One received byte (0..255), or -1 when none is waiting. Never blocks. Bytes are received by the UART's
 * interrupt into a ring buffer; when it is full, reception pauses (the UART's own FIFO, then the line, holds
 * the rest) until bytes are read. */
int board_uart_read_byte(void);

/* Bytes lost on reception since reset: the UART's overrun flag (a byte arrived before the previous one was
 * taken, e.g. while the CPU was stalled by a flash write). */
uint32_t board_uart_overruns(void);

/* Sleep until something may have arrived (WFI with the receive interrupt armed); returns at once when bytes
 * are waiting. */
void board_wait_for_input(void);

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

/* Persistent storage for the trained state (firmware/persist.c): two slots of board_slot_bytes() bytes each,
 * in the board's flash (a file on the host through semihosting under QEMU, a file for the host board).
 * Erasing sets bytes to 0xFF; programming writes pages of BOARD_PAGE_BYTES at page-aligned offsets (bytes
 * left at 0xFF stay erased). Each returns 0, or a nonzero BOARD_STORAGE_* code. */
#define BOARD_PAGE_BYTES 256u
enum { BOARD_STORAGE_OK = 0, BOARD_STORAGE_ERASE = 1, BOARD_STORAGE_PROGRAM = 2, BOARD_STORAGE_NONE = 5 };
uint32_t board_slot_bytes(void);
int board_slot_erase(int slot, uint32_t bytes); /* erases at least the first `bytes` bytes of the slot */
int board_slot_program(int slot, uint32_t offset, const uint8_t *page);
int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n);

/* For power-loss tests: stop as if the power had been cut (emulated boards first say so on the emulator's
 * console, where a test waits for it before killing the emulator). */
void board_halt(const char *why) __attribute__((noreturn));

/* Stop the program: semihosting exit under QEMU (the exit code becomes QEMU's), exit() on the host,
 * a breakpoint loop on silicon. */
void board_exit(int code) __attribute__((noreturn));

#endif
