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

/* ---- bf16 mixed precision (the trainer set to bf16; train_lora16.c): nn/backward.c's proj,
 * proj_bwd and head_norm with t->bf16 ---- */
/* What the offsets of an f32-read tensor (a norm, the embedding) index under LoRA in bf16, where
 * mk_cu_ext_base holds only those: off's place there (off itself otherwise). */
int64_t mk_cu_ext_f32_off(const mk_cu_ext *x, int64_t off);
/* The trainer's bf16 copy of its trained tensors; the bf16 base the offsets index (the frozen
 * base in bf16 under LoRA, else that copy); a held projection of layer l decoded in bf16. */
void mk_cu_ext_set16(mk_cu_ext *x, const uint16_t *w16);
const uint16_t *mk_cu_ext_base16(const mk_cu_ext *x);
const uint16_t *mk_cu_ext_weight16(const mk_cu_ext *x, size_t l, mk_role r);
/* y[N, out] = bf16(in w^T (+ bias)), then LoRA's bf16(y + bf16(s bf16(bf16(in A^T) B^T)));
 * tmp16: scratch of N x out bf16 values */
void mk_cu_ext_proj16(mk_cu_ext *x, size_t l, mk_role r, const uint16_t *in, size_t N, const uint16_t *w, float *y,
                      uint16_t *tmp16);
/* its backward from dy (f32, rounded to bf16 here): dx += (dx_bf16: summed in bf16), gw += (NULL:
 * frozen), the bias's and the adapter's; dy16: N x out bf16 values, c16: mk_cu_linear16_bwd's */
void mk_cu_ext_proj16_bwd(mk_cu_ext *x, size_t l, mk_role r, const uint16_t *in, size_t N, const uint16_t *w, const float *dy,
                          float *dx, bool dx_bf16, float *gw, uint16_t *dy16, uint16_t *c16);
/* whether layer l normalises q (which 0) or k (1) per head (qwen3) */
bool mk_cu_ext_has_norm(const mk_cu_ext *x, size_t l, int which);

#endif
