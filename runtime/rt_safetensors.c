/* runtime/rt_safetensors.c: reading and writing safetensors files (see
 * rt_safetensors.h), F32 only.
 *
 * Layout: u64 little-endian N, then N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32",
 *    "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
 * padded with spaces to a multiple of 8, then the data; offsets count from
 * the first byte after the header, end exclusive.
 *
 * The writer lays tensors out contiguously in the order given and replaces
 * the file atomically (temporary file, fsync, rename, fsync of the folder),
 * so a crash leaves the old checkpoint or the new one, never half of one.
 *
 * The reader trusts nothing. Its JSON parser knows only this header's
 * grammar (an object of objects, strings with every JSON escape, arrays of
 * non-negative integers), so nothing recurses and nothing is skipped
 * unread. It holds files to the same rules as the reference (Rust)
 * implementation: header at most 100 MB and inside the file, names unique,
 * each tensor's byte count equal to its shape's, and the tensors tiling the
 * data exactly (no gap, no overlap, nothing left over), which also catches
 * most truncated or corrupted files. Every message names the file and,
 * where there is one, the tensor. */
#include "rt_safetensors.h"

#include "base_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation's limit: a header larger than this is a
 * corrupt length, not a real model. */
#define RT_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define RT_ST_MAX_DIMS 4

static void st_fail(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void st_fail(char *err, size_t errsize, const char *fmt, ...)
{
    if (!err || errsize == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. JSON is UTF-8,
 * and PyTorch users' readers reject anything else. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int utf8_valid(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* Sorting pointers to strings, to find duplicates in n log n: a checkpoint
 * may hold many thousands of tensors. */
static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first string that occurs twice among s[0, n), or NULL. */
static const char *first_duplicate(const char *const *s, int n)
{
    if (n < 2)
        return NULL;
    const char **v = malloc((size_t)n * sizeof *v);
    if (!v)
        return NULL;
    memcpy(v, s, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            dup = v[i];
    free(v);
    return dup;
}

/* ---- writing ---------------------------------------------------------- */

typedef struct StBuf {
    char *d;
    size_t n, cap;
    int oom;
} StBuf;

static void sb_put(StBuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *d = realloc(b->d, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->d = d, b->cap = cap;
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = 0;
}

static void sb_str(StBuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_i64(StBuf *b, int64_t v)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)v);
    sb_str(b, num);
}

/* A JSON string: quotes, backslashes and control characters escaped,
 * UTF-8 (checked by the caller) passed through. */
static void sb_json_string(StBuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Floats as little-endian bytes whatever the host: swapped through a small
 * buffer on a big-endian one. */
static int write_f32_le(int fd, const float *x, int64_t n)
{
    if (n == 0)
        return 0;
    if (host_is_little_endian())
        return base_write_all(fd, x, (size_t)n * 4);
    unsigned char tmp[4096];
    for (int64_t i = 0; i < n;) {
        int64_t k = n - i < 1024 ? n - i : 1024;
        for (int64_t j = 0; j < k; j++) {
            unsigned char b[4];
            memcpy(b, &x[i + j], 4);
            for (int q = 0; q < 4; q++)
                tmp[4 * j + q] = b[3 - q];
        }
        if (base_write_all(fd, tmp, (size_t)k * 4) != 0)
            return -1;
        i += k;
    }
    return 0;
}

/* Elements of a tensor, or -1 when the shape is invalid or its byte count
 * overflows. */
static int64_t tensor_numel(int ndim, const int64_t *dim)
{
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (dim[d] < 0)
            return -1;
        if (dim[d] != 0 && numel > INT64_MAX / 4 / dim[d])
            return -1;
        numel *= dim[d];
    }
    return numel;
}

int rt_safetensors_write(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                         const char *const *meta_values, int nmeta, char *err, size_t errsize)
{
    if (n < 0 || nmeta < 0 || (n > 0 && !t) || (nmeta > 0 && (!meta_keys || !meta_values))) {
        st_fail(err, errsize, "%s: bad arguments (n %d, nmeta %d)", path, n, nmeta);
        return -1;
    }
    /* Everything is checked before the file is touched, so a bad call
     * never leaves a temporary file or replaces a good checkpoint. */
    for (int i = 0; i < n; i++) {
        const RtTensor *x = &t[i];
        if (!x->name || !x->name[0]) {
            st_fail(err, errsize, "%s: tensor %d has no name", path, i);
            return -1;
        }
        if (!strcmp(x->name, "__metadata__") || !utf8_valid(x->name)) {
            st_fail(err, errsize, "%s: tensor '%s': %s", path, x->name,
                    utf8_valid(x->name) ? "__metadata__ is reserved for the metadata" : "the name is not valid UTF-8");
            return -1;
        }
        if (x->ndim < 0 || x->ndim > RT_ST_MAX_DIMS) {
            st_fail(err, errsize, "%s: tensor '%s': %d dimensions (0 to %d allowed)", path, x->name, x->ndim, RT_ST_MAX_DIMS);
            return -1;
        }
        int64_t numel = tensor_numel(x->ndim, x->dim);
        if (numel < 0) {
            st_fail(err, errsize, "%s: tensor '%s': bad shape (a negative or too large dimension)", path, x->name);
            return -1;
        }
        if (numel > 0 && !x->data) {
            st_fail(err, errsize, "%s: tensor '%s': no data", path, x->name);
            return -1;
        }
    }
    for (int i = 0; i < nmeta; i++) {
        if (!meta_keys[i] || !meta_values[i] || !utf8_valid(meta_keys[i]) || !utf8_valid(meta_values[i])) {
            st_fail(err, errsize, "%s: metadata pair %d: key and value must be UTF-8 strings", path, i);
            return -1;
        }
    }
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!names) {
        st_fail(err, errsize, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < n; i++)
        names[i] = t[i].name;
    const char *dup = first_duplicate(names, n);
    free(names);
    if (dup) {
        st_fail(err, errsize, "%s: tensor '%s' appears twice", path, dup);
        return -1;
    }
    if ((dup = first_duplicate(meta_keys, nmeta)) != NULL) {
        st_fail(err, errsize, "%s: metadata key '%s' appears twice", path, dup);
        return -1;
    }

    StBuf h = {0};
    sb_str(&h, "{");
    if (nmeta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                sb_str(&h, ",");
            sb_json_string(&h, meta_keys[i]);
            sb_str(&h, ":");
            sb_json_string(&h, meta_values[i]);
        }
        sb_str(&h, "}");
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const RtTensor *x = &t[i];
        int64_t bytes = tensor_numel(x->ndim, x->dim) * 4;
        if (off > INT64_MAX - bytes) {
            free(h.d);
            st_fail(err, errsize, "%s: tensor '%s': the file would be too large", path, x->name);
            return -1;
        }
        if (nmeta > 0 || i > 0)
            sb_str(&h, ",");
        sb_json_string(&h, x->name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < x->ndim; d++) {
            if (d)
                sb_str(&h, ",");
            sb_i64(&h, x->dim[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_i64(&h, off);
        sb_str(&h, ",");
        sb_i64(&h, off + bytes);
        sb_str(&h, "]}");
        off += bytes;
    }
    sb_str(&h, "}");
    /* Spaces up to a multiple of 8, so the data (and every F32 in it)
     * starts aligned when the file is mapped or read whole. */
    while (!h.oom && h.n % 8 != 0)
        sb_str(&h, " ");
    if (h.oom || h.n > RT_ST_MAX_HEADER) {
        free(h.d);
        st_fail(err, errsize, "%s: %s", path, h.oom ? "out of memory" : "the header would be over 100 MB");
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));

    char *tmp;
    int fd = base_atomic_begin(path, &tmp, err, errsize);
    if (fd < 0) {
        free(h.d);
        return -1;
    }
    int rc = base_write_all(fd, len8, 8) == 0 && base_write_all(fd, h.d, h.n) == 0 ? 0 : -1;
    free(h.d);
    for (int i = 0; i < n && rc == 0; i++)
        rc = write_f32_le(fd, t[i].data, tensor_numel(t[i].ndim, t[i].dim));
    return base_atomic_finish(fd, tmp, path, rc == 0, err, errsize);
}

/* ---- reading: the header's JSON ---------------------------------------- */

typedef struct StInfo {
    char *name;
    char *dtype;
    int ndim;                 /* as written, may exceed RT_ST_MAX_DIMS */
    int64_t dim[RT_ST_MAX_DIMS];
    int64_t begin, end;
    int have_dtype, have_shape, have_offsets;
    int order;                /* place in the header, to break ties */
} StInfo;

typedef struct StJson {
    const unsigned char *s;   /* the header, s[0, n) */
    size_t n, at;
    const char *path;
    const char *tensor;       /* the tensor being read, for messages */
    char *err;
    size_t errsize;
    int bad;
} StJson;

static void js_fail(StJson *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void js_fail(StJson *j, const char *fmt, ...)
{
    if (j->bad)
        return;
    j->bad = 1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The position counts from the start of the file, as a hex dump shows it. */
    if (j->tensor)
        st_fail(j->err, j->errsize, "%s: header, tensor '%s': %s (byte %zu)", j->path, j->tensor, msg, j->at + 8);
    else
        st_fail(j->err, j->errsize, "%s: header: %s (byte %zu)", j->path, msg, j->at + 8);
}

static void js_ws(StJson *j)
{
    while (j->at < j->n && (j->s[j->at] == ' ' || j->s[j->at] == '\t' || j->s[j->at] == '\n' || j->s[j->at] == '\r'))
        j->at++;
}

/* Skips white space, then consumes c if it is next. */
static int js_eat(StJson *j, char c)
{
    js_ws(j);
    if (j->at < j->n && j->s[j->at] == (unsigned char)c) {
        j->at++;
        return 1;
    }
    return 0;
}

static int js_expect(StJson *j, char c, const char *what)
{
    if (js_eat(j, c))
        return 0;
    js_fail(j, "expected %s", what);
    return -1;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

/* A JSON string, decoded into a new NUL-terminated UTF-8 string. */
static char *js_string(StJson *j, const char *what)
{
    js_ws(j);
    if (j->at >= j->n || j->s[j->at] != '"') {
        js_fail(j, "expected %s (a string)", what);
        return NULL;
    }
    j->at++;
    /* Decoding never grows the text (an escape of k bytes yields at most
     * k bytes), so the raw length bounds the result. */
    size_t start = j->at, end = start;
    while (end < j->n && j->s[end] != '"')
        end += j->s[end] == '\\' ? 2 : 1;
    if (end >= j->n) {
        js_fail(j, "unterminated string");
        return NULL;
    }
    char *out = malloc(end - start + 1);
    if (!out) {
        js_fail(j, "out of memory");
        return NULL;
    }
    size_t k = 0;
    while (j->s[j->at] != '"') {
        unsigned char c = j->s[j->at];
        if (c < 0x20) {
            js_fail(j, "control character in a string");
            goto fail;
        }
        if (c != '\\') {
            size_t len = utf8_seq(j->s + j->at, end - j->at);
            if (len == 0) {
                js_fail(j, "invalid UTF-8 in a string");
                goto fail;
            }
            memcpy(out + k, j->s + j->at, len);
            k += len, j->at += len;
            continue;
        }
        unsigned char e = j->s[j->at + 1];
        static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
        const char *simple = e ? strchr(esc_in, e) : NULL;
        if (simple) {
            out[k++] = esc_out[simple - esc_in];
            j->at += 2;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || j->at + 6 > end || hex4(j->s + j->at + 2, &cp) != 0) {
            js_fail(j, "bad escape in a string");
            goto fail;
        }
        j->at += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            /* A high surrogate must pair with a low one: \ud83d\ude00. */
            if (j->at + 6 > end || j->s[j->at] != '\\' || j->s[j->at + 1] != 'u' || hex4(j->s + j->at + 2, &lo) != 0 ||
                lo < 0xdc00 || lo > 0xdfff) {
                js_fail(j, "unpaired surrogate in a string");
                goto fail;
            }
            j->at += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            js_fail(j, "unpaired surrogate in a string");
            goto fail;
        }
        if (cp == 0) {
            js_fail(j, "NUL character in a string");
            goto fail;
        }
        /* Encoded in at most 4 bytes, never more than the 6 or 12 read. */
        if (cp < 0x80) {
            out[k++] = (char)cp;
        } else if (cp < 0x800) {
            out[k++] = (char)(0xc0 | (cp >> 6));
            out[k++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[k++] = (char)(0xe0 | (cp >> 12));
            out[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[k++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[k++] = (char)(0xf0 | (cp >> 18));
            out[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[k++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    j->at++; /* the closing quote */
    out[k] = 0;
    return out;
fail:
    free(out);
    return NULL;
}

/* A non-negative JSON integer that fits in int64_t. */
static int js_uint(StJson *j, const char *what, int64_t *out)
{
    js_ws(j);
    size_t at = j->at;
    if (at < j->n && j->s[at] == '-') {
        js_fail(j, "%s is negative", what);
        return -1;
    }
    if (at >= j->n || j->s[at] < '0' || j->s[at] > '9') {
        js_fail(j, "expected %s (an integer)", what);
        return -1;
    }
    if (j->s[at] == '0' && at + 1 < j->n && j->s[at + 1] >= '0' && j->s[at + 1] <= '9') {
        js_fail(j, "%s has a leading zero", what);
        return -1;
    }
    int64_t v = 0;
    while (at < j->n && j->s[at] >= '0' && j->s[at] <= '9') {
        int d = j->s[at] - '0';
        if (v > (INT64_MAX - d) / 10) {
            js_fail(j, "%s is too large", what);
            return -1;
        }
        v = v * 10 + d;
        at++;
    }
    if (at < j->n && (j->s[at] == '.' || j->s[at] == 'e' || j->s[at] == 'E')) {
        j->at = at;
        js_fail(j, "%s is not an integer", what);
        return -1;
    }
    j->at = at;
    *out = v;
    return 0;
}

/* [a, b, ...] of non-negative integers: the first `max` go to v, the count
 * (even past max) to *count. */
static int js_uint_array(StJson *j, const char *what, int64_t *v, int max, int *count)
{
    *count = 0;
    if (js_expect(j, '[', "'[' (an array)") != 0)
        return -1;
    if (js_eat(j, ']'))
        return 0;
    for (;;) {
        int64_t x;
        if (js_uint(j, what, &x) != 0)
            return -1;
        if (*count < max)
            v[*count] = x;
        if (*count == 1 << 20) {
            js_fail(j, "%s: too many entries", what);
            return -1;
        }
        (*count)++;
        if (js_eat(j, ']'))
            return 0;
        if (js_expect(j, ',', "',' or ']'") != 0)
            return -1;
    }
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, each exactly once. */
static int js_tensor_info(StJson *j, StInfo *x)
{
    if (js_expect(j, '{', "'{' (the tensor's dtype, shape and data_offsets)") != 0)
        return -1;
    if (!js_eat(j, '}')) {
        for (;;) {
            char *key = js_string(j, "a field name");
            if (!key)
                return -1;
            if (js_expect(j, ':', "':'") != 0) {
                free(key);
                return -1;
            }
            int rc = 0;
            if (!strcmp(key, "dtype")) {
                if (x->have_dtype++)
                    js_fail(j, "dtype given twice"), rc = -1;
                else if (!(x->dtype = js_string(j, "the dtype")))
                    rc = -1;
            } else if (!strcmp(key, "shape")) {
                if (x->have_shape++)
                    js_fail(j, "shape given twice"), rc = -1;
                else
                    rc = js_uint_array(j, "a dimension", x->dim, RT_ST_MAX_DIMS, &x->ndim);
            } else if (!strcmp(key, "data_offsets")) {
                int64_t off[2];
                int cnt;
                if (x->have_offsets++)
                    js_fail(j, "data_offsets given twice"), rc = -1;
                else if ((rc = js_uint_array(j, "an offset", off, 2, &cnt)) == 0 && cnt != 2)
                    js_fail(j, "data_offsets has %d entries, not 2 ([begin, end])", cnt), rc = -1;
                if (rc == 0)
                    x->begin = off[0], x->end = off[1];
            } else {
                js_fail(j, "unknown field '%s'", key);
                rc = -1;
            }
            free(key);
            if (rc != 0)
                return -1;
            if (js_eat(j, '}'))
                break;
            if (js_expect(j, ',', "',' or '}'") != 0)
                return -1;
        }
    }
    if (!x->have_dtype || !x->have_shape || !x->have_offsets) {
        js_fail(j, "missing %s", !x->have_dtype ? "dtype" : !x->have_shape ? "shape" : "data_offsets");
        return -1;
    }
    return 0;
}

/* {"k": "v", ...}, strings only, keys unique (checked by the caller). */
static int js_metadata(StJson *j, char ***kv, int *nkv)
{
    if (js_expect(j, '{', "'{' (the metadata)") != 0)
        return -1;
    if (js_eat(j, '}'))
        return 0;
    int cap = 0;
    for (;;) {
        if (*nkv + 2 > cap) {
            cap = cap ? 2 * cap : 16;
            char **v = realloc(*kv, (size_t)cap * sizeof *v);
            if (!v) {
                js_fail(j, "out of memory");
                return -1;
            }
            *kv = v;
        }
        char *k = js_string(j, "a metadata key");
        if (!k)
            return -1;
        (*kv)[(*nkv)++] = k;
        if (js_expect(j, ':', "':'") != 0)
            return -1;
        char *v = js_string(j, "a metadata value");
        if (!v)
            return -1;
        (*kv)[(*nkv)++] = v;
        if (js_eat(j, '}'))
            return 0;
        if (js_expect(j, ',', "',' or '}'") != 0)
            return -1;
    }
}

/* ---- reading: the file -------------------------------------------------- */

static int cmp_info_offset(const void *a, const void *b)
{
    const StInfo *x = *(const StInfo *const *)a, *y = *(const StInfo *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order - y->order;
}

static void free_infos(StInfo *info, int n)
{
    for (int i = 0; i < n; i++) {
        free(info[i].name);
        free(info[i].dtype);
    }
    free(info);
}

int rt_safetensors_read(const char *path, RtSafetensors *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t len;
    char why[256];
    if (base_read_file(path, SIZE_MAX - 1, &buf, &len, why, sizeof why) != BASE_READ_OK) {
        st_fail(err, errsize, "cannot read '%s': %s", path, why);
        return -1;
    }

    StInfo *info = NULL, **order = NULL;
    char **kv = NULL;
    int n = 0, cap = 0, nkv = 0, have_meta = 0;
    RtTensor *t = NULL;
    char **names = NULL;

    if (len < 8) {
        st_fail(err, errsize, "%s: %zu bytes, too short for a safetensors file (8-byte header length first)", path, len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > RT_ST_MAX_HEADER) {
        st_fail(err, errsize, "%s: header length %llu is over 100 MB: not a safetensors file, or corrupt", path,
                (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > len - 8) {
        st_fail(err, errsize, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", path,
                (unsigned long long)hlen, len);
        goto fail;
    }
    size_t base = 8 + (size_t)hlen, dlen = len - base;

    StJson j = {.s = buf + 8, .n = (size_t)hlen, .path = path, .err = err, .errsize = errsize};
    if (js_expect(&j, '{', "'{' at the start of the header") != 0)
        goto fail;
    if (!js_eat(&j, '}')) {
        for (;;) {
            char *key = js_string(&j, "a tensor name");
            if (!key)
                goto fail;
            if (js_expect(&j, ':', "':'") != 0) {
                free(key);
                goto fail;
            }
            if (!strcmp(key, "__metadata__")) {
                free(key);
                if (have_meta++) {
                    js_fail(&j, "__metadata__ given twice");
                    goto fail;
                }
                if (js_metadata(&j, &kv, &nkv) != 0)
                    goto fail;
            } else {
                if (n == cap) {
                    cap = cap ? 2 * cap : 16;
                    StInfo *v = realloc(info, (size_t)cap * sizeof *v);
                    if (!v) {
                        free(key);
                        st_fail(err, errsize, "%s: out of memory", path);
                        goto fail;
                    }
                    info = v;
                }
                StInfo *x = &info[n++];
                memset(x, 0, sizeof *x);
                x->name = key;
                x->order = n - 1;
                j.tensor = key;
                if (js_tensor_info(&j, x) != 0)
                    goto fail;
                j.tensor = NULL;
            }
            if (js_eat(&j, '}'))
                break;
            if (js_expect(&j, ',', "',' or '}'") != 0)
                goto fail;
        }
    }
    js_ws(&j);
    if (j.at != j.n) {
        js_fail(&j, "unexpected text after the header's object");
        goto fail;
    }

    /* Meaning: names, dtypes, shapes against byte ranges, ranges against
     * the data. */
    for (int i = 0; i < n; i++) {
        StInfo *x = &info[i];
        if (strcmp(x->dtype, "F32") != 0) {
            st_fail(err, errsize, "%s: tensor '%s' has dtype %s; only F32 is supported", path, x->name, x->dtype);
            goto fail;
        }
        if (x->ndim > RT_ST_MAX_DIMS) {
            st_fail(err, errsize, "%s: tensor '%s' has %d dimensions; at most %d are supported", path, x->name, x->ndim,
                    RT_ST_MAX_DIMS);
            goto fail;
        }
        int64_t numel = tensor_numel(x->ndim, x->dim);
        if (numel < 0) {
            st_fail(err, errsize, "%s: tensor '%s': its shape is too large", path, x->name);
            goto fail;
        }
        if (x->begin > x->end || (uint64_t)x->end > (uint64_t)dlen) {
            st_fail(err, errsize, "%s: tensor '%s': data_offsets [%lld, %lld] are not inside the data (%zu bytes)%s", path,
                    x->name, (long long)x->begin, (long long)x->end, dlen,
                    x->begin <= x->end ? ": truncated file?" : "");
            goto fail;
        }
        if (x->end - x->begin != numel * 4) {
            char shape[128] = "";
            size_t k = 0;
            for (int d = 0; d < x->ndim; d++)
                k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "", (long long)x->dim[d]);
            st_fail(err, errsize, "%s: tensor '%s': shape [%s] needs %lld bytes but data_offsets [%lld, %lld] hold %lld",
                    path, x->name, shape, (long long)(numel * 4), (long long)x->begin, (long long)x->end,
                    (long long)(x->end - x->begin));
            goto fail;
        }
    }
    {
        const char **nm = malloc(((size_t)n + 1) * sizeof *nm);
        if (!nm) {
            st_fail(err, errsize, "%s: out of memory", path);
            goto fail;
        }
        for (int i = 0; i < n; i++)
            nm[i] = info[i].name;
        const char *dup = first_duplicate(nm, n);
        free(nm);
        if (dup) {
            st_fail(err, errsize, "%s: tensor '%s' appears twice in the header", path, dup);
            goto fail;
        }
        const char **keys = malloc(((size_t)nkv / 2 + 1) * sizeof *keys);
        if (!keys) {
            st_fail(err, errsize, "%s: out of memory", path);
            goto fail;
        }
        for (int i = 0; i < nkv / 2; i++)
            keys[i] = kv[2 * i];
        dup = first_duplicate(keys, nkv / 2);
        free(keys);
        if (dup) {
            st_fail(err, errsize, "%s: metadata key '%s' appears twice", path, dup);
            goto fail;
        }
    }
    /* The tensors must tile the data in file order: no gap, no overlap,
     * nothing after the last. */
    order = malloc(((size_t)n + 1) * sizeof *order);
    if (!order) {
        st_fail(err, errsize, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < n; i++)
        order[i] = &info[i];
    qsort(order, (size_t)n, sizeof *order, cmp_info_offset);
    {
        int64_t expect = 0;
        for (int i = 0; i < n; i++) {
            if (order[i]->begin != expect) {
                st_fail(err, errsize, "%s: tensor '%s' starts at data byte %lld, but the one before ends at %lld (%s)", path,
                        order[i]->name, (long long)order[i]->begin, (long long)expect,
                        order[i]->begin > expect ? "a gap" : "they overlap");
                goto fail;
            }
            expect = order[i]->end;
        }
        if ((uint64_t)expect != (uint64_t)dlen) {
            st_fail(err, errsize, "%s: the tensors cover %lld bytes of data but the file holds %zu after the header", path,
                    (long long)expect, dlen);
            goto fail;
        }
    }

    /* Floats must be aligned to be read in place. Any conforming writer pads
     * the header to 8, but if one did not, slide the data back over the
     * (already parsed) header to the aligned offset below. */
    size_t data_at = base;
    if (base % 4 != 0) {
        data_at = base & ~(size_t)3;
        memmove(buf + data_at, buf + base, dlen);
    }
    if (!host_is_little_endian()) {
        for (size_t i = 0; i + 4 <= dlen; i += 4) {
            unsigned char *b = buf + data_at + i, c;
            c = b[0], b[0] = b[3], b[3] = c;
            c = b[1], b[1] = b[2], b[2] = c;
        }
    }

    /* names: the n tensor names, then the metadata as key, value pairs,
     * then NULL (see the extension section of rt_safetensors.h). */
    t = calloc((size_t)n + 1, sizeof *t);
    names = calloc((size_t)n + (size_t)nkv + 1, sizeof *names);
    if (!t || !names) {
        st_fail(err, errsize, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        StInfo *x = order[i];
        names[i] = x->name;
        x->name = NULL; /* now owned by names */
        t[i].name = names[i];
        t[i].ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++)
            t[i].dim[d] = x->dim[d];
        t[i].data = (const float *)(const void *)(buf + data_at + (size_t)x->begin);
    }
    for (int i = 0; i < nkv; i++)
        names[n + i] = kv[i];
    free(kv);
    free(order);
    free_infos(info, n);
    out->buf = buf;
    out->len = len;
    out->t = t;
    out->names = names;
    out->n = n;
    return 0;

fail:
    free(t);
    free(names);
    free(order);
    for (int i = 0; i < nkv; i++)
        free(kv[i]);
    free(kv);
    free_infos(info, n);
    free(buf);
    memset(out, 0, sizeof *out);
    return -1;
}

const RtTensor *rt_safetensors_find(const RtSafetensors *s, const char *name)
{
    if (!s || !name)
        return NULL;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name))
            return &s->t[i];
    return NULL;
}

void rt_safetensors_free(RtSafetensors *s)
{
    if (!s)
        return;
    if (s->names)
        for (int i = 0; s->names[i]; i++)
            free(s->names[i]);
    free(s->names);
    free(s->t);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* ---- extension: metadata (see rt_safetensors.h) ------------------------- */

int rt_safetensors_meta_count(const RtSafetensors *s)
{
    if (!s || !s->names)
        return 0;
    int k = 0;
    while (s->names[s->n + k])
        k++;
    return k / 2;
}

int rt_safetensors_meta_at(const RtSafetensors *s, int i, const char **key, const char **value)
{
    if (i < 0 || i >= rt_safetensors_meta_count(s))
        return -1;
    *key = s->names[s->n + 2 * i];
    *value = s->names[s->n + 2 * i + 1];
    return 0;
}

const char *rt_safetensors_meta(const RtSafetensors *s, const char *key)
{
    int m = rt_safetensors_meta_count(s);
    for (int i = 0; i < m; i++)
        if (!strcmp(s->names[s->n + 2 * i], key))
            return s->names[s->n + 2 * i + 1];
    return NULL;
}
