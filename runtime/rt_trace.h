/* runtime/rt_trace.h: `pipert --trace FILE`, a Chrome trace (Perfetto,
 * chrome://tracing) of the real run: one row per rank, one box per
 * executed instruction of the training program, named and described by
 * the same printer as the listing (sched_instr_label/sched_instr_text),
 * with its micro-batch, step and bytes. A box starts when the instruction
 * stops waiting for its data (the transport counts waits in rt->waited),
 * so gaps between boxes are idle time. Clocks are aligned to rank 0's by
 * ping-pong at start-up. Events go into an array sized at start-up (at
 * most RT_TRACE_MAX per rank; later steps are counted, not kept). */
#ifndef PIPE_RT_TRACE_H
#define PIPE_RT_TRACE_H

#include <stdint.h>

#define RT_TRACE_MAX (1 << 21)

struct RtCtx;

typedef struct RtEvent {
    double t0, t1;           /* this rank's clock (MPI_Wtime) */
    int64_t bytes;           /* moved by a transfer, 0 for compute */
    int32_t pc, step;        /* instruction of the stage's training program; step from 1 */
} RtEvent;

typedef struct RtTrace {
    RtEvent *ev;
    int64_t n, cap, dropped;
    double offset;           /* this rank's clock minus rank 0's */
} RtTrace;

/* Collective: allocates room for `steps` training steps and aligns clocks. */
void rt_trace_open(struct RtCtx *rt, int64_t steps);

static inline void rt_trace_add(RtTrace *t, int pc, int64_t step, double t0, double t1, int64_t bytes)
{
    if (t->n < t->cap) {
        RtEvent *e = &t->ev[t->n++];
        e->t0 = t0, e->t1 = t1, e->bytes = bytes, e->pc = pc, e->step = (int32_t)step;
    } else {
        t->dropped++;
    }
}

/* Collective: rank 0 gathers every rank's events, writes the trace to
 * path, and prints each rank's measured idle fraction beside the plan's
 * prediction. Frees the events. */
void rt_trace_close(struct RtCtx *rt, const char *path);

#endif
