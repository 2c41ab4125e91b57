/* qvec.h - portable SIMD for the quantizer fast paths: GCC/Clang vector extensions of 8
 * f32 / i32 lanes, unaligned loads and stores through memcpy, branch-free helpers, and
 * MK_QKERNEL, which builds a kernel twice on x86-64 (baseline SSE2, where each 8-lane
 * operation becomes two, and AVX2) and picks one when the program starts (ifunc).
 * Only +, -, *, / and comparisons, which IEEE 754 rounds the same way in every lane, in
 * every instruction set and in scalar code (no FMA: AVX2 alone does not enable it, and we
 * build with -ffp-contract=off), so a fast path gives the same bytes on every machine as
 * the scalar reference it is tested against.
 * Internal to quant/; must not be included from elsewhere.
 */
#ifndef MK_QVEC_H
#define MK_QVEC_H

#include "qerr.h"

#include <stdint.h>
#include <string.h>

/* 32-byte vectors in a build without AVX are passed differently from AVX builds; these
 * helpers are always inlined and never cross a call, so the Makefile's -Wno-psabi only
 * silences a note that does not apply. */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MK_NO_CLONES)
#define MK_QKERNEL __attribute__((target_clones("avx2", "default")))
#else
#define MK_QKERNEL
#endif
#define MK_VINLINE static inline __attribute__((always_inline))

#define MK_VL 8
typedef float mk_vf __attribute__((vector_size(32)));
typedef int32_t mk_vi __attribute__((vector_size(32)));
typedef uint32_t mk_vu __attribute__((vector_size(32)));
typedef uint64_t mk_vu64 __attribute__((vector_size(32)));
typedef int32_t mk_vi4 __attribute__((vector_size(16)));
typedef uint8_t mk_vu8x4 __attribute__((vector_size(4)));
typedef uint8_t mk_vu8x8 __attribute__((vector_size(8)));
typedef uint16_t mk_vu16 __attribute__((vector_size(32)));

MK_VINLINE mk_vf mk_vf_load(const float *p)
{
    mk_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
MK_VINLINE void mk_vf_store(float *p, mk_vf v) { memcpy(p, &v, sizeof v); }
/* The low byte of each lane (two's complement for negative ints) to 8 bytes at dst. */
MK_VINLINE void mk_vu_store_u8(uint8_t *dst, mk_vu c)
{
    typedef uint8_t vb32 __attribute__((vector_size(32)));
    vb32 b = (vb32)c;
    mk_vu8x8 o = __builtin_shufflevector(b, b, 0, 4, 8, 12, 16, 20, 24, 28);
    memcpy(dst, &o, 8);
}
MK_VINLINE mk_vf mk_vf_set1(float x) { return (mk_vf){x, x, x, x, x, x, x, x}; }
MK_VINLINE mk_vi mk_vi_set1(int32_t x) { return (mk_vi){x, x, x, x, x, x, x, x}; }
/* Lane-wise select: m is all-ones or all-zeros per lane. */
MK_VINLINE mk_vf mk_vf_sel(mk_vi m, mk_vf a, mk_vf b) { return (mk_vf)((m & (mk_vi)a) | (~m & (mk_vi)b)); }
MK_VINLINE mk_vf mk_vf_abs(mk_vf a) { return (mk_vf)((mk_vi)a & mk_vi_set1(0x7fffffff)); }
MK_VINLINE mk_vf mk_vf_max(mk_vf a, mk_vf b) { return mk_vf_sel(a > b, a, b); }
MK_VINLINE mk_vf mk_vf_min(mk_vf a, mk_vf b) { return mk_vf_sel(a < b, a, b); }
MK_VINLINE float mk_vf_hmax(mk_vf a)
{
    float m = a[0];
    for (int i = 1; i < MK_VL; i++) m = a[i] > m ? a[i] : m;
    return m;
}
MK_VINLINE float mk_vf_hmin(mk_vf a)
{
    float m = a[0];
    for (int i = 1; i < MK_VL; i++) m = a[i] < m ? a[i] : m;
    return m;
}
/* Round to the nearest integer, ties to even, for |x| < 2^22: adding and removing
 * 1.5 * 2^23 leaves an integer-valued f32 (the FPU's round-to-nearest-even). The compiler
 * may not reassociate it: we never build with -ffast-math. */
#define MK_RINT_MAGIC 12582912.0f
MK_VINLINE mk_vf mk_vf_rint_small(mk_vf x)
{
    mk_vf m = mk_vf_set1(MK_RINT_MAGIC);
    return (x + m) - m;
}
static inline float mk_rint_small(float x) { return (x + MK_RINT_MAGIC) - MK_RINT_MAGIC; }
/* f32 -> nearest bf16 value (ties to even), as f32; finite input. */
MK_VINLINE mk_vf mk_vf_round_bf16(mk_vf x)
{
    mk_vu u = (mk_vu)x;
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return (mk_vf)u;
}
/* f32 -> nearest f16 value (ties to even), as f32, for finite |x| < 65520, without
 * branches: the normal f16 range by rounding the mantissa on the bits, the subnormal range
 * (|x| < 2^-14) by adding and removing 0.5, whose f32 ulp is the f16 subnormal step 2^-24. */
MK_VINLINE mk_vf mk_vf_round_f16(mk_vf x)
{
    const mk_vu u = (mk_vu)x, a = u & 0x7fffffffu, sign = u & 0x80000000u;
    mk_vu nrm = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu;
    mk_vf half = mk_vf_set1(0.5f);
    mk_vu sub = (mk_vu)(((mk_vf)a + half) - half);
    mk_vu is_sub = (mk_vu)((mk_vi)a < mk_vi_set1(0x38800000));
    return (mk_vf)((is_sub & sub) | (~is_sub & nrm) | sign);
}
static inline float mk_round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* ---- error accumulation (see qerr.h): 8 lanes in f32, flushed to double ------------- */
typedef struct mk_qacc {
    mk_vf x2, e2, m;
} mk_qacc;

MK_VINLINE void mk_qacc_init(mk_qacc *a) { a->x2 = a->e2 = a->m = mk_vf_set1(0.0f); }
MK_VINLINE void mk_qacc_add(mk_qacc *a, mk_vf x, mk_vf xh)
{
    mk_vf d = x - xh;
    a->x2 += x * x;
    a->e2 += d * d;
    a->m = mk_vf_max(a->m, mk_vf_abs(d));
}
/* One value into lane 0 (tails). */
MK_VINLINE void mk_qacc_add1(mk_qacc *a, float x, float xh)
{
    float d = x - xh;
    a->x2[0] += x * x;
    a->e2[0] += d * d;
    float ad = d < 0 ? -d : d;
    if (ad > a->m[0]) a->m[0] = ad;
}
MK_VINLINE void mk_qacc_flush(mk_qacc *a, mk_qerr *e)
{
    mk_vf x = a->x2, s = a->e2;
    e->sx2 += (double)(((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7])));
    e->se2 += (double)(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
    float m = mk_vf_hmax(a->m);
    if (m > e->maxe) e->maxe = m;
    mk_qacc_init(a);
}

#endif
