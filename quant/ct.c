/* ct.c - see ct.h */
#include "qvec.h"
#include "ct.h"

#include <math.h>
#include <stdatomic.h>

float mk_ct_round(mk_dtype t, float x)
{
    switch (t) {
    case MK_BF16: return mk_round_bf16(x);
    case MK_F16: return mk_f16_to_f32(mk_f32_to_f16(x));
    default: return x;
    }
}

float mk_ct_eps(mk_dtype t)
{
    switch (t) {
    case MK_BF16: return 0x1p-7f;  /* torch.finfo(torch.bfloat16).eps */
    case MK_F16: return 0x1p-10f;  /* torch.finfo(torch.float16).eps */
    default: return 0x1p-23f;      /* torch.finfo(torch.float32).eps */
    }
}

/* ---- integers ------------------------------------------------------------------------- */

/* calculate_qparams from min(min(x), 0) = mn and max(max(x), 0) = mx. */
static void int_scale(const mk_ct_int *a, float mn, float mx, float *scale, int32_t *zp)
{
    const mk_dtype t = a->wdtype;
    const float range = mk_ct_round(t, (float)((1 << a->bits) - 1)); /* bit_range.to(dtype) */
    const float qmin = (float)mk_ct_qmin(a), qmax = (float)mk_ct_qmax(a);
    float s;
    int32_t z = 0;
    if (!a->asym) {
        float m = -mn > mx ? -mn : mx;
        s = mk_ct_round(t, m / mk_ct_round(t, range / 2.0f));
    } else {
        s = mk_ct_round(t, mk_ct_round(t, mx - mn) / range);
        /* IEEE as torch: a scale that underflowed to 0 gives -Inf (min < 0, zero point
         * clamped to qmax) or 0 / 0 = NaN, which the int8 cast turns into 0 */
        float zf = mk_ct_round(t, qmin - mk_ct_round(t, mn / s));
        zf = zf < qmin ? qmin : zf > qmax ? qmax : zf;
        z = zf != zf ? 0 : (int32_t)rintf(zf);
    }
    if (s == 0.0f) s = mk_ct_eps(t);
    *scale = s;
    *zp = z;
}

/* The kernels below read element i of x as mk_vf_loadx / mk_loadx1 do: f32 values, or (xb)
 * bf16 bit patterns widened where they are loaded (the same values, so the same bytes). */
MK_VINLINE void int_qparams(const mk_ct_int *a, const void *x, size_t n, float *scale, int32_t *zp, bool xb)
{
    /* min(min(x), 0), max(max(x), 0): zero stays representable */
    mk_vf vmn = mk_vf_set1(0.0f), vmx = vmn;
    size_t i8 = n / 8 * 8;
    for (size_t i = 0; i < i8; i += 8) {
        mk_vf v = mk_vf_loadx(x, i, xb);
        vmn = mk_vf_min(vmn, v);
        vmx = mk_vf_max(vmx, v);
    }
    float mn = mk_vf_hmin(vmn), mx = mk_vf_hmax(vmx);
    for (size_t i = i8; i < n; i++) {
        float v = mk_loadx1(x, i, xb);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    int_scale(a, mn, mx, scale, zp);
}

MK_QKERNEL
void mk_ct_int_qparams(const mk_ct_int *a, const float *x, size_t n, float *scale, int32_t *zp)
{
    int_qparams(a, x, n, scale, zp, false);
}

void mk_ct_int_codes_ref(const mk_ct_int *a, const float *x, size_t n, float scale, int32_t zp, int8_t *q)
{
    const mk_dtype t = a->wdtype;
    const float qmin = (float)mk_ct_qmin(a), qmax = (float)mk_ct_qmax(a);
    for (size_t i = 0; i < n; i++) {
        float s = mk_ct_round(t, x[i] / scale);
        if (a->asym) s = mk_ct_round(t, s + (float)zp);
        s = s < qmin ? qmin : s > qmax ? qmax : s;
        q[i] = (int8_t)rintf(s);
    }
}

/* The codes of one group; bf and asym are the weight's (constants where the caller makes
 * them so, and the loop is built without their tests). xb implies bf. */
MK_VINLINE void int_codes(const mk_ct_int *a, const void *x, size_t n, float scale, int32_t zp, int8_t *q, mk_qerr *err, bool bf,
                          bool asym, bool xb)
{
    mk_qacc acc;
    mk_qacc_init(&acc);
    size_t i = 0;
    if (a->wdtype == MK_BF16 || a->wdtype == MK_F32) {
        const mk_vf vs = mk_vf_set1(scale), vz = mk_vf_set1(asym ? (float)zp : 0.0f);
        const mk_vf lo = mk_vf_set1((float)mk_ct_qmin(a)), hi = mk_vf_set1((float)mk_ct_qmax(a));
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_loadx(x, i, xb), s = mk_ct_vcode(xv, vs, vz, lo, hi, bf, asym);
            mk_vu_store_u8((uint8_t *)q + i, (mk_vu)__builtin_convertvector(s, mk_vi));
            if (err) {
                mk_vf d = (s - vz) * vs; /* (q - zp) is an exact small integer */
                mk_qacc_add(&acc, xv, bf ? mk_vf_round_bf16(d) : d);
            }
        }
    }
    if (i < n) {
        float tail[8];
        const float *xt = (const float *)x + i;
        if (xb) { /* bf16 weights take the vector loop: fewer than 8 are left */
            for (size_t k = i; k < n; k++) tail[k - i] = mk_loadx1(x, k, true);
            xt = tail;
        }
        mk_ct_int_codes_ref(a, xt, n - i, scale, zp, q + i);
        for (size_t k = i; err && k < n; k++)
            mk_qacc_add1(&acc, xt[k - i], mk_ct_round(a->wdtype, (float)((int32_t)q[k] - (asym ? zp : 0)) * scale));
    }
    if (err) mk_qacc_flush(&acc, err);
}

MK_QKERNEL
void mk_ct_int_codes(const mk_ct_int *a, const float *x, size_t n, float scale, int32_t zp, int8_t *q, mk_qerr *err)
{
    int_codes(a, x, n, scale, zp, q, err, a->wdtype == MK_BF16, a->asym, false);
}

MK_VINLINE void int_row(const mk_ct_int *a, const void *x, size_t cols, size_t group, float *scales, int32_t *zps, int8_t *q,
                        mk_qerr *err, bool bf, bool asym, bool xb)
{
    const size_t es = xb ? 2 : 4;
    float buf[256];
    for (size_t g = 0, k = 0; g + group <= cols; g += group, k++) {
        const void *xg = (const char *)x + g * es;
        if (xb && group <= 256 && group % 8 == 0) { /* widened once, read twice from L1 */
            for (size_t i = 0; i < group; i += 8) mk_vf_store(buf + i, mk_vf_load_bf16((const uint16_t *)xg + i));
            int_qparams(a, buf, group, &scales[k], &zps[k], false);
            int_codes(a, buf, group, scales[k], zps[k], q + g, err, bf, asym, false);
            continue;
        }
        int_qparams(a, xg, group, &scales[k], &zps[k], xb);
        int_codes(a, xg, group, scales[k], zps[k], q + g, err, bf, asym, xb);
    }
}

MK_QKERNEL
void mk_ct_int_row(const mk_ct_int *a, const float *x, size_t cols, size_t group, float *scales, int32_t *zps, int8_t *q, mk_qerr *err)
{
    const bool bf = a->wdtype == MK_BF16;
    if (bf && !a->asym) int_row(a, x, cols, group, scales, zps, q, err, true, false, false);
    else if (bf) int_row(a, x, cols, group, scales, zps, q, err, true, true, false);
    else int_row(a, x, cols, group, scales, zps, q, err, false, a->asym, false);
}

MK_QKERNEL
void mk_ct_int_row_bf16(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps, int8_t *q,
                        mk_qerr *err)
{
    if (!a->asym) int_row(a, x, cols, group, scales, zps, q, err, true, false, true);
    else int_row(a, x, cols, group, scales, zps, q, err, true, true, true);
}

void mk_ct_int_dequant(const mk_ct_int *a, const int8_t *q, size_t n, float scale, int32_t zp, float *out)
{
    for (size_t i = 0; i < n; i++) out[i] = mk_ct_round(a->wdtype, (float)((int32_t)q[i] - (a->asym ? zp : 0)) * scale);
}

void mk_ct_pack_row_ref(unsigned bits, const int8_t *q, size_t n, uint32_t *words)
{
    const unsigned per = 32 / bits;
    const uint32_t off = 1u << (bits - 1), mask = (1u << bits) - 1u;
    for (size_t w = 0; w < (n + per - 1) / per; w++) {
        uint32_t v = 0;
        for (unsigned k = 0; k < per && w * per + k < n; k++)
            v |= ((uint32_t)((int32_t)q[w * per + k] + (int32_t)off) & mask) << (k * bits);
        words[w] = v;
    }
}

/* Codes in [-2^(bits-1), 2^(bits-1)): the low `bits` bits of a code with the top one
 * flipped are the code plus the offset. 4 bits: 8 codes of a 64-bit load become one word
 * by merging neighbouring nibbles, then bytes, then halves (4 words a step in a vector);
 * 8 bits: a 32-bit load with every top bit flipped. The tail is the reference's. */
MK_QKERNEL
void mk_ct_pack_row(unsigned bits, const int8_t *q, size_t n, uint32_t *words)
{
    size_t i = 0, w = 0;
    if (bits == 4) {
        for (; i + 32 <= n; i += 32, w += 4) {
            mk_vu64 v;
            memcpy(&v, q + i, 32);
            v = (v & 0x0f0f0f0f0f0f0f0full) ^ 0x0808080808080808ull;
            v = (v | (v >> 4)) & 0x00ff00ff00ff00ffull;
            v = (v | (v >> 8)) & 0x0000ffff0000ffffull;
            v = (v | (v >> 16)) & 0x00000000ffffffffull;
            for (int k = 0; k < 4; k++) words[w + k] = (uint32_t)v[k];
        }
    } else if (bits == 8) {
        for (; i + 32 <= n; i += 32, w += 8) {
            mk_vu v;
            memcpy(&v, q + i, 32);
            v ^= 0x80808080u;
            memcpy(words + w, &v, 32);
        }
    }
    if (i < n) mk_ct_pack_row_ref(bits, q + i, n - i, words + w);
}

void mk_ct_unpack_row(unsigned bits, const uint32_t *words, size_t n, int8_t *q)
{
    const unsigned per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    for (size_t i = 0; i < n; i++)
        q[i] = (int8_t)((int32_t)((words[i / per] >> ((i % per) * bits)) & mask) - (1 << (bits - 1)));
}

void mk_ct_pack_zp(unsigned bits, const int32_t *zp, size_t nr, size_t ng, uint32_t *words)
{
    const uint32_t off = 1u << (bits - 1), mask = (1u << bits) - 1u;
    for (size_t g = 0; g < ng; g++) {
        uint32_t v = 0;
        for (size_t r = 0; r < nr; r++) v |= ((uint32_t)(zp[r * ng + g] + (int32_t)off) & mask) << (r * bits);
        words[g] = v;
    }
}

/* ---- a bf16 row, quantized and packed in one pass --------------------------------------- */

static _Atomic int simd_cap = 2;

int mk_ct_simd_cap(int level)
{
    return atomic_exchange(&simd_cap, level);
}

void mk_ct_int_row_bf16_packed_ref(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                                   uint32_t *words, int8_t *codes, mk_qerr *err)
{
    mk_ct_int_row_bf16(a, x, cols, group, scales, zps, codes, err);
    mk_ct_pack_row(a->bits, codes, cols, words);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
#include <immintrin.h>

#define CT_AVX2 __attribute__((target("avx2")))
#define CT_AVX2_INLINE static inline __attribute__((target("avx2"), always_inline))

/* max (min) of 16 signed 16-bit lanes */
CT_AVX2_INLINE int hmax_i16(__m256i v)
{
    __m128i m = _mm_max_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epi16(m, _mm_srli_si128(m, 8));
    m = _mm_max_epi16(m, _mm_srli_si128(m, 4));
    m = _mm_max_epi16(m, _mm_srli_si128(m, 2));
    return (int16_t)_mm_extract_epi16(m, 0);
}
CT_AVX2_INLINE int hmin_i16(__m256i v)
{
    __m128i m = _mm_min_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_min_epi16(m, _mm_srli_si128(m, 8));
    m = _mm_min_epi16(m, _mm_srli_si128(m, 4));
    m = _mm_min_epi16(m, _mm_srli_si128(m, 2));
    return (int16_t)_mm_extract_epi16(m, 0);
}

/* A bf16 bit pattern as the f32 it is. */
static inline float bf16_bits_f32(int b)
{
    uint32_t u = (uint32_t)(b & 0xffff) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* min(min(x), 0) and max(max(x), 0) of n bf16 values (n % 16 == 0), on their bit patterns,
 * 16 a step: |x| orders as (b & 0x7fff) for the symmetric scale, which needs only
 * max(|x|) (given as mn = -max, mx = max); x orders as the signed key b ^ (b < 0 ? 0x7fff
 * : 0), its own inverse. Finite values (the caller checked). Starting from key 0 (+0) keeps
 * zero in the range; a -0 that wins is +0 to int_scale. */
CT_AVX2_INLINE void minmax_bf16(const uint16_t *x, size_t n, bool asym, float *mn, float *mx)
{
    const __m256i m7 = _mm256_set1_epi16(0x7fff);
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    if (!asym) {
        for (size_t i = 0; i < n; i += 16) hi = _mm256_max_epi16(hi, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), m7));
        *mx = bf16_bits_f32(hmax_i16(hi));
        *mn = -*mx;
        return;
    }
    for (size_t i = 0; i < n; i += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(x + i));
        v = _mm256_xor_si256(v, _mm256_and_si256(_mm256_srai_epi16(v, 15), m7));
        lo = _mm256_min_epi16(lo, v);
        hi = _mm256_max_epi16(hi, v);
    }
    int l = hmin_i16(lo), h = hmax_i16(hi);
    l ^= l < 0 ? 0x7fff : 0;
    *mn = bf16_bits_f32(l);
    *mx = bf16_bits_f32(h);
}

/* f32 -> nearest bf16 (ties to even), as f32; finite input: mk_vf_round_bf16. */
CT_AVX2_INLINE __m256 rne_bf16(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)));
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
}

typedef struct ct_acc {
    __m256 x2, e2, m;
} ct_acc;

/* mk_qacc_flush: each sum added in the same tree ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)),
 * both at once. */
CT_AVX2_INLINE void acc_flush(const ct_acc *acc, mk_qerr *e)
{
    __m256 h = _mm256_hadd_ps(acc->x2, acc->e2); /* x01 x23 e01 e23 | x45 x67 e45 e67 */
    h = _mm256_hadd_ps(h, h);                    /* x0123 e0123 . . | x4567 e4567 . . */
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    e->sx2 += (double)_mm_cvtss_f32(t);
    e->se2 += (double)_mm_cvtss_f32(_mm_movehdup_ps(t));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(acc->m), _mm256_extractf128_ps(acc->m, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float mx = _mm_cvtss_f32(m);
    if (mx > e->maxe) e->maxe = mx;
}

/* The constants of a group: scale, zero point, code range, and (int4) the 16 decoded values
 * indexed by code & 15 (t0: codes 0..7, t1: -8..-1), as the vector below computes them. */
typedef struct ct_k {
    __m256 vs, vz, lo, hi, t0, t1;
} ct_k;

CT_AVX2_INLINE __m256 dequant8(const ct_k *k, __m256 c, bool asym)
{
    return rne_bf16(_mm256_mul_ps(asym ? _mm256_sub_ps(c, k->vz) : c, k->vs));
}

/* 8 codes of a bf16 weight (mk_ct_vcode), as the bit patterns of code + MK_RINT_MAGIC: the
 * low byte is the code, two's complement; with want_err, the error sums of mk_qacc_add,
 * the decoded values looked up in t0, t1 when lut (one two-table permute with AVX-512VL). */
CT_AVX2_INLINE __m256i codes8(const uint16_t *x, const ct_k *k, bool asym, ct_acc *acc, bool want_err, bool lut)
{
    const __m256 magic = _mm256_set1_ps(MK_RINT_MAGIC);
    __m256 xv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)x)), 16));
    __m256 s = rne_bf16(_mm256_div_ps(xv, k->vs));
    if (asym) s = rne_bf16(_mm256_add_ps(s, k->vz));
    __m256 r = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(s, k->lo), k->hi), magic);
    if (want_err) {
        __m256 d = lut ? (__m256)__builtin_shuffle((mk_vf)k->t0, (mk_vf)k->t1, (mk_vi)r) : dequant8(k, _mm256_sub_ps(r, magic), asym);
        __m256 e = _mm256_sub_ps(xv, d);
        acc->x2 = _mm256_add_ps(acc->x2, _mm256_mul_ps(xv, xv));
        acc->e2 = _mm256_add_ps(acc->e2, _mm256_mul_ps(e, e));
        acc->m = _mm256_max_ps(acc->m, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), e));
    }
    return _mm256_castps_si256(r);
}

/* Packed words of 32 codes (4 vectors from codes8), the layout of mk_ct_pack_row: code + 8
 * in nibbles (4 bits) or code + 128 in bytes (8 bits), element order. The saturating packs
 * interleave 128-bit lanes; the dword permutation puts them back. */
CT_AVX2_INLINE void pack32(unsigned bits, const __m256i c[4], uint8_t *out)
{
    const __m256i mask = _mm256_set1_epi32(bits == 4 ? 0x0f : 0xff);
    __m256i p01 = _mm256_packus_epi32(_mm256_and_si256(c[0], mask), _mm256_and_si256(c[1], mask));
    __m256i p23 = _mm256_packus_epi32(_mm256_and_si256(c[2], mask), _mm256_and_si256(c[3], mask));
    __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (bits == 8) {
        _mm256_storeu_si256((__m256i *)out, _mm256_xor_si256(b, _mm256_set1_epi8((char)0x80)));
        return;
    }
    /* byte pairs (lo, hi) -> lo | hi << 4 in the low byte of each 16-bit lane */
    __m256i w = _mm256_and_si256(_mm256_or_si256(b, _mm256_srli_epi16(b, 4)), _mm256_set1_epi16(0x00ff));
    w = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
    _mm_storeu_si128((__m128i *)out, _mm_xor_si128(_mm256_castsi256_si128(w), _mm_set1_epi8((char)0x88)));
}

/* One group of n % 32 == 0 values: scale, zero point, packed codes at out, error sums.
 * bits, asym and want_err are constants (one loop each). */
CT_AVX2_INLINE void group_packed(const mk_ct_int *a, const uint16_t *x, size_t n, float *scale, int32_t *zp, uint8_t *out, mk_qerr *err,
                                 unsigned bits, bool asym, bool want_err, bool lut)
{
    float mn, mx;
    minmax_bf16(x, n, asym, &mn, &mx);
    int_scale(a, mn < 0.0f ? mn : 0.0f, mx > 0.0f ? mx : 0.0f, scale, zp);
    ct_k k = {_mm256_set1_ps(*scale), _mm256_set1_ps(asym ? (float)*zp : 0.0f), _mm256_set1_ps((float)mk_ct_qmin(a)),
              _mm256_set1_ps((float)mk_ct_qmax(a)), _mm256_setzero_ps(), _mm256_setzero_ps()};
    if (lut) {
        k.t0 = dequant8(&k, _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), asym);
        k.t1 = dequant8(&k, _mm256_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1), asym);
    }
    ct_acc acc = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (size_t i = 0; i < n; i += 32) {
        __m256i c[4] = {codes8(x + i, &k, asym, &acc, want_err, lut), codes8(x + i + 8, &k, asym, &acc, want_err, lut),
                        codes8(x + i + 16, &k, asym, &acc, want_err, lut), codes8(x + i + 24, &k, asym, &acc, want_err, lut)};
        pack32(bits, c, out + i * bits / 8);
    }
    if (want_err) acc_flush(&acc, err);
}

CT_AVX2_INLINE void row_packed(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                                uint32_t *words, mk_qerr *err, unsigned bits, bool asym, bool want_err, bool lut)
{
    for (size_t g = 0, k = 0; g < cols; g += group, k++)
        group_packed(a, x + g, group, &scales[k], &zps[k], (uint8_t *)words + g * bits / 8, err, bits, asym, want_err, lut && bits == 4);
}

CT_AVX2_INLINE void row_packed_any(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                                    uint32_t *words, mk_qerr *err, bool lut)
{
    if (!err) { /* rare: the sums are the report's */
        if (a->bits == 4) row_packed(a, x, cols, group, scales, zps, words, err, 4, a->asym, false, lut);
        else row_packed(a, x, cols, group, scales, zps, words, err, 8, a->asym, false, lut);
    } else if (a->bits == 4 && !a->asym) row_packed(a, x, cols, group, scales, zps, words, err, 4, false, true, lut);
    else if (a->bits == 4) row_packed(a, x, cols, group, scales, zps, words, err, 4, true, true, lut);
    else if (!a->asym) row_packed(a, x, cols, group, scales, zps, words, err, 8, false, true, lut);
    else row_packed(a, x, cols, group, scales, zps, words, err, 8, true, true, lut);
}

/* The same instructions; AVX-512VL only adds registers (32: no spills) and encodings. */
CT_AVX2 static void row_packed_avx2(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                                    uint32_t *words, mk_qerr *err)
{
    row_packed_any(a, x, cols, group, scales, zps, words, err, false);
}
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq"))) static void
row_packed_avx512(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps, uint32_t *words,
                  mk_qerr *err)
{
    row_packed_any(a, x, cols, group, scales, zps, words, err, true);
}

/* 2: AVX-512VL, 1: AVX2, 0: neither; at most simd_cap */
static int simd_level(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") ? 2
                 : __builtin_cpu_supports("avx2")                                                                                ? 1
                                                                                                                                 : 0;
    }
    return cached < simd_cap ? cached : simd_cap;
}
#endif

/* The AVX2 pass takes groups of a multiple of 32 values (whole words and vectors); others go
 * through the codes. */
void mk_ct_int_row_bf16_packed(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                               uint32_t *words, int8_t *codes, mk_qerr *err)
{
#ifdef CT_AVX2
    if ((a->bits == 4 || a->bits == 8) && a->wdtype == MK_BF16 && group && group % 32 == 0 && cols % group == 0 && simd_level()) {
        if (simd_level() == 2) row_packed_avx512(a, x, cols, group, scales, zps, words, err);
        else row_packed_avx2(a, x, cols, group, scales, zps, words, err);
        return;
    }
#endif
    mk_ct_int_row_bf16_packed_ref(a, x, cols, group, scales, zps, words, codes, err);
}

/* ---- FP8 ----------------------------------------------------------------------------------- */

MK_VINLINE float absmax_x(const void *x, size_t n, bool xb)
{
    mk_vf m0 = mk_vf_set1(0.0f), m1 = m0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = mk_vf_max(m0, mk_vf_abs(mk_vf_loadx(x, i, xb)));
        m1 = mk_vf_max(m1, mk_vf_abs(mk_vf_loadx(x, i + 8, xb)));
    }
    float am = mk_vf_hmax(mk_vf_max(m0, m1));
    for (; i < n; i++) am = fabsf(mk_loadx1(x, i, xb)) > am ? fabsf(mk_loadx1(x, i, xb)) : am;
    return am;
}

MK_QKERNEL
float mk_ct_absmax(const float *x, size_t n)
{
    return absmax_x(x, n, false);
}

float mk_ct_fp8_scale(const mk_ct_fp8 *a, float absmax)
{
    /* calculate_qparams: max_val_pos / (bit_range.to(dtype) / 2), bit_range = 2 * max */
    float half = mk_ct_round(a->wdtype, mk_ct_round(a->wdtype, 2.0f * mk_ct_fp8_max(a)) / 2.0f);
    float s = mk_ct_round(a->wdtype, absmax / half);
    return s == 0.0f ? mk_ct_eps(a->wdtype) : s;
}

static inline uint8_t fp8_encode(const mk_ct_fp8 *a, float v)
{
    float m = mk_ct_fp8_max(a);
    v = v + 0.0f; /* the symmetric zero point compressed-tensors adds: -0 becomes +0 */
    v = v < -m ? -m : v > m ? m : v; /* clamp first: the cast is not saturating */
    return a->e5m2 ? mk_f32_to_e5m2(v) : mk_f32_to_e4m3(v);
}

void mk_ct_fp8_quantize_ref(const mk_ct_fp8 *a, const float *x, size_t n, float scale, uint8_t *q)
{
    for (size_t i = 0; i < n; i++) q[i] = fp8_encode(a, mk_ct_round(a->wdtype, x[i] / scale));
}

#ifdef CT_AVX2
/* FP8 codes of a BF16 weight's bf16 values with AVX2, 8 a step in the order of the portable
 * loop below (so the same error sums): x / scale rounded to bf16, + 0, clamped, then rounded
 * to FP8 on the bit pattern, the constants as immediates. Normal range: the f32 mantissa
 * rounded to mbits bits (ties to even; a carry moves to the exponent), re-biased. Subnormal
 * range: adding 2^(23 + emin - mbits) rounds |v| to the subnormal step, and the sum's low
 * bits are the code. */
CT_AVX2_INLINE __m256i fp8_code8(const uint16_t *x, __m256 vs, bool e5m2, ct_acc *acc, bool want_err)
{
    const int mbits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7, shift = 23 - mbits;
    const __m256 hi = _mm256_set1_ps(e5m2 ? 57344.0f : 448.0f);
    const __m256 magic = _mm256_set1_ps(e5m2 ? 0x1p7f : 0x1p14f); /* 2^(23 + 1 - bias - mbits) */
    const __m256 min_normal = _mm256_set1_ps(e5m2 ? 0x1p-14f : 0x1p-6f);
    __m256 xv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)x)), 16));
    __m256 s = _mm256_add_ps(rne_bf16(_mm256_div_ps(xv, vs)), _mm256_setzero_ps()); /* -0 becomes +0 */
    s = _mm256_min_ps(_mm256_max_ps(s, _mm256_xor_ps(hi, _mm256_set1_ps(-0.0f))), hi);
    __m256i u = _mm256_castps_si256(s), sgn = _mm256_andnot_si256(_mm256_set1_epi32(0x7fffffff), u);
    __m256i a = _mm256_xor_si256(u, sgn);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, shift), _mm256_set1_epi32(1));
    __m256i an = _mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32((1 << (shift - 1)) - 1)), odd);
    an = _mm256_and_si256(an, _mm256_set1_epi32(-(1 << shift)));
    __m256i cn = _mm256_sub_epi32(_mm256_srli_epi32(an, shift), _mm256_set1_epi32((127 - bias) << mbits));
    __m256 af = _mm256_castsi256_ps(a), sm = _mm256_add_ps(af, magic);
    __m256i cs = _mm256_sub_epi32(_mm256_castps_si256(sm), _mm256_castps_si256(magic));
    __m256 sub = _mm256_cmp_ps(af, min_normal, _CMP_LT_OQ);
    __m256i code = _mm256_or_si256(_mm256_blendv_epi8(cn, cs, _mm256_castps_si256(sub)), _mm256_srli_epi32(sgn, 24));
    if (want_err) {
        __m256 r = _mm256_blendv_ps(_mm256_castsi256_ps(an), _mm256_sub_ps(sm, magic), sub);
        r = _mm256_or_ps(r, _mm256_castsi256_ps(sgn));
        __m256 e = _mm256_sub_ps(xv, rne_bf16(_mm256_mul_ps(r, vs)));
        acc->x2 = _mm256_add_ps(acc->x2, _mm256_mul_ps(xv, xv));
        acc->e2 = _mm256_add_ps(acc->e2, _mm256_mul_ps(e, e));
        acc->m = _mm256_max_ps(acc->m, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), e));
    }
    return code;
}

/* n % 8 == 0 values; 32 codes a store (the packs interleave the 128-bit halves, the
 * permute puts them back in order). */
CT_AVX2_INLINE void fp8_bf16_any(const uint16_t *x, size_t n, float scale, bool e5m2, uint8_t *q, ct_acc *acc_out, bool want_err)
{
    ct_acc l = *acc_out, *acc = &l; /* in registers: q may alias it */
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c0 = fp8_code8(x + i, vs, e5m2, acc, want_err), c1 = fp8_code8(x + i + 8, vs, e5m2, acc, want_err);
        __m256i c2 = fp8_code8(x + i + 16, vs, e5m2, acc, want_err), c3 = fp8_code8(x + i + 24, vs, e5m2, acc, want_err);
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
    }
    for (; i < n; i += 8) {
        __m256i c = fp8_code8(x + i, vs, e5m2, acc, want_err);
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
    }
    *acc_out = l;
}

CT_AVX2_INLINE void fp8_bf16_all(const uint16_t *x, size_t n, float scale, bool e5m2, uint8_t *q, ct_acc *acc, bool want_err)
{
    if (e5m2) {
        if (want_err) fp8_bf16_any(x, n, scale, true, q, acc, true);
        else fp8_bf16_any(x, n, scale, true, q, acc, false);
    } else {
        if (want_err) fp8_bf16_any(x, n, scale, false, q, acc, true);
        else fp8_bf16_any(x, n, scale, false, q, acc, false);
    }
}

/* The same instructions; AVX-512VL only adds registers and encodings. */
CT_AVX2 static void fp8_bf16_avx2(const uint16_t *x, size_t n, float scale, bool e5m2, uint8_t *q, ct_acc *acc, bool want_err)
{
    fp8_bf16_all(x, n, scale, e5m2, q, acc, want_err);
}
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq"))) static void fp8_bf16_avx512(const uint16_t *x, size_t n, float scale, bool e5m2,
                                                                                              uint8_t *q, ct_acc *acc, bool want_err)
{
    fp8_bf16_all(x, n, scale, e5m2, q, acc, want_err);
}

/* max |x| of n % 16 == 0 bf16 values, on their bit patterns (minmax_bf16) */
CT_AVX2 static float absmax_bf16_avx2(const uint16_t *x, size_t n)
{
    float mn, mx;
    minmax_bf16(x, n, false, &mn, &mx);
    return mx;
}
#endif

/* mk_ct_absmax of bf16 values: the finite ones (the caller checked) order as their bit
 * patterns without the sign, 16 a step with AVX2. */
static float absmax_bf16(const uint16_t *x, size_t n)
{
    size_t i = 0;
    float am = 0.0f;
#ifdef CT_AVX2
    if (simd_level() > 0) {
        i = n / 16 * 16;
        am = absmax_bf16_avx2(x, i);
    }
#endif
    if (i == 0) return absmax_x(x, n, true);
    for (; i < n; i++) am = fabsf(mk_loadx1(x, i, true)) > am ? fabsf(mk_loadx1(x, i, true)) : am;
    return am;
}

/* The AVX2 pass over the first n / 8 * 8 values of a BF16 weight's bf16 row, into acc (the
 * portable loop's accumulators, lane for lane); returns how many it took (0: no AVX2). */
static size_t fp8_bf16_simd(const mk_ct_fp8 *a, const uint16_t *x, size_t n, float scale, uint8_t *q, mk_qacc *acc, bool want_err)
{
#ifdef CT_AVX2
    int lvl = simd_level();
    if (lvl == 0) return 0;
    ct_acc c = {(__m256)acc->x2, (__m256)acc->e2, (__m256)acc->m};
    size_t n8 = n / 8 * 8;
    if (lvl == 2) fp8_bf16_avx512(x, n8, scale, a->e5m2, q, &c, want_err);
    else fp8_bf16_avx2(x, n8, scale, a->e5m2, q, &c, want_err);
    acc->x2 = (mk_vf)c.x2, acc->e2 = (mk_vf)c.e2, acc->m = (mk_vf)c.m;
    return n8;
#else
    (void)a, (void)x, (void)n, (void)scale, (void)q, (void)acc, (void)want_err;
    return 0;
#endif
}

/* FP8 round-to-nearest-even of 8 lanes already clamped to [-max, max] (and without -0),
 * branch-free: r is the rounded value, the return value the codes. Normal range: round
 * the f32 mantissa to `mbits` bits on the bit pattern (a carry moves to the exponent, as
 * it should); subnormal range: adding and removing 2^(23 + emin - mbits) leaves |v|
 * rounded to the subnormal step 2^(emin - mbits). Constants are splatted once (fp8_k). */
typedef struct fp8_k {
    mk_vu half, keep, rebias, one;
    mk_vf magic, scale_sub, min_normal;
    int shift;
} fp8_k;

static void fp8_k_init(fp8_k *k, bool e5m2)
{
    const int mbits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
    k->shift = 23 - mbits;
    uint32_t half = (1u << (k->shift - 1)) - 1u, keep = ~((1u << k->shift) - 1u), rebias = (uint32_t)((127 - bias) << mbits);
    k->half = (mk_vu){half, half, half, half, half, half, half, half};
    k->keep = (mk_vu){keep, keep, keep, keep, keep, keep, keep, keep};
    k->rebias = (mk_vu){rebias, rebias, rebias, rebias, rebias, rebias, rebias, rebias};
    k->one = (mk_vu){1, 1, 1, 1, 1, 1, 1, 1};
    k->magic = mk_vf_set1(ldexpf(1.0f, 23 + (1 - bias) - mbits));
    k->scale_sub = mk_vf_set1(ldexpf(1.0f, bias - 1 + mbits));
    k->min_normal = mk_vf_set1(ldexpf(1.0f, 1 - bias));
}

MK_VINLINE void fp8_round8(const fp8_k *k, const mk_vf *v, mk_vf *r, mk_vu *code)
{
    const mk_vu u = (mk_vu)*v, a = u & 0x7fffffffu, sign = (u >> 24) & 0x80u;
    mk_vu an = (a + k->half + ((a >> k->shift) & k->one)) & k->keep;
    mk_vu cn = (an >> k->shift) - k->rebias;
    mk_vf as = ((mk_vf)a + k->magic) - k->magic;
    mk_vu cs = (mk_vu)__builtin_convertvector(as * k->scale_sub, mk_vi);
    mk_vu sub = (mk_vu)((mk_vf)a < k->min_normal);
    *r = (mk_vf)(((sub & (mk_vu)as) | (~sub & an)) | (u & 0x80000000u));
    *code = (sub & cs) | (~sub & cn) | sign;
}

MK_VINLINE void fp8_quantize(const mk_ct_fp8 *a, const void *x, size_t n, float scale, uint8_t *q, mk_qerr *err, bool xb)
{
    mk_qacc acc;
    mk_qacc_init(&acc);
    size_t i = 0;
    const mk_dtype t = a->wdtype;
    if (xb && t == MK_BF16) i = fp8_bf16_simd(a, x, n, scale, q, &acc, err != NULL);
    if (i == 0 && (t == MK_BF16 || t == MK_F16 || t == MK_F32)) {
        const mk_vf vs = mk_vf_set1(scale), hi = mk_vf_set1(mk_ct_fp8_max(a)), lo = -hi, zero = mk_vf_set1(0.0f);
        fp8_k k;
        fp8_k_init(&k, a->e5m2);
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_loadx(x, i, xb), s = xv / vs, r;
            if (t == MK_BF16) s = mk_vf_round_bf16(s);
            else if (t == MK_F16) s = mk_vf_round_f16(s);
            s = mk_vf_min(mk_vf_max(s + zero, lo), hi); /* + 0: the zero point; -0 becomes +0 */
            mk_vu code;
            fp8_round8(&k, &s, &r, &code);
            mk_vu_store_u8(q + i, code);
            if (err) {
                mk_vf d = r * vs;
                if (t == MK_BF16) d = mk_vf_round_bf16(d);
                else if (t == MK_F16) d = mk_vf_round_f16(d);
                mk_qacc_add(&acc, xv, d);
            }
        }
    }
    if (i < n) {
        float tail[8];
        const float *xt = (const float *)x + i;
        if (xb) { /* bf16 weights take the vector loop: fewer than 8 are left */
            for (size_t k = i; k < n; k++) tail[k - i] = mk_loadx1(x, k, true);
            xt = tail;
        }
        mk_ct_fp8_quantize_ref(a, xt, n - i, scale, q + i);
        for (size_t k = i; err && k < n; k++) {
            float v = a->e5m2 ? mk_e5m2_to_f32(q[k]) : mk_e4m3_to_f32(q[k]);
            mk_qacc_add1(&acc, xt[k - i], mk_ct_round(t, v * scale));
        }
    }
    if (err) mk_qacc_flush(&acc, err);
}

MK_QKERNEL
void mk_ct_fp8_quantize(const mk_ct_fp8 *a, const float *x, size_t n, float scale, uint8_t *q, mk_qerr *err)
{
    fp8_quantize(a, x, n, scale, q, err, false);
}

MK_QKERNEL
void mk_ct_fp8_quantize_bf16(const mk_ct_fp8 *a, const uint16_t *x, size_t n, float scale, uint8_t *q, mk_qerr *err)
{
    fp8_quantize(a, x, n, scale, q, err, true);
}

MK_QKERNEL
float mk_ct_absmax_bf16(const uint16_t *x, size_t n)
{
    return absmax_x(x, n, true);
}

MK_QKERNEL
float mk_ct_fp8_row_bf16(const mk_ct_fp8 *a, const uint16_t *x, size_t n, uint8_t *q, mk_qerr *err)
{
    float sc = mk_ct_fp8_scale(a, absmax_bf16(x, n));
    fp8_quantize(a, x, n, sc, q, err, true);
    return sc;
}

void mk_ct_fp8_dequant(const mk_ct_fp8 *a, const uint8_t *q, size_t n, float scale, float *out)
{
    for (size_t i = 0; i < n; i++) {
        float v = a->e5m2 ? mk_e5m2_to_f32(q[i]) : mk_e4m3_to_f32(q[i]);
        out[i] = mk_ct_round(a->wdtype, v * scale);
    }
}
