/* mk_linalg.h - dense linear algebra on row-major float32 matrices through LAPACK and BLAS
 * (lapacke + OpenBLAS): the thin SVD, the randomised truncated SVD, the polar factor, and a
 * product.
 *
 * OpenBLAS runs on one thread (its own thread pool makes the bytes depend on its thread
 * count): mk_gemm splits a large product over mergekit-c's OpenMP threads (-j) in blocks that
 * do not depend on their number, and callers run independent decompositions side by side
 * (mk_parallel_chunks). Results depend only on the inputs and the BLAS build, never on the
 * thread count. Called inside a parallel region, mk_gemm runs its blocks on that thread.
 * Must not: know tensors, files or models.
 */
#ifndef MK_LINALG_H
#define MK_LINALG_H

#include "mk_core.h"
#include "mk_rng.h"

/* MK_ERR_UNSUPPORTED (naming `what`) when an [m, n] matrix exceeds LAPACK's 32-bit indices. */
mk_status mk_linalg_check_size(uint64_t m, uint64_t n, const char *what);

/* Thin SVD of row-major d [m, n] (m, n > 0): u [m, kf], s [kf] (descending), vh [kf, n],
 * kf = min(m, n); LAPACK's sgesdd, else sgesvd. d is not changed. MK_ERR_NUMERIC when it does not converge
 * or the values are not finite. */
mk_status mk_svd_thin(const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh, const char *what);
/* The same, choosing the LAPACK routine: qr_only skips sgesdd (divide and conquer) for sgesvd
 * (QR iteration), which mk_svd_thin falls back to when sgesdd does not converge. */
mk_status mk_svd_thin_method(bool qr_only, const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh,
                             const char *what);

/* The top k singular triplets of row-major d [m, n] (0 < k <= min(m, n)) by the randomised
 * range finder with power iterations (Halko, Martinsson & Tropp 2011, algorithms 4.4 and
 * 5.1): a sketch Y = d W of l = min(k + oversample, min(m, n)) columns, W uniform in [-1, 1)
 * from `rng` (element e of stream 0), `power` times Q = orth(Y), Z = orth(d^T Q), Y = d Z;
 * then Q = orth(Y) and the exact SVD of Q^T d [l, n] = Uc S Vh, U = Q Uc. Out: u [m, k],
 * s [k] (descending), vh [k, n]. When l reaches min(m, n) there is nothing to save: LAPACK's
 * full thin SVD (mk_svd_thin), truncated. The bytes depend only on the inputs and the key,
 * never on the thread count. Far cheaper than the full SVD when k is much smaller than
 * min(m, n); the error of the kept triplets shrinks like (S[l] / S[q])^(2 power + 1), so it
 * is close to the exact result where the spectrum decays and only near-optimal in energy
 * where it is flat. d is not changed. */
mk_status mk_svd_rand(const float *d, uint64_t m, uint64_t n, uint64_t k, unsigned power, uint64_t oversample, mk_rng rng,
                      float *u, float *s, float *vh, const char *what);

/* The orthogonal polar factor of row-major x [m, n]: out [m, n] = U Vh from the thin SVD
 * x = U S Vh, the nearest matrix with orthonormal columns (m >= n) or rows (m < n) in the
 * Frobenius norm (orthogonal Procrustes). When one side is at least twice the other and x is
 * well conditioned (condition number <= 100), the same factor is x (x^T x)^(-1/2) (or
 * (x x^T)^(-1/2) x) with the Gram matrix and its eigendecomposition in float64 (LAPACK
 * dsyevd), faster than the SVD there and within float32 rounding of it; otherwise the SVD. */
mk_status mk_polar(const float *x, uint64_t m, uint64_t n, float *out, const char *what);

/* c [m, n] = alpha op(a) op(b) + beta c, row-major with leading dimensions lda, ldb, ldc;
 * op(a) is [m, k], op(b) is [k, n]; ta/tb: use the transpose of a (stored [k, m]) / of b
 * (stored [n, k]). */
void mk_gemm(bool ta, bool tb, uint64_t m, uint64_t n, uint64_t k, float alpha, const float *a, uint64_t lda,
             const float *b, uint64_t ldb, float beta, float *c, uint64_t ldc);

#endif
