/* mem.h - the memory a finetune run allocates, from the model's config and the run's options:
 * the one formula `finetune` prints (and refuses over --max-memory with) and `estimate` reports
 * for this program's trainer. Each part is what the trainer holds: the weights resident in f32
 * (QLoRA: the layers' projections as NF4 codes and scales, one layer of them decoded, the rest
 * f32), the LoRA adapters, with --dtype bf16 the rounded weights the products read
 * (nn/backward.h, mk_nn_train_set_bf16), the f32 gradients and two AdamW moments of what
 * trains, and the activations and scratch of one pass (mk_nn_train_act_bytes). The data and the
 * process itself are the caller's to add.
 * Must not: open files or print.
 */
#ifndef MK_TRAIN_MEM_H
#define MK_TRAIN_MEM_H

#include "../core/mk_tensor.h"
#include "../model/config.h"

typedef struct mk_train_mem_req {
    long lora_r;        /* 0: full finetuning */
    unsigned targets;   /* LoRA: role bits (mk_train_lora_targets) */
    bool qlora, bf16, checkpointing;
    size_t batch, seq;
    /* QLoRA: bytes the holder keeps for n values of a projection (quant/nf4hold.h's
     * mk_qlora_bytes; train/ does not reach quant/) */
    uint64_t (*held_bytes)(uint64_t n);
    bool qk_norm; /* the layers normalise q and k per head (qwen3; mk_train_qk_norm): the GPU figure's */
} mk_train_mem_req;

typedef struct mk_train_mem {
    uint64_t weights, adapters, bf16_copy, grads, moments;
    uint64_t act, act_other; /* activations as asked, and with the other --checkpointing */
    uint64_t trainable;      /* values that train */
    uint64_t total;          /* the sum of all but act_other */
    /* finetune --device cuda (full, --lora or --qlora; f32 or bf16): the GPU memory the CUDA
     * trainer allocates plus the reserve it keeps free (nn/cuda/cu_train.h: mk_cu_train_bytes_of
     * + MK_CU_TRAIN_RESERVE), what it checks against the card's free memory before it starts; as
     * asked, and with the other --checkpointing */
    uint64_t gpu, gpu_other;
} mk_train_mem;

/* params: the model's parameter count (its tensors' elements). */
void mk_train_mem_of(const mk_model_config *c, uint64_t params, const mk_train_mem_req *r, mk_train_mem *m);

/* Whether the model's layers have qwen3's per-head q/k norms (a tensor of role q_norm). */
bool mk_train_qk_norm(const mk_source *src, const mk_model_config *c);

/* --lora-targets: q_proj ... down_proj (or q, k, v, o, gate, up, down), comma-separated, or
 * all-linear, to role bits (1 << MK_ROLE_Q ...). */
mk_status mk_train_lora_targets(const char *list, unsigned *out);

#endif
