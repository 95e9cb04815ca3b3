/* base/base_json.h: JSON, the one reader and the one string writer every
 * part uses (docs/design-notes.md, "One JSON reader").
 *
 * Reading (base_json.c, library pipe_json, over libjansson): the
 * safetensors header and the checkpoint manifest. A text is parsed whole
 * into a tree; the top level is an object or an array; integers are 64-bit
 * (json_int_t), and a number outside int64_t or double is refused, as are
 * a key given twice in one object, \u0000 in a string, invalid UTF-8
 * (overlong forms, surrogates), NaN and Infinity, and anything after the
 * value but white space. Nesting is bounded (jansson's 2048 levels). A
 * refusal says what and where: the byte offset, and the keys leading to
 * the place (the tensor a bad header entry belongs to).
 *
 * Writing (base_json_put.c, library pipe_base, no dependency): strings
 * only, the numbers and the punctuation are the callers' own fprintf. */
#ifndef PIPE_BASE_JSON_H
#define PIPE_BASE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- writing ---------------------------------------------------------- */

/* Writes s as a JSON string: quotes; '"' and '\' escaped with a backslash,
 * every other byte below 0x20 as \u00XX (lowercase hex); valid UTF-8 as it
 * is; each byte that does not begin a valid UTF-8 sequence (base_json_utf8_len)
 * as \ufffd. NULL writes "". */
void base_json_put_str(FILE *out, const char *s);

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0: no
 * overlong form, no surrogate, nothing above U+10FFFF. */
size_t base_json_utf8_len(const unsigned char *s, size_t n);
/* Whether the NUL-terminated s is valid UTF-8 throughout. */
int base_json_utf8_valid(const char *s);

/* ---- reading ---------------------------------------------------------- */

/* A parsed value: jansson's json_t, opaque to callers (the struct tag is
 * jansson's, so base_json.c passes it through without a cast). */
typedef struct json_t BaseJson;

typedef enum BaseJsonKind {
    BASE_JSON_OBJECT,
    BASE_JSON_ARRAY,
    BASE_JSON_STRING,
    BASE_JSON_INTEGER,
    BASE_JSON_REAL,
    BASE_JSON_BOOL,
    BASE_JSON_NULL
} BaseJsonKind;

/* What kind of refusal (for callers that word some of them their own way). */
typedef enum BaseJsonFault {
    BASE_JSON_SYNTAX,     /* not JSON: jansson's words say which token */
    BASE_JSON_END,        /* the text ends inside the value */
    BASE_JSON_TRAILING,   /* something other than white space after the value */
    BASE_JSON_UTF8,       /* a byte that is not valid UTF-8 */
    BASE_JSON_NUL,        /* \u0000 in a string or a key */
    BASE_JSON_RANGE,      /* an integer outside int64_t, a real outside double */
    BASE_JSON_DUPLICATE,  /* a key twice in one object: key says which */
    BASE_JSON_DEPTH,      /* nested deeper than jansson's limit */
    BASE_JSON_MEMORY,     /* out of memory, or a text over 2 GB */
} BaseJsonFault;

#define BASE_JSON_PATH_MAX 4

typedef struct BaseJsonError {
    BaseJsonFault fault;
    size_t offset;            /* bytes of the text read when it went wrong */
    int line, column;         /* 1-based line; column in characters */
    char text[200];           /* in words: jansson's (after "not UTF-8: " or
                               * "number too large: "), ours for NUL and
                               * duplicates */
    /* Where: path[0, depth) are the members leading to the place, outermost
     * first: an object's key, or an array's index in decimal (entries
     * longer than the buffer are cut; depth counts at most
     * BASE_JSON_PATH_MAX). For BASE_JSON_DUPLICATE, path leads to the
     * object that holds key twice. */
    int depth;
    char path[BASE_JSON_PATH_MAX][128];
    char key[128];
} BaseJsonError;

/* Parses text[0, len) (no NUL needed). Returns the tree, which
 * base_json_free releases, or NULL with *err filled in. */
BaseJson *base_json_parse(const void *text, size_t len, BaseJsonError *err);
void base_json_free(BaseJson *v);

/* Each accessor accepts NULL and then answers as for a missing value. */
BaseJsonKind base_json_kind(const BaseJson *v);   /* BASE_JSON_NULL for NULL */
int base_json_is(const BaseJson *v, BaseJsonKind kind);
/* obj[key], or NULL when obj is not an object or lacks key. */
const BaseJson *base_json_get(const BaseJson *obj, const char *key);
/* The string (UTF-8, no NUL inside), or NULL when v is not a string. */
const char *base_json_str(const BaseJson *v);
/* An integer: 0 and *out, or -1 (not an integer: a real like 1.0 is not). */
int base_json_int(const BaseJson *v, int64_t *out);
/* A real (a number written with a fraction or an exponent), or 0 for
 * anything else; base_json_is(v, BASE_JSON_REAL) tells which. */
double base_json_real(const BaseJson *v);
/* A non-negative integer: 0 and *out, or -1. */
int base_json_uint(const BaseJson *v, int64_t *out);
/* Items of an array, members of an object, else 0. */
size_t base_json_len(const BaseJson *v);
/* An array's item i, or NULL. */
const BaseJson *base_json_at(const BaseJson *arr, size_t i);
/* An object's members in the order of the text: start with *iter = NULL;
 * each call returns 1 with the next key and value, or 0 at the end. */
int base_json_next(const BaseJson *obj, void **iter, const char **key, const BaseJson **value);

#endif
