/* kernels.cu - mk_cuda.h on a CUDA device: each body of bodies.h wrapped in a __global__
 * kernel (flat kernels: one thread per element; row kernels: one block of MK_CU_NT threads
 * per row, its reductions in shared memory with a barrier per tree level), launched on the
 * default stream; products through cuBLAS (f32, column-major). An error from a launch or
 * the runtime is kept (the first one, naming the kernel) and returned by mk_cu_sync. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>

/* the C headers, read as C++ */
#define _Noreturn [[noreturn]]
extern "C" {
#include "mk_cuda.h"
}
#undef _Noreturn

#include "bodies.h"
#include "launch.h"

static char first_err[256];
static cublasHandle_t blas;

static void note(const char *what, cudaError_t e)
{
    if (e != cudaSuccess && !first_err[0]) snprintf(first_err, sizeof first_err, "%s: %s", what, cudaGetErrorString(e));
}
#define LAUNCHED(name) note(name, cudaGetLastError())

static unsigned flat_blocks(size_t n) { return (unsigned)((n + MK_CU_FLAT - 1) / MK_CU_FLAT); }

/* The tree over sh[0, MK_CU_NT) (sh[0] the total); barriers before and after. */
__device__ static void tree(double *sh, bool is_max)
{
    __syncthreads();
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2) {
        if (is_max) mk_cu_tree_max(sh, threadIdx.x, stride);
        else mk_cu_tree_add(sh, threadIdx.x, stride);
        __syncthreads();
    }
}

#define FLAT_IDX                                                                                                       \
    size_t i = (size_t)blockIdx.x * MK_CU_FLAT + threadIdx.x;                                                          \
    if (i >= n) return

extern "C" bool mk_cu_available(char *why, size_t n)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(why, n, "no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        return false;
    }
    if (count == 0) {
        snprintf(why, n, "no CUDA device (cudaGetDeviceCount found 0)");
        return false;
    }
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, 0)) != cudaSuccess) {
        snprintf(why, n, "CUDA device 0: %s", cudaGetErrorString(e));
        return false;
    }
    if (!blas && cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, n, "cuBLAS did not start on %s", p.name);
        return false;
    }
    snprintf(why, n, "%s, compute capability %d.%d, %.1f GiB", p.name, p.major, p.minor, (double)p.totalGlobalMem / (1 << 30));
    return true;
}

extern "C" mk_status mk_cu_mem_info(uint64_t *free_b, uint64_t *total_b)
{
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    *free_b = f, *total_b = t;
    return e == cudaSuccess ? MK_OK : mk_error(MK_ERR_IO, "cudaMemGetInfo: %s", cudaGetErrorString(e));
}

extern "C" mk_status mk_cu_alloc(void **dev, size_t bytes)
{
    cudaError_t e = cudaMalloc(dev, bytes ? bytes : 1);
    if (e == cudaSuccess) return MK_OK;
    *dev = NULL;
    return mk_error(MK_ERR_NOMEM, "cudaMalloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
}
extern "C" void mk_cu_free(void *dev) { cudaFree(dev); }

extern "C" mk_status mk_cu_put(void *dev, const void *host, size_t bytes)
{
    cudaError_t e = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    return e == cudaSuccess ? MK_OK : mk_error(MK_ERR_IO, "copy to the device: %s", cudaGetErrorString(e));
}
extern "C" mk_status mk_cu_get(void *host, const void *dev, size_t bytes)
{
    cudaError_t e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    return e == cudaSuccess ? MK_OK : mk_error(MK_ERR_IO, "copy from the device: %s", cudaGetErrorString(e));
}
extern "C" void mk_cu_zero(void *dev, size_t bytes) { note("cudaMemset", cudaMemset(dev, 0, bytes)); }

extern "C" mk_status mk_cu_sync(void)
{
    note("cudaDeviceSynchronize", cudaDeviceSynchronize());
    if (!first_err[0]) return MK_OK;
    mk_status s = mk_error(MK_ERR_IO, "CUDA: %s", first_err);
    first_err[0] = 0;
    return s;
}

/* a launch's error kept for mk_cu_sync, for the kernels of kernels_lora.cu (mk_cuda_lora.h) */
extern "C" void mk_cu_launched(const char *name) { LAUNCHED(name); }

/* ---- embedding ---- */
__global__ static void k_embed_fwd(size_t n, const int32_t *tok, size_t H, const float *emb, float *x)
{
    FLAT_IDX;
    mk_cu_embed_fwd_body(i, tok, H, emb, x);
}
__global__ static void k_embed_bwd(size_t n, const int32_t *tok, size_t T, const float *dx, float *demb)
{
    FLAT_IDX;
    mk_cu_embed_bwd_body(i, tok, T, n, dx, demb);
}
extern "C" void mk_cu_embed_fwd(const int32_t *tok, size_t T, size_t H, const float *emb, float *x)
{
    k_embed_fwd<<<flat_blocks(T * H), MK_CU_FLAT>>>(T * H, tok, H, emb, x);
    LAUNCHED("embedding forward");
}
extern "C" void mk_cu_embed_bwd(const int32_t *tok, size_t T, size_t H, const float *dx, float *demb)
{
    k_embed_bwd<<<flat_blocks(H), MK_CU_FLAT>>>(H, tok, T, dx, demb);
    LAUNCHED("embedding backward");
}

/* ---- RMSNorm ---- */
__global__ static void k_rms(const float *x, const float *w, size_t d, float eps, float *out, float *rstd)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_rms_part(blockIdx.x, threadIdx.x, x, d, sh);
    tree(sh, false);
    mk_cu_rms_fin(blockIdx.x, threadIdx.x, x, w, d, eps, sh[0], out, rstd);
}
__global__ static void k_rms_bwd(const float *x, const float *w, const float *dy, size_t d, float eps, float *dx, float *rstd)
{
    __shared__ double sh[2 * MK_CU_NT];
    mk_cu_rms_bwd_part(blockIdx.x, threadIdx.x, x, w, dy, d, sh);
    __syncthreads();
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2) {
        mk_cu_tree_add(sh, threadIdx.x, stride);
        mk_cu_tree_add(sh + MK_CU_NT, threadIdx.x, stride);
        __syncthreads();
    }
    mk_cu_rms_bwd_fin(blockIdx.x, threadIdx.x, x, w, dy, d, eps, sh[0], sh[MK_CU_NT], dx, rstd);
}
__global__ static void k_rms_dw(size_t n, const float *x, const float *dy, const float *rstd, size_t T, float *dw)
{
    FLAT_IDX;
    mk_cu_rms_dw_body(i, x, dy, rstd, T, n, dw);
}
extern "C" void mk_cu_rmsnorm(float *out, const float *x, const float *w, size_t T, size_t d, float eps, float *rstd)
{
    k_rms<<<(unsigned)T, MK_CU_NT>>>(x, w, d, eps, out, rstd);
    LAUNCHED("rmsnorm forward");
}
extern "C" void mk_cu_rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                                  float *dw, float *rstd)
{
    k_rms_bwd<<<(unsigned)T, MK_CU_NT>>>(x, w, dy, d, eps, dx, rstd);
    LAUNCHED("rmsnorm backward");
    if (!dw) return;
    k_rms_dw<<<flat_blocks(d), MK_CU_FLAT>>>(d, x, dy, rstd, T, dw);
    LAUNCHED("rmsnorm weight gradient");
}

/* ---- RoPE ---- */
__global__ static void k_rope(size_t n, float *x, size_t nh, size_t hd, size_t half, const float *c, const float *s, float sg)
{
    FLAT_IDX;
    mk_cu_rope_body(i, x, nh, hd, half, c, s, sg);
}
extern "C" void mk_cu_rope(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t,
                           bool inverse)
{
    size_t n = T * nh * half;
    k_rope<<<flat_blocks(n), MK_CU_FLAT>>>(n, x, nh, hd, half, cos_t, sin_t, inverse ? -1.0f : 1.0f);
    LAUNCHED("rope");
}

/* ---- attention ---- */
__global__ static void k_att_softmax(const float *q, const float *k, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                                     long window, float *p)
{
    __shared__ double sh[MK_CU_NT];
    size_t row = blockIdx.x;
    mk_cu_att_score_part(row, threadIdx.x, q, k, T, nh, nkv, hd, scale, window, p, sh);
    tree(sh, true);
    float mx = (float)sh[0];
    __syncthreads();
    mk_cu_att_exp_part(row, threadIdx.x, T, window, mx, p, sh);
    tree(sh, false);
    mk_cu_att_norm_fin(row, threadIdx.x, T, window, sh[0], p);
}
/* the four weighted sums over a row of probabilities (or of dS): one kernel, the sum by `which` */
enum { ATT_OUT, ATT_DV, ATT_DQ, ATT_DK };
__global__ static void k_att_sum(int which, size_t n, const float *a, const float *b, size_t T, size_t nh, size_t nkv, size_t hd,
                                 float *y)
{
    FLAT_IDX;
    switch (which) {
    case ATT_OUT: mk_cu_att_out_body(i, a, b, T, nh, nkv, hd, y); break;
    case ATT_DV: mk_cu_att_dv_body(i, a, b, T, nh, nkv, hd, y); break;
    case ATT_DQ: mk_cu_att_dq_body(i, a, b, T, nh, nkv, hd, y); break;
    default: mk_cu_att_dk_body(i, a, b, T, nh, nkv, hd, y); break;
    }
}
static void att_sum(int which, size_t n, const float *a, const float *b, size_t T, size_t nh, size_t nkv, size_t hd, float *y,
                    const char *name)
{
    k_att_sum<<<flat_blocks(n), MK_CU_FLAT>>>(which, n, a, b, T, nh, nkv, hd, y);
    LAUNCHED(name);
}
__global__ static void k_att_ds(const float *p, const float *dout, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                float scale, float *ds)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_att_dp_part(blockIdx.x, threadIdx.x, p, dout, v, T, nh, nkv, hd, ds, sh);
    tree(sh, false);
    mk_cu_att_ds_fin(blockIdx.x, threadIdx.x, p, T, scale, sh[0], ds);
}
extern "C" void mk_cu_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                float scale, long window, float *out, float *p)
{
    k_att_softmax<<<(unsigned)(nh * T), MK_CU_NT>>>(q, k, T, nh, nkv, hd, scale, window, p);
    LAUNCHED("attention softmax");
    att_sum(ATT_OUT, T * nh * hd, p, v, T, nh, nkv, hd, out, "attention output");
}
extern "C" void mk_cu_attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                                    size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *ds)
{
    size_t nq = T * nh * hd, nk = T * nkv * hd;
    att_sum(ATT_DV, nk, p, dout, T, nh, nkv, hd, dv, "attention backward dv");
    k_att_ds<<<(unsigned)(nh * T), MK_CU_NT>>>(p, dout, v, T, nh, nkv, hd, scale, ds);
    LAUNCHED("attention backward scores");
    att_sum(ATT_DQ, nq, ds, k, T, nh, nkv, hd, dq, "attention backward dq");
    att_sum(ATT_DK, nk, ds, q, T, nh, nkv, hd, dk, "attention backward dk");
}

/* ---- elementwise ---- */
__global__ static void k_swiglu(size_t n, const float *g, const float *u, float *o)
{
    FLAT_IDX;
    mk_cu_swiglu_body(i, g, u, o);
}
__global__ static void k_swiglu_bwd(size_t n, const float *g, const float *u, const float *d, float *dg, float *du)
{
    FLAT_IDX;
    mk_cu_swiglu_bwd_body(i, g, u, d, dg, du);
}
__global__ static void k_add(size_t n, float *y, const float *x)
{
    FLAT_IDX;
    mk_cu_add_body(i, y, x);
}
__global__ static void k_scale(size_t n, float *x, float c)
{
    FLAT_IDX;
    mk_cu_scale_body(i, x, c);
}
extern "C" void mk_cu_swiglu(const float *gate, const float *up, float *out, size_t n)
{
    k_swiglu<<<flat_blocks(n), MK_CU_FLAT>>>(n, gate, up, out);
    LAUNCHED("swiglu");
}
extern "C" void mk_cu_swiglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    k_swiglu_bwd<<<flat_blocks(n), MK_CU_FLAT>>>(n, gate, up, dout, dgate, dup);
    LAUNCHED("swiglu backward");
}
extern "C" void mk_cu_add(float *y, const float *x, size_t n)
{
    k_add<<<flat_blocks(n), MK_CU_FLAT>>>(n, y, x);
    LAUNCHED("add");
}
extern "C" void mk_cu_scale(float *x, float c, size_t n)
{
    k_scale<<<flat_blocks(n), MK_CU_FLAT>>>(n, x, c);
    LAUNCHED("scale");
}

/* ---- cross-entropy ---- */
__global__ static void k_xent(float *x, size_t V, const int32_t *target, const float *weight, float scale, double *nll)
{
    __shared__ double sh[MK_CU_NT];
    size_t row = blockIdx.x;
    mk_cu_xent_max_part(row, threadIdx.x, x, V, sh);
    tree(sh, true);
    float mx = (float)sh[0];
    __syncthreads();
    mk_cu_xent_sum_part(row, threadIdx.x, x, V, mx, sh);
    tree(sh, false);
    mk_cu_xent_fin(row, threadIdx.x, x, V, target, weight, scale, mx, sh[0], nll);
}
extern "C" void mk_cu_xent(float *logits, size_t n, size_t V, const int32_t *target, const float *weight, float scale, double *nll)
{
    k_xent<<<(unsigned)n, MK_CU_NT>>>(logits, V, target, weight, scale, nll);
    LAUNCHED("cross-entropy");
}

/* ---- optimizer ---- */
__global__ static void k_adamw(size_t n, mk_cu_adamw_k k, int decay, float *w, const float *g, float *m, float *v, uint16_t *w16)
{
    FLAT_IDX;
    mk_cu_adamw_body(i, k, decay, w, g, m, v, w16);
}
extern "C" void mk_cu_adamw(double beta1, double beta2, double eps, double weight_decay, double lr, long step, bool decay,
                            float *w, const float *g, float *m, float *v, uint16_t *w16, size_t n)
{
    mk_cu_adamw_k k = mk_cu_adamw_consts(beta1, beta2, eps, weight_decay, lr, step, decay);
    k_adamw<<<flat_blocks(n), MK_CU_FLAT>>>(n, k, decay, w, g, m, v, w16);
    LAUNCHED("adamw");
}

__global__ static void k_sumsq(const float *g, size_t n, size_t nb, double *part)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_sumsq_part(blockIdx.x, threadIdx.x, g, n, nb, sh);
    tree(sh, false);
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}
__global__ static void k_sum(const double *part, size_t nb, double *out)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_sum_part(threadIdx.x, part, nb, sh);
    tree(sh, false);
    if (threadIdx.x == 0) out[0] = sh[0];
}
extern "C" mk_status mk_cu_grad_norm(const float *g, size_t n, double *part, double *norm)
{
    size_t nb = mk_cu_norm_blocks(n);
    k_sumsq<<<(unsigned)nb, MK_CU_NT>>>(g, n, nb, part);
    LAUNCHED("gradient norm");
    k_sum<<<1, MK_CU_NT>>>(part, nb, part + nb);
    LAUNCHED("gradient norm total");
    double tot = 0;
    mk_status s = mk_cu_sync();
    if (s == MK_OK) s = mk_cu_get(&tot, part + nb, sizeof tot);
    *norm = sqrt(tot);
    return s;
}

/* ---- products ---- */
extern "C" void mk_cu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda,
                           const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    cublasStatus_t st = cublasSgemm(blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int)m, (int)n, (int)k,
                                    &alpha, A, (int)lda, B, (int)ldb, &beta, C, (int)ldc);
    if (st != CUBLAS_STATUS_SUCCESS && !first_err[0])
        snprintf(first_err, sizeof first_err, "cublasSgemm %zux%zux%zu: status %d", m, n, k, (int)st);
}

/* the bf16 mixed-precision kernels (mk_cuda16.h) */
#include "kernels16.cuh"
