/* kernels/k_block.h: the transformer_block layer (pre-LayerNorm, GPT-2
 * style) as one composite of the k_cpu.h kernels:
 *
 *     h   = x + proj(attention(qkv(ln1(x)), mask, causal))
 *     out = h + mlp.proj(gelu(mlp.fc(ln2(h))))
 *
 * with biases on every linear, tanh GELU, heads = H, width D, hidden F.
 * Shapes per sample: x, h, out (T, D); qkv (T, 3D); fc (T, F).
 *
 * Parameters in PcLayer.param order (compiler/model.c): ln1.weight (D),
 * ln1.bias (D), attn.qkv.weight (3D, D), attn.qkv.bias (3D),
 * attn.proj.weight (D, D), attn.proj.bias (D), ln2.weight (D), ln2.bias (D),
 * mlp.fc.weight (F, D), mlp.fc.bias (F), mlp.proj.weight (D, F),
 * mlp.proj.bias (D). The same conventions as k_cpu.h: the input-gradient
 * half overwrites, the weight half adds; split and unsplit backwards give
 * the same bits. */
#ifndef PIPE_K_BLOCK_H
#define PIPE_K_BLOCK_H

#include <stdint.h>

typedef struct KBlock {
    int64_t t, d, heads, f;
    int causal;
    float eps;       /* layernorm eps (1e-5) */
    float dropout;   /* must be 0 for now (the runtime refuses others) */
} KBlock;

/* Floats the forward keeps per sample for the backward (everything between
 * the block's input and its output). */
int64_t k_block_saved_floats(const KBlock *g);
/* Floats the input-gradient half leaves per sample for the weight half
 * (the output gradients of the block's linears and layernorms). */
int64_t k_block_dsaved_floats(const KBlock *g);
/* Scratch floats for B samples (forward and both backward halves). */
int64_t k_block_scratch_floats(const KBlock *g, int64_t B);

/* in, out (B, T, D); mask (B, T) or NULL (1 = real token, 0 = padding);
 * p[12] the parameters; saved (B * saved_floats). */
void k_block_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[12], int64_t B,
                     const KBlock *g, float *scratch);
/* din (B, T, D) overwritten; dsaved (B * dsaved_floats) written for the
 * weight half. */
void k_block_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[12], int64_t B, const KBlock *g, float *scratch);
/* grads[12] += the parameter gradients, from what the input half left. */
void k_block_backward_weight(float *const grads[12], const float *dsaved, const float *in, const float *saved, int64_t B,
                             const KBlock *g, float *scratch);

/* Offsets (in floats, for B samples) of the sections of `saved` and
 * `dsaved` (their order is described in kernels/cpu/k_block.c); the CPU and
 * the CUDA kernels share them. */
typedef struct KBlockSaved {
    int64_t ln1, mean1, rstd1, qkv, att, ctx, h, ln2, mean2, rstd2, fc, act, end;
} KBlockSaved;

typedef struct KBlockDsaved {
    int64_t dqkv, dh, dfc, dout, dln1, dln2, end;
} KBlockDsaved;

static inline KBlockSaved k_block_saved_layout(const KBlock *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, f = g->f;
    KBlockSaved s;
    s.ln1 = 0;
    s.mean1 = s.ln1 + n * d;
    s.rstd1 = s.mean1 + n;
    s.qkv = s.rstd1 + n;
    s.att = s.qkv + n * 3 * d;
    s.ctx = s.att + B * g->heads * g->t * g->t;
    s.h = s.ctx + n * d;
    s.ln2 = s.h + n * d;
    s.mean2 = s.ln2 + n * d;
    s.rstd2 = s.mean2 + n;
    s.fc = s.rstd2 + n;
    s.act = s.fc + n * f;
    s.end = s.act + n * f;
    return s;
}

static inline KBlockDsaved k_block_dsaved_layout(const KBlock *g, int64_t B)
{
    int64_t n = B * g->t, d = g->d, f = g->f;
    KBlockDsaved s;
    s.dqkv = 0;
    s.dh = s.dqkv + n * 3 * d;
    s.dfc = s.dh + n * d;
    s.dout = s.dfc + n * f;
    s.dln1 = s.dout + n * d;
    s.dln2 = s.dln1 + n * d;
    s.end = s.dln2 + n * d;
    return s;
}

#endif
