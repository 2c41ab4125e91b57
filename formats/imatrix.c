/* imatrix.c - see imatrix.h */
#include "imatrix.h"

#include "../core/mk_io.h"
#include "gguf.h"
#include "gguf_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGML_F32 0u

/* the base name of a tensor ending in suffix (into out), or false */
static bool strip(const char *name, const char *suffix, char *out, size_t cap)
{
    size_t n = strlen(name), k = strlen(suffix);
    if (n <= k || strcmp(name + n - k, suffix) != 0 || n - k >= cap) return false;
    memcpy(out, name, n - k);
    out[n - k] = 0;
    return true;
}

static const mk_gguf_tensor *find_tensor(const mk_gguf *g, const char *name)
{
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->t[i].name, name) == 0) return &g->t[i];
    return NULL;
}

static float f32_at(const unsigned char *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* entry e's arrays for nv values in nc matrices */
static mk_status entry_alloc(mk_imatrix_entry *e, const char *name, uint64_t nv, uint64_t nc)
{
    e->name = mk_strdup(name);
    e->imp = mk_malloc(nv * sizeof *e->imp);
    e->sum = mk_malloc(nv * sizeof *e->sum);
    e->count = mk_malloc(nc * sizeof *e->count);
    if (!e->name || !e->imp || !e->sum || !e->count) return MK_ERR_NOMEM;
    e->cols = nv / nc;
    e->nmat = nc;
    return MK_OK;
}

/* value i of what's `kind` (tensor, legacy entry) name+suffix is not a sum of squares */
static mk_status bad_sum(const char *what, const char *kind, const char *name, const char *suffix, uint64_t i, float v)
{
    return mk_error(MK_ERR_FORMAT, "%s: %s %s%s[%llu] = %g is not a finite sum of squares", what, kind, name, suffix, (unsigned long long)i,
                    (double)v);
}

/* one matrix: sums s and counts c (both checked F32 here) into e */
static mk_status entry(const mk_gguf *g, const char *what, const char *base, const mk_gguf_tensor *s, const mk_gguf_tensor *c,
                       mk_imatrix_entry *e)
{
    if (s->type != GGML_F32 || c->type != GGML_F32)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: .in_sum2 and .counts must be F32", what, base);
    uint64_t nv = s->nbytes / 4, nc = c->nbytes / 4;
    if (nc == 0 || nv % nc != 0 || s->ne[0] != nv / nc)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu sums are not %llu matrices of ne0 %llu", what, base, (unsigned long long)nv,
                        (unsigned long long)nc, (unsigned long long)s->ne[0]);
    const unsigned char *sp = g->img + g->data_offset + s->offset, *cp = g->img + g->data_offset + c->offset;
    MK_TRY(entry_alloc(e, base, nv, nc));
    for (uint64_t j = 0; j < nc; j++) {
        float cnt = f32_at(cp + 4 * j);
        if (!(cnt >= 0 && cnt <= MK_IMATRIX_MAX_COUNT))
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s.counts[%llu] = %g is not a count (0 to %g)", what, base, (unsigned long long)j,
                            (double)cnt, MK_IMATRIX_MAX_COUNT);
        double rc = floor((double)cnt + 0.5); /* lround, for the non-negative */
        e->count[j] = rc;
        for (uint64_t i = 0; i < e->cols; i++) {
            float v = f32_at(sp + 4 * (j * e->cols + i));
            if (!(v >= 0 && isfinite(v))) return bad_sum(what, "tensor", base, ".in_sum2", j * e->cols + i, v);
            e->sum[j * e->cols + i] = v;
            e->imp[j * e->cols + i] = rc > 0 ? v / (float)rc : 1.0f;
        }
    }
    return MK_OK;
}

static mk_status parse_gguf(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m)
{
    mk_gguf g;
    MK_TRY(mk_gguf_parse(buf, len, len, what, &g));
    mk_status r = MK_OK;
    char type[32] = "";
    int64_t v;
    if (mk_gguf_get_str(&g, "general.type", type, sizeof type) && strcmp(type, "imatrix") != 0)
        r = mk_error(MK_ERR_FORMAT, "%s: general.type is '%s', not 'imatrix'", what, type);
    if (r == MK_OK && mk_gguf_get_int(&g, "imatrix.chunk_count", &v) && v >= 0 && v <= UINT32_MAX) m->chunk_count = (uint32_t)v;
    if (r == MK_OK && mk_gguf_get_int(&g, "imatrix.chunk_size", &v) && v >= 0 && v <= UINT32_MAX) m->chunk_size = (uint32_t)v;
    const mk_gguf_kv *ds = r == MK_OK ? mk_gguf_find(&g, "imatrix.datasets") : NULL;
    if (ds && ds->type == MK_GGUF_ARRAY && ds->atype == MK_GGUF_STRING && ds->n) {
        uint64_t pos = ds->off;
        if (!(m->datasets = mk_calloc(ds->n, sizeof *m->datasets))) r = MK_ERR_NOMEM;
        for (uint64_t i = 0; r == MK_OK && i < ds->n; i++) {
            const char *p;
            uint64_t n;
            mk_gguf_next_str(&g, &pos, &p, &n);
            if (!(m->datasets[m->n_datasets++] = mk_strndup(p, (size_t)n))) r = MK_ERR_NOMEM;
        }
    }
    if (r == MK_OK && g.n_tensors == 0) r = mk_error(MK_ERR_FORMAT, "%s: no tensors (not an imatrix file)", what);
    if (r == MK_OK && !(m->e = mk_calloc(g.n_tensors, sizeof *m->e))) r = MK_ERR_NOMEM;
    for (uint64_t i = 0; r == MK_OK && i < g.n_tensors; i++) {
        char base[MK_GGUF_MAX_NAME], other[MK_GGUF_MAX_NAME + 16];
        const char *nm = g.t[i].name;
        if (strip(nm, ".counts", base, sizeof base)) {
            snprintf(other, sizeof other, "%s.in_sum2", base);
            if (!find_tensor(&g, other)) r = mk_error(MK_ERR_FORMAT, "%s: tensor %s has no %s", what, nm, other);
            continue; /* read with its sums */
        }
        if (!strip(nm, ".in_sum2", base, sizeof base)) {
            r = mk_error(MK_ERR_FORMAT, "%s: tensor %s is neither NAME.in_sum2 nor NAME.counts", what, nm);
            break;
        }
        snprintf(other, sizeof other, "%s.counts", base);
        const mk_gguf_tensor *c = find_tensor(&g, other);
        if (!c) r = mk_error(MK_ERR_FORMAT, "%s: tensor %s has no %s", what, nm, other);
        else r = entry(&g, what, base, &g.t[i], c, &m->e[m->n++]);
    }
    mk_gguf_free(&g);
    return r;
}

/* ---- the legacy layout ---- */
typedef struct rd {
    const unsigned char *p;
    size_t len, at;
    const char *what;
} rd;

/* the next little-endian i32 as *v; false at the end of the image */
static bool rd_i32(rd *r, int32_t *v)
{
    if (r->len - r->at < 4) return false;
    const unsigned char *p = r->p + r->at;
    *v = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    r->at += 4;
    return true;
}

static mk_status truncated(const rd *r, const char *field, long entry)
{
    if (entry < 0) return mk_error(MK_ERR_FORMAT, "%s: truncated legacy imatrix: %s missing at byte %zu of %zu", r->what, field, r->at, r->len);
    return mk_error(MK_ERR_FORMAT, "%s: truncated legacy imatrix: entry %ld's %s missing at byte %zu of %zu", r->what, entry, field, r->at, r->len);
}

static mk_status legacy_entry(rd *r, mk_imatrix *m, long i)
{
    int32_t len, ncall, nval;
    if (!rd_i32(r, &len)) return truncated(r, "name length", i);
    if (len < 1 || (uint32_t)len > MK_IMATRIX_MAX_NAME)
        return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix entry %ld: name length %d (1 to %u)", r->what, i, (int)len, MK_IMATRIX_MAX_NAME);
    if (r->len - r->at < (size_t)len) return truncated(r, "name", i);
    char name[MK_IMATRIX_MAX_NAME + 1];
    memcpy(name, r->p + r->at, (size_t)len);
    name[len] = 0;
    r->at += (size_t)len;
    if (strlen(name) != (size_t)len) return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix entry %ld: a NUL byte in its name", r->what, i);
    if (!rd_i32(r, &ncall)) return truncated(r, "ncall", i);
    if (!rd_i32(r, &nval)) return truncated(r, "nval", i);
    if (ncall < 0) return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix entry %s: ncall %d is negative", r->what, name, (int)ncall);
    if (nval < 1) return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix entry %s: %d values", r->what, name, (int)nval);
    if ((r->len - r->at) / 4 < (size_t)nval)
        return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix entry %s: %d values, %zu bytes left", r->what, name, (int)nval, r->len - r->at);
    mk_imatrix_entry *e = &m->e[m->n++];
    MK_TRY(entry_alloc(e, name, (uint64_t)nval, 1));
    e->count[0] = ncall;
    for (int32_t k = 0; k < nval; k++) {
        float v = f32_at(r->p + r->at + 4 * (size_t)k);
        if (!(v >= 0 && isfinite(v))) return bad_sum(r->what, "legacy imatrix entry", name, "", (uint64_t)k, v);
        e->sum[k] = v;
        e->imp[k] = ncall > 0 ? v / (float)ncall : v;
    }
    r->at += 4 * (size_t)nval;
    return MK_OK;
}

static int entry_by_name(const void *a, const void *b);

/* each name once (sorted copies of the entry pointers: files of many entries stay fast) */
static mk_status no_twice(const mk_imatrix *m, const char *what)
{
    const mk_imatrix_entry **p = mk_malloc(m->n * sizeof *p);
    if (!p) return MK_ERR_NOMEM;
    for (size_t i = 0; i < m->n; i++) p[i] = &m->e[i];
    qsort(p, m->n, sizeof *p, entry_by_name);
    mk_status r = MK_OK;
    for (size_t i = 1; i < m->n && r == MK_OK; i++)
        if (!strcmp(p[i]->name, p[i - 1]->name)) r = mk_error(MK_ERR_FORMAT, "%s: legacy imatrix: entry %s appears twice", what, p[i]->name);
    free(p);
    return r;
}

static mk_status parse_legacy(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m)
{
    rd r = {buf, len, 0, what};
    int32_t n, chunks, dl;
    m->legacy = true;
    if (!rd_i32(&r, &n)) return mk_error(MK_ERR_FORMAT, "%s: not a GGUF file nor a legacy imatrix (.dat): %zu bytes", what, len);
    /* an entry takes at least 16 bytes */
    if (n < 1 || (uint32_t)n > MK_IMATRIX_MAX_ENTRIES || (size_t)n > (len - 4) / 16)
        return mk_error(MK_ERR_FORMAT, "%s: not a GGUF file nor a legacy imatrix (.dat): %d entries in %zu bytes", what, (int)n, len);
    if (!(m->e = mk_calloc((size_t)n, sizeof *m->e))) return MK_ERR_NOMEM;
    for (long i = 0; i < n; i++) MK_TRY(legacy_entry(&r, m, i));
    MK_TRY(no_twice(m, what));
    if (r.at == len) return MK_OK; /* the trailer is optional */
    if (!rd_i32(&r, &chunks)) return truncated(&r, "chunk count", -1);
    if (chunks < 0) return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix: chunk count %d is negative", what, (int)chunks);
    m->chunk_count = (uint32_t)chunks;
    if (r.at == len) return MK_OK;
    if (!rd_i32(&r, &dl)) return truncated(&r, "dataset name length", -1);
    if (dl < 0 || (size_t)dl != len - r.at)
        return mk_error(MK_ERR_FORMAT, "%s: legacy imatrix: a dataset name of %d bytes where %zu are left", what, (int)dl, len - r.at);
    if (dl > 0) {
        if (!(m->datasets = mk_calloc(1, sizeof *m->datasets)) || !(m->datasets[0] = mk_strndup((const char *)buf + r.at, (size_t)dl)))
            return MK_ERR_NOMEM;
        m->n_datasets = 1;
    }
    return MK_OK;
}

mk_status mk_imatrix_parse(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m)
{
    memset(m, 0, sizeof *m);
    mk_status r = len >= 4 && memcmp(buf, "GGUF", 4) == 0 ? parse_gguf(buf, len, what, m) : parse_legacy(buf, len, what, m);
    if (r != MK_OK) mk_imatrix_free(m);
    return r;
}

mk_status mk_imatrix_read(const char *path, mk_imatrix *m)
{
    char *buf = NULL;
    size_t len = 0;
    memset(m, 0, sizeof *m);
    MK_TRY(mk_read_file(path, MK_IMATRIX_MAX_BYTES, &buf, &len));
    mk_status r = mk_imatrix_parse((const unsigned char *)buf, len, path, m);
    free(buf);
    return r;
}

const mk_imatrix_entry *mk_imatrix_find(const mk_imatrix *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->e[i].name, name) == 0) return &m->e[i];
    return NULL;
}

bool mk_imatrix_fits(const mk_imatrix *m, const mk_imatrix_entry *e, uint64_t nmat, uint64_t cols)
{
    return m->legacy ? e->nmat == 1 && nmat && e->cols / nmat == cols && e->cols % nmat == 0 : e->nmat == nmat && e->cols == cols;
}

mk_status mk_imatrix_lookup(const mk_imatrix *m, const char *file, const char *name, uint64_t nmat, uint64_t cols, const float **imp)
{
    const mk_imatrix_entry *e = mk_imatrix_find(m, name);
    *imp = NULL;
    if (!e) return MK_OK;
    if (!mk_imatrix_fits(m, e, nmat, cols)) {
        char want[64];
        if (nmat == 1) snprintf(want, sizeof want, "a matrix of %llu columns", (unsigned long long)cols);
        else snprintf(want, sizeof want, "%llu experts of %llu columns", (unsigned long long)nmat, (unsigned long long)cols);
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu x %llu importances%s for %s", file, name, (unsigned long long)e->nmat,
                        (unsigned long long)e->cols, m->legacy ? " (a legacy entry: one row)" : "", want);
    }
    *imp = e->imp;
    return MK_OK;
}

void mk_imatrix_free(mk_imatrix *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].name);
        free(m->e[i].imp);
        free(m->e[i].sum);
        free(m->e[i].count);
    }
    for (size_t i = 0; i < m->n_datasets; i++) free(m->datasets[i]);
    free(m->datasets);
    free(m->e);
    memset(m, 0, sizeof *m);
}

static int stat_by_name(const void *a, const void *b)
{
    return strcmp((*(const mk_imatrix_stat *const *)a)->name, (*(const mk_imatrix_stat *const *)b)->name);
}

static int entry_by_name(const void *a, const void *b)
{
    return strcmp((*(const mk_imatrix_entry *const *)a)->name, (*(const mk_imatrix_entry *const *)b)->name);
}

static uint64_t nmat_of(const mk_imatrix_stat *s)
{
    return s->nmat ? s->nmat : 1;
}

static void put_i32(mk_buf *b, int32_t v)
{
    unsigned char p[4] = {(unsigned char)v, (unsigned char)((uint32_t)v >> 8), (unsigned char)((uint32_t)v >> 16), (unsigned char)((uint32_t)v >> 24)};
    mk_buf_put(b, p, 4);
}

/* the legacy layout of the entries in order[n] into b */
static mk_status legacy_image(const char *out, const mk_imatrix_stat *const *order, size_t n, const mk_imatrix_meta *meta,
                              mk_buf *b)
{
    uint32_t cs = meta->chunk_size ? meta->chunk_size : 1;
    int32_t kept = 0;
    put_i32(b, 0); /* the entries kept, patched below */
    for (size_t k = 0; k < n; k++) {
        const mk_imatrix_stat *s = order[k];
        uint64_t nm = nmat_of(s), nv = nm * s->cols;
        double mx = 0;
        for (uint64_t j = 0; j < nm; j++) mx = s->count[j] > mx ? s->count[j] : mx;
        if (mx <= 0) {
            mk_warn("%s: %s saw no tokens: left out, as llama-imatrix leaves it out of a .dat file", out, s->name);
            continue;
        }
        double ncall = ceil(mx / cs);
        size_t len = strlen(s->name);
        if (nv > INT32_MAX || ncall > INT32_MAX || len > MK_IMATRIX_MAX_NAME)
            return mk_error(MK_ERR_USAGE, "%s: matrix %s does not fit the legacy layout (name, values or chunks too many)", out, s->name);
        put_i32(b, (int32_t)len);
        mk_buf_put(b, s->name, len);
        put_i32(b, (int32_t)ncall);
        put_i32(b, (int32_t)nv);
        for (uint64_t j = 0; j < nm; j++)
            for (uint64_t c = 0; c < s->cols; c++) {
                /* the sum as a GGUF stores it (f32), so that a run's .dat is its GGUF's conversion */
                double cnt = s->count[j], v = cnt > 0 ? (double)(float)s->sum2[j * s->cols + c] / cnt * ncall : ncall; /* no tokens: 1 x ncall */
                float f = (float)v;
                mk_buf_put(b, &f, 4);
            }
        kept++;
    }
    if (!kept) return mk_error(MK_ERR_USAGE, "%s: no matrix saw a token: nothing to write", out);
    int32_t le = kept;
    unsigned char p[4] = {(unsigned char)le, (unsigned char)(le >> 8), (unsigned char)(le >> 16), (unsigned char)(le >> 24)};
    if (!b->failed) memcpy(b->data, p, 4);
    const char *ds = meta->n_datasets ? meta->datasets[meta->n_datasets - 1] : "";
    put_i32(b, (int32_t)(meta->chunk_count > INT32_MAX ? INT32_MAX : meta->chunk_count));
    put_i32(b, (int32_t)strlen(ds));
    mk_buf_put(b, ds, strlen(ds));
    return b->failed ? MK_ERR_NOMEM : MK_OK;
}

static mk_status write_legacy(const char *out, const mk_imatrix_stat *const *order, size_t n, const mk_imatrix_meta *meta, bool force)
{
    mk_buf b = {0};
    mk_status r = legacy_image(out, order, n, meta, &b);
    if (r == MK_OK && mk_path_exists(out) && !force) r = mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", out);
    if (r == MK_OK) r = mk_write_file_atomic(out, b.data, b.len);
    mk_buf_free(&b);
    return r;
}

static mk_status write_gguf(const char *out, const mk_imatrix_stat *const *order, size_t n, const mk_imatrix_meta *meta, bool force)
{
    mk_gguf_w w;
    mk_gguf_w_init(&w);
    mk_gguf_w_str(&w, "general.type", "imatrix");
    mk_gguf_w_arr_str(&w, "imatrix.datasets", meta->datasets, NULL, meta->n_datasets);
    mk_gguf_w_u32(&w, "imatrix.chunk_count", meta->chunk_count);
    mk_gguf_w_u32(&w, "imatrix.chunk_size", meta->chunk_size);
    mk_status r = MK_OK;
    uint64_t widest = 1;
    for (size_t k = 0; k < n && r == MK_OK; k++) {
        const mk_imatrix_stat *s = order[k];
        char nm[MK_GGUF_MAX_NAME];
        uint64_t ne[4] = {s->cols, nmat_of(s), 1, 1}, cn[4] = {1, nmat_of(s), 1, 1};
        if ((size_t)snprintf(nm, sizeof nm, "%s.in_sum2", s->name) >= sizeof nm || !s->cols)
            r = mk_error(MK_ERR_USAGE, "%s: matrix %s: name too long for GGUF or no columns", out, s->name);
        if (r == MK_OK) r = mk_gguf_w_tensor(&w, nm, 2, ne, 0);
        snprintf(nm, sizeof nm, "%s.counts", s->name);
        if (r == MK_OK) r = mk_gguf_w_tensor(&w, nm, 2, cn, 0);
        if (s->cols * nmat_of(s) > widest) widest = s->cols * nmat_of(s);
    }
    float *buf = r == MK_OK ? mk_malloc((size_t)widest * sizeof *buf) : NULL;
    if (r == MK_OK && !buf) r = MK_ERR_NOMEM;
    if (r == MK_OK) r = mk_gguf_w_begin(&w, out, force);
    for (size_t k = 0; k < n && r == MK_OK; k++) {
        const mk_imatrix_stat *s = order[k];
        uint64_t nm = nmat_of(s);
        for (uint64_t c = 0; c < s->cols * nm; c++) buf[c] = (float)s->sum2[c];
        r = mk_gguf_w_data(&w, buf, (size_t)(s->cols * nm) * sizeof *buf);
        for (uint64_t j = 0; j < nm; j++) buf[j] = (float)s->count[j];
        if (r == MK_OK) r = mk_gguf_w_data(&w, buf, (size_t)nm * sizeof *buf);
    }
    if (r == MK_OK) r = mk_gguf_w_commit(&w);
    free(buf);
    mk_gguf_w_free(&w);
    return r;
}

mk_status mk_imatrix_write(const char *out, const mk_imatrix_stat *st, size_t n, const mk_imatrix_meta *meta, bool legacy, bool force)
{
    const mk_imatrix_stat **order = mk_malloc((n ? n : 1) * sizeof *order);
    if (!order) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) order[i] = &st[i];
    qsort(order, n, sizeof *order, stat_by_name);
    mk_status r = MK_OK;
    for (size_t k = 1; k < n && r == MK_OK; k++)
        if (!strcmp(order[k]->name, order[k - 1]->name)) r = mk_error(MK_ERR_USAGE, "%s: matrix %s given twice", out, order[k]->name);
    if (r == MK_OK) r = legacy ? write_legacy(out, order, n, meta, force) : write_gguf(out, order, n, meta, force);
    free(order);
    return r;
}

void mk_imatrix_stats_free(mk_imatrix_stat *st, size_t n)
{
    for (size_t i = 0; st && i < n; i++) {
        free((void *)st[i].sum2);
        free((void *)st[i].count);
    }
    free(st);
}

mk_status mk_imatrix_stats(const mk_imatrix *m, uint32_t chunk_size, mk_imatrix_stat **out)
{
    mk_imatrix_stat *st = mk_calloc(m->n ? m->n : 1, sizeof *st);
    if (!st) return MK_ERR_NOMEM;
    double f = m->legacy ? (double)chunk_size : 1.0;
    for (size_t i = 0; i < m->n; i++) {
        const mk_imatrix_entry *e = &m->e[i];
        double *s2 = mk_malloc(e->cols * e->nmat * sizeof *s2), *c = mk_malloc(e->nmat * sizeof *c);
        st[i] = (mk_imatrix_stat){e->name, e->cols, e->nmat, s2, c};
        if (!s2 || !c) {
            mk_imatrix_stats_free(st, i + 1);
            return MK_ERR_NOMEM;
        }
        for (uint64_t k = 0; k < e->cols * e->nmat; k++) s2[k] = (double)e->sum[k] * f;
        for (uint64_t j = 0; j < e->nmat; j++) c[j] = e->count[j] * f;
    }
    *out = st;
    return MK_OK;
}
