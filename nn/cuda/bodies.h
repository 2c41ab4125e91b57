/* bodies.h - the per-thread bodies of the CUDA training kernels, in the common subset of C
 * and CUDA C++, so the same code runs on the GPU (nn/cuda/kernels.cu wraps each body in a
 * __global__ kernel) and on the CPU (nn/cuda/emu.c loops over the grid), where the unit tests
 * hold it to the CPU reference kernels of nn/ops.h, nn/ops_bwd.h and train/optim.h.
 *
 * Two shapes of kernel:
 *  - flat: one thread per element, body(idx, ...) for idx in [0, n);
 *  - row: one block of MK_CU_NT threads per row. A row kernel is a `part` body (each thread
 *    sums its strided slice of the row into sh[tid]), a tree reduction of sh (MK_CU_NT/2,
 *    /4, ... 1: sh[tid] op= sh[tid + stride], one barrier per level; mk_cu_tree_add and
 *    mk_cu_tree_max are the steps) and a `fin` body that reads the total from sh[0]. Some
 *    kernels run two rounds (max, then sum). The emulation runs every thread of one phase
 *    before the next, which is exactly what the barriers guarantee; no body uses warp
 *    shuffles or reads another thread's data between barriers.
 * Reductions never use atomics: gradients that sum over tokens (dW of a norm, the embedding)
 * run one thread per column over the rows in order, so results do not depend on scheduling.
 * Layouts as ops.h: activations [T, d] row-major, attention probabilities [nh, T, T].
 */
#ifndef MK_NN_CUDA_BODIES_H
#define MK_NN_CUDA_BODIES_H

#ifdef __CUDACC__
#define MK_HD __host__ __device__ static inline
#else
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#define MK_HD static inline
#endif

/* threads per block of a row kernel (a power of two) and of a flat kernel */
#define MK_CU_NT 256
#define MK_CU_FLAT 256

/* ---- tree reduction steps (one level; a barrier follows each) ---- */
MK_HD void mk_cu_tree_add(double *sh, unsigned tid, unsigned stride)
{
    if (tid < stride) sh[tid] += sh[tid + stride];
}
MK_HD void mk_cu_tree_max(double *sh, unsigned tid, unsigned stride)
{
    if (tid < stride && sh[tid + stride] > sh[tid]) sh[tid] = sh[tid + stride];
}

/* ---- embedding ---- */
/* x[t, i] = emb[tok[t], i]; idx < T * H */
MK_HD void mk_cu_embed_fwd_body(size_t idx, const int32_t *tok, size_t H, const float *emb, float *x)
{
    size_t t = idx / H, i = idx % H;
    x[idx] = emb[(size_t)tok[t] * H + i];
}
/* demb[tok[t], i] += dx[t, i] over t in order; one thread per column i < H */
MK_HD void mk_cu_embed_bwd_body(size_t i, const int32_t *tok, size_t T, size_t H, const float *dx, float *demb)
{
    for (size_t t = 0; t < T; t++) demb[(size_t)tok[t] * H + i] += dx[t * H + i];
}

/* ---- RMSNorm: out = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps) ---- */
MK_HD void mk_cu_rms_part(size_t row, unsigned tid, const float *x, size_t d, double *sh)
{
    const float *r = x + row * d;
    double s = 0;
    for (size_t i = tid; i < d; i += MK_CU_NT) s += (double)r[i] * r[i];
    sh[tid] = s;
}
MK_HD void mk_cu_rms_fin(size_t row, unsigned tid, const float *x, const float *w, size_t d, float eps, double ss,
                         float *out, float *rstd)
{
    const float *r = x + row * d;
    float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    if (tid == 0 && rstd) rstd[row] = inv;
    for (size_t i = tid; i < d; i += MK_CU_NT) out[row * d + i] = w[i] * (r[i] * inv);
}
/* backward, per row: sh[tid] = this thread's sum of x^2, sh[MK_CU_NT + tid] of w dy x (bf: of
 * bf16(dy w) x, the gradient of a rounded normalised x: mk_nn_rmsnorm_bwd_bf16) */
MK_HD float mk_cu_bfr(float x);
MK_HD void mk_cu_rms_bwd_part_any(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d,
                                  double *sh, int bf)
{
    const float *r = x + row * d, *g = dy + row * d;
    double s = 0, dot = 0;
    for (size_t i = tid; i < d; i += MK_CU_NT) {
        s += (double)r[i] * r[i];
        dot += bf ? (double)mk_cu_bfr(g[i] * w[i]) * r[i] : (double)w[i] * g[i] * r[i];
    }
    sh[tid] = s;
    sh[MK_CU_NT + tid] = dot;
}
MK_HD void mk_cu_rms_bwd_part(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d, double *sh)
{
    mk_cu_rms_bwd_part_any(row, tid, x, w, dy, d, sh, 0);
}
/* dx += w dy rstd - x (dot rstd^3 / d) (bf: dx = bf16(bf16(dy w) rstd - x (...)), written);
 * rstd kept for the dw kernel */
MK_HD void mk_cu_rms_bwd_fin_any(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d, float eps,
                                 double ss, double dot, float *dx, float *rstd, int bf)
{
    const float *r = x + row * d, *g = dy + row * d;
    float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    if (tid == 0) rstd[row] = inv;
    float c = (float)(dot * (double)inv * inv * inv / (double)d);
    for (size_t i = tid; i < d; i += MK_CU_NT)
        if (bf) dx[row * d + i] = mk_cu_bfr(mk_cu_bfr(g[i] * w[i]) * inv - r[i] * c);
        else dx[row * d + i] += w[i] * g[i] * inv - r[i] * c;
}
MK_HD void mk_cu_rms_bwd_fin(size_t row, unsigned tid, const float *x, const float *w, const float *dy, size_t d, float eps,
                             double ss, double dot, float *dx, float *rstd)
{
    mk_cu_rms_bwd_fin_any(row, tid, x, w, dy, d, eps, ss, dot, dx, rstd, 0);
}
/* dw[i] += sum_t dy[t, i] x[t, i] rstd[t]; one thread per column */
MK_HD void mk_cu_rms_dw_body(size_t i, const float *x, const float *dy, const float *rstd, size_t T, size_t d, float *dw)
{
    double s = 0;
    for (size_t t = 0; t < T; t++) s += (double)dy[t * d + i] * (x[t * d + i] * rstd[t]);
    dw[i] += (float)s;
}

/* ---- rotary embeddings: pairs (i, i + half) of each head rotated by the angle of the
 * position (sg = -1: by minus the angle, the backward pass); idx < T * nh * half ---- */
MK_HD void mk_cu_rope_body(size_t idx, float *x, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t,
                           float sg)
{
    size_t i = idx % half, h = idx / half % nh, t = idx / half / nh;
    float *v = x + t * nh * hd + h * hd;
    float c = cos_t[t * half + i], s = sg * sin_t[t * half + i];
    float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
}

/* ---- causal attention with grouped key/value heads over one sequence of T tokens ----
 * Row kernels run one block per (head h, query i): row = h * T + i. Key j is seen when
 * j <= i and (window == 0 or i - j < window). */
MK_HD size_t mk_cu_att_j0(size_t i, long window)
{
    return window > 0 && i + 1 > (size_t)window ? i + 1 - (size_t)window : 0;
}
/* x rounded to bf16 (ties to even), as f32: mk_dtype_round(MK_BF16, x); bf16 (below) */
MK_HD float mk_cu_bfr(float x);
/* scores s_j = (q_i . k_j) scale into p, this thread's maximum into sh; bf: as the bf16 kernels
 * (bodies16.h), s_j = bf16(bf16(q_i . k_j) scale) */
MK_HD void mk_cu_att_score_any(size_t row, unsigned tid, const float *q, const float *k, size_t T, size_t nh, size_t nkv,
                               size_t hd, float scale, long window, float *p, double *sh, int bf)
{
    size_t h = row / T, i = row % T, kvh = h / (nh / nkv), j0 = mk_cu_att_j0(i, window);
    const float *qi = q + i * nh * hd + h * hd;
    float *pr = p + row * T;
    double mx = -INFINITY;
    for (size_t j = tid; j < T; j += MK_CU_NT) {
        if (j < j0 || j > i) {
            pr[j] = 0;
            continue;
        }
        const float *kj = k + j * nkv * hd + kvh * hd;
        double s = 0;
        for (size_t e = 0; e < hd; e++) s += (double)qi[e] * kj[e];
        float v = bf ? mk_cu_bfr(mk_cu_bfr((float)s) * scale) : (float)s * scale;
        pr[j] = v;
        if (v > mx) mx = v;
    }
    sh[tid] = mx;
}
MK_HD void mk_cu_att_score_part(size_t row, unsigned tid, const float *q, const float *k, size_t T, size_t nh, size_t nkv,
                                size_t hd, float scale, long window, float *p, double *sh)
{
    mk_cu_att_score_any(row, tid, q, k, T, nh, nkv, hd, scale, window, p, sh, 0);
}
/* p_j = exp(s_j - max), this thread's sum into sh */
MK_HD void mk_cu_att_exp_part(size_t row, unsigned tid, size_t T, long window, float mx, float *p, double *sh)
{
    size_t i = row % T, j0 = mk_cu_att_j0(i, window);
    float *pr = p + row * T;
    double s = 0;
    for (size_t j = tid; j < T; j += MK_CU_NT)
        if (j >= j0 && j <= i) {
            pr[j] = expf(pr[j] - mx);
            s += pr[j];
        }
    sh[tid] = s;
}
MK_HD void mk_cu_att_norm_fin(size_t row, unsigned tid, size_t T, long window, double sum, float *p)
{
    size_t i = row % T, j0 = mk_cu_att_j0(i, window);
    float inv = (float)(1.0 / sum), *pr = p + row * T;
    for (size_t j = tid; j < T; j += MK_CU_NT)
        if (j >= j0 && j <= i) pr[j] *= inv;
}
/* out[i, h, e] = sum_j p[h, i, j] v[j, kvh, e]; idx over [T, nh, hd] */
MK_HD void mk_cu_att_out_body(size_t idx, const float *p, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                              float *out)
{
    size_t e = idx % hd, h = idx / hd % nh, i = idx / hd / nh, kvh = h / (nh / nkv);
    const float *pr = p + (h * T + i) * T;
    double o = 0;
    for (size_t j = 0; j <= i; j++) o += (double)pr[j] * v[j * nkv * hd + kvh * hd + e];
    out[idx] = (float)o;
}
/* dv[j, kvh, e] += sum over the group's heads h (in order) and i >= j of p[h, i, j] dout[i, h, e] */
MK_HD void mk_cu_att_dv_body(size_t idx, const float *p, const float *dout, size_t T, size_t nh, size_t nkv, size_t hd,
                             float *dv)
{
    size_t e = idx % hd, kvh = idx / hd % nkv, j = idx / hd / nkv, group = nh / nkv;
    double s = 0;
    for (size_t h = kvh * group; h < (kvh + 1) * group; h++)
        for (size_t i = j; i < T; i++) s += (double)p[(h * T + i) * T + j] * dout[i * nh * hd + h * hd + e];
    dv[idx] += (float)s;
}
/* dP_j = dout_i . v_j into ds (bf: rounded to bf16), this thread's sum of p dP into sh */
MK_HD void mk_cu_att_dp_any(size_t row, unsigned tid, const float *p, const float *dout, const float *v, size_t T, size_t nh,
                            size_t nkv, size_t hd, float *ds, double *sh, int bf)
{
    size_t h = row / T, i = row % T, kvh = h / (nh / nkv);
    const float *di = dout + i * nh * hd + h * hd, *pr = p + row * T;
    float *dr = ds + row * T;
    double dot = 0;
    for (size_t j = tid; j < T; j += MK_CU_NT) {
        if (j > i) {
            dr[j] = 0;
            continue;
        }
        const float *vj = v + j * nkv * hd + kvh * hd;
        double s = 0;
        for (size_t e = 0; e < hd; e++) s += (double)di[e] * vj[e];
        dr[j] = bf ? mk_cu_bfr((float)s) : (float)s;
        dot += (double)pr[j] * dr[j];
    }
    sh[tid] = dot;
}
MK_HD void mk_cu_att_dp_part(size_t row, unsigned tid, const float *p, const float *dout, const float *v, size_t T, size_t nh,
                             size_t nkv, size_t hd, float *ds, double *sh)
{
    mk_cu_att_dp_any(row, tid, p, dout, v, T, nh, nkv, hd, ds, sh, 0);
}
/* dS_j = p_j (dP_j - sum_j p dP) scale */
MK_HD void mk_cu_att_ds_fin(size_t row, unsigned tid, const float *p, size_t T, float scale, double dot, float *ds)
{
    size_t i = row % T;
    const float *pr = p + row * T;
    float *dr = ds + row * T, df = (float)dot;
    for (size_t j = tid; j <= i; j += MK_CU_NT) dr[j] = pr[j] * (dr[j] - df) * scale;
}
/* dq[i, h, e] = sum_j dS[h, i, j] k[j, kvh, e] */
MK_HD void mk_cu_att_dq_body(size_t idx, const float *ds, const float *k, size_t T, size_t nh, size_t nkv, size_t hd, float *dq)
{
    size_t e = idx % hd, h = idx / hd % nh, i = idx / hd / nh, kvh = h / (nh / nkv);
    const float *dr = ds + (h * T + i) * T;
    double s = 0;
    for (size_t j = 0; j <= i; j++) s += (double)dr[j] * k[j * nkv * hd + kvh * hd + e];
    dq[idx] = (float)s;
}
/* dk[j, kvh, e] += sum over the group's heads and i >= j of dS[h, i, j] q[i, h, e] */
MK_HD void mk_cu_att_dk_body(size_t idx, const float *ds, const float *q, size_t T, size_t nh, size_t nkv, size_t hd, float *dk)
{
    size_t e = idx % hd, kvh = idx / hd % nkv, j = idx / hd / nkv, group = nh / nkv;
    double s = 0;
    for (size_t h = kvh * group; h < (kvh + 1) * group; h++)
        for (size_t i = j; i < T; i++) s += (double)ds[(h * T + i) * T + j] * q[i * nh * hd + h * hd + e];
    dk[idx] += (float)s;
}

/* ---- SwiGLU: out = silu(gate) * up ---- */
MK_HD void mk_cu_swiglu_body(size_t i, const float *gate, const float *up, float *out)
{
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}
MK_HD void mk_cu_swiglu_bwd_body(size_t i, const float *gate, const float *up, const float *dout, float *dgate, float *dup)
{
    float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), silu = g / (1.0f + expf(-g));
    dup[i] = dout[i] * silu;
    dgate[i] = dout[i] * up[i] * (sg * (1.0f + g * (1.0f - sg)));
}

/* ---- y += x, x *= c ---- */
MK_HD void mk_cu_add_body(size_t i, float *y, const float *x) { y[i] += x[i]; }
MK_HD void mk_cu_scale_body(size_t i, float *x, float c) { x[i] *= c; }

/* ---- softmax cross-entropy with a weight per row, over logits [n, V] in place ---- */
MK_HD void mk_cu_xent_max_part(size_t row, unsigned tid, const float *x, size_t V, double *sh)
{
    const float *r = x + row * V;
    double mx = -INFINITY;
    for (size_t j = tid; j < V; j += MK_CU_NT)
        if (r[j] > mx) mx = r[j];
    sh[tid] = mx;
}
MK_HD void mk_cu_xent_sum_part(size_t row, unsigned tid, const float *x, size_t V, float mx, double *sh)
{
    const float *r = x + row * V;
    double s = 0;
    for (size_t j = tid; j < V; j += MK_CU_NT) s += exp((double)r[j] - mx);
    sh[tid] = s;
}
/* nll[row] = logsumexp - x[target] (by the thread that owns the target's column, before it
 * overwrites it); x = softmax * g - g at the target, g = weight * scale (0: zeros) */
MK_HD void mk_cu_xent_fin(size_t row, unsigned tid, float *x, size_t V, const int32_t *target, const float *weight, float scale,
                          float mx, double sum, double *nll)
{
    float *r = x + row * V;
    double lse = (double)mx + log(sum);
    size_t tg = (size_t)target[row];
    float g = weight[row] * scale;
    for (size_t j = tid; j < V; j += MK_CU_NT) {
        if (j == tg) nll[row] = lse - (double)r[j];
        float y = g == 0 ? 0.0f : (float)exp((double)r[j] - lse) * g;
        if (j == tg && g != 0) y -= g;
        r[j] = y;
    }
}

/* ---- AdamW (torch.optim.AdamW, f32 master weights and moments) with the scalars of one
 * step precomputed as train/optim.c does ---- */
typedef struct mk_cu_adamw_k {
    float keep, a1, b2, a2, step_size, bc2s, eps;
} mk_cu_adamw_k;

/* bf16 of f (round to nearest even; NaN stays NaN) */
MK_HD uint16_t mk_cu_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);
}
MK_HD float mk_cu_bf16_f32(uint16_t h)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
MK_HD float mk_cu_bfr(float x) { return mk_cu_bf16_f32(mk_cu_bf16(x)); }

/* one element; decay: whether weight decay applies; w16 (may be NULL): the bf16 copy */
MK_HD void mk_cu_adamw_body(size_t i, mk_cu_adamw_k k, int decay, float *w, const float *g, float *m, float *v, uint16_t *w16)
{
    float wi = decay ? w[i] * k.keep : w[i];
    float mi = m[i] + k.a1 * (g[i] - m[i]);
    float vi = v[i] * k.b2 + k.a2 * (g[i] * g[i]);
    m[i] = mi, v[i] = vi;
    w[i] = wi - k.step_size * (mi / (sqrtf(vi) / k.bc2s + k.eps));
    if (w16) w16[i] = mk_cu_bf16(w[i]);
}

/* ---- global L2 norm: block b of nb sums g[i]^2 for i = b * NT + tid, stepping nb * NT;
 * then one block sums the nb partials ---- */
MK_HD void mk_cu_sumsq_part(size_t b, unsigned tid, const float *g, size_t n, size_t nb, double *sh)
{
    double s = 0;
    for (size_t i = b * MK_CU_NT + tid; i < n; i += nb * MK_CU_NT) s += (double)g[i] * g[i];
    sh[tid] = s;
}
MK_HD void mk_cu_sum_part(unsigned tid, const double *part, size_t nb, double *sh)
{
    double s = 0;
    for (size_t i = tid; i < nb; i += MK_CU_NT) s += part[i];
    sh[tid] = s;
}

#endif
