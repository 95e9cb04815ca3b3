/* plan/plan_ir.c: see plan_ir.h. */
#include "plan_ir.h"

#include <stdlib.h>
#include <string.h>

void plan_schedule_free(PlanSchedule *p)
{
    sched_plan_free(&p->train);
    sched_plan_free(&p->eval);
    if (p->train_sim.stages)
        sched_sim_free(&p->train_sim);
    if (p->eval_sim.stages)
        sched_sim_free(&p->eval_sim);
    free(p->cost_f), free(p->cost_b), free(p->cost_i), free(p->cost_w);
    free(p->bytes_fwd), free(p->buf_bytes), free(p->tied_stage), free(p->cost_opt);
    memset(p, 0, sizeof *p);
}

void plan_ir_free(PlanIR *ir)
{
    plan_schedule_free(&ir->sched);
    plan_partition_free(&ir->part);
    plan_model_free(&ir->model);
    plan_config_free(&ir->cfg);
    base_arena_free(&ir->arena);
}
