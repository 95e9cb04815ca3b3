/* plan/plan_partition.c: see plan_partition.h. */
#include "plan_partition.h"

#include <stdlib.h>
#include <string.h>

void plan_partition_free(PlanPartition *p)
{
    free(p->part);
    free(p->bnd);
    free(p->stage_of_layer);
    free(p->tie);
    memset(p, 0, sizeof *p);
}
