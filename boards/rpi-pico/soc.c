/* Raspberry Pi Pico: RP2040 at 125 MHz from the 12 MHz crystal (PLL_SYS: 12 MHz * 125 = 1500 MHz VCO, / 6 / 2),
 * clk_peri = clk_sys for UART0 on GP0 (TX) / GP1 (RX). RP2040 datasheet ch. 2.14-2.19:
 * RESETS 0x4000C000 (RESET +0, RESET_DONE +8; io_bank0 bit5, pads_bank0 bit8, pll_sys bit12, uart0 bit22),
 * XOSC 0x40024000 (CTRL +0, STATUS +4 with STABLE bit31, STARTUP +0xC),
 * CLOCKS 0x40008000 (CLK_REF_CTRL/SELECTED +0x30/+0x38, CLK_SYS_CTRL/SELECTED +0x3C/+0x44, CLK_PERI_CTRL +0x48),
 * PLL_SYS 0x40028000 (CS +0 with LOCK bit31, PWR +4, FBDIV_INT +8, PRIM +0xC), IO_BANK0 GPIOn_CTRL at
 * 0x40014004 + 8n (FUNCSEL 2: UART). */
#include "board_internal.h"

#define RESETS_RESET REG32(0x4000C000u)
#define RESETS_DONE REG32(0x4000C008u)
#define XOSC_CTRL REG32(0x40024000u)
#define XOSC_STATUS REG32(0x40024004u)
#define XOSC_STARTUP REG32(0x4002400Cu)
#define CLK_REF_CTRL REG32(0x40008030u)
#define CLK_REF_SELECTED REG32(0x40008038u)
#define CLK_SYS_CTRL REG32(0x4000803Cu)
#define CLK_SYS_SELECTED REG32(0x40008044u)
#define CLK_PERI_CTRL REG32(0x40008048u)
#define PLL_CS REG32(0x40028000u)
#define PLL_PWR REG32(0x40028004u)
#define PLL_FBDIV REG32(0x40028008u)
#define PLL_PRIM REG32(0x4002800Cu)
#define GPIO_CTRL(n) REG32(0x40014004u + 8u * (n))
#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS_BANK0 (1u << 8)
#define RESET_PLL_SYS (1u << 12)
#define RESET_UART0 (1u << 22)

static void unreset(uint32_t bits)
{
    RESETS_RESET &= ~bits;
    while ((RESETS_DONE & bits) != bits)
        ;
}

void soc_init(void)
{
    XOSC_CTRL = 0xAA0u;                          /* 1-15 MHz range */
    XOSC_STARTUP = 47;                           /* ~1 ms: (12 MHz / 1000 + 128) / 256 */
    XOSC_CTRL = 0xAA0u | (0xFABu << 12);         /* enable */
    while (!(XOSC_STATUS & (1u << 31)))
        ;
    CLK_REF_CTRL = 2;                            /* clk_ref from the crystal */
    while (CLK_REF_SELECTED != (1u << 2))
        ;
    CLK_SYS_CTRL = 0;                            /* clk_sys from clk_ref while the PLL starts */
    while (CLK_SYS_SELECTED != 1u)
        ;
    RESETS_RESET |= RESET_PLL_SYS;
    unreset(RESET_PLL_SYS);
    PLL_CS = 1;                                  /* reference divider 1 */
    PLL_FBDIV = 125;                             /* VCO 1500 MHz */
    PLL_PWR &= ~((1u << 0) | (1u << 5));         /* power up the PLL and its VCO */
    while (!(PLL_CS & (1u << 31)))
        ;
    PLL_PRIM = (6u << 16) | (2u << 12);          /* / 6 / 2 = 125 MHz */
    PLL_PWR &= ~(1u << 3);                       /* post dividers on */
    CLK_SYS_CTRL = 0;                            /* aux source: PLL_SYS, then switch clk_sys to aux */
    CLK_SYS_CTRL = 1;
    while (CLK_SYS_SELECTED != (1u << 1))
        ;
    CLK_PERI_CTRL = (1u << 11);                  /* enabled, from clk_sys */
    unreset(RESET_IO_BANK0 | RESET_PADS_BANK0 | RESET_UART0);
    GPIO_CTRL(0) = 2;                            /* GP0: UART0 TX */
    GPIO_CTRL(1) = 2;                            /* GP1: UART0 RX */
}
