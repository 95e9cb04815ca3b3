/* compiler/pc_listing.h: `pipec --list`: every stage's instruction stream, one
 * instruction a line, with a header per stage and a summary. The same
 * printer serves a .pipe file and a compiled plan.bin. */
#ifndef PIPE_PC_LISTING_H
#define PIPE_PC_LISTING_H

#include <stdio.h>

#include "base_text.h"

#include "plan_ir.h"

void pc_listing(FILE *out, const PlanIR *ir);
/* The per-stage prediction lines of --stats, and its JSON fields. */
void pc_stats_ranks_text(FILE *out, const PlanIR *ir);
void pc_stats_ranks_json(FILE *out, const PlanIR *ir);
/* `"memory_bytes": N, "memory": {parts}` of one stage (plan/plan_memory.h),
 * as a JSON object's members. */
void pc_stats_memory_json(FILE *out, const PlanIR *ir, int stage);

#endif
