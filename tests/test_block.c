/* tests/test_block.c: the transformer_block kernel (kernels/k_block.h).
 *
 * The forward against a naive double-precision GPT-2 block written from
 * PyTorch's definitions; the backward against central finite differences
 * of the whole block (L = sum(out * g) for a fixed random g, accumulated in
 * double): every entry of din and a few entries of each of the 12
 * parameter gradients, causal and not, without a mask, with a padding mask
 * that leaves one query with no key at all, and with a sample that is all
 * padding. Also: every float of saved and dsaved is written, scratch
 * contents do not matter, weight gradients accumulate, the same call gives
 * the same bits. Inputs come from a fixed LCG, so every run is the same.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_block.h"

/* ck_assert records every passing check; loops use this instead */
#define REQUIRE(cond, ...)             \
    do {                               \
        if (!(cond))                   \
            ck_abort_msg(__VA_ARGS__); \
    } while (0)

static const char *const pnames[12] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                       "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                                       "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"};

/* ---- helpers ---------------------------------------------------------------------- */

#include "ktestutil.h"

static void fill_nan(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
}

/* ---- one block with its parameters and buffers ------------------------------------ */

typedef struct Blk {
    KBlock g;
    int64_t B;
    const float *mask;         /* (B, T) or NULL */
    float *x, *out, *saved;    /* (B, T, D), (B, T, D), B * saved_floats */
    float *p[12];              /* parameters, PcLayer.param order */
    int64_t np[12];            /* their sizes */
    float *scratch;
    int64_t nx, nsaved, nscratch;
} Blk;

static void blk_init(Blk *c, int64_t B, int64_t t, int64_t d, int64_t H, int64_t f, int causal, const float *mask)
{
    memset(c, 0, sizeof *c);
    c->g = (KBlock){t, d, H, f, causal, 1e-5f, 0.0f};
    c->B = B;
    c->mask = mask;
    c->nx = B * t * d;
    int64_t np[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * f, d};
    memcpy(c->np, np, sizeof np);
    c->x = frand(c->nx, -2, 2);
    for (int k = 0; k < 12; k++) {
        /* layernorm weights around 1, the rest around 0; linear weights
         * about 1 / sqrt(fan in) so activations stay O(1) */
        int ln_w = k == 0 || k == 6, ln_b = k == 1 || k == 7;
        float s = k == 10 || k == 11 ? 1.0f / sqrtf((float)f) : 1.0f / sqrtf((float)d);
        c->p[k] = ln_w ? frand(np[k], 0.5f, 1.5f) : ln_b ? frand(np[k], -0.5f, 0.5f) : frand(np[k], -s, s);
    }
    c->out = fnan(c->nx);
    c->nsaved = B * k_block_saved_floats(&c->g);
    c->saved = fnan(c->nsaved);
    c->nscratch = k_block_scratch_floats(&c->g, B);
    c->scratch = fnan(c->nscratch);
}

static void blk_free(Blk *c)
{
    free(c->x), free(c->out), free(c->saved), free(c->scratch);
    for (int k = 0; k < 12; k++)
        free(c->p[k]);
}

static void blk_forward(Blk *c)
{
    fill_nan(c->scratch, c->nscratch);
    k_block_forward(c->out, c->saved, c->x, c->mask, (const float *const *)c->p, c->B, &c->g, c->scratch);
}

/* din (overwritten), dsaved (written), grads (added to) from dout */
static void blk_backward(Blk *c, float *din, float *dsaved, float *const grads[12], const float *dout)
{
    fill_nan(c->scratch, c->nscratch);
    k_block_backward_input(din, dsaved, dout, c->x, c->saved, c->mask, (const float *const *)c->p, c->B, &c->g,
                           c->scratch);
    fill_nan(c->scratch, c->nscratch);
    k_block_backward_weight(grads, dsaved, c->x, c->saved, c->B, &c->g, c->scratch);
}

/* L = sum(out * g) in double, after a fresh forward */
static double blk_loss(Blk *c, const float *g)
{
    blk_forward(c);
    double s = 0.0;
    for (int64_t i = 0; i < c->nx; i++)
        s += (double)c->out[i] * g[i];
    return s;
}

/* Central difference of L in x[i] against ana. The tolerance has a
 * relative part and an absolute part scaled by the largest analytic entry
 * of the tensor (amax), since an fp32 forward makes small FD entries noisy. */
static void check_fd_at(const char *what, int64_t i, Blk *c, const float *g, float *x, float ana, double amax,
                        float eps)
{
    REQUIRE(isfinite(ana), "%s[%lld]: analytic gradient is %g", what, (long long)i, ana);
    float s = x[i];
    x[i] = s + eps;
    double xp = x[i], lp = blk_loss(c, g);
    x[i] = s - eps;
    double xm = x[i], lm = blk_loss(c, g);
    x[i] = s;
    double fd = (lp - lm) / (xp - xm);
    double err = fabs(fd - ana);
    REQUIRE(err <= 1e-2 * fmax(fabs(fd), fabs(ana)) + 2e-3 * fmax(amax, 1e-2),
            "%s[%lld]: analytic %.7g, finite difference %.7g", what, (long long)i, ana, fd);
}

static double absmax(const float *a, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

/* ---- the naive reference: PyTorch's definitions in double ----------------------- */

static void ref_layernorm(double *y, const double *x, const float *w, const float *b, int64_t n, int64_t d, double eps)
{
    for (int64_t i = 0; i < n; i++) {
        const double *r = x + i * d;
        double m = 0, v = 0;
        for (int64_t j = 0; j < d; j++)
            m += r[j];
        m /= (double)d;
        for (int64_t j = 0; j < d; j++)
            v += (r[j] - m) * (r[j] - m);
        double rs = 1.0 / sqrt(v / (double)d + eps);
        for (int64_t j = 0; j < d; j++)
            y[i * d + j] = (r[j] - m) * rs * w[j] + b[j];
    }
}

static void ref_linear(double *y, const double *x, const float *w, const float *b, int64_t n, int64_t in, int64_t out)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = b[o];
            for (int64_t k = 0; k < in; k++)
                s += x[i * in + k] * w[o * in + k];
            y[i * out + o] = s;
        }
}

/* out (B, T, D) of the block, in double */
static void ref_block(double *out, const Blk *c)
{
    int64_t B = c->B, t = c->g.t, d = c->g.d, H = c->g.heads, f = c->g.f, n = B * t, hd = d / H;
    double *x = malloc((size_t)(n * d) * sizeof(double)), *a = malloc((size_t)(n * d) * sizeof(double));
    double *qkv = malloc((size_t)(n * 3 * d) * sizeof(double)), *ctx = malloc((size_t)(n * d) * sizeof(double));
    double *h = malloc((size_t)(n * d) * sizeof(double)), *fc = malloc((size_t)(n * f) * sizeof(double));
    double *s = malloc((size_t)t * sizeof(double));
    for (int64_t i = 0; i < n * d; i++)
        x[i] = c->x[i];
    ref_layernorm(a, x, c->p[0], c->p[1], n, d, c->g.eps);
    ref_linear(qkv, a, c->p[2], c->p[3], n, d, 3 * d);
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < t; i++) {
                const double *q = qkv + (b * t + i) * 3 * d + hh * hd;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < t; j++) {
                    const double *k = qkv + (b * t + j) * 3 * d + d + hh * hd;
                    int masked = (c->g.causal && j > i) || (c->mask && c->mask[b * t + j] == 0);
                    double dot = 0;
                    for (int64_t e = 0; e < hd; e++)
                        dot += q[e] * k[e];
                    s[j] = masked ? -INFINITY : dot / sqrt((double)hd);
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < t; j++) /* all masked: zeros (torch: NaN, then nan_to_num) */
                    sum += s[j] = isinf(mx) ? 0 : exp(s[j] - mx);
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < t; j++)
                        o += (sum > 0 ? s[j] / sum : 0) * qkv[(b * t + j) * 3 * d + 2 * d + hh * hd + e];
                    ctx[(b * t + i) * d + hh * hd + e] = o;
                }
            }
    ref_linear(h, ctx, c->p[4], c->p[5], n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        h[i] += x[i];
    ref_layernorm(a, h, c->p[6], c->p[7], n, d, c->g.eps);
    ref_linear(fc, a, c->p[8], c->p[9], n, d, f);
    for (int64_t i = 0; i < n * f; i++) {
        double z = fc[i];
        fc[i] = 0.5 * z * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (z + 0.044715 * z * z * z)));
    }
    ref_linear(out, fc, c->p[10], c->p[11], n, f, d);
    for (int64_t i = 0; i < n * d; i++)
        out[i] += h[i];
    free(x), free(a), free(qkv), free(ctx), free(h), free(fc), free(s);
}

/* ---- the tests ---------------------------------------------------------------------- */

/* B = 2, T = 5. MASK_ROW: sample 0's key 0 is padding (with causal, its
 * query 0 sees no key at all: a fully masked row), sample 1's last two
 * positions are padding. MASK_SAMPLE: sample 1 is all padding (every one
 * of its rows fully masked, causal or not). */
enum { M_NONE, M_ROW, M_SAMPLE, M_N };
static const float mask_row[10] = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static const float mask_sample[10] = {1, 1, 0, 1, 1, 0, 0, 0, 0, 0};
static const char *const mask_names[M_N] = {"no mask", "padding mask", "padded sample"};

static const float *case_mask(int m)
{
    return m == M_ROW ? mask_row : m == M_SAMPLE ? mask_sample : NULL;
}

START_TEST(block_forward_reference)
{
    int causal = _i % 2, m = _i / 2;
    rng_seed(2000 + (uint32_t)_i);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, causal, case_mask(m));
    blk_forward(&c);
    double *ref = malloc((size_t)c.nx * sizeof(double));
    ref_block(ref, &c);
    double mx = 0;
    for (int64_t i = 0; i < c.nx; i++)
        mx = fmax(mx, fabs(ref[i]));
    for (int64_t i = 0; i < c.nx; i++)
        REQUIRE(isfinite(c.out[i]) && fabs(c.out[i] - ref[i]) <= 1e-5 * mx, "%s%s out[%lld]: %.9g, want %.9g",
                causal ? "causal, " : "", mask_names[m], (long long)i, c.out[i], ref[i]);
    /* the forward writes every saved float (fully masked rows as zeros) */
    for (int64_t i = 0; i < c.nsaved; i++)
        REQUIRE(isfinite(c.saved[i]), "saved[%lld] = %g after the forward", (long long)i, c.saved[i]);
    free(ref);
    blk_free(&c);
}
END_TEST

START_TEST(block_gradients)
{
    int causal = _i % 2, m = _i / 2;
    char what[96];
    rng_seed(3000 + (uint32_t)_i);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, causal, case_mask(m));
    int64_t ndsaved = c.B * k_block_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[12];
    for (int k = 0; k < 12; k++)
        grads[k] = fzero(c.np[k]);
    blk_forward(&c);
    blk_backward(&c, din, dsaved, grads, g);
    for (int64_t i = 0; i < ndsaved; i++)
        REQUIRE(isfinite(dsaved[i]), "dsaved[%lld] = %g after the input half", (long long)i, dsaved[i]);

    /* every entry of din */
    snprintf(what, sizeof what, "%s%s din", causal ? "causal, " : "", mask_names[m]);
    double amax = absmax(din, c.nx);
    for (int64_t i = 0; i < c.nx; i++)
        check_fd_at(what, i, &c, g, c.x, din[i], amax, 1e-2f);
    /* five entries of each parameter gradient: both ends and three from
     * the LCG (a weight matrix's entries are all alike) */
    for (int k = 0; k < 12; k++) {
        snprintf(what, sizeof what, "%s%s %s", causal ? "causal, " : "", mask_names[m], pnames[k]);
        amax = absmax(grads[k], c.np[k]);
        int64_t at[5] = {0, c.np[k] - 1, 0, 0, 0};
        for (int e = 2; e < 5; e++)
            at[e] = (int64_t)(rnd(0, 1) * (float)c.np[k]) % c.np[k];
        for (int e = 0; e < 5; e++)
            check_fd_at(what, at[e], &c, g, c.p[k], grads[k][at[e]], amax, 1e-2f);
    }
    if (m == M_SAMPLE) {
        /* the padded sample's attention is all zeros: h = x + proj.bias, so
         * its queries, keys and values get no gradient at all */
        const float *dqkv = dsaved; /* dsaved's first section, (B, T, 3D) */
        for (int64_t i = c.g.t * 3 * c.g.d; i < 2 * c.g.t * 3 * c.g.d; i++)
            ck_assert_float_eq(dqkv[i], 0.0f);
    }
    free(g), free(din), free(dsaved);
    for (int k = 0; k < 12; k++)
        free(grads[k]);
    blk_free(&c);
}
END_TEST

/* Two weight halves add twice the gradient; the same calls give the same
 * bits (forward, input half, weight half), whatever the scratch holds. */
START_TEST(block_accumulates_and_repeats)
{
    rng_seed(4000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 1, mask_row);
    int64_t ndsaved = c.B * k_block_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[12], *once[12];
    for (int k = 0; k < 12; k++)
        grads[k] = fzero(c.np[k]), once[k] = fzero(c.np[k]);
    blk_forward(&c);
    float *out1 = malloc((size_t)c.nx * sizeof(float)), *saved1 = malloc((size_t)c.nsaved * sizeof(float));
    memcpy(out1, c.out, (size_t)c.nx * sizeof(float));
    memcpy(saved1, c.saved, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, once, g);
    float *din1 = malloc((size_t)c.nx * sizeof(float)), *dsaved1 = malloc((size_t)ndsaved * sizeof(float));
    memcpy(din1, din, (size_t)c.nx * sizeof(float));
    memcpy(dsaved1, dsaved, (size_t)ndsaved * sizeof(float));

    /* again from NaN-filled outputs: the same bits */
    fill_nan(c.out, c.nx), fill_nan(c.saved, c.nsaved), fill_nan(din, c.nx), fill_nan(dsaved, ndsaved);
    blk_forward(&c);
    ck_assert_mem_eq(c.out, out1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(c.saved, saved1, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, grads, g);
    ck_assert_mem_eq(din, din1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(dsaved, dsaved1, (size_t)ndsaved * sizeof(float));
    for (int k = 0; k < 12; k++)
        ck_assert_mem_eq(grads[k], once[k], (size_t)c.np[k] * sizeof(float));

    /* a second weight half on the same dsaved: twice the gradient */
    fill_nan(c.scratch, c.nscratch);
    k_block_backward_weight(grads, dsaved, c.x, c.saved, c.B, &c.g, c.scratch);
    for (int k = 0; k < 12; k++)
        for (int64_t i = 0; i < c.np[k]; i++)
            REQUIRE(fabsf(grads[k][i] - 2.0f * once[k][i]) <= 1e-6f * fabsf(2.0f * once[k][i]) + 1e-30f,
                    "%s[%lld]: %.9g is not 2 x %.9g", pnames[k], (long long)i, grads[k][i], once[k][i]);
    free(g), free(din), free(dsaved), free(out1), free(saved1), free(din1), free(dsaved1);
    for (int k = 0; k < 12; k++)
        free(grads[k]), free(once[k]);
    blk_free(&c);
}
END_TEST

/* The per-sample counts follow the layout in k_block.c:
 * saved = 7 T D + 4 T + H T^2 + 2 T F, dsaved = T (7 D + F). */
START_TEST(block_sizes)
{
    KBlock g = {128, 128, 4, 512, 1, 1e-5f, 0.0f};
    ck_assert_int_eq(k_block_saved_floats(&g), 7 * 128 * 128 + 4 * 128 + 4 * 128 * 128 + 2 * 128 * 512);
    ck_assert_int_eq(k_block_dsaved_floats(&g), 128 * (7 * 128 + 512));
    ck_assert_int_eq(k_block_scratch_floats(&g, 3), 3 * 128 * 512);
    KBlock w = {5, 8, 2, 6, 0, 1e-5f, 0.0f}; /* F < D: scratch follows D */
    ck_assert_int_eq(k_block_scratch_floats(&w, 2), 2 * 5 * 8);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("block");
    TCase *c = tcase_create("block");
    tcase_set_timeout(c, 60);
    tcase_add_loop_test(c, block_forward_reference, 0, 2 * M_N);
    tcase_add_loop_test(c, block_gradients, 0, 2 * M_N);
    tcase_add_test(c, block_accumulates_and_repeats);
    tcase_add_test(c, block_sizes);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    /* the kernels' contract is single-threaded */
    openblas_set_num_threads(1);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
