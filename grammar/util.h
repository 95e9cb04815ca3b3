/* grammar/util.h: allocation that never returns NULL, for the compiler's
 * and the schedules' code (the lowest library, linked by every program).
 * Out of memory is reported and ends the program with status 2, pipec's
 * code for an internal error. The runtime has its own, rt_alloc, which
 * brings the whole MPI job down instead. */
#ifndef PIPE_UTIL_H
#define PIPE_UTIL_H

#include <stddef.h>

void *util_calloc(size_t n, size_t size);     /* zeroed; n may be 0 */
void *util_realloc(void *p, size_t size);

#endif
