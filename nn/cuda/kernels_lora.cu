/* kernels_lora.cu - mk_cuda_lora.h on a CUDA device: the bodies of bodies_lora.h in
 * __global__ kernels (flat: MK_CU_FLAT threads a block), launched on the default stream as
 * kernels.cu's; a launch's error is kept by mk_cu_launched for mk_cu_sync. The bf16 kernels
 * (mk_cuda_lora16.h) are kernels_lora16.cuh, included at the end. */
#include <cuda_runtime.h>

/* the C headers, read as C++ */
#define _Noreturn [[noreturn]]
extern "C" {
#include "mk_cuda_lora.h"
#include "mk_cuda_lora16.h"
}
#undef _Noreturn

#include "bodies_lora.h"

static unsigned blocks(size_t n) { return (unsigned)((n + MK_CU_FLAT - 1) / MK_CU_FLAT); }

#define FLAT_IDX                                                                                                                 \
    size_t i = (size_t)blockIdx.x * MK_CU_FLAT + threadIdx.x;                                                                    \
    if (i >= n) return

__global__ static void k_bias_add(size_t n, float *y, const float *b, size_t out)
{
    FLAT_IDX;
    mk_cu_bias_add_body(i, y, b, out);
}
__global__ static void k_bias_bwd(size_t n, const float *dy, size_t T, float *db)
{
    FLAT_IDX;
    mk_cu_bias_bwd_body(i, dy, T, n, db);
}
__global__ static void k_nf4(size_t n, const uint8_t *codes, const float *absmax, const float *table, size_t block, float *out)
{
    FLAT_IDX;
    mk_cu_nf4_body(i, codes, absmax, table, block, out);
}

extern "C" void mk_cu_bias_add(float *y, const float *b, size_t T, size_t out)
{
    if (!T || !out) return;
    k_bias_add<<<blocks(T * out), MK_CU_FLAT>>>(T * out, y, b, out);
    mk_cu_launched("bias");
}
extern "C" void mk_cu_bias_bwd(const float *dy, size_t T, size_t out, float *db)
{
    if (!out) return;
    k_bias_bwd<<<blocks(out), MK_CU_FLAT>>>(out, dy, T, db);
    mk_cu_launched("bias backward");
}
extern "C" void mk_cu_nf4_decode(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n,
                                 float *out)
{
    if (!n) return;
    k_nf4<<<blocks(n), MK_CU_FLAT>>>(n, codes, absmax, table, block, out);
    mk_cu_launched("NF4 decode");
}

#include "kernels_lora16.cuh"
