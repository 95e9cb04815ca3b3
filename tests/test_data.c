/* tests/test_data.c: the data loaders (runtime/rt_data.c) on small files
 * written into a temporary directory: IDX (raw, gzipped, float), CIFAR-10
 * batches, token files, the synthetic source and the shuffled order. Every
 * bad file must give -1 and a message naming it, never a crash (the suite
 * also runs under AddressSanitizer). */
#define _XOPEN_SOURCE 700 /* nftw, mkdtemp */
#include <ftw.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "k_cpu.h"
#include "rt_data.h"
#include "rt_resize.h"
#include "testutil.h"

static char tmpdir[256];

/* ---- models ------------------------------------------------------------------ */

/* a classifier over [1, 4, 4] images, with `classes` classes */
static T *img_model(const char *input, int classes)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "model m {\n input x: %s\n target y: int32[]\n flatten\n linear(%d)\n loss cross_entropy\n}\n", input,
             classes);
    T *t = t_compile(buf);
    ck_ok(t);
    return t;
}

static T *cifar_model(int side, int classes)
{
    char in[64];
    snprintf(in, sizeof in, "float32[3, %d, %d]", side, side);
    return img_model(in, classes);
}

/* a small GPT: tokens int32[4], a padding mask, next-token targets */
static T *gpt_model(int vocab)
{
    char buf[768];
    snprintf(buf, sizeof buf,
             "model g {\n input tokens: int32[4]\n input mask: float32[4]\n target next: int32[4]\n"
             " embedding(vocab = %d, dim = 8, positions = 4)\n"
             " transformer_block(heads = 2, mlp = 16, mask = mask)\n linear(%d)\n loss cross_entropy\n}\n",
             vocab, vocab);
    T *t = t_compile(buf);
    ck_ok(t);
    return t;
}

static T *mse_model(void)
{
    T *t = t_compile("model r {\n input x: float32[5]\n target y: float32[3]\n linear(3)\n loss mse\n}\n");
    ck_ok(t);
    return t;
}

/* ---- files ------------------------------------------------------------------- */

static const char *path_of(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static size_t put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
    return 4;
}

/* An IDX file in memory: magic 0x0000TTNN, dims, then body. */
static size_t idx_make(unsigned char *buf, int type, int ndim, const uint32_t *dims, const void *body,
                       size_t body_bytes)
{
    size_t n = put_be32(buf, (uint32_t)(type << 8 | ndim));
    for (int i = 0; i < ndim; i++)
        n += put_be32(buf + n, dims[i]);
    memcpy(buf + n, body, body_bytes);
    return n + body_bytes;
}

/* three 4x4 ubyte images (pixel = 16 i + 4 h + w + 7) and labels 3, 0, 9 */
static unsigned char img_bytes[3 * 16];
static const unsigned char lab_bytes[3] = {3, 0, 9};

static void write_mnist(const char *img, const char *lab, int gz)
{
    for (int i = 0; i < 48; i++)
        img_bytes[i] = (unsigned char)(i + 7 + (i >= 32 ? 200 : 0));   /* up to 254 */
    unsigned char buf[256];
    uint32_t di[3] = {3, 4, 4}, dl[1] = {3};
    size_t n = idx_make(buf, 0x08, 3, di, img_bytes, sizeof img_bytes);
    (gz ? write_gz : write_bytes)(path_of(img), buf, n);
    n = idx_make(buf, 0x08, 1, dl, lab_bytes, 3);
    (gz ? write_gz : write_bytes)(path_of(lab), buf, n);
}

static PlanData idx_spec(const char *img, const char *lab)
{
    PlanData s = {.kind = PLAN_DATA_IDX, .set = 1, .path = path_of(img), .path2 = path_of(lab), .pad = -1};
    return s;
}

/* Opens and expects an error whose message holds both substrings. */
#define expect_error(spec, t, eval, s1, s2)                                                               \
    do {                                                                                                  \
        RtData d_;                                                                                        \
        char err_[1024] = "";                                                                             \
        int rc_ = rt_data_open(&d_, (spec), &(t)->f.model, 1, (eval), err_, sizeof err_);                 \
        ck_assert_msg(rc_ == -1, "expected an error, got rc %d", rc_);                                    \
        if (getenv("PIPE_TEST_VERBOSE"))                                                                  \
            fprintf(stderr, "error: %s\n", err_);                                                         \
        ck_assert_msg(strstr(err_, (s1)) != NULL, "expected '%s' in: %s", (s1), err_);                   \
        ck_assert_msg(strstr(err_, (s2)) != NULL, "expected '%s' in: %s", (s2), err_);                   \
        rt_data_close(&d_);                                                                               \
    } while (0)

#define open_ok(d, spec, t, seed, eval)                                                                   \
    do {                                                                                                  \
        char err_[1024] = "";                                                                             \
        int rc_ = rt_data_open((d), (spec), &(t)->f.model, (seed), (eval), err_, sizeof err_);            \
        ck_assert_msg(rc_ == 0, "open failed: %s", err_);                                                 \
    } while (0)

/* ---- idx ------------------------------------------------------------------------ */

static void check_mnist(const char *img, const char *lab, const char *input)
{
    T *t = img_model(input, 10);
    PlanData s = idx_spec(img, lab);
    RtData d;
    open_ok(&d, &s, t, 1, 0);
    ck_assert_int_eq(d.n, 3);
    for (int i = 0; i < 3; i++) {
        float x[16];
        int32_t y = -5;
        rt_data_input(&d, i, 0, x);
        rt_data_target(&d, i, &y);
        ck_assert_int_eq(y, lab_bytes[i]);
        for (int e = 0; e < 16; e++)
            ck_assert_float_eq(x[e], (float)img_bytes[i * 16 + e] / 255.0f);
    }
    float x[16];
    rt_data_input(&d, 2, 0, x);
    ck_assert_float_eq_tol(x[15], 254.0f / 255.0f, 1e-7);
    ck_assert_float_eq(x[0], (float)(32 + 7 + 200) / 255.0f);
    rt_data_close(&d);
    t_free(t);
}

START_TEST(idx_raw)
{
    write_mnist("i.idx", "l.idx", 0);
    check_mnist("i.idx", "l.idx", "float32[1, 4, 4]");
    /* an [N, H, W] file feeds any input of H * W elements */
    check_mnist("i.idx", "l.idx", "float32[16]");
}
END_TEST

START_TEST(idx_gzip)
{
    write_mnist("i.idx.gz", "l.idx.gz", 1);
    check_mnist("i.idx.gz", "l.idx.gz", "float32[1, 4, 4]");
    /* gzipped images, raw labels */
    write_mnist("i2.idx", "l2.idx", 0);
    check_mnist("i.idx.gz", "l2.idx", "float32[4, 4]");
}
END_TEST

START_TEST(idx_float)
{
    /* 2 float images of [2, 3], big-endian as IDX stores every value */
    float v[12];
    unsigned char body[48];
    for (int i = 0; i < 12; i++) {
        v[i] = (float)i * 0.75f - 3.5f;
        uint32_t u;
        memcpy(&u, &v[i], 4);
        put_be32(body + 4 * i, u);
    }
    unsigned char buf[128];
    uint32_t di[3] = {2, 2, 3}, dl[1] = {2};
    write_gz(path_of("f.idx.gz"), buf, idx_make(buf, 0x0D, 3, di, body, sizeof body));
    unsigned char labs[2] = {1, 4};
    write_bytes(path_of("fl.idx"), buf, idx_make(buf, 0x08, 1, dl, labs, 2));
    T *t = img_model("float32[6]", 5);
    PlanData s = idx_spec("f.idx.gz", "fl.idx");
    RtData d;
    open_ok(&d, &s, t, 0, 0);
    ck_assert_int_eq(d.n, 2);
    float x[6];
    int32_t y;
    rt_data_input(&d, 1, 0, x);
    rt_data_target(&d, 1, &y);
    ck_assert_int_eq(y, 4);
    for (int e = 0; e < 6; e++)
        ck_assert_float_eq(x[e], v[6 + e]);
    rt_data_close(&d);
    t_free(t);
}
END_TEST

START_TEST(idx_errors)
{
    write_mnist("i.idx", "l.idx", 0);
    T *t = img_model("float32[1, 4, 4]", 10);
    unsigned char buf[256];
    PlanData s;

    s = idx_spec("missing.idx", "l.idx");
    expect_error(&s, t, 0, "missing.idx", "cannot open");
    s = idx_spec("i.idx", "missing-labels.idx");
    expect_error(&s, t, 0, "missing-labels.idx", "cannot open");

    /* labels given as images, images as labels: wrong magic */
    s = idx_spec("l.idx", "i.idx");
    expect_error(&s, t, 0, "l.idx", "magic");
    s = idx_spec("i.idx", "i.idx");
    expect_error(&s, t, 0, "i.idx", "magic");
    write_bytes(path_of("junk.idx"), "\x12\x34\x08\x03", 4);
    s = idx_spec("junk.idx", "l.idx");
    expect_error(&s, t, 0, "junk.idx", "magic 0x12340803");

    /* header cut short, dimensions cut short, data cut short (raw and gz) */
    write_bytes(path_of("h.idx"), "\0\0\x08", 3);
    s = idx_spec("h.idx", "l.idx");
    expect_error(&s, t, 0, "h.idx", "short");
    uint32_t di[3] = {3, 4, 4};
    size_t n = idx_make(buf, 0x08, 3, di, img_bytes, sizeof img_bytes);
    write_bytes(path_of("d.idx"), buf, 10);
    s = idx_spec("d.idx", "l.idx");
    expect_error(&s, t, 0, "d.idx", "dimensions");
    write_bytes(path_of("s.idx"), buf, n - 1);
    s = idx_spec("s.idx", "l.idx");
    expect_error(&s, t, 0, "s.idx", "47 of 48");
    write_gz(path_of("s.idx.gz"), buf, n - 5);
    s = idx_spec("s.idx.gz", "l.idx");
    expect_error(&s, t, 0, "s.idx.gz", "after 43 of 48");
    /* a gzip stream cut in the middle */
    write_gz(path_of("full.idx.gz"), buf, n);
    FILE *f = fopen(path_of("full.idx.gz"), "rb");
    unsigned char gz[512];
    size_t gn = fread(gz, 1, sizeof gz, f);
    fclose(f);
    write_bytes(path_of("cut.idx.gz"), gz, gn - 12);
    s = idx_spec("cut.idx.gz", "l.idx");
    expect_error(&s, t, 0, "cut.idx.gz", "gzip: unexpected end of file");
    /* its CRC trailer wrong: caught although every data byte came out */
    gz[gn - 6] ^= 0x5a;
    write_bytes(path_of("crc.idx.gz"), gz, gn);
    s = idx_spec("crc.idx.gz", "l.idx");
    expect_error(&s, t, 0, "crc.idx.gz", "gzip: incorrect data check");
    /* a byte flipped inside the compressed data */
    gz[gn - 6] ^= 0x5a;
    gz[gn / 2] ^= 0xff;
    write_bytes(path_of("flip.idx.gz"), gz, gn);
    s = idx_spec("flip.idx.gz", "l.idx");
    expect_error(&s, t, 0, "flip.idx.gz", "gzip: ");
    /* a wrong CRC on a stream larger than zlib's buffers (320 KB) */
    {
        enum { N = 20000 };
        unsigned char *big = malloc(16 * N + 64), *lab = malloc(N + 64), *z = malloc(16 * N + 1024);
        uint32_t db[3] = {N, 4, 4}, dbl[1] = {N};
        srand(7);
        for (int i = 0; i < 16 * N; i++)
            big[i] = (unsigned char)rand();
        unsigned char *img = malloc(16 * N + 64);
        size_t bn = idx_make(img, 0x08, 3, db, big, 16 * N);
        memset(lab, 1, N);
        unsigned char *lb = malloc(N + 64);
        size_t ln = idx_make(lb, 0x08, 1, dbl, lab, N);
        write_bytes(path_of("bl.idx"), lb, ln);
        write_gz(path_of("big.idx.gz"), img, bn);
        s = idx_spec("big.idx.gz", "bl.idx");
        RtData d;
        open_ok(&d, &s, t, 0, 0);
        ck_assert_int_eq(d.n, N);
        rt_data_close(&d);
        f = fopen(path_of("big.idx.gz"), "rb");
        size_t zn = fread(z, 1, 16 * N + 1024, f);
        fclose(f);
        z[zn - 6] ^= 0x5a;
        write_bytes(path_of("bigcrc.idx.gz"), z, zn);
        s = idx_spec("bigcrc.idx.gz", "bl.idx");
        expect_error(&s, t, 0, "bigcrc.idx.gz", "incorrect data check");
        free(big), free(lab), free(z), free(img), free(lb);
    }
    /* more bytes than the header declares */
    unsigned char longer[256];
    memcpy(longer, buf, n);
    longer[n] = 1;
    write_bytes(path_of("long.idx"), longer, n + 1);
    s = idx_spec("long.idx", "l.idx");
    expect_error(&s, t, 0, "long.idx", "more data than");

    /* labels cut short */
    uint32_t dl[1] = {3};
    write_bytes(path_of("ls.idx"), buf, idx_make(buf, 0x08, 1, dl, lab_bytes, 2));
    s = idx_spec("i.idx", "ls.idx");
    expect_error(&s, t, 0, "ls.idx", "2 of 3");

    /* counts differ */
    uint32_t d2[1] = {2};
    write_bytes(path_of("l2.idx"), buf, idx_make(buf, 0x08, 1, d2, lab_bytes, 2));
    s = idx_spec("i.idx", "l2.idx");
    expect_error(&s, t, 0, "l2.idx", "2 labels, but");

    /* an empty set */
    uint32_t d0[3] = {0, 4, 4};
    write_bytes(path_of("e.idx"), buf, idx_make(buf, 0x08, 3, d0, "", 0));
    s = idx_spec("e.idx", "l.idx");
    expect_error(&s, t, 0, "e.idx", "no samples");

    /* a label not below the class count: names the file and the sample */
    T *t9 = img_model("float32[1, 4, 4]", 9);
    s = idx_spec("i.idx", "l.idx");
    expect_error(&s, t9, 0, "l.idx", "label 9 of sample 2");
    t_free(t9);

    /* the sample does not fit the input: both shapes and the file */
    T *t25 = img_model("float32[1, 5, 5]", 10);
    expect_error(&s, t25, 0, "i.idx: images of [4, 4] (16 elements)", "float32[1, 5, 5] (25 elements)");
    t_free(t25);

    /* models idx cannot feed */
    T *tm = mse_model();
    expect_error(&s, tm, 0, "i.idx", "cross_entropy");
    t_free(tm);
    T *tg = gpt_model(16);
    expect_error(&s, tg, 0, "i.idx", "inputs");
    t_free(tg);
    t_free(t);
}
END_TEST

/* ---- cifar10 -------------------------------------------------------------------- */

/* record r of a batch: label, then pixel (c, h, w) = (r * 7 + c * 40 + h + w) & 0xff */
static unsigned char cifar_px(int r, int c, int h, int w)
{
    return (unsigned char)((r * 7 + c * 40 + h + w) & 0xff);
}

static void write_cifar(const char *name, int first, int nrec, const unsigned char *labels)
{
    size_t n = (size_t)nrec * 3073;
    unsigned char *b = malloc(n);
    for (int r = 0; r < nrec; r++) {
        unsigned char *p = b + (size_t)r * 3073;
        p[0] = labels[r];
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < 32; h++)
                for (int w = 0; w < 32; w++)
                    p[1 + (c * 32 + h) * 32 + w] = cifar_px(first + r, c, h, w);
    }
    write_bytes(path_of(name), b, n);
    free(b);
}

static PlanData cifar_spec(const char *dir, int64_t resize)
{
    PlanData s = {.kind = PLAN_DATA_CIFAR10, .set = 1, .path = dir, .resize = resize, .pad = -1};
    return s;
}

START_TEST(cifar_batches)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cifar", tmpdir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    /* a subset of the training batches (1 and 3), read in order */
    const unsigned char l1[2] = {6, 9}, l3[1] = {2}, lt[1] = {8};
    write_cifar("cifar/data_batch_1.bin", 0, 2, l1);
    write_cifar("cifar/data_batch_3.bin", 2, 1, l3);
    write_cifar("cifar/test_batch.bin", 10, 1, lt);

    T *t = cifar_model(32, 10);
    PlanData s = cifar_spec(dir, 0);
    RtData d;
    open_ok(&d, &s, t, 0, 0);
    ck_assert_int_eq(d.n, 3);
    float *x = malloc(3 * 64 * 64 * sizeof *x);
    int32_t y;
    for (int r = 0; r < 3; r++) {
        rt_data_input(&d, r, 0, x);
        rt_data_target(&d, r, &y);
        ck_assert_int_eq(y, r < 2 ? l1[r] : l3[0]);
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < 32; h += 5)
                for (int w = 0; w < 32; w += 3)
                    ck_assert_float_eq(x[(c * 32 + h) * 32 + w], (float)cifar_px(r, c, h, w) / 255.0f);
    }
    rt_data_close(&d);

    /* evaluation reads test_batch.bin */
    open_ok(&d, &s, t, 0, 1);
    ck_assert_int_eq(d.n, 1);
    rt_data_input(&d, 0, 0, x);
    rt_data_target(&d, 0, &y);
    ck_assert_int_eq(y, 8);
    ck_assert_float_eq(x[(2 * 32 + 3) * 32 + 4], (float)cifar_px(10, 2, 3, 4) / 255.0f);
    rt_data_close(&d);
    t_free(t);

    /* resized to 64: pixels are linear in h and w away from the wrapping,
     * so bilinear interpolation gives the pixel at the source position */
    t = cifar_model(64, 10);
    s = cifar_spec(dir, 64);
    open_ok(&d, &s, t, 0, 0);
    rt_data_input(&d, 0, 0, x);
    for (int c = 0; c < 3; c++)
        for (int oh = 0; oh < 64; oh++)
            for (int ow = 0; ow < 64; ow++) {
                double sh = fmax(0.0, (oh + 0.5) * 0.5 - 0.5), sw = fmax(0.0, (ow + 0.5) * 0.5 - 0.5);
                sh = fmin(sh, 31.0), sw = fmin(sw, 31.0);
                double want = (c * 40 + sh + sw) / 255.0;
                ck_assert_float_eq_tol(x[(c * 64 + oh) * 64 + ow], want, 1e-6);
            }
    rt_data_close(&d);
    t_free(t);

    /* downscaled to 20 */
    t = cifar_model(20, 10);
    s = cifar_spec(dir, 20);
    open_ok(&d, &s, t, 0, 0);
    rt_data_input(&d, 1, 0, x);
    double sc = 32.0 / 20.0;
    for (int o = 0; o < 20; o++) {
        double src = fmax(0.0, (o + 0.5) * sc - 0.5);
        double want = (7 + 40 * 1 + src + src) / 255.0;
        ck_assert_float_eq_tol(x[(1 * 20 + o) * 20 + o], want, 1e-6);
    }
    rt_data_close(&d);
    t_free(t);
    free(x);
}
END_TEST

START_TEST(cifar_errors)
{
    char dir[512], empty[512];
    snprintf(dir, sizeof dir, "%s/cbad", tmpdir);
    snprintf(empty, sizeof empty, "%s/cnone", tmpdir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    ck_assert_int_eq(mkdir(empty, 0700), 0);
    T *t = cifar_model(32, 10);
    PlanData s = cifar_spec(empty, 0);
    /* no batch at all; a missing test batch; a missing directory */
    expect_error(&s, t, 0, "cnone/data_batch_1.bin", "none of");
    expect_error(&s, t, 1, "cnone/test_batch.bin", "cannot open");
    PlanData s_missing = cifar_spec(path_of("no-such-dir"), 0);
    expect_error(&s_missing, t, 0, "no-such-dir", "none of");

    /* a short file: not whole records; an empty file */
    const unsigned char l[2] = {1, 2};
    write_cifar("cbad/data_batch_1.bin", 0, 2, l);
    FILE *f = fopen(path_of("cbad/data_batch_1.bin"), "r+b");
    ck_assert_int_eq(ftruncate(fileno(f), 3073 * 2 - 5), 0);
    fclose(f);
    s = cifar_spec(dir, 0);
    expect_error(&s, t, 0, "cbad/data_batch_1.bin", "6141 bytes is not a whole number");
    write_bytes(path_of("cbad/data_batch_1.bin"), "", 0);
    expect_error(&s, t, 0, "cbad/data_batch_1.bin", "no records");
    /* a bad batch after a good one */
    write_cifar("cbad/data_batch_1.bin", 0, 2, l);
    write_bytes(path_of("cbad/data_batch_2.bin"), "abc", 3);
    expect_error(&s, t, 0, "cbad/data_batch_2.bin", "whole number");
    unlink(path_of("cbad/data_batch_2.bin"));

    /* a label not below the classes */
    const unsigned char lbad[3] = {0, 1, 7};
    write_cifar("cbad/data_batch_4.bin", 0, 3, lbad);
    T *t5 = cifar_model(32, 5);
    expect_error(&s, t5, 0, "cbad/data_batch_4.bin", "label 7 of sample 2");
    t_free(t5);

    /* the input does not match the resize */
    T *t64 = cifar_model(64, 10);
    expect_error(&s, t64, 0, "[3, 32, 32] (resize = 0)", "float32[3, 64, 64]");
    PlanData s48 = cifar_spec(dir, 48);
    expect_error(&s48, t64, 0, "[3, 48, 48] (resize = 48)", "float32[3, 64, 64]");
    t_free(t64);
    T *tg = img_model("float32[1, 32, 32]", 10);
    expect_error(&s, tg, 0, "cbad", "[3, 32, 32]");
    t_free(tg);
    t_free(t);
}
END_TEST

/* ---- the resize itself, against values computed by hand ----------------------- */

START_TEST(resize_by_hand)
{
    /* 2x2 -> 4x4: source positions 0 (clamped), 0.25, 0.75, 1 (clamped) */
    const float in[4] = {0, 1, 2, 3};
    const float want[16] = {0,   0.25f, 0.75f, 1,    0.5f, 0.75f, 1.25f, 1.5f,
                            1.5f, 1.75f, 2.25f, 2.5f, 2,    2.25f, 2.75f, 3};
    float out[16];
    rt_resize_bilinear(out, in, 1, 2, 2, 4, 4);
    for (int i = 0; i < 16; i++)
        ck_assert_float_eq(out[i], want[i]);

    /* 3x3 -> 2x2: source positions 0.25 and 1.75 */
    const float lin[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};  /* 3 h + w */
    rt_resize_bilinear(out, lin, 1, 3, 3, 2, 2);
    const float lw[4] = {1.0f, 2.5f, 5.5f, 7.0f};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(out[i], lw[i], 1e-6);
    const float spike[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    rt_resize_bilinear(out, spike, 1, 3, 3, 2, 2);
    ck_assert_float_eq(out[0], 0.5625f);   /* 0.75 * 0.75 */
    ck_assert_float_eq(out[1], 0.0f);
    ck_assert_float_eq(out[2], 0.0f);
    ck_assert_float_eq(out[3], 0.0f);

    /* two channels, the same size: a copy */
    const float two[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    rt_resize_bilinear(out, two, 2, 2, 2, 2, 2);
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(out[i], two[i]);
    /* one dimension the same: that one is copied, the other interpolated */
    rt_resize_bilinear(out, in, 1, 2, 2, 2, 4);
    const float wide[8] = {0, 0.25f, 0.75f, 1, 2, 2.25f, 2.75f, 3};
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(out[i], wide[i]);
}
END_TEST

/* ---- tokens --------------------------------------------------------------------- */

static void write_tokens(const char *name, const uint16_t *tok, size_t n)
{
    unsigned char *b = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        b[2 * i] = (unsigned char)tok[i], b[2 * i + 1] = (unsigned char)(tok[i] >> 8);
    write_bytes(path_of(name), b, 2 * n);
    free(b);
}

static PlanData tok_spec(const char *name, int64_t pad)
{
    PlanData s = {.kind = PLAN_DATA_TOKENS, .set = 1, .path = path_of(name), .pad = pad};
    return s;
}

START_TEST(tokens_windows)
{
    T *t = gpt_model(300);
    uint16_t tok[11];
    for (int i = 0; i < 11; i++)
        tok[i] = (uint16_t)(i * 29);   /* up to 290: the high byte matters */
    write_tokens("t.u16", tok, 11);
    PlanData s = tok_spec("t.u16", -1);
    RtData d;
    open_ok(&d, &s, t, 0, 0);
    ck_assert_int_eq(d.n, 2);   /* (11 - 1) / 4 */
    int32_t x[4], y[4];
    float mask[4];
    for (int i = 0; i < 2; i++) {
        rt_data_input(&d, i, 0, x);
        rt_data_input(&d, i, 1, mask);
        rt_data_target(&d, i, y);
        for (int j = 0; j < 4; j++) {
            ck_assert_int_eq(x[j], tok[4 * i + j]);
            ck_assert_int_eq(y[j], tok[4 * i + j + 1]);
            ck_assert_float_eq(mask[j], 1.0f);
        }
    }
    rt_data_close(&d);

    /* exactly T + 1 tokens: one sample */
    write_tokens("t5.u16", tok, 5);
    s = tok_spec("t5.u16", -1);
    open_ok(&d, &s, t, 0, 0);
    ck_assert_int_eq(d.n, 1);
    rt_data_target(&d, 0, y);
    ck_assert_int_eq(y[3], tok[4]);
    rt_data_close(&d);
    t_free(t);
}
END_TEST

START_TEST(tokens_pad)
{
    T *t = gpt_model(16);
    const uint16_t tok[9] = {5, 6, 0, 0, 7, 8, 9, 0, 0};
    write_tokens("p.u16", tok, 9);
    PlanData s = tok_spec("p.u16", 0);
    RtData d;
    open_ok(&d, &s, t, 0, 0);
    ck_assert_int_eq(d.n, 2);
    int32_t x[4], y[4];
    float mask[4];
    rt_data_input(&d, 0, 0, x);
    rt_data_input(&d, 0, 1, mask);
    rt_data_target(&d, 0, y);
    const int32_t x0[4] = {5, 6, 0, 0}, y0[4] = {6, -1, -1, 7};
    const float m0[4] = {1, 1, 0, 0};
    for (int j = 0; j < 4; j++) {
        ck_assert_int_eq(x[j], x0[j]);
        ck_assert_int_eq(y[j], y0[j]);
        ck_assert_float_eq(mask[j], m0[j]);
    }
    rt_data_input(&d, 1, 0, x);
    rt_data_input(&d, 1, 1, mask);
    rt_data_target(&d, 1, y);
    const int32_t x1[4] = {7, 8, 9, 0}, y1[4] = {8, 9, -1, -1};
    const float m1[4] = {1, 1, 1, 0};
    for (int j = 0; j < 4; j++) {
        ck_assert_int_eq(x[j], x1[j]);
        ck_assert_int_eq(y[j], y1[j]);
        ck_assert_float_eq(mask[j], m1[j]);
    }
    rt_data_close(&d);

    /* a pad that never occurs changes nothing */
    s = tok_spec("p.u16", 15);
    open_ok(&d, &s, t, 0, 0);
    rt_data_target(&d, 0, y);
    ck_assert_int_eq(y[1], 0);
    rt_data_input(&d, 0, 1, mask);
    ck_assert_float_eq(mask[2], 1.0f);
    rt_data_close(&d);
    t_free(t);
}
END_TEST

START_TEST(tokens_errors)
{
    T *t = gpt_model(16);
    uint16_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    PlanData s = tok_spec("none.u16", -1);
    expect_error(&s, t, 0, "none.u16", "cannot open");
    write_tokens("short.u16", tok, 4);
    s = tok_spec("short.u16", -1);
    expect_error(&s, t, 0, "short.u16", "holds 4 tokens");
    write_tokens("empty.u16", tok, 0);
    s = tok_spec("empty.u16", -1);
    expect_error(&s, t, 0, "empty.u16", "holds 0 tokens");
    write_bytes(path_of("odd.u16"), "\1\0\2\0\3\0\4\0\5\0\6", 11);
    s = tok_spec("odd.u16", -1);
    expect_error(&s, t, 0, "odd.u16", "11 bytes");
    tok[7] = 16;   /* the vocabulary is 16: ids 0..15 */
    write_tokens("big.u16", tok, 12);
    s = tok_spec("big.u16", -1);
    expect_error(&s, t, 0, "big.u16", "token id 16 at token 7 (byte offset 14)");
    tok[7] = 0xffff;
    write_tokens("big2.u16", tok, 12);
    s = tok_spec("big2.u16", -1);
    expect_error(&s, t, 0, "big2.u16", "token id 65535");
    s = tok_spec(".", -1);
    expect_error(&s, t, 0, "/.", "");
    /* models tokens cannot feed */
    tok[7] = 3;
    write_tokens("ok.u16", tok, 12);
    s = tok_spec("ok.u16", -1);
    T *ti = img_model("float32[1, 4, 4]", 10);
    expect_error(&s, ti, 0, "ok.u16", "int32[T] token ids");
    t_free(ti);
    T *tw = t_compile("model g {\n input tokens: int32[4]\n input extra: int32[4]\n target next: int32[4]\n"
                      " embedding(vocab = 16, dim = 8)\n linear(16)\n loss cross_entropy\n}\n");
    ck_ok(tw);
    expect_error(&s, tw, 0, "ok.u16", "input 'extra' is int32[4]");
    t_free(tw);
    t_free(t);
}
END_TEST

/* ---- synthetic ------------------------------------------------------------------- */

static PlanData syn_spec(int64_t n)
{
    PlanData s = {.kind = PLAN_DATA_SYNTHETIC, .set = 1, .samples = n, .pad = -1};
    return s;
}

START_TEST(synthetic_values)
{
    T *t = img_model("float32[1, 4, 8]", 7);
    PlanData s = syn_spec(100);
    RtData a, b, c;
    open_ok(&a, &s, t, 42, 0);
    open_ok(&b, &s, t, 42, 0);
    open_ok(&c, &s, t, 43, 0);
    ck_assert_int_eq(a.n, 100);
    float xa[32], xb[32], xc[32], x1[32];
    rt_data_input(&a, 5, 0, xa);
    rt_data_input(&b, 5, 0, xb);
    rt_data_input(&c, 5, 0, xc);
    rt_data_input(&a, 6, 0, x1);
    ck_assert_mem_eq(xa, xb, sizeof xa);
    ck_assert(memcmp(xa, xc, sizeof xa) != 0);
    ck_assert(memcmp(xa, x1, sizeof xa) != 0);

    /* the documented recipe: element 5 is the sine of block 1's first pair */
    uint32_t w[4], ctr[4] = {1, 5, 0, 0x44415441u}, key[2] = {42, 0};
    k_philox(w, ctr, key);
    double u1 = ((w[0] >> 8) + 1.0) / 16777216.0, u2 = (w[1] >> 8) / 16777216.0;
    ck_assert_float_eq(xa[5], (float)(sqrt(-2 * log(u1)) * sin(2 * M_PI * u2)));
    ck_assert_float_eq(xa[4], (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2)));

    /* roughly N(0, 1) over many samples; targets within the classes */
    double sum = 0, sq = 0;
    int seen[7] = {0};
    for (int i = 0; i < 100; i++) {
        rt_data_input(&a, i, 0, x1);
        for (int e = 0; e < 32; e++)
            sum += x1[e], sq += x1[e] * x1[e];
        int32_t y = -1, y2 = -2;
        rt_data_target(&a, i, &y);
        rt_data_target(&b, i, &y2);
        ck_assert_int_eq(y, y2);
        ck_assert(y >= 0 && y < 7);
        seen[y]++;
    }
    double mean = sum / 3200, var = sq / 3200 - mean * mean;
    ck_assert_msg(fabs(mean) < 0.1 && fabs(var - 1) < 0.1, "mean %g var %g", mean, var);
    for (int k = 0; k < 7; k++)
        ck_assert_int_gt(seen[k], 0);
    /* the samples computed once (rt_data_cache_inputs) are the ones drawn
     * when loaded, bit for bit, for every sample */
    ck_assert_int_eq(rt_data_cache_inputs(&b), 100 * 32 * 4);
    ck_assert_ptr_nonnull(b.syn[0]);
    for (int i = 0; i < 100; i++) {
        rt_data_input(&a, i, 0, xa);
        rt_data_input(&b, i, 0, xb);
        ck_assert_mem_eq(xa, xb, sizeof xa);
    }
    rt_data_close(&a);
    rt_data_close(&b);
    rt_data_close(&c);
    t_free(t);
}
END_TEST

START_TEST(synthetic_tokens_and_mse)
{
    T *t = gpt_model(11);
    PlanData s = syn_spec(8);
    RtData d;
    open_ok(&d, &s, t, 3, 0);
    int seen_max = 0;
    ck_assert_int_eq(rt_data_cache_inputs(&d), 0); /* token ids and a mask: nothing to cache */
    for (int i = 0; i < 8; i++) {
        int32_t x[4], y[4];
        float mask[4];
        rt_data_input(&d, i, 0, x);
        rt_data_input(&d, i, 1, mask);
        rt_data_target(&d, i, y);
        for (int j = 0; j < 4; j++) {
            ck_assert(x[j] >= 0 && x[j] < 11);
            ck_assert(y[j] >= 0 && y[j] < 11);
            ck_assert_float_eq(mask[j], 1.0f);
            if (x[j] > seen_max)
                seen_max = x[j];
        }
    }
    ck_assert_int_ge(seen_max, 5);
    rt_data_close(&d);
    t_free(t);

    t = mse_model();
    open_ok(&d, &s, t, 3, 0);
    float y[3], y2[3];
    rt_data_target(&d, 2, y);
    rt_data_target(&d, 2, y2);
    ck_assert_mem_eq(y, y2, sizeof y);
    ck_assert(y[0] != y[1] && y[1] != y[2]);
    /* input and target streams are distinct (slot k vs 0xffff) */
    float x[5];
    rt_data_input(&d, 2, 0, x);
    ck_assert(x[0] != y[0]);
    rt_data_close(&d);
    PlanData bad = syn_spec(0);
    expect_error(&bad, t, 0, "synthetic", "samples");
    t_free(t);
}
END_TEST

/* ---- order ------------------------------------------------------------------------ */

START_TEST(order)
{
    T *t = img_model("float32[2]", 3);
    PlanData s = syn_spec(10);
    RtData a, b, c;
    open_ok(&a, &s, t, 9, 0);
    open_ok(&b, &s, t, 9, 0);
    open_ok(&c, &s, t, 10, 0);
    /* without shuffle: (step * batch + pos) mod n */
    for (int step = 0; step < 7; step++)
        for (int pos = 0; pos < 3; pos++)
            ck_assert_int_eq(rt_data_index(&a, 0, step, pos, 3), (step * 3 + pos) % 10);

    /* with: each epoch (10 consecutive stream positions) is a permutation */
    int64_t ep[4][10];
    for (int e = 0; e < 4; e++) {
        int hit[10] = {0};
        for (int i = 0; i < 10; i++) {
            int64_t g = e * 10 + i;
            int64_t k = rt_data_index(&a, 1, g / 3, g % 3, 3);
            ck_assert(k >= 0 && k < 10);
            hit[k]++;
            ep[e][i] = k;
        }
        for (int k = 0; k < 10; k++)
            ck_assert_int_eq(hit[k], 1);
    }
    ck_assert(memcmp(ep[0], ep[1], sizeof ep[0]) != 0);
    /* reproducible: another reader, in another order (as another stage would
     * ask), and going back to an earlier epoch */
    for (int e = 3; e >= 0; e--)
        for (int i = 9; i >= 0; i--) {
            int64_t g = e * 10 + i;
            ck_assert_int_eq(rt_data_index(&b, 1, g / 5, g % 5, 5), ep[e][i]);
            ck_assert_int_eq(rt_data_index(&a, 1, g, 0, 1), ep[e][i]);
        }
    /* another seed, another order */
    int same = 1;
    for (int i = 0; i < 10; i++)
        same &= rt_data_index(&c, 1, 0, i, 10) == ep[0][i];
    ck_assert(!same);

    /* the documented Fisher-Yates, epoch 2 */
    int64_t p[10];
    for (int i = 0; i < 10; i++)
        p[i] = i;
    for (int i = 9; i >= 1; i--) {
        uint32_t w[4], ctr[4] = {(uint32_t)(i / 4), 2, 0x5348, 0x55464c45u}, key[2] = {9, 0};
        k_philox(w, ctr, key);
        int64_t j = (int64_t)(((uint64_t)w[i % 4] * (uint64_t)(i + 1)) >> 32), x = p[i];
        p[i] = p[j], p[j] = x;
    }
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(ep[2][i], p[i]);

    /* one sample: always 0 */
    rt_data_close(&c);
    PlanData s1 = syn_spec(1);
    open_ok(&c, &s1, t, 1, 0);
    for (int g = 0; g < 5; g++)
        ck_assert_int_eq(rt_data_index(&c, 1, g, 0, 1), 0);
    rt_data_close(&a);
    rt_data_close(&b);
    rt_data_close(&c);
    /* closing twice, and closing a failed open, are harmless */
    rt_data_close(&c);
    t_free(t);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *c = tcase_create("data");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, idx_raw);
    tcase_add_test(c, idx_gzip);
    tcase_add_test(c, idx_float);
    tcase_add_test(c, idx_errors);
    tcase_add_test(c, cifar_batches);
    tcase_add_test(c, cifar_errors);
    tcase_add_test(c, resize_by_hand);
    tcase_add_test(c, tokens_windows);
    tcase_add_test(c, tokens_pad);
    tcase_add_test(c, tokens_errors);
    tcase_add_test(c, synthetic_values);
    tcase_add_test(c, synthetic_tokens_and_mse);
    tcase_add_test(c, order);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/pipe_test_data.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(data_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
