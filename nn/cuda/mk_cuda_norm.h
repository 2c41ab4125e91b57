/* mk_cuda_norm.h - LayerNorm and GeGLU forward and backward on the device (kernels16.cuh in
 * kernels.cu) or the CPU emulation (emu16.c), each beside the CPU function it matches; the
 * bodies in bodies_norm.h. Layouts as mk_cuda.h. Not yet used by the trainer (it trains llama
 * and mistral: RMSNorm and SwiGLU); the kernels a LayerNorm / GeGLU family needs. */
#ifndef MK_NN_CUDA_NORM_H
#define MK_NN_CUDA_NORM_H

#include "mk_cuda.h"

/* mk_nn_layernorm (b may be NULL) */
void mk_cu_layernorm(float *out, const float *x, const float *w, const float *b, size_t T, size_t d, float eps);
/* mk_nn_layernorm_bwd: dx += ..., dw and db += ... (NULL: none); stats: scratch of 2T floats */
void mk_cu_layernorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *db, float *stats);
/* mk_nn_act_gated(MK_ACT_GELU_TANH, ...) and mk_nn_geglu_bwd */
void mk_cu_geglu(const float *gate, const float *up, float *out, size_t n);
void mk_cu_geglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

#endif
