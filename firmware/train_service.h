/* Protocol messages of a firmware with a trainer: TRAIN, CONFIG, STATS, CHECKPOINT_GET, CHECKPOINT_PUT.
 * Layouts are in docs/protocol.md. */
#ifndef MT_TRAIN_SERVICE_H
#define MT_TRAIN_SERVICE_H
#include <stdint.h>

int handle_train(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_config(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_stats(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_checkpoint_get(const uint8_t *payload, uint16_t len, uint8_t *reply);
int handle_checkpoint_put(const uint8_t *payload, uint16_t len, uint8_t *reply);

#endif
