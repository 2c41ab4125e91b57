/* test_linalg.c - core/mk_linalg: the thin SVD reconstructs its matrix, and the polar
 * factor has orthonormal columns (rows), leaves an orthonormal matrix as it is and is the
 * closest such matrix (it beats the orthonormal factor of a QR, orthogonal Procrustes). */
#include "harness.h"

#include "../../core/mk_linalg.h"
#include "../../core/mk_rng.h"

#include <stdlib.h>
#include <string.h>

/* LAPACK float32 on matrices of these sizes: 1e-5 absolute covers its rounding with margin
 * (seen: about 1e-6). */
#define LINALG_TOL 1e-5

static void fill(float *x, uint64_t n, uint64_t seed)
{
    mk_rng key = mk_rng_key(seed, "linalg");
    for (uint64_t i = 0; i < n; i++) x[i] = mk_rng_uniform(key, 0, i) - 0.5f;
}

/* worst |a[i] - b[i]|, with its index */
static double worst(const float *a, const float *b, uint64_t n, uint64_t *at)
{
    double w = 0;
    for (uint64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > w) w = d, *at = i;
    }
    return w;
}

MK_TEST(linalg_svd_reconstructs)
{
    const uint64_t m = 13, n = 7, kf = 7;
    float d[13 * 7], u[13 * 7], s[7], vh[7 * 7], r[13 * 7];
    fill(d, m * n, 1);
    for (int qr = 0; qr <= 1; qr++) { /* sgesdd, and the sgesvd fallback */
        CHECK(mk_svd_thin_method(qr, d, m, n, u, s, vh, "t") == MK_OK);
        for (uint64_t q = 1; q < kf; q++)
            CHECK_MSG(s[q] <= s[q - 1], "singular values not descending at %llu", (unsigned long long)q);
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t q = 0; q < kf; q++) u[i * kf + q] *= s[q];
        mk_gemm(false, false, m, n, kf, 1.0f, u, kf, vh, n, 0.0f, r, n);
        uint64_t at = 0;
        double w = worst(r, d, m * n, &at);
        CHECK_MSG(w < LINALG_TOL, "%s: U S Vh differs from the matrix by %g at [%llu] (got %g, want %g)",
                  qr ? "sgesvd" : "sgesdd", w, (unsigned long long)at, r[at], d[at]);
    }
}

MK_TEST(linalg_polar_is_orthonormal_and_closest)
{
    const uint64_t shapes[2][2] = {{11, 4}, {3, 9}};
    for (int sh = 0; sh < 2; sh++) {
        uint64_t m = shapes[sh][0], n = shapes[sh][1], k = m < n ? m : n, at = 0;
        float x[64], p[64], g[16], eye[16] = {0}, p2[64];
        fill(x, m * n, 2 + (uint64_t)sh);
        CHECK(mk_polar(x, m, n, p, "t") == MK_OK);
        /* P^T P (m >= n) or P P^T (m < n) is the identity */
        if (m >= n) mk_gemm(true, false, n, n, m, 1.0f, p, n, p, n, 0.0f, g, n);
        else mk_gemm(false, true, m, m, n, 1.0f, p, n, p, n, 0.0f, g, m);
        for (uint64_t i = 0; i < k; i++) eye[i * k + i] = 1;
        double w = worst(g, eye, k * k, &at);
        CHECK_MSG(w < LINALG_TOL, "[%llu, %llu]: the polar factor's Gram matrix is off the identity by %g at [%llu]",
                  (unsigned long long)m, (unsigned long long)n, w, (unsigned long long)at);
        /* polar(P) = P */
        CHECK(mk_polar(p, m, n, p2, "t") == MK_OK);
        w = worst(p2, p, m * n, &at);
        CHECK_MSG(w < LINALG_TOL, "polar of an orthonormal matrix moves it by %g at [%llu]", w, (unsigned long long)at);
        /* closer to x than another orthonormal matrix with the same span: P with its first
         * two columns (rows) swapped */
        double dp = 0, dq = 0;
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t j = 0; j < n; j++) {
                uint64_t jj = j, ii = i;
                if (m >= n) jj = j == 0 ? 1 : j == 1 ? 0 : j;
                else ii = i == 0 ? 1 : i == 1 ? 0 : i;
                double a = x[i * n + j] - p[i * n + j], b = x[i * n + j] - p[ii * n + jj];
                dp += a * a, dq += b * b;
            }
        CHECK_MSG(dp < dq, "polar factor at distance %g, a permuted one at %g", sqrt(dp), sqrt(dq));
    }
}

/* U Vh from the thin SVD: mk_polar's definition, written out */
static void polar_by_svd(const float *x, uint64_t m, uint64_t n, float *out)
{
    uint64_t kf = m < n ? m : n;
    float *u = malloc(m * kf * sizeof *u), *s = malloc(kf * sizeof *s), *vh = malloc(kf * n * sizeof *vh);
    CHECK(mk_svd_thin(x, m, n, u, s, vh, "t") == MK_OK);
    mk_gemm(false, false, m, n, kf, 1.0f, u, kf, vh, n, 0.0f, out, n);
    free(u), free(s), free(vh);
}

/* A long side at least twice the short one takes the Gram-matrix route when x is well
 * conditioned: the same factor as the SVD's within LINALG_TOL; a badly conditioned x (one
 * column, or row, almost a copy of another) takes the SVD: the same bytes as U Vh. */
MK_TEST(linalg_polar_gram_route_matches_the_svd)
{
    const uint64_t shapes[2][2] = {{300, 60}, {50, 170}};
    for (int sh = 0; sh < 2; sh++) {
        uint64_t m = shapes[sh][0], n = shapes[sh][1], at = 0;
        float *x = malloc(m * n * sizeof *x), *p = malloc(m * n * sizeof *p), *r = malloc(m * n * sizeof *r);
        fill(x, m * n, 7 + (uint64_t)sh);
        CHECK(mk_polar(x, m, n, p, "t") == MK_OK);
        polar_by_svd(x, m, n, r);
        double w = worst(p, r, m * n, &at);
        CHECK_MSG(w < LINALG_TOL, "[%llu, %llu]: Gram polar vs the SVD's: %g at [%llu]", (unsigned long long)m,
                  (unsigned long long)n, w, (unsigned long long)at);
        CHECK_MSG(w > 0, "[%llu, %llu]: the Gram route did not run (same bytes as the SVD's)", (unsigned long long)m,
                  (unsigned long long)n);
        /* column (row) 1 := column (row) 0 + 1e-4 noise: condition number far above 100 */
        for (uint64_t i = 0; i < (m >= n ? m : n); i++) {
            uint64_t a = m >= n ? i * n : i, b = m >= n ? i * n + 1 : n + i;
            x[b] = x[a] + 1e-4f * x[b];
        }
        CHECK(mk_polar(x, m, n, p, "t") == MK_OK);
        polar_by_svd(x, m, n, r);
        CHECK_MSG(memcmp(p, r, m * n * sizeof *p) == 0, "[%llu, %llu]: a badly conditioned matrix did not take the SVD",
                  (unsigned long long)m, (unsigned long long)n);
        x[5] = NAN;
        CHECK_ERR(mk_polar(x, m, n, p, "tensor z"), MK_ERR_NUMERIC, "tensor z");
        free(x), free(p), free(r);
    }
}

MK_TEST(linalg_refuses_nonfinite_and_huge)
{
    float d[6] = {1, 2, NAN, 4, 5, 6}, u[6], s[2], vh[6];
    CHECK_ERR(mk_svd_thin(d, 3, 2, u, s, vh, "tensor x"), MK_ERR_NUMERIC, "tensor x");
    CHECK_ERR(mk_linalg_check_size(1u << 20, 1u << 12, "tensor y"), MK_ERR_UNSUPPORTED, "tensor y");
}
