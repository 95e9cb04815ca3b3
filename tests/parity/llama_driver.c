/* tests/parity/llama_driver.c: runs the llama_block kernel
 * (kernels/k_llama.h) for tests/parity/test_llama.py.
 *
 *   llama_driver < input
 *
 * stdin, whitespace-separated text (%.9g round-trips a float32 exactly):
 *   B T D H K F CAUSAL HAS_MASK THETA EPS
 *   x (B*T*D)
 *   mask (B*T), only when HAS_MASK is 1 (1 = real token, 0 = padding)
 *   the 9 parameters in PlanLayer.param order, each flattened row-major,
 *   with hd = D/H: self_attn.q_proj.weight (H*hd*D), self_attn.k_proj.weight
 *   (K*hd*D), self_attn.v_proj.weight (K*hd*D), self_attn.o_proj.weight
 *   (D*H*hd), mlp.gate_proj.weight (F*D), mlp.up_proj.weight (F*D),
 *   mlp.down_proj.weight (D*F), input_layernorm.weight (D),
 *   post_attention_layernorm.weight (D)
 *   dout (B*T*D), the upstream gradient
 *
 * It runs k_llama_forward, then k_llama_backward_input and
 * k_llama_backward_weight (into zeroed gradients), and prints 11 lines, each
 * a name and its values in %.9g: `out`, `din`, then the 9 parameter names
 * above with their gradients. Exit 2 on malformed input. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "k_llama.h"

static const char *const pnames[9] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                      "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                      "mlp.down_proj.weight",    "input_layernorm.weight",
                                      "post_attention_layernorm.weight"};

static float *xalloc(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) {
        fprintf(stderr, "llama_driver: out of memory (%lld floats)\n", (long long)n);
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
            fprintf(stderr, "llama_driver: %s: expected %lld numbers, got %lld\n", what, (long long)n, (long long)i);
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
    long long B, t, d, H, K, f;
    int causal, has_mask;
    float theta, eps;
    if (scanf("%lld %lld %lld %lld %lld %lld %d %d %f %f", &B, &t, &d, &H, &K, &f, &causal, &has_mask, &theta, &eps) !=
            10 ||
        B <= 0 || t <= 0 || d <= 0 || H <= 0 || K <= 0 || f <= 0 || d % H != 0 || H % K != 0 || (d / H) % 2 != 0 ||
        !(theta > 0.0f) || !(eps > 0.0f)) {
        fprintf(stderr, "llama_driver: expected B T D H K F CAUSAL HAS_MASK THETA EPS (H dividing D into even head "
                        "widths, K dividing H, THETA and EPS positive)\n");
        return 2;
    }
    KLlama g = {.t = t, .d = d, .heads = H, .kv_heads = K, .f = f, .causal = causal, .eps = eps, .theta = theta};
    int64_t nx = B * t * d, dk = k_llama_kv_width(&g);
    int64_t np[9] = {d * d, dk * d, dk * d, d * d, f * d, f * d, d * f, d, d};
    float *x = read_floats(nx, "x");
    float *mask = has_mask ? read_floats(B * t, "mask") : NULL;
    float *p[9], *grads[9];
    for (int k = 0; k < 9; k++) {
        p[k] = read_floats(np[k], pnames[k]);
        grads[k] = xalloc(np[k]);
    }
    float *dout = read_floats(nx, "dout");

    float *out = xalloc(nx), *din = xalloc(nx);
    float *saved = xalloc(B * k_llama_saved_floats(&g)), *dsaved = xalloc(B * k_llama_dsaved_floats(&g));
    float *scratch = xalloc(k_llama_scratch_floats(&g, B));
    k_llama_forward(out, saved, x, mask, (const float *const *)p, B, &g, scratch);
    k_llama_backward_input(din, dsaved, dout, x, saved, mask, (const float *const *)p, B, &g, scratch);
    k_llama_backward_weight(grads, dsaved, x, saved, B, &g, scratch);

    print_floats("out", out, nx);
    print_floats("din", din, nx);
    for (int k = 0; k < 9; k++)
        print_floats(pnames[k], grads[k], np[k]);

    free(x), free(mask), free(dout), free(out), free(din), free(saved), free(dsaved), free(scratch);
    for (int k = 0; k < 9; k++)
        free(p[k]), free(grads[k]);
    return ferror(stdout) ? 1 : 0;
}
