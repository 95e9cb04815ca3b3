/* kernels/cuda/kc_llama.cu: llama_block (k_llama.h) on the GPU, call for
 * call kernels/cpu/k_llama.c with the kc_ kernels, over the same saved,
 * dsaved and scratch layouts (k_llama_saved_layout, k_llama_dsaved_layout,
 * k_llama_scratch_layout; tests/test_cuda_kernels.c compares every saved
 * and dsaved float with the CPU's), and the pieces it needs beyond
 * transformer_block's: RMSNorm (also the rmsnorm layer's kernels), RoPE's
 * table and rotation, SwiGLU, and the repeat of the kv heads (and the sum
 * of their gradients over each group).
 *
 * The elementwise pieces are the CPU's float expressions (the library
 * builds with --fmad=false): the rotation, the repeat and its group sums
 * give the CPU's bits; powf, cosf, sinf and expf are CUDA's (within 2 ulp
 * of glibc's). RMSNorm's row sums go in layernorm's order (per-thread
 * float partials over a stride of 256, a tree in double), its weight's
 * column sums through kc_colsum_finish. Linears and the attention core are
 * kc_linear_* and kc_attention_* in the context's precision. */
#include "kc_internal.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- rmsnorm ------------------------------------------------------------------------- */

static __global__ void g_rms_fwd(float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d,
                                 float eps)
{
    __shared__ double sh[KC_THREADS];
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const float *x = in + r * d;
        float *y = out + r * d;
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS)
            s += x[j] * x[j];
        double ss = kc_block_sum<double>((double)s, sh);
        float rf = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        if (threadIdx.x == 0)
            rstd[r] = rf;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS)
            y[j] = (x[j] * rf) * (w ? w[j] : 1.0f);
    }
}

/* din = rstd (g - xhat mean(g xhat)), g = dout * w */
static __global__ void g_rms_bwd_input(float *din, const float *dout, const float *in, const float *w,
                                       const float *rstd, int64_t n, int64_t d)
{
    __shared__ double sh[KC_THREADS];
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const float *x = in + r * d, *dy = dout + r * d;
        float *dx = din + r * d;
        float rf = rstd[r];
        float sgx = 0.0f;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS)
            sgx += (dy[j] * (w ? w[j] : 1.0f)) * (x[j] * rf);
        float mgx = (float)(kc_block_sum<double>((double)sgx, sh) / (double)d);
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS) {
            float xh = x[j] * rf;
            float g = dy[j] * (w ? w[j] : 1.0f);
            dx[j] = rf * (g - xh * mgx);
        }
    }
}

/* column sums of dout * xhat over a group of KC_COL_ROWS rows (block (32, 8)) */
static __global__ void g_rms_bwd_weight_part(double *pw, const float *dout, const float *in, const float *rstd,
                                             int64_t n, int64_t d)
{
    __shared__ double shw[8][32];
    int64_t j = blockIdx.x * (int64_t)32 + threadIdx.x;
    int64_t r0 = blockIdx.y * (int64_t)KC_COL_ROWS, r1 = r0 + KC_COL_ROWS < n ? r0 + KC_COL_ROWS : n;
    float fw = 0.0f;
    if (j < d)
        for (int64_t i = r0 + threadIdx.y; i < r1; i += 8)
            fw += dout[i * d + j] * (in[i * d + j] * rstd[i]);
    shw[threadIdx.y][threadIdx.x] = fw;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        double tw = 0.0;
        for (int y = 0; y < 8; y++)
            tw += shw[y][threadIdx.x];
        pw[blockIdx.y * d + j] = tw;
    }
}

size_t kc_rmsnorm_workspace(int64_t n, int64_t d)
{
    KcWs w = kc_ws_count();
    kc_take(&w, kc_colsum_parts(n, d), sizeof(double));
    return w.used;
}

int kc_rmsnorm_forward(KcCtx *ctx, float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d,
                       float eps)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "rmsnorm sizes");
    g_rms_fwd<<<kc_grid_rows(n), KC_THREADS, 0, ctx->stream>>>(out, rstd, in, w, n, d, eps);
    KC_LAUNCHED(ctx, g_rms_fwd);
    return KC_OK;
}

int kc_rmsnorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                              const float *rstd, int64_t n, int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "rmsnorm sizes");
    g_rms_bwd_input<<<kc_grid_rows(n), KC_THREADS, 0, ctx->stream>>>(din, dout, in, w, rstd, n, d);
    KC_LAUNCHED(ctx, g_rms_bwd_input);
    return KC_OK;
}

int kc_rmsnorm_backward_weight(KcCtx *ctx, float *dw, const float *dout, const float *in, const float *rstd, int64_t n,
                               int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "rmsnorm sizes");
    int64_t groups = (n + KC_COL_ROWS - 1) / KC_COL_ROWS;
    if (groups == 0 || !dw)
        return KC_OK;
    KC_ARG(ctx, groups <= 65535, "rmsnorm rows (<= 16.7M)");
    KcWs ws = kc_ws_of(ctx);
    double *pw = (double *)kc_take(&ws, kc_colsum_parts(n, d), sizeof(double));
    KC_WS_FITS(ctx, ws, "kc_rmsnorm_backward_weight");
    dim3 grid((unsigned)((d + 31) / 32), (unsigned)groups), block(32, 8);
    g_rms_bwd_weight_part<<<grid, block, 0, ctx->stream>>>(pw, dout, in, rstd, n, d);
    KC_LAUNCHED(ctx, g_rms_bwd_weight_part);
    return kc_colsum_finish(ctx, dw, pw, groups, d);
}

/* ---- RoPE, SwiGLU, the kv heads' repeat -------------------------------------------------- */

/* cos, sin (T, hd / 2), k_rope_table's float steps */
static __global__ void g_rope_table(float *cosv, float *sinv, int64_t t, int64_t hd, float theta)
{
    int64_t half = hd / 2;
    GRID_STRIDE(idx, t * half)
    {
        int64_t p = idx / half, i = idx % half;
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        float a = (float)p * inv;
        cosv[idx] = cosf(a);
        sinv[idx] = sinf(a);
    }
}

/* one (row, head, i < hd / 2) pair per thread, in place; backward: the
 * transpose (k_rope_backward) */
static __global__ void g_rope(float *x, int64_t n, int64_t ld, int64_t t, int64_t heads, int64_t hd,
                              const float *cosv, const float *sinv, int backward)
{
    int64_t half = hd / 2;
    GRID_STRIDE(idx, n * heads * half)
    {
        int64_t r = idx / (heads * half), rem = idx % (heads * half), h = rem / half, i = rem % half;
        float *v = x + r * ld + h * hd;
        float c = cosv[(r % t) * half + i], s = sinv[(r % t) * half + i];
        float a = v[i], b = v[i + half];
        if (backward) {
            v[i] = a * c + b * s;
            v[i + half] = b * c - a * s;
        } else {
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

static __global__ void g_swiglu_fwd(float *act, const float *gate, const float *up, int64_t n)
{
    GRID_STRIDE(i, n)
    {
        float g = gate[i];
        act[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static __global__ void g_swiglu_bwd(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                    int64_t n)
{
    GRID_STRIDE(i, n)
    {
        float g = gate[i], da = dact[i];
        float e = 1.0f + expf(-g);
        float s = 1.0f / e;
        dup[i] = da * (g / e);
        dgate[i] = da * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

/* qkv (N, 3D) = q | k repeated | v repeated (query head j reads kv head j / rep) */
static __global__ void g_gqa_expand(float *qkv, const float *q, const float *k, const float *v, int64_t n, int64_t d,
                                    int64_t hd, int64_t dk, int64_t rep)
{
    GRID_STRIDE(idx, n * 3 * d)
    {
        int64_t r = idx / (3 * d), c = idx % (3 * d), part = c / d, e = c % d;
        int64_t kv = e / hd / rep, o = kv * hd + e % hd;
        qkv[idx] = part == 0 ? q[r * d + e] : part == 1 ? k[r * dk + o] : v[r * dk + o];
    }
}

/* dq = dqkv's q part; dk, dv: each kv head the sum of its group's heads in
 * head order (gqa_reduce's) */
static __global__ void g_gqa_reduce(float *dq, float *dk, float *dv, const float *dqkv, int64_t n, int64_t d,
                                    int64_t hd, int64_t dkw, int64_t rep)
{
    int64_t w = d + 2 * dkw;
    GRID_STRIDE(idx, n * w)
    {
        int64_t r = idx / w, c = idx % w;
        const float *row = dqkv + r * 3 * d;
        if (c < d) {
            dq[r * d + c] = row[c];
            continue;
        }
        c -= d;
        int part = c < dkw ? 1 : 2;
        int64_t e = part == 1 ? c : c - dkw, kv = e / hd, i = e % hd;
        const float *src = row + part * d;
        float s = src[(kv * rep) * hd + i];
        for (int64_t j = 1; j < rep; j++)
            s += src[(kv * rep + j) * hd + i];
        (part == 1 ? dk : dv)[r * dkw + e] = s;
    }
}

#define LAUNCH(ctx, kern, n, ...)                                                                                      \
    do {                                                                                                               \
        kern<<<kc_grid(ctx, n), KC_THREADS, 0, (ctx)->stream>>>(__VA_ARGS__);                                          \
        KC_LAUNCHED(ctx, kern);                                                                                        \
    } while (0)

/* ---- the block ------------------------------------------------------------------------------ */

#define LLAMA_ARGS(ctx, g)                                                                                             \
    do {                                                                                                               \
        KC_ARG(ctx, B >= 0 && (g)->t > 0 && (g)->d > 0 && (g)->heads > 0 && (g)->kv_heads > 0 && (g)->f > 0,         \
               "llama_block sizes");                                                                                  \
        KC_ARG(ctx, (g)->d % (g)->heads == 0 && (g)->heads % (g)->kv_heads == 0 && ((g)->d / (g)->heads) % 2 == 0,    \
               "llama_block: heads divide the width into even head widths, kv_heads divide heads");                   \
    } while (0)

size_t kc_llama_workspace(const KcCtx *ctx, const KLlama *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = g->f;
    size_t w[] = {kc_linear_workspace(ctx, n, d, d),  kc_linear_workspace(ctx, n, d, dk),
                  kc_linear_workspace(ctx, n, d, f),  kc_linear_workspace(ctx, n, f, d),
                  kc_attention_workspace(ctx, B, g->t, d, g->heads), kc_rmsnorm_workspace(n, d)};
    size_t most = 0;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        most = w[i] > most ? w[i] : most;
    return most;
}

int kc_llama_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[9],
                     int64_t B, const KLlama *g, float *scratch)
{
    KC_ENTER(ctx);
    LLAMA_ARGS(ctx, g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaScratch sc = k_llama_scratch_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = g->f, hd = d / g->heads;
    int64_t rep = g->heads / g->kv_heads;
    float *r1 = saved + o.r1, *q = saved + o.q, *k = saved + o.k, *v = saved + o.v, *cx = saved + o.ctx;
    float *h = saved + o.h, *r2 = saved + o.r2, *gate = saved + o.gate, *up = saved + o.up, *act = saved + o.act;
    float *cosv = scratch + sc.cos, *sinv = scratch + sc.sin, *qkv = scratch + sc.qkv;
    KC_TRY(kc_rmsnorm_forward(ctx, r1, saved + o.rstd1, in, p[7], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, q, r1, p[0], NULL, n, d, d));
    KC_TRY(kc_linear_forward(ctx, k, r1, p[1], NULL, n, d, dk));
    KC_TRY(kc_linear_forward(ctx, v, r1, p[2], NULL, n, d, dk));
    LAUNCH(ctx, g_rope_table, g->t * (hd / 2), cosv, sinv, g->t, hd, g->theta);
    LAUNCH(ctx, g_rope, n * g->heads * (hd / 2), q, n, d, g->t, g->heads, hd, cosv, sinv, 0);
    LAUNCH(ctx, g_rope, n * g->kv_heads * (hd / 2), k, n, dk, g->t, g->kv_heads, hd, cosv, sinv, 0);
    LAUNCH(ctx, g_gqa_expand, n * 3 * d, qkv, q, k, v, n, d, hd, dk, rep);
    KC_TRY(kc_attention_forward(ctx, cx, saved + o.att, qkv, mask, B, g->t, d, g->heads, g->causal));
    KC_TRY(kc_linear_forward(ctx, h, cx, p[3], NULL, n, d, d));
    KC_TRY(kc_add_into(ctx, h, in, n * d));
    KC_TRY(kc_rmsnorm_forward(ctx, r2, saved + o.rstd2, h, p[8], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, gate, r2, p[4], NULL, n, d, f));
    KC_TRY(kc_linear_forward(ctx, up, r2, p[5], NULL, n, d, f));
    LAUNCH(ctx, g_swiglu_fwd, n * f, act, gate, up, n * f);
    KC_TRY(kc_linear_forward(ctx, out, act, p[6], NULL, n, f, d));
    KC_TRY(kc_add_into(ctx, out, h, n * d));
    return KC_OK;
}

int kc_llama_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[9], int64_t B,
                            const KLlama *g, float *scratch)
{
    KC_ENTER(ctx);
    LLAMA_ARGS(ctx, g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaDsaved q = k_llama_dsaved_layout(g, B);
    KLlamaScratch sc = k_llama_scratch_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = g->f, hd = d / g->heads;
    int64_t rep = g->heads / g->kv_heads;
    float *dq = dsaved + q.dq, *dkk = dsaved + q.dk, *dv = dsaved + q.dv, *dh = dsaved + q.dh;
    float *dgate = dsaved + q.dgate, *dup = dsaved + q.dup, *dmp = dsaved + q.dout;
    float *dr1 = dsaved + q.dr1, *dr2 = dsaved + q.dr2;
    float *tmp = scratch + sc.tmp, *cosv = scratch + sc.cos, *sinv = scratch + sc.sin;
    float *qkv = scratch + sc.qkv, *dqkv = scratch + sc.dqkv;
    KC_CUDA(ctx,
            cudaMemcpyAsync(dmp, dout, (size_t)(n * d) * sizeof(float), cudaMemcpyDeviceToDevice, ctx->stream));
    KC_TRY(kc_linear_backward_input(ctx, tmp, dout, p[6], n, f, d)); /* dact (N, F) */
    LAUNCH(ctx, g_swiglu_bwd, n * f, dgate, dup, tmp, saved + o.gate, saved + o.up, n * f);
    KC_TRY(kc_linear_backward_input(ctx, dr2, dgate, p[4], n, d, f));
    KC_TRY(kc_linear_backward_input(ctx, tmp, dup, p[5], n, d, f));
    KC_TRY(kc_add_into(ctx, dr2, tmp, n * d));
    KC_TRY(kc_rmsnorm_backward_input(ctx, dh, dr2, saved + o.h, p[8], saved + o.rstd2, n, d));
    KC_TRY(kc_add_into(ctx, dh, dout, n * d));
    KC_TRY(kc_linear_backward_input(ctx, tmp, dh, p[3], n, d, d)); /* dctx (N, D) */
    LAUNCH(ctx, g_rope_table, g->t * (hd / 2), cosv, sinv, g->t, hd, g->theta);
    LAUNCH(ctx, g_gqa_expand, n * 3 * d, qkv, saved + o.q, saved + o.k, saved + o.v, n, d, hd, dk, rep);
    KC_TRY(kc_attention_backward(ctx, dqkv, tmp, qkv, saved + o.att, B, g->t, d, g->heads));
    LAUNCH(ctx, g_gqa_reduce, n * (d + 2 * dk), dq, dkk, dv, dqkv, n, d, hd, dk, rep);
    LAUNCH(ctx, g_rope, n * g->heads * (hd / 2), dq, n, d, g->t, g->heads, hd, cosv, sinv, 1);
    LAUNCH(ctx, g_rope, n * g->kv_heads * (hd / 2), dkk, n, dk, g->t, g->kv_heads, hd, cosv, sinv, 1);
    KC_TRY(kc_linear_backward_input(ctx, dr1, dq, p[0], n, d, d));
    KC_TRY(kc_linear_backward_input(ctx, tmp, dkk, p[1], n, d, dk));
    KC_TRY(kc_add_into(ctx, dr1, tmp, n * d));
    KC_TRY(kc_linear_backward_input(ctx, tmp, dv, p[2], n, d, dk));
    KC_TRY(kc_add_into(ctx, dr1, tmp, n * d));
    KC_TRY(kc_rmsnorm_backward_input(ctx, din, dr1, in, p[7], saved + o.rstd1, n, d));
    KC_TRY(kc_add_into(ctx, din, dh, n * d));
    (void)mask; /* the saved probabilities carry it */
    return KC_OK;
}

int kc_llama_backward_weight(KcCtx *ctx, float *const grads[9], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KLlama *g, float *scratch)
{
    KC_ENTER(ctx);
    LLAMA_ARGS(ctx, g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaDsaved q = k_llama_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = g->f;
    KC_TRY(kc_linear_backward_weight(ctx, grads[0], NULL, dsaved + q.dq, saved + o.r1, n, d, d));
    KC_TRY(kc_linear_backward_weight(ctx, grads[1], NULL, dsaved + q.dk, saved + o.r1, n, d, dk));
    KC_TRY(kc_linear_backward_weight(ctx, grads[2], NULL, dsaved + q.dv, saved + o.r1, n, d, dk));
    KC_TRY(kc_linear_backward_weight(ctx, grads[3], NULL, dsaved + q.dh, saved + o.ctx, n, d, d));
    KC_TRY(kc_linear_backward_weight(ctx, grads[4], NULL, dsaved + q.dgate, saved + o.r2, n, d, f));
    KC_TRY(kc_linear_backward_weight(ctx, grads[5], NULL, dsaved + q.dup, saved + o.r2, n, d, f));
    KC_TRY(kc_linear_backward_weight(ctx, grads[6], NULL, dsaved + q.dout, saved + o.act, n, f, d));
    KC_TRY(kc_rmsnorm_backward_weight(ctx, grads[7], dsaved + q.dr1, in, saved + o.rstd1, n, d));
    KC_TRY(kc_rmsnorm_backward_weight(ctx, grads[8], dsaved + q.dr2, saved + o.h, saved + o.rstd2, n, d));
    (void)scratch;
    return KC_OK;
}
