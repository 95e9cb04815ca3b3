/* runtime/rt_optim.h: optimizers with PyTorch's exact semantics (one
 * parameter group), learning-rate schedules, and gradient-norm clipping.
 *
 *   SGD    g += wd * p; with momentum: buf = g on the first step, else
 *          buf = momentum * buf + g (dampening 0); nesterov: g += momentum *
 *          buf, else g = buf; p -= lr * g
 *   Adam   g += wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 *          p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   AdamW  p *= 1 - lr * wd; then Adam without the wd term
 * t counts optimizer steps from 1. Arithmetic in float32 in PyTorch's order
 * (torch.optim's single-tensor implementation), so results agree closely. */
#ifndef PIPE_RT_OPTIM_H
#define PIPE_RT_OPTIM_H

#include <stdint.h>

#include "plan_config.h"

/* State floats per parameter: SGD with momentum 1, Adam/AdamW 2, else 0. */
int rt_optim_state_per_param(const PlanConfig *c);
/* One step over n parameters. state holds rt_optim_state_per_param(c) * n
 * floats, zeroed before the first step; t is the step number from 1; lr
 * the learning rate for this step. */
void rt_optim_step(const PlanConfig *c, float *p, const float *g, float *state, int64_t n, int64_t t, double lr);

/* The learning rate at step (from 0): constant, or cosine(warmup, min_lr):
 * lr * (step + 1) / warmup while step < warmup, then
 * min_lr + (lr - min_lr) * (1 + cos(pi * (step - warmup) / (steps - warmup))) / 2. */
double rt_lr_at(const PlanConfig *c, int64_t step);

/* Sum of squares of g (in double), for the global gradient norm. */
double rt_sumsq(const float *g, int64_t n);
/* PyTorch's clip_grad_norm_: the factor to multiply every gradient by,
 * min(1, max_norm / (total_norm + 1e-6)). */
double rt_clip_factor(double total_norm, double max_norm);
void rt_scale(float *g, int64_t n, float factor);

/* ---- Added to the contract (optimizer/checkpoint work): notes only -------
 * State layout, for checkpoints: SGD's momentum buffer is state[0, n);
 * Adam's and AdamW's exp_avg is state[0, n) and exp_avg_sq state[n, 2n).
 * SGD's "first step" is t == 1, not an all-zero buffer, so a resumed run
 * must restore both t and the state.
 * rt_lr_at past the schedule (step >= steps, or steps <= warmup after the
 * warmup) returns min_lr instead of dividing by zero or rising again. */

#endif
