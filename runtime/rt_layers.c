/* runtime/rt_layers.c: a chunk's layers, forward and backward, over one
 * activation slot. Each layer is one call into kernels/ (k_cpu.h); this
 * file only finds the arrays: a layer reads the previous layer's output
 * (or the slot's input tuple, into which a hand-over first copies the
 * linked slot's output tuple) and writes its own output into the slot,
 * where the backward finds it; only the input gradient of a hand-over's
 * backward is written through the link. With --device cuda (rt->gpu, rt_dev.h) the same arithmetic
 * finds device arrays, and each layer's kernels are the GPU table's. */
#include <string.h>

#include "k_block.h"
#include "k_cpu.h"
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

/* Global sample index of sample b of micro-batch mb, for dropout's keys. */
static uint64_t sample_of(const RtCtx *rt, int64_t mb, int64_t b)
{
    return (uint64_t)(rt_sample_base(rt, mb) + b);
}

/* transformer_block's dropout keys for micro-batch mb (k_block.h) */
static KBlockKeys block_keys(const RtCtx *rt, const PlanLayer *L, int64_t mb)
{
    KBlockKeys k = {!rt->evaluating, rt->c->seed, (uint64_t)rt->step, sample_of(rt, mb, 0), (uint32_t)L->index};
    return k;
}

static void dropout_mask(RtCtx *rt, const RtLayerRt *lr, int64_t mb, uint8_t *mask)
{
    for (int64_t b = 0; b < rt->B; b++)
        k_dropout_mask(mask + b * lr->out_elems, lr->out_elems, (float)lr->L->p, rt->c->seed, (uint64_t)rt->step,
                       sample_of(rt, mb, b), (uint32_t)lr->L->index);
}

/* The chunk whose output tuple a hand-over reads: the previous part's. */
static const RtChunk *prev_chunk(const RtCtx *rt, const RtChunk *ch)
{
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].part == ch->part - 1)
            return &rt->chunk[c];
    return NULL;
}

/* Layer i of the chunk, forward. */
static void forward_layer(RtCtx *rt, RtChunk *ch, unsigned char *slot, int i, int64_t mb)
{
    int64_t B = rt->B;
    {
        RtLayerRt *lr = &ch->lay[i];
        const PlanLayer *L = lr->L;
        const float *in = layer_input(ch, slot, i);
        float *out = lay_out(ch, slot, lr);
        int64_t nin = B * lr->in_elems, nout = B * lr->out_elems;
        if (rt->gpu) {
            RtLayerIO io = {in, out, lay_save(ch, slot, lr), NULL, NULL, NULL, NULL, mb};
            if (L->kind == PLAN_L_TRANSFORMER_BLOCK)
                io.mask = block_mask(rt, ch, slot, L);
            rt->gpu->forward(rt, lr, &io);
            return;
        }
        switch (L->kind) {
        case PLAN_L_LINEAR: {
            int64_t fin = L->in.dim[L->in.ndim - 1];
            k_linear_forward(out, in, lr->w, lr->b, nin / fin, fin, L->nout);
            break;
        }
        case PLAN_L_CONV2D: {
            KConv g = rt_conv_geom(L);
            k_conv2d_forward(out, in, lr->w, lr->b, B, &g, rt->scratch);
            break;
        }
        case PLAN_L_MAXPOOL2D: {
            KPool g = rt_pool_geom(L);
            k_maxpool2d_forward(out, (int32_t *)lay_save(ch, slot, lr), in, B, &g);
            break;
        }
        case PLAN_L_AVGPOOL2D: {
            KPool g = rt_pool_geom(L);
            k_avgpool2d_forward(out, in, B, &g);
            break;
        }
        case PLAN_L_ADAPTIVE_AVGPOOL2D:
            k_adaptive_avgpool2d_forward(out, in, B, L->in.dim[0], L->in.dim[1], L->in.dim[2], L->oh, L->ow);
            break;
        case PLAN_L_RELU: k_relu_forward(out, in, nin); break;
        case PLAN_L_GELU: k_gelu_forward(out, in, nin); break;
        case PLAN_L_TANH: k_tanh_forward(out, in, nin); break;
        case PLAN_L_SIGMOID: k_sigmoid_forward(out, in, nin); break;
        case PLAN_L_FLATTEN: memmove(out, in, nin * sizeof(float)); break;
        case PLAN_L_DROPOUT:
            if (rt->evaluating || L->p == 0) {
                memmove(out, in, nin * sizeof(float));
            } else {
                uint8_t *mask = (uint8_t *)rt->scratch;
                dropout_mask(rt, lr, mb, mask);
                k_dropout_forward(out, in, mask, (float)L->p, nin);
            }
            break;
        case PLAN_L_LAYERNORM: {
            int64_t d = L->in.dim[L->in.ndim - 1], rows = nin / d;
            float *mean = lay_save(ch, slot, lr), *rstd = mean + rows;
            k_layernorm_forward(out, mean, rstd, in, lr->w, lr->b, rows, d, (float)L->eps);
            break;
        }
        case PLAN_L_TRANSFORMER_BLOCK: {
            KBlock g = rt_block_geom(L);
            KBlockKeys keys = block_keys(rt, L, mb);
            k_block_forward(out, lay_save(ch, slot, lr), in, block_mask(rt, ch, slot, L),
                            (const float *const *)lr->w2, B, &g, &keys, rt->scratch);
            break;
        }
        case PLAN_L_EMBEDDING:
            k_embedding_forward(out, (const int32_t *)in, lr->w, lr->b, B, L->in.dim[0], L->dim);
            break;
        default:
            RT_CHECK(rt, 0, "layer %d (%s) has no CPU implementation", L->index, plan_layer_names[L->kind]);
        }
        (void)nout;
    }
}

void rt_chunk_forward(RtCtx *rt, RtChunk *ch, unsigned char *slot, const unsigned char *link_slot, int64_t mb)
{
    int n = ch->last - ch->first + 1;
    int64_t B = rt->B;
    if (link_slot) /* a hand-over: the previous part's output tuple is this part's input tuple */
        rt_dev_copy(rt, slot + ch->in_off, link_slot + prev_chunk(rt, ch)->outt_off, ch->in_bytes);
    for (int i = 0; i < n; i++)
        forward_layer(rt, ch, slot, i, mb);
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

/* Keeps a parameterised layer's output gradient for a later
 * BackwardWeight. */
static int keeps_dout(const RtLayerRt *lr)
{
    return lr->dout_off > 0;
}

static void weight_grads(RtCtx *rt, const RtChunk *ch, RtLayerRt *lr, unsigned char *slot, const float *dout,
                         const float *in, int64_t mb)
{
    const PlanLayer *L = lr->L;
    int64_t B = rt->B, nin = B * lr->in_elems;
    if (rt->gpu) {
        RtLayerIO io = {in, NULL, lay_save(ch, slot, lr), NULL, dout, NULL, NULL, mb};
        rt->gpu->backward_weight(rt, lr, &io);
        return;
    }
    (void)mb;
    switch (L->kind) {
    case PLAN_L_LINEAR: {
        int64_t fin = L->in.dim[L->in.ndim - 1];
        k_linear_backward_weight(lr->gw, lr->gb, dout, in, nin / fin, fin, L->nout);
        break;
    }
    case PLAN_L_CONV2D: {
        KConv g = rt_conv_geom(L);
        k_conv2d_backward_weight(lr->gw, lr->gb, dout, in, B, &g, rt->scratch);
        break;
    }
    case PLAN_L_LAYERNORM: {
        int64_t d = L->in.dim[L->in.ndim - 1], rows = nin / d;
        const float *mean = lay_save(ch, slot, lr), *rstd = mean + rows;
        k_layernorm_backward_weight(lr->gw, lr->gb, dout, in, mean, rstd, rows, d);
        break;
    }
    case PLAN_L_EMBEDDING:
        k_embedding_backward_weight(lr->gw, lr->gb, dout, (const int32_t *)in, B, L->in.dim[0], L->dim);
        break;
    default:
        break;
    }
}

/* Layer i of the chunk, backward: the input gradient (input), the weight
 * gradients (weight), or both. *gp is the gradient of its output on entry
 * and of its input on return (when input). */
static void backward_layer(RtCtx *rt, RtChunk *ch, unsigned char *slot, unsigned char *link_slot, const RtChunk *lch,
                       int i, int64_t mb, int input, int weight, const float **gp, int *pingp)
{
    int64_t B = rt->B;
    const float *g = *gp;
    RtLayerRt *lr = &ch->lay[i];
    const PlanLayer *L = lr->L;
    const float *in = layer_input(ch, slot, i);
    const float *out = lay_out(ch, slot, lr);
    int64_t nin = B * lr->in_elems;
    if (L->kind == PLAN_L_TRANSFORMER_BLOCK) {
        KBlock gm = rt_block_geom(L);
        float *scratch = rt->scratch;
        /* split: the output gradients stay in the slot for the W half;
         * unsplit: behind the kernel's scratch, used at once */
        float *dsaved = keeps_dout(lr) ? at(slot, lr->dout_off) : rt->scratch + k_block_scratch_floats(&gm, B);
        const float *mask = block_mask(rt, ch, slot, L);
        float *din = i > 0 ? rt->work[*pingp] : link_slot ? (float *)(link_slot + lch->dout_off) : ch->gin;
        if (rt->gpu) {
            RtLayerIO io = {in, NULL, lay_save(ch, slot, lr), mask, g, din, dsaved, mb};
            if (input)
                rt->gpu->backward_input(rt, lr, &io);
            if (weight)
                rt->gpu->backward_weight(rt, lr, &io);
        } else {
            KBlockKeys keys = block_keys(rt, L, mb);
            if (input)
                k_block_backward_input(din, dsaved, g, in, lay_save(ch, slot, lr), mask, (const float *const *)lr->w2,
                                       B, &gm, &keys, scratch);
            if (weight)
                k_block_backward_weight(lr->g2, dsaved, in, lay_save(ch, slot, lr), B, &gm, scratch);
        }
        if (input) {
            *gp = din;
            *pingp ^= 1;
        }
        return;
    }
    if (!input) {
        /* BackwardWeight: the output gradient was kept by BackwardInput */
        if (keeps_dout(lr))
            weight_grads(rt, ch, lr, slot, at(slot, lr->dout_off), in, mb);
        return;
    }
    if (keeps_dout(lr) && !weight)
        rt_dev_copy(rt, at(slot, lr->dout_off), g, B * lr->out_elems * sizeof(float));
    /* where the input gradient goes */
    float *din;
    int need_din = !(i == 0 && ch->is_first);
    if (i > 0)
        din = rt->work[*pingp];
    else if (link_slot)
        din = (float *)(link_slot + lch->dout_off);
    else
        din = ch->gin;
    if (need_din && rt->gpu) {
        RtLayerIO io = {in, (float *)out, lay_save(ch, slot, lr), NULL, g, din, NULL, mb};
        rt->gpu->backward_input(rt, lr, &io);
    } else if (need_din) {
        switch (L->kind) {
        case PLAN_L_LINEAR: {
            int64_t fin = L->in.dim[L->in.ndim - 1];
            k_linear_backward_input(din, g, lr->w, nin / fin, fin, L->nout);
            break;
        }
        case PLAN_L_CONV2D: {
            KConv gm = rt_conv_geom(L);
            k_conv2d_backward_input(din, g, lr->w, B, &gm, rt->scratch);
            break;
        }
        case PLAN_L_MAXPOOL2D: {
            KPool gm = rt_pool_geom(L);
            k_maxpool2d_backward(din, g, (const int32_t *)lay_save(ch, slot, lr), B, &gm);
            break;
        }
        case PLAN_L_AVGPOOL2D: {
            KPool gm = rt_pool_geom(L);
            k_avgpool2d_backward(din, g, B, &gm);
            break;
        }
        case PLAN_L_ADAPTIVE_AVGPOOL2D:
            k_adaptive_avgpool2d_backward(din, g, B, L->in.dim[0], L->in.dim[1], L->in.dim[2], L->oh, L->ow);
            break;
        case PLAN_L_RELU: k_relu_backward(din, g, in, nin); break;
        case PLAN_L_GELU: k_gelu_backward(din, g, in, nin); break;
        case PLAN_L_TANH: k_tanh_backward(din, g, out, nin); break;
        case PLAN_L_SIGMOID: k_sigmoid_backward(din, g, out, nin); break;
        case PLAN_L_FLATTEN: memmove(din, g, nin * sizeof(float)); break;
        case PLAN_L_DROPOUT:
            if (L->p == 0) {
                memmove(din, g, nin * sizeof(float));
            } else {
                uint8_t *mask = (uint8_t *)rt->scratch;
                dropout_mask(rt, lr, mb, mask);
                k_dropout_backward(din, g, mask, (float)L->p, nin);
            }
            break;
        case PLAN_L_LAYERNORM: {
            int64_t d = L->in.dim[L->in.ndim - 1], rows = nin / d;
            const float *mean = lay_save(ch, slot, lr), *rstd = mean + rows;
            k_layernorm_backward_input(din, g, in, lr->w, mean, rstd, rows, d);
            break;
        }
        default:
            RT_CHECK(rt, 0, "layer %d (%s) has no CPU backward", L->index, plan_layer_names[L->kind]);
        }
    }
    if (weight)
        weight_grads(rt, ch, lr, slot, g, in, mb);
    *gp = din;
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
                forward_layer(rt, ch, slot, i, mb);
        for (int i = s1; i >= s0; i--)
            backward_layer(rt, ch, slot, link_slot, lch, i, mb, input, weight, &g, &ping);
    }
}
