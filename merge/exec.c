/* exec.c - see exec.h */
#include "exec.h"

#include "../core/mk_io.h"
#include "../core/mk_thread.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

typedef struct exec_state {
    mk_plan *p;
    mk_consumer *c;
    size_t ti;
    const mk_plan_tensor *pt;
    uint64_t rows_per_chunk;
    const mk_exec_opts *o;
    bool scanned;            /* this tensor's inputs were checked for NaN/Inf */
    uint64_t bad[64], first[64]; /* per input: non-finite count, first element */
} exec_state;

/* NaN/Inf in input k's values [elem0, elem0+n): counted for the tensor's report. */
static void note_nonfinite(exec_state *ex, size_t k, uint64_t elem0, const float *v, uint64_t n)
{
    if (k >= 64) return;
    /* a vectorizable count of all-ones exponents first; the index only when there are some */
    const uint32_t *bits = (const uint32_t *)v;
    uint64_t cnt = 0, first = 0;
    for (uint64_t i = 0; i < n; i++) cnt += (bits[i] & 0x7f800000u) == 0x7f800000u;
    if (!cnt) return;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            first = elem0 + i;
            break;
        }
    MK_OMP("omp critical(mk_exec_nonfinite)")
    {
        if (!ex->bad[k] || first < ex->first[k]) ex->first[k] = first;
        ex->bad[k] += cnt;
    }
}

/* After the first pass over a tensor: report (or refuse) inputs with NaN/Inf. */
static mk_status report_nonfinite(exec_state *ex)
{
    for (size_t k = 0; k < ex->pt->job.n_in && k < 64; k++) {
        if (!ex->bad[k]) continue;
        const mk_plan_input *pi = &ex->pt->in[k];
        const mk_plan_model *pm = &ex->p->models[pi->model];
        const char *name = pm->src->tensors[pi->tensor].name;
        if (ex->o->on_nonfinite == MK_NONFINITE_ERROR)
            return mk_error(MK_ERR_NUMERIC,
                            "tensor %s in model %s: %llu NaN/Inf value(s), first at element %llu "
                            "(--on-nonfinite warn to merge anyway)",
                            name, pm->ref->text, (unsigned long long)ex->bad[k], (unsigned long long)ex->first[k]);
        mk_warn("tensor %s in model %s: %llu NaN/Inf value(s), first at element %llu", name, pm->ref->text,
                (unsigned long long)ex->bad[k], (unsigned long long)ex->first[k]);
    }
    return MK_OK;
}

static mk_source *input_source(const exec_state *ex, size_t k)
{
    return ex->p->models[ex->pt->in[k].model].src;
}

static mk_status read_input(const exec_state *ex, size_t k, uint64_t row0, uint64_t nrows, float *dst, void *scratch)
{
    const mk_plan_input *pi = &ex->pt->in[k];
    mk_source *src = input_source(ex, k);
    MK_TRY(mk_source_read_f32_window(src, pi->tensor, pi->src_cols, row0, nrows, ex->pt->job.cols, dst, scratch));
    /* inputs are cast to the compute dtype first, as mergekit loads them */
    mk_dtype cd = ex->pt->job.compute_dtype, sd = src->tensors[pi->tensor].dtype;
    if ((cd == MK_BF16 || cd == MK_F16) && sd != cd && mk_dtype_info(sd)->is_float)
        mk_dtype_round_f32(cd, dst, (size_t)(nrows * ex->pt->job.cols));
    return MK_OK;
}

static void release_input(const exec_state *ex, size_t k, uint64_t row0, uint64_t nrows)
{
    const mk_plan_input *pi = &ex->pt->in[k];
    mk_source *src = input_source(ex, k);
    if (!src->ops->release) return;
    unsigned es = mk_dtype_size(src->tensors[pi->tensor].dtype);
    src->ops->release(src, pi->tensor, row0 * pi->src_cols * es, nrows * pi->src_cols * es);
}

static mk_status job_pass(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit)
{
    exec_state *ex = job->exec;
    const uint64_t nch = job->n_chunks, rpc = ex->rows_per_chunk, cols = job->cols;
    const size_t nin = job->n_in;
    uint64_t max_elems = rpc * cols < job->numel ? rpc * cols : job->numel;
    mk_status first = MK_OK;
    uint64_t first_chunk = UINT64_MAX;
    char first_msg[1024] = "";
    int stop = 0;

    MK_OMP("omp parallel")
    {
        float *buf = malloc((size_t)((nin + 1) * max_elems * sizeof(float)) + 1);
        void *scratch = malloc((size_t)(max_elems * 8) + 1);
        const float **in = malloc((nin + 1) * sizeof *in);
        mk_status tst = (buf && scratch && in) ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory for chunk buffers");
        if (tst != MK_OK) {
            MK_OMP("omp critical(mk_exec_err)")
            {
                if (first == MK_OK) {
                    first = tst;
                    snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                }
                stop = 1;
            }
        }
        MK_OMP("omp for schedule(dynamic, 1)")
        for (int64_t ci = 0; ci < (int64_t)nch; ci++) {
            int stopped;
            MK_OMP("omp atomic read")
            stopped = stop;
            if (stopped || tst != MK_OK) continue;
            uint64_t c = (uint64_t)ci;
            uint64_t row0 = c * rpc, nrows = job->rows - row0 < rpc ? job->rows - row0 : rpc;
            mk_chunk ch = {c, row0 * cols, nrows * cols, row0, nrows, in, buf + nin * max_elems};
            mk_status st = MK_OK;
            for (size_t k = 0; k < nin && st == MK_OK; k++) {
                float *dst = buf + k * max_elems;
                in[k] = dst;
                st = read_input(ex, k, row0, nrows, dst, scratch);
                if (st == MK_OK && !ex->scanned) note_nonfinite(ex, k, ch.elem0, dst, ch.n);
            }
            if (st == MK_OK) st = fn(job, &ch, user);
            if (st == MK_OK && emit) st = ex->c->ops->rows(ex->c, ex->ti, ch.elem0, ch.out, ch.n);
            for (size_t k = 0; k < nin; k++) release_input(ex, k, row0, nrows);
            if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
            if (st != MK_OK) {
                MK_OMP("omp critical(mk_exec_err)")
                {
                    if (c < first_chunk) {
                        first = st;
                        first_chunk = c;
                        snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                    }
                }
                MK_OMP("omp atomic write")
                stop = 1;
            }
        }
        free(buf);
        free(scratch);
        free(in);
    }
    if (first != MK_OK) return mk_error(first, "%s", first_msg);
    if (!ex->scanned) {
        ex->scanned = true;
        MK_TRY(report_nonfinite(ex));
    }
    return MK_OK;
}

static mk_status identity_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)job;
    (void)user;
    memcpy(ch->out, ch->in[0], (size_t)ch->n * sizeof(float));
    return MK_OK;
}

/* Copy the single input's bytes unchanged (same dtype, same shape). */
static mk_status copy_raw(exec_state *ex)
{
    mk_source *src = input_source(ex, 0);
    size_t ti = ex->pt->in[0].tensor;
    uint64_t total = src->tensors[ti].nbytes, step = 8u << 20;
    void *buf = NULL;
    mk_status s = MK_OK;
    for (uint64_t off = 0; off < total && s == MK_OK; off += step) {
        uint64_t len = total - off < step ? total - off : step;
        const void *p = src->ops->borrow ? src->ops->borrow(src, ti, off, len) : NULL;
        if (!p) {
            if (!buf && !(buf = mk_malloc((size_t)step))) return MK_ERR_NOMEM;
            s = src->ops->read(src, ti, off, len, buf);
            p = buf;
        }
        if (s == MK_OK) {
            mk_dtype dt = src->tensors[ti].dtype;
            unsigned es = mk_dtype_size(dt);
            size_t f = 0, bad = mk_dtype_count_nonfinite(dt, p, (size_t)(len / es), &f);
            if (bad) {
                if (!ex->bad[0]) ex->first[0] = off / es + f;
                ex->bad[0] += bad;
            }
            s = ex->c->ops->raw(ex->c, ex->ti, off, p, len);
        }
        if (src->ops->release) src->ops->release(src, ti, off, len);
        if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    }
    free(buf);
    ex->scanned = true;
    if (s == MK_OK) s = report_nonfinite(ex);
    return s;
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

mk_status mk_exec_run(mk_plan *p, mk_consumer *c, const mk_exec_opts *o)
{
    uint64_t chunk = o->chunk_elems ? o->chunk_elems : MK_EXEC_CHUNK_DEFAULT;
    uint64_t done_bytes = 0;
    exec_state ex;
    memset(&ex, 0, sizeof ex);
    ex.p = p;
    ex.c = c;
    ex.o = o;
    for (size_t i = 0; i < p->n; i++) {
        mk_plan_tensor *pt = &p->t[i];
        ex.ti = i;
        ex.pt = pt;
        ex.scanned = false;
        memset(ex.bad, 0, sizeof ex.bad);
        memset(ex.first, 0, sizeof ex.first);
        if (c->ops->is_done && c->ops->is_done(c, i)) {
            done_bytes += pt->out.nbytes;
            if (o->progress) o->progress(o->progress_ctx, i + 1, p->n, done_bytes, p->total_bytes, pt->out.name);
            continue;
        }
        mk_merge_job job = pt->job;
        job.pass = job_pass;
        job.exec = &ex;
        job.rng = mk_rng_key(o->seed, pt->out.name);
        uint64_t cols = job.cols ? job.cols : 1;
        uint64_t align = c->ops->align ? c->ops->align(c, &pt->out) : 1;
        if (!align) align = 1;
        /* chunks are whole rows whose element count is a multiple of `align` */
        uint64_t unit = align / gcd64(cols, align);
        uint64_t rpc = chunk / cols;
        if (rpc < unit) rpc = unit;
        rpc -= rpc % unit;
        ex.rows_per_chunk = rpc;
        job.n_chunks = job.numel ? (job.rows + rpc - 1) / rpc : 0;

        for (size_t k = 0; k < job.n_in; k++) {
            mk_source *src = input_source(&ex, k);
            if (src->ops->prefetch) src->ops->prefetch(src, pt->in[k].tensor, 0, src->tensors[pt->in[k].tensor].nbytes);
        }
        mk_status s = c->ops->begin(c, i, &pt->out);
        if (s == MK_OK) {
            mk_dtype sd = input_source(&ex, 0)->tensors[pt->in[0].tensor].dtype;
            if (pt->raw && c->ops->raw_ok(c, i, &pt->out, sd)) s = copy_raw(&ex);
            else if (pt->identity) s = job_pass(&job, identity_chunk, NULL, true);
            else s = p->method->run(&job);
        }
        if (s == MK_OK) s = c->ops->end(c, i);
        if (s != MK_OK) return s;
        done_bytes += pt->out.nbytes;
        if (o->progress) o->progress(o->progress_ctx, i + 1, p->n, done_bytes, p->total_bytes, pt->out.name);
    }
    return MK_OK;
}
