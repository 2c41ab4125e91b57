/* forward.c - the forward pass (nn.h): embeddings, then per layer (loaded once for all the
 * sequences) norm -> q/k/v -> [q/k norms] -> RoPE -> causal attention -> o [-> post norm] ->
 * residual -> norm -> MLP [-> post norm] -> residual; then the final norm. Logits from
 * lm_head in row blocks. Follows transformers' LlamaDecoderLayer, Gemma2DecoderLayer,
 * Phi3 and GPT2Block. */
#include "nn_int.h"

#include "../core/mk_thread.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_BLOCK_BYTES (64u << 20) /* lm_head rows read per block */

/* Activation buffers for N = nseq * T rows. */
typedef struct acts {
    float *x, *h, *q, *k, *v, *att, *o, *g, *u, *scratch;
} acts;

static void acts_free(acts *a)
{
    free(a->x), free(a->h), free(a->q), free(a->k), free(a->v), free(a->att), free(a->o), free(a->g), free(a->u);
    free(a->scratch);
}

static mk_status acts_alloc(const mk_nn_model *m, size_t N, size_t T, acts *a)
{
    memset(a, 0, sizeof *a);
    size_t q = m->nh * m->hd, kv = m->nkv * m->hd, f2 = 2 * m->F;
    size_t qkv = q + 2 * kv > m->H * 3 ? q + 2 * kv : m->H * 3; /* fused outputs land in g */
    a->x = mk_malloc(N * m->H * sizeof(float));
    a->h = mk_malloc(N * m->H * sizeof(float));
    a->q = mk_malloc(N * q * sizeof(float));
    a->k = mk_malloc(N * kv * sizeof(float));
    a->v = mk_malloc(N * kv * sizeof(float));
    a->att = mk_malloc(N * q * sizeof(float));
    a->o = mk_malloc(N * m->H * sizeof(float));
    a->g = mk_malloc(N * (f2 > qkv ? f2 : qkv) * sizeof(float));
    a->u = mk_malloc(N * m->F * sizeof(float));
    a->scratch = mk_malloc(mk_nn_attention_scratch(T) * sizeof(float));
    if (!a->x || !a->h || !a->q || !a->k || !a->v || !a->att || !a->o || !a->g || !a->u || !a->scratch) {
        acts_free(a);
        return MK_ERR_NOMEM;
    }
    return MK_OK;
}

uint64_t mk_nn_memory(const mk_nn_model *m, size_t nseq, size_t T, size_t n_logit)
{
    uint64_t N = (uint64_t)nseq * T, q = m->nh * m->hd, kv = m->nkv * m->hd;
    uint64_t act = N * (3 * m->H + 2 * q + 2 * kv + 3 * m->F) + mk_nn_attention_scratch(T);
    uint64_t layer = 0;
    for (size_t l = 0; l < m->L; l++) {
        uint64_t t = 0;
        for (int r = 0; r < MK_ROLE_COUNT; r++)
            for (int b = 0; b < 2; b++)
                if (m->idx[l][r][b] >= 0) t += m->src->tensors[m->idx[l][r][b]].numel;
        if (t > layer) layer = t;
    }
    if (m->E) { /* nn/moe.c: router logits and routing, gathered rows, one expert's weights */
        uint64_t F = m->Fe > m->Fs ? m->Fe : m->Fs;
        act += N * (m->E + 3 * m->K + 2 * m->H + 2 * F) + 3 * F * m->H;
    }
    uint64_t head_rows = HEAD_BLOCK_BYTES / (m->H * sizeof(float));
    return 4 * (act + layer + N * m->H + (uint64_t)n_logit * m->V) + (head_rows ? HEAD_BLOCK_BYTES : 0);
}

static void norm(const mk_nn_model *m, const nn_layer *w, mk_role r, float *out, const float *x, size_t N, size_t d)
{
    float eps = (float)m->cfg->norm_eps;
    if (m->def->norm == MK_NORM_LAYER) mk_nn_layernorm(out, x, w->w[r][0], w->w[r][1], N, d, eps);
    else mk_nn_rmsnorm(out, x, w->w[r][0], N, d, eps, m->def->norm == MK_NORM_RMS_1P);
}

static void linear(const mk_nn_model *m, const nn_layer *w, mk_role r, const float *x, size_t N, size_t in, size_t out,
                   float *y)
{
    if (m->lin_fn) m->lin_fn(m->lin_ctx, m->cur_l, m->idx[m->cur_l][r][0], -1, x, N, in);
    mk_nn_linear(x, N, in, w->w[r][0], out, m->conv1d, w->w[r][1], y);
}

/* Columns [c0, c0 + n) of src [N, width] into dst [N, n]. */
static void take_cols(const float *src, size_t N, size_t width, size_t c0, size_t n, float *dst)
{
    for (size_t t = 0; t < N; t++) memcpy(dst + t * n, src + t * width + c0, n * sizeof *dst);
}

/* Embeddings of the tokens (scaled for Gemma; plus learned positions for GPT-2) into a->x. */
static mk_status embed(mk_nn_model *m, const int32_t *tok, size_t nseq, size_t T, acts *a)
{
    long e = m->g_idx[MK_ROLE_TOK_EMBED][0], p = m->g_idx[MK_ROLE_POS_EMBED][0];
    size_t H = m->H;
    void *scratch = mk_malloc(H * 8);
    if (!scratch) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    for (size_t t = 0; t < nseq * T && s == MK_OK; t++) { /* one row per token: no thread team for a row */
        if (tok[t] < 0 || (size_t)tok[t] >= m->V)
            s = mk_error(MK_ERR_USAGE, "token id %d is outside the model's vocabulary of %zu", tok[t], m->V);
        else s = mk_source_read_f32(m->src, (size_t)e, (uint64_t)tok[t] * H, H, a->x + t * H, scratch);
    }
    free(scratch);
    MK_TRY(s);
    if (m->def->embed_scale) { /* Gemma: x * sqrt(hidden), the factor rounded to f32 */
        float sc = (float)sqrt((double)H);
        for (size_t i = 0; i < nseq * T * H; i++) a->x[i] *= sc;
    }
    if (p >= 0) {
        if ((int64_t)T > m->src->tensors[p].shape[0])
            return mk_error(MK_ERR_USAGE, "%s: a window of %zu tokens is longer than the model's %lld positions", m->src->path, T,
                            (long long)m->src->tensors[p].shape[0]);
        MK_TRY(mk_nn_read(m, (size_t)p, 0, T * H, a->h));
        for (size_t q = 0; q < nseq; q++) mk_nn_add(a->x + q * T * H, a->h, T * H);
    }
    return MK_OK;
}

/* a->q, a->k, a->v from the normed a->h. */
static void qkv(const mk_nn_model *m, const nn_layer *w, size_t N, acts *a)
{
    size_t H = m->H, q = m->nh * m->hd, kv = m->nkv * m->hd;
    if (w->w[MK_ROLE_QKV][0]) {
        linear(m, w, MK_ROLE_QKV, a->h, N, H, q + 2 * kv, a->g);
        take_cols(a->g, N, q + 2 * kv, 0, q, a->q);
        take_cols(a->g, N, q + 2 * kv, q, kv, a->k);
        take_cols(a->g, N, q + 2 * kv, q + kv, kv, a->v);
    } else {
        linear(m, w, MK_ROLE_Q, a->h, N, H, q, a->q);
        linear(m, w, MK_ROLE_K, a->h, N, H, kv, a->k);
        linear(m, w, MK_ROLE_V, a->h, N, H, kv, a->v);
    }
    float eps = (float)m->cfg->norm_eps;
    if (w->w[MK_ROLE_Q_NORM][0]) mk_nn_rmsnorm(a->q, a->q, w->w[MK_ROLE_Q_NORM][0], N * m->nh, m->hd, eps, false);
    if (w->w[MK_ROLE_K_NORM][0]) mk_nn_rmsnorm(a->k, a->k, w->w[MK_ROLE_K_NORM][0], N * m->nkv, m->hd, eps, false);
}

static void attention_block(const mk_nn_model *m, const nn_layer *w, size_t l, size_t nseq, size_t T,
                            const mk_nn_rope_tab *rope, acts *a)
{
    size_t N = nseq * T, H = m->H, q = m->nh * m->hd, kv = m->nkv * m->hd;
    const mk_model_config *c = m->cfg;
    norm(m, w, MK_ROLE_ATTN_NORM, a->h, a->x, N, H);
    qkv(m, w, N, a);
    long window = mk_model_config_sliding(c, (long)l) ? c->sliding_window : 0;
    for (size_t s = 0; s < nseq; s++) {
        if (rope) {
            mk_nn_rope_apply(a->q + s * T * q, T, m->nh, m->hd, rope);
            mk_nn_rope_apply(a->k + s * T * kv, T, m->nkv, m->hd, rope);
        }
        mk_nn_attention(a->q + s * T * q, a->k + s * T * kv, a->v + s * T * kv, T, m->nh, m->nkv, m->hd, (float)c->query_scale,
                        (float)c->attn_softcap, window, a->att + s * T * q, a->scratch);
    }
    linear(m, w, MK_ROLE_O, a->att, N, q, H, a->o);
    if (w->w[MK_ROLE_ATTN_POST_NORM][0]) norm(m, w, MK_ROLE_ATTN_POST_NORM, a->o, a->o, N, H);
    mk_nn_add(a->x, a->o, N * H);
}

static mk_status mlp_block(mk_nn_model *m, const nn_layer *w, size_t l, size_t N, acts *a)
{
    size_t H = m->H, F = m->F;
    norm(m, w, MK_ROLE_MLP_NORM, a->h, a->x, N, H);
    if (w->w[MK_ROLE_ROUTER][0]) { /* a mixture-of-experts layer (nn/moe.c) */
        MK_TRY(mk_nn_moe_mlp(m, l, w, N, a->h, a->o));
        mk_nn_add(a->x, a->o, N * H);
        return MK_OK;
    }
    if (w->w[MK_ROLE_GATE_UP][0]) { /* Phi-3: [gate; up] rows, gate first */
        linear(m, w, MK_ROLE_GATE_UP, a->h, N, H, 2 * F, a->g);
        for (size_t t = 0; t < N; t++) mk_nn_act_gated(m->cfg->act, a->g + t * 2 * F, a->g + t * 2 * F + F, a->u + t * F, F);
    } else if (m->def->gated_mlp) {
        linear(m, w, MK_ROLE_GATE, a->h, N, H, F, a->g);
        linear(m, w, MK_ROLE_UP, a->h, N, H, F, a->u);
        mk_nn_act_gated(m->cfg->act, a->g, a->u, a->u, N * F);
    } else {
        linear(m, w, MK_ROLE_UP, a->h, N, H, F, a->u);
        mk_nn_act(m->cfg->act, a->u, N * F);
    }
    linear(m, w, MK_ROLE_DOWN, a->u, N, F, H, a->o);
    if (w->w[MK_ROLE_MLP_POST_NORM][0]) norm(m, w, MK_ROLE_MLP_POST_NORM, a->o, a->o, N, H);
    mk_nn_add(a->x, a->o, N * H);
    return MK_OK;
}

/* The final norm's weights (outside the layers) as a one-off nn_layer. */
static mk_status final_norm(mk_nn_model *m, size_t N, acts *a, float *hidden)
{
    nn_layer fw = {0};
    size_t H = m->H;
    float *buf = mk_malloc(2 * H * sizeof(float));
    if (!buf) return MK_ERR_NOMEM;
    mk_status s = mk_nn_read(m, (size_t)m->g_idx[MK_ROLE_FINAL_NORM][0], 0, H, buf);
    fw.w[MK_ROLE_FINAL_NORM][0] = buf;
    if (s == MK_OK && m->g_idx[MK_ROLE_FINAL_NORM][1] >= 0) {
        s = mk_nn_read(m, (size_t)m->g_idx[MK_ROLE_FINAL_NORM][1], 0, H, buf + H);
        fw.w[MK_ROLE_FINAL_NORM][1] = buf + H;
    }
    if (s == MK_OK) norm(m, &fw, MK_ROLE_FINAL_NORM, hidden, a->x, N, H);
    free(buf);
    return s;
}

mk_status mk_nn_forward(mk_nn_model *m, const int32_t *tok, size_t nseq, size_t T, float *hidden)
{
    return mk_nn_forward_hook(m, tok, nseq, T, hidden, NULL, NULL);
}

mk_status mk_nn_forward_hook(mk_nn_model *m, const int32_t *tok, size_t nseq, size_t T, float *hidden, mk_nn_layer_fn fn,
                             void *ctx)
{
    if (!nseq || !T) return MK_OK;
    size_t N = nseq * T;
    acts a;
    MK_TRY(acts_alloc(m, N, T, &a));
    mk_nn_rope_tab rope = {0};
    mk_status s = MK_OK;
    if (m->def->rotary) s = mk_nn_rope_init(&rope, &m->cfg->rope, m->hd, m->cfg->max_pos, T);
    if (s == MK_OK) s = embed(m, tok, nseq, T, &a);
    for (size_t l = 0; l < m->L && s == MK_OK; l++) {
        if (fn) fn(ctx, l, a.x, nseq, T, m->H);
        s = mk_nn_load_layer(m, l);
        if (s != MK_OK) break;
        m->cur_l = l;
        attention_block(m, &m->cur, l, nseq, T, m->def->rotary ? &rope : NULL, &a);
        s = mlp_block(m, &m->cur, l, N, &a);
    }
    if (s == MK_OK) s = final_norm(m, N, &a, hidden);
    mk_nn_rope_free(&rope);
    acts_free(&a);
    return s;
}

void mk_nn_set_linear_hook(mk_nn_model *m, mk_nn_linear_fn fn, void *ctx)
{
    m->lin_fn = fn;
    m->lin_ctx = ctx;
}

mk_status mk_nn_logits(mk_nn_model *m, const float *hidden, size_t n, float *logits)
{
    size_t H = m->H, V = m->V;
    size_t rows = HEAD_BLOCK_BYTES / (H * sizeof(float));
    if (rows < 1) rows = 1;
    if (rows > V) rows = V;
    float *blk = mk_malloc(rows * H * sizeof(float));
    if (!blk) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    for (size_t v0 = 0; v0 < V && s == MK_OK; v0 += rows) {
        size_t nr = V - v0 < rows ? V - v0 : rows;
        s = mk_nn_read(m, (size_t)m->head, (uint64_t)v0 * H, (uint64_t)nr * H, blk);
        if (s != MK_OK) break;
        mk_nn_linear_into(hidden, n, H, blk, nr, logits + v0, V);
    }
    free(blk);
    double cap = m->cfg->final_softcap;
    if (s == MK_OK && cap > 0)
        for (size_t i = 0; i < n * V; i++) logits[i] = (float)cap * tanhf(logits[i] / (float)cap);
    return s;
}
