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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_file.h"

/* ---- writing ------------------------------------------------------------- */

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
        rc = write_f32_le(fd, t[i].data, rt_st_numel(t[i].ndim, t[i].dim));
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
