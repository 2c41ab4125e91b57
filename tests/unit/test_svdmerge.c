/* test_svdmerge.c - the randomised truncated SVD (core/mk_linalg's mk_svd_rand) against
 * LAPACK's full SVD: on its own, and inside tsv, iso_cts and cart (their default) against
 * the same merges with exact_svd.
 *
 * Named tolerances (the worst element is printed on failure):
 *   RSVD_DECAY: task matrices whose singular values fall by 0.9 per index (the spectrum of
 *     tests/golden/svdmerge): a merged tensor within 1e-5 of the largest |merged - base|
 *     (the goldens' own bound, there relative to the whole tensor) of the exact merge; the
 *     error of a kept triplet shrinks like (0.9^10)^9 = 7.8e-5 at 4 power iterations and is
 *     weighted by its singular value, 0.9^k of the top one. Seen: 2.4e-6 (mk_svd_rand's
 *     rank-20 part of a [150, 220] matrix), 2.1e-6 (tsv).
 *   RSVD_FLAT_ENERGY: a matrix of uniform noise (no gap anywhere): the top-k part keeps at
 *     least 95% of the exact top-k energy (the vectors themselves are not determined there).
 *     Seen: 98.9%.
 *   RSVD_FROB: iso_cts and cart truncate matrices whose spectra interleave (Iso-CTS's task
 *     matrices with the common subspace projected out; CART's centred task vectors, each a
 *     mix of all N task matrices: three 0.9-per-index spectra make one falling by about
 *     0.9^(1/3) = 0.965 per index, so the sketch's extra k/2 columns and 4 power iterations
 *     leave an error near (0.965^(k/2))^9); their merged change is within 1e-2 of the exact
 *     merge's in the Frobenius norm. Seen on this test: tsv 2.6e-6, iso_cts 7.4e-5, cart
 *     2.5e-3 (worst elements 2.1e-6, 1.1e-4 and 3.7e-3 of the largest change).
 */
#include "harness.h"
#include "methods_run.h"

#include "../../core/mk_linalg.h"
#include "../../core/mk_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RSVD_DECAY 1e-5
#define RSVD_FLAT_ENERGY 0.95
#define RSVD_FROB 1e-2

/* x [m, n] = U diag(scale * 0.9^q) V^T with random orthonormal U [m, kf], V [n, kf] */
static void decaying(float *x, uint64_t m, uint64_t n, double scale, uint64_t seed)
{
    uint64_t kf = m < n ? m : n;
    float *a = malloc(m * kf * sizeof *a), *b = malloc(n * kf * sizeof *b);
    float *u = malloc(m * kf * sizeof *u), *v = malloc(n * kf * sizeof *v);
    mk_rng key = mk_rng_key(seed, "decaying");
    for (uint64_t e = 0; e < m * kf; e++) a[e] = mk_rng_uniform(key, 0, e) - 0.5f;
    for (uint64_t e = 0; e < n * kf; e++) b[e] = mk_rng_uniform(key, 1, e) - 0.5f;
    CHECK_OK(mk_polar(a, m, kf, u, "a"));
    CHECK_OK(mk_polar(b, n, kf, v, "b"));
    double sv = scale;
    for (uint64_t q = 0; q < kf; q++, sv *= 0.9)
        for (uint64_t i = 0; i < m; i++) u[i * kf + q] *= (float)sv;
    mk_gemm(false, true, m, n, kf, 1.0f, u, kf, v, kf, 0.0f, x, n);
    free(a);
    free(b);
    free(u);
    free(v);
}

static double energy(const float *s, uint64_t k)
{
    double e = 0;
    for (uint64_t q = 0; q < k; q++) e += (double)s[q] * s[q];
    return e;
}

MK_TEST(rsvd_close_to_exact_on_a_decaying_spectrum)
{
    const uint64_t m = 150, n = 220, kf = 150, k = 20;
    float *d = malloc(m * n * sizeof *d), *u = malloc(m * kf * sizeof *u), *s = malloc(kf * sizeof *s);
    float *vh = malloc(kf * n * sizeof *vh), *ur = malloc(m * k * sizeof *ur), *sr = malloc(k * sizeof *sr);
    float *vr = malloc(k * n * sizeof *vr), *r1 = malloc(m * n * sizeof *r1), *r2 = malloc(m * n * sizeof *r2);
    decaying(d, m, n, 1.0, 3);
    CHECK_OK(mk_svd_thin(d, m, n, u, s, vh, "d"));
    CHECK_OK(mk_svd_rand(d, m, n, k, 4, 10, mk_rng_key(0, "d"), ur, sr, vr, "d"));
    /* rank-k reconstructions U_k S_k Vh_k */
    for (uint64_t i = 0; i < m; i++)
        for (uint64_t q = 0; q < k; q++) u[i * kf + q] *= s[q], ur[i * k + q] *= sr[q];
    mk_gemm(false, false, m, n, k, 1.0f, u, kf, vh, n, 0.0f, r1, n);
    mk_gemm(false, false, m, n, k, 1.0f, ur, k, vr, n, 0.0f, r2, n);
    float mag = 0;
    for (uint64_t e = 0; e < m * n; e++) mag = fmaxf(mag, fabsf(r1[e]));
    CHECK_CLOSE("randomised vs exact rank-20 part (RSVD_DECAY)", r2, r1, m * n, RSVD_DECAY * mag, 0);
    for (uint64_t q = 0; q < k; q++)
        CHECK_MSG(fabsf(sr[q] - s[q]) <= 1e-5f * s[0], "singular value %llu: randomised %g, exact %g",
                  (unsigned long long)q, sr[q], s[q]);
    /* a sketch that reaches min(m, n) is the exact SVD, truncated: the same bytes */
    float *vt = malloc(kf * n * sizeof *vt);
    CHECK_OK(mk_svd_thin(d, m, n, u, s, vh, "d"));
    CHECK_OK(mk_svd_rand(d, m, n, kf - 5, 4, 10, mk_rng_key(0, "d"), r1, r2, vt, "d"));
    CHECK(memcmp(r2, s, (kf - 5) * sizeof *s) == 0);
    CHECK(memcmp(vt, vh, (kf - 5) * n * sizeof *vh) == 0);
    free(vt);
    /* NaN in the input is an error naming the matrix, on the randomised path too */
    d[7] = NAN;
    CHECK_ERR(mk_svd_rand(d, m, n, k, 4, 10, mk_rng_key(0, "d"), ur, sr, vr, "tensor q"), MK_ERR_NUMERIC, "tensor q");
    free(d), free(u), free(s), free(vh), free(ur), free(sr), free(vr), free(r1), free(r2);
}

MK_TEST(rsvd_keeps_most_energy_of_a_flat_spectrum)
{
    const uint64_t m = 160, n = 200, kf = 160, k = 24;
    float *d = malloc(m * n * sizeof *d), *u = malloc(m * kf * sizeof *u), *s = malloc(kf * sizeof *s);
    float *vh = malloc(kf * n * sizeof *vh), *sr = malloc(k * sizeof *sr);
    mk_rng key = mk_rng_key(4, "flat");
    for (uint64_t e = 0; e < m * n; e++) d[e] = mk_rng_uniform(key, 0, e) - 0.5f;
    CHECK_OK(mk_svd_thin(d, m, n, u, s, vh, "flat"));
    CHECK_OK(mk_svd_rand(d, m, n, k, 4, 10, mk_rng_key(0, "flat"), u, sr, vh, "flat"));
    double ex = energy(s, k), ra = energy(sr, k);
    CHECK_MSG(ra <= ex * (1 + 1e-5) && ra >= RSVD_FLAT_ENERGY * ex, "flat spectrum: randomised top-%llu energy %.6g, exact %.6g",
              (unsigned long long)k, ra, ex);
    free(d), free(u), free(s), free(vh), free(sr);
}

/* tsv, iso_cts and cart by default (randomised truncations at this size) against exact_svd,
 * on three task matrices with decaying spectra. */
MK_TEST(svdmerge_randomised_close_to_exact)
{
    const uint64_t m = 256, n = 400, numel = m * n;
    /* scales without ties among CART's centred combinations (2 T_k - T_j - T_l) / 3, whose
     * spectra interleave: a tie would make even the exact truncation arbitrary */
    const double task_scale[3] = {0.01, 0.013, 0.017};
    float *x[4];
    mk_rng key = mk_rng_key(12, "svdmerge");
    for (int k = 0; k < 4; k++) {
        x[k] = malloc(numel * sizeof(float));
        if (k) decaying(x[k], m, n, task_scale[k - 1], 20 + (uint64_t)k);
        for (uint64_t i = 0; i < numel; i++) {
            float b = 0.02f * (mk_rng_uniform(key, 0, i) - 0.5f);
            x[k][i] = k ? b + x[k][i] : b;
        }
    }
    const float *in[4] = {x[0], x[1], x[2], x[3]};
    float *a = malloc(numel * sizeof *a), *b = malloc(numel * sizeof *b);
    /* the fractions put every truncation but iso_cts's common subspace on the randomised path:
     * tsv keeps 28 per task, cart 23, iso_cts 32 per task (a sketch of at most 192 / 4) */
    const struct {
        const char *method, *frac_name;
        double frac, elem_tol, frob_tol;
    } cases[] = {{"tsv", "sv_reduction", 0.15, RSVD_DECAY, RSVD_FROB},
                 {"iso_cts", "common_space_fraction", 0.5, 0, RSVD_FROB},
                 {"cart", "rank_ratio", 0.12, 0, RSVD_FROB}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        mt_run r = {.method = cases[c].method, .name = "model.layers.0.mlp.up_proj.weight", .rows = m, .cols = n,
                    .n_in = 4, .base = 0, .in = in, .g_names = {cases[c].frac_name, "exact_svd"},
                    .g_vals = {cases[c].frac, 1}};
        CHECK_OK(mt_run_method(&r, a));
        r.g_vals[1] = 0;
        CHECK_OK(mt_run_method(&r, b));
        /* the scale: the merged change (cart: from the average) */
        float mag = 0;
        double dd = 0, dm = 0, worst = -1;
        uint64_t at = 0;
        for (uint64_t i = 0; i < numel; i++) {
            float ref = x[0][i];
            if (strcmp(cases[c].method, "cart") == 0)
                ref = x[0][i] + ((x[1][i] - x[0][i]) + (x[2][i] - x[0][i]) + (x[3][i] - x[0][i])) / 3;
            mag = fmaxf(mag, fabsf(a[i] - ref));
            double e = fabs((double)b[i] - a[i]);
            dd += e * e, dm += ((double)a[i] - ref) * ((double)a[i] - ref);
            if (e > worst) worst = e, at = i;
        }
        double frob = sqrt(dd / dm);
        CHECK_MSG(worst > 0, "%s: the randomised SVD did not run (same bytes as exact_svd)", cases[c].method);
        CHECK_MSG(frob <= cases[c].frob_tol,
                  "%s: randomised vs exact_svd: ||difference|| / ||merged change|| = %.3g (RSVD_FROB %g); worst at [%llu]: "
                  "got %.9g, want %.9g (%.3g of the largest change)",
                  cases[c].method, frob, cases[c].frob_tol, (unsigned long long)at, b[at], a[at], worst / mag);
        if (cases[c].elem_tol > 0) {
            char what[96];
            snprintf(what, sizeof what, "%s randomised vs exact_svd (RSVD_DECAY x %g)", cases[c].method, (double)mag);
            CHECK_CLOSE(what, b, a, numel, cases[c].elem_tol * mag, 0);
        }
        if (getenv("MK_TEST_VERBOSE"))
            fprintf(stderr, "%s: frob %.3g, worst %.3g of the largest change\n", cases[c].method, frob, worst / mag);
    }
    for (int k = 0; k < 4; k++) free(x[k]);
    free(a);
    free(b);
}
