/* arch.h - what a checkpoint's tensors are, per architecture: the one place that knows
 * model families.
 *
 * Owns: the architecture table (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma2, Phi-3, GPT-2,
 * Mixtral, Qwen2-MoE, Qwen3-MoE) mapping config.json's `architectures[0]` / `model_type` to
 *   - where the layers are in tensor names (layer prefix, the config key of the layer
 *     count), which non-layer tensors come after the layers ("post": final norm, lm_head)
 *     and which have vocabulary-sized rows;
 *   - the ROLE of every tensor name (token / position embedding, lm_head, the norms, q/k/v/o,
 *     fused qkv, gate/up/down, fused gate_up, router, experts, shared experts), with its
 *     layer and expert index and whether it is a weight or a bias;
 *   - the family's traits a forward pass needs (norm kind, gated MLP, rotary or learned
 *     positions, Conv1D layout, q/k norms, sandwich norms, scaled embeddings, defaults of
 *     config fields); model/config.h reads the numbers.
 * Names no architecture lists keep the automatic rules mergekit uses for unknown models:
 * the first ".<digits>." marks the layer, and the usual embedding / head / final-norm
 * module names are recognised by their last component.
 * Must not: read files (it is given config.json's text or an mk_source) or know what
 * merge, quant, lora or nn do with a role.
 */
#ifndef MK_ARCH_H
#define MK_ARCH_H

#include "../core/mk_tensor.h"

/* What a tensor is. Layer roles carry the layer index; expert roles also the expert. */
typedef enum mk_role {
    MK_ROLE_UNKNOWN = 0,  /* nothing the table or the automatic rules recognise */
    MK_ROLE_TOK_EMBED,    /* token embedding table [vocab, hidden] */
    MK_ROLE_POS_EMBED,    /* learned position table [positions, hidden] (GPT-2 wpe) */
    MK_ROLE_EMBED_OTHER,  /* another embedding table (automatic rules only) */
    MK_ROLE_LM_HEAD,      /* output projection [vocab, hidden] */
    MK_ROLE_FINAL_NORM,
    MK_ROLE_ATTN_NORM,    /* before attention (input_layernorm, ln_1) */
    MK_ROLE_ATTN_POST_NORM, /* after attention, before the residual add (Gemma2) */
    MK_ROLE_MLP_NORM,     /* before the MLP (post_attention_layernorm in Llama, ln_2) */
    MK_ROLE_MLP_POST_NORM,  /* after the MLP, before the residual add (Gemma2) */
    MK_ROLE_Q,
    MK_ROLE_K,
    MK_ROLE_V,
    MK_ROLE_O,
    MK_ROLE_QKV,          /* fused [q; k; v] rows (Phi-3), or GPT-2's c_attn */
    MK_ROLE_Q_NORM,       /* per-head RMSNorm of q / k (Qwen3) */
    MK_ROLE_K_NORM,
    MK_ROLE_GATE,
    MK_ROLE_UP,
    MK_ROLE_DOWN,
    MK_ROLE_GATE_UP,      /* fused [gate; up] rows (Phi-3) */
    MK_ROLE_ROUTER,       /* MoE gate [experts, hidden] */
    MK_ROLE_EXPERT_GATE,  /* expert MLPs (Mixtral w1 / w3 / w2) */
    MK_ROLE_EXPERT_UP,
    MK_ROLE_EXPERT_DOWN,
    MK_ROLE_EXPERTS_GATE_UP, /* all experts fused in one 3-D tensor [experts, 2f, hidden] */
    MK_ROLE_EXPERTS_DOWN,    /* [experts, hidden, f] */
    MK_ROLE_SHARED_GATE,  /* Qwen2-MoE shared expert */
    MK_ROLE_SHARED_UP,
    MK_ROLE_SHARED_DOWN,
    MK_ROLE_SHARED_ROUTER, /* its sigmoid gate [1, hidden] */
    MK_ROLE_ATTN_BUFFER,  /* a stored mask buffer, not a weight (old GPT-2 attn.bias) */
    MK_ROLE_COUNT
} mk_role;

typedef struct mk_tensor_role {
    mk_role role;
    bool bias;    /* the module's bias, not its weight */
    long layer;   /* -1 outside the layers */
    long expert;  /* -1 unless an expert role */
} mk_tensor_role;

const char *mk_role_name(mk_role r);
/* Embedding tables (nn.Embedding: never a Linear layer): token, position, other. */
bool mk_role_is_embedding(mk_role r);
/* Rows indexed by the vocabulary: the token embedding and lm_head. */
bool mk_role_is_vocab(mk_role r);

typedef enum mk_norm_kind {
    MK_NORM_RMS = 0,   /* x / rms(x) * w */
    MK_NORM_RMS_1P,    /* x / rms(x) * (1 + w), computed in f32 (Gemma) */
    MK_NORM_LAYER,     /* (x - mean) / std * w + b (GPT-2) */
} mk_norm_kind;

/* One name-to-role rule: `pat` is matched against the rest of the module name (after the
 * layer prefix and number for layer rules, after the canonical prefix for the others);
 * '*' in it stands for an expert number. */
typedef struct mk_role_rule {
    const char *pat;
    mk_role role;
} mk_role_rule;

typedef struct mk_arch_def {
    const char *name;               /* table name, e.g. "llama" */
    const char *const *archs;       /* config architectures[0] values, NULL-terminated */
    const char *const *model_types; /* config model_type values, NULL-terminated */
    const char *const *layer_prefixes; /* e.g. "model.layers." */
    const char *num_layers_key;     /* e.g. "num_hidden_layers" */
    const char *const *post;        /* name prefixes of post weights */
    const char *const *embed;       /* name prefixes of vocabulary-sized weights */
    const char *vocab_key;          /* e.g. "vocab_size" */
    /* Checkpoints of some architectures store names without the module prefix
     * (GPT-2's "h.0.attn..." for "transformer.h.0.attn..."); mergekit lists them as
     * aliases and writes the prefixed (canonical) name. NULL = none. */
    const char *canonical_prefix;
    /* Where a tied lm_head's values live: the input embedding's name; NULL when lm_head
     * is required (Phi-3). */
    const char *tied_embed;
    /* roles: of modules outside the layers (full module names, without the canonical
     * prefix), and of modules inside a layer (after "<prefix><N>.") */
    const mk_role_rule *global_roles;
    const mk_role_rule *layer_roles;
    /* traits */
    mk_norm_kind norm;
    bool gated_mlp;        /* act(gate) * up, then down; else act(up) then down */
    bool rotary;           /* RoPE; else learned positions */
    bool conv1d;           /* weights stored [in, out] (GPT-2 Conv1D) */
    bool embed_scale;      /* embeddings times sqrt(hidden) (Gemma) */
    bool tied_default;     /* tie_word_embeddings when config.json does not say */
    bool qkv_bias_default; /* q/k/v projections have biases (Qwen2) */
    bool moe;
    double eps_default;    /* the config class's norm epsilon default */
    const char *act_default; /* the config class's activation default */
} mk_arch_def;

typedef struct mk_arch {
    const mk_arch_def *def; /* NULL = automatic (pattern) */
    char *arch_name;        /* architectures[0] from config.json, or NULL */
    char *model_type;
    long num_layers;        /* from config.json, -1 when unknown */
    bool tied;              /* tie_word_embeddings true */
} mk_arch;

/* Identify the architecture from config.json text (NULL = none: automatic rules). */
mk_status mk_arch_from_config(const char *config_text, const char *what, mk_arch *a);
/* The same from a model's config.json read through its source (absent: automatic). */
mk_status mk_arch_of_source(mk_source *src, mk_arch *a);
void mk_arch_free(mk_arch *a);
/* The table row named `name` ("llama", ...) or NULL. */
const mk_arch_def *mk_arch_def_find(const char *name);

/* The role of a tensor name ("model.layers.3.self_attn.q_proj.weight" -> Q, layer 3).
 * With an architecture its table decides, and names it does not list fall back to the
 * automatic rules, as do all names when a->def is NULL. `a` may be NULL (automatic). */
mk_tensor_role mk_arch_role(const mk_arch *a, const char *name);

/* Layer of a tensor name: true with *layer, and the name split as
 * name = prefix (len *pre) + layer digits + rest (from *rest). */
bool mk_arch_layer(const mk_arch *a, const char *name, long *layer, size_t *pre, size_t *rest);
bool mk_arch_is_post(const mk_arch *a, const char *name);
/* Vocabulary-sized rows: token embedding and lm_head (their row counts may be cut to a
 * common vocabulary). */
bool mk_arch_is_embed(const mk_arch *a, const char *name);
/* The canonical (output) spelling of a tensor name: `name` itself, or with the
 * architecture's prefix added. Allocates. */
char *mk_arch_canonical(const mk_arch *a, const char *name);
/* The other spelling of `name` under which a checkpoint may store it (prefix added or
 * removed), or NULL. Allocates. */
char *mk_arch_alias(const mk_arch *a, const char *name);
/* For an optional head tensor ("lm_head.weight") missing from a model with tied
 * embeddings: the tensor that holds its values ("model.embed_tokens.weight"), or NULL. */
const char *mk_arch_tied_name(const mk_arch *a, const char *name);
/* Optional tensors (lm_head): a model may lack them (tied embeddings). */
bool mk_arch_is_optional(const mk_arch *a, const char *name);
/* Weights stored [in, out] (Conv1D) rather than nn.Linear's [out, in]. */
bool mk_arch_is_conv1d(const mk_arch *a);
/* The config key holding the layer count / the vocabulary size. */
const char *mk_arch_layers_key(const mk_arch *a);
const char *mk_arch_vocab_key(const mk_arch *a);

/* "prefix" + layer + "rest" for a renumbered layer. Allocates. */
char *mk_arch_rename_layer(const char *name, size_t pre, size_t rest, long layer);

extern const mk_arch_def mk_arch_defs[];
extern const size_t mk_arch_ndefs;

#endif
