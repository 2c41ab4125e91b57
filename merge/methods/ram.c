/* ram.c - Reinforced Agent Merging (https://arxiv.org/abs/2601.13572), as mergekit 0.1.5:
 * task vectors tau_k = x_k - base count where |tau_k| > epsilon; an entry changed by one
 * model only is taken whole, an entry changed by several is averaged over them.
 * ramplus_tl also boosts each model's unique entries by lambda_k = 1 + r * clamp(rho_k,
 * 0, alpha), rho_k = (its shared entries) / (its unique entries) over the tensor; its
 * result is float32 (mergekit's lambda tensor promotes it). */
#include "kernel.h"

enum { P_EPSILON, P_R, P_ALPHA };

static const mk_param_def ram_params[] = {
    [P_EPSILON] = {"epsilon", MK_PS_GLOBAL, 1e-5, false, false, "changes at most this large do not count", MK_PR_NONNEG},
    {0},
};

/* epsilon is also the floor of the unique count that divides: 0 gives 0/0 (NaN) in a row
 * where no model changed anything */
static const mk_param_def ramplus_params[] = {
    [P_EPSILON] = {"epsilon", MK_PS_GLOBAL, 1e-5, false, false, "changes at most this large do not count", MK_PR_POSITIVE},
    [P_R] = {"r", MK_PS_GLOBAL, 0.1, false, false, "boost rate of unique entries", MK_PR_NONNEG},
    [P_ALPHA] = {"alpha", MK_PS_GLOBAL, 0.2, false, false, "cap of the shared/unique ratio", MK_PR_NONNEG},
    {0},
};

typedef struct ram_state {
    bool plus;
    int phase;
    size_t K, in[MK_KMAX], ib;
    float eps;           /* epsilon as the compute dtype compares it */
    float lambda[MK_KMAX];
    mk_partials part;    /* ramplus: [K shared counts, K unique counts] */
} ram_state;

/* ram's output for elements [e0, e0 + n) of a chunk, every step a loop over them (so it
 * vectorises): each element gets the operations of ram_chunk's loop in the same order.
 * A model whose change does not count adds +0 instead of nothing: the sum starts at +0 and
 * adds nonzero values, so it is never -0, and x + 0 == x. cnt, acc: n floats each. */
#define RAM_BLOCK 512
static inline MK_HOT void ram_block(const mk_dtype dt, const ram_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                    float *cnt, float *acc)
{
    const float *b = ch->in[st->ib] + e0, eps = st->eps;
    MK_SIMD for (uint64_t i = 0; i < n; i++) cnt[i] = acc[i] = 0.0f;
    for (size_t k = 0; k < st->K; k++) {
        const float *x = ch->in[st->in[k]] + e0;
        MK_SIMD for (uint64_t i = 0; i < n; i++) cnt[i] += fabsf(RD(x[i] - b[i])) > eps ? 1.0f : 0.0f;
    }
    for (size_t k = 0; k < st->K; k++) {
        const float *x = ch->in[st->in[k]] + e0;
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const float tv = RD(x[i] - b[i]), c = cnt[i], cdiv = c == 0.0f ? 1.0f : c;
            const float v = c == 1.0f ? tv : RD(tv / cdiv);
            acc[i] += fabsf(tv) > eps ? v : 0.0f;
        }
    }
    float *out = ch->out + e0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(b[i] + RD(acc[i]));
}

MK_KCLONE static mk_status ram_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    ram_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    const float *b = ch->in[st->ib];
    double *row = st->phase == 0 ? mk_partials_row(&st->part, ch->index) : NULL;
    if (!st->plus && st->phase == 1) {
        float cnt[RAM_BLOCK], acc[RAM_BLOCK];
        for (uint64_t e0 = 0; e0 < ch->n; e0 += RAM_BLOCK)
            MK_DT_DISPATCH(dt, ram_block, st, ch, e0, ch->n - e0 < RAM_BLOCK ? ch->n - e0 : RAM_BLOCK, cnt, acc);
        return MK_OK;
    }
    for (uint64_t i = 0; i < ch->n; i++) {
        float tv[MK_KMAX];
        bool nz[MK_KMAX];
        unsigned c = 0;
        for (size_t k = 0; k < st->K; k++) {
            tv[k] = RD(ch->in[st->in[k]][i] - b[i]);
            nz[k] = fabsf(tv[k]) > st->eps;
            c += nz[k];
        }
        if (st->phase == 0) {
            for (size_t k = 0; k < st->K; k++) {
                if (!nz[k]) continue;
                if (c > 1) row[k] += 1;
                else row[st->K + k] += 1;
            }
            continue;
        }
        float cdiv = (float)(c ? c : 1);
        if (!st->plus) {
            float acc = 0;
            for (size_t k = 0; k < st->K; k++) {
                if (!nz[k]) continue;
                acc += c == 1 ? tv[k] : RD(tv[k] / cdiv);
            }
            ch->out[i] = RD(b[i] + RD(acc));
        } else {
            float acc = 0;
            for (size_t k = 0; k < st->K; k++) {
                if (!nz[k]) continue;
                acc += c == 1 ? tv[k] * st->lambda[k] : RD(tv[k] / cdiv);
            }
            ch->out[i] = b[i] + acc; /* float32 result */
        }
    }
    return MK_OK;
}

static mk_status ram_run_common(const mk_merge_job *job, bool plus)
{
    const mk_dtype dt = job->compute_dtype;
    MK_TRY(mk_check_inputs_max(job, plus ? "ramplus_tl" : "ram"));
    ram_state st = {0};
    st.plus = plus;
    st.K = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    if (st.K == 0) return mk_emit_input(job, st.ib);
    for (size_t k = 0; k < st.K; k++) st.in[k] = mk_job_nonbase(job, k);
    /* PyTorch compares against the scalar cast to the tensor's dtype */
    st.eps = RD((float)job->g[P_EPSILON]);
    st.phase = 1;
    if (!plus) return job->pass(job, ram_chunk, &st, true);
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, 2 * st.K));
    st.phase = 0;
    mk_status r = job->pass(job, ram_chunk, &st, false);
    if (r == MK_OK) {
        double cnt[2 * MK_KMAX];
        mk_partials_sum(&st.part, cnt);
        float eps = (float)job->g[P_EPSILON], rr = (float)job->g[P_R], alpha = (float)job->g[P_ALPHA];
        for (size_t k = 0; k < st.K; k++) {
            float uniq = (float)cnt[st.K + k];
            if (uniq < eps) uniq = eps;
            float rho = (float)cnt[k] / uniq;
            rho = rho < 0 ? 0 : rho > alpha ? alpha : rho;
            st.lambda[k] = 1.0f + rr * rho;
        }
        st.phase = 1;
        r = job->pass(job, ram_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    return r;
}

static mk_status ram_run(const mk_merge_job *job) { return ram_run_common(job, false); }
static mk_status ramplus_run(const mk_merge_job *job) { return ram_run_common(job, true); }
static bool ram_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

const mk_method mk_method_ram = {
    .name = "ram",
    .summary = "Reinforced Agent Merging: unique changes kept, shared ones averaged",
    .params = ram_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 1,
    .run = ram_run,
    .is_identity = ram_identity,
};

const mk_method mk_method_ramplus_tl = {
    .name = "ramplus_tl",
    .summary = "RAM+ (tensor-local): RAM with unique changes boosted by their overlap",
    .params = ramplus_params,
    .flags = MK_M_RESULT_F32,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 1,
    .run = ramplus_run,
    .is_identity = ram_identity,
};
