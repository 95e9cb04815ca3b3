/* runtime/rt_data.c: the data sources of the train block (synthetic, idx,
 * cifar10, tokens, npy), checked against the model at open, then served one
 * sample at a time to the first stage (inputs) and the last (targets).
 *
 * Everything a step needs is read and checked in rt_data_open, so a bad file
 * fails before training starts, with a message naming the file; after that,
 * rt_data_index, rt_data_input and rt_data_target never allocate and never
 * fail.
 *
 * The exact numbers (so another implementation, or a Python script, can
 * reproduce them):
 *
 *   Philox4x32-10 (k_philox), key k = {seed & 0xffffffff, seed >> 32}.
 *
 *   synthetic: for model input k (slot = k) or the target (slot = 0xffff),
 *     element e of sample s takes word e % 4 of
 *         philox(c = {e / 4, s mod 2^32, slot, 0x44415441 "DATA"}, k).
 *     - float32 normal N(0, 1): Box-Muller over the word pairs (w0, w1) and
 *       (w2, w3) of a block; for the pair (a, b):
 *           u1 = ((a >> 8) + 1) * 2^-24        in (0, 1]
 *           u2 = (b >> 8) * 2^-24              in [0, 1)
 *           r  = sqrt(-2 ln u1)
 *           z_a = r cos(2 pi u2),  z_b = r sin(2 pi u2)
 *       in double, rounded to float; so elements 4j, 4j+1 are the cos / sin
 *       of the first pair, 4j+2, 4j+3 those of the second.
 *     - int32 uniform over [0, R) (R = the embedding's vocab for token
 *       inputs, the class count for class targets): floor(w * R / 2^32).
 *     - a mask input (below) is all ones.
 *
 *   shuffle: epoch e's order is perm, built by Fisher-Yates:
 *       perm[i] = i; for i = n-1 down to 1:
 *           w = word i % 4 of philox(c = {i / 4, e mod 2^32, 0x5348 "SH",
 *                                          0x55464c45 "UFLE"}, k)
 *           j = floor(w * (i + 1) / 2^32); swap perm[i], perm[j]
 *     and position g = step * B + pos of the stream reads perm[g mod n] of
 *     epoch g / n. (Exact for n <= 2^32 samples, far beyond what fits.)
 *
 *   idx: float32 (type 0x0D) values are big-endian, like every value in
 *   an IDX file.
 *
 *   ubyte pixels become p / 255.0f (a float division, as torchvision's
 *   ToTensor does), not p * (1 / 255.0f), which can differ in the last bit.
 *
 *   cifar10 resize: rt_resize.c (PyTorch's upsample_bilinear2d, bit for
 *   bit).
 *
 * A "mask" input is a float32 side input (k > 0) that a transformer_block
 * or llama_block names with mask = ..., or any float32 side input of shape
 * [T] when the main input is int32[T] token ids. */
#include "rt_data.h"

#include "base_file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include "k_cpu.h"
#include "rt_resize.h"

#define RT_DATA_TAG 0x44415441u      /* "DATA" */
#define RT_TARGET_SLOT 0xffffu
#define RT_SHUFFLE_TAG0 0x5348u      /* "SH" */
#define RT_SHUFFLE_TAG1 0x55464c45u  /* "UFLE" */

#define RT_CIFAR_RECORD 3073
#define RT_CIFAR_PIXELS 3072
#define RT_CIFAR_SIDE 32

/* One read or allocation may not exceed this: far more than any dataset the
 * loaders are for, and it keeps every size product below in int64 range. */
#define RT_MAX_BYTES ((int64_t)1 << 40)

/* ---- errors ---------------------------------------------------------------- */

static int fail(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errsize, const char *fmt, ...)
{
    if (err && errsize) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsize, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void shape_text(const PlanTensor *t, char *buf, size_t size)
{
    plan_tensor_text(t, 1, buf, size);
}

/* ---- random numbers ---------------------------------------------------------- */

static void rt_philox(uint32_t out[4], uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3)
{
    const uint32_t c[4] = {c0, c1, c2, c3};
    const uint32_t k[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
    k_philox(out, c, k);
}

/* floor(w * range / 2^32): uniform over [0, range) for range <= 2^32 (each
 * value's probability off by less than one part in 2^32 / range). */
static uint64_t rt_scale_word(uint32_t w, uint64_t range)
{
    return ((uint64_t)w * range) >> 32;
}

static void rt_box_muller(uint32_t a, uint32_t b, float *za, float *zb)
{
    double u1 = ((double)(a >> 8) + 1.0) * (1.0 / 16777216.0);
    double u2 = (double)(b >> 8) * (1.0 / 16777216.0);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925286766559 * u2;
    *za = (float)(r * cos(th));
    *zb = (float)(r * sin(th));
}

static void rt_fill_normal(float *dst, int64_t n, uint64_t seed, int64_t sample, uint32_t slot)
{
    for (int64_t b = 0; b * 4 < n; b++) {
        uint32_t w[4];
        float z[4];
        rt_philox(w, seed, (uint32_t)b, (uint32_t)sample, slot, RT_DATA_TAG);
        rt_box_muller(w[0], w[1], &z[0], &z[1]);
        rt_box_muller(w[2], w[3], &z[2], &z[3]);
        for (int j = 0; j < 4 && b * 4 + j < n; j++)
            dst[b * 4 + j] = z[j];
    }
}

static void rt_fill_uniform_int(int32_t *dst, int64_t n, uint64_t seed, int64_t sample, uint32_t slot, int64_t range)
{
    for (int64_t b = 0; b * 4 < n; b++) {
        uint32_t w[4];
        rt_philox(w, seed, (uint32_t)b, (uint32_t)sample, slot, RT_DATA_TAG);
        for (int j = 0; j < 4 && b * 4 + j < n; j++)
            dst[b * 4 + j] = (int32_t)rt_scale_word(w[j], (uint64_t)range);
    }
}

/* ---- what the model asks for ---------------------------------------------------- */

static int64_t model_vocab(const PlanModel *m)
{
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].kind == PLAN_L_EMBEDDING)
            return m->layer[i].vocab;
    return 0;
}

static int64_t model_classes(const PlanModel *m)
{
    if (m->nlayers < 1)
        return 0;
    const PlanTensor *o = &m->layer[m->nlayers - 1].out;
    return o->ndim > 0 ? o->dim[o->ndim - 1] : 0;
}

static int is_mask(const PlanModel *m, int k)
{
    if (k <= 0 || k >= m->ninputs || m->input[k].t.dtype != PLAN_F32)
        return 0;
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].mask == k) /* a transformer_block's or llama_block's */
            return 1;
    const PlanTensor *x = &m->input[0].t, *t = &m->input[k].t;
    return x->dtype == PLAN_I32 && x->ndim == 1 && t->ndim == 1 && t->dim[0] == x->dim[0];
}

/* idx and cifar10: one float image input, one int32[] class target. */
static int check_classifier(const PlanModel *m, const char *what, const char *path, char *err, size_t es)
{
    char s[96];
    if (m->ninputs != 1)
        return fail(err, es, "%s: %s data supplies one input (the image), but the model declares %d inputs", path,
                    what, m->ninputs);
    if (m->input[0].t.dtype != PLAN_F32) {
        shape_text(&m->input[0].t, s, sizeof s);
        return fail(err, es, "%s: %s data supplies float32 images, but input '%s' is %s", path, what,
                    m->input[0].name, s);
    }
    if (m->ntargets != 1 || m->loss != PLAN_LOSS_CROSS_ENTROPY || m->target[0].t.dtype != PLAN_I32 ||
        m->target[0].t.ndim != 0)
        return fail(err, es, "%s: %s data supplies one class label per sample, for an int32[] target under "
                    "loss cross_entropy", path, what);
    if (model_classes(m) < 1)
        return fail(err, es, "%s: the model's output gives no class count", path);
    return 0;
}

/* ---- file reading ---------------------------------------------------------------- */

/* zlib's message without the "PATH: " it puts in front (ours names the
 * file already) */
static const char *gz_message(gzFile gz)
{
    int code;
    const char *m = gzerror(gz, &code);
    if (code == Z_OK || !m)
        return NULL;
    const char *p = strstr(m, ": ");
    return p ? p + 2 : m;
}

/* Reads exactly n bytes from a gzip (or raw) stream; *zmsg is zlib's
 * message when it saw an error, NULL when the file just ended. */
static int gz_read_all(gzFile gz, void *buf, int64_t n, int64_t *got, const char **zmsg)
{
    unsigned char *p = buf;
    *got = 0;
    *zmsg = NULL;
    while (*got < n) {
        int64_t want = n - *got;
        if (want > (1 << 30))
            want = 1 << 30;
        int r = gzread(gz, p + *got, (unsigned)want);
        if (r <= 0) {
            /* a cut gzip stream may end with r == 0 and an error set */
            *zmsg = gz_message(gz);
            if (r < 0 && !*zmsg)
                *zmsg = "read error";
            return -1;
        }
        *got += r;
    }
    return 0;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

typedef struct IdxHead {
    int type;                /* 0x08 ubyte, 0x0D float32 */
    int ndim;
    int64_t dim[4];
    int64_t count;           /* elements after the first dimension */
} IdxHead;

/* Opens an IDX file and reads its header: labels are ubyte with 1
 * dimension, images ubyte or float32 with 2 to 4 ([N, D], [N, H, W],
 * [N, C, H, W]). */
static gzFile idx_open(const char *path, int labels, IdxHead *h, char *err, size_t es)
{
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        fail(err, es, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    unsigned char b[16];
    int64_t got;
    const char *zm;
    if (gz_read_all(gz, b, 4, &got, &zm) != 0) {
        if (zm)
            fail(err, es, "%s: gzip: %s", path, zm);
        else
            fail(err, es, "%s: file too short for an IDX header", path);
        goto bad;
    }
    h->type = b[2];
    h->ndim = b[3];
    int ok_type = labels ? h->type == 0x08 : (h->type == 0x08 || h->type == 0x0D);
    int ok_ndim = labels ? h->ndim == 1 : (h->ndim >= 2 && h->ndim <= 4);
    if (b[0] != 0 || b[1] != 0 || !ok_type || !ok_ndim) {
        fail(err, es, "%s: bad IDX magic 0x%02x%02x%02x%02x (expected %s)", path, b[0], b[1], b[2], b[3],
             labels ? "0x00000801, ubyte labels" : "0x00000803 ubyte or 0x00000d03 float32 images");
        goto bad;
    }
    if (gz_read_all(gz, b, 4 * (int64_t)h->ndim, &got, &zm) != 0) {
        if (zm)
            fail(err, es, "%s: gzip: %s", path, zm);
        else
            fail(err, es, "%s: file ends in the IDX dimensions", path);
        goto bad;
    }
    h->count = 1;
    for (int i = 0; i < h->ndim; i++) {
        h->dim[i] = be32(b + 4 * i);
        if (i == 0)
            continue;
        if (h->dim[i] > 0 && h->count > RT_MAX_BYTES / h->dim[i]) {
            fail(err, es, "%s: IDX dimensions too large", path);
            goto bad;
        }
        h->count *= h->dim[i];
    }
    if (h->dim[0] == 0) {
        fail(err, es, "%s: holds no samples", path);
        goto bad;
    }
    return gz;
bad:
    gzclose(gz);
    return NULL;
}

static int idx_body(gzFile gz, const char *path, void *buf, int64_t bytes, char *err, size_t es)
{
    int64_t got;
    const char *zm;
    if (gz_read_all(gz, buf, bytes, &got, &zm) != 0) {
        if (zm)
            return fail(err, es, "%s: gzip: %s", path, zm);
        return fail(err, es, "%s: file ends after %lld of %lld data bytes", path, (long long)got, (long long)bytes);
    }
    /* one more read reaches the end of a gzip stream, where zlib checks its
     * CRC (a corrupt file must fail here, not train on wrong pixels), and
     * shows data the header does not account for */
    unsigned char extra;
    int r = gzread(gz, &extra, 1);
    if (r < 0 || (r == 0 && gz_message(gz)))
        return fail(err, es, "%s: gzip: %s", path, gz_message(gz) ? gz_message(gz) : "read error");
    if (r > 0)
        return fail(err, es, "%s: more data than the IDX header's dimensions declare (%lld bytes)", path,
                    (long long)bytes);
    return 0;
}

static void dims_text(const IdxHead *h, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 1; i < h->ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i > 1 ? ", " : "", (long long)h->dim[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

static int open_idx(RtData *d, const PlanData *spec, const PlanModel *m, char *err, size_t es)
{
    const char *ip = spec->path, *lp = spec->path2;
    if (!ip || !lp)
        return fail(err, es, "idx data needs an images file and a labels file");
    if (check_classifier(m, "idx", ip, err, es) != 0)
        return -1;
    d->classes = model_classes(m);

    IdxHead hi, hl;
    gzFile gi = idx_open(ip, 0, &hi, err, es);
    if (!gi)
        return -1;
    int64_t want = plan_tensor_elems(&m->input[0].t);
    if (hi.count != want) {
        char a[64], b[96];
        dims_text(&hi, a, sizeof a);
        shape_text(&m->input[0].t, b, sizeof b);
        gzclose(gi);
        return fail(err, es, "%s: images of %s (%lld elements) do not fit input '%s' %s (%lld elements)", ip, a,
                    (long long)hi.count, m->input[0].name, b, (long long)want);
    }
    int64_t esz = hi.type == 0x08 ? 1 : 4;
    if (hi.dim[0] > RT_MAX_BYTES / (hi.count * esz)) {
        gzclose(gi);
        return fail(err, es, "%s: %lld images are too many", ip, (long long)hi.dim[0]);
    }
    int64_t bytes = hi.dim[0] * hi.count * esz;
    void *buf = malloc((size_t)bytes);
    if (!buf) {
        gzclose(gi);
        return fail(err, es, "%s: out of memory for %lld bytes of images", ip, (long long)bytes);
    }
    int rc = idx_body(gi, ip, buf, bytes, err, es);
    gzclose(gi);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    if (hi.type == 0x08) {
        d->u8 = buf;
    } else {
        /* IDX stores every multi-byte value big-endian, floats too */
        unsigned char *p = buf;
        float *f = buf;
        for (int64_t i = 0; i < hi.dim[0] * hi.count; i++) {
            uint32_t u = be32(p + 4 * i);
            memcpy(&f[i], &u, 4);
        }
        d->f32 = buf;
    }
    d->sample_elems = hi.count;

    gzFile gl = idx_open(lp, 1, &hl, err, es);
    if (!gl)
        return -1;
    if (hl.dim[0] != hi.dim[0]) {
        gzclose(gl);
        return fail(err, es, "%s: %lld labels, but the images file %s holds %lld images", lp, (long long)hl.dim[0], ip,
                    (long long)hi.dim[0]);
    }
    uint8_t *lb = malloc((size_t)hl.dim[0]);
    d->labels = malloc((size_t)hl.dim[0] * sizeof *d->labels);
    if (!lb || !d->labels) {
        free(lb);
        gzclose(gl);
        return fail(err, es, "%s: out of memory", lp);
    }
    rc = idx_body(gl, lp, lb, hl.dim[0], err, es);
    gzclose(gl);
    if (rc != 0) {
        free(lb);
        return -1;
    }
    for (int64_t i = 0; i < hl.dim[0]; i++) {
        if (lb[i] >= d->classes) {
            fail(err, es, "%s: label %d of sample %lld is not below the model's %lld classes", lp, lb[i],
                 (long long)i, (long long)d->classes);
            free(lb);
            return -1;
        }
        d->labels[i] = lb[i];
    }
    free(lb);
    d->n = hi.dim[0];
    return 0;
}

/* Reads a whole plain file; *size its bytes. */
static int read_file(const char *path, uint8_t **data, int64_t *size, char *err, size_t es)
{
    char why[256];
    size_t n;
    *size = 0;
    BaseRead r = base_read_file(path, (size_t)RT_MAX_BYTES, data, &n, why, sizeof why);
    if (r == BASE_READ_CANNOT_OPEN)
        return fail(err, es, "%s: cannot open: %s", path, why);
    if (r != BASE_READ_OK)
        return fail(err, es, "%s: %s", path, why);
    *size = (int64_t)n;
    return 0;
}

/* ---- cifar10 --------------------------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Appends one batch file's records to d (grown as needed). */
static int cifar_file(RtData *d, const char *path, char *err, size_t es)
{
    uint8_t *raw;
    int64_t size;
    if (read_file(path, &raw, &size, err, es) != 0)
        return -1;
    if (size == 0 || size % RT_CIFAR_RECORD != 0) {
        free(raw);
        if (size == 0)
            return fail(err, es, "%s: holds no records", path);
        return fail(err, es, "%s: %lld bytes is not a whole number of %d-byte records (short file?)", path,
                    (long long)size, RT_CIFAR_RECORD);
    }
    int64_t k = size / RT_CIFAR_RECORD, n = d->n + k;
    uint8_t *u8 = realloc(d->u8, (size_t)(n * RT_CIFAR_PIXELS));
    if (u8)
        d->u8 = u8;
    int32_t *lab = realloc(d->labels, (size_t)n * sizeof *lab);
    if (lab)
        d->labels = lab;
    if (!u8 || !lab) {
        free(raw);
        return fail(err, es, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < k; i++) {
        const uint8_t *r = raw + i * RT_CIFAR_RECORD;
        if (r[0] >= d->classes) {
            fail(err, es, "%s: label %d of sample %lld is not below the model's %lld classes", path, r[0],
                 (long long)i, (long long)d->classes);
            free(raw);
            return -1;
        }
        d->labels[d->n + i] = r[0];
        memcpy(d->u8 + (d->n + i) * RT_CIFAR_PIXELS, r + 1, RT_CIFAR_PIXELS);
    }
    free(raw);
    d->n = n;
    return 0;
}

static int open_cifar(RtData *d, const PlanData *spec, const PlanModel *m, int eval, char *err, size_t es)
{
    const char *dir = spec->path;
    if (!dir)
        return fail(err, es, "cifar10 data needs a directory");
    if (check_classifier(m, "cifar10", dir, err, es) != 0)
        return -1;
    d->classes = model_classes(m);
    int64_t s = spec->resize > 0 ? spec->resize : RT_CIFAR_SIDE;
    const PlanTensor *t = &m->input[0].t;
    if (t->ndim != 3 || t->dim[0] != 3 || t->dim[1] != s || t->dim[2] != s) {
        char b[96];
        shape_text(t, b, sizeof b);
        return fail(err, es, "%s: cifar10 images are [3, %lld, %lld] (resize = %lld), but input '%s' is %s", dir,
                    (long long)s, (long long)s, (long long)spec->resize, m->input[0].name, b);
    }
    d->sample_elems = RT_CIFAR_PIXELS;
    if (eval) {
        char *p = join(dir, "test_batch.bin");
        if (!p)
            return fail(err, es, "%s: out of memory", dir);
        int rc = cifar_file(d, p, err, es);
        free(p);
        return rc;
    }
    /* the training set: whichever of the five batches exist, in order, so a
     * subset (one batch for a quick run) works */
    for (int b = 1; b <= 5; b++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", b);
        char *p = join(dir, name);
        if (!p)
            return fail(err, es, "%s: out of memory", dir);
        FILE *f = fopen(p, "rb");
        if (!f && errno == ENOENT) {
            free(p);
            continue;
        }
        if (f)
            fclose(f);
        int rc = cifar_file(d, p, err, es);
        free(p);
        if (rc != 0)
            return -1;
    }
    if (d->n == 0)
        return fail(err, es, "%s/data_batch_1.bin: cannot open: none of data_batch_1.bin .. data_batch_5.bin "
                    "is in %s", dir, dir);
    return 0;
}

/* ---- tokens ---------------------------------------------------------------------- */

static int open_tokens(RtData *d, const PlanData *spec, const PlanModel *m, char *err, size_t es)
{
    const char *path = spec->path;
    char s[96], s2[96];
    if (!path)
        return fail(err, es, "tokens data needs a file");
    const PlanTensor *x = &m->input[0].t;
    if (x->dtype != PLAN_I32 || x->ndim != 1) {
        shape_text(x, s, sizeof s);
        return fail(err, es, "%s: tokens data supplies int32[T] token ids, but input '%s' is %s", path,
                    m->input[0].name, s);
    }
    int64_t T = x->dim[0];
    for (int k = 1; k < m->ninputs; k++)
        if (!is_mask(m, k)) {
            shape_text(&m->input[k].t, s, sizeof s);
            return fail(err, es, "%s: tokens data supplies only a float32[%lld] mask besides the tokens, but "
                        "input '%s' is %s", path, (long long)T, m->input[k].name, s);
        }
    const PlanTensor *y = &m->target[0].t;
    if (m->ntargets != 1 || m->loss != PLAN_LOSS_CROSS_ENTROPY || y->dtype != PLAN_I32 || y->ndim != 1 ||
        y->dim[0] != T) {
        shape_text(y, s, sizeof s);
        shape_text(x, s2, sizeof s2);
        return fail(err, es, "%s: tokens data supplies next-token targets int32[%lld] under loss cross_entropy "
                    "(input %s), but target '%s' is %s", path, (long long)T, s2, m->target[0].name, s);
    }
    d->vocab = model_vocab(m);
    if (d->vocab < 1)
        return fail(err, es, "%s: tokens data needs an embedding layer to give the vocabulary", path);

    uint8_t *raw;
    int64_t size;
    if (read_file(path, &raw, &size, err, es) != 0)
        return -1;
    if (size % 2 != 0) {
        free(raw);
        return fail(err, es, "%s: %lld bytes is not a whole number of uint16 tokens", path, (long long)size);
    }
    int64_t nt = size / 2;
    if (nt < T + 1) {
        free(raw);
        return fail(err, es, "%s: holds %lld tokens, but one sample of %lld tokens and its targets need %lld",
                    path, (long long)nt, (long long)T, (long long)(T + 1));
    }
    d->tokens = malloc((size_t)nt * sizeof *d->tokens);
    if (!d->tokens) {
        free(raw);
        return fail(err, es, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < nt; i++) {
        uint16_t v = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        if (v >= d->vocab) {
            free(raw);
            return fail(err, es, "%s: token id %u at token %lld (byte offset %lld) is not below the vocabulary "
                        "of %lld", path, v, (long long)i, (long long)(2 * i), (long long)d->vocab);
        }
        d->tokens[i] = v;
    }
    free(raw);
    d->ntokens = nt;
    d->pad = spec->pad;
    d->sample_elems = T;
    d->n = (nt - 1) / T;
    return 0;
}

/* ---- npy ------------------------------------------------------------------------- */

/* Element i of a mapped npy array as an int64 (little-endian in the file). */
static int64_t npy_int(const BaseNpy *h, const unsigned char *p, int64_t i)
{
    const unsigned char *b = p + i * h->item;
    switch (h->dtype) {
    case BASE_NPY_U8: return b[0];
    case BASE_NPY_I32: return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
    case BASE_NPY_I64: {
        uint64_t u = 0;
        for (int k = 7; k >= 0; k--)
            u = u << 8 | b[k];
        return (int64_t)u;
    }
    case BASE_NPY_F32: break;
    }
    return 0;
}

/* n elements from element `first` of a mapped array into dst: float32 (from
 * float32 or uint8's raw values) or int32 (checked at open). */
static void npy_copy(const BaseNpy *h, const unsigned char *p, int64_t first, int64_t n, int to_int, void *dst)
{
    static const uint16_t one = 1;
    int little = *(const unsigned char *)&one == 1;
    if (to_int) {
        int32_t *o = dst;
        if (h->dtype == BASE_NPY_I32 && little)
            memcpy(o, p + first * 4, (size_t)n * 4);
        else
            for (int64_t i = 0; i < n; i++)
                o[i] = (int32_t)npy_int(h, p, first + i);
        return;
    }
    float *o = dst;
    if (h->dtype == BASE_NPY_U8) {
        for (int64_t i = 0; i < n; i++)
            o[i] = (float)p[first + i];
    } else if (little) {
        memcpy(o, p + first * 4, (size_t)n * 4);
    } else {
        for (int64_t i = 0; i < n; i++) {
            const unsigned char *b = p + (first + i) * 4;
            uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            memcpy(&o[i], &u, 4);
        }
    }
}

/* Maps a file read-only; its bytes stay in the page cache, shared by the
 * ranks of a node that read it (docs/dsl.md, "npy"). */
static int npy_map(RtData *d, int k, const char *path, char *err, size_t es)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return fail(err, es, "%s: cannot open: %s", path, strerror(errno));
    size_t len = (size_t)(d->npy[k].data_offset + d->npy[k].data_bytes);
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return fail(err, es, "%s: cannot map %zu bytes: %s", path, len, strerror(e));
    d->npy_map[k] = p;
    d->npy_map_len[k] = len;
    d->npy_data[k] = (const unsigned char *)p + d->npy[k].data_offset;
    return 0;
}

static int open_npy(RtData *d, const PlanData *spec, const PlanModel *m, char *err, size_t es)
{
    const char *path[2] = {spec->path, spec->path2};
    const PlanIO *io[2] = {&m->input[0], &m->target[0]};
    char s[96], why[600];
    if (!path[0] || !path[1])
        return fail(err, es, "npy data needs an inputs file and a targets file");
    if (m->ninputs != 1 || m->ntargets != 1)
        return fail(err, es, "%s: npy data supplies one input and one target per sample, but the model declares %d "
                    "inputs and %d targets", path[0], m->ninputs, m->ntargets);
    for (int k = 0; k < 2; k++) {
        if (base_npy_read_header(path[k], &d->npy[k], err, es) != 0)
            return -1;
        const PlanTensor *t = &io[k]->t;
        if (base_npy_fits(&d->npy[k], t->dtype == PLAN_I32, t->ndim, t->dim, why, sizeof why) != 0) {
            shape_text(t, s, sizeof s);
            return fail(err, es, "%s %s, but %s '%s' is %s", path[k], why, k ? "target" : "input", io[k]->name, s);
        }
    }
    if (d->npy[0].dim[0] != d->npy[1].dim[0])
        return fail(err, es, "%s: %lld samples, but the inputs file %s holds %lld", path[1],
                    (long long)d->npy[1].dim[0], path[0], (long long)d->npy[0].dim[0]);
    for (int k = 0; k < 2; k++)
        if (npy_map(d, k, path[k], err, es) != 0)
            return -1;
    /* integer values: token ids below the vocabulary, class labels below the
     * class count (or -1 / -100, ignored), both inside int32 */
    d->vocab = model_vocab(m);
    d->classes = model_classes(m);
    for (int k = 0; k < 2; k++) {
        const BaseNpy *h = &d->npy[k];
        if (io[k]->t.dtype != PLAN_I32)
            continue;
        int64_t hi = k ? d->classes : d->vocab;
        const char *what = k ? "label" : "token id";
        if (hi < 1)
            return fail(err, es, "%s: %s data needs %s", path[k], k ? "class" : "token",
                        k ? "a model output that gives the class count" : "an embedding layer to give the vocabulary");
        int64_t per = h->count / h->dim[0];
        for (int64_t i = 0; i < h->count; i++) {
            int64_t v = npy_int(h, d->npy_data[k], i);
            if ((v >= 0 && v < hi) || (k && (v == -1 || v == -100)))
                continue;
            return fail(err, es, "%s: %s %lld of sample %lld (element %lld) is %s %lld%s", path[k], what, (long long)v,
                        (long long)(i / per), (long long)i, v < 0 ? "negative, not below" : "not below",
                        (long long)hi, k ? (v < 0 ? " (only -1 and -100 mean ignored)" : " classes") : " (the vocabulary)");
        }
    }
    d->n = d->npy[0].dim[0];
    d->sample_elems = d->npy[0].count / d->n;
    return 0;
}

/* ---- synthetic ------------------------------------------------------------------- */

static int open_synthetic(RtData *d, const PlanData *spec, const PlanModel *m, char *err, size_t es)
{
    char s[96];
    if (spec->samples < 1)
        return fail(err, es, "synthetic data: samples must be at least 1 (got %lld)", (long long)spec->samples);
    d->vocab = model_vocab(m);
    d->classes = model_classes(m);
    for (int k = 0; k < m->ninputs; k++)
        if (m->input[k].t.dtype == PLAN_I32 && d->vocab < 1) {
            shape_text(&m->input[k].t, s, sizeof s);
            return fail(err, es, "synthetic data: input '%s' is %s, but no embedding layer gives a vocabulary "
                        "for its ids", m->input[k].name, s);
        }
    if (m->ntargets != 1)
        return fail(err, es, "synthetic data: the model declares %d targets; one is needed", m->ntargets);
    if (m->target[0].t.dtype == PLAN_I32 && d->classes < 1)
        return fail(err, es, "synthetic data: target '%s' holds class ids, but the model's output gives no "
                    "class count", m->target[0].name);
    d->n = spec->samples;
    return 0;
}

int64_t rt_data_cache_inputs(RtData *d)
{
    const PlanModel *m = d->model;
    if (!m || d->kind != PLAN_DATA_SYNTHETIC) /* not opened (no eval_data), or not synthetic */
        return 0;
    int64_t bytes = 0;
    for (int k = 0; k < m->ninputs; k++)
        if (m->input[k].t.dtype == PLAN_F32 && !is_mask(m, k))
            bytes += d->n * plan_tensor_elems(&m->input[k].t) * (int64_t)sizeof(float);
    if (bytes == 0 || bytes > RT_SYNTH_CACHE_BYTES)
        return 0;
    for (int k = 0; k < m->ninputs; k++) {
        if (m->input[k].t.dtype != PLAN_F32 || is_mask(m, k))
            continue;
        int64_t n = plan_tensor_elems(&m->input[k].t);
        d->syn[k] = malloc((size_t)(d->n * n) * sizeof(float));
        if (!d->syn[k]) {
            for (int j = 0; j <= k; j++)
                free(d->syn[j]), d->syn[j] = NULL;
            return -1;
        }
        for (int64_t s = 0; s < d->n; s++)
            rt_fill_normal(d->syn[k] + s * n, n, d->seed, s, (uint32_t)k);
    }
    return bytes;
}

/* ---- the contract ------------------------------------------------------------------ */

int rt_data_open(RtData *d, const PlanData *spec, const PlanModel *m, uint64_t seed, int eval, char *err, size_t errsize)
{
    memset(d, 0, sizeof *d);
    d->kind = spec->kind;
    d->model = m;
    d->seed = seed;
    d->pad = -1;
    d->perm_epoch = -1;
    if (m->ninputs < 1)
        return fail(err, errsize, "data: the model declares no input");
    int rc;
    switch (spec->kind) {
    case PLAN_DATA_SYNTHETIC: rc = open_synthetic(d, spec, m, err, errsize); break;
    case PLAN_DATA_IDX: rc = open_idx(d, spec, m, err, errsize); break;
    case PLAN_DATA_CIFAR10: rc = open_cifar(d, spec, m, eval, err, errsize); break;
    case PLAN_DATA_TOKENS: rc = open_tokens(d, spec, m, err, errsize); break;
    case PLAN_DATA_NPY: rc = open_npy(d, spec, m, err, errsize); break;
    default: rc = fail(err, errsize, "data: unknown source kind %d", (int)spec->kind); break;
    }
    if (rc == 0 && d->n < 1)
        rc = fail(err, errsize, "%s: the data set is empty", spec->path ? spec->path : "data");
    if (rc == 0) {
        /* the order of one epoch, cached; allocated here so the step loop
         * never allocates */
        if (d->n > RT_MAX_BYTES / (int64_t)sizeof *d->perm)
            rc = fail(err, errsize, "%s: %lld samples are too many to shuffle",
                      spec->path ? spec->path : "synthetic data", (long long)d->n);
        else if (!(d->perm = malloc((size_t)d->n * sizeof *d->perm)))
            rc = fail(err, errsize, "%s: out of memory for the order of %lld samples",
                      spec->path ? spec->path : "synthetic data", (long long)d->n);
    }
    if (rc != 0) {
        rt_data_close(d);
        return -1;
    }
    return 0;
}

void rt_data_close(RtData *d)
{
    free(d->u8);
    free(d->f32);
    free(d->labels);
    free(d->tokens);
    free(d->perm);
    for (int k = 0; k < PLAN_MAX_IO; k++)
        free(d->syn[k]);
    for (int k = 0; k < 2; k++)
        if (d->npy_map[k])
            munmap(d->npy_map[k], d->npy_map_len[k]);
    memset(d, 0, sizeof *d);
    d->pad = -1;
    d->perm_epoch = -1;
}

static void make_perm(RtData *d, int64_t epoch)
{
    int64_t n = d->n;
    int64_t *p = d->perm;
    for (int64_t i = 0; i < n; i++)
        p[i] = i;
    uint32_t w[4];
    int64_t block = -1;
    for (int64_t i = n - 1; i >= 1; i--) {
        if (i / 4 != block) {
            block = i / 4;
            rt_philox(w, d->seed, (uint32_t)block, (uint32_t)epoch, RT_SHUFFLE_TAG0, RT_SHUFFLE_TAG1);
        }
        int64_t j = (int64_t)rt_scale_word(w[i % 4], (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    d->perm_epoch = epoch;
}

int64_t rt_data_index(RtData *d, int shuffle, int64_t step, int64_t pos, int64_t batch)
{
    int64_t g = step * batch + pos;
    if (!shuffle || d->n <= 1)
        return g % d->n;
    int64_t e = g / d->n;
    if (e != d->perm_epoch)
        make_perm(d, e);
    return d->perm[g % d->n];
}

void rt_data_input(const RtData *d, int64_t sample, int k, void *dst)
{
    const PlanModel *m = d->model;
    const PlanTensor *t = &m->input[k].t;
    int64_t n = plan_tensor_elems(t);
    switch (d->kind) {
    case PLAN_DATA_SYNTHETIC:
        if (t->dtype == PLAN_I32)
            rt_fill_uniform_int(dst, n, d->seed, sample, (uint32_t)k, d->vocab);
        else if (is_mask(m, k))
            for (int64_t i = 0; i < n; i++)
                ((float *)dst)[i] = 1.0f;
        else if (d->syn[k])
            memcpy(dst, d->syn[k] + sample * n, (size_t)n * sizeof(float));
        else
            rt_fill_normal(dst, n, d->seed, sample, (uint32_t)k);
        break;
    case PLAN_DATA_IDX: {
        float *o = dst;
        if (d->u8) {
            const uint8_t *p = d->u8 + sample * d->sample_elems;
            for (int64_t i = 0; i < n; i++)
                o[i] = (float)p[i] / 255.0f;
        } else {
            memcpy(o, d->f32 + sample * d->sample_elems, (size_t)n * sizeof *o);
        }
        break;
    }
    case PLAN_DATA_CIFAR10: {
        float img[RT_CIFAR_PIXELS];
        const uint8_t *p = d->u8 + sample * RT_CIFAR_PIXELS;
        for (int i = 0; i < RT_CIFAR_PIXELS; i++)
            img[i] = (float)p[i] / 255.0f;
        rt_resize_bilinear(dst, img, 3, RT_CIFAR_SIDE, RT_CIFAR_SIDE, t->dim[1], t->dim[2]);
        break;
    }
    case PLAN_DATA_TOKENS: {
        const uint16_t *tok = d->tokens + sample * d->sample_elems;
        if (k == 0) {
            int32_t *o = dst;
            for (int64_t i = 0; i < n; i++)
                o[i] = tok[i];
        } else {
            float *o = dst;
            for (int64_t i = 0; i < n; i++)
                o[i] = (d->pad >= 0 && tok[i] == d->pad) ? 0.0f : 1.0f;
        }
        break;
    }
    case PLAN_DATA_NPY: npy_copy(&d->npy[0], d->npy_data[0], sample * n, n, t->dtype == PLAN_I32, dst); break;
    default: break;
    }
}

void rt_data_target(const RtData *d, int64_t sample, void *dst)
{
    const PlanTensor *t = &d->model->target[0].t;
    int64_t n = plan_tensor_elems(t);
    switch (d->kind) {
    case PLAN_DATA_SYNTHETIC:
        if (t->dtype == PLAN_I32)
            rt_fill_uniform_int(dst, n, d->seed, sample, RT_TARGET_SLOT, d->classes);
        else
            rt_fill_normal(dst, n, d->seed, sample, RT_TARGET_SLOT);
        break;
    case PLAN_DATA_IDX:
    case PLAN_DATA_CIFAR10: ((int32_t *)dst)[0] = d->labels[sample]; break;
    case PLAN_DATA_TOKENS: {
        /* the next token of each position; the window starts one later */
        const uint16_t *tok = d->tokens + sample * d->sample_elems + 1;
        int32_t *o = dst;
        for (int64_t i = 0; i < n; i++)
            o[i] = (d->pad >= 0 && tok[i] == d->pad) ? -1 : (int32_t)tok[i];
        break;
    }
    case PLAN_DATA_NPY: npy_copy(&d->npy[1], d->npy_data[1], sample * n, n, t->dtype == PLAN_I32, dst); break;
    default: break;
    }
}
