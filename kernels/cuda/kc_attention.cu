/* kernels/cuda/kc_attention.cu: the attention core of transformer_block
 * (k_attention_forward / k_attention_backward) as batched GEMMs over the
 * B x H (sample, head) pairs plus a masked softmax kernel.
 *
 * qkv (B, T, 3D) is first split into head-major q, k, v (B, H, T, hd) in
 * the workspace (rounded to bf16 on the way in KC_BF16), so every product
 * is one cublasGemmStridedBatchedEx with batch B * H:
 *     S = scale Q K^T (into att),  P = masked softmax(S) (in place),
 *     O = P V, merged back into out (B, T, D);
 * and backwards, with dO the heads of dout:
 *     dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),
 *     dQ = scale dS K,  dK = scale dS^T Q,
 * merged back into dqkv. The masking and the all-masked rule are the CPU's:
 * masked scores become -inf (exp 0), causal keys past the query are 0, a
 * row with every key masked is all zeros (so are its gradients). Unlike the
 * CPU, the causal case computes whole T x T score matrices (no skipped
 * blocks); the masked entries are overwritten.
 *
 * With transformer_block's drop1 (the _drop entries, kc_internal.h), P
 * stays in att and its dropped copy Pd = P * factor goes to the workspace
 * for the products that use the dropped probabilities: O = Pd V forwards,
 * dV = Pd^T dO backwards, where dP = factor * (dO V^T) before the softmax
 * backward (kernels/cpu/k_block.c's att_drop_backward). The factors are
 * drawn where they are used (kc_drop_factor), bit for bit the CPU's. */
#include "kc_internal.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

static __device__ __forceinline__ void store(float *p, float v)
{
    *p = v;
}
static __device__ __forceinline__ void store(kc_bf16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

/* qkv (B, T, 3, H, hd) -> q, k, v (B, H, T, hd) */
template <typename T>
static __global__ void g_att_split(T *q, T *k, T *v, const float *qkv, int64_t B, int64_t t, int64_t heads,
                                   int64_t hd)
{
    int64_t d = heads * hd, d3 = 3 * d;
    GRID_STRIDE(idx, B * t * d3)
    {
        int64_t bt = idx / d3, rem = idx % d3, which = rem / d, c = rem % d;
        int64_t b = bt / t, i = bt % t, h = c / hd, e = c % hd;
        T *dst = which == 0 ? q : which == 1 ? k : v;
        store(dst + ((b * heads + h) * t + i) * hd + e, qkv[idx]);
    }
}

/* x (B, T, D) -> heads (B, H, T, hd) */
template <typename T>
static __global__ void g_att_heads(T *dst, const float *x, int64_t B, int64_t t, int64_t heads, int64_t hd)
{
    int64_t d = heads * hd;
    GRID_STRIDE(idx, B * t * d)
    {
        int64_t bt = idx / d, c = idx % d, b = bt / t, i = bt % t, h = c / hd, e = c % hd;
        store(dst + ((b * heads + h) * t + i) * hd + e, x[idx]);
    }
}

/* heads (B, H, T, hd) -> out (B, T, D) */
static __global__ void g_att_merge(float *out, const float *o, int64_t B, int64_t t, int64_t heads, int64_t hd)
{
    int64_t d = heads * hd;
    GRID_STRIDE(idx, B * t * d)
    {
        int64_t bt = idx / d, c = idx % d, b = bt / t, i = bt % t, h = c / hd, e = c % hd;
        out[idx] = o[((b * heads + h) * t + i) * hd + e];
    }
}

/* dq, dk, dv (B, H, T, hd) -> dqkv (B, T, 3D) */
static __global__ void g_att_merge3(float *dqkv, const float *dq, const float *dk, const float *dv, int64_t B,
                                    int64_t t, int64_t heads, int64_t hd)
{
    int64_t d = heads * hd, d3 = 3 * d;
    GRID_STRIDE(idx, B * t * d3)
    {
        int64_t bt = idx / d3, rem = idx % d3, which = rem / d, c = rem % d;
        int64_t b = bt / t, i = bt % t, h = c / hd, e = c % hd;
        const float *src = which == 0 ? dq : which == 1 ? dk : dv;
        dqkv[idx] = src[((b * heads + h) * t + i) * hd + e];
    }
}

/* One block per row (b, h, i) of att (B, H, T, T), in place: causal keys
 * j > i become 0, keys with mask[b, j] == 0 score -inf, then the softmax
 * over keys [0, nj) (sum in double, scaled by the float inverse, as the
 * CPU does); a row whose keys are all masked is all zeros. */
static __global__ void g_att_softmax(float *att, const float *mask, int64_t rows, int64_t t, int64_t heads, int causal)
{
    __shared__ float shf[KC_THREADS];
    __shared__ double shd[KC_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int64_t i = r % t, b = r / t / heads;
        float *pr = att + r * t;
        const float *mrow = mask ? mask + b * t : NULL;
        int64_t nj = causal ? i + 1 : t;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < t; j += KC_THREADS) {
            if (j >= nj) {
                pr[j] = 0.0f;
                continue;
            }
            float s = pr[j];
            if (mrow && mrow[j] == 0.0f)
                s = -INFINITY, pr[j] = s;
            mx = s > mx ? s : mx;
        }
        mx = kc_block_max(mx, shf);
        if (mx == -INFINITY) { /* every key masked: zeros, not NaN */
            for (int64_t j = threadIdx.x; j < nj; j += KC_THREADS)
                pr[j] = 0.0f;
            continue;
        }
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < nj; j += KC_THREADS) {
            float e = expf(pr[j] - mx);
            pr[j] = e;
            s += e;
        }
        float inv = (float)(1.0 / kc_block_sum<double>((double)s, shd));
        for (int64_t j = threadIdx.x; j < nj; j += KC_THREADS)
            pr[j] *= inv;
    }
}

/* Pd (B, H, T, T) = att * drop1's factors, fp32 or rounded to bf16; the
 * factor of att's element idx is that of element idx % (H T T) of sample
 * idx / (H T T) */
template <typename T>
static __global__ void g_att_drop(T *pd, const float *att, int64_t n, int64_t per, KcDrop d)
{
    GRID_STRIDE(idx, n)
    {
        store(pd + idx, att[idx] * kc_drop_factor(d, idx / per, idx % per));
    }
}

/* One block per row, in place in dp: dS = P * (dP - sum_j P dP); with
 * dropping, dp holds dPd on entry and dP = dPd * factor first (each thread
 * rewrites only its own entries) */
static __global__ void g_att_softmax_bwd(float *dp, const float *att, int64_t rows, int64_t t, int64_t heads,
                                         int dropping, KcDrop d)
{
    __shared__ double shd[KC_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *pr = att + r * t;
        float *br = dp + r * t;
        if (dropping) {
            int64_t b = r / (heads * t), e0 = (r % (heads * t)) * t;
            for (int64_t j = threadIdx.x; j < t; j += KC_THREADS)
                br[j] = br[j] * kc_drop_factor(d, b, e0 + j);
        }
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < t; j += KC_THREADS)
            s += pr[j] * br[j];
        float rs = (float)kc_block_sum<double>((double)s, shd);
        for (int64_t j = threadIdx.x; j < t; j += KC_THREADS)
            br[j] = pr[j] * (br[j] - rs);
    }
}

/* ---- workspace ------------------------------------------------------------------------ */

typedef struct AttWs {
    void *q, *k, *v, *dO; /* head-major operands: fp32, or bf16 in KC_BF16 */
    float *o;             /* forward: O before the merge */
    float *dp;            /* backward: dP, then dS */
    kc_bf16 *pb, *dsb;    /* KC_BF16: P (or Pd) and dS rounded */
    float *pd;            /* dropping, fp32 and tf32: Pd */
    float *dq, *dk, *dv;
} AttWs;

static AttWs att_layout(KcWs *w, KcPrec prec, int backward, int drop, int64_t B, int64_t t, int64_t d, int64_t heads)
{
    AttWs a = {};
    size_t el = prec == KC_BF16 ? 2 : 4;
    int64_t nd = B * t * d, tt = B * heads * t * t;
    a.q = kc_take(w, nd, el), a.k = kc_take(w, nd, el), a.v = kc_take(w, nd, el);
    if (drop && prec != KC_BF16)
        a.pd = (float *)kc_take(w, tt, 4);
    if (!backward) {
        a.o = (float *)kc_take(w, nd, 4);
        if (prec == KC_BF16)
            a.pb = (kc_bf16 *)kc_take(w, tt, 2);
    } else {
        a.dO = kc_take(w, nd, el);
        a.dp = (float *)kc_take(w, tt, 4);
        if (prec == KC_BF16)
            a.pb = (kc_bf16 *)kc_take(w, tt, 2), a.dsb = (kc_bf16 *)kc_take(w, tt, 2);
        a.dq = (float *)kc_take(w, nd, 4), a.dk = (float *)kc_take(w, nd, 4), a.dv = (float *)kc_take(w, nd, 4);
    }
    return a;
}

static size_t att_workspace(const KcCtx *ctx, int drop, int64_t B, int64_t t, int64_t d, int64_t heads)
{
    KcWs f = kc_ws_count(), b = kc_ws_count();
    att_layout(&f, ctx->prec, 0, drop, B, t, d, heads);
    att_layout(&b, ctx->prec, 1, drop, B, t, d, heads);
    return f.used > b.used ? f.used : b.used;
}

size_t kc_attention_workspace(const KcCtx *ctx, int64_t B, int64_t t, int64_t d, int64_t heads)
{
    return att_workspace(ctx, 0, B, t, d, heads);
}

size_t kc_attention_drop_workspace(const KcCtx *ctx, int64_t B, int64_t t, int64_t d, int64_t heads)
{
    return att_workspace(ctx, 1, B, t, d, heads);
}

/* att's dropped copy for the products: into a.pd (fp32, tf32) or a.pb (bf16) */
static int att_dropped(KcCtx *ctx, const AttWs *a, const float *att, int64_t B, int64_t t, int64_t heads,
                       const KcDrop *drop, const void **P)
{
    int64_t n = B * heads * t * t;
    if (ctx->prec == KC_BF16) {
        g_att_drop<kc_bf16><<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(a->pb, att, n, heads * t * t, *drop);
        *P = a->pb;
    } else {
        g_att_drop<float><<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(a->pd, att, n, heads * t * t, *drop);
        *P = a->pd;
    }
    KC_LAUNCHED(ctx, g_att_drop);
    return KC_OK;
}

#define ATT_ARGS(ctx)                                                                                                  \
    KC_ARG(ctx, B >= 0 && t > 0 && d > 0 && heads > 0 && d % heads == 0, "attention sizes (heads divide the width)")

int kc_attention_forward(KcCtx *ctx, float *out, float *att, const float *qkv, const float *mask, int64_t B, int64_t t,
                         int64_t d, int64_t heads, int causal)
{
    return kc_attention_forward_drop(ctx, out, att, qkv, mask, B, t, d, heads, causal, NULL);
}

int kc_attention_backward(KcCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B,
                          int64_t t, int64_t d, int64_t heads)
{
    return kc_attention_backward_drop(ctx, dqkv, dout, qkv, att, B, t, d, heads, NULL);
}

int kc_attention_forward_drop(KcCtx *ctx, float *out, float *att, const float *qkv, const float *mask, int64_t B,
                              int64_t t, int64_t d, int64_t heads, int causal, const KcDrop *drop)
{
    KC_ENTER(ctx);
    ATT_ARGS(ctx);
    if (B == 0)
        return KC_OK;
    KcWs ws = kc_ws_of(ctx);
    AttWs a = att_layout(&ws, ctx->prec, 0, drop != NULL, B, t, d, heads);
    KC_WS_FITS(ctx, ws, "kc_attention_forward");
    int64_t hd = d / heads, bh = B * heads, rows = bh * t;
    float scale = (float)(1.0 / sqrt((double)hd));
    if (ctx->prec == KC_BF16)
        g_att_split<kc_bf16><<<kc_grid(ctx, B * t * 3 * d), KC_THREADS, 0, ctx->stream>>>(
            (kc_bf16 *)a.q, (kc_bf16 *)a.k, (kc_bf16 *)a.v, qkv, B, t, heads, hd);
    else
        g_att_split<float><<<kc_grid(ctx, B * t * 3 * d), KC_THREADS, 0, ctx->stream>>>(
            (float *)a.q, (float *)a.k, (float *)a.v, qkv, B, t, heads, hd);
    KC_LAUNCHED(ctx, g_att_split);
    /* S^T (T, T) = K (T, hd) . Q^T, per (b, h), into att */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, t, t, hd, scale, a.k, hd, t * hd, a.q, hd, t * hd, 0.0f, att, t, t * t,
                   bh));
    g_att_softmax<<<kc_grid_rows(rows), KC_THREADS, 0, ctx->stream>>>(att, mask, rows, t, heads, causal);
    KC_LAUNCHED(ctx, g_att_softmax);
    const void *P = att;
    if (drop) {
        KC_TRY(att_dropped(ctx, &a, att, B, t, heads, drop, &P));
    } else if (ctx->prec == KC_BF16) {
        KC_TRY(kc_to_bf16(ctx, a.pb, att, rows * t));
        P = a.pb;
    }
    /* O^T (hd, T) = V^T (hd, T) . P^T (Pd^T when dropping) */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, hd, t, t, 1.0f, a.v, hd, t * hd, P, t, t * t, 0.0f, a.o, hd, t * hd,
                   bh));
    g_att_merge<<<kc_grid(ctx, B * t * d), KC_THREADS, 0, ctx->stream>>>(out, a.o, B, t, heads, hd);
    KC_LAUNCHED(ctx, g_att_merge);
    return KC_OK;
}

int kc_attention_backward_drop(KcCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                               int64_t B, int64_t t, int64_t d, int64_t heads, const KcDrop *drop)
{
    KC_ENTER(ctx);
    ATT_ARGS(ctx);
    if (B == 0)
        return KC_OK;
    KcWs ws = kc_ws_of(ctx);
    AttWs a = att_layout(&ws, ctx->prec, 1, drop != NULL, B, t, d, heads);
    KC_WS_FITS(ctx, ws, "kc_attention_backward");
    int64_t hd = d / heads, bh = B * heads, rows = bh * t;
    float scale = (float)(1.0 / sqrt((double)hd));
    unsigned g3 = kc_grid(ctx, B * t * 3 * d), g1 = kc_grid(ctx, B * t * d);
    if (ctx->prec == KC_BF16) {
        g_att_split<kc_bf16><<<g3, KC_THREADS, 0, ctx->stream>>>((kc_bf16 *)a.q, (kc_bf16 *)a.k, (kc_bf16 *)a.v, qkv, B,
                                                                 t, heads, hd);
        KC_LAUNCHED(ctx, g_att_split);
        g_att_heads<kc_bf16><<<g1, KC_THREADS, 0, ctx->stream>>>((kc_bf16 *)a.dO, dout, B, t, heads, hd);
        KC_LAUNCHED(ctx, g_att_heads);
    } else {
        g_att_split<float><<<g3, KC_THREADS, 0, ctx->stream>>>((float *)a.q, (float *)a.k, (float *)a.v, qkv, B, t,
                                                               heads, hd);
        KC_LAUNCHED(ctx, g_att_split);
        g_att_heads<float><<<g1, KC_THREADS, 0, ctx->stream>>>((float *)a.dO, dout, B, t, heads, hd);
        KC_LAUNCHED(ctx, g_att_heads);
    }
    const void *P = att;
    if (drop) {
        KC_TRY(att_dropped(ctx, &a, att, B, t, heads, drop, &P));
    } else if (ctx->prec == KC_BF16) {
        KC_TRY(kc_to_bf16(ctx, a.pb, att, rows * t));
        P = a.pb;
    }
    /* dV^T (hd, T) = dO^T (hd, T) . P (T, T) (Pd when dropping) */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, hd, t, t, 1.0f, a.dO, hd, t * hd, P, t, t * t, 0.0f, a.dv, hd, t * hd,
                   bh));
    /* dP^T (T, T) = V (T, hd) . dO^T */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, t, t, hd, 1.0f, a.v, hd, t * hd, a.dO, hd, t * hd, 0.0f, a.dp, t,
                   t * t, bh));
    KcDrop nodrop = {};
    g_att_softmax_bwd<<<kc_grid_rows(rows), KC_THREADS, 0, ctx->stream>>>(a.dp, att, rows, t, heads, drop != NULL,
                                                                          drop ? *drop : nodrop);
    KC_LAUNCHED(ctx, g_att_softmax_bwd);
    const void *dS = a.dp;
    if (ctx->prec == KC_BF16) {
        KC_TRY(kc_to_bf16(ctx, a.dsb, a.dp, rows * t));
        dS = a.dsb;
    }
    /* dQ^T (hd, T) = scale K^T (hd, T) . dS^T */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, hd, t, t, scale, a.k, hd, t * hd, dS, t, t * t, 0.0f, a.dq, hd,
                   t * hd, bh));
    /* dK^T (hd, T) = scale Q^T (hd, T) . dS (T, T) */
    KC_TRY(kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, hd, t, t, scale, a.q, hd, t * hd, dS, t, t * t, 0.0f, a.dk, hd,
                   t * hd, bh));
    g_att_merge3<<<g3, KC_THREADS, 0, ctx->stream>>>(dqkv, a.dq, a.dk, a.dv, B, t, heads, hd);
    KC_LAUNCHED(ctx, g_att_merge3);
    return KC_OK;
}
