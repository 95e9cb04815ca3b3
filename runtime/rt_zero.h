/* runtime/rt_zero.h: ZeRO stage 1 over the replicas of a stage (rt_zero.c,
 * docs/parallelism.md). Active when the plan says zero = 1 and the stage
 * has more than one replica; the CPU backend only (pipert refuses
 * --device cuda with it). */
#ifndef PIPE_RT_ZERO_H
#define PIPE_RT_ZERO_H

#include "rt.h"

/* Whether this run shards: zero = 1 and dp > 1. */
int rt_zero_on(const RtCtx *rt);
/* The elements the parameter and gradient arenas hold for total: total,
 * or dp whole shards. */
int64_t rt_zero_room(const RtCtx *rt, int64_t total);
/* rt_setup, once the arenas are bound (rt->zshard set): this replica's
 * pieces. */
void rt_zero_setup(RtCtx *rt);
/* ReduceGrads: the shard's sum, on its replica. */
void rt_zero_reduce(RtCtx *rt);
/* The sum of squares of the stage's whole gradient (over the shards). */
double rt_zero_sumsq(RtCtx *rt);
/* OptimizerStep's update of the shard (clipped by factor), then the
 * all-gather of the parameters. */
void rt_zero_update(RtCtx *rt, double factor, double lr);
/* Checkpoints: the whole state in each tensor's layout, RtParam.state
 * pointing into it, for a save (gathered from every replica: collective
 * over the replicas) or a resume (zeroed, to be read into); release
 * frees it, keeping this replica's shard of it on a resume. */
float *rt_zero_gather_state(RtCtx *rt);
float *rt_zero_whole_state(RtCtx *rt);
void rt_zero_release_state(RtCtx *rt, float *full, int keep_shard);

#endif
