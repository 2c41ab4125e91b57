/* ggml.c - see ggml.h. Block layouts: ggml/src/ggml-common.h; value order and arithmetic:
 * dequantize_row_* in ggml/src/ggml-quants.c. Every block is read byte by byte
 * (little-endian), so no alignment of src is assumed. */
#include "ggml.h"

#include "../core/mk_dtype.h"
#include "../model/gguf_names.h"

#include <string.h>

#define QK_K 256

static inline float h2f(const uint8_t *p) { return mk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* IQ4_NL's non-linear code book (kvalues_iq4nl, ggml-common.h) */
static const int8_t kv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* MXFP4: e2m1 values doubled (kvalues_mxfp4); the scale is halved to match */
static const int8_t kv_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* ---- 32-value blocks ---- */

static void q4_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 0xf) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

static void q4_1(const uint8_t *b, float *y)
{
    float d = h2f(b), m = h2f(b + 2);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b[4 + j] & 0xf) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

static void q5_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    uint32_t qh = rd32(b + 2);
    for (int j = 0; j < 16; j++) {
        int x0 = (b[6 + j] & 0xf) | (int)((qh >> j) & 1) << 4;
        int x1 = (b[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(x0 - 16) * d;
        y[j + 16] = (float)(x1 - 16) * d;
    }
}

static void q5_1(const uint8_t *b, float *y)
{
    float d = h2f(b), m = h2f(b + 2);
    uint32_t qh = rd32(b + 4);
    for (int j = 0; j < 16; j++) {
        int x0 = (b[8 + j] & 0xf) | (int)((qh >> j) & 1) << 4;
        int x1 = (b[8 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)x0 * d + m;
        y[j + 16] = (float)x1 * d + m;
    }
}

static void q8_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void iq4_nl(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)kv_iq4nl[b[2 + j] & 0xf];
        y[j + 16] = d * (float)kv_iq4nl[b[2 + j] >> 4];
    }
}

/* ggml_e8m0_to_fp32_half: 2^(e - 128), as the bits of an f32 (subnormal for e < 2) */
static float e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void mxfp4(const uint8_t *b, float *y)
{
    float d = e8m0_half(b[0]);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)kv_mxfp4[b[1 + j] & 0xf] * d;
        y[j + 16] = (float)kv_mxfp4[b[1 + j] >> 4] * d;
    }
}

/* ---- 256-value k-quants ---- */

static void q2_k(const uint8_t *b, float *y)
{
    const uint8_t *sc = b, *q = b + 16;
    float d = h2f(b + 80), dmin = h2f(b + 82);
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int half = 0; half < 2; half++, is++) {
                float dl = d * (float)(sc[is] & 0xf), ml = dmin * (float)(sc[is] >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
            }
}

/* Q3_K: 16 six-bit scales, low nibbles in bytes 0..7, high pairs in bytes 8..11 */
static void q3_k_scales(const uint8_t *s, int8_t out[16])
{
    for (int i = 0; i < 16; i++) {
        int lo = (s[i % 8] >> (4 * (i / 8))) & 0xf;
        int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = (int8_t)((lo | hi << 4) - 32);
    }
}

static void q3_k(const uint8_t *b, float *y)
{
    const uint8_t *hm = b, *q = b + 32;
    float d = h2f(b + 108);
    int8_t sc[16];
    q3_k_scales(b + 96, sc);
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
            for (int half = 0; half < 2; half++, is++) {
                float dl = d * (float)sc[is];
                for (int l = 0; l < 16; l++) {
                    int k = l + 16 * half;
                    *y++ = dl * (float)(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                }
            }
}

/* get_scale_min_k4: eight 6-bit scale/min pairs in 12 bytes */
static void k4_scale_min(int j, const uint8_t *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void q4_k(const uint8_t *b, float *y)
{
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        int sc, mn;
        k4_scale_min(is, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        k4_scale_min(is + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xf) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

static void q5_k(const uint8_t *b, float *y)
{
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
        int sc, mn;
        k4_scale_min(is, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        k4_scale_min(is + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
}

static void q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = ((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
}

static void iq4_xs(const uint8_t *b, float *y)
{
    float d = h2f(b);
    unsigned sh = (unsigned)b[2] | (unsigned)b[3] << 8;
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int ib = 0; ib < QK_K / 32; ib++, qs += 16, y += 32) {
        int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xf) | (int)((sh >> (2 * ib)) & 3) << 4;
        float dl = d * (float)(ls - 32);
        for (int j = 0; j < 16; j++) {
            y[j] = dl * (float)kv_iq4nl[qs[j] & 0xf];
            y[j + 16] = dl * (float)kv_iq4nl[qs[j] >> 4];
        }
    }
}

/* TQ1_0: base-3 digits, five to a byte (four in qh), stored as ceil(v * 256 / 243); digit
 * n of byte q is the top of (q * 3^n mod 256) * 3 / 256. */
static float trit(uint8_t q, int n)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t v = (uint8_t)(q * pow3[n]);
    return (float)((int)(((uint16_t)v * 3) >> 8) - 1);
}

static void tq1_0(const uint8_t *b, float *y)
{
    const uint8_t *qs = b, *qh = b + 48;
    float d = h2f(b + 52);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) *y++ = trit(qs[m], n) * d;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) *y++ = trit(qs[32 + m], n) * d;
    for (int n = 0; n < 4; n++)
        for (int m = 0; m < 4; m++) *y++ = trit(qh[m], n) * d;
}

static void tq2_0(const uint8_t *b, float *y)
{
    float d = h2f(b + 64);
    for (int j = 0; j < 64; j += 32)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++) *y++ = (float)((int)((b[j + m] >> (2 * l)) & 3) - 1) * d;
}

typedef void (*block_fn)(const uint8_t *b, float *y);

static block_fn fn_of(uint32_t type)
{
    switch (type) {
    case MK_GGML_Q4_0: return q4_0;
    case MK_GGML_Q4_1: return q4_1;
    case MK_GGML_Q5_0: return q5_0;
    case MK_GGML_Q5_1: return q5_1;
    case MK_GGML_Q8_0: return q8_0;
    case MK_GGML_Q2_K: return q2_k;
    case MK_GGML_Q3_K: return q3_k;
    case MK_GGML_Q4_K: return q4_k;
    case MK_GGML_Q5_K: return q5_k;
    case MK_GGML_Q6_K: return q6_k;
    case MK_GGML_IQ4_NL: return iq4_nl;
    case MK_GGML_IQ4_XS: return iq4_xs;
    case MK_GGML_TQ1_0: return tq1_0;
    case MK_GGML_TQ2_0: return tq2_0;
    case MK_GGML_MXFP4: return mxfp4;
    default: return NULL;
    }
}

bool mk_ggml_decode(uint32_t type, const void *src, uint64_t nblocks, float *dst)
{
    const uint8_t *p = src;
    const mk_ggml_type *t = mk_ggml_type_of(type);
    if (!t || !t->decodable) return false;
    if (type == MK_GGML_F32) {
        memcpy(dst, src, (size_t)nblocks * 4);
        return true;
    }
    if (type == MK_GGML_F16 || type == MK_GGML_BF16) {
        for (uint64_t i = 0; i < nblocks; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = type == MK_GGML_F16 ? mk_f16_to_f32(h) : mk_bf16_to_f32(h);
        }
        return true;
    }
    block_fn f = fn_of(type);
    if (!f) return false;
    for (uint64_t i = 0; i < nblocks; i++) f(p + i * t->bytes, dst + i * t->block);
    return true;
}
