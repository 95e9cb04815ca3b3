/* base/base_alloc.c: see base_alloc.h. */
#include "base_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *checked(void *p)
{
    if (!p) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    return p;
}

void *base_calloc(size_t n, size_t size)
{
    return checked(calloc(n ? n : 1, size ? size : 1));
}

void *base_realloc(void *p, size_t size)
{
    return checked(realloc(p, size ? size : 1));
}

typedef struct BaseChunk {
    struct BaseChunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} BaseChunk;

void *base_arena_alloc(BaseArena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    BaseChunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        c = checked(malloc(sizeof *c + cap));
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *base_arena_strdup(BaseArena *a, const char *s, size_t len)
{
    char *p = base_arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void base_arena_free(BaseArena *a)
{
    BaseChunk *c = a->head;
    while (c) {
        BaseChunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}
