/* bodies_lora.h - the per-thread bodies of the kernels LoRA, QLoRA and the qwen families add
 * to the CUDA trainer (nn/cuda/train_lora.c), in the common subset of C and CUDA C++ as
 * bodies.h: kernels_lora.cu wraps them in __global__ kernels, emu_lora.c loops them over the
 * grid on the CPU. All flat kernels (one thread per element or per column); no atomics.
 */
#ifndef MK_NN_CUDA_BODIES_LORA_H
#define MK_NN_CUDA_BODIES_LORA_H

#include "bodies.h"

/* ---- a projection's bias (qwen2's q/k/v) ---- */
/* y[t, o] += b[o]; idx < T * out */
MK_HD void mk_cu_bias_add_body(size_t idx, float *y, const float *b, size_t out) { y[idx] += b[idx % out]; }
/* db[o] += sum over t of dy[t, o], in order, in double (mk_nn_linear_bwd's db); one thread per column o < out */
MK_HD void mk_cu_bias_bwd_body(size_t o, const float *dy, size_t T, size_t out, float *db)
{
    double s = 0;
    for (size_t t = 0; t < T; t++) s += dy[t * out + o];
    db[o] += (float)s;
}

/* ---- NF4 decode (QLoRA's frozen base; quant/bnb.c's mk_bnb4_dequant) ---- */
/* out[idx] = table[code idx] * absmax[idx / block]: two codes a byte, the even element's in
 * the high nibble; idx < n */
MK_HD void mk_cu_nf4_body(size_t idx, const uint8_t *codes, const float *absmax, const float *table, size_t block, float *out)
{
    uint8_t byte = codes[idx / 2];
    out[idx] = table[(idx & 1) ? (byte & 15) : (byte >> 4)] * absmax[idx / block];
}

#endif
