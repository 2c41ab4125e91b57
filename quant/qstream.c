/* qstream.c - see quant.h: streams the tensors of one source through a consumer, in
 * chunks of whole rows, in parallel over the chunks of a tensor, with the consumer's prepass
 * when it asks for one; and the pass before the layout that finds the formats' offsets.
 * Per thread one chunk as f32 plus its raw bytes; a source that maps its files is told to
 * release each chunk, and each tensor again when it is done. A tensor with a prepass is read
 * once when its f32 values fit QSTREAM_HOLD: the prepass keeps them and the main pass reads
 * them there (the same values, so the same bytes); larger ones are read twice. A tensor read
 * once is streamed around the page cache where the source can (core/mk_dstream.h: O_DIRECT
 * for what the cache lacks), its stream opened while the tensor before it is computed; the
 * others are asked for (prefetch) then, and read through the page cache.
 * The chunks of a pass go to mk_parallel_chunks' sleeping pool (the merge executor's too).
 * Must not: know any consumer or format (it asks the consumer's ops and the family). */
#include "qformat.h"

#include "../core/mk_dstream.h"
#include "../core/mk_io.h"
#include "../core/mk_parallel.h"
#include "../core/mk_thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QSTREAM_CHUNK (1u << 18) /* 1 MiB of f32: the passes over a chunk stay in L2 */
#define QSTREAM_HOLD (128ull << 20) /* the largest tensor (as f32) a prepass keeps for the main pass */

typedef mk_status (*chunk_fn)(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n);
static mk_status rows_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n);

/* One pass over source tensor si (numel elements in rows of `cols`), calling fn per chunk. */
typedef struct qpass_tls {
    float *buf;
    void *scratch;
    size_t cap, scap; /* elements buf holds, bytes scratch holds */
} qpass_tls;

/* The buffers of one run, kept from tensor to tensor (fresh ones would be fresh pages,
 * faulted in and zeroed for every tensor): per thread of the pool a chunk as f32 and its
 * raw bytes, and the prepass's hold. */
typedef struct qbufs {
    qpass_tls *t; /* [nt], by mk_thread_index() */
    int nt;
    float *hold;
    size_t hold_cap;
} qbufs;

static mk_status qbufs_init(qbufs *b)
{
    memset(b, 0, sizeof *b);
    b->nt = mk_threads_get();
    b->t = calloc((size_t)(b->nt > 0 ? b->nt : 1), sizeof *b->t);
    return b->t ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory for chunk buffers");
}

static void qbufs_free(qbufs *b)
{
    for (int k = 0; b->t && k < b->nt; k++) {
        free(b->t[k].buf);
        free(b->t[k].scratch);
    }
    free(b->t);
    free(b->hold);
    memset(b, 0, sizeof *b);
}

/* Whether a prepass keeps a tensor of n values for the main pass (else it is read twice). */
static bool hold_fits(uint64_t n) { return n <= QSTREAM_HOLD / sizeof(float); }

/* A buffer of n f32 values for the prepass to keep, or NULL (then it is read twice). */
static float *qbufs_hold(qbufs *b, uint64_t n)
{
    if (!hold_fits(n)) return NULL;
    if (b->hold_cap < n) {
        free(b->hold);
        b->hold = malloc((size_t)n * sizeof(float));
        b->hold_cap = b->hold ? (size_t)n : 0;
    }
    return b->hold;
}

/* One pass over source tensor si (numel elements in rows of `cols`), calling fn per chunk. */
typedef struct qpass {
    mk_source *src;
    size_t si, i;
    uint64_t cols, rpc, rows, max_elems;
    unsigned es;
    chunk_fn fn;
    void *ctx;
    float *hold;  /* the whole tensor as f32, or NULL: chunks are read into it, or read from it */
    bool held;    /* hold is filled: nothing to read */
    bool raw;     /* chunks go to the consumer's rows_raw as the source's bytes */
    qbufs *bufs;
    mk_dstream *ds; /* the tensor's stream when this pass is its only read, or NULL */
} qpass;

static void qpass_tls_done(void *p) { (void)p; }

static void *qpass_tls_new(void *ctx)
{
    const qpass *q = ctx;
    int k = mk_thread_index();
    if (k < 0 || k >= q->bufs->nt) MK_BUG("more worker threads than when the stream began");
    qpass_tls *t = &q->bufs->t[k];
    const size_t need = (size_t)q->max_elems, sneed = (size_t)(q->max_elems * (q->es > 4 ? q->es : 4)) + 1;
    if (t->cap < need) {
        free(t->buf);
        t->buf = malloc(need * sizeof(float) + 1);
        t->cap = t->buf ? need : 0;
    }
    if (t->scap < sneed) {
        free(t->scratch);
        t->scratch = malloc(sneed);
        t->scap = t->scratch ? sneed : 0;
    }
    if (t->cap < need || t->scap < sneed) {
        mk_error(MK_ERR_NOMEM, "out of memory for chunk buffers");
        return NULL;
    }
    return t;
}

static mk_status qpass_chunk(void *ctx, uint64_t c, void *tlsp)
{
    const qpass *q = ctx;
    qpass_tls *t = tlsp;
    uint64_t e0 = c * q->rpc * q->cols;
    uint64_t n = (q->rows - c * q->rpc < q->rpc ? q->rows - c * q->rpc : q->rpc) * q->cols;
    if (q->held) return q->fn(q->ctx, q->i, e0, q->hold + e0, n);
    if (q->raw) {
        mk_consumer *cons = q->ctx;
        mk_source *src = q->src;
        const void *p = src->ops->borrow ? src->ops->borrow(src, q->si, e0 * q->es, n * q->es) : NULL;
        mk_status st = MK_OK;
        if (!p) {
            st = q->ds ? mk_dstream_read(q->ds, e0 * q->es, t->scratch, (size_t)(n * q->es))
                       : src->ops->read(src, q->si, e0 * q->es, n * q->es, t->scratch);
            p = t->scratch;
        }
        if (st == MK_OK) st = cons->ops->rows_raw(cons, q->i, e0, p, src->tensors[q->si].dtype, n);
        if (src->ops->release) src->ops->release(src, q->si, e0 * q->es, n * q->es);
        return st;
    }
    float *v = q->hold ? q->hold + e0 : t->buf;
    mk_status st = q->ds ? mk_stream_read_f32(q->ds, q->src->tensors[q->si].dtype, e0, n, v)
                         : mk_source_read_f32(q->src, q->si, e0, n, v, t->scratch);
    if (st == MK_OK) st = q->fn(q->ctx, q->i, e0, v, n);
    if (q->src->ops->release) q->src->ops->release(q->src, q->si, e0 * q->es, n * q->es);
    return st;
}

/* ds: the tensor's stream, when this pass is its only read of the source (else NULL: the
 * bytes are read through the page cache, which keeps them for the next read). */
static mk_status pass_held(qbufs *b, mk_source *src, size_t si, size_t i, uint64_t cols, uint64_t rpc, chunk_fn fn, void *ctx,
                           float *hold, bool held, mk_dstream *ds)
{
    const mk_tensor_info *t = &src->tensors[si];
    const uint64_t rows = cols ? t->numel / cols : 0;
    qpass q = {src, si, i, cols, rpc, rows, rpc * cols < t->numel ? rpc * cols : t->numel, mk_dtype_size(t->dtype), fn, ctx,
               hold, held, false, b, ds};
    if (fn == rows_fn && !hold) {
        mk_consumer *c = ctx;
        q.raw = c->ops->takes_raw && c->ops->rows_raw && c->ops->takes_raw(c, i, t->dtype);
    }
    if (!held && !ds && src->ops->prefetch) src->ops->prefetch(src, si, 0, t->nbytes);
    return mk_parallel_chunks((rows + rpc - 1) / rpc, qpass_chunk, &q, held ? NULL : qpass_tls_new, held ? NULL : qpass_tls_done);
}

static mk_status pass(qbufs *b, mk_source *src, size_t si, size_t i, uint64_t cols, uint64_t rpc, chunk_fn fn, void *ctx)
{
    return pass_held(b, src, si, i, cols, rpc, fn, ctx, NULL, false, NULL);
}

/* A tensor passed through as raw bytes, in slices of QSTREAM_RAW bytes on the pool's
 * threads (each slice read into the thread's kept buffer unless the source lends it). */
#define QSTREAM_RAW (1u << 20)
typedef struct raw_ctx {
    qpass q; /* for the buffers: max_elems = QSTREAM_RAW / 4, es = 4 */
    mk_consumer *c;
    uint64_t total;
} raw_ctx;

static mk_status raw_chunk(void *ctx, uint64_t k, void *tlsp)
{
    const raw_ctx *r = ctx;
    qpass_tls *t = tlsp;
    mk_source *src = r->q.src;
    const uint64_t off = k * QSTREAM_RAW, len = r->total - off < QSTREAM_RAW ? r->total - off : QSTREAM_RAW;
    const void *p = !r->q.ds && src->ops->borrow ? src->ops->borrow(src, r->q.si, off, len) : NULL;
    mk_status st = MK_OK;
    if (!p) {
        st = r->q.ds ? mk_dstream_read(r->q.ds, off, t->scratch, (size_t)len) : src->ops->read(src, r->q.si, off, len, t->scratch);
        p = t->scratch;
    }
    if (st == MK_OK) st = r->c->ops->raw(r->c, r->q.i, off, p, len);
    if (src->ops->release) src->ops->release(src, r->q.si, off, len);
    return st;
}

static mk_status copy_raw(qbufs *b, mk_source *src, size_t si, size_t i, mk_consumer *c, mk_dstream *ds)
{
    raw_ctx r = {{.src = src, .si = si, .i = i, .max_elems = QSTREAM_RAW / 4, .es = 4, .bufs = b, .ds = ds}, c,
                 src->tensors[si].nbytes};
    if (!ds && src->ops->prefetch) src->ops->prefetch(src, si, 0, r.total);
    return mk_parallel_chunks((r.total + QSTREAM_RAW - 1) / QSTREAM_RAW, raw_chunk, &r, qpass_tls_new, qpass_tls_done);
}

static mk_status rows_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    mk_consumer *c = ctx;
    return c->ops->rows(c, i, e0, v, n);
}

static mk_status observe_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    mk_consumer *c = ctx;
    return c->ops->observe(c, i, e0, v, n);
}

/* Whether tensor i (logical t, stored as in) goes to the consumer as its bytes, unconverted. */
static bool copied_raw(mk_consumer *c, size_t i, const mk_tensor_info *t, const mk_tensor_info *in)
{
    return c->ops->raw_ok(c, i, t, in->dtype) && in->nbytes == t->nbytes;
}

/* Whether tensor i is read from the source exactly once, each byte by one chunk: copied raw,
 * or in whole rows by one pass (a prepass that keeps the values for the main pass counts as
 * that pass; one that cannot keep them means two reads). */
static bool read_once(mk_consumer *c, size_t i, const mk_tensor_info *t, const mk_tensor_info *in)
{
    if (c->ops->is_done && c->ops->is_done(c, i)) return false;
    if (copied_raw(c, i, t, in)) return true;
    uint64_t cols = mk_tensor_cols(t);
    if (!t->numel || !cols || t->numel % cols || mk_dtype_size(in->dtype) > 4) return false;
    return !(c->ops->wants_prepass && c->ops->wants_prepass(c, i)) || hold_fits(t->numel);
}

/* A stream over tensor i's source bytes when it is read once (else NULL), opened before the
 * tensor before it is computed, so its first blocks are read meanwhile. Its ring covers the
 * chunks in flight on every thread, raw slices or rows (mk_dstream.h). */
static mk_status open_stream(const qbufs *b, mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t i,
                             mk_consumer *c, uint64_t chunk, mk_dstream **out)
{
    const mk_tensor_info *in = &src->tensors[src_idx[i]];
    *out = NULL;
    if (!src->ops->stream || !read_once(c, i, &logical[i], in)) return MK_OK;
    uint64_t piece = chunk * mk_dtype_size(in->dtype) > QSTREAM_RAW ? chunk * mk_dtype_size(in->dtype) : QSTREAM_RAW;
    return src->ops->stream(src, src_idx[i], in->nbytes, (uint64_t)b->nt * piece, out);
}

/* Tensor i of the stream: begin, its passes, end. ds: its stream (open_stream; the caller closes it). */
static mk_status stream_one(qbufs *b, mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t i,
                            mk_consumer *c, uint64_t chunk, mk_dstream *ds)
{
    const mk_tensor_info *t = &logical[i];
    const size_t si = src_idx[i];
    const mk_tensor_info *in = &src->tensors[si];
    if (in->numel != t->numel) MK_BUG("stream: source and logical tensors differ in size");
    if (c->ops->is_done && c->ops->is_done(c, i)) return MK_OK;
    MK_TRY(c->ops->begin(c, i, t));
    if (copied_raw(c, i, t, in)) {
        MK_TRY(copy_raw(b, src, si, i, c, ds));
    } else if (t->numel) {
        uint64_t cols = mk_tensor_cols(t);
        uint64_t rpc = mk_rows_per_chunk(cols, c->ops->align ? c->ops->align(c, t) : 1, chunk);
        float *hold = NULL;
        if (c->ops->wants_prepass && c->ops->wants_prepass(c, i)) {
            hold = qbufs_hold(b, t->numel);
            MK_TRY(pass_held(b, src, si, i, cols, rpc, observe_fn, c, hold, false, hold ? ds : NULL));
            MK_TRY(c->ops->observe_end(c, i));
            ds = NULL; /* read by the prepass, or not at all */
        }
        MK_TRY(pass_held(b, src, si, i, cols, rpc, rows_fn, c, hold, hold != NULL, ds));
    }
    /* again as a whole: for a mapped source, the kernel's fault-around maps pages next
     * to each one read, some in chunks already released, which would stay resident */
    if (src->ops->release) src->ops->release(src, si, 0, in->nbytes);
    return c->ops->end(c, i);
}

mk_status mk_qstream_run(mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t n, mk_consumer *c,
                         const mk_qstream_opts *o)
{
    const uint64_t chunk = o->chunk_elems ? o->chunk_elems : QSTREAM_CHUNK;
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n; i++) total += logical[i].nbytes;
    qbufs b;
    MK_TRY(qbufs_init(&b));
    mk_dstream *cur = NULL, *next = NULL;
    mk_status st = n ? open_stream(&b, src, src_idx, logical, 0, c, chunk, &cur) : MK_OK;
    for (size_t i = 0; i < n && st == MK_OK; i++) {
        if (i + 1 < n) st = open_stream(&b, src, src_idx, logical, i + 1, c, chunk, &next);
        /* a tensor not streamed has its bytes asked for now, while the one before is computed */
        if (st == MK_OK && i + 1 < n && !next && src->ops->prefetch)
            src->ops->prefetch(src, src_idx[i + 1], 0, src->tensors[src_idx[i + 1]].nbytes);
        if (st == MK_OK) st = stream_one(&b, src, src_idx, logical, i, c, chunk, cur);
        mk_dstream_close(cur);
        cur = next;
        next = NULL;
        done += logical[i].nbytes;
        if (st == MK_OK && o->progress) o->progress(o->progress_ctx, i + 1, n, done, total, logical[i].name);
    }
    mk_dstream_close(cur);
    qbufs_free(&b);
    return st;
}

/* ---- offsets before the layout ------------------------------------------------------------------ */

typedef struct offset_ctx {
    const mk_qplan *p;
    float *scratch;
} offset_ctx;

static mk_status offset_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    offset_ctx *a = ctx;
    a->p->o.fam->offset_rows(a->p, i, a->scratch, e0, v, n);
    return MK_OK;
}

mk_status mk_qstream_offsets(mk_source *src, const size_t *src_idx, mk_qplan *p, uint64_t chunk_elems)
{
    const uint64_t chunk = chunk_elems ? chunk_elems : QSTREAM_CHUNK;
    const mk_qfamily *f = p->o.fam;
    qbufs b;
    MK_TRY(qbufs_init(&b));
    mk_status s = MK_OK;
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        if (!mk_qplan_wants_offset(p, i)) continue;
        const mk_qtensor *q = &p->t[i];
        offset_ctx a = {p, mk_malloc((size_t)f->offset_scratch(p, i) * sizeof(float))};
        if (!a.scratch) {
            s = MK_ERR_NOMEM;
            break;
        }
        uint64_t rpc = mk_rows_per_chunk(q->cols, f->align ? f->align(p, i) : 1, chunk);
        s = pass(&b, src, src_idx[i], i, q->cols, rpc, offset_fn, &a);
        if (src->ops->release) src->ops->release(src, src_idx[i], 0, src->tensors[src_idx[i]].nbytes);
        if (s == MK_OK) mk_qplan_set_offset(p, i, f->offset_end(p, i, a.scratch));
        free(a.scratch);
    }
    qbufs_free(&b);
    return s;
}
