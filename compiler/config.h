/* compiler/config.h: the `pipeline` and `train` blocks, with defaults, and
 * the -D key=value overrides that replace any of their keys.
 *
 * Every key is one line in the table of config.c (name, block, reader), so
 * the reference in docs/dsl.md, the unknown-key hints and -D all agree. */
#ifndef PIPE_CONFIG_H
#define PIPE_CONFIG_H

#include <stdint.h>

#include "ast.h"
#include "bind.h"
#include "diag.h"
#include "sched.h"

typedef enum PcScheduleKind {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) PC_SCHED_##id,
#include "schedules.def"
#undef PC_SCHEDULE
    PC_SCHED_COUNT
} PcScheduleKind;


typedef enum PcOptimizerKind {
#define PC_OPTIMIZER(id, name, sig) PC_OPT_##id,
#include "train.def"
#undef PC_OPTIMIZER
    PC_OPT_COUNT
} PcOptimizerKind;

typedef enum PcDataKind {
#define PC_DATA(id, name, sig) PC_DATA_##id,
#include "train.def"
#undef PC_DATA
    PC_DATA_COUNT
} PcDataKind;

typedef enum PcLrKind {
#define PC_LR_SCHEDULE(id, name, sig) PC_LR_##id,
#include "train.def"
#undef PC_LR_SCHEDULE
    PC_LR_COUNT
} PcLrKind;

typedef enum PcPrecision {
#define PC_PRECISION(id, name) PC_PREC_##id,
#include "train.def"
#undef PC_PRECISION
    PC_PREC_COUNT
} PcPrecision;

typedef enum PcPartitionKind { PC_PART_UNIFORM, PC_PART_PARAMETERS, PC_PART_FLOPS, PC_PART_TYPE, PC_PART_LIST } PcPartitionKind;

extern const char *const pc_schedule_names[PC_SCHED_COUNT + 1];
extern const char *const pc_schedule_sigs[PC_SCHED_COUNT];
extern const char *const pc_schedule_docs[PC_SCHED_COUNT];
extern const SchedPlacement pc_schedule_place[PC_SCHED_COUNT];
extern const char *const pc_optimizer_names[PC_OPT_COUNT + 1];
extern const char *const pc_data_names[PC_DATA_COUNT + 1];
extern const char *const pc_lr_names[PC_LR_COUNT + 1];
extern const char *const pc_precision_names[PC_PREC_COUNT + 1];
extern const char *const pc_partition_names[];

#define PC_MAX_STAGES 4096
#define PC_MAX_CHUNKS 64
#define PC_MAX_MICRO_BATCHES (1 << 20)

typedef struct PcData {
    PcDataKind kind;
    int set;                 /* eval_data: given at all */
    const char *path, *path2;
    int64_t resize;          /* cifar10: 0 = as stored */
    int64_t pad;             /* tokens: pad id, -1 = none */
    int64_t samples;         /* synthetic */
    SrcLoc loc;
} PcData;

typedef struct PcConfig {
    /* pipeline */
    int64_t stages;
    int64_t data_parallel;   /* 0: auto (world / stages at run time) */
    int64_t micro_batches;
    int64_t micro_batch_size;
    PcScheduleKind schedule;
    int64_t chunks;          /* model chunks (virtual stages) per stage */
    SchedPlacement place;    /* how parts map to stages (a text schedule may say) */
    const char *schedule_file;
    PcPartitionKind partition;
    const char *partition_regex;
    int64_t *partition_list; /* first layer of each part */
    int npartition_list;
    int64_t activation_checkpoint;
    double link_bandwidth;   /* GB/s; 0: communication is free */
    double device_tflops;    /* the simulator's compute speed, TFLOP/s */
    int64_t memory_limit;    /* bytes a rank may allocate (compiler/memory.h); 0: no limit. Checked by
                                pipec only, not stored in the plan */
    /* train */
    PcOptimizerKind optimizer;
    double lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
    int64_t steps;
    uint64_t seed;
    PcData data, eval_data;
    int shuffle;
    int64_t eval_every;      /* 0: only at the end, when eval_data is set */
    PcLrKind lr_schedule;
    int64_t warmup;
    double min_lr;
    double grad_clip;        /* max global norm; 0: off */
    PcPrecision precision;
    /* where each setting came from, for later messages */
    SrcLoc schedule_loc, partition_loc, stages_loc, memory_limit_loc;
} PcConfig;

/* Reads the pipeline and train blocks (either may be NULL: defaults). */
int pc_config_read(DiagList *dl, const AstBlock *pipeline, const AstBlock *train, PcConfig *cfg);
void pc_config_free(PcConfig *cfg);

/* The data and eval_data sources against the model (compiler/model.h):
 * what each yields (float32 images and class labels, int32 token ids and
 * next-token targets, ...) must be what the model's inputs, target and loss
 * take. Returns 0, or -1 after reporting at the source. */
struct PcModel;
int pc_config_check_data(DiagList *dl, const PcConfig *cfg, const struct PcModel *m);

/* Applies one -D key=value to the syntax tree before it is read: the value
 * is parsed with the DSL's value grammar and replaces (or adds) the key in
 * the block it belongs to. Returns 0, or -1 after reporting. */
int pc_config_override(BaseArena *arena, DiagList *dl, AstFile *file, const char *kv);

/* Names of the keys, NULL-terminated, for docs and hints. */
const char *pc_config_key_name(int i);
int pc_config_key_block(int i); /* AST_BLOCK_PIPELINE or AST_BLOCK_TRAIN */

#endif
