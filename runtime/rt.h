/* runtime/rt.h: the interpreter's context, shared by its modules.
 *
 * One RtCtx per rank, passed everywhere; no globals. Memory comes in a few
 * arenas sized from the plan at start-up (parameters, gradients, optimizer
 * state, activation slots, per-chunk work space); nothing is allocated in
 * the step loop.
 *
 * The runtime's error regime (docs/design-notes.md): fail fast. RT_CHECK
 * prints "[rank N] file:line: what failed, at instruction pc (op, mb)" and
 * brings the whole MPI job down with MPI_Abort, so no rank waits forever. */
#ifndef PIPE_RT_H
#define PIPE_RT_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

#include "plan_ir.h"
#include "rt_data.h"
#include "xport.h"

#define RT_MAX_CHUNKS 64

/* A parameter tensor held by this stage. */
typedef struct RtParam {
    int layer, k;            /* layer index, and which of its tensors (-1: a tied copy) */
    char name[64];           /* "layers.3.weight" */
    int64_t n;
    float *p, *g, *state;    /* into the host arenas */
    float *dp, *dg, *dstate; /* --device cuda: the same tensors in the device arenas; NULL on the CPU */
    int counts_in_norm;      /* 0 for the copy of a tied weight (counted at its owner) */
} RtParam;

/* A buffer held by this stage (batchnorm2d's running statistics,
 * plan_model.h): saved, resumed, exported, read by --init like a
 * parameter, but never trained: no gradient, no optimizer state. Every
 * buffer of a layer lies in one piece of the buffer arena, 8-aligned:
 * num_batches_tracked (int64) first, then running_mean, running_var. */
typedef struct RtBuf {
    int layer, k;            /* layer index, and which of its buffers */
    int sub;                 /* in a residual block: whose layer it is (j of L->sub), else -1 */
    char name[64];           /* "layers.3.running_mean" */
    int64_t n, bytes;        /* elements, and bytes (x 4, or x 8 for int64) */
    void *p;                 /* into the host arena */
    void *dp;                /* --device cuda: the device arena's copy; NULL on the CPU */
} RtBuf;

/* Where one layer keeps what it needs inside a slot, and its pointers. */
typedef struct RtLayerRt {
    const PlanLayer *L;
    int64_t in_elems, out_elems;  /* per sample */
    int64_t out_off;              /* slot offset (bytes) of its output */
    int64_t save_off, save_bytes; /* slot offset of extra saved state */
    int64_t dout_off;             /* split backward: where its output gradient is kept */
    int64_t ws_out, ws_save;      /* activation checkpointing: offsets in the chunk's workspace, or -1 */
    float *w, *b;                 /* parameters (a tied linear: the shared weight) */
    float *gw, *gb;
    float *w2[PLAN_MAX_PARAM_TENSORS], *g2[PLAN_MAX_PARAM_TENSORS]; /* all tensors, in PlanLayer.param order */
    void *bufs;                   /* its buffers (RtBuf), the device's with --device cuda, or NULL */
    void *gpu_plan;               /* --device cuda: the layer's KcConvPlan (conv2d), else NULL */
    float *wpack;                 /* a linear's packed weight (k_linear_pack), or NULL */
    int64_t wpack_run[2];         /* the program run each copy was packed in (forward, input gradient) */
    /* a residual block: its sub-layers (L->nbody + L->nshort), whose
     * out_off and save_off are byte offsets in the block's saved state for
     * the micro-batch, dout_off the float offset of its kept output
     * gradient among the block's inner gradients, or -1 (no weights); their
     * w, b, w2... point into the block's tensors (rt_residual.c) */
    struct RtLayerRt *sub;
} RtLayerRt;

typedef struct RtChunk {
    int part, first, last;        /* model part and its layers */
    int is_first, is_last;        /* the model's first / last part */
    int nbuf;
    int64_t slot_bytes;           /* one slot */
    unsigned char *slots;         /* nbuf * slot_bytes */
    int64_t in_off, in_bytes;     /* the input tuple (contiguous) */
    int64_t tgt_off;              /* targets (last part) */
    int64_t outt_off, outt_bytes; /* the output tuple (contiguous, what SendActivation sends) */
    int64_t dout_off;             /* gradient of the main output (RecvGrad target, or the loss gradient) */
    RtLayerRt *lay;               /* last - first + 1 */
    float *gin;                   /* gradient of the main input: the area the latest backward wrote, which
                                   * SendGrad sends */
    float *gin_area[SCHED_GIN_AREAS]; /* plan_gin_areas of them, used in turn */
    int gin_n, gin_at;            /* how many; gin is gin_area[gin_at] */
    int64_t gin_elems;
    XportReq gin_req[SCHED_GIN_AREAS]; /* a pending SendGrad from each area */
    XportReq *out_req, *in_req, *dout_req; /* per slot: pending send / receives */
    int *slot_mb;                 /* per slot: the micro-batch it holds, -1 */
    int ac;                       /* activation_checkpoint: layers per segment, 0 = off */
    unsigned char *ws;            /* the recompute workspace (one segment's outputs and state) */
    int64_t ws_bytes;
} RtChunk;

/* The kinds of training memory a rank allocates, in plan/plan_memory.h's
 * order (PlanMemory): what `pipert --metrics` reports per rank and `pipec
 * --stats` predicts per stage. */
typedef enum RtMem {
    RT_MEM_PARAMETERS,
    RT_MEM_GRADIENTS,
    RT_MEM_OPTIMIZER_STATE,
    RT_MEM_ACTIVATIONS,
    RT_MEM_RECOMPUTE_WORKSPACE,
    RT_MEM_TRANSFER_STAGING,
    RT_MEM_KINDS
} RtMem;

typedef struct RtLayerOps RtLayerOps; /* below */

typedef struct RtCtx {
    /* who */
    /* rank = (stage x dp + dpi) x tp + tpi: a stage's tensor-parallel
     * ranks are neighbours, then its replicas (rt_rank_of) */
    int rank, world, stage, dp, dpi, stages, chunks;
    int tp, tpi;                  /* tensor_parallel, and this rank's index among the stage's tp ranks */
    MPI_Comm dp_comm;             /* this stage's replicas with this tpi (ReduceGrads) */
    MPI_Comm pipe_comm;           /* this data-parallel lane's stages with this tpi (transfers, norms, losses) */
    MPI_Comm tied_comm;           /* the lane's stages that hold tied weights */
    MPI_Comm tp_comm;             /* this stage's tp ranks of this replica (the split blocks' sums) */
    const XportOps *xp;           /* the transport (xport.h) */
    void *xpd;                    /* that transport's own state (xport_nccl.c's), NULL for MPI */
    /* the device (rt_dev.h): NULL on the CPU, where every array below is
     * host memory and the code paths are the CPU's; with --device cuda the
     * slots, work, scratch, recompute workspaces and input gradients are
     * device memory and each layer runs through gpu's table */
    const struct RtGpuOps *gpu;
    const RtLayerOps *layers;     /* rt_cpu_layers, or the GPU backend's table */
    struct RtGpu *gpud;           /* that backend's own state */
    /* what */
    PlanIR ir;                    /* the plan, as read (plan/plan_ir.h) */
    const PlanModel *m;
    const PlanConfig *c;
    int64_t B;                    /* micro_batch_size */
    int64_t M;                    /* micro_batches */
    int64_t global_batch;         /* B * M * dp */
    RtChunk chunk[RT_MAX_CHUNKS];
    /* arenas */
    float *params, *grads, *state; /* host: parameters initialised here; checkpoints read and write these */
    float *dparams, *dgrads, *dstate; /* --device cuda: the device arenas (the training copy), else NULL */
    int64_t nparams_total;
    RtParam *param;
    int nparam;
    /* zero = 1 over dp > 1 replicas (rt_zero.h): the shard's elements, and
     * this replica's pieces of it (RtParam.state is NULL then) */
    int64_t zshard;
    struct RtZeroPiece *zpiece;
    int nzpiece;
    unsigned char *bufs, *dbufs;  /* the buffer arena (host; --device cuda: and the device's), or NULL */
    int64_t buf_bytes;
    RtBuf *buf;
    int nbuf;
    float *work[2];               /* ping-pong gradients inside a chunk's backward */
    int64_t work_elems;
    float *wpacks;                /* the arena of the linears' packed weights (plan_stage_pack_bytes), or NULL */
    int64_t run;                  /* program runs started: weights change only between two */
    float *scratch;               /* kernels' scratch (im2col) */
    int64_t scratch_elems;
    int64_t mem[RT_MEM_KINDS];    /* bytes of training memory allocated, by kind (rt_mem_count) */
    /* training state */
    int64_t step, steps;
    double loss_sum;              /* this step, this rank's last part */
    int64_t loss_count, correct;
    double target_scale;          /* 1 / (non-ignored targets of the global batch) */
    RtData data, eval;
    int have_eval;
    int64_t eval_batches, eval_step_base;
    int evaluating;
    int bad_stage;                /* after a step: the first stage with a NaN/Inf loss or gradient, or -1 */
    double grad_norm;             /* after a step: the global L2 norm of the gradient before clipping (the lane's,
                                   * every stage the same value; with replicas, already summed over them) */
    double *vote;                 /* [stages]: scratch for that vote */
    /* where we are (for messages) */
    int pc;
    const SchedInstr *in;
    double watchdog_s;            /* a wait without progress this long ends the job (0: never) */
    double waited;                /* seconds spent waiting in the transport (traces) */
    struct RtTrace *trace;        /* --trace: the events of this rank, or NULL */
    struct RtProfile *prof;       /* --profile: this rank's samples (rt_profile.h), or NULL */
    /* options */
    int verbose, log_every;
    const char *metrics_path, *save_dir;
    FILE *metrics;
} RtCtx;

/* the world rank of (stage, replica, tensor-parallel index), and back */
static inline int rt_rank_of(const RtCtx *rt, int stage, int dpi, int tpi)
{
    return (stage * rt->dp + dpi) * rt->tp + tpi;
}

static inline int rt_stage_of(const RtCtx *rt, int rank)
{
    return rank / rt->tp / rt->dp;
}

static inline int rt_replica_of(const RtCtx *rt, int rank)
{
    return rank / rt->tp % rt->dp;
}

/* A piece of this replica's ZeRO shard: elements [off, off + len) of a
 * tensor, and their optimizer state (len x state_per_param floats). */
typedef struct RtZeroPiece {
    RtParam *q;
    int64_t off, len;
    float *state;
} RtZeroPiece;

/* The arrays one layer's forward or backward reads and writes, found by
 * rt_layers.c (device pointers on the GPU). */
typedef struct RtLayerIO {
    const float *in;     /* its input (int32 tokens for embedding) */
    float *out;          /* its output (forward) */
    float *save;         /* its saved state (maxpool indices, layernorm mean and rstd, block's saved) */
    const float *mask;   /* transformer_block, llama_block: the padding mask, or NULL */
    const float *dout;   /* backward: the gradient of its output */
    float *din;          /* backward_input: where the input gradient goes */
    float *dsaved;       /* transformer_block, llama_block, residual backward: its inner output gradients */
    int64_t mb;          /* the micro-batch (dropout's keys) */
    int recompute;       /* activation checkpointing's second forward: batchnorm2d leaves its running
                          * statistics alone (only a micro-batch's first forward updates them) */
} RtLayerIO;

/* One layer kind's operations on a backend, over one micro-batch: forward
 * overwrites io->out; backward_input overwrites io->din (and, for a layer
 * whose weight half needs its inner gradients, a transformer block, writes
 * them to io->dsaved: the slot's kept area, or NULL for room the backend
 * finds in its scratch); backward_weight adds into the layer's weight
 * gradients, reading io->dout (or io->dsaved); prepare runs once at set-up.
 * Each backend has one table
 * of these indexed by PlanLayerKind, built from plan/layers.def, so a layer
 * without its row fails the build: rt_cpu_layers (rt_cpu.c), and the CUDA
 * module's (rt_cuda.c). rt->layers is the one in use. */
struct RtLayerOps {
    void (*forward)(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
    void (*backward_input)(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
    void (*backward_weight)(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
    /* once, at set-up: what the layer needs of the backend (a convolution
     * plan in lr->gpu_plan), and the bytes of workspace its calls may use */
    size_t (*prepare)(RtCtx *rt, RtLayerRt *lr);
};

extern const RtLayerOps rt_cpu_layers[PLAN_L_COUNT];
/* rt_cpu.c: the packed copies of the linears' weights (RtLayerRt.wpack),
 * packed for this program run (rt->run): the forward's, and unless eval the
 * input gradient's */
void rt_cpu_pack_weights(RtCtx *rt, int eval);

/* rt_residual.c: the residual block's row, shared by every backend's table
 * (its sub-layers run through rt->layers) */
void rt_residual_forward(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
void rt_residual_backward_input(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
void rt_residual_backward_weight(RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io);
size_t rt_residual_prepare(RtCtx *rt, RtLayerRt *lr);

void rt_fail(RtCtx *rt, const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 4, 5)));
#define RT_CHECK(rt, cond, ...)                               \
    do {                                                      \
        if (!(cond))                                          \
            rt_fail((rt), __FILE__, __LINE__, __VA_ARGS__);   \
    } while (0)
#define RT_MPI(rt, call)                                                         \
    do {                                                                         \
        int rc_ = (call);                                                        \
        if (rc_ != MPI_SUCCESS) {                                                \
            char s_[MPI_MAX_ERROR_STRING];                                       \
            int n_ = 0;                                                          \
            MPI_Error_string(rc_, s_, &n_);                                      \
            rt_fail((rt), __FILE__, __LINE__, "%s failed: %s", #call, s_);       \
        }                                                                        \
    } while (0)

/* The watchdog (xport): a wait made no progress for `secs`; names the
 * rank, the instruction and step, and what it waited for (a transfer `req`
 * or a reduction over `group`), then ends the job. */
void rt_stalled(RtCtx *rt, double secs, const XportReq *req, const char *group) __attribute__((noreturn));
/* Bookkeeping memory (tables, requests): not counted as training memory. */
void *rt_alloc(RtCtx *rt, size_t bytes, const char *what);
/* Training memory is counted, by kind, where it is allocated: every arena
 * of the training copy (the device's with --device cuda) adds its
 * requested bytes here, once, at start-up. rt_host_arena allocates a host
 * arena, counted on the CPU only (on a GPU run the device copy counts). */
void rt_mem_count(RtCtx *rt, RtMem kind, size_t bytes);
void *rt_host_arena(RtCtx *rt, RtMem kind, size_t bytes, const char *what);
int64_t rt_mem_total(const RtCtx *rt);
/* Tensor parallelism: whether q is one tp rank's share of a split tensor;
 * rt_tp_whole gathers the shares (local: q->n floats of this rank's, its
 * parameter or one of its state tensors) into whole (the tensor's count)
 * on tp rank 0, collective over the stage's tp ranks (whole is unused
 * elsewhere). */
int rt_tp_split(const RtCtx *rt, const RtParam *q);
void rt_tp_whole(RtCtx *rt, const RtParam *q, const float *local, float *whole);
/* The geometry of a transformer_block for k_block.h, of a conv2d and a
 * pooling layer for k_cpu.h (the same structs serve k_cuda.h). */
struct KBlock rt_block_geom(RtCtx *rt, const PlanLayer *L); /* split over the stage's tp ranks where L->tp > 1 */
struct KLlama rt_llama_geom(RtCtx *rt, const PlanLayer *L); /* llama_block's, for k_llama.h */
struct KConv rt_conv_geom(const RtCtx *rt, const PlanLayer *L);
/* the kernels' precision of matrix products (kernels/k_cpu.h KPrec): bf16
 * where the plan asks for it, else fp32 (tf32 is computed as fp32 on the CPU) */
int rt_kprec(const RtCtx *rt);
/* the layer (returned) and tensor (*k) whose values parameter q holds: a
 * tied copy's are its owner's weight (tensor 0) */
int rt_param_src(const RtCtx *rt, const struct RtParam *q, int *k);
/* precision = bf16 on the CPU: every layer's output (but the model's
 * last) and input gradient is rounded to bf16 on every stage count, so
 * activations and gradients travel between stages as bf16, half the
 * bytes, and the bits do not depend on where the stages are cut. The GPU
 * backend sends fp32. */
int rt_wire_bf16(const RtCtx *rt);
struct KPool rt_pool_geom(const PlanLayer *L);
/* transpose over B samples as k_transpose's g = {P, na, M, nb, Q} (the
 * lower dimension as na); returns 0 when a == b (a plain copy) */
int rt_transpose_geom(const PlanLayer *L, int64_t B, int64_t g[5]);
/* transformer_block's dropout keys for micro-batch mb (training only) */
struct KBlockKeys rt_block_keys(const RtCtx *rt, const PlanLayer *L, int64_t mb);

/* rt_setup.c: arenas, parameters (initialised), slots, communicators. */
void rt_setup(RtCtx *rt);
void rt_teardown(RtCtx *rt);
/* rt_layers.c: a chunk's forward and backward over one slot. */
void rt_chunk_forward(RtCtx *rt, RtChunk *ch, unsigned char *slot, const unsigned char *link_slot, int64_t mb);
void rt_chunk_backward(RtCtx *rt, RtChunk *ch, unsigned char *slot, unsigned char *link_slot, int64_t mb, int input,
                       int weight);
/* rt_exec.c: one pass of a program (training step or evaluation batch). */
void rt_run_program(RtCtx *rt, const SchedProgram *prog, int eval);
/* The global micro-batch's first sample index within the global batch. */
int64_t rt_sample_base(const RtCtx *rt, int64_t mb);

#endif
