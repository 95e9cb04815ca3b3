/* tests/test_gemm.c: the matrix products in bf16, and in fp32 against a
 * packed operand (kernels/cpu/k_gemm.c).
 *
 * k_bf16_round against hand-worked roundings; the GEMM's own (vector)
 * rounding of both operand layouts, and k_bf16_round_values, against
 * k_bf16_round on every kind of float; products of every transpose, edge and block size against a double
 * reference of the rounded operands; a row computed alone equal bit for bit
 * to the same row among others (the property the bitwise contract rests
 * on); linear and conv2d in bf16 against fp32 on operands already bf16.
 * The packed fp32 product (AVX-512F): every element bit for bit fmaf's in
 * k order, for each way B is laid out, edges and blocks; a row alone the
 * same; a linear's forward and input gradient from its packed weight.
 * The weight gradient's own product: C plus its K products summed from 0
 * in row order, bit for bit, within the scratch it is given; a linear's
 * weight gradient through it over two micro-batches.
 *
 * Needs AVX512-BF16: on a CPU without it, the rounding cases run and the
 * test then exits 77 ("skipped: no AVX512-BF16"), which ctest counts as
 * skipped.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_cpu.h"

#include "ktestutil.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bf16_value(float x)
{
    return from_bits((uint32_t)k_bf16_round(x) << 16);
}

START_TEST(round_cases)
{
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x3f808000u, 0x3f80}, /* tie, even below */
        {0x3f818000u, 0x3f82}, /* tie, even above */
        {0x3f808001u, 0x3f81}, /* past the tie */
        {0x3f807fffu, 0x3f80}, /* below the tie */
        {0xbf818000u, 0xbf82}, /* negative tie */
        {0x7f800000u, 0x7f80}, /* inf */
        {0xff800000u, 0xff80}, /* -inf */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds past bf16's largest */
        {0x7f7f0000u, 0x7f7f}, /* bf16's largest */
        {0x7fc00001u, 0x7fc0}, /* quiet NaN keeps NaN */
        {0x7f800001u, 0x7fc0}, /* signalling NaN made quiet */
        {0xffc12345u, 0xffc1}, /* negative NaN */
        {0x00000001u, 0x0000}, /* denormal to zero */
        {0x807fffffu, 0x8000}, /* negative denormal to -0 */
        {0x00800000u, 0x0080}, /* smallest normal */
        {0x00000000u, 0x0000},
        {0x80000000u, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = k_bf16_round(from_bits(cases[i].in));
        REQUIRE(got == cases[i].out, "k_bf16_round(0x%08x) = 0x%04x, want 0x%04x", cases[i].in, got, cases[i].out);
    }
}
END_TEST

/* every kind of float: normals of every exponent, ties, denormals, zeros,
 * infinities, NaNs */
static float odd_float(int64_t i)
{
    lcg = lcg * 1664525u + 1013904223u;
    uint32_t r = lcg;
    switch (i % 8) {
    case 0: return from_bits(r & 0x807fffffu);                  /* denormal or zero */
    case 1: return from_bits((r & 0x80000000u) | 0x7f800000u | (r & 0x7fffffu)); /* inf or NaN */
    case 2: return from_bits((r & 0xffff0000u) | 0x8000u);      /* a tie */
    case 3: return from_bits((r & 0xff800000u) | 0x7f7fffu);    /* just below a power of two */
    default: return from_bits(r);
    }
}

START_TEST(gemm_rounds_like_k_bf16_round)
{
    /* C (1, n) = [1, 0] . B (2, n) with B's first row the values: C[j] is
     * the GEMM's rounding of value j, through both of B's packing paths
     * (rows contiguous: tb = 0; columns contiguous: tb = 1), and through A's
     * (C (n, 1) = A (n, 2) . [1; 0]) */
    enum { N = 4099 };
    float *vals = malloc(N * sizeof(float)), *b = calloc(2 * N, sizeof(float)), *c = malloc(N * sizeof(float));
    ck_assert_ptr_nonnull(vals);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    rng_seed(7);
    for (int64_t i = 0; i < N; i++)
        vals[i] = odd_float(i);
    const float one[2] = {1.0f, 0.0f};
    for (int path = 0; path < 3; path++) {
        memset(b, 0, 2 * N * sizeof(float));
        for (int64_t j = 0; j < N; j++) {
            if (path == 0)
                b[j] = vals[j]; /* B (2, N) row-major */
            else
                b[2 * j] = vals[j]; /* path 1: B^T stored (N, 2); path 2: A (N, 2) */
        }
        if (path == 0)
            k_gemm(K_BF16, 0, 0, 1, N, 2, one, 2, b, N, 0, c, N);
        else if (path == 1)
            k_gemm(K_BF16, 0, 1, 1, N, 2, one, 2, b, 2, 0, c, N);
        else
            k_gemm(K_BF16, 0, 0, N, 1, 2, b, 2, one, 1, 0, c, 1);
        for (int64_t j = 0; j < N; j++) {
            float want = bf16_value(vals[j]);
            if (isnan(want))
                REQUIRE(isnan(c[j]), "path %d: value 0x%08x gave %g, not NaN", path, bits_of(vals[j]), c[j]);
            else if (want == 0.0f)
                REQUIRE(c[j] == 0.0f, "path %d: value 0x%08x gave %g, not 0", path, bits_of(vals[j]), c[j]);
            else
                REQUIRE(bits_of(c[j]) == bits_of(want), "path %d: value 0x%08x rounded to 0x%08x, want 0x%08x", path,
                        bits_of(vals[j]), bits_of(c[j]), bits_of(want));
        }
    }
    /* and k_bf16_round_values (what travels between stages), bit for bit,
     * NaN payloads and signed zeros included */
    memcpy(c, vals, N * sizeof(float));
    k_bf16_round_values(c, N);
    for (int64_t j = 0; j < N; j++)
        REQUIRE(bits_of(c[j]) == (uint32_t)k_bf16_round(vals[j]) << 16,
                "k_bf16_round_values(0x%08x) = 0x%08x, want 0x%04x0000", bits_of(vals[j]), bits_of(c[j]),
                k_bf16_round(vals[j]));
    free(vals), free(b), free(c);
}
END_TEST

/* element (r, c) of op(X) stored with leading dimension ld */
static float at(const float *x, int t, int64_t ld, int64_t r, int64_t c)
{
    return t ? x[c * ld + r] : x[r * ld + c];
}

START_TEST(gemm_against_reference)
{
    /* sizes around the micro-tile (12 x 32), the blocks (96 rows, 128
     * columns, 512 k) and odd k */
    static const int64_t shapes[][3] = {{1, 1, 1},    {1, 33, 7},    {13, 1, 2},    {12, 32, 512}, {25, 70, 513},
                                        {97, 129, 3}, {100, 130, 1100}, {5, 300, 64}, {40, 17, 1025}};
    rng_seed(99);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 8; t++) {
            int ta = t & 1, tb = (t >> 1) & 1, beta = (t >> 2) & 1;
            int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            int64_t lda = ta ? m + 3 : k + 1, ldb = tb ? k + 2 : n + 5, ldc = n + 1;
            float *a = frand((ta ? k : m) * lda, -1, 1), *b = frand((tb ? n : k) * ldb, -2, 2);
            float *c = frand(m * ldc, -1, 1), *c0 = malloc((size_t)(m * ldc) * sizeof(float));
            ck_assert_ptr_nonnull(c0);
            memcpy(c0, c, (size_t)(m * ldc) * sizeof(float));
            k_gemm(K_BF16, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < n; j++) {
                    double ref = beta ? c0[i * ldc + j] : 0.0, mag = fabs(ref);
                    for (int64_t q = 0; q < k; q++) {
                        double p = (double)bf16_value(at(a, ta, lda, i, q)) * bf16_value(at(b, tb, ldb, q, j));
                        ref += p, mag += fabs(p);
                    }
                    double err = fabs(c[i * ldc + j] - ref), tol = (double)(k + 2) * 0x1p-24 * mag + 1e-30;
                    REQUIRE(err <= tol, "m %ld n %ld k %ld ta %d tb %d beta %d: C[%ld][%ld] = %.9g, reference %.9g",
                            (long)m, (long)n, (long)k, ta, tb, beta, (long)i, (long)j, c[i * ldc + j], ref);
                }
                /* the padding column past n is not written */
                REQUIRE(bits_of(c[i * ldc + n]) == bits_of(c0[i * ldc + n]), "C's padding column was written");
            }
            free(a), free(b), free(c), free(c0);
        }
}
END_TEST

START_TEST(gemm_row_alone_is_bitwise)
{
    /* rows of C depend on their row of A only: computed among 150 rows or
     * alone, the same bits (k over two blocks, n over two blocks) */
    int64_t m = 150, n = 200, k = 700;
    rng_seed(5);
    for (int ta = 0; ta < 2; ta++) {
        int64_t lda = ta ? m : k;
        float *a = frand(m * k, -1, 1), *b = frand(k * n, -1, 1), *c = fzero(m * n), *row = fzero(n);
        k_gemm(K_BF16, ta, 0, m, n, k, a, lda, b, n, 0, c, n);
        for (int64_t i = 0; i < m; i += 7) {
            k_gemm(K_BF16, ta, 0, 1, n, k, ta ? a + i : a + i * k, lda, b, n, 0, row, n);
            REQUIRE(memcmp(row, c + i * n, (size_t)n * sizeof(float)) == 0, "ta %d: row %ld alone differs", ta,
                    (long)i);
        }
        free(a), free(b), free(c), free(row);
    }
}
END_TEST

/* ---- fp32 products against a packed operand ----------------------------- */

/* op(B) (K, N) element (q, j) at b[j ls + q ks] */
static float b_at(const float *b, int64_t ls, int64_t ks, int64_t q, int64_t j)
{
    return b[j * ls + q * ks];
}

START_TEST(packed_is_fmaf_in_order)
{
    /* around the micro-tile (8 x 32), the A block (128 rows) and the k
     * block (512), for the three ways a B is laid out (its lanes as rows,
     * as columns, strided): every element's bits are fmaf's, k in order */
    static const int64_t shapes[][3] = {{1, 1, 1},    {13, 37, 300}, {8, 32, 512}, {130, 65, 513}, {3, 260, 300},
                                        {200, 33, 2}, {9, 31, 17},   {5, 40, 1030}};
    rng_seed(41);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 6; t++) {
            int lay = t % 3, beta = t / 3;
            int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], lda = k + 3, ldc = n + 1;
            int64_t ls = lay == 0 ? k + 2 : lay == 1 ? 1 : 2 * k, ks = lay == 0 ? 1 : lay == 1 ? n + 4 : 2;
            int64_t bsize = lay == 0 ? n * ls : lay == 1 ? k * ks : n * ls;
            float *a = frand(m * lda, -1, 1), *b = frand(bsize, -2, 2), *c = frand(m * ldc, -1, 1);
            float *c0 = malloc((size_t)(m * ldc) * sizeof(float)), *pk = fzero(k_pack_floats(n, k));
            ck_assert_ptr_nonnull(c0);
            memcpy(c0, c, (size_t)(m * ldc) * sizeof(float));
            k_pack_b(pk, b, ls, ks, n, k);
            k_gemm_packed(m, n, k, a, lda, pk, NULL, beta, c, ldc);
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < n; j++) {
                    float want = beta ? c0[i * ldc + j] : 0.0f;
                    for (int64_t q = 0; q < k; q++)
                        want = fmaf(a[i * lda + q], b_at(b, ls, ks, q, j), want);
                    REQUIRE(bits_of(c[i * ldc + j]) == bits_of(want),
                            "m %ld n %ld k %ld layout %d beta %d: C[%ld][%ld] = %.9g, fmaf in order %.9g", (long)m,
                            (long)n, (long)k, lay, beta, (long)i, (long)j, c[i * ldc + j], want);
                }
                REQUIRE(bits_of(c[i * ldc + n]) == bits_of(c0[i * ldc + n]), "C's padding column was written");
            }
            free(a), free(b), free(c), free(c0), free(pk);
        }
}
END_TEST

START_TEST(packed_row_alone_is_bitwise)
{
    /* a row of C depends on its row of A only: among 150 rows (two A
     * blocks) or alone, the same bits */
    int64_t m = 150, n = 200, k = 700;
    rng_seed(6);
    float *a = frand(m * k, -1, 1), *b = frand(n * k, -1, 1), *c = fzero(m * n), *row = fzero(n);
    float *pk = fzero(k_pack_floats(n, k));
    k_pack_b(pk, b, k, 1, n, k);
    k_gemm_packed(m, n, k, a, k, pk, NULL, 0, c, n);
    for (int64_t i = 0; i < m; i += 7) {
        k_gemm_packed(1, n, k, a + i * k, k, pk, NULL, 0, row, n);
        REQUIRE(memcmp(row, c + i * n, (size_t)n * sizeof(float)) == 0, "row %ld alone differs", (long)i);
    }
    free(a), free(b), free(c), free(row), free(pk);
}
END_TEST

START_TEST(packed_streamed_is_the_same)
{
    /* a copy of 2^20 floats or more, at a 64-byte boundary, is written with
     * streaming stores: the same floats as one written through the caches
     * (a buffer off that boundary), both layouts of B */
    int64_t n = 1040, k = 1030, ld = k + 3;
    ck_assert_int_ge(k_pack_floats(n, k), (int64_t)1 << 20);
    rng_seed(12);
    float *b = frand(n * ld, -1, 1);
    int64_t size = k_pack_floats(n, k);
    float *streamed = aligned_alloc(64, (size_t)(size + 16) * sizeof(float)), *block = fzero(size + 16);
    float *cached = block + ((uintptr_t)block % 64 ? 0 : 1); /* off a 64-byte boundary */
    ck_assert_ptr_nonnull(streamed);
    for (int lay = 0; lay < 2; lay++) {
        int64_t ls = lay == 0 ? ld : 1, ks = lay == 0 ? 1 : ld;
        memset(streamed, 0xff, (size_t)size * sizeof(float));
        k_pack_b(streamed, b, ls, ks, n, k);
        k_pack_b(cached, b, ls, ks, n, k);
        REQUIRE(memcmp(streamed, cached, (size_t)size * sizeof(float)) == 0, "layout %d: the streamed copy differs",
                lay);
    }
    free(b), free(streamed), free(block);
}
END_TEST

START_TEST(linear_packed)
{
    /* a linear from its packed weight: the forward from the bias (read in
     * place for the first block of k, then from the output for the second
     * block where in_f > 512), the input gradient from zero; both copies
     * packed into the one block k_linear_pack_floats sizes */
    int64_t n = 64, out_f = 260;
    ck_assert_int_gt(k_linear_pack_floats(n, 300, out_f), 0);
    ck_assert_int_eq(k_linear_pack_floats(257, 300, out_f), 0);
    ck_assert_int_eq(k_linear_pack_floats(n, 255, out_f), 0);
    ck_assert_int_gt(k_linear_pack_floats(n, 2048, 2048), 0);
    ck_assert_int_eq(k_linear_pack_floats(n, 2049, 2048), 0); /* over 2^22 elements: no copies */
    rng_seed(8);
    const int64_t ins[] = {300, 700};
    for (int c = 0; c < 2; c++) {
        int64_t in_f = ins[c];
        float *x = frand(n * in_f, -1, 1), *w = frand(out_f * in_f, -1, 1), *bias = frand(out_f, -1, 1);
        float *dy = frand(n * out_f, -1, 1), *y = frand(n * out_f, -1, 1), *dx = frand(n * in_f, -1, 1);
        float *pk = fzero(k_linear_pack_floats(n, in_f, out_f));
        k_linear_pack(pk, w, in_f, out_f, 0);
        k_linear_pack(pk, w, in_f, out_f, 1);
        k_linear_forward_packed(y, x, pk, bias, n, in_f, out_f); /* y, dx: garbage before, overwritten */
        k_linear_backward_input_packed(dx, dy, pk, n, in_f, out_f);
        for (int64_t i = 0; i < n; i += 5) {
            for (int64_t j = 0; j < out_f; j++) {
                float want = bias[j];
                for (int64_t q = 0; q < in_f; q++)
                    want = fmaf(x[i * in_f + q], w[j * in_f + q], want);
                REQUIRE(bits_of(y[i * out_f + j]) == bits_of(want), "in %ld: y[%ld][%ld] = %.9g, want %.9g",
                        (long)in_f, (long)i, (long)j, y[i * out_f + j], want);
            }
            for (int64_t j = 0; j < in_f; j++) {
                float want = 0.0f;
                for (int64_t q = 0; q < out_f; q++)
                    want = fmaf(dy[i * out_f + q], w[q * in_f + j], want);
                REQUIRE(bits_of(dx[i * in_f + j]) == bits_of(want), "in %ld: dx[%ld][%ld] = %.9g, want %.9g",
                        (long)in_f, (long)i, (long)j, dx[i * in_f + j], want);
            }
        }
        free(x), free(w), free(bias), free(dy), free(y), free(dx), free(pk);
    }
}
END_TEST

START_TEST(wgrad_is_fmaf_in_order)
{
    /* the weight gradient's product around its tile (8 x 32) and panels:
     * every element C plus its K products summed from 0 in row order
     * (fmaf), bit for bit; the scratch's size is what k_wgrad_floats says
     * (a guard after it stays untouched) */
    static const int64_t shapes[][3] = {{1, 1, 1}, {8, 32, 64}, {10, 10, 64}, {13, 37, 5},
                                        {64, 300, 17}, {1024, 33, 3}, {7, 70, 512}};
    rng_seed(43);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], sz = k_wgrad_floats(k, n);
        float *a = frand(k * m, -1, 1), *b = frand(k * n, -2, 2), *c = frand(m * n, -1, 1);
        float *c0 = malloc((size_t)(m * n) * sizeof(float)), *scratch = fzero(sz + 16);
        ck_assert_ptr_nonnull(c0);
        memcpy(c0, c, (size_t)(m * n) * sizeof(float));
        for (int g = 0; g < 16; g++)
            scratch[sz + g] = 7.0f;
        k_gemm_wgrad(m, n, k, a, b, c, scratch);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                float sum = 0.0f;
                for (int64_t q = 0; q < k; q++)
                    sum = fmaf(a[q * m + i], b[q * n + j], sum);
                float want = c0[i * n + j] + sum;
                REQUIRE(bits_of(c[i * n + j]) == bits_of(want), "m %ld n %ld k %ld: C[%ld][%ld] = %.9g, want %.9g",
                        (long)m, (long)n, (long)k, (long)i, (long)j, c[i * n + j], want);
            }
        for (int g = 0; g < 16; g++)
            REQUIRE(scratch[sz + g] == 7.0f, "m %ld n %ld k %ld: scratch written past k_wgrad_floats", (long)m,
                    (long)n, (long)k);
        free(a), free(b), free(c), free(c0), free(scratch);
    }
}
END_TEST

START_TEST(linear_wgrad)
{
    /* the size rule, and a linear's weight gradient through it: with its
     * scratch the own product where k_wgrad_supported(in_f) (and the bias's
     * column sums as before), two micro-batches accumulating in order,
     * else OpenBLAS's bits; without, OpenBLAS's, close to the own */
    ck_assert_int_gt(k_linear_wgrad_floats(64, 1024, 1024), 0);
    ck_assert_int_gt(k_linear_wgrad_floats(512, 512, 128), 0);
    ck_assert_int_eq(k_linear_wgrad_floats(513, 128, 128), 0);
    ck_assert_int_eq(k_linear_wgrad_floats(512, 513, 128), 0); /* the packed input over 2^18 floats */
    ck_assert_int_eq(k_linear_wgrad_floats(0, 128, 128), 0);
    /* 300 features in: the own product wherever OpenBLAS is not on its
     * AVX-512 kernels; 1024: on Zen 4 also (k_wgrad_supported) */
    static const int64_t shapes[][3] = {{48, 300, 70}, {40, 1024, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s][0], in_f = shapes[s][1], out_f = shapes[s][2];
        rng_seed(9);
        float *x = frand(2 * n * in_f, -1, 1), *dy = frand(2 * n * out_f, -1, 1);
        float *dw = fzero(out_f * in_f), *db = fzero(out_f), *dw2 = fzero(out_f * in_f), *db2 = fzero(out_f);
        float *scratch = fzero(k_linear_wgrad_floats(n, in_f, out_f));
        for (int mb = 0; mb < 2; mb++) {
            const float *dyb = dy + mb * n * out_f, *xb = x + mb * n * in_f;
            k_linear_backward_weight(dw, db, dyb, xb, n, in_f, out_f, K_FP32, scratch);
            k_linear_backward_weight(dw2, db2, dyb, xb, n, in_f, out_f, K_FP32, NULL);
        }
        for (int64_t o = 0; o < out_f; o++) {
            for (int64_t i = 0; i < in_f; i++) {
                float want = 0.0f;
                for (int mb = 0; mb < 2; mb++) {
                    float sum = 0.0f;
                    for (int64_t r = mb * n; r < (mb + 1) * n; r++)
                        sum = fmaf(dy[r * out_f + o], x[r * in_f + i], sum);
                    want += sum;
                }
                float got = dw[o * in_f + i], alt = dw2[o * in_f + i];
                if (k_wgrad_supported(in_f))
                    REQUIRE(bits_of(got) == bits_of(want), "dw[%ld][%ld] = %.9g, want %.9g", (long)o, (long)i, got,
                            want);
                else
                    REQUIRE(bits_of(got) == bits_of(alt), "dw[%ld][%ld] = %.9g with the scratch, %.9g without",
                            (long)o, (long)i, got, alt);
                REQUIRE(fabsf(dw2[o * in_f + i] - want) <= 1e-5f * (1.0f + fabsf(want)),
                        "OpenBLAS's dw[%ld][%ld] = %.9g, the own %.9g", (long)o, (long)i, dw2[o * in_f + i], want);
            }
            REQUIRE(bits_of(db[o]) == bits_of(db2[o]), "db[%ld] differs with the scratch", (long)o);
        }
        free(x), free(dy), free(dw), free(db), free(dw2), free(db2), free(scratch);
    }
}
END_TEST

static void round_all(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = bf16_value(x[i]);
}

static void require_close(const float *got, const float *want, int64_t n, double tol, const char *what)
{
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++)
        REQUIRE(fabs(got[i] - want[i]) <= tol * scale, "%s: element %ld: bf16 %.9g, fp32 %.9g", what, (long)i,
                got[i], want[i]);
}

START_TEST(linear_and_conv_in_bf16)
{
    /* on operands that are bf16 already, bf16 and fp32 differ only in the
     * order of fp32 sums */
    int64_t n = 37, in = 300, out = 45;
    rng_seed(11);
    float *x = frand(n * in, -1, 1), *w = frand(out * in, -0.1f, 0.1f), *b = frand(out, -1, 1);
    float *g = frand(n * out, -1, 1);
    round_all(x, n * in), round_all(w, out * in), round_all(g, n * out);
    float *y16 = fnan(n * out), *y32 = fnan(n * out), *d16 = fnan(n * in), *d32 = fnan(n * in); /* overwritten */
    float *w16 = fzero(out * in), *w32 = fzero(out * in), *b16 = fzero(out), *b32 = fzero(out);
    k_linear_forward(y16, x, w, b, n, in, out, K_BF16, NULL);
    k_linear_forward(y32, x, w, b, n, in, out, K_FP32, NULL);
    require_close(y16, y32, n * out, 1e-5, "linear forward");
    k_linear_backward_input(d16, g, w, n, in, out, K_BF16);
    k_linear_backward_input(d32, g, w, n, in, out, K_FP32);
    require_close(d16, d32, n * in, 1e-5, "linear backward input");
    k_linear_backward_weight(w16, b16, g, x, n, in, out, K_BF16, NULL);
    k_linear_backward_weight(w32, b32, g, x, n, in, out, K_FP32, NULL);
    require_close(w16, w32, out * in, 1e-5, "linear backward weight");
    REQUIRE(memcmp(b16, b32, (size_t)out * sizeof(float)) == 0, "the bias gradient is not a product: same bits");
    /* and on fp32 operands, bf16's rounding shows (the products differ) */
    float *xr = frand(n * in, -1, 1), *wr = frand(out * in, -1, 1);
    k_linear_forward(y16, xr, wr, NULL, n, in, out, K_BF16, NULL);
    k_linear_forward(y32, xr, wr, NULL, n, in, out, K_FP32, NULL);
    REQUIRE(memcmp(y16, y32, (size_t)(n * out) * sizeof(float)) != 0, "bf16 products equal fp32's on fp32 operands");
    require_close(y16, y32, n * out, 2e-2, "linear forward on fp32 operands");

    KConv cg = {3, 9, 8, 5, 5, 4, 3, 3, 2, 2, 1, 1, K_BF16}, cf = cg;
    cf.prec = K_FP32;
    int64_t B = 2, isz = 3 * 9 * 8, osz = 5 * 5 * 4, wsz = 5 * 3 * 3 * 3;
    float *cx = frand(B * isz, -1, 1), *cw = frand(wsz, -0.5f, 0.5f), *cb = frand(5, -1, 1), *cd = frand(B * osz, -1, 1);
    round_all(cx, B * isz), round_all(cw, wsz), round_all(cd, B * osz);
    float *scratch = fzero(k_conv2d_scratch(&cg));
    float *o16 = fzero(B * osz), *o32 = fzero(B * osz), *i16 = fzero(B * isz), *i32 = fzero(B * isz);
    float *cw16 = fzero(wsz), *cw32 = fzero(wsz);
    k_conv2d_forward(o16, cx, cw, cb, B, &cg, scratch);
    k_conv2d_forward(o32, cx, cw, cb, B, &cf, scratch);
    require_close(o16, o32, B * osz, 1e-5, "conv2d forward");
    k_conv2d_backward_input(i16, cd, cw, B, &cg, scratch);
    k_conv2d_backward_input(i32, cd, cw, B, &cf, scratch);
    require_close(i16, i32, B * isz, 1e-5, "conv2d backward input");
    k_conv2d_backward_weight(cw16, NULL, cd, cx, B, &cg, scratch);
    k_conv2d_backward_weight(cw32, NULL, cd, cx, B, &cf, scratch);
    require_close(cw16, cw32, wsz, 1e-5, "conv2d backward weight");
    free(x), free(w), free(b), free(g), free(y16), free(y32), free(d16), free(d32), free(w16), free(w32);
    free(b16), free(b32), free(xr), free(wr), free(cx), free(cw), free(cb), free(cd), free(scratch);
    free(o16), free(o32), free(i16), free(i32), free(cw16), free(cw32);
}
END_TEST

static int run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

int main(void)
{
    openblas_set_num_threads(1);
    Suite *s = suite_create("bf16 rounding");
    TCase *c = tcase_create("round");
    tcase_add_test(c, round_cases);
    suite_add_tcase(s, c);
    int failed = run(s);
    if (k_packed_supported()) {
        s = suite_create("fp32 packed");
        c = tcase_create("packed");
        tcase_set_timeout(c, 60);
        tcase_add_test(c, packed_is_fmaf_in_order);
        tcase_add_test(c, packed_row_alone_is_bitwise);
        tcase_add_test(c, packed_streamed_is_the_same);
        tcase_add_test(c, linear_packed);
        tcase_add_test(c, wgrad_is_fmaf_in_order);
        tcase_add_test(c, linear_wgrad);
        suite_add_tcase(s, c);
        failed += run(s);
    } else {
        printf("no AVX-512F on this CPU: the packed fp32 product is not used, its cases not run\n");
    }
    if (!k_bf16_supported()) {
        printf("skipped: no AVX512-BF16 on this CPU (the bf16 GEMM cases need it)\n");
        return failed ? EXIT_FAILURE : 77;
    }
    s = suite_create("bf16 gemm");
    c = tcase_create("gemm");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, gemm_rounds_like_k_bf16_round);
    tcase_add_test(c, gemm_against_reference);
    tcase_add_test(c, gemm_row_alone_is_bitwise);
    tcase_add_test(c, linear_and_conv_in_bf16);
    suite_add_tcase(s, c);
    failed += run(s);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
