/* runtime/xport_mpi.c: the MPI transport. Point-to-point on the lane's
 * communicator (whose ranks are stages), MPI_Isend/MPI_Irecv with a tag per
 * kind, so MPI's ordering per (sender, tag) is the verifier's channel order;
 * reductions with MPI_Iallreduce on the group's communicator. Waits poll
 * MPI_Test (as MPI_Wait does inside Open MPI) so the watchdog can look at
 * the clock. Counts above
 * INT_MAX are sent in pieces, never truncated. */
#include <limits.h>
#include <string.h>

#include "rt.h"
#include "xport.h"

static const char *group_name(XportGroup g)
{
    return g == XPORT_REPLICAS ? "the sum over this stage's replicas"
           : g == XPORT_LANE   ? "the sum over every stage of the lane"
           : g == XPORT_TIED   ? "the sum over the stages that hold tied weights"
           : g == XPORT_TP     ? "the sum over this stage's tensor-parallel ranks"
                               : "the vote of every rank at the end of the step";
}

static MPI_Comm group_comm(RtCtx *rt, XportGroup g)
{
    MPI_Comm c = g == XPORT_REPLICAS ? rt->dp_comm
                 : g == XPORT_LANE   ? rt->pipe_comm
                 : g == XPORT_TIED   ? rt->tied_comm
                 : g == XPORT_TP     ? rt->tp_comm
                                     : MPI_COMM_WORLD;
    RT_CHECK(rt, c != MPI_COMM_NULL, "no communicator for transport group %d", (int)g);
    return c;
}

/* Waits for r, polling, so that a wait with no progress for
 * rt->watchdog_s seconds (0: forever) is reported instead of hanging;
 * the time spent waiting is added to rt->waited (traces). */
static void watch(RtCtx *rt, MPI_Request *r, const XportReq *what, const char *group)
{
    int done = 0;
    RT_MPI(rt, MPI_Test(r, &done, MPI_STATUS_IGNORE));
    if (done)
        return;
    double t0 = MPI_Wtime(), now = t0;
    for (unsigned spins = 1; !done; spins++) {
        RT_MPI(rt, MPI_Test(r, &done, MPI_STATUS_IGNORE));
        if (!done && (spins & 255) == 0) {
            now = MPI_Wtime();
            if (rt->watchdog_s > 0 && now - t0 > rt->watchdog_s)
                rt_stalled(rt, now - t0, what, group);
        }
    }
    rt->waited += MPI_Wtime() - t0;
}

/* The type of a message whose first `halves` floats travel as their high
 * two bytes (bf16, little-endian) and the rest of its `bytes` as they
 * are, or MPI_BYTE (with count bytes) when halves is 0. */
static MPI_Datatype wire_type(RtCtx *rt, int64_t bytes, int64_t halves, int *count)
{
    RT_CHECK(rt, bytes >= 0 && bytes <= INT_MAX, "a transfer of %lld bytes is too large for one MPI message",
             (long long)bytes);
    RT_CHECK(rt, halves >= 0 && halves * 4 <= bytes, "a transfer of %lld bf16 values in %lld bytes", (long long)halves,
             (long long)bytes);
    if (halves == 0) {
        *count = (int)bytes;
        return MPI_BYTE;
    }
    MPI_Datatype tops, t;
    int lens[2] = {1, (int)(bytes - halves * 4)};
    MPI_Aint disp[2] = {2, (MPI_Aint)(halves * 4)}; /* a float's high half, little-endian */
    RT_MPI(rt, MPI_Type_vector((int)halves, 2, 4, MPI_BYTE, &tops));
    MPI_Datatype types[2] = {tops, MPI_BYTE};
    RT_MPI(rt, MPI_Type_create_struct(lens[1] > 0 ? 2 : 1, lens, disp, types, &t));
    RT_MPI(rt, MPI_Type_commit(&t));
    RT_MPI(rt, MPI_Type_free(&tops));
    *count = 1;
    return t;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bf16 on the wire (wire_type) takes a float's high half at byte 2: little-endian only"
#endif

static void mpi_isend(RtCtx *rt, const void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    int count;
    MPI_Datatype t = wire_type(rt, bytes, halves, &count);
    RT_MPI(rt, MPI_Isend(buf, count, t, peer, tag, rt->pipe_comm, &req->mpi));
    if (t != MPI_BYTE) /* freed once the send is done with it */
        RT_MPI(rt, MPI_Type_free(&t));
    req->peer = peer, req->tag = tag, req->send = 1;
}

static void mpi_irecv(RtCtx *rt, void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    int count;
    MPI_Datatype t = wire_type(rt, bytes, halves, &count);
    if (halves > 0) /* the low halves the message does not carry */
        memset(buf, 0, (size_t)halves * 4);
    RT_MPI(rt, MPI_Irecv(buf, count, t, peer, tag, rt->pipe_comm, &req->mpi));
    if (t != MPI_BYTE)
        RT_MPI(rt, MPI_Type_free(&t));
    req->peer = peer, req->tag = tag, req->send = 0;
}

static void mpi_wait(RtCtx *rt, XportReq *req)
{
    if (req->mpi != MPI_REQUEST_NULL)
        watch(rt, &req->mpi, req, NULL);
}

static void mpi_allreduce_f32(RtCtx *rt, float *buf, int64_t n, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    for (int64_t at = 0; at < n; at += INT_MAX / 2) {
        int k = (int)(n - at < INT_MAX / 2 ? n - at : INT_MAX / 2);
        MPI_Request r;
        RT_MPI(rt, MPI_Iallreduce(MPI_IN_PLACE, buf + at, k, MPI_FLOAT, MPI_SUM, c, &r));
        watch(rt, &r, NULL, group_name(g));
    }
}

static void mpi_allreduce_f64(RtCtx *rt, double *buf, int64_t n, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    RT_CHECK(rt, n <= INT_MAX, "reduction too large");
    MPI_Request r;
    RT_MPI(rt, MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, c, &r));
    watch(rt, &r, NULL, group_name(g));
}

static void mpi_reduce_scatter_f32(RtCtx *rt, float *buf, int64_t shard, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    int me = 0;
    RT_CHECK(rt, shard <= INT_MAX, "a ZeRO shard of %lld elements is too large for one MPI reduction", (long long)shard);
    RT_MPI(rt, MPI_Comm_rank(c, &me));
    MPI_Request r;
    /* in place: the whole buffer in, this member's sum at its start */
    RT_MPI(rt, MPI_Ireduce_scatter_block(MPI_IN_PLACE, buf, (int)shard, MPI_FLOAT, MPI_SUM, c, &r));
    watch(rt, &r, NULL, "the reduce-scatter over this stage's replicas (ZeRO)");
    if (me > 0)
        memmove(buf + (int64_t)me * shard, buf, (size_t)shard * sizeof(float));
}

static void mpi_allgather_f32(RtCtx *rt, float *buf, int64_t shard, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    RT_CHECK(rt, shard <= INT_MAX, "a ZeRO shard of %lld elements is too large for one MPI gather", (long long)shard);
    MPI_Request r;
    RT_MPI(rt, MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)shard, MPI_FLOAT, c, &r));
    watch(rt, &r, NULL, "the all-gather over this stage's replicas (ZeRO)");
}

/* Open MPI moves a message larger than its eager limit in fragments, each
 * pushed by the sender from inside an MPI call, unless a single-copy
 * mechanism (CMA, XPMEM, KNEM) lets the receiver pull it all: without one
 * (btl_vader_single_copy_mechanism = none, as in containers that refuse
 * process_vm_readv) an activation sent with MPI_Isend before a Forward
 * crawls while the sender computes, and the receiver idles. One
 * MPI_Iprobe after each layer runs the progress engine; it costs well
 * under a microsecond. Measured: docs/benchmarks.md. */
void xport_mpi_progress(RtCtx *rt)
{
    int flag;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, rt->pipe_comm, &flag, MPI_STATUS_IGNORE);
}

const XportOps xport_mpi = {"mpi",           mpi_isend,         mpi_irecv,
                            mpi_wait,        mpi_allreduce_f32, mpi_allreduce_f64,
                            mpi_reduce_scatter_f32, mpi_allgather_f32, xport_mpi_progress};
