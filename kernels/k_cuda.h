/* kernels/k_cuda.h: the CUDA kernels, a mirror of k_cpu.h, k_block.h and k_llama.h
 * over device pointers (kc_ for k_), as plain C functions.
 *
 * Conventions, on top of k_cpu.h's (shapes, forward overwrites, *_weight
 * adds, *_input overwrites, split backwards give the same bits as unsplit):
 *
 *   - Every function takes a KcCtx first and returns KC_OK (0) or an error
 *     code; the first error is kept in ctx->err and ctx->msg ("file:line:
 *     call: reason") and every later call returns it at once without doing
 *     anything (sticky, as SQLite's), until kc_clear_error. Nothing here
 *     exits or prints. Kernels run asynchronously on ctx->stream: a fault
 *     inside a kernel (an illegal address) surfaces at the next call that
 *     synchronises (kc_sync, kc_fetch) or checks the stream.
 *   - Every pointer to an array is device memory unless said otherwise; the
 *     sizes and the KConv / KPool / KBlock geometries are host values.
 *   - Nothing allocates after kc_init / kc_reserve / kc_conv_plan. Kernels
 *     that need temporary memory take it from the context's workspace
 *     (ctx->ws); the kc_*_workspace functions give the bytes each needs, and
 *     a kernel whose workspace is too small fails with KC_ERR_WORKSPACE. The
 *     workspace is used by one kernel at a time, in stream order.
 *   - Matrix products go through cuBLAS in the context's precision
 *     (ctx->prec): KC_FP32 (true fp32), KC_TF32 (tensor cores, fp32 in and
 *     out, 10-bit mantissa products) or KC_BF16 (both operands rounded to
 *     bf16 in the workspace, fp32 accumulation, fp32 out). Convolutions go
 *     through cuDNN; in KC_BF16 they run as KC_TF32 (see docs/gpu.md).
 *   - Deterministic: the same inputs on the same GPU and library versions
 *     give the same bits. Reductions use fixed trees and fixed groupings,
 *     never float atomics; cuDNN algorithms are chosen among the
 *     deterministic ones. The bits differ from the CPU kernels' (other
 *     summation orders, expf/tanhf differ by an ulp) except where a kernel
 *     says it matches them bit for bit.
 *   - Losses, the sum of squares and the like write their totals to device
 *     memory (d_res); kc_fetch copies them back (and synchronises).
 */
#ifndef PIPE_K_CUDA_H
#define PIPE_K_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "k_block.h"
#include "k_cpu.h"
#include "k_llama.h"

/* ---- context ------------------------------------------------------------------ */

typedef enum KcPrec { KC_FP32, KC_TF32, KC_BF16 } KcPrec; /* the DSL's precision = fp32 | tf32 | bf16 */

enum {
    KC_OK = 0,
    KC_ERR_CUDA,      /* a CUDA runtime call or a kernel launch failed */
    KC_ERR_CUBLAS,    /* a cuBLAS call failed */
    KC_ERR_CUDNN,     /* a cuDNN call failed, or no algorithm fits */
    KC_ERR_ARG,       /* sizes out of range, unsupported geometry */
    KC_ERR_WORKSPACE  /* ctx->ws smaller than the kernel needs */
};

#define KC_MSG_LEN 512
#define KC_BLAS_WS_BYTES ((size_t)32 << 20) /* cuBLAS's own workspace: NVIDIA's advice for Hopper */

typedef struct KcCtx {
    int device;               /* CUDA device ordinal */
    int sms;                  /* its multiprocessors (grid sizes of elementwise kernels) */
    cudaStream_t stream;      /* every kernel and library call runs on it */
    cublasHandle_t blas;      /* bound to stream and blas_ws */
    cudnnHandle_t dnn;        /* bound to stream */
    KcPrec prec;              /* of matrix products and convolutions (plans take it when made) */
    void *ws;                 /* kernels' workspace (device), ws_bytes long */
    size_t ws_bytes;
    void *blas_ws;            /* cuBLAS's workspace (device), KC_BLAS_WS_BYTES */
    int err;                  /* first error, KC_OK while none */
    char msg[KC_MSG_LEN];     /* its description */
} KcCtx;

/* Number of CUDA devices, 0 when there is none or no usable driver. */
int kc_device_count(void);
/* Selects device, creates the stream (non-blocking), the cuBLAS and cuDNN
 * handles and ws_bytes of workspace. On failure ctx->err / ctx->msg say why
 * and whatever was created is freed by kc_free. */
int kc_init(KcCtx *ctx, int device, size_t ws_bytes);
/* Grows the workspace to at least ws_bytes (outside the step loop: it
 * synchronises and reallocates). */
int kc_reserve(KcCtx *ctx, size_t ws_bytes);
/* Frees everything kc_init created; safe on a failed or zeroed context. */
void kc_free(KcCtx *ctx);
void kc_set_precision(KcCtx *ctx, KcPrec prec);
const char *kc_prec_name(KcPrec prec);
/* Waits for the stream; reports a fault of any kernel queued before. */
int kc_sync(KcCtx *ctx);
/* host[0, n) = d_res[0, n), after waiting for the stream. */
int kc_fetch(KcCtx *ctx, double *host, const double *d_res, int n);
void kc_clear_error(KcCtx *ctx);

/* fp32 <-> bf16 (raw bf16 bits in uint16_t), n elements, round to nearest
 * even (NaN stays NaN). */
int kc_f32_to_bf16(KcCtx *ctx, uint16_t *out, const float *in, int64_t n);
int kc_bf16_to_f32(KcCtx *ctx, float *out, const uint16_t *in, int64_t n);

/* ---- linear ---------------------------------------------------------------------- */
/* Workspace bytes for all three halves at these sizes in ctx->prec. */
size_t kc_linear_workspace(const KcCtx *ctx, int64_t n, int64_t in_f, int64_t out_f);
int kc_linear_forward(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, int64_t n,
                      int64_t in_f, int64_t out_f);
int kc_linear_backward_input(KcCtx *ctx, float *din, const float *dout, const float *w, int64_t n, int64_t in_f,
                             int64_t out_f);
int kc_linear_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in, int64_t n,
                              int64_t in_f, int64_t out_f);

/* ---- conv2d (cuDNN, NCHW) ------------------------------------------------------------ */
/* Descriptors and algorithms for one geometry, micro-batch size and
 * precision, chosen once by kc_conv_plan with cuDNN's v7 heuristics: the
 * first algorithm in cuDNN's order that succeeds, is deterministic, fits
 * ws_limit bytes of workspace and (in KC_FP32) uses no tensor cores. */
typedef struct KcConvPlan {
    KConv g;
    int64_t B;
    KcPrec prec;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
    size_t ws_bytes;   /* the most of the three; ctx->ws must hold it */
    int ready;
} KcConvPlan;
int kc_conv_plan(KcCtx *ctx, KcConvPlan *plan, const KConv *g, int64_t B, size_t ws_limit);
/* Frees the descriptors; also after a failed kc_conv_plan. The kernels set
 * the plan's math type before each call: one thread per plan at a time. */
void kc_conv_plan_free(KcConvPlan *plan);
/* in (B, C, H, W), w (OC, C, KH, KW), b (OC) or NULL, out (B, OC, OH, OW) */
int kc_conv2d_forward(KcCtx *ctx, const KcConvPlan *plan, float *out, const float *in, const float *w, const float *b);
int kc_conv2d_backward_input(KcCtx *ctx, const KcConvPlan *plan, float *din, const float *dout, const float *w);
int kc_conv2d_backward_weight(KcCtx *ctx, const KcConvPlan *plan, float *dw, float *db, const float *dout,
                              const float *in);

/* ---- pooling (own kernels: the same arithmetic as the CPU's, bit for bit,
 * indices and ties included; backwards gather in the CPU's order) ---------- */
int kc_maxpool2d_forward(KcCtx *ctx, float *out, int32_t *idx, const float *in, int64_t B, const KPool *g);
int kc_maxpool2d_backward(KcCtx *ctx, float *din, const float *dout, const int32_t *idx, int64_t B, const KPool *g);
int kc_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, const KPool *g);
int kc_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, const KPool *g);
int kc_adaptive_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, int64_t c, int64_t h, int64_t w,
                                  int64_t oh, int64_t ow);
int kc_adaptive_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, int64_t c, int64_t h,
                                   int64_t w, int64_t oh, int64_t ow);

/* ---- elementwise (n elements) ------------------------------------------------------- */
int kc_relu_forward(KcCtx *ctx, float *out, const float *in, int64_t n);
int kc_relu_backward(KcCtx *ctx, float *din, const float *dout, const float *in, int64_t n);
int kc_gelu_forward(KcCtx *ctx, float *out, const float *in, int64_t n);
int kc_gelu_backward(KcCtx *ctx, float *din, const float *dout, const float *in, int64_t n);
int kc_tanh_forward(KcCtx *ctx, float *out, const float *in, int64_t n);
int kc_tanh_backward(KcCtx *ctx, float *din, const float *dout, const float *out, int64_t n);
int kc_sigmoid_forward(KcCtx *ctx, float *out, const float *in, int64_t n);
int kc_sigmoid_backward(KcCtx *ctx, float *din, const float *dout, const float *out, int64_t n);
/* Masks of B samples of n elements each, mask (B, n): sample s is
 * k_dropout_mask(mask + s n, n, p, seed, step, sample0 + s, layer), the
 * same Philox stream, bit for bit. */
int kc_dropout_mask(KcCtx *ctx, uint8_t *mask, int64_t n, int64_t B, float p, uint64_t seed, uint64_t step,
                    uint64_t sample0, uint32_t layer);
int kc_dropout_forward(KcCtx *ctx, float *out, const float *in, const uint8_t *mask, float p, int64_t n);
int kc_dropout_backward(KcCtx *ctx, float *din, const float *dout, const uint8_t *mask, float p, int64_t n);
/* y (n) += x (n), one float add each (the block's residuals) */
int kc_add_into(KcCtx *ctx, float *y, const float *x, int64_t n);

/* ---- layernorm ---------------------------------------------------------------------- */
size_t kc_layernorm_workspace(int64_t n, int64_t d);
int kc_layernorm_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, int64_t n, int64_t d, float eps);
int kc_layernorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                const float *mean, const float *rstd, int64_t n, int64_t d);
int kc_layernorm_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                 const float *mean, const float *rstd, int64_t n, int64_t d);

/* ---- transpose (k_cpu.h's k_transpose: a copy, so the CPU's bits) ---------------------- */
int kc_transpose(KcCtx *ctx, float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q);

/* ---- batchnorm2d over [B, C, HW] per channel (k_cpu.h's, one block per channel) ---------- */
/* rmean, rvar, nbt NULL: no update of the running statistics */
int kc_batchnorm2d_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                           const float *b, int64_t B, int64_t C, int64_t HW, float eps, float *rmean, float *rvar,
                           int64_t *nbt, double momentum);
int kc_batchnorm2d_eval(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, const float *rmean,
                        const float *rvar, int64_t B, int64_t C, int64_t HW, float eps);
int kc_batchnorm2d_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                  const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW);
int kc_batchnorm2d_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                   const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW);

/* ---- embedding ------------------------------------------------------------------- */
/* tokens on the device, in [0, vocab) (the caller checks). The backward
 * adds each row's gradient in (b, t) order, as the CPU does: the same bits
 * as k_embedding_backward_weight. */
int kc_embedding_forward(KcCtx *ctx, float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                         int64_t t, int64_t d);
int kc_embedding_backward_weight(KcCtx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                 int64_t B, int64_t t, int64_t d);

/* ---- attention core (batched GEMMs over B x heads, masked softmax) ------------ */
size_t kc_attention_workspace(const KcCtx *ctx, int64_t B, int64_t t, int64_t d, int64_t heads);
int kc_attention_forward(KcCtx *ctx, float *out, float *att, const float *qkv, const float *mask, int64_t B, int64_t t,
                         int64_t d, int64_t heads, int causal);
int kc_attention_backward(KcCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B,
                          int64_t t, int64_t d, int64_t heads);

/* ---- losses ------------------------------------------------------------------------ */
/* As k_cross_entropy / k_mse, with the totals in d_res (device): cross-
 * entropy writes d_res[0] = the sum of -log softmax[target] over the
 * non-ignored rows, d_res[1] = their count, d_res[2] = the rows whose
 * argmax (the first maximum) is the target; mse writes d_res[0] = the sum
 * of squared differences. The gradient gets the same scale. The sums are
 * in double, over fixed groups. */
size_t kc_loss_workspace(int64_t n);
int kc_cross_entropy(KcCtx *ctx, float *dlogits, const float *logits, const int32_t *targets, int64_t n, int64_t c,
                     double scale, double *d_res);
int kc_mse(KcCtx *ctx, float *dout, const float *out, const float *target, int64_t n, double scale, double *d_res);

/* ---- optimizers (runtime/rt_optim.c's formulas and float order) ------------------ */
typedef enum KcOptKind { KC_SGD, KC_ADAM, KC_ADAMW } KcOptKind;
typedef struct KcOptim {
    KcOptKind kind;
    double momentum, weight_decay, beta1, beta2, eps;
    int nesterov;
} KcOptim;
/* state floats per parameter, as rt_optim_state_per_param */
int kc_optim_state_per_param(const KcOptim *o);
/* One step over n parameters; state as rt_optim.h lays it out; t from 1.
 * The same float operations as rt_optim_step, in its order, with its
 * fused multiply-adds and no others: the same bits. */
int kc_optim_step(KcCtx *ctx, const KcOptim *o, float *p, const float *g, float *state, int64_t n, int64_t t,
                  double lr);
/* d_res[0] = sum of g^2 in double (fixed groups; the gradient norm) */
size_t kc_sumsq_workspace(int64_t n);
int kc_sumsq(KcCtx *ctx, const float *g, int64_t n, double *d_res);
int kc_scale(KcCtx *ctx, float *g, int64_t n, float factor);

/* ---- transformer_block (k_block.h), call for call as kernels/cpu/k_block.c ------- */
/* saved, dsaved, scratch are the CPU's sizes (k_block_saved_floats etc.);
 * ctx->ws must also hold kc_block_workspace bytes for the inner kernels.
 * keys (a host struct, or NULL) as k_block.h's: the three dropout masks are
 * the CPU's bit for bit (drawn inside the kernels, nothing kept). */
size_t kc_block_workspace(const KcCtx *ctx, const KBlock *g, int64_t B);
int kc_block_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[12],
                     int64_t B, const KBlock *g, const KBlockKeys *keys, float *scratch);
int kc_block_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[12], int64_t B,
                            const KBlock *g, const KBlockKeys *keys, float *scratch);
int kc_block_backward_weight(KcCtx *ctx, float *const grads[12], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KBlock *g, float *scratch);

/* ---- rmsnorm (kernels/cuda/kc_llama.cu) ------------------------------------------- */
/* As k_rmsnorm_*: one block per row, the sum of squares per thread in float
 * then a tree in double (layernorm's order), rstd rounded to float once; the
 * weight's column sums over fixed groups of rows (kc_colsum's). */
size_t kc_rmsnorm_workspace(int64_t n, int64_t d);
int kc_rmsnorm_forward(KcCtx *ctx, float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d,
                       float eps);
int kc_rmsnorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                              const float *rstd, int64_t n, int64_t d);
int kc_rmsnorm_backward_weight(KcCtx *ctx, float *dw, const float *dout, const float *in, const float *rstd, int64_t n,
                               int64_t d);

/* ---- llama_block (k_llama.h), call for call as kernels/cpu/k_llama.c --------------- */
/* saved, dsaved, scratch are the CPU's sizes and layouts
 * (k_llama_saved_layout etc.); ctx->ws must also hold kc_llama_workspace
 * bytes for the inner kernels. RoPE's table, SwiGLU and the repeat of the
 * kv heads are kernels of kc_llama.cu with the CPU's float expressions. */
size_t kc_llama_workspace(const KcCtx *ctx, const KLlama *g, int64_t B);
int kc_llama_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[9],
                     int64_t B, const KLlama *g, float *scratch);
int kc_llama_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[9], int64_t B,
                            const KLlama *g, float *scratch);
int kc_llama_backward_weight(KcCtx *ctx, float *const grads[9], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KLlama *g, float *scratch);

#ifdef __cplusplus
}
#endif

#endif
