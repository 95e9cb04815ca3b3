/* kernels/k_llama.h: the llama_block layer (a LLaMA decoder layer, Hugging
 * Face's LlamaDecoderLayer) as one composite of the k_cpu.h kernels:
 *
 *     h   = x + o_proj(attention(rope(q_proj(r1)), rope(k_proj(r1)), v_proj(r1), mask, causal)),
 *                                                              r1 = rmsnorm1(x)
 *     out = h + down_proj(silu(gate_proj(r2)) * up_proj(r2)),  r2 = rmsnorm2(h)
 *
 * No biases, no dropout. Width D, H query heads of hd = D / H, K key/value
 * heads (grouped-query attention: query head j reads kv head j / (H / K)),
 * hidden F. RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, in that order
 * (HF's). RoPE as HF's rotate_half: element i < hd / 2 of a head pairs
 * with element i + hd / 2; inv_freq[i] = 1 / theta^(2i / hd) in float
 * (powf), the angle pos * inv_freq[i] (pos = 0 .. T - 1) and its cosf and
 * sinf in float, as torch computes them in float32:
 *     y[i]      = x[i] cos - x[i + hd/2] sin,
 *     y[i+hd/2] = x[i + hd/2] cos + x[i] sin.
 * Attention: scale 1 / sqrt(hd), masks and causal as transformer_block's
 * (k_attention_forward: the K kv heads are repeated to H, as HF's
 * repeat_kv, in scratch; their gradients summed back over each group, in
 * group order).
 *
 * Parameters in PlanLayer.param order (compiler/pc_model.c, HF's names and
 * the order of LlamaDecoderLayer.named_parameters()):
 *   0 self_attn.q_proj.weight (H hd, D)   1 self_attn.k_proj.weight (K hd, D)
 *   2 self_attn.v_proj.weight (K hd, D)   3 self_attn.o_proj.weight (D, H hd)
 *   4 mlp.gate_proj.weight (F, D)         5 mlp.up_proj.weight (F, D)
 *   6 mlp.down_proj.weight (D, F)         7 input_layernorm.weight (D)
 *   8 post_attention_layernorm.weight (D)
 * The conventions of k_cpu.h: the input-gradient half overwrites, the
 * weight half adds; split and unsplit backwards give the same bits. */
#ifndef PIPE_K_LLAMA_H
#define PIPE_K_LLAMA_H

#include <stdint.h>

#include "k_cpu.h" /* KPrec */

#define K_LLAMA_PARAMS 9

typedef struct KLlama {
    int64_t t, d, heads, kv_heads, f;
    int causal;
    float eps;   /* the two RMSNorms' */
    float theta; /* RoPE's base */
    /* tensor parallelism, as KBlock's (k_block.h): rank tp_rank of tp (0
     * or 1: none), tp_sum adds n floats over the ranks in place */
    int64_t tp, tp_rank;
    void (*tp_sum)(void *ctx, float *x, int64_t n);
    void *tp_ctx;
    KPrec prec; /* of the seven linears' products (0: fp32); attention's stay fp32 */
} KLlama;

/* Tensor parallel (Megatron's split, as transformer_block's in k_block.h).
 * With tp > 1 rank r holds heads / tp query heads and kv_heads / tp kv
 * heads (so each group of query heads finds its kv head on the same rank)
 * and F / tp of the MLP; its arrays are its own: q_proj's rows [r Dq, (r+1)
 * Dq) with Dq = D / tp, k_proj's and v_proj's rows [r Dk, (r+1) Dk) with Dk
 * = the kv width / tp, gate_proj's and up_proj's rows [r F/tp, (r+1) F/tp),
 * o_proj's columns [r Dq, (r+1) Dq) and down_proj's [r F/tp, (r+1) F/tp)
 * (row-parallel), the two RMSNorms whole. The forward sums o_proj's and
 * down_proj's products over the ranks; the input half sums the gradients
 * of r2 (gate + up) and of r1 (q + k + v). The sizes below (layouts,
 * k_llama_kv_width) are this rank's. */
static inline int64_t k_llama_tp(const KLlama *g)
{
    return g->tp > 1 ? g->tp : 1;
}

static inline int64_t k_llama_hl(const KLlama *g) /* this rank's query heads */
{
    return g->heads / k_llama_tp(g);
}

static inline int64_t k_llama_kl(const KLlama *g) /* this rank's kv heads */
{
    return g->kv_heads / k_llama_tp(g);
}

static inline int64_t k_llama_qw(const KLlama *g) /* this rank's query width, hl hd */
{
    return g->d / k_llama_tp(g);
}

static inline int64_t k_llama_fl(const KLlama *g) /* this rank's MLP width */
{
    return g->f / k_llama_tp(g);
}

/* Floats the forward keeps per sample for the backward. */
int64_t k_llama_saved_floats(const KLlama *g);
/* Floats the input-gradient half leaves per sample for the weight half. */
int64_t k_llama_dsaved_floats(const KLlama *g);
/* Scratch floats for B samples (forward and both backward halves). */
int64_t k_llama_scratch_floats(const KLlama *g, int64_t B);

/* in, out (B, T, D); mask (B, T) or NULL (1 = real token, 0 = padding);
 * p[9] the parameters; saved (B * saved_floats). */
void k_llama_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[9], int64_t B,
                     const KLlama *g, float *scratch);
/* din (B, T, D) overwritten; dsaved (B * dsaved_floats) written for the
 * weight half. */
void k_llama_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[9], int64_t B, const KLlama *g, float *scratch);
/* grads[9] += the parameter gradients, from what the input half left. */
void k_llama_backward_weight(float *const grads[9], const float *dsaved, const float *in, const float *saved,
                             int64_t B, const KLlama *g, float *scratch);

/* Offsets (in floats, for B samples) of the sections of saved, dsaved and
 * scratch; the CPU and CUDA kernels share them. N = B T, Dk = K hd:
 *
 *   saved:   r1 (N, D) | rstd1 (N) | q (N, D) | k (N, Dk) | v (N, Dk)
 *            | att (B, H, T, T) | ctx (N, D) | h (N, D) | r2 (N, D)
 *            | rstd2 (N) | gate (N, F) | up (N, F) | act (N, F)
 *   dsaved:  dq (N, D) | dk (N, Dk) | dv (N, Dk) | dh (N, D) | dgate (N, F)
 *            | dup (N, F) | dout (N, D) | dr1 (N, D) | dr2 (N, D)
 *   scratch: qkv (N, 3D) | dqkv (N, 3D) | tmp (N, max(D, F)) | cos (T, hd/2)
 *            | sin (T, hd/2)
 *
 * r1, r2 are the RMSNorms' outputs (weight applied), rstd their
 * 1 / sqrt(mean(x^2) + eps); q and k are after RoPE; att the attention
 * probabilities (masked entries 0); ctx the attention's output (o_proj's
 * input); h the first residual sum; act = silu(gate) * up. dsaved holds the
 * output gradient of every linear (dq, dk, dv before RoPE, dh o_proj's,
 * dout down_proj's) and of each RMSNorm (dr1, dr2). scratch's qkv is the
 * attention's (N, 3D) input with the kv heads repeated to H (rebuilt from
 * saved by the input half), dqkv its gradient, tmp the temporaries, cos
 * and sin RoPE's table. */
typedef struct KLlamaSaved {
    int64_t r1, rstd1, q, k, v, att, ctx, h, r2, rstd2, gate, up, act, end;
} KLlamaSaved;

typedef struct KLlamaDsaved {
    int64_t dq, dk, dv, dh, dgate, dup, dout, dr1, dr2, end;
} KLlamaDsaved;

typedef struct KLlamaScratch {
    int64_t qkv, dqkv, tmp, cos, sin, end;
} KLlamaScratch;

static inline int64_t k_llama_kv_width(const KLlama *g)
{
    return g->d / g->heads * k_llama_kl(g);
}

static inline KLlamaSaved k_llama_saved_layout(const KLlama *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = k_llama_fl(g), dq = k_llama_qw(g);
    KLlamaSaved s;
    s.r1 = 0;
    s.rstd1 = s.r1 + n * d;
    s.q = s.rstd1 + n;
    s.k = s.q + n * dq;
    s.v = s.k + n * dk;
    s.att = s.v + n * dk;
    s.ctx = s.att + B * k_llama_hl(g) * g->t * g->t;
    s.h = s.ctx + n * dq;
    s.r2 = s.h + n * d;
    s.rstd2 = s.r2 + n * d;
    s.gate = s.rstd2 + n;
    s.up = s.gate + n * f;
    s.act = s.up + n * f;
    s.end = s.act + n * f;
    return s;
}

static inline KLlamaDsaved k_llama_dsaved_layout(const KLlama *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, dk = k_llama_kv_width(g), f = k_llama_fl(g);
    KLlamaDsaved s;
    s.dq = 0;
    s.dk = s.dq + n * k_llama_qw(g);
    s.dv = s.dk + n * dk;
    s.dh = s.dv + n * dk;
    s.dgate = s.dh + n * d;
    s.dup = s.dgate + n * f;
    s.dout = s.dup + n * f;
    s.dr1 = s.dout + n * d;
    s.dr2 = s.dr1 + n * d;
    s.end = s.dr2 + n * d;
    return s;
}

static inline KLlamaScratch k_llama_scratch_layout(const KLlama *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, f = k_llama_fl(g), half = g->t * (g->d / g->heads / 2), dq = k_llama_qw(g);
    KLlamaScratch s;
    s.qkv = 0;
    s.dqkv = s.qkv + n * 3 * dq;
    s.tmp = s.dqkv + n * 3 * dq;
    s.cos = s.tmp + n * (f > d ? f : d);
    s.sin = s.cos + half;
    s.end = s.sin + half;
    return s;
}

#endif
