/* The cost counter, reported in HELLO with its unit and rate.
 * - Under QEMU with -icount shift=0 every instruction is 1 ns of virtual time, so SysTick clocked by the CPU
 *   ticks once per 1e9/MT_CLOCK_HZ instructions: we report instructions (DWT CYCCNT reads 0 under QEMU).
 * - On Cortex-M3/M4/M7/M33 silicon: the DWT cycle counter.
 * - On Cortex-M0/M0+ silicon (no DWT cycle counter): SysTick clocked by the CPU, i.e. cycles too. */
#include "board.h"
#include "board_internal.h"

#define SYST_CSR REG32(0xE000E010)
#define SYST_RVR REG32(0xE000E014)
#define SYST_CVR REG32(0xE000E018)
#define SYSTICK_MAX 0xFFFFFFu

#if MT_EMULATED || !MT_HAVE_DWT
static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

void counter_init(void)
{
    SYST_RVR = SYSTICK_MAX;
    SYST_CVR = 0;
    SYST_CSR = 7; /* enable, interrupt on wrap, clock = CPU */
}

/* SysTick ticks since counter_init(), extended past its 24 bits by the wrap interrupt. */
static uint64_t systick_ticks(void)
{
    uint32_t wraps, value;
    do { /* read again if SysTick wrapped between the two reads */
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return ((uint64_t)wraps << 24) + (SYSTICK_MAX - value);
}
#endif

#if MT_EMULATED
uint64_t board_counter(void)
{
    uint64_t ticks = systick_ticks();
#if 1000000000u % MT_CLOCK_HZ == 0
    return ticks * (1000000000u / MT_CLOCK_HZ); /* a whole number of instructions per tick: no division */
#else
    return ticks * 1000000000ull / MT_CLOCK_HZ; /* a 64-bit library division (~100 instructions) */
#endif
}

const char *board_counter_unit(void) { return "instructions"; }
uint32_t board_counter_hz(void) { return 1000000000u; }

#elif !MT_HAVE_DWT
uint64_t board_counter(void) { return systick_ticks(); }
const char *board_counter_unit(void) { return "cycles"; }
uint32_t board_counter_hz(void) { return MT_CLOCK_HZ; }

#else
#define DEMCR REG32(0xE000EDFC)
#define DWT_CTRL REG32(0xE0001000)
#define DWT_CYCCNT REG32(0xE0001004)
#define DWT_LAR REG32(0xE0001FB0)
static uint32_t last_cycles, cycle_wraps;

void counter_init(void)
{
    DEMCR |= 1u << 24;     /* TRCENA */
    DWT_LAR = 0xC5ACCE55u; /* the Cortex-M7 keeps the DWT locked until this is written */
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
