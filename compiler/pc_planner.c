/* compiler/pc_planner.c: schedules for a compiled model (see planner.h). */
#include "pc_planner.h"
#include "pc_partition.h"
#include "pc_listing.h"
#include "plan_memory.h"
#include "plan_file.h"
#include "plan_profile.h"
#include "base_alloc.h"
#include "base_thread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const SchedGenerator generators[PLAN_SCHED_COUNT] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) gen,
#include "schedules.def"
#undef SCHED_DEF
};

/* The text-schedule place (line, column) of instruction pc on stage, or
 * line 0. */
static void place_of(const SchedPlan *pl, int stage, int pc, int *line, int *col)
{
    *line = *col = 0;
    if (pl->prog && stage >= 0 && stage < pl->stages && pc >= 0 && pc < pl->prog[stage].n && pl->prog[stage].line)
        *line = pl->prog[stage].line[pc], *col = pl->prog[stage].col[pc];
}

/* Reports a failure against the text schedule's action when there is one,
 * else against the schedule setting. */
static void report(DiagList *dl, const PcFront *f, int line, int col, const char *what, const char *msg)
{
    if (line > 0 && f->have_text) {
        diag_error(dl, ((SrcLoc){f->text_src, line, col > 0 ? col : 1}), "%s: %s", what, msg);
    } else {
        SrcLoc at = f->cfg.schedule_loc.line ? f->cfg.schedule_loc : f->model.loc;
        diag_error(dl, at, "schedule %s, %s: %s", plan_schedule_names[f->cfg.schedule], what, msg);
    }
}

static int check_memory(DiagList *dl, const PcFront *f, const PlanSchedule *p);

/* The plan is built on two threads. The main one generates, lowers and
 * verifies the training program. The second starts as soon as the
 * pipeline's shape is known and generates and lowers the evaluation
 * program meanwhile; it verifies it once the main thread has the costs
 * (it reads the spec, parts and costs, and writes only its own eval and
 * eval_sim, which become p's after the join), then writes the plan file
 * when asked to: every byte of it is known once both programs are
 * lowered, so it goes to disk (and is synced) while the training program
 * is verified, and is renamed into place only if that verifies. Nothing
 * here depends on which thread gets where first: the file is written from
 * the finished programs. */
typedef struct Build {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int train_lowered; /* the training program's first lowering is over */
    int train_ok;      /* ... and it succeeded */
    int writing;       /* the second thread is reading the programs into the file */
    int stale;         /* a program was lowered again after the file was begun */
    int costs_ready;   /* p->costs and snap are final (or the plan failed before they were) */
    /* the second thread's work */
    const SchedSpec *spec;
    const PcFront *f;
    PlanSchedule *p;
    PlanSchedule snap; /* what the file needs of *p, without the simulations the threads write meanwhile */
    SchedPlan eval;    /* the second thread's, until the join */
    SchedSim eval_sim;
    int eval_rc;
    char eval_err[1024];
    /* the early write: to out, when not NULL */
    const char *out;
    PlanWriting *w;
} Build;

/* The second thread, its own program done, waits for the training
 * program's first lowering. Called locked. */
static void wait_lowered(Build *b)
{
    while (!b->train_lowered)
        pthread_cond_wait(&b->cv, &b->mu);
}

static void train_lowered(void *ctx, int round)
{
    Build *b = ctx;
    if (round > 0)
        return;
    pthread_mutex_lock(&b->mu);
    b->snap.train = b->p->train; /* final unless relower */
    b->train_lowered = b->train_ok = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* The evaluation program, lowered: its verification needs the costs. */
static void eval_lowered(void *ctx, int round)
{
    Build *b = ctx;
    (void)round;
    pthread_mutex_lock(&b->mu);
    while (!b->costs_ready)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void costs_ready(Build *b)
{
    pthread_mutex_lock(&b->mu);
    b->snap = *b->p;
    b->costs_ready = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Before the training program is lowered again: a file begun from it is
 * stale (and its writer must be done reading it first). */
static void relower(void *ctx)
{
    Build *b = ctx;
    pthread_mutex_lock(&b->mu);
    while (b->writing)
        pthread_cond_wait(&b->cv, &b->mu);
    b->stale = 1;
    pthread_mutex_unlock(&b->mu);
}

/* The second thread: the evaluation program, built and verified whole
 * (it waits for nothing); then the file, from both programs, while the
 * training program is verified. */
static void *build_eval(void *arg)
{
    Build *b = arg;
    PlanSchedule *p = b->p;
    SchedActions ev;
    sched_actions_init(&ev, b->spec->stages);
    SchedBuildHooks h = {eval_lowered, NULL, b};
    b->eval_rc = sched_gen_eval(b->spec, &ev, b->eval_err, sizeof b->eval_err) != 0 ||
                 sched_build_with(&p->eval_parts, &ev, 1, &p->costs, &b->eval, &b->eval_sim, b->eval_err,
                                  sizeof b->eval_err, &h) != 0;
    sched_actions_free(&ev);
    pthread_mutex_lock(&b->mu);
    wait_lowered(b);
    int go = b->out && b->train_ok && !b->stale && !b->eval_rc && b->eval_sim.ok;
    b->writing = go;
    pthread_mutex_unlock(&b->mu);
    if (!go)
        return NULL;
    b->snap.eval = b->eval;
    PlanIR ir = pc_ir_view(b->f, &b->snap);
    char err[4400];
    PlanWriting *w = plan_write_begin(b->out, &ir, err, sizeof err); /* NULL: the caller writes, and says why */
    pthread_mutex_lock(&b->mu);
    b->w = w;
    b->writing = 0;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* The training program is done with (its lowering over, or never to
 * come): the second thread finishes, or the evaluation program is built
 * here when no thread started (build: it is wanted), and its program and
 * simulation become p's (freed with it). */
static void join_eval(Build *b, int threaded, pthread_t th, int build)
{
    pthread_mutex_lock(&b->mu);
    b->train_lowered = 1; /* also when its lowering failed (train_ok stays 0) */
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (threaded)
        pthread_join(th, NULL);
    else if (build)
        build_eval(b);
    b->p->eval = b->eval, b->p->eval_sim = b->eval_sim;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

/* The model's first layer computes no input gradient (its input is data:
 * pipert's backward skips it), unless its backward yields one with its
 * inner gradients anyway (a transformer block); the FLOPs estimate charges
 * its input-gradient half nothing, as a profile measures it. */
static int no_input_grad(const PcFront *f, int j)
{
    return j == 0 && !plan_layer_keeps_inner_grads(&f->model.layer[0]);
}

/* Tensor parallelism (tensor_parallel = T): part k's split layers
 * compute 1/T of their work on each rank (a measured time, taken with T =
 * 1, likewise) and add their collectives over the T ranks, charged as
 * rings over the config's link_bandwidth (free without one): an
 * all-reduce of n floats moves 2 (T-1)/T x 4n bytes, an all-gather (T-1)/T
 * x 4n. A block runs four all-reduces of B x T x D floats, two in its
 * forward and two in its input-gradient half; a column-split linear
 * gathers its output in its forward and sums its input gradient, a
 * row-split one the other way round; a vocabulary-split embedding sums
 * its output in its forward (its lookup does not shrink: each rank writes
 * a row or a zero row for every token). A profile's measured links are
 * between stages, not inside one, so they are not used here. */
static void tp_costs(const PcFront *f, PlanSchedule *p, int k, double rate)
{
    const PlanConfig *c = &f->cfg;
    const PlanPart *q = &f->part.part[k];
    const PlanProfile *prof = c->profile;
    double T = (double)c->tensor_parallel, B = (double)c->micro_batch_size, bw = c->link_bandwidth * 1e9;
    for (int j = q->first; j <= q->last; j++) {
        const PlanLayer *L = &f->model.layer[j];
        if (L->tp <= 1)
            continue;
        double fw = prof ? prof->layer[j].forward : (double)L->flops * B / rate;
        double in = prof ? prof->layer[j].backward_input : no_input_grad(f, j) ? 0 : fw;
        double w = prof ? prof->layer[j].backward_weight : fw;
        double cut = 1 - 1 / T, sum_f = 0, sum_i = 0;
        if (L->kind == PLAN_L_EMBEDDING) {
            if (bw > 0)
                p->cost_f[k] += 2 * (T - 1) / T * 4.0 * B / bw * (double)plan_tensor_elems(&L->out);
            continue;
        }
        if (bw > 0) {
            double ring = (T - 1) / T * 4.0 * B / bw, x = (double)plan_tensor_elems(&L->in);
            double y = (double)plan_tensor_elems(&L->out);
            if (L->kind != PLAN_L_LINEAR)
                sum_f = sum_i = 2 * 2 * ring * x;
            else if (L->split == PLAN_LINEAR_COLUMN)
                sum_f = ring * y, sum_i = 2 * ring * x;
            else
                sum_f = 2 * ring * y, sum_i = ring * x;
            if (no_input_grad(f, j))
                sum_i = 0; /* no input gradient, no collective for it */
        }
        p->cost_f[k] += sum_f - cut * fw;
        p->cost_i[k] += sum_i - cut * in;
        p->cost_w[k] -= cut * w;
        p->cost_b[k] += sum_i - cut * (in + w);
    }
}

/* The verdicts of pc_plan_build_to's threads, reported. */
static int plan_checked(DiagList *dl, const PcFront *f, PlanSchedule *p, int train_rc, const char *err,
                        const Build *b)
{
    const PlanConfig *c = &f->cfg;
    if (train_rc != 0) {
        report(dl, f, p->train.err_line, p->train.err_col, "training program", err);
        return PC_USER_ERROR;
    }
    if (!p->train_sim.ok) {
        int line, col;
        place_of(&p->train, p->train_sim.err_stage, p->train_sim.err_pc, &line, &col);
        report(dl, f, line, col, "training program", p->train_sim.error);
        return PC_USER_ERROR;
    }
    if (!p->train.wgrad_in_order)
        diag_warning(dl, c->schedule_loc.line ? c->schedule_loc : f->model.loc,
                     "weight gradients do not accumulate in micro-batch order (%s): results will differ in the last "
                     "bits from other schedules",
                     p->train.note);
    if (b->eval_rc != 0 || !p->eval_sim.ok) {
        report(dl, f, 0, 0, "evaluation program", b->eval_rc ? b->eval_err : p->eval_sim.error);
        return PC_USER_ERROR;
    }
    p->ok = 1;
    return c->memory_limit > 0 ? check_memory(dl, f, p) : PC_OK;
}

int pc_plan_build(DiagList *dl, const PcFront *f, PlanSchedule *p, SchedActions *acts, int timeline)
{
    return pc_plan_build_to(dl, f, p, acts, timeline, NULL, NULL);
}

int pc_plan_build_to(DiagList *dl, const PcFront *f, PlanSchedule *p, SchedActions *acts, int timeline,
                     const char *out, PlanWriting **written)
{
    if (written)
        *written = NULL;
    memset(p, 0, sizeof *p);
    const PlanConfig *c = &f->cfg;
    const PlanPartition *pt = &f->part;
    int S = pt->stages, V = pt->chunks, P = pt->nparts, M = (int)c->micro_batches;
    p->cost_f = base_calloc(P, sizeof *p->cost_f);
    p->cost_b = base_calloc(P, sizeof *p->cost_b);
    p->cost_i = base_calloc(P, sizeof *p->cost_i);
    p->cost_w = base_calloc(P, sizeof *p->cost_w);
    p->bytes_fwd = base_calloc(P, sizeof *p->bytes_fwd);
    p->buf_bytes = base_calloc(P, sizeof *p->buf_bytes);
    p->tied_stage = base_calloc(S, sizeof *p->tied_stage);
    p->cost_opt = base_calloc(S, sizeof *p->cost_opt);
    double rate = c->device_tflops * 1e12;
    /* a stage splits its backwards when its actions have an I: known
     * before lowering, from the generator's (or the text's) actions */
    char err[1024] = "";
    sched_actions_init(acts, S);
    SchedSpec spec = {S, V, M, c->place, p->cost_f, p->cost_b, p->cost_i, p->cost_w};
    p->eval_parts = (SchedParts){S, V, M, c->place, NULL, 0};
    /* both programs at once (see Build); in line when no thread starts */
    Build b = {.spec = &spec, .f = f, .p = p, .out = written ? out : NULL};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    pthread_t th;
    int threaded = base_thread_start(&th, build_eval, &b) == 0; /* on the other CPU */
    if (f->have_text) {
        for (int s = 0; s < S; s++) {
            const SchedList *from = &f->text.acts.stage[s];
            for (int i = 0; i < from->n; i++)
                sched_push_at(acts, s, (SchedKind)from->a[i].kind, from->a[i].mb, from->a[i].chunk,
                              sched_action_line(from, i), sched_action_col(from, i));
        }
    }
    const PlanProfile *prof = c->profile;
    for (int k = 0; k < P; k++) {
        const PlanPart *q = &pt->part[k];
        if (prof) {
            /* measured (costs = profile(...)): the layers' medians; the
             * first part loads the micro-batch, the last computes the loss */
            double f = 0, i = 0, w = 0;
            for (int j = q->first; j <= q->last; j++)
                f += prof->layer[j].forward, i += prof->layer[j].backward_input, w += prof->layer[j].backward_weight;
            if (k == 0)
                f += prof->load;
            if (k == P - 1)
                f += prof->loss;
            p->cost_f[k] = f, p->cost_b[k] = i + w, p->cost_i[k] = i, p->cost_w[k] = w;
        } else {
            double f1 = (double)q->flops * (double)c->micro_batch_size / rate, i1 = f1;
            if (no_input_grad(f, q->first))
                i1 -= (double)f->model.layer[0].flops * (double)c->micro_batch_size / rate;
            p->cost_f[k] = f1, p->cost_b[k] = i1 + f1, p->cost_i[k] = i1, p->cost_w[k] = f1;
        }
        if (c->tensor_parallel > 1)
            tp_costs(f, p, k, rate);
        if (k + 1 < P && !pt->bnd[k].local) {
            /* precision = bf16: the CPU backend sends the main activation
             * as bf16, half its bytes (the GPU's still sends fp32) */
            p->bytes_fwd[k] = (double)(c->precision == PLAN_PREC_BF16 ? plan_boundary_bf16_bytes(&pt->bnd[k])
                                                                       : pt->bnd[k].bytes);
        }
        /* activation checkpointing: a backward first runs its segments'
         * dropped layers forward again; a split one does it in I and again
         * in W (the workspace is one segment's, reused in between) */
        if (c->activation_checkpoint > 0) {
            PlanChunkLayout l;
            plan_chunk_layout(&f->model, pt, c->micro_batch_size, k, 0, (int)c->activation_checkpoint, &l);
            double again = 0;
            for (int i = 0; i <= q->last - q->first; i++)
                if (l.lay[i].ws_out >= 0 || l.lay[i].ws_save >= 0)
                    again += prof ? prof->layer[q->first + i].forward * rate / (double)c->micro_batch_size
                                  : (double)f->model.layer[q->first + i].flops;
            plan_chunk_layout_free(&l);
            again *= (double)c->micro_batch_size / rate;
            p->cost_b[k] += again, p->cost_i[k] += again, p->cost_w[k] += again;
        }
    }
    /* generators place work by these costs, so they are final before the
     * generator runs; the slot sizes below need the split it chose */
    if (!f->have_text && generators[c->schedule](&spec, acts, err, sizeof err) != 0) {
        diag_error(dl, c->schedule_loc.line ? c->schedule_loc : f->model.loc, "schedule %s: %s",
                   plan_schedule_names[c->schedule], err);
        costs_ready(&b);
        join_eval(&b, threaded, th, 0); /* the second thread: nothing to write */
        return PC_USER_ERROR;
    }
    for (int k = 0; k < P; k++) {
        const PlanPart *q = &pt->part[k];
        int split = 0;
        const SchedList *L = &acts->stage[q->stage];
        for (int i = 0; i < L->n && !split; i++)
            split = L->a[i].kind == SCHED_I;
        /* one activation buffer is one slot of the runtime's layout
         * (plan/plan_memory.c): the bytes it allocates per micro-batch */
        PlanChunkLayout l;
        plan_chunk_layout(&f->model, pt, c->micro_batch_size, k, split, (int)c->activation_checkpoint, &l);
        p->buf_bytes[k] = (double)l.slot_bytes;
        plan_chunk_layout_free(&l);
    }
    for (int t = 0; t < pt->nties; t++) {
        p->tied_stage[pt->stage_of_layer[pt->tie[t].layer]] = 1;
        p->tied_stage[pt->stage_of_layer[pt->tie[t].owner]] = 1;
    }
    p->costs = (SchedCosts){p->cost_f, p->cost_b, p->cost_i, p->cost_w, p->bytes_fwd, c->link_bandwidth * 1e9,
                            p->buf_bytes, !timeline, NULL, 0};
    if (prof) {
        plan_profile_costs(prof, &f->model, pt, p);
        p->costs.link_latency = p->link_latency;
        if (p->link_bandwidth > 0)
            p->costs.link_bandwidth = p->link_bandwidth;
    }
    /* replicas fixed in the plan: ReduceGrads, before the update, is a ring
     * all-reduce of the stage's gradients, 2 (D-1)/D of their bytes over
     * the link and 2 (D-1) latencies; free without a bandwidth (and with
     * data_parallel = auto, unknown until the run) */
    if (c->data_parallel > 1 && p->costs.link_bandwidth > 0) {
        double D = (double)c->data_parallel;
        for (int s = 0; s < S; s++)
            p->cost_opt[s] += 2 * (D - 1) / D * 4.0 * (double)plan_stage_param_elems(&f->model, pt, s) /
                                  p->costs.link_bandwidth +
                              2 * (D - 1) * p->link_latency;
    }
    p->costs.opt = p->cost_opt;
    p->parts = (SchedParts){S, V, M, c->place, p->tied_stage, c->grad_clip > 0};
    costs_ready(&b);
    SchedBuildHooks h = {train_lowered, relower, &b};
    int train_rc = sched_build_with(&p->parts, acts, 0, &p->costs, &p->train, &p->train_sim, err, sizeof err, &h);
    join_eval(&b, threaded, th, 1);
    int rc = plan_checked(dl, f, p, train_rc, err, &b);
    if (b.w && (rc != PC_OK || b.stale)) {
        plan_write_end(b.w, 0, err, sizeof err);
        b.w = NULL;
    }
    if (written)
        *written = b.w;
    return rc;
}


/* The largest per-rank memory of a plan, and its stage. */
static int64_t largest_stage(const PcFront *f, const PlanSchedule *p, int *stage)
{
    PlanIR ir = pc_ir_view(f, p);
    int64_t most = -1;
    for (int s = 0; s < f->part.stages; s++) {
        PlanMemory mem;
        plan_stage_memory(&ir, s, &mem);
        if (mem.total > most)
            most = mem.total, *stage = s;
    }
    return most;
}

/* The largest per-rank need of the same front with cfg changed (and, for
 * another stage count, partitioned again), or -1 when that does not plan;
 * its stage in *stage. */
static int64_t variant_need(const PcFront *f, PlanConfig cfg, int *stage)
{
    DiagList quiet;
    diag_init(&quiet);
    PcFront g = *f;
    cfg.memory_limit = 0;
    g.cfg = cfg;
    if (cfg.schedule != f->cfg.schedule)
        g.have_text = 0;
    int own_part = cfg.stages != f->cfg.stages;
    int64_t need = -1;
    if (own_part && pc_partition(&quiet, &g.model, &g.cfg, &g.part) != 0) {
        diag_free(&quiet);
        return -1; /* that many stages do not partition this model */
    }
    PlanSchedule q;
    SchedActions acts;
    if (pc_plan_build(&quiet, &g, &q, &acts, 0) == PC_OK)
        need = largest_stage(&g, &q, stage);
    sched_actions_free(&acts);
    plan_schedule_free(&q);
    if (own_part)
        plan_partition_free(&g.part);
    diag_free(&quiet);
    return need;
}

/* A limit as the user would write it: "24 GiB", else bytes. */
static const char *limit_text(int64_t v, char *buf, size_t size)
{
    static const char *const unit[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int k = 0; k < 4; k++) {
        int shift = 40 - 10 * k;
        if (v >= ((int64_t)1 << shift) && v % ((int64_t)1 << shift) == 0) {
            snprintf(buf, size, "%lld %s", (long long)(v >> shift), unit[k]);
            return buf;
        }
    }
    snprintf(buf, size, "%lld B", (long long)v);
    return buf;
}

/* A way out, tried: a note saying whether it fits, and the need. Returns
 * whether it fits. */
static int way_out(DiagList *dl, SrcLoc at, const PcFront *f, const PlanConfig *v, const char *what)
{
    int s = 0;
    int64_t need = variant_need(f, *v, &s);
    if (need < 0)
        return 0;
    char b[32];
    base_bytes_text((double)need, b, sizeof b);
    if (need <= f->cfg.memory_limit)
        diag_note(dl, at, "would fit: %s (largest stage: %d, %s)", what, s, b);
    else
        diag_note(dl, at, "not enough: %s (stage %d would still need %s)", what, s, b);
    return need <= f->cfg.memory_limit;
}

/* memory_limit: every stage's memory (plan/plan_memory.h, what each of its
 * ranks allocates) within the limit, or an error per stage over it, with
 * its parts, then the ways out that were tried: activation checkpointing
 * (the segment length that needs least), a schedule with fewer buffers in
 * flight, twice the stages, and all of those together when none alone is
 * enough. */
static int check_memory(DiagList *dl, const PcFront *f, const PlanSchedule *p)
{
    PlanIR ir = pc_ir_view(f, p);
    const PlanConfig *c = &f->cfg;
    SrcLoc at = c->memory_limit_loc, whole = {at.file, 0, 0};
    char lim[32], b[32], parts[512], what[160];
    limit_text(c->memory_limit, lim, sizeof lim);
    int over = 0;
    for (int s = 0; s < f->part.stages; s++) {
        PlanMemory mem;
        int64_t part[6];
        plan_stage_memory(&ir, s, &mem);
        if (mem.total <= c->memory_limit)
            continue;
        plan_memory_parts(&mem, part);
        size_t n = 0;
        for (int k = 0; k < 6 && n < sizeof parts; k++)
            n += snprintf(parts + n, sizeof parts - n, "%s%s %s", k ? ", " : "", plan_memory_part_names[k],
                          base_bytes_text((double)part[k], b, sizeof b));
        diag_error(dl, over ? whole : at, "stage %d needs %lld bytes of memory (%s), over memory_limit = %s", s,
                   (long long)mem.total, base_bytes_text((double)mem.total, b, sizeof b), lim);
        diag_note(dl, whole, "stage %d: %s", s, parts);
        over = 1;
    }
    if (!over)
        return PC_OK;
    if (f->no_ways_out)
        return PC_USER_ERROR;
    int fits = 0;
    PlanConfig all = *c, v;
    /* activation checkpointing: segments of 1, 2, 4, ... layers, the one
     * that needs least (longer segments keep fewer activations but need a
     * larger recompute workspace) */
    int longest = 1;
    for (int k = 0; k < f->part.nparts; k++)
        if (f->part.part[k].last - f->part.part[k].first + 1 > longest)
            longest = f->part.part[k].last - f->part.part[k].first + 1;
    int64_t best = -1, best_ac = 0;
    for (int64_t ac = 1; ac <= longest && ac <= 1024; ac *= 2) {
        v = *c;
        v.activation_checkpoint = ac;
        int s = 0;
        int64_t need = variant_need(f, v, &s);
        if (need >= 0 && (best < 0 || need < best))
            best = need, best_ac = ac;
    }
    if (best_ac > 0 && best_ac != c->activation_checkpoint) {
        v = *c;
        v.activation_checkpoint = all.activation_checkpoint = best_ac;
        snprintf(what, sizeof what, "activation_checkpoint = %lld (recompute in segments of %lld layer%s)",
                 (long long)best_ac, (long long)best_ac, best_ac == 1 ? "" : "s");
        fits |= way_out(dl, whole, f, &v, what);
    }
    static const struct {
        int from, to;
        const char *what;
    } fewer[] = {{PLAN_SCHED_GPIPE, PLAN_SCHED_ONE_F_ONE_B, "schedule = 1f1b instead of gpipe"},
                 {PLAN_SCHED_LOOPED_BFS, PLAN_SCHED_INTERLEAVED, "schedule = interleaved instead of looped-bfs"},
                 {PLAN_SCHED_ZB_H2, PLAN_SCHED_ZB_H1, "schedule = zb-h1 instead of zb-h2"}};
    for (size_t i = 0; i < sizeof fewer / sizeof fewer[0]; i++)
        if ((int)c->schedule == fewer[i].from) {
            v = *c;
            v.schedule = all.schedule = (PlanScheduleKind)fewer[i].to;
            fits |= way_out(dl, whole, f, &v, fewer[i].what);
        }
    if (!f->have_text) {
        v = *c;
        v.stages = all.stages = 2 * c->stages;
        snprintf(what, sizeof what, "stages = %lld (and twice the ranks)", (long long)v.stages);
        fits |= way_out(dl, whole, f, &v, what);
    }
    if (!fits && (all.stages != c->stages || all.schedule != c->schedule ||
                  all.activation_checkpoint != c->activation_checkpoint))
        way_out(dl, whole, f, &all, "all of these together");
    return PC_USER_ERROR;
}

PlanIR pc_ir_view(const PcFront *f, const PlanSchedule *p)
{
    PlanIR ir;
    memset(&ir, 0, sizeof ir);
    ir.model = f->model;
    ir.cfg = f->cfg;
    ir.part = f->part;
    ir.sched = *p;
    return ir;
}
