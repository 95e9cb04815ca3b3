/* kernels/cuda/kc_dense.cu: conv2d through cuDNN (forward, backward data,
 * backward filter, algorithms chosen once per plan), its bias, and the
 * pooling kernels (max, average, adaptive average) as own kernels.
 *
 * Why not cuDNN's pooling: the CPU's max pooling records the argmax index
 * (first maximum on ties, NaN wins) for a backward that scatters to it,
 * which cuDNN does not expose; and own kernels that repeat the CPU loops
 * give its bits exactly, for a memory-bound pass. The backwards gather: each
 * input element adds the windows that cover it in increasing output order,
 * which is the order in which the CPU's scatter adds into it, so the bits
 * are the CPU's and no atomics are needed. */
#include "kc_internal.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define GRID_STRIDE(i, n)                                                                                              \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- conv2d ---------------------------------------------------------------------------------
 * Layout NCHW, cross-correlation (PyTorch's conv2d), groups 1, dilation 1.
 * Math types: KC_FP32 asks for CUDNN_FMA_MATH (no TF32 tensor cores: cuDNN
 * would otherwise use them for fp32 data); KC_TF32 and KC_BF16 allow tensor
 * ops (fp32 data, TF32 products: cuDNN's legacy API keeps y in x's type,
 * so a bf16 convolution would round its output; not worth it for the
 * small CNNs of the examples). The bias is written first and the
 * convolution added with beta = 1, as the CPU's GEMM does; the filter
 * gradient is added with beta = 1; the bias gradient is an own reduction. */

static int dims_fit(const KConv *g, int64_t B)
{
    int64_t v[] = {B, g->c, g->h, g->w, g->oc, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] < 0 || v[i] > INT_MAX)
            return 0;
    return B > 0 && g->c > 0 && g->oc > 0 && g->kh > 0 && g->kw > 0 && g->sh > 0 && g->sw > 0;
}

void kc_conv_plan_free(KcConvPlan *plan)
{
    if (plan->x)
        (void)cudnnDestroyTensorDescriptor(plan->x);
    if (plan->y)
        (void)cudnnDestroyTensorDescriptor(plan->y);
    if (plan->w)
        (void)cudnnDestroyFilterDescriptor(plan->w);
    if (plan->conv)
        (void)cudnnDestroyConvolutionDescriptor(plan->conv);
    plan->x = plan->y = NULL;
    plan->w = NULL;
    plan->conv = NULL;
    plan->ready = 0;
}

/* the tensor-op math types a KC_FP32 plan refuses */
static int uses_tensor_ops(cudnnMathType_t m)
{
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* Picks from perf results (cuDNN's order, best first): the first that
 * succeeded, is deterministic (when asked), uses no tensor ops in KC_FP32
 * and whose workspace, asked again with the math type it will run with
 * (always CUDNN_FMA_MATH in KC_FP32: DEFAULT_MATH would allow TF32 there),
 * fits the limit. */
#define PICK_ALGO(ctx, plan, perf, count, need_det, getws, out_algo, out_math, out_ws, limit, what)                   \
    do {                                                                                                               \
        int found_ = 0;                                                                                                \
        for (int i_ = 0; i_ < (count) && !found_; i_++) {                                                              \
            if ((perf)[i_].status != CUDNN_STATUS_SUCCESS)                                                             \
                continue;                                                                                              \
            if ((need_det) && (perf)[i_].determinism != CUDNN_DETERMINISTIC)                                           \
                continue;                                                                                              \
            if ((plan)->prec == KC_FP32 && uses_tensor_ops((perf)[i_].mathType))                                       \
                continue;                                                                                              \
            cudnnMathType_t m_ = (plan)->prec == KC_FP32 ? CUDNN_FMA_MATH : (perf)[i_].mathType;                      \
            if (cudnnSetConvolutionMathType((plan)->conv, m_) != CUDNN_STATUS_SUCCESS)                                 \
                continue;                                                                                              \
            size_t ws_ = 0;                                                                                            \
            if (getws != CUDNN_STATUS_SUCCESS || ws_ > (limit))                                                        \
                continue;                                                                                              \
            out_algo = (perf)[i_].algo, out_math = m_, out_ws = ws_, found_ = 1;                                       \
        }                                                                                                              \
        if (!found_)                                                                                                   \
            return kc_fail((ctx), KC_ERR_CUDNN, __FILE__, __LINE__, what,                                              \
                           "no deterministic algorithm fits the precision and the workspace limit");                   \
    } while (0)

int kc_conv_plan(KcCtx *ctx, KcConvPlan *plan, const KConv *g, int64_t B, size_t ws_limit)
{
    KC_ENTER(ctx);
    memset(plan, 0, sizeof *plan);
    KC_ARG(ctx, dims_fit(g, B), "conv2d geometry (positive sizes that fit an int)");
    plan->g = *g;
    plan->B = B;
    plan->prec = ctx->prec;
    KC_DNN(ctx, cudnnCreateTensorDescriptor(&plan->x));
    KC_DNN(ctx, cudnnCreateTensorDescriptor(&plan->y));
    KC_DNN(ctx, cudnnCreateFilterDescriptor(&plan->w));
    KC_DNN(ctx, cudnnCreateConvolutionDescriptor(&plan->conv));
    KC_DNN(ctx, cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)B, (int)g->c, (int)g->h,
                                           (int)g->w));
    KC_DNN(ctx, cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)g->oc, (int)g->c,
                                           (int)g->kh, (int)g->kw));
    KC_DNN(ctx, cudnnSetConvolution2dDescriptor(plan->conv, (int)g->ph, (int)g->pw, (int)g->sh, (int)g->sw, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    int on, oc, ohh, oww;
    KC_DNN(ctx, cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &on, &oc, &ohh, &oww));
    KC_ARG(ctx, on == B && oc == g->oc && ohh == g->oh && oww == g->ow, "conv2d output size (cuDNN disagrees)");
    KC_DNN(ctx, cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)B, (int)g->oc, (int)g->oh,
                                           (int)g->ow));
    cudnnMathType_t ask = ctx->prec == KC_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    size_t most = 0;

    KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, ask));
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int nf = 0;
    KC_DNN(ctx, cudnnGetConvolutionForwardAlgorithm_v7(ctx->dnn, plan->x, plan->w, plan->conv, plan->y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nf, fp));
    PICK_ALGO(ctx, plan, fp, nf, 1,
              cudnnGetConvolutionForwardWorkspaceSize(ctx->dnn, plan->x, plan->w, plan->conv, plan->y, fp[i_].algo,
                                                      &ws_),
              plan->fwd, plan->fwd_math, most, ws_limit, "conv2d forward algorithm");

    KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, ask));
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int nd = 0;
    size_t wd = 0;
    KC_DNN(ctx, cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx->dnn, plan->w, plan->y, plan->conv, plan->x,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, dp));
    PICK_ALGO(ctx, plan, dp, nd, 1,
              cudnnGetConvolutionBackwardDataWorkspaceSize(ctx->dnn, plan->w, plan->y, plan->conv, plan->x, dp[i_].algo,
                                                           &ws_),
              plan->bwd_data, plan->data_math, wd, ws_limit, "conv2d backward data algorithm");
    most = wd > most ? wd : most;

    KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, ask));
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int nw = 0;
    size_t ww = 0;
    KC_DNN(ctx, cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx->dnn, plan->x, plan->y, plan->conv, plan->w,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, wp));
    PICK_ALGO(ctx, plan, wp, nw, 1,
              cudnnGetConvolutionBackwardFilterWorkspaceSize(ctx->dnn, plan->x, plan->y, plan->conv, plan->w,
                                                             wp[i_].algo, &ws_),
              plan->bwd_filter, plan->filter_math, ww, ws_limit, "conv2d backward filter algorithm");
    most = ww > most ? ww : most;

    plan->ws_bytes = most;
    plan->ready = 1;
    return KC_OK;
}

#define PLAN_READY(ctx, plan) KC_ARG(ctx, (plan)->ready, "conv2d plan made by kc_conv_plan")
#define PLAN_WS(ctx, plan, what)                                                                                       \
    do {                                                                                                               \
        if ((plan)->ws_bytes > (ctx)->ws_bytes)                                                                        \
            return kc_fail_ws((ctx), __FILE__, __LINE__, what, (plan)->ws_bytes);                                      \
    } while (0)

/* out (B, OC, P) = b[oc] */
static __global__ void g_conv_bias(float *out, const float *b, int64_t oc, int64_t P, int64_t total)
{
    GRID_STRIDE(i, total)
    out[i] = b[(i / P) % oc];
}

/* db[o] += sum over samples and positions of dout[s, o, :]: one block per
 * channel, float partials, a double tree */
static __global__ void g_conv_db(float *db, const float *dout, int64_t B, int64_t oc, int64_t P)
{
    __shared__ double sh[KC_THREADS];
    for (int64_t o = blockIdx.x; o < oc; o += gridDim.x) {
        float s = 0.0f;
        for (int64_t q = threadIdx.x; q < B * P; q += KC_THREADS)
            s += dout[((q / P) * oc + o) * P + q % P];
        double t = kc_block_sum<double>((double)s, sh);
        if (threadIdx.x == 0)
            db[o] += (float)t;
    }
}

int kc_conv2d_forward(KcCtx *ctx, const KcConvPlan *plan, float *out, const float *in, const float *w, const float *b)
{
    KC_ENTER(ctx);
    PLAN_READY(ctx, plan);
    PLAN_WS(ctx, plan, "kc_conv2d_forward");
    const KConv *g = &plan->g;
    float alpha = 1.0f, beta = 0.0f;
    if (b) {
        int64_t P = g->oh * g->ow, total = plan->B * g->oc * P;
        g_conv_bias<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(out, b, g->oc, P, total);
        KC_LAUNCHED(ctx, g_conv_bias);
        beta = 1.0f;
    }
    KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, plan->fwd_math));
    KC_DNN(ctx, cudnnConvolutionForward(ctx->dnn, &alpha, plan->x, in, plan->w, w, plan->conv, plan->fwd, ctx->ws,
                                        plan->ws_bytes, &beta, plan->y, out));
    return KC_OK;
}

int kc_conv2d_backward_input(KcCtx *ctx, const KcConvPlan *plan, float *din, const float *dout, const float *w)
{
    KC_ENTER(ctx);
    PLAN_READY(ctx, plan);
    PLAN_WS(ctx, plan, "kc_conv2d_backward_input");
    float alpha = 1.0f, beta = 0.0f;
    KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, plan->data_math));
    KC_DNN(ctx, cudnnConvolutionBackwardData(ctx->dnn, &alpha, plan->w, w, plan->y, dout, plan->conv, plan->bwd_data,
                                             ctx->ws, plan->ws_bytes, &beta, plan->x, din));
    return KC_OK;
}

int kc_conv2d_backward_weight(KcCtx *ctx, const KcConvPlan *plan, float *dw, float *db, const float *dout,
                              const float *in)
{
    KC_ENTER(ctx);
    PLAN_READY(ctx, plan);
    PLAN_WS(ctx, plan, "kc_conv2d_backward_weight");
    const KConv *g = &plan->g;
    if (dw) {
        float alpha = 1.0f, beta = 1.0f;
        KC_DNN(ctx, cudnnSetConvolutionMathType(plan->conv, plan->filter_math));
        KC_DNN(ctx, cudnnConvolutionBackwardFilter(ctx->dnn, &alpha, plan->x, in, plan->y, dout, plan->conv,
                                                   plan->bwd_filter, ctx->ws, plan->ws_bytes, &beta, plan->w, dw));
    }
    if (db) {
        g_conv_db<<<kc_grid_rows(g->oc), KC_THREADS, 0, ctx->stream>>>(db, dout, plan->B, g->oc, g->oh * g->ow);
        KC_LAUNCHED(ctx, g_conv_db);
    }
    return KC_OK;
}

/* ---- pooling ------------------------------------------------------------------------------
 * One thread per output (forward) or input (backward) element over the
 * B * C planes; windows clipped to the input exactly as k_dense.c clips
 * them. */

static __global__ void g_maxpool_fwd(float *out, int32_t *idx, const float *in, KPool g, int64_t total)
{
    int64_t HW = g.h * g.w, OP = g.oh * g.ow;
    GRID_STRIDE(o, total)
    {
        int64_t pl = o / OP, op = o % OP, oy = op / g.ow, ox = op % g.ow;
        const float *x = in + pl * HW;
        int64_t y0 = oy * g.sh - g.ph, y1 = y0 + g.kh;
        y0 = y0 < 0 ? 0 : y0, y1 = y1 > g.h ? g.h : y1;
        int64_t x0 = ox * g.sw - g.pw, x1 = x0 + g.kw;
        x0 = x0 < 0 ? 0 : x0, x1 = x1 > g.w ? g.w : x1;
        int64_t best = y0 * g.w + x0;
        float bv = x[best];
        for (int64_t iy = y0; iy < y1; iy++)
            for (int64_t ix = x0; ix < x1; ix++) {
                float v = x[iy * g.w + ix];
                if (v > bv || isnan(v))
                    bv = v, best = iy * g.w + ix;
            }
        out[o] = bv;
        idx[o] = (int32_t)best;
    }
}

/* outputs along one axis whose (unclipped) window covers input i:
 * o * s - p <= i < o * s - p + k, clipped to [0, on) */
static __device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t on, int64_t *lo,
                                                int64_t *hi)
{
    int64_t a = i + p - k + 1; /* o * s >= a */
    int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t h = (i + p) / s + 1; /* o * s <= i + p */
    *lo = l, *hi = h < on ? h : on;
}

static __global__ void g_maxpool_bwd(float *din, const float *dout, const int32_t *idx, KPool g, int64_t total)
{
    int64_t HW = g.h * g.w, OP = g.oh * g.ow;
    GRID_STRIDE(e, total)
    {
        int64_t pl = e / HW, pos = e % HW, iy = pos / g.w, ix = pos % g.w;
        int64_t ylo, yhi, xlo, xhi;
        covering(iy, g.kh, g.sh, g.ph, g.oh, &ylo, &yhi);
        covering(ix, g.kw, g.sw, g.pw, g.ow, &xlo, &xhi);
        const float *dy = dout + pl * OP;
        const int32_t *ix_ = idx + pl * OP;
        float acc = 0.0f;
        for (int64_t oy = ylo; oy < yhi; oy++)
            for (int64_t ox = xlo; ox < xhi; ox++)
                if (ix_[oy * g.ow + ox] == pos)
                    acc += dy[oy * g.ow + ox];
        din[e] = acc;
    }
}

static __global__ void g_avgpool_fwd(float *out, const float *in, KPool g, int64_t total)
{
    int64_t HW = g.h * g.w, OP = g.oh * g.ow;
    float div = (float)(g.kh * g.kw);
    GRID_STRIDE(o, total)
    {
        int64_t pl = o / OP, op = o % OP, oy = op / g.ow, ox = op % g.ow;
        const float *x = in + pl * HW;
        int64_t y0 = oy * g.sh - g.ph, y1 = y0 + g.kh;
        y0 = y0 < 0 ? 0 : y0, y1 = y1 > g.h ? g.h : y1;
        int64_t x0 = ox * g.sw - g.pw, x1 = x0 + g.kw;
        x0 = x0 < 0 ? 0 : x0, x1 = x1 > g.w ? g.w : x1;
        float s = 0.0f;
        for (int64_t iy = y0; iy < y1; iy++)
            for (int64_t ix = x0; ix < x1; ix++)
                s += x[iy * g.w + ix];
        out[o] = s / div;
    }
}

static __global__ void g_avgpool_bwd(float *din, const float *dout, KPool g, int64_t total)
{
    int64_t HW = g.h * g.w, OP = g.oh * g.ow;
    float div = (float)(g.kh * g.kw);
    GRID_STRIDE(e, total)
    {
        int64_t pl = e / HW, pos = e % HW, iy = pos / g.w, ix = pos % g.w;
        int64_t ylo, yhi, xlo, xhi;
        covering(iy, g.kh, g.sh, g.ph, g.oh, &ylo, &yhi);
        covering(ix, g.kw, g.sw, g.pw, g.ow, &xlo, &xhi);
        const float *dy = dout + pl * OP;
        float acc = 0.0f;
        for (int64_t oy = ylo; oy < yhi; oy++)
            for (int64_t ox = xlo; ox < xhi; ox++)
                acc += dy[oy * g.ow + ox] / div;
        din[e] = acc;
    }
}

/* adaptive windows: [floor(i len / n), ceil((i + 1) len / n)) */
static __device__ __forceinline__ int64_t ad_start(int64_t i, int64_t len, int64_t n)
{
    return i * len / n;
}
static __device__ __forceinline__ int64_t ad_end(int64_t i, int64_t len, int64_t n)
{
    return ((i + 1) * len + n - 1) / n;
}

static __global__ void g_adaptive_fwd(float *out, const float *in, int64_t h, int64_t w, int64_t oh, int64_t ow,
                                      int64_t total)
{
    GRID_STRIDE(o, total)
    {
        int64_t pl = o / (oh * ow), op = o % (oh * ow), oy = op / ow, ox = op % ow;
        const float *x = in + pl * h * w;
        int64_t y0 = ad_start(oy, h, oh), y1 = ad_end(oy, h, oh);
        int64_t x0 = ad_start(ox, w, ow), x1 = ad_end(ox, w, ow);
        float s = 0.0f;
        for (int64_t iy = y0; iy < y1; iy++)
            for (int64_t ix = x0; ix < x1; ix++)
                s += x[iy * w + ix];
        out[o] = s / (float)((y1 - y0) * (x1 - x0));
    }
}

/* the windows are not a fixed stride apart: test every output row and
 * column (oh, ow are small: 1 to 7 in the examples) */
static __global__ void g_adaptive_bwd(float *din, const float *dout, int64_t h, int64_t w, int64_t oh, int64_t ow,
                                      int64_t total)
{
    GRID_STRIDE(e, total)
    {
        int64_t pl = e / (h * w), pos = e % (h * w), iy = pos / w, ix = pos % w;
        const float *dy = dout + pl * oh * ow;
        float acc = 0.0f;
        for (int64_t oy = 0; oy < oh; oy++) {
            int64_t y0 = ad_start(oy, h, oh), y1 = ad_end(oy, h, oh);
            if (iy < y0 || iy >= y1)
                continue;
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t x0 = ad_start(ox, w, ow), x1 = ad_end(ox, w, ow);
                if (ix < x0 || ix >= x1)
                    continue;
                acc += dy[oy * ow + ox] / (float)((y1 - y0) * (x1 - x0));
            }
        }
        din[e] = acc;
    }
}

#define POOL_ARGS(ctx, g)                                                                                              \
    KC_ARG(ctx, B >= 0 && (g)->c > 0 && (g)->h > 0 && (g)->w > 0 && (g)->oh > 0 && (g)->ow > 0 && (g)->kh > 0 &&     \
                    (g)->kw > 0 && (g)->sh > 0 && (g)->sw > 0 && (g)->ph >= 0 && (g)->pw >= 0,                         \
           "pooling geometry")

int kc_maxpool2d_forward(KcCtx *ctx, float *out, int32_t *idx, const float *in, int64_t B, const KPool *g)
{
    KC_ENTER(ctx);
    POOL_ARGS(ctx, g);
    int64_t total = B * g->c * g->oh * g->ow;
    g_maxpool_fwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(out, idx, in, *g, total);
    KC_LAUNCHED(ctx, g_maxpool_fwd);
    return KC_OK;
}

int kc_maxpool2d_backward(KcCtx *ctx, float *din, const float *dout, const int32_t *idx, int64_t B, const KPool *g)
{
    KC_ENTER(ctx);
    POOL_ARGS(ctx, g);
    int64_t total = B * g->c * g->h * g->w;
    g_maxpool_bwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(din, dout, idx, *g, total);
    KC_LAUNCHED(ctx, g_maxpool_bwd);
    return KC_OK;
}

int kc_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, const KPool *g)
{
    KC_ENTER(ctx);
    POOL_ARGS(ctx, g);
    int64_t total = B * g->c * g->oh * g->ow;
    g_avgpool_fwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(out, in, *g, total);
    KC_LAUNCHED(ctx, g_avgpool_fwd);
    return KC_OK;
}

int kc_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, const KPool *g)
{
    KC_ENTER(ctx);
    POOL_ARGS(ctx, g);
    int64_t total = B * g->c * g->h * g->w;
    g_avgpool_bwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(din, dout, *g, total);
    KC_LAUNCHED(ctx, g_avgpool_bwd);
    return KC_OK;
}

int kc_adaptive_avgpool2d_forward(KcCtx *ctx, float *out, const float *in, int64_t B, int64_t c, int64_t h, int64_t w,
                                  int64_t oh, int64_t ow)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B >= 0 && c > 0 && h > 0 && w > 0 && oh > 0 && ow > 0, "adaptive pooling sizes");
    int64_t total = B * c * oh * ow;
    g_adaptive_fwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(out, in, h, w, oh, ow, total);
    KC_LAUNCHED(ctx, g_adaptive_fwd);
    return KC_OK;
}

int kc_adaptive_avgpool2d_backward(KcCtx *ctx, float *din, const float *dout, int64_t B, int64_t c, int64_t h,
                                   int64_t w, int64_t oh, int64_t ow)
{
    KC_ENTER(ctx);
    KC_ARG(ctx, B >= 0 && c > 0 && h > 0 && w > 0 && oh > 0 && ow > 0, "adaptive pooling sizes");
    int64_t total = B * c * h * w;
    g_adaptive_bwd<<<kc_grid(ctx, total), KC_THREADS, 0, ctx->stream>>>(din, dout, h, w, oh, ow, total);
    KC_LAUNCHED(ctx, g_adaptive_bwd);
    return KC_OK;
}
