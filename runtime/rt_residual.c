/* runtime/rt_residual.c: the residual block, one row that every backend's
 * layer table shares (rt_cpu.c's CPU_RESIDUAL, rt_cuda.c's CUDA_RESIDUAL).
 * The block runs its sub-layers through the backend's own rows
 * (rt->layers[kind]) and adds with the backend's addition, so nothing here
 * knows where the arrays live: on the CPU host memory and k_ kernels, with
 * --device cuda device memory and kc_ kernels.
 *
 * Where its arrays lie (plan/plan_memory.c, plan_residual_layout):
 *   io->save     each sub-layer's output, then its saved state, in order
 *                (body then shortcut): lr->sub[j].out_off, .save_off, bytes
 *                for the micro-batch;
 *   io->dsaved   its inner gradients: the output gradient of each sub-layer
 *                with weights (lr->sub[j].dout_off floats, or -1), which the
 *                input half writes and the weight half reads; the slot's
 *                kept area under a split schedule, else room in the scratch;
 *   rt->scratch  the sub-layers' own scratch from 0 (im2col, dropout masks),
 *                then, from plan_residual_scratch_at, two ping-pong arrays
 *                for the gradients between sub-layers, then the unsplit
 *                backward's inner gradients.
 * forward: out = body(in) + (shortcut(in), or in). backward input: the
 * body's chain writes its input gradient to io->din, the shortcut's chain
 * (or dout itself) is added to it. The additions are one rounding each,
 * the same in any order of the two operands, so the bits do not depend on
 * which branch runs first. */
#include "k_cpu.h"
#include "plan_memory.h"
#include "rt.h"
#include "rt_dev.h"

static float *at(float *base, int64_t off_bytes)
{
    return (float *)((unsigned char *)base + off_bytes);
}

/* y += x over n floats, on the backend */
static void add_into(RtCtx *rt, float *y, const float *x, int64_t n)
{
    if (rt->gpu)
        rt->gpu->add(rt, y, x, n);
    else
        k_add_into(y, x, n);
}

/* the input of sub-layer j: the block's input for the first layer of the
 * body and of the shortcut, else the previous sub-layer's output */
static const float *sub_in(const RtLayerRt *lr, const RtLayerIO *io, int j)
{
    if (j == 0 || j == lr->L->nbody)
        return io->in;
    return at(io->save, lr->sub[j - 1].out_off);
}

static RtLayerIO sub_io(const RtLayerRt *lr, const RtLayerIO *io, int j)
{
    const RtLayerRt *s = &lr->sub[j];
    RtLayerIO x = {sub_in(lr, io, j), at(io->save, s->out_off), at(io->save, s->save_off), NULL, NULL, NULL, NULL,
                   io->mb, io->recompute};
    return x;
}

static float *pingpong(RtCtx *rt, const RtLayerRt *lr, int k)
{
    return rt->scratch + plan_residual_scratch_at(lr->L, rt->B) + k * rt->B * plan_residual_pingpong(lr->L);
}

static float *inner_grads(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    return io->dsaved ? io->dsaved : pingpong(rt, lr, 2);
}

void rt_residual_forward(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    const PlanLayer *R = lr->L;
    int n = R->nbody + R->nshort;
    for (int j = 0; j < n; j++) {
        RtLayerIO x = sub_io(lr, io, j);
        rt->layers[lr->sub[j].L->kind].forward(rt, &lr->sub[j], &x);
    }
    int64_t e = rt->B * lr->out_elems;
    const float *body = at(io->save, lr->sub[R->nbody - 1].out_off);
    const float *other = R->nshort ? at(io->save, lr->sub[n - 1].out_off) : io->in;
    rt_dev_copy(rt, io->out, body, (size_t)e * sizeof(float));
    add_into(rt, io->out, other, e);
}

/* Sub-layers last down to first, from the gradient dout of the last one's
 * output; the first one's input gradient goes to din, or, when din is
 * NULL, to a ping-pong array that is returned. Keeps the output gradient
 * of each sub-layer with weights among the inner gradients. */
static float *backward_chain(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io, int first, int last,
                             float *din, float *kept)
{
    const float *g = io->dout;
    int k = 0;
    float *to = NULL;
    for (int j = last; j >= first; j--) {
        const RtLayerRt *s = &lr->sub[j];
        if (s->dout_off >= 0)
            rt_dev_copy(rt, kept + rt->B * s->dout_off, g, (size_t)(rt->B * s->out_elems) * sizeof(float));
        to = j == first && din ? din : pingpong(rt, lr, k);
        k ^= 1;
        RtLayerIO x = sub_io(lr, io, j);
        x.dout = g;
        x.din = to;
        rt->layers[s->L->kind].backward_input(rt, s, &x);
        g = to;
    }
    return to;
}

void rt_residual_backward_input(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    const PlanLayer *R = lr->L;
    float *kept = inner_grads(rt, lr, io);
    backward_chain(rt, lr, io, 0, R->nbody - 1, io->din, kept);
    int64_t e = rt->B * lr->in_elems;
    if (R->nshort)
        add_into(rt, io->din, backward_chain(rt, lr, io, R->nbody, R->nbody + R->nshort - 1, NULL, kept), e);
    else
        add_into(rt, io->din, io->dout, e);
}

void rt_residual_backward_weight(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    const PlanLayer *R = lr->L;
    float *kept = inner_grads(rt, lr, io);
    for (int j = R->nbody + R->nshort - 1; j >= 0; j--) {
        const RtLayerRt *s = &lr->sub[j];
        if (s->dout_off < 0)
            continue;
        RtLayerIO x = sub_io(lr, io, j);
        x.dout = kept + rt->B * s->dout_off;
        rt->layers[s->L->kind].backward_weight(rt, s, &x);
    }
}

size_t rt_residual_prepare(RtCtx *rt, RtLayerRt *lr)
{
    size_t most = 0;
    for (int j = 0; j < lr->L->nbody + lr->L->nshort; j++) {
        size_t w = rt->layers[lr->sub[j].L->kind].prepare(rt, &lr->sub[j]);
        most = w > most ? w : most;
    }
    return most;
}
