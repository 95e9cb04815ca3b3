/* runtime/xport_nccl.h: the NCCL transport (xport_nccl.c) for --device
 * cuda, built into pipert-cuda.so where CMake found NCCL (PIPE_HAVE_NCCL).
 * rt_cuda.c opens it at the end of its setup and closes it at teardown;
 * the interpreter sees only rt->xp (xport.h). docs/gpu.md says what it
 * does and why its ordering cannot deadlock. */
#ifndef PIPE_XPORT_NCCL_H
#define PIPE_XPORT_NCCL_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "rt.h"

/* Collective over each of rt's group communicators (every rank calls it,
 * at the same point of its setup). Decides, per group, whether NCCL
 * carries it: the lane's point-to-point (pipe_comm), ReduceGrads
 * (dp_comm), ReduceTiedGrads (tied_comm). A group goes over NCCL when it
 * has more than one rank, every one of its ranks has its own GPU (uuid:
 * this rank's device UUID, 16 bytes; no two equal in the group), no rank
 * set PIPE_NCCL=0, and, for the lane, the plan passes the check of
 * xport_nccl_plan.c (xp_nccl_plan_ok); the decision is a vote over the
 * group, so it is the same on all its ranks. Creates one communicator per such
 * group (ncclCommInitRank from an id broadcast over the group's MPI
 * communicator), the communication stream and the requests' events.
 * What NCCL does not carry goes through `staged`.
 *
 * rt->xpd holds the transport's state (and, for --verbose, each group's
 * reason) either way. When any group goes over NCCL it installs the
 * transport (rt->xp) and returns 1, else it leaves rt->xp alone and
 * returns 0. *p2p is set
 * to whether the lane's point-to-point goes over NCCL (the requests then
 * need no staging buffers). */
int xp_nccl_open(RtCtx *rt, cudaStream_t compute, const unsigned char uuid[16], const XportOps *staged, int *p2p);
/* For --verbose: which transport each group uses, and why. */
void xp_nccl_describe(const RtCtx *rt, char *buf, size_t size);
/* Waits for the communication stream, destroys the communicators, events
 * and stream; rt->xp goes back to `staged`. Safe when nothing was opened. */
void xp_nccl_close(RtCtx *rt);

#endif
