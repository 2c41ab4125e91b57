/* mk_rng.c - see mk_rng.h. Build with -ffp-contract=off (the Makefile does) so the
 * polynomial helpers round the same way on every compiler and CPU. */
#include "mk_rng.h"
#include "mk_hash.h"

#include <math.h>

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

void mk_rng_blocks(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out)
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
