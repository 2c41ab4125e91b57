/* bodies16.h - the per-thread bodies of the bf16 mixed-precision kernels (finetune --device
 * cuda --dtype bf16), in the common subset of C and CUDA C++ as bodies.h: each rounds where
 * nn/ops_bwd.h's bf16 kernels round (torch.autocast's points: every product's inputs and
 * output bf16 with f32 sums, elementwise ops on bf16 tensors rounded after each op, norms,
 * softmax and the loss in f32). Values the CPU keeps as rounded f32 are rounded f32 here too;
 * tensors only products read (a norm's output, attention's output, SiLU * up) are stored as
 * bf16 (uint16_t), which is what cuBLAS's bf16 products read. */
#ifndef MK_NN_CUDA_BODIES16_H
#define MK_NN_CUDA_BODIES16_H

#include "bodies.h"


/* ---- elementwise ---- */
MK_HD void mk_cu_round_body(size_t i, float *x) { x[i] = mk_cu_bfr(x[i]); }
MK_HD void mk_cu_to16_body(size_t i, const float *x, uint16_t *y) { y[i] = mk_cu_bf16(x[i]); }
/* y += c (an f32 tensor's gradient: each use's rounded term summed in f32), or y = bf16(y + c)
 * (sum16: a bf16 tensor's gradient) */
MK_HD void mk_cu_add16_body(size_t i, float *y, const uint16_t *c, int sum16)
{
    float s = y[i] + mk_cu_bf16_f32(c[i]);
    y[i] = sum16 ? mk_cu_bfr(s) : s;
}

/* ---- RMSNorm's output rounded for the products (mk_nn_rmsnorm, then mk_nn_round_bf16) ---- */
MK_HD void mk_cu_rms_fin16(size_t row, unsigned tid, const float *x, const float *w, size_t d, float eps, double ss, uint16_t *out)
{
    const float *r = x + row * d;
    float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    for (size_t i = tid; i < d; i += MK_CU_NT) out[row * d + i] = mk_cu_bf16(w[i] * (r[i] * inv));
}

/* ---- RoPE's backward onto a bf16 q or k (mk_nn_rope_bwd_bf16): each product rounded, then the
 * sum; idx < T * nh * half ---- */
MK_HD void mk_cu_rope16_bwd_body(size_t idx, float *x, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t)
{
    size_t i = idx % half, h = idx / half % nh, t = idx / half / nh;
    float *v = x + t * nh * hd + h * hd;
    float c = cos_t[t * half + i], s = sin_t[t * half + i];
    float a = v[i], b = v[i + half];
    v[i] = mk_cu_bfr(mk_cu_bfr(a * c) + mk_cu_bfr(b * s));
    v[i + half] = mk_cu_bfr(mk_cu_bfr(b * c) - mk_cu_bfr(a * s));
}

/* ---- attention with bf16 products (mk_nn_attention_train_bf16, mk_nn_attention_bwd_bf16);
 * rows and masks as the f32 bodies ---- */
/* the scores: mk_cu_att_score_any (bodies.h) with bf set; the softmax as the f32 kernels */
/* out[i, h, e] = bf16(sum_j bf16(p[h, i, j]) v[j, kvh, e]), stored bf16 */
MK_HD void mk_cu_att16_out_body(size_t idx, const float *p, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                uint16_t *out)
{
    size_t e = idx % hd, h = idx / hd % nh, i = idx / hd / nh, kvh = h / (nh / nkv);
    const float *pr = p + (h * T + i) * T;
    double o = 0;
    for (size_t j = 0; j <= i; j++) o += (double)mk_cu_bfr(pr[j]) * v[j * nkv * hd + kvh * hd + e];
    out[idx] = mk_cu_bf16((float)o);
}
/* dv[j, kvh, e] = bf16(sum over the group's heads h, in order, of bf16(sum_i bf16(p) dout)) (written) */
MK_HD void mk_cu_att16_dv_body(size_t idx, const float *p, const float *dout, size_t T, size_t nh, size_t nkv, size_t hd,
                               float *dv)
{
    size_t e = idx % hd, kvh = idx / hd % nkv, j = idx / hd / nkv, group = nh / nkv;
    float acc = 0;
    for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
        double s = 0;
        for (size_t i = j; i < T; i++) s += (double)mk_cu_bfr(p[(h * T + i) * T + j]) * dout[i * nh * hd + h * hd + e];
        acc += mk_cu_bfr((float)s);
    }
    dv[idx] = mk_cu_bfr(acc);
}
/* dP_j = bf16(dout_i . v_j): mk_cu_att_dp_any (bodies.h) with bf set */
/* dS_j = bf16(bf16(p_j (dP_j - sum_j p dP)) * scale) */
MK_HD void mk_cu_att16_ds_fin(size_t row, unsigned tid, const float *p, size_t T, float scale, double dot, float *ds)
{
    size_t i = row % T;
    const float *pr = p + row * T;
    float *dr = ds + row * T, df = (float)dot;
    for (size_t j = tid; j <= i; j += MK_CU_NT) dr[j] = mk_cu_bfr(mk_cu_bfr(pr[j] * (dr[j] - df)) * scale);
}
/* dq[i, h, e] = bf16(sum_j dS[h, i, j] k[j, kvh, e]) */
MK_HD void mk_cu_att16_dq_body(size_t idx, const float *ds, const float *k, size_t T, size_t nh, size_t nkv, size_t hd, float *dq)
{
    size_t e = idx % hd, h = idx / hd % nh, i = idx / hd / nh, kvh = h / (nh / nkv);
    const float *dr = ds + (h * T + i) * T;
    double s = 0;
    for (size_t j = 0; j <= i; j++) s += (double)dr[j] * k[j * nkv * hd + kvh * hd + e];
    dq[idx] = mk_cu_bfr((float)s);
}
/* dk[j, kvh, e] += bf16(sum_i dS[h, i, j] q[i, h, e]) for each of the group's heads in order (f32 sum) */
MK_HD void mk_cu_att16_dk_body(size_t idx, const float *ds, const float *q, size_t T, size_t nh, size_t nkv, size_t hd, float *dk)
{
    size_t e = idx % hd, kvh = idx / hd % nkv, j = idx / hd / nkv, group = nh / nkv;
    float acc = dk[idx];
    for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
        double s = 0;
        for (size_t i = j; i < T; i++) s += (double)ds[(h * T + i) * T + j] * q[i * nh * hd + h * hd + e];
        acc += mk_cu_bfr((float)s);
    }
    dk[idx] = acc;
}

/* ---- SwiGLU on bf16 tensors (mk_nn_swiglu_bf16, mk_nn_swiglu_bwd_bf16); the output stored bf16 ---- */
MK_HD void mk_cu_swiglu16_body(size_t i, const float *gate, const float *up, uint16_t *out)
{
    float g = gate[i];
    out[i] = mk_cu_bf16(mk_cu_bfr(g / (1.0f + expf(-g))) * up[i]);
}
MK_HD void mk_cu_swiglu16_bwd_body(size_t i, const float *gate, const float *up, const float *dout, float *dgate, float *dup)
{
    float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), silu = mk_cu_bfr(g / (1.0f + expf(-g)));
    dup[i] = mk_cu_bfr(dout[i] * silu);
    dgate[i] = mk_cu_bfr(mk_cu_bfr(dout[i] * up[i]) * (sg * (1.0f + g * (1.0f - sg))));
}

#endif
