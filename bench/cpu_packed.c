/* bench/cpu_packed.c: a linear layer's fp32 forward and input gradient from
 * packed weights (kernels/cpu/k_gemm.c, AVX-512F) against the same products
 * through OpenBLAS's sgemm (one thread), and what packing a weight costs;
 * then its weight gradient by k_gemm_wgrad against sgemm, on the MLP's and
 * gpt_tiny's blocks' shapes. The weights (and gradients) are cycled through
 * 8 layers, as a model's step reads them, so none stays in cache.
 * docs/benchmarks.md.
 *
 *   cpu_packed [--peak]
 *
 * --peak: the peak line alone (bench/train_speed.py reads it).
 *
 * Prints first the core's fp32 peak, measured: 12 independent chains of
 * AVX-512 FMAs (vfmadd231ps zmm, 16 lanes, 2 FLOPs each), on one thread,
 * then on two at once (whether both cores keep their clock); then, per
 * shape, the best of 5 rounds of each product (the two alternating),
 * GFLOP/s, its share of the one-thread peak and the ratio; on a CPU
 * without AVX-512F it says so and exits 0.
 */
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base_thread.h"
#include "k_cpu.h"

#define LAYERS 8

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *must(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fputs("cpu_packed: out of memory\n", stderr);
        exit(2);
    }
    return p;
}

/* FMA peak: 12 chains (more than an FMA's latency times the pipes that
 * take one per cycle), each a zmm of 16 lanes; the result is printed so
 * that the loop is not dropped */
__attribute__((target("avx512f"))) static void *fma_peak(void *arg)
{
    double *gflops = arg;
    const long n = 50000000;
    __m512 acc[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    for (int i = 0; i < 12; i++)
        acc[i] = _mm512_set1_ps((float)i);
    double t = now();
    for (long r = 0; r < n; r++) {
#pragma GCC unroll 12 /* the chains in registers at -O2 too, not in memory */
        for (int i = 0; i < 12; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    t = now() - t;
    float sum = 0.0f;
    for (int i = 0; i < 12; i++)
        sum += _mm512_reduce_add_ps(acc[i]);
    *gflops = n * 12.0 * 16 * 2 / t / 1e9 + (sum == 12345.0f); /* keeps sum alive */
    return NULL;
}

/* "  1234.5 us  98 GF  85%": a product's time, rate and share of the peak */
static void cell(double seconds, double flop, double peak_gf)
{
    printf(" %7.1f us %3.0f GF %3.0f%%", seconds * 1e6, flop / seconds / 1e9, 100 * flop / seconds / 1e9 / peak_gf);
}

static double peak(void)
{
    double one = 0.0, two[2] = {0.0, 0.0};
    fma_peak(&one); /* warms the clock up */
    fma_peak(&one);
    pthread_t th; /* on the other CPU: Linux may queue it behind this one */
    int threaded = base_thread_start(&th, fma_peak, &two[1]) == 0;
    fma_peak(&two[0]);
    if (threaded)
        pthread_join(th, NULL);
    printf("one core's fp32 FMA peak (AVX-512, 12 chains): %.1f GFLOP/s", one);
    if (threaded)
        printf("; two threads at once: %.1f and %.1f", two[0], two[1]);
    printf("\n\n");
    return one;
}

/* dw += dy^T . x, into 8 gradients in turn: sgemm (k_linear_backward_weight
 * without a scratch) against k_gemm_wgrad; the last column says which of
 * the two k_linear_backward_weight takes with its scratch here */
static void wgrad(double pk)
{
    static const int64_t shapes[][3] = {{64, 1024, 1024}, {128, 1024, 1024}, {256, 1024, 1024}, {64, 256, 256},
                                        {512, 128, 384},  {512, 128, 128},   {512, 128, 512},   {512, 512, 128}};
    printf("\n%-22s %-15s %17s %17s %7s\n", "rows x (in -> out)", "product", "OpenBLAS", "own", "ratio");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s][0], in_f = shapes[s][1], out_f = shapes[s][2];
        int64_t sf = k_wgrad_floats(n, in_f), rule = k_linear_wgrad_floats(n, in_f, out_f);
        float *dw = must(sizeof(float) * LAYERS * in_f * out_f), *scratch = must(sizeof(float) * sf);
        float *x = must(sizeof(float) * n * in_f), *dy = must(sizeof(float) * n * out_f);
        for (int64_t i = 0; i < LAYERS * in_f * out_f; i++)
            dw[i] = 0.0f;
        for (int64_t i = 0; i < n * in_f; i++)
            x[i] = (float)((i * 31) % 100) * 0.01f - 0.5f;
        for (int64_t i = 0; i < n * out_f; i++)
            dy[i] = (float)((i * 17) % 100) * 0.001f - 0.05f;
        int reps = (int)(4e9 / (2.0 * n * in_f * out_f)) + LAYERS;
        double best[2] = {1e30, 1e30};
        for (int r = 0; r < 5; r++)
            for (int v = 0; v < 2; v++) {
                double t = now();
                for (int q = 0; q < reps; q++) {
                    float *g = dw + q % LAYERS * in_f * out_f;
                    if (v)
                        k_gemm_wgrad(out_f, in_f, n, dy, x, g, scratch);
                    else
                        k_linear_backward_weight(g, NULL, dy, x, n, in_f, out_f, K_FP32, NULL);
                }
                t = (now() - t) / reps;
                best[v] = t < best[v] ? t : best[v];
            }
        double flop = 2.0 * n * in_f * out_f;
        printf("%4lld x (%4lld -> %4lld) %-15s", (long long)n, (long long)in_f, (long long)out_f, "weight gradient");
        cell(best[0], flop, pk);
        cell(best[1], flop, pk);
        printf(" %6.2fx  %s\n", best[0] / best[1], rule && k_wgrad_supported(in_f) ? "own" : "OpenBLAS");
        free(dw), free(scratch), free(x), free(dy);
    }
}

int main(int argc, char **argv)
{
    int peak_only = argc == 2 && strcmp(argv[1], "--peak") == 0;
    if (argc > 1 && !peak_only) {
        fprintf(stderr, "usage: cpu_packed [--peak]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    if (!k_packed_supported()) {
        puts("cpu_packed: this CPU has no AVX-512F: the packed product is not used here");
        return 0;
    }
    if (peak_only) {
        peak();
        return 0;
    }
    static const int64_t shapes[][3] = {{32, 1024, 1024}, {64, 1024, 1024}, {256, 1024, 1024},
                                        {64, 512, 512},   {64, 256, 256},   {128, 256, 256}};
    double pk_gf = peak();
    printf("%-22s %-15s %17s %17s %7s\n", "rows x (in -> out)", "product", "OpenBLAS", "packed", "ratio");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s][0], in_f = shapes[s][1], out_f = shapes[s][2];
        int64_t pf = k_linear_pack_floats(n, in_f, out_f);
        float *w = must(sizeof(float) * LAYERS * in_f * out_f), *pk = must(sizeof(float) * LAYERS * pf);
        float *x = must(sizeof(float) * n * in_f), *y = must(sizeof(float) * n * out_f);
        for (int64_t i = 0; i < LAYERS * in_f * out_f; i++)
            w[i] = (float)((i * 7919) % 1000) * 0.001f - 0.5f;
        for (int64_t i = 0; i < n * in_f; i++)
            x[i] = (float)((i * 31) % 100) * 0.01f - 0.5f;
        double pack = 1e30;
        for (int r = 0; r < 5; r++) {
            double t = now();
            for (int l = 0; l < LAYERS; l++) {
                k_linear_pack(pk + l * pf, w + l * in_f * out_f, in_f, out_f, 0);
                k_linear_pack(pk + l * pf, w + l * in_f * out_f, in_f, out_f, 1);
            }
            t = (now() - t) / LAYERS;
            pack = t < pack ? t : pack;
        }
        int reps = (int)(4e9 / (2.0 * n * in_f * out_f)) + LAYERS;
        for (int which = 0; which < 2; which++) {
            double best[2] = {1e30, 1e30};
            for (int r = 0; r < 5; r++)
                for (int v = 0; v < 2; v++) {
                    double t = now();
                    for (int q = 0; q < reps; q++) {
                        int l = q % LAYERS;
                        const float *wl = w + l * in_f * out_f, *pl = pk + l * pf;
                        if (which == 0 && v == 0)
                            k_linear_forward(y, x, wl, NULL, n, in_f, out_f, K_FP32, NULL);
                        else if (which == 0)
                            k_linear_forward_packed(y, x, pl, NULL, n, in_f, out_f);
                        else if (v == 0)
                            k_linear_backward_input(x, y, wl, n, in_f, out_f, K_FP32);
                        else
                            k_linear_backward_input_packed(x, y, pl, n, in_f, out_f);
                    }
                    t = (now() - t) / reps;
                    best[v] = t < best[v] ? t : best[v];
                }
            double flop = 2.0 * n * in_f * out_f;
            printf("%4lld x (%4lld -> %4lld) %-15s", (long long)n, (long long)in_f, (long long)out_f,
                   which ? "input gradient" : "forward");
            cell(best[0], flop, pk_gf);
            cell(best[1], flop, pk_gf);
            printf(" %6.2fx\n", best[0] / best[1]);
        }
        printf("%4lld x (%4lld -> %4lld) packing both copies of one weight: %.1f us\n", (long long)n, (long long)in_f,
               (long long)out_f, pack * 1e6);
        free(w), free(pk), free(x), free(y);
    }
    wgrad(pk_gf);
    return 0;
}
