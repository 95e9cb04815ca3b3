/* plan/plan_config.h: the settings of the `pipeline` and `train` blocks, as
 * both programs hold them (compiler/pc_config.c reads them from the
 * source, plan/plan_file.c from plan.bin), and the tables of names the
 * .def files give (schedules, optimizers, data sources, LR schedules,
 * precisions). */
#ifndef PIPE_PLAN_CONFIG_H
#define PIPE_PLAN_CONFIG_H

#include <stdint.h>

#include "diag.h"
#include "sched.h"

typedef enum PlanScheduleKind {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) PLAN_SCHED_##id,
#include "schedules.def"
#undef SCHED_DEF
    PLAN_SCHED_COUNT
} PlanScheduleKind;


typedef enum PlanOptimizerKind {
#define PLAN_OPTIMIZER(id, name, sig) PLAN_OPT_##id,
#include "train.def"
#undef PLAN_OPTIMIZER
    PLAN_OPT_COUNT
} PlanOptimizerKind;

typedef enum PlanDataKind {
#define PLAN_DATA(id, name, sig) PLAN_DATA_##id,
#include "train.def"
#undef PLAN_DATA
    PLAN_DATA_COUNT
} PlanDataKind;

typedef enum PlanLrKind {
#define PLAN_LR_SCHEDULE(id, name, sig) PLAN_LR_##id,
#include "train.def"
#undef PLAN_LR_SCHEDULE
    PLAN_LR_COUNT
} PlanLrKind;

typedef enum PlanPrecision {
#define PLAN_PRECISION(id, name) PLAN_PREC_##id,
#include "train.def"
#undef PLAN_PRECISION
    PLAN_PREC_COUNT
} PlanPrecision;

/* the position is what plan.bin stores: append */
typedef enum PlanPartitionKind {
    PLAN_PART_UNIFORM,
    PLAN_PART_PARAMETERS,
    PLAN_PART_FLOPS,
    PLAN_PART_TYPE,
    PLAN_PART_LIST,
    PLAN_PART_TIME       /* measured time (costs = profile(...)); flops without a profile */
} PlanPartitionKind;
#define PLAN_PART_COUNT (PLAN_PART_TIME + 1)

extern const char *const plan_schedule_names[PLAN_SCHED_COUNT + 1];
extern const char *const plan_schedule_sigs[PLAN_SCHED_COUNT];
extern const char *const plan_schedule_docs[PLAN_SCHED_COUNT];
extern const SchedPlacement plan_schedule_place[PLAN_SCHED_COUNT];
extern const char *const plan_optimizer_names[PLAN_OPT_COUNT + 1];
extern const char *const plan_data_names[PLAN_DATA_COUNT + 1];
extern const char *const plan_lr_names[PLAN_LR_COUNT + 1];
extern const char *const plan_precision_names[PLAN_PREC_COUNT + 1];
extern const char *const plan_partition_names[];

#define PLAN_MAX_STAGES 4096
#define PLAN_MAX_CHUNKS 64
#define PLAN_MAX_TP 64
#define PLAN_MAX_MICRO_BATCHES (1 << 16) /* an instruction's mb and buf take 16 bits in plan.bin */

typedef struct PlanData {
    PlanDataKind kind;
    int set;                 /* eval_data: given at all */
    const char *path, *path2;
    int64_t resize;          /* cifar10: 0 = as stored */
    int64_t pad;             /* tokens: pad id, -1 = none */
    int64_t samples;         /* synthetic */
    SrcLoc loc;
} PlanData;

typedef struct PlanConfig {
    /* pipeline */
    int64_t stages;
    int64_t data_parallel;   /* 0: auto (world / (stages x tensor_parallel) at run time) */
    int64_t tensor_parallel; /* ranks per stage and replica that split its blocks (Megatron); 1: none */
    int64_t micro_batches;
    int64_t micro_batch_size;
    PlanScheduleKind schedule;
    int64_t chunks;          /* model chunks (virtual stages) per stage */
    SchedPlacement place;    /* how parts map to stages (a text schedule may say) */
    const char *schedule_file;
    PlanPartitionKind partition;
    const char *partition_regex;
    int64_t *partition_list; /* first layer of each part */
    int npartition_list;
    int64_t activation_checkpoint;
    double link_bandwidth;   /* GB/s; 0: communication is free */
    double device_tflops;    /* the simulator's compute speed, TFLOP/s */
    const char *costs_profile; /* costs = profile("FILE"): FILE; NULL: costs = flops (device_tflops) */
    const struct PlanProfile *profile; /* pipec only: that file, read and checked against the model (pc_front) */
    int64_t memory_limit;    /* bytes a rank may allocate (plan/plan_memory.h); 0: no limit. Checked by
                                pipec only, not stored in the plan */
    /* train */
    PlanOptimizerKind optimizer;
    double lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
    int64_t steps;
    uint64_t seed;
    PlanData data, eval_data;
    int shuffle;
    int64_t eval_every;      /* 0: only at the end, when eval_data is set */
    PlanLrKind lr_schedule;
    int64_t warmup;
    double min_lr;
    double grad_clip;        /* max global norm; 0: off */
    PlanPrecision precision;
    int64_t zero;            /* ZeRO stage: 0 off, 1 optimizer state sharded over the replicas */
    /* where each setting came from, for later messages */
    SrcLoc schedule_loc, partition_loc, stages_loc, memory_limit_loc, costs_loc, tp_loc;
} PlanConfig;

void plan_config_free(PlanConfig *cfg);

#endif
