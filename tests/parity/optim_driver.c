/* tests/parity/optim_driver.c: runs rt_optim for tests/parity/test_optim.py.
 *
 *   optim_driver sgd|adam|adamw LR BETA1 BETA2 EPS WD MOMENTUM NESTEROV STEPS [GRAD_CLIP]
 *
 * stdin: n, the n initial parameters, then STEPS times n gradients, as text
 * (%.9g round-trips a float exactly). stdout: the n parameters after each
 * step, one line a step, %.9g. With GRAD_CLIP > 0 each step's gradient is
 * first clipped to that global norm as clip_grad_norm_ does (rt_sumsq,
 * rt_clip_factor, rt_scale), and a line `clip FACTOR` (%.17g) comes before
 * the step's parameters: torch takes the norm in float32, we in double, so
 * the script checks the factor on its own and then replays the steps with
 * ours. The learning rate is constant: the schedule is a pure function,
 * covered by the unit tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_optim.h"

int main(int argc, char **argv)
{
    if (argc != 10 && argc != 11) {
        fprintf(stderr, "usage: %s sgd|adam|adamw LR BETA1 BETA2 EPS WD MOMENTUM NESTEROV STEPS [GRAD_CLIP]\n", argv[0]);
        return 2;
    }
    PlanConfig c;
    memset(&c, 0, sizeof c);
    if (!strcmp(argv[1], "sgd"))
        c.optimizer = PLAN_OPT_SGD;
    else if (!strcmp(argv[1], "adam"))
        c.optimizer = PLAN_OPT_ADAM;
    else if (!strcmp(argv[1], "adamw"))
        c.optimizer = PLAN_OPT_ADAMW;
    else {
        fprintf(stderr, "optim_driver: unknown optimizer '%s'\n", argv[1]);
        return 2;
    }
    c.lr = strtod(argv[2], NULL);
    c.beta1 = strtod(argv[3], NULL);
    c.beta2 = strtod(argv[4], NULL);
    c.eps = strtod(argv[5], NULL);
    c.weight_decay = strtod(argv[6], NULL);
    c.momentum = strtod(argv[7], NULL);
    c.nesterov = atoi(argv[8]);
    long steps = atol(argv[9]);
    double clip = argc == 11 ? strtod(argv[10], NULL) : 0;
    c.lr_schedule = PLAN_LR_CONSTANT;
    c.steps = steps;

    long n;
    if (scanf("%ld", &n) != 1 || n <= 0) {
        fprintf(stderr, "optim_driver: expected the parameter count\n");
        return 2;
    }
    int k = rt_optim_state_per_param(&c);
    float *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
    float *state = calloc((size_t)(k ? k : 1) * (size_t)n, sizeof *state);
    if (!p || !g || !state)
        return 2;
    for (long i = 0; i < n; i++)
        if (scanf("%f", &p[i]) != 1)
            return fprintf(stderr, "optim_driver: short parameters\n"), 2;
    for (long t = 1; t <= steps; t++) {
        for (long i = 0; i < n; i++)
            if (scanf("%f", &g[i]) != 1)
                return fprintf(stderr, "optim_driver: short gradients at step %ld\n", t), 2;
        if (clip > 0) {
            double f = rt_clip_factor(sqrt(rt_sumsq(g, n)), clip);
            printf("clip %.17g\n", f);
            rt_scale(g, n, (float)f);
        }
        rt_optim_step(&c, p, g, state, n, t, rt_lr_at(&c, t - 1));
        for (long i = 0; i < n; i++)
            printf("%.9g%c", p[i], i + 1 < n ? ' ' : '\n');
    }
    free(p);
    free(g);
    free(state);
    return 0;
}
