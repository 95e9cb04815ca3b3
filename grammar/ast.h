/* grammar/ast.h: the syntax tree of a .pipe file, as the parser builds it.
 *
 * The tree is what was written, not what it means: `repeat` is not expanded,
 * layer names are not checked, values are untyped. compiler/ gives it
 * meaning. Every node lives in one BaseArena and is freed with it.
 *
 *   file      := block*                       (model NAME { ... }, pipeline { ... }, train { ... })
 *   model     := input | target | layer [as LABEL] | repeat N { model } | loss NAME
 *              | NAME { model } [NAME { model }]   (a block: residual { ... } shortcut { ... })
 *              | KEY = value (a model-wide setting: init = gpt2(std = 0.02))
 *   pipeline,
 *   train     := KEY = value
 *   value     := INT | FLOAT | "STRING" | WORD | (v, ...) | [v, ...] | WORD(args)
 *              | INT WORD (a size with its unit: 24 GiB)
 */
#ifndef PIPE_AST_H
#define PIPE_AST_H

#include <stddef.h>
#include <stdint.h>

#include "base_alloc.h"
#include "diag.h"


typedef enum AstValueKind {
    AST_INT,
    AST_FLOAT,
    AST_STRING,
    AST_WORD,   /* bare word: 1f1b, zb-h1, true, relu, a label */
    AST_TUPLE,  /* (a, b) */
    AST_LIST,   /* [a, b] */
    AST_CALL,   /* name(k = v, ...) */
    AST_SIZE    /* an integer and a unit word: 24 GiB (i, s = the unit, text as written) */
} AstValueKind;

typedef struct AstValue AstValue;

/* An argument of a call or layer, or an item of a tuple or list (name NULL). */
typedef struct AstArg {
    const char *name;      /* NULL for a positional argument */
    SrcLoc loc;            /* of the name, or of the value when positional */
    AstValue *value;
    struct AstArg *next;
} AstArg;

typedef struct AstArgList {
    AstArg *head, *tail;
    int n;
} AstArgList;

struct AstValue {
    AstValueKind kind;
    SrcLoc loc;
    int64_t i;          /* AST_INT */
    double f;           /* AST_FLOAT */
    const char *text;   /* AST_INT, AST_FLOAT: as written, for messages */
    const char *s;      /* AST_STRING, AST_WORD, AST_CALL (its name) */
    AstArgList items;   /* AST_TUPLE, AST_LIST, AST_CALL */
};

typedef enum AstStmtKind {
    AST_INPUT,   /* input NAME: DTYPE[dims] */
    AST_TARGET,  /* target NAME: DTYPE[dims] */
    AST_LAYER,   /* NAME or NAME(args), optionally `as LABEL` */
    AST_REPEAT,  /* repeat N { ... } */
    AST_LOSS,    /* loss NAME */
    AST_ASSIGN,  /* KEY = value (pipeline and train blocks; init in the model block) */
    AST_GROUP    /* NAME { ... }, optionally followed by NAME2 { ... } on the same line or
                  * the next ones: residual { ... } shortcut { ... } (compiler/ checks the names) */
} AstStmtKind;

typedef struct AstStmt {
    AstStmtKind kind;
    SrcLoc loc;
    const char *name;      /* input/target name, layer type, loss name, key */
    SrcLoc name_loc;
    const char *dtype;     /* AST_INPUT, AST_TARGET */
    SrcLoc dtype_loc;
    AstArgList dims;       /* AST_INPUT, AST_TARGET: integer values */
    AstArgList args;       /* AST_LAYER */
    int has_parens;        /* AST_LAYER: written with (...) */
    const char *label;     /* AST_LAYER: `as LABEL`, or NULL */
    SrcLoc label_loc;
    AstValue *count;       /* AST_REPEAT */
    struct AstStmt *body;  /* AST_REPEAT, AST_GROUP */
    const char *name2;     /* AST_GROUP: the second block's name (shortcut), or NULL */
    SrcLoc name2_loc;
    struct AstStmt *body2; /* AST_GROUP: the second block's statements */
    AstValue *value;       /* AST_ASSIGN */
    struct AstStmt *next;
} AstStmt;

typedef struct AstStmtList {
    AstStmt *head, *tail;
} AstStmtList;

typedef enum AstBlockKind { AST_BLOCK_MODEL, AST_BLOCK_PIPELINE, AST_BLOCK_TRAIN } AstBlockKind;

typedef struct AstBlock {
    AstBlockKind kind;
    SrcLoc loc;
    const char *name;      /* model name; NULL for the others */
    AstStmt *stmts;
    struct AstBlock *next;
} AstBlock;

typedef struct AstFile {
    AstBlock *blocks;
    AstValue *value;       /* set when parsing a lone value (-D key=value) */
} AstFile;

const char *ast_value_kind_name(AstValueKind k);

#endif
