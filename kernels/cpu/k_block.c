/* kernels/cpu/k_block.c: the transformer_block layer (kernels/k_block.h),
 * a composite of the k_cpu.h kernels (and, with dropout, of cblas_sgemm
 * calls of its own for the attention core), so its arithmetic is theirs
 * (and a CUDA backend can mirror it call for call):
 *
 *     ln1 = LN1(x)               qkv = ln1 Wqkv^T + bqkv
 *     ctx = attention(qkv)       h   = x + drop2(ctx Wproj^T + bproj)
 *     ln2 = LN2(h)               fc  = ln2 Wfc^T + bfc
 *     act = gelu_tanh(fc)        out = h + drop3(act Wmp^T + bmp)
 *
 * where attention's O = P V takes drop1(P) for P.
 *
 * Layouts. saved and dsaved hold B samples as sections, each section
 * (B, ...) for all samples at once (the layernorm layer's mean/rstd do the
 * same), so every linear is one GEMM over N = B * T rows:
 *
 *   saved:  ln1 (N, D) | mean1 (N) | rstd1 (N) | qkv (N, 3D) | att (B, H, T, T)
 *           | ctx (N, D) | h (N, D) | ln2 (N, D) | mean2 (N) | rstd2 (N)
 *           | fc (N, F) | act (N, F)
 *   dsaved: dqkv (N, 3D) | dh (N, D) | dfc (N, F) | dout (N, D) | dln1 (N, D)
 *           | dln2 (N, D)
 *
 * att holds the probabilities P before drop1; ctx is drop1(P) V, h the sum
 * after drop2. dsaved holds, for each linear and layernorm, the gradient of
 * its output (dh is attn.proj's, dout mlp.proj's, dqkv attn.qkv's, dfc
 * mlp.fc's, dln1 and dln2 the layernorms'): exactly the dout arguments of
 * the *_weight kernels. With dropout, dout and dh are those of the outputs
 * before drop3 and drop2 (the incoming gradients times the masks and
 * 1 / (1 - p)); without, the incoming gradient and the gradient of h. The
 * input half writes them, the weight half only reads them, so a full
 * backward (the two in sequence) and a split one run the same calls on the
 * same numbers: the same bits.
 *
 * Scratch: (N, max(D, F)) for the input half's temporaries, the gradient of
 * the gelu output and then of the attention context (never both at once).
 * With dropout > 0 four sections follow: dres (N, D), the gradient of h
 * (the residual's, kept until din); pd (T, T) and dpd (T, T), one head's
 * dropped probabilities and their gradient; bits, one mask of
 * max(T T, T D) bytes (one head of site 1, one sample of sites 2 and 3).
 * The forward uses pd and bits; the weight half needs none.
 */
#include "k_block.h"
#include "k_cpu.h"
#include "k_reduce.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

/* what the block kernels rely on; the compiler and runtime check it first */
static void check_geometry(const KBlock *g)
{
    assert(g->t > 0 && g->d > 0 && g->heads > 0 && g->f > 0 && "positive sizes");
    assert(g->d % g->heads == 0 && "heads divide the width");
    assert((k_block_tp(g) == 1 || (g->heads % g->tp == 0 && g->f % g->tp == 0 && g->tp_rank >= 0 &&
                                   g->tp_rank < g->tp && g->tp_sum)) &&
           "tensor parallel: tp divides heads and F, a rank below tp, a sum");
    assert(g->dropout >= 0.0f && g->dropout < 1.0f && "dropout in [0, 1)");
    (void)g;
}

/* ---- dropout ------------------------------------------------------------------------ */

/* what a call draws its masks with: p and the keys */
typedef struct Drop {
    float p;
    const KBlockKeys *k;
} Drop;

static Drop drop_of(const KBlock *g, const KBlockKeys *keys)
{
    assert(keys->layer < (1u << 24) && "a layer index leaves the stream word's top byte free");
    Drop r = {g->dropout, keys};
    return r;
}

/* elements [e0, e0 + n) of sample b's mask at a site */
static void site_mask(uint8_t *bits, int64_t e0, int64_t n, const Drop *dr, int64_t b, int site)
{
    k_dropout_mask_at(bits, e0, n, dr->p, dr->k->seed, dr->k->step, dr->k->sample0 + (uint64_t)b,
                      k_block_drop_stream(dr->k->layer, site));
}

/* y (B, T, D) = x with site 2's or 3's dropout (x may be y); backward:
 * the same product, k_dropout_backward's */
static void drop_rows(float *y, const float *x, int64_t B, const KBlock *g, const Drop *dr, int site, int backward,
                      uint8_t *bits)
{
    int64_t per = g->t * g->d;
    for (int64_t b = 0; b < B; b++) {
        site_mask(bits, 0, per, dr, b, site);
        if (backward)
            k_dropout_backward(y + b * per, x + b * per, bits, dr->p, per);
        else
            k_dropout_forward(y + b * per, x + b * per, bits, dr->p, per);
    }
}

/* drop1's mask of head h of sample b, (T, T) bytes. Causal: a key past
 * its query has P = 0, so its factor changes nothing (0 times either);
 * only keys j <= i are drawn (about half the Philox calls) and the others
 * set to dropped, so nothing reads an unset byte. */
static void att_mask(uint8_t *bits, const KBlock *g, const Drop *dr, int64_t b, int64_t h)
{
    int64_t t = g->t, tt = t * t;
    h += (k_block_tp(g) > 1 ? g->tp_rank : 0) * k_block_hl(g); /* the whole block's head */
    if (!g->causal) {
        site_mask(bits, h * tt, tt, dr, b, K_BLOCK_DROP_ATT);
        return;
    }
    for (int64_t i = 0; i < t; i++) {
        site_mask(bits + i * t, h * tt + i * t, i + 1, dr, b, K_BLOCK_DROP_ATT);
        memset(bits + i * t + i + 1, 0, (size_t)(t - i - 1));
    }
}

/* ctx (B, T, D) = drop1(P) V per (sample, head), P from att: replaces the
 * P V that k_attention_forward wrote (that call keeps the masked softmax
 * in one place). Rows go in blocks; a causal block stops at its last key,
 * as there. */
static void att_drop_forward(float *ctx, const float *att, const float *qkv, int64_t B, const KBlock *g,
                             const Drop *dr, float *pd, uint8_t *bits)
{
    int64_t t = g->t, d = k_block_dl(g), heads = k_block_hl(g), hd = d / heads, d3 = 3 * d, tt = t * t;
    const int64_t rb = g->causal ? 64 : t;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < heads; h++) {
            att_mask(bits, g, dr, b, h);
            k_dropout_forward(pd, att + (b * heads + h) * tt, bits, dr->p, tt);
            const float *v = qkv + b * t * d3 + 2 * d + h * hd;
            float *o = ctx + b * t * d + h * hd;
            for (int64_t i0 = 0; i0 < t; i0 += rb) {
                int64_t r = t - i0 < rb ? t - i0 : rb, nk = g->causal ? i0 + r : t;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)hd, (int)nk, 1.0f, pd + i0 * t,
                            (int)t, v, (int)d3, 0.0f, o + i0 * d, (int)d);
            }
        }
}

/* The attention backward through drop1, per (sample, head), with Pd =
 * drop1(P) and dO the head's slice of dctx:
 *     dV = Pd^T dO,  dPd = dO V^T,  dP = drop1's backward of dPd,
 *     dS = P * (dP - rowsum(P * dP)),  dQ = scale dS K,  dK = scale dS^T Q
 * (k_attention_backward's formulas with Pd in dV's product and the mask
 * between dPd and dP; the row sums in k_row_sum's order). Rows go in
 * blocks of rb queries; a causal block needs keys [0, nk) only (the rest
 * of its P is 0), so its products stop there and dV, dK add up block by
 * block. The products P * dP are staged in the block's rows of pd, which
 * its dV product has used. */
static void att_drop_backward(float *dqkv, const float *dctx, const float *qkv, const float *att, int64_t B,
                              const KBlock *g, const Drop *dr, const KBlockDropScratch *s)
{
    int64_t t = g->t, d = k_block_dl(g), heads = k_block_hl(g), hd = d / heads, d3 = 3 * d, tt = t * t;
    const int64_t rb = g->causal ? 64 : t;
    float scale = (float)(1.0 / sqrt((double)hd));
    int T = (int)t, HD = (int)hd, LD3 = (int)d3, LD = (int)d;
    memset(dqkv, 0, (size_t)(B * t * d3) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < heads; h++) {
            const float *q = qkv + b * t * d3 + h * hd, *k = q + d, *v = q + 2 * d;
            float *dq = dqkv + b * t * d3 + h * hd, *dk = dq + d, *dv = dq + 2 * d;
            const float *p = att + (b * heads + h) * tt;
            const float *dO = dctx + b * t * d + h * hd;
            att_mask(s->bits, g, dr, b, h);
            k_dropout_forward(s->pd, p, s->bits, dr->p, tt);
            for (int64_t i0 = 0; i0 < t; i0 += rb) {
                int r = (int)(t - i0 < rb ? t - i0 : rb), nk = (int)(g->causal ? i0 + r : t);
                float *pdb = s->pd + i0 * t, *dsb = s->dpd + i0 * t;
                /* dV[0, nk) (nk, hd) += Pd_block^T dO_block */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HD, r, 1.0f, pdb, T, dO + i0 * d, LD, 1.0f, dv,
                            LD3);
                /* dPd_block (r, nk) = dO_block V[0, nk)^T, then dP, then dS, in place */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, nk, HD, 1.0f, dO + i0 * d, LD, v, LD3, 0.0f, dsb,
                            T);
                for (int64_t i = 0; i < r; i++) {
                    const float *pr = p + (i0 + i) * t;
                    float *br = dsb + i * t, *prod = pdb + i * t;
                    k_dropout_backward(br, br, s->bits + (i0 + i) * t, dr->p, nk);
                    for (int64_t j = 0; j < nk; j++)
                        prod[j] = pr[j] * br[j];
                    float rs = (float)k_row_sum(prod, nk);
                    for (int64_t j = 0; j < nk; j++)
                        br[j] = pr[j] * (br[j] - rs);
                }
                /* dQ_block (r, hd) = scale dS_block K[0, nk);  dK[0, nk) += scale dS_block^T Q_block */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, HD, nk, scale, dsb, T, k, LD3, 0.0f,
                            dq + i0 * d3, LD3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HD, r, scale, dsb, T, q + i0 * d3, LD3, 1.0f,
                            dk, LD3);
            }
        }
}

/* ---- packed weights --------------------------------------------------------------- */

/* Linear i's packed copies in g->pack (k_block_pack's layout), or NULL. */
static const float *pack_of(const KBlock *g, int i)
{
    if (!g->pack)
        return NULL;
    const float *at = g->pack;
    for (int j = 0; j < i; j++) {
        int64_t in, out;
        k_block_linear(g, j, &in, &out);
        at += k_pack_floats(out, in) + k_pack_floats(in, out);
    }
    return at;
}

void k_block_pack(float *pack, const KBlock *g, const float *const p[12], int which)
{
    KBlock h = *g;
    h.pack = pack;
    for (int i = 0; i < 4; i++) {
        int64_t in, out;
        int w = k_block_linear(g, i, &in, &out);
        k_linear_pack((float *)pack_of(&h, i), p[w], in, out, which);
    }
}

/* y (N, NO) = x (N, NI) w^T + b, from the packed copies when there are */
static void linear(float *y, const float *x, const float *w, const float *b, const float *pk, int64_t N, int64_t NI,
                   int64_t NO, const KBlock *g)
{
    if (pk)
        k_linear_forward_packed(y, x, pk, b, N, NI, NO);
    else
        k_linear_forward(y, x, w, b, N, NI, NO, g->prec, NULL);
}

/* dx (N, NI) = dy (N, NO) w, likewise */
static void linear_dx(float *dx, const float *dy, const float *w, const float *pk, int64_t N, int64_t NI, int64_t NO,
                      const KBlock *g)
{
    if (pk)
        k_linear_backward_input_packed(dx, dy, pk, N, NI, NO);
    else
        k_linear_backward_input(dx, dy, w, N, NI, NO, g->prec);
}

/* ---- tensor parallel ------------------------------------------------------------- */

/* x (n) summed over the tp ranks (nothing with tp = 1) */
static void tp_sum(float *x, int64_t n, const KBlock *g)
{
    if (k_block_tp(g) > 1)
        g->tp_sum(g->tp_ctx, x, n);
}

/* y (N, NO) = x (N, NI) w^T + b for a row-parallel linear: with tp > 1, x
 * and w hold this rank's NI columns, the product is summed over the ranks
 * and b is added after the sum (once); with tp = 1 k_linear_forward. */
static void row_parallel(float *y, const float *x, const float *w, const float *b, const float *pk, int64_t N,
                         int64_t NI, int64_t NO, const KBlock *g)
{
    if (k_block_tp(g) == 1) {
        linear(y, x, w, b, pk, N, NI, NO, g);
        return;
    }
    k_linear_forward(y, x, w, NULL, N, NI, NO, g->prec, NULL);
    tp_sum(y, N * NO, g);
    for (int64_t r = 0; r < N; r++)
        k_add_into(y + r * NO, b, NO);
}

/* ---- the block -------------------------------------------------------------------- */

void k_block_forward(float *out, float *saved, const float *in, const float *mask, const float *const p[12], int64_t B,
                     const KBlock *g, const KBlockKeys *keys, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = k_block_fl(g), dl = k_block_dl(g);
    int drops = k_block_drops(g, keys);
    KBlockDropScratch ds = k_block_drop_scratch(g, B, drops ? scratch : NULL);
    Drop dr = drops ? drop_of(g, keys) : (Drop){0.0f, NULL};
    float *ln1 = saved + o.ln1, *qkv = saved + o.qkv, *ctx = saved + o.ctx, *h = saved + o.h;
    float *ln2 = saved + o.ln2, *fc = saved + o.fc, *act = saved + o.act;
    /* attention half: h (N, D) = x + drop2(proj(attention(qkv(ln1(x))))) */
    k_layernorm_forward(ln1, saved + o.mean1, saved + o.rstd1, in, p[0], p[1], n, d, g->eps);
    linear(qkv, ln1, p[2], p[3], pack_of(g, 0), n, d, 3 * dl, g);
    k_attention_forward(ctx, saved + o.att, qkv, mask, B, g->t, dl, k_block_hl(g), g->causal);
    if (drops)
        att_drop_forward(ctx, saved + o.att, qkv, B, g, &dr, ds.pd, ds.bits);
    row_parallel(h, ctx, p[4], p[5], pack_of(g, 1), n, dl, d, g);
    if (drops)
        drop_rows(h, h, B, g, &dr, K_BLOCK_DROP_ATTN_PROJ, 0, ds.bits);
    k_add_into(h, in, n * d);
    /* MLP half: out (N, D) = h + drop3(mlp.proj(gelu(mlp.fc(ln2(h))))) */
    k_layernorm_forward(ln2, saved + o.mean2, saved + o.rstd2, h, p[6], p[7], n, d, g->eps);
    linear(fc, ln2, p[8], p[9], pack_of(g, 2), n, d, f, g);
    k_gelu_forward(act, fc, n * f);
    row_parallel(out, act, p[10], p[11], pack_of(g, 3), n, f, d, g);
    if (drops)
        drop_rows(out, out, B, g, &dr, K_BLOCK_DROP_MLP_PROJ, 0, ds.bits);
    k_add_into(out, h, n * d);
}

/* The chain rule backwards through the forward above. A residual's two
 * branches meet in one float add: d h = dout + LN2's input gradient, and
 * din = dh + LN1's input gradient. With dropout, each branch's gradient
 * first goes through its mask (dout into mlp.proj's, d h into attn.proj's),
 * and d h itself waits in scratch for the last add. */
void k_block_backward_input(float *din, float *dsaved, const float *dout, const float *in, const float *saved,
                            const float *mask, const float *const p[12], int64_t B, const KBlock *g,
                            const KBlockKeys *keys, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = k_block_fl(g), dl = k_block_dl(g);
    int drops = k_block_drops(g, keys);
    KBlockDropScratch ds = k_block_drop_scratch(g, B, drops ? scratch : NULL);
    Drop dr = drops ? drop_of(g, keys) : (Drop){0.0f, NULL};
    float *dqkv = dsaved + q.dqkv, *dfc = dsaved + q.dfc, *dmp = dsaved + q.dout;
    float *dln1 = dsaved + q.dln1, *dln2 = dsaved + q.dln2;
    float *dproj = dsaved + q.dh;          /* attn.proj's output gradient */
    float *dh = drops ? ds.dres : dproj;   /* h's: the same without dropout */
    /* mlp.proj's output gradient is dout (through drop3); kept, since the
     * weight half does not get dout */
    if (drops)
        drop_rows(dmp, dout, B, g, &dr, K_BLOCK_DROP_MLP_PROJ, 1, ds.bits);
    else
        memcpy(dmp, dout, (size_t)(n * d) * sizeof(float));
    float *dact = scratch; /* (N, F) */
    linear_dx(dact, dmp, p[10], pack_of(g, 3), n, f, d, g);
    k_gelu_backward(dfc, dact, saved + o.fc, n * f);
    linear_dx(dln2, dfc, p[8], pack_of(g, 2), n, d, f, g);
    tp_sum(dln2, n * d, g); /* column-parallel: each rank's F/tp of the sum */
    k_layernorm_backward_input(dh, dln2, saved + o.h, p[6], saved + o.mean2, saved + o.rstd2, n, d);
    k_add_into(dh, dout, n * d);
    if (drops)
        drop_rows(dproj, dh, B, g, &dr, K_BLOCK_DROP_ATTN_PROJ, 1, ds.bits);
    float *dctx = scratch; /* (N, D); dact is dead */
    linear_dx(dctx, dproj, p[4], pack_of(g, 1), n, dl, d, g);
    if (drops)
        att_drop_backward(dqkv, dctx, saved + o.qkv, saved + o.att, B, g, &dr, &ds);
    else
        k_attention_backward(dqkv, dctx, saved + o.qkv, saved + o.att, B, g->t, dl, k_block_hl(g));
    linear_dx(dln1, dqkv, p[2], pack_of(g, 0), n, d, 3 * dl, g);
    tp_sum(dln1, n * d, g);
    k_layernorm_backward_input(din, dln1, in, p[0], saved + o.mean1, saved + o.rstd1, n, d);
    k_add_into(din, dh, n * d);
    (void)mask; /* the saved probabilities already carry it (masked = 0) */
}

/* Every parameter gradient is a *_backward_weight call on one output
 * gradient from dsaved and one saved input; they touch disjoint grads, in
 * PlanLayer.param order. The linears' use the scratch for their packed
 * inputs (k_block_scratch_floats has room; nothing in it is live here). */
void k_block_backward_weight(float *const grads[12], const float *dsaved, const float *in, const float *saved, int64_t B,
                             const KBlock *g, float *scratch)
{
    check_geometry(g);
    KBlockSaved o = k_block_saved_layout(g, B);
    KBlockDsaved q = k_block_dsaved_layout(g, B);
    int64_t n = B * g->t, d = g->d, f = k_block_fl(g), dl = k_block_dl(g);
    k_layernorm_backward_weight(grads[0], grads[1], dsaved + q.dln1, in, saved + o.mean1, saved + o.rstd1, n, d);
    k_linear_backward_weight(grads[2], grads[3], dsaved + q.dqkv, saved + o.ln1, n, d, 3 * dl, g->prec, scratch);
    k_linear_backward_weight(grads[4], grads[5], dsaved + q.dh, saved + o.ctx, n, dl, d, g->prec, scratch);
    k_layernorm_backward_weight(grads[6], grads[7], dsaved + q.dln2, saved + o.h, saved + o.mean2, saved + o.rstd2, n,
                                d);
    k_linear_backward_weight(grads[8], grads[9], dsaved + q.dfc, saved + o.ln2, n, d, f, g->prec, scratch);
    k_linear_backward_weight(grads[10], grads[11], dsaved + q.dout, saved + o.act, n, f, d, g->prec, scratch);
}
