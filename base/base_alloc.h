/* base/base_alloc.h: memory that never comes back NULL, and the arena that
 * owns strings and syntax-tree nodes. For the compiler's, the plan's and the
 * schedules' code (the lowest library, linked by every program). Out of
 * memory is reported and ends the program with status 2, pipec's code for an
 * internal error. The runtime has its own, rt_alloc, which brings the whole
 * MPI job down instead. */
#ifndef PIPE_BASE_ALLOC_H
#define PIPE_BASE_ALLOC_H

#include <stddef.h>

void *base_calloc(size_t n, size_t size);     /* zeroed; n may be 0 */
void *base_realloc(void *p, size_t size);

/* An arena: many small allocations, freed together. Everything allocated in
 * it is zeroed and 16-byte aligned. A zeroed BaseArena is empty. */
typedef struct BaseArena {
    struct BaseChunk *head;
} BaseArena;

void *base_arena_alloc(BaseArena *a, size_t size);
char *base_arena_strdup(BaseArena *a, const char *s, size_t len); /* s[0, len), NUL-terminated */
void base_arena_free(BaseArena *a);

#endif
