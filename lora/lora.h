/* lora.h - LoRA arithmetic: the update s * (B A) of a module, computed row chunk by row
 * chunk; a tensor source that presents a base model with adapters merged in on the fly
 * (W' = W + s B A, rounded once to W's dtype, as PEFT's merge_and_unload does with f32
 * adapter weights); the truncated SVD that turns a weight difference into a LoRA pair
 * (LAPACK's sgesdd); and the PEFT add_weighted_adapter kernels on full updates
 * (task arithmetic, TIES, DARE) for combining adapters; or a randomized SVD on the same
 * libraries when the exact one is too slow.
 * The rest of lora/ builds on it: adapter.h plans an adapter we write (modules, whole
 * tensors, output tensor list), extract.h plans and runs `lora extract` from two models,
 * combine.h plans and runs `lora combine` from adapter descriptions. lora/ includes only
 * core/ and model/.
 *
 * Conventions (PEFT, reference/formats-security-compression.md 1.7): A is [r, in], B is
 * [out, r]; the update of a Linear weight [out, in] is B A; for embeddings (A [r, vocab],
 * B [dim, r]) and Conv1D weights stored [in, out] (fan_in_fan_out) it is (B A)^T.
 * Rounding: each update element is sum_k B[i,k] A[k,j] as f32 fused multiply-adds in k
 * order (as torch's CPU matmul computes it for these shapes), times the f32 scale (torch
 * multiplies an f32 tensor by a Python float in f32); the merged weight is round(W + update)
 * in W's dtype.
 * Must not: know file formats (the CLI binds and describes adapters and hands us tensor
 * indices, output tensor names and writes adapter_config.json) or print. LAPACK and BLAS
 * are called only outside parallel regions.
 */
#ifndef MK_LORA_H
#define MK_LORA_H

#include "../core/mk_rng.h"
#include "../core/mk_tensor.h"

/* ---- the update ------------------------------------------------------------------------- */

/* out[i*cols + j] = (sum_k C[i*r + k] * V[k*cols + j]) * scale for i < nrows, j < cols, the
 * sum as a chain of f32 fused multiply-adds in k order from 0, then one f32 multiply: the
 * bits torch's CPU matmul and `* scaling` give (checked against PEFT). C is [nrows, r] (rows
 * of B, or for a transposed update the columns of A), V is [r, cols] (A, or B transposed). */
void mk_lora_update_rows(const float *C, const float *V, uint64_t r, uint64_t nrows, uint64_t cols, float scale,
                         float *out);

/* Rows [row0, row0+nrows) of the update of one module into out[nrows * cols], reading A and
 * B from `adapter` (tensor indices a, b). rows x cols is the updated weight's shape. */
mk_status mk_lora_update_read(mk_source *adapter, size_t a, size_t b, bool transposed, double scale, uint64_t rows,
                              uint64_t cols, uint64_t row0, uint64_t nrows, float *out);

/* ---- merged view ------------------------------------------------------------------------- */

typedef struct mk_lora_target {
    size_t base;      /* tensor index in the base source (a 2-D float weight) */
    size_t a, b;      /* tensor indices in the adapter source */
    bool transposed;  /* update = (B A)^T */
    long r;
    double scale;
    long wsrc;        /* adapter tensor read as W instead of the base's, or -1 */
    bool round_update; /* round the update to W's dtype first (PEFT embeddings) */
} mk_lora_target;

typedef struct mk_lora_extra {
    size_t base, src; /* base tensor; adapter tensor of the same shape */
    bool add;         /* base + scale * src (lora_B.bias); else src replaces base */
    double scale;
} mk_lora_extra;

/* A source with the base's tensors (names, dtypes, shapes) whose targeted tensors read as
 * the merged weights, computed per row block on each read (memory: a few blocks, never a
 * tensor). Takes ownership of `base` and `adapter` (closed with it, also on failure).
 * Its file list is the base's then the adapter's (provenance); auxiliary files are the
 * base's. `name` is how messages name it ("base/+adapter/"). */
mk_status mk_lora_source_open(mk_source *base, mk_source *adapter, const mk_lora_target *t, size_t nt,
                              const mk_lora_extra *x, size_t nx, const char *name, mk_source **out);

/* ---- factorisation ------------------------------------------------------------------------ */

/* Truncated SVD of d [m, n] (row-major f32; not modified): with d = U S Vh and
 * k = min(rank, m, n), B [m, k] = U_k diag(sqrt S_k), A [k, n] = diag(sqrt S_k) Vh_k, so B A
 * is the best rank-k approximation (Eckart-Young). Each singular pair is signed so that
 * the largest-magnitude entry of its U column is positive (deterministic across LAPACKs).
 * *kept = sum_{q<k} S_q^2 / sum S_q^2 (the share of the squared Frobenius norm kept; 1 for
 * a zero matrix). sv (optional) receives min(m, n) singular values. `what` names it. */
mk_status mk_lora_svd(const float *d, uint64_t m, uint64_t n, long rank, float *B, float *A, long *k, double *kept,
                      float *sv, const char *what);

/* The same by core's randomized SVD (mk_svd_rand: a sketch of k + oversample columns,
 * `power` power iterations with re-orthonormalisation, then an exact SVD of the small
 * projection; mk_lora_svd when that sketch reaches min(m, n)): far faster when the rank is
 * much smaller than the matrix, and close to the exact result when the spectrum decays; the
 * sketch comes from `rng` (deterministic). *kept is exact (the denominator is ||d||^2). */
mk_status mk_lora_rsvd(const float *d, uint64_t m, uint64_t n, long rank, unsigned power, uint64_t oversample, mk_rng rng,
                       float *B, float *A, long *k, double *kept, const char *what);

/* How a difference is factored: LAPACK's exact SVD (mk_lora_svd), or the randomized one
 * (mk_lora_rsvd) with `power` power iterations and 10 extra sketch columns, its sketch keyed
 * by (seed 0, `what`) so that the same module gets the same factors in every run. */
typedef struct mk_lora_svd_opts {
    bool randomized;
    unsigned power;
} mk_lora_svd_opts;

mk_status mk_lora_factor(const mk_lora_svd_opts *o, const float *d, uint64_t m, uint64_t n, long rank, float *B, float *A,
                         long *k, double *kept, const char *what);

/* ---- combining (PEFT merge_utils on full updates; all f32, in PEFT's order) ----------------- */

/* Keep the k = floor(density * n) largest |x| (ties: lower index first), zero the rest
 * (PEFT magnitude_based_pruning). density >= 1 keeps all. */
mk_status mk_lora_prune_magnitude(float *x, uint64_t n, double density);
/* Keep each element with probability density, scaled by 1/density (PEFT random_pruning
 * with rescale); randomness from (rng, stream, element index). density >= 1 keeps all. */
void mk_lora_prune_random(float *x, uint64_t n, double density, mk_rng rng, uint64_t stream);
/* out = sum_i fl(d_i * w_i), summed in i order (task_arithmetic). */
void mk_lora_weighted_sum(const float *const *d, const float *w, size_t nd, uint64_t n, float *out);
/* TIES: majority sign per element from the sum of the (pruned) d_i; out = sum of
 * fl(d_i * w_i) over the i whose sign agrees, divided by their count (at least 1). */
void mk_lora_ties_merge(const float *const *d, const float *w, size_t nd, uint64_t n, float *out);

#endif
