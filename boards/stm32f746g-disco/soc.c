/* STM32F746G-DISCO: STM32F746NG at 216 MHz from the HSI (PLL 16 / 8 * 216 / 2, over-drive, 7 flash wait
 * states); APB1 54 MHz, APB2 108 MHz; the Cortex-M7's instruction cache on (the data cache stays off, so the
 * persistence slots read back what was programmed). USART1 on PA9 (TX) / PB7 (RX), alternate function 7,
 * wired to the ST-LINK's virtual COM port. */
#include "board_internal.h"
#include "stm32_clock.h"

#define FLASH_ACR_7WS_ART (7u | (1u << 8) | (1u << 9)) /* prefetch, ART accelerator */
#define SCB_CCR REG32(0xE000ED14u)
#define SCB_ICIALLU REG32(0xE000EF50u)

void soc_init(void)
{
    SCB_ICIALLU = 0; /* invalidate, then enable the instruction cache */
    __asm volatile("dsb\n isb");
    SCB_CCR |= 1u << 17;
    __asm volatile("dsb\n isb");
    stm32_clock_init(8, 216, 9, FLASH_ACR_7WS_ART, 5 /* APB1 /4 */, 4 /* APB2 /2 */);
    REG32(RCC_AHB1ENR) |= (1u << 0) | (1u << 1); /* GPIOA, GPIOB */
    REG32(RCC_APB2ENR) |= 1u << 4;               /* USART1 */
    (void)REG32(RCC_APB2ENR);
    stm32_pin_af(GPIOA_BASE, 9, 7);
    stm32_pin_af(GPIOB_BASE, 7, 7);
}
