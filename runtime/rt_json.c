/* runtime/rt_json.c: see rt_json.h. Recursive descent, depth <= 32. */
#include "rt_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RJ_MAX_DEPTH 32

typedef struct Rj {
    const char *s;
    size_t n, i;
    char *err;
    size_t errsize;
    int failed;
} Rj;

static int rj_fail(Rj *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rj_fail(Rj *j, const char *fmt, ...)
{
    if (!j->failed) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(j->err, j->errsize, "offset %zu: %s", j->i, msg);
    }
    j->failed = 1;
    return -1;
}

static void ws(Rj *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

static int peek(Rj *j)
{
    ws(j);
    return j->i < j->n ? (unsigned char)j->s[j->i] : -1;
}

static int lit(Rj *j, const char *w)
{
    size_t k = strlen(w);
    if (j->n - j->i < k || memcmp(j->s + j->i, w, k) != 0)
        return rj_fail(j, "expected '%s'", w);
    j->i += k;
    return 0;
}

/* A string; \uXXXX escapes become UTF-8 (surrogate pairs too). */
static char *string(Rj *j)
{
    if (peek(j) != '"') {
        rj_fail(j, "expected a string");
        return NULL;
    }
    j->i++;
    size_t start = j->i;
    while (j->i < j->n && j->s[j->i] != '"')
        j->i += j->s[j->i] == '\\' ? 2 : 1;
    if (j->i >= j->n) {
        rj_fail(j, "unterminated string");
        return NULL;
    }
    size_t end = j->i++;
    char *out = malloc(end - start + 1), *o = out;
    if (!out) {
        rj_fail(j, "out of memory");
        return NULL;
    }
    for (size_t k = start; k < end; k++) {
        unsigned char c = (unsigned char)j->s[k];
        if (c < 0x20) {
            free(out);
            j->i = k;
            rj_fail(j, "control character in a string");
            return NULL;
        }
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        c = (unsigned char)j->s[++k];
        const char *map = strchr("\"\"\\\\//b\bf\fn\nr\rt\t", c);
        if (c && map && ((map - "\"\"\\\\//b\bf\fn\nr\rt\t") % 2 == 0)) {
            *o++ = map[1];
            continue;
        }
        unsigned cp = 0;
        if (c != 'u' || end - k < 5 || sscanf(j->s + k + 1, "%4x", &cp) != 1) {
            free(out);
            j->i = k;
            rj_fail(j, "bad escape in a string");
            return NULL;
        }
        k += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && end - k >= 7 && j->s[k + 1] == '\\' && j->s[k + 2] == 'u') {
            unsigned lo = 0;
            if (sscanf(j->s + k + 3, "%4x", &lo) == 1 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                k += 6;
            }
        }
        if (cp < 0x80) {
            *o++ = (char)cp;
        } else if (cp < 0x800) {
            *o++ = (char)(0xC0 | cp >> 6), *o++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (char)(0xE0 | cp >> 12), *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (char)(0xF0 | cp >> 18), *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    *o = 0;
    return out;
}

static int value(Rj *j, RjVal *v, int depth);

static int push(Rj *j, RjVal *v, int *cap)
{
    if (v->n < *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 8;
    RjVal *it = realloc(v->items, (size_t)nc * sizeof *it);
    if (!it)
        return rj_fail(j, "out of memory");
    v->items = it;
    if (v->kind == RJ_OBJ) {
        char **k = realloc(v->keys, (size_t)nc * sizeof *k);
        if (!k)
            return rj_fail(j, "out of memory");
        v->keys = k;
    }
    *cap = nc;
    return 0;
}

static int container(Rj *j, RjVal *v, int depth, int obj)
{
    if (depth >= RJ_MAX_DEPTH)
        return rj_fail(j, "nested deeper than %d", RJ_MAX_DEPTH);
    v->kind = obj ? RJ_OBJ : RJ_ARR;
    j->i++;
    int cap = 0;
    if (peek(j) == (obj ? '}' : ']')) {
        j->i++;
        return 0;
    }
    for (;;) {
        if (push(j, v, &cap) != 0)
            return -1;
        RjVal *it = &v->items[v->n];
        memset(it, 0, sizeof *it);
        if (obj) {
            v->keys[v->n] = string(j);
            if (!v->keys[v->n])
                return -1;
            v->n++; /* owned from here, freed with v */
            if (peek(j) != ':')
                return rj_fail(j, "expected ':'");
            j->i++;
        } else {
            v->n++;
        }
        if (value(j, it, depth + 1) != 0)
            return -1;
        int c = peek(j);
        j->i++;
        if (c == (obj ? '}' : ']'))
            return 0;
        if (c != ',') {
            j->i--;
            return rj_fail(j, "expected ',' or '%c'", obj ? '}' : ']');
        }
    }
}

static int value(Rj *j, RjVal *v, int depth)
{
    int c = peek(j);
    switch (c) {
    case '{': return container(j, v, depth, 1);
    case '[': return container(j, v, depth, 0);
    case '"':
        v->kind = RJ_STR;
        v->str = string(j);
        return v->str ? 0 : -1;
    case 't': v->kind = RJ_BOOL, v->num = 1; return lit(j, "true");
    case 'f': v->kind = RJ_BOOL, v->num = 0; return lit(j, "false");
    case 'n': v->kind = RJ_NULL; return lit(j, "null");
    case -1: return rj_fail(j, "unexpected end of the text");
    default: break;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t k = 0;
        while (j->i < j->n && k < sizeof buf - 1 && strchr("+-.eE0123456789", j->s[j->i]))
            buf[k++] = j->s[j->i++];
        buf[k] = 0;
        char *endp;
        v->kind = RJ_NUM;
        v->num = strtod(buf, &endp);
        if (*endp || !isfinite(v->num))
            return rj_fail(j, "bad number '%s'", buf);
        return 0;
    }
    return rj_fail(j, "unexpected character '%c'", c);
}

int rj_parse(const char *text, size_t len, RjVal *out, char *err, size_t errsize)
{
    Rj j = {text, len, 0, err, errsize, 0};
    memset(out, 0, sizeof *out);
    if (value(&j, out, 0) == 0 && peek(&j) != -1)
        rj_fail(&j, "text after the value");
    if (j.failed) {
        rj_free(out);
        return -1;
    }
    return 0;
}

void rj_free(RjVal *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->n; i++) {
        rj_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items), free(v->keys), free(v->str);
    memset(v, 0, sizeof *v);
}

const RjVal *rj_get(const RjVal *obj, const char *key)
{
    if (!obj || obj->kind != RJ_OBJ)
        return NULL;
    for (int i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key))
            return &obj->items[i];
    return NULL;
}

const char *rj_str(const RjVal *v)
{
    return v && v->kind == RJ_STR ? v->str : NULL;
}

int rj_uint(const RjVal *v, int64_t *out)
{
    if (!v || v->kind != RJ_NUM || v->num < 0 || v->num >= 9007199254740992.0 || v->num != floor(v->num))
        return -1;
    *out = (int64_t)v->num;
    return 0;
}

void rj_put_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}
