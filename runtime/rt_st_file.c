/* runtime/rt_st_file.c: safetensors files (rt_safetensors.h, rt_st.h):
 * written atomically (base_atomic_*: a temporary file, fsync, rename, fsync
 * of the folder, so a crash leaves the old checkpoint or the new one, never
 * half of one), read whole (base_read_file) into one buffer the tensors
 * then point into, and the API over a file read: find, metadata, free.
 *
 * The reader trusts nothing: the header's length against the 100 MB limit
 * and the file, the header through rt_st_header_decode, its numbers
 * through rt_st_check_header; only then are the floats aligned (and
 * byte-swapped on a big-endian host) in place. */
#include "rt_st.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base_file.h"

/* ---- writing ------------------------------------------------------------- */

static int write_f32_le(int fd, const float *x, int64_t n);

/* A tensor's elements as little-endian bytes: F32, or I64 (8 bytes each,
 * swapped whole on a big-endian host). */
static int write_le(int fd, const RtTensor *t, const float *x)
{
    int64_t n = rt_st_numel(t->ndim, t->dim);
    if (!t->i64)
        return write_f32_le(fd, x, n);
    if (rt_st_host_is_little_endian())
        return n ? base_write_all(fd, x, (size_t)n * 8) : 0;
    for (int64_t i = 0; i < n; i++) {
        unsigned char b[8], r[8];
        memcpy(b, (const unsigned char *)x + 8 * i, 8);
        for (int q = 0; q < 8; q++)
            r[q] = b[7 - q];
        if (base_write_all(fd, r, 8) != 0)
            return -1;
    }
    return 0;
}

/* Floats as little-endian bytes whatever the host: swapped through a small
 * buffer on a big-endian one. */
static int write_f32_le(int fd, const float *x, int64_t n)
{
    if (n == 0)
        return 0;
    if (rt_st_host_is_little_endian())
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

int rt_safetensors_write(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                         const char *const *meta_values, int nmeta, char *err, size_t errsize)
{
    if (rt_st_check_write(path, t, n, meta_keys, meta_values, nmeta, err, errsize) != 0)
        return -1;
    char *h;
    size_t hn;
    if (rt_st_header_encode(path, t, n, meta_keys, meta_values, nmeta, &h, &hn, err, errsize) != 0)
        return -1;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hn >> (8 * i));

    char *tmp;
    int fd = base_atomic_begin(path, &tmp, err, errsize);
    if (fd < 0) {
        free(h);
        return -1;
    }
    int rc = base_write_all(fd, len8, 8) == 0 && base_write_all(fd, h, hn) == 0 ? 0 : -1;
    free(h);
    for (int i = 0; i < n && rc == 0; i++)
        rc = write_le(fd, &t[i], t[i].data);
    return base_atomic_finish(fd, tmp, path, rc == 0, err, errsize);
}

int rt_safetensors_write_stream(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                                const char *const *meta_values, int nmeta, const float *(*get)(void *ctx, int i),
                                void *ctx, char *err, size_t errsize)
{
    /* the writer's checks want data for every non-empty tensor: a copy
     * whose data points at something (never read: the floats come from get) */
    RtTensor *c = malloc(((size_t)n + 1) * sizeof *c);
    if (!c) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        for (int i = 0; i < n; i++)
            get(ctx, i);
        return -1;
    }
    static const float placeholder;
    for (int i = 0; i < n; i++) {
        c[i] = t[i];
        c[i].data = &placeholder;
    }
    char *h = NULL, *tmp = NULL;
    size_t hn = 0;
    int fd = -1, rc = -1;
    if (rt_st_check_write(path, c, n, meta_keys, meta_values, nmeta, err, errsize) == 0 &&
        rt_st_header_encode(path, c, n, meta_keys, meta_values, nmeta, &h, &hn, err, errsize) == 0 &&
        (fd = base_atomic_begin(path, &tmp, err, errsize)) >= 0) {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++)
            len8[i] = (unsigned char)((uint64_t)hn >> (8 * i));
        rc = base_write_all(fd, len8, 8) == 0 && base_write_all(fd, h, hn) == 0 ? 0 : -1;
    }
    free(h);
    free(c);
    /* every tensor is fetched, whatever happened */
    for (int i = 0; i < n; i++) {
        const float *x = get(ctx, i);
        if (rc == 0 && fd >= 0)
            rc = write_le(fd, &t[i], x);
    }
    if (fd < 0)
        return -1;
    return base_atomic_finish(fd, tmp, path, rc == 0, err, errsize);
}

/* ---- reading ------------------------------------------------------------- */

int rt_st_read_buffer(const char *path, unsigned char *buf, size_t len, RtSafetensors *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof *out);
    RtStHeader h = {0};
    RtStEntry **order = NULL;
    RtTensor *t = NULL;
    char **names = NULL;

    if (len < 8) {
        rt_st_fail(err, errsize, "%s: %zu bytes, too short for a safetensors file (8-byte header length first)", path,
                   len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > RT_ST_MAX_HEADER) {
        rt_st_fail(err, errsize, "%s: header length %llu is over 100 MB: not a safetensors file, or corrupt", path,
                   (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > len - 8) {
        rt_st_fail(err, errsize, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", path,
                   (unsigned long long)hlen, len);
        goto fail;
    }
    size_t base = 8 + (size_t)hlen, dlen = len - base;
    if (rt_st_header_decode(path, buf + 8, (size_t)hlen, 8, &h, err, errsize) != 0 ||
        rt_st_check_header(path, &h, dlen, &order, err, errsize) != 0)
        goto fail;

    /* Floats must be aligned to be read in place. Any conforming writer pads
     * the header to 8, but if one did not, slide the data back over the
     * (already parsed) header to the aligned offset below. */
    size_t data_at = base;
    if (base % 4 != 0) {
        data_at = base & ~(size_t)3;
        memmove(buf + data_at, buf + base, dlen);
    }
    if (!rt_st_host_is_little_endian()) {
        for (size_t i = 0; i + 4 <= dlen; i += 4) {
            unsigned char *b = buf + data_at + i, c;
            c = b[0], b[0] = b[3], b[3] = c;
            c = b[1], b[1] = b[2], b[2] = c;
        }
    }

    /* names: the n tensor names, then the metadata as key, value pairs,
     * then NULL (see the extension section of rt_safetensors.h). */
    int n = h.n;
    t = calloc((size_t)n + 1, sizeof *t);
    names = calloc((size_t)n + (size_t)h.nkv + 1, sizeof *names);
    if (!t || !names) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        RtStEntry *x = order[i];
        names[i] = x->name;
        x->name = NULL; /* now owned by names */
        t[i].name = names[i];
        t[i].ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++)
            t[i].dim[d] = x->dim[d];
        t[i].data = (const float *)(const void *)(buf + data_at + (size_t)x->begin);
        t[i].i64 = !strcmp(x->dtype, "I64");
    }
    for (int i = 0; i < h.nkv; i++) {
        names[n + i] = h.kv[i];
        h.kv[i] = NULL;
    }
    free(order);
    rt_st_header_free(&h);
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
    rt_st_header_free(&h);
    free(buf);
    memset(out, 0, sizeof *out);
    return -1;
}

int rt_safetensors_read(const char *path, RtSafetensors *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t len;
    char why[256];
    if (base_read_file(path, SIZE_MAX - 1, &buf, &len, why, sizeof why) != BASE_READ_OK) {
        rt_st_fail(err, errsize, "cannot read '%s': %s", path, why);
        return -1;
    }
    return rt_st_read_buffer(path, buf, len, out, err, errsize);
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

/* ---- reading tensor by tensor (rt_st.h: RtStFile) ------------------------- */

static int read_at(int fd, void *buf, size_t n, int64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r, n -= (size_t)r, off += r;
    }
    return 0;
}

int rt_st_open(const char *path, RtStFile *f, char *err, size_t errsize)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = open(path, O_RDONLY);
    if (f->fd < 0) {
        rt_st_fail(err, errsize, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    unsigned char len8[8];
    unsigned char *text = NULL;
    RtStEntry **order = NULL;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rt_st_fail(err, errsize, "cannot read '%s': not a regular file", path);
        goto fail;
    }
    size_t len = (size_t)st.st_size;
    if (len < 8 || read_at(f->fd, len8, 8, 0) != 0) {
        rt_st_fail(err, errsize, "%s: %zu bytes, too short for a safetensors file (8-byte header length first)", path,
                   len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > RT_ST_MAX_HEADER) {
        rt_st_fail(err, errsize, "%s: header length %llu is over 100 MB: not a safetensors file, or corrupt", path,
                   (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > len - 8) {
        rt_st_fail(err, errsize, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", path,
                   (unsigned long long)hlen, len);
        goto fail;
    }
    text = malloc((size_t)hlen + 1);
    if (!text || read_at(f->fd, text, (size_t)hlen, 8) != 0) {
        rt_st_fail(err, errsize, "%s: %s", path, text ? "cannot read the header" : "out of memory");
        goto fail;
    }
    if (rt_st_header_decode(path, text, (size_t)hlen, 8, &f->h, err, errsize) != 0 ||
        rt_st_check_layout(path, &f->h, len - 8 - (size_t)hlen, &order, err, errsize) != 0)
        goto fail;
    free(order);
    free(text);
    f->data_at = 8 + (int64_t)hlen;
    return 0;
fail:
    free(order);
    free(text);
    rt_st_close(f);
    return -1;
}

float rt_st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) {
        /* Inf; a NaN keeps its payload and is made quiet, as torch's
         * .float() makes it (numpy's astype keeps a signalling one) */
        u = sign | 0x7f800000u | (m ? 0x400000u : 0) | m << 13;
    } else if (e != 0) {
        u = sign | (e + 112) << 23 | m << 13;
    } else if (m == 0) {
        u = sign; /* +-0 */
    } else {
        /* subnormal: m x 2^-24, normalised */
        int shift = 0;
        while (!(m & 0x400))
            m <<= 1, shift++;
        u = sign | (uint32_t)(113 - shift) << 23 | (m & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float rt_st_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int rt_st_read_f32(const RtStFile *f, const RtStEntry *x, float *dst, char *err, size_t errsize)
{
    int64_t numel = rt_st_numel(x->ndim, x->dim);
    int f32 = !strcmp(x->dtype, "F32"), f16 = !strcmp(x->dtype, "F16"), bf16 = !strcmp(x->dtype, "BF16");
    if (!f32 && !f16 && !bf16) {
        rt_st_fail(err, errsize, "%s: tensor '%s' is %s: pipe reads F32, and F16 and BF16 converted exactly to "
                   "float32", f->path, x->name, x->dtype);
        return -1;
    }
    unsigned char *b = (unsigned char *)dst;
    size_t bytes = (size_t)(x->end - x->begin);
    /* 16-bit values land in the second half of dst and are widened from the front */
    unsigned char *src = f32 ? b : b + (size_t)numel * 2;
    if (read_at(f->fd, src, bytes, f->data_at + x->begin) != 0) {
        rt_st_fail(err, errsize, "%s: cannot read tensor '%s': %s", f->path, x->name, strerror(errno ? errno : EIO));
        return -1;
    }
    if (f32) {
        if (!rt_st_host_is_little_endian())
            for (int64_t i = 0; i < numel; i++) {
                unsigned char *q = b + 4 * i, c;
                c = q[0], q[0] = q[3], q[3] = c;
                c = q[1], q[1] = q[2], q[2] = c;
            }
        return 0;
    }
    for (int64_t i = 0; i < numel; i++) {
        uint16_t v = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        dst[i] = f16 ? rt_st_f16_to_f32(v) : rt_st_bf16_to_f32(v);
    }
    return 0;
}

int rt_st_read_i64(const RtStFile *f, const RtStEntry *x, int64_t *dst, char *err, size_t errsize)
{
    int64_t numel = rt_st_numel(x->ndim, x->dim);
    if (strcmp(x->dtype, "I64") != 0) {
        rt_st_fail(err, errsize, "%s: tensor '%s' is %s: pipe reads it as I64 (int64, as torch saves it)", f->path,
                   x->name, x->dtype);
        return -1;
    }
    if (read_at(f->fd, dst, (size_t)numel * 8, f->data_at + x->begin) != 0) {
        rt_st_fail(err, errsize, "%s: cannot read tensor '%s': %s", f->path, x->name, strerror(errno ? errno : EIO));
        return -1;
    }
    if (!rt_st_host_is_little_endian())
        for (int64_t i = 0; i < numel; i++) {
            unsigned char *q = (unsigned char *)(dst + i);
            for (int k = 0; k < 4; k++) {
                unsigned char c = q[k];
                q[k] = q[7 - k], q[7 - k] = c;
            }
        }
    return 0;
}

void rt_st_close(RtStFile *f)
{
    if (f->fd > 0)
        close(f->fd);
    rt_st_header_free(&f->h);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}
