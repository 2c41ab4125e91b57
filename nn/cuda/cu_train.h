/* cu_train.h - finetuning of a causal language model on a CUDA device through the kernels
 * of mk_cuda.h: the CPU trainer's trained tensors (nn/backward.h: f32, tensor order, its tensor
 * table; the adapters under LoRA) copied into one contiguous device buffer holding weights,
 * gradients and AdamW's two moments, a forward + backward pass over a micro-batch that
 * accumulates the same gradient as mk_nn_train_pass, global-norm clipping and an AdamW step
 * per tensor (weight decay on matrices only), all on the device.
 * Families: llama, mistral (sliding window), qwen2 (q/k/v biases), qwen3 (q/k norms); full
 * finetuning or LoRA (mk_nn_train_lora: the base frozen on the device in f32, no gradients or
 * moments for it) or QLoRA (a held base, mk_nn_train_open_held with mk_nn_held.nf4: its
 * projections kept on the device as NF4 codes and decoded a layer at a time into a scratch);
 * train_lora.c. Each also in bf16 mixed precision (the CPU trainer set to bf16: the base frozen
 * in bf16 under LoRA, train_lora16.c). Anything else is refused naming what is missing.
 * Activations: every layer's kept on the device, or with checkpointing only each layer's
 * input and its forward run again before its backward. Attention is the fused kernel
 * (mk_cuda_flash.h: two floats per row kept, [2, heads, T] per sequence), or the simple one
 * that keeps its probabilities [heads, T, T] (MK_CUDA_ATTENTION=simple, or head_dim over 128;
 * train_attn.h).
 * Must not: open files or print (the caller does), or know the optimizer's schedule.
 */
#ifndef MK_NN_CUDA_TRAIN_H
#define MK_NN_CUDA_TRAIN_H

#include "../backward.h"

typedef struct mk_cu_train mk_cu_train;

/* Device bytes a full finetune of llama needs: 4 f32 buffers of the numel trained values
 * (weights, gradients, two moments) plus one micro-batch's activations and scratch (nseq
 * sequences of T tokens). A run's whole figure: mk_cu_train_need. */
uint64_t mk_cu_train_bytes(const mk_model_config *c, uint64_t numel, size_t nseq, size_t T, bool checkpointing);
/* The same with bf16 mixed precision (the CPU trainer set to bf16, mk_nn_train_set_bf16; finetune
 * --dtype bf16): a bf16 copy of the weights (2 bytes per parameter more), the norms' and
 * attention's outputs and SiLU * up kept bf16 (half their bytes), the products' bf16 scratch. */
uint64_t mk_cu_train_bytes16(const mk_model_config *c, uint64_t numel, size_t nseq, size_t T, bool checkpointing);

/* Device bytes a run of t needs: mk_cu_train_bytes of its trained tensors (the adapters
 * under LoRA) plus the frozen base (NF4 codes and one layer's decoded projections with a
 * held base), LoRA's kept x A^T, biases' and q/k norms' activations (train_lora.c). */
uint64_t mk_cu_train_need(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing);

/* A run as `estimate` knows it (the config and the options, no opened model), for
 * mk_cu_train_bytes_of (nn/cuda/mem.c, in every build): the same figure as mk_cu_train_need
 * for the model it describes. */
typedef struct mk_cu_train_req {
    uint64_t params;   /* the model's elements (all its tensors) */
    long lora_r;       /* 0: full finetuning */
    unsigned targets;  /* LoRA: the adapted roles (1 << MK_ROLE_Q ...) */
    bool qlora;        /* the layers' projections held as NF4 */
    bool qk_norm;      /* q/k norms per head (qwen3) */
    size_t nseq, T;    /* the micro-batch */
    bool checkpointing;
    bool bf16;         /* --dtype bf16 (the trainer set to bf16) */
} mk_cu_train_req;
uint64_t mk_cu_train_bytes_of(const mk_model_config *c, const mk_cu_train_req *r);

/* Bytes kept free beyond mk_cu_train_bytes: cuBLAS's workspace and the runtime's own. */
#define MK_CU_TRAIN_RESERVE ((uint64_t)64 << 20)

/* Copy t's weights (the frozen base too under LoRA, as NF4 codes where t holds it so) to the
 * device, sized for micro-batches of up to nseq x T tokens; the moments start at 0. Refused without a usable device, and (MK_ERR_NOMEM,
 * naming both figures) when mk_cu_train_need + MK_CU_TRAIN_RESERVE exceeds the device's free
 * memory. */
mk_status mk_cu_train_open(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing, mk_cu_train **out);
void mk_cu_train_close(mk_cu_train *g);

/* mk_nn_train_pass on the device (tok, w on the host): adds the gradient of scale * sum
 * weight * NLL to the device's gradient buffer and sum weight * NLL to *wnll. */
mk_status mk_cu_train_pass(mk_cu_train *g, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale,
                           bool backward, double *wnll);
/* Gradients to 0 (before a step's first micro-batch). */
void mk_cu_train_zero_grad(mk_cu_train *g);
/* Clip the gradient to global norm max_norm (<= 0: not clipped; *norm: its norm before), then
 * one AdamW step (step = 1, 2, ...) at learning rate lr on every trained tensor; with a norm
 * that is not finite, nothing (the caller refuses the step). */
mk_status mk_cu_train_step(mk_cu_train *g, double beta1, double beta2, double eps, double weight_decay, double lr, long step,
                           double max_norm, double *norm);
/* Copy the weights, gradients or moments back into the CPU trainer's layout (NULL: skip). */
mk_status mk_cu_train_get(mk_cu_train *g, float *weights, float *grads);
mk_status mk_cu_train_get_moments(mk_cu_train *g, float *m, float *v);
/* Replace the weights and moments (a resumed checkpoint). */
mk_status mk_cu_train_put(mk_cu_train *g, const float *weights, const float *m, const float *v);

/* These functions as a table, for train/ (finetune --device cuda): the one this build links
 * (the device with `make CUDA=1`; the CPU emulation in the unit tests). */
typedef struct mk_cu_train_api {
    mk_status (*open)(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing, mk_cu_train **out);
    void (*close)(mk_cu_train *g);
    mk_status (*pass)(mk_cu_train *g, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale, bool backward,
                      double *wnll);
    void (*zero_grad)(mk_cu_train *g);
    mk_status (*step)(mk_cu_train *g, double beta1, double beta2, double eps, double weight_decay, double lr, long step,
                      double max_norm, double *norm);
    mk_status (*get)(mk_cu_train *g, float *weights, float *grads);
    mk_status (*get_moments)(mk_cu_train *g, float *m, float *v);
    mk_status (*put)(mk_cu_train *g, const float *weights, const float *m, const float *v);
} mk_cu_train_api;
extern const mk_cu_train_api mk_cu_train_impl;

#endif
