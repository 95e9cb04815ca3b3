/* tests/test_kernels.c: the CPU reference kernels (kernels/k_cpu.h).
 *
 * Every backward is checked against central finite differences of the
 * forward (L = sum(out * g) for a fixed random g, accumulated in double);
 * forwards are checked against naive double-precision references written
 * from PyTorch's definitions; weight gradients must accumulate; split and
 * unsplit backwards must agree bit for bit; Philox against the Random123
 * known answers. Inputs come from a fixed LCG, so every run is the same.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_cpu.h"

#define K_PI 3.14159265358979323846 /* M_PI is not ISO C */

/* ---- helpers ------------------------------------------------------------------ */

#include "ktestutil.h"

static float *fcopy(const float *a, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    memcpy(p, a, (size_t)n * sizeof(float));
    return p;
}

/* |a - ref| <= rtol * max|ref| over the array, elementwise, and no NaN */
static void check_close(const char *what, const float *a, const double *ref, int64_t n, double rtol)
{
    double mx = 0.0;
    for (int64_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++)
        REQUIRE(isfinite(a[i]) && fabs(a[i] - ref[i]) <= rtol * fmax(mx, 1e-30) + 1e-30,
                      "%s[%lld]: got %.9g, want %.9g (max %.3g)", what, (long long)i, a[i], ref[i], mx);
}

static void check_scaled(const char *what, const float *a, const float *base, float k, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        REQUIRE(fabsf(a[i] - k * base[i]) <= 1e-6f * fabsf(k * base[i]) + 1e-30f,
                      "%s[%lld]: %.9g is not %g x %.9g", what, (long long)i, a[i], k, base[i]);
}

/* A forward pass under test: fwd(ctx) recomputes out (nout) from whatever
 * inputs ctx points at; L = sum(out * g). */
typedef struct Fd {
    void (*fwd)(void *ctx);
    void *ctx;
    const float *out;
    const float *g;
    int64_t nout;
} Fd;

static double fd_loss(const Fd *f)
{
    f->fwd(f->ctx);
    double s = 0.0;
    for (int64_t i = 0; i < f->nout; i++)
        s += (double)f->out[i] * f->g[i];
    return s;
}

/* Central differences of L in each x[i] against the analytic gradient.
 * The tolerance has a relative part and an absolute part scaled by the
 * largest analytic entry, since fp32 forwards make small FD entries noisy. */
static void check_fd(const char *what, const Fd *f, float *x, int64_t n, const float *ana, float eps, double rtol)
{
    double amax = 0.0;
    for (int64_t i = 0; i < n; i++) {
        REQUIRE(isfinite(ana[i]), "%s[%lld]: analytic gradient is %g", what, (long long)i, ana[i]);
        amax = fmax(amax, fabs(ana[i]));
    }
    for (int64_t i = 0; i < n; i++) {
        float s = x[i];
        x[i] = s + eps;
        double xp = x[i], lp = fd_loss(f);
        x[i] = s - eps;
        double xm = x[i], lm = fd_loss(f);
        x[i] = s;
        double fd = (lp - lm) / (xp - xm);
        double err = fabs(fd - ana[i]);
        REQUIRE(err <= rtol * fmax(fabs(fd), fabs(ana[i])) + 2e-3 * fmax(amax, 1e-2),
                      "%s[%lld]: analytic %.7g, finite difference %.7g", what, (long long)i, ana[i], fd);
    }
    f->fwd(f->ctx); /* leave the outputs as the unperturbed forward made them */
}

/* ---- linear ----------------------------------------------------------------------- */

typedef struct LinCtx {
    float *out, *x, *w, *b;
    int64_t n, in, outf;
} LinCtx;

static void lin_fwd(void *p)
{
    LinCtx *c = p;
    k_linear_forward(c->out, c->x, c->w, c->b, c->n, c->in, c->outf, K_FP32, NULL);
}

START_TEST(linear_gradients)
{
    rng_seed(1);
    int64_t n = 5, in = 7, of = 4;
    LinCtx c = {fnan(n * of), frand(n * in, -1, 1), frand(of * in, -1, 1), frand(of, -1, 1), n, in, of};
    float *g = frand(n * of, -1, 1), *din = fnan(n * in), *dw = fzero(of * in), *db = fzero(of);
    lin_fwd(&c);
    k_linear_backward_input(din, g, c.w, n, in, of, K_FP32);
    k_linear_backward_weight(dw, db, g, c.x, n, in, of, K_FP32, NULL);
    Fd f = {lin_fwd, &c, c.out, g, n * of};
    check_fd("linear din", &f, c.x, n * in, din, 1e-2f, 1e-2);
    check_fd("linear dw", &f, c.w, of * in, dw, 1e-2f, 1e-2);
    check_fd("linear db", &f, c.b, of, db, 1e-2f, 1e-2);
    /* accumulation: a second call adds the same again */
    float *dw1 = fcopy(dw, of * in), *db1 = fcopy(db, of);
    k_linear_backward_weight(dw, db, g, c.x, n, in, of, K_FP32, NULL);
    check_scaled("linear dw x2", dw, dw1, 2.0f, of * in);
    check_scaled("linear db x2", db, db1, 2.0f, of);
    /* no bias: the forward without b, the backward with db NULL */
    float *nb = fnan(n * of), *dw2 = fzero(of * in);
    k_linear_forward(nb, c.x, c.w, NULL, n, in, of, K_FP32, NULL);
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < of; o++)
            ck_assert_float_eq_tol(nb[i * of + o], c.out[i * of + o] - c.b[o], 1e-5f);
    k_linear_backward_weight(dw2, NULL, g, c.x, n, in, of, K_FP32, NULL);
    ck_assert_mem_eq(dw2, dw1, (size_t)(of * in) * sizeof(float));
    free(c.out), free(c.x), free(c.w), free(c.b), free(g), free(din), free(dw), free(db), free(dw1), free(db1);
    free(nb), free(dw2);
}
END_TEST

/* non-square sizes, wider than one block of bias columns, against doubles */
START_TEST(linear_reference)
{
    rng_seed(2);
    int64_t n = 133, in = 70, of = 300; /* 133 rows: three blocks of the bias sum */
    float *x = frand(n * in, -1, 1), *w = frand(of * in, -1, 1), *b = frand(of, -1, 1), *g = frand(n * of, -1, 1);
    float *out = fnan(n * of), *din = fnan(n * in), *dw = fzero(of * in), *db = fzero(of);
    double *ro = calloc((size_t)(n * of), sizeof(double)), *rdi = calloc((size_t)(n * in), sizeof(double));
    double *rdw = calloc((size_t)(of * in), sizeof(double)), *rdb = calloc((size_t)of, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < of; o++) {
            double s = b[o];
            for (int64_t k = 0; k < in; k++)
                s += (double)x[i * in + k] * w[o * in + k];
            ro[i * of + o] = s;
            rdb[o] += g[i * of + o];
            for (int64_t k = 0; k < in; k++) {
                rdi[i * in + k] += (double)g[i * of + o] * w[o * in + k];
                rdw[o * in + k] += (double)g[i * of + o] * x[i * in + k];
            }
        }
    k_linear_forward(out, x, w, b, n, in, of, K_FP32, NULL);
    k_linear_backward_input(din, g, w, n, in, of, K_FP32);
    k_linear_backward_weight(dw, db, g, x, n, in, of, K_FP32, NULL);
    check_close("linear out", out, ro, n * of, 1e-5);
    check_close("linear din", din, rdi, n * in, 1e-5);
    check_close("linear dw", dw, rdw, of * in, 1e-5);
    check_close("linear db", db, rdb, of, 1e-5);
    free(x), free(w), free(b), free(g), free(out), free(din), free(dw), free(db), free(ro), free(rdi), free(rdw);
    free(rdb);
}
END_TEST

/* A short product taken the other way round (out^T = w . in^T, then
 * transposed) gives the same bits as the direct one under the OpenBLAS
 * kernels the runtime takes it with (k_gemm_short_swaps: its AVX-512 ones),
 * with and without a bias, over sizes off the 16 x 16 tiles; under other
 * kernels (OPENBLAS_CORETYPE=Haswell, say) the runtime never swaps and the
 * two agree within 1e-6 a feature only. k_linear_scratch asks for it only for few
 * rows against a wide input. */
START_TEST(linear_short_swapped)
{
    static const int64_t shapes[][3] = {{64, 1024, 1024}, {7, 513, 33}, {100, 600, 520}, {1, 512, 10}, {128, 530, 17}};
    rng_seed(9);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s][0], in = shapes[s][1], of = shapes[s][2];
        float *x = frand(n * in, -1, 1), *w = frand(of * in, -1, 1), *b = frand(of, -1, 1);
        float *direct = fnan(n * of), *swapped = fnan(n * of), *scratch = fnan(n * of);
        for (int bias = 0; bias < 2; bias++) {
            k_linear_forward(direct, x, w, bias ? b : NULL, n, in, of, K_FP32, NULL);
            k_linear_forward_swapped(swapped, x, w, bias ? b : NULL, n, in, of, scratch);
            if (!k_gemm_short_swaps()) {
                for (int64_t i = 0; i < n * of; i++)
                    REQUIRE(fabs(swapped[i] - direct[i]) <= 1e-6 * (double)in, /* operands in [-1, 1] */
                            "%lld x %lld -> %lld, bias %d: element %lld: direct %.9g, swapped %.9g", (long long)n,
                            (long long)in, (long long)of, bias, (long long)i, direct[i], swapped[i]);
                continue;
            }
            for (int64_t i = 0; i < n * of; i++)
                REQUIRE(memcmp(&direct[i], &swapped[i], sizeof(float)) == 0,
                        "%lld x %lld -> %lld, bias %d: element %lld: direct %.9g, swapped %.9g", (long long)n,
                        (long long)in, (long long)of, bias, (long long)i, direct[i], swapped[i]);
        }
        free(x), free(w), free(b), free(direct), free(swapped), free(scratch);
    }
    ck_assert_int_eq(k_linear_scratch(64, 1024, 1024), 64 * 1024);
    ck_assert_int_eq(k_linear_scratch(128, 1024, 1024), 128 * 1024);
    ck_assert_int_eq(k_linear_scratch(128, 1024, 100), 0); /* measured slower */
    ck_assert_int_eq(k_linear_scratch(256, 1024, 1024), 0);
    ck_assert_int_eq(k_linear_scratch(64, 128, 1024), 0);
}
END_TEST

/* ---- conv2d ------------------------------------------------------------------------ */

static KConv conv_geom(int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw)
{
    KConv g = {c, h, w, oc, (h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1, kh, kw, sh, sw, ph, pw, K_FP32};
    return g;
}

static const KConv CONVS[] = {
    {2, 6, 7, 3, 0, 0, 3, 2, 2, 1, 1, 0, K_FP32}, /* non-square kernel, stride 2 x 1, padding rows only */
    {1, 7, 6, 2, 0, 0, 2, 3, 1, 3, 0, 1, K_FP32}, /* stride 3 across, padding columns only */
    {3, 5, 5, 2, 0, 0, 1, 1, 1, 1, 0, 0, K_FP32}, /* 1x1: the direct path without im2col */
    {2, 4, 5, 2, 0, 0, 3, 3, 2, 2, 2, 2, K_FP32}, /* padding as wide as the kernel allows and more */
    {1, 3, 3, 1, 0, 0, 3, 3, 1, 1, 0, 0, K_FP32}, /* one output */
    {1, 20, 20, 2, 0, 0, 3, 3, 1, 1, 1, 1, K_FP32}, /* 400 positions: more than one block of the bias sum */
    {2, 6, 9, 3, 0, 0, 5, 5, 1, 1, 2, 2, K_FP32},   /* "same" 5x5: im2col's one-copy path, two border columns */
    {3, 7, 5, 2, 0, 0, 3, 5, 1, 1, 1, 2, K_FP32},   /* "same", a kernel wider than high */
    {2, 5, 6, 2, 0, 0, 3, 3, 1, 1, 2, 1, K_FP32},   /* same width, taller output: more zero rows */
};
#define NCONVS (int)(sizeof CONVS / sizeof CONVS[0])

static KConv conv_case(int i)
{
    KConv t = CONVS[i];
    return conv_geom(t.c, t.h, t.w, t.oc, t.kh, t.kw, t.sh, t.sw, t.ph, t.pw);
}

typedef struct ConvCtx {
    float *out, *x, *w, *b, *scratch;
    int64_t B;
    KConv g;
} ConvCtx;

static void conv_fwd(void *p)
{
    ConvCtx *c = p;
    k_conv2d_forward(c->out, c->x, c->w, c->b, c->B, &c->g, c->scratch);
}

/* the definition: a direct convolution with zero padding, in double */
static void conv_naive(double *out, const float *x, const float *w, const float *b, int64_t B, const KConv *g)
{
    for (int64_t s = 0; s < B; s++)
        for (int64_t o = 0; o < g->oc; o++)
            for (int64_t oy = 0; oy < g->oh; oy++)
                for (int64_t ox = 0; ox < g->ow; ox++) {
                    double acc = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < g->c; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t iy = oy * g->sh - g->ph + i, ix = ox * g->sw - g->pw + j;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                    continue;
                                acc += (double)x[((s * g->c + c) * g->h + iy) * g->w + ix] *
                                       w[((o * g->c + c) * g->kh + i) * g->kw + j];
                            }
                    out[((s * g->oc + o) * g->oh + oy) * g->ow + ox] = acc;
                }
}

START_TEST(conv2d_matches_direct)
{
    rng_seed(100 + (uint32_t)_i);
    KConv g = conv_case(_i);
    int64_t B = 2, nx = B * g.c * g.h * g.w, nw = g.oc * g.c * g.kh * g.kw, ny = B * g.oc * g.oh * g.ow;
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *b = frand(g.oc, -1, 1), *y = fnan(ny);
    float *scratch = fnan(k_conv2d_scratch(&g));
    double *ref = malloc((size_t)ny * sizeof(double));
    conv_naive(ref, x, w, b, B, &g);
    k_conv2d_forward(y, x, w, b, B, &g, scratch);
    check_close("conv out", y, ref, ny, 1e-5);
    conv_naive(ref, x, w, NULL, B, &g);
    k_conv2d_forward(y, x, w, NULL, B, &g, scratch);
    check_close("conv out (no bias)", y, ref, ny, 1e-5);
    free(x), free(w), free(b), free(y), free(scratch), free(ref);
}
END_TEST

START_TEST(conv2d_gradients)
{
    rng_seed(200 + (uint32_t)_i);
    KConv g = conv_case(_i);
    int64_t B = 2, nx = B * g.c * g.h * g.w, nw = g.oc * g.c * g.kh * g.kw, ny = B * g.oc * g.oh * g.ow;
    ConvCtx c = {fnan(ny), frand(nx, -1, 1), frand(nw, -1, 1), frand(g.oc, -1, 1), fnan(k_conv2d_scratch(&g)), B, g};
    float *gy = frand(ny, -1, 1), *din = fnan(nx), *dw = fzero(nw), *db = fzero(g.oc);
    conv_fwd(&c);
    k_conv2d_backward_input(din, gy, c.w, B, &g, c.scratch);
    k_conv2d_backward_weight(dw, db, gy, c.x, B, &g, c.scratch);
    Fd f = {conv_fwd, &c, c.out, gy, ny};
    check_fd("conv din", &f, c.x, nx, din, 1e-2f, 1e-2);
    check_fd("conv dw", &f, c.w, nw, dw, 1e-2f, 1e-2);
    check_fd("conv db", &f, c.b, g.oc, db, 1e-2f, 1e-2);
    float *dw1 = fcopy(dw, nw), *db1 = fcopy(db, g.oc);
    k_conv2d_backward_weight(dw, db, gy, c.x, B, &g, c.scratch);
    check_scaled("conv dw x2", dw, dw1, 2.0f, nw);
    check_scaled("conv db x2", db, db1, 2.0f, g.oc);
    free(c.out), free(c.x), free(c.w), free(c.b), free(c.scratch), free(gy), free(din), free(dw), free(db);
    free(dw1), free(db1);
}
END_TEST

/* A full backward is input then weight; zero-bubble schedules may run the
 * weight half much later, after other layers reused the scratch. Either way
 * the bits must be the same. */
START_TEST(split_backward_is_bitwise)
{
    rng_seed(300);
    KConv g = conv_case(0);
    int64_t B = 3, nx = B * g.c * g.h * g.w, nw = g.oc * g.c * g.kh * g.kw, ny = B * g.oc * g.oh * g.ow;
    int64_t ns = k_conv2d_scratch(&g);
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *gy = frand(ny, -1, 1), *s = fnan(ns);
    float *din1 = fnan(nx), *din2 = fnan(nx), *dw1 = frand(nw, -1, 1), *dw2 = fcopy(dw1, nw);
    float *db1 = fzero(g.oc), *db2 = fzero(g.oc);
    k_conv2d_backward_input(din1, gy, w, B, &g, s);
    k_conv2d_backward_weight(dw1, db1, gy, x, B, &g, s);
    for (int64_t i = 0; i < ns; i++)
        s[i] = rnd(-9, 9);
    k_conv2d_backward_weight(dw2, db2, gy, x, B, &g, s);
    for (int64_t i = 0; i < ns; i++)
        s[i] = NAN;
    k_conv2d_backward_input(din2, gy, w, B, &g, s);
    ck_assert_mem_eq(din1, din2, (size_t)nx * sizeof(float));
    ck_assert_mem_eq(dw1, dw2, (size_t)nw * sizeof(float));
    ck_assert_mem_eq(db1, db2, (size_t)g.oc * sizeof(float));

    /* linear and layernorm, the same way; and a repeat gives the same bits */
    int64_t n = 9, in = 11, of = 6;
    float *lx = frand(n * in, -1, 1), *lw = frand(of * in, -1, 1), *lg = frand(n * of, -1, 1);
    float *ld1 = fnan(n * in), *ld2 = fnan(n * in), *lw1 = fzero(of * in), *lw2 = fzero(of * in);
    float *lb1 = fzero(of), *lb2 = fzero(of);
    k_linear_backward_input(ld1, lg, lw, n, in, of, K_FP32);
    k_linear_backward_weight(lw1, lb1, lg, lx, n, in, of, K_FP32, NULL);
    k_linear_backward_weight(lw2, lb2, lg, lx, n, in, of, K_FP32, NULL);
    k_linear_backward_input(ld2, lg, lw, n, in, of, K_FP32);
    ck_assert_mem_eq(ld1, ld2, (size_t)(n * in) * sizeof(float));
    ck_assert_mem_eq(lw1, lw2, (size_t)(of * in) * sizeof(float));
    ck_assert_mem_eq(lb1, lb2, (size_t)of * sizeof(float));

    float *nw_ = frand(in, 0.5f, 1.5f), *nb = frand(in, -1, 1), *ny_ = fnan(n * in), *mean = fnan(n), *rstd = fnan(n);
    float *ng = frand(n * in, -1, 1), *nd1 = fnan(n * in), *nd2 = fnan(n * in);
    float *nw1 = fzero(in), *nw2 = fzero(in), *nb1 = fzero(in), *nb2 = fzero(in);
    k_layernorm_forward(ny_, mean, rstd, lx, nw_, nb, n, in, 1e-5f);
    k_layernorm_backward_input(nd1, ng, lx, nw_, mean, rstd, n, in);
    k_layernorm_backward_weight(nw1, nb1, ng, lx, mean, rstd, n, in);
    k_layernorm_backward_weight(nw2, nb2, ng, lx, mean, rstd, n, in);
    k_layernorm_backward_input(nd2, ng, lx, nw_, mean, rstd, n, in);
    ck_assert_mem_eq(nd1, nd2, (size_t)(n * in) * sizeof(float));
    ck_assert_mem_eq(nw1, nw2, (size_t)in * sizeof(float));
    ck_assert_mem_eq(nb1, nb2, (size_t)in * sizeof(float));

    free(x), free(w), free(gy), free(s), free(din1), free(din2), free(dw1), free(dw2), free(db1), free(db2);
    free(lx), free(lw), free(lg), free(ld1), free(ld2), free(lw1), free(lw2), free(lb1), free(lb2);
    free(nw_), free(nb), free(ny_), free(mean), free(rstd), free(ng), free(nd1), free(nd2);
    free(nw1), free(nw2), free(nb1), free(nb2);
}
END_TEST

/* ---- pooling ---------------------------------------------------------------------- */

static KPool pool_geom(int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                       int64_t pw)
{
    KPool g = {c, h, w, (h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1, kh, kw, sh, sw, ph, pw};
    return g;
}

typedef struct PoolCtx {
    float *out, *x;
    int32_t *idx;
    int64_t B;
    KPool g;
    int64_t oh, ow; /* adaptive */
} PoolCtx;

static void maxpool_fwd(void *p)
{
    PoolCtx *c = p;
    k_maxpool2d_forward(c->out, c->idx, c->x, c->B, &c->g);
}

static void avgpool_fwd(void *p)
{
    PoolCtx *c = p;
    k_avgpool2d_forward(c->out, c->x, c->B, &c->g);
}

static void adaptive_fwd(void *p)
{
    PoolCtx *c = p;
    k_adaptive_avgpool2d_forward(c->out, c->x, c->B, c->g.c, c->g.h, c->g.w, c->oh, c->ow);
}

/* distinct values at least 0.05 apart, shuffled: no ties within any window,
 * so a finite difference of 1e-3 never changes which element wins */
static float *distinct(int64_t n)
{
    float *p = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = -1.0f + 0.05f * (float)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rnd(0, 1) * (float)(i + 1));
        j = j > i ? i : j;
        float t = p[i];
        p[i] = p[j], p[j] = t;
    }
    return p;
}

START_TEST(maxpool_gradients_and_padding)
{
    rng_seed(400);
    /* overlapping windows (stride < kernel) and padding on both axes */
    KPool g = pool_geom(2, 5, 6, 3, 2, 2, 1, 1, 1);
    int64_t B = 2, nx = B * g.c * g.h * g.w, ny = B * g.c * g.oh * g.ow;
    PoolCtx c = {fnan(ny), distinct(nx), malloc((size_t)ny * sizeof(int32_t)), B, g, 0, 0};
    /* all negative: a max of the zero padding would show */
    for (int64_t i = 0; i < nx; i++)
        c.x[i] -= 10.0f;
    maxpool_fwd(&c);
    for (int64_t pl = 0; pl < B * g.c; pl++)
        for (int64_t oy = 0; oy < g.oh; oy++)
            for (int64_t ox = 0; ox < g.ow; ox++) {
                double best = -INFINITY;
                int64_t bi = -1;
                for (int64_t i = 0; i < g.kh; i++)
                    for (int64_t j = 0; j < g.kw; j++) {
                        int64_t iy = oy * g.sh - g.ph + i, ix = ox * g.sw - g.pw + j;
                        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
                            continue;
                        if (c.x[pl * g.h * g.w + iy * g.w + ix] > best)
                            best = c.x[pl * g.h * g.w + iy * g.w + ix], bi = iy * g.w + ix;
                    }
                int64_t o = pl * g.oh * g.ow + oy * g.ow + ox;
                ck_assert_float_eq(c.out[o], (float)best);
                ck_assert_int_eq(c.idx[o], bi);
            }
    float *gy = frand(ny, -1, 1), *din = fnan(nx);
    k_maxpool2d_backward(din, gy, c.idx, B, &g);
    Fd f = {maxpool_fwd, &c, c.out, gy, ny};
    check_fd("maxpool din", &f, c.x, nx, din, 1e-3f, 1e-2);
    free(c.out), free(c.x), free(c.idx), free(gy), free(din);
}
END_TEST

START_TEST(maxpool_ties_pick_the_first)
{
    /* one 4x4 plane of equal values: each window's first element in
     * row-major order wins, and padding (-inf) never does */
    float x[16], y[9], din[16], dy[9];
    int32_t idx[9];
    for (int i = 0; i < 16; i++)
        x[i] = -3.0f;
    KPool g = pool_geom(1, 4, 4, 2, 2, 2, 2, 0, 0);
    k_maxpool2d_forward(y, idx, x, 1, &g);
    const int32_t want[4] = {0, 2, 8, 10};
    for (int o = 0; o < 4; o++) {
        ck_assert_int_eq(idx[o], want[o]);
        ck_assert_float_eq(y[o], -3.0f);
    }
    /* padded 3x3 windows, stride 2: windows start at (-1, -1), (-1, 1), ... */
    g = pool_geom(1, 4, 4, 3, 3, 2, 2, 1, 1);
    ck_assert_int_eq(g.oh, 2);
    k_maxpool2d_forward(y, idx, x, 1, &g);
    const int32_t want2[4] = {0, 1, 4, 5};
    for (int o = 0; o < 4; o++)
        ck_assert_int_eq(idx[o], want2[o]);
    /* a tie across two windows: the shared element gets both gradients */
    for (int o = 0; o < 4; o++)
        dy[o] = (float)(o + 1);
    k_maxpool2d_backward(din, dy, idx, 1, &g);
    ck_assert_float_eq(din[0], 1.0f);
    ck_assert_float_eq(din[1], 2.0f);
    ck_assert_float_eq(din[4], 3.0f);
    ck_assert_float_eq(din[5], 4.0f);
    /* overlapping windows with the same winner add up */
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    x[5] = 100.0f;
    g = pool_geom(1, 4, 4, 3, 3, 1, 1, 1, 1); /* 4x4 output */
    float y16[16], dy16[16];
    int32_t idx16[16];
    k_maxpool2d_forward(y16, idx16, x, 1, &g);
    for (int o = 0; o < 16; o++)
        dy16[o] = 1.0f;
    k_maxpool2d_backward(din, dy16, idx16, 1, &g);
    ck_assert_float_eq(din[5], 9.0f); /* (1,1) wins every window that covers it */
    /* all -inf: the output is -inf, the index a real element */
    for (int i = 0; i < 16; i++)
        x[i] = -INFINITY;
    g = pool_geom(1, 4, 4, 3, 3, 2, 2, 1, 1);
    k_maxpool2d_forward(y, idx, x, 1, &g);
    for (int o = 0; o < 4; o++) {
        ck_assert(isinf(y[o]) && y[o] < 0);
        ck_assert_int_eq(idx[o], want2[o]);
    }
}
END_TEST

/* The window rule written out once more, element by element in row-major
 * order: greater, or NaN, replaces the running maximum. */
static void maxpool_rule(float *y, int32_t *idx, const float *x, int64_t B, const KPool *g)
{
    for (int64_t pl = 0; pl < B * g->c; pl++)
        for (int64_t oy = 0; oy < g->oh; oy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                const float *p = x + pl * g->h * g->w;
                int64_t best = -1;
                for (int64_t iy = oy * g->sh - g->ph; iy < oy * g->sh - g->ph + g->kh; iy++)
                    for (int64_t ix = ox * g->sw - g->pw; ix < ox * g->sw - g->pw + g->kw; ix++) {
                        if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                            continue;
                        float v = p[iy * g->w + ix];
                        if (best < 0 || v > p[best] || isnan(v))
                            best = iy * g->w + ix;
                    }
                y[(pl * g->oh + oy) * g->ow + ox] = p[best];
                idx[(pl * g->oh + oy) * g->ow + ox] = (int32_t)best;
            }
}

START_TEST(maxpool_matches_the_window_rule)
{
    /* few distinct values (ties in most windows), some NaNs and -infs; the
     * even 2x2 stride-2 planes take the kernel's two-step path, the others
     * its general loop; planes wider than its stack buffer too */
    rng_seed(77);
    KPool gs[] = {pool_geom(8, 28, 28, 2, 2, 2, 2, 0, 0),  pool_geom(3, 14, 6, 2, 2, 2, 2, 0, 0),
                  pool_geom(2, 4, 1100, 2, 2, 2, 2, 0, 0), pool_geom(2, 4, 1000, 2, 2, 2, 2, 0, 0),
                  pool_geom(3, 7, 9, 2, 2, 2, 2, 0, 0),
                  pool_geom(2, 9, 9, 3, 3, 2, 2, 1, 1),    pool_geom(2, 8, 8, 2, 3, 2, 1, 0, 1)};
    for (size_t gi = 0; gi < sizeof gs / sizeof gs[0]; gi++) {
        KPool *g = &gs[gi];
        int64_t B = 3, nx = B * g->c * g->h * g->w, ny = B * g->c * g->oh * g->ow;
        float *x = malloc((size_t)nx * sizeof *x), *y = malloc((size_t)ny * sizeof *y), *yr = malloc((size_t)ny * sizeof *yr);
        int32_t *idx = malloc((size_t)ny * sizeof *idx), *ir = malloc((size_t)ny * sizeof *ir);
        for (int64_t i = 0; i < nx; i++) {
            float u = rnd(0, 1);
            x[i] = u < 0.02f ? NAN : u < 0.04f ? -INFINITY : (float)(int)(rnd(0, 1) * 4.0f);
        }
        k_maxpool2d_forward(y, idx, x, B, g);
        maxpool_rule(yr, ir, x, B, g);
        for (int64_t o = 0; o < ny; o++) {
            ck_assert_msg(idx[o] == ir[o], "geometry %zu, output %lld: index %d, the rule's %d", gi, (long long)o,
                          idx[o], ir[o]);
            ck_assert(memcmp(&y[o], &yr[o], sizeof y[o]) == 0 || (isnan(y[o]) && isnan(yr[o])));
        }
        free(x), free(y), free(yr), free(idx), free(ir);
    }
}
END_TEST

START_TEST(avgpool_gradients)
{
    rng_seed(500);
    /* the last one pads, beyond the contract: zeros counted, as PyTorch's
     * default count_include_pad = True */
    KPool gs[] = {pool_geom(2, 6, 7, 2, 3, 2, 2, 0, 0), pool_geom(1, 5, 5, 3, 3, 1, 1, 0, 0),
                  pool_geom(1, 7, 5, 3, 2, 3, 1, 0, 0), pool_geom(1, 5, 6, 3, 3, 2, 2, 1, 1)};
    for (size_t k = 0; k < sizeof gs / sizeof gs[0]; k++) {
        KPool g = gs[k];
        int64_t B = 2, nx = B * g.c * g.h * g.w, ny = B * g.c * g.oh * g.ow;
        PoolCtx c = {fnan(ny), frand(nx, -1, 1), NULL, B, g, 0, 0};
        avgpool_fwd(&c);
        for (int64_t pl = 0; pl < B * g.c; pl++)
            for (int64_t oy = 0; oy < g.oh; oy++)
                for (int64_t ox = 0; ox < g.ow; ox++) {
                    double s = 0;
                    for (int64_t i = 0; i < g.kh; i++)
                        for (int64_t j = 0; j < g.kw; j++) {
                            int64_t iy = oy * g.sh - g.ph + i, ix = ox * g.sw - g.pw + j;
                            if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                                s += c.x[pl * g.h * g.w + iy * g.w + ix];
                        }
                    ck_assert_double_eq_tol(c.out[pl * g.oh * g.ow + oy * g.ow + ox], s / (double)(g.kh * g.kw),
                                            1e-6);
                }
        float *gy = frand(ny, -1, 1), *din = fnan(nx);
        k_avgpool2d_backward(din, gy, B, &g);
        Fd f = {avgpool_fwd, &c, c.out, gy, ny};
        check_fd("avgpool din", &f, c.x, nx, din, 1e-2f, 1e-2);
        free(c.out), free(c.x), free(gy), free(din);
    }
}
END_TEST

START_TEST(adaptive_avgpool_windows)
{
    rng_seed(600);
    /* output larger than the input, non-divisible both ways, identity, 1x1 */
    const int64_t cases[][4] = {{5, 6, 8, 8}, {7, 5, 3, 2}, {4, 4, 4, 4}, {10, 9, 3, 4}, {3, 5, 1, 1}, {2, 3, 5, 7}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t h = cases[k][0], w = cases[k][1], oh = cases[k][2], ow = cases[k][3], C = 2, B = 2;
        int64_t nx = B * C * h * w, ny = B * C * oh * ow;
        PoolCtx c = {fnan(ny), frand(nx, -1, 1), NULL, B, {C, h, w, 0, 0, 0, 0, 0, 0, 0, 0}, oh, ow};
        adaptive_fwd(&c);
        for (int64_t pl = 0; pl < B * C; pl++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    /* PyTorch's start_index / end_index, in floating point */
                    int64_t y0 = (int64_t)floor((double)(oy * h) / (double)oh);
                    int64_t y1 = (int64_t)ceil((double)((oy + 1) * h) / (double)oh);
                    int64_t x0 = (int64_t)floor((double)(ox * w) / (double)ow);
                    int64_t x1 = (int64_t)ceil((double)((ox + 1) * w) / (double)ow);
                    double s = 0;
                    for (int64_t iy = y0; iy < y1; iy++)
                        for (int64_t ix = x0; ix < x1; ix++)
                            s += c.x[pl * h * w + iy * w + ix];
                    ck_assert_double_eq_tol(c.out[pl * oh * ow + oy * ow + ox], s / (double)((y1 - y0) * (x1 - x0)),
                                            1e-6);
                }
        float *gy = frand(ny, -1, 1), *din = fnan(nx);
        k_adaptive_avgpool2d_backward(din, gy, B, C, h, w, oh, ow);
        Fd f = {adaptive_fwd, &c, c.out, gy, ny};
        check_fd("adaptive din", &f, c.x, nx, din, 1e-2f, 1e-2);
        free(c.out), free(c.x), free(gy), free(din);
    }
}
END_TEST

/* ---- elementwise --------------------------------------------------------------------- */

typedef struct EwCtx {
    float *out, *x;
    const uint8_t *mask;
    int64_t n;
    int kind;
} EwCtx;

enum { EW_RELU, EW_GELU, EW_TANH, EW_SIGMOID, EW_DROPOUT, EW_N };
#define EW_P 0.25f

static void ew_fwd(void *p)
{
    EwCtx *c = p;
    switch (c->kind) {
    case EW_RELU: k_relu_forward(c->out, c->x, c->n); break;
    case EW_GELU: k_gelu_forward(c->out, c->x, c->n); break;
    case EW_TANH: k_tanh_forward(c->out, c->x, c->n); break;
    case EW_SIGMOID: k_sigmoid_forward(c->out, c->x, c->n); break;
    case EW_DROPOUT: k_dropout_forward(c->out, c->x, c->mask, EW_P, c->n); break;
    }
}

START_TEST(elementwise_gradients)
{
    static const char *names[EW_N] = {"relu", "gelu", "tanh", "sigmoid", "dropout"};
    rng_seed(700 + (uint32_t)_i);
    int64_t n = 64;
    uint8_t mask[64];
    for (int64_t i = 0; i < n; i++)
        mask[i] = (uint8_t)(i % 3 != 0);
    EwCtx c = {fnan(n), frand(n, -3, 3), mask, n, _i};
    for (int64_t i = 0; i < n; i++)
        if (fabsf(c.x[i]) < 0.05f) /* relu's kink: no finite difference across it */
            c.x[i] = 0.5f;
    float *g = frand(n, -1, 1), *din = fnan(n);
    ew_fwd(&c);
    switch (_i) {
    case EW_RELU: k_relu_backward(din, g, c.x, n); break;
    case EW_GELU: k_gelu_backward(din, g, c.x, n); break;
    case EW_TANH: k_tanh_backward(din, g, c.out, n); break;
    case EW_SIGMOID: k_sigmoid_backward(din, g, c.out, n); break;
    case EW_DROPOUT: k_dropout_backward(din, g, mask, EW_P, n); break;
    }
    Fd f = {ew_fwd, &c, c.out, g, n};
    check_fd(names[_i], &f, c.x, n, din, 1e-2f, 1e-2);
    /* the forward against the definition, in double */
    for (int64_t i = 0; i < n; i++) {
        double x = c.x[i], want = 0;
        switch (_i) {
        case EW_RELU: want = x > 0 ? x : 0; break;
        case EW_GELU: want = 0.5 * x * (1 + tanh(sqrt(2 / K_PI) * (x + 0.044715 * x * x * x))); break;
        case EW_TANH: want = tanh(x); break;
        case EW_SIGMOID: want = 1 / (1 + exp(-x)); break;
        case EW_DROPOUT: want = mask[i] ? x / (1 - EW_P) : 0; break;
        }
        ck_assert_msg(fabs(c.out[i] - want) <= 1e-6 * fmax(1, fabs(want)), "%s(%g) = %.9g, want %.9g", names[_i], x,
                      c.out[i], want);
    }
    free(c.out), free(c.x), free(g), free(din);
}
END_TEST

START_TEST(elementwise_extremes)
{
    float x[6] = {-1000, -100, -88.8f, 88.8f, 100, 1000}, y[6], d[6], one[6] = {1, 1, 1, 1, 1, 1};
    k_sigmoid_forward(y, x, 6);
    k_sigmoid_backward(d, one, y, 6);
    for (int i = 0; i < 6; i++) {
        ck_assert(isfinite(y[i]) && y[i] >= 0 && y[i] <= 1 && isfinite(d[i]));
    }
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert_float_eq(y[5], 1.0f);
    k_gelu_forward(y, x, 6);
    k_gelu_backward(d, one, x, 6);
    for (int i = 0; i < 6; i++)
        ck_assert(isfinite(y[i]) && isfinite(d[i]));
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert_float_eq(y[5], 1000.0f);
    k_tanh_forward(y, x, 6);
    ck_assert_float_eq(y[0], -1.0f);
    ck_assert_float_eq(y[5], 1.0f);
}
END_TEST

/* GELU's e^x (k_expf in k_pointwise.c): within 2 ulp of libm's expf over
 * [-87, 88], exact at 0, +inf above 88.72 and 0 below -87.34; and a GELU
 * over an array gives each element the bits it gets alone (the vectorised
 * clones and the scalar remainder compute the same operations) */
static int64_t ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    ia = ia < 0 ? INT32_MIN - ia : ia, ib = ib < 0 ? INT32_MIN - ib : ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

START_TEST(gelu_exp_accuracy)
{
    int64_t worst = 0;
    float at = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.000731f) {
        int64_t u = ulps(k_expf_probe(x), expf(x));
        if (u > worst)
            worst = u, at = x;
    }
    ck_assert_msg(worst <= 2, "k_expf is %lld ulp from expf at %.9g", (long long)worst, (double)at);
    ck_assert(k_expf_probe(0.0f) == 1.0f);
    ck_assert(isinf(k_expf_probe(88.8f)) && isinf(k_expf_probe(1e30f)));
    ck_assert(k_expf_probe(-87.4f) == 0.0f && k_expf_probe(-1e30f) == 0.0f);
    ck_assert(isnan(k_expf_probe(NAN)) && isinf(k_expf_probe(INFINITY)) && k_expf_probe(-INFINITY) == 0.0f);
    ck_assert(ulps(k_expf_probe(88.72f), expf(88.72f)) <= 2);
    enum { N = 37 };
    float x[N], all[N], one[N], d_all[N], d_one, g[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(i - 18) * 0.37f, g[i] = 1.0f - 0.01f * (float)i;
    k_gelu_forward(all, x, N);
    k_gelu_backward(d_all, g, x, N);
    for (int i = 0; i < N; i++) {
        k_gelu_forward(&one[i], &x[i], 1);
        k_gelu_backward(&d_one, &g[i], &x[i], 1);
        ck_assert_msg(memcmp(&one[i], &all[i], 4) == 0 && memcmp(&d_one, &d_all[i], 4) == 0, "element %d", i);
        /* and GELU itself against the tanh form in double */
        double xd = x[i], want = 0.5 * xd * (1 + tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd)));
        ck_assert_msg(fabs(all[i] - want) <= 1e-6 * (fabs(want) + 1e-3), "gelu(%g) = %.9g, want %.9g", xd,
                      (double)all[i], want);
    }
}
END_TEST

/* ---- layernorm ----------------------------------------------------------------------- */

typedef struct LnCtx {
    float *out, *mean, *rstd, *x, *w, *b;
    int64_t n, d;
} LnCtx;

static void ln_fwd(void *p)
{
    LnCtx *c = p;
    k_layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->n, c->d, 1e-5f);
}

START_TEST(layernorm_gradients)
{
    rng_seed(800);
    int64_t n = 4, d = 10;
    LnCtx c = {fnan(n * d), fnan(n), fnan(n), frand(n * d, -2, 2), frand(d, 0.5f, 1.5f), frand(d, -1, 1), n, d};
    for (int64_t j = 0; j < d; j++) /* one row with a large offset: the two-pass variance must cope */
        c.x[d + j] += 1000.0f;
    float *g = frand(n * d, -1, 1), *din = fnan(n * d), *dw = fzero(d), *db = fzero(d);
    ln_fwd(&c);
    k_layernorm_backward_input(din, g, c.x, c.w, c.mean, c.rstd, n, d);
    k_layernorm_backward_weight(dw, db, g, c.x, c.mean, c.rstd, n, d);
    Fd f = {ln_fwd, &c, c.out, g, n * d};
    check_fd("layernorm dw", &f, c.w, d, dw, 1e-2f, 1e-2);
    check_fd("layernorm db", &f, c.b, d, db, 1e-2f, 1e-2);
    /* near 1000 a float step is 6e-5, so rounding in x - mean swamps finite
     * differences of the input: rows 0, 2, 3 are checked by finite
     * differences with row 1 shifted back, row 1 against doubles below */
    float *x1 = fcopy(c.x + d, d);
    for (int64_t j = 0; j < d; j++)
        c.x[d + j] -= 1000.0f;
    ln_fwd(&c);
    k_layernorm_backward_input(din, g, c.x, c.w, c.mean, c.rstd, n, d);
    check_fd("layernorm din", &f, c.x, n * d, din, 1e-2f, 1e-2);
    memcpy(c.x + d, x1, (size_t)d * sizeof(float));
    ln_fwd(&c);
    k_layernorm_backward_input(din, g, c.x, c.w, c.mean, c.rstd, n, d);
    /* the definition in double, every row */
    for (int64_t i = 0; i < n; i++) {
        const float *x = c.x + i * d, *gy = g + i * d;
        double m = 0, v = 0;
        for (int64_t j = 0; j < d; j++)
            m += x[j];
        m /= (double)d;
        for (int64_t j = 0; j < d; j++)
            v += (x[j] - m) * (x[j] - m);
        v /= (double)d;
        double r = 1 / sqrt(v + 1e-5), sg = 0, sgx = 0, ro[16], rd[16];
        for (int64_t j = 0; j < d; j++) {
            double xh = (x[j] - m) * r;
            ro[j] = xh * c.w[j] + c.b[j];
            sg += gy[j] * c.w[j], sgx += gy[j] * c.w[j] * xh;
        }
        for (int64_t j = 0; j < d; j++)
            rd[j] = r * (gy[j] * c.w[j] - sg / (double)d - (x[j] - m) * r * sgx / (double)d);
        check_close("layernorm out", c.out + i * d, ro, d, 1e-4);
        check_close("layernorm din (double)", din + i * d, rd, d, 1e-3);
        ck_assert_double_eq_tol(c.mean[i], m, 1e-5 * fmax(1, fabs(m)));
        ck_assert_double_eq_tol(c.rstd[i], r, 1e-5 * r);
    }
    /* same x, mean and rstd as dw's first call: a second call doubles it */
    float *dw1 = fcopy(dw, d), *db1 = fcopy(db, d);
    k_layernorm_backward_weight(dw, db, g, c.x, c.mean, c.rstd, n, d);
    check_scaled("layernorm dw x2", dw, dw1, 2.0f, d);
    check_scaled("layernorm db x2", db, db1, 2.0f, d);
    free(c.out), free(c.mean), free(c.rstd), free(c.x), free(c.w), free(c.b), free(g), free(din), free(dw), free(db);
    free(x1), free(dw1), free(db1);
}
END_TEST

/* ---- batchnorm2d ------------------------------------------------------------------ */

typedef struct BnCtx {
    float *out, *mean, *rstd, *x, *w, *b;
    int64_t B, C, HW;
} BnCtx;

static void bn_fwd(void *p)
{
    BnCtx *c = p;
    k_batchnorm2d_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->B, c->C, c->HW, 1e-5f, NULL, NULL, NULL, 0.1);
}

/* Gradients by finite differences (training mode: the micro-batch's
 * statistics, which depend on every input of the channel); the forward, the
 * statistics and the running update against a double reference from
 * nn.BatchNorm2d's definition; eval mode from the running statistics;
 * weight gradients accumulate; an update with rmean NULL changes nothing. */
START_TEST(batchnorm2d_gradients)
{
    rng_seed(810);
    int64_t B = 3, C = 4, HW = 5 * 3, n = B * C * HW;
    BnCtx c = {fnan(n), fnan(C), fnan(C), frand(n, -2, 2), frand(C, 0.5f, 1.5f), frand(C, -1, 1), B, C, HW};
    for (int64_t i = 0; i < B; i++) /* channel 2 with a large offset: the two-pass variance must cope */
        for (int64_t j = 0; j < HW; j++)
            c.x[(i * C + 2) * HW + j] += 300.0f;
    float *g = frand(n, -1, 1), *din = fnan(n), *dw = fzero(C), *db = fzero(C);
    bn_fwd(&c);
    k_batchnorm2d_backward_input(din, g, c.x, c.w, c.mean, c.rstd, B, C, HW);
    k_batchnorm2d_backward_weight(dw, db, g, c.x, c.mean, c.rstd, B, C, HW);
    Fd f = {bn_fwd, &c, c.out, g, n};
    check_fd("batchnorm2d dw", &f, c.w, C, dw, 1e-2f, 1e-2);
    check_fd("batchnorm2d db", &f, c.b, C, db, 1e-2f, 1e-2);
    /* the offset channel back to small values for the input's differences */
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < HW; j++)
            c.x[(i * C + 2) * HW + j] -= 300.0f;
    bn_fwd(&c);
    k_batchnorm2d_backward_input(din, g, c.x, c.w, c.mean, c.rstd, B, C, HW);
    check_fd("batchnorm2d din", &f, c.x, n, din, 1e-2f, 1e-2);
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < HW; j++)
            c.x[(i * C + 2) * HW + j] += 300.0f;
    /* the definition in double; the running statistics from 0 and 1 after
     * one update with momentum 0.3, the unbiased variance */
    float *rm = fzero(C), *rv = frand(C, 1, 1), *out2 = fnan(n);
    int64_t nbt = 41;
    k_batchnorm2d_forward(c.out, c.mean, c.rstd, c.x, c.w, c.b, B, C, HW, 1e-5f, rm, rv, &nbt, 0.3);
    k_batchnorm2d_backward_input(din, g, c.x, c.w, c.mean, c.rstd, B, C, HW);
    ck_assert_int_eq(nbt, 42);
    double N = (double)(B * HW);
    for (int64_t ch = 0; ch < C; ch++) {
        double m = 0, v = 0, sg = 0, sgx = 0;
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < HW; j++)
                m += c.x[(i * C + ch) * HW + j];
        m /= N;
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < HW; j++) {
                double d = c.x[(i * C + ch) * HW + j] - m;
                v += d * d;
            }
        double r = 1 / sqrt(v / N + 1e-5);
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < HW; j++) {
                int64_t at = (i * C + ch) * HW + j;
                double xh = (c.x[at] - m) * r, want = xh * c.w[ch] + c.b[ch];
                REQUIRE(fabs(c.out[at] - want) <= 1e-4 * fmax(1, fabs(want)), "batchnorm2d out[%lld]: %.9g, want %.9g",
                        (long long)at, c.out[at], want);
                sg += g[at] * c.w[ch], sgx += g[at] * c.w[ch] * xh;
            }
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < HW; j++) {
                int64_t at = (i * C + ch) * HW + j;
                double xh = (c.x[at] - m) * r, want = r * (g[at] * c.w[ch] - sg / N - xh * sgx / N);
                REQUIRE(fabs(din[at] - want) <= 1e-3 * fmax(1e-2, fabs(want)) + 1e-4,
                        "batchnorm2d din[%lld] (double): %.9g, want %.9g", (long long)at, din[at], want);
            }
        ck_assert_double_eq_tol(c.mean[ch], m, 1e-6 * fmax(1, fabs(m)));
        ck_assert_double_eq_tol(c.rstd[ch], r, 1e-5 * r);
        ck_assert_double_eq_tol(rm[ch], 0.3 * m, 1e-6 * fmax(1, fabs(m)));
        ck_assert_double_eq_tol(rv[ch], 0.7 + 0.3 * v / (N - 1), 1e-6 * (0.7 + 0.3 * v / (N - 1)));
    }
    /* the same statistics with or without the update: the same bits */
    float *o1 = fcopy(c.out, n);
    bn_fwd(&c);
    REQUIRE(memcmp(o1, c.out, (size_t)n * sizeof(float)) == 0, "the update changed the output");
    /* evaluation: the running statistics, whatever the batch */
    k_batchnorm2d_eval(out2, c.x, c.w, c.b, rm, rv, B, C, HW, 1e-5f);
    for (int64_t ch = 0; ch < C; ch++)
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < HW; j++) {
                int64_t at = (i * C + ch) * HW + j;
                double want = (c.x[at] - (double)rm[ch]) / sqrt((double)rv[ch] + 1e-5) * c.w[ch] + c.b[ch];
                REQUIRE(fabs(out2[at] - want) <= 1e-4 * fmax(1, fabs(want)), "batchnorm2d eval[%lld]: %.9g, want %.9g",
                        (long long)at, out2[at], want);
            }
    /* a second weight-gradient call doubles it (accumulation) */
    bn_fwd(&c);
    memset(dw, 0, (size_t)C * sizeof *dw), memset(db, 0, (size_t)C * sizeof *db);
    k_batchnorm2d_backward_weight(dw, db, g, c.x, c.mean, c.rstd, B, C, HW);
    float *dw1 = fcopy(dw, C), *db1 = fcopy(db, C);
    k_batchnorm2d_backward_weight(dw, db, g, c.x, c.mean, c.rstd, B, C, HW);
    check_scaled("batchnorm2d dw x2", dw, dw1, 2.0f, C);
    check_scaled("batchnorm2d db x2", db, db1, 2.0f, C);
    free(c.out), free(c.mean), free(c.rstd), free(c.x), free(c.w), free(c.b), free(g), free(din), free(dw), free(db);
    free(rm), free(rv), free(out2), free(o1), free(dw1), free(db1);
}
END_TEST

/* transpose: against index arithmetic written out; its backward (the same
 * call with the sizes exchanged) is its adjoint, <T x, g> = <x, T' g>, and
 * undoes it bit for bit */
START_TEST(transpose_copies)
{
    rng_seed(820);
    int64_t P = 2, na = 3, M = 4, nb = 5, Q = 2, n = P * na * M * nb * Q;
    float *x = frand(n, -1, 1), *y = fnan(n), *back = fnan(n), *g = frand(n, -1, 1), *gt = fnan(n);
    k_transpose(y, x, P, na, M, nb, Q);
    for (int64_t p = 0; p < P; p++)
        for (int64_t i = 0; i < na; i++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t j = 0; j < nb; j++)
                    for (int64_t q = 0; q < Q; q++) {
                        float a = x[(((p * na + i) * M + m) * nb + j) * Q + q];
                        float b = y[(((p * nb + j) * M + m) * na + i) * Q + q];
                        REQUIRE(a == b, "transpose [%lld, %lld, %lld, %lld, %lld]: %g, want %g", (long long)p,
                                (long long)i, (long long)m, (long long)j, (long long)q, b, a);
                    }
    k_transpose(back, y, P, nb, M, na, Q);
    REQUIRE(memcmp(back, x, (size_t)n * sizeof(float)) == 0, "transposing back does not give the input");
    k_transpose(gt, g, P, nb, M, na, Q); /* the backward of y = T x: din = T' dout */
    double l = 0, r = 0;
    for (int64_t k = 0; k < n; k++)
        l += (double)y[k] * g[k], r += (double)x[k] * gt[k];
    ck_assert_double_eq_tol(l, r, 1e-12);
    free(x), free(y), free(back), free(g), free(gt);
}
END_TEST

/* wider than one block of column sums, and more rows than one row block */
START_TEST(layernorm_wide_rows)
{
    rng_seed(801);
    int64_t n = 150, d = 300;
    float *x = frand(n * d, -1, 1), *w = frand(d, 0.5f, 1.5f), *b = frand(d, -1, 1), *y = fnan(n * d);
    float *mean = fnan(n), *rstd = fnan(n), *g = frand(n * d, -1, 1), *dw = fzero(d), *db = fzero(d);
    k_layernorm_forward(y, mean, rstd, x, w, b, n, d, 1e-5f);
    k_layernorm_backward_weight(dw, db, g, x, mean, rstd, n, d);
    double rdw[300] = {0}, rdb[300] = {0};
    for (int64_t i = 0; i < n; i++) /* against the saved mean and rstd */
        for (int64_t j = 0; j < d; j++) {
            rdw[j] += (double)g[i * d + j] * ((double)x[i * d + j] - mean[i]) * rstd[i];
            rdb[j] += g[i * d + j];
        }
    check_close("layernorm dw (wide)", dw, rdw, d, 1e-5);
    check_close("layernorm db (wide)", db, rdb, d, 1e-5);
    /* rows of the output: mean 0, variance 1 with w = 1, b = 0 */
    k_layernorm_forward(y, mean, rstd, x, NULL, NULL, n, d, 1e-5f);
    for (int64_t i = 0; i < n; i++) {
        double m = 0, v = 0;
        for (int64_t j = 0; j < d; j++)
            m += y[i * d + j];
        m /= (double)d;
        for (int64_t j = 0; j < d; j++)
            v += (y[i * d + j] - m) * (y[i * d + j] - m);
        ck_assert_double_eq_tol(m, 0, 1e-6);
        ck_assert_double_eq_tol(v / (double)d, 1, 1e-3);
    }
    free(x), free(w), free(b), free(y), free(mean), free(rstd), free(g), free(dw), free(db);
}
END_TEST

/* ---- embedding ----------------------------------------------------------------------- */

typedef struct EmbCtx {
    float *out, *wte, *wpe;
    const int32_t *tok;
    int64_t B, t, d;
} EmbCtx;

static void emb_fwd(void *p)
{
    EmbCtx *c = p;
    k_embedding_forward(c->out, c->tok, c->wte, c->wpe, c->B, c->t, c->d);
}

START_TEST(embedding_gradients)
{
    rng_seed(900);
    int64_t V = 5, P = 6, B = 2, t = 4, d = 3;
    const int32_t tok[8] = {1, 3, 1, 4, 0, 1, 3, 3}; /* repeats within and across samples; token 2 unused */
    EmbCtx c = {fnan(B * t * d), frand(V * d, -1, 1), frand(P * d, -1, 1), tok, B, t, d};
    float *g = frand(B * t * d, -1, 1), *dwte = fzero(V * d), *dwpe = fzero(P * d);
    emb_fwd(&c);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = 0; j < d; j++)
                ck_assert_float_eq(c.out[(b * t + i) * d + j], c.wte[tok[b * t + i] * d + j] + c.wpe[i * d + j]);
    k_embedding_backward_weight(dwte, dwpe, g, tok, B, t, d);
    Fd f = {emb_fwd, &c, c.out, g, B * t * d};
    check_fd("embedding dwte", &f, c.wte, V * d, dwte, 1e-2f, 1e-3);
    check_fd("embedding dwpe", &f, c.wpe, P * d, dwpe, 1e-2f, 1e-3);
    for (int64_t j = 0; j < d; j++)
        ck_assert_float_eq(dwte[2 * d + j], 0.0f);
    for (int64_t j = t * d; j < P * d; j++) /* positions past T get nothing */
        ck_assert_float_eq(dwpe[j], 0.0f);
    float *a = fcopy(dwte, V * d), *p = fcopy(dwpe, P * d);
    k_embedding_backward_weight(dwte, dwpe, g, tok, B, t, d);
    check_scaled("embedding dwte x2", dwte, a, 2.0f, V * d);
    check_scaled("embedding dwpe x2", dwpe, p, 2.0f, P * d);
    /* without positions */
    float *wpe = c.wpe;
    c.wpe = NULL;
    emb_fwd(&c);
    for (int64_t k = 0; k < B * t; k++)
        ck_assert_mem_eq(c.out + k * d, c.wte + tok[k] * d, (size_t)d * sizeof(float));
    float *dw2 = fzero(V * d);
    k_embedding_backward_weight(dw2, NULL, g, tok, B, t, d);
    ck_assert_mem_eq(dw2, a, (size_t)(V * d) * sizeof(float));
    free(c.out), free(c.wte), free(wpe), free(g), free(dwte), free(dwpe), free(a), free(p), free(dw2);
}
END_TEST

/* ---- attention ------------------------------------------------------------------------ */

typedef struct AttCtx {
    float *out, *att, *qkv;
    const float *mask;
    int64_t B, t, d, h;
    int causal;
} AttCtx;

static void att_fwd(void *p)
{
    AttCtx *c = p;
    k_attention_forward(c->out, c->att, c->qkv, c->mask, c->B, c->t, c->d, c->h, c->causal);
}

/* the definition, in double: out (B, T, D), att (B, H, T, T); and with dout
 * given, dqkv (B, T, 3D) */
static void att_naive(double *out, double *att, double *dqkv, const float *qkv, const float *mask, const float *dout,
                      int64_t B, int64_t t, int64_t d, int64_t H, int causal)
{
    int64_t hd = d / H, d3 = 3 * d;
    double sc = 1 / sqrt((double)hd);
    double *dp = malloc((size_t)t * sizeof(double));
    if (dqkv)
        memset(dqkv, 0, (size_t)(B * t * d3) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < t; i++) {
                const float *q = qkv + (b * t + i) * d3 + h * hd;
                double *p = att + ((b * H + h) * t + i) * t, mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < t; j++) {
                    const float *k = qkv + (b * t + j) * d3 + d + h * hd;
                    int masked = (causal && j > i) || (mask && mask[b * t + j] == 0);
                    double s = 0;
                    for (int64_t e = 0; e < hd; e++)
                        s += (double)q[e] * k[e];
                    p[j] = masked ? -INFINITY : s * sc;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < t; j++) {
                    p[j] = isinf(mx) ? 0 : exp(p[j] - mx);
                    sum += p[j];
                }
                for (int64_t j = 0; j < t; j++)
                    p[j] = sum > 0 ? p[j] / sum : 0;
                for (int64_t e = 0; e < hd; e++) {
                    double s = 0;
                    for (int64_t j = 0; j < t; j++)
                        s += p[j] * qkv[(b * t + j) * d3 + 2 * d + h * hd + e];
                    out[(b * t + i) * d + h * hd + e] = s;
                }
                if (!dqkv)
                    continue;
                const float *go = dout + (b * t + i) * d + h * hd;
                double rs = 0;
                for (int64_t j = 0; j < t; j++) {
                    const float *v = qkv + (b * t + j) * d3 + 2 * d + h * hd;
                    dp[j] = 0;
                    for (int64_t e = 0; e < hd; e++)
                        dp[j] += (double)go[e] * v[e];
                    rs += p[j] * dp[j];
                }
                for (int64_t j = 0; j < t; j++) {
                    double ds = p[j] * (dp[j] - rs) * sc;
                    const float *k = qkv + (b * t + j) * d3 + d + h * hd;
                    double *dq = dqkv + (b * t + i) * d3 + h * hd, *dk = dqkv + (b * t + j) * d3 + d + h * hd;
                    double *dv = dk + d;
                    for (int64_t e = 0; e < hd; e++) {
                        dq[e] += ds * k[e];
                        dk[e] += ds * q[e];
                        dv[e] += p[j] * go[e];
                    }
                }
            }
    free(dp);
}

enum { ATT_PLAIN, ATT_CAUSAL, ATT_MASK, ATT_MASK_CAUSAL, ATT_N };

START_TEST(attention_gradients)
{
    static const char *names[ATT_N] = {"plain", "causal", "padding mask", "mask + causal"};
    rng_seed(1000 + (uint32_t)_i);
    int64_t B = 2, t = 5, d = 6, H = 2, n = B * t * 3 * d, no = B * t * d, na = B * H * t * t;
    /* sample 0: key 0 masked, so with causal row 0 has no key at all;
     * sample 1: the last two positions are padding */
    float mask[10] = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    int causal = _i == ATT_CAUSAL || _i == ATT_MASK_CAUSAL;
    AttCtx c = {fnan(no), fnan(na), frand(n, -1.5f, 1.5f), _i >= ATT_MASK ? mask : NULL, B, t, d, H, causal};
    float *g = frand(no, -1, 1), *dqkv = fnan(n);
    att_fwd(&c);
    k_attention_backward(dqkv, g, c.qkv, c.att, B, t, d, H);
    double *ro = malloc((size_t)no * sizeof(double)), *ra = malloc((size_t)na * sizeof(double));
    double *rd = malloc((size_t)n * sizeof(double));
    att_naive(ro, ra, rd, c.qkv, c.mask, g, B, t, d, H, causal);
    char what[64];
    snprintf(what, sizeof what, "attention %s out", names[_i]);
    check_close(what, c.out, ro, no, 1e-5);
    snprintf(what, sizeof what, "attention %s att", names[_i]);
    check_close(what, c.att, ra, na, 1e-5);
    snprintf(what, sizeof what, "attention %s dqkv", names[_i]);
    check_close(what, dqkv, rd, n, 1e-4);
    Fd f = {att_fwd, &c, c.out, g, no};
    check_fd(what, &f, c.qkv, n, dqkv, 1e-2f, 1e-2);
    if (_i == ATT_MASK_CAUSAL) {
        /* sample 0, query 0: every key masked; zeros, not NaN, everywhere */
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < t; j++)
                ck_assert_float_eq(c.att[(h * t + 0) * t + j], 0.0f);
        for (int64_t e = 0; e < d; e++)
            ck_assert_float_eq(c.out[e], 0.0f);
        for (int64_t e = 0; e < d; e++) /* its query gets no gradient */
            ck_assert_float_eq(dqkv[e], 0.0f);
    }
    if (_i >= ATT_MASK) /* padded keys get no gradient for k and v */
        for (int64_t j = 3; j < t; j++)
            for (int64_t e = d; e < 3 * d; e++)
                ck_assert_float_eq(dqkv[((1 * t) + j) * 3 * d + e], 0.0f);
    /* deterministic: the same call, the same bits */
    float *again = fnan(n);
    k_attention_backward(again, g, c.qkv, c.att, B, t, d, H);
    ck_assert_mem_eq(again, dqkv, (size_t)n * sizeof(float));
    free(c.out), free(c.att), free(c.qkv), free(g), free(dqkv), free(ro), free(ra), free(rd), free(again);
}
END_TEST

START_TEST(attention_fully_masked_sample)
{
    rng_seed(1100);
    int64_t B = 2, t = 4, d = 4, H = 2, n = B * t * 3 * d;
    float mask[8] = {1, 1, 0, 1, 0, 0, 0, 0}; /* sample 1 is all padding */
    float *qkv = frand(n, -1, 1), *out = fnan(B * t * d), *att = fnan(B * H * t * t), *g = frand(B * t * d, -1, 1);
    float *dqkv = fnan(n);
    for (int causal = 0; causal < 2; causal++) {
        k_attention_forward(out, att, qkv, mask, B, t, d, H, causal);
        k_attention_backward(dqkv, g, qkv, att, B, t, d, H);
        for (int64_t i = 0; i < B * t * d; i++)
            ck_assert(isfinite(out[i]));
        for (int64_t i = 0; i < n; i++)
            ck_assert(isfinite(dqkv[i]));
        for (int64_t i = t * d; i < 2 * t * d; i++)
            ck_assert_float_eq(out[i], 0.0f);
        for (int64_t i = H * t * t; i < 2 * H * t * t; i++)
            ck_assert_float_eq(att[i], 0.0f);
        for (int64_t i = t * 3 * d; i < n; i++)
            ck_assert_float_eq(dqkv[i], 0.0f);
        /* sample 0's rows still sum to 1 over the live keys */
        for (int64_t r = 0; r < H * t; r++) {
            double s = 0;
            for (int64_t j = 0; j < t; j++)
                s += att[r * t + j];
            ck_assert_double_eq_tol(s, 1.0, 1e-6);
            ck_assert_float_eq(att[r * t + 2], 0.0f);
        }
    }
    free(qkv), free(out), free(att), free(g), free(dqkv);
}
END_TEST

/* longer sequences: the forward's causal row blocks, several row tiles in the
 * backward, and (t > 2048) the two-pass column chunks, against doubles */
START_TEST(attention_long)
{
    static const int64_t ts[] = {300, 2100};
    rng_seed(1200 + (uint32_t)_i);
    int64_t B = 1, t = ts[_i], d = _i ? 2 : 8, H = _i ? 1 : 2, n = B * t * 3 * d, no = B * t * d, na = B * H * t * t;
    float *qkv = frand(n, -2, 2), *out = fnan(no), *att = fnan(na), *g = frand(no, -1, 1), *dqkv = fnan(n);
    float *mask = malloc((size_t)(B * t) * sizeof(float));
    for (int64_t j = 0; j < B * t; j++)
        mask[j] = j % 7 == 3 || j >= t - 5 ? 0.0f : 1.0f;
    double *ro = malloc((size_t)no * sizeof(double)), *ra = malloc((size_t)na * sizeof(double));
    double *rd = malloc((size_t)n * sizeof(double));
    for (int causal = 0; causal < 2; causal++) {
        k_attention_forward(out, att, qkv, mask, B, t, d, H, causal);
        k_attention_backward(dqkv, g, qkv, att, B, t, d, H);
        att_naive(ro, ra, rd, qkv, mask, g, B, t, d, H, causal);
        check_close("long attention out", out, ro, no, 1e-4);
        check_close("long attention att", att, ra, na, 1e-4);
        check_close("long attention dqkv", dqkv, rd, n, 1e-3);
    }
    free(qkv), free(out), free(att), free(g), free(dqkv), free(mask), free(ro), free(ra), free(rd);
}
END_TEST

/* ---- losses ------------------------------------------------------------------------------ */

typedef struct CeCtx {
    float *logits;
    const int32_t *tg;
    int64_t n, c;
} CeCtx;

START_TEST(cross_entropy_loss_and_gradient)
{
    rng_seed(1300);
    int64_t n = 6, c = 5;
    const int32_t tg[6] = {2, -1, 0, 4, -100, 4};
    float *x = frand(n * c, -3, 3), *dx = fnan(n * c), *dx1 = fnan(n * c);
    x[0 * c + 2] = 5.0f;  /* row 0: argmax 2 = target */
    x[3 * c + 1] = 5.0f;  /* row 3: argmax 1, target 4 */
    x[5 * c + 4] = 4.0f;  /* row 5: argmax 4 = target */
    x[2 * c + 3] = 4.5f;  /* row 2: argmax 3, target 0 */
    int64_t count = -1, correct = -1;
    double loss = k_cross_entropy(dx, x, tg, n, c, 0.25, &count, &correct);
    ck_assert_int_eq(count, 4);
    ck_assert_int_eq(correct, 2);
    double want = 0;
    for (int64_t i = 0; i < n; i++) {
        if (tg[i] < 0)
            continue;
        double s = 0;
        for (int64_t j = 0; j < c; j++)
            s += exp((double)x[i * c + j]);
        want += log(s) - x[i * c + tg[i]];
    }
    ck_assert_double_eq_tol(loss, want, 1e-6 * want);
    /* ignored rows: zero gradient, not left over */
    for (int64_t j = 0; j < c; j++) {
        ck_assert_float_eq(dx[1 * c + j], 0.0f);
        ck_assert_float_eq(dx[4 * c + j], 0.0f);
    }
    /* the scale multiplies the gradient only; scale 1 is d(sum)/dlogits */
    k_cross_entropy(dx1, x, tg, n, c, 1.0, NULL, NULL);
    check_scaled("cross-entropy scale", dx, dx1, 0.25f, n * c);
    for (int64_t i = 0; i < n * c; i++) {
        float s = x[i];
        x[i] = s + 1e-2f;
        double xp = x[i], lp = k_cross_entropy(NULL, x, tg, n, c, 1.0, NULL, NULL);
        x[i] = s - 1e-2f;
        double xm = x[i], lm = k_cross_entropy(NULL, x, tg, n, c, 1.0, NULL, NULL);
        x[i] = s;
        ck_assert_double_eq_tol((lp - lm) / (xp - xm), dx1[i], 1e-4);
    }
    /* evaluation (no gradient) gives the same bits, here and for rows wider
     * than one summation block */
    ck_assert(k_cross_entropy(NULL, x, tg, n, c, 0.25, NULL, NULL) == loss);
    {
        int64_t wc = 700;
        float *wx = frand(2 * wc, -5, 5), *wd = fnan(2 * wc);
        const int32_t wt[2] = {3, 650};
        double l1 = k_cross_entropy(wd, wx, wt, 2, wc, 1.0, NULL, NULL);
        ck_assert(k_cross_entropy(NULL, wx, wt, 2, wc, 1.0, NULL, NULL) == l1);
        double want2 = 0;
        for (int64_t i = 0; i < 2; i++) {
            double s = 0;
            for (int64_t j = 0; j < wc; j++)
                s += exp((double)wx[i * wc + j]);
            want2 += log(s) - wx[i * wc + wt[i]];
        }
        ck_assert_double_eq_tol(l1, want2, 1e-6 * fabs(want2));
        for (int64_t i = 0; i < 2; i++) {
            double s = 0;
            for (int64_t j = 0; j < wc; j++)
                s += wd[i * wc + j];
            ck_assert_double_eq_tol(s, 0, 1e-5);
        }
        free(wx), free(wd);
    }
    /* rows of the gradient sum to 0 */
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < c; j++)
            s += dx1[i * c + j];
        ck_assert_double_eq_tol(s, 0, 1e-6);
    }
    free(x), free(dx), free(dx1);
}
END_TEST

START_TEST(cross_entropy_is_stable)
{
    float x[6] = {1000, -1000, 0, 88, 89, -200};
    const int32_t tg[2] = {1, 2};
    float dx[6];
    int64_t count = 0;
    double loss = k_cross_entropy(dx, x, tg, 2, 3, 0.5, &count, NULL);
    ck_assert(isfinite(loss));
    ck_assert_double_eq_tol(loss, 2000.0 + (289.0 + log1p(exp(-1.0))), 1e-6 * 2289);
    for (int i = 0; i < 6; i++)
        ck_assert(isfinite(dx[i]));
    ck_assert_float_eq_tol(dx[0], 0.5f, 1e-7f);
    ck_assert_float_eq_tol(dx[1], -0.5f, 1e-7f);
    /* all rows ignored: 0 and a count of 0 */
    const int32_t none[2] = {-1, -1};
    ck_assert_double_eq(k_cross_entropy(dx, x, none, 2, 3, 1.0, &count, NULL), 0.0);
    ck_assert_int_eq(count, 0);
}
END_TEST

START_TEST(mse_loss_and_gradient)
{
    rng_seed(1400);
    int64_t n = 17;
    float *y = frand(n, -2, 2), *t = frand(n, -2, 2), *dy = fnan(n);
    double loss = k_mse(dy, y, t, n, 0.5), want = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)y[i] - t[i];
        want += e * e;
        ck_assert_float_eq_tol(dy[i], (float)(e), 1e-6f); /* 2 e x 0.5 */
    }
    ck_assert_double_eq_tol(loss, want, 1e-12 * want);
    k_mse(dy, y, t, n, 1.0);
    for (int64_t i = 0; i < n; i++) {
        float s = y[i];
        y[i] = s + 1e-2f;
        double xp = y[i], lp = k_mse(NULL, y, t, n, 1.0);
        y[i] = s - 1e-2f;
        double xm = y[i], lm = k_mse(NULL, y, t, n, 1.0);
        y[i] = s;
        ck_assert_double_eq_tol((lp - lm) / (xp - xm), dy[i], 1e-4);
    }
    free(y), free(t), free(dy);
}
END_TEST

/* ---- random numbers ------------------------------------------------------------------------ */

START_TEST(philox_known_answers)
{
    /* Random123's kat_vectors for philox4x32_10 */
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
         0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
         0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        k_philox(out, v[i], v[i] + 4);
        for (int j = 0; j < 4; j++)
            ck_assert_msg(out[j] == v[i][6 + j], "vector %d word %d: %08x, want %08x", i, j, out[j], v[i][6 + j]);
    }
}
END_TEST

START_TEST(dropout_mask_rate_and_repeat)
{
    int64_t n = 100003;
    uint8_t *m = malloc((size_t)n), *m2 = malloc((size_t)n), *m3 = malloc((size_t)n);
    const float ps[] = {0.1f, 0.3f, 0.5f, 0.9f};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        k_dropout_mask(m, n, ps[k], 42, 7, 3, 5);
        int64_t dropped = 0;
        for (int64_t i = 0; i < n; i++) {
            REQUIRE(m[i] == 0 || m[i] == 1, "mask[%lld] = %d", (long long)i, m[i]);
            dropped += m[i] == 0;
        }
        /* 5 standard deviations of a binomial at n = 1e5 is below 0.008 */
        ck_assert_msg(fabs((double)dropped / (double)n - ps[k]) < 0.008, "p = %g: dropped %lld of %lld", ps[k],
                      (long long)dropped, (long long)n);
        k_dropout_mask(m2, n, ps[k], 42, 7, 3, 5);
        ck_assert_mem_eq(m, m2, (size_t)n);
    }
    /* each key changes the mask: seed, step, sample, layer */
    k_dropout_mask(m, n, 0.5f, 42, 7, 3, 5);
    const uint64_t alt[4][4] = {{43, 7, 3, 5}, {42, 8, 3, 5}, {42, 7, 4, 5}, {42, 7, 3, 6}};
    for (int k = 0; k < 4; k++) {
        k_dropout_mask(m3, n, 0.5f, alt[k][0], alt[k][1], alt[k][2], (uint32_t)alt[k][3]);
        int64_t same = 0;
        for (int64_t i = 0; i < n; i++)
            same += m[i] == m3[i];
        ck_assert_msg(same < n * 0.52 && same > n * 0.48, "key change %d: %lld of %lld agree", k, (long long)same,
                      (long long)n);
    }
    /* the recipe in the header, element by element; a prefix is a prefix */
    uint32_t key[2] = {42, 0}, r[4];
    for (int64_t e = 0; e < 64; e++) {
        uint32_t ctr[4] = {(uint32_t)(e / 4), 3, 5, 7};
        k_philox(r, ctr, key);
        float u = (float)(r[e % 4] >> 8) * 0x1p-24f;
        ck_assert_int_eq(m[e], u < 0.5f ? 0 : 1);
    }
    k_dropout_mask(m3, 7, 0.5f, 42, 7, 3, 5);
    ck_assert_mem_eq(m3, m, 7);
    /* the boundary: u == p keeps, the next grid value below p drops */
    uint32_t c0[4] = {0, 3, 5, 7};
    k_philox(r, c0, key);
    float u0 = (float)(r[0] >> 8) * 0x1p-24f;
    k_dropout_mask(m3, 1, u0, 42, 7, 3, 5);
    ck_assert_int_eq(m3[0], 1);
    k_dropout_mask(m3, 1, u0 + 0x1p-24f, 42, 7, 3, 5);
    ck_assert_int_eq(m3[0], 0);
    /* a 64-bit seed uses both key words */
    k_dropout_mask(m2, n, 0.5f, 42 + (1ull << 32), 7, 3, 5);
    ck_assert(memcmp(m, m2, (size_t)n) != 0);
    k_dropout_mask(m, n, 0.0f, 1, 2, 3, 4);
    for (int64_t i = 0; i < n; i++)
        REQUIRE(m[i] == 1, "p = 0 dropped element %lld", (long long)i);
    free(m), free(m2), free(m3);
}
END_TEST

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 0x811c9dc5u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x01000193u;
    return h;
}

START_TEST(init_bounds_and_moments)
{
    int64_t n = 100001;
    float *p = malloc((size_t)n * sizeof(float)), *q = malloc((size_t)n * sizeof(float));
    const float bound = 0.125f;
    k_init_uniform(p, n, bound, 7, 3, "weight");
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; i++) {
        REQUIRE(p[i] >= -bound && p[i] < bound, "uniform[%lld] = %g", (long long)i, p[i]);
        m += p[i];
    }
    m /= (double)n;
    for (int64_t i = 0; i < n; i++)
        v += (p[i] - m) * (p[i] - m);
    v /= (double)n;
    ck_assert_double_eq_tol(m, 0, 0.01 * bound);
    ck_assert_double_eq_tol(v, bound * bound / 3, 0.02 * bound * bound / 3);
    /* the documented recipe */
    uint32_t key[2] = {7, 0}, r[4];
    for (int64_t e = 0; e < 16; e++) {
        uint32_t ctr[4] = {(uint32_t)(e / 4), fnv1a("weight"), 3, 0x494e4954u};
        k_philox(r, ctr, key);
        ck_assert_float_eq(p[e], ((float)(r[e % 4] >> 8) * 0x1p-23f - 1.0f) * bound);
    }
    /* deterministic, a prefix of a longer init, and keyed by name, layer, seed */
    k_init_uniform(q, 5, bound, 7, 3, "weight");
    ck_assert_mem_eq(p, q, 5 * sizeof(float));
    const struct {
        uint64_t seed;
        uint32_t layer;
        const char *name;
    } alt[] = {{8, 3, "weight"}, {7, 4, "weight"}, {7, 3, "bias"}, {7 + (1ull << 32), 3, "weight"}};
    for (size_t k = 0; k < sizeof alt / sizeof alt[0]; k++) {
        k_init_uniform(q, 1000, bound, alt[k].seed, alt[k].layer, alt[k].name);
        ck_assert(memcmp(p, q, 1000 * sizeof(float)) != 0);
    }

    k_init_normal(p, n, 7, 0, "tokens.weight");
    m = 0, v = 0;
    double m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        REQUIRE(isfinite(p[i]) && fabsf(p[i]) < 6.5f, "normal[%lld] = %g", (long long)i, p[i]);
        m += p[i];
    }
    m /= (double)n;
    for (int64_t i = 0; i < n; i++)
        v += (p[i] - m) * (p[i] - m), m4 += pow(p[i] - m, 4);
    v /= (double)n, m4 /= (double)n;
    ck_assert_double_eq_tol(m, 0, 0.015);
    ck_assert_double_eq_tol(v, 1, 0.03);
    ck_assert_double_eq_tol(m4 / (v * v), 3, 0.15); /* kurtosis of a normal */
    /* the documented recipe, element 4i + 2 (the cos of the second pair) */
    uint32_t ctr[4] = {1, fnv1a("tokens.weight"), 0, 0x494e4954u};
    k_philox(r, ctr, key);
    double u1 = ((r[2] >> 8) + 0.5) * 0x1p-24, u2 = ((r[3] >> 8) + 0.5) * 0x1p-24;
    ck_assert_float_eq(p[6], (float)(sqrt(-2 * log(u1)) * cos(2 * K_PI * u2)));
    ck_assert_float_eq(p[7], (float)(sqrt(-2 * log(u1)) * sin(2 * K_PI * u2)));
    k_init_normal(q, 3, 7, 0, "tokens.weight");
    ck_assert_mem_eq(p, q, 3 * sizeof(float));
    k_init_normal(q, 100, 7, 0, "positions.weight");
    ck_assert(memcmp(p, q, 100 * sizeof(float)) != 0);

    k_fill(q, 10, 0.5f);
    for (int i = 0; i < 10; i++)
        ck_assert_float_eq(q[i], 0.5f);
    free(p), free(q);
}
END_TEST

/* ---- the suite ---------------------------------------------------------------------------- */

/* k_add_into, the residual block's addition: y + x once rounded, in place,
 * so the branch order cannot matter (a + b == b + a in IEEE arithmetic) */
START_TEST(add_into)
{
    float y[5] = {1.0f, -2.5f, 1e-8f, 3.0f, 0.1f}, x[5] = {2.0f, 2.5f, 1.0f, -3.0f, 0.2f};
    float y2[5], x2[5];
    memcpy(y2, x, sizeof x), memcpy(x2, y, sizeof y);
    k_add_into(y, x, 5);
    k_add_into(y2, x2, 5);
    const float want[5] = {3.0f, 0.0f, 1.0f + 1e-8f, 0.0f, 0.1f + 0.2f};
    for (int i = 0; i < 5; i++) {
        ck_assert(y[i] == want[i]);
        ck_assert(memcmp(&y[i], &y2[i], sizeof(float)) == 0);
    }
    k_add_into(y, x, 0); /* nothing */
    ck_assert(y[0] == 3.0f);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *c = tcase_create("kernels");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, linear_gradients);
    tcase_add_test(c, add_into);
    tcase_add_test(c, linear_reference);
    tcase_add_test(c, linear_short_swapped);
    tcase_add_loop_test(c, conv2d_matches_direct, 0, NCONVS);
    tcase_add_loop_test(c, conv2d_gradients, 0, NCONVS);
    tcase_add_test(c, split_backward_is_bitwise);
    tcase_add_test(c, maxpool_gradients_and_padding);
    tcase_add_test(c, maxpool_ties_pick_the_first);
    tcase_add_test(c, maxpool_matches_the_window_rule);
    tcase_add_test(c, avgpool_gradients);
    tcase_add_test(c, adaptive_avgpool_windows);
    tcase_add_loop_test(c, elementwise_gradients, 0, EW_N);
    tcase_add_test(c, elementwise_extremes);
    tcase_add_test(c, gelu_exp_accuracy);
    tcase_add_test(c, layernorm_gradients);
    tcase_add_test(c, layernorm_wide_rows);
    tcase_add_test(c, batchnorm2d_gradients);
    tcase_add_test(c, transpose_copies);
    tcase_add_test(c, embedding_gradients);
    tcase_add_loop_test(c, attention_gradients, 0, ATT_N);
    tcase_add_test(c, attention_fully_masked_sample);
    tcase_add_loop_test(c, attention_long, 0, 2);
    tcase_add_test(c, cross_entropy_loss_and_gradient);
    tcase_add_test(c, cross_entropy_is_stable);
    tcase_add_test(c, mse_loss_and_gradient);
    tcase_add_test(c, philox_known_answers);
    tcase_add_test(c, dropout_mask_rate_and_repeat);
    tcase_add_test(c, init_bounds_and_moments);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    /* the kernels' contract is single-threaded; OpenBLAS would otherwise
     * spread a GEMM over every core */
    openblas_set_num_threads(1);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
