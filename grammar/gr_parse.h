/* grammar/gr_parse.h: the entry points of the DSL parser (flex + bison).
 *
 * Both read a source already registered in the DiagList (so an error can
 * print its line), build nodes in the arena, and return 0 on success or -1
 * after reporting at least one diagnostic. Limits (docs/dsl.md#limits)
 * guard against pathological input: nesting depth, token length. */
#ifndef PIPE_PARSE_H
#define PIPE_PARSE_H

#include "ast.h"
#include "diag.h"

#define GR_MAX_NESTING 64      /* ( [ { open at once */
#define GR_MAX_TOKEN 4096      /* bytes in one word or string */

/* Parses a whole .pipe file. */
int gr_parse_file(BaseArena *arena, DiagList *dl, int src, AstFile *out);
/* Parses one value (the right-hand side of -D key=value). */
int gr_parse_value(BaseArena *arena, DiagList *dl, int src, AstValue **out);

/* Shared by the lexer and the parser; not for other users. */
typedef struct GrState {
    BaseArena *arena;
    DiagList *dl;
    int src;
    int start_token;     /* first token handed to the parser: picks the mode */
    int line, col;       /* where the next byte sits */
    int paren;           /* ( and [ open: newlines inside do not end statements */
    int nest;            /* ( [ { open */
    char tok[48];        /* text of the last token, for "near 'x'" */
    int failed;          /* the lexer reported an error */
    AstFile *file;
    AstValue *value;
} GrState;

#endif
