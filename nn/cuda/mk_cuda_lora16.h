/* mk_cuda_lora16.h - the bf16 mixed-precision kernels of LoRA, QLoRA and the qwen families on the
 * device (nn/cuda/train_lora16.c), beside mk_cuda_lora.h's f32 ones and mk_cuda16.h's: each
 * rounds where nn/backward.c's bf16 path does (named beside it). Same conventions as
 * mk_cuda.h; uint16_t pointers are bf16 storage. Implemented by kernels_lora16.cu (the device)
 * and emu_lora16.c (the CPU emulation); bodies: bodies_lora16.h. */
#ifndef MK_NN_CUDA_LORA16_H
#define MK_NN_CUDA_LORA16_H

#include "mk_cuda.h"

/* y[T, out] = bf16(y + b) (y: a product's f32 sums; lin with a bias, then rounded); backward:
 * db += bf16(the column sums of dy) (mk_nn_linear_bwd_bf16's db) */
void mk_cu_bias16_add(float *y, const uint16_t *b, size_t T, size_t out);
void mk_cu_bias16_bwd(const uint16_t *dy, size_t T, size_t out, float *db);
/* proj's LoRA sum: y = bf16(y + bf16(t * s)); and y16 = bf16(y16 * s) (proj_bwd's lys) */
void mk_cu_lora16_add(float *y, const uint16_t *t, float s, size_t n);
void mk_cu_scale16(uint16_t *y16, float s, size_t n);
/* mk_cu_nf4_decode, rounded to bf16 */
void mk_cu_nf4_decode16(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n, uint16_t *out);
/* mk_nn_rmsnorm_bf16 (rows of d); mk_nn_rmsnorm_bwd_bf16: dx written, dw += (NULL: frozen);
 * rstd: scratch of T floats */
void mk_cu_rmsnorm_b(float *out, const float *x, const float *w, size_t T, size_t d, float eps);
void mk_cu_rmsnorm_b_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *rstd);

#endif
