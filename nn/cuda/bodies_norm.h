/* bodies_norm.h - the per-thread bodies of LayerNorm and GeGLU (GELU-tanh gated MLP) forward and
 * backward, in the common subset of C and CUDA C++ as bodies.h (row kernels: a part body, a
 * tree, a fin body; column bodies over the rows in order). Each matches its CPU function:
 * mk_nn_layernorm, mk_nn_layernorm_bwd (nn/ops.h, nn/ops_bwd.h), mk_nn_act_gated with
 * MK_ACT_GELU_TANH and mk_nn_geglu_bwd. Mean and variance in two passes in double, as the CPU. */
#ifndef MK_NN_CUDA_BODIES_NORM_H
#define MK_NN_CUDA_BODIES_NORM_H

#include "bodies.h"

/* ---- LayerNorm: out = (x - mean) rstd w + b ---- */
/* pass 1: this thread's sum of x; pass 2: of (x - mean)^2 */
MK_HD void mk_cu_ln_sum_part(size_t row, unsigned tid, const float *x, size_t d, double *sh)
{
    const float *r = x + row * d;
    double s = 0;
    for (size_t i = tid; i < d; i += MK_CU_NT) s += r[i];
    sh[tid] = s;
}
MK_HD void mk_cu_ln_var_part(size_t row, unsigned tid, const float *x, size_t d, double m, double *sh)
{
    const float *r = x + row * d;
    double s = 0;
    for (size_t i = tid; i < d; i += MK_CU_NT) s += ((double)r[i] - m) * ((double)r[i] - m);
    sh[tid] = s;
}
MK_HD float mk_cu_ln_rstd(double var, float eps) { return (float)(1.0 / sqrt(var + (double)eps)); }
MK_HD void mk_cu_ln_fin(size_t row, unsigned tid, const float *x, const float *w, const float *b, size_t d, float mf, float inv,
                        float *out)
{
    const float *r = x + row * d;
    for (size_t i = tid; i < d; i += MK_CU_NT) out[row * d + i] = (r[i] - mf) * inv * w[i] + (b ? b[i] : 0.0f);
}
/* backward pass 3: this thread's sums of g = dy w and of g xhat into sh and sh + MK_CU_NT */
MK_HD void mk_cu_ln_bwd_part(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d, float mf,
                             float inv, double *sh)
{
    const float *r = x + row * d, *g = dy + row * d;
    double sg = 0, sgx = 0;
    for (size_t i = tid; i < d; i += MK_CU_NT) {
        float gi = g[i] * w[i], xh = (r[i] - mf) * inv;
        sg += gi, sgx += (double)gi * xh;
    }
    sh[tid] = sg;
    sh[MK_CU_NT + tid] = sgx;
}
/* dx += rstd (g - mean(g) - xhat mean(g xhat)); the row's mean and rstd kept in stats[2 row] */
MK_HD void mk_cu_ln_bwd_fin(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d, float mf,
                            float inv, double sg, double sgx, float *dx, float *stats)
{
    const float *r = x + row * d, *g = dy + row * d;
    float a = (float)(sg / (double)d), b = (float)(sgx / (double)d);
    if (tid == 0) stats[2 * row] = mf, stats[2 * row + 1] = inv;
    for (size_t i = tid; i < d; i += MK_CU_NT) dx[row * d + i] += inv * (g[i] * w[i] - a - (r[i] - mf) * inv * b);
}
/* dw[i] += sum_t dy xhat, db[i] += sum_t dy (either may be NULL); one thread per column */
MK_HD void mk_cu_ln_dwb_body(size_t i, const float *x, const float *dy, const float *stats, size_t T, size_t d, float *dw,
                             float *db)
{
    double sw = 0, sb = 0;
    for (size_t t = 0; t < T; t++) {
        float g = dy[t * d + i];
        sw += (double)g * ((x[t * d + i] - stats[2 * t]) * stats[2 * t + 1]);
        sb += g;
    }
    if (dw) dw[i] += (float)sw;
    if (db) db[i] += (float)sb;
}

/* ---- GeGLU: out = gelu_tanh(gate) * up ---- */
MK_HD float mk_cu_gelu_tanh_t(float x) { return tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)); }
MK_HD void mk_cu_geglu_body(size_t i, const float *gate, const float *up, float *out)
{
    float x = gate[i];
    out[i] = 0.5f * x * (1.0f + mk_cu_gelu_tanh_t(x)) * up[i];
}
MK_HD void mk_cu_geglu_bwd_body(size_t i, const float *gate, const float *up, const float *dout, float *dgate, float *dup)
{
    const float k = 0.7978845608028654f, c = 0.044715f;
    float x = gate[i], t = mk_cu_gelu_tanh_t(x);
    float act = 0.5f * x * (1.0f + t), da = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
    dup[i] = dout[i] * act;
    dgate[i] = dout[i] * up[i] * da;
}

#endif
