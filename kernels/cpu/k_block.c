/* kernels/cpu/k_block.c: the transformer_block layer (kernels/k_block.h),
 * a composite of the k_cpu.h kernels and nothing else, so its arithmetic is
 * theirs (and a CUDA backend can mirror it call for call):
 *
 *     ln1 = LN1(x)               qkv = ln1 Wqkv^T + bqkv
 *     ctx = attention(qkv)       h   = x + (ctx Wproj^T + bproj)
 *     ln2 = LN2(h)               fc  = ln2 Wfc^T + bfc
 *     act = gelu_tanh(fc)        out = h + (act Wmp^T + bmp)
 *
 * Layouts. saved and dsaved hold B samples as sections, each section
 * (B, ...) for all samples at once (the layernorm layer's mean/rstd do the
 * same), so every linear is one GEMM over N = B * T rows:
 *
 *   saved:  ln1 (N, D) | mean1 (N) | rstd1 (N) | qkv (N, 3D) | att (B, H, T, T)
 *           | ctx (N, D) | h (N, D) | ln2 (N, D) | mean2 (N) | rstd2 (N)
 *           | fc (N, F) | act (N, F)
 *   dsaved: dqkv (N, 3D) | dh (N, D) | dfc (N, F) | dout (N, D) | dln1 (N, D)
 *           | dln2 (N, D)
 *
 * dsaved holds, for each linear and layernorm, the gradient of its output
 * (dh is attn.proj's, dout mlp.proj's, dqkv attn.qkv's, dfc mlp.fc's, dln1
 * and dln2 the layernorms'): exactly the dout arguments of the *_weight
 * kernels. The input half writes them, the weight half only reads them, so
 * a full backward (the two in sequence) and a split one run the same calls
 * on the same numbers: the same bits.
 *
 * Scratch: (N, max(D, F)) for the input half's temporaries, the gradient of
 * the gelu output and then of the attention context (never both at once).
 * The forward and the weight half need none.
 */
#include "k_block.h"
#include "k_cpu.h"

#include <assert.h>
#include <string.h>

/* what the block kernels rely on; the compiler and runtime check it first */
static void check_geometry(const KBlock *g)
{
    assert(g->t > 0 && g->d > 0 && g->heads > 0 && g->f > 0 && "positive sizes");
    assert(g->d % g->heads == 0 && "heads divide the width");
    assert(g->dropout == 0.0f && "dropout inside the block is not implemented");
    (void)g;
}

int64_t k_block_saved_floats(const KBlock *g)
{
    return k_block_saved_layout(g, 1).end;
}

int64_t k_block_dsaved_floats(const KBlock *g)
{
    return k_block_dsaved_layout(g, 1).end;
}

int64_t k_block_scratch_floats(const KBlock *g, int64_t B)
{
    return B * g->t * (g->f > g->d ? g->f : g->d);
}

/* y (n) += x (n): the residual adds, one float add each (as torch's x + y) */
static void add_into(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void k_block_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[12], int64_t B,
                     const KBlock *g, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *ln1 = saved + o.ln1, *qkv = saved + o.qkv, *ctx = saved + o.ctx, *h = saved + o.h;
    float *ln2 = saved + o.ln2, *fc = saved + o.fc, *act = saved + o.act;
    /* attention half: h (N, D) = x + proj(attention(qkv(ln1(x)))) */
    k_layernorm_forward(ln1, saved + o.mean1, saved + o.rstd1, in, p[0], p[1], n, d, g->eps);
    k_linear_forward(qkv, ln1, p[2], p[3], n, d, 3 * d);
    k_attention_forward(ctx, saved + o.att, qkv, mask, B, g->t, d, g->heads, g->causal);
    k_linear_forward(h, ctx, p[4], p[5], n, d, d);
    add_into(h, in, n * d);
    /* MLP half: out (N, D) = h + mlp.proj(gelu(mlp.fc(ln2(h)))) */
    k_layernorm_forward(ln2, saved + o.mean2, saved + o.rstd2, h, p[6], p[7], n, d, g->eps);
    k_linear_forward(fc, ln2, p[8], p[9], n, d, f);
    k_gelu_forward(act, fc, n * f);
    k_linear_forward(out, act, p[10], p[11], n, f, d);
    add_into(out, h, n * d);
    (void)scratch;
}

/* The chain rule backwards through the forward above. A residual's two
 * branches meet in one float add: d h = dout + LN2's input gradient, and
 * din = dh + LN1's input gradient. */
void k_block_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[12], int64_t B, const KBlock *g, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    float *dqkv = dsaved + q.dqkv, *dh = dsaved + q.dh, *dfc = dsaved + q.dfc;
    float *dln1 = dsaved + q.dln1, *dln2 = dsaved + q.dln2;
    /* mlp.proj's output gradient is dout itself (the residual passes it
     * through); kept, since the weight half does not get dout */
    memcpy(dsaved + q.dout, dout, (size_t)(n * d) * sizeof(float));
    float *dact = scratch; /* (N, F) */
    k_linear_backward_input(dact, dout, p[10], n, f, d);
    k_gelu_backward(dfc, dact, saved + o.fc, n * f);
    k_linear_backward_input(dln2, dfc, p[8], n, d, f);
    k_layernorm_backward_input(dh, dln2, saved + o.h, p[6], saved + o.mean2, saved + o.rstd2, n, d);
    add_into(dh, dout, n * d);
    float *dctx = scratch; /* (N, D); dact is dead */
    k_linear_backward_input(dctx, dh, p[4], n, d, d);
    k_attention_backward(dqkv, dctx, saved + o.qkv, saved + o.att, B, g->t, d, g->heads);
    k_linear_backward_input(dln1, dqkv, p[2], n, d, 3 * d);
    k_layernorm_backward_input(din, dln1, in, p[0], saved + o.mean1, saved + o.rstd1, n, d);
    add_into(din, dh, n * d);
    (void)mask; /* the saved probabilities already carry it (masked = 0) */
}

/* Every parameter gradient is a *_backward_weight call on one output
 * gradient from dsaved and one saved input; they touch disjoint grads, in
 * PcLayer.param order. */
void k_block_backward_weight(float *const grads[12], const float *dsaved, const float *in, const float *saved, int64_t B,
                             const KBlock *g, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = g->f;
    k_layernorm_backward_weight(grads[0], grads[1], dsaved + q.dln1, in, saved + o.mean1, saved + o.rstd1, n, d);
    k_linear_backward_weight(grads[2], grads[3], dsaved + q.dqkv, saved + o.ln1, n, d, 3 * d);
    k_linear_backward_weight(grads[4], grads[5], dsaved + q.dh, saved + o.ctx, n, d, d);
    k_layernorm_backward_weight(grads[6], grads[7], dsaved + q.dln2, saved + o.h, saved + o.mean2, saved + o.rstd2, n,
                                d);
    k_linear_backward_weight(grads[8], grads[9], dsaved + q.dfc, saved + o.ln2, n, d, f);
    k_linear_backward_weight(grads[10], grads[11], dsaved + q.dout, saved + o.act, n, f, d);
    (void)scratch;
}
