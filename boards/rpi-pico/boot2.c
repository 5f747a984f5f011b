/* RP2040 second-stage boot (RP2040 datasheet 2.8.1): the boot ROM copies the first 256 bytes of flash to SRAM at
 * 0x20041F00, checks their CRC-32 (the last 4 bytes, patched in by mcu_train/boards/build.py) and runs them.
 * This stage sets the flash interface (XIP_SSI) to execute in place with the standard serial read command
 * (03h, which every SPI flash answers), then enters the image: vector table at 0x10000100. It runs from SRAM,
 * so it only uses PC-relative literals and absolute peripheral addresses. XIP_SSI: CTRLR0 +0x00 (DFS_32 bits
 * 20:16, TMOD bits 9:8 = 3 EEPROM read), CTRLR1 +0x04 (NDF), SSIENR +0x08, BAUDR +0x14, SPI_CTRLR0 +0xF4
 * (XIP_CMD bits 31:24, INST_L bits 9:8, ADDR_L bits 5:2, TRANS_TYPE bits 1:0). */
#include <stdint.h>

#define SSI(off) (*(volatile uint32_t *)(0x18000000u + (off)))
#define VTOR (*(volatile uint32_t *)0xE000ED08u)
#define IMAGE 0x10000100u

__attribute__((section(".boot2"), used, noreturn)) void boot2_entry(void)
{
    SSI(0x08) = 0;                                   /* SSIENR: off while configuring */
    SSI(0x14) = 4;                                   /* BAUDR: SCK = clk_sys / 4 (31 MHz at 125 MHz) */
    SSI(0x00) = (31u << 16) | (3u << 8);             /* 32-bit frames, EEPROM read */
    SSI(0xF4) = (0x03u << 24) | (2u << 8) | (6u << 2); /* read command 03h, 8-bit command, 24-bit address */
    SSI(0x04) = 0;                                   /* one frame per access */
    SSI(0x08) = 1;
    VTOR = IMAGE;
    const volatile uint32_t *vectors = (const volatile uint32_t *)IMAGE;
    __asm volatile("msr msp, %0\n bx %1" : : "r"(vectors[0]), "r"(vectors[1]));
    __builtin_unreachable();
}
