/* tests/test_llama.c: the llama_block kernel (kernels/k_llama.h) and its
 * pieces (k_cpu.h: rmsnorm, RoPE, SwiGLU).
 *
 * The forward against a naive double-precision LLaMA decoder layer written
 * from Hugging Face's definitions (RMSNorm, rotate_half RoPE with inv_freq
 * 1 / theta^(2i / hd), repeat_kv, masked softmax, SiLU-gated MLP); the
 * backward against central finite differences of the whole block (L =
 * sum(out * g) for a fixed random g, accumulated in double): every entry of
 * din and a few entries of each of the 9 parameter gradients, with grouped
 * query attention (H = 4, K = 2), multi-query (K = 1) and multi-head
 * (K = H), causal and not, without a mask, with a padding mask that leaves
 * one query with no key, and with a sample that is all padding. Also: every
 * float of saved and dsaved is written, scratch contents do not matter,
 * weight gradients accumulate, the same calls give the same bits, the
 * weight half run later (after another micro-batch's calls through the same
 * scratch) gives the bits of the unsplit backward, the sizes, the RoPE
 * table and rotation against their formulas (the backward the transpose),
 * rmsnorm and SwiGLU against finite differences, and the LLaMA rule for
 * the hidden width. Inputs come from a fixed LCG, so every run is the same.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_cpu.h"
#include "k_llama.h"
#include "ktestutil.h"
#include "ktp.h"

static const char *const pnames[9] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj", "input_layernorm", "post_attention_layernorm"};

static void fill_nan(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
}

static double absmax(const float *a, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

/* ---- one block with its parameters and buffers ------------------------------------ */

typedef struct Blk {
    KLlama g;
    int64_t B;
    const float *mask;
    float *x, *out, *saved, *scratch;
    float *p[9];
    int64_t np[9], nx, nsaved, nscratch;
} Blk;

static void blk_init(Blk *c, int64_t B, int64_t t, int64_t d, int64_t H, int64_t K, int64_t f, int causal,
                     const float *mask, float theta)
{
    memset(c, 0, sizeof *c);
    c->g = (KLlama){.t = t, .d = d, .heads = H, .kv_heads = K, .f = f, .causal = causal, .eps = 1e-5f, .theta = theta};
    c->B = B;
    c->mask = mask;
    c->nx = B * t * d;
    int64_t dk = k_llama_kv_width(&c->g);
    int64_t np[9] = {d * d, dk * d, dk * d, d * d, f * d, f * d, d * f, d, d};
    memcpy(c->np, np, sizeof np);
    c->x = frand(c->nx, -2, 2);
    for (int k = 0; k < 9; k++) {
        float s = k == 6 ? 1.0f / sqrtf((float)f) : 1.0f / sqrtf((float)d);
        c->p[k] = k >= 7 ? frand(np[k], 0.5f, 1.5f) : frand(np[k], -s, s);
    }
    c->out = fnan(c->nx);
    c->nsaved = B * k_llama_saved_floats(&c->g);
    c->saved = fnan(c->nsaved);
    c->nscratch = k_llama_scratch_floats(&c->g, B);
    c->scratch = fnan(c->nscratch);
}

static void blk_free(Blk *c)
{
    free(c->x), free(c->out), free(c->saved), free(c->scratch);
    for (int k = 0; k < 9; k++)
        free(c->p[k]);
}

static void blk_forward(Blk *c)
{
    fill_nan(c->scratch, c->nscratch);
    k_llama_forward(c->out, c->saved, c->x, c->mask, (const float *const *)c->p, c->B, &c->g, c->scratch);
}

static void blk_backward(Blk *c, float *din, float *dsaved, float *const grads[9], const float *dout)
{
    fill_nan(c->scratch, c->nscratch);
    k_llama_backward_input(din, dsaved, dout, c->x, c->saved, c->mask, (const float *const *)c->p, c->B, &c->g,
                           c->scratch);
    fill_nan(c->scratch, c->nscratch);
    k_llama_backward_weight(grads, dsaved, c->x, c->saved, c->B, &c->g, c->scratch);
}

static double blk_loss(Blk *c, const float *g)
{
    blk_forward(c);
    double s = 0.0;
    for (int64_t i = 0; i < c->nx; i++)
        s += (double)c->out[i] * g[i];
    return s;
}

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

/* ---- the naive reference: HF's definitions in double ----------------------------------- */

static void ref_rmsnorm(double *y, const double *x, const float *w, int64_t n, int64_t d, double eps)
{
    for (int64_t i = 0; i < n; i++) {
        double ms = 0;
        for (int64_t j = 0; j < d; j++)
            ms += x[i * d + j] * x[i * d + j];
        double r = 1.0 / sqrt(ms / (double)d + eps);
        for (int64_t j = 0; j < d; j++)
            y[i * d + j] = x[i * d + j] * r * w[j];
    }
}

static void ref_linear(double *y, const double *x, const float *w, int64_t n, int64_t in, int64_t out)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = 0;
            for (int64_t k = 0; k < in; k++)
                s += x[i * in + k] * w[o * in + k];
            y[i * out + o] = s;
        }
}

/* rotate_half RoPE on n rows of `heads` heads (positions r % t), in double */
static void ref_rope(double *x, int64_t n, int64_t t, int64_t heads, int64_t hd, double theta)
{
    int64_t half = hd / 2;
    for (int64_t r = 0; r < n; r++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < half; i++) {
                double a = (double)(r % t) / pow(theta, (double)(2 * i) / (double)hd);
                double *v = x + (r * heads + h) * hd;
                double x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cos(a) - x2 * sin(a);
                v[i + half] = x2 * cos(a) + x1 * sin(a);
            }
}

static void ref_block(double *out, const Blk *c)
{
    int64_t B = c->B, t = c->g.t, d = c->g.d, H = c->g.heads, K = c->g.kv_heads, f = c->g.f, n = B * t;
    int64_t hd = d / H, dk = hd * K, rep = H / K;
    double *x = malloc((size_t)(n * d) * sizeof(double)), *a = malloc((size_t)(n * d) * sizeof(double));
    double *q = malloc((size_t)(n * d) * sizeof(double)), *k = malloc((size_t)(n * dk) * sizeof(double));
    double *v = malloc((size_t)(n * dk) * sizeof(double)), *ctx = malloc((size_t)(n * d) * sizeof(double));
    double *h = malloc((size_t)(n * d) * sizeof(double)), *gt = malloc((size_t)(n * f) * sizeof(double));
    double *up = malloc((size_t)(n * f) * sizeof(double)), *s = malloc((size_t)t * sizeof(double));
    for (int64_t i = 0; i < n * d; i++)
        x[i] = c->x[i];
    ref_rmsnorm(a, x, c->p[7], n, d, c->g.eps);
    ref_linear(q, a, c->p[0], n, d, d);
    ref_linear(k, a, c->p[1], n, d, dk);
    ref_linear(v, a, c->p[2], n, d, dk);
    ref_rope(q, n, t, H, hd, c->g.theta);
    ref_rope(k, n, t, K, hd, c->g.theta);
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < t; i++) {
                const double *qi = q + (b * t + i) * d + hh * hd;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < t; j++) {
                    const double *kj = k + (b * t + j) * dk + (hh / rep) * hd;
                    int masked = (c->g.causal && j > i) || (c->mask && c->mask[b * t + j] == 0);
                    double dot = 0;
                    for (int64_t e = 0; e < hd; e++)
                        dot += qi[e] * kj[e];
                    s[j] = masked ? -INFINITY : dot / sqrt((double)hd);
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < t; j++)
                    sum += s[j] = isinf(mx) ? 0 : exp(s[j] - mx);
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < t; j++)
                        o += (sum > 0 ? s[j] / sum : 0) * v[(b * t + j) * dk + (hh / rep) * hd + e];
                    ctx[(b * t + i) * d + hh * hd + e] = o;
                }
            }
    ref_linear(h, ctx, c->p[3], n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        h[i] += x[i];
    ref_rmsnorm(a, h, c->p[8], n, d, c->g.eps);
    ref_linear(gt, a, c->p[4], n, d, f);
    ref_linear(up, a, c->p[5], n, d, f);
    for (int64_t i = 0; i < n * f; i++)
        gt[i] = gt[i] / (1 + exp(-gt[i])) * up[i];
    ref_linear(out, gt, c->p[6], n, f, d);
    for (int64_t i = 0; i < n * d; i++)
        out[i] += h[i];
    free(x), free(a), free(q), free(k), free(v), free(ctx), free(h), free(gt), free(up), free(s);
}

/* ---- the cases ---------------------------------------------------------------------- */

/* B = 2, T = 5; masks as test_block.c's */
enum { M_NONE, M_ROW, M_SAMPLE, M_N };
static const float mask_row[10] = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static const float mask_sample[10] = {1, 1, 0, 1, 1, 0, 0, 0, 0, 0};
static const char *const mask_names[M_N] = {"no mask", "padding mask", "padded sample"};
static const int kvs[3] = {2, 1, 4}; /* of H = 4: grouped, multi-query, multi-head */

static const float *case_mask(int m)
{
    return m == M_ROW ? mask_row : m == M_SAMPLE ? mask_sample : NULL;
}

/* case i: causal = i % 2, mask = i / 2 % 3, kv_heads = kvs[i / 6] */
static void case_init(Blk *c, int i, uint32_t seed)
{
    rng_seed(seed + (uint32_t)i);
    blk_init(c, 2, 5, 16, 4, kvs[i / 6], 12, i % 2, case_mask(i / 2 % 3), i / 6 == 1 ? 500.0f : 10000.0f);
}

START_TEST(llama_forward_reference)
{
    Blk c;
    case_init(&c, _i, 2000);
    blk_forward(&c);
    double *ref = malloc((size_t)c.nx * sizeof(double));
    ref_block(ref, &c);
    double mx = 0;
    for (int64_t i = 0; i < c.nx; i++)
        mx = fmax(mx, fabs(ref[i]));
    for (int64_t i = 0; i < c.nx; i++)
        REQUIRE(isfinite(c.out[i]) && fabs(c.out[i] - ref[i]) <= 1e-5 * mx, "K %lld, %s%s out[%lld]: %.9g, want %.9g",
                (long long)c.g.kv_heads, c.g.causal ? "causal, " : "", mask_names[_i / 2 % 3], (long long)i, c.out[i],
                ref[i]);
    for (int64_t i = 0; i < c.nsaved; i++)
        REQUIRE(isfinite(c.saved[i]), "saved[%lld] = %g after the forward", (long long)i, c.saved[i]);
    free(ref);
    blk_free(&c);
}
END_TEST

START_TEST(llama_gradients)
{
    Blk c;
    case_init(&c, _i, 3000);
    char what[96];
    int64_t ndsaved = c.B * k_llama_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[9];
    for (int k = 0; k < 9; k++)
        grads[k] = fzero(c.np[k]);
    blk_forward(&c);
    blk_backward(&c, din, dsaved, grads, g);
    for (int64_t i = 0; i < ndsaved; i++)
        REQUIRE(isfinite(dsaved[i]), "dsaved[%lld] = %g after the input half", (long long)i, dsaved[i]);
    const char *cs = c.g.causal ? "causal, " : "";
    snprintf(what, sizeof what, "K %lld, %s%s din", (long long)c.g.kv_heads, cs, mask_names[_i / 2 % 3]);
    double amax = absmax(din, c.nx);
    for (int64_t i = 0; i < c.nx; i++)
        check_fd_at(what, i, &c, g, c.x, din[i], amax, 1e-2f);
    for (int k = 0; k < 9; k++) {
        snprintf(what, sizeof what, "K %lld, %s%s %s", (long long)c.g.kv_heads, cs, mask_names[_i / 2 % 3], pnames[k]);
        amax = absmax(grads[k], c.np[k]);
        int64_t at[5] = {0, c.np[k] - 1, 0, 0, 0};
        for (int e = 2; e < 5; e++)
            at[e] = (int64_t)(rnd(0, 1) * (float)c.np[k]) % c.np[k];
        for (int e = 0; e < 5; e++)
            check_fd_at(what, at[e], &c, g, c.p[k], grads[k][at[e]], amax, 1e-2f);
    }
    if (_i / 2 % 3 == M_SAMPLE) {
        /* the padded sample's attention is all zeros: no gradient reaches
         * its queries, keys or values */
        KLlamaDsaved q = k_llama_dsaved_layout(&c.g, c.B);
        int64_t per = c.g.t * c.g.d, perk = c.g.t * k_llama_kv_width(&c.g);
        for (int64_t i = 0; i < per; i++)
            ck_assert_float_eq(dsaved[q.dq + per + i], 0.0f);
        for (int64_t i = 0; i < perk; i++) {
            ck_assert_float_eq(dsaved[q.dk + perk + i], 0.0f);
            ck_assert_float_eq(dsaved[q.dv + perk + i], 0.0f);
        }
    }
    free(g), free(din), free(dsaved);
    for (int k = 0; k < 9; k++)
        free(grads[k]);
    blk_free(&c);
}
END_TEST

/* The same calls give the same bits from NaN-filled outputs; a second
 * weight half adds the gradient again; the weight half run after another
 * micro-batch's forward and input half (other inputs, the same scratch)
 * gives the unsplit backward's bits. */
START_TEST(llama_repeats_accumulates_splits)
{
    Blk c;
    rng_seed(4000);
    blk_init(&c, 2, 5, 16, 4, 2, 12, 1, mask_row, 10000.0f);
    int64_t ndsaved = c.B * k_llama_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[9], *once[9], *split[9];
    for (int k = 0; k < 9; k++)
        grads[k] = fzero(c.np[k]), once[k] = fzero(c.np[k]), split[k] = fzero(c.np[k]);
    blk_forward(&c);
    float *out1 = malloc((size_t)c.nx * sizeof(float)), *saved1 = malloc((size_t)c.nsaved * sizeof(float));
    memcpy(out1, c.out, (size_t)c.nx * sizeof(float));
    memcpy(saved1, c.saved, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, once, g);
    float *din1 = malloc((size_t)c.nx * sizeof(float)), *dsaved1 = malloc((size_t)ndsaved * sizeof(float));
    memcpy(din1, din, (size_t)c.nx * sizeof(float));
    memcpy(dsaved1, dsaved, (size_t)ndsaved * sizeof(float));

    fill_nan(c.out, c.nx), fill_nan(c.saved, c.nsaved), fill_nan(din, c.nx), fill_nan(dsaved, ndsaved);
    blk_forward(&c);
    ck_assert_mem_eq(c.out, out1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(c.saved, saved1, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, grads, g);
    ck_assert_mem_eq(din, din1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(dsaved, dsaved1, (size_t)ndsaved * sizeof(float));
    for (int k = 0; k < 9; k++)
        ck_assert_mem_eq(grads[k], once[k], (size_t)c.np[k] * sizeof(float));

    fill_nan(c.scratch, c.nscratch);
    k_llama_backward_weight(grads, dsaved, c.x, c.saved, c.B, &c.g, c.scratch);
    for (int k = 0; k < 9; k++)
        for (int64_t i = 0; i < c.np[k]; i++)
            REQUIRE(fabsf(grads[k][i] - 2.0f * once[k][i]) <= 1e-6f * fabsf(2.0f * once[k][i]) + 1e-30f,
                    "%s[%lld]: %.9g is not 2 x %.9g", pnames[k], (long long)i, grads[k][i], once[k][i]);

    /* split: A's forward and input half, then B's (other inputs), then A's weight half */
    float *dsA = fnan(ndsaved), *dinA = fnan(c.nx), *savedA = malloc((size_t)c.nsaved * sizeof(float));
    blk_forward(&c);
    memcpy(savedA, c.saved, (size_t)c.nsaved * sizeof(float));
    fill_nan(c.scratch, c.nscratch);
    k_llama_backward_input(dinA, dsA, g, c.x, savedA, c.mask, (const float *const *)c.p, c.B, &c.g, c.scratch);
    float *xB = frand(c.nx, -2, 2), *dinB = fnan(c.nx), *dsB = fnan(ndsaved);
    k_llama_forward(c.out, c.saved, xB, NULL, (const float *const *)c.p, c.B, &c.g, c.scratch);
    k_llama_backward_input(dinB, dsB, g, xB, c.saved, NULL, (const float *const *)c.p, c.B, &c.g, c.scratch);
    k_llama_backward_weight(split, dsA, c.x, savedA, c.B, &c.g, c.scratch);
    ck_assert_mem_eq(dinA, din1, (size_t)c.nx * sizeof(float));
    for (int k = 0; k < 9; k++)
        ck_assert_mem_eq(split[k], once[k], (size_t)c.np[k] * sizeof(float));

    free(g), free(din), free(dsaved), free(out1), free(saved1), free(din1), free(dsaved1);
    free(dsA), free(dinA), free(savedA), free(xB), free(dinB), free(dsB);
    for (int k = 0; k < 9; k++)
        free(grads[k]), free(once[k]), free(split[k]);
    blk_free(&c);
}
END_TEST

/* The per-sample counts follow k_llama.h's layouts:
 * saved = T (5D + 2Dk + 3F + 2) + H T^2, dsaved = T (5D + 2Dk + 2F),
 * scratch = B T (6D + max(D, F)) + T hd. */
START_TEST(llama_sizes)
{
    /* hd 16, Dk 32 */
    KLlama g = {.t = 128, .d = 128, .heads = 8, .kv_heads = 2, .f = 344, .causal = 1, .eps = 1e-5f, .theta = 10000.0f};
    ck_assert_int_eq(k_llama_kv_width(&g), 32);
    ck_assert_int_eq(k_llama_saved_floats(&g), 128 * (5 * 128 + 2 * 32 + 3 * 344 + 2) + 8 * 128 * 128);
    ck_assert_int_eq(k_llama_dsaved_floats(&g), 128 * (5 * 128 + 2 * 32 + 2 * 344));
    ck_assert_int_eq(k_llama_scratch_floats(&g, 3), 3 * 128 * (6 * 128 + 344) + 128 * 16);
    /* F < D: tmp follows D */
    KLlama w = {.t = 5, .d = 16, .heads = 4, .kv_heads = 4, .f = 12, .causal = 0, .eps = 1e-5f, .theta = 10000.0f};
    ck_assert_int_eq(k_llama_scratch_floats(&w, 2), 2 * 5 * (6 * 16 + 16) + 5 * 4);
}
END_TEST

/* The table against its formula in double (within an ulp or two of float),
 * the rotation against the pairing, and the backward as the transpose:
 * <rope(x), y> = <x, rope^T(y)>. */
START_TEST(llama_rope)
{
    int64_t t = 7, hd = 6, half = 3, heads = 2, n = 2 * t, ld = heads * hd + 4;
    float cosv[21], sinv[21];
    k_rope_table(cosv, sinv, t, hd, 10000.0f);
    for (int64_t p = 0; p < t; p++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)p / pow(10000.0, (double)(2 * i) / (double)hd);
            REQUIRE(fabs(cosv[p * half + i] - cos(a)) <= 1e-6 && fabs(sinv[p * half + i] - sin(a)) <= 1e-6,
                    "table at position %lld, %lld: %g %g, want %g %g", (long long)p, (long long)i, cosv[p * half + i],
                    sinv[p * half + i], cos(a), sin(a));
        }
    ck_assert_float_eq(cosv[0], 1.0f);
    ck_assert_float_eq(sinv[0], 0.0f);
    rng_seed(5000);
    float *x = frand(n * ld, -1, 1), *y = frand(n * ld, -1, 1);
    float *rx = malloc((size_t)(n * ld) * sizeof(float)), *ry = malloc((size_t)(n * ld) * sizeof(float));
    memcpy(rx, x, (size_t)(n * ld) * sizeof(float));
    memcpy(ry, y, (size_t)(n * ld) * sizeof(float));
    k_rope_forward(rx, n, ld, t, heads, hd, cosv, sinv);
    k_rope_backward(ry, n, ld, t, heads, hd, cosv, sinv);
    double a = 0, b = 0;
    for (int64_t r = 0; r < n; r++) {
        for (int64_t e = 0; e < heads * hd; e++)
            a += (double)rx[r * ld + e] * y[r * ld + e], b += (double)x[r * ld + e] * ry[r * ld + e];
        for (int64_t e = heads * hd; e < ld; e++) /* past the heads: untouched */
            ck_assert(rx[r * ld + e] == x[r * ld + e] && ry[r * ld + e] == y[r * ld + e]);
        int64_t p = r % t;
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < half; i++) {
                const float *v = x + r * ld + h * hd;
                float c = cosv[p * half + i], s = sinv[p * half + i];
                ck_assert(rx[r * ld + h * hd + i] == v[i] * c - v[i + half] * s);
                ck_assert(rx[r * ld + h * hd + i + half] == v[i + half] * c + v[i] * s);
            }
    }
    REQUIRE(fabs(a - b) <= 1e-5 * fabs(a), "<rope x, y> %.9g, <x, rope^T y> %.9g", a, b);
    free(x), free(y), free(rx), free(ry);
}
END_TEST

/* rmsnorm's two halves and SwiGLU's backward against finite differences
 * (in double, of sum(out * g)); the forward against the formula. */
START_TEST(llama_rmsnorm_swiglu)
{
    int64_t n = 6, d = 300; /* d > K_BLOCK: two blocks of the sum */
    rng_seed(6000);
    float *x = frand(n * d, -2, 2), *w = frand(d, 0.5f, 1.5f), *g = frand(n * d, -1, 1);
    float *y = fnan(n * d), *rstd = fnan(n), *dx = fnan(n * d), *dw = fzero(d);
    k_rmsnorm_forward(y, rstd, x, w, n, d, 1e-5f);
    for (int64_t i = 0; i < n; i++) {
        double ms = 0;
        for (int64_t j = 0; j < d; j++)
            ms += (double)x[i * d + j] * x[i * d + j];
        double r = 1.0 / sqrt(ms / (double)d + 1e-5);
        for (int64_t j = 0; j < d; j++)
            REQUIRE(fabs(y[i * d + j] - x[i * d + j] * r * w[j]) <= 1e-6 * fmax(1, fabs(y[i * d + j])),
                    "rmsnorm y[%lld]", (long long)(i * d + j));
    }
    k_rmsnorm_backward_input(dx, g, x, w, rstd, n, d);
    k_rmsnorm_backward_weight(dw, g, x, rstd, n, d);
    float *tmp = fnan(n * d), *tr = fnan(n);
    for (int pass = 0; pass < 2; pass++) {
        float *v = pass ? w : x, *ana = pass ? dw : dx;
        int64_t at[4] = {0, 17, 299, pass ? 150 : n * d - 1};
        for (int e = 0; e < 4; e++) {
            float s = v[at[e]], eps = 1e-2f;
            double l[2];
            for (int sign = 0; sign < 2; sign++) {
                v[at[e]] = s + (sign ? -eps : eps);
                k_rmsnorm_forward(tmp, tr, x, w, n, d, 1e-5f);
                l[sign] = 0;
                for (int64_t i = 0; i < n * d; i++)
                    l[sign] += (double)tmp[i] * g[i];
            }
            v[at[e]] = s;
            double fd = (l[0] - l[1]) / (2.0 * eps);
            REQUIRE(fabs(fd - ana[at[e]]) <= 1e-2 * fmax(fabs(fd), 1e-2), "rmsnorm %s[%lld]: %g, fd %g",
                    pass ? "dw" : "dx", (long long)at[e], ana[at[e]], fd);
        }
    }
    /* SwiGLU */
    int64_t m = 64;
    float *gt = frand(m, -6, 6), *up = frand(m, -2, 2), *da = frand(m, -1, 1), *act = fnan(m);
    float *dg = fnan(m), *du = fnan(m);
    k_swiglu_forward(act, gt, up, m);
    k_swiglu_backward(dg, du, da, gt, up, m);
    for (int64_t i = 0; i < m; i++) {
        double gg = gt[i], sg = 1 / (1 + exp(-gg));
        REQUIRE(fabs(act[i] - gg * sg * up[i]) <= 1e-6 * fmax(1, fabs(act[i])), "swiglu act[%lld]", (long long)i);
        REQUIRE(fabs(du[i] - da[i] * gg * sg) <= 1e-6 * fmax(1, fabs(du[i])), "swiglu dup[%lld]", (long long)i);
        double dsilu = sg * (1 + gg * (1 - sg));
        REQUIRE(fabs(dg[i] - da[i] * up[i] * dsilu) <= 1e-5 * fmax(1, fabs(dg[i])), "swiglu dgate[%lld]",
                (long long)i);
    }
    free(x), free(w), free(g), free(y), free(rstd), free(dx), free(dw), free(tmp), free(tr);
    free(gt), free(up), free(da), free(act), free(dg), free(du);
}
END_TEST

/* ---- tensor parallel ------------------------------------------------------------------ */

typedef struct TpRank {
    TpMember me;
    KLlama g;
    const Blk *whole;
    float *p[9], *grads[9], *out, *saved, *din, *dsaved, *scratch;
    const float *dout;
    int64_t np[9];
} TpRank;

/* rank r's share of the 9 tensors (k_llama.h, "Tensor parallel"): q, k,
 * v, gate and up by rows, o and down by columns, the norms whole */
static void tp_share(float *out[9], int64_t n[9], float *const a[9], const KLlama *g, int tp, int r)
{
    int64_t d = g->d, f = g->f, dq = d / tp, dk = g->d / g->heads * g->kv_heads / tp, fl = f / tp;
    out[0] = take_rows(a[0], r * dq, dq, d);
    out[1] = take_rows(a[1], r * dk, dk, d);
    out[2] = take_rows(a[2], r * dk, dk, d);
    out[3] = take_cols(a[3], d, d, r * dq, dq);
    out[4] = take_rows(a[4], r * fl, fl, d);
    out[5] = take_rows(a[5], r * fl, fl, d);
    out[6] = take_cols(a[6], d, f, r * fl, fl);
    out[7] = take_rows(a[7], 0, 1, d);
    out[8] = take_rows(a[8], 0, 1, d);
    int64_t part[9] = {dq * d, dk * d, dk * d, d * dq, fl * d, fl * d, d * fl, d, d};
    memcpy(n, part, sizeof part);
}

static void *tp_rank_run(void *arg)
{
    TpRank *m = arg;
    const Blk *c = m->whole;
    const float *const *p = (const float *const *)m->p;
    k_llama_forward(m->out, m->saved, c->x, c->mask, p, c->B, &m->g, m->scratch);
    k_llama_backward_input(m->din, m->dsaved, m->dout, c->x, m->saved, c->mask, p, c->B, &m->g, m->scratch);
    k_llama_backward_weight(m->grads, m->dsaved, c->x, m->saved, c->B, &m->g, m->scratch);
    return NULL;
}

/* The block split over tp = 2 and 4 ranks (threads) against the whole one,
 * grouped-query (8 query heads, 4 kv heads: each rank's query heads find
 * their kv head at home), causal, with a padding mask: out and din the
 * same bits on every rank and within 1e-5 of the whole block's (relative
 * to the largest); each rank's gradients its slice of the whole's, the two
 * norms' the same bits on every rank; saved, dsaved and scratch smaller. */
START_TEST(llama_tensor_parallel)
{
    for (int tp = 2; tp <= TP_MAX; tp *= 2) {
        rng_seed(7000 + (uint32_t)tp);
        Blk c;
        blk_init(&c, 2, 5, 32, 8, 4, 24, 1, mask_row, 10000.0f);
        int64_t ndsaved = c.B * k_llama_dsaved_floats(&c.g);
        float *dout = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[9];
        for (int k = 0; k < 9; k++)
            grads[k] = fzero(c.np[k]);
        blk_forward(&c);
        blk_backward(&c, din, dsaved, grads, dout);
        TpWorld w = {.tp = tp};
        pthread_barrier_init(&w.bar, NULL, (unsigned)tp);
        TpRank rk[TP_MAX];
        void *arg[TP_MAX];
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            memset(m, 0, sizeof *m);
            m->me = (TpMember){&w, r}, m->whole = &c, m->dout = dout;
            m->g = c.g;
            m->g.tp = tp, m->g.tp_rank = r, m->g.tp_sum = tp_sum_threads, m->g.tp_ctx = &m->me;
            arg[r] = m;
            REQUIRE(k_llama_saved_floats(&m->g) < k_llama_saved_floats(&c.g) &&
                        k_llama_dsaved_floats(&m->g) < k_llama_dsaved_floats(&c.g) &&
                        k_llama_scratch_floats(&m->g, c.B) < k_llama_scratch_floats(&c.g, c.B),
                    "tp %d: saved, dsaved and scratch shrink", tp);
            tp_share(m->p, m->np, c.p, &c.g, tp, r);
            for (int k = 0; k < 9; k++)
                m->grads[k] = fzero(m->np[k]);
            m->out = fnan(c.nx), m->din = fnan(c.nx);
            m->saved = fnan(c.B * k_llama_saved_floats(&m->g));
            m->dsaved = fnan(c.B * k_llama_dsaved_floats(&m->g));
            m->scratch = fnan(k_llama_scratch_floats(&m->g, c.B));
        }
        tp_run(tp, tp_rank_run, arg);
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            REQUIRE(!memcmp(m->out, rk[0].out, (size_t)c.nx * sizeof(float)), "tp %d: rank %d's out differs", tp, r);
            REQUIRE(!memcmp(m->din, rk[0].din, (size_t)c.nx * sizeof(float)), "tp %d: rank %d's din differs", tp, r);
            require_close("out", tp, m->out, c.out, c.nx, 1e-5);
            require_close("din", tp, m->din, din, c.nx, 1e-5);
            float *want[9];
            int64_t nw[9];
            tp_share(want, nw, grads, &c.g, tp, r);
            for (int k = 0; k < 9; k++) {
                require_close(pnames[k], tp, m->grads[k], want[k], nw[k], 1e-5);
                if (k >= 7)
                    REQUIRE(!memcmp(m->grads[k], rk[0].grads[k], (size_t)nw[k] * sizeof(float)),
                            "tp %d: rank %d's %s differs", tp, r, pnames[k]);
                free(want[k]);
            }
        }
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            for (int k = 0; k < 9; k++)
                free(m->p[k]), free(m->grads[k]);
            free(m->out), free(m->din), free(m->saved), free(m->dsaved), free(m->scratch);
        }
        pthread_barrier_destroy(&w.bar);
        for (int k = 0; k < 9; k++)
            free(grads[k]);
        free(dout), free(din), free(dsaved);
        blk_free(&c);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("llama");
    TCase *c = tcase_create("llama");
    tcase_set_timeout(c, 60);
    tcase_add_loop_test(c, llama_forward_reference, 0, 18);
    tcase_add_loop_test(c, llama_gradients, 0, 18);
    tcase_add_test(c, llama_repeats_accumulates_splits);
    tcase_add_test(c, llama_sizes);
    tcase_add_test(c, llama_rope);
    tcase_add_test(c, llama_rmsnorm_swiglu);
    tcase_add_test(c, llama_tensor_parallel);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    openblas_set_num_threads(1);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
