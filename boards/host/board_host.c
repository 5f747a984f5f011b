/* The board interface on Linux: the "UART" is a TCP connection accepted on 127.0.0.1:$MT_SERIAL_PORT,
 * the same transport QEMU offers, so the host code cannot tell the difference. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
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
