/* tests/ktp.h: tensor-parallel ranks as threads for the kernel tests
 * (test_block.c, test_llama.c). tp_sum_threads is a KBlock / KLlama
 * tp_sum: every rank posts its array, then each adds all of them in rank
 * order into a copy of its own (the same bits on every rank) and waits
 * until all have read before writing it back. take_rows / take_cols cut a
 * rank's share out of a whole tensor; require_close compares a rank's
 * result with the whole block's. */
#ifndef PIPE_KTP_H
#define PIPE_KTP_H

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ktestutil.h"

#define TP_MAX 4

typedef struct TpWorld {
    pthread_barrier_t bar;
    float *part[TP_MAX];
    int tp;
} TpWorld;

/* a rank's tp_ctx */
typedef struct TpMember {
    TpWorld *w;
    int r;
} TpMember;

static void tp_sum_threads(void *ctx, float *x, int64_t n)
{
    TpMember *me = ctx;
    TpWorld *w = me->w;
    float *sum = fzero(n);
    w->part[me->r] = x;
    pthread_barrier_wait(&w->bar);
    for (int q = 0; q < w->tp; q++)
        for (int64_t i = 0; i < n; i++)
            sum[i] += w->part[q][i];
    pthread_barrier_wait(&w->bar);
    memcpy(x, sum, (size_t)n * sizeof(float));
    free(sum);
}

/* runs fn(arg[r]) on tp threads at once and waits for them all */
static void tp_run(int tp, void *(*fn)(void *), void *const arg[])
{
    pthread_t th[TP_MAX];
    for (int r = 0; r < tp; r++)
        ck_assert_int_eq(pthread_create(&th[r], NULL, fn, arg[r]), 0);
    for (int r = 0; r < tp; r++)
        pthread_join(th[r], NULL);
}

/* a rank's array against the whole block's: |a - b| <= tol * max |b| */
static void require_close(const char *what, int tp, const float *a, const float *b, int64_t n, double tol)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(b[i]));
    for (int64_t i = 0; i < n; i++)
        if (!(isfinite(a[i]) && fabs((double)a[i] - b[i]) <= tol * mx + 1e-30))
            ck_abort_msg("tp %d: %s[%lld] %.9g, whole %.9g", tp, what, (long long)i, a[i], b[i]);
}

/* rows [r0, r0 + rows) of a (., cols) matrix */
static float *take_rows(const float *a, int64_t r0, int64_t rows, int64_t cols)
{
    float *o = fnan(rows * cols);
    memcpy(o, a + r0 * cols, (size_t)(rows * cols) * sizeof(float));
    return o;
}

/* columns [c0, c0 + nc) of a (rows, cols) matrix */
static float *take_cols(const float *a, int64_t rows, int64_t cols, int64_t c0, int64_t nc)
{
    float *o = fnan(rows * nc);
    for (int64_t i = 0; i < rows; i++)
        memcpy(o + i * nc, a + i * cols + c0, (size_t)nc * sizeof(float));
    return o;
}

#endif
