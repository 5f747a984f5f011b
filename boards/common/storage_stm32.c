/* Persistence slots in STM32F4/F7 flash sectors (RM0390 ch. 3, RM0385 ch. 3): one whole sector per slot, erased
 * by sector number and programmed a word at a time (x32 parallelism: 2.7-3.6 V, as on the Nucleo and
 * Discovery boards). FLASH: KEYR +0x04, SR +0x0C (EOP bit0, OPERR bit1, WRPERR/PGAERR/PGPERR/PGSERR or ERSERR
 * bits 4-7, BSY bit16), CR +0x10 (PG bit0, SER bit1, SNB bits 6:3, PSIZE bits 9:8, STRT bit16, LOCK bit31).
 * The CPU stalls while the flash is busy (up to seconds for a 128/256 KB sector erase). */
#include <string.h>

#include "board.h"
#include "board_internal.h"

#define FLASH_KEYR REG32(0x40023C04u)
#define FLASH_SR REG32(0x40023C0Cu)
#define FLASH_CR REG32(0x40023C10u)
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xF2u
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_PSIZE_X32 (2u << 8)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)

static const uint32_t slot_address[2] = {MT_SLOT0_ADDR, MT_SLOT1_ADDR};
static const uint32_t slot_sector[2] = {MT_SLOT0_SECTOR, MT_SLOT1_SECTOR};

static void unlock(void)
{
    if (FLASH_CR & CR_LOCK) {
        FLASH_KEYR = 0x45670123u;
        FLASH_KEYR = 0xCDEF89ABu;
    }
    FLASH_SR = SR_ERRORS | 1u; /* clear stale flags */
}

/* Wait for the operation to end; 0 when it raised no error flag. */
static int finish(void)
{
    __asm volatile("dsb" ::: "memory");
    while (FLASH_SR & SR_BSY)
        ;
    return (FLASH_SR & SR_ERRORS) ? -1 : 0;
}

static void lock(void)
{
    FLASH_CR = CR_LOCK;
}

uint32_t board_slot_bytes(void) { return MT_SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    (void)bytes; /* a sector is erased whole */
    unlock();
    FLASH_CR = CR_SER | (slot_sector[slot] << 3) | CR_PSIZE_X32;
    FLASH_CR |= CR_STRT;
    int err = finish();
    lock();
    return err ? BOARD_STORAGE_ERASE : BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    volatile uint32_t *dst = (volatile uint32_t *)(slot_address[slot] + offset);
    int err = 0;
    unlock();
    FLASH_CR = CR_PG | CR_PSIZE_X32;
    for (uint32_t i = 0; i < BOARD_PAGE_BYTES / 4 && !err; i++) {
        uint32_t word;
        memcpy(&word, page + 4 * i, 4);
        if (word != 0xFFFFFFFFu) { /* erased words stay as they are */
            dst[i] = word;
            err = finish();
        }
    }
    lock();
    return err ? BOARD_STORAGE_PROGRAM : BOARD_STORAGE_OK;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memcpy(dst, (const void *)(slot_address[slot] + offset), n);
    return BOARD_STORAGE_OK;
}
