/* tests/test_safetensors.c: runtime/rt_safetensors.c. Round trips (shapes,
 * bit patterns, metadata, names that need escaping), the writer's bytes
 * against the format as the reference implementation lays it out, files
 * written by hand to the spec (whitespace, escapes, no padding), and bad
 * files: every truncation of a small file, bytes flipped all over its
 * header, and one file per rule the reader enforces, each of which must
 * fail with a message naming the file (and the tensor, where there is one).
 *
 * Python's safetensors package is not a dependency; the bytes it writes
 * are spelled out below from the format, and tests/parity/
 * test_safetensors.py checks the other direction with PyTorch. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_safetensors.h"
#include "rt_st.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/pipe-st-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static char *path_of(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void put_file(const char *path, const void *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert(n == 0 || fwrite(d, 1, n, f) == n);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *get_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)len + 1);
    ck_assert((long)fread(d, 1, (size_t)len, f) == len);
    fclose(f);
    *n = (size_t)len;
    return d;
}

/* A file from a header text and data bytes, as the spec lays it out;
 * pad: spaces to a multiple of 8, as writers do (the reader must not
 * depend on it). Returns the file's length. */
static size_t put_st(const char *path, const char *header, const void *data, size_t dn, int pad)
{
    size_t hn = strlen(header), padded = pad ? (hn + 7) / 8 * 8 : hn;
    unsigned char *d = malloc(8 + padded + dn + 1);
    for (int i = 0; i < 8; i++)
        d[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(d + 8, header, hn);
    memset(d + 8 + hn, ' ', padded - hn);
    if (dn)
        memcpy(d + 8 + padded, data, dn);
    put_file(path, d, 8 + padded + dn);
    free(d);
    return 8 + padded + dn;
}

/* Little-endian bytes of floats, whatever the host. */
static void le_floats(unsigned char *out, const float *x, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        for (int b = 0; b < 4; b++)
            out[4 * i + b] = (unsigned char)(u >> (8 * b));
    }
}

/* Reading must fail, with a message that starts with the path and
 * contains each of the (NULL-terminated) fragments. */
static void expect_fail(const char *path, const char *frag1, const char *frag2)
{
    RtSafetensors s;
    char err[512] = "";
    int rc = rt_safetensors_read(path, &s, err, sizeof err);
    ck_assert_msg(rc == -1, "expected %s to be rejected (%s)", path, frag1 ? frag1 : "");
    ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    if (frag1)
        ck_assert_msg(strstr(err, frag1) != NULL, "expected '%s' in: %s", frag1, err);
    if (frag2)
        ck_assert_msg(strstr(err, frag2) != NULL, "expected '%s' in: %s", frag2, err);
    ck_assert_ptr_null(s.buf);
    ck_assert_ptr_null(s.t);
    ck_assert_int_eq(s.n, 0);
    rt_safetensors_free(&s);
}

static void read_ok(const char *path, RtSafetensors *s)
{
    char err[512] = "";
    int rc = rt_safetensors_read(path, s, err, sizeof err);
    ck_assert_msg(rc == 0, "reading %s failed: %s", path, err);
}

static int bits_equal(const float *a, const float *b, int64_t n)
{
    return n == 0 || memcmp(a, b, (size_t)n * 4) == 0;
}

/* ---- round trips ---------------------------------------------------------- */

START_TEST(round_trip)
{
    float w[6] = {1.5f, -2.0f, 0.0f, -0.0f, 1e-40f /* subnormal */, 3.4e38f};
    float b[3] = {INFINITY, -INFINITY, NAN};
    float scalar[1] = {42.0f};
    float big[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++)
        big[i] = (float)i * 0.25f - 7;
    RtTensor t[] = {
        {"layers.0.weight", 2, {2, 3}, w, 0},
        {"layers.0.bias", 1, {3}, b, 0},
        {"step", 0, {0}, scalar, 0},
        {"empty", 2, {0, 3}, NULL, 0},
        {"conv.weight", 4, {2, 3, 4, 5}, big, 0},
    };
    const char *k[] = {"format", "pipe", "note"};
    const char *v[] = {"pt", "step 7", "quote \" backslash \\ newline \n tab \t é ✓"};
    char err[256] = "";
    const char *path = path_of("a.safetensors");
    ck_assert_msg(rt_safetensors_write(path, t, 5, k, v, 3, err, sizeof err) == 0, "%s", err);

    RtSafetensors s;
    read_ok(path, &s);
    ck_assert_int_eq(s.n, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(s.t[i].name, t[i].name); /* the order written */
        ck_assert_int_eq(s.t[i].ndim, t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            ck_assert_int_eq(s.t[i].dim[d], t[i].dim[d]);
            numel *= t[i].dim[d];
        }
        ck_assert(bits_equal(s.t[i].data, t[i].data, numel));
        ck_assert((uintptr_t)s.t[i].data % sizeof(float) == 0);
        ck_assert_ptr_eq(rt_safetensors_find(&s, t[i].name), &s.t[i]);
    }
    ck_assert_ptr_null(rt_safetensors_find(&s, "layers.0"));
    ck_assert_ptr_null(rt_safetensors_find(&s, "__metadata__"));
    ck_assert_int_eq(rt_safetensors_meta_count(&s), 3);
    for (int i = 0; i < 3; i++) {
        const char *key, *value;
        ck_assert_int_eq(rt_safetensors_meta_at(&s, i, &key, &value), 0);
        ck_assert_str_eq(key, k[i]);
        ck_assert_str_eq(value, v[i]);
        ck_assert_str_eq(rt_safetensors_meta(&s, k[i]), v[i]);
    }
    ck_assert_ptr_null(rt_safetensors_meta(&s, "missing"));
    const char *key, *value;
    ck_assert_int_eq(rt_safetensors_meta_at(&s, 3, &key, &value), -1);
    rt_safetensors_free(&s);
    ck_assert_ptr_null(s.buf);
    rt_safetensors_free(&s); /* twice is harmless */

    /* the layout: header length a multiple of 8, JSON first, the data last */
    size_t n;
    unsigned char *d = get_file(path, &n);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)d[i] << (8 * i);
    ck_assert(hl % 8 == 0);
    ck_assert(d[8] == '{');
    ck_assert(n == 8 + hl + (6 + 3 + 1 + 0 + 120) * 4);
    free(d);
    /* no temporary file left behind */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert(access(tmp, F_OK) != 0);
}
END_TEST

START_TEST(no_tensors_no_metadata)
{
    const char *path = path_of("empty.safetensors");
    char err[256];
    ck_assert(rt_safetensors_write(path, NULL, 0, NULL, NULL, 0, err, sizeof err) == 0);
    size_t n;
    unsigned char *d = get_file(path, &n);
    ck_assert(n == 16 && d[0] == 8 && memcmp(d + 8, "{}      ", 8) == 0);
    free(d);
    RtSafetensors s;
    read_ok(path, &s);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(rt_safetensors_meta_count(&s), 0);
    rt_safetensors_free(&s);
}
END_TEST

START_TEST(names_that_need_escaping)
{
    float x[1] = {1}, y[1] = {2}, z[1] = {3};
    RtTensor t[] = {{"a\"b\\c", 1, {1}, x, 0}, {"ctrl\x01\x1f", 1, {1}, y, 0}, {"ünï ✓ 😀", 1, {1}, z, 0}};
    const char *path = path_of("esc.safetensors");
    char err[256];
    ck_assert_msg(rt_safetensors_write(path, t, 3, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    RtSafetensors s;
    read_ok(path, &s);
    ck_assert_int_eq(s.n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(s.t[i].name, t[i].name);
        ck_assert(s.t[i].data[0] == t[i].data[0]);
    }
    rt_safetensors_free(&s);
}
END_TEST

START_TEST(overwrite_replaces)
{
    const char *path = path_of("w.safetensors");
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    RtTensor ta = {"a", 1, {2}, a, 0}, tb = {"b", 1, {3}, b, 0};
    char err[256];
    ck_assert(rt_safetensors_write(path, &ta, 1, NULL, NULL, 0, err, sizeof err) == 0);
    ck_assert(rt_safetensors_write(path, &tb, 1, NULL, NULL, 0, err, sizeof err) == 0);
    RtSafetensors s;
    read_ok(path, &s);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.t[0].name, "b");
    ck_assert(bits_equal(s.t[0].data, b, 3));
    rt_safetensors_free(&s);
}
END_TEST

/* ---- the writer's bytes ----------------------------------------------------- */

START_TEST(writer_bytes_follow_the_reference)
{
    /* What safetensors.torch.save_file({"a": [[1, 2], [3, 4]], "b": [5]},
     * metadata={"format": "pt"}) writes: compact JSON, the fields in the
     * order dtype, shape, data_offsets, spaces to a multiple of 8. */
    float a[4] = {1, 2, 3, 4}, b[1] = {5};
    RtTensor t[] = {{"a", 2, {2, 2}, a, 0}, {"b", 1, {1}, b, 0}};
    const char *k[] = {"format"}, *v[] = {"pt"};
    const char *path = path_of("ref.safetensors");
    char err[256];
    ck_assert(rt_safetensors_write(path, t, 2, k, v, 1, err, sizeof err) == 0);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}";
    size_t hn = strlen(want), padded = (hn + 7) / 8 * 8;
    size_t n;
    unsigned char *d = get_file(path, &n);
    ck_assert_uint_eq(n, 8 + padded + 20);
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(d[i], (unsigned char)((uint64_t)padded >> (8 * i)));
    ck_assert(memcmp(d + 8, want, hn) == 0);
    for (size_t i = hn; i < padded; i++)
        ck_assert(d[8 + i] == ' ');
    unsigned char le[20];
    le_floats(le, a, 4);
    le_floats(le + 16, b, 1);
    ck_assert(memcmp(d + 8 + padded, le, 20) == 0);
    free(d);
}
END_TEST

START_TEST(write_errors)
{
    float x[2] = {1, 2};
    char err[256];
    const char *path = path_of("bad.safetensors");
    RtTensor dup[] = {{"w", 1, {2}, x, 0}, {"v", 1, {1}, x, 0}, {"w", 1, {1}, x, 0}};
    ck_assert(rt_safetensors_write(path, dup, 3, NULL, NULL, 0, err, sizeof err) == -1);
    ck_assert_msg(strstr(err, path) && strstr(err, "'w'") && strstr(err, "twice"), "%s", err);
    RtTensor meta = {"__metadata__", 1, {2}, x, 0};
    ck_assert(rt_safetensors_write(path, &meta, 1, NULL, NULL, 0, err, sizeof err) == -1);
    RtTensor five = {"five", 5, {1, 1, 1, 1}, x, 0};
    ck_assert(rt_safetensors_write(path, &five, 1, NULL, NULL, 0, err, sizeof err) == -1);
    ck_assert_msg(strstr(err, "'five'"), "%s", err);
    RtTensor neg = {"neg", 2, {2, -1}, x, 0};
    ck_assert(rt_safetensors_write(path, &neg, 1, NULL, NULL, 0, err, sizeof err) == -1);
    ck_assert_msg(strstr(err, "'neg'"), "%s", err);
    RtTensor nodata = {"nodata", 1, {2}, NULL, 0};
    ck_assert(rt_safetensors_write(path, &nodata, 1, NULL, NULL, 0, err, sizeof err) == -1);
    RtTensor noname = {"", 1, {2}, x, 0};
    ck_assert(rt_safetensors_write(path, &noname, 1, NULL, NULL, 0, err, sizeof err) == -1);
    RtTensor badutf = {"\xff\xfe", 1, {2}, x, 0};
    ck_assert(rt_safetensors_write(path, &badutf, 1, NULL, NULL, 0, err, sizeof err) == -1);
    const char *k[] = {"a", "a"}, *v[] = {"1", "2"};
    RtTensor ok = {"ok", 1, {2}, x, 0};
    ck_assert(rt_safetensors_write(path, &ok, 1, k, v, 2, err, sizeof err) == -1);
    ck_assert_msg(strstr(err, "'a'"), "%s", err);
    /* none of that touched the disk */
    ck_assert(access(path, F_OK) != 0);
    /* a folder that does not exist */
    const char *nowhere = path_of("no/such/dir/x.safetensors");
    ck_assert(rt_safetensors_write(nowhere, &ok, 1, NULL, NULL, 0, err, sizeof err) == -1);
    ck_assert_msg(strstr(err, nowhere), "%s", err);
}
END_TEST

/* ---- files written by hand to the spec ----------------------------------- */

/* I64 tensors (batchnorm2d's num_batches_tracked): written as I64 beside
 * F32 ones, read back with i64 set and their 8 bytes; rt_st_read_i64 reads
 * them and refuses an F32 tensor, rt_st_read_f32 refuses them */
START_TEST(int64_tensors)
{
    float w[3] = {1, 2, 3};
    int64_t count[1] = {((int64_t)1 << 40) + 7}, pair[2] = {-1, 5};
    RtTensor t[] = {
        {"layers.1.weight", 1, {3}, w, 0},
        {"layers.1.num_batches_tracked", 0, {0}, (const float *)(const void *)count, 1},
        {"pair", 1, {2}, (const float *)(const void *)pair, 1},
    };
    char err[256] = "";
    const char *path = path_of("i64.safetensors");
    ck_assert_msg(rt_safetensors_write(path, t, 3, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    size_t n;
    unsigned char *d = get_file(path, &n);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)d[i] << (8 * i);
    ck_assert(n == 8 + hl + 3 * 4 + 8 + 16);
    char *head = calloc(1, hl + 1);
    memcpy(head, d + 8, hl);
    ck_assert_msg(strstr(head, "\"layers.1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[]"), "%s", head);
    free(head);
    free(d);
    RtSafetensors s;
    read_ok(path, &s);
    const RtTensor *c = rt_safetensors_find(&s, "layers.1.num_batches_tracked");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->i64, 1);
    ck_assert_int_eq(c->ndim, 0);
    int64_t got;
    memcpy(&got, c->data, 8);
    ck_assert(got == count[0]);
    ck_assert_int_eq(rt_safetensors_find(&s, "layers.1.weight")->i64, 0);
    rt_safetensors_free(&s);
    RtStFile f;
    ck_assert_msg(rt_st_open(path, &f, err, sizeof err) == 0, "%s", err);
    int64_t back[2] = {0, 0};
    float fl[3];
    for (int i = 0; i < f.h.n; i++) {
        const RtStEntry *e = &f.h.t[i];
        if (!strcmp(e->name, "pair")) {
            ck_assert_msg(rt_st_read_i64(&f, e, back, err, sizeof err) == 0, "%s", err);
            ck_assert(back[0] == -1 && back[1] == 5);
            ck_assert(rt_st_read_f32(&f, e, fl, err, sizeof err) == -1);
        } else if (!strcmp(e->name, "layers.1.weight")) {
            ck_assert(rt_st_read_i64(&f, e, back, err, sizeof err) == -1);
            ck_assert_msg(strstr(err, "'layers.1.weight' is F32: pipe reads it as I64"), "%s", err);
        }
    }
    rt_st_close(&f);
}
END_TEST

START_TEST(hand_written_files)
{
    float f[6] = {1.5f, -2.0f, 0.25f, 8.0f, -0.5f, 3.0f};
    unsigned char le[24];
    le_floats(le, f, 6);
    /* Another writer's freedoms: metadata last, fields in another order,
     * white space, no padding (so the data starts at an odd offset), and
     * data laid out in another order than the header lists. */
    const char *h = " {\n  \"bias\" : { \"data_offsets\" : [ 16 , 24 ] , \"shape\" : [ 2 ] , \"dtype\" : \"F32\" } ,\n"
                    "  \"w\\u00e9\\ud83d\\ude00\\/\\t\" : {\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\n"
                    "  \"__metadata__\" : { \"format\" : \"pt\" , \"\" : \"\" }\r\n}\t";
    const char *path = path_of("hand.safetensors");
    RtSafetensors s;
    /* every alignment of the data's start */
    for (int extra = 0; extra < 4; extra++) {
        char hx[1024];
        snprintf(hx, sizeof hx, "%s%.*s", h, extra, "   ");
        put_st(path, hx, le, 24, 0);
        read_ok(path, &s);
        ck_assert_int_eq(s.n, 2);
        /* listed in file order */
        ck_assert_str_eq(s.t[0].name, "wé😀/\t");
        ck_assert_str_eq(s.t[1].name, "bias");
        ck_assert_int_eq(s.t[0].ndim, 2);
        ck_assert_int_eq(s.t[0].dim[0], 2);
        ck_assert_int_eq(s.t[0].dim[1], 2);
        ck_assert((uintptr_t)s.t[0].data % sizeof(float) == 0);
        ck_assert(bits_equal(s.t[0].data, f, 4));
        ck_assert(bits_equal(s.t[1].data, f + 4, 2));
        ck_assert_str_eq(rt_safetensors_meta(&s, "format"), "pt");
        ck_assert_str_eq(rt_safetensors_meta(&s, ""), "");
        rt_safetensors_free(&s);
    }

    /* the same padded, and a 0-dimensional and an empty tensor */
    const char *h2 = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                     "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    put_st(path, h2, le, 8, 1);
    read_ok(path, &s);
    ck_assert_int_eq(s.n, 3);
    ck_assert_str_eq(s.t[0].name, "s");
    ck_assert_int_eq(s.t[0].ndim, 0);
    ck_assert(s.t[0].data[0] == 1.5f);
    ck_assert_str_eq(s.t[1].name, "e");
    ck_assert_int_eq(s.t[1].ndim, 2);
    ck_assert_str_eq(s.t[2].name, "v");
    ck_assert(s.t[2].data[0] == -2.0f);
    rt_safetensors_free(&s);
}
END_TEST

/* ---- bad files ------------------------------------------------------------ */

/* A small valid file, its bytes and its header length. */
static unsigned char *small_file(const char *path, size_t *n, size_t *hlen)
{
    float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {-1, -2};
    RtTensor t[] = {{"w", 2, {3, 2}, w, 0}, {"b", 1, {2}, b, 0}};
    const char *k[] = {"format"}, *v[] = {"pt"};
    char err[256];
    ck_assert(rt_safetensors_write(path, t, 2, k, v, 1, err, sizeof err) == 0);
    unsigned char *d = get_file(path, n);
    *hlen = 0;
    for (int i = 0; i < 8; i++)
        *hlen |= (size_t)d[i] << (8 * i);
    return d;
}

START_TEST(every_truncation_fails)
{
    const char *path = path_of("full.safetensors"), *cut = path_of("cut.safetensors");
    size_t n, hlen;
    unsigned char *d = small_file(path, &n, &hlen);
    for (size_t len = 0; len < n; len++) {
        put_file(cut, d, len);
        expect_fail(cut, NULL, NULL);
    }
    /* and one byte too many */
    unsigned char *more = malloc(n + 1);
    memcpy(more, d, n);
    more[n] = 0;
    put_file(cut, more, n + 1);
    expect_fail(cut, "cover", NULL);
    free(more);
    free(d);
}
END_TEST

START_TEST(flipped_header_bytes)
{
    /* Any byte of the header changed to anything: the reader either
     * rejects the file cleanly or (a changed name, a space for a tab)
     * reads something consistent. AddressSanitizer watches the rest. */
    const char *path = path_of("full.safetensors"), *bad = path_of("flip.safetensors");
    size_t n, hlen;
    unsigned char *d = small_file(path, &n, &hlen);
    static const unsigned char vals[] = {0x00, 0x01, 0x20, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x5c, 0x5d, 0x7b, 0x7d, 0x80, 0xff};
    int rejected = 0, read = 0;
    unsigned char *c = malloc(n);
    for (size_t i = 0; i < 8 + hlen; i++) {
        for (size_t k = 0; k < sizeof vals + 2; k++) {
            memcpy(c, d, n);
            unsigned char nv = k < sizeof vals ? vals[k] : (unsigned char)(d[i] ^ (k == sizeof vals ? 0x01 : 0x10));
            if (nv == d[i])
                continue;
            c[i] = nv;
            put_file(bad, c, n);
            RtSafetensors s;
            char err[512] = "";
            if (rt_safetensors_read(bad, &s, err, sizeof err) == 0) {
                read++;
                for (int t = 0; t < s.n; t++) {
                    int64_t numel = 1;
                    for (int q = 0; q < s.t[t].ndim; q++)
                        numel *= s.t[t].dim[q];
                    const unsigned char *p = (const unsigned char *)s.t[t].data;
                    ck_assert(p >= s.buf && p + numel * 4 <= s.buf + s.len);
                }
                rt_safetensors_free(&s);
            } else {
                rejected++;
                ck_assert_msg(strstr(err, bad) == err, "byte %zu = 0x%02x: %s", i, nv, err);
            }
        }
    }
    free(c);
    free(d);
    /* most changes break the file; a few (inside names and values) do not */
    ck_assert_msg(rejected > 10 * read, "rejected %d, read %d", rejected, read);
}
END_TEST

static const char *const F32_1 = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";

START_TEST(each_rule)
{
    const char *p = path_of("rule.safetensors");
    unsigned char z[64] = {0};
    /* the right file, to be sure the cases below fail for their reason */
    put_st(p, F32_1, z, 4, 1);
    RtSafetensors s;
    read_ok(p, &s);
    rt_safetensors_free(&s);

    put_st(p, "{\"emb\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'emb'", "F16");
    put_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", z, 20, 1);
    expect_fail(p, "'w'", "[2, 3] needs 24 bytes");
    put_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", z, 4, 1);
    expect_fail(p, "'w'", "not inside the data");
    put_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", z, 8, 1);
    expect_fail(p, "'w'", "not inside");
    put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", z, 12, 1);
    expect_fail(p, "'b'", "gap");
    put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", z, 8, 1);
    expect_fail(p, "'b'", "overlap");
    put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", z, 8, 1);
    expect_fail(p, "'a'", "twice");
    put_st(p, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", z, 0, 1);
    expect_fail(p, "'k'", "twice");
    put_st(p, "{\"__metadata__\":{},\"__metadata__\":{}}", z, 0, 1);
    expect_fail(p, "__metadata__", "twice");
    put_st(p, "{\"__metadata__\":{\"k\":1}}", z, 0, 1);
    expect_fail(p, "metadata value", NULL);
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "5 dimensions");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "not an integer");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "negative");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "invalid token"); /* 01: jansson's words */
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "too large");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "too large");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[NaN],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "invalid token");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1e999],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "too large");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "expected a dimension");
    put_st(p, "{\"x\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "dtype (a string)");
    put_st(p, "{\"x\":[],\"y\":{}}", z, 0, 1);
    expect_fail(p, "'x'", "expected '{'");
    put_st(p, "{\"__metadata__\":[]}", z, 0, 1);
    expect_fail(p, "metadata", NULL);
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", z, 4, 1);
    expect_fail(p, "'x'", "3 entries");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", z, 4, 1);
    expect_fail(p, "'x'", "missing data_offsets");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "'x'", "twice");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", z, 4, 1);
    expect_fail(p, "'x'", "unknown field 'extra'");
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}}", z, 4, 1);
    expect_fail(p, "after the header", NULL);
    put_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", z, 4, 1);
    expect_fail(p, "string or '}' expected", NULL);
    put_st(p, "{\"x\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "UTF-8", NULL);
    put_st(p, "{\"x\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "invalid Unicode '\\uD800'", NULL);
    put_st(p, "{\"x\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "NUL", NULL);
    put_st(p, "{\"x\\q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "escape", NULL);
    put_st(p, "{\"x\n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "unexpected newline", NULL);
    put_st(p, "{\"x\x01\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 1);
    expect_fail(p, "control character", NULL);
    put_st(p, "[]", z, 0, 1);
    expect_fail(p, "'{'", NULL);
    put_st(p, "", z, 0, 0);
    expect_fail(p, "'{'", NULL);

    /* header lengths: absurd, past the end, and a file too short for one */
    unsigned char h[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    put_file(p, h, 16);
    expect_fail(p, "over 100 MB", NULL);
    memset(h, 0, 8);
    h[0] = 100;
    put_file(p, h, 16);
    expect_fail(p, "runs past the end", NULL);
    put_file(p, h, 5);
    expect_fail(p, "too short", NULL);
    expect_fail(path_of("does-not-exist"), "cannot read", NULL);
    expect_fail(dir, "not a regular file", NULL);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, no_tensors_no_metadata);
    tcase_add_test(tc, names_that_need_escaping);
    tcase_add_test(tc, overwrite_replaces);
    tcase_add_test(tc, writer_bytes_follow_the_reference);
    tcase_add_test(tc, write_errors);
    tcase_add_test(tc, int64_tensors);
    tcase_add_test(tc, hand_written_files);
    tcase_add_test(tc, every_truncation_fails);
    tcase_add_test(tc, flipped_header_bytes);
    tcase_add_test(tc, each_rule);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(safetensors_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
