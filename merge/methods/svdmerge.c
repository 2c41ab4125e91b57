/* svdmerge.c - data-free merges on the singular vectors of each layer's task matrices.
 *
 *   tsv      TSV-Merge (Gargiulo et al., CVPR 2025, arXiv 2412.00081; code:
 *            AntoAndGar/task_singular_vectors, compute_and_sum_svd_mem_reduction): each task
 *            matrix T_k = x_k - base keeps its top r = int(min(m, n) * sv_reduction) singular
 *            triplets (sv_reduction defaults to 1/N); the N r left and right singular vectors,
 *            side by side, are each replaced by their orthogonal polar factor (Procrustes,
 *            core's mk_polar), and M = polar(U) diag(s) polar(V^T).
 *   iso_c    Iso-C (Marczak et al., ICML 2025, arXiv 2502.04959; code: danielm1405/iso-merging):
 *            the SVD of sum_k T_k with every singular value replaced by their mean.
 *   iso_cts  Iso-CTS (same paper and code): the top c singular vectors of sum_k T_k (c from
 *            common_space_fraction, adjusted so the rest divides by N) plus each task's top
 *            (min(m, n) - c) / N singular vectors of T_k with the common subspace projected out;
 *            both sides orthogonalised by their polar factors, isotropic spectrum (the mean).
 *   cart     CART (Choi et al., arXiv 2412.12153; code: JH-GEECS/CART): the average
 *            A = base + mean_k T_k; each centred task vector x_k - A keeps its top
 *            max(1, int(rank_ratio * min(m, n))) triplets; out = A + lambda * sum of those.
 *
 * Output (tsv, iso_*): base + alpha * M. Only 2-D tensors take the SVD path (cart: 2-D tensors
 * that are not embeddings or lm_head, as the authors' code keeps only attention and MLP
 * matrices); the others get the mean of the task vectors times alpha (tsv, iso_*) or the
 * average model (cart), as the authors' code does. Per-model `weight` (tsv, iso_*) scales
 * T_k first (default 1, the papers' setting).
 *
 * Truncations (tsv's top r, iso_cts's common and task-specific subspaces, cart's top p) take
 * core's randomised SVD (mk_svd_rand, the sketch keyed by (task, tensor name); see
 * RSVD_SHARE) when the sketch is small against the rank, where it is several times cheaper
 * than the full SVD; otherwise, or with exact_svd, LAPACK's full SVD, truncated (the bytes
 * of the exact-only code).
 *
 * Memory: the N task matrices of one tensor and the SVD scratch of N matrices, gathered by a
 * pass, then LAPACK/BLAS outside the executor's parallel regions, then an emitting pass.
 * The N task SVDs (and a Procrustes step's two polar factors) run side by side on the -j
 * threads, each on one-threaded OpenBLAS (core/mk_linalg), so the bytes do not depend on the
 * thread count. Arithmetic in float32, like the authors' code.
 */
#include "kernel.h"

#include "../../core/mk_linalg.h"
#include "../../core/mk_parallel.h"

typedef enum { SV_TSV, SV_ISO_C, SV_ISO_CTS, SV_CART } sv_kind;

/* tsv and iso_cts: alpha, the method's fraction, exact_svd, weight; iso_c: alpha, weight;
 * cart: lambda, rank_ratio, exact_svd */
enum { P_ALPHA, P_FRAC, P_EXACT, P_WEIGHT_4 };
enum { P_WEIGHT_2 = 1 };

/* The randomised truncated SVD keeping k: a sketch of k + max(RSVD_OVERSAMPLE, k / 2) columns
 * (the extra half keeps interleaved spectra, as CART's centred task vectors and Iso-CTS's
 * projected ones have, within tests/unit/test_svdmerge.c's tolerances), RSVD_POWER power
 * iterations; used when the sketch is at most 1 / RSVD_SHARE of min(m, n), where it is
 * faster than the full SVD (measured: break-even near a quarter of the rank). */
#define RSVD_OVERSAMPLE 10
#define RSVD_POWER 4
#define RSVD_SHARE 4

#define P_ALPHA_DEF {"alpha", MK_PS_GLOBAL, 1, false, false, "scale of the merged task matrix (the papers tune it; 1 is neutral)", MK_PR_ANY}
#define P_EXACT_DEF {"exact_svd", MK_PS_GLOBAL, 0, false, true, "LAPACK's full SVD for every truncation (no randomised SVD)", MK_PR_ANY}
#define P_WEIGHT_DEF {"weight", MK_PS_MODEL, 1, false, false, "scale of this model's task vector before the merge", MK_PR_ANY}

static const mk_param_def tsv_params[] = {
    [P_ALPHA] = P_ALPHA_DEF,
    [P_FRAC] = {"sv_reduction", MK_PS_GLOBAL, 0, false, false,
                "share of each task's rank kept; 0 = 1/N (capped at 1/N)", MK_PR_UNIT},
    [P_EXACT] = P_EXACT_DEF,
    [P_WEIGHT_4] = P_WEIGHT_DEF,
    {0},
};
static const mk_param_def iso_c_params[] = {
    [P_ALPHA] = P_ALPHA_DEF,
    [P_WEIGHT_2] = P_WEIGHT_DEF,
    {0},
};
static const mk_param_def iso_cts_params[] = {
    [P_ALPHA] = P_ALPHA_DEF,
    [P_FRAC] = {"common_space_fraction", MK_PS_GLOBAL, 0.8, false, false,
                "share of the rank from the common subspace of the summed task matrix", MK_PR_UNIT},
    [P_EXACT] = P_EXACT_DEF,
    [P_WEIGHT_4] = P_WEIGHT_DEF,
    {0},
};
static const mk_param_def cart_params[] = {
    [P_ALPHA] = {"lambda", MK_PS_GLOBAL, 2.0, false, false, "scale of the summed low-rank centred task vectors (code: prior)", MK_PR_ANY},
    [P_FRAC] = {"rank_ratio", MK_PS_GLOBAL, 0.12, false, false,
                "share of the rank kept of each centred task vector", MK_PR_UNIT},
    [P_EXACT] = P_EXACT_DEF,
    {0},
};

typedef struct sv_state {
    sv_kind kind;
    int phase;            /* 0 gather, 1 emit */
    bool svd;             /* this tensor takes the SVD path */
    bool exact;           /* exact_svd: no randomised SVD */
    size_t K, in[MK_KMAX], ib;
    float w[MK_KMAX];     /* per-model weights (1 for cart) */
    float alpha, inv_k;   /* alpha or lambda; 1/N as float32 (cart's average) */
    double frac;          /* cart: rank_ratio (0: the code zeroes every centred vector) */
    float *T;             /* [K][numel]: (weighted) task vectors, or cart's centred ones */
    float *M;             /* [numel]: the merged matrix */
} sv_state;

static size_t sv_weight_param(sv_kind kind) { return kind == SV_ISO_C ? P_WEIGHT_2 : P_WEIGHT_4; }

static mk_status sv_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    const sv_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    const float *b = ch->in[st->ib];
    if (st->phase == 0) {
        for (size_t k = 0; k < st->K; k++) {
            const float *x = ch->in[st->in[k]];
            float *t = st->T + (size_t)k * job->numel + ch->elem0;
            if (st->kind == SV_CART) {
                /* (T_k + base) - A, A = base + (1/N) * sum_k T_k, as the authors' code forms it */
                for (uint64_t i = 0; i < ch->n; i++) {
                    float s = 0;
                    for (size_t j = 0; j < st->K; j++) s += ch->in[st->in[j]][i] - b[i];
                    float avg = b[i] + st->inv_k * s;
                    t[i] = ((x[i] - b[i]) + b[i]) - avg;
                }
            } else {
                const float w = st->w[k];
                for (uint64_t i = 0; i < ch->n; i++) t[i] = w * (x[i] - b[i]);
            }
        }
        return MK_OK;
    }
    for (uint64_t i = 0; i < ch->n; i++) {
        float s = 0, v;
        if (st->kind == SV_CART) {
            for (size_t j = 0; j < st->K; j++) s += ch->in[st->in[j]][i] - b[i];
            float avg = b[i] + st->inv_k * s;
            if (st->svd) v = avg + st->alpha * st->M[ch->elem0 + i];
            else {
                /* not low-rank: the centred task vectors themselves (they sum to about 0) */
                float c = 0;
                for (size_t j = 0; j < st->K && st->frac != 0; j++) c += ((ch->in[st->in[j]][i] - b[i]) + b[i]) - avg;
                v = avg + st->alpha * c;
            }
        } else if (st->svd) {
            v = b[i] + st->alpha * st->M[ch->elem0 + i];
        } else {
            for (size_t j = 0; j < st->K; j++) s += st->w[j] * (ch->in[st->in[j]][i] - b[i]);
            v = b[i] + st->alpha * (s / (float)st->K);
        }
        ch->out[i] = RD(v);
    }
    return MK_OK;
}

/* Scratch for the SVD of one [m, n] matrix. */
typedef struct sv_svd {
    float *u, *s, *vh; /* [m, kf], [kf], [kf, n] */
} sv_svd;

static mk_status svd_alloc(sv_svd *d, uint64_t m, uint64_t n)
{
    uint64_t kf = m < n ? m : n;
    d->u = mk_malloc((size_t)(m * kf) * sizeof(float));
    d->s = mk_malloc((size_t)kf * sizeof(float));
    d->vh = mk_malloc((size_t)(kf * n) * sizeof(float));
    return d->u && d->s && d->vh ? MK_OK : MK_ERR_NOMEM;
}

static void svd_free(sv_svd *d)
{
    free(d->u);
    free(d->s);
    free(d->vh);
}

/* The top k triplets of a [m, n] into d: u [m, *ld], s, vh [k.., n]. Randomised (keyed by
 * stream and the tensor name) when that saves time and exact_svd is off; else the full SVD
 * (*ld = min(m, n)). */
static mk_status top_svd(const mk_merge_job *job, const sv_state *st, const float *a, uint64_t k, uint64_t stream,
                         sv_svd *d, uint64_t *ld)
{
    const uint64_t m = job->rows, n = job->cols, kf = m < n ? m : n;
    uint64_t os = k / 2 > RSVD_OVERSAMPLE ? k / 2 : RSVD_OVERSAMPLE;
    if (!st->exact && k > 0 && (k + os) * RSVD_SHARE <= kf) {
        *ld = k;
        return mk_svd_rand(a, m, n, k, RSVD_POWER, os, mk_rng_key(stream, job->name), d->u, d->s, d->vh,
                           job->name);
    }
    *ld = kf;
    return mk_svd_thin(a, m, n, d->u, d->s, d->vh, job->name);
}

/* The top k triplets of each task matrix T_t (t < K), side by side: d[t], ld[t]. */
typedef struct task_svds {
    const mk_merge_job *job;
    const sv_state *st;
    uint64_t k;
    sv_svd *d;
    uint64_t *ld;
} task_svds;

static mk_status task_svd(void *ctx, uint64_t t, void *tls)
{
    (void)tls;
    const task_svds *ts = ctx;
    return top_svd(ts->job, ts->st, ts->st->T + t * ts->job->numel, ts->k, t, &ts->d[t], &ts->ld[t]);
}

static mk_status all_task_svds(const mk_merge_job *job, const sv_state *st, uint64_t k, sv_svd *d, uint64_t *ld)
{
    task_svds ts = {job, st, k, d, ld};
    return mk_parallel_chunks(st->K, task_svd, &ts, NULL, NULL);
}

/* The first cnt columns of u [m, ld] (and rows of vh [.., n], values of s) into column `at`
 * of U [m, ldu], row `at` of V [.., n], S[at..]. */
static void take_triplets(const sv_svd *d, uint64_t m, uint64_t n, uint64_t ld, uint64_t cnt, float *U, uint64_t ldu,
                          float *V, float *S, uint64_t at)
{
    for (uint64_t i = 0; i < m; i++) memcpy(U + i * ldu + at, d->u + i * ld, (size_t)cnt * sizeof(float));
    memcpy(V + at * n, d->vh, (size_t)(cnt * n) * sizeof(float));
    memcpy(S + at, d->s, (size_t)cnt * sizeof(float));
}

/* The two polar factors of a Procrustes step, side by side. */
typedef struct polar_pair {
    const float *x[2];
    float *out[2];
    uint64_t rows[2], cols[2];
    const char *what;
} polar_pair;

static mk_status polar_one(void *ctx, uint64_t i, void *tls)
{
    (void)tls;
    const polar_pair *pp = ctx;
    return mk_polar(pp->x[i], pp->rows[i], pp->cols[i], pp->out[i], pp->what);
}

/* M [m, n] = scale * polar(U [m, p]) diag(S) polar(V [p, n]); S NULL: all ones. */
static mk_status polar_product(float *U, float *V, const float *S, uint64_t m, uint64_t n, uint64_t p, float scale,
                               float *M, const char *what)
{
    if (p == 0) {
        memset(M, 0, (size_t)(m * n) * sizeof *M);
        return MK_OK;
    }
    float *pu = mk_malloc((size_t)(m * p) * sizeof *pu), *pv = mk_malloc((size_t)(p * n) * sizeof *pv);
    polar_pair pp = {{U, V}, {pu, pv}, {m, p}, {p, n}, what};
    mk_status st = pu && pv ? mk_parallel_chunks(2, polar_one, &pp, NULL, NULL) : MK_ERR_NOMEM;
    if (st == MK_OK) {
        if (S)
            for (uint64_t i = 0; i < m; i++)
                for (uint64_t q = 0; q < p; q++) pu[i * p + q] *= S[q];
        mk_gemm(false, false, m, n, p, scale, pu, p, pv, n, 0.0f, M, n);
    }
    free(pu);
    free(pv);
    return st;
}

/* Python's round() of a non-negative double: half to even (rint in the default mode). */
static uint64_t round_half_even(double x) { return (uint64_t)nearbyint(x); }

/* iso_cts: the common subspace's size (the authors' code: c = int(kf * f), then c = kf -
 * round((kf - c) / N) * N so the rest divides by N); negative when that rounds up past kf. */
static int64_t iso_common(uint64_t kf, size_t K, double frac)
{
    uint64_t c = mk_trunc_u64((double)kf * frac);
    uint64_t ts = round_half_even((double)(kf - c) / (double)K) * K;
    return (int64_t)kf - (int64_t)ts;
}

static mk_status tsv_matrix(const mk_merge_job *job, sv_state *st, double red, sv_svd *d, const char *what)
{
    const uint64_t m = job->rows, n = job->cols, kf = m < n ? m : n;
    uint64_t ld[MK_KMAX];
    if (red <= 0) red = 1.0 / (double)st->K; /* the code's sv_reduction = 1 / len(tasks) */
    uint64_t r = mk_trunc_u64((double)kf * red);
    if (r * st->K > kf) r = kf / st->K;
    uint64_t p = r * st->K;
    float *U = mk_malloc((size_t)(m * p) * sizeof *U + 4), *V = mk_malloc((size_t)(p * n) * sizeof *V + 4);
    float *S = mk_malloc((size_t)p * sizeof *S + 4);
    mk_status s = U && V && S ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && r) s = all_task_svds(job, st, r, d, ld);
    for (size_t k = 0; k < st->K && s == MK_OK && r; k++) take_triplets(&d[k], m, n, ld[k], r, U, p, V, S, k * r);
    if (s == MK_OK) s = polar_product(U, V, S, m, n, p, 1.0f, st->M, what);
    free(U);
    free(V);
    free(S);
    return s;
}

/* The sum of the task matrices (Python's sum(): 0 + T_0 + T_1 + ...) into out. */
static void sum_tasks(const sv_state *st, uint64_t numel, float *out)
{
    memcpy(out, st->T, (size_t)numel * sizeof *out);
    for (size_t k = 1; k < st->K; k++) {
        const float *t = st->T + k * numel;
        for (uint64_t e = 0; e < numel; e++) out[e] += t[e];
    }
}

static float mean_of(const float *s, uint64_t n)
{
    double a = 0;
    for (uint64_t i = 0; i < n; i++) a += s[i];
    return n ? (float)(a / (double)n) : 0.0f;
}

static mk_status iso_c_matrix(const mk_merge_job *job, sv_state *st, sv_svd *d, const char *what)
{
    const uint64_t m = job->rows, n = job->cols, kf = m < n ? m : n;
    sum_tasks(st, job->numel, st->M);
    MK_TRY(mk_svd_thin(st->M, m, n, d->u, d->s, d->vh, what));
    mk_gemm(false, false, m, n, kf, mean_of(d->s, kf), d->u, kf, d->vh, n, 0.0f, st->M, n);
    return MK_OK;
}

static mk_status iso_cts_matrix(const mk_merge_job *job, sv_state *st, double frac, sv_svd *d, const char *what)
{
    const uint64_t m = job->rows, n = job->cols, kf = m < n ? m : n;
    int64_t cc = iso_common(kf, st->K, frac);
    if (cc < 0) MK_BUG("iso_cts common space not checked");
    const uint64_t c = (uint64_t)cc, nd = (kf - c) / st->K;
    uint64_t ld, ldt[MK_KMAX];
    float *U = mk_malloc((size_t)(m * kf) * sizeof *U), *V = mk_malloc((size_t)(kf * n) * sizeof *V);
    float *S = mk_malloc((size_t)kf * sizeof *S);
    float *uc = mk_malloc((size_t)(m * c) * sizeof *uc + 4), *tmp = mk_malloc((size_t)(c * n) * sizeof *tmp + 4);
    mk_status s = U && V && S && uc && tmp ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) {
        sum_tasks(st, job->numel, st->M);
        s = top_svd(job, st, st->M, c, st->K, d, &ld);
    }
    if (s == MK_OK) {
        /* the common subspace goes after the task-specific ones, as in the authors' code */
        take_triplets(d, m, n, ld, c, U, kf, V, S, st->K * nd);
        for (uint64_t i = 0; i < m; i++) memcpy(uc + i * c, d->u + i * ld, (size_t)c * sizeof *uc);
    }
    for (size_t k = 0; k < st->K && s == MK_OK && nd && c; k++) {
        /* T_k - Uc Uc^T T_k, in place (T_k is not needed afterwards) */
        float *t = st->T + k * job->numel;
        mk_gemm(true, false, c, n, m, 1.0f, uc, c, t, n, 0.0f, tmp, n);
        mk_gemm(false, false, m, n, c, -1.0f, uc, c, tmp, n, 1.0f, t, n);
    }
    if (s == MK_OK && nd) s = all_task_svds(job, st, nd, d, ldt);
    for (size_t k = 0; k < st->K && s == MK_OK && nd; k++) take_triplets(&d[k], m, n, ldt[k], nd, U, kf, V, S, k * nd);
    if (s == MK_OK) s = polar_product(U, V, NULL, m, n, kf, mean_of(S, kf), st->M, what);
    free(U);
    free(V);
    free(S);
    free(uc);
    free(tmp);
    return s;
}

static mk_status cart_matrix(const mk_merge_job *job, sv_state *st, double ratio, sv_svd *d)
{
    const uint64_t m = job->rows, n = job->cols, kf = m < n ? m : n;
    memset(st->M, 0, (size_t)job->numel * sizeof *st->M);
    if (ratio == 0) return MK_OK; /* the code zeroes the low-rank terms */
    uint64_t p = ratio == 1 ? kf : mk_trunc_u64(ratio * (double)kf);
    if (p < 1) p = 1;
    uint64_t ld[MK_KMAX];
    MK_TRY(all_task_svds(job, st, p, d, ld));
    for (size_t k = 0; k < st->K; k++) {
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t q = 0; q < p; q++) d[k].u[i * ld[k] + q] *= d[k].s[q];
        mk_gemm(false, false, m, n, p, 1.0f, d[k].u, ld[k], d[k].vh, n, 1.0f, st->M, n);
    }
    return MK_OK;
}

static bool sv_takes_svd(const mk_merge_job *job, sv_kind kind)
{
    if (job->ndim != 2 || job->rows == 0 || job->cols == 0) return false;
    return kind != SV_CART || !job->is_embed;
}

static mk_status sv_check(const mk_merge_job *job, sv_kind kind)
{
    MK_TRY(mk_check_inputs_max(job, "this method"));
    if (kind == SV_ISO_CTS && sv_takes_svd(job, kind) && mk_job_n_nonbase(job) > 0) {
        uint64_t kf = job->rows < job->cols ? job->rows : job->cols;
        if (iso_common(kf, mk_job_n_nonbase(job), job->g[P_FRAC]) < 0)
            return mk_error(MK_ERR_RECIPE,
                            "tensor %s: iso_cts with common_space_fraction %g and %zu models leaves no common subspace "
                            "for rank %llu (raise common_space_fraction)",
                            job->name, job->g[P_FRAC], mk_job_n_nonbase(job), (unsigned long long)kf);
    }
    if (sv_takes_svd(job, kind)) MK_TRY(mk_linalg_check_size(job->rows, job->cols, job->name));
    return MK_OK;
}

static mk_status sv_run(const mk_merge_job *job, sv_kind kind)
{
    MK_TRY(sv_check(job, kind));
    sv_state st = {0};
    st.kind = kind;
    st.K = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    if (st.K == 0) return mk_emit_input(job, st.ib);
    for (size_t k = 0; k < st.K; k++) {
        st.in[k] = mk_job_nonbase(job, k);
        st.w[k] = kind == SV_CART ? 1.0f : (float)job->m[st.in[k]][sv_weight_param(kind)];
    }
    st.alpha = (float)job->g[P_ALPHA];
    st.inv_k = (float)(1.0 / (double)st.K);
    st.frac = job->g[P_FRAC];
    st.exact = kind == SV_ISO_C || job->g[P_EXACT] != 0;
    st.svd = sv_takes_svd(job, kind);
    mk_status s = MK_OK;
    if (st.svd) {
        size_t nT;
        if (!mk_mul_size((size_t)job->numel, st.K, &nT)) return mk_error(MK_ERR_NOMEM, "tensor %s: too large", job->name);
        st.T = mk_malloc(nT * sizeof *st.T);
        st.M = mk_malloc((size_t)job->numel * sizeof *st.M);
        sv_svd d[MK_KMAX] = {{0}};
        size_t nd = kind == SV_ISO_C ? 1 : st.K; /* one scratch per task SVD run side by side */
        s = st.T && st.M ? MK_OK : MK_ERR_NOMEM;
        for (size_t k = 0; k < nd && s == MK_OK; k++) s = svd_alloc(&d[k], job->rows, job->cols);
        if (s == MK_OK) s = job->pass(job, sv_chunk, &st, false);
        if (s == MK_OK) {
            switch (kind) {
            case SV_TSV: s = tsv_matrix(job, &st, job->g[P_FRAC], d, job->name); break;
            case SV_ISO_C: s = iso_c_matrix(job, &st, d, job->name); break;
            case SV_ISO_CTS: s = iso_cts_matrix(job, &st, job->g[P_FRAC], d, job->name); break;
            case SV_CART: s = cart_matrix(job, &st, job->g[P_FRAC], d); break;
            }
        }
        for (size_t k = 0; k < nd; k++) svd_free(&d[k]);
        free(st.T);
        st.T = NULL;
    }
    st.phase = 1;
    if (s == MK_OK) s = job->pass(job, sv_chunk, &st, true);
    free(st.M);
    return s;
}

static bool sv_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

/* One method of the family: its check and run bound to its kind, and its table entry. */
#define SV_METHOD(id, kind_, summary_)                                                                                 \
    static mk_status id##_check(const mk_merge_job *job) { return sv_check(job, kind_); }                              \
    static mk_status id##_run(const mk_merge_job *job) { return sv_run(job, kind_); }                                  \
    const mk_method mk_method_##id = {                                                                                 \
        .name = #id,                                                                                                   \
        .summary = summary_,                                                                                           \
        .params = id##_params,                                                                                         \
        .base = MK_BASE_REQUIRED,                                                                                      \
        .min_inputs = 1,                                                                                               \
        .check = id##_check,                                                                                           \
        .run = id##_run,                                                                                               \
        .is_identity = sv_identity,                                                                                    \
    };

SV_METHOD(tsv, SV_TSV,
          "TSV-Merge (Gargiulo et al. 2025, arXiv 2412.00081): each task's top singular vectors, decorrelated by Procrustes")
SV_METHOD(iso_c, SV_ISO_C,
          "Iso-C (Marczak et al. 2025, arXiv 2502.04959): the summed task matrix with a flat (isotropic) spectrum")
SV_METHOD(iso_cts, SV_ISO_CTS,
          "Iso-CTS (Marczak et al. 2025, arXiv 2502.04959): common plus task-specific subspaces, isotropic spectrum")
SV_METHOD(cart, SV_CART, "CART (Choi et al. 2024, arXiv 2412.12153): the average plus low-rank task vectors centred on it")
