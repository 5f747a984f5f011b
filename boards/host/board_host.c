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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "board.h"
#include "storage_file.h"

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

/* --- persistence slots (storage_file.c) in the file $MT_FLASH_FILE --- */
static int flash_fd = -1;

int storage_file_open(void)
{
    const char *path = getenv("MT_FLASH_FILE");
    if (flash_fd < 0 && path && *path)
        flash_fd = open(path, O_RDWR | O_CREAT, 0644);
    return flash_fd >= 0;
}

int storage_file_write(uint32_t offset, const uint8_t *data, uint32_t n)
{
    return pwrite(flash_fd, data, n, (off_t)offset) == (ssize_t)n ? 0 : -1;
}

void storage_file_read(uint32_t offset, uint8_t *dst, uint32_t n)
{
    if (pread(flash_fd, dst, n, (off_t)offset) < 0)
        return; /* the caller's bytes stay erased */
}
