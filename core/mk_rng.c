/* mk_rng.c - see mk_rng.h. Build with -ffp-contract=off (the Makefile does) so the
 * polynomial helpers round the same way on every compiler and CPU. */
#include "mk_rng.h"
#include "mk_hash.h"

#include <math.h>
#include <stdbool.h>

/* Philox4x32 constants from Random123 (Salmon et al. 2011). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

mk_rng mk_rng_key(uint64_t seed, const char *name)
{
    uint64_t h = mk_hash64_str(name) ^ (seed * 0x9E3779B97F4A7C15ull);
    /* one more mix so that nearby seeds give unrelated keys */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (mk_rng){(uint32_t)h, (uint32_t)(h >> 32)};
}

void mk_rng_blocks_ref(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out)
{
    const uint32_t c2i = (uint32_t)stream, c3i = (uint32_t)(stream >> 32);
    /* Philox4x32-10: ten rounds per block, one block per iteration (vectorisable) */
#pragma omp simd
    for (size_t b = 0; b < n; b++) {
        uint64_t counter = counter0 + b;
        uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = c2i, c3 = c3i;
        uint32_t k0 = key.k0, k1 = key.k1;
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
            uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
            uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        out[4 * b] = c0;
        out[4 * b + 1] = c1;
        out[4 * b + 2] = c2;
        out[4 * b + 3] = c3;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MK_NO_CLONES)
#include <immintrin.h>

/* The 32x32 -> 64-bit products of 8 lanes by m: the low and the high halves, each as 8
 * lanes. _mm256_mul_epu32 multiplies the even lanes; the odd ones are shifted down first. */
__attribute__((target("avx2"), always_inline)) static inline void mul_hilo(__m256i a, __m256i m, __m256i *lo, __m256i *hi)
{
    __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xaa);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xaa);
}

/* Transpose 4 x 8 lanes (word j of blocks 0..7 in c[j]) into blocks 0..7, four words each. */
__attribute__((target("avx2"), always_inline)) static inline void store_blocks8(const __m256i c[4], uint32_t *out)
{
    __m256i t0 = _mm256_unpacklo_epi32(c[0], c[1]), t1 = _mm256_unpackhi_epi32(c[0], c[1]);
    __m256i t2 = _mm256_unpacklo_epi32(c[2], c[3]), t3 = _mm256_unpackhi_epi32(c[2], c[3]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2); /* blocks 0,4 | 1,5 */
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3); /* blocks 2,6 | 3,7 */
    __m256i *o = (__m256i *)(void *)out;
    _mm256_storeu_si256(o, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
}

/* One Philox round on the four words of eight blocks. */
__attribute__((target("avx2"), always_inline)) static inline void round8(__m256i c[4], __m256i m0, __m256i m1, __m256i k0,
                                                                          __m256i k1)
{
    __m256i lo0, hi0, lo1, hi1;
    mul_hilo(c[0], m0, &lo0, &hi0);
    mul_hilo(c[2], m1, &lo1, &hi1);
    c[0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[1]), k0);
    c[1] = lo1;
    c[2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[3]), k1);
    c[3] = lo0;
}

/* Counters counter0 + b .. counter0 + b + 7 (64-bit, carried) as low and high words. */
__attribute__((target("avx2"), always_inline)) static inline void counters8(uint64_t c, __m256i *lo, __m256i *hi)
{
    uint32_t l[8], h[8];
    for (int i = 0; i < 8; i++, c++) {
        l[i] = (uint32_t)c;
        h[i] = (uint32_t)(c >> 32);
    }
    *lo = _mm256_loadu_si256((const __m256i *)(const void *)l);
    *hi = _mm256_loadu_si256((const __m256i *)(const void *)h);
}

/* Blocks counter0 .. counter0 + 16 * (n / 16) - 1, the same rounds as mk_rng_blocks_ref: one
 * block per 32-bit lane, two independent groups of eight per iteration (a round's multiply
 * waits on the previous round's: two chains keep the multiplier busy), all in registers.
 * Returns the number of blocks done. */
__attribute__((target("avx2"))) static size_t blocks_avx2(mk_rng key, uint64_t stream, uint64_t counter0, size_t n,
                                                          uint32_t *out)
{
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    const __m256i c2i = _mm256_set1_epi32((int)(uint32_t)stream), c3i = _mm256_set1_epi32((int)(uint32_t)(stream >> 32));
    size_t b = 0;
    for (; b + 16 <= n; b += 16) {
        __m256i x[4], y[4];
        counters8(counter0 + b, &x[0], &x[1]);
        counters8(counter0 + b + 8, &y[0], &y[1]);
        x[2] = y[2] = c2i;
        x[3] = y[3] = c3i;
        uint32_t k0 = key.k0, k1 = key.k1;
#pragma GCC unroll 10
        for (int r = 0; r < 10; r++, k0 += PHILOX_W0, k1 += PHILOX_W1) {
            __m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
            round8(x, m0, m1, vk0, vk1);
            round8(y, m0, m1, vk0, vk1);
        }
        store_blocks8(x, out + 4 * b);
        store_blocks8(y, out + 4 * (b + 8));
    }
    return b;
}

static bool have_avx2(void)
{
    static int cached = -1; /* a benign race: every thread computes the same answer */
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2");
    }
    return cached;
}

void mk_rng_blocks(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out)
{
    size_t done = n >= 16 && have_avx2() ? blocks_avx2(key, stream, counter0, n, out) : 0;
    if (done < n) mk_rng_blocks_ref(key, stream, counter0 + done, n - done, out + 4 * done);
}
#else
void mk_rng_blocks(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out)
{
    mk_rng_blocks_ref(key, stream, counter0, n, out);
}
#endif

void mk_rng_block(mk_rng key, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    mk_rng_blocks(key, stream, counter, 1, out);
}

uint32_t mk_rng_u32(mk_rng key, uint64_t stream, uint64_t index)
{
    uint32_t b[4];
    mk_rng_block(key, stream, index >> 2, b);
    return b[index & 3];
}

float mk_rng_uniform(mk_rng key, uint64_t stream, uint64_t index)
{
    return (float)(mk_rng_u32(key, stream, index) >> 8) * 0x1p-24f;
}

/* ---- deterministic transcendental helpers ------------------------------------------- */

double mk_det_log(double x)
{
    int e;
    double m = frexp(x, &e); /* exact: x = m * 2^e, m in [0.5, 1) */
    if (m < 0.70710678118654752) {
        m *= 2.0;
        e -= 1;
    }
    /* ln m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716 */
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double p = 1.0 / 23.0;
    for (int k = 21; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
    return 2.0 * s * p + (double)e * 0.69314718055994530942;
}

void mk_det_sincos(double x, double *s, double *c)
{
    /* reduce to r in [-pi/4, pi/4] and a quadrant q; pi/2 split in two parts */
    const double pio2_hi = 1.5707963267948966, pio2_lo = 6.123233995736766e-17;
    double qd = nearbyint(x / pio2_hi);
    double r = (x - qd * pio2_hi) - qd * pio2_lo;
    long q = (long)qd & 3;
    double r2 = r * r;
    /* Taylor series, enough terms for |r| <= pi/4 to reach double precision */
    double sn = 1.0, cn = 1.0;
    for (int k = 17; k >= 3; k -= 2) sn = 1.0 - sn * r2 / ((double)k * (k - 1));
    sn *= r;
    for (int k = 18; k >= 2; k -= 2) cn = 1.0 - cn * r2 / ((double)k * (k - 1));
    switch (q) {
    case 0: *s = sn; *c = cn; break;
    case 1: *s = cn; *c = -sn; break;
    case 2: *s = -sn; *c = -cn; break;
    default: *s = -cn; *c = sn; break;
    }
}

void mk_det_normal2(double u1, double u2, double *z0, double *z1)
{
    double rad = sqrt(-2.0 * mk_det_log(u1));
    double sn, cs;
    mk_det_sincos(6.283185307179586 * u2 - 3.141592653589793, &sn, &cs);
    /* angle shifted by pi: negate both to keep the textbook form (sign is symmetric) */
    *z0 = -rad * cs;
    *z1 = -rad * sn;
}
