/* plan/plan_partition.c: see plan_partition.h. */
#include "plan_partition.h"

#include <stdlib.h>
#include <string.h>

int64_t plan_boundary_bf16_bytes(const PlanBoundary *bd)
{
    return bd->bytes - bd->item[0].bytes / 2;
}

void plan_partition_free(PlanPartition *p)
{
    free(p->part);
    free(p->bnd);
    free(p->stage_of_layer);
    free(p->tie);
    memset(p, 0, sizeof *p);
}
