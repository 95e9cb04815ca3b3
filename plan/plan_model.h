/* plan/plan_model.h: a model with meaning (the IR both programs share): the expanded layer list, every
 * tensor shape, the parameter layout (PyTorch's names and shapes), FLOP and
 * activation estimates.
 *
 * Shapes are per sample: the batch dimension is never written. The main
 * activation starts at the first `input` and flows through the layers in
 * order; other inputs (a padding mask) are side inputs that layers name
 * with `mask = NAME`. Layers are numbered from 0 in expanded order, as in
 * nn.Sequential. */
#ifndef PIPE_PLAN_MODEL_H
#define PIPE_PLAN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"

#define PLAN_MAX_DIMS 4
#define PLAN_MAX_IO 8              /* inputs, and targets, per model */
#define PLAN_MAX_LAYERS 100000     /* after repeat expansion */
#define PLAN_MAX_PARAM_TENSORS 24  /* per layer (transformer_block has 12; a residual block holds its
                                    * sub-layers', up to 24) */
#define PLAN_MAX_SUBLAYERS 64      /* statements in one residual block, body and shortcut together */
#define PLAN_MAX_ELEMS ((int64_t)1 << 40)

typedef enum PlanLayerKind {
#define PLAN_LAYER(id, name, sig, doc) PLAN_L_##id,
#include "layers.def"
#undef PLAN_LAYER
    PLAN_L_COUNT
} PlanLayerKind;

typedef enum PlanLossKind {
#define PLAN_LOSS(id, name, doc) PLAN_LOSS_##id,
#include "losses.def"
#undef PLAN_LOSS
    PLAN_LOSS_COUNT
} PlanLossKind;

extern const char *const plan_layer_names[PLAN_L_COUNT + 1];   /* NULL-terminated */
extern const char *const plan_layer_sigs[PLAN_L_COUNT];
extern const char *const plan_layer_docs[PLAN_L_COUNT];
extern const char *const plan_loss_names[PLAN_LOSS_COUNT + 1];
extern const char *const plan_loss_docs[PLAN_LOSS_COUNT];

typedef enum PlanDtype { PLAN_F32, PLAN_I32 } PlanDtype;

typedef struct PlanTensor {
    PlanDtype dtype;
    int ndim;
    int64_t dim[PLAN_MAX_DIMS];
} PlanTensor;

typedef struct PlanParam {
    char name[40];               /* suffix after "layers.{i}.", e.g. "attn.qkv.weight" */
    int ndim;
    int64_t dim[PLAN_MAX_DIMS];    /* PyTorch's layout: Linear [out, in], Conv2d [out, in, kh, kw] */
    int64_t count;
    int i64;                     /* a buffer held as int64 (num_batches_tracked); parameters are float32 */
} PlanParam;

/* A layer's buffers (batchnorm2d's running statistics): state that is not
 * trained (no gradient, no optimizer state, no weight decay) but is saved,
 * resumed, exported and read by --init under PyTorch's state_dict names
 * (layers.{i}.running_mean, ...). They are not stored in plan.bin: they
 * follow from the layer's kind and input shape (plan_layer_buffers). */
#define PLAN_MAX_BUFFERS 24 /* a residual block holds its layers' (8 batchnorm2d) */

/* How a layer's parameters start (docs/dsl.md, "Initialisation"):
 *   DEFAULT  PyTorch's module defaults (Linear and Conv2d uniform in
 *            +-1/sqrt(fan_in), Embedding N(0, 1), norms at 1 and 0)
 *   NORMAL   every weight N(0, std^2), biases 0, norm scales 1
 *   ZEROS    every tensor 0
 *   GPT2     as NORMAL, and the residual output projections (a block's
 *            attention and MLP output weights) N(0, std_resid^2), std_resid
 *            = std / sqrt(2 x the model's blocks): GPT-2's scheme */
typedef enum PlanInit { PLAN_INIT_DEFAULT, PLAN_INIT_NORMAL, PLAN_INIT_ZEROS, PLAN_INIT_GPT2, PLAN_INIT_COUNT } PlanInit;

typedef struct PlanLayer {
    PlanLayerKind kind;
    int index;
    SrcLoc loc;
    const char *label;           /* `as LABEL`, or NULL */
    /* arguments, defaults applied */
    int64_t nout;                /* linear, conv2d: output features / channels */
    int64_t vocab, dim, positions, heads, mlp;
    int64_t kv_heads;            /* llama_block: key/value heads (grouped-query attention) */
    double theta;                /* llama_block: RoPE's base (rope_theta) */
    int64_t kh, kw, sh, sw, ph, pw;  /* conv2d, pools */
    int64_t oh, ow;              /* adaptive_avgpool2d */
    double p, eps;
    double momentum;             /* batchnorm2d: the running statistics' update factor */
    int64_t axis_a, axis_b;      /* transpose: the two dimensions swapped, from 0, per sample (as written
                                  * until shape inference, which resolves negative ones) */
    int64_t shape[PLAN_MAX_DIMS]; /* reshape: the dimensions as written (one may be -1); not in plan.bin,
                                   * where its output shape says it */
    int shape_n;
    int bias, causal;
    int tie;                     /* linear: index of the layer whose weight it shares, or -1 */
    const char *tie_label;       /* as written (tie = LABEL), or NULL */
    SrcLoc tie_loc;
    int mask;                    /* transformer_block, llama_block: input index of its mask, or -1 */
    int split;                   /* linear, embedding: PlanLinearSplit, how tensor_parallel cuts it */
    PlanTensor in, out;
    int nparams;
    PlanParam param[PLAN_MAX_PARAM_TENSORS]; /* tensors this layer owns */
    int nbuffers;
    PlanParam buffer[PLAN_MAX_BUFFERS]; /* its buffers (plan_layer_buffers), not parameters */
    int64_t params;              /* elements it owns (a tied linear: its bias only) */
    int64_t held;                /* elements its stage must hold (a tied linear: + the shared weight) */
    int64_t flops;               /* forward, one sample (a multiply-add counts 2) */
    int64_t act_bytes;           /* its output, one sample */
    PlanInit init;               /* how its parameters start */
    double init_std, init_std_resid; /* NORMAL, GPT2 */
    SrcLoc init_loc;             /* its own init = ..., or line 0 */
    /* residual: its sub-layers, the body's nbody then the shortcut's
     * nshort, each an ordinary layer (index = the block's, sub = its
     * position + 1); the block's param[] lists theirs in that order, named
     * body.j.NAME and shortcut.j.NAME */
    struct PlanLayer *sub;
    int nbody, nshort;
    int sub_pos;                 /* inside a residual: 1 + its place among the block's sub-layers; else 0 */
    int64_t tp;                  /* transformer_block, llama_block, a split linear: the tensor_parallel ranks that cut it
                                  * (0 or 1: whole); not in plan.bin: plan_model_set_tp sets it from the
                                  * config, in pipec and in plan_read */
} PlanLayer;

typedef struct PlanIO {
    const char *name;
    SrcLoc loc;
    PlanTensor t;
    int first_use, last_use;     /* layer indices; -1 when unused (inputs past the first) */
} PlanIO;

typedef struct PlanModel {
    const char *name;
    SrcLoc loc;
    PlanIO input[PLAN_MAX_IO];
    int ninputs;
    PlanIO target[PLAN_MAX_IO];
    int ntargets;
    PlanLayer *layer;
    int nlayers;
    PlanLossKind loss;
    SrcLoc loss_loc;
    int64_t total_params;        /* each tied tensor counted once */
    int64_t total_flops;
} PlanModel;

void plan_model_free(PlanModel *m);

/* A linear's `split`: whole on every rank (the default), or cut over the
 * tensor_parallel ranks by output features (column: rows of W and b, the
 * output gathered) or input features (row: columns of W, the output
 * summed, b whole); an embedding's: whole, or by vocabulary (vocab: rows
 * of the token table, the output summed, the positions whole);
 * runtime/rt_cpu.c says how it computes. */
typedef enum PlanLinearSplit {
    PLAN_LINEAR_WHOLE,
    PLAN_LINEAR_COLUMN,
    PLAN_LINEAR_ROW,
    PLAN_EMBEDDING_VOCAB
} PlanLinearSplit;
/* Their words in the DSL, --stats and its JSON ("whole" is never written) */
extern const char *const plan_linear_split_names[4];
/* 1 when layer L is a linear or embedding with a split */
int plan_layer_split(const PlanLayer *L);

/* Tensor parallelism (tensor_parallel = T): the model's own
 * transformer_block and llama_block layers, and linears with a split, are
 * cut over T ranks (kernels/k_block.h and k_llama.h say how for the
 * blocks), everything else is whole on every rank. plan_model_set_tp marks
 * those layers (L->tp = T).
 * plan_param_split says how tensor k of a layer is cut: NONE (whole on
 * every rank), ROWS (dimension 0 in T equal pieces, rank r the r-th),
 * COLS (dimension 1 likewise), QKV (dimension 0 as three equal sections,
 * q, k and v, each cut as ROWS). plan_param_local is one rank's element
 * count; plan_param_take copies rank r's share out of the whole tensor,
 * plan_param_put puts it back. plan_tp_misfit names what T does not
 * divide in a split layer (heads, kv_heads, mlp; a linear's out or in
 * features), or NULL. */
typedef enum PlanSplit { PLAN_SPLIT_NONE, PLAN_SPLIT_ROWS, PLAN_SPLIT_COLS, PLAN_SPLIT_QKV } PlanSplit;
void plan_model_set_tp(PlanModel *m, int64_t T);
const char *plan_tp_misfit(const PlanLayer *L, int64_t T, int64_t *value);
PlanSplit plan_param_split(const PlanLayer *L, int k);
int64_t plan_param_local(const PlanLayer *L, int k);
void plan_param_take(float *part, const float *whole, const PlanLayer *L, int k, int64_t r);
void plan_param_put(float *whole, const float *part, const PlanLayer *L, int k, int64_t r);
/* Frees one layer's sub-layers (a residual's), recursively. */
void plan_layer_free_subs(PlanLayer *L);
/* The key a layer's random streams use (dropout masks): its index, and for a
 * residual's sub-layer also its place in the block (sub_pos << 17; layer
 * indices stay below 2^17), so two dropouts of one block draw apart. */
uint32_t plan_layer_key(const PlanLayer *L);
/* The name of sub-layer j of a residual's params: "body.j." or
 * "shortcut.(j - nbody).", into buf. */
void plan_sub_prefix(const PlanLayer *R, int j, char *buf, size_t size);

int64_t plan_tensor_elems(const PlanTensor *t);
/* Fills L->buffer from its kind and input shape: batchnorm2d's
 * running_mean [C], running_var [C] (float32) and num_batches_tracked []
 * (int64), as nn.BatchNorm2d's state_dict holds them; a residual block
 * its layers' (set first), under body.j. and shortcut.j.; none for the
 * rest. Returns -1 when a block's layers hold more than PLAN_MAX_BUFFERS. */
int plan_layer_buffers(PlanLayer *L);
/* Bytes of a layer's buffers as the runtime holds them: each buffer's
 * elements x 4 (float32) or x 8 (int64). */
int64_t plan_layer_buffer_bytes(const PlanLayer *L);
int64_t plan_dtype_size(PlanDtype d);
const char *plan_dtype_name(PlanDtype d);
/* "[64, 55, 55]" (with dtype: "int32[128]") */
void plan_tensor_text(const PlanTensor *t, int with_dtype, char *buf, size_t size);

#endif
