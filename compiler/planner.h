/* compiler/planner.h: from a compiled model to verified plans. Runs the
 * schedule's generator (or takes a text schedule's actions), lowers the
 * training and evaluation programs, verifies both, and predicts the step
 * with the cost model: forward time = FLOPs x micro_batch_size /
 * device_tflops, backward = 2 x forward (I = W = forward when split),
 * transfers free unless link_bandwidth is set. */
#ifndef PIPE_PLANNER_H
#define PIPE_PLANNER_H

#include "front.h"
#include "sched.h"

typedef struct PcPlan {
    SchedActions acts;          /* the training schedule's compute actions */
    SchedParts parts, eval_parts;
    SchedPlan train, eval;
    SchedSim train_sim, eval_sim;
    double *cost_f, *cost_b, *cost_i, *cost_w;  /* [parts]: seconds per micro-batch */
    double *bytes_fwd;          /* [parts]: bytes part k sends to part k + 1 (0 for hand-overs) */
    double *buf_bytes;          /* [parts]: bytes of one activation buffer */
    int *tied_stage;            /* [stages] */
    SchedCosts costs;
    int ok;
} PcPlan;

/* Returns PC_OK, or PC_USER_ERROR after reporting (a schedule that does
 * not verify, with the stage, instruction and micro-batch, and for a text
 * schedule the file and line). timeline: keep every instruction's
 * simulated start and end (for pictures). */
int pc_plan_build(DiagList *dl, const PcFront *f, PcPlan *p, int timeline);
void pc_plan_free(PcPlan *p);

#endif
