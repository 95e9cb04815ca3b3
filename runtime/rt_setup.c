/* runtime/rt_setup.c: everything the interpreter needs before its first
 * instruction: who this rank is, its communicators, the layout of each
 * chunk's activation slots, and the arenas (parameters, initialised as
 * PyTorch initialises them; gradients; optimizer state; work space).
 * With --device cuda (rt->gpu) the activation arenas are allocated on the
 * device and the parameters are initialised here, on the host, then copied
 * (rt_dev.h). */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "k_block.h"
#include "k_cpu.h"
#include "k_llama.h"
#include "plan_memory.h"
#include "rt.h"
#include "rt_zero.h"
#include "rt_dev.h"
#include "rt_optim.h"

void rt_fail(RtCtx *rt, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (rt && rt->in) {
        char ins[160];
        sched_instr_text(rt->in, ins, sizeof ins);
        fprintf(stderr, "[rank %d] %s:%d: %s, at instruction %d (%s)\n", rt->rank, file, line, msg, rt->pc, ins);
    } else {
        fprintf(stderr, "[rank %d] %s:%d: %s\n", rt ? rt->rank : -1, file, line, msg);
    }
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void rt_stalled(RtCtx *rt, double secs, const XportReq *req, const char *group)
{
    char where[256] = "outside the step's program", waits[256];
    if (rt->in) {
        char ins[160];
        sched_instr_text(rt->in, ins, sizeof ins);
        snprintf(where, sizeof where, "at instruction %d (%s) of %s %lld", rt->pc, ins,
                 rt->evaluating ? "evaluation batch from sample" : "step",
                 rt->evaluating ? (long long)rt->eval_step_base : (long long)rt->step + 1);
    }
    if (req) {
        const char *what = req->tag == XPORT_TAG_ACTIVATION ? "activation" : "gradient";
        int peer_rank = rt_rank_of(rt, req->peer, rt->dpi, rt->tpi);
        if (req->send)
            snprintf(waits, sizeof waits, "for stage %d (rank %d) to take the %s this rank sent", req->peer, peer_rank,
                     what);
        else
            snprintf(waits, sizeof waits, "for the %s from stage %d (rank %d)", what, req->peer, peer_rank);
    } else {
        snprintf(waits, sizeof waits, "in %s", group ? group : "a reduction");
    }
    fprintf(stderr,
            "[rank %d] watchdog: stage %d made no progress for %.0f s %s, waiting %s; a rank there is hung, stopped "
            "or slower than --watchdog %.0f s: ending the job\n",
            rt->rank, rt->stage, secs, where, waits, rt->watchdog_s);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* Zeroed and 64-byte aligned (a cache line, an AVX-512 vector: the packed
 * weights are written with streaming stores, which need it) */
void *rt_alloc(RtCtx *rt, size_t bytes, const char *what)
{
    size_t n = bytes > SIZE_MAX - 64 ? 0 : bytes ? (bytes + 63) / 64 * 64 : 64;
    void *p = n ? aligned_alloc(64, n) : NULL;
    RT_CHECK(rt, p, "out of memory allocating %zu bytes for %s", bytes, what);
    memset(p, 0, n);
    return p;
}

void rt_mem_count(RtCtx *rt, RtMem kind, size_t bytes)
{
    rt->mem[kind] += (int64_t)bytes;
}

void *rt_host_arena(RtCtx *rt, RtMem kind, size_t bytes, const char *what)
{
    if (!rt->gpu)
        rt_mem_count(rt, kind, bytes);
    return rt_alloc(rt, bytes, what);
}

int64_t rt_mem_total(const RtCtx *rt)
{
    int64_t t = 0;
    for (int k = 0; k < RT_MEM_KINDS; k++)
        t += rt->mem[k];
    return t;
}

/* the split blocks' sums (KBlock.tp_sum): over this stage's tp ranks */
static void tp_sum(void *ctx, float *x, int64_t n)
{
    RtCtx *rt = ctx;
    rt->xp->allreduce_f32(rt, x, n, XPORT_TP);
}

int rt_kprec(const RtCtx *rt)
{
    return rt->ir.cfg.precision == PLAN_PREC_BF16 ? K_BF16 : K_FP32;
}

int rt_wire_bf16(const RtCtx *rt)
{
    return !rt->gpu && rt->ir.cfg.precision == PLAN_PREC_BF16;
}

KBlock rt_block_geom(RtCtx *rt, const PlanLayer *L)
{
    KBlock g = {.t = L->in.dim[0], .d = L->in.dim[1], .heads = L->heads, .f = L->mlp, .causal = L->causal,
                .eps = (float)L->eps, .dropout = (float)L->p, .tp = L->tp,
                .prec = rt_kprec(rt)};
    if (L->tp > 1)
        g.tp_rank = rt->tpi, g.tp_sum = tp_sum, g.tp_ctx = rt;
    return g;
}

KLlama rt_llama_geom(RtCtx *rt, const PlanLayer *L)
{
    KLlama g = {.t = L->in.dim[0], .d = L->in.dim[1], .heads = L->heads, .kv_heads = L->kv_heads, .f = L->mlp,
                .causal = L->causal, .eps = (float)L->eps, .theta = (float)L->theta, .tp = L->tp,
                .prec = rt_kprec(rt)};
    if (L->tp > 1)
        g.tp_rank = rt->tpi, g.tp_sum = tp_sum, g.tp_ctx = rt;
    return g;
}

KConv rt_conv_geom(const RtCtx *rt, const PlanLayer *L)
{
    KConv g = {L->in.dim[0], L->in.dim[1], L->in.dim[2], L->out.dim[0], L->out.dim[1], L->out.dim[2],
               L->kh,        L->kw,        L->sh,        L->sw,         L->ph,         L->pw,
               rt_kprec(rt)};
    return g;
}

KBlockKeys rt_block_keys(const RtCtx *rt, const PlanLayer *L, int64_t mb)
{
    KBlockKeys k = {!rt->evaluating, rt->c->seed, (uint64_t)rt->step, (uint64_t)rt_sample_base(rt, mb),
                    (uint32_t)L->index};
    return k;
}

int rt_transpose_geom(const PlanLayer *L, int64_t B, int64_t g[5])
{
    int lo = (int)(L->axis_a < L->axis_b ? L->axis_a : L->axis_b), hi = (int)(L->axis_a < L->axis_b ? L->axis_b : L->axis_a);
    g[0] = B, g[1] = L->in.dim[lo], g[2] = 1, g[3] = L->in.dim[hi], g[4] = 1;
    for (int d = 0; d < L->in.ndim; d++) {
        if (d < lo)
            g[0] *= L->in.dim[d];
        else if (d > lo && d < hi)
            g[2] *= L->in.dim[d];
        else if (d > hi)
            g[4] *= L->in.dim[d];
    }
    return lo != hi;
}

KPool rt_pool_geom(const PlanLayer *L)
{
    KPool g = {L->in.dim[0], L->in.dim[1], L->in.dim[2], L->out.dim[1], L->out.dim[2], L->kh,
               L->kw,        L->sh,        L->sw,        L->ph,         L->pw};
    return g;
}

/* The slot layout of one chunk: plan/plan_memory.c's, the one pipec
 * predicts from, so what --stats says is what is allocated here. */
static void layout_chunk(RtCtx *rt, RtChunk *ch, int split)
{
    PlanChunkLayout l;
    plan_chunk_layout(rt->m, &rt->ir.part, rt->B, ch->part, split, ch->ac, &l);
    ch->in_off = l.in_off, ch->in_bytes = l.in_bytes, ch->tgt_off = l.tgt_off;
    ch->outt_off = l.outt_off, ch->outt_bytes = l.outt_bytes, ch->dout_off = l.dout_off;
    ch->slot_bytes = l.slot_bytes, ch->ws_bytes = l.ws_bytes, ch->gin_elems = l.gin_elems;
    int n = ch->last - ch->first + 1;
    ch->lay = rt_alloc(rt, n * sizeof *ch->lay, "layers");
    for (int i = 0; i < n; i++) {
        RtLayerRt *lr = &ch->lay[i];
        const PlanLayerLayout *y = &l.lay[i];
        lr->L = &rt->m->layer[ch->first + i];
        lr->in_elems = y->in_elems, lr->out_elems = y->out_elems;
        lr->out_off = y->out_off, lr->save_off = y->save_off, lr->save_bytes = y->save_bytes;
        lr->dout_off = y->dout_off, lr->ws_out = y->ws_out, lr->ws_save = y->ws_save;
        if (lr->L->kind == PLAN_L_RESIDUAL) {
            /* its sub-layers, where plan_memory.c lays them out */
            const PlanLayer *R = lr->L;
            int ns = R->nbody + R->nshort;
            PlanSubLayout sub[PLAN_MAX_SUBLAYERS];
            plan_residual_layout(R, sub, NULL);
            lr->sub = rt_alloc(rt, ns * sizeof *lr->sub, "residual layers");
            for (int j = 0; j < ns; j++) {
                RtLayerRt *s = &lr->sub[j];
                s->L = &R->sub[j];
                s->in_elems = plan_tensor_elems(&s->L->in), s->out_elems = plan_tensor_elems(&s->L->out);
                s->out_off = rt->B * sub[j].out_off, s->save_off = rt->B * sub[j].save_off;
                s->save_bytes = rt->B * plan_layer_state_bytes(s->L);
                s->dout_off = sub[j].dkeep_off;
                s->ws_out = s->ws_save = -1;
            }
        }
    }
    if (l.work_elems > rt->work_elems)
        rt->work_elems = l.work_elems;
    if (l.scratch_elems > rt->scratch_elems)
        rt->scratch_elems = l.scratch_elems;
    plan_chunk_layout_free(&l);
}

/* How each layer kind's parameters start, PyTorch's defaults, on the host
 * (a GPU run copies them over): Linear and Conv2d U(-1/sqrt(fan_in), ..)
 * for weight and bias, Embedding N(0, 1), LayerNorm 1 and 0. A pure
 * function of (seed, layer index, parameter name), so the partition does
 * not change it. One row per plan/layers.def entry: a layer without its row
 * does not compile. k: which of the layer's tensors. */
typedef void (*RtInit)(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed);

static void init_uniform(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed, int64_t fan_in)
{
    k_init_uniform(p, n, (float)(1.0 / sqrt((double)fan_in)), seed, (uint32_t)L->index, L->param[k].name);
}

static void init_linear(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    init_uniform(p, n, L, k, seed, L->in.dim[L->in.ndim - 1]);
}

static void init_conv2d(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    init_uniform(p, n, L, k, seed, L->in.dim[0] * L->kh * L->kw);
}

static void init_embedding(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    k_init_normal(p, n, seed, (uint32_t)L->index, L->param[k].name);
}

static void init_layernorm(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    (void)L, (void)seed;
    k_fill(p, n, k == 0 ? 1.0f : 0.0f);
}

/* rmsnorm's weight, and llama_block's two: 1; llama_block's linears as
 * nn.Linear's weights, U(-1/sqrt(in), ..) with in = the tensor's second
 * dimension (D, or F for down_proj) */
static void init_llama(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    if (L->param[k].ndim == 1)
        k_fill(p, n, 1.0f);
    else
        init_uniform(p, n, L, k, seed, L->param[k].dim[1]);
}

static void init_param(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed);

/* a residual block's tensor k is tensor q of one of its layers: that
 * layer's own init (its own init = ..., or the model's, or its kind's
 * default), keyed by the block's index and the tensor's full name
 * (body.j.weight), so two layers of a block never draw the same numbers */
static void init_residual(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    int j = 0, q = k;
    while (q >= L->sub[j].nparams)
        q -= L->sub[j++].nparams;
    PlanLayer T = L->sub[j];
    T.index = L->index;
    snprintf(T.param[q].name, sizeof T.param[q].name, "%s", L->param[k].name);
    init_param(p, n, &T, q, seed);
}

/* no parameters */
#define init_none NULL

#define INIT_LINEAR init_linear
#define INIT_CONV2D init_conv2d
#define INIT_MAXPOOL2D init_none
#define INIT_AVGPOOL2D init_none
#define INIT_ADAPTIVE_AVGPOOL2D init_none
#define INIT_RELU init_none
#define INIT_GELU init_none
#define INIT_TANH init_none
#define INIT_SIGMOID init_none
#define INIT_FLATTEN init_none
#define INIT_DROPOUT init_none
#define INIT_LAYERNORM init_layernorm
#define INIT_EMBEDDING init_embedding
/* every tensor of a block U(-1/sqrt(D), ..), its layernorms' included: what
 * pipe has always done (PyTorch's GPT-2 blocks start their layernorms at 1
 * and 0; a model-level init is issue 13's) */
#define INIT_TRANSFORMER_BLOCK init_linear
#define INIT_RMSNORM init_llama
#define INIT_LLAMA_BLOCK init_llama
#define INIT_BATCHNORM2D init_layernorm /* weight 1, bias 0 (its buffers: setup_buffers) */
#define INIT_RESHAPE init_none
#define INIT_TRANSPOSE init_none
#define INIT_RESIDUAL init_residual

static const RtInit layer_init[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) [PLAN_L_##id] = INIT_##id,
#include "layers.def"
#undef PLAN_LAYER
};

/* The residual output projections GPT-2's scheme scales down: a block's
 * attention and MLP output weights. */
static int residual_projection(const char *name)
{
    static const char *const names[] = {"attn.proj.weight", "mlp.proj.weight", "self_attn.o_proj.weight",
                                        "mlp.down_proj.weight", NULL};
    for (int i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    return 0;
}

/* Tensor k of layer L, as its init says (plan_model.h, PlanInit): the
 * layer kind's default (layer_init), zeros, or normal weights with biases
 * at 0 and norm scales at 1 (a 1-D tensor is a bias or a norm's scale). */
static void init_param(float *p, int64_t n, const PlanLayer *L, int k, uint64_t seed)
{
    const PlanParam *q = &L->param[k];
    size_t len = strlen(q->name);
    switch (L->init) {
    case PLAN_INIT_DEFAULT: layer_init[L->kind](p, n, L, k, seed); return;
    case PLAN_INIT_ZEROS: k_fill(p, n, 0.0f); return;
    case PLAN_INIT_NORMAL:
    case PLAN_INIT_GPT2:
        if (q->ndim == 1) {
            k_fill(p, n, len >= 4 && strcmp(q->name + len - 4, "bias") == 0 ? 0.0f : 1.0f);
            return;
        }
        k_init_normal_std(p, n, L->init == PLAN_INIT_GPT2 && residual_projection(q->name) ? L->init_std_resid : L->init_std,
                          seed, (uint32_t)L->index, q->name);
        return;
    case PLAN_INIT_COUNT: break; /* the plan reader refuses it */
    }
}

/* The buffers of this stage's layers (batchnorm2d's running statistics),
 * as nn.BatchNorm2d starts them: running_mean 0, running_var 1,
 * num_batches_tracked 0. One arena, counted as parameters (plan_memory.h);
 * each layer's piece is num_batches_tracked (int64), then its float32
 * buffers, so every piece stays 8-aligned. */
static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void setup_buffers(RtCtx *rt)
{
    const PlanModel *m = rt->m;
    int n = 0;
    int64_t bytes = 0;
    for (int c = 0; c < rt->chunks; c++)
        for (int i = rt->chunk[c].first; i <= rt->chunk[c].last; i++) {
            n += m->layer[i].nbuffers;
            bytes += plan_layer_buffer_bytes(&m->layer[i]);
        }
    rt->nbuf = n;
    rt->buf_bytes = bytes;
    if (n == 0)
        return;
    rt->buf = rt_alloc(rt, (size_t)n * sizeof *rt->buf, "buffer table");
    rt->bufs = rt_host_arena(rt, RT_MEM_PARAMETERS, (size_t)bytes, "buffers");
    int64_t at = 0;
    int j = 0;
    for (int c = 0; c < rt->chunks; c++)
        for (int i = rt->chunk[c].first; i <= rt->chunk[c].last; i++) {
            const PlanLayer *L = &m->layer[i];
            /* one piece per layer that holds buffers (a residual block: one
             * per layer of it that does, its buffers being theirs in
             * order): its int64 buffers first, then its float32 ones */
            int groups = L->kind == PLAN_L_RESIDUAL ? L->nbody + L->nshort : 1, k0 = 0;
            for (int g = 0; g < groups; g++) {
                int sub = L->kind == PLAN_L_RESIDUAL ? g : -1;
                int nk = sub >= 0 ? L->sub[g].nbuffers : L->nbuffers;
                for (int pass = 0; pass < 2; pass++)
                    for (int k = k0; k < k0 + nk; k++) {
                        const PlanParam *pb = &L->buffer[k];
                        if (pb->i64 != (pass == 0))
                            continue;
                        RtBuf *b = &rt->buf[j++];
                        b->layer = i, b->sub = sub, b->k = k, b->n = pb->count, b->bytes = pb->count * (pb->i64 ? 8 : 4);
                        snprintf(b->name, sizeof b->name, "layers.%d.%s", i, pb->name);
                        b->p = rt->bufs + at;
                        at += b->bytes;
                        if (!pb->i64)
                            k_fill(b->p, b->n, ends_with(pb->name, "running_var") ? 1.0f : 0.0f);
                    }
                k0 += nk;
            }
        }
}

/* The start of layer li's piece of a buffer arena (host or device), or
 * of its sub-layer sub's in a residual block (-1: not one), or NULL. */
static void *layer_bufs(const RtCtx *rt, int li, int sub, int device)
{
    for (int j = 0; j < rt->nbuf; j++)
        if (rt->buf[j].layer == li && rt->buf[j].sub == sub)
            return device ? rt->buf[j].dp : rt->buf[j].p; /* the first is the piece's start */
    return NULL;
}

/* Parameters of this stage, in layer order; a tied linear whose owner is on
 * another stage gets a copy, initialised as the owner is. */
int rt_param_src(const RtCtx *rt, const RtParam *q, int *k)
{
    *k = q->k < 0 ? 0 : q->k;
    return q->k < 0 ? rt->m->layer[q->layer].tie : q->layer;
}

int rt_tp_split(const RtCtx *rt, const RtParam *q)
{
    int k, li = rt_param_src(rt, q, &k);
    return plan_param_split(&rt->m->layer[li], k) != PLAN_SPLIT_NONE;
}

void rt_tp_whole(RtCtx *rt, const RtParam *q, const float *local, float *whole)
{
    int k, li = rt_param_src(rt, q, &k);
    const PlanLayer *L = &rt->m->layer[li];
    int64_t n = q->n;
    RT_CHECK(rt, n * rt->tp <= INT_MAX, "a split tensor of %lld elements is too large for one MPI gather",
             (long long)(n * rt->tp));
    float *parts = rt->tpi == 0 ? rt_alloc(rt, (size_t)(n * rt->tp) * sizeof(float), "tensor-parallel gather") : NULL;
    RT_MPI(rt, MPI_Gather(local, (int)n, MPI_FLOAT, parts, (int)n, MPI_FLOAT, 0, rt->tp_comm));
    for (int r = 0; parts && r < rt->tp; r++)
        plan_param_put(whole, parts + (int64_t)r * n, L, k, r);
    free(parts);
}

static void setup_params(RtCtx *rt)
{
    const PlanModel *m = rt->m;
    int cap = 16;
    rt->param = rt_alloc(rt, cap * sizeof *rt->param, "parameter table");
    int64_t total = 0;
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int i = ch->first; i <= ch->last; i++) {
            const PlanLayer *L = &m->layer[i];
            int extra = L->tie >= 0 ? 1 : 0;
            for (int k = -extra; k < L->nparams; k++) {
                if (rt->nparam == cap) {
                    cap *= 2;
                    rt->param = realloc(rt->param, cap * sizeof *rt->param);
                    RT_CHECK(rt, rt->param, "out of memory");
                }
                RtParam *q = &rt->param[rt->nparam++];
                memset(q, 0, sizeof *q);
                q->layer = i, q->k = k;
                if (k < 0) {
                    const PlanParam *w = &m->layer[L->tie].param[0];
                    q->n = plan_param_local(&m->layer[L->tie], 0); /* a vocabulary-split owner's: its share */
                    snprintf(q->name, sizeof q->name, "layers.%d.%s", L->tie, w->name);
                    q->counts_in_norm = 0; /* the owner counts it once */
                    /* on the owner's stage the copy is the owner's tensor:
                     * its gradient is kept apart, its value shared */
                } else {
                    /* a split block's tensors: this tp rank's share */
                    q->n = plan_param_local(L, k);
                    snprintf(q->name, sizeof q->name, "layers.%d.%s", i, L->param[k].name);
                    /* the global norm sums the split shares over the tp
                     * ranks and a whole tensor once (tp rank 0's) */
                    q->counts_in_norm = rt->tpi == 0 || rt_tp_split(rt, q);
                }
                total += q->n;
            }
        }
    }
    rt->nparams_total = total;
    /* the training copy with --device cuda is the device's (rt_cuda.c
     * counts it); these host arenas then only serve checkpoints */
    int per = rt_optim_state_per_param(rt->c);
    /* zero = 1 (rt_zero.h): the arenas padded to whole shards, the state
     * one shard's */
    int zero = rt_zero_on(rt);
    int64_t room = rt_zero_room(rt, total);
    rt->zshard = zero ? room / rt->dp : total;
    rt->params = rt_host_arena(rt, RT_MEM_PARAMETERS, room * sizeof(float), "parameters");
    rt->grads = rt_host_arena(rt, RT_MEM_GRADIENTS, room * sizeof(float), "gradients");
    rt->state = rt_host_arena(rt, RT_MEM_OPTIMIZER_STATE, (size_t)per * rt->zshard * sizeof(float), "optimizer state");
    int64_t at = 0;
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        q->p = rt->params + at, q->g = rt->grads + at, q->state = zero ? NULL : rt->state + (int64_t)per * at;
        at += q->n;
        /* a tied copy starts as its owner's weight */
        int k, li = rt_param_src(rt, q, &k);
        const PlanLayer *L = &m->layer[li];
        RT_CHECK(rt, L->init != PLAN_INIT_DEFAULT || layer_init[L->kind],
                 "layer %d (%s) has parameters but no initialisation", li, plan_layer_names[L->kind]);
        if (rt_tp_split(rt, q)) {
            /* the whole tensor's numbers, this rank's share of them */
            float *whole = rt_alloc(rt, (size_t)L->param[k].count * sizeof(float), "a split tensor's initial value");
            init_param(whole, L->param[k].count, L, k, rt->c->seed);
            plan_param_take(q->p, whole, L, k, rt->tpi);
            free(whole);
        } else {
            init_param(q->p, q->n, L, k, rt->c->seed);
        }
    }
    if (zero)
        rt_zero_setup(rt);
    setup_buffers(rt);
    /* the device arenas, a copy of these (rt->dparams...; q->dp...; and
     * rt->dbufs, b->dp) */
    if (rt->gpu)
        rt->gpu->params(rt);
    /* bind each layer's pointers: the arrays the kernels train, the
     * device's with --device cuda */
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int i = 0; i <= ch->last - ch->first; i++) {
            RtLayerRt *lr = &ch->lay[i];
            int li = ch->first + i, seen = 0;
            for (int j = 0; j < rt->nparam; j++) {
                RtParam *q = &rt->param[j];
                if (q->layer != li)
                    continue;
                float *p = rt->gpu ? q->dp : q->p, *g = rt->gpu ? q->dg : q->g;
                if (q->k < 0) {
                    lr->w = p, lr->gw = g;
                } else {
                    lr->w2[q->k] = p, lr->g2[q->k] = g;
                    seen++;
                }
            }
            const PlanLayer *L = lr->L;
            if (L->tie < 0) {
                lr->w = L->nparams > 0 ? lr->w2[0] : NULL;
                lr->gw = L->nparams > 0 ? lr->g2[0] : NULL;
                lr->b = L->nparams > 1 ? lr->w2[1] : NULL;
                lr->gb = L->nparams > 1 ? lr->g2[1] : NULL;
            } else {
                lr->b = L->nparams > 0 ? lr->w2[0] : NULL;
                lr->gb = L->nparams > 0 ? lr->g2[0] : NULL;
            }
            lr->bufs = layer_bufs(rt, li, -1, rt->gpu != NULL);
            if (L->kind == PLAN_L_EMBEDDING) {
                lr->b = L->nparams > 1 ? lr->w2[1] : NULL; /* positions */
                lr->gb = L->nparams > 1 ? lr->g2[1] : NULL;
            }
            if (L->kind == PLAN_L_RESIDUAL) {
                /* each sub-layer's tensors are the block's, in order */
                int k = 0;
                for (int j = 0; j < L->nbody + L->nshort; j++) {
                    RtLayerRt *s = &lr->sub[j];
                    const PlanLayer *S = s->L;
                    for (int q = 0; q < S->nparams; q++, k++)
                        s->w2[q] = lr->w2[k], s->g2[q] = lr->g2[k];
                    s->w = S->nparams > 0 ? s->w2[0] : NULL, s->gw = S->nparams > 0 ? s->g2[0] : NULL;
                    s->b = S->nparams > 1 ? s->w2[1] : NULL, s->gb = S->nparams > 1 ? s->g2[1] : NULL;
                    s->bufs = layer_bufs(rt, li, j, rt->gpu != NULL);
                }
            }
            (void)seen;
        }
    }
}

/* The packed copies of the linears' weights, and of transformer blocks'
 * (plan_layer_pack_floats): the arena pipec predicts, always on the CPU
 * (not under --device cuda); bound to the layers only where the packed
 * product runs (k_packed_supported), elsewhere the products stay
 * OpenBLAS's and the arena unused. Packed at the start of each program run
 * (rt->run, rt_cpu_pack_weights): the weights change only at its end. */
static void setup_packs(RtCtx *rt)
{
    int64_t bytes = plan_stage_pack_bytes(rt->m, &rt->ir.part, rt->stage, rt->B, (int)rt->c->precision);
    if (bytes == 0 || rt->gpu)
        return;
    rt->wpacks = rt_host_arena(rt, RT_MEM_PARAMETERS, (size_t)bytes, "packed weights");
    if (!k_packed_supported())
        return;
    int64_t at = 0;
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int i = 0; i <= ch->last - ch->first; i++) {
            RtLayerRt *lr = &ch->lay[i];
            int64_t n = plan_layer_pack_floats(lr->L, rt->B, (int)rt->c->precision);
            at += n;
            if (n == 0)
                continue;
            lr->wpack = rt->wpacks + at - n;
            lr->wpack_run[0] = lr->wpack_run[1] = -1;
        }
    }
}

void rt_setup(RtCtx *rt)
{
    const PlanPartition *pt = &rt->ir.part;
    rt->m = &rt->ir.model;
    rt->xp = &xport_mpi;
    rt->layers = rt->gpu ? rt->gpu->layers : rt_cpu_layers;
    rt->c = &rt->ir.cfg;
    rt->B = rt->c->micro_batch_size;
    rt->M = rt->c->micro_batches;
    rt->stages = pt->stages;
    rt->chunks = pt->chunks;
    rt->global_batch = rt->B * rt->M * rt->dp;
    RT_CHECK(rt, rt->chunks <= RT_MAX_CHUNKS, "more than %d chunks", RT_MAX_CHUNKS);
    RT_MPI(rt, MPI_Comm_split(MPI_COMM_WORLD, rt->stage * rt->tp + rt->tpi, rt->dpi, &rt->dp_comm));
    RT_MPI(rt, MPI_Comm_split(MPI_COMM_WORLD, rt->dpi * rt->tp + rt->tpi, rt->stage, &rt->pipe_comm));
    int tied = rt->ir.sched.tied_stage[rt->stage];
    RT_MPI(rt, MPI_Comm_split(MPI_COMM_WORLD, tied ? rt->dpi * rt->tp + rt->tpi : MPI_UNDEFINED, rt->stage,
                              &rt->tied_comm));
    RT_MPI(rt, MPI_Comm_split(MPI_COMM_WORLD, rt->stage * rt->dp + rt->dpi, rt->tpi, &rt->tp_comm));
    int split = plan_stage_split(&rt->ir.sched.train, rt->stage);
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        ch->part = sched_part(rt->c->place, rt->stages, rt->stage, c);
        ch->first = pt->part[ch->part].first;
        ch->last = pt->part[ch->part].last;
        ch->is_first = ch->part == 0;
        ch->is_last = ch->part == pt->nparts - 1;
        ch->ac = (int)rt->c->activation_checkpoint;
        layout_chunk(rt, ch, split);
        ch->ws = rt_dev_alloc(rt, RT_MEM_RECOMPUTE_WORKSPACE, (size_t)ch->ws_bytes, "recompute workspace");
        int nb = rt->ir.sched.train.nbuf[rt->stage * rt->chunks + c];
        int ne = rt->ir.sched.eval.nbuf[rt->stage * rt->chunks + c];
        ch->nbuf = nb > ne ? nb : ne;
        ch->slots = rt_dev_alloc(rt, RT_MEM_ACTIVATIONS, (size_t)ch->nbuf * ch->slot_bytes, "activation slots");
        ch->gin_n = plan_gin_areas(ch->part);
        ch->gin_area[0] = rt_dev_alloc(rt, RT_MEM_TRANSFER_STAGING, ch->gin_n * ch->gin_elems * sizeof(float),
                                       "input gradient");
        ch->gin_area[1] = ch->gin_n > 1 ? ch->gin_area[0] + ch->gin_elems : ch->gin_area[0];
        ch->gin = ch->gin_area[0], ch->gin_at = 0;
        ch->gin_req[0] = ch->gin_req[1] = xport_none();
        ch->out_req = rt_alloc(rt, ch->nbuf * sizeof *ch->out_req, "requests");
        ch->in_req = rt_alloc(rt, ch->nbuf * sizeof *ch->in_req, "requests");
        ch->dout_req = rt_alloc(rt, ch->nbuf * sizeof *ch->dout_req, "requests");
        ch->slot_mb = rt_alloc(rt, ch->nbuf * sizeof *ch->slot_mb, "slots");
        for (int b = 0; b < ch->nbuf; b++) {
            ch->out_req[b] = ch->in_req[b] = ch->dout_req[b] = xport_none();
            ch->slot_mb[b] = -1;
        }
    }
    for (int k = 0; k < 2; k++)
        rt->work[k] = rt_dev_alloc(rt, RT_MEM_ACTIVATIONS, rt->work_elems * sizeof(float), "work space");
    rt->scratch = rt_dev_alloc(rt, RT_MEM_ACTIVATIONS, rt->scratch_elems * sizeof(float), "kernel scratch");
    setup_params(rt);
    setup_packs(rt);
    rt->vote = rt_alloc(rt, rt->stages * sizeof *rt->vote, "vote");
    rt->bad_stage = -1;
    if (rt->gpu)
        rt->gpu->setup(rt);
}

void rt_teardown(RtCtx *rt)
{
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        rt_dev_free(rt, ch->slots), rt_dev_free(rt, ch->gin_area[0]), rt_dev_free(rt, ch->ws);
    }
    rt_dev_free(rt, rt->work[0]), rt_dev_free(rt, rt->work[1]), rt_dev_free(rt, rt->scratch);
    /* the backend frees what it added (staging buffers of the requests, the
     * device arenas) while the layers and requests still exist */
    if (rt->gpu)
        rt->gpu->teardown(rt);
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int i = 0; i <= ch->last - ch->first; i++)
            free(ch->lay[i].sub);
        free(ch->lay), free(ch->out_req), free(ch->in_req), free(ch->dout_req), free(ch->slot_mb);
    }
    free(rt->params), free(rt->grads), free(rt->state), free(rt->param), free(rt->vote), free(rt->zpiece);
    free(rt->bufs), free(rt->buf), free(rt->wpacks);
    MPI_Comm_free(&rt->dp_comm);
    MPI_Comm_free(&rt->pipe_comm);
    MPI_Comm_free(&rt->tp_comm);
    if (rt->tied_comm != MPI_COMM_NULL)
        MPI_Comm_free(&rt->tied_comm);
}
