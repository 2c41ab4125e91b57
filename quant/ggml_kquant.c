/* ggml_kquant.c - see ggml_kquant.h. Each super-block of 256 values is cut into groups (16 of
 * 16 values for Q2_K, Q3_K and Q6_K; 8 of 32 for Q4_K and Q5_K); each group gets its own scale
 * (and minimum, for Q2_K / Q4_K / Q5_K) by a small least-squares search; the group scales are
 * then themselves quantized against one f16 super-scale, and the values re-quantized with the
 * scales as they will be decoded. Block layouts: ggml-common.h (block_q2_K ... block_q6_K),
 * the same that quant/ggml.c decodes. Every f32 operation is written in llama.cpp's order, so
 * the bytes are its bytes (the build's -ffp-contract=off keeps products and sums apart). */
#include "ggml_kquant.h"

#include "../core/mk_dtype.h"
#include "../model/gguf_names.h"
#include "ggml.h"
#include "qvec.h"

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
MK_VINLINE void pack2(const uint8_t *L, uint8_t *q)
{
    for (int h = 0; h < QK_K / 128; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *c = L + 128 * h + l;
            q[32 * h + l] = (uint8_t)(c[0] | c[32] << 2 | c[64] << 4 | c[96] << 6);
        }
}

/* ---- the group fits ---------------------------------------------------------------------- */

/* The group fits run on LANES groups at once, lane k being group k (values x[i * LANES + k]):
 * every lane does exactly the scalar f32 operations of its group in the scalar order (so the
 * bytes are the same), and the compiler can put the lanes in SIMD registers. Choices become
 * per-lane selects; lanes whose result is fixed early (flat or all-zero groups) are masked. */
#define LANES 16

/* value i of the 8 lanes from h (in the loops over the halves of the lanes) */
#define VLD(p, i) mk_vf_load((p) + (i) * LANES + h)
/* round_k of each lane */
#define VROUND(f) (((mk_vi)((f) + mk_vf_set1(12582912.0f)) & 0x7fffff) - 0x400000)
/* clamp_i of each lane */
#define VCLAMP(v, lo, hi)                                                                \
    ({                                                                                   \
        mk_vi c_ = (v), lo_ = mk_vi_set1(lo), hi_ = mk_vi_set1(hi), m_ = c_ < lo_;       \
        c_ = (c_ & ~m_) | (lo_ & m_);                                                    \
        m_ = c_ > hi_;                                                                   \
        (c_ & ~m_) | (hi_ & m_);                                                         \
    })

/* x ~ scale x L - m, L in 0..nmax, m >= 0 (make_qkx2_quants), n values a group: start from the
 * range [min(x, 0), max x], then try nstep + 1 widened or narrowed grids (rmin + rdelta x step
 * extra levels), each with the weighted least-squares scale and offset for its codes, and keep
 * the one of least weighted error (absolute with mad, else squared). scale[k], m[k] and the
 * codes L[i * LANES + k] per lane (those of the grid kept, recomputed at the end). */
MK_VINLINE void fit_offset(int n, int nmax, const float *x, const float *w, int32_t *L, float *scale_out, float *m_out, float rmin, float rdelta,
                           int nstep, bool mad)
{
    /* the two halves of the lanes side by side (H2: both), their sums in registers: each sum is
     * a chain of dependent additions, two independent chains keep the adder busier */
#define H2 _Pragma("GCC unroll 2") for (int g = 0; g < 2; g++)
    mk_vi cand[32][2];
    mk_vf lo[2], hi[2], sw[2], sx[2], lo0[2], best[2], best_is[2], best_lo[2], scale[2], zero = mk_vf_set1(0.0f), fmax = mk_vf_set1((float)nmax);
    int h;
    H2 {
        h = MK_VL * g;
        lo[g] = hi[g] = VLD(x, 0);
        sw[g] = VLD(w, 0);
        sx[g] = sw[g] * lo[g];
    }
    for (int i = 1; i < n; i++)
        H2 {
            h = MK_VL * g;
            mk_vf v = VLD(x, i), wi = VLD(w, i);
            lo[g] = mk_vf_sel(v < lo[g], v, lo[g]);
            hi[g] = mk_vf_sel(v > hi[g], v, hi[g]);
            sw[g] += wi;
            sx[g] += wi * v;
        }
    H2 {
        h = MK_VL * g;
        lo0[g] = lo[g] = best_lo[g] = mk_vf_sel(lo[g] > zero, zero, lo[g]);
        best_is[g] = fmax / (hi[g] - lo[g]);
        scale[g] = mk_vf_set1(1.0f) / best_is[g];
        best[g] = zero;
        for (int i = 0; i < n; i++) {
            mk_vf v = VLD(x, i), l = __builtin_convertvector(VCLAMP(VROUND(best_is[g] * (v - lo[g])), 0, nmax), mk_vf), e = scale[g] * l + lo[g] - v;
            best[g] += VLD(w, i) * (mad ? mk_vf_abs(e) : e * e);
        }
    }
    for (int step = 0; step <= nstep; step++) {
        mk_vf levels = mk_vf_set1(rmin + rdelta * (float)step + (float)nmax), is[2], sl[2], sl2[2], sxl[2], err[2], s[2], m[2];
        H2 {
            is[g] = levels / (hi[g] - lo[g]);
            sl[g] = sl2[g] = sxl[g] = err[g] = zero;
        }
        for (int i = 0; i < n; i++)
            H2 {
                h = MK_VL * g;
                mk_vf v = VLD(x, i), wi = VLD(w, i);
                cand[i][g] = VCLAMP(VROUND(is[g] * (v - lo[g])), 0, nmax);
                mk_vf l = __builtin_convertvector(cand[i][g], mk_vf);
                sl[g] += wi * l;
                sl2[g] += wi * l * l;
                sxl[g] += wi * l * v;
            }
        H2 {
            mk_vf det = sw[g] * sl2[g] - sl[g] * sl[g];
            s[g] = (sw[g] * sxl[g] - sx[g] * sl[g]) / det;
            m[g] = (sl2[g] * sx[g] - sl[g] * sxl[g]) / det;
            mk_vi pos = m[g] > zero;
            s[g] = mk_vf_sel(pos, sxl[g] / sl2[g], s[g]);
            m[g] = mk_vf_sel(pos, zero, m[g]);
            sl[g] = det; /* kept for the choice below */
        }
        for (int i = 0; i < n; i++)
            H2 {
                h = MK_VL * g;
                mk_vf e = s[g] * __builtin_convertvector(cand[i][g], mk_vf) + m[g] - VLD(x, i);
                err[g] += VLD(w, i) * (mad ? mk_vf_abs(e) : e * e);
            }
        H2 {
            mk_vi upd = (sl[g] > zero) & (err[g] < best[g]);
            best[g] = mk_vf_sel(upd, err[g], best[g]);
            scale[g] = mk_vf_sel(upd, s[g], scale[g]);
            best_is[g] = mk_vf_sel(upd, is[g], best_is[g]);
            best_lo[g] = mk_vf_sel(upd, lo[g], best_lo[g]); /* the grid's offset, before the fit's replaces it */
            lo[g] = mk_vf_sel(upd, m[g], lo[g]);
        }
    }
    /* a flat group (max = min(x, 0)): codes 0, scale 0, minimum -min */
    H2 {
        h = MK_VL * g;
        mk_vi flat = hi[g] == lo0[g];
        mk_vf_store(scale_out + h, mk_vf_sel(flat, zero, scale[g]));
        mk_vf_store(m_out + h, -mk_vf_sel(flat, lo0[g], lo[g]));
        for (int i = 0; i < n; i++) {
            mk_vi c = VCLAMP(VROUND(best_is[g] * (VLD(x, i) - best_lo[g])), 0, nmax) & ~flat;
            memcpy(L + i * LANES + h, &c, sizeof c);
        }
    }
#undef H2
}

/* per lane: the largest magnitude of n values and the (first) value that has it */
static inline __attribute__((always_inline)) void lane_absmax(const float *x, int n, float *amax, float *max)
{
    for (int k = 0; k < LANES; k++) amax[k] = max[k] = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < LANES; k++) {
            float v = x[i * LANES + k];
            int32_t big = fabsf(v) > amax[k];
            amax[k] = big ? fabsf(v) : amax[k];
            max[k] = big ? v : max[k];
        }
}

/* x ~ scale x (L - nmax), L in 0..2 nmax - 1, weights w (make_qx_quants: x^2 with rmse 1, or
 * an importance), n values a group: the grid through the largest magnitude, then 18 grids of
 * nmax -+ 0.1 k levels, keeping the weighted least-squares scale of greatest explained energy.
 * scale[k] (0: all zeros) and the codes L[i * LANES + k] per lane (fit_sym_w's, lane by lane). */
MK_VINLINE void fit_sym(int n, int nmax, const float *x, const float *w, int32_t *L, float *scale_out)
{
    /* both halves of the lanes side by side, as in fit_offset */
#define H2 _Pragma("GCC unroll 2") for (int g = 0; g < 2; g++)
    mk_vf amax[2], max[2], slx[2], sl2[2], scale[2], best[2], best_is[2], zero = mk_vf_set1(0.0f);
    int h;
    H2 amax[g] = max[g] = slx[g] = sl2[g] = zero;
    for (int i = 0; i < n; i++)
        H2 {
            h = MK_VL * g;
            mk_vf v = VLD(x, i), a = mk_vf_abs(v);
            mk_vi big = a > amax[g];
            amax[g] = mk_vf_sel(big, a, amax[g]);
            max[g] = mk_vf_sel(big, v, max[g]);
        }
    H2 best_is[g] = mk_vf_set1((float)-nmax) / max[g];
    for (int i = 0; i < n; i++)
        H2 {
            h = MK_VL * g;
            mk_vf v = VLD(x, i), wi = VLD(w, i), l = __builtin_convertvector(VCLAMP(VROUND(best_is[g] * v), -nmax, nmax - 1), mk_vf);
            slx[g] += wi * v * l; /* (w x) l, as the scalar code */
            sl2[g] += wi * l * l;
        }
    H2 {
        scale[g] = mk_vf_sel(sl2[g] != zero, slx[g] / sl2[g], zero);
        best[g] = scale[g] * slx[g];
    }
    for (int t = -9; t <= 9; t++) {
        if (t == 0) continue;
        mk_vf a[2], b[2], is[2], levels = mk_vf_set1(-((float)nmax + 0.1f * (float)t));
        H2 {
            a[g] = b[g] = zero;
            is[g] = levels / max[g];
        }
        for (int i = 0; i < n; i++)
            H2 {
                h = MK_VL * g;
                mk_vf v = VLD(x, i), wi = VLD(w, i), l = __builtin_convertvector(VCLAMP(VROUND(is[g] * v), -nmax, nmax - 1), mk_vf);
                a[g] += wi * v * l;
                b[g] += wi * l * l;
            }
        H2 {
            mk_vi upd = (b[g] > zero) & (a[g] * a[g] > best[g] * b[g]);
            scale[g] = mk_vf_sel(upd, a[g] / b[g], scale[g]);
            best[g] = mk_vf_sel(upd, scale[g] * a[g], best[g]);
            best_is[g] = mk_vf_sel(upd, is[g], best_is[g]);
        }
    }
    /* the codes of the grid kept (all zeros: 0) */
    H2 {
        h = MK_VL * g;
        mk_vi z = amax[g] < mk_vf_set1(ZERO_GROUP);
        mk_vf_store(scale_out + h, mk_vf_sel(z, zero, scale[g]));
        for (int i = 0; i < n; i++) {
            mk_vi c = (VCLAMP(VROUND(best_is[g] * VLD(x, i)), -nmax, nmax - 1) + nmax) & ~z;
            memcpy(L + i * LANES + h, &c, sizeof c);
        }
    }
#undef H2
}

/* groups of gsize values of x (consecutive) into lanes: xt[i * LANES + k] = x[gsize k + i] */
MK_VINLINE void to_lanes(const float *x, int gsize, int ngroups, float *xt)
{
    for (int k = 0; k < LANES; k++)
        for (int i = 0; i < gsize; i++) xt[i * LANES + k] = k < ngroups ? x[gsize * k + i] : 0;
}

/* Q3_K's group fit (make_q3_quants with rmse): codes -4..3 on the grid through the largest
 * magnitude, then up to 5 passes moving single codes while the weighted (x^2) least-squares
 * fit improves. L gets the codes + 4. Returns the scale. */
MK_VINLINE float fit_q3(const float *x, int8_t *L)
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

/* Q2_K's codes re-fitted to the group scales and minimums as decoded (scales b[0..16), d, dm),
 * where a group's scale is not 0, and packed */
MK_VINLINE void q2_k_finish(const float *x, uint8_t *b, float d, float dm, uint8_t *L)
{
    const uint8_t *sc = b;
    for (int j = 0; j < 16; j++) {
        float dj = d * (float)(sc[j] & 0xf);
        if (dj == 0) continue;
        float mj = dm * (float)(sc[j] >> 4);
        for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)clamp_i(round_k((x[16 * j + l] + mj) / dj), 0, 3);
    }
    pack2(L, b + 16);
}

/* Q2_K (84 bytes): scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin. */
MK_VINLINE void q2_k(const float *x, uint8_t *b)
{
    float xt[16 * LANES], wt[16 * LANES], scale[LANES], min[LANES], maxs = 0, maxm = 0;
    int32_t Lt[16 * LANES];
    uint8_t L[QK_K], *sc = b;
    to_lanes(x, 16, 16, xt);
    for (int i = 0; i < 16 * LANES; i++) wt[i] = fabsf(xt[i]);
    fit_offset(16, 3, xt, wt, Lt, scale, min, -0.5f, 0.1f, 15, true);
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)Lt[l * LANES + j];
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
    q2_k_finish(x, b, d, dm, L);
}

/* Q3_K's codes re-fitted to the 6-bit group scales as decoded (b[96..108), d) where not 0,
 * and packed */
MK_VINLINE void q3_k_finish(const float *x, uint8_t *b, float d, int8_t *L)
{
    uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
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

/* Q3_K (110 bytes): hmask[32] (bit k of byte l: the high bit of code 32 k + l), qs[64] (low 2
 * bits), scales[12] (16 6-bit signed scales + 32: low nibbles in bytes 0..7, high pairs in
 * 8..11), d. */
MK_VINLINE void q3_k(const float *x, uint8_t *b)
{
    int8_t L[QK_K];
    uint8_t *sc = b + 96;
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
    q3_k_finish(x, b, d, L);
}

/* Q4_K and Q5_K's group fits for two super-blocks at once (x1 NULL: one): 8 groups of 32 each,
 * fitted with offsets, weights sqrt(mean x^2) + |x|. Block h's group j is lane 8 h + j. */
MK_VINLINE void k_fit(const float *x0, const float *x1, int nmax, float rmin, float rdelta, int nstep, int32_t *Lt, float *scale,
                  float *min)
{
    float xt[32 * LANES], wt[32 * LANES];
    to_lanes(x0, 32, 8, xt);
    if (x1)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 32; i++) xt[i * LANES + 8 + k] = x1[32 * k + i];
    for (int k = 0; k < LANES; k++) {
        float s2 = 0;
        for (int i = 0; i < 32; i++) s2 += xt[i * LANES + k] * xt[i * LANES + k];
        float av = sqrtf(s2 / 32);
        for (int i = 0; i < 32; i++) wt[i * LANES + k] = av + fabsf(xt[i * LANES + k]);
    }
    fit_offset(32, nmax, xt, wt, Lt, scale, min, rmin, rdelta, nstep, false);
}

/* Q4_K and Q5_K's scales for one super-block from its 8 fits (lanes h8 .. h8 + 7): 6-bit group
 * scales and minimums packed in b[4..16) (groups 0..3 in the low 6 bits of bytes 0..3 and 4..7;
 * groups 4..7 as nibbles in bytes 8..11 with their top 2 bits in the top of bytes 0..7); d,
 * dmin at b[0], b[2]; L the final codes 0..nmax. */
MK_VINLINE void k_scales(const float *x, uint8_t *b, const int32_t *Lt, const float *scale, const float *min, int h8, int nmax, uint8_t *L)
{
    float maxs = 0, maxm = 0;
    uint8_t *s = b + 4, ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)Lt[i * LANES + h8 + j];
        if (scale[h8 + j] > maxs) maxs = scale[h8 + j];
        if (min[h8 + j] > maxm) maxm = min[h8 + j];
    }
    float is = maxs > 0 ? 63.0f / maxs : 0.0f, im = maxm > 0 ? 63.0f / maxm : 0.0f;
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)round_k(is * scale[h8 + j]);
        lm[j] = (uint8_t)round_k(im * min[h8 + j]);
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
MK_VINLINE void q4_k_pack(const uint8_t *L, uint8_t *b)
{
    uint8_t *qs = b + 16;
    for (int k = 0; k < QK_K / 64; k++)
        for (int l = 0; l < 32; l++) qs[32 * k + l] = (uint8_t)(L[64 * k + l] | L[64 * k + 32 + l] << 4);
}

/* Q5_K (176 bytes): d, dmin, scales[12], qh[32] (bit 2 k / 2 k + 1 of byte l: the fifth bit of
 * codes 64 k + l / 64 k + 32 + l), qs[128] as Q4_K's low nibbles. */
MK_VINLINE void q5_k_pack(const uint8_t *L, uint8_t *b)
{
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int k = 0; k < QK_K / 64; k++)
        for (int l = 0; l < 32; l++) {
            int lo = L[64 * k + l], hi = L[64 * k + 32 + l];
            qh[l] |= (uint8_t)((lo >> 4) << (2 * k) | (hi >> 4) << (2 * k + 1));
            qs[32 * k + l] = (uint8_t)((lo & 0xf) | (hi & 0xf) << 4);
        }
}

/* Q6_K from its 16 group scales (the one of largest magnitude maxs, amax) and fit codes L */
MK_VINLINE void q6_k_finish(const float *x, const float *scale, float maxs, float amax, int8_t *L, uint8_t *b)
{
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

/* Q6_K (210 bytes): ql[128] (low nibbles), qh[64] (top 2 bits), scales[16] (int8), d. Of each
 * 128 values h: ql[64 h + l] = codes l | l + 64 (nibbles), ql[64 h + 32 + l] = codes 32 + l |
 * 96 + l, qh[32 h + l] = the top bits of codes l, 32 + l, 64 + l, 96 + l. */
MK_VINLINE void q6_k_lanes(const float *x, const float *qw, uint8_t *b)
{
    float xt[16 * LANES], wt[16 * LANES], scale[LANES], maxs = 0, amax = 0;
    int32_t Lt[16 * LANES];
    int8_t L[QK_K];
    to_lanes(x, 16, 16, xt);
    if (qw) to_lanes(qw, 16, 16, wt); /* with importance: the weights qw (quantize_q6_K) */
    else
        for (int i = 0; i < 16 * LANES; i++) wt[i] = xt[i] * xt[i];
    fit_sym(16, 32, xt, wt, Lt, scale);
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) L[16 * j + l] = (int8_t)Lt[l * LANES + j];
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            maxs = scale[j];
        }
    }
    q6_k_finish(x, scale, maxs, amax, L, b);
}

/* ---- IQ4_NL: 32 values on a non-linear 16-level code book, one f16 scale (18 bytes) ---- */

static const int8_t IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The code of the level nearest y (ties to the upper level), 8 lanes at a time: the number of
 * midpoints between consecutive levels at or below y (doubled, so exact; what llama.cpp's
 * search finds), and that level, built up from the steps between levels (exact small
 * integers; NaN: code 0). No table look-up, so that lanes stay in vector registers. */
#define IQ4NL_CODE(y, idx, level)                                                        \
    do {                                                                                 \
        mk_vf y2_ = (y) + (y);                                                           \
        (level) = mk_vf_set1((float)IQ4NL[0]);                                           \
        (idx) = mk_vi_set1(0);                                                           \
        for (int j_ = 1; j_ < 16; j_++) {                                                \
            mk_vi up_ = y2_ >= mk_vf_set1((float)(IQ4NL[j_ - 1] + IQ4NL[j_]));           \
            (idx) -= up_;                                                                \
            (level) += (mk_vf)(up_ & (mk_vi)mk_vf_set1((float)(IQ4NL[j_] - IQ4NL[j_ - 1]))); \
        }                                                                                \
    } while (0)

/* per lane: the weighted sums of code level x value and level^2 on the grid of id */
static inline __attribute__((always_inline)) void iq4_nl_sums(const float *xt, const float *wt, const float *id, float *sqx, float *sq2)
{
    for (int h = 0; h < LANES; h += MK_VL) {
        mk_vf idv = mk_vf_load(id + h), ax = mk_vf_set1(0.0f), a2 = mk_vf_set1(0.0f), q;
        mk_vi idx;
        for (int i = 0; i < 32; i++) {
            mk_vf v = mk_vf_load(xt + i * LANES + h), w = mk_vf_load(wt + i * LANES + h);
            IQ4NL_CODE(idv * v, idx, q);
            ax += w * q * v;
            a2 += w * q * q;
        }
        (void)idx;
        mk_vf_store(sqx + h, ax);
        mk_vf_store(sq2 + h, a2);
    }
}

/* llama-quantize's IQ4_NL (quantize_iq4_nl: weights x^2, or with importance qw (the 32 of
 * block k at qw + 32 k) qw sqrt(2 mean x^2 + x^2); 15 trial scales around max / -127, then
 * every value re-coded with the f32 scale kept), for up to LANES blocks of 32 at once, block k
 * in lane k. */
MK_VINLINE void iq4_nl(const float *x, uint64_t nb, const float *qw, uint8_t *out)
{
    float xt[32 * LANES], wt[32 * LANES], amax[LANES], max[LANES], d[LANES], best[LANES], id[LANES], sqx[LANES], sq2[LANES];
    to_lanes(x, 32, (int)nb, xt);
    if (qw) {
        float qt[32 * LANES];
        to_lanes(qw, 32, (int)nb, qt);
        for (int k = 0; k < LANES; k++) {
            float s2 = 0;
            for (int i = 0; i < 32; i++) s2 += xt[i * LANES + k] * xt[i * LANES + k];
            s2 *= 2.0f / 32;
            for (int i = 0; i < 32; i++) wt[i * LANES + k] = qt[i * LANES + k] * sqrtf(s2 + xt[i * LANES + k] * xt[i * LANES + k]);
        }
    } else {
        for (int i = 0; i < 32 * LANES; i++) wt[i] = xt[i] * xt[i];
    }
    lane_absmax(xt, 32, amax, max);
    for (int k = 0; k < LANES; k++) id[k] = 1 / (-max[k] / (float)IQ4NL[0]);
    iq4_nl_sums(xt, wt, id, sqx, sq2);
    for (int k = 0; k < LANES; k++) {
        d[k] = sq2[k] > 0 ? sqx[k] / sq2[k] : 0;
        best[k] = d[k] * sqx[k];
    }
    for (int t = -7; t <= 7; t++) {
        for (int k = 0; k < LANES; k++) id[k] = (float)(t + IQ4NL[0]) / max[k];
        iq4_nl_sums(xt, wt, id, sqx, sq2);
        for (int k = 0; k < LANES; k++) {
            int upd = (sq2[k] > 0) & (sqx[k] * sqx[k] > best[k] * sq2[k]);
            d[k] = upd ? sqx[k] / sq2[k] : d[k];
            best[k] = upd ? d[k] * sqx[k] : best[k];
        }
    }
    int32_t L[32 * LANES];
    for (int k = 0; k < LANES; k++) {
        d[k] = amax[k] < ZERO_GROUP ? 0 : d[k];
        id[k] = d[k] != 0 ? 1 / d[k] : 0;
    }
    for (int i = 0; i < 32; i++)
        for (int h = 0; h < LANES; h += MK_VL) {
            mk_vf q;
            mk_vi idx;
            IQ4NL_CODE(mk_vf_load(id + h) * mk_vf_load(xt + i * LANES + h), idx, q);
            (void)q;
            memcpy(L + i * LANES + h, &idx, sizeof idx);
        }
    for (uint64_t k = 0; k < nb; k++) {
        uint8_t *b = out + 18 * k;
        put_f16(b, d[k]);
        for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(L[j * LANES + k] | L[(16 + j) * LANES + k] << 4);
    }
}

/* The encoders, each built for the baseline and for AVX2 (qvec.h: the same bytes) */
#define ROWS(name, body)                                                      \
    MK_QKERNEL static void name(const float *src, uint64_t nblocks, uint8_t *out) { body }
ROWS(rows_q2_k, for (uint64_t i = 0; i < nblocks; i++) q2_k(src + i * QK_K, out + i * 84);)
ROWS(rows_q3_k, for (uint64_t i = 0; i < nblocks; i++) q3_k(src + i * QK_K, out + i * 110);)
ROWS(rows_q6_k, for (uint64_t i = 0; i < nblocks; i++) q6_k_lanes(src + i * QK_K, NULL, out + i * 210);)
ROWS(rows_iq4_nl, for (uint64_t i = 0; i < nblocks; i += LANES) iq4_nl(src + i * 32, nblocks - i < LANES ? nblocks - i : LANES, NULL, out + i * 18);)

/* Q4_K (nmax 15) and Q5_K (31): two super-blocks a fit */
MK_QKERNEL static void rows_q45_k(const float *src, uint64_t nblocks, uint8_t *out, bool q4)
{
    int nmax = q4 ? 15 : 31;
    unsigned bytes = q4 ? 144 : 176;
    int32_t Lt[32 * LANES];
    float scale[LANES], min[LANES];
    uint8_t L[QK_K];
    for (uint64_t i = 0; i < nblocks; i += 2) {
        const float *x0 = src + i * QK_K, *x1 = i + 1 < nblocks ? x0 + QK_K : NULL;
        k_fit(x0, x1, nmax, q4 ? -1.0f : -0.5f, 0.1f, q4 ? 20 : 15, Lt, scale, min);
        for (int h = 0; h < (x1 ? 2 : 1); h++) {
            uint8_t *b = out + (i + (uint64_t)h) * bytes;
            k_scales(x0 + h * QK_K, b, Lt, scale, min, 8 * h, nmax, L);
            if (q4) q4_k_pack(L, b);
            else q5_k_pack(L, b);
        }
    }
}

/* ---- with an importance matrix (llama.cpp's quantize_q*_K / quantize_iq4_nl with weights) - */

/* x ~ scale x L - m with weights w (make_qkx3_quants, squared error): the range grid, then
 * nstep + 1 grids of nmax + rmin + rdelta k levels, each refitted by weighted least squares,
 * keeping the codes of the least error. Returns the scale; *m_out the minimum (>= 0). */
static float fit_offset_w(int n, int nmax, const float *x, const float *w, uint8_t *L, float *m_out, float rmin, float rdelta, int nstep)
{
    float lo = x[0], hi = x[0], sw = w[0], sx = w[0] * x[0];
    uint8_t aux[32];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sw += w[i];
        sx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi <= lo) {
        memset(L, 0, (size_t)n);
        *m_out = -lo;
        return 0;
    }
    float is = (float)nmax / (hi - lo), scale = 1 / is, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_i(round_k(is * (x[i] - lo)), 0, nmax);
        float e = scale * (float)L[i] + lo - x[i];
        best += w[i] * (e * e);
    }
    for (int step = 0; step <= nstep; step++) {
        is = (rmin + rdelta * (float)step + (float)nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_i(round_k(is * (x[i] - lo)), 0, nmax);
            aux[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (!(det > 0)) continue;
        float s = (sw * sxl - sx * sl) / det, m = (sl2 * sx - sl * sxl) / det, err = 0;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        for (int i = 0; i < n; i++) {
            float e = s * (float)aux[i] + m - x[i];
            err += w[i] * (e * e);
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *m_out = -lo;
    return scale;
}

/* n non-negative values x ~ scale x L, L in 0..nmax, weights w (make_qp_quants): the grid
 * through the largest, 8 grids of nmax -+ 0.1 k levels by weighted error, then up to 5 passes
 * moving single codes while the least-squares fit improves. Returns the scale. */
static float fit_pos_w(int n, int nmax, const float *x, uint8_t *L, const float *w)
{
    float max = 0;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (max < ZERO_GROUP) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float is = (float)nmax / max, scale = 1 / is, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)round_k(is * x[i]);
        float e = x[i] - scale * (float)L[i];
        best += w[i] * e * e;
    }
    for (int t = -4; t <= 4; t++) {
        if (t == 0) continue;
        float ist = (0.1f * (float)t + (float)nmax) / max, st = 1 / ist, err = 0;
        for (int i = 0; i < n; i++) {
            int l = round_k(ist * x[i]);
            l = l < nmax ? l : nmax;
            float e = x[i] - st * (float)l;
            err += w[i] * e * e;
        }
        if (err < best) {
            best = err;
            is = ist;
        }
    }
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = round_k(is * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        slx += w[i] * x[i] * (float)l;
        sl2 += w[i] * (float)l * (float)l;
    }
    for (int pass = 0; pass < 5; pass++) {
        int moved = 0;
        for (int i = 0; i < n; i++) {
            float a = slx - w[i] * x[i] * (float)L[i], b = sl2 - w[i] * (float)L[i] * (float)L[i];
            if (!(a > 0 && b > 0)) continue;
            int l = round_k(x[i] * b / a);
            l = l < nmax ? l : nmax;
            if (l == L[i]) continue;
            a += w[i] * x[i] * (float)l;
            b += w[i] * (float)l * (float)l;
            if (a * a * sl2 > slx * slx * b) {
                L[i] = (uint8_t)l;
                slx = a;
                sl2 = b;
                moved++;
            }
        }
        if (!moved) break;
    }
    return sl2 > 0 ? slx / sl2 : 0;
}

/* the weights qw sqrt(sigma2 + x^2) of a super-block, and the sums of each group of gs */
static void group_weights(const float *x, const float *qw, float sigma2, int gs, float *w, float *sw)
{
    for (int j = 0; j < QK_K / gs; j++) {
        float sum = 0;
        for (int l = 0; l < gs; l++) w[gs * j + l] = qw[gs * j + l] * sqrtf(sigma2 + x[gs * j + l] * x[gs * j + l]);
        for (int l = 0; l < gs; l++) sum += w[gs * j + l];
        sw[j] = sum;
    }
}

static float sum_sq(const float *x)
{
    float s2 = 0;
    for (int l = 0; l < QK_K; l++) s2 += x[l] * x[l];
    return s2;
}

/* Q4_K / Q5_K with importance, from the 8 group fits (scales, minimums, codes L) of a
 * super-block whose groups' weights sum to sw: the scales and minimums quantized by fit_pos_w
 * weighted by sw, the codes re-fitted to them as decoded, packed. */
static void q45_k_w_finish(const float *x, const float *sw, const float *scale, const float *min, int nmax, uint8_t *L, uint8_t *b)
{
    uint8_t ls[8], lm[8], *s = b + 4;
    float d = fit_pos_w(8, 63, scale, ls, sw), dm = fit_pos_w(8, 63, min, lm, sw);
    if (nmax == 31)
        for (int j = 0; j < 8; j++) {
            ls[j] = ls[j] < 63 ? ls[j] : 63;
            lm[j] = lm[j] < 63 ? lm[j] : 63;
        }
    for (int j = 0; j < 4; j++) {
        s[j] = ls[j];
        s[j + 4] = lm[j];
    }
    for (int j = 4; j < 8; j++) {
        s[j + 4] = (uint8_t)((ls[j] & 0xf) | (lm[j] & 0xf) << 4);
        s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
        s[j] |= (uint8_t)((lm[j] >> 4) << 6);
    }
    d = put_f16(b, d);
    dm = put_f16(b + 2, dm);
    for (int j = 0; j < 8; j++) {
        /* the 6-bit scale and minimum as the decoder reads them back */
        int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        int mn = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        float dj = d * (float)sc;
        if (dj == 0) continue;
        float mj = dm * (float)mn;
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)clamp_i(round_k((x[32 * j + l] + mj) / dj), 0, nmax);
    }
    if (nmax == 15) q4_k_pack(L, b);
    else q5_k_pack(L, b);
}

/* Q4_K / Q5_K super-block with importance qw[256]: weights qw sqrt(2 mean x^2 + x^2), each
 * group of 32 fitted with an offset (the scalar reference) */
static void q45_k_w(const float *x, const float *qw, int nmax, uint8_t *b)
{
    float w[QK_K], sw[8], scale[8], min[8];
    uint8_t L[QK_K];
    group_weights(x, qw, 2 * sum_sq(x) / QK_K, 32, w, sw);
    for (int j = 0; j < 8; j++) scale[j] = fit_offset_w(32, nmax, x + 32 * j, w + 32 * j, L + 32 * j, &min[j], -0.9f, 0.05f, 36);
    q45_k_w_finish(x, sw, scale, min, nmax, L, b);
}

/* n values x ~ scale x (L - nmax), L in 0..2 nmax - 1, weights w (make_qx_quants with
 * weights): the grid through the largest magnitude, then 18 grids of nmax -+ 0.1 k levels,
 * keeping the weighted least-squares scale of greatest explained energy. Returns the scale
 * (0 for an all-zero group, codes 0). */
static float fit_sym_w(int n, int nmax, const float *x, const float *w, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < ZERO_GROUP) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float is = (float)-nmax / max, slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_i(round_k(is * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        slx += w[i] * x[i] * (float)l;
        sl2 += w[i] * (float)l * (float)l;
    }
    float sc = sl2 != 0 ? slx / sl2 : 0, best = sc * slx;
    for (int t = -9; t <= 9; t++) {
        if (t == 0) continue;
        float ist = -((float)nmax + 0.1f * (float)t) / max, a = 0, c = 0;
        for (int i = 0; i < n; i++) {
            float l = (float)clamp_i(round_k(ist * x[i]), -nmax, nmax - 1);
            a += w[i] * x[i] * l;
            c += w[i] * l * l;
        }
        if (c > 0 && a * a > best * c) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(clamp_i(round_k(ist * x[i]), -nmax, nmax - 1) + nmax);
            sc = a / c;
            best = sc * a;
        }
    }
    return sc;
}

/* Q6_K super-block with importance qw[256] (each group's fit weighted by qw, then as q6_k;
 * the scalar reference) */
static void q6_k_w(const float *x, const float *qw, uint8_t *b)
{
    float scale[16], maxs = 0, amax = 0;
    int8_t L[QK_K];
    for (int j = 0; j < 16; j++) {
        scale[j] = fit_sym_w(16, 32, x + 16 * j, qw + 16 * j, L + 16 * j);
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            maxs = scale[j];
        }
    }
    q6_k_finish(x, scale, maxs, amax, L, b);
}

/* Q3_K with importance from the 16 group fits (scales, codes L + 4): the group scales fitted
 * (6 bits, symmetric) weighted by the groups' weight sums sw, then as q3_k */
static void q3_k_w_finish(const float *x, float *scale, const float *sw, int8_t *L, uint8_t *b)
{
    int8_t Ls[16];
    uint8_t *sc = b + 96;
    memset(sc, 0, 12);
    float d = fit_sym_w(16, 32, scale, sw, Ls);
    for (int j = 0; j < 16; j++) {
        int l = Ls[j];
        if (j < 8) sc[j] = (uint8_t)(l & 0xf);
        else sc[j - 8] |= (uint8_t)((l & 0xf) << 4);
        sc[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
    q3_k_finish(x, b, put_f16(b + 108, d), L);
}

/* Q3_K super-block with importance qw[256]: groups fitted with weights qw sqrt(2 mean x^2 +
 * x^2) (the scalar reference) */
static void q3_k_w(const float *x, const float *qw, uint8_t *b)
{
    float w[QK_K], sw[16], scale[16];
    int8_t L[QK_K];
    group_weights(x, qw, 2 * sum_sq(x) / QK_K, 16, w, sw);
    for (int j = 0; j < 16; j++) scale[j] = fit_sym_w(16, 4, x + 16 * j, w + 16 * j, L + 16 * j);
    q3_k_w_finish(x, scale, sw, L, b);
}

/* Q2_K with importance from the 16 group fits (scales, minimums, codes L): 4-bit scales and
 * minimums fitted weighted by the groups' weight sums sw, then as q2_k */
static void q2_k_w_finish(const float *x, const float *scale, const float *min, const float *sw, uint8_t *L, uint8_t *b)
{
    uint8_t Ls[16], Lm[16];
    float d = put_f16(b + 80, fit_pos_w(16, 15, scale, Ls, sw)), dm = put_f16(b + 82, fit_pos_w(16, 15, min, Lm, sw));
    for (int j = 0; j < 16; j++) b[j] = (uint8_t)(Ls[j] | Lm[j] << 4);
    q2_k_finish(x, b, d, dm, L);
}

/* Q2_K super-block with importance qw[256]: groups fitted with offsets, weights qw sqrt(mean
 * x^2 + x^2) (the scalar reference) */
static void q2_k_w(const float *x, const float *qw, uint8_t *b)
{
    float w[QK_K], sw[16], scale[16], min[16];
    uint8_t L[QK_K];
    group_weights(x, qw, sum_sq(x) / QK_K, 16, w, sw);
    for (int j = 0; j < 16; j++) scale[j] = fit_offset_w(16, 3, x + 16 * j, w + 16 * j, L + 16 * j, &min[j], -0.9f, 0.05f, 36);
    q2_k_w_finish(x, scale, min, sw, L, b);
}

/* The 32-value types with importance (quantize_q4_0 / q4_1 / q5_0 / q5_1 with weights): per
 * block, weights qw sqrt(mean x^2 of the row + x^2); Q4_0 / Q5_0 fitted symmetric (codes - 8,
 * - 16), Q4_1 / Q5_1 with an offset; no re-quantization. Blocks: d (f16), [m (f16)], [qh[4]:
 * the fifth bits, value j at bit j], qs[16] (value j low nibble, j + 16 high). */
static void legacy_put(uint8_t *out, bool offset, bool five, float d, float m, const uint8_t *L)
{
    uint8_t *p = out + 2;
    put_f16(out, d);
    if (offset) {
        put_f16(out + 2, -m);
        p += 2;
    }
    if (five) {
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) qh |= (uint32_t)((L[j] >> 4) & 1) << j | (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
        for (int k = 0; k < 4; k++) p[k] = (uint8_t)(qh >> (8 * k));
        p += 4;
    }
    for (int j = 0; j < 16; j++) p[j] = (uint8_t)((L[j] & 0xf) | (L[j + 16] & 0xf) << 4);
}

static float row_sigma2(const float *x, uint64_t n)
{
    float s2 = 0;
    for (uint64_t j = 0; j < n; j++) s2 += x[j] * x[j];
    return s2 / (float)n;
}

/* the scalar reference of one row */
static void legacy_w(uint32_t type, const float *x, uint64_t n, const float *qw, uint8_t *out)
{
    float sigma2 = row_sigma2(x, n), w[32], m = 0, d;
    bool offset = type == MK_GGML_Q4_1 || type == MK_GGML_Q5_1, five = type == MK_GGML_Q5_0 || type == MK_GGML_Q5_1;
    unsigned bytes = 18 + 2 * offset + 4 * five;
    for (uint64_t ib = 0; ib < n / 32; ib++, out += bytes) {
        const float *xb = x + 32 * ib, *q = qw + 32 * ib;
        uint8_t L[32];
        for (int j = 0; j < 32; j++) w[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        if (offset) d = fit_offset_w(32, five ? 31 : 15, xb, w, L, &m, -0.9f, 0.05f, 36);
        else d = fit_sym_w(32, five ? 16 : 8, xb, w, (int8_t *)L);
        legacy_put(out, offset, five, d, m, L);
    }
}

/* ---- the same with the group fits in lanes (mk_ggml_kquant_encode_w's path) -------------- */

/* two super-blocks' groups of 32 into lanes 0..7 and 8..15 (x1 NULL: zeros) */
MK_VINLINE void pair_to_lanes(const float *x0, const float *x1, float *xt)
{
    to_lanes(x0, 32, 8, xt);
    if (x1)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 32; i++) xt[i * LANES + 8 + k] = x1[32 * k + i];
}

/* Q4_K / Q5_K with importance, two super-blocks at once (two false: one), block h's group j
 * in lane 8 h + j */
MK_VINLINE void q45_k_w_lanes(const float *x, const float *qw, bool two, int nmax, unsigned bytes, uint8_t *b)
{
    float w[2 * QK_K], sw[16], xt[32 * LANES], wt[32 * LANES], scale[LANES], min[LANES];
    int32_t Lt[32 * LANES];
    uint8_t L[QK_K];
    for (int h = 0; h <= two; h++) group_weights(x + h * QK_K, qw + h * QK_K, 2 * sum_sq(x + h * QK_K) / QK_K, 32, w + h * QK_K, sw + 8 * h);
    pair_to_lanes(x, two ? x + QK_K : NULL, xt);
    pair_to_lanes(w, two ? w + QK_K : NULL, wt);
    fit_offset(32, nmax, xt, wt, Lt, scale, min, -0.9f, 0.05f, 36, false);
    for (int h = 0; h <= two; h++) {
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)Lt[i * LANES + 8 * h + j];
        q45_k_w_finish(x + h * QK_K, sw + 8 * h, scale + 8 * h, min + 8 * h, nmax, L, b + h * bytes);
    }
}

/* Q2_K / Q3_K with importance: the 16 groups of a super-block in lanes */
MK_VINLINE void q23_k_w_lanes(const float *x, const float *qw, bool q2, uint8_t *b)
{
    float w[QK_K], sw[16], xt[16 * LANES], wt[16 * LANES], scale[LANES], min[LANES];
    int32_t Lt[16 * LANES];
    uint8_t L[QK_K];
    group_weights(x, qw, (q2 ? 1 : 2) * sum_sq(x) / QK_K, 16, w, sw);
    to_lanes(x, 16, 16, xt);
    to_lanes(w, 16, 16, wt);
    if (q2) fit_offset(16, 3, xt, wt, Lt, scale, min, -0.9f, 0.05f, 36, false);
    else fit_sym(16, 4, xt, wt, Lt, scale);
    for (int j = 0; j < 16; j++)
        for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)Lt[l * LANES + j];
    if (q2) q2_k_w_finish(x, scale, min, sw, L, b);
    else q3_k_w_finish(x, scale, sw, (int8_t *)L, b);
}

/* the 32-value types with importance, LANES blocks at once */
MK_VINLINE void legacy_w_lanes(uint32_t type, const float *x, uint64_t n, const float *qw, uint8_t *out)
{
    float sigma2 = row_sigma2(x, n), w[32 * LANES], xt[32 * LANES], wt[32 * LANES], d[LANES], m[LANES];
    int32_t Lt[32 * LANES];
    bool offset = type == MK_GGML_Q4_1 || type == MK_GGML_Q5_1, five = type == MK_GGML_Q5_0 || type == MK_GGML_Q5_1;
    unsigned bytes = 18 + 2 * offset + 4 * five;
    for (uint64_t ib = 0; ib < n / 32; ib += LANES) {
        int nbk = n / 32 - ib < LANES ? (int)(n / 32 - ib) : LANES;
        const float *xb = x + 32 * ib;
        for (int j = 0; j < 32 * nbk; j++) w[j] = qw[32 * ib + j] * sqrtf(sigma2 + xb[j] * xb[j]);
        to_lanes(xb, 32, nbk, xt);
        to_lanes(w, 32, nbk, wt);
        if (offset) fit_offset(32, five ? 31 : 15, xt, wt, Lt, d, m, -0.9f, 0.05f, 36, false);
        else fit_sym(32, five ? 16 : 8, xt, wt, Lt, d);
        for (int k = 0; k < nbk; k++) {
            uint8_t L[32];
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)Lt[j * LANES + k];
            legacy_put(out + (ib + (uint64_t)k) * bytes, offset, five, d[k], offset ? m[k] : 0, L);
        }
    }
}

/* one row of n values with importance qw, the fits in lanes */
MK_QKERNEL static void row_w_lanes(uint32_t type, const float *x, uint64_t n, const float *qw, uint8_t *out)
{
    uint64_t nb = n / QK_K;
    switch (type) {
    case MK_GGML_Q4_K:
    case MK_GGML_Q5_K: {
        unsigned bytes = type == MK_GGML_Q4_K ? 144 : 176;
        for (uint64_t i = 0; i < nb; i += 2)
            q45_k_w_lanes(x + i * QK_K, qw + i * QK_K, i + 1 < nb, type == MK_GGML_Q4_K ? 15 : 31, bytes, out + i * bytes);
        break;
    }
    case MK_GGML_Q6_K:
        for (uint64_t i = 0; i < nb; i++) q6_k_lanes(x + i * QK_K, qw + i * QK_K, out + i * 210);
        break;
    case MK_GGML_Q3_K:
        for (uint64_t i = 0; i < nb; i++) q23_k_w_lanes(x + i * QK_K, qw + i * QK_K, false, out + i * 110);
        break;
    case MK_GGML_Q2_K:
        for (uint64_t i = 0; i < nb; i++) q23_k_w_lanes(x + i * QK_K, qw + i * QK_K, true, out + i * 84);
        break;
    case MK_GGML_IQ4_NL:
        for (uint64_t i = 0; i < n / 32; i += LANES) iq4_nl(x + i * 32, n / 32 - i < LANES ? n / 32 - i : LANES, qw + i * 32, out + i * 18);
        break;
    default: legacy_w_lanes(type, x, n, qw, out); break;
    }
}

/* one row by the scalar fits (IQ4_NL has the lane code only) */
static void row_w_ref(uint32_t type, const float *x, uint64_t n, const float *qw, uint8_t *out)
{
    uint64_t nb = n / QK_K;
    for (uint64_t i = 0; i < nb; i++) {
        const float *xi = x + i * QK_K, *qi = qw + i * QK_K;
        switch (type) {
        case MK_GGML_Q4_K: q45_k_w(xi, qi, 15, out + i * 144); break;
        case MK_GGML_Q5_K: q45_k_w(xi, qi, 31, out + i * 176); break;
        case MK_GGML_Q6_K: q6_k_w(xi, qi, out + i * 210); break;
        case MK_GGML_Q3_K: q3_k_w(xi, qi, out + i * 110); break;
        case MK_GGML_Q2_K: q2_k_w(xi, qi, out + i * 84); break;
        default: break;
        }
    }
    if (type == MK_GGML_IQ4_NL) row_w_lanes(type, x, n, qw, out);
    else if (mk_ggml_type_of(type)->block == 32) legacy_w(type, x, n, qw, out);
}

static bool encode_w(uint32_t type, const float *src, uint64_t nrows, uint64_t n_per_row, const float *qw, void *dst, bool ref)
{
    bool legacy = type == MK_GGML_Q4_0 || type == MK_GGML_Q4_1 || type == MK_GGML_Q5_0 || type == MK_GGML_Q5_1;
    bool kq = type == MK_GGML_Q2_K || type == MK_GGML_Q3_K || type == MK_GGML_Q4_K || type == MK_GGML_Q5_K || type == MK_GGML_Q6_K;
    uint64_t bsize = type == MK_GGML_IQ4_NL || legacy ? 32 : QK_K;
    if (!legacy && !kq && type != MK_GGML_IQ4_NL) return false;
    if (n_per_row % bsize || n_per_row == 0) return false;
    if (!qw) {
        uint64_t nb = nrows * (n_per_row / bsize);
        if (!legacy) return mk_ggml_kquant_encode(type, src, nb, dst);
        return ref ? mk_ggml_encode_ref(type, src, nb, dst) : mk_ggml_encode(type, src, nb, dst);
    }
    uint64_t rbytes = n_per_row / bsize * mk_ggml_type_of(type)->bytes;
    for (uint64_t r = 0; r < nrows; r++)
        (ref ? row_w_ref : row_w_lanes)(type, src + r * n_per_row, n_per_row, qw, (uint8_t *)dst + r * rbytes);
    return true;
}

bool mk_ggml_kquant_encode_w(uint32_t type, const float *src, uint64_t nrows, uint64_t n_per_row, const float *qw, void *dst)
{
    return encode_w(type, src, nrows, n_per_row, qw, dst, false);
}

bool mk_ggml_kquant_encode_w_ref(uint32_t type, const float *src, uint64_t nrows, uint64_t n_per_row, const float *qw, void *dst)
{
    return encode_w(type, src, nrows, n_per_row, qw, dst, true);
}

bool mk_ggml_kquant_encode(uint32_t type, const float *src, uint64_t nblocks, void *dst)
{
    switch (type) {
    case MK_GGML_Q2_K: rows_q2_k(src, nblocks, dst); return true;
    case MK_GGML_Q3_K: rows_q3_k(src, nblocks, dst); return true;
    case MK_GGML_Q4_K: rows_q45_k(src, nblocks, dst, true); return true;
    case MK_GGML_Q5_K: rows_q45_k(src, nblocks, dst, false); return true;
    case MK_GGML_Q6_K: rows_q6_k(src, nblocks, dst); return true;
    case MK_GGML_IQ4_NL: rows_iq4_nl(src, nblocks, dst); return true;
    default: return false;
    }
}
