/* grammar/gr_parse.c: runs the lexer and parser over one registered source. */
#include "gr_parse.h"

#include <string.h>

#include "parser.h"

typedef struct yy_buffer_state *YY_BUFFER_STATE;
int gr_yylex_init_extra(GrState *extra, yyscan_t *scanner);
int gr_yylex_destroy(yyscan_t scanner);
YY_BUFFER_STATE gr_yy_scan_bytes(const char *bytes, int len, yyscan_t scanner);
int gr_yyparse(yyscan_t scanner, GrState *st);

static int run(BaseArena *arena, DiagList *dl, int src, int start, GrState *st, AstFile *file)
{
    memset(st, 0, sizeof *st);
    st->file = file;
    st->arena = arena;
    st->dl = dl;
    st->src = src;
    st->start_token = start;
    st->line = 1;
    st->col = 1;
    if (dl->src[src].len > (size_t)1 << 30) {
        diag_error(dl, ((SrcLoc){src, 0, 0}), "file too large (more than 1 GiB)");
        return -1;
    }
    yyscan_t scanner;
    if (gr_yylex_init_extra(st, &scanner) != 0) {
        diag_error(dl, ((SrcLoc){src, 0, 0}), "cannot start the lexer");
        return -1;
    }
    gr_yy_scan_bytes(dl->src[src].text, (int)dl->src[src].len, scanner);
    int rc = gr_yyparse(scanner, st);
    gr_yylex_destroy(scanner);
    if (rc != 0 && !st->failed)
        diag_error(dl, ((SrcLoc){src, st->line, st->col}), "%s",
                   rc == 2 ? "input too complex for the parser (out of memory)" : "syntax error");
    return rc == 0 && !st->failed ? 0 : -1;
}

int gr_parse_file(BaseArena *arena, DiagList *dl, int src, AstFile *out)
{
    GrState st;
    memset(out, 0, sizeof *out);
    return run(arena, dl, src, START_FILE, &st, out);
}

int gr_parse_value(BaseArena *arena, DiagList *dl, int src, AstValue **out)
{
    GrState st;
    AstFile unused;
    memset(&unused, 0, sizeof unused);
    int rc = run(arena, dl, src, START_VALUE, &st, &unused);
    *out = rc == 0 ? st.value : NULL;
    return rc;
}
