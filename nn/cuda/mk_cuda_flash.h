/* mk_cuda_flash.h - fused (flash-style, FlashAttention-2's shape) causal attention with grouped
 * key/value heads and a sliding window, forward and backward, without the [heads, T, T]
 * probabilities of mk_cu_attention: tiles of queries against tiles of keys in shared memory,
 * an online softmax, each row's maximum score and the inverse of its sum of exponentials kept
 * for the backward, which recomputes the probabilities from them (bodies_flash.h). Device: kernels_flash.cu; emulation: emu_flash.c.
 * Held to the CPU's mk_nn_attention_train / mk_nn_attention_bwd (f32) and their _bf16 forms
 * (tests/cuda/cases.c). Needs head_dim <= MK_CU_FLASH_HD_MAX (mk_cu_flash_fits); the trainer
 * falls back to mk_cu_attention past it. */
#ifndef MK_NN_CUDA_FLASH_H
#define MK_NN_CUDA_FLASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MK_CU_FLASH_HD_MAX 128
static inline bool mk_cu_flash_fits(size_t hd) { return hd > 0 && hd <= MK_CU_FLASH_HD_MAX; }

/* One sequence: out [T, nh * hd] and st [2, nh, T] (each row's maximum scaled score, then the
 * inverse of its sum of exp(score - maximum)); f32 (mk_nn_attention_train's values, no
 * probabilities) */
void mk_cu_flash_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                           float scale, long window, float *out, float *st);
/* its backward from st: dq = ..., dk and dv += ... (mk_nn_attention_bwd); dsum: scratch [nh, T] */
void mk_cu_flash_attention_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, size_t T,
                               size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                               float *dsum);
/* bf16 mixed precision (q, k, v already rounded), the rounding of mk_nn_attention_train_bf16:
 * out stored bf16 */
void mk_cu_flash_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                             float scale, long window, uint16_t *out, float *st);
/* mk_nn_attention_bwd_bf16's: dq and dv written, dk += ... */
void mk_cu_flash_attention16_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, size_t T,
                                 size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                                 float *dsum);

#endif
