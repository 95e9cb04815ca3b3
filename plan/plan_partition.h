/* plan/plan_partition.h: a model cut into parts (compiler/pc_partition.c
 * chooses the cuts): each part's layers, stage and chunk, what crosses each
 * boundary, and the weights tied across parts. */
#ifndef PIPE_PLAN_PARTITION_H
#define PIPE_PLAN_PARTITION_H

#include "plan_config.h"
#include "plan_model.h"

typedef struct PlanItem {
    const char *name;   /* "activation", or the name of a carried input */
    PlanTensor t;         /* per sample */
    int64_t bytes;      /* per micro-batch */
} PlanItem;

/* What part k sends to part k + 1: the main activation, then every side
 * input (a mask) that a layer at or after part k + 1 still uses. */
typedef struct PlanBoundary {
    int nitems;
    PlanItem item[1 + PLAN_MAX_IO];
    int64_t bytes;      /* per micro-batch, all items */
    int local;          /* both parts on one stage: handed over, not sent */
} PlanBoundary;

/* What a boundary carries per micro-batch when its activation travels as
 * bf16 (the CPU backend's precision = bf16): the main item at half its
 * bytes, the side items as they are */
int64_t plan_boundary_bf16_bytes(const PlanBoundary *bd);

typedef struct PlanPart {
    int first, last;    /* layer indices, inclusive */
    int stage, chunk;
    int64_t params;     /* parameters the part owns */
    int64_t held;       /* parameters its stage holds for it: its own, plus the
                           weight of a tied linear whose owner is on another stage */
    int64_t flops;      /* forward, one sample */
    int64_t cost;       /* what the partition method balanced */
} PlanPart;

typedef struct PlanTie {
    int layer, owner;   /* the tied linear, and the layer whose weight it shares */
    int cross_stage;    /* on different stages: the plan needs ReduceTiedGrads */
} PlanTie;

typedef struct PlanPartition {
    int nparts, stages, chunks;
    PlanPart *part;       /* nparts, in model order */
    PlanBoundary *bnd;    /* nparts - 1: bnd[k] follows part[k] */
    int *stage_of_layer;
    PlanTie *tie;
    int nties;
} PlanPartition;

void plan_partition_free(PlanPartition *p);

#endif
