/* compiler/pc_bind.h: binds the arguments written in a call, `name(a, k = v)`,
 * to a signature string from one of the .def tables.
 *
 * Positional arguments fill the signature in order, named ones by name;
 * unknown names (with the nearest valid one), repeated or missing arguments
 * and values of the wrong type are reported against the file. Defaults come
 * from the signature, so a table line is the only place they are written. */
#ifndef PIPE_BIND_H
#define PIPE_BIND_H

#include <stdint.h>

#include "ast.h"
#include "diag.h"

#define PC_MAX_ARGS 8

typedef enum PcArgType { PC_T_INT, PC_T_NUM, PC_T_BOOL, PC_T_STR, PC_T_WORD, PC_T_INTS, PC_T_PAIR } PcArgType;

typedef struct PcArg {
    char name[24];
    PcArgType type;
    int required;
    int set;            /* written, or given a default by the signature */
    int written;        /* written by the user */
    SrcLoc loc;         /* of the written value, else of the call */
    int64_t i[2];       /* int, bool, ints (both halves) */
    double f[2];        /* num, pair; ints and int also fill f */
    const char *s;      /* str, word */
} PcArg;

typedef struct PcArgs {
    int n;
    PcArg a[PC_MAX_ARGS];
} PcArgs;

/* Parses a signature; returns -1 on a malformed one (a bug in a table). */
int pc_sig_parse(const char *sig, PcArgs *out);
/* Binds args (may be NULL) to sig. what names the callee in messages, e.g.
 * "conv2d". Returns 0, or -1 after reporting. */
int pc_bind(DiagList *dl, const char *what, const char *sig, const AstArgList *args, SrcLoc call, PcArgs *out);
/* Looks up an argument by name; aborts on a name not in the signature (a
 * bug, not a user error). */
const PcArg *pc_arg(const PcArgs *b, const char *name);

/* The printable form of a value, for messages ("(1, 2)", "relu", "3"). */
void pc_value_text(const AstValue *v, char *buf, size_t size);

#endif
