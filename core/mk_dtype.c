/* mk_dtype.c - see mk_dtype.h.
 *
 * The float encoders work on the f32 bit pattern so the result is exact on every
 * compiler and does not depend on the FPU rounding mode. */
#include "mk_dtype.h"

#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- bf16: the top 16 bits of f32, rounded to nearest even ------------------------ */

uint16_t mk_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb; /* carries into the exponent give Inf correctly */
    return (uint16_t)(u >> 16);
}

float mk_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

void mk_dtype_round_f32(mk_dtype t, float *v, size_t n)
{
    if (t != MK_BF16 && t != MK_F16) return;
    for (size_t i = 0; i < n; i++) v[i] = mk_dtype_round(t, v[i]);
}

/* ---- IEEE half ------------------------------------------------------------------- */

uint16_t mk_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu); /* NaN */
    if (a == 0x7f800000u) return sign | 0x7c00u;
    int32_t e = (int32_t)(a >> 23) - 127 + 15;
    uint32_t m = a & 0x7fffffu;
    if (e >= 31) return sign | 0x7c00u; /* overflow -> Inf */
    if (e <= 0) {
        /* subnormal or zero: shift the implicit-1 mantissa right, round to nearest even */
        if (e < -10) return sign; /* below half the smallest subnormal: +-0 */
        m |= 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return sign | (uint16_t)q; /* q may carry into the exponent: still correct */
    }
    uint32_t q = ((uint32_t)e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++; /* carry may give Inf: correct */
    return sign | (uint16_t)q;
}

float mk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        float v = (float)m * 0x1p-24f; /* exact */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e - 15 + 127) << 23) | (m << 13));
}

/* ---- 8-bit floats (OCP OFP8) ------------------------------------------------------
 * Generic encoder: ebits exponent bits with bias, mbits mantissa bits. Values whose
 * rounded magnitude exceeds max_finite become NaN (E4M3, no Inf) or Inf (E5M2), as
 * PyTorch's non-saturating cast does. */

static uint8_t f32_to_f8(float f, int ebits, int mbits, int bias, float max_finite, bool has_inf)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    uint8_t nan = (uint8_t)(sign | 0x7fu); /* a NaN code in both E4M3 and E5M2 */
    uint8_t inf = (uint8_t)(sign | (((1u << ebits) - 1u) << mbits));
    if (a > 0x7f800000u) return nan;
    if (a == 0x7f800000u) return has_inf ? inf : nan;
    int32_t e = (int32_t)(a >> 23) - 127; /* unbiased */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    if ((a >> 23) == 0) return sign; /* f32 subnormals are far below every f8 subnormal */
    int32_t emin = 1 - bias;         /* exponent of the smallest normal */
    uint32_t q;                      /* biased exponent and mantissa, as one integer */
    unsigned shift;
    if (e < emin) {
        /* subnormal in the target: value = m * 2^(e-23); unit = 2^(emin - mbits) */
        int32_t s = 23 - mbits + (emin - e);
        if (s > 31) return sign;
        shift = (unsigned)s;
        q = m >> shift;
    } else {
        shift = (unsigned)(23 - mbits);
        q = ((uint32_t)(e + bias) << mbits) | ((m >> shift) & ((1u << mbits) - 1u));
    }
    uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    /* decode q back to check range */
    uint32_t qe = q >> mbits;
    if (qe > (uint32_t)((1 << ebits) - 1)) return has_inf ? inf : nan;
    float mag;
    if (qe == 0) mag = ldexpf((float)(q & ((1u << mbits) - 1u)), emin - mbits);
    else mag = ldexpf((float)((q & ((1u << mbits) - 1u)) | (1u << mbits)), (int)qe - bias - mbits);
    if (mag > max_finite) return has_inf ? inf : nan;
    return (uint8_t)(sign | q);
}

uint8_t mk_f32_to_e4m3(float f) { return f32_to_f8(f, 4, 3, 7, 448.0f, false); }
uint8_t mk_f32_to_e5m2(float f) { return f32_to_f8(f, 5, 2, 15, 57344.0f, true); }

float mk_e4m3_to_f32(uint8_t v)
{
    float s = (v & 0x80) ? -1.0f : 1.0f;
    unsigned e = (v >> 3) & 0xf, m = v & 7;
    if (e == 0xf && m == 7) return NAN;
    if (e == 0) return s * ldexpf((float)m, -9);
    return s * ldexpf((float)(8 + m), (int)e - 7 - 3);
}

float mk_e5m2_to_f32(uint8_t v)
{
    float s = (v & 0x80) ? -1.0f : 1.0f;
    unsigned e = (v >> 2) & 0x1f, m = v & 3;
    if (e == 0x1f) return m ? NAN : s * INFINITY;
    if (e == 0) return s * ldexpf((float)m, -16);
    return s * ldexpf((float)(4 + m), (int)e - 15 - 2);
}

/* ---- row converters ----------------------------------------------------------------- */

/* The bf16 loops, which every merge runs over all its inputs and its output, are also built
 * for AVX2 and picked when the program starts (GCC's target_clones, as quant/qvec.h and
 * merge/methods/kernel.h do; integer operations only, so the same bits). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
#define DT_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define DT_CLONE
#endif

#define LOADU(T, p, i) ({ T v_; memcpy(&v_, (const char *)(p) + (size_t)(i) * sizeof(T), sizeof(T)); v_; })
#define STOREU(T, p, i, v) do { T v_ = (v); memcpy((char *)(p) + (size_t)(i) * sizeof(T), &v_, sizeof(T)); } while (0)

static void f64_to(const void *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = (float)LOADU(double, s, i); }
static void f64_from(const float *s, void *d, size_t n) { for (size_t i = 0; i < n; i++) STOREU(double, d, i, (double)s[i]); }
static void f32_to(const void *s, float *d, size_t n) { memcpy(d, s, n * 4); }
static void f32_from(const float *s, void *d, size_t n) { memcpy(d, s, n * 4); }
static void f16_to(const void *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = mk_f16_to_f32(LOADU(uint16_t, s, i)); }
static void f16_from(const float *s, void *d, size_t n) { for (size_t i = 0; i < n; i++) STOREU(uint16_t, d, i, mk_f32_to_f16(s[i])); }
DT_CLONE static void bf16_to(const void *s, float *d, size_t n)
{
    /* little-endian: the bf16 bits are the top half of the f32 (vectorizes: load, widen, shift) */
    const uint16_t *p = s;
    uint32_t *o = (uint32_t *)d;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + i, 2);
        o[i] = (uint32_t)h << 16;
    }
}
/* Branch-free round-to-nearest-even with NaN kept quiet, so the loops vectorize; the same
 * bits as mk_f32_to_bf16. */
static inline uint32_t bf16_code(uint32_t u)
{
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}
DT_CLONE static void bf16_from(const float *s, void *d, size_t n)
{
    const uint32_t *in = (const uint32_t *)s;
    uint16_t *out = d;
    for (size_t i = 0; i < n; i++) {
        uint16_t r = (uint16_t)bf16_code(in[i]);
        memcpy(out + i, &r, 2);
    }
}
/* bf16_from, and whether some finite value became Inf (all-ones exponent from a finite
 * input: one OR per value, in the same vectorized loop). */
DT_CLONE static bool bf16_from_flag(const float *s, void *d, size_t n)
{
    const uint32_t *in = (const uint32_t *)s;
    uint16_t *out = d;
    uint32_t over = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = in[i], c = bf16_code(u);
        over |= ((c & 0x7f80u) == 0x7f80u) & ((u & 0x7f800000u) != 0x7f800000u);
        uint16_t r = (uint16_t)c;
        memcpy(out + i, &r, 2);
    }
    return over != 0;
}
/* f16_from with the same flag. */
static bool f16_from_flag(const float *s, void *d, size_t n)
{
    const uint32_t *in = (const uint32_t *)s;
    uint32_t over = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = mk_f32_to_f16(s[i]);
        over |= ((h & 0x7c00u) == 0x7c00u) & ((in[i] & 0x7f800000u) != 0x7f800000u);
        STOREU(uint16_t, d, i, h);
    }
    return over != 0;
}
static void e4m3_to(const void *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = mk_e4m3_to_f32(((const uint8_t *)s)[i]); }
static void e4m3_from(const float *s, void *d, size_t n) { for (size_t i = 0; i < n; i++) ((uint8_t *)d)[i] = mk_f32_to_e4m3(s[i]); }
static void e5m2_to(const void *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = mk_e5m2_to_f32(((const uint8_t *)s)[i]); }
static void e5m2_from(const float *s, void *d, size_t n) { for (size_t i = 0; i < n; i++) ((uint8_t *)d)[i] = mk_f32_to_e5m2(s[i]); }

/* float -> integer: round to nearest even (rint in the default mode), saturate, NaN -> 0 */
static double sat_round(float v, double lo, double hi)
{
    if (v != v) return 0;
    double r = nearbyint((double)v);
    return r < lo ? lo : r > hi ? hi : r;
}

#define INT_CONV(T, tag, lo, hi)                                                          \
    static void tag##_to(const void *s, float *d, size_t n)                               \
    {                                                                                     \
        for (size_t i = 0; i < n; i++) d[i] = (float)LOADU(T, s, i);                      \
    }                                                                                     \
    static void tag##_from(const float *s, void *d, size_t n)                             \
    {                                                                                     \
        for (size_t i = 0; i < n; i++) STOREU(T, d, i, (T)sat_round(s[i], lo, hi));       \
    }
INT_CONV(int64_t, i64, -9223372036854775808.0, 9223372036854774784.0)
INT_CONV(int32_t, i32, -2147483648.0, 2147483647.0)
INT_CONV(int16_t, i16, -32768.0, 32767.0)
INT_CONV(int8_t, i8, -128.0, 127.0)
INT_CONV(uint8_t, u8, 0.0, 255.0)
INT_CONV(uint16_t, u16, 0.0, 65535.0)
INT_CONV(uint32_t, u32, 0.0, 4294967295.0)
INT_CONV(uint64_t, u64, 0.0, 18446744073709549568.0)

static void bool_to(const void *s, float *d, size_t n) { for (size_t i = 0; i < n; i++) d[i] = ((const uint8_t *)s)[i] ? 1.0f : 0.0f; }
static void bool_from(const float *s, void *d, size_t n) { for (size_t i = 0; i < n; i++) ((uint8_t *)d)[i] = s[i] != 0.0f; }

const mk_dtype_traits MK_DTYPES[MK_DTYPE_COUNT] = {
    [MK_F64] = {"F64", "float64", 8, true, f64_to, f64_from},
    [MK_F32] = {"F32", "float32", 4, true, f32_to, f32_from},
    [MK_F16] = {"F16", "float16", 2, true, f16_to, f16_from},
    [MK_BF16] = {"BF16", "bfloat16", 2, true, bf16_to, bf16_from},
    [MK_F8_E4M3] = {"F8_E4M3", "float8_e4m3fn", 1, true, e4m3_to, e4m3_from},
    [MK_F8_E5M2] = {"F8_E5M2", "float8_e5m2", 1, true, e5m2_to, e5m2_from},
    [MK_I64] = {"I64", "int64", 8, false, i64_to, i64_from},
    [MK_I32] = {"I32", "int32", 4, false, i32_to, i32_from},
    [MK_I16] = {"I16", "int16", 2, false, i16_to, i16_from},
    [MK_I8] = {"I8", "int8", 1, false, i8_to, i8_from},
    [MK_U8] = {"U8", "uint8", 1, false, u8_to, u8_from},
    [MK_U16] = {"U16", "uint16", 2, false, u16_to, u16_from},
    [MK_U32] = {"U32", "uint32", 4, false, u32_to, u32_from},
    [MK_U64] = {"U64", "uint64", 8, false, u64_to, u64_from},
    [MK_BOOL] = {"BOOL", "bool", 1, false, bool_to, bool_from},
};

mk_dtype mk_dtype_from_name(const char *name)
{
    for (int i = 0; i < MK_DTYPE_COUNT; i++)
        if (strcmp(name, MK_DTYPES[i].name) == 0) return (mk_dtype)i;
    return MK_DTYPE_NONE;
}

mk_dtype mk_dtype_from_user(const char *name)
{
    static const struct { const char *alias; mk_dtype t; } aliases[] = {
        {"bf16", MK_BF16}, {"fp16", MK_F16}, {"f16", MK_F16}, {"half", MK_F16},
        {"fp32", MK_F32}, {"f32", MK_F32}, {"float", MK_F32}, {"fp64", MK_F64}, {"f64", MK_F64},
        {"double", MK_F64}, {"fp8", MK_F8_E4M3}, {"float8_e4m3", MK_F8_E4M3},
    };
    if (strncmp(name, "torch.", 6) == 0) name += 6;
    for (int i = 0; i < MK_DTYPE_COUNT; i++)
        if (strcmp(name, MK_DTYPES[i].torch_name) == 0) return (mk_dtype)i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return aliases[i].t;
    return mk_dtype_from_name(name);
}

double mk_dtype_max_finite(mk_dtype t)
{
    switch (t) {
    case MK_F64: return 1.7976931348623157e308;
    case MK_F32: return 3.4028234663852886e38;
    case MK_F16: return 65504.0;
    case MK_BF16: return 3.3895313892515355e38;
    case MK_F8_E4M3: return 448.0;
    case MK_F8_E5M2: return 57344.0;
    default: return INFINITY;
    }
}

size_t mk_dtype_count_overflow(mk_dtype t, const float *src, size_t n, size_t *first)
{
    if (!MK_DTYPES[t].is_float || t == MK_F32 || t == MK_F64) return 0;
    /* the rounding boundary: values at or above it round to a non-finite code */
    double lim;
    switch (t) {
    case MK_F16: lim = 65520.0; break;                 /* 65504 + half an ulp (16) */
    case MK_BF16: lim = 3.39617752923046e38; break;    /* 2^128 - 2^119: bf16 max + half an ulp */
    case MK_F8_E4M3: lim = 464.0; break;               /* 448 + 16; 464 itself ties to 448 */
    case MK_F8_E5M2: lim = 61440.0; break;             /* 57344 + 4096 */
    default: return 0;
    }
    /* nearly always nothing overflows: one vectorizable pass over |x| (NaN and Inf masked
     * out, they are not overflows) decides whether to look closer; the bits of non-negative
     * floats order as the values, so an integer maximum (which vectorises) finds it */
    uint32_t maxbits = 0;
    const uint32_t *bits = (const uint32_t *)src;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = bits[i] & 0x7fffffffu;
        a = a >= 0x7f800000u ? 0 : a;
        maxbits = a > maxbits ? a : maxbits;
    }
    float maxa;
    memcpy(&maxa, &maxbits, 4);
    if ((double)maxa < lim) return 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(src[i]);
        bool over = (t == MK_F8_E4M3) ? (a > lim) : (a >= lim);
        if (over && a != INFINITY) {
            if (!count && first) *first = i;
            count++;
        }
    }
    return count;
}

size_t mk_dtype_from_f32_checked(mk_dtype t, const float *src, void *dst, size_t n, size_t *first)
{
    bool maybe;
    if (t == MK_BF16) maybe = bf16_from_flag(src, dst, n);
    else if (t == MK_F16) maybe = f16_from_flag(src, dst, n);
    else {
        size_t count = mk_dtype_count_overflow(t, src, n, first);
        MK_DTYPES[t].from_f32(src, dst, n);
        return count;
    }
    /* rare: the flag says some value overflowed; count them and find the first exactly */
    return maybe ? mk_dtype_count_overflow(t, src, n, first) : 0;
}

/* bf16_to where the raw values fill dst's upper half: 16 values per step, loaded (into
 * registers) before any of their 64 bytes are stored; 4 * (i + 16) <= 2 * n + 2 * (i + 16)
 * while i + 16 <= n, so no store reaches a value not yet loaded. */
DT_CLONE static void bf16_to_inplace(float *dst, size_t n)
{
    const unsigned char *src = (const unsigned char *)dst + 2 * n;
    size_t i = 0;
    typedef uint16_t vh8 __attribute__((vector_size(16)));
    typedef uint32_t vw8 __attribute__((vector_size(32)));
    for (; i + 16 <= n; i += 16) {
        vh8 h0, h1;
        memcpy(&h0, src + 2 * i, sizeof h0);
        memcpy(&h1, src + 2 * i + 16, sizeof h1);
        vw8 w0 = __builtin_convertvector(h0, vw8) << 16, w1 = __builtin_convertvector(h1, vw8) << 16;
        memcpy(dst + i, &w0, sizeof w0);
        memcpy(dst + i + 8, &w1, sizeof w1);
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t o = (uint32_t)h << 16;
        memcpy(dst + i, &o, 4);
    }
}

void mk_dtype_to_f32_inplace(mk_dtype t, float *dst, size_t n)
{
    unsigned es = MK_DTYPES[t].size;
    if (t == MK_F32 || es > 4) return;
    if (t == MK_BF16) {
        bf16_to_inplace(dst, n);
        return;
    }
    /* block i + 1's raw bytes start past block i's f32 values: with raw offset n * (4 - es),
     * 4 * (i + B) <= n * (4 - es) + (i + B) * es whenever i + B <= n. Each block is copied out
     * (256 elements: at most 1 KiB, in L1) before its values are written. */
    enum { B = 256 };
    unsigned char raw[B * 4];
    const unsigned char *src = (const unsigned char *)dst + n * (4 - es);
    for (size_t i = 0; i < n; i += B) {
        size_t m = n - i < B ? n - i : B;
        memcpy(raw, src + i * es, m * es);
        MK_DTYPES[t].to_f32(raw, dst + i, m);
    }
}

size_t mk_dtype_count_nonfinite(mk_dtype t, const void *src, size_t n, size_t *first)
{
    const unsigned char *p = src;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        bool bad;
        switch (t) {
        case MK_F32: { uint32_t u; memcpy(&u, p + 4 * i, 4); bad = (u & 0x7f800000u) == 0x7f800000u; break; }
        case MK_F64: { uint64_t u; memcpy(&u, p + 8 * i, 8); bad = (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull; break; }
        case MK_F16: { uint16_t u; memcpy(&u, p + 2 * i, 2); bad = (u & 0x7c00u) == 0x7c00u; break; }
        case MK_BF16: { uint16_t u; memcpy(&u, p + 2 * i, 2); bad = (u & 0x7f80u) == 0x7f80u; break; }
        case MK_F8_E4M3: bad = (p[i] & 0x7f) == 0x7f; break;
        case MK_F8_E5M2: bad = (p[i] & 0x7c) == 0x7c; break;
        default: return 0;
        }
        if (bad) {
            if (!count && first) *first = i;
            count++;
        }
    }
    return count;
}
