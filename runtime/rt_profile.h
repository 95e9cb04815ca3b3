/* runtime/rt_profile.h: `pipert PLAN --profile FILE`: the costs of this
 * model on this machine, measured while it trains, for pipec's
 * `costs = profile("FILE")` (plan/plan_profile.h, docs/profiling.md).
 *
 * Layers are timed through a wrapper of the backend's table (rt->layers),
 * so neither rt_layers.c nor a backend knows about profiling; the
 * instructions around them (the loss in the last part's Forward,
 * LoadMicroBatch, OptimizerStep) are timed by rt_exec.c. The first step is
 * a warm-up and is not recorded; with --device cuda every timed call is
 * bracketed by a device synchronisation (the profile then measures the
 * device's time, at the cost of the overlap a real run has). All sample
 * arrays are allocated at rt_profile_open, sized from the plan and the
 * step count: nothing is allocated in the step loop. */
#ifndef PIPE_RT_PROFILE_H
#define PIPE_RT_PROFILE_H

#include "rt.h"

typedef struct RtProfile RtProfile;

/* Before the first step, after rt_setup: allocates the samples, wraps
 * rt->layers and measures the links to the neighbour stages (collective
 * over the lane). */
RtProfile *rt_profile_open(RtCtx *rt, int64_t steps);
/* rt_exec.c: an instruction began / ended (waits excluded: rt->waited). */
void rt_profile_instr_begin(RtCtx *rt);
void rt_profile_instr_end(RtCtx *rt, const SchedInstr *in, double seconds);
/* pipert.c: one training step took seconds. */
void rt_profile_step(RtCtx *rt, double seconds);
/* After the last step: gathers every rank's medians at rank 0, which
 * writes path (collective). 0, or -1 with err on rank 0. Frees prof. */
int rt_profile_close(RtCtx *rt, const char *path, char *err, size_t errsize);

#endif
