/* test_della_rank.c - the fast paths of the task-vector family against their references, bit
 * for bit (exact: any differing flag or bit fails, named by its place):
 *   mk_della_row_keep (counting rank of bf16-like keys) = mk_della_row_keep_ref (radix sort),
 *   mk_sum_abs_kept (vector lanes) = the scalar 8-lane loop it replaced,
 *   sce's fused block kernels = their step-by-step reference loops.
 * Inputs: rows of 1..100 elements and some long odd ones; bf16-rounded values in narrow
 * and very wide ranges (both the counting rank and its fallback to the sort), zeros, -0,
 * all equal, denormals, Inf and NaN, and f32 values (low key bits set).
 */
#include "harness.h"

#include "../../core/mk_dtype.h"
#include "../../core/mk_rng.h"
#include "../../merge/methods/della_rank.h"
#include "../../merge/methods/kernel.h"
#include "../../merge/methods/sce_kernels.h"

#include <stdlib.h>

enum { KINDS = 8 };

/* Row value j of kind `kind` (stream s): */
static float test_value(int kind, mk_rng key, uint64_t s, uint64_t j)
{
    float u = mk_rng_uniform(key, s, j), v = mk_rng_uniform(key, s + 1000, j);
    float x;
    switch (kind) {
    case 0: x = 1.0f + u; break;                                  /* one binade: few bins */
    case 1: x = (u - 0.5f) * 0.02f; break;                        /* a delta-like spread */
    case 2: x = ldexpf(u + 0.5f, (int)(v * 200.0f) - 140); break; /* denormals to 1e18: many bins */
    case 3: x = v < 0.3f ? 0.0f : v < 0.4f ? -0.0f : (u - 0.5f) * 1e-3f; break;
    case 4: x = 0.0f; break;
    case 5: x = v < 0.5f ? 0.25f : -0.25f; break;                 /* all magnitudes equal */
    case 6: x = v < 0.05f ? INFINITY : v < 0.1f ? NAN : v < 0.15f ? -INFINITY : u - 0.5f; break;
    default: x = (u - 0.5f) * 3.0f; break;                        /* f32: low key bits */
    }
    return kind == KINDS - 1 ? x : mk_dtype_round(MK_BF16, x);
}

MK_TEST(della_counting_rank_matches_radix_sort)
{
    static const uint64_t big[] = {255, 1001, 2048, 5504, 65537};
    const uint64_t nmax = 65537;
    float *d = malloc(nmax * sizeof *d), *u = malloc(nmax * sizeof *u), *pr = malloc(nmax * sizeof *pr);
    uint8_t *got = malloc(nmax), *want = malloc(nmax);
    uint32_t *words = malloc(mk_della_buf_words(nmax) * sizeof *words);
    mk_della_buf b;
    mk_della_buf_carve(&b, words, nmax);
    mk_rng key = mk_rng_key(41, "della_rank");
    long bad = 0, runs = 0;
    for (int kind = 0; kind < KINDS; kind++)
        for (size_t t = 0; t < 100 + sizeof big / sizeof *big; t++) {
            const uint64_t n = t < 100 ? t + 1 : big[t - 100];
            for (uint64_t j = 0; j < n; j++) {
                d[j] = test_value(kind, key, (uint64_t)(kind * 1000) + t, j);
                u[j] = mk_rng_uniform(key, 7, j);
                /* non-decreasing, with runs of equal values as bf16 makes them */
                pr[j] = mk_dtype_round(MK_BF16, 0.3f + 0.4f * (float)j / (float)n);
            }
            mk_della_row_keep_ref(pr, d, u, n, &b, want);
            memset(got, 2, (size_t)n);
            mk_della_row_keep(pr, d, u, n, &b, got);
            runs++;
            for (uint64_t j = 0; j < n; j++)
                if (got[j] != want[j]) {
                    if (bad++ < 5)
                        mk_test_fail(__FILE__, __LINE__, "kind %d n %llu: flag %llu (|delta| %g) is %d, want %d", kind,
                                     (unsigned long long)n, (unsigned long long)j, (double)fabsf(d[j]), got[j], want[j]);
                    break;
                }
        }
    CHECK_MSG(bad == 0, "%ld of %ld rows differ", bad, runs);
    free(d);
    free(u);
    free(pr);
    free(got);
    free(want);
    free(words);
}

/* The scalar loop mk_sum_abs_kept replaced: lane i % 8, then the lanes in a fixed tree. */
static void sum_abs_kept_ref(const float *x, const uint8_t *keep, uint64_t n, double *all, double *kept)
{
    double a[MK_LANES] = {0}, k[MK_LANES] = {0};
    for (uint64_t i = 0; i < n; i++) {
        double v = fabs((double)x[i]);
        a[i % MK_LANES] += v;
        k[i % MK_LANES] += v * (double)keep[i];
    }
    *all = mk_lanes_total(a);
    *kept = mk_lanes_total(k);
}

/* The same bits, or both NaN: C leaves a NaN's sign and payload to the compiler, which may
 * swap the operands of an addition (clang does, in either copy), so NaN bits are not kept. */
static bool same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)); }

MK_TEST(sum_abs_kept_matches_scalar_lanes)
{
    enum { NMAX = 1031 };
    float *x = malloc((NMAX + 1) * sizeof *x);
    uint8_t *keep = malloc(NMAX + 1);
    mk_rng key = mk_rng_key(43, "sum_abs_kept");
    long bad = 0;
    for (int kind = 0; kind < KINDS; kind++)
        for (uint64_t n = 0; n <= NMAX; n = n < 100 ? n + 1 : n * 2 + 1) {
            /* from offset 1: unaligned loads */
            for (uint64_t j = 0; j < n; j++) {
                x[1 + j] = test_value(kind, key, n, j);
                keep[1 + j] = mk_rng_uniform(key, 99, j) < 0.6f;
            }
            double a0, k0, a1, k1;
            sum_abs_kept_ref(x + 1, keep + 1, n, &a0, &k0);
            mk_sum_abs_kept(x + 1, keep + 1, n, &a1, &k1);
            if (!same_double(a0, a1) || !same_double(k0, k1))
                if (bad++ < 5)
                    mk_test_fail(__FILE__, __LINE__, "kind %d n %llu: sums %.17g %.17g, want %.17g %.17g", kind,
                                 (unsigned long long)n, a1, k1, a0, k0);
        }
    CHECK_MSG(bad == 0, "%ld runs differ", bad);
    free(x);
    free(keep);
}

/* sce's fused block kernels (sce_kernels.h) against the reference loops, for every K they
 * are built for (and one past: the reference both ways), the f32, bf16 and f16 compute
 * dtypes, blocks of 0..100 elements and some longer odd ones. */
MK_TEST(sce_fused_kernels_match_reference)
{
    enum { SMAX = 1031, KM = 5 };
    static const mk_dtype dts[] = {MK_F32, MK_BF16, MK_F16};
    float *T = malloc(KM * SMAX * sizeof *T), *Tr = malloc(KM * SMAX * sizeof *Tr), *base = malloc(SMAX * sizeof *base);
    float *scr = malloc(3 * SMAX * sizeof *scr), *o1 = malloc(SMAX * sizeof *o1), *o2 = malloc(SMAX * sizeof *o2);
    double *dscr = malloc(2 * SMAX * sizeof *dscr);
    uint32_t *k1 = malloc(SMAX * sizeof *k1), *k2 = malloc(SMAX * sizeof *k2);
    uint8_t *keep = malloc(SMAX);
    mk_rng key = mk_rng_key(47, "sce_kernels");
    long bad = 0;
    for (size_t di = 0; di < sizeof dts / sizeof *dts; di++)
        for (size_t K = 1; K <= KM; K++)
            for (uint64_t n = 0; n <= SMAX - 3; n = n < 100 ? n + 1 : n * 2 + 3) {
                const mk_dtype dt = dts[di];
                const size_t stride = (size_t)n + 3;
                const int kind = (int)((n + K) % KINDS);
                float c[KM];
                for (size_t k = 0; k < K; k++) {
                    c[k] = mk_dtype_round(dt, mk_rng_uniform(key, 500 + k, n));
                    for (uint64_t i = 0; i < n; i++)
                        T[k * stride + i] = mk_dtype_round(dt, test_value(kind, key, 600 + 7 * n + k, i) * 0.01f);
                }
                for (uint64_t i = 0; i < n; i++) {
                    base[i] = mk_dtype_round(dt, mk_rng_uniform(key, 99, i) - 0.5f);
                    keep[i] = mk_rng_uniform(key, 98, i + n) < 0.5f;
                }
                const size_t bytes = K * stride * sizeof *T;
                mk_sce_keys(dt, K, T, stride, n, dscr, k1, true);
                mk_sce_keys(dt, K, T, stride, n, dscr, k2, false);
                /* sums from 0 (the block summed at once where exact) and from 1.5 (a coarse
                 * running sum: the element-order chain) */
                const double r0 = n % 3 ? 0.0 : 1.5;
                double r1[KM] = {r0, 0, 0, 0, 0}, r2[KM] = {r0, 0, 0, 0, 0};
                memcpy(Tr, T, bytes);
                mk_sce_sum_sq(dt, K, Tr, stride, keep, n, r1, true);
                memcpy(Tr, T, bytes);
                mk_sce_sum_sq(dt, K, Tr, stride, keep, n, r2, false);
                memcpy(Tr, T, bytes);
                mk_sce_out(dt, K, c, Tr, stride, keep, base, n, scr, o1, true);
                memcpy(Tr, T, bytes);
                mk_sce_out(dt, K, c, Tr, stride, keep, base, n, scr, o2, false);
                uint64_t i = 0;
                while (i < n && k1[i] == k2[i] && memcmp(&o1[i], &o2[i], sizeof *o1) == 0) i++;
                if ((i < n || memcmp(r1, r2, K * sizeof *r1)) && bad++ < 5)
                    mk_test_fail(__FILE__, __LINE__,
                                 "dtype %d K %zu n %llu: element %llu key %08x out %.9g, want %08x %.9g; sums %.17g, want %.17g",
                                 (int)dt, K, (unsigned long long)n, (unsigned long long)i, i < n ? k2[i] : 0,
                                 i < n ? o2[i] : 0.0, i < n ? k1[i] : 0, i < n ? o1[i] : 0.0, r2[0], r1[0]);
            }
    CHECK_MSG(bad == 0, "%ld blocks differ", bad);
    free(T);
    free(Tr);
    free(base);
    free(scr);
    free(o1);
    free(o2);
    free(dscr);
    free(k1);
    free(k2);
    free(keep);
}
