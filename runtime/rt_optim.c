/* runtime/rt_optim.c: SGD, Adam and AdamW as torch.optim (PyTorch 1.13)
 * computes them in its single-tensor (foreach=False) code on the CPU, the
 * learning-rate schedules, and clip_grad_norm_'s factor (see rt_optim.h).
 *
 * Bit-for-bit agreement with PyTorch is the aim, so every float operation
 * below is one of PyTorch's, in its order and with its rounding:
 *   - Python floats are doubles: bias corrections, step sizes and
 *     1 - beta are computed in double and rounded to float only where
 *     torch hands them to a float kernel as a Scalar.
 *   - torch's `x.add(y, alpha=a)` is a fused multiply-add, y * a + x,
 *     rounded once (ufunc::add is vec::fmadd; the scalar tail is contracted
 *     too), and `x.addcmul(y, z, value=v)` is fma(v * y, z, x). We call
 *     fmaf() for exactly those; glibc runs it on the FMA unit when there is
 *     one and emulates it exactly when not.
 *   - `addcdiv` is x + (v * y) / z with three roundings, and division by a
 *     scalar is a true division, not a multiplication by the reciprocal.
 * Everything else must not be contracted into an FMA by the compiler: the
 * target builds with -ffp-contract=off (and C11 mode implies it for GCC).
 * tests/parity/test_optim.py holds this against torch.optim.
 *
 * State layout (rt_optim_state_per_param floats per parameter): SGD with
 * momentum keeps the momentum buffer in state[0, n); Adam and AdamW keep
 * exp_avg in state[0, n) and exp_avg_sq in state[n, 2n). */
#include "rt_optim.h"

#include "plan_memory.h"

#include <math.h>

/* The update loops are built twice more for x86-64 CPUs with AVX2 and FMA
 * (v3) and with AVX-512 (v4), picked at load time (an ifunc): there fmaf
 * is one instruction instead of a call into libm, and the loops vectorise.
 * Each element's arithmetic is the same operations in the same order (the
 * explicit fmaf calls stay the only fused ones: -ffp-contract=off), so the
 * bits are the same on every CPU; sqrtf is correctly rounded either way
 * (the library is built with -fno-math-errno so that it can be inlined). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(PIPE_NO_CLONES)
#define UPDATE_LOOP __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define UPDATE_LOOP
#endif

/* M_PI is XSI, not C11 or POSIX; the build asks only for POSIX. */
static const double rt_pi = 3.14159265358979323846;

int rt_optim_state_per_param(const PlanConfig *c)
{
    return plan_optim_state_per_param(c); /* the memory planner's answer, so both agree */
}

/* torch.optim.sgd._single_tensor_sgd with dampening 0, maximize False. */
UPDATE_LOOP static void sgd_step(const PlanConfig *c, float *p, const float *g, float *buf, int64_t n, int64_t t, double lr)
{
    const float wd = (float)c->weight_decay, mom = (float)c->momentum, neg_lr = (float)-lr;
    const int use_wd = c->weight_decay != 0, use_mom = c->momentum != 0, nesterov = c->nesterov;
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (use_wd)
            d = fmaf(p[i], wd, d);          /* d_p = d_p.add(param, alpha=wd) */
        if (use_mom) {
            float b;
            if (t <= 1)
                b = d;                      /* buf = clone(d_p) */
            else
                b = buf[i] * mom + d;       /* buf.mul_(momentum).add_(d_p, alpha=1): alpha 1 is exact */
            buf[i] = b;
            d = nesterov ? fmaf(b, mom, d) : b; /* d_p.add(buf, alpha=momentum), or buf */
        }
        p[i] = fmaf(d, neg_lr, p[i]);       /* param.add_(d_p, alpha=-lr) */
    }
}

/* torch.optim.adam._single_tensor_adam (amsgrad False, not capturable), and
 * _single_tensor_adamw, which decays the parameter first instead of adding
 * weight_decay * p to the gradient. */
UPDATE_LOOP static void adam_step(const PlanConfig *c, int decoupled, float *p, const float *g, float *m, float *v, int64_t n, int64_t t,
                      double lr)
{
    const double b1 = c->beta1, b2 = c->beta2;
    const float wd = (float)c->weight_decay, b1f = (float)b1, b2f = (float)b2;
    const float one_b1 = (float)(1 - b1), one_b2 = (float)(1 - b2), eps = (float)c->eps;
    /* step = step_t.item() is a Python float, so beta ** step is pow() of
     * two doubles, as Python computes it. */
    const double step = (double)t;
    const double bias_correction1 = 1 - pow(b1, step);
    const double bias_correction2 = 1 - pow(b2, step);
    const double step_size = lr / bias_correction1;
    const float neg_step = (float)-step_size;
    const float bc2_sqrt = (float)sqrt(bias_correction2);
    const float decay = (float)(1 - lr * c->weight_decay); /* AdamW: param.mul_(1 - lr * weight_decay) */
    const int use_wd = !decoupled && c->weight_decay != 0;
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], d = g[i];
        if (decoupled)
            pi = pi * decay;                /* always, as torch does, even for weight_decay 0 */
        else if (use_wd)
            d = fmaf(pi, wd, d);            /* grad = grad.add(param, alpha=weight_decay) */
        float mi = fmaf(d, one_b1, m[i] * b1f);         /* exp_avg.mul_(beta1).add_(grad, alpha=1-beta1) */
        float vi = fmaf(one_b2 * d, d, v[i] * b2f);     /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2) */
        float denom = sqrtf(vi) / bc2_sqrt + eps;       /* (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps) */
        p[i] = pi + (neg_step * mi) / denom;            /* param.addcdiv_(exp_avg, denom, value=-step_size) */
        m[i] = mi;
        v[i] = vi;
    }
}

void rt_optim_step(const PlanConfig *c, float *p, const float *g, float *state, int64_t n, int64_t t, double lr)
{
    switch (c->optimizer) {
    case PLAN_OPT_SGD:
        sgd_step(c, p, g, state, n, t, lr);
        break;
    case PLAN_OPT_ADAM:
        adam_step(c, 0, p, g, state, state + n, n, t, lr);
        break;
    case PLAN_OPT_ADAMW:
        adam_step(c, 1, p, g, state, state + n, n, t, lr);
        break;
    default:
        break;
    }
}

double rt_lr_at(const PlanConfig *c, int64_t step)
{
    if (c->lr_schedule != PLAN_LR_COSINE)
        return c->lr;
    if (step < c->warmup)
        return c->lr * (double)(step + 1) / (double)c->warmup;
    /* Past the last step (or with no steps after warmup) the cosine has
     * run its course: min_lr, rather than a division by zero or a cosine
     * that climbs back up. */
    double span = (double)(c->steps - c->warmup);
    double progress = span > 0 ? (double)(step - c->warmup) / span : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    return c->min_lr + (c->lr - c->min_lr) * (1 + cos(rt_pi * progress)) / 2;
}

UPDATE_LOOP double rt_sumsq(const float *g, int64_t n)
{
    /* In double, in eight lanes (element i in lane i mod 8, the lanes
     * added in a fixed tree at the end): the same sum for the same tensor
     * on every rank, schedule and stage count, and lanes that vectorise
     * instead of one chain of dependent additions. */
    double lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += (double)g[i + j] * (double)g[i + j];
    for (int j = 0; i < n; i++, j++)
        lane[j] += (double)g[i] * (double)g[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

double rt_clip_factor(double total_norm, double max_norm)
{
    double coef = max_norm / (total_norm + 1e-6);
    /* torch.clamp(coef, max=1.0): a NaN norm stays NaN and poisons the
     * gradients, as clip_grad_norm_ does with error_if_nonfinite=False;
     * `coef > 1` is false for NaN, so NaN passes through. */
    return coef > 1.0 ? 1.0 : coef;
}

void rt_scale(float *g, int64_t n, float factor)
{
    for (int64_t i = 0; i < n; i++)
        g[i] *= factor;
}
