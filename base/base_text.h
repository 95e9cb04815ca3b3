/* base/base_text.h: numbers as people read them, in the listings, --stats
 * and pipert's messages: "1,234,567", "3.20 MiB", "1.542 us". Each writes
 * into buf and returns it. */
#ifndef PIPE_BASE_TEXT_H
#define PIPE_BASE_TEXT_H

#include <stddef.h>
#include <stdint.h>

const char *base_commas(int64_t v, char *buf, size_t size);
const char *base_time_text(double seconds, char *buf, size_t size);  /* s, ms or us, 3 decimals */
const char *base_bytes_text(double bytes, char *buf, size_t size);   /* B, KiB, MiB or GiB */

#endif
