/* kernels/k_block.h: the transformer_block layer (pre-LayerNorm, GPT-2
 * style) as one composite of the k_cpu.h kernels:
 *
 *     h   = x + drop2(proj(drop1(attention(qkv(ln1(x)), mask, causal))))
 *     out = h + drop3(mlp.proj(gelu(mlp.fc(ln2(h)))))
 *
 * with biases on every linear, tanh GELU, heads = H, width D, hidden F.
 * Shapes per sample: x, h, out (T, D); qkv (T, 3D); fc (T, F) (with
 * tensor parallelism, below: qkv (T, 3D/tp), fc (T, F/tp) on each rank).
 *
 * Dropout, as GPT-2 / nanoGPT: drop1 on the attention probabilities after
 * the softmax (attn_dropout), drop2 on attn.proj's output before its
 * residual add, drop3 on mlp.proj's output before its residual add
 * (resid_dropout). Inverted dropout: an element is zeroed with probability
 * p = dropout, a kept one multiplied by 1 / (1 - p) (k_dropout_forward's
 * float arithmetic), only while training; with training = 0 or p = 0 the
 * block is exactly the one without dropout. The masks are Philox streams
 * (kernels/cpu/k_random.c, k_dropout_mask_at) keyed by (seed, step, global
 * sample index, k_block_drop_stream(layer, site), element index): a pure
 * function of those, whatever the stages, schedule, micro-batch grouping or
 * backend (KBlockKeys below; the recipe is next to k_dropout_mask).
 * Masks are recomputed, not kept: the forward draws them, the input half
 * of the backward draws all three again from the same keys (the same
 * numbers), and the weight half needs none (what it reads, dsaved and
 * saved, already holds the dropped values), so split and unsplit backwards
 * run the same calls, however far apart. The cost is drawing each mask
 * twice and more scratch (k_block_scratch_floats, when dropout > 0);
 * saved and dsaved keep their sizes (keeping the dropped probabilities
 * would add B H T^2 floats to saved).
 *
 * Parameters in PlanLayer.param order (compiler/pc_model.c): ln1.weight (D),
 * ln1.bias (D), attn.qkv.weight (3D, D), attn.qkv.bias (3D),
 * attn.proj.weight (D, D), attn.proj.bias (D), ln2.weight (D), ln2.bias (D),
 * mlp.fc.weight (F, D), mlp.fc.bias (F), mlp.proj.weight (D, F),
 * mlp.proj.bias (D). The same conventions as k_cpu.h: the input-gradient
 * half overwrites, the weight half adds; split and unsplit backwards give
 * the same bits. */
#ifndef PIPE_K_BLOCK_H
#define PIPE_K_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "k_cpu.h" /* KPrec */

typedef struct KBlock {
    int64_t t, d, heads, f;
    int causal;
    float eps;       /* layernorm eps (1e-5) */
    float dropout;   /* p of the three dropout sites, in [0, 1) */
    /* Tensor parallelism, Megatron's split (0 or 1: none; see "Tensor
     * parallel" below): this call is rank tp_rank of tp, and tp_sum adds
     * n floats over the tp ranks in place, leaving the same bits on each. */
    int64_t tp, tp_rank;
    void (*tp_sum)(void *ctx, float *x, int64_t n);
    void *tp_ctx;
    KPrec prec; /* of the four linears' products (0: fp32); attention's stay fp32 */
    /* The four linears' weights packed (k_block_pack), or NULL: their
     * products then run from the packed copies (k_linear_forward_packed,
     * k_linear_backward_input_packed) instead of OpenBLAS's. Only where
     * k_block_pack_floats is not 0 (fp32, tp 1, small enough). */
    const float *pack;
} KBlock;

/* Tensor parallel. With tp > 1 each of the tp ranks holds heads / tp heads
 * and F / tp of the MLP, and the arrays of the call are its own (r = tp_rank):
 *
 *   attn.qkv.weight (3 D/tp, D), .bias (3 D/tp): rows [r D/tp, (r+1) D/tp) of
 *       each of the q, k and v sections of the whole (q rows, then k, then
 *       v: so the local qkv is laid out as the whole's, D/tp wide)
 *   attn.proj.weight (D, D/tp): columns [r D/tp, (r+1) D/tp) (row-parallel)
 *   mlp.fc.weight (F/tp, D), .bias (F/tp): rows [r F/tp, (r+1) F/tp)
 *   mlp.proj.weight (D, F/tp): columns [r F/tp, (r+1) F/tp) (row-parallel)
 *   ln1, ln2, attn.proj.bias, mlp.proj.bias: whole, on every rank
 *
 * The block's input and output, and the gradients of both, are whole on
 * every rank. The forward sums the two row-parallel products over the
 * ranks (tp_sum) before their bias; the input half sums the two
 * column-parallel input gradients (of ln2's and ln1's outputs). So the
 * replicated parameters see the same numbers on every rank, their
 * gradients come out whole and equal everywhere (no sum over ranks), and
 * the split ones' gradients are each rank's own slice. Dropout masks are
 * drawn by global position (drop1 by global head), so a split block drops
 * the same elements as the whole one. Sums reordered by the split (a dot
 * product over D or F becomes tp partial ones added by tp_sum) are the
 * only difference from tp = 1. */
static inline int64_t k_block_tp(const KBlock *g)
{
    return g->tp > 1 ? g->tp : 1;
}

/* this rank's share: attention width (heads / tp heads of D / heads each), heads, MLP width */
static inline int64_t k_block_dl(const KBlock *g)
{
    return g->d / k_block_tp(g);
}

static inline int64_t k_block_hl(const KBlock *g)
{
    return g->heads / k_block_tp(g);
}

static inline int64_t k_block_fl(const KBlock *g)
{
    return g->f / k_block_tp(g);
}

/* Linear i of the block (0 attn.qkv, 1 attn.proj, 2 mlp.fc, 3 mlp.proj):
 * its weight's index in the parameters, and its features in and out. */
static inline int k_block_linear(const KBlock *g, int i, int64_t *in, int64_t *out)
{
    int64_t d = g->d, dl = k_block_dl(g), fl = k_block_fl(g);
    static const int param[4] = {2, 4, 8, 10};
    *in = i == 0 ? d : i == 1 ? dl : i == 2 ? d : fl;
    *out = i == 0 ? 3 * dl : i == 1 ? d : i == 2 ? fl : d;
    return param[i];
}

/* Dropout's mask keys for one call of k_block_forward or
 * k_block_backward_input (the geometry above is fixed for a run; these
 * change with every micro-batch). NULL is the same as training = 0. */
typedef struct KBlockKeys {
    int training;     /* 0: evaluation, dropout is the identity */
    uint64_t seed;    /* the run's seed */
    uint64_t step;    /* the training step */
    uint64_t sample0; /* global index of sample 0 of the B (the others follow) */
    uint32_t layer;   /* the layer's index in the model (< 2^24) */
} KBlockKeys;

/* The three dropout sites and the Philox layer word of each (the recipe is
 * in kernels/cpu/k_random.c): the site in the word's top byte, which a
 * layer index never reaches, so no two sites or layers share a stream. */
enum { K_BLOCK_DROP_ATT = 1, K_BLOCK_DROP_ATTN_PROJ = 2, K_BLOCK_DROP_MLP_PROJ = 3 };

static inline uint32_t k_block_drop_stream(uint32_t layer, int site)
{
    return layer | (uint32_t)site << 24;
}

/* 1 when a call with these keys drops (training and p > 0) */
static inline int k_block_drops(const KBlock *g, const KBlockKeys *keys)
{
    return keys && keys->training && g->dropout > 0.0f;
}

/* Floats the forward keeps per sample for the backward (everything between
 * the block's input and its output). */
int64_t k_block_saved_floats(const KBlock *g);
/* Floats the input-gradient half leaves per sample for the weight half
 * (the output gradients of the block's linears and layernorms). */
int64_t k_block_dsaved_floats(const KBlock *g);
/* Scratch floats for B samples (forward and both backward halves); more
 * when dropout > 0 (whether or not a call trains). */
int64_t k_block_scratch_floats(const KBlock *g, int64_t B);
/* Floats of the four linears' packed weights for B samples a call (both
 * copies of each, k_linear_pack, one linear after another), or 0 where the
 * packed products are not the faster (bench/cpu_packed.c, docs/design-
 * notes.md): they are used for fp32, tp 1, at most 512 rows a call, D at
 * most 512 and F at most 1024. BLAS-free (k_sizes.c), so that the memory
 * plan predicts them. */
int64_t k_block_pack_floats(const KBlock *g, int64_t B);
/* Packs copy `which` (0: the forwards', 1: the input gradients') of the
 * four weights of p into pack (k_block_pack_floats floats). */
void k_block_pack(float *pack, const KBlock *g, const float *const p[12], int which);

/* in, out (B, T, D); mask (B, T) or NULL (1 = real token, 0 = padding);
 * p[12] the parameters; saved (B * saved_floats); keys as above. */
void k_block_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[12], int64_t B,
                     const KBlock *g, const KBlockKeys *keys, float *scratch);
/* din (B, T, D) overwritten; dsaved (B * dsaved_floats) written for the
 * weight half. keys: the forward's (the same masks, drawn again). */
void k_block_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[12], int64_t B, const KBlock *g,
                            const KBlockKeys *keys, float *scratch);
/* grads[12] += the parameter gradients, from what the input half left
 * (no keys: nothing here is random). */
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
    int64_t n = B * g->t, d = g->d, f = k_block_fl(g), dl = k_block_dl(g);
    KBlockSaved s;
    s.ln1 = 0;
    s.mean1 = s.ln1 + n * d;
    s.rstd1 = s.mean1 + n;
    s.qkv = s.rstd1 + n;
    s.att = s.qkv + n * 3 * dl;
    s.ctx = s.att + B * k_block_hl(g) * g->t * g->t;
    s.h = s.ctx + n * dl;
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
    int64_t n = B * g->t, d = g->d, f = k_block_fl(g);
    KBlockDsaved s;
    s.dqkv = 0;
    s.dh = s.dqkv + n * 3 * k_block_dl(g);
    s.dfc = s.dh + n * d;
    s.dout = s.dfc + n * f;
    s.dln1 = s.dout + n * d;
    s.dln2 = s.dln1 + n * d;
    s.end = s.dln2 + n * d;
    return s;
}

/* The dropout sections of scratch (after the (N, max(D, F)) temporaries):
 * where k_block.c keeps them, and (scratch NULL) how many floats. */
typedef struct KBlockDropScratch {
    float *dres, *pd, *dpd;
    uint8_t *bits;
    int64_t end; /* floats, from scratch */
} KBlockDropScratch;

static inline KBlockDropScratch k_block_drop_scratch(const KBlock *g, int64_t B, float *scratch)
{
    int64_t n = B * g->t, tt = g->t * g->t, td = g->t * g->d, fl = k_block_fl(g);
    KBlockDropScratch s;
    int64_t dres = n * (fl > g->d ? fl : g->d), pd = dres + n * g->d, dpd = pd + tt, bits = dpd + tt;
    s.end = bits + ((tt > td ? tt : td) + 3) / 4;
    s.dres = scratch ? scratch + dres : NULL;
    s.pd = scratch ? scratch + pd : NULL;
    s.dpd = scratch ? scratch + dpd : NULL;
    s.bits = scratch ? (uint8_t *)(scratch + bits) : NULL;
    return s;
}

#endif
