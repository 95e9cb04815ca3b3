/* tests/test_cuda_kernels.c: every CUDA kernel (kernels/k_cuda.h) against
 * its CPU kernel (k_cpu.h, k_block.h, k_llama.h, runtime/rt_optim.c) on the same
 * random inputs.
 *
 * Each check prints one line: the kernel, the precision, the relative error
 * ||gpu - cpu|| / ||cpu|| (over every output array of the call) and its
 * limit. Limits: 1e-5 for fp32 everywhere; for the matrix products, 1e-3 in
 * tf32 and 1e-2 in bf16 for one product (linear, conv2d), 5e-3 and 2e-2
 * for the composites whose error goes through several products in a row
 * (attention: S then P V, or dP then dS K; transformer_block and
 * llama_block: up to ten).
 * Kernels that repeat the CPU's arithmetic exactly (relu, dropout and its
 * Philox masks, embedding, pooling with its indices, the optimizers, the
 * scale, the casts) must match bit for bit. Every output is poisoned (all
 * bits set: NaN floats, index -1) before the GPU call, so an element left
 * unwritten fails; outputs that accumulate start from random values on both
 * sides. Also: the same call twice gives the same bits, and the error path
 * (too small a workspace: a sticky error with a message).
 *
 * Without a CUDA device (cudaGetDeviceCount fails or finds none) it prints
 * "skipped: no CUDA device" and exits 77, which ctest counts as skipped.
 * No Check: it must build where only the CUDA toolkit is (scripts/gpu-check.sh). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "k_block.h"
#include "k_llama.h"
#include "k_cpu.h"
#include "k_cuda.h"
#include "rt_optim.h"

static KcCtx ctx;
static int nchecks, nfails;

/* ---- host helpers -------------------------------------------------------------------- */

static uint32_t lcg = 12345u;

static float rnd(float lo, float hi)
{
    lcg = lcg * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(lcg >> 8) * 0x1p-24f;
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        printf("out of host memory\n");
        exit(1);
    }
    return p;
}

static float *hrand(int64_t n, float lo, float hi)
{
    float *p = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = rnd(lo, hi);
    return p;
}

static float *hcopy(const float *a, int64_t n)
{
    float *p = xmalloc((size_t)n * sizeof(float));
    memcpy(p, a, (size_t)n * sizeof(float));
    return p;
}

/* ---- device helpers (all on ctx.stream, so ordered with the kernels) ------------------ */

static void cuda_ok(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        printf("FAIL %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    cuda_ok(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    return p;
}

static void up(void *d, const void *h, size_t bytes)
{
    cuda_ok(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, ctx.stream), "upload");
}

static void down(void *h, const void *d, size_t bytes)
{
    cuda_ok(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, ctx.stream), "download");
    cuda_ok(cudaStreamSynchronize(ctx.stream), "download (synchronise)");
}

static void poison(void *d, size_t bytes)
{
    cuda_ok(cudaMemsetAsync(d, 0xff, bytes, ctx.stream), "poison");
}

/* a device copy of h (n floats) */
static float *dput(const float *h, int64_t n)
{
    float *d = dalloc((size_t)n * sizeof(float));
    up(d, h, (size_t)n * sizeof(float));
    return d;
}

/* n poisoned device floats */
static float *dnan(int64_t n)
{
    float *d = dalloc((size_t)n * sizeof(float));
    poison(d, (size_t)n * sizeof(float));
    return d;
}

/* a host copy of d (n floats) */
static float *hget(const float *d, int64_t n)
{
    float *h = xmalloc((size_t)n * sizeof(float));
    down(h, d, (size_t)n * sizeof(float));
    return h;
}

static void dfree(void *d)
{
    cuda_ok(cudaFree(d), "cudaFree");
}

/* ---- checks ----------------------------------------------------------------------------- */

/* a kc_ call: a failure prints the context's message and clears it */
static int kc_ok(int rc, const char *what)
{
    if (rc == KC_OK)
        return 1;
    printf("FAIL %s: error %d: %s\n", what, rc, ctx.msg);
    nchecks++, nfails++;
    kc_clear_error(&ctx);
    return 0;
}
#define KC(call) kc_ok((call), #call)

/* Accumulates ||gpu - cpu||^2 and ||cpu||^2 over several arrays; a NaN
 * where the CPU has a number (or the reverse) counts as infinite error. */
typedef struct Err {
    double diff, ref;
    int bad, differs;
} Err;

static void err_add(Err *e, const float *gpu, const float *cpu, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (isnan(gpu[i]) || isnan(cpu[i])) { /* any NaN equals any NaN; a NaN against a number fails */
            e->bad |= isnan(gpu[i]) != isnan(cpu[i]);
            continue;
        }
        if (isinf(gpu[i]) || isinf(cpu[i])) {
            e->bad |= gpu[i] != cpu[i];
            continue;
        }
        if (memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0)
            e->differs = 1;
        double d = (double)gpu[i] - (double)cpu[i];
        e->diff += d * d;
        e->ref += (double)cpu[i] * (double)cpu[i];
    }
}

/* gpu is a device array: fetched, compared, freed on the host side */
static void err_dev(Err *e, const float *dgpu, const float *cpu, int64_t n)
{
    float *g = hget(dgpu, n);
    err_add(e, g, cpu, n);
    free(g);
}

static double err_rel(const Err *e)
{
    if (e->bad)
        return INFINITY;
    return e->ref > 0 ? sqrt(e->diff / e->ref) : sqrt(e->diff);
}

static void report(const char *what, const char *prec, const Err *e, double limit)
{
    double r = err_rel(e);
    int ok = r <= limit;
    nchecks++;
    nfails += !ok;
    printf("%-4s %-44s %-5s rel %-9.3g limit %-7.0e%s\n", ok ? "ok" : "FAIL", what, prec, r, limit,
           e->differs ? "" : "  (bit-identical)");
}

/* bit for bit */
static void report_exact(const char *what, const Err *e)
{
    int ok = !e->bad && !e->differs;
    nchecks++;
    nfails += !ok;
    printf("%-4s %-44s %-5s %s\n", ok ? "ok" : "FAIL", what, "", ok ? "bit-identical" : "DIFFERS from the CPU");
}

static void report_bool(const char *what, int ok, const char *detail)
{
    nchecks++;
    nfails += !ok;
    printf("%-4s %-44s %-5s %s\n", ok ? "ok" : "FAIL", what, "", detail);
}

static const KcPrec precs[3] = {KC_FP32, KC_TF32, KC_BF16};
static const double lim_one[3] = {1e-5, 1e-3, 1e-2};  /* one matrix product */
static const double lim_comp[3] = {1e-5, 5e-3, 2e-2}; /* several in a row */
#define LIM_FP32 1e-5

static void reserve(size_t bytes)
{
    KC(kc_reserve(&ctx, bytes));
}

/* ---- linear ------------------------------------------------------------------------------ */

static void test_linear(int pi, int64_t n, int64_t in_f, int64_t out_f, int bias)
{
    KcPrec prec = precs[pi];
    kc_set_precision(&ctx, prec);
    reserve(kc_linear_workspace(&ctx, n, in_f, out_f));
    float *x = hrand(n * in_f, -1, 1), *w = hrand(out_f * in_f, -0.3f, 0.3f), *b = hrand(out_f, -1, 1);
    float *dy = hrand(n * out_f, -1, 1);
    float *dw0 = hrand(out_f * in_f, -0.01f, 0.01f), *db0 = hrand(out_f, -0.01f, 0.01f);
    float *out = xmalloc((size_t)(n * out_f) * sizeof(float)), *dx = xmalloc((size_t)(n * in_f) * sizeof(float));
    float *dw = hcopy(dw0, out_f * in_f), *db = hcopy(db0, out_f);
    k_linear_forward(out, x, w, bias ? b : NULL, n, in_f, out_f, K_FP32, NULL);
    k_linear_backward_input(dx, dy, w, n, in_f, out_f, K_FP32);
    k_linear_backward_weight(dw, bias ? db : NULL, dy, x, n, in_f, out_f, K_FP32, NULL);

    float *d_x = dput(x, n * in_f), *d_w = dput(w, out_f * in_f), *d_b = dput(b, out_f), *d_dy = dput(dy, n * out_f);
    float *d_out = dnan(n * out_f), *d_dx = dnan(n * in_f), *d_dw = dput(dw0, out_f * in_f), *d_db = dput(db0, out_f);
    char what[96];
    Err e = {0};
    KC(kc_linear_forward(&ctx, d_out, d_x, d_w, bias ? d_b : NULL, n, in_f, out_f));
    err_dev(&e, d_out, out, n * out_f);
    snprintf(what, sizeof what, "linear forward %lldx%lld->%lld%s", (long long)n, (long long)in_f, (long long)out_f,
             bias ? "" : " (no bias)");
    report(what, kc_prec_name(prec), &e, lim_one[pi]);
    Err e2 = {0};
    KC(kc_linear_backward_input(&ctx, d_dx, d_dy, d_w, n, in_f, out_f));
    err_dev(&e2, d_dx, dx, n * in_f);
    snprintf(what, sizeof what, "linear backward_input %lldx%lld->%lld", (long long)n, (long long)in_f,
             (long long)out_f);
    report(what, kc_prec_name(prec), &e2, lim_one[pi]);
    Err e3 = {0};
    KC(kc_linear_backward_weight(&ctx, d_dw, bias ? d_db : NULL, d_dy, d_x, n, in_f, out_f));
    err_dev(&e3, d_dw, dw, out_f * in_f);
    snprintf(what, sizeof what, "linear backward_weight dw %lldx%lld->%lld", (long long)n, (long long)in_f,
             (long long)out_f);
    report(what, kc_prec_name(prec), &e3, lim_one[pi]);
    if (bias) {
        Err e4 = {0};
        err_dev(&e4, d_db, db, out_f);
        report("linear backward_weight db (column sums)", kc_prec_name(prec), &e4, LIM_FP32);
    }
    float *fs[] = {x, w, b, dy, dw0, db0, out, dx, dw, db};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    float *ds[] = {d_x, d_w, d_b, d_dy, d_out, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        dfree(ds[i]);
}

/* ---- conv2d --------------------------------------------------------------------------------- */

static KConv conv_geom(int64_t c, int64_t h, int64_t w, int64_t oc, int64_t k, int64_t s, int64_t p)
{
    KConv g = {c, h, w, oc, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1, k, k, s, s, p, p, K_FP32};
    return g;
}

static void test_conv(int pi, const KConv *g, int64_t B)
{
    KcPrec prec = precs[pi];
    kc_set_precision(&ctx, prec);
    KcConvPlan plan;
    if (!KC(kc_conv_plan(&ctx, &plan, g, B, (size_t)256 << 20))) {
        kc_conv_plan_free(&plan);
        return;
    }
    reserve(plan.ws_bytes);
    int64_t nin = B * g->c * g->h * g->w, nout = B * g->oc * g->oh * g->ow, nw = g->oc * g->c * g->kh * g->kw;
    float *x = hrand(nin, -1, 1), *w = hrand(nw, -0.3f, 0.3f), *b = hrand(g->oc, -1, 1), *dy = hrand(nout, -1, 1);
    float *dw0 = hrand(nw, -0.01f, 0.01f), *db0 = hrand(g->oc, -0.01f, 0.01f);
    float *out = xmalloc((size_t)nout * sizeof(float)), *dx = xmalloc((size_t)nin * sizeof(float));
    float *dw = hcopy(dw0, nw), *db = hcopy(db0, g->oc);
    float *scratch = xmalloc((size_t)k_conv2d_scratch(g) * sizeof(float));
    k_conv2d_forward(out, x, w, b, B, g, scratch);
    k_conv2d_backward_input(dx, dy, w, B, g, scratch);
    k_conv2d_backward_weight(dw, db, dy, x, B, g, scratch);

    float *d_x = dput(x, nin), *d_w = dput(w, nw), *d_b = dput(b, g->oc), *d_dy = dput(dy, nout);
    float *d_out = dnan(nout), *d_dx = dnan(nin), *d_dw = dput(dw0, nw), *d_db = dput(db0, g->oc);
    char what[96];
    /* KC_BF16 convolutions run as TF32 (kc_dense.cu): held to tf32's limit */
    double lim = pi == 0 ? lim_one[0] : lim_one[1];
    Err e = {0}, e2 = {0}, e3 = {0}, e4 = {0};
    KC(kc_conv2d_forward(&ctx, &plan, d_out, d_x, d_w, d_b));
    err_dev(&e, d_out, out, nout);
    snprintf(what, sizeof what, "conv2d forward c%lld %lldx%lld oc%lld k%lld s%lld p%lld", (long long)g->c,
             (long long)g->h, (long long)g->w, (long long)g->oc, (long long)g->kh, (long long)g->sh, (long long)g->ph);
    report(what, kc_prec_name(prec), &e, lim);
    KC(kc_conv2d_backward_input(&ctx, &plan, d_dx, d_dy, d_w));
    err_dev(&e2, d_dx, dx, nin);
    report("conv2d backward_input", kc_prec_name(prec), &e2, lim);
    KC(kc_conv2d_backward_weight(&ctx, &plan, d_dw, d_db, d_dy, d_x));
    err_dev(&e3, d_dw, dw, nw);
    report("conv2d backward_weight dw", kc_prec_name(prec), &e3, lim);
    err_dev(&e4, d_db, db, g->oc);
    report("conv2d backward_weight db", kc_prec_name(prec), &e4, LIM_FP32);
    kc_conv_plan_free(&plan);
    float *fs[] = {x, w, b, dy, dw0, db0, out, dx, dw, db, scratch};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    float *ds[] = {d_x, d_w, d_b, d_dy, d_out, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        dfree(ds[i]);
}

/* ---- pooling ------------------------------------------------------------------------------ */

static KPool pool_geom(int64_t c, int64_t h, int64_t w, int64_t k, int64_t s, int64_t p)
{
    KPool g = {c, h, w, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1, k, k, s, s, p, p};
    return g;
}

/* values on a coarse grid (ties everywhere) or distinct-ish ones */
static float *pool_input(int64_t n, int ties)
{
    float *x = hrand(n, -1, 1);
    if (ties)
        for (int64_t i = 0; i < n; i++)
            x[i] = floorf(x[i] * 2.0f); /* -2, -1, 0, 1 */
    return x;
}

static void test_maxpool(const KPool *g, int64_t B, int ties)
{
    int64_t nin = B * g->c * g->h * g->w, nout = B * g->c * g->oh * g->ow;
    float *x = pool_input(nin, ties), *dy = hrand(nout, -1, 1);
    float *out = xmalloc((size_t)nout * sizeof(float)), *dx = xmalloc((size_t)nin * sizeof(float));
    int32_t *idx = xmalloc((size_t)nout * sizeof(int32_t)), *gidx = xmalloc((size_t)nout * sizeof(int32_t));
    k_maxpool2d_forward(out, idx, x, B, g);
    k_maxpool2d_backward(dx, dy, idx, B, g);
    float *d_x = dput(x, nin), *d_dy = dput(dy, nout), *d_out = dnan(nout), *d_dx = dnan(nin);
    int32_t *d_idx = dalloc((size_t)nout * sizeof(int32_t));
    poison(d_idx, (size_t)nout * sizeof(int32_t));
    Err e = {0}, e2 = {0};
    KC(kc_maxpool2d_forward(&ctx, d_out, d_idx, d_x, B, g));
    err_dev(&e, d_out, out, nout);
    down(gidx, d_idx, (size_t)nout * sizeof(int32_t));
    int same = memcmp(gidx, idx, (size_t)nout * sizeof(int32_t)) == 0;
    char what[96];
    snprintf(what, sizeof what, "maxpool2d forward k%lld s%lld p%lld%s", (long long)g->kh, (long long)g->sh,
             (long long)g->ph, ties ? " (ties)" : "");
    report_exact(what, &e);
    report_bool("maxpool2d indices (first maximum on ties)", same, same ? "identical" : "DIFFER from the CPU");
    KC(kc_maxpool2d_backward(&ctx, d_dx, d_dy, d_idx, B, g));
    err_dev(&e2, d_dx, dx, nin);
    report_exact("maxpool2d backward", &e2);
    free(x), free(dy), free(out), free(dx), free(idx), free(gidx);
    dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_dx), dfree(d_idx);
}

static void test_avgpool(const KPool *g, int64_t B)
{
    int64_t nin = B * g->c * g->h * g->w, nout = B * g->c * g->oh * g->ow;
    float *x = hrand(nin, -1, 1), *dy = hrand(nout, -1, 1);
    float *out = xmalloc((size_t)nout * sizeof(float)), *dx = xmalloc((size_t)nin * sizeof(float));
    k_avgpool2d_forward(out, x, B, g);
    k_avgpool2d_backward(dx, dy, B, g);
    float *d_x = dput(x, nin), *d_dy = dput(dy, nout), *d_out = dnan(nout), *d_dx = dnan(nin);
    Err e = {0}, e2 = {0};
    KC(kc_avgpool2d_forward(&ctx, d_out, d_x, B, g));
    err_dev(&e, d_out, out, nout);
    char what[96];
    snprintf(what, sizeof what, "avgpool2d forward k%lld s%lld p%lld", (long long)g->kh, (long long)g->sh,
             (long long)g->ph);
    report_exact(what, &e);
    KC(kc_avgpool2d_backward(&ctx, d_dx, d_dy, B, g));
    err_dev(&e2, d_dx, dx, nin);
    report_exact("avgpool2d backward", &e2);
    free(x), free(dy), free(out), free(dx);
    dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_dx);
}

static void test_adaptive(int64_t B, int64_t c, int64_t h, int64_t w, int64_t oh, int64_t ow)
{
    int64_t nin = B * c * h * w, nout = B * c * oh * ow;
    float *x = hrand(nin, -1, 1), *dy = hrand(nout, -1, 1);
    float *out = xmalloc((size_t)nout * sizeof(float)), *dx = xmalloc((size_t)nin * sizeof(float));
    k_adaptive_avgpool2d_forward(out, x, B, c, h, w, oh, ow);
    k_adaptive_avgpool2d_backward(dx, dy, B, c, h, w, oh, ow);
    float *d_x = dput(x, nin), *d_dy = dput(dy, nout), *d_out = dnan(nout), *d_dx = dnan(nin);
    Err e = {0}, e2 = {0};
    KC(kc_adaptive_avgpool2d_forward(&ctx, d_out, d_x, B, c, h, w, oh, ow));
    err_dev(&e, d_out, out, nout);
    char what[96];
    snprintf(what, sizeof what, "adaptive_avgpool2d forward %lldx%lld->%lldx%lld", (long long)h, (long long)w,
             (long long)oh, (long long)ow);
    report_exact(what, &e);
    KC(kc_adaptive_avgpool2d_backward(&ctx, d_dx, d_dy, B, c, h, w, oh, ow));
    err_dev(&e2, d_dx, dx, nin);
    report_exact("adaptive_avgpool2d backward", &e2);
    free(x), free(dy), free(out), free(dx);
    dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_dx);
}

/* ---- elementwise ----------------------------------------------------------------------------- */

typedef void (*CpuFwd)(float *, const float *, int64_t);
typedef void (*CpuBwd)(float *, const float *, const float *, int64_t);
typedef int (*GpuFwd)(KcCtx *, float *, const float *, int64_t);
typedef int (*GpuBwd)(KcCtx *, float *, const float *, const float *, int64_t);

/* bwd_uses_out: the backward takes the forward's output (tanh, sigmoid),
 * else its input; exact: the CPU's bits are expected */
static void test_activation(const char *name, CpuFwd cf, CpuBwd cb, GpuFwd gf, GpuBwd gb, int bwd_uses_out,
                            int fwd_exact, int bwd_exact)
{
    int64_t n = 100003;
    float *x = hrand(n, -6, 6), *dy = hrand(n, -1, 1);
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 30.0f, x[3] = -30.0f, x[4] = 100.0f, x[5] = -100.0f;
    float *out = xmalloc((size_t)n * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    cf(out, x, n);
    cb(dx, dy, bwd_uses_out ? out : x, n);
    /* the GPU backward gets the CPU's forward output, to test it alone */
    float *d_x = dput(x, n), *d_dy = dput(dy, n), *d_o = dput(out, n), *d_out = dnan(n), *d_dx = dnan(n);
    char what[96];
    Err e = {0}, e2 = {0};
    kc_ok(gf(&ctx, d_out, d_x, n), name);
    err_dev(&e, d_out, out, n);
    snprintf(what, sizeof what, "%s forward", name);
    if (fwd_exact)
        report_exact(what, &e);
    else
        report(what, "", &e, LIM_FP32);
    kc_ok(gb(&ctx, d_dx, d_dy, bwd_uses_out ? d_o : d_x, n), name);
    err_dev(&e2, d_dx, dx, n);
    snprintf(what, sizeof what, "%s backward", name);
    if (bwd_exact)
        report_exact(what, &e2);
    else
        report(what, "", &e2, LIM_FP32);
    free(x), free(dy), free(out), free(dx);
    dfree(d_x), dfree(d_dy), dfree(d_o), dfree(d_out), dfree(d_dx);
}

static void test_dropout(void)
{
    int64_t n = 1001, B = 3; /* n not a multiple of 4: the last Philox call is partial */
    float p = 0.3f;
    uint64_t seed = 0x123456789abcdefULL, step = 7, sample0 = 40;
    uint32_t layer = 5;
    uint8_t *mask = xmalloc((size_t)(n * B)), *gmask = xmalloc((size_t)(n * B));
    for (int64_t s = 0; s < B; s++)
        k_dropout_mask(mask + s * n, n, p, seed, step, sample0 + (uint64_t)s, layer);
    uint8_t *d_mask = dalloc((size_t)(n * B));
    poison(d_mask, (size_t)(n * B));
    KC(kc_dropout_mask(&ctx, d_mask, n, B, p, seed, step, sample0, layer));
    down(gmask, d_mask, (size_t)(n * B));
    int same = memcmp(mask, gmask, (size_t)(n * B)) == 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < n * B; i++)
        kept += mask[i];
    char detail[96];
    snprintf(detail, sizeof detail, "%s (%lld of %lld kept)", same ? "identical" : "DIFFER from the CPU",
             (long long)kept, (long long)(n * B));
    report_bool("dropout masks (Philox4x32-10, p 0.3, 3 samples)", same, detail);

    int64_t m = n * B;
    float *x = hrand(m, -1, 1), *dy = hrand(m, -1, 1);
    float *out = xmalloc((size_t)m * sizeof(float)), *dx = xmalloc((size_t)m * sizeof(float));
    k_dropout_forward(out, x, mask, p, m);
    k_dropout_backward(dx, dy, mask, p, m);
    float *d_x = dput(x, m), *d_dy = dput(dy, m), *d_out = dnan(m), *d_dx = dnan(m);
    Err e = {0}, e2 = {0};
    KC(kc_dropout_forward(&ctx, d_out, d_x, d_mask, p, m));
    err_dev(&e, d_out, out, m);
    report_exact("dropout forward", &e);
    KC(kc_dropout_backward(&ctx, d_dx, d_dy, d_mask, p, m));
    err_dev(&e2, d_dx, dx, m);
    report_exact("dropout backward", &e2);
    free(mask), free(gmask), free(x), free(dy), free(out), free(dx);
    dfree(d_mask), dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_dx);
}

/* ---- layernorm ------------------------------------------------------------------------------- */

static void test_layernorm(int64_t n, int64_t d)
{
    reserve(kc_layernorm_workspace(n, d));
    float *x = hrand(n * d, -2, 3), *w = hrand(d, 0.5f, 1.5f), *b = hrand(d, -0.5f, 0.5f), *dy = hrand(n * d, -1, 1);
    for (int64_t j = 0; j < d; j++)
        x[j] += 100.0f; /* a row with a large offset: the two-pass variance */
    float *dw0 = hrand(d, -0.01f, 0.01f), *db0 = hrand(d, -0.01f, 0.01f);
    float *out = xmalloc((size_t)(n * d) * sizeof(float)), *mean = xmalloc((size_t)n * sizeof(float));
    float *rstd = xmalloc((size_t)n * sizeof(float)), *dx = xmalloc((size_t)(n * d) * sizeof(float));
    float *dw = hcopy(dw0, d), *db = hcopy(db0, d);
    k_layernorm_forward(out, mean, rstd, x, w, b, n, d, 1e-5f);
    k_layernorm_backward_input(dx, dy, x, w, mean, rstd, n, d);
    k_layernorm_backward_weight(dw, db, dy, x, mean, rstd, n, d);
    float *d_x = dput(x, n * d), *d_w = dput(w, d), *d_b = dput(b, d), *d_dy = dput(dy, n * d);
    float *d_out = dnan(n * d), *d_mean = dnan(n), *d_rstd = dnan(n), *d_dx = dnan(n * d);
    float *d_dw = dput(dw0, d), *d_db = dput(db0, d);
    /* the backward halves get the CPU's mean and rstd, to test them alone */
    float *d_cmean = dput(mean, n), *d_crstd = dput(rstd, n);
    char what[96];
    Err e = {0}, e2 = {0}, e3 = {0};
    KC(kc_layernorm_forward(&ctx, d_out, d_mean, d_rstd, d_x, d_w, d_b, n, d, 1e-5f));
    err_dev(&e, d_out, out, n * d);
    err_dev(&e, d_mean, mean, n);
    err_dev(&e, d_rstd, rstd, n);
    snprintf(what, sizeof what, "layernorm forward %lldx%lld (out, mean, rstd)", (long long)n, (long long)d);
    report(what, "", &e, LIM_FP32);
    KC(kc_layernorm_backward_input(&ctx, d_dx, d_dy, d_x, d_w, d_cmean, d_crstd, n, d));
    err_dev(&e2, d_dx, dx, n * d);
    report("layernorm backward_input", "", &e2, LIM_FP32);
    KC(kc_layernorm_backward_weight(&ctx, d_dw, d_db, d_dy, d_x, d_cmean, d_crstd, n, d));
    err_dev(&e3, d_dw, dw, d);
    err_dev(&e3, d_db, db, d);
    report("layernorm backward_weight (dw, db)", "", &e3, LIM_FP32);
    float *fs[] = {x, w, b, dy, dw0, db0, out, mean, rstd, dx, dw, db};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    float *ds[] = {d_x, d_w, d_b, d_dy, d_out, d_mean, d_rstd, d_dx, d_dw, d_db, d_cmean, d_crstd};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        dfree(ds[i]);
}

/* rmsnorm: as layernorm's test; the backward halves get the CPU's rstd */
static void test_rmsnorm(int64_t n, int64_t d)
{
    reserve(kc_rmsnorm_workspace(n, d));
    float *x = hrand(n * d, -2, 3), *w = hrand(d, 0.5f, 1.5f), *dy = hrand(n * d, -1, 1);
    float *dw0 = hrand(d, -0.01f, 0.01f);
    float *out = xmalloc((size_t)(n * d) * sizeof(float)), *rstd = xmalloc((size_t)n * sizeof(float));
    float *dx = xmalloc((size_t)(n * d) * sizeof(float)), *dw = hcopy(dw0, d);
    k_rmsnorm_forward(out, rstd, x, w, n, d, 1e-5f);
    k_rmsnorm_backward_input(dx, dy, x, w, rstd, n, d);
    k_rmsnorm_backward_weight(dw, dy, x, rstd, n, d);
    float *d_x = dput(x, n * d), *d_w = dput(w, d), *d_dy = dput(dy, n * d);
    float *d_out = dnan(n * d), *d_rstd = dnan(n), *d_dx = dnan(n * d), *d_dw = dput(dw0, d);
    float *d_crstd = dput(rstd, n);
    char what[96];
    Err e = {0}, e2 = {0}, e3 = {0};
    KC(kc_rmsnorm_forward(&ctx, d_out, d_rstd, d_x, d_w, n, d, 1e-5f));
    err_dev(&e, d_out, out, n * d);
    err_dev(&e, d_rstd, rstd, n);
    snprintf(what, sizeof what, "rmsnorm forward %lldx%lld (out, rstd)", (long long)n, (long long)d);
    report(what, "", &e, LIM_FP32);
    KC(kc_rmsnorm_backward_input(&ctx, d_dx, d_dy, d_x, d_w, d_crstd, n, d));
    err_dev(&e2, d_dx, dx, n * d);
    report("rmsnorm backward_input", "", &e2, LIM_FP32);
    KC(kc_rmsnorm_backward_weight(&ctx, d_dw, d_dy, d_x, d_crstd, n, d));
    err_dev(&e3, d_dw, dw, d);
    report("rmsnorm backward_weight", "", &e3, LIM_FP32);
    float *fs[] = {x, w, dy, dw0, out, rstd, dx, dw};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    float *ds[] = {d_x, d_w, d_dy, d_out, d_rstd, d_dx, d_dw, d_crstd};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        dfree(ds[i]);
}

/* batchnorm2d over [B, C, HW]: forward (out, mean, rstd) and the running
 * statistics' update and count; eval; the backward halves with the CPU's
 * mean and rstd, as layernorm's test; a forward with no running
 * statistics changes none */
static void test_batchnorm2d(int64_t B, int64_t C, int64_t HW)
{
    int64_t n = B * C * HW;
    float *x = hrand(n, -2, 3), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -0.5f, 0.5f), *dy = hrand(n, -1, 1);
    for (int64_t i = 0; i < B; i++) /* channel 0 with a large offset: the two-pass variance */
        for (int64_t j = 0; j < HW; j++)
            x[i * C * HW + j] += 100.0f;
    float *rm0 = hrand(C, -0.5f, 0.5f), *rv0 = hrand(C, 0.5f, 2.0f), *rm = hcopy(rm0, C), *rv = hcopy(rv0, C);
    float *dw0 = hrand(C, -0.01f, 0.01f), *db0 = hrand(C, -0.01f, 0.01f), *dw = hcopy(dw0, C), *db = hcopy(db0, C);
    float *out = xmalloc((size_t)n * sizeof(float)), *ev = xmalloc((size_t)n * sizeof(float));
    float *mean = xmalloc((size_t)C * sizeof(float)), *rstd = xmalloc((size_t)C * sizeof(float));
    float *dx = xmalloc((size_t)n * sizeof(float));
    int64_t nbt = 5, d_nbt_h = 0;
    k_batchnorm2d_forward(out, mean, rstd, x, w, b, B, C, HW, 1e-5f, rm, rv, &nbt, 0.1);
    k_batchnorm2d_eval(ev, x, w, b, rm, rv, B, C, HW, 1e-5f);
    k_batchnorm2d_backward_input(dx, dy, x, w, mean, rstd, B, C, HW);
    k_batchnorm2d_backward_weight(dw, db, dy, x, mean, rstd, B, C, HW);
    float *d_x = dput(x, n), *d_w = dput(w, C), *d_b = dput(b, C), *d_dy = dput(dy, n);
    float *d_out = dnan(n), *d_ev = dnan(n), *d_mean = dnan(C), *d_rstd = dnan(C), *d_dx = dnan(n);
    float *d_rm = dput(rm0, C), *d_rv = dput(rv0, C), *d_dw = dput(dw0, C), *d_db = dput(db0, C);
    float *d_cmean = dput(mean, C), *d_crstd = dput(rstd, C), *d_crm = dput(rm, C), *d_crv = dput(rv, C);
    int64_t *d_nbt = dalloc(sizeof(int64_t));
    int64_t five = 5;
    up(d_nbt, &five, sizeof five);
    char what[96];
    Err e = {0}, e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0};
    KC(kc_batchnorm2d_forward(&ctx, d_out, d_mean, d_rstd, d_x, d_w, d_b, B, C, HW, 1e-5f, d_rm, d_rv, d_nbt, 0.1));
    err_dev(&e, d_out, out, n);
    err_dev(&e, d_mean, mean, C);
    err_dev(&e, d_rstd, rstd, C);
    snprintf(what, sizeof what, "batchnorm2d forward %lldx%lldx%lld", (long long)B, (long long)C, (long long)HW);
    report(what, "", &e, LIM_FP32);
    err_dev(&e1, d_rm, rm, C);
    err_dev(&e1, d_rv, rv, C);
    report("batchnorm2d running statistics", "", &e1, LIM_FP32);
    down(&d_nbt_h, d_nbt, sizeof d_nbt_h);
    report_bool("batchnorm2d num_batches_tracked + 1", d_nbt_h == 6, d_nbt_h == 6 ? "6" : "not 6");
    /* no running statistics: they stay as they are */
    KC(kc_batchnorm2d_forward(&ctx, d_out, d_mean, d_rstd, d_x, d_w, d_b, B, C, HW, 1e-5f, NULL, NULL, NULL, 0.1));
    Err e5 = {0};
    err_dev(&e5, d_rm, rm, C);
    report("batchnorm2d forward without update", "", &e5, LIM_FP32);
    KC(kc_batchnorm2d_eval(&ctx, d_ev, d_x, d_w, d_b, d_crm, d_crv, B, C, HW, 1e-5f));
    err_dev(&e4, d_ev, ev, n);
    report("batchnorm2d eval", "", &e4, LIM_FP32);
    KC(kc_batchnorm2d_backward_input(&ctx, d_dx, d_dy, d_x, d_w, d_cmean, d_crstd, B, C, HW));
    err_dev(&e2, d_dx, dx, n);
    report("batchnorm2d backward_input", "", &e2, LIM_FP32);
    KC(kc_batchnorm2d_backward_weight(&ctx, d_dw, d_db, d_dy, d_x, d_cmean, d_crstd, B, C, HW));
    err_dev(&e3, d_dw, dw, C);
    err_dev(&e3, d_db, db, C);
    report("batchnorm2d backward_weight (dw, db)", "", &e3, LIM_FP32);
    float *fs[] = {x, w, b, dy, rm0, rv0, rm, rv, dw0, db0, dw, db, out, ev, mean, rstd, dx};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    float *ds[] = {d_x, d_w, d_b, d_dy, d_out, d_ev, d_mean, d_rstd, d_dx, d_rm, d_rv, d_dw, d_db, d_cmean, d_crstd,
                   d_crm, d_crv};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        dfree(ds[i]);
    dfree(d_nbt);
}

/* transpose: a copy, so the CPU's bits, both ways */
static void test_transpose(int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q)
{
    int64_t n = P * na * M * nb * Q;
    float *x = hrand(n, -1, 1), *y = xmalloc((size_t)n * sizeof(float)), *z = xmalloc((size_t)n * sizeof(float));
    k_transpose(y, x, P, na, M, nb, Q);
    k_transpose(z, y, P, nb, M, na, Q);
    float *d_x = dput(x, n), *d_y = dnan(n), *d_z = dnan(n);
    Err e = {0};
    KC(kc_transpose(&ctx, d_y, d_x, P, na, M, nb, Q));
    KC(kc_transpose(&ctx, d_z, d_y, P, nb, M, na, Q));
    err_dev(&e, d_y, y, n);
    err_dev(&e, d_z, z, n);
    report_exact("transpose (and back)", &e);
    free(x), free(y), free(z);
    dfree(d_x), dfree(d_y), dfree(d_z);
}

/* ---- embedding ------------------------------------------------------------------------------- */

static void test_embedding(int with_wpe)
{
    int64_t B = 3, t = 50, d = 300, V = 97; /* d > 256: two column blocks */
    int32_t *tok = xmalloc((size_t)(B * t) * sizeof(int32_t));
    for (int64_t i = 0; i < B * t; i++)
        tok[i] = (int32_t)(rnd(0, 1) * 20.0f) % 20 * 3 % (int32_t)V; /* few distinct tokens: many repeats */
    tok[0] = (int32_t)V - 1;
    float *wte = hrand(V * d, -1, 1), *wpe = hrand(t * d, -1, 1), *dy = hrand(B * t * d, -1, 1);
    float *dwte0 = hrand(V * d, -1, 1), *dwpe0 = hrand(t * d, -1, 1);
    float *out = xmalloc((size_t)(B * t * d) * sizeof(float));
    float *dwte = hcopy(dwte0, V * d), *dwpe = hcopy(dwpe0, t * d);
    k_embedding_forward(out, tok, wte, with_wpe ? wpe : NULL, B, t, d);
    k_embedding_backward_weight(dwte, with_wpe ? dwpe : NULL, dy, tok, B, t, d);
    int32_t *d_tok = dalloc((size_t)(B * t) * sizeof(int32_t));
    up(d_tok, tok, (size_t)(B * t) * sizeof(int32_t));
    float *d_wte = dput(wte, V * d), *d_wpe = dput(wpe, t * d), *d_dy = dput(dy, B * t * d);
    float *d_out = dnan(B * t * d), *d_dwte = dput(dwte0, V * d), *d_dwpe = dput(dwpe0, t * d);
    Err e = {0}, e2 = {0};
    KC(kc_embedding_forward(&ctx, d_out, d_tok, d_wte, with_wpe ? d_wpe : NULL, B, t, d));
    err_dev(&e, d_out, out, B * t * d);
    report_exact(with_wpe ? "embedding forward (wte + wpe)" : "embedding forward (wte only)", &e);
    KC(kc_embedding_backward_weight(&ctx, d_dwte, with_wpe ? d_dwpe : NULL, d_dy, d_tok, B, t, d));
    err_dev(&e2, d_dwte, dwte, V * d);
    err_dev(&e2, d_dwpe, dwpe, t * d);
    report_exact("embedding backward_weight (repeated tokens)", &e2);
    free(tok), free(wte), free(wpe), free(dy), free(dwte0), free(dwpe0), free(out), free(dwte), free(dwpe);
    dfree(d_tok), dfree(d_wte), dfree(d_wpe), dfree(d_dy), dfree(d_out), dfree(d_dwte), dfree(d_dwpe);
}

/* ---- attention --------------------------------------------------------------------------------- */

/* mask (B, T): sample 0 all real, sample 1 padded at the end, sample 2 (if
 * any) all padding (every query has no key: zeros) */
static float *att_mask(int64_t B, int64_t t)
{
    float *m = xmalloc((size_t)(B * t) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < t; i++)
            m[b * t + i] = b == 0 ? 1.0f : b == 1 ? (i < t - 5 ? 1.0f : 0.0f) : 0.0f;
    return m;
}

static void test_attention(int pi, int64_t B, int64_t t, int64_t d, int64_t heads, int causal, int masked)
{
    KcPrec prec = precs[pi];
    kc_set_precision(&ctx, prec);
    reserve(kc_attention_workspace(&ctx, B, t, d, heads));
    int64_t nq = B * t * 3 * d, no = B * t * d, na = B * heads * t * t;
    float *qkv = hrand(nq, -1, 1), *dy = hrand(no, -1, 1), *mask = masked ? att_mask(B, t) : NULL;
    float *out = xmalloc((size_t)no * sizeof(float)), *att = xmalloc((size_t)na * sizeof(float));
    float *dqkv = xmalloc((size_t)nq * sizeof(float));
    k_attention_forward(out, att, qkv, mask, B, t, d, heads, causal);
    k_attention_backward(dqkv, dy, qkv, att, B, t, d, heads);
    float *d_qkv = dput(qkv, nq), *d_dy = dput(dy, no), *d_mask = mask ? dput(mask, B * t) : NULL;
    float *d_out = dnan(no), *d_att = dnan(na), *d_dqkv = dnan(nq), *d_catt = dput(att, na);
    char what[96];
    Err e = {0}, e2 = {0};
    KC(kc_attention_forward(&ctx, d_out, d_att, d_qkv, d_mask, B, t, d, heads, causal));
    err_dev(&e, d_out, out, no);
    err_dev(&e, d_att, att, na);
    snprintf(what, sizeof what, "attention forward B%lld T%lld D%lld H%lld%s%s", (long long)B, (long long)t,
             (long long)d, (long long)heads, causal ? " causal" : "", masked ? " mask" : "");
    report(what, kc_prec_name(prec), &e, lim_comp[pi]);
    /* the backward gets the CPU's probabilities, to test it alone */
    KC(kc_attention_backward(&ctx, d_dqkv, d_dy, d_qkv, d_catt, B, t, d, heads));
    err_dev(&e2, d_dqkv, dqkv, nq);
    snprintf(what, sizeof what, "attention backward B%lld T%lld D%lld H%lld%s%s", (long long)B, (long long)t,
             (long long)d, (long long)heads, causal ? " causal" : "", masked ? " mask" : "");
    report(what, kc_prec_name(prec), &e2, lim_comp[pi]);
    free(qkv), free(dy), free(mask), free(out), free(att), free(dqkv);
    dfree(d_qkv), dfree(d_dy), dfree(d_out), dfree(d_att), dfree(d_dqkv), dfree(d_catt);
    if (d_mask)
        dfree(d_mask);
}

/* ---- losses ------------------------------------------------------------------------------------ */

static void test_cross_entropy(int64_t n, int64_t c)
{
    reserve(kc_loss_workspace(n));
    float *x = hrand(n * c, -4, 4);
    int32_t *tg = xmalloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        tg[i] = (int32_t)(rnd(0, 1) * (float)c) % (int32_t)c;
    tg[1] = -1, tg[n - 1] = -1; /* ignored rows */
    for (int64_t j = 0; j < c; j++)
        x[2 * c + j] = 0.5f; /* a row of ties: the argmax is the first, 0 */
    tg[2] = 0;
    /* rows where the target wins, so "correct" is not always 0 */
    for (int64_t i = 3; i < n && i < 20; i++)
        if (tg[i] >= 0)
            x[i * c + tg[i]] = 10.0f;
    double scale = 1.0 / (double)(n - 2);
    float *dx = xmalloc((size_t)(n * c) * sizeof(float));
    int64_t count = 0, correct = 0;
    double loss = k_cross_entropy(dx, x, tg, n, c, scale, &count, &correct);
    float *d_x = dput(x, n * c), *d_dx = dnan(n * c);
    int32_t *d_tg = dalloc((size_t)n * sizeof(int32_t));
    up(d_tg, tg, (size_t)n * sizeof(int32_t));
    double *d_res = dalloc(3 * sizeof(double)), res[3] = {0, 0, 0};
    poison(d_res, 3 * sizeof(double));
    KC(kc_cross_entropy(&ctx, d_dx, d_x, d_tg, n, c, scale, d_res));
    KC(kc_fetch(&ctx, res, d_res, 3));
    Err e = {0};
    err_dev(&e, d_dx, dx, n * c);
    char what[96];
    snprintf(what, sizeof what, "cross_entropy dlogits %lldx%lld", (long long)n, (long long)c);
    report(what, "", &e, LIM_FP32);
    double rl = fabs(res[0] - loss) / fabs(loss);
    char detail[160];
    snprintf(detail, sizeof detail, "loss %.9g vs %.9g (rel %.2g), count %g vs %lld, correct %g vs %lld", res[0],
             loss, rl, res[1], (long long)count, res[2], (long long)correct);
    /* the exps differ by CUDA's expf ulps: 1e-6, not double's precision */
    report_bool("cross_entropy loss, count, correct", rl <= 1e-6 && res[1] == (double)count &&
                                                           res[2] == (double)correct,
                detail);
    /* evaluation: no gradient, the same bits */
    double first = res[0];
    poison(d_res, 3 * sizeof(double));
    KC(kc_cross_entropy(&ctx, NULL, d_x, d_tg, n, c, scale, d_res));
    KC(kc_fetch(&ctx, res, d_res, 3));
    report_bool("cross_entropy without dlogits (evaluation)", res[0] == first, "the same loss, bit for bit");
    free(x), free(tg), free(dx);
    dfree(d_x), dfree(d_dx), dfree(d_tg), dfree(d_res);
}

static void test_mse(int64_t n)
{
    reserve(kc_loss_workspace(n));
    float *y = hrand(n, -2, 2), *t = hrand(n, -2, 2);
    float *dy = xmalloc((size_t)n * sizeof(float));
    double scale = 1.0 / (double)n;
    double loss = k_mse(dy, y, t, n, scale);
    float *d_y = dput(y, n), *d_t = dput(t, n), *d_dy = dnan(n);
    double *d_res = dalloc(sizeof(double)), res = 0;
    KC(kc_mse(&ctx, d_dy, d_y, d_t, n, scale, d_res));
    KC(kc_fetch(&ctx, &res, d_res, 1));
    Err e = {0};
    err_dev(&e, d_dy, dy, n);
    report_exact("mse gradient", &e);
    char detail[96];
    double rl = fabs(res - loss) / loss;
    snprintf(detail, sizeof detail, "%.12g vs %.12g (rel %.2g)", res, loss, rl);
    report_bool("mse loss", rl <= 1e-12, detail);
    free(y), free(t), free(dy);
    dfree(d_y), dfree(d_t), dfree(d_dy), dfree(d_res);
}

/* ---- optimizers, norm, scale, casts --------------------------------------------------------- */

static void test_optim(const char *name, PlanOptimizerKind kind, double momentum, double wd, int nesterov)
{
    int64_t n = 10007;
    PlanConfig c;
    memset(&c, 0, sizeof c);
    c.optimizer = kind;
    c.momentum = momentum, c.weight_decay = wd, c.nesterov = nesterov;
    c.beta1 = 0.9, c.beta2 = 0.999, c.eps = 1e-8;
    KcOptim o = {kind == PLAN_OPT_SGD ? KC_SGD : kind == PLAN_OPT_ADAM ? KC_ADAM : KC_ADAMW, momentum, wd, 0.9, 0.999, 1e-8,
                 nesterov};
    int per = rt_optim_state_per_param(&c);
    if (per != kc_optim_state_per_param(&o)) {
        report_bool(name, 0, "state per parameter differs from rt_optim_state_per_param");
        return;
    }
    int64_t ns = per * n;
    float *p = hrand(n, -1, 1), *state = xmalloc((size_t)(ns > 0 ? ns : 1) * sizeof(float));
    memset(state, 0, (size_t)(ns > 0 ? ns : 1) * sizeof(float));
    float *d_p = dput(p, n), *d_g = dalloc((size_t)n * sizeof(float)), *d_s = dput(state, ns > 0 ? ns : 1);
    /* three steps with fresh gradients: t = 1 (SGD's first-step rule), 2, 3 */
    for (int64_t t = 1; t <= 3; t++) {
        float *g = hrand(n, -1, 1);
        double lr = 0.01 / (double)t;
        rt_optim_step(&c, p, g, state, n, t, lr);
        up(d_g, g, (size_t)n * sizeof(float));
        KC(kc_optim_step(&ctx, &o, d_p, d_g, ns > 0 ? d_s : NULL, n, t, lr));
        cuda_ok(cudaStreamSynchronize(ctx.stream), "optimizer step");
        free(g);
    }
    Err e = {0};
    err_dev(&e, d_p, p, n);
    if (ns > 0)
        err_dev(&e, d_s, state, ns);
    char what[96];
    snprintf(what, sizeof what, "%s, 3 steps (parameters and state)", name);
    report_exact(what, &e);
    free(p), free(state);
    dfree(d_p), dfree(d_g), dfree(d_s);
}

static void test_norm_scale_casts(void)
{
    int64_t n = 1000003;
    reserve(kc_sumsq_workspace(n));
    float *g = hrand(n, -1, 1);
    g[5] = 3e-30f, g[6] = 1e20f; /* a wide range: in double nothing is lost */
    double ref = rt_sumsq(g, n);
    float *d_g = dput(g, n);
    double *d_res = dalloc(sizeof(double)), res = 0;
    KC(kc_sumsq(&ctx, d_g, n, d_res));
    KC(kc_fetch(&ctx, &res, d_res, 1));
    char detail[96];
    double rl = fabs(res - ref) / ref;
    snprintf(detail, sizeof detail, "%.15g vs %.15g (rel %.2g)", res, ref, rl);
    report_bool("sum of squares (gradient norm)", rl <= 1e-12, detail);

    float *s = hcopy(g, n);
    rt_scale(s, n, 0.37f);
    KC(kc_scale(&ctx, d_g, n, 0.37f));
    Err e = {0};
    err_dev(&e, d_g, s, n);
    report_exact("scale", &e);

    /* y += x (ReduceTiedGrads, a residual block's addition) against k_add_into */
    float *y = hrand(n, -1, 1), *ya = hcopy(y, n);
    float *d_y = dput(y, n), *d_s = dput(s, n);
    k_add_into(ya, s, n);
    KC(kc_add_into(&ctx, d_y, d_s, n));
    Err e3 = {0};
    err_dev(&e3, d_y, ya, n);
    report_exact("add_into (y += x)", &e3);
    free(y), free(ya);
    dfree(d_y), dfree(d_s);

    /* fp32 -> bf16 -> fp32 against a round-to-nearest-even on the host */
    float *x = hrand(n, -1e3f, 1e3f), *back = xmalloc((size_t)n * sizeof(float));
    x[0] = NAN, x[1] = INFINITY, x[2] = -0.0f, x[3] = 1.00390625f; /* 1 + 2^-8: a tie, rounds to even (1) */
    x[4] = 3.4e38f;                                              /* rounds up to inf in bf16 */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if (isnan(x[i]))
            u = 0x7fc00000u;
        else
            u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        memcpy(&back[i], &u, 4);
    }
    float *d_x = dput(x, n), *d_back = dnan(n);
    uint16_t *d_h = dalloc((size_t)n * 2);
    KC(kc_f32_to_bf16(&ctx, d_h, d_x, n));
    KC(kc_bf16_to_f32(&ctx, d_back, d_h, n));
    Err e2 = {0};
    err_dev(&e2, d_back, back, n);
    report_exact("fp32 -> bf16 -> fp32 (round to nearest even)", &e2);
    free(g), free(s), free(x), free(back);
    dfree(d_g), dfree(d_res), dfree(d_x), dfree(d_back), dfree(d_h);
}

/* ---- transformer_block ------------------------------------------------------------------------------ */

/* p > 0: dropout while training, with the keys below. Beyond the
 * tolerances: mlp.proj's output gradient in dsaved (dout times site 3's
 * factor) must be the CPU's bit for bit, attn.proj's must be zero exactly
 * where the CPU's is (site 2's mask), drop1 shows in out and ctx at fp32's
 * 1e-5 (one differing mask element is O(1e-2)), and evaluation (training 0)
 * must give the bits of p = 0. */
static void test_block(int pi, int64_t B, int64_t t, int64_t d, int64_t heads, int64_t f, int causal, int masked,
                       float p_drop)
{
    KcPrec prec = precs[pi];
    kc_set_precision(&ctx, prec);
    KBlock g = {.t = t, .d = d, .heads = heads, .f = f, .causal = causal, .eps = 1e-5f, .dropout = p_drop};
    KBlockKeys keys = {1, 0x123456789abcdefULL, 11, 1000, 7};
    reserve(kc_block_workspace(&ctx, &g, B));
    int64_t nx = B * t * d, ns = B * k_block_saved_floats(&g), nds = B * k_block_dsaved_floats(&g);
    int64_t nscr = k_block_scratch_floats(&g, B);
    int64_t np[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * f, d};
    float *x = hrand(nx, -2, 2), *dy = hrand(nx, -1, 1), *mask = masked ? att_mask(B, t) : NULL;
    float *p[12], *gr0[12], *gr[12], *d_p[12], *d_gr[12];
    for (int k = 0; k < 12; k++) {
        int ln_w = k == 0 || k == 6, ln_b = k == 1 || k == 7;
        float s = k == 10 ? 1.0f / sqrtf((float)f) : 1.0f / sqrtf((float)d);
        p[k] = ln_w ? hrand(np[k], 0.5f, 1.5f) : ln_b ? hrand(np[k], -0.5f, 0.5f) : hrand(np[k], -s, s);
        gr0[k] = hrand(np[k], -0.01f, 0.01f);
        gr[k] = hcopy(gr0[k], np[k]);
        d_p[k] = dput(p[k], np[k]);
        d_gr[k] = dput(gr0[k], np[k]);
    }
    float *out = xmalloc((size_t)nx * sizeof(float)), *saved = xmalloc((size_t)ns * sizeof(float));
    float *din = xmalloc((size_t)nx * sizeof(float)), *dsaved = xmalloc((size_t)nds * sizeof(float));
    float *scratch = xmalloc((size_t)nscr * sizeof(float));
    const float *const *cp = (const float *const *)p;
    k_block_forward(out, saved, x, mask, cp, B, &g, &keys, scratch);
    k_block_backward_input(din, dsaved, dy, x, saved, mask, cp, B, &g, &keys, scratch);
    k_block_backward_weight(gr, dsaved, x, saved, B, &g, scratch);

    float *d_x = dput(x, nx), *d_dy = dput(dy, nx), *d_mask = mask ? dput(mask, B * t) : NULL;
    float *d_out = dnan(nx), *d_saved = dnan(ns), *d_din = dnan(nx), *d_dsaved = dnan(nds), *d_scr = dnan(nscr);
    const float *const *dcp = (const float *const *)d_p;
    char what[112];
    snprintf(what, sizeof what, "B%lld T%lld D%lld H%lld F%lld%s%s%s", (long long)B, (long long)t, (long long)d,
             (long long)heads, (long long)f, causal ? " causal" : "", masked ? " mask" : "",
             p_drop > 0 ? " dropout" : "");
    char line[160];
    Err e = {0}, e2 = {0}, e3 = {0};
    KC(kc_block_forward(&ctx, d_out, d_saved, d_x, d_mask, dcp, B, &g, &keys, d_scr));
    err_dev(&e, d_out, out, nx);
    err_dev(&e, d_saved, saved, ns);
    snprintf(line, sizeof line, "block forward (out, saved) %s", what);
    report(line, kc_prec_name(prec), &e, lim_comp[pi]);
    KC(kc_block_backward_input(&ctx, d_din, d_dsaved, d_dy, d_x, d_saved, d_mask, dcp, B, &g, &keys, d_scr));
    err_dev(&e2, d_din, din, nx);
    err_dev(&e2, d_dsaved, dsaved, nds);
    report("block backward_input (din, dsaved)", kc_prec_name(prec), &e2, lim_comp[pi]);
    KC(kc_block_backward_weight(&ctx, d_gr, d_dsaved, d_x, d_saved, B, &g, d_scr));
    for (int k = 0; k < 12; k++)
        err_dev(&e3, d_gr[k], gr[k], np[k]);
    report("block backward_weight (12 gradients)", kc_prec_name(prec), &e3, lim_comp[pi]);

    /* the same call again: the same bits */
    float *first = hget(d_din, nx);
    poison(d_din, (size_t)nx * sizeof(float));
    KC(kc_block_backward_input(&ctx, d_din, d_dsaved, d_dy, d_x, d_saved, d_mask, dcp, B, &g, &keys, d_scr));
    Err e4 = {0};
    err_dev(&e4, d_din, first, nx);
    report_bool("block backward_input twice: the same bits", !e4.bad && !e4.differs, kc_prec_name(prec));
    free(first);

    if (p_drop > 0) {
        KBlockDsaved q = k_block_dsaved_layout(&g, B);
        KBlockSaved o = k_block_saved_layout(&g, B);
        Err e5 = {0}, e6 = {0};
        float *gd = hget(d_dsaved, nds);
        err_add(&e5, gd + q.dout, dsaved + q.dout, nx);
        report_exact("block dropout: site 3 (mlp.proj's gradient)", &e5);
        int64_t zeros = 0, wrong = 0;
        for (int64_t i = 0; i < nx; i++) {
            zeros += dsaved[q.dh + i] == 0.0f;
            wrong += (gd[q.dh + i] == 0.0f) != (dsaved[q.dh + i] == 0.0f);
        }
        char detail[96];
        snprintf(detail, sizeof detail, "%lld of %lld zeros on the CPU, %lld placed differently", (long long)zeros,
                 (long long)nx, (long long)wrong);
        report_bool("block dropout: site 2 (attn.proj's gradient)", zeros > 0 && wrong == 0, detail);
        free(gd);
        err_dev(&e6, d_saved + o.ctx, saved + o.ctx, nx);
        report("block dropout: site 1 (ctx = drop1(P) V)", kc_prec_name(prec), &e6, lim_comp[pi]);
        /* evaluation: the bits of the block without dropout */
        KBlock g0 = g;
        g0.dropout = 0.0f;
        KBlockKeys ev = keys;
        ev.training = 0;
        float *d_o0 = dnan(nx), *d_o1 = dnan(nx);
        KC(kc_block_forward(&ctx, d_o0, d_saved, d_x, d_mask, dcp, B, &g0, NULL, d_scr));
        KC(kc_block_forward(&ctx, d_o1, d_saved, d_x, d_mask, dcp, B, &g, &ev, d_scr));
        float *o0 = hget(d_o0, nx);
        Err e7 = {0};
        err_dev(&e7, d_o1, o0, nx);
        report_bool("block dropout, evaluating: the bits of p = 0", !e7.bad && !e7.differs, kc_prec_name(prec));
        free(o0);
        dfree(d_o0), dfree(d_o1);
    }

    for (int k = 0; k < 12; k++) {
        free(p[k]), free(gr0[k]), free(gr[k]);
        dfree(d_p[k]), dfree(d_gr[k]);
    }
    free(x), free(dy), free(mask), free(out), free(saved), free(din), free(dsaved), free(scratch);
    dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_saved), dfree(d_din), dfree(d_dsaved), dfree(d_scr);
    if (d_mask)
        dfree(d_mask);
}

/* ---- llama_block ------------------------------------------------------------------------------------ */

/* The composite against k_llama.c: out and every saved float, din and
 * every dsaved float, the 9 gradients (added to random values on both
 * sides); the input half twice gives the same bits. Scratch starts
 * poisoned: its RoPE table, the repeated kv heads and the temporaries are
 * written before they are read. */
static void test_llama(int pi, int64_t B, int64_t t, int64_t d, int64_t heads, int64_t kv, int64_t f, int causal,
                       int masked)
{
    KcPrec prec = precs[pi];
    kc_set_precision(&ctx, prec);
    KLlama g = {.t = t, .d = d, .heads = heads, .kv_heads = kv, .f = f, .causal = causal, .eps = 1e-5f,
                .theta = 10000.0f};
    reserve(kc_llama_workspace(&ctx, &g, B));
    int64_t nx = B * t * d, ns = B * k_llama_saved_floats(&g), nds = B * k_llama_dsaved_floats(&g);
    int64_t nscr = k_llama_scratch_floats(&g, B), dk = k_llama_kv_width(&g);
    int64_t np[9] = {d * d, dk * d, dk * d, d * d, f * d, f * d, d * f, d, d};
    float *x = hrand(nx, -2, 2), *dy = hrand(nx, -1, 1), *mask = masked ? att_mask(B, t) : NULL;
    float *p[9], *gr0[9], *gr[9], *d_p[9], *d_gr[9];
    for (int k = 0; k < 9; k++) {
        float s = k == 6 ? 1.0f / sqrtf((float)f) : 1.0f / sqrtf((float)d);
        p[k] = k >= 7 ? hrand(np[k], 0.5f, 1.5f) : hrand(np[k], -s, s);
        gr0[k] = hrand(np[k], -0.01f, 0.01f);
        gr[k] = hcopy(gr0[k], np[k]);
        d_p[k] = dput(p[k], np[k]);
        d_gr[k] = dput(gr0[k], np[k]);
    }
    float *out = xmalloc((size_t)nx * sizeof(float)), *saved = xmalloc((size_t)ns * sizeof(float));
    float *din = xmalloc((size_t)nx * sizeof(float)), *dsaved = xmalloc((size_t)nds * sizeof(float));
    float *scratch = xmalloc((size_t)nscr * sizeof(float));
    const float *const *cp = (const float *const *)p;
    k_llama_forward(out, saved, x, mask, cp, B, &g, scratch);
    k_llama_backward_input(din, dsaved, dy, x, saved, mask, cp, B, &g, scratch);
    k_llama_backward_weight(gr, dsaved, x, saved, B, &g, scratch);

    float *d_x = dput(x, nx), *d_dy = dput(dy, nx), *d_mask = mask ? dput(mask, B * t) : NULL;
    float *d_out = dnan(nx), *d_saved = dnan(ns), *d_din = dnan(nx), *d_dsaved = dnan(nds), *d_scr = dnan(nscr);
    const float *const *dcp = (const float *const *)d_p;
    char what[112], line[160];
    snprintf(what, sizeof what, "B%lld T%lld D%lld H%lld K%lld F%lld%s%s", (long long)B, (long long)t, (long long)d,
             (long long)heads, (long long)kv, (long long)f, causal ? " causal" : "", masked ? " mask" : "");
    Err e = {0}, e2 = {0}, e3 = {0};
    KC(kc_llama_forward(&ctx, d_out, d_saved, d_x, d_mask, dcp, B, &g, d_scr));
    err_dev(&e, d_out, out, nx);
    err_dev(&e, d_saved, saved, ns);
    snprintf(line, sizeof line, "llama forward (out, saved) %s", what);
    report(line, kc_prec_name(prec), &e, lim_comp[pi]);
    KC(kc_llama_backward_input(&ctx, d_din, d_dsaved, d_dy, d_x, d_saved, d_mask, dcp, B, &g, d_scr));
    err_dev(&e2, d_din, din, nx);
    err_dev(&e2, d_dsaved, dsaved, nds);
    report("llama backward_input (din, dsaved)", kc_prec_name(prec), &e2, lim_comp[pi]);
    KC(kc_llama_backward_weight(&ctx, d_gr, d_dsaved, d_x, d_saved, B, &g, d_scr));
    for (int k = 0; k < 9; k++)
        err_dev(&e3, d_gr[k], gr[k], np[k]);
    report("llama backward_weight (9 gradients)", kc_prec_name(prec), &e3, lim_comp[pi]);
    float *first = hget(d_din, nx);
    poison(d_din, (size_t)nx * sizeof(float));
    KC(kc_llama_backward_input(&ctx, d_din, d_dsaved, d_dy, d_x, d_saved, d_mask, dcp, B, &g, d_scr));
    Err e4 = {0};
    err_dev(&e4, d_din, first, nx);
    report_bool("llama backward_input twice: the same bits", !e4.bad && !e4.differs, kc_prec_name(prec));
    free(first);

    for (int k = 0; k < 9; k++) {
        free(p[k]), free(gr0[k]), free(gr[k]);
        dfree(d_p[k]), dfree(d_gr[k]);
    }
    free(x), free(dy), free(mask), free(out), free(saved), free(din), free(dsaved), free(scratch);
    dfree(d_x), dfree(d_dy), dfree(d_out), dfree(d_saved), dfree(d_din), dfree(d_dsaved), dfree(d_scr);
    if (d_mask)
        dfree(d_mask);
}

/* ---- the error path ------------------------------------------------------------------------------ */

static void test_errors(void)
{
    KcCtx small;
    if (kc_init(&small, ctx.device, 0) != KC_OK) {
        report_bool("error path: a second context", 0, small.msg);
        kc_free(&small);
        return;
    }
    kc_set_precision(&small, KC_BF16);
    float *d = dnan(64 * 64);
    int rc = kc_linear_forward(&small, d, d, d, NULL, 64, 64, 64);
    int sticky = kc_relu_forward(&small, d, d, 16) == rc;
    char detail[KC_MSG_LEN + 32];
    snprintf(detail, sizeof detail, "\"%s\"", small.msg);
    report_bool("error: bf16 linear without workspace", rc == KC_ERR_WORKSPACE && strstr(small.msg, "workspace"),
                detail);
    report_bool("error: sticky until kc_clear_error", sticky, "later calls return the first error");
    kc_clear_error(&small);
    report_bool("error: cleared", kc_relu_forward(&small, d, d, 16) == KC_OK && kc_sync(&small) == KC_OK, small.msg);
    rc = kc_attention_forward(&small, d, d, d, NULL, 1, 4, 10, 3, 0);
    report_bool("error: heads that do not divide the width", rc == KC_ERR_ARG, small.msg);
    kc_free(&small);
    dfree(d);
}

/* ---- main ------------------------------------------------------------------------------------------- */

int main(void)
{
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("skipped: no CUDA device\n");
        fprintf(stderr, "(cudaGetDeviceCount: %s, %d devices)\n", e == cudaSuccess ? "ok" : cudaGetErrorString(e),
                ndev);
        return 77;
    }
    struct cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    int driver = 0;
    cuda_ok(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    printf("device 0: %s, sm_%d%d, %d SMs, %.1f GiB; CUDA runtime %d, driver %d, cuDNN %zu\n", prop.name, prop.major,
           prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1u << 30), CUDART_VERSION, driver,
           cudnnGetVersion());
    if (kc_init(&ctx, 0, 0) != KC_OK) {
        printf("FAIL kc_init: %s\n", ctx.msg);
        return 1;
    }

    for (int pi = 0; pi < 3; pi++) {
        test_linear(pi, 37, 70, 45, 1);
        test_linear(pi, 256, 512, 384, 1);
        test_linear(pi, 64, 128, 96, 0);
    }
    KConv convs[3] = {conv_geom(3, 11, 13, 8, 3, 1, 1), conv_geom(4, 16, 16, 6, 5, 2, 2), conv_geom(16, 7, 7, 32, 1, 1, 0)};
    for (int pi = 0; pi < 3; pi++)
        for (int i = 0; i < 3; i++)
            test_conv(pi, &convs[i], 3);
    kc_set_precision(&ctx, KC_FP32);

    KPool mp = pool_geom(3, 9, 10, 3, 2, 1), mp2 = pool_geom(2, 8, 8, 2, 2, 0);
    test_maxpool(&mp, 2, 0);
    test_maxpool(&mp, 2, 1);
    test_maxpool(&mp2, 3, 1);
    KPool ap = pool_geom(3, 8, 10, 2, 2, 0), ap2 = pool_geom(2, 9, 9, 3, 2, 1);
    test_avgpool(&ap, 2);
    test_avgpool(&ap2, 2);
    test_adaptive(2, 3, 7, 9, 3, 4);
    test_adaptive(2, 2, 5, 5, 7, 7);

    test_activation("relu", k_relu_forward, k_relu_backward, kc_relu_forward, kc_relu_backward, 0, 1, 1);
    test_activation("gelu", k_gelu_forward, k_gelu_backward, kc_gelu_forward, kc_gelu_backward, 0, 0, 0);
    test_activation("tanh", k_tanh_forward, k_tanh_backward, kc_tanh_forward, kc_tanh_backward, 1, 0, 1);
    test_activation("sigmoid", k_sigmoid_forward, k_sigmoid_backward, kc_sigmoid_forward, kc_sigmoid_backward, 1, 0,
                    1);
    test_dropout();

    test_layernorm(33, 70);
    test_layernorm(300, 1600); /* wide rows: several elements per thread */
    test_rmsnorm(33, 70);
    test_rmsnorm(300, 1600);
    test_batchnorm2d(4, 6, 35);
    test_batchnorm2d(16, 3, 32 * 32); /* many elements per thread */
    test_transpose(3, 5, 7, 4, 3);
    test_transpose(8, 128, 1, 64, 1);
    test_embedding(1);
    test_embedding(0);

    for (int pi = 0; pi < 3; pi++) {
        test_attention(pi, 3, 37, 48, 4, 1, 1);
        test_attention(pi, 3, 37, 48, 4, 0, 1);
        test_attention(pi, 2, 128, 256, 4, 1, 0);
    }

    test_cross_entropy(67, 10);
    test_cross_entropy(40, 1000); /* wide rows: several elements per thread */
    test_mse(100003);

    test_optim("sgd", PLAN_OPT_SGD, 0, 0, 0);
    test_optim("sgd momentum 0.9 weight_decay 0.01", PLAN_OPT_SGD, 0.9, 0.01, 0);
    test_optim("sgd nesterov momentum 0.9", PLAN_OPT_SGD, 0.9, 0, 1);
    test_optim("adam", PLAN_OPT_ADAM, 0, 0, 0);
    test_optim("adam weight_decay 0.01", PLAN_OPT_ADAM, 0, 0.01, 0);
    test_optim("adamw weight_decay 0.1", PLAN_OPT_ADAMW, 0, 0.1, 0);
    test_norm_scale_casts();

    for (int pi = 0; pi < 3; pi++) {
        test_block(pi, 3, 16, 32, 4, 128, 1, 1, 0.0f);
        test_block(pi, 2, 64, 128, 4, 512, 0, 0, 0.0f);
        test_block(pi, 3, 16, 32, 4, 128, 1, 1, 0.1f);
        test_block(pi, 2, 64, 128, 4, 512, 0, 0, 0.1f);
        test_llama(pi, 3, 16, 64, 8, 2, 96, 1, 1);  /* GQA, causal, padding (sample 2 all padding) */
        test_llama(pi, 2, 64, 128, 4, 4, 352, 0, 0); /* multi-head, bidirectional */
        test_llama(pi, 2, 37, 96, 8, 1, 256, 1, 1);  /* multi-query, odd T */
    }
    kc_set_precision(&ctx, KC_FP32);
    test_errors();

    int final = kc_sync(&ctx);
    if (final != KC_OK)
        printf("FAIL the stream at the end: %s\n", ctx.msg), nfails++;
    kc_free(&ctx);
    printf("%d checks, %d failed\n", nchecks, nfails);
    return nfails ? 1 : 0;
}
