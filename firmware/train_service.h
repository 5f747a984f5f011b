/* Protocol messages of a firmware with a trainer: TRAIN, CONFIG, STATS, CHECKPOINT_GET, CHECKPOINT_PUT (and
 * PERSIST, firmware/persist.h). Layouts are in docs/protocol.md. */
#ifndef MT_TRAIN_SERVICE_H
#define MT_TRAIN_SERVICE_H
#include <stdint.h>

#include "model.h"

/* Bytes of the CONFIG payload (docs/protocol.md): an 88-byte scalar head, then 12 bytes per exit. */
#define TRAIN_CONFIG_BYTES (88 + 12 * MODEL_NUM_EXITS)

int handle_train(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_config(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_stats(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_checkpoint_get(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_checkpoint_put(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_label(const uint8_t *payload, uint16_t len, uint8_t *reply);

/* The CONFIG payload: write the configuration in force (returns its length); set one (0, or -1 when it is
 * malformed or out of range: nothing changed). */
int train_config_to_wire(uint8_t *out);
int train_config_from_wire(const uint8_t *payload, uint16_t len);

#endif
