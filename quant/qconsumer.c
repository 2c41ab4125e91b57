/* qconsumer.c - see quant.h: the quantizing consumer. Each rows() call checks and rounds
 * one chunk of whole rows (aligned as the format asks) and hands it to the format's
 * encoder, which writes its bytes at their final offsets and records the chunk's error
 * sums; end() lets the format write what needs the whole tensor, then reduces the
 * statistics in element order, so the figures do not depend on the thread count. Tensors
 * that are kept are converted to their dtype (or copied raw) here.
 * Must not: know any format; it calls the family of the plan's options (qformat.h).
 */
#include "qformat.h"
#include "qvec.h"

#include "../core/mk_thread.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Per-thread scratch is indexed by the thread's number in mk_parallel_chunks' pool, which
 * both qstream and the merge executor run their chunks on. */
static int thread_num(void) { return mk_thread_index(); }
static int max_threads(void) { return mk_threads_get(); }

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "stored tensors are written in host byte order");

typedef struct qrec {
    uint64_t e0;
    double sx2, se2;
    float maxe;
} qrec;

/* State of the logical tensor being written (one at a time). */
typedef struct qstate {
    pthread_mutex_t mu;
    qrec *recs;
    size_t nrec, caprec;
    void *fam;                 /* the family's state */
} qstate;

/* Per-thread scratch buffers, reused across chunks (fresh allocations of this size would
 * be fresh zeroed pages every time). */
typedef struct qscratch {
    void *p[MK_QSCR_N];
    size_t n[MK_QSCR_N];
} qscratch;

struct mk_qcons {
    mk_sink *sink;
    const mk_qplan *p;
    const mk_qfamily *fam;
    bool values_exact, allow_overflow;
    qstate **st;               /* [n] */
    mk_qstats *stats;          /* [n] */
    int nthreads;
    qscratch *scr;             /* [nthreads] */
};

/* ---- services to the families --------------------------------------------------------------- */

const mk_qplan *mk_qc_plan(const mk_qcons *q) { return q->p; }

void *mk_qc_scratch(mk_qcons *q, int slot, size_t bytes)
{
    int t = thread_num();
    if (t >= q->nthreads) MK_BUG("more worker threads than when the consumer was made");
    qscratch *s = &q->scr[t];
    if (s->n[slot] < bytes) {
        free(s->p[slot]);
        s->p[slot] = malloc(bytes);
        s->n[slot] = s->p[slot] ? bytes : 0;
    }
    if (!s->p[slot]) mk_error(MK_ERR_NOMEM, "out of memory for a %zu-byte chunk buffer", bytes);
    return s->p[slot];
}

mk_status mk_qc_put(mk_qcons *q, size_t out, uint64_t off, const void *data, uint64_t len)
{
    return q->sink->ops->write(q->sink, out, off, data, len);
}

mk_status mk_qc_add_rec(mk_qcons *q, size_t i, uint64_t e0, double sx2, double se2, float maxe)
{
    qstate *s = q->st[i];
    mk_status st = MK_OK;
    pthread_mutex_lock(&s->mu);
    if (s->nrec == s->caprec) {
        size_t nc = s->caprec ? s->caprec * 2 : 64;
        qrec *r = mk_realloc_array(s->recs, nc, sizeof *r);
        if (!r) st = MK_ERR_NOMEM;
        else {
            s->recs = r;
            s->caprec = nc;
        }
    }
    if (st == MK_OK) s->recs[s->nrec++] = (qrec){e0, sx2, se2, maxe};
    pthread_mutex_unlock(&s->mu);
    return st;
}

void mk_qc_set_error(mk_qcons *q, size_t i, double se2, float maxe_bound)
{
    qstate *s = q->st[i];
    if (s->nrec) { /* the chunks recorded their sums of x^2 only */
        s->recs[0].se2 = se2 < 0 ? 0 : se2;
        s->recs[0].maxe = maxe_bound;
    }
    q->stats[i].max_err_bound = true;
}

void *mk_qc_state(mk_qcons *q, size_t i) { return q->st[i]->fam; }
void mk_qc_lock(mk_qcons *q, size_t i) { pthread_mutex_lock(&q->st[i]->mu); }
void mk_qc_unlock(mk_qcons *q, size_t i) { pthread_mutex_unlock(&q->st[i]->mu); }

static int cmp_rec(const void *a, const void *b)
{
    const qrec *x = a, *y = b;
    return x->e0 < y->e0 ? -1 : x->e0 > y->e0;
}

/* ---- checks --------------------------------------------------------------------------------- */

MK_QKERNEL
static mk_status check_finite(const mk_tensor_info *t, uint64_t e0, const float *x, size_t n)
{
    /* fast: any lane with an all-ones exponent? */
    mk_vi bad = mk_vi_set1(0);
    const mk_vi em = mk_vi_set1(0x7f800000);
    size_t n8 = n / 8 * 8;
    for (size_t i = 0; i < n8; i += 8) bad |= ((mk_vi)mk_vf_load(x + i) & em) == em;
    bool any = false;
    for (int l = 0; l < MK_VL; l++) any |= bad[l] != 0;
    for (size_t i = n8; i < n && !any; i++) any = !isfinite(x[i]);
    if (!any) return MK_OK;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u) {
            uint64_t e = e0 + i, cols = mk_tensor_cols(t);
            return mk_error(MK_ERR_NUMERIC, "tensor %s: %s at element %llu (row %llu, column %llu); cannot quantize it", t->name,
                            x[i] != x[i] ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf", (unsigned long long)e,
                            (unsigned long long)(e / cols), (unsigned long long)(e % cols));
        }
    }
    return MK_OK;
}

/* check_finite of bf16 bit patterns; the scan of an f32 copy names the first bad one. */
MK_QKERNEL
static mk_status check_finite_bf16(mk_qcons *q, const mk_tensor_info *t, uint64_t e0, const uint16_t *x, size_t n)
{
    typedef uint16_t vh __attribute__((vector_size(32)));
    vh bad = {0};
    const vh em = {0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80,
                   0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80, 0x7f80};
    size_t n16 = n / 16 * 16;
    for (size_t i = 0; i < n16; i += 16) {
        vh v;
        memcpy(&v, x + i, sizeof v);
        bad |= (vh)((v & em) == em);
    }
    bool any = false;
    for (int l = 0; l < 16; l++) any |= bad[l] != 0;
    for (size_t i = n16; i < n && !any; i++) any = (x[i] & 0x7f80) == 0x7f80;
    if (!any) return MK_OK;
    float *f = mk_qc_scratch(q, MK_QSCR_ROUND, n * sizeof *f);
    if (!f) return MK_ERR_NOMEM;
    mk_dtype_info(MK_BF16)->to_f32(x, f, n);
    return check_finite(t, e0, f, n);
}

/* A finite value that overflows dtype t (e.g. 70000 into F16) is an error naming it. */
static mk_status check_overflow(const mk_qcons *q, const char *name, mk_dtype t, uint64_t e0, const float *v, size_t n)
{
    if (q->allow_overflow) return MK_OK;
    size_t first = 0;
    size_t bad = mk_dtype_count_overflow(t, v, n, &first);
    if (bad)
        return mk_error(MK_ERR_NUMERIC,
                        "tensor %s: %zu value(s) overflow %s (first at element %llu: %g); pass --allow-crimes to write them as Inf",
                        name, bad, mk_dtype_name(t), (unsigned long long)(e0 + first), (double)v[first]);
    return MK_OK;
}

/* Values not read from a source of the tensor's dtype (a merge result) are rounded to it
 * first: quantizing inside a merge gives the bytes of merging, then quantizing. Then the
 * values must be finite. *out = the values to quantize. */
static mk_status prepare(mk_qcons *q, size_t i, uint64_t e0, const float *v, size_t n, const float **out)
{
    const mk_tensor_info *t = &q->p->in[i];
    *out = v;
    if (!q->values_exact && t->dtype != MK_F32) {
        MK_TRY(check_overflow(q, t->name, t->dtype, e0, v, n));
        float *b = mk_qc_scratch(q, MK_QSCR_ROUND, n * sizeof *b);
        if (!b) return MK_ERR_NOMEM;
        if (t->dtype == MK_BF16) {
            for (size_t k = 0; k < n; k++) b[k] = mk_bf16_to_f32(mk_f32_to_bf16(v[k]));
        } else {
            for (size_t k = 0; k < n; k++) b[k] = mk_f16_to_f32(mk_f32_to_f16(v[k]));
        }
        *out = b;
    }
    return check_finite(t, e0, *out, n);
}

/* ---- consumer ops ----------------------------------------------------------------------------- */

static uint64_t q_align(mk_consumer *c, const mk_tensor_info *t)
{
    mk_qcons *q = c->impl;
    long i = mk_name_index_find(&q->p->index, t->name);
    if (i < 0 || !q->p->t[i].quantized || !q->fam->align) return 1;
    return q->fam->align(q->p, (size_t)i);
}

static bool q_raw_ok(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype src)
{
    mk_qcons *q = c->impl;
    (void)t;
    return !q->p->t[i].quantized && q->p->out[q->p->t[i].out0].dtype == src;
}

static void state_free(const mk_qcons *q, qstate *s)
{
    if (!s) return;
    if (s->fam && q->fam->state_free) q->fam->state_free(s->fam);
    pthread_mutex_destroy(&s->mu);
    free(s->recs);
    free(s);
}

static mk_status q_begin(mk_consumer *c, size_t i, const mk_tensor_info *t)
{
    mk_qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    if (t->numel != q->p->in[i].numel) MK_BUG("consumer tensor does not match the quantization plan");
    state_free(q, q->st[i]);
    qstate *s = q->st[i] = mk_calloc(1, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    mk_qstats *x = &q->stats[i];
    memset(x, 0, sizeof *x);
    x->quantized = qt->quantized;
    x->numel = qt->numel;
    x->in_bytes = q->p->in[i].nbytes;
    for (size_t k = 0; k < qt->nout; k++) x->out_bytes += q->p->out[qt->out0 + k].nbytes;
    if (qt->quantized && q->fam->begin) return q->fam->begin(q, i, &s->fam);
    return MK_OK;
}

static mk_status rows_keep(mk_qcons *q, size_t i, uint64_t e0, const float *v, size_t n)
{
    const mk_tensor_info *t = &q->p->out[q->p->t[i].out0];
    MK_TRY(check_overflow(q, t->name, t->dtype, e0, v, n));
    unsigned es = mk_dtype_size(t->dtype);
    if (t->dtype == MK_F32) return mk_qc_put(q, q->p->t[i].out0, e0 * 4, v, n * 4);
    void *buf = mk_qc_scratch(q, MK_QSCR_BYTES, n * es);
    if (!buf) return MK_ERR_NOMEM;
    mk_dtype_info(t->dtype)->from_f32(v, buf, n);
    return mk_qc_put(q, q->p->t[i].out0, e0 * es, buf, n * es);
}

static mk_status q_rows(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n64)
{
    mk_qcons *q = c->impl;
    size_t n = (size_t)n64;
    if (!q->p->t[i].quantized) return rows_keep(q, i, elem0, v, n);
    const float *x;
    MK_TRY(prepare(q, i, elem0, v, n, &x));
    return q->fam->rows ? q->fam->rows(q, i, elem0, x, n) : q->fam->rows_x(q, i, elem0, x, n, false);
}

/* Chunks of a quantized BF16 weight read as they are stored go to the family's bf16 rows. */
static bool q_takes_raw(mk_consumer *c, size_t i, mk_dtype src)
{
    mk_qcons *q = c->impl;
    const mk_qplan *p = q->p;
    return src == MK_BF16 && q->values_exact && p->t[i].quantized && p->in[i].dtype == MK_BF16 && q->fam->rows_x &&
           (!q->fam->bf16_ok || q->fam->bf16_ok(p, i)) && !(q->fam->wants_prepass && q->fam->wants_prepass(p, i));
}

static mk_status q_rows_raw(mk_consumer *c, size_t i, uint64_t elem0, const void *data, mk_dtype src, uint64_t n64)
{
    mk_qcons *q = c->impl;
    if (src != MK_BF16) MK_BUG("raw rows of a dtype the consumer did not take");
    MK_TRY(check_finite_bf16(q, &q->p->in[i], elem0, data, (size_t)n64));
    return q->fam->rows_x(q, i, elem0, data, (size_t)n64, true);
}

static mk_status q_raw(mk_consumer *c, size_t i, uint64_t off, const void *data, uint64_t len)
{
    mk_qcons *q = c->impl;
    return mk_qc_put(q, q->p->t[i].out0, off, data, len);
}

static mk_status q_end(mk_consumer *c, size_t i)
{
    mk_qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    qstate *s = q->st[i];
    mk_status st = MK_OK;
    if (qt->quantized && q->fam->end) st = q->fam->end(q, i);
    if (st == MK_OK && qt->quantized) {
        mk_qstats *x = &q->stats[i];
        qsort(s->recs, s->nrec, sizeof *s->recs, cmp_rec);
        for (size_t k = 0; k < s->nrec; k++) {
            x->sum_x2 += s->recs[k].sx2;
            x->sum_e2 += s->recs[k].se2;
            x->max_err = s->recs[k].maxe > x->max_err ? s->recs[k].maxe : x->max_err;
        }
    }
    for (size_t k = 0; k < qt->nout && st == MK_OK; k++) st = q->sink->ops->tensor_done(q->sink, qt->out0 + k);
    if (st == MK_OK) q->stats[i].done = true;
    state_free(q, s);
    q->st[i] = NULL;
    return st;
}

static bool q_is_done(mk_consumer *c, size_t i)
{
    mk_qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    if (!q->sink->ops->is_done) return false;
    for (size_t k = 0; k < qt->nout; k++)
        if (!q->sink->ops->is_done(q->sink, qt->out0 + k)) return false;
    return true;
}

static void q_close(mk_consumer *c)
{
    mk_qcons *q = c->impl;
    if (!q) return;
    for (size_t i = 0; q->st && i < q->p->n; i++) state_free(q, q->st[i]);
    for (int t = 0; q->scr && t < q->nthreads; t++)
        for (int k = 0; k < MK_QSCR_N; k++) free(q->scr[t].p[k]);
    free(q->scr);
    free(q->st);
    free(q->stats);
    free(q);
    c->impl = NULL;
}

/* ---- prepass ---------------------------------------------------------------------------------- */

static bool q_wants_prepass(mk_consumer *c, size_t i)
{
    mk_qcons *q = c->impl;
    return q->p->t[i].quantized && q->fam->wants_prepass && q->fam->wants_prepass(q->p, i);
}

static mk_status q_observe(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n64)
{
    mk_qcons *q = c->impl;
    size_t n = (size_t)n64;
    const float *x;
    MK_TRY(prepare(q, i, elem0, v, n, &x));
    return q->fam->observe(q, i, elem0, x, n);
}

static mk_status q_observe_end(mk_consumer *c, size_t i)
{
    mk_qcons *q = c->impl;
    return q->fam->observe_end(q, i);
}

static const mk_consumer_ops q_ops = {
    .align = q_align,
    .raw_ok = q_raw_ok,
    .begin = q_begin,
    .rows = q_rows,
    .raw = q_raw,
    .end = q_end,
    .is_done = q_is_done,
    .close = q_close,
    .wants_prepass = q_wants_prepass,
    .observe = q_observe,
    .observe_end = q_observe_end,
    .takes_raw = q_takes_raw,
    .rows_raw = q_rows_raw,
};

mk_status mk_quant_consumer(mk_consumer *c, mk_sink *sink, const mk_qplan *p, bool values_exact, bool allow_overflow)
{
    mk_qcons *q = mk_calloc(1, sizeof *q);
    if (!q) return MK_ERR_NOMEM;
    q->sink = sink;
    q->p = p;
    q->fam = p->o.fam;
    q->values_exact = values_exact;
    q->allow_overflow = allow_overflow;
    q->st = mk_calloc(p->n ? p->n : 1, sizeof *q->st);
    q->stats = mk_calloc(p->n ? p->n : 1, sizeof *q->stats);
    q->nthreads = max_threads();
    q->scr = mk_calloc((size_t)q->nthreads, sizeof *q->scr);
    c->ops = &q_ops;
    c->impl = q;
    if (!q->st || !q->stats || !q->scr) {
        q_close(c);
        return MK_ERR_NOMEM;
    }
    return MK_OK;
}

const mk_qstats *mk_quant_stats(mk_consumer *c, size_t i)
{
    mk_qcons *q = c->impl;
    return &q->stats[i];
}
