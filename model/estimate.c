/* estimate.c - see estimate.h */
#include "estimate.h"

#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const mk_est_optim_names[MK_OPTIM_COUNT] = {"sgd", "momentum", "adam"};

unsigned mk_est_optim_states(mk_est_optim o) { return (unsigned)o; }

/* ---- shape ---------------------------------------------------------------------------------- */

mk_status mk_est_shape_from_config(const char *text, size_t len, const char *what, mk_est_shape *s)
{
    memset(s, 0, sizeof *s);
    mk_model_config c;
    MK_TRY(mk_model_config_parse(text, len, what, &c));
    /* learned positions and biases everywhere: GPT-2 style; else a Llama-style block */
    bool gpt2 = mk_arch_is_conv1d(&c.arch);
    s->layers = c.layers;
    s->hidden = c.hidden;
    s->heads = c.heads;
    s->kv_heads = c.kv_heads;
    s->head_dim = c.head_dim;
    s->intermediate = c.intermediate;
    s->vocab = c.vocab;
    s->positions = gpt2 ? c.max_pos : 0; /* rotary: no position matrix */
    s->gated = !gpt2;
    s->biases = gpt2;
    s->qkv_bias = !gpt2 && c.qkv_bias;
    s->tied = c.tied;
    mk_model_config_free(&c);
    return MK_OK;
}

void mk_est_shape_matrix(mk_est_shape *s, long out, long in)
{
    memset(s, 0, sizeof *s);
    s->layers = 1;
    s->hidden = in;
    s->intermediate = out;
    s->heads = s->kv_heads = 1;
    s->head_dim = in;
    s->gated = false;
    s->tied = true;
    s->matrix = true;
}

static void layer_mats(const mk_est_shape *s, uint64_t q[7][2], int *n)
{
    /* [out, in] of q, k, v, o, gate, up, down */
    uint64_t h = (uint64_t)s->hidden, f = (uint64_t)s->intermediate;
    uint64_t qd = (uint64_t)s->heads * (uint64_t)s->head_dim, kvd = (uint64_t)s->kv_heads * (uint64_t)s->head_dim;
    uint64_t m[7][2] = {{qd, h}, {kvd, h}, {kvd, h}, {h, qd}, {s->gated ? f : 0, h}, {f, h}, {h, f}};
    memcpy(q, m, sizeof m);
    *n = 7;
}

void mk_est_params_shape(const mk_est_shape *s, uint64_t *total, uint64_t *linear)
{
    if (s->matrix) {
        *total = *linear = (uint64_t)s->intermediate * (uint64_t)s->hidden;
        return;
    }
    uint64_t m[7][2];
    int nm;
    layer_mats(s, m, &nm);
    uint64_t h = (uint64_t)s->hidden, L = (uint64_t)s->layers;
    uint64_t lin = 0;
    for (int i = 0; i < nm; i++) lin += m[i][0] * m[i][1];
    uint64_t per = lin + (s->biases ? 4 * h : 2 * h); /* two norms (LayerNorm has a bias too) */
    if (s->biases) per += m[0][0] + m[1][0] + m[2][0] + h + (uint64_t)s->intermediate + h;
    else if (s->qkv_bias) per += m[0][0] + m[1][0] + m[2][0];
    uint64_t emb = (uint64_t)s->vocab * h + (uint64_t)s->positions * h;
    uint64_t t = emb + per * L + (s->biases ? 2 * h : h) + (s->tied ? 0 : (uint64_t)s->vocab * h);
    *total = t;
    *linear = lin * L;
}

/* Weights a LoRA or QLoRA treats as linear layers: 2-D, not an embedding table or lm_head. */
static bool is_linear(const mk_arch *a, const mk_tensor_info *t)
{
    mk_role r = mk_arch_role(a, t->name).role;
    return t->ndim == 2 && !mk_role_is_embedding(r) && r != MK_ROLE_LM_HEAD;
}

void mk_est_params_tensors(const mk_arch *a, const mk_tensor_info *t, size_t n, uint64_t *total, uint64_t *linear)
{
    *total = *linear = 0;
    for (size_t i = 0; i < n; i++) {
        *total += t[i].numel;
        if (is_linear(a, &t[i])) *linear += t[i].numel;
    }
}

/* ---- LoRA targets ------------------------------------------------------------------------- */

/* Target names users write (PEFT's and the papers' spellings) for the seven matrices. */
typedef struct target_alias {
    const char *name;
    int mat; /* index into layer_mats */
    const char *const names[6];
} target_alias;

static const target_alias aliases[] = {
    {"q", 0, {"q_proj", "query", "q", "wq", NULL}},
    {"k", 1, {"k_proj", "key", "k", "wk", NULL}},
    {"v", 2, {"v_proj", "value", "v", "wv", NULL}},
    {"o", 3, {"o_proj", "out_proj", "wo", "o", NULL}},
    {"gate", 4, {"gate_proj", "w1", "gate", NULL}},
    {"up", 5, {"up_proj", "w3", "c_fc", "fc1", "up", NULL}},
    {"down", 6, {"down_proj", "w2", "fc2", "down", NULL}},
};
#define N_ALIASES (sizeof aliases / sizeof aliases[0])

static const target_alias *find_alias(const char *tok)
{
    for (size_t a = 0; a < N_ALIASES; a++) {
        if (strcmp(tok, aliases[a].name) == 0) return &aliases[a];
        for (const char *const *n = aliases[a].names; *n; n++)
            if (strcmp(tok, *n) == 0) return &aliases[a];
    }
    return NULL;
}

/* Split the comma list into tokens (trimmed, non-empty); returns the count or -1. */
static int split_targets(const char *targets, char tok[32][64])
{
    int n = 0;
    const char *p = targets;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *te = e;
        while (te > p && te[-1] == ' ') te--;
        if (n == 32 || te - p >= 64) return -1;
        memcpy(tok[n], p, (size_t)(te - p));
        tok[n][te - p] = 0;
        n++;
        p = e;
    }
    return n;
}

static bool is_all(const char *tok) { return strcmp(tok, "all-linear") == 0 || strcmp(tok, "all") == 0; }

mk_status mk_est_lora_shape(const mk_est_shape *s, const char *targets, long r, uint64_t *out)
{
    char tok[32][64];
    int nt = split_targets(targets, tok);
    if (nt <= 0) return mk_error(MK_ERR_USAGE, "--lora-targets: expected a comma list such as q,k,v,o, got '%s'", targets);
    uint64_t m[7][2];
    int nm;
    layer_mats(s, m, &nm);
    bool use[7] = {0};
    bool matrix = s->matrix;
    for (int i = 0; i < nt; i++) {
        if (matrix || is_all(tok[i])) {
            for (int q = 0; q < nm; q++) use[q] = true;
            continue;
        }
        const target_alias *a = find_alias(tok[i]);
        if (!a)
            return mk_error(MK_ERR_USAGE,
                            "--lora-targets: unknown target '%s' for a shape read from config.json (known: q, k, v, o, gate, "
                            "up, down, all-linear)", tok[i]);
        if (a->mat == 4 && !s->gated)
            return mk_error(MK_ERR_USAGE, "--lora-targets: this model's MLP has no gate projection");
        use[a->mat] = true;
    }
    uint64_t per = 0;
    if (matrix) {
        per = (uint64_t)r * ((uint64_t)s->intermediate + (uint64_t)s->hidden);
    } else {
        for (int q = 0; q < nm; q++)
            if (use[q] && m[q][0]) per += (uint64_t)r * (m[q][0] + m[q][1]);
    }
    *out = per * (uint64_t)s->layers;
    return MK_OK;
}

/* The roles a target alias names (layer_mats order: q, k, v, o, gate, up, down); experts
 * and shared experts are MLPs too. */
static bool alias_has_role(const target_alias *al, mk_role r)
{
    static const mk_role roles[7][3] = {
        {MK_ROLE_Q, MK_ROLE_Q, MK_ROLE_Q},
        {MK_ROLE_K, MK_ROLE_K, MK_ROLE_K},
        {MK_ROLE_V, MK_ROLE_V, MK_ROLE_V},
        {MK_ROLE_O, MK_ROLE_O, MK_ROLE_O},
        {MK_ROLE_GATE, MK_ROLE_EXPERT_GATE, MK_ROLE_SHARED_GATE},
        {MK_ROLE_UP, MK_ROLE_EXPERT_UP, MK_ROLE_SHARED_UP},
        {MK_ROLE_DOWN, MK_ROLE_EXPERT_DOWN, MK_ROLE_SHARED_DOWN},
    };
    return roles[al->mat][0] == r || roles[al->mat][1] == r || roles[al->mat][2] == r;
}

mk_status mk_est_lora_tensors(const mk_arch *arch, const mk_tensor_info *t, size_t n, const char *targets, long r,
                              uint64_t *out, uint64_t *matched)
{
    char tok[32][64];
    int nt = split_targets(targets, tok);
    if (nt <= 0) return mk_error(MK_ERR_USAGE, "--lora-targets: expected a comma list such as q,k,v,o, got '%s'", targets);
    *out = *matched = 0;
    bool any[32] = {0};
    for (size_t i = 0; i < n; i++) {
        const mk_tensor_info *w = &t[i];
        if (w->ndim != 2 || !mk_str_ends_with(w->name, ".weight")) continue;
        mk_role role = mk_arch_role(arch, w->name).role;
        /* a name that is no alias matches the module's last component, as PEFT's target_modules */
        size_t ml = strlen(w->name) - 7;
        const char *last = w->name;
        for (size_t c = 0; c < ml; c++)
            if (w->name[c] == '.') last = w->name + c + 1;
        size_t ll = (size_t)(w->name + ml - last);
        bool hit = false;
        for (int k = 0; k < nt && !hit; k++) {
            const target_alias *a = is_all(tok[k]) ? NULL : find_alias(tok[k]);
            if (is_all(tok[k])) hit = is_linear(arch, w);
            else if (a) hit = alias_has_role(a, role);
            else hit = strlen(tok[k]) == ll && strncmp(last, tok[k], ll) == 0;
            if (hit) any[k] = true;
        }
        if (!hit) continue;
        *out += (uint64_t)r * (uint64_t)(w->shape[0] + w->shape[1]);
        (*matched)++;
    }
    for (int k = 0; k < nt; k++)
        if (!any[k]) return mk_error(MK_ERR_USAGE, "--lora-targets: '%s' matches no weight matrix of this model", tok[k]);
    return MK_OK;
}

/* ---- memory --------------------------------------------------------------------------------- */

double mk_est_weights(uint64_t n, double bpv) { return (double)n * bpv; }

double mk_est_serve(double w) { return w * 6.0 / 5.0; }

double mk_est_grad_optim(uint64_t trainable, double bpv, mk_est_optim o)
{
    return (double)trainable * bpv * (double)(1 + mk_est_optim_states(o));
}

double mk_est_kv_cache(const mk_est_shape *s, uint64_t batch, uint64_t seq, double bpv)
{
    return 2.0 * (double)s->layers * (double)s->kv_heads * (double)s->head_dim * (double)batch * (double)seq * bpv;
}

double mk_est_activations(const mk_est_shape *s, uint64_t batch, uint64_t seq, double bpv)
{
    double per_tok_layer = 6.0 * (double)s->hidden + 2.0 * (double)s->kv_heads * (double)s->head_dim +
                           3.0 * (double)s->intermediate;
    double tokens = (double)batch * (double)seq;
    return tokens * (double)s->layers * bpv * per_tok_layer + tokens * (double)s->vocab * 4.0;
}

double mk_est_qlora_weights(uint64_t linear, uint64_t other, double bpv)
{
    return (double)linear * MK_EST_NF4_BITS / 8.0 + (double)other * bpv;
}

void mk_est_fleet(uint64_t base, uint64_t adapter, uint64_t n, uint64_t *full, uint64_t *shared)
{
    *full = base * n;
    *shared = base + adapter * n;
}

const char *const mk_est_train_names[MK_TRAIN_COUNT] = {"none", "full", "lora", "qlora"};

void mk_est_compute(const mk_est_shape *shape, uint64_t N, uint64_t linear, uint64_t lora, const mk_est_request *r,
                    mk_est_figures *f)
{
    memset(f, 0, sizeof *f);
    bool adapters = r->train == MK_TRAIN_LORA || r->train == MK_TRAIN_QLORA;
    f->weights = r->stored > 0 ? r->stored : mk_est_weights(N, r->bpv);
    f->serve = mk_est_serve(f->weights);
    if (r->batch && shape) {
        f->kv = mk_est_kv_cache(shape, r->batch, r->seq, r->bpv);
        f->act = mk_est_activations(shape, r->batch, r->seq, r->bpv);
    }
    f->trainable = r->train == MK_TRAIN_FULL ? N : adapters ? lora : 0;
    if (r->stored > 0) /* the base stays as stored; full training updates every weight at bpv */
        f->train_weights = adapters ? r->stored : mk_est_weights(N, r->bpv);
    else
        f->train_weights = r->train == MK_TRAIN_QLORA ? mk_est_qlora_weights(linear, N - linear, r->bpv) : f->weights;
    if (adapters) f->train_weights += mk_est_weights(lora, r->bpv);
    f->grad_optim = mk_est_grad_optim(f->trainable, r->bpv, r->optim);
    f->grads = mk_est_weights(f->trainable, r->bpv);
    f->states = f->grad_optim - f->grads;
    f->train_total = f->train_weights + f->act + f->grad_optim;
    if (!r->adapters) return;
    mk_est_fleet(N, lora, r->adapters, &f->fleet_full, &f->fleet_shared);
    f->fleet_full_bytes = r->stored > 0 ? r->stored * (double)r->adapters : mk_est_weights(f->fleet_full, r->bpv);
    f->fleet_shared_bytes = r->stored > 0 ? r->stored + mk_est_weights(lora * r->adapters, r->bpv)
                                          : mk_est_weights(f->fleet_shared, r->bpv);
}

/* ---- formatting ------------------------------------------------------------------------------ */

static const char *three_digits(double v, const char *const *units, int nu, const char *sep, char buf[32])
{
    int u = 0;
    double x = v;
    while (u + 1 < nu && fabs(x) >= 999.5) {
        x /= 1000.0;
        u++;
    }
    /* round to three significant digits, then re-check the unit (999.6 -> 1.00 next unit) */
    const char *fmt = fabs(x) >= 99.95 ? "%.0f%s%s" : fabs(x) >= 9.995 ? "%.1f%s%s" : "%.2f%s%s";
    snprintf(buf, 32, fmt, x, sep, units[u]);
    return buf;
}

const char *mk_est_fmt_bytes(double bytes, char buf[32])
{
    static const char *const u[] = {"B", "KB", "MB", "GB", "TB", "PB"};
    if (bytes < 1000) {
        snprintf(buf, 32, "%.0f B", bytes);
        return buf;
    }
    return three_digits(bytes, u, 6, " ", buf);
}

const char *mk_est_fmt_count(uint64_t v, char buf[32])
{
    static const char *const u[] = {"", "K", "M", "B", "T"};
    if (v < 1000) {
        snprintf(buf, 32, "%llu", (unsigned long long)v);
        return buf;
    }
    return three_digits((double)v, u, 5, "", buf);
}

const char *mk_est_fmt_int(uint64_t v, char buf[32])
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    int o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}
