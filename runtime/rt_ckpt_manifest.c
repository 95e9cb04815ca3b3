/* runtime/rt_ckpt_manifest.c: reading a checkpoint's manifest.json (rt_ckpt.h,
 * docs/reliability.md): the JSON through base_json (jansson), then every
 * field the resume needs checked for presence, type and range, so that
 * rt_ckpt.c reads them without checking again. No MPI: pipert's ranks each
 * read it, and the JSON reader's fuzz target (tests/fuzz/fuzz_json.c)
 * reads it too. */
#include "rt_ckpt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_file.h"

#define MANIFEST_MAX (64 << 20)
/* The largest integer a manifest holds: seeds and step counts are at most
 * 2^53 where pipec and pipert take them. */
#define MANIFEST_INT_MAX ((int64_t)1 << 53)

static void fmt(char *err, size_t errsize, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *err, size_t errsize, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(err, errsize, f, ap);
    va_end(ap);
}

/* A JSON integer in [0, 2^53]: 0 and *out, or -1. */
static int man_uint(const BaseJson *v, int64_t *out)
{
    int64_t x;
    if (base_json_uint(v, &x) != 0 || x > MANIFEST_INT_MAX)
        return -1;
    *out = x;
    return 0;
}

int rt_ckpt_manifest_parse(const char *root, const char *path, const char *text, size_t len, RtManifest *m,
                           char *err, size_t errsize)
{
    memset(m, 0, sizeof *m);
    if (strlen(root) >= sizeof m->root - 64) {
        fmt(err, errsize, "%s: path too long", root);
        return -1;
    }
    strcpy(m->root, root);
    BaseJsonError je;
    m->json = base_json_parse(text, len, &je);
    if (!m->json) {
        fmt(err, errsize, "%s: not valid JSON: offset %zu: %s", path, je.offset, je.text);
        return -1;
    }
    const BaseJson *j = m->json;
    const char *format = base_json_str(base_json_get(j, "format"));
    int64_t version = 0;
    if (!format || strcmp(format, RT_CKPT_FORMAT) != 0 || man_uint(base_json_get(j, "version"), &version) != 0) {
        fmt(err, errsize, "%s: not a pipe checkpoint manifest (\"format\": \"%s\" and a \"version\" expected)", path,
            RT_CKPT_FORMAT);
        goto fail;
    }
    if (version != RT_CKPT_VERSION) {
        fmt(err, errsize, "%s: checkpoint version %lld; this pipert reads version %d", path, (long long)version,
            RT_CKPT_VERSION);
        goto fail;
    }
    static const char *const ints[] = {"step", "steps", "seed", "global_batch", "train_samples"};
    int64_t *dst[] = {&m->step, &m->steps, &m->seed, &m->global_batch, &m->train_samples};
    for (int i = 0; i < 5; i++)
        if (man_uint(base_json_get(j, ints[i]), dst[i]) != 0) {
            fmt(err, errsize, "%s: \"%s\" is missing or not a non-negative integer", path, ints[i]);
            goto fail;
        }
    m->model = base_json_str(base_json_get(j, "model"));
    m->optimizer = base_json_str(base_json_get(j, "optimizer"));
    m->dir = base_json_str(base_json_get(j, "dir"));
    m->files = base_json_get(j, "files");
    m->tensors = base_json_get(j, "tensors");
    if (!m->model || !m->optimizer || !m->dir || !base_json_is(m->files, BASE_JSON_ARRAY) ||
        !base_json_is(m->tensors, BASE_JSON_OBJECT)) {
        fmt(err, errsize, "%s: \"model\", \"optimizer\", \"dir\", \"files\" and \"tensors\" are all required", path);
        goto fail;
    }
    if (!m->dir[0] || strchr(m->dir, '/') || !strcmp(m->dir, ".") || !strcmp(m->dir, "..")) {
        fmt(err, errsize, "%s: \"dir\" must name a folder inside %s", path, root);
        goto fail;
    }
    size_t nfiles = base_json_len(m->files);
    for (size_t i = 0; i < nfiles; i++) {
        const BaseJson *f = base_json_at(m->files, i);
        const char *name = base_json_str(base_json_get(f, "name")), *kind = base_json_str(base_json_get(f, "kind"));
        int64_t v;
        if (!name || !kind || strchr(name, '/') || man_uint(base_json_get(f, "stage"), &v) != 0 ||
            man_uint(base_json_get(f, "bytes"), &v) != 0 || man_uint(base_json_get(f, "crc32"), &v) != 0) {
            fmt(err, errsize, "%s: files[%zu] needs name, kind, stage, bytes and crc32", path, i);
            goto fail;
        }
    }
    void *it = NULL;
    const char *key;
    const BaseJson *v;
    while (base_json_next(m->tensors, &it, &key, &v)) {
        int64_t s;
        if (man_uint(v, &s) != 0) {
            fmt(err, errsize, "%s: tensors[\"%s\"] must be a stage number", path, key);
            goto fail;
        }
    }
    return 0;
fail:
    rt_ckpt_manifest_free(m);
    return -1;
}

int rt_ckpt_manifest_read(const char *root, RtManifest *m, char *err, size_t errsize)
{
    memset(m, 0, sizeof *m);
    if (strlen(root) >= sizeof m->root - 64) {
        fmt(err, errsize, "%s: path too long", root);
        return -1;
    }
    char path[4200], why[256];
    snprintf(path, sizeof path, "%s/manifest.json", root);
    unsigned char *text;
    size_t len;
    BaseRead r = base_read_file(path, MANIFEST_MAX, &text, &len, why, sizeof why);
    if (r == BASE_READ_CANNOT_OPEN && errno == ENOENT)
        fmt(err, errsize, "%s: missing (no checkpoint here, or none completed)", path);
    else if (r == BASE_READ_NOT_A_FILE || r == BASE_READ_TOO_LARGE)
        fmt(err, errsize, "%s: not a regular file of at most %d bytes", path, MANIFEST_MAX);
    else if (r != BASE_READ_OK)
        fmt(err, errsize, "%s: %s", path, why);
    if (r != BASE_READ_OK)
        return -1;
    int rc = rt_ckpt_manifest_parse(root, path, (const char *)text, len, m, err, errsize);
    free(text);
    return rc;
}

void rt_ckpt_manifest_free(RtManifest *m)
{
    base_json_free(m->json);
    m->json = NULL;
    m->files = m->tensors = NULL;
    m->model = m->optimizer = m->dir = NULL;
}
