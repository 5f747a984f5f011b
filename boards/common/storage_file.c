/* Persistence slots in a file (emulated boards: storage_semihost.c; the host board: board_host.c): slot k is the
 * file's bytes [k * MT_SLOT_BYTES, (k + 1) * MT_SLOT_BYTES); bytes never written read as erased (0xFF). The
 * board provides the file access below. */
#include <string.h>

#include "board.h"
#include "storage_file.h"

uint32_t board_slot_bytes(void) { return MT_SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    uint8_t erased[BOARD_PAGE_BYTES];
    memset(erased, 0xFF, sizeof erased);
    if (!storage_file_open())
        return BOARD_STORAGE_NONE;
    for (uint32_t at = 0; at < bytes && at < MT_SLOT_BYTES; at += sizeof erased)
        if (storage_file_write((uint32_t)slot * MT_SLOT_BYTES + at, erased, sizeof erased) != 0)
            return BOARD_STORAGE_ERASE;
    return BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    if (!storage_file_open())
        return BOARD_STORAGE_NONE;
    return storage_file_write((uint32_t)slot * MT_SLOT_BYTES + offset, page, BOARD_PAGE_BYTES) == 0
               ? BOARD_STORAGE_OK
               : BOARD_STORAGE_PROGRAM;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memset(dst, 0xFF, n); /* what lies past the end of the file stays erased */
    if (!storage_file_open())
        return BOARD_STORAGE_NONE;
    storage_file_read((uint32_t)slot * MT_SLOT_BYTES + offset, dst, n);
    return BOARD_STORAGE_OK;
}
