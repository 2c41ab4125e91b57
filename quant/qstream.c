/* qstream.c - see quant.h: streams the tensors of one source through a consumer, in
 * chunks of whole rows, in parallel over the chunks of a tensor, with the consumer's prepass
 * when it asks for one; and the pass before the layout that finds the formats' offsets.
 * Per thread one chunk as f32 plus its raw bytes; a source that maps its files is told to
 * release each chunk, and each tensor again when it is done. The next tensor's bytes are
 * asked for (prefetch) while this one is computed. A tensor with a prepass is read once
 * when its f32 values fit QSTREAM_HOLD: the prepass keeps them and the main pass reads
 * them there (the same values, so the same bytes); larger ones are read twice.
 * The chunks of a pass go to mk_parallel_chunks' sleeping pool (the merge executor's too).
 * Must not: know any consumer or format (it asks the consumer's ops and the family). */
#include "qformat.h"

#include "../core/mk_io.h"
#include "../core/mk_parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QSTREAM_CHUNK (1u << 18) /* 1 MiB of f32: the passes over a chunk stay in L2 */
#define QSTREAM_HOLD (128ull << 20) /* the largest tensor (as f32) a prepass keeps for the main pass */

typedef mk_status (*chunk_fn)(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n);

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
} qpass;

typedef struct qpass_tls {
    float *buf;
    void *scratch;
} qpass_tls;

static void qpass_tls_free(void *p)
{
    qpass_tls *t = p;
    if (!t) return;
    free(t->buf);
    free(t->scratch);
    free(t);
}

static void *qpass_tls_new(void *ctx)
{
    const qpass *q = ctx;
    qpass_tls *t = calloc(1, sizeof *t);
    if (t) {
        t->buf = malloc((size_t)(q->max_elems * sizeof(float)) + 1);
        t->scratch = malloc((size_t)(q->max_elems * (q->es > 4 ? q->es : 4)) + 1);
    }
    if (!t || !t->buf || !t->scratch) {
        qpass_tls_free(t);
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
    float *v = q->hold ? q->hold + e0 : t->buf;
    mk_status st = mk_source_read_f32(q->src, q->si, e0, n, v, t->scratch);
    if (st == MK_OK) st = q->fn(q->ctx, q->i, e0, v, n);
    if (q->src->ops->release) q->src->ops->release(q->src, q->si, e0 * q->es, n * q->es);
    return st;
}

static mk_status pass_held(mk_source *src, size_t si, size_t i, uint64_t cols, uint64_t rpc, chunk_fn fn, void *ctx,
                           float *hold, bool held)
{
    const mk_tensor_info *t = &src->tensors[si];
    const uint64_t rows = cols ? t->numel / cols : 0;
    qpass q = {src, si, i, cols, rpc, rows, rpc * cols < t->numel ? rpc * cols : t->numel, mk_dtype_size(t->dtype), fn, ctx,
               hold, held};
    return mk_parallel_chunks((rows + rpc - 1) / rpc, qpass_chunk, &q, held ? NULL : qpass_tls_new, held ? NULL : qpass_tls_free);
}

static mk_status pass(mk_source *src, size_t si, size_t i, uint64_t cols, uint64_t rpc, chunk_fn fn, void *ctx)
{
    return pass_held(src, si, i, cols, rpc, fn, ctx, NULL, false);
}

typedef struct raw_ctx {
    mk_consumer *c;
    size_t i;
} raw_ctx;

static mk_status raw_slice(void *ctx, uint64_t off, const void *data, uint64_t len)
{
    raw_ctx *r = ctx;
    return r->c->ops->raw(r->c, r->i, off, data, len);
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

mk_status mk_qstream_run(mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t n, mk_consumer *c,
                         const mk_qstream_opts *o)
{
    const uint64_t chunk = o->chunk_elems ? o->chunk_elems : QSTREAM_CHUNK;
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n; i++) total += logical[i].nbytes;
    for (size_t i = 0; i < n; i++) {
        const mk_tensor_info *t = &logical[i];
        const size_t si = src_idx[i];
        const mk_tensor_info *in = &src->tensors[si];
        if (in->numel != t->numel) MK_BUG("stream: source and logical tensors differ in size");
        if (!(c->ops->is_done && c->ops->is_done(c, i))) {
            MK_TRY(c->ops->begin(c, i, t));
            if (src->ops->prefetch) src->ops->prefetch(src, si, 0, in->nbytes);
            if (src->ops->prefetch && i + 1 < n) src->ops->prefetch(src, src_idx[i + 1], 0, src->tensors[src_idx[i + 1]].nbytes);
            if (c->ops->raw_ok(c, i, t, in->dtype) && in->nbytes == t->nbytes) {
                raw_ctx rc = {c, i};
                MK_TRY(mk_source_copy_raw(src, si, raw_slice, &rc));
            } else if (t->numel) {
                uint64_t cols = mk_tensor_cols(t);
                uint64_t rpc = mk_rows_per_chunk(cols, c->ops->align ? c->ops->align(c, t) : 1, chunk);
                float *hold = NULL;
                if (c->ops->wants_prepass && c->ops->wants_prepass(c, i)) {
                    if (t->numel <= QSTREAM_HOLD / sizeof(float)) hold = malloc((size_t)t->numel * sizeof(float));
                    mk_status st = pass_held(src, si, i, cols, rpc, observe_fn, c, hold, false);
                    if (st == MK_OK) st = c->ops->observe_end(c, i);
                    if (st != MK_OK) free(hold);
                    MK_TRY(st);
                }
                mk_status st = pass_held(src, si, i, cols, rpc, rows_fn, c, hold, hold != NULL);
                free(hold);
                MK_TRY(st);
            }
            /* again as a whole: for a mapped source, the kernel's fault-around maps pages next
             * to each one read, some in chunks already released, which would stay resident */
            if (src->ops->release) src->ops->release(src, si, 0, in->nbytes);
            MK_TRY(c->ops->end(c, i));
        }
        done += t->nbytes;
        if (o->progress) o->progress(o->progress_ctx, i + 1, n, done, total, t->name);
    }
    return MK_OK;
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
    for (size_t i = 0; i < p->n; i++) {
        if (!mk_qplan_wants_offset(p, i)) continue;
        const mk_qtensor *q = &p->t[i];
        offset_ctx a = {p, mk_malloc((size_t)f->offset_scratch(p, i) * sizeof(float))};
        if (!a.scratch) return MK_ERR_NOMEM;
        uint64_t rpc = mk_rows_per_chunk(q->cols, f->align ? f->align(p, i) : 1, chunk);
        mk_status s = pass(src, src_idx[i], i, q->cols, rpc, offset_fn, &a);
        if (src->ops->release) src->ops->release(src, src_idx[i], 0, src->tensors[src_idx[i]].nbytes);
        if (s == MK_OK) mk_qplan_set_offset(p, i, f->offset_end(p, i, a.scratch));
        free(a.scratch);
        MK_TRY(s);
    }
    return MK_OK;
}
