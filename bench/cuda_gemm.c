/* bench/cuda_gemm.c: the card's measured cuBLAS GEMM throughput, in TFLOP/s,
 * for bf16 (bf16 operands, fp32 accumulation, bf16 or fp32 out), tf32 and
 * fp32, on square products (4096^3 and 8192^3, every precision) and on
 * GPT-2 small's linear shapes (8 x 1024 tokens, width 768). The best bf16
 * figure is the reference against which a GPT run's achieved throughput is
 * stated as a fraction (scripts/gpu-check.sh); fp32's and tf32's likewise
 * for runs in those precisions. Also kc_linear_forward in KC_BF16 (with its
 * rounding of both operands) on the GPT shapes, to show what the
 * conversions cost.
 *
 * Everything runs on one stream, the kc_ context's (cuBLAS is bound to
 * it): the operands are random (zeros would draw less power and run
 * faster), filled on the host in pinned memory, copied in with
 * cudaMemcpyAsync on that stream and converted to bf16 there, so every
 * step is ordered after the one before. The card is first kept busy for
 * about half a second (clocks up from idle), then each case is warmed up
 * (3 calls), then timed with CUDA events over enough calls for about 0.2 s.
 * The last lines are key=value for scripts: bf16_peak_tflops=...,
 * tf32_peak_tflops=..., fp32_peak_tflops=... (the best case of each).
 *
 * Usage: cuda_gemm [--quick]   (--quick: drops the 8192^3 cases)
 * Without a CUDA device it prints "skipped: no CUDA device" and exits 77. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "k_cuda.h"

#define CK(call)                                                                                                       \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            printf("error: %s: %s\n", #call, cudaGetErrorString(e_));                                                \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
#define CB(call)                                                                                                       \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            printf("error: %s: %s\n", #call, cublasGetStatusString(s_));                                             \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
#define KC(call)                                                                                                       \
    do {                                                                                                               \
        if ((call) != KC_OK) {                                                                                         \
            printf("error: %s: %s\n", #call, ctx.msg);                                                               \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static KcCtx ctx;

typedef enum Kind { BF16_BF16, BF16_F32, TF32, FP32 } Kind;
static const char *const kind_name[] = {"bf16->bf16", "bf16->fp32", "tf32", "fp32"};

typedef struct Shape {
    int m, n, k;
    const char *what;
} Shape;

/* the largest operand any case needs, in elements */
#define MAXE ((size_t)8192 * 8192)

static float *fa, *fb, *fc;     /* fp32 operands and output */
static uint16_t *ha, *hb, *hc;  /* bf16 operands and output */

static double seconds_of(cudaEvent_t a, cudaEvent_t b)
{
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms / 1e3;
}

static void gemm(Kind kind, const Shape *s)
{
    float one = 1.0f, zero = 0.0f;
    const void *A = kind == TF32 || kind == FP32 ? (const void *)fa : (const void *)ha;
    const void *B = kind == TF32 || kind == FP32 ? (const void *)fb : (const void *)hb;
    void *C = kind == BF16_BF16 ? (void *)hc : (void *)fc;
    cudaDataType_t ab = kind == TF32 || kind == FP32 ? CUDA_R_32F : CUDA_R_16BF;
    cudaDataType_t ct = kind == BF16_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t comp = kind == TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    /* row-major out (m, n) = in (m, k) . W^T, W (n, k): as kc_linear_forward calls it */
    CB(cublasGemmEx(ctx.blas, CUBLAS_OP_T, CUBLAS_OP_N, s->n, s->m, s->k, &one, B, ab, s->k, A, ab, s->k, &zero, C, ct,
                    s->n, comp, CUBLAS_GEMM_DEFAULT));
}

/* runs f(arg) enough times for about 0.2 s; returns seconds per call */
static double timed(void (*f)(Kind, const Shape *), Kind kind, const Shape *s)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++)
        f(kind, s);
    CK(cudaEventRecord(a, ctx.stream));
    f(kind, s);
    CK(cudaEventRecord(b, ctx.stream));
    CK(cudaEventSynchronize(b));
    double one = seconds_of(a, b);
    int iters = one > 0 ? (int)(0.2 / one) : 100;
    iters = iters < 3 ? 3 : iters > 500 ? 500 : iters;
    CK(cudaEventRecord(a, ctx.stream));
    for (int i = 0; i < iters; i++)
        f(kind, s);
    CK(cudaEventRecord(b, ctx.stream));
    CK(cudaEventSynchronize(b));
    double t = seconds_of(a, b) / iters;
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return t;
}

static void linear_bf16(Kind kind, const Shape *s)
{
    (void)kind;
    /* in (m, k) = fa, W (n, k) = fb, out (m, n) = fc */
    KC(kc_linear_forward(&ctx, fc, fa, fb, NULL, s->m, s->k, s->n));
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("skipped: no CUDA device\n");
        fprintf(stderr, "(cudaGetDeviceCount: %s, %d devices)\n", e == cudaSuccess ? "ok" : cudaGetErrorString(e),
                ndev);
        return 77;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device 0: %s, sm_%d%d, %d SMs; CUDA runtime %d\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, CUDART_VERSION);
    Shape gpt[3] = {{8192, 2304, 768, "GPT-2 qkv"}, {8192, 3072, 768, "GPT-2 mlp.fc"}, {8192, 768, 3072, "GPT-2 mlp.proj"}};
    size_t ws = 0;
    if (kc_init(&ctx, 0, 0) != KC_OK) {
        printf("error: kc_init: %s\n", ctx.msg);
        return 1;
    }
    kc_set_precision(&ctx, KC_BF16);
    for (int i = 0; i < 3; i++) {
        size_t w = kc_linear_workspace(&ctx, gpt[i].m, gpt[i].k, gpt[i].n);
        ws = w > ws ? w : ws;
    }
    KC(kc_reserve(&ctx, ws));
    CK(cudaMalloc((void **)&fa, MAXE * 4));
    CK(cudaMalloc((void **)&fb, MAXE * 4));
    CK(cudaMalloc((void **)&fc, MAXE * 4));
    CK(cudaMalloc((void **)&ha, MAXE * 2));
    CK(cudaMalloc((void **)&hb, MAXE * 2));
    CK(cudaMalloc((void **)&hc, MAXE * 2));
    {
        /* pinned, so the copies are truly asynchronous and ordered on the
         * stream with the conversions after them */
        float *h = NULL;
        CK(cudaMallocHost((void **)&h, MAXE * 4));
        uint32_t x = 1138u;
        for (int which = 0; which < 2; which++) {
            for (size_t i = 0; i < MAXE; i++) {
                x = x * 1664525u + 1013904223u;
                h[i] = (float)(x >> 8) * 0x1p-24f * 2.0f - 1.0f;
            }
            CK(cudaMemcpyAsync(which ? fb : fa, h, MAXE * 4, cudaMemcpyHostToDevice, ctx.stream));
            CK(cudaStreamSynchronize(ctx.stream)); /* h is rewritten next */
        }
        CK(cudaFreeHost(h));
        KC(kc_f32_to_bf16(&ctx, ha, fa, (int64_t)MAXE));
        KC(kc_f32_to_bf16(&ctx, hb, fb, (int64_t)MAXE));
        KC(kc_sync(&ctx));
    }
    /* clocks up: about 0.5 s of bf16 products before anything is timed */
    {
        Shape w = {8192, 8192, 8192, "warm-up"};
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        double spent = 0;
        for (int round = 0; round < 50 && spent < 0.5; round++) {
            CK(cudaEventRecord(a, ctx.stream));
            for (int i = 0; i < 10; i++)
                gemm(BF16_F32, &w);
            CK(cudaEventRecord(b, ctx.stream));
            CK(cudaEventSynchronize(b));
            spent += seconds_of(a, b);
        }
        CK(cudaEventDestroy(a));
        CK(cudaEventDestroy(b));
    }

    Shape cases[6];
    int nc = 0;
    cases[nc++] = (Shape){4096, 4096, 4096, "square"};
    if (!quick)
        cases[nc++] = (Shape){8192, 8192, 8192, "square"};
    for (int i = 0; i < 3; i++)
        cases[nc++] = gpt[i];
    double peak[4] = {0, 0, 0, 0};
    printf("%-12s %6s %6s %6s  %-16s %9s %9s\n", "kind", "m", "n", "k", "shape", "ms", "TFLOP/s");
    for (int kind = 0; kind < 4; kind++)
        for (int i = 0; i < nc; i++) {
            double t = timed(gemm, (Kind)kind, &cases[i]);
            double tf = 2.0 * cases[i].m * cases[i].n * cases[i].k / t / 1e12;
            peak[kind] = tf > peak[kind] ? tf : peak[kind];
            printf("%-12s %6d %6d %6d  %-16s %9.3f %9.1f\n", kind_name[kind], cases[i].m, cases[i].n, cases[i].k,
                   cases[i].what, t * 1e3, tf);
        }
    kc_set_precision(&ctx, KC_BF16);
    for (int i = 0; i < 3; i++) {
        double t = timed(linear_bf16, BF16_F32, &gpt[i]);
        double tf = 2.0 * gpt[i].m * gpt[i].n * gpt[i].k / t / 1e12;
        printf("%-12s %6d %6d %6d  %-16s %9.3f %9.1f\n", "kc_linear", gpt[i].m, gpt[i].n, gpt[i].k, gpt[i].what,
               t * 1e3, tf);
    }
    double bf16 = peak[BF16_BF16] > peak[BF16_F32] ? peak[BF16_BF16] : peak[BF16_F32];
    printf("bf16_peak_tflops=%.1f\ntf32_peak_tflops=%.1f\nfp32_peak_tflops=%.1f\n", bf16, peak[TF32], peak[FP32]);
    CK(cudaFree(fa));
    CK(cudaFree(fb));
    CK(cudaFree(fc));
    CK(cudaFree(ha));
    CK(cudaFree(hb));
    CK(cudaFree(hc));
    kc_free(&ctx);
    return 0;
}
