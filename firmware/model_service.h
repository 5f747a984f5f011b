/* Protocol messages served by a firmware that has a compiled model (model.h from `mcu-train compile`). */
#ifndef MT_MODEL_SERVICE_H
#define MT_MODEL_SERVICE_H
#include <stddef.h>
#include "protocol.h"

void model_service_init(void);
extern const mt_route model_routes[];
extern const size_t model_route_count;

#endif
