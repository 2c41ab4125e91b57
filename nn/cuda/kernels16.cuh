/* kernels16.cuh - mk_cuda16.h and mk_cuda_norm.h on the device, included at the end of
 * kernels.cu (its error keeping, launch helpers and cuBLAS handle): each body of bodies16.h
 * and bodies_norm.h in a __global__ kernel, the bf16 products
 * through cublasGemmEx with bf16 operands and f32 sums. */
extern "C" {
#include "mk_cuda16.h"
#include "mk_cuda_norm.h"
}
#include <cuda_bf16.h>

#include "bodies16.h"
#include "bodies_norm.h"

enum { E_ROUND, E_TO16, E_ADD16, E_ADD16_SUM };
__global__ static void k_elem16(int which, size_t n, float *x, const float *cx, uint16_t *y16, const uint16_t *c16)
{
    FLAT_IDX;
    switch (which) {
    case E_ROUND: mk_cu_round_body(i, x); break;
    case E_TO16: mk_cu_to16_body(i, cx, y16); break;
    default: mk_cu_add16_body(i, x, c16, which == E_ADD16_SUM); break;
    }
}
extern "C" void mk_cu_round(float *x, size_t n)
{
    k_elem16<<<flat_blocks(n), MK_CU_FLAT>>>(E_ROUND, n, x, NULL, NULL, NULL);
    LAUNCHED("bf16 rounding");
}
extern "C" void mk_cu_to16(const float *x, uint16_t *y16, size_t n)
{
    k_elem16<<<flat_blocks(n), MK_CU_FLAT>>>(E_TO16, n, NULL, x, y16, NULL);
    LAUNCHED("to bf16");
}
extern "C" void mk_cu_add16(float *y, const uint16_t *c16, size_t n, bool sum16)
{
    k_elem16<<<flat_blocks(n), MK_CU_FLAT>>>(sum16 ? E_ADD16_SUM : E_ADD16, n, y, NULL, NULL, c16);
    LAUNCHED("bf16 gradient sum");
}

__global__ static void k_rms16(const float *x, const float *w, size_t d, float eps, uint16_t *out)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_rms_part(blockIdx.x, threadIdx.x, x, d, sh);
    tree(sh, false);
    mk_cu_rms_fin16(blockIdx.x, threadIdx.x, x, w, d, eps, sh[0], out);
}
extern "C" void mk_cu_rmsnorm16(uint16_t *out, const float *x, const float *w, size_t T, size_t d, float eps)
{
    k_rms16<<<(unsigned)T, MK_CU_NT>>>(x, w, d, eps, out);
    LAUNCHED("rmsnorm forward (bf16)");
}

__global__ static void k_rope16_bwd(size_t n, float *x, size_t nh, size_t hd, size_t half, const float *c, const float *s)
{
    FLAT_IDX;
    mk_cu_rope16_bwd_body(i, x, nh, hd, half, c, s);
}
extern "C" void mk_cu_rope16_bwd(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t)
{
    size_t n = T * nh * half;
    k_rope16_bwd<<<flat_blocks(n), MK_CU_FLAT>>>(n, x, nh, hd, half, cos_t, sin_t);
    LAUNCHED("rope backward (bf16)");
}

__global__ static void k_att16_softmax(const float *q, const float *k, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                                       long window, float *p)
{
    __shared__ double sh[MK_CU_NT];
    size_t row = blockIdx.x;
    mk_cu_att_score_any(row, threadIdx.x, q, k, T, nh, nkv, hd, scale, window, p, sh, 1);
    tree(sh, true);
    float mx = (float)sh[0];
    __syncthreads();
    mk_cu_att_exp_part(row, threadIdx.x, T, window, mx, p, sh);
    tree(sh, false);
    mk_cu_att_norm_fin(row, threadIdx.x, T, window, sh[0], p);
}
__global__ static void k_att16_out(size_t n, const float *p, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                   uint16_t *out)
{
    FLAT_IDX;
    mk_cu_att16_out_body(i, p, v, T, nh, nkv, hd, out);
}
__global__ static void k_att16_sum(int which, size_t n, const float *a, const float *b, size_t T, size_t nh, size_t nkv,
                                   size_t hd, float *y)
{
    FLAT_IDX;
    switch (which) {
    case ATT_DV: mk_cu_att16_dv_body(i, a, b, T, nh, nkv, hd, y); break;
    case ATT_DQ: mk_cu_att16_dq_body(i, a, b, T, nh, nkv, hd, y); break;
    default: mk_cu_att16_dk_body(i, a, b, T, nh, nkv, hd, y); break;
    }
}
__global__ static void k_att16_ds(const float *p, const float *dout, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                  float scale, float *ds)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_att_dp_any(blockIdx.x, threadIdx.x, p, dout, v, T, nh, nkv, hd, ds, sh, 1);
    tree(sh, false);
    mk_cu_att16_ds_fin(blockIdx.x, threadIdx.x, p, T, scale, sh[0], ds);
}
extern "C" void mk_cu_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                  float scale, long window, uint16_t *out, float *p)
{
    k_att16_softmax<<<(unsigned)(nh * T), MK_CU_NT>>>(q, k, T, nh, nkv, hd, scale, window, p);
    LAUNCHED("attention softmax (bf16)");
    k_att16_out<<<flat_blocks(T * nh * hd), MK_CU_FLAT>>>(T * nh * hd, p, v, T, nh, nkv, hd, out);
    LAUNCHED("attention output (bf16)");
}
extern "C" void mk_cu_attention16_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout,
                                      size_t T, size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv,
                                      float *ds)
{
    size_t nq = T * nh * hd, nk = T * nkv * hd;
    k_att16_sum<<<flat_blocks(nk), MK_CU_FLAT>>>(ATT_DV, nk, p, dout, T, nh, nkv, hd, dv);
    LAUNCHED("attention backward dv (bf16)");
    k_att16_ds<<<(unsigned)(nh * T), MK_CU_NT>>>(p, dout, v, T, nh, nkv, hd, scale, ds);
    LAUNCHED("attention backward scores (bf16)");
    k_att16_sum<<<flat_blocks(nq), MK_CU_FLAT>>>(ATT_DQ, nq, ds, k, T, nh, nkv, hd, dq);
    LAUNCHED("attention backward dq (bf16)");
    k_att16_sum<<<flat_blocks(nk), MK_CU_FLAT>>>(ATT_DK, nk, ds, q, T, nh, nkv, hd, dk);
    LAUNCHED("attention backward dk (bf16)");
}

/* the gated activations (bf16 SwiGLU, GeGLU) and their backward: one kernel, the body by `which` */
enum { G_SWIGLU16, G_SWIGLU16_BWD, G_GEGLU, G_GEGLU_BWD };
__global__ static void k_gated(int which, size_t n, const float *g, const float *u, const float *d, float *o, uint16_t *o16,
                               float *dg, float *du)
{
    FLAT_IDX;
    switch (which) {
    case G_SWIGLU16: mk_cu_swiglu16_body(i, g, u, o16); break;
    case G_SWIGLU16_BWD: mk_cu_swiglu16_bwd_body(i, g, u, d, dg, du); break;
    case G_GEGLU: mk_cu_geglu_body(i, g, u, o); break;
    default: mk_cu_geglu_bwd_body(i, g, u, d, dg, du); break;
    }
}
static void gated(int which, size_t n, const float *g, const float *u, const float *d, float *o, uint16_t *o16, float *dg, float *du,
                  const char *name)
{
    k_gated<<<flat_blocks(n), MK_CU_FLAT>>>(which, n, g, u, d, o, o16, dg, du);
    LAUNCHED(name);
}
extern "C" void mk_cu_swiglu16(const float *gate, const float *up, uint16_t *out, size_t n)
{
    gated(G_SWIGLU16, n, gate, up, NULL, NULL, out, NULL, NULL, "swiglu (bf16)");
}
extern "C" void mk_cu_swiglu16_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    gated(G_SWIGLU16_BWD, n, gate, up, dout, NULL, NULL, dgate, dup, "swiglu backward (bf16)");
}

extern "C" void mk_cu_gemm16(bool ta, bool tb, size_t m, size_t n, size_t k, const uint16_t *A, size_t lda, const uint16_t *B,
                             size_t ldb, void *C, size_t ldc, bool c16)
{
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasGemmEx(blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int)m, (int)n, (int)k,
                                     &one, A, CUDA_R_16BF, (int)lda, B, CUDA_R_16BF, (int)ldb, &zero, C,
                                     c16 ? CUDA_R_16BF : CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS && !first_err[0])
        snprintf(first_err, sizeof first_err, "cublasGemmEx (bf16) %zux%zux%zu: status %d", m, n, k, (int)st);
}

/* ---- LayerNorm and GeGLU (mk_cuda_norm.h) ---- */

/* a row's mean and rstd into *mf, *inv (every thread), the two passes over sh */
__device__ static void ln_stats(const float *x, size_t d, float eps, double *sh, float *mf, float *inv)
{
    mk_cu_ln_sum_part(blockIdx.x, threadIdx.x, x, d, sh);
    tree(sh, false);
    double m = sh[0] / (double)d;
    __syncthreads();
    mk_cu_ln_var_part(blockIdx.x, threadIdx.x, x, d, m, sh);
    tree(sh, false);
    *inv = mk_cu_ln_rstd(sh[0] / (double)d, eps), *mf = (float)m;
    __syncthreads();
}
__global__ static void k_ln(const float *x, const float *w, const float *b, size_t d, float eps, float *out)
{
    __shared__ double sh[MK_CU_NT];
    float mf, inv;
    ln_stats(x, d, eps, sh, &mf, &inv);
    mk_cu_ln_fin(blockIdx.x, threadIdx.x, x, w, b, d, mf, inv, out);
}
__global__ static void k_ln_bwd(const float *x, const float *w, const float *dy, size_t d, float eps, float *dx, float *stats)
{
    __shared__ double sh[2 * MK_CU_NT];
    float mf, inv;
    ln_stats(x, d, eps, sh, &mf, &inv);
    mk_cu_ln_bwd_part(blockIdx.x, threadIdx.x, x, w, dy, d, mf, inv, sh);
    __syncthreads();
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2) {
        mk_cu_tree_add(sh, threadIdx.x, stride);
        mk_cu_tree_add(sh + MK_CU_NT, threadIdx.x, stride);
        __syncthreads();
    }
    mk_cu_ln_bwd_fin(blockIdx.x, threadIdx.x, x, w, dy, d, mf, inv, sh[0], sh[MK_CU_NT], dx, stats);
}
__global__ static void k_ln_dwb(size_t n, const float *x, const float *dy, const float *stats, size_t T, float *dw, float *db)
{
    FLAT_IDX;
    mk_cu_ln_dwb_body(i, x, dy, stats, T, n, dw, db);
}
extern "C" void mk_cu_layernorm(float *out, const float *x, const float *w, const float *b, size_t T, size_t d, float eps)
{
    k_ln<<<(unsigned)T, MK_CU_NT>>>(x, w, b, d, eps, out);
    LAUNCHED("layernorm forward");
}
extern "C" void mk_cu_layernorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                                    float *dw, float *db, float *stats)
{
    k_ln_bwd<<<(unsigned)T, MK_CU_NT>>>(x, w, dy, d, eps, dx, stats);
    LAUNCHED("layernorm backward");
    if (!dw && !db) return;
    k_ln_dwb<<<flat_blocks(d), MK_CU_FLAT>>>(d, x, dy, stats, T, dw, db);
    LAUNCHED("layernorm weight and bias gradients");
}

extern "C" void mk_cu_geglu(const float *gate, const float *up, float *out, size_t n)
{
    gated(G_GEGLU, n, gate, up, NULL, out, NULL, NULL, NULL, "geglu");
}
extern "C" void mk_cu_geglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    gated(G_GEGLU_BWD, n, gate, up, dout, NULL, NULL, dgate, dup, "geglu backward");
}
