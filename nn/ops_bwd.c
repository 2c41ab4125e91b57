/* ops_bwd.c - see ops_bwd.h. Gradients as torch's autograd computes them for nn.Linear,
 * LlamaRMSNorm, apply_rotary_pos_emb, eager_attention_forward, SiLU * up, nn.Embedding and
 * cross_entropy(reduction='none'). */
#include "ops_bwd.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/mk_dtype.h"
#include "../core/mk_thread.h"

#include "nn_omp.h"

/* Rows (or columns) per work item: fixed, so the split never depends on the thread count. */
#define BLK 64
#define NBLK(n) (((n) + BLK - 1) / BLK)
#define WBLK 256 /* weight rows or columns per product */
#define NWBLK(n) (((n) + WBLK - 1) / WBLK)

static inline float bf(float x) { return mk_dtype_round(MK_BF16, x); }

/* Floats of one thread's block of the bf16 backward: dx's T x min(WBLK, in), or dw's WBLK x in. */
static size_t lin_bf16_per(size_t T, size_t in)
{
    size_t a = T * (in < WBLK ? in : WBLK), b = (size_t)WBLK * in;
    return a > b ? a : b;
}

/* mk_nn_linear_bwd (scratch NULL: the products accumulate straight into dx and dw), or its bf16
 * form (each product's block into this thread's scratch, rounded, then added). */
static void linear_bwd(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx, bool x_bf16,
                       float *dw, float *db, float *scratch)
{
    /* blocks of WBLK columns of dx and rows of dw: each product packs its slice of the weight
     * once (a 49k x 576 lm_head is never copied per block of tokens) */
    size_t per = scratch ? lin_bf16_per(T, in) : 0;
    if (dx) { /* dx[:, i0:i1] += dy W[:, i0:i1] (bf16: c = bf16(dy W), dx += c or dx = bf16(dx + c)) */
        MK_OMP("omp parallel for schedule(dynamic, 1)")
        for (size_t b = 0; b < NWBLK(in); b++) {
            size_t i0 = b * WBLK, n = in - i0 < WBLK ? in - i0 : WBLK;
            float *c = scratch ? scratch + (size_t)mk_nn_thread_id() * per : dx + i0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)n, (int)out, 1.0f, dy, (int)out, w + i0, (int)in,
                        scratch ? 0.0f : 1.0f, c, scratch ? (int)n : (int)in);
            for (size_t t = 0; scratch && t < T; t++) {
                float *o = dx + t * in + i0;
                const float *ct = c + t * n;
                if (x_bf16)
                    for (size_t i = 0; i < n; i++) o[i] = bf(o[i] + bf(ct[i]));
                else
                    for (size_t i = 0; i < n; i++) o[i] += bf(ct[i]);
            }
        }
    }
    if (dw) { /* dw[o0:o1] += dy[:, o0:o1]^T x (bf16: rounded) */
        MK_OMP("omp parallel for schedule(dynamic, 1)")
        for (size_t b = 0; b < NWBLK(out); b++) {
            size_t o0 = b * WBLK, n = out - o0 < WBLK ? out - o0 : WBLK;
            float *c = scratch ? scratch + (size_t)mk_nn_thread_id() * per : dw + o0 * in;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)in, (int)T, 1.0f, dy + o0, (int)out, x, (int)in,
                        scratch ? 0.0f : 1.0f, c, (int)in);
            float *o = dw + o0 * in;
            for (size_t i = 0; scratch && i < n * in; i++) o[i] += bf(c[i]);
        }
    }
    if (db) {
        MK_OMP("omp parallel for schedule(static)")
        for (size_t b = 0; b < NBLK(out); b++) {
            size_t o0 = b * BLK, o1 = o0 + BLK < out ? o0 + BLK : out;
            for (size_t o = o0; o < o1; o++) {
                double s = 0;
                for (size_t t = 0; t < T; t++) s += dy[t * out + o];
                db[o] += scratch ? bf((float)s) : (float)s;
            }
        }
    }
}

void mk_nn_linear_bwd(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx, float *dw,
                      float *db)
{
    linear_bwd(x, T, in, w, out, dy, dx, false, dw, db, NULL);
}

void mk_nn_linear_bwd_ref(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx,
                          float *dw, float *db)
{
    for (size_t t = 0; dx && t < T; t++)
        for (size_t i = 0; i < in; i++) {
            double s = 0;
            for (size_t o = 0; o < out; o++) s += (double)dy[t * out + o] * w[o * in + i];
            dx[t * in + i] += (float)s;
        }
    for (size_t o = 0; dw && o < out; o++)
        for (size_t i = 0; i < in; i++) {
            double s = 0;
            for (size_t t = 0; t < T; t++) s += (double)dy[t * out + o] * x[t * in + i];
            dw[o * in + i] += (float)s;
        }
    for (size_t o = 0; db && o < out; o++) {
        double s = 0;
        for (size_t t = 0; t < T; t++) s += dy[t * out + o];
        db[o] += (float)s;
    }
}

/* 1 / sqrt(mean(x^2) + eps) of a row, as mk_nn_rmsnorm rounds it. */
static float row_rstd(const float *r, size_t d, float eps)
{
    double ss = 0;
    for (size_t i = 0; i < d; i++) ss += (double)r[i] * r[i];
    return (float)(1.0 / sqrt(ss / (double)d + (double)eps));
}

/* mk_nn_rmsnorm_bwd, or with dn (scratch) its bf16 form, mk_nn_rmsnorm_bwd_bf16. */
static void rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                        float *rstd, float *dn)
{
    MK_OMP("omp parallel for schedule(static) if (T * d > 16384)")
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d, *g = dy + t * d;
        float inv = rstd[t] = row_rstd(r, d, eps), *n = dn ? dn + t * d : NULL, *o = dx + t * d;
        /* sum_j w_j dy_j x_j; bf16: sum_j dn_j x_j, dn = bf16(dy w), the gradient of the rounded normalised x */
        double dot = 0;
        if (n)
            for (size_t i = 0; i < d; i++) n[i] = bf(g[i] * w[i]), dot += (double)n[i] * r[i];
        else
            for (size_t i = 0; i < d; i++) dot += (double)w[i] * g[i] * r[i];
        float c = (float)(dot * (double)inv * inv * inv / (double)d);
        if (n)
            for (size_t i = 0; i < d; i++) o[i] = bf(n[i] * inv - r[i] * c);
        else
            for (size_t i = 0; i < d; i++) o[i] += w[i] * g[i] * inv - r[i] * c;
    }
    if (!dw) return;
    MK_OMP("omp parallel for schedule(static) if (T * d > 16384)")
    for (size_t b = 0; b < NBLK(d); b++) {
        size_t i0 = b * BLK, i1 = i0 + BLK < d ? i0 + BLK : d;
        for (size_t i = i0; i < i1; i++) {
            double s = 0;
            for (size_t t = 0; t < T; t++) {
                float nx = x[t * d + i] * rstd[t];
                s += (double)dy[t * d + i] * (dn ? bf(nx) : nx);
            }
            dw[i] += (float)s;
        }
    }
}

void mk_nn_rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                       float *rstd)
{
    rmsnorm_bwd(x, w, dy, T, d, eps, dx, dw, rstd, NULL);
}

void mk_nn_rmsnorm_bwd_ref(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                           float *dw)
{
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d, *g = dy + t * d;
        double ss = 0;
        for (size_t i = 0; i < d; i++) ss += (double)r[i] * r[i];
        double inv = 1.0 / sqrt(ss / (double)d + (double)eps), dot = 0;
        for (size_t i = 0; i < d; i++) dot += (double)w[i] * g[i] * r[i];
        for (size_t i = 0; i < d; i++) {
            dx[t * d + i] += (float)(w[i] * g[i] * inv - r[i] * dot * inv * inv * inv / (double)d);
            dw[i] += (float)(g[i] * r[i] * inv);
        }
    }
}

void mk_nn_rope_bwd(float *dx, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r)
{
    mk_nn_rope_rotate(dx, T, n_heads, head_dim, r, true);
}

void mk_nn_attention_train(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                           float scale, long window, float *out, float *p)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd;
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t h = 0; h < nh; h++) {
        size_t kvh = h / group;
        float *ph = p + h * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hd, 1.0f, q + h * hd, (int)qs, k + kvh * hd,
                    (int)ks, 0.0f, ph, (int)T);
        mk_nn_softmax_rows(ph, T, 0, T, scale, 0, window);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, ph, (int)T, v + kvh * hd, (int)ks,
                    0.0f, out + h * hd, (int)qs);
    }
}

size_t mk_nn_attention_bwd_scratch(size_t T) { return (size_t)mk_threads_get() * T * T; }

/* bf16(P) of one head into pb (the causal part; zeros above the diagonal). */
static void round_probs(const float *p, size_t T, float *pb)
{
    for (size_t i = 0; i < T * T; i++) pb[i] = bf(p[i]);
}

/* mk_nn_attention_bwd, or (bf16) mk_nn_attention_bwd_bf16. */
static void attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T, size_t nh,
                          size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *scratch, bool bf16)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd, per = bf16 ? 2 * T * T + T * hd : T * T;
    /* one key/value head per work item: its query heads in order, so dk and dv sum the same way */
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t kvh = 0; kvh < nkv; kvh++) {
        float *ds = scratch + (size_t)mk_nn_thread_id() * per, *pb = ds + T * T, *c = pb + T * T;
        for (size_t i = 0; bf16 && i < T; i++)
            for (size_t e = 0; e < hd; e++) dv[i * ks + kvh * hd + e] = 0;
        for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *ph = p + h * T * T, *doh = dout + h * hd;
            if (bf16) { /* dv (an f32 sum of the group's rounded terms, rounded below) += bf16(bf16(P)^T dO) */
                round_probs(ph, T, pb);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, pb, (int)T, doh, (int)qs, 0.0f, c,
                            (int)hd);
                for (size_t i = 0; i < T; i++)
                    for (size_t e = 0; e < hd; e++) dv[i * ks + kvh * hd + e] += bf(c[i * hd + e]);
            } else { /* dv += P^T dO */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, ph, (int)T, doh, (int)qs, 1.0f,
                            dv + kvh * hd, (int)ks);
            }
            /* dP = dO V^T, then dS = P (dP - sum_j P dP) scale (bf16: dP rounded, dS rounded before and after the scale) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hd, 1.0f, doh, (int)qs, v + kvh * hd, (int)ks,
                        0.0f, ds, (int)T);
            for (size_t i = 0; i < T; i++) {
                const float *pr = ph + i * T;
                float *dr = ds + i * T;
                double dot = 0;
                for (size_t j = 0; j <= i; j++) dr[j] = bf16 ? bf(dr[j]) : dr[j], dot += (double)pr[j] * dr[j];
                float df = (float)dot;
                if (bf16)
                    for (size_t j = 0; j <= i; j++) dr[j] = bf(bf(pr[j] * (dr[j] - df)) * scale);
                else
                    for (size_t j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - df) * scale;
                for (size_t j = i + 1; j < T; j++) dr[j] = 0;
            }
            /* dq = dS K, dk += dS^T Q (bf16: each rounded, dk summed in f32) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, ds, (int)T, k + kvh * hd, (int)ks,
                        0.0f, dq + h * hd, (int)qs);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, ds, (int)T, q + h * hd, (int)qs,
                        bf16 ? 0.0f : 1.0f, bf16 ? c : dk + kvh * hd, bf16 ? (int)hd : (int)ks);
            for (size_t i = 0; bf16 && i < T; i++)
                for (size_t e = 0; e < hd; e++)
                    dq[i * qs + h * hd + e] = bf(dq[i * qs + h * hd + e]), dk[i * ks + kvh * hd + e] += bf(c[i * hd + e]);
        }
        for (size_t i = 0; bf16 && i < T; i++)
            for (size_t e = 0; e < hd; e++) dv[i * ks + kvh * hd + e] = bf(dv[i * ks + kvh * hd + e]);
    }
}

void mk_nn_attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T, size_t nh,
                         size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *scratch)
{
    attention_bwd(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scratch, false);
}

void mk_nn_attention_bwd_ref(const float *q, const float *k, const float *v, const float *dout, size_t T, size_t nh,
                             size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                             float *scratch)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd;
    float *p = scratch, *dp = scratch + T;
    for (size_t h = 0; h < nh; h++) {
        size_t kvh = h / group;
        for (size_t i = 0; i < T; i++) {
            for (size_t j = 0; j < T; j++) {
                double s = 0;
                for (size_t e = 0; j <= i && e < hd; e++) s += (double)q[i * qs + h * hd + e] * k[j * ks + kvh * hd + e];
                p[j] = (float)s;
            }
            mk_nn_softmax_rows(p, T, i, i + 1, scale, 0, window);
            double dot = 0;
            for (size_t j = 0; j < T; j++) {
                double s = 0;
                for (size_t e = 0; e < hd; e++) s += (double)dout[i * qs + h * hd + e] * v[j * ks + kvh * hd + e];
                dp[j] = (float)s;
                dot += (double)p[j] * s;
            }
            for (size_t e = 0; e < hd; e++) dq[i * qs + h * hd + e] = 0;
            for (size_t j = 0; j < T; j++) {
                double dsj = (double)p[j] * ((double)dp[j] - dot) * scale;
                for (size_t e = 0; e < hd; e++) {
                    dv[j * ks + kvh * hd + e] += (float)((double)p[j] * dout[i * qs + h * hd + e]);
                    dq[i * qs + h * hd + e] += (float)(dsj * k[j * ks + kvh * hd + e]);
                    dk[j * ks + kvh * hd + e] += (float)(dsj * q[i * qs + h * hd + e]);
                }
            }
        }
    }
}

void mk_nn_swiglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), silu = g / (1.0f + expf(-g));
        dup[i] = dout[i] * silu;
        dgate[i] = dout[i] * up[i] * (sg * (1.0f + g * (1.0f - sg)));
    }
}

void mk_nn_embed_bwd(const int32_t *tok, size_t T, size_t H, const float *dx, float *demb)
{
    MK_OMP("omp parallel for schedule(static) if (T * H > 65536)")
    for (size_t b = 0; b < NBLK(H); b++) {
        size_t i0 = b * BLK, i1 = i0 + BLK < H ? i0 + BLK : H;
        for (size_t t = 0; t < T; t++) {
            float *e = demb + (size_t)tok[t] * H;
            for (size_t i = i0; i < i1; i++) e[i] += dx[t * H + i];
        }
    }
}

void mk_nn_xent(float *logits, size_t n, size_t V, const int32_t *target, const float *weight, float scale, double *nll)
{
    MK_OMP("omp parallel for schedule(static)")
    for (size_t i = 0; i < n; i++) {
        float *x = logits + i * V;
        float mx = x[0];
        for (size_t j = 1; j < V; j++)
            if (x[j] > mx) mx = x[j];
        double s = 0;
        for (size_t j = 0; j < V; j++) s += exp((double)x[j] - mx);
        double lse = (double)mx + log(s);
        nll[i] = lse - (double)x[target[i]];
        float g = weight[i] * scale;
        if (g == 0) {
            memset(x, 0, V * sizeof *x);
            continue;
        }
        for (size_t j = 0; j < V; j++) x[j] = (float)exp((double)x[j] - lse) * g;
        x[target[i]] -= g;
    }
}

/* ---- mixed precision (bf16 products) ------------------------------------------------------ */

void mk_nn_round_bf16(float *v, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) v[i] = bf(v[i]);
}

size_t mk_nn_linear_bwd_bf16_scratch(size_t T, size_t in) { return (size_t)mk_threads_get() * lin_bf16_per(T, in); }

void mk_nn_linear_bwd_bf16(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx,
                           bool x_bf16, float *dw, float *db, float *scratch)
{
    linear_bwd(x, T, in, w, out, dy, dx, x_bf16, dw, db, scratch);
}

void mk_nn_rmsnorm_bf16(float *out, const float *x, const float *w, size_t T, size_t d, float eps)
{
    MK_OMP("omp parallel for schedule(static) if (T * d > 65536)")
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d;
        float inv = row_rstd(r, d, eps), *o = out + t * d;
        for (size_t i = 0; i < d; i++) o[i] = w[i] * bf(r[i] * inv);
    }
}

void mk_nn_rmsnorm_bwd_bf16(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                            float *dw, float *rstd, float *dn)
{
    rmsnorm_bwd(x, w, dy, T, d, eps, dx, dw, rstd, dn);
}

void mk_nn_rope_bwd_bf16(float *dx, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r)
{
    size_t h2 = r->half;
    MK_OMP("omp parallel for schedule(static) if (T * n_heads * head_dim > 65536)")
    for (size_t th = 0; th < T * n_heads; th++) { /* one head of one position */
        size_t t = th / n_heads;
        float *v = dx + th * head_dim;
        for (size_t i = 0; i < h2; i++) {
            float a = v[i], b = v[i + h2], c = r->cos[t * h2 + i], s = r->sin[t * h2 + i];
            v[i] = bf(bf(a * c) + bf(b * s));
            v[i + h2] = bf(bf(b * c) - bf(a * s));
        }
    }
}

size_t mk_nn_attention_bf16_scratch(size_t T, size_t hd) { return (size_t)mk_threads_get() * (2 * T * T + T * hd); }

void mk_nn_attention_train_bf16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                float scale, long window, float *out, float *p, float *scratch)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd, per = 2 * T * T + T * hd;
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t h = 0; h < nh; h++) {
        size_t kvh = h / group;
        float *ph = p + h * T * T, *pb = scratch + (size_t)mk_nn_thread_id() * per;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hd, 1.0f, q + h * hd, (int)qs, k + kvh * hd,
                    (int)ks, 0.0f, ph, (int)T);
        for (size_t i = 0; i < T; i++)
            for (size_t j = 0; j <= i; j++) ph[i * T + j] = bf(bf(ph[i * T + j]) * scale);
        mk_nn_softmax_rows(ph, T, 0, T, 1.0f, 0, window);
        round_probs(ph, T, pb);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, pb, (int)T, v + kvh * hd, (int)ks,
                    0.0f, out + h * hd, (int)qs);
        for (size_t i = 0; i < T; i++)
            for (size_t e = 0; e < hd; e++) out[i * qs + h * hd + e] = bf(out[i * qs + h * hd + e]);
    }
}

void mk_nn_attention_bwd_bf16(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                              size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *scratch)
{
    attention_bwd(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scratch, true);
}

void mk_nn_swiglu_bf16(const float *gate, const float *up, float *out, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = bf(bf(g / (1.0f + expf(-g))) * up[i]);
    }
}

void mk_nn_swiglu_bwd_bf16(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), silu = bf(g / (1.0f + expf(-g)));
        dup[i] = bf(dout[i] * silu);
        dgate[i] = bf(bf(dout[i] * up[i]) * (sg * (1.0f + g * (1.0f - sg))));
    }
}

/* ---- LayerNorm and GeGLU ------------------------------------------------------------------- */

void mk_nn_layernorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *db, float *stats)
{
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d, *g = dy + t * d;
        double m = 0, v = 0, sg = 0, sgx = 0;
        for (size_t i = 0; i < d; i++) m += r[i];
        m /= (double)d;
        for (size_t i = 0; i < d; i++) v += ((double)r[i] - m) * ((double)r[i] - m);
        v /= (double)d;
        float inv = (float)(1.0 / sqrt(v + (double)eps)), mf = (float)m;
        stats[2 * t] = mf, stats[2 * t + 1] = inv;
        for (size_t i = 0; i < d; i++) {
            float gi = g[i] * w[i], xh = (r[i] - mf) * inv;
            sg += gi, sgx += (double)gi * xh;
        }
        float a = (float)(sg / (double)d), b = (float)(sgx / (double)d);
        for (size_t i = 0; i < d; i++) dx[t * d + i] += inv * (g[i] * w[i] - a - (r[i] - mf) * inv * b);
    }
    for (size_t i = 0; (dw || db) && i < d; i++) { /* per column, over the rows in order */
        double sw = 0, sb = 0;
        for (size_t t = 0; t < T; t++) {
            float g = dy[t * d + i];
            sw += (double)g * ((x[t * d + i] - stats[2 * t]) * stats[2 * t + 1]);
            sb += g;
        }
        if (dw) dw[i] += (float)sw;
        if (db) db[i] += (float)sb;
    }
}

/* gelu_tanh(x) in *act and its derivative (returned). */
static inline float gelu_tanh_d(float x, float *act)
{
    const float k = 0.7978845608028654f, c = 0.044715f;
    float t = tanhf(k * (x + c * x * x * x));
    *act = 0.5f * x * (1.0f + t);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
}

void mk_nn_geglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float act, da = gelu_tanh_d(gate[i], &act);
        dup[i] = dout[i] * act;
        dgate[i] = dout[i] * up[i] * da;
    }
}

void mk_nn_geglu_bf16(const float *gate, const float *up, float *out, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float act;
        (void)gelu_tanh_d(gate[i], &act);
        out[i] = bf(bf(act) * up[i]);
    }
}

void mk_nn_geglu_bwd_bf16(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float act, da = gelu_tanh_d(gate[i], &act);
        dup[i] = bf(dout[i] * bf(act));
        dgate[i] = bf(bf(dout[i] * up[i]) * da);
    }
}
