/* runtime/rt_st_format.c: the safetensors format (rt_st.h): the header
 * written and read, dtypes, byte counts, byte order.
 *
 * Layout: u64 little-endian N, then N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32",
 *    "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
 * padded with spaces to a multiple of 8, then the data; offsets count from
 * the first byte after the header, end exclusive.
 *
 * Written as the reference implementation writes it (compact, metadata
 * first, the fields in the order dtype, shape, data_offsets). Read with
 * base_json (jansson): any valid JSON text of that shape, in any order, with
 * any white space; a key twice, an integer outside int64_t, anything after
 * the object or not UTF-8 is refused by the grammar; unknown or missing
 * fields, wrong types and negative numbers here. Whether the numbers make
 * sense together is rt_st_check.c's. */
#include "rt_st.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_json.h"

void rt_st_fail(char *err, size_t errsize, const char *fmt, ...)
{
    if (!err || errsize == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
}

int rt_st_host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

int64_t rt_st_numel(int ndim, const int64_t *dim)
{
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (dim[d] < 0)
            return -1;
        if (dim[d] != 0 && numel > INT64_MAX / RT_ST_DTYPE_BYTES / dim[d])
            return -1;
        numel *= dim[d];
    }
    return numel;
}

/* ---- writing ------------------------------------------------------------- */

int rt_st_header_encode(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                        const char *const *meta_values, int nmeta, char **text, size_t *len, char *err, size_t errsize)
{
    *text = NULL, *len = 0;
    char *d = NULL;
    size_t dn = 0;
    FILE *h = open_memstream(&d, &dn);
    if (!h) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        return -1;
    }
    fputc('{', h);
    if (nmeta > 0) {
        fputs("\"__metadata__\":{", h);
        for (int i = 0; i < nmeta; i++) {
            if (i)
                fputc(',', h);
            base_json_put_str(h, meta_keys[i]);
            fputc(':', h);
            base_json_put_str(h, meta_values[i]);
        }
        fputc('}', h);
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const RtTensor *x = &t[i];
        int64_t bytes = rt_st_numel(x->ndim, x->dim) * (x->i64 ? 8 : RT_ST_DTYPE_BYTES);
        if (off > INT64_MAX - bytes) {
            fclose(h);
            free(d);
            rt_st_fail(err, errsize, "%s: tensor '%s': the file would be too large", path, x->name);
            return -1;
        }
        if (nmeta > 0 || i > 0)
            fputc(',', h);
        base_json_put_str(h, x->name);
        fputs(x->i64 ? ":{\"dtype\":\"I64\",\"shape\":[" : ":{\"dtype\":\"" RT_ST_DTYPE "\",\"shape\":[", h);
        for (int k = 0; k < x->ndim; k++)
            fprintf(h, "%s%lld", k ? "," : "", (long long)x->dim[k]);
        fprintf(h, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + bytes));
        off += bytes;
    }
    fputc('}', h);
    /* Spaces up to a multiple of 8, so the data (and every F32 in it)
     * starts aligned when the file is mapped or read whole. */
    long at = ftell(h);
    while (at >= 0 && at % 8 != 0)
        fputc(' ', h), at++;
    int bad = ferror(h) != 0;
    if (fclose(h) != 0 || bad || dn > RT_ST_MAX_HEADER) {
        rt_st_fail(err, errsize, "%s: %s", path, dn > RT_ST_MAX_HEADER ? "the header would be over 100 MB" : "out of memory");
        free(d);
        return -1;
    }
    *text = d, *len = dn;
    return 0;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct Dec {
    const char *path;
    const char *tensor;       /* the tensor being read, for messages */
    char *err;
    size_t errsize;
} Dec;

static int dec_fail(Dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int dec_fail(Dec *d, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d->tensor)
        rt_st_fail(d->err, d->errsize, "%s: header, tensor '%s': %s", d->path, d->tensor, msg);
    else
        rt_st_fail(d->err, d->errsize, "%s: header: %s", d->path, msg);
    return -1;
}

/* A refusal of the grammar, where it happened: the tensor (the top-level
 * key whose value holds the place) and the byte, counted from the start
 * of the file as a hex dump shows it. */
static void syntax_fail(Dec *d, const BaseJsonError *e, size_t base)
{
    size_t byte = base + e->offset;
    int in_meta = e->depth > 0 && !strcmp(e->path[0], "__metadata__");
    if (e->fault == BASE_JSON_DUPLICATE && e->depth == 0) {
        if (!strcmp(e->key, "__metadata__"))
            rt_st_fail(d->err, d->errsize, "%s: header: __metadata__ given twice (byte %zu)", d->path, byte);
        else
            rt_st_fail(d->err, d->errsize, "%s: tensor '%s' appears twice in the header (byte %zu)", d->path, e->key,
                       byte);
    } else if (e->fault == BASE_JSON_DUPLICATE && e->depth == 1 && in_meta) {
        rt_st_fail(d->err, d->errsize, "%s: metadata key '%s' appears twice (byte %zu)", d->path, e->key, byte);
    } else if (e->fault == BASE_JSON_DUPLICATE && e->depth == 1) {
        rt_st_fail(d->err, d->errsize, "%s: header, tensor '%s': %s given twice (byte %zu)", d->path, e->path[0], e->key,
                   byte);
    } else {
        const char *what = e->fault == BASE_JSON_TRAILING ? "unexpected text after the header's object" : e->text;
        if (e->depth > 0 && !in_meta)
            rt_st_fail(d->err, d->errsize, "%s: header, tensor '%s': %s (byte %zu)", d->path, e->path[0], what, byte);
        else
            rt_st_fail(d->err, d->errsize, "%s: header: %s (byte %zu)", d->path, what, byte);
    }
}

static char *dup_str(Dec *d, const char *s)
{
    char *c = strdup(s);
    if (!c)
        dec_fail(d, "out of memory");
    return c;
}

/* [a, b, ...] of non-negative integers: the first `max` go to v, the count
 * (even past max) to *count. */
static int uint_array(Dec *d, const BaseJson *a, const char *field, const char *what, int64_t *v, int max, int *count)
{
    *count = 0;
    if (!base_json_is(a, BASE_JSON_ARRAY))
        return dec_fail(d, "expected '[' (an array) for %s", field);
    size_t n = base_json_len(a);
    for (size_t i = 0; i < n; i++) {
        const BaseJson *x = base_json_at(a, i);
        int64_t u;
        if (base_json_is(x, BASE_JSON_REAL))
            return dec_fail(d, "%s is not an integer", what);
        if (base_json_int(x, &u) != 0)
            return dec_fail(d, "expected %s (an integer)", what);
        if (u < 0)
            return dec_fail(d, "%s is negative", what);
        if ((int)i < max)
            v[i] = u;
    }
    *count = n > (1u << 20) ? 1 << 20 : (int)n;
    return 0;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, nothing else. */
static int tensor_entry(Dec *d, const BaseJson *v, RtStEntry *x)
{
    if (!base_json_is(v, BASE_JSON_OBJECT))
        return dec_fail(d, "expected '{' (the tensor's dtype, shape and data_offsets)");
    void *it = NULL;
    const char *key;
    const BaseJson *f;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    while (base_json_next(v, &it, &key, &f)) {
        if (!strcmp(key, "dtype")) {
            have_dtype = 1;
            if (!base_json_str(f))
                return dec_fail(d, "expected the dtype (a string)");
            if (!(x->dtype = dup_str(d, base_json_str(f))))
                return -1;
        } else if (!strcmp(key, "shape")) {
            have_shape = 1;
            if (uint_array(d, f, "shape", "a dimension", x->dim, RT_ST_MAX_DIMS, &x->ndim) != 0)
                return -1;
        } else if (!strcmp(key, "data_offsets")) {
            int64_t off[2] = {0, 0};
            int cnt;
            have_offsets = 1;
            if (uint_array(d, f, "data_offsets", "an offset", off, 2, &cnt) != 0)
                return -1;
            if (cnt != 2)
                return dec_fail(d, "data_offsets has %d entries, not 2 ([begin, end])", cnt);
            x->begin = off[0], x->end = off[1];
        } else {
            return dec_fail(d, "unknown field '%s'", key);
        }
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return dec_fail(d, "missing %s", !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return 0;
}

/* {"k": "v", ...}, strings only (keys unique: the grammar's rule). */
static int metadata(Dec *d, const BaseJson *v, RtStHeader *h)
{
    if (!base_json_is(v, BASE_JSON_OBJECT))
        return dec_fail(d, "expected '{' (the metadata)");
    size_t n = base_json_len(v);
    h->kv = calloc(2 * n + 1, sizeof *h->kv);
    if (!h->kv)
        return dec_fail(d, "out of memory");
    void *it = NULL;
    const char *key;
    const BaseJson *val;
    while (base_json_next(v, &it, &key, &val)) {
        if (!base_json_str(val))
            return dec_fail(d, "expected a metadata value (a string) for key '%s'", key);
        if (!(h->kv[h->nkv++] = dup_str(d, key)) || !(h->kv[h->nkv++] = dup_str(d, base_json_str(val))))
            return -1;
    }
    return 0;
}

int rt_st_header_decode(const char *path, const unsigned char *text, size_t len, size_t base, RtStHeader *h,
                        char *err, size_t errsize)
{
    memset(h, 0, sizeof *h);
    Dec d = {.path = path, .err = err, .errsize = errsize};
    BaseJsonError je;
    BaseJson *root = base_json_parse(text, len, &je);
    if (!root) {
        syntax_fail(&d, &je, base);
        return -1;
    }
    int rc = 0;
    if (!base_json_is(root, BASE_JSON_OBJECT)) {
        rc = dec_fail(&d, "expected '{' at the start of the header (an object)");
        goto done;
    }
    size_t members = base_json_len(root);
    h->t = calloc(members + 1, sizeof *h->t);
    if (!h->t) {
        rc = dec_fail(&d, "out of memory");
        goto done;
    }
    void *it = NULL;
    const char *key;
    const BaseJson *v;
    while (rc == 0 && base_json_next(root, &it, &key, &v)) {
        if (!strcmp(key, "__metadata__")) {
            rc = metadata(&d, v, h);
            continue;
        }
        RtStEntry *x = &h->t[h->n];
        x->order = h->n++;
        if (!(x->name = dup_str(&d, key))) {
            rc = -1;
            break;
        }
        d.tensor = x->name;
        rc = tensor_entry(&d, v, x);
        d.tensor = NULL;
    }
done:
    base_json_free(root);
    if (rc != 0)
        rt_st_header_free(h);
    return rc;
}

void rt_st_header_free(RtStHeader *h)
{
    for (int i = 0; i < h->n; i++) {
        free(h->t[i].name);
        free(h->t[i].dtype);
    }
    for (int i = 0; i < h->nkv; i++)
        free(h->kv[i]);
    free(h->t);
    free(h->kv);
    memset(h, 0, sizeof *h);
}
