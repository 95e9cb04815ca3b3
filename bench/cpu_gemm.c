/* bench/cpu_gemm.c: the CPU's matrix products in bf16 (kernels/cpu/k_gemm.c,
 * AVX512-BF16) against fp32 (OpenBLAS's sgemm, one thread), on the shapes
 * a linear layer runs for a micro-batch, each the best of 30 calls, the
 * two alternating. docs/benchmarks.md.
 *
 *   cpu_gemm
 *
 * Prints, per shape, both times, GFLOP/s and the ratio; on a CPU without
 * AVX512-BF16 it says so and measures fp32 only.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "k_cpu.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
    openblas_set_num_threads(1);
    static const struct {
        int64_t m, n, k;
        int ta, tb;
        const char *what;
    } shapes[] = {
        {64, 1024, 1024, 0, 1, "forward: 64 rows x (1024 -> 1024), y = x W^T"},
        {64, 1024, 1024, 0, 0, "input gradient: dx = dy W"},
        {1024, 1024, 64, 1, 0, "weight gradient: dW += dy^T x over 64 rows"},
        {256, 1024, 1024, 0, 1, "forward, 256 rows"},
        {512, 128, 128, 0, 1, "forward: 512 rows x (128 -> 128), gpt_tiny's width"},
        {512, 384, 128, 0, 1, "forward: 512 rows x (128 -> 384), gpt_tiny's qkv"},
    };
    int bf16 = k_bf16_supported();
    if (!bf16)
        printf("this CPU has no AVX512-BF16: fp32 only\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s].m, n = shapes[s].n, k = shapes[s].k;
        int ta = shapes[s].ta, tb = shapes[s].tb;
        float *a = malloc((size_t)(m * k) * sizeof(float)), *b = malloc((size_t)(k * n) * sizeof(float));
        float *c = malloc((size_t)(m * n) * sizeof(float));
        if (!a || !b || !c)
            return 1;
        unsigned x = 1;
        for (int64_t i = 0; i < m * k; i++)
            a[i] = (float)((x = x * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (int64_t i = 0; i < k * n; i++)
            b[i] = (float)((x = x * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        double best[2] = {1e30, 1e30};
        for (int r = 0; r < 30; r++)
            for (int p = 0; p < 1 + bf16; p++) {
                double t = now();
                k_gemm(p ? K_BF16 : K_FP32, ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, 0, c, n);
                t = now() - t;
                best[p] = t < best[p] ? t : best[p];
            }
        double flop = 2.0 * (double)m * (double)n * (double)k;
        printf("%s (%lld x %lld x %lld): fp32 %.3f ms (%.1f GFLOP/s)", shapes[s].what, (long long)m, (long long)n,
               (long long)k, best[0] * 1e3, flop / best[0] * 1e-9);
        if (bf16)
            printf(", bf16 %.3f ms (%.1f GFLOP/s): %.2fx", best[1] * 1e3, flop / best[1] * 1e-9, best[0] / best[1]);
        printf("\n");
        free(a), free(b), free(c);
    }
    return 0;
}
