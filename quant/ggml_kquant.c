/* ggml_kquant.c - see ggml_kquant.h. Each super-block of 256 values is cut into groups (16 of
 * 16 values for Q2_K, Q3_K and Q6_K; 8 of 32 for Q4_K and Q5_K); each group gets its own scale
 * (and minimum, for Q2_K / Q4_K / Q5_K) by a small least-squares search; the group scales are
 * then themselves quantized against one f16 super-scale, and the values re-quantized with the
 * scales as they will be decoded. Block layouts: ggml-common.h (block_q2_K ... block_q6_K),
 * the same that quant/ggml.c decodes. Every f32 operation is written in llama.cpp's order, so
 * the bytes are its bytes (the build's -ffp-contract=off keeps products and sums apart). */
#include "ggml_kquant.h"

#include "../core/mk_dtype.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define QK_K 256
#define ZERO_GROUP 1e-15f /* a group whose largest magnitude is below this is all zeros */

/* Round to nearest, ties to even, by adding 1.5 x 2^23 and reading the low mantissa bits:
 * exact for |f| < 2^22, and for larger, infinite or NaN f the same (meaningless) integer
 * llama.cpp's rounding gives, so that even such blocks come out the same. */
static inline int round_k(float f)
{
    float v = f + 12582912.0f;
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (int)(u & 0x7fffffu) - 0x400000;
}

static inline int clamp_i(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* store f as f16 (little-endian) and return the value it decodes to */
static inline float put_f16(uint8_t *p, float f)
{
    uint16_t h = mk_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
    return mk_f16_to_f32(h);
}

/* Four groups of 32 2-bit codes from L[128 h ...] into 32 bytes, code 32 k + l at bits 2 k of
 * byte l: Q2_K's and Q3_K's low bits. */
static void pack2(const uint8_t *L, uint8_t *q)
{
    for (int h = 0; h < QK_K / 128; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *c = L + 128 * h + l;
            q[32 * h + l] = (uint8_t)(c[0] | c[32] << 2 | c[64] << 4 | c[96] << 6);
        }
}

/* ---- the group fits ---------------------------------------------------------------------- */

/* x[0..n) ~ scale x L - m, L in 0..nmax, m >= 0 (make_qkx2_quants): start from the range
 * [min(x, 0), max x], then try nstep + 1 widened or narrowed grids (rmin + rdelta x step
 * extra levels), each with the weighted least-squares scale and offset for its codes, and
 * keep the one of least weighted error (absolute with mad, else squared). Returns the scale,
 * *m_out = m; L holds the codes. */
static float fit_offset(int n, int nmax, const float *x, const float *w, uint8_t *L, float *m_out, float rmin, float rdelta,
                        int nstep, bool mad)
{
    float lo = x[0], hi = x[0], sw = w[0], sx = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        sx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *m_out = -lo;
        return 0;
    }
    float iscale = (float)nmax / (hi - lo), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_i(round_k(iscale * (x[i] - lo)), 0, nmax);
        float e = scale * L[i] + lo - x[i];
        best += w[i] * (mad ? fabsf(e) : e * e);
    }
    uint8_t cand[32];
    for (int step = 0; step <= nstep; step++) {
        iscale = (rmin + rdelta * (float)step + (float)nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_i(round_k(iscale * (x[i] - lo)), 0, nmax);
            cand[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (!(det > 0)) continue;
        float s = (sw * sxl - sx * sl) / det, m = (sl2 * sx - sl * sxl) / det;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = s * cand[i] + m - x[i];
            err += w[i] * (mad ? fabsf(e) : e * e);
        }
        if (err < best) {
            memcpy(L, cand, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *m_out = -lo;
    return scale;
}

/* x[0..n) ~ scale x (L - nmax), L in 0..2 nmax - 1, weights x^2 (make_qx_quants, rmse 1):
 * the grid through the largest magnitude, then 18 grids of nmax -+ 0.1 k levels, keeping the
 * least-squares scale of greatest explained energy. Returns the scale (0: all zeros). */
static float fit_sym(int n, int nmax, const float *x, int8_t *L)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < ZERO_GROUP) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = (float)-nmax / max, slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_i(round_k(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    float scale = sl2 != 0 ? slx / sl2 : 0, best = scale * slx;
    int8_t cand[16];
    for (int k = -9; k <= 9; k++) {
        if (k == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)k) / max;
        float a = 0, b = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_i(round_k(iscale * x[i]), -nmax, nmax - 1);
            cand[i] = (int8_t)(l + nmax);
            float w = x[i] * x[i];
            a += w * x[i] * (float)l;
            b += w * (float)l * (float)l;
        }
        if (b > 0 && a * a > best * b) {
            memcpy(L, cand, (size_t)n);
            scale = a / b;
            best = scale * a;
        }
    }
    return scale;
}

/* Q3_K's group fit (make_q3_quants with rmse): codes -4..3 on the grid through the largest
 * magnitude, then up to 5 passes moving single codes while the weighted (x^2) least-squares
 * fit improves. L gets the codes + 4. Returns the scale. */
static float fit_q3(const float *x, int8_t *L)
{
    float amax = 0, max = 0;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < ZERO_GROUP) {
        memset(L, 0, 16);
        return 0;
    }
    float iscale = -4.0f / max, slx = 0, sl2 = 0;
    for (int i = 0; i < 16; i++) {
        int l = clamp_i(round_k(iscale * x[i]), -4, 3);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    for (int pass = 0; pass < 5; pass++) {
        int moved = 0;
        for (int i = 0; i < 16; i++) {
            float w = x[i] * x[i], a = slx - w * x[i] * (float)L[i];
            if (!(a > 0)) continue;
            float b = sl2 - w * (float)L[i] * (float)L[i];
            int l = clamp_i(round_k(x[i] * b / a), -4, 3);
            if (l == L[i]) continue;
            a += w * x[i] * (float)l;
            b += w * (float)l * (float)l;
            if (b > 0 && a * a * sl2 > slx * slx * b) {
                L[i] = (int8_t)l;
                slx = a;
                sl2 = b;
                moved++;
            }
        }
        if (!moved) break;
    }
    for (int i = 0; i < 16; i++) L[i] = (int8_t)(L[i] + 4);
    return sl2 > 0 ? slx / sl2 : 0;
}

/* ---- the block types --------------------------------------------------------------------- */

/* Q2_K (84 bytes): scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin. */
void mk_ggml_q2_k(const float *x, uint8_t *b)
{
    uint8_t L[QK_K], *sc = b, *qs = b + 16;
    float w[16], scale[16], min[16], maxs = 0, maxm = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
        scale[j] = fit_offset(16, 3, x + 16 * j, w, L + 16 * j, &min[j], -0.5f, 0.1f, 15, true);
        if (scale[j] > maxs) maxs = scale[j];
        if (min[j] > maxm) maxm = min[j];
    }
    float d, dm;
    if (maxs > 0) {
        float is = 15.0f / maxs;
        for (int j = 0; j < 16; j++) sc[j] = (uint8_t)round_k(is * scale[j]);
        d = put_f16(b + 80, maxs / 15.0f);
    } else {
        memset(sc, 0, 16);
        d = put_f16(b + 80, 0.0f);
    }
    if (maxm > 0) {
        float is = 15.0f / maxm;
        for (int j = 0; j < 16; j++) sc[j] |= (uint8_t)((unsigned)round_k(is * min[j]) << 4);
        dm = put_f16(b + 82, maxm / 15.0f);
    } else {
        dm = put_f16(b + 82, 0.0f);
    }
    for (int j = 0; j < 16; j++) {
        float dj = d * (float)(sc[j] & 0xf);
        if (dj == 0) continue;
        float mj = dm * (float)(sc[j] >> 4);
        for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)clamp_i(round_k((x[16 * j + l] + mj) / dj), 0, 3);
    }
    pack2(L, qs);
}

/* Q3_K (110 bytes): hmask[32] (bit k of byte l: the high bit of code 32 k + l), qs[64] (low 2
 * bits), scales[12] (16 6-bit signed scales + 32: low nibbles in bytes 0..7, high pairs in
 * 8..11), d. */
void mk_ggml_q3_k(const float *x, uint8_t *b)
{
    int8_t L[QK_K];
    uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    float scale[16], maxs = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scale[j] = fit_q3(x + 16 * j, L + 16 * j);
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            maxs = scale[j];
        }
    }
    memset(sc, 0, 12);
    float d;
    if (maxs != 0) {
        float iscale = -32.0f / maxs;
        for (int j = 0; j < 16; j++) {
            int8_t l = (int8_t)round_k(iscale * scale[j]);
            l = (int8_t)(clamp_i(l, -32, 31) + 32);
            if (j < 8) sc[j] = (uint8_t)(l & 0xf);
            else sc[j - 8] |= (uint8_t)((l & 0xf) << 4);
            sc[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        d = put_f16(b + 108, 1 / iscale);
    } else {
        d = put_f16(b + 108, 0.0f);
    }
    for (int j = 0; j < 16; j++) {
        int8_t s = (int8_t)(j < 8 ? sc[j] & 0xf : sc[j - 8] >> 4);
        s = (int8_t)((s | ((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32);
        float dj = d * (float)s;
        if (dj == 0) continue;
        for (int l = 0; l < 16; l++) L[16 * j + l] = (int8_t)(clamp_i(round_k(x[16 * j + l] / dj), -4, 3) + 4);
    }
    uint8_t low[QK_K];
    memset(hmask, 0, 32);
    for (int j = 0; j < QK_K; j++) {
        int l = L[j];
        if (l > 3) {
            hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            l -= 4;
        }
        low[j] = (uint8_t)l;
    }
    pack2(low, qs);
}

/* Q4_K and Q5_K's common part: 8 groups of 32 fitted with offsets, weights sqrt(mean x^2) +
 * |x|; the 6-bit group scales and minimums packed in b[4..16) (groups 0..3 in the low 6 bits
 * of bytes 0..3 and 4..7; groups 4..7 as nibbles in bytes 8..11 with their top 2 bits in the
 * top of bytes 0..7); d, dmin at b[0], b[2]; L the final codes 0..nmax. */
static void k_groups(const float *x, uint8_t *b, uint8_t *L, int nmax, float rmin, float rdelta, int nstep)
{
    float w[32], scale[8], min[8], maxs = 0, maxm = 0;
    uint8_t *s = b + 4;
    for (int j = 0; j < 8; j++) {
        const float *g = x + 32 * j;
        float s2 = 0;
        for (int l = 0; l < 32; l++) s2 += g[l] * g[l];
        float av = sqrtf(s2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av + fabsf(g[l]);
        scale[j] = fit_offset(32, nmax, g, w, L + 32 * j, &min[j], rmin, rdelta, nstep, false);
        if (scale[j] > maxs) maxs = scale[j];
        if (min[j] > maxm) maxm = min[j];
    }
    float is = maxs > 0 ? 63.0f / maxs : 0.0f, im = maxm > 0 ? 63.0f / maxm : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)round_k(is * scale[j]);
        lm[j] = (uint8_t)round_k(im * min[j]);
        if (ls[j] > 63) ls[j] = 63;
        if (lm[j] > 63) lm[j] = 63;
    }
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(ls[j] | (ls[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(lm[j] | (lm[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((ls[j + 4] & 0xf) | (lm[j + 4] & 0xf) << 4);
    }
    float d = put_f16(b, maxs / 63.0f), dm = put_f16(b + 2, maxm / 63.0f);
    for (int j = 0; j < 8; j++) {
        float dj = d * (float)ls[j];
        if (dj == 0) continue;
        float mj = dm * (float)lm[j];
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)clamp_i(round_k((x[32 * j + l] + mj) / dj), 0, nmax);
    }
}

/* Q4_K (144 bytes): d, dmin, scales[12], qs[128] (byte l of each 32: codes 64 k + l, + 32 high). */
void mk_ggml_q4_k(const float *x, uint8_t *b)
{
    uint8_t L[QK_K], *qs = b + 16;
    k_groups(x, b, L, 15, -1.0f, 0.1f, 20);
    for (int k = 0; k < QK_K / 64; k++)
        for (int l = 0; l < 32; l++) qs[32 * k + l] = (uint8_t)(L[64 * k + l] | L[64 * k + 32 + l] << 4);
}

/* Q5_K (176 bytes): d, dmin, scales[12], qh[32] (bit 2 k / 2 k + 1 of byte l: the fifth bit of
 * codes 64 k + l / 64 k + 32 + l), qs[128] as Q4_K's low nibbles. */
void mk_ggml_q5_k(const float *x, uint8_t *b)
{
    uint8_t L[QK_K], *qh = b + 16, *qs = b + 48;
    k_groups(x, b, L, 31, -0.5f, 0.1f, 15);
    memset(qh, 0, 32);
    for (int k = 0; k < QK_K / 64; k++)
        for (int l = 0; l < 32; l++) {
            int lo = L[64 * k + l], hi = L[64 * k + 32 + l];
            qh[l] |= (uint8_t)((lo >> 4) << (2 * k) | (hi >> 4) << (2 * k + 1));
            qs[32 * k + l] = (uint8_t)((lo & 0xf) | (hi & 0xf) << 4);
        }
}

/* Q6_K (210 bytes): ql[128] (low nibbles), qh[64] (top 2 bits), scales[16] (int8), d. Of each
 * 128 values h: ql[64 h + l] = codes l | l + 64 (nibbles), ql[64 h + 32 + l] = codes 32 + l |
 * 96 + l, qh[32 h + l] = the top bits of codes l, 32 + l, 64 + l, 96 + l. */
void mk_ggml_q6_k(const float *x, uint8_t *b)
{
    int8_t L[QK_K];
    float scale[16], maxs = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scale[j] = fit_sym(16, 32, x + 16 * j, L + 16 * j);
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            maxs = scale[j];
        }
    }
    if (amax < ZERO_GROUP) {
        memset(b, 0, 210);
        return;
    }
    uint8_t *ql = b, *qh = b + 128, *sc = b + 192;
    float iscale = -128.0f / maxs, d = put_f16(b + 208, 1 / iscale);
    for (int j = 0; j < 16; j++) {
        int v = round_k(iscale * scale[j]);
        sc[j] = (uint8_t)(int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; j++) {
        float dj = d * (float)(int8_t)sc[j];
        if (dj == 0) continue;
        for (int l = 0; l < 16; l++) L[16 * j + l] = (int8_t)(clamp_i(round_k(x[16 * j + l] / dj), -32, 31) + 32);
    }
    for (int h = 0; h < QK_K / 128; h++)
        for (int l = 0; l < 32; l++) {
            const int8_t *c = L + 128 * h + l;
            ql[64 * h + l] = (uint8_t)((c[0] & 0xf) | (c[64] & 0xf) << 4);
            ql[64 * h + 32 + l] = (uint8_t)((c[32] & 0xf) | (c[96] & 0xf) << 4);
            qh[32 * h + l] = (uint8_t)(c[0] >> 4 | (c[32] >> 4) << 2 | (c[64] >> 4) << 4 | (c[96] >> 4) << 6);
        }
}
