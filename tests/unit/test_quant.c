/* test_quant.c - the quantizers beyond the golden cases: fast kernels against the reference
 * kernels on many shapes (and exhaustively over every bf16 and f16 input for FP8), the
 * error sums they report, the scale search, the weight-error anchors of
 * reference/quantization-formats.md 7.3, options, tensor selection and layout, the
 * consumer (NaN, overflow, chunking, double quant statistics), the reader's checks, and a
 * round trip of every row of the format table in every layout.
 */
#include "harness.h"
#include "quant_check.h"

#include "../../core/mk_io.h"
#include "../../core/mk_rng.h"
#include "../../formats/safetensors.h"
#include "../../quant/bnb.h"
#include "../../quant/ct.h"
#include "../../quant/mx.h"
#include "../../quant/qformat.h"
#include "../../quant/search.h"

#include <stdlib.h>

/* N(0, std^2) weights, a share of them `outlier` times larger (deterministic). */
static float *gaussian(uint64_t seed, size_t n, double std, double outlier_share, double outlier, mk_dtype dt)
{
    float *x = malloc(n * sizeof *x + 4);
    mk_rng k = mk_rng_key(seed, "test_quant");
    for (size_t i = 0; i < n; i += 2) {
        double z0, z1;
        mk_det_normal2(1.0 - mk_rng_uniform(k, 0, i), mk_rng_uniform(k, 0, i + 1), &z0, &z1);
        x[i] = (float)(z0 * std);
        if (i + 1 < n) x[i + 1] = (float)(z1 * std);
    }
    for (size_t i = 0; i < n; i++) {
        if (mk_rng_uniform(k, 1, i) < outlier_share) x[i] *= (float)outlier;
        if (dt == MK_BF16) x[i] = mk_bf16_to_f32(mk_f32_to_bf16(x[i]));
        else if (dt == MK_F16) x[i] = mk_f16_to_f32(mk_f32_to_f16(x[i]));
    }
    return x;
}

MK_TEST(quant_bnb4_fast_matches_reference)
{
    static const unsigned blocks[] = {32, 64, 128, 256, 4096};
    static const size_t sizes[] = {1, 31, 64, 65, 1000, 4103, 20000};
    for (int t = 0; t < 2; t++)
        for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++)
            for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                size_t n = sizes[si];
                unsigned B = blocks[bi];
                float *x = gaussian(100 + si * 7 + bi, n, 0.02, 0.002, 8, MK_BF16);
                if (n > 70) memset(x + 64, 0, 32 * sizeof *x); /* a zero block when B <= 32 */
                size_t nb = (size_t)mk_bnb_nblocks(n, B);
                uint8_t *pr = calloc(n / 2 + 1, 1), *pf = calloc(n / 2 + 1, 1);
                float *ar = malloc(nb * 4), *af = malloc(nb * 4), *xh = malloc(n * 4), *dec = malloc(nb * 4);
                mk_bnb4_quantize_ref((mk_bnb4_type)t, B, x, n, ar, pr);
                mk_qerr e = {0, 0, 0}, w;
                mk_bnb4_quantize((mk_bnb4_type)t, B, x, n, af, pf, NULL, &e);
                char what[96];
                snprintf(what, sizeof what, "%s block %u n %zu", t ? "fp4" : "nf4", B, n);
                first_diff(what, pf, pr, (n + 1) / 2);
                CHECK_MSG(memcmp(af, ar, nb * 4) == 0, "%s: absmax differs", what);
                mk_bnb4_dequant((mk_bnb4_type)t, B, pr, ar, 0, n, xh);
                ref_err(x, xh, n, &w);
                check_err(what, &e, &w);
                /* with a separate decode absmax (double quant) */
                for (size_t b = 0; b < nb; b++) dec[b] = ar[b] * 1.01f;
                memset(&e, 0, sizeof e);
                mk_bnb4_quantize((mk_bnb4_type)t, B, x, n, af, pf, dec, &e);
                mk_bnb4_dequant((mk_bnb4_type)t, B, pr, dec, 0, n, xh);
                ref_err(x, xh, n, &w);
                check_err(what, &e, &w);
                free(x), free(pr), free(pf), free(ar), free(af), free(xh), free(dec);
            }
}

MK_TEST(quant_int8_fast_matches_reference)
{
    static const size_t shapes[][2] = {{1, 1}, {3, 7}, {5, 64}, {4, 1000}, {2, 4099}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int dt = 0; dt < 2; dt++) {
            size_t r = shapes[s][0], c = shapes[s][1], n = r * c;
            /* wide magnitudes: f16 subnormals and large values */
            float *x = gaussian(200 + s, n, dt ? 3e-5 : 0.5, 0.01, 300, dt ? MK_F32 : MK_BF16);
            if (r > 2) memset(x + c, 0, c * sizeof *x); /* a zero row */
            int8_t *qr = malloc(n), *qf = malloc(n);
            float *sr = malloc(r * 4), *sf = malloc(r * 4), *xh = malloc(n * 4);
            mk_bnb_int8_quantize_ref(x, r, c, qr, sr);
            mk_qerr e = {0, 0, 0}, w;
            mk_bnb_int8_quantize(x, r, c, qf, sf, &e);
            char what[64];
            snprintf(what, sizeof what, "int8 [%zu, %zu] %s", r, c, dt ? "f32" : "bf16");
            first_diff(what, qf, qr, n);
            CHECK_MSG(memcmp(sf, sr, r * 4) == 0, "%s: SCB differs", what);
            mk_bnb_int8_dequant(qr, sr, r, c, xh);
            ref_err(x, xh, n, &w);
            check_err(what, &e, &w);
            free(x), free(qr), free(qf), free(sr), free(sf), free(xh);
        }
}

MK_TEST(quant_ct_int_fast_matches_reference)
{
    static const mk_dtype dts[] = {MK_BF16, MK_F16, MK_F32};
    static const size_t sizes[] = {1, 7, 8, 33, 128, 1029};
    for (unsigned bits = 4; bits <= 8; bits += 4)
        for (int asym = 0; asym < 2; asym++)
            for (size_t d = 0; d < 3; d++)
                for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                    size_t n = sizes[si];
                    mk_ct_int a = {bits, asym != 0, dts[d]};
                    float *x = gaussian(300 + si, n, 0.02, 0.01, 8, dts[d]);
                    if (asym && n > 4) /* a group that is all positive */
                        for (size_t i = 0; i < n; i++) x[i] = fabsf(x[i]);
                    float sc;
                    int32_t z;
                    mk_ct_int_qparams(&a, x, n, &sc, &z);
                    int8_t *qr = malloc(n), *qf = malloc(n);
                    float *xh = malloc(n * 4);
                    mk_ct_int_codes_ref(&a, x, n, sc, z, qr);
                    mk_qerr e = {0, 0, 0}, w;
                    mk_ct_int_codes(&a, x, n, sc, z, qf, &e);
                    char what[80];
                    snprintf(what, sizeof what, "int%u %s %s n %zu", bits, asym ? "asym" : "sym", mk_dtype_name(dts[d]), n);
                    first_diff(what, qf, qr, n);
                    mk_ct_int_dequant(&a, qr, n, sc, z, xh);
                    ref_err(x, xh, n, &w);
                    check_err(what, &e, &w);
                    for (size_t i = 0; i < n; i++)
                        CHECK_MSG(qr[i] >= mk_ct_qmin(&a) && qr[i] <= mk_ct_qmax(&a), "%s: code %d out of range", what, qr[i]);
                    free(x), free(qr), free(qf), free(xh);
                }
}

/* The one-pass packed row (the vector pass where it fits) against the codes of the group
 * kernels packed by the reference: the same words, scales, zero points and error sums. */
static void packed_matches(const mk_ct_int *a, const uint16_t *xb, size_t cols, size_t group, const int8_t *qg, const float *sg,
                           const int32_t *zg, const mk_qerr *eg, const char *what)
{
    const size_t G = cols / group, W = (cols * a->bits + 31) / 32;
    uint32_t *wr = calloc(W, 4), *wf = calloc(W, 4);
    int8_t *codes = malloc(cols);
    float sp[128];
    int32_t zp[128];
    mk_ct_pack_row_ref(a->bits, qg, cols, wr);
    for (int level = 2; level >= 0; level--) { /* AVX-512VL, AVX2, reference (where the CPU has them) */
        int cap = mk_ct_simd_cap(level);
        mk_qerr ep = {0, 0, 0};
        memset(wf, 0, W * 4);
        mk_ct_int_row_bf16_packed(a, xb, cols, group, sp, zp, wf, codes, &ep);
        size_t bad = W;
        for (size_t w = 0; w < W && bad == W; w++)
            if (wf[w] != wr[w]) bad = w;
        CHECK_MSG(bad == W, "%s packed (level %d): word %zu is %08x, want %08x", what, level, bad, bad < W ? wf[bad] : 0,
                  bad < W ? wr[bad] : 0);
        for (size_t g = 0; g < G; g++)
            CHECK_MSG(sp[g] == sg[g] && zp[g] == zg[g], "%s packed (level %d): group %zu scale %g zp %d, want %g %d", what, level, g, sp[g],
                      zp[g], sg[g], zg[g]);
        CHECK_MSG(ep.sx2 == eg->sx2 && ep.se2 == eg->se2 && ep.maxe == eg->maxe,
                  "%s packed (level %d): error sums %.17g %.17g %g, want %.17g %.17g %g", what, level, ep.sx2, ep.se2, ep.maxe, eg->sx2,
                  eg->se2, eg->maxe);
        mk_ct_int_row_bf16_packed(a, xb, cols, group, sp, zp, wf, codes, NULL); /* without the sums: the same words */
        CHECK_MSG(!memcmp(wf, wr, W * 4), "%s packed (level %d) without error sums: other words", what, level);
        mk_ct_simd_cap(cap);
    }
    free(wr), free(wf), free(codes);
}

/* The row kernel is the group kernels one group after another: the same codes, scales,
 * zero points and error sums (exactly: the same additions in the same order). */
MK_TEST(quant_ct_int_row_matches_groups)
{
    static const mk_dtype dts[] = {MK_BF16, MK_F16, MK_F32};
    static const size_t shapes[][2] = {{256, 128}, {96, 32}, {1029, 1029}, {36, 12}, {1024, 512}, {2048, 64}, {4096, 4096}, {1376, 32}};
    for (unsigned bits = 4; bits <= 8; bits += 4)
        for (int asym = 0; asym < 2; asym++)
            for (size_t d = 0; d < 3; d++)
                for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
                    const size_t cols = shapes[si][0], group = shapes[si][1], G = cols / group;
                    mk_ct_int a = {bits, asym != 0, dts[d]};
                    float *x = gaussian(700 + si, cols, 0.02, 0.01, 8, dts[d]);
                    if (asym) /* a group that is all positive */
                        for (size_t i = 0; i < group; i++) x[i] = fabsf(x[i]);
                    int8_t *qg = malloc(cols), *qr = malloc(cols);
                    float sg[128], sr[128];
                    int32_t zg[128], zr[128];
                    mk_qerr eg = {0, 0, 0}, er = {0, 0, 0};
                    for (size_t g = 0; g < G; g++) {
                        mk_ct_int_qparams(&a, x + g * group, group, &sg[g], &zg[g]);
                        mk_ct_int_codes(&a, x + g * group, group, sg[g], zg[g], qg + g * group, &eg);
                    }
                    mk_ct_int_row(&a, x, cols, group, sr, zr, qr, &er);
                    char what[100];
                    snprintf(what, sizeof what, "row int%u %s %s cols %zu group %zu", bits, asym ? "asym" : "sym", mk_dtype_name(dts[d]),
                             cols, group);
                    first_diff(what, qr, qg, cols);
                    for (size_t g = 0; g < G; g++)
                        CHECK_MSG(sr[g] == sg[g] && zr[g] == zg[g], "%s: group %zu scale %g zp %d, want %g %d", what, g, sr[g], zr[g],
                                  sg[g], zg[g]);
                    CHECK_MSG(er.sx2 == eg.sx2 && er.se2 == eg.se2 && er.maxe == eg.maxe, "%s: error sums %.17g %.17g %g, want %.17g %.17g %g",
                              what, er.sx2, er.se2, er.maxe, eg.sx2, eg.se2, eg.maxe);
                    if (dts[d] == MK_BF16) { /* and from the bf16 bit patterns: widened in L1 (groups <= 256), or as loaded */
                        uint16_t *xb = malloc(cols * 2);
                        for (size_t k = 0; k < cols; k++) xb[k] = mk_f32_to_bf16(x[k]);
                        mk_qerr eb = {0, 0, 0};
                        mk_ct_int_row_bf16(&a, xb, cols, group, sr, zr, qr, &eb);
                        strcat(what, " from bf16");
                        first_diff(what, qr, qg, cols);
                        packed_matches(&a, xb, cols, group, qg, sg, zg, &eg, what);
                        for (size_t g = 0; g < G; g++)
                            CHECK_MSG(sr[g] == sg[g] && zr[g] == zg[g], "%s: group %zu scale %g zp %d, want %g %d", what, g, sr[g], zr[g],
                                      sg[g], zg[g]);
                        CHECK_MSG(eb.sx2 == eg.sx2 && eb.se2 == eg.se2 && eb.maxe == eg.maxe,
                                  "%s: error sums %.17g %.17g %g, want %.17g %.17g %g", what, eb.sx2, eb.se2, eb.maxe, eg.sx2, eg.se2, eg.maxe);
                        free(xb);
                    }
                    free(x), free(qg), free(qr);
                }
}

/* The packed row on values that test the bit-pattern min/max and the rounding: groups of
 * zeros and -0, all negative, all positive, subnormal, near the largest bf16, one outlier,
 * constant; against the group kernels packed by the reference. */
MK_TEST(quant_ct_int_row_packed_edges)
{
    enum { COLS = 1024, GROUP = 64 };
    static float x[COLS];
    static uint16_t xb[COLS];
    static int8_t q[COLS];
    const float big = 0x1.fep62f, tiny = 0x1p-133f; /* big: the squared error stays finite */
    for (size_t i = 0; i < COLS; i++) {
        size_t g = i / GROUP, k = i % GROUP;
        float v = (float)((int)(k * 37 % 23) - 11) * 0.01f;
        switch (g) {
        case 0: v = 0.0f; break;
        case 1: v = k % 2 ? -0.0f : 0.0f; break;
        case 2: v = -fabsf(v) - 0.001f; break;
        case 3: v = fabsf(v) + 0.5f; break;
        case 4: v *= 0x1p-130f; break;
        case 5: v = k % 3 ? tiny : -tiny; break;
        case 6: v = k == 5 ? big : k == 9 ? -big : v * 0x1p55f; break;
        case 7: v = k == 17 ? 100.0f : v; break;
        case 8: v = 0.0371f; break;
        case 9: v = -0.0371f; break;
        case 10: v = k < 32 ? -0.0f : 3.0f; break;
        default: break;
        }
        xb[i] = mk_f32_to_bf16(v);
        x[i] = mk_bf16_to_f32(xb[i]);
    }
    for (unsigned bits = 4; bits <= 8; bits += 4)
        for (int asym = 0; asym < 2; asym++) {
            mk_ct_int a = {bits, asym != 0, MK_BF16};
            float sg[COLS / GROUP];
            int32_t zg[COLS / GROUP];
            mk_qerr eg = {0, 0, 0};
            for (size_t g = 0; g < COLS / GROUP; g++) {
                mk_ct_int_qparams(&a, x + g * GROUP, GROUP, &sg[g], &zg[g]);
                mk_ct_int_codes(&a, x + g * GROUP, GROUP, sg[g], zg[g], q + g * GROUP, &eg);
            }
            char what[64];
            snprintf(what, sizeof what, "edges int%u %s", bits, asym ? "asym" : "sym");
            packed_matches(&a, xb, COLS, GROUP, q, sg, zg, &eg, what);
        }
}

/* The vector FP4 packing against the reference, on every byte value, apart and in place. */
MK_TEST(quant_fp4_pack_matches_reference)
{
    static const size_t sizes[] = {2, 31, 32, 64, 1030, 4096};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const size_t n = sizes[si];
        uint8_t *c = malloc(n), *r = calloc(n, 1), *f = calloc(n, 1);
        for (size_t i = 0; i < n; i++) c[i] = (uint8_t)(i * 97 + si * 13 + (i >> 5));
        mk_fp4_pack_ref(c, n, r);
        mk_fp4_pack(c, n, f);
        char what[48];
        snprintf(what, sizeof what, "fp4 pack of %zu", n);
        first_diff(what, f, r, n / 2);
        mk_fp4_pack(c, n, c); /* in place */
        strcat(what, " in place");
        first_diff(what, c, r, n / 2);
        free(c), free(r), free(f);
    }
}

/* MX groups from bf16 bit patterns (mxfp4, mxfp8): the absmax, exponent, codes and error
 * sums of the f32 path, exactly; groups of 32 and odd sizes (the scalar tails). */
MK_TEST(quant_mx_bf16_matches_f32)
{
    static const size_t sizes[] = {32, 7, 33, 1029};
    for (unsigned bits = 4; bits <= 8; bits += 4)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int big = 0; big < 2; big++) {
                const size_t n = sizes[si];
                float *x = gaussian(950 + si, n, big ? 3e37 : 0.02, 0.01, 8, MK_BF16);
                uint16_t *xb = malloc(n * 2);
                for (size_t k = 0; k < n; k++) xb[k] = mk_f32_to_bf16(x[k]);
                uint8_t *qf = malloc(n), *qb = malloc(n);
                float af = mk_ct_absmax(x, n), ab = mk_ct_absmax_bf16(xb, n);
                uint8_t e = mk_mx_scale_exp(MK_BF16, bits, af);
                mk_qerr ef = {0, 0, 0}, eb = {0, 0, 0};
                mk_mx_quantize(MK_BF16, bits, x, n, e, qf, &ef);
                mk_mx_quantize_bf16(bits, xb, n, e, qb, &eb);
                char what[64];
                snprintf(what, sizeof what, "mx%u of %zu%s from bf16 (exponent %u)", bits, n, big ? " large" : "", e);
                CHECK_MSG(ab == af, "%s: absmax %g, want %g", what, ab, af);
                first_diff(what, qb, qf, n);
                CHECK_MSG(eb.sx2 == ef.sx2 && eb.se2 == ef.se2 && eb.maxe == ef.maxe, "%s: error sums %.17g %.17g %g, want %.17g %.17g %g",
                          what, eb.sx2, eb.se2, eb.maxe, ef.sx2, ef.se2, ef.maxe);
                free(x), free(xb), free(qf), free(qb);
            }
}

/* FP8 rows from bf16 bit patterns: the scale, codes and error sums of the f32 path. */
MK_TEST(quant_fp8_row_bf16_matches_f32)
{
    static const size_t sizes[] = {1, 7, 8, 33, 1029, 4096};
    for (int e5 = 0; e5 < 2; e5++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            const size_t n = sizes[si];
            mk_ct_fp8 a = {e5 != 0, MK_BF16};
            float *x = gaussian(900 + si, n, 0.02, 0.01, 8, MK_BF16);
            uint16_t *xb = malloc(n * 2);
            for (size_t k = 0; k < n; k++) xb[k] = mk_f32_to_bf16(x[k]);
            uint8_t *qf = malloc(n), *qb = malloc(n);
            mk_qerr ef = {0, 0, 0}, eb = {0, 0, 0};
            float sf = mk_ct_fp8_scale(&a, mk_ct_absmax(x, n));
            mk_ct_fp8_quantize(&a, x, n, sf, qf, &ef);
            float sb = mk_ct_fp8_row_bf16(&a, xb, n, qb, &eb);
            char what[64];
            snprintf(what, sizeof what, "fp8 %s row of %zu from bf16", e5 ? "e5m2" : "e4m3", n);
            CHECK_MSG(sb == sf, "%s: scale %g, want %g", what, sb, sf);
            first_diff(what, qb, qf, n);
            CHECK_MSG(eb.sx2 == ef.sx2 && eb.se2 == ef.se2 && eb.maxe == ef.maxe, "%s: error sums %.17g %.17g %g, want %.17g %.17g %g", what,
                      eb.sx2, eb.se2, eb.maxe, ef.sx2, ef.se2, ef.maxe);
            free(x), free(xb), free(qf), free(qb);
        }
}

/* One bf16 row through mk_ct_fp8_quantize_bf16 at each SIMD level: the reference's codes,
 * and (with and without the sums) the error sums of level 0 exactly (the same report). */
static void fp8_bf16_levels(const mk_ct_fp8 *a, const uint16_t *xb, const float *x, size_t n, float s, const char *what)
{
    uint8_t *qr = malloc(n), *qf = malloc(n);
    mk_qerr e0 = {0, 0, 0};
    mk_ct_fp8_quantize_ref(a, x, n, s, qr);
    for (int level = 0; level <= 2; level++) { /* portable, AVX2, AVX-512VL (where the CPU has them) */
        int cap = mk_ct_simd_cap(level);
        mk_qerr e = {0, 0, 0};
        memset(qf, 0xaa, n);
        mk_ct_fp8_quantize_bf16(a, xb, n, s, qf, &e);
        char w[96];
        snprintf(w, sizeof w, "%s, scale %a, n %zu, level %d", what, (double)s, n, level);
        first_diff(w, qf, qr, n);
        if (level == 0) e0 = e;
        CHECK_MSG(e.sx2 == e0.sx2 && e.se2 == e0.se2 && e.maxe == e0.maxe, "%s: error sums %.17g %.17g %g, want %.17g %.17g %g (exact)", w,
                  e.sx2, e.se2, e.maxe, e0.sx2, e0.se2, e0.maxe);
        memset(qf, 0xaa, n);
        mk_ct_fp8_quantize_bf16(a, xb, n, s, qf, NULL);
        first_diff(w, qf, qr, n);
        mk_ct_simd_cap(cap);
    }
    free(qr), free(qf);
}

/* The bf16 FP8 vector paths on every finite bf16 pattern below 2^50 (ties, the subnormal
 * FP8 range, +-0, saturation) at scales of each kind, and on lengths that leave tails. */
MK_TEST(quant_fp8_bf16_simd_matches_reference)
{
    static const float scales[] = {1.0f, 0x1p-12f, 0x1p9f, 0x1.5p-7f, 0x1.fep-3f, 0x1.24p-9f, 3.0f, 0x1p-20f};
    uint16_t *xb = malloc(65536 * 2);
    float *x = malloc(65536 * 4);
    size_t n = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float v = mk_bf16_to_f32((uint16_t)b);
        if (fabsf(v) < 0x1p50f) xb[n] = (uint16_t)b, x[n++] = v; /* finite sums of x^2 */
    }
    for (int e5 = 0; e5 < 2; e5++) {
        mk_ct_fp8 a = {e5 != 0, MK_BF16};
        const char *what = e5 ? "fp8 e5m2 from bf16" : "fp8 e4m3 from bf16";
        for (size_t k = 0; k < sizeof scales / sizeof *scales; k++) fp8_bf16_levels(&a, xb, x, n, scales[k], what);
        /* weights as a model has them, where the error sums see every rounding; lengths that
         * leave tails after the 32- and 8-value steps */
        static const size_t lens[] = {1, 7, 8, 9, 31, 32, 40, 63, 97, 1029, 4096};
        for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
            float *g = gaussian(1700 + k, lens[k], 0.02, 0.01, 8, MK_BF16);
            uint16_t *gb = malloc(lens[k] * 2);
            for (size_t i = 0; i < lens[k]; i++) gb[i] = mk_f32_to_bf16(g[i]);
            fp8_bf16_levels(&a, gb, g, lens[k], mk_ct_fp8_scale(&a, mk_ct_absmax(g, lens[k])), what);
            fp8_bf16_levels(&a, gb, g, lens[k], 0x1.8p-9f, what);
            free(g), free(gb);
        }
        /* the row entry: the absmax on the bit patterns is the f32 one */
        for (size_t len = 1; len <= 70; len += 23) {
            uint8_t q[70];
            mk_qerr e = {0, 0, 0};
            for (int level = 0; level <= 2; level++) {
                int cap = mk_ct_simd_cap(level);
                float sr = mk_ct_fp8_row_bf16(&a, xb + 32000 + len, len, q, &e), sf = mk_ct_fp8_scale(&a, mk_ct_absmax(x + 32000 + len, len));
                CHECK_MSG(sr == sf, "%s row of %zu (level %d): scale %a, want %a", what, len, level, (double)sr, (double)sf);
                mk_ct_simd_cap(cap);
            }
        }
    }
    free(xb), free(x);
}

/* The packing fast path gives the reference's words for every length (tails, padding) and
 * every byte value a code can hold. */
MK_TEST(quant_ct_pack_fast_matches_reference)
{
    static const size_t sizes[] = {1, 7, 8, 31, 32, 33, 64, 100, 128, 1029};
    uint32_t rng = 12345;
    for (unsigned bits = 4; bits <= 8; bits += 4)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si], nw = (n * bits + 31) / 32;
            int8_t *q = malloc(n);
            uint32_t *wr = malloc(nw * 4), *wf = malloc(nw * 4);
            for (size_t i = 0; i < n; i++) {
                rng = rng * 1664525u + 1013904223u;
                q[i] = (int8_t)(bits == 8 ? (int)(rng >> 24) - 128 : (int)(rng >> 28) - 8);
            }
            mk_ct_pack_row_ref(bits, q, n, wr);
            mk_ct_pack_row(bits, q, n, wf);
            for (size_t w = 0; w < nw; w++)
                CHECK_MSG(wr[w] == wf[w], "pack %u bits n %zu: word %zu is %08x, reference %08x", bits, n, w, wf[w], wr[w]);
            free(q), free(wr), free(wf);
        }
}

/* Every bf16 (and f16) input through the FP8 fast path and the reference: the vector
 * rounding must agree with the scalar encoder on all 65536 patterns, and decode alike. */
MK_TEST(quant_fp8_fast_matches_reference_exhaustive)
{
    for (int e5 = 0; e5 < 2; e5++)
        for (int f16 = 0; f16 < 2; f16++) {
            mk_ct_fp8 a = {e5 != 0, f16 ? MK_F16 : MK_BF16};
            float *x = malloc(65536 * 4), *xh = malloc(65536 * 4);
            size_t n = 0;
            for (uint32_t b = 0; b < 65536; b++) {
                float v = f16 ? mk_f16_to_f32((uint16_t)b) : mk_bf16_to_f32((uint16_t)b);
                if (isfinite(v) && fabsf(v) < 60000.0f) x[n++] = v; /* x / 1 stays finite in f16 */
            }
            uint8_t *qr = malloc(n), *qf = malloc(n);
            mk_ct_fp8_quantize_ref(&a, x, n, 1.0f, qr);
            mk_qerr e = {0, 0, 0}, w;
            mk_ct_fp8_quantize(&a, x, n, 1.0f, qf, &e);
            char what[48];
            snprintf(what, sizeof what, "fp8 %s from every %s", e5 ? "e5m2" : "e4m3", f16 ? "f16" : "bf16");
            first_diff(what, qf, qr, n);
            mk_ct_fp8_dequant(&a, qr, n, 1.0f, xh);
            ref_err(x, xh, n, &w);
            check_err(what, &e, &w);
            /* never a NaN code: values are clamped first */
            for (size_t i = 0; i < n; i++) CHECK_MSG((qr[i] & 0x7f) != 0x7f || e5, "%s: NaN code for %g", what, (double)x[i]);
            free(x), free(xh), free(qr), free(qf);
        }
    /* f32 weights with scales */
    float *x = gaussian(400, 4099, 0.02, 0.01, 10, MK_F32), *xh = malloc(4099 * 4);
    uint8_t *qr = malloc(4099), *qf = malloc(4099);
    for (int e5 = 0; e5 < 2; e5++) {
        mk_ct_fp8 a = {e5 != 0, MK_F32};
        float s = mk_ct_fp8_scale(&a, mk_ct_absmax(x, 4099));
        mk_ct_fp8_quantize_ref(&a, x, 4099, s, qr);
        mk_qerr e = {0, 0, 0}, w;
        mk_ct_fp8_quantize(&a, x, 4099, s, qf, &e);
        first_diff("fp8 f32", qf, qr, 4099);
        mk_ct_fp8_dequant(&a, qr, 4099, s, xh);
        ref_err(x, xh, 4099, &w);
        check_err("fp8 f32", &e, &w);
    }
    free(x), free(xh), free(qr), free(qf);
}

/* Real error of one group as compressed-tensors decodes it. */
/* The squared error of a group as compressed-tensors decodes it, each value's weighted by w[i]
 * (NULL: 1). */
static double group_err(const mk_ct_int *a, const float *x, const float *w, size_t n, float s, int32_t z)
{
    int8_t q[4096];
    float xh[4096];
    mk_ct_int_codes_ref(a, x, n, s, z, q);
    mk_ct_int_dequant(a, q, n, s, z, xh);
    double e = 0;
    for (size_t i = 0; i < n; i++) e += (w ? w[i] : 1.0) * ((double)x[i] - xh[i]) * ((double)x[i] - xh[i]);
    return e;
}

/* The scale search with importances (int4, groups of 128, Gaussian weights with outliers,
 * importances spread over two orders of magnitude as an imatrix's are): never worse than
 * round-to-nearest in the weighted error on any group (it falls back), a clear gain in total,
 * and other scales than without the importances. Margins: the weighted error falls by >= 40 %
 * (sym) and >= 30 % (asym); measured 56.9 % and 45.6 %. */
MK_TEST(quant_search_beats_rtn)
{
    const size_t G = 128, ng = 512;
    float *x = gaussian(500, G * ng, 0.02, 0.001, 8, MK_BF16), *imp = gaussian(501, G * ng, 1.0, 0, 1, MK_F32);
    for (size_t i = 0; i < G * ng; i++) imp[i] = expf(2.3f * imp[i]);
    for (int asym = 0; asym < 2; asym++) {
        mk_ct_int a = {4, asym != 0, MK_BF16};
        double er = 0, es = 0;
        size_t worse = 0, other = 0;
        for (size_t g = 0; g < ng; g++) {
            const float *xg = x + g * G, *wg = imp + g * G;
            float s1, s2, s3;
            int32_t z1, z2, z3;
            mk_ct_int_qparams(&a, xg, G, &s1, &z1);
            mk_search_int_qparams(&a, xg, wg, G, &s2, &z2);
            mk_search_int_qparams(&a, xg, NULL, G, &s3, &z3);
            CHECK_MSG(s2 == mk_ct_round(MK_BF16, s2) && s2 > 0, "search scale %g is not a positive bf16 value", (double)s2);
            CHECK_MSG(z2 >= mk_ct_qmin(&a) && z2 <= mk_ct_qmax(&a), "search zero point %d out of range", z2);
            double a1 = group_err(&a, xg, wg, G, s1, z1), a2 = group_err(&a, xg, wg, G, s2, z2);
            worse += a2 > a1 * (1 + 1e-6);
            other += s2 != s3 || z2 != z3;
            er += a1;
            es += a2;
        }
        CHECK_MSG(worse == 0, "%s: search worse than rtn on %zu groups", asym ? "asym" : "sym", worse);
        CHECK_MSG(other > ng / 4, "%s: the importances change the scale of only %zu of %zu groups", asym ? "asym" : "sym", other, ng);
        double gain = 1 - es / er;
        if (getenv("MK_QUANT_REPORT")) printf("  search gain (%s, int4 g128): %.2f %% less weighted squared error\n", asym ? "asym" : "sym", 100 * gain);
        CHECK_MSG(gain >= (asym ? 0.30 : 0.40), "%s: search reduces the weighted squared error by %.2f %%, want >= %d %%",
                  asym ? "asym" : "sym", 100 * gain, asym ? 30 : 40);
    }
    free(x);
    free(imp);
}

/* Relative RMSE on the reference file's synthetic matrix (N(0, 0.02^2), 0.1 % of entries x8;
 * 7.3 used 4096 x 4096, we use 1024 x 1024): within 3 % of the anchors measured there
 * (we get 0.1001, 0.0258, 0.1472, 0.1145 against 0.0996, 0.0260, 0.1461, 0.1141). */
MK_TEST(quant_weight_error_anchors)
{
    const size_t R = 1024, C = 1024, n = R * C;
    float *x = gaussian(600, n, 0.02, 0.001, 8, MK_F32);
    double sx2 = 0;
    for (size_t i = 0; i < n; i++) sx2 += (double)x[i] * x[i];
    struct { const char *name; double anchor; double got; } r[4] = {
        {"NF4 bs64 (bnb)", 0.0996, 0}, {"FP8 E4M3 per channel", 0.0260, 0}, {"INT4 sym g128", 0.1461, 0}, {"INT4 asym g128", 0.1141, 0}};
    uint8_t *p = malloc(n);
    float *am = malloc(n / 64 * 4);
    mk_qerr e = {0, 0, 0};
    mk_bnb4_quantize(MK_BNB_NF4, 64, x, n, am, p, NULL, &e);
    r[0].got = sqrt(e.se2 / e.sx2);
    memset(&e, 0, sizeof e);
    mk_ct_fp8 f = {false, MK_F32};
    for (size_t row = 0; row < R; row++)
        mk_ct_fp8_quantize(&f, x + row * C, C, mk_ct_fp8_scale(&f, mk_ct_absmax(x + row * C, C)), p + row * C, &e);
    r[1].got = sqrt(e.se2 / e.sx2);
    for (int asym = 0; asym < 2; asym++) {
        mk_ct_int a = {4, asym != 0, MK_F32};
        memset(&e, 0, sizeof e);
        for (size_t g = 0; g < n; g += 128) {
            float s;
            int32_t z;
            mk_ct_int_qparams(&a, x + g, 128, &s, &z);
            mk_ct_int_codes(&a, x + g, 128, s, z, (int8_t *)p + g, &e);
        }
        r[2 + asym].got = sqrt(e.se2 / e.sx2);
    }
    for (int k = 0; k < 4; k++) {
        if (getenv("MK_QUANT_REPORT")) printf("  %-24s relative RMSE %.4f (anchor %.4f)\n", r[k].name, r[k].got, r[k].anchor);
        CHECK_MSG(fabs(r[k].got / r[k].anchor - 1) <= 0.03, "%s: relative RMSE %.4f, anchor %.4f (margin 3 %%)", r[k].name, r[k].got,
                  r[k].anchor);
    }
    (void)sx2;
    free(x), free(p), free(am);
}

MK_TEST(quant_options)
{
    mk_qopts o;
    CHECK_OK(mk_qopts_parse("nf4,double-quant,block-size=128", &o));
    CHECK_OK(mk_qopts_resolve(&o, true));
    CHECK(o.fmt == mk_qformat_find("nf4") && o.double_quant && o.block == 128 && !strcmp(mk_qfamily_layout(o.fam), "bitsandbytes"));
    CHECK_OK(mk_qopts_parse("int4", &o));
    CHECK_OK(mk_qopts_resolve(&o, true));
    CHECK(o.group == 128 && !strcmp(mk_qfamily_layout(o.fam), "compressed-tensors") && !o.asym);
    CHECK_OK(mk_qopts_parse("int8,target=compressed-tensors,scheme=asym,method=search", &o));
    CHECK_OK(mk_qopts_resolve(&o, true));
    CHECK(o.group == 0 && o.asym && o.method == MK_QM_SEARCH);
    CHECK_ERR(mk_qopts_parse("nf5", &o), MK_ERR_USAGE, "did you mean 'nf4'");
    CHECK_ERR(mk_qopts_parse("nf4,blocksize=64", &o), MK_ERR_USAGE, "unknown setting 'blocksize=64'");
    CHECK_OK(mk_qopts_parse("nf4,block-size=48", &o));
    CHECK_ERR(mk_qopts_resolve(&o, false), MK_ERR_USAGE, "power of two");
    CHECK_OK(mk_qopts_parse("fp8,per-tensor", &o));
    CHECK_ERR(mk_qopts_resolve(&o, true), MK_ERR_USAGE, "per-tensor scale");
    CHECK_OK(mk_qopts_parse("fp8,per-tensor", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    CHECK_OK(mk_qopts_parse("nf4,method=search", &o));
    CHECK_ERR(mk_qopts_resolve(&o, false), MK_ERR_USAGE, "--method search applies");
    CHECK_OK(mk_qopts_parse("int4,target=bnb", &o));
    CHECK_ERR(mk_qopts_resolve(&o, false), MK_ERR_USAGE, "only written for compressed-tensors");
    CHECK_OK(mk_qopts_parse("int8,group-size=64", &o));
    CHECK_ERR(mk_qopts_resolve(&o, false), MK_ERR_USAGE, "--group-size applies");
    char b[160];
    CHECK_OK(mk_qopts_parse("int4,group-size=64,scheme=asym", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    CHECK_STR(mk_qopts_describe(&o, b), "int4 (compressed-tensors, group 64, asymmetric, round to nearest)");
}

static mk_tensor_info ti(const char *name, mk_dtype dt, int ndim, int64_t d0, int64_t d1)
{
    mk_tensor_info t = {.name = (char *)name, .dtype = dt, .ndim = ndim, .shape = {d0, d1}};
    mk_tensor_info_finish(&t);
    return t;
}

/* Which tensors are quantized, what they become, and what the config tells the loader. */
MK_TEST(quant_plan_selection_and_layout)
{
    mk_tensor_info in[] = {
        ti("model.embed_tokens.weight", MK_BF16, 2, 100, 256), ti("model.layers.0.input_layernorm.weight", MK_BF16, 1, 256, 0),
        ti("model.layers.0.self_attn.q_proj.weight", MK_BF16, 2, 256, 256), ti("model.layers.0.self_attn.q_proj.bias", MK_BF16, 1, 256, 0),
        ti("model.layers.0.mlp.down_proj.weight", MK_BF16, 2, 256, 200), ti("model.layers.0.mlp.up_proj.weight", MK_I32, 2, 4, 4),
        ti("lm_head.weight", MK_BF16, 2, 100, 256),
    };
    size_t n = sizeof in / sizeof *in;
    mk_qopts o;
    mk_qplan p;
    CHECK_OK(mk_qopts_parse("int4", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, n));
    CHECK_EQ_INT(p.n_quantized, 1); /* down_proj: 200 columns is not a multiple of 128 */
    CHECK(p.t[2].quantized && !p.t[4].quantized && !p.t[0].quantized && !p.t[6].quantized);
    CHECK_STR(p.t[4].kept_why, "columns not a multiple of the group size");
    CHECK_OK(mk_qplan_layout(&p));
    CHECK_STR(p.out[p.t[2].out0].name, "model.layers.0.self_attn.q_proj.weight_packed");
    CHECK(p.out[p.t[2].out0].dtype == MK_I32 && p.out[p.t[2].out0].shape[1] == 32);
    CHECK_STR(p.out[p.t[2].out0 + 1].name, "model.layers.0.self_attn.q_proj.weight_scale");
    CHECK(p.out[p.t[2].out0 + 1].shape[1] == 2 && p.out[p.t[2].out0 + 1].dtype == MK_BF16);
    CHECK_STR(p.out[p.t[2].out0 + 2].name, "model.layers.0.self_attn.q_proj.weight_shape");
    char *cfg = mk_qplan_config_json(&p);
    CHECK_MSG(cfg && strstr(cfg, "\"ignore\": [\n    \"lm_head\",\n    \"model.layers.0.mlp.down_proj\"\n  ]"), "ignore list: %s", cfg ? cfg : "(none)");
    free(cfg);
    mk_qplan_free(&p);

    /* bitsandbytes: --skip and --include; a non-default skip list names lm_head itself */
    CHECK_OK(mk_qopts_parse("nf4,double-quant", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    o.skip = "*.down_proj.*";
    o.include = "embed_tokens";
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, n));
    CHECK(p.t[0].quantized && !p.t[4].quantized && p.t[2].quantized);
    CHECK_OK(mk_qplan_layout(&p));
    const mk_tensor_info *w = &p.out[p.t[2].out0];
    CHECK(w->dtype == MK_U8 && w->shape[0] == 256 * 256 / 2 && w->shape[1] == 1);
    CHECK_STR(p.out[p.t[2].out0 + 1].name, "model.layers.0.self_attn.q_proj.weight.absmax");
    CHECK(p.out[p.t[2].out0 + 1].dtype == MK_U8);
    CHECK_STR(p.out[p.t[2].out0 + 5].name, "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4");
    cfg = mk_qplan_config_json(&p);
    CHECK_MSG(cfg && strstr(cfg, "\"llm_int8_skip_modules\": [\n    \"lm_head\",\n    \"model.layers.0.mlp.down_proj\"\n  ],"), "%s", cfg ? cfg : "(none)");
    CHECK_MSG(cfg && strstr(cfg, "\"bnb_4bit_use_double_quant\": true"), "%s", cfg ? cfg : "(none)");
    free(cfg);
    /* the blob is reserved long enough for any offset, and padded */
    char *j = mk_qplan_final_json(&p, 2, 0.012345679104328156f, (size_t)p.out[p.t[2].out0 + 5].nbytes);
    CHECK_MSG(j && strstr(j, "\"nested_offset\": 0.012345679104328156}"), "%s", j ? j : "(none)");
    free(j);
    j = mk_qplan_final_json(&p, 2, -3.4028234663852886e38f, (size_t)p.out[p.t[2].out0 + 5].nbytes);
    CHECK_MSG(j && strstr(j, "-3.4028234663852886e+38"), "%s", j ? j : "(none)");
    free(j);
    mk_qplan_free(&p);
}

/* A plan that quantizes nothing is a usage error saying why; one that keeps some weights for
 * their shape says how many, and which group size would keep none. */
MK_TEST(quant_plan_nothing_quantized)
{
    mk_tensor_info in[] = {
        ti("model.embed_tokens.weight", MK_BF16, 2, 100, 576), ti("model.layers.0.self_attn.q_proj.weight", MK_BF16, 2, 576, 576),
        ti("model.layers.0.mlp.up_proj.weight", MK_BF16, 2, 1536, 576), ti("model.layers.0.mlp.down_proj.weight", MK_BF16, 2, 576, 1536),
        ti("model.norm.weight", MK_BF16, 1, 576, 0),
    };
    size_t n = sizeof in / sizeof *in;
    mk_qopts o;
    mk_qplan p;
    char note[256];
    CHECK_OK(mk_qopts_parse("int4", &o)); /* groups of 128: 576 is no multiple, 1536 is */
    CHECK_OK(mk_qopts_resolve(&o, false));
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, n));
    CHECK(p.n_quantized == 1 && p.n_kept_shape == 2 && p.n_weights == 4 && p.t[1].kept_for_shape && !p.t[0].kept_for_shape);
    CHECK_OK(mk_qplan_check(&p));
    p.o.fam->kept_note(&p, false, note, sizeof note);
    CHECK_STR(note, "--group-size 128 does not divide their columns (576); --group-size 64 divides the columns of every weight");
    mk_qplan_free(&p);
    CHECK_OK(mk_qopts_parse("int4,group-size=7", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, n));
    CHECK_ERR(mk_qplan_check(&p), MK_ERR_USAGE,
              "int4 (compressed-tensors, group 7, symmetric, round to nearest) quantizes no weight: --group-size 7 divides the "
              "columns of no weight (576, 1536); --group-size 64 divides them all");
    mk_qplan_free(&p);
    CHECK_OK(mk_qopts_parse("int8,target=compressed-tensors,group-size=5", &o)); /* widths whose only power-of-two divisor is 1 */
    CHECK_OK(mk_qopts_resolve(&o, false));
    mk_tensor_info odd[] = {ti("a.weight", MK_BF16, 2, 8, 9), ti("b.weight", MK_BF16, 2, 8, 27)};
    CHECK_OK(mk_qplan_init(&p, &o, NULL, odd, 2));
    CHECK_ERR(mk_qplan_check(&p), MK_ERR_USAGE, "--group-size 5 divides the columns of no weight (9, 27); --group-size 0 (one scale per row) fits them all");
    mk_qplan_free(&p);
    CHECK_OK(mk_qopts_parse("nf4", &o));
    CHECK_OK(mk_qopts_resolve(&o, false));
    o.skip = "proj";
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, n));
    CHECK_ERR(mk_qplan_check(&p), MK_ERR_USAGE, "nf4 (bitsandbytes, block 64) quantizes no weight: --skip keeps 3 weights, and embeddings");
    mk_qplan_free(&p);
    o.skip = NULL;
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in, 1));
    CHECK_ERR(mk_qplan_check(&p), MK_ERR_USAGE, "its only weight matrices are embeddings or lm_head (1)");
    mk_qplan_free(&p);
    CHECK_OK(mk_qplan_init(&p, &o, NULL, in + 4, 1));
    CHECK_ERR(mk_qplan_check(&p), MK_ERR_USAGE, "none of its 1 tensors is a 2-D float weight matrix");
    mk_qplan_free(&p);
}

/* ---- the consumer, over a sink in memory ---------------------------------------------------- */
typedef struct memsink {
    size_t n;
    mk_tensor_info *t;
    unsigned char **data;
    size_t done;
} memsink;

static mk_status ms_begin(mk_sink *k, const mk_tensor_info *t, size_t n)
{
    memsink *m = k->impl;
    m->n = n;
    m->t = calloc(n, sizeof *t);
    m->data = calloc(n, sizeof *m->data);
    memcpy(m->t, t, n * sizeof *t);
    for (size_t i = 0; i < n; i++) m->data[i] = calloc(t[i].nbytes + 1, 1);
    return MK_OK;
}
static mk_status ms_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    memsink *m = k->impl;
    if (off + len > m->t[i].nbytes) MK_BUG("write past the end");
    memcpy(m->data[i] + off, d, len);
    return MK_OK;
}
static mk_status ms_done(mk_sink *k, size_t i)
{
    (void)i;
    ((memsink *)k->impl)->done++;
    return MK_OK;
}
static void ms_free(mk_sink *k)
{
    memsink *m = k->impl;
    for (size_t i = 0; i < m->n; i++) free(m->data[i]);
    free(m->data);
    free(m->t);
    free(m);
}
static const mk_sink_ops ms_ops = {ms_begin, NULL, ms_write, ms_done, NULL, NULL, NULL, NULL};

/* A sink in memory for p's stored tensors, begun, and the quantizing consumer into it. */
static memsink *memsink_consumer(const mk_qplan *p, mk_sink *k, mk_consumer *c)
{
    memsink *m = calloc(1, sizeof *m);
    *k = (mk_sink){&ms_ops, NULL, 0, NULL, m};
    k->ops->begin(k, p->out, p->n_out);
    CHECK_OK(mk_quant_consumer(c, k, p, true, false));
    return m;
}

/* Quantize one weight through the consumer in chunks of `chunk_rows` rows; optionally
 * with the prepass. Returns the sink (caller frees) and copies the stats. */
static memsink *run_consumer(const char *spec, const float *x, int64_t rows, int64_t cols, size_t chunk_rows, bool prepass,
                             mk_qstats *st, mk_status *status)
{
    mk_qopts o;
    mk_qplan p;
    mk_tensor_info w = ti("m.weight", MK_BF16, 2, rows, cols);
    *status = mk_qopts_parse(spec, &o);
    if (*status == MK_OK) *status = mk_qopts_resolve(&o, false);
    if (*status != MK_OK) return NULL;
    CHECK_OK(mk_qplan_init(&p, &o, NULL, &w, 1));
    CHECK_OK(mk_qplan_layout(&p));
    mk_sink k;
    mk_consumer c;
    memsink *m = memsink_consumer(&p, &k, &c);
    mk_status s = c.ops->begin(&c, 0, &p.in[0]);
    uint64_t al = c.ops->align(&c, &p.in[0]);
    CHECK_MSG((chunk_rows * (uint64_t)cols) % al == 0 || chunk_rows >= (size_t)rows, "chunk of %zu rows breaks alignment %llu", chunk_rows,
              (unsigned long long)al);
    if (s == MK_OK && prepass && c.ops->wants_prepass(&c, 0)) {
        for (int64_t r = 0; r < rows && s == MK_OK; r += (int64_t)chunk_rows) {
            int64_t nr = rows - r < (int64_t)chunk_rows ? rows - r : (int64_t)chunk_rows;
            s = c.ops->observe(&c, 0, (uint64_t)(r * cols), x + r * cols, (uint64_t)(nr * cols));
        }
        if (s == MK_OK) s = c.ops->observe_end(&c, 0);
    }
    for (int64_t r = 0; r < rows && s == MK_OK; r += (int64_t)chunk_rows) {
        int64_t nr = rows - r < (int64_t)chunk_rows ? rows - r : (int64_t)chunk_rows;
        s = c.ops->rows(&c, 0, (uint64_t)(r * cols), x + r * cols, (uint64_t)(nr * cols));
    }
    if (s == MK_OK) s = c.ops->end(&c, 0);
    *status = s;
    if (s == MK_OK) *st = *mk_quant_stats(&c, 0);
    c.ops->close(&c);
    mk_qplan_free(&p);
    return m;
}

static void free_memsink(memsink *m)
{
    if (!m) return;
    mk_sink k = {&ms_ops, NULL, 0, NULL, m};
    ms_free(&k);
}

/* Same bytes whatever the chunking; the statistics agree with a direct computation. */
MK_TEST(quant_consumer_chunking_and_stats)
{
    static const char *specs[] = {"nf4", "fp4,block-size=128", "nf4,double-quant", "int8", "int4,group-size=32",
                                  "int4,group-size=32,scheme=asym", "int8,target=compressed-tensors,method=search",
                                  "fp8", "fp8,per-tensor", "fp8-e5m2", "nvfp4", "mxfp4", "mxfp8"};
    const int64_t R = 40, C = 96;
    float *x = gaussian(700, (size_t)(R * C), 0.02, 0.003, 8, MK_BF16);
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        mk_qstats a, b;
        mk_status sa, sb;
        memsink *m1 = run_consumer(specs[s], x, R, C, 8, true, &a, &sa);
        memsink *m2 = run_consumer(specs[s], x, R, C, 40, true, &b, &sb);
        CHECK_MSG(sa == MK_OK && sb == MK_OK, "%s: %s", specs[s], mk_errmsg());
        if (sa == MK_OK && sb == MK_OK) {
            CHECK_EQ_INT(m1->n, m2->n);
            for (size_t i = 0; i < m1->n; i++)
                CHECK_MSG(memcmp(m1->data[i], m2->data[i], m1->t[i].nbytes) == 0, "%s: %s differs between chunkings", specs[s],
                          m1->t[i].name);
            CHECK_EQ_INT(m1->done, m1->n);
            CHECK_MSG(a.quantized && a.done && !a.max_err_bound, "%s: stats flags", specs[s]);
            CHECK_MSG(fabs(a.sum_e2 - b.sum_e2) <= 1e-6 * b.sum_e2, "%s: error sums %.9g vs %.9g", specs[s], a.sum_e2, b.sum_e2);
            double bpw = 8.0 * (double)a.out_bytes / (double)a.numel;
            CHECK_MSG(bpw > 4 && bpw < 17, "%s: %.3f bits per weight", specs[s], bpw);
            double rel = sqrt(a.sum_e2 / a.sum_x2);
            CHECK_MSG(rel > 0.001 && rel < 0.3, "%s: relative RMSE %.4f", specs[s], rel);
        }
        free_memsink(m1);
        free_memsink(m2);
    }
    free(x);
}

/* Double quant without the prepass (inside a merge): the same bytes except the padded
 * blob; the same sum of squared errors (rtol 1e-5, f32 per-block sums), and a max error
 * that is an upper bound of the exact one. */
MK_TEST(quant_consumer_double_quant_without_prepass)
{
    const int64_t R = 64, C = 300; /* 300 blocks of 64: two nested blocks */
    float *x = gaussian(800, (size_t)(R * C), 0.02, 0.003, 8, MK_BF16);
    mk_qstats a, b;
    mk_status sa, sb;
    memsink *m1 = run_consumer("nf4,double-quant", x, R, C, 16, true, &a, &sa);
    memsink *m2 = run_consumer("nf4,double-quant", x, R, C, 16, false, &b, &sb);
    CHECK(sa == MK_OK && sb == MK_OK);
    if (sa == MK_OK && sb == MK_OK) {
        for (size_t i = 0; i + 1 < m1->n; i++) /* all but the JSON blob */
            CHECK_MSG(memcmp(m1->data[i], m2->data[i], m1->t[i].nbytes) == 0, "%s differs", m1->t[i].name);
        const char *j1 = (const char *)m1->data[m1->n - 1], *j2 = (const char *)m2->data[m2->n - 1];
        size_t l1 = (size_t)m1->t[m1->n - 1].nbytes;
        CHECK_MSG(strncmp(j1, j2, l1) == 0 && (j2[l1] == ' ' || !j2[l1]), "blobs differ beyond padding: %s vs %s", j1, j2);
        CHECK_MSG(fabs(a.sum_e2 - b.sum_e2) <= 1e-5 * a.sum_e2, "sum e^2 %.9g vs %.9g", a.sum_e2, b.sum_e2);
        CHECK_MSG(b.max_err_bound && b.max_err >= a.max_err, "max %.9g (bound %d) vs exact %.9g", b.max_err, b.max_err_bound, a.max_err);
    }
    free_memsink(m1);
    free_memsink(m2);
    free(x);
}

MK_TEST(quant_consumer_rejects_nan_and_f16_overflow)
{
    const int64_t R = 4, C = 64;
    float *x = gaussian(900, (size_t)(R * C), 0.02, 0, 1, MK_BF16);
    mk_qstats st;
    mk_status s;
    x[2 * C + 5] = NAN;
    memsink *m = run_consumer("nf4", x, R, C, 4, true, &st, &s);
    CHECK_ERR(s, MK_ERR_NUMERIC, "tensor m.weight: NaN at element 133 (row 2, column 5)");
    free_memsink(m);
    x[2 * C + 5] = -INFINITY;
    m = run_consumer("fp8", x, R, C, 1, true, &st, &s);
    CHECK_ERR(s, MK_ERR_NUMERIC, "-Inf at element 133");
    free_memsink(m);
    x[2 * C + 5] = 70000.0f; /* bf16-representable, beyond f16 */
    m = run_consumer("int8", x, R, C, 4, true, &st, &s);
    CHECK_ERR(s, MK_ERR_NUMERIC, "overflows float16");
    free_memsink(m);
    free(x);
}

/* ---- the reader's checks ---------------------------------------------------------------------- */

/* Write a one-shard safetensors file from (info, bytes) pairs into dir/name/. */
static const char *write_model(const char *name, const mk_tensor_info *t, const void *const *data, size_t n, const char *config)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", mk_test_tmpdir(), name);
    mk_rm_rf(dir);
    mk_mkdir_p(dir);
    mk_sink *k = NULL;
    mk_st_sink_opts so = {.shard_size = 0};
    CHECK_OK(mk_safetensors_sink(dir, &so, &k));
    CHECK_OK(k->ops->begin(k, t, n));
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(k->ops->write(k, i, 0, data[i], t[i].nbytes));
        CHECK_OK(k->ops->tensor_done(k, i));
    }
    if (config) CHECK_OK(k->ops->add_file(k, "config.json", config, strlen(config)));
    CHECK_OK(k->ops->commit(k));
    mk_sink_close(k);
    return dir;
}

static mk_status probe(const char *dir)
{
    mk_source *s = NULL;
    mk_qinfo qi;
    mk_status st = mk_safetensors_open(dir, &s);
    if (st == MK_OK) st = mk_qsource_probe(s, &qi);
    mk_source_close(s);
    return st;
}

MK_TEST(quant_reader_rejects_inconsistent_tensors)
{
    static uint8_t zeros[4096];
    const char *blob = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [16, 16]}";
    mk_tensor_info t[4] = {ti("a.weight", MK_U8, 2, 128, 1), ti("a.weight.absmax", MK_F32, 1, 4, 0), ti("a.weight.quant_map", MK_F32, 1, 16, 0),
                           ti("a.weight.quant_state.bitsandbytes__nf4", MK_U8, 1, (int64_t)strlen(blob), 0)};
    const void *d[4] = {zeros, zeros, zeros, blob};
    CHECK_OK(probe(write_model("ok", t, d, 4, NULL)));
    t[1] = ti("a.weight.absmax", MK_F32, 1, 5, 0);
    CHECK_ERR(probe(write_model("absmax", t, d, 4, NULL)), MK_ERR_FORMAT, "tensor a.weight.absmax (absmax): expected F32 [4], found F32 [5]");
    t[1] = ti("a.weight.absmax", MK_F32, 1, 4, 0);
    t[0] = ti("a.weight", MK_U8, 2, 127, 1);
    CHECK_ERR(probe(write_model("packed", t, d, 4, NULL)), MK_ERR_FORMAT, "expected U8 [128, 1], found U8 [127, 1]");
    t[0] = ti("a.weight", MK_U8, 2, 128, 1);
    const char *bad = "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"bfloat16\", \"shape\": [16, 16]}";
    t[3] = ti("a.weight.quant_state.bitsandbytes__nf4", MK_U8, 1, (int64_t)strlen(bad), 0);
    d[3] = bad;
    CHECK_ERR(probe(write_model("block", t, d, 4, NULL)), MK_ERR_FORMAT, "blocksize must be a power of two");
    const char *huge = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [4294967296, 4294967296]}";
    t[3] = ti("a.weight.quant_state.bitsandbytes__nf4", MK_U8, 1, (int64_t)strlen(huge), 0);
    d[3] = huge;
    CHECK_ERR(probe(write_model("huge", t, d, 4, NULL)), MK_ERR_FORMAT, "product at most 2^40");
    const char *fp4 = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [16, 16]}";
    t[3] = ti("a.weight.quant_state.bitsandbytes__nf4", MK_U8, 1, (int64_t)strlen(fp4), 0);
    d[3] = fp4;
    CHECK_ERR(probe(write_model("qtype", t, d, 4, NULL)), MK_ERR_FORMAT, "quant_type must be \"nf4\"");

    /* compressed-tensors: a shape that does not fit the packed words */
    int64_t shape[2] = {4, 100};
    mk_tensor_info c[3] = {ti("b.weight_packed", MK_I32, 2, 4, 8), ti("b.weight_scale", MK_BF16, 2, 4, 1), ti("b.weight_shape", MK_I64, 1, 2, 0)};
    const void *cd[3] = {zeros, zeros, shape};
    const char *cfg = "{\"quantization_config\": {\"quant_method\": \"compressed-tensors\", \"config_groups\": {\"g\": {\"weights\": "
                      "{\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"channel\"}}}}}";
    CHECK_ERR(probe(write_model("ct", c, cd, 3, cfg)), MK_ERR_FORMAT, "expected I32 [4, 13], found I32 [4, 8]");
    shape[1] = 64;
    CHECK_OK(probe(write_model("ct-ok", c, cd, 3, cfg)));
    shape[0] = 5;
    CHECK_ERR(probe(write_model("ct-rows", c, cd, 3, cfg)), MK_ERR_FORMAT, "[5, 64] does not fit");
    /* an FP8 weight without its scale */
    mk_tensor_info f[1] = {ti("c.weight", MK_F8_E4M3, 2, 4, 4)};
    const void *fd[1] = {zeros};
    CHECK_ERR(probe(write_model("fp8", f, fd, 1, NULL)), MK_ERR_FORMAT, "has no c.weight_scale");
}

/* ---- every row of the format table, in every layout ------------------------------------------ */

/* Quantize w (one weight of N(0, 1) values plus a kept norm) with options o, write the
 * stored tensors and the config as a checkpoint, read it back through the decoder: the
 * decoded weight's error equals what the consumer reported (SUM_RTOL on the sum of
 * squares; the max exactly, unless it is a bound), the reader names the format and layout, and with
 * the default settings the relative RMSE stays within the row's documented bound. */
static void round_trip(const mk_qopts *o, const float *x, int64_t R, int64_t C, bool dflt)
{
    char desc[160], what[200];
    snprintf(what, sizeof what, "%s", mk_qopts_describe(o, desc));
    static const float norm[4] = {1, 1, 1, 1};
    mk_tensor_info in[2] = {ti("model.layers.0.mlp.up_proj.weight", MK_BF16, 2, R, C), ti("model.norm.weight", MK_F32, 1, 4, 0)};
    mk_qplan p;
    CHECK_OK(mk_qplan_init(&p, o, NULL, in, 2));
    CHECK_MSG(p.n_quantized == 1, "%s: %zu weights quantized", what, p.n_quantized);
    if (mk_qplan_wants_offset(&p, 0)) { /* what mk_qstream_offsets finds */
        uint64_t nb = p.o.fam->offset_scratch(&p, 0);
        float *sc = calloc(nb, sizeof *sc);
        p.o.fam->offset_rows(&p, 0, sc, 0, x, (uint64_t)(R * C));
        mk_qplan_set_offset(&p, 0, p.o.fam->offset_end(&p, 0, sc));
        free(sc);
    }
    CHECK_OK(mk_qplan_layout(&p));
    mk_sink k;
    mk_consumer c;
    memsink *m = memsink_consumer(&p, &k, &c);
    const float *vals[2] = {x, norm};
    mk_qstats st = {0};
    for (size_t i = 0; i < 2; i++) {
        uint64_t n = p.in[i].numel;
        mk_status s = c.ops->begin(&c, i, &p.in[i]);
        if (s == MK_OK && c.ops->wants_prepass(&c, i)) s = c.ops->observe(&c, i, 0, vals[i], n);
        if (s == MK_OK && c.ops->wants_prepass(&c, i)) s = c.ops->observe_end(&c, i);
        if (s == MK_OK) s = c.ops->rows(&c, i, 0, vals[i], n);
        if (s == MK_OK) s = c.ops->end(&c, i);
        CHECK_MSG(s == MK_OK, "%s: %s", what, mk_errmsg());
    }
    st = *mk_quant_stats(&c, 0);
    c.ops->close(&c);
    char *cfg = mk_qplan_config_json(&p), *config = mk_asprintf("{\"quantization_config\": %s}", cfg);
    const void **data = calloc(m->n, sizeof *data);
    for (size_t i = 0; i < m->n; i++) data[i] = m->data[i];
    const char *dir = write_model("roundtrip", m->t, data, m->n, config);
    mk_source *raw = NULL, *src = NULL;
    mk_qinfo qi;
    CHECK_OK(mk_safetensors_open(dir, &raw));
    mk_status s = raw ? mk_qsource_open(raw, &src, &qi) : MK_ERR_IO;
    CHECK_MSG(s == MK_OK, "%s: %s", what, mk_errmsg());
    if (s == MK_OK) {
        CHECK_MSG(!strcmp(qi.format, o->fmt->name) && !strcmp(qi.layout, mk_qfamily_layout(o->fam)), "%s: read as %s (%s)", what,
                  qi.format, qi.layout);
        /* the model's parameters (the weight's R x C and the norm's 4), and every stored byte */
        uint64_t stored = 0;
        for (size_t i = 0; i < m->n; i++) stored += m->t[i].nbytes;
        CHECK_MSG(qi.params == (uint64_t)(R * C) + 4 && qi.stored_bytes == stored && stored == p.out_bytes,
                  "%s: %llu parameters and %llu bytes stored, want %llu and %llu", what, (unsigned long long)qi.params,
                  (unsigned long long)qi.stored_bytes, (unsigned long long)(R * C) + 4, (unsigned long long)stored);
        long wi = mk_source_find(src, "model.layers.0.mlp.up_proj.weight");
        float *y = malloc((size_t)(R * C) * sizeof *y);
        CHECK_MSG(wi >= 0 && src->tensors[wi].dtype == MK_F32, "%s: the weight is not listed as F32", what);
        if (wi >= 0) CHECK_OK(src->ops->read(src, (size_t)wi, 0, (uint64_t)(R * C) * 4, y));
        double se2 = 0, sx2 = 0, maxe = 0;
        size_t worst = 0;
        for (size_t j = 0; wi >= 0 && j < (size_t)(R * C); j++) {
            double d = (double)x[j] - y[j];
            se2 += d * d, sx2 += (double)x[j] * x[j];
            if (fabs(d) > maxe) maxe = fabs(d), worst = j;
        }
        double rel = sqrt(se2 / sx2);
        if (getenv("MK_QUANT_REPORT")) printf("  %-60s relative RMSE %.4f (bound %.4f)\n", what, rel, o->fmt->max_rel_rmse);
        CHECK_MSG(fabs(se2 - st.sum_e2) <= SUM_RTOL * se2, "%s: decoded sum e^2 %.12g, consumer's %.12g (rtol %g)", what, se2, st.sum_e2,
                  SUM_RTOL);
        CHECK_MSG(st.max_err_bound ? maxe <= st.max_err : maxe == st.max_err,
                  "%s: decoded max |err| %.9g at element %zu (got %.9g, want %.9g), consumer's %.9g", what, maxe, worst, (double)y[worst],
                  (double)x[worst], st.max_err);
        if (dflt)
            CHECK_MSG(rel <= o->fmt->max_rel_rmse, "%s: relative RMSE %.5f above the documented %.5f (worst element %zu: got %.6g, want %.6g)",
                      what, rel, o->fmt->max_rel_rmse, worst, (double)y[worst], (double)x[worst]);
        free(y);
        mk_source_close(src);
    } else {
        mk_source_close(raw);
    }
    free(data);
    free(cfg);
    free(config);
    free_memsink(m);
    mk_qplan_free(&p);
}

MK_TEST(quant_every_format_round_trips)
{
    const int64_t R = 64, C = 512;
    float *x = gaussian(1000, (size_t)(R * C), 1.0, 0, 1, MK_BF16);
    size_t runs = 0;
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        for (size_t k = 0; k < mk_qformat_nlayouts(f); k++) {
            mk_qopts o;
            mk_qopts_init(&o, f);
            o.target = mk_qfamily_layout(f->layouts[k]);
            CHECK_OK(mk_qopts_resolve(&o, false));
            round_trip(&o, x, R, C, true), runs++;
            /* and with each setting that has a second value, where it applies */
            static const char *const alt[][2] = {{"double-quant", NULL}, {"per-tensor", NULL}, {"scheme", "asym"}, {"method", "search"},
                                                 {"block-size", "128"}, {"group-size", "64"}};
            for (size_t a = 0; a < sizeof alt / sizeof *alt; a++) {
                const mk_qsetting *s = mk_qsetting_find(alt[a][0]);
                CHECK_MSG(s != NULL, "no setting %s", alt[a][0]);
                if (!s || !mk_qsetting_applies(s, f, f->layouts[k])) continue;
                mk_qopts v;
                mk_qopts_init(&v, f);
                v.target = o.target;
                CHECK_OK(mk_qopts_set(&v, alt[a][0], alt[a][1], ""));
                CHECK_OK(mk_qopts_resolve(&v, false));
                round_trip(&v, x, R, C, false), runs++;
            }
        }
    CHECK_MSG(runs >= 2 * mk_qformat_count(), "only %zu round trips for %zu formats", runs, mk_qformat_count());
    free(x);
}

/* Every setting the help lists applies to some format, and every format's default options
 * resolve and describe themselves with the row's name and layout. */
MK_TEST(quant_table_is_consistent)
{
    for (const mk_qsetting *s = mk_qsettings; s->key; s++) {
        char b[256];
        mk_qsetting_formats(s, b, sizeof b);
        CHECK_MSG(b[0] != 0, "setting %s applies to no format", s->key);
        mk_qopts o;
        mk_qopts_init(&o, NULL);
        CHECK_MSG(s->given(&o) == false, "setting %s is given in unset options", s->key);
    }
    for (const mk_qformat *f = mk_qformats; f->name; f++) {
        CHECK_MSG(mk_qformat_find(f->name) == f && mk_qformat_nlayouts(f) >= 1 && f->max_rel_rmse > 0 && f->bits > 0,
                  "row %s is incomplete", f->name);
        for (size_t k = 0; k < mk_qformat_nlayouts(f); k++) {
            mk_qopts o;
            mk_qopts_init(&o, f);
            o.target = mk_qfamily_layout(f->layouts[k]);
            CHECK_OK(mk_qopts_resolve(&o, false));
            char d[160], want[160];
            snprintf(want, sizeof want, "%s (%s", f->name, o.target);
            CHECK_MSG(strncmp(mk_qopts_describe(&o, d), want, strlen(want)) == 0, "%s describes itself as %s", want, d);
            double bpw = 0;
            CHECK_OK(mk_qopts_bits_per_weight(&o, &bpw));
            CHECK_MSG(bpw > f->bits && bpw < f->bits + 1, "%s: %.4f bits per weight for %u-bit codes", want, bpw, f->bits);
        }
    }
    const mk_qformat *f;
    CHECK_ERR(mk_qformat_lookup("nf5", "--format", &f), MK_ERR_USAGE, "unknown format 'nf5' (did you mean 'nf4'?) (formats: nf4, fp4,");
}
