/* kernels/cuda/kc_optim.cu: SGD, Adam and AdamW as fused elementwise
 * kernels, and the gradient scale of clipping.
 *
 * The formulas and their float order are runtime/rt_optim.c's (which
 * follows torch.optim's single-tensor code): the scalars are computed on the
 * host in double exactly as there and rounded to float where it rounds
 * them, and each element goes through the same float operations. Products,
 * sums, quotients and square roots are written as the _rn intrinsics (never
 * contracted, IEEE rounding), fmaf where rt_optim.c calls fmaf: the same
 * bits as the CPU step. */
#include "kc_internal.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* torch.optim.sgd._single_tensor_sgd, dampening 0 */
static __global__ void g_sgd(float *p, const float *g, float *buf, int64_t n, float wd, float mom, float neg_lr,
                             int use_wd, int use_mom, int nesterov, int first)
{
    GRID_STRIDE(i, n)
    {
        float d = g[i];
        if (use_wd)
            d = fmaf(p[i], wd, d);
        if (use_mom) {
            float b = first ? d : __fadd_rn(__fmul_rn(buf[i], mom), d);
            buf[i] = b;
            d = nesterov ? fmaf(b, mom, d) : b;
        }
        p[i] = fmaf(d, neg_lr, p[i]);
    }
}

/* torch.optim.adam._single_tensor_adam / _single_tensor_adamw */
static __global__ void g_adam(float *p, const float *g, float *m, float *v, int64_t n, int decoupled, int use_wd,
                              float wd, float decay, float b1f, float b2f, float one_b1, float one_b2, float eps,
                              float neg_step, float bc2_sqrt)
{
    GRID_STRIDE(i, n)
    {
        float pi = p[i], d = g[i];
        if (decoupled)
            pi = __fmul_rn(pi, decay);
        else if (use_wd)
            d = fmaf(pi, wd, d);
        float mi = fmaf(d, one_b1, __fmul_rn(m[i], b1f));
        float vi = fmaf(__fmul_rn(one_b2, d), d, __fmul_rn(v[i], b2f));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(neg_step, mi), denom));
        m[i] = mi;
        v[i] = vi;
    }
}

static __global__ void g_scale(float *g, int64_t n, float factor)
{
    GRID_STRIDE(i, n)
    g[i] = __fmul_rn(g[i], factor);
}

int kc_optim_state_per_param(const KcOptim *o)
{
    switch (o->kind) {
    case KC_SGD:
        return o->momentum != 0 ? 1 : 0;
    case KC_ADAM:
    case KC_ADAMW:
        return 2;
    }
    return 0;
}

int kc_optim_step(KcCtx *ctx, const KcOptim *o, float *p, const float *g, float *state, int64_t n, int64_t t,
                  double lr)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && t >= 1, "optimizer size and step");
    unsigned grid = kc_grid(ctx, n);
    if (o->kind == KC_SGD) {
        const float wd = (float)o->weight_decay, mom = (float)o->momentum, neg_lr = (float)-lr;
        g_sgd<<<grid, KC_THREADS, 0, ctx->stream>>>(p, g, state, n, wd, mom, neg_lr, o->weight_decay != 0,
                                                    o->momentum != 0, o->nesterov, t <= 1);
        KC_LAUNCHED(ctx, g_sgd);
        return KC_OK;
    }
    KC_ARG(ctx, o->kind == KC_ADAM || o->kind == KC_ADAMW, "optimizer kind");
    const int decoupled = o->kind == KC_ADAMW;
    const double b1 = o->beta1, b2 = o->beta2;
    const float wd = (float)o->weight_decay, b1f = (float)b1, b2f = (float)b2;
    const float one_b1 = (float)(1 - b1), one_b2 = (float)(1 - b2), eps = (float)o->eps;
    const double step = (double)t;
    const double bias_correction1 = 1 - pow(b1, step);
    const double bias_correction2 = 1 - pow(b2, step);
    const double step_size = lr / bias_correction1;
    const float neg_step = (float)-step_size;
    const float bc2_sqrt = (float)sqrt(bias_correction2);
    const float decay = (float)(1 - lr * o->weight_decay);
    const int use_wd = !decoupled && o->weight_decay != 0;
    g_adam<<<grid, KC_THREADS, 0, ctx->stream>>>(p, g, state, state + n, n, decoupled, use_wd, wd, decay, b1f, b2f,
                                                 one_b1, one_b2, eps, neg_step, bc2_sqrt);
    KC_LAUNCHED(ctx, g_adam);
    return KC_OK;
}

int kc_scale(KcCtx *ctx, float *g, int64_t n, float factor)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "scale size");
    g_scale<<<kc_grid(ctx, n), KC_THREADS, 0, ctx->stream>>>(g, n, factor);
    KC_LAUNCHED(ctx, g_scale);
    return KC_OK;
}
