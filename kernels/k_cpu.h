/* kernels/k_cpu.h: the CPU reference kernels, one forward/backward pair per
 * layer of the DSL, over flat float arrays with explicit sizes (llm.c's
 * style). kernels/cuda/ will mirror these names.
 *
 * Conventions, for every function below:
 *   - B is the number of samples (a micro-batch); shapes are row-major and
 *     written as comments, e.g. in (B, C, H, W).
 *   - Forward functions overwrite their outputs.
 *   - Backward functions are split the way zero-bubble schedules split them:
 *     *_backward_input writes (overwrites) the input gradient; 
 *     *_backward_weight ADDS the weight gradients into dw/db (accumulation
 *     across micro-batches, in the order the caller calls it). A full
 *     backward is input then weight, with the same arithmetic, so split and
 *     unsplit schedules give bit-identical results.
 *   - Nothing allocates; scratch space is passed in, its size given by a
 *     *_scratch function where one is needed.
 *   - Single-threaded and deterministic: the same inputs give the same bits.
 *   - Matrix products go through k_gemm: OpenBLAS's cblas_sgemm (one
 *     thread) in fp32, or kernels/cpu/k_gemm.c's own bf16 GEMM.
 */
#ifndef PIPE_K_CPU_H
#define PIPE_K_CPU_H

#include <stdint.h>

/* ---- matrix products ------------------------------------------------------- */
/* The plan's precision of the matrix products of linear and conv2d (and of
 * the linears inside transformer_block and llama_block; their attention
 * products stay fp32). K_FP32: cblas_sgemm. K_BF16: both operands rounded
 * to bf16 (k_bf16_round), products and sums in fp32 (AVX512-BF16's
 * vdpbf16ps), fp32 output; only where k_bf16_supported(). */
typedef enum KPrec { K_FP32 = 0, K_BF16 = 1 } KPrec;
/* 1 when this CPU has AVX512-BF16 (and AVX512F / BW), the bf16 GEMM's needs */
int k_bf16_supported(void);
/* fp32 -> bf16 bits as the GEMM rounds: to nearest even, NaN stays NaN
 * (quiet), a denormal becomes zero of its sign */
uint16_t k_bf16_round(float x);
/* x[i] = the bf16 value of x[i] (k_bf16_round's, as a float whose low 16
 * bits are zero), in place: what travels between stages in bf16 */
void k_bf16_round_values(float *x, int64_t n);
/* C (M, N) = op(A) (M, K) . op(B) (K, N) + (beta ? C : 0), row-major, op(X)
 * = X^T when tx. In bf16 element C[i][j] depends on row i of op(A), column
 * j of op(B) and K only (one summation order, whatever the other sizes). */
void k_gemm(KPrec prec, int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
            int64_t ldb, int beta, float *c, int64_t ldc);

/* fp32 products against a packed operand (k_gemm.c): a weight that every
 * micro-batch's product reads is packed once, k_pack_b, and reused while
 * it does not change. Only where k_packed_supported() (AVX-512F).
 * k_pack_b: op(B) (K, N) with element (k, j) at b[j ls + k ks], into
 * k_pack_floats(n, k) floats. k_gemm_packed: C (M, N) = op(A) (M, K) .
 * op(B) + C0, A row-major, C0 the bias (N) in every row when bias is not
 * NULL (beta then unused; C need not hold anything), else beta ? C : 0;
 * element C[i][j] is C0's plus the K products in order, one fused
 * multiply-add each (fmaf's bits): the same for any M. */
int k_packed_supported(void);
int64_t k_pack_floats(int64_t n, int64_t k);
void k_pack_b(float *dst, const float *b, int64_t ls, int64_t ks, int64_t n, int64_t k);
void k_gemm_packed(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *bpack,
                   const float *bias, int beta, float *c, int64_t ldc);
/* C (M, N) += A^T . B, A (K, M) and B (K, N) row-major (a weight's
 * gradient from a micro-batch's K rows): each element C plus its K
 * products summed from 0 in row order, one fused multiply-add each, then
 * added to C. scratch: k_wgrad_floats(k, n) floats; K at most 512.
 * AVX-512F only. */
int64_t k_wgrad_floats(int64_t k, int64_t n);
void k_gemm_wgrad(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c, float *scratch);
/* Whether k_linear_backward_weight takes k_gemm_wgrad for a linear of
 * IN input features (within k_linear_wgrad_floats' sizes): AVX-512F, and
 * OpenBLAS not on its own AVX-512 kernels (k_gemm_short_swaps), which are
 * as fast in isolation and faster in pipert on cores with full-width
 * 512-bit FMAs (docs/design-notes.md); on Zen 4 (AMD family 19h), whose
 * 512-bit FMAs run as two 256-bit halves, k_gemm_wgrad is the faster
 * from 1024 features in (docs/benchmarks.md). Machine and shape only: the
 * same choice for a layer at every stage count. */
int k_wgrad_supported(int64_t in_f);

/* ---- linear: y = x W^T + b over the last dimension ---------------------- */
/* in (N, IN), w (OUT, IN), b (OUT) or NULL, out (N, OUT); N = B * leading dims.
 * scratch: NULL, or k_linear_scratch(n, in_f, out_f) floats, which lets a
 * short fp32 product run the faster way round (k_dense.c); the same bits
 * either way. */
void k_linear_forward(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t in_f,
                      int64_t out_f, KPrec prec, float *scratch);
/* Floats of scratch k_linear_forward can use for N rows: N x OUT where the
 * product is short against a wide input, else 0 (k_sizes.c, no BLAS). */
int64_t k_linear_scratch(int64_t n, int64_t in_f, int64_t out_f);
/* Whether the BLAS in use runs a short product faster as out^T = w . in^T
 * (OpenBLAS's AVX-512 kernels: SkylakeX, Cooperlake, SapphireRapids). */
int k_gemm_short_swaps(void);
/* k_linear_forward's fp32 product the other way round, whatever the BLAS:
 * scratch holds N x OUT floats */
void k_linear_forward_swapped(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t in_f,
                              int64_t out_f, float *scratch);
/* The floats of a linear's two packed copies of its weight (the forward's
 * w^T and the input gradient's w), or 0 where the packed product is not
 * the faster (k_sizes.c, no BLAS): fp32, up to 256 rows, 256 features or
 * more in and out, a weight of at most 2^22 elements. */
int64_t k_linear_pack_floats(int64_t n, int64_t in_f, int64_t out_f);
/* Packs w (OUT, IN) into wpack (k_linear_pack_floats floats): the
 * forward's copy (which 0) or the input gradient's (which 1). */
void k_linear_pack(float *wpack, const float *w, int64_t in_f, int64_t out_f, int which);
/* k_linear_forward and k_linear_backward_input in fp32 from the packed
 * copies; the bias is laid first, so every element's sum starts from it */
void k_linear_forward_packed(float *out, const float *in, const float *wpack, const float *b, int64_t n,
                             int64_t in_f, int64_t out_f);
void k_linear_backward_input_packed(float *din, const float *dout, const float *wpack, int64_t n, int64_t in_f,
                                    int64_t out_f);
/* din (N, IN) = dout (N, OUT) . w */
void k_linear_backward_input(float *din, const float *dout, const float *w, int64_t n, int64_t in_f, int64_t out_f,
                             KPrec prec);
/* dw (OUT, IN) += dout^T . in ; db (OUT) += sum over rows of dout (db may be
 * NULL). scratch: NULL, or k_linear_wgrad_floats(n, in_f, out_f) floats
 * (not 0), which in fp32 where k_wgrad_supported() sums dw by
 * k_gemm_wgrad: each element dw plus its N products from 0 in row order,
 * one fused multiply-add each (fmaf's bits) */
void k_linear_backward_weight(float *dw, float *db, const float *dout, const float *in, int64_t n, int64_t in_f,
                              int64_t out_f, KPrec prec, float *scratch);
/* The floats of scratch that k_linear_backward_weight's own product needs,
 * or 0 where OpenBLAS's is used (k_sizes.c, no BLAS): up to 512 rows and
 * a packed input of at most 2^18 floats */
int64_t k_linear_wgrad_floats(int64_t n, int64_t in_f, int64_t out_f);

/* ---- conv2d (im2col + GEMM) ----------------------------------------------- */
typedef struct KConv {
    int64_t c, h, w;          /* input channels and size */
    int64_t oc, oh, ow;       /* output channels and size */
    int64_t kh, kw, sh, sw, ph, pw;
    KPrec prec;               /* of its matrix products (0: fp32) */
} KConv;
/* scratch floats needed by forward and backward (im2col of one sample) */
int64_t k_conv2d_scratch(const KConv *g);
/* in (B, C, H, W), w (OC, C, KH, KW), b (OC) or NULL, out (B, OC, OH, OW) */
void k_conv2d_forward(float *out, const float *in, const float *w, const float *b, int64_t B, const KConv *g,
                      float *scratch);
void k_conv2d_backward_input(float *din, const float *dout, const float *w, int64_t B, const KConv *g, float *scratch);
void k_conv2d_backward_weight(float *dw, float *db, const float *dout, const float *in, int64_t B, const KConv *g,
                              float *scratch);

/* ---- pooling ---------------------------------------------------------------- */
typedef struct KPool {
    int64_t c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
} KPool;
/* max pooling (padding counts as -inf, as in PyTorch); idx (B, C, OH, OW)
 * records the flat input position of each maximum (first one on ties) */
void k_maxpool2d_forward(float *out, int32_t *idx, const float *in, int64_t B, const KPool *g);
void k_maxpool2d_backward(float *din, const float *dout, const int32_t *idx, int64_t B, const KPool *g);
/* average pooling without padding (count = kh * kw) */
void k_avgpool2d_forward(float *out, const float *in, int64_t B, const KPool *g);
void k_avgpool2d_backward(float *din, const float *dout, int64_t B, const KPool *g);
/* PyTorch's adaptive average pooling: window i spans
 * [floor(i * H / OH), ceil((i + 1) * H / OH)); OH may exceed H */
void k_adaptive_avgpool2d_forward(float *out, const float *in, int64_t B, int64_t c, int64_t h, int64_t w, int64_t oh,
                                  int64_t ow);
void k_adaptive_avgpool2d_backward(float *din, const float *dout, int64_t B, int64_t c, int64_t h, int64_t w, int64_t oh,
                                   int64_t ow);

/* ---- elementwise (n elements) ------------------------------------------------ */
/* y += x, one float add each (the residual adds of residual, transformer and
 * llama blocks, and their gradient sums; kc_add_into is its twin) */
void k_add_into(float *y, const float *x, int64_t n);
void k_relu_forward(float *out, const float *in, int64_t n);
void k_relu_backward(float *din, const float *dout, const float *in, int64_t n);
/* e^x as GELU, the softmaxes, sigmoid and SwiGLU compute it (k_pointwise.c), for the tests */
float k_expf_probe(float x);
/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void k_gelu_forward(float *out, const float *in, int64_t n);
void k_gelu_backward(float *din, const float *dout, const float *in, int64_t n);
void k_tanh_forward(float *out, const float *in, int64_t n);
void k_tanh_backward(float *din, const float *dout, const float *out, int64_t n); /* uses the output */
void k_sigmoid_forward(float *out, const float *in, int64_t n);
void k_sigmoid_backward(float *din, const float *dout, const float *out, int64_t n);
/* out = in * mask / (1 - p), mask 0 or 1 (from k_dropout_mask) */
void k_dropout_forward(float *out, const float *in, const uint8_t *mask, float p, int64_t n);
void k_dropout_backward(float *din, const float *dout, const uint8_t *mask, float p, int64_t n);

/* ---- layernorm over the last dimension D of N rows ------------------------- */
/* saves mean (N) and rstd (N) for the backward; y = (x - mean) * rstd * w + b,
 * rstd = 1 / sqrt(var + eps), var the biased variance (as PyTorch) */
void k_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                         int64_t n, int64_t d, float eps);
void k_layernorm_backward_input(float *din, const float *dout, const float *in, const float *w, const float *mean,
                                const float *rstd, int64_t n, int64_t d);
void k_layernorm_backward_weight(float *dw, float *db, const float *dout, const float *in, const float *mean,
                                 const float *rstd, int64_t n, int64_t d);

/* ---- rmsnorm over the last dimension D of N rows ---------------------------- */
/* saves rstd (N) for the backward; y = (x * rstd) * w, rstd = 1 / sqrt(mean(x^2)
 * + eps) (Hugging Face's LlamaRMSNorm, in its order); w NULL means 1 */
void k_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int64_t n, int64_t d, float eps);
/* din = rstd (g - xhat mean(g xhat)), g = dout * w, xhat = x * rstd */
void k_rmsnorm_backward_input(float *din, const float *dout, const float *in, const float *w, const float *rstd,
                              int64_t n, int64_t d);
/* dw += column sums of dout * xhat */
void k_rmsnorm_backward_weight(float *dw, const float *dout, const float *in, const float *rstd, int64_t n, int64_t d);

/* ---- transpose ------------------------------------------------------------------ */
/* out [P, nb, M, na, Q] = in [P, na, M, nb, Q] with the na and nb axes
 * swapped (a pure copy); its backward is the same call with na and nb
 * exchanged */
void k_transpose(float *out, const float *in, int64_t P, int64_t na, int64_t M, int64_t nb, int64_t Q);

/* ---- batchnorm2d over [B, C, HW], per channel (n = B * HW values each) ------- */
/* Training: y = (x - mean) * rstd * w + b with the micro-batch's mean and
 * rstd = 1 / sqrt(var + eps), var the biased variance (as PyTorch); saves
 * mean (C) and rstd (C). When rmean is not NULL, also updates the running
 * statistics once, as nn.BatchNorm2d: rmean = (1 - m) rmean + m mean,
 * rvar = (1 - m) rvar + m var * n / (n - 1) (the unbiased variance), and
 * *nbt += 1. Sums per channel: sample by sample, each with k_row_sum's
 * order, in double. n must be at least 2. */
void k_batchnorm2d_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                           int64_t B, int64_t C, int64_t HW, float eps, float *rmean, float *rvar, int64_t *nbt,
                           double momentum);
/* Evaluation: y = (x - rmean) * rstd * w + b, rstd = 1 / sqrt(rvar + eps) */
void k_batchnorm2d_eval(float *out, const float *in, const float *w, const float *b, const float *rmean,
                        const float *rvar, int64_t B, int64_t C, int64_t HW, float eps);
/* din = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * w, over each channel */
void k_batchnorm2d_backward_input(float *din, const float *dout, const float *in, const float *w, const float *mean,
                                  const float *rstd, int64_t B, int64_t C, int64_t HW);
/* dw += sums of dout * xhat, db += sums of dout, per channel */
void k_batchnorm2d_backward_weight(float *dw, float *db, const float *dout, const float *in, const float *mean,
                                   const float *rstd, int64_t B, int64_t C, int64_t HW);

/* ---- rotary position embedding (inside llama_block) ---------------------------- */
/* cos, sin (T, hd / 2): inv_freq[i] = 1 / powf(theta, 2i / hd), angle =
 * (float)pos * inv_freq[i], all in float as torch's float32 (hd even) */
void k_rope_table(float *cosv, float *sinv, int64_t t, int64_t hd, float theta);
/* In place on N = B T rows of `heads` heads of hd each (row r at x + r ld,
 * position r % T), HF's rotate_half pairing (i with i + hd / 2):
 *     y[i] = x[i] c - x[i + hd/2] s,   y[i + hd/2] = x[i + hd/2] c + x[i] s.
 * The backward applies the transpose to a gradient in place:
 *     g[i] = y[i] c + y[i + hd/2] s,   g[i + hd/2] = y[i + hd/2] c - y[i] s. */
void k_rope_forward(float *x, int64_t n, int64_t ld, int64_t t, int64_t heads, int64_t hd, const float *cosv,
                    const float *sinv);
void k_rope_backward(float *dx, int64_t n, int64_t ld, int64_t t, int64_t heads, int64_t hd, const float *cosv,
                     const float *sinv);

/* ---- SwiGLU: act = silu(gate) * up (n elements) --------------------------------- */
/* silu(x) = x / (1 + exp(-x)), ATen's; the backward: dup = dact * silu(gate),
 * dgate = (dact * up) * s * (1 + gate * (1 - s)), s = 1 / (1 + exp(-gate)) */
void k_swiglu_forward(float *act, const float *gate, const float *up, int64_t n);
void k_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, int64_t n);

/* ---- embedding ------------------------------------------------------------- */
/* tokens (B, T) int32 in [0, vocab) (the caller checks), wte (V, D), wpe (P, D)
 * or NULL, out (B, T, D) = wte[token] + wpe[t] */
void k_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B, int64_t t,
                         int64_t d);
/* dwte += scatter-add of dout rows by token, in (b, t) order; dwpe += sum over b */
void k_embedding_backward_weight(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                                 int64_t t, int64_t d);

/* Vocabulary-parallel (split = vocab): wte holds rows [v0, v0 + nv) of the
 * table; out's rows for tokens outside are zero (the sum over the ranks
 * makes the whole row); the positions are added after that sum */
void k_embedding_forward_vocab(float *out, const int32_t *tokens, const float *wte, int64_t v0, int64_t nv, int64_t B,
                               int64_t t, int64_t d);
void k_embedding_add_positions(float *out, const float *wpe, int64_t B, int64_t t, int64_t d);
/* dwte (nv, D) += the rows of tokens in [v0, v0 + nv), in (b, t) order */
void k_embedding_backward_weight_vocab(float *dwte, const float *dout, const int32_t *tokens, int64_t v0, int64_t nv,
                                       int64_t B, int64_t t, int64_t d);

/* ---- attention core (inside transformer_block) -------------------------------- */
/* qkv (B, T, 3D) holds q, k, v for each position (rows q | k | v, heads of
 * D / H each); out (B, T, D) the context; att (B, H, T, T) the
 * probabilities, saved for the backward. Scores are q.k / sqrt(D / H);
 * key j is masked for query i when causal and j > i, or when mask (B, T)
 * is given and mask[b, j] == 0. A query whose keys are all masked gets
 * probability 0 everywhere (so a zero context and zero gradients), where
 * PyTorch would give NaN. */
void k_attention_forward(float *out, float *att, const float *qkv, const float *mask, int64_t B, int64_t t, int64_t d,
                         int64_t heads, int causal);
void k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B, int64_t t,
                          int64_t d, int64_t heads);

/* ---- losses (on the last stage) -------------------------------------------------- */
/* logits (N, C), targets (N) int32 (negative = ignored). Returns the sum of
 * -log softmax[target] over the non-ignored rows and writes their count;
 * dlogits (N, C) = (softmax - onehot) * scale for non-ignored rows, 0 for
 * ignored ones (scale = 1 / count over the whole global batch, given by the
 * caller). dlogits may be NULL (evaluation). correct: rows whose argmax is
 * the target (may be NULL). */
double k_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int64_t n, int64_t c, double scale,
                       int64_t *count, int64_t *correct);
/* out and target (n); returns the sum of squared differences; dout = 2 (out
 * - target) * scale */
double k_mse(float *dout, const float *out, const float *target, int64_t n, double scale);

/* ---- the counter-based random numbers (Philox4x32-10) ------------------------ */
/* Four 32-bit words from counter c[4] under key k[2]. */
void k_philox(uint32_t out[4], const uint32_t c[4], const uint32_t k[2]);
/* Dropout mask for n elements of one sample: element e keeps (1) unless
 * uniform(e) < p, with uniform from Philox keyed by the seed and counter
 * (e / 4, sample, layer, step), word e % 4, as (u >> 8) * 2^-24. The same
 * on every backend. */
void k_dropout_mask(uint8_t *mask, int64_t n, float p, uint64_t seed, uint64_t step, uint64_t sample, uint32_t layer);
/* Elements [e0, e0 + n) of the same stream (mask[0] is element e0): what
 * k_dropout_mask writes at mask + e0, for any e0 >= 0 (transformer_block
 * draws one head or one sample of a longer stream at a time). */
void k_dropout_mask_at(uint8_t *mask, int64_t e0, int64_t n, float p, uint64_t seed, uint64_t step, uint64_t sample,
                       uint32_t layer);
/* Parameter initialisation, PyTorch's defaults with Philox numbers keyed by
 * the seed, the layer index and a hash of the parameter's name (so they do
 * not depend on stages or schedule): uniform in [-bound, bound] ... */
void k_init_uniform(float *p, int64_t n, float bound, uint64_t seed, uint32_t layer, const char *name);
/* ... or normal(0, 1) (embeddings, Box-Muller), or a constant. */
void k_init_normal(float *p, int64_t n, uint64_t seed, uint32_t layer, const char *name);
/* the same draws scaled: N(0, std^2) */
void k_init_normal_std(float *p, int64_t n, double std, uint64_t seed, uint32_t layer, const char *name);
void k_fill(float *p, int64_t n, float v);

#endif
