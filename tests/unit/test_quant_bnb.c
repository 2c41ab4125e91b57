/* test_quant_bnb.c - the bitsandbytes fast kernels (quant/bnb.c) on the inputs that decide
 * a code: scaled values exactly on a 4-bit midpoint and one ulp either side, +-0,
 * denormals, blocks of zeros, partial last blocks; and bf16 weights read as stored against
 * the same values as f32 and the reference, over every finite bf16 value (4-bit and
 * LLM.int8). test_quant.c holds the random-shape comparisons and the consumer's tests.
 */
#include "harness.h"
#include "quant_check.h"

#include "../../core/mk_dtype.h"
#include "../../core/mk_rng.h"
#include "../../quant/bnb.h"

#include <stdlib.h>

/* N(0, std^2) values, a share of them `outlier` times larger (deterministic). */
static float *normals(uint64_t seed, size_t n, double std, double outlier_share, double outlier)
{
    float *x = malloc(n * sizeof *x + 4);
    mk_rng k = mk_rng_key(seed, "test_quant_bnb");
    for (size_t i = 0; i < n; i += 2) {
        double z0, z1;
        mk_det_normal2(1.0 - mk_rng_uniform(k, 0, i), mk_rng_uniform(k, 0, i + 1), &z0, &z1);
        x[i] = (float)(z0 * std);
        if (i + 1 < n) x[i + 1] = (float)(z1 * std);
    }
    for (size_t i = 0; i < n; i++)
        if (mk_rng_uniform(k, 1, i) < outlier_share) x[i] *= (float)outlier;
    return x;
}

/* The 15 midpoints of a 4-bit type in ascending order, as bnb.h defines them: of the code
 * values sorted (FP4's two zeros give a midpoint of 0), (a + b) / 2 in f32. */
static void bnb4_mids(int t, float mid[15])
{
    float v[16];
    memcpy(v, mk_bnb4_code[t], sizeof v);
    for (int a = 1; a < 16; a++) /* insertion sort */
        for (int b = a; b > 0 && v[b - 1] > v[b]; b--) {
            float tmp = v[b];
            v[b] = v[b - 1];
            v[b - 1] = tmp;
        }
    for (int k = 0; k < 15; k++) mid[k] = (v[k] + v[k + 1]) / 2.0f;
}

/* The fast kernel (AVX2 from block 32 where the CPU has it, the portable vectors at block
 * 16) on the cases that decide a code: scaled values exactly on a midpoint and one ulp
 * either side (absmax 1 and a power of two, so the scaling is exact), +-0, denormals
 * (alone: the absmax clamp), blocks of zeros and a partial last block. Bytes and absmax
 * exact; error sums to SUM_RTOL, max error exact. */
MK_TEST(quant_bnb4_fast_edges)
{
    static const unsigned blocks[] = {16, 32, 64, 256};
    for (int t = 0; t < 2; t++) {
        float mid[15];
        bnb4_mids(t, mid);
        for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++) {
            const unsigned B = blocks[bi];
            const size_t n = (size_t)B * 24 + B / 2 + 3; /* a partial, odd last block */
            float *x = normals(300 + bi, n, 0.02, 0.01, 8);
            for (size_t b0 = 0, k = 0; b0 < n; b0 += B, k++) {
                size_t len = n - b0 < B ? n - b0 : B;
                float *xb = x + b0, sc = k % 6 == 3 ? 0x1p-7f : 1.0f;
                if (k % 6 == 0) memset(xb, 0, len * sizeof *xb);
                for (size_t i = 0; k % 6 == 1 && i < len; i++) { /* denormals and signed zeros */
                    uint32_t u = (uint32_t)(i * 2654435761u) & 0x807fffffu;
                    if (i % 5 == 0) u &= 0x80000000u;
                    memcpy(&xb[i], &u, 4);
                }
                if (k % 6 != 2 && k % 6 != 3) continue;
                xb[0] = (k & 1 ? -1.0f : 1.0f) * sc;
                for (size_t i = 1; i < len; i++) {
                    float m = mid[i % 15];
                    int v = (int)(i / 15) % 4;
                    m = v == 1 ? nextafterf(m, 2.0f) : v == 2 ? nextafterf(m, -2.0f) : v == 3 ? -m : m;
                    xb[i] = m * sc;
                }
            }
            size_t nb = (size_t)mk_bnb_nblocks(n, B);
            uint8_t *pr = calloc(n / 2 + 1, 1), *pf = calloc(n / 2 + 1, 1);
            float *ar = malloc(nb * 4), *af = malloc(nb * 4), *xh = malloc(n * 4);
            mk_bnb4_quantize_ref((mk_bnb4_type)t, B, x, n, ar, pr);
            mk_qerr e = {0, 0, 0}, w;
            mk_bnb4_quantize((mk_bnb4_type)t, B, x, n, af, pf, NULL, &e);
            char what[96];
            snprintf(what, sizeof what, "%s edges block %u n %zu", t ? "fp4" : "nf4", B, n);
            first_diff(what, pf, pr, (n + 1) / 2);
            CHECK_MSG(memcmp(af, ar, nb * 4) == 0, "%s: absmax differs", what);
            mk_bnb4_dequant((mk_bnb4_type)t, B, pr, ar, 0, n, xh);
            ref_err(x, xh, n, &w);
            check_err(what, &e, &w);
            free(x), free(pr), free(pf), free(ar), free(af), free(xh);
        }
    }
}

/* bf16 bit patterns read as stored against the same values as f32: every finite bf16
 * value, in order (magnitudes side by side) and with |v| <= 1 in blocks led by 1.0 (each
 * at scale 1). The same bytes, absmax and error sums (exactly: the same values in the same
 * order), and the reference's bytes. */
MK_TEST(quant_bnb4_bf16_matches_f32)
{
    static const unsigned blocks[] = {16, 64, 4096};
    uint16_t *h = malloc(65536 * 2 + 65536 / 15 * 2 + 64);
    float *f = malloc((65536 + 65536 / 15 + 32) * 4);
    for (int pass = 0; pass < 2; pass++)
        for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++) {
            const unsigned B = blocks[bi];
            size_t n = 0;
            for (uint32_t u = 0; u < 65536; u++) {
                if ((u & 0x7f80) == 0x7f80 || (pass && (u & 0x7fff) > 0x3f80)) continue;
                if (pass && n % B == 0) h[n++] = 0x3f80; /* 1.0 leads each block */
                h[n++] = (uint16_t)u;
            }
            n -= bi; /* partial last blocks of several lengths */
            for (size_t i = 0; i < n; i++) f[i] = mk_bf16_to_f32(h[i]);
            for (int t = 0; t < 2; t++) {
                size_t nb = (size_t)mk_bnb_nblocks(n, B);
                uint8_t *pb = calloc(n / 2 + 1, 1), *pf = calloc(n / 2 + 1, 1), *pr = calloc(n / 2 + 1, 1);
                float *ab = malloc(nb * 4), *af = malloc(nb * 4), *ar = malloc(nb * 4);
                mk_qerr eb = {0, 0, 0}, ef = {0, 0, 0};
                mk_bnb4_quantize_x((mk_bnb4_type)t, B, h, true, n, ab, pb, NULL, &eb);
                mk_bnb4_quantize((mk_bnb4_type)t, B, f, n, af, pf, NULL, &ef);
                mk_bnb4_quantize_ref((mk_bnb4_type)t, B, f, n, ar, pr);
                char what[96];
                snprintf(what, sizeof what, "%s bf16 pass %d block %u n %zu", t ? "fp4" : "nf4", pass, B, n);
                first_diff(what, pb, pr, (n + 1) / 2);
                first_diff(what, pf, pr, (n + 1) / 2);
                CHECK_MSG(memcmp(ab, ar, nb * 4) == 0 && memcmp(af, ar, nb * 4) == 0, "%s: absmax differs", what);
                CHECK_MSG(eb.sx2 == ef.sx2 && eb.se2 == ef.se2 && eb.maxe == ef.maxe,
                          "%s: sums bf16 %.17g %.17g %.9g, f32 %.17g %.17g %.9g (exact)", what, eb.sx2, eb.se2, (double)eb.maxe,
                          ef.sx2, ef.se2, (double)ef.maxe);
                free(pb), free(pf), free(pr), free(ab), free(af), free(ar);
            }
        }
    free(h);
    free(f);
}

/* LLM.int8 on bf16 bit patterns read as stored against the same values as f32 and the
 * reference: every bf16 value below f16's overflow (65520) in order, so that rows of f16
 * subnormals (which round) and of normals (which do not) both occur, after a zero row.
 * The same codes, SCB and error sums (exactly). */
MK_TEST(quant_int8_bf16_matches_f32)
{
    static const size_t colss[] = {7, 64, 1000, 4099};
    uint16_t *h = malloc(2 * 65536 + 2 * 4099 * 2);
    float *f = malloc(4 * (65536 + 2 * 4099));
    for (size_t ci = 0; ci < sizeof colss / sizeof *colss; ci++) {
        const size_t cols = colss[ci];
        size_t n = 0;
        for (; n < cols; n++) h[n] = (uint16_t)(n & 1 ? 0x8000 : 0); /* +-0 */
        for (uint32_t u = 0; u < 65536; u++)
            if ((u & 0x7fff) < 0x4780) h[n++] = (uint16_t)u;
        n = n / cols * cols;
        const size_t rows = n / cols;
        for (size_t i = 0; i < n; i++) f[i] = mk_bf16_to_f32(h[i]);
        int8_t *qb = malloc(n), *qf = malloc(n), *qr = malloc(n);
        float *sb = malloc(rows * 4), *sf = malloc(rows * 4), *sr = malloc(rows * 4);
        mk_qerr eb = {0, 0, 0}, ef = {0, 0, 0};
        mk_bnb_int8_quantize_x(h, true, rows, cols, qb, sb, &eb);
        mk_bnb_int8_quantize(f, rows, cols, qf, sf, &ef);
        mk_bnb_int8_quantize_ref(f, rows, cols, qr, sr);
        char what[64];
        snprintf(what, sizeof what, "int8 bf16 [%zu, %zu]", rows, cols);
        first_diff(what, qb, qr, n);
        first_diff(what, qf, qr, n);
        CHECK_MSG(memcmp(sb, sr, rows * 4) == 0 && memcmp(sf, sr, rows * 4) == 0, "%s: SCB differs", what);
        CHECK_MSG(eb.sx2 == ef.sx2 && eb.se2 == ef.se2 && eb.maxe == ef.maxe,
                  "%s: sums bf16 %.17g %.17g %.9g, f32 %.17g %.17g %.9g (exact)", what, eb.sx2, eb.se2, (double)eb.maxe, ef.sx2,
                  ef.se2, (double)ef.maxe);
        free(qb), free(qf), free(qr), free(sb), free(sf), free(sr);
    }
    free(h);
    free(f);
}
