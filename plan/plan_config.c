/* plan/plan_config.c: the tables of names (schedules.def, train.def). */
#include "plan_config.h"

#include <stdlib.h>

const char *const plan_schedule_names[PLAN_SCHED_COUNT + 1] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) name,
#include "schedules.def"
#undef SCHED_DEF
    NULL};
const char *const plan_schedule_sigs[PLAN_SCHED_COUNT] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) sig,
#include "schedules.def"
#undef SCHED_DEF
};
const char *const plan_schedule_docs[PLAN_SCHED_COUNT] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) doc,
#include "schedules.def"
#undef SCHED_DEF
};
const SchedPlacement plan_schedule_place[PLAN_SCHED_COUNT] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) SCHED_PLACE_##place,
#include "schedules.def"
#undef SCHED_DEF
};
const char *const plan_optimizer_names[PLAN_OPT_COUNT + 1] = {
#define PLAN_OPTIMIZER(id, name, sig) name,
#include "train.def"
#undef PLAN_OPTIMIZER
    NULL};
const char *const plan_data_names[PLAN_DATA_COUNT + 1] = {
#define PLAN_DATA(id, name, sig) name,
#include "train.def"
#undef PLAN_DATA
    NULL};
const char *const plan_lr_names[PLAN_LR_COUNT + 1] = {
#define PLAN_LR_SCHEDULE(id, name, sig) name,
#include "train.def"
#undef PLAN_LR_SCHEDULE
    NULL};
const char *const plan_precision_names[PLAN_PREC_COUNT + 1] = {
#define PLAN_PRECISION(id, name) name,
#include "train.def"
#undef PLAN_PRECISION
    NULL};
const char *const plan_partition_names[] = {"uniform", "parameters", "flops", "type:REGEX", "[list]", "time", NULL};

void plan_config_free(PlanConfig *c)
{
    free(c->partition_list);
    c->partition_list = NULL;
}
