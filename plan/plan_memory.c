/* plan/plan_memory.c: a stage's memory, for the planner and the runtime
 * alike (plan_memory.h). */
#include "plan_memory.h"

#include <stdlib.h>
#include <string.h>

#include "k_block.h"
#include "k_cpu.h"
#include "k_llama.h"
#include "base_alloc.h"

const char *const plan_memory_part_names[6] = {"parameters",  "gradients",           "optimizer_state",
                                             "activations", "recompute_workspace", "transfer_staging"};

void plan_memory_parts(const PlanMemory *mem, int64_t out[6])
{
    out[0] = mem->parameters, out[1] = mem->gradients, out[2] = mem->optimizer_state;
    out[3] = mem->activations, out[4] = mem->recompute_workspace, out[5] = mem->transfer_staging;
}

static int64_t align64(int64_t x)
{
    return (x + 63) & ~(int64_t)63;
}

static KBlock block_geom(const PlanLayer *L)
{
    KBlock g = {.t = L->in.dim[0], .d = L->in.dim[1], .heads = L->heads, .f = L->mlp, .causal = L->causal,
                .eps = (float)L->eps, .dropout = (float)L->p, .tp = L->tp};
    return g;
}

static KLlama llama_geom(const PlanLayer *L)
{
    KLlama g = {.t = L->in.dim[0], .d = L->in.dim[1], .heads = L->heads, .kv_heads = L->kv_heads, .f = L->mlp,
                .causal = L->causal, .eps = (float)L->eps, .theta = (float)L->theta, .tp = L->tp};
    return g;
}

/* What each layer kind keeps for its backward beyond its output, and
 * whether its weight half needs its inner gradients rather than its output
 * gradient (the floats of those per sample, or NULL): one row per
 * plan/layers.def entry (a layer without its row does not compile). */
static int64_t no_state(const PlanLayer *L)
{
    (void)L;
    return 0;
}

static int64_t argmax_state(const PlanLayer *L)
{
    return plan_tensor_elems(&L->out) * 4; /* the input position of each maximum (int32) */
}

static int64_t norm_state(const PlanLayer *L)
{
    return 2 * (plan_tensor_elems(&L->in) / L->in.dim[L->in.ndim - 1]) * 4; /* mean, rstd per row */
}

static int64_t rms_state(const PlanLayer *L)
{
    return (plan_tensor_elems(&L->in) / L->in.dim[L->in.ndim - 1]) * 4; /* rstd per row */
}

static int64_t block_state(const PlanLayer *L)
{
    KBlock g = block_geom(L);
    return k_block_saved_floats(&g) * 4; /* everything between its input and its output */
}

static int64_t block_inner(const PlanLayer *L)
{
    KBlock g = block_geom(L);
    return k_block_dsaved_floats(&g); /* the output gradients of its linears and layernorms */
}

static int64_t llama_state(const PlanLayer *L)
{
    KLlama g = llama_geom(L);
    return k_llama_saved_floats(&g) * 4;
}

static int64_t llama_inner(const PlanLayer *L)
{
    KLlama g = llama_geom(L);
    return k_llama_dsaved_floats(&g); /* the output gradients of its linears and RMSNorms */
}

/* batchnorm2d: the micro-batch's mean and rstd per channel (2 C floats).
 * The saved state is sized per sample, so a slot holds B times this: the
 * statistics are per micro-batch, and the rest is room left unused. */
static int64_t bn_state(const PlanLayer *L)
{
    return 2 * L->in.dim[0] * 4;
}

/* A residual block keeps, per sample, each sub-layer's output and saved
 * state (plan_residual_layout) */
static int64_t residual_state(const PlanLayer *L)
{
    return plan_residual_layout(L, NULL, NULL);
}

/* and, for its weight half, the output gradient of each sub-layer with
 * weights */
static int64_t residual_inner(const PlanLayer *L)
{
    int64_t inner = 0;
    plan_residual_layout(L, NULL, &inner);
    return inner;
}

typedef struct LayerMem {
    int64_t (*state_bytes)(const PlanLayer *L);
    int64_t (*inner_grads)(const PlanLayer *L); /* floats per sample, or NULL: the output gradient */
} LayerMem;

#define MEM_LINEAR {no_state, NULL}
#define MEM_CONV2D {no_state, NULL}
#define MEM_MAXPOOL2D {argmax_state, NULL}
#define MEM_AVGPOOL2D {no_state, NULL}
#define MEM_ADAPTIVE_AVGPOOL2D {no_state, NULL}
#define MEM_RELU {no_state, NULL}
#define MEM_GELU {no_state, NULL}
#define MEM_TANH {no_state, NULL}
#define MEM_SIGMOID {no_state, NULL}
#define MEM_FLATTEN {no_state, NULL}
#define MEM_DROPOUT {no_state, NULL}
#define MEM_LAYERNORM {norm_state, NULL}
#define MEM_EMBEDDING {no_state, NULL}
#define MEM_TRANSFORMER_BLOCK {block_state, block_inner}
#define MEM_RMSNORM {rms_state, NULL}
#define MEM_LLAMA_BLOCK {llama_state, llama_inner}
#define MEM_BATCHNORM2D {bn_state, NULL}
#define MEM_RESHAPE {no_state, NULL}
#define MEM_TRANSPOSE {no_state, NULL}
#define MEM_RESIDUAL {residual_state, residual_inner}

static const LayerMem layer_mem[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) [PLAN_L_##id] = MEM_##id,
#include "layers.def"
#undef PLAN_LAYER
};

int64_t plan_layer_state_bytes(const PlanLayer *L)
{
    return layer_mem[L->kind].state_bytes(L);
}

int plan_layer_keeps_inner_grads(const PlanLayer *L)
{
    /* a residual block without weights has no weight half */
    return layer_mem[L->kind].inner_grads != NULL && L->nparams > 0;
}

int64_t plan_residual_layout(const PlanLayer *R, PlanSubLayout *sub, int64_t *inner_floats)
{
    /* every array starts 64 bytes apart per sample, so 64-byte aligned for
     * any micro-batch (the block's own arrays are) */
    int64_t at = 0, inner = 0;
    for (int j = 0; j < R->nbody + R->nshort; j++) {
        const PlanLayer *S = &R->sub[j];
        PlanSubLayout y;
        y.out_off = at;
        at = align64(at + plan_tensor_elems(&S->out) * 4);
        y.save_off = at;
        at = align64(at + plan_layer_state_bytes(S));
        y.dkeep_off = -1;
        if (S->nparams > 0) {
            y.dkeep_off = inner;
            inner += (plan_tensor_elems(&S->out) + 15) & ~(int64_t)15;
        }
        if (sub)
            sub[j] = y;
    }
    if (inner_floats)
        *inner_floats = inner;
    return at;
}

/* Floats a layer's split backward keeps per sample from I for W: the
 * output gradient, or for a block those of its linears and norms. */
static int64_t kept_dout_elems(const PlanLayer *L)
{
    if (plan_layer_keeps_inner_grads(L))
        return layer_mem[L->kind].inner_grads(L);
    return plan_tensor_elems(&L->out);
}

/* A linear's input features (its input's last dimension: the plan reader
 * checks it has one), and the rows its product has for B samples (the
 * leading dimensions times B) */
static int64_t linear_in(const PlanLayer *L)
{
    return L->in.dim[L->in.ndim - 1];
}

static int64_t linear_rows(const PlanLayer *L, int64_t B)
{
    return B * (plan_tensor_elems(&L->in) / linear_in(L));
}

/* Scratch floats the layer's kernels need for B samples. */
static int64_t scratch_elems(const PlanLayer *L, int64_t B);

/* Scratch floats the layer's kernels need for B samples. */
static int64_t scratch_elems(const PlanLayer *L, int64_t B)
{
    switch (L->kind) {
    case PLAN_L_CONV2D: {
        KConv g = {L->in.dim[0], L->in.dim[1], L->in.dim[2], L->out.dim[0], L->out.dim[1], L->out.dim[2],
                   L->kh,        L->kw,        L->sh,        L->sw,         L->ph,         L->pw,
                   K_FP32 /* the scratch does not depend on it */};
        return k_conv2d_scratch(&g);
    }
    case PLAN_L_LINEAR: {
        /* a split one (tensor_parallel): the gathered pieces of its output
         * (column) or input gradient (row), or its rank's slice of its
         * input or output gradient (runtime/rt_cpu.c); an unsplit one: room
         * for a short product's transposed output (k_linear_forward) or for
         * the weight gradient's packed operands (k_linear_backward_weight),
         * one at a time, whatever the precision */
        int64_t in = plan_tensor_elems(&L->in), out = plan_tensor_elems(&L->out);
        if (L->tp > 1)
            return B * (in > out ? in : out);
        int64_t rows = linear_rows(L, B), fwd = k_linear_scratch(rows, linear_in(L), L->nout),
                wg = k_linear_wgrad_floats(rows, linear_in(L), L->nout);
        return fwd > wg ? fwd : wg;
    }
    case PLAN_L_DROPOUT: return (B * plan_tensor_elems(&L->out) + 3) / 4; /* the mask, as bytes */
    case PLAN_L_TRANSFORMER_BLOCK: {
        /* the kernel's scratch, then room for an unsplit backward's output
         * gradients */
        KBlock g = block_geom(L);
        return k_block_scratch_floats(&g, B) + B * k_block_dsaved_floats(&g);
    }
    case PLAN_L_LLAMA_BLOCK: {
        /* as transformer_block's */
        KLlama g = llama_geom(L);
        return k_llama_scratch_floats(&g, B) + B * k_llama_dsaved_floats(&g);
    }
    case PLAN_L_RESIDUAL: {
        /* its layers' scratch (one at a time), then two ping-pong arrays
         * for the gradients between its layers, then room for an unsplit
         * backward's inner gradients (runtime/rt_residual.c) */
        int64_t inner = 0;
        plan_residual_layout(L, NULL, &inner);
        return plan_residual_scratch_at(L, B) + 2 * B * plan_residual_pingpong(L) + B * inner;
    }
    default: return 0;
    }
}

int64_t plan_residual_pingpong(const PlanLayer *R)
{
    int64_t big = 0;
    for (int j = 0; j < R->nbody + R->nshort; j++) {
        int64_t in = plan_tensor_elems(&R->sub[j].in), out = plan_tensor_elems(&R->sub[j].out);
        big = in > big ? in : big;
        big = out > big ? out : big;
    }
    return (big + 15) & ~(int64_t)15;
}

int64_t plan_residual_scratch_at(const PlanLayer *R, int64_t B)
{
    int64_t most = 0;
    for (int j = 0; j < R->nbody + R->nshort; j++) {
        int64_t e = scratch_elems(&R->sub[j], B);
        most = e > most ? e : most;
    }
    return (most + 15) & ~(int64_t)15; /* 64 bytes */
}

/* Lays out the slot from `off` on: targets, the outputs that stay in the
 * slot, the output tuple, its gradient, the kept output gradients. */
static int64_t lay_slot(const PlanModel *m, PlanChunkLayout *l, int64_t B, int64_t off)
{
    int n = l->last - l->first + 1;
    if (l->is_last) {
        l->tgt_off = off;
        off = align64(off + B * plan_tensor_elems(&m->target[0].t) * 4);
    }
    for (int i = 0; i < n - 1; i++) {
        PlanLayerLayout *y = &l->lay[i];
        if (y->ws_out < 0) {
            y->out_off = off;
            off = align64(off + B * y->out_elems * 4);
        }
        if (y->ws_save < 0) {
            y->save_off = off;
            off = align64(off + y->save_bytes);
        }
    }
    PlanLayerLayout *last = &l->lay[n - 1];
    if (last->ws_save < 0) {
        last->save_off = off;
        off = align64(off + last->save_bytes);
    }
    l->outt_off = off;
    last->out_off = off;
    off = align64(off + l->outt_bytes);
    l->dout_off = off;
    off = align64(off + B * last->out_elems * 4);
    for (int i = 0; i < n; i++)
        if (l->lay[i].dout_off > 0) {
            l->lay[i].dout_off = off;
            off = align64(off + B * kept_dout_elems(&m->layer[l->first + i]) * 4);
        }
    return off;
}

void plan_chunk_layout(const PlanModel *m, const PlanPartition *pt, int64_t B, int part, int split, int ac,
                     PlanChunkLayout *l)
{
    memset(l, 0, sizeof *l);
    l->part = part;
    l->first = pt->part[part].first;
    l->last = pt->part[part].last;
    l->is_first = part == 0;
    l->is_last = part == pt->nparts - 1;
    int n = l->last - l->first + 1;
    /* input tuple: the model's inputs for the first part, else the boundary */
    if (l->is_first)
        for (int i = 0; i < m->ninputs; i++)
            l->in_bytes += B * plan_tensor_elems(&m->input[i].t) * 4;
    else
        l->in_bytes = pt->bnd[part - 1].bytes;
    l->outt_bytes = l->is_last ? B * plan_tensor_elems(&m->layer[l->last].out) * 4 : pt->bnd[part].bytes;
    l->lay = base_calloc(n, sizeof *l->lay);
    for (int i = 0; i < n; i++) {
        const PlanLayer *L = &m->layer[l->first + i];
        PlanLayerLayout *y = &l->lay[i];
        y->in_elems = plan_tensor_elems(&L->in);
        y->out_elems = plan_tensor_elems(&L->out);
        y->save_bytes = B * plan_layer_state_bytes(L);
        y->ws_out = y->ws_save = -1;
        /* split: a placeholder; lay_slot gives the offset */
        y->dout_off = split && (L->nparams > 0 || L->tie >= 0);
        int64_t big = y->in_elems > y->out_elems ? y->in_elems : y->out_elems;
        if (B * big > l->work_elems)
            l->work_elems = B * big;
        int64_t s = scratch_elems(L, B);
        if (s > l->scratch_elems)
            l->scratch_elems = s;
    }
    /* activation checkpointing: segments of ac layers; the slot keeps each
     * segment's last output (the next one's input) and the chunk's output;
     * every other output, and all saved state, goes to a workspace that one
     * segment at a time reuses (forward, and again in the backward) */
    if (ac > 0) {
        for (int s0 = 0; s0 < n; s0 += ac) {
            int64_t w = 0;
            for (int i = s0; i < n && i < s0 + ac; i++) {
                PlanLayerLayout *y = &l->lay[i];
                int last_of_segment = i == n - 1 || (i + 1) % ac == 0;
                if (!last_of_segment) {
                    y->ws_out = w;
                    w = align64(w + B * y->out_elems * 4);
                }
                if (y->save_bytes > 0) {
                    y->ws_save = w;
                    w = align64(w + y->save_bytes);
                }
            }
            if (w > l->ws_bytes)
                l->ws_bytes = w;
        }
    }
    l->in_off = 0;
    l->slot_bytes = lay_slot(m, l, B, align64(l->in_bytes));
    l->gin_elems = B * l->lay[0].in_elems;
}

void plan_chunk_layout_free(PlanChunkLayout *l)
{
    free(l->lay);
    memset(l, 0, sizeof *l);
}

int plan_stage_split(const SchedPlan *train, int stage)
{
    for (int i = 0; i < train->prog[stage].n; i++)
        if (train->prog[stage].ins[i].op == SCHED_BackwardInput)
            return 1;
    return 0;
}

int plan_optim_state_per_param(const PlanConfig *c)
{
    switch (c->optimizer) {
    case PLAN_OPT_SGD: return c->momentum != 0 ? 1 : 0;
    case PLAN_OPT_ADAM:
    case PLAN_OPT_ADAMW: return 2;
    default: return 0;
    }
}

int64_t plan_stage_buffer_bytes(const PlanModel *m, const PlanPartition *pt, int stage)
{
    int64_t n = 0;
    for (int k = 0; k < pt->nparts; k++)
        if (pt->part[k].stage == stage)
            for (int i = pt->part[k].first; i <= pt->part[k].last; i++)
                n += plan_layer_buffer_bytes(&m->layer[i]);
    return n;
}

int64_t plan_layer_pack_floats(const PlanLayer *L, int64_t B, int precision)
{
    if (L->tp > 1 || precision == PLAN_PREC_BF16)
        return 0;
    if (L->kind == PLAN_L_TRANSFORMER_BLOCK) {
        KBlock g = block_geom(L); /* prec 0: fp32 */
        return k_block_pack_floats(&g, B);
    }
    if (L->kind != PLAN_L_LINEAR)
        return 0;
    return k_linear_pack_floats(linear_rows(L, B), linear_in(L), L->nout);
}

int64_t plan_stage_pack_bytes(const PlanModel *m, const PlanPartition *pt, int stage, int64_t B, int precision)
{
    int64_t n = 0;
    for (int k = 0; k < pt->nparts; k++)
        if (pt->part[k].stage == stage)
            for (int i = pt->part[k].first; i <= pt->part[k].last; i++)
                n += plan_layer_pack_floats(&m->layer[i], B, precision);
    return n * 4;
}

int64_t plan_stage_param_elems(const PlanModel *m, const PlanPartition *pt, int stage)
{
    int64_t n = 0;
    for (int k = 0; k < pt->nparts; k++) {
        if (pt->part[k].stage != stage)
            continue;
        for (int i = pt->part[k].first; i <= pt->part[k].last; i++) {
            const PlanLayer *L = &m->layer[i];
            for (int j = 0; j < L->nparams; j++)
                n += plan_param_local(L, j); /* one tensor-parallel rank's */
            if (L->tie >= 0)
                n += plan_param_local(&m->layer[L->tie], 0); /* a vocabulary-split owner's share */
        }
    }
    return n;
}

void plan_stage_memory(const PlanIR *f, int stage, PlanMemory *out)
{
    const SchedPlan *train = &f->sched.train, *eval = &f->sched.eval;
    const PlanPartition *pt = &f->part;
    const PlanConfig *c = &f->cfg;
    memset(out, 0, sizeof *out);
    int64_t np = plan_stage_param_elems(&f->model, pt, stage), work = 0, scratch = 0;
    out->parameters = out->gradients = np * 4;
    /* buffers (batchnorm2d's running statistics) count as parameters: held
     * with them, saved with them, but without gradients or optimizer state */
    out->parameters += plan_stage_buffer_bytes(&f->model, pt, stage);
    out->optimizer_state = (int64_t)plan_optim_state_per_param(c) * np * 4;
    if (c->zero && c->data_parallel > 1) {
        /* ZeRO-1: the state of one shard; parameters and gradients padded
         * to whole shards (the collectives move equal pieces) */
        int64_t shard = plan_zero_shard(np, c->data_parallel);
        out->parameters = out->gradients = shard * c->data_parallel * 4;
        out->optimizer_state = (int64_t)plan_optim_state_per_param(c) * shard * 4;
    }
    out->cpu_packs = plan_stage_pack_bytes(&f->model, pt, stage, c->micro_batch_size, (int)c->precision);
    out->parameters += out->cpu_packs;
    int split = plan_stage_split(train, stage);
    for (int ch = 0; ch < pt->chunks; ch++) {
        int part = sched_part(c->place, pt->stages, stage, ch);
        PlanChunkLayout l;
        plan_chunk_layout(&f->model, pt, c->micro_batch_size, part, split, (int)c->activation_checkpoint, &l);
        int nb = train->nbuf[stage * pt->chunks + ch], ne = eval && eval->nbuf ? eval->nbuf[stage * pt->chunks + ch] : 0;
        out->activations += (int64_t)(nb > ne ? nb : ne) * l.slot_bytes;
        out->recompute_workspace += l.ws_bytes;
        out->transfer_staging += plan_gin_areas(part) * l.gin_elems * 4;
        if (l.work_elems > work)
            work = l.work_elems;
        if (l.scratch_elems > scratch)
            scratch = l.scratch_elems;
        plan_chunk_layout_free(&l);
    }
    out->activations += (2 * work + scratch) * 4;
    out->total = out->parameters + out->gradients + out->optimizer_state + out->activations +
                 out->recompute_workspace + out->transfer_staging;
}

/* More floats than any buffer a layer's kernels size for one sample,
 * whatever its kind: its input, output and parameters, and what the
 * kernels derive from them (a block's attention scores and MLP, a
 * convolution's im2col columns, a residual block's layers). */
static double sample_floats(const PlanLayer *L)
{
    double b = (double)plan_tensor_elems(&L->in) + (double)plan_tensor_elems(&L->out);
    for (int k = 0; k < L->nparams; k++)
        b += (double)L->param[k].count;
    switch (L->kind) {
    case PLAN_L_TRANSFORMER_BLOCK:
    case PLAN_L_LLAMA_BLOCK: {
        double t = (double)L->in.dim[0], d = (double)L->in.dim[1];
        b += t * t * (double)L->heads + 2 * t * (double)L->mlp + 4 * t * d;
        break;
    }
    case PLAN_L_CONV2D:
        b += (double)L->in.dim[0] * (double)L->kh * (double)L->kw * (double)L->out.dim[1] * (double)L->out.dim[2];
        break;
    case PLAN_L_RESIDUAL:
        for (int j = 0; j < L->nbody + L->nshort; j++)
            b += sample_floats(&L->sub[j]);
        break;
    default: break;
    }
    return b;
}

const char *plan_size_misfit(const PlanModel *m, const PlanConfig *c, int *layer)
{
    /* Every section a kernel or a slot lays out is one of a few dozen terms
     * below sample_floats x B: with a layer under 2^44 floats a micro-batch,
     * the model under 2^56 floats for all micro-batches, 2^44 parameters and
     * 2^60 FLOPs and activation bytes, no int64 sum or product pipe forms
     * from them comes near 2^63. */
    double B = (double)(c->micro_batch_size > 0 ? c->micro_batch_size : 1);
    double M = (double)(c->micro_batches > 0 ? c->micro_batches : 1);
    double all = 0, params = 0, flops = 0, act = 0;
    *layer = -1;
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        double f = B * sample_floats(L);
        if (f > 0x1p44) {
            *layer = i;
            return "needs more than 2^44 floats (64 TiB) for one micro-batch";
        }
        all += f;
        params += (double)L->held + (double)L->params;
        for (int k = 0; k < L->nparams; k++)
            params += (double)L->param[k].count;
        flops += (double)L->flops;
        act += (double)L->act_bytes;
    }
    if (all * (M + 2) > 0x1p56)
        return "needs more than 2^56 floats of activations for its micro-batches";
    if (params > 0x1p44)
        return "has more than 2^42 parameters";
    if (flops > 0x1p60 || act > 0x1p60)
        return "has more than 2^60 FLOPs or activation bytes a sample";
    return NULL;
}

int64_t plan_zero_shard(int64_t n, int64_t dp)
{
    return dp > 1 ? (n + dp - 1) / dp : n;
}
