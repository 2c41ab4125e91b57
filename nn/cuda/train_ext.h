/* train_ext.h - what the CUDA trainer (train.c, written for full finetuning of llama) calls
 * for the rest (train_lora.c): LoRA adapters on the projections (the base frozen on the
 * device, no gradients or moments for it), QLoRA's NF4 base decoded a layer at a time on the
 * device, qwen2's q/k/v biases and qwen3's per-head q/k RMSNorm. Each function follows
 * nn/backward.c's proj, proj_bwd, head_norm and held_load. Private to nn/cuda/. */
#ifndef MK_NN_CUDA_TRAIN_EXT_H
#define MK_NN_CUDA_TRAIN_EXT_H

#include "../backward.h"

typedef struct mk_cu_ext mk_cu_ext;

/* Device bytes the extension holds for t (0 for a full finetune without biases or norms). */
uint64_t mk_cu_ext_bytes(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing);
/* Allocate and fill (the frozen base, NF4 codes) for micro-batches of up to nseq x T;
 * w, gr: the trainer's weights and gradients of the trained tensors (the adapters under LoRA). */
mk_status mk_cu_ext_open(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing, float *w, float *gr, mk_cu_ext **out);
void mk_cu_ext_close(mk_cu_ext *x);
/* The base weights the offsets of mk_nn_train_offset index (the frozen base under LoRA; NULL:
 * the trained buffer) and their gradients (NULL under LoRA: frozen). */
const float *mk_cu_ext_base(const mk_cu_ext *x);
bool mk_cu_ext_frozen(const mk_cu_ext *x);
/* A held projection of layer l (QLoRA): its decoded values in the layer scratch. */
const float *mk_cu_ext_weight(const mk_cu_ext *x, size_t l, mk_role r);
/* Decode layer l's held projections (nothing when they are there already or none is held). */
void mk_cu_ext_layer(mk_cu_ext *x, size_t l);
/* After y[N, out] = x W^T of role r: + bias, + scale (x A^T) B^T (x A^T kept). */
void mk_cu_ext_proj(mk_cu_ext *x, size_t l, mk_role r, const float *in, size_t N, float *y);
/* After the base's backward of role r: the bias's and the adapter's, dx += the adapter's part. */
void mk_cu_ext_proj_bwd(mk_cu_ext *x, size_t l, mk_role r, const float *in, size_t N, const float *dy, float *dx);
/* qwen3: q and k (the projections' outputs) normalised per head in place, the inputs kept. */
void mk_cu_ext_qk(mk_cu_ext *x, size_t l, float *q, float *k, size_t N);
/* its backward: dq, dk from the normalised q's and k's gradient to the projections'. */
void mk_cu_ext_qk_bwd(mk_cu_ext *x, size_t l, float *dq, float *dk, size_t N);

#endif
