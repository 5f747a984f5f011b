#include "stm32_clock.h"

#include "board_internal.h"

#define RCC_CR REG32(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG32(RCC_BASE + 0x04u)
#define RCC_CFGR REG32(RCC_BASE + 0x08u)
#define PWR_CR REG32(0x40007000u)
#define PWR_CSR REG32(0x40007004u)
#define FLASH_ACR REG32(0x40023C00u)
#define CR_PLLON (1u << 24)
#define CR_PLLRDY (1u << 25)
#define PWR_VOS_SCALE1 (3u << 14)
#define PWR_ODEN (1u << 16)
#define PWR_ODSWEN (1u << 17)
#define CSR_ODRDY (1u << 16)
#define CSR_ODSWRDY (1u << 17)
#define CFGR_SW_PLL 2u
#define APB1ENR_PWREN (1u << 28)

void stm32_clock_init(uint32_t pll_m, uint32_t pll_n, uint32_t pll_q, uint32_t flash_acr, uint32_t ppre1,
                      uint32_t ppre2)
{
    REG32(RCC_APB1ENR) |= APB1ENR_PWREN;
    (void)REG32(RCC_APB1ENR); /* the clock is on before PWR is written */
    PWR_CR |= PWR_VOS_SCALE1;
    /* Running from HSI: PLL source HSI (bit 22 clear), P = 2, R = 2 (F446; reserved on the F7). */
    RCC_PLLCFGR = pll_m | (pll_n << 6) | (0u << 16) | (pll_q << 24) | (2u << 28);
    RCC_CR |= CR_PLLON;
    PWR_CR |= PWR_ODEN; /* over-drive: on, then switched to, while SYSCLK is still HSI */
    while (!(PWR_CSR & CSR_ODRDY))
        ;
    PWR_CR |= PWR_ODSWEN;
    while (!(PWR_CSR & CSR_ODSWRDY))
        ;
    FLASH_ACR = flash_acr; /* wait states before the clock goes up */
    while ((FLASH_ACR & 0xFu) != (flash_acr & 0xFu))
        ;
    RCC_CFGR = (ppre1 << 10) | (ppre2 << 13); /* AHB /1 */
    while (!(RCC_CR & CR_PLLRDY))
        ;
    RCC_CFGR |= CFGR_SW_PLL;
    while (((RCC_CFGR >> 2) & 3u) != CFGR_SW_PLL)
        ;
}

void stm32_pin_af(uint32_t port, unsigned pin, unsigned af)
{
    REG32(port + 0x20u + 4u * (pin / 8)) = (REG32(port + 0x20u + 4u * (pin / 8)) & ~(0xFu << (4 * (pin % 8)))) |
                                          (af << (4 * (pin % 8))); /* AFRL / AFRH */
    REG32(port + 0x0Cu) = (REG32(port + 0x0Cu) & ~(3u << (2 * pin))) | (1u << (2 * pin)); /* PUPDR: pull-up */
    REG32(port + 0x00u) = (REG32(port + 0x00u) & ~(3u << (2 * pin))) | (2u << (2 * pin)); /* MODER: AF */
}
