/* Persistence slots in nRF52 flash through the NVMC (nRF52840 PS, ch. 4.3): erased a 4 KB page at a time,
 * programmed a 32-bit word at a time. NVMC: READY +0x400, CONFIG +0x504 (0 read, 1 write, 2 erase),
 * ERASEPAGE +0x508. The CPU stalls while a page is erased (up to 85 ms). */
#include <string.h>

#include "board.h"
#include "board_internal.h"

#define NVMC_READY REG32(0x4001E400u)
#define NVMC_CONFIG REG32(0x4001E504u)
#define NVMC_ERASEPAGE REG32(0x4001E508u)
#define FLASH_PAGE 4096u

static const uint32_t slot_address[2] = {MT_SLOT0_ADDR, MT_SLOT1_ADDR};

static void wait_ready(void)
{
    while (!NVMC_READY)
        ;
}

uint32_t board_slot_bytes(void) { return MT_SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    NVMC_CONFIG = 2;
    wait_ready();
    for (uint32_t at = 0; at < bytes && at < MT_SLOT_BYTES; at += FLASH_PAGE) {
        NVMC_ERASEPAGE = slot_address[slot] + at;
        wait_ready();
    }
    NVMC_CONFIG = 0;
    wait_ready();
    return BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    volatile uint32_t *dst = (volatile uint32_t *)(slot_address[slot] + offset);
    NVMC_CONFIG = 1;
    wait_ready();
    for (uint32_t i = 0; i < BOARD_PAGE_BYTES / 4; i++) {
        uint32_t word;
        memcpy(&word, page + 4 * i, 4);
        if (word != 0xFFFFFFFFu) {
            dst[i] = word;
            wait_ready();
        }
    }
    NVMC_CONFIG = 0;
    wait_ready();
    return BOARD_STORAGE_OK;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memcpy(dst, (const void *)(slot_address[slot] + offset), n);
    return BOARD_STORAGE_OK;
}
