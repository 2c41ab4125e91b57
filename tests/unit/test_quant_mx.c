/* test_quant_mx.c - the MX kernels' AVX2 paths for E2M1 (mxfp4) and E4M3 (mxfp8) codes
 * (quant/mx.c) against the portable path and a scalar reference written from the rule in mx.h
 * (x / wdt(2^(e - 127)), clamped, rounded to wdt, mk_e2m1_code or mk_ct_fp8_quantize_ref): every finite bf16 value at scale exponents from 0 (a subnormal
 * scale) to 255 (inf), thresholds and one f32 ulp either side of them, +-0, subnormals,
 * saturation, and group sizes around the 8-lane steps. Codes must match exactly, error sums
 * bit for bit (tolerance 0: they are added in the same lanes in the same order).
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
