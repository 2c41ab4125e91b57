/* launch.h - host-side arithmetic both implementations of mk_cuda.h share (kernels.cu and
 * emu.c): the scalars of an AdamW step and the block count of the gradient norm. Private to
 * nn/cuda/. */
#ifndef MK_NN_CUDA_LAUNCH_H
#define MK_NN_CUDA_LAUNCH_H

#include <math.h>

#include "bodies.h"

/* The per-step scalars of train/optim.c's mk_adamw_step (computed in double, as there). */
static inline mk_cu_adamw_k mk_cu_adamw_consts(double beta1, double beta2, double eps, double weight_decay, double lr, long step,
                                               bool decay)
{
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    mk_cu_adamw_k k;
    k.keep = (float)(1.0 - lr * (decay ? weight_decay : 0.0));
    k.a1 = (float)(1.0 - beta1);
    k.b2 = (float)beta2;
    k.a2 = (float)(1.0 - beta2);
    k.step_size = (float)(lr / bc1);
    k.bc2s = (float)sqrt(bc2);
    k.eps = (float)eps;
    return k;
}

/* Blocks of the first pass of the gradient norm: at most a fixed count, so the sums are the
 * same every run. The scratch (mk_cu_norm_parts) holds their partial sums and the total. */
#define MK_CU_NORM_BLOCKS (MK_CU_NORM_PARTS_MAX - 1)
static inline size_t mk_cu_norm_blocks(size_t n)
{
    size_t nb = (n + MK_CU_NT - 1) / MK_CU_NT;
    return nb < 1 ? 1 : nb > MK_CU_NORM_BLOCKS ? MK_CU_NORM_BLOCKS : nb;
}

#endif
