/* methods_run.c - see methods_run.h */
#include "methods_run.h"

#include <stdlib.h>
#include <string.h>

typedef struct mt_exec {
    const mt_run *r;
    uint64_t rpc;
    float *out;
    unsigned passes;
} mt_exec;

static uint64_t chunk_at(const mt_run *r, uint64_t i, uint64_t n)
{
    if (r->order == 1) return n - 1 - i;
    if (r->order == 2) {
        uint64_t odd = n / 2; /* chunks 1, 3, 5, ... first */
        return i < odd ? 2 * i + 1 : 2 * (i - odd);
    }
    return i;
}

/* as the executor: chunks below kept get no input (in NULL) after the tensor's first pass */
static mk_status mt_pass_kept(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit, uint64_t kept)
{
    mt_exec *ex = job->exec;
    if (ex->passes++ == 0) kept = 0;
    if (ex->r->counts) {
        ex->r->counts->passes = ex->passes;
        ex->r->counts->chunks_no_input += kept < job->n_chunks ? kept : job->n_chunks;
    }
    const mt_run *r = ex->r;
    const float *in[16];
    float *bufs[16];
    float *outbuf = malloc((size_t)(ex->rpc * r->cols) * sizeof(float) + 4);
    mk_status s = outbuf ? MK_OK : MK_ERR_NOMEM;
    for (size_t k = 0; k < r->n_in; k++) bufs[k] = malloc((size_t)(ex->rpc * r->cols) * sizeof(float) + 4);
    mk_chunk_tmp tmp = {0};
    for (uint64_t i = 0; i < job->n_chunks && s == MK_OK; i++) {
        uint64_t c = chunk_at(r, i, job->n_chunks);
        uint64_t row0 = c * ex->rpc, nrows = r->rows - row0 < ex->rpc ? r->rows - row0 : ex->rpc;
        uint64_t e0 = row0 * r->cols, n = nrows * r->cols;
        for (size_t k = 0; k < r->n_in; k++) {
            /* the executor casts inputs to the compute dtype */
            memcpy(bufs[k], r->in[k] + e0, (size_t)n * sizeof(float));
            mk_dtype_round_f32(job->compute_dtype, bufs[k], (size_t)n);
            in[k] = bufs[k];
        }
        mk_chunk ch = {c, e0, n, row0, nrows, c < kept ? NULL : in, outbuf, &tmp};
        s = fn(job, &ch, user);
        if (s == MK_OK && emit) memcpy(ex->out + e0, outbuf, (size_t)n * sizeof(float));
    }
    for (size_t k = 0; k < r->n_in; k++) free(bufs[k]);
    mk_chunk_tmp_free(&tmp);
    free(outbuf);
    return s;
}

static mk_status mt_pass(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit)
{
    return mt_pass_kept(job, fn, user, emit, 0);
}

mk_status mt_run_method(const mt_run *r, float *out)
{
    const mk_method *m = mk_method_find(r->method);
    if (!m) return mk_error(MK_ERR_USAGE, "no method %s", r->method);
    double mv[16][MK_MAX_PARAMS];
    bool ms[16][MK_MAX_PARAMS];
    memset(ms, 0, sizeof ms);
    mk_merge_job job;
    memset(&job, 0, sizeof job);
    int64_t shape[2] = {(int64_t)r->rows, (int64_t)r->cols};
    job.name = r->name ? r->name : "t";
    job.rows = r->rows;
    job.cols = r->cols;
    job.numel = r->rows * r->cols;
    job.ndim = r->rows == 1 ? 1 : 2;
    job.shape = r->rows == 1 ? shape + 1 : shape;
    job.n_in = r->n_in;
    job.base = r->base;
    job.compute_dtype = r->dtype ? r->dtype : MK_F32;
    for (int p = 0; m->params[p].name; p++) {
        job.g[p] = m->params[p].def;
        for (size_t k = 0; k < r->n_in; k++) mv[k][p] = m->params[p].def;
        for (int i = 0; i < MK_MAX_PARAMS && r->g_names[i]; i++)
            if (strcmp(r->g_names[i], m->params[p].name) == 0) job.g[p] = r->g_vals[i];
        for (int i = 0; i < MK_MAX_PARAMS && r->m_names[i]; i++)
            if (strcmp(r->m_names[i], m->params[p].name) == 0)
                for (size_t k = 0; k < r->n_in; k++) {
                    mv[k][p] = r->m_vals[i][k];
                    ms[k][p] = true;
                }
    }
    job.m = (const double(*)[MK_MAX_PARAMS])mv;
    job.m_set = (const bool(*)[MK_MAX_PARAMS])ms;
    job.rng = mk_rng_key(r->seed, job.name);
    mt_exec ex = {r, r->chunk_rows ? r->chunk_rows : 7, out, 0};
    job.n_chunks = (r->rows + ex.rpc - 1) / ex.rpc;
    job.chunk_rows = ex.rpc;
    job.keep_bytes = r->keep_bytes == UINT64_MAX ? 0 : r->keep_bytes ? r->keep_bytes : 16u << 20;
    job.pass = mt_pass;
    job.pass_kept = mt_pass_kept;
    job.exec = &ex;
    if (m->check) MK_TRY(m->check(&job));
    return m->run(&job);
}
