/* mk_cuda16.h - the bf16 mixed-precision kernels of finetune --device cuda --dtype bf16, beside
 * mk_cuda.h's f32 ones: each forward and backward pair rounds where the CPU's bf16 kernel named
 * beside it does (nn/ops_bwd.h, torch.autocast's points), and products take bf16 operands with
 * f32 sums (cublasGemmEx: CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F). Values the CPU keeps as
 * bf16-rounded f32 are rounded f32 here (uint16_t pointers: bf16 storage). Implemented by
 * kernels16.cuh (in kernels.cu, nvcc) and emu16.c (the CPU emulation); the products of
 * nn.Linear on top of mk_cu_gemm16 in common16.c. */
#ifndef MK_NN_CUDA16_H
#define MK_NN_CUDA16_H

#include "mk_cuda.h"

/* x = bf16(x); y16 = bf16(x); y += c16 (sum16: y = bf16(y + c16), a bf16 tensor's gradient) */
void mk_cu_round(float *x, size_t n);
void mk_cu_to16(const float *x, uint16_t *y16, size_t n);
void mk_cu_add16(float *y, const uint16_t *c16, size_t n, bool sum16);

/* mk_nn_rmsnorm then mk_nn_round_bf16, stored bf16 */
void mk_cu_rmsnorm16(uint16_t *out, const float *x, const float *w, size_t T, size_t d, float eps);
/* mk_nn_rope_bwd_bf16 (the forward is mk_cu_rope, then mk_cu_round) */
void mk_cu_rope16_bwd(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t);
/* mk_nn_attention_train_bf16 over one sequence (q, k, v rounded): out stored bf16, p [nh, T, T] f32 */
void mk_cu_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                       long window, uint16_t *out, float *p);
/* mk_nn_attention_bwd_bf16: dq and dv written, dk += ...; ds: scratch [nh, T, T] */
void mk_cu_attention16_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                           size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *ds);
/* mk_nn_swiglu_bf16 (out stored bf16) and mk_nn_swiglu_bwd_bf16 */
void mk_cu_swiglu16(const float *gate, const float *up, uint16_t *out, size_t n);
void mk_cu_swiglu16_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

/* Column-major C[m, n] = op(A) op(B) of bf16 A and B, summed in f32 (cublasGemmEx); C is f32
 * (c16 false) or the sums rounded to bf16 (c16 true). */
void mk_cu_gemm16(bool ta, bool tb, size_t m, size_t n, size_t k, const uint16_t *A, size_t lda, const uint16_t *B, size_t ldb,
                  void *C, size_t ldc, bool c16);

/* nn.Linear in bf16 (common16.c): y[T, out] = bf16(x W^T) (f32 storage); its backward as
 * mk_nn_linear_bwd_bf16: dx += bf16(dy W) (dx_bf16: dx = bf16(dx + bf16(dy W))), dw +=
 * bf16(dy^T x) (either may be NULL); c16: scratch of max(T * in, out * in) bf16 values. */
void mk_cu_linear16(const uint16_t *x, size_t T, size_t in, const uint16_t *w, size_t out, float *y);
void mk_cu_linear16_bwd(const uint16_t *x, size_t T, size_t in, const uint16_t *w, size_t out, const uint16_t *dy, float *dx,
                        bool dx_bf16, float *dw, uint16_t *c16);

#endif
