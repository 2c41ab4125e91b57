/* adapter.h - an adapter we are about to write (lora extract and combine), planned from
 * tensor headers before any data moves: its LoRA modules (module path, update shape, rank,
 * the output tensors of A and B), the tensors it saves whole, the modules_to_save entries,
 * and the output tensor list in writing order (A then B for each module, then the whole
 * tensors), ready to declare to a sink. Also the helpers extract.c and combine.c write it
 * with: f32 values rounded to the output dtype (an overflow is an error naming the tensor)
 * and raw copies.
 *
 * Shapes (lora.h's conventions): A is [k, in], B is [out, k], B A is [out, in]; an
 * embedding's pair is stored the same way and its update is (B A)^T.
 * Must not: know PEFT's file layout (the caller names the output tensors through
 * mk_lora_names and writes adapter_config.json from the module list), open files or print.
 */
#ifndef MK_LORA_ADAPTER_H
#define MK_LORA_ADAPTER_H

#include "../core/mk_tensor.h"

/* How output tensors are named: a pair is prefix + module + "." + a (or b; emb_a / emb_b
 * for embeddings); a tensor of a model saved whole is prefix + its name, except the bias of
 * a module that has a pair (a layer the adapter wraps), which is prefix + module + "." +
 * layer_bias. */
typedef struct mk_lora_names {
    const char *prefix;
    const char *a, *b;
    const char *emb_a, *emb_b;
    const char *layer_bias;
} mk_lora_names;

/* One LoRA module of the adapter. */
typedef struct mk_lora_module {
    char *module;               /* module path, e.g. model.layers.0.self_attn.q_proj */
    bool embedding;             /* an embedding pair (lora_embedding_A/B in PEFT) */
    bool transposed;            /* the weight it updates is stored as (B A)^T */
    uint64_t out, in;           /* B A is [out, in] */
    long k;                     /* its rank */
    double kept;                /* share of the update's energy kept (set when written) */
    size_t oa, ob;              /* output tensor indices of A and B */
    size_t base, ft;            /* extract: tensor indices in the base and finetuned model */
    long *from;                 /* combine: per input adapter, its module index, or -1 */
} mk_lora_module;

/* A tensor saved whole: copied (raw bytes) from an input into the adapter, or, in combine,
 * one of the inputs that save the same tensor (entries sharing `out`, in input order) whose
 * differences from the base are combined. */
typedef struct mk_lora_whole {
    size_t input;               /* combine: the input adapter; extract: 0 */
    size_t src;                 /* tensor index in that input's source */
    size_t out;                 /* output tensor index */
    long base;                  /* combine: the base tensor the output is combined over, or -1: copied */
} mk_lora_whole;

typedef struct mk_lora_plan {
    size_t n_modules, n_whole, n_out, n_save;
    mk_lora_module *m;          /* extract: in the finetune's tensor order; combine: by name */
    mk_lora_whole *whole;
    mk_tensor_info *out;        /* output tensors in writing order; names owned */
    char **save;                /* modules_to_save entries, distinct, first seen first */
    bool conv1d;                /* extract: the base stores weights [in, out] (fan_in_fan_out) */
    size_t cap_out;
} mk_lora_plan;

void mk_lora_plan_free(mk_lora_plan *p);

/* Progress after each module or whole tensor: (ctx, items done, items, bytes done, bytes,
 * name), the bytes those items take in the finetuned model. */
typedef void (*mk_lora_progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total,
                                 const char *name);

/* ---- for extract.c and combine.c ------------------------------------------------------- */

/* Declare module m's A [k, in] and B [out, k] in dtype dt; sets m->oa, m->ob. */
mk_status mk_lora_plan_add_pair(mk_lora_plan *p, mk_lora_module *m, mk_dtype dt, const mk_lora_names *nm);
/* Declare a tensor shaped and typed like F under `name` (taken, also on failure). */
mk_status mk_lora_plan_add_whole(mk_lora_plan *p, const mk_tensor_info *F, char *name);
/* Add `key` to the modules_to_save entries unless it is there (copied). */
mk_status mk_lora_plan_add_save(mk_lora_plan *p, const char *key);

/* Write f32 values [numel] as output tensor i, rounded to its dtype, and mark it done. */
mk_status mk_lora_put_f32(mk_sink *k, const mk_lora_plan *p, size_t i, const float *v);
/* Copy source tensor si's raw bytes as output tensor i (same dtype and size), mark it done. */
mk_status mk_lora_put_raw(mk_sink *k, size_t i, mk_source *src, size_t si);
/* Tensor i of s as f32 [numel] (allocated), or NULL with *st set. */
float *mk_lora_read_all(mk_source *s, size_t i, mk_status *st);

#endif
