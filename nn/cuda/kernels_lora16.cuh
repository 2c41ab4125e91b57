/* kernels_lora16.cuh - mk_cuda_lora16.h on a CUDA device, included at the end of kernels_lora.cu
 * (its includes, the C headers among them, block counts and FLAT_IDX): the bodies of
 * bodies_lora16.h in __global__ kernels (flat: MK_CU_FLAT threads a block; row: one block of
 * MK_CU_NT threads per row, a barrier per tree level), launched on the default stream; a launch's
 * error is kept by mk_cu_launched for mk_cu_sync. */
#include "bodies_lora16.h"

/* a flat kernel: one thread per element i < n, the body `call` */
#define FLAT_KERNEL(name, params, call)                                                                                          \
    __global__ static void name params                                                                                           \
    {                                                                                                                            \
        FLAT_IDX;                                                                                                                \
        call;                                                                                                                    \
    }

/* the trees over sh[0, MK_CU_NT) and, with two, sh[MK_CU_NT, 2 MK_CU_NT); barriers before and after */
__device__ static void trees(double *sh, bool two)
{
    __syncthreads();
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2) {
        mk_cu_tree_add(sh, threadIdx.x, stride);
        if (two) mk_cu_tree_add(sh + MK_CU_NT, threadIdx.x, stride);
        __syncthreads();
    }
}

FLAT_KERNEL(k_bias16_add, (size_t n, float *y, const uint16_t *b, size_t out), mk_cu_bias16_add_body(i, y, b, out))
FLAT_KERNEL(k_bias16_bwd, (size_t n, const uint16_t *dy, size_t T, float *db), mk_cu_bias16_bwd_body(i, dy, T, n, db))
FLAT_KERNEL(k_lora16_add, (size_t n, float *y, const uint16_t *t, float s), mk_cu_lora16_add_body(i, y, t, s))
FLAT_KERNEL(k_scale16, (size_t n, uint16_t *y, float s), mk_cu_scale16_body(i, y, s))
FLAT_KERNEL(k_nf4_16, (size_t n, const uint8_t *codes, const float *absmax, const float *table, size_t block,
            uint16_t *out), mk_cu_nf4_16_body(i, codes, absmax, table, block, out))
__global__ static void k_rmsb(const float *x, const float *w, size_t d, float eps, float *out)
{
    __shared__ double sh[MK_CU_NT];
    mk_cu_rms_part(blockIdx.x, threadIdx.x, x, d, sh);
    trees(sh, false);
    mk_cu_rmsb_fin(blockIdx.x, threadIdx.x, x, w, d, eps, sh[0], out);
}
__global__ static void k_rmsb_bwd(const float *x, const float *w, const float *dy, size_t d, float eps, float *dx, float *rstd)
{
    __shared__ double sh[2 * MK_CU_NT];
    mk_cu_rms_bwd_part_any(blockIdx.x, threadIdx.x, x, w, dy, d, sh, 1);
    trees(sh, true);
    mk_cu_rms_bwd_fin_any(blockIdx.x, threadIdx.x, x, w, dy, d, eps, sh[0], sh[MK_CU_NT], dx, rstd, 1);
}
FLAT_KERNEL(k_rmsb_dw, (size_t n, const float *x, const float *dy, const float *rstd, size_t T, float *dw),
            mk_cu_rmsb_dw_body(i, x, dy, rstd, T, n, dw))

/* launch a flat kernel over n threads (none when n is 0), its error kept under name */
#define FLAT16(kernel, n, name, ...)                                                                                             \
    do {                                                                                                                         \
        if ((n) == 0) return;                                                                                                    \
        kernel<<<blocks(n), MK_CU_FLAT>>>((n), __VA_ARGS__);                                                                     \
        mk_cu_launched(name);                                                                                                    \
    } while (0)

extern "C" void mk_cu_bias16_add(float *y, const uint16_t *b, size_t T, size_t out)
{
    FLAT16(k_bias16_add, T * out, "bias (bf16)", y, b, out);
}
extern "C" void mk_cu_bias16_bwd(const uint16_t *dy, size_t T, size_t out, float *db)
{
    FLAT16(k_bias16_bwd, out, "bias backward (bf16)", dy, T, db);
}
extern "C" void mk_cu_lora16_add(float *y, const uint16_t *t, float s, size_t n)
{
    FLAT16(k_lora16_add, n, "LoRA sum (bf16)", y, t, s);
}
extern "C" void mk_cu_scale16(uint16_t *y16, float s, size_t n) { FLAT16(k_scale16, n, "LoRA output gradient (bf16)", y16, s); }
extern "C" void mk_cu_nf4_decode16(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n,
                                   uint16_t *out)
{
    FLAT16(k_nf4_16, n, "NF4 decode (bf16)", codes, absmax, table, block, out);
}
extern "C" void mk_cu_rmsnorm_b(float *out, const float *x, const float *w, size_t T, size_t d, float eps)
{
    if (!T) return;
    k_rmsb<<<(unsigned)T, MK_CU_NT>>>(x, w, d, eps, out);
    mk_cu_launched("q/k norm forward (bf16)");
}
extern "C" void mk_cu_rmsnorm_b_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                                    float *dw, float *rstd)
{
    if (!T) return;
    k_rmsb_bwd<<<(unsigned)T, MK_CU_NT>>>(x, w, dy, d, eps, dx, rstd);
    mk_cu_launched("q/k norm backward (bf16)");
    if (dw) FLAT16(k_rmsb_dw, d, "q/k norm weight gradient (bf16)", x, dy, rstd, T, dw);
}
