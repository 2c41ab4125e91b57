/* train.c - see cu_train.h. The layer follows nn/backward.c's layer_forward and
 * layer_backward step for step, each CPU kernel replaced by its mk_cuda.h pair. */
#include "cu_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mk_cuda.h"
#include "train_ext.h"
#include "mem.h"
#include "mk_cuda16.h"
#include "train_attn.h"
#include "train_gemma.h"

/* the roles a layer needs (biases, q/k norms, LoRA and a held base: train_ext.h) */
static const mk_role layer_roles[] = {MK_ROLE_ATTN_NORM, MK_ROLE_Q,    MK_ROLE_K,  MK_ROLE_V,   MK_ROLE_O,
                                      MK_ROLE_MLP_NORM,  MK_ROLE_GATE, MK_ROLE_UP, MK_ROLE_DOWN};
#define N_ROLES (sizeof layer_roles / sizeof layer_roles[0])

/* one layer's kept activations (N = nseq x T rows) */
typedef struct acts {
    float *h1, *q, *k, *v, *p, *att, *xmid, *h2, *g, *u, *a;
    uint16_t *h1b, *attb, *h2b, *ab; /* bf16: h1, att, h2, a stored bf16 instead (only products read them) */
} acts;

struct mk_cu_train {
    size_t H, nh, nkv, hd, F, V, L, q, kv, half;
    float eps, scale;
    const mk_model_config *cfg;
    size_t nseq_cap, T_cap, n_tab;
    bool ckpt, flash; /* flash: the fused attention (train_attn.h) */
    uint64_t numel;
    mk_nn_param *tab; /* the tensor table (offsets into each of the four buffers) */
    int64_t (*off)[N_ROLES]; /* [L]: each role's offset */
    int64_t emb, fnorm, head;
    /* device */
    float *buf;                   /* [4 x numel]: weights, gradients, first and second moments */
    float *w, *gr, *m, *v;
    float *arena;                 /* activations and scratch */
    float *xs, *hf, *logits, *dh, *dx, *dq, *dk, *dv, *datt, *da, *dg, *du, *ds, *rstd, *wt, *cosd, *sind;
    acts *a;                      /* [L], or [1] with checkpointing */
    int32_t *tok, *tgt;
    double *nll, *norm_part;
    /* host */
    int32_t *htgt;
    float *hwt;
    double *hnll;
    long rope_T;                  /* the tables' length (0: none yet) */
    mk_cu_ext *x;                 /* LoRA, QLoRA, biases, q/k norms (train_ext.h) */
    const float *base;            /* what the offsets index: w, or the frozen base under LoRA */
    float *gbase;                 /* its gradients: gr, or NULL (frozen) */
    /* bf16 mixed precision (mk_nn_train_bf16 of the CPU trainer): the products read w16, the
     * weights rounded (kept by AdamW's bf16 copy), and bf16 activations; see the bf16 section */
    bool bf16;
    uint16_t *w16, *arena16, *hf16, *dy16, *c16;
    const uint16_t *base16; /* what the offsets index in bf16: w16, or the frozen base's bf16 copy under LoRA */
    mk_cu_gemma *gm; /* gemma's (1 + w) norms, GeGLU and scaled embeddings (train_gemma.h), or NULL */
};
#define W16(g, l, i) ((g)->off[l][i] >= 0 ? (g)->base16 + (g)->off[l][i] : mk_cu_ext_weight16((g)->x, l, layer_roles[i]))

#define W(g, l, i) ((g)->off[l][i] >= 0 ? (g)->base + (g)->off[l][i] : mk_cu_ext_weight((g)->x, l, layer_roles[i]))
#define G(g, l, i) ((g)->gbase && (g)->off[l][i] >= 0 ? (g)->gbase + (g)->off[l][i] : NULL)
#define GB(g, o) ((g)->gbase ? (g)->gbase + (o) : NULL)
enum { R_ATTN_NORM, R_Q, R_K, R_V, R_O, R_MLP_NORM, R_GATE, R_UP, R_DOWN };
/* the factor layer l's norm (i: R_ATTN_NORM or R_MLP_NORM) scales by: w, or gemma's 1 + w */
#define NW(g, l, i) mk_cu_gemma_norm((g)->gm, 2 * (l) + ((i) == R_MLP_NORM), W(g, l, i))

static const char *arch_of(const mk_model_config *c)
{
    return c->arch.model_type ? c->arch.model_type : c->arch.arch_name ? c->arch.arch_name : "model";
}

static mk_status check_model(mk_nn_train *t, const mk_model_config *c, mk_cu_train *g)
{
    for (size_t l = 0; l < g->L; l++) {
        for (size_t i = 0; i < N_ROLES; i++) {
            g->off[l][i] = mk_nn_train_offset(t, (long)l, layer_roles[i], false);
            if (g->off[l][i] < 0 && mk_nn_train_src_index(t, (long)l, layer_roles[i]) < 0) /* held: decoded per layer */
                return mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer needs the %s weight of layer %zu (%s has none)",
                                mk_role_name(layer_roles[i]), l, arch_of(c));
        }
    }
    g->emb = mk_nn_train_offset(t, -1, MK_ROLE_TOK_EMBED, false);
    g->fnorm = mk_nn_train_offset(t, -1, MK_ROLE_FINAL_NORM, false);
    g->head = mk_nn_train_offset(t, -1, MK_ROLE_LM_HEAD, false);
    if (g->emb < 0 || g->fnorm < 0 || g->head < 0)
        return mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer needs the token embedding, the final norm and lm_head");
    return MK_OK;
}

/* Carve one layer's activations out of *b. */
static void acts_at(const mk_cu_train *g, size_t N, float **b, acts *a)
{
#define TAKE(f, n) (a->f = *b, *b += (n))
    size_t f = g->bf16 ? 0 : 1; /* bf16: h1, att, h2 and a are in the bf16 arena (acts16_at) */
    TAKE(h1, f * N * g->H), TAKE(q, N * g->q), TAKE(k, N * g->kv), TAKE(v, N * g->kv), TAKE(att, f * N * g->q);
    TAKE(xmid, N * g->H), TAKE(h2, f * N * g->H), TAKE(g, N * g->F), TAKE(u, N * g->F), TAKE(a, f * N * g->F);
    TAKE(p, mk_cu_att_floats(g->cfg, g->nseq_cap, g->T_cap));
#undef TAKE
}

/* layer l's attention over sequences of T tokens (train_attn.h) */
static mk_cu_tattn tattn(const mk_cu_train *g, size_t l, size_t T)
{
    mk_cu_tattn a = {T, g->nh, g->nkv, g->hd, g->scale, 0, g->flash, g->bf16};
    a.window = mk_model_config_sliding(g->cfg, (long)l) ? g->cfg->sliding_window : 0;
    return a;
}

/* RoPE's backward on one sequence's dq (which 0) or dk (1): in bf16 onto a bf16 q (k), in f32
 * where a per-head norm sits between the projection and RoPE, and always in f32 training */
static void rope_bwd(const mk_cu_train *g, size_t l, int which, float *d, size_t T, size_t heads)
{
    if (g->bf16 && !mk_cu_ext_has_norm(g->x, l, which)) mk_cu_rope16_bwd(d, T, heads, g->hd, g->half, g->cosd, g->sind);
    else mk_cu_rope(d, T, heads, g->hd, g->half, g->cosd, g->sind, true);
}

/* Attention's backward over every sequence, from datt to dq, dk, dv (RoPE's backward applied) */
static void attn_bwd(mk_cu_train *g, size_t l, size_t nseq, size_t T, const acts *a)
{
    mk_cu_zero(g->dk, nseq * T * g->kv * sizeof(float));
    mk_cu_zero(g->dv, nseq * T * g->kv * sizeof(float));
    mk_cu_tattn at = tattn(g, l, T);
    for (size_t s = 0; s < nseq; s++) {
        size_t oq = s * T * g->q, ok = s * T * g->kv;
        mk_cu_tattn_bwd(&at, s, a->q + oq, a->k + ok, a->v + ok, a->p, g->datt + oq, g->dq + oq, g->dk + ok, g->dv + ok, g->ds);
        rope_bwd(g, l, 0, g->dq + oq, T, g->nh);
        rope_bwd(g, l, 1, g->dk + ok, T, g->nkv);
    }
}

/* ---- bf16 mixed precision: the layer as nn/backward.c computes it with t->bf16 ----
 * The weights' bf16 copy w16 (what the CPU's wb holds) is made here and after each AdamW step;
 * the norms' and attention's outputs and SiLU * up are stored bf16 (only products read them);
 * every product goes through mk_cu_gemm16 with its output rounded; an output gradient is
 * rounded into dy16 before its products. */

static mk_status open16(mk_cu_train *g, size_t N, size_t nacts)
{
    uint64_t dy, cs, a16 = mk_cu_acts16_floats(g->cfg, N);
    mk_cu_scratch16(g->cfg, N, &dy, &cs);
    MK_TRY(mk_cu_alloc((void **)&g->w16, g->numel * sizeof(uint16_t)));
    MK_TRY(mk_cu_alloc((void **)&g->arena16, (a16 * nacts + N * g->H + dy + cs) * sizeof(uint16_t)));
    uint16_t *b = g->arena16;
    for (size_t i = 0; i < nacts; i++) {
        acts *a = &g->a[i];
        a->h1b = b, b += N * g->H;
        a->h2b = b, b += N * g->H;
        a->attb = b, b += N * g->q;
        a->ab = b, b += N * g->F;
    }
    g->hf16 = b, b += N * g->H;
    g->dy16 = b, b += dy;
    g->c16 = b;
    mk_cu_to16(g->w, g->w16, g->numel);
    mk_cu_ext_set16(g->x, g->w16);
    g->base16 = mk_cu_ext_base16(g->x);
    /* under LoRA the f32 base holds only the tensors read in f32 (train_ext.h) */
    for (size_t l = 0; l < g->L; l++) {
        g->off[l][R_ATTN_NORM] = mk_cu_ext_f32_off(g->x, g->off[l][R_ATTN_NORM]);
        g->off[l][R_MLP_NORM] = mk_cu_ext_f32_off(g->x, g->off[l][R_MLP_NORM]);
    }
    g->emb = mk_cu_ext_f32_off(g->x, g->emb), g->fnorm = mk_cu_ext_f32_off(g->x, g->fnorm);
    return MK_OK;
}

/* a projection's forward and backward in bf16, with its bias and LoRA adapter (train_ext.h) */
static void proj16(mk_cu_train *g, size_t l, int r, const uint16_t *x, size_t N, float *y)
{
    mk_cu_ext_proj16(g->x, l, layer_roles[r], x, N, W16(g, l, r), y, g->dy16);
}

static void layer_forward16(mk_cu_train *g, size_t l, const float *xin, size_t nseq, size_t T, acts *a, float *xout)
{
    size_t N = nseq * T, H = g->H;
    mk_cu_ext_layer(g->x, l);
    mk_cu_rmsnorm16(a->h1b, xin, W(g, l, R_ATTN_NORM), N, H, g->eps);
    proj16(g, l, R_Q, a->h1b, N, a->q);
    proj16(g, l, R_K, a->h1b, N, a->k);
    proj16(g, l, R_V, a->h1b, N, a->v);
    mk_cu_ext_qk(g->x, l, a->q, a->k, N);
    mk_cu_tattn at = tattn(g, l, T);
    for (size_t s = 0; s < nseq; s++) {
        float *q = a->q + s * T * g->q, *k = a->k + s * T * g->kv;
        mk_cu_rope(q, T, g->nh, g->hd, g->half, g->cosd, g->sind, false);
        mk_cu_rope(k, T, g->nkv, g->hd, g->half, g->cosd, g->sind, false);
        mk_cu_round(q, T * g->q);
        mk_cu_round(k, T * g->kv);
        mk_cu_tattn_fwd(&at, s, q, k, a->v + s * T * g->kv, a->attb + s * T * g->q, a->p);
    }
    proj16(g, l, R_O, a->attb, N, a->xmid);
    mk_cu_add(a->xmid, xin, N * H);
    mk_cu_rmsnorm16(a->h2b, a->xmid, W(g, l, R_MLP_NORM), N, H, g->eps);
    proj16(g, l, R_GATE, a->h2b, N, a->g);
    proj16(g, l, R_UP, a->h2b, N, a->u);
    mk_cu_swiglu16(a->g, a->u, a->ab, N * g->F);
    proj16(g, l, R_DOWN, a->ab, N, xout);
    mk_cu_add(xout, a->xmid, N * H);
}

/* one projection's backward: its output gradient dy (rounded) into dy16, then the products */
static void proj16_bwd(mk_cu_train *g, size_t l, int r, const uint16_t *x, size_t N, const float *dy, float *dx, bool dx_bf16)
{
    mk_cu_ext_proj16_bwd(g->x, l, layer_roles[r], x, N, W16(g, l, r), dy, dx, dx_bf16, G(g, l, r), g->dy16, g->c16);
}

static void layer_backward16(mk_cu_train *g, size_t l, const float *xin, size_t nseq, size_t T, const acts *a, float *dx)
{
    size_t N = nseq * T, H = g->H, F = g->F;
    mk_cu_ext_layer(g->x, l);
    mk_cu_zero(g->da, N * F * sizeof(float));
    proj16_bwd(g, l, R_DOWN, a->ab, N, dx, g->da, true); /* a is a bf16 tensor: its gradient sums in bf16 */
    mk_cu_swiglu16_bwd(a->g, a->u, g->da, N * F, g->dg, g->du);
    mk_cu_zero(g->dh, N * H * sizeof(float));
    proj16_bwd(g, l, R_GATE, a->h2b, N, g->dg, g->dh, false);
    proj16_bwd(g, l, R_UP, a->h2b, N, g->du, g->dh, false);
    mk_cu_rmsnorm_bwd(a->xmid, W(g, l, R_MLP_NORM), g->dh, N, H, g->eps, dx, G(g, l, R_MLP_NORM), g->rstd);

    mk_cu_zero(g->datt, N * g->q * sizeof(float));
    proj16_bwd(g, l, R_O, a->attb, N, dx, g->datt, true);
    attn_bwd(g, l, nseq, T, a);
    mk_cu_ext_qk_bwd(g->x, l, g->dq, g->dk, N);
    mk_cu_zero(g->dh, N * H * sizeof(float));
    proj16_bwd(g, l, R_Q, a->h1b, N, g->dq, g->dh, false);
    proj16_bwd(g, l, R_K, a->h1b, N, g->dk, g->dh, false);
    proj16_bwd(g, l, R_V, a->h1b, N, g->dv, g->dh, false);
    mk_cu_rmsnorm_bwd(xin, W(g, l, R_ATTN_NORM), g->dh, N, H, g->eps, dx, G(g, l, R_ATTN_NORM), g->rstd);
}

/* The rows of a block of lm_head's backward: nn/backward.c's head_pass computes the logits and
 * their gradient HEAD_ROWS rows at a time, so its weight gradient is a sum of rounded blocks. */
#define HEAD_ROWS16 256

/* Forward: the final norm (bf16) and the logits, rounded; backward (the cross-entropy's
 * gradient in logits): dh += bf16(dlogits W) and lm_head's gradient, block by block. */
static void head16(mk_cu_train *g, size_t N, bool backward)
{
    size_t H = g->H, V = g->V;
    if (!backward) {
        mk_cu_rmsnorm16(g->hf16, g->xs + g->L * N * H, g->base + g->fnorm, N, H, g->eps);
        mk_cu_linear16(g->hf16, N, H, g->base16 + g->head, V, g->logits);
        return;
    }
    mk_cu_to16(g->logits, g->dy16, N * V);
    for (size_t r0 = 0; r0 < N; r0 += HEAD_ROWS16) {
        size_t n = N - r0 < HEAD_ROWS16 ? N - r0 : HEAD_ROWS16;
        mk_cu_linear16_bwd(g->hf16 + r0 * H, n, H, g->base16 + g->head, V, g->dy16 + r0 * V, g->dh + r0 * H, false,
                           GB(g, g->head), g->c16);
    }
}

/* The device's free and total memory as the check sees them: cudaMemGetInfo's, each capped by
 * MK_CUDA_MEMORY (a size, as --max-memory takes: a smaller card, so the refusal can be tried on
 * any device and in the emulation, which has no size of its own). False when neither is known. */
static bool card_memory(uint64_t *fb, uint64_t *tb, bool *capped)
{
    bool known = mk_cu_mem_info(fb, tb) == MK_OK;
    if (!known) mk_error_clear();
    const char *e = getenv("MK_CUDA_MEMORY");
    uint64_t cap;
    if (!e || !mk_parse_size(e, &cap)) return known;
    if (!known || cap < *tb) *tb = cap;
    if (!known || cap < *fb) *fb = cap;
    *capped = true;
    return true;
}

mk_status mk_cu_train_open(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing, mk_cu_train **out)
{
    *out = NULL;
    if (!nseq || !T) return mk_error(MK_ERR_USAGE, "an empty micro-batch (%zu sequences of %zu tokens)", nseq, T);
    char why[256];
    if (!mk_cu_available(why, sizeof why)) return mk_error(MK_ERR_UNSUPPORTED, "--device cuda: %s", why);
    const mk_model_config *c = mk_nn_train_config(t);
    mk_cu_train *g = mk_calloc(1, sizeof *g);
    if (!g) return MK_ERR_NOMEM;
    g->cfg = c;
    g->H = (size_t)c->hidden, g->nh = (size_t)c->heads, g->nkv = (size_t)c->kv_heads, g->hd = (size_t)c->head_dim;
    g->F = (size_t)c->intermediate, g->V = mk_nn_train_vocab(t), g->L = (size_t)c->layers;
    g->q = g->nh * g->hd, g->kv = g->nkv * g->hd;
    g->eps = (float)c->norm_eps, g->scale = (float)c->query_scale;
    g->nseq_cap = nseq, g->T_cap = T, g->ckpt = checkpointing;
    g->numel = mk_nn_train_numel(t);
    g->bf16 = mk_nn_train_bf16(t);
    g->flash = mk_cu_attn_flash(c);
    g->n_tab = mk_nn_train_n_params(t);
    size_t N = nseq * T;
    g->off = mk_calloc(g->L ? g->L : 1, sizeof *g->off);
    g->tab = mk_calloc(g->n_tab ? g->n_tab : 1, sizeof *g->tab);
    g->a = mk_calloc(checkpointing ? 1 : g->L ? g->L : 1, sizeof *g->a);
    g->htgt = mk_malloc(N * sizeof *g->htgt);
    g->hwt = mk_malloc(N * sizeof *g->hwt);
    g->hnll = mk_malloc(N * sizeof *g->hnll);
    mk_status s = g->off && g->tab && g->a && g->htgt && g->hwt && g->hnll ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) s = check_model(t, c, g);
    if (s == MK_OK) s = mk_cu_tattn_check();
    if (s == MK_OK) s = mk_cu_gemma_open(c, 2 * g->L + 1, g->H, g->bf16, &g->gm);
    for (size_t i = 0; s == MK_OK && i < g->n_tab; i++) g->tab[i] = *mk_nn_train_param(t, i);
    uint64_t need = mk_cu_train_need(t, nseq, T, checkpointing), fb = 0, tb = 0;
    bool capped = false;
    if (s == MK_OK && card_memory(&fb, &tb, &capped) && need + MK_CU_TRAIN_RESERVE > fb)
        s = mk_error(MK_ERR_NOMEM, "training needs %.2f GiB of GPU memory, the device has %.2f GiB free of %.2f GiB%s",
                     (double)(need + MK_CU_TRAIN_RESERVE) / (1 << 30), (double)fb / (1 << 30), (double)tb / (1 << 30),
                     capped ? " (MK_CUDA_MEMORY)" : "");
    if (s == MK_OK) s = mk_cu_alloc((void **)&g->buf, 4 * g->numel * sizeof(float));
    if (s == MK_OK) {
        g->w = g->buf, g->gr = g->buf + g->numel, g->m = g->buf + 2 * g->numel, g->v = g->buf + 3 * g->numel;
        s = mk_cu_put(g->w, mk_nn_train_weights(t), g->numel * sizeof(float));
        mk_cu_zero(g->gr, 3 * g->numel * sizeof(float));
    }
    uint64_t af = mk_cu_acts_floats(c, N, nseq, T) - (g->bf16 ? mk_cu_acts16_floats(c, N) : 0), rf = mk_cu_rest_floats(c, N, T);
    size_t nacts = checkpointing ? 1 : g->L;
    if (s == MK_OK) s = mk_cu_alloc((void **)&g->arena, (af * nacts + rf + 2 * MK_CU_NORM_PARTS_MAX) * sizeof(float));
    if (s == MK_OK) {
        float *b = g->arena; /* the doubles first: 8-byte aligned */
        g->nll = (double *)(void *)b, b += 2 * N;
        g->norm_part = (double *)(void *)b, b += 2 * MK_CU_NORM_PARTS_MAX;
#define TAKE(f, n) (g->f = b, b += (n))
        TAKE(xs, (g->L + 1) * N * g->H), TAKE(hf, N * g->H), TAKE(dh, N * g->H), TAKE(dx, N * g->H), TAKE(logits, N * g->V);
        TAKE(dq, N * g->q), TAKE(datt, N * g->q), TAKE(dk, N * g->kv), TAKE(dv, N * g->kv);
        TAKE(da, N * g->F), TAKE(dg, N * g->F), TAKE(du, N * g->F), TAKE(ds, mk_cu_att_floats(c, 1, T)), TAKE(rstd, N), TAKE(wt, N);
        TAKE(cosd, T * g->hd / 2), TAKE(sind, T * g->hd / 2);
#undef TAKE
        g->tok = (int32_t *)(void *)b, b += N;
        g->tgt = (int32_t *)(void *)b, b += N;
        for (size_t i = 0; i < nacts; i++) acts_at(g, N, &b, &g->a[i]);
    }
    if (s == MK_OK) s = mk_cu_ext_open(t, nseq, T, checkpointing, g->w, g->gr, &g->x);
    if (s == MK_OK) g->base = mk_cu_ext_base(g->x), g->gbase = mk_cu_ext_frozen(g->x) ? NULL : g->gr;
    if (s == MK_OK && g->bf16) s = open16(g, N, nacts);
    if (s != MK_OK) {
        mk_cu_train_close(g);
        return s;
    }
    *out = g;
    return MK_OK;
}

void mk_cu_train_close(mk_cu_train *g)
{
    if (!g) return;
    mk_cu_free(g->buf);
    mk_cu_free(g->arena);
    mk_cu_ext_close(g->x);
    mk_cu_free(g->w16), mk_cu_free(g->arena16);
    mk_cu_gemma_close(g->gm);
    free(g->off), free(g->tab), free(g->a), free(g->htgt), free(g->hwt), free(g->hnll);
    free(g);
}

static void layer_forward(mk_cu_train *g, size_t l, const float *xin, size_t nseq, size_t T, acts *a, float *xout)
{
    if (g->bf16) {
        layer_forward16(g, l, xin, nseq, T, a, xout);
        return;
    }
    size_t N = nseq * T, H = g->H;
    mk_cu_ext_layer(g->x, l);
    mk_cu_rmsnorm(a->h1, xin, NW(g, l, R_ATTN_NORM), N, H, g->eps, NULL);
    mk_cu_linear(a->h1, N, H, W(g, l, R_Q), g->q, 0.0f, a->q);
    mk_cu_ext_proj(g->x, l, MK_ROLE_Q, a->h1, N, a->q);
    mk_cu_linear(a->h1, N, H, W(g, l, R_K), g->kv, 0.0f, a->k);
    mk_cu_ext_proj(g->x, l, MK_ROLE_K, a->h1, N, a->k);
    mk_cu_linear(a->h1, N, H, W(g, l, R_V), g->kv, 0.0f, a->v);
    mk_cu_ext_proj(g->x, l, MK_ROLE_V, a->h1, N, a->v);
    mk_cu_ext_qk(g->x, l, a->q, a->k, N);
    mk_cu_tattn at = tattn(g, l, T);
    for (size_t s = 0; s < nseq; s++) {
        mk_cu_rope(a->q + s * T * g->q, T, g->nh, g->hd, g->half, g->cosd, g->sind, false);
        mk_cu_rope(a->k + s * T * g->kv, T, g->nkv, g->hd, g->half, g->cosd, g->sind, false);
        mk_cu_tattn_fwd(&at, s, a->q + s * T * g->q, a->k + s * T * g->kv, a->v + s * T * g->kv, a->att + s * T * g->q, a->p);
    }
    mk_cu_linear(a->att, N, g->q, W(g, l, R_O), H, 0.0f, a->xmid);
    mk_cu_ext_proj(g->x, l, MK_ROLE_O, a->att, N, a->xmid);
    mk_cu_add(a->xmid, xin, N * H);
    mk_cu_rmsnorm(a->h2, a->xmid, NW(g, l, R_MLP_NORM), N, H, g->eps, NULL);
    mk_cu_linear(a->h2, N, H, W(g, l, R_GATE), g->F, 0.0f, a->g);
    mk_cu_ext_proj(g->x, l, MK_ROLE_GATE, a->h2, N, a->g);
    mk_cu_linear(a->h2, N, H, W(g, l, R_UP), g->F, 0.0f, a->u);
    mk_cu_ext_proj(g->x, l, MK_ROLE_UP, a->h2, N, a->u);
    mk_cu_gemma_act(g->gm, a->g, a->u, a->a, N * g->F);
    mk_cu_linear(a->a, N, g->F, W(g, l, R_DOWN), H, 0.0f, xout);
    mk_cu_ext_proj(g->x, l, MK_ROLE_DOWN, a->a, N, xout);
    mk_cu_add(xout, a->xmid, N * H);
}

/* dx: the gradient of the layer's output on entry, of its input on return */
static void layer_backward(mk_cu_train *g, size_t l, const float *xin, size_t nseq, size_t T, const acts *a, float *dx)
{
    if (g->bf16) {
        layer_backward16(g, l, xin, nseq, T, a, dx);
        return;
    }
    size_t N = nseq * T, H = g->H, F = g->F;
    mk_cu_ext_layer(g->x, l);
    mk_cu_zero(g->da, N * F * sizeof(float));
    mk_cu_linear_bwd(a->a, N, F, W(g, l, R_DOWN), H, dx, g->da, G(g, l, R_DOWN));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_DOWN, a->a, N, dx, g->da);
    mk_cu_gemma_act_bwd(g->gm, a->g, a->u, g->da, N * F, g->dg, g->du);
    mk_cu_zero(g->dh, N * H * sizeof(float));
    mk_cu_linear_bwd(a->h2, N, H, W(g, l, R_GATE), F, g->dg, g->dh, G(g, l, R_GATE));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_GATE, a->h2, N, g->dg, g->dh);
    mk_cu_linear_bwd(a->h2, N, H, W(g, l, R_UP), F, g->du, g->dh, G(g, l, R_UP));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_UP, a->h2, N, g->du, g->dh);
    mk_cu_rmsnorm_bwd(a->xmid, NW(g, l, R_MLP_NORM), g->dh, N, H, g->eps, dx, G(g, l, R_MLP_NORM), g->rstd);

    mk_cu_zero(g->datt, N * g->q * sizeof(float));
    mk_cu_linear_bwd(a->att, N, g->q, W(g, l, R_O), H, dx, g->datt, G(g, l, R_O));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_O, a->att, N, dx, g->datt);
    attn_bwd(g, l, nseq, T, a);
    mk_cu_ext_qk_bwd(g->x, l, g->dq, g->dk, N);
    mk_cu_zero(g->dh, N * H * sizeof(float));
    mk_cu_linear_bwd(a->h1, N, H, W(g, l, R_Q), g->q, g->dq, g->dh, G(g, l, R_Q));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_Q, a->h1, N, g->dq, g->dh);
    mk_cu_linear_bwd(a->h1, N, H, W(g, l, R_K), g->kv, g->dk, g->dh, G(g, l, R_K));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_K, a->h1, N, g->dk, g->dh);
    mk_cu_linear_bwd(a->h1, N, H, W(g, l, R_V), g->kv, g->dv, g->dh, G(g, l, R_V));
    mk_cu_ext_proj_bwd(g->x, l, MK_ROLE_V, a->h1, N, g->dv, g->dh);
    mk_cu_rmsnorm_bwd(xin, NW(g, l, R_ATTN_NORM), g->dh, N, H, g->eps, dx, G(g, l, R_ATTN_NORM), g->rstd);
}

/* the rotary tables for T positions (the CPU's, copied) */
static mk_status rope_tables(mk_cu_train *g, size_t T)
{
    if (g->rope_T == (long)T) return MK_OK;
    mk_nn_rope_tab r;
    MK_TRY(mk_nn_rope_init(&r, &g->cfg->rope, g->hd, g->cfg->max_pos, T));
    mk_status s = MK_OK;
    if (r.half * 2 != g->hd)
        s = mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer rotates whole heads (this model rotates %zu of %zu dimensions)",
                     2 * r.half, g->hd);
    if (s == MK_OK) s = mk_cu_put(g->cosd, r.cos, T * r.half * sizeof(float));
    if (s == MK_OK) s = mk_cu_put(g->sind, r.sin, T * r.half * sizeof(float));
    g->half = r.half;
    mk_nn_rope_free(&r);
    if (s == MK_OK) g->rope_T = (long)T;
    return s;
}

mk_status mk_cu_train_pass(mk_cu_train *g, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale,
                           bool backward, double *wnll)
{
    if (!nseq || !T) return MK_OK;
    if (nseq * T > g->nseq_cap * g->T_cap || T > g->T_cap || nseq > g->nseq_cap)
        return mk_error(MK_ERR_USAGE, "a micro-batch of %zu x %zu tokens; the CUDA trainer was sized for %zu x %zu", nseq, T,
                        g->nseq_cap, g->T_cap);
    size_t N = nseq * T, H = g->H, L = g->L;
    for (size_t i = 0; i < N; i++)
        if (tok[i] < 0 || (size_t)tok[i] >= g->V)
            return mk_error(MK_ERR_USAGE, "token id %d is outside the model's vocabulary of %zu", tok[i], g->V);
    /* position j predicts token j + 1 of its row with that token's weight; a row's last none */
    for (size_t i = 0; i < N; i++) {
        bool last = i % T + 1 == T;
        g->htgt[i] = last ? 0 : tok[i + 1];
        g->hwt[i] = last ? 0.0f : w[i + 1];
    }
    MK_TRY(rope_tables(g, T));
    for (size_t l = 0; g->gm && l < L; l++) { /* gemma: the norms' 1 + w from this step's weights */
        MK_TRY(mk_cu_gemma_norm_set(g->gm, 2 * l, W(g, l, R_ATTN_NORM)));
        MK_TRY(mk_cu_gemma_norm_set(g->gm, 2 * l + 1, W(g, l, R_MLP_NORM)));
    }
    MK_TRY(mk_cu_gemma_norm_set(g->gm, 2 * L, g->base + g->fnorm));
    const float *fnorm = mk_cu_gemma_norm(g->gm, 2 * L, g->base + g->fnorm);
    MK_TRY(mk_cu_put(g->tok, tok, N * sizeof *tok));
    MK_TRY(mk_cu_put(g->tgt, g->htgt, N * sizeof *g->htgt));
    MK_TRY(mk_cu_put(g->wt, g->hwt, N * sizeof *g->hwt));
    mk_cu_embed_fwd(g->tok, N, H, g->base + g->emb, g->xs);
    mk_cu_gemma_embed(g->gm, g->xs, N * H);
    for (size_t l = 0; l < L; l++) layer_forward(g, l, g->xs + l * N * H, nseq, T, &g->a[g->ckpt ? 0 : l], g->xs + (l + 1) * N * H);
    if (g->bf16) {
        head16(g, N, false);
    } else {
        mk_cu_rmsnorm(g->hf, g->xs + L * N * H, fnorm, N, H, g->eps, NULL);
        mk_cu_linear(g->hf, N, H, g->base + g->head, g->V, 0.0f, g->logits);
    }
    mk_cu_xent(g->logits, N, g->V, g->tgt, g->wt, scale, g->nll);
    MK_TRY(mk_cu_sync());
    MK_TRY(mk_cu_get(g->hnll, g->nll, N * sizeof *g->hnll));
    double sum = 0;
    for (size_t i = 0; i < N; i++)
        if (g->hwt[i] != 0) sum += (double)g->hwt[i] * g->hnll[i];
    *wnll += sum;
    if (!backward) return MK_OK;
    mk_cu_zero(g->dh, N * H * sizeof(float));
    if (g->bf16) head16(g, N, true);
    else mk_cu_linear_bwd(g->hf, N, H, g->base + g->head, g->V, g->logits, g->dh, GB(g, g->head));
    mk_cu_zero(g->dx, N * H * sizeof(float));
    mk_cu_rmsnorm_bwd(g->xs + L * N * H, fnorm, g->dh, N, H, g->eps, g->dx, GB(g, g->fnorm), g->rstd);
    for (size_t l = L; l-- > 0;) {
        acts *a = &g->a[g->ckpt ? 0 : l];
        if (g->ckpt) layer_forward(g, l, g->xs + l * N * H, nseq, T, a, g->hf); /* hf is free now */
        layer_backward(g, l, g->xs + l * N * H, nseq, T, a, g->dx);
    }
    if (g->gbase) mk_cu_gemma_embed(g->gm, g->dx, N * H); /* the embedding scale's gradient */
    if (g->gbase) mk_cu_embed_bwd(g->tok, N, H, g->dx, g->gbase + g->emb);
    return mk_cu_sync();
}

void mk_cu_train_zero_grad(mk_cu_train *g) { mk_cu_zero(g->gr, g->numel * sizeof(float)); }

mk_status mk_cu_train_step(mk_cu_train *g, double beta1, double beta2, double eps, double weight_decay, double lr, long step,
                           double max_norm, double *norm)
{
    MK_TRY(mk_cu_grad_norm(g->gr, g->numel, g->norm_part, norm));
    if (!isfinite(*norm)) return MK_OK; /* the caller refuses the step; nothing changes */
    mk_cu_grad_clip(g->gr, g->numel, *norm, max_norm);
    for (size_t i = 0; i < g->n_tab; i++) {
        const mk_nn_param *p = &g->tab[i];
        mk_cu_adamw(beta1, beta2, eps, weight_decay, lr, step, p->decay, g->w + p->off, g->gr + p->off, g->m + p->off,
                    g->v + p->off, g->w16 ? g->w16 + p->off : NULL, p->numel);
    }
    return mk_cu_sync();
}

mk_status mk_cu_train_get(mk_cu_train *g, float *weights, float *grads)
{
    MK_TRY(mk_cu_sync());
    if (weights) MK_TRY(mk_cu_get(weights, g->w, g->numel * sizeof(float)));
    if (grads) MK_TRY(mk_cu_get(grads, g->gr, g->numel * sizeof(float)));
    return MK_OK;
}

mk_status mk_cu_train_get_moments(mk_cu_train *g, float *m, float *v)
{
    MK_TRY(mk_cu_sync());
    if (m) MK_TRY(mk_cu_get(m, g->m, g->numel * sizeof(float)));
    if (v) MK_TRY(mk_cu_get(v, g->v, g->numel * sizeof(float)));
    return MK_OK;
}

mk_status mk_cu_train_put(mk_cu_train *g, const float *weights, const float *m, const float *v)
{
    MK_TRY(mk_cu_sync());
    MK_TRY(mk_cu_put(g->w, weights, g->numel * sizeof(float)));
    if (g->w16) mk_cu_to16(g->w, g->w16, g->numel);
    MK_TRY(mk_cu_put(g->m, m, g->numel * sizeof(float)));
    return mk_cu_put(g->v, v, g->numel * sizeof(float));
}

const mk_cu_train_api mk_cu_train_impl = {mk_cu_train_open, mk_cu_train_close, mk_cu_train_pass, mk_cu_train_zero_grad,
                                          mk_cu_train_step, mk_cu_train_get,  mk_cu_train_get_moments, mk_cu_train_put};
