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

#endif
