/* ggml_quant.c - see ggml.h, encode side: llama.cpp's reference quantizers
 * (quantize_row_*_ref in ggml/src/ggml-quants.c; gguf-py's gguf.quants computes the same),
 * in the same f32 operations and order, so the blocks are the same bytes. Every block is
 * written byte by byte (little-endian): no alignment of dst is assumed. */
#include "ggml.h"
#include "ggml_kquant.h"
#include "qvec.h"

#include "../core/mk_dtype.h"
#include "../model/gguf_names.h"

#include <float.h>
#include <math.h>
#include <string.h>

static inline void put_h(uint8_t *p, float f)
{
    uint16_t h = mk_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}
static inline void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline int min_i(int a, int b) { return a < b ? a : b; }

/* The value of largest magnitude (the first such), sign kept: the *_0 types' scale. */
static float signed_absmax(const float *x)
{
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void range(const float *x, float *lo, float *hi)
{
    float mn = FLT_MAX, mx = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
    *lo = mn;
    *hi = mx;
}

static void q8_0(const float *x, uint8_t *b)
{
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_h(b, d);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void q4_0(const float *x, uint8_t *b)
{
    float d = signed_absmax(x) / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_h(b, d);
    for (int j = 0; j < 16; j++) {
        int lo = min_i(15, (int8_t)(x[j] * id + 8.5f)), hi = min_i(15, (int8_t)(x[16 + j] * id + 8.5f));
        b[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

static void q4_1(const float *x, uint8_t *b)
{
    float mn, mx;
    range(x, &mn, &mx);
    float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_h(b, d);
    put_h(b + 2, mn);
    for (int j = 0; j < 16; j++) {
        int lo = min_i(15, (int8_t)((x[j] - mn) * id + 0.5f)), hi = min_i(15, (int8_t)((x[16 + j] - mn) * id + 0.5f));
        b[4 + j] = (uint8_t)(lo | hi << 4);
    }
}

/* the 5-bit types: low nibbles as Q4, the fifth bits of values j and j + 16 in qh */
static void pack5(const int q[32], uint8_t *qh_at, uint8_t *qs)
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xf) | (q[16 + j] & 0xf) << 4);
        qh |= (uint32_t)((q[j] >> 4) & 1) << j | (uint32_t)((q[16 + j] >> 4) & 1) << (j + 16);
    }
    put32(qh_at, qh);
}

static void q5_0(const float *x, uint8_t *b)
{
    float d = signed_absmax(x) / -16.0f, id = d != 0 ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = min_i(31, (int8_t)(x[j] * id + 16.5f));
    put_h(b, d);
    pack5(q, b + 2, b + 6);
}

static void q5_1(const float *x, uint8_t *b)
{
    float mn, mx;
    range(x, &mn, &mx);
    float d = (mx - mn) / 31.0f, id = d != 0 ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)((x[j] - mn) * id + 0.5f);
    put_h(b, d);
    put_h(b + 2, mn);
    pack5(q, b + 4, b + 8);
}

/* ---- the same five types, 8 lanes at a time (mk_ggml_encode's path) ---------------------
 * Each block is 4 vectors of 8 values; every value gets the scalar code's f32 operations, and
 * the float -> integer conversions are the truncating ones the scalar casts compile to
 * (cvttss2si / cvttps2dq: INT32_MIN for NaN, infinities and values out of range, whose low
 * byte, like that of every f32 of magnitude 2^31 or more, is 0), so the bytes are those of the
 * scalar encoders above (mk_ggml_encode_ref), which tests/unit/test_ggml_encode.c checks on
 * zeros, -0, subnormals, huge values, infinities and NaN. */

/* each lane: a lane-wise max or min over all 8 lanes, by halves (the same value in any
 * order where no lane is NaN and zeros have one sign, as for magnitudes) */
#define v_all_lanes(a, op)                                                               \
    ({                                                                                   \
        __typeof__(a) t_ = (a);                                                          \
        t_ = op(t_, __builtin_shufflevector(t_, t_, 4, 5, 6, 7, 0, 1, 2, 3));            \
        t_ = op(t_, __builtin_shufflevector(t_, t_, 2, 3, 0, 1, 6, 7, 4, 5));            \
        op(t_, __builtin_shufflevector(t_, t_, 1, 0, 3, 2, 5, 4, 7, 6));                 \
    })
#define v_maxf_(a, b) mk_vf_sel((a) > (b), (a), (b))
/* the largest magnitude of 32 values, NaN ignored (as fmaxf and the scalar `<` do), 0 at
 * least, in every lane */
#define v_absmax4(v)                                                                     \
    ({                                                                                   \
        mk_vf m_ = mk_vf_set1(0.0f);                                                     \
        for (int k_ = 0; k_ < 4; k_++) {                                                 \
            mk_vf a_ = mk_vf_abs((v)[k_]);                                               \
            m_ = mk_vf_sel(a_ > m_, a_, m_);                                             \
        }                                                                                \
        v_all_lanes(m_, v_maxf_);                                                        \
    })
/* the truncating conversion of each lane, as a cast of a float to an integer compiles */
#define v_trunc(y) __builtin_convertvector((y), mk_vi)
/* (int)roundf(y) of each lane (halves away from zero; INT32_MIN where the conversion fails) */
#define v_round_away(y)                                                                  \
    ({                                                                                   \
        mk_vf y_ = (y);                                                                  \
        mk_vi i_ = v_trunc(y_), ok_ = i_ != INT32_MIN;                                   \
        mk_vf r_ = y_ - __builtin_convertvector(i_, mk_vf);                              \
        i_ - ((r_ >= 0.5f) & ok_) + ((r_ <= -0.5f) & ok_);                               \
    })
/* min(hi, (int8_t)t): the cast keeps the low byte, sign-extended */
#define v_int8_min(t, hi)                                                                \
    ({                                                                                   \
        mk_vi s_ = (mk_vi)((mk_vu)(t) << 24) >> 24, lt_ = s_ < (hi);                     \
        (s_ & lt_) | ((hi) & ~lt_);                                                      \
    })

/* the first of 32 values of largest magnitude amax (0 when amax is 0) */
static float first_of_magnitude(const float *x, float amax)
{
    if (amax == 0) return 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) == amax) return x[j];
    return 0;
}

/* codes q[0..3] of values 0-7, 8-15, 16-23, 24-31 as nibble pairs (j | j + 16 << 4) into qs */
#define v_pack4(qs, q)                                                                   \
    do {                                                                                 \
        mk_vu_store_u8((qs), ((q)[0] & 0xf) | ((q)[2] & 0xf) << 4);                      \
        mk_vu_store_u8((qs) + 8, ((q)[1] & 0xf) | ((q)[3] & 0xf) << 4);                  \
    } while (0)
/* the fifth bits of codes q[0..3] (value j at bit j), little-endian into qh */
#define v_pack_qh(qh, q)                                                                 \
    do {                                                                                 \
        const mk_vu sh_ = {0, 1, 2, 3, 4, 5, 6, 7};                                      \
        mk_vu u_ = (((mk_vu)((q)[0] >> 4) & 1u) << sh_) | (((mk_vu)((q)[1] >> 4) & 1u) << (sh_ + 8u)) | \
                   (((mk_vu)((q)[2] >> 4) & 1u) << (sh_ + 16u)) | (((mk_vu)((q)[3] >> 4) & 1u) << (sh_ + 24u)); \
        uint32_t h_ = 0;                                                                 \
        for (int l_ = 0; l_ < MK_VL; l_++) h_ |= u_[l_];                                 \
        put32((qh), h_);                                                                 \
    } while (0)

#define LOAD4(v, x)                                                                      \
    for (int k = 0; k < 4; k++) (v)[k] = mk_vf_load((x) + 8 * k)

/* The scales of up to 8 blocks, one lane each, divided together (each lane the scalar
 * code's division): ds = m / div, ids = 1 / ds where ds is not 0 (else 0). */
#define v_scales(m, div, ds, ids)                                                        \
    do {                                                                                 \
        mk_vf d_ = mk_vf_load(m) / mk_vf_set1(div), nz_ = (mk_vf)(d_ != mk_vf_set1(0.0f)); \
        mk_vf_store((ds), d_);                                                           \
        mk_vf_store((ids), mk_vf_sel(nz_, mk_vf_set1(1.0f) / mk_vf_sel(nz_, d_, mk_vf_set1(1.0f)), mk_vf_set1(0.0f))); \
    } while (0)

/* Blocks in groups of 8: each block's largest magnitude, the 8 scales divided in one
 * vector, then the codes. */
MK_QKERNEL static void rows_q8_0(const float *x, uint64_t nb, uint8_t *b)
{
    for (uint64_t i = 0; i < nb; i += 8) {
        unsigned g = nb - i < 8 ? (unsigned)(nb - i) : 8;
        float m[8] = {0}, ds[8], ids[8];
        for (unsigned j = 0; j < g; j++) {
            mk_vf v[4];
            LOAD4(v, x + 32 * j);
            m[j] = v_absmax4(v)[0];
        }
        v_scales(m, 127.0f, ds, ids);
        for (unsigned j = 0; j < g; j++, x += 32, b += 34) {
            mk_vf v[4];
            LOAD4(v, x);
            put_h(b, ds[j]);
            for (int k = 0; k < 4; k++) mk_vu_store_u8(b + 2 + 8 * k, v_round_away(v[k] * ids[j]));
        }
    }
}

/* Q4_0 (five false) and Q5_0 (five true) */
MK_QKERNEL static void rows_qx_0(const float *x, uint64_t nb, uint8_t *b, bool five)
{
    for (uint64_t i = 0; i < nb; i++, x += 32, b += five ? 22 : 18) {
        mk_vf v[4];
        mk_vi q[4];
        LOAD4(v, x);
        float d = first_of_magnitude(x, v_absmax4(v)[0]) / (five ? -16.0f : -8.0f), id = d != 0 ? 1.0f / d : 0.0f;
        for (int k = 0; k < 4; k++) q[k] = v_int8_min(v_trunc(v[k] * id + (five ? 16.5f : 8.5f)), five ? 31 : 15);
        put_h(b, d);
        if (five) v_pack_qh(b + 2, q);
        v_pack4(b + (five ? 6 : 2), q);
    }
}

/* Q4_1 (five false) and Q5_1 (five true) */
MK_QKERNEL static void rows_qx_1(const float *x, uint64_t nb, uint8_t *b, bool five)
{
    for (uint64_t i = 0; i < nb; i++, x += 32, b += five ? 24 : 20) {
        mk_vf v[4], lo = mk_vf_set1(FLT_MAX), hi = mk_vf_set1(-FLT_MAX);
        mk_vi q[4];
        LOAD4(v, x);
        for (int k = 0; k < 4; k++) {
            lo = mk_vf_sel(v[k] < lo, v[k], lo);
            hi = mk_vf_sel(v[k] > hi, v[k], hi);
        }
        float mn = mk_vf_hmin(lo), mx = mk_vf_hmax(hi);
        float d = (mx - mn) / (five ? 31.0f : 15.0f), id = d != 0 ? 1.0f / d : 0.0f;
        for (int k = 0; k < 4; k++) {
            mk_vi t = v_trunc((v[k] - mn) * id + 0.5f);
            q[k] = five ? t & 0xff : v_int8_min(t, 15);
        }
        put_h(b, d);
        put_h(b + 2, mn);
        if (five) v_pack_qh(b + 4, q);
        v_pack4(b + (five ? 8 : 4), q);
    }
}

/* ---- ternary 256-value blocks: d = max |x|, each value -1, 0 or +1 (stored + 1) ---- */

static float ternary(const float *x, uint8_t q[256])
{
    float amax = 0;
    for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[j]));
    float id = amax != 0 ? 1.0f / amax : 0.0f;
    for (int j = 0; j < 256; j++) q[j] = (uint8_t)(lroundf(x[j] * id) + 1);
    return amax;
}

/* TQ1_0: 5 trits a byte (q0 x 81 + q1 x 27 + ... + q4) for values 0..239 (bytes 0..31 take
 * values j, j + 32, ..., j + 128; bytes 32..47 take 160 + j, 176 + j, ...), 4 trits a byte for
 * 240..255, each sum scaled to a byte as (s x 256 + 242) / 243. */
static void tq1_0(const float *x, uint8_t *b)
{
    uint8_t q[256];
    float d = ternary(x, q);
    static const int groups[3][3] = {{0, 32, 5}, {160, 16, 5}, {240, 4, 4}}; /* first value, bytes, trits a byte */
    int k = 0;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < groups[g][1]; j++) {
            unsigned v = 0;
            for (int n = 0; n < groups[g][2]; n++) v = v * 3 + q[groups[g][0] + n * groups[g][1] + j];
            if (groups[g][2] == 4) v *= 3;
            b[k++] = (uint8_t)((v * 256 + 242) / 243);
        }
    put_h(b + 52, d);
}

/* TQ2_0: 2 bits a value; byte 32 g + j holds values 128 g + j + 32 n at bits 2 n */
static void tq2_0(const float *x, uint8_t *b)
{
    uint8_t q[256];
    float d = ternary(x, q);
    for (int g = 0; g < 2; g++)
        for (int j = 0; j < 32; j++)
            b[32 * g + j] = (uint8_t)(q[128 * g + j] | q[128 * g + 32 + j] << 2 | q[128 * g + 64 + j] << 4 | q[128 * g + 96 + j] << 6);
    put_h(b + 64, d);
}

bool mk_ggml_encode(uint32_t type, const float *src, uint64_t nblocks, void *dst)
{
    switch (type) {
    case MK_GGML_Q8_0: rows_q8_0(src, nblocks, dst); return true;
    case MK_GGML_Q4_0: case MK_GGML_Q5_0: rows_qx_0(src, nblocks, dst, type == MK_GGML_Q5_0); return true;
    case MK_GGML_Q4_1: case MK_GGML_Q5_1: rows_qx_1(src, nblocks, dst, type == MK_GGML_Q5_1); return true;
    default: return mk_ggml_encode_ref(type, src, nblocks, dst);
    }
}

bool mk_ggml_encode_ref(uint32_t type, const float *src, uint64_t nblocks, void *dst)
{
    void (*f)(const float *, uint8_t *);
    switch (type) {
    case MK_GGML_Q8_0: f = q8_0; break;
    case MK_GGML_Q4_0: f = q4_0; break;
    case MK_GGML_Q4_1: f = q4_1; break;
    case MK_GGML_Q5_0: f = q5_0; break;
    case MK_GGML_Q5_1: f = q5_1; break;
    case MK_GGML_TQ1_0: f = tq1_0; break;
    case MK_GGML_TQ2_0: f = tq2_0; break;
    case MK_GGML_Q2_K: case MK_GGML_Q3_K: case MK_GGML_Q4_K: case MK_GGML_Q5_K: case MK_GGML_Q6_K: case MK_GGML_IQ4_NL:
        return mk_ggml_kquant_encode(type, src, nblocks, dst);
    case MK_GGML_F32: memcpy(dst, src, (size_t)nblocks * 4); return true;
    case MK_GGML_F16:
    case MK_GGML_BF16:
        for (uint64_t i = 0; i < nblocks; i++) {
            uint16_t h = type == MK_GGML_F16 ? mk_f32_to_f16(src[i]) : mk_f32_to_bf16(src[i]);
            ((uint8_t *)dst)[2 * i] = (uint8_t)h;
            ((uint8_t *)dst)[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return true;
    default: return false;
    }
    const mk_ggml_type *t = mk_ggml_type_of(type);
    uint8_t *out = dst;
    for (uint64_t i = 0; i < nblocks; i++) f(src + i * t->block, out + i * t->bytes);
    return true;
}

bool mk_ggml_encodable(uint32_t type)
{
    switch (type) {
    case MK_GGML_F32: case MK_GGML_F16: case MK_GGML_BF16: case MK_GGML_Q8_0:
    case MK_GGML_Q4_0: case MK_GGML_Q4_1: case MK_GGML_Q5_0: case MK_GGML_Q5_1: case MK_GGML_TQ1_0: case MK_GGML_TQ2_0:
    case MK_GGML_Q2_K: case MK_GGML_Q3_K: case MK_GGML_Q4_K: case MK_GGML_Q5_K: case MK_GGML_Q6_K: case MK_GGML_IQ4_NL: return true;
    default: return false;
    }
}
