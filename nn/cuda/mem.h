/* mem.h - the device memory of the CUDA trainer (nn/cuda/train.c) in floats per buffer: what
 * mk_cu_train_bytes and mk_cu_train_bytes16 (cu_train.h) add up and what the trainer carves its
 * allocations by, so the estimate is what it allocates. Plain arithmetic on the config, in the
 * library of every build (no CUDA), so `estimate` and finetune's device check share it. Private
 * to nn/cuda/ (and cu_train.h's two totals). */
#ifndef MK_NN_CUDA_MEM_H
#define MK_NN_CUDA_MEM_H

#include "../../model/config.h"

/* whether the trainer's attention is the fused kernel (mk_cuda_flash.h): the default, unless
 * the environment's MK_CUDA_ATTENTION is "simple" or head_dim is past MK_CU_FLASH_HD_MAX */
bool mk_cu_attn_flash(const mk_model_config *c);
/* the floats attention keeps for nseq sequences of T tokens: each row's maximum and 1 / sum
 * [2, heads, T] (fused) or the probabilities [heads, T, T] (simple) */
uint64_t mk_cu_att_floats(const mk_model_config *c, uint64_t nseq, uint64_t T);
/* f32 floats of one layer's kept activations (N = nseq x T rows), and of the rest of a pass */
uint64_t mk_cu_acts_floats(const mk_model_config *c, uint64_t N, uint64_t nseq, uint64_t T);
uint64_t mk_cu_rest_floats(const mk_model_config *c, uint64_t N, uint64_t T);
/* bf16: the f32 floats of one layer's activations kept as bf16 instead (h1, h2, att, a) */
uint64_t mk_cu_acts16_floats(const mk_model_config *c, uint64_t N);
/* bf16: the values of the output-gradient (dy) and product-output (cs) scratch */
void mk_cu_scratch16(const mk_model_config *c, uint64_t N, uint64_t *dy, uint64_t *cs);

/* LoRA and QLoRA (train_lora.c, train_lora16.c): a projection's [out, in] (role: MK_ROLE_Q ..
 * MK_ROLE_DOWN); the NF4 blocks of n values; under LoRA in bf16 the f32 floats of the frozen
 * tensors that are read in f32 (the embedding, the norms: the rest of the base is kept bf16) */
void mk_cu_proj_dims(const mk_model_config *c, mk_role r, uint64_t *in, uint64_t *out);
uint64_t mk_cu_nf4_blocks(uint64_t n);
uint64_t mk_cu_side_floats(const mk_model_config *c, bool qk_norm);
/* LoRA in bf16: bf16 values of the adapters' own product scratch (r columns, N rows or the
 * widest projection) */
uint64_t mk_cu_lora_c16(const mk_model_config *c, uint64_t N, uint64_t r);

#endif
