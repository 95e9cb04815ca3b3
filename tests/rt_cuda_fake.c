/* tests/rt_cuda_fake.c: a host stand-in for the CUDA runtime and the kc_
 * kernels, linked with runtime/rt_cuda.c into pipert-cuda-fake.so, so that
 * `pipert --device cuda` can run on a machine without a GPU
 * (PIPERT_CUDA_MODULE=.../pipert-cuda-fake.so; tests/e2e/test_device.sh).
 *
 * What it checks: everything of the CUDA path that is not CUDA itself: the
 * interpreter's GPU branches (rt_layers.c, rt_exec.c, rt_setup.c), the
 * arrays each layer is given, the loss queue and its order, the load
 * staging, the staged MPI transport's bookkeeping, the norm, the update,
 * tied weights, checkpoints. "Device" memory is host memory, copies are
 * memcpy, events and streams do nothing, and each kc_ kernel calls its
 * k_ twin (the CPU kernels, taken from pipert), so the losses must equal the
 * CPU's bit for bit. What it cannot check: asynchrony, the real kernels,
 * CUDA's errors. */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "plan_config.h"
#include "k_cuda.h"
#include "rt_optim.h"

/* ---- the CUDA runtime calls rt_cuda.c makes ---------------------------------------- */

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    memset(prop, 0, sizeof *prop);
    strcpy(prop->name, "fake GPU (tests/rt_cuda_fake.c: host memory, CPU kernels)");
    prop->uuid.bytes[0] = (char)device;
    return cudaSuccess;
}

const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : "cudaErrorFake";
}

const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : "fake error";
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = malloc(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    return cudaMalloc(p, n);
}

cudaError_t cudaFreeHost(void *p)
{
    return cudaFree(p);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    (void)s;
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)kind, (void)s;
    memcpy(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    *e = (cudaEvent_t)malloc(1);
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free((void *)e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)e, (void)s;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    (void)e;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    *free_b = *total = (size_t)1 << 30;
    return cudaSuccess;
}

/* ---- context ------------------------------------------------------------------------ */

int kc_init(KcCtx *ctx, int device, size_t ws_bytes)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->device = device;
    ctx->prec = KC_FP32;
    return kc_reserve(ctx, ws_bytes);
}

int kc_reserve(KcCtx *ctx, size_t ws_bytes)
{
    if (ws_bytes <= ctx->ws_bytes)
        return KC_OK;
    free(ctx->ws);
    ctx->ws = malloc(ws_bytes);
    ctx->ws_bytes = ctx->ws ? ws_bytes : 0;
    return ctx->ws ? KC_OK : KC_ERR_CUDA;
}

void kc_free(KcCtx *ctx)
{
    free(ctx->ws);
    ctx->ws = NULL;
    ctx->ws_bytes = 0;
}

void kc_set_precision(KcCtx *ctx, KcPrec prec)
{
    ctx->prec = prec;
}

const char *kc_prec_name(KcPrec prec)
{
    return prec == KC_BF16 ? "bf16" : prec == KC_TF32 ? "tf32" : "fp32";
}

int kc_sync(KcCtx *ctx)
{
    return ctx->err;
}

int kc_fetch(KcCtx *ctx, double *host, const double *d_res, int n)
{
    memcpy(host, d_res, (size_t)n * sizeof(double));
    return ctx->err;
}

/* ---- layers -------------------------------------------------------------------------- */

size_t kc_linear_workspace(const KcCtx *ctx, int64_t n, int64_t in_f, int64_t out_f)
{
    (void)ctx, (void)n, (void)in_f, (void)out_f;
    return 0;
}

int kc_linear_forward(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, int64_t n, int64_t in_f,
                      int64_t out_f)
{
    k_linear_forward(out, in, w, b, n, in_f, out_f, K_FP32, NULL);
    return ctx->err;
}

int kc_linear_backward_input(KcCtx *ctx, float *din, const float *dout, const float *w, int64_t n, int64_t in_f,
                             int64_t out_f)
{
    k_linear_backward_input(din, dout, w, n, in_f, out_f, K_FP32);
    return ctx->err;
}

/* The CPU runtime sums a linear's weight gradient by its own product where
 * k_linear_wgrad_floats says so, in the kernel scratch; the stand-in gives
 * it a scratch of its own for the call, so that its bits stay the CPU's. */
int kc_linear_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in, int64_t n,
                              int64_t in_f, int64_t out_f)
{
    int64_t nw = k_linear_wgrad_floats(n, in_f, out_f);
    float *scratch = nw ? malloc((size_t)nw * sizeof(float)) : NULL;
    if (nw && !scratch)
        abort();
    k_linear_backward_weight(dw, db, dout, in, n, in_f, out_f, K_FP32, scratch);
    free(scratch);
    return ctx->err;
}

/* the CPU convolution's im2col scratch is the "workspace" */
int kc_conv_plan(KcCtx *ctx, KcConvPlan *plan, const KConv *g, int64_t B, size_t ws_limit)
{
    (void)ws_limit;
    memset(plan, 0, sizeof *plan);
    plan->g = *g, plan->B = B, plan->prec = ctx->prec;
    plan->ws_bytes = (size_t)k_conv2d_scratch(g) * sizeof(float);
    plan->ready = 1;
    return ctx->err;
}

void kc_conv_plan_free(KcConvPlan *plan)
{
    plan->ready = 0;
}

int kc_conv2d_forward(KcCtx *ctx, const KcConvPlan *plan, float *out, const float *in, const float *w, const float *b)
{
    if (ctx->ws_bytes < plan->ws_bytes)
        return ctx->err = KC_ERR_WORKSPACE;
    k_conv2d_forward(out, in, w, b, plan->B, &plan->g, (float *)ctx->ws);
    return ctx->err;
}

int kc_conv2d_backward_input(KcCtx *ctx, const KcConvPlan *plan, float *din, const float *dout, const float *w)
{
    if (ctx->ws_bytes < plan->ws_bytes)
        return ctx->err = KC_ERR_WORKSPACE;
    k_conv2d_backward_input(din, dout, w, plan->B, &plan->g, (float *)ctx->ws);
    return ctx->err;
}

int kc_conv2d_backward_weight(KcCtx *ctx, const KcConvPlan *plan, float *dw, float *db, const float *dout,
                              const float *in)
{
    if (ctx->ws_bytes < plan->ws_bytes)
        return ctx->err = KC_ERR_WORKSPACE;
    k_conv2d_backward_weight(dw, db, dout, in, plan->B, &plan->g, (float *)ctx->ws);
    return ctx->err;
}

int kc_maxpool2d_forward(KcCtx *ctx, float *out, int32_t *idx, const float *in, int64_t B, const KPool *g)
{
    k_maxpool2d_forward(out, idx, in, B, g);
    return ctx->err;
}

int kc_maxpool2d_backward(KcCtx *ctx, float *din, const float *dout, const int32_t *idx, int64_t B, const KPool *g)
{
    k_maxpool2d_backward(din, dout, idx, B, g);
    return ctx->err;
}

int kc_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, const KPool *g)
{
    k_avgpool2d_forward(out, in, B, g);
    return ctx->err;
}

int kc_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, const KPool *g)
{
    k_avgpool2d_backward(din, dout, B, g);
    return ctx->err;
}

int kc_adaptive_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, int64_t c, int64_t h, int64_t w,
                                  int64_t oh, int64_t ow)
{
    k_adaptive_avgpool2d_forward(out, in, B, c, h, w, oh, ow);
    return ctx->err;
}

int kc_adaptive_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, int64_t c, int64_t h,
                                   int64_t w, int64_t oh, int64_t ow)
{
    k_adaptive_avgpool2d_backward(din, dout, B, c, h, w, oh, ow);
    return ctx->err;
}

#define FAKE_UNARY(name)                                                    \
    int kc_##name##_forward(KcCtx *ctx, float *out, const float *in, int64_t n) \
    {                                                                       \
        k_##name##_forward(out, in, n);                                     \
        return ctx->err;                                                    \
    }
#define FAKE_UNARY_BACK(name)                                                                      \
    int kc_##name##_backward(KcCtx *ctx, float *din, const float *dout, const float *x, int64_t n) \
    {                                                                                              \
        k_##name##_backward(din, dout, x, n);                                                      \
        return ctx->err;                                                                           \
    }
FAKE_UNARY(relu)
FAKE_UNARY(gelu)
FAKE_UNARY(tanh)
FAKE_UNARY(sigmoid)
FAKE_UNARY_BACK(relu)
FAKE_UNARY_BACK(gelu)
FAKE_UNARY_BACK(tanh)
FAKE_UNARY_BACK(sigmoid)

int kc_dropout_mask(KcCtx *ctx, uint8_t *mask, int64_t n, int64_t B, float p, uint64_t seed, uint64_t step,
                    uint64_t sample0, uint32_t layer)
{
    for (int64_t s = 0; s < B; s++)
        k_dropout_mask(mask + s * n, n, p, seed, step, sample0 + (uint64_t)s, layer);
    return ctx->err;
}

int kc_dropout_forward(KcCtx *ctx, float *out, const float *in, const uint8_t *mask, float p, int64_t n)
{
    k_dropout_forward(out, in, mask, p, n);
    return ctx->err;
}

int kc_dropout_backward(KcCtx *ctx, float *din, const float *dout, const uint8_t *mask, float p, int64_t n)
{
    k_dropout_backward(din, dout, mask, p, n);
    return ctx->err;
}

int kc_add_into(KcCtx *ctx, float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
    return ctx->err;
}

size_t kc_layernorm_workspace(int64_t n, int64_t d)
{
    (void)n, (void)d;
    return 0;
}

int kc_layernorm_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, int64_t n, int64_t d, float eps)
{
    k_layernorm_forward(out, mean, rstd, in, w, b, n, d, eps);
    return ctx->err;
}

int kc_layernorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                const float *mean, const float *rstd, int64_t n, int64_t d)
{
    k_layernorm_backward_input(din, dout, in, w, mean, rstd, n, d);
    return ctx->err;
}

int kc_layernorm_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                 const float *mean, const float *rstd, int64_t n, int64_t d)
{
    k_layernorm_backward_weight(dw, db, dout, in, mean, rstd, n, d);
    return ctx->err;
}

int kc_transpose(KcCtx *ctx, float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q)
{
    k_transpose(out, in, P, na, M, nb, Q);
    return ctx->err;
}

int kc_batchnorm2d_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                           const float *b, int64_t B, int64_t C, int64_t HW, float eps, float *rmean, float *rvar,
                           int64_t *nbt, double momentum)
{
    k_batchnorm2d_forward(out, mean, rstd, in, w, b, B, C, HW, eps, rmean, rvar, nbt, momentum);
    return ctx->err;
}

int kc_batchnorm2d_eval(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, const float *rmean,
                        const float *rvar, int64_t B, int64_t C, int64_t HW, float eps)
{
    k_batchnorm2d_eval(out, in, w, b, rmean, rvar, B, C, HW, eps);
    return ctx->err;
}

int kc_batchnorm2d_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                  const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    k_batchnorm2d_backward_input(din, dout, in, w, mean, rstd, B, C, HW);
    return ctx->err;
}

int kc_batchnorm2d_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                   const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    k_batchnorm2d_backward_weight(dw, db, dout, in, mean, rstd, B, C, HW);
    return ctx->err;
}

int kc_embedding_forward(KcCtx *ctx, float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                         int64_t t, int64_t d)
{
    k_embedding_forward(out, tokens, wte, wpe, B, t, d);
    return ctx->err;
}

int kc_embedding_backward_weight(KcCtx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                 int64_t B, int64_t t, int64_t d)
{
    k_embedding_backward_weight(dwte, dwpe, dout, tokens, B, t, d);
    return ctx->err;
}

/* ---- losses, optimizer --------------------------------------------------------------- */

size_t kc_loss_workspace(int64_t n)
{
    (void)n;
    return 0;
}

int kc_cross_entropy(KcCtx *ctx, float *dlogits, const float *logits, const int32_t *targets, int64_t n, int64_t c,
                     double scale, double *d_res)
{
    int64_t count = 0, correct = 0;
    d_res[0] = k_cross_entropy(dlogits, logits, targets, n, c, scale, &count, &correct);
    d_res[1] = (double)count, d_res[2] = (double)correct;
    return ctx->err;
}

int kc_mse(KcCtx *ctx, float *dout, const float *out, const float *target, int64_t n, double scale, double *d_res)
{
    d_res[0] = k_mse(dout, out, target, n, scale);
    return ctx->err;
}

int kc_optim_state_per_param(const KcOptim *o)
{
    return o->kind == KC_SGD ? (o->momentum != 0 ? 1 : 0) : 2;
}

int kc_optim_step(KcCtx *ctx, const KcOptim *o, float *p, const float *g, float *state, int64_t n, int64_t t,
                  double lr)
{
    PlanConfig c;
    memset(&c, 0, sizeof c);
    c.optimizer = o->kind == KC_SGD ? PLAN_OPT_SGD : o->kind == KC_ADAM ? PLAN_OPT_ADAM : PLAN_OPT_ADAMW;
    c.momentum = o->momentum, c.weight_decay = o->weight_decay, c.nesterov = o->nesterov;
    c.beta1 = o->beta1, c.beta2 = o->beta2, c.eps = o->eps, c.lr = lr;
    rt_optim_step(&c, p, g, state, n, t, lr);
    return ctx->err;
}

size_t kc_sumsq_workspace(int64_t n)
{
    (void)n;
    return 0;
}

int kc_sumsq(KcCtx *ctx, const float *g, int64_t n, double *d_res)
{
    d_res[0] = rt_sumsq(g, n);
    return ctx->err;
}

int kc_scale(KcCtx *ctx, float *g, int64_t n, float factor)
{
    rt_scale(g, n, factor);
    return ctx->err;
}

/* ---- transformer_block ----------------------------------------------------------------- */

size_t kc_block_workspace(const KcCtx *ctx, const KBlock *g, int64_t B)
{
    (void)ctx, (void)g, (void)B;
    return 0;
}

/* The CPU runtime runs a block's products from packed weights where
 * k_block_pack_floats says so (runtime/rt_setup.c); the stand-in packs the
 * same copies for the call, so that its bits stay the CPU's. */
static float *block_packed(KBlock *h, const float *const p[12], int64_t B, int which)
{
    int64_t n = k_packed_supported() ? k_block_pack_floats(h, B) : 0;
    if (n == 0)
        return NULL;
    float *pk = malloc((size_t)n * sizeof(float));
    if (!pk)
        abort();
    k_block_pack(pk, h, p, which);
    h->pack = pk;
    return pk;
}

int kc_block_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[12],
                     int64_t B, const KBlock *g, const KBlockKeys *keys, float *scratch)
{
    KBlock h = *g;
    float *pk = block_packed(&h, p, B, 0);
    k_block_forward(out, saved, in, mask, p, B, &h, keys, scratch);
    free(pk);
    return ctx->err;
}

int kc_block_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[12], int64_t B,
                            const KBlock *g, const KBlockKeys *keys, float *scratch)
{
    KBlock h = *g;
    float *pk = block_packed(&h, p, B, 1);
    k_block_backward_input(din, dsaved, dout, in, saved, mask, p, B, &h, keys, scratch);
    free(pk);
    return ctx->err;
}

int kc_block_backward_weight(KcCtx *ctx, float *const grads[12], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KBlock *g, float *scratch)
{
    k_block_backward_weight(grads, dsaved, in, saved, B, g, scratch);
    return ctx->err;
}

/* ---- rmsnorm, llama_block ----------------------------------------------------------------- */

size_t kc_rmsnorm_workspace(int64_t n, int64_t d)
{
    (void)n, (void)d;
    return 0;
}

int kc_rmsnorm_forward(KcCtx *ctx, float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d,
                       float eps)
{
    k_rmsnorm_forward(out, rstd, in, w, n, d, eps);
    return ctx->err;
}

int kc_rmsnorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                              const float *rstd, int64_t n, int64_t d)
{
    k_rmsnorm_backward_input(din, dout, in, w, rstd, n, d);
    return ctx->err;
}

int kc_rmsnorm_backward_weight(KcCtx *ctx, float *dw, const float *dout, const float *in, const float *rstd, int64_t n,
                               int64_t d)
{
    k_rmsnorm_backward_weight(dw, dout, in, rstd, n, d);
    return ctx->err;
}

size_t kc_llama_workspace(const KcCtx *ctx, const KLlama *g, int64_t B)
{
    (void)ctx, (void)g, (void)B;
    return 0;
}

int kc_llama_forward(KcCtx *ctx, float *out, float *saved, const float *in, const float *mask, const float *const p[9],
                     int64_t B, const KLlama *g, float *scratch)
{
    k_llama_forward(out, saved, in, mask, p, B, g, scratch);
    return ctx->err;
}

int kc_llama_backward_input(KcCtx *ctx, float *din, float *dsaved, const float *dout, const float *in,
                            const float *saved, const float *mask, const float *const p[9], int64_t B,
                            const KLlama *g, float *scratch)
{
    k_llama_backward_input(din, dsaved, dout, in, saved, mask, p, B, g, scratch);
    return ctx->err;
}

int kc_llama_backward_weight(KcCtx *ctx, float *const grads[9], const float *dsaved, const float *in,
                             const float *saved, int64_t B, const KLlama *g, float *scratch)
{
    k_llama_backward_weight(grads, dsaved, in, saved, B, g, scratch);
    return ctx->err;
}
