/* qvec.h - portable SIMD for the quantizer fast paths: GCC/Clang vector extensions of 8
 * f32 / i32 lanes, unaligned loads and stores through memcpy, branch-free helpers, and
 * MK_QKERNEL, which builds a kernel twice on x86-64 with GCC (baseline SSE2, where each
 * 8-lane operation becomes two, and AVX2) and picks one when the program starts (ifunc).
 * Only +, -, *, / and comparisons, which IEEE 754 rounds the same way in every lane, in
 * every instruction set and in scalar code (no FMA: AVX2 alone does not enable it, and we
 * build with -ffp-contract=off), so a fast path gives the same bytes on every machine as
 * the scalar reference it is tested against.
 * Internal to quant/; must not be included from elsewhere.
 */
#ifndef MK_QVEC_H
#define MK_QVEC_H

#include "qerr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* 32-byte vectors in a build without AVX are passed differently from AVX builds; these
 * helpers are always inlined and never cross a call, so the Makefile's -Wno-psabi only
 * silences a note that does not apply. */

/* GCC only: clang 14 emits the ifunc of a target_clones function only in a translation
 * unit that calls it, so with clang the kernels are built for the baseline alone. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
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

/* The helpers are macros (GNU statement expressions): clang refuses to pass a 32-byte
 * vector by value to or from a function in code built without AVX, even an inline one. */
#define mk_vf_load(p)                                                                    \
    ({                                                                                   \
        mk_vf mk_ld_;                                                                    \
        memcpy(&mk_ld_, (p), sizeof mk_ld_);                                             \
        mk_ld_;                                                                          \
    })
#define mk_vf_store(p, v)                                                                \
    do {                                                                                 \
        mk_vf mk_st_ = (v);                                                              \
        memcpy((p), &mk_st_, sizeof mk_st_);                                             \
    } while (0)
#define mk_vf_set1(x)                                                                    \
    ({                                                                                   \
        float mk_s1_ = (x);                                                              \
        (mk_vf){mk_s1_, mk_s1_, mk_s1_, mk_s1_, mk_s1_, mk_s1_, mk_s1_, mk_s1_};          \
    })
#define mk_vi_set1(x)                                                                    \
    ({                                                                                   \
        int32_t mk_i1_ = (x);                                                            \
        (mk_vi){mk_i1_, mk_i1_, mk_i1_, mk_i1_, mk_i1_, mk_i1_, mk_i1_, mk_i1_};          \
    })
/* 8 bf16 values (their bit patterns) at p as f32: each is the top half of its f32. */
#define mk_vf_load_bf16(p)                                                               \
    ({                                                                                   \
        typedef uint16_t mk_vh8_ __attribute__((vector_size(16)));                       \
        mk_vh8_ mk_lh_;                                                                  \
        memcpy(&mk_lh_, (p), sizeof mk_lh_);                                             \
        (mk_vf)(__builtin_convertvector(mk_lh_, mk_vu) << 16);                           \
    })
/* Element i of x, f32 values or (xb) bf16 bit patterns, as a vector of 8 from i or one. */
#define mk_vf_loadx(x, i, xb) ((xb) ? mk_vf_load_bf16((const uint16_t *)(x) + (i)) : mk_vf_load((const float *)(x) + (i)))
static inline float mk_loadx1(const void *x, size_t i, bool xb)
{
    if (!xb) return ((const float *)x)[i];
    uint16_t h;
    memcpy(&h, (const uint16_t *)x + i, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* Lane-wise select: m is all-ones or all-zeros per lane (a comparison). */
#define mk_vf_sel(m, a, b) ((mk_vf)(((mk_vi)(m) & (mk_vi)(a)) | (~(mk_vi)(m) & (mk_vi)(b))))
#define mk_vf_abs(a) ((mk_vf)((mk_vi)(a) & 0x7fffffff))
#define mk_vf_max(a, b)                                                                  \
    ({                                                                                   \
        mk_vf mk_mxa_ = (a), mk_mxb_ = (b);                                              \
        mk_vf_sel(mk_mxa_ > mk_mxb_, mk_mxa_, mk_mxb_);                                  \
    })
#define mk_vf_min(a, b)                                                                  \
    ({                                                                                   \
        mk_vf mk_mna_ = (a), mk_mnb_ = (b);                                              \
        mk_vf_sel(mk_mna_ < mk_mnb_, mk_mna_, mk_mnb_);                                  \
    })
#define mk_vf_hmax(a)                                                                    \
    ({                                                                                   \
        mk_vf mk_hx_ = (a);                                                              \
        float mk_hm_ = mk_hx_[0];                                                        \
        for (int mk_hi_ = 1; mk_hi_ < MK_VL; mk_hi_++) mk_hm_ = mk_hx_[mk_hi_] > mk_hm_ ? mk_hx_[mk_hi_] : mk_hm_; \
        mk_hm_;                                                                          \
    })
#define mk_vf_hmin(a)                                                                    \
    ({                                                                                   \
        mk_vf mk_nx_ = (a);                                                              \
        float mk_nm_ = mk_nx_[0];                                                        \
        for (int mk_ni_ = 1; mk_ni_ < MK_VL; mk_ni_++) mk_nm_ = mk_nx_[mk_ni_] < mk_nm_ ? mk_nx_[mk_ni_] : mk_nm_; \
        mk_nm_;                                                                          \
    })
/* The low byte of each lane (two's complement for negative ints) to 8 bytes at dst. */
#define mk_vu_store_u8(dst, c)                                                           \
    do {                                                                                 \
        typedef uint8_t mk_vb32_ __attribute__((vector_size(32)));                       \
        mk_vb32_ mk_sb_ = (mk_vb32_)(c);                                                 \
        mk_vu8x8 mk_so_ = __builtin_shufflevector(mk_sb_, mk_sb_, 0, 4, 8, 12, 16, 20, 24, 28); \
        memcpy((dst), &mk_so_, 8);                                                       \
    } while (0)
/* Round to the nearest integer, ties to even, for |x| < 2^22: adding and removing
 * 1.5 * 2^23 leaves an integer-valued f32 (the FPU's round-to-nearest-even). The compiler
 * may not reassociate it: we never build with -ffast-math. */
#define MK_RINT_MAGIC 12582912.0f
#define mk_vf_rint_small(x) (((x) + mk_vf_set1(MK_RINT_MAGIC)) - mk_vf_set1(MK_RINT_MAGIC))
static inline float mk_rint_small(float x) { return (x + MK_RINT_MAGIC) - MK_RINT_MAGIC; }
/* f32 -> nearest bf16 value (ties to even), as f32; finite input. */
#define mk_vf_round_bf16(x)                                                              \
    ({                                                                                   \
        mk_vu mk_bu_ = (mk_vu)(x);                                                       \
        (mk_vf)((mk_bu_ + 0x7fffu + ((mk_bu_ >> 16) & 1u)) & 0xffff0000u);                \
    })
/* f32 -> nearest f16 value (ties to even), as f32, for finite |x| < 65520, without
 * branches: the normal f16 range by rounding the mantissa on the bits, the subnormal range
 * (|x| < 2^-14) by adding and removing 0.5, whose f32 ulp is the f16 subnormal step 2^-24. */
#define mk_vf_round_f16(x)                                                               \
    ({                                                                                   \
        const mk_vu mk_hu_ = (mk_vu)(x), mk_ha_ = mk_hu_ & 0x7fffffffu;                   \
        mk_vu mk_hn_ = (mk_ha_ + 0xfffu + ((mk_ha_ >> 13) & 1u)) & ~0x1fffu;              \
        mk_vu mk_hs_ = (mk_vu)(((mk_vf)mk_ha_ + mk_vf_set1(0.5f)) - mk_vf_set1(0.5f));    \
        mk_vu mk_hb_ = (mk_vu)((mk_vi)mk_ha_ < 0x38800000);                              \
        (mk_vf)((mk_hb_ & mk_hs_) | (~mk_hb_ & mk_hn_) | (mk_hu_ & 0x80000000u));         \
    })
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
#define mk_qacc_add(acc, x, xh)                                                          \
    do {                                                                                 \
        mk_vf mk_qx_ = (x), mk_qd_ = mk_qx_ - (xh);                                      \
        (acc)->x2 += mk_qx_ * mk_qx_;                                                    \
        (acc)->e2 += mk_qd_ * mk_qd_;                                                    \
        (acc)->m = mk_vf_max((acc)->m, mk_vf_abs(mk_qd_));                               \
    } while (0)
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
