/* ext_priv.h - the state of the CUDA trainer's extension (train_ext.h), shared by train_lora.c
 * (f32: LoRA, QLoRA, biases, q/k norms) and train_lora16.c (the same in bf16 mixed precision).
 * Private to those two files. */
#ifndef MK_NN_CUDA_EXT_PRIV_H
#define MK_NN_CUDA_EXT_PRIV_H

#include "train_ext.h"

static const mk_role proj_roles[] = {MK_ROLE_Q, MK_ROLE_K, MK_ROLE_V, MK_ROLE_O, MK_ROLE_GATE, MK_ROLE_UP, MK_ROLE_DOWN};
#define NP (sizeof proj_roles / sizeof proj_roles[0])

typedef struct held_t {
    const uint8_t *codes; /* device */
    const float *absmax;  /* device */
    uint64_t n;
} held_t;

/* The device memory of an extension, in one f32 arena, one byte buffer (the NF4 codes) and,
 * in bf16, one bf16 arena. In bf16 under LoRA `frozen` is the f32-read part of the base only
 * (mem.h's mk_cu_side_floats), `scratch` and `xa` are 0 (kept bf16 instead). */
typedef struct plan {
    uint64_t frozen, absmax, table, scratch, xa, lxa, qk, dqp, rstd; /* floats */
    uint64_t codes;                                                  /* bytes */
    uint64_t fz16, scr16, xa16, lxa16, lc16;                         /* bf16 values */
    size_t r, nad, nslots;
} plan;

struct mk_cu_ext {
    mk_nn_train *t;
    plan p;
    size_t L, H, q, kv, F, nh, nkv, hd, N_cap;
    bool ckpt, lora, held, bf16;
    float eps, ls;
    const float *base; /* the offsets' buffer: the frozen base, or the trained weights */
    float *gbase;      /* its gradients (NULL: frozen) */
    float *w, *gr;     /* the trained tensors (the adapters under LoRA) */
    float *arena, *fz, *scr, *xa, *lxa, *qpre, *kpre, *dqp, *rstd;
    uint8_t *codes;
    const float *table;
    uint64_t scr_off[NP];
    held_t (*hl)[NP];    /* [L] */
    long (*ad)[NP];      /* [L]: the parameter index of the adapter's A (B follows), or -1 */
    int64_t (*bias)[NP]; /* [L]: the bias's offset, or -1 */
    int64_t (*qn)[2];    /* [L]: q_norm's and k_norm's offsets, or -1 */
    int xslot[NP];       /* the adapted roles' place in a slot of x A^T (-1: not adapted) */
    long cur;            /* the layer in the scratch (-1: none) */
    /* bf16 (train_lora16.c): the base as the products read it (fz16 under LoRA: the frozen base
     * in bf16; else the trainer's bf16 copy w16), the adapters' bf16 copy (w16), a held layer
     * decoded in bf16, x A^T kept in bf16, LoRA's scratch; side: the frozen base's f32-read
     * tensors (in fz), each from its offset in the frozen base to its offset in fz */
    uint16_t *arena16, *fz16, *scr16, *xa16, *lxa16, *lc16;
    const uint16_t *w16, *base16;
    int64_t *side_from, *side_to;
    size_t n_side;
};

/* the index of role r in proj_roles (train_lora.c) */
size_t mk_cu_ext_role_k(mk_role r);
/* bf16: the plan's bf16 parts (after the f32 plan of the same run), and the bf16 arena filled
 * (after the f32 arena: the frozen base in bf16, its f32-read tensors into fz) */
void mk_cu_ext16_plan(mk_nn_train *t, uint64_t N, plan *p);
mk_status mk_cu_ext16_init(mk_cu_ext *x);
/* bf16: q/k norms and their backward (train_ext.h's, in bf16) */
void mk_cu_ext16_qk(mk_cu_ext *x, size_t l, float *q, float *k, size_t N);
void mk_cu_ext16_qk_bwd(mk_cu_ext *x, size_t l, float *dq, float *dk, size_t N);

#endif
