/* Exit under emulation: ARM semihosting SYS_EXIT_EXTENDED, so QEMU exits with our status code. */
#include "board.h"

void board_exit(int code)
{
#if MT_EMULATED
    volatile uint32_t block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
    register uint32_t r0 __asm("r0") = 0x20; /* SYS_EXIT_EXTENDED */
    register volatile uint32_t *r1 __asm("r1") = block;
    __asm volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
#else
    (void)code;
#endif
    for (;;)
        __asm volatile("bkpt 0");
}
