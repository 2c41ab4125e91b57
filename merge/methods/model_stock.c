/* model_stock.c - Model Stock (Jang et al. 2024, https://arxiv.org/abs/2403.19522), as
 * mergekit 0.1.5 computes it: with offsets o_i = w_i - w_0 of the N fine-tuned models
 * from the base, cos = mean over pairs i < j of the cosine of (o_i, o_j),
 * t = N cos / (1 + (N - 1) cos) (t = 0 where the denominator vanishes), and
 * out = t * mean_i(w_i) + (1 - t) * w_0, per tensor or, with filter_wise, per row. */
#include "kernel.h"

enum { P_FILTER_WISE };

static const mk_param_def model_stock_params[] = {
    [P_FILTER_WISE] = {"filter_wise", MK_PS_GLOBAL, 0, false, true, "one interpolation ratio per row", MK_PR_ANY},
    {0},
};

#define MS_MAXN 32 /* fine-tuned models (pairs grow quadratically) */

typedef struct stock_state {
    int phase;
    size_t N, in[MS_MAXN], ib;
    size_t npairs;
    bool filter_wise;
    float t;
    mk_partials part; /* [N norms^2 ... then pair dots] */
} stock_state;

/* From per-model sums of squares and pair dot sums to t (model_stock.py). */
static float stock_t(mk_dtype dt, size_t N, const double *sq, const double *dots)
{
    float nrm[MS_MAXN];
    for (size_t i = 0; i < N; i++) nrm[i] = mk_reduced(dt, sqrt(sq[i]));
    float csum = 0;
    size_t p = 0;
    for (size_t i = 0; i < N; i++)
        for (size_t j = i + 1; j < N; j++, p++) {
            float np = RD(nrm[i] * nrm[j]), lo = RD(1e-6f);
            if (np < lo) np = lo;
            float c = RD(mk_reduced(dt, dots[p]) / np);
            c = c > 1 ? 1 : c < -1 ? -1 : c;
            csum += c;
        }
    /* torch mean: an f32 sum divided by the count, rounded once */
    float cos = RD(csum / (float)p);
    float den = RD(1.0f + RD((float)(N - 1) * cos));
    if (fabsf(den) < RD(1e-6f)) return 0.0f;
    return RD(RD((float)N * cos) / den);
}

/* offsets o_k = RD(w_k - w_0) of rows [e0, e0 + n) into o[k * n ...] */
static inline MK_HOT void stock_offsets(const mk_dtype dt, const stock_state *st, const mk_chunk *ch, uint64_t e0,
                                        uint64_t n, float *o)
{
    const float *w0 = ch->in[st->ib] + e0;
    for (size_t k = 0; k < st->N; k++) {
        const float *w = ch->in[st->in[k]] + e0;
        float *ok = o + k * n;
        MK_SIMD for (uint64_t i = 0; i < n; i++) ok[i] = RD(w[i] - w0[i]);
    }
}

/* sum of RD(a[i] * b[i]) in lanes */
static inline MK_HOT double stock_dot(const mk_dtype dt, const float *a, const float *b, uint64_t n)
{
    double l[MK_LANES] = {0};
    uint64_t i = 0;
    for (; i + MK_LANES <= n; i += MK_LANES) MK_SIMD for (int j = 0; j < MK_LANES; j++) l[j] += (double)RD(a[i + j] * b[i + j]);
    for (int j = 0; i < n; i++, j++) l[j] += (double)RD(a[i] * b[i]);
    return mk_lanes_total(l);
}

static double stock_dot_any(mk_dtype dt, const float *a, const float *b, uint64_t n)
{
    switch (dt) {
    case MK_F32: return stock_dot(MK_F32, a, b, n);
    case MK_BF16: return stock_dot(MK_BF16, a, b, n);
    default: return stock_dot(dt, a, b, n);
    }
}

/* The per-model sums of squares and pair dot products of one vector. */
MK_KCLONE static void stock_sums(mk_dtype dt, const stock_state *st, const float *o, uint64_t n, double *sq, double *dots)
{
    for (size_t k = 0; k < st->N; k++) sq[k] = mk_sum_sq(o + k * n, n);
    size_t p = 0;
    for (size_t i = 0; i < st->N; i++)
        for (size_t j = i + 1; j < st->N; j++, p++) dots[p] = stock_dot_any(dt, o + i * n, o + j * n, n);
}

/* out = t * mean(w_k) + (1 - t) * w_0 for elements [e0, e0 + n); acc: n floats */
static inline MK_HOT void stock_out(const mk_dtype dt, const stock_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                    float t, float *acc)
{
    const float *w1 = ch->in[st->in[0]] + e0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] = 0.0f + w1[i]; /* Python's sum() starts at 0 */
    for (size_t k = 1; k < st->N; k++) {
        const float *w = ch->in[st->in[k]] + e0;
        MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] = RD(acc[i] + w[i]);
    }
    const float *w0 = ch->in[st->ib] + e0, cnt = (float)st->N, omt = RD(1.0f - t);
    float *out = ch->out + e0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(RD(t * RD(acc[i] / cnt)) + RD(omt * w0[i]));
}

MK_KCLONE static mk_status stock_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    stock_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    const uint64_t cols = job->cols;
    const size_t sz = (size_t)((st->N + 1) * ch->n) * sizeof(float) + 4;
    float *o = mk_chunk_scratch(ch, &sz, 1);
    if (!o) return mk_error(MK_ERR_NOMEM, "out of memory for chunk scratch");
    if (st->filter_wise) {
        for (uint64_t r = 0; r < ch->nrows; r++) {
            double sq[MS_MAXN], dots[MS_MAXN * (MS_MAXN - 1) / 2];
            MK_DT_DISPATCH(dt, stock_offsets, st, ch, r * cols, cols, o);
            stock_sums(dt, st, o, cols, sq, dots);
            float t = stock_t(dt, st->N, sq, dots);
            MK_DT_DISPATCH(dt, stock_out, st, ch, r * cols, cols, t, o);
        }
    } else if (st->phase == 0) {
        double *row = mk_partials_row(&st->part, ch->index);
        MK_DT_DISPATCH(dt, stock_offsets, st, ch, 0, ch->n, o);
        stock_sums(dt, st, o, ch->n, row, row + st->N);
    } else {
        MK_DT_DISPATCH(dt, stock_out, st, ch, 0, ch->n, st->t, o);
    }
    return MK_OK;
}

static mk_status stock_check(const mk_merge_job *job)
{
    if (mk_job_n_nonbase(job) > MS_MAXN)
        return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: model_stock takes at most %d models besides the base", job->name,
                        MS_MAXN);
    return MK_OK;
}

static mk_status stock_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    stock_state st = {0};
    MK_TRY(stock_check(job));
    st.N = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    for (size_t k = 0; k < st.N; k++) st.in[k] = mk_job_nonbase(job, k);
    st.npairs = st.N * (st.N - 1) / 2;
    st.filter_wise = job->g[P_FILTER_WISE] != 0;
    if (st.filter_wise) return job->pass(job, stock_chunk, &st, true);
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, st.N + st.npairs));
    mk_status r = job->pass(job, stock_chunk, &st, false);
    if (r == MK_OK) {
        double sums[MS_MAXN + MS_MAXN * (MS_MAXN - 1) / 2];
        mk_partials_sum(&st.part, sums);
        st.t = stock_t(dt, st.N, sums, sums + st.N);
        st.phase = 1;
        r = job->pass(job, stock_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    return r;
}

static bool stock_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

const mk_method mk_method_model_stock = {
    .name = "model_stock",
    .summary = "Model Stock: interpolate the average toward the base by the models' agreement",
    .params = model_stock_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 3,
    .missing = MK_MISSING_BASE_OR_SKIP,
    .check = stock_check,
    .run = stock_run,
    .is_identity = stock_identity,
};
