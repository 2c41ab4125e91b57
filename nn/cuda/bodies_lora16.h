/* bodies_lora16.h - the per-thread bodies of the bf16 mixed-precision kernels LoRA, QLoRA and the
 * qwen families add to the CUDA trainer (nn/cuda/train_lora16.c), in the common subset of C and
 * CUDA C++ as bodies.h: kernels_lora16.cu wraps them in __global__ kernels, emu_lora16.c loops
 * them over the grid. Each rounds where nn/backward.c's bf16 path rounds (proj, proj_bwd,
 * head_norm and held_load with t->bf16; nn/ops_bwd.c's bf16 kernels). No atomics. */
#ifndef MK_NN_CUDA_BODIES_LORA16_H
#define MK_NN_CUDA_BODIES_LORA16_H

#include "bodies.h"

/* ---- a biased projection in bf16: y = bf16(x W^T + b), b a bf16 tensor; idx < T * out ---- */
MK_HD void mk_cu_bias16_add_body(size_t idx, float *y, const uint16_t *b, size_t out)
{
    y[idx] = mk_cu_bfr(y[idx] + mk_cu_bf16_f32(b[idx % out]));
}
/* db[o] += bf16(sum over t of dy[t, o]) (in order, in double: mk_nn_linear_bwd_bf16's db); one
 * thread per column */
MK_HD void mk_cu_bias16_bwd_body(size_t o, const uint16_t *dy, size_t T, size_t out, float *db)
{
    double s = 0;
    for (size_t t = 0; t < T; t++) s += mk_cu_bf16_f32(dy[t * out + o]);
    db[o] += mk_cu_bfr((float)s);
}

/* ---- LoRA's sum: y = bf16(y + bf16(t * s)) (t: bf16(x A^T B^T)); and bf16(dy * s) in place,
 * the scaled output gradient its backward starts from ---- */
MK_HD void mk_cu_lora16_add_body(size_t i, float *y, const uint16_t *t, float s)
{
    y[i] = mk_cu_bfr(y[i] + mk_cu_bfr(mk_cu_bf16_f32(t[i]) * s));
}
MK_HD void mk_cu_scale16_body(size_t i, uint16_t *y, float s) { y[i] = mk_cu_bf16(mk_cu_bf16_f32(y[i]) * s); }

/* ---- NF4 decode rounded to bf16 (held_load with bf16: mk_bnb4_dequant, then rounded) ---- */
MK_HD void mk_cu_nf4_16_body(size_t idx, const uint8_t *codes, const float *absmax, const float *table, size_t block,
                             uint16_t *out)
{
    uint8_t byte = codes[idx / 2];
    out[idx] = mk_cu_bf16(table[(idx & 1) ? (byte & 15) : (byte >> 4)] * absmax[idx / block]);
}

/* ---- RMSNorm of a bf16 tensor (qwen3's q/k norms; mk_nn_rmsnorm_bf16 and its backward) ---- */
/* the forward after mk_cu_rms_part's sum of squares: out = w * bf16(x rstd) */
MK_HD void mk_cu_rmsb_fin(size_t row, unsigned tid, const float *x, const float *w, size_t d, float eps, double ss, float *out)
{
    const float *r = x + row * d;
    float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    for (size_t i = tid; i < d; i += MK_CU_NT) out[row * d + i] = w[i] * mk_cu_bfr(r[i] * inv);
}
/* backward, per row: mk_cu_rms_bwd_part_any and mk_cu_rms_bwd_fin_any (bodies.h) with bf set
 * (dx = bf16(bf16(dy w) rstd - x (dot rstd^3 / d)), written), then: */
/* dw[i] += sum_t dy[t, i] bf16(x[t, i] rstd[t]); one thread per column */
MK_HD void mk_cu_rmsb_dw_body(size_t i, const float *x, const float *dy, const float *rstd, size_t T, size_t d, float *dw)
{
    double s = 0;
    for (size_t t = 0; t < T; t++) s += (double)dy[t * d + i] * mk_cu_bfr(x[t * d + i] * rstd[t]);
    dw[i] += (float)s;
}

#endif
