/* sce.c - SCE (Select, Calculate, Erase; FuseChat, https://arxiv.org/abs/2408.07990), as
 * mergekit 0.1.5: task vectors T_k = x_k - base; with select_topk < 1 keep only the
 * entries whose variance across models is among the top int(nonzero * select_topk)
 * (equal variances ordered by flat index, lower first); weight each model by its mean
 * squared task vector (normalised to sum 1); erase entries whose sign disagrees with the
 * sign of the sum; out = base + sum_k c_k E_k T_k / max(sum_k c_k E_k, 1e-6).
 * No per-model weight. */
#include "kernel.h"
#include "select.h"

enum { P_INT8_MASK, P_SELECT_TOPK };

static const mk_param_def sce_params[] = {
    [P_INT8_MASK] = {"int8_mask", MK_PS_GLOBAL, 0, false, true, "store the sign mask as int8 (memory only; no effect here)", MK_PR_ANY},
    [P_SELECT_TOPK] = {"select_topk", MK_PS_GLOBAL, 1, false, false, "fraction of high-variance entries kept", MK_PR_UNIT},
    {0},
};

typedef struct sce_state {
    int phase;          /* 0 select, 1 weights, 2 emit */
    size_t K, in[MK_KMAX], ib;
    bool select, none;  /* topk masking on; mask everything away */
    mk_select sel;
    mk_partials part;   /* phase 0: [1] nonzero variances; phase 1: [K] sums of squares */
    float c[MK_KMAX];
} sce_state;

/* Task vectors of element i, and the variance key. */
static inline uint32_t sce_tv(mk_dtype dt, const sce_state *st, const mk_chunk *ch, uint64_t i, float *T)
{
    const float b = ch->in[st->ib][i];
    double mean = 0;
    for (size_t k = 0; k < st->K; k++) {
        T[k] = RD(ch->in[st->in[k]][i] - b);
        mean += T[k];
    }
    mean /= (double)st->K;
    double var = 0;
    for (size_t k = 0; k < st->K; k++) var += ((double)T[k] - mean) * ((double)T[k] - mean);
    return mk_key_abs(RD((float)(var / (double)st->K)));
}

static mk_status sce_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    sce_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    float T[MK_KMAX];
    if (st->phase == 0) {
        uint32_t *keys = malloc((size_t)ch->n * sizeof *keys + 1);
        if (!keys) return mk_error(MK_ERR_NOMEM, "out of memory");
        uint64_t nz = 0;
        for (uint64_t i = 0; i < ch->n; i++) {
            keys[i] = sce_tv(dt, st, ch, i, T);
            nz += keys[i] != 0;
        }
        mk_partials_row(&st->part, ch->index)[0] = (double)nz;
        mk_status r = mk_sel_count(&st->sel, 0, ch->index, keys, ch->n);
        free(keys);
        return r;
    }
    double *row = st->phase == 1 ? mk_partials_row(&st->part, ch->index) : NULL;
    uint64_t seen = 0;
    for (uint64_t i = 0; i < ch->n; i++) {
        uint32_t key = sce_tv(dt, st, ch, i, T);
        bool keep = !st->none && (!st->select || mk_sel_before(&st->sel.q[0], ch->index, key, &seen));
        if (!keep)
            for (size_t k = 0; k < st->K; k++) T[k] = 0;
        if (st->phase == 1) {
            for (size_t k = 0; k < st->K; k++) row[k] += (double)RD(T[k] * T[k]);
            continue;
        }
        float sum = 0;
        for (size_t k = 0; k < st->K; k++) sum += T[k];
        bool pos = RD(sum) >= 0;
        float m = 0, d = 0;
        for (size_t k = 0; k < st->K; k++) {
            if (!(pos ? T[k] > 0 : T[k] < 0)) continue;
            m += RD(T[k] * st->c[k]);
            d += st->c[k];
        }
        float den = RD(d), lo = RD(1e-6f);
        if (den < lo) den = lo;
        ch->out[i] = RD(ch->in[st->ib][i] + RD(RD(m) / den));
    }
    return MK_OK;
}

static mk_status sce_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    MK_TRY(mk_check_inputs_max(job, "sce"));
    sce_state st = {0};
    st.K = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    if (st.K == 0) return mk_emit_input(job, st.ib);
    for (size_t k = 0; k < st.K; k++) st.in[k] = mk_job_nonbase(job, k);
    double topk = job->g[P_SELECT_TOPK];
    st.none = topk <= 0;
    st.select = topk > 0 && topk < 1;
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, st.K));
    mk_status r = MK_OK;
    if (st.select) {
        r = mk_sel_init(&st.sel, job->numel, job->n_chunks, 1, 1);
        if (r == MK_OK) {
            /* the cut depends on the count of nonzero variances, known after the first pass */
            mk_sel_query_set(&st.sel, 0, 0, 1, true, false);
            mk_sel_start(&st.sel);
            st.phase = 0;
            r = job->pass(job, sce_chunk, &st, false);
        }
        if (r == MK_OK) {
            double sums[MK_KMAX];
            mk_partials_sum(&st.part, sums);
            double nz = sums[0];
            /* sce.py: int(count_nonzero * density), an int64 tensor times a float: float32 */
            uint64_t k = mk_trunc_u64((double)((float)nz * (float)topk));
            if (k == 0) st.none = true;
            mk_sel_set_pos(&st.sel, 0, k);
            while (r == MK_OK && mk_sel_next(&st.sel)) r = job->pass(job, sce_chunk, &st, false);
        }
    }
    if (r == MK_OK) {
        memset(st.part.v, 0, (size_t)(st.part.n_chunks * st.part.width) * sizeof(double));
        st.phase = 1;
        r = job->pass(job, sce_chunk, &st, false);
    }
    if (r == MK_OK) {
        double sq[MK_KMAX];
        mk_partials_sum(&st.part, sq);
        float ws = 0;
        for (size_t k = 0; k < st.K; k++) {
            st.c[k] = RD((float)(sq[k] / (double)job->numel));
            ws += st.c[k];
        }
        ws = RD(ws); /* .item() of a sum in the compute dtype */
        for (size_t k = 0; k < st.K; k++) st.c[k] = fabsf(ws) < 1e-6f ? RD(1.0f / (float)st.K) : RD(st.c[k] / ws);
        st.phase = 2;
        r = job->pass(job, sce_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    if (st.select) mk_sel_free(&st.sel);
    return r;
}

static bool sce_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

const mk_method mk_method_sce = {
    .name = "sce",
    .summary = "SCE: select high-variance entries, weight models by their change, erase sign conflicts",
    .params = sce_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 1,
    .run = sce_run,
    .is_identity = sce_identity,
};
