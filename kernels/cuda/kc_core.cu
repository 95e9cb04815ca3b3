/* kernels/cuda/kc_core.cu: the context (stream, cuBLAS and cuDNN handles,
 * workspace, errors), the one GEMM entry point and its precisions, fp32 <->
 * bf16 casts, column sums, and linear (k_dense.c's first section).
 *
 * Precision of matrix products (ctx->prec):
 *   KC_FP32  cublasGemmEx, fp32 operands, CUBLAS_COMPUTE_32F (no tensor cores)
 *   KC_TF32  fp32 operands, CUBLAS_COMPUTE_32F_FAST_TF32
 *   KC_BF16  operands rounded to bf16 (round to nearest even) by the caller
 *            into the workspace, CUBLAS_COMPUTE_32F: fp32 accumulation,
 *            fp32 out (C is always fp32, so beta = 1 accumulates in fp32)
 * cuBLAS runs on ctx->stream with its own fixed workspace (cublasSetWorkspace
 * after cublasSetStream, which resets it): no allocation in a step, and
 * the same bits from run to run on one GPU. */
#include "kc_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int kc_fail(KcCtx *ctx, int code, const char *file, int line, const char *what, const char *why)
{
    if (ctx->err)
        return ctx->err;
    ctx->err = code;
    snprintf(ctx->msg, sizeof ctx->msg, "%s:%d: %s: %s", base_name(file), line, what, why ? why : "failed");
    return code;
}

int kc_fail_ws(KcCtx *ctx, const char *file, int line, const char *what, size_t need)
{
    char why[160];
    snprintf(why, sizeof why, "needs %zu bytes of workspace, the context has %zu (size it with kc_*_workspace)", need,
             ctx->ws_bytes);
    return kc_fail(ctx, KC_ERR_WORKSPACE, file, line, what, why);
}

void kc_clear_error(KcCtx *ctx)
{
    ctx->err = KC_OK;
    ctx->msg[0] = '\0';
    (void)cudaGetLastError(); /* a launch error stays pending in the runtime until read */
}

/* ---- context -------------------------------------------------------------------- */

int kc_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

int kc_init(KcCtx *ctx, int device, size_t ws_bytes)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->device = device;
    ctx->prec = KC_FP32;
    KC_CUDA(ctx, cudaSetDevice(device));
    KC_CUDA(ctx, cudaDeviceGetAttribute(&ctx->sms, cudaDevAttrMultiProcessorCount, device));
    KC_CUDA(ctx, cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    KC_BLAS(ctx, cublasCreate(&ctx->blas));
    KC_BLAS(ctx, cublasSetStream(ctx->blas, ctx->stream));
    KC_CUDA(ctx, cudaMalloc(&ctx->blas_ws, KC_BLAS_WS_BYTES));
    KC_BLAS(ctx, cublasSetWorkspace(ctx->blas, ctx->blas_ws, KC_BLAS_WS_BYTES));
    /* tensor cores only where a compute type asks for them (KC_TF32 / KC_BF16) */
    KC_BLAS(ctx, cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
    KC_BLAS(ctx, cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_HOST));
    KC_DNN(ctx, cudnnCreate(&ctx->dnn));
    KC_DNN(ctx, cudnnSetStream(ctx->dnn, ctx->stream));
    if (ws_bytes) {
        KC_CUDA(ctx, cudaMalloc(&ctx->ws, ws_bytes));
        ctx->ws_bytes = ws_bytes;
    }
    return KC_OK;
}

int kc_reserve(KcCtx *ctx, size_t ws_bytes)
{
    KC_ENTER(ctx);
    if (ws_bytes <= ctx->ws_bytes)
        return KC_OK;
    KC_CUDA(ctx, cudaStreamSynchronize(ctx->stream));
    if (ctx->ws) {
        KC_CUDA(ctx, cudaFree(ctx->ws));
        ctx->ws = NULL;
        ctx->ws_bytes = 0;
    }
    KC_CUDA(ctx, cudaMalloc(&ctx->ws, ws_bytes));
    ctx->ws_bytes = ws_bytes;
    return KC_OK;
}

/* Frees in reverse order of creation; errors are ignored (nothing useful
 * can be done about them at this point). */
void kc_free(KcCtx *ctx)
{
    if (ctx->stream)
        (void)cudaStreamSynchronize(ctx->stream);
    if (ctx->ws)
        (void)cudaFree(ctx->ws);
    if (ctx->dnn)
        (void)cudnnDestroy(ctx->dnn);
    if (ctx->blas)
        (void)cublasDestroy(ctx->blas);
    if (ctx->blas_ws)
        (void)cudaFree(ctx->blas_ws);
    if (ctx->stream)
        (void)cudaStreamDestroy(ctx->stream);
    (void)cudaGetLastError();
    int dev = ctx->device;
    memset(ctx, 0, sizeof *ctx);
    ctx->device = dev;
}

void kc_set_precision(KcCtx *ctx, KcPrec prec)
{
    ctx->prec = prec;
}

const char *kc_prec_name(KcPrec prec)
{
    switch (prec) {
    case KC_FP32:
        return "fp32";
    case KC_TF32:
        return "tf32";
    case KC_BF16:
        return "bf16";
    }
    return "?";
}

int kc_sync(KcCtx *ctx)
{
    KC_ENTER(ctx);
    KC_CUDA(ctx, cudaStreamSynchronize(ctx->stream));
    KC_CUDA(ctx, cudaGetLastError());
    return KC_OK;
}

int kc_fetch(KcCtx *ctx, double *host, const double *d_res, int n)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "kc_fetch count");
    if (n > 0)
        KC_CUDA(ctx, cudaMemcpyAsync(host, d_res, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, ctx->stream));
    KC_CUDA(ctx, cudaStreamSynchronize(ctx->stream));
    return KC_OK;
}

/* ---- casts ------------------------------------------------------------------------- */

static __global__ void g_to_bf16(kc_bf16 *out, const float *in, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(in[i]);
}

static __global__ void g_from_bf16(float *out, const kc_bf16 *in, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(in[i]);
}

int kc_to_bf16(KcCtx *ctx, kc_bf16 *out, const float *in, int64_t n)
{
    KC_ENTER(ctx);
    g_to_bf16<<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(out, in, n);
    KC_LAUNCHED(ctx, g_to_bf16);
    return KC_OK;
}

int kc_f32_to_bf16(KcCtx *ctx, uint16_t *out, const float *in, int64_t n)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "kc_f32_to_bf16 size");
    return kc_to_bf16(ctx, (kc_bf16 *)out, in, n);
}

int kc_bf16_to_f32(KcCtx *ctx, float *out, const uint16_t *in, int64_t n)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "kc_bf16_to_f32 size");
    g_from_bf16<<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(out, (const kc_bf16 *)in, n);
    KC_LAUNCHED(ctx, g_from_bf16);
    return KC_OK;
}

/* ---- GEMM ---------------------------------------------------------------------------- */

static int fits_int(int64_t x)
{
    return x >= 0 && x <= INT_MAX;
}

int kc_gemm(KcCtx *ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha,
            const void *A, int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb, float beta, float *C,
            int64_t ldc, int64_t sc, int64_t batch)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, fits_int(m) && fits_int(n) && fits_int(k) && fits_int(batch), "GEMM sizes fit cuBLAS's int");
    KC_ARG(ctx, fits_int(lda) && fits_int(ldb) && fits_int(ldc) && lda > 0 && ldb > 0 && ldc > 0,
           "GEMM leading dimensions fit cuBLAS's int");
    if (m == 0 || n == 0 || batch == 0)
        return KC_OK;
    cudaDataType_t ab = ctx->prec == KC_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = ctx->prec == KC_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    if (batch == 1)
        KC_BLAS(ctx, cublasGemmEx(ctx->blas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, ab, (int)lda, B, ab, (int)ldb,
                                  &beta, C, CUDA_R_32F, (int)ldc, ct, CUBLAS_GEMM_DEFAULT));
    else
        KC_BLAS(ctx, cublasGemmStridedBatchedEx(ctx->blas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, ab, (int)lda,
                                                (long long)sa, B, ab, (int)ldb, (long long)sb, &beta, C, CUDA_R_32F,
                                                (int)ldc, (long long)sc, (int)batch, ct, CUBLAS_GEMM_DEFAULT));
    return KC_OK;
}

/* ---- column sums ------------------------------------------------------------------------
 * Stage 1: block (32, 8) over 32 columns and one group of KC_COL_ROWS rows;
 * thread (x, y) sums rows y, y + 8, ... of the group in float (32 terms),
 * the 8 threads of a column are added in double in y order, and the result
 * goes to part[group][column]. Stage 2 adds the groups in order, in double,
 * and adds that once into the float destination (as k_colsum_add does). */

static __global__ void g_colsum_part(double *part, const float *m, int64_t rows, int64_t cols)
{
    __shared__ double sh[8][32];
    int64_t j = blockIdx.x * (int64_t)32 + threadIdx.x;
    int64_t r0 = blockIdx.y * (int64_t)KC_COL_ROWS;
    int64_t r1 = r0 + KC_COL_ROWS < rows ? r0 + KC_COL_ROWS : rows;
    float s = 0.0f;
    if (j < cols)
        for (int64_t i = r0 + threadIdx.y; i < r1; i += 8)
            s += m[i * cols + j];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        double t = 0.0;
        for (int y = 0; y < 8; y++)
            t += sh[y][threadIdx.x];
        part[blockIdx.y * cols + j] = t;
    }
}

static __global__ void g_colsum_finish(float *acc, const double *part, int64_t groups, int64_t cols)
{
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)gridDim.x * blockDim.x) {
        double t = 0.0;
        for (int64_t g = 0; g < groups; g++)
            t += part[g * cols + j];
        acc[j] += (float)t;
    }
}

int kc_colsum_finish(KcCtx *ctx, float *acc, const double *part, int64_t groups, int64_t cols)
{
    KC_ENTER(ctx);
    g_colsum_finish<<<kc_grid(ctx, cols), KC_THREADS, 0, ctx->stream>>>(acc, part, groups, cols);
    KC_LAUNCHED(ctx, g_colsum_finish);
    return KC_OK;
}

int kc_colsum_add(KcCtx *ctx, float *acc, const float *m, int64_t rows, int64_t cols, double *part)
{
    KC_ENTER(ctx);
    int64_t groups = (rows + KC_COL_ROWS - 1) / KC_COL_ROWS;
    if (groups == 0 || cols == 0)
        return KC_OK;
    KC_ARG(ctx, groups <= 65535 && (cols + 31) / 32 <= INT_MAX, "column sum size (rows <= 16.7M)");
    dim3 grid((unsigned)((cols + 31) / 32), (unsigned)groups), block(32, 8);
    g_colsum_part<<<grid, block, 0, ctx->stream>>>(part, m, rows, cols);
    KC_LAUNCHED(ctx, g_colsum_part);
    return kc_colsum_finish(ctx, acc, part, groups, cols);
}

static __global__ void g_broadcast_rows(float *out, const float *v, int64_t rows, int64_t cols)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = v[i % cols];
}

int kc_broadcast_rows(KcCtx *ctx, float *out, const float *v, int64_t rows, int64_t cols)
{
    KC_ENTER(ctx);
    g_broadcast_rows<<<kc_grid(ctx, rows * cols), KC_THREADS, 0, ctx->stream>>>(out, v, rows, cols);
    KC_LAUNCHED(ctx, g_broadcast_rows);
    return KC_OK;
}

/* ---- linear -------------------------------------------------------------------------------
 * Row-major X (r, c) is column-major X^T (c, r) with leading dimension c,
 * so each product is written transposed for cuBLAS:
 *   forward   out^T (OUT, N) = W (OUT, IN) . in^T (IN, N)      opA = T
 *   input     din^T (IN, N)  = W^T (IN, OUT) . dout^T (OUT, N)
 *   weight    dW^T (IN, OUT) += in^T (IN, N) . dout (N, OUT)   opB = T
 * In KC_BF16 both operands are first rounded into the workspace. */

typedef struct LinWs {
    kc_bf16 *a, *b; /* bf16 operands (KC_BF16 only) */
    double *part;   /* column sums of dout (backward weight) */
} LinWs;

/* half: 0 forward, 1 input, 2 weight */
static LinWs lin_layout(KcWs *w, KcPrec prec, int half, int64_t n, int64_t in_f, int64_t out_f)
{
    LinWs l = {NULL, NULL, NULL};
    if (prec == KC_BF16) {
        if (half == 0)
            l.a = (kc_bf16 *)kc_take(w, out_f * in_f, 2), l.b = (kc_bf16 *)kc_take(w, n * in_f, 2);
        else if (half == 1)
            l.a = (kc_bf16 *)kc_take(w, out_f * in_f, 2), l.b = (kc_bf16 *)kc_take(w, n * out_f, 2);
        else
            l.a = (kc_bf16 *)kc_take(w, n * in_f, 2), l.b = (kc_bf16 *)kc_take(w, n * out_f, 2);
    }
    if (half == 2)
        l.part = (double *)kc_take(w, kc_colsum_parts(n, out_f), sizeof(double));
    return l;
}

size_t kc_linear_workspace(const KcCtx *ctx, int64_t n, int64_t in_f, int64_t out_f)
{
    size_t most = 0;
    for (int half = 0; half < 3; half++) {
        KcWs w = kc_ws_count();
        lin_layout(&w, ctx->prec, half, n, in_f, out_f);
        most = w.used > most ? w.used : most;
    }
    return most;
}

#define LIN_ARGS(ctx) KC_ARG(ctx, n >= 0 && in_f > 0 && out_f > 0, "linear sizes")

int kc_linear_forward(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, int64_t n,
                      int64_t in_f, int64_t out_f)
{
    KC_ENTER(ctx);
    LIN_ARGS(ctx);
    if (n == 0)
        return KC_OK;
    KcWs ws = kc_ws_of(ctx);
    LinWs l = lin_layout(&ws, ctx->prec, 0, n, in_f, out_f);
    KC_WS_FITS(ctx, ws, "kc_linear_forward");
    const void *A = w, *B = in;
    if (ctx->prec == KC_BF16) {
        KC_TRY(kc_to_bf16(ctx, l.a, w, out_f * in_f));
        KC_TRY(kc_to_bf16(ctx, l.b, in, n * in_f));
        A = l.a, B = l.b;
    }
    if (b)
        KC_TRY(kc_broadcast_rows(ctx, out, b, n, out_f));
    return kc_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, out_f, n, in_f, 1.0f, A, in_f, 0, B, in_f, 0, b ? 1.0f : 0.0f, out,
                   out_f, 0, 1);
}

int kc_linear_backward_input(KcCtx *ctx, float *din, const float *dout, const float *w, int64_t n, int64_t in_f,
                             int64_t out_f)
{
    KC_ENTER(ctx);
    LIN_ARGS(ctx);
    if (n == 0)
        return KC_OK;
    KcWs ws = kc_ws_of(ctx);
    LinWs l = lin_layout(&ws, ctx->prec, 1, n, in_f, out_f);
    KC_WS_FITS(ctx, ws, "kc_linear_backward_input");
    const void *A = w, *B = dout;
    if (ctx->prec == KC_BF16) {
        KC_TRY(kc_to_bf16(ctx, l.a, w, out_f * in_f));
        KC_TRY(kc_to_bf16(ctx, l.b, dout, n * out_f));
        A = l.a, B = l.b;
    }
    return kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, in_f, n, out_f, 1.0f, A, in_f, 0, B, out_f, 0, 0.0f, din, in_f, 0, 1);
}

int kc_linear_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in, int64_t n,
                              int64_t in_f, int64_t out_f)
{
    KC_ENTER(ctx);
    LIN_ARGS(ctx);
    if (n == 0)
        return KC_OK;
    KcWs ws = kc_ws_of(ctx);
    LinWs l = lin_layout(&ws, ctx->prec, 2, n, in_f, out_f);
    KC_WS_FITS(ctx, ws, "kc_linear_backward_weight");
    if (dw) {
        const void *A = in, *B = dout;
        if (ctx->prec == KC_BF16) {
            KC_TRY(kc_to_bf16(ctx, l.a, in, n * in_f));
            KC_TRY(kc_to_bf16(ctx, l.b, dout, n * out_f));
            A = l.a, B = l.b;
        }
        KC_TRY(kc_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, in_f, out_f, n, 1.0f, A, in_f, 0, B, out_f, 0, 1.0f, dw, in_f, 0,
                       1));
    }
    if (db)
        KC_TRY(kc_colsum_add(ctx, db, dout, n, out_f, l.part));
    return KC_OK;
}
