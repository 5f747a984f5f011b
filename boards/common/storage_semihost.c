/* The persistence slots of an emulated board: a file on the host (storage_file.c), reached through ARM
 * semihosting, so a QEMU restart finds what the board wrote. QEMU passes the file's path as the semihosting
 * command line ("mt-flash=PATH", mcu_train/boards/qemu.py). */
#include <string.h>

#include "board_internal.h"
#include "storage_file.h"

#define PREFIX "mt-flash="
enum { SYS_OPEN = 0x01, SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_SEEK = 0x0A, SYS_GET_CMDLINE = 0x15 };
enum { MODE_READ_WRITE = 3 /* "r+b" */, MODE_CREATE = 7 /* "w+b" */ };

static int handle = -1;

int storage_file_open(void)
{
    static char cmdline[256];
    if (handle >= 0)
        return 1;
    uint32_t block[3] = {(uint32_t)cmdline, sizeof cmdline - 1};
    if (semihost_call(SYS_GET_CMDLINE, block) != 0 || strncmp(cmdline, PREFIX, strlen(PREFIX)) != 0)
        return 0; /* QEMU was started without a flash file */
    const char *path = cmdline + strlen(PREFIX);
    block[0] = (uint32_t)path;
    block[2] = (uint32_t)strlen(path);
    block[1] = MODE_READ_WRITE;
    handle = semihost_call(SYS_OPEN, block);
    if (handle < 0) {
        block[1] = MODE_CREATE;
        handle = semihost_call(SYS_OPEN, block);
    }
    return handle >= 0;
}

/* Semihosting transfers: seek, then read or write; they return the bytes not transferred. */
static int transfer(int op, uint32_t offset, const void *buf, uint32_t n)
{
    const uint32_t seek[2] = {(uint32_t)handle, offset};
    if (semihost_call(SYS_SEEK, seek) != 0)
        return -1;
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)buf, n};
    return semihost_call(op, block);
}

int storage_file_write(uint32_t offset, const uint8_t *data, uint32_t n)
{
    return transfer(SYS_WRITE, offset, data, n) == 0 ? 0 : -1;
}

void storage_file_read(uint32_t offset, uint8_t *dst, uint32_t n) { transfer(SYS_READ, offset, dst, n); }
