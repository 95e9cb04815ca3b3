/* tests/test_optim.c: the optimizers, learning-rate schedules and gradient
 * clipping of runtime/rt_optim.c against the formulas of rt_optim.h,
 * worked out here in double, step by step, on 3-element tensors.
 *
 * float32 and double differ by a few units in the last place, so results
 * are compared to 1e-6 relative; the inputs keep every result away from
 * zero so that a relative tolerance means something. Bit-exact agreement
 * with torch.optim is tests/parity/test_optim.py's job. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_optim.h"

#define N 3
#define STEPS 3

static const double P0[N] = {1.0, -2.0, 2.5};
static const double G[STEPS][N] = {{0.5, 0.25, -1.5}, {-0.3, 0.8, 0.9}, {0.9, -0.6, 0.2}};

static void near(double got, double want, const char *what, int step, int i)
{
    ck_assert_msg(fabs(got - want) <= 1e-6 * fabs(want) + 1e-12, "%s, step %d, element %d: got %.9g, want %.9g", what, step,
                  i, got, want);
}

static PlanConfig config(PlanOptimizerKind kind)
{
    PlanConfig c;
    memset(&c, 0, sizeof c);
    c.optimizer = kind;
    c.lr = 0.1;
    c.beta1 = 0.9, c.beta2 = 0.999, c.eps = 1e-8;
    c.lr_schedule = PLAN_LR_CONSTANT;
    c.steps = 100;
    return c;
}

/* The header's SGD in double. */
static void sgd_ref(const PlanConfig *c, double lr, double p[N], double buf[N], int t, const double g[N])
{
    for (int i = 0; i < N; i++) {
        double d = g[i] + c->weight_decay * p[i];
        if (c->momentum != 0) {
            buf[i] = t == 1 ? d : c->momentum * buf[i] + d;
            d = c->nesterov ? d + c->momentum * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

/* The header's Adam (decoupled = 0) and AdamW (1) in double. */
static void adam_ref(const PlanConfig *c, int decoupled, double lr, double p[N], double m[N], double v[N], int t,
                     const double g[N])
{
    for (int i = 0; i < N; i++) {
        double d = g[i];
        if (decoupled)
            p[i] *= 1 - lr * c->weight_decay;
        else
            d += c->weight_decay * p[i];
        m[i] = c->beta1 * m[i] + (1 - c->beta1) * d;
        v[i] = c->beta2 * v[i] + (1 - c->beta2) * d * d;
        p[i] -= (lr / (1 - pow(c->beta1, t))) * m[i] / (sqrt(v[i]) / sqrt(1 - pow(c->beta2, t)) + c->eps);
    }
}

/* Runs STEPS steps of c in rt_optim and in the reference, comparing the
 * parameters and the optimizer state after each. */
static void run(const PlanConfig *c, const char *what)
{
    int k = rt_optim_state_per_param(c);
    float p[N], g[N], state[2 * N] = {0};
    double rp[N], rs[2 * N] = {0};
    for (int i = 0; i < N; i++)
        p[i] = (float)P0[i], rp[i] = P0[i];
    for (int t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++)
            g[i] = (float)G[t - 1][i];
        rt_optim_step(c, p, g, state, N, t, c->lr);
        if (c->optimizer == PLAN_OPT_SGD)
            sgd_ref(c, c->lr, rp, rs, t, G[t - 1]);
        else
            adam_ref(c, c->optimizer == PLAN_OPT_ADAMW, c->lr, rp, rs, rs + N, t, G[t - 1]);
        for (int i = 0; i < N; i++)
            near(p[i], rp[i], what, t, i);
        for (int i = 0; i < k * N; i++)
            near(state[i], rs[i], what, t, i);
        /* the gradient is an input: never modified */
        for (int i = 0; i < N; i++)
            ck_assert(g[i] == (float)G[t - 1][i]);
    }
}

START_TEST(state_sizes)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    ck_assert_int_eq(rt_optim_state_per_param(&c), 0);
    c.momentum = 0.9;
    ck_assert_int_eq(rt_optim_state_per_param(&c), 1);
    c = config(PLAN_OPT_ADAM);
    ck_assert_int_eq(rt_optim_state_per_param(&c), 2);
    c = config(PLAN_OPT_ADAMW);
    ck_assert_int_eq(rt_optim_state_per_param(&c), 2);
}
END_TEST

START_TEST(sgd_plain)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    run(&c, "sgd");
    /* one step by hand: p - lr * g */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f};
    rt_optim_step(&c, p, g, NULL, N, 1, 0.1);
    near(p[0], 1 - 0.1 * 0.5, "sgd by hand", 1, 0);
    near(p[1], -2 - 0.1 * 0.25, "sgd by hand", 1, 1);
    near(p[2], 2.5 + 0.1 * 1.5, "sgd by hand", 1, 2);
}
END_TEST

START_TEST(sgd_momentum_first_step)
{
    /* PyTorch starts the buffer at the gradient itself (not (1 -
     * dampening) * g, not 0 * buf + g with a stale buffer): step 1 is plain
     * SGD whatever the state holds. */
    PlanConfig c = config(PLAN_OPT_SGD);
    c.momentum = 0.9;
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f}, buf[N] = {7, 7, 7};
    rt_optim_step(&c, p, g, buf, N, 1, 0.1);
    for (int i = 0; i < N; i++) {
        ck_assert(buf[i] == g[i]);
        near(p[i], P0[i] - 0.1 * G[0][i], "momentum step 1", 1, i);
    }
    /* step 2 by hand: buf = 0.9 * g1 + g2 */
    float g2[N] = {-0.3f, 0.8f, 0.9f};
    rt_optim_step(&c, p, g2, buf, N, 2, 0.1);
    for (int i = 0; i < N; i++) {
        double b = 0.9 * G[0][i] + G[1][i];
        near(buf[i], b, "momentum buffer step 2", 2, i);
        near(p[i], P0[i] - 0.1 * G[0][i] - 0.1 * b, "momentum step 2", 2, i);
    }
    run(&c, "sgd momentum");
}
END_TEST

START_TEST(sgd_nesterov)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    c.momentum = 0.9;
    c.nesterov = 1;
    /* step 1: buf = g, update g + 0.9 * buf = 1.9 g */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f}, buf[N] = {0};
    rt_optim_step(&c, p, g, buf, N, 1, 0.1);
    for (int i = 0; i < N; i++)
        near(p[i], P0[i] - 0.1 * 1.9 * G[0][i], "nesterov step 1", 1, i);
    run(&c, "sgd nesterov");
}
END_TEST

START_TEST(sgd_weight_decay)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    c.weight_decay = 0.1;
    /* p - lr * (g + wd * p) */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f};
    rt_optim_step(&c, p, g, NULL, N, 1, 0.1);
    for (int i = 0; i < N; i++)
        near(p[i], P0[i] - 0.1 * (G[0][i] + 0.1 * P0[i]), "sgd wd by hand", 1, i);
    run(&c, "sgd weight decay");
    c.momentum = 0.8;
    run(&c, "sgd weight decay, momentum");
    c.nesterov = 1;
    run(&c, "sgd weight decay, nesterov");
}
END_TEST

START_TEST(adam_steps)
{
    PlanConfig c = config(PLAN_OPT_ADAM);
    /* step 1 by hand: m = 0.1 g, v = 0.001 g^2, bias-corrected m / sqrt(v)
     * = g / |g|: p - lr * sign(g) (less the eps term) */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f}, st[2 * N] = {0};
    rt_optim_step(&c, p, g, st, N, 1, 0.1);
    for (int i = 0; i < N; i++) {
        double a = fabs(G[0][i]);
        near(p[i], P0[i] - 0.1 * G[0][i] / (a + 1e-8), "adam step 1 by hand", 1, i);
        near(st[i], 0.1 * G[0][i], "adam m step 1", 1, i);
        near(st[N + i], 0.001 * G[0][i] * G[0][i], "adam v step 1", 1, i);
    }
    run(&c, "adam");
    c.beta1 = 0.8, c.beta2 = 0.95, c.eps = 1e-3, c.lr = 0.3;
    run(&c, "adam, other betas and eps");
}
END_TEST

START_TEST(adam_weight_decay)
{
    PlanConfig c = config(PLAN_OPT_ADAM);
    c.weight_decay = 0.1;
    /* L2: the decay goes into the gradient, so into m and v */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f}, st[2 * N] = {0};
    rt_optim_step(&c, p, g, st, N, 1, 0.1);
    for (int i = 0; i < N; i++)
        near(st[i], 0.1 * (G[0][i] + 0.1 * P0[i]), "adam wd m step 1", 1, i);
    run(&c, "adam weight decay");
}
END_TEST

START_TEST(adamw_decoupled)
{
    PlanConfig c = config(PLAN_OPT_ADAMW);
    c.weight_decay = 0.1;
    c.lr = 0.5;
    /* Decoupled: p *= 1 - lr * wd first; m and v see the bare gradient. */
    float p[N] = {1, -2, 2.5f}, g[N] = {0.5f, 0.25f, -1.5f}, st[2 * N] = {0};
    rt_optim_step(&c, p, g, st, N, 1, 0.5);
    for (int i = 0; i < N; i++) {
        near(st[i], 0.1 * G[0][i], "adamw m step 1", 1, i);
        near(p[i], P0[i] * (1 - 0.05) - 0.5 * G[0][i] / (fabs(G[0][i]) + 1e-8), "adamw step 1 by hand", 1, i);
    }
    c.lr = 0.2; /* three steps of 0.5 would bring p[0] near 0, where relative errors mean nothing */
    run(&c, "adamw");
    /* weight decay 0: AdamW is Adam */
    PlanConfig a = config(PLAN_OPT_ADAM), w = config(PLAN_OPT_ADAMW);
    float pa[N] = {1, -2, 2.5f}, pw[N] = {1, -2, 2.5f}, sa[2 * N] = {0}, sw[2 * N] = {0};
    for (int t = 1; t <= STEPS; t++) {
        float gg[N];
        for (int i = 0; i < N; i++)
            gg[i] = (float)G[t - 1][i];
        rt_optim_step(&a, pa, gg, sa, N, t, 0.1);
        rt_optim_step(&w, pw, gg, sw, N, t, 0.1);
    }
    ck_assert(memcmp(pa, pw, sizeof pa) == 0);
}
END_TEST

START_TEST(step_lr_argument)
{
    /* The step's lr comes from the argument (the schedule), not c->lr. */
    PlanConfig c = config(PLAN_OPT_SGD);
    c.lr = 100;
    float p[1] = {1}, g[1] = {1};
    rt_optim_step(&c, p, g, NULL, 1, 1, 0.25);
    ck_assert(p[0] == 0.75f);
    c = config(PLAN_OPT_ADAM);
    c.lr = 100;
    float st[2] = {0};
    p[0] = 1;
    rt_optim_step(&c, p, g, st, 1, 1, 0.25);
    near(p[0], 1 - 0.25 / (1 + 1e-8), "adam lr argument", 1, 0);
}
END_TEST

START_TEST(lr_constant)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    c.lr = 0.05;
    ck_assert(rt_lr_at(&c, 0) == 0.05);
    ck_assert(rt_lr_at(&c, 57) == 0.05);
    ck_assert(rt_lr_at(&c, 1000) == 0.05);
    c.warmup = 10; /* ignored without cosine */
    ck_assert(rt_lr_at(&c, 0) == 0.05);
}
END_TEST

START_TEST(lr_cosine)
{
    PlanConfig c = config(PLAN_OPT_SGD);
    c.lr = 1.0, c.min_lr = 0.1, c.warmup = 10, c.steps = 110, c.lr_schedule = PLAN_LR_COSINE;
    near(rt_lr_at(&c, 0), 0.1, "warmup, step 0: lr / warmup", 0, 0);
    near(rt_lr_at(&c, 4), 0.5, "warmup, step 4", 4, 0);
    near(rt_lr_at(&c, 9), 1.0, "warmup - 1: the full lr", 9, 0);
    near(rt_lr_at(&c, 10), 1.0, "warmup: cosine starts at lr", 10, 0);
    near(rt_lr_at(&c, 60), 0.55, "middle: halfway between", 60, 0);
    double last = 0.1 + 0.9 * (1 + cos(3.14159265358979323846 * 99 / 100)) / 2;
    near(rt_lr_at(&c, 109), last, "last step", 109, 0);
    ck_assert(rt_lr_at(&c, 109) > 0.1 && rt_lr_at(&c, 109) < 0.11);
    /* past the end: min_lr, not a cosine climbing back */
    near(rt_lr_at(&c, 110), 0.1, "steps", 110, 0);
    near(rt_lr_at(&c, 500), 0.1, "past steps", 500, 0);
    /* monotone after warmup */
    for (int64_t s = 10; s < 110; s++)
        ck_assert(rt_lr_at(&c, s + 1) <= rt_lr_at(&c, s));
    /* no warmup: step 0 is the full lr */
    c.warmup = 0;
    near(rt_lr_at(&c, 0), 1.0, "no warmup, step 0", 0, 0);
    near(rt_lr_at(&c, 55), 0.55, "no warmup, middle", 55, 0);
    /* warmup as long as training: no division by zero */
    c.warmup = 110;
    near(rt_lr_at(&c, 109), 1.0, "warmup = steps, last", 109, 0);
    ck_assert(isfinite(rt_lr_at(&c, 110)));
}
END_TEST

START_TEST(clipping)
{
    float g[2] = {3, 4};
    ck_assert(rt_sumsq(g, 2) == 25.0);
    ck_assert(rt_sumsq(g, 0) == 0.0);
    double norm = sqrt(rt_sumsq(g, 2));
    double f = rt_clip_factor(norm, 1.0);
    near(f, 1.0 / (5.0 + 1e-6), "clip factor", 0, 0);
    rt_scale(g, 2, (float)f);
    near(g[0], 3.0 / (5 + 1e-6), "clipped", 0, 0);
    near(g[1], 4.0 / (5 + 1e-6), "clipped", 0, 1);
    near(sqrt(rt_sumsq(g, 2)), 1.0, "clipped norm", 0, 0);
    /* below the limit: untouched (clamped to 1, never scaled up) */
    ck_assert(rt_clip_factor(0.5, 1.0) == 1.0);
    ck_assert(rt_clip_factor(0.0, 1.0) == 1.0);
    /* exactly at the limit, the 1e-6 still scales a hair down, as PyTorch */
    ck_assert(rt_clip_factor(1.0, 1.0) < 1.0);
    /* a NaN norm is passed on as PyTorch does (error_if_nonfinite=False) */
    ck_assert(isnan(rt_clip_factor(NAN, 1.0)));
    /* a double sum: a float accumulator stalls at 2^24 (2^24 + 1 rounds
     * back to 2^24) */
    int64_t n = (1 << 24) + 8;
    float *ones = malloc((size_t)n * sizeof *ones);
    ck_assert_ptr_nonnull(ones);
    for (int64_t i = 0; i < n; i++)
        ones[i] = 1.0f;
    ck_assert(rt_sumsq(ones, n) == (double)n);
    free(ones);
    /* lanes and a tail: within a double's rounding of the exact sum, and a
     * NaN or infinity anywhere shows (the non-finite check reads it) */
    float v[1003];
    long double exact = 0;
    for (int i = 0; i < 1003; i++) {
        v[i] = (float)((i * 7919) % 1000) / 37.0f - 13.0f;
        exact += (long double)v[i] * v[i];
    }
    for (int len = 0; len <= 17; len++) {
        long double e = 0;
        for (int i = 0; i < len; i++)
            e += (long double)v[i] * v[i];
        ck_assert(fabsl(rt_sumsq(v, len) - e) <= 1e-15L * e);
    }
    ck_assert(fabsl(rt_sumsq(v, 1003) - exact) <= 1e-15L * exact);
    v[1002] = NAN;
    ck_assert(isnan(rt_sumsq(v, 1003)));
    v[1002] = INFINITY;
    ck_assert(isinf(rt_sumsq(v, 1003)));
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, state_sizes);
    tcase_add_test(tc, sgd_plain);
    tcase_add_test(tc, sgd_momentum_first_step);
    tcase_add_test(tc, sgd_nesterov);
    tcase_add_test(tc, sgd_weight_decay);
    tcase_add_test(tc, adam_steps);
    tcase_add_test(tc, adam_weight_decay);
    tcase_add_test(tc, adamw_decoupled);
    tcase_add_test(tc, step_lr_argument);
    tcase_add_test(tc, lr_constant);
    tcase_add_test(tc, lr_cosine);
    tcase_add_test(tc, clipping);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(optim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
