/* tests/test_block.c: the transformer_block kernel (kernels/k_block.h).
 *
 * The forward against a naive double-precision GPT-2 block written from
 * PyTorch's definitions; the backward against central finite differences
 * of the whole block (L = sum(out * g) for a fixed random g, accumulated in
 * double): every entry of din and a few entries of each of the 12
 * parameter gradients, causal and not, without a mask, with a padding mask
 * that leaves one query with no key at all, and with a sample that is all
 * padding. Also: every float of saved and dsaved is written, scratch
 * contents do not matter, weight gradients accumulate, the same call gives
 * the same bits.
 *
 * Dropout (the block_dropout_* tests): the forward against the same double
 * reference with the three masks drawn here from k_random.c's documented
 * recipe (k_dropout_mask on the stream words of k_block.h), the backward
 * against finite differences under fixed keys (a fixed mask), the masks
 * of sites 2 and 3 read back exactly from dsaved, split and unsplit
 * backwards bit for bit (with other calls in between), evaluation and
 * p = 0 exactly the block without dropout, and the streams distinct across
 * sites, layers, steps, samples and seeds. Inputs come from a fixed LCG,
 * so every run is the same.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_block.h"
#include "k_cpu.h"

static const char *const pnames[12] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                       "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                                       "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"};

/* ---- helpers ---------------------------------------------------------------------- */

#include "ktestutil.h"
#include "ktp.h"

static void fill_nan(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
}

/* ---- one block with its parameters and buffers ------------------------------------ */

typedef struct Blk {
    KBlock g;
    KBlockKeys keys; /* zero unless a test trains: no dropout */
    int64_t B;
    const float *mask;         /* (B, T) or NULL */
    float *x, *out, *saved;    /* (B, T, D), (B, T, D), B * saved_floats */
    float *p[12];              /* parameters, PlanLayer.param order */
    int64_t np[12];            /* their sizes */
    float *scratch;
    int64_t nx, nsaved, nscratch;
} Blk;

static void blk_init(Blk *c, int64_t B, int64_t t, int64_t d, int64_t H, int64_t f, int causal, const float *mask)
{
    memset(c, 0, sizeof *c);
    c->g = (KBlock){.t = t, .d = d, .heads = H, .f = f, .causal = causal, .eps = 1e-5f, .dropout = 0.0f};
    c->B = B;
    c->mask = mask;
    c->nx = B * t * d;
    int64_t np[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * f, d};
    memcpy(c->np, np, sizeof np);
    c->x = frand(c->nx, -2, 2);
    for (int k = 0; k < 12; k++) {
        /* layernorm weights around 1, the rest around 0; linear weights
         * about 1 / sqrt(fan in) so activations stay O(1) */
        int ln_w = k == 0 || k == 6, ln_b = k == 1 || k == 7;
        float s = k == 10 || k == 11 ? 1.0f / sqrtf((float)f) : 1.0f / sqrtf((float)d);
        c->p[k] = ln_w ? frand(np[k], 0.5f, 1.5f) : ln_b ? frand(np[k], -0.5f, 0.5f) : frand(np[k], -s, s);
    }
    c->out = fnan(c->nx);
    c->nsaved = B * k_block_saved_floats(&c->g);
    c->saved = fnan(c->nsaved);
    c->nscratch = k_block_scratch_floats(&c->g, B);
    c->scratch = fnan(c->nscratch);
}

/* dropout p with these keys (scratch grows when p > 0) */
static void blk_set_dropout(Blk *c, float p, KBlockKeys keys)
{
    c->g.dropout = p;
    c->keys = keys;
    free(c->scratch);
    c->nscratch = k_block_scratch_floats(&c->g, c->B);
    c->scratch = fnan(c->nscratch);
}

static void blk_free(Blk *c)
{
    free(c->x), free(c->out), free(c->saved), free(c->scratch);
    for (int k = 0; k < 12; k++)
        free(c->p[k]);
}

static void blk_forward(Blk *c)
{
    fill_nan(c->scratch, c->nscratch);
    k_block_forward(c->out, c->saved, c->x, c->mask, (const float *const *)c->p, c->B, &c->g, &c->keys, c->scratch);
}

/* din (overwritten), dsaved (written), grads (added to) from dout */
static void blk_backward(Blk *c, float *din, float *dsaved, float *const grads[12], const float *dout)
{
    fill_nan(c->scratch, c->nscratch);
    k_block_backward_input(din, dsaved, dout, c->x, c->saved, c->mask, (const float *const *)c->p, c->B, &c->g,
                           &c->keys, c->scratch);
    fill_nan(c->scratch, c->nscratch);
    k_block_backward_weight(grads, dsaved, c->x, c->saved, c->B, &c->g, c->scratch);
}

/* L = sum(out * g) in double, after a fresh forward */
static double blk_loss(Blk *c, const float *g)
{
    blk_forward(c);
    double s = 0.0;
    for (int64_t i = 0; i < c->nx; i++)
        s += (double)c->out[i] * g[i];
    return s;
}

/* Central difference of L in x[i] against ana. The tolerance has a
 * relative part and an absolute part scaled by the largest analytic entry
 * of the tensor (amax), since an fp32 forward makes small FD entries noisy. */
static void check_fd_at(const char *what, int64_t i, Blk *c, const float *g, float *x, float ana, double amax,
                        float eps)
{
    REQUIRE(isfinite(ana), "%s[%lld]: analytic gradient is %g", what, (long long)i, ana);
    float s = x[i];
    x[i] = s + eps;
    double xp = x[i], lp = blk_loss(c, g);
    x[i] = s - eps;
    double xm = x[i], lm = blk_loss(c, g);
    x[i] = s;
    double fd = (lp - lm) / (xp - xm);
    double err = fabs(fd - ana);
    REQUIRE(err <= 1e-2 * fmax(fabs(fd), fabs(ana)) + 2e-3 * fmax(amax, 1e-2),
            "%s[%lld]: analytic %.7g, finite difference %.7g", what, (long long)i, ana, fd);
}

static double absmax(const float *a, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

/* ---- the naive reference: PyTorch's definitions in double ----------------------- */

static void ref_layernorm(double *y, const double *x, const float *w, const float *b, int64_t n, int64_t d, double eps)
{
    for (int64_t i = 0; i < n; i++) {
        const double *r = x + i * d;
        double m = 0, v = 0;
        for (int64_t j = 0; j < d; j++)
            m += r[j];
        m /= (double)d;
        for (int64_t j = 0; j < d; j++)
            v += (r[j] - m) * (r[j] - m);
        double rs = 1.0 / sqrt(v / (double)d + eps);
        for (int64_t j = 0; j < d; j++)
            y[i * d + j] = (r[j] - m) * rs * w[j] + b[j];
    }
}

static void ref_linear(double *y, const double *x, const float *w, const float *b, int64_t n, int64_t in, int64_t out)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = b[o];
            for (int64_t k = 0; k < in; k++)
                s += x[i * in + k] * w[o * in + k];
            y[i * out + o] = s;
        }
}

/* dropout's factor (0 or 1 / (1 - p)) for every element of one site, for
 * the B samples in a row: (B, per), from k_dropout_mask with the stream
 * word and element order k_block.h and k_random.c document; all 1 when the
 * block does not drop */
static double *ref_factors(const Blk *c, int site, int64_t per)
{
    double *fct = malloc((size_t)(c->B * per) * sizeof(double));
    uint8_t *m = malloc((size_t)per);
    double keep = 1.0f / (1.0f - c->g.dropout);
    for (int64_t b = 0; b < c->B; b++) {
        if (k_block_drops(&c->g, &c->keys))
            k_dropout_mask(m, per, c->g.dropout, c->keys.seed, c->keys.step, c->keys.sample0 + (uint64_t)b,
                           c->keys.layer | (uint32_t)site << 24);
        else
            memset(m, 1, (size_t)per);
        for (int64_t e = 0; e < per; e++)
            fct[b * per + e] = m[e] ? keep : 0.0;
    }
    free(m);
    return fct;
}

/* out (B, T, D) of the block, in double (with c's dropout, if it drops) */
static void ref_block(double *out, const Blk *c)
{
    int64_t B = c->B, t = c->g.t, d = c->g.d, H = c->g.heads, f = c->g.f, n = B * t, hd = d / H;
    double *f1 = ref_factors(c, 1, H * t * t), *f2 = ref_factors(c, 2, t * d), *f3 = ref_factors(c, 3, t * d);
    double *x = malloc((size_t)(n * d) * sizeof(double)), *a = malloc((size_t)(n * d) * sizeof(double));
    double *qkv = malloc((size_t)(n * 3 * d) * sizeof(double)), *ctx = malloc((size_t)(n * d) * sizeof(double));
    double *h = malloc((size_t)(n * d) * sizeof(double)), *fc = malloc((size_t)(n * f) * sizeof(double));
    double *s = malloc((size_t)t * sizeof(double));
    for (int64_t i = 0; i < n * d; i++)
        x[i] = c->x[i];
    ref_layernorm(a, x, c->p[0], c->p[1], n, d, c->g.eps);
    ref_linear(qkv, a, c->p[2], c->p[3], n, d, 3 * d);
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < t; i++) {
                const double *q = qkv + (b * t + i) * 3 * d + hh * hd;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < t; j++) {
                    const double *k = qkv + (b * t + j) * 3 * d + d + hh * hd;
                    int masked = (c->g.causal && j > i) || (c->mask && c->mask[b * t + j] == 0);
                    double dot = 0;
                    for (int64_t e = 0; e < hd; e++)
                        dot += q[e] * k[e];
                    s[j] = masked ? -INFINITY : dot / sqrt((double)hd);
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < t; j++) /* all masked: zeros (torch: NaN, then nan_to_num) */
                    sum += s[j] = isinf(mx) ? 0 : exp(s[j] - mx);
                const double *f1r = f1 + b * H * t * t + (hh * t + i) * t; /* drop1 of row i */
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < t; j++)
                        o += (sum > 0 ? s[j] / sum : 0) * f1r[j] * qkv[(b * t + j) * 3 * d + 2 * d + hh * hd + e];
                    ctx[(b * t + i) * d + hh * hd + e] = o;
                }
            }
    ref_linear(h, ctx, c->p[4], c->p[5], n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        h[i] = x[i] + f2[i] * h[i];
    ref_layernorm(a, h, c->p[6], c->p[7], n, d, c->g.eps);
    ref_linear(fc, a, c->p[8], c->p[9], n, d, f);
    for (int64_t i = 0; i < n * f; i++) {
        double z = fc[i];
        fc[i] = 0.5 * z * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (z + 0.044715 * z * z * z)));
    }
    ref_linear(out, fc, c->p[10], c->p[11], n, f, d);
    for (int64_t i = 0; i < n * d; i++)
        out[i] = h[i] + f3[i] * out[i];
    free(x), free(a), free(qkv), free(ctx), free(h), free(fc), free(s), free(f1), free(f2), free(f3);
}

/* ---- the tests ---------------------------------------------------------------------- */

/* B = 2, T = 5. MASK_ROW: sample 0's key 0 is padding (with causal, its
 * query 0 sees no key at all: a fully masked row), sample 1's last two
 * positions are padding. MASK_SAMPLE: sample 1 is all padding (every one
 * of its rows fully masked, causal or not). */
enum { M_NONE, M_ROW, M_SAMPLE, M_N };
static const float mask_row[10] = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static const float mask_sample[10] = {1, 1, 0, 1, 1, 0, 0, 0, 0, 0};
static const char *const mask_names[M_N] = {"no mask", "padding mask", "padded sample"};

static const float *case_mask(int m)
{
    return m == M_ROW ? mask_row : m == M_SAMPLE ? mask_sample : NULL;
}

/* the keys of the dropout tests (training) */
static const KBlockKeys train_keys = {1, 0x5eedf00d12345ULL, 7, 40, 3};

static void forward_reference_case(int i, float p)
{
    int causal = i % 2, m = i / 2;
    rng_seed(2000 + (uint32_t)i);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, causal, case_mask(m));
    if (p > 0)
        blk_set_dropout(&c, p, train_keys);
    blk_forward(&c);
    double *ref = malloc((size_t)c.nx * sizeof(double));
    ref_block(ref, &c);
    double mx = 0;
    for (int64_t i = 0; i < c.nx; i++)
        mx = fmax(mx, fabs(ref[i]));
    for (int64_t i = 0; i < c.nx; i++)
        REQUIRE(isfinite(c.out[i]) && fabs(c.out[i] - ref[i]) <= 1e-5 * mx, "p %g, %s%s out[%lld]: %.9g, want %.9g",
                p, causal ? "causal, " : "", mask_names[m], (long long)i, c.out[i], ref[i]);
    /* the forward writes every saved float (fully masked rows as zeros) */
    for (int64_t i = 0; i < c.nsaved; i++)
        REQUIRE(isfinite(c.saved[i]), "saved[%lld] = %g after the forward", (long long)i, c.saved[i]);
    free(ref);
    blk_free(&c);
}

START_TEST(block_forward_reference)
{
    forward_reference_case(_i, 0.0f);
}
END_TEST

/* with the masks drawn by the reference from the documented recipe: a
 * kernel that dropped elsewhere, or with other bits, is off by O(1) */
START_TEST(block_dropout_forward_reference)
{
    forward_reference_case(_i, 0.3f);
}
END_TEST

static void gradients_case(int i, float p)
{
    int causal = i % 2, m = i / 2;
    char what[96];
    rng_seed(3000 + (uint32_t)i);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, causal, case_mask(m));
    if (p > 0)
        blk_set_dropout(&c, p, train_keys); /* fixed keys: a fixed mask, L smooth */
    int64_t ndsaved = c.B * k_block_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[12];
    for (int k = 0; k < 12; k++)
        grads[k] = fzero(c.np[k]);
    blk_forward(&c);
    blk_backward(&c, din, dsaved, grads, g);
    for (int64_t i = 0; i < ndsaved; i++)
        REQUIRE(isfinite(dsaved[i]), "dsaved[%lld] = %g after the input half", (long long)i, dsaved[i]);

    /* every entry of din */
    snprintf(what, sizeof what, "p %g, %s%s din", p, causal ? "causal, " : "", mask_names[m]);
    double amax = absmax(din, c.nx);
    for (int64_t i = 0; i < c.nx; i++)
        check_fd_at(what, i, &c, g, c.x, din[i], amax, 1e-2f);
    /* five entries of each parameter gradient: both ends and three from
     * the LCG (a weight matrix's entries are all alike) */
    for (int k = 0; k < 12; k++) {
        snprintf(what, sizeof what, "p %g, %s%s %s", p, causal ? "causal, " : "", mask_names[m], pnames[k]);
        amax = absmax(grads[k], c.np[k]);
        int64_t at[5] = {0, c.np[k] - 1, 0, 0, 0};
        for (int e = 2; e < 5; e++)
            at[e] = (int64_t)(rnd(0, 1) * (float)c.np[k]) % c.np[k];
        for (int e = 0; e < 5; e++)
            check_fd_at(what, at[e], &c, g, c.p[k], grads[k][at[e]], amax, 1e-2f);
    }
    if (m == M_SAMPLE) {
        /* the padded sample's attention is all zeros: h = x + proj.bias, so
         * its queries, keys and values get no gradient at all */
        const float *dqkv = dsaved; /* dsaved's first section, (B, T, 3D) */
        for (int64_t i = c.g.t * 3 * c.g.d; i < 2 * c.g.t * 3 * c.g.d; i++)
            ck_assert_float_eq(dqkv[i], 0.0f);
    }
    free(g), free(din), free(dsaved);
    for (int k = 0; k < 12; k++)
        free(grads[k]);
    blk_free(&c);
}

START_TEST(block_gradients)
{
    gradients_case(_i, 0.0f);
}
END_TEST

START_TEST(block_dropout_gradients)
{
    gradients_case(_i, 0.3f);
}
END_TEST

/* Two weight halves add twice the gradient; the same calls give the same
 * bits (forward, input half, weight half), whatever the scratch holds. */
START_TEST(block_accumulates_and_repeats)
{
    rng_seed(4000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 1, mask_row);
    int64_t ndsaved = c.B * k_block_dsaved_floats(&c.g);
    float *g = frand(c.nx, -1, 1), *din = fnan(c.nx), *dsaved = fnan(ndsaved), *grads[12], *once[12];
    for (int k = 0; k < 12; k++)
        grads[k] = fzero(c.np[k]), once[k] = fzero(c.np[k]);
    blk_forward(&c);
    float *out1 = malloc((size_t)c.nx * sizeof(float)), *saved1 = malloc((size_t)c.nsaved * sizeof(float));
    memcpy(out1, c.out, (size_t)c.nx * sizeof(float));
    memcpy(saved1, c.saved, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, once, g);
    float *din1 = malloc((size_t)c.nx * sizeof(float)), *dsaved1 = malloc((size_t)ndsaved * sizeof(float));
    memcpy(din1, din, (size_t)c.nx * sizeof(float));
    memcpy(dsaved1, dsaved, (size_t)ndsaved * sizeof(float));

    /* again from NaN-filled outputs: the same bits */
    fill_nan(c.out, c.nx), fill_nan(c.saved, c.nsaved), fill_nan(din, c.nx), fill_nan(dsaved, ndsaved);
    blk_forward(&c);
    ck_assert_mem_eq(c.out, out1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(c.saved, saved1, (size_t)c.nsaved * sizeof(float));
    blk_backward(&c, din, dsaved, grads, g);
    ck_assert_mem_eq(din, din1, (size_t)c.nx * sizeof(float));
    ck_assert_mem_eq(dsaved, dsaved1, (size_t)ndsaved * sizeof(float));
    for (int k = 0; k < 12; k++)
        ck_assert_mem_eq(grads[k], once[k], (size_t)c.np[k] * sizeof(float));

    /* a second weight half on the same dsaved: twice the gradient */
    fill_nan(c.scratch, c.nscratch);
    k_block_backward_weight(grads, dsaved, c.x, c.saved, c.B, &c.g, c.scratch);
    for (int k = 0; k < 12; k++)
        for (int64_t i = 0; i < c.np[k]; i++)
            REQUIRE(fabsf(grads[k][i] - 2.0f * once[k][i]) <= 1e-6f * fabsf(2.0f * once[k][i]) + 1e-30f,
                    "%s[%lld]: %.9g is not 2 x %.9g", pnames[k], (long long)i, grads[k][i], once[k][i]);
    free(g), free(din), free(dsaved), free(out1), free(saved1), free(din1), free(dsaved1);
    for (int k = 0; k < 12; k++)
        free(grads[k]), free(once[k]);
    blk_free(&c);
}
END_TEST

/* ---- dropout -------------------------------------------------------------------------- */

/* Everything one forward + backward of c gives, for bitwise comparisons. */
typedef struct Run {
    float *out, *saved, *din, *dsaved, *grads[12];
    int64_t ndsaved;
} Run;

static Run run_full(Blk *c, const float *g)
{
    Run r;
    r.ndsaved = c->B * k_block_dsaved_floats(&c->g);
    r.din = fnan(c->nx), r.dsaved = fnan(r.ndsaved);
    for (int k = 0; k < 12; k++)
        r.grads[k] = fzero(c->np[k]);
    blk_forward(c);
    r.out = malloc((size_t)c->nx * sizeof(float)), r.saved = malloc((size_t)c->nsaved * sizeof(float));
    memcpy(r.out, c->out, (size_t)c->nx * sizeof(float));
    memcpy(r.saved, c->saved, (size_t)c->nsaved * sizeof(float));
    blk_backward(c, r.din, r.dsaved, r.grads, g);
    return r;
}

static void run_free(Run *r)
{
    free(r->out), free(r->saved), free(r->din), free(r->dsaved);
    for (int k = 0; k < 12; k++)
        free(r->grads[k]);
}

static void require_same(const char *what, const Blk *c, const Run *a, const Run *b)
{
    REQUIRE(!memcmp(a->out, b->out, (size_t)c->nx * sizeof(float)), "%s: out differs", what);
    REQUIRE(!memcmp(a->saved, b->saved, (size_t)c->nsaved * sizeof(float)), "%s: saved differs", what);
    REQUIRE(!memcmp(a->din, b->din, (size_t)c->nx * sizeof(float)), "%s: din differs", what);
    REQUIRE(!memcmp(a->dsaved, b->dsaved, (size_t)a->ndsaved * sizeof(float)), "%s: dsaved differs", what);
    for (int k = 0; k < 12; k++)
        REQUIRE(!memcmp(a->grads[k], b->grads[k], (size_t)c->np[k] * sizeof(float)), "%s: %s differs", what,
                pnames[k]);
}

/* p = 0 while training, and p = 0.3 in evaluation, are exactly the block
 * without dropout (no keys): every output bit; and p = 0.3 training is not */
START_TEST(block_dropout_identity)
{
    rng_seed(5000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 1, mask_row);
    float *g = frand(c.nx, -1, 1);
    Run plain = run_full(&c, g);
    blk_set_dropout(&c, 0.0f, train_keys);
    Run p0 = run_full(&c, g);
    require_same("p = 0, training", &c, &plain, &p0);
    KBlockKeys eval = train_keys;
    eval.training = 0;
    blk_set_dropout(&c, 0.3f, eval);
    Run ev = run_full(&c, g);
    require_same("p = 0.3, evaluating", &c, &plain, &ev);
    blk_set_dropout(&c, 0.3f, train_keys);
    Run tr = run_full(&c, g);
    ck_assert(memcmp(tr.out, plain.out, (size_t)c.nx * sizeof(float)) != 0);
    /* P itself is saved before drop1: the same as without dropout */
    KBlockSaved o = k_block_saved_layout(&c.g, c.B);
    ck_assert_mem_eq(tr.saved + o.att, plain.saved + o.att, (size_t)(o.ctx - o.att) * sizeof(float));
    run_free(&plain), run_free(&p0), run_free(&ev), run_free(&tr);
    free(g);
    blk_free(&c);
}
END_TEST

/* With dropout: the weight half run later, after other calls (another
 * micro-batch's forward and input half, with other keys, through the same
 * scratch), gives the bits of the unsplit backward; and the whole thing
 * twice from NaN-filled outputs gives the same bits. */
START_TEST(block_dropout_split)
{
    rng_seed(6000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 1, mask_row);
    blk_set_dropout(&c, 0.2f, train_keys);
    float *g = frand(c.nx, -1, 1);
    Run full = run_full(&c, g), again = run_full(&c, g);
    require_same("the same calls twice", &c, &full, &again);

    /* split: forward and input half of micro-batch A ... */
    Run sp;
    sp.ndsaved = full.ndsaved;
    sp.din = fnan(c.nx), sp.dsaved = fnan(sp.ndsaved);
    for (int k = 0; k < 12; k++)
        sp.grads[k] = fzero(c.np[k]);
    blk_forward(&c);
    sp.out = malloc((size_t)c.nx * sizeof(float)), sp.saved = malloc((size_t)c.nsaved * sizeof(float));
    memcpy(sp.out, c.out, (size_t)c.nx * sizeof(float));
    memcpy(sp.saved, c.saved, (size_t)c.nsaved * sizeof(float));
    fill_nan(c.scratch, c.nscratch);
    k_block_backward_input(sp.din, sp.dsaved, g, c.x, sp.saved, c.mask, (const float *const *)c.p, c.B, &c.g, &c.keys,
                           c.scratch);
    /* ... micro-batch B in between (other samples, same step) ... */
    KBlockKeys other = train_keys;
    other.sample0 += 2;
    float *din2 = fnan(c.nx), *dsaved2 = fnan(sp.ndsaved);
    k_block_forward(c.out, c.saved, c.x, c.mask, (const float *const *)c.p, c.B, &c.g, &other, c.scratch);
    k_block_backward_input(din2, dsaved2, g, c.x, c.saved, c.mask, (const float *const *)c.p, c.B, &c.g, &other,
                           c.scratch);
    ck_assert(memcmp(din2, sp.din, (size_t)c.nx * sizeof(float)) != 0); /* other masks */
    /* ... then A's weight half, from what A's input half left */
    fill_nan(c.scratch, c.nscratch);
    k_block_backward_weight(sp.grads, sp.dsaved, c.x, sp.saved, c.B, &c.g, c.scratch);
    require_same("split (weight half later) vs unsplit", &c, &full, &sp);
    free(din2), free(dsaved2), free(g);
    run_free(&full), run_free(&again), run_free(&sp);
    blk_free(&c);
}
END_TEST

/* The masks of sites 3 and 2 come back out of dsaved: with dout = 1,
 * mlp.proj's output gradient is exactly the factor (0 or 1 / (1 - p)), and
 * attn.proj's is 0 exactly where site 2 drops. Both must be the documented
 * streams of each sample (sample0 + b), drawn here by k_dropout_mask. */
START_TEST(block_dropout_masks_readback)
{
    rng_seed(7000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 1, mask_row);
    blk_set_dropout(&c, 0.4f, train_keys);
    float *ones = malloc((size_t)c.nx * sizeof(float));
    for (int64_t i = 0; i < c.nx; i++)
        ones[i] = 1.0f;
    Run r = run_full(&c, ones);
    KBlockDsaved q = k_block_dsaved_layout(&c.g, c.B);
    int64_t per = c.g.t * c.g.d;
    float keep = 1.0f / (1.0f - c.g.dropout);
    uint8_t *m3 = malloc((size_t)per), *m2 = malloc((size_t)per);
    int64_t dropped3 = 0, dropped2 = 0;
    for (int64_t b = 0; b < c.B; b++) {
        uint64_t sample = train_keys.sample0 + (uint64_t)b;
        k_dropout_mask(m3, per, c.g.dropout, train_keys.seed, train_keys.step, sample,
                       k_block_drop_stream(train_keys.layer, K_BLOCK_DROP_MLP_PROJ));
        k_dropout_mask(m2, per, c.g.dropout, train_keys.seed, train_keys.step, sample,
                       k_block_drop_stream(train_keys.layer, K_BLOCK_DROP_ATTN_PROJ));
        for (int64_t e = 0; e < per; e++) {
            float d3 = r.dsaved[q.dout + b * per + e], d2 = r.dsaved[q.dh + b * per + e];
            REQUIRE(d3 == (m3[e] ? keep : 0.0f), "sample %lld: mlp.proj's gradient[%lld] = %g, site 3's mask %d",
                    (long long)b, (long long)e, d3, m3[e]);
            REQUIRE((d2 == 0.0f) == (m2[e] == 0), "sample %lld: attn.proj's gradient[%lld] = %g, site 2's mask %d",
                    (long long)b, (long long)e, d2, m2[e]);
            dropped3 += !m3[e], dropped2 += !m2[e];
        }
    }
    /* 80 draws each at p = 0.4: both kinds present */
    ck_assert(dropped3 > 0 && dropped3 < 2 * per && dropped2 > 0 && dropped2 < 2 * per);
    /* the two sites are different streams */
    ck_assert(memcmp(m2, m3, (size_t)per) != 0);
    free(m3), free(m2), free(ones);
    run_free(&r);
    blk_free(&c);
}
END_TEST

/* The block's output depends on every key, and on nothing else: the same
 * keys give the same bits, another seed, step, layer or first sample gives
 * another output; a sample's output does not depend on the micro-batch it
 * is in (sample 1 of a pair starting at 40 = a single sample at 41). */
START_TEST(block_dropout_keys)
{
    rng_seed(8000);
    Blk c;
    blk_init(&c, 2, 5, 8, 2, 12, 0, NULL);
    blk_set_dropout(&c, 0.2f, train_keys);
    blk_forward(&c);
    float *base = malloc((size_t)c.nx * sizeof(float));
    memcpy(base, c.out, (size_t)c.nx * sizeof(float));
    blk_forward(&c);
    ck_assert_mem_eq(c.out, base, (size_t)c.nx * sizeof(float));
    for (int which = 0; which < 4; which++) {
        KBlockKeys k = train_keys;
        if (which == 0)
            k.seed += 1;
        else if (which == 1)
            k.step += 1;
        else if (which == 2)
            k.layer += 1;
        else
            k.sample0 += 1;
        c.keys = k;
        blk_forward(&c);
        /* every sample changes */
        for (int64_t b = 0; b < c.B; b++) {
            int64_t per = c.g.t * c.g.d;
            REQUIRE(memcmp(c.out + b * per, base + b * per, (size_t)per * sizeof(float)) != 0,
                    "key %d changed, sample %lld's output did not", which, (long long)b);
        }
    }
    /* sample 1 alone, keyed as the second of the pair */
    Blk one;
    blk_init(&one, 1, 5, 8, 2, 12, 0, NULL);
    KBlockKeys k1 = train_keys;
    k1.sample0 += 1;
    blk_set_dropout(&one, 0.2f, k1);
    for (int k = 0; k < 12; k++)
        memcpy(one.p[k], c.p[k], (size_t)c.np[k] * sizeof(float));
    memcpy(one.x, c.x + one.nx, (size_t)one.nx * sizeof(float));
    blk_forward(&one);
    double mx = absmax(base + one.nx, one.nx);
    for (int64_t i = 0; i < one.nx; i++)
        REQUIRE(fabs(one.out[i] - base[one.nx + i]) <= 1e-6 * mx, "sample 41 alone: out[%lld] = %.9g, in a pair %.9g",
                (long long)i, one.out[i], base[one.nx + i]);
    free(base);
    blk_free(&one);
    blk_free(&c);
}
END_TEST

/* The recipe itself (k_random.c): k_dropout_mask_at is a window of the
 * whole stream at any offset; the three sites of a layer, the standalone
 * dropout layer's stream (site 0), neighbouring layers, steps, samples and
 * seeds all give different masks; about p of each is dropped. */
START_TEST(block_dropout_streams)
{
    enum { N = 4099 }; /* not a multiple of 4 */
    float p = 0.1f;
    uint64_t seed = 99, step = 3, sample = 17;
    static uint8_t whole[N], part[N], m[24][N];
    k_dropout_mask(whole, N, p, seed, step, sample, k_block_drop_stream(5, 1));
    for (int64_t e0 = 0; e0 < 9; e0++) {
        k_dropout_mask_at(part, e0, N - e0 - 3, p, seed, step, sample, k_block_drop_stream(5, 1));
        ck_assert_mem_eq(part, whole + e0, (size_t)(N - e0 - 3));
    }
    /* layers 4..6, sites 0..3 (0: the dropout layer's stream) at (step,
     * sample, seed); then the block's site 1 of layer 5 at neighbours of
     * each of those */
    int nm = 0;
    for (uint32_t layer = 4; layer <= 6; layer++)
        for (int site = 0; site <= 3; site++)
            k_dropout_mask(m[nm++], N, p, seed, step, sample, k_block_drop_stream(layer, site));
    k_dropout_mask(m[nm++], N, p, seed, step + 1, sample, k_block_drop_stream(5, 1));
    k_dropout_mask(m[nm++], N, p, seed, step, sample + 1, k_block_drop_stream(5, 1));
    k_dropout_mask(m[nm++], N, p, seed + 1, step, sample, k_block_drop_stream(5, 1));
    for (int a = 0; a < nm; a++) {
        int64_t dropped = 0;
        for (int64_t e = 0; e < N; e++)
            dropped += !m[a][e];
        /* mean 409.9, sd 19.2: 5 sd either way */
        REQUIRE(dropped > 313 && dropped < 506, "mask %d drops %lld of %d at p 0.1", a, (long long)dropped, N);
        for (int b = 0; b < a; b++)
            REQUIRE(memcmp(m[a], m[b], N) != 0, "masks %d and %d are the same stream", a, b);
    }
    /* the stream words: distinct for every (layer, site), never a plain
     * layer index unless site 0 */
    ck_assert_uint_eq(k_block_drop_stream(7, 0), 7);
    ck_assert_uint_eq(k_block_drop_stream(99999, 3), 99999u + (3u << 24));
    ck_assert_uint_ne(k_block_drop_stream(0, 2), k_block_drop_stream(2, 0));
}
END_TEST

/* The per-sample counts follow the layout in k_block.c:
 * saved = 7 T D + 4 T + H T^2 + 2 T F, dsaved = T (7 D + F). */
START_TEST(block_sizes)
{
    KBlock g = {.t = 128, .d = 128, .heads = 4, .f = 512, .causal = 1, .eps = 1e-5f, .dropout = 0.0f};
    ck_assert_int_eq(k_block_saved_floats(&g), 7 * 128 * 128 + 4 * 128 + 4 * 128 * 128 + 2 * 128 * 512);
    ck_assert_int_eq(k_block_dsaved_floats(&g), 128 * (7 * 128 + 512));
    ck_assert_int_eq(k_block_scratch_floats(&g, 3), 3 * 128 * 512);
    /* F < D: scratch follows D */
    KBlock w = {.t = 5, .d = 8, .heads = 2, .f = 6, .causal = 0, .eps = 1e-5f, .dropout = 0.0f};
    ck_assert_int_eq(k_block_scratch_floats(&w, 2), 2 * 5 * 8);
    /* dropout > 0: + dres (N, D) + pd, dpd (T, T) + a mask of max(T T, T D)
     * bytes; saved and dsaved unchanged (masks are drawn again, not kept) */
    g.dropout = 0.1f;
    ck_assert_int_eq(k_block_scratch_floats(&g, 3), 3 * 128 * 512 + 3 * 128 * 128 + 2 * 128 * 128 + 128 * 128 / 4);
    ck_assert_int_eq(k_block_saved_floats(&g), 7 * 128 * 128 + 4 * 128 + 4 * 128 * 128 + 2 * 128 * 512);
    ck_assert_int_eq(k_block_dsaved_floats(&g), 128 * (7 * 128 + 512));
    w.dropout = 0.5f; /* T D > T T, and odd: the mask rounds up to floats */
    ck_assert_int_eq(k_block_scratch_floats(&w, 2), 2 * 5 * 8 + 2 * 5 * 8 + 2 * 25 + (40 + 3) / 4);
}
END_TEST

/* ---- packed weights ------------------------------------------------------------------ */

/* The size rule: the four linears' two copies each; 0 beyond 512 rows a
 * call, D 512, F 1024, or with tp > 1 or bf16 products. */
START_TEST(block_pack_rule)
{
    KBlock g = {.t = 128, .d = 128, .heads = 4, .f = 512, .causal = 1, .eps = 1e-5f};
    int64_t want = 0, in[4] = {128, 128, 128, 512}, out[4] = {384, 128, 512, 128};
    for (int i = 0; i < 4; i++)
        want += k_pack_floats(out[i], in[i]) + k_pack_floats(in[i], out[i]);
    ck_assert_int_eq(k_block_pack_floats(&g, 4), want);
    ck_assert_int_eq(k_block_pack_floats(&g, 5), 0); /* 640 rows */
    KBlock h = g;
    h.d = 640, h.heads = 5;
    ck_assert_int_eq(k_block_pack_floats(&h, 1), 0);
    h = g, h.f = 2048;
    ck_assert_int_eq(k_block_pack_floats(&h, 1), 0);
    h = g, h.tp = 2;
    ck_assert_int_eq(k_block_pack_floats(&h, 1), 0);
    h = g, h.prec = K_BF16;
    ck_assert_int_eq(k_block_pack_floats(&h, 1), 0);
}
END_TEST

/* From packed weights: close to OpenBLAS's products, and each sample's
 * bits do not depend on the others in the call (one sample alone = the
 * same sample among three), forward and input gradient, with a mask. */
START_TEST(block_packed)
{
    if (!k_packed_supported()) {
        puts("block_packed: no AVX-512F here, the packed products are not used (the rule is checked above)");
        return;
    }
    const int64_t B = 3, T = 8, D = 32, H = 4, F = 64;
    float *mask = frand(B * T, 0, 1);
    for (int64_t i = 0; i < B * T; i++)
        mask[i] = mask[i] < 0.2f ? 0.0f : 1.0f;
    Blk c, one;
    blk_init(&c, B, T, D, H, F, 1, mask);
    blk_init(&one, 1, T, D, H, F, 1, mask);
    for (int k = 0; k < 12; k++)
        memcpy(one.p[k], c.p[k], (size_t)c.np[k] * sizeof(float));
    memcpy(one.x, c.x, (size_t)one.nx * sizeof(float));
    int64_t np = k_block_pack_floats(&c.g, B);
    ck_assert_int_gt(np, 0);
    float *pack = fnan(np);
    k_block_pack(pack, &c.g, (const float *const *)c.p, 0);
    k_block_pack(pack, &c.g, (const float *const *)c.p, 1);
    for (int64_t i = 0; i < np; i++)
        ck_assert_msg(!isnan(pack[i]), "pack float %lld not written", (long long)i);
    /* forward */
    blk_forward(&c);
    float *ref = malloc((size_t)c.nx * sizeof(float));
    memcpy(ref, c.out, (size_t)c.nx * sizeof(float));
    c.g.pack = pack, one.g.pack = pack;
    blk_forward(&c);
    blk_forward(&one);
    for (int64_t i = 0; i < c.nx; i++)
        ck_assert_msg(fabsf(c.out[i] - ref[i]) <= 1e-5f * (1.0f + fabsf(ref[i])), "out[%lld] %g vs %g", (long long)i,
                      c.out[i], ref[i]);
    ck_assert(memcmp(one.out, c.out, (size_t)one.nx * sizeof(float)) == 0);
    /* input gradient */
    float *dout = frand(c.nx, -1, 1);
    int64_t nds = B * k_block_dsaved_floats(&c.g);
    float *din[3], *ds[3], *gr[3][12];
    for (int v = 0; v < 3; v++) {
        din[v] = fnan(c.nx);
        ds[v] = fnan(nds);
        for (int k = 0; k < 12; k++)
            gr[v][k] = calloc((size_t)c.np[k], sizeof(float));
    }
    blk_backward(&c, din[0], ds[0], gr[0], dout); /* packed, 3 samples */
    blk_backward(&one, din[1], ds[1], gr[1], dout);
    c.g.pack = NULL;
    blk_forward(&c);
    blk_backward(&c, din[2], ds[2], gr[2], dout); /* OpenBLAS's */
    ck_assert(memcmp(din[1], din[0], (size_t)one.nx * sizeof(float)) == 0);
    for (int64_t i = 0; i < c.nx; i++)
        ck_assert_msg(fabsf(din[0][i] - din[2][i]) <= 1e-4f * (1.0f + fabsf(din[2][i])), "din[%lld] %g vs %g",
                      (long long)i, din[0][i], din[2][i]);
    for (int v = 0; v < 3; v++) {
        free(din[v]), free(ds[v]);
        for (int k = 0; k < 12; k++)
            free(gr[v][k]);
    }
    free(dout), free(ref), free(pack), free(mask);
    blk_free(&c);
    blk_free(&one);
}
END_TEST

/* ---- tensor parallel ------------------------------------------------------------------ */

typedef struct TpRank {
    TpMember me;
    KBlock g;
    const Blk *whole;
    float *p[12], *grads[12], *out, *saved, *din, *dsaved, *scratch;
    const float *dout;
    int64_t np[12];
} TpRank;

/* rank r's share of a whole block's 12 tensors (k_block.h, "Tensor
 * parallel"): qkv's rows of each of its three sections, proj's and
 * mlp.proj's columns, fc's rows; the rest whole. n[k] gets the sizes. */
static void tp_share(float *out[12], int64_t n[12], float *const a[12], const KBlock *g, int tp, int r)
{
    int64_t d = g->d, f = g->f, dl = d / tp, fl = f / tp;
    for (int k = 0; k < 12; k++)
        out[k] = NULL;
    out[2] = fnan(3 * dl * d), out[3] = fnan(3 * dl);
    for (int sec = 0; sec < 3; sec++) {
        memcpy(out[2] + sec * dl * d, a[2] + (sec * d + r * dl) * d, (size_t)(dl * d) * sizeof(float));
        memcpy(out[3] + sec * dl, a[3] + sec * d + r * dl, (size_t)dl * sizeof(float));
    }
    out[4] = take_cols(a[4], d, d, r * dl, dl);
    out[8] = take_rows(a[8], r * fl, fl, d), out[9] = take_rows(a[9], r * fl, fl, 1);
    out[10] = take_cols(a[10], d, f, r * fl, fl);
    int64_t whole[12] = {d, d, 0, 0, 0, d, d, d, 0, 0, 0, d};
    int64_t part[12] = {d, d, 3 * dl * d, 3 * dl, d * dl, d, d, d, fl * d, fl, d * fl, d};
    for (int k = 0; k < 12; k++) {
        if (whole[k])
            out[k] = take_rows(a[k], 0, 1, whole[k]);
        n[k] = part[k];
    }
}

static void *tp_rank_run(void *arg)
{
    TpRank *m = arg;
    const Blk *c = m->whole;
    const float *const *p = (const float *const *)m->p;
    k_block_forward(m->out, m->saved, c->x, c->mask, p, c->B, &m->g, &c->keys, m->scratch);
    k_block_backward_input(m->din, m->dsaved, m->dout, c->x, m->saved, c->mask, p, c->B, &m->g, &c->keys, m->scratch);
    k_block_backward_weight(m->grads, m->dsaved, c->x, m->saved, c->B, &m->g, m->scratch);
    return NULL;
}

/* The block split over tp = 2 and 4 ranks (threads) against the whole one,
 * with a padding mask, causal, dropout on (so drop1's masks must follow
 * the global head): out and din the same bits on every rank and within
 * 1e-5 of the whole block's (relative to the largest); each rank's
 * parameter gradients its slice of the whole's, the replicated ones the
 * same bits on every rank; saved and dsaved smaller. */
START_TEST(block_tensor_parallel)
{
    for (int tp = 2; tp <= TP_MAX; tp *= 2) {
        rng_seed(9000 + (uint32_t)tp);
        Blk c;
        blk_init(&c, 2, 5, 16, 4, 24, 1, mask_row);
        blk_set_dropout(&c, 0.2f, train_keys);
        float *dout = frand(c.nx, -1, 1);
        Run whole = run_full(&c, dout);
        TpWorld w = {.tp = tp};
        pthread_barrier_init(&w.bar, NULL, (unsigned)tp);
        TpRank rk[TP_MAX];
        void *arg[TP_MAX];
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            memset(m, 0, sizeof *m);
            m->me = (TpMember){&w, r}, m->whole = &c, m->dout = dout;
            m->g = c.g;
            m->g.tp = tp, m->g.tp_rank = r, m->g.tp_sum = tp_sum_threads, m->g.tp_ctx = &m->me;
            arg[r] = m;
            REQUIRE(k_block_saved_floats(&m->g) < k_block_saved_floats(&c.g) &&
                        k_block_dsaved_floats(&m->g) < k_block_dsaved_floats(&c.g),
                    "tp %d: saved and dsaved shrink", tp);
            tp_share(m->p, m->np, c.p, &c.g, tp, r);
            for (int k = 0; k < 12; k++)
                m->grads[k] = fzero(m->np[k]);
            m->out = fnan(c.nx), m->din = fnan(c.nx);
            m->saved = fnan(c.B * k_block_saved_floats(&m->g));
            m->dsaved = fnan(c.B * k_block_dsaved_floats(&m->g));
            m->scratch = fnan(k_block_scratch_floats(&m->g, c.B));
        }
        tp_run(tp, tp_rank_run, arg);
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            REQUIRE(!memcmp(m->out, rk[0].out, (size_t)c.nx * sizeof(float)), "tp %d: rank %d's out differs", tp, r);
            REQUIRE(!memcmp(m->din, rk[0].din, (size_t)c.nx * sizeof(float)), "tp %d: rank %d's din differs", tp, r);
            require_close("out", tp, m->out, whole.out, c.nx, 1e-5);
            require_close("din", tp, m->din, whole.din, c.nx, 1e-5);
            float *want[12];
            int64_t nw[12];
            tp_share(want, nw, whole.grads, &c.g, tp, r);
            for (int k = 0; k < 12; k++) {
                require_close(pnames[k], tp, m->grads[k], want[k], nw[k], 1e-5);
                if (nw[k] == c.np[k]) /* replicated */
                    REQUIRE(!memcmp(m->grads[k], rk[0].grads[k], (size_t)nw[k] * sizeof(float)),
                            "tp %d: rank %d's %s differs", tp, r, pnames[k]);
                free(want[k]);
            }
        }
        for (int r = 0; r < tp; r++) {
            TpRank *m = &rk[r];
            for (int k = 0; k < 12; k++)
                free(m->p[k]), free(m->grads[k]);
            free(m->out), free(m->din), free(m->saved), free(m->dsaved), free(m->scratch);
        }
        pthread_barrier_destroy(&w.bar);
        run_free(&whole);
        free(dout);
        blk_free(&c);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("block");
    TCase *c = tcase_create("block");
    tcase_set_timeout(c, 60);
    tcase_add_loop_test(c, block_forward_reference, 0, 2 * M_N);
    tcase_add_loop_test(c, block_gradients, 0, 2 * M_N);
    tcase_add_test(c, block_accumulates_and_repeats);
    tcase_add_test(c, block_sizes);
    tcase_add_loop_test(c, block_dropout_forward_reference, 0, 2 * M_N);
    tcase_add_loop_test(c, block_dropout_gradients, 0, 2 * M_N);
    tcase_add_test(c, block_dropout_identity);
    tcase_add_test(c, block_dropout_split);
    tcase_add_test(c, block_dropout_masks_readback);
    tcase_add_test(c, block_dropout_keys);
    tcase_add_test(c, block_dropout_streams);
    tcase_add_test(c, block_tensor_parallel);
    tcase_add_test(c, block_pack_rule);
    tcase_add_test(c, block_packed);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    /* the kernels' contract is single-threaded */
    openblas_set_num_threads(1);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
