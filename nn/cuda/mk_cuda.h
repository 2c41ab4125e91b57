/* mk_cuda.h - the training kernels on a CUDA device, behind a plain C interface: forward and
 * backward pairs for the embedding, RMSNorm, RoPE, causal attention with grouped key/value
 * heads, SwiGLU, softmax cross-entropy with a weight per token, AdamW with f32 master weights
 * and moments (and an optional bf16 copy of the weights), global-norm clipping, and the
 * products of nn.Linear through cuBLAS. Each pair matches the CPU kernel named beside it.
 *
 * Two implementations of this header: nn/cuda/kernels.cu (nvcc, `make CUDA=1`; the device)
 * and nn/cuda/emu.c (plain C; the same per-thread bodies, nn/cuda/bodies.h, run over the grid
 * on the CPU, with "device" memory in host memory), which the unit tests use to check the
 * kernels and the training pass on machines without a GPU.
 *
 * Pointers marked dev are device memory (mk_cu_alloc). Launches are asynchronous on one
 * stream; an error is kept and reported by the next mk_cu_sync (or copy to the host).
 * Layouts and conventions as nn/ops.h and nn/ops_bwd.h ("+=" outputs accumulate).
 */
#ifndef MK_NN_CUDA_H
#define MK_NN_CUDA_H

#include "../../core/mk_core.h"
#include "../ops.h"

/* Whether a device is usable; when not, why (one line) in why[n]. name: the device's name. */
bool mk_cu_available(char *why, size_t n);
/* Free and total device memory in bytes. */
mk_status mk_cu_mem_info(uint64_t *free_b, uint64_t *total_b);

mk_status mk_cu_alloc(void **dev, size_t bytes);
void mk_cu_free(void *dev);
mk_status mk_cu_put(void *dev, const void *host, size_t bytes);
mk_status mk_cu_get(void *host, const void *dev, size_t bytes);
void mk_cu_zero(void *dev, size_t bytes);
/* Wait for the launches so far; the first error since the last sync, naming the kernel. */
mk_status mk_cu_sync(void);

/* x[T, H] = emb[tok[t]] (mk_nn_train_pass's lookup); backward: demb[tok[t]] += dx[t] in order (mk_nn_embed_bwd) */
void mk_cu_embed_fwd(const int32_t *tok, size_t T, size_t H, const float *emb, float *x);
void mk_cu_embed_bwd(const int32_t *tok, size_t T, size_t H, const float *dx, float *demb);

/* mk_nn_rmsnorm (one_plus false); rstd [T] may be NULL */
void mk_cu_rmsnorm(float *out, const float *x, const float *w, size_t T, size_t d, float eps, float *rstd);
/* mk_nn_rmsnorm_bwd: dx += ..., dw += ... (NULL: frozen); rstd: scratch of T floats */
void mk_cu_rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                       float *rstd);

/* mk_nn_rope_rotate: cos_t, sin_t [T, half] on the device (mk_nn_rope_tab's); inverse: backward */
void mk_cu_rope(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t, bool inverse);

/* mk_nn_attention_train over one sequence: out, and the probabilities p [nh, T, T] */
void mk_cu_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                     long window, float *out, float *p);
/* mk_nn_attention_bwd: dq = ..., dk and dv += ...; ds: scratch [nh, T, T] */
void mk_cu_attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                         size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *ds);

/* mk_nn_act_gated(MK_ACT_SILU, ...) and mk_nn_swiglu_bwd */
void mk_cu_swiglu(const float *gate, const float *up, float *out, size_t n);
void mk_cu_swiglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

/* y += x; x *= c */
void mk_cu_add(float *y, const float *x, size_t n);
void mk_cu_scale(float *x, float c, size_t n);

/* mk_nn_xent: nll [n] doubles on the device */
void mk_cu_xent(float *logits, size_t n, size_t V, const int32_t *target, const float *weight, float scale, double *nll);

/* y[T, out] = x[T, in] W^T for W [out, in] (beta 0: overwrite, 1: accumulate) */
void mk_cu_linear(const float *x, size_t T, size_t in, const float *w, size_t out, float beta, float *y);
/* mk_nn_linear_bwd without a bias: dx += dy W, dw += dy^T x (either may be NULL) */
void mk_cu_linear_bwd(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx, float *dw);

/* mk_adamw_step's arithmetic on n elements; w16 (may be NULL): a bf16 copy of the result */
void mk_cu_adamw(double beta1, double beta2, double eps, double weight_decay, double lr, long step, bool decay, float *w,
                 const float *g, float *m, float *v, uint16_t *w16, size_t n);
/* mk_grad_norm of g[n] (device), returned to the host; part: scratch of mk_cu_norm_parts(n) doubles */
mk_status mk_cu_grad_norm(const float *g, size_t n, double *part, double *norm);
size_t mk_cu_norm_parts(size_t n);
#define MK_CU_NORM_PARTS_MAX 1025 /* mk_cu_norm_parts of any n */
/* mk_grad_clip with the norm from mk_cu_grad_norm; returns the coefficient */
float mk_cu_grad_clip(float *g, size_t n, double norm, double max_norm);

/* The CPU emulation only (emu.c): give it `total` bytes of "device" memory (0: no size, so
 * nothing is refused), and *peak the most it held at once since the last call. */
void mk_cu_emu_memory(uint64_t total, uint64_t *peak);

/* The backend's column-major product (cublasSgemm's arguments; ta, tb: transpose A, B):
 * C[m, n] = alpha op(A) op(B) + beta C. mk_cu_linear and mk_cu_linear_bwd are built on it. */
void mk_cu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda, const float *B,
                size_t ldb, float beta, float *C, size_t ldc);

#endif
