/* mk_linalg.c - see mk_linalg.h */
#include "mk_linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

mk_status mk_linalg_check_size(uint64_t m, uint64_t n, const char *what)
{
    uint64_t mn;
    if (m > INT32_MAX || n > INT32_MAX || !mk_mul_u64(m, n, &mn) || mn > INT32_MAX)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: a [%llu, %llu] matrix is too large for LAPACK's 32-bit indices", what,
                        (unsigned long long)m, (unsigned long long)n);
    return MK_OK;
}

/* One LAPACK SVD of row-major d [m, n]. Our row-major [m, n] is LAPACK's column-major [n, m] =
 * d^T = V S U^T, so LAPACK's "U" ([n, kf] column-major) is Vh ([kf, n] row-major) and its "VT"
 * ([kf, m] column-major) is U ([m, kf] row-major): no transposes needed. Returns LAPACK's info. */
static lapack_int svd_lapack(bool qr_iteration, const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh,
                             float *a, float *superb)
{
    uint64_t kf = m < n ? m : n;
    memcpy(a, d, (size_t)(m * n) * sizeof *a);
    if (qr_iteration)
        return LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)n, (lapack_int)m, a, (lapack_int)n, s, vh,
                              (lapack_int)n, u, (lapack_int)kf, superb);
    return LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, a, (lapack_int)n, s, vh, (lapack_int)n, u,
                          (lapack_int)kf);
}

mk_status mk_svd_thin_method(bool qr_only, const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh,
                             const char *what)
{
    MK_TRY(mk_linalg_check_size(m, n, what));
    /* LAPACKE refuses NaN input as a bad argument: name the matrix instead */
    for (uint64_t e = 0; e < m * n; e++)
        if (!isfinite(d[e]))
            return mk_error(MK_ERR_NUMERIC, "%s: the matrix to decompose has NaN or Inf values (element %llu)", what,
                            (unsigned long long)e);
    uint64_t kf = m < n ? m : n;
    float *a = mk_malloc((size_t)(m * n) * sizeof *a), *superb = mk_malloc((size_t)kf * sizeof *superb);
    if (!a || !superb) {
        free(a);
        free(superb);
        return MK_ERR_NOMEM;
    }
    /* divide and conquer (sgesdd) first; when it does not converge, which happens on matrices
     * with many equal or tiny singular values, QR iteration (sgesvd), slower and more robust */
    lapack_int info = qr_only ? 1 : svd_lapack(false, d, m, n, u, s, vh, a, superb);
    if (info > 0) info = svd_lapack(true, d, m, n, u, s, vh, a, superb);
    free(a);
    free(superb);
    if (info < 0) MK_BUG("bad SVD argument");
    if (info > 0)
        return mk_error(MK_ERR_NUMERIC,
                        "%s: the SVD of a [%llu, %llu] matrix did not converge (LAPACK sgesdd and sgesvd, info %d)", what,
                        (unsigned long long)m, (unsigned long long)n, (int)info);
    if (!isfinite(s[0])) return mk_error(MK_ERR_NUMERIC, "%s: the weight difference has NaN or Inf values", what);
    return MK_OK;
}

mk_status mk_svd_thin(const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh, const char *what)
{
    return mk_svd_thin_method(false, d, m, n, u, s, vh, what);
}

void mk_gemm(bool ta, bool tb, uint64_t m, uint64_t n, uint64_t k, float alpha, const float *a, uint64_t lda,
             const float *b, uint64_t ldb, float beta, float *c, uint64_t ldc)
{
    if (!m || !n) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
                (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

mk_status mk_polar(const float *x, uint64_t m, uint64_t n, float *out, const char *what)
{
    uint64_t kf = m < n ? m : n;
    float *u = mk_malloc((size_t)(m * kf) * sizeof *u), *s = mk_malloc((size_t)kf * sizeof *s);
    float *vh = mk_malloc((size_t)(kf * n) * sizeof *vh);
    mk_status st = (u && s && vh) ? mk_svd_thin(x, m, n, u, s, vh, what) : MK_ERR_NOMEM;
    if (st == MK_OK) mk_gemm(false, false, m, n, kf, 1.0f, u, kf, vh, n, 0.0f, out, n);
    free(u);
    free(s);
    free(vh);
    return st;
}
