/* grammar/parser.y: the grammar of the .pipe DSL (docs/dsl.md).
 *
 * A pure parser over the reentrant lexer in lexer.l. It builds the syntax
 * tree of ast.h and nothing else: names, types and shapes are checked by the
 * compiler. The first token, injected by the lexer, selects what is parsed:
 * a whole file, or a lone value (the right-hand side of -D key=value). On a
 * syntax error it reports one diagnostic, saying what was found and what
 * was expected, and stops. */
%define api.pure full
%define api.prefix {gr_yy}
%define parse.error custom
%define parse.lac full
%locations
%param {yyscan_t scanner}
%parse-param {GrState *st}

%code requires {
#include "ast.h"
#include "gr_parse.h"
typedef void *yyscan_t;
}

%code {
#include <stdio.h>
#include <string.h>

int gr_yylex(GR_YYSTYPE *lval, GR_YYLTYPE *lloc, yyscan_t scanner);
static void gr_yyerror(GR_YYLTYPE *loc, yyscan_t scanner, GrState *st, const char *msg);

#define L(l) ((SrcLoc){st->src, (l).first_line, (l).first_column})

static AstValue *mkval(GrState *st, AstValueKind k, GR_YYLTYPE loc)
{
    AstValue *v = base_arena_alloc(st->arena, sizeof *v);
    v->kind = k;
    v->loc = L(loc);
    return v;
}

/* "24 GiB": a size as written, number and unit */
static const char *size_text(GrState *st, const char *num, const char *unit)
{
    size_t a = strlen(num), b = strlen(unit);
    char *t = base_arena_alloc(st->arena, a + b + 2);
    memcpy(t, num, a);
    t[a] = ' ';
    memcpy(t + a + 1, unit, b + 1);
    return t;
}

static AstStmt *mkstmt(GrState *st, AstStmtKind k, GR_YYLTYPE loc)
{
    AstStmt *s = base_arena_alloc(st->arena, sizeof *s);
    s->kind = k;
    s->loc = L(loc);
    s->name_loc = s->loc;
    return s;
}

static void push_arg(AstArgList *l, AstArg *a)
{
    if (l->tail)
        l->tail->next = a;
    else
        l->head = a;
    l->tail = a;
    l->n++;
}

static AstArg *mkarg(GrState *st, const char *name, SrcLoc loc, AstValue *v)
{
    AstArg *a = base_arena_alloc(st->arena, sizeof *a);
    a->name = name;
    a->loc = loc;
    a->value = v;
    return a;
}
}

%union {
    struct { int64_t i; double f; const char *text; } num;
    const char *s;
    AstValue *val;
    AstArg *arg;
    AstArgList args;
    AstStmt *stmt;
    AstStmtList stmts;
    AstBlock *block;
}

%token START_FILE START_VALUE
%token SEP "end of statement"
%token KW_MODEL "'model'" KW_PIPELINE "'pipeline'" KW_TRAIN "'train'"
%token KW_INPUT "'input'" KW_TARGET "'target'" KW_REPEAT "'repeat'"
%token KW_LOSS "'loss'" KW_AS "'as'"
%token <num> INT "integer"
%token <num> FLOAT "number"
%token <s> WORD "word"
%token <s> STRING "string"

%type <val> value
%type <args> items items_opt call_args call_args_opt dims dims_opt
%type <arg> call_arg
%type <stmt> model_stmt assign_stmt
%type <stmts> model_stmts model_body assign_stmts assign_body
%type <block> block blocks blocks_opt

%%

start
    : START_FILE file_body        { }
    | START_VALUE value seps_opt  { st->value = $2; }
    ;

file_body
    : seps_opt blocks_opt         { st->file->blocks = $2; }
    ;

blocks_opt
    : %empty                      { $$ = NULL; }
    | blocks seps_opt             { $$ = $1; }
    ;

blocks
    : block                       { $$ = $1; }
    | blocks seps block           { AstBlock *b = $1; while (b->next) b = b->next; b->next = $3; $$ = $1; }
    ;

block
    : KW_MODEL WORD '{' model_body '}' {
          $$ = base_arena_alloc(st->arena, sizeof *$$);
          $$->kind = AST_BLOCK_MODEL; $$->loc = L(@1); $$->name = $2; $$->stmts = $4.head;
      }
    | KW_PIPELINE '{' assign_body '}' {
          $$ = base_arena_alloc(st->arena, sizeof *$$);
          $$->kind = AST_BLOCK_PIPELINE; $$->loc = L(@1); $$->stmts = $3.head;
      }
    | KW_TRAIN '{' assign_body '}' {
          $$ = base_arena_alloc(st->arena, sizeof *$$);
          $$->kind = AST_BLOCK_TRAIN; $$->loc = L(@1); $$->stmts = $3.head;
      }
    ;

seps
    : SEP
    | seps SEP
    ;

seps_opt
    : %empty
    | seps
    ;

model_body
    : seps_opt                        { $$.head = $$.tail = NULL; }
    | seps_opt model_stmts seps_opt   { $$ = $2; }
    ;

model_stmts
    : model_stmt                  { $$.head = $$.tail = $1; }
    | model_stmts seps model_stmt {
          /* a block on the lines after a block joins it as its second part
           * (residual { ... } then shortcut { ... } on the next line) */
          AstStmt *t = $1.tail;
          if ($3->kind == AST_GROUP && t->kind == AST_GROUP && !t->name2 && !$3->name2 &&
              strcmp($3->name, "shortcut") == 0) {
              t->name2 = $3->name; t->name2_loc = $3->loc; t->body2 = $3->body; $$ = $1;
          } else {
              $1.tail->next = $3; $1.tail = $3; $$ = $1;
          }
      }
    ;

model_stmt
    : KW_INPUT WORD ':' WORD '[' dims_opt ']' {
          $$ = mkstmt(st, AST_INPUT, @1); $$->name = $2; $$->name_loc = L(@2);
          $$->dtype = $4; $$->dtype_loc = L(@4); $$->dims = $6;
      }
    | KW_TARGET WORD ':' WORD '[' dims_opt ']' {
          $$ = mkstmt(st, AST_TARGET, @1); $$->name = $2; $$->name_loc = L(@2);
          $$->dtype = $4; $$->dtype_loc = L(@4); $$->dims = $6;
      }
    | WORD {
          $$ = mkstmt(st, AST_LAYER, @1); $$->name = $1;
      }
    | WORD '(' call_args_opt ')' {
          $$ = mkstmt(st, AST_LAYER, @1); $$->name = $1; $$->args = $3; $$->has_parens = 1;
      }
    | WORD KW_AS WORD {
          $$ = mkstmt(st, AST_LAYER, @1); $$->name = $1; $$->label = $3; $$->label_loc = L(@3);
      }
    | WORD '(' call_args_opt ')' KW_AS WORD {
          $$ = mkstmt(st, AST_LAYER, @1); $$->name = $1; $$->args = $3; $$->has_parens = 1;
          $$->label = $6; $$->label_loc = L(@6);
      }
    | KW_REPEAT value '{' model_body '}' {
          $$ = mkstmt(st, AST_REPEAT, @1); $$->count = $2; $$->body = $4.head;
      }
    | WORD '{' model_body '}' {
          $$ = mkstmt(st, AST_GROUP, @1); $$->name = $1; $$->body = $3.head;
      }
    | WORD '{' model_body '}' WORD '{' model_body '}' {
          $$ = mkstmt(st, AST_GROUP, @1); $$->name = $1; $$->body = $3.head;
          $$->name2 = $5; $$->name2_loc = L(@5); $$->body2 = $7.head;
      }
    | KW_LOSS WORD {
          $$ = mkstmt(st, AST_LOSS, @1); $$->name = $2; $$->name_loc = L(@2);
      }
    | assign_stmt                 { $$ = $1; }
    ;

dims_opt
    : %empty                      { memset(&$$, 0, sizeof $$); }
    | dims                        { $$ = $1; }
    | dims ','                    { $$ = $1; }
    ;

dims
    : value                       { memset(&$$, 0, sizeof $$); push_arg(&$$, mkarg(st, NULL, $1->loc, $1)); }
    | dims ',' value              { $$ = $1; push_arg(&$$, mkarg(st, NULL, $3->loc, $3)); }
    ;

assign_body
    : seps_opt                        { $$.head = $$.tail = NULL; }
    | seps_opt assign_stmts seps_opt  { $$ = $2; }
    ;

assign_stmts
    : assign_stmt                     { $$.head = $$.tail = $1; }
    | assign_stmts seps assign_stmt   { $1.tail->next = $3; $1.tail = $3; $$ = $1; }
    ;

assign_stmt
    : WORD '=' value {
          $$ = mkstmt(st, AST_ASSIGN, @1); $$->name = $1; $$->value = $3;
      }
    ;

value
    : INT                         { $$ = mkval(st, AST_INT, @1); $$->i = $1.i; $$->text = $1.text; }
    | FLOAT                       { $$ = mkval(st, AST_FLOAT, @1); $$->f = $1.f; $$->text = $1.text; }
    | STRING                      { $$ = mkval(st, AST_STRING, @1); $$->s = $1; }
    | WORD                        { $$ = mkval(st, AST_WORD, @1); $$->s = $1; }
    | '(' items ')'               { $$ = mkval(st, AST_TUPLE, @1); $$->items = $2; }
    | '[' items_opt ']'           { $$ = mkval(st, AST_LIST, @1); $$->items = $2; }
    | WORD '(' call_args_opt ')'  { $$ = mkval(st, AST_CALL, @1); $$->s = $1; $$->items = $3; }
    | INT WORD                    { $$ = mkval(st, AST_SIZE, @1); $$->i = $1.i; $$->s = $2;
                                    $$->text = size_text(st, $1.text, $2); }
    ;

items_opt
    : %empty                      { memset(&$$, 0, sizeof $$); }
    | items                       { $$ = $1; }
    ;

items
    : value                       { memset(&$$, 0, sizeof $$); push_arg(&$$, mkarg(st, NULL, $1->loc, $1)); }
    | items ',' value             { $$ = $1; push_arg(&$$, mkarg(st, NULL, $3->loc, $3)); }
    ;

call_args_opt
    : %empty                      { memset(&$$, 0, sizeof $$); }
    | call_args                   { $$ = $1; }
    ;

call_args
    : call_arg                    { memset(&$$, 0, sizeof $$); push_arg(&$$, $1); }
    | call_args ',' call_arg      { $$ = $1; push_arg(&$$, $3); }
    ;

call_arg
    : value                       { $$ = mkarg(st, NULL, $1->loc, $1); }
    | WORD '=' value              { $$ = mkarg(st, $1, L(@1), $3); }
    ;

%%

static void gr_yyerror(GR_YYLTYPE *loc, yyscan_t scanner, GrState *st, const char *msg)
{
    (void)scanner;
    if (!st->failed)
        diag_error(st->dl, L(*loc), "%s", msg);
    st->failed = 1;
}

/* "syntax error: unexpected word 'relu', expecting '=' or end of statement" */
static int yyreport_syntax_error(const yypcontext_t *ctx, yyscan_t scanner, GrState *st)
{
    (void)scanner;
    if (st->failed)
        return 0;
    char buf[512];
    size_t n = 0;
    yysymbol_kind_t tok = yypcontext_token(ctx);
    /* bison may report without a lookahead token: yysymbol_name(YYEMPTY)
     * would index before its table */
    const char *tok_name = tok == YYSYMBOL_YYEMPTY ? NULL : yysymbol_name(tok);
    n += snprintf(buf + n, sizeof buf - n, "syntax error: unexpected %s", tok_name ? tok_name : "input");
    if (tok == YYSYMBOL_WORD || tok == YYSYMBOL_INT || tok == YYSYMBOL_FLOAT || tok == YYSYMBOL_STRING)
        n += snprintf(buf + n, sizeof buf - n, " '%s'", st->tok);
    if (tok == YYSYMBOL_SEP && strcmp(st->tok, ";") != 0)
        n = snprintf(buf, sizeof buf, "syntax error: unexpected end of line");
    /* the expected tokens; between blocks, "end of statement" and "end of
     * file" say nothing useful, so only the block keywords are listed */
    yysymbol_kind_t expected[16], shown[16];
    int ne = yypcontext_expected_tokens(ctx, expected, 16), ns = 0, at_top = 0;
    for (int i = 0; i < ne; i++)
        at_top |= expected[i] == YYSYMBOL_YYEOF;
    for (int i = 0; i < ne; i++)
        if (!at_top || (expected[i] != YYSYMBOL_SEP && expected[i] != YYSYMBOL_YYEOF))
            shown[ns++] = expected[i];
    if (ns == 0)
        for (int i = 0; i < ne; i++)
            shown[ns++] = expected[i];
    if (ne > 0 && ns <= 8) {
        for (int i = 0; i < ns && n < sizeof buf; i++)
            n += snprintf(buf + n, sizeof buf - n, "%s%s", i == 0 ? ", expecting " : (i == ns - 1 ? " or " : ", "),
                          yysymbol_name(shown[i]));
    }
    diag_error(st->dl, L(*yypcontext_location(ctx)), "%s", buf);
    st->failed = 1;
    return 0;
}
