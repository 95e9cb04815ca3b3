/* runtime/rt_cpu.c: the CPU backend's layer table. One row per layer of
 * plan/layers.def, each a forward, a backward input and a backward weight
 * over one micro-batch (RtLayerIO: the arrays rt_layers.c found in the
 * slot), each one call into kernels/ (k_cpu.h, k_block.h, k_llama.h). The table is
 * built from layers.def itself, so a layer added there without its row
 * here (CPU_<ID> below) does not compile. kernels/cuda's twin is
 * runtime/rt_cuda.c's table.
 *
 * Conventions, as the kernels': a forward overwrites its output, a
 * backward input overwrites the input gradient, a backward weight adds
 * into the weight gradients (micro-batch order is the interpreter's). */
#include <string.h>

#include "k_block.h"
#include "k_cpu.h"
#include "k_llama.h"
#include "rt.h"
#include "xport.h"

#define IO RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io

static int64_t n_in(const RtCtx *rt, const RtLayerRt *lr)
{
    return rt->B * lr->in_elems;
}

/* rows and features of a layer over the last dimension (linear, layernorm) */
static int64_t features(const PlanLayer *L)
{
    return L->in.dim[L->in.ndim - 1];
}

/* layers without weights: nothing to add */
static void no_weights(IO)
{
    (void)rt, (void)lr, (void)io;
}

/* the CPU kernels' scratch is the plan's (plan_memory.c): nothing to prepare */
static size_t ready(RtCtx *rt, RtLayerRt *lr)
{
    (void)rt, (void)lr;
    return 0;
}

/* ---- linear, conv2d, embedding, layernorm: the layers with weights ---------- */

/* A linear with split = column or row (tensor_parallel = T > 1; plan_model.h).
 * column: this rank holds rows [r N/T, (r+1) N/T) of W (N x F) and of b, and
 * computes those output features; an all-gather over the stage's tp ranks
 * puts the whole output on every rank (Megatron's ColumnParallelLinear with
 * gather_output). Its input gradient is the sum over the ranks of their
 * slices' products, its weight gradient its slice's.
 * row: this rank holds columns [r F/T, (r+1) F/T) of W and multiplies its
 * slice of the (whole) input; a sum over the ranks makes the output, then b
 * (whole on every rank) is added (RowParallelLinear on an input that is not
 * yet cut). Its slice of the input gradient is gathered.
 * So every activation and gradient between layers stays whole on every
 * rank; the kernel scratch (plan_memory.c) holds a rank's slice or the
 * gathered pieces, piece t at t x rows x width. */

/* dst (rows x w) = columns [c0, c0 + w) of a (rows x cols) */
static void take_cols(float *dst, const float *a, int64_t rows, int64_t cols, int64_t c0, int64_t w)
{
    for (int64_t i = 0; i < rows; i++)
        memcpy(dst + i * w, a + i * cols + c0, (size_t)w * sizeof(float));
}

/* The pieces in the scratch, this rank's already in its place, gathered
 * over the tp ranks and laid side by side into dst (rows x T w). */
static void gather_cols(RtCtx *rt, float *dst, int64_t rows, int64_t w, int64_t T)
{
    rt->xp->allgather_f32(rt, rt->scratch, rows * w, XPORT_TP);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < rows; i++)
            memcpy(dst + i * T * w + t * w, rt->scratch + (t * rows + i) * w, (size_t)w * sizeof(float));
}

/* The packed weights of a linear (or of a transformer block's four) for
 * the forward (which 0) or the input gradient (1), packed again once a
 * program run. The layer is const to its kernels; its pack is a cache of
 * its weights. */
static const float *packed(const RtCtx *rt, const RtLayerRt *lr, int which)
{
    RtLayerRt *cache = (RtLayerRt *)lr;
    if (cache->wpack_run[which] != rt->run) {
        if (lr->L->kind == PLAN_L_TRANSFORMER_BLOCK) {
            KBlock g = rt_block_geom((RtCtx *)rt, lr->L);
            k_block_pack(cache->wpack, &g, (const float *const *)lr->w2, which);
        } else {
            k_linear_pack(cache->wpack, lr->w, features(lr->L), lr->L->nout, which);
        }
        cache->wpack_run[which] = rt->run;
    }
    return lr->wpack;
}

/* Every packed copy of the stage, packed now: at the start of a program
 * run, before its first instruction. A stage after the first then packs
 * while it waits for its first input (the warm-up bubble) instead of
 * after it came; the first stage packs at the same point of its critical
 * path as in its first product. The evaluation program packs the
 * forward's copies only. The copies are the same bits either way. */
void rt_cpu_pack_weights(RtCtx *rt, int eval)
{
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int i = 0; i <= ch->last - ch->first; i++)
            if (ch->lay[i].wpack)
                for (int which = 0; which <= !eval; which++)
                    packed(rt, &ch->lay[i], which);
    }
}

static void linear_forward(IO)
{
    const PlanLayer *L = lr->L;
    int64_t fin = features(L), rows = n_in(rt, lr) / fin, T = L->tp;
    if (lr->wpack) {
        k_linear_forward_packed(io->out, io->in, packed(rt, lr, 0), lr->b, rows, fin, L->nout);
    } else if (T <= 1) {
        k_linear_forward(io->out, io->in, lr->w, lr->b, rows, fin, L->nout, rt_kprec(rt), rt->scratch);
    } else if (L->split == PLAN_LINEAR_COLUMN) {
        int64_t w = L->nout / T;
        k_linear_forward(rt->scratch + rt->tpi * rows * w, io->in, lr->w, lr->b, rows, fin, w, rt_kprec(rt), NULL);
        gather_cols(rt, io->out, rows, w, T);
    } else {
        int64_t w = fin / T;
        take_cols(rt->scratch, io->in, rows, fin, rt->tpi * w, w);
        k_linear_forward(io->out, rt->scratch, lr->w, NULL, rows, w, L->nout, rt_kprec(rt), NULL);
        rt->xp->allreduce_f32(rt, io->out, rows * L->nout, XPORT_TP);
        for (int64_t i = 0; lr->b && i < rows; i++)
            for (int64_t j = 0; j < L->nout; j++)
                io->out[i * L->nout + j] += lr->b[j];
    }
}

static void linear_backward_input(IO)
{
    const PlanLayer *L = lr->L;
    int64_t fin = features(L), rows = n_in(rt, lr) / fin, T = L->tp;
    if (lr->wpack) {
        k_linear_backward_input_packed(io->din, io->dout, packed(rt, lr, 1), rows, fin, L->nout);
    } else if (T <= 1) {
        k_linear_backward_input(io->din, io->dout, lr->w, rows, fin, L->nout, rt_kprec(rt));
    } else if (L->split == PLAN_LINEAR_COLUMN) {
        int64_t w = L->nout / T;
        take_cols(rt->scratch, io->dout, rows, L->nout, rt->tpi * w, w);
        k_linear_backward_input(io->din, rt->scratch, lr->w, rows, fin, w, rt_kprec(rt));
        rt->xp->allreduce_f32(rt, io->din, rows * fin, XPORT_TP);
    } else {
        int64_t w = fin / T;
        k_linear_backward_input(rt->scratch + rt->tpi * rows * w, io->dout, lr->w, rows, w, L->nout, rt_kprec(rt));
        gather_cols(rt, io->din, rows, w, T);
    }
}

static void linear_backward_weight(IO)
{
    const PlanLayer *L = lr->L;
    int64_t fin = features(L), rows = n_in(rt, lr) / fin, T = L->tp;
    if (T <= 1) {
        k_linear_backward_weight(lr->gw, lr->gb, io->dout, io->in, rows, fin, L->nout, rt_kprec(rt), rt->scratch);
    } else if (L->split == PLAN_LINEAR_COLUMN) {
        int64_t w = L->nout / T;
        take_cols(rt->scratch, io->dout, rows, L->nout, rt->tpi * w, w);
        k_linear_backward_weight(lr->gw, lr->gb, rt->scratch, io->in, rows, fin, w, rt_kprec(rt), NULL);
    } else {
        int64_t w = fin / T;
        take_cols(rt->scratch, io->in, rows, fin, rt->tpi * w, w);
        k_linear_backward_weight(lr->gw, lr->gb, io->dout, rt->scratch, rows, w, L->nout, rt_kprec(rt), NULL);
    }
}

static void conv2d_forward(IO)
{
    KConv g = rt_conv_geom(rt, lr->L);
    k_conv2d_forward(io->out, io->in, lr->w, lr->b, rt->B, &g, rt->scratch);
}

static void conv2d_backward_input(IO)
{
    KConv g = rt_conv_geom(rt, lr->L);
    k_conv2d_backward_input(io->din, io->dout, lr->w, rt->B, &g, rt->scratch);
}

static void conv2d_backward_weight(IO)
{
    KConv g = rt_conv_geom(rt, lr->L);
    k_conv2d_backward_weight(lr->gw, lr->gb, io->dout, io->in, rt->B, &g, rt->scratch);
}

/* split = vocab (tensor_parallel): this rank's rows of the token table,
 * zero rows for the other tokens, summed over the tp ranks, then the
 * positions: the same bits as the whole table */
static void embedding_forward(IO)
{
    const PlanLayer *L = lr->L;
    const int32_t *tok = (const int32_t *)io->in;
    int64_t t = L->in.dim[0], d = L->dim;
    if (L->tp <= 1) {
        k_embedding_forward(io->out, tok, lr->w, lr->b, rt->B, t, d);
        return;
    }
    int64_t nv = L->param[0].dim[0] / L->tp;
    k_embedding_forward_vocab(io->out, tok, lr->w, rt->tpi * nv, nv, rt->B, t, d);
    rt->xp->allreduce_f32(rt, io->out, rt->B * t * d, XPORT_TP);
    if (lr->b)
        k_embedding_add_positions(io->out, lr->b, rt->B, t, d);
}

/* its input is token ids, always the model's first input: no gradient */
static void embedding_backward_input(IO)
{
    RT_CHECK(rt, 0, "layer %d (embedding): token ids have no gradient", lr->L->index);
    (void)io;
}

static void embedding_backward_weight(IO)
{
    const PlanLayer *L = lr->L;
    const int32_t *tok = (const int32_t *)io->in;
    int64_t t = L->in.dim[0], d = L->dim;
    if (L->tp <= 1) {
        k_embedding_backward_weight(lr->gw, lr->gb, io->dout, tok, rt->B, t, d);
        return;
    }
    int64_t nv = L->param[0].dim[0] / L->tp;
    k_embedding_backward_weight_vocab(lr->gw, io->dout, tok, rt->tpi * nv, nv, rt->B, t, d);
    k_embedding_backward_weight(NULL, lr->gb, io->dout, tok, rt->B, t, d); /* the positions, whole */
}

/* mean (rows) then rstd (rows) in the saved state */
static void layernorm_forward(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_layernorm_forward(io->out, io->save, io->save + rows, io->in, lr->w, lr->b, rows, d, (float)lr->L->eps);
}

static void layernorm_backward_input(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_layernorm_backward_input(io->din, io->dout, io->in, lr->w, io->save, io->save + rows, rows, d);
}

static void layernorm_backward_weight(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_layernorm_backward_weight(lr->gw, lr->gb, io->dout, io->in, io->save, io->save + rows, rows, d);
}

/* rstd (rows) in the saved state */
static void rmsnorm_forward(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_rmsnorm_forward(io->out, io->save, io->in, lr->w, rows, d, (float)lr->L->eps);
}

static void rmsnorm_backward_input(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_rmsnorm_backward_input(io->din, io->dout, io->in, lr->w, io->save, rows, d);
}

static void rmsnorm_backward_weight(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    k_rmsnorm_backward_weight(lr->gw, io->dout, io->in, io->save, rows, d);
}

/* ---- batchnorm2d: mean (C) then rstd (C) in the saved state; its buffers at
 * lr->bufs: num_batches_tracked (int64), running_mean (C), running_var (C) ---- */

/* the running statistics of a batchnorm2d (rt.h, RtBuf) */
#define BN_NBT(lr) ((int64_t *)(lr)->bufs)
#define BN_MEAN(lr) ((float *)((unsigned char *)(lr)->bufs + 8))
#define BN_VAR(lr) (BN_MEAN(lr) + (lr)->L->in.dim[0])

static void batchnorm2d_forward(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    if (rt->evaluating) {
        k_batchnorm2d_eval(io->out, io->in, lr->w, lr->b, BN_MEAN(lr), BN_VAR(lr), rt->B, C, HW, (float)L->eps);
        return;
    }
    RT_CHECK(rt, rt->B * HW > 1, "layer %d (batchnorm2d): a micro-batch of %lld values per channel; training needs more "
             "than 1 (as nn.BatchNorm2d)", L->index, (long long)(rt->B * HW));
    /* a recompute (activation checkpointing) gives the same statistics and
     * leaves the running ones alone */
    int update = !io->recompute;
    k_batchnorm2d_forward(io->out, io->save, io->save + C, io->in, lr->w, lr->b, rt->B, C, HW, (float)L->eps,
                          update ? BN_MEAN(lr) : NULL, update ? BN_VAR(lr) : NULL, update ? BN_NBT(lr) : NULL,
                          L->momentum);
}

static void batchnorm2d_backward_input(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    k_batchnorm2d_backward_input(io->din, io->dout, io->in, lr->w, io->save, io->save + C, rt->B, C, HW);
}

static void batchnorm2d_backward_weight(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    k_batchnorm2d_backward_weight(lr->gw, lr->gb, io->dout, io->in, io->save, io->save + C, rt->B, C, HW);
}

/* ---- pools ---------------------------------------------------------------------- */

static void maxpool2d_forward(IO)
{
    KPool g = rt_pool_geom(lr->L);
    k_maxpool2d_forward(io->out, (int32_t *)io->save, io->in, rt->B, &g);
}

static void maxpool2d_backward_input(IO)
{
    KPool g = rt_pool_geom(lr->L);
    k_maxpool2d_backward(io->din, io->dout, (const int32_t *)io->save, rt->B, &g);
}

static void avgpool2d_forward(IO)
{
    KPool g = rt_pool_geom(lr->L);
    k_avgpool2d_forward(io->out, io->in, rt->B, &g);
}

static void avgpool2d_backward_input(IO)
{
    KPool g = rt_pool_geom(lr->L);
    k_avgpool2d_backward(io->din, io->dout, rt->B, &g);
}

static void adaptive_avgpool2d_forward(IO)
{
    const PlanLayer *L = lr->L;
    k_adaptive_avgpool2d_forward(io->out, io->in, rt->B, L->in.dim[0], L->in.dim[1], L->in.dim[2], L->oh, L->ow);
}

static void adaptive_avgpool2d_backward_input(IO)
{
    const PlanLayer *L = lr->L;
    k_adaptive_avgpool2d_backward(io->din, io->dout, rt->B, L->in.dim[0], L->in.dim[1], L->in.dim[2], L->oh, L->ow);
}

/* ---- pointwise -------------------------------------------------------------------- */

/* NAME_forward(out, in, n) and NAME_backward_input(din, dout, x, n), x being
 * the input (relu, gelu) or the output (tanh, sigmoid), as the kernel asks */
#define POINTWISE(name, x)                                                       \
    static void name##_forward(IO)                                               \
    {                                                                            \
        k_##name##_forward(io->out, io->in, n_in(rt, lr));                       \
    }                                                                            \
    static void name##_backward_input(IO)                                        \
    {                                                                            \
        k_##name##_backward(io->din, io->dout, io->x, n_in(rt, lr));             \
    }
POINTWISE(relu, in)
POINTWISE(gelu, in)
POINTWISE(tanh, out)
POINTWISE(sigmoid, out)
#undef POINTWISE

static void flatten_forward(IO)
{
    memmove(io->out, io->in, (size_t)n_in(rt, lr) * sizeof(float));
}

static void flatten_backward_input(IO)
{
    memmove(io->din, io->dout, (size_t)n_in(rt, lr) * sizeof(float));
}

/* reshape: the same floats in the same order (flatten's copies) */
#define reshape_forward flatten_forward
#define reshape_backward_input flatten_backward_input

/* transpose: its backward is the transpose back (the two sizes exchanged) */
static void transpose_forward(IO)
{
    int64_t g[5];
    if (rt_transpose_geom(lr->L, rt->B, g))
        k_transpose(io->out, io->in, g[0], g[1], g[2], g[3], g[4]);
    else
        flatten_forward(rt, lr, io);
}

static void transpose_backward_input(IO)
{
    int64_t g[5];
    if (rt_transpose_geom(lr->L, rt->B, g))
        k_transpose(io->din, io->dout, g[0], g[3], g[2], g[1], g[4]);
    else
        flatten_backward_input(rt, lr, io);
}

/* The mask of micro-batch mb, as bytes in the scratch: a Philox stream
 * keyed by (seed, step, global sample, layer), so the same on every stage
 * count, schedule and device (k_random.c). */
static const uint8_t *dropout_mask(RtCtx *rt, const RtLayerRt *lr, int64_t mb)
{
    uint8_t *mask = (uint8_t *)rt->scratch; /* sized for it by plan_memory.c */
    for (int64_t b = 0; b < rt->B; b++)
        k_dropout_mask(mask + b * lr->out_elems, lr->out_elems, (float)lr->L->p, rt->c->seed, (uint64_t)rt->step,
                       (uint64_t)(rt_sample_base(rt, mb) + b), plan_layer_key(lr->L));
    return mask;
}

static void dropout_forward(IO)
{
    if (rt->evaluating || lr->L->p == 0)
        flatten_forward(rt, lr, io);
    else
        k_dropout_forward(io->out, io->in, dropout_mask(rt, lr, io->mb), (float)lr->L->p, n_in(rt, lr));
}

static void dropout_backward_input(IO)
{
    if (lr->L->p == 0)
        flatten_backward_input(rt, lr, io);
    else
        k_dropout_backward(io->din, io->dout, dropout_mask(rt, lr, io->mb), (float)lr->L->p, n_in(rt, lr));
}

/* ---- transformer_block -------------------------------------------------------------- */

/* Its inner output gradients (dsaved): the slot's kept area under a split
 * schedule (io->dsaved), else room behind the kernel's scratch, used at
 * once by the weight half (plan_memory.c sizes the scratch for it). */
static float *block_dsaved(RtCtx *rt, const RtLayerIO *io, const KBlock *g)
{
    return io->dsaved ? io->dsaved : rt->scratch + k_block_scratch_floats(g, rt->B);
}

static void transformer_block_forward(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    g.pack = lr->wpack ? packed(rt, lr, 0) : NULL;
    KBlockKeys keys = rt_block_keys(rt, lr->L, io->mb);
    k_block_forward(io->out, io->save, io->in, io->mask, (const float *const *)lr->w2, rt->B, &g, &keys, rt->scratch);
}

static void transformer_block_backward_input(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    g.pack = lr->wpack ? packed(rt, lr, 1) : NULL;
    KBlockKeys keys = rt_block_keys(rt, lr->L, io->mb);
    k_block_backward_input(io->din, block_dsaved(rt, io, &g), io->dout, io->in, io->save, io->mask,
                           (const float *const *)lr->w2, rt->B, &g, &keys, rt->scratch);
}

static void transformer_block_backward_weight(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    k_block_backward_weight(lr->g2, block_dsaved(rt, io, &g), io->in, io->save, rt->B, &g, rt->scratch);
}

/* ---- llama_block ---------------------------------------------------------------------- */

/* its inner output gradients: the slot's kept area, or room behind the
 * kernel's scratch (plan_memory.c sizes the scratch for it), as the
 * transformer block's */
static float *llama_dsaved(RtCtx *rt, const RtLayerIO *io, const KLlama *g)
{
    return io->dsaved ? io->dsaved : rt->scratch + k_llama_scratch_floats(g, rt->B);
}

static void llama_block_forward(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    k_llama_forward(io->out, io->save, io->in, io->mask, (const float *const *)lr->w2, rt->B, &g, rt->scratch);
}

static void llama_block_backward_input(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    k_llama_backward_input(io->din, llama_dsaved(rt, io, &g), io->dout, io->in, io->save, io->mask,
                           (const float *const *)lr->w2, rt->B, &g, rt->scratch);
}

static void llama_block_backward_weight(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    k_llama_backward_weight(lr->g2, llama_dsaved(rt, io, &g), io->in, io->save, rt->B, &g, rt->scratch);
}

/* ---- the table -------------------------------------------------------------------- */

#define CPU_LINEAR {linear_forward, linear_backward_input, linear_backward_weight, ready}
#define CPU_CONV2D {conv2d_forward, conv2d_backward_input, conv2d_backward_weight, ready}
#define CPU_MAXPOOL2D {maxpool2d_forward, maxpool2d_backward_input, no_weights, ready}
#define CPU_AVGPOOL2D {avgpool2d_forward, avgpool2d_backward_input, no_weights, ready}
#define CPU_ADAPTIVE_AVGPOOL2D {adaptive_avgpool2d_forward, adaptive_avgpool2d_backward_input, no_weights, ready}
#define CPU_RELU {relu_forward, relu_backward_input, no_weights, ready}
#define CPU_GELU {gelu_forward, gelu_backward_input, no_weights, ready}
#define CPU_TANH {tanh_forward, tanh_backward_input, no_weights, ready}
#define CPU_SIGMOID {sigmoid_forward, sigmoid_backward_input, no_weights, ready}
#define CPU_FLATTEN {flatten_forward, flatten_backward_input, no_weights, ready}
#define CPU_DROPOUT {dropout_forward, dropout_backward_input, no_weights, ready}
#define CPU_LAYERNORM {layernorm_forward, layernorm_backward_input, layernorm_backward_weight, ready}
#define CPU_EMBEDDING {embedding_forward, embedding_backward_input, embedding_backward_weight, ready}
#define CPU_TRANSFORMER_BLOCK {transformer_block_forward, transformer_block_backward_input, transformer_block_backward_weight, ready}
#define CPU_RMSNORM {rmsnorm_forward, rmsnorm_backward_input, rmsnorm_backward_weight, ready}
#define CPU_LLAMA_BLOCK {llama_block_forward, llama_block_backward_input, llama_block_backward_weight, ready}
#define CPU_BATCHNORM2D {batchnorm2d_forward, batchnorm2d_backward_input, batchnorm2d_backward_weight, ready}
#define CPU_RESHAPE {reshape_forward, reshape_backward_input, no_weights, ready}
#define CPU_TRANSPOSE {transpose_forward, transpose_backward_input, no_weights, ready}
/* its sub-layers through this table (rt_residual.c) */
#define CPU_RESIDUAL {rt_residual_forward, rt_residual_backward_input, rt_residual_backward_weight, rt_residual_prepare}

const RtLayerOps rt_cpu_layers[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) [PLAN_L_##id] = CPU_##id,
#include "layers.def"
#undef PLAN_LAYER
};
