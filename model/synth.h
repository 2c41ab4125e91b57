/* synth.h - random checkpoints shaped like real ones, and seeded "finetunes" of them, for
 * tests, demos and benchmarks: the tensor list of each architecture synth knows (the
 * transformers module names of llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt2),
 * its config.json and a word-level tokenizer, and the values.
 *
 * Values depend only on (seed, tensor name, element index) through the counter-based
 * generator and exactly-rounded arithmetic, so the same options give the same bytes on
 * every machine and at any thread count. Weights look like trained ones: matrices are
 * normal with a per-matrix standard deviation around 0.02 and about one element in 5,000
 * an outlier several times larger; norm weights are near 1.
 * Must not: open files or choose where the output goes (values go to an mk_consumer, side
 * files are handed back as texts).
 */
#ifndef MK_SYNTH_H
#define MK_SYNTH_H

#include "../core/mk_tensor.h"

typedef struct mk_synth_opts {
    long hidden, layers, heads, kv_heads, intermediate, vocab, max_pos;
    const char *arch;       /* "llama", ... (mk_synth_arch_names) */
    const char *dtype;      /* as the user wrote it */
    uint64_t seed;
    double std;             /* typical standard deviation of weight matrices */
    bool tie;               /* no lm_head (forced for gemma, gemma2, gpt2) */
} mk_synth_opts;

typedef struct mk_synth_file {
    const char *name;
    char *text;
} mk_synth_file;

typedef enum mk_synth_kind { MK_SYNTH_MATRIX, MK_SYNTH_NORM, MK_SYNTH_BIAS } mk_synth_kind;

typedef struct mk_synth_model {
    mk_synth_opts o;        /* resolved (defaults filled) */
    mk_dtype dtype;
    size_t n;
    mk_tensor_info *t;      /* [n], names owned */
    mk_synth_kind *kind;    /* [n] */
    double *std;            /* [n] per-tensor standard deviation of matrices */
    size_t n_files;
    mk_synth_file files[5]; /* config.json, tokenizer.json, tokenizer_config.json, ... */
} mk_synth_model;

/* "llama, mistral, qwen2, qwen3, gemma, gemma2, phi3 or gpt2" */
extern const char mk_synth_arch_names[];

/* Check the options (a usage error names the option), fill defaults (kv heads = heads,
 * intermediate = 8/3 hidden rounded up to 16) and list the tensors and side files. */
mk_status mk_synth_plan(const mk_synth_opts *o, mk_synth_model *m);
void mk_synth_model_free(mk_synth_model *m);

typedef void (*mk_synth_progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total,
                                  const char *name);

/* Every tensor of m, chunk by chunk in parallel, into consumer c (logical tensor i = m->t[i]). */
mk_status mk_synth_generate(const mk_synth_model *m, mk_consumer *c, mk_synth_progress progress, void *pctx);

/* A finetune of `base`: each float element changed with probability `density` by
 * delta x (the tensor's RMS) x a standard normal keyed by (seed, name, index); into
 * consumer c (logical tensor i = base tensor i). */
mk_status mk_synth_finetune(mk_source *base, double delta, double density, uint64_t seed, mk_consumer *c,
                            mk_synth_progress progress, void *pctx);
/* The finetune options' usage check (before anything is opened). */
mk_status mk_synth_finetune_check(double delta, double density);

#endif
