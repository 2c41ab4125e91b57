/* config.c - see config.h. Keys and defaults from the transformers config classes
 * (configuration_llama.py, configuration_gpt2.py, configuration_gemma2.py, ...) and
 * the rope_scaling variants of modeling_rope_utils.py. */
#include "config.h"

#include "../core/mk_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM 100000000L /* any dimension past this is a broken config */
#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct reader {
    const mk_json *j;
    uint32_t obj;
    const char *what;
} reader;

/* The first of `keys` present and not null; 0 when none. */
static uint32_t member(const reader *r, const char *const *keys, const char **key)
{
    for (const char *const *k = keys; *k; k++) {
        uint32_t v = mk_json_get(r->j, r->obj, *k);
        if (v && mk_json_at(r->j, v)->type != MK_JSON_NULL) {
            *key = *k;
            return v;
        }
    }
    return 0;
}

/* A positive integer up to MAX_DIM (`zero_ok`: 0 allowed too). *found = false when absent. */
static mk_status get_long(const reader *r, const char *const *keys, bool zero_ok, long *out, bool *found)
{
    const char *key = NULL;
    uint32_t v = member(r, keys, &key);
    *found = v != 0;
    if (!v) return MK_OK;
    const mk_json_node *n = mk_json_at(r->j, v);
    if (n->type != MK_JSON_NUM || !n->is_uint || (n->u == 0 && !zero_ok) || n->u > (uint64_t)MAX_DIM)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a positive integer, found %s%s", r->what, key,
                        n->type == MK_JSON_NUM ? "" : mk_json_type_name(n->type),
                        n->type == MK_JSON_NUM ? "a value out of range" : "");
    *out = (long)n->u;
    return MK_OK;
}

/* A finite number. */
static mk_status get_double(const reader *r, const char *const *keys, double *out, bool *found)
{
    const char *key = NULL;
    uint32_t v = member(r, keys, &key);
    *found = v != 0;
    if (!v) return MK_OK;
    const mk_json_node *n = mk_json_at(r->j, v);
    if (n->type != MK_JSON_NUM || !isfinite(n->d))
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a number, found %s", r->what, key, mk_json_type_name(n->type));
    *out = n->d;
    return MK_OK;
}

static bool get_bool(const reader *r, const char *key, bool def)
{
    uint32_t v = mk_json_get(r->j, r->obj, key);
    return v && mk_json_at(r->j, v)->type == MK_JSON_BOOL ? mk_json_at(r->j, v)->b : def;
}

static const char *get_str(const reader *r, const char *const *keys)
{
    const char *key;
    uint32_t v = member(r, keys, &key);
    return v && mk_json_at(r->j, v)->type == MK_JSON_STR ? mk_json_strv(r->j, v) : NULL;
}

/* A token id: an integer, or the first of a list (eos_token_id may be several). */
static long get_token(const reader *r, const char *key)
{
    uint32_t v = mk_json_get(r->j, r->obj, key);
    if (v && mk_json_at(r->j, v)->type == MK_JSON_ARR) v = mk_json_at(r->j, v)->first;
    if (!v) return -1;
    const mk_json_node *n = mk_json_at(r->j, v);
    return n->type == MK_JSON_NUM && n->is_uint && n->u < (uint64_t)MAX_DIM ? (long)n->u : -1;
}

static const struct {
    const char *name;
    mk_act act;
} act_table[] = {
    {"silu", MK_ACT_SILU},           {"swish", MK_ACT_SILU},           {"gelu", MK_ACT_GELU},
    {"gelu_python", MK_ACT_GELU},    {"gelu_new", MK_ACT_GELU_TANH},   {"gelu_pytorch_tanh", MK_ACT_GELU_TANH},
    {"gelu_fast", MK_ACT_GELU_TANH}, {"gelu_tanh", MK_ACT_GELU_TANH},  {"relu", MK_ACT_RELU},
};

const char *mk_act_name(mk_act a)
{
    static const char *const names[MK_ACT_COUNT] = {"silu", "gelu", "gelu_tanh", "relu"};
    return a >= 0 && a < MK_ACT_COUNT ? names[a] : "unsupported";
}

static const char *const rope_names[MK_ROPE_COUNT] = {"default", "linear", "dynamic", "yarn", "llama3", "longrope"};

const char *mk_rope_type_name(mk_rope_type t) { return t >= 0 && t < MK_ROPE_COUNT ? rope_names[t] : "unsupported"; }

/* A list of finite numbers (longrope factors). */
static mk_status get_factors(const reader *r, const char *key, double **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    uint32_t v = mk_json_get(r->j, r->obj, key);
    if (!v || mk_json_at(r->j, v)->type == MK_JSON_NULL) return MK_OK;
    const mk_json_node *a = mk_json_at(r->j, v);
    if (a->type != MK_JSON_ARR || a->count > MK_ROPE_MAX_FACTORS)
        return mk_error(MK_ERR_FORMAT, "%s: rope_scaling.%s: expected a list of at most %d numbers", r->what, key,
                        MK_ROPE_MAX_FACTORS);
    *out = mk_calloc(a->count ? a->count : 1, sizeof **out);
    if (!*out) return MK_ERR_NOMEM;
    for (uint32_t c = a->first; c; c = mk_json_at(r->j, c)->next) {
        const mk_json_node *e = mk_json_at(r->j, c);
        if (e->type != MK_JSON_NUM || !isfinite(e->d) || e->d <= 0)
            return mk_error(MK_ERR_FORMAT, "%s: rope_scaling.%s[%zu]: expected a positive number", r->what, key, *n);
        (*out)[(*n)++] = e->d;
    }
    return MK_OK;
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5): the variant and its
 * numbers; an unknown variant is kept as MK_ROPE_COUNT with its name for the caller. */
static mk_status read_rope(const reader *top, mk_rope *rp, const char **unknown)
{
    bool f;
    rp->theta = 10000.0;
    rp->factor = 1.0;
    rp->partial_rotary = 1.0;
    MK_TRY(get_double(top, KEYS("rope_theta"), &rp->theta, &f));
    MK_TRY(get_double(top, KEYS("partial_rotary_factor"), &rp->partial_rotary, &f));
    const char *key = NULL;
    uint32_t v = member(top, KEYS("rope_scaling", "rope_parameters"), &key);
    if (!v) return MK_OK;
    if (mk_json_at(top->j, v)->type != MK_JSON_OBJ)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected an object or null", top->what, key);
    reader r = {top->j, v, top->what};
    MK_TRY(get_double(&r, KEYS("rope_theta"), &rp->theta, &f));
    const char *type = get_str(&r, KEYS("rope_type", "type"));
    if (!type || strcmp(type, "default") == 0) rp->type = MK_ROPE_DEFAULT;
    else if (strcmp(type, "su") == 0) rp->type = MK_ROPE_LONGROPE;
    else {
        rp->type = MK_ROPE_COUNT;
        for (int i = 1; i < MK_ROPE_COUNT; i++)
            if (strcmp(type, rope_names[i]) == 0) rp->type = (mk_rope_type)i;
        if (rp->type == MK_ROPE_COUNT) *unknown = type;
    }
    MK_TRY(get_double(&r, KEYS("factor"), &rp->factor, &rp->factor_set));
    MK_TRY(get_long(&r, KEYS("original_max_position_embeddings"), false, &rp->original_max_pos, &f));
    rp->low_freq_factor = 1.0;
    rp->high_freq_factor = 4.0;
    rp->beta_fast = 32.0;
    rp->beta_slow = 1.0;
    MK_TRY(get_double(&r, KEYS("low_freq_factor"), &rp->low_freq_factor, &f));
    MK_TRY(get_double(&r, KEYS("high_freq_factor"), &rp->high_freq_factor, &f));
    MK_TRY(get_double(&r, KEYS("beta_fast"), &rp->beta_fast, &f));
    MK_TRY(get_double(&r, KEYS("beta_slow"), &rp->beta_slow, &f));
    MK_TRY(get_double(&r, KEYS("attention_factor"), &rp->attention_factor, &f));
    MK_TRY(get_double(&r, KEYS("mscale"), &rp->mscale, &f));
    MK_TRY(get_double(&r, KEYS("mscale_all_dim"), &rp->mscale_all_dim, &f));
    MK_TRY(get_factors(&r, "long_factor", &rp->long_factor, &rp->n_long));
    MK_TRY(get_factors(&r, "short_factor", &rp->short_factor, &rp->n_short));
    if (!(rp->factor > 0)) return mk_error(MK_ERR_FORMAT, "%s: %s.factor: expected a positive number", top->what, key);
    return MK_OK;
}

/* layer_types (transformers 5): "sliding_attention" / "full_attention" per layer. A
 * sliding entry makes the model slide even where the family's default says it does not. */
static mk_status read_layer_types(const reader *r, mk_model_config *c)
{
    uint32_t v = mk_json_get(r->j, r->obj, "layer_types");
    if (!v || mk_json_at(r->j, v)->type == MK_JSON_NULL) return MK_OK;
    const mk_json_node *a = mk_json_at(r->j, v);
    if (a->type != MK_JSON_ARR || a->count != (uint32_t)c->layers)
        return mk_error(MK_ERR_FORMAT, "%s: layer_types: expected a list of %ld entries, one per layer", r->what, c->layers);
    c->layer_sliding = mk_calloc(c->layers ? (size_t)c->layers : 1, 1);
    if (!c->layer_sliding) return MK_ERR_NOMEM;
    size_t i = 0;
    bool any = false;
    for (uint32_t e = a->first; e; e = mk_json_at(r->j, e)->next, i++) {
        const mk_json_node *n = mk_json_at(r->j, e);
        if (n->type != MK_JSON_STR)
            return mk_error(MK_ERR_FORMAT, "%s: layer_types[%zu]: expected a string, found %s", r->what, i, mk_json_type_name(n->type));
        const char *t = mk_json_strv(r->j, e);
        if (strcmp(t, "sliding_attention") == 0) c->layer_sliding[i] = 1, any = true;
        else if (strcmp(t, "full_attention") != 0)
            return mk_error(MK_ERR_FORMAT, "%s: layer_types[%zu]: '%s' is not sliding_attention or full_attention", r->what, i, t);
    }
    if (any && !c->sliding_window) {
        bool f;
        MK_TRY(get_long(r, KEYS("sliding_window"), true, &c->sliding_window, &f));
    }
    return MK_OK;
}

bool mk_model_config_sliding(const mk_model_config *c, long l)
{
    if (c->sliding_window <= 0) return false;
    if (c->layer_sliding) return l >= 0 && l < c->layers && c->layer_sliding[l];
    return c->sliding_pattern <= 1 || l % c->sliding_pattern == 0;
}

static mk_status read_dims(const reader *r, mk_model_config *c)
{
    bool f_h, f_l, f_a, f_kv, f_hd, f_ff, f_v, f;
    MK_TRY(get_long(r, KEYS("hidden_size", "n_embd", "d_model"), false, &c->hidden, &f_h));
    MK_TRY(get_long(r, KEYS("num_hidden_layers", "n_layer", "num_layers"), false, &c->layers, &f_l));
    MK_TRY(get_long(r, KEYS("num_attention_heads", "n_head"), false, &c->heads, &f_a));
    MK_TRY(get_long(r, KEYS("num_key_value_heads"), false, &c->kv_heads, &f_kv));
    MK_TRY(get_long(r, KEYS("head_dim"), false, &c->head_dim, &f_hd));
    MK_TRY(get_long(r, KEYS("intermediate_size", "n_inner", "ffn_dim"), false, &c->intermediate, &f_ff));
    MK_TRY(get_long(r, KEYS("vocab_size"), false, &c->vocab, &f_v));
    MK_TRY(get_long(r, KEYS("max_position_embeddings", "n_positions", "n_ctx"), false, &c->max_pos, &f));
    if (!f_h || !f_l || !f_a || !f_v)
        return mk_error(MK_ERR_FORMAT, "%s: missing %s (need the hidden size, layer count, attention heads and vocab size)",
                        r->what, !f_h ? "hidden_size" : !f_l ? "num_hidden_layers" : !f_a ? "num_attention_heads" : "vocab_size");
    if (!f_kv) c->kv_heads = c->heads;
    if (!f_hd) {
        if (c->hidden % c->heads)
            return mk_error(MK_ERR_FORMAT, "%s: hidden size %ld is not a multiple of %ld heads and head_dim is absent", r->what,
                            c->hidden, c->heads);
        c->head_dim = c->hidden / c->heads;
    }
    if (!f_ff) c->intermediate = 4 * c->hidden;
    if (c->kv_heads > c->heads || c->heads % c->kv_heads)
        return mk_error(MK_ERR_FORMAT, "%s: %ld key/value heads do not divide %ld attention heads", r->what, c->kv_heads,
                        c->heads);
    return MK_OK;
}

static mk_status read_extras(const reader *r, mk_model_config *c)
{
    const mk_arch_def *d = c->arch.def;
    bool f;
    c->norm_eps = d ? d->eps_default : 1e-6;
    MK_TRY(get_double(r, KEYS("rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps", "norm_eps"), &c->norm_eps, &f));
    const char *act = get_str(r, KEYS("hidden_activation", "hidden_act", "activation_function"));
    snprintf(c->act_name, sizeof c->act_name, "%s", act ? act : d ? d->act_default : "silu");
    c->act = MK_ACT_COUNT;
    for (size_t i = 0; i < sizeof act_table / sizeof act_table[0]; i++)
        if (strcmp(c->act_name, act_table[i].name) == 0) c->act = act_table[i].act;
    const char *unknown_rope = NULL;
    MK_TRY(read_rope(r, &c->rope, &unknown_rope));
    long omp = 0;
    MK_TRY(get_long(r, KEYS("original_max_position_embeddings"), false, &omp, &f));
    if (f) c->rope.original_max_pos = omp;
    bool gpt2 = d && d->conv1d;
    c->tied = get_bool(r, "tie_word_embeddings", d ? d->tied_default : false);
    bool attn_bias = get_bool(r, "attention_bias", false);
    c->qkv_bias = gpt2 || (d && d->qkv_bias_default) || attn_bias;
    c->o_bias = gpt2 || (attn_bias && !(d && d->qkv_bias_default));
    c->mlp_bias = gpt2 || get_bool(r, "mlp_bias", false);
    bool sliding = d && (strcmp(d->name, "mistral") == 0 || strcmp(d->name, "gemma2") == 0 || strcmp(d->name, "mixtral") == 0);
    if (sliding || get_bool(r, "use_sliding_window", false))
        MK_TRY(get_long(r, KEYS("sliding_window"), true, &c->sliding_window, &f));
    c->sliding_pattern = d && strcmp(d->name, "gemma2") == 0 ? 2 : 1;
    MK_TRY(read_layer_types(r, c));
    MK_TRY(get_double(r, KEYS("attn_logit_softcapping"), &c->attn_softcap, &f));
    MK_TRY(get_double(r, KEYS("final_logit_softcapping"), &c->final_softcap, &f));
    double qpas = 0;
    MK_TRY(get_double(r, KEYS("query_pre_attn_scalar"), &qpas, &f));
    if (f && !(qpas > 0)) return mk_error(MK_ERR_FORMAT, "%s: query_pre_attn_scalar: expected a positive number", r->what);
    c->query_scale = 1.0 / sqrt(f ? qpas : (double)c->head_dim);
    MK_TRY(get_long(r, KEYS("num_local_experts", "num_experts"), true, &c->n_experts, &f));
    MK_TRY(get_long(r, KEYS("num_experts_per_tok"), true, &c->experts_per_tok, &f));
    MK_TRY(get_long(r, KEYS("moe_intermediate_size"), false, &c->moe_intermediate, &f));
    MK_TRY(get_long(r, KEYS("shared_expert_intermediate_size"), false, &c->shared_intermediate, &f));
    c->norm_topk = (d && strcmp(d->name, "mixtral") == 0) || get_bool(r, "norm_topk_prob", false);
    if (c->n_experts && (c->experts_per_tok < 1 || c->experts_per_tok > c->n_experts))
        return mk_error(MK_ERR_FORMAT, "%s: num_experts_per_tok %ld is not between 1 and %ld experts", r->what,
                        c->experts_per_tok, c->n_experts);
    c->bos_id = get_token(r, "bos_token_id");
    c->eos_id = get_token(r, "eos_token_id");
    if (unknown_rope) mk_debug("%s: rope scaling '%s' is not one mergekit-c knows", r->what, unknown_rope);
    return MK_OK;
}

mk_status mk_model_config_parse(const char *text, size_t len, const char *what, mk_model_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch.num_layers = -1;
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    MK_TRY(mk_json_parse(&j, text, len, &lim, what));
    mk_status s = MK_OK;
    if (mk_json_at(&j, 0)->type != MK_JSON_OBJ) s = mk_error(MK_ERR_FORMAT, "%s: expected a JSON object", what);
    char *nul = s == MK_OK ? mk_strndup(text, len) : NULL;
    if (s == MK_OK && !nul) s = MK_ERR_NOMEM;
    if (s == MK_OK) s = mk_arch_from_config(nul, what, &c->arch);
    free(nul);
    reader r = {&j, 0, what};
    if (s == MK_OK) s = read_dims(&r, c);
    if (s == MK_OK) s = read_extras(&r, c);
    mk_json_free(&j);
    if (s != MK_OK) mk_model_config_free(c);
    return s;
}

mk_status mk_model_config_of_source(mk_source *src, mk_model_config *c)
{
    memset(c, 0, sizeof *c);
    char *text = NULL;
    size_t len = 0;
    if (src->ops->aux_read) MK_TRY(src->ops->aux_read(src, "config.json", 16u << 20, &text, &len));
    if (!text) return mk_error(MK_ERR_FORMAT, "%s: no config.json (the model's shape and architecture are unknown)", src->path);
    char *what = mk_asprintf("%s/config.json", src->path);
    mk_status s = what ? mk_model_config_parse(text, len, what, c) : MK_ERR_NOMEM;
    free(what);
    free(text);
    return s;
}

void mk_model_config_free(mk_model_config *c)
{
    if (!c) return;
    mk_arch_free(&c->arch);
    free(c->rope.long_factor);
    free(c->rope.short_factor);
    free(c->layer_sliding);
    memset(c, 0, sizeof *c);
}
