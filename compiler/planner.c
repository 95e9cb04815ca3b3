/* compiler/planner.c: schedules for a compiled model (see planner.h). */
#include "planner.h"
#include "memory.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const SchedGenerator generators[PC_SCHED_COUNT] = {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) gen,
#include "schedules.def"
#undef PC_SCHEDULE
};

/* The text-schedule line of instruction pc on stage, or 0. */
static int line_of(const SchedPlan *pl, int stage, int pc)
{
    if (pl->prog && stage >= 0 && stage < pl->stages && pc >= 0 && pc < pl->prog[stage].n)
        return pl->prog[stage].line[pc];
    return 0;
}

/* Reports a failure against the text schedule's line when there is one,
 * else against the schedule setting. */
static void report(DiagList *dl, const PcFront *f, int line, const char *what, const char *msg)
{
    if (line > 0 && f->have_text) {
        diag_error(dl, ((SrcLoc){f->text_src, line, 1}), "%s: %s", what, msg);
    } else {
        SrcLoc at = f->cfg.schedule_loc.line ? f->cfg.schedule_loc : f->model.loc;
        diag_error(dl, at, "schedule %s, %s: %s", pc_schedule_names[f->cfg.schedule], what, msg);
    }
}

int pc_plan_build(DiagList *dl, const PcFront *f, PcPlan *p, int timeline)
{
    memset(p, 0, sizeof *p);
    const PcConfig *c = &f->cfg;
    const PcPartition *pt = &f->part;
    int S = pt->stages, V = pt->chunks, P = pt->nparts, M = (int)c->micro_batches;
    p->cost_f = util_calloc(P, sizeof *p->cost_f);
    p->cost_b = util_calloc(P, sizeof *p->cost_b);
    p->cost_i = util_calloc(P, sizeof *p->cost_i);
    p->cost_w = util_calloc(P, sizeof *p->cost_w);
    p->bytes_fwd = util_calloc(P, sizeof *p->bytes_fwd);
    p->buf_bytes = util_calloc(P, sizeof *p->buf_bytes);
    p->tied_stage = util_calloc(S, sizeof *p->tied_stage);
    double rate = c->device_tflops * 1e12;
    /* a stage splits its backwards when its actions have an I: known
     * before lowering, from the generator's (or the text's) actions */
    char err[1024] = "";
    sched_actions_init(&p->acts, S);
    SchedSpec spec = {S, V, M, c->place, p->cost_f, p->cost_b, p->cost_i, p->cost_w};
    if (f->have_text) {
        for (int s = 0; s < S; s++) {
            const SchedList *from = &f->text.acts.stage[s];
            for (int i = 0; i < from->n; i++) {
                sched_push(&p->acts, s, (SchedKind)from->a[i].kind, from->a[i].mb, from->a[i].chunk);
                p->acts.stage[s].a[i].line = from->a[i].line;
            }
        }
    }
    for (int k = 0; k < P; k++) {
        const PcPart *q = &pt->part[k];
        double f1 = (double)q->flops * (double)c->micro_batch_size / rate;
        p->cost_f[k] = f1, p->cost_b[k] = 2 * f1, p->cost_i[k] = f1, p->cost_w[k] = f1;
        if (k + 1 < P && !pt->bnd[k].local)
            p->bytes_fwd[k] = (double)pt->bnd[k].bytes;
        /* activation checkpointing: a backward first runs its segments'
         * dropped layers forward again; a split one does it in I and again
         * in W (the workspace is one segment's, reused in between) */
        if (c->activation_checkpoint > 0) {
            PcChunkLayout l;
            pc_chunk_layout(&f->model, pt, c->micro_batch_size, k, 0, (int)c->activation_checkpoint, &l);
            double again = 0;
            for (int i = 0; i <= q->last - q->first; i++)
                if (l.lay[i].ws_out >= 0 || l.lay[i].ws_save >= 0)
                    again += (double)f->model.layer[q->first + i].flops;
            pc_chunk_layout_free(&l);
            again *= (double)c->micro_batch_size / rate;
            p->cost_b[k] += again, p->cost_i[k] += again, p->cost_w[k] += again;
        }
    }
    /* generators place work by these costs, so they are final before the
     * generator runs; the slot sizes below need the split it chose */
    if (!f->have_text && generators[c->schedule](&spec, &p->acts, err, sizeof err) != 0) {
        diag_error(dl, c->schedule_loc.line ? c->schedule_loc : f->model.loc, "schedule %s: %s",
                   pc_schedule_names[c->schedule], err);
        return PC_USER_ERROR;
    }
    for (int k = 0; k < P; k++) {
        const PcPart *q = &pt->part[k];
        int split = 0;
        const SchedList *L = &p->acts.stage[q->stage];
        for (int i = 0; i < L->n && !split; i++)
            split = L->a[i].kind == SCHED_I;
        /* one activation buffer is one slot of the runtime's layout
         * (compiler/memory.c): the bytes it allocates per micro-batch */
        PcChunkLayout l;
        pc_chunk_layout(&f->model, pt, c->micro_batch_size, k, split, (int)c->activation_checkpoint, &l);
        p->buf_bytes[k] = (double)l.slot_bytes;
        pc_chunk_layout_free(&l);
    }
    for (int t = 0; t < pt->nties; t++) {
        p->tied_stage[pt->stage_of_layer[pt->tie[t].layer]] = 1;
        p->tied_stage[pt->stage_of_layer[pt->tie[t].owner]] = 1;
    }
    p->costs = (SchedCosts){p->cost_f, p->cost_b, p->cost_i, p->cost_w, p->bytes_fwd, c->link_bandwidth * 1e9,
                            p->buf_bytes, !timeline};
    p->parts = (SchedParts){S, V, M, c->place, p->tied_stage, c->grad_clip > 0};
    p->eval_parts = (SchedParts){S, V, M, c->place, NULL, 0};
    if (sched_build(&p->parts, &p->acts, 0, &p->costs, &p->train, &p->train_sim, err, sizeof err) != 0) {
        report(dl, f, p->train.err_line, "training program", err);
        return PC_USER_ERROR;
    }
    if (!p->train_sim.ok) {
        report(dl, f, line_of(&p->train, p->train_sim.err_stage, p->train_sim.err_pc), "training program",
               p->train_sim.error);
        return PC_USER_ERROR;
    }
    if (!p->train.wgrad_in_order)
        diag_warning(dl, c->schedule_loc.line ? c->schedule_loc : f->model.loc,
                     "weight gradients do not accumulate in micro-batch order (%s): results will differ in the last "
                     "bits from other schedules",
                     p->train.note);
    SchedActions ev;
    sched_actions_init(&ev, S);
    sched_gen_eval(&spec, &ev, err, sizeof err);
    int rc = sched_build(&p->eval_parts, &ev, 1, &p->costs, &p->eval, &p->eval_sim, err, sizeof err);
    sched_actions_free(&ev);
    if (rc != 0 || !p->eval_sim.ok) {
        report(dl, f, 0, "evaluation program", rc ? err : p->eval_sim.error);
        return PC_USER_ERROR;
    }
    p->ok = 1;
    return PC_OK;
}

void pc_plan_free(PcPlan *p)
{
    sched_actions_free(&p->acts);
    sched_plan_free(&p->train);
    sched_plan_free(&p->eval);
    if (p->train_sim.stages)
        sched_sim_free(&p->train_sim);
    if (p->eval_sim.stages)
        sched_sim_free(&p->eval_sim);
    free(p->cost_f), free(p->cost_b), free(p->cost_i), free(p->cost_w);
    free(p->bytes_fwd), free(p->buf_bytes), free(p->tied_stage);
    memset(p, 0, sizeof *p);
}
