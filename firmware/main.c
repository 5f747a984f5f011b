/* The firmware's main loop: announce readiness, then serve the protocol forever, sleeping while idle. */
#include "board.h"
#include "protocol.h"
#ifdef MT_HAVE_MODEL
#include "model_service.h"
#endif

int main(void)
{
    board_init();
#ifdef MT_HAVE_MODEL
    model_service_init();
    protocol_init(model_routes, model_route_count);
#else
    protocol_init(0, 0);
#endif
    protocol_send_hello();
    for (;;) {
        protocol_poll();
        board_wait_for_input();
    }
}
