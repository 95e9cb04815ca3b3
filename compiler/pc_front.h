/* compiler/pc_front.h: the front half of pipec, in one call: read the file,
 * parse, apply -D overrides, read the pipeline and train blocks, build the
 * model, partition it. Tests and the CLI both go through here. */
#ifndef PIPE_FRONT_H
#define PIPE_FRONT_H

#include "ast.h"
#include "plan_config.h"
#include "diag.h"
#include "plan_model.h"
#include "plan_partition.h"

#define PC_MAX_FILE_BYTES ((size_t)16 << 20)

typedef struct PcFront {
    BaseArena arena;
    AstFile file;
    const char *path;   /* the .pipe file, or NULL for text in memory */
    SchedText text;     /* schedule = file(...): the actions read from it */
    int have_text;
    int text_src;       /* its source in the DiagList */
    PlanConfig cfg;
    PlanModel model;
    PlanPartition part;
    struct PlanProfile *profile; /* costs = profile("FILE"): read and checked, else NULL */
    int no_ways_out;    /* pc_plan_build: over memory_limit, say so without trying the ways out (--tune) */
    int ok;             /* everything above is complete */
    int mem_only;       /* pc_front_mem: file(...) reads mem_sched, never the disk */
    const char *mem_sched;
    size_t mem_sched_len;
} PcFront;

enum { PC_OK = 0, PC_USER_ERROR = 1, PC_SYSTEM_ERROR = 2 };

/* Reads path and runs the front end. Returns PC_OK, PC_USER_ERROR (the
 * diagnostics say why) or PC_SYSTEM_ERROR (the file could not be read; a
 * diagnostic says why). defs are -D key=value strings. */
int pc_front_file(PcFront *f, DiagList *dl, const char *path, const char *const *defs, int ndefs);
/* The same over text in memory, registered under name. */
int pc_front_text(PcFront *f, DiagList *dl, const char *name, const char *text, size_t len,
                  const char *const *defs, int ndefs);
/* The same, touching no file: every schedule = file(...) reads sched
 * (sched_len bytes; NULL: file(...) is an error). For the fuzz targets. */
int pc_front_mem(PcFront *f, DiagList *dl, const char *name, const char *text, size_t len,
                 const char *const *defs, int ndefs, const char *sched, size_t sched_len);
void pc_front_free(PcFront *f);

#endif
