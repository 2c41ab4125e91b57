/* exec.c - see exec.h */
#include "exec.h"

#include "methods/kernel.h"
#include "../core/mk_dstream.h"
#include "../core/mk_io.h"
#include "../core/mk_parallel.h"
#include "../core/mk_thread.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tensors whose inputs are read ahead of the one computed: the next one always, more while
 * what their reading brings into memory fits hold_bytes and none of them is read in one pass,
 * so that the disk stays busy while a method's last pass over a tensor computes from memory. */
#define AHEAD_MAX 8

typedef struct ahead_slot {
    size_t ti;
    int mode;
    uint64_t bytes; /* held inputs, rings, or what the page cache is asked for */
    mk_dstream **ds;
} ahead_slot;

typedef struct exec_state {
    mk_plan *p;
    mk_consumer *c;
    size_t ti;
    const mk_plan_tensor *pt;
    uint64_t rows_per_chunk;
    const mk_exec_opts *o;
    bool scanned;            /* this tensor's inputs were checked for NaN/Inf */
    uint64_t bad[64], first[64]; /* per input: non-finite count, first element */
    /* Streams per input (NULL: read through the page cache) of the current tensor, and how
     * they read (RD_*); the tensors after it whose reading has begun (ahead[0] is the next to
     * compute), and the memory that reading takes. */
    mk_dstream **cur;
    int cur_mode;
    ahead_slot ahead[AHEAD_MAX];
    size_t n_ahead, max_in;
    uint64_t ahead_bytes;
    unsigned passes;         /* passes begun over the current tensor */
    uint64_t kept_chunks;    /* chunks of those passes computed with no input read (pass_kept) */
} exec_state;

enum {
    RD_CACHE, /* through the page cache, each pass */
    RD_ONCE,  /* streams read once, by a method's single pass */
    RD_KEEP,  /* streams that keep every block, for all the passes */
};

/* A tensor whose streamed inputs total less is read through the page cache: a stream's
 * thread and mapping cost more than it would save. */
#define STREAM_MIN (1u << 20)

/* Whether any of n floats (as bits) is NaN/Inf: an OR of "all-ones exponent" over 32-bit lanes,
 * built for AVX2 too (MK_KCLONE): it reads every input element of a tensor's first pass. */
MK_KCLONE static uint32_t any_nonfinite(const uint32_t *bits, uint64_t n)
{
    uint32_t any = 0;
    for (uint64_t i = 0; i < n; i++) any |= (bits[i] & 0x7f800000u) == 0x7f800000u;
    return any;
}

/* NaN/Inf in input k's values [elem0, elem0+n): counted for the tensor's report. */
static void note_nonfinite(exec_state *ex, size_t k, uint64_t elem0, const float *v, uint64_t n)
{
    if (k >= 64) return;
    /* a vectorizable OR of "all-ones exponent" first (32-bit lanes, no widening to a 64-bit
     * count); the count and the index only when there are some */
    const uint32_t *bits = (const uint32_t *)v;
    if (!any_nonfinite(bits, n)) return;
    uint64_t cnt = 0, first = 0;
    for (uint64_t i = 0; i < n; i++) cnt += (bits[i] & 0x7f800000u) == 0x7f800000u;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            first = elem0 + i;
            break;
        }
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* rare: only chunks with NaN/Inf */
    pthread_mutex_lock(&mu);
    if (!ex->bad[k] || first < ex->first[k]) ex->first[k] = first;
    ex->bad[k] += cnt;
    pthread_mutex_unlock(&mu);
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

/* Row `row` of input k of a vocabulary tensor gathered by a tokenizer merge's permutation
 * (tokmerge.h): the model's own row, or the average of the rows the merge names. `tmp`: one
 * spare row. */
static mk_status permuted_row(const exec_state *ex, size_t k, uint64_t row, float *d, float *tmp, void *scratch)
{
    const mk_plan_tensor *pt = ex->pt;
    const mk_tokmerge *tm = ex->p->tok;
    uint64_t cols = pt->job.cols;
    int64_t sr = pt->in[k].rowmap[row];
    if (sr >= 0)
        return mk_source_read_f32_window(input_source(ex, k), pt->in[k].tensor, pt->in[k].src_cols, (uint64_t)sr, 1,
                                         cols, d, scratch);
    memset(d, 0, cols * sizeof *d);
    uint32_t f0 = tm->fill_off[row], f1 = tm->fill_off[row + 1];
    for (uint32_t f = f0; f < f1; f++) {
        size_t j = 0;
        while (j < pt->job.n_in && pt->in[j].model != tm->fill[f]) j++;
        if (j == pt->job.n_in)
            return mk_error(MK_ERR_RECIPE, "tensor %s: token '%s' needs this tensor's row from model %s, which "
                            "lacks the tensor", pt->out.name, tm->tok[row], ex->p->models[tm->fill[f]].ref->text);
        MK_TRY(mk_source_read_f32_window(input_source(ex, j), pt->in[j].tensor, pt->in[j].src_cols,
                                         (uint64_t)tm->fill_row[f], 1, cols, tmp, scratch));
        for (uint64_t c = 0; c < cols; c++) d[c] += tmp[c];
    }
    if (f1 - f0 > 1)
        for (uint64_t c = 0; c < cols; c++) d[c] /= (float)(f1 - f0);
    return MK_OK;
}

/* Rows [row0, row0 + nrows) of input k by the permutation; rows past the vocabulary
 * (tokenizer pad_to_multiple_of) are the mean of the model's vocabulary rows, as mergekit
 * pads (summed in double: mergekit's torch.mean may differ in the last bit). */
static mk_status read_permuted(const exec_state *ex, size_t k, uint64_t row0, uint64_t nrows, float *dst,
                               void *scratch)
{
    const mk_tokmerge *tm = ex->p->tok;
    uint64_t cols = ex->pt->job.cols;
    /* past this input's rows: its own block's spare room, else the next input's block or the
     * output's, both written after this one */
    float *tmp = dst + nrows * cols;
    double *mean = NULL;
    for (uint64_t r = 0; r < nrows; r++) {
        uint64_t row = row0 + r;
        float *d = dst + r * cols;
        if (row < tm->n_tokens) {
            MK_TRY(permuted_row(ex, k, row, d, tmp, scratch));
            continue;
        }
        if (!mean) {
            if (!(mean = mk_calloc(cols ? cols : 1, sizeof *mean))) return MK_ERR_NOMEM;
            mk_status s = MK_OK;
            for (uint64_t v = 0; v < tm->n_tokens && s == MK_OK; v++) {
                s = permuted_row(ex, k, v, d, tmp, scratch);
                for (uint64_t c = 0; c < cols && s == MK_OK; c++) mean[c] += d[c];
            }
            if (s != MK_OK) {
                free(mean);
                return s;
            }
            for (uint64_t c = 0; c < cols; c++) mean[c] /= (double)tm->n_tokens;
        }
        for (uint64_t c = 0; c < cols; c++) d[c] = (float)mean[c];
    }
    free(mean);
    return MK_OK;
}

static void close_streams(mk_dstream **ds, size_t n)
{
    for (size_t k = 0; ds && k < n; k++) {
        mk_dstream_close(ds[k]);
        ds[k] = NULL;
    }
}

/* How tensor ti's inputs are read (RD_*; RD_CACHE where no stream is worth it), each
 * input's stream length and reach (len[k], reach[k]: 0 for inputs read through the page cache,
 * k < 64), and the memory reading it brings in: held inputs, rings, or the bytes the page cache
 * is asked for. */
static int read_mode(const exec_state *ex, size_t ti, uint64_t *len, uint64_t *reach, uint64_t *mem)
{
    const mk_plan_tensor *pt = &ex->p->t[ti];
    const mk_merge_job *job = &pt->job;
    uint64_t total = 0, all = 0;
    memset(len, 0, 64 * sizeof *len);
    memset(reach, 0, 64 * sizeof *reach);
    bool one = pt->identity || (ex->p->method->one_pass && ex->p->method->one_pass(job));
    uint64_t chunk = ex->o->chunk_elems ? ex->o->chunk_elems : MK_EXEC_CHUNK_DEFAULT;
    for (size_t k = 0; k < job->n_in && k < 64; k++) {
        const mk_plan_input *pi = &pt->in[k];
        const mk_source *src = ex->p->models[pi->model].src;
        mk_dtype dt = src->tensors[pi->tensor].dtype;
        unsigned es = mk_dtype_size(dt);
        all += src->tensors[pi->tensor].nbytes;
        if (pt->raw || !job->numel || mk_dstream_mode() == MK_DIO_OFF || pi->rowmap || pi->src_cols != job->cols ||
            !src->ops->stream || es > 4 || !mk_dtype_info(dt)->is_float)
            continue;
        total += len[k] = job->rows * job->cols * es;
        /* a single pass: every thread's chunk in flight; several: all of it */
        reach[k] = (uint64_t)mk_threads_get() * 2 * chunk * es;
    }
    int m = one ? RD_ONCE : total <= ex->o->hold_bytes ? RD_KEEP : RD_CACHE;
    if (m == RD_CACHE || total < STREAM_MIN) {
        memset(len, 0, 64 * sizeof *len);
        memset(reach, 0, 64 * sizeof *reach);
        *mem = all;
        return RD_CACHE;
    }
    *mem = all - total;
    for (size_t k = 0; k < job->n_in && k < 64; k++) {
        if (m == RD_KEEP) reach[k] = len[k];
        /* mk_dstream.h: a ring of reach plus two blocks, at least four, at most the range */
        uint64_t b = MK_DSTREAM_BLOCK, ring = reach[k] + 2 * b > 4 * b ? reach[k] + 2 * b : 4 * b;
        if (len[k]) *mem += m == RD_KEEP || ring > len[k] ? len[k] : ring;
    }
    return m;
}

/* Streams over the inputs of tensor ti that can be read so (ds[k], NULL for the others), and
 * how they read (*mode; RD_CACHE and no streams where none is worth it). */
static mk_status open_streams(const exec_state *ex, size_t ti, mk_dstream **ds, int *mode)
{
    const mk_plan_tensor *pt = &ex->p->t[ti];
    const mk_merge_job *job = &pt->job;
    uint64_t len[64], reach[64], mem;
    int m = read_mode(ex, ti, len, reach, &mem);
    *mode = RD_CACHE;
    if (m == RD_CACHE) return MK_OK;
    for (size_t k = 0; k < job->n_in && k < 64; k++) {
        if (!len[k]) continue;
        mk_source *src = ex->p->models[pt->in[k].model].src;
        mk_status st = src->ops->stream(src, pt->in[k].tensor, len[k], reach[k], &ds[k]);
        if (st != MK_OK) {
            close_streams(ds, k);
            return st;
        }
        /* one stream per file and tensor: a file's streams read one after another (taps) */
        for (size_t j = 0; j < k && ds[k]; j++)
            if (mk_dstream_same_file(ds[j], ds[k])) close_streams(ds + k, 1);
        /* held for several passes: only if it keeps every block (a stream's reach is capped) */
        if (m == RD_KEEP && ds[k] && !mk_dstream_keeps(ds[k])) close_streams(ds + k, 1);
        if (ds[k]) *mode = m;
    }
    return MK_OK;
}

static mk_status read_input(const exec_state *ex, size_t k, uint64_t row0, uint64_t nrows, float *dst, void *scratch)
{
    const mk_plan_input *pi = &ex->pt->in[k];
    mk_source *src = input_source(ex, k);
    mk_dstream *ds = ex->cur_mode != RD_CACHE ? ex->cur[k] : NULL;
    if (ds) MK_TRY(mk_stream_read_f32(ds, src->tensors[pi->tensor].dtype, row0 * pi->src_cols, nrows * pi->src_cols, dst));
    else if (pi->rowmap) MK_TRY(read_permuted(ex, k, row0, nrows, dst, scratch));
    else MK_TRY(mk_source_read_f32_window(src, pi->tensor, pi->src_cols, row0, nrows, ex->pt->job.cols, dst, scratch));
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
    if (!src->ops->release || pi->rowmap || (ex->cur_mode != RD_CACHE && ex->cur[k])) return;
    unsigned es = mk_dtype_size(src->tensors[pi->tensor].dtype);
    src->ops->release(src, pi->tensor, row0 * pi->src_cols * es, nrows * pi->src_cols * es);
}

/* One pass of a method over every chunk of the current tensor. */
typedef struct pass_ctx {
    const mk_merge_job *job;
    exec_state *ex;
    mk_chunk_fn fn;
    void *user;
    bool emit;
    uint64_t max_elems;
    uint64_t kept; /* chunks below this read no input (pass_kept) */
} pass_ctx;

/* Per thread: every input's chunk and the output chunk as f32, and a raw-read scratch. */
typedef struct pass_tls {
    float *buf;
    void *scratch;
    const float **in;
    mk_chunk_tmp tmp;
} pass_tls;

static void pass_tls_free(void *p)
{
    pass_tls *t = p;
    if (!t) return;
    free(t->buf);
    free(t->scratch);
    free(t->in);
    mk_chunk_tmp_free(&t->tmp);
    free(t);
}

static void *pass_tls_new(void *ctx)
{
    const pass_ctx *pc = ctx;
    size_t nin = pc->job->n_in;
    pass_tls *t = calloc(1, sizeof *t);
    if (t) {
        t->buf = malloc((size_t)((nin + 1) * pc->max_elems * sizeof(float)) + 1);
        t->scratch = malloc((size_t)(pc->max_elems * 8) + 1);
        t->in = malloc((nin + 1) * sizeof *t->in);
    }
    if (!t || !t->buf || !t->scratch || !t->in) {
        pass_tls_free(t);
        mk_error(MK_ERR_NOMEM, "out of memory for chunk buffers");
        return NULL;
    }
    return t;
}

static mk_status pass_chunk(void *ctx, uint64_t c, void *tlsp)
{
    const pass_ctx *pc = ctx;
    pass_tls *t = tlsp;
    const mk_merge_job *job = pc->job;
    exec_state *ex = pc->ex;
    const uint64_t rpc = ex->rows_per_chunk, cols = job->cols, max_elems = pc->max_elems;
    const size_t nin = job->n_in;
    uint64_t row0 = c * rpc, nrows = job->rows - row0 < rpc ? job->rows - row0 : rpc;
    const bool read = c >= pc->kept;
    if (!read) __atomic_fetch_add(&ex->kept_chunks, 1, __ATOMIC_RELAXED);
    mk_chunk ch = {c, row0 * cols, nrows * cols, row0, nrows, read ? t->in : NULL, t->buf + nin * max_elems, &t->tmp};
    mk_status st = MK_OK;
    for (size_t k = 0; k < nin && st == MK_OK && read; k++) {
        float *dst = t->buf + k * max_elems;
        t->in[k] = dst;
        st = read_input(ex, k, row0, nrows, dst, t->scratch);
        if (st == MK_OK && !ex->scanned) note_nonfinite(ex, k, ch.elem0, dst, ch.n);
    }
    if (st == MK_OK) st = pc->fn(job, &ch, pc->user);
    if (st == MK_OK && pc->emit) st = ex->c->ops->rows(ex->c, ex->ti, ch.elem0, ch.out, ch.n);
    for (size_t k = 0; k < nin; k++) release_input(ex, k, row0, nrows);
    return st;
}

static mk_status job_pass_kept(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit, uint64_t kept)
{
    exec_state *ex = job->exec;
    /* a method said one pass and makes another: its streams are spent, read as before */
    if (ex->passes++ == 1 && ex->cur_mode == RD_ONCE) close_streams(ex->cur, ex->max_in);
    uint64_t span = ex->rows_per_chunk * job->cols;
    pass_ctx pc = {job, ex, fn, user, emit, span < job->numel ? span : job->numel, ex->scanned ? kept : 0};
    MK_TRY(mk_parallel_chunks(job->n_chunks, pass_chunk, &pc, pass_tls_new, pass_tls_free));
    if (!ex->scanned) {
        ex->scanned = true;
        MK_TRY(report_nonfinite(ex));
    }
    return MK_OK;
}

static mk_status job_pass(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit)
{
    return job_pass_kept(job, fn, user, emit, 0);
}

static mk_status identity_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)job;
    (void)user;
    memcpy(ch->out, ch->in[0], (size_t)ch->n * sizeof(float));
    return MK_OK;
}

/* Copy the single input's bytes unchanged (same dtype, same shape), counting NaN/Inf. */
static mk_status raw_slice(void *ctx, uint64_t off, const void *p, uint64_t len)
{
    exec_state *ex = ctx;
    mk_dtype dt = input_source(ex, 0)->tensors[ex->pt->in[0].tensor].dtype;
    unsigned es = mk_dtype_size(dt);
    size_t f = 0, bad = mk_dtype_count_nonfinite(dt, p, (size_t)(len / es), &f);
    if (bad) {
        if (!ex->bad[0]) ex->first[0] = off / es + f;
        ex->bad[0] += bad;
    }
    return ex->c->ops->raw(ex->c, ex->ti, off, p, len);
}

static mk_status copy_raw(exec_state *ex)
{
    mk_status s = mk_source_copy_raw(input_source(ex, 0), ex->pt->in[0].tensor, raw_slice, ex);
    ex->scanned = true;
    if (s == MK_OK) s = report_nonfinite(ex);
    return s;
}

/* Ask for the inputs of tensor ti read through the page cache (those without a stream). */
static void prefetch_inputs(const exec_state *ex, size_t ti, mk_dstream *const *ds, int mode)
{
    const mk_plan_tensor *pt = &ex->p->t[ti];
    for (size_t k = 0; k < pt->job.n_in; k++) {
        mk_source *src = ex->p->models[pt->in[k].model].src;
        if (src->ops->prefetch && !(mode != RD_CACHE && ds[k]))
            src->ops->prefetch(src, pt->in[k].tensor, 0, src->tensors[pt->in[k].tensor].nbytes);
    }
}

static void close_ahead(exec_state *ex)
{
    for (size_t a = 0; a < ex->n_ahead; a++) close_streams(ex->ahead[a].ds, ex->max_in);
    ex->n_ahead = 0;
    ex->ahead_bytes = 0;
}

/* The streams of tensor i (opened ahead, or now), and the reading of the tensors after it:
 * their streams opened and their other inputs asked for (AHEAD_MAX). Streams of one file are
 * opened in the order the tensors are computed, the order they read in (mk_dstream.h, taps). */
static mk_status tensor_streams(exec_state *ex, size_t i)
{
    const mk_plan *p = ex->p;
    mk_consumer *c = ex->c;
    ex->passes = 0;
    ex->kept_chunks = 0;
    if (ex->n_ahead && ex->ahead[0].ti == i) {
        mk_dstream **t = ex->cur;
        ex->cur = ex->ahead[0].ds;
        ex->cur_mode = ex->ahead[0].mode;
        ex->ahead_bytes -= ex->ahead[0].bytes;
        memmove(ex->ahead, ex->ahead + 1, (ex->n_ahead - 1) * sizeof *ex->ahead);
        ex->ahead[--ex->n_ahead].ds = t;
    } else {
        close_ahead(ex);
        MK_TRY(open_streams(ex, i, ex->cur, &ex->cur_mode));
        prefetch_inputs(ex, i, ex->cur, ex->cur_mode);
    }
    size_t j = ex->n_ahead ? ex->ahead[ex->n_ahead - 1].ti + 1 : i + 1;
    while (ex->n_ahead < AHEAD_MAX) {
        while (j < p->n && c->ops->is_done && c->ops->is_done(c, j)) j++;
        if (j >= p->n) break;
        uint64_t len[64], reach[64], mem;
        /* a tensor read in one pass keeps pace with its stream: no reading further ahead */
        int m = read_mode(ex, j, len, reach, &mem);
        if (ex->n_ahead && (m == RD_ONCE || ex->ahead_bytes + mem > ex->o->hold_bytes)) break;
        ahead_slot *a = &ex->ahead[ex->n_ahead];
        MK_TRY(open_streams(ex, j, a->ds, &a->mode));
        a->ti = j;
        a->bytes = mem;
        ex->ahead_bytes += mem;
        ex->n_ahead++;
        prefetch_inputs(ex, j, a->ds, a->mode);
        j++;
    }
    mk_debug("tensor %s: %zu tensor(s) read ahead, %.1f MiB", p->t[i].out.name, ex->n_ahead,
             (double)ex->ahead_bytes / 1048576.0);
    return MK_OK;
}

/* Tensor i: its job, its inputs read ahead, the method (or a copy), the consumer. */
static mk_status exec_tensor(exec_state *ex, size_t i, uint64_t chunk, uint64_t bytes_through, uint64_t todo_bytes)
{
    const mk_exec_opts *o = ex->o;
    mk_consumer *c = ex->c;
    mk_plan_tensor *pt = &ex->p->t[i];
    ex->ti = i;
    ex->pt = pt;
    ex->scanned = false;
    memset(ex->bad, 0, sizeof ex->bad);
    memset(ex->first, 0, sizeof ex->first);
    mk_merge_job job = pt->job;
    job.pass = job_pass;
    job.pass_kept = job_pass_kept;
    job.exec = ex;
    job.rng = mk_rng_key(o->seed, pt->out.name);
    uint64_t cols = job.cols ? job.cols : 1;
    uint64_t align = c->ops->align ? c->ops->align(c, &pt->out) : 1;
    if (!align) align = 1;
    /* chunks are whole rows whose element count is a multiple of `align` */
    uint64_t rpc = mk_rows_per_chunk(cols, align, chunk);
    ex->rows_per_chunk = rpc;
    job.n_chunks = job.numel ? (job.rows + rpc - 1) / rpc : 0;
    job.chunk_rows = rpc;
    job.keep_bytes = o->keep_bytes;
    MK_TRY(tensor_streams(ex, i));
    if (o->reading) o->reading(o->reading_ctx, bytes_through, todo_bytes);
    mk_status s = c->ops->begin(c, i, &pt->out);
    if (s == MK_OK) {
        mk_dtype sd = input_source(ex, 0)->tensors[pt->in[0].tensor].dtype;
        if (pt->raw && c->ops->raw_ok(c, i, &pt->out, sd)) s = copy_raw(ex);
        else if (pt->identity) s = job_pass(&job, identity_chunk, NULL, true);
        else s = ex->p->method->run(&job);
    }
    if (ex->kept_chunks)
        mk_debug("tensor %s: %u passes, %llu of their chunks computed from what the method kept, no input read",
                 pt->out.name, ex->passes, (unsigned long long)ex->kept_chunks);
    close_streams(ex->cur, ex->max_in);
    for (size_t k = 0; s == MK_OK && o->read_input && k < job.n_in; k++)
        o->read_input(o->reading_ctx, input_source(ex, k), pt->in[k].tensor);
    return s == MK_OK ? c->ops->end(c, i) : s;
}

uint64_t mk_exec_hold_auto(void)
{
    uint64_t h = mk_mem_available() / 16;
    return h < MK_EXEC_HOLD_DEFAULT ? MK_EXEC_HOLD_DEFAULT : h > MK_EXEC_HOLD_MAX ? MK_EXEC_HOLD_MAX : h;
}

mk_status mk_exec_run(mk_plan *p, mk_consumer *c, const mk_exec_opts *o, mk_exec_stats *stats)
{
    uint64_t chunk = o->chunk_elems ? o->chunk_elems : MK_EXEC_CHUNK_DEFAULT;
    mk_exec_stats st = {0};
    /* tensors already done (kept from an interrupted run) are not part of the progress */
    for (size_t i = 0; i < p->n; i++)
        if (c->ops->is_done && c->ops->is_done(c, i)) {
            st.reused++;
            st.bytes_reused += p->t[i].out.nbytes;
        }
    const size_t todo = p->n - st.reused;
    const uint64_t todo_bytes = p->total_bytes - st.bytes_reused;
    if (stats) *stats = st;
    exec_state ex;
    memset(&ex, 0, sizeof ex);
    ex.p = p;
    ex.c = c;
    ex.o = o;
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].job.n_in > ex.max_in) ex.max_in = p->t[i].job.n_in;
    ex.cur = mk_calloc(ex.max_in + 1, sizeof *ex.cur);
    bool ok = ex.cur != NULL;
    for (size_t a = 0; a < AHEAD_MAX; a++) ok &= (ex.ahead[a].ds = mk_calloc(ex.max_in + 1, sizeof *ex.ahead[a].ds)) != NULL;
    mk_status s = ok ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        if (c->ops->is_done && c->ops->is_done(c, i)) continue;
        const mk_plan_tensor *pt = &p->t[i];
        s = exec_tensor(&ex, i, chunk, st.bytes_computed + pt->out.nbytes, todo_bytes);
        if (s != MK_OK) break;
        st.computed++;
        st.bytes_computed += pt->out.nbytes;
        if (stats) *stats = st;
        if (o->progress) o->progress(o->progress_ctx, st.computed, todo, st.bytes_computed, todo_bytes, pt->out.name);
    }
    close_streams(ex.cur, ex.max_in);
    close_ahead(&ex);
    free(ex.cur);
    for (size_t a = 0; a < AHEAD_MAX; a++) free(ex.ahead[a].ds);
    return s;
}
