/* Leaving the program: under emulation, ARM semihosting SYS_EXIT_EXTENDED, so QEMU exits with our status code. */
#include "board.h"
#include "board_internal.h"

#if MT_EMULATED
int semihost_call(int op, const void *args)
{
    register int r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = args;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
#endif

void board_exit(int code)
{
#if MT_EMULATED
    const uint32_t block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
    semihost_call(0x20 /* SYS_EXIT_EXTENDED */, block);
#else
    (void)code;
#endif
    for (;;)
        __asm volatile("bkpt 0");
}

void board_halt(const char *why)
{
#if MT_EMULATED
    semihost_call(0x04 /* SYS_WRITE0: to the emulator's console */, why);
#else
    (void)why;
#endif
    __asm volatile("cpsid i" ::: "memory");
    for (;;)
        __asm volatile("wfi");
}
