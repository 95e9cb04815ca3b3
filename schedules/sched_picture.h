/* schedules/sched_picture.h: pictures of a simulated plan: an SVG timeline and a
 * Chrome trace (Perfetto), one row per stage, one box per instruction. */
#ifndef PIPE_PICTURE_H
#define PIPE_PICTURE_H

#include <stdio.h>

#include "sched.h"

void sched_emit_svg(FILE *out, const SchedPlan *plan, const SchedSim *sim, const char *title);
void sched_emit_trace(FILE *out, const SchedPlan *plan, const SchedSim *sim, const char *title);

#endif
