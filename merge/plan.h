/* plan.h - recipe + model headers -> the complete list of output tensors, each with its
 * method, resolved parameters and inputs. Built from headers only (no tensor data is
 * read) and validated completely: unknown methods or parameters, missing models or
 * tensors, layer ranges past the end, shape mismatches and method-specific rules all
 * fail here, before anything is written.
 *
 * Follows mergekit's planner (reference/mergekit-semantics.md 1.3, 1.4, 2.12, 3.1-3.3):
 * `models:` becomes one slice over all layers; output layers are numbered consecutively
 * across slices; pre weights come from the first slice, post weights (final norm,
 * lm_head) from the last; gradients use t = j/(n-1) within a slice and t = 0 outside
 * layers; parameters resolve source > slice > top level > default.
 * Must not: read tensor data or write anything.
 */
#ifndef MK_PLAN_H
#define MK_PLAN_H

#include "../core/mk_tensor.h"
#include "../model/arch.h"
#include "method.h"
#include "recipe.h"
#include "tokmerge.h"

typedef struct mk_plan_input {
    uint32_t model;    /* index into plan->models */
    uint32_t tensor;   /* tensor index in that model's source */
    uint64_t src_cols; /* columns of the source tensor (> out cols when cut to a common block) */
    const int64_t *rowmap; /* vocabulary tensors of a tokenizer merge: output row -> source row
                              (-1: filled per tokmerge.h); NULL = rows as they are */
} mk_plan_input;

typedef struct mk_plan_tensor {
    mk_tensor_info out;      /* name (owned), dtype, shape */
    mk_merge_job job;        /* numel/rows/cols, n_in, base, parameters, compute dtype */
    mk_plan_input *in;       /* [job.n_in] */
    double (*m)[MK_MAX_PARAMS];
    bool (*m_set)[MK_MAX_PARAMS];
    double t;                /* interpolation position used for gradients */
    long out_layer;          /* -1 outside the layers */
    bool identity;           /* output == input 0's values (a copy, maybe converted) */
    bool raw;                /* ...and byte for byte: copy the raw bytes */
} mk_plan_tensor;

typedef struct mk_plan_model {
    const mk_model_ref *ref;
    mk_source *src;          /* borrowed */
    mk_arch arch;
    long n_layers;           /* from config.json or the tensor names */
    bool has_config;         /* the model has a config.json */
} mk_plan_model;

typedef struct mk_plan_opts {
    bool allow_crimes;       /* allow models of different architectures */
    mk_dtype out_dtype;      /* MK_DTYPE_NONE = from the recipe / the inputs */
    const mk_tokmerge *tok;  /* a merge of vocabularies (tokenizer_source); NULL = none */
} mk_plan_opts;

typedef struct mk_plan {
    const mk_recipe *recipe;
    const mk_method *method;
    size_t n_models;
    mk_plan_model *models;
    int donor;               /* mergekit's donor (the base model, else the first model): its tokenizer */
    int config_donor;        /* whose config.json the output gets: the donor, or when it has none
                                the first model (in recipe order) that has one */
    size_t n;
    mk_plan_tensor *t;
    mk_tensor_info *outs;    /* [n] copies of t[i].out (names shared), for sinks */
    long out_layers;         /* layer count to write to config.json; -1 = unchanged */
    uint64_t vocab_rows;     /* embedding rows when cut to a common block or set by a tokenizer
                                merge; 0 = unchanged */
    const mk_tokmerge *tok;  /* mk_plan_opts.tok */
    uint64_t total_bytes;
    uint64_t max_numel;
} mk_plan;

/* `sources[i]` is the opened model for refs[i] = mk_recipe_models(r)[i]. */
mk_status mk_plan_build(const mk_recipe *r, mk_source *const *sources, size_t n_sources, const mk_plan_opts *o,
                        mk_plan *p);
void mk_plan_free(mk_plan *p);

/* Peak memory the executor needs for this plan at `threads` threads (bytes), with up to
 * keep_bytes kept by a method between passes and up to hold_bytes of inputs held (exec.h). */
uint64_t mk_plan_peak_memory(const mk_plan *p, int threads, uint64_t chunk_elems, uint64_t keep_bytes, uint64_t hold_bytes);

#endif
