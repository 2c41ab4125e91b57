/* alloc.h - mixed-precision quantization under a size budget (`quantize --target-bpw B`):
 * measure what every candidate format costs (stored bits) and loses (squared error) on every
 * quantizable weight, choose one format per weight so that the total predicted error is
 * smallest while the bits per weight stay within the budget, and write a single
 * compressed-tensors checkpoint that mixes the chosen formats (one config group per format,
 * its `targets` the exact module names; top-level "format" "mixed-precision" when the groups'
 * formats differ, as compressed-tensors declares it).
 *
 * Budget: bits per weight over the quantizable weights (the 2-D weights the format rules
 * would quantize: not embeddings, lm_head or --skip), counting everything stored for each
 * (codes, scales, zero points, shapes). The whole model's figure (every stored tensor over
 * every parameter) is reported beside it.
 * Candidates: the compressed-tensors formats and "keep" (the weight as stored in IN).
 * Allocation: for each weight its candidates' (bits, error) points, the dominated ones
 * dropped and the rest reduced to their lower convex hull; every weight starts at its
 * cheapest point and the step with the largest error drop per extra bit is taken while it
 * fits the budget (greedy on the hull = the Lagrangian solution at each budget it meets);
 * then any single upgrade that still fits, best ratio first, fills the rest. Ties break by
 * tensor index: the result depends only on the numbers.
 * Must not: read files or know the container; cli/ wires sources and sinks.
 */
#ifndef MK_ALLOC_H
#define MK_ALLOC_H

#include "quant.h"

/* ---- the solver ------------------------------------------------------------------------ */
typedef struct mk_alloc_problem {
    size_t n, k;            /* weights, candidates */
    const double *bits;     /* [n * k]: stored bits of weight i as candidate j; < 0: unavailable */
    const double *err;      /* [n * k]: its predicted error */
    const uint64_t *numel;  /* [n] */
} mk_alloc_problem;

/* choice[n]: the candidate of each weight with total bits <= budget_bits (bits per weight
 * times the elements), or MK_ERR_USAGE naming the smallest budget possible when even the
 * cheapest choice exceeds it. */
mk_status mk_alloc_solve(const mk_alloc_problem *p, double budget_bits, size_t *choice);

/* ---- candidates ------------------------------------------------------------------------ */
#define MK_ALLOC_MAX_CANDS 12
typedef struct mk_alloc_cand {
    char name[48];          /* as given: "int4", "int4:scheme=asym", "keep" */
    bool keep;
    mk_qopts o;             /* resolved (not for keep) */
} mk_alloc_cand;

/* Parse "int4,int4:scheme=asym,int8,...,keep" (NULL: the default list, every
 * compressed-tensors format and keep). Only compressed-tensors layouts mix; a usage error
 * names the bad entry. `spec` must outlive the candidates. */
mk_status mk_alloc_cands_parse(const char *spec, mk_alloc_cand *c, size_t *n);
extern const char mk_alloc_default_formats[];

/* ---- measuring ------------------------------------------------------------------------- */
typedef struct mk_alloc_table {
    size_t n_in;            /* logical tensors of the model */
    size_t n;               /* quantizable weights */
    size_t *w;              /* [n]: their logical index */
    size_t k;
    double *bits;           /* [n * k] */
    double *se2;            /* [n * k]: sum of squared error (exact: the writer's own encoding) */
    double *err;            /* [n * k]: the objective (se2 times the weight's sensitivity) */
    double *sens;           /* [n]: that sensitivity (1 for `weight`) */
    uint64_t *numel;        /* [n] */
    double *sx2;            /* [n]: sum of squares of the weight */
    uint64_t other_bits;    /* bits of every tensor that is not a quantizable weight */
    uint64_t params;        /* elements of every tensor */
} mk_alloc_table;

/* One read of every quantizable weight of `src` (tensors in[n], their source index idx[i]),
 * each encoded by every candidate into a sink that keeps nothing: bits and squared error
 * per weight and candidate; err = se2, sens = 1.
 * imp (NULL: none): per logical tensor, the importance of each of its columns (the mean
 * squared input activation an imatrix holds; cols = the last dimension), or NULL. With imp,
 * every quantizable weight must have one (else MK_ERR_MISMATCH naming it), and err is the
 * importance-weighted squared error sum over rows r and columns c of imp[c] (x - q)^2 (the
 * expected squared error of the layer's output per token, cross terms between columns
 * left out), q decoded from the candidate's own stored bytes; sens = the mean importance. */
mk_status mk_alloc_measure(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n,
                           const mk_alloc_cand *c, size_t nc, const char *skip, const float *const *imp, mk_alloc_table *t);
/* The same with a weight per element: wt[i] (NULL: none; every quantizable weight must have
 * one) holds numel weights in the tensor's row-major order, and err is the sum over the
 * elements of wt (x - q)^2 (a Fisher diagonal times the squared error: 2 x the predicted KL);
 * sens = the mean weight. */
mk_status mk_alloc_measure_elem(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n,
                                const mk_alloc_cand *c, size_t nc, const char *skip, const float *const *wt, mk_alloc_table *t);
void mk_alloc_table_free(mk_alloc_table *t);
/* Bits per weight of choice[] over the quantizable weights, and over the whole model. */
void mk_alloc_bpw(const mk_alloc_table *t, const size_t *choice, double *bpw_q, double *bpw_all);

/* ---- writing ---------------------------------------------------------------------------- */
typedef struct mk_alloc_write mk_alloc_write;

/* The plans of the chosen formats, the stored tensor list (out, n_out: valid until free) and
 * the quantization_config. */
mk_status mk_alloc_write_plan(mk_alloc_write **w, mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in,
                              size_t n, const mk_alloc_cand *c, size_t nc, const mk_alloc_table *t, const size_t *choice,
                              const char *skip, uint64_t chunk, const mk_tensor_info **out, size_t *n_out);
/* The consumer that writes every tensor into `sink` (begun with the stored list) in its
 * chosen format. */
mk_status mk_alloc_consumer(mk_alloc_write *w, mk_sink *sink, mk_consumer *c);
/* quantization_config (allocated) and the measured squared error of weight j of the table
 * after the write. */
char *mk_alloc_config_json(const mk_alloc_write *w);
double mk_alloc_written_se2(const mk_alloc_write *w, size_t logical);
void mk_alloc_write_free(mk_alloc_write *w);

#endif
