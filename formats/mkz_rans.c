/* mkz_rans.c - the .mkz plane codec 2: a static, order-0 rANS coder for byte planes
 * (docs/mkz-format.md, "Plane codec 2"). One frequency table per plane, quantized to 2^prec
 * (12 bits); 32 interleaved 31-bit states that emit and take 16-bit words. The encoder
 * runs backwards over the plane and writes its words from the end of its buffer, so the
 * decoder reads everything forwards. The decoder treats its input as hostile: every field
 * is checked before use, it never reads past its input, and a plane must end exactly where
 * its bytes end with every state back at its start value.
 * See mkz_int.h. */
#include "mkz_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L_LOW (1u << 15) /* states live in [L_LOW, L_LOW << 16) = [2^15, 2^31) */
#define LANES MKZ_RANS_LANES
#define PREC MKZ_RANS_PREC
#define MASK ((1u << PREC) - 1)

static_assert(LANES == 32, "the AVX2 paths run four 8-lane vectors");
#define NV (LANES / 8)

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, v & 0xffff);
    wr16(p + 2, v >> 16);
}

void mkz_rans_hist(const uint8_t *src, size_t n, uint32_t hist[256])
{
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        h[0][src[i]]++;
        h[1][src[i + 1]]++;
        h[2][src[i + 2]]++;
        h[3][src[i + 3]]++;
    }
    for (; i < n; i++) h[0][src[i]]++;
    for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
}

uint64_t mkz_rans_estimate(const uint32_t hist[256], size_t n)
{
    double bits = 0;
    unsigned used = 0;
    for (int s = 0; s < 256; s++)
        if (hist[s]) {
            bits += hist[s] * log2((double)n / hist[s]);
            used++;
        }
    return (uint64_t)(bits / 8) + MKZ_RANS_HEAD_MIN + 2u * used;
}

/* Quantize hist (n symbols) to frequencies summing to 2^prec, each used symbol >= 1:
 * rounded shares, then the excess taken from (or the shortfall given to) the largest
 * frequencies, at most half of one at a time. Deterministic. */
static void normalize(const uint32_t hist[256], size_t n, uint32_t freq[256])
{
    const int64_t m = (int64_t)1 << PREC;
    int64_t sum = 0;
    for (int s = 0; s < 256; s++) {
        freq[s] = 0;
        if (!hist[s]) continue;
        uint64_t f = ((uint64_t)hist[s] * (uint64_t)m + n / 2) / n;
        freq[s] = f ? (uint32_t)f : 1;
        sum += freq[s];
    }
    while (sum != m) {
        int big = 0;
        for (int s = 1; s < 256; s++)
            if (freq[s] > freq[big]) big = s;
        if (sum < m) {
            freq[big] += (uint32_t)(m - sum);
            sum = m;
        } else {
            int64_t take = sum - m, most = freq[big] / 2;
            if (take > most) take = most;
            freq[big] -= (uint32_t)take;
            sum -= take;
        }
    }
}

size_t mkz_rans_bound(size_t n) { return MKZ_RANS_HEAD_MAX + 2 * n + 2 * LANES + 16; }

/* Encoder symbol: ryg's reciprocal form of x' = (x / f) * 2^PREC + x % f + cum, exact for
 * x < 2^31: q = x / f as (x * rcp) >> 32 >> shift; x' = x + bias + q * (2^PREC - f). A state
 * at or above xmax first gives its low 16 bits. */
typedef struct esym {
    uint32_t xmax, rcp, bias, cmpl, shift;
} esym;

static void esym_init(esym *e, uint32_t cum, uint32_t f)
{
    e->xmax = f << (31 - PREC);
    e->cmpl = (1u << PREC) - f;
    if (f < 2) { /* q = x - 1 */
        e->rcp = ~0u;
        e->shift = 0;
        e->bias = cum + (1u << PREC) - 1;
    } else {
        uint32_t sh = 0;
        while (f > (1u << sh)) sh++;
        e->rcp = (uint32_t)(((1ull << (sh + 31)) + f - 1) / f);
        e->shift = sh - 1;
        e->bias = cum;
    }
}

/* One symbol into state *xs; the word (if any) at *pp - 2, which the caller keeps writable. */
static inline void enc1(const esym *e, uint32_t *xs, uint8_t **pp)
{
    uint32_t v = *xs, need = v >= e->xmax;
    wr16(*pp - 2, v & 0xffff);
    *pp -= 2 * need;
    v >>= 16 * need;
    uint32_t q = (uint32_t)(((uint64_t)v * e->rcp) >> 32) >> e->shift;
    *xs = v + e->bias + q * e->cmpl;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MK_NO_CLONES)
#define MKZ_RANS_AVX2 1
#include <immintrin.h>

/* dec_lut[m][k]: for lane k of an 8-lane vector whose lanes in bit mask m take a word, the
 * index of its word among the 8 loaded (the count of taking lanes before it). enc_lut[m]:
 * the permutation that moves the lanes in m, in order, to the top of a vector. */
static uint32_t dec_lut[256][8], enc_lut[256][8];

static void luts_init(void)
{
    for (unsigned m = 0; m < 256; m++) {
        unsigned c = 0, cnt = (unsigned)__builtin_popcount(m);
        memset(enc_lut[m], 0, sizeof enc_lut[m]);
        for (unsigned k = 0; k < 8; k++) {
            dec_lut[m][k] = c;
            if (m >> k & 1) enc_lut[m][8 - cnt + c] = k;
            c += m >> k & 1;
        }
    }
}
static pthread_once_t luts_once = PTHREAD_ONCE_INIT;

static bool have_avx2(void)
{
    pthread_once(&luts_once, luts_init);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* The full rounds of mkz_rans_encode, 8 lanes per AVX2 instruction: the same states and words
 * in the same places. rcp/pk: each symbol's reciprocal, and bias | cmpl << 13 | shift << 26. */
__attribute__((target("avx2,popcnt"))) static bool enc_rounds_avx2(const uint8_t *src, size_t i, const uint32_t *rcp,
                                                                    const uint32_t *pk, uint32_t *x, uint8_t **pp,
                                                                    const uint8_t *low)
{
    const __m256i m13 = _mm256_set1_epi32(0x1fff), m16 = _mm256_set1_epi32(0xffff), full = _mm256_set1_epi32(1 << PREC);
    __m256i v[4];
    for (int g = 0; g < 4; g++) v[g] = _mm256_loadu_si256((const __m256i *)(const void *)(x + 8 * g));
    uint8_t *p = *pp;
    while (i) {
        if (p - low < 2 * LANES + 16) return false; /* a round's words, and the last store's 16 bytes */
        i -= LANES;
#pragma GCC unroll 4
        for (int g = 3; g >= 0; g--) {
            __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(src + i + 8 * (size_t)g)));
            __m256i r = _mm256_i32gather_epi32((const int *)rcp, s, 4), k = _mm256_i32gather_epi32((const int *)pk, s, 4);
            __m256i cmpl = _mm256_and_si256(_mm256_srli_epi32(k, 13), m13);
            __m256i xmax1 = _mm256_sub_epi32(_mm256_slli_epi32(_mm256_sub_epi32(full, cmpl), 31 - PREC), _mm256_set1_epi32(1));
            __m256i need = _mm256_cmpgt_epi32(v[g], xmax1);
            unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(need));
            __m256i w = _mm256_permutevar8x32_epi32(_mm256_and_si256(v[g], m16),
                                                    _mm256_loadu_si256((const __m256i *)(const void *)enc_lut[m]));
            w = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0x08);
            _mm_storeu_si128((__m128i *)(void *)(p - 16), _mm256_castsi256_si128(w));
            p -= 2 * (unsigned)__builtin_popcount(m);
            __m256i y = _mm256_blendv_epi8(v[g], _mm256_srli_epi32(v[g], 16), need);
            __m256i qe = _mm256_srli_epi64(_mm256_mul_epu32(y, r), 32);
            __m256i qo = _mm256_mul_epu32(_mm256_srli_epi64(y, 32), _mm256_srli_epi64(r, 32));
            __m256i q = _mm256_srlv_epi32(_mm256_blend_epi32(qe, qo, 0xaa), _mm256_srli_epi32(k, 26));
            v[g] = _mm256_add_epi32(_mm256_add_epi32(y, _mm256_and_si256(k, m13)), _mm256_mullo_epi32(q, cmpl));
        }
    }
    for (int g = 0; g < 4; g++) _mm256_storeu_si256((__m256i *)(void *)(x + 8 * g), v[g]);
    *pp = p;
    return true;
}
#endif

size_t mkz_rans_encode(const uint8_t *src, size_t n, const uint32_t hist[256], uint8_t *dst, size_t cap)
{
    if (n == 0 || cap < MKZ_RANS_HEAD_MAX) return 0;
    uint32_t freq[256], cum = 0;
    normalize(hist, n, freq);
    esym es[256];
    size_t head = 1 + 32;
    uint8_t *bm = dst + 1;
    memset(bm, 0, 32);
    dst[0] = PREC;
    for (int s = 0; s < 256; s++) {
        if (!freq[s]) continue;
        bm[s >> 3] |= (uint8_t)(1u << (s & 7));
        wr16(dst + head, freq[s] - 1);
        head += 2;
        esym_init(&es[s], cum, freq[s]);
        cum += freq[s];
    }
    /* words go backwards from the end of dst, down to `low` (the states' place) */
    uint8_t *end = dst + cap, *p = end, *low = dst + head + 4 * LANES;
    uint32_t x[LANES];
    for (int l = 0; l < LANES; l++) x[l] = L_LOW;
    size_t i = n;
    while (i % LANES) { /* the last, partial round first: the encoder runs backwards */
        i--;
        if (p - low < 2) return 0;
        enc1(&es[src[i]], &x[i % LANES], &p);
    }
#ifdef MKZ_RANS_AVX2
    if (i && have_avx2()) {
        uint32_t rcp[256], pk[256];
        for (int s = 0; s < 256; s++) {
            rcp[s] = es[s].rcp;
            pk[s] = es[s].bias | es[s].cmpl << 13 | es[s].shift << 26;
        }
        if (!enc_rounds_avx2(src, i, rcp, pk, x, &p, low)) return 0;
        i = 0;
    }
#endif
    while (i) {
        if (p - low < 2 * LANES) return 0;
        i -= LANES;
        for (int l = LANES - 1; l >= 0; l--) enc1(&es[src[i + (size_t)l]], &x[l], &p);
    }
    for (int l = 0; l < LANES; l++) wr32(dst + head + 4 * l, x[l]);
    head += 4 * LANES;
    size_t words = (size_t)(end - p);
    memmove(dst + head, p, words);
    return head + words;
}

/* ---- decoding --------------------------------------------------------------------------------- */

/* One symbol from state *xs: its slot's entry gives the symbol, and the state takes a word
 * from *pp when it falls below L_LOW (the caller makes sure 2 bytes are there). */
static inline uint8_t dec1(const uint32_t *te, uint32_t *xs, const uint8_t **pp)
{
    uint32_t v = *xs, e = te[v & MASK];
    v = (e >> 20) * (v >> PREC) + (e >> 8 & MASK);
    uint32_t need = v < L_LOW, m = 0u - need;
    v = (v & ~m) | ((v << 16 | rd16(*pp)) & m);
    *pp += 2 * need;
    *xs = v;
    return (uint8_t)e;
}

/* Symbol i of a bf16 exponent plane with its sign+mantissa byte sm: the element's two bytes
 * (mkz_fields_merge's). */
static inline void put_field(uint8_t *out, size_t i, uint8_t sm, uint8_t ex)
{
    out[2 * i] = (uint8_t)((sm & 0x7f) | (ex << 7 & 0x80));
    out[2 * i + 1] = (uint8_t)((sm & 0x80) | ex >> 1);
}

/* Full rounds of LANES symbols while at least 2 * LANES + 16 bytes are left: how many symbols.
 * sm NULL: symbol i to dst[i]; else the plane is a bf16 exponent plane and element i (its
 * two bytes, with sign and mantissa from sm[i]) goes to dst[2i..2i+1]. */
static size_t dec_rounds_scalar(const uint32_t *te, uint32_t *x, const uint8_t **pp, const uint8_t *end, const uint8_t *sm,
                                uint8_t *dst, size_t n)
{
    size_t i = 0;
    /* local copies of the states and the word pointer: stores to dst cannot alias them */
    uint8_t c[LANES];
    uint32_t xl[LANES];
    const uint8_t *p = *pp;
    memcpy(xl, x, sizeof xl);
    while (i + LANES <= n && end - p >= 2 * LANES + 16) {
        for (int l = 0; l < LANES; l++) c[l] = dec1(te, &xl[l], &p);
        if (sm)
            mkz_fields_merge(sm + i, c, LANES, dst + 2 * i);
        else
            memcpy(dst + i, c, LANES);
        i += LANES;
    }
    memcpy(x, xl, sizeof xl);
    *pp = p;
    return i;
}

#ifdef MKZ_RANS_AVX2
/* 16 bf16 elements from their sign+mantissa and exponent bytes (put_field's bytes) */
__attribute__((target("avx2"), always_inline)) static inline __m256i fields16(__m128i sm, __m128i ex)
{
    const __m256i m7f = _mm256_set1_epi16(0x7f), m8000 = _mm256_set1_epi16((short)0x8000);
    __m256i s = _mm256_cvtepu8_epi16(sm), e = _mm256_cvtepu8_epi16(ex);
    return _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(s, m7f), _mm256_slli_epi16(e, 7)),
                           _mm256_and_si256(_mm256_slli_epi16(s, 8), m8000));
}

/* dec_rounds_scalar, 8 lanes per AVX2 instruction: the same states, words and order. The
 * four lookups of a round are gathers, which bound its speed: everything else is kept off
 * them (the bf16 elements are put together from the round's symbols in registers, not in a
 * second pass). */
__attribute__((target("avx2,popcnt"), always_inline)) static inline size_t
dec_rounds_avx2_body(const uint32_t *te, uint32_t *x, const uint8_t **pp, const uint8_t *end, const uint8_t *sm, uint8_t *dst,
                     size_t n)
{
    const __m256i mask = _mm256_set1_epi32((int)MASK), lo8 = _mm256_set1_epi32(0xff);
    const __m256i lim = _mm256_set1_epi32((int)L_LOW), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i v[NV];
    for (int g = 0; g < NV; g++) v[g] = _mm256_loadu_si256((const __m256i *)(const void *)(x + 8 * g));
    const uint8_t *p = *pp;
    size_t i = 0;
    while (i + LANES <= n && end - p >= 2 * LANES + 16) {
        __m256i sy[NV], y[NV], need[NV];
        unsigned m[NV];
#pragma GCC unroll 4
        for (int g = 0; g < NV; g++) {
            __m256i e = _mm256_i32gather_epi32((const int *)te, _mm256_and_si256(v[g], mask), 4);
            sy[g] = _mm256_and_si256(e, lo8);
            __m256i f = _mm256_srli_epi32(e, 20);
            __m256i b = _mm256_and_si256(_mm256_srli_epi32(e, 8), mask);
            y[g] = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(v[g], PREC)), b);
            need[g] = _mm256_cmpgt_epi32(lim, y[g]);
            m[g] = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(need[g]));
        }
#pragma GCC unroll 4
        for (int g = 0; g < NV; g++) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
            w = _mm256_permutevar8x32_epi32(w, _mm256_loadu_si256((const __m256i *)(const void *)dec_lut[m[g]]));
            v[g] = _mm256_blendv_epi8(y[g], _mm256_or_si256(_mm256_slli_epi32(y[g], 16), w), need[g]);
            p += 2 * (unsigned)__builtin_popcount(m[g]);
        }
#pragma GCC unroll 4
        for (int g = 0; g < NV; g += 4) {
            __m256i a = _mm256_packus_epi32(sy[g], sy[g + 1]), b = _mm256_packus_epi32(sy[g + 2], sy[g + 3]);
            __m256i c = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
            if (sm) {
                __m256i s = _mm256_loadu_si256((const __m256i *)(const void *)(sm + i + 8 * (size_t)g));
                uint8_t *o = dst + 2 * (i + 8 * (size_t)g);
                _mm256_storeu_si256((__m256i *)(void *)o, fields16(_mm256_castsi256_si128(s), _mm256_castsi256_si128(c)));
                _mm256_storeu_si256((__m256i *)(void *)(o + 32),
                                    fields16(_mm256_extracti128_si256(s, 1), _mm256_extracti128_si256(c, 1)));
            } else {
                _mm256_storeu_si256((__m256i *)(void *)(dst + i + 8 * (size_t)g), c);
            }
        }
        i += LANES;
    }
    for (int g = 0; g < NV; g++) _mm256_storeu_si256((__m256i *)(void *)(x + 8 * g), v[g]);
    *pp = p;
    return i;
}

__attribute__((target("avx2,popcnt"))) static size_t dec_rounds_avx2(const uint32_t *te, uint32_t *x, const uint8_t **pp,
                                                                      const uint8_t *end, uint8_t *dst, size_t n)
{
    return dec_rounds_avx2_body(te, x, pp, end, NULL, dst, n);
}

__attribute__((target("avx2,popcnt"))) static size_t dec_rounds_avx2_fields(const uint32_t *te, uint32_t *x, const uint8_t **pp,
                                                                             const uint8_t *end, const uint8_t *sm,
                                                                             uint8_t *dst, size_t n)
{
    return dec_rounds_avx2_body(te, x, pp, end, sm, dst, n);
}
#endif

/* The decoding table of the plane at src (mkz_rans_table), or *only: the one symbol of a
 * plane that has one (its states never change and it takes no words). */
static const char *build_table(const uint8_t *src, size_t cs, uint32_t *te, int *only, const uint8_t **after)
{
    *only = -1;
    if (cs < 1 + 32) return "shorter than its header";
    if (src[0] != PREC) return "a precision other than 12 bits";
    const uint8_t *bm = src + 1, *p = src + 1 + 32, *end = src + cs;
    uint32_t cum = 0;
    for (unsigned s = 0; s < 256; s++) {
        if (!(bm[s >> 3] >> (s & 7) & 1)) continue;
        if (end - p < 2) return "its frequency table is cut short";
        uint32_t f = rd16(p) + 1u;
        p += 2;
        if (f > (1u << PREC) - cum) return "its frequencies add up to more than 2^12";
        if (f == 1u << PREC) *only = (int)s; /* takes the whole table: entries of f << 20 would overflow */
        else
            for (uint32_t k = 0; k < f; k++) te[cum + k] = f << 20 | k << 8 | s;
        cum += f;
    }
    if (cum != 1u << PREC) return "its frequencies do not add up to 2^12";
    *after = p;
    return NULL;
}

static mk_status decode(const uint8_t *src, size_t cs, const uint8_t *sm, uint8_t *dst, size_t n, mkz_rans_table *t,
                        const char **why)
{
    const uint8_t *p = NULL, *end = src + cs;
    int only;
    if ((*why = build_table(src, cs, t->e, &only, &p))) return MK_ERR_FORMAT;
    if ((size_t)(end - p) < 4 * LANES) return *why = "its states are cut short", MK_ERR_FORMAT;
    uint32_t x[LANES];
    for (int l = 0; l < LANES; l++) {
        x[l] = rd32(p + 4 * l);
        if (x[l] < L_LOW || x[l] >= L_LOW << 16) return *why = "a state out of range", MK_ERR_FORMAT;
    }
    p += 4 * LANES;
    if ((size_t)(end - p) % 2) return *why = "an odd number of word bytes", MK_ERR_FORMAT;
    size_t i;
    if (only >= 0) {
        for (i = 0; i < n; i++)
            if (sm) put_field(dst, i, sm[i], (uint8_t)only);
            else dst[i] = (uint8_t)only;
    } else
#ifdef MKZ_RANS_AVX2
    if (have_avx2())
        i = sm ? dec_rounds_avx2_fields(t->e, x, &p, end, sm, dst, n) : dec_rounds_avx2(t->e, x, &p, end, dst, n);
    else
#endif
        i = dec_rounds_scalar(t->e, x, &p, end, sm, dst, n);
    for (; i < n; i++) { /* the rest, each word checked */
        uint32_t *xs = &x[i % LANES], v = *xs, e = t->e[v & MASK];
        if (sm) put_field(dst, i, sm[i], (uint8_t)e);
        else dst[i] = (uint8_t)e;
        v = (e >> 20) * (v >> PREC) + (e >> 8 & MASK);
        if (v < L_LOW) {
            if (end - p < 2) return *why = "its words end before its symbols", MK_ERR_FORMAT;
            v = v << 16 | rd16(p);
            p += 2;
        }
        *xs = v;
    }
    if (p != end) return *why = "bytes left over after the last symbol", MK_ERR_FORMAT;
    for (int l = 0; l < LANES; l++)
        if (x[l] != L_LOW) return *why = "a state that does not end where the encoder began", MK_ERR_FORMAT;
    return MK_OK;
}

mk_status mkz_rans_decode(const uint8_t *src, size_t cs, uint8_t *dst, size_t n, mkz_rans_table *t, const char **why)
{
    return decode(src, cs, NULL, dst, n, t, why);
}

mk_status mkz_rans_decode_fields(const uint8_t *src, size_t cs, const uint8_t *sm, uint8_t *out, size_t n, mkz_rans_table *t,
                                 const char **why)
{
    return decode(src, cs, sm, out, n, t, why);
}

/* ---- the public entry points (mkz.h) ---------------------------------------------------------- */

size_t mk_mkz_rans_bound(size_t n) { return mkz_rans_bound(n); }

size_t mk_mkz_rans_encode(const unsigned char *src, size_t n, unsigned char *dst, size_t cap)
{
    uint32_t hist[256];
    mkz_rans_hist(src, n, hist);
    return mkz_rans_encode(src, n, hist, dst, cap);
}

static mk_status public_decode(const unsigned char *src, size_t len, const unsigned char *sm, unsigned char *dst, size_t n)
{
    mkz_rans_table *t = mk_malloc(sizeof *t);
    if (!t) return MK_ERR_NOMEM;
    const char *why = NULL;
    mk_status s = decode(src, len, sm, dst, n, t, &why);
    free(t);
    return s == MK_OK ? MK_OK : mk_error(s, "rANS plane damaged: %s", why);
}

mk_status mk_mkz_rans_decode(const unsigned char *src, size_t len, unsigned char *dst, size_t n)
{
    return public_decode(src, len, NULL, dst, n);
}

mk_status mk_mkz_rans_decode_fields(const unsigned char *src, size_t len, const unsigned char *sm, unsigned char *out, size_t n)
{
    return public_decode(src, len, sm, out, n);
}
