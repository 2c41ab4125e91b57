/* mx.c - see mx.h */
#include "mx.h"
#include "ct.h"
#include "qvec.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float mk_e2m1_value(uint8_t code) { return (code & 8) ? -e2m1[code & 7] : e2m1[code & 7]; }

/* mk_e2m1_code on 8 lanes of q (clamped to [-6, 6]): the codes (store with mk_vu_store_u8) and
 * their signed values. A comparison is -1 where true, so the sums count downwards. */
#define mx_e2m1_8(q, code, val)                                                                      \
    do {                                                                                             \
        const mk_vf q_ = (q), a_ = mk_vf_abs(q_);                                                    \
        const mk_vi h_ = (a_ > mk_vf_set1(0.25f)) + (a_ >= mk_vf_set1(0.75f)) + (a_ > mk_vf_set1(1.25f)) + \
                         (a_ >= mk_vf_set1(1.75f));                                                  \
        const mk_vi w_ = (a_ > mk_vf_set1(2.5f)) + (a_ >= mk_vf_set1(3.5f)), t_ = (a_ > mk_vf_set1(5.0f)); \
        const mk_vi neg_ = q_ < mk_vf_set1(0.0f);                                                    \
        (code) = (mk_vu)((-(h_ + w_ + t_)) | (neg_ & 8));                                            \
        mk_vf r_ = __builtin_convertvector(-h_, mk_vf) * mk_vf_set1(0.5f) + __builtin_convertvector(-w_ - t_ - t_, mk_vf); \
        (val) = mk_vf_sel(neg_, -r_, r_);                                                            \
    } while (0)

/* torch.finfo(t).tiny and .max */
static float dt_tiny(mk_dtype t) { return t == MK_F16 ? 0x1p-14f : 0x1p-126f; }

/* wdt(v) for positive v, inf where it overflows wdt */
static float dt_round(mk_dtype t, float v) { return t == MK_F16 && v >= 65520.0f ? INFINITY : mk_ct_round(t, v); }

float mk_nvfp4_global_scale(mk_dtype wdt, float absmax)
{
    /* 2688 / tensor is torch's __rtruediv__: the tensor's reciprocal, rounded to wdt, times 2688 */
    float a = absmax < dt_tiny(wdt) ? dt_tiny(wdt) : absmax;
    float g = dt_round(wdt, 2688.0f * dt_round(wdt, 1.0f / a));
    return isfinite(g) ? g : 1.0f;
}

uint8_t mk_nvfp4_group_scale(mk_dtype wdt, float gs, float absmax)
{
    float s = gs * mk_ct_round(wdt, absmax / 6.0f);
    if (s > 448.0f) s = 448.0f;
    uint8_t c = mk_f32_to_e4m3(s);
    return (c & 0x7f) == 0 ? 0x20 /* 0.125 */ : c;
}

MK_QKERNEL
void mk_nvfp4_quantize(const float *x, size_t n, float gs, uint8_t s8, uint8_t *codes, mk_qerr *err)
{
    const float eff = mk_e4m3_to_f32(s8) / gs;
    mk_qacc acc;
    mk_qacc_init(&acc);
    size_t i = 0;
    const mk_vf ve = mk_vf_set1(eff), hi = mk_vf_set1(6.0f), lo = -hi;
    for (; i + 8 <= n; i += 8) {
        mk_vf xv = mk_vf_load(x + i), v;
        mk_vu c;
        mx_e2m1_8(mk_vf_min(mk_vf_max(xv / ve, lo), hi), c, v);
        mk_vu_store_u8(codes + i, c);
        if (err) mk_qacc_add(&acc, xv, mk_vf_round_bf16(v * ve));
    }
    for (; i < n; i++) {
        float q = x[i] / eff;
        q = q > 6.0f ? 6.0f : q < -6.0f ? -6.0f : q;
        codes[i] = mk_e2m1_code(q);
        if (err) mk_qacc_add1(&acc, x[i], mk_round_bf16(mk_e2m1_value(codes[i]) * eff));
    }
    if (err) mk_qacc_flush(&acc, err);
}

/* The reference for a run of groups: each group's absmax, scale and codes, one at a time. */
static void nv_groups_ref(mk_dtype wdt, const float *x, size_t ng, size_t group, float gs, uint8_t *scales, uint8_t *codes, mk_qerr *err)
{
    for (size_t g = 0; g < ng; g++) {
        const float *xg = x + g * group;
        scales[g] = mk_nvfp4_group_scale(wdt, gs, mk_ct_absmax(xg, group));
        mk_nvfp4_quantize(xg, group, gs, scales[g], codes + g * group, err);
    }
}

void mk_nvfp4_dequant(const uint8_t *codes, size_t n, float gs, uint8_t s8, float *out)
{
    const float eff = mk_e4m3_to_f32(s8) / gs;
    for (size_t i = 0; i < n; i++) out[i] = mk_round_bf16(mk_e2m1_value(codes[i]) * eff);
}

/* ---- MX --------------------------------------------------------------------------------- */

uint8_t mk_mx_scale_exp(mk_dtype wdt, unsigned bits, float absmax)
{
    const int off = bits == 8 ? 8 : 2;
    int ex; /* the unbiased exponent of pow2(absmax); INT_MIN for 0, INT_MAX for inf */
    if (wdt == MK_F16) {
        uint32_t h = mk_f32_to_f16(absmax);
        h = ((h + (1u << 8)) & 0xfc00u) >> 10;
        ex = h == 0 ? -1000 : h == 31 ? 1000 : (int)h - 15;
    } else {
        uint32_t u;
        memcpy(&u, &absmax, 4);
        u = ((u + (1u << 21)) & 0x7f800000u) >> 23; /* bf16's bit 5 is f32's bit 21 */
        ex = u == 0 ? -1000 : u == 255 ? 1000 : (int)u - 127;
    }
    int e = 127 + ex - off;
    e = e < 0 ? 0 : e > 255 ? 255 : e;
    /* a scale that is 0 in f16 is replaced by 1, and stored as what it became */
    if (wdt == MK_F16 && mk_ct_round(MK_F16, ldexpf(1.0f, e - 127)) == 0.0f) e = 127;
    return (uint8_t)e;
}

/* 2^(e - 127) in f32, exactly ldexpf(1, e - 127): 2^-127 (e = 0) is the subnormal with
 * mantissa bit 22, 2^128 (e = 255) overflows to inf. Every one is exact in bf16 too. */
static inline float mx_pow2(uint8_t e)
{
    uint32_t u = e == 0 ? 0x00400000u : (uint32_t)e << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* wdt(2^(e - 127)) (never 0: mk_mx_scale_exp stored 127 for what f16 makes 0) */
static float mx_scale(mk_dtype wdt, uint8_t e)
{
    float s = mx_pow2(e);
    if (wdt != MK_F16) return s; /* a power of two, exact in bf16 and f32 */
    return s > 65504.0f ? INFINITY : mk_ct_round(wdt, s);
}

/* wdt(q) for the values the MX division gives (already clamped, so finite and small) */
static inline float mx_round(mk_dtype wdt, float q) { return wdt == MK_BF16 ? mk_round_bf16(q) : wdt == MK_F32 ? q : mk_ct_round(wdt, q); }

/* ---- an AVX2 path for the E2M1 codes of bf16 and f32 weights ----------------------------- */

static _Atomic int mx_cap = 2;

int mk_mx_simd_cap(int level)
{
    return atomic_exchange(&mx_cap, level);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
#define MX_HAVE_AVX2 1
#include <immintrin.h>

#define MX_AVX2 __attribute__((target("avx2")))

static bool mx_avx2(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") != 0;
    }
    return cached && atomic_load(&mx_cap) > 0;
}

/* f32 -> nearest bf16 (ties to even), as f32; finite input: mk_vf_round_bf16. */
static inline MX_AVX2 __attribute__((always_inline)) __m256 mx_rne_bf16(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)));
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
}

/* The error sums of 8 lanes into err, as mk_qacc_flush adds them: each sum in the tree
 * ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)), both sums at once. */
static inline MX_AVX2 __attribute__((always_inline)) void mx_flush(__m256 x2, __m256 e2, __m256 m, mk_qerr *err)
{
    __m256 h = _mm256_hadd_ps(x2, e2); /* x01 x23 e01 e23 | x45 x67 e45 e67 */
    h = _mm256_hadd_ps(h, h);          /* x0123 e0123 . . | x4567 e4567 . . */
    const __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    err->sx2 += (double)_mm_cvtss_f32(t);
    err->se2 += (double)_mm_cvtss_f32(_mm_movehdup_ps(t));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    const float mx = _mm_cvtss_f32(q);
    if (mx > err->maxe) err->maxe = mx;
}

/* mk_e2m1_code of 8 lanes of q (clamped to [-6, 6]): the magnitude's index 0..7, and in neg
 * the lanes with q < 0 (-1). */
static inline MX_AVX2 __attribute__((always_inline)) __m256i mx_e2m1_idx(__m256 q, __m256i *neg)
{
    const __m256 a = _mm256_and_ps(q, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    /* mk_e2m1_code's thresholds; a true comparison is -1, so the sum counts downwards */
    __m256i s = _mm256_add_epi32(_mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(0.25f), _CMP_GT_OQ)),
                                 _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(0.75f), _CMP_GE_OQ)));
    s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(1.25f), _CMP_GT_OQ)),
                                             _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(1.75f), _CMP_GE_OQ))));
    s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(2.5f), _CMP_GT_OQ)),
                                             _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(3.5f), _CMP_GE_OQ))));
    s = _mm256_add_epi32(s, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(5.0f), _CMP_GT_OQ)));
    *neg = _mm256_castps_si256(_mm256_cmp_ps(q, _mm256_setzero_ps(), _CMP_LT_OQ));
    return _mm256_sub_epi32(_mm256_setzero_si256(), s);
}

/* mx_quantize's E2M1 codes and error sums (rb: q rounded to bf16), the same operations on the
 * same lanes in the same order, with two changes that give the same values: x / sc is
 * x * (1 / sc), exact because sc is a power of two in [2^-127, 2^127] (a subnormal 1 / sc is
 * exact too) or inf (1 / sc = 0 gives the signed zero x / inf gives); the decoded magnitude is
 * the table entry of the code's index (a permute) instead of the sum of the comparisons. */
MX_AVX2 static void mx4_avx2(bool rb, const void *x, size_t n, float sc, float dsc, uint8_t *codes, mk_qerr *err, bool xb)
{
    const __m256 inv = _mm256_set1_ps(1.0f / sc), vd = _mm256_set1_ps(dsc), hi = _mm256_set1_ps(6.0f), lo = _mm256_set1_ps(-6.0f);
    const __m256 zero = _mm256_setzero_ps(), tab = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u), eight = _mm256_set1_epi32(8);
    /* byte 0 of each 32-bit lane to the low 4 bytes of its 128-bit half */
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1, -1, -1);
    __m256 x2 = zero, e2 = zero, m = zero;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = xb ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i))), 16))
                             : _mm256_loadu_ps((const float *)x + i);
        __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, inv), lo), hi);
        if (rb) q = mx_rne_bf16(q);
        __m256i neg;
        const __m256i idx = mx_e2m1_idx(q, &neg);
        const __m256i b = _mm256_shuffle_epi8(_mm256_or_si256(idx, _mm256_and_si256(neg, eight)), pick);
        _mm_storel_epi64((__m128i *)(codes + i), _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
        if (!err) continue;
        const __m256 v = _mm256_xor_ps(_mm256_permutevar8x32_ps(tab, idx), _mm256_castsi256_ps(_mm256_and_si256(neg, sign)));
        const __m256 d = _mm256_sub_ps(xv, mx_rne_bf16(_mm256_mul_ps(v, vd)));
        x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv, xv));
        e2 = _mm256_add_ps(e2, _mm256_mul_ps(d, d));
        m = _mm256_max_ps(m, _mm256_and_ps(d, absm));
    }
    if (i == n) { /* no tail: the usual group of 32 */
        if (err) mx_flush(x2, e2, m, err);
        return;
    }
    mk_qacc acc = {(mk_vf)x2, (mk_vf)e2, (mk_vf)m};
    for (; i < n; i++) {
        const float xi = mk_loadx1(x, i, xb);
        float q = xi / sc;
        q = q > 6.0f ? 6.0f : q < -6.0f ? -6.0f : q;
        codes[i] = mk_e2m1_code(rb ? mk_round_bf16(q) : q);
        if (err) mk_qacc_add1(&acc, xi, mk_round_bf16(mk_e2m1_value(codes[i]) * dsc));
    }
    if (err) mk_qacc_flush(&acc, err);
}

/* mxfp8's E4M3 codes of a bf16 weight with error sums decoded in bf16 (the case where
 * mk_ct_fp8_quantize_bf16 sums them itself: e != 255), the same values in the same lanes and
 * order as that kernel, with x / sc as x * (1 / sc) (exact, as above). Normal range: the f32
 * mantissa rounded to 3 bits on the bit pattern, ties to even (a carry moves into the
 * exponent); below 2^-6, adding and removing 2^14 rounds |q| to the subnormal step 2^-9. */
MX_AVX2 static void mx8_avx2(const uint16_t *x, size_t n, float sc, uint8_t *codes, mk_qerr *err)
{
    const __m256 inv = _mm256_set1_ps(1.0f / sc), vs = _mm256_set1_ps(sc), hi = _mm256_set1_ps(448.0f), lo = _mm256_set1_ps(-448.0f);
    const __m256 zero = _mm256_setzero_ps(), magic = _mm256_set1_ps(0x1p14f), sub_scale = _mm256_set1_ps(0x1p9f), min_normal = _mm256_set1_ps(0x1p-6f);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), half = _mm256_set1_epi32((1 << 19) - 1), one = _mm256_set1_epi32(1);
    const __m256i keep = _mm256_set1_epi32(~((1 << 20) - 1)), rebias = _mm256_set1_epi32((127 - 7) << 3), sbit = _mm256_set1_epi32((int)0x80000000u);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1, -1, -1);
    __m256 x2 = zero, e2 = zero, m = zero;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i))), 16));
        /* + 0: the zero point, which makes -0 +0; the clamp as mk_vf_max / mk_vf_min */
        const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(mx_rne_bf16(_mm256_mul_ps(xv, inv)), zero), lo), hi);
        const __m256i u = _mm256_castps_si256(q), a = _mm256_and_si256(u, absm);
        const __m256i an = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(a, half), _mm256_and_si256(_mm256_srli_epi32(a, 20), one)), keep);
        const __m256i cn = _mm256_sub_epi32(_mm256_srli_epi32(an, 20), rebias);
        const __m256 as = _mm256_sub_ps(_mm256_add_ps(_mm256_castsi256_ps(a), magic), magic);
        const __m256i cs = _mm256_cvttps_epi32(_mm256_mul_ps(as, sub_scale));
        const __m256i sub = _mm256_castps_si256(_mm256_cmp_ps(_mm256_castsi256_ps(a), min_normal, _CMP_LT_OQ));
        const __m256i c = _mm256_or_si256(_mm256_blendv_epi8(cn, cs, sub), _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
        const __m256i b = _mm256_shuffle_epi8(c, pick);
        _mm_storel_epi64((__m128i *)(codes + i), _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
        if (!err) continue;
        const __m256 r = _mm256_castsi256_ps(_mm256_or_si256(_mm256_blendv_epi8(an, _mm256_castps_si256(as), sub), _mm256_and_si256(u, sbit)));
        const __m256 d = _mm256_sub_ps(xv, mx_rne_bf16(_mm256_mul_ps(r, vs)));
        x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv, xv));
        e2 = _mm256_add_ps(e2, _mm256_mul_ps(d, d));
        m = _mm256_max_ps(m, _mm256_and_ps(d, _mm256_castsi256_ps(absm)));
    }
    if (i == n) {
        if (err) mx_flush(x2, e2, m, err);
        return;
    }
    mk_qacc acc = {(mk_vf)x2, (mk_vf)e2, (mk_vf)m};
    { /* fewer than 8 left: the reference, as mk_ct_fp8_quantize_bf16 does */
        const mk_ct_fp8 a = {false, MK_BF16};
        float t[8] = {0};
        for (size_t k = i; k < n; k++) t[k - i] = mk_loadx1(x, k, true);
        mk_ct_fp8_quantize_ref(&a, t, n - i, sc, codes + i);
        for (size_t k = i; err && k < n; k++) mk_qacc_add1(&acc, t[k - i], mk_round_bf16(mk_e4m3_to_f32(codes[k]) * sc));
    }
    if (err) mk_qacc_flush(&acc, err);
}

/* mk_f32_to_e4m3(s) for s in [0, 448] (a group scale after its clamp): from 2^-6 up, the f32
 * mantissa rounded to 3 bits on the bit pattern, ties to even (a carry moves into the
 * exponent); below, adding and removing 2^14, whose ulp is E4M3's subnormal step 2^-9, rounds
 * to that step, ties to even (f32 subnormals to 0). */
static inline uint8_t nv_e4m3(float s)
{
    if (s < 0x1p-6f) return (uint8_t)(((s + 0x1p14f) - 0x1p14f) * 0x1p9f);
    uint32_t a;
    memcpy(&a, &s, 4);
    return (uint8_t)(((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - ((127 - 7) << 3));
}

/* mk_nvfp4_group_scale with nv_e4m3; am finite, so s is in [0, 448] after the clamp. */
static inline uint8_t nv_scale(mk_dtype wdt, float gs, float am)
{
    float s = gs * mx_round(wdt, am / 6.0f);
    if (s > 448.0f) s = 448.0f;
    const uint8_t c = nv_e4m3(s);
    return c == 0 ? 0x20 /* 0.125 */ : c;
}

/* Per scale code c (0..126; 0x7f is NaN, above the clamp): eff = e4m3(c) / gs, as
 * mk_nvfp4_quantize divides, and the 8 decoded magnitudes bf16(e2m1[k] * eff). A negative
 * code decodes to minus its magnitude's: bf16 rounding is symmetric in the sign. */
typedef struct nv_tabs {
    float eff[128];
    float dec[128][8];
} nv_tabs;

static void nv_tabs_init(nv_tabs *t, float gs)
{
    for (unsigned c = 0; c < 127; c++) {
        t->eff[c] = mk_e4m3_to_f32((uint8_t)c) / gs;
        for (int k = 0; k < 8; k++) t->dec[c][k] = mk_round_bf16(e2m1[k] * t->eff[c]);
    }
}

/* The scale codes of 8 groups of 16 at x, as nv_scale gives them (wdt bf16 or f32; f16 per
 * lane with nv_scale): the absmax of each group by a max tree over lanes (exact in any
 * order), then the same division, rounding, product, clamp and E4M3 rounding in 8 lanes. */
static inline MX_AVX2 __attribute__((always_inline)) __m256i nv_scales8(const float *x, mk_dtype wdt, float gs)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 16 * j), absm), _mm256_and_ps(_mm256_loadu_ps(x + 16 * j + 8), absm));
    __m256 t[4], u[2];
    for (int j = 0; j < 4; j++) t[j] = _mm256_max_ps(_mm256_unpacklo_ps(a[2 * j], a[2 * j + 1]), _mm256_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    for (int j = 0; j < 2; j++) /* each half: the maxima of its 4 groups' halves */
        u[j] = _mm256_max_ps(_mm256_shuffle_ps(t[2 * j], t[2 * j + 1], 0x44), _mm256_shuffle_ps(t[2 * j], t[2 * j + 1], 0xee));
    const __m256 am = _mm256_max_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
    __m256 r = _mm256_div_ps(am, _mm256_set1_ps(6.0f));
    if (wdt == MK_BF16) {
        r = mx_rne_bf16(r);
    } else if (wdt != MK_F32) {
        float l[8];
        uint8_t c[8];
        _mm256_storeu_ps(l, am);
        for (int j = 0; j < 8; j++) c[j] = nv_scale(wdt, gs, l[j]);
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
    }
    const __m256 s = _mm256_min_ps(_mm256_mul_ps(_mm256_set1_ps(gs), r), _mm256_set1_ps(448.0f));
    const __m256i u32 = _mm256_castps_si256(s);
    const __m256i cn = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u32, _mm256_set1_epi32(0x7ffff)), _mm256_and_si256(_mm256_srli_epi32(u32, 20), _mm256_set1_epi32(1))), 20),
        _mm256_set1_epi32((127 - 7) << 3));
    const __m256 magic = _mm256_set1_ps(0x1p14f);
    const __m256i cs = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_add_ps(s, magic), magic), _mm256_set1_ps(0x1p9f)));
    const __m256i c = _mm256_blendv_epi8(cn, cs, _mm256_castps_si256(_mm256_cmp_ps(s, _mm256_set1_ps(0x1p-6f), _CMP_LT_OQ)));
    return _mm256_or_si256(c, _mm256_and_si256(_mm256_cmpeq_epi32(c, _mm256_setzero_si256()), _mm256_set1_epi32(0x20)));
}

/* The codes (32-bit lanes) of 8 values xv at eff = ve, mk_nvfp4_quantize's vector step: the
 * same division, clamp and thresholds; with want, d = x - bf16(value * eff) from dec. */
static inline MX_AVX2 __attribute__((always_inline)) __m256i nv_codes8(__m256 xv, __m256 ve, __m256 dec, __m256 *d, bool want)
{
    const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(xv, ve), _mm256_set1_ps(-6.0f)), _mm256_set1_ps(6.0f));
    __m256i neg;
    const __m256i idx = mx_e2m1_idx(q, &neg);
    if (want) *d = _mm256_sub_ps(xv, _mm256_xor_ps(_mm256_permutevar8x32_ps(dec, idx), _mm256_castsi256_ps(_mm256_slli_epi32(neg, 31))));
    return _mm256_or_si256(idx, _mm256_and_si256(neg, _mm256_set1_epi32(8)));
}

/* Error sums of the groups: lane j of x2 holds (0 + x_j^2) + x_(j+8)^2 (mk_qacc), e2 the
 * same for the errors; acc {sx2, se2} in double, m the largest |error| per lane. */
typedef struct nv_acc {
    __m128d s;
    __m256 m;
} nv_acc;

/* One group of 16 at x with scale code s8: its codes to out, its error terms into a. */
static inline MX_AVX2 __attribute__((always_inline)) void nv_group(const float *x, unsigned s8, const nv_tabs *t, uint8_t *out, nv_acc *a, bool want)
{
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), ve = _mm256_set1_ps(t->eff[s8]);
    const __m256 dec = want ? _mm256_loadu_ps(t->dec[s8]) : ve;
    __m256 d0 = ve, d1 = ve;
    const __m256i c0 = nv_codes8(x0, ve, dec, &d0, want), c1 = nv_codes8(x1, ve, dec, &d1, want);
    /* 32-bit lanes to bytes: packs interleaves the 128-bit halves, the permute undoes it */
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(c0, c1), 0xd8);
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
    if (!want) return;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 x2 = _mm256_add_ps(_mm256_mul_ps(x0, x0), _mm256_mul_ps(x1, x1));
    const __m256 e2 = _mm256_add_ps(_mm256_mul_ps(d0, d0), _mm256_mul_ps(d1, d1));
    a->m = _mm256_max_ps(a->m, _mm256_max_ps(_mm256_and_ps(d0, absm), _mm256_and_ps(d1, absm)));
    __m256 h = _mm256_hadd_ps(x2, e2); /* mx_flush's tree: ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)) */
    h = _mm256_hadd_ps(h, h);
    a->s = _mm_add_pd(a->s, _mm_cvtps_pd(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))));
}

/* nv_groups_ref for groups of 16, two 8-lane steps each as mk_nvfp4_quantize takes them: the
 * scales of 8 groups at a time, then their codes; each group's error sums added to err in
 * group order; the largest error is the same in any order. */
static inline MX_AVX2 __attribute__((always_inline)) void nv16_run(mk_dtype wdt, const float *x, size_t ng, float gs, uint8_t *scales, uint8_t *codes,
                                                                  mk_qerr *err, const nv_tabs *t, bool want)
{
    nv_acc a = {_mm_set_pd(want ? err->se2 : 0, want ? err->sx2 : 0), _mm256_setzero_ps()};
    size_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        uint32_t s[8];
        const __m256i c = nv_scales8(x + g * 16, wdt, gs);
        _mm256_storeu_si256((__m256i *)s, c);
        const __m256i p = _mm256_packs_epi32(c, c), b = _mm256_packus_epi16(p, p); /* bytes 0..3 of each half */
        _mm_storel_epi64((__m128i *)(scales + g), _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
        for (int j = 0; j < 8; j++) nv_group(x + (g + j) * 16, s[j], t, codes + (g + j) * 16, &a, want);
    }
    for (; g < ng; g++) {
        const float *xg = x + g * 16;
        scales[g] = nv_scale(wdt, gs, mk_ct_absmax(xg, 16));
        nv_group(xg, scales[g], t, codes + g * 16, &a, want);
    }
    if (!want) return;
    err->sx2 = _mm_cvtsd_f64(a.s);
    err->se2 = _mm_cvtsd_f64(_mm_unpackhi_pd(a.s, a.s));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(a.m), _mm256_extractf128_ps(a.m, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    if (_mm_cvtss_f32(q) > err->maxe) err->maxe = _mm_cvtss_f32(q);
}

MX_AVX2 static void nv16_avx2(mk_dtype wdt, const float *x, size_t ng, float gs, uint8_t *scales, uint8_t *codes, mk_qerr *err)
{
    nv_tabs t;
    nv_tabs_init(&t, gs);
    if (err) nv16_run(wdt, x, ng, gs, scales, codes, err, &t, true);
    else nv16_run(wdt, x, ng, gs, scales, codes, err, &t, false);
}

/* ---- nvfp4 with AVX-512: a group of 16 is one 16-lane vector -------------------------------- */
#define MX_AVX512 __attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq")))

static bool mx_avx512(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq");
    }
    return cached && atomic_load(&mx_cap) > 1;
}

/* One group of 16 at x with scale code s8, as nv_group: the same division; the clamped |q|
 * rounded to E2M1 as mk_e2m1_code's thresholds do (ties to the even code), on the bits: from
 * 1 up the f32 mantissa rounded to 1 bit, ties to even (a carry moves into the exponent),
 * giving the index 2 + 2 * exponent + mantissa bit; below 1 the index is 2|q| rounded to
 * the nearest integer, ties to even (0.25 -> 0, 0.75 -> 2). */
static inline MX_AVX512 __attribute__((always_inline)) void nv_group512(const float *x, unsigned s8, const nv_tabs *t, uint8_t *out, __m512 *m, __m128d *acc,
                                                                       bool want)
{
    const __m512 xv = _mm512_loadu_ps(x), q = _mm512_div_ps(xv, _mm512_set1_ps(t->eff[s8]));
    const __m512 a = _mm512_min_ps(_mm512_abs_ps(q), _mm512_set1_ps(6.0f));
    const __m512i u = _mm512_castps_si512(a);
    /* (bits + 2^21 - 1 + mantissa bit 22) >> 22 is 2 * biased exponent + mantissa bit, 254 at 1 */
    const __m512i in = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32((1 << 21) - 1 - (252 << 22))), _mm512_and_si512(_mm512_srli_epi32(u, 22), _mm512_set1_epi32(1))),
        22);
    const __m512i is = _mm512_cvt_roundps_epi32(_mm512_add_ps(a, a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i idx = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(a, _mm512_set1_ps(1.0f), _CMP_LT_OQ), in, is);
    const __mmask16 neg = _mm512_cmp_ps_mask(q, _mm512_setzero_ps(), _CMP_LT_OQ); /* not -0: mk_e2m1_code's q < 0 */
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(_mm512_mask_or_epi32(idx, neg, idx, _mm512_set1_epi32(8))));
    if (!want) return;
    /* decoded: dec[idx] (idx < 8 reads the low 8 lanes), negated where neg */
    const __m512i v = _mm512_castps_si512(_mm512_permutexvar_ps(idx, _mm512_castps256_ps512(_mm256_loadu_ps(t->dec[s8]))));
    const __m512 d = _mm512_sub_ps(xv, _mm512_castsi512_ps(_mm512_mask_xor_epi32(v, neg, v, _mm512_set1_epi32((int)0x80000000u))));
    *m = _mm512_max_ps(*m, _mm512_abs_ps(d));
    const __m512 xx = _mm512_mul_ps(xv, xv), dd = _mm512_mul_ps(d, d);
    /* mk_qacc's lanes: (0 + x_j^2) + x_(j+8)^2; then mx_flush's tree */
    const __m256 x2 = _mm256_add_ps(_mm512_castps512_ps256(xx), _mm512_extractf32x8_ps(xx, 1));
    const __m256 e2 = _mm256_add_ps(_mm512_castps512_ps256(dd), _mm512_extractf32x8_ps(dd, 1));
    __m256 h = _mm256_hadd_ps(x2, e2);
    h = _mm256_hadd_ps(h, h);
    *acc = _mm_add_pd(*acc, _mm_cvtps_pd(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))));
}

static inline MX_AVX512 __attribute__((always_inline)) void nv16_run512(mk_dtype wdt, const float *x, size_t ng, float gs, uint8_t *scales, uint8_t *codes,
                                                                       mk_qerr *err, const nv_tabs *t, bool want)
{
    __m128d acc = _mm_set_pd(want ? err->se2 : 0, want ? err->sx2 : 0); /* sx2, se2 */
    __m512 m = _mm512_setzero_ps();
    size_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        const __m256i c = nv_scales8(x + g * 16, wdt, gs);
        _mm_storel_epi64((__m128i *)(scales + g), _mm256_cvtepi32_epi8(c));
        for (int j = 0; j < 8; j++) nv_group512(x + (g + j) * 16, scales[g + j], t, codes + (g + j) * 16, &m, &acc, want);
    }
    for (; g < ng; g++) {
        scales[g] = nv_scale(wdt, gs, mk_ct_absmax(x + g * 16, 16));
        nv_group512(x + g * 16, scales[g], t, codes + g * 16, &m, &acc, want);
    }
    if (!want) return;
    err->sx2 = _mm_cvtsd_f64(acc);
    err->se2 = _mm_cvtsd_f64(_mm_unpackhi_pd(acc, acc));
    const float mx = _mm512_reduce_max_ps(m);
    if (mx > err->maxe) err->maxe = mx;
}

MX_AVX512 static void nv16_avx512(mk_dtype wdt, const float *x, size_t ng, float gs, uint8_t *scales, uint8_t *codes, mk_qerr *err)
{
    nv_tabs t;
    nv_tabs_init(&t, gs);
    if (err) nv16_run512(wdt, x, ng, gs, scales, codes, err, &t, true);
    else nv16_run512(wdt, x, ng, gs, scales, codes, err, &t, false);
}
#endif

/* x: f32 values, or (xb) the bf16 bit patterns of a bf16 weight, widened as they are loaded */
MK_VINLINE void mx_quantize(mk_dtype wdt, unsigned bits, const void *x, size_t n, uint8_t e, uint8_t *codes, mk_qerr *err, bool xb)
{
    const float sc = mx_scale(wdt, e), dsc = mx_pow2(mk_mx_stored_exp(e)); /* exact in bf16 */
    mk_qacc acc;
    mk_qacc_init(&acc);
    if (bits == 8) {
        /* compressed-tensors' FP8 rule with this scale; its error sums decode in wdt, ours in bf16 */
        const mk_ct_fp8 a = {false, wdt};
        mk_qerr *e8 = wdt == MK_BF16 && e != 255 ? err : NULL;
#ifdef MX_HAVE_AVX2
        if (xb && (e8 || !err) && mx_avx2()) {
            mx8_avx2(x, n, sc, codes, e8);
            return;
        }
#endif
        if (xb) mk_ct_fp8_quantize_bf16(&a, x, n, sc, codes, e8);
        else mk_ct_fp8_quantize(&a, x, n, sc, codes, e8);
        if (!err || e8) return;
        for (size_t i = 0; i < n; i++) mk_qacc_add1(&acc, mk_loadx1(x, i, xb), mk_round_bf16(mk_e4m3_to_f32(codes[i]) * dsc));
        mk_qacc_flush(&acc, err);
        return;
    }
#ifdef MX_HAVE_AVX2
    if (wdt != MK_F16 && mx_avx2()) {
        mx4_avx2(wdt == MK_BF16, x, n, sc, dsc, codes, err, xb);
        return;
    }
#endif
    size_t i = 0;
    const mk_vf vs = mk_vf_set1(sc), vd = mk_vf_set1(dsc), hi = mk_vf_set1(6.0f), lo = -hi;
    for (; i + 8 <= n; i += 8) {
        mk_vf xv = mk_vf_loadx(x, i, xb), q = mk_vf_min(mk_vf_max(xv / vs, lo), hi), v;
        if (wdt == MK_BF16) q = mk_vf_round_bf16(q);
        else if (wdt == MK_F16) q = mk_vf_round_f16(q);
        mk_vu c;
        mx_e2m1_8(q, c, v);
        mk_vu_store_u8(codes + i, c);
        if (err) mk_qacc_add(&acc, xv, mk_vf_round_bf16(v * vd));
    }
    for (; i < n; i++) {
        const float xi = mk_loadx1(x, i, xb);
        float q = xi / sc;
        q = q > 6.0f ? 6.0f : q < -6.0f ? -6.0f : q; /* clamping first: wdt's overflow is clamped too */
        codes[i] = mk_e2m1_code(mx_round(wdt, q));
        if (err) mk_qacc_add1(&acc, xi, mk_round_bf16(mk_e2m1_value(codes[i]) * dsc));
    }
    if (err) mk_qacc_flush(&acc, err);
}

MK_QKERNEL
void mk_mx_quantize(mk_dtype wdt, unsigned bits, const float *x, size_t n, uint8_t e, uint8_t *codes, mk_qerr *err)
{
    mx_quantize(wdt, bits, x, n, e, codes, err, false);
}

MK_QKERNEL
void mk_mx_quantize_bf16(unsigned bits, const uint16_t *x, size_t n, uint8_t e, uint8_t *codes, mk_qerr *err)
{
    mx_quantize(MK_BF16, bits, x, n, e, codes, err, true);
}

void mk_nvfp4_quantize_groups(mk_dtype wdt, const float *x, size_t ng, size_t group, float gs, uint8_t *scales, uint8_t *codes, mk_qerr *err)
{
#ifdef MX_HAVE_AVX2
    if (group == 16 && mx_avx512()) {
        nv16_avx512(wdt, x, ng, gs, scales, codes, err);
        return;
    }
    if (group == 16 && mx_avx2()) {
        nv16_avx2(wdt, x, ng, gs, scales, codes, err);
        return;
    }
#endif
    nv_groups_ref(wdt, x, ng, group, gs, scales, codes, err);
}

void mk_mx_dequant(unsigned bits, const uint8_t *codes, size_t n, uint8_t e, float *out)
{
    const float dsc = mk_round_bf16(ldexpf(1.0f, (int)e - 127));
    for (size_t i = 0; i < n; i++) out[i] = mk_round_bf16((bits == 8 ? mk_e4m3_to_f32(codes[i]) : mk_e2m1_value(codes[i])) * dsc);
}

void mk_fp4_pack_ref(const uint8_t *codes, size_t n, uint8_t *bytes)
{
    for (size_t i = 0; i + 1 < n; i += 2) bytes[i / 2] = (uint8_t)(codes[i] | (codes[i + 1] << 4));
}

/* 32 codes a step as 16 little-endian pairs: low | high << 4, narrowed to bytes. Each step
 * reads its codes before it writes, and writes below what later steps read: in place works. */
MK_QKERNEL
void mk_fp4_pack(const uint8_t *codes, size_t n, uint8_t *bytes)
{
    typedef uint16_t vh16 __attribute__((vector_size(32)));
    typedef uint8_t vb16 __attribute__((vector_size(16)));
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        vh16 v;
        memcpy(&v, codes + i, 32);
        vb16 b = __builtin_convertvector((v & 0xff) | ((v >> 8) << 4), vb16);
        memcpy(bytes + i / 2, &b, 16);
    }
    mk_fp4_pack_ref(codes + i, n - i, bytes + i / 2);
}
