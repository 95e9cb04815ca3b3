/* kernels/cpu/k_random.c: the counter-based random numbers of pipe.
 *
 * Owns Philox4x32-10 (k_philox), dropout masks (k_dropout_mask), parameter
 * initialisation (k_init_uniform, k_init_normal) and k_fill.
 *
 * Every random number is a pure function of (seed, counter): nothing is
 * stateful, so a value does not depend on which rank, stage or schedule asks
 * for it, nor on the order of the asks. The CUDA backend must produce the
 * same numbers; the exact recipes are written next to each function, and
 * every floating-point step below is either exact or a single rounding, so a
 * port that follows them gives the same bits (see k_init_normal for the one
 * place where libm enters).
 *
 * Shared recipe, used by all three generators:
 *   key      = { seed & 0xffffffff, seed >> 32 }
 *   counter  = { e / 4, A, B, C }  (the words A, B, C depend on the use;
 *              each counter word is the low 32 bits of its value)
 *   element e uses word e % 4 of k_philox(counter, key)
 *   uniform  u = (word >> 8) * 2^-24, in [0, 1) on a 2^-24 grid (exact)
 */
#include "k_cpu.h"

#include <math.h>
#include <stddef.h>

/* ---- Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC 2011; Random123) ------ */

#define K_PHILOX_M0 0xD2511F53u
#define K_PHILOX_M1 0xCD9E8D57u
#define K_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define K_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static inline void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void k_philox(uint32_t out[4], const uint32_t c[4], const uint32_t k[2])
{
    uint32_t x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; r++) {
        /* Random123 bumps the key between rounds, not before the first */
        if (r > 0)
            k0 += K_PHILOX_W0, k1 += K_PHILOX_W1;
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo32(K_PHILOX_M0, x0, &hi0, &lo0);
        mulhilo32(K_PHILOX_M1, x2, &hi1, &lo1);
        uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
        x0 = y0, x1 = y1, x2 = y2, x3 = y3;
    }
    out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
}

static inline void seed_key(uint32_t key[2], uint64_t seed)
{
    key[0] = (uint32_t)seed;
    key[1] = (uint32_t)(seed >> 32);
}

/* 24 random bits on [0, 1): exact in float, so every backend agrees */
static inline float uniform01(uint32_t x)
{
    return (float)(x >> 8) * 0x1p-24f;
}

/* ---- dropout masks ------------------------------------------------------- */
/* counter = { e / 4, sample, layer, step } (low 32 bits of each); element e
 * is dropped (0) when uniform01(word e % 4) < p, in float. p = 0 keeps all.
 *
 * transformer_block's three dropout sites (kernels/k_block.h) use the same
 * recipe with the layer word k_block_drop_stream(layer, site) =
 * layer | site << 24, site 1 (attention probabilities), 2 (attn.proj's
 * output) or 3 (mlp.proj's output), and e the element's index in the
 * sample's tensor at that site: (h T + i) T + j for head h, query i, key j
 * of att (H, T, T); i D + c for position i, channel c of a (T, D) output.
 * The front end allows at most 100,000 layers, so a layer index leaves the
 * word's top byte 0 (the kernels assert layer < 2^24): the standalone
 * dropout layer (site 0), the three sites of a block and the sites of other
 * layers differ in the layer word, so they never share a counter, and
 * Philox being a bijection of counters under one key, never a random
 * number. A residual block's sub-layers key their streams with
 * plan_layer_key: index + (1 + place in the block) << 17, at most 8.5M, so
 * still below 2^24 and never a plain layer index. Nor does a block site share one with the init streams below,
 * whose layer word is a plain layer index. (Folding the site into the
 * layer index instead, 4 layer + site, would collide with the plain
 * indices: block 0's site 1 would be the stream of a dropout layer 1.) */
void k_dropout_mask_at(uint8_t *mask, int64_t e0, int64_t n, float p, uint64_t seed, uint64_t step, uint64_t sample,
                       uint32_t layer)
{
    uint32_t key[2], ctr[4], r[4];
    seed_key(key, seed);
    ctr[1] = (uint32_t)sample, ctr[2] = layer, ctr[3] = (uint32_t)step;
    /* one Philox call per group of 4 elements; the first and last groups
     * may be partial (e0 or e0 + n not a multiple of 4) */
    for (int64_t e = e0; e < e0 + n;) {
        ctr[0] = (uint32_t)(e / 4);
        k_philox(r, ctr, key);
        for (int64_t j = e % 4; j < 4 && e < e0 + n; j++, e++)
            mask[e - e0] = uniform01(r[j]) < p ? 0 : 1;
    }
}

void k_dropout_mask(uint8_t *mask, int64_t n, float p, uint64_t seed, uint64_t step, uint64_t sample, uint32_t layer)
{
    k_dropout_mask_at(mask, 0, n, p, seed, step, sample, layer);
}

/* ---- parameter initialisation --------------------------------------------- */

/* FNV-1a, 32 bits, over the name's bytes (without the NUL) */
static uint32_t hash32(const char *s)
{
    uint32_t h = 0x811C9DC5u;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        h ^= *p;
        h *= 0x01000193u;
    }
    return h;
}

#define K_INIT_TAG 0x494E4954u /* "INIT": keeps init streams apart from dropout's */

/* counter = { e / 4, hash32(name), layer, "INIT" }. Element e is
 *     p[e] = ((float)(word >> 8) * 2^-23 - 1) * bound
 * i.e. (2u - 1) * bound in [-bound, bound): the product by 2^-23 and the
 * subtraction are exact (so an FMA contraction changes nothing), the final
 * product by bound is the only rounding. */
void k_init_uniform(float *p, int64_t n, float bound, uint64_t seed, uint32_t layer, const char *name)
{
    uint32_t key[2], ctr[4], r[4];
    seed_key(key, seed);
    ctr[1] = hash32(name), ctr[2] = layer, ctr[3] = K_INIT_TAG;
    for (int64_t e0 = 0; e0 < n; e0 += 4) {
        ctr[0] = (uint32_t)(e0 / 4);
        k_philox(r, ctr, key);
        int64_t m = n - e0 < 4 ? n - e0 : 4;
        for (int64_t j = 0; j < m; j++)
            p[e0 + j] = ((float)(r[j] >> 8) * 0x1p-23f - 1.0f) * bound;
    }
}

/* Same counter as k_init_uniform. The four words of one Philox call make two
 * Box-Muller pairs: (word 0, word 1) gives elements 4i and 4i+1, (word 2,
 * word 3) gives 4i+2 and 4i+3. For a pair (a, b), in double precision:
 *     u1 = ((a >> 8) + 0.5) * 2^-24      in (0, 1): never log(0)
 *     u2 = ((b >> 8) + 0.5) * 2^-24
 *     r  = sqrt(-2 log(u1)),  t = 2 pi u2   (pi = M_PI as a double)
 *     first  element = (float)(r * cos(t))
 *     second element = (float)(r * sin(t))
 * u1, u2 are exact; working in double and rounding once to float makes the
 * result independent of libm's last-bit differences except in the rare case
 * where the double result lies within an ulp of a float rounding boundary. */
void k_init_normal(float *p, int64_t n, uint64_t seed, uint32_t layer, const char *name)
{
    k_init_normal_std(p, n, 1.0, seed, layer, name);
}

/* N(0, std^2): the same draws, each (float)(std * r * cos(t)) (or sin),
 * still one rounding to float; std = 1 gives k_init_normal's bits. */
void k_init_normal_std(float *p, int64_t n, double std, uint64_t seed, uint32_t layer, const char *name)
{
    const double two_pi = 2.0 * 3.14159265358979323846;
    uint32_t key[2], ctr[4], r[4];
    seed_key(key, seed);
    ctr[1] = hash32(name), ctr[2] = layer, ctr[3] = K_INIT_TAG;
    for (int64_t e0 = 0; e0 < n; e0 += 4) {
        ctr[0] = (uint32_t)(e0 / 4);
        k_philox(r, ctr, key);
        float z[4];
        for (int j = 0; j < 4; j += 2) {
            double u1 = ((double)(r[j] >> 8) + 0.5) * 0x1p-24;
            double u2 = ((double)(r[j + 1] >> 8) + 0.5) * 0x1p-24;
            double rad = sqrt(-2.0 * log(u1)), t = two_pi * u2;
            z[j] = (float)(std * rad * cos(t));
            z[j + 1] = (float)(std * rad * sin(t));
        }
        int64_t m = n - e0 < 4 ? n - e0 : 4;
        for (int64_t j = 0; j < m; j++)
            p[e0 + j] = z[j];
    }
}

void k_fill(float *p, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
}
