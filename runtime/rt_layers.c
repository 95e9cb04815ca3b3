/* runtime/rt_layers.c: a chunk's layers, forward and backward, over one
 * activation slot. This file only finds the arrays: a layer reads the
 * previous layer's output (or the slot's input tuple, into which a
 * hand-over first copies the linked slot's output tuple) and writes its own
 * output into the slot, where the backward finds it; only the input
 * gradient of a hand-over's backward is written through the link. What a
 * layer computes is its row in the backend's table (rt->layers: rt_cpu.c's
 * on the CPU, rt_cuda.c's with --device cuda, where the same arithmetic
 * finds device arrays). */
#include <string.h>

#include "k_cpu.h"
#include "plan_memory.h"
#include "rt.h"
#include "rt_dev.h"

static float *at(unsigned char *slot, int64_t off)
{
    return (float *)(slot + off);
}

/* Where a layer's output and saved state are: in the slot, or, under
 * activation checkpointing, in the chunk's recompute workspace. */
static float *lay_out(const RtChunk *ch, unsigned char *slot, const RtLayerRt *lr)
{
    return lr->ws_out >= 0 ? (float *)(ch->ws + lr->ws_out) : at(slot, lr->out_off);
}

static float *lay_save(const RtChunk *ch, unsigned char *slot, const RtLayerRt *lr)
{
    return lr->ws_save >= 0 ? (float *)(ch->ws + lr->ws_save) : at(slot, lr->save_off);
}

/* The input of layer i of the chunk: the previous layer's output, or the
 * main item of the slot's input tuple. A hand-over's Forward first copies
 * the linked slot's output tuple into this slot's input tuple, so that
 * every later use (BackwardWeight, a recompute) finds its input here even
 * after the previous part's buffer is gone: the verifier lets W run
 * without the link, and the link names a buffer only for F and B/I. */
static const float *layer_input(RtChunk *ch, unsigned char *slot, int i)
{
    if (i > 0)
        return lay_out(ch, slot, &ch->lay[i - 1]);
    return at(slot, ch->in_off);
}

/* Where a named item lies in a part's input tuple (bytes from its start),
 * or -1: the model's inputs for the first part, else the boundary tuple
 * the previous part sends (or hands over). */
static int64_t input_item_at(const RtCtx *rt, const RtChunk *ch, const char *name)
{
    int64_t off = 0;
    if (ch->is_first) {
        for (int q = 0; q < rt->m->ninputs; q++) {
            if (strcmp(rt->m->input[q].name, name) == 0)
                return off;
            off += rt->B * plan_tensor_elems(&rt->m->input[q].t) * 4;
        }
        return -1;
    }
    const PlanBoundary *b = &rt->ir.part.bnd[ch->part - 1];
    for (int q = 0; q < b->nitems; q++) {
        if (strcmp(b->item[q].name, name) == 0)
            return off;
        off += b->item[q].bytes;
    }
    return -1;
}

/* A side input (a mask) by name, in this slot's input tuple. */
static const float *side_input(RtCtx *rt, const RtChunk *ch, const unsigned char *slot, const char *name)
{
    int64_t off = input_item_at(rt, ch, name);
    RT_CHECK(rt, off >= 0, "side input '%s' is not in the input tuple of part %d", name, ch->part);
    return (const float *)(slot + ch->in_off + off);
}

static const float *block_mask(RtCtx *rt, const RtChunk *ch, const unsigned char *slot, const PlanLayer *L)
{
    return L->mask >= 0 ? side_input(rt, ch, slot, rt->m->input[L->mask].name) : NULL;
}

/* The chunk whose output tuple a hand-over reads: the previous part's. */
static const RtChunk *prev_chunk(const RtCtx *rt, const RtChunk *ch)
{
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].part == ch->part - 1)
            return &rt->chunk[c];
    return NULL;
}

/* Layer i of the chunk, forward, on the backend's table (rt->layers). */
static void forward_layer(RtCtx *rt, RtChunk *ch, unsigned char *slot, int i, int64_t mb, int recompute)
{
    RtLayerRt *lr = &ch->lay[i];
    const PlanLayer *L = lr->L;
    RtLayerIO io = {layer_input(ch, slot, i), lay_out(ch, slot, lr), lay_save(ch, slot, lr), NULL, NULL, NULL, NULL,
                    mb, recompute};
    io.mask = block_mask(rt, ch, slot, L); /* a block's padding mask, or NULL */
    rt->layers[L->kind].forward(rt, lr, &io);
    if (rt_wire_bf16(rt) && L->index < rt->m->nlayers - 1) /* what may travel to the next stage */
        k_bf16_round_values(io.out, rt->B * lr->out_elems);
    if (rt->xp->progress)
        rt->xp->progress(rt);
}

void rt_chunk_forward(RtCtx *rt, RtChunk *ch, unsigned char *slot, const unsigned char *link_slot, int64_t mb)
{
    int n = ch->last - ch->first + 1;
    int64_t B = rt->B;
    if (link_slot) /* a hand-over: the previous part's output tuple is this part's input tuple */
        rt_dev_copy(rt, slot + ch->in_off, link_slot + prev_chunk(rt, ch)->outt_off, ch->in_bytes);
    for (int i = 0; i < n; i++)
        forward_layer(rt, ch, slot, i, mb, 0);
    /* side inputs that travel on are copied behind the main output */
    if (!ch->is_last) {
        const PlanBoundary *bo = &rt->ir.part.bnd[ch->part];
        int64_t off = B * ch->lay[n - 1].out_elems * 4;
        for (int j = 1; j < bo->nitems; j++) {
            int64_t in_at = input_item_at(rt, ch, bo->item[j].name);
            RT_CHECK(rt, in_at >= 0, "side input '%s' is not in the input tuple of part %d", bo->item[j].name, ch->part);
            rt_dev_copy(rt, slot + ch->outt_off + off, slot + ch->in_off + in_at, bo->item[j].bytes);
            off += bo->item[j].bytes;
        }
    } else {
        /* the loss, on the model's last part */
        const RtLayerRt *last = &ch->lay[n - 1];
        const float *logits = lay_out(ch, slot, last);
        float *dl = rt->evaluating ? NULL : at(slot, ch->dout_off);
        if (rt->gpu) {
            /* queued; the totals arrive at fetch_losses (the mse count is known now) */
            rt->gpu->loss(rt, last, dl, logits, at(slot, ch->tgt_off));
            if (rt->m->loss != PLAN_LOSS_CROSS_ENTROPY)
                rt->loss_count += B * last->out_elems;
        } else if (rt->m->loss == PLAN_LOSS_CROSS_ENTROPY) {
            int64_t cls = last->L->out.dim[last->L->out.ndim - 1];
            int64_t count = 0, correct = 0;
            rt->loss_sum += k_cross_entropy(dl, logits, (const int32_t *)at(slot, ch->tgt_off), B * last->out_elems / cls,
                                            cls, rt->target_scale, &count, &correct);
            rt->loss_count += count;
            rt->correct += correct;
        } else {
            rt->loss_sum += k_mse(dl, logits, at(slot, ch->tgt_off), B * last->out_elems, rt->target_scale);
            rt->loss_count += B * last->out_elems;
        }
    }
}

/* Under a split schedule, the gradient a layer with weights keeps from
 * BackwardInput for its BackwardWeight, or NULL: its output gradient, or
 * for a transformer block its inner ones (plan_layer_keeps_inner_grads). */
static float *kept_grad(unsigned char *slot, const RtLayerRt *lr)
{
    return lr->dout_off > 0 ? at(slot, lr->dout_off) : NULL;
}

/* Layer i of the chunk, backward: the input gradient (input), the weight
 * gradients (weight), or both, on the backend's table. *gp is the gradient
 * of its output on entry and of its input on return (when input). */
static void backward_layer(RtCtx *rt, RtChunk *ch, unsigned char *slot, unsigned char *link_slot, const RtChunk *lch,
                           int i, int64_t mb, int input, int weight, const float **gp, int *pingp)
{
    RtLayerRt *lr = &ch->lay[i];
    const PlanLayer *L = lr->L;
    const RtLayerOps *ops = &rt->layers[L->kind];
    int inner = plan_layer_keeps_inner_grads(L);
    float *kept = kept_grad(slot, lr);
    RtLayerIO io = {layer_input(ch, slot, i), lay_out(ch, slot, lr), lay_save(ch, slot, lr), NULL, *gp, NULL,
                    inner ? kept : NULL, mb, 0};
    io.mask = block_mask(rt, ch, slot, L); /* a block's padding mask, or NULL */
    if (!input) {
        /* BackwardWeight: from what BackwardInput kept (nothing kept: no weights) */
        if (kept) {
            io.dout = inner ? NULL : kept;
            ops->backward_weight(rt, lr, &io);
            if (rt->xp->progress)
                rt->xp->progress(rt);
        }
        return;
    }
    if (kept && !inner && !weight)
        rt_dev_copy(rt, kept, *gp, rt->B * lr->out_elems * sizeof(float));
    /* where the input gradient goes: the ping-pong work arrays inside the
     * chunk, the previous part's slot on a hand-over, else the chunk's
     * SendGrad area; the model's first layer needs none (its input is
     * data), unless its backward computes it anyway with its inner ones */
    if (i > 0)
        io.din = rt->work[*pingp];
    else if (link_slot)
        io.din = (float *)(link_slot + lch->dout_off);
    else
        io.din = ch->gin;
    if (inner || !(i == 0 && ch->is_first)) {
        ops->backward_input(rt, lr, &io);
        if (rt_wire_bf16(rt)) /* what may travel to the previous stage */
            k_bf16_round_values(io.din, rt->B * lr->in_elems);
    }
    if (weight)
        ops->backward_weight(rt, lr, &io);
    if (rt->xp->progress)
        rt->xp->progress(rt);
    *gp = io.din;
    *pingp ^= 1;
}

void rt_chunk_backward(RtCtx *rt, RtChunk *ch, unsigned char *slot, unsigned char *link_slot, int64_t mb, int input,
                       int weight)
{
    const RtChunk *lch = link_slot ? prev_chunk(rt, ch) : NULL;
    int n = ch->last - ch->first + 1, N = ch->ac;
    const float *g = at(slot, ch->dout_off);
    int ping = 0;
    if (N <= 0) {
        for (int i = n - 1; i >= 0; i--)
            backward_layer(rt, ch, slot, link_slot, lch, i, mb, input, weight, &g, &ping);
        return;
    }
    /* activation checkpointing: the slot holds each segment's input; run
     * the segment forward again into the workspace, then back through it */
    for (int s0 = ((n - 1) / N) * N; s0 >= 0; s0 -= N) {
        int s1 = s0 + N - 1 < n - 1 ? s0 + N - 1 : n - 1;
        for (int i = s0; i <= s1; i++)
            if (ch->lay[i].ws_out >= 0 || ch->lay[i].ws_save >= 0)
                forward_layer(rt, ch, slot, i, mb, 1);
        for (int i = s1; i >= s0; i--)
            backward_layer(rt, ch, slot, link_slot, lch, i, mb, input, weight, &g, &ping);
    }
}
