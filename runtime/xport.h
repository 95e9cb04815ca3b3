/* runtime/xport.h: the transport behind the interpreter's transfers and
 * reductions. Every wait is watched: a wait that makes no progress for
 * rt->watchdog_s seconds ends the job with the rank, the instruction, the
 * step and the peer it waited for (rt_stalled). One table of operations per transport; xport_mpi.c is the MPI
 * one (always built); rt_cuda.c stages it through host memory for device
 * buffers, and xport_nccl.c (--device cuda, where NCCL was found) carries
 * the groups whose ranks each have their own GPU. Peers are stages
 * of the caller's data-parallel lane; groups name which ranks reduce
 * together. Failures are fatal (rt_fail names the rank and instruction). */
#ifndef PIPE_XPORT_H
#define PIPE_XPORT_H

#include <mpi.h>
#include <stdint.h>

struct RtCtx;

typedef struct XportReq {
    MPI_Request mpi;         /* MPI_REQUEST_NULL when none is pending */
    int peer, tag;           /* for the watchdog's message */
    int send;
    /* device buffers over MPI (rt_cuda.c's staged transport; unused on the
     * CPU): a pinned host buffer of cap bytes owned by this request, the
     * device destination of a receive not yet copied in (NULL: none), its
     * bytes, and an event (cudaEvent_t) recorded after that copy, which the
     * next receive into host waits for */
    void *host, *dev, *ev;
    int64_t cap, bytes;
    /* the NCCL transport (xport_nccl.c; unused by the others): an event
     * (cudaEvent_t) that xport_nccl records on its communication stream
     * after the group holding this request's ncclSend / ncclRecv; the
     * request's state there (0 idle, 1 a receive posted but not launched
     * yet, 2 launched, not yet waited for); a posted receive's destination
     * and bytes until it is launched */
    void *nev;
    int nstate;
    void *nbuf;
    int64_t nbytes;
} XportReq;

typedef enum XportGroup {
    XPORT_REPLICAS,          /* this stage's data-parallel replicas (ReduceGrads) */
    XPORT_LANE,              /* every stage of this replica's lane (global norms) */
    XPORT_TIED,              /* the lane's stages that hold tied weights (ReduceTiedGrads) */
    XPORT_WORLD,             /* every rank (pipert's votes at step boundaries) */
    XPORT_TP                 /* this stage's tensor-parallel ranks of this replica (the split blocks' sums) */
} XportGroup;

enum { XPORT_TAG_ACTIVATION = 1, XPORT_TAG_GRAD = 2 };

typedef struct XportOps {
    const char *name;
    /* non-blocking point-to-point; bytes may be 0. The first `halves`
     * floats of buf travel as bf16: the high two bytes of each (floats
     * that are bf16 values already, k_bf16_round_values), the bytes after
     * them as they are; a receive sets the low two bytes to zero. Only
     * the MPI transport takes halves > 0 (the CPU backend's precision =
     * bf16); the others are called with 0. */
    void (*isend)(struct RtCtx *rt, const void *buf, int64_t bytes, int64_t halves, int peer_stage, int tag,
                  XportReq *req);
    void (*irecv)(struct RtCtx *rt, void *buf, int64_t bytes, int64_t halves, int peer_stage, int tag, XportReq *req);
    /* waits for a pending request (nothing when none) */
    void (*wait)(struct RtCtx *rt, XportReq *req);
    /* in-place sums over a group */
    void (*allreduce_f32)(struct RtCtx *rt, float *buf, int64_t n, XportGroup g);
    void (*allreduce_f64)(struct RtCtx *rt, double *buf, int64_t n, XportGroup g);
    /* ZeRO (rt_zero.c), in place over buf's shard x group-size floats, the
     * member of rank r owning [r x shard, (r+1) x shard): reduce_scatter
     * leaves the sum of its part there; allgather gives every member every
     * member's part. NULL where a transport has neither (the GPU's, so far) */
    void (*reduce_scatter_f32)(struct RtCtx *rt, float *buf, int64_t shard, XportGroup g);
    void (*allgather_f32)(struct RtCtx *rt, float *buf, int64_t shard, XportGroup g);
    /* lets pending transfers move on while this rank computes (called
     * after every layer's half); NULL where they move by themselves */
    void (*progress)(struct RtCtx *rt);
} XportOps;

extern const XportOps xport_mpi;
/* xport_mpi's progress, which the CUDA backend's staged MPI shares */
void xport_mpi_progress(struct RtCtx *rt);

static inline XportReq xport_none(void)
{
    XportReq r = {MPI_REQUEST_NULL, -1, 0, 0, NULL, NULL, NULL, 0, 0, NULL, 0, NULL, 0};
    return r;
}

#endif
