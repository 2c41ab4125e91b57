/* extract.h - a finetune turned into a LoRA adapter (mergekit-extract-lora's rules): which
 * tensors become LoRA pairs, which are saved whole and which are left out, planned from the
 * two models' headers and the architecture's tensor roles; then per module the truncated
 * SVD of (finetuned - base) in f32, written as A and B through a sink.
 *
 * Rules, in order, per tensor of the finetune: --exclude leaves it out; embeddings and
 * lm_head are saved whole unless embed_lora (always whole when the vocabulary changed);
 * save-listed modules are saved whole; with a modules list, other modules are left out;
 * 2-D float weights become LoRA pairs; other changed tensors are saved whole unless
 * skip_undecomposable. Tensors with the same bytes in both models are left out. Embeddings
 * and Conv1D weights (stored [in, out]) are factored as stored and written transposed, so
 * that B A is [out, in] as PEFT expects. Modules are named by their path in the model
 * (mk_arch_canonical: GPT-2's "transformer." prefix), as PEFT names them.
 * A bias saved whole whose module is a layer the adapter wraps in LoRA (its last name
 * component is a pair's, and its weight is not saved whole) is named prefix + module + "." +
 * names->layer_bias and adds no modules_to_save entry: a module in modules_to_save is one
 * PEFT never wraps. Every other whole tensor adds its module's last name component.
 * Must not: open files, know PEFT's layout (names come from mk_lora_names; the caller
 * writes the config from the plan) or print (warnings go through mk_warn).
 */
#ifndef MK_LORA_EXTRACT_H
#define MK_LORA_EXTRACT_H

#include "../model/arch.h"
#include "adapter.h"
#include "lora.h"

typedef struct mk_lora_extract_opts {
    long rank;                   /* of every pair (lower where a matrix is smaller) */
    const char *modules;         /* comma list of modules (last name component or full
                                    module path) that may become pairs; NULL = all */
    const char *save;            /* comma list saved whole; NULL = none */
    const char *exclude;         /* comma list left out entirely; NULL = none */
    bool embed_lora;             /* embeddings and lm_head as pairs too */
    bool skip_undecomposable;    /* leave out changed tensors that cannot be pairs */
    mk_dtype dtype;              /* of A and B; MK_DTYPE_NONE = each finetuned weight's */
    const char *base_name, *ft_name; /* how messages name the two models */
} mk_lora_extract_opts;

/* Plan the adapter of `ft` over `base` (headers, and the bytes of candidates to leave out
 * the unchanged ones). A finetune tensor missing from the base, a shape that differs
 * (except an embedding's vocabulary), or nothing to write is a usage error naming it.
 * Whole tensors are named prefix + their name as the model names it (above). */
mk_status mk_lora_extract_plan(mk_source *base, mk_source *ft, const mk_arch *arch, const mk_lora_extract_opts *o,
                               const mk_lora_names *names, mk_lora_plan *p);

/* Factor every module (filling m[].kept) and copy the whole tensors, into `k` declared with
 * p->out. progress (may be NULL) follows each module and whole tensor (adapter.h). */
mk_status mk_lora_extract_run(mk_lora_plan *p, mk_source *base, mk_source *ft, const mk_lora_svd_opts *svd, mk_sink *k,
                              mk_lora_progress progress, void *pctx);

#endif
