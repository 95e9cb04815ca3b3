/* compiler/model.h: a model with meaning: the expanded layer list, every
 * tensor shape, the parameter layout (PyTorch's names and shapes), FLOP and
 * activation estimates.
 *
 * Shapes are per sample: the batch dimension is never written. The main
 * activation starts at the first `input` and flows through the layers in
 * order; other inputs (a padding mask) are side inputs that layers name
 * with `mask = NAME`. Layers are numbered from 0 in expanded order, as in
 * nn.Sequential. */
#ifndef PIPE_MODEL_H
#define PIPE_MODEL_H

#include <stdint.h>

#include "ast.h"
#include "diag.h"

#define PC_MAX_DIMS 4
#define PC_MAX_IO 8              /* inputs, and targets, per model */
#define PC_MAX_LAYERS 100000     /* after repeat expansion */
#define PC_MAX_PARAM_TENSORS 12  /* per layer (transformer_block has 12) */
#define PC_MAX_ELEMS ((int64_t)1 << 40)

typedef enum PcLayerKind {
#define PC_LAYER(id, name, sig, doc) PC_L_##id,
#include "layers.def"
#undef PC_LAYER
    PC_L_COUNT
} PcLayerKind;

typedef enum PcLossKind {
#define PC_LOSS(id, name, doc) PC_LOSS_##id,
#include "losses.def"
#undef PC_LOSS
    PC_LOSS_COUNT
} PcLossKind;

extern const char *const pc_layer_names[PC_L_COUNT + 1];   /* NULL-terminated */
extern const char *const pc_layer_sigs[PC_L_COUNT];
extern const char *const pc_layer_docs[PC_L_COUNT];
extern const char *const pc_loss_names[PC_LOSS_COUNT + 1];
extern const char *const pc_loss_docs[PC_LOSS_COUNT];

typedef enum PcDtype { PC_F32, PC_I32 } PcDtype;

typedef struct PcTensor {
    PcDtype dtype;
    int ndim;
    int64_t dim[PC_MAX_DIMS];
} PcTensor;

typedef struct PcParam {
    char name[24];               /* suffix after "layers.{i}.", e.g. "attn.qkv.weight" */
    int ndim;
    int64_t dim[PC_MAX_DIMS];    /* PyTorch's layout: Linear [out, in], Conv2d [out, in, kh, kw] */
    int64_t count;
} PcParam;

typedef struct PcLayer {
    PcLayerKind kind;
    int index;
    SrcLoc loc;
    const char *label;           /* `as LABEL`, or NULL */
    /* arguments, defaults applied */
    int64_t nout;                /* linear, conv2d: output features / channels */
    int64_t vocab, dim, positions, heads, mlp;
    int64_t kh, kw, sh, sw, ph, pw;  /* conv2d, pools */
    int64_t oh, ow;              /* adaptive_avgpool2d */
    double p, eps;
    int bias, causal;
    int tie;                     /* linear: index of the layer whose weight it shares, or -1 */
    const char *tie_label;       /* as written (tie = LABEL), or NULL */
    SrcLoc tie_loc;
    int mask;                    /* transformer_block: input index of its mask, or -1 */
    PcTensor in, out;
    int nparams;
    PcParam param[PC_MAX_PARAM_TENSORS]; /* tensors this layer owns */
    int64_t params;              /* elements it owns (a tied linear: its bias only) */
    int64_t held;                /* elements its stage must hold (a tied linear: + the shared weight) */
    int64_t flops;               /* forward, one sample (a multiply-add counts 2) */
    int64_t act_bytes;           /* its output, one sample */
} PcLayer;

typedef struct PcIO {
    const char *name;
    SrcLoc loc;
    PcTensor t;
    int first_use, last_use;     /* layer indices; -1 when unused (inputs past the first) */
} PcIO;

typedef struct PcModel {
    const char *name;
    SrcLoc loc;
    PcIO input[PC_MAX_IO];
    int ninputs;
    PcIO target[PC_MAX_IO];
    int ntargets;
    PcLayer *layer;
    int nlayers;
    PcLossKind loss;
    SrcLoc loss_loc;
    int64_t total_params;        /* each tied tensor counted once */
    int64_t total_flops;
} PcModel;

/* Builds the model from the `model` block: expands repeat, binds arguments,
 * infers shapes. Returns 0, or -1 after reporting. */
int pc_model_build(DiagList *dl, const AstBlock *block, PcModel *m);
void pc_model_free(PcModel *m);

int64_t pc_tensor_elems(const PcTensor *t);
int64_t pc_dtype_size(PcDtype d);
const char *pc_dtype_name(PcDtype d);
/* "[64, 55, 55]" (with dtype: "int32[128]") */
void pc_tensor_text(const PcTensor *t, int with_dtype, char *buf, size_t size);

#endif
