/* nRF52840 DK: the CPU runs at 64 MHz whatever the source; the UARTE's baud rate is only accurate from the
 * 32 MHz crystal (HFXO), which is started here. CLOCK: TASKS_HFCLKSTART +0x000, EVENTS_HFCLKSTARTED +0x100. */
#include "board_internal.h"

#define CLOCK_TASKS_HFCLKSTART REG32(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG32(0x40000100u)

void soc_init(void)
{
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (!CLOCK_EVENTS_HFCLKSTARTED)
        ;
}
