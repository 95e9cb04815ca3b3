/* plan/plan_memory.h: what a stage keeps in memory, computed once for both
 * programs. pipec predicts a stage's memory from it (`--stats`,
 * `memory_limit`) and pipert lays out and allocates its arenas from the very
 * same numbers, so the prediction is what the runtime allocates, byte for
 * byte (tests/e2e/test_memory.sh holds the two together).
 *
 * A stage's memory, in the parts `pipec --stats` shows:
 *   parameters          every tensor its layers own (and their buffers:
 *                       batchnorm2d's running statistics), plus a copy of the
 *                       shared weight for each tied linear (kept apart from
 *                       its owner's so the two gradients can be summed in a
 *                       fixed order, even on one stage)
 *   gradients           as many floats again
 *   optimizer_state     floats per parameter: SGD 0 (1 with momentum), Adam
 *                       and AdamW 2
 *   activations         each chunk's activation slots (buffers: the most
 *                       of the training and evaluation programs), plus the
 *                       backward's two ping-pong gradient arrays and the
 *                       kernels' scratch (im2col, dropout masks, the
 *                       transformer block's temporaries)
 *   recompute_workspace activation checkpointing: per chunk, room for one
 *                       segment's recomputed outputs and saved state
 *   transfer_staging    per chunk, the input gradient a backward writes and
 *                       SendGrad sends from: two areas, alternated, on a
 *                       chunk that sends it (plan_gin_areas)
 * Bookkeeping (layer and request tables) and the data sets are not counted.
 *
 * The slot of one chunk (one micro-batch in flight), in order:
 *   input tuple | targets (last part) | each layer's output but the last,
 *   and what it saves for its backward | the output tuple (the last layer's
 *   output, then the side inputs that travel on) | the output's gradient |
 *   split schedules: each parameterised layer's output gradient, kept from
 *   BackwardInput for BackwardWeight.
 * Under activation checkpointing the outputs inside a segment and every
 * saved state move to the chunk's recompute workspace. */
#ifndef PIPE_MEMORY_H
#define PIPE_MEMORY_H

#include <stdint.h>

#include "plan_ir.h"
#include "sched.h"

/* Bytes a layer keeps for its backward per sample beyond its output: the
 * maxpool's argmax positions, the layernorm's mean and rstd, the rmsnorm's
 * rstd, everything inside a transformer or llama block, a residual block's
 * layers' outputs and states. The one answer for planner and runtime. */
int64_t plan_layer_state_bytes(const PlanLayer *L);
/* Whether a layer's weight half reads the inner gradients its input half
 * wrote (a transformer or llama block: those of its linears and norms; a
 * residual block with weights: the output gradients of its layers with
 * weights), not its output gradient; what a split schedule keeps for it
 * either way. */
int plan_layer_keeps_inner_grads(const PlanLayer *L);

/* A residual block's sub-layer j, per sample: where its output and its
 * saved state lie in the block's saved state (bytes; times B for a
 * micro-batch), and where its output gradient lies among the block's inner
 * gradients (floats; times B), or -1 for a sub-layer without weights. The
 * block keeps its layers' outputs and states in order, body then shortcut,
 * each rounded up to 64 bytes per sample (so 64-byte aligned for any B). */
typedef struct PlanSubLayout {
    int64_t out_off, save_off, dkeep_off;
} PlanSubLayout;
/* Fills sub[nbody + nshort] (may be NULL) and *inner_floats (may be NULL:
 * the block's inner gradients per sample); returns the block's saved bytes
 * per sample. */
int64_t plan_residual_layout(const PlanLayer *R, PlanSubLayout *sub, int64_t *inner_floats);
/* Where in the kernel scratch a residual block's own arrays start (floats
 * for B samples): behind the largest scratch of its layers; then its two
 * ping-pong gradient arrays of B x its layers' largest tensor, then B x its
 * inner gradients (the unsplit backward's). */
int64_t plan_residual_scratch_at(const PlanLayer *R, int64_t B);
/* Floats per sample of each of those ping-pong arrays: the largest input or
 * output of the block's layers, rounded up to 16 floats (64 bytes), as
 * every array of the block's is. */
int64_t plan_residual_pingpong(const PlanLayer *R);

/* Where one layer's arrays lie in its chunk's slot (byte offsets). */
typedef struct PlanLayerLayout {
    int64_t in_elems, out_elems;  /* per sample */
    int64_t out_off;              /* its output */
    int64_t save_off, save_bytes; /* what it saves beyond its output (micro-batch) */
    int64_t dout_off;             /* split schedules: its output gradient, kept for W; 0: none */
    int64_t ws_out, ws_save;      /* activation checkpointing: offsets in the workspace, or -1 */
} PlanLayerLayout;

typedef struct PlanChunkLayout {
    int part, first, last;        /* the model part and its layers */
    int is_first, is_last;
    int64_t in_off, in_bytes;     /* the input tuple */
    int64_t tgt_off;              /* targets (last part) */
    int64_t outt_off, outt_bytes; /* the output tuple */
    int64_t dout_off;             /* the main output's gradient */
    int64_t slot_bytes;           /* one slot */
    int64_t ws_bytes;             /* the recompute workspace */
    int64_t gin_elems;            /* the input gradient (floats) */
    int64_t work_elems;           /* floats each of the two ping-pong arrays needs */
    int64_t scratch_elems;        /* floats of kernel scratch */
    PlanLayerLayout *lay;           /* last - first + 1; plan_chunk_layout_free */
} PlanChunkLayout;

/* The layout of model part `part` for micro-batches of B samples; split:
 * the stage runs BackwardInput/BackwardWeight; ac: activation_checkpoint
 * (layers per segment, 0 = off). */
void plan_chunk_layout(const PlanModel *m, const PlanPartition *pt, int64_t B, int part, int split, int ac,
                     PlanChunkLayout *out);
void plan_chunk_layout_free(PlanChunkLayout *l);

/* Whether the stage's training program splits backwards (I and W). */
int plan_stage_split(const SchedPlan *train, int stage);
/* Floats of optimizer state per parameter. */
int plan_optim_state_per_param(const PlanConfig *c);
/* Bytes of the buffers the stage holds (batchnorm2d's running_mean and
 * running_var as float32, num_batches_tracked as int64): counted in its
 * `parameters`, with no gradients or optimizer state. */
int64_t plan_stage_buffer_bytes(const PlanModel *m, const PlanPartition *pt, int stage);
/* Floats of the packed copies of a linear's weight that the CPU runtime's
 * fp32 products read for B samples (k_linear_pack_floats: up to 256 rows,
 * 256 features or more in and out, at most 2^22 weights; not split by
 * tensor_parallel; not in bf16), or of a transformer block's four linears
 * (k_block_pack_floats: up to 512 rows a call, D up to 512, F up to 1024),
 * or 0. Counted in the stage's
 * `parameters`: derived from the weight, refreshed once a program run,
 * with no gradients or optimizer state. */
int64_t plan_layer_pack_floats(const PlanLayer *L, int64_t B, int precision);
int64_t plan_stage_pack_bytes(const PlanModel *m, const PlanPartition *pt, int stage, int64_t B, int precision);
/* Parameter floats each rank of the stage holds (tied copies included; one
 * tensor-parallel rank's share of split tensors). */
int64_t plan_stage_param_elems(const PlanModel *m, const PlanPartition *pt, int stage);
/* ZeRO-1 (zero = 1): the parameter elements of one replica's shard of a
 * stage's n, ceil(n / dp); the last shard is padded to it. With
 * data_parallel = auto the replicas are known at run time only: pipec
 * then predicts as for one replica. */
int64_t plan_zero_shard(int64_t n, int64_t dp);

typedef struct PlanMemory {
    int64_t parameters, gradients, optimizer_state, activations, recompute_workspace, transfer_staging;
    int64_t total;
    /* of parameters (and total): the packed weight copies the CPU backend
     * keeps (plan_stage_pack_bytes), which --device cuda does not allocate:
     * a GPU rank's total is total - cpu_packs */
    int64_t cpu_packs;
} PlanMemory;

/* The parts' names, in PlanMemory's order, as --stats and the JSON write them. */
extern const char *const plan_memory_part_names[6];
/* PlanMemory's parts as an array, in that order. */
void plan_memory_parts(const PlanMemory *mem, int64_t out[6]);

/* Whether the sizes pipe computes in int64 from a model and its
 * settings fit (a stage's bytes, a layer's kernel buffers for a
 * micro-batch, parameter, FLOP and activation totals), bounded in double
 * before anything computes them: NULL when every one fits with a wide
 * margin, else the phrase that says what does not, with *layer the layer
 * (or -1: the model as a whole). pipec refuses such a model with its line
 * (PLAN_MAX_* bound single values; this bounds what they multiply to),
 * plan_read such a plan. */
const char *plan_size_misfit(const PlanModel *m, const PlanConfig *c, int *layer);

/* What each rank of `stage` allocates to train (one replica). */
void plan_stage_memory(const PlanIR *ir, int stage, PlanMemory *out);

/* The input-gradient areas of a chunk holding part `part`: the first part
 * sends none (1 area, which its backward may still write); every other
 * part SCHED_GIN_AREAS (2), used in turn, so a backward writes one while
 * the previous SendGrad is still on its way from the other (with one, the
 * backward waited until the receiving stage had taken the previous
 * gradient, and two stages running backwards at once took turns). */
static inline int plan_gin_areas(int part)
{
    return part == 0 ? 1 : SCHED_GIN_AREAS;
}

#endif
