/* kernels/cpu/k_llama.c: the llama_block layer (kernels/k_llama.h), a
 * composite of the k_cpu.h kernels, call for call what a CUDA backend
 * mirrors (kernels/cuda/kc_llama.cu):
 *
 *     r1 = RMSNorm1(x)                q = rope(r1 Wq^T), k = rope(r1 Wk^T), v = r1 Wv^T
 *     ctx = attention(q, k, v)        h = x + ctx Wo^T
 *     r2 = RMSNorm2(h)                gate = r2 Wg^T, up = r2 Wu^T
 *     act = silu(gate) * up           out = h + act Wd^T
 *
 * Layouts (k_llama.h): saved, dsaved and scratch hold B samples as
 * sections, each (B, ...) for all samples at once, so every linear is one
 * GEMM over N = B T rows. The attention is k_attention_forward /
 * k_attention_backward over an (N, 3D) array with the K kv heads repeated
 * to H (HF's repeat_kv), built in scratch from saved q, k, v: the forward
 * builds it once, the input half again; its gradient's kv heads are summed
 * back over each group in head order.
 *
 * dsaved holds, for each linear and RMSNorm, the gradient of its output:
 * exactly the dout arguments of the *_weight kernels. The input half
 * writes them, the weight half only reads them, so a full backward and a
 * split one run the same calls on the same numbers: the same bits. Where
 * one input feeds several linears (r1 feeds q, k and v; r2 gate and up) its
 * gradient is the first product, then each next one added in that order.
 */
#include "k_cpu.h"
#include "k_llama.h"

#include <assert.h>
#include <string.h>

/* what the kernels rely on; the compiler and runtime check it first */
static void check_geometry(const KLlama *g)
{
    assert(g->t > 0 && g->d > 0 && g->heads > 0 && g->kv_heads > 0 && g->f > 0 && "positive sizes");
    assert(g->d % g->heads == 0 && "heads divide the width");
    assert(g->heads % g->kv_heads == 0 && "kv_heads divide heads");
    assert((g->d / g->heads) % 2 == 0 && "an even head width (RoPE's halves)");
    assert((k_llama_tp(g) == 1 || (g->kv_heads % g->tp == 0 && g->f % g->tp == 0 && g->tp_rank >= 0 &&
                                   g->tp_rank < g->tp && g->tp_sum)) &&
           "tensor parallel: tp divides kv_heads and F, a rank below tp, a sum");
    (void)g;
}

/* x (n) summed over the tp ranks (nothing with tp = 1) */
static void tp_sum(float *x, int64_t n, const KLlama *g)
{
    if (k_llama_tp(g) > 1)
        g->tp_sum(g->tp_ctx, x, n);
}

/* qkv (N, 3 Dq) = q | k repeated | v repeated: query head j reads kv head
 * j / (H / K) (this rank's heads: Dq = D with tp = 1) */
static void gqa_expand(float *qkv, const float *q, const float *k, const float *v, int64_t n, const KLlama *g)
{
    int64_t d = k_llama_qw(g), hd = g->d / g->heads, dk = k_llama_kv_width(g), rep = g->heads / g->kv_heads;
    size_t hb = (size_t)hd * sizeof(float);
    for (int64_t r = 0; r < n; r++) {
        float *row = qkv + r * 3 * d;
        memcpy(row, q + r * d, (size_t)d * sizeof(float));
        for (int64_t j = 0; j < k_llama_hl(g); j++) {
            memcpy(row + d + j * hd, k + r * dk + (j / rep) * hd, hb);
            memcpy(row + 2 * d + j * hd, v + r * dk + (j / rep) * hd, hb);
        }
    }
}

/* dq (N, D) = dqkv's q part; dk, dv (N, Dk): each kv head the sum of its
 * group's query heads, in head order */
static void gqa_reduce(float *dq, float *dk, float *dv, const float *dqkv, int64_t n, const KLlama *g)
{
    int64_t d = k_llama_qw(g), hd = g->d / g->heads, dkw = k_llama_kv_width(g), rep = g->heads / g->kv_heads;
    for (int64_t r = 0; r < n; r++) {
        const float *row = dqkv + r * 3 * d;
        memcpy(dq + r * d, row, (size_t)d * sizeof(float));
        for (int part = 1; part <= 2; part++) {
            float *dst = (part == 1 ? dk : dv) + r * dkw;
            const float *src = row + part * d;
            for (int64_t kv = 0; kv < k_llama_kl(g); kv++)
                for (int64_t e = 0; e < hd; e++) {
                    float s = src[(kv * rep) * hd + e];
                    for (int64_t j = 1; j < rep; j++)
                        s += src[(kv * rep + j) * hd + e];
                    dst[kv * hd + e] = s;
                }
        }
    }
}

void k_llama_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[9], int64_t B,
                     const KLlama *g, float *scratch)
{
    check_geometry(g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaScratch sc = k_llama_scratch_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = k_llama_fl(g), hd = d / g->heads;
    int64_t dq = k_llama_qw(g), hl = k_llama_hl(g);
    float *r1 = saved + o.r1, *q = saved + o.q, *k = saved + o.k, *v = saved + o.v, *ctx = saved + o.ctx;
    float *h = saved + o.h, *r2 = saved + o.r2, *gate = saved + o.gate, *up = saved + o.up, *act = saved + o.act;
    float *cosv = scratch + sc.cos, *sinv = scratch + sc.sin;
    /* attention half: h = x + o_proj(attention(rope(q), rope(k), v)) */
    k_rmsnorm_forward(r1, saved + o.rstd1, in, p[7], n, d, g->eps);
    k_linear_forward(q, r1, p[0], NULL, n, d, dq, g->prec, NULL);
    k_linear_forward(k, r1, p[1], NULL, n, d, dk, g->prec, NULL);
    k_linear_forward(v, r1, p[2], NULL, n, d, dk, g->prec, NULL);
    k_rope_table(cosv, sinv, g->t, hd, g->theta);
    k_rope_forward(q, n, dq, g->t, hl, hd, cosv, sinv);
    k_rope_forward(k, n, dk, g->t, k_llama_kl(g), hd, cosv, sinv);
    gqa_expand(scratch + sc.qkv, q, k, v, n, g);
    k_attention_forward(ctx, saved + o.att, scratch + sc.qkv, mask, B, g->t, dq, hl, g->causal);
    k_linear_forward(h, ctx, p[3], NULL, n, dq, d, g->prec, NULL);
    tp_sum(h, n * d, g); /* row-parallel: each rank's Dq columns of the product */
    k_add_into(h, in, n * d);
    /* MLP half: out = h + down_proj(silu(gate_proj(r2)) * up_proj(r2)) */
    k_rmsnorm_forward(r2, saved + o.rstd2, h, p[8], n, d, g->eps);
    k_linear_forward(gate, r2, p[4], NULL, n, d, f, g->prec, NULL);
    k_linear_forward(up, r2, p[5], NULL, n, d, f, g->prec, NULL);
    k_swiglu_forward(act, gate, up, n * f);
    k_linear_forward(out, act, p[6], NULL, n, f, d, g->prec, NULL);
    tp_sum(out, n * d, g);
    k_add_into(out, h, n * d);
}

/* The chain rule backwards through the forward above. The residuals meet
 * in one float add each: dh = RMSNorm2's input gradient + dout, din =
 * RMSNorm1's input gradient + dh. */
void k_llama_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[9], int64_t B, const KLlama *g, float *scratch)
{
    check_geometry(g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaDsaved q = k_llama_dsaved_layout(g, B);
    KLlamaScratch sc = k_llama_scratch_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = k_llama_fl(g), hd = d / g->heads;
    int64_t dqw = k_llama_qw(g), hl = k_llama_hl(g);
    float *dq = dsaved + q.dq, *dkk = dsaved + q.dk, *dv = dsaved + q.dv, *dh = dsaved + q.dh;
    float *dgate = dsaved + q.dgate, *dup = dsaved + q.dup, *dmp = dsaved + q.dout;
    float *dr1 = dsaved + q.dr1, *dr2 = dsaved + q.dr2;
    float *tmp = scratch + sc.tmp, *cosv = scratch + sc.cos, *sinv = scratch + sc.sin;
    /* down_proj's output gradient is dout; kept, since the weight half does not get dout */
    memcpy(dmp, dout, (size_t)(n * d) * sizeof(float));
    k_linear_backward_input(tmp, dout, p[6], n, f, d, g->prec); /* dact (N, F) */
    k_swiglu_backward(dgate, dup, tmp, saved + o.gate, saved + o.up, n * f);
    k_linear_backward_input(dr2, dgate, p[4], n, d, f, g->prec);
    k_linear_backward_input(tmp, dup, p[5], n, d, f, g->prec);
    k_add_into(dr2, tmp, n * d);
    tp_sum(dr2, n * d, g); /* column-parallel: each rank's F/tp of gate and up */
    k_rmsnorm_backward_input(dh, dr2, saved + o.h, p[8], saved + o.rstd2, n, d);
    k_add_into(dh, dout, n * d);
    k_linear_backward_input(tmp, dh, p[3], n, dqw, d, g->prec); /* dctx (N, Dq) */
    k_rope_table(cosv, sinv, g->t, hd, g->theta);
    gqa_expand(scratch + sc.qkv, saved + o.q, saved + o.k, saved + o.v, n, g);
    k_attention_backward(scratch + sc.dqkv, tmp, scratch + sc.qkv, saved + o.att, B, g->t, dqw, hl);
    gqa_reduce(dq, dkk, dv, scratch + sc.dqkv, n, g);
    k_rope_backward(dq, n, dqw, g->t, hl, hd, cosv, sinv);
    k_rope_backward(dkk, n, dk, g->t, k_llama_kl(g), hd, cosv, sinv);
    k_linear_backward_input(dr1, dq, p[0], n, d, dqw, g->prec);
    k_linear_backward_input(tmp, dkk, p[1], n, d, dk, g->prec);
    k_add_into(dr1, tmp, n * d);
    k_linear_backward_input(tmp, dv, p[2], n, d, dk, g->prec);
    k_add_into(dr1, tmp, n * d);
    tp_sum(dr1, n * d, g);
    k_rmsnorm_backward_input(din, dr1, in, p[7], saved + o.rstd1, n, d);
    k_add_into(din, dh, n * d);
    (void)mask; /* the saved probabilities already carry it (masked = 0) */
}

/* The scratch for a linear's weight gradient (k_linear_wgrad_floats) where
 * the block's own scratch is big enough (nothing in it is live between
 * calls: the rope tables are rebuilt by each), else NULL: OpenBLAS's */
static float *wgrad_scratch(const KLlama *g, int64_t B, int64_t in_f, int64_t out_f, float *scratch)
{
    int64_t need = k_linear_wgrad_floats(B * g->t, in_f, out_f);
    return need && need <= k_llama_scratch_floats(g, B) ? scratch : NULL;
}

/* Every parameter gradient is a *_backward_weight call on one output
 * gradient from dsaved and one saved input, in PlanLayer.param order. */
void k_llama_backward_weight(float *const grads[9], const float *dsaved, const float *in, const float *saved,
                             int64_t B, const KLlama *g, float *scratch)
{
    check_geometry(g);
    KLlamaSaved o = k_llama_saved_layout(g, B);
    KLlamaDsaved q = k_llama_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = k_llama_fl(g), dq = k_llama_qw(g);
    /* the seven linears in parameter order: output gradient, input, features in and out */
    const int64_t lin[7][4] = {{q.dq, o.r1, d, dq},    {q.dk, o.r1, d, dk},  {q.dv, o.r1, d, dk},
                               {q.dh, o.ctx, dq, d},   {q.dgate, o.r2, d, f}, {q.dup, o.r2, d, f},
                               {q.dout, o.act, f, d}};
    for (int i = 0; i < 7; i++)
        k_linear_backward_weight(grads[i], NULL, dsaved + lin[i][0], saved + lin[i][1], n, lin[i][2], lin[i][3],
                                 g->prec, wgrad_scratch(g, B, lin[i][2], lin[i][3], scratch));
    k_rmsnorm_backward_weight(grads[7], dsaved + q.dr1, in, saved + o.rstd1, n, d);
    k_rmsnorm_backward_weight(grads[8], dsaved + q.dr2, saved + o.h, saved + o.rstd2, n, d);
}
