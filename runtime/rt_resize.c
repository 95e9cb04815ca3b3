/* runtime/rt_resize.c: the bilinear resize of cifar10(DIR, resize = S)
 * (rt_resize.h), apart from the loaders of rt_data.c because it is its own
 * contract: PyTorch's arithmetic, reproduced operation by operation. Built
 * with -ffp-contract=off (the pipe_runtime library), so the only fused
 * multiply-adds are the fmaf calls written here.
 *
 * The exact numbers (so another implementation can reproduce them):
 * PyTorch's upsample_bilinear2d with align_corners=False on float NCHW
 * tensors, on the CPU, as torch 1.13 (Debian's python3-torch, the
 * project's parity reference) computes it:
 *   ratio = (float)in / out, a float;
 *   src = ratio * (dst + 0.5) - 0.5 in double, negative clamped to 0;
 *   i0 = min(floor(src), in - 1); i1 = i0 + 1 unless i0 is the last row
 *   or column; l1 = (float)(src - i0); l0 = 1.0f - l1;
 *   top = fma(x00, l0w, x01 * l1w), bot = fma(x10, l0w, x11 * l1w),
 *   out = fma(top, l0h, bot * l1h)     (floats; fma rounds once)
 * and a dimension of the same size is copied. The fmas are what the
 * compiler made of PyTorch's t0 * w0 + t1 * w1 in its x86-64 build. This
 * is bit-identical to torch 1.13 (tests/parity/test_resize.py); other
 * releases and builds (float src, no fma) differ by an ulp or so.
 */
#include "rt_resize.h"

#include <math.h>
#include <string.h>

typedef struct Lerp {
    int64_t i0, i1;
    float l0, l1;
} Lerp;

static Lerp lerp_at(int64_t o, int64_t in, int64_t out)
{
    Lerp r;
    if (in == out) {
        r.i0 = r.i1 = o;
        r.l0 = 1.0f;
        r.l1 = 0.0f;
        return r;
    }
    /* the ratio in float, the source position and the weight in double,
     * the weight rounded to float: what PyTorch's CPU kernel does for float
     * tensors (matched weight for weight against torch 1.13) */
    float scale = (float)in / (float)out;
    double src = (double)scale * ((double)o + 0.5) - 0.5;
    if (src < 0.0)
        src = 0.0;
    int64_t i0 = (int64_t)floor(src);
    if (i0 > in - 1)
        i0 = in - 1;
    double l = src - (double)i0;
    float l1 = (float)(l < 0.0 ? 0.0 : l > 1.0 ? 1.0 : l);
    r.i0 = i0;
    r.i1 = i0 + (i0 < in - 1 ? 1 : 0);
    r.l1 = l1;
    r.l0 = 1.0f - l1;
    return r;
}

/* Horizontal pass first, vertical second: the value for source row r and
 * output column x (fma(x_r0, l0w, x_r1 * l1w)) does not depend on the output
 * row, so each is computed once, for a strip of columns at a time, into a
 * fixed buffer on the stack; then each output is one more fma. The same
 * operations on the same values as computing every output from its four
 * neighbours, so the same bits, at a fraction of the work (32 x 224 instead
 * of 2 x 224 x 224 horizontal fmas a channel for cifar10 at 224). */
#define RT_RESIZE_TMP 8192  /* floats of horizontal results (32 KiB) */
#define RT_RESIZE_STRIP 512 /* columns a strip at most */

/* The strips of one resize; always inlined, so that the copy inside
 * resize_strips_fma below gets the fma instruction for fmaf, not a call. */
static inline __attribute__((always_inline)) void resize_strips(float *dst, const float *src, int64_t c, int64_t ih,
                                                                 int64_t iw, int64_t oh, int64_t ow, int64_t strip)
{
    float tmp[RT_RESIZE_TMP];
    Lerp lx[RT_RESIZE_STRIP];
    for (int64_t x0 = 0; x0 < ow; x0 += strip) {
        int64_t n = ow - x0 < strip ? ow - x0 : strip;
        for (int64_t j = 0; j < n; j++)
            lx[j] = lerp_at(x0 + j, iw, ow);
        for (int64_t ch = 0; ch < c; ch++) {
            const float *s = src + ch * ih * iw;
            /* t0 * w0 + t1 * w1 as torch's x86-64 build computes it: the
             * compiler fuses it into fma(t0, w0, t1 * w1) */
            for (int64_t r = 0; r < ih; r++)
                for (int64_t j = 0; j < n; j++)
                    tmp[r * n + j] = fmaf(s[r * iw + lx[j].i0], lx[j].l0, s[r * iw + lx[j].i1] * lx[j].l1);
            for (int64_t y = 0; y < oh; y++) {
                Lerp ly = lerp_at(y, ih, oh);
                const float *t0 = tmp + ly.i0 * n, *t1 = tmp + ly.i1 * n;
                float *o = dst + (ch * oh + y) * ow + x0;
                for (int64_t j = 0; j < n; j++)
                    o[j] = fmaf(t0[j], ly.l0, t1[j] * ly.l1);
            }
        }
    }
}

static void resize_strips_plain(float *dst, const float *src, int64_t c, int64_t ih, int64_t iw, int64_t oh,
                                int64_t ow, int64_t strip)
{
    resize_strips(dst, src, c, ih, iw, oh, ow, strip);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* fmaf is correctly rounded either way, so this copy gives the same bits,
 * about 5x faster (0.07 ms for a 3 x 224 x 224 image) where the CPU has FMA
 * (every x86-64 since 2013); the build itself stays generic x86-64. */
#define RT_FMA_CLONE 1
__attribute__((target("fma"))) static void resize_strips_fma(float *dst, const float *src, int64_t c, int64_t ih,
                                                              int64_t iw, int64_t oh, int64_t ow, int64_t strip)
{
    resize_strips(dst, src, c, ih, iw, oh, ow, strip);
}
#endif

void rt_resize_bilinear(float *dst, const float *src, int64_t c, int64_t ih, int64_t iw, int64_t oh, int64_t ow)
{
    if (ih == oh && iw == ow) {
        memcpy(dst, src, (size_t)(c * ih * iw) * sizeof *dst);
        return;
    }
    int64_t strip = ih <= RT_RESIZE_TMP ? RT_RESIZE_TMP / ih : 0;
    if (strip > RT_RESIZE_STRIP)
        strip = RT_RESIZE_STRIP;
    if (strip == 0) {
        /* a source taller than the buffer: every output from its neighbours */
        for (int64_t y = 0; y < oh; y++) {
            Lerp ly = lerp_at(y, ih, oh);
            for (int64_t x = 0; x < ow; x++) {
                Lerp l = lerp_at(x, iw, ow);
                for (int64_t ch = 0; ch < c; ch++) {
                    const float *s = src + ch * ih * iw;
                    float top = fmaf(s[ly.i0 * iw + l.i0], l.l0, s[ly.i0 * iw + l.i1] * l.l1);
                    float bot = fmaf(s[ly.i1 * iw + l.i0], l.l0, s[ly.i1 * iw + l.i1] * l.l1);
                    dst[(ch * oh + y) * ow + x] = fmaf(top, ly.l0, bot * ly.l1);
                }
            }
        }
        return;
    }
#ifdef RT_FMA_CLONE
    if (__builtin_cpu_supports("fma")) {
        resize_strips_fma(dst, src, c, ih, iw, oh, ow, strip);
        return;
    }
#endif
    resize_strips_plain(dst, src, c, ih, iw, oh, ow, strip);
}
