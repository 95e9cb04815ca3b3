/* plan/plan_ir.h: the plan, as both programs hold it: the model, the
 * settings, the partition and the lowered, verified schedule. pipec builds
 * one from a .pipe file (compiler/: the syntax tree, the generators) and
 * writes it to plan.bin; pipert reads plan.bin back into one
 * (plan/plan_file.c) and needs nothing else: no syntax tree, no parser, no
 * generator (tests/cli/test_pipec.sh checks pipert's symbols with nm). */
#ifndef PIPE_PLAN_IR_H
#define PIPE_PLAN_IR_H

#include "base_alloc.h"
#include "plan_config.h"
#include "plan_model.h"
#include "plan_partition.h"
#include "sched.h"

/* The schedule of a plan: the lowered training and evaluation programs,
 * verified, their simulation, and the cost model they were timed with:
 * forward time = FLOPs x micro_batch_size / device_tflops, backward = 2 x
 * forward (I = W = forward when split), plus the recomputed forwards under
 * activation checkpointing; transfers free unless link_bandwidth is set.
 * With costs = profile("FILE") (plan_profile.h) the times are the measured
 * ones instead, with the loss, the data loading, the optimizer's update
 * and the links' latency and bandwidth. */
typedef struct PlanSchedule {
    SchedParts parts, eval_parts;
    SchedPlan train, eval;
    SchedSim train_sim, eval_sim;
    double *cost_f, *cost_b, *cost_i, *cost_w; /* [parts]: seconds per micro-batch */
    double *bytes_fwd;                         /* [parts]: bytes part k sends to part k + 1 (0 for hand-overs) */
    double *buf_bytes;                         /* [parts]: bytes of one activation buffer (a slot, plan_memory.h) */
    int *tied_stage;                           /* [stages] */
    double *cost_opt;                          /* [stages]: seconds of OptimizerStep (a profile's; else 0) */
    double link_latency, link_bandwidth;       /* a profile's links (seconds; bytes/s), else 0: the config's */
    SchedCosts costs;
    int ok;
} PlanSchedule;

typedef struct PlanIR {
    BaseArena arena;    /* the strings below, when read from plan.bin */
    PlanModel model;
    PlanConfig cfg;
    PlanPartition part;
    PlanSchedule sched;
} PlanIR;

void plan_schedule_free(PlanSchedule *s);
/* Frees what plan_read allocated (not for a view of pipec's structs). */
void plan_ir_free(PlanIR *ir);

#endif
