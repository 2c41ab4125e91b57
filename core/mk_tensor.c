/* mk_tensor.c - see mk_tensor.h */
#include "mk_tensor.h"
#include "mk_dstream.h"
#include "mk_hash.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mk_shape_str(const mk_tensor_info *t, char buf[160])
{
    size_t off = 0;
    buf[off++] = '[';
    for (int d = 0; d < t->ndim && off < 140; d++)
        off += (size_t)snprintf(buf + off, 160 - off, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    snprintf(buf + off, 160 - off, "]");
    return buf;
}

bool mk_shape_eq(const mk_tensor_info *a, const mk_tensor_info *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

uint64_t mk_tensor_cols(const mk_tensor_info *t)
{
    return t->ndim ? (uint64_t)t->shape[t->ndim - 1] : 1;
}

uint64_t mk_tensor_rows(const mk_tensor_info *t)
{
    uint64_t c = mk_tensor_cols(t);
    return c ? t->numel / c : 0;
}

mk_status mk_tensor_info_finish(mk_tensor_info *t)
{
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || !mk_mul_u64(n, (uint64_t)t->shape[d], &n))
            return mk_error(MK_ERR_FORMAT, "tensor %s: shape product overflows", t->name);
    }
    t->numel = n;
    if (!mk_mul_u64(n, mk_dtype_size(t->dtype), &t->nbytes))
        return mk_error(MK_ERR_FORMAT, "tensor %s: byte size overflows", t->name);
    return MK_OK;
}

/* ---- name index --------------------------------------------------------------------- */

mk_status mk_name_index_build(mk_name_index *ix, const mk_tensor_info *t, size_t n, size_t *dup)
{
    memset(ix, 0, sizeof *ix);
    if (n >= UINT32_MAX / 2) return mk_error(MK_ERR_FORMAT, "too many tensors (%zu)", n);
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    ix->slots = mk_calloc(cap, sizeof *ix->slots);
    if (!ix->slots) return MK_ERR_NOMEM;
    ix->cap = cap;
    ix->t = t;
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)mk_hash64_str(t[i].name) & (cap - 1);
        while (ix->slots[h]) {
            if (strcmp(t[ix->slots[h] - 1].name, t[i].name) == 0) {
                if (dup) *dup = i;
                return mk_error(MK_ERR_FORMAT, "duplicate tensor name '%s'", t[i].name);
            }
            h = (h + 1) & (cap - 1);
        }
        ix->slots[h] = (uint32_t)(i + 1);
    }
    return MK_OK;
}

long mk_name_index_find(const mk_name_index *ix, const char *name)
{
    if (!ix->slots) return -1;
    size_t h = (size_t)mk_hash64_str(name) & (ix->cap - 1);
    while (ix->slots[h]) {
        uint32_t i = ix->slots[h] - 1;
        if (strcmp(ix->t[i].name, name) == 0) return (long)i;
        h = (h + 1) & (ix->cap - 1);
    }
    return -1;
}

void mk_name_index_free(mk_name_index *ix)
{
    if (!ix) return;
    free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

/* ---- source helpers ------------------------------------------------------------------- */

mk_status mk_source_read_f32(mk_source *s, size_t i, uint64_t elem0, uint64_t n, float *dst, void *scratch)
{
    const mk_tensor_info *t = &s->tensors[i];
    unsigned es = mk_dtype_size(t->dtype);
    if (elem0 > t->numel || n > t->numel - elem0) MK_BUG("read past the end of a tensor");
    uint64_t off = elem0 * es, len = n * es;
    const void *p = s->ops->borrow ? s->ops->borrow(s, i, off, len) : NULL;
    if (!p && es <= 4) {
        /* read into dst's last len bytes and widen there: no pass through scratch */
        MK_TRY(s->ops->read(s, i, off, len, (char *)dst + (n * 4 - len)));
        mk_dtype_to_f32_inplace(t->dtype, dst, (size_t)n);
        return MK_OK;
    }
    if (!p) {
        MK_TRY(s->ops->read(s, i, off, len, scratch));
        p = scratch;
    }
    mk_dtype_info(t->dtype)->to_f32(p, dst, (size_t)n);
    return MK_OK;
}

mk_status mk_stream_read_f32(mk_dstream *ds, mk_dtype dt, uint64_t elem0, uint64_t n, float *dst)
{
    unsigned es = mk_dtype_size(dt);
    if (es > 4) MK_BUG("streamed tensors have elements of at most 4 bytes");
    const void *held = mk_dstream_borrow(ds, elem0 * es, (size_t)(n * es));
    if (held) { /* a tensor held whole: widened straight from the stream's buffers */
        mk_dtype_info(dt)->to_f32(held, dst, (size_t)n);
        return MK_OK;
    }
    MK_TRY(mk_dstream_read(ds, elem0 * es, (char *)dst + (n * 4 - n * es), (size_t)(n * es)));
    mk_dtype_to_f32_inplace(dt, dst, (size_t)n);
    return MK_OK;
}

mk_status mk_source_read_f32_window(mk_source *s, size_t i, uint64_t src_cols, uint64_t row0, uint64_t nrows,
                                    uint64_t ncols, float *dst, void *scratch)
{
    if (ncols == src_cols) return mk_source_read_f32(s, i, row0 * src_cols, nrows * ncols, dst, scratch);
    for (uint64_t r = 0; r < nrows; r++)
        MK_TRY(mk_source_read_f32(s, i, (row0 + r) * src_cols, ncols, dst + r * ncols, scratch));
    return MK_OK;
}

void mk_source_close(mk_source *s)
{
    if (s && s->ops && s->ops->close) s->ops->close(s);
}

void mk_source_free_fields(mk_source *s)
{
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->tensors);
    mk_name_index_free(&s->index);
    for (size_t i = 0; i < s->n_files; i++) free(s->files[i]);
    free(s->files);
    free(s->path);
    free(s->kind);
    free(s);
}

void mk_sink_close(mk_sink *k)
{
    if (k && k->ops && k->ops->close) k->ops->close(k);
}

mk_status mk_sink_finish(mk_sink *k)
{
    return k->ops->finish ? k->ops->finish(k) : MK_OK;
}

/* ---- the plain consumer ---------------------------------------------------------------- */

/* A spare conversion buffer; rows() takes one, converts into it, writes it and gives it back,
 * so a merge allocates about one per thread in all (any thread may call rows). */
typedef struct plain_buf {
    struct plain_buf *next;
    size_t cap;                              /* bytes of data */
    unsigned char data[];                    /* 16-byte aligned (after two 8-byte fields) */
} plain_buf;

typedef struct plain_consumer {
    mk_sink *sink;
    const mk_tensor_info *out;
    size_t n;
    bool allow_overflow;
    pthread_mutex_t mu; /* guards spare */
    plain_buf *spare;
} plain_consumer;

/* A buffer of at least `bytes`, or NULL (out of memory). */
static plain_buf *plain_take(plain_consumer *p, size_t bytes)
{
    pthread_mutex_lock(&p->mu);
    plain_buf *b = p->spare;
    if (b) p->spare = b->next;
    pthread_mutex_unlock(&p->mu);
    if (b && b->cap >= bytes) return b;
    free(b);
    if (!(b = mk_malloc(sizeof *b + bytes))) return NULL;
    b->cap = bytes;
    return b;
}

static void plain_give(plain_consumer *p, plain_buf *b)
{
    pthread_mutex_lock(&p->mu);
    b->next = p->spare;
    p->spare = b;
    pthread_mutex_unlock(&p->mu);
}

static uint64_t plain_align(mk_consumer *c, const mk_tensor_info *t)
{
    (void)c;
    (void)t;
    return 1;
}

static bool plain_raw_ok(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype src)
{
    plain_consumer *p = c->impl;
    (void)t;
    return p->out[i].dtype == src;
}

static mk_status plain_begin(mk_consumer *c, size_t i, const mk_tensor_info *t)
{
    (void)c;
    (void)i;
    (void)t;
    return MK_OK;
}

/* Converts and checks for overflow in one pass (mk_dtype_from_f32_checked), then writes. */
static mk_status plain_rows(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n)
{
    plain_consumer *p = c->impl;
    const mk_tensor_info *t = &p->out[i];
    unsigned es = mk_dtype_size(t->dtype);
    if (t->dtype == MK_F32) return p->sink->ops->write(p->sink, i, elem0 * 4, v, n * 4);
    plain_buf *b = plain_take(p, (size_t)(n * es));
    if (!b) return MK_ERR_NOMEM;
    size_t first = 0, bad = 0;
    if (p->allow_overflow) mk_dtype_info(t->dtype)->from_f32(v, b->data, (size_t)n);
    else bad = mk_dtype_from_f32_checked(t->dtype, v, b->data, (size_t)n, &first);
    mk_status s;
    if (bad)
        s = mk_error(MK_ERR_NUMERIC,
                     "tensor %s: %zu value(s) overflow %s (first at element %llu: %g); "
                     "pass --allow-crimes to write them as Inf",
                     t->name, bad, mk_dtype_name(t->dtype), (unsigned long long)(elem0 + first), (double)v[first]);
    else s = p->sink->ops->write(p->sink, i, elem0 * es, b->data, n * es);
    plain_give(p, b);
    return s;
}

static mk_status plain_raw(mk_consumer *c, size_t i, uint64_t off, const void *data, uint64_t len)
{
    plain_consumer *p = c->impl;
    return p->sink->ops->write(p->sink, i, off, data, len);
}

static mk_status plain_end(mk_consumer *c, size_t i)
{
    plain_consumer *p = c->impl;
    return p->sink->ops->tensor_done(p->sink, i);
}

static bool plain_is_done(mk_consumer *c, size_t i)
{
    plain_consumer *p = c->impl;
    return p->sink->ops->is_done && p->sink->ops->is_done(p->sink, i);
}

static void plain_close(mk_consumer *c)
{
    plain_consumer *p = c->impl;
    while (p && p->spare) {
        plain_buf *b = p->spare;
        p->spare = b->next;
        free(b);
    }
    if (p) pthread_mutex_destroy(&p->mu);
    free(c->impl);
    c->impl = NULL;
}

static const mk_consumer_ops plain_ops = {
    .align = plain_align,
    .raw_ok = plain_raw_ok,
    .begin = plain_begin,
    .rows = plain_rows,
    .raw = plain_raw,
    .end = plain_end,
    .is_done = plain_is_done,
    .close = plain_close,
};

mk_status mk_consumer_plain(mk_consumer *c, mk_sink *sink, const mk_tensor_info *out, size_t n, bool allow_overflow)
{
    plain_consumer *p = mk_calloc(1, sizeof *p);
    if (!p) return MK_ERR_NOMEM;
    p->sink = sink;
    p->out = out;
    p->n = n;
    p->allow_overflow = allow_overflow;
    pthread_mutex_init(&p->mu, NULL);
    c->ops = &plain_ops;
    c->impl = p;
    return MK_OK;
}
