/* hfconfig.h - Hugging Face config.json edits for outputs, and the list of tokenizer and
 * generation files that travel with a model.
 *
 * Owns: reading config.json values and writing a modified copy (dtype, layer count,
 * vocabulary size). Everything else in the donor's config is kept as it was.
 * Must not: decide what the values should be (the plan does).
 */
#ifndef MK_HFCONFIG_H
#define MK_HFCONFIG_H

#include "../core/mk_core.h"

typedef struct mk_hfconfig_edit {
    const char *torch_dtype;  /* "bfloat16", ...; NULL = leave */
    const char *layers_key;   /* e.g. "num_hidden_layers"; NULL = leave */
    long layers;
    const char *vocab_key;    /* e.g. "vocab_size"; NULL = leave */
    long vocab;
    const char *quant_config; /* JSON object text to set as "quantization_config", written
                                 as given (2-space indented); NULL = leave */
    bool drop_quant_config;   /* remove "quantization_config" (dequantized output) */
    const char *const *set;   /* top-level keys to set: key, JSON value text pairs,
                                 NULL-terminated (mixture-of-experts outputs); NULL = none */
} mk_hfconfig_edit;

/* Apply `e` to config.json text; *out is the new text (2-space indented JSON). */
mk_status mk_hfconfig_rewrite(const char *text, const char *what, const mk_hfconfig_edit *e, char **out);

/* Files copied from the tokenizer donor, as mergekit copies them (NULL-terminated). */
extern const char *const mk_tokenizer_files[];

#endif
