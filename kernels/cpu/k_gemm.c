/* kernels/cpu/k_gemm.c: the matrix products of the CPU kernels, in the
 * plan's precision (k_cpu.h, "matrix products").
 *
 * K_FP32 is OpenBLAS's cblas_sgemm. K_BF16 is this file's own GEMM on
 * AVX512-BF16: both operands rounded to bf16 (round to nearest even) while
 * they are packed, products and sums in fp32 by vdpbf16ps, fp32 output.
 *
 * The bf16 GEMM is GotoBLAS's loop nest (Goto and van de Geijn, "Anatomy of
 * high-performance matrix multiplication", TOMS 2008): blocks of K_KC pairs of
 * k, K_NC columns of B and K_MC rows of A are packed into buffers on the
 * stack (224 KiB together; nothing is allocated), and a K_MR x K_NR
 * micro-kernel keeps its tile of C in 24 zmm registers. A packed word holds
 * two bf16 of consecutive k (the even one in the low half), which is what
 * vdpbf16ps multiplies pairwise: acc[j] += a[2p] b[2p][j] + a[2p+1] b[2p+1][j].
 *
 * Determinism: element C[i][j] is the sum over k in one fixed order (blocks
 * of K_KC pairs in turn, pairs in turn inside a block, the running sum
 * stored to C between blocks in fp32), whatever the tile, block or edge it
 * falls in. It depends on row i of A, column j of B and K only: the same
 * bits for a row computed alone or among any number of others, so a
 * micro-batch's rows, a stage cut or a schedule change nothing.
 */
#include "k_cpu.h"

#include <assert.h>
#include <cblas.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define K_HAVE_BF16_GEMM 1
#include <immintrin.h>
#define K_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define K_F32_TARGET __attribute__((target("avx512f")))
#else
#define K_HAVE_BF16_GEMM 0
#endif

#define K_MR 12  /* rows of a micro-tile: 12 x 2 accumulators */
#define K_NR 32  /* columns of a micro-tile: two zmm of 16 floats */
#define K_KC 256 /* pairs of k in a block (512 values of k) */
#define K_MC 96  /* rows of A in a block, a multiple of K_MR */
#define K_NC 128 /* columns of B in a block, a multiple of K_NR */

int k_bf16_supported(void)
{
#if K_HAVE_BF16_GEMM
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* vcvtne2ps2bf16's rounding, one value: NaN stays NaN (made quiet),
 * denormal inputs become zero of their sign, everything else rounds to
 * nearest even (a value past bf16's largest becomes infinity). */
uint16_t k_bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0)
        return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#if K_HAVE_BF16_GEMM

/* x[i] = the value of k_bf16_round(x[i]), 16 at a time */
K_BF16_TARGET static void round_values(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        _mm512_mask_storeu_epi32(x + i, m, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
}

/* An operand seen as lanes x k: element (l, q) at p[l ls + q ks]. A's lanes
 * are its rows, B's its columns. */
typedef struct KView {
    const float *p;
    int64_t ls, ks;
} KView;

/* r[t] becomes what was word t of every r[l]: a 16 x 16 transpose of
 * 32-bit words (pairs within 128-bit lanes, then pairs of pairs, then the
 * four 128-bit lanes across four registers) */
K_F32_TARGET static void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[4j + c]: in 128-bit lane L, word 4L + c of rows 4j .. 4j + 3 */
    for (int j = 0; j < 4; j++) {
        u[4 * j] = _mm512_unpacklo_epi64(t[4 * j], t[4 * j + 2]);
        u[4 * j + 1] = _mm512_unpackhi_epi64(t[4 * j], t[4 * j + 2]);
        u[4 * j + 2] = _mm512_unpacklo_epi64(t[4 * j + 1], t[4 * j + 3]);
        u[4 * j + 3] = _mm512_unpackhi_epi64(t[4 * j + 1], t[4 * j + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i a = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), b = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xee);
        __m512i e = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), d = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_i32x4(a, e, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);
        r[8 + c] = _mm512_shuffle_i32x4(b, d, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(b, d, 0xdd);
    }
}

/* Lanes [l0, l0 + nl), k [k0, k0 + kc) as panels of w lanes (K_MR for A,
 * K_NR for B): word (panel, p, l) holds k0 + 2p (low half) and k0 + 2p + 1
 * of lane l0 + panel w + l; lanes past nl and the odd k past kc are zero.
 * Each value is rounded once, by vcvtne2ps2bf16 (k_bf16_round's rounding,
 * tested). */
K_BF16_TARGET static void pack(uint32_t *dst, const KView *v, int64_t l0, int64_t nl, int64_t k0, int64_t kc,
                               int64_t w)
{
    int64_t kp = (kc + 1) / 2;
    const float *base = v->p + l0 * v->ls + k0 * v->ks;
    if (v->ks == 1) {
        /* each lane's k contiguous (a row of A, a weight's row as B): 16
         * lanes x 32 k become 16 x 16 words, transposed in registers so
         * that each k pair's words for the 16 lanes are stored at once */
        for (int64_t lr = 0; lr < nl; lr += w) {
            uint32_t *panel = dst + lr / w * kp * w;
            for (int64_t h = 0; h < w; h += 16) {
                int64_t gw = w - h < 16 ? w - h : 16;
                __mmask16 mw = (__mmask16)((1u << gw) - 1);
                for (int64_t q = 0; q < kc; q += 32) {
                    int64_t left = kc - q;
                    __mmask16 m0 = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                    __mmask16 m1 = left >= 32 ? (__mmask16)0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
                    __m512i r[16];
                    for (int64_t l = 0; l < 16; l++) {
                        if (l < gw && lr + h + l < nl) {
                            const float *x = base + (lr + h + l) * v->ls + q;
                            r[l] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + 16),
                                                                _mm512_maskz_loadu_ps(m0, x));
                        } else {
                            r[l] = _mm512_setzero_si512();
                        }
                    }
                    transpose16(r);
                    int64_t nw = left >= 32 ? 16 : (left + 1) / 2;
                    for (int64_t t = 0; t < nw; t++)
                        _mm512_mask_storeu_epi32(panel + (q / 2 + t) * w + h, mw, r[t]);
                }
            }
        }
        return;
    }
    if (v->ls == 1) {
        /* lanes contiguous at each k (a row of B, a column of A): two k, up
         * to 16 lanes at a time, interleaved into words */
        static const uint16_t order[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                           8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
        const __m512i lace = _mm512_loadu_si512(order);
        for (int64_t lr = 0; lr < nl; lr += w)
            for (int64_t p = 0; p < kp; p++)
                for (int64_t h = 0; h < w; h += 16) {
                    int64_t width = w - h < 16 ? w - h : 16, left = nl - lr - h;
                    int64_t live = left < width ? left : width;
                    __mmask16 mw = (__mmask16)((1u << width) - 1);
                    __mmask16 m = live <= 0 ? 0 : (__mmask16)((1u << live) - 1);
                    const float *x0 = base + 2 * p * v->ks + lr + h;
                    __m512 a0 = _mm512_maskz_loadu_ps(m, x0);
                    __m512 a1 = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(m, x0 + v->ks) : _mm512_setzero_ps();
                    __m512i words = _mm512_permutexvar_epi16(lace, (__m512i)_mm512_cvtne2ps_pbh(a1, a0));
                    _mm512_mask_storeu_epi32(dst + (lr / w * kp + p) * w + h, mw, words);
                }
        return;
    }
    /* any other stride: one value at a time */
    for (int64_t lr = 0; lr < nl; lr += w)
        for (int64_t p = 0; p < kp; p++)
            for (int64_t l = 0; l < w; l++) {
                uint32_t word = 0;
                if (lr + l < nl) {
                    const float *x = base + (lr + l) * v->ls + 2 * p * v->ks;
                    word = k_bf16_round(x[0]) | (2 * p + 1 < kc ? (uint32_t)k_bf16_round(x[v->ks]) << 16 : 0u);
                }
                *dst++ = word;
            }
}

/* A micro-kernel's tile of C, rows x 32 in rows x 2 zmm: its masks for nr
 * live columns, and its accumulators from src's rows, lds apart (C itself,
 * or with lds 0 one bias row for all), or zero for src NULL; then stored,
 * the first mr rows. Inlined, so the accumulators stay in registers. */
#define K_TILE_INLINE K_F32_TARGET static inline __attribute__((always_inline))
K_TILE_INLINE void tile_begin(__m512 (*acc)[2], int rows, const float *src, int64_t lds, int64_t mr, int64_t nr,
                              __mmask16 *m0, __mmask16 *m1)
{
    *m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    *m1 = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    for (int i = 0; i < rows; i++) {
        if (src && i < mr) {
            acc[i][0] = _mm512_maskz_loadu_ps(*m0, src + i * lds);
            acc[i][1] = _mm512_maskz_loadu_ps(*m1, src + i * lds + 16);
        } else {
            acc[i][0] = _mm512_setzero_ps();
            acc[i][1] = _mm512_setzero_ps();
        }
    }
}

K_TILE_INLINE void tile_end(__m512 (*acc)[2], int rows, float *c, int64_t ldc, int64_t mr, __mmask16 m0,
                            __mmask16 m1)
{
    for (int i = 0; i < rows && i < mr; i++) {
        _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
        _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][1]);
    }
}

/* C tile (mr x nr, at most K_MR x K_NR) = (load ? C : 0) + the kp pairs of
 * the packed panels, the sum over pairs in order. */
K_BF16_TARGET static void micro(int64_t kp, const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc, int load,
                                int64_t mr, int64_t nr)
{
    __mmask16 m0, m1;
    __m512 acc[K_MR][2];
    tile_begin(acc, K_MR, load ? c : NULL, ldc, mr, nr, &m0, &m1);
    for (int64_t p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < K_MR; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
        }
        ap += K_MR;
        bp += K_NR;
    }
    tile_end(acc, K_MR, c, ldc, mr, m0, m1);
}

/* every micro-tile of one packed block of A (mc rows) and of B (nc columns) */
static void tiles(const uint32_t *apack, const uint32_t *bpack, int64_t kp, int64_t mc, int64_t nc, float *c,
                  int64_t ldc, int load)
{
    for (int64_t jr = 0; jr < nc; jr += K_NR)
        for (int64_t ir = 0; ir < mc; ir += K_MR)
            micro(kp, apack + ir / K_MR * kp * K_MR, bpack + jr / K_NR * kp * K_NR, c + ir * ldc + jr, ldc, load,
                  mc - ir, nc - jr);
}

static void gemm_bf16(int64_t m, int64_t n, int64_t k, const KView *a, const KView *b, int beta, float *c,
                      int64_t ldc)
{
    _Alignas(64) uint32_t bpack[K_KC * K_NC];
    _Alignas(64) uint32_t apack[K_KC * K_MC];
    if (k == 0) {
        if (!beta)
            for (int64_t i = 0; i < m; i++)
                memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t pc = 0; pc < k; pc += 2 * K_KC) {
        int64_t kc = k - pc < 2 * K_KC ? k - pc : 2 * K_KC, kp = (kc + 1) / 2;
        int load = beta || pc > 0;
        /* a short k block leaves room for more rows and columns */
        int64_t mb = K_KC * K_MC / kp / K_MR * K_MR, nb = K_KC * K_NC / kp / K_NR * K_NR;
        /* keep the block of the operand that the other would repack more
         * often outside: packing A once per block of B costs m k per B block */
        int64_t a_blocks = (m + mb - 1) / mb, b_blocks = (n + nb - 1) / nb;
        if (a_blocks * n <= b_blocks * m) {
            for (int64_t ic = 0; ic < m; ic += mb) {
                int64_t mc = m - ic < mb ? m - ic : mb;
                pack(apack, a, ic, mc, pc, kc, K_MR);
                for (int64_t jc = 0; jc < n; jc += nb) {
                    int64_t nc = n - jc < nb ? n - jc : nb;
                    pack(bpack, b, jc, nc, pc, kc, K_NR);
                    tiles(apack, bpack, kp, mc, nc, c + ic * ldc + jc, ldc, load);
                }
            }
        } else {
            for (int64_t jc = 0; jc < n; jc += nb) {
                int64_t nc = n - jc < nb ? n - jc : nb;
                pack(bpack, b, jc, nc, pc, kc, K_NR);
                for (int64_t ic = 0; ic < m; ic += mb) {
                    int64_t mc = m - ic < mb ? m - ic : mb;
                    pack(apack, a, ic, mc, pc, kc, K_MR);
                    tiles(apack, bpack, kp, mc, nc, c + ic * ldc + jc, ldc, load);
                }
            }
        }
    }
}

/* ---- fp32 products against a packed operand --------------------------------
 *
 * A weight read by every micro-batch's product is packed once (k_pack_b)
 * into the layout the micro-kernel streams, and reused until the weight
 * changes: OpenBLAS packs it again inside every call, which perf put at a
 * fifth of the MLP's step (docs/benchmarks.md). The packed operand: for
 * each block of K_F_KC values of k in turn, its lanes (columns of op(B)) in
 * panels of K_F_NR, each panel kc x K_F_NR floats, k-major; lanes past n
 * are zero. The micro-kernel keeps a K_F_MR x K_F_NR tile of C in 16 zmm
 * registers and adds one k at a time: c = fma(a, b, c).
 *
 * Determinism: C[i][j] = (beta ? C : 0) + the products over k in order, a
 * fused multiply-add each, the running sum stored to C between blocks of
 * K_F_KC (exact in fp32): the same bits for any m, any tile or edge, and
 * the same as fmaf() in that order (unit_kernels checks it). */
#define K_F_MR 8
#define K_F_NR 32
#define K_F_KC 512
#define K_F_MC 128
/* A packed copy of at least this many floats (4 MiB, a 1024 x 1024 weight)
 * is written with streaming stores, around the caches: by the time the
 * products read it, the stage's other weights, their copies, gradients and
 * optimizer state (16 floats a weight for Adam) have gone through a 32 MiB
 * L3 anyway, and a stored line is not first read from memory. On this
 * project's 2-core EPYC (a loop over 8 such weights): packing both copies
 * of a 1024 x 1024 weight 1.5-1.7 -> 0.9 ms (docs/design-notes.md, "Packed
 * weights"). The same bits either way. */
#define K_PACK_STREAM ((int64_t)1 << 20)

/* A's rows [i0, i0 + mc), k [k0, k0 + kc) as panels of K_F_MR rows, k-major;
 * rows past mc zero. Sixteen rows at a time through the 16 x 16 transpose. */
K_F32_TARGET static void pack_a(float *dst, const float *a, int64_t lda, int64_t mc, int64_t k0, int64_t kc)
{
    for (int64_t r0 = 0; r0 < mc; r0 += 16) {
        for (int64_t q = 0; q < kc; q += 16) {
            int64_t left = kc - q < 16 ? kc - q : 16;
            __mmask16 mk = (__mmask16)((1u << left) - 1);
            __m512i r[16];
            for (int64_t l = 0; l < 16; l++)
                r[l] = r0 + l < mc ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, a + (r0 + l) * lda + k0 + q))
                                   : _mm512_setzero_si512();
            transpose16(r); /* r[t]: k = q + t, rows r0 .. r0 + 15 */
            float *p0 = dst + r0 / K_F_MR * kc * K_F_MR, *p1 = p0 + kc * K_F_MR;
            for (int64_t t = 0; t < left; t++) {
                _mm256_storeu_si256((__m256i *)(p0 + (q + t) * K_F_MR), _mm512_castsi512_si256(r[t]));
                if (r0 + 8 < mc)
                    _mm256_storeu_si256((__m256i *)(p1 + (q + t) * K_F_MR), _mm512_extracti64x4_epi64(r[t], 1));
            }
        }
    }
}

/* C tile (mr x nr, at most K_F_MR x K_F_NR) = C0 + the kc products of the
 * panels, k in order; C0's rows at c0, ldc0 apart (ldc0 0: one row, a
 * bias, for every row), or zeros for c0 NULL */
K_F32_TARGET static void micro_f32(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                                   const float *c0, int64_t ldc0, int64_t mr, int64_t nr, const char *pf, int64_t pfn)
{
    __mmask16 m0, m1;
    __m512 acc[K_F_MR][2];
    tile_begin(acc, K_F_MR, c0, ldc0, mr, nr, &m0, &m1);
    for (int64_t p = 0; p < kc; p++) {
        if (p * 64 < pfn)
            _mm_prefetch(pf + p * 64, _MM_HINT_T1);
        __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 8
        for (int i = 0; i < K_F_MR; i++) {
            __m512 x = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
        ap += K_F_MR;
        bp += K_F_NR;
    }
    tile_end(acc, K_F_MR, c, ldc, mr, m0, m1);
}

/* 16 floats of a packed operand to dst, around the caches (nt: dst 64-byte aligned) or not */
K_F32_TARGET static inline void put16(float *dst, __m512 v, int nt)
{
    if (nt)
        _mm512_stream_ps(dst, v);
    else
        _mm512_storeu_ps(dst, v);
}

K_F32_TARGET static void pack_b_f32(float *dst, const float *b, int64_t ls, int64_t ks, int64_t n, int64_t k)
{
    int64_t np = (n + K_F_NR - 1) / K_F_NR;
    int nt = ((uintptr_t)dst & 63) == 0 && np * K_F_NR * k >= K_PACK_STREAM;
    for (int64_t k0 = 0; k0 < k; k0 += K_F_KC) {
        int64_t kc = k - k0 < K_F_KC ? k - k0 : K_F_KC;
        for (int64_t jp = 0; jp < np; jp++) {
            float *d = dst + k0 * np * K_F_NR + jp * kc * K_F_NR;
            int64_t j0 = jp * K_F_NR;
            if (ks == 1) { /* lanes are rows, k contiguous: transposed 16 x 16 */
                for (int64_t h = 0; h < K_F_NR; h += 16)
                    for (int64_t q = 0; q < kc; q += 16) {
                        int64_t left = kc - q < 16 ? kc - q : 16;
                        __mmask16 mk = (__mmask16)((1u << left) - 1);
                        __m512i r[16];
                        for (int64_t l = 0; l < 16; l++)
                            r[l] = j0 + h + l < n ? _mm512_castps_si512(
                                                        _mm512_maskz_loadu_ps(mk, b + (j0 + h + l) * ls + k0 + q))
                                                  : _mm512_setzero_si512();
                        transpose16(r);
                        for (int64_t t = 0; t < left; t++)
                            put16(d + (q + t) * K_F_NR + h, _mm512_castsi512_ps(r[t]), nt);
                    }
            } else if (ls == 1) { /* lanes contiguous at each k: copied */
                int64_t live = n - j0 < K_F_NR ? n - j0 : K_F_NR;
                __mmask16 m0 = live >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << live) - 1);
                __mmask16 m1 = live >= 32 ? (__mmask16)0xffff : live > 16 ? (__mmask16)((1u << (live - 16)) - 1) : 0;
                for (int64_t p = 0; p < kc; p++) {
                    const float *x = b + (k0 + p) * ks + j0;
                    put16(d + p * K_F_NR, _mm512_maskz_loadu_ps(m0, x), nt);
                    put16(d + p * K_F_NR + 16, _mm512_maskz_loadu_ps(m1, x + 16), nt);
                }
            } else {
                for (int64_t p = 0; p < kc; p++)
                    for (int64_t l = 0; l < K_F_NR; l++)
                        d[p * K_F_NR + l] = j0 + l < n ? b[(j0 + l) * ls + (k0 + p) * ks] : 0.0f;
            }
        }
    }
    if (nt)
        _mm_sfence(); /* the streamed stores seen before the products read them */
}

K_F32_TARGET static void gemm_f32_packed(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                                         const float *bpack, const float *bias, int beta, float *c, int64_t ldc)
{
    _Alignas(64) float apack[K_F_KC * K_F_MC];
    int64_t np = (n + K_F_NR - 1) / K_F_NR;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            if (bias)
                memcpy(c + i * ldc, bias, (size_t)n * sizeof(float));
            else if (!beta)
                memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t k0 = 0; k0 < k; k0 += K_F_KC) {
        int64_t kc = k - k0 < K_F_KC ? k - k0 : K_F_KC;
        for (int64_t ic = 0; ic < m; ic += K_F_MC) {
            int64_t mc = m - ic < K_F_MC ? m - ic : K_F_MC;
            pack_a(apack, a + ic * lda, lda, mc, k0, kc);
            int64_t tiles = (mc + K_F_MR - 1) / K_F_MR;
            for (int64_t jp = 0; jp < np; jp++) {
                const float *bp = bpack + k0 * np * K_F_NR + jp * kc * K_F_NR;
                /* the next panel of this block of k into L2, a share per tile (a line per
                 * value of k), so that the first tile to read it does not wait on memory */
                const char *next = (const char *)(bp + kc * K_F_NR);
                int64_t bytes = jp + 1 < np ? kc * K_F_NR * 4 : 0, share = (bytes / tiles + 63) & ~(int64_t)63;
                for (int64_t ir = 0; ir < mc; ir += K_F_MR) {
                    float *ct = c + (ic + ir) * ldc + jp * K_F_NR;
                    /* the first block of k starts from the bias (read in place: no
                     * copy of it per row), C or zero; the others from C */
                    const float *c0 = k0 > 0 || (!bias && beta) ? ct : bias ? bias + jp * K_F_NR : NULL;
                    micro_f32(kc, apack + ir * kc, bp, ct, ldc, c0, c0 == ct ? ldc : 0, mc - ir, n - jp * K_F_NR,
                              next + ir / K_F_MR * share, share);
                }
            }
        }
    }
}

/* ---- the weight gradient: C (M, N) += A^T . B over K rows ------------------
 * A (K, M) and B (K, N) row-major (a linear's output gradient and input),
 * C (M, N) row-major. Every element is C plus the sum of its K products
 * taken from 0 in row order, one fused multiply-add each. B is packed once
 * per call in panels of 32 columns, [N/32][K][32] (a panel's rows
 * contiguous, not 4 KiB apart as in B itself), and A eight columns at a
 * time, [K][8] on the stack (K at most 512); a tile of 8 x 32 elements of
 * C then sums in 16 registers and C is read and written once, row by row. */
#define K_WG_NR 32
#define K_WG_MR 8
#define K_WG_MAXK 512

/* The lanes of panel jp's two halves that lie inside N columns */
static inline void wgrad_masks(int64_t n, int64_t jp, __mmask16 *m0, __mmask16 *m1)
{
    int64_t left = n - jp * K_WG_NR;
    *m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
    *m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
}

K_F32_TARGET static void wgrad_f32(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c,
                                   float *scratch)
{
    int64_t np = (n + K_WG_NR - 1) / K_WG_NR;
    float *bp = scratch, ap[K_WG_MAXK * K_WG_MR]; /* 16 KiB */
    assert(k <= K_WG_MAXK);
    for (int64_t jp = 0; jp < np; jp++) {
        __mmask16 m0, m1;
        wgrad_masks(n, jp, &m0, &m1);
        const float *src = b + jp * K_WG_NR;
        float *dst = bp + jp * k * K_WG_NR;
        for (int64_t r = 0; r < k; r++) {
            _mm512_storeu_ps(dst + r * K_WG_NR, _mm512_maskz_loadu_ps(m0, src + r * n));
            _mm512_storeu_ps(dst + r * K_WG_NR + 16, _mm512_maskz_loadu_ps(m1, src + r * n + 16));
        }
    }
    for (int64_t i0 = 0; i0 < m; i0 += K_WG_MR) {
        int64_t rows = m - i0 < K_WG_MR ? m - i0 : K_WG_MR;
        for (int64_t r = 0; r < k; r++)
            for (int64_t t = 0; t < K_WG_MR; t++)
                ap[r * K_WG_MR + t] = t < rows ? a[r * m + i0 + t] : 0.0f;
        for (int64_t jp = 0; jp < np; jp++) {
            __mmask16 m0, m1;
            wgrad_masks(n, jp, &m0, &m1);
#define WG_ZERO(t) __m512 p##t = _mm512_setzero_ps(), q##t = _mm512_setzero_ps();
            WG_ZERO(0) WG_ZERO(1) WG_ZERO(2) WG_ZERO(3) WG_ZERO(4) WG_ZERO(5) WG_ZERO(6) WG_ZERO(7)
            /* the next tile's rows of C on their way to L2 while this one sums */
            int64_t ni = jp + 1 < np ? i0 : i0 + K_WG_MR, nj = jp + 1 < np ? jp + 1 : 0;
            for (int64_t t = 0; t < K_WG_MR && ni + t < m; t++) {
                _mm_prefetch((const char *)(c + (ni + t) * n + nj * K_WG_NR), _MM_HINT_T1);
                _mm_prefetch((const char *)(c + (ni + t) * n + nj * K_WG_NR + 16), _MM_HINT_T1);
            }
            const float *br = bp + jp * k * K_WG_NR, *ar = ap;
            for (int64_t r = 0; r < k; r++, br += K_WG_NR, ar += K_WG_MR) {
                __m512 b0 = _mm512_loadu_ps(br), b1 = _mm512_loadu_ps(br + 16);
#define WG_FMA(t)                                                                                                     \
    {                                                                                                                 \
        __m512 x = _mm512_set1_ps(ar[t]);                                                                             \
        p##t = _mm512_fmadd_ps(x, b0, p##t);                                                                          \
        q##t = _mm512_fmadd_ps(x, b1, q##t);                                                                          \
    }
                WG_FMA(0) WG_FMA(1) WG_FMA(2) WG_FMA(3) WG_FMA(4) WG_FMA(5) WG_FMA(6) WG_FMA(7)
            }
#define WG_STORE(t)                                                                                                   \
    if (t < rows) {                                                                                                   \
        float *cr = c + (i0 + t) * n + jp * K_WG_NR;                                                                  \
        _mm512_mask_storeu_ps(cr, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), p##t));                            \
        _mm512_mask_storeu_ps(cr + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), q##t));                  \
    }
            WG_STORE(0) WG_STORE(1) WG_STORE(2) WG_STORE(3) WG_STORE(4) WG_STORE(5) WG_STORE(6) WG_STORE(7)
#undef WG_ZERO
#undef WG_FMA
#undef WG_STORE
        }
    }
}
#endif

int k_packed_supported(void)
{
#if K_HAVE_BF16_GEMM
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

void k_pack_b(float *dst, const float *b, int64_t ls, int64_t ks, int64_t n, int64_t k)
{
#if K_HAVE_BF16_GEMM
    pack_b_f32(dst, b, ls, ks, n, k);
#else
    (void)dst, (void)b, (void)ls, (void)ks, (void)n, (void)k;
    assert(!"a packed operand on a CPU without AVX-512 (callers ask k_packed_supported)");
#endif
}

void k_gemm_packed(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *bpack,
                   const float *bias, int beta, float *c, int64_t ldc)
{
#if K_HAVE_BF16_GEMM
    gemm_f32_packed(m, n, k, a, lda, bpack, bias, beta, c, ldc);
#else
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)bpack, (void)bias, (void)beta, (void)c, (void)ldc;
    assert(!"a packed operand on a CPU without AVX-512 (callers ask k_packed_supported)");
#endif
}

void k_gemm_wgrad(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c, float *scratch)
{
#if K_HAVE_BF16_GEMM
    wgrad_f32(m, n, k, a, b, c, scratch);
#else
    (void)m, (void)n, (void)k, (void)a, (void)b, (void)c, (void)scratch;
    assert(!"the weight-gradient kernel on a CPU without AVX-512 (callers ask k_packed_supported)");
#endif
}

int k_gemm_short_swaps(void)
{
    const char *core = openblas_get_corename();
    return core && (strcmp(core, "SkylakeX") == 0 || strcmp(core, "Cooperlake") == 0 ||
                    strcmp(core, "SapphireRapids") == 0);
}

int k_wgrad_supported(int64_t in_f)
{
    if (!k_packed_supported())
        return 0;
    if (!k_gemm_short_swaps())
        return 1;
#if K_HAVE_BF16_GEMM
    return in_f >= 1024 && __builtin_cpu_is("amdfam19h"); /* Zen 4: AVX-512 with family 19h */
#else
    return 0;
#endif
}

void k_gemm(KPrec prec, int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
            int64_t ldb, int beta, float *c, int64_t ldc)
{
    if (prec == K_BF16) {
#if K_HAVE_BF16_GEMM
        KView va = {a, ta ? 1 : lda, ta ? lda : 1}; /* lanes: rows of op(A) */
        KView vb = {b, tb ? ldb : 1, tb ? 1 : ldb}; /* lanes: columns of op(B) */
        gemm_bf16(m, n, k, &va, &vb, beta, c, ldc);
        return;
#else
        assert(!"bf16 GEMM on a CPU without AVX512-BF16 (the runtime refuses it at start)");
#endif
    }
    assert(m >= 0 && n >= 0 && k >= 0 && m <= 0x7fffffff && n <= 0x7fffffff && k <= 0x7fffffff &&
           lda <= 0x7fffffff && ldb <= 0x7fffffff && ldc <= 0x7fffffff && "dimensions fit a BLAS int");
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
                1.0f, a, (int)lda, b, (int)ldb, beta ? 1.0f : 0.0f, c, (int)ldc);
}

void k_bf16_round_values(float *x, int64_t n)
{
#if K_HAVE_BF16_GEMM
    if (k_bf16_supported()) {
        round_values(x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)k_bf16_round(x[i]) << 16;
        memcpy(x + i, &u, sizeof u);
    }
}
