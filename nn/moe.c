/* moe.c - the sparse MLP of mixture-of-experts layers (nn_int.h), as transformers'
 * MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock and Qwen3MoeSparseMoeBlock compute it:
 * router logits [N, E] = h W_r^T; softmax over the experts in f32; the top k (ties to the
 * lower expert, as torch.topk on CPU returns them); weights renormalized to sum 1 when
 * norm_topk (Mixtral always); out = sum over the chosen experts of weight x expert MLP(h);
 * Qwen2-MoE adds sigmoid(h . w_s) x shared MLP(h).
 * Memory: per-expert tensors are read one expert at a time, when some token is routed to it;
 * transformers 5's fused expert tensors come loaded with the layer. */
#include "nn_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct moe_bufs {
    float *logits, *wt, *x, *g, *u, *y, *wg, *wu, *wd;
    size_t *sel, *rows;
} moe_bufs;

static void bufs_free(moe_bufs *b)
{
    free(b->logits), free(b->wt), free(b->x), free(b->g), free(b->u), free(b->y);
    free(b->wg), free(b->wu), free(b->wd), free(b->sel), free(b->rows);
}

/* the linear hook (nn.h) on x[n, in] for tensor t (-1: none) of layer l */
static void hook(const mk_nn_model *m, size_t l, long t, long expert, const float *x, size_t n, size_t in)
{
    if (m->lin_fn && t >= 0) m->lin_fn(m->lin_ctx, l, t, expert, x, n, in);
}

/* A gated MLP on x[n, H] with weights gate/up [F, H], down [H, F] into y[n, H]; the hook
 * told of tensors t[3] (gate, up, down; t[1] -1 when gate and up are one fused tensor). */
static void expert_mlp(const mk_nn_model *m, size_t l, const long t[3], long expert, const float *x, size_t n, size_t F,
                       const float *wg, const float *wu, const float *wd, float *g, float *u, float *y)
{
    hook(m, l, t[0], expert, x, n, m->H);
    hook(m, l, t[1], expert, x, n, m->H);
    mk_nn_linear(x, n, m->H, wg, F, false, NULL, g);
    mk_nn_linear(x, n, m->H, wu, F, false, NULL, u);
    mk_nn_act_gated(m->cfg->act, g, u, u, n * F);
    hook(m, l, t[2], expert, u, n, F);
    mk_nn_linear(u, n, F, wd, m->H, false, NULL, y);
}

/* Routing of token t: sel[K] experts and wt[K] weights from its logits[E]. */
static void route(const mk_nn_model *m, float *logits, size_t *sel, float *wt)
{
    size_t E = m->E, K = m->K;
    float mx = logits[0];
    for (size_t e = 1; e < E; e++) mx = logits[e] > mx ? logits[e] : mx;
    float sum = 0;
    for (size_t e = 0; e < E; e++) sum += logits[e] = expf(logits[e] - mx);
    for (size_t e = 0; e < E; e++) logits[e] /= sum;
    float tot = 0;
    for (size_t k = 0; k < K; k++) {
        size_t best = E;
        for (size_t e = 0; e < E; e++) {
            bool taken = false;
            for (size_t j = 0; j < k; j++) taken |= sel[j] == e;
            if (!taken && (best == E || logits[e] > logits[best])) best = e;
        }
        sel[k] = best;
        wt[k] = logits[best];
        tot += wt[k];
    }
    if (m->cfg->norm_topk)
        for (size_t k = 0; k < K; k++) wt[k] /= tot;
}

mk_status mk_nn_moe_mlp(mk_nn_model *m, size_t l, const nn_layer *w, size_t N, const float *h, float *out)
{
    size_t H = m->H, E = m->E, K = m->K, F = m->Fe > m->Fs ? m->Fe : m->Fs;
    moe_bufs b = {0};
    b.logits = mk_malloc(N * E * sizeof(float));
    b.wt = mk_malloc(N * K * sizeof(float));
    b.sel = mk_malloc(N * K * sizeof(size_t));
    b.rows = mk_malloc(N * sizeof(size_t));
    b.x = mk_malloc(N * H * sizeof(float));
    b.y = mk_malloc(N * H * sizeof(float));
    b.g = mk_malloc(N * F * sizeof(float));
    b.u = mk_malloc(N * F * sizeof(float));
    b.wg = mk_malloc(F * H * sizeof(float));
    b.wu = mk_malloc(F * H * sizeof(float));
    b.wd = mk_malloc(F * H * sizeof(float));
    mk_status s = b.logits && b.wt && b.sel && b.rows && b.x && b.y && b.g && b.u && b.wg && b.wu && b.wd ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) {
        hook(m, l, m->idx[l][MK_ROLE_ROUTER][0], -1, h, N, H);
        mk_nn_linear(h, N, H, w->w[MK_ROLE_ROUTER][0], E, false, NULL, b.logits);
        for (size_t t = 0; t < N; t++) route(m, b.logits + t * E, b.sel + t * K, b.wt + t * K);
        memset(out, 0, N * H * sizeof(float));
    }
    const long *ei = m->eidx + l * E * 3;
    for (size_t e = 0; e < E && s == MK_OK; e++) {
        size_t n = 0;
        for (size_t t = 0; t < N; t++)
            for (size_t k = 0; k < K; k++)
                if (b.sel[t * K + k] == e) {
                    b.rows[n] = t * K + k;
                    memcpy(b.x + n++ * H, h + t * H, H * sizeof(float));
                }
        if (!n) continue;
        size_t ne = m->Fe * H;
        const float *gu = w->w[MK_ROLE_EXPERTS_GATE_UP][0], *dn = w->w[MK_ROLE_EXPERTS_DOWN][0];
        if (gu) { /* fused [E, 2F, H] (gate rows, then up rows) and [E, H, F], loaded with the layer */
            const long t[3] = {m->idx[l][MK_ROLE_EXPERTS_GATE_UP][0], -1, m->idx[l][MK_ROLE_EXPERTS_DOWN][0]};
            expert_mlp(m, l, t, (long)e, b.x, n, m->Fe, gu + e * 2 * ne, gu + e * 2 * ne + ne, dn + e * ne, b.g, b.u, b.y);
        } else {
            s = mk_nn_read(m, (size_t)ei[e * 3 + 0], 0, ne, b.wg);
            if (s == MK_OK) s = mk_nn_read(m, (size_t)ei[e * 3 + 1], 0, ne, b.wu);
            if (s == MK_OK) s = mk_nn_read(m, (size_t)ei[e * 3 + 2], 0, ne, b.wd);
            if (s != MK_OK) break;
            expert_mlp(m, l, ei + e * 3, (long)e, b.x, n, m->Fe, b.wg, b.wu, b.wd, b.g, b.u, b.y);
        }
        for (size_t r = 0; r < n; r++) {
            size_t t = b.rows[r] / K;
            float wt = b.wt[b.rows[r]];
            for (size_t i = 0; i < H; i++) out[t * H + i] += wt * b.y[r * H + i];
        }
    }
    if (s == MK_OK && w->w[MK_ROLE_SHARED_ROUTER][0]) { /* Qwen2-MoE */
        const long st[3] = {m->idx[l][MK_ROLE_SHARED_GATE][0], m->idx[l][MK_ROLE_SHARED_UP][0], m->idx[l][MK_ROLE_SHARED_DOWN][0]};
        expert_mlp(m, l, st, -1, h, N, m->Fs, w->w[MK_ROLE_SHARED_GATE][0], w->w[MK_ROLE_SHARED_UP][0], w->w[MK_ROLE_SHARED_DOWN][0],
                   b.g, b.u, b.y);
        hook(m, l, m->idx[l][MK_ROLE_SHARED_ROUTER][0], -1, h, N, H);
        mk_nn_linear(h, N, H, w->w[MK_ROLE_SHARED_ROUTER][0], 1, false, NULL, b.logits);
        for (size_t t = 0; t < N; t++) {
            float sg = 1.0f / (1.0f + expf(-b.logits[t]));
            for (size_t i = 0; i < H; i++) out[t * H + i] += sg * b.y[t * H + i];
        }
    }
    bufs_free(&b);
    return s;
}
