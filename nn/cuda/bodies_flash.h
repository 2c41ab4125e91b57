/* bodies_flash.h - fused causal attention with grouped key/value heads (flash-style), in the
 * common subset of C and CUDA C++ as bodies.h: no [heads, T, T] probabilities. The forward runs
 * one block per (head h, query i) over tiles of MK_CU_NT keys with an online softmax (a running
 * maximum and sum, the output accumulator rescaled per tile) and keeps only each row's
 * log-sum-exp [nh, T]; the backward recomputes each probability from it: dq per (h, i) over key
 * tiles, dk and dv per (key/value head, key j) over the group's heads and tiles of queries, and
 * D = dO . O per row first. Thread tid < hd owns output column e = tid (hd <= MK_CU_NT), so the
 * accumulators live one per thread (acc[tid]; registers on the device, arrays in the
 * emulation). Masks as bodies.h: key j is seen by query i when j <= i and (window == 0 or
 * i - j < window). Matches mk_cu_attention / mk_cu_attention_bwd (and so mk_nn_attention_train,
 * mk_nn_attention_bwd) up to the order of the sums. */
#ifndef MK_NN_CUDA_BODIES_FLASH_H
#define MK_NN_CUDA_BODIES_FLASH_H

#include "bodies.h"

MK_HD int mk_cu_fa_seen(size_t i, size_t j, long window) { return j <= i && j >= mk_cu_att_j0(i, window); }
/* the first tile of keys row i sees */
MK_HD size_t mk_cu_fa_t0(size_t i, long window) { return mk_cu_att_j0(i, window) / MK_CU_NT * MK_CU_NT; }
MK_HD float mk_cu_fa_dot(const float *a, const float *b, size_t hd)
{
    double s = 0;
    for (size_t e = 0; e < hd; e++) s += (double)a[e] * b[e];
    return (float)s;
}

/* ---- forward, row = h * T + i; a tile of keys t0 + tid ---- */
/* score s_j = (q_i . k_j) scale into pt[tid] (-inf when not seen), and into sh for the maximum */
MK_HD void mk_cu_fa_score(size_t row, unsigned tid, size_t t0, const float *q, const float *k, size_t T, size_t nh, size_t nkv,
                          size_t hd, float scale, long window, float *pt, double *sh)
{
    size_t h = row / T, i = row % T, j = t0 + tid, kvh = h / (nh / nkv);
    float s = -INFINITY;
    if (j < T && mk_cu_fa_seen(i, j, window)) s = mk_cu_fa_dot(q + i * nh * hd + h * hd, k + j * nkv * hd + kvh * hd, hd) * scale;
    pt[tid] = s;
    sh[tid] = s;
}
/* p_j = exp(s_j - m) (0 when not seen) in pt and sh, for the tile's sum */
MK_HD void mk_cu_fa_exp(unsigned tid, float m, float *pt, double *sh)
{
    float p = pt[tid] == -INFINITY ? 0.0f : expf(pt[tid] - m);
    pt[tid] = p;
    sh[tid] = p;
}
/* acc[e] = acc[e] alpha + sum over the tile of p_j v[j, kvh, e]; thread e < hd */
MK_HD void mk_cu_fa_acc(size_t row, unsigned tid, size_t t0, size_t T, size_t nh, size_t nkv, size_t hd, const float *pt,
                        const float *v, float alpha, float *acc)
{
    if (tid >= hd) return;
    size_t h = row / T, kvh = h / (nh / nkv), n = T - t0 < MK_CU_NT ? T - t0 : MK_CU_NT;
    double s = 0;
    for (size_t t = 0; t < n; t++)
        if (pt[t] != 0) s += (double)pt[t] * v[(t0 + t) * nkv * hd + kvh * hd + tid];
    acc[tid] = acc[tid] * alpha + (float)s;
}
/* out[i, h, e] = acc[e] / l; lse[row] = m + log(l) */
MK_HD void mk_cu_fa_out(size_t row, unsigned tid, size_t T, size_t nh, size_t hd, const float *acc, float m, double l, float *out,
                        float *lse)
{
    size_t h = row / T, i = row % T;
    if (tid < hd) out[i * nh * hd + h * hd + tid] = (float)(acc[tid] / l);
    if (tid == 0) lse[row] = (float)((double)m + log(l));
}

/* ---- backward ---- */
/* D[row] = dO_i . O_i (= sum_j P dP): this thread's part into sh */
MK_HD void mk_cu_fa_d_part(size_t row, unsigned tid, const float *out, const float *dout, size_t T, size_t nh, size_t hd,
                           double *sh)
{
    size_t h = row / T, i = row % T;
    const float *o = out + i * nh * hd + h * hd, *d = dout + i * nh * hd + h * hd;
    double s = 0;
    for (size_t e = tid; e < hd; e += MK_CU_NT) s += (double)o[e] * d[e];
    sh[tid] = s;
}
/* dS_ij = P_ij (dP_ij - D_i) scale of query i (head h) and key j, with P from the log-sum-exp */
MK_HD float mk_cu_fa_ds(size_t h, size_t i, size_t j, size_t kvh, const float *q, const float *k, const float *v,
                        const float *dout, const float *lse, const float *D, size_t T, size_t nh, size_t nkv, size_t hd,
                        float scale, float *p)
{
    const float *qi = q + i * nh * hd + h * hd, *di = dout + i * nh * hd + h * hd;
    float s = mk_cu_fa_dot(qi, k + j * nkv * hd + kvh * hd, hd) * scale;
    float pij = expf(s - lse[h * T + i]), dp = mk_cu_fa_dot(di, v + j * nkv * hd + kvh * hd, hd);
    *p = pij;
    return pij * (dp - D[h * T + i]) * scale;
}
/* dq, row = h * T + i: dS of the tile's keys into pt */
MK_HD void mk_cu_fa_dq_part(size_t row, unsigned tid, size_t t0, const float *q, const float *k, const float *v, const float *dout,
                            const float *lse, const float *D, size_t T, size_t nh, size_t nkv, size_t hd, float scale, long window,
                            float *pt)
{
    size_t h = row / T, i = row % T, j = t0 + tid, kvh = h / (nh / nkv);
    float p;
    pt[tid] = j < T && mk_cu_fa_seen(i, j, window) ? mk_cu_fa_ds(h, i, j, kvh, q, k, v, dout, lse, D, T, nh, nkv, hd, scale, &p)
                                                   : 0.0f;
}
/* acc[e] += sum over the tile of dS_j k[j, kvh, e] */
MK_HD void mk_cu_fa_dq_acc(size_t row, unsigned tid, size_t t0, const float *k, size_t T, size_t nh, size_t nkv, size_t hd,
                           const float *pt, float *acc)
{
    if (tid >= hd) return;
    size_t kvh = row / T / (nh / nkv), n = T - t0 < MK_CU_NT ? T - t0 : MK_CU_NT;
    double s = 0;
    for (size_t t = 0; t < n; t++)
        if (pt[t] != 0) s += (double)pt[t] * k[(t0 + t) * nkv * hd + kvh * hd + tid];
    acc[tid] += (float)s;
}
/* dk, dv, krow = j * nkv + kvh (key j of key/value head kvh); a tile of queries i = t0 + tid of
 * head h: P into pt, dS into dt */
MK_HD void mk_cu_fa_dkv_part(size_t krow, unsigned tid, size_t h, size_t t0, const float *q, const float *k, const float *v,
                             const float *dout, const float *lse, const float *D, size_t T, size_t nh, size_t nkv, size_t hd,
                             float scale, long window, float *pt, float *dt)
{
    size_t j = krow / nkv, kvh = krow % nkv, i = t0 + tid;
    float p = 0, ds = 0;
    if (i < T && mk_cu_fa_seen(i, j, window)) ds = mk_cu_fa_ds(h, i, j, kvh, q, k, v, dout, lse, D, T, nh, nkv, hd, scale, &p);
    pt[tid] = p;
    dt[tid] = ds;
}
/* accv[e] += sum over the tile of P dO[i, h, e], acck[e] += sum of dS q[i, h, e] */
MK_HD void mk_cu_fa_dkv_acc(unsigned tid, size_t h, size_t t0, const float *q, const float *dout, size_t T, size_t nh, size_t hd,
                            const float *pt, const float *dt, float *acck, float *accv)
{
    if (tid >= hd) return;
    size_t n = T - t0 < MK_CU_NT ? T - t0 : MK_CU_NT;
    double sk = 0, sv = 0;
    for (size_t t = 0; t < n; t++) {
        size_t o = (t0 + t) * nh * hd + h * hd + tid;
        if (pt[t] != 0) sv += (double)pt[t] * dout[o];
        if (dt[t] != 0) sk += (double)dt[t] * q[o];
    }
    acck[tid] += (float)sk, accv[tid] += (float)sv;
}
/* the query tiles key j is seen by: from j's tile up to the last query that sees it */
MK_HD size_t mk_cu_fa_q_end(size_t j, size_t T, long window)
{
    size_t e = window > 0 && j + (size_t)window < T ? j + (size_t)window : T;
    return e;
}

#endif
