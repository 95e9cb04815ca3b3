/* kernels/cpu/k_sizes.c: what the kernels need beside their arrays (saved
 * state, inner gradients, scratch), in floats: the layouts of k_block.h,
 * k_llama.h and k_cpu.h summed up. Apart from the kernels so that what
 * sizes memory (plan/plan_memory.c, in pipec as in pipert) links no BLAS:
 * library pipe_kernel_sizes. */
#include "k_block.h"
#include "k_cpu.h"
#include "k_llama.h"

int64_t k_block_saved_floats(const KBlock *g)
{
    return k_block_saved_layout(g, 1).end;
}

int64_t k_block_dsaved_floats(const KBlock *g)
{
    return k_block_dsaved_layout(g, 1).end;
}

/* The forward's and backward's scratch, and room for the four linears'
 * weight gradients' packed inputs (k_linear_wgrad_floats; whatever the
 * precision, so that the size does not depend on it) */
int64_t k_block_scratch_floats(const KBlock *g, int64_t B)
{
    int64_t fl = k_block_fl(g);
    int64_t most = g->dropout > 0.0f ? k_block_drop_scratch(g, B, NULL).end : B * g->t * (fl > g->d ? fl : g->d);
    for (int i = 0; i < 4; i++) {
        int64_t in, out;
        k_block_linear(g, i, &in, &out);
        int64_t wg = k_linear_wgrad_floats(B * g->t, in, out);
        most = wg > most ? wg : most;
    }
    return most;
}

int64_t k_block_pack_floats(const KBlock *g, int64_t B)
{
    if (g->prec != K_FP32 || k_block_tp(g) != 1 || B * g->t > 512 || g->d > 512 || g->f > 1024)
        return 0;
    int64_t n = 0;
    for (int i = 0; i < 4; i++) {
        int64_t in, out;
        k_block_linear(g, i, &in, &out);
        n += k_pack_floats(out, in) + k_pack_floats(in, out);
    }
    return n;
}

int64_t k_llama_saved_floats(const KLlama *g)
{
    return k_llama_saved_layout(g, 1).end;
}

int64_t k_llama_dsaved_floats(const KLlama *g)
{
    return k_llama_dsaved_layout(g, 1).end;
}

int64_t k_llama_scratch_floats(const KLlama *g, int64_t B)
{
    return k_llama_scratch_layout(g, B).end;
}

/* Measured on OpenBLAS 0.3.21's Cooperlake kernels (docs/benchmarks.md):
 * out^T = w . in^T is 1.3x-2.1x faster than out = in . w^T for up to 64
 * rows against an input of 512 features or more, about 1.1x for 128 rows
 * with 512 outputs or more, and slower for more rows or a narrow input. */
int64_t k_linear_scratch(int64_t n, int64_t in_f, int64_t out_f)
{
    int swap = in_f >= 512 && (n <= 64 || (n <= 128 && out_f >= 512));
    return swap ? n * out_f : 0;
}

/* k_gemm.c's packed layout: blocks of k, panels of 32 lanes */
int64_t k_pack_floats(int64_t n, int64_t k)
{
    return (n + 31) / 32 * 32 * k;
}

/* Measured on this project's 2-core AMD EPYC (AVX-512), one thread, the
 * weights cycled through 8 layers (docs/benchmarks.md): against OpenBLAS
 * 0.3.21's sgemm, the packed product is 1.1x-1.8x faster for 32 to 256
 * rows at 256 to 1024 features, and slower at 512 rows of 128. The two
 * copies cost twice the weight's memory: a weight of more than 2^22
 * elements (16 MiB; 2048 x 2048) keeps OpenBLAS's product and no copies. */
int64_t k_linear_pack_floats(int64_t n, int64_t in_f, int64_t out_f)
{
    if (n < 1 || n > 256 || in_f < 256 || out_f < 256 || in_f > ((int64_t)1 << 22) / out_f)
        return 0;
    return k_pack_floats(out_f, in_f) + k_pack_floats(in_f, out_f);
}

/* k_gemm_wgrad's scratch: B in panels of 32 columns */
int64_t k_wgrad_floats(int64_t k, int64_t n)
{
    return (n + 31) / 32 * 32 * k;
}

/* Measured on this project's 2-core AMD EPYC, one thread (bench/cpu_packed,
 * docs/benchmarks.md): the weight gradient by k_gemm_wgrad runs at
 * 1.6x-1.9x OpenBLAS's Haswell kernels for 64-512 rows against 128-1024
 * features (0.93x-1.07x its AVX-512 ones, and slower in pipert: those
 * keep it, k_wgrad_supported). Up to 512 rows, at least a tile's width
 * (32 features in, 8 out), the packed input at most 1 MiB (it is read
 * once per 8 outputs). The size rule does not depend on the machine. */
int64_t k_linear_wgrad_floats(int64_t n, int64_t in_f, int64_t out_f)
{
    if (n < 1 || n > 512 || in_f < 32 || out_f < 8 || (in_f + 31) / 32 * 32 * n > ((int64_t)1 << 18))
        return 0;
    return k_wgrad_floats(n, in_f);
}

int64_t k_conv2d_scratch(const KConv *g)
{
    return g->c * g->kh * g->kw * g->oh * g->ow;
}
