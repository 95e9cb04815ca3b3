/* compiler/pc_planner.h: from a compiled model to verified plans. Runs the
 * schedule's generator (or takes a text schedule's actions), lowers the
 * training and evaluation programs, verifies both, and predicts the step
 * with the cost model (plan/plan_ir.h, PlanSchedule). */
#ifndef PIPE_PC_PLANNER_H
#define PIPE_PC_PLANNER_H

#include "pc_front.h"
#include "plan_file.h"
#include "plan_ir.h"
#include "sched.h"


/* acts: the training schedule's compute actions (the generator's, or the
 * text schedule's); the caller initialises nothing and frees them with
 * sched_actions_free, also on failure. Returns PC_OK, or PC_USER_ERROR
 * after reporting (a schedule that does
 * not verify, with the stage, instruction and micro-batch, and for a text
 * schedule the file and line). timeline: keep every instruction's
 * simulated start and end (for pictures). */
int pc_plan_build(DiagList *dl, const PcFront *f, PlanSchedule *p, SchedActions *acts, int timeline);
/* The same, writing the plan to out on the way: the file is written while
 * the programs are verified, and *written (on PC_OK) is the temporary file
 * to put in place with plan_write_end(*written, 1, ...), or NULL when it
 * could not be written early (the caller then writes with plan_write, which
 * also gives any message). On failure nothing is left on disk. */
int pc_plan_build_to(DiagList *dl, const PcFront *f, PlanSchedule *p, SchedActions *acts, int timeline,
                     const char *out, PlanWriting **written);
/* A view of the front end's model, settings and partition and a schedule
 * as one PlanIR, for what takes one (listings, stats, plan_write); it owns
 * nothing: never plan_ir_free it. */
PlanIR pc_ir_view(const PcFront *f, const PlanSchedule *p);

#endif
