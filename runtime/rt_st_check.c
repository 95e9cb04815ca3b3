/* runtime/rt_st_check.c: the safetensors checks (rt_st.h): what the writer
 * may be given, and what a header read must say about the data after it.
 *
 * The reader holds files to the reference (Rust) implementation's rules:
 * names unique (the grammar's rule: a key twice is refused by base_json),
 * each tensor's byte count equal to its shape's, and the tensors tiling the
 * data exactly (no gap, no overlap, nothing left over), which also catches
 * most truncated or corrupted files; and to pipe's own: F32 only, at most 4
 * dimensions. The writer checks everything before the file is touched, so
 * a bad call never leaves a temporary file or replaces a good checkpoint. */
#include "rt_st.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_json.h"

/* Sorting pointers to strings, to find duplicates in n log n: a checkpoint
 * may hold many thousands of tensors. */
static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first string that occurs twice among s[0, n), or NULL (also when out
 * of memory: *oom is then set). */
static const char *first_duplicate(const char *const *s, int n, int *oom)
{
    *oom = 0;
    if (n < 2)
        return NULL;
    const char **v = malloc((size_t)n * sizeof *v);
    if (!v) {
        *oom = 1;
        return NULL;
    }
    memcpy(v, s, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            dup = v[i];
    free(v);
    return dup;
}

int rt_st_check_write(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                      const char *const *meta_values, int nmeta, char *err, size_t errsize)
{
    if (n < 0 || nmeta < 0 || (n > 0 && !t) || (nmeta > 0 && (!meta_keys || !meta_values))) {
        rt_st_fail(err, errsize, "%s: bad arguments (n %d, nmeta %d)", path, n, nmeta);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const RtTensor *x = &t[i];
        if (!x->name || !x->name[0]) {
            rt_st_fail(err, errsize, "%s: tensor %d has no name", path, i);
            return -1;
        }
        if (!strcmp(x->name, "__metadata__") || !base_json_utf8_valid(x->name)) {
            rt_st_fail(err, errsize, "%s: tensor '%s': %s", path, x->name,
                       base_json_utf8_valid(x->name) ? "__metadata__ is reserved for the metadata"
                                                     : "the name is not valid UTF-8");
            return -1;
        }
        if (x->ndim < 0 || x->ndim > RT_ST_MAX_DIMS) {
            rt_st_fail(err, errsize, "%s: tensor '%s': %d dimensions (0 to %d allowed)", path, x->name, x->ndim,
                       RT_ST_MAX_DIMS);
            return -1;
        }
        int64_t numel = rt_st_numel(x->ndim, x->dim);
        if (numel < 0) {
            rt_st_fail(err, errsize, "%s: tensor '%s': bad shape (a negative or too large dimension)", path, x->name);
            return -1;
        }
        if (numel > 0 && !x->data) {
            rt_st_fail(err, errsize, "%s: tensor '%s': no data", path, x->name);
            return -1;
        }
    }
    for (int i = 0; i < nmeta; i++) {
        if (!meta_keys[i] || !meta_values[i] || !base_json_utf8_valid(meta_keys[i]) ||
            !base_json_utf8_valid(meta_values[i])) {
            rt_st_fail(err, errsize, "%s: metadata pair %d: key and value must be UTF-8 strings", path, i);
            return -1;
        }
    }
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!names) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < n; i++)
        names[i] = t[i].name;
    int oom, oom2 = 0;
    const char *dup = first_duplicate(names, n, &oom);
    free(names);
    if (dup) {
        rt_st_fail(err, errsize, "%s: tensor '%s' appears twice", path, dup);
        return -1;
    }
    if (!oom && (dup = first_duplicate(meta_keys, nmeta, &oom2)) != NULL) {
        rt_st_fail(err, errsize, "%s: metadata key '%s' appears twice", path, dup);
        return -1;
    }
    if (oom || oom2) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const RtStEntry *x = *(const RtStEntry *const *)a, *y = *(const RtStEntry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order - y->order;
}

int rt_st_dtype_bytes(const char *dtype)
{
    /* the format's dtypes (safetensors' Dtype enum) and their sizes */
    static const struct {
        const char *name;
        int bytes;
    } t[] = {{"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
             {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(dtype, t[i].name))
            return t[i].bytes;
    return 0;
}

/* rt_st_check_header, and with any_dtype rt_st_check_layout. */
static int check_header(const char *path, const RtStHeader *h, size_t dlen, RtStEntry ***order, char *err,
                        size_t errsize, int any_dtype)
{
    *order = NULL;
    /* each tensor: dtype, shape against its byte range, the range against
     * the data */
    for (int i = 0; i < h->n; i++) {
        const RtStEntry *x = &h->t[i];
        /* pipe's own files: F32, and I64 (a buffer such as batchnorm2d's
         * num_batches_tracked) */
        int i64 = !strcmp(x->dtype, "I64");
        int esize = any_dtype ? rt_st_dtype_bytes(x->dtype) : i64 ? 8 : RT_ST_DTYPE_BYTES;
        if (!any_dtype && strcmp(x->dtype, RT_ST_DTYPE) != 0 && !i64) {
            rt_st_fail(err, errsize, "%s: tensor '%s' has dtype %s; only " RT_ST_DTYPE " (and I64) is supported", path,
                       x->name, x->dtype);
            return -1;
        }
        if (esize == 0) {
            rt_st_fail(err, errsize, "%s: tensor '%s' has dtype %s, which is not a safetensors dtype", path, x->name,
                       x->dtype);
            return -1;
        }
        if (x->ndim > RT_ST_MAX_DIMS) {
            rt_st_fail(err, errsize, "%s: tensor '%s' has %d dimensions; at most %d are supported", path, x->name,
                       x->ndim, RT_ST_MAX_DIMS);
            return -1;
        }
        int64_t numel = rt_st_numel(x->ndim, x->dim);
        if (numel < 0 || (esize > RT_ST_DTYPE_BYTES && numel > INT64_MAX / esize)) {
            rt_st_fail(err, errsize, "%s: tensor '%s': its shape is too large", path, x->name);
            return -1;
        }
        if (x->begin > x->end || (uint64_t)x->end > (uint64_t)dlen) {
            rt_st_fail(err, errsize, "%s: tensor '%s': data_offsets [%lld, %lld] are not inside the data (%zu bytes)%s",
                       path, x->name, (long long)x->begin, (long long)x->end, dlen,
                       x->begin <= x->end ? ": truncated file?" : "");
            return -1;
        }
        if (x->end - x->begin != numel * esize) {
            char shape[128] = "";
            size_t k = 0;
            for (int d = 0; d < x->ndim; d++)
                k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "", (long long)x->dim[d]);
            rt_st_fail(err, errsize, "%s: tensor '%s': shape [%s] needs %lld bytes but data_offsets [%lld, %lld] hold %lld",
                       path, x->name, shape, (long long)(numel * esize), (long long)x->begin,
                       (long long)x->end, (long long)(x->end - x->begin));
            return -1;
        }
    }
    /* The tensors must tile the data in file order: no gap, no overlap,
     * nothing after the last. */
    RtStEntry **o = malloc(((size_t)h->n + 1) * sizeof *o);
    if (!o) {
        rt_st_fail(err, errsize, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < h->n; i++)
        o[i] = &h->t[i];
    qsort(o, (size_t)h->n, sizeof *o, cmp_entry_offset);
    int64_t expect = 0;
    for (int i = 0; i < h->n; i++) {
        if (o[i]->begin != expect) {
            rt_st_fail(err, errsize, "%s: tensor '%s' starts at data byte %lld, but the one before ends at %lld (%s)",
                       path, o[i]->name, (long long)o[i]->begin, (long long)expect,
                       o[i]->begin > expect ? "a gap" : "they overlap");
            free(o);
            return -1;
        }
        expect = o[i]->end;
    }
    if ((uint64_t)expect != (uint64_t)dlen) {
        rt_st_fail(err, errsize, "%s: the tensors cover %lld bytes of data but the file holds %zu after the header", path,
                   (long long)expect, dlen);
        free(o);
        return -1;
    }
    *order = o;
    return 0;
}

int rt_st_check_header(const char *path, const RtStHeader *h, size_t dlen, RtStEntry ***order, char *err,
                       size_t errsize)
{
    return check_header(path, h, dlen, order, err, errsize, 0);
}

int rt_st_check_layout(const char *path, const RtStHeader *h, size_t dlen, RtStEntry ***order, char *err,
                       size_t errsize)
{
    return check_header(path, h, dlen, order, err, errsize, 1);
}
