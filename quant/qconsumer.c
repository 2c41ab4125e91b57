/* qconsumer.c - see quant.h: the quantizing consumer. Each rows() call quantizes one chunk
 * of whole rows (aligned to the format's block), writes its bytes at their final offsets,
 * and records the chunk's error sums; end() writes what needs the whole tensor (nested
 * absmax, constant maps, the JSON blob, shapes) and reduces the statistics in element
 * order, so the figures do not depend on the thread count. */
#include "bnb.h"
#include "ct.h"
#include "quant.h"
#include "search.h"
#include "qvec.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
static int thread_num(void) { return omp_get_thread_num(); }
static int max_threads(void) { return omp_get_max_threads(); }
#else
static int thread_num(void) { return 0; }
static int max_threads(void) { return 1; }
#endif

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
    uint64_t nb;               /* bnb 4-bit blocks */
    float *absmax;             /* double quant: f32 block absmax [nb] */
    bool observed;             /* the prepass filled absmax (or the fp8 tensor absmax) */
    bool dq_ready;             /* nested codes and decoded absmax are known */
    uint8_t *dq_q;             /* [nb] */
    float *dq_nested;          /* [ceil(nb / 256)] */
    float *dq_absmax;          /* decoded absmax [nb] */
    float dq_offset;
    float *blk;                /* double quant without a prepass: 4 sums per block */
    float tensor_absmax;       /* fp8 per tensor */
    float fp8_scale;
} qstate;

/* Per-thread scratch buffers, reused across chunks (fresh allocations of this size would
 * be fresh zeroed pages every time). */
enum { SCR_CODES, SCR_AUX, SCR_XH, SCR_SCALES, SCR_ZP, SCR_BYTES, SCR_ROUND, SCR_N };
typedef struct qscratch {
    void *p[SCR_N];
    size_t n[SCR_N];
} qscratch;

typedef struct qcons {
    mk_sink *sink;
    const mk_qplan *p;
    bool values_exact, allow_overflow;
    qstate **st;               /* [n] */
    mk_qstats *stats;          /* [n] */
    int nthreads;
    qscratch *scr;             /* [nthreads] */
} qcons;

/* A buffer of at least `bytes` for this thread's use until its next call with `slot`. */
static void *scratch(qcons *q, int slot, size_t bytes)
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

enum { BLK_E, BLK_C, BLK_V, BLK_M }; /* sum (x - v a)^2, sum (x - v a) v, sum v^2, max |x - v a| */

static bool is_dq(const qcons *q, size_t i) { return q->p->t[i].kind == MK_QK_BNB4 && q->p->o.double_quant; }
static bool is_fp8_tensor(const qcons *q, size_t i) { return q->p->t[i].kind == MK_QK_CT_FP8 && q->p->o.per_tensor; }

static mk_status put(qcons *q, size_t out, uint64_t off, const void *data, uint64_t len)
{
    return q->sink->ops->write(q->sink, out, off, data, len);
}

/* ---- statistics ------------------------------------------------------------------------- */

static mk_status add_rec(qstate *s, uint64_t e0, double sx2, double se2, float maxe)
{
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

/* A finite value that overflows dtype t (e.g. 70000 into F16) is an error naming it. */
static mk_status check_overflow(const qcons *q, const char *name, mk_dtype t, uint64_t e0, const float *v, size_t n)
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
 * first: quantizing inside a merge gives the bytes of merging, then quantizing. */
static mk_status round_in(qcons *q, const mk_tensor_info *t, uint64_t e0, const float *v, size_t n, float **out)
{
    *out = NULL;
    if (q->values_exact || t->dtype == MK_F32) return MK_OK;
    MK_TRY(check_overflow(q, t->name, t->dtype, e0, v, n));
    float *b = scratch(q, SCR_ROUND, n * sizeof *b);
    if (!b) return MK_ERR_NOMEM;
    if (t->dtype == MK_BF16) {
        for (size_t i = 0; i < n; i++) b[i] = mk_bf16_to_f32(mk_f32_to_bf16(v[i]));
    } else {
        for (size_t i = 0; i < n; i++) b[i] = mk_f16_to_f32(mk_f32_to_f16(v[i]));
    }
    *out = b;
    return MK_OK;
}

/* ---- per format ------------------------------------------------------------------------------ */

static mk_status rows_bnb4(qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qtensor *qt = &q->p->t[i];
    qstate *s = q->st[i];
    const unsigned B = q->p->o.block;
    const mk_bnb4_type ty = q->p->o.fmt == MK_QF_NF4 ? MK_BNB_NF4 : MK_BNB_FP4;
    const size_t nb = (size_t)mk_bnb_nblocks(n, B);
    const uint64_t b0 = e0 / B;
    uint8_t *packed = scratch(q, SCR_CODES, (n + 1) / 2);
    float *am = scratch(q, SCR_AUX, nb * sizeof *am);
    if (!packed || !am) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    bool sums = is_dq(q, i) && !s->dq_ready; /* double quant inside a merge */
    mk_bnb4_quantize(ty, B, x, n, am, packed, is_dq(q, i) && s->dq_ready ? s->dq_absmax + b0 : NULL, sums ? NULL : &e);
    MK_TRY(put(q, qt->out0, e0 / 2, packed, (n + 1) / 2));
    if (!is_dq(q, i)) {
        MK_TRY(put(q, qt->out0 + 1, b0 * 4, am, nb * 4));
    } else {
        memcpy(s->absmax + b0, am, nb * sizeof *am);
    }
    if (!sums) return add_rec(s, e0, e.sx2, e.se2, e.maxe);
    /* the nested absmax is known only at the end: keep per-block sums for the correction */
    float *v = scratch(q, SCR_XH, n * sizeof *v);
    if (!v) return MK_ERR_NOMEM;
    mk_bnb4_codes(ty, packed, e0, n, v);
    double sx2 = 0;
    for (size_t b = 0; b < nb; b++) {
        float se = 0, sc = 0, sv2 = 0, m = 0, a = am[b];
        for (size_t j = b * B; j < (b + 1) * B && j < n; j++) {
            float d = x[j] - v[j] * a;
            se += d * d;
            sc += d * v[j];
            sv2 += v[j] * v[j];
            m = fabsf(d) > m ? fabsf(d) : m;
            sx2 += (double)x[j] * x[j];
        }
        float *k = s->blk + 4 * (b0 + b);
        k[BLK_E] = se;
        k[BLK_C] = sc;
        k[BLK_V] = sv2;
        k[BLK_M] = m;
    }
    return add_rec(s, e0, sx2, 0, 0);
}

static mk_status rows_bnb8(qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qtensor *qt = &q->p->t[i];
    const size_t cols = (size_t)qt->cols, rows = n / cols;
    for (size_t j = 0; j < n; j++)
        if (fabsf(x[j]) >= 65520.0f) /* rounds to Inf in f16 */
            return mk_error(MK_ERR_NUMERIC, "tensor %s: value %g at element %llu overflows float16, which LLM.int8 quantizes from",
                            q->p->in[i].name, (double)x[j], (unsigned long long)(e0 + j));
    int8_t *cq = scratch(q, SCR_CODES, n);
    float *scb = scratch(q, SCR_SCALES, rows * sizeof *scb);
    if (!cq || !scb) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    mk_bnb_int8_quantize(x, rows, cols, cq, scb, &e);
    MK_TRY(put(q, qt->out0, e0, cq, n));
    MK_TRY(put(q, qt->out0 + 1, e0 / cols * 4, scb, rows * 4));
    return add_rec(q->st[i], e0, e.sx2, e.se2, e.maxe);
}

static mk_status rows_ct_int(qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qtensor *qt = &q->p->t[i];
    const mk_ct_int a = {MK_QFORMATS[q->p->o.fmt].bits, q->p->o.asym, qt->wdtype};
    const size_t cols = (size_t)qt->cols, rows = n / cols, group = (size_t)qt->group, G = cols / group;
    const size_t per = 32 / a.bits, W = (cols * a.bits + 31) / 32, r0 = (size_t)(e0 / cols);
    const unsigned es = mk_dtype_size(qt->wdtype);
    uint32_t *words = scratch(q, SCR_AUX, rows * W * 4 + (rows + per) / per * G * 4);
    int8_t *codes = scratch(q, SCR_CODES, cols);
    float *scales = scratch(q, SCR_SCALES, rows * G * sizeof *scales);
    int32_t *zps = scratch(q, SCR_ZP, rows * G * sizeof *zps);
    void *sbytes = scratch(q, SCR_BYTES, rows * G * es);
    if (!words || !codes || !scales || !zps || !sbytes) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        for (size_t g = 0; g < G; g++) {
            const float *xg = x + r * cols + g * group;
            float sc;
            int32_t z;
            if (q->p->o.method == MK_QM_SEARCH) mk_search_int_qparams(&a, xg, group, &sc, &z);
            else mk_ct_int_qparams(&a, xg, group, &sc, &z);
            mk_ct_int_codes(&a, xg, group, sc, z, codes + g * group, &e);
            scales[r * G + g] = sc;
            zps[r * G + g] = z;
        }
        mk_ct_pack_row(a.bits, codes, cols, words + r * W);
    }
    MK_TRY(put(q, qt->out0, (uint64_t)r0 * W * 4, words, rows * W * 4));
    mk_dtype_info(qt->wdtype)->from_f32(scales, sbytes, rows * G);
    MK_TRY(put(q, qt->out0 + 1, (uint64_t)r0 * G * es, sbytes, rows * G * es));
    if (a.asym) {
        /* zero points packed along rows: the chunk starts on a word row (align) */
        size_t wr = (rows + per - 1) / per;
        uint32_t *zw = words + rows * W;
        for (size_t k = 0; k < wr; k++) {
            size_t nr = rows - k * per < per ? rows - k * per : per;
            mk_ct_pack_zp(a.bits, zps + k * per * G, nr, G, zw + k * G);
        }
        MK_TRY(put(q, qt->out0 + 3, (uint64_t)(r0 / per) * G * 4, zw, wr * G * 4));
    }
    return add_rec(q->st[i], e0, e.sx2, e.se2, e.maxe);
}

static mk_status rows_ct_fp8(qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qtensor *qt = &q->p->t[i];
    const mk_ct_fp8 a = {q->p->o.fmt == MK_QF_FP8_E5M2, qt->wdtype};
    const size_t cols = (size_t)qt->cols, rows = n / cols;
    const unsigned es = mk_dtype_size(qt->wdtype);
    uint8_t *cq = scratch(q, SCR_CODES, n);
    float *scales = scratch(q, SCR_SCALES, rows * sizeof *scales);
    void *sbytes = scratch(q, SCR_BYTES, rows * es);
    if (!cq || !scales || !sbytes) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float sc;
        if (q->p->o.per_tensor) {
            sc = q->st[i]->fp8_scale;
        } else {
            sc = mk_ct_fp8_scale(&a, mk_ct_absmax(xr, cols));
        }
        scales[r] = sc;
        mk_ct_fp8_quantize(&a, xr, cols, sc, cq + r * cols, &e);
    }
    MK_TRY(put(q, qt->out0, e0, cq, n));
    if (!q->p->o.per_tensor) {
        mk_dtype_info(qt->wdtype)->from_f32(scales, sbytes, rows);
        MK_TRY(put(q, qt->out0 + 1, e0 / cols * es, sbytes, rows * es));
    }
    return add_rec(q->st[i], e0, e.sx2, e.se2, e.maxe);
}

/* ---- consumer ops ----------------------------------------------------------------------------- */

static uint64_t q_align(mk_consumer *c, const mk_tensor_info *t)
{
    qcons *q = c->impl;
    long i = mk_name_index_find(&q->p->index, t->name);
    if (i < 0) return 1;
    const mk_qtensor *qt = &q->p->t[i];
    switch (qt->kind) {
    case MK_QK_BNB4: return q->p->o.block;
    case MK_QK_CT_INT: return q->p->o.asym ? (32 / MK_QFORMATS[q->p->o.fmt].bits) * qt->cols : 1;
    default: return 1;
    }
}

static bool q_raw_ok(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype src)
{
    qcons *q = c->impl;
    (void)t;
    return q->p->t[i].kind == MK_QK_KEEP && q->p->out[q->p->t[i].out0].dtype == src;
}

static void state_free(qstate *s)
{
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s->recs);
    free(s->absmax);
    free(s->dq_q);
    free(s->dq_nested);
    free(s->dq_absmax);
    free(s->blk);
    free(s);
}

static mk_status q_begin(mk_consumer *c, size_t i, const mk_tensor_info *t)
{
    qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    if (t->numel != q->p->in[i].numel) MK_BUG("consumer tensor does not match the quantization plan");
    state_free(q->st[i]);
    qstate *s = q->st[i] = mk_calloc(1, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    mk_qstats *x = &q->stats[i];
    memset(x, 0, sizeof *x);
    x->quantized = qt->kind != MK_QK_KEEP;
    x->numel = qt->numel;
    x->in_bytes = q->p->in[i].nbytes;
    for (size_t k = 0; k < qt->nout; k++) x->out_bytes += q->p->out[qt->out0 + k].nbytes;
    if (is_dq(q, i)) {
        s->nb = mk_bnb_nblocks(qt->numel, q->p->o.block);
        s->absmax = mk_malloc((size_t)s->nb * sizeof *s->absmax);
        s->blk = mk_malloc((size_t)s->nb * 4 * sizeof *s->blk);
        if (!s->absmax || !s->blk) return MK_ERR_NOMEM;
    }
    return MK_OK;
}

static mk_status rows_keep(qcons *q, size_t i, uint64_t e0, const float *v, size_t n)
{
    const mk_tensor_info *t = &q->p->out[q->p->t[i].out0];
    MK_TRY(check_overflow(q, t->name, t->dtype, e0, v, n));
    unsigned es = mk_dtype_size(t->dtype);
    if (t->dtype == MK_F32) return put(q, q->p->t[i].out0, e0 * 4, v, n * 4);
    void *buf = scratch(q, SCR_BYTES, n * es);
    if (!buf) return MK_ERR_NOMEM;
    mk_dtype_info(t->dtype)->from_f32(v, buf, n);
    return put(q, q->p->t[i].out0, e0 * es, buf, n * es);
}

static mk_status q_rows(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n64)
{
    qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    size_t n = (size_t)n64;
    if (qt->kind == MK_QK_KEEP) return rows_keep(q, i, elem0, v, n);
    float *rounded;
    MK_TRY(round_in(q, &q->p->in[i], elem0, v, n, &rounded));
    const float *x = rounded ? rounded : v;
    mk_status st = check_finite(&q->p->in[i], elem0, x, n);
    if (st == MK_OK) {
        switch (qt->kind) {
        case MK_QK_BNB4: st = rows_bnb4(q, i, elem0, x, n); break;
        case MK_QK_BNB8: st = rows_bnb8(q, i, elem0, x, n); break;
        case MK_QK_CT_INT: st = rows_ct_int(q, i, elem0, x, n); break;
        case MK_QK_CT_FP8: st = rows_ct_fp8(q, i, elem0, x, n); break;
        default: MK_BUG("unknown quantization kind");
        }
    }
    return st;
}

static mk_status q_raw(mk_consumer *c, size_t i, uint64_t off, const void *data, uint64_t len)
{
    qcons *q = c->impl;
    return put(q, q->p->t[i].out0, off, data, len);
}

/* Nested quantization of the block absmax (once the whole array is known). */
static mk_status dq_compute(qcons *q, size_t i)
{
    qstate *s = q->st[i];
    const mk_qtensor *qt = &q->p->t[i];
    size_t nb = (size_t)s->nb, nn = (nb + MK_BNB_NESTED_BLOCK - 1) / MK_BNB_NESTED_BLOCK;
    s->dq_q = mk_malloc(nb ? nb : 1);
    s->dq_nested = mk_malloc((nn ? nn : 1) * sizeof *s->dq_nested);
    s->dq_absmax = mk_malloc((nb ? nb : 1) * sizeof *s->dq_absmax);
    if (!s->dq_q || !s->dq_nested || !s->dq_absmax) return MK_ERR_NOMEM;
    s->dq_offset = qt->has_offset ? qt->offset : mk_bnb_absmax_mean(s->absmax, nb);
    mk_bnb_nested_quantize(s->absmax, nb, s->dq_offset, s->dq_q, s->dq_nested);
    mk_bnb_nested_dequant(s->dq_q, s->dq_nested, s->dq_offset, 0, nb, s->dq_absmax);
    s->dq_ready = true;
    return MK_OK;
}

static mk_status end_bnb4(qcons *q, size_t i)
{
    const mk_qtensor *qt = &q->p->t[i];
    qstate *s = q->st[i];
    const mk_bnb4_type ty = q->p->o.fmt == MK_QF_NF4 ? MK_BNB_NF4 : MK_BNB_FP4;
    MK_TRY(put(q, qt->out0 + 2, 0, mk_bnb4_code[ty], 64));
    size_t json_out = qt->out0 + 3;
    float offset = 0;
    if (is_dq(q, i)) {
        bool had_prepass = s->dq_ready;
        if (!had_prepass) MK_TRY(dq_compute(q, i));
        size_t nb = (size_t)s->nb;
        MK_TRY(put(q, qt->out0 + 1, 0, s->dq_q, nb));
        MK_TRY(put(q, qt->out0 + 3, 0, s->dq_nested, q->p->out[qt->out0 + 3].nbytes));
        MK_TRY(put(q, qt->out0 + 4, 0, mk_bnb_dynamic_map, 1024));
        json_out = qt->out0 + 5;
        offset = s->dq_offset;
        if (!had_prepass) {
            /* exact sums of squares from the per-block ones; the max error becomes a bound */
            double se2 = 0;
            float mb = 0;
            for (size_t b = 0; b < nb; b++) {
                const float *k = s->blk + 4 * b;
                double d = (double)s->absmax[b] - s->dq_absmax[b];
                se2 += k[BLK_E] + 2 * d * k[BLK_C] + d * d * k[BLK_V];
                float m = k[BLK_M] + (float)fabs(d);
                mb = m > mb ? m : mb;
            }
            if (s->nrec) {
                s->recs[0].se2 = se2 < 0 ? 0 : se2;
                s->recs[0].maxe = mb;
            }
            q->stats[i].max_err_bound = true;
        }
    }
    uint64_t len = q->p->out[json_out].nbytes;
    char *j = mk_qplan_final_json(q->p, i, offset, (size_t)len);
    if (!j) return MK_ERR_NOMEM;
    mk_status st = put(q, json_out, 0, j, len);
    free(j);
    return st;
}

static mk_status q_end(mk_consumer *c, size_t i)
{
    qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    qstate *s = q->st[i];
    mk_status st = MK_OK;
    switch (qt->kind) {
    case MK_QK_BNB4: st = end_bnb4(q, i); break;
    case MK_QK_BNB8: {
        uint8_t zero = 0; /* weight_format "row" */
        st = put(q, qt->out0 + 2, 0, &zero, 1);
        break;
    }
    case MK_QK_CT_INT: {
        int64_t shape[2] = {(int64_t)qt->rows, (int64_t)qt->cols};
        st = put(q, qt->out0 + 2, 0, shape, 16);
        break;
    }
    case MK_QK_CT_FP8:
        if (q->p->o.per_tensor) {
            uint8_t b[4];
            mk_dtype_info(qt->wdtype)->from_f32(&s->fp8_scale, b, 1);
            st = put(q, qt->out0 + 1, 0, b, mk_dtype_size(qt->wdtype));
        }
        break;
    default: break;
    }
    if (st == MK_OK && qt->kind != MK_QK_KEEP) {
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
    state_free(s);
    q->st[i] = NULL;
    return st;
}

static bool q_is_done(mk_consumer *c, size_t i)
{
    qcons *q = c->impl;
    const mk_qtensor *qt = &q->p->t[i];
    if (!q->sink->ops->is_done) return false;
    for (size_t k = 0; k < qt->nout; k++)
        if (!q->sink->ops->is_done(q->sink, qt->out0 + k)) return false;
    return true;
}

static void q_close(mk_consumer *c)
{
    qcons *q = c->impl;
    if (!q) return;
    for (size_t i = 0; i < q->p->n; i++) state_free(q->st[i]);
    for (int t = 0; q->scr && t < q->nthreads; t++)
        for (int k = 0; k < SCR_N; k++) free(q->scr[t].p[k]);
    free(q->scr);
    free(q->st);
    free(q->stats);
    free(q);
    c->impl = NULL;
}

static const mk_consumer_ops q_ops = {q_align, q_raw_ok, q_begin, q_rows, q_raw, q_end, q_is_done, q_close};

mk_status mk_quant_consumer(mk_consumer *c, mk_sink *sink, const mk_qplan *p, bool values_exact, bool allow_overflow)
{
    qcons *q = mk_calloc(1, sizeof *q);
    if (!q) return MK_ERR_NOMEM;
    q->sink = sink;
    q->p = p;
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

/* ---- prepass ---------------------------------------------------------------------------------- */

bool mk_quant_wants_prepass(mk_consumer *c, size_t i)
{
    qcons *q = c->impl;
    return is_dq(q, i) || is_fp8_tensor(q, i);
}

mk_status mk_quant_observe(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n64)
{
    qcons *q = c->impl;
    qstate *s = q->st[i];
    size_t n = (size_t)n64;
    float *rounded;
    MK_TRY(round_in(q, &q->p->in[i], elem0, v, n, &rounded));
    const float *x = rounded ? rounded : v;
    mk_status st = check_finite(&q->p->in[i], elem0, x, n);
    if (st == MK_OK && is_dq(q, i)) {
        mk_bnb4_absmax(q->p->o.block, x, n, s->absmax + elem0 / q->p->o.block);
    } else if (st == MK_OK) {
        float am = mk_ct_absmax(x, n);
        pthread_mutex_lock(&s->mu);
        s->tensor_absmax = am > s->tensor_absmax ? am : s->tensor_absmax;
        pthread_mutex_unlock(&s->mu);
    }
    return st;
}

mk_status mk_quant_observe_end(mk_consumer *c, size_t i)
{
    qcons *q = c->impl;
    qstate *s = q->st[i];
    s->observed = true;
    if (is_dq(q, i)) return dq_compute(q, i);
    const mk_ct_fp8 a = {q->p->o.fmt == MK_QF_FP8_E5M2, q->p->t[i].wdtype};
    s->fp8_scale = mk_ct_fp8_scale(&a, s->tensor_absmax);
    return MK_OK;
}

const mk_qstats *mk_quant_stats(mk_consumer *c, size_t i)
{
    qcons *q = c->impl;
    return &q->stats[i];
}
