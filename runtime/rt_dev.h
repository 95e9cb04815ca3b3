/* runtime/rt_dev.h: the device layer. The interpreter's code is written
 * once over pointers into its arenas; where it touches memory or calls a
 * kernel it asks rt->gpu:
 *
 *   rt->gpu == NULL   the CPU: every arena is host memory, every call site
 *                     runs the host code (memmove, calloc), and the layers
 *                     run through rt_cpu_layers (rt_cpu.c: k_* kernels);
 *   rt->gpu != NULL   a GPU backend (rt_cuda.c, --device cuda): the
 *                     activation slots, work, scratch, recompute workspaces,
 *                     input gradients and rt->dparams / dgrads / dstate are
 *                     device memory, and the table below runs the rest,
 *                     its layer table (rt->layers) each layer.
 *
 * Why this table for the GPU only: outside the layers, the CPU's code is a
 * memmove or a loop at each call site and stays there, word for word, so
 * its losses cannot move (docs/design-notes.md). The pointer arithmetic of
 * rt_layers.c (slot + offset) is the same for device pointers: only the
 * kernels and the copies differ. The layers have a table per backend, the
 * CPU's included (rt.h's RtLayerOps).
 *
 * Streams: every GPU operation of the table is queued on the backend's one
 * compute stream (KcCtx.stream), in the interpreter's order; the table's
 * functions that give host memory back (fetch_losses, grad_sumsq, to_host)
 * synchronise it. Failures end the job through rt_fail with the rank, the
 * instruction and, for a layer, its index and kind. */
#ifndef PIPE_RT_DEV_H
#define PIPE_RT_DEV_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

typedef struct RtGpuOps {
    const char *name;
    /* memory, zeroed at allocation; alloc and free outside the step loop */
    void *(*alloc)(RtCtx *rt, size_t bytes, const char *what);
    void (*free)(RtCtx *rt, void *p);
    /* device to device, queued on the stream (the regions do not overlap) */
    void (*copy)(RtCtx *rt, void *dst, const void *src, size_t bytes);
    /* rt_setup: after the host parameters are initialised, before the
     * layers are bound: the device arenas, filled from the host ones */
    void (*params)(RtCtx *rt);
    /* rt_setup's end: workspace, conv plans, loss results, staging buffers,
     * the transport */
    void (*setup)(RtCtx *rt);
    void (*teardown)(RtCtx *rt);
    /* the layers: the backend's table, one row per layers.def entry (rt.h) */
    const RtLayerOps *layers;
    /* the loss of one micro-batch, queued; its totals reach rt->loss_sum,
     * loss_count, correct at fetch_losses, in the order queued */
    void (*loss)(RtCtx *rt, const RtLayerRt *last, float *dlogits, const float *logits, const void *targets);
    void (*fetch_losses)(RtCtx *rt);
    /* LoadMicroBatch: a host buffer laid out as the slot's input tuple and
     * targets, free to write; then its copy into the slot */
    unsigned char *(*load_begin)(RtCtx *rt, RtChunk *ch);
    void (*load_end)(RtCtx *rt, RtChunk *ch, unsigned char *slot);
    /* OptimizerStep: the sum of squares of every gradient that counts in the
     * norm, per tensor on the device, summed on the host in rt->param order;
     * then clip by factor (< 1) and update, and zero the gradients */
    double (*grad_sumsq)(RtCtx *rt);
    void (*update)(RtCtx *rt, double factor, double lr);
    /* y += x over n floats of the activation arenas, queued (a residual
     * block's addition, rt_residual.c) */
    void (*add)(RtCtx *rt, float *y, const float *x, int64_t n);
    /* ReduceTiedGrads on one stage: own.g += copy.g; copy.g = own.g */
    void (*add_tied)(RtCtx *rt, RtParam *own, RtParam *copy);
    /* waits for the stream (traces time each instruction to its end) */
    void (*sync)(RtCtx *rt);
    /* checkpoints: device parameters and optimizer state to the host arenas
     * (before a save), and back (after a resume) */
    void (*to_host)(RtCtx *rt);
    void (*to_device)(RtCtx *rt);
    /* the buffer arena alone (rt->bufs, batchnorm2d's running statistics),
     * to the host or to the device: the replicas' agreement after a step */
    void (*buffers)(RtCtx *rt, int to_device);
} RtGpuOps;

#ifdef PIPE_HAVE_CUDA
/* rt_cuda.c, built as the module pipert-cuda.so, which pipert loads
 * (dlopen) for --device cuda only and which takes the runtime's functions
 * from pipert. rt_cuda_open: before rt_setup, collective: picks this rank's
 * GPU (local rank modulo the visible GPUs), creates its KcCtx and installs
 * its table as rt->gpu. Returns 0, or -1 on every rank with the lowest failing
 * rank's reason in err ("no CUDA device (cudaGetDeviceCount: ...)"). */
int rt_cuda_open(RtCtx *rt, char *err, size_t errsize);
#endif

/* Memory of the activation arenas: the device's, or calloc's (rt_alloc);
 * counted as training memory of that kind. */
static inline void *rt_dev_alloc(RtCtx *rt, RtMem kind, size_t bytes, const char *what)
{
    rt_mem_count(rt, kind, bytes);
    return rt->gpu ? rt->gpu->alloc(rt, bytes, what) : rt_alloc(rt, bytes, what);
}

static inline void rt_dev_free(RtCtx *rt, void *p)
{
    if (rt->gpu)
        rt->gpu->free(rt, p);
    else
        free(p);
}

/* A copy inside the activation arenas (memmove on the CPU, as before). */
static inline void rt_dev_copy(RtCtx *rt, void *dst, const void *src, size_t bytes)
{
    if (rt->gpu)
        rt->gpu->copy(rt, dst, src, bytes);
    else
        memmove(dst, src, bytes);
}

#endif
