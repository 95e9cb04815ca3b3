/* bench/optim_speed.c: the optimizer update per parameter, best of 8 steps
 * over 8 M parameters (AdamW, or SGD with momentum), then the parameters
 * and state written to OUT so that two builds can be compared byte for
 * byte (cmp). docs/benchmarks.md.
 *
 *   optim_speed OUT [adamw|sgd]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "rt_optim.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* a reproducible value in [-0.5, 0.5) */
static float next(unsigned *x)
{
    *x = *x * 1103515245u + 12345u;
    return (float)(*x >> 8) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (argc > 2 && strcmp(argv[2], "adamw") != 0 && strcmp(argv[2], "sgd") != 0)) {
        fprintf(stderr, "usage: optim_speed OUT [adamw|sgd]\n");
        return 1;
    }
    int64_t n = (int64_t)8 << 20;
    PlanConfig c;
    memset(&c, 0, sizeof c);
    c.optimizer = argc > 2 && strcmp(argv[2], "sgd") == 0 ? PLAN_OPT_SGD : PLAN_OPT_ADAMW;
    c.lr = 1e-3, c.beta1 = 0.9, c.beta2 = 0.999, c.eps = 1e-8, c.weight_decay = 0.01, c.momentum = 0.9;
    float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *s = calloc(2 * n, sizeof *s);
    if (!p || !g || !s) {
        fprintf(stderr, "optim_speed: out of memory\n");
        return 1;
    }
    unsigned x = 1;
    for (int64_t i = 0; i < n; i++) {
        p[i] = next(&x);
        g[i] = next(&x) * 1e-2f;
    }
    double best = 1e9;
    for (int r = 0; r < 8; r++) {
        double t = now();
        rt_optim_step(&c, p, g, s, n, r + 1, 1e-3);
        t = now() - t;
        best = t < best ? t : best;
    }
    printf("%s: %.2f ns/param (best of 8 steps over %lld parameters)\n", c.optimizer == PLAN_OPT_SGD ? "sgd" : "adamw",
           best / n * 1e9, (long long)n);
    FILE *f = fopen(argv[1], "wb");
    if (!f || fwrite(p, sizeof *p, n, f) != (size_t)n || fwrite(s, sizeof *s, 2 * n, f) != (size_t)(2 * n) ||
        fclose(f) != 0) {
        perror(argv[1]);
        return 1;
    }
    free(p), free(g), free(s);
    return 0;
}
