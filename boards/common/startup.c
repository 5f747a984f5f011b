/* Reset handler and vector table shared by every Cortex-M board (M0 to M33). No vendor SDK:
 * the linker script (boards/common/sections.ld) provides the symbols used here. */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "board_internal.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _sstack[], _estack[];
int main(void);

#define STACK_PAINT 0xC5C5C5C5u /* stack high-water mark: the deepest word no longer holding this */

void Reset_Handler(void) __attribute__((noreturn));
void Reset_Handler(void)
{
    memcpy(_sdata, _sidata, (size_t)((char *)_edata - (char *)_sdata));
    memset(_sbss, 0, (size_t)((char *)_ebss - (char *)_sbss));
    /* Paint the unused stack below the current frame so its high-water mark can be measured. */
    for (volatile uint32_t *p = _sstack; p < (uint32_t *)__builtin_frame_address(0) - 16; p++)
        *p = STACK_PAINT;
#if defined(__ARM_FP)
    /* Enable CP10/CP11 before any floating-point instruction. */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm volatile("dsb\n isb");
#endif
    main();
    board_exit(0);
}

/* Bytes of stack never touched since reset (painting is intact up to here). */
uint32_t board_stack_unused(void)
{
    const uint32_t *p = _sstack;
    while (p < _estack && *p == STACK_PAINT)
        p++;
    return (uint32_t)((const char *)p - (const char *)_sstack);
}

static void Fault_Handler(void)
{
    /* Under emulation the emulator exits with a recognisable code instead of hanging. */
    board_exit(0xFA);
}

/* Every external interrupt comes here; only the UART's is enabled. Any other is a bug (exits under
 * emulation). */
static void External_Handler(void)
{
    uint32_t ipsr;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    if (ipsr - 16 == MT_UART_IRQ)
        uart_irq_handler();
    else
        board_exit(0xFB);
}

void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void Default_Handler(void) { board_exit(0xFB); }

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + MT_UART_IRQ + 1])(void) = {
    (void (*)(void))_estack,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (v8-M) */
    0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    [16 ... 16 + MT_UART_IRQ] = External_Handler,
};
