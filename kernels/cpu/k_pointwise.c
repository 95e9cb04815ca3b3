/* kernels/cpu/k_pointwise.c: the CPU kernels that are not a convolution, a
 * linear layer or a pooling: activations (relu, gelu, tanh, sigmoid),
 * dropout's apply step, layernorm, rmsnorm, embedding, the attention core
 * of transformer_block, llama_block's RoPE and SwiGLU, and the losses
 * (cross-entropy, mse).
 *
 * The math follows PyTorch's definitions (ATen's CPU kernels, where the
 * order of operations is cheap to copy). Reductions use the fixed-order sums
 * of k_reduce.h (short float chains, totals in double): deterministic
 * whatever the compiler vectorises, and at least as accurate as PyTorch's.
 */
#include "k_cpu.h"
#include "k_reduce.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* BLAS takes int dimensions */
#define K_BLAS_INT(x) (assert((x) >= 0 && (x) <= 0x7fffffff && "dimension fits a BLAS int"), (int)(x))

/* ---- elementwise -------------------------------------------------------------- */

K_VEC_LOOP void k_add_into(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

K_VEC_LOOP void k_relu_forward(float *out, const float *in, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

K_VEC_LOOP void k_relu_backward(float *din, const float *dout, const float *in, int64_t n)
{
    /* load dout unconditionally: a select the compiler vectorises, where a
     * conditional load stays a scalar branch (20x slower); same bits */
    for (int64_t i = 0; i < n; i++) {
        float d = dout[i];
        din[i] = in[i] > 0.0f ? d : 0.0f;
    }
}


/* e^x in plain arithmetic, so that a loop calling it vectorises (libm's
 * expf is a call per element): x = k ln 2 + r with k = round(x / ln 2),
 * ln 2 in two parts so that r is exact, |r| <= ln 2 / 2, then e^r by the
 * minimax polynomial of Cephes' expf (S. L. Moshier, Cephes Math Library;
 * relative error about 1e-7, tests/test_kernels.c holds it within 2 ulp of
 * libm's expf over [-87, 88]), times 2^k built in the exponent bits (as
 * 2^(k-1) x 2 for k > 0, so that k = 128 does not overflow early). Above
 * 88.72283 it is +inf, below -87.33654 (where e^x leaves the normal
 * floats) 0, NaN for NaN: the GELU form below needs no more. The clamp is
 * a max and a min in the form x86's maxps/minps compute (a NaN takes the
 * low end, so the conversion to int never sees one); the ends and NaN are
 * then put back by three selects, which a loop keeps as blends: a
 * standalone check over all 2^32 inputs gave the bits of the nested
 * selects this replaced, 7-9% faster in GELU's loops. */
static inline float k_expf(float x)
{
    float c = x > -87.33654f ? x : -87.33654f;
    c = c < 88.72283f ? c : 88.72283f;
    float t = c * 1.44269504088896341f + 12582912.0f; /* 1.5 x 2^23: rounds to an integer */
    float k = t - 12582912.0f;
    float r = c - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ki = (int32_t)k, pos = ki > 0;
    union {
        int32_t i;
        float f;
    } two = {.i = (ki - pos + 127) << 23}, one = {.i = (pos + 127) << 23}; /* 2^(k - pos), 2^pos */
    float e = p * two.f * one.f;
    e = x < -87.33654f ? 0.0f : e;
    e = x > 88.72283f ? __builtin_inff() : e;
    return x == x ? e : x; /* NaN in, NaN out (the NaN vote sees it) */
}

/* for tests/test_kernels.c */
float k_expf_probe(float x)
{
    return k_expf(x);
}

/* y[j] = e^(x[j] - shift), the softmaxes' exponentials (y may be x) */
K_VEC_LOOP static void exp_shifted(float *y, const float *x, int64_t n, float shift)
{
    for (int64_t j = 0; j < n; j++)
        y[j] = k_expf(x[j] - shift);
}

/* sqrt(2 / pi) and the cubic coefficient, as ATen's GeluKernel writes them */
#define K_GELU_BETA 0.7978845608028654f
#define K_GELU_KAPPA 0.044715f

/* 0.5 x (1 + tanh(u)) is x sigmoid(2u) exactly, and expf is several times
 * faster than tanhf (GELU runs over every MLP activation); the sigmoid form
 * also avoids the cancellation in 1 + tanh(u) for negative u. */
K_VEC_LOOP void k_gelu_forward(float *out, const float *in, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = in[i];
        float u = K_GELU_BETA * (x + K_GELU_KAPPA * x * x * x);
        out[i] = x / (1.0f + k_expf(-2.0f * u)); /* x / inf = -0 far left */
    }
}

/* d/dx of 0.5 x (1 + tanh(u(x))) = 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x),
 * with s = sigmoid(2u): 0.5 (1 + t) = s and 1 - t^2 = 4 s (1 - s) */
K_VEC_LOOP void k_gelu_backward(float *din, const float *dout, const float *in, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = in[i], x2 = x * x;
        float u = K_GELU_BETA * (x + K_GELU_KAPPA * x2 * x);
        float du = K_GELU_BETA * (1.0f + 3.0f * K_GELU_KAPPA * x2);
        float s = 1.0f / (1.0f + k_expf(-2.0f * u));
        din[i] = dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
    }
}

void k_tanh_forward(float *out, const float *in, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = tanhf(in[i]);
}

K_VEC_LOOP void k_tanh_backward(float *din, const float *dout, const float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        din[i] = dout[i] * (1.0f - out[i] * out[i]);
}

K_VEC_LOOP void k_sigmoid_forward(float *out, const float *in, int64_t n)
{
    /* e^-x is +inf for x < -88.72: 1 / inf = 0, the right limit */
    for (int64_t i = 0; i < n; i++)
        out[i] = 1.0f / (1.0f + k_expf(-in[i]));
}

K_VEC_LOOP void k_sigmoid_backward(float *din, const float *dout, const float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        din[i] = dout[i] * (1.0f - out[i]) * out[i];
}

/* PyTorch multiplies by a noise tensor holding 0 or 1/(1-p) (in float), so
 * we do too: a NaN or inf input stays NaN where it is dropped, as there. */
K_VEC_LOOP void k_dropout_forward(float *out, const float *in, const uint8_t *mask, float p, int64_t n)
{
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        out[i] = in[i] * (mask[i] ? keep : 0.0f);
}

K_VEC_LOOP void k_dropout_backward(float *din, const float *dout, const uint8_t *mask, float p, int64_t n)
{
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        din[i] = dout[i] * (mask[i] ? keep : 0.0f);
}

/* ---- layernorm ---------------------------------------------------------------- */
/* Row sums go through k_block_sum (k_reduce.h) one block of K_BLOCK terms
 * at a time, the terms first written to a stack block: one definition of
 * the summation order, vectorised, in L1. */

/* Two passes (mean, then the biased variance around it) so a large offset
 * does not cancel; w or b NULL mean 1 and 0. */
K_VEC_LOOP void k_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                                    const float *b, int64_t n, int64_t d, float eps)
{
    float t[K_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const float *x = in + i * d; /* (D) */
        float *y = out + i * d;
        double m = k_row_sum(x, d) / (double)d;
        float mf = (float)m;
        double v = 0.0;
        for (int64_t j0 = 0; j0 < d; j0 += K_BLOCK) {
            int64_t len = d - j0 < K_BLOCK ? d - j0 : K_BLOCK;
            for (int64_t j = 0; j < len; j++) {
                float c = x[j0 + j] - mf;
                t[j] = c * c;
            }
            v += k_block_sum(t, len);
        }
        float rf = (float)(1.0 / sqrt(v / (double)d + (double)eps));
        mean[i] = mf, rstd[i] = rf;
        /* the backward recomputes xhat from the saved float mean and rstd,
         * so the forward uses the same values */
        if (w && b) {
            for (int64_t j = 0; j < d; j++)
                y[j] = (x[j] - mf) * rf * w[j] + b[j];
        } else {
            for (int64_t j = 0; j < d; j++)
                y[j] = (x[j] - mf) * rf * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
        }
    }
}

/* din = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * w */
K_VEC_LOOP void k_layernorm_backward_input(float *din, const float *dout, const float *in, const float *w,
                                           const float *mean, const float *rstd, int64_t n, int64_t d)
{
    float tg[K_BLOCK], tgx[K_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const float *x = in + i * d, *dy = dout + i * d;
        float *dx = din + i * d;
        float mf = mean[i], rf = rstd[i];
        double sg = 0.0, sgx = 0.0;
        for (int64_t j0 = 0; j0 < d; j0 += K_BLOCK) {
            int64_t len = d - j0 < K_BLOCK ? d - j0 : K_BLOCK;
            for (int64_t j = 0; j < len; j++) {
                float g = dy[j0 + j] * (w ? w[j0 + j] : 1.0f);
                tg[j] = g;
                tgx[j] = g * ((x[j0 + j] - mf) * rf);
            }
            sg += k_block_sum(tg, len);
            sgx += k_block_sum(tgx, len);
        }
        float mg = (float)(sg / (double)d), mgx = (float)(sgx / (double)d);
        for (int64_t j = 0; j < d; j++) {
            float xh = (x[j] - mf) * rf;
            float g = dy[j] * (w ? w[j] : 1.0f);
            dx[j] = rf * (g - mg - xh * mgx);
        }
    }
}

/* dw += column sums of dout * xhat, db += column sums of dout, in the order
 * of k_colsum_add (K_ROWS rows in float, then double) but over up to
 * K_LN_COLS columns at once: rows up to that width are read in one sweep,
 * which matters once N x D outgrows the caches. */
#define K_LN_COLS 1024 /* 24 KiB of stack */

K_VEC_LOOP void k_layernorm_backward_weight(float *dw, float *db, const float *dout, const float *in,
                                            const float *mean, const float *rstd, int64_t n, int64_t d)
{
    double aw[K_LN_COLS], ab[K_LN_COLS];
    float fw[K_LN_COLS], fb[K_LN_COLS];
    for (int64_t j0 = 0; j0 < d; j0 += K_LN_COLS) {
        int64_t m = d - j0 < K_LN_COLS ? d - j0 : K_LN_COLS;
        memset(aw, 0, sizeof aw), memset(ab, 0, sizeof ab);
        for (int64_t i0 = 0; i0 < n; i0 += K_ROWS) {
            int64_t i1 = n - i0 < K_ROWS ? n : i0 + K_ROWS;
            memset(fw, 0, sizeof fw), memset(fb, 0, sizeof fb);
            for (int64_t i = i0; i < i1; i++) {
                const float *x = in + i * d + j0, *dy = dout + i * d + j0;
                float mf = mean[i], rf = rstd[i];
                for (int64_t j = 0; j < m; j++) {
                    fw[j] += dy[j] * ((x[j] - mf) * rf);
                    fb[j] += dy[j];
                }
            }
            for (int64_t j = 0; j < m; j++)
                aw[j] += fw[j], ab[j] += fb[j];
        }
        for (int64_t j = 0; j < m; j++) {
            if (dw)
                dw[j0 + j] += (float)aw[j];
            if (db)
                db[j0 + j] += (float)ab[j];
        }
    }
}

/* ---- rmsnorm ------------------------------------------------------------------------
 * The sum of squares goes through k_block_sum (k_reduce.h) as layernorm's
 * sums do; rstd is computed in double and rounded once to float, and the
 * backward recomputes xhat = x * rstd from that float, as the forward. */

K_VEC_LOOP void k_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d,
                                  float eps)
{
    float t[K_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const float *x = in + i * d; /* (D) */
        float *y = out + i * d;
        double s = 0.0;
        for (int64_t j0 = 0; j0 < d; j0 += K_BLOCK) {
            int64_t len = d - j0 < K_BLOCK ? d - j0 : K_BLOCK;
            for (int64_t j = 0; j < len; j++)
                t[j] = x[j0 + j] * x[j0 + j];
            s += k_block_sum(t, len);
        }
        float rf = (float)(1.0 / sqrt(s / (double)d + (double)eps));
        rstd[i] = rf;
        /* HF: weight * (x * rsqrt(...)) */
        if (w) {
            for (int64_t j = 0; j < d; j++)
                y[j] = (x[j] * rf) * w[j];
        } else {
            for (int64_t j = 0; j < d; j++)
                y[j] = x[j] * rf;
        }
    }
}

K_VEC_LOOP void k_rmsnorm_backward_input(float *din, const float *dout, const float *in, const float *w,
                                         const float *rstd, int64_t n, int64_t d)
{
    float tgx[K_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const float *x = in + i * d, *dy = dout + i * d;
        float *dx = din + i * d;
        float rf = rstd[i];
        double sgx = 0.0;
        for (int64_t j0 = 0; j0 < d; j0 += K_BLOCK) {
            int64_t len = d - j0 < K_BLOCK ? d - j0 : K_BLOCK;
            for (int64_t j = 0; j < len; j++) {
                float g = dy[j0 + j] * (w ? w[j0 + j] : 1.0f);
                tgx[j] = g * (x[j0 + j] * rf);
            }
            sgx += k_block_sum(tgx, len);
        }
        float mgx = (float)(sgx / (double)d);
        for (int64_t j = 0; j < d; j++) {
            float xh = x[j] * rf;
            float g = dy[j] * (w ? w[j] : 1.0f);
            dx[j] = rf * (g - xh * mgx);
        }
    }
}

/* dw += column sums of dout * xhat, in layernorm's order (K_ROWS rows in
 * float, then double), K_RMS_COLS columns at a time */
#define K_RMS_COLS 1024 /* 12 KiB of stack */

K_VEC_LOOP void k_rmsnorm_backward_weight(float *dw, const float *dout, const float *in, const float *rstd, int64_t n,
                                          int64_t d)
{
    double aw[K_RMS_COLS];
    float fw[K_RMS_COLS];
    for (int64_t j0 = 0; j0 < d; j0 += K_RMS_COLS) {
        int64_t m = d - j0 < K_RMS_COLS ? d - j0 : K_RMS_COLS;
        memset(aw, 0, sizeof aw);
        for (int64_t i0 = 0; i0 < n; i0 += K_ROWS) {
            int64_t i1 = n - i0 < K_ROWS ? n : i0 + K_ROWS;
            memset(fw, 0, sizeof fw);
            for (int64_t i = i0; i < i1; i++) {
                const float *x = in + i * d + j0, *dy = dout + i * d + j0;
                float rf = rstd[i];
                for (int64_t j = 0; j < m; j++)
                    fw[j] += dy[j] * (x[j] * rf);
            }
            for (int64_t j = 0; j < m; j++)
                aw[j] += fw[j];
        }
        for (int64_t j = 0; j < m; j++)
            dw[j0 + j] += (float)aw[j];
    }
}

/* ---- rotary position embedding ----------------------------------------------------------
 * Torch's float32 steps for HF's LlamaRotaryEmbedding: arange(0, hd, 2) / hd
 * in float, theta ** that, its reciprocal, times the position, cos and
 * sin; each one float operation here (powf, cosf, sinf: glibc's, within an
 * ulp of torch's). */

void k_rope_table(float *cosv, float *sinv, int64_t t, int64_t hd, float theta)
{
    int64_t half = hd / 2;
    for (int64_t i = 0; i < half; i++) {
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        for (int64_t p = 0; p < t; p++) {
            float a = (float)p * inv;
            cosv[p * half + i] = cosf(a);
            sinv[p * half + i] = sinf(a);
        }
    }
}

K_VEC_LOOP void k_rope_forward(float *x, int64_t n, int64_t ld, int64_t t, int64_t heads, int64_t hd,
                               const float *cosv, const float *sinv)
{
    int64_t half = hd / 2;
    for (int64_t r = 0; r < n; r++) {
        const float *c = cosv + (r % t) * half, *s = sinv + (r % t) * half;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + r * ld + h * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];        /* q cos + (-q2) sin */
                v[i + half] = b * c[i] + a * s[i]; /* q2 cos + q1 sin */
            }
        }
    }
}

K_VEC_LOOP void k_rope_backward(float *dx, int64_t n, int64_t ld, int64_t t, int64_t heads, int64_t hd,
                                const float *cosv, const float *sinv)
{
    int64_t half = hd / 2;
    for (int64_t r = 0; r < n; r++) {
        const float *c = cosv + (r % t) * half, *s = sinv + (r % t) * half;
        for (int64_t h = 0; h < heads; h++) {
            float *v = dx + r * ld + h * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] + b * s[i];
                v[i + half] = b * c[i] - a * s[i];
            }
        }
    }
}

/* ---- SwiGLU ----------------------------------------------------------------------------- */

K_VEC_LOOP void k_swiglu_forward(float *act, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + k_expf(-g)) * up[i];
    }
}

/* ATen's silu_backward: dy * s * (1 + x * (1 - s)), left to right */
K_VEC_LOOP void k_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                  int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], da = dact[i];
        float e = 1.0f + k_expf(-g);
        float s = 1.0f / e;
        dup[i] = da * (g / e);
        dgate[i] = da * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

/* ---- embedding ------------------------------------------------------------------ */

K_VEC_LOOP void k_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                                    int64_t t, int64_t d)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < t; i++) {
            const float *e = wte + (int64_t)tokens[b * t + i] * d; /* (D) */
            float *o = out + (b * t + i) * d;
            if (wpe) {
                const float *pe = wpe + i * d;
                for (int64_t j = 0; j < d; j++)
                    o[j] = e[j] + pe[j];
            } else {
                memcpy(o, e, (size_t)d * sizeof(float));
            }
        }
}

/* Plain float adds straight into the gradients, in (b, t) order: the order
 * is the contract (repeated tokens), and it is the same on every call. */
K_VEC_LOOP void k_embedding_backward_weight(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                            int64_t B, int64_t t, int64_t d)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < t; i++) {
            const float *g = dout + (b * t + i) * d;
            if (dwte) {
                float *e = dwte + (int64_t)tokens[b * t + i] * d;
                for (int64_t j = 0; j < d; j++)
                    e[j] += g[j];
            }
            if (dwpe) {
                float *pe = dwpe + i * d;
                for (int64_t j = 0; j < d; j++)
                    pe[j] += g[j];
            }
        }
}

/* Vocabulary-parallel (tensor_parallel with split = vocab): this rank's
 * rows [v0, v0 + nv) of the table; a token outside gives a zero row, so the
 * sum over the ranks is the whole table's row (one row and zeros: exact). */
K_VEC_LOOP void k_embedding_forward_vocab(float *out, const int32_t *tokens, const float *wte, int64_t v0, int64_t nv,
                                          int64_t B, int64_t t, int64_t d)
{
    for (int64_t r = 0; r < B * t; r++) {
        int64_t v = (int64_t)tokens[r] - v0;
        if (v >= 0 && v < nv)
            memcpy(out + r * d, wte + v * d, (size_t)d * sizeof(float));
        else
            memset(out + r * d, 0, (size_t)d * sizeof(float));
    }
}

/* out (B, T, D) += wpe (T, D) at each position: the positions' half of
 * k_embedding_forward, after the vocabulary-parallel sum */
K_VEC_LOOP void k_embedding_add_positions(float *out, const float *wpe, int64_t B, int64_t t, int64_t d)
{
    for (int64_t r = 0; r < B * t; r++) {
        float *o = out + r * d;
        const float *pe = wpe + (r % t) * d;
        for (int64_t j = 0; j < d; j++)
            o[j] = o[j] + pe[j];
    }
}

/* k_embedding_backward_weight's table half for rows [v0, v0 + nv): the
 * same adds in the same (b, t) order, so each row gets the bits it gets
 * from the whole table */
K_VEC_LOOP void k_embedding_backward_weight_vocab(float *dwte, const float *dout, const int32_t *tokens, int64_t v0,
                                                  int64_t nv, int64_t B, int64_t t, int64_t d)
{
    for (int64_t r = 0; r < B * t; r++) {
        int64_t v = (int64_t)tokens[r] - v0;
        if (v < 0 || v >= nv)
            continue;
        float *e = dwte + v * d;
        const float *g = dout + r * d;
        for (int64_t j = 0; j < d; j++)
            e[j] += g[j];
    }
}

/* ---- attention core ----------------------------------------------------------------
 * Per sample b and head h, with hd = D / H and the (T, hd) views
 *     Q = qkv[b, :, h*hd ..],  K = qkv[b, :, D + h*hd ..],  V = qkv[b, :, 2D + h*hd ..]
 * (row stride 3D) and O = out[b, :, h*hd ..] (row stride D):
 *     S = scale Q K^T, P = masked softmax(S) (saved in att), O = P V.
 * All products are cblas_sgemm calls on these strided views. */

/* Query rows per block of the products, both ways. A causal block stops at
 * its last query's key, so the work above the diagonal it still does
 * shrinks with the block: 32 rows against 64 forward and a whole T = 128
 * backward took gpt_tiny's attention (B 4, T 128, D 128, 4 heads, one
 * thread, a standalone loop of 150 calls, three interleaved rounds) from
 * 505 to 480 us forward and 763 to 593 us backward; without a mask the
 * backward was no slower (its dP tile, 32 x T, stays in L1). 16 rows was
 * slower both ways (more, smaller BLAS calls). A multiple of 16: the
 * forward's exps run to the next one past a causal row (its block's
 * product has those scores). */
#define K_ATT_ROWS 32
_Static_assert(K_ATT_ROWS % 16 == 0, "a causal row's vector-wide exps stay inside its block's scores");

/* max of n >= 1 floats over K_LANES lanes: a max does not depend on the
 * order, so the lanes only break the dependency chain */
K_INLINE float row_max(const float *x, int64_t n)
{
    float m[K_LANES];
    for (int k = 0; k < K_LANES; k++)
        m[k] = -INFINITY;
    int64_t j = 0;
    for (; j + K_LANES <= n; j += K_LANES)
        for (int k = 0; k < K_LANES; k++)
            m[k] = x[j + k] > m[k] ? x[j + k] : m[k];
    for (int k = 0; j < n; j++, k++)
        m[k] = x[j] > m[k] ? x[j] : m[k];
    float r = m[0];
    for (int k = 1; k < K_LANES; k++)
        r = m[k] > r ? m[k] : r;
    return r;
}

K_VEC_LOOP void k_attention_forward(float *out, float *att, const float *qkv, const float *mask, int64_t B, int64_t t,
                                    int64_t d, int64_t heads, int causal)
{
    int64_t hd = d / heads, d3 = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    int T = K_BLAS_INT(t), HD = K_BLAS_INT(hd), LD3 = K_BLAS_INT(d3), LD = K_BLAS_INT(d);
    for (int64_t b = 0; b < B; b++) {
        const float *mrow = mask ? mask + b * t : NULL; /* (T) */
        for (int64_t h = 0; h < heads; h++) {
            const float *q = qkv + b * t * d3 + h * hd, *k = q + d, *v = q + 2 * d;
            float *p = att + (b * heads + h) * t * t; /* (T, T) */
            float *o = out + b * t * d + h * hd;
            /* S (T, T) = scale Q K^T; a causal row i needs only keys j <= i,
             * so rows go in blocks of K_ATT_ROWS that stop at the block's
             * last query */
            const int64_t rb = causal ? K_ATT_ROWS : t;
            for (int64_t i0 = 0; i0 < t; i0 += rb) {
                int64_t r = t - i0 < rb ? t - i0 : rb, nk = causal ? i0 + r : t;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)nk, HD, scale, q + i0 * d3, LD3, k,
                            LD3, 0.0f, p + i0 * t, T);
            }
            /* masked softmax of each row: masked scores become -inf, whose
             * exp is exactly 0 */
            for (int64_t i = 0; i < t; i++) {
                float *pr = p + i * t;
                int64_t nj = causal ? i + 1 : t; /* keys from nj on are masked */
                /* the exps and the scaling run on to a whole vector past nj
                 * (its keys' scores exist: a block's product reaches its last
                 * query, K_ATT_ROWS a multiple of 16), zeroed after */
                int64_t nv = (nj + 15) / 16 * 16 < t ? (nj + 15) / 16 * 16 : t;
                if (mrow)
                    for (int64_t j = 0; j < nj; j++)
                        pr[j] = mrow[j] == 0.0f ? -INFINITY : pr[j];
                float mx = row_max(pr, nj);
                if (mx == -INFINITY) { /* every key masked: zeros, not NaN */
                    memset(pr, 0, (size_t)t * sizeof(float));
                    continue;
                }
                exp_shifted(pr, pr, nv, mx);
                float inv = (float)(1.0 / k_row_sum(pr, nj));
                for (int64_t j = 0; j < nv; j++)
                    pr[j] *= inv;
                memset(pr + nj, 0, (size_t)(t - nj) * sizeof(float));
            }
            /* O (T, hd) = P V; causal rows again stop at their last key */
            const int64_t ob = causal ? K_ATT_ROWS : t;
            for (int64_t i0 = 0; i0 < t; i0 += ob) {
                int64_t r = t - i0 < ob ? t - i0 : ob, nk = causal ? i0 + r : t;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, HD, (int)nk, 1.0f, p + i0 * t, T, v,
                            LD3, 0.0f, o + i0 * d, LD);
            }
        }
    }
}

/* sum of a[j] * b[j], in the order of k_row_sum over the products */
static double dot_sum(const float *a, const float *b, int64_t n)
{
    float t[K_BLOCK];
    double s = 0.0;
    for (int64_t j0 = 0; j0 < n; j0 += K_BLOCK) {
        int64_t len = n - j0 < K_BLOCK ? n - j0 : K_BLOCK;
        for (int64_t j = 0; j < len; j++)
            t[j] = a[j0 + j] * b[j0 + j];
        s += k_block_sum(t, len);
    }
    return s;
}

/* One past the last x[j] != 0 with lo <= j < hi (NaN counts), or lo when
 * there is none: from the top, 16 at a time while all are zero (their
 * bits but the sign OR-ed, a reduction the compiler vectorises), then one
 * at a time. A causal row's zeros are most of what the backward scans. */
static int64_t past_last_nonzero(const float *x, int64_t lo, int64_t hi)
{
    int64_t j = hi;
    for (; j - 16 >= lo; j -= 16) {
        uint32_t any = 0;
        for (int k = 0; k < 16; k++) {
            uint32_t u;
            memcpy(&u, x + j - 16 + k, sizeof u);
            any |= u & 0x7fffffffu;
        }
        if (any)
            break;
    }
    for (; j > lo; j--)
        if (x[j - 1] != 0.0f)
            return j;
    return lo;
}

/* The backward, per (b, h), with dO the head's slice of dout:
 *     dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),
 *     dQ = scale dS K,  dK = scale dS^T Q.
 * dP lives in a fixed stack buffer (no scratch argument), a tile of at most
 * K_ATT_ROWS query rows by C key columns. When a whole row fits (C = T, the
 * usual case) each tile is one pass; for T > K_ATT_MAXC the row sums need a
 * first pass over the column chunks and dP is computed twice.
 * Key columns past a tile's last nonzero probability (causal attention, or
 * padding at the end) are skipped: their dS and dV terms are exactly 0. */
#define K_ATT_BUF 16384 /* floats: 64 KiB of stack */
#define K_ATT_MAXC 2048 /* widest column chunk */

K_VEC_LOOP void k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B,
                                     int64_t t, int64_t d, int64_t heads)
{
    int64_t hd = d / heads, d3 = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    int T = K_BLAS_INT(t), HD = K_BLAS_INT(hd), LD3 = K_BLAS_INT(d3), LD = K_BLAS_INT(d);
    float buf[K_ATT_BUF];
    double rs[K_ATT_ROWS];
    int64_t cw = t < K_ATT_MAXC ? t : K_ATT_MAXC; /* column chunk width */
    int64_t rt = K_ATT_BUF / cw < K_ATT_ROWS ? K_ATT_BUF / cw : K_ATT_ROWS; /* rows per tile */
    if (rt > t)
        rt = t;
    memset(dqkv, 0, (size_t)(B * t * d3) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < heads; h++) {
            const float *q = qkv + b * t * d3 + h * hd, *k = q + d, *v = q + 2 * d;
            float *dq = dqkv + b * t * d3 + h * hd, *dk = dq + d, *dv = dq + 2 * d;
            const float *p = att + (b * heads + h) * t * t; /* (T, T) */
            const float *dO = dout + b * t * d + h * hd;    /* (T, hd), stride D */
            for (int64_t i0 = 0; i0 < t; i0 += rt) {
                int64_t r = t - i0 < rt ? t - i0 : rt;
                const float *pt = p + i0 * t;
                /* keys this tile attends to: [0, nk). The last row first:
                 * under a causal mask it reaches furthest, and every other
                 * row then scans only the columns past it (first row
                 * first, each row scanned most of its zeros: 8% of
                 * gpt_tiny's step) */
                int64_t nk = 0;
                for (int64_t i = r - 1; i >= 0; i--)
                    nk = past_last_nonzero(pt + i * t, nk, t);
                if (nk == 0)
                    continue; /* fully masked rows: all gradients 0 */
                int multi = nk > cw; /* row sums need their own pass */
                if (multi) {
                    for (int64_t i = 0; i < r; i++)
                        rs[i] = 0.0;
                    for (int64_t j0 = 0; j0 < nk; j0 += cw) {
                        int64_t c = nk - j0 < cw ? nk - j0 : cw;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)c, HD, 1.0f, dO + i0 * d, LD,
                                    v + j0 * d3, LD3, 0.0f, buf, (int)c);
                        for (int64_t i = 0; i < r; i++)
                            rs[i] += dot_sum(pt + i * t + j0, buf + i * c, c);
                    }
                }
                for (int64_t j0 = 0; j0 < nk; j0 += cw) {
                    int64_t c = nk - j0 < cw ? nk - j0 : cw;
                    /* buf (r, c) = dO_tile V_chunk^T */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)c, HD, 1.0f, dO + i0 * d, LD,
                                v + j0 * d3, LD3, 0.0f, buf, (int)c);
                    for (int64_t i = 0; i < r; i++) {
                        const float *pr = pt + i * t + j0;
                        float *br = buf + i * c;
                        if (!multi)
                            rs[i] = dot_sum(pr, br, c);
                        float rsi = (float)rs[i];
                        for (int64_t j = 0; j < c; j++)
                            br[j] = pr[j] * (br[j] - rsi);
                    }
                    /* dQ_tile (r, hd) += scale dS K_chunk */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, HD, (int)c, scale, buf, (int)c,
                                k + j0 * d3, LD3, 1.0f, dq + i0 * d3, LD3);
                    /* dK_chunk (c, hd) += scale dS^T Q_tile */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, HD, (int)r, scale, buf, (int)c,
                                q + i0 * d3, LD3, 1.0f, dk + j0 * d3, LD3);
                    /* dV_chunk (c, hd) += P_tile^T dO_tile */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, HD, (int)r, 1.0f, pt + j0, T,
                                dO + i0 * d, LD, 1.0f, dv + j0 * d3, LD3);
                }
            }
        }
}

/* ---- losses ----------------------------------------------------------------------- */

K_VEC_LOOP double k_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int64_t n, int64_t c,
                                  double scale, int64_t *count, int64_t *correct)
{
    double total = 0.0;
    int64_t cnt = 0, ok = 0;
    float tmp[K_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * c; /* (C) */
        float *dx = dlogits ? dlogits + i * c : NULL;
        int32_t tg = targets[i];
        if (tg < 0) {
            if (dx)
                memset(dx, 0, (size_t)c * sizeof(float));
            continue;
        }
        assert(tg < c && "target within the classes (the data loader checks)");
        int64_t am = 0;
        float mx = x[0];
        for (int64_t j = 1; j < c; j++)
            if (x[j] > mx)
                mx = x[j], am = j;
        /* log-softmax around the max: exp never overflows, sum >= 1. The
         * exps are summed block by block (k_block_sum), staged in dlogits
         * or, for evaluation, on the stack: the same bits either way. */
        double sum = 0.0;
        for (int64_t j0 = 0; j0 < c; j0 += K_BLOCK) {
            int64_t len = c - j0 < K_BLOCK ? c - j0 : K_BLOCK;
            float *e = dx ? dx + j0 : tmp;
            exp_shifted(e, x + j0, len, mx);
            sum += k_block_sum(e, len);
        }
        total += log(sum) - ((double)x[tg] - (double)mx);
        cnt++;
        ok += am == tg;
        if (dx) {
            double inv = 1.0 / sum;
            for (int64_t j = 0; j < c; j++)
                dx[j] = (float)((dx[j] * inv - (j == tg ? 1.0 : 0.0)) * scale);
        }
    }
    if (count)
        *count = cnt;
    if (correct)
        *correct = ok;
    return total;
}

K_VEC_LOOP double k_mse(float *dout, const float *out, const float *target, int64_t n, double scale)
{
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)out[i] - (double)target[i];
        total += e * e;
        if (dout)
            dout[i] = (float)(2.0 * e * scale);
    }
    return total;
}

/* ---- batchnorm2d -------------------------------------------------------------- */
/* Channel c of sample b is the HW floats at (b C + c) HW. Every sum over a
 * channel goes sample by sample, each sample's part through k_block_sum
 * (K_BLOCK terms at a time, written first to a stack block), in double. */

K_VEC_LOOP void k_batchnorm2d_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                                      const float *b, int64_t B, int64_t C, int64_t HW, float eps, float *rmean,
                                      float *rvar, int64_t *nbt, double momentum)
{
    float t[K_BLOCK];
    double n = (double)(B * HW);
    for (int64_t c = 0; c < C; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < B; i++)
            s += k_row_sum(in + (i * C + c) * HW, HW);
        double md = s / n;
        float mf = (float)md;
        double v = 0.0;
        for (int64_t i = 0; i < B; i++) {
            const float *x = in + (i * C + c) * HW;
            for (int64_t j0 = 0; j0 < HW; j0 += K_BLOCK) {
                int64_t len = HW - j0 < K_BLOCK ? HW - j0 : K_BLOCK;
                for (int64_t j = 0; j < len; j++) {
                    float d = x[j0 + j] - mf;
                    t[j] = d * d;
                }
                v += k_block_sum(t, len);
            }
        }
        float rf = (float)(1.0 / sqrt(v / n + (double)eps));
        mean[c] = mf, rstd[c] = rf;
        float wc = w[c], bc = b[c];
        for (int64_t i = 0; i < B; i++) {
            const float *x = in + (i * C + c) * HW;
            float *y = out + (i * C + c) * HW;
            for (int64_t j = 0; j < HW; j++)
                y[j] = (x[j] - mf) * rf * wc + bc;
        }
        if (rmean) {
            double m = momentum;
            rmean[c] = (float)(m * md + (1.0 - m) * (double)rmean[c]);
            rvar[c] = (float)(m * (v / (n - 1.0)) + (1.0 - m) * (double)rvar[c]);
        }
    }
    if (rmean && nbt)
        *nbt += 1;
}

K_VEC_LOOP void k_batchnorm2d_eval(float *out, const float *in, const float *w, const float *b, const float *rmean,
                                   const float *rvar, int64_t B, int64_t C, int64_t HW, float eps)
{
    for (int64_t c = 0; c < C; c++) {
        float mf = rmean[c], rf = (float)(1.0 / sqrt((double)rvar[c] + (double)eps)), wc = w[c], bc = b[c];
        for (int64_t i = 0; i < B; i++) {
            const float *x = in + (i * C + c) * HW;
            float *y = out + (i * C + c) * HW;
            for (int64_t j = 0; j < HW; j++)
                y[j] = (x[j] - mf) * rf * wc + bc;
        }
    }
}

/* the two sums of a channel: of dout * w (sg) and of dout * w * xhat (sgx),
 * or with w NULL of dout and dout * xhat */
K_INLINE void bn_sums(double *sg, double *sgx, const float *dout, const float *in, float wc, float mf, float rf,
                      int64_t B, int64_t C, int64_t HW, int64_t c)
{
    float tg[K_BLOCK], tgx[K_BLOCK];
    double a = 0.0, ax = 0.0;
    for (int64_t i = 0; i < B; i++) {
        const float *x = in + (i * C + c) * HW, *dy = dout + (i * C + c) * HW;
        for (int64_t j0 = 0; j0 < HW; j0 += K_BLOCK) {
            int64_t len = HW - j0 < K_BLOCK ? HW - j0 : K_BLOCK;
            for (int64_t j = 0; j < len; j++) {
                float g = dy[j0 + j] * wc;
                tg[j] = g;
                tgx[j] = g * ((x[j0 + j] - mf) * rf);
            }
            a += k_block_sum(tg, len);
            ax += k_block_sum(tgx, len);
        }
    }
    *sg = a, *sgx = ax;
}

K_VEC_LOOP void k_batchnorm2d_backward_input(float *din, const float *dout, const float *in, const float *w,
                                             const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    double n = (double)(B * HW);
    for (int64_t c = 0; c < C; c++) {
        float mf = mean[c], rf = rstd[c], wc = w[c];
        double sg, sgx;
        bn_sums(&sg, &sgx, dout, in, wc, mf, rf, B, C, HW, c);
        float mg = (float)(sg / n), mgx = (float)(sgx / n);
        for (int64_t i = 0; i < B; i++) {
            const float *x = in + (i * C + c) * HW, *dy = dout + (i * C + c) * HW;
            float *dx = din + (i * C + c) * HW;
            for (int64_t j = 0; j < HW; j++) {
                float xh = (x[j] - mf) * rf;
                float g = dy[j] * wc;
                dx[j] = rf * (g - mg - xh * mgx);
            }
        }
    }
}

K_VEC_LOOP void k_batchnorm2d_backward_weight(float *dw, float *db, const float *dout, const float *in,
                                              const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    for (int64_t c = 0; c < C; c++) {
        double sb, sw;
        bn_sums(&sb, &sw, dout, in, 1.0f, mean[c], rstd[c], B, C, HW, c);
        dw[c] += (float)sw;
        db[c] += (float)sb;
    }
}

/* ---- transpose ---------------------------------------------------------------- */

K_VEC_LOOP void k_transpose(float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q)
{
    for (int64_t p = 0; p < P; p++)
        for (int64_t j = 0; j < nb; j++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t i = 0; i < na; i++) {
                    const float *src = in + (((p * na + i) * M + m) * nb + j) * Q;
                    float *dst = out + (((p * nb + j) * M + m) * na + i) * Q;
                    memcpy(dst, src, (size_t)Q * sizeof(float));
                }
}
