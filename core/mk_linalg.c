/* mk_linalg.c - see mk_linalg.h */
#include "mk_linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS runs on one thread, inside mergekit-c's OpenMP threads (-j): its own thread pool
 * gives bytes that depend on its thread count (seen: sgesdd on a [128, 128] matrix and sgemm
 * at 1, 2 and 4 threads all differ), so the work is split here, in blocks that do not depend
 * on the thread count (products by output blocks, independent SVDs side by side). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_one_thread(void) { openblas_set_num_threads(1); }
static void blas_serial(void) { pthread_once(&blas_once, blas_one_thread); }

mk_status mk_linalg_check_size(uint64_t m, uint64_t n, const char *what)
{
    uint64_t mn;
    if (m > INT32_MAX || n > INT32_MAX || !mk_mul_u64(m, n, &mn) || mn > INT32_MAX)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: a [%llu, %llu] matrix is too large for LAPACK's 32-bit indices", what,
                        (unsigned long long)m, (unsigned long long)n);
    return MK_OK;
}

/* b [c, r] = the transpose of row-major a [r, c], in tiles that stay in cache. */
static void transpose(const float *a, uint64_t r, uint64_t c, float *b)
{
    enum { TILE = 32 };
    for (uint64_t i0 = 0; i0 < r; i0 += TILE)
        for (uint64_t j0 = 0; j0 < c; j0 += TILE) {
            uint64_t i1 = i0 + TILE < r ? i0 + TILE : r, j1 = j0 + TILE < c ? j0 + TILE : c;
            for (uint64_t i = i0; i < i1; i++)
                for (uint64_t j = j0; j < j1; j++) b[j * r + i] = a[i * c + j];
        }
}

/* One LAPACK SVD of row-major d [m, n]; a [m, n] and superb [kf] are scratch. Returns
 * LAPACK's info.
 * m <= n: our row-major [m, n] is LAPACK's column-major [n, m] = d^T = V S U^T, a tall matrix,
 * so LAPACK's "U" ([n, kf] column-major) is Vh ([kf, n] row-major) and its "VT" ([kf, m]
 * column-major) is U ([m, kf] row-major): no transposes needed.
 * m > n: LAPACK would see a wide matrix, whose path (an LQ factorisation first) is about 1.4
 * times slower in OpenBLAS's LAPACK than the tall one (QR first; measured on [5504, 2048]):
 * d is transposed into a, LAPACK's column-major [m, n], and its outputs, column-major U
 * [m, kf] and VT [kf, n], are transposed back through a (free once LAPACK is done). */
static lapack_int svd_lapack(bool qr_iteration, const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh,
                             float *a, float *superb)
{
    uint64_t kf = m < n ? m : n;
    lapack_int info;
    if (m <= n) {
        memcpy(a, d, (size_t)(m * n) * sizeof *a);
        if (qr_iteration)
            return LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)n, (lapack_int)m, a, (lapack_int)n, s, vh,
                                  (lapack_int)n, u, (lapack_int)kf, superb);
        return LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, a, (lapack_int)n, s, vh,
                              (lapack_int)n, u, (lapack_int)kf);
    }
    transpose(d, m, n, a);
    if (qr_iteration)
        info = LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)m, (lapack_int)n, a, (lapack_int)m, s, u,
                              (lapack_int)m, vh, (lapack_int)kf, superb);
    else
        info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a, (lapack_int)m, s, u, (lapack_int)m,
                              vh, (lapack_int)kf);
    if (info != 0) return info;
    transpose(u, kf, m, a); /* column-major [m, kf] is row-major [kf, m] */
    memcpy(u, a, (size_t)(m * kf) * sizeof *u);
    transpose(vh, n, kf, a);
    memcpy(vh, a, (size_t)(kf * n) * sizeof *vh);
    return 0;
}

/* LAPACKE refuses NaN input as a bad argument: name the matrix instead */
static mk_status check_finite(const float *d, uint64_t m, uint64_t n, const char *what)
{
    for (uint64_t e = 0; e < m * n; e++)
        if (!isfinite(d[e]))
            return mk_error(MK_ERR_NUMERIC, "%s: the matrix to decompose has NaN or Inf values (element %llu)", what,
                            (unsigned long long)e);
    return MK_OK;
}

mk_status mk_svd_thin_method(bool qr_only, const float *d, uint64_t m, uint64_t n, float *u, float *s, float *vh,
                             const char *what)
{
    MK_TRY(mk_linalg_check_size(m, n, what));
    MK_TRY(check_finite(d, m, n, what));
    blas_serial();
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

static void sgemm(bool ta, bool tb, uint64_t m, uint64_t n, uint64_t k, float alpha, const float *a, uint64_t lda,
                  const float *b, uint64_t ldb, float beta, float *c, uint64_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
                (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

/* A product of at least GEMM_PAR_FLOPS multiply-adds is split into blocks of GEMM_BLOCK
 * rows (or columns) of c, taken by the threads. */
#define GEMM_PAR_FLOPS (1u << 24)
#define GEMM_BLOCK 256

typedef struct gemm_job {
    bool ta, tb, by_rows;
    uint64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gemm_job;

static void gemm_block(const gemm_job *g, uint64_t blk)
{
    uint64_t o = blk * GEMM_BLOCK, len = (g->by_rows ? g->m : g->n) - o;
    if (len > GEMM_BLOCK) len = GEMM_BLOCK;
    if (g->by_rows) /* rows o.. of op(a): a's rows, or columns of the stored transpose */
        sgemm(g->ta, g->tb, len, g->n, g->k, g->alpha, g->ta ? g->a + o : g->a + o * g->lda, g->lda, g->b, g->ldb,
              g->beta, g->c + o * g->ldc, g->ldc);
    else /* columns o.. of op(b) */
        sgemm(g->ta, g->tb, g->m, len, g->k, g->alpha, g->a, g->lda, g->tb ? g->b + o * g->ldb : g->b + o, g->ldb,
              g->beta, g->c + o, g->ldc);
}

void mk_gemm(bool ta, bool tb, uint64_t m, uint64_t n, uint64_t k, float alpha, const float *a, uint64_t lda,
             const float *b, uint64_t ldb, float beta, float *c, uint64_t ldc)
{
    if (!m || !n) return;
    blas_serial();
    bool by_rows = m >= n;
    uint64_t span = by_rows ? m : n;
    if ((double)m * (double)n * (double)k < GEMM_PAR_FLOPS || span <= GEMM_BLOCK) {
        sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const gemm_job g = {ta, tb, by_rows, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    const long nb = (long)((span + GEMM_BLOCK - 1) / GEMM_BLOCK);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (long blk = 0; blk < nb; blk++) gemm_block(&g, (uint64_t)blk);
}

/* The polar factor goes through the Gram matrix when the long side is at least
 * POLAR_GRAM_ASPECT times the short one (there LAPACK's SVD spends much of its time
 * factorising the long side: measured 1.6 times faster on [5504, 2048]) and x's condition
 * number is at most POLAR_GRAM_COND (the float32 product below rounds like the SVD route
 * times the condition number; at 100 both stay within float32 noise of each other).
 * POLAR_GRAM_BLOCK: rows (columns) of x widened to float64 at a time. */
#define POLAR_GRAM_ASPECT 2
#define POLAR_GRAM_COND 100.0
#define POLAR_GRAM_BLOCK 256

/* Gram polar of row-major x [m, n], s = min(m, n): G = x^T x (tall) or x x^T (wide), [s, s],
 * accumulated in float64 from widened blocks of x; G = Q diag(l) Q^T (LAPACK dsyevd);
 * B = Q diag(l^-1/2) Q^T; out = x B (tall) or B x (wide), in float32 (mk_gemm). *used is
 * false, and out untouched, when x is worse conditioned than POLAR_GRAM_COND or rank
 * deficient: the caller takes the SVD. */
static mk_status polar_gram(const float *x, uint64_t m, uint64_t n, float *out, bool *used)
{
    const bool tall = m >= n;
    const uint64_t sd = tall ? n : m, ld = tall ? m : n;
    *used = false;
    double *blk = mk_malloc((size_t)(POLAR_GRAM_BLOCK * sd) * sizeof *blk), *g = mk_malloc((size_t)(sd * sd) * sizeof *g);
    double *l = mk_malloc((size_t)sd * sizeof *l), *q = mk_malloc((size_t)(sd * sd) * sizeof *q);
    double *bd = mk_malloc((size_t)(sd * sd) * sizeof *bd);
    float *b = mk_malloc((size_t)(sd * sd) * sizeof *b);
    if (!blk || !g || !l || !q || !bd || !b) {
        free(blk), free(g), free(l), free(q), free(bd), free(b);
        return MK_ERR_NOMEM;
    }
    blas_serial();
    /* blk [w, sd]: w rows of x (tall) or w columns of x, transposed (wide); G += blk^T blk */
    for (uint64_t o = 0; o < ld; o += POLAR_GRAM_BLOCK) {
        uint64_t w = ld - o < POLAR_GRAM_BLOCK ? ld - o : POLAR_GRAM_BLOCK;
        for (uint64_t r = 0; r < w; r++)
            for (uint64_t c = 0; c < sd; c++) blk[r * sd + c] = tall ? x[(o + r) * n + c] : x[c * n + o + r];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)sd, (blasint)w, 1.0, blk, (blasint)sd, o ? 1.0 : 0.0,
                    g, (blasint)sd);
    }
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)sd, g, (lapack_int)sd, l);
    if (info < 0) MK_BUG("bad eigensolver argument");
    /* ascending eigenvalues: cond(x)^2 = l[sd - 1] / l[0] */
    if (info == 0 && l[0] > 0 && l[sd - 1] <= POLAR_GRAM_COND * POLAR_GRAM_COND * l[0]) {
        for (uint64_t i = 0; i < sd; i++)
            for (uint64_t j = 0; j < sd; j++) q[i * sd + j] = g[i * sd + j] / sqrt(l[j]);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)sd, (blasint)sd, (blasint)sd, 1.0, q, (blasint)sd, g,
                    (blasint)sd, 0.0, bd, (blasint)sd);
        for (uint64_t e = 0; e < sd * sd; e++) b[e] = (float)bd[e];
        if (tall)
            mk_gemm(false, false, m, n, n, 1.0f, x, n, b, n, 0.0f, out, n);
        else
            mk_gemm(false, false, m, n, m, 1.0f, b, m, x, n, 0.0f, out, n);
        *used = true;
    }
    free(blk), free(g), free(l), free(q), free(bd), free(b);
    return MK_OK;
}

mk_status mk_polar(const float *x, uint64_t m, uint64_t n, float *out, const char *what)
{
    uint64_t kf = m < n ? m : n, kl = m < n ? n : m;
    if (kl >= POLAR_GRAM_ASPECT * kf) {
        MK_TRY(mk_linalg_check_size(m, n, what));
        MK_TRY(check_finite(x, m, n, what));
        bool used;
        MK_TRY(polar_gram(x, m, n, out, &used));
        if (used) return MK_OK;
    }
    float *u = mk_malloc((size_t)(m * kf) * sizeof *u), *s = mk_malloc((size_t)kf * sizeof *s);
    float *vh = mk_malloc((size_t)(kf * n) * sizeof *vh);
    mk_status st = (u && s && vh) ? mk_svd_thin(x, m, n, u, s, vh, what) : MK_ERR_NOMEM;
    if (st == MK_OK) mk_gemm(false, false, m, n, kf, 1.0f, u, kf, vh, n, 0.0f, out, n);
    free(u);
    free(s);
    free(vh);
    return st;
}

/* Orthonormal basis of the columns of row-major y [m, l] (m >= l), in place (Householder QR). */
static mk_status orth(float *y, uint64_t m, uint64_t l, float *tau, const char *what)
{
    lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, y, (lapack_int)l, tau);
    if (info == 0) info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, (lapack_int)l, y, (lapack_int)l, tau);
    if (info < 0) MK_BUG("bad QR argument");
    if (info > 0) return mk_error(MK_ERR_NUMERIC, "%s: QR factorisation failed (LAPACK info %d)", what, (int)info);
    return MK_OK;
}

/* Columns [0, k) of row-major a [m, lda] into b [m, k]. */
static void take_cols(const float *a, uint64_t m, uint64_t lda, uint64_t k, float *b)
{
    for (uint64_t i = 0; i < m; i++) memcpy(b + i * k, a + i * lda, (size_t)k * sizeof *b);
}

/* The full thin SVD, truncated to k triplets. */
static mk_status svd_top_exact(const float *d, uint64_t m, uint64_t n, uint64_t k, float *u, float *s, float *vh,
                               const char *what)
{
    uint64_t kf = m < n ? m : n;
    float *uf = mk_malloc((size_t)(m * kf) * sizeof *uf), *sf = mk_malloc((size_t)kf * sizeof *sf);
    mk_status st = uf && sf ? mk_svd_thin(d, m, n, uf, sf, vh, what) : MK_ERR_NOMEM;
    if (st == MK_OK) {
        take_cols(uf, m, kf, k, u);
        memcpy(s, sf, (size_t)k * sizeof *s);
    }
    free(uf);
    free(sf);
    return st;
}

mk_status mk_svd_rand(const float *d, uint64_t m, uint64_t n, uint64_t k, unsigned power, uint64_t oversample, mk_rng rng,
                      float *u, float *s, float *vh, const char *what)
{
    uint64_t kf = m < n ? m : n;
    if (k == 0 || k > kf) MK_BUG("bad truncated SVD rank");
    MK_TRY(mk_linalg_check_size(m, n, what));
    uint64_t l = k + oversample < kf ? k + oversample : kf;
    /* vh [k, n] may be too small for the full SVD's [kf, n]: that path writes through a copy */
    if (l == kf) {
        if (k == kf) return mk_svd_thin(d, m, n, u, s, vh, what);
        float *vf = mk_malloc((size_t)(kf * n) * sizeof *vf);
        mk_status st = vf ? svd_top_exact(d, m, n, k, u, s, vf, what) : MK_ERR_NOMEM;
        if (st == MK_OK) memcpy(vh, vf, (size_t)(k * n) * sizeof *vh);
        free(vf);
        return st;
    }
    MK_TRY(check_finite(d, m, n, what));
    blas_serial();
    float *w = mk_malloc((size_t)(n * l) * sizeof *w), *y = mk_malloc((size_t)(m * l) * sizeof *y);
    float *z = mk_malloc((size_t)(n * l) * sizeof *z), *c = mk_malloc((size_t)(l * n) * sizeof *c);
    float *tau = mk_malloc((size_t)l * sizeof *tau), *sl = mk_malloc((size_t)l * sizeof *sl);
    float *uc = mk_malloc((size_t)(l * l) * sizeof *uc), *vl = mk_malloc((size_t)(l * n) * sizeof *vl);
    float *ul = mk_malloc((size_t)(m * l) * sizeof *ul);
    mk_status st = (w && y && z && c && tau && sl && uc && vl && ul) ? MK_OK : MK_ERR_NOMEM;
    if (st == MK_OK) {
        for (uint64_t e = 0; e < n * l; e++) w[e] = 2.0f * mk_rng_uniform(rng, 0, e) - 1.0f;
        mk_gemm(false, false, m, l, n, 1.0f, d, n, w, l, 0.0f, y, l);
        for (unsigned it = 0; it < power && st == MK_OK; it++) {
            st = orth(y, m, l, tau, what);
            if (st != MK_OK) break;
            mk_gemm(true, false, n, l, m, 1.0f, d, n, y, l, 0.0f, z, l);
            st = orth(z, n, l, tau, what);
            if (st != MK_OK) break;
            mk_gemm(false, false, m, l, n, 1.0f, d, n, z, l, 0.0f, y, l);
        }
        if (st == MK_OK) st = orth(y, m, l, tau, what);
    }
    if (st == MK_OK) {
        mk_gemm(true, false, l, n, m, 1.0f, y, l, d, n, 0.0f, c, n); /* C = Q^T d */
        st = mk_svd_thin(c, l, n, uc, sl, vl, what);
    }
    if (st == MK_OK) {
        mk_gemm(false, false, m, l, l, 1.0f, y, l, uc, l, 0.0f, ul, l);
        take_cols(ul, m, l, k, u);
        memcpy(s, sl, (size_t)k * sizeof *s);
        memcpy(vh, vl, (size_t)(k * n) * sizeof *vh);
    }
    free(w);
    free(y);
    free(z);
    free(c);
    free(tau);
    free(sl);
    free(uc);
    free(vl);
    free(ul);
    return st;
}
