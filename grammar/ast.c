/* grammar/ast.c: the arena that owns every syntax-tree node. */
#include "ast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct AstChunk {
    struct AstChunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} AstChunk;

void *ast_alloc(AstArena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    AstChunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
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

char *ast_strdup(AstArena *a, const char *s, size_t len)
{
    char *p = ast_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void ast_arena_free(AstArena *a)
{
    AstChunk *c = a->head;
    while (c) {
        AstChunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

const char *ast_value_kind_name(AstValueKind k)
{
    switch (k) {
    case AST_INT: return "an integer";
    case AST_FLOAT: return "a number";
    case AST_STRING: return "a string";
    case AST_WORD: return "a word";
    case AST_TUPLE: return "a tuple";
    case AST_LIST: return "a list";
    case AST_CALL: return "a call";
    case AST_SIZE: return "a size";
    }
    return "a value";
}
