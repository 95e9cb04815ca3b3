/* tests/ktestutil.h: random inputs for the kernel tests (test_kernels.c,
 * test_block.c): a fixed 32-bit LCG, so every run sees the same numbers,
 * and buffers pre-filled with values an output must overwrite. */
#ifndef PIPE_KTESTUTIL_H
#define PIPE_KTESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Check's ck_assert records every passing check (a write per call); in loops
 * over 1e5 elements that is seconds of system time, so loops use this. */
#define REQUIRE(cond, ...)             \
    do {                               \
        if (!(cond))                   \
            ck_abort_msg(__VA_ARGS__); \
    } while (0)

static uint32_t lcg = 12345u;

static void rng_seed(uint32_t s)
{
    lcg = s;
}

/* uniform in [lo, hi), from the top 24 bits of a 32-bit LCG */
static float rnd(float lo, float hi)
{
    lcg = lcg * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(lcg >> 8) * 0x1p-24f;
}

static float *frand(int64_t n, float lo, float hi)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = rnd(lo, hi);
    return p;
}

static float *fzero(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

/* filled with NaN: an output that must be overwritten, or scratch whose
 * contents must not matter */
static float *fnan(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

#endif
