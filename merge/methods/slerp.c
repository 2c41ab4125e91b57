/* slerp.c - interpolation on the sphere, as mergekit 0.1.5 computes it:
 *   slerp       two models, t in [0, 1] (Shoemake 1985); near-colinear pairs fall back
 *               to linear interpolation of the original tensors
 *   nuslerp     two weighted models, optionally as task vectors of a base, per tensor,
 *               per row or per column
 *   multislerp  barycentric interpolation of several models on the hypersphere
 *               (https://goddard.blog/posts/multislerp-wow-what-a-cool-idea)
 *   karcher     the Riemannian (Frechet) mean of all inputs on the unit sphere
 * Whole-tensor norms and dot products are gathered per chunk and reduced in chunk order.
 * slerp and karcher's norms are float32 whatever the compute dtype (as mergekit does);
 * everything else is rounded to the compute dtype where PyTorch would (kernel.h). */
#include "kernel.h"

/* The bf16 instantiations of the nuslerp, multislerp and karcher kernels are built three
 * times where GCC's function clones work: the portable one, AVX2 and x86-64-v4 (AVX-512),
 * chosen when the program starts. Every copy makes the same IEEE operations in the same
 * order (-ffp-contract=off, no FMA), so the same bits. AVX-512 halves the vector
 * instructions of the bf16 rounding steps (a masked AND keeps NaN), which dominate these
 * kernels in bf16 (multislerp, kernel alone: 11.5 -> 9.0 ns per element); in float32 it was
 * slower (5.5 -> 6.3 ns), so the other dtypes keep MK_KCLONE's two copies. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
#define SP_CLONE_BF16 __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define SP_CLONE_BF16
#endif

/* Sums side by side: q[j * stride + i] is term i of sum j (j < SP_W); acc[j] += every term
 * in element order, for j < nk. Each sum is its own dependency chain, running beside the
 * others, so up to SP_W sums cost about the latency of one (a double add's latency bounds
 * these loops). Sums nk.. are computed from whatever their rows hold and dropped. */
#define SP_W 4
static inline MK_HOT void sp_sums(double *acc, size_t nk, const double *q, size_t stride, uint64_t n)
{
    double a0 = acc[0], a1 = nk > 1 ? acc[1] : 0, a2 = nk > 2 ? acc[2] : 0, a3 = nk > 3 ? acc[3] : 0;
    const double *q0 = q, *q1 = q + stride, *q2 = q + 2 * stride, *q3 = q + 3 * stride;
    if (nk <= 2) { /* two models, the common case: half the loads and adds */
        for (uint64_t i = 0; i < n; i++) {
            a0 += q0[i];
            a1 += q1[i];
        }
        acc[0] = a0;
        if (nk > 1) acc[1] = a1;
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        a0 += q0[i];
        a1 += q1[i];
        a2 += q2[i];
        a3 += q3[i];
    }
    acc[0] = a0;
    if (nk > 1) acc[1] = a1;
    if (nk > 2) acc[2] = a2;
    if (nk > 3) acc[3] = a3;
}

/* acc + q[0] + q[1] + ..., in that order: the chain alone, its terms computed before. */
static inline double sp_sum1(double acc, const double *q, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) acc += q[i];
    return acc;
}

/* ======================================================================================
 * slerp
 * ====================================================================================== */

enum { SLERP_T };

static const mk_param_def slerp_params[] = {
    /* any number: mergekit extrapolates along the arc past 0 and 1, and recipes use it */
    [SLERP_T] = {"t", MK_PS_GLOBAL, 0, true, false, "0 = the base model, 1 = the other model (outside [0, 1]: extrapolated)", MK_PR_ANY},
    {0},
};

#define SLERP_DOT_THRESHOLD 0.9995f /* mergekit slerp.py: |cos| above this -> lerp */
#define SLERP_EPS 1e-8f             /* norms at or below this are not divided by */

typedef struct slerp_state {
    int phase;
    size_t ia, ib; /* base, other */
    mk_partials part;
    float na, nb, ca, cb;
} slerp_state;

static inline MK_HOT void slerp_emit(const mk_dtype dt, const float *a, const float *b, float ca, float cb, float *out,
                                     uint64_t n)
{
    MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(ca * a[i] + cb * b[i]);
}

MK_KCLONE static mk_status slerp_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    slerp_state *st = user;
    const float *a = ch->in[st->ia], *b = ch->in[st->ib];
    if (st->phase == 0) {
        double *r = mk_partials_row(&st->part, ch->index);
        r[0] = mk_sum_sq(a, ch->n);
        r[1] = mk_sum_sq(b, ch->n);
    } else if (st->phase == 1) {
        /* sum of (a/|a|) (b/|b|), each factor rounded to f32 as torch does */
        const float na = st->na, nb = st->nb;
        double l[MK_LANES] = {0};
        uint64_t i = 0, n = ch->n;
        for (; i + MK_LANES <= n; i += MK_LANES)
            for (int j = 0; j < MK_LANES; j++) l[j] += (double)((a[i + j] / na) * (b[i + j] / nb));
        for (int j = 0; i < n; i++, j++) l[j] += (double)((a[i] / na) * (b[i] / nb));
        mk_partials_row(&st->part, ch->index)[0] = mk_lanes_total(l);
    } else {
        MK_DT_DISPATCH(job->compute_dtype, slerp_emit, a, b, st->ca, st->cb, ch->out, ch->n);
    }
    return MK_OK;
}

static mk_status slerp_run(const mk_merge_job *job)
{
    slerp_state st = {0};
    st.ia = (size_t)job->base;
    st.ib = job->base == 0 ? 1 : 0;
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, 2));
    double s[2];
    mk_status r = job->pass(job, slerp_chunk, &st, false);
    if (r == MK_OK) {
        mk_partials_sum(&st.part, s);
        st.na = (float)sqrt(s[0]);
        st.nb = (float)sqrt(s[1]);
        if (!(st.na > SLERP_EPS)) st.na = 1;
        if (!(st.nb > SLERP_EPS)) st.nb = 1;
        st.phase = 1;
        r = job->pass(job, slerp_chunk, &st, false);
    }
    if (r == MK_OK) {
        mk_partials_sum(&st.part, s);
        float dot = (float)s[0];
        if (dot > 1) dot = 1;
        if (dot < -1) dot = -1;
        float t = (float)job->g[SLERP_T], omt = 1.0f - t;
        if (fabsf(dot) > SLERP_DOT_THRESHOLD) {
            st.ca = omt;
            st.cb = t;
        } else {
            float theta = acosf(dot), sin_theta = sinf(theta);
            st.ca = sinf(omt * theta) / sin_theta;
            st.cb = sinf(t * theta) / sin_theta;
        }
        st.phase = 2;
        r = job->pass(job, slerp_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    return r;
}

const mk_method mk_method_slerp = {
    .name = "slerp",
    .summary = "spherical interpolation between the base and one other model",
    .params = slerp_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 2,
    .max_inputs = 2,
    .missing = MK_MISSING_SINGLETON,
    .run = slerp_run,
};

/* ======================================================================================
 * nuslerp
 * ====================================================================================== */

enum { NU_WEIGHT, NU_ROW_WISE, NU_FLATTEN };

static const mk_param_def nuslerp_params[] = {
    [NU_WEIGHT] = {"weight", MK_PS_MODEL, 0, true, false, "relative weight of this model", MK_PR_ANY},
    [NU_ROW_WISE] = {"nuslerp_row_wise", MK_PS_GLOBAL, 0, false, true, "interpolate along dim 0 (columns of a matrix)", MK_PR_ANY},
    [NU_FLATTEN] = {"nuslerp_flatten", MK_PS_GLOBAL, 1, false, true, "treat the whole tensor as one vector", MK_PR_ANY},
    {0},
};

#define NU_NORM_EPS 1e-7f /* nuslerp.py _normalize clamp */
#define NU_EPS 1e-8       /* colinear when 1 - cos^2 <= eps^2 */

enum { NU_WHOLE, NU_ROWS, NU_COLS };

typedef struct nu_state {
    int mode, phase;
    size_t i0, i1;
    int ib;
    float t, omt;
    mk_partials part;
    uint64_t nvec;              /* vectors (1, rows or cols) */
    float *n0, *n1, *cosv;      /* [nvec] for the whole / column modes */
    struct nu_coef *coef;       /* [nvec] the coefficients from cosv (emitting pass) */
} nu_state;

typedef struct nu_coef {
    bool colinear;
    float sa, sb, sin_theta;
} nu_coef;

/* The shared tail: from cos(theta) (already in dt) to the coefficients. */
static nu_coef nu_coefs(mk_dtype dt, float cos, float t, float omt)
{
    nu_coef c;
    if (cos > 1) cos = 1;
    if (cos < -1) cos = -1;
    c.colinear = (double)RD(1.0f - RD(cos * cos)) <= NU_EPS * NU_EPS;
    float theta = RD(acosf(c.colinear ? 0.0f : cos));
    c.sin_theta = RD(sinf(theta));
    c.sa = RD(sinf(RD(omt * theta)));
    c.sb = RD(sinf(RD(t * theta)));
    return c;
}

static inline float nu_apply(mk_dtype dt, const nu_coef *c, float v0, float v1, float t, float omt)
{
    if (c->colinear) return RD(RD(omt * v0) + RD(t * v1));
    return RD(RD(RD(c->sa * v0) + RD(c->sb * v1)) / c->sin_theta);
}

/* v0, v1 of element i: task vectors when there is a base. */
static inline void nu_vecs(mk_dtype dt, const nu_state *st, const mk_chunk *ch, uint64_t i, float *v0, float *v1)
{
    float x0 = ch->in[st->i0][i], x1 = ch->in[st->i1][i];
    if (st->ib >= 0) {
        float b = ch->in[st->ib][i];
        x0 = RD(x0 - b);
        x1 = RD(x1 - b);
    }
    *v0 = x0;
    *v1 = x1;
}

static inline float nu_norm(mk_dtype dt, double sumsq)
{
    float n = mk_reduced(dt, sqrt(sumsq));
    float lo = RD(NU_NORM_EPS);
    return n < lo ? lo : n;
}

/* The whole tensor as one vector, in blocks: each step a loop over the block (vectorised),
 * the sums still added element by element in order. */
#define NU_BLOCK 1024u
static inline MK_HOT void nu_whole(const mk_dtype dt, const nu_state *st, const mk_chunk *ch, double *row)
{
    float v0[NU_BLOCK], v1[NU_BLOCK];
    double q[NU_BLOCK];
    const float *x0 = ch->in[st->i0], *x1 = ch->in[st->i1], *b = st->ib >= 0 ? ch->in[st->ib] : NULL;
    double s0 = row ? row[0] : 0, s1 = row ? row[1] : 0;
    for (uint64_t e0 = 0; e0 < ch->n; e0 += NU_BLOCK) {
        const uint64_t n = ch->n - e0 < NU_BLOCK ? ch->n - e0 : NU_BLOCK;
        if (b) {
            MK_SIMD for (uint64_t i = 0; i < n; i++) {
                v0[i] = RD(x0[e0 + i] - b[e0 + i]);
                v1[i] = RD(x1[e0 + i] - b[e0 + i]);
            }
        } else {
            memcpy(v0, x0 + e0, (size_t)n * sizeof *v0);
            memcpy(v1, x1 + e0, (size_t)n * sizeof *v1);
        }
        if (st->phase == 0) {
            for (uint64_t i = 0; i < n; i++) {
                s0 += (double)v0[i] * v0[i];
                s1 += (double)v1[i] * v1[i];
            }
        } else if (st->phase == 1) {
            const float n0 = st->n0[0], n1 = st->n1[0];
            MK_SIMD for (uint64_t i = 0; i < n; i++) q[i] = (double)RD(RD(v0[i] / n0) * RD(v1[i] / n1));
            for (uint64_t i = 0; i < n; i++) s0 += q[i];
        } else {
            const nu_coef c = st->coef[0];
            const float t = st->t, omt = st->omt;
            float *out = ch->out + e0;
            if (c.colinear) {
                MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(RD(omt * v0[i]) + RD(t * v1[i]));
            } else {
                MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(RD(RD(c.sa * v0[i]) + RD(c.sb * v1[i])) / c.sin_theta);
            }
            if (b) MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(b[e0 + i] + out[i]);
        }
    }
    if (st->phase == 0) {
        row[0] = s0;
        row[1] = s1;
    } else if (st->phase == 1) {
        row[0] = s0;
    }
}

static inline MK_HOT mk_status nu_chunk_any(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    nu_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    const uint64_t cols = job->cols;
    if (st->mode == NU_ROWS) {
        /* every row is a vector and lies whole in this chunk */
        for (uint64_t r = 0; r < ch->nrows; r++) {
            uint64_t o = r * cols;
            double s0 = 0, s1 = 0, d = 0;
            for (uint64_t j = 0; j < cols; j++) {
                float v0, v1;
                nu_vecs(dt, st, ch, o + j, &v0, &v1);
                s0 += (double)v0 * v0;
                s1 += (double)v1 * v1;
            }
            float n0 = nu_norm(dt, s0), n1 = nu_norm(dt, s1);
            for (uint64_t j = 0; j < cols; j++) {
                float v0, v1;
                nu_vecs(dt, st, ch, o + j, &v0, &v1);
                d += (double)RD(RD(v0 / n0) * RD(v1 / n1));
            }
            nu_coef c = nu_coefs(dt, mk_reduced(dt, d), st->t, st->omt);
            for (uint64_t j = 0; j < cols; j++) {
                float v0, v1;
                nu_vecs(dt, st, ch, o + j, &v0, &v1);
                float res = nu_apply(dt, &c, v0, v1, st->t, st->omt);
                ch->out[o + j] = st->ib >= 0 ? RD(ch->in[st->ib][o + j] + res) : res;
            }
        }
        return MK_OK;
    }
    /* whole tensor (one vector) or columns (cols vectors): gather, then apply */
    double *row = st->phase < 2 ? mk_partials_row(&st->part, ch->index) : NULL;
    if (st->mode == NU_WHOLE) {
        MK_DT_DISPATCH(dt, nu_whole, st, ch, row);
        return MK_OK;
    }
    for (uint64_t i = 0; i < ch->n; i++) {
        uint64_t v = st->mode == NU_COLS ? i % cols : 0;
        float v0, v1;
        nu_vecs(dt, st, ch, i, &v0, &v1);
        if (st->phase == 0) {
            row[2 * v] += (double)v0 * v0;
            row[2 * v + 1] += (double)v1 * v1;
        } else if (st->phase == 1) {
            row[v] += (double)RD(RD(v0 / st->n0[v]) * RD(v1 / st->n1[v]));
        } else {
            float res = nu_apply(dt, &st->coef[v], v0, v1, st->t, st->omt);
            ch->out[i] = st->ib >= 0 ? RD(ch->in[st->ib][i] + res) : res;
        }
    }
    return MK_OK;
}

SP_CLONE_BF16 static mk_status nu_chunk_bf16(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    return nu_chunk_any(job, ch, user);
}
MK_KCLONE static mk_status nu_chunk_other(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    return nu_chunk_any(job, ch, user);
}
static mk_status nu_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    return job->compute_dtype == MK_BF16 ? nu_chunk_bf16(job, ch, user) : nu_chunk_other(job, ch, user);
}

static mk_status nuslerp_run(const mk_merge_job *job)
{
    nu_state st = {0};
    const mk_dtype dt = job->compute_dtype;
    st.i0 = mk_job_nonbase(job, 0);
    st.i1 = mk_job_nonbase(job, 1);
    st.ib = job->base;
    double w0 = job->m[st.i0][NU_WEIGHT], w1 = job->m[st.i1][NU_WEIGHT];
    double t = fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1); /* Python floats */
    st.t = (float)t;
    st.omt = (float)(1.0 - t);
    bool flatten = job->g[NU_FLATTEN] != 0, row_wise = job->g[NU_ROW_WISE] != 0;
    /* dim 0 of a 1-D tensor is its only dim: the whole tensor is the vector */
    st.mode = flatten || job->ndim <= 1 ? NU_WHOLE : row_wise ? NU_COLS : NU_ROWS;
    if (st.mode == NU_COLS && job->ndim > 2)
        return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: nuslerp_row_wise on a %d-D tensor is not supported", job->name,
                        job->ndim);
    if (st.mode == NU_ROWS) return job->pass(job, nu_chunk, &st, true);

    st.nvec = st.mode == NU_COLS ? job->cols : 1;
    st.n0 = mk_calloc((size_t)st.nvec, sizeof *st.n0);
    st.n1 = mk_calloc((size_t)st.nvec, sizeof *st.n1);
    st.cosv = mk_calloc((size_t)st.nvec, sizeof *st.cosv);
    st.coef = mk_calloc((size_t)st.nvec, sizeof *st.coef);
    double *sum = mk_calloc((size_t)st.nvec * 2, sizeof *sum);
    mk_status r = st.n0 && st.n1 && st.cosv && st.coef && sum ? MK_OK : MK_ERR_NOMEM;
    if (r == MK_OK) r = mk_partials_init(&st.part, job->n_chunks, (size_t)st.nvec * 2);
    if (r == MK_OK) r = job->pass(job, nu_chunk, &st, false);
    if (r == MK_OK) {
        mk_partials_sum(&st.part, sum);
        for (uint64_t v = 0; v < st.nvec; v++) {
            st.n0[v] = nu_norm(dt, sum[2 * v]);
            st.n1[v] = nu_norm(dt, sum[2 * v + 1]);
        }
        memset(st.part.v, 0, (size_t)(st.part.n_chunks * st.part.width) * sizeof(double));
        st.phase = 1;
        r = job->pass(job, nu_chunk, &st, false);
    }
    if (r == MK_OK) {
        mk_partials_sum(&st.part, sum);
        for (uint64_t v = 0; v < st.nvec; v++) {
            st.cosv[v] = mk_reduced(dt, sum[v]);
            st.coef[v] = nu_coefs(dt, st.cosv[v], st.t, st.omt);
        }
        st.phase = 2;
        r = job->pass(job, nu_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    free(st.n0);
    free(st.n1);
    free(st.cosv);
    free(st.coef);
    free(sum);
    return r;
}

const mk_method mk_method_nuslerp = {
    .name = "nuslerp",
    .summary = "slerp of two weighted models, optionally of their task vectors",
    .params = nuslerp_params,
    .base = MK_BASE_OPTIONAL,
    .min_inputs = 1,
    .min_non_base = 2,
    .max_non_base = 2,
    .missing = MK_MISSING_SINGLETON,
    .run = nuslerp_run,
};

/* ======================================================================================
 * multislerp
 * ====================================================================================== */

enum { MS_WEIGHT, MS_NORMALIZE, MS_EPS };

static const mk_param_def multislerp_params[] = {
    [MS_WEIGHT] = {"weight", MK_PS_MODEL, 0, true, false, "weight of this model", MK_PR_ANY},
    [MS_NORMALIZE] = {"normalize_weights", MK_PS_GLOBAL, 1, false, true, "divide the weights by their sum", MK_PR_ANY},
    [MS_EPS] = {"eps", MK_PS_GLOBAL, 1e-8, false, false, "numerical floor", MK_PR_NONNEG},
    {0},
};

typedef struct ms_state {
    int phase;
    size_t K;
    size_t idx[MK_KMAX]; /* input index of non-base k */
    int ib;
    float eps;
    float w[MK_KMAX];    /* weights in dt, normalised */
    float nrm[MK_KMAX];  /* ||T_k|| in dt */
    float den[MK_KMAX];  /* ||T_k|| + eps in dt */
    float mean_norm, dots[MK_KMAX], cos_tn, sin_over, avg_norm;
    bool fallback;
    mk_partials part;
} ms_state;

/* One block of n elements from e0, every step a loop over the block (vectorised); each
 * element gets the same operations as alone, and each sum takes its terms in element order:
 * the terms are computed first (vectorised), then added by sp_sums / sp_sum1, so the
 * dependency chain of the adds carries nothing else.
 * u: [K][MS_BLOCK]; m, a: [MS_BLOCK]; q: [SP_W][MS_BLOCK] doubles, then [MS_BLOCK] for a
 * single sum. The rows of q that a block's last group leaves unused hold earlier terms
 * (products of floats: never a denormal double) or the zeros of ms_chunk. */
#define MS_BLOCK 512u
static inline MK_HOT void ms_delta(const mk_dtype dt, const float *x, const float *b, uint64_t n, float *t)
{
    if (b) MK_SIMD for (uint64_t i = 0; i < n; i++) t[i] = RD(x[i] - b[i]);
    else memcpy(t, x, (size_t)n * sizeof *t);
}

/* phase 0: the squared norms of the task vectors, SP_W at a time */
static inline MK_HOT void ms_norms(const mk_dtype dt, const ms_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                   double *row, float *t, double *q)
{
    const float *b = st->ib >= 0 ? ch->in[st->ib] + e0 : NULL;
    for (size_t g = 0; g < st->K; g += SP_W) {
        const size_t nk = st->K - g < SP_W ? st->K - g : SP_W;
        for (size_t j = 0; j < nk; j++) {
            ms_delta(dt, ch->in[st->idx[g + j]] + e0, b, n, t);
            double *qj = q + j * MS_BLOCK;
            MK_SIMD for (uint64_t i = 0; i < n; i++) qj[i] = (double)t[i] * t[i];
        }
        sp_sums(row + g, nk, q, MS_BLOCK, n);
    }
}

static inline MK_HOT void ms_block(const mk_dtype dt, const ms_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                   double *row, float *u, float *m, float *a, double *q)
{
    double *q1 = q + SP_W * MS_BLOCK;
    const size_t K = st->K;
    const float *b = st->ib >= 0 ? ch->in[st->ib] + e0 : NULL;
    if (st->phase == 0) {
        ms_norms(dt, st, ch, e0, n, row, m, q);
        return;
    }
    float *out = ch->out + e0;
    if (st->fallback) { /* two antipodal inputs: the weighted sum */
        float *t0 = u, *t1 = u + MS_BLOCK;
        const float w0 = st->w[0], w1 = st->w[1];
        ms_delta(dt, ch->in[st->idx[0]] + e0, b, n, t0);
        ms_delta(dt, ch->in[st->idx[1]] + e0, b, n, t1);
        MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(RD(t0[i] * w0) + RD(t1[i] * w1));
        if (b) MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(out[i] + b[i]);
        return;
    }
    MK_SIMD for (uint64_t i = 0; i < n; i++) a[i] = 0;
    for (size_t k = 0; k < K; k++) {
        float *uk = u + k * MS_BLOCK;
        const float den = st->den[k], w = st->w[k];
        ms_delta(dt, ch->in[st->idx[k]] + e0, b, n, uk);
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            uk[i] = RD(uk[i] / den);
            a[i] += RD(uk[i] * w);
        }
    }
    if (st->phase == 1) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const float mi = RD(a[i]);
            q1[i] = (double)mi * mi;
        }
        row[0] = sp_sum1(row[0], q1, n);
        return;
    }
    const float mn = st->mean_norm;
    MK_SIMD for (uint64_t i = 0; i < n; i++) m[i] = RD(RD(a[i]) / mn);
    if (st->phase == 2) {
        for (size_t g = 0; g < K; g += SP_W) {
            const size_t nk = K - g < SP_W ? K - g : SP_W;
            for (size_t j = 0; j < nk; j++) {
                const float *uk = u + (g + j) * MS_BLOCK;
                double *qj = q + j * MS_BLOCK;
                MK_SIMD for (uint64_t i = 0; i < n; i++) qj[i] = (double)RD(uk[i] * m[i]);
            }
            sp_sums(row + g, nk, q, MS_BLOCK, n);
        }
        return;
    }
    MK_SIMD for (uint64_t i = 0; i < n; i++) a[i] = 0;
    for (size_t k = 0; k < K; k++) {
        const float *uk = u + k * MS_BLOCK;
        const float dk = st->dots[k], w = st->w[k];
        MK_SIMD for (uint64_t i = 0; i < n; i++) a[i] += RD(RD(uk[i] - RD(dk * m[i])) * w);
    }
    if (st->phase == 3) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const float tr = RD(a[i]);
            q1[i] = (double)tr * tr;
        }
        row[0] = sp_sum1(row[0], q1, n);
        return;
    }
    const float ct = st->cos_tn, so = st->sin_over, an = st->avg_norm;
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        const float tr = RD(a[i]);
        float res = RD(RD(m[i] * ct) + RD(tr * so));
        out[i] = RD(res * an);
    }
    if (b) MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(out[i] + b[i]);
}

static inline MK_HOT mk_status ms_chunk_dt(const mk_dtype dt, ms_state *st, const mk_chunk *ch)
{
    double *row = st->phase < 4 ? mk_partials_row(&st->part, ch->index) : NULL;
    const size_t sz[] = {st->K * MS_BLOCK * sizeof(float), 2 * MS_BLOCK * sizeof(float),
                         (SP_W + 1) * MS_BLOCK * sizeof(double)};
    float *u = mk_chunk_scratch(ch, sz, 3);
    if (!u) return mk_error(MK_ERR_NOMEM, "out of memory for chunk scratch");
    float *m = (float *)((char *)u + mk_tmp_round(sz[0])), *a = m + MS_BLOCK;
    double *q = (double *)((char *)m + mk_tmp_round(sz[1]));
    memset(q, 0, SP_W * MS_BLOCK * sizeof *q); /* the scratch's old bits may be anything */
    for (uint64_t e0 = 0; e0 < ch->n; e0 += MS_BLOCK)
        ms_block(dt, st, ch, e0, ch->n - e0 < MS_BLOCK ? ch->n - e0 : MS_BLOCK, row, u, m, a, q);
    return MK_OK;
}

SP_CLONE_BF16 static mk_status ms_chunk_bf16(ms_state *st, const mk_chunk *ch) { return ms_chunk_dt(MK_BF16, st, ch); }
MK_KCLONE static mk_status ms_chunk_f32(ms_state *st, const mk_chunk *ch) { return ms_chunk_dt(MK_F32, st, ch); }

static mk_status ms_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    const mk_dtype dt = job->compute_dtype;
    if (dt == MK_BF16) return ms_chunk_bf16(user, ch);
    if (dt == MK_F32) return ms_chunk_f32(user, ch);
    return ms_chunk_dt(dt, user, ch); /* float16 and the rest: rounding calls, not vectorised */
}

static mk_status ms_pass(const mk_merge_job *job, ms_state *st, int phase, double *sum)
{
    st->phase = phase;
    if (phase < 4) memset(st->part.v, 0, (size_t)(st->part.n_chunks * st->part.width) * sizeof(double));
    MK_TRY(job->pass(job, ms_chunk, st, phase == 4));
    if (phase < 4) mk_partials_sum(&st->part, sum);
    return MK_OK;
}

static bool ms_identity(const mk_merge_job *job) { return job->n_in == 1; }

static mk_status multislerp_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    ms_state st = {0};
    MK_TRY(mk_check_inputs_max(job, "multislerp"));
    st.K = mk_job_n_nonbase(job);
    st.ib = job->base;
    for (size_t k = 0; k < st.K; k++) st.idx[k] = mk_job_nonbase(job, k);
    /* one model: returned as it is (the base, if any, is not used) */
    if (st.K == 1) return mk_emit_input(job, st.idx[0]);
    st.eps = (float)job->g[MS_EPS];
    float wsum = 0;
    for (size_t k = 0; k < st.K; k++) {
        st.w[k] = RD((float)job->m[st.idx[k]][MS_WEIGHT]);
        wsum += st.w[k];
    }
    if (job->g[MS_NORMALIZE] != 0) {
        wsum = RD(wsum);
        for (size_t k = 0; k < st.K; k++) st.w[k] = RD(st.w[k] / wsum);
    }
    double sum[MK_KMAX];
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, st.K));
    mk_status r = ms_pass(job, &st, 0, sum);
    if (r == MK_OK) {
        for (size_t k = 0; k < st.K; k++) {
            st.nrm[k] = mk_reduced(dt, sqrt(sum[k]));
            st.den[k] = RD(st.nrm[k] + RD(st.eps)); /* tensor + Python scalar */
        }
        r = ms_pass(job, &st, 1, sum);
    }
    if (r == MK_OK) {
        st.mean_norm = mk_reduced(dt, sqrt(sum[0]));
        if (st.mean_norm < RD(st.eps)) {
            if (st.K != 2)
                r = mk_error(MK_ERR_NUMERIC,
                             "tensor %s: multislerp: the weighted sum of the unit vectors is zero (antipodal models "
                             "with balancing weights); change the weights",
                             job->name);
            st.fallback = true;
            if (r == MK_OK) r = ms_pass(job, &st, 4, sum);
            mk_partials_free(&st.part);
            return r;
        }
        r = ms_pass(job, &st, 2, sum);
    }
    if (r == MK_OK) {
        for (size_t k = 0; k < st.K; k++) st.dots[k] = mk_reduced(dt, sum[k]);
        r = ms_pass(job, &st, 3, sum);
    }
    if (r == MK_OK) {
        float tn = RD(mk_reduced(dt, sqrt(sum[0])) + RD(st.eps));
        st.cos_tn = RD(cosf(tn));
        st.sin_over = RD(RD(sinf(tn)) / tn);
        float acc = 0;
        for (size_t k = 0; k < st.K; k++) acc += RD(st.nrm[k] * st.w[k]);
        st.avg_norm = RD(acc);
        r = ms_pass(job, &st, 4, sum);
    }
    mk_partials_free(&st.part);
    return r;
}

const mk_method mk_method_multislerp = {
    .name = "multislerp",
    .summary = "barycentric interpolation of several models on the hypersphere",
    .params = multislerp_params,
    .base = MK_BASE_OPTIONAL,
    .min_inputs = 1,
    .min_non_base = 1,
    .run = multislerp_run,
    .is_identity = ms_identity,
};

/* ======================================================================================
 * karcher
 * ====================================================================================== */

enum { KA_MAX_ITER, KA_TOL };

/* mergekit takes any integer (pydantic int); a negative one runs no iteration, and the
 * iterations are kept (ka_iter) to replay them element by element, so they are bounded */
#define KA_ITER_CAP 1000

static const mk_param_def karcher_params[] = {
    [KA_MAX_ITER] = {"max_iter", MK_PS_GLOBAL, 10, false, false, "iterations at most", {0, KA_ITER_CAP, MK_PR_LO | MK_PR_HI | MK_PR_INT}},
    [KA_TOL] = {"tol", MK_PS_GLOBAL, 1e-5, false, false, "stop when the tangent norm is below this", MK_PR_NONNEG},
    {0},
};

/* Scalars of one iteration, enough to replay it element by element. */
typedef struct ka_iter {
    float dot[MK_KMAX], coef[MK_KMAX];
    bool skip[MK_KMAX];
    float tn, cos_tn, sin_tn;
    float un;
    bool renorm;
} ka_iter;

typedef struct ka_state {
    int phase;           /* 0 norms, 1 init norm, 2 dots, 3 tangent norm, 4 new-mean norm, 5 emit */
    size_t N, nv;
    size_t valid[MK_KMAX];
    float norm[MK_KMAX];
    float na[MK_KMAX];   /* normalised alphas of the valid inputs, as f32 */
    float mean_norm;     /* of the initial sum, f32 */
    bool first_unit;     /* the initial mean is the first valid unit vector */
    size_t iters;        /* completed iterations */
    ka_iter *it;         /* [max_iter] */
    float scale;
    mk_partials part;
    /* each element's mean after kiter[c] iterations, for chunks c < kn (job keep_bytes), so a
     * pass takes one step from it instead of replaying every iteration from the inputs; with
     * KA_RAW in kiter[c], that iteration's new mean before its renormalisation (phase 4
     * keeps it, so the emitting pass needs no input for these chunks) */
    void *kv;            /* in kdt */
    mk_dtype kdt;        /* BF16 when computing in bfloat16 (every mean and new mean is a bf16
                            value, so 2 bytes keep it exactly), else F32 */
    uint32_t *kiter;
    uint64_t kn, kslot;
} ka_state;

#define KA_NONE UINT32_MAX
#define KA_RAW (1u << 31)

/* Elements are worked on in blocks of KA_BLOCK, every step a loop over the block (so it
 * vectorises); each element gets exactly the operations it would get alone, and the sums
 * take the elements in index order. */
#define KA_BLOCK 256

/* U[v][0..n) = valid input v's unit vector at elements e0.. of the chunk */
static inline MK_HOT void ka_units(const mk_dtype dt, const ka_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                   float *U)
{
    for (size_t v = 0; v < st->nv; v++) {
        const size_t i = st->valid[v];
        const float *x = ch->in[i] + e0, nr = st->norm[i];
        float *u = U + v * KA_BLOCK;
        if (nr == 0.0f) MK_SIMD for (uint64_t e = 0; e < n; e++) u[e] = 0.0f;
        else MK_SIMD for (uint64_t e = 0; e < n; e++) u[e] = RD(x[e] / nr);
    }
}

/* The initial mean before normalisation: sum of alpha_v * u_v, rounded at each step. */
static inline MK_HOT void ka_init_sum(const mk_dtype dt, const ka_state *st, const float *U, uint64_t n, float *m)
{
    MK_SIMD for (uint64_t e = 0; e < n; e++) m[e] = 0;
    for (size_t v = 0; v < st->nv; v++) {
        const float *u = U + v * KA_BLOCK, a = st->na[v];
        MK_SIMD for (uint64_t e = 0; e < n; e++) m[e] = RD(m[e] + RD(a * u[e]));
    }
}

/* Iteration j's tangent t at the mean m (its dots known). */
static inline MK_HOT void ka_tan(const mk_dtype dt, const ka_state *st, const float *U, uint64_t n, size_t j,
                                 const float *m, float *t)
{
    const ka_iter *it = &st->it[j];
    MK_SIMD for (uint64_t e = 0; e < n; e++) t[e] = 0;
    for (size_t v = 0; v < st->nv; v++) {
        if (it->skip[v]) continue;
        const float *u = U + v * KA_BLOCK, c = it->coef[v], d = it->dot[v];
        MK_SIMD for (uint64_t e = 0; e < n; e++) t[e] = RD(t[e] + RD(c * RD(u[e] - RD(d * m[e]))));
    }
}

/* Iteration j's unnormalised new mean, into t (its tangent norm known). */
static inline MK_HOT void ka_new(const mk_dtype dt, const ka_state *st, uint64_t n, size_t j, const float *m, float *t)
{
    const ka_iter *it = &st->it[j];
    const float c = it->cos_tn, s = it->sin_tn, tn = it->tn;
    MK_SIMD for (uint64_t e = 0; e < n; e++) t[e] = RD(RD(c * m[e]) + RD(s * RD(t[e] / tn)));
}

/* acc + the squares of x[0..n), in order; q1: [n] room for the terms */
static inline MK_HOT double ka_sumsq(double acc, const float *x, uint64_t n, double *q1)
{
    MK_SIMD for (uint64_t e = 0; e < n; e++) q1[e] = (double)x[e] * x[e];
    return sp_sum1(acc, q1, n);
}

/* row[g..] += sum over e of x_j[e] * y_j[e] for the nk <= SP_W pairs j of a group, side by
 * side; y NULL: the squares of x_j. q: [SP_W][KA_BLOCK]. */
static inline MK_HOT void ka_group(double *row, const float *const *x, const float *const *y, size_t nk, uint64_t n,
                                   double *q)
{
    for (size_t j = 0; j < nk; j++) {
        const float *xj = x[j], *yj = y ? y[j] : x[j];
        double *qj = q + j * KA_BLOCK;
        MK_SIMD for (uint64_t e = 0; e < n; e++) qj[e] = (double)xj[e] * yj[e];
    }
    sp_sums(row, nk, q, KA_BLOCK, n);
}

/* Elements e0.. of a chunk's kept values as floats: where they lie, or widened into dst. */
static inline const float *ka_kept_get(const ka_state *st, const void *kept, uint64_t e0, uint64_t n, float *dst)
{
    if (st->kdt == MK_F32) return (const float *)kept + e0;
    mk_dtype_info(st->kdt)->to_f32((const char *)kept + e0 * mk_dtype_size(st->kdt), dst, (size_t)n);
    return dst;
}

/* Keep src[0..n) as elements e0.. of the chunk (exactly: they are values of kdt). */
static inline void ka_kept_put(const ka_state *st, void *kept, uint64_t e0, uint64_t n, const float *src)
{
    mk_dtype_info(st->kdt)->from_f32(src, (char *)kept + e0 * mk_dtype_size(st->kdt), (size_t)n);
}

/* phases 0 to 5 over one block of n elements from e0; kept: the chunk's kept means, or NULL.
 * U: [nv][KA_BLOCK], m, t: [KA_BLOCK]; q: [SP_W][KA_BLOCK] then [KA_BLOCK] doubles (the
 * terms of the sums; rows a group leaves unused hold products of floats or zeros). */
static inline MK_HOT void ka_block(const mk_dtype dt, const ka_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                   double *row, void *kept, float *U, float *m, float *t, double *q)
{
    double *q1 = q + SP_W * KA_BLOCK;
    const float *x[SP_W], *y[SP_W];
    if (st->phase == 0) {
        for (size_t g = 0; g < st->N; g += SP_W) {
            const size_t nk = st->N - g < SP_W ? st->N - g : SP_W;
            for (size_t j = 0; j < nk; j++) x[j] = ch->in[g + j] + e0;
            ka_group(row + g, x, NULL, nk, n, q);
        }
        return;
    }
    if (st->phase == 1) {
        ka_units(dt, st, ch, e0, n, U);
        ka_init_sum(dt, st, U, n, m);
        row[0] = ka_sumsq(row[0], m, n, q1);
        return;
    }
    /* the mean after st->iters iterations: from the one kept, or replayed from the start;
     * read where it lies (kept, U) until an iteration writes it into m */
    const uint32_t kk = kept ? st->kiter[ch->index] : KA_NONE;
    const uint32_t from = kk == KA_NONE ? KA_NONE : kk & ~KA_RAW;
    /* the emitting pass needs no unit vector when the mean is kept (no input is read then) */
    if (st->phase != 5 || from != st->iters) ka_units(dt, st, ch, e0, n, U);
    const float *mean = m;
    /* what is kept is already the mean after st->iters iterations (no store below) */
    const bool renorm = from != KA_NONE && (kk & KA_RAW) && st->it[from - 1].renorm;
    const bool current = from == st->iters && !renorm;
    if (renorm) {
        const float un = st->it[from - 1].un, *k = ka_kept_get(st, kept, e0, n, m);
        MK_SIMD for (uint64_t e = 0; e < n; e++) m[e] = RD(k[e] / un);
    } else if (from != KA_NONE) {
        mean = ka_kept_get(st, kept, e0, n, m);
    } else if (st->first_unit) {
        mean = U;
    } else {
        ka_init_sum(dt, st, U, n, m);
        const float mn = st->mean_norm;
        MK_SIMD for (uint64_t e = 0; e < n; e++) m[e] = RD(m[e] / mn);
    }
    for (size_t j = from != KA_NONE ? from : 0; j < st->iters; j++) {
        const ka_iter *it = &st->it[j];
        ka_tan(dt, st, U, n, j, mean, t);
        ka_new(dt, st, n, j, mean, t);
        if (it->renorm) {
            const float un = it->un;
            MK_SIMD for (uint64_t e = 0; e < n; e++) m[e] = RD(t[e] / un);
        } else {
            memcpy(m, t, (size_t)n * sizeof *m);
        }
        mean = m;
    }
    if (kept && !current) ka_kept_put(st, kept, e0, n, mean);
    switch (st->phase) {
    case 2:
        for (size_t g = 0; g < st->nv; g += SP_W) {
            const size_t nk = st->nv - g < SP_W ? st->nv - g : SP_W;
            for (size_t j = 0; j < nk; j++) {
                x[j] = mean;
                y[j] = U + (g + j) * KA_BLOCK;
            }
            ka_group(row + g, x, y, nk, n, q);
        }
        break;
    case 3:
        ka_tan(dt, st, U, n, st->iters, mean, t);
        row[0] = ka_sumsq(row[0], t, n, q1);
        break;
    case 4:
        ka_tan(dt, st, U, n, st->iters, mean, t);
        ka_new(dt, st, n, st->iters, mean, t);
        row[0] = ka_sumsq(row[0], t, n, q1);
        if (kept) ka_kept_put(st, kept, e0, n, t);
        break;
    default: {
        float *out = ch->out + e0;
        const float sc = st->scale;
        MK_SIMD for (uint64_t e = 0; e < n; e++) out[e] = RD(sc * mean[e]);
    }
    }
}

static inline MK_HOT mk_status ka_chunk_dt(const mk_dtype dt, ka_state *st, const mk_chunk *ch)
{
    double *row = st->phase < 5 ? mk_partials_row(&st->part, ch->index) : NULL;
    const size_t es = mk_dtype_size(st->kdt);
    void *kept = st->phase >= 2 && ch->index < st->kn ? (char *)st->kv + (size_t)(ch->index * st->kslot) * es : NULL;
    const size_t sz[] = {(st->nv ? st->nv : 1) * KA_BLOCK * sizeof(float), KA_BLOCK * sizeof(float),
                         KA_BLOCK * sizeof(float), (SP_W + 1) * KA_BLOCK * sizeof(double)};
    float *U = mk_chunk_scratch(ch, sz, 4);
    if (!U) return mk_error(MK_ERR_NOMEM, "out of memory for chunk scratch");
    float *m = (float *)((char *)U + mk_tmp_round(sz[0])), *t = (float *)((char *)m + mk_tmp_round(sz[1]));
    double *q = (double *)((char *)t + mk_tmp_round(sz[2]));
    memset(q, 0, SP_W * KA_BLOCK * sizeof *q); /* the scratch's old bits may be anything */
    for (uint64_t e0 = 0; e0 < ch->n; e0 += KA_BLOCK)
        ka_block(dt, st, ch, e0, ch->n - e0 < KA_BLOCK ? ch->n - e0 : KA_BLOCK, row, kept, U, m, t, q);
    /* phase 4 leaves the next iteration's mean before renormalisation */
    if (kept) st->kiter[ch->index] = st->phase == 4 ? (uint32_t)(st->iters + 1) | KA_RAW : (uint32_t)st->iters;
    return MK_OK;
}

SP_CLONE_BF16 static mk_status ka_chunk_bf16(ka_state *st, const mk_chunk *ch) { return ka_chunk_dt(MK_BF16, st, ch); }
MK_KCLONE static mk_status ka_chunk_f32(ka_state *st, const mk_chunk *ch) { return ka_chunk_dt(MK_F32, st, ch); }

static mk_status ka_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    const mk_dtype dt = job->compute_dtype;
    if (dt == MK_BF16) return ka_chunk_bf16(user, ch);
    if (dt == MK_F32) return ka_chunk_f32(user, ch);
    return ka_chunk_dt(dt, user, ch);
}

static mk_status ka_pass(const mk_merge_job *job, ka_state *st, int phase, double *sum)
{
    st->phase = phase;
    if (phase < 5) memset(st->part.v, 0, (size_t)(st->part.n_chunks * st->part.width) * sizeof(double));
    /* every kept chunk holds the final mean by the emitting pass (phases 2 to 4 leave it) */
    if (phase == 5 && st->kn) MK_TRY(job->pass_kept(job, ka_chunk, st, true, st->kn));
    else MK_TRY(job->pass(job, ka_chunk, st, phase == 5));
    if (phase < 5) mk_partials_sum(&st->part, sum);
    return MK_OK;
}

static mk_status karcher_check(const mk_merge_job *job) { return mk_check_inputs_max(job, "karcher"); }

static bool ka_identity(const mk_merge_job *job) { return job->n_in == 1; }

static mk_status karcher_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    ka_state st = {0};
    MK_TRY(mk_check_inputs_max(job, "karcher"));
    st.N = job->n_in;
    double tol = job->g[KA_TOL];
    size_t max_iter = (size_t)job->g[KA_MAX_ITER];
    double alpha = 1.0 / (double)st.N;
    double sum[MK_KMAX];
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, st.N));
    st.it = mk_calloc(max_iter ? max_iter : 1, sizeof *st.it);
    mk_status r = st.it ? ka_pass(job, &st, 0, sum) : MK_ERR_NOMEM;
    if (r == MK_OK) {
        double asum = 0;
        for (size_t i = 0; i < st.N; i++) {
            st.norm[i] = (float)sqrt(sum[i]);
            if ((double)st.norm[i] > tol) {
                st.valid[st.nv++] = i;
                asum += alpha;
            }
        }
        for (size_t v = 0; v < st.nv; v++) st.na[v] = (float)(alpha / asum);
        float sc = 0;
        for (size_t i = 0; i < st.N; i++) sc += (float)alpha * st.norm[i];
        st.scale = RD(sc); /* scale * mean: cast first, as cos and sin above */
        if (st.nv == 0) {
            /* every input is (nearly) zero: mergekit returns zeros */
            mk_partials_free(&st.part);
            free(st.it);
            return mk_emit_zeros(job);
        }
        r = ka_pass(job, &st, 1, sum);
        if (r == MK_OK) {
            st.mean_norm = (float)sqrt(sum[0]);
            st.first_unit = (double)st.mean_norm < tol;
        }
        /* room for the means, up to the cap (none: every pass replays them) */
        st.kslot = job->chunk_rows * job->cols;
        st.kdt = dt == MK_BF16 ? MK_BF16 : MK_F32;
        const size_t es = mk_dtype_size(st.kdt);
        if (r == MK_OK && max_iter && st.kslot && job->keep_bytes / es >= st.kslot) {
            st.kn = job->keep_bytes / es / st.kslot;
            if (st.kn > job->n_chunks) st.kn = job->n_chunks;
            st.kv = malloc((size_t)(st.kn * st.kslot) * es);
            st.kiter = malloc((size_t)st.kn * sizeof *st.kiter);
            if (!st.kv || !st.kiter) st.kn = 0;
            for (uint64_t c = 0; c < st.kn; c++) st.kiter[c] = KA_NONE;
        }
    }
    for (size_t j = 0; j < max_iter && r == MK_OK; j++) {
        ka_iter *it = &st.it[j];
        r = ka_pass(job, &st, 2, sum);
        if (r != MK_OK) break;
        bool all_skip = true;
        for (size_t v = 0; v < st.nv; v++) {
            float d = mk_reduced(dt, sum[v]);
            d = d > 1 ? 1 : d < -1 ? -1 : d;
            float theta = RD(acosf(d));
            it->dot[v] = d;
            it->skip[v] = (double)theta < tol;
            it->coef[v] = RD(st.na[v] * RD(theta / RD(sinf(theta))));
            all_skip = all_skip && it->skip[v];
        }
        /* every input skipped (each theta below tol, so tol > 0): the tangent is zero, its
         * norm 0 is below tol, and the iterations end without the pass that would sum it */
        if (all_skip) break;
        r = ka_pass(job, &st, 3, sum);
        if (r != MK_OK) break;
        it->tn = (float)sqrt(sum[0]);
        if ((double)it->tn < tol) break;
        /* cos(tn) * mean: a 0-dim float32 tensor on the left is cast to the dtype first */
        it->cos_tn = RD(cosf(it->tn));
        it->sin_tn = RD(sinf(it->tn));
        r = ka_pass(job, &st, 4, sum);
        if (r != MK_OK) break;
        it->un = (float)sqrt(sum[0]);
        it->renorm = (double)it->un > tol;
        st.iters = j + 1;
    }
    if (r == MK_OK) r = ka_pass(job, &st, 5, sum);
    mk_partials_free(&st.part);
    free(st.it);
    free(st.kv);
    free(st.kiter);
    return r;
}

const mk_method mk_method_karcher = {
    .name = "karcher",
    .summary = "Riemannian (Karcher) mean of the models on the unit sphere",
    .params = karcher_params,
    .base = MK_BASE_IGNORED,
    .min_inputs = 1,
    .check = karcher_check,
    .run = karcher_run,
    .is_identity = ka_identity,
};
