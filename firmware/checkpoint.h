/* Checkpoints of the on-device trainer: its trained weights and state as one image (docs/training.md):
 *   header (32 B: magic "MTCK", version, exits, units, model hash, parameter count, state bytes),
 *   every unit's fp32 weights, the trainer state (instance filter, per-exit thresholds and statistics),
 *   CRC-32 of everything before it.
 * GET reads the image in chunks straight from the live state. PUT stages chunks in the arena and commits only
 * a complete image whose size, format, model hash, CRC and values (all finite) check out; anything else
 * leaves the weights untouched. Momentum is not saved: it restarts at zero after a commit. */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include <stdint.h>

enum { CKPT_OK = 0, CKPT_BAD_SIZE = 1, CKPT_BAD_FORMAT = 2, CKPT_BAD_HASH = 3, CKPT_BAD_CRC = 4,
       CKPT_BAD_VALUE = 5, CKPT_BAD_ORDER = 6 };

uint32_t checkpoint_size(void);
/* Copies image bytes [offset, offset + n) into dst (the caller keeps offset + n <= checkpoint_size()). */
void checkpoint_read(uint32_t offset, uint8_t *dst, uint32_t n);
/* Stages one chunk of an image of `total` bytes; chunks come in order from offset 0. After the last one the
 * image is checked and committed (*committed = 1). Returns CKPT_OK or the reason it was refused. */
int checkpoint_put(uint32_t total, uint32_t offset, const uint8_t *data, uint32_t n, uint32_t *staged,
                   int *committed);

#endif
