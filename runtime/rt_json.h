/* runtime/rt_json.h: a small JSON reader for the files pipe writes itself
 * (the checkpoint manifest). Parses a whole text into a tree; numbers are
 * doubles (exact for integers up to 2^53); depth and size are bounded, and
 * every error names the byte offset. */
#ifndef PIPE_RT_JSON_H
#define PIPE_RT_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum RjKind { RJ_NULL, RJ_BOOL, RJ_NUM, RJ_STR, RJ_ARR, RJ_OBJ } RjKind;

typedef struct RjVal {
    RjKind kind;
    double num;              /* RJ_NUM, RJ_BOOL (0 or 1) */
    char *str;               /* RJ_STR */
    int n;                   /* RJ_ARR, RJ_OBJ: items */
    struct RjVal *items;
    char **keys;             /* RJ_OBJ: keys[i] names items[i] */
} RjVal;

/* Parses text[0, len). Returns 0, or -1 with "offset N: what" in err. */
int rj_parse(const char *text, size_t len, RjVal *out, char *err, size_t errsize);
void rj_free(RjVal *v);

/* obj[key] when obj is an object that has it, else NULL. */
const RjVal *rj_get(const RjVal *obj, const char *key);
/* The string, or NULL when v is missing or not a string. */
const char *rj_str(const RjVal *v);
/* A non-negative integer below 2^53: 0 and *out, or -1. */
int rj_uint(const RjVal *v, int64_t *out);

/* Writes s as a JSON string (quotes, escapes) to out. */
void rj_put_str(FILE *out, const char *s);

#endif
