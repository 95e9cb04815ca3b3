/* runtime/rt_exec.c: the interpreter. One pass over a stage's program runs
 * a training step (or an evaluation batch); the switch covers every
 * instruction of schedules/ops.def with no default, so a missing case
 * fails the build (-Werror=switch); an opcode out of range never gets
 * here, the plan reader (plan/plan_file.c) refuses it.
 *
 * Transfers go through the transport (xport.h; MPI today): receives are
 * posted where the program posts them and waited for by the compute that
 * needs their data; sends are waited for before their memory is written
 * again. Peers are stages of this rank's data-parallel lane.
 *
 * With --device cuda (rt->gpu, rt_dev.h) the slots are device memory: a
 * load fills a host staging buffer that is then copied in, the transport
 * moves device buffers, and the losses and the gradient norm come back to
 * the host once per pass. */
#include <math.h>
#include <string.h>

#include "k_cpu.h"
#include "rt.h"
#include "rt_profile.h"
#include "rt_dev.h"
#include "rt_optim.h"
#include "rt_trace.h"
#include "rt_zero.h"

int64_t rt_sample_base(const RtCtx *rt, int64_t mb)
{
    /* this lane's share of the global batch, then the micro-batch */
    return rt->dpi * rt->M * rt->B + mb * rt->B;
}

static void wait_req(RtCtx *rt, XportReq *r)
{
    rt->xp->wait(rt, r);
}

static unsigned char *slot_of(RtChunk *ch, int buf)
{
    return ch->slots + (int64_t)buf * ch->slot_bytes;
}

/* Loads micro-batch mb into a slot: inputs for the first part, targets for
 * the last. In evaluation, positions past the end of the set load sample 0
 * with every target ignored. */
static void load(RtCtx *rt, RtChunk *ch, unsigned char *slot, int64_t mb)
{
    RtData *d = rt->evaluating ? &rt->eval : &rt->data;
    const PlanModel *m = rt->m;
    int64_t batch = rt->global_batch;
    for (int64_t b = 0; b < rt->B; b++) {
        int64_t pos = rt_sample_base(rt, mb) + b, idx;
        int past_end = 0;
        if (rt->evaluating) {
            int64_t g = rt->eval_step_base + pos;
            past_end = g >= d->n;
            idx = past_end ? 0 : g;
        } else {
            idx = rt_data_index(d, rt->c->shuffle, rt->step, pos, batch);
        }
        if (ch->is_first) {
            unsigned char *dst = slot + ch->in_off;
            for (int k = 0; k < m->ninputs; k++) {
                int64_t e = plan_tensor_elems(&m->input[k].t);
                rt_data_input(d, idx, k, dst + b * e * 4);
                dst += rt->B * e * 4;
            }
        }
        if (ch->is_last) {
            int64_t e = plan_tensor_elems(&m->target[0].t);
            void *dst = slot + ch->tgt_off + b * e * 4;
            rt_data_target(d, idx, dst);
            if (past_end && m->loss == PLAN_LOSS_CROSS_ENTROPY)
                for (int64_t j = 0; j < (e ? e : 1); j++)
                    ((int32_t *)dst)[j] = -1;
        }
    }
}

static RtChunk *chunk_of(RtCtx *rt, int c)
{
    RT_CHECK(rt, c >= 0 && c < rt->chunks, "chunk %d out of range", c);
    return &rt->chunk[c];
}

/* The slot of the previous part on this stage, for a hand-over. */
static unsigned char *link_slot(RtCtx *rt, RtChunk *ch, int link)
{
    if (link < 0)
        return NULL;
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].part == ch->part - 1) {
            RT_CHECK(rt, link < rt->chunk[c].nbuf, "link %d out of range", link);
            return slot_of(&rt->chunk[c], link);
        }
    RT_CHECK(rt, 0, "link with no previous part on this stage");
    return NULL;
}

/* Sums the two halves of each tied weight's gradient, in one fixed order:
 * owner, then the copy, on every stage that holds either. */
static void reduce_tied(RtCtx *rt)
{
    for (int t = 0; t < rt->ir.part.nties; t++) {
        const PlanTie *tie = &rt->ir.part.tie[t];
        RtParam *own = NULL, *copy = NULL;
        for (int i = 0; i < rt->nparam; i++) {
            RtParam *q = &rt->param[i];
            if (q->layer == tie->owner && q->k == 0)
                own = q;
            if (q->layer == tie->layer && q->k < 0)
                copy = q;
        }
        if (own && copy && rt->gpu) {
            rt->gpu->add_tied(rt, own, copy);
        } else if (own && copy) {
            for (int64_t i = 0; i < own->n; i++)
                own->g[i] += copy->g[i];
            memcpy(copy->g, own->g, own->n * sizeof(float));
        } else if (own || copy) {
            /* the other half is on the other stage: two contributions, and
             * float addition is commutative, so both get the same bits */
            RtParam *q = own ? own : copy;
            RT_CHECK(rt, rt->tied_comm != MPI_COMM_NULL, "tied weight without a tied communicator");
            rt->xp->allreduce_f32(rt, rt->gpu ? q->dg : q->g, q->n, XPORT_TIED);
        }
    }
}

/* Before any weight moves: is this step's loss or any gradient NaN or
 * Inf? Every stage of the lane learns the first stage where one appeared
 * (a vote over the lane), so all stop together, with no update applied. */
static int nonfinite_stage(RtCtx *rt, double local_ss)
{
    int bad = !isfinite(local_ss);
    for (int c = 0; c < rt->chunks; c++)
        if (rt->chunk[c].is_last && !isfinite(rt->loss_sum))
            bad = 1;
    double *vote = rt->vote;
    memset(vote, 0, rt->stages * sizeof *vote);
    vote[rt->stage] = bad;
    rt->xp->allreduce_f64(rt, vote, rt->stages, XPORT_LANE);
    if (rt->tp > 1) /* a split gradient is each tp rank's own: they vote together */
        rt->xp->allreduce_f64(rt, vote, rt->stages, XPORT_TP);
    for (int s = 0; s < rt->stages; s++)
        if (vote[s] != 0)
            return s;
    return -1;
}

/* After a step, with replicas: every replica of a stage takes replica 0's
 * buffers (batchnorm2d's running statistics), as DDP's broadcast_buffers
 * does, so evaluation, checkpoints and the next step see one set. Each
 * replica updated its own from its own micro-batches during the step;
 * those of replicas 1.. are dropped. */
static void sync_buffers(RtCtx *rt)
{
    if (rt->dp <= 1 || rt->buf_bytes == 0)
        return;
    if (rt->gpu)
        rt->gpu->buffers(rt, 0);
    RT_MPI(rt, MPI_Bcast(rt->bufs, (int)rt->buf_bytes, MPI_BYTE, 0, rt->dp_comm));
    if (rt->gpu)
        rt->gpu->buffers(rt, 1);
}

static void optimizer_step(RtCtx *rt)
{
    double factor = 1, ss = 0;
    if (rt->gpu) {
        rt->gpu->fetch_losses(rt); /* the vote below reads rt->loss_sum */
        ss = rt->gpu->grad_sumsq(rt);
    } else if (rt->zpiece) {
        ss = rt_zero_sumsq(rt); /* this replica holds only its shard's sums */
    } else {
        for (int i = 0; i < rt->nparam; i++)
            if (rt->param[i].counts_in_norm)
                ss += rt_sumsq(rt->param[i].g, rt->param[i].n);
    }
    rt->bad_stage = nonfinite_stage(rt, ss);
    if (rt->bad_stage >= 0)
        return; /* pipert stops; the weights keep the last finite step */
    /* the global norm, for the log whether or not it clips: one double over
     * the lane (replicas hold the same, already summed, gradients) */
    rt->xp->allreduce_f64(rt, &ss, 1, XPORT_LANE);
    /* with tensor parallelism the lane holds one tp rank's shares: the
     * same two lane sums on every stage, added over the tp ranks */
    if (rt->tp > 1)
        rt->xp->allreduce_f64(rt, &ss, 1, XPORT_TP);
    rt->grad_norm = sqrt(ss);
    if (rt->c->grad_clip > 0)
        factor = rt_clip_factor(rt->grad_norm, rt->c->grad_clip);
    double lr = rt_lr_at(rt->c, rt->step);
    sync_buffers(rt);
    if (rt->gpu) {
        rt->gpu->update(rt, factor, lr);
        return;
    }
    if (rt->zpiece) {
        rt_zero_update(rt, factor, lr);
    } else {
        for (int i = 0; i < rt->nparam; i++) {
            RtParam *q = &rt->param[i];
            if (factor < 1)
                rt_scale(q->g, q->n, (float)factor);
            rt_optim_step(rt->c, q->p, q->g, q->state, q->n, rt->step + 1, lr);
        }
    }
    memset(rt->grads, 0, rt_zero_room(rt, rt->nparams_total) * sizeof(float));
}

void rt_run_program(RtCtx *rt, const SchedProgram *prog, int eval)
{
    rt->evaluating = eval;
    rt->run++; /* the weights may have changed since the last run: packed copies are stale */
    rt_cpu_pack_weights(rt, eval);
    int peer_rank;
    RtTrace *trace = eval ? NULL : rt->trace;
    for (int pc = 0; pc < prog->n; pc++) {
        const SchedInstr *in = &prog->ins[pc];
        rt->pc = pc;
        rt->in = in;
        double t0 = 0;
        int64_t bytes = 0, halves; /* bytes on the wire (trace); floats sent as bf16 */
        if (trace || (rt->prof && !eval)) {
            if (rt->prof)
                rt_profile_instr_begin(rt);
            t0 = MPI_Wtime();
            rt->waited = 0;
        }
        unsigned o = sched_op_operands[in->op];
        RtChunk *ch = (o & SCHED_C) ? chunk_of(rt, in->chunk) : NULL;
        unsigned char *slot = NULL;
        if (ch && (o & SCHED_B) && in->op != SCHED_SendGrad) {
            RT_CHECK(rt, in->buf >= 0 && in->buf < ch->nbuf, "buffer %d out of range", in->buf);
            slot = slot_of(ch, in->buf);
        }
        peer_rank = (o & SCHED_P) ? (int)in->peer : -1;
        switch ((SchedOp)in->op) {
        case SCHED_LoadMicroBatch:
            wait_req(rt, &ch->out_req[in->buf]);
            if (rt->gpu) {
                load(rt, ch, rt->gpu->load_begin(rt, ch), in->mb);
                rt->gpu->load_end(rt, ch, slot);
            } else {
                load(rt, ch, slot, in->mb);
            }
            break;
        case SCHED_RecvActivation:
            wait_req(rt, &ch->out_req[in->buf]);
            halves = rt_wire_bf16(rt) ? rt->B * ch->lay[0].in_elems : 0;
            rt->xp->irecv(rt, slot + ch->in_off, ch->in_bytes, halves, peer_rank, XPORT_TAG_ACTIVATION,
                          &ch->in_req[in->buf]);
            bytes = ch->in_bytes - 2 * halves;
            break;
        case SCHED_RecvGrad:
            bytes = rt->B * ch->lay[ch->last - ch->first].out_elems * 4;
            halves = rt_wire_bf16(rt) ? bytes / 4 : 0;
            rt->xp->irecv(rt, slot + ch->dout_off, bytes, halves, peer_rank, XPORT_TAG_GRAD, &ch->dout_req[in->buf]);
            bytes -= 2 * halves;
            break;
        case SCHED_SendActivation:
            halves = rt_wire_bf16(rt) ? rt->B * ch->lay[ch->last - ch->first].out_elems : 0;
            rt->xp->isend(rt, slot + ch->outt_off, ch->outt_bytes, halves, peer_rank, XPORT_TAG_ACTIVATION,
                          &ch->out_req[in->buf]);
            bytes = ch->outt_bytes - 2 * halves;
            break;
        case SCHED_SendGrad:
            halves = rt_wire_bf16(rt) ? ch->gin_elems : 0;
            rt->xp->isend(rt, ch->gin, ch->gin_elems * 4, halves, peer_rank, XPORT_TAG_GRAD, &ch->gin_req[ch->gin_at]);
            bytes = ch->gin_elems * 4 - 2 * halves;
            break;
        case SCHED_Forward:
            wait_req(rt, &ch->in_req[in->buf]);
            wait_req(rt, &ch->out_req[in->buf]);
            rt_chunk_forward(rt, ch, slot, link_slot(rt, ch, in->link), in->mb);
            break;
        case SCHED_Backward:
        case SCHED_BackwardInput:
        case SCHED_BackwardWeight:
            wait_req(rt, &ch->dout_req[in->buf]);
            if (in->op != SCHED_BackwardWeight) {
                /* the next input-gradient area: free once its last SendGrad has gone */
                ch->gin_at = (ch->gin_at + 1) % ch->gin_n;
                ch->gin = ch->gin_area[ch->gin_at];
                wait_req(rt, &ch->gin_req[ch->gin_at]);
            }
            rt_chunk_backward(rt, ch, slot, link_slot(rt, ch, in->link), in->mb, in->op != SCHED_BackwardWeight,
                              in->op != SCHED_BackwardInput);
            break;
        case SCHED_ReduceTiedGrads:
            reduce_tied(rt);
            break;
        case SCHED_ReduceGrads:
            if (rt->zpiece)
                rt_zero_reduce(rt); /* zero = 1: each replica gets its shard's sum */
            else if (rt->dp > 1)
                rt->xp->allreduce_f32(rt, rt->gpu ? rt->dgrads : rt->grads, rt->nparams_total, XPORT_REPLICAS);
            bytes = rt->dp > 1 ? rt->nparams_total * 4 : 0;
            break;
        case SCHED_OptimizerStep:
            optimizer_step(rt);
            break;
        case SCHED_NOPS: /* a count, not an opcode: plan_file.c refuses it and anything above */
            RT_CHECK(rt, 0, "unknown opcode %u", in->op);
        }
        if ((trace || (rt->prof && !eval)) && rt->gpu)
            rt->gpu->sync(rt); /* the box ends when the device's work does */
        if (rt->prof && !eval)
            rt_profile_instr_end(rt, in, MPI_Wtime() - t0 - rt->waited);
        if (trace)
            rt_trace_add(trace, pc, rt->step + 1, t0 + rt->waited, MPI_Wtime(), bytes);
    }
    /* every send of this pass has gone before the next pass writes again */
    for (int c = 0; c < rt->chunks; c++) {
        RtChunk *ch = &rt->chunk[c];
        for (int k = 0; k < ch->gin_n; k++)
            wait_req(rt, &ch->gin_req[k]);
        for (int b = 0; b < ch->nbuf; b++)
            wait_req(rt, &ch->out_req[b]);
    }
    /* an evaluation pass has no OptimizerStep: its losses come back here */
    if (rt->gpu)
        rt->gpu->fetch_losses(rt);
    rt->in = NULL;
}
