/* alloc.c - see alloc.h: the budgeted choice of a format per weight, the measuring pass and
 * the writer of the mixed checkpoint. The encoders, plans and config text are the formats'
 * own (a plan per chosen format, each quantizing only its weights); this file routes each
 * tensor to the plan that owns it and renumbers the stored tensors into one list.
 * Must not: know any format's bytes; it calls plans, consumers and fmt_ct.c's config writer.
 */
#include "alloc.h"
#include "qformat.h"
#include "qsource.h"
#include "../core/mk_parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAP_CHUNK 65536u /* values decoded at a time (whole rows) */

/* ======== the solver =================================================================== */

typedef struct hull {
    size_t n;     /* points on the lower convex hull, cheapest first */
    size_t *c;    /* their candidates */
    size_t at;    /* the current point */
} hull;

/* The candidates of weight i that no cheaper-or-equal candidate beats, reduced to their
 * lower convex hull in (bits, err); *cheapest is the cheapest available (ties: lower error,
 * then lower index). */
static void build_hull(const mk_alloc_problem *p, size_t i, size_t *order, hull *h)
{
    const double *b = p->bits + i * p->k, *e = p->err + i * p->k;
    size_t m = 0;
    for (size_t j = 0; j < p->k; j++)
        if (b[j] >= 0) order[m++] = j;
    for (size_t a = 1; a < m; a++) { /* insertion sort: by bits, then error, then index */
        size_t v = order[a], q = a;
        while (q > 0 && (b[order[q - 1]] > b[v] || (b[order[q - 1]] == b[v] && e[order[q - 1]] > e[v]))) {
            order[q] = order[q - 1];
            q--;
        }
        order[q] = v;
    }
    h->n = 0;
    h->at = 0;
    for (size_t a = 0; a < m; a++) {
        size_t v = order[a];
        if (h->n && e[v] >= e[h->c[h->n - 1]]) continue; /* dominated: more bits, no less error */
        while (h->n >= 2) { /* drop the last point while it lies on or above the chord */
            size_t u = h->c[h->n - 2], w = h->c[h->n - 1];
            double lhs = (e[u] - e[w]) * (b[v] - b[u]), rhs = (e[u] - e[v]) * (b[w] - b[u]);
            if (lhs <= rhs) h->n--;
            else break;
        }
        h->c[h->n++] = v;
    }
}

/* Single upgrades that fit, best error drop per bit first. */
static void fill(const mk_alloc_problem *p, size_t *choice, double budget, double *used)
{
    for (;;) {
        size_t bi = SIZE_MAX, bj = 0;
        double best_r = 0;
        for (size_t i = 0; i < p->n; i++) {
            const double *b = p->bits + i * p->k, *e = p->err + i * p->k;
            for (size_t j = 0; j < p->k; j++) {
                double db = b[j] - b[choice[i]], de = e[choice[i]] - e[j];
                if (b[j] < 0 || de <= 0 || *used + db > budget) continue;
                double r = db <= 0 ? INFINITY : de / db;
                if (bi == SIZE_MAX || r > best_r) bi = i, bj = j, best_r = r;
            }
        }
        if (bi == SIZE_MAX) return;
        *used += p->bits[bi * p->k + bj] - p->bits[bi * p->k + choice[bi]];
        choice[bi] = bj;
    }
}

/* The best pair of changes (weight a to ja, weight b to jb) that fits together and lowers the
 * total error; applied, and true, when there is one. */
static bool exchange(const mk_alloc_problem *p, size_t *choice, double budget, double *used)
{
    size_t ba = SIZE_MAX, bja = 0, bb = 0, bjb = 0;
    double best = 0;
    for (size_t a = 0; a < p->n; a++) {
        const double *b1 = p->bits + a * p->k, *e1 = p->err + a * p->k;
        for (size_t ja = 0; ja < p->k; ja++) {
            double db1 = b1[ja] - b1[choice[a]], gain = e1[choice[a]] - e1[ja];
            if (b1[ja] < 0 || gain <= best || *used + db1 <= budget) continue; /* an upgrade that does not fit alone */
            for (size_t b = 0; b < p->n; b++) {
                if (b == a) continue;
                const double *b2 = p->bits + b * p->k, *e2 = p->err + b * p->k;
                for (size_t jb = 0; jb < p->k; jb++) {
                    double db2 = b2[jb] - b2[choice[b]], net = gain - (e2[jb] - e2[choice[b]]);
                    if (b2[jb] < 0 || db2 >= 0 || *used + db1 + db2 > budget || net <= best) continue;
                    ba = a, bja = ja, bb = b, bjb = jb, best = net;
                }
            }
        }
    }
    if (ba == SIZE_MAX) return false;
    *used += p->bits[ba * p->k + bja] - p->bits[ba * p->k + choice[ba]] + p->bits[bb * p->k + bjb] - p->bits[bb * p->k + choice[bb]];
    choice[ba] = bja;
    choice[bb] = bjb;
    return true;
}

static double total_error(const mk_alloc_problem *p, const size_t *choice)
{
    double e = 0;
    for (size_t i = 0; i < p->n; i++) e += p->err[i * p->k + choice[i]];
    return e;
}

/* The best of: one weight moved to a cheaper candidate, then the freed bits refilled (fill);
 * applied, and true, when that lowers the total error. `tmp`: n entries of scratch. */
static bool release(const mk_alloc_problem *p, size_t *choice, double budget, double *used, size_t *tmp, size_t *best_c)
{
    double base = total_error(p, choice), best = base, best_used = *used;
    bool found = false;
    for (size_t i = 0; i < p->n; i++) {
        const double *b = p->bits + i * p->k;
        for (size_t j = 0; j < p->k; j++) {
            if (b[j] < 0 || b[j] >= b[choice[i]]) continue;
            memcpy(tmp, choice, p->n * sizeof *tmp);
            double u = *used + b[j] - b[choice[i]];
            tmp[i] = j;
            fill(p, tmp, budget, &u);
            double e = total_error(p, tmp);
            if (e < best * (1 - 1e-12)) {
                best = e;
                best_used = u;
                memcpy(best_c, tmp, p->n * sizeof *tmp);
                found = true;
            }
        }
    }
    if (!found) return false;
    memcpy(choice, best_c, p->n * sizeof *choice);
    *used = best_used;
    return true;
}

mk_status mk_alloc_solve(const mk_alloc_problem *p, double budget_bits, size_t *choice)
{
    if (!p->n) return MK_OK;
    hull *h = mk_calloc(p->n, sizeof *h);
    size_t *mem = mk_calloc(p->n * p->k + p->k, sizeof *mem);
    if (!h || !mem) {
        free(h);
        free(mem);
        return MK_ERR_NOMEM;
    }
    double used = 0, min_numel = 0;
    mk_status s = MK_OK;
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        h[i].c = mem + i * p->k;
        build_hull(p, i, mem + p->n * p->k, &h[i]);
        if (!h[i].n) s = mk_error(MK_ERR_USAGE, "weight %zu has no candidate format", i);
        else used += p->bits[i * p->k + h[i].c[0]];
        min_numel += (double)p->numel[i];
    }
    if (s == MK_OK && used > budget_bits)
        s = mk_error(MK_ERR_USAGE, "the budget is below the cheapest choice: at least %.4f bits per weight with these formats",
                     used / (min_numel ? min_numel : 1));
    /* greedy along the hulls: the step with the largest error drop per bit that fits */
    while (s == MK_OK) {
        size_t best = SIZE_MAX;
        double best_r = 0;
        for (size_t i = 0; i < p->n; i++) {
            if (h[i].at + 1 >= h[i].n) continue;
            size_t a = h[i].c[h[i].at], b = h[i].c[h[i].at + 1];
            double db = p->bits[i * p->k + b] - p->bits[i * p->k + a], de = p->err[i * p->k + a] - p->err[i * p->k + b];
            if (used + db > budget_bits) continue;
            double r = de / db;
            if (best == SIZE_MAX || r > best_r) best = i, best_r = r;
        }
        if (best == SIZE_MAX) break;
        size_t a = h[best].c[h[best].at], b = h[best].c[h[best].at + 1];
        used += p->bits[best * p->k + b] - p->bits[best * p->k + a];
        h[best].at++;
    }
    for (size_t i = 0; s == MK_OK && i < p->n; i++) choice[i] = h[i].c[h[i].at];
    /* fill: any single change that fits and lowers the error, best drop per bit first; then
     * exchanges: one weight up, another down, when that fits and lowers the total (the
     * budget left by the hull steps is spent; at most 64 rounds) */
    size_t *tmp = s == MK_OK ? mk_calloc(2 * p->n, sizeof *tmp) : NULL;
    if (s == MK_OK && !tmp) s = MK_ERR_NOMEM;
    for (int round = 0; s == MK_OK && round < 64; round++) {
        fill(p, choice, budget_bits, &used);
        if (!exchange(p, choice, budget_bits, &used) && !release(p, choice, budget_bits, &used, tmp, tmp + p->n)) break;
    }
    free(tmp);
    free(h);
    free(mem);
    return s;
}

/* ======== candidates ==================================================================== */

const char mk_alloc_default_formats[] = "int4,int4:scheme=asym,int8,fp8,nvfp4,mxfp4,mxfp8,keep";

/* One entry: NAME[:key[=value]]... */
static mk_status cand_parse(char *tok, mk_alloc_cand *c)
{
    memset(c, 0, sizeof *c);
    if (strlen(tok) >= sizeof c->name) return mk_error(MK_ERR_USAGE, "--formats: '%s' is too long", tok);
    snprintf(c->name, sizeof c->name, "%s", tok);
    if (!strcmp(tok, "keep")) {
        c->keep = true;
        return MK_OK;
    }
    char *save = NULL, *name = strtok_r(tok, ":", &save);
    const mk_qformat *f;
    MK_TRY(mk_qformat_lookup(name ? name : "", "--formats", &f));
    mk_qopts_init(&c->o, f);
    for (size_t k = 0; k < mk_qformat_nlayouts(f); k++)
        if (mk_ct_can_mix(f->layouts[k])) c->o.target = mk_qfamily_layout(f->layouts[k]);
    if (!c->o.target)
        return mk_error(MK_ERR_USAGE, "--formats: %s is not written in the compressed-tensors layout, so it cannot be mixed", f->name);
    if (mk_qformat_nlayouts(f) < 2) c->o.target = NULL;
    for (char *kv; (kv = strtok_r(NULL, ":", &save));) {
        char *eq = strchr(kv, '=');
        if (eq) *eq = 0;
        if (!mk_qsetting_find(kv) || !strcmp(kv, "target"))
            return mk_error(MK_ERR_USAGE, "--formats: %s: unknown setting '%s'", c->name, kv);
        MK_TRY(mk_qopts_set(&c->o, kv, eq ? eq + 1 : NULL, "--formats: "));
    }
    mk_status s = mk_qopts_resolve(&c->o, false);
    if (s != MK_OK) return mk_error_prefix(s, "--formats: %s", c->name);
    if (!mk_ct_can_mix(c->o.fam))
        return mk_error(MK_ERR_USAGE, "--formats: %s is not written in the compressed-tensors layout, so it cannot be mixed", c->name);
    return MK_OK;
}

mk_status mk_alloc_cands_parse(const char *spec, mk_alloc_cand *c, size_t *n)
{
    /* settings keep pointers into the text: one copy for the life of the program */
    char *s = mk_strdup(spec ? spec : mk_alloc_default_formats);
    if (!s) return MK_ERR_NOMEM;
    *n = 0;
    size_t nq = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MK_ALLOC_MAX_CANDS) return mk_error(MK_ERR_USAGE, "--formats: at most %d formats", MK_ALLOC_MAX_CANDS);
        MK_TRY(cand_parse(tok, &c[*n]));
        for (size_t k = 0; k < *n; k++)
            if (!strcmp(c[k].name, c[*n].name)) return mk_error(MK_ERR_USAGE, "--formats: %s is listed twice", c[k].name);
        nq += !c[*n].keep;
        (*n)++;
    }
    if (!nq) return mk_error(MK_ERR_USAGE, "--formats: name at least one format besides keep");
    return MK_OK;
}

/* ======== a sink that keeps nothing, and one that renumbers ============================== */

static mk_status null_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    (void)k, (void)i, (void)off, (void)d, (void)len;
    return MK_OK;
}

static mk_status null_done(mk_sink *k, size_t i)
{
    (void)k, (void)i;
    return MK_OK;
}

static const mk_sink_ops null_ops = {.write = null_write, .tensor_done = null_done};

typedef struct remap {
    mk_sink *to;
    const size_t *map; /* plan's stored index -> the output's */
} remap;

static mk_status remap_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    remap *r = k->impl;
    return r->to->ops->write(r->to, r->map[i], off, d, len);
}

static mk_status remap_done(mk_sink *k, size_t i)
{
    remap *r = k->impl;
    return r->to->ops->tensor_done(r->to, r->map[i]);
}

static bool remap_is_done(mk_sink *k, size_t i)
{
    remap *r = k->impl;
    return r->to->ops->is_done && r->to->ops->is_done(r->to, r->map[i]);
}

static const mk_sink_ops remap_ops = {.write = remap_write, .tensor_done = remap_done, .is_done = remap_is_done};

/* ======== a consumer over several plans' consumers ======================================= */

typedef struct tap tap; /* --sensitivity imatrix: what the measuring pass keeps (below) */
static mk_status tap_begin(tap *a, size_t m, const mk_tensor_info *ti);
static void tap_rows(tap *a, uint64_t e0, const float *v, uint64_t n);
static mk_status tap_end(tap *a, size_t m);

typedef struct multi {
    size_t nc;
    mk_consumer *c;     /* [nc], owned */
    const size_t *map;  /* the driver's tensor -> the plans' (NULL: the same) */
    const int *owner;   /* per plan tensor: the one consumer that writes it; NULL: all see it */
    tap *tap;           /* NULL, or the measuring pass's keeper of values and bytes */
} multi;

static size_t m_idx(const multi *m, size_t i) { return m->map ? m->map[i] : i; }
static bool m_to(const multi *m, size_t i, size_t k) { return !m->owner || m->owner[m_idx(m, i)] == (int)k; }

static uint64_t m_align(mk_consumer *c, const mk_tensor_info *t)
{
    multi *m = c->impl;
    uint64_t a = 1;
    for (size_t k = 0; k < m->nc; k++) { /* the tensor's consumers only: the name tells */
        uint64_t b = m->c[k].ops->align(&m->c[k], t);
        a = a / mk_gcd_u64(a, b) * b;
    }
    return a;
}

static bool m_raw_ok(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype src)
{
    multi *m = c->impl;
    if (!m->owner) return false;
    size_t k = (size_t)m->owner[m_idx(m, i)];
    return m->c[k].ops->raw_ok(&m->c[k], m_idx(m, i), t, src);
}

#define M_EACH(call)                                                                       \
    do {                                                                                   \
        multi *m = c->impl;                                                                \
        for (size_t k = 0; k < m->nc; k++)                                                 \
            if (m_to(m, i, k)) MK_TRY(m->c[k].ops->call);                                  \
        return MK_OK;                                                                      \
    } while (0)

static mk_status m_begin(mk_consumer *c, size_t i, const mk_tensor_info *t)
{
    tap *tp = ((multi *)c->impl)->tap;
    if (tp) MK_TRY(tap_begin(tp, i, t));
    M_EACH(begin(&m->c[k], m_idx(m, i), t));
}
static mk_status m_rows(mk_consumer *c, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    tap *tp = ((multi *)c->impl)->tap;
    if (tp) tap_rows(tp, e0, v, n);
    M_EACH(rows(&m->c[k], m_idx(m, i), e0, v, n));
}
static mk_status m_raw(mk_consumer *c, size_t i, uint64_t off, const void *d, uint64_t len)
{
    M_EACH(raw(&m->c[k], m_idx(m, i), off, d, len));
}
static mk_status m_end(mk_consumer *c, size_t i)
{
    multi *m = c->impl;
    for (size_t k = 0; k < m->nc; k++)
        if (m_to(m, i, k)) MK_TRY(m->c[k].ops->end(&m->c[k], m_idx(m, i)));
    return m->tap ? tap_end(m->tap, i) : MK_OK;
}

static bool m_wants(mk_consumer *c, size_t i)
{
    multi *m = c->impl;
    for (size_t k = 0; k < m->nc; k++)
        if (m_to(m, i, k) && m->c[k].ops->wants_prepass && m->c[k].ops->wants_prepass(&m->c[k], m_idx(m, i))) return true;
    return false;
}

#define M_PREPASS(call)                                                                    \
    do {                                                                                   \
        multi *m = c->impl;                                                                \
        for (size_t k = 0; k < m->nc; k++)                                                 \
            if (m_to(m, i, k) && m->c[k].ops->wants_prepass && m->c[k].ops->wants_prepass(&m->c[k], m_idx(m, i))) \
                MK_TRY(m->c[k].ops->call);                                                 \
        return MK_OK;                                                                      \
    } while (0)

static mk_status m_observe(mk_consumer *c, size_t i, uint64_t e0, const float *v, uint64_t n)
{
    M_PREPASS(observe(&m->c[k], m_idx(m, i), e0, v, n));
}
static mk_status m_observe_end(mk_consumer *c, size_t i) { M_PREPASS(observe_end(&m->c[k], m_idx(m, i))); }

static bool m_is_done(mk_consumer *c, size_t i)
{
    multi *m = c->impl;
    if (!m->owner) return false;
    size_t k = (size_t)m->owner[m_idx(m, i)];
    return m->c[k].ops->is_done && m->c[k].ops->is_done(&m->c[k], m_idx(m, i));
}

/* The sub-consumers stay the caller's (their statistics are read after the run). */
static void m_close(mk_consumer *c)
{
    free(c->impl);
    c->impl = NULL;
}

static const mk_consumer_ops multi_ops = {
    .align = m_align,
    .raw_ok = m_raw_ok,
    .begin = m_begin,
    .rows = m_rows,
    .raw = m_raw,
    .end = m_end,
    .is_done = m_is_done,
    .close = m_close,
    .wants_prepass = m_wants,
    .observe = m_observe,
    .observe_end = m_observe_end,
};

static mk_status multi_make(mk_consumer *out, mk_consumer *subs, size_t nc, const size_t *map, const int *owner, tap *tp)
{
    multi *m = mk_calloc(1, sizeof *m);
    if (!m) return MK_ERR_NOMEM;
    *m = (multi){nc, subs, map, owner, tp};
    out->ops = &multi_ops;
    out->impl = m;
    return MK_OK;
}

/* ======== plans ========================================================================== */

/* Plan of candidate c over every tensor, warnings silenced (the allocation reports what each
 * weight becomes), laid out after its offsets. `only`: the weights it keeps quantized (the
 * others become kept tensors); NULL: all it can. */
static mk_status cand_plan(mk_qplan *p, mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n,
                           const mk_alloc_cand *c, const char *skip, const bool *only, uint64_t chunk)
{
    mk_qopts o = c->o;
    o.skip = skip;
    int lvl = mk_log_get_level();
    mk_log_set_level(0);
    mk_status s = mk_qplan_init(p, &o, arch, in, n);
    mk_log_set_level(lvl);
    for (size_t i = 0; s == MK_OK && only && i < n; i++) {
        mk_qtensor *q = &p->t[i];
        if (!q->quantized || only[i]) continue;
        q->quantized = false;
        q->kept_why = "another format";
        p->n_quantized--;
        p->q_numel -= q->numel;
    }
    if (s == MK_OK) s = mk_qstream_offsets(src, idx, p, chunk);
    if (s == MK_OK) s = mk_qplan_layout(p);
    return s;
}

/* ======== importance-weighted error (--sensitivity imatrix) ============================== */

/* The stored tensors of the weight being measured, per candidate plan: a sink that keeps
 * the bytes of the tensors it has a buffer for (the others are dropped). */
typedef struct capture {
    const mk_qplan *p;
    unsigned char **buf; /* [p->n_out] */
} capture;

static mk_status cap_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    capture *c = k->impl;
    if (!c->buf[i]) return MK_OK;
    uint64_t nb = c->p->out[i].nbytes;
    if (off > nb || len > nb - off) MK_BUG("a write past the end of a stored tensor");
    memcpy(c->buf[i] + off, d, (size_t)len);
    return MK_OK;
}

static const mk_sink_ops cap_ops = {.write = cap_write, .tensor_done = null_done};

/* A source of one weight's stored tensors (its capture) with the plan's config.json: what
 * the dequantizing reader (qsource.h) decodes exactly as any reader of the checkpoint. */
typedef struct one_src {
    const capture *c;
    size_t out0;
    const char *config;
} one_src;

static mk_status one_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    one_src *m = s->impl;
    if (off > s->tensors[i].nbytes || len > s->tensors[i].nbytes - off) MK_BUG("a read past the end of a stored tensor");
    memcpy(dst, m->c->buf[m->out0 + i] + off, (size_t)len);
    return MK_OK;
}

static const void *one_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    one_src *m = s->impl;
    return off <= s->tensors[i].nbytes && len <= s->tensors[i].nbytes - off ? m->c->buf[m->out0 + i] + off : NULL;
}

static mk_status one_aux(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    one_src *m = s->impl;
    *data = NULL;
    *len = 0;
    if (strcmp(name, "config.json") != 0 || strlen(m->config) > cap) return MK_OK;
    *data = mk_strdup(m->config);
    *len = strlen(m->config);
    return *data ? MK_OK : MK_ERR_NOMEM;
}

static void one_close(mk_source *s)
{
    mk_name_index_free(&s->index);
    free(s->tensors);
    free(s);
}

static const mk_source_ops one_ops = {.read = one_read, .borrow = one_borrow, .aux_read = one_aux, .close = one_close};

/* The weighted error of blocks of rows (decoded a block at a time, a buffer per thread). */
typedef struct werr_job {
    mk_source *d;
    size_t di;
    const float *x, *imp;
    uint64_t cols, rows, step;
    uint64_t rs; /* imp's row stride: 0 (an importance per column), cols (one per element) */
    double *part; /* [blocks] */
} werr_job;

static void *werr_tls(void *ctx)
{
    const werr_job *j = ctx;
    float *buf = mk_malloc((size_t)(j->step * j->cols) * sizeof *buf);
    if (!buf) mk_error(MK_ERR_NOMEM, "out of memory for a block of decoded rows");
    return buf;
}

static mk_status werr_block(void *ctx, uint64_t b, void *tls)
{
    werr_job *j = ctx;
    float *dec = tls;
    uint64_t r0 = b * j->step, nr = j->rows - r0 < j->step ? j->rows - r0 : j->step;
    MK_TRY(j->d->ops->read(j->d, j->di, r0 * j->cols * 4, nr * j->cols * 4, dec));
    double sum = 0;
    for (uint64_t r = 0; r < nr; r++) {
        const float *a = j->x + (r0 + r) * j->cols, *q = dec + r * j->cols;
        double row = 0;
        for (uint64_t c = 0; c < j->cols; c++) {
            double e = (double)a[c] - (double)q[c];
            row += (double)j->imp[(r0 + r) * j->rs + c] * e * e;
        }
        sum += row;
    }
    j->part[b] = sum;
    return MK_OK;
}

/* sum over the rows of weight i of imp[c] (x - q)^2 (per_elem: imp[r][c]), q decoded from
 * plan p's stored bytes in cap; x: the values the consumer encoded. */
static mk_status weighted_error(const mk_qplan *p, const capture *cap, const char *config, size_t i, const float *x, const float *imp,
                                bool per_elem, double *out)
{
    const mk_qtensor *q = &p->t[i];
    const mk_tensor_info *w = &p->in[i];
    mk_source *s = mk_calloc(1, sizeof *s);
    one_src *m = mk_calloc(1, sizeof *m);
    mk_tensor_info *ti = mk_calloc(q->nout ? q->nout : 1, sizeof *ti);
    if (!s || !m || !ti) {
        free(s), free(m), free(ti);
        return MK_ERR_NOMEM;
    }
    *m = (one_src){cap, q->out0, config};
    memcpy(ti, p->out + q->out0, q->nout * sizeof *ti);
    *s = (mk_source){.ops = &one_ops, .path = w->name, .kind = "measured", .n_tensors = q->nout, .tensors = ti, .impl = m};
    mk_status st = mk_name_index_build(&s->index, ti, q->nout, NULL);
    mk_source *d = NULL;
    mk_qinfo qi;
    if (st == MK_OK) st = mk_qsource_open(s, &d, &qi);
    long di = st == MK_OK ? mk_source_find(d, w->name) : -1;
    if (st == MK_OK && (!qi.quantized || di < 0 || d->tensors[di].dtype != MK_F32 || d->tensors[di].numel != w->numel))
        st = mk_error(MK_ERR_MISMATCH, "%s: its stored tensors do not decode to the weight", w->name);
    uint64_t cols = (uint64_t)w->shape[w->ndim - 1], rows = cols ? w->numel / cols : 0;
    werr_job j = {d, st == MK_OK ? (size_t)di : 0, x, imp, cols, rows, CAP_CHUNK / cols ? CAP_CHUNK / cols : 1, per_elem ? cols : 0, NULL};
    uint64_t nb = (rows + j.step - 1) / j.step;
    j.part = st == MK_OK ? mk_calloc(nb ? nb : 1, sizeof *j.part) : NULL;
    if (st == MK_OK && !j.part) st = MK_ERR_NOMEM;
    if (st == MK_OK) st = mk_parallel_chunks(nb, werr_block, &j, werr_tls, free);
    double sum = 0;
    for (uint64_t b = 0; st == MK_OK && b < nb; b++) sum += j.part[b]; /* in block order: any thread count */
    free(j.part);
    if (d) mk_source_close(d); /* closes s too */
    else one_close(s);
    free(m);
    *out = sum;
    return st;
}

/* What the measuring consumer (multi) keeps for the weights with importances: the values it
 * is given and every plan's stored bytes, decoded at the end of each weight into the weighted
 * error of every plan. Indices are the table's. */
struct tap {
    const mk_alloc_table *t;
    const float *const *imp;  /* per logical tensor */
    bool per_elem;            /* imp holds one weight per element, not per column */
    const mk_qplan *plans;
    const size_t *pk;         /* plan -> candidate */
    size_t np;
    capture cap[MK_ALLOC_MAX_CANDS];
    char *config[MK_ALLOC_MAX_CANDS];
    float *x;                 /* the current weight's values */
    double *werr;             /* [t->n * t->k] */
};

static void tap_drop(tap *a)
{
    for (size_t j = 0; j < a->np; j++)
        for (size_t o = 0; a->cap[j].buf && o < a->plans[j].n_out; o++) {
            free(a->cap[j].buf[o]);
            a->cap[j].buf[o] = NULL;
        }
    free(a->x);
    a->x = NULL;
}

/* Weight m begins: room for its values and every plan's stored bytes when it has importances. */
static mk_status tap_begin(tap *a, size_t m, const mk_tensor_info *ti)
{
    size_t i = a->t->w[m];
    tap_drop(a);
    if (!a->imp[i]) return MK_OK;
    a->x = mk_malloc((size_t)ti->numel * sizeof *a->x + 1);
    if (!a->x) return MK_ERR_NOMEM;
    for (size_t j = 0; j < a->np; j++) {
        const mk_qtensor *q = &a->plans[j].t[i];
        for (size_t o = 0; q->quantized && o < q->nout; o++)
            if (!(a->cap[j].buf[q->out0 + o] = mk_calloc(1, (size_t)a->plans[j].out[q->out0 + o].nbytes + 1))) return MK_ERR_NOMEM;
    }
    return MK_OK;
}

/* Values [e0, e0 + n) of the current weight (chunks on several threads: disjoint ranges). */
static void tap_rows(tap *a, uint64_t e0, const float *v, uint64_t n)
{
    if (a->x) memcpy(a->x + e0, v, (size_t)n * sizeof *v);
}

/* Weight m has ended (every plan has written it): its weighted error in each plan. */
static mk_status tap_end(tap *a, size_t m)
{
    size_t i = a->t->w[m];
    for (size_t j = 0; a->x && j < a->np; j++) {
        if (!a->plans[j].t[i].quantized) continue;
        MK_TRY(weighted_error(&a->plans[j], &a->cap[j], a->config[j], i, a->x, a->imp[i], a->per_elem, &a->werr[m * a->t->k + a->pk[j]]));
    }
    tap_drop(a);
    return MK_OK;
}

static void tap_free(tap *a)
{
    tap_drop(a);
    for (size_t j = 0; j < a->np; j++) {
        free(a->cap[j].buf);
        free(a->config[j]);
    }
    free(a->werr);
}

static mk_status tap_make(tap *a, const mk_alloc_table *t, const float *const *imp, const mk_qplan *plans, const size_t *pk, size_t np)
{
    *a = (tap){.t = t, .imp = imp, .plans = plans, .pk = pk, .np = np};
    a->werr = mk_calloc(t->n * t->k, sizeof *a->werr);
    if (!a->werr) return MK_ERR_NOMEM;
    for (size_t j = 0; j < np; j++) {
        a->cap[j].p = &plans[j];
        a->cap[j].buf = mk_calloc(plans[j].n_out ? plans[j].n_out : 1, sizeof *a->cap[j].buf);
        char *qc = mk_qplan_config_json(&plans[j]);
        a->config[j] = qc ? mk_asprintf("{\"quantization_config\": %s}", qc) : NULL;
        free(qc);
        if (!a->cap[j].buf || !a->config[j]) return MK_ERR_NOMEM;
    }
    return MK_OK;
}

/* ======== measuring ========================================================================= */

void mk_alloc_table_free(mk_alloc_table *t)
{
    free(t->w);
    free(t->bits);
    free(t->se2);
    free(t->err);
    free(t->sens);
    free(t->numel);
    free(t->sx2);
    memset(t, 0, sizeof *t);
}

static mk_status measure(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n, const mk_alloc_cand *c,
                         size_t nc, const char *skip, const float *const *imp, bool per_elem, mk_alloc_table *t);

mk_status mk_alloc_measure(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n,
                           const mk_alloc_cand *c, size_t nc, const char *skip, const float *const *imp, mk_alloc_table *t)
{
    return measure(src, idx, arch, in, n, c, nc, skip, imp, false, t);
}

mk_status mk_alloc_measure_elem(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n,
                                const mk_alloc_cand *c, size_t nc, const char *skip, const float *const *wt, mk_alloc_table *t)
{
    return measure(src, idx, arch, in, n, c, nc, skip, wt, true, t);
}

static mk_status measure(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in, size_t n, const mk_alloc_cand *c,
                         size_t nc, const char *skip, const float *const *imp, bool per_elem, mk_alloc_table *t)
{
    memset(t, 0, sizeof *t);
    mk_qplan plans[MK_ALLOC_MAX_CANDS];
    mk_consumer cons[MK_ALLOC_MAX_CANDS];
    size_t pk[MK_ALLOC_MAX_CANDS]; /* plan -> candidate */
    size_t np = 0;
    memset(plans, 0, sizeof plans);
    memset(cons, 0, sizeof cons);
    mk_sink null = {.ops = &null_ops};
    mk_status s = MK_OK;
    for (size_t k = 0; k < nc && s == MK_OK; k++) {
        if (c[k].keep) continue;
        pk[np] = k;
        s = cand_plan(&plans[np++], src, idx, arch, in, n, &c[k], skip, NULL, 0);
    }
    /* the quantizable weights: what some candidate quantizes or keeps only for its shape */
    bool *is_w = s == MK_OK ? mk_calloc(n ? n : 1, sizeof *is_w) : NULL;
    if (!is_w && s == MK_OK) s = MK_ERR_NOMEM;
    for (size_t i = 0; s == MK_OK && i < n; i++) {
        for (size_t j = 0; j < np; j++) is_w[i] |= plans[j].t[i].quantized || plans[j].t[i].kept_for_shape;
        t->n += is_w[i];
        t->params += in[i].numel;
        if (!is_w[i]) t->other_bits += in[i].nbytes * 8;
    }
    t->n_in = n;
    t->k = nc;
    size_t nk = (t->n ? t->n : 1) * nc;
    if (s == MK_OK) {
        t->w = mk_calloc(t->n ? t->n : 1, sizeof *t->w);
        t->bits = mk_calloc(nk, sizeof *t->bits);
        t->se2 = mk_calloc(nk, sizeof *t->se2);
        t->err = mk_calloc(nk, sizeof *t->err);
        t->sens = mk_calloc(t->n ? t->n : 1, sizeof *t->sens);
        t->numel = mk_calloc(t->n ? t->n : 1, sizeof *t->numel);
        t->sx2 = mk_calloc(t->n ? t->n : 1, sizeof *t->sx2);
        if (!t->w || !t->bits || !t->se2 || !t->err || !t->sens || !t->numel || !t->sx2) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK && !t->n) s = mk_error(MK_ERR_USAGE, "the model has no weight matrix to quantize");
    size_t *sidx = s == MK_OK ? mk_calloc(t->n, sizeof *sidx) : NULL;
    mk_tensor_info *sub = s == MK_OK ? mk_calloc(t->n, sizeof *sub) : NULL;
    if (s == MK_OK && (!sidx || !sub)) s = MK_ERR_NOMEM;
    for (size_t i = 0, m = 0; s == MK_OK && i < n; i++) {
        if (!is_w[i]) continue;
        t->w[m] = i;
        sidx[m] = idx[i];
        sub[m] = in[i];
        t->numel[m] = in[i].numel;
        m++;
    }
    for (size_t m = 0; s == MK_OK && imp && m < t->n; m++)
        if (!imp[t->w[m]]) s = mk_error(MK_ERR_MISMATCH, "no importances for tensor %s", in[t->w[m]].name);
    /* with importances, each plan's bytes are kept for the tap to decode */
    tap tp = {0};
    mk_sink caps[MK_ALLOC_MAX_CANDS];
    size_t made = 0;
    if (s == MK_OK && imp) s = tap_make(&tp, t, imp, plans, pk, np);
    tp.per_elem = per_elem;
    for (size_t j = 0; j < np; j++) caps[j] = imp ? (mk_sink){.ops = &cap_ops, .impl = &tp.cap[j]} : null;
    for (; s == MK_OK && made < np; made++) s = mk_quant_consumer(&cons[made], &caps[made], &plans[made], true, false);
    mk_consumer mc = {0};
    if (s == MK_OK) s = multi_make(&mc, cons, np, t->w, NULL, imp ? &tp : NULL);
    mk_qstream_opts qo = {0, NULL, NULL};
    if (s == MK_OK) s = mk_qstream_run(src, sidx, sub, t->n, &mc, &qo);
    if (mc.impl) mc.ops->close(&mc);
    for (size_t m = 0; s == MK_OK && m < t->n; m++) {
        size_t i = t->w[m];
        t->sens[m] = 1;
        for (size_t k = 0; k < nc; k++) {
            double *b = &t->bits[m * nc + k], *e = &t->se2[m * nc + k];
            if (c[k].keep) {
                *b = (double)in[i].nbytes * 8;
                *e = 0;
                continue;
            }
            size_t j = 0;
            while (pk[j] != k) j++;
            const mk_qtensor *q = &plans[j].t[i];
            if (!q->quantized) {
                *b = -1;
                *e = 0;
                continue;
            }
            uint64_t by = 0;
            for (size_t o = 0; o < q->nout; o++) by += plans[j].out[q->out0 + o].nbytes;
            const mk_qstats *st = mk_quant_stats(&cons[j], i);
            *b = (double)by * 8;
            *e = st->sum_e2;
            t->sx2[m] = st->sum_x2;
        }
        for (size_t k = 0; k < nc; k++) t->err[m * nc + k] = imp ? tp.werr[m * nc + k] : t->se2[m * nc + k];
        if (imp) { /* the mean importance */
            uint64_t cols = per_elem ? in[i].numel : (uint64_t)in[i].shape[in[i].ndim - 1];
            double sum = 0;
            for (uint64_t col = 0; col < cols; col++) sum += imp[i][col];
            t->sens[m] = cols ? sum / (double)cols : 0;
        }
    }
    if (imp) tap_free(&tp);
    for (size_t j = 0; j < made; j++) cons[j].ops->close(&cons[j]);
    for (size_t j = 0; j < np; j++) mk_qplan_free(&plans[j]);
    free(is_w);
    free(sidx);
    free(sub);
    if (s != MK_OK) mk_alloc_table_free(t);
    return s;
}

void mk_alloc_bpw(const mk_alloc_table *t, const size_t *choice, double *bpw_q, double *bpw_all)
{
    double bits = 0, numel = 0;
    for (size_t m = 0; m < t->n; m++) {
        bits += t->bits[m * t->k + choice[m]];
        numel += (double)t->numel[m];
    }
    *bpw_q = numel ? bits / numel : 0;
    *bpw_all = t->params ? (bits + (double)t->other_bits) / (double)t->params : 0;
}

/* ======== writing ============================================================================ */

struct mk_alloc_write {
    size_t np;
    mk_qplan plans[MK_ALLOC_MAX_CANDS];
    size_t *map[MK_ALLOC_MAX_CANDS];  /* plan's stored index -> output index */
    char *targets[MK_ALLOC_MAX_CANDS]; /* JSON list of its modules */
    mk_sink rs[MK_ALLOC_MAX_CANDS];
    remap rm[MK_ALLOC_MAX_CANDS];
    mk_consumer cons[MK_ALLOC_MAX_CANDS];
    size_t made;
    int *owner;                         /* [n]: the plan that writes tensor i */
    mk_tensor_info *out;
    size_t n_out;
    mk_qplan view;                      /* which weights are quantized (for "ignore") */
};

void mk_alloc_write_free(mk_alloc_write *w)
{
    if (!w) return;
    for (size_t j = 0; j < w->made; j++) w->cons[j].ops->close(&w->cons[j]);
    for (size_t j = 0; j < w->np; j++) {
        mk_qplan_free(&w->plans[j]);
        free(w->map[j]);
        free(w->targets[j]);
    }
    free(w->owner);
    free(w->out);
    free(w->view.t);
    free(w);
}

mk_status mk_alloc_write_plan(mk_alloc_write **wp, mk_source *src, const size_t *idx, const mk_arch *arch, const mk_tensor_info *in,
                              size_t n, const mk_alloc_cand *c, size_t nc, const mk_alloc_table *t, const size_t *choice,
                              const char *skip, uint64_t chunk, const mk_tensor_info **out, size_t *n_out)
{
    mk_alloc_write *w = mk_calloc(1, sizeof *w);
    bool *only = mk_calloc(n ? n : 1, sizeof *only);
    if (!w || !only) {
        free(w);
        free(only);
        return MK_ERR_NOMEM;
    }
    *wp = w;
    mk_status s = MK_OK;
    w->owner = mk_calloc(n ? n : 1, sizeof *w->owner);
    if (!w->owner) s = MK_ERR_NOMEM;
    /* a plan per chosen format, in candidate order */
    for (size_t k = 0; k < nc && s == MK_OK; k++) {
        if (c[k].keep) continue;
        bool any = false;
        memset(only, 0, n * sizeof *only);
        for (size_t m = 0; m < t->n; m++)
            if (choice[m] == k) only[t->w[m]] = any = true;
        if (!any) continue;
        size_t j = w->np++;
        s = cand_plan(&w->plans[j], src, idx, arch, in, n, &c[k], skip, only, chunk);
        for (size_t m = 0; s == MK_OK && m < t->n; m++)
            if (choice[m] == k && !w->plans[j].t[t->w[m]].quantized)
                s = mk_error(MK_ERR_MISMATCH, "%s: %s does not quantize it", in[t->w[m]].name, c[k].name);
    }
    free(only);
    if (s == MK_OK && !w->np) s = mk_error(MK_ERR_USAGE, "the allocation keeps every weight unquantized: nothing to mix");
    /* owners: a quantized weight's plan; anything else is written as kept by plan 0 */
    size_t total = 0;
    for (size_t i = 0; s == MK_OK && i < n; i++) {
        w->owner[i] = 0;
        for (size_t j = 0; j < w->np; j++)
            if (w->plans[j].t[i].quantized) w->owner[i] = (int)j;
        total += w->plans[w->owner[i]].t[i].nout;
    }
    if (s == MK_OK) {
        w->out = mk_calloc(total ? total : 1, sizeof *w->out);
        if (!w->out) s = MK_ERR_NOMEM;
    }
    for (size_t j = 0; s == MK_OK && j < w->np; j++) {
        w->map[j] = mk_calloc(w->plans[j].n_out ? w->plans[j].n_out : 1, sizeof *w->map[j]);
        if (!w->map[j]) s = MK_ERR_NOMEM;
    }
    for (size_t i = 0; s == MK_OK && i < n; i++) {
        const mk_qplan *p = &w->plans[w->owner[i]];
        const mk_qtensor *q = &p->t[i];
        for (size_t o = 0; o < q->nout; o++) {
            w->map[w->owner[i]][q->out0 + o] = w->n_out;
            w->out[w->n_out++] = p->out[q->out0 + o];
        }
    }
    /* targets per group, and the view for "ignore" */
    for (size_t j = 0; s == MK_OK && j < w->np; j++) {
        mk_buf b = {0};
        size_t cnt = 0;
        mk_buf_puts(&b, "[");
        for (size_t i = 0; i < n; i++) {
            if (!w->plans[j].t[i].quantized) continue;
            char *mod = mk_strndup(in[i].name, strlen(in[i].name) - 7);
            if (!mod) b.failed = true;
            mk_buf_puts(&b, cnt++ ? ",\n        " : "\n        ");
            if (mod) mk_buf_json_str(&b, mod);
            free(mod);
        }
        mk_buf_puts(&b, "\n      ]");
        if (b.failed) {
            mk_buf_free(&b);
            s = MK_ERR_NOMEM;
        }
        w->targets[j] = b.data;
    }
    if (s == MK_OK) {
        w->view = w->plans[0];
        w->view.t = mk_calloc(n ? n : 1, sizeof *w->view.t);
        if (!w->view.t) s = MK_ERR_NOMEM;
        for (size_t i = 0; s == MK_OK && i < n; i++) w->view.t[i] = w->plans[w->owner[i]].t[i];
    }
    *out = w->out;
    *n_out = w->n_out;
    return s;
}

mk_status mk_alloc_consumer(mk_alloc_write *w, mk_sink *sink, mk_consumer *c)
{
    for (size_t j = 0; j < w->np; j++) {
        w->rm[j] = (remap){sink, w->map[j]};
        w->rs[j] = (mk_sink){.ops = &remap_ops, .dir = sink->dir, .impl = &w->rm[j]};
    }
    for (; w->made < w->np; w->made++) MK_TRY(mk_quant_consumer(&w->cons[w->made], &w->rs[w->made], &w->plans[w->made], true, false));
    return multi_make(c, w->cons, w->np, NULL, w->owner, NULL);
}

char *mk_alloc_config_json(const mk_alloc_write *w)
{
    const mk_qplan *plans[MK_ALLOC_MAX_CANDS];
    for (size_t j = 0; j < w->np; j++) plans[j] = &w->plans[j];
    mk_buf b = {0};
    mk_ct_mixed_config(plans, (const char *const *)w->targets, w->np, &w->view, &b);
    if (b.failed) {
        mk_buf_free(&b);
        mk_error(MK_ERR_NOMEM, "out of memory building quantization_config");
        return NULL;
    }
    return b.data;
}

double mk_alloc_written_se2(const mk_alloc_write *w, size_t i)
{
    size_t j = (size_t)w->owner[i];
    if (j >= w->made) return 0;
    return mk_quant_stats((mk_consumer *)&w->cons[j], i)->sum_e2;
}
