/* runtime/rt_zero.c: ZeRO stage 1 (`zero = 1`, docs/parallelism.md).
 *
 * A stage's parameters and gradients are one flat arena of n elements on
 * every replica, padded to dp equal shards of ceil(n / dp). Replica r owns
 * shard r: ReduceGrads is a reduce-scatter that leaves the sum of shard r
 * on replica r; OptimizerStep updates shard r with the optimizer state of
 * that shard only (the state arena is one shard: 1/dp of it), then an
 * all-gather gives every replica every updated parameter. The gradient
 * norm (clipping, the NaN vote) is summed over the shards, then the lane.
 *
 * A shard cuts tensors anywhere; its pieces (one per tensor it overlaps)
 * keep torch.optim's state layout per piece (state j of element e at
 * j x len + e), so the optimizer's arithmetic is the unsharded one, element
 * for element. Checkpoints stay whole and by name: a save gathers the
 * shards' state into each tensor's layout, a resume keeps its own shard of
 * what it read, so --resume crosses any dp and zero setting. */
#include "rt_zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan_memory.h"
#include "rt_optim.h"

/* The pieces of replica r's shard: calls fn for each (param, offset,
 * length, where its state starts in that replica's arena). */
typedef void (*PieceFn)(RtCtx *rt, RtParam *q, int64_t off, int64_t len, int64_t state_at, void *arg);

static void pieces_of(RtCtx *rt, int r, PieceFn fn, void *arg)
{
    int per = rt_optim_state_per_param(rt->c);
    int64_t lo = r * rt->zshard, hi = lo + rt->zshard, at = 0, used = 0;
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        int64_t a = at > lo ? at : lo, b = at + q->n < hi ? at + q->n : hi;
        if (a < b) {
            fn(rt, q, a - at, b - a, used, arg);
            used += (int64_t)per * (b - a);
        }
        at += q->n;
    }
}

static void count_piece(RtCtx *rt, RtParam *q, int64_t off, int64_t len, int64_t state_at, void *arg)
{
    (void)rt, (void)q, (void)off, (void)len, (void)state_at;
    (*(int *)arg)++;
}

static void keep_piece(RtCtx *rt, RtParam *q, int64_t off, int64_t len, int64_t state_at, void *arg)
{
    (void)arg;
    RtZeroPiece *z = &rt->zpiece[rt->nzpiece++];
    z->q = q, z->off = off, z->len = len;
    z->state = rt->state + state_at;
}

int rt_zero_on(const RtCtx *rt)
{
    return rt->c->zero && rt->dp > 1;
}

int64_t rt_zero_room(const RtCtx *rt, int64_t total)
{
    return rt_zero_on(rt) ? plan_zero_shard(total, rt->dp) * rt->dp : total;
}

void rt_zero_setup(RtCtx *rt)
{
    int n = 0;
    pieces_of(rt, rt->dpi, count_piece, &n);
    rt->zpiece = rt_alloc(rt, (size_t)(n > 0 ? n : 1) * sizeof *rt->zpiece, "ZeRO pieces");
    rt->nzpiece = 0;
    pieces_of(rt, rt->dpi, keep_piece, NULL);
}

void rt_zero_reduce(RtCtx *rt)
{
    RT_CHECK(rt, rt->xp->reduce_scatter_f32, "zero = 1: the %s transport has no reduce-scatter", rt->xp->name);
    rt->xp->reduce_scatter_f32(rt, rt->grads, rt->zshard, XPORT_REPLICAS);
}

double rt_zero_sumsq(RtCtx *rt)
{
    double ss = 0;
    for (int i = 0; i < rt->nzpiece; i++) {
        const RtZeroPiece *z = &rt->zpiece[i];
        if (z->q->counts_in_norm)
            ss += rt_sumsq(z->q->g + z->off, z->len);
    }
    /* the stage's whole gradient: every replica's shard */
    rt->xp->allreduce_f64(rt, &ss, 1, XPORT_REPLICAS);
    return ss;
}

void rt_zero_update(RtCtx *rt, double factor, double lr)
{
    for (int i = 0; i < rt->nzpiece; i++) {
        const RtZeroPiece *z = &rt->zpiece[i];
        float *g = z->q->g + z->off;
        if (factor < 1)
            rt_scale(g, z->len, (float)factor);
        rt_optim_step(rt->c, z->q->p + z->off, g, z->state, z->len, rt->step + 1, lr);
    }
    RT_CHECK(rt, rt->xp->allgather_f32, "zero = 1: the %s transport has no all-gather", rt->xp->name);
    rt->xp->allgather_f32(rt, rt->params, rt->zshard, XPORT_REPLICAS);
}

/* ---- checkpoints -------------------------------------------------------- */

typedef struct Gather {
    const float *arena;   /* one replica's state arena, in the gathered buffer */
    float *full;          /* per x total, each tensor's state at per x its offset */
    int per;
    int to_shard;         /* the other way: full -> this replica's arena */
} Gather;

static void move_piece(RtCtx *rt, RtParam *q, int64_t off, int64_t len, int64_t state_at, void *arg)
{
    Gather *g = arg;
    int64_t qat = q->p - rt->params; /* the tensor's offset in the arena */
    for (int j = 0; j < g->per; j++) {
        float *whole = g->full + (int64_t)g->per * qat + (int64_t)j * q->n + off;
        float *piece = (float *)g->arena + state_at + (int64_t)j * len;
        if (g->to_shard)
            memcpy(piece, whole, (size_t)len * sizeof(float));
        else
            memcpy(whole, piece, (size_t)len * sizeof(float));
    }
}

static void point_state(RtCtx *rt, float *full)
{
    int per = rt_optim_state_per_param(rt->c);
    for (int i = 0; i < rt->nparam; i++)
        rt->param[i].state = full ? full + (int64_t)per * (rt->param[i].p - rt->params) : NULL;
}

float *rt_zero_gather_state(RtCtx *rt)
{
    int per = rt_optim_state_per_param(rt->c);
    int64_t total = rt->nparams_total, arena = (int64_t)per * rt->zshard;
    float *all = rt_alloc(rt, (size_t)(arena * rt->dp > 0 ? arena * rt->dp : 1) * sizeof(float), "ZeRO state gather");
    memcpy(all + arena * rt->dpi, rt->state, (size_t)arena * sizeof(float));
    rt->xp->allgather_f32(rt, all, arena, XPORT_REPLICAS);
    float *full = rt_alloc(rt, (size_t)(per * total > 0 ? per * total : 1) * sizeof(float), "ZeRO whole state");
    for (int r = 0; r < rt->dp; r++) {
        Gather g = {all + arena * r, full, per, 0};
        pieces_of(rt, r, move_piece, &g);
    }
    free(all);
    point_state(rt, full);
    return full;
}

float *rt_zero_whole_state(RtCtx *rt)
{
    int per = rt_optim_state_per_param(rt->c);
    int64_t n = (int64_t)per * rt->nparams_total;
    float *full = rt_alloc(rt, (size_t)(n > 0 ? n : 1) * sizeof(float), "ZeRO whole state");
    memset(full, 0, (size_t)(n > 0 ? n : 1) * sizeof(float));
    point_state(rt, full);
    return full;
}

void rt_zero_release_state(RtCtx *rt, float *full, int keep_shard)
{
    if (keep_shard) {
        Gather g = {rt->state, full, rt_optim_state_per_param(rt->c), 1};
        pieces_of(rt, rt->dpi, move_piece, &g);
    }
    point_state(rt, NULL);
    free(full);
}
