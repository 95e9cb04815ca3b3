/* runtime/xport_nccl_plan.h: the NCCL transport's check of a plan
 * (xport_nccl_plan.c). No NCCL, CUDA or MPI here. */
#ifndef PIPE_XPORT_NCCL_PLAN_H
#define PIPE_XPORT_NCCL_PLAN_H

#include <stddef.h>

#include "plan_ir.h"

/* 1 when every stage's training and evaluation programs keep the rules
 * N1-N3 and D3 of xport_nccl_plan.c, so the lane's transfers may go over
 * NCCL without a wait the verifier did not prove; else 0 with the first
 * violation in why ("stage 0's training program: instruction 14 launches
 * a transfer while the receive posted at 9 is outstanding"). The same
 * answer on every rank: it reads only the plan. */
int xp_nccl_plan_ok(const PlanSchedule *p, char *why, size_t whysize);

#endif
