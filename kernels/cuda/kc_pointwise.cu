/* kernels/cuda/kc_pointwise.cu: the CUDA mirror of k_pointwise.c's
 * elementwise kernels (relu, gelu, tanh, sigmoid, dropout and its Philox
 * masks), layernorm, embedding and the losses, plus the residual add.
 * Attention lives in kc_attention.cu.
 *
 * The arithmetic is the CPU's, expression for expression: the library is
 * built with --fmad=false (no contraction into FMAs, as the CPU's
 * -ffp-contract=off) and IEEE division and square root, so every kernel
 * made only of +, -, *, / and comparisons gives the CPU's bits (relu,
 * dropout and its masks, embedding, tanh / sigmoid backwards). Those that
 * call expf / tanhf differ by the last bits of those functions (CUDA's are
 * within 2 ulp), and row reductions (layernorm, softmax, the losses) sum in
 * another fixed order: per-thread float partials over a stride of 256, a
 * tree in double across the block. */
#include "kc_internal.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- elementwise ---------------------------------------------------------------- */

#define K_GELU_BETA 0.7978845608028654f
#define K_GELU_KAPPA 0.044715f

static __global__ void g_relu_fwd(float *out, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

static __global__ void g_relu_bwd(float *din, const float *dout, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
}

static __global__ void g_gelu_fwd(float *out, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    {
        float x = in[i];
        float u = K_GELU_BETA * (x + K_GELU_KAPPA * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}

static __global__ void g_gelu_bwd(float *din, const float *dout, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    {
        float x = in[i], x2 = x * x;
        float u = K_GELU_BETA * (x + K_GELU_KAPPA * x2 * x);
        float du = K_GELU_BETA * (1.0f + 3.0f * K_GELU_KAPPA * x2);
        float s = 1.0f / (1.0f + expf(-2.0f * u));
        din[i] = dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
    }
}

static __global__ void g_tanh_fwd(float *out, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    out[i] = tanhf(in[i]);
}

static __global__ void g_tanh_bwd(float *din, const float *dout, const float *out, int64_t n)
{
    GRID_STRIDE(i, n)
    din[i] = dout[i] * (1.0f - out[i] * out[i]);
}

static __global__ void g_sigmoid_fwd(float *out, const float *in, int64_t n)
{
    GRID_STRIDE(i, n)
    out[i] = 1.0f / (1.0f + expf(-in[i]));
}

static __global__ void g_sigmoid_bwd(float *din, const float *dout, const float *out, int64_t n)
{
    GRID_STRIDE(i, n)
    din[i] = dout[i] * (1.0f - out[i]) * out[i];
}

static __global__ void g_dropout(float *out, const float *in, const uint8_t *mask, float keep, int64_t n)
{
    GRID_STRIDE(i, n)
    out[i] = in[i] * (mask[i] ? keep : 0.0f);
}

static __global__ void g_add_into(float *y, const float *x, int64_t n)
{
    GRID_STRIDE(i, n)
    y[i] += x[i];
}

/* the launch and check every elementwise kernel shares */
#define EW_LAUNCH(ctx, kern, n, ...)                                                                                   \
    do {                                                                                                               \
        KC_ENTER(ctx);                                                                                                 \
        KC_ARG(ctx, (n) >= 0, #kern " size");                                                                          \
        kern<<<kc_grid(ctx, n), KC_THREADS, 0, (ctx)->stream>>>(__VA_ARGS__);                                          \
        KC_LAUNCHED(ctx, kern);                                                                                        \
        return KC_OK;                                                                                                  \
    } while (0)

int kc_relu_forward(KcCtx *ctx, float *out, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_relu_fwd, n, out, in, n);
}
int kc_relu_backward(KcCtx *ctx, float *din, const float *dout, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_relu_bwd, n, din, dout, in, n);
}
int kc_gelu_forward(KcCtx *ctx, float *out, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_gelu_fwd, n, out, in, n);
}
int kc_gelu_backward(KcCtx *ctx, float *din, const float *dout, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_gelu_bwd, n, din, dout, in, n);
}
int kc_tanh_forward(KcCtx *ctx, float *out, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_tanh_fwd, n, out, in, n);
}
int kc_tanh_backward(KcCtx *ctx, float *din, const float *dout, const float *out, int64_t n)
{
    EW_LAUNCH(ctx, g_tanh_bwd, n, din, dout, out, n);
}
int kc_sigmoid_forward(KcCtx *ctx, float *out, const float *in, int64_t n)
{
    EW_LAUNCH(ctx, g_sigmoid_fwd, n, out, in, n);
}
int kc_sigmoid_backward(KcCtx *ctx, float *din, const float *dout, const float *out, int64_t n)
{
    EW_LAUNCH(ctx, g_sigmoid_bwd, n, din, dout, out, n);
}
/* keep = 1 / (1 - p) in float, as k_dropout_forward computes it */
int kc_dropout_forward(KcCtx *ctx, float *out, const float *in, const uint8_t *mask, float p, int64_t n)
{
    EW_LAUNCH(ctx, g_dropout, n, out, in, mask, 1.0f / (1.0f - p), n);
}
int kc_dropout_backward(KcCtx *ctx, float *din, const float *dout, const uint8_t *mask, float p, int64_t n)
{
    EW_LAUNCH(ctx, g_dropout, n, din, dout, mask, 1.0f / (1.0f - p), n);
}
int kc_add_into(KcCtx *ctx, float *y, const float *x, int64_t n)
{
    EW_LAUNCH(ctx, g_add_into, n, y, x, n);
}

/* ---- Philox4x32-10 and dropout masks (k_random.c's recipe, word for word) ---------- */

#define K_PHILOX_M0 0xD2511F53u
#define K_PHILOX_M1 0xCD9E8D57u
#define K_PHILOX_W0 0x9E3779B9u
#define K_PHILOX_W1 0xBB67AE85u

static __device__ __forceinline__ void philox(uint32_t out[4], uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3,
                                              uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        if (r > 0)
            k0 += K_PHILOX_W0, k1 += K_PHILOX_W1;
        uint32_t hi0 = __umulhi(K_PHILOX_M0, x0), lo0 = K_PHILOX_M0 * x0;
        uint32_t hi1 = __umulhi(K_PHILOX_M1, x2), lo1 = K_PHILOX_M1 * x2;
        uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
        x0 = y0, x1 = y1, x2 = y2, x3 = y3;
    }
    out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
}

/* one thread per Philox call: 4 elements of one sample */
static __global__ void g_dropout_mask(uint8_t *mask, int64_t n, int64_t B, float p, uint32_t k0, uint32_t k1,
                                      uint32_t step, uint64_t sample0, uint32_t layer)
{
    int64_t calls = (n + 3) / 4;
    GRID_STRIDE(q, B * calls)
    {
        int64_t s = q / calls, e0 = (q % calls) * 4;
        uint32_t r[4];
        philox(r, (uint32_t)(e0 / 4), (uint32_t)(sample0 + (uint64_t)s), layer, step, k0, k1);
        int64_t m = n - e0 < 4 ? n - e0 : 4;
        uint8_t *dst = mask + s * n + e0;
        for (int64_t j = 0; j < m; j++)
            dst[j] = (float)(r[j] >> 8) * 0x1p-24f < p ? 0 : 1;
    }
}

int kc_dropout_mask(KcCtx *ctx, uint8_t *mask, int64_t n, int64_t B, float p, uint64_t seed, uint64_t step,
                    uint64_t sample0, uint32_t layer)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && B >= 0, "kc_dropout_mask sizes");
    g_dropout_mask<<<kc_grid(ctx, B * ((n + 3) / 4)), KC_THREADS, 0, ctx->stream>>>(
        mask, n, B, p, (uint32_t)seed, (uint32_t)(seed >> 32), (uint32_t)step, sample0, layer);
    KC_LAUNCHED(ctx, g_dropout_mask);
    return KC_OK;
}

/* ---- layernorm ------------------------------------------------------------------------
 * One block per row. Two passes as on the CPU (mean, then the biased
 * variance around the float mean); mean and rstd are rounded to float and
 * the output uses those floats, as the backward will. */

static __global__ void g_ln_fwd(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                                int64_t n, int64_t d, float eps)
{
    __shared__ double sh[KC_THREADS];
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const float *x = in + r * d;
        float *y = out + r * d;
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS)
            s += x[j];
        float mf = (float)(kc_block_sum<double>((double)s, sh) / (double)d);
        float v = 0.0f;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS) {
            float c = x[j] - mf;
            v += c * c;
        }
        double var = kc_block_sum<double>((double)v, sh);
        float rf = (float)(1.0 / sqrt(var / (double)d + (double)eps));
        if (threadIdx.x == 0)
            mean[r] = mf, rstd[r] = rf;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS)
            y[j] = (x[j] - mf) * rf * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
    }
}

/* din = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * w */
static __global__ void g_ln_bwd_input(float *din, const float *dout, const float *in, const float *w,
                                      const float *mean, const float *rstd, int64_t n, int64_t d)
{
    __shared__ double sh[KC_THREADS];
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const float *x = in + r * d, *dy = dout + r * d;
        float *dx = din + r * d;
        float mf = mean[r], rf = rstd[r];
        float sg = 0.0f, sgx = 0.0f;
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS) {
            float g = dy[j] * (w ? w[j] : 1.0f);
            sg += g;
            sgx += g * ((x[j] - mf) * rf);
        }
        float mg = (float)(kc_block_sum<double>((double)sg, sh) / (double)d);
        float mgx = (float)(kc_block_sum<double>((double)sgx, sh) / (double)d);
        for (int64_t j = threadIdx.x; j < d; j += KC_THREADS) {
            float xh = (x[j] - mf) * rf;
            float g = dy[j] * (w ? w[j] : 1.0f);
            dx[j] = rf * (g - mg - xh * mgx);
        }
    }
}

/* column sums of dout * xhat and of dout: kc_colsum_add's stage 1 for two
 * sums at once (block (32, 8), a group of KC_COL_ROWS rows) */
static __global__ void g_ln_bwd_weight_part(double *pw, double *pb, const float *dout, const float *in,
                                            const float *mean, const float *rstd, int64_t n, int64_t d)
{
    __shared__ double shw[8][32], shb[8][32];
    int64_t j = blockIdx.x * (int64_t)32 + threadIdx.x;
    int64_t r0 = blockIdx.y * (int64_t)KC_COL_ROWS, r1 = r0 + KC_COL_ROWS < n ? r0 + KC_COL_ROWS : n;
    float fw = 0.0f, fb = 0.0f;
    if (j < d)
        for (int64_t i = r0 + threadIdx.y; i < r1; i += 8) {
            float dy = dout[i * d + j];
            fw += dy * ((in[i * d + j] - mean[i]) * rstd[i]);
            fb += dy;
        }
    shw[threadIdx.y][threadIdx.x] = fw, shb[threadIdx.y][threadIdx.x] = fb;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        double tw = 0.0, tb = 0.0;
        for (int y = 0; y < 8; y++)
            tw += shw[y][threadIdx.x], tb += shb[y][threadIdx.x];
        pw[blockIdx.y * d + j] = tw, pb[blockIdx.y * d + j] = tb;
    }
}

static void ln_layout(KcWs *w, int64_t n, int64_t d, double **pw, double **pb)
{
    *pw = (double *)kc_take(w, kc_colsum_parts(n, d), sizeof(double));
    *pb = (double *)kc_take(w, kc_colsum_parts(n, d), sizeof(double));
}

size_t kc_layernorm_workspace(int64_t n, int64_t d)
{
    KcWs w = kc_ws_count();
    double *pw, *pb;
    ln_layout(&w, n, d, &pw, &pb);
    return w.used;
}

int kc_layernorm_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, int64_t n, int64_t d, float eps)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "layernorm sizes");
    g_ln_fwd<<<kc_grid_rows(n), KC_THREADS, 0, ctx->stream>>>(out, mean, rstd, in, w, b, n, d, eps);
    KC_LAUNCHED(ctx, g_ln_fwd);
    return KC_OK;
}

int kc_layernorm_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                const float *mean, const float *rstd, int64_t n, int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "layernorm sizes");
    g_ln_bwd_input<<<kc_grid_rows(n), KC_THREADS, 0, ctx->stream>>>(din, dout, in, w, mean, rstd, n, d);
    KC_LAUNCHED(ctx, g_ln_bwd_input);
    return KC_OK;
}

int kc_layernorm_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                 const float *mean, const float *rstd, int64_t n, int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && d > 0, "layernorm sizes");
    int64_t groups = (n + KC_COL_ROWS - 1) / KC_COL_ROWS;
    if (groups == 0 || (!dw && !db))
        return KC_OK;
    KC_ARG(ctx, groups <= 65535, "layernorm rows (<= 16.7M)");
    KcWs ws = kc_ws_of(ctx);
    double *pw, *pb;
    ln_layout(&ws, n, d, &pw, &pb);
    KC_WS_FITS(ctx, ws, "kc_layernorm_backward_weight");
    dim3 grid((unsigned)((d + 31) / 32), (unsigned)groups), block(32, 8);
    g_ln_bwd_weight_part<<<grid, block, 0, ctx->stream>>>(pw, pb, dout, in, mean, rstd, n, d);
    KC_LAUNCHED(ctx, g_ln_bwd_weight_part);
    if (dw)
        KC_TRY(kc_colsum_finish(ctx, dw, pw, groups, d));
    if (db)
        KC_TRY(kc_colsum_finish(ctx, db, pb, groups, d));
    return KC_OK;
}

/* ---- embedding ------------------------------------------------------------------------- */

static __global__ void g_emb_fwd(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t t,
                                 int64_t d, int64_t total)
{
    GRID_STRIDE(i, total)
    {
        int64_t r = i / d, j = i % d;
        float e = wte[(int64_t)tokens[r] * d + j];
        out[i] = wpe ? e + wpe[(r % t) * d + j] : e;
    }
}

/* dwte: the positions are split among EMB_BUCKETS blocks by token % buckets,
 * each block walks every position in (b, t) order and adds those of its
 * tokens, so the adds into one row happen in the CPU's order, one at a
 * time: no atomics, the CPU's bits. Block x covers 256 columns. */
#define EMB_BUCKETS 64
#define EMB_CHUNK 1024

static __global__ void g_emb_bwd_wte(float *dwte, const float *dout, const int32_t *tokens, int64_t npos, int64_t d)
{
    __shared__ int32_t tok[EMB_CHUNK];
    int64_t j = blockIdx.x * (int64_t)KC_THREADS + threadIdx.x;
    int32_t bucket = (int32_t)blockIdx.y;
    for (int64_t p0 = 0; p0 < npos; p0 += EMB_CHUNK) {
        int64_t m = npos - p0 < EMB_CHUNK ? npos - p0 : EMB_CHUNK;
        __syncthreads();
        for (int64_t q = threadIdx.x; q < m; q += KC_THREADS)
            tok[q] = tokens[p0 + q];
        __syncthreads();
        if (j >= d)
            continue;
        for (int64_t q = 0; q < m; q++) {
            int32_t v = tok[q];
            if (v % EMB_BUCKETS != bucket)
                continue;
            dwte[(int64_t)v * d + j] += dout[(p0 + q) * d + j];
        }
    }
}

/* dwpe[i][j] += dout[b][i][j] for b in order */
static __global__ void g_emb_bwd_wpe(float *dwpe, const float *dout, int64_t B, int64_t t, int64_t d)
{
    GRID_STRIDE(i, t * d)
    {
        float acc = dwpe[i];
        for (int64_t b = 0; b < B; b++)
            acc += dout[b * t * d + i];
        dwpe[i] = acc;
    }
}

int kc_embedding_forward(KcCtx *ctx, float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                         int64_t t, int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B >= 0 && t > 0 && d > 0, "embedding sizes");
    g_emb_fwd<<<kc_grid(ctx, B * t * d), KC_THREADS, 0, ctx->stream>>>(out, tokens, wte, wpe, t, d, B * t * d);
    KC_LAUNCHED(ctx, g_emb_fwd);
    return KC_OK;
}

int kc_embedding_backward_weight(KcCtx *ctx, float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                 int64_t B, int64_t t, int64_t d)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B >= 0 && t > 0 && d > 0, "embedding sizes");
    KC_ARG(ctx, (d + KC_THREADS - 1) / KC_THREADS <= 0x7fffffff, "embedding width");
    if (B == 0)
        return KC_OK;
    if (dwte) {
        dim3 grid((unsigned)((d + KC_THREADS - 1) / KC_THREADS), EMB_BUCKETS);
        g_emb_bwd_wte<<<grid, KC_THREADS, 0, ctx->stream>>>(dwte, dout, tokens, B * t, d);
        KC_LAUNCHED(ctx, g_emb_bwd_wte);
    }
    if (dwpe) {
        g_emb_bwd_wpe<<<kc_grid(ctx, t * d), KC_THREADS, 0, ctx->stream>>>(dwpe, dout, B, t, d);
        KC_LAUNCHED(ctx, g_emb_bwd_wpe);
    }
    return KC_OK;
}

/* ---- losses ----------------------------------------------------------------------------------
 * Cross-entropy: one block per row writes the row's loss (double) and
 * flags (1 counted, 2 correct); one block then adds the rows in a fixed
 * order. MSE: a fixed number of blocks (a function of n only, so the
 * grouping does not depend on the GPU) write partial sums, one block adds
 * them. */

static __global__ void g_xent_rows(float *dlogits, double *rloss, int32_t *rflag, const float *logits,
                                   const int32_t *targets, int64_t n, int64_t c, double scale)
{
    __shared__ float shv[KC_THREADS];
    __shared__ int64_t shi[KC_THREADS];
    __shared__ double shd[KC_THREADS];
    const int64_t tid = threadIdx.x;
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const float *x = logits + r * c;
        float *dx = dlogits ? dlogits + r * c : NULL;
        int32_t tg = targets[r];
        if (tg < 0) { /* ignored: zero gradient, not counted */
            if (dx)
                for (int64_t j = tid; j < c; j += KC_THREADS)
                    dx[j] = 0.0f;
            if (tid == 0)
                rloss[r] = 0.0, rflag[r] = 0;
            continue;
        }
        /* the first maximum: each thread's first in its stride, then the
         * larger value or, on a tie, the smaller index */
        float mx = -INFINITY;
        int64_t am = INT64_MAX;
        if (tid < c)
            mx = x[tid], am = tid;
        for (int64_t j = tid + KC_THREADS; j < c; j += KC_THREADS)
            if (x[j] > mx)
                mx = x[j], am = j;
        shv[tid] = mx, shi[tid] = am;
        __syncthreads();
        for (int s = KC_THREADS / 2; s > 0; s >>= 1) {
            if (tid < s) {
                float v2 = shv[tid + s];
                int64_t i2 = shi[tid + s];
                if (v2 > shv[tid] || (v2 == shv[tid] && i2 < shi[tid]))
                    shv[tid] = v2, shi[tid] = i2;
            }
            __syncthreads();
        }
        mx = shv[0], am = shi[0];
        __syncthreads();
        /* exps staged in dlogits, as on the CPU */
        float s = 0.0f;
        for (int64_t j = tid; j < c; j += KC_THREADS) {
            float e = expf(x[j] - mx);
            if (dx)
                dx[j] = e;
            s += e;
        }
        double sum = kc_block_sum<double>((double)s, shd);
        if (tid == 0) {
            /* a target past the classes (the loader checks) gives NaN */
            rloss[r] = tg < c ? log(sum) - ((double)x[tg] - (double)mx) : (double)NAN;
            rflag[r] = 1 | (am == tg ? 2 : 0);
        }
        if (dx) {
            double inv = 1.0 / sum;
            for (int64_t j = tid; j < c; j += KC_THREADS)
                dx[j] = (float)(((double)dx[j] * inv - (j == tg ? 1.0 : 0.0)) * scale);
        }
    }
}

static __global__ void g_xent_total(double *res, const double *rloss, const int32_t *rflag, int64_t n)
{
    __shared__ double shd[KC_THREADS];
    __shared__ long long shl[KC_THREADS];
    double l = 0.0;
    long long cnt = 0, ok = 0;
    for (int64_t i = threadIdx.x; i < n; i += KC_THREADS) {
        l += rloss[i];
        cnt += rflag[i] & 1;
        ok += (rflag[i] >> 1) & 1;
    }
    l = kc_block_sum<double>(l, shd);
    cnt = kc_block_sum<long long>(cnt, shl);
    ok = kc_block_sum<long long>(ok, shl);
    if (threadIdx.x == 0)
        res[0] = l, res[1] = (double)cnt, res[2] = (double)ok;
}

/* blocks of the partial sums over n elements: a function of n alone */
static int64_t sum_groups(int64_t n)
{
    int64_t g = (n + KC_THREADS * 16 - 1) / (KC_THREADS * 16);
    return g < 1 ? 1 : g > 1024 ? 1024 : g;
}

static __global__ void g_mse_part(double *part, float *dout, const float *out, const float *target, int64_t n,
                                  double scale)
{
    __shared__ double sh[KC_THREADS];
    double acc = 0.0;
    GRID_STRIDE(i, n)
    {
        double e = (double)out[i] - (double)target[i];
        acc += e * e;
        if (dout)
            dout[i] = (float)(2.0 * e * scale);
    }
    acc = kc_block_sum<double>(acc, sh);
    if (threadIdx.x == 0)
        part[blockIdx.x] = acc;
}

static __global__ void g_sum_total(double *res, const double *part, int64_t groups)
{
    __shared__ double sh[KC_THREADS];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < groups; i += KC_THREADS)
        acc += part[i];
    acc = kc_block_sum<double>(acc, sh);
    if (threadIdx.x == 0)
        res[0] = acc;
}

typedef struct LossWs {
    double *rloss; /* cross-entropy: per row */
    int32_t *rflag;
    double *part;  /* mse: per group */
} LossWs;

static LossWs loss_layout(KcWs *w, int64_t n, int xent)
{
    LossWs l = {NULL, NULL, NULL};
    if (xent) {
        l.rloss = (double *)kc_take(w, n, sizeof(double));
        l.rflag = (int32_t *)kc_take(w, n, sizeof(int32_t));
    } else {
        l.part = (double *)kc_take(w, sum_groups(n), sizeof(double));
    }
    return l;
}

size_t kc_loss_workspace(int64_t n)
{
    KcWs a = kc_ws_count(), b = kc_ws_count();
    loss_layout(&a, n, 1);
    loss_layout(&b, n, 0);
    return a.used > b.used ? a.used : b.used;
}

int kc_cross_entropy(KcCtx *ctx, float *dlogits, const float *logits, const int32_t *targets, int64_t n, int64_t c,
                     double scale, double *d_res)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0 && c > 0, "cross-entropy sizes");
    KcWs ws = kc_ws_of(ctx);
    LossWs l = loss_layout(&ws, n, 1);
    KC_WS_FITS(ctx, ws, "kc_cross_entropy");
    if (n > 0) {
        g_xent_rows<<<kc_grid_rows(n), KC_THREADS, 0, ctx->stream>>>(dlogits, l.rloss, l.rflag, logits, targets, n, c,
                                                                     scale);
        KC_LAUNCHED(ctx, g_xent_rows);
    }
    g_xent_total<<<1, KC_THREADS, 0, ctx->stream>>>(d_res, l.rloss, l.rflag, n);
    KC_LAUNCHED(ctx, g_xent_total);
    return KC_OK;
}

int kc_mse(KcCtx *ctx, float *dout, const float *out, const float *target, int64_t n, double scale, double *d_res)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "mse size");
    KcWs ws = kc_ws_of(ctx);
    LossWs l = loss_layout(&ws, n, 0);
    KC_WS_FITS(ctx, ws, "kc_mse");
    int64_t g = sum_groups(n);
    g_mse_part<<<(unsigned)g, KC_THREADS, 0, ctx->stream>>>(l.part, dout, out, target, n, scale);
    KC_LAUNCHED(ctx, g_mse_part);
    g_sum_total<<<1, KC_THREADS, 0, ctx->stream>>>(d_res, l.part, g);
    KC_LAUNCHED(ctx, g_sum_total);
    return KC_OK;
}

/* ---- sum of squares (the global gradient norm) ------------------------------------------ */

static __global__ void g_sumsq_part(double *part, const float *g, int64_t n)
{
    __shared__ double sh[KC_THREADS];
    double acc = 0.0;
    GRID_STRIDE(i, n)
    acc += (double)g[i] * (double)g[i];
    acc = kc_block_sum<double>(acc, sh);
    if (threadIdx.x == 0)
        part[blockIdx.x] = acc;
}

size_t kc_sumsq_workspace(int64_t n)
{
    KcWs w = kc_ws_count();
    kc_take(&w, sum_groups(n), sizeof(double));
    return w.used;
}

int kc_sumsq(KcCtx *ctx, const float *g, int64_t n, double *d_res)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, n >= 0, "sumsq size");
    KcWs ws = kc_ws_of(ctx);
    int64_t groups = sum_groups(n);
    double *part = (double *)kc_take(&ws, groups, sizeof(double));
    KC_WS_FITS(ctx, ws, "kc_sumsq");
    g_sumsq_part<<<(unsigned)groups, KC_THREADS, 0, ctx->stream>>>(part, g, n);
    KC_LAUNCHED(ctx, g_sumsq_part);
    g_sum_total<<<1, KC_THREADS, 0, ctx->stream>>>(d_res, part, groups);
    KC_LAUNCHED(ctx, g_sum_total);
    return KC_OK;
}

/* ---- batchnorm2d ------------------------------------------------------------------------
 * One block per channel; each thread sums its share of the channel's
 * B x HW values (sample-major) in float, the block's tree adds them in
 * double, as layernorm's rows. mean and rstd are rounded to float once and
 * the output uses those floats, as the backward will; thread 0 updates the
 * running statistics from the double mean and variance, as the CPU. */

static __global__ void g_bn_fwd(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                                int64_t B, int64_t C, int64_t HW, float eps, float *rmean, float *rvar,
                                long long *nbt, double momentum)
{
    __shared__ double sh[KC_THREADS];
    int64_t n = B * HW;
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        float s = 0.0f;
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS)
            s += in[((k / HW) * C + c) * HW + k % HW];
        double md = kc_block_sum<double>((double)s, sh) / (double)n;
        float mf = (float)md;
        float v = 0.0f;
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS) {
            float d = in[((k / HW) * C + c) * HW + k % HW] - mf;
            v += d * d;
        }
        double var = kc_block_sum<double>((double)v, sh);
        float rf = (float)(1.0 / sqrt(var / (double)n + (double)eps));
        float wc = w[c], bc = b[c];
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS) {
            int64_t at = ((k / HW) * C + c) * HW + k % HW;
            out[at] = (in[at] - mf) * rf * wc + bc;
        }
        if (threadIdx.x == 0) {
            mean[c] = mf, rstd[c] = rf;
            if (rmean) {
                rmean[c] = (float)(momentum * md + (1.0 - momentum) * (double)rmean[c]);
                rvar[c] = (float)(momentum * (var / ((double)n - 1.0)) + (1.0 - momentum) * (double)rvar[c]);
                if (c == 0 && nbt)
                    *nbt += 1;
            }
        }
    }
}

static __global__ void g_bn_eval(float *out, const float *in, const float *w, const float *b, const float *rmean,
                                 const float *rvar, int64_t B, int64_t C, int64_t HW, float eps)
{
    int64_t n = B * HW;
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        float mf = rmean[c], rf = (float)(1.0 / sqrt((double)rvar[c] + (double)eps)), wc = w[c], bc = b[c];
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS) {
            int64_t at = ((k / HW) * C + c) * HW + k % HW;
            out[at] = (in[at] - mf) * rf * wc + bc;
        }
    }
}

/* input: din = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * w; or
 * weight (din NULL): dw += sum(dout xhat), db += sum(dout) */
static __global__ void g_bn_bwd(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                                const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    __shared__ double sh[KC_THREADS];
    int64_t n = B * HW;
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        float mf = mean[c], rf = rstd[c], wc = din ? w[c] : 1.0f;
        float sg = 0.0f, sgx = 0.0f;
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS) {
            int64_t at = ((k / HW) * C + c) * HW + k % HW;
            float g = dout[at] * wc;
            sg += g;
            sgx += g * ((in[at] - mf) * rf);
        }
        double tg = kc_block_sum<double>((double)sg, sh), tgx = kc_block_sum<double>((double)sgx, sh);
        if (!din) {
            if (threadIdx.x == 0)
                dw[c] += (float)tgx, db[c] += (float)tg;
            continue;
        }
        float mg = (float)(tg / (double)n), mgx = (float)(tgx / (double)n);
        for (int64_t k = threadIdx.x; k < n; k += KC_THREADS) {
            int64_t at = ((k / HW) * C + c) * HW + k % HW;
            float xh = (in[at] - mf) * rf;
            float g = dout[at] * wc;
            din[at] = rf * (g - mg - xh * mgx);
        }
    }
}

int kc_batchnorm2d_forward(KcCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *w,
                           const float *b, int64_t B, int64_t C, int64_t HW, float eps, float *rmean, float *rvar,
                           int64_t *nbt, double momentum)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B > 0 && C > 0 && HW > 0 && B * HW > 1, "batchnorm2d sizes");
    g_bn_fwd<<<kc_grid_rows(C), KC_THREADS, 0, ctx->stream>>>(out, mean, rstd, in, w, b, B, C, HW, eps, rmean, rvar,
                                                                (long long *)nbt, momentum);
    KC_LAUNCHED(ctx, g_bn_fwd);
    return KC_OK;
}

int kc_batchnorm2d_eval(KcCtx *ctx, float *out, const float *in, const float *w, const float *b, const float *rmean,
                        const float *rvar, int64_t B, int64_t C, int64_t HW, float eps)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B > 0 && C > 0 && HW > 0, "batchnorm2d sizes");
    g_bn_eval<<<kc_grid_rows(C), KC_THREADS, 0, ctx->stream>>>(out, in, w, b, rmean, rvar, B, C, HW, eps);
    KC_LAUNCHED(ctx, g_bn_eval);
    return KC_OK;
}

int kc_batchnorm2d_backward_input(KcCtx *ctx, float *din, const float *dout, const float *in, const float *w,
                                  const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B > 0 && C > 0 && HW > 0 && din, "batchnorm2d sizes");
    g_bn_bwd<<<kc_grid_rows(C), KC_THREADS, 0, ctx->stream>>>(din, NULL, NULL, dout, in, w, mean, rstd, B, C, HW);
    KC_LAUNCHED(ctx, g_bn_bwd);
    return KC_OK;
}

int kc_batchnorm2d_backward_weight(KcCtx *ctx, float *dw, float *db, const float *dout, const float *in,
                                   const float *mean, const float *rstd, int64_t B, int64_t C, int64_t HW)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B > 0 && C > 0 && HW > 0 && dw && db, "batchnorm2d sizes");
    g_bn_bwd<<<kc_grid_rows(C), KC_THREADS, 0, ctx->stream>>>(NULL, dw, db, dout, in, NULL, mean, rstd, B, C, HW);
    KC_LAUNCHED(ctx, g_bn_bwd);
    return KC_OK;
}

/* ---- transpose: out [P, nb, M, na, Q] from in [P, na, M, nb, Q], one element a thread ---- */

static __global__ void g_transpose(float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb,
                                   int64_t Q)
{
    int64_t total = P * na * M * nb * Q;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t q = k % Q, r = k / Q;
        int64_t i = r % na;
        r /= na;
        int64_t m = r % M;
        r /= M;
        int64_t j = r % nb, p = r / nb;
        out[k] = in[(((p * na + i) * M + m) * nb + j) * Q + q];
    }
}

int kc_transpose(KcCtx *ctx, float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, P >= 0 && na > 0 && M > 0 && nb > 0 && Q > 0, "transpose sizes");
    g_transpose<<<kc_grid(ctx, P * na * M * nb * Q), KC_THREADS, 0, ctx->stream>>>(out, in, P, na, M, nb, Q);
    KC_LAUNCHED(ctx, g_transpose);
    return KC_OK;
}
