/* mk_rng.h - counter-based random numbers (Philox4x32-10, Salmon et al., SC'11,
 * "Parallel random numbers: as easy as 1, 2, 3").
 *
 * A value depends only on (key, stream, counter): key from (seed, tensor name), stream
 * picks an independent sequence (e.g. the model index), counter is the element index / 4.
 * So results never depend on thread count or chunking.
 * Also deterministic transcendental helpers built only from +, -, *, / and sqrt (which
 * IEEE 754 rounds exactly), so synthetic weights are bit-identical on every platform.
 */
#ifndef MK_RNG_H
#define MK_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct mk_rng {
    uint32_t k0, k1;
} mk_rng;

/* Key from a seed and a name (the name's XXH3 hash). */
mk_rng mk_rng_key(uint64_t seed, const char *name);
/* Four 32-bit words for block `counter` of `stream`. */
void mk_rng_block(mk_rng key, uint64_t stream, uint64_t counter, uint32_t out[4]);
/* Blocks counter0 .. counter0 + n - 1 of `stream`: out[4 * b + j] = word j of block
 * counter0 + b, the same values as mk_rng_block, computed several blocks at a time. */
void mk_rng_blocks(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out);
/* The same blocks by the portable loop (what mk_rng_blocks uses where the CPU lacks AVX2,
 * and in MK_NO_CLONES builds); tests hold the AVX2 path to it bit for bit. */
void mk_rng_blocks_ref(mk_rng key, uint64_t stream, uint64_t counter0, size_t n, uint32_t *out);
/* Uniform in [0, 1) with 24 random bits, for element `index` of `stream`. */
float mk_rng_uniform(mk_rng key, uint64_t stream, uint64_t index);
/* 32 random bits for element `index` of `stream`. */
uint32_t mk_rng_u32(mk_rng key, uint64_t stream, uint64_t index);

/* ln(x) for x > 0, accurate to ~1 ulp of double, using only exact IEEE operations. */
double mk_det_log(double x);
/* sin and cos of x in [-pi, pi] (range-reduced from any x), same property. */
void mk_det_sincos(double x, double *s, double *c);
/* A standard normal pair from two uniforms in (0, 1] (Box-Muller, deterministic). */
void mk_det_normal2(double u1, double u2, double *z0, double *z1);

#endif
