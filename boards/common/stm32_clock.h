/* STM32F4/F7 clock tree from the internal 16 MHz HSI (no dependence on a crystal or the ST-LINK's clock
 * output): PLL to SYSCLK with the regulator's over-drive (needed above 168 MHz on the F446, 180 MHz on the
 * F746), flash wait states, APB prescalers. Register offsets are the same on both families (RM0390, RM0385). */
#ifndef MT_STM32_CLOCK_H
#define MT_STM32_CLOCK_H
#include <stdint.h>

#define RCC_BASE 0x40023800u
#define RCC_AHB1ENR (RCC_BASE + 0x30u)
#define RCC_APB1ENR (RCC_BASE + 0x40u)
#define RCC_APB2ENR (RCC_BASE + 0x44u)
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u

/* SYSCLK = 16 MHz / pll_m * pll_n / 2; flash_acr = wait states and accelerator bits of FLASH_ACR;
 * ppre1/ppre2 = RCC_CFGR APB prescaler codes (4: /2, 5: /4). */
void stm32_clock_init(uint32_t pll_m, uint32_t pll_n, uint32_t pll_q, uint32_t flash_acr, uint32_t ppre1,
                      uint32_t ppre2);

/* Route pin `pin` of the GPIO port at `port` to alternate function `af`, with a pull-up. */
void stm32_pin_af(uint32_t port, unsigned pin, unsigned af);

#endif
