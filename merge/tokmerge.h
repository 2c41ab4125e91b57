/* tokmerge.h - merges of models whose vocabularies differ (recipe tokenizer_source), as
 * mergekit 0.1.5 does them.
 *
 * The output vocabulary is the base model's ("base"; mergekit's base is base_model, else
 * the first model), one model's ("model:NAME"), or the union: the base's tokens keep their
 * ids, then every other model's tokens the base lacks are appended (models in recipe
 * order, each model's tokens in id order; mergekit appends them in its tokenizer's hash
 * order, which varies between runs), then added tokens the result still lacks.
 * Every model's vocabulary rows (embed_tokens, lm_head) are then gathered by a token
 * permutation; a row for a token a model lacks is filled as mergekit fills it: the row of
 * the only model that has it, else the base's row, else the average of the models that
 * have it, else zero. `tokenizer: tokens:` adds tokens and names a row's source (a model's
 * row of the token, a model's row of another token, zero), for every model with `force`.
 * The merge method then merges these rows like any other.
 * Must not: read tensors (the executor gathers rows while streaming); need a tokenizer
 * other than tokenizer.json (model.vocab and added_tokens).
 */
#ifndef MK_TOKMERGE_H
#define MK_TOKMERGE_H

#include "../core/mk_tensor.h"
#include "recipe.h"

typedef struct mk_tokmerge {
    size_t n_models;
    size_t n_tokens;       /* output vocabulary size */
    size_t n_rows;         /* rows of every vocabulary tensor: n_tokens rounded up to the recipe's
                              pad_to_multiple_of (the rows past n_tokens: each model's mean row) */
    char **tok;            /* [n_tokens] */
    int64_t **perm;        /* [n_models][n_tokens]: the token's row in that model; -1 = lacks it */
    uint32_t *fill_off;    /* [n_tokens + 1]: rows fill_row[f] of models fill[f], f in */
    uint32_t *fill;        /*   fill_off[t]..fill_off[t+1], average into the row t of a model */
    int64_t *fill_row;     /*   that lacks the token or where the recipe forces it (none: zero) */
    size_t src;            /* the model whose tokenizer files the output is made from */
    char *tokenizer_json;  /* the output's tokenizer.json; NULL = src's, unchanged */
    size_t tokenizer_json_len;
    char *tokenizer_config;/* the output's tokenizer_config.json; NULL = src's, unchanged */
    size_t tokenizer_config_len;
} mk_tokmerge;

/* srcs[0..n): the plan's models (recipe order); base: mergekit's base (base_model, else 0);
 * source: "union", "base", or NULL with `model` naming the model; ov[0..n_ov): the recipe's
 * `tokenizer: tokens:`, ov_model[i] the model ov[i] names. Errors name the file. */
mk_status mk_tokmerge_build(mk_tokmerge *t, mk_source *const *srcs, size_t n, size_t base, const char *source,
                            size_t model, const mk_recipe *r, const size_t *ov_model);
void mk_tokmerge_free(mk_tokmerge *t);

/* The recipe's chat_template as the output's chat_template.jinja: its text, or for "auto" the
 * template most of the models have (chat_template.jinja, else tokenizer_config.json's
 * chat_template; whitespace-trimmed; the first seen wins a tie), as mergekit picks it.
 * *out = NULL: none (no chat_template, or "auto" and no model has one). */
mk_status mk_chat_template_pick(mk_source *const *srcs, size_t n, const char *spec, char **out);

#endif
