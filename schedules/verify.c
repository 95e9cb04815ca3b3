/* schedules/verify.c: the verifier and cost simulator, one abstract machine.
 *
 * Every stage's program runs together. The machine's rules:
 *   RecvActivation / RecvGrad  post a receive (never block) and bind the
 *                              buffer to the micro-batch
 *   SendActivation / SendGrad  block until the matching receive is posted
 *                              (the k-th send of a channel - source, target,
 *                              kind - matches its k-th receive), then go on;
 *                              the data arrives after the link's time
 *   Forward, Backward, ...     wait for the data their receive brings, then
 *                              take the part's cost
 *   ReduceTiedGrads            waits for every stage holding a tied weight
 *   OptimizerStep              waits for every stage (the runtime checks the
 *                              whole lane for NaN/Inf, and sums the gradient
 *                              norm under clipping, before any update)
 * Because a send waits for its receive, a plan that passes cannot deadlock
 * whatever buffering the transport has. A deadlock is reported as the
 * cycle of waiting instructions. The same run times every instruction
 * (sends do not delay the sender: transports send asynchronously), which
 * gives the predicted step time, each stage's busy and idle time, and the
 * timeline the pictures draw.
 *
 * Buffers: an instruction naming (chunk, buf, mb) binds a free buffer to
 * mb; naming a buffer bound to another micro-batch is "overwritten while
 * live". Backward and BackwardWeight release it (a forward-only program
 * releases a buffer when the next micro-batch binds it, once its forward
 * ran).
 *
 * Two ways to run it (sched_verify_machine): the full machine checks
 * every instruction and pairs every send with its receive in a pre-pass;
 * the fast one does both as the run reaches them (a run that passes
 * reaches every instruction), keeps no per-message array (the receives
 * waiting on a channel are a ring; a send writes its data's arrival into
 * the buffer its receive bound), and lets a receive's post complete the
 * send that waits for it. sched_verify runs the fast one, and the full
 * one only when it fails, for the message and the stuck points. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "base_alloc.h"

typedef struct Chan {
    int src, dst, grad;
    int nsend, nrecv;        /* instructions of each side, counted in the pre-pass */
    int capsend, caprecv;    /* room in send_stage_pc, recv_stage_pc (pre-pass) */
    int sent, posted;        /* executed so far */
    struct Post *post;       /* ring: the receives q in [sent, posted), at q & (npost - 1) */
    int npost;               /* its size, a power of two (0: none yet) */
    int *send_stage_pc, *recv_stage_pc; /* pc of each send / receive (pre-pass; NULL when fast) */
} Chan;

/* A posted receive, waiting for its send: what the send needs of it, so
 * that the send reads no instruction of the other stage */
typedef struct Post {
    double t;                /* when it was posted */
    int pc;                  /* its pc on the receiving stage */
    int mb, part;            /* its micro-batch, and the part it receives for */
    struct Slot *slot;       /* the buffer it bound */
} Post;

typedef struct Slot {
    int mb;                  /* -1: free */
    int forwarded;           /* eval: its forward ran */
    int pend_chan, pend_seq; /* the receive that fills it (-1: none) */
    int gpend_chan, gpend_seq;
    double pend_arrive, gpend_arrive; /* when its data is there: set by the send */
} Slot;

typedef enum { W_NONE, W_SEND, W_DATA, W_BARRIER } WaitKind;

typedef struct Vm {
    int *gin_mb;                /* [stage * V]: the micro-batch whose input gradient the chunk holds, -1 */
    int *gin_sent;              /* [stage * V]: it has been sent (or needs no send) */
    int *gin_at;                /* [stage * V]: the area the chunk's last backward wrote */
    double *gin_free;           /* [(stage * V) * SCHED_GIN_AREAS + area]: when its last send completed */
    /* fast: no pre-pass; the run checks each instruction alone when it
     * reaches it, matches each send with its receive as it goes, and
     * checks at the end that none is left. It passes exactly the plans the
     * full machine passes, with the same simulation; anything else is run
     * again in full for the message and the stuck points (sched_verify) */
    int fast;
    const SchedPlan *plan;
    const SchedParts *parts;
    const SchedCosts *costs;
    SchedSim *out;
    int S, V, P;
    Chan *chan;
    int nchan, capchan;
    int *hkeys, *hvals, hcap;   /* channel hash: key -> index */
    int *cc_peer, *cc_chan;     /* [stage * 4 + 2 * send + grad]: the channel last used that way, a cache
                                 * before the hash (a stage mostly talks to one peer each way) */
    int *pc;
    double *clock;
    Slot **slot;                /* [stage * V] -> [nbuf] */
    int *live;
    double *live_bytes;
    WaitKind *wait;
    int *wait_on;               /* the stage waited for */
    int *queue, *queued;        /* the stages to run, a ring of qmask + 1 >= S (a power of two: no division) */
    unsigned qhead, qtail, qmask;
    int tied_arrived, tied_need, all_arrived, all_need;
    double tied_time, all_time;
    int *at_tied, *at_all;      /* [stage]: 1 + the pc of its barrier instruction once it came there, else 0 */
    int failed;
} Vm;

static int chan_of(Vm *vm, int src, int dst, int grad);

/* Keeps the channel hash at most half full. */
static void chan_grow(Vm *vm)
{
    if (2 * (vm->nchan + 1) < vm->hcap)
        return;
    int old = vm->hcap, *ok = vm->hkeys, *ov = vm->hvals;
    vm->hcap *= 2;
    vm->hkeys = base_calloc(vm->hcap, sizeof *vm->hkeys);
    vm->hvals = base_calloc(vm->hcap, sizeof *vm->hvals);
    for (int i = 0; i < vm->hcap; i++)
        vm->hkeys[i] = -1;
    for (int i = 0; i < old; i++)
        if (ok[i] != -1) {
            unsigned h = ((unsigned)ok[i] * 2654435761u) & (unsigned)(vm->hcap - 1);
            while (vm->hkeys[h] != -1)
                h = (h + 1) & (unsigned)(vm->hcap - 1);
            vm->hkeys[h] = ok[i];
            vm->hvals[h] = ov[i];
        }
    free(ok), free(ov);
}

static int chan_of(Vm *vm, int src, int dst, int grad)
{
    chan_grow(vm);
    unsigned key = ((unsigned)src * (unsigned)vm->S + (unsigned)dst) * 2u + (unsigned)grad;
    unsigned h = (key * 2654435761u) & (unsigned)(vm->hcap - 1);
    while (vm->hkeys[h] != -1) {
        if ((unsigned)vm->hkeys[h] == key)
            return vm->hvals[h];
        h = (h + 1) & (unsigned)(vm->hcap - 1);
    }
    if (vm->nchan == vm->capchan) {
        vm->capchan = vm->capchan ? 2 * vm->capchan : 64;
        vm->chan = realloc(vm->chan, (size_t)vm->capchan * sizeof *vm->chan);
        if (!vm->chan) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
    }
    Chan *c = &vm->chan[vm->nchan];
    memset(c, 0, sizeof *c);
    c->src = src, c->dst = dst, c->grad = grad;
    vm->hkeys[h] = (int)key;
    vm->hvals[h] = vm->nchan;
    return vm->nchan++;
}

/* The channel of stage s's send or receive (grad: of gradients) with
 * peer. The k-th send of a channel meets its k-th receive, and one stage
 * runs each side in program order: the sequence number of the instruction
 * being run is the channel's count so far (sent, posted), so nothing is
 * stored per instruction. */
static int chan_at(Vm *vm, int s, int peer, int send, int grad)
{
    int at = s * 4 + 2 * send + grad;
    if (vm->cc_peer[at] == peer)
        return vm->cc_chan[at];
    int c = send ? chan_of(vm, s, peer, grad) : chan_of(vm, peer, s, grad);
    vm->cc_peer[at] = peer, vm->cc_chan[at] = c;
    return c;
}

static int part_of(const Vm *vm, int stage, int chunk)
{
    return sched_part(vm->plan->place, vm->S, stage, chunk);
}

static void fail(Vm *vm, int stage, int pc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail(Vm *vm, int stage, int pc, const char *fmt, ...)
{
    if (vm->failed)
        return;
    vm->failed = 1;
    SchedSim *o = vm->out;
    o->ok = 0;
    o->err_stage = stage;
    o->err_pc = pc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof o->error, fmt, ap);
    va_end(ap);
}

/* "stage 1 pc 7 (SendGrad mb 3)" */
static void where(const Vm *vm, int s, int pc, char *buf, size_t size)
{
    if (pc >= vm->plan->prog[s].n) {
        snprintf(buf, size, "stage %d (finished)", s);
        return;
    }
    const SchedInstr *in = &vm->plan->prog[s].ins[pc];
    if (sched_op_operands[in->op] & SCHED_M)
        snprintf(buf, size, "stage %d pc %d (%s mb %d chunk %d)", s, pc, sched_op_names[in->op], in->mb, in->chunk);
    else
        snprintf(buf, size, "stage %d pc %d (%s)", s, pc, sched_op_names[in->op]);
}

/* Checks instruction pc of stage s alone: its opcode, and each operand
 * it has in range (everything the run indexes with). The second barrier
 * of a program is found by the caller. */
static inline int check_alone(Vm *vm, int s, int i, const SchedInstr *in)
{
    const SchedPlan *pl = vm->plan;
    if (in->op >= SCHED_NOPS) {
        fail(vm, s, i, "stage %d pc %d: unknown opcode %u", s, i, in->op);
        return -1;
    }
    unsigned o = sched_op_operands[in->op];
    if ((o & SCHED_C) && in->chunk >= vm->V) {
        fail(vm, s, i, "stage %d pc %d (%s): chunk %d, but stages have %d", s, i, sched_op_names[in->op], in->chunk,
             vm->V);
        return -1;
    }
    if ((o & SCHED_M) && (in->mb < 0 || in->mb >= pl->micro_batches)) {
        fail(vm, s, i, "stage %d pc %d (%s): micro-batch %d does not exist", s, i, sched_op_names[in->op], in->mb);
        return -1;
    }
    if ((o & SCHED_B) && in->op != SCHED_SendGrad && (in->buf < 0 || in->buf >= pl->nbuf[s * vm->V + in->chunk])) {
        fail(vm, s, i, "stage %d pc %d (%s mb %d): buffer %d does not exist (chunk %d has %d)", s, i,
             sched_op_names[in->op], in->mb, in->buf, in->chunk, pl->nbuf[s * vm->V + in->chunk]);
        return -1;
    }
    if (in->op == SCHED_ReduceTiedGrads && !(vm->parts->tied_stage && vm->parts->tied_stage[s])) {
        fail(vm, s, i, "stage %d pc %d: ReduceTiedGrads on a stage that holds no tied weight", s, i);
        return -1;
    }
    int send = in->op == SCHED_SendActivation || in->op == SCHED_SendGrad;
    int recv = in->op == SCHED_RecvActivation || in->op == SCHED_RecvGrad;
    if ((send || recv) && (in->peer < 0 || in->peer >= vm->S || in->peer == s)) {
        fail(vm, s, i, "stage %d pc %d (%s mb %d): peer %d is not another stage", s, i, sched_op_names[in->op], in->mb,
             in->peer);
        return -1;
    }
    return 0;
}

/* The full machine's pre-pass: checks each instruction alone (the fast
 * machine does that as its run reaches each one, which in a run that
 * passes is every one), numbers each channel's sends and receives (their
 * pcs in program order) and checks that the k-th send and k-th receive
 * agree on micro-batch and parts. */
static int prepass(Vm *vm)
{
    const SchedPlan *pl = vm->plan;
    if (vm->fast)
        return 0;
    for (int s = 0; s < vm->S; s++) {
        const SchedProgram *pr = &pl->prog[s];
        int seen_tied = 0, seen_opt = 0;
        for (int i = 0; i < pr->n; i++) {
            const SchedInstr *in = &pr->ins[i];
            if (check_alone(vm, s, i, in))
                return -1;
            if (in->op == SCHED_ReduceTiedGrads || in->op == SCHED_OptimizerStep) {
                int *seen = in->op == SCHED_ReduceTiedGrads ? &seen_tied : &seen_opt;
                if ((*seen)++) {
                    fail(vm, s, i, "stage %d pc %d: a second %s in one program", s, i, sched_op_names[in->op]);
                    return -1;
                }
            }
            int send = in->op == SCHED_SendActivation || in->op == SCHED_SendGrad;
            int recv = in->op == SCHED_RecvActivation || in->op == SCHED_RecvGrad;
            if (!send && !recv)
                continue;
            int grad = in->op == SCHED_SendGrad || in->op == SCHED_RecvGrad;
            /* each side's pcs in program order, in one pass: the arrays
             * grow as they fill */
            int c = chan_at(vm, s, in->peer, send, grad); /* may move vm->chan */
            Chan *ch = &vm->chan[c];
            int **pcs = send ? &ch->send_stage_pc : &ch->recv_stage_pc;
            int *n = send ? &ch->nsend : &ch->nrecv, *cap = send ? &ch->capsend : &ch->caprecv;
            if (*n == *cap) {
                *cap = *cap ? 2 * *cap : 64;
                *pcs = base_realloc(*pcs, (size_t)*cap * sizeof **pcs);
            }
            (*pcs)[(*n)++] = i;
        }
    }
    for (int c = 0; c < vm->nchan; c++) {
        Chan *ch = &vm->chan[c];
        int n = ch->nsend < ch->nrecv ? ch->nsend : ch->nrecv;
        for (int k = 0; k < n; k++) {
            const SchedInstr *a = &pl->prog[ch->src].ins[ch->send_stage_pc[k]];
            const SchedInstr *b = &pl->prog[ch->dst].ins[ch->recv_stage_pc[k]];
            int pa = part_of(vm, ch->src, a->chunk), pb = part_of(vm, ch->dst, b->chunk);
            int want = ch->grad ? pb + 1 : pb - 1;
            if (a->mb != b->mb || pa != want) {
                char wa[128], wb[128];
                where(vm, ch->src, ch->send_stage_pc[k], wa, sizeof wa);
                where(vm, ch->dst, ch->recv_stage_pc[k], wb, sizeof wb);
                fail(vm, ch->dst, ch->recv_stage_pc[k],
                     "mismatched send/receive: %s (part %d) is matched with %s (part %d, expecting part %d's %s)", wa,
                     pa, wb, pb, want, ch->grad ? "gradient" : "activation");
                return -1;
            }
        }
        if (ch->nsend != ch->nrecv) {
            int extra_send = ch->nsend > ch->nrecv;
            int st = extra_send ? ch->src : ch->dst;
            int pc = extra_send ? ch->send_stage_pc[n] : ch->recv_stage_pc[n];
            char w[128];
            where(vm, st, pc, w, sizeof w);
            fail(vm, st, pc, "unmatched %s: %s has no matching %s on stage %d (%d sends, %d receives from stage %d to %d)",
                 extra_send ? "send" : "receive", w, extra_send ? "receive" : "send", extra_send ? ch->dst : ch->src,
                 ch->nsend, ch->nrecv, ch->src, ch->dst);
            return -1;
        }
    }
    return 0;
}

/* Twice the ring of posted receives, the waiting ones [sent, posted)
 * moved to their places in the larger one. */
static void post_grow(Chan *ch)
{
    int n = ch->npost ? 2 * ch->npost : 16;
    Post *p = base_calloc(n, sizeof *p);
    for (int q = ch->sent; q < ch->posted; q++)
        p[q & (n - 1)] = ch->post[q & (ch->npost - 1)];
    free(ch->post);
    ch->post = p, ch->npost = n;
}

static void wake(Vm *vm, int s)
{
    if (vm->queued[s] || vm->pc[s] >= vm->plan->prog[s].n)
        return;
    vm->queued[s] = 1;
    vm->queue[vm->qtail++ & vm->qmask] = s;
}

static double buf_bytes(const Vm *vm, int s, int chunk)
{
    return vm->costs && vm->costs->buf_bytes ? vm->costs->buf_bytes[part_of(vm, s, chunk)] : 0;
}

/* Binds (chunk, buf) of stage s to mb; returns -1 (and fails) when the
 * buffer holds another live micro-batch. */
static inline int bind(Vm *vm, int s, int pc, const SchedInstr *in, int chunk, int buf)
{
    Slot *sl = &vm->slot[s * vm->V + chunk][buf];
    if (sl->mb == in->mb)
        return 0;
    if (sl->mb >= 0 && !(vm->plan->eval && sl->forwarded)) {
        char w[128];
        where(vm, s, pc, w, sizeof w);
        fail(vm, s, pc, "buffer overwritten while live: %s uses buffer %d of chunk %d, which still holds micro-batch %d", w,
             buf, chunk, sl->mb);
        return -1;
    }
    if (sl->mb < 0) {
        vm->live[s]++;
        vm->live_bytes[s] += buf_bytes(vm, s, chunk);
        if (vm->live[s] > vm->out->peak_buffers[s])
            vm->out->peak_buffers[s] = vm->live[s];
        if (vm->live_bytes[s] > vm->out->peak_bytes[s])
            vm->out->peak_bytes[s] = vm->live_bytes[s];
    }
    sl->mb = in->mb;
    sl->forwarded = 0;
    sl->pend_chan = sl->gpend_chan = -1;
    return 0;
}

static void unbind(Vm *vm, int s, int chunk, int buf)
{
    Slot *sl = &vm->slot[s * vm->V + chunk][buf];
    if (sl->mb < 0)
        return;
    sl->mb = -1;
    vm->live[s]--;
    vm->live_bytes[s] -= buf_bytes(vm, s, chunk);
}

static double op_cost(const Vm *vm, const SchedInstr *in, int s)
{
    const SchedCosts *c = vm->costs;
    if (!c)
        return 0;
    int k = part_of(vm, s, in->chunk);
    switch (in->op) {
    case SCHED_Forward: return c->f ? c->f[k] : 0;
    case SCHED_Backward: return c->b ? c->b[k] : 0;
    case SCHED_BackwardInput: return c->i ? c->i[k] : 0;
    case SCHED_BackwardWeight: return c->w ? c->w[k] : 0;
    default: return 0;
    }
}

/* Link: the previous part's buffer on this stage, bound to the same mb. */
static inline int check_link(Vm *vm, int s, int pc, const SchedInstr *in)
{
    if (!(sched_op_operands[in->op] & SCHED_L) || in->link < 0)
        return 0;
    int k = part_of(vm, s, in->chunk);
    int st, lc;
    if (k == 0) {
        fail(vm, s, pc, "stage %d pc %d (%s mb %d): the first part has no previous chunk to link to", s, pc,
             sched_op_names[in->op], in->mb);
        return -1;
    }
    sched_place(vm->plan->place, vm->S, k - 1, &st, &lc);
    if (st != s || in->link >= vm->plan->nbuf[s * vm->V + lc]) {
        fail(vm, s, pc, "stage %d pc %d (%s mb %d): link %d is not a buffer of the previous part on this stage", s, pc,
             sched_op_names[in->op], in->mb, in->link);
        return -1;
    }
    if (vm->slot[s * vm->V + lc][in->link].mb != in->mb) {
        char w[128];
        where(vm, s, pc, w, sizeof w);
        fail(vm, s, pc, "%s links to buffer %d of chunk %d, which does not hold micro-batch %d", w, in->link, lc, in->mb);
        return -1;
    }
    return 0;
}

/* The stages' instruction streams are read a few instructions at a time,
 * stage after stage: with 64 of them the hardware prefetcher loses track,
 * and perf put a quarter of the verifier's time on loading the next
 * instruction (bench/pipec_speed.py). A hint, never a load: reading past
 * the end is harmless. */
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Stage s's send at pc: 1 when it went (pc moves on), 0 when its receive
 * is not posted yet (it waits), -1 when it failed. */
static inline int send(Vm *vm, int s, int pc, const SchedInstr *in)
{
    SchedSim *o = vm->out;
    double t = vm->clock[s];
    int c = chan_at(vm, s, in->peer, 1, in->op == SCHED_SendGrad);
    Chan *ch = &vm->chan[c];
    int q = ch->sent;
    if (in->op == SCHED_SendActivation) {
        Slot *sl = &vm->slot[s * vm->V + in->chunk][in->buf];
        if (sl->mb != in->mb || !sl->forwarded) {
            char w[128];
            where(vm, s, pc, w, sizeof w);
            fail(vm, s, pc, "%s sends buffer %d, which holds %s", w, in->buf,
                 sl->mb != in->mb ? (sl->mb < 0 ? "nothing" : "another micro-batch")
                                  : "no output yet (the send comes before its forward)");
            return -1;
        }
    } else {
        int at = s * vm->V + in->chunk;
        if (vm->gin_mb[at] != in->mb || vm->gin_sent[at]) {
            char w[128];
            where(vm, s, pc, w, sizeof w);
            fail(vm, s, pc, "%s sends an input gradient that %s", w,
                 vm->gin_mb[at] != in->mb ? "no backward of this micro-batch has computed yet"
                                          : "was already sent");
            return -1;
        }
    }
    if (ch->posted <= q) {
        vm->wait[s] = W_SEND;
        vm->wait_on[s] = ch->dst;
        if (!vm->fast)
            o->stuck_recv_pc[s] = ch->recv_stage_pc[q];
        return 0;
    }
    if (in->op == SCHED_SendGrad) /* it goes now: the area may be reused (once its data has left) */
        vm->gin_sent[s * vm->V + in->chunk] = 1;
    const Post *po = &ch->post[q & (ch->npost - 1)];
    double start = t > po->t ? t : po->t, arrive = start;
    int rpc = po->pc;
    if (vm->fast) { /* the pre-pass's match, here */
        int pa = part_of(vm, s, in->chunk), pb = po->part;
        if (po->mb != in->mb || pa != (ch->grad ? pb + 1 : pb - 1)) {
            fail(vm, s, pc, "mismatched send/receive");
            return -1;
        }
    }
    if (o->peer_time[ch->dst])
        o->peer_time[ch->dst][rpc] = t;
    if (vm->costs && vm->costs->link_bandwidth > 0 && vm->costs->bytes_fwd) {
        int k = part_of(vm, s, in->chunk);
        int bk = in->op == SCHED_SendActivation ? k : k - 1;
        arrive = start + vm->costs->bytes_fwd[bk] / vm->costs->link_bandwidth;
    }
    if (vm->costs)
        arrive += vm->costs->link_latency;
    if (in->op == SCHED_SendGrad) { /* its area is free once the data has left */
        int at = s * vm->V + in->chunk;
        vm->gin_free[at * SCHED_GIN_AREAS + vm->gin_at[at]] = arrive;
    }
    /* the arrival goes to the buffer its receive bound, if that
     * still waits for this message (only such a buffer reads it) */
    Slot *rs = po->slot;
    if (ch->grad && rs->gpend_chan == c && rs->gpend_seq == q)
        rs->gpend_arrive = arrive;
    else if (!ch->grad && rs->pend_chan == c && rs->pend_seq == q)
        rs->pend_arrive = arrive;
    ch->sent = q + 1;
    if (vm->wait[ch->dst] == W_DATA)
        wake(vm, ch->dst);
    if (o->start[s])
        o->start[s][pc] = start, o->end[s][pc] = arrive;
    vm->wait[s] = W_NONE;
    vm->pc[s]++;
    return 1;
}

/* Runs stage s until it blocks or ends. */
static void step(Vm *vm, int s)
{
    const SchedProgram *pr = &vm->plan->prog[s];
    SchedSim *o = vm->out;
    while (vm->pc[s] < pr->n && !vm->failed) {
        int pc = vm->pc[s];
        const SchedInstr *in = &pr->ins[pc];
        PREFETCH(in + 8);
        if (vm->fast && check_alone(vm, s, pc, in)) /* the full machine's pre-pass did */
            return;
        double t = vm->clock[s], end = t;
        switch (in->op) {
        case SCHED_RecvActivation:
        case SCHED_RecvGrad: {
            if (bind(vm, s, pc, in, in->chunk, in->buf))
                return;
            int c = chan_at(vm, s, in->peer, 0, in->op == SCHED_RecvGrad);
            Chan *ch = &vm->chan[c];
            int q = ch->posted;
            if (q - ch->sent == ch->npost) /* full: twice the ring, the waiting posts kept in order */
                post_grow(ch);
            Slot *sl = &vm->slot[s * vm->V + in->chunk][in->buf];
            ch->post[q & (ch->npost - 1)] = (Post){t, pc, in->mb, part_of(vm, s, in->chunk), sl};
            ch->posted = q + 1;
            if (in->op == SCHED_RecvActivation)
                sl->pend_chan = c, sl->pend_seq = q;
            else
                sl->gpend_chan = c, sl->gpend_seq = q;
            int r = ch->src;
            if (vm->wait[r] == W_SEND) {
                /* fast: the send that waits for this receive goes now, so
                 * that this stage finds its data when it needs it instead
                 * of stopping for it (half the stops of a 1F1B plan). Each
                 * stage still runs its own instructions in order, and what
                 * a send computes depends on its own stage and the posted
                 * receive only, so the run is the same */
                const SchedInstr *w = &vm->plan->prog[r].ins[vm->pc[r]];
                if (vm->fast && ch->sent == q && w->peer == s && (w->op == SCHED_SendGrad) == ch->grad)
                    send(vm, r, vm->pc[r], w);
                wake(vm, r);
            }
            break;
        }
        case SCHED_SendActivation:
        case SCHED_SendGrad:
            if (send(vm, s, pc, in) <= 0)
                return;
            continue;
        case SCHED_LoadMicroBatch:
            if (bind(vm, s, pc, in, in->chunk, in->buf))
                return;
            break;
        case SCHED_Forward:
        case SCHED_Backward:
        case SCHED_BackwardInput:
        case SCHED_BackwardWeight: {
            if (in->op == SCHED_Forward) {
                if (check_link(vm, s, pc, in) || bind(vm, s, pc, in, in->chunk, in->buf))
                    return;
            } else {
                Slot *sl = &vm->slot[s * vm->V + in->chunk][in->buf];
                if (sl->mb != in->mb || !sl->forwarded) {
                    char w[128];
                    where(vm, s, pc, w, sizeof w);
                    if (sl->mb == in->mb)
                        fail(vm, s, pc, "%s: backward before its forward", w);
                    else
                        fail(vm, s, pc, "%s: buffer %d of chunk %d holds %s, not micro-batch %d", w, in->buf, in->chunk,
                             sl->mb < 0 ? "nothing" : "another micro-batch", in->mb);
                    return;
                }

                if (in->op != SCHED_BackwardWeight && check_link(vm, s, pc, in))
                    return;
            }
            Slot *sl = &vm->slot[s * vm->V + in->chunk][in->buf];
            int c = -1, q = 0;
            double arrive = t;
            if (in->op == SCHED_Forward && sl->pend_chan >= 0)
                c = sl->pend_chan, q = sl->pend_seq, arrive = sl->pend_arrive;
            if ((in->op == SCHED_Backward || in->op == SCHED_BackwardInput) && sl->gpend_chan >= 0)
                c = sl->gpend_chan, q = sl->gpend_seq, arrive = sl->gpend_arrive;
            double start = t;
            if (c >= 0) {
                Chan *ch = &vm->chan[c];
                if (ch->sent <= q) {
                    vm->wait[s] = W_DATA;
                    vm->wait_on[s] = ch->src;
                    return;
                }
                if (arrive > start)
                    start = arrive;
            }
        if (in->op == SCHED_Backward || in->op == SCHED_BackwardInput) {
                /* the chunk's gradient area: the last one must have gone */
                int at = s * vm->V + in->chunk;
                int k = part_of(vm, s, in->chunk), st, lc;
                int needs_send = k > 0;
                if (k > 0) {
                    sched_place(vm->plan->place, vm->S, k - 1, &st, &lc);
                    needs_send = st != s;
                }
                if (vm->gin_mb[at] >= 0 && !vm->gin_sent[at]) {
                    char w[128];
                    where(vm, s, pc, w, sizeof w);
                    fail(vm, s, pc, "%s overwrites the input gradient of micro-batch %d before it was sent", w,
                         vm->gin_mb[at]);
                    return;
                }
                vm->gin_mb[at] = in->mb;
                vm->gin_sent[at] = !needs_send;
                /* the runtime writes its areas in turn, each once the send from
                 * it has completed: with a rendezvous transport, once the
                 * receiving stage has posted its receive and the data moved */
                vm->gin_at[at] = (vm->gin_at[at] + 1) % SCHED_GIN_AREAS;
                double *free_at = &vm->gin_free[at * SCHED_GIN_AREAS + vm->gin_at[at]];
                if (*free_at > start)
                    start = *free_at;
                *free_at = 0; /* until this backward's own send */
            }
            end = start + op_cost(vm, in, s);
            if (o->start[s])
                o->start[s][pc] = start, o->end[s][pc] = end;
            o->busy[s] += end - start;
            vm->clock[s] = end;
            if (in->op == SCHED_Forward)
                sl->forwarded = 1;
            if (in->op == SCHED_Backward || in->op == SCHED_BackwardWeight)
                unbind(vm, s, in->chunk, in->buf);
            vm->wait[s] = W_NONE;
            vm->pc[s]++;
            continue;
        }
        case SCHED_ReduceTiedGrads:
        case SCHED_OptimizerStep: {
            int tied = in->op == SCHED_ReduceTiedGrads;
            /* OptimizerStep is lane-wide in the runtime: it votes on
             * NaN/Inf before any update and, under clipping, sums the
             * gradient norm */
            int *arrived = tied ? &vm->tied_arrived : &vm->all_arrived;
            int need = tied ? vm->tied_need : vm->all_need;
            double *bt = tied ? &vm->tied_time : &vm->all_time;
            int *at = tied ? vm->at_tied : vm->at_all;
            if (!at[s]) {
                at[s] = pc + 1; /* which one: a second in the program is an error */
                (*arrived)++;
                if (t > *bt)
                    *bt = t;
            } else if (at[s] != pc + 1) { /* fast (the full machine's pre-pass found it) */
                fail(vm, s, pc, "stage %d pc %d: a second %s in one program", s, pc, sched_op_names[in->op]);
                return;
            }
            if (*arrived < need) {
                vm->wait[s] = W_BARRIER;
                vm->wait_on[s] = -1;
                for (int i = 0; i < vm->S; i++)
                    if (!at[i] && (!tied || (vm->parts->tied_stage && vm->parts->tied_stage[i]))) {
                        vm->wait_on[s] = i;
                        break;
                    }
                return;
            }
            for (int i = 0; i < vm->S; i++)
                if (at[i] && i != s && vm->wait[i] == W_BARRIER)
                    wake(vm, i);
            t = *bt;
            vm->clock[s] = t;
            end = t;
            if (!tied && vm->costs && vm->costs->opt) { /* the update itself, after the vote */
                end = t + vm->costs->opt[s];
                o->busy[s] += end - t;
                vm->clock[s] = end;
            }
            break;
        }
        case SCHED_ReduceGrads:
            break;
        default:
            fail(vm, s, pc, "stage %d pc %d: unknown opcode %u", s, pc, in->op);
            return;
        }
        if (o->start[s])
            o->start[s][pc] = t, o->end[s][pc] = end;
        vm->wait[s] = W_NONE;
        vm->pc[s]++;
    }
}

/* Everyone is stuck: report the cycle of waiting instructions. */
static void report_deadlock(Vm *vm)
{
    int *seen = base_calloc(vm->S, sizeof *seen);
    int s = 0;
    while (s < vm->S && vm->pc[s] >= vm->plan->prog[s].n)
        s++;
    int step_no = 1;
    while (s >= 0 && s < vm->S && !seen[s] && vm->pc[s] < vm->plan->prog[s].n) {
        seen[s] = step_no++;
        s = vm->wait_on[s];
    }
    char msg[2048];
    size_t n = 0;
    if (s >= 0 && s < vm->S && seen[s]) {
        int start = s;
        n += snprintf(msg + n, sizeof msg - n, "deadlock: ");
        do {
            char w[128];
            where(vm, s, vm->pc[s], w, sizeof w);
            const char *why = vm->wait[s] == W_SEND ? "waits for its receive on"
                              : vm->wait[s] == W_DATA ? "waits for data from"
                                                      : "waits in a collective for";
            n += snprintf(msg + n, sizeof msg - n, "%s %s stage %d", w, why, vm->wait_on[s]);
            s = vm->wait_on[s];
            if (s != start && n < sizeof msg)
                n += snprintf(msg + n, sizeof msg - n, "; ");
        } while (s != start && n < sizeof msg - 200);
        int first = start;
        fail(vm, first, vm->pc[first], "%s", msg);
    } else {
        int t = 0;
        while (t < vm->S && vm->pc[t] >= vm->plan->prog[t].n)
            t++;
        char w[128];
        where(vm, t, vm->pc[t], w, sizeof w);
        fail(vm, t, vm->pc[t], "deadlock: %s waits forever", w);
    }
    free(seen);
}

static void run_vm(const SchedPlan *plan, const SchedParts *parts, const SchedCosts *costs, int fast, SchedSim *out)
{
    memset(out, 0, sizeof *out);
    int S = plan->stages, V = plan->chunks;
    out->stages = S;
    Vm vm = {.fast = fast, .plan = plan, .parts = parts, .costs = costs, .out = out, .S = S, .V = V, .P = S * V};
    out->ok = 1;
    out->err_stage = out->err_pc = -1;
    out->busy = base_calloc(S, sizeof *out->busy);
    out->idle = base_calloc(S, sizeof *out->idle);
    out->peak_buffers = base_calloc(S, sizeof *out->peak_buffers);
    out->peak_bytes = base_calloc(S, sizeof *out->peak_bytes);
    out->start = base_calloc(S, sizeof *out->start);
    out->end = base_calloc(S, sizeof *out->end);
    out->peer_time = base_calloc(S, sizeof *out->peer_time);
    out->stuck_pc = base_calloc(S, sizeof *out->stuck_pc);
    out->stuck_recv_pc = base_calloc(S, sizeof *out->stuck_recv_pc);
    for (int s = 0; s < S; s++)
        out->stuck_pc[s] = out->stuck_recv_pc[s] = -1;
    /* one block for the three timelines: [start | end | peer_time] per stage;
     * a big plan compiled without pictures skips them (a third of pipec's
     * memory), leaving the rows NULL */
    int timeline = !(costs && costs->no_timeline);
    for (int s = 0; s < S && timeline; s++) {
        size_t n = plan->prog[s].n ? (size_t)plan->prog[s].n : 1;
        out->start[s] = calloc(3 * n, sizeof **out->start);
        if (!out->start[s]) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
        out->end[s] = out->start[s] + n;
        out->peer_time[s] = out->start[s] + 2 * n;

    }
    vm.hcap = 64;
    while (vm.hcap < 8 * S)
        vm.hcap *= 2;
    vm.hkeys = base_calloc(vm.hcap, sizeof *vm.hkeys);
    vm.hvals = base_calloc(vm.hcap, sizeof *vm.hvals);
    for (int i = 0; i < vm.hcap; i++)
        vm.hkeys[i] = -1;
    vm.cc_peer = base_calloc((size_t)S * 4, sizeof *vm.cc_peer);
    vm.cc_chan = base_calloc((size_t)S * 4, sizeof *vm.cc_chan);
    for (int i = 0; i < S * 4; i++)
        vm.cc_peer[i] = -1;
    vm.pc = base_calloc(S, sizeof *vm.pc);
    vm.clock = base_calloc(S, sizeof *vm.clock);
    vm.slot = base_calloc((size_t)S * V, sizeof *vm.slot);
    for (int i = 0; i < S * V; i++) {
        vm.slot[i] = base_calloc(plan->nbuf[i], sizeof **vm.slot);
        for (int b = 0; b < plan->nbuf[i]; b++)
            vm.slot[i][b].mb = vm.slot[i][b].pend_chan = vm.slot[i][b].gpend_chan = -1;
    }
    vm.gin_mb = base_calloc((size_t)S * V, sizeof *vm.gin_mb);
    vm.gin_sent = base_calloc((size_t)S * V, sizeof *vm.gin_sent);
    for (int i = 0; i < S * V; i++)
        vm.gin_mb[i] = -1, vm.gin_sent[i] = 1;
    vm.gin_at = base_calloc((size_t)S * V, sizeof *vm.gin_at);
    vm.gin_free = base_calloc((size_t)S * V * SCHED_GIN_AREAS, sizeof *vm.gin_free);
    vm.live = base_calloc(S, sizeof *vm.live);
    vm.live_bytes = base_calloc(S, sizeof *vm.live_bytes);
    vm.wait = base_calloc(S, sizeof *vm.wait);
    vm.wait_on = base_calloc(S, sizeof *vm.wait_on);
    vm.qmask = 1;
    while (vm.qmask < (unsigned)S)
        vm.qmask *= 2;
    vm.queue = base_calloc(vm.qmask--, sizeof *vm.queue);
    vm.queued = base_calloc(S, sizeof *vm.queued);
    vm.at_tied = base_calloc(S, sizeof *vm.at_tied);
    vm.at_all = base_calloc(S, sizeof *vm.at_all);
    vm.all_need = S;
    for (int s = 0; s < S; s++)
        vm.tied_need += parts->tied_stage && parts->tied_stage[s];
    if (prepass(&vm) == 0) {
        for (int s = 0; s < S; s++)
            wake(&vm, s);
        while (vm.qhead != vm.qtail && !vm.failed) {
            int s = vm.queue[vm.qhead++ & vm.qmask];
            vm.queued[s] = 0;
            step(&vm, s);
            if (vm.pc[s] >= plan->prog[s].n) {
                /* a finished stage may release others in a barrier */
                for (int i = 0; i < S; i++)
                    if (vm.wait[i] == W_BARRIER)
                        wake(&vm, i);
            }
        }
        int stuck = 0;
        for (int s = 0; s < S; s++) {
            stuck |= vm.pc[s] < plan->prog[s].n;
            out->stuck_pc[s] = vm.pc[s] < plan->prog[s].n ? vm.pc[s] : -1;
            if (vm.wait[s] != W_SEND)
                out->stuck_recv_pc[s] = -1;
        }
        if (stuck && !vm.failed) {
            report_deadlock(&vm);
            out->deadlock = 1;
        }
        for (int c = 0; c < vm.nchan && fast && !vm.failed; c++)
            if (vm.chan[c].posted != vm.chan[c].sent) /* a receive no send met */
                fail(&vm, vm.chan[c].dst, -1, "unmatched receive");
    }
    if (out->ok) {
        double T = 0;
        for (int s = 0; s < S; s++)
            if (vm.clock[s] > T)
                T = vm.clock[s];
        out->step_time = T;
        double idle = 0;
        for (int s = 0; s < S; s++) {
            out->idle[s] = T - out->busy[s];
            idle += out->idle[s];
        }
        out->bubble = T > 0 ? idle / (S * T) : 0;
    }
    for (int c = 0; c < vm.nchan; c++) {
        free(vm.chan[c].post);
        free(vm.chan[c].send_stage_pc), free(vm.chan[c].recv_stage_pc);
    }
    free(vm.chan);
    for (int i = 0; i < S * V; i++)
        free(vm.slot[i]);
    free(vm.cc_peer), free(vm.cc_chan), free(vm.pc), free(vm.clock), free(vm.slot), free(vm.live), free(vm.live_bytes);
    free(vm.wait), free(vm.wait_on), free(vm.queue), free(vm.queued), free(vm.at_tied), free(vm.at_all);
    free(vm.hkeys), free(vm.hvals), free(vm.gin_mb), free(vm.gin_sent), free(vm.gin_at), free(vm.gin_free);
}

void sched_verify(const SchedPlan *plan, const SchedParts *parts, const SchedCosts *costs, SchedSim *out)
{
    run_vm(plan, parts, costs, 1, out);
    if (!out->ok) { /* the full machine's message and stuck points */
        sched_sim_free(out);
        run_vm(plan, parts, costs, 0, out);
    }
}

void sched_verify_machine(const SchedPlan *plan, const SchedParts *parts, const SchedCosts *costs, int fast,
                          SchedSim *out)
{
    run_vm(plan, parts, costs, fast != 0, out);
}

void sched_sim_free(SchedSim *s)
{
    for (int i = 0; i < s->stages; i++)
        free(s->start[i]); /* end and peer_time live in the same block */
    free(s->start), free(s->end), free(s->peer_time), free(s->stuck_pc), free(s->stuck_recv_pc);
    free(s->busy), free(s->idle), free(s->peak_buffers), free(s->peak_bytes);
    memset(s, 0, sizeof *s);
}
