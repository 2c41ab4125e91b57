/* bnb.c - see bnb.h. References: reference/quantization-formats.md 1.1-1.6, 2, 8;
 * bitsandbytes 0.50.2 backends/default/ops.py (quantize_4bit, quantize_blockwise,
 * int8_vectorwise_quant) and functional.py (quantize_4bit with compress_statistics). */
#include "bnb.h"
#include "qvec.h"

#include "../core/mk_dtype.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

/* Index = code. NF4: create_normal_map(offset=0.9677083), reference 1.1. FP4: the
 * E2M1-style table divided by 12, reference 1.4; bitsandbytes 0.50.2 stores +0.0 at index
 * 8 (get_4bit_type), so we do too. */
const float mk_bnb4_code[2][16] = {
    {-0x1p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f, -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f,
     0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f, 0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1p+0f},
    {0.0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1p+0f, 0x1.555556p-2f, 0x1p-1f, 0x1.555556p-3f, 0x1p-2f, 0.0f,
     -0x1.555556p-8f, -0x1.555556p-1f, -0x1p+0f, -0x1.555556p-2f, -0x1p-1f, -0x1.555556p-3f, -0x1p-2f},
};

const float mk_bnb4_decode[2][16] = {
    {-0x1p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f, -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f,
     0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f, 0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1p+0f},
    {0.0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1p+0f, 0x1.555556p-2f, 0x1p-1f, 0x1.555556p-3f, 0x1p-2f, -0.0f,
     -0x1.555556p-8f, -0x1.555556p-1f, -0x1p+0f, -0x1.555556p-2f, -0x1p-1f, -0x1.555556p-3f, -0x1p-2f},
};

/* Codes in ascending order of value: the argsort bitsandbytes' torch backend uses to build
 * its midpoints (_get_4bit_quantize_bounds; for FP4 torch.argsort put +0.0 (code 0) before
 * the second zero, code 8). */
static const uint8_t code_order[2][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3},
};

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as bitsandbytes 0.50.2
 * builds it under torch 2.15 (x86-64): the table tools/gen-golden-quant.py dumps and
 * tests/unit/test_quant_golden.c checks. Reference 1.5.1 and Appendix A (an older torch
 * differs by one ulp in some entries; any table works as long as it is the one stored). */
const float mk_bnb_dynamic_map[256] = {
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f,
    -0x1.df999ap-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.cap-1f,
    -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f,
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f,
    -0x1.893334p-1f, -0x1.82p-1f, -0x1.7accccp-1f, -0x1.73999ap-1f,
    -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f,
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f,
    -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f,
    -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f,
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f,
    -0x1.b8ccccp-2f, -0x1.aa6666p-2f, -0x1.9cp-2f, -0x1.8d9998p-2f,
    -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f,
    -0x1.0cp-2f, -0x1.fb3332p-3f, -0x1.de6666p-3f, -0x1.c1999ap-3f,
    -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f,
    -0x1.93d70ap-4f, -0x1.8851eep-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f,
    -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f,
    -0x1.09999ap-4f, -0x1.fc28f6p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f,
    -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f, -0x1.a147aep-6f, -0x1.733334p-6f,
    -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f,
    -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f,
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f,
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f, -0x1.3dd982p-11f,
    -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f,
    -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0.0f,
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f,
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f,
    0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f,
    0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f,
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f,
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451ebap-6f, 0x1.733334p-6f,
    0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f,
    0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f,
    0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f,
    0x1.4eb854p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f,
    0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f,
    0x1.6b3334p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f,
    0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f,
    0x1.626666p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f,
    0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f,
    0x1.079998p-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f,
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f,
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f,
    0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f,
    0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f,
    0x1.b46666p-1f, 0x1.bb999ap-1f, 0x1.c2ccccp-1f, 0x1.cap-1f,
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f,
};

/* ---- 4-bit ---------------------------------------------------------------------------- */

/* Midpoints of consecutive sorted codes, computed in f32 as torch does ((a + b) / 2). */
static void bnb4_bounds(mk_bnb4_type t, float b[15])
{
    for (int k = 0; k < 15; k++) b[k] = (mk_bnb4_code[t][code_order[t][k]] + mk_bnb4_code[t][code_order[t][k + 1]]) / 2.0f;
}

static inline float clamp1(float s) { return s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s; }

/* torch.bucketize(s, bounds, right=False): the number of bounds strictly below s. */
static inline unsigned bucket(const float *b, unsigned nb, float s)
{
    unsigned c = 0;
    for (unsigned k = 0; k < nb; k++) c += b[k] < s;
    return c;
}

static inline void put_nibble(uint8_t *packed, size_t j, unsigned code)
{
    if (j & 1) packed[j / 2] = (uint8_t)(packed[j / 2] | code);
    else packed[j / 2] = (uint8_t)(code << 4);
}

/* The reference rules over f32 values or (xb) the bf16 bit patterns of a bf16 weight. */
static void bnb4_ref_x(mk_bnb4_type t, unsigned block, const void *x, bool xb, size_t n, float *absmax, uint8_t *packed)
{
    float b[15];
    bnb4_bounds(t, b);
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, bi++) {
        size_t len = n - b0 < block ? n - b0 : block;
        float am = 0.0f;
        for (size_t i = 0; i < len; i++) am = fabsf(mk_loadx1(x, b0 + i, xb)) > am ? fabsf(mk_loadx1(x, b0 + i, xb)) : am;
        float d = am < MK_BNB_ABSMAX_FLOOR ? MK_BNB_ABSMAX_FLOOR : am;
        bool full = len == block;
        absmax[bi] = full ? am : d;    /* the partial last block stores the clamped value */
        float inv = 1.0f / d;
        for (size_t i = 0; i < len; i++) {
            float v = mk_loadx1(x, b0 + i, xb);
            float s = full ? v * inv : v / d;
            put_nibble(packed, b0 + i, code_order[t][bucket(b, 15, clamp1(s))]);
        }
    }
    if (n & 1) put_nibble(packed, n, code_order[t][bucket(b, 15, 0.0f)]); /* torch pads with 0.0 */
}

void mk_bnb4_quantize_ref(mk_bnb4_type t, unsigned block, const float *x, size_t n, float *absmax, uint8_t *packed)
{
    bnb4_ref_x(t, block, x, false, n, absmax, packed);
}

/* Count of the 15 midpoints below each lane of s: the compare masks (-1 / 0) summed in
 * three chains, so the additions do not form one long dependency chain. */
MK_VINLINE void count15(const mk_vf *vb, const mk_vf *sp, mk_vi *out)
{
    const mk_vf s = *sp;
    mk_vi a = (mk_vi)(vb[0] < s), b = (mk_vi)(vb[1] < s), c = (mk_vi)(vb[2] < s);
    for (int k = 3; k < 15; k += 3) {
        a += (mk_vi)(vb[k] < s);
        b += (mk_vi)(vb[k + 1] < s);
        c += (mk_vi)(vb[k + 2] < s);
    }
    *out = -(a + b + c);
}

/* Two lanes of counts per byte, first in the high nibble: 8 counts -> 4 bytes (as a u32). */
MK_VINLINE uint32_t pack8(const mk_vi *cp)
{
    const mk_vi c = *cp;
    mk_vi p = (c << 4) | __builtin_shufflevector(c, c, 1, 0, 3, 2, 5, 4, 7, 6);
    typedef uint8_t vb32 __attribute__((vector_size(32)));
    vb32 bytes = (vb32)p;
    mk_vu8x4 b = __builtin_shufflevector(bytes, bytes, 0, 8, 16, 24);
    uint32_t w;
    memcpy(&w, &b, 4);
    return w;
}

/* The 4 bytes of 8 values: count the midpoints below each scaled value, pack. */
MK_VINLINE uint32_t encode8(const mk_vf *vb, const mk_vf *s)
{
    mk_vi c;
    count15(vb, s, &c);
    return pack8(&c);
}

/* Per-type tables for the fast path: the packed byte of two sorted-order counts mapped to
 * the byte of their codes (FP4's code order is not its value order), and each code byte's
 * two decoded values. */
typedef struct bnb4_tables {
    uint8_t code_byte[256];
    float pair[256][2];
} bnb4_tables;
static bnb4_tables tables4[2];
static pthread_once_t tables4_once = PTHREAD_ONCE_INIT;

static void tables4_build(void)
{
    for (int t = 0; t < 2; t++)
        for (int b = 0; b < 256; b++) {
            tables4[t].code_byte[b] = (uint8_t)(code_order[t][b >> 4] << 4 | code_order[t][b & 15]);
            tables4[t].pair[b][0] = mk_bnb4_decode[t][b >> 4];
            tables4[t].pair[b][1] = mk_bnb4_decode[t][b & 15];
        }
}

/* Full blocks [0, nfull) with 8-lane vectors (any x86-64 or other target): absmax, scale,
 * count the midpoints below, pack; the error sums decode the packed bytes through the pair
 * table. x: f32 values, or (xb) bf16 bit patterns widened in the loads. block % 16 == 0. */
MK_QKERNEL
static void bnb4_full_vec(mk_bnb4_type t, unsigned block, const void *x, bool xb, size_t nfull, float *absmax, uint8_t *packed,
                          const float *dec_absmax, mk_qerr *err)
{
    const bnb4_tables *tb = &tables4[t];
    float b[15];
    bnb4_bounds(t, b);
    mk_vf vb[15];
    for (int k = 0; k < 15; k++) vb[k] = mk_vf_set1(b[k]);
    mk_qacc acc;
    mk_qacc_init(&acc);
    for (size_t b0 = 0, bi = 0; b0 < nfull; b0 += block, bi++) {
        mk_vf m0 = mk_vf_set1(0.0f), m1 = m0;
        for (size_t i = b0; i < b0 + block; i += 16) {
            m0 = mk_vf_max(m0, mk_vf_abs(mk_vf_loadx(x, i, xb)));
            m1 = mk_vf_max(m1, mk_vf_abs(mk_vf_loadx(x, i + 8, xb)));
        }
        float am = mk_vf_hmax(mk_vf_max(m0, m1));
        absmax[bi] = am;
        const mk_vf inv = mk_vf_set1(1.0f / (am < MK_BNB_ABSMAX_FLOOR ? MK_BNB_ABSMAX_FLOOR : am));
        const mk_vf dec = mk_vf_set1(dec_absmax ? dec_absmax[bi] : am);
        for (size_t i = b0; i < b0 + block; i += 16) {
            /* no clamp to [-1, 1] as in the reference: every midpoint is inside, so the
             * count of midpoints below is the same */
            mk_vf x0 = mk_vf_loadx(x, i, xb), x1 = mk_vf_loadx(x, i + 8, xb);
            const mk_vf s0 = x0 * inv, s1 = x1 * inv;
            uint32_t w[2] = {encode8(vb, &s0), encode8(vb, &s1)};
            for (int h = 0; h < 2; h++) {
                if (t != MK_BNB_NF4) /* NF4 codes are the counts */
                    w[h] = (uint32_t)tb->code_byte[w[h] & 255] | (uint32_t)tb->code_byte[(w[h] >> 8) & 255] << 8 |
                           (uint32_t)tb->code_byte[(w[h] >> 16) & 255] << 16 | (uint32_t)tb->code_byte[w[h] >> 24] << 24;
                memcpy(packed + i / 2 + 4 * h, &w[h], 4);
            }
            if (err) {
                mk_vf v[2];
                for (int h = 0; h < 2; h++) { /* each byte's two values, 8 bytes at a time */
                    uint64_t q0, q1, q2, q3;
                    memcpy(&q0, tb->pair[w[h] & 255], 8);
                    memcpy(&q1, tb->pair[(w[h] >> 8) & 255], 8);
                    memcpy(&q2, tb->pair[(w[h] >> 16) & 255], 8);
                    memcpy(&q3, tb->pair[w[h] >> 24], 8);
                    v[h] = (mk_vf)(mk_vu64){q0, q1, q2, q3};
                }
                mk_qacc_add(&acc, x0, v[0] * dec);
                mk_qacc_add(&acc, x1, v[1] * dec);
            }
        }
        if (err) mk_qacc_flush(&acc, err);
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MK_NO_CLONES)
#define BNB4_AVX2 1
#include <immintrin.h>

/* The AVX2 path's constants: per-level midpoint tables of a 4-step binary search (level 2:
 * b[3], b[11]; level 3: b[1 + 4j]; level 4: b[2j]; level 1 is b[7] alone), the decoded
 * value of each count (sorted order, halves 0-7 and 8-15), and count -> code bytes. */
typedef struct bnb4_avx2_k {
    float lv2[8], lv3[8], lv4[8], mid7, dec_lo[8], dec_hi[8];
    uint8_t order[32]; /* code_order twice (one copy per 128-bit lane) */
} bnb4_avx2_k;

static void bnb4_avx2_consts(mk_bnb4_type t, bnb4_avx2_k *k)
{
    float b[15];
    bnb4_bounds(t, b);
    memset(k, 0, sizeof *k);
    for (int j = 0; j < 8; j++) {
        k->lv2[j] = b[3 + 8 * (j & 1)];
        k->lv3[j] = b[1 + 4 * (j & 3)];
        k->lv4[j] = b[2 * j];
        k->dec_lo[j] = mk_bnb4_decode[t][code_order[t][j]];
        k->dec_hi[j] = mk_bnb4_decode[t][code_order[t][8 + j]];
    }
    k->mid7 = b[7];
    for (int j = 0; j < 32; j++) k->order[j] = code_order[t][j & 15];
}

/* The number of midpoints strictly below each lane of s, by binary search over the sorted
 * midpoints: the same count as 15 compares, since they are sorted (FP4's two equal ones
 * included: a count of those below is a lower bound search either way). */
__attribute__((target("avx2"), always_inline)) static inline __m256i bnb4_count_avx2(const __m256 s, const __m256 m7, const __m256 l2,
                                                                                   const __m256 l3, const __m256 l4)
{
    __m256i j = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cmp_ps(m7, s, _CMP_LT_OQ)), 31);
    __m256i m = _mm256_castps_si256(_mm256_cmp_ps(_mm256_permutevar8x32_ps(l2, j), s, _CMP_LT_OQ));
    j = _mm256_sub_epi32(_mm256_add_epi32(j, j), m);
    m = _mm256_castps_si256(_mm256_cmp_ps(_mm256_permutevar8x32_ps(l3, j), s, _CMP_LT_OQ));
    j = _mm256_sub_epi32(_mm256_add_epi32(j, j), m);
    m = _mm256_castps_si256(_mm256_cmp_ps(_mm256_permutevar8x32_ps(l4, j), s, _CMP_LT_OQ));
    return _mm256_sub_epi32(_mm256_add_epi32(j, j), m);
}

/* 8 values from element i: f32, or bf16 bit patterns widened. */
__attribute__((target("avx2"), always_inline)) static inline __m256 bnb4_load_avx2(const void *x, size_t i, bool xb)
{
    if (!xb) return _mm256_loadu_ps((const float *)x + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)x + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Max |x| over a block: on the bf16 bits as integers (the order of finite magnitudes). */
__attribute__((target("avx2"), always_inline)) static inline float bnb4_absmax_avx2(const void *x, size_t b0, unsigned block, bool xb)
{
    if (xb) {
        const uint16_t *h = (const uint16_t *)x + b0;
        const __m256i mag = _mm256_set1_epi16(0x7fff);
        __m256i m = _mm256_setzero_si256();
        for (size_t i = 0; i < block; i += 16)
            m = _mm256_max_epu16(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(h + i)), mag));
        __m128i r = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        r = _mm_max_epu16(r, _mm_srli_si128(r, 8));
        r = _mm_max_epu16(r, _mm_srli_si128(r, 4));
        r = _mm_max_epu16(r, _mm_srli_si128(r, 2));
        uint32_t u = (uint32_t)_mm_extract_epi16(r, 0) << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = m0;
    for (size_t i = b0; i < b0 + block; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_and_ps(_mm256_loadu_ps((const float *)x + i), mag));
        m1 = _mm256_max_ps(m1, _mm256_and_ps(_mm256_loadu_ps((const float *)x + i + 8), mag));
    }
    __m128 r = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    r = _mm_max_ps(r, _mm_max_ps(_mm256_castps256_ps128(m1), _mm256_extractf128_ps(m1, 1)));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_max_ss(r, _mm_movehdup_ps(r)));
}

/* 32 counts (c[0]: values 0-7, ...) to 16 bytes, first value of each pair in the high
 * nibble, FP4's counts mapped to codes. */
__attribute__((target("avx2"), always_inline)) static inline __m128i bnb4_pack_avx2(const __m256i c[4], bool map, __m256i order)
{
    /* bytes per 128-bit lane: lane 0 values 0-3 of each c, lane 1 values 4-7 */
    __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    if (map) b = _mm256_shuffle_epi8(order, b);
    __m256i w = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x0110)); /* 16 * first + second */
    __m256i r = _mm256_packus_epi16(w, w);
    return _mm_unpacklo_epi16(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

/* mk_qacc_flush's two sums, the same additions in the same order ((l0 + l1) + (l2 + l3)) +
 * ((l4 + l5) + (l6 + l7)) in f32, then to double, both at once: tot += {sum x2, sum e2}. */
__attribute__((target("avx2"), always_inline)) static inline __m128d bnb4_flush_avx2(__m128d tot, __m256 x2, __m256 e2)
{
    __m256 h = _mm256_hadd_ps(x2, e2); /* lane 0: x0+x1, x2+x3, e0+e1, e2+e3; lane 1: 4-7 */
    h = _mm256_hadd_ps(h, h);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    return _mm_add_pd(tot, _mm_cvtps_pd(s));
}

/* Full blocks [0, nfull) with AVX2 (block % 32 == 0): the same bytes and sums as
 * bnb4_full_vec; the codes by binary search, the error sums from the counts decoded with
 * two permutes of the code values times the decoding absmax (the same products), flushed
 * per block as there; the max error (exact in any order) once at the end. */
__attribute__((target("avx2"), always_inline)) static inline void bnb4_full_avx2_body(mk_bnb4_type t, unsigned block, const void *x,
                                                                                      bool xb, size_t nfull, float *absmax,
                                                                                      uint8_t *packed, const float *dec_absmax,
                                                                                      mk_qerr *err)
{
    bnb4_avx2_k k;
    bnb4_avx2_consts(t, &k);
    const __m256 m7 = _mm256_set1_ps(k.mid7), l2 = _mm256_loadu_ps(k.lv2), l3 = _mm256_loadu_ps(k.lv3), l4 = _mm256_loadu_ps(k.lv4);
    const __m256 dlo = _mm256_loadu_ps(k.dec_lo), dhi = _mm256_loadu_ps(k.dec_hi);
    const __m256i order = _mm256_loadu_si256((const __m256i *)(const void *)k.order);
    const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const bool map = t != MK_BNB_NF4; /* NF4 codes are the counts */
    __m128d tot = err ? _mm_set_pd(err->se2, err->sx2) : _mm_setzero_pd();
    __m256 emax = _mm256_setzero_ps();
    for (size_t b0 = 0, bi = 0; b0 < nfull; b0 += block, bi++) {
        float am = bnb4_absmax_avx2(x, b0, block, xb);
        absmax[bi] = am;
        const __m256 inv = _mm256_set1_ps(1.0f / (am < MK_BNB_ABSMAX_FLOOR ? MK_BNB_ABSMAX_FLOOR : am));
        const __m256 dec = _mm256_set1_ps(dec_absmax ? dec_absmax[bi] : am);
        const __m256 vlo = _mm256_mul_ps(dlo, dec), vhi = _mm256_mul_ps(dhi, dec);
        __m256 x2 = _mm256_setzero_ps(), e2 = x2;
        for (size_t i = b0; i < b0 + block; i += 32) {
            __m256i c[4];
#pragma GCC unroll 4
            for (int h = 0; h < 4; h++) {
                const __m256 xv = bnb4_load_avx2(x, i + 8 * (size_t)h, xb);
                c[h] = bnb4_count_avx2(_mm256_mul_ps(xv, inv), m7, l2, l3, l4);
                if (!err) continue;
                /* bit 3 of the count, moved to the sign, picks the half */
                __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(vlo, c[h]), _mm256_permutevar8x32_ps(vhi, c[h]),
                                            _mm256_castsi256_ps(_mm256_slli_epi32(c[h], 28)));
                __m256 d = _mm256_sub_ps(xv, v);
                x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv, xv));
                e2 = _mm256_add_ps(e2, _mm256_mul_ps(d, d));
                emax = _mm256_max_ps(emax, _mm256_and_ps(d, mag));
            }
            _mm_storeu_si128((__m128i *)(void *)(packed + i / 2), bnb4_pack_avx2(c, map, order));
        }
        if (err) tot = bnb4_flush_avx2(tot, x2, e2);
    }
    if (!err) return;
    _mm_storel_pd(&err->sx2, tot);
    _mm_storeh_pd(&err->se2, tot);
    float m = mk_vf_hmax((mk_vf)emax);
    if (m > err->maxe) err->maxe = m;
}

/* The body built once per input type, with and without the sums (no tests in its loops). */
__attribute__((target("avx2"))) static void bnb4_full_avx2(mk_bnb4_type t, unsigned block, const void *x, bool xb, size_t nfull,
                                                           float *absmax, uint8_t *packed, const float *dec_absmax, mk_qerr *err)
{
    if (xb && err) bnb4_full_avx2_body(t, block, x, true, nfull, absmax, packed, dec_absmax, err);
    else if (xb) bnb4_full_avx2_body(t, block, x, true, nfull, absmax, packed, dec_absmax, NULL);
    else if (err) bnb4_full_avx2_body(t, block, x, false, nfull, absmax, packed, dec_absmax, err);
    else bnb4_full_avx2_body(t, block, x, false, nfull, absmax, packed, dec_absmax, NULL);
}

static bool have_avx2(void)
{
    static int cached = -1; /* a benign race: every thread computes the same value */
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") != 0;
    }
    return cached;
}
#endif

void mk_bnb4_quantize_x(mk_bnb4_type t, unsigned block, const void *x, bool xb, size_t n, float *absmax, uint8_t *packed,
                        const float *dec_absmax, mk_qerr *err)
{
    pthread_once(&tables4_once, tables4_build);
    size_t full_end = block % 16 == 0 ? n / block * block : 0; /* lane groups never straddle blocks */
    size_t bi = full_end / block;
#ifdef BNB4_AVX2
    if (block % 32 == 0 && have_avx2()) bnb4_full_avx2(t, block, x, xb, full_end, absmax, packed, dec_absmax, err);
    else
#endif
        bnb4_full_vec(t, block, x, xb, full_end, absmax, packed, dec_absmax, err);
    if (full_end == n) return;
    bnb4_ref_x(t, block, xb ? (const void *)((const uint16_t *)x + full_end) : (const void *)((const float *)x + full_end), xb,
               n - full_end, absmax + bi, packed + full_end / 2);
    if (!err) return;
    mk_qacc acc;
    mk_qacc_init(&acc);
    for (size_t i = full_end; i < n; i++) {
        size_t blk = i / block;
        uint8_t byte = packed[i / 2];
        float v = mk_bnb4_decode[t][(i & 1) ? (byte & 15) : (byte >> 4)];
        mk_qacc_add1(&acc, mk_loadx1(x, i, xb), v * (dec_absmax ? dec_absmax[blk] : absmax[blk]));
    }
    mk_qacc_flush(&acc, err);
}

void mk_bnb4_quantize(mk_bnb4_type t, unsigned block, const float *x, size_t n, float *absmax, uint8_t *packed,
                      const float *dec_absmax, mk_qerr *err)
{
    mk_bnb4_quantize_x(t, block, x, false, n, absmax, packed, dec_absmax, err);
}

void mk_bnb4_absmax(unsigned block, const float *x, size_t n, float *absmax)
{
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, bi++) {
        size_t len = n - b0 < block ? n - b0 : block;
        float am = 0.0f;
        for (size_t i = 0; i < len; i++) am = fabsf(x[b0 + i]) > am ? fabsf(x[b0 + i]) : am;
        absmax[bi] = len == block ? am : (am < MK_BNB_ABSMAX_FLOOR ? MK_BNB_ABSMAX_FLOOR : am);
    }
}

void mk_bnb4_codes(mk_bnb4_type t, const uint8_t *packed, uint64_t e0, size_t n, float *out)
{
    const float *code = mk_bnb4_decode[t];
    for (size_t j = 0; j < n; j++) {
        uint64_t e = e0 + j;
        uint8_t byte = packed[e / 2 - e0 / 2];
        out[j] = code[(e & 1) ? (byte & 15) : (byte >> 4)];
    }
}

void mk_bnb4_dequant(mk_bnb4_type t, unsigned block, const uint8_t *packed, const float *absmax, uint64_t e0, size_t n,
                     float *out)
{
    mk_bnb4_codes(t, packed, e0, n, out);
    uint64_t b0 = e0 / block;
    for (size_t j = 0; j < n; j++) out[j] = out[j] * absmax[(e0 + j) / block - b0];
}

/* ---- double quant (nested absmax) --------------------------------------------------------- */

float mk_bnb_absmax_mean(const float *absmax, size_t nb)
{
    double s = 0;
    for (size_t i = 0; i < nb; i++) s += absmax[i];
    return nb ? (float)(s / (double)nb) : 0.0f;
}

/* Number of the 255 dynamic-map midpoints strictly below s (binary search). */
static unsigned dyn_bucket(const float *mid, float s)
{
    unsigned lo = 0, hi = 255; /* answer in [lo, hi] */
    while (lo < hi) {
        unsigned m = (lo + hi) / 2;
        if (mid[m] < s) lo = m + 1;
        else hi = m;
    }
    return lo;
}

static void dyn_bounds(float mid[255])
{
    for (int k = 0; k < 255; k++) mid[k] = (mk_bnb_dynamic_map[k] + mk_bnb_dynamic_map[k + 1]) / 2.0f;
}

void mk_bnb_nested_quantize_ref(const float *absmax, size_t nb, float offset, uint8_t *q, float *nested_absmax)
{
    float mid[255];
    dyn_bounds(mid);
    for (size_t b0 = 0, j = 0; b0 < nb; b0 += MK_BNB_NESTED_BLOCK, j++) {
        size_t len = nb - b0 < MK_BNB_NESTED_BLOCK ? nb - b0 : MK_BNB_NESTED_BLOCK;
        float am = 0.0f;
        for (size_t i = 0; i < len; i++) {
            float c = absmax[b0 + i] - offset;
            am = fabsf(c) > am ? fabsf(c) : am;
        }
        float d = am < MK_BNB_ABSMAX_FLOOR ? MK_BNB_ABSMAX_FLOOR : am;
        bool full = len == MK_BNB_NESTED_BLOCK;
        nested_absmax[j] = full ? am : d;
        float inv = 1.0f / d;
        for (size_t i = 0; i < len; i++) {
            float c = absmax[b0 + i] - offset;
            q[b0 + i] = (uint8_t)dyn_bucket(mid, clamp1(full ? c * inv : c / d));
        }
    }
}

/* The nested arrays are 1/64 of the weights or less: the reference is fast enough. */
void mk_bnb_nested_quantize(const float *absmax, size_t nb, float offset, uint8_t *q, float *nested_absmax)
{
    mk_bnb_nested_quantize_ref(absmax, nb, offset, q, nested_absmax);
}

void mk_bnb_nested_dequant(const uint8_t *q, const float *nested_absmax, float offset, uint64_t b0, size_t n, float *out)
{
    for (size_t j = 0; j < n; j++) {
        uint64_t b = b0 + j;
        out[j] = mk_bnb_dynamic_map[q[b]] * nested_absmax[b / MK_BNB_NESTED_BLOCK] + offset;
    }
}

/* ---- LLM.int8 ------------------------------------------------------------------------------- */

static inline float f16_value(float x) { return mk_f16_to_f32(mk_f32_to_f16(x)); }

void mk_bnb_int8_quantize_ref(const float *x, size_t rows, size_t cols, int8_t *q, float *scb)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float am = 0.0f;
        for (size_t c = 0; c < cols; c++) am = fabsf(f16_value(xr[c])) > am ? fabsf(f16_value(xr[c])) : am;
        scb[r] = am;
        /* torch evaluates 127.0 / tensor as reciprocal(tensor) * 127: two roundings. Inf for
         * a zero row: 0 * Inf = NaN, which torch casts to 0 */
        float mul = (1.0f / am) * 127.0f;
        for (size_t c = 0; c < cols; c++) {
            float v = f16_value(xr[c]) * mul;
            q[r * cols + c] = v != v ? 0 : (int8_t)rintf(v);
        }
    }
}

/* The f16 value of a bf16 value (finite, below 65520) as f32: bf16's 8 significant bits
 * fit f16's 11 in its normal range, so only |x| < 2^-14 rounds (to f16's subnormal step
 * 2^-24), by adding and removing 0.5 as mk_vf_round_f16 does there: the same values. */
#define vf_round_f16_of_bf16(x)                                                          \
    ({                                                                                   \
        const mk_vf rb_x_ = (x), rb_a_ = mk_vf_abs(rb_x_);                                \
        const mk_vf rb_s_ = (mk_vf)((mk_vu)((rb_a_ + mk_vf_set1(0.5f)) - mk_vf_set1(0.5f)) | ((mk_vu)rb_x_ & 0x80000000u)); \
        mk_vf_sel(rb_a_ < mk_vf_set1(0x1p-14f), rb_s_, rb_x_);                           \
    })
#define vf_round_f16x(x, xb) ((xb) ? vf_round_f16_of_bf16(x) : mk_vf_round_f16(x))

/* The codes of the first c8 values of a row (and their error sums), the values rounded to
 * f16 first (round) or not. */
MK_VINLINE void int8_codes(const void *x, bool xb, bool round, size_t c8, float mul, float am, int8_t *qr, mk_qacc *acc,
                           mk_qerr *err)
{
    const mk_vf vmul = mk_vf_set1(mul), vs = mk_vf_set1(am), vi = mk_vf_set1((float)7.874015718698502e-3);
    for (size_t c = 0; c < c8; c += 8) {
        mk_vf xv = mk_vf_loadx(x, c, xb);
        mk_vf rq = mk_vf_rint_small((round ? vf_round_f16x(xv, xb) : xv) * vmul);
        mk_vu_store_u8((uint8_t *)qr + c, (mk_vu)__builtin_convertvector(rq, mk_vi));
        if (err) mk_qacc_add(acc, xv, (rq * vs) * vi);
    }
}

/* One row of cols values at x (f32, or xb: bf16 bit patterns, widened in the loads). The
 * absmax of the f16 values is the f16 value of the absmax (rounding is monotonic and odd). */
MK_VINLINE void int8_row(const void *x, bool xb, size_t cols, int8_t *qr, float *scb, mk_qacc *acc, mk_qerr *err)
{
    const float inv127 = (float)7.874015718698502e-3;
    size_t c8 = cols / 8 * 8;
    mk_vf vm = mk_vf_set1(0.0f);
    for (size_t c = 0; c < c8; c += 8) vm = mk_vf_max(vm, mk_vf_abs(mk_vf_loadx(x, c, xb)));
    float am = f16_value(mk_vf_hmax(vm));
    for (size_t c = c8; c < cols; c++) am = fabsf(f16_value(mk_loadx1(x, c, xb))) > am ? fabsf(f16_value(mk_loadx1(x, c, xb))) : am;
    *scb = am;
    if (am == 0.0f) {
        memset(qr, 0, cols);
        for (size_t c = 0; err && c < cols; c++) mk_qacc_add1(acc, mk_loadx1(x, c, xb), 0.0f);
        if (err) mk_qacc_flush(acc, err);
        return;
    }
    const float mul = (1.0f / am) * 127.0f; /* as the reference */
    /* bf16 values change in f16 only below 2^-17 (where their step is finer than f16's
     * 2^-24), to at most 2^-17 in magnitude; with am >= 2^-8, such a value times mul
     * (127 / am, rounded twice) is below 0.25 rounded or not: code 0 either way, and the
     * error sums read x itself. So such rows skip the rounding. */
    if (xb && am >= 0x1p-8f) int8_codes(x, true, false, c8, mul, am, qr, acc, err);
    else if (xb) int8_codes(x, true, true, c8, mul, am, qr, acc, err);
    else int8_codes(x, false, true, c8, mul, am, qr, acc, err);
    for (size_t c = c8; c < cols; c++) {
        float xc = mk_loadx1(x, c, xb), rq = mk_rint_small(f16_value(xc) * mul);
        qr[c] = (int8_t)rq;
        if (err) mk_qacc_add1(acc, xc, (rq * am) * inv127);
    }
    if (err) mk_qacc_flush(acc, err);
}

MK_QKERNEL
void mk_bnb_int8_quantize_x(const void *x, bool xb, size_t rows, size_t cols, int8_t *q, float *scb, mk_qerr *err)
{
    mk_qacc acc;
    mk_qacc_init(&acc);
    for (size_t r = 0; r < rows; r++) { /* the row loop built once per input type */
        if (xb) int8_row((const uint16_t *)x + r * cols, true, cols, q + r * cols, scb + r, &acc, err);
        else int8_row((const float *)x + r * cols, false, cols, q + r * cols, scb + r, &acc, err);
    }
}

void mk_bnb_int8_quantize(const float *x, size_t rows, size_t cols, int8_t *q, float *scb, mk_qerr *err)
{
    mk_bnb_int8_quantize_x(x, false, rows, cols, q, scb, err);
}

void mk_bnb_int8_dequant(const int8_t *q, const float *scb, size_t rows, size_t cols, float *out)
{
    const float inv127 = (float)7.874015718698502e-3; /* the literal bnb multiplies by */
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) out[r * cols + c] = ((float)q[r * cols + c] * scb[r]) * inv127;
}
