/* arch.c - see arch.h. Tensor names follow the Hugging Face transformers modules
 * (modeling_llama.py, modeling_gpt2.py, modeling_mixtral.py, ...) and mergekit's
 * architecture JSON files; traits and defaults follow the transformers config classes. */
#include "arch.h"

#include "../core/mk_json.h"

#include <stdlib.h>
#include <string.h>

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
#define RULES(...) ((const mk_role_rule[]){__VA_ARGS__, {NULL, MK_ROLE_UNKNOWN}})

/* Decoder-only models whose modules live under model.layers.N and end with model.norm
 * and lm_head (transformers' LlamaForCausalLM layout and its many descendants). */
#define LLAMA_PREFIXES LIST("model.layers.")
#define LLAMA_GLOBALS RULES({"model.embed_tokens", MK_ROLE_TOK_EMBED}, {"model.norm", MK_ROLE_FINAL_NORM}, {"lm_head", MK_ROLE_LM_HEAD})

#define ATTN_RULES                                                                                                      \
    {"self_attn.q_proj", MK_ROLE_Q}, {"self_attn.k_proj", MK_ROLE_K}, {"self_attn.v_proj", MK_ROLE_V},                  \
        {"self_attn.o_proj", MK_ROLE_O}, {"self_attn.rotary_emb.inv_freq", MK_ROLE_ATTN_BUFFER}
#define MLP_RULES {"mlp.gate_proj", MK_ROLE_GATE}, {"mlp.up_proj", MK_ROLE_UP}, {"mlp.down_proj", MK_ROLE_DOWN}
#define NORM_RULES {"input_layernorm", MK_ROLE_ATTN_NORM}, {"post_attention_layernorm", MK_ROLE_MLP_NORM}
#define QK_NORM_RULES {"self_attn.q_norm", MK_ROLE_Q_NORM}, {"self_attn.k_norm", MK_ROLE_K_NORM}
/* Qwen2-MoE / Qwen3-MoE sparse blocks (dense layers keep MLP_RULES) */
#define QWEN_MOE_RULES                                                                                                  \
    {"mlp.gate", MK_ROLE_ROUTER}, {"mlp.experts.*.gate_proj", MK_ROLE_EXPERT_GATE},                                     \
        {"mlp.experts.*.up_proj", MK_ROLE_EXPERT_UP}, {"mlp.experts.*.down_proj", MK_ROLE_EXPERT_DOWN},                 \
        {"mlp.experts.gate_up_proj", MK_ROLE_EXPERTS_GATE_UP}, {"mlp.experts.down_proj", MK_ROLE_EXPERTS_DOWN}

#define LLAMA_LAYER RULES(NORM_RULES, ATTN_RULES, MLP_RULES)

/* Rows: name, archs, model types, layer prefixes, layer-count key, canonical prefix, tied
 * embedding, global roles, layer roles, then traits. Traits and defaults from the config
 * classes: LlamaConfig (rms_norm_eps 1e-6, silu, untied), GemmaConfig (tied,
 * gelu_pytorch_tanh, 1+w norms, sqrt(hidden)-scaled embeddings), GPT2Config (LayerNorm
 * 1e-5, gelu_new, learned positions, Conv1D), Phi3Config (1e-5), ... */
const mk_arch_def mk_arch_defs[] = {
    {.name = "llama", .archs = LIST("LlamaForCausalLM", "LLaMaForCausalLM", "LLaMAForCausalLM"), .model_types = LIST("llama"),
     .layer_prefixes = LLAMA_PREFIXES, .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size",
     .tied_embed = "model.embed_tokens.weight", .global_roles = LLAMA_GLOBALS, .layer_roles = LLAMA_LAYER,
     .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true, .eps_default = 1e-6, .act_default = "silu"},
    {.name = "mistral", .archs = LIST("MistralForCausalLM"), .model_types = LIST("mistral"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS, .layer_roles = LLAMA_LAYER, .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true,
     .eps_default = 1e-6, .act_default = "silu"},
    {.name = "qwen2", .archs = LIST("Qwen2ForCausalLM"), .model_types = LIST("qwen2"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS, .layer_roles = LLAMA_LAYER, .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true,
     .qkv_bias_default = true, .eps_default = 1e-6, .act_default = "silu"},
    {.name = "qwen3", .archs = LIST("Qwen3ForCausalLM"), .model_types = LIST("qwen3"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS, .layer_roles = RULES(NORM_RULES, ATTN_RULES, QK_NORM_RULES, MLP_RULES),
     .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true, .eps_default = 1e-6, .act_default = "silu"},
    /* Gemma always ties lm_head to the embeddings; the checkpoint has no lm_head */
    {.name = "gemma", .archs = LIST("GemmaForCausalLM"), .model_types = LIST("gemma"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS, .layer_roles = LLAMA_LAYER, .norm = MK_NORM_RMS_1P, .gated_mlp = true, .rotary = true,
     .embed_scale = true, .tied_default = true, .eps_default = 1e-6, .act_default = "gelu_pytorch_tanh"},
    {.name = "gemma2", .archs = LIST("Gemma2ForCausalLM"), .model_types = LIST("gemma2"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS,
     .layer_roles = RULES({"input_layernorm", MK_ROLE_ATTN_NORM}, {"post_attention_layernorm", MK_ROLE_ATTN_POST_NORM},
                          {"pre_feedforward_layernorm", MK_ROLE_MLP_NORM},
                          {"post_feedforward_layernorm", MK_ROLE_MLP_POST_NORM}, ATTN_RULES, MLP_RULES),
     .norm = MK_NORM_RMS_1P, .gated_mlp = true, .rotary = true, .embed_scale = true, .tied_default = true,
     .eps_default = 1e-6, .act_default = "gelu_pytorch_tanh"},
    /* Phi-3 fuses q/k/v (self_attn.qkv_proj) and gate/up (mlp.gate_up_proj); lm_head is
     * required (not optional) in mergekit's phi3.json */
    {.name = "phi3", .archs = LIST("Phi3ForCausalLM"), .model_types = LIST("phi3"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .global_roles = LLAMA_GLOBALS,
     .layer_roles = RULES(NORM_RULES, {"self_attn.qkv_proj", MK_ROLE_QKV}, {"self_attn.o_proj", MK_ROLE_O},
                          {"mlp.gate_up_proj", MK_ROLE_GATE_UP}, {"mlp.down_proj", MK_ROLE_DOWN}),
     .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true, .eps_default = 1e-5, .act_default = "silu"},
    /* GPT-2: Conv1D weights [in, out]; old checkpoints keep the causal mask as attn.bias */
    {.name = "gpt2", .archs = LIST("GPT2LMHeadModel"), .model_types = LIST("gpt2"), .layer_prefixes = LIST("transformer.h.", "h."),
     .num_layers_key = "n_layer", .vocab_key = "vocab_size", .canonical_prefix = "transformer.",
     .tied_embed = "transformer.wte.weight",
     .global_roles = RULES({"wte", MK_ROLE_TOK_EMBED}, {"wpe", MK_ROLE_POS_EMBED}, {"ln_f", MK_ROLE_FINAL_NORM},
                           {"lm_head", MK_ROLE_LM_HEAD}),
     .layer_roles = RULES({"ln_1", MK_ROLE_ATTN_NORM}, {"attn.c_attn", MK_ROLE_QKV}, {"attn.c_proj", MK_ROLE_O},
                          {"ln_2", MK_ROLE_MLP_NORM}, {"mlp.c_fc", MK_ROLE_UP}, {"mlp.c_proj", MK_ROLE_DOWN},
                          {"attn.bias", MK_ROLE_ATTN_BUFFER}, {"attn.masked_bias", MK_ROLE_ATTN_BUFFER}),
     .norm = MK_NORM_LAYER, .conv1d = true, .tied_default = true, .eps_default = 1e-5, .act_default = "gelu_new"},
    /* Mixtral: experts under block_sparse_moe (checkpoints), or fused under mlp.experts */
    {.name = "mixtral", .archs = LIST("MixtralForCausalLM"), .model_types = LIST("mixtral"), .layer_prefixes = LLAMA_PREFIXES,
     .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size", .tied_embed = "model.embed_tokens.weight",
     .global_roles = LLAMA_GLOBALS,
     .layer_roles = RULES(NORM_RULES, ATTN_RULES, {"block_sparse_moe.gate", MK_ROLE_ROUTER},
                          {"block_sparse_moe.experts.*.w1", MK_ROLE_EXPERT_GATE},
                          {"block_sparse_moe.experts.*.w3", MK_ROLE_EXPERT_UP},
                          {"block_sparse_moe.experts.*.w2", MK_ROLE_EXPERT_DOWN}, QWEN_MOE_RULES),
     .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true, .moe = true, .eps_default = 1e-5, .act_default = "silu"},
    {.name = "qwen2_moe", .archs = LIST("Qwen2MoeForCausalLM"), .model_types = LIST("qwen2_moe"),
     .layer_prefixes = LLAMA_PREFIXES, .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size",
     .tied_embed = "model.embed_tokens.weight", .global_roles = LLAMA_GLOBALS,
     .layer_roles = RULES(NORM_RULES, ATTN_RULES, QWEN_MOE_RULES, {"mlp.shared_expert.gate_proj", MK_ROLE_SHARED_GATE},
                          {"mlp.shared_expert.up_proj", MK_ROLE_SHARED_UP},
                          {"mlp.shared_expert.down_proj", MK_ROLE_SHARED_DOWN},
                          {"mlp.shared_expert_gate", MK_ROLE_SHARED_ROUTER}, MLP_RULES),
     .norm = MK_NORM_RMS, .gated_mlp = true, .rotary = true, .qkv_bias_default = true, .moe = true, .eps_default = 1e-6,
     .act_default = "silu"},
    {.name = "qwen3_moe", .archs = LIST("Qwen3MoeForCausalLM"), .model_types = LIST("qwen3_moe"),
     .layer_prefixes = LLAMA_PREFIXES, .num_layers_key = "num_hidden_layers", .vocab_key = "vocab_size",
     .tied_embed = "model.embed_tokens.weight", .global_roles = LLAMA_GLOBALS,
     .layer_roles = RULES(NORM_RULES, ATTN_RULES, QK_NORM_RULES, QWEN_MOE_RULES, MLP_RULES), .norm = MK_NORM_RMS,
     .gated_mlp = true, .rotary = true, .moe = true, .eps_default = 1e-6, .act_default = "silu"},
};
const size_t mk_arch_ndefs = sizeof mk_arch_defs / sizeof mk_arch_defs[0];

static const char *const role_names[MK_ROLE_COUNT] = {
    "unknown",   "token_embedding", "position_embedding", "embedding",   "lm_head",      "final_norm",
    "attn_norm", "attn_post_norm",  "mlp_norm",           "mlp_post_norm", "q",          "k",
    "v",         "o",               "qkv",                "q_norm",      "k_norm",       "gate",
    "up",        "down",            "gate_up",            "router",      "expert_gate",  "expert_up",
    "expert_down", "experts_gate_up", "experts_down",     "shared_gate", "shared_up",    "shared_down",
    "shared_router", "attn_buffer",
};

const char *mk_role_name(mk_role r) { return r >= 0 && r < MK_ROLE_COUNT ? role_names[r] : "?"; }

bool mk_role_is_embedding(mk_role r) { return r == MK_ROLE_TOK_EMBED || r == MK_ROLE_POS_EMBED || r == MK_ROLE_EMBED_OTHER; }

bool mk_role_is_vocab(mk_role r) { return r == MK_ROLE_TOK_EMBED || r == MK_ROLE_LM_HEAD; }

static bool in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0) return true;
    return false;
}

const mk_arch_def *mk_arch_def_find(const char *name)
{
    for (size_t i = 0; name && i < mk_arch_ndefs; i++)
        if (strcmp(mk_arch_defs[i].name, name) == 0) return &mk_arch_defs[i];
    return NULL;
}

/* Non-negative integer member `key` of the root object, or -1. */
static long json_count(const mk_json *j, const char *key)
{
    uint32_t v = mk_json_get(j, 0, key);
    if (!v) return -1;
    const mk_json_node *n = mk_json_at(j, v);
    return n->type == MK_JSON_NUM && n->d >= 0 && n->d < 1e6 ? (long)n->d : -1;
}

mk_status mk_arch_from_config(const char *config_text, const char *what, mk_arch *a)
{
    memset(a, 0, sizeof *a);
    a->num_layers = -1;
    if (!config_text) return MK_OK;
    size_t len = strlen(config_text);
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    if (mk_json_parse(&j, config_text, len, &lim, what) != MK_OK || mk_json_at(&j, 0)->type != MK_JSON_OBJ) {
        if (j.nodes) mk_json_free(&j);
        return mk_error(MK_ERR_FORMAT, "%s: config.json is not a JSON object", what);
    }
    uint32_t archs = mk_json_get(&j, 0, "architectures");
    uint32_t a0 = archs && mk_json_at(&j, archs)->type == MK_JSON_ARR ? mk_json_at(&j, archs)->first : 0;
    if (a0 && mk_json_at(&j, a0)->type == MK_JSON_STR) a->arch_name = mk_strdup(mk_json_strv(&j, a0));
    uint32_t mt = mk_json_get(&j, 0, "model_type");
    if (mt && mk_json_at(&j, mt)->type == MK_JSON_STR) a->model_type = mk_strdup(mk_json_strv(&j, mt));
    uint32_t tie = mk_json_get(&j, 0, "tie_word_embeddings");
    a->tied = tie && mk_json_at(&j, tie)->type == MK_JSON_BOOL && mk_json_at(&j, tie)->b;
    for (size_t i = 0; i < mk_arch_ndefs && !a->def; i++) {
        const mk_arch_def *d = &mk_arch_defs[i];
        if ((a->arch_name && in_list(d->archs, a->arch_name)) || (!a->arch_name && a->model_type && in_list(d->model_types, a->model_type)))
            a->def = d;
    }
    long nl = json_count(&j, a->def ? a->def->num_layers_key : "num_hidden_layers");
    if (nl < 0 && !a->def && !mk_json_get(&j, 0, "num_hidden_layers")) nl = json_count(&j, "n_layer");
    a->num_layers = nl;
    mk_json_free(&j);
    return MK_OK;
}

mk_status mk_arch_of_source(mk_source *src, mk_arch *a)
{
    char *cfg = NULL;
    size_t len = 0;
    memset(a, 0, sizeof *a);
    a->num_layers = -1;
    if (src->ops->aux_read) MK_TRY(src->ops->aux_read(src, "config.json", 16u << 20, &cfg, &len));
    mk_status s = mk_arch_from_config(cfg, src->path, a);
    free(cfg);
    return s;
}

void mk_arch_free(mk_arch *a)
{
    if (!a) return;
    free(a->arch_name);
    free(a->model_type);
    memset(a, 0, sizeof *a);
}

static bool digits_at(const char *s, size_t *n)
{
    size_t k = 0;
    while (s[k] >= '0' && s[k] <= '9') k++;
    *n = k;
    return k > 0 && k < 8 && (s[k] == '.' || s[k] == 0);
}

bool mk_arch_layer(const mk_arch *a, const char *name, long *layer, size_t *pre, size_t *rest)
{
    size_t nd;
    if (a && a->def) {
        for (const char *const *p = a->def->layer_prefixes; *p; p++) {
            size_t pl = strlen(*p);
            if (strncmp(name, *p, pl) == 0 && digits_at(name + pl, &nd)) {
                *pre = pl;
                *rest = pl + nd;
                *layer = strtol(name + pl, NULL, 10);
                return true;
            }
        }
        return false;
    }
    /* automatic: the first ".<digits>." marks the layer (mergekit's auto inference) */
    for (const char *p = strchr(name, '.'); p; p = strchr(p + 1, '.')) {
        if (digits_at(p + 1, &nd) && p[1 + nd] == '.') {
            *pre = (size_t)(p + 1 - name);
            *rest = *pre + nd;
            *layer = strtol(p + 1, NULL, 10);
            return true;
        }
    }
    return false;
}

/* ---- roles ------------------------------------------------------------------------------- */

/* s[0..n) matches pat exactly, '*' standing for 1-7 digits (captured in *num). */
static bool pat_match(const char *pat, const char *s, size_t n, long *num)
{
    size_t i = 0;
    for (; *pat; pat++) {
        if (*pat == '*') {
            size_t k = 0;
            while (i + k < n && k < 8 && s[i + k] >= '0' && s[i + k] <= '9') k++;
            if (k == 0 || k == 8) return false;
            *num = strtol(s + i, NULL, 10);
            i += k;
        } else {
            if (i >= n || s[i] != *pat) return false;
            i++;
        }
    }
    return i == n;
}

/* The rule matching the whole of s[0..n) (a stored parameter such as "attn.bias" or a fused
 * "mlp.experts.down_proj"), else the module part before ".weight" / ".bias". */
static bool match_rules(const mk_role_rule *rules, const char *s, mk_tensor_role *r)
{
    size_t n = strlen(s);
    for (int pass = 0; pass < 2 && rules; pass++) {
        size_t m = n;
        bool bias = false;
        if (pass == 1) {
            if (mk_str_ends_with(s, ".weight")) m = n - 7;
            else if (mk_str_ends_with(s, ".bias")) m = n - 5, bias = true;
            else return false;
        }
        for (const mk_role_rule *q = rules; q->pat; q++) {
            long num = -1;
            if (pat_match(q->pat, s, m, &num)) {
                r->role = q->role;
                r->bias = bias;
                if (q->role >= MK_ROLE_ROUTER && q->role <= MK_ROLE_EXPERTS_DOWN) r->expert = num;
                return true;
            }
        }
    }
    return false;
}

/* Automatic rules: the module's last name component, as mergekit and the loaders name
 * embeddings and heads across families (embed_tokens, wte, word_embeddings, embed_in,
 * tok_embeddings; wpe, position_embeddings; lm_head, embed_out), and the usual final norms. */
static void auto_role(const char *name, mk_tensor_role *r)
{
    size_t n = strlen(name);
    if (mk_str_ends_with(name, ".weight")) n -= 7;
    else if (mk_str_ends_with(name, ".bias")) n -= 5, r->bias = true;
    size_t b = n;
    while (b > 0 && name[b - 1] != '.') b--;
    char leaf[128];
    size_t ll = n - b < sizeof leaf - 1 ? n - b : sizeof leaf - 1;
    memcpy(leaf, name + b, ll);
    leaf[ll] = 0;
    static const char *const finals[] = {"model.norm", "transformer.ln_f", "ln_f", "model.final_layernorm",
                                         "gpt_neox.final_layer_norm", NULL};
    static const char *const tok[] = {"embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings", NULL};
    /* the projections' usual names across families (Llama, GPT-2, T5-style, Mixtral, OPT) */
    static const struct {
        mk_role role;
        const char *const names[6];
    } proj[] = {
        {MK_ROLE_Q, {"q_proj", "query", "q", "wq", NULL}},           {MK_ROLE_K, {"k_proj", "key", "k", "wk", NULL}},
        {MK_ROLE_V, {"v_proj", "value", "v", "wv", NULL}},           {MK_ROLE_O, {"o_proj", "out_proj", "wo", "o", NULL}},
        {MK_ROLE_GATE, {"gate_proj", "w1", "gate", NULL}},           {MK_ROLE_UP, {"up_proj", "w3", "c_fc", "fc1", "up", NULL}},
        {MK_ROLE_DOWN, {"down_proj", "w2", "fc2", "down", NULL}},
    };
    if (strcmp(leaf, "lm_head") == 0 || strcmp(leaf, "embed_out") == 0) r->role = MK_ROLE_LM_HEAD;
    else if (in_list(tok, leaf)) r->role = MK_ROLE_TOK_EMBED;
    else if (strcmp(leaf, "wpe") == 0 || strcmp(leaf, "position_embeddings") == 0) r->role = MK_ROLE_POS_EMBED;
    else if (strstr(leaf, "embed")) r->role = MK_ROLE_EMBED_OTHER;
    for (const char *const *f = finals; *f && r->role == MK_ROLE_UNKNOWN; f++)
        if (strlen(*f) == n && strncmp(name, *f, n) == 0) r->role = MK_ROLE_FINAL_NORM;
    for (size_t i = 0; i < sizeof proj / sizeof proj[0] && r->role == MK_ROLE_UNKNOWN; i++)
        if (in_list(proj[i].names, leaf)) r->role = proj[i].role;
}

mk_tensor_role mk_arch_role(const mk_arch *a, const char *name)
{
    mk_tensor_role r = {MK_ROLE_UNKNOWN, false, -1, -1};
    long layer;
    size_t pre, rest;
    bool in_layer = mk_arch_layer(a, name, &layer, &pre, &rest);
    if (in_layer) r.layer = layer;
    const mk_arch_def *d = a ? a->def : NULL;
    if (d) {
        if (in_layer && name[rest] == '.') {
            if (match_rules(d->layer_roles, name + rest + 1, &r)) return r;
        } else if (!in_layer) {
            const char *s = name;
            if (d->canonical_prefix && mk_str_starts_with(s, d->canonical_prefix)) s += strlen(d->canonical_prefix);
            if (match_rules(d->global_roles, s, &r)) return r;
        }
    }
    auto_role(name, &r);
    return r;
}

bool mk_arch_is_post(const mk_arch *a, const char *name)
{
    mk_tensor_role r = mk_arch_role(a, name);
    return r.layer < 0 && (r.role == MK_ROLE_FINAL_NORM || r.role == MK_ROLE_LM_HEAD);
}

bool mk_arch_is_embed(const mk_arch *a, const char *name)
{
    mk_tensor_role r = mk_arch_role(a, name);
    return r.layer < 0 && mk_role_is_vocab(r.role);
}

char *mk_arch_canonical(const mk_arch *a, const char *name)
{
    const char *cp = a->def ? a->def->canonical_prefix : NULL;
    if (cp && !mk_str_starts_with(name, cp) && !mk_str_starts_with(name, "lm_head."))
        return mk_asprintf("%s%s", cp, name);
    return mk_strdup(name);
}

char *mk_arch_alias(const mk_arch *a, const char *name)
{
    const char *cp = a->def ? a->def->canonical_prefix : NULL;
    if (!cp || mk_str_starts_with(name, "lm_head.")) return NULL;
    if (mk_str_starts_with(name, cp)) return mk_strdup(name + strlen(cp));
    return mk_asprintf("%s%s", cp, name);
}

bool mk_arch_is_optional(const mk_arch *a, const char *name)
{
    if (a->def && !a->def->tied_embed) return false; /* e.g. phi3: lm_head is required */
    return mk_str_starts_with(name, "lm_head.");
}

const char *mk_arch_tied_name(const mk_arch *a, const char *name)
{
    if (strcmp(name, "lm_head.weight") != 0) return NULL;
    if (a->def) return a->def->tied_embed;
    return "model.embed_tokens.weight";
}

bool mk_arch_is_conv1d(const mk_arch *a)
{
    if (a && a->def) return a->def->conv1d;
    /* unknown architectures: the model types whose linear layers are Conv1D */
    return a && a->model_type && (strcmp(a->model_type, "gpt2") == 0 || strcmp(a->model_type, "openai-gpt") == 0);
}

const char *mk_arch_layers_key(const mk_arch *a) { return a && a->def ? a->def->num_layers_key : "num_hidden_layers"; }

const char *mk_arch_vocab_key(const mk_arch *a) { return a && a->def ? a->def->vocab_key : "vocab_size"; }

char *mk_arch_rename_layer(const char *name, size_t pre, size_t rest, long layer)
{
    return mk_asprintf("%.*s%ld%s", (int)pre, name, layer, name + rest);
}
