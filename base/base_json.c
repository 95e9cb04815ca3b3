/* base/base_json.c: the JSON reader (base_json.h), over libjansson
 * (json_loadb with JSON_REJECT_DUPLICATES; json_int_t is 64-bit). In
 * library pipe_json, which what reads JSON links: the safetensors and
 * checkpoint code, and plan/plan_profile.c (pipert writes profiles, pipec
 * reads them for `costs = profile(...)`), so both programs link libjansson.
 *
 * Jansson parses and refuses; this file adds what its refusals lack: the
 * key a duplicate refusal is about and the path to the place of any
 * refusal (the tensor a bad header entry belongs to). Both come from the
 * text before the offset jansson stopped at, which jansson has read as
 * JSON up to that token, so finding them needs no parsing, only a walk
 * that skips strings and counts brackets. */
#include "base_json.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* The top level an object or an array; the end of the text checked; no
 * \u0000 (not JSON_ALLOW_NUL); duplicate keys refused. */
#define BASE_JSON_FLAGS JSON_REJECT_DUPLICATES

static BaseJsonFault fault_of(enum json_error_code code)
{
    switch (code) {
    case json_error_out_of_memory: return BASE_JSON_MEMORY;
    case json_error_stack_overflow: return BASE_JSON_DEPTH;
    case json_error_invalid_utf8: return BASE_JSON_UTF8;
    case json_error_premature_end_of_input: return BASE_JSON_END;
    case json_error_end_of_input_expected: return BASE_JSON_TRAILING;
    case json_error_null_character:
    case json_error_null_byte_in_key: return BASE_JSON_NUL;
    case json_error_duplicate_key: return BASE_JSON_DUPLICATE;
    case json_error_numeric_overflow: return BASE_JSON_RANGE;
    default: return BASE_JSON_SYNTAX;
    }
}

/* The string token text[at, end) (quotes included, read by jansson
 * already), decoded by jansson into out; cut to fit. */
static void decode_token(const char *text, size_t at, size_t end, char *out, size_t outsize)
{
    json_t *v = json_loadb(text + at, end - at, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    const char *s = json_string_value(v);
    if (s)
        snprintf(out, outsize, "%s", s);
    else /* cannot happen for a token jansson read; the raw text then */
        snprintf(out, outsize, "%.*s", (int)(end - at), text + at);
    json_decref(v);
}

typedef struct Frame {
    int object;
    int member;               /* object: the key before ':' has been read */
    size_t key_at, key_end;   /* object: that key's token */
    long index;               /* array: the item */
} Frame;

/* Fills e->path, e->depth (and for a duplicate, e->key) from
 * text[0, e->offset). */
static void locate(const char *text, size_t len, BaseJsonError *e)
{
    Frame st[BASE_JSON_PATH_MAX + 1];
    size_t depth = 0, str_at = 0, str_end = 0, end = e->offset < len ? e->offset : len;
    int have_str = 0;
    for (size_t i = 0; i < end; i++) {
        char c = text[i];
        if (c == '"') {
            str_at = i++;
            while (i < end && text[i] != '"')
                i += text[i] == '\\' ? 2 : 1;
            str_end = i < len ? i + 1 : len;
            have_str = 1;
            continue;
        }
        Frame *top = depth && depth <= BASE_JSON_PATH_MAX + 1 ? &st[depth - 1] : NULL;
        if (c == '{' || c == '[') {
            if (depth < BASE_JSON_PATH_MAX + 1)
                st[depth] = (Frame){.object = c == '{'};
            depth++;
        } else if ((c == '}' || c == ']') && depth) {
            depth--;
        } else if (c == ':' && top && have_str) {
            top->member = 1, top->key_at = str_at, top->key_end = str_end;
        } else if (c == ',' && top) {
            top->member = 0;
            top->index++;
        }
    }
    /* every open container but the innermost contributes its member; the
     * innermost too when the place is inside one of its values */
    e->depth = 0;
    for (size_t k = 0; k < depth && k <= BASE_JSON_PATH_MAX && e->depth < BASE_JSON_PATH_MAX; k++) {
        const Frame *f = &st[k];
        if (f->object && !f->member)
            break;
        char *p = e->path[e->depth++];
        if (f->object)
            decode_token(text, f->key_at, f->key_end, p, sizeof e->path[0]);
        else
            snprintf(p, sizeof e->path[0], "%ld", f->index);
    }
    e->key[0] = 0;
    if (e->fault == BASE_JSON_DUPLICATE && have_str)
        decode_token(text, str_at, str_end, e->key, sizeof e->key);
}

BaseJson *base_json_parse(const void *text, size_t len, BaseJsonError *err)
{
    memset(err, 0, sizeof *err);
    if (len > INT_MAX) { /* json_error_t counts in int */
        err->fault = BASE_JSON_MEMORY;
        snprintf(err->text, sizeof err->text, "a text of %zu bytes, over 2 GB", len);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(text, len, BASE_JSON_FLAGS, &je);
    if (v)
        return v;
    err->fault = fault_of(json_error_code(&je));
    err->offset = je.position > 0 ? (size_t)je.position : 0;
    err->line = je.line;
    err->column = je.column;
    locate(text, len, err);
    switch (err->fault) {
    case BASE_JSON_NUL:
        snprintf(err->text, sizeof err->text, "\\u0000 (NUL) in a string");
        break;
    case BASE_JSON_DUPLICATE:
        snprintf(err->text, sizeof err->text, "key '%s' appears twice", err->key);
        break;
    case BASE_JSON_UTF8:
        snprintf(err->text, sizeof err->text, "not UTF-8: %s", je.text);
        break;
    case BASE_JSON_RANGE:
        snprintf(err->text, sizeof err->text, "number too large: %s", je.text);
        break;
    default:
        snprintf(err->text, sizeof err->text, "%s", je.text);
        break;
    }
    return NULL;
}

void base_json_free(BaseJson *v)
{
    json_decref(v);
}

BaseJsonKind base_json_kind(const BaseJson *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT: return BASE_JSON_OBJECT;
    case JSON_ARRAY: return BASE_JSON_ARRAY;
    case JSON_STRING: return BASE_JSON_STRING;
    case JSON_INTEGER: return BASE_JSON_INTEGER;
    case JSON_REAL: return BASE_JSON_REAL;
    case JSON_TRUE:
    case JSON_FALSE: return BASE_JSON_BOOL;
    default: return BASE_JSON_NULL;
    }
}

int base_json_is(const BaseJson *v, BaseJsonKind kind)
{
    return v && base_json_kind(v) == kind;
}

const BaseJson *base_json_get(const BaseJson *obj, const char *key)
{
    return json_is_object(obj) ? json_object_get(obj, key) : NULL;
}

const char *base_json_str(const BaseJson *v)
{
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int base_json_int(const BaseJson *v, int64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

double base_json_real(const BaseJson *v)
{
    return json_is_real(v) ? json_real_value(v) : 0;
}

int base_json_uint(const BaseJson *v, int64_t *out)
{
    int64_t x;
    if (base_json_int(v, &x) != 0 || x < 0)
        return -1;
    *out = x;
    return 0;
}

size_t base_json_len(const BaseJson *v)
{
    if (json_is_array(v))
        return json_array_size(v);
    if (json_is_object(v))
        return json_object_size(v);
    return 0;
}

const BaseJson *base_json_at(const BaseJson *arr, size_t i)
{
    return json_is_array(arr) ? json_array_get(arr, i) : NULL;
}

int base_json_next(const BaseJson *obj, void **iter, const char **key, const BaseJson **value)
{
    if (!json_is_object(obj))
        return 0;
    /* jansson's iterator API takes a non-const object; it does not change it */
    json_t *o = (json_t *)obj;
    void *it = *iter ? json_object_iter_next(o, *iter) : json_object_iter(o);
    if (!it)
        return 0;
    *iter = it;
    *key = json_object_iter_key(it);
    *value = json_object_iter_value(it);
    return 1;
}
