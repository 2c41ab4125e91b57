/* combine.h - several LoRA adapters of one base combined into one (PEFT's
 * add_weighted_adapter): the union of their modules, sorted by name, with the rank each gets;
 * the tensors they save whole; then per module the combination, written as A and B through a
 * sink.
 *
 * Tensors saved whole: without the base model, each is copied from the one adapter that
 * saves it (the same tensor in two adapters is an error, as in PEFT). With the base (opts
 * base), each is the base's tensor plus the method's combination of the savers' differences
 * from it (W = base + sum_i w_i (W_i - base) for cat, linear and svd; TIES or DARE on the
 * differences otherwise), written whole; copied where that is the same (one saver of weight
 * 1, no pruning). A module one adapter adapts with LoRA while another saves it whole
 * (modules_to_save) is an error: PEFT never puts LoRA on a module it saves whole.
 *
 * Each input i contributes its update D_i = s_i B_i A_i with weight w_i:
 *   cat          A = [w_i s_i A_i] stacked, B = [B_i] side by side: exact, ranks add up
 *   linear, svd  sum w_i D_i, truncated SVD (rank: linear the sum of the ranks, svd the largest)
 *   ties         TIES on the D_i (top density by magnitude, majority sign, disjoint mean), SVD
 *   dare_linear  each D_i keeps a random density share, rescaled; weighted sum; SVD
 * An adapter without a module does not take part in it (as in PEFT).
 * Inputs are plain descriptions: the caller (the CLI, from formats/peft) maps each adapter's
 * modules to tensor indices in its source, with r and scale already resolved.
 * Must not: open files, know PEFT's layout (output names come from mk_lora_names; the
 * caller writes the config from the plan) or print.
 */
#ifndef MK_LORA_COMBINE_H
#define MK_LORA_COMBINE_H

#include "adapter.h"
#include "lora.h"

typedef enum mk_lora_combine_method {
    MK_LORA_CAT = 0,
    MK_LORA_LINEAR,
    MK_LORA_SVD,
    MK_LORA_TIES,
    MK_LORA_DARE_LINEAR,
    MK_LORA_COMBINE_COUNT
} mk_lora_combine_method;

extern const char *const mk_lora_combine_names[MK_LORA_COMBINE_COUNT]; /* "cat", ... */

/* One LoRA module of an input adapter. */
typedef struct mk_lora_in_module {
    const char *module;         /* module path */
    size_t a, b;                /* A [r, in] and B [out, r]: tensor indices in the adapter's source */
    bool embedding;             /* an embedding pair */
    long r;
    double scale;               /* s: the update is s B A */
} mk_lora_in_module;

/* A tensor an input adapter saves whole. */
typedef struct mk_lora_in_whole {
    const char *name;           /* the base tensor it replaces */
    size_t index;               /* in the adapter's source; written under that tensor's name */
    long base;                  /* with opts base: the base tensor's index there, or -1 if absent */
} mk_lora_in_whole;

typedef struct mk_lora_input {
    const char *name;           /* how messages name the adapter */
    mk_source *src;             /* its tensors */
    const mk_lora_in_module *m; /* [n_modules], distinct module paths */
    size_t n_modules;
    const mk_lora_in_whole *whole;
    size_t n_whole;
    const char *const *save;    /* its modules_to_save entries [n_save] */
    size_t n_save;
    long max_r;                 /* its largest configured rank */
    double weight;              /* w_i */
} mk_lora_input;

typedef struct mk_lora_combine_opts {
    mk_lora_combine_method method;
    long rank;                  /* of the result; 0 = the method's default (above) */
    double density;             /* ties, dare_linear */
    uint64_t seed;              /* dare_linear's random choice, keyed by (seed, module) */
    mk_dtype dtype;             /* of A and B */
    mk_lora_svd_opts svd;
    mk_source *base;            /* the adapters' base model, or NULL (whole tensors, above) */
} mk_lora_combine_opts;

/* The combined adapter's plan: a module's update shape (or embedding flag) that differs
 * between inputs, the same whole tensor in two inputs without the base (or of another shape
 * than the base's), a module saved whole by one input and adapted by another, or nothing to
 * combine is a usage error naming the adapters. */
mk_status mk_lora_combine_plan(const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, const mk_lora_names *names,
                               mk_lora_plan *p);

/* Combine every module (filling m[].kept: 1 for cat) and write the whole tensors into `k`,
 * declared with p->out. */
mk_status mk_lora_combine_run(mk_lora_plan *p, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, mk_sink *k);

#endif
