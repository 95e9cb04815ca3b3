/* base/base_npy.c: the .npy header (base_npy.h). The header is a Python
 * dict literal; this reads the subset numpy.save writes (and any spacing,
 * order of keys, quotes and trailing commas Python would accept for it),
 * nothing else: no escapes, no expressions. */
#include "base_npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const base_npy_dtype_names[4] = {"float32", "int64", "int32", "uint8"};

/* The largest dimension and element count accepted: far beyond any data
 * set, and products stay inside int64_t. */
#define NPY_MAX_ELEMS ((int64_t)1 << 56)

static int say(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

typedef struct Lex {
    const char *s, *end;
} Lex;

static void ws(Lex *x)
{
    while (x->s < x->end && (*x->s == ' ' || *x->s == '\t' || *x->s == '\n' || *x->s == '\r'))
        x->s++;
}

static int eat(Lex *x, char c)
{
    ws(x);
    if (x->s < x->end && *x->s == c) {
        x->s++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...") without escapes, into out. */
static int str(Lex *x, char *out, size_t n)
{
    ws(x);
    if (x->s >= x->end || (*x->s != '\'' && *x->s != '"'))
        return -1;
    char q = *x->s++;
    size_t k = 0;
    while (x->s < x->end && *x->s != q) {
        if (*x->s == '\\' || k + 1 >= n)
            return -1;
        out[k++] = *x->s++;
    }
    if (x->s >= x->end)
        return -1;
    x->s++;
    out[k] = 0;
    return 0;
}

/* What a descr names, for messages: "float64" for '<f8', or NULL. */
static const char *numpy_name(char kind, int size)
{
    static const struct {
        char kind;
        int size;
        const char *name;
    } t[] = {{'f', 2, "float16"}, {'f', 4, "float32"}, {'f', 8, "float64"}, {'f', 16, "longdouble"},
             {'i', 1, "int8"},    {'i', 2, "int16"},   {'i', 4, "int32"},   {'i', 8, "int64"},
             {'u', 1, "uint8"},   {'u', 2, "uint16"},  {'u', 4, "uint32"},  {'u', 8, "uint64"},
             {'b', 1, "bool"},    {'c', 8, "complex64"}, {'c', 16, "complex128"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].kind == kind && t[i].size == size)
            return t[i].name;
    return NULL;
}

static int host_little(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static int descr(const char *d, BaseNpy *h, char *why, size_t n)
{
    char order = '|';
    const char *p = d;
    if (*p == '<' || *p == '>' || *p == '|' || *p == '=')
        order = *p++;
    char kind = *p ? *p++ : 0;
    int size = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && size < 1000)
        size = size * 10 + (*p++ - '0'), digits++;
    const char *name = *p || !digits ? NULL : numpy_name(kind, size);
    int little = order == '<' || (order == '=' && host_little()) || (order == '|' && size == 1);
    if (name && size > 1 && !little)
        return say(why, n, "dtype '%s' is big-endian: pipe reads little-endian files (numpy.save writes the "
                   "machine's order; .astype('<%c%d') first)", d, kind, size);
    if (name && !strcmp(name, "float32"))
        h->dtype = BASE_NPY_F32;
    else if (name && !strcmp(name, "int64"))
        h->dtype = BASE_NPY_I64;
    else if (name && !strcmp(name, "int32"))
        h->dtype = BASE_NPY_I32;
    else if (name && !strcmp(name, "uint8"))
        h->dtype = BASE_NPY_U8;
    else
        return say(why, n, "dtype '%s'%s%s%s is not supported: pipe reads float32, int64, int32 and uint8 "
                   "(convert with .astype(numpy.float32) before numpy.save)", d, name ? " (" : "",
                   name ? name : "", name ? ")" : "");
    h->item = size;
    return 0;
}

static int shape(Lex *x, BaseNpy *h, char *why, size_t n)
{
    if (!eat(x, '('))
        return say(why, n, "the header's 'shape' is not a tuple of integers");
    h->ndim = 0;
    for (;;) {
        if (eat(x, ')'))
            break;
        ws(x);
        int64_t v = 0;
        int digits = 0;
        while (x->s < x->end && *x->s >= '0' && *x->s <= '9') {
            if (v > NPY_MAX_ELEMS)
                return say(why, n, "the header's shape has a dimension over 2^56");
            v = v * 10 + (*x->s++ - '0');
            digits++;
        }
        if (!digits)
            return say(why, n, "the header's 'shape' is not a tuple of integers");
        if (x->s < x->end && *x->s == 'L') /* Python 2's long */
            x->s++;
        if (h->ndim == BASE_NPY_MAX_DIMS)
            return say(why, n, "the array has more than %d dimensions", BASE_NPY_MAX_DIMS);
        h->dim[h->ndim++] = v;
        if (eat(x, ','))
            continue;
        if (eat(x, ')'))
            break;
        return say(why, n, "the header's 'shape' is not a tuple of integers");
    }
    return 0;
}

static void shape_text(const BaseNpy *h, int from, char *buf, size_t size, const char *open, const char *close)
{
    size_t k = (size_t)snprintf(buf, size, "%s", open);
    for (int d = from; d < h->ndim && k < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d > from ? ", " : "", (long long)h->dim[d]);
    if (open[0] == '(' && h->ndim - from == 1 && k < size)
        k += (size_t)snprintf(buf + k, size - k, ",");
    if (k < size)
        snprintf(buf + k, size - k, "%s", close);
}

void base_npy_sample_text(const BaseNpy *h, char *buf, size_t size)
{
    shape_text(h, 1, buf, size, "[", "]");
}

int base_npy_parse(const unsigned char *buf, size_t len, BaseNpy *h, size_t *need, char *why, size_t whysize)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    memset(h, 0, sizeof *h);
    *need = 0;
    if (memcmp(buf, magic, len < 6 ? len : 6) != 0)
        return say(why, whysize, "not a .npy file (no \\x93NUMPY magic at its start)");
    if (len < 10) {
        *need = 10;
        return 1;
    }
    int major = buf[6], minor = buf[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return say(why, whysize, ".npy format version %d.%d; pipe reads 1.0, 2.0 and 3.0", major, minor);
    size_t prefix = major == 1 ? 10 : 12;
    if (len < prefix) {
        *need = prefix;
        return 1;
    }
    uint64_t hlen = major == 1 ? (uint64_t)buf[8] | (uint64_t)buf[9] << 8
                               : (uint64_t)buf[8] | (uint64_t)buf[9] << 8 | (uint64_t)buf[10] << 16 |
                                     (uint64_t)buf[11] << 24;
    if (hlen > BASE_NPY_MAX_HEADER)
        return say(why, whysize, "a header of %llu bytes: not one numpy writes for an array", (unsigned long long)hlen);
    if (len < prefix + hlen) {
        *need = prefix + (size_t)hlen;
        return 1;
    }
    h->version = major;
    h->data_offset = (int64_t)(prefix + hlen);
    Lex x = {(const char *)buf + prefix, (const char *)buf + prefix + hlen};
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    char key[32], d[64];
    if (!eat(&x, '{'))
        return say(why, whysize, "the header is not a Python dict ('{' expected)");
    while (!eat(&x, '}')) {
        if (str(&x, key, sizeof key) != 0)
            return say(why, whysize, "the header is not a dict of 'descr', 'fortran_order' and 'shape'");
        if (!eat(&x, ':'))
            return say(why, whysize, "the header's key '%s' has no ':'", key);
        int *have = !strcmp(key, "descr") ? &have_descr : !strcmp(key, "fortran_order") ? &have_fortran
                    : !strcmp(key, "shape") ? &have_shape : NULL;
        if (!have)
            return say(why, whysize, "the header has the key '%s' (only 'descr', 'fortran_order' and 'shape' are "
                       "allowed)", key);
        if (*have)
            return say(why, whysize, "the header gives '%s' twice", key);
        *have = 1;
        if (have == &have_descr) {
            ws(&x);
            if (x.s < x.end && *x.s == '[')
                return say(why, whysize, "a structured dtype (a list of fields) is not supported: pipe reads one "
                           "float32, int64, int32 or uint8 array per file");
            if (str(&x, d, sizeof d) != 0)
                return say(why, whysize, "the header's 'descr' is not a dtype string");
        } else if (have == &have_fortran) {
            ws(&x);
            if (x.end - x.s >= 4 && !memcmp(x.s, "True", 4))
                fortran = 1, x.s += 4;
            else if (x.end - x.s >= 5 && !memcmp(x.s, "False", 5))
                fortran = 0, x.s += 5;
            else
                return say(why, whysize, "the header's 'fortran_order' is not True or False");
        } else if (shape(&x, h, why, whysize) != 0) {
            return -1;
        }
        if (eat(&x, ','))
            continue;
        if (eat(&x, '}'))
            break;
        return say(why, whysize, "the header is not a Python dict (',' or '}' expected after '%s')", key);
    }
    ws(&x);
    if (x.s != x.end)
        return say(why, whysize, "text after the header's dict");
    if (!have_descr || !have_fortran || !have_shape)
        return say(why, whysize, "the header lacks '%s'", !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if (descr(d, h, why, whysize) != 0)
        return -1;
    char s[160];
    shape_text(h, 0, s, sizeof s, "(", ")");
    if (fortran && h->ndim > 1)
        return say(why, whysize, "the array is in Fortran order (column-major); pipe reads C order "
                   "(numpy.ascontiguousarray before numpy.save)");
    if (h->ndim == 0)
        return say(why, whysize, "a scalar (shape ()): the first dimension counts samples");
    if (h->dim[0] == 0)
        return say(why, whysize, "holds no samples (shape %s)", s);
    h->count = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->dim[i] > 0 && h->count > NPY_MAX_ELEMS / h->dim[i])
            return say(why, whysize, "shape %s is too large", s);
        h->count *= h->dim[i];
    }
    h->data_bytes = h->count * h->item;
    return 0;
}

int base_npy_read_header(const char *path, BaseNpy *h, char *err, size_t errsize)
{
    unsigned char small[64], *buf = small;
    char why[400];
    memset(h, 0, sizeof *h);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return say(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return say(err, errsize, "%s: not a regular file", path);
    }
    size_t have = 0, want = 12, cap = sizeof small;
    int rc;
    for (;;) {
        while (have < want) {
            ssize_t r = read(fd, buf + have, want - have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        size_t need;
        rc = base_npy_parse(buf, have, h, &need, why, sizeof why);
        if (rc != 1)
            break;
        if (need <= have) { /* the file ended before the header did */
            rc = say(why, sizeof why, "the file ends inside its header (%zu bytes)", have);
            break;
        }
        if (need > cap) {
            unsigned char *b = malloc(need);
            if (!b) {
                rc = say(why, sizeof why, "out of memory");
                break;
            }
            memcpy(b, buf, have);
            if (buf != small)
                free(buf);
            buf = b, cap = need;
        }
        want = need;
    }
    if (buf != small)
        free(buf);
    close(fd);
    if (rc != 0) {
        if (!strncmp(why, "not a .npy", 10) && have < 6)
            snprintf(why, sizeof why, "not a .npy file (%zu bytes, no \\x93NUMPY magic)", have);
        return say(err, errsize, "%s: %s", path, why);
    }
    int64_t size = (int64_t)st.st_size, body = size - h->data_offset;
    char s[160];
    shape_text(h, 0, s, sizeof s, "(", ")");
    if (body != h->data_bytes)
        return say(err, errsize, "%s: %s: shape %s of %s needs %lld data bytes after the header, the file holds %lld",
                   path, body < h->data_bytes ? "cut short" : "more data than the header declares", s,
                   base_npy_dtype_names[h->dtype], (long long)h->data_bytes, (long long)body);
    return 0;
}

int base_npy_fits(const BaseNpy *h, int is_int, int ndim, const int64_t *dim, char *why, size_t whysize)
{
    int ok = is_int ? h->dtype != BASE_NPY_F32 : (h->dtype == BASE_NPY_F32 || h->dtype == BASE_NPY_U8);
    if (!ok)
        return say(why, whysize, "holds %s values (%s)", base_npy_dtype_names[h->dtype],
                   is_int ? "an int32 tensor takes int32, int64 or uint8" : "a float32 tensor takes float32 or uint8");
    int same = h->ndim - 1 == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = h->dim[d + 1] == dim[d];
    if (!same) {
        char a[160], b[160];
        base_npy_sample_text(h, a, sizeof a);
        shape_text(h, 0, b, sizeof b, "(", ")");
        return say(why, whysize, "holds samples of %s (shape %s)", a, b);
    }
    return 0;
}
