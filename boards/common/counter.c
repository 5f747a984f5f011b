/* The cost counter. Under QEMU with -icount shift=0 every instruction is 1 ns of virtual time, so SysTick
 * clocked by the CPU ticks once per 1e9/MT_CLOCK_HZ instructions: we report instructions. On silicon DWT
 * CYCCNT counts cycles (it reads 0 under QEMU, hence SysTick there). */
#include "board.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SYSTICK_MAX 0xFFFFFFu

#if MT_EMULATED
static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

void counter_init(void)
{
    SYST_RVR = SYSTICK_MAX;
    SYST_CVR = 0;
    SYST_CSR = 7; /* enable, interrupt on wrap, clock = CPU */
}

uint64_t board_counter(void)
{
    uint32_t wraps, value;
    do { /* read again if SysTick wrapped between the two reads */
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    uint64_t ticks = ((uint64_t)wraps << 24) + (SYSTICK_MAX - value);
#if 1000000000u % MT_CLOCK_HZ == 0
    return ticks * (1000000000u / MT_CLOCK_HZ); /* a whole number of instructions per tick: no division */
#else
    return ticks * 1000000000ull / MT_CLOCK_HZ; /* a 64-bit library division (~100 instructions) */
#endif
}

const char *board_counter_unit(void) { return "instructions"; }
uint32_t board_counter_hz(void) { return 1000000000u; }

#else
#define DEMCR (*(volatile uint32_t *)0xE000EDFC)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004)
static uint32_t last_cycles, cycle_wraps;

void counter_init(void)
{
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1;
}

uint64_t board_counter(void)
{
    uint32_t now = DWT_CYCCNT; /* 32 bits wrap in seconds: extend, assuming reads more often than that */
    if (now < last_cycles)
        cycle_wraps++;
    last_cycles = now;
    return ((uint64_t)cycle_wraps << 32) | now;
}

const char *board_counter_unit(void) { return "cycles"; }
uint32_t board_counter_hz(void) { return MT_CLOCK_HZ; }
#endif
