/* Persistence slots in the RP2040's external QSPI flash, through the boot ROM's flash routines (RP2040
 * datasheet 2.8.3): found by two-letter code in the ROM's function table (pointer at 0x14, lookup function at
 * 0x18). While they run the flash is not executable (XIP is off), so the call sequence runs from SRAM with
 * interrupts masked, and data comes from SRAM. Erase: 4 KB sectors; program: 256-byte pages. Afterwards the
 * XIP cache is flushed and XIP re-entered (plain 03h reads, as boot2 set it up). */
#include <string.h>

#include "board.h"
#include "board_internal.h"

#define XIP_BASE 0x10000000u
#define SECTOR 4096u

typedef void (*rom_fn)(void);
typedef void (*rom_erase_fn)(uint32_t offset, uint32_t count, uint32_t block_size, uint8_t block_cmd);
typedef void (*rom_program_fn)(uint32_t offset, const uint8_t *data, uint32_t count);

static struct {
    rom_fn connect, exit_xip, flush_cache, enter_xip;
    rom_erase_fn erase;
    rom_program_fn program;
} rom;

static const uint32_t slot_address[2] = {MT_SLOT0_ADDR, MT_SLOT1_ADDR};

static void *rom_function(char a, char b)
{
    uintptr_t table_ptr = 0x14, lookup_ptr = 0x18;
    __asm volatile("" : "+r"(table_ptr), "+r"(lookup_ptr)); /* ROM addresses, not null pointers */
    void *(*lookup)(const uint16_t *, uint32_t) =
        (void *(*)(const uint16_t *, uint32_t))(uintptr_t)*(const volatile uint16_t *)lookup_ptr;
    return lookup((const uint16_t *)(uintptr_t)*(const volatile uint16_t *)table_ptr,
                  (uint32_t)a | ((uint32_t)b << 8));
}

/* Runs from SRAM (.data): erase `count` bytes, or program them from `data`, at flash offset `offset`. */
__attribute__((noinline, long_call, section(".data.ramfunc"))) static void flash_op(uint32_t offset,
                                                                                  const uint8_t *data,
                                                                                  uint32_t count)
{
    rom.connect();
    rom.exit_xip();
    if (data)
        rom.program(offset, data, count);
    else
        rom.erase(offset, count, 1u << 16, 0xD8);
    rom.flush_cache();
    rom.enter_xip();
}

static void run(uint32_t address, const uint8_t *data, uint32_t count)
{
    if (!rom.connect) {
        rom.connect = (rom_fn)rom_function('I', 'F');
        rom.exit_xip = (rom_fn)rom_function('E', 'X');
        rom.flush_cache = (rom_fn)rom_function('F', 'C');
        rom.enter_xip = (rom_fn)rom_function('C', 'X');
        rom.erase = (rom_erase_fn)rom_function('R', 'E');
        rom.program = (rom_program_fn)rom_function('R', 'P');
    }
    uint32_t primask;
    __asm volatile("mrs %0, primask\n cpsid i" : "=r"(primask) : : "memory");
    flash_op(address - XIP_BASE, data, count);
    __asm volatile("msr primask, %0" : : "r"(primask) : "memory");
}

uint32_t board_slot_bytes(void) { return MT_SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    uint32_t n = (bytes + SECTOR - 1) / SECTOR * SECTOR;
    run(slot_address[slot], 0, n < MT_SLOT_BYTES ? n : MT_SLOT_BYTES);
    return BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    run(slot_address[slot] + offset, page, BOARD_PAGE_BYTES);
    return BOARD_STORAGE_OK;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memcpy(dst, (const void *)(slot_address[slot] + offset), n);
    return BOARD_STORAGE_OK;
}
