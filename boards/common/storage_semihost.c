/* The persistent slots of an emulated board: a file on the host, reached through ARM semihosting, so a QEMU
 * restart finds what the board wrote. QEMU passes the file's path as the semihosting command line
 * ("mt-flash=PATH", mcu_train/boards/qemu.py). Slot k is the file's bytes [k * SLOT_BYTES, (k+1) * SLOT_BYTES);
 * bytes past the end of the file read as erased (0xFF). */
#include <string.h>

#include "board.h"
#include "board_internal.h"

#define SLOT_BYTES MT_SLOT_BYTES
#define PREFIX "mt-flash="
enum { SYS_OPEN = 0x01, SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_SEEK = 0x0A, SYS_GET_CMDLINE = 0x15 };
enum { MODE_READ_WRITE = 3 /* "r+b" */, MODE_CREATE = 7 /* "w+b" */ };

static int handle = -1;

/* The file, opened on first use (created empty when missing); -1 when QEMU gave none. */
static int file(void)
{
    static char cmdline[256];
    if (handle >= 0)
        return handle;
    uint32_t block[3] = {(uint32_t)cmdline, sizeof cmdline - 1};
    if (semihost_call(SYS_GET_CMDLINE, block) != 0 || strncmp(cmdline, PREFIX, strlen(PREFIX)) != 0)
        return -1;
    const char *path = cmdline + strlen(PREFIX);
    block[0] = (uint32_t)path;
    block[2] = (uint32_t)strlen(path);
    block[1] = MODE_READ_WRITE;
    handle = semihost_call(SYS_OPEN, block);
    if (handle < 0) {
        block[1] = MODE_CREATE;
        handle = semihost_call(SYS_OPEN, block);
    }
    return handle;
}

static int seek(int slot, uint32_t offset)
{
    const uint32_t block[2] = {(uint32_t)file(), (uint32_t)slot * SLOT_BYTES + offset};
    return semihost_call(SYS_SEEK, block);
}

static int write_at(int slot, uint32_t offset, const uint8_t *data, uint32_t n)
{
    if (file() < 0 || seek(slot, offset) != 0)
        return -1;
    const uint32_t block[3] = {(uint32_t)file(), (uint32_t)data, n};
    return semihost_call(SYS_WRITE, block); /* bytes not written */
}

uint32_t board_slot_bytes(void) { return SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    static uint8_t erased[BOARD_PAGE_BYTES];
    memset(erased, 0xFF, sizeof erased);
    if (file() < 0)
        return BOARD_STORAGE_NONE;
    for (uint32_t at = 0; at < bytes && at < SLOT_BYTES; at += sizeof erased)
        if (write_at(slot, at, erased, sizeof erased) != 0)
            return BOARD_STORAGE_ERASE;
    return BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    if (file() < 0)
        return BOARD_STORAGE_NONE;
    return write_at(slot, offset, page, BOARD_PAGE_BYTES) == 0 ? BOARD_STORAGE_OK : BOARD_STORAGE_PROGRAM;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memset(dst, 0xFF, n);
    if (file() < 0)
        return BOARD_STORAGE_NONE;
    if (seek(slot, offset) != 0)
        return BOARD_STORAGE_OK; /* past the end: erased */
    const uint32_t block[3] = {(uint32_t)file(), (uint32_t)dst, n};
    semihost_call(SYS_READ, block); /* what lies past the end of the file stays 0xFF */
    return BOARD_STORAGE_OK;
}
