/* Nucleo-F446RE: STM32F446RE at 180 MHz from the HSI (PLL 16 / 8 * 180 / 2, over-drive, 5 flash wait states);
 * APB1 45 MHz, APB2 90 MHz. USART2 on PA2 (TX) / PA3 (RX), alternate function 7, wired to the ST-LINK's
 * virtual COM port. */
#include "board_internal.h"
#include "stm32_clock.h"

#define FLASH_ACR_5WS_CACHES (5u | (1u << 8) | (1u << 9) | (1u << 10)) /* prefetch, I-cache, D-cache */

void soc_init(void)
{
    stm32_clock_init(8, 180, 8, FLASH_ACR_5WS_CACHES, 5 /* APB1 /4 */, 4 /* APB2 /2 */);
    REG32(RCC_AHB1ENR) |= 1u << 0;  /* GPIOA */
    REG32(RCC_APB1ENR) |= 1u << 17; /* USART2 */
    (void)REG32(RCC_APB1ENR);
    stm32_pin_af(GPIOA_BASE, 2, 7);
    stm32_pin_af(GPIOA_BASE, 3, 7);
}
