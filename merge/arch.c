/* arch.c - see arch.h. Tensor names follow the Hugging Face transformers modules
 * (modeling_llama.py, modeling_gpt2.py, ...) and mergekit's architecture JSON files. */
#include "arch.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Decoder-only models whose modules live under model.layers.N and end with model.norm
 * and lm_head (transformers' LlamaForCausalLM layout and its many descendants). */
#define LLAMA_LIKE_PREFIXES LIST("model.layers.")
#define LLAMA_LIKE_POST LIST("model.norm.", "lm_head.")
#define LLAMA_LIKE_EMBED LIST("model.embed_tokens.", "lm_head.")

/* Name lists from mergekit's _data/architectures JSON files (llama, mistral, qwen2, qwen3,
 * gemma, gemma2, phi3, gpt2): pre weights, layer templates, post weights. */
const mk_arch_def mk_arch_defs[] = {
    {"llama", LIST("LlamaForCausalLM", "LLaMaForCausalLM", "LLaMAForCausalLM"), LIST("llama"), LLAMA_LIKE_PREFIXES,
     "num_hidden_layers", LLAMA_LIKE_POST, LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    {"mistral", LIST("MistralForCausalLM"), LIST("mistral"), LLAMA_LIKE_PREFIXES, "num_hidden_layers",
     LLAMA_LIKE_POST, LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    {"qwen2", LIST("Qwen2ForCausalLM"), LIST("qwen2"), LLAMA_LIKE_PREFIXES, "num_hidden_layers", LLAMA_LIKE_POST,
     LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    {"qwen3", LIST("Qwen3ForCausalLM"), LIST("qwen3"), LLAMA_LIKE_PREFIXES, "num_hidden_layers", LLAMA_LIKE_POST,
     LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    /* Gemma always ties lm_head to the embeddings; the checkpoint has no lm_head */
    {"gemma", LIST("GemmaForCausalLM"), LIST("gemma"), LLAMA_LIKE_PREFIXES, "num_hidden_layers", LLAMA_LIKE_POST,
     LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    {"gemma2", LIST("Gemma2ForCausalLM"), LIST("gemma2"), LLAMA_LIKE_PREFIXES, "num_hidden_layers",
     LLAMA_LIKE_POST, LLAMA_LIKE_EMBED, "vocab_size", NULL, "model.embed_tokens.weight"},
    /* Phi-3 fuses q/k/v (self_attn.qkv_proj) and gate/up (mlp.gate_up_proj); lm_head is
     * required (not optional) in mergekit's phi3.json */
    {"phi3", LIST("Phi3ForCausalLM"), LIST("phi3"), LLAMA_LIKE_PREFIXES, "num_hidden_layers", LLAMA_LIKE_POST,
     LLAMA_LIKE_EMBED, "vocab_size", NULL, NULL},
    {"gpt2", LIST("GPT2LMHeadModel"), LIST("gpt2"), LIST("transformer.h.", "h."), "n_layer",
     LIST("transformer.ln_f.", "ln_f.", "lm_head."), LIST("transformer.wte.", "wte.", "lm_head."), "vocab_size",
     "transformer.", "transformer.wte.weight"},
};
const size_t mk_arch_ndefs = sizeof mk_arch_defs / sizeof mk_arch_defs[0];

static bool in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0) return true;
    return false;
}

static bool prefix_in(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (mk_str_starts_with(s, *list)) return true;
    return false;
}

mk_status mk_arch_from_config(const char *config_text, const char *what, mk_arch *a)
{
    memset(a, 0, sizeof *a);
    a->num_layers = -1;
    if (!config_text) return MK_OK;
    cJSON *cfg = cJSON_Parse(config_text);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return mk_error(MK_ERR_FORMAT, "%s: config.json is not a JSON object", what);
    }
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (cJSON_IsString(a0)) a->arch_name = mk_strdup(a0->valuestring);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    if (cJSON_IsString(mt)) a->model_type = mk_strdup(mt->valuestring);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    a->tied = cJSON_IsTrue(tie);
    for (size_t i = 0; i < mk_arch_ndefs && !a->def; i++) {
        const mk_arch_def *d = &mk_arch_defs[i];
        if ((a->arch_name && in_list(d->archs, a->arch_name)) || (!a->arch_name && a->model_type && in_list(d->model_types, a->model_type)))
            a->def = d;
    }
    const char *key = a->def ? a->def->num_layers_key : "num_hidden_layers";
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!nl && !a->def) nl = cJSON_GetObjectItemCaseSensitive(cfg, "n_layer");
    if (cJSON_IsNumber(nl) && nl->valuedouble >= 0 && nl->valuedouble < 1e6) a->num_layers = (long)nl->valuedouble;
    cJSON_Delete(cfg);
    return MK_OK;
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
    if (a->def) {
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

bool mk_arch_is_post(const mk_arch *a, const char *name)
{
    if (a->def) return prefix_in(a->def->post, name);
    /* automatic: the usual final-norm and head names */
    static const char *const post[] = {"model.norm.", "lm_head.", "transformer.ln_f.", "model.final_layernorm.",
                                       "embed_out.", "gpt_neox.final_layer_norm.", NULL};
    return prefix_in(post, name);
}

bool mk_arch_is_embed(const mk_arch *a, const char *name)
{
    if (a->def) return prefix_in(a->def->embed, name);
    static const char *const embed[] = {"model.embed_tokens.", "lm_head.", "transformer.wte.", "embed_out.",
                                        "gpt_neox.embed_in.", "wte.", NULL};
    return prefix_in(embed, name);
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

char *mk_arch_rename_layer(const char *name, size_t pre, size_t rest, long layer)
{
    return mk_asprintf("%.*s%ld%s", (int)pre, name, layer, name + rest);
}
