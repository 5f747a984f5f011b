/* Protocol messages served by a firmware that has a compiled model (model.h from `mcu-train compile`). */
#ifndef MT_MODEL_SERVICE_H
#define MT_MODEL_SERVICE_H
#include <stddef.h>
#include <stdint.h>
#include "protocol.h"

void model_service_init(void);
extern const mt_route model_routes[];
extern const size_t model_route_count;

/* Inputs staged by INPUT_PUT, for TRAIN and CHECKPOINT_PUT (train_service.c). Every CLASSIFY, TRAIN and
 * CHECKPOINT_PUT starts with model_service_unstage_input(): it forgets the staged input (the model run or the
 * checkpoint staging reuses the arena) and returns how many bytes had been staged. model_service_pick_input()
 * then chooses the input of a CLASSIFY or TRAIN that carries n input bytes: those bytes (n = the model's input
 * size), or with n = 0 the staged input if all of it had been staged. Returns 0, or the error to answer with
 * (-ERR_BAD_PAYLOAD, -ERR_NO_INPUT). */
uint32_t model_service_unstage_input(void);
int model_service_pick_input(const uint8_t *bytes, int32_t n, uint32_t staged, const int8_t **input);

#endif
