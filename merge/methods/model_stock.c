/* model_stock.c - Model Stock (Jang et al. 2024, https://arxiv.org/abs/2403.19522), as
 * mergekit 0.1.5 computes it: with offsets o_i = w_i - w_0 of the N fine-tuned models
 * from the base, cos = mean over pairs i < j of the cosine of (o_i, o_j),
 * t = N cos / (1 + (N - 1) cos) (t = 0 where the denominator vanishes), and
 * out = t * mean_i(w_i) + (1 - t) * w_0, per tensor or, with filter_wise, per row. */
#include "kernel.h"

enum { P_FILTER_WISE };

static const mk_param_def model_stock_params[] = {
    [P_FILTER_WISE] = {"filter_wise", MK_PS_GLOBAL, 0, false, true, "one interpolation ratio per row"},
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

static inline float stock_out(mk_dtype dt, const stock_state *st, const mk_chunk *ch, uint64_t i, float t)
{
    float sum = ch->in[st->in[0]][i];
    for (size_t k = 1; k < st->N; k++) sum = RD(sum + ch->in[st->in[k]][i]);
    float avg = RD(sum / (float)st->N), w0 = ch->in[st->ib][i];
    return RD(RD(t * avg) + RD(RD(1.0f - t) * w0));
}

/* The per-element sums of one vector (a row, or a chunk's share of the whole tensor). */
static void stock_sums(mk_dtype dt, const stock_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n, double *sq,
                       double *dots)
{
    const float *w0 = ch->in[st->ib];
    for (uint64_t e = e0; e < e0 + n; e++) {
        float o[MS_MAXN];
        for (size_t k = 0; k < st->N; k++) {
            o[k] = RD(ch->in[st->in[k]][e] - w0[e]);
            sq[k] += (double)o[k] * o[k];
        }
        size_t p = 0;
        for (size_t i = 0; i < st->N; i++)
            for (size_t j = i + 1; j < st->N; j++, p++) dots[p] += (double)RD(o[i] * o[j]);
    }
}

static mk_status stock_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    stock_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    if (st->filter_wise) {
        for (uint64_t r = 0; r < ch->nrows; r++) {
            double sq[MS_MAXN] = {0}, dots[MS_MAXN * (MS_MAXN - 1) / 2] = {0};
            uint64_t o = r * job->cols;
            stock_sums(dt, st, ch, o, job->cols, sq, dots);
            float t = stock_t(dt, st->N, sq, dots);
            for (uint64_t j = 0; j < job->cols; j++) ch->out[o + j] = stock_out(dt, st, ch, o + j, t);
        }
        return MK_OK;
    }
    if (st->phase == 0) {
        double *row = mk_partials_row(&st->part, ch->index);
        stock_sums(dt, st, ch, 0, ch->n, row, row + st->N);
        return MK_OK;
    }
    for (uint64_t i = 0; i < ch->n; i++) ch->out[i] = stock_out(dt, st, ch, i, st->t);
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
