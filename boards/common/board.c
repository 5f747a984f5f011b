/* The parts of the board interface that only depend on the manifest's defines. */
#include "board.h"
#include "board_internal.h"

/* Boards whose clocks or pins need setting up provide their own (boards/<name>/soc.c). */
__attribute__((weak)) void soc_init(void) {}

void board_init(void)
{
    soc_init();
    counter_init();
    uart_init();
}

const char *board_name(void) { return MT_BOARD_NAME; }
int board_is_emulated(void) { return MT_EMULATED; }
