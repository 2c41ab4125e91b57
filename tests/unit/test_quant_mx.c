/* test_quant_mx.c - the MX kernels' AVX2 paths for E2M1 (mxfp4) and E4M3 (mxfp8) codes
 * (quant/mx.c) against the portable path and a scalar reference written from the rule in mx.h
 * (x / wdt(2^(e - 127)), clamped, rounded to wdt, mk_e2m1_code or mk_ct_fp8_quantize_ref): every finite bf16 value at scale exponents from 0 (a subnormal
 * scale) to 255 (inf), thresholds and one f32 ulp either side of them, +-0, subnormals,
 * saturation, and group sizes around the 8-lane steps. Codes must match exactly, error sums
 * bit for bit (tolerance 0: they are added in the same lanes in the same order). Then
 * NVFP4's AVX-512 and AVX2 paths against its group by group reference (below).
 */
#include "harness.h"

#include "../../core/mk_dtype.h"
#include "../../quant/ct.h"
#include "../../quant/mx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t exps[] = {0, 1, 100, 120, 125, 126, 127, 128, 129, 130, 200, 253, 254, 255};

/* The rule of mx.h for one value, scalar and with division and ldexpf. */
static uint8_t ref_code(mk_dtype wdt, unsigned bits, float x, uint8_t e)
{
    float sc = mk_ct_round(wdt, ldexpf(1.0f, (int)e - 127));
    if (bits == 8) { /* compressed-tensors' FP8 rule with this scale */
        const mk_ct_fp8 a = {false, wdt};
        uint8_t c;
        mk_ct_fp8_quantize_ref(&a, &x, 1, sc, &c);
        return c;
    }
    float q = x / sc;
    q = q > 6.0f ? 6.0f : q < -6.0f ? -6.0f : q;
    return mk_e2m1_code(mk_ct_round(wdt, q));
}

/* n values (f32 x, and their bf16 patterns xb when wdt is bf16) at every exponent: the AVX2 path
 * (cap 1) against the portable one (cap 0), and codes against ref_code. */
static void compare(const char *what, mk_dtype wdt, unsigned bits, const float *x, const uint16_t *xb, size_t n, size_t group)
{
    uint8_t *c1 = malloc(n), *c0 = malloc(n);
    for (size_t ei = 0; ei < sizeof exps; ei++) {
        const uint8_t e = exps[ei];
        for (int src = 0; src < (xb ? 2 : 1); src++) {
            mk_qerr r1 = {0, 0, 0}, r0 = {0, 0, 0};
            for (int cap = 1; cap >= 0; cap--) {
                int old = mk_mx_simd_cap(cap);
                for (size_t g = 0; g < n; g += group) {
                    size_t m = n - g < group ? n - g : group;
                    uint8_t *c = cap ? c1 : c0;
                    mk_qerr *r = cap ? &r1 : &r0;
                    if (src) mk_mx_quantize_bf16(bits, xb + g, m, e, c + g, r);
                    else mk_mx_quantize(wdt, bits, x + g, m, e, c + g, r);
                }
                mk_mx_simd_cap(old);
            }
            for (size_t i = 0; i < n; i++) {
                uint8_t want = ref_code(wdt, bits, x[i], e);
                if (c1[i] != c0[i] || c1[i] != want) {
                    CHECK_MSG(0, "%s mx%u (%s, e %u, group %zu): code %zu of x = %a: avx2 %u, portable %u, reference %u", what, bits, src ? "bf16" : "f32", e, group,
                              i, x[i], c1[i], c0[i], want);
                    break;
                }
            }
            CHECK_MSG(r1.sx2 == r0.sx2 && r1.se2 == r0.se2 && r1.maxe == r0.maxe,
                      "%s mx%u (%s, e %u, group %zu): error sums %.17g %.17g %g, want %.17g %.17g %g", what, bits, src ? "bf16" : "f32", e, group, r1.sx2,
                      r1.se2, r1.maxe, r0.sx2, r0.se2, r0.maxe);
        }
    }
    free(c1), free(c0);
}

/* Every finite bf16 value, in groups of 32 and in chunks with scalar tails. */
MK_TEST(quant_mx_avx2_every_bf16)
{
    const size_t n = 65536 - 2 * 128; /* all but the 2 * 128 inf and NaN patterns */
    float *x = malloc(n * sizeof *x);
    uint16_t *xb = malloc(n * sizeof *xb);
    size_t k = 0;
    for (uint32_t b = 0; b < 65536; b++)
        if ((b & 0x7f80) != 0x7f80) {
            xb[k] = (uint16_t)b;
            x[k++] = mk_bf16_to_f32((uint16_t)b);
        }
    CHECK_EQ_INT((long)k, (long)n);
    for (unsigned bits = 4; bits <= 8; bits += 4) {
        compare("every bf16", MK_BF16, bits, x, xb, n, 32);
        compare("every bf16", MK_BF16, bits, x, xb, n, 1029);
        compare("every bf16 as f32", MK_F32, bits, x, NULL, n, 32);
        /* the negative half alone: the largest error is then that of a negative difference */
        compare("every negative bf16", MK_BF16, bits, x + n / 2, xb + n / 2, n / 2, 32);
    }
    free(x), free(xb);
}

/* f32 values on each threshold of mk_e2m1_code and one ulp either side, times the scale; +-0,
 * f32 subnormals, saturation; every group size from 1 to 41 (tails of 0..7 after 8-lane steps). */
MK_TEST(quant_mx_avx2_ties_and_edges)
{
    static const float th[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 5.0f, 6.0f, 7.0f, 1e30f};
    for (size_t ei = 0; ei < sizeof exps; ei++) {
        float s = ldexpf(1.0f, (int)exps[ei] - 127);
        if (!isfinite(s)) s = 0x1p127f;
        float x[17 * 3 * 2 + 4];
        uint16_t xb[sizeof x / sizeof *x];
        size_t n = 0;
        for (size_t t = 0; t < sizeof th / sizeof *th; t++)
            for (int sg = 0; sg < 2; sg++) {
                float v = (sg ? -th[t] : th[t]) * s;
                if (!isfinite(v)) v = sg ? -0x1.fep127f : 0x1.fep127f;
                x[n++] = v, x[n++] = nextafterf(v, INFINITY), x[n++] = nextafterf(v, -INFINITY);
            }
        x[n++] = -0.0f, x[n++] = 0x1p-149f, x[n++] = -0x1p-140f, x[n++] = 0x1.fffffcp-127f;
        char what[48];
        snprintf(what, sizeof what, "thresholds times 2^%d", (int)exps[ei] - 127);
        for (size_t gs = 1; gs <= 41; gs += 1) compare(what, MK_F32, 4, x, NULL, n, gs);
        for (size_t i = 0; i < n; i++) x[i] = mk_bf16_to_f32(xb[i] = mk_f32_to_bf16(x[i]));
        for (size_t gs = 1; gs <= 41; gs += 4) compare(what, MK_BF16, 4, x, xb, n, gs), compare(what, MK_BF16, 8, x, xb, n, gs);
    }
}

/* ---- nvfp4: mk_nvfp4_quantize_groups' AVX-512 (cap 2) and AVX2 (cap 1) paths against the
 * reference (cap 0), the group after group mk_nvfp4_group_scale + mk_nvfp4_quantize loop that
 * they replace: scale codes, codes and error sums bit for bit (tolerance 0: the same lanes in
 * the same order), added onto sums already there, and the codes again without sums. On a
 * CPU without AVX-512 (or AVX2) a cap above what it has runs the path below it. */
static void nv_run(int cap, mk_dtype wdt, const float *x, size_t ng, float gs, uint8_t *s, uint8_t *c, mk_qerr *r)
{
    int old = mk_mx_simd_cap(cap);
    mk_nvfp4_quantize_groups(wdt, x, ng, 16, gs, s, c, r);
    mk_mx_simd_cap(old);
}

static void nv_compare(const char *what, mk_dtype wdt, const float *x, size_t ng, float gs)
{
    const size_t n = ng * 16;
    uint8_t *c[3], *s[3];
    for (int k = 0; k < 3; k++) c[k] = malloc(n + 1), s[k] = malloc(ng + 1);
    mk_qerr r0 = {0.5, 0.25, 0.125f};
    nv_run(0, wdt, x, ng, gs, s[0], c[0], &r0);
    for (int cap = 2; cap >= 1; cap--) {
        mk_qerr r1 = {0.5, 0.25, 0.125f};
        nv_run(cap, wdt, x, ng, gs, s[1], c[1], &r1);
        nv_run(cap, wdt, x, ng, gs, s[2], c[2], NULL);
        char w[160];
        snprintf(w, sizeof w, "%s (%s, gs %a, %zu groups, cap %d)", what, mk_dtype_name(wdt), (double)gs, ng, cap);
        for (size_t g = 0; g < ng; g++)
            if (s[1][g] != s[0][g] || s[2][g] != s[0][g]) {
                CHECK_MSG(0, "%s: scale of group %zu (absmax %a): fast 0x%02x (0x%02x without sums), reference 0x%02x", w, g,
                          (double)mk_ct_absmax(x + g * 16, 16), s[1][g], s[2][g], s[0][g]);
                break;
            }
        for (size_t i = 0; i < n; i++)
            if (c[1][i] != c[0][i] || c[2][i] != c[0][i]) {
                CHECK_MSG(0, "%s: code %zu of x = %a (scale 0x%02x): fast %u (%u without sums), reference %u", w, i, (double)x[i], s[0][i / 16],
                          c[1][i], c[2][i], c[0][i]);
                break;
            }
        CHECK_MSG(r1.sx2 == r0.sx2 && r1.se2 == r0.se2 && r1.maxe == r0.maxe, "%s: error sums %.17g %.17g %a, want %.17g %.17g %a", w, r1.sx2,
                  r1.se2, (double)r1.maxe, r0.sx2, r0.se2, (double)r0.maxe);
    }
    for (int k = 0; k < 3; k++) free(c[k]), free(s[k]);
}

/* Global scales as the pipeline makes them, from tensor maxima spanning bf16's range. */
static const float nv_tensor_max[] = {0x1.fep127f, 65504.0f, 2688.0f, 6.0f, 1.0f, 0.02f, 1e-20f, 0x1p-126f};

/* Every finite bf16 value as the weights: in pattern order (neighbours share a group) and
 * shuffled (each group mixes magnitudes, so every code occurs); bf16 and f32 rules. */
MK_TEST(quant_nvfp4_simd_every_bf16)
{
    const size_t n = 65536 - 2 * 128;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    size_t k = 0;
    for (uint32_t b = 0; b < 65536; b++)
        if ((b & 0x7f80) != 0x7f80) x[k++] = mk_bf16_to_f32((uint16_t)b);
    CHECK_EQ_INT((long)k, (long)n);
    memcpy(y, x, n * sizeof *x);
    uint64_t st = 12345;
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates with an LCG */
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)((st >> 33) % (i + 1));
        float t = y[i];
        y[i] = y[j], y[j] = t;
    }
    for (size_t t = 0; t < sizeof nv_tensor_max / sizeof *nv_tensor_max; t++)
        for (int w = 0; w < 2; w++) {
            const mk_dtype wdt = w ? MK_F32 : MK_BF16;
            const float gs = mk_nvfp4_global_scale(wdt, nv_tensor_max[t]);
            nv_compare("every bf16", wdt, x, n / 16, gs);
            nv_compare("every bf16 shuffled", wdt, y, n / 16, gs);
        }
    nv_compare("every bf16 shuffled", MK_BF16, y, n / 16, 3.0f);
    free(x), free(y);
}

/* Every positive finite bf16 value as a group's absmax (the rest of the group 0, -0 or a
 * third of it), so the scales take every E4M3 rounding the bf16 rule can reach; and f32
 * maxima at random bit patterns for the f32 rule. */
MK_TEST(quant_nvfp4_simd_every_scale)
{
    const size_t ng = 0x7f80;
    float *x = calloc(ng * 16, sizeof *x);
    for (size_t g = 0; g < ng; g++) {
        x[g * 16 + g % 16] = mk_bf16_to_f32((uint16_t)g);
        x[g * 16 + (g + 5) % 16] = -0.0f;
        x[g * 16 + (g + 9) % 16] = -mk_bf16_to_f32(mk_f32_to_bf16(mk_bf16_to_f32((uint16_t)g) / 3.0f));
    }
    for (size_t t = 0; t < sizeof nv_tensor_max / sizeof *nv_tensor_max; t++) {
        const float gs = mk_nvfp4_global_scale(MK_BF16, nv_tensor_max[t]);
        nv_compare("every absmax", MK_BF16, x, ng, gs);
        for (size_t g = 0; g < ng; g += 7) /* 7 at a time: the scalar path that follows the 8-group blocks */
            nv_compare("every absmax, 7 groups", MK_BF16, x + g * 16, ng - g < 7 ? ng - g : 7, gs);
    }
    /* f16 weights: the f16 maxima, and the f16 rounding of the scale lane by lane */
    for (size_t g = 0; g < ng; g++)
        for (int i = 0; i < 16; i++) x[g * 16 + i] = mk_f16_to_f32(mk_f32_to_f16(fminf(fmaxf(x[g * 16 + i], -65504.0f), 65504.0f)));
    for (size_t t = 1; t < sizeof nv_tensor_max / sizeof *nv_tensor_max; t++) {
        const float gs = mk_nvfp4_global_scale(MK_F16, nv_tensor_max[t]);
        nv_compare("every absmax in f16", MK_F16, x, ng, gs);
        for (size_t g = 0; g < ng; g += 7) nv_compare("every absmax in f16, 7 groups", MK_F16, x + g * 16, ng - g < 7 ? ng - g : 7, gs);
    }
    uint64_t st = 99;
    for (size_t g = 0; g < ng; g++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t u = (uint32_t)(st >> 32) % 0x7f800000u;
        memcpy(&x[g * 16 + g % 16], &u, 4);
    }
    for (size_t t = 0; t < sizeof nv_tensor_max / sizeof *nv_tensor_max; t++) {
        const float gs = mk_nvfp4_global_scale(MK_F32, nv_tensor_max[t]);
        nv_compare("random f32 absmax", MK_F32, x, ng, gs);
        for (size_t g = 0; g < ng; g += 7) nv_compare("random f32 absmax, 7 groups", MK_F32, x + g * 16, ng - g < 7 ? ng - g : 7, gs);
    }
    free(x);
}

/* Groups whose absmax 6p (gs 1: scale p, a power of two, so eff = p) puts the others exactly
 * on mk_e2m1_code's thresholds (ties) and one f32 ulp either side: p from E4M3's smallest
 * subnormal to 448 and past it (1024: the scale clamps, the codes saturate); other global
 * scales too (ties then fall where the division puts them); zeros, -0, f32 subnormals;
 * group counts 1..41 (8-group blocks and the tails after them). */
MK_TEST(quant_nvfp4_simd_ties_and_edges)
{
    static const float th[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 5.0f, 6.0f};
    static const float pw[] = {0x1p-9f, 0x1p-7f, 0x1p-6f, 0.125f, 1.0f, 2.0f, 256.0f, 448.0f, 1024.0f};
    static const float gss[] = {1.0f, 0.5f, 0x1p-10f, 3.0f, 0.1f, 2688.0f / 1.7f};
    enum { NG = 6 * (sizeof pw / sizeof *pw) + 3 };
    float x[NG * 16];
    size_t k = 0;
    for (size_t p = 0; p < sizeof pw / sizeof *pw; p++) /* 90 values after the absmax of each group of 15: 6 groups */
        for (size_t t = 0; t < sizeof th / sizeof *th; t++)
            for (int sg = 0; sg < 2; sg++)
                for (int u = -1; u <= 1; u++) {
                    if (k % 16 == 0) x[k++] = 6.0f * pw[p];
                    const float v = (sg ? -th[t] : th[t]) * pw[p];
                    x[k++] = u == 0 ? v : nextafterf(v, u > 0 ? INFINITY : -INFINITY);
                }
    for (int i = 0; i < 16; i++) x[k++] = 0.0f;
    for (int i = 0; i < 16; i++) x[k++] = i % 2 ? -0.0f : 0.0f;
    for (int i = 0; i < 16; i++) x[k++] = ldexpf(i % 2 ? -1.0f : 1.0f, -149 + i);
    CHECK_EQ_INT((long)k, (long)(NG * 16));
    for (size_t g = 0; g < sizeof gss / sizeof *gss; g++)
        for (size_t ng = 0; ng <= 41 && ng <= NG; ng++) {
            nv_compare("thresholds", MK_F32, x, ng, gss[g]);
            nv_compare("thresholds, from the end", MK_F32, x + (NG - ng) * 16, ng, gss[g]);
        }
    for (size_t i = 0; i < NG * 16; i++) x[i] = mk_bf16_to_f32(mk_f32_to_bf16(x[i]));
    for (size_t g = 0; g < sizeof gss / sizeof *gss; g++) nv_compare("thresholds in bf16", MK_BF16, x, NG, gss[g]);
    for (size_t i = 0; i < NG * 16; i++) x[i] = mk_f16_to_f32(mk_f32_to_f16(x[i] > 65504.0f ? 65504.0f : x[i]));
    for (size_t g = 0; g < sizeof gss / sizeof *gss; g++) nv_compare("thresholds in f16", MK_F16, x, NG, gss[g]);
}

/* Random f32 weights (full mantissas, so a sum taken in another order differs) and the same
 * rounded to bf16, with rows of 1..41 groups and the global scale of their maximum. */
MK_TEST(quant_nvfp4_simd_random)
{
    enum { NG = 2000 };
    float *x = malloc(NG * 16 * sizeof *x);
    uint64_t st = 7;
    for (size_t i = 0; i < NG * 16; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        /* uniform in (-1, 1), times 2^(-8..7) per group of 16 */
        x[i] = ldexpf((float)((int32_t)(st >> 32)) * 0x1p-31f, (int)((i / 16) % 16) - 8);
    }
    for (int w = 0; w < 2; w++) {
        const mk_dtype wdt = w ? MK_BF16 : MK_F32;
        if (w)
            for (size_t i = 0; i < NG * 16; i++) x[i] = mk_bf16_to_f32(mk_f32_to_bf16(x[i]));
        const float gs = mk_nvfp4_global_scale(wdt, mk_ct_absmax(x, NG * 16));
        nv_compare("random", wdt, x, NG, gs);
        for (size_t ng = 1, g = 0; ng <= 41 && g + ng <= NG; g += ng, ng++) nv_compare("random rows", wdt, x + g * 16, ng, gs);
    }
    free(x);
}
