/* model.c - binding a model's tensors by role and loading a layer's weights (nn.h). */
#include "nn_int.h"

#include "../core/mk_parallel.h"

#include <stdlib.h>
#include <string.h>

#define READ_CHUNK (1u << 20) /* elements per parallel read */

typedef struct read_job {
    mk_source *src;
    size_t i;
    uint64_t e0, n;
    float *dst;
} read_job;

static void *scratch_new(void *ctx)
{
    (void)ctx;
    return mk_malloc((size_t)READ_CHUNK * 8);
}

static mk_status read_chunk(void *ctx, uint64_t c, void *scratch)
{
    const read_job *j = ctx;
    uint64_t off = c * READ_CHUNK, n = j->n - off < READ_CHUNK ? j->n - off : READ_CHUNK;
    return mk_source_read_f32(j->src, j->i, j->e0 + off, n, j->dst + off, scratch);
}

mk_status mk_nn_read(mk_nn_model *m, size_t i, uint64_t e0, uint64_t n, float *dst)
{
    read_job j = {m->src, i, e0, n, dst};
    return mk_parallel_chunks((n + READ_CHUNK - 1) / READ_CHUNK, read_chunk, &j, scratch_new, free);
}

/* ---- binding ------------------------------------------------------------------------------ */

static bool is_expert(mk_role r) { return r == MK_ROLE_EXPERT_GATE || r == MK_ROLE_EXPERT_UP || r == MK_ROLE_EXPERT_DOWN; }

/* [rows, cols] a role's weight must have as nn.Linear stores it ([out, in]); 1-D: cols = 0. */
static void want_shape(const mk_nn_model *m, mk_role r, bool bias, uint64_t *rows, uint64_t *cols)
{
    uint64_t H = m->H, q = m->nh * m->hd, kv = m->nkv * m->hd, F = m->F;
    uint64_t out = 0, in = 0;
    switch (r) {
    case MK_ROLE_Q: out = q, in = H; break;
    case MK_ROLE_K:
    case MK_ROLE_V: out = kv, in = H; break;
    case MK_ROLE_QKV: out = q + 2 * kv, in = H; break;
    case MK_ROLE_O: out = H, in = q; break;
    case MK_ROLE_GATE:
    case MK_ROLE_UP: out = F, in = H; break;
    case MK_ROLE_GATE_UP: out = 2 * F, in = H; break;
    case MK_ROLE_DOWN: out = H, in = F; break;
    case MK_ROLE_ROUTER: out = m->E, in = H; break;
    case MK_ROLE_EXPERT_GATE:
    case MK_ROLE_EXPERT_UP: out = m->Fe, in = H; break;
    case MK_ROLE_EXPERT_DOWN: out = H, in = m->Fe; break;
    case MK_ROLE_SHARED_GATE:
    case MK_ROLE_SHARED_UP: out = m->Fs, in = H; break;
    case MK_ROLE_SHARED_DOWN: out = H, in = m->Fs; break;
    case MK_ROLE_SHARED_ROUTER: out = 1, in = H; break;
    case MK_ROLE_Q_NORM:
    case MK_ROLE_K_NORM: out = m->hd; break;
    case MK_ROLE_TOK_EMBED:
    case MK_ROLE_LM_HEAD: out = m->V, in = H; break;
    default: out = H; break; /* norms */
    }
    if (bias) in = 0;
    *rows = out;
    *cols = in;
}

static mk_status check_shape(const mk_nn_model *m, size_t i, mk_role r, bool bias)
{
    const mk_tensor_info *t = &m->src->tensors[i];
    if (r == MK_ROLE_EXPERTS_GATE_UP || r == MK_ROLE_EXPERTS_DOWN) { /* transformers 5's fused experts */
        int64_t a = r == MK_ROLE_EXPERTS_DOWN ? (int64_t)m->H : 2 * (int64_t)m->Fe;
        int64_t b = r == MK_ROLE_EXPERTS_DOWN ? (int64_t)m->Fe : (int64_t)m->H;
        if (t->ndim == 3 && t->shape[0] == (int64_t)m->E && t->shape[1] == a && t->shape[2] == b) return MK_OK;
        char got[160];
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s is %s, but config.json (%zu experts, hidden %zu, expert width %zu) makes it "
                                       "[%zu, %lld, %lld]",
                        m->src->path, t->name, mk_shape_str(t, got), m->E, m->H, m->Fe, m->E, (long long)a, (long long)b);
    }
    uint64_t rows, cols;
    want_shape(m, r, bias, &rows, &cols);
    if (r == MK_ROLE_POS_EMBED) { /* any number of positions */
        if (t->ndim == 2 && (uint64_t)t->shape[1] == m->H) return MK_OK;
        cols = m->H, rows = t->ndim == 2 ? (uint64_t)t->shape[0] : 0;
    } else if (cols == 0) {
        if (t->ndim == 1 && (uint64_t)t->shape[0] == rows) return MK_OK;
    } else {
        /* Conv1D (GPT-2) stores linear weights [in, out]; embeddings and lm_head stay [rows, H] */
        bool swap = m->conv1d && r != MK_ROLE_TOK_EMBED && r != MK_ROLE_LM_HEAD;
        uint64_t a = swap ? cols : rows, b = swap ? rows : cols;
        if (t->ndim == 2 && (uint64_t)t->shape[0] == a && (uint64_t)t->shape[1] == b) return MK_OK;
        rows = a, cols = b;
    }
    char got[160];
    if (cols)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s is %s, but config.json (hidden %zu, heads %zu/%zu, head_dim %zu, "
                                       "intermediate %zu, vocab %zu) makes it [%llu, %llu]",
                        m->src->path, t->name, mk_shape_str(t, got), m->H, m->nh, m->nkv, m->hd, m->F, m->V,
                        (unsigned long long)rows, (unsigned long long)cols);
    return mk_error(MK_ERR_FORMAT, "%s: tensor %s is %s, but config.json makes it [%llu]", m->src->path, t->name,
                    mk_shape_str(t, got), (unsigned long long)rows);
}

/* Record tensor i by its role; tensors no forward pass needs (buffers, unknown names) are skipped. */
static mk_status bind_one(mk_nn_model *m, size_t i)
{
    const char *name = m->src->tensors[i].name;
    mk_tensor_role tr = mk_arch_role(&m->cfg->arch, name);
    if (tr.layer >= 0 && !m->E && tr.role >= MK_ROLE_ROUTER && tr.role <= MK_ROLE_SHARED_ROUTER)
        return mk_error(MK_ERR_FORMAT, "%s: %s is a mixture-of-experts tensor, but config.json names no experts", m->src->path, name);
    if (tr.role == MK_ROLE_UNKNOWN || tr.role == MK_ROLE_ATTN_BUFFER) {
        mk_debug("%s: %s is not used by the forward pass", m->src->path, name);
        return MK_OK;
    }
    long *slot;
    if (is_expert(tr.role) && tr.layer >= 0 && (size_t)tr.layer < m->L && !tr.bias) {
        if (tr.expert < 0 || (size_t)tr.expert >= m->E)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s is expert %ld, but config.json has %zu experts", m->src->path, name,
                            tr.expert, m->E);
        slot = &m->eidx[((size_t)tr.layer * m->E + (size_t)tr.expert) * 3 + (size_t)(tr.role - MK_ROLE_EXPERT_GATE)];
    } else if (tr.layer >= 0) {
        if ((size_t)tr.layer >= m->L)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s is in layer %ld, but config.json has %zu layers", m->src->path, name,
                            tr.layer, m->L);
        slot = &m->idx[tr.layer][tr.role][tr.bias];
    } else {
        slot = &m->g_idx[tr.role][tr.bias];
    }
    if (*slot >= 0)
        return mk_error(MK_ERR_FORMAT, "%s: tensors %s and %s are both the %s %s", m->src->path, m->src->tensors[*slot].name,
                        name, mk_role_name(tr.role), tr.bias ? "bias" : "weight");
    *slot = (long)i;
    return check_shape(m, i, tr.role, tr.bias);
}

static mk_status need(const mk_nn_model *m, long l, mk_role r, bool bias)
{
    long v = l >= 0 ? m->idx[l][r][bias] : m->g_idx[r][bias];
    if (v >= 0) return MK_OK;
    if (l >= 0)
        return mk_error(MK_ERR_FORMAT, "%s: layer %ld has no %s %s (a %s model needs it)", m->src->path, l, mk_role_name(r),
                        bias ? "bias" : "weight", m->def->name);
    return mk_error(MK_ERR_FORMAT, "%s: no %s %s (a %s model needs it)", m->src->path, mk_role_name(r), bias ? "bias" : "weight",
                    m->def->name);
}

/* Every tensor the family's forward pass needs is there. */
static mk_status check_complete(const mk_nn_model *m)
{
    bool ln = m->def->norm == MK_NORM_LAYER;
    MK_TRY(need(m, -1, MK_ROLE_TOK_EMBED, false));
    MK_TRY(need(m, -1, MK_ROLE_FINAL_NORM, false));
    if (ln) MK_TRY(need(m, -1, MK_ROLE_FINAL_NORM, true));
    if (!m->def->rotary) MK_TRY(need(m, -1, MK_ROLE_POS_EMBED, false));
    for (long l = 0; l < (long)m->L; l++) {
        MK_TRY(need(m, l, MK_ROLE_ATTN_NORM, false));
        MK_TRY(need(m, l, MK_ROLE_MLP_NORM, false));
        if (ln) MK_TRY(need(m, l, MK_ROLE_ATTN_NORM, true));
        if (ln) MK_TRY(need(m, l, MK_ROLE_MLP_NORM, true));
        if (m->idx[l][MK_ROLE_QKV][0] < 0) {
            MK_TRY(need(m, l, MK_ROLE_Q, false));
            MK_TRY(need(m, l, MK_ROLE_K, false));
            MK_TRY(need(m, l, MK_ROLE_V, false));
        }
        MK_TRY(need(m, l, MK_ROLE_O, false));
        if (m->E && m->idx[l][MK_ROLE_ROUTER][0] >= 0) { /* a sparse layer: every expert, and the shared one's parts */
            bool fused = m->idx[l][MK_ROLE_EXPERTS_GATE_UP][0] >= 0;
            if (fused || m->idx[l][MK_ROLE_EXPERTS_DOWN][0] >= 0) {
                MK_TRY(need(m, l, MK_ROLE_EXPERTS_GATE_UP, false));
                MK_TRY(need(m, l, MK_ROLE_EXPERTS_DOWN, false));
            }
            for (size_t e = 0; e < m->E && !fused; e++)
                for (int k = 0; k < 3; k++)
                    if (m->eidx[((size_t)l * m->E + e) * 3 + (size_t)k] < 0)
                        return mk_error(MK_ERR_FORMAT, "%s: layer %ld has no %s weight of expert %zu", m->src->path, l,
                                        mk_role_name((mk_role)(MK_ROLE_EXPERT_GATE + k)), e);
            bool any = false, all = true;
            for (mk_role r = MK_ROLE_SHARED_GATE; r <= MK_ROLE_SHARED_ROUTER; r++)
                any |= m->idx[l][r][0] >= 0, all &= m->idx[l][r][0] >= 0;
            if (any && !all) return mk_error(MK_ERR_FORMAT, "%s: layer %ld has part of a shared expert", m->src->path, l);
            continue;
        }
        if (m->def->gated_mlp && m->idx[l][MK_ROLE_GATE_UP][0] < 0) MK_TRY(need(m, l, MK_ROLE_GATE, false));
        if (m->idx[l][MK_ROLE_GATE_UP][0] < 0) MK_TRY(need(m, l, MK_ROLE_UP, false));
        MK_TRY(need(m, l, MK_ROLE_DOWN, false));
    }
    return MK_OK;
}

/* The config is one this forward pass runs. */
static mk_status check_config(const mk_source *src, const mk_model_config *c)
{
    const mk_arch_def *d = c->arch.def;
    if (!d)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: architecture %s is not one mergekit-c can run (llama, mistral, qwen2, qwen3, "
                                            "gemma, gemma2, phi3, gpt2)", src->path,
                        c->arch.arch_name ? c->arch.arch_name : c->arch.model_type ? c->arch.model_type : "(unnamed)");
    if (d->moe && !c->n_experts)
        return mk_error(MK_ERR_FORMAT, "%s: %s model without num_experts / num_local_experts in config.json", src->path, d->name);
    if (c->act == MK_ACT_COUNT)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: activation '%s' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh, relu)",
                        src->path, c->act_name);
    if (d->rotary && c->rope.type == MK_ROPE_COUNT)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: this rope_scaling type is not supported (linear, dynamic, yarn, llama3, longrope)",
                        src->path);
    if (c->heads % c->kv_heads)
        return mk_error(MK_ERR_FORMAT, "%s: %ld key/value heads do not divide %ld heads", src->path, c->kv_heads, c->heads);
    return MK_OK;
}

mk_status mk_nn_open(mk_source *src, const mk_model_config *cfg, mk_nn_model **out)
{
    *out = NULL;
    MK_TRY(check_config(src, cfg));
    mk_nn_blas_init();
    mk_nn_model *m = mk_calloc(1, sizeof *m);
    if (!m) return MK_ERR_NOMEM;
    m->src = src;
    m->cfg = cfg;
    m->def = cfg->arch.def;
    m->H = (size_t)cfg->hidden, m->nh = (size_t)cfg->heads, m->nkv = (size_t)cfg->kv_heads, m->hd = (size_t)cfg->head_dim;
    m->F = (size_t)cfg->intermediate, m->V = (size_t)cfg->vocab, m->L = (size_t)cfg->layers;
    m->conv1d = m->def->conv1d;
    if (cfg->n_experts) {
        m->E = (size_t)cfg->n_experts, m->K = (size_t)cfg->experts_per_tok;
        m->Fe = (size_t)(cfg->moe_intermediate ? cfg->moe_intermediate : cfg->intermediate);
        m->Fs = (size_t)(cfg->shared_intermediate ? cfg->shared_intermediate : cfg->intermediate);
    }
    m->idx = mk_malloc((m->L ? m->L : 1) * sizeof *m->idx);
    m->eidx = m->E ? mk_malloc(m->L * m->E * 3 * sizeof *m->eidx) : NULL;
    mk_status s = m->idx && (m->eidx || !m->E) ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && m->eidx) memset(m->eidx, 0xff, m->L * m->E * 3 * sizeof *m->eidx);
    if (s == MK_OK) {
        memset(m->idx, 0xff, (m->L ? m->L : 1) * sizeof *m->idx); /* all -1 */
        memset(m->g_idx, 0xff, sizeof m->g_idx);
    }
    for (size_t i = 0; i < src->n_tensors && s == MK_OK; i++) s = bind_one(m, i);
    if (s == MK_OK) s = check_complete(m);
    if (s == MK_OK) {
        m->head = m->g_idx[MK_ROLE_LM_HEAD][0] >= 0 ? m->g_idx[MK_ROLE_LM_HEAD][0] : m->g_idx[MK_ROLE_TOK_EMBED][0];
        if (m->g_idx[MK_ROLE_LM_HEAD][0] < 0 && !cfg->tied)
            mk_warn("%s: no lm_head.weight and tie_word_embeddings is not set; using the token embeddings", src->path);
    }
    if (s != MK_OK) {
        mk_nn_close(m);
        return s;
    }
    *out = m;
    return MK_OK;
}

void mk_nn_close(mk_nn_model *m)
{
    if (!m) return;
    free(m->idx);
    free(m->eidx);
    free(m->arena);
    free(m);
}

size_t mk_nn_hidden(const mk_nn_model *m) { return m->H; }
size_t mk_nn_vocab(const mk_nn_model *m) { return m->V; }

mk_status mk_nn_load_layer(mk_nn_model *m, size_t l)
{
    size_t total = 0;
    for (int r = 0; r < MK_ROLE_COUNT; r++)
        for (int b = 0; b < 2; b++)
            if (m->idx[l][r][b] >= 0) total += (size_t)m->src->tensors[m->idx[l][r][b]].numel;
    if (total > m->arena_cap) {
        free(m->arena);
        m->arena = mk_malloc(total * sizeof(float));
        m->arena_cap = m->arena ? total : 0;
        if (!m->arena) return MK_ERR_NOMEM;
    }
    memset(&m->cur, 0, sizeof m->cur);
    size_t off = 0;
    for (int r = 0; r < MK_ROLE_COUNT; r++)
        for (int b = 0; b < 2; b++) {
            long i = m->idx[l][r][b];
            if (i < 0) continue;
            uint64_t n = m->src->tensors[i].numel;
            m->cur.w[r][b] = m->arena + off;
            MK_TRY(mk_nn_read(m, (size_t)i, 0, n, m->arena + off));
            off += (size_t)n;
        }
    return MK_OK;
}
