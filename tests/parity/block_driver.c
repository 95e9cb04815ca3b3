/* tests/parity/block_driver.c: runs the transformer_block kernel
 * (kernels/k_block.h) for tests/parity/test_block.py.
 *
 *   block_driver < input
 *
 * stdin, whitespace-separated text (%.9g round-trips a float32 exactly):
 *   B T D H F CAUSAL HAS_MASK P TRAINING SEED STEP SAMPLE0 LAYER
 *     (P the block's dropout; the rest its KBlockKeys)
 *   x (B*T*D)
 *   mask (B*T), only when HAS_MASK is 1 (1 = real token, 0 = padding)
 *   the 12 parameters in PlanLayer.param order, each flattened row-major:
 *     ln1.weight (D), ln1.bias (D), attn.qkv.weight (3D*D), attn.qkv.bias (3D),
 *     attn.proj.weight (D*D), attn.proj.bias (D), ln2.weight (D), ln2.bias (D),
 *     mlp.fc.weight (F*D), mlp.fc.bias (F), mlp.proj.weight (D*F), mlp.proj.bias (D)
 *   dout (B*T*D), the upstream gradient
 *
 * It runs k_block_forward, then k_block_backward_input and
 * k_block_backward_weight (into zeroed gradients) with those keys (the
 * masks are Philox streams the caller can reproduce: k_random.c's recipe),
 * and prints 14 lines,
 * each a name and its values in %.9g: `out`, `din`, then the 12 parameter
 * names above with their gradients. Exit 2 on malformed input. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_block.h"

static const char *const pnames[12] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                       "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                                       "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"};

static float *xalloc(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) {
        fprintf(stderr, "block_driver: out of memory (%lld floats)\n", (long long)n);
        exit(2);
    }
    return p;
}

/* n floats from stdin */
static float *read_floats(int64_t n, const char *what)
{
    float *p = xalloc(n);
    for (int64_t i = 0; i < n; i++)
        if (scanf("%f", &p[i]) != 1) {
            fprintf(stderr, "block_driver: %s: expected %lld numbers, got %lld\n", what, (long long)n, (long long)i);
            exit(2);
        }
    return p;
}

static void print_floats(const char *name, const float *p, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++)
        printf(" %.9g", p[i]);
    printf("\n");
}

int main(void)
{
    openblas_set_num_threads(1); /* the kernels' contract: one thread */
    long long B, t, d, H, f;
    int causal, has_mask, training;
    float p_drop;
    unsigned long long seed, step, sample0;
    unsigned layer;
    if (scanf("%lld %lld %lld %lld %lld %d %d %f %d %llu %llu %llu %u", &B, &t, &d, &H, &f, &causal, &has_mask,
              &p_drop, &training, &seed, &step, &sample0, &layer) != 13 ||
        B <= 0 || t <= 0 || d <= 0 || H <= 0 || f <= 0 || d % H != 0 || !(p_drop >= 0.0f && p_drop < 1.0f) ||
        layer >= (1u << 24)) {
        fprintf(stderr, "block_driver: expected B T D H F CAUSAL HAS_MASK P TRAINING SEED STEP SAMPLE0 LAYER "
                        "(H dividing D, P in [0, 1), LAYER < 2^24)\n");
        return 2;
    }
    KBlock g = {.t = t, .d = d, .heads = H, .f = f, .causal = causal, .eps = 1e-5f, .dropout = p_drop};
    KBlockKeys keys = {training, seed, step, sample0, layer};
    int64_t nx = B * t * d;
    int64_t np[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * f, d};
    float *x = read_floats(nx, "x");
    float *mask = has_mask ? read_floats(B * t, "mask") : NULL;
    float *p[12], *grads[12];
    for (int k = 0; k < 12; k++) {
        p[k] = read_floats(np[k], pnames[k]);
        grads[k] = xalloc(np[k]);
    }
    float *dout = read_floats(nx, "dout");

    float *out = xalloc(nx), *din = xalloc(nx);
    float *saved = xalloc(B * k_block_saved_floats(&g)), *dsaved = xalloc(B * k_block_dsaved_floats(&g));
    float *scratch = xalloc(k_block_scratch_floats(&g, B));
    k_block_forward(out, saved, x, mask, (const float *const *)p, B, &g, &keys, scratch);
    k_block_backward_input(din, dsaved, dout, x, saved, mask, (const float *const *)p, B, &g, &keys, scratch);
    k_block_backward_weight(grads, dsaved, x, saved, B, &g, scratch);

    print_floats("out", out, nx);
    print_floats("din", din, nx);
    for (int k = 0; k < 12; k++)
        print_floats(pnames[k], grads[k], np[k]);

    free(x), free(mask), free(dout), free(out), free(din), free(saved), free(dsaved), free(scratch);
    for (int k = 0; k < 12; k++)
        free(p[k]), free(grads[k]);
    return ferror(stdout) ? 1 : 0;
}
