/* eval.h - how good is a model on a text, and how far is it from others: perplexity as
 * llama.cpp's llama-perplexity computes it, and the KL divergence to each reference model run
 * side by side on the same windows (no logits file).
 *
 * Windows: the token stream is cut into non-overlapping windows of `ctx` tokens; the first
 * token of each becomes BOS (when the tokenizer adds one); the second half is scored: the
 * logits at positions ctx/2 .. ctx-2 predict the next token, ctx - 1 - ctx/2 predictions per
 * window, each with at least ctx/2 tokens of context (reference/eval-and-finetune.md 3.1).
 * PPL = exp(mean NLL) +- PPL x sqrt(var(NLL) / (N - 1)).
 * Per reference: KL(ref || model) per scored position (exact, in double, over the whole
 * vocabulary), its mean +- standard error, median, 90 / 95 / 99 % and max; the share of
 * positions where both pick the same top token; dp = p_model(correct) - p_ref(correct), mean
 * and RMS; the PPL ratio exp(mean NLL_model - mean NLL_ref) with its uncertainty. With two
 * references, the same between them (KL(ref1 || ref2)), as the scale.
 * Memory: the windows of one batch through nn/ (one layer of weights at a time), then each
 * window's scored logits for the model and every reference.
 * Must not: open files, print or tokenize (the caller hands token ids).
 */
#ifndef MK_EVAL_H
#define MK_EVAL_H

#include "../nn/nn.h"

typedef struct mk_eval_opts {
    size_t ctx;        /* window length in tokens (512) */
    size_t chunks;     /* windows to score; 0 = all that fit */
    size_t batch;      /* windows per forward pass; 0 = about 2048 tokens' worth */
    int32_t bos;       /* placed at each window's start; -1 = none */
    /* after each window, from the calling thread; may be NULL */
    void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
    void *progress_ctx;
} mk_eval_opts;

/* The KL histogram: edge i = 1e-6 x 10^(i/4) nats, i < MK_EVAL_KL_EDGES (1e-6 .. 56);
 * count 0 is below edge 0, count i in [edge i-1, edge i), the last at or above the last edge. */
#define MK_EVAL_KL_EDGES 32
double mk_eval_kl_edge(size_t i);

typedef struct mk_eval_kl {
    double kl_mean, kl_se, kl_median, kl_p90, kl_p95, kl_p99, kl_max;
    uint64_t kl_hist[MK_EVAL_KL_EDGES + 1]; /* scored positions per KL bin (mk_eval_kl_edge) */
    double same_top;       /* share of positions, 0..1 */
    double dp_mean, dp_rms;
    double ppl_ratio, ppl_ratio_se;
    double ppl_ref;        /* the reference's own perplexity */
} mk_eval_kl;

typedef struct mk_eval_result {
    size_t windows, scored;
    double nll_mean, ppl, ppl_se;
    double nll_sum;        /* over the scored positions, in nats (bits per byte = nll_sum / ln 2 / the
                              bytes of text the scored tokens stand for, which the caller knows) */
    double seconds, tokens_per_s;
    size_t n_refs;
    mk_eval_kl kl[8];      /* KL(ref_i || model) */
    bool has_pair;
    mk_eval_kl pair;       /* KL(ref_0 || ref_1), model = ref_1 */
} mk_eval_result;

#define MK_EVAL_MAX_REFS 8

/* The windows: how many of ctx tokens fit n tokens (at most o->chunks when set), and which
 * positions are scored: tokens[w * ctx + first + 1 ...] for `scored` tokens per window. */
void mk_eval_windows(size_t n, const mk_eval_opts *o, size_t *windows, size_t *first, size_t *scored);

/* Score `model` (and compare it with refs[n_refs], all of one vocabulary) on tokens[n]. */
mk_status mk_eval_run(mk_nn_model *model, mk_nn_model *const *refs, size_t n_refs, const int32_t *tokens, size_t n,
                      const mk_eval_opts *o, mk_eval_result *r);

#endif
