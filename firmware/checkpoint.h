/* Checkpoints of the on-device trainer: its trained heads and state as one image (docs/training.md):
 *   header (32 B: magic "MTCK", version, exits, units, model hash, params bytes, state bytes),
 *   every unit's params buffer as it lies in the arena (scales, biases, multipliers, int8 weights and their
 *   fractions), the trainer state (instance filter, per-exit thresholds and statistics),
 *   CRC-32 of everything before it.
 * GET reads the image in chunks straight from the live state. PUT takes an image twice, with no staging
 * buffer: a first pass checks it as it streams by (size, format, model hash, values, CRC) and stores nothing;
 * after a valid one the same image is sent again and written into the live state as it comes. A refused
 * image leaves the weights untouched. A commit pass that is interrupted (a CLASSIFY or TRAIN, a chunk out of
 * order) or that does not repeat the verified image puts the board back on its boot weights (the generic
 * heads, always valid). Momentum is not saved: it restarts at zero after a commit. */
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H

#include <stdint.h>

enum { CKPT_OK = 0, CKPT_BAD_SIZE = 1, CKPT_BAD_FORMAT = 2, CKPT_BAD_HASH = 3, CKPT_BAD_CRC = 4,
       CKPT_BAD_VALUE = 5, CKPT_BAD_ORDER = 6, CKPT_BAD_COMMIT = 7 };
/* checkpoint_put's *committed: more chunks expected, the image replaced the weights, or the image checked
 * out and must now be sent again to be committed. */
enum { CKPT_RECEIVING = 0, CKPT_COMMITTED = 1, CKPT_VERIFIED = 2 };

uint32_t checkpoint_size(void);
/* Copies image bytes [offset, offset + n) into dst (the caller keeps offset + n <= checkpoint_size()). */
void checkpoint_read(uint32_t offset, uint8_t *dst, uint32_t n);
/* One chunk of an image of `total` bytes; each pass sends the chunks in order from offset 0. After the last
 * chunk of the first pass *committed = CKPT_VERIFIED, of the second CKPT_COMMITTED. Returns CKPT_OK or the
 * reason it was refused. */
int checkpoint_put(uint32_t total, uint32_t offset, const uint8_t *data, uint32_t n, uint32_t *staged,
                   int *committed);
/* Any other use of the trainer: forgets a checked image, and abandons (boot weights) a half-written one. */
void checkpoint_interrupt(void);

#endif
