/* File access behind the file-backed persistence slots (storage_file.c). */
#ifndef MT_STORAGE_FILE_H
#define MT_STORAGE_FILE_H
#include <stdint.h>

/* Is the file there (opened, or created empty, on first use)? */
int storage_file_open(void);
/* Write n bytes at `offset` (0 when all were written); read up to n bytes at `offset`. */
int storage_file_write(uint32_t offset, const uint8_t *data, uint32_t n);
void storage_file_read(uint32_t offset, uint8_t *dst, uint32_t n);

#endif
