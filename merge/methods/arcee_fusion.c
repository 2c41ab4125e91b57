/* arcee_fusion.c - Arcee Fusion (https://arcee.ai), as mergekit 0.1.5: the importance of
 * each changed entry is |x - base| times the KL divergence between the softmax of its
 * row in x and in the base; entries whose importance reaches median + 1.5 (Q3 - Q1) are
 * taken from x, the rest from the base. Quantiles are sorted[floor(q (n - 1))].
 *
 * mergekit estimates the quartiles from 1,000,000 random samples (with replacement) when
 * a tensor has more elements; we take the exact quartiles of every tensor (select.h),
 * so results on such tensors differ from mergekit's within its sampling noise. The
 * result is float32, as in mergekit (its float mask promotes the sum). */
#include "kernel.h"
#include "select.h"

typedef struct fusion_state {
    int phase;             /* 0 selection passes, 1 emit */
    size_t ix, ib;
    mk_select sel;
    float threshold;
    /* each row's KL divergence, kept from the first pass for the others (the softmaxes are
     * most of the work) when the rows fit in the job's keep_bytes: klr[row], valid for the
     * rows of chunk c once stored[c] */
    float *klr;
    uint8_t *stored;
} fusion_state;

/* Row softmax as PyTorch computes it on CPU (f32: exp(x - max) times 1 / sum), then
 * rounded to the compute dtype, plus 1e-8 in the compute dtype. */
static void softmax_eps(mk_dtype dt, const float *x, uint64_t n, float *out)
{
    float mx = -INFINITY;
    for (uint64_t j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    float s = 0;
    for (uint64_t j = 0; j < n; j++) {
        out[j] = expf(x[j] - mx);
        s += out[j];
    }
    float inv = 1.0f / s;
    const float eps = RD(1e-8f); /* tensor + Python scalar: cast first */
    for (uint64_t j = 0; j < n; j++) out[j] = RD(RD(out[j] * inv) + eps);
}

/* Importance of every element of a chunk (rows are whole in a chunk). */
static mk_status importance(const mk_merge_job *job, const fusion_state *st, const mk_chunk *ch, float *imp)
{
    const mk_dtype dt = job->compute_dtype;
    const uint64_t cols = job->cols;
    const bool have = st->stored && st->stored[ch->index];
    float *p = have ? NULL : malloc((size_t)cols * 2 * sizeof *p + 1);
    if (!have && !p) return mk_error(MK_ERR_NOMEM, "out of memory");
    float *q = p + cols;
    for (uint64_t r = 0; r < ch->nrows; r++) {
        const float *x = ch->in[st->ix] + r * cols, *b = ch->in[st->ib] + r * cols;
        float klr;
        if (have) {
            klr = st->klr[ch->row0 + r];
        } else {
            softmax_eps(dt, x, cols, p);
            softmax_eps(dt, b, cols, q);
            double kl = 0;
            for (uint64_t j = 0; j < cols; j++) kl += (double)RD(p[j] * RD(logf(RD(p[j] / q[j]))));
            klr = mk_reduced(dt, kl);
            if (st->klr) st->klr[ch->row0 + r] = klr;
        }
        for (uint64_t j = 0; j < cols; j++) imp[r * cols + j] = RD(fabsf(RD(x[j] - b[j])) * klr);
    }
    if (st->stored && !have) st->stored[ch->index] = 1;
    free(p);
    return MK_OK;
}

static mk_status fusion_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    fusion_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    float *imp = malloc((size_t)ch->n * sizeof *imp + 1);
    uint32_t *keys = st->phase == 0 ? malloc((size_t)ch->n * sizeof *keys + 1) : NULL;
    mk_status r = imp && (st->phase || keys) ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory");
    if (r == MK_OK) r = importance(job, st, ch, imp);
    if (r == MK_OK && st->phase == 0) {
        for (uint64_t i = 0; i < ch->n; i++) keys[i] = mk_key_f32(imp[i] + 0.0f);
        r = mk_sel_count(&st->sel, 0, ch->index, keys, ch->n);
    } else if (r == MK_OK) {
        const float *x = ch->in[st->ix], *b = ch->in[st->ib];
        for (uint64_t i = 0; i < ch->n; i++) ch->out[i] = imp[i] >= st->threshold ? b[i] + RD(x[i] - b[i]) : b[i];
    }
    free(imp);
    free(keys);
    return r;
}

static mk_status fusion_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    fusion_state st = {0};
    st.ib = (size_t)job->base;
    st.ix = job->base == 0 ? 1 : 0;
    MK_TRY(mk_sel_init(&st.sel, job->numel, job->n_chunks, 1, 3));
    if (job->chunk_rows && job->rows <= job->keep_bytes / sizeof *st.klr) {
        st.klr = malloc((size_t)job->rows * sizeof *st.klr);
        st.stored = calloc((size_t)job->n_chunks, 1);
        if (!st.klr || !st.stored) {
            free(st.klr);
            free(st.stored);
            st.klr = NULL;
            st.stored = NULL;
        }
    }
    /* arcee_fusion.py: indices (q * (n - 1)).long() with q a float32 tensor */
    static const float qs[3] = {0.25f, 0.5f, 0.75f};
    for (int i = 0; i < 3; i++)
        mk_sel_query_set(&st.sel, (size_t)i, 0, (uint64_t)(qs[i] * (float)(job->numel - 1)), false, true);
    mk_status r = MK_OK;
    if (mk_sel_start(&st.sel)) {
        do {
            r = job->pass(job, fusion_chunk, &st, false);
        } while (r == MK_OK && mk_sel_next(&st.sel));
    }
    if (r == MK_OK) {
        float q1 = mk_key_f32_value(st.sel.q[0].key), med = mk_key_f32_value(st.sel.q[1].key);
        float q3 = mk_key_f32_value(st.sel.q[2].key);
        st.threshold = RD(med + RD(1.5f * RD(q3 - q1)));
        st.phase = 1;
        r = job->pass(job, fusion_chunk, &st, true);
    }
    mk_sel_free(&st.sel);
    free(st.klr);
    free(st.stored);
    return r;
}

static bool fusion_identity(const mk_merge_job *job) { return job->n_in == 1; }

const mk_method mk_method_arcee_fusion = {
    .name = "arcee_fusion",
    .summary = "take the other model's changes where they matter most (KL-weighted importance)",
    .flags = MK_M_RESULT_F32,
    .params = (const mk_param_def[]){{0}},
    .base = MK_BASE_REQUIRED,
    .min_inputs = 2,
    .max_inputs = 2,
    .missing = MK_MISSING_SINGLETON,
    .run = fusion_run,
    .is_identity = fusion_identity,
};
