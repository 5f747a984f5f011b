/* The trained state kept in the board's own flash, so a board that resets without its host keeps what it
 * learned (docs/boards.md): the CONFIG in force and the checkpoint image (weights, filter, thresholds), in
 * one of two slots with a sequence number and CRCs. A write goes to the slot not holding the newest image and
 * programs its header last, so a write interrupted at any point leaves the previous slot in use. At boot the
 * newest valid slot is restored. Written on request (PERSIST) and every CONFIG persist_every trained windows.
 * The trainer's state is produced and restored through the checkpoint module (checkpoint_read / _put). */
#ifndef MT_PERSIST_H
#define MT_PERSIST_H
#include <stdint.h>

/* At boot, after trainer_init(): restore the newest valid slot; returns its sequence number (0: none). */
uint32_t persist_restore(void);

/* After each TRAIN: write a slot when persist_every trained windows have passed since the last write. */
void persist_after_train(void);

/* PERSIST (docs/protocol.md): status, write now, forget, or write and halt part-way (power-loss tests). */
int handle_persist(const uint8_t *payload, uint16_t len, uint8_t *reply);

#endif
