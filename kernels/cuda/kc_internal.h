/* kernels/cuda/kc_internal.h: what the files of kernels/cuda/ share and
 * nothing outside uses: the error macros, the workspace carver, grid sizes,
 * the fixed-order block reductions and the GEMM entry point.
 *
 * Error regime (k_cuda.h): a public function starts with KC_ENTER (a
 * context already in error does nothing) and checks every CUDA, cuBLAS and
 * cuDNN call with KC_CUDA / KC_BLAS / KC_DNN and every launch with
 * KC_LAUNCHED; the first failure is recorded by kc_fail and returned. */
#ifndef PIPE_KC_INTERNAL_H
#define PIPE_KC_INTERNAL_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "k_cuda.h"

typedef __nv_bfloat16 kc_bf16;

/* Records the first error of ctx ("file:line: what: why") and returns its
 * code; a context already in error keeps its first message. */
int kc_fail(KcCtx *ctx, int code, const char *file, int line, const char *what, const char *why);
int kc_fail_ws(KcCtx *ctx, const char *file, int line, const char *what, size_t need);

#define KC_ENTER(ctx)                                                                                                  \
    do {                                                                                                               \
        if ((ctx)->err)                                                                                                \
            return (ctx)->err;                                                                                         \
    } while (0)

#define KC_CUDA(ctx, call)                                                                                             \
    do {                                                                                                               \
        cudaError_t kc_e_ = (call);                                                                                    \
        if (kc_e_ != cudaSuccess)                                                                                      \
            return kc_fail((ctx), KC_ERR_CUDA, __FILE__, __LINE__, #call, cudaGetErrorString(kc_e_));                  \
    } while (0)

#define KC_BLAS(ctx, call)                                                                                             \
    do {                                                                                                               \
        cublasStatus_t kc_s_ = (call);                                                                                 \
        if (kc_s_ != CUBLAS_STATUS_SUCCESS)                                                                            \
            return kc_fail((ctx), KC_ERR_CUBLAS, __FILE__, __LINE__, #call, cublasGetStatusString(kc_s_));             \
    } while (0)

#define KC_DNN(ctx, call)                                                                                              \
    do {                                                                                                               \
        cudnnStatus_t kc_s_ = (call);                                                                                  \
        if (kc_s_ != CUDNN_STATUS_SUCCESS)                                                                             \
            return kc_fail((ctx), KC_ERR_CUDNN, __FILE__, __LINE__, #call, cudnnGetErrorString(kc_s_));                \
    } while (0)

/* After a launch: a bad configuration shows here; a fault while the kernel
 * runs shows at the next synchronisation (kc_sync, kc_fetch). */
#define KC_LAUNCHED(ctx, name)                                                                                         \
    do {                                                                                                               \
        cudaError_t kc_e_ = cudaGetLastError();                                                                        \
        if (kc_e_ != cudaSuccess)                                                                                      \
            return kc_fail((ctx), KC_ERR_CUDA, __FILE__, __LINE__, "launch of " #name, cudaGetErrorString(kc_e_));     \
    } while (0)

#define KC_ARG(ctx, cond, what)                                                                                        \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            return kc_fail((ctx), KC_ERR_ARG, __FILE__, __LINE__, what, "argument out of range (" #cond ")");          \
    } while (0)

#define KC_TRY(call)                                                                                                   \
    do {                                                                                                               \
        int kc_r_ = (call);                                                                                            \
        if (kc_r_)                                                                                                     \
            return kc_r_;                                                                                              \
    } while (0)

/* ---- workspace ------------------------------------------------------------------
 * A kernel lays out its workspace with kc_take calls in a fixed order; run
 * with base NULL the same calls only count bytes, which is what the
 * kc_*_workspace functions do, so sizing and use cannot disagree. */
typedef struct KcWs {
    char *base; /* NULL: only count */
    size_t used;
} KcWs;

static inline KcWs kc_ws_count(void)
{
    KcWs w = {NULL, 0};
    return w;
}

static inline KcWs kc_ws_of(const KcCtx *ctx)
{
    KcWs w = {(char *)ctx->ws, 0};
    return w;
}

/* n elements of size sz, 256-byte aligned */
static inline void *kc_take(KcWs *w, int64_t n, size_t sz)
{
    size_t bytes = ((size_t)(n > 0 ? n : 0) * sz + 255) & ~(size_t)255;
    void *p = w->base ? (void *)(w->base + w->used) : NULL;
    w->used += bytes;
    return p;
}

#define KC_WS_FITS(ctx, w, what)                                                                                       \
    do {                                                                                                               \
        if ((w).used > (ctx)->ws_bytes)                                                                                \
            return kc_fail_ws((ctx), __FILE__, __LINE__, what, (w).used);                                              \
    } while (0)

/* ---- launch geometry -------------------------------------------------------------- */
#define KC_THREADS 256 /* every 1-D kernel; the reductions assume it */

/* blocks for a grid-stride loop over n items: enough to fill the GPU, at
 * least 1 (a loop over 0 items then does nothing) */
static inline unsigned kc_grid(const KcCtx *ctx, int64_t n)
{
    int64_t b = (n + KC_THREADS - 1) / KC_THREADS, cap = (int64_t)(ctx->sms > 0 ? ctx->sms : 1) * 32;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

/* blocks for one block per row (loops over rows past the grid) */
static inline unsigned kc_grid_rows(int64_t rows)
{
    return (unsigned)(rows < 1 ? 1 : rows > (1 << 30) ? (1 << 30) : rows);
}

/* ---- fixed-order block reductions (blockDim.x == KC_THREADS) -------------------
 * A shared-memory tree: the same association every time, so the same bits
 * on every run. Every thread of the block must call them. */
#ifdef __CUDACC__
template <typename T> __device__ __forceinline__ T kc_block_sum(T v, T *sh)
{
    unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = KC_THREADS / 2; s > 0; s >>= 1) {
        if (t < s)
            sh[t] += sh[t + s];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}

/* max that ignores NaN the way the CPU's `x > m ? x : m` does */
__device__ __forceinline__ float kc_block_max(float v, float *sh)
{
    unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = KC_THREADS / 2; s > 0; s >>= 1) {
        if (t < s)
            sh[t] = sh[t + s] > sh[t] ? sh[t + s] : sh[t];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}
#endif

/* ---- dropout inside transformer_block (kc_block.cu, kc_attention.cu) ---------------
 * k_random.c's recipe, word for word: element e of sample s gets the
 * factor 0 when uniform01(word e % 4 of Philox(counter { e / 4,
 * sample0 + s, stream, step }, key seed)) < p, else keep = 1 / (1 - p)
 * (computed on the host as k_dropout_forward does), so a product
 * x * factor has the CPU's bits. Each element makes its own Philox call
 * (the four elements of one counter repeat it): no mask in memory, in the
 * forward or the backward. */
typedef struct KcDrop {
    float p, keep;
    uint32_t k0, k1;   /* the key: the seed's low and high words */
    uint32_t stream;   /* counter word 2: k_block_drop_stream(layer, site) */
    uint32_t step;     /* counter word 3 */
    uint64_t sample0;  /* counter word 1 is sample0 + s */
} KcDrop;

static inline KcDrop kc_drop_of(const KBlock *g, const KBlockKeys *keys, int site)
{
    KcDrop d;
    d.p = g->dropout;
    d.keep = 1.0f / (1.0f - g->dropout);
    d.k0 = (uint32_t)keys->seed, d.k1 = (uint32_t)(keys->seed >> 32);
    d.stream = k_block_drop_stream(keys->layer, site);
    d.step = (uint32_t)keys->step;
    d.sample0 = keys->sample0;
    return d;
}

#ifdef __CUDACC__
__device__ __forceinline__ uint32_t kc_philox_word(uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3, uint32_t k0,
                                                   uint32_t k1, int word)
{
    for (int r = 0; r < 10; r++) { /* Philox4x32-10 (k_philox) */
        if (r > 0)
            k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
        uint32_t hi0 = __umulhi(0xD2511F53u, x0), lo0 = 0xD2511F53u * x0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, x2), lo1 = 0xCD9E8D57u * x2;
        uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
        x0 = y0, x1 = y1, x2 = y2, x3 = y3;
    }
    return word == 0 ? x0 : word == 1 ? x1 : word == 2 ? x2 : x3;
}

/* 0 or d.keep for element e of sample s at d's site */
__device__ __forceinline__ float kc_drop_factor(const KcDrop &d, int64_t s, int64_t e)
{
    uint32_t w = kc_philox_word((uint32_t)(e / 4), (uint32_t)(d.sample0 + (uint64_t)s), d.stream, d.step, d.k0, d.k1,
                                (int)(e % 4));
    return (float)(w >> 8) * 0x1p-24f < d.p ? 0.0f : d.keep;
}
#endif

/* The attention core with drop1 on the probabilities (kc_attention.cu):
 * as kc_attention_forward / _backward, with O = drop1(P) V, att keeping P,
 * and the backward through the mask (kernels/cpu/k_block.c's
 * att_drop_backward). drop NULL: exactly kc_attention_*. The workspace
 * with dropout: */
size_t kc_attention_drop_workspace(const KcCtx *ctx, int64_t B, int64_t t, int64_t d, int64_t heads);
int kc_attention_forward_drop(KcCtx *ctx, float *out, float *att, const float *qkv, const float *mask, int64_t B,
                              int64_t t, int64_t d, int64_t heads, int causal, const KcDrop *drop);
int kc_attention_backward_drop(KcCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                               int64_t B, int64_t t, int64_t d, int64_t heads, const KcDrop *drop);

/* ---- shared helpers (kc_core.cu) ------------------------------------------------------ */
/* C (col-major, fp32) = alpha op(A) op(B) + beta C, batch times with element
 * strides sa, sb, sc (batch 1: one cublasGemmEx). A and B are fp32 in
 * KC_FP32 / KC_TF32 and bf16 in KC_BF16 (the caller converted them). */
int kc_gemm(KcCtx *ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha,
            const void *A, int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb, float beta, float *C,
            int64_t ldc, int64_t sc, int64_t batch);
/* fp32 -> bf16 on ctx's stream */
int kc_to_bf16(KcCtx *ctx, kc_bf16 *out, const float *in, int64_t n);
/* acc (cols) += column sums of m (rows, cols), in double over fixed groups
 * of KC_COL_ROWS rows; part holds kc_colsum_parts(rows, cols) doubles */
#define KC_COL_ROWS 256
static inline int64_t kc_colsum_parts(int64_t rows, int64_t cols)
{
    return (rows + KC_COL_ROWS - 1) / KC_COL_ROWS * cols;
}
int kc_colsum_add(KcCtx *ctx, float *acc, const float *m, int64_t rows, int64_t cols, double *part);
/* acc (cols) += sum over groups g of part[g * cols + j], in g order */
int kc_colsum_finish(KcCtx *ctx, float *acc, const double *part, int64_t groups, int64_t cols);
/* out (rows, cols) = v (cols) on every row */
int kc_broadcast_rows(KcCtx *ctx, float *out, const float *v, int64_t rows, int64_t cols);

#endif
