/* recipe.h - mergekit's YAML recipe schema, parsed and validated (reference/
 * mergekit-semantics.md section 1).
 *
 * Owns: turning YAML text into an mk_recipe; every structural error (unknown key, wrong
 * type, missing field) is reported as "FILE:LINE:COL: ..." before any model is opened.
 * The only file in the project that includes yaml.h; it also parses mergekit-moe configs (moe.h).
 * Must not: open models or know tensor names.
 */
#ifndef MK_RECIPE_H
#define MK_RECIPE_H

#include "../core/mk_core.h"
#include "../core/mk_dtype.h"

/* Where something was written in the recipe, for messages. */
typedef struct mk_pos {
    int line, col; /* 1-based; 0 = unknown */
} mk_pos;

/* A parameter setting: scalar, gradient (list of numbers), or a list of
 * {filter, value} conditionals whose values are themselves settings. */
typedef enum mk_pv_kind { MK_PV_SCALAR, MK_PV_GRADIENT, MK_PV_COND } mk_pv_kind;

typedef struct mk_pvalue mk_pvalue;
typedef struct mk_pcond {
    char *filter; /* NULL or "*" = matches every tensor */
    mk_pvalue *value;
} mk_pcond;

struct mk_pvalue {
    mk_pv_kind kind;
    double scalar;
    size_t n;       /* gradient length or number of conditionals */
    double *grad;
    mk_pcond *cond;
    mk_pos pos;
};

typedef struct mk_param {
    char *name;
    mk_pvalue value;
    mk_pos pos;
} mk_param;

typedef struct mk_params {
    size_t n;
    mk_param *p;
} mk_params;

/* "path[@revision][+lora[@revision]]" or the dict form. path and lora are local paths or
 * Hugging Face model ids; mk_recipe_load resolves ids to their cached snapshot folders
 * (core/mk_hub.h), so after it they are local paths. */
typedef struct mk_model_ref {
    char *text;  /* as written (string form) or rebuilt from the dict form */
    char *path;
    char *lora;  /* NULL when none */
    char *revision, *lora_revision; /* NULL when none */
    char *key;   /* identity: the canonical paths (see mk_model_key); equal keys are one model */
    mk_pos pos;
} mk_model_ref;

typedef struct mk_input_model {
    mk_model_ref ref;
    mk_params params;
} mk_input_model;

typedef struct mk_input_slice {
    mk_model_ref ref;
    bool has_range;
    int64_t start, end; /* [start, end) */
    mk_params params;
    mk_pos pos;
} mk_input_slice;

typedef struct mk_output_slice {
    size_t n_sources;
    mk_input_slice *sources;
    mk_params params;
    bool has_base;
    mk_model_ref base;
    mk_pos pos;
} mk_output_slice;

/* One entry of `tokenizer: tokens:`: where a token's embedding rows come from. */
typedef enum mk_toksrc {
    MK_TOKSRC_DEFAULT = 0, /* no source: as if not listed (only adds the token) */
    MK_TOKSRC_MODEL,       /* source: MODEL - that model's row of the token */
    MK_TOKSRC_MODEL_TOKEN, /* source: {kind: model_token, model, token | token_id} */
    MK_TOKSRC_ZERO,        /* source: {kind: zero} */
} mk_toksrc;

typedef struct mk_token_override {
    char *token;
    mk_toksrc kind;
    char *model;           /* MODEL / model_token's model, as written */
    char *src_token;       /* model_token by token; NULL = by src_id */
    int64_t src_id;
    bool force;            /* every model gets the source's row, even one that has the token */
    mk_pos pos, model_pos;
} mk_token_override;

typedef struct mk_recipe {
    char *path;     /* recipe file, for messages */
    char *text;     /* the YAML as given (written to mergekit_config.yml) */
    size_t text_len;
    char *method;
    mk_pos method_pos;
    bool has_base;
    mk_model_ref base;
    size_t n_models;
    mk_input_model *models; /* `models:` syntax */
    size_t n_slices;
    mk_output_slice *slices; /* `slices:` syntax */
    mk_params params;        /* top-level parameters */
    mk_dtype dtype, out_dtype; /* MK_DTYPE_NONE when absent */
    char *tokenizer_source;  /* NULL, "base", "union" or a model reference */
    mk_pos tokenizer_pos;
    char *tokenizer_key;     /* a model reference's mk_model_key once resolved (mk_recipe_load) */
    size_t n_token_overrides;
    mk_token_override *token_overrides; /* tokenizer: tokens: (mergekit TokenEmbeddingConfig) */
    long pad_to_multiple_of; /* tokenizer: pad_to_multiple_of; 0 = none */
    char *chat_template;     /* NULL, "auto" (the models' most common) or a Jinja template's text */
    mk_pos chat_template_pos;
    bool has_seed;
    uint64_t seed;
} mk_recipe;

/* Parse YAML text. `path` names it in messages. */
mk_status mk_recipe_parse(const char *text, size_t len, const char *path, mk_recipe *r);
/* Read and parse a recipe file (at most 4 MB), then resolve every model reference that
 * names a Hugging Face model id in the local cache (mk_hub_resolve; a local path wins):
 * a malformed id is a recipe error, an id the cache lacks an I/O error, both naming the
 * recipe line. */
mk_status mk_recipe_load(const char *path, mk_recipe *r);
void mk_recipe_free(mk_recipe *r);

/* The identity of a model reference: the canonical path of the model (symlinks resolved,
 * absolute) when it exists, else the path with "." components, repeated and trailing slashes
 * removed; "+" and the adapter's the same way. So base, base/, ./base and a link to it are
 * one model. NULL when out of memory. */
char *mk_model_key(const char *path, const char *lora);

/* Every distinct model in the recipe (by key), in order of first mention (base first
 * when set). Returned array and strings are borrowed from r. */
size_t mk_recipe_models(const mk_recipe *r, const mk_model_ref **out, size_t max);

/* Evaluate a setting for tensor `name` at interpolation position t (mergekit's rules:
 * gradients interpolate linearly over t in [0, 1]; the first conditional whose filter is
 * absent, "*", or a substring of the name wins). Returns false when no conditional
 * matched ("not set"). */
bool mk_pvalue_eval(const mk_pvalue *v, const char *name, double t, double *out);
/* Look up `name` in a params block; NULL when absent. */
const mk_param *mk_params_find(const mk_params *ps, const char *name);

#endif
