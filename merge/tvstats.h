/* tvstats.h - what a merge does, measured on its inputs: per output layer, the norm of each
 * model's task vector (model - base), the cosine similarity between every two models' task
 * vectors, and TIES' trim-and-elect statistics (Yadav et al. 2023, "TIES-Merging"; mergekit's
 * sparsify.magnitude and get_mask): each task vector trimmed to its `density` by magnitude,
 * the elected sign of the weighted sum of the trimmed deltas per element, the share of
 * elements whose trimmed deltas disagree in sign (sign conflicts), and the share of each
 * model's elements that survive trimming and election (kept density).
 *
 * Streaming: each tensor of the plan is read in row chunks of about 64 Ki values per input:
 * pass 1 (norms, dot products, and the first pass of the order statistic of |delta| of each
 * trimmed input), the order statistic's further passes when it needs them, pass 2 (trim,
 * elect, count). Memory: the chunks plus merge/methods/select.h's histograms (512 KiB per
 * trimmed input), never a tensor. Deterministic: one thread, sums in element order, in double.
 * Trimming keeps exactly k = max(1, int(density x numel)) deltas, the largest |delta| first
 * and equal ones by flat index, as the merge's TIES (mk_select) keeps them; density <= 0 keeps
 * none, density >= 1 all.
 * Must not: write anything or print.
 */
#ifndef MK_TVSTATS_H
#define MK_TVSTATS_H

#include "plan.h"

typedef struct mk_tvstats {
    size_t n_models;      /* non-base models, in plan order */
    size_t *model;        /* [n_models] their index in plan->models */
    size_t base;          /* the base model's index in plan->models */
    size_t n_rows;        /* output layers, then one row for every tensor outside the layers */
    /* per row r (r = n_rows - 1: outside the layers): */
    double *sq;           /* [n_rows][n_models] sum of squared deltas */
    double *dot;          /* [n_rows][n_models][n_models] sums of delta_k x delta_l */
    uint64_t *elems;      /* [n_rows] elements compared */
    uint64_t *active;     /* [n_rows] elements with a nonzero trimmed delta */
    uint64_t *conflict;   /* [n_rows] elements whose nonzero trimmed deltas differ in sign */
    uint64_t *kept;       /* [n_rows][n_models] elements kept by trim and sign election */
    size_t tensors;       /* tensors measured */
    size_t skipped;       /* tensors without a base input or another model */
    bool trimmed;         /* the method has a density parameter */
} mk_tvstats;

/* Read every merged tensor of `p` (whose sources are open) and fill `st`. */
mk_status mk_tvstats_compute(const mk_plan *p, mk_tvstats *st);
void mk_tvstats_free(mk_tvstats *st);

#endif
