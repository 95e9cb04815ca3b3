/* compiler/pc_partition.h: splitting the layer list into stages * chunks
 * contiguous parts, placing the parts on stages, and the boundary tuples
 * that cross between consecutive parts.
 *
 * Balanced methods (parameters, flops, type:REGEX) are optimal: they
 * minimise the largest part's cost exactly (binary search on the bound, then
 * a greedy fill that is maximal from the front), not a one-pass greedy
 * guess. Ties go to the earlier parts. */
#ifndef PIPE_PC_PARTITION_H
#define PIPE_PC_PARTITION_H

#include "plan_partition.h"

int pc_partition(DiagList *dl, const PlanModel *m, const PlanConfig *c, PlanPartition *out);


#endif
