/* runtime/rt_cuda.c: the CUDA backend of the interpreter (pipert --device
 * cuda), rt_dev.h's table over the kc_ kernels of kernels/k_cuda.h, and the
 * staged transport: MPI with device buffers staged through pinned host
 * memory (works for any placement, several ranks on one GPU included). Where
 * NCCL was found (PIPE_HAVE_NCCL), xport_nccl.c carries the groups whose
 * ranks each have their own GPU and hands the rest to the staged transport.
 *
 * Built only when pipe_kernels_cuda is (PIPE_HAVE_CUDA). NOTHING HERE HAS
 * RUN ON A GPU YET (docs/gpu.md); scripts/gpu-check.sh is the first run.
 *
 * Invariants a reader can check without a GPU:
 *   - One KcCtx per rank, one stream (kc.stream). Every kernel, memset and
 *     copy of this file is queued on it, in the interpreter's order, so
 *     stream order is program order and no event is needed between them.
 *   - Device memory is allocated in rt_setup (alloc, params, setup), never
 *     in the step loop; kc_reserve sizes the kernels' workspace once from
 *     the rank's layers (kc_*_workspace, the conv plans' ws_bytes).
 *   - A host buffer is reused only when the copy that reads or fills it has
 *     finished: the load staging buffer waits for its event (load_begin); a
 *     send's staging buffer is filled after a stream synchronise and is not
 *     written again before MPI completes the send (the interpreter waits for
 *     a send before it rewrites that slot); a receive's staging buffer is
 *     copied in at its wait, with an event that the next receive into it
 *     waits for.
 *   - Every CUDA runtime call and every kc_ call is checked; a failure ends
 *     the job through rt_fail ("[rank N] ... at instruction pc (op)") with
 *     the CUDA or kc message and, for a layer, its index and kind. A fault
 *     inside a running kernel shows at the next synchronising call
 *     (fetch, a staged send, sync), named there.
 *   - Results that come back to the host: the losses (3 doubles per
 *     micro-batch, fetched once per pass) and the per-tensor sums of squares
 *     (once per step), summed on the host in the CPU's order. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "k_cuda.h"
#include "rt.h"
#include "rt_dev.h"
#include "rt_optim.h"
#ifdef PIPE_HAVE_NCCL
#include "xport_nccl.h"
#endif

/* The most workspace one conv2d algorithm may ask for (cuDNN picks the
 * first deterministic algorithm within it). */
#define RT_CONV_WS_LIMIT ((size_t)512 << 20)

typedef struct RtGpu {
    KcCtx kc;
    int device, ngpu, local_rank;
    int sharing;                   /* ranks of the world on this GPU (this one included) */
    unsigned char uuid[16];        /* the device's UUID (the NCCL transport's groups compare them) */
    char name[256];                /* the device's name, for --verbose */
    KcOptim opt;
    /* the losses of one pass: d_loss[3 i, 3 i + 3) is the i-th queued
     * micro-batch's (sum, count, correct); fetched into h_loss */
    double *d_loss, *h_loss;
    int nloss, cap_loss;
    /* per parameter tensor: its gradient's sum of squares */
    double *d_ss, *h_ss;
    /* LoadMicroBatch's pinned staging buffer, laid out as a slot's first
     * stage_bytes; stage_ev is recorded after its copy into a slot */
    unsigned char *stage;
    size_t stage_bytes;
    cudaEvent_t stage_ev;
    int stage_pending;
} RtGpu;

static RtGpu *gpu_of(RtCtx *rt)
{
    return rt->gpud;
}

/* ---- checks ------------------------------------------------------------------ */

static void kc_failed(RtCtx *rt, const char *file, int line, const char *call, const PlanLayer *L)
    __attribute__((noreturn));
static void kc_failed(RtCtx *rt, const char *file, int line, const char *call, const PlanLayer *L)
{
    const KcCtx *k = &gpu_of(rt)->kc;
    if (L)
        rt_fail(rt, file, line, "%s failed, layer %d (%s): %s", call, L->index, plan_layer_names[L->kind], k->msg);
    rt_fail(rt, file, line, "%s failed: %s", call, k->msg);
}

/* a kc_ call, for layer L (NULL: none) */
#define KC(rt, L, call)                                               \
    do {                                                              \
        if ((call) != KC_OK)                                          \
            kc_failed((rt), __FILE__, __LINE__, #call, (L));          \
    } while (0)
/* a CUDA runtime call */
#define CU(rt, call)                                                                                   \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess)                                                                         \
            rt_fail((rt), __FILE__, __LINE__, "%s failed: %s (%s)", #call, cudaGetErrorName(e_),       \
                    cudaGetErrorString(e_));                                                           \
    } while (0)

static cudaStream_t stream_of(RtCtx *rt)
{
    return gpu_of(rt)->kc.stream;
}

/* ---- memory -------------------------------------------------------------------- */

static void *g_alloc(RtCtx *rt, size_t bytes, const char *what)
{
    void *p = NULL;
    size_t n = bytes ? bytes : 1;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess)
        rt_fail(rt, __FILE__, __LINE__, "cudaMalloc of %zu bytes for %s on GPU %d failed: %s", n, what,
                gpu_of(rt)->device, cudaGetErrorString(e));
    CU(rt, cudaMemsetAsync(p, 0, n, stream_of(rt)));
    return p;
}

/* cudaFree waits for the device, so nothing queued still uses p */
static void g_free(RtCtx *rt, void *p)
{
    if (p)
        CU(rt, cudaFree(p));
}

static void g_copy(RtCtx *rt, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        CU(rt, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_of(rt)));
}

static void g_sync(RtCtx *rt)
{
    KC(rt, NULL, kc_sync(&gpu_of(rt)->kc));
}

/* Host arenas <-> device arenas (parameters and optimizer state), waited
 * for: the host side is read or written right after. */
static void copy_arenas(RtCtx *rt, float *params, const float *params_from, float *state, const float *state_from,
                        enum cudaMemcpyKind kind)
{
    int per = rt_optim_state_per_param(rt->c);
    size_t n = (size_t)rt->nparams_total;
    cudaStream_t s = stream_of(rt);
    CU(rt, cudaMemcpyAsync(params, params_from, n * sizeof(float), kind, s));
    if (per > 0)
        CU(rt, cudaMemcpyAsync(state, state_from, (size_t)per * n * sizeof(float), kind, s));
    g_sync(rt);
}

/* The buffer arena (batchnorm2d's running statistics), waited for. */
static void g_buffers(RtCtx *rt, int to_device)
{
    if (rt->buf_bytes == 0)
        return;
    if (to_device)
        CU(rt, cudaMemcpyAsync(rt->dbufs, rt->bufs, (size_t)rt->buf_bytes, cudaMemcpyHostToDevice, stream_of(rt)));
    else
        CU(rt, cudaMemcpyAsync(rt->bufs, rt->dbufs, (size_t)rt->buf_bytes, cudaMemcpyDeviceToHost, stream_of(rt)));
    g_sync(rt);
}

static void g_to_host(RtCtx *rt)
{
    copy_arenas(rt, rt->params, rt->dparams, rt->state, rt->dstate, cudaMemcpyDeviceToHost);
    g_buffers(rt, 0);
}

static void g_to_device(RtCtx *rt)
{
    copy_arenas(rt, rt->dparams, rt->params, rt->dstate, rt->state, cudaMemcpyHostToDevice);
    g_buffers(rt, 1);
}

/* The device arenas, laid out as the host ones (the same offsets), the
 * parameters copied from the host, where rt_setup initialised them. */
static void g_params(RtCtx *rt)
{
    int per = rt_optim_state_per_param(rt->c);
    size_t n = (size_t)rt->nparams_total;
    rt->dparams = rt_dev_alloc(rt, RT_MEM_PARAMETERS, n * sizeof(float), "parameters");
    rt->dgrads = rt_dev_alloc(rt, RT_MEM_GRADIENTS, n * sizeof(float), "gradients");
    rt->dstate = rt_dev_alloc(rt, RT_MEM_OPTIMIZER_STATE, (size_t)per * n * sizeof(float), "optimizer state");
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        q->dp = rt->dparams + (q->p - rt->params);
        q->dg = rt->dgrads + (q->g - rt->grads);
        q->dstate = rt->dstate + (q->state - rt->state);
    }
    /* the buffers: counted as parameters, as on the CPU */
    if (rt->buf_bytes > 0) {
        rt->dbufs = rt_dev_alloc(rt, RT_MEM_PARAMETERS, (size_t)rt->buf_bytes, "buffers");
        for (int i = 0; i < rt->nbuf; i++)
            rt->buf[i].dp = rt->dbufs + ((unsigned char *)rt->buf[i].p - rt->bufs);
    }
    g_to_device(rt);
}

/* ---- layers: the CUDA backend's table (rt.h's RtLayerOps; each row as
 * rt_cpu.c's, kc_ for k_), built from plan/layers.def ------------------------------ */

#define IO RtCtx *rt, const RtLayerRt *lr, const RtLayerIO *io

static KcCtx *kc_of(RtCtx *rt)
{
    return &gpu_of(rt)->kc;
}

static int64_t n_in(const RtCtx *rt, const RtLayerRt *lr)
{
    return rt->B * lr->in_elems;
}

static int64_t features(const PlanLayer *L)
{
    return L->in.dim[L->in.ndim - 1];
}

static void no_weights(IO)
{
    (void)rt, (void)lr, (void)io;
}

/* set-up: the workspace bytes of the layers whose kernels use one */
static size_t ready(RtCtx *rt, RtLayerRt *lr)
{
    (void)rt, (void)lr;
    return 0;
}

static size_t linear_prepare(RtCtx *rt, RtLayerRt *lr)
{
    int64_t fin = features(lr->L);
    return kc_linear_workspace(kc_of(rt), n_in(rt, lr) / fin, fin, lr->L->nout);
}

/* the convolution's cuDNN algorithms, chosen once */
static size_t conv2d_prepare(RtCtx *rt, RtLayerRt *lr)
{
    KConv g = rt_conv_geom(rt, lr->L);
    KcConvPlan *plan = rt_alloc(rt, sizeof *plan, "conv plan");
    lr->gpu_plan = plan;
    KC(rt, lr->L, kc_conv_plan(kc_of(rt), plan, &g, rt->B, RT_CONV_WS_LIMIT));
    return plan->ws_bytes;
}

static size_t layernorm_prepare(RtCtx *rt, RtLayerRt *lr)
{
    int64_t d = features(lr->L);
    return kc_layernorm_workspace(n_in(rt, lr) / d, d);
}

static size_t transformer_block_prepare(RtCtx *rt, RtLayerRt *lr)
{
    KBlock g = rt_block_geom(rt, lr->L);
    return kc_block_workspace(kc_of(rt), &g, rt->B);
}

static size_t rmsnorm_prepare(RtCtx *rt, RtLayerRt *lr)
{
    int64_t d = features(lr->L);
    return kc_rmsnorm_workspace(n_in(rt, lr) / d, d);
}

static size_t llama_block_prepare(RtCtx *rt, RtLayerRt *lr)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    return kc_llama_workspace(kc_of(rt), &g, rt->B);
}

static void linear_forward(IO)
{
    int64_t fin = features(lr->L);
    KC(rt, lr->L, kc_linear_forward(kc_of(rt), io->out, io->in, lr->w, lr->b, n_in(rt, lr) / fin, fin, lr->L->nout));
}

static void linear_backward_input(IO)
{
    int64_t fin = features(lr->L);
    KC(rt, lr->L, kc_linear_backward_input(kc_of(rt), io->din, io->dout, lr->w, n_in(rt, lr) / fin, fin, lr->L->nout));
}

static void linear_backward_weight(IO)
{
    int64_t fin = features(lr->L);
    KC(rt, lr->L,
       kc_linear_backward_weight(kc_of(rt), lr->gw, lr->gb, io->dout, io->in, n_in(rt, lr) / fin, fin, lr->L->nout));
}

static void conv2d_forward(IO)
{
    KC(rt, lr->L, kc_conv2d_forward(kc_of(rt), (const KcConvPlan *)lr->gpu_plan, io->out, io->in, lr->w, lr->b));
}

static void conv2d_backward_input(IO)
{
    KC(rt, lr->L, kc_conv2d_backward_input(kc_of(rt), (const KcConvPlan *)lr->gpu_plan, io->din, io->dout, lr->w));
}

static void conv2d_backward_weight(IO)
{
    KC(rt, lr->L,
       kc_conv2d_backward_weight(kc_of(rt), (const KcConvPlan *)lr->gpu_plan, lr->gw, lr->gb, io->dout, io->in));
}

static void embedding_forward(IO)
{
    const PlanLayer *L = lr->L;
    /* token ids were checked against the vocabulary when the data was opened */
    KC(rt, L, kc_embedding_forward(kc_of(rt), io->out, (const int32_t *)io->in, lr->w, lr->b, rt->B, L->in.dim[0],
                                   L->dim));
}

static void embedding_backward_input(IO)
{
    RT_CHECK(rt, 0, "layer %d (embedding): token ids have no gradient", lr->L->index);
    (void)io;
}

static void embedding_backward_weight(IO)
{
    const PlanLayer *L = lr->L;
    KC(rt, L, kc_embedding_backward_weight(kc_of(rt), lr->gw, lr->gb, io->dout, (const int32_t *)io->in, rt->B,
                                           L->in.dim[0], L->dim));
}

static void layernorm_forward(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_layernorm_forward(kc_of(rt), io->out, io->save, io->save + rows, io->in, lr->w, lr->b, rows, d,
                                       (float)lr->L->eps));
}

static void layernorm_backward_input(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_layernorm_backward_input(kc_of(rt), io->din, io->dout, io->in, lr->w, io->save, io->save + rows,
                                              rows, d));
}

static void layernorm_backward_weight(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_layernorm_backward_weight(kc_of(rt), lr->gw, lr->gb, io->dout, io->in, io->save,
                                               io->save + rows, rows, d));
}

/* batchnorm2d, as rt_cpu.c's: mean (C) then rstd (C) in the saved state,
 * its buffers at lr->bufs (num_batches_tracked, running_mean, running_var) */
#define BN_NBT(lr) ((int64_t *)(lr)->bufs)
#define BN_MEAN(lr) ((float *)((unsigned char *)(lr)->bufs + 8))
#define BN_VAR(lr) (BN_MEAN(lr) + (lr)->L->in.dim[0])

static void batchnorm2d_forward(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    if (rt->evaluating) {
        KC(rt, L, kc_batchnorm2d_eval(kc_of(rt), io->out, io->in, lr->w, lr->b, BN_MEAN(lr), BN_VAR(lr), rt->B, C, HW,
                                      (float)L->eps));
        return;
    }
    RT_CHECK(rt, rt->B * HW > 1, "layer %d (batchnorm2d): a micro-batch of %lld values per channel; training needs more "
             "than 1 (as nn.BatchNorm2d)", L->index, (long long)(rt->B * HW));
    int update = !io->recompute;
    KC(rt, L, kc_batchnorm2d_forward(kc_of(rt), io->out, io->save, io->save + C, io->in, lr->w, lr->b, rt->B, C, HW,
                                     (float)L->eps, update ? BN_MEAN(lr) : NULL, update ? BN_VAR(lr) : NULL,
                                     update ? BN_NBT(lr) : NULL, L->momentum));
}

static void batchnorm2d_backward_input(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    KC(rt, L, kc_batchnorm2d_backward_input(kc_of(rt), io->din, io->dout, io->in, lr->w, io->save, io->save + C, rt->B,
                                            C, HW));
}

static void batchnorm2d_backward_weight(IO)
{
    const PlanLayer *L = lr->L;
    int64_t C = L->in.dim[0], HW = L->in.dim[1] * L->in.dim[2];
    KC(rt, L, kc_batchnorm2d_backward_weight(kc_of(rt), lr->gw, lr->gb, io->dout, io->in, io->save, io->save + C,
                                             rt->B, C, HW));
}

static void maxpool2d_forward(IO)
{
    KPool g = rt_pool_geom(lr->L);
    KC(rt, lr->L, kc_maxpool2d_forward(kc_of(rt), io->out, (int32_t *)io->save, io->in, rt->B, &g));
}

static void maxpool2d_backward_input(IO)
{
    KPool g = rt_pool_geom(lr->L);
    KC(rt, lr->L, kc_maxpool2d_backward(kc_of(rt), io->din, io->dout, (const int32_t *)io->save, rt->B, &g));
}

static void avgpool2d_forward(IO)
{
    KPool g = rt_pool_geom(lr->L);
    KC(rt, lr->L, kc_avgpool2d_forward(kc_of(rt), io->out, io->in, rt->B, &g));
}

static void avgpool2d_backward_input(IO)
{
    KPool g = rt_pool_geom(lr->L);
    KC(rt, lr->L, kc_avgpool2d_backward(kc_of(rt), io->din, io->dout, rt->B, &g));
}

static void adaptive_avgpool2d_forward(IO)
{
    const PlanLayer *L = lr->L;
    KC(rt, L, kc_adaptive_avgpool2d_forward(kc_of(rt), io->out, io->in, rt->B, L->in.dim[0], L->in.dim[1],
                                            L->in.dim[2], L->oh, L->ow));
}

static void adaptive_avgpool2d_backward_input(IO)
{
    const PlanLayer *L = lr->L;
    KC(rt, L, kc_adaptive_avgpool2d_backward(kc_of(rt), io->din, io->dout, rt->B, L->in.dim[0], L->in.dim[1],
                                             L->in.dim[2], L->oh, L->ow));
}

#define POINTWISE(name, x)                                                                     \
    static void name##_forward(IO)                                                             \
    {                                                                                          \
        KC(rt, lr->L, kc_##name##_forward(kc_of(rt), io->out, io->in, n_in(rt, lr)));          \
    }                                                                                          \
    static void name##_backward_input(IO)                                                      \
    {                                                                                          \
        KC(rt, lr->L, kc_##name##_backward(kc_of(rt), io->din, io->dout, io->x, n_in(rt, lr))); \
    }
POINTWISE(relu, in)
POINTWISE(gelu, in)
POINTWISE(tanh, out)
POINTWISE(sigmoid, out)
#undef POINTWISE

static void flatten_forward(IO)
{
    g_copy(rt, io->out, io->in, (size_t)n_in(rt, lr) * sizeof(float));
}

static void flatten_backward_input(IO)
{
    g_copy(rt, io->din, io->dout, (size_t)n_in(rt, lr) * sizeof(float));
}

/* reshape: flatten's copies; transpose: kc_transpose, its backward the
 * transpose back */
#define reshape_forward flatten_forward
#define reshape_backward_input flatten_backward_input

static void transpose_forward(IO)
{
    int64_t g[5];
    if (rt_transpose_geom(lr->L, rt->B, g))
        KC(rt, lr->L, kc_transpose(kc_of(rt), io->out, io->in, g[0], g[1], g[2], g[3], g[4]));
    else
        flatten_forward(rt, lr, io);
}

static void transpose_backward_input(IO)
{
    int64_t g[5];
    if (rt_transpose_geom(lr->L, rt->B, g))
        KC(rt, lr->L, kc_transpose(kc_of(rt), io->din, io->dout, g[0], g[3], g[2], g[1], g[4]));
    else
        flatten_backward_input(rt, lr, io);
}

/* the mask of micro-batch mb in the scratch (sized for it by plan_memory.c),
 * drawn as the CPU draws it */
static const uint8_t *dropout_mask(RtCtx *rt, const RtLayerRt *lr, int64_t mb)
{
    const PlanLayer *L = lr->L;
    uint8_t *mask = (uint8_t *)rt->scratch;
    KC(rt, L, kc_dropout_mask(kc_of(rt), mask, lr->out_elems, rt->B, (float)L->p, rt->c->seed, (uint64_t)rt->step,
                              (uint64_t)rt_sample_base(rt, mb), plan_layer_key(L)));
    return mask;
}

static void dropout_forward(IO)
{
    if (rt->evaluating || lr->L->p == 0)
        flatten_forward(rt, lr, io);
    else
        KC(rt, lr->L, kc_dropout_forward(kc_of(rt), io->out, io->in, dropout_mask(rt, lr, io->mb), (float)lr->L->p,
                                         n_in(rt, lr)));
}

static void dropout_backward_input(IO)
{
    if (lr->L->p == 0)
        flatten_backward_input(rt, lr, io);
    else
        KC(rt, lr->L, kc_dropout_backward(kc_of(rt), io->din, io->dout, dropout_mask(rt, lr, io->mb),
                                          (float)lr->L->p, n_in(rt, lr)));
}

/* the block's inner gradients: the slot's kept area, or room behind the
 * kernel's scratch (as rt_cpu.c's) */
static float *block_dsaved(RtCtx *rt, const RtLayerIO *io, const KBlock *g)
{
    return io->dsaved ? io->dsaved : rt->scratch + k_block_scratch_floats(g, rt->B);
}

static void transformer_block_forward(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    KBlockKeys keys = rt_block_keys(rt, lr->L, io->mb);
    KC(rt, lr->L, kc_block_forward(kc_of(rt), io->out, io->save, io->in, io->mask, (const float *const *)lr->w2, rt->B,
                                   &g, &keys, rt->scratch));
}

static void transformer_block_backward_input(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    KBlockKeys keys = rt_block_keys(rt, lr->L, io->mb);
    KC(rt, lr->L, kc_block_backward_input(kc_of(rt), io->din, block_dsaved(rt, io, &g), io->dout, io->in, io->save,
                                          io->mask, (const float *const *)lr->w2, rt->B, &g, &keys, rt->scratch));
}

static void transformer_block_backward_weight(IO)
{
    KBlock g = rt_block_geom(rt, lr->L);
    KC(rt, lr->L, kc_block_backward_weight(kc_of(rt), (float *const *)lr->g2, block_dsaved(rt, io, &g), io->in,
                                           io->save, rt->B, &g, rt->scratch));
}

static void rmsnorm_forward(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_rmsnorm_forward(kc_of(rt), io->out, io->save, io->in, lr->w, rows, d, (float)lr->L->eps));
}

static void rmsnorm_backward_input(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_rmsnorm_backward_input(kc_of(rt), io->din, io->dout, io->in, lr->w, io->save, rows, d));
}

static void rmsnorm_backward_weight(IO)
{
    int64_t d = features(lr->L), rows = n_in(rt, lr) / d;
    KC(rt, lr->L, kc_rmsnorm_backward_weight(kc_of(rt), lr->gw, io->dout, io->in, io->save, rows, d));
}

/* llama_block's inner gradients: as the transformer block's */
static float *llama_dsaved(RtCtx *rt, const RtLayerIO *io, const KLlama *g)
{
    return io->dsaved ? io->dsaved : rt->scratch + k_llama_scratch_floats(g, rt->B);
}

static void llama_block_forward(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    KC(rt, lr->L, kc_llama_forward(kc_of(rt), io->out, io->save, io->in, io->mask, (const float *const *)lr->w2, rt->B,
                                   &g, rt->scratch));
}

static void llama_block_backward_input(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    KC(rt, lr->L, kc_llama_backward_input(kc_of(rt), io->din, llama_dsaved(rt, io, &g), io->dout, io->in, io->save,
                                          io->mask, (const float *const *)lr->w2, rt->B, &g, rt->scratch));
}

static void llama_block_backward_weight(IO)
{
    KLlama g = rt_llama_geom(rt, lr->L);
    KC(rt, lr->L, kc_llama_backward_weight(kc_of(rt), (float *const *)lr->g2, llama_dsaved(rt, io, &g), io->in,
                                           io->save, rt->B, &g, rt->scratch));
}

#undef IO

#define CUDA_LINEAR {linear_forward, linear_backward_input, linear_backward_weight, linear_prepare}
#define CUDA_CONV2D {conv2d_forward, conv2d_backward_input, conv2d_backward_weight, conv2d_prepare}
#define CUDA_MAXPOOL2D {maxpool2d_forward, maxpool2d_backward_input, no_weights, ready}
#define CUDA_AVGPOOL2D {avgpool2d_forward, avgpool2d_backward_input, no_weights, ready}
#define CUDA_ADAPTIVE_AVGPOOL2D {adaptive_avgpool2d_forward, adaptive_avgpool2d_backward_input, no_weights, ready}
#define CUDA_RELU {relu_forward, relu_backward_input, no_weights, ready}
#define CUDA_GELU {gelu_forward, gelu_backward_input, no_weights, ready}
#define CUDA_TANH {tanh_forward, tanh_backward_input, no_weights, ready}
#define CUDA_SIGMOID {sigmoid_forward, sigmoid_backward_input, no_weights, ready}
#define CUDA_FLATTEN {flatten_forward, flatten_backward_input, no_weights, ready}
#define CUDA_DROPOUT {dropout_forward, dropout_backward_input, no_weights, ready}
#define CUDA_LAYERNORM {layernorm_forward, layernorm_backward_input, layernorm_backward_weight, layernorm_prepare}
#define CUDA_EMBEDDING {embedding_forward, embedding_backward_input, embedding_backward_weight, ready}
#define CUDA_TRANSFORMER_BLOCK {transformer_block_forward, transformer_block_backward_input, transformer_block_backward_weight, transformer_block_prepare}
#define CUDA_RMSNORM {rmsnorm_forward, rmsnorm_backward_input, rmsnorm_backward_weight, rmsnorm_prepare}
#define CUDA_LLAMA_BLOCK {llama_block_forward, llama_block_backward_input, llama_block_backward_weight, llama_block_prepare}
#define CUDA_BATCHNORM2D {batchnorm2d_forward, batchnorm2d_backward_input, batchnorm2d_backward_weight, ready}
#define CUDA_RESHAPE {reshape_forward, reshape_backward_input, no_weights, ready}
#define CUDA_TRANSPOSE {transpose_forward, transpose_backward_input, no_weights, ready}
/* the CPU's row (rt_residual.c, in pipert): its sub-layers through this
 * table, its additions through g_add */
#define CUDA_RESIDUAL {rt_residual_forward, rt_residual_backward_input, rt_residual_backward_weight, rt_residual_prepare}

static const RtLayerOps cuda_layers[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) [PLAN_L_##id] = CUDA_##id,
#include "layers.def"
#undef PLAN_LAYER
};

/* ---- losses, norms, the update --------------------------------------------------- */

static void g_loss(RtCtx *rt, const RtLayerRt *last, float *dlogits, const float *logits, const void *targets)
{
    RtGpu *G = gpu_of(rt);
    RT_CHECK(rt, G->nloss < G->cap_loss, "more losses in one pass than the %d forwards of the last part the plan has",
             G->cap_loss);
    double *res = G->d_loss + 3 * (int64_t)G->nloss++;
    int64_t n = rt->B * last->out_elems;
    if (rt->m->loss == PLAN_LOSS_CROSS_ENTROPY) {
        int64_t cls = last->L->out.dim[last->L->out.ndim - 1];
        KC(rt, last->L, kc_cross_entropy(&G->kc, dlogits, logits, (const int32_t *)targets, n / cls, cls,
                                         rt->target_scale, res));
    } else {
        KC(rt, last->L, kc_mse(&G->kc, dlogits, logits, (const float *)targets, n, rt->target_scale, res));
    }
}

/* The pass's queued losses, added in the order they were queued: the
 * order in which the CPU adds them. */
static void g_fetch_losses(RtCtx *rt)
{
    RtGpu *G = gpu_of(rt);
    if (G->nloss == 0)
        return;
    KC(rt, NULL, kc_fetch(&G->kc, G->h_loss, G->d_loss, 3 * G->nloss));
    int xent = rt->m->loss == PLAN_LOSS_CROSS_ENTROPY;
    for (int i = 0; i < G->nloss; i++) {
        rt->loss_sum += G->h_loss[3 * i];
        if (xent) {
            rt->loss_count += (int64_t)G->h_loss[3 * i + 1];
            rt->correct += (int64_t)G->h_loss[3 * i + 2];
        }
    }
    G->nloss = 0;
}

static double g_grad_sumsq(RtCtx *rt)
{
    RtGpu *G = gpu_of(rt);
    for (int i = 0; i < rt->nparam; i++)
        if (rt->param[i].counts_in_norm)
            KC(rt, NULL, kc_sumsq(&G->kc, rt->param[i].dg, rt->param[i].n, G->d_ss + i));
    KC(rt, NULL, kc_fetch(&G->kc, G->h_ss, G->d_ss, rt->nparam));
    double ss = 0;
    for (int i = 0; i < rt->nparam; i++)
        if (rt->param[i].counts_in_norm)
            ss += G->h_ss[i];
    return ss;
}

static void g_update(RtCtx *rt, double factor, double lr)
{
    RtGpu *G = gpu_of(rt);
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        if (factor < 1)
            KC(rt, NULL, kc_scale(&G->kc, q->dg, q->n, (float)factor));
        KC(rt, NULL, kc_optim_step(&G->kc, &G->opt, q->dp, q->dg, q->dstate, q->n, rt->step + 1, lr));
    }
    CU(rt, cudaMemsetAsync(rt->dgrads, 0, (size_t)rt->nparams_total * sizeof(float), stream_of(rt)));
}

static void g_add(RtCtx *rt, float *y, const float *x, int64_t n)
{
    KC(rt, NULL, kc_add_into(&gpu_of(rt)->kc, y, x, n));
}

static void g_add_tied(RtCtx *rt, RtParam *own, RtParam *copy)
{
    KC(rt, NULL, kc_add_into(&gpu_of(rt)->kc, own->dg, copy->dg, own->n));
    g_copy(rt, copy->dg, own->dg, (size_t)own->n * sizeof(float));
}

/* ---- data ------------------------------------------------------------------------- */

static int64_t target_bytes(const RtCtx *rt)
{
    return rt->B * plan_tensor_elems(&rt->m->target[0].t) * 4;
}

/* The bytes of a slot that LoadMicroBatch writes: the input tuple (at
 * in_off = 0) and, on the last part, the targets. */
static int64_t load_bytes(const RtCtx *rt, const RtChunk *ch)
{
    int64_t n = ch->is_first ? ch->in_off + ch->in_bytes : 0;
    if (ch->is_last && ch->tgt_off + target_bytes(rt) > n)
        n = ch->tgt_off + target_bytes(rt);
    return n;
}

static unsigned char *g_load_begin(RtCtx *rt, RtChunk *ch)
{
    RtGpu *G = gpu_of(rt);
    RT_CHECK(rt, (size_t)load_bytes(rt, ch) <= G->stage_bytes, "the load staging buffer is too small");
    if (G->stage_pending) {
        /* the previous load's copy out of the buffer has finished */
        CU(rt, cudaEventSynchronize(G->stage_ev));
        G->stage_pending = 0;
    }
    return G->stage;
}

static void g_load_end(RtCtx *rt, RtChunk *ch, unsigned char *slot)
{
    RtGpu *G = gpu_of(rt);
    cudaStream_t s = stream_of(rt);
    if (ch->is_first && ch->in_bytes > 0)
        CU(rt, cudaMemcpyAsync(slot + ch->in_off, G->stage + ch->in_off, (size_t)ch->in_bytes, cudaMemcpyHostToDevice, s));
    if (ch->is_last && target_bytes(rt) > 0)
        CU(rt, cudaMemcpyAsync(slot + ch->tgt_off, G->stage + ch->tgt_off, (size_t)target_bytes(rt),
                               cudaMemcpyHostToDevice, s));
    CU(rt, cudaEventRecord(G->stage_ev, s));
    G->stage_pending = 1;
}

/* ---- the staged MPI transport ------------------------------------------------------------
 * The transport wherever the NCCL transport (xport_nccl.c) does not carry a
 * group: builds without NCCL, groups where two ranks share a GPU, and the
 * f64 sums. xport_mpi over each request's pinned host buffer (XportReq.host): a send
 * copies the device buffer out and synchronises first; a receive lands in
 * the host buffer and is copied in (queued on the stream, before any
 * kernel that reads it) when the interpreter waits for it. Waits are
 * xport_mpi's, so the watchdog is unchanged. Reductions of gradients go
 * through the host gradient arena at the same offset; double reductions
 * (votes, losses, norms) are host values already. */

static void st_isend(RtCtx *rt, const void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    RT_CHECK(rt, halves == 0, "the staged transport sends fp32 only (bf16 on the wire is the CPU backend's)");
    RT_CHECK(rt, req->host && bytes >= 0 && bytes <= req->cap,
             "a send of %lld bytes has no staging buffer that large (%lld)", (long long)bytes, (long long)req->cap);
    RT_CHECK(rt, req->mpi == MPI_REQUEST_NULL, "a send from a staging buffer whose previous send is pending");
    if (bytes > 0) {
        CU(rt, cudaMemcpyAsync(req->host, buf, (size_t)bytes, cudaMemcpyDeviceToHost, stream_of(rt)));
        CU(rt, cudaStreamSynchronize(stream_of(rt))); /* MPI reads req->host from now on */
    }
    xport_mpi.isend(rt, req->host, bytes, 0, peer, tag, req);
}

static void st_irecv(RtCtx *rt, void *buf, int64_t bytes, int64_t halves, int peer, int tag, XportReq *req)
{
    RT_CHECK(rt, halves == 0, "the staged transport receives fp32 only (bf16 on the wire is the CPU backend's)");
    RT_CHECK(rt, req->host && bytes >= 0 && bytes <= req->cap,
             "a receive of %lld bytes has no staging buffer that large (%lld)", (long long)bytes, (long long)req->cap);
    RT_CHECK(rt, req->dev == NULL && req->mpi == MPI_REQUEST_NULL, "a receive into a staging buffer still in use");
    /* the copy in of the previous receive into req->host has finished (an
     * event never recorded counts as finished) */
    CU(rt, cudaEventSynchronize((cudaEvent_t)req->ev));
    xport_mpi.irecv(rt, req->host, bytes, 0, peer, tag, req);
    req->dev = buf;
    req->bytes = bytes;
}

static void st_wait(RtCtx *rt, XportReq *req)
{
    xport_mpi.wait(rt, req);
    if (req->dev) {
        if (req->bytes > 0)
            CU(rt, cudaMemcpyAsync(req->dev, req->host, (size_t)req->bytes, cudaMemcpyHostToDevice, stream_of(rt)));
        CU(rt, cudaEventRecord((cudaEvent_t)req->ev, stream_of(rt)));
        req->dev = NULL;
    }
}

static void st_allreduce_f32(RtCtx *rt, float *buf, int64_t n, XportGroup g)
{
    uintptr_t at = (uintptr_t)buf, base = (uintptr_t)rt->dgrads;
    RT_CHECK(rt, rt->dgrads && at >= base && (at - base) % sizeof(float) == 0 &&
                     (int64_t)((at - base) / sizeof(float)) + n <= rt->nparams_total,
             "a device reduction outside the gradient arena");
    float *host = rt->grads + (at - base) / sizeof(float);
    cudaStream_t s = stream_of(rt);
    CU(rt, cudaMemcpyAsync(host, buf, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CU(rt, cudaStreamSynchronize(s));
    xport_mpi.allreduce_f32(rt, host, n, g);
    CU(rt, cudaMemcpyAsync(buf, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, s));
    CU(rt, cudaStreamSynchronize(s)); /* the host slice is free again */
}

static void st_allreduce_f64(RtCtx *rt, double *buf, int64_t n, XportGroup g)
{
    xport_mpi.allreduce_f64(rt, buf, n, g);
}

static const XportOps xport_mpi_staged = {"mpi-staged", st_isend, st_irecv, st_wait, st_allreduce_f32,
                                          st_allreduce_f64, NULL, NULL, xport_mpi_progress};

static void req_stage(RtCtx *rt, XportReq *req, int64_t cap)
{
    CU(rt, cudaHostAlloc(&req->host, (size_t)(cap > 0 ? cap : 1), cudaHostAllocDefault));
    cudaEvent_t ev;
    CU(rt, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    req->ev = ev;
    req->cap = cap;
    req->dev = NULL;
}

static void req_unstage(RtCtx *rt, XportReq *req)
{
    if (req->host)
        CU(rt, cudaFreeHost(req->host));
    if (req->ev)
        CU(rt, cudaEventDestroy((cudaEvent_t)req->ev));
    req->host = req->ev = NULL;
}

/* ---- setup -------------------------------------------------------------------------- */

static KcPrec prec_of(PlanPrecision p)
{
    return p == PLAN_PREC_BF16 ? KC_BF16 : p == PLAN_PREC_TF32 ? KC_TF32 : KC_FP32;
}

static size_t max_z(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Forwards of a model's last part in one pass of a program of this stage:
 * the losses a pass queues. */
static int last_forwards(const RtCtx *rt, const SchedPlan *pl)
{
    if (!pl->prog)
        return 0;
    const SchedProgram *pr = &pl->prog[rt->stage];
    int n = 0;
    for (int i = 0; i < pr->n; i++)
        if (pr->ins[i].op == SCHED_Forward && (int)pr->ins[i].chunk < rt->chunks &&
            rt->chunk[pr->ins[i].chunk].is_last)
            n++;
    return n;
}

/* The transfers this rank's programs (training and evaluation) make for
 * chunk ci, as RT_XF_ bits: only those requests get a pinned staging
 * buffer. A chunk with no peer on a side (the model's first or last part,
 * one stage, a hand-over within the rank) stages nothing on that side:
 * on one stage of GPT-2 small that is the logits and their gradient,
 * 2 x 823 MB. A request left without one fails with a message if used. */
enum { RT_XF_SEND_ACT = 1, RT_XF_RECV_ACT = 2, RT_XF_RECV_GRAD = 4, RT_XF_SEND_GRAD = 8 };
static unsigned transfers_of(const RtCtx *rt, int ci)
{
    const SchedPlan *plans[2] = {&rt->ir.sched.train, &rt->ir.sched.eval};
    unsigned f = 0;
    for (int k = 0; k < 2; k++) {
        if (!plans[k]->prog)
            continue;
        const SchedProgram *pr = &plans[k]->prog[rt->stage];
        for (int i = 0; i < pr->n; i++) {
            const SchedInstr *in = &pr->ins[i];
            unsigned bit = in->op == SCHED_SendActivation ? RT_XF_SEND_ACT
                           : in->op == SCHED_RecvActivation ? RT_XF_RECV_ACT
                           : in->op == SCHED_RecvGrad       ? RT_XF_RECV_GRAD
                           : in->op == SCHED_SendGrad       ? RT_XF_SEND_GRAD
                                                            : 0;
            if (bit && (int)in->chunk == ci)
                f |= bit;
        }
    }
    return f;
}

static void g_setup(RtCtx *rt)
{
    RtGpu *G = gpu_of(rt);
    KcCtx *k = &G->kc;
    int64_t B = rt->B;
    const PlanConfig *c = rt->c;
    kc_set_precision(k, prec_of(c->precision));
    G->opt.kind = c->optimizer == PLAN_OPT_SGD ? KC_SGD : c->optimizer == PLAN_OPT_ADAM ? KC_ADAM : KC_ADAMW;
    G->opt.momentum = c->momentum, G->opt.weight_decay = c->weight_decay;
    G->opt.beta1 = c->beta1, G->opt.beta2 = c->beta2, G->opt.eps = c->eps, G->opt.nesterov = c->nesterov;
    RT_CHECK(rt, kc_optim_state_per_param(&G->opt) == rt_optim_state_per_param(c),
             "the CUDA optimizer's state layout differs from the CPU's");
    /* the kernels' workspace: the most any one call of this rank needs */
    size_t ws = 0;
    for (int ci = 0; ci < rt->chunks; ci++) {
        RtChunk *ch = &rt->chunk[ci];
        int n = ch->last - ch->first + 1;
        for (int i = 0; i < n; i++) {
            RtLayerRt *lr = &ch->lay[i];
            ws = max_z(ws, rt->layers[lr->L->kind].prepare(rt, lr));
        }
        if (ch->is_last) {
            const RtLayerRt *last = &ch->lay[n - 1];
            int64_t e = B * last->out_elems;
            int64_t rows = rt->m->loss == PLAN_LOSS_CROSS_ENTROPY ? e / last->L->out.dim[last->L->out.ndim - 1] : e;
            ws = max_z(ws, kc_loss_workspace(rows));
        }
    }
    for (int i = 0; i < rt->nparam; i++)
        ws = max_z(ws, kc_sumsq_workspace(rt->param[i].n));
    KC(rt, NULL, kc_reserve(k, ws));
    /* results that come back to the host */
    int ef = last_forwards(rt, &rt->ir.sched.train), ee = last_forwards(rt, &rt->ir.sched.eval);
    G->cap_loss = ef > ee ? ef : ee;
    G->d_loss = g_alloc(rt, (size_t)(G->cap_loss ? G->cap_loss : 1) * 3 * sizeof(double), "losses");
    G->h_loss = rt_alloc(rt, (size_t)(G->cap_loss ? G->cap_loss : 1) * 3 * sizeof(double), "losses");
    G->d_ss = g_alloc(rt, (size_t)(rt->nparam ? rt->nparam : 1) * sizeof(double), "sums of squares");
    G->h_ss = rt_alloc(rt, (size_t)(rt->nparam ? rt->nparam : 1) * sizeof(double), "sums of squares");
    /* LoadMicroBatch's staging buffer */
    for (int ci = 0; ci < rt->chunks; ci++)
        G->stage_bytes = max_z(G->stage_bytes, (size_t)load_bytes(rt, &rt->chunk[ci]));
    CU(rt, cudaHostAlloc((void **)&G->stage, G->stage_bytes ? G->stage_bytes : 1, cudaHostAllocDefault));
    CU(rt, cudaEventCreateWithFlags(&G->stage_ev, cudaEventDisableTiming));
    /* the transport: NCCL for the groups it can carry (xport_nccl.h: one
     * GPU per rank, a plan it can order), the staged MPI transport for the
     * rest; with the transfers between stages staged, a staging buffer per
     * request, sized by what it moves */
    rt->xp = &xport_mpi_staged;
    int staged_p2p = 1;
#ifdef PIPE_HAVE_NCCL
    int nccl_p2p = 0;
    xp_nccl_open(rt, stream_of(rt), G->uuid, &xport_mpi_staged, &nccl_p2p);
    staged_p2p = !nccl_p2p;
#endif
    size_t pinned = G->stage_bytes;
    for (int ci = 0; staged_p2p && ci < rt->chunks; ci++) {
        RtChunk *ch = &rt->chunk[ci];
        int64_t dout = B * ch->lay[ch->last - ch->first].out_elems * 4;
        unsigned xf = transfers_of(rt, ci);
        for (int b = 0; b < ch->nbuf; b++) {
            if (xf & RT_XF_SEND_ACT)
                req_stage(rt, &ch->out_req[b], ch->outt_bytes), pinned += (size_t)ch->outt_bytes;
            if (xf & RT_XF_RECV_ACT)
                req_stage(rt, &ch->in_req[b], ch->in_bytes), pinned += (size_t)ch->in_bytes;
            if (xf & RT_XF_RECV_GRAD)
                req_stage(rt, &ch->dout_req[b], dout), pinned += (size_t)dout;
        }
        for (int k = 0; k < ch->gin_n && (xf & RT_XF_SEND_GRAD); k++)
            req_stage(rt, &ch->gin_req[k], ch->gin_elems * 4), pinned += (size_t)ch->gin_elems * 4;
    }
    g_sync(rt);
    if (rt->verbose) {
        size_t fr = 0, tot = 0;
        CU(rt, cudaMemGetInfo(&fr, &tot));
        char xpd[1400];
        snprintf(xpd, sizeof xpd,
                 "transport %s (device buffers copied through pinned host memory) for every boundary and reduction",
                 xport_mpi_staged.name);
#ifdef PIPE_HAVE_NCCL
        if (rt->xpd) {
            char d[1200];
            xp_nccl_describe(rt, d, sizeof d);
            snprintf(xpd, sizeof xpd, "%s; the rest %s (staged: device buffers copied through pinned host memory)", d,
                     xport_mpi_staged.name);
        }
#endif
        printf("[rank %d] device cuda:%d (%s; local rank %d of a node with %d GPU%s; %d rank%s on this GPU), "
               "precision %s, kernel workspace %.1f MiB, pinned host staging %.1f MiB, %.0f of %.0f MiB free; %s\n",
               rt->rank, G->device, G->name, G->local_rank, G->ngpu, G->ngpu == 1 ? "" : "s", G->sharing,
               G->sharing == 1 ? "" : "s", kc_prec_name(k->prec), ws / 1048576.0, pinned / 1048576.0,
               fr / 1048576.0, tot / 1048576.0, xpd);
        fflush(stdout);
    }
}

static void g_teardown(RtCtx *rt)
{
    RtGpu *G = gpu_of(rt);
    if (!G)
        return;
#ifdef PIPE_HAVE_NCCL
    xp_nccl_close(rt); /* before the requests' events and the stream go */
#endif
    for (int ci = 0; ci < rt->chunks; ci++) {
        RtChunk *ch = &rt->chunk[ci];
        for (int b = 0; b < ch->nbuf; b++) {
            req_unstage(rt, &ch->out_req[b]);
            req_unstage(rt, &ch->in_req[b]);
            req_unstage(rt, &ch->dout_req[b]);
        }
        for (int k = 0; k < ch->gin_n; k++)
            req_unstage(rt, &ch->gin_req[k]);
        for (int i = 0; i <= ch->last - ch->first; i++) {
            /* a residual block's conv2d layers hold plans of their own */
            RtLayerRt *lr = &ch->lay[i];
            int nsub = lr->sub ? lr->L->nbody + lr->L->nshort : 0;
            for (int j = -1; j < nsub; j++) {
                RtLayerRt *x = j < 0 ? lr : &lr->sub[j];
                if (x->gpu_plan) {
                    kc_conv_plan_free(x->gpu_plan);
                    free(x->gpu_plan);
                    x->gpu_plan = NULL;
                }
            }
        }
    }
    g_free(rt, rt->dparams), g_free(rt, rt->dgrads), g_free(rt, rt->dstate), g_free(rt, rt->dbufs);
    rt->dparams = rt->dgrads = rt->dstate = NULL;
    rt->dbufs = NULL;
    g_free(rt, G->d_loss), g_free(rt, G->d_ss);
    free(G->h_loss), free(G->h_ss);
    if (G->stage)
        CU(rt, cudaFreeHost(G->stage));
    if (G->stage_ev)
        CU(rt, cudaEventDestroy(G->stage_ev));
    kc_free(&G->kc);
    free(G);
    rt->gpud = NULL;
    rt->gpu = NULL; /* nothing of the device is left */
}

static const RtGpuOps rt_gpu_cuda = {
    .name = "cuda",
    .alloc = g_alloc,
    .free = g_free,
    .copy = g_copy,
    .params = g_params,
    .setup = g_setup,
    .teardown = g_teardown,
    .buffers = g_buffers,
    .layers = cuda_layers,
    .loss = g_loss,
    .fetch_losses = g_fetch_losses,
    .load_begin = g_load_begin,
    .load_end = g_load_end,
    .grad_sumsq = g_grad_sumsq,
    .update = g_update,
    .add = g_add,
    .add_tied = g_add_tied,
    .sync = g_sync,
    .to_host = g_to_host,
    .to_device = g_to_device,
};

/* This rank's place on its node: Open MPI's OMPI_COMM_WORLD_LOCAL_RANK, or
 * (another launcher, or a plain run) its rank among the ranks that share
 * memory with it. The split is collective: every rank makes it. */
static int local_rank(RtCtx *rt)
{
    MPI_Comm node;
    int r = 0;
    RT_MPI(rt, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rt->rank, MPI_INFO_NULL, &node));
    RT_MPI(rt, MPI_Comm_rank(node, &r));
    RT_MPI(rt, MPI_Comm_free(&node));
    const char *env = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0 && v >= 0 && v < INT_MAX)
            r = (int)v;
    }
    return r;
}

int rt_cuda_open(RtCtx *rt, char *err, size_t errsize)
{
    char mine[600] = "";
    unsigned char uuid[16] = {0};
    RtGpu *G = calloc(1, sizeof *G);
    int count = 0;
    int local = local_rank(rt);
    if (!G) {
        snprintf(mine, sizeof mine, "out of memory");
    } else {
        cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess)
            snprintf(mine, sizeof mine, "no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        else if (count <= 0)
            snprintf(mine, sizeof mine, "no CUDA device (cudaGetDeviceCount: 0 devices)");
    }
    if (!mine[0]) {
        G->ngpu = count, G->local_rank = local, G->device = local % count;
        struct cudaDeviceProp prop;
        cudaError_t e = cudaGetDeviceProperties(&prop, G->device);
        if (e != cudaSuccess)
            snprintf(mine, sizeof mine, "GPU %d: cudaGetDeviceProperties: %s", G->device, cudaGetErrorString(e));
        else
            snprintf(G->name, sizeof G->name, "%s", prop.name);
        if (!mine[0] && kc_init(&G->kc, G->device, (size_t)1 << 20) != KC_OK)
            snprintf(mine, sizeof mine, "GPU %d: %s", G->device, G->kc.msg);
        if (!mine[0]) {
            memcpy(uuid, prop.uuid.bytes, sizeof uuid);
            memcpy(G->uuid, uuid, sizeof uuid);
        }
    }
    /* every rank learns whether any failed, and the lowest such rank's reason */
    int bad = mine[0] ? rt->rank : INT_MAX, first = INT_MAX;
    RT_MPI(rt, MPI_Allreduce(&bad, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == INT_MAX) {
        /* which ranks share this GPU (device UUIDs, so any launcher or
         * CUDA_VISIBLE_DEVICES mapping is seen as it is): such ranks cannot
         * share an NCCL communicator, so xp_nccl_open compares the same
         * UUIDs (G->uuid) within each group and keeps any group with a
         * shared GPU on the staged MPI transport; --verbose says how crowded
         * each GPU is and which transport each group uses */
        unsigned char *all = rt_alloc(rt, (size_t)rt->world * sizeof uuid, "device ids");
        RT_MPI(rt, MPI_Allgather(uuid, (int)sizeof uuid, MPI_BYTE, all, (int)sizeof uuid, MPI_BYTE, MPI_COMM_WORLD));
        for (int r = 0; r < rt->world; r++)
            G->sharing += memcmp(all + (size_t)r * sizeof uuid, uuid, sizeof uuid) == 0;
        free(all);
        rt->gpud = G;
        rt->gpu = &rt_gpu_cuda;
        return 0;
    }
    RT_MPI(rt, MPI_Bcast(mine, (int)sizeof mine, MPI_CHAR, first, MPI_COMM_WORLD));
    if (first == 0)
        snprintf(err, errsize, "%s", mine);
    else
        snprintf(err, errsize, "%s (rank %d)", mine, first);
    if (G) {
        kc_free(&G->kc);
        free(G);
    }
    return -1;
}
