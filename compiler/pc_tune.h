/* compiler/pc_tune.h: `pipec model.pipe --tune --world N`: every plan of
 * the model for N ranks that keeps its global batch, predicted, the best
 * first (docs/profiling.md, "Tune").
 *
 * Enumerates stages x data_parallel (stages dividing N), every schedule
 * of schedules.def (chunks 2-4 where it has them), micro-batch size and
 * count (their product times data_parallel is the model's global batch),
 * activation checkpointing off and on (segments of about sqrt(layers per
 * part)), and the balanced partition methods (time too with a profile);
 * drops what does not verify or does not fit memory_limit; ranks the rest
 * by predicted step, then peak memory. The costs are the model's (-D
 * costs=profile(...) for measured ones). */
#ifndef PIPE_PC_TUNE_H
#define PIPE_PC_TUNE_H

#include <stdio.h>

#include "diag.h"

typedef struct PcTune {
    const char *path;              /* the .pipe file */
    const char *const *defs;       /* -D settings, applied to every candidate first */
    int ndefs;
    int world;                     /* N ranks */
    int json;                      /* --json: the table as JSON on out */
    const char *plan_out;          /* -o: write the best plan there, or NULL */
    int top;                       /* rows to print (10) */
} PcTune;

/* Returns PC_OK, PC_USER_ERROR (the model does not compile, no candidate
 * fits: dl says why) or PC_SYSTEM_ERROR. */
int pc_tune(DiagList *dl, const PcTune *t, FILE *out);

#endif
