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
 * scratch is the CPU's (N, max(D, F)); the inner kernels also take ctx->ws
 * (kc_block_workspace). */
#include "kc_internal.h"

#define BLOCK_ARGS(ctx, g)                                                                                             \
    do {                                                                                                               \
        KC_ARG(ctx, B >= 0 && (g)->t > 0 && (g)->d > 0 && (g)->heads > 0 && (g)->f > 0, "transformer_block sizes");  \
        KC_ARG(ctx, (g)->d % (g)->heads == 0, "transformer_block: heads divide the width");                           \
        KC_ARG(ctx, (g)->dropout == 0.0f, "transformer_block: dropout inside the block is not implemented");         \
    } while (0)

size_t kc_block_workspace(const KcCtx *ctx, const KBlock *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, f = g->f;
    size_t w[] = {kc_linear_workspace(ctx, n, d, 3 * d),
                  kc_linear_workspace(ctx, n, d, d),
                  kc_linear_workspace(ctx, n, d, f),
                  kc_linear_workspace(ctx, n, f, d),
                  kc_attention_workspace(ctx, B, g->t, d, g->heads),
                  kc_layernorm_workspace(n, d)};
    size_t most = 0;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        most = w[i] > most ? w[i] : most;
    return most;
}

int kc_block_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[12],
                     int64_t B, const KBlock *g, float *scratch)
{
    KC_ENTER(ctx);
    BLOCK_ARGS(ctx, g);
    KBlockSaved o = k_block_saved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *ln1 = saved + o.ln1, *qkv = saved + o.qkv, *cx = saved + o.ctx, *h = saved + o.h;
    float *ln2 = saved + o.ln2, *fc = saved + o.fc, *act = saved + o.act;
    KC_TRY(kc_layernorm_forward(ctx, ln1, saved + o.mean1, saved + o.rstd1, in, p[0], p[1], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, qkv, ln1, p[2], p[3], n, d, 3 * d));
    KC_TRY(kc_attention_forward(ctx, cx, saved + o.att, qkv, mask, B, g->t, d, g->heads, g->causal));
    KC_TRY(kc_linear_forward(ctx, h, cx, p[4], p[5], n, d, d));
    KC_TRY(kc_add_into(ctx, h, in, n * d));
    KC_TRY(kc_layernorm_forward(ctx, ln2, saved + o.mean2, saved + o.rstd2, h, p[6], p[7], n, d, g->eps));
    KC_TRY(kc_linear_forward(ctx, fc, ln2, p[8], p[9], n, d, f));
    KC_TRY(kc_gelu_forward(ctx, act, fc, n * f));
    KC_TRY(kc_linear_forward(ctx, out, act, p[10], p[11], n, f, d));
    KC_TRY(kc_add_into(ctx, out, h, n * d));
    (void)scratch;
    return KC_OK;
}

int kc_block_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[12], int64_t B,
                            const KBlock *g, float *scratch)
{
    KC_ENTER(ctx);
    BLOCK_ARGS(ctx, g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *dqkv = dsaved + q.dqkv, *dh = dsaved + q.dh, *dfc = dsaved + q.dfc;
    float *dln1 = dsaved + q.dln1, *dln2 = dsaved + q.dln2;
    KC_CUDA(ctx, cudaMemcpyAsync(dsaved + q.dout, dout, (size_t)(n * d) * sizeof(float), cudaMemcpyDeviceToDevice,
                                 ctx->stream));
    float *dact = scratch; /* (N, F) */
    KC_TRY(kc_linear_backward_input(ctx, dact, dout, p[10], n, f, d));
    KC_TRY(kc_gelu_backward(ctx, dfc, dact, saved + o.fc, n * f));
    KC_TRY(kc_linear_backward_input(ctx, dln2, dfc, p[8], n, d, f));
    KC_TRY(kc_layernorm_backward_input(ctx, dh, dln2, saved + o.h, p[6], saved + o.mean2, saved + o.rstd2, n, d));
    KC_TRY(kc_add_into(ctx, dh, dout, n * d));
    float *dctx = scratch; /* (N, D); dact is dead */
    KC_TRY(kc_linear_backward_input(ctx, dctx, dh, p[4], n, d, d));
    KC_TRY(kc_attention_backward(ctx, dqkv, dctx, saved + o.qkv, saved + o.att, B, g->t, d, g->heads));
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
