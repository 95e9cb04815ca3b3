/* kernels/cpu/k_reduce.h: the fixed-order sums shared by the CPU kernels,
 * and K_VEC_LOOP (private to kernels/cpu/; not part of the kernel
 * interface).
 *
 * A single accumulator makes a sum latency-bound and unvectorisable; a sum
 * in double is accurate but slow; reassociation by the compiler would make
 * results depend on flags. These sums fix their order explicitly:
 *
 *   row sum of n floats: blocks of K_BLOCK consecutive elements; inside a
 *   block, element j goes to float lane j % K_LANES (16 independent chains,
 *   which the compiler vectorises without reordering anything); the lanes
 *   are added in double in lane order, and the blocks in double in block
 *   order. A float chain is at most K_BLOCK / K_LANES = 16 adds long.
 *
 *   column sums of a (rows, cols) matrix: blocks of K_ROWS rows summed in
 *   float per column, each block's sums added into a double per column,
 *   then the double added once into the destination.
 *
 * Same inputs, same bits, whatever the build flags (no -ffast-math here).
 */
#ifndef PIPE_K_REDUCE_H
#define PIPE_K_REDUCE_H

#include <stdint.h>
#include <string.h>

/* Loops (elementwise math, pooling) built twice more for x86-64 CPUs with
 * AVX2 (v3) and AVX-512 (v4), picked at load time, as runtime/rt_optim.c's
 * updates: the same operations in the same order on every CPU (ISO C keeps
 * -ffp-contract=off: no fused multiply-add appears), so the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(PIPE_NO_CLONES)
#define K_VEC_LOOP __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define K_VEC_LOOP
#endif

/* a helper inlined into its callers whatever its size, so that a
 * K_VEC_LOOP caller's build (AVX-512, AVX2) covers it too: an outlined copy
 * would be built for baseline x86-64 alone */
#if defined(__GNUC__)
#define K_INLINE static inline __attribute__((always_inline))
#else
#define K_INLINE static inline
#endif

#define K_LANES 16
#define K_BLOCK 256
#define K_ROWS 64
#define K_COLS 256

/* sum of n <= K_BLOCK floats, in lanes */
static inline double k_block_sum(const float *x, int64_t n)
{
    float a[K_LANES] = {0};
    int64_t j = 0;
    for (; j + K_LANES <= n; j += K_LANES)
        for (int k = 0; k < K_LANES; k++)
            a[k] += x[j + k];
    for (int k = 0; j < n; j++, k++)
        a[k] += x[j];
    double s = 0.0;
    for (int k = 0; k < K_LANES; k++)
        s += a[k];
    return s;
}

static inline double k_row_sum(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t j = 0; j < n; j += K_BLOCK)
        s += k_block_sum(x + j, n - j < K_BLOCK ? n - j : K_BLOCK);
    return s;
}

/* acc (cols) += column sums of m (rows, cols) */
K_INLINE void k_colsum_add(float *acc, const float *m, int64_t rows, int64_t cols)
{
    double d[K_COLS];
    float f[K_COLS];
    for (int64_t j0 = 0; j0 < cols; j0 += K_COLS) {
        int64_t w = cols - j0 < K_COLS ? cols - j0 : K_COLS;
        memset(d, 0, sizeof d);
        for (int64_t i0 = 0; i0 < rows; i0 += K_ROWS) {
            int64_t i1 = rows - i0 < K_ROWS ? rows : i0 + K_ROWS;
            memset(f, 0, sizeof f);
            for (int64_t i = i0; i < i1; i++) {
                const float *r = m + i * cols + j0;
                for (int64_t j = 0; j < w; j++)
                    f[j] += r[j];
            }
            for (int64_t j = 0; j < w; j++)
                d[j] += f[j];
        }
        for (int64_t j = 0; j < w; j++)
            acc[j0 + j] += (float)d[j];
    }
}

#endif
