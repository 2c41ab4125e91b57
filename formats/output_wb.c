/* output_wb.c - see output.h (mk_output_opts.write_behind): a sink in front of another
 * that writes behind the computation. Each output tensor of at most WB_CAP bytes is gathered
 * in one buffer as its pieces arrive (from any thread); when it is done, one thread of ours
 * writes it with a single pwrite and marks it done in the sink below (in output order, as
 * the sink requires), while the caller computes the next tensor. Larger tensors are written
 * through as they come, and so is one that would take the bytes waiting to be written past
 * WB_INFLIGHT (a writer behind: the backlog does not grow by a whole embedding). At most
 * WB_INFLIGHT bytes wait to be written: a caller faster than the disk waits for it. Written
 * buffers are kept for the next tensors (fresh ones would be fresh pages, faulted in and
 * zeroed each time), within WB_INFLIGHT together with the queued bytes, and are not cleared:
 * each gathered piece's range is noted, and at tensor_done only the bytes no piece covered
 * are zeroed (a tensor is usually covered whole). The buffers are pages mapped for them, so
 * that one let go leaves the heap nothing to keep resident. add_file, commit and finish
 * first wait for every queued tensor; an error of the writing thread is returned by the next
 * call, with its message.
 * commit reports (mk_info, -v) how many tensors and bytes went through a gathering buffer.
 * Not used by merges: measured slower there (README, Speed of the merge methods).
 * Must not: change what is written (the same bytes at the same offsets, the same
 * tensor_done order) or hold more than WB_CAP + WB_INFLIGHT bytes of buffers.
 */
#include "output.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define WB_CAP (64ull << 20)
#define WB_INFLIGHT (64ull << 20)

/* WB_CAP and WB_INFLIGHT, or smaller ones a test sets (read when a sink is made) */
static uint64_t g_cap = WB_CAP, g_inflight = WB_INFLIGHT;

void mk_output_write_behind_limits(uint64_t cap, uint64_t inflight)
{
    g_cap = cap ? cap : WB_CAP;
    g_inflight = inflight ? inflight : WB_INFLIGHT;
}
#define WB_POOL 16

/* Bytes [off, off + len) of a gathering buffer were written. */
typedef struct wb_span {
    uint64_t off, len;
} wb_span;

typedef struct wb_spans {
    wb_span *s;
    size_t n, cap;
} wb_spans;

typedef struct wb_job {
    size_t i;
    unsigned char *buf; /* NULL: written through already (or nothing to write) */
    size_t cap;         /* buf's size */
    struct wb_job *next;
} wb_job;

typedef struct wb_sink {
    mk_sink *inner;
    size_t n;
    uint64_t *nbytes;       /* [n] */
    bool *done0;            /* [n] the inner sink's is_done when declared (resume) */
    unsigned char **buf;    /* [n] gathering buffers; NULL until the first piece */
    size_t *cap;            /* [n] their sizes */
    wb_spans *spans;        /* [n] the pieces gathered in buf[i] so far */
    bool *through;          /* [n] its first piece went through: so do the others */
    unsigned char *pool[WB_POOL]; /* written buffers, for reuse */
    size_t pool_cap[WB_POOL], n_pool;
    uint64_t pool_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the queue changed (either side) */
    wb_job *head, *tail;
    uint64_t inflight;      /* bytes queued or being written */
    uint64_t max_cap, max_inflight; /* WB_CAP, WB_INFLIGHT (or a test's) */
    bool busy, stop, started;
    size_t n_behind;        /* tensors written from a gathered buffer (the --verbose summary) */
    uint64_t bytes_behind;
    mk_status err;          /* the writing thread's first error */
    char msg[1024];
    pthread_t th;
} wb_sink;

/* Pages of their own for a buffer of cap bytes (zero until written), or NULL. */
static unsigned char *wb_map(size_t cap)
{
    void *p = mmap(NULL, cap ? cap : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        mk_error(MK_ERR_NOMEM, "out of memory for a %zu-byte output buffer", cap);
        return NULL;
    }
    return p;
}

static void wb_unmap(unsigned char *b, size_t cap)
{
    if (b) munmap(b, cap ? cap : 1);
}

/* A buffer of at least `len` bytes, not cleared (wb_fill_gaps zeroes what no piece wrote): a
 * kept one when one is large enough. Called with the lock held. */
static unsigned char *wb_take(wb_sink *w, size_t len, size_t *cap)
{
    size_t best = WB_POOL;
    for (size_t k = 0; k < w->n_pool; k++)
        if (w->pool_cap[k] >= len && (best == WB_POOL || w->pool_cap[k] < w->pool_cap[best])) best = k;
    if (best == WB_POOL) {
        *cap = len;
        return wb_map(len);
    }
    unsigned char *b = w->pool[best];
    *cap = w->pool_cap[best];
    w->pool_bytes -= *cap;
    w->n_pool--;
    w->pool[best] = w->pool[w->n_pool];
    w->pool_cap[best] = w->pool_cap[w->n_pool];
    return b;
}

/* Note that piece [off, off + len) was gathered: joined to the last one when it continues it
 * (chunks in order, at one thread), else a new span. Called with the lock held. */
static mk_status wb_note(wb_spans *sp, uint64_t off, uint64_t len)
{
    if (!len) return MK_OK;
    if (sp->n && sp->s[sp->n - 1].off + sp->s[sp->n - 1].len == off) {
        sp->s[sp->n - 1].len += len;
        return MK_OK;
    }
    if (sp->n == sp->cap) {
        size_t nc = sp->cap ? sp->cap * 2 : 64;
        wb_span *s = mk_realloc_array(sp->s, nc, sizeof *s);
        if (!s) return MK_ERR_NOMEM;
        sp->s = s;
        sp->cap = nc;
    }
    sp->s[sp->n++] = (wb_span){off, len};
    return MK_OK;
}

static int cmp_span(const void *a, const void *b)
{
    const wb_span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Zero the bytes of b[0, len) that no gathered piece covered (pieces may overlap): the
 * bytes a cleared buffer would have held there. Leaves sp empty for the next tensor. */
static void wb_fill_gaps(unsigned char *b, uint64_t len, wb_spans *sp)
{
    qsort(sp->s, sp->n, sizeof *sp->s, cmp_span);
    uint64_t at = 0;
    for (size_t k = 0; k < sp->n; k++) {
        if (sp->s[k].off > at) memset(b + at, 0, (size_t)(sp->s[k].off - at));
        if (sp->s[k].off + sp->s[k].len > at) at = sp->s[k].off + sp->s[k].len;
    }
    if (len > at) memset(b + at, 0, (size_t)(len - at));
    sp->n = 0;
}

/* Keep a written buffer for reuse, within WB_POOL buffers and, with the bytes queued,
 * WB_INFLIGHT bytes. Called with the lock held. */
static void wb_give(wb_sink *w, unsigned char *b, size_t cap)
{
    if (!b) return;
    if (w->n_pool < WB_POOL && w->pool_bytes + cap + w->inflight <= w->max_inflight) {
        w->pool[w->n_pool] = b;
        w->pool_cap[w->n_pool++] = cap;
        w->pool_bytes += cap;
    } else {
        wb_unmap(b, cap);
    }
}

/* Unmap kept buffers, largest first, until they and `queued` bytes fit WB_INFLIGHT. Called
 * with the lock held. */
static void wb_trim(wb_sink *w, uint64_t queued)
{
    while (w->n_pool && w->pool_bytes + queued > w->max_inflight) {
        size_t big = 0;
        for (size_t k = 1; k < w->n_pool; k++)
            if (w->pool_cap[k] > w->pool_cap[big]) big = k;
        wb_unmap(w->pool[big], w->pool_cap[big]);
        w->pool_bytes -= w->pool_cap[big];
        w->n_pool--;
        w->pool[big] = w->pool[w->n_pool];
        w->pool_cap[big] = w->pool_cap[w->n_pool];
    }
}

/* Error of the writing thread, raised again in the caller's thread (the message too);
 * called with the lock held. */
static mk_status wb_err(const wb_sink *w)
{
    return w->err == MK_OK ? MK_OK : mk_error(w->err, "%s", w->msg);
}

static void *wb_main(void *p)
{
    wb_sink *w = p;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (!w->head) break;
        wb_job *j = w->head;
        w->head = j->next;
        if (!w->head) w->tail = NULL;
        w->busy = true;
        mk_status st = w->err;
        bool stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (st == MK_OK && !stop) {
            if (j->buf) st = w->inner->ops->write(w->inner, j->i, 0, j->buf, w->nbytes[j->i]);
            if (st == MK_OK) st = w->inner->ops->tensor_done(w->inner, j->i);
        }
        const char *m = st != MK_OK && w->err == MK_OK ? mk_errmsg() : NULL;
        pthread_mutex_lock(&w->mu);
        if (m) {
            snprintf(w->msg, sizeof w->msg, "%s", m);
            w->err = st;
        }
        if (st == MK_OK && j->buf) {
            w->n_behind++;
            w->bytes_behind += w->nbytes[j->i];
        }
        if (j->buf) w->inflight -= w->nbytes[j->i];
        wb_give(w, j->buf, j->cap);
        free(j);
        w->busy = false;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Every queued tensor written (or the first error). */
static mk_status wb_drain(wb_sink *w)
{
    pthread_mutex_lock(&w->mu);
    while ((w->head || w->busy) && w->err == MK_OK) pthread_cond_wait(&w->cv, &w->mu);
    mk_status st = wb_err(w);
    pthread_mutex_unlock(&w->mu);
    return st;
}

static mk_status wb_begin(mk_sink *k, const mk_tensor_info *t, size_t n)
{
    wb_sink *w = k->impl;
    MK_TRY(w->inner->ops->begin(w->inner, t, n));
    w->n = n;
    w->nbytes = mk_calloc(n ? n : 1, sizeof *w->nbytes);
    w->done0 = mk_calloc(n ? n : 1, sizeof *w->done0);
    w->buf = mk_calloc(n ? n : 1, sizeof *w->buf);
    w->cap = mk_calloc(n ? n : 1, sizeof *w->cap);
    w->spans = mk_calloc(n ? n : 1, sizeof *w->spans);
    w->through = mk_calloc(n ? n : 1, sizeof *w->through);
    if (!w->nbytes || !w->done0 || !w->buf || !w->cap || !w->spans || !w->through) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        w->nbytes[i] = t[i].nbytes;
        w->done0[i] = w->inner->ops->is_done && w->inner->ops->is_done(w->inner, i);
    }
    if (pthread_create(&w->th, NULL, wb_main, w) != 0) return mk_error(MK_ERR_NOMEM, "cannot start the output writer thread");
    w->started = true;
    return MK_OK;
}

/* A tensor still to be written is never done below until we mark it: the answers at begin
 * stay true, and the writing thread's updates are not read here. */
static bool wb_is_done(mk_sink *k, size_t i)
{
    wb_sink *w = k->impl;
    return w->done0[i];
}

static mk_status wb_write(mk_sink *k, size_t i, uint64_t off, const void *data, uint64_t len)
{
    wb_sink *w = k->impl;
    if (i >= w->n || off > w->nbytes[i] || len > w->nbytes[i] - off) MK_BUG("write past the end of an output tensor");
    pthread_mutex_lock(&w->mu);
    mk_status st = wb_err(w);
    unsigned char *b = w->buf[i];
    /* gathered if it fits beside what is queued; else (a writer behind, a large tensor) its
     * pieces go through as they come, and the backlog does not grow by a whole tensor */
    bool gather = w->nbytes[i] <= w->max_cap && (!w->inflight || w->inflight + w->nbytes[i] <= w->max_inflight);
    if (st == MK_OK && !b && !w->through[i] && gather && !w->done0[i]) {
        b = w->buf[i] = wb_take(w, (size_t)w->nbytes[i], &w->cap[i]);
        if (!b) st = MK_ERR_NOMEM;
    }
    if (!b) w->through[i] = true;
    if (st == MK_OK && b) st = wb_note(&w->spans[i], off, len);
    pthread_mutex_unlock(&w->mu);
    MK_TRY(st);
    if (!b) return w->inner->ops->write(w->inner, i, off, data, len);
    memcpy(b + off, data, (size_t)len);
    return MK_OK;
}

static mk_status wb_tensor_done(mk_sink *k, size_t i)
{
    wb_sink *w = k->impl;
    wb_job *j = mk_calloc(1, sizeof *j);
    if (!j) return MK_ERR_NOMEM;
    pthread_mutex_lock(&w->mu);
    j->i = i;
    j->buf = w->buf[i];
    j->cap = w->cap[i];
    w->buf[i] = NULL;
    if (j->buf) wb_fill_gaps(j->buf, w->nbytes[i], &w->spans[i]); /* every piece is in: ours alone */
    uint64_t add = j->buf ? w->nbytes[i] : 0;
    while (w->inflight && w->inflight + add > w->max_inflight && w->err == MK_OK) pthread_cond_wait(&w->cv, &w->mu);
    mk_status st = wb_err(w);
    if (st == MK_OK) {
        wb_trim(w, w->inflight + add);
        w->inflight += add;
        if (w->tail) w->tail->next = j;
        else w->head = j;
        w->tail = j;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (st != MK_OK) {
        wb_unmap(j->buf, j->cap);
        free(j);
    }
    return st;
}

static mk_status wb_add_file(mk_sink *k, const char *name, const void *data, size_t len)
{
    wb_sink *w = k->impl;
    MK_TRY(wb_drain(w));
    return w->inner->ops->add_file(w->inner, name, data, len);
}

static mk_status wb_commit(mk_sink *k)
{
    wb_sink *w = k->impl;
    MK_TRY(wb_drain(w));
    mk_info("wrote %zu tensor(s), %.1f MiB, behind the computation, one write each", w->n_behind,
            (double)w->bytes_behind / (1 << 20));
    MK_TRY(w->inner->ops->commit(w->inner));
    k->n_out_files = w->inner->n_out_files; /* owned by the inner sink */
    k->out_files = w->inner->out_files;
    return MK_OK;
}

static mk_status wb_finish(mk_sink *k)
{
    wb_sink *w = k->impl;
    MK_TRY(wb_drain(w));
    return mk_sink_finish(w->inner);
}

static void wb_close(mk_sink *k)
{
    wb_sink *w = k->impl;
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true; /* queued tensors are dropped: a close before commit abandons the output */
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
    }
    for (size_t i = 0; w->buf && i < w->n; i++) wb_unmap(w->buf[i], w->cap[i]);
    for (size_t i = 0; w->spans && i < w->n; i++) free(w->spans[i].s);
    for (size_t p = 0; p < w->n_pool; p++) wb_unmap(w->pool[p], w->pool_cap[p]);
    mk_sink_close(w->inner);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->buf);
    free(w->cap);
    free(w->spans);
    free(w->through);
    free(w->done0);
    free(w->nbytes);
    free(w);
    free(k);
}

static const mk_sink_ops wb_ops = {wb_begin, wb_is_done, wb_write, wb_tensor_done, wb_add_file, wb_commit, wb_close, wb_finish};

mk_status mk_output_write_behind(mk_sink **k)
{
    mk_sink *s = mk_calloc(1, sizeof *s);
    wb_sink *w = mk_calloc(1, sizeof *w);
    if (!s || !w) {
        free(s);
        free(w);
        return MK_ERR_NOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->inner = *k;
    w->max_cap = g_cap;
    w->max_inflight = g_inflight;
    s->ops = &wb_ops;
    s->dir = w->inner->dir;
    s->impl = w;
    *k = s;
    return MK_OK;
}
