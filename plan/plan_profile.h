/* plan/plan_profile.h: measured costs, the file `pipert --profile` writes
 * and `costs = profile("FILE")` reads (docs/profiling.md).
 *
 * A profile holds, per layer of the model, the median time of its forward,
 * its backward-input and its backward-weight over the micro-batches of the
 * steps after the warm-up; the loss, the data loading and the optimizer's
 * time per parameter; per pipeline link between neighbour stages its
 * latency and bandwidth (none on one stage); and what it was measured on.
 * It fits a model, not a plan: its hash (plan_model_hash) covers the model
 * block only, so a profile taken on one stage serves every stage count and
 * schedule of that model at the same micro_batch_size.
 *
 * One writer and one reader (this file) serve both programs. */
#ifndef PIPE_PLAN_PROFILE_H
#define PIPE_PLAN_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#include "plan_model.h"

#define PLAN_PROFILE_FORMAT "pipe-profile"
#define PLAN_PROFILE_VERSION 1

typedef struct PlanProfileLayer {
    double forward, backward_input, backward_weight; /* seconds per micro-batch (medians) */
    int64_t activation_bytes, saved_bytes;           /* one micro-batch */
    int64_t samples;                                 /* forward timings the median was taken over */
} PlanProfileLayer;

typedef struct PlanProfileLink {
    int from_stage, to_stage;
    double latency;      /* seconds, one way, for a small message */
    double bandwidth;    /* bytes per second, for a large one */
} PlanProfileLink;

typedef struct PlanProfile {
    char model[128];
    uint64_t model_hash;
    int64_t micro_batch_size, micro_batches;
    char backend[16];    /* cpu, cuda */
    char device[128];    /* the CPU's model name, or the GPU's */
    int64_t threads;     /* BLAS threads (cpu) */
    int64_t steps, warmup_steps;
    int nlayers;
    PlanProfileLayer *layer;
    double loss;         /* seconds per micro-batch: the loss and its gradient (the last part's Forward) */
    double load;         /* seconds per micro-batch: LoadMicroBatch (the first part) */
    double optimizer_per_param; /* seconds per parameter element: OptimizerStep (norm, clip, update) */
    double step;         /* the measured median step, seconds (this plan's, for reference) */
    int nlinks;
    PlanProfileLink *link;
} PlanProfile;

/* Writes p as JSON to path (atomically). 0, or -1 with err. */
int plan_profile_write(const char *path, const PlanProfile *p, char *err, size_t errsize);
/* Reads path into *p (plan_profile_free releases it). 0, or -1 with err
 * saying what and where. */
int plan_profile_read(const char *path, PlanProfile *p, char *err, size_t errsize);
void plan_profile_free(PlanProfile *p);
/* Whether p fits model m at micro-batch size B: 0, or -1 with err (another
 * model, another layer count, another micro-batch size). */
int plan_profile_check(const PlanProfile *p, const PlanModel *m, int64_t B, char *err, size_t errsize);

/* A plan's costs beyond its parts' (pc_planner.c sets those from the
 * layers): each stage's OptimizerStep (seconds per parameter element x
 * the elements it holds) and the links (the profile's slowest: the highest
 * latency, the lowest bandwidth; none measured, as on one stage: the
 * config's link_bandwidth, no latency). */
struct PlanSchedule;
struct PlanPartition;
void plan_profile_costs(const PlanProfile *p, const PlanModel *m, const struct PlanPartition *pt,
                        struct PlanSchedule *s);

/* Layer i's forward + backward-input + backward-weight, in whole
 * nanoseconds (at least 1): what partition = time balances. */
int64_t plan_profile_layer_ns(const PlanProfile *p, int i);

/* A 64-bit FNV-1a hash of the model as plan.bin stores it (names, layers,
 * arguments, shapes, parameters; no source positions): what a profile is
 * checked against (plan_file.c). */
uint64_t plan_model_hash(const PlanModel *m);

#endif
