/* train_gemma.h - what the CUDA trainer (train.c) calls for the gemma family, as nn/backward.c's
 * norm_fwd / norm_bwd, mlp_act / mlp_act_bwd and the embedding scale: the norms scale by
 * (1 + w) (kept on the device in one buffer, made from the weights before each pass; the
 * gradient of w is that of (1 + w), so mk_cu_rmsnorm_bwd runs on it unchanged), the MLP is
 * GeGLU (mk_cuda_norm.h's GELU-tanh kernels), the embeddings are multiplied by sqrt(hidden)
 * in f32 (and their gradient by the same). A NULL mk_cu_gemma (any other family) gives the
 * llama layer: the norm weight itself, SwiGLU, no scale. Private to nn/cuda/. */
#ifndef MK_NN_CUDA_TRAIN_GEMMA_H
#define MK_NN_CUDA_TRAIN_GEMMA_H

#include "../../model/config.h"

typedef struct mk_cu_gemma mk_cu_gemma;

/* *out NULL (and MK_OK) for a model that is not gemma; n_norms: the hidden-size norms (two a
 * layer and the final one), each of H weights. bf16 is refused (one line). */
mk_status mk_cu_gemma_open(const mk_model_config *c, size_t n_norms, size_t H, bool bf16, mk_cu_gemma **out);
void mk_cu_gemma_close(mk_cu_gemma *gm);
/* Device bytes it holds for such a model. */
uint64_t mk_cu_gemma_bytes(size_t n_norms, size_t H);
/* Before a pass: norm i's factor (1 + w) from its weight w (device), i < n_norms. */
mk_status mk_cu_gemma_norm_set(mk_cu_gemma *gm, size_t i, const float *w);
/* The factor the norm i kernels read: (1 + w) for gemma, w itself otherwise. */
const float *mk_cu_gemma_norm(const mk_cu_gemma *gm, size_t i, const float *w);
/* The embeddings x[n] (after the lookup) times sqrt(hidden); the same on their gradient. */
void mk_cu_gemma_embed(const mk_cu_gemma *gm, float *x, size_t n);
/* The gated MLP's activation and its backward: GeGLU for gemma, SwiGLU otherwise. */
void mk_cu_gemma_act(const mk_cu_gemma *gm, const float *gate, const float *up, float *out, size_t n);
void mk_cu_gemma_act_bwd(const mk_cu_gemma *gm, const float *gate, const float *up, const float *dout, size_t n, float *dgate,
                         float *dup);

#endif
