/* mk_cuda_flash.h - fused (flash-style) causal attention with grouped key/value heads and a
 * sliding window, forward and backward, without the [heads, T, T] probabilities of
 * mk_cu_attention: tiles of keys with an online softmax, each row's log-sum-exp kept for the
 * backward (bodies_flash.h). Device: kernels16.cuh (in kernels.cu); emulation: emu16.c. Held to
 * mk_cu_attention and mk_cu_attention_bwd (tests/cuda/cases.c). Not yet used by the trainer.
 * Needs head_dim <= MK_CU_NT (256). */
#ifndef MK_NN_CUDA_FLASH_H
#define MK_NN_CUDA_FLASH_H

#include "mk_cuda.h"

/* out [T, nh * hd] and lse [nh, T] (each row's log-sum-exp of its scaled scores) of one sequence */
void mk_cu_flash_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                           float scale, long window, float *out, float *lse);
/* its backward from out and lse: dq = ..., dk and dv += ...; dsum: scratch [nh, T] */
void mk_cu_flash_attention_bwd(const float *q, const float *k, const float *v, const float *out, const float *lse,
                               const float *dout, size_t T, size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq,
                               float *dk, float *dv, float *dsum);

#endif
