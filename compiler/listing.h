/* compiler/listing.h: `pipec --list`: every stage's instruction stream, one
 * instruction a line, with a header per stage and a summary. The same
 * printer serves a .pipe file and a compiled plan.bin. */
#ifndef PIPE_LISTING_H
#define PIPE_LISTING_H

#include <stdio.h>

#include "front.h"
#include "planner.h"

void pc_listing(FILE *out, const PcFront *f, const PcPlan *p);
/* The per-stage prediction lines of --stats, and its JSON fields. */
void pc_stats_ranks_text(FILE *out, const PcFront *f, const PcPlan *p);
void pc_stats_ranks_json(FILE *out, const PcFront *f, const PcPlan *p);
/* `"memory_bytes": N, "memory": {parts}` of one stage (compiler/memory.h),
 * as a JSON object's members. */
void pc_stats_memory_json(FILE *out, const PcFront *f, const PcPlan *p, int stage);
/* "1.23 ms", "45.6 us": a time for people. */
const char *base_time_text(double seconds, char *buf, size_t size);
/* "1.2 MiB" */
const char *base_bytes_text(double bytes, char *buf, size_t size);

#endif
