/* runtime/xport_nccl.c: the NCCL transport of --device cuda (xport.h's
 * table), in pipert-cuda.so where CMake found NCCL (PIPE_HAVE_NCCL).
 * NOTHING HERE HAS RUN ON A GPU YET (docs/gpu.md): it compiles, links and
 * was reviewed; a one-GPU machine cannot even reach it (every group there
 * shares the GPU and stays on the staged path).
 *
 * What it carries. One NCCL communicator per group whose ranks each have
 * their own GPU (xp_nccl_open decides, by a vote over the group): the lane
 * (pipe_comm: activations and gradients between stages), the replicas
 * (dp_comm: ReduceGrads) and the tied stages (tied_comm: ReduceTiedGrads).
 * Everything else goes to the staged MPI transport of rt_cuda.c
 * (x->staged): the f64 sums (votes, losses, norms: host values) always,
 * and any group where two ranks share a GPU, has one rank, was declined
 * with PIPE_NCCL=0 or, for the lane, whose plan fails xp_nccl_plan_ok.
 *
 * Streams. All NCCL work of a rank is queued on ONE communication stream
 * (x->comm), in the order the host issues it; compute stays on the
 * backend's compute stream (x->compute). They are ordered by events only:
 *   S1  every launch first records x->ready on the compute stream and makes
 *       the communication stream wait for it: a send reads what the
 *       compute queued before it produced, and a receive overwrites a slot
 *       only after every compute queued before it (which may still read
 *       that slot's previous micro-batch) has run. A reduction likewise
 *       reads the gradients after the backwards that made them.
 *   S2  after each launch, the event of every request in it (XportReq.nev)
 *       is recorded on the communication stream; wait polls that event and
 *       then makes the compute stream wait for it (cudaStreamWaitEvent),
 *       so the compute the interpreter queues after a wait (the consumer of
 *       a receive, the writer of a sent buffer) runs after the transfer.
 *   S3  the compute stream never waits for an event the host has not seen
 *       complete (S2 waits after polling; reductions likewise), so compute
 *       never blocks on communication, and S1's event always completes.
 *
 * Receives are posted lazily. irecv only records the request (state
 * POSTED, on x->pending). The pending receives are launched, in the order
 * posted, inside the ncclGroupStart/End of the next send (one group: the
 * receives and the send progress together, as NCCL requires for
 * operations that must progress concurrently), or on their own group when
 * the host is about to block (a wait, a reduction). Launching a receive
 * on the stream as soon as it is posted would make the stream, and every
 * later send on it, wait for that receive's data (an NCCL operation
 * blocks its stream until matched), which deadlocks 1F1B neighbours: each
 * posts a receive one compute ahead of the send that feeds the other.
 *
 * Why it cannot deadlock (docs/gpu.md has the long form). NCCL runs a
 * rank's groups one after the other on the stream, each blocking until
 * every operation in it is matched; the verifier (schedules/verify.c)
 * proved the plan free of deadlocks on a machine where receives never
 * block and a send blocks until its receive is posted. The differences,
 * and what covers them:
 *   D1  a receive is posted on the GPU later than the program posts it:
 *       at the next send (in the same group) or before the host blocks,
 *       so no rank ever waits, or lets a peer wait on its send, while one
 *       of its posted receives is unlaunched.
 *   D2  a group completes only when all its operations do, and groups run
 *       in order, so waiting for one request, or launching a new group,
 *       also waits for receives launched earlier. xp_nccl_plan_ok
 *       (xport_nccl_plan.c, run at start-up over every stage's program,
 *       train and eval, mirroring the interpreter's waits) keeps the lane
 *       on the staged path unless, in every program: (N1) no group is
 *       launched while a receive of an earlier group has not been waited
 *       for, (N2) no wait waits for a receive of its group other than its
 *       own, (N3) no receive is outstanding at ReduceTiedGrads,
 *       ReduceGrads, OptimizerStep or the end of the pass. Under N1-N3 the only waits NCCL adds are for this
 *       rank's earlier sends to be taken by their receivers, which the
 *       verifier's machine demands already at each send (it blocks until
 *       its receive is posted), and D1 launches every posted receive
 *       before its rank can block.
 *   D3  NCCL has no tags: between two ranks, the k-th send matches the
 *       k-th receive whatever its kind. xp_nccl_plan_ok also requires that,
 *       for every pair of stages, the kinds of the messages sent and the
 *       kinds received come in the same order, so NCCL pairs the same
 *       messages as MPI's tags do.
 *   D4  several communicators: their work shares the one stream, in host
 *       order, so a rank's NCCL kernels never need to run concurrently
 *       with each other. A reduction is queued after the pass's transfers
 *       with no receive outstanding (N3), so it waits at most for this
 *       rank's last sends, whose receives the peers launch before they
 *       block (D1); every rank of the group reaches it, as on MPI.
 *   D5  NCCL connects two ranks lazily, inside the ncclGroupEnd (or the
 *       collective) of their first operation together, and that
 *       connection is a handshake each side's host takes part in: a
 *       blocking point that D1-D4 do not model (a rank could sit in its
 *       first send's ncclGroupEnd while its peer's host is blocked
 *       elsewhere). So xp_nccl_open connects everything at start-up,
 *       where every rank of each group is present: one exchange of one
 *       byte each way with every lane peer its programs name, in one
 *       group, then a one-element sum on each reduction communicator,
 *       the groups in the same order on every rank (warm_up).
 * The runtime checks N1 and N2 again as it goes (RT_CHECK), so a plan the
 * check let through by mistake fails with a message instead of hanging.
 *
 * Watchdog and errors: every wait polls cudaEventQuery, and every 256
 * polls ncclCommGetAsyncError and the clock, with xport_mpi.c's rule (no
 * progress for rt->watchdog_s seconds; 0: never). A timeout or an NCCL
 * error aborts this rank's communicators (ncclCommAbort) and ends the job
 * through rt_stalled / rt_fail, naming the rank, the instruction and the
 * peer or group. Every NCCL and CUDA call is checked. */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "rt.h"
#include "xport_nccl.h"
#include "xport_nccl_plan.h"

enum { NQ_IDLE = 0, NQ_POSTED = 1, NQ_LAUNCHED = 2 }; /* XportReq.nstate */
enum { NG_GROUPS = 3 };                             /* XPORT_REPLICAS, XPORT_LANE, XPORT_TIED */

typedef struct XpNccl {
    const XportOps *staged;   /* what NCCL does not carry */
    cudaStream_t compute;     /* the backend's (not ours) */
    cudaStream_t comm;        /* every NCCL operation of this rank, in host order */
    cudaEvent_t ready;        /* S1: recorded on compute before each launch */
    cudaEvent_t red;          /* recorded on comm after each reduction */
    ncclComm_t nc[NG_GROUPS]; /* per XportGroup; NULL: that group is staged */
    char why[NG_GROUPS][320]; /* for --verbose: what carries each group, and why */
    int p2p;                  /* the lane's transfers go over nc[XPORT_LANE] */
    XportReq **pending;       /* receives posted, not launched, in the order posted */
    int npending, cap;
    int open_recvs;           /* receives launched and not waited for (N1: all in the last group) */
    int reqs_with_events;     /* the requests' events were created */
} XpNccl;

static const XportOps xport_nccl;

static XpNccl *state_of(RtCtx *rt)
{
    return (XpNccl *)rt->xpd;
}

/* ---- checks ----------------------------------------------------------------------- */

/* Best effort, on the way out: a peer still inside an NCCL kernel with this
 * rank is released instead of spinning until MPI_Abort reaches it. */
static void abort_all(XpNccl *x)
{
    for (int g = 0; x && g < NG_GROUPS; g++) {
        if (x->nc[g]) {
            (void)ncclCommAbort(x->nc[g]);
            x->nc[g] = NULL;
        }
    }
}

static void nccl_failed(RtCtx *rt, const char *file, int line, const char *call, ncclResult_t r, ncclComm_t c)
    __attribute__((noreturn));
static void nccl_failed(RtCtx *rt, const char *file, int line, const char *call, ncclResult_t r, ncclComm_t c)
{
    char msg[512];
    const char *last = ncclGetLastError(c);
    snprintf(msg, sizeof msg, "%s", last ? last : "");
    abort_all(state_of(rt));
    rt_fail(rt, file, line, "%s failed: %s%s%s", call, ncclGetErrorString(r), msg[0] ? ": " : "", msg);
}

/* an NCCL call on communicator c (NULL: none yet) */
#define NC(rt, c, call)                                                   \
    do {                                                                  \
        ncclResult_t r_ = (call);                                         \
        if (r_ != ncclSuccess)                                            \
            nccl_failed((rt), __FILE__, __LINE__, #call, r_, (c));        \
    } while (0)
/* a CUDA runtime call */
#define CU(rt, call)                                                                                   \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) {                                                                       \
            abort_all(state_of(rt));                                                                   \
            rt_fail((rt), __FILE__, __LINE__, "%s failed: %s (%s)", #call, cudaGetErrorName(e_),       \
                    cudaGetErrorString(e_));                                                           \
        }                                                                                              \
    } while (0)

static const char *group_name(XportGroup g)
{
    return g == XPORT_REPLICAS ? "ReduceGrads over this stage's replicas"
           : g == XPORT_LANE   ? "the lane's transfers"
           : g == XPORT_TIED   ? "ReduceTiedGrads over the stages that hold tied weights"
                               : "the vote of every rank";
}

/* Polls ev until it completes (the host must see its data), watched as
 * xport_mpi.c's watch(): no progress for rt->watchdog_s seconds ends the
 * job, naming req (a transfer) or group g; an asynchronous NCCL error on
 * any of this rank's communicators ends it at once. Both abort the
 * communicators first. The time spent is added to rt->waited. */
static void poll(RtCtx *rt, XpNccl *x, cudaEvent_t ev, const XportReq *req, XportGroup g)
{
    cudaError_t e = cudaEventQuery(ev);
    if (e == cudaSuccess)
        return;
    double t0 = MPI_Wtime();
    for (unsigned spins = 1; e != cudaSuccess; spins++) {
        if (e != cudaErrorNotReady) {
            abort_all(x);
            rt_fail(rt, __FILE__, __LINE__, "waiting for %s: cudaEventQuery failed: %s (%s)", group_name(g),
                    cudaGetErrorName(e), cudaGetErrorString(e));
        }
        if ((spins & 255) == 0) {
            for (int k = 0; k < NG_GROUPS; k++) {
                ncclResult_t ar = ncclSuccess;
                if (!x->nc[k])
                    continue;
                NC(rt, x->nc[k], ncclCommGetAsyncError(x->nc[k], &ar));
                if (ar != ncclSuccess && ar != ncclInProgress) {
                    char msg[512];
                    const char *last = ncclGetLastError(x->nc[k]);
                    snprintf(msg, sizeof msg, "%s", last ? last : "");
                    abort_all(x);
                    rt_fail(rt, __FILE__, __LINE__, "NCCL error on the communicator of %s, waiting for %s: %s%s%s",
                            group_name((XportGroup)k), group_name(g), ncclGetErrorString(ar), msg[0] ? ": " : "",
                            msg);
                }
            }
            double now = MPI_Wtime();
            if (rt->watchdog_s > 0 && now - t0 > rt->watchdog_s) {
                abort_all(x);
                rt_stalled(rt, now - t0, req, req ? NULL : group_name(g));
            }
        }
        e = cudaEventQuery(ev);
    }
    rt->waited += MPI_Wtime() - t0;
}

/* ---- point-to-point ----------------------------------------------------------------- */

/* One group on the communication stream: every pending receive (in the
 * order posted, so NCCL's per-peer order is the program's) and, if send,
 * that send. S1 first; S2's events after. */
static void launch(RtCtx *rt, XpNccl *x, XportReq *send, const void *sbuf, int64_t sbytes)
{
    ncclComm_t c = x->nc[XPORT_LANE];
    /* N1: receives of earlier groups have all been waited for, so this
     * group waits for nothing the program has not waited for already */
    RT_CHECK(rt, x->open_recvs == 0,
             "NCCL transport: %d receive(s) launched earlier are still outstanding when another transfer is launched "
             "(the plan check should have kept this lane on the staged path)",
             x->open_recvs);
    CU(rt, cudaEventRecord(x->ready, x->compute));
    CU(rt, cudaStreamWaitEvent(x->comm, x->ready, 0));
    NC(rt, c, ncclGroupStart());
    for (int i = 0; i < x->npending; i++) {
        XportReq *r = x->pending[i];
        /* zero bytes on both sides (the sizes agree): no operation at all */
        if (r->nbytes > 0)
            NC(rt, c, ncclRecv(r->nbuf, (size_t)r->nbytes, ncclInt8, r->peer, c, x->comm));
    }
    if (send && sbytes > 0)
        NC(rt, c, ncclSend(sbuf, (size_t)sbytes, ncclInt8, send->peer, c, x->comm));
    NC(rt, c, ncclGroupEnd());
    for (int i = 0; i < x->npending; i++) {
        XportReq *r = x->pending[i];
        CU(rt, cudaEventRecord((cudaEvent_t)r->nev, x->comm));
        r->nstate = NQ_LAUNCHED;
        r->nbuf = NULL;
    }
    x->open_recvs += x->npending;
    x->npending = 0;
    if (send) {
        CU(rt, cudaEventRecord((cudaEvent_t)send->nev, x->comm));
        send->nstate = NQ_LAUNCHED;
    }
}

static void n_isend(RtCtx *rt, const void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    XpNccl *x = state_of(rt);
    RT_CHECK(rt, halves == 0, "the NCCL transport sends fp32 only (bf16 on the wire is the CPU backend's)");
    if (!x->p2p) {
        x->staged->isend(rt, buf, bytes, 0, peer, tag, req);
        return;
    }
    RT_CHECK(rt, bytes >= 0, "a send of %lld bytes", (long long)bytes);
    RT_CHECK(rt, req->nev && req->nstate == NQ_IDLE, "NCCL transport: a send from a request still pending");
    req->peer = peer, req->tag = tag, req->send = 1;
    launch(rt, x, req, buf, bytes);
}

static void n_irecv(RtCtx *rt, void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    XpNccl *x = state_of(rt);
    RT_CHECK(rt, halves == 0, "the NCCL transport receives fp32 only (bf16 on the wire is the CPU backend's)");
    if (!x->p2p) {
        x->staged->irecv(rt, buf, bytes, 0, peer, tag, req);
        return;
    }
    RT_CHECK(rt, bytes >= 0, "a receive of %lld bytes", (long long)bytes);
    RT_CHECK(rt, req->nev && req->nstate == NQ_IDLE, "NCCL transport: a receive into a request still pending");
    RT_CHECK(rt, x->npending < x->cap, "NCCL transport: more than %d receives posted at once", x->cap);
    req->peer = peer, req->tag = tag, req->send = 0;
    req->nbuf = buf, req->nbytes = bytes;
    req->nstate = NQ_POSTED;
    x->pending[x->npending++] = req;
}

/* Before the host blocks: every posted receive goes on the GPU (D1). */
static void flush(RtCtx *rt, XpNccl *x)
{
    if (x->npending > 0)
        launch(rt, x, NULL, NULL, 0);
}

static void n_wait(RtCtx *rt, XportReq *req)
{
    XpNccl *x = state_of(rt);
    if (!x->p2p) {
        x->staged->wait(rt, req);
        return;
    }
    if (req->nstate == NQ_IDLE)
        return;
    flush(rt, x);
    /* N2: the group of a receive holds no other receive still outstanding
     * (all outstanding receives are in the last group, by N1); for a
     * send's group only the plan check has N2 (which group a send was in
     * is not kept) */
    RT_CHECK(rt, req->send || x->open_recvs == 1,
             "NCCL transport: waiting for one receive would wait for %d other(s) launched with it (the plan check "
             "should have kept this lane on the staged path)",
             x->open_recvs - 1);
    poll(rt, x, (cudaEvent_t)req->nev, req, XPORT_LANE);
    /* S2: the compute queued from now on comes after the transfer */
    CU(rt, cudaStreamWaitEvent(x->compute, (cudaEvent_t)req->nev, 0));
    if (!req->send)
        x->open_recvs--;
    req->nstate = NQ_IDLE;
}

/* ---- reductions --------------------------------------------------------------------- */

static void n_allreduce_f32(RtCtx *rt, float *buf, int64_t n, XportGroup g)
{
    XpNccl *x = state_of(rt);
    if ((int)g >= NG_GROUPS || !x->nc[g]) {
        x->staged->allreduce_f32(rt, buf, n, g);
        return;
    }
    /* N3: no transfer of the lane is outstanding here */
    RT_CHECK(rt, x->npending == 0 && x->open_recvs == 0,
             "NCCL transport: a receive is outstanding at a reduction (the plan check should have caught it)");
    if (n <= 0)
        return;
    ncclComm_t c = x->nc[g];
    CU(rt, cudaEventRecord(x->ready, x->compute)); /* S1: after the backwards that made the gradients */
    CU(rt, cudaStreamWaitEvent(x->comm, x->ready, 0));
    NC(rt, c, ncclAllReduce(buf, buf, (size_t)n, ncclFloat, ncclSum, c, x->comm));
    CU(rt, cudaEventRecord(x->red, x->comm));
    poll(rt, x, x->red, NULL, g);
    CU(rt, cudaStreamWaitEvent(x->compute, x->red, 0)); /* S2: the norm and the update read the sums */
}

/* f64 sums are host values (votes, losses, norms): MPI, as before. The
 * host blocks in MPI, so posted receives go on the GPU first (D1). */
static void n_allreduce_f64(RtCtx *rt, double *buf, int64_t n, XportGroup g)
{
    XpNccl *x = state_of(rt);
    if (x->p2p)
        flush(rt, x);
    x->staged->allreduce_f64(rt, buf, n, g);
}

static const XportOps xport_nccl = {"nccl", n_isend, n_irecv, n_wait, n_allreduce_f32, n_allreduce_f64, NULL, NULL, NULL};

/* ---- opening and closing -------------------------------------------------------------- */

/* The vote over group communicator c: 1 on every rank when each rank has
 * its own GPU and every rank is willing; else 0 on every rank, with why. */
static int group_vote(RtCtx *rt, MPI_Comm c, const unsigned char uuid[16], int willing, char *why, size_t whysize)
{
    int size = 0, me = 0;
    RT_MPI(rt, MPI_Comm_size(c, &size));
    RT_MPI(rt, MPI_Comm_rank(c, &me));
    if (size < 2) {
        snprintf(why, whysize, "one rank, nothing to carry");
        return 0;
    }
    /* 16 bytes of device UUID, then the world rank (for the message) */
    unsigned char mine[20], *all = rt_alloc(rt, (size_t)size * sizeof mine, "device ids");
    memcpy(mine, uuid, 16);
    memcpy(mine + 16, &rt->rank, 4);
    RT_MPI(rt, MPI_Allgather(mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, c));
    int shared = 0;
    for (int i = 0; i < size && !shared; i++)
        for (int j = i + 1; j < size && !shared; j++)
            if (memcmp(all + 20 * (size_t)i, all + 20 * (size_t)j, 16) == 0) {
                int ri, rj;
                memcpy(&ri, all + 20 * (size_t)i + 16, 4);
                memcpy(&rj, all + 20 * (size_t)j + 16, 4);
                snprintf(why, whysize, "ranks %d and %d share a GPU", ri, rj);
                shared = 1;
            }
    free(all);
    int ok = willing && !shared, every = 0;
    RT_MPI(rt, MPI_Allreduce(&ok, &every, 1, MPI_INT, MPI_MIN, c));
    if (!every && !shared && willing)
        snprintf(why, whysize, "another rank of the group declined (PIPE_NCCL=0 there, or its check failed)");
    return every;
}

/* ncclCommInitRank over c, the id from c's rank 0 (collective over c) */
static ncclComm_t make_comm(RtCtx *rt, MPI_Comm c)
{
    int size = 0, me = 0;
    RT_MPI(rt, MPI_Comm_size(c, &size));
    RT_MPI(rt, MPI_Comm_rank(c, &me));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (me == 0)
        NC(rt, NULL, ncclGetUniqueId(&id));
    RT_MPI(rt, MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c));
    ncclComm_t nc = NULL;
    NC(rt, NULL, ncclCommInitRank(&nc, size, id, me));
    return nc;
}

static void each_req(RtCtx *rt, void (*fn)(RtCtx *, XportReq *))
{
    for (int ci = 0; ci < rt->chunks; ci++) {
        RtChunk *ch = &rt->chunk[ci];
        for (int b = 0; b < ch->nbuf; b++)
            fn(rt, &ch->out_req[b]), fn(rt, &ch->in_req[b]), fn(rt, &ch->dout_req[b]);
        for (int k = 0; k < ch->gin_n; k++)
            fn(rt, &ch->gin_req[k]);
    }
}

static void req_event(RtCtx *rt, XportReq *r)
{
    cudaEvent_t ev;
    CU(rt, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    r->nev = ev;
    r->nstate = NQ_IDLE;
    r->nbuf = NULL, r->nbytes = 0;
}

static void req_unevent(RtCtx *rt, XportReq *r)
{
    if (r->nev)
        CU(rt, cudaEventDestroy((cudaEvent_t)r->nev));
    r->nev = NULL;
    r->nstate = NQ_IDLE;
}

/* D5: this rank's lane peers (ranks of pipe_comm) that its training and
 * evaluation programs send to or receive from; the relation is symmetric
 * (every send has its receive), so both sides of a pair list each other.
 * Returns how many, written to peers (at most size). */
static int lane_peers(const RtCtx *rt, int *peers, int size)
{
    const SchedPlan *plans[2] = {&rt->ir.sched.train, &rt->ir.sched.eval};
    int n = 0;
    for (int k = 0; k < 2; k++) {
        if (!plans[k]->prog)
            continue;
        const SchedProgram *pr = &plans[k]->prog[rt->stage];
        for (int i = 0; i < pr->n; i++) {
            const SchedInstr *in = &pr->ins[i];
            if (in->op != SCHED_SendActivation && in->op != SCHED_RecvActivation && in->op != SCHED_SendGrad &&
                in->op != SCHED_RecvGrad)
                continue;
            int p = in->peer, seen = 0;
            for (int j = 0; j < n; j++)
                seen |= peers[j] == p;
            if (!seen && p >= 0 && p < size && p != rt->stage)
                peers[n++] = p;
        }
    }
    return n;
}

/* D5: every connection this rank's NCCL work will use is made here, with
 * every rank of each group present: the lane (if NCCL carries it) by one
 * group of one-byte sends and receives with each peer, then each
 * reduction communicator by a one-element sum; in the order lane,
 * replicas, tied on every rank, each waited for (watchdog included)
 * before the next, so no rank enters a group's warm-up before finishing
 * the ones before it, and each group's ranks all reach it. */
static void warm_up(RtCtx *rt, XpNccl *x)
{
    int size = 1;
    if (x->nc[XPORT_LANE])
        RT_MPI(rt, MPI_Comm_size(rt->pipe_comm, &size));
    /* one float for the sums, then a byte to send and one per peer to receive */
    unsigned char *buf = NULL;
    size_t bytes = sizeof(float) + 1 + (size_t)size;
    CU(rt, cudaMalloc((void **)&buf, bytes));
    CU(rt, cudaMemsetAsync(buf, 0, bytes, x->comm));
    const int order[NG_GROUPS] = {XPORT_LANE, XPORT_REPLICAS, XPORT_TIED};
    for (int k = 0; k < NG_GROUPS; k++) {
        int g = order[k];
        ncclComm_t c = x->nc[g];
        if (!c)
            continue;
        if (g == XPORT_LANE) {
            int *peers = rt_alloc(rt, (size_t)size * sizeof *peers, "NCCL warm-up");
            int n = lane_peers(rt, peers, size);
            unsigned char *out = buf + sizeof(float), *in = out + 1;
            NC(rt, c, ncclGroupStart());
            for (int i = 0; i < n; i++) {
                NC(rt, c, ncclSend(out, 1, ncclInt8, peers[i], c, x->comm));
                NC(rt, c, ncclRecv(in + peers[i], 1, ncclInt8, peers[i], c, x->comm));
            }
            NC(rt, c, ncclGroupEnd());
            free(peers);
        } else {
            NC(rt, c, ncclAllReduce(buf, buf, 1, ncclFloat, ncclSum, c, x->comm));
        }
        CU(rt, cudaEventRecord(x->red, x->comm));
        poll(rt, x, x->red, NULL, (XportGroup)g);
    }
    CU(rt, cudaStreamSynchronize(x->comm));
    CU(rt, cudaFree(buf));
}

int xp_nccl_open(RtCtx *rt, cudaStream_t compute, const unsigned char uuid[16], const XportOps *staged, int *p2p)
{
    XpNccl *x = rt_alloc(rt, sizeof *x, "NCCL transport");
    x->staged = staged;
    x->compute = compute;
    rt->xpd = x;
    *p2p = 0;
    const char *env = getenv("PIPE_NCCL");
    int willing = !(env && strcmp(env, "0") == 0);
    /* one phase per group, in the same order on every rank (lane, replicas,
     * tied), each collective over a partition of the ranks (tied: of those
     * holding tied weights), so the blocking votes and ncclCommInitRank
     * calls cannot wait on each other across groups */
    MPI_Comm comms[NG_GROUPS] = {rt->dp_comm, rt->pipe_comm, rt->tied_comm};
    const int order[NG_GROUPS] = {XPORT_LANE, XPORT_REPLICAS, XPORT_TIED};
    int any = 0;
    for (int k = 0; k < NG_GROUPS; k++) {
        int g = order[k];
        char *why = x->why[g];
        if (comms[g] == MPI_COMM_NULL) {
            snprintf(why, sizeof x->why[g], "not in this group");
            continue;
        }
        int w = willing;
        if (!w)
            snprintf(why, sizeof x->why[g], "PIPE_NCCL=0");
        else if (g == XPORT_LANE && !xp_nccl_plan_ok(&rt->ir.sched, why, sizeof x->why[g]))
            w = 0;
        if (group_vote(rt, comms[g], uuid, w, why, sizeof x->why[g])) {
            x->nc[g] = make_comm(rt, comms[g]);
            snprintf(why, sizeof x->why[g], "one GPU per rank");
            any = 1;
        }
    }
    if (!any)
        return 0;
    CU(rt, cudaStreamCreateWithFlags(&x->comm, cudaStreamNonBlocking));
    CU(rt, cudaEventCreateWithFlags(&x->ready, cudaEventDisableTiming));
    CU(rt, cudaEventCreateWithFlags(&x->red, cudaEventDisableTiming));
    warm_up(rt, x);
    if (x->nc[XPORT_LANE]) {
        x->p2p = 1;
        for (int ci = 0; ci < rt->chunks; ci++)
            x->cap += 3 * rt->chunk[ci].nbuf + 1; /* at most every request at once */
        x->pending = rt_alloc(rt, (size_t)(x->cap ? x->cap : 1) * sizeof *x->pending, "NCCL transport");
        each_req(rt, req_event);
        x->reqs_with_events = 1;
    }
    *p2p = x->p2p;
    rt->xp = &xport_nccl;
    return 1;
}

void xp_nccl_describe(const RtCtx *rt, char *buf, size_t size)
{
    const XpNccl *x = rt->xpd;
    if (!x) {
        snprintf(buf, size, "no NCCL transport");
        return;
    }
    snprintf(buf, size, "transfers between stages: %s (%s); ReduceGrads: %s (%s); ReduceTiedGrads: %s (%s)",
             x->nc[XPORT_LANE] ? "nccl" : x->staged->name, x->why[XPORT_LANE],
             x->nc[XPORT_REPLICAS] ? "nccl" : x->staged->name, x->why[XPORT_REPLICAS],
             x->nc[XPORT_TIED] ? "nccl" : x->staged->name, x->why[XPORT_TIED]);
}

void xp_nccl_close(RtCtx *rt)
{
    XpNccl *x = state_of(rt);
    if (!x)
        return;
    /* every pass ended with every transfer waited for; this waits for
     * anything left on the stream all the same before it goes */
    if (x->comm)
        CU(rt, cudaStreamSynchronize(x->comm));
    /* the same order on every rank: ncclCommDestroy may synchronise with
     * the group's other ranks */
    const int order[NG_GROUPS] = {XPORT_LANE, XPORT_REPLICAS, XPORT_TIED};
    for (int k = 0; k < NG_GROUPS; k++) {
        ncclComm_t c = x->nc[order[k]];
        if (c)
            NC(rt, c, ncclCommDestroy(c));
        x->nc[order[k]] = NULL;
    }
    if (x->reqs_with_events)
        each_req(rt, req_unevent);
    if (x->ready)
        CU(rt, cudaEventDestroy(x->ready));
    if (x->red)
        CU(rt, cudaEventDestroy(x->red));
    if (x->comm)
        CU(rt, cudaStreamDestroy(x->comm));
    free(x->pending);
    if (rt->xp == &xport_nccl)
        rt->xp = x->staged;
    free(x);
    rt->xpd = NULL;
}
