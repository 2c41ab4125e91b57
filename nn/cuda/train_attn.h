/* train_attn.h - attention in the CUDA trainer (train.c): the fused kernel (mk_cuda_flash.h,
 * no [heads, T, T] probabilities: a layer keeps two floats per row, [2, nh, T] per sequence) by
 * default; the simple one (mk_cu_attention / mk_cu_attention16, the probabilities kept) with
 * MK_CUDA_ATTENTION=simple or when head_dim is past the fused kernel's largest
 * (mk_cu_attn_flash, mem.h). f32 or bf16 as the trainer runs. Private to nn/cuda/. */
#ifndef MK_NN_CUDA_TRAIN_ATTN_H
#define MK_NN_CUDA_TRAIN_ATTN_H

#include <stdbool.h>
#include <stddef.h>

#include "../../core/mk_core.h"

typedef struct mk_cu_tattn {
    size_t T, nh, nkv, hd;
    float scale;
    long window;
    bool flash, bf16;
} mk_cu_tattn;

/* sequence s of a layer: q, k, v and out at the sequence (out: float, or uint16_t in bf16);
 * p: the layer's kept buffer (mk_cu_att_floats of it), the sequence's part taken here */
void mk_cu_tattn_fwd(const mk_cu_tattn *a, size_t s, const float *q, const float *k, const float *v, void *out, float *p);
/* its backward: dq written, dk += ..., dv += ... (bf16: written); ds: the scratch
 * (mk_cu_att_floats for one sequence) */
void mk_cu_tattn_bwd(const mk_cu_tattn *a, size_t s, const float *q, const float *k, const float *v, const float *p,
                     const float *dout, float *dq, float *dk, float *dv, float *ds);
/* MK_CUDA_ATTENTION, when set, is flash or simple */
mk_status mk_cu_tattn_check(void);

#endif
