/* backward.c - see backward.h. Follows transformers' LlamaDecoderLayer (MistralDecoderLayer,
 * Qwen2DecoderLayer, Qwen3DecoderLayer: q/k norms per head before RoPE; GemmaDecoderLayer:
 * GeGLU, (1 + w) norms, embeddings times sqrt(hidden)) and its autograd. */
#include "backward.h"

#include "nn_int.h"
#include "ops_bwd.h"

#include "../core/mk_dtype.h"
#include "../core/mk_rng.h"
#include "../core/mk_thread.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

#define COLS 256      /* outputs per work item of a forward product (fixed: same bytes at any -j) */
#define HEAD_ROWS 256 /* logit rows computed at once */

/* Weight pointers of one layer (or of its gradients: the same offsets). */
typedef struct lw {
    float *w[MK_ROLE_COUNT][2];
} lw;

struct mk_nn_train {
    mk_nn_model *m;
    size_t H, nh, nkv, hd, F, V, L, q, kv;
    float eps, scale;
    size_t np;
    mk_nn_param *p;
    uint64_t numel;
    float *wt, *gr;
    lw *lw, *lg;           /* [L] */
    float *emb, *fnorm, *head, *demb, *dfnorm, *dhead;
    float *arena;          /* a pass's buffers, kept between passes (no page faults per step) */
    size_t arena_cap;      /* floats */
    /* LoRA (mk_nn_train_lora): adapters A [r, in], B [out, r] on the target roles; the base
     * is frozen (no gradient buffer), the trained tensors are the adapters */
    size_t lr, n_targets;
    float ls;
    lw *la, *lb, *dla, *dlb; /* [L] */
    mk_nn_param *lp;
    size_t nlp;
    uint64_t lnumel;
    float *lwt, *lgr;
    /* held projections (mk_nn_train_open_held): not in wt; layer l's are filled into lscr
     * (the same offsets for every layer) before its forward or backward */
    mk_nn_held held;
    bool has_held;
    float *lscr;
    long cur_layer;
    /* mixed precision (mk_nn_train_set_bf16): the products read bf16-rounded weights: wb, a
     * copy of wt rounded at each pass (full finetuning), or the frozen base rounded in place
     * (LoRA; a tied head's in headb), and the adapters rounded at each pass into lwb */
    bool bf16;
    float *wb, *headb, *lwb;
    const int32_t *tgt; /* mk_nn_train_pass_targets: the targets of the pass (NULL: the next tokens) */
    /* gemma: the norms scale by (1 + w) (w1p: scratch of H floats for it), the MLP is GeGLU,
     * the embeddings are multiplied by emb_scale (1 otherwise) */
    bool one_plus, geglu;
    float emb_scale, *w1p;
};

/* One layer's saved activations, N = nseq * T rows. */
typedef struct acts {
    float *h1, *qpre, *kpre, *q, *k, *v, *p, *att, *xmid, *h2, *g, *u, *a;
    float *xa[MK_ROLE_COUNT]; /* LoRA: x A^T of each adapted projection */
} acts;

/* Backward scratch. */
typedef struct grads {
    float *dh, *dq, *dqp, *dk, *dkp, *dv, *datt, *da, *dg, *du, *rstd, *logit, *att;
    float *lys, *lxa; /* LoRA: the scaled output gradient [N, out], and x A^T's [N, r] */
    float *dyb, *dn, *lin, *attb; /* bf16: a rounded output gradient [N, H], q/k norms' [N, q], scratch */
    double *nll;
} grads;

static bool supported(const char *name)
{
    return !strcmp(name, "llama") || !strcmp(name, "mistral") || !strcmp(name, "qwen2") || !strcmp(name, "qwen3") ||
           !strcmp(name, "gemma");
}

mk_status mk_nn_train_check(const mk_source *src, const mk_model_config *cfg)
{
    const mk_arch_def *d = cfg->arch.def;
    if (d && !supported(d->name))
        return mk_error(MK_ERR_UNSUPPORTED, "%s: finetune has no backward pass for %s yet (%s); it trains llama, mistral, qwen2, "
                                            "qwen3 and gemma", src->path, d->name,
                        d->norm == MK_NORM_LAYER ? "LayerNorm"
                        : !strcmp(d->name, "gemma2") ? "soft-capping and sandwich norms"
                        : !d->rotary ? "learned positions"
                        : !d->gated_mlp ? "a plain MLP"
                                        : "fused qkv and gate_up projections");
    if (cfg->attn_softcap > 0 || cfg->final_softcap > 0)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: finetune has no backward pass for soft-capped attention or logits", src->path);
    bool gemma = d && !strcmp(d->name, "gemma");
    if (gemma && cfg->act != MK_ACT_GELU_TANH)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: finetune's gemma MLP backward is GeGLU with gelu_pytorch_tanh; this model's "
                                            "activation is %s", src->path, cfg->act_name[0] ? cfg->act_name : "another");
    if (d && !gemma && cfg->act != MK_ACT_SILU)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: finetune's MLP backward is SwiGLU; this model's activation is %s", src->path,
                        cfg->act_name[0] ? cfg->act_name : "another");
    return MK_OK;
}

static bool is_proj(int r)
{
    return r == MK_ROLE_Q || r == MK_ROLE_K || r == MK_ROLE_V || r == MK_ROLE_O || r == MK_ROLE_GATE || r == MK_ROLE_UP ||
           r == MK_ROLE_DOWN;
}

static mk_status train_open(mk_source *src, const mk_model_config *cfg, const mk_nn_held *held, mk_nn_train **out);

mk_status mk_nn_train_open(mk_source *src, const mk_model_config *cfg, mk_nn_train **out)
{
    return train_open(src, cfg, NULL, out);
}

mk_status mk_nn_train_open_held(mk_source *src, const mk_model_config *cfg, const mk_nn_held *held, mk_nn_train **out)
{
    return train_open(src, cfg, held, out);
}

/* Held projections: the per-layer scratch and its offsets (layer 0's; every layer must have
 * the same projections with the same sizes). */
static mk_status held_bind(mk_nn_train *t)
{
    mk_nn_model *m = t->m;
    uint64_t off[MK_ROLE_COUNT] = {0}, total = 0;
    for (int r = 0; r < MK_ROLE_COUNT; r++)
        if (is_proj(r) && m->idx[0][r][0] >= 0) off[r] = total, total += m->src->tensors[m->idx[0][r][0]].numel;
    for (size_t l = 1; l < t->L; l++)
        for (int r = 0; r < MK_ROLE_COUNT; r++) {
            if (!is_proj(r)) continue;
            long a = m->idx[0][r][0], b = m->idx[l][r][0];
            if ((a < 0) != (b < 0) || (a >= 0 && m->src->tensors[a].numel != m->src->tensors[b].numel))
                return mk_error(MK_ERR_UNSUPPORTED, "%s: layer %zu's projections differ from layer 0's; a quantized base needs "
                                                    "layers of one shape", m->src->path, l);
        }
    if (!(t->lscr = mk_malloc((total ? total : 1) * sizeof(float)))) return MK_ERR_NOMEM;
    for (size_t l = 0; l < t->L; l++)
        for (int r = 0; r < MK_ROLE_COUNT; r++)
            if (is_proj(r) && m->idx[l][r][0] >= 0) t->lw[l].w[r][0] = t->lscr + off[r], t->lg[l].w[r][0] = NULL;
    t->cur_layer = -1;
    return MK_OK;
}

/* Fill the scratch with layer l's held projections (nothing when they are there already). */
static mk_status held_load(mk_nn_train *t, size_t l)
{
    if (!t->has_held || t->cur_layer == (long)l) return MK_OK;
    t->cur_layer = -1;
    for (int r = 0; r < MK_ROLE_COUNT; r++) {
        long i = is_proj(r) ? t->m->idx[l][r][0] : -1;
        if (i < 0) continue;
        MK_TRY(t->held.fill(t->held.ctx, (size_t)i, t->lw[l].w[r][0], t->m->src->tensors[i].numel));
        if (t->bf16) mk_nn_round_bf16(t->lw[l].w[r][0], t->m->src->tensors[i].numel);
    }
    t->cur_layer = (long)l;
    return MK_OK;
}

uint64_t mk_nn_train_held_scratch(const mk_model_config *c)
{
    uint64_t H = (uint64_t)c->hidden, q = (uint64_t)(c->heads * c->head_dim), kv = (uint64_t)(c->kv_heads * c->head_dim);
    uint64_t F = (uint64_t)c->intermediate;
    return 4 * (H * q + 2 * H * kv + q * H + 3 * H * F);
}

static mk_status train_open(mk_source *src, const mk_model_config *cfg, const mk_nn_held *held, mk_nn_train **out)
{
    *out = NULL;
    MK_TRY(mk_nn_train_check(src, cfg));
    mk_nn_train *t = mk_calloc(1, sizeof *t);
    if (!t) return MK_ERR_NOMEM;
    mk_status s = mk_nn_open(src, cfg, &t->m);
    if (s != MK_OK) {
        free(t);
        return s;
    }
    mk_nn_model *m = t->m;
    t->H = m->H, t->nh = m->nh, t->nkv = m->nkv, t->hd = m->hd, t->F = m->F, t->V = m->V, t->L = m->L;
    t->q = t->nh * t->hd, t->kv = t->nkv * t->hd;
    t->eps = (float)cfg->norm_eps;
    t->scale = (float)cfg->query_scale;
    t->one_plus = m->def->norm == MK_NORM_RMS_1P, t->geglu = cfg->act == MK_ACT_GELU_TANH;
    t->emb_scale = m->def->embed_scale ? (float)sqrt((double)t->H) : 1.0f; /* as nn/forward.c */
    /* the trained tensors: those bound, in source order */
    long *slot_of = mk_malloc((src->n_tensors ? src->n_tensors : 1) * sizeof *slot_of);
    t->p = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *t->p);
    t->lw = mk_calloc(t->L ? t->L : 1, sizeof *t->lw);
    t->lg = mk_calloc(t->L ? t->L : 1, sizeof *t->lg);
    if (!slot_of || !t->p || !t->lw || !t->lg) {
        free(slot_of);
        mk_nn_train_close(t);
        return MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < src->n_tensors; i++) slot_of[i] = -1;
    for (size_t l = 0; l < t->L; l++)
        for (int r = 0; r < MK_ROLE_COUNT; r++)
            for (int b = 0; b < 2; b++)
                if (m->idx[l][r][b] >= 0 && !(held && b == 0 && is_proj(r))) slot_of[m->idx[l][r][b]] = 1;
    for (int r = 0; r < MK_ROLE_COUNT; r++)
        for (int b = 0; b < 2; b++)
            if (m->g_idx[r][b] >= 0) slot_of[m->g_idx[r][b]] = 1;
    for (size_t i = 0; i < src->n_tensors; i++) {
        if (slot_of[i] < 0) continue;
        const mk_tensor_info *ti = &src->tensors[i];
        t->p[t->np] = (mk_nn_param){i, t->numel, ti->numel, ti->ndim == 2, ti->name};
        slot_of[i] = (long)t->np++;
        t->numel += ti->numel;
    }
    t->wt = mk_malloc(t->numel * sizeof(float));
    t->gr = mk_calloc(t->numel, sizeof(float));
    t->w1p = mk_malloc((t->H ? t->H : 1) * sizeof(float));
    s = t->wt && t->gr && t->w1p ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < t->np && s == MK_OK; i++) s = mk_nn_read(m, t->p[i].src_index, 0, t->p[i].numel, t->wt + t->p[i].off);
    if (s == MK_OK) {
#define AT(buf, idx) ((idx) >= 0 && slot_of[idx] >= 0 ? (buf) + t->p[slot_of[idx]].off : NULL) /* held: bound later */
        for (size_t l = 0; l < t->L; l++)
            for (int r = 0; r < MK_ROLE_COUNT; r++)
                for (int b = 0; b < 2; b++) {
                    t->lw[l].w[r][b] = AT(t->wt, m->idx[l][r][b]);
                    t->lg[l].w[r][b] = AT(t->gr, m->idx[l][r][b]);
                }
        t->emb = AT(t->wt, m->g_idx[MK_ROLE_TOK_EMBED][0]), t->demb = AT(t->gr, m->g_idx[MK_ROLE_TOK_EMBED][0]);
        t->fnorm = AT(t->wt, m->g_idx[MK_ROLE_FINAL_NORM][0]), t->dfnorm = AT(t->gr, m->g_idx[MK_ROLE_FINAL_NORM][0]);
        t->head = AT(t->wt, m->head), t->dhead = AT(t->gr, m->head);
#undef AT
    }
    if (s == MK_OK && held) t->held = *held, t->has_held = true, s = held_bind(t);
    free(slot_of);
    if (s != MK_OK) {
        mk_nn_train_close(t);
        return s;
    }
    *out = t;
    return MK_OK;
}

void mk_nn_train_close(mk_nn_train *t)
{
    if (!t) return;
    mk_nn_close(t->m);
    free(t->p), free(t->wt), free(t->gr), free(t->lw), free(t->lg), free(t->arena), free(t->lscr);
    for (size_t i = 0; i < t->nlp; i++) free((char *)t->lp[i].name);
    free(t->la), free(t->lb), free(t->dla), free(t->dlb), free(t->lp), free(t->lwt), free(t->lgr);
    free(t->wb), free(t->headb), free(t->lwb), free(t->w1p);
    free(t);
}

size_t mk_nn_train_n_params(const mk_nn_train *t) { return t->lr ? t->nlp : t->np; }
const mk_nn_param *mk_nn_train_param(const mk_nn_train *t, size_t i) { return t->lr ? &t->lp[i] : &t->p[i]; }
uint64_t mk_nn_train_numel(const mk_nn_train *t) { return t->lr ? t->lnumel : t->numel; }
float *mk_nn_train_weights(mk_nn_train *t) { return t->lr ? t->lwt : t->wt; }
float *mk_nn_train_grads(mk_nn_train *t) { return t->lr ? t->lgr : t->gr; }
const float *mk_nn_train_frozen(const mk_nn_train *t, uint64_t *n)
{
    *n = t->lr ? t->numel : 0;
    return t->lr ? t->wt : NULL;
}
size_t mk_nn_train_vocab(const mk_nn_train *t) { return t->V; }
const mk_model_config *mk_nn_train_config(const mk_nn_train *t) { return t->m->cfg; }
long mk_nn_train_src_index(const mk_nn_train *t, long layer, mk_role r)
{
    return layer >= 0 && (size_t)layer < t->L && r < MK_ROLE_COUNT ? t->m->idx[layer][r][0] : -1;
}
const mk_nn_held *mk_nn_train_held(const mk_nn_train *t) { return t->has_held ? &t->held : NULL; }
int64_t mk_nn_train_offset(const mk_nn_train *t, long layer, mk_role r, bool bias)
{
    const float *p = NULL;
    if (layer >= 0 && (size_t)layer < t->L && r < MK_ROLE_COUNT && !(t->has_held && !bias && is_proj(r)))
        p = t->lw[layer].w[r][bias];
    else if (layer == -1 && !bias)
        p = r == MK_ROLE_TOK_EMBED ? t->emb : r == MK_ROLE_FINAL_NORM ? t->fnorm : r == MK_ROLE_LM_HEAD ? t->head : NULL;
    return p ? (int64_t)(p - t->wt) : -1;
}

/* Floats of one layer's saved activations. */
static uint64_t acts_floats(uint64_t H, uint64_t q, uint64_t kv, uint64_t F, uint64_t nh, uint64_t N, uint64_t nseq, uint64_t T)
{
    return N * (3 * H + 3 * q + 3 * kv + 3 * F) + nseq * nh * T * T;
}

static uint64_t grads_floats(uint64_t H, uint64_t q, uint64_t kv, uint64_t F, uint64_t nh, uint64_t V, uint64_t N)
{
    return N * (H + 3 * q + 3 * kv + 3 * F + nh) + (uint64_t)HEAD_ROWS * V + 2 * HEAD_ROWS;
}

/* Floats of the bf16 scratch: a rounded output gradient, the q/k norms' gradient, the
 * products' and attention's per-thread scratch (mk_nn_linear_bwd_bf16_scratch,
 * mk_nn_attention_bf16_scratch). */
static uint64_t bf16_floats(uint64_t H, uint64_t q, uint64_t F, uint64_t hd, uint64_t N, uint64_t T, uint64_t r)
{
    uint64_t in = H > q ? H : q;
    in = in > F ? in : F, in = in > r ? in : r;
    return N * H + N * q + mk_nn_linear_bwd_bf16_scratch(N > HEAD_ROWS ? N : HEAD_ROWS, in) +
           mk_nn_attention_bf16_scratch(T, hd);
}

uint64_t mk_nn_train_act_bytes(const mk_model_config *c, size_t nseq, size_t T, bool checkpointing, uint64_t lora_cols,
                               bool bf16)
{
    uint64_t H = (uint64_t)c->hidden, nh = (uint64_t)c->heads, q = nh * (uint64_t)c->head_dim;
    uint64_t kv = (uint64_t)c->kv_heads * (uint64_t)c->head_dim, F = (uint64_t)c->intermediate, L = (uint64_t)c->layers;
    uint64_t N = (uint64_t)nseq * T, f = (acts_floats(H, q, kv, F, nh, N, nseq, T) + N * lora_cols) * (checkpointing ? 1 : L);
    if (lora_cols) f += N * (F > H ? F : H) + N * lora_cols; /* the LoRA scratch */
    f += (L + 3) * N * H + grads_floats(H, q, kv, F, nh, (uint64_t)c->vocab, N);
    f += (uint64_t)mk_threads_get() * T * T; /* attention's backward, per work item */
    if (bf16) f += bf16_floats(H, q, F, (uint64_t)c->head_dim, N, T, lora_cols);
    return 4 * f;
}

/* Carve the activation buffers of one layer out of `base` (advanced). */
static void acts_at(const mk_nn_train *t, size_t N, size_t nseq, size_t T, float **base, acts *a)
{
    float *b = *base;
#define TAKE(f, n) (a->f = b, b += (n))
    TAKE(h1, N * t->H), TAKE(qpre, N * t->q), TAKE(kpre, N * t->kv), TAKE(q, N * t->q), TAKE(k, N * t->kv);
    TAKE(v, N * t->kv), TAKE(p, nseq * t->nh * T * T), TAKE(att, N * t->q), TAKE(xmid, N * t->H), TAKE(h2, N * t->H);
    TAKE(g, N * t->F), TAKE(u, N * t->F), TAKE(a, N * t->F);
    for (int r = 0; r < MK_ROLE_COUNT; r++) a->xa[r] = NULL;
    for (int r = 0; t->lr && r < MK_ROLE_COUNT; r++)
        if (t->la[0].w[r][0]) TAKE(xa[r], N * t->lr);
#undef TAKE
    *base = b;
}

/* y[T, out] = x W^T (+ b), in blocks of COLS outputs (each packs its rows of W once). */
static void lin(const float *x, size_t T, size_t in, const float *w, const float *b, size_t out, float *y)
{
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t c = 0; c < (out + COLS - 1) / COLS; c++) {
        size_t o0 = c * COLS, n = out - o0 < COLS ? out - o0 : COLS;
        if (b)
            for (size_t i = 0; i < T; i++) memcpy(y + i * out + o0, b + o0, n * sizeof *y);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)in, 1.0f, x, (int)in, w + o0 * in, (int)in,
                    b ? 1.0f : 0.0f, y + o0, (int)out);
    }
}

/* The weight (b = 1: bias) of role r of layer l as the products read it: bf16-rounded in
 * mixed precision (wb at wt's offsets in full finetuning; rounded in place under LoRA). */
static const float *mw(const mk_nn_train *t, size_t l, mk_role r, int b)
{
    const float *w = t->lw[l].w[r][b];
    return w && t->wb ? t->wb + (w - t->wt) : w;
}

static const float *mhead(const mk_nn_train *t)
{
    return t->wb ? t->wb + (t->head - t->wt) : t->headb ? t->headb : t->head;
}

/* A LoRA adapter (A or B of role r, layer l) as the products read it. */
static const float *madapter(const mk_nn_train *t, const lw *ab, size_t l, mk_role r)
{
    const float *w = ab[l].w[r][0];
    return w && t->lwb ? t->lwb + (w - t->lwt) : w;
}

/* y = x W^T (+ b), plus s (x A^T) B^T when role r of layer l has a LoRA adapter (as PEFT's
 * LoraLayer: base(x) + lora_B(lora_A(x)) * scaling); x A^T kept in xa, tmp [N, out]. In bf16,
 * each product's output and the scaled sum rounded. */
static void proj(const mk_nn_train *t, size_t l, mk_role r, const float *x, size_t N, size_t in, size_t out, float *y,
                 float *xa, float *tmp)
{
    lin(x, N, in, mw(t, l, r, 0), mw(t, l, r, 1), out, y);
    if (t->bf16) mk_nn_round_bf16(y, N * out);
    const float *A = t->lr ? madapter(t, t->la, l, r) : NULL;
    if (!A) return;
    lin(x, N, in, A, NULL, t->lr, xa);
    if (t->bf16) mk_nn_round_bf16(xa, N * t->lr);
    lin(xa, N, t->lr, madapter(t, t->lb, l, r), NULL, out, tmp);
    float s = t->ls;
    if (t->bf16) {
        mk_nn_round_bf16(tmp, N * out);
        MK_OMP("omp parallel for schedule(static) if (N * out > 65536)")
        for (size_t i = 0; i < N * out; i++) y[i] = mk_dtype_round(MK_BF16, y[i] + mk_dtype_round(MK_BF16, tmp[i] * s));
        return;
    }
    MK_OMP("omp parallel for schedule(static) if (N * out > 65536)")
    for (size_t i = 0; i < N * out; i++) y[i] += tmp[i] * s;
}

/* The backward of proj: dx += ..., the base's dW and db (when it trains), the adapter's. */
static void proj_bwd(mk_nn_train *t, size_t l, mk_role r, const float *x, size_t N, size_t in, size_t out, const float *dy,
                     float *dx, const float *xa, grads *g)
{
    if (t->bf16) { /* o_proj's and down_proj's inputs are bf16 tensors: their gradients sum in bf16 */
        bool xb = r == MK_ROLE_O || r == MK_ROLE_DOWN;
        mk_nn_linear_bwd_bf16(x, N, in, mw(t, l, r, 0), out, dy, dx, xb, t->lg[l].w[r][0], t->lg[l].w[r][1], g->lin);
        if (!t->lr || !t->la[l].w[r][0]) return;
        float s = t->ls;
        MK_OMP("omp parallel for schedule(static) if (N * out > 65536)")
        for (size_t i = 0; i < N * out; i++) g->lys[i] = mk_dtype_round(MK_BF16, dy[i] * s);
        memset(g->lxa, 0, N * t->lr * sizeof(float));
        mk_nn_linear_bwd_bf16(xa, N, t->lr, madapter(t, t->lb, l, r), out, g->lys, g->lxa, true, t->dlb[l].w[r][0], NULL, g->lin);
        mk_nn_linear_bwd_bf16(x, N, in, madapter(t, t->la, l, r), t->lr, g->lxa, dx, xb, t->dla[l].w[r][0], NULL, g->lin);
        return;
    }
    mk_nn_linear_bwd(x, N, in, t->lw[l].w[r][0], out, dy, dx, t->lg[l].w[r][0], t->lg[l].w[r][1]);
    const float *A = t->lr ? t->la[l].w[r][0] : NULL;
    if (!A) return;
    float s = t->ls;
    MK_OMP("omp parallel for schedule(static) if (N * out > 65536)")
    for (size_t i = 0; i < N * out; i++) g->lys[i] = dy[i] * s;
    memset(g->lxa, 0, N * t->lr * sizeof(float));
    mk_nn_linear_bwd(xa, N, t->lr, t->lb[l].w[r][0], out, g->lys, g->lxa, t->dlb[l].w[r][0], NULL);
    mk_nn_linear_bwd(x, N, in, A, t->lr, g->lxa, dx, t->dla[l].w[r][0], NULL);
}

/* A per-head norm (qwen3's q/k norms) of N * nh rows; in bf16 of a bf16 tensor. */
static void head_norm(const mk_nn_train *t, float *out, const float *x, const float *w, size_t rows)
{
    if (t->bf16) mk_nn_rmsnorm_bf16(out, x, w, rows, t->hd, t->eps);
    else mk_nn_rmsnorm(out, x, w, rows, t->hd, t->eps, false);
}

/* The hidden-size RMSNorm of the layers and the final one: w, or (1 + w) for gemma. */
static void norm_fwd(const mk_nn_train *t, float *out, const float *x, const float *w, size_t N)
{
    mk_nn_rmsnorm(out, x, w, N, t->H, t->eps, t->one_plus);
}

/* Its backward: d(1 + w) = dw, so the kernel runs with the factor (1 + w) and the same dw. */
static void norm_bwd(mk_nn_train *t, const float *x, const float *w, const float *dy, size_t N, float *dx, float *dw, float *rstd)
{
    if (t->one_plus) {
        for (size_t i = 0; i < t->H; i++) t->w1p[i] = 1.0f + w[i];
        w = t->w1p;
    }
    mk_nn_rmsnorm_bwd(x, w, dy, N, t->H, t->eps, dx, dw, rstd);
}

/* The gated MLP's activation (SwiGLU, or GeGLU for gemma) and its backward. */
static void mlp_act(const mk_nn_train *t, const float *g, const float *u, float *a, size_t n)
{
    if (t->geglu && t->bf16) mk_nn_geglu_bf16(g, u, a, n);
    else if (t->geglu) mk_nn_act_gated(MK_ACT_GELU_TANH, g, u, a, n);
    else if (t->bf16) mk_nn_swiglu_bf16(g, u, a, n);
    else mk_nn_act_gated(MK_ACT_SILU, g, u, a, n);
}

static void mlp_act_bwd(const mk_nn_train *t, const float *g, const float *u, const float *da, size_t n, float *dg, float *du)
{
    if (t->geglu && t->bf16) mk_nn_geglu_bwd_bf16(g, u, da, n, dg, du);
    else if (t->geglu) mk_nn_geglu_bwd(g, u, da, n, dg, du);
    else if (t->bf16) mk_nn_swiglu_bwd_bf16(g, u, da, n, dg, du);
    else mk_nn_swiglu_bwd(g, u, da, n, dg, du);
}

/* In bf16 the norms' outputs (f32) are rounded where a product reads them (autocast's cast),
 * and RoPE's f32 output where attention's products do; the rest as in f32. */
static void layer_forward(const mk_nn_train *t, size_t l, const float *xin, size_t nseq, size_t T, const mk_nn_rope_tab *rope,
                          acts *a, grads *g, float *xout)
{
    const lw *w = &t->lw[l];
    size_t N = nseq * T, H = t->H;
    float *tmp = g->lys;
    norm_fwd(t, a->h1, xin, w->w[MK_ROLE_ATTN_NORM][0], N);
    if (t->bf16) mk_nn_round_bf16(a->h1, N * H);
    proj(t, l, MK_ROLE_Q, a->h1, N, H, t->q, a->qpre, a->xa[MK_ROLE_Q], tmp);
    proj(t, l, MK_ROLE_K, a->h1, N, H, t->kv, a->kpre, a->xa[MK_ROLE_K], tmp);
    proj(t, l, MK_ROLE_V, a->h1, N, H, t->kv, a->v, a->xa[MK_ROLE_V], tmp);
    if (w->w[MK_ROLE_Q_NORM][0]) head_norm(t, a->q, a->qpre, w->w[MK_ROLE_Q_NORM][0], N * t->nh);
    else memcpy(a->q, a->qpre, N * t->q * sizeof(float));
    if (w->w[MK_ROLE_K_NORM][0]) head_norm(t, a->k, a->kpre, w->w[MK_ROLE_K_NORM][0], N * t->nkv);
    else memcpy(a->k, a->kpre, N * t->kv * sizeof(float));
    const mk_model_config *c = t->m->cfg;
    long window = mk_model_config_sliding(c, (long)l) ? c->sliding_window : 0;
    for (size_t s = 0; s < nseq; s++) {
        float *q = a->q + s * T * t->q, *k = a->k + s * T * t->kv, *v = a->v + s * T * t->kv, *o = a->att + s * T * t->q;
        mk_nn_rope_apply(q, T, t->nh, t->hd, rope);
        mk_nn_rope_apply(k, T, t->nkv, t->hd, rope);
        if (t->bf16) {
            mk_nn_round_bf16(q, T * t->q);
            mk_nn_round_bf16(k, T * t->kv);
            mk_nn_attention_train_bf16(q, k, v, T, t->nh, t->nkv, t->hd, t->scale, window, o, a->p + s * t->nh * T * T, g->attb);
        } else {
            mk_nn_attention_train(q, k, v, T, t->nh, t->nkv, t->hd, t->scale, window, o, a->p + s * t->nh * T * T);
        }
    }
    proj(t, l, MK_ROLE_O, a->att, N, t->q, H, a->xmid, a->xa[MK_ROLE_O], tmp);
    mk_nn_add(a->xmid, xin, N * H);
    norm_fwd(t, a->h2, a->xmid, w->w[MK_ROLE_MLP_NORM][0], N);
    if (t->bf16) mk_nn_round_bf16(a->h2, N * H);
    proj(t, l, MK_ROLE_GATE, a->h2, N, H, t->F, a->g, a->xa[MK_ROLE_GATE], tmp);
    proj(t, l, MK_ROLE_UP, a->h2, N, H, t->F, a->u, a->xa[MK_ROLE_UP], tmp);
    mlp_act(t, a->g, a->u, a->a, N * t->F);
    proj(t, l, MK_ROLE_DOWN, a->a, N, t->F, H, xout, a->xa[MK_ROLE_DOWN], tmp);
    mk_nn_add(xout, a->xmid, N * H);
}

/* The backward of head_norm over `rows` heads: dx = ... (returned), dw += ... */
static const float *head_norm_bwd(const mk_nn_train *t, const float *x, const float *w, const float *dy, size_t rows, float *dx,
                                  float *dw, grads *g)
{
    memset(dx, 0, rows * t->hd * sizeof(float));
    if (t->bf16) mk_nn_rmsnorm_bwd_bf16(x, w, dy, rows, t->hd, t->eps, dx, dw, g->rstd, g->dn);
    else mk_nn_rmsnorm_bwd(x, w, dy, rows, t->hd, t->eps, dx, dw, g->rstd);
    return dx;
}

/* dx: the gradient of the layer's output on entry, of its input on return. */
static void layer_backward(mk_nn_train *t, size_t l, const float *xin, size_t nseq, size_t T, const mk_nn_rope_tab *rope,
                                const acts *a, grads *g, float *dx)
{
    const lw *w = &t->lw[l];
    lw *d = &t->lg[l];
    size_t N = nseq * T, H = t->H, F = t->F;
    const float *dy = dx; /* the output gradient of o_proj and down_proj (bf16: rounded) */
    if (t->bf16) {
        for (size_t i = 0; i < N * H; i++) g->dyb[i] = mk_dtype_round(MK_BF16, dx[i]);
        dy = g->dyb;
    }
    memset(g->da, 0, N * F * sizeof(float));
    proj_bwd(t, l, MK_ROLE_DOWN, a->a, N, F, H, dy, g->da, a->xa[MK_ROLE_DOWN], g);
    mlp_act_bwd(t, a->g, a->u, g->da, N * F, g->dg, g->du);
    memset(g->dh, 0, N * H * sizeof(float));
    proj_bwd(t, l, MK_ROLE_GATE, a->h2, N, H, F, g->dg, g->dh, a->xa[MK_ROLE_GATE], g);
    proj_bwd(t, l, MK_ROLE_UP, a->h2, N, H, F, g->du, g->dh, a->xa[MK_ROLE_UP], g);
    norm_bwd(t, a->xmid, w->w[MK_ROLE_MLP_NORM][0], g->dh, N, dx, d->w[MK_ROLE_MLP_NORM][0], g->rstd);

    if (t->bf16)
        for (size_t i = 0; i < N * H; i++) g->dyb[i] = mk_dtype_round(MK_BF16, dx[i]);
    memset(g->datt, 0, N * t->q * sizeof(float));
    proj_bwd(t, l, MK_ROLE_O, a->att, N, t->q, H, dy, g->datt, a->xa[MK_ROLE_O], g);
    memset(g->dk, 0, N * t->kv * sizeof(float));
    memset(g->dv, 0, N * t->kv * sizeof(float));
    bool qn = w->w[MK_ROLE_Q_NORM][0] != NULL, kn = w->w[MK_ROLE_K_NORM][0] != NULL;
    for (size_t s = 0; s < nseq; s++) {
        size_t oq = s * T * t->q, ok = s * T * t->kv;
        const float *p = a->p + s * t->nh * T * T;
        if (t->bf16)
            mk_nn_attention_bwd_bf16(a->q + oq, a->k + ok, a->v + ok, p, g->datt + oq, T, t->nh, t->nkv, t->hd, t->scale,
                                     g->dq + oq, g->dk + ok, g->dv + ok, g->attb);
        else
            mk_nn_attention_bwd(a->q + oq, a->k + ok, a->v + ok, p, g->datt + oq, T, t->nh, t->nkv, t->hd, t->scale, g->dq + oq,
                                g->dk + ok, g->dv + ok, g->att);
        /* bf16: onto a bf16 q (k) when no norm sits between the projection and RoPE */
        if (t->bf16 && !qn) mk_nn_rope_bwd_bf16(g->dq + oq, T, t->nh, t->hd, rope);
        else mk_nn_rope_bwd(g->dq + oq, T, t->nh, t->hd, rope);
        if (t->bf16 && !kn) mk_nn_rope_bwd_bf16(g->dk + ok, T, t->nkv, t->hd, rope);
        else mk_nn_rope_bwd(g->dk + ok, T, t->nkv, t->hd, rope);
    }
    const float *dq = qn ? head_norm_bwd(t, a->qpre, w->w[MK_ROLE_Q_NORM][0], g->dq, N * t->nh, g->dqp, d->w[MK_ROLE_Q_NORM][0], g)
                         : g->dq;
    const float *dk = kn ? head_norm_bwd(t, a->kpre, w->w[MK_ROLE_K_NORM][0], g->dk, N * t->nkv, g->dkp, d->w[MK_ROLE_K_NORM][0], g)
                         : g->dk;
    memset(g->dh, 0, N * H * sizeof(float));
    proj_bwd(t, l, MK_ROLE_Q, a->h1, N, H, t->q, dq, g->dh, a->xa[MK_ROLE_Q], g);
    proj_bwd(t, l, MK_ROLE_K, a->h1, N, H, t->kv, dk, g->dh, a->xa[MK_ROLE_K], g);
    proj_bwd(t, l, MK_ROLE_V, a->h1, N, H, t->kv, g->dv, g->dh, a->xa[MK_ROLE_V], g);
    norm_bwd(t, xin, w->w[MK_ROLE_ATTN_NORM][0], g->dh, N, dx, d->w[MK_ROLE_ATTN_NORM][0], g->rstd);
}

/* Logits, loss and their gradient in blocks of HEAD_ROWS rows: dhf += dlogits W, dW += ... */
static void head_pass(mk_nn_train *t, const float *hf, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale,
                      bool backward, grads *g, float *dhf, double *wnll, float *logits_out)
{
    size_t N = nseq * T, V = t->V, H = t->H;
    int32_t tgt[HEAD_ROWS];
    float wt[HEAD_ROWS];
    double sum = 0;
    for (size_t r0 = 0; r0 < N; r0 += HEAD_ROWS) {
        size_t n = N - r0 < HEAD_ROWS ? N - r0 : HEAD_ROWS;
        for (size_t i = 0; i < n; i++) {
            size_t row = r0 + i, j = row % T;
            bool last = j + 1 == T;
            tgt[i] = last ? 0 : t->tgt ? t->tgt[row + 1] : tok[row + 1];
            wt[i] = last ? 0.0f : w[row + 1];
        }
        lin(hf + r0 * H, n, H, mhead(t), NULL, V, g->logit);
        if (t->bf16) mk_nn_round_bf16(g->logit, n * V); /* bf16 logits, the loss in f32 */
        if (logits_out) memcpy(logits_out + r0 * V, g->logit, n * V * sizeof(float));
        mk_nn_xent(g->logit, n, V, tgt, wt, scale, g->nll);
        for (size_t i = 0; i < n; i++)
            if (wt[i] != 0) sum += (double)wt[i] * g->nll[i];
        if (backward && t->bf16) {
            mk_nn_round_bf16(g->logit, n * V);
            mk_nn_linear_bwd_bf16(hf + r0 * H, n, H, mhead(t), V, g->logit, dhf + r0 * H, false, t->dhead, NULL, g->lin);
        } else if (backward) {
            mk_nn_linear_bwd(hf + r0 * H, n, H, t->head, V, g->logit, dhf + r0 * H, t->dhead, NULL);
        }
    }
    *wnll += sum;
}

/* Carve the backward scratch out of `b`. */
static void grads_at(const mk_nn_train *t, size_t N, size_t T, float *b, grads *g)
{
#define TAKE(f, n) (g->f = b, b += (n))
    TAKE(dh, N * t->H), TAKE(dq, N * t->q), TAKE(dqp, N * t->q), TAKE(datt, N * t->q), TAKE(dk, N * t->kv), TAKE(dkp, N * t->kv);
    TAKE(dv, N * t->kv), TAKE(da, N * t->F), TAKE(dg, N * t->F), TAKE(du, N * t->F), TAKE(rstd, N * t->nh);
    TAKE(logit, (size_t)HEAD_ROWS * t->V), TAKE(att, mk_nn_attention_bwd_scratch(T));
    TAKE(lys, t->lr ? N * (t->F > t->H ? t->F : t->H) : 0), TAKE(lxa, N * t->lr);
    if (t->bf16) {
        size_t in = t->H > t->q ? t->H : t->q;
        in = in > t->F ? in : t->F, in = in > t->lr ? in : t->lr;
        TAKE(dyb, N * t->H), TAKE(dn, N * t->q), TAKE(lin, mk_nn_linear_bwd_bf16_scratch(N > HEAD_ROWS ? N : HEAD_ROWS, in));
        TAKE(attb, mk_nn_attention_bf16_scratch(T, t->hd));
    }
#undef TAKE
    g->nll = (double *)(void *)b;
}

/* The trained weights rounded for the products, before each pass (they change each step). */
static void bf16_refresh(mk_nn_train *t)
{
    if (t->wb) {
        MK_OMP("omp parallel for schedule(static) if (t->numel > 65536)")
        for (uint64_t i = 0; i < t->numel; i++) t->wb[i] = mk_dtype_round(MK_BF16, t->wt[i]);
    }
    if (t->lwb) {
        MK_OMP("omp parallel for schedule(static) if (t->lnumel > 65536)")
        for (uint64_t i = 0; i < t->lnumel; i++) t->lwb[i] = mk_dtype_round(MK_BF16, t->lwt[i]);
    }
}

mk_status mk_nn_train_set_bf16(mk_nn_train *t)
{
    if (t->bf16) return MK_OK;
    if (!t->lr) { /* full finetuning: a rounded copy of the weights, refreshed at each pass */
        if (!(t->wb = mk_malloc((t->numel ? t->numel : 1) * sizeof(float)))) return MK_ERR_NOMEM;
    } else { /* the frozen base rounded once, in place (a tied head: a rounded copy) */
        if (!(t->lwb = mk_malloc((t->lnumel ? t->lnumel : 1) * sizeof(float)))) return MK_ERR_NOMEM;
        for (size_t l = 0; l < t->L; l++)
            for (int r = 0; r < MK_ROLE_COUNT; r++)
                for (int b = 0; b < 2 && is_proj(r); b++) {
                    long i = t->m->idx[l][r][b];
                    if (i >= 0 && !(t->has_held && b == 0)) mk_nn_round_bf16(t->lw[l].w[r][b], t->m->src->tensors[i].numel);
                }
        uint64_t nh = (uint64_t)t->V * t->H;
        if (t->head == t->emb) {
            if (!(t->headb = mk_malloc(nh * sizeof(float)))) return MK_ERR_NOMEM;
            for (uint64_t i = 0; i < nh; i++) t->headb[i] = mk_dtype_round(MK_BF16, t->emb[i]);
        } else {
            mk_nn_round_bf16(t->head, nh);
        }
        t->cur_layer = -1; /* held layers: filled again, rounded */
    }
    t->bf16 = true;
    return MK_OK;
}

bool mk_nn_train_bf16(const mk_nn_train *t) { return t->bf16; }

mk_status mk_nn_train_pass(mk_nn_train *t, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale,
                           bool checkpointing, bool backward, double *wnll, float *logits)
{
    if (!nseq || !T) return MK_OK;
    if (t->has_held && backward && !t->lr)
        return mk_error(MK_ERR_USAGE, "a quantized base is frozen: only LoRA adapters train on it (--lora R)");
    size_t N = nseq * T, H = t->H, L = t->L;
    for (size_t i = 0; i < N; i++)
        if (tok[i] < 0 || (size_t)tok[i] >= t->V)
            return mk_error(MK_ERR_USAGE, "token id %d is outside the model's vocabulary of %zu", tok[i], t->V);
    size_t nacts = checkpointing || !backward ? 1 : L;
    uint64_t af = acts_floats(t->H, t->q, t->kv, t->F, t->nh, N, nseq, T) + N * t->lr * t->n_targets;
    uint64_t nxs = (L + 3) * N * H, ngr = grads_floats(t->H, t->q, t->kv, t->F, t->nh, t->V, N) +
                                          mk_nn_attention_bwd_scratch(T) + 2 * HEAD_ROWS +
                                          (t->lr ? N * (t->F > t->H ? t->F : t->H) + N * t->lr : 0) +
                                          (t->bf16 ? bf16_floats(t->H, t->q, t->F, t->hd, N, T, t->lr) : 0);
    uint64_t need = nxs + af * nacts + ngr;
    if (need > t->arena_cap) {
        free(t->arena);
        t->arena_cap = 0;
        if (!(t->arena = mk_malloc(need * sizeof(float)))) return MK_ERR_NOMEM;
        t->arena_cap = need;
    }
    float *xs = t->arena, *ab = xs + nxs;
    acts *a = mk_calloc(nacts, sizeof *a);
    grads g;
    grads_at(t, N, T, ab + af * nacts, &g);
    mk_nn_rope_tab rope = {0};
    mk_status s = a ? mk_nn_rope_init(&rope, &t->m->cfg->rope, t->hd, t->m->cfg->max_pos, T) : MK_ERR_NOMEM;
    if (s != MK_OK) goto done;
    float *hf = xs + (L + 1) * N * H, *dx = hf + N * H;
    float *base = ab;
    for (size_t i = 0; i < nacts; i++) acts_at(t, N, nseq, T, &base, &a[i]);
    bf16_refresh(t);
    for (size_t i = 0; i < N; i++) memcpy(xs + i * H, t->emb + (size_t)tok[i] * H, H * sizeof(float));
    if (t->emb_scale != 1.0f)
        for (size_t i = 0; i < N * H; i++) xs[i] *= t->emb_scale;
    for (size_t l = 0; l < L && s == MK_OK; l++)
        if ((s = held_load(t, l)) == MK_OK)
            layer_forward(t, l, xs + l * N * H, nseq, T, &rope, &a[nacts > 1 ? l : 0], &g, xs + (l + 1) * N * H);
    if (s != MK_OK) goto done;
    norm_fwd(t, hf, xs + L * N * H, t->fnorm, N);
    if (t->bf16) mk_nn_round_bf16(hf, N * H);
    float *dh = g.dh;
    if (backward) memset(dh, 0, N * H * sizeof(float));
    head_pass(t, hf, tok, w, nseq, T, scale, backward, &g, dh, wnll, logits);
    if (!backward) goto done;
    memset(dx, 0, N * H * sizeof(float));
    norm_bwd(t, xs + L * N * H, t->fnorm, dh, N, dx, t->dfnorm, g.rstd);
    for (size_t l = L; l-- > 0 && s == MK_OK;) {
        acts *al = &a[nacts > 1 ? l : 0];
        if ((s = held_load(t, l)) != MK_OK) break;
        if (checkpointing) layer_forward(t, l, xs + l * N * H, nseq, T, &rope, al, &g, hf); /* hf is free now */
        layer_backward(t, l, xs + l * N * H, nseq, T, &rope, al, &g, dx);
    }
    if (s == MK_OK && t->demb && t->emb_scale != 1.0f)
        for (size_t i = 0; i < N * H; i++) dx[i] *= t->emb_scale;
    if (s == MK_OK && t->demb) mk_nn_embed_bwd(tok, N, H, dx, t->demb);
done:
    mk_nn_rope_free(&rope);
    free(a);
    return s;
}

mk_status mk_nn_train_pass_targets(mk_nn_train *t, const int32_t *tok, const int32_t *tgt, const float *w, size_t nseq, size_t T,
                                   float scale, bool checkpointing, bool backward, double *wnll, float *logits)
{
    for (size_t i = 0; i < nseq * T; i++)
        if (tgt[i] < 0 || (size_t)tgt[i] >= t->V)
            return mk_error(MK_ERR_USAGE, "target id %d is outside the model's vocabulary of %zu", tgt[i], t->V);
    t->tgt = tgt;
    mk_status s = mk_nn_train_pass(t, tok, w, nseq, T, scale, checkpointing, backward, wnll, logits);
    t->tgt = NULL;
    return s;
}

/* ---- LoRA ------------------------------------------------------------------------------------ */

static const mk_role lora_roles[] = {MK_ROLE_Q, MK_ROLE_K, MK_ROLE_V, MK_ROLE_O, MK_ROLE_GATE, MK_ROLE_UP, MK_ROLE_DOWN};

/* in and out of a projection role. */
static void role_dims(const mk_nn_train *t, mk_role r, size_t *in, size_t *out)
{
    switch (r) {
    case MK_ROLE_Q: *in = t->H, *out = t->q; break;
    case MK_ROLE_K:
    case MK_ROLE_V: *in = t->H, *out = t->kv; break;
    case MK_ROLE_O: *in = t->q, *out = t->H; break;
    case MK_ROLE_DOWN: *in = t->F, *out = t->H; break;
    default: *in = t->H, *out = t->F; break;
    }
}

float mk_nn_train_lora_scale(const mk_nn_train *t) { return t->lr ? t->ls : 0.0f; }

mk_status mk_nn_train_lora(mk_nn_train *t, const mk_nn_lora *o)
{
    if (t->lr) return mk_error(MK_ERR_USAGE, "LoRA is already set up");
    if (t->bf16) return mk_error(MK_ERR_USAGE, "LoRA is set up before bf16 (mk_nn_train_set_bf16)");
    if (o->r < 1 || o->r > 65536) return mk_error(MK_ERR_USAGE, "--lora %ld: a rank between 1 and 65536", o->r);
    size_t n = 0;
    for (size_t k = 0; k < sizeof lora_roles / sizeof lora_roles[0]; k++)
        if (o->targets & (1u << lora_roles[k])) n++;
    if (!n) return mk_error(MK_ERR_USAGE, "--lora-targets: no projection to adapt");
    t->la = mk_calloc(t->L ? t->L : 1, sizeof *t->la), t->lb = mk_calloc(t->L ? t->L : 1, sizeof *t->lb);
    t->dla = mk_calloc(t->L ? t->L : 1, sizeof *t->dla), t->dlb = mk_calloc(t->L ? t->L : 1, sizeof *t->dlb);
    t->lp = mk_calloc(2 * n * (t->L ? t->L : 1), sizeof *t->lp);
    if (!t->la || !t->lb || !t->dla || !t->dlb || !t->lp) return MK_ERR_NOMEM;
    size_t r = (size_t)o->r;
    for (size_t l = 0; l < t->L; l++)
        for (size_t k = 0; k < sizeof lora_roles / sizeof lora_roles[0]; k++) {
            mk_role role = lora_roles[k];
            long ti = t->m->idx[l][role][0];
            if (!(o->targets & (1u << role)) || ti < 0) continue;
            const char *name = t->m->src->tensors[ti].name;
            size_t nl = strlen(name), in, out;
            if (nl > 7 && strcmp(name + nl - 7, ".weight") == 0) nl -= 7;
            role_dims(t, role, &in, &out);
            for (int ab = 0; ab < 2; ab++) {
                char *pn = mk_asprintf("%s%.*s.lora_%c.weight", "base_model.model.", (int)nl, name, ab ? 'B' : 'A');
                if (!pn) return MK_ERR_NOMEM;
                t->lp[t->nlp++] = (mk_nn_param){(size_t)ti, t->lnumel, (uint64_t)(ab ? out * r : r * in), true, pn};
                t->lnumel += ab ? out * r : r * in;
            }
        }
    t->lwt = mk_calloc(t->lnumel ? t->lnumel : 1, sizeof(float));
    t->lgr = mk_calloc(t->lnumel ? t->lnumel : 1, sizeof(float));
    if (!t->lwt || !t->lgr) return MK_ERR_NOMEM;
    size_t i = 0;
    for (size_t l = 0; l < t->L; l++)
        for (size_t k = 0; k < sizeof lora_roles / sizeof lora_roles[0]; k++) {
            mk_role role = lora_roles[k];
            if (!(o->targets & (1u << role)) || t->m->idx[l][role][0] < 0) continue;
            size_t in, out;
            role_dims(t, role, &in, &out);
            const mk_nn_param *pa = &t->lp[i++], *pb = &t->lp[i++];
            t->la[l].w[role][0] = t->lwt + pa->off, t->dla[l].w[role][0] = t->lgr + pa->off;
            t->lb[l].w[role][0] = t->lwt + pb->off, t->dlb[l].w[role][0] = t->lgr + pb->off;
            mk_rng key = mk_rng_key(o->seed, pa->name);
            float bound = (float)(1.0 / sqrt((double)in));
            for (uint64_t e = 0; e < pa->numel; e++) t->lwt[pa->off + e] = (2.0f * mk_rng_uniform(key, 0, e) - 1.0f) * bound;
        }
    /* the base is frozen: no gradient buffer */
    free(t->gr);
    t->gr = NULL;
    memset(t->lg, 0, t->L * sizeof *t->lg);
    t->demb = t->dfnorm = t->dhead = NULL;
    t->n_targets = n;
    t->lr = r;
    t->ls = (float)(o->rslora ? o->alpha / sqrt((double)o->r) : o->alpha / (double)o->r);
    return MK_OK;
}

/* ---- the weights as a source ------------------------------------------------------------- */

static const void *view_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    (void)len;
    const mk_nn_train *t = s->impl;
    return (const char *)(t->wt + t->p[i].off) + off;
}

static mk_status view_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    memcpy(dst, view_borrow(s, i, off, len), len);
    return MK_OK;
}

static mk_status view_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    mk_source *in = ((mk_nn_train *)s->impl)->m->src;
    return in->ops->aux_read(in, name, cap, data, len);
}

static const char *const *view_aux_list(mk_source *s)
{
    mk_source *in = ((mk_nn_train *)s->impl)->m->src;
    return in->ops->aux_list(in);
}

static void view_close(mk_source *s) { mk_source_free_fields(s); }

static const mk_source_ops view_ops = {view_read, view_borrow, NULL, NULL, view_aux_read, view_aux_list, view_close, NULL};

mk_status mk_nn_train_source(mk_nn_train *t, mk_source **out)
{
    *out = NULL;
    mk_source *in = t->m->src, *s = mk_calloc(1, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    s->ops = &view_ops;
    s->impl = t;
    s->path = mk_strdup(in->path);
    s->kind = mk_strdup("training weights");
    s->tensors = mk_calloc(t->np ? t->np : 1, sizeof *s->tensors);
    mk_status st = s->path && s->kind && s->tensors ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < t->np && st == MK_OK; i++) {
        mk_tensor_info *ti = &s->tensors[i];
        *ti = in->tensors[t->p[i].src_index];
        ti->name = mk_strdup(ti->name);
        ti->dtype = MK_F32;
        ti->nbytes = ti->numel * 4;
        ti->file = 0, ti->offset = 0;
        s->n_tensors = i + 1;
        if (!ti->name) st = MK_ERR_NOMEM;
    }
    size_t dup;
    if (st == MK_OK) st = mk_name_index_build(&s->index, s->tensors, s->n_tensors, &dup);
    if (st != MK_OK) {
        mk_source_free_fields(s);
        return st;
    }
    *out = s;
    return MK_OK;
}
