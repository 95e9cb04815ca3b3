/* kernels/cpu/k_dense.c: the CPU kernels with a spatial or matrix structure:
 * linear (one k_gemm over all rows), conv2d (im2col of one sample at a
 * time, then k_gemm), max / average / adaptive average pooling.
 *
 * Weight gradients are added into dw / db (k_gemm with beta = 1, or one of
 * the fixed-order sums of k_reduce.h added once); input gradients are
 * overwritten. Every loop
 * walks memory in a fixed order, so the same inputs give the same bits.
 */
#include "k_cpu.h"
#include "k_reduce.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* ---- linear ------------------------------------------------------------------- */

/* dst (cols, rows) = src (rows, cols), in 16 x 16 tiles */
static void transpose2d(float *dst, const float *src, int64_t rows, int64_t cols)
{
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
        for (int64_t j0 = 0; j0 < cols; j0 += 16) {
            int64_t i1 = i0 + 16 < rows ? i0 + 16 : rows, j1 = j0 + 16 < cols ? j0 + 16 : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    dst[j * rows + i] = src[i * cols + j];
        }
}

/* out (N, OUT) = b broadcast, then += in (N, IN) . w^T (OUT, IN) in one product.
 *
 * A short product (few rows against a wide input: k_linear_scratch) runs
 * the other way round where OpenBLAS's AVX-512 kernels are in use: out^T
 * (OUT, N) = b broadcast down the columns, then += w . in^T, into the
 * scratch, then transposed into out. OpenBLAS packs the weight better as
 * the left operand; every element's sum runs over the input features in
 * the same order either way, so the bits are the same (unit_kernels checks
 * it). fp32 only: the bf16 GEMM is this project's own and has no such
 * preference. */
void k_linear_forward_swapped(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t in_f,
                              int64_t out_f, float *scratch)
{
    for (int64_t j = 0; b && j < out_f; j++)
        for (int64_t i = 0; i < n; i++)
            scratch[j * n + i] = b[j];
    k_gemm(K_FP32, 0, 1, out_f, n, in_f, w, in_f, in, in_f, b != NULL, scratch, n);
    transpose2d(out, scratch, out_f, n);
}

void k_linear_forward(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t in_f,
                      int64_t out_f, KPrec prec, float *scratch)
{
    if (prec == K_FP32 && scratch && k_linear_scratch(n, in_f, out_f) > 0 && k_gemm_short_swaps()) {
        k_linear_forward_swapped(out, in, w, b, n, in_f, out_f, scratch);
        return;
    }
    if (b)
        for (int64_t i = 0; i < n; i++)
            memcpy(out + i * out_f, b, (size_t)out_f * sizeof(float));
    k_gemm(prec, 0, 1, n, out_f, in_f, in, in_f, w, in_f, b != NULL, out, out_f);
}

void k_linear_pack(float *wpack, const float *w, int64_t in_f, int64_t out_f, int which)
{
    if (which == 0) /* op(B) = w^T: lanes are w's rows */
        k_pack_b(wpack, w, in_f, 1, out_f, in_f);
    else /* op(B) = w: lanes are w's columns */
        k_pack_b(wpack + k_pack_floats(out_f, in_f), w, 1, in_f, in_f, out_f);
}

void k_linear_forward_packed(float *out, const float *in, const float *wpack, const float *b, int64_t n,
                             int64_t in_f, int64_t out_f)
{
    k_gemm_packed(n, out_f, in_f, in, in_f, wpack, b, 0, out, out_f);
}

void k_linear_backward_input_packed(float *din, const float *dout, const float *wpack, int64_t n, int64_t in_f,
                                    int64_t out_f)
{
    k_gemm_packed(n, in_f, out_f, dout, out_f, wpack + k_pack_floats(out_f, in_f), NULL, 0, din, in_f);
}

/* din (N, IN) = dout (N, OUT) . w (OUT, IN) */
void k_linear_backward_input(float *din, const float *dout, const float *w, int64_t n, int64_t in_f, int64_t out_f,
                             KPrec prec)
{
    k_gemm(prec, 0, 0, n, in_f, out_f, dout, out_f, w, in_f, 0, din, in_f);
}

/* db += column sums of dout (n, out_f), built for each x86-64 level */
K_VEC_LOOP static void bias_grad(float *db, const float *dout, int64_t n, int64_t out_f)
{
    k_colsum_add(db, dout, n, out_f);
}

/* dw (OUT, IN) += dout^T (OUT, N) . in (N, IN); db (OUT) += column sums of dout */
void k_linear_backward_weight(float *dw, float *db, const float *dout, const float *in, int64_t n, int64_t in_f,
                              int64_t out_f, KPrec prec, float *scratch)
{
    if (dw && scratch && prec == K_FP32 && k_linear_wgrad_floats(n, in_f, out_f) && k_wgrad_supported(in_f))
        k_gemm_wgrad(out_f, in_f, n, dout, in, dw, scratch);
    else if (dw)
        k_gemm(prec, 1, 0, out_f, in_f, n, dout, out_f, in, in_f, 1, dw, in_f);
    if (db)
        bias_grad(db, dout, n, out_f);
}

/* ---- conv2d ------------------------------------------------------------------- */
/* Per sample: col (K, P) with K = C*KH*KW (row (c, ki, kj)) and P = OH*OW;
 * out (OC, P) = w (OC, K) . col. The backward input is dcol = w^T . dout,
 * scattered back by col2im; the backward weight is dw += dout . col^T. */

/* A 1x1 kernel with unit stride and no padding: col is the input itself. */
static int conv_is_pointwise(const KConv *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* Output columns ox whose input column ox*s - p + k lies in [0, len):
 * [*lo, *hi). Shared by im2col and col2im so they agree on the border. */
static void valid_range(int64_t k, int64_t s, int64_t p, int64_t len, int64_t olen, int64_t *lo, int64_t *hi)
{
    int64_t off = k - p; /* input index = ox * s + off */
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = len - off <= 0 ? 0 : (len - off + s - 1) / s; /* first ox with ox*s + off >= len */
    if (h > olen)
        h = olen;
    if (l > h)
        l = h;
    *lo = l, *hi = h;
}

/* Unit strides and W = OW (a "same" convolution): one kernel offset's
 * valid rows are one contiguous run in the input and in col, from (ylo,
 * xlo) to (yhi - 1, xhi - 1), with the wrapped border columns inside it */
static int conv_rows_run(const KConv *g)
{
    return g->sh == 1 && g->sw == 1 && g->w == g->ow;
}

/* zeros over the columns outside [xlo, xhi) of rows [ylo, yhi) of one
 * (OH, OW) row of col: what a run brought from the neighbouring rows */
static void zero_border_cols(float *row, const KConv *g, int64_t ylo, int64_t yhi, int64_t xlo, int64_t xhi)
{
    for (int64_t oy = ylo; oy < yhi; oy++) {
        for (int64_t ox = 0; ox < xlo; ox++)
            row[oy * g->ow + ox] = 0.0f;
        for (int64_t ox = xhi; ox < g->ow; ox++)
            row[oy * g->ow + ox] = 0.0f;
    }
}

/* in (C, H, W) of one sample -> col (C*KH*KW, OH*OW) */
static void im2col(float *col, const float *in, const KConv *g)
{
    int64_t P = g->oh * g->ow;
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t ylo, yhi;
            valid_range(ki, g->sh, g->ph, g->h, g->oh, &ylo, &yhi);
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = col + ((c * g->kh + ki) * g->kw + kj) * P; /* (OH, OW) */
                int64_t xlo, xhi;
                valid_range(kj, g->sw, g->pw, g->w, g->ow, &xlo, &xhi);
                int64_t off = kj - g->pw;
                if (conv_rows_run(g) && yhi > ylo && xhi > xlo) {
                    /* the run in one copy, then zeros over what it wrongly
                     * brought and over the rows outside [ylo, yhi) (rows
                     * are short: a copy a row cost 7% of the CNN's step) */
                    const float *src = in + (c * g->h + ylo - g->ph + ki) * g->w;
                    memcpy(row + ylo * g->ow + xlo, src + xlo + off,
                           (size_t)((yhi - 1 - ylo) * g->ow + xhi - xlo) * sizeof(float));
                    memset(row, 0, (size_t)(ylo * g->ow) * sizeof(float));
                    memset(row + yhi * g->ow, 0, (size_t)((g->oh - yhi) * g->ow) * sizeof(float));
                    zero_border_cols(row, g, ylo, yhi, xlo, xhi);
                    continue;
                }
                for (int64_t oy = 0; oy < g->oh; oy++) {
                    float *dst = row + oy * g->ow;
                    if (oy < ylo || oy >= yhi) {
                        memset(dst, 0, (size_t)g->ow * sizeof(float));
                        continue;
                    }
                    /* input row iy; column ox reads src[ox * sw + off] */
                    const float *src = in + (c * g->h + oy * g->sh - g->ph + ki) * g->w;
                    for (int64_t ox = 0; ox < xlo; ox++)
                        dst[ox] = 0.0f;
                    if (g->sw == 1 && xhi > xlo)
                        memcpy(dst + xlo, src + xlo + off, (size_t)(xhi - xlo) * sizeof(float));
                    else
                        for (int64_t ox = xlo; ox < xhi; ox++)
                            dst[ox] = src[ox * g->sw + off];
                    for (int64_t ox = xhi; ox < g->ow; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
}

/* din (C, H, W) of one sample = scatter-add of col (C*KH*KW, OH*OW).
 * A "same" convolution (unit strides, W = OW) adds each kernel offset's
 * rows as one flat run, as im2col copies them: the entries of col that
 * would land on a neighbouring row's far column are set to +0 first (col
 * is scratch), and adding +0 changes no element's bits (a sum started
 * from +0 is never -0, and x + 0 = x otherwise), so every element gets
 * the same adds in the same order as row by row. */
K_VEC_LOOP static void col2im(float *din, float *col, const KConv *g)
{
    int64_t P = g->oh * g->ow;
    int same = conv_rows_run(g);
    memset(din, 0, (size_t)(g->c * g->h * g->w) * sizeof(float));
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t ylo, yhi;
            valid_range(ki, g->sh, g->ph, g->h, g->oh, &ylo, &yhi);
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = col + ((c * g->kh + ki) * g->kw + kj) * P;
                int64_t xlo, xhi, off = kj - g->pw;
                valid_range(kj, g->sw, g->pw, g->w, g->ow, &xlo, &xhi);
                if (same && yhi > ylo && xhi > xlo) {
                    zero_border_cols(row, g, ylo, yhi, xlo, xhi);
                    const float *src = row + ylo * g->ow + xlo;
                    float *dst = din + (c * g->h + ylo - g->ph + ki) * g->w + xlo + off;
                    int64_t n = (yhi - 1 - ylo) * g->ow + xhi - xlo;
                    for (int64_t i = 0; i < n; i++)
                        dst[i] += src[i];
                    continue;
                }
                for (int64_t oy = ylo; oy < yhi; oy++) {
                    const float *src = row + oy * g->ow;
                    float *dst = din + (c * g->h + oy * g->sh - g->ph + ki) * g->w;
                    if (g->sw == 1)
                        for (int64_t ox = xlo; ox < xhi; ox++)
                            dst[ox + off] += src[ox];
                    else
                        for (int64_t ox = xlo; ox < xhi; ox++)
                            dst[ox * g->sw + off] += src[ox];
                }
            }
        }
}

/* out (B, OC, OH, OW) = w (OC, C*KH*KW) . im2col(in[b]) + b */
void k_conv2d_forward(float *out, const float *in, const float *w, const float *b, int64_t B, const KConv *g,
                      float *scratch)
{
    int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, in_sz = g->c * g->h * g->w;
    for (int64_t s = 0; s < B; s++) {
        const float *x = in + s * in_sz;
        float *y = out + s * g->oc * P; /* (OC, P) */
        const float *col = x;
        if (!conv_is_pointwise(g)) {
            im2col(scratch, x, g);
            col = scratch;
        }
        if (b)
            for (int64_t o = 0; o < g->oc; o++)
                for (int64_t p = 0; p < P; p++)
                    y[o * P + p] = b[o];
        k_gemm(g->prec, 0, 0, g->oc, P, K, w, K, col, P, b != NULL, y, P);
    }
}

/* din[b] = col2im(w^T (K, OC) . dout[b] (OC, P)) */
void k_conv2d_backward_input(float *din, const float *dout, const float *w, int64_t B, const KConv *g, float *scratch)
{
    int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, in_sz = g->c * g->h * g->w;
    int direct = conv_is_pointwise(g);
    for (int64_t s = 0; s < B; s++) {
        float *dx = din + s * in_sz;
        const float *dy = dout + s * g->oc * P;
        k_gemm(g->prec, 1, 0, K, P, g->oc, w, K, dy, P, 0, direct ? dx : scratch, P);
        if (!direct)
            col2im(dx, scratch, g);
    }
}

/* dw (OC, K) += dout[b] (OC, P) . im2col(in[b])^T, sample by sample;
 * db (OC) += sums of dout over samples and positions, in double */
void k_conv2d_backward_weight(float *dw, float *db, const float *dout, const float *in, int64_t B, const KConv *g,
                              float *scratch)
{
    int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, in_sz = g->c * g->h * g->w;
    if (dw)
        for (int64_t s = 0; s < B; s++) {
            const float *x = in + s * in_sz, *col = x;
            if (!conv_is_pointwise(g)) {
                im2col(scratch, x, g);
                col = scratch;
            }
            k_gemm(g->prec, 0, 1, g->oc, K, P, dout + s * g->oc * P, P, col, P, 1, dw, K);
        }
    if (db)
        for (int64_t o = 0; o < g->oc; o++) {
            double acc = 0.0;
            for (int64_t s = 0; s < B; s++)
                acc += k_row_sum(dout + (s * g->oc + o) * P, P);
            db[o] += (float)acc;
        }
}

/* ---- pooling ----------------------------------------------------------------------
 * Output (oy, ox) reads input rows oy*sh - ph + [0, kh) and columns
 * ox*sw - pw + [0, kw), clipped to the input. Planes (b, c) are independent,
 * so every loop runs over B*C planes of (H, W) -> (OH, OW). */

/* idx holds the position within its (H, W) plane, iy * W + ix, as PyTorch's
 * max_pool2d_with_indices does. Padding is -inf, so it never wins; a NaN
 * wins and propagates, as in ATen (the last NaN of the window is kept).
 * Each element of a window, in row-major order, replaces the running
 * maximum when it is greater (so the first of equal values stays) or NaN:
 * as selects, not branches (a branch on the data mispredicts about every
 * other element: a third of the CNN's step went there). */
static inline void pool_take(float v, int32_t at, float *bv, int32_t *bi)
{
    int t = (v > *bv) | (v != v);
    *bv = t ? v : *bv;
    *bi = t ? at : *bi;
}

/* 2 x 2 windows, stride 2, no padding, on planes of even height and width
 * (the CNNs' pooling). The four elements a b / c d of a window are taken
 * in two steps: the better of a and b, and of c and d, then the better of
 * the two pairs, c-d's taken only when greater or NaN. That is the
 * row-major rule's winner: the first of equal maxima (a-b's on a tie) and
 * the last NaN (c-d's when it has one). Every step is a flat loop over a
 * few output rows at once (the input's rows are contiguous across planes),
 * through buffers on the stack: pairs along the rows, then each pair with
 * the one a row below (also for the rows below, whose results are not
 * used), then the output rows copied out. A loop along one output row
 * (7 or 14 long here) would not vectorise, and its scalar form branches
 * on the data: a third of the CNN's step went to the first version. */
enum { K_POOL_PAIRS = 1024 };

K_VEC_LOOP static void maxpool_2x2(float *out, int32_t *idx, const float *in, int64_t planes, const KPool *g)
{
    float hv[K_POOL_PAIRS], cv[K_POOL_PAIRS];
    int32_t hs[K_POOL_PAIRS], rel[K_POOL_PAIRS];
    int64_t W = g->w, OH = g->oh, OW = g->ow, rows = planes * OH;
    int64_t per = K_POOL_PAIRS / (2 * OW); /* output rows a round */
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per, n = 2 * nr * OW;
        const float *x = in + 2 * r0 * W; /* input rows 2 r0 .. 2 (r0 + nr) - 1 */
        for (int64_t k = 0; k < n; k++) { /* a | b */
            float a = x[2 * k], b = x[2 * k + 1];
            int t = (b > a) | (b != b);
            hv[k] = t ? b : a;
            hs[k] = t;
        }
        for (int64_t q = 0; q < n - OW; q++) { /* a-b over c-d: 0, 1, W or W + 1 from a */
            float m1 = hv[q], m2 = hv[q + OW];
            int t = (m2 > m1) | (m2 != m2);
            cv[q] = t ? m2 : m1;
            rel[q] = t ? (int32_t)W + hs[q + OW] : hs[q];
        }
        for (int64_t r = 0; r < nr; r++) {
            const float *c = cv + 2 * r * OW;
            const int32_t *e = rel + 2 * r * OW;
            float *y = out + (r0 + r) * OW;
            int32_t *iy = idx + (r0 + r) * OW, at = (int32_t)(2 * ((r0 + r) % OH) * W);
            for (int64_t ox = 0; ox < OW; ox++) {
                y[ox] = c[ox];
                iy[ox] = at + 2 * (int32_t)ox + e[ox];
            }
        }
    }
}

void k_maxpool2d_forward(float *out, int32_t *idx, const float *in, int64_t B, const KPool *g)
{
    int64_t planes = B * g->c, HW = g->h * g->w, OP = g->oh * g->ow;
    if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 && 2 * g->oh == g->h &&
        2 * g->ow == g->w && 2 * g->ow <= K_POOL_PAIRS) {
        maxpool_2x2(out, idx, in, planes, g);
        return;
    }
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * HW;
        float *y = out + pl * OP;
        int32_t *ix_out = idx + pl * OP;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            int64_t y0 = oy * g->sh - g->ph, y1 = y0 + g->kh;
            y0 = y0 < 0 ? 0 : y0, y1 = y1 > g->h ? g->h : y1;
            for (int64_t ox = 0; ox < g->ow; ox++) {
                int64_t x0 = ox * g->sw - g->pw, x1 = x0 + g->kw;
                x0 = x0 < 0 ? 0 : x0, x1 = x1 > g->w ? g->w : x1;
                /* start from the window's first real element: the max even
                 * when every element is -inf */
                int32_t best = (int32_t)(y0 * g->w + x0);
                float bv = x[best];
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        pool_take(x[iy * g->w + ix], (int32_t)(iy * g->w + ix), &bv, &best);
                y[oy * g->ow + ox] = bv;
                ix_out[oy * g->ow + ox] = best;
            }
        }
    }
}

void k_maxpool2d_backward(float *din, const float *dout, const int32_t *idx, int64_t B, const KPool *g)
{
    int64_t planes = B * g->c, HW = g->h * g->w, OP = g->oh * g->ow;
    memset(din, 0, (size_t)(planes * HW) * sizeof(float));
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t o = 0; o < OP; o++)
            din[pl * HW + idx[pl * OP + o]] += dout[pl * OP + o];
}

/* The contract says no padding; a nonzero ph / pw is honoured the way
 * PyTorch's default (count_include_pad) does: zeros in, divisor kh * kw. */
void k_avgpool2d_forward(float *out, const float *in, int64_t B, const KPool *g)
{
    int64_t planes = B * g->c, HW = g->h * g->w, OP = g->oh * g->ow;
    float div = (float)(g->kh * g->kw);
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * HW;
        float *y = out + pl * OP;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            int64_t y0 = oy * g->sh - g->ph, y1 = y0 + g->kh;
            y0 = y0 < 0 ? 0 : y0, y1 = y1 > g->h ? g->h : y1;
            for (int64_t ox = 0; ox < g->ow; ox++) {
                int64_t x0 = ox * g->sw - g->pw, x1 = x0 + g->kw;
                x0 = x0 < 0 ? 0 : x0, x1 = x1 > g->w ? g->w : x1;
                float s = 0.0f;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        s += x[iy * g->w + ix];
                y[oy * g->ow + ox] = s / div;
            }
        }
    }
}

void k_avgpool2d_backward(float *din, const float *dout, int64_t B, const KPool *g)
{
    int64_t planes = B * g->c, HW = g->h * g->w, OP = g->oh * g->ow;
    float div = (float)(g->kh * g->kw);
    memset(din, 0, (size_t)(planes * HW) * sizeof(float));
    for (int64_t pl = 0; pl < planes; pl++) {
        float *dx = din + pl * HW;
        const float *dy = dout + pl * OP;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            int64_t y0 = oy * g->sh - g->ph, y1 = y0 + g->kh;
            y0 = y0 < 0 ? 0 : y0, y1 = y1 > g->h ? g->h : y1;
            for (int64_t ox = 0; ox < g->ow; ox++) {
                int64_t x0 = ox * g->sw - g->pw, x1 = x0 + g->kw;
                x0 = x0 < 0 ? 0 : x0, x1 = x1 > g->w ? g->w : x1;
                float gv = dy[oy * g->ow + ox] / div;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        dx[iy * g->w + ix] += gv;
            }
        }
    }
}

/* window i of n over length len: [floor(i len / n), ceil((i + 1) len / n)) */
static int64_t ad_start(int64_t i, int64_t len, int64_t n)
{
    return i * len / n;
}
static int64_t ad_end(int64_t i, int64_t len, int64_t n)
{
    return ((i + 1) * len + n - 1) / n;
}

void k_adaptive_avgpool2d_forward(float *out, const float *in, int64_t B, int64_t c, int64_t h, int64_t w, int64_t oh,
                                  int64_t ow)
{
    int64_t planes = B * c;
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * h * w;
        float *y = out + pl * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++) {
            int64_t y0 = ad_start(oy, h, oh), y1 = ad_end(oy, h, oh);
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t x0 = ad_start(ox, w, ow), x1 = ad_end(ox, w, ow);
                float s = 0.0f;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        s += x[iy * w + ix];
                y[oy * ow + ox] = s / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

void k_adaptive_avgpool2d_backward(float *din, const float *dout, int64_t B, int64_t c, int64_t h, int64_t w, int64_t oh,
                                   int64_t ow)
{
    int64_t planes = B * c;
    memset(din, 0, (size_t)(planes * h * w) * sizeof(float));
    for (int64_t pl = 0; pl < planes; pl++) {
        float *dx = din + pl * h * w;
        const float *dy = dout + pl * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++) {
            int64_t y0 = ad_start(oy, h, oh), y1 = ad_end(oy, h, oh);
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t x0 = ad_start(ox, w, ow), x1 = ad_end(ox, w, ow);
                float gv = dy[oy * ow + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++)
                        dx[iy * w + ix] += gv;
            }
        }
    }
}
