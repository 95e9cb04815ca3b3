/* compiler/pc_stats.h: `pipec --stats`, as a table for people and as JSON for
 * tools (docs/dsl.md#stats lists the JSON fields). */
#ifndef PIPE_STATS_H
#define PIPE_STATS_H

#include <stdio.h>

#include "base_text.h"

#include "plan_ir.h"

/* p may be NULL (no schedule predictions). */
void pc_stats_text(FILE *out, const PlanIR *ir);
void pc_stats_json(FILE *out, const PlanIR *ir);
/* One line: "alexnet: 22 layers, 57,044,810 parameters, 2 stages x 1 chunk,
 * schedule 1f1b, predicted bubble 8.8%: ok" */
void pc_summary_line(FILE *out, const PlanIR *ir);
/* 57044810 -> "57,044,810" */
/* The schedule and partition as written back in the DSL
 * ("interleaved(chunks = 2)", "[0, 12]"); the caller frees. */
char *pc_schedule_str(const PlanConfig *c);
char *pc_partition_str(const PlanConfig *c);

#endif
