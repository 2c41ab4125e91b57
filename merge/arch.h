/* arch.h - where the layers are in a checkpoint's tensor names, per architecture.
 *
 * Owns: the architecture table (Llama-family, GPT-2 style, ...) mapping config.json's
 * `architectures[0]` / `model_type` to the layer prefix, the config key holding the layer
 * count, and which non-layer tensors come after the layers (final norm, lm_head: "post"
 * weights, taken from the last slice) or are embeddings (vocabulary-sized rows). Unknown
 * architectures fall back to the first ".<digits>." in a name, as mergekit's automatic
 * inference does.
 * Must not: read files (it is given config.json's text) or know merge methods.
 */
#ifndef MK_ARCH_H
#define MK_ARCH_H

#include "../core/mk_core.h"

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
    /* Where a tied lm_head's values live: the input embedding's name. */
    const char *tied_embed;
} mk_arch_def;

typedef struct mk_arch {
    const mk_arch_def *def; /* NULL = automatic (pattern) */
    char *arch_name;        /* architectures[0] from config.json, or NULL */
    char *model_type;
    long num_layers;        /* from config.json, -1 when unknown */
    bool tied;              /* tie_word_embeddings true */
} mk_arch;

/* Identify the architecture from config.json text (NULL = none). */
mk_status mk_arch_from_config(const char *config_text, const char *what, mk_arch *a);
void mk_arch_free(mk_arch *a);

/* Layer of a tensor name: true with *layer, and the name split as
 * name = prefix (len *pre) + layer digits + rest (from *rest). */
bool mk_arch_layer(const mk_arch *a, const char *name, long *layer, size_t *pre, size_t *rest);
bool mk_arch_is_post(const mk_arch *a, const char *name);
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

/* "prefix" + layer + "rest" for a renumbered layer. Allocates. */
char *mk_arch_rename_layer(const char *name, size_t pre, size_t rest, long layer);

extern const mk_arch_def mk_arch_defs[];
extern const size_t mk_arch_ndefs;

#endif
