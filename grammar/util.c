/* grammar/util.c: see util.h. */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

static void *checked(void *p)
{
    if (!p) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    return p;
}

void *util_calloc(size_t n, size_t size)
{
    return checked(calloc(n ? n : 1, size ? size : 1));
}

void *util_realloc(void *p, size_t size)
{
    return checked(realloc(p, size ? size : 1));
}
