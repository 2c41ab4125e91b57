/* emu16.c - mk_cuda16.h on the CPU, as emu.c does mk_cuda.h: each bf16 body (bodies16.h) looped
 * over its grid, a row kernel's phases one after the other for all threads of the block, and
 * the bf16 product as BLAS's f32 sgemm of the bf16 operands widened to f32 (exact), its sums
 * rounded to bf16 when the output is bf16, as cublasGemmEx with CUBLAS_COMPUTE_32F. */
#include "mk_cuda16.h"

#include <cblas.h>
#include <stdlib.h>

#include "bodies16.h"

static double sh16[MK_CU_NT];

/* a row kernel's tree over sh16 (the barriers' order: one level for all threads at a time) */
static double row_tree(bool is_max)
{
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2)
        for (unsigned tid = 0; tid < MK_CU_NT; tid++) is_max ? mk_cu_tree_max(sh16, tid, stride) : mk_cu_tree_add(sh16, tid, stride);
    return sh16[0];
}
#define EACH(n, body) for (size_t i_ = 0; i_ < (n); i_++) body
#define THREADS(stmt) for (unsigned tid = 0; tid < MK_CU_NT; tid++) stmt

void mk_cu_round(float *x, size_t n) { EACH(n, mk_cu_round_body(i_, x)); }
void mk_cu_to16(const float *x, uint16_t *y16, size_t n) { EACH(n, mk_cu_to16_body(i_, x, y16)); }
void mk_cu_add16(float *y, const uint16_t *c16, size_t n, bool sum16) { EACH(n, mk_cu_add16_body(i_, y, c16, sum16)); }

void mk_cu_rmsnorm16(uint16_t *out, const float *x, const float *w, size_t T, size_t d, float eps)
{
    for (size_t row = 0; row < T; row++) {
        THREADS(mk_cu_rms_part(row, tid, x, d, sh16));
        double ss = row_tree(false);
        THREADS(mk_cu_rms_fin16(row, tid, x, w, d, eps, ss, out));
    }
}

void mk_cu_rope16_bwd(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t)
{
    EACH(T * nh * half, mk_cu_rope16_bwd_body(i_, x, nh, hd, half, cos_t, sin_t));
}

void mk_cu_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                       long window, uint16_t *out, float *p)
{
    for (size_t row = 0; row < nh * T; row++) {
        THREADS(mk_cu_att_score_any(row, tid, q, k, T, nh, nkv, hd, scale, window, p, sh16, 1));
        float mx = (float)row_tree(true);
        THREADS(mk_cu_att_exp_part(row, tid, T, window, mx, p, sh16));
        double sum = row_tree(false);
        THREADS(mk_cu_att_norm_fin(row, tid, T, window, sum, p));
    }
    EACH(T * nh * hd, mk_cu_att16_out_body(i_, p, v, T, nh, nkv, hd, out));
}

void mk_cu_attention16_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                           size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *ds)
{
    EACH(T * nkv * hd, mk_cu_att16_dv_body(i_, p, dout, T, nh, nkv, hd, dv));
    for (size_t row = 0; row < nh * T; row++) {
        THREADS(mk_cu_att_dp_any(row, tid, p, dout, v, T, nh, nkv, hd, ds, sh16, 1));
        double dot = row_tree(false);
        THREADS(mk_cu_att16_ds_fin(row, tid, p, T, scale, dot, ds));
    }
    EACH(T * nh * hd, mk_cu_att16_dq_body(i_, ds, k, T, nh, nkv, hd, dq));
    EACH(T * nkv * hd, mk_cu_att16_dk_body(i_, ds, q, T, nh, nkv, hd, dk));
}

void mk_cu_swiglu16(const float *gate, const float *up, uint16_t *out, size_t n) { EACH(n, mk_cu_swiglu16_body(i_, gate, up, out)); }
void mk_cu_swiglu16_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    EACH(n, mk_cu_swiglu16_bwd_body(i_, gate, up, dout, dgate, dup));
}

/* op(X) of a column-major bf16 X with leading dimension ld, rows x cols after op, widened */
static float *widen(const uint16_t *X, bool t, size_t rows, size_t cols, size_t ld)
{
    size_t sr = t ? cols : rows, sc = t ? rows : cols; /* X as stored: sr x sc */
    float *f = malloc((sr * sc + 1) * sizeof *f);
    if (!f) abort(); /* the emulation's scratch; the unit tests' sizes are small */
    for (size_t c = 0; c < sc; c++)
        for (size_t r = 0; r < sr; r++) f[c * sr + r] = mk_cu_bf16_f32(X[c * ld + r]);
    return f;
}

void mk_cu_gemm16(bool ta, bool tb, size_t m, size_t n, size_t k, const uint16_t *A, size_t lda, const uint16_t *B, size_t ldb,
                  void *C, size_t ldc, bool c16)
{
    float *a = widen(A, ta, m, k, lda), *b = widen(B, tb, k, n, ldb), *c = malloc((m * n + 1) * sizeof *c);
    if (!c) abort();
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                ta ? (int)k : (int)m, b, tb ? (int)n : (int)k, 0.0f, c, (int)m);
    for (size_t j = 0; j < n; j++)
        for (size_t i = 0; i < m; i++) {
            float v = c[j * m + i];
            if (c16) ((uint16_t *)C)[j * ldc + i] = mk_cu_bf16(v);
            else ((float *)C)[j * ldc + i] = v;
        }
    free(a), free(b), free(c);
}

/* ---- LayerNorm and GeGLU (mk_cuda_norm.h) ---- */

#include "bodies_norm.h"
#include "mk_cuda_norm.h"

/* a row's mean and rstd: the two passes */
static void ln_stats(size_t row, const float *x, size_t d, float eps, double *m, float *mf, float *inv)
{
    THREADS(mk_cu_ln_sum_part(row, tid, x, d, sh16));
    *m = row_tree(false) / (double)d;
    THREADS(mk_cu_ln_var_part(row, tid, x, d, *m, sh16));
    *inv = mk_cu_ln_rstd(row_tree(false) / (double)d, eps), *mf = (float)*m;
}

void mk_cu_layernorm(float *out, const float *x, const float *w, const float *b, size_t T, size_t d, float eps)
{
    for (size_t row = 0; row < T; row++) {
        double m;
        float mf, inv;
        ln_stats(row, x, d, eps, &m, &mf, &inv);
        THREADS(mk_cu_ln_fin(row, tid, x, w, b, d, mf, inv, out));
    }
}

void mk_cu_layernorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *db, float *stats)
{
    static double sh2[2 * MK_CU_NT];
    for (size_t row = 0; row < T; row++) {
        double m;
        float mf, inv;
        ln_stats(row, x, d, eps, &m, &mf, &inv);
        THREADS(mk_cu_ln_bwd_part(row, tid, x, w, dy, d, mf, inv, sh2));
        for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2)
            for (unsigned tid = 0; tid < MK_CU_NT; tid++) mk_cu_tree_add(sh2, tid, stride), mk_cu_tree_add(sh2 + MK_CU_NT, tid, stride);
        THREADS(mk_cu_ln_bwd_fin(row, tid, x, w, dy, d, mf, inv, sh2[0], sh2[MK_CU_NT], dx, stats));
    }
    if (dw || db) EACH(d, mk_cu_ln_dwb_body(i_, x, dy, stats, T, d, dw, db));
}

void mk_cu_geglu(const float *gate, const float *up, float *out, size_t n) { EACH(n, mk_cu_geglu_body(i_, gate, up, out)); }
void mk_cu_geglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    EACH(n, mk_cu_geglu_bwd_body(i_, gate, up, dout, dgate, dup));
}
