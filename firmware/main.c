/* The firmware's main loop: announce readiness, then serve the protocol forever. */
#include "board.h"
#include "protocol.h"

int main(void)
{
    board_init();
    protocol_init(0, 0);
    protocol_send_hello();
    for (;;)
        protocol_poll();
}
