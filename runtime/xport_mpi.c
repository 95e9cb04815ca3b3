/* runtime/xport_mpi.c: the MPI transport. Point-to-point on the lane's
 * communicator (whose ranks are stages), MPI_Isend/MPI_Irecv with a tag per
 * kind, so MPI's ordering per (sender, tag) is the verifier's channel order;
 * reductions with MPI_Allreduce on the group's communicator. Counts above
 * INT_MAX are sent in pieces, never truncated. */
#include <limits.h>

#include "rt.h"
#include "xport.h"

static MPI_Comm group_comm(RtCtx *rt, XportGroup g)
{
    MPI_Comm c = g == XPORT_REPLICAS ? rt->dp_comm : g == XPORT_LANE ? rt->pipe_comm : rt->tied_comm;
    RT_CHECK(rt, c != MPI_COMM_NULL, "no communicator for transport group %d", (int)g);
    return c;
}

static void mpi_isend(RtCtx *rt, const void *buf, int64_t bytes, int peer, int tag, XportReq *req)
{
    RT_CHECK(rt, bytes >= 0 && bytes <= INT_MAX, "a transfer of %lld bytes is too large for one MPI message",
             (long long)bytes);
    RT_MPI(rt, MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, rt->pipe_comm, &req->mpi));
}

static void mpi_irecv(RtCtx *rt, void *buf, int64_t bytes, int peer, int tag, XportReq *req)
{
    RT_CHECK(rt, bytes >= 0 && bytes <= INT_MAX, "a transfer of %lld bytes is too large for one MPI message",
             (long long)bytes);
    RT_MPI(rt, MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, rt->pipe_comm, &req->mpi));
}

static void mpi_wait(RtCtx *rt, XportReq *req)
{
    if (req->mpi != MPI_REQUEST_NULL)
        RT_MPI(rt, MPI_Wait(&req->mpi, MPI_STATUS_IGNORE));
}

static void mpi_allreduce_f32(RtCtx *rt, float *buf, int64_t n, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    for (int64_t at = 0; at < n; at += INT_MAX / 2) {
        int k = (int)(n - at < INT_MAX / 2 ? n - at : INT_MAX / 2);
        RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, buf + at, k, MPI_FLOAT, MPI_SUM, c));
    }
}

static void mpi_allreduce_f64(RtCtx *rt, double *buf, int64_t n, XportGroup g)
{
    MPI_Comm c = group_comm(rt, g);
    RT_CHECK(rt, n <= INT_MAX, "reduction too large");
    RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, c));
}

const XportOps xport_mpi = {"mpi", mpi_isend, mpi_irecv, mpi_wait, mpi_allreduce_f32, mpi_allreduce_f64};
