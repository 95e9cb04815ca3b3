/* base/base_crc.c: see base_crc.h.
 *
 * Why: zlib 1.2.13 (Debian 12) computes CRC-32 at about 4 GB/s here; on
 * deep.pipe's 4.5 MiB plan that was 11% of pipec's writing thread, which
 * is the end of the compile's critical path. Folding 64 bytes at a time
 * with carry-less multiplication is several times faster.
 *
 * How: the CRC register of a message is the message's polynomial times
 * x^32 mod P (bit-reflected, P = 0x104C11DB7). A 128-bit lane of message
 * that sits D bits before a later one folds into it: its two 64-bit halves
 * times x^(D+32) mod P and x^(D-32) mod P (reflected, each shifted one bit
 * for the product's 127-bit width), XORed together, are congruent to the
 * lane moved D bits on. Four lanes advance 512 bits a round; at the end
 * they fold into one 128-bit value F whose register is the whole prefix's,
 * and zlib finishes with F's 16 bytes and the tail (crc32 of F from a
 * register of zero, which is what crc32(~0, F) computes).
 * The four constants are facts of the polynomial (the same in every
 * implementation of this fold); the unit test holds the result to zlib's
 * for every length from 0 to 1,100 bytes, odd alignments and continued
 * CRCs. */
#include "base_crc.h"

#include <zlib.h>

static uint32_t zlib_crc(uint32_t crc, const unsigned char *p, size_t n)
{
    uLong c = crc;
    while (n > 0) { /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? 1u << 30 : (uInt)n;
        c = crc32(c, p, k);
        p += k, n -= k;
    }
    return (uint32_t)c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CLMUL __attribute__((target("pclmul,sse4.1")))

/* x * (lo: k's low half, hi: its high half), the two products XORed */
CLMUL static inline __m128i fold(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* n >= 64: the CRC of the first n & ~15 bytes; *done says how many */
CLMUL static uint32_t clmul_crc(uint32_t crc, const unsigned char *p, size_t n, size_t *done)
{
    const __m128i k512 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4); /* x^(512 -+ 32) mod P, for lo, hi */
    const __m128i k128 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0); /* x^(128 -+ 32) mod P */
    __m128i x0 = _mm_loadu_si128((const __m128i *)p), x1 = _mm_loadu_si128((const __m128i *)(p + 16)),
            x2 = _mm_loadu_si128((const __m128i *)(p + 32)), x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)~crc)); /* the register, pre-inverted as zlib's */
    size_t at = 64;
    for (; at + 64 <= n; at += 64) {
        x0 = _mm_xor_si128(fold(x0, k512), _mm_loadu_si128((const __m128i *)(p + at)));
        x1 = _mm_xor_si128(fold(x1, k512), _mm_loadu_si128((const __m128i *)(p + at + 16)));
        x2 = _mm_xor_si128(fold(x2, k512), _mm_loadu_si128((const __m128i *)(p + at + 32)));
        x3 = _mm_xor_si128(fold(x3, k512), _mm_loadu_si128((const __m128i *)(p + at + 48)));
    }
    x0 = _mm_xor_si128(fold(x0, k128), x1);
    x0 = _mm_xor_si128(fold(x0, k128), x2);
    x0 = _mm_xor_si128(fold(x0, k128), x3);
    for (; at + 16 <= n; at += 16)
        x0 = _mm_xor_si128(fold(x0, k128), _mm_loadu_si128((const __m128i *)(p + at)));
    unsigned char f[16];
    _mm_storeu_si128((__m128i *)f, x0);
    *done = at;
    return zlib_crc(0xffffffffu, f, 16);
}

uint32_t base_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (n >= 256 && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
        size_t done;
        crc = clmul_crc(crc, p, n, &done);
        p += done, n -= done;
    }
    return zlib_crc(crc, p, n);
}
#else
uint32_t base_crc32(uint32_t crc, const void *data, size_t n)
{
    return zlib_crc(crc, data, n);
}
#endif
