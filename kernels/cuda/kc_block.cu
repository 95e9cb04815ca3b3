/* kernels/cuda/kc_block.cu: transformer_block (k_block.h) on the GPU, call
 * for call kernels/cpu/k_block.c with the kc_ kernels, over the same saved /
 * dsaved layouts (k_block_saved_layout / k_block_dsaved_layout in
 * k_block.h; tests/test_cuda_kernels.c also compares every saved and dsaved
 * float with the CPU's):
 *
 *   saved:  ln1 (N, D) | mean1 (N) | rstd1 (N) | qkv (N, 3D) | att (B, H, T, T)
 *           | ctx (N, D) | h (N, D) | ln2 (N, D) | mean2 (N) | rstd2 (N)
 *           | fc (N, F) | act (N, F)
 *   dsaved: dqkv (N, 3D) | dh (N, D) | dfc (N, F) | dout (N, D) | dln1 (N, D)
 *           | dln2 (N, D)
 *
 * scratch is the CPU's (k_block_scratch_floats): (N, max(D, F)), then, with
 * dropout > 0, dres (N, D), the gradient of h kept for din (the CPU's
 * pd, dpd and bits sections go unused: the masks are drawn inside the
 * kernels, kc_drop_factor); the inner kernels also take ctx->ws
 * (kc_block_workspace).
 *
 * Dropout as the CPU's (k_block.h): drop1 inside the attention
 * (kc_attention_forward_drop / _backward_drop), drop2 and drop3 by g_drop
 * on attn.proj's and mlp.proj's outputs, and on their gradients in the
 * input half; the masks are the CPU's bit for bit. */
#include "kc_internal.h"

#define BLOCK_ARGS(ctx, g)                                                                                             \
    do {                                                                                                               \
        KC_ARG(ctx, B >= 0 && (g)->t > 0 && (g)->d > 0 && (g)->heads > 0 && (g)->f > 0, "transformer_block sizes");  \
        KC_ARG(ctx, (g)->d % (g)->heads == 0, "transformer_block: heads divide the width");                           \
        KC_ARG(ctx, (g)->dropout >= 0.0f && (g)->dropout < 1.0f, "transformer_block: dropout in [0, 1)");            \
    } while (0)

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* y (B, T, D) = x * the site's factors (x may be y): a sample is per = T D
 * elements, each with its own factor (k_dropout_forward's product) */
static __global__ void g_drop(float *y, const float *x, int64_t n, int64_t per, KcDrop d)
{
    GRID_STRIDE(idx, n)
    {
        y[idx] = x[idx] * kc_drop_factor(d, idx / per, idx % per);
    }
}

static int drop_rows(KcCtx *ctx, float *y, const float *x, int64_t B, const KBlock *g, const KBlockKeys *keys, int site)
{
    int64_t n = B * g->t * g->d;
    g_drop<<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(y, x, n, g->t * g->d, kc_drop_of(g, keys, site));
    KC_LAUNCHED(ctx, g_drop);
    return KC_OK;
}

size_t kc_block_workspace(const KcCtx *ctx, const KBlock *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, f = g->f;
    size_t w[] = {kc_linear_workspace(ctx, n, d, 3 * d),
                  kc_linear_workspace(ctx, n, d, d),
                  kc_linear_workspace(ctx, n, d, f),
                  kc_linear_workspace(ctx, n, f, d),
                  g->dropout > 0.0f ? kc_attention_drop_workspace(ctx, B, g->t, d, g->heads)
                                    : kc_attention_workspace(ctx, B, g->t, d, g->heads),
                  kc_layernorm_workspace(n, d)};
    size_t most = 0;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        most = w[i] > most ? w[i] : most;
    return most;
}

int kc_block_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[12],
                     int64_t B, const KBlock *g, const KBlockKeys *keys, float *scratch)
{
    KC_ENTER(ctx);
    BLOCK_ARGS(ctx, g);
    int drops = k_block_drops(g, keys);
    KC_ARG(ctx, !drops || keys->layer < (1u << 24), "transformer_block: layer index below 2^24");
    KcDrop d1 = drops ? kc_drop_of(g, keys, K_BLOCK_DROP_ATT) : KcDrop{};
    KBlockSaved o = k_block_saved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *ln1 = saved + o.ln1, *qkv = saved + o.qkv, *cx = saved + o.ctx, *h = saved + o.h;
    float *ln2 = saved + o.ln2, *fc = saved + o.fc, *act = saved + o.act;
    KC_TRY(kc_layernorm_forward(ctx, ln1, saved + o.mean1, saved + o.rstd1, in, p[0], p[1], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, qkv, ln1, p[2], p[3], n, d, 3 * d));
    KC_TRY(kc_attention_forward_drop(ctx, cx, saved + o.att, qkv, mask, B, g->t, d, g->heads, g->causal,
                                     drops ? &d1 : NULL));
    KC_TRY(kc_linear_forward(ctx, h, cx, p[4], p[5], n, d, d));
    if (drops)
        KC_TRY(drop_rows(ctx, h, h, B, g, keys, K_BLOCK_DROP_ATTN_PROJ));
    KC_TRY(kc_add_into(ctx, h, in, n * d));
    KC_TRY(kc_layernorm_forward(ctx, ln2, saved + o.mean2, saved + o.rstd2, h, p[6], p[7], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, fc, ln2, p[8], p[9], n, d, f));
    KC_TRY(kc_gelu_forward(ctx, act, fc, n * f));
    KC_TRY(kc_linear_forward(ctx, out, act, p[10], p[11], n, f, d));
    if (drops)
        KC_TRY(drop_rows(ctx, out, out, B, g, keys, K_BLOCK_DROP_MLP_PROJ));
    KC_TRY(kc_add_into(ctx, out, h, n * d));
    (void)scratch;
    return KC_OK;
}

int kc_block_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[12], int64_t B,
                            const KBlock *g, const KBlockKeys *keys, float *scratch)
{
    KC_ENTER(ctx);
    BLOCK_ARGS(ctx, g);
    int drops = k_block_drops(g, keys);
    KC_ARG(ctx, !drops || keys->layer < (1u << 24), "transformer_block: layer index below 2^24");
    KcDrop d1 = drops ? kc_drop_of(g, keys, K_BLOCK_DROP_ATT) : KcDrop{};
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *dqkv = dsaved + q.dqkv, *dfc = dsaved + q.dfc, *dmp = dsaved + q.dout;
    float *dln1 = dsaved + q.dln1, *dln2 = dsaved + q.dln2;
    float *dproj = dsaved + q.dh;                               /* attn.proj's output gradient */
    float *dh = drops ? scratch + n * (f > d ? f : d) : dproj; /* h's (the CPU's dres) */
    if (drops)
        KC_TRY(drop_rows(ctx, dmp, dout, B, g, keys, K_BLOCK_DROP_MLP_PROJ));
    else
        KC_CUDA(ctx, cudaMemcpyAsync(dmp, dout, (size_t)(n * d) * sizeof(float), cudaMemcpyDeviceToDevice,
                                     ctx->stream));
    float *dact = scratch; /* (N, F) */
    KC_TRY(kc_linear_backward_input(ctx, dact, dmp, p[10], n, f, d));
    KC_TRY(kc_gelu_backward(ctx, dfc, dact, saved + o.fc, n * f));
    KC_TRY(kc_linear_backward_input(ctx, dln2, dfc, p[8], n, d, f));
    KC_TRY(kc_layernorm_backward_input(ctx, dh, dln2, saved + o.h, p[6], saved + o.mean2, saved + o.rstd2, n, d));
    KC_TRY(kc_add_into(ctx, dh, dout, n * d));
    if (drops)
        KC_TRY(drop_rows(ctx, dproj, dh, B, g, keys, K_BLOCK_DROP_ATTN_PROJ));
    float *dctx = scratch; /* (N, D); dact is dead */
    KC_TRY(kc_linear_backward_input(ctx, dctx, dproj, p[4], n, d, d));
    KC_TRY(kc_attention_backward_drop(ctx, dqkv, dctx, saved + o.qkv, saved + o.att, B, g->t, d, g->heads,
                                      drops ? &d1 : NULL));
    KC_TRY(kc_linear_backward_input(ctx, dln1, dqkv, p[2], n, d, 3 * d));
    KC_TRY(kc_layernorm_backward_input(ctx, din, dln1, in, p[0], saved + o.mean1, saved + o.rstd1, n, d));
    KC_TRY(kc_add_into(ctx, din, dh, n * d));
    (void)mask; /* the saved probabilities carry it */
    return KC_OK;
}

int kc_block_backward_weight(KcCtx *ctx, float *const grads[12], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KBlock *g, float *scratch)
{
    KC_ENTER(ctx);
    BLOCK_ARGS(ctx, g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    KC_TRY(kc_layernorm_backward_weight(ctx, grads[0], grads[1], dsaved + q.dln1, in, saved + o.mean1,
                                        saved + o.rstd1, n, d));
    KC_TRY(kc_linear_backward_weight(ctx, grads[2], grads[3], dsaved + q.dqkv, saved + o.ln1, n, d, 3 * d));
    KC_TRY(kc_linear_backward_weight(ctx, grads[4], grads[5], dsaved + q.dh, saved + o.ctx, n, d, d));
    KC_TRY(kc_layernorm_backward_weight(ctx, grads[6], grads[7], dsaved + q.dln2, saved + o.h, saved + o.mean2,
                                        saved + o.rstd2, n, d));
    KC_TRY(kc_linear_backward_weight(ctx, grads[8], grads[9], dsaved + q.dfc, saved + o.ln2, n, d, f));
    KC_TRY(kc_linear_backward_weight(ctx, grads[10], grads[11], dsaved + q.dout, saved + o.act, n, f, d));
    (void)scratch;
    return KC_OK;
}
