/* runtime/rt_profile.c: pipert --profile (rt_profile.h). */
#include "rt_profile.h"

#include <stdlib.h>
#include <string.h>

#include "plan_memory.h"
#include "plan_profile.h"
#include "rt_dev.h"

#define WARMUP_STEPS 1
#define LINK_SMALL_ROUNDS 20
#define LINK_LARGE_ROUNDS 5

enum { F, I, W, KINDS };

/* A layer's samples of one kind: at most cap (the steps after the warm-up
 * times the forwards or backwards a step runs of it, recomputes included). */
typedef struct Samples {
    double *t;
    int64_t n, cap;
} Samples;

struct RtProfile {
    const RtLayerOps *real;               /* the backend's table */
    RtLayerOps wrap[PLAN_L_COUNT];        /* ours, which time the real ones */
    int64_t steps, first;                 /* steps profiled, and the step the run starts at */
    Samples *lay;                         /* [nlayers][KINDS]: this rank's layers only */
    Samples loss, load, opt, step;
    double fwd_in_instr;                  /* layer forwards timed since the instruction began */
    int64_t step_params;                  /* parameter elements this rank's OptimizerStep updates */
    double link_latency, link_bandwidth;  /* to the next stage (this rank sends), 0: none */
};

static int recording(const RtCtx *rt)
{
    return !rt->evaluating && rt->step >= rt->prof->first + WARMUP_STEPS;
}

static double now(RtCtx *rt)
{
    if (rt->gpu)
        rt->gpu->sync(rt);
    return MPI_Wtime();
}

static void add(Samples *s, double t)
{
    if (s->n < s->cap)
        s->t[s->n++] = t;
}

/* The index of a top-level layer of the model, or -1 (a block's inner one) */
static int top_index(const RtCtx *rt, const RtLayerRt *lr)
{
    const PlanLayer *L = lr->L;
    return L >= rt->m->layer && L < rt->m->layer + rt->m->nlayers ? (int)(L - rt->m->layer) : -1;
}

static void timed(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io, int kind)
{
    RtProfile *p = rt->prof;
    const RtLayerOps *ops = &p->real[lr->L->kind];
    void (*fn)(RtCtx *, const RtLayerRt *, const RtLayerIO *) =
        kind == F ? ops->forward : kind == I ? ops->backward_input : ops->backward_weight;
    int i = top_index(rt, lr);
    if (i < 0 || !recording(rt)) {
        fn(rt, lr, io);
        return;
    }
    double t0 = now(rt);
    fn(rt, lr, io);
    double dt = now(rt) - t0;
    add(&p->lay[(int64_t)i * KINDS + kind], dt);
    if (kind == F)
        p->fwd_in_instr += dt;
}

static void w_forward(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    timed(rt, lr, io, F);
}

static void w_backward_input(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    timed(rt, lr, io, I);
}

static void w_backward_weight(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io)
{
    timed(rt, lr, io, W);
}

static void alloc_samples(RtCtx *rt, Samples *s, int64_t cap)
{
    s->cap = cap > 0 ? cap : 1;
    s->t = rt_alloc(rt, (size_t)s->cap * sizeof(double), "profile samples");
    s->n = 0;
}

/* Ping-pong with the next stage (this rank sends its chunk 0's output
 * tuple and gets a gradient back) or the previous one (it answers), through
 * the run's transport, buffers and requests: the transfers of a step.
 * bytes: what goes each way (a small message), or -1: the real tuple and
 * gradient. Returns the median one-way time. */
static double round_trip(RtCtx *rt, RtChunk *ch, int peer, int64_t bytes, int first, int rounds)
{
    unsigned char *slot = ch->slots;
    int64_t grad = ch->is_last ? 0 : rt->B * ch->lay[ch->last - ch->first].out_elems * 4;
    double *t = rt_alloc(rt, (size_t)rounds * sizeof(double), "profile link rounds");
    for (int r = 0; r < rounds; r++) {
        double t0 = now(rt);
        if (first) {
            rt->xp->isend(rt, slot + ch->outt_off, bytes >= 0 ? bytes : ch->outt_bytes, 0, peer, XPORT_TAG_ACTIVATION,
                          &ch->out_req[0]);
            rt->xp->wait(rt, &ch->out_req[0]);
            rt->xp->irecv(rt, slot + ch->dout_off, bytes >= 0 ? bytes : grad, 0, peer, XPORT_TAG_GRAD, &ch->dout_req[0]);
            rt->xp->wait(rt, &ch->dout_req[0]);
        } else {
            rt->xp->irecv(rt, slot + ch->in_off, bytes >= 0 ? bytes : ch->in_bytes, 0, peer, XPORT_TAG_ACTIVATION,
                          &ch->in_req[0]);
            rt->xp->wait(rt, &ch->in_req[0]);
            rt->xp->isend(rt, ch->gin, bytes >= 0 ? bytes : ch->gin_elems * 4, 0, peer, XPORT_TAG_GRAD,
                          &ch->gin_req[ch->gin_at]);
            rt->xp->wait(rt, &ch->gin_req[ch->gin_at]);
        }
        t[r] = (now(rt) - t0) / 2;
    }
    for (int i = 1; i < rounds; i++)
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    double med = t[rounds / 2];
    free(t);
    return med;
}

static void measure_links(RtCtx *rt, RtProfile *p)
{
    RtChunk *ch = &rt->chunk[0];
    /* the pair with the previous stage first, then with the next: a chain,
     * so no two pairs wait on each other. The small message is 4 bytes,
     * which every buffer holds */
    if (rt->stage > 0 && !ch->is_first) {
        round_trip(rt, ch, rt->stage - 1, 4, 0, LINK_SMALL_ROUNDS);
        round_trip(rt, ch, rt->stage - 1, -1, 0, LINK_LARGE_ROUNDS);
    }
    if (rt->stage + 1 < rt->stages && !ch->is_last) {
        /* on average half the tuple and half the gradient each way */
        double bytes = (ch->outt_bytes + rt->B * ch->lay[ch->last - ch->first].out_elems * 4) / 2.0;
        double lat = round_trip(rt, ch, rt->stage + 1, 4, 1, LINK_SMALL_ROUNDS);
        double big = round_trip(rt, ch, rt->stage + 1, -1, 1, LINK_LARGE_ROUNDS);
        p->link_latency = lat;
        p->link_bandwidth = big > lat ? bytes / (big - lat) : bytes / big;
    }
}

RtProfile *rt_profile_open(RtCtx *rt, int64_t steps)
{
    RtProfile *p = rt_alloc(rt, sizeof *p, "profile");
    memset(p, 0, sizeof *p);
    p->real = rt->layers;
    for (int k = 0; k < PLAN_L_COUNT; k++) {
        p->wrap[k] = p->real[k];
        p->wrap[k].forward = w_forward;
        p->wrap[k].backward_input = w_backward_input;
        p->wrap[k].backward_weight = w_backward_weight;
    }
    p->steps = steps;
    p->first = rt->step;
    int64_t rec = steps > WARMUP_STEPS ? steps - WARMUP_STEPS : 0;
    int64_t n = rt->m->nlayers;
    p->lay = rt_alloc(rt, (size_t)(n * KINDS) * sizeof *p->lay, "profile layers");
    memset(p->lay, 0, (size_t)(n * KINDS) * sizeof *p->lay);
    /* a layer runs forward once per micro-batch, and once more under
     * activation checkpointing; its backward halves once each */
    for (int c = 0; c < rt->chunks; c++)
        for (int i = rt->chunk[c].first; i <= rt->chunk[c].last; i++)
            for (int k = 0; k < KINDS; k++)
                alloc_samples(rt, &p->lay[(int64_t)i * KINDS + k], rec * rt->M * (k == F ? 2 : 1));
    alloc_samples(rt, &p->loss, rec * rt->M);
    alloc_samples(rt, &p->load, rec * rt->M * 2);
    alloc_samples(rt, &p->opt, rec);
    alloc_samples(rt, &p->step, rec);
    for (int i = 0; i < rt->nparam; i++)
        p->step_params += rt->param[i].n;
    rt->prof = p;
    measure_links(rt, p);
    rt->layers = p->wrap;
    return p;
}

void rt_profile_instr_begin(RtCtx *rt)
{
    if (rt->gpu && recording(rt))
        rt->gpu->sync(rt);
    rt->prof->fwd_in_instr = 0;
}

void rt_profile_instr_end(RtCtx *rt, const SchedInstr *in, double seconds)
{
    RtProfile *p = rt->prof;
    if (!recording(rt))
        return;
    switch ((SchedOp)in->op) {
    case SCHED_Forward:
        /* what the last part's Forward spent beside its layers: the loss */
        if (in->chunk < rt->chunks && rt->chunk[in->chunk].is_last)
            add(&p->loss, seconds > p->fwd_in_instr ? seconds - p->fwd_in_instr : 0);
        break;
    case SCHED_LoadMicroBatch: add(&p->load, seconds); break;
    case SCHED_OptimizerStep: add(&p->opt, seconds); break;
    default: break;
    }
}

void rt_profile_step(RtCtx *rt, double seconds)
{
    if (rt->prof && recording(rt))
        add(&rt->prof->step, seconds);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(Samples *s)
{
    if (s->n == 0)
        return 0;
    qsort(s->t, (size_t)s->n, sizeof(double), cmp_double);
    return s->n % 2 ? s->t[s->n / 2] : (s->t[s->n / 2 - 1] + s->t[s->n / 2]) / 2;
}

/* The CPU's model name, from /proc/cpuinfo, or "unknown". */
static void cpu_name(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                snprintf(out, size, "%.*s", (int)strcspn(v, "\n"), v);
            }
            break;
        }
    fclose(f);
}

int rt_profile_close(RtCtx *rt, const char *path, char *err, size_t errsize)
{
    RtProfile *p = rt->prof;
    int64_t n = rt->m->nlayers;
    /* one array: per layer f, i, w, samples; then loss, load, optimizer
     * seconds, optimizer parameters, step; then per stage latency and
     * bandwidth. Lane 0 contributes, every other value is 0, and the sum
     * over the world gathers it (each entry has one owner, or sums that
     * mean what they say: the optimizer's seconds and parameters) */
    int64_t S = rt->stages, len = n * 4 + 5 + 2 * S;
    double *v = rt_alloc(rt, (size_t)len * sizeof(double), "profile gather");
    memset(v, 0, (size_t)len * sizeof(double));
    if (rt->dpi == 0) {
        for (int c = 0; c < rt->chunks; c++)
            for (int i = rt->chunk[c].first; i <= rt->chunk[c].last; i++) {
                for (int k = 0; k < KINDS; k++)
                    v[i * 4 + k] = median(&p->lay[(int64_t)i * KINDS + k]);
                v[i * 4 + 3] = (double)p->lay[(int64_t)i * KINDS + F].n;
            }
        double *t = v + n * 4;
        t[0] = median(&p->loss);
        t[1] = median(&p->load);
        t[2] = median(&p->opt);
        t[3] = p->opt.n ? (double)p->step_params : 0;
        t[4] = rt->rank == 0 ? median(&p->step) : 0;
        v[n * 4 + 5 + 2 * rt->stage] = p->link_latency;
        v[n * 4 + 5 + 2 * rt->stage + 1] = p->link_bandwidth;
    }
    RT_MPI(rt, MPI_Reduce(rt->rank == 0 ? MPI_IN_PLACE : v, v, (int)len, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD));
    int rc = 0;
    if (rt->rank == 0) {
        PlanProfile out;
        memset(&out, 0, sizeof out);
        snprintf(out.model, sizeof out.model, "%s", rt->m->name);
        out.model_hash = plan_model_hash(rt->m);
        out.micro_batch_size = rt->B;
        out.micro_batches = rt->M;
        snprintf(out.backend, sizeof out.backend, "%s", rt->gpu ? "cuda" : "cpu");
        if (rt->gpu)
            snprintf(out.device, sizeof out.device, "cuda device %d", 0);
        else
            cpu_name(out.device, sizeof out.device);
        out.threads = 1; /* pipert sets one BLAS thread per rank */
        out.steps = p->steps;
        out.warmup_steps = WARMUP_STEPS;
        out.nlayers = (int)n;
        out.layer = rt_alloc(rt, (size_t)(n > 0 ? n : 1) * sizeof *out.layer, "profile layers out");
        for (int64_t i = 0; i < n; i++) {
            PlanProfileLayer *q = &out.layer[i];
            q->forward = v[i * 4], q->backward_input = v[i * 4 + 1], q->backward_weight = v[i * 4 + 2];
            q->samples = (int64_t)v[i * 4 + 3];
            q->activation_bytes = rt->m->layer[i].act_bytes * rt->B;
            q->saved_bytes = plan_layer_state_bytes(&rt->m->layer[i]) * rt->B;
        }
        const double *t = v + n * 4;
        out.loss = t[0], out.load = t[1];
        out.optimizer_per_param = t[3] > 0 ? t[2] / t[3] : 0;
        out.step = t[4];
        out.nlinks = (int)(S - 1);
        out.link = rt_alloc(rt, (size_t)(S > 1 ? S - 1 : 1) * sizeof *out.link, "profile links out");
        for (int s = 0; s + 1 < S; s++) {
            out.link[s].from_stage = s, out.link[s].to_stage = s + 1;
            out.link[s].latency = v[n * 4 + 5 + 2 * s];
            out.link[s].bandwidth = v[n * 4 + 5 + 2 * s + 1];
        }
        rc = plan_profile_write(path, &out, err, errsize);
        free(out.layer);
        free(out.link);
    }
    free(v);
    rt->layers = p->real;
    for (int64_t i = 0; i < n * KINDS; i++)
        free(p->lay[i].t);
    free(p->lay);
    free(p->loss.t), free(p->load.t), free(p->opt.t), free(p->step.t);
    free(p);
    rt->prof = NULL;
    return rc;
}
