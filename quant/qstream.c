/* qstream.c - see quant.h: streams the tensors of one source through a consumer, in
 * chunks of whole rows, OpenMP over the chunks of a tensor. Per thread one chunk as f32
 * plus its raw bytes; a source that maps its files is told to release each chunk, and each
 * tensor again when it is done. */
#include "bnb.h"
#include "quant.h"

#include "../core/mk_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

#define QSTREAM_CHUNK (1u << 18) /* 1 MiB of f32: the passes over a chunk stay in L2 */

typedef mk_status (*chunk_fn)(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n);

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Rows per chunk: about `chunk` elements, a multiple of the rows that make `align`. */
static uint64_t rows_per_chunk(uint64_t cols, uint64_t align, uint64_t chunk)
{
    if (!align) align = 1;
    uint64_t unit = align / gcd64(cols, align);
    uint64_t rpc = chunk / cols;
    if (rpc < unit) rpc = unit;
    return rpc - rpc % unit;
}

/* One pass over source tensor si (numel elements in rows of `cols`), calling fn per chunk. */
static mk_status pass(mk_source *src, size_t si, size_t i, uint64_t cols, uint64_t rpc, chunk_fn fn, void *ctx)
{
    const mk_tensor_info *t = &src->tensors[si];
    const uint64_t rows = cols ? t->numel / cols : 0, nch = (rows + rpc - 1) / rpc;
    const uint64_t max_elems = rpc * cols < t->numel ? rpc * cols : t->numel;
    const unsigned es = mk_dtype_size(t->dtype);
    mk_status first = MK_OK;
    uint64_t first_chunk = UINT64_MAX;
    char first_msg[1024] = "";
    int stop = 0;
    MK_OMP("omp parallel")
    {
        float *buf = malloc((size_t)(max_elems * sizeof(float)) + 1);
        void *scratch = malloc((size_t)(max_elems * (es > 4 ? es : 4)) + 1);
        mk_status tst = buf && scratch ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory for chunk buffers");
        if (tst != MK_OK) {
            MK_OMP("omp critical(mk_qstream_err)")
            {
                if (first == MK_OK) {
                    first = tst;
                    snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                }
            }
            MK_OMP("omp atomic write")
            stop = 1;
        }
        MK_OMP("omp for schedule(dynamic, 1)")
        for (int64_t ci = 0; ci < (int64_t)nch; ci++) {
            int stopped;
            MK_OMP("omp atomic read")
            stopped = stop;
            if (stopped || tst != MK_OK) continue;
            uint64_t c = (uint64_t)ci, e0 = c * rpc * cols;
            uint64_t n = (rows - c * rpc < rpc ? rows - c * rpc : rpc) * cols;
            mk_status st = mk_source_read_f32(src, si, e0, n, buf, scratch);
            if (st == MK_OK) st = fn(ctx, i, e0, buf, n);
            if (src->ops->release) src->ops->release(src, si, e0 * es, n * es);
            if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
            if (st != MK_OK) {
                MK_OMP("omp critical(mk_qstream_err)")
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
    }
    if (first != MK_OK) return mk_error(first, "%s", first_msg);
    return MK_OK;
}

static mk_status copy_raw(mk_source *src, size_t si, mk_consumer *c, size_t i)
{
    const uint64_t total = src->tensors[si].nbytes, step = 8u << 20;
    void *buf = NULL;
    mk_status s = MK_OK;
    for (uint64_t off = 0; off < total && s == MK_OK; off += step) {
        uint64_t len = total - off < step ? total - off : step;
        const void *p = src->ops->borrow ? src->ops->borrow(src, si, off, len) : NULL;
        if (!p) {
            if (!buf && !(buf = mk_malloc((size_t)step))) return MK_ERR_NOMEM;
            s = src->ops->read(src, si, off, len, buf);
            p = buf;
        }
        if (s == MK_OK) s = c->ops->raw(c, i, off, p, len);
        if (src->ops->release) src->ops->release(src, si, off, len);
        if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    }
    free(buf);
    return s;
}

static mk_status rows_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    mk_consumer *c = ctx;
    return c->ops->rows(c, i, e0, v, n);
}

static mk_status observe_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    return mk_quant_observe(ctx, i, e0, v, n);
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
            if (c->ops->raw_ok(c, i, t, in->dtype) && in->nbytes == t->nbytes) {
                MK_TRY(copy_raw(src, si, c, i));
            } else if (t->numel) {
                uint64_t cols = mk_tensor_cols(t);
                uint64_t rpc = rows_per_chunk(cols, c->ops->align ? c->ops->align(c, t) : 1, chunk);
                if (o->quant && mk_quant_wants_prepass(c, i)) {
                    MK_TRY(pass(src, si, i, cols, rpc, observe_fn, c));
                    MK_TRY(mk_quant_observe_end(c, i));
                }
                MK_TRY(pass(src, si, i, cols, rpc, rows_fn, c));
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

/* ---- double-quant offsets ------------------------------------------------------------------------ */

typedef struct absmax_ctx {
    float *absmax;
    unsigned block;
} absmax_ctx;

static mk_status absmax_fn(void *ctx, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    absmax_ctx *a = ctx;
    (void)i;
    mk_bnb4_absmax(a->block, v, (size_t)n, a->absmax + e0 / a->block);
    return MK_OK;
}

mk_status mk_qstream_offsets(mk_source *src, const size_t *src_idx, mk_qplan *p, uint64_t chunk_elems)
{
    const uint64_t chunk = chunk_elems ? chunk_elems : QSTREAM_CHUNK;
    for (size_t i = 0; i < p->n; i++) {
        if (!mk_qplan_wants_offset(p, i)) continue;
        const mk_qtensor *q = &p->t[i];
        absmax_ctx a = {mk_malloc((size_t)mk_bnb_nblocks(q->numel, p->o.block) * sizeof(float)), p->o.block};
        if (!a.absmax) return MK_ERR_NOMEM;
        uint64_t rpc = rows_per_chunk(q->cols, p->o.block, chunk);
        mk_status s = pass(src, src_idx[i], i, q->cols, rpc, absmax_fn, &a);
        if (src->ops->release) src->ops->release(src, src_idx[i], 0, src->tensors[src_idx[i]].nbytes);
        if (s == MK_OK) mk_qplan_set_offset(p, i, mk_bnb_absmax_mean(a.absmax, (size_t)mk_bnb_nblocks(q->numel, p->o.block)));
        free(a.absmax);
        MK_TRY(s);
    }
    return MK_OK;
}
