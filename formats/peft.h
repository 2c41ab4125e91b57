/* peft.h - PEFT LoRA adapters (reference/formats-security-compression.md 1.7): the
 * adapter_config.json schema, parsed and validated from a buffer; the adapter folder
 * (config + adapter_model.safetensors, or adapter_model.bin read without unpickling)
 * opened with every tensor paired into LoRA modules; the binding of those modules onto a
 * base model's tensors; and the text of the config we write for adapters we make.
 *
 * Owns: PEFT's naming and matching rules - `base_model.model.` + module path +
 * `.lora_A.weight` [r, in] / `.lora_B.weight` [out, r] (`.lora_embedding_A` [r, vocab] /
 * `.lora_embedding_B` [dim, r] for embeddings), other tensors replacing the base's
 * (modules_to_save, biases); per-module r and alpha through rank_pattern / alpha_pattern
 * (PEFT's get_pattern_key: the first key k with `(.*\.)?(k)$` matching the module name);
 * target_modules / exclude_modules / layers_to_transform as check_target_module_exists
 * applies them; scaling alpha / r, or alpha / sqrt(r) with use_rslora.
 * Every adapter file is hostile: r must be a positive integer matching the tensor shapes,
 * A and B must come in pairs whose shapes agree with each other and with the base tensor,
 * alpha must be a finite number, regular expressions must compile.
 * Must not: compute deltas (lora/ does) or print.
 */
#ifndef MK_PEFT_H
#define MK_PEFT_H

#include "../core/mk_tensor.h"
#include "../model/arch.h"

#define MK_PEFT_CONFIG "adapter_config.json"
#define MK_PEFT_WEIGHTS "adapter_model.safetensors"
#define MK_PEFT_WEIGHTS_BIN "adapter_model.bin" /* torch.save; read without unpickling */
#define MK_PEFT_PREFIX "base_model.model."
#define MK_PEFT_MAX_R 65536
/* The bias of a LoRA-wrapped layer, saved whole: PEFT's key for it (the wrapped layer is
 * <module>.base_layer; LoraConfig bias="lora_only" saves these, and loading puts them back
 * into the base layer). The base's tensor is <module>.bias. */
#define MK_PEFT_LAYER_BIAS "base_layer.bias"

typedef struct mk_peft_pattern {
    char *key;    /* a regular expression over module names (Python syntax, the common subset) */
    double value; /* r (a positive integer) or alpha */
} mk_peft_pattern;

typedef enum mk_peft_match {
    MK_PEFT_MATCH_NONE = 0, /* absent / null */
    MK_PEFT_MATCH_LIST,     /* names: a module matches when it equals one or ends with ".name" */
    MK_PEFT_MATCH_REGEX,    /* one regular expression that must match the whole module name */
    MK_PEFT_MATCH_ALL_LINEAR, /* "all-linear": every linear layer except the output layer */
} mk_peft_match;

typedef struct mk_peft_names {
    mk_peft_match kind;
    size_t n;
    char **names;  /* LIST */
    char *regex;   /* REGEX, as written */
    void *re;      /* compiled (regex_t) */
} mk_peft_names;

typedef struct mk_peft_config {
    long r;
    double alpha;
    bool use_rslora, fan_in_fan_out, lora_bias;
    mk_peft_names targets, exclude;
    size_t n_save;
    char **modules_to_save;
    size_t n_rank, n_alpha;
    mk_peft_pattern *rank_pattern, *alpha_pattern;
    void *rank_re, *alpha_re;    /* compiled pattern keys, one per entry */
    bool has_layers;             /* layers_to_transform given */
    size_t n_layers;
    long *layers;
    size_t n_layers_pattern;
    char **layers_pattern;
    char *base_model;            /* base_model_name_or_path, or NULL */
    char *task_type;
} mk_peft_config;

/* Parse and validate adapter_config.json text (the fuzz entry point). `what` names it. */
mk_status mk_peft_config_parse(const char *text, size_t len, const char *what, mk_peft_config *c);
void mk_peft_config_free(mk_peft_config *c);

/* r and alpha of a module after rank_pattern / alpha_pattern. */
void mk_peft_module_ra(const mk_peft_config *c, const char *module, long *r, double *alpha);
/* PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA. */
double mk_peft_scaling(bool rslora, long r, double alpha);
/* Whether PEFT would put a LoRA layer on `module` (target_modules, exclude_modules,
 * modules_to_save, layers_to_transform). ALL_LINEAR is decided by the caller. */
bool mk_peft_targets(const mk_peft_config *c, const char *module);

/* One LoRA module of an adapter: tensor indices into the adapter's tensor list. */
typedef struct mk_peft_module {
    char *module;     /* module path without the prefix, e.g. model.layers.0.self_attn.q_proj */
    size_t a, b;      /* lora_A [r, in] / lora_B [out, r] (or the embedding pair) */
    long bias;        /* lora_B.bias [out], or -1 */
    bool embedding;   /* lora_embedding_A/B: delta = (B A)^T, [vocab, dim] */
    long r;
    double alpha, scale;
} mk_peft_module;

/* A tensor that replaces the base's tensor of the same name (modules_to_save, biases). */
typedef struct mk_peft_full {
    char *name;       /* the base's tensor name */
    size_t index;     /* in the adapter's tensor list */
} mk_peft_full;

typedef struct mk_peft_layout {
    size_t n_modules, n_full;
    mk_peft_module *m;
    mk_peft_full *full;
} mk_peft_layout;

/* Pair an adapter's tensors into modules and validate them against each other and the
 * config (buffer-level: tensor headers only). `what` names the adapter in messages. */
mk_status mk_peft_layout_build(const mk_peft_config *c, const mk_tensor_info *t, size_t n, const char *what,
                               mk_peft_layout *out);
void mk_peft_layout_free(mk_peft_layout *l);

typedef struct mk_peft_adapter {
    char *path;
    char *config_path;
    mk_peft_config cfg;
    mk_source *src;   /* adapter_model.safetensors */
    mk_peft_layout lay;
} mk_peft_adapter;

/* Open an adapter folder (or its adapter_config.json). */
mk_status mk_peft_open(const char *path, mk_peft_adapter **out);
void mk_peft_close(mk_peft_adapter *a);

/* An adapter bound to a base model: for every module the base tensor and orientation. */
typedef struct mk_peft_bound {
    size_t base;       /* the base tensor index (its .weight) */
    size_t a, b;       /* adapter tensor indices */
    bool transposed;   /* delta = (B A)^T: embeddings and Conv1D (fan_in_fan_out) weights */
    long r;
    double scale;
    long wsrc;         /* adapter tensor that replaces W before the update (PEFT saves a
                          targeted embedding's base_layer.weight), or -1 */
    bool round_update; /* round the update to W's dtype before adding it (PEFT's
                          Embedding.merge casts it; Linear.merge adds the f32 update) */
} mk_peft_bound;

typedef struct mk_peft_bound_extra {
    size_t base, src;  /* base tensor, adapter tensor */
    bool add;          /* base + scale * src (lora_B.bias); else replace */
    double scale;
} mk_peft_bound_extra;

typedef struct mk_peft_binding {
    size_t n, n_extra;
    mk_peft_bound *t;
    mk_peft_bound_extra *x;
} mk_peft_binding;

/* The index of base tensor `name`, also when the adapter and the base spell it differently:
 * PEFT names modules by their path in the model ("transformer.h.0.attn.c_attn"), which
 * GPT-2's checkpoints store without the prefix ("h.0.attn.c_attn.weight"); `arch` (the
 * base's, or NULL) knows the other spelling. -1 when absent. */
long mk_peft_base_find(mk_source *base, const mk_arch *arch, const char *name);

/* Map the adapter onto `base`: a module whose weight is missing from the base, a shape
 * that disagrees, or a target_modules entry that matches nothing in the base is an error
 * naming it. Conv1D layout (fan_in_fan_out) is taken from the base's config.json
 * (model_type gpt2 / openai-gpt), as PEFT takes it from the module type; names are found
 * under either spelling (mk_peft_base_find). */
mk_status mk_peft_bind(const mk_peft_adapter *a, mk_source *base, mk_peft_binding *out);
void mk_peft_binding_free(mk_peft_binding *b);

/* ---- writing -------------------------------------------------------------------------- */

typedef struct mk_peft_out_module {
    const char *module;   /* full module path */
    long r;               /* its rank (rank_pattern / alpha_pattern entries when != config r) */
} mk_peft_out_module;

/* adapter_config.json text for an adapter we write: scale 1 everywhere (lora_alpha = r,
 * and alpha = rank in patterns), target_modules = the modules' last name components,
 * keys sorted as PEFT's save_pretrained writes them. layer_bias: the adapter saves biases of
 * LoRA layers whole (MK_PEFT_LAYER_BIAS), written as "bias": "lora_only" (else "none"). */
char *mk_peft_config_text(const char *base_model, long r, const mk_peft_out_module *m, size_t n,
                          const char *const *modules_to_save, size_t n_save, bool lora_bias, bool layer_bias,
                          bool fan_in_fan_out);

#endif
