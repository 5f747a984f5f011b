/* The board interface on Linux: the "UART" is a TCP connection accepted on 127.0.0.1:$MT_SERIAL_PORT,
 * the same transport QEMU offers, so the host code cannot tell the difference. Its "flash" (the persistence
 * slots) is the file $MT_FLASH_FILE. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "board.h"

static int conn = -1;
static uint8_t rx_chunk[4096];
static size_t rx_pos, rx_end;

void board_init(void)
{
    const char *port = getenv("MT_SERIAL_PORT");
    if (!port) {
        fprintf(stderr, "host board: set MT_SERIAL_PORT to the TCP port to listen on\n");
        exit(2);
    }
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 1) != 0) {
        perror("host board: listen");
        exit(2);
    }
    conn = accept(server, 0, 0); /* like QEMU's wait=on: nothing runs before the host connects */
    close(server);
    if (conn < 0) {
        perror("host board: accept");
        exit(2);
    }
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void board_uart_write(const uint8_t *data, size_t n)
{
    while (n) {
        ssize_t sent = send(conn, data, n, MSG_NOSIGNAL);
        if (sent <= 0)
            board_exit(0); /* the host went away: nothing left to serve */
        data += sent;
        n -= (size_t)sent;
    }
}

int board_uart_read_byte(void)
{
    if (rx_pos == rx_end) {
        /* Wait at most 1 ms, so an idle host board does not spin a core. */
        struct pollfd pfd = {.fd = conn, .events = POLLIN};
        if (poll(&pfd, 1, 1) <= 0)
            return -1;
        ssize_t got = recv(conn, rx_chunk, sizeof rx_chunk, 0);
        if (got <= 0)
            board_exit(0);
        rx_pos = 0;
        rx_end = (size_t)got;
    }
    return rx_chunk[rx_pos++];
}

uint32_t board_uart_overruns(void) { return 0; } /* TCP loses nothing */
void board_wait_for_input(void) {} /* board_uart_read_byte() already waits (1 ms) */

uint64_t board_counter(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

const char *board_counter_unit(void) { return "ns"; }
uint32_t board_counter_hz(void) { return 1000000000u; }
uint32_t board_stack_unused(void) { return 0; }
const char *board_name(void) { return "host"; }
int board_is_emulated(void) { return 1; }

void board_exit(int code)
{
    exit(code);
}

void board_halt(const char *why)
{
    fputs(why, stdout);
    fflush(stdout);
    for (;;)
        pause();
}

/* --- persistence slots: bytes [k * SLOT_BYTES, (k + 1) * SLOT_BYTES) of $MT_FLASH_FILE; unwritten bytes read
 * as erased (0xFF) --- */
#define SLOT_BYTES 0x10000u
static int flash_fd = -1;

static int flash_file(void)
{
    const char *path = getenv("MT_FLASH_FILE");
    if (flash_fd < 0 && path && *path)
        flash_fd = open(path, O_RDWR | O_CREAT, 0644);
    return flash_fd;
}

static int flash_write(int slot, uint32_t offset, const uint8_t *data, uint32_t n)
{
    return pwrite(flash_file(), data, n, (off_t)slot * SLOT_BYTES + offset) == (ssize_t)n ? 0 : -1;
}

uint32_t board_slot_bytes(void) { return SLOT_BYTES; }

int board_slot_erase(int slot, uint32_t bytes)
{
    uint8_t erased[BOARD_PAGE_BYTES];
    memset(erased, 0xFF, sizeof erased);
    if (flash_file() < 0)
        return BOARD_STORAGE_NONE;
    for (uint32_t at = 0; at < bytes && at < SLOT_BYTES; at += sizeof erased)
        if (flash_write(slot, at, erased, sizeof erased) != 0)
            return BOARD_STORAGE_ERASE;
    return BOARD_STORAGE_OK;
}

int board_slot_program(int slot, uint32_t offset, const uint8_t *page)
{
    if (flash_file() < 0)
        return BOARD_STORAGE_NONE;
    return flash_write(slot, offset, page, BOARD_PAGE_BYTES) == 0 ? BOARD_STORAGE_OK : BOARD_STORAGE_PROGRAM;
}

int board_slot_read(int slot, uint32_t offset, uint8_t *dst, uint32_t n)
{
    memset(dst, 0xFF, n);
    if (flash_file() < 0)
        return BOARD_STORAGE_NONE;
    ssize_t got = pread(flash_file(), dst, n, (off_t)slot * SLOT_BYTES + offset);
    (void)got; /* short at the end of the file: the rest stays erased */
    return BOARD_STORAGE_OK;
}
