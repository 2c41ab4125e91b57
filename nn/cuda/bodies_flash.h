/* bodies_flash.h - fused causal attention with grouped key/value heads and a sliding window in
 * the shape of FlashAttention-2, in the common subset of C and CUDA C++ as bodies.h: no
 * [heads, T, T] probabilities anywhere.
 *
 * A block is MK_CU_FA_B x MK_CU_FA_B = MK_CU_NT threads; thread tid is (r, c) = (tid / B,
 * tid % B). Shared memory (mk_cu_fa_sh) holds up to four tiles of B rows of one head (ld
 * MK_CU_FA_LD, padded against bank conflicts), a B x B tile of scores or probabilities and
 * one of their gradients, and per-row statistics. A thread's accumulators are its own
 * (registers on the device, one array per thread in the emulation): it owns row r and
 * columns e = c + B u (u < MK_CU_FA_C) of an output tile, so head_dim <= MK_CU_FA_HD.
 *
 *  - forward, a block per (head h, tile of B queries): Q in shared memory; for each tile of
 *    keys it can see, K then V into shared memory, the scores S = Q K^T scale, the online
 *    softmax (a running maximum m and sum l per row; the accumulator rescaled by
 *    exp(m_old - m_new)), acc = acc alpha + P V. The output is acc / l; each row's maximum m
 *    and 1 / l are kept (stats [2, nh, T]: the maxima, then the inverses).
 *  - backward from them (P = exp(s - m) / l, the CPU softmax's formula, recomputed): a block
 *    per (head, tile of queries) makes D_i = sum_j P_ij
 *    dP_ij (dP = dO V^T, as the CPU's mk_nn_attention_bwd sums it) over its key tiles, then dS =
 *    P (dP - D) scale and dQ = dS K over them again; a block per (key/value head, tile of
 *    keys) makes dK = dS^T Q and dV = P^T dO over the group's query heads (in order) and their
 *    query tiles. Every sum runs in a fixed order, no atomics: the bytes do not depend on
 *    scheduling.
 *  - bf16 (bf set): the rounding points of mk_nn_attention_train_bf16 / _bwd_bf16 (bodies16.h):
 *    scores bf16(bf16(q.k) scale), summed in double; the forward runs its key tiles three
 *    times (the row's maximum, then its sum of exp(s - m) in double in key order, then P =
 *    exp(s - m) (1 / l) rounded times V: mk_nn_softmax_rows's values exactly) so the
 *    probabilities it rounds are the CPU's; output bf16(P V); dP rounded, dS = bf16(bf16(P (dP - D)) scale), dQ
 *    rounded, dK += each head's rounded sum, dV = bf16(sum over heads of each one's rounded
 *    bf16(P)^T dO).
 * Masks as bodies.h: key j is seen by query i when j <= i and (window == 0 or i - j < window).
 */
#ifndef MK_NN_CUDA_BODIES_FLASH_H
#define MK_NN_CUDA_BODIES_FLASH_H

#include "bodies.h"

#define MK_CU_FA_B 16                        /* rows of a query tile and of a key tile */
#define MK_CU_FA_HD 128                      /* the largest head_dim */
#define MK_CU_FA_LD (MK_CU_FA_HD + 1)        /* a tile row's stride in shared memory */
#define MK_CU_FA_C (MK_CU_FA_HD / MK_CU_FA_B) /* output columns per thread */
#if MK_CU_FA_B * MK_CU_FA_B != MK_CU_NT
#error "a fused attention block is one thread per element of a B x B tile"
#endif

typedef struct mk_cu_fa_sh {
    float t[4][MK_CU_FA_B][MK_CU_FA_LD];     /* tiles: Q, K, V, dO (which where: each kernel below) */
    float p[MK_CU_FA_B][MK_CU_FA_B];         /* scores, then probabilities */
    float ds[MK_CU_FA_B][MK_CU_FA_B];        /* dP, then dS */
    float m[MK_CU_FA_B], l[MK_CU_FA_B], al[MK_CU_FA_B]; /* forward: max, sum (bf16: 1 / sum), rescale;
                                                          backward: max, 1 / sum, D */
    double d[MK_CU_FA_B];                    /* bf16 forward: the sum; backward: D being summed */
} mk_cu_fa_sh;

/* the shape of one call */
typedef struct mk_cu_fa_dims {
    size_t T, nh, nkv, hd;
    float scale;
    long window;
    int bf;
} mk_cu_fa_dims;

MK_HD int mk_cu_fa_seen(size_t i, size_t j, size_t T, long window) { return i < T && j <= i && j >= mk_cu_att_j0(i, window); }
/* the first key tile the query tile at i0 sees, and the end of the query tiles key tile j0 is seen by */
MK_HD size_t mk_cu_fa_k_first(size_t i0, long window) { return mk_cu_att_j0(i0, window) / MK_CU_FA_B * MK_CU_FA_B; }
MK_HD size_t mk_cu_fa_q_end(size_t j0, const mk_cu_fa_dims *d)
{
    size_t last = j0 + MK_CU_FA_B - 1; /* the tile's last key: the latest query that sees any of it */
    return d->window > 0 && last + (size_t)d->window < d->T ? last + (size_t)d->window : d->T;
}
/* a . b: summed in f32, or (bf16: before a rounding) in double as the simple bf16 bodies, so the
 * value rounded is the correctly rounded one */
MK_HD float mk_cu_fa_dot(const float *a, const float *b, size_t hd, int bf)
{
    if (bf) {
        double s = 0;
        for (size_t e = 0; e < hd; e++) s += (double)a[e] * b[e];
        return (float)s;
    }
    float s = 0;
    for (size_t e = 0; e < hd; e++) s += a[e] * b[e];
    return s;
}
MK_HD float mk_cu_fa_score(float dot, const mk_cu_fa_dims *d) { return d->bf ? mk_cu_bfr(mk_cu_bfr(dot) * d->scale) : dot * d->scale; }

/* tile `which` = rows r0 .. r0 + B - 1 of one head of x ([T, heads x hd], the head at column
 * off), zeros past T */
MK_HD void mk_cu_fa_load(unsigned tid, mk_cu_fa_sh *sh, int which, const float *x, size_t r0, size_t heads, size_t off,
                         const mk_cu_fa_dims *d)
{
    for (size_t n = tid; n < MK_CU_FA_B * d->hd; n += MK_CU_NT) {
        size_t r = n / d->hd, e = n % d->hd;
        sh->t[which][r][e] = r0 + r < d->T ? x[(r0 + r) * heads * d->hd + off + e] : 0.0f;
    }
}

/* ---- forward: block (h, i0); tiles Q 0, K 1, V 2 ---- */
MK_HD void mk_cu_fa_fwd_init(unsigned tid, mk_cu_fa_sh *sh, float *acc)
{
    for (unsigned u = 0; u < MK_CU_FA_C; u++) acc[u] = 0;
    if (tid < MK_CU_FA_B) sh->m[tid] = -INFINITY, sh->l[tid] = 0, sh->d[tid] = 0;
}
/* s = score(q_i . k_j) or -inf where not seen */
MK_HD void mk_cu_fa_fwd_score(unsigned tid, mk_cu_fa_sh *sh, size_t i0, size_t j0, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    float s = -INFINITY;
    if (mk_cu_fa_seen(i0 + r, j0 + c, d->T, d->window)) s = mk_cu_fa_score(mk_cu_fa_dot(sh->t[0][r], sh->t[1][c], d->hd, d->bf), d);
    sh->p[r][c] = s;
}
/* the passes over the key tiles: f32 one (online), bf16 three (the maximum, the sum, P V) */
enum { MK_CU_FA_ONLINE, MK_CU_FA_MAX, MK_CU_FA_SUM, MK_CU_FA_FINAL };
MK_HD int mk_cu_fa_first_pass(const mk_cu_fa_dims *d) { return d->bf ? MK_CU_FA_MAX : MK_CU_FA_ONLINE; }
MK_HD int mk_cu_fa_next_pass(int pass, const mk_cu_fa_dims *d) { return d->bf && pass < MK_CU_FA_FINAL ? pass + 1 : -1; }
/* thread r < B, row r, one pass: ONLINE: m, l and the rescale al updated, P = exp(s - m_new);
 * MAX: m only; SUM: d += exp(s - m) in double, in key order; FINAL: P = bf16(exp(s - m) l)
 * (l holds 1 / sum by then, mk_cu_fa_fwd_inv), al = 1 */
MK_HD void mk_cu_fa_fwd_stat(unsigned tid, mk_cu_fa_sh *sh, int pass)
{
    if (tid >= MK_CU_FA_B) return;
    float *p = sh->p[tid], m = sh->m[tid];
    if (pass == MK_CU_FA_FINAL) {
        float inv = sh->l[tid];
        for (unsigned c = 0; c < MK_CU_FA_B; c++) p[c] = p[c] == -INFINITY ? 0.0f : mk_cu_bfr(expf(p[c] - m) * inv);
        sh->al[tid] = 1.0f;
        return;
    }
    if (pass == MK_CU_FA_SUM) {
        double s = sh->d[tid];
        for (unsigned c = 0; c < MK_CU_FA_B; c++) s += p[c] == -INFINITY ? 0.0 : (double)expf(p[c] - m);
        sh->d[tid] = s;
        return;
    }
    float mx = m;
    for (unsigned c = 0; c < MK_CU_FA_B; c++) mx = p[c] > mx ? p[c] : mx;
    if (pass == MK_CU_FA_MAX) {
        sh->m[tid] = mx;
        return;
    }
    if (mx == -INFINITY) { /* nothing seen yet */
        for (unsigned c = 0; c < MK_CU_FA_B; c++) p[c] = 0;
        sh->al[tid] = 1.0f;
        return;
    }
    float sum = 0;
    for (unsigned c = 0; c < MK_CU_FA_B; c++) {
        p[c] = p[c] == -INFINITY ? 0.0f : expf(p[c] - mx);
        sum += p[c];
    }
    float al = m == -INFINITY ? 0.0f : expf(m - mx);
    sh->al[tid] = al;
    sh->m[tid] = mx;
    sh->l[tid] = sh->l[tid] * al + sum;
}
/* after the SUM pass, thread r < B: l = 1 / sum (mk_nn_softmax_rows's inv) */
MK_HD void mk_cu_fa_fwd_inv(unsigned tid, mk_cu_fa_sh *sh)
{
    if (tid < MK_CU_FA_B) sh->l[tid] = (float)(1.0 / sh->d[tid]);
}
/* acc[u] = acc[u] al + sum_t P[r, t] V[t, e] */
MK_HD void mk_cu_fa_fwd_acc(unsigned tid, const mk_cu_fa_sh *sh, float *acc, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    float al = sh->al[r];
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u;
        if (e >= d->hd) break;
        float s = 0;
        for (unsigned t = 0; t < MK_CU_FA_B; t++) s += sh->p[r][t] * sh->t[2][t][e];
        acc[u] = acc[u] * al + s;
    }
}
/* out[i, h, e] = acc / l (bf16: bf16(acc) into out16); st[h, i] = m, st[nh T + h T + i] = 1 / l */
MK_HD void mk_cu_fa_fwd_out(unsigned tid, const mk_cu_fa_sh *sh, size_t h, size_t i0, const float *acc, float *out,
                            uint16_t *out16, float *st, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    size_t i = i0 + r;
    if (i >= d->T) return;
    float l = sh->l[r];
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u, o = i * d->nh * d->hd + h * d->hd + e;
        if (e >= d->hd) break;
        if (out16) out16[o] = mk_cu_bf16(acc[u]);
        else out[o] = acc[u] / l;
    }
    if (c == 0) st[h * d->T + i] = sh->m[r], st[(d->nh + h) * d->T + i] = out16 ? l : 1.0f / l;
}

/* ---- backward ---- */
/* P and dP of query row rq and key row rk: P = exp(s - m_i) / l_i, dP = dO_i . v_j (bf16:
 * rounded); q tile tq, dO tile tdo, k tile tk, v tile tv; the row's m and 1 / l in m, l */
MK_HD void mk_cu_fa_pdp(mk_cu_fa_sh *sh, unsigned rq, unsigned rk, int tq, int tk, int tv, int tdo, size_t i, size_t j,
                        const mk_cu_fa_dims *d, float *p, float *dp)
{
    *p = 0, *dp = 0;
    if (!mk_cu_fa_seen(i, j, d->T, d->window)) return;
    float s = mk_cu_fa_score(mk_cu_fa_dot(sh->t[tq][rq], sh->t[tk][rk], d->hd, d->bf), d);
    float g = mk_cu_fa_dot(sh->t[tdo][rq], sh->t[tv][rk], d->hd, d->bf);
    *p = expf(s - sh->m[rq]) * sh->l[rq];
    *dp = d->bf ? mk_cu_bfr(g) : g;
}
MK_HD float mk_cu_fa_ds(float p, float dp, float D, const mk_cu_fa_dims *d)
{
    return d->bf ? mk_cu_bfr(mk_cu_bfr(p * (dp - D)) * d->scale) : p * (dp - D) * d->scale;
}

/* the query tile's row statistics of head h into m and l, thread r < B */
MK_HD void mk_cu_fa_rows(unsigned tid, mk_cu_fa_sh *sh, size_t h, size_t i0, const float *st, const mk_cu_fa_dims *d)
{
    if (tid >= MK_CU_FA_B) return;
    int in = i0 + tid < d->T;
    sh->m[tid] = in ? st[h * d->T + i0 + tid] : 0.0f;
    sh->l[tid] = in ? st[(d->nh + h) * d->T + i0 + tid] : 0.0f;
}
/* dq: block (h, i0); tiles Q 0, K 1, V 2, dO 3; D in al */
MK_HD void mk_cu_fa_dq_init(unsigned tid, mk_cu_fa_sh *sh, size_t h, size_t i0, const float *st, float *acc,
                            const mk_cu_fa_dims *d)
{
    for (unsigned u = 0; u < MK_CU_FA_C; u++) acc[u] = 0;
    mk_cu_fa_rows(tid, sh, h, i0, st, d);
    if (tid < MK_CU_FA_B) sh->d[tid] = 0;
}
/* pass 0: P and dP into p, ds; pass 1: dS into ds */
MK_HD void mk_cu_fa_dq_p(unsigned tid, mk_cu_fa_sh *sh, int pass, size_t i0, size_t j0, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    float p, dp;
    mk_cu_fa_pdp(sh, r, c, 0, 1, 2, 3, i0 + r, j0 + c, d, &p, &dp);
    sh->p[r][c] = p;
    sh->ds[r][c] = pass ? mk_cu_fa_ds(p, dp, sh->al[r], d) : dp;
}
/* pass 0, thread r < B: D_r += sum_c P dP */
MK_HD void mk_cu_fa_dq_dsum(unsigned tid, mk_cu_fa_sh *sh)
{
    if (tid >= MK_CU_FA_B) return;
    double s = sh->d[tid];
    for (unsigned c = 0; c < MK_CU_FA_B; c++) s += (double)sh->p[tid][c] * sh->ds[tid][c];
    sh->d[tid] = s;
}
/* after pass 0, thread r < B: D kept (al, and dsum [nh, T] for the dk/dv kernel) */
MK_HD void mk_cu_fa_dq_dfin(unsigned tid, mk_cu_fa_sh *sh, size_t h, size_t i0, float *dsum, const mk_cu_fa_dims *d)
{
    if (tid >= MK_CU_FA_B) return;
    sh->al[tid] = (float)sh->d[tid];
    if (i0 + tid < d->T) dsum[h * d->T + i0 + tid] = sh->al[tid];
}
/* pass 1: acc[u] += sum_t dS[r, t] K[t, e] */
MK_HD void mk_cu_fa_dq_acc(unsigned tid, const mk_cu_fa_sh *sh, float *acc, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u;
        if (e >= d->hd) break;
        float s = 0;
        for (unsigned t = 0; t < MK_CU_FA_B; t++) s += sh->ds[r][t] * sh->t[1][t][e];
        acc[u] += s;
    }
}
MK_HD void mk_cu_fa_dq_out(unsigned tid, size_t h, size_t i0, const float *acc, float *dq, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    if (i0 + r >= d->T) return;
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u;
        if (e >= d->hd) break;
        dq[(i0 + r) * d->nh * d->hd + h * d->hd + e] = d->bf ? mk_cu_bfr(acc[u]) : acc[u];
    }
}

/* dk, dv: block (kvh, j0); tiles K 1, V 2 kept, Q 0 and dO 3 per query tile; D in al.
 * acc: [4][MK_CU_FA_C] per thread: dK and dV of the head being summed, and the totals (dK from
 * dk's value, dV from dv's in f32, from 0 in bf16) */
MK_HD void mk_cu_fa_dkv_init(unsigned tid, size_t kvh, size_t j0, const float *dk, const float *dv, float (*acc)[MK_CU_FA_C],
                             const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u, o = (j0 + r) * d->nkv * d->hd + kvh * d->hd + e;
        int in = j0 + r < d->T && e < d->hd;
        acc[0][u] = acc[1][u] = 0;
        acc[2][u] = in ? dk[o] : 0.0f;
        acc[3][u] = in && !d->bf ? dv[o] : 0.0f;
    }
}
/* the query tile's statistics and D of head h, thread r < B */
MK_HD void mk_cu_fa_dkv_rows(unsigned tid, mk_cu_fa_sh *sh, size_t h, size_t i0, const float *st, const float *dsum,
                             const mk_cu_fa_dims *d)
{
    mk_cu_fa_rows(tid, sh, h, i0, st, d);
    if (tid < MK_CU_FA_B) sh->al[tid] = i0 + tid < d->T ? dsum[h * d->T + i0 + tid] : 0.0f;
}
/* thread (r, c) = (query i0 + r, key j0 + c): P (bf16: rounded, as dV reads it) and dS */
MK_HD void mk_cu_fa_dkv_p(unsigned tid, mk_cu_fa_sh *sh, size_t i0, size_t j0, const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    float p, dp;
    mk_cu_fa_pdp(sh, r, c, 0, 1, 2, 3, i0 + r, j0 + c, d, &p, &dp);
    sh->ds[r][c] = mk_cu_fa_ds(p, dp, sh->al[r], d);
    sh->p[r][c] = d->bf ? mk_cu_bfr(p) : p;
}
/* thread (r, c) = (key j0 + r, column c + B u): dK += sum_t dS[t, r] Q[t, e], dV += sum_t P[t, r] dO[t, e] */
MK_HD void mk_cu_fa_dkv_acc(unsigned tid, const mk_cu_fa_sh *sh, float (*acc)[MK_CU_FA_C], const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u;
        if (e >= d->hd) break;
        float sk = 0, sv = 0;
        for (unsigned t = 0; t < MK_CU_FA_B; t++) {
            sk += sh->ds[t][r] * sh->t[0][t][e];
            sv += sh->p[t][r] * sh->t[3][t][e];
        }
        acc[0][u] += sk, acc[1][u] += sv;
    }
}
/* after each head: its sums (bf16: rounded) into the totals */
MK_HD void mk_cu_fa_dkv_head(float (*acc)[MK_CU_FA_C], const mk_cu_fa_dims *d)
{
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        acc[2][u] += d->bf ? mk_cu_bfr(acc[0][u]) : acc[0][u];
        acc[3][u] += d->bf ? mk_cu_bfr(acc[1][u]) : acc[1][u];
        acc[0][u] = acc[1][u] = 0;
    }
}
MK_HD void mk_cu_fa_dkv_out(unsigned tid, size_t kvh, size_t j0, float (*acc)[MK_CU_FA_C], float *dk, float *dv,
                            const mk_cu_fa_dims *d)
{
    unsigned r = tid / MK_CU_FA_B, c = tid % MK_CU_FA_B;
    if (j0 + r >= d->T) return;
    for (unsigned u = 0; u < MK_CU_FA_C; u++) {
        size_t e = c + (size_t)MK_CU_FA_B * u, o = (j0 + r) * d->nkv * d->hd + kvh * d->hd + e;
        if (e >= d->hd) break;
        dk[o] = acc[2][u];
        dv[o] = d->bf ? mk_cu_bfr(acc[3][u]) : acc[3][u];
    }
}

#endif
