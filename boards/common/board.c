/* The parts of the board interface that only depend on the manifest's defines. */
#include "board.h"
#include "board_internal.h"

void board_init(void)
{
    counter_init();
    uart_init();
}

const char *board_name(void) { return MT_BOARD_NAME; }
int board_is_emulated(void) { return MT_EMULATED; }
