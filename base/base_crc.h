/* base/base_crc.h: CRC-32 (zlib's, the one plan.bin and checkpoints carry). */
#ifndef BASE_CRC_H
#define BASE_CRC_H

#include <stddef.h>
#include <stdint.h>

/* zlib's crc32(crc, p, n), the same value for every input (start with 0,
 * continue with the value so far), computed by carry-less multiplication
 * where the CPU has it (x86-64 with PCLMULQDQ) and by zlib elsewhere. */
uint32_t base_crc32(uint32_t crc, const void *p, size_t n);

#endif
