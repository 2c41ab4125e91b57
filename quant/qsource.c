/* qsource.c - see qsource.h: the generic reader. It reads config.json, asks each family of
 * the format table whether a stored tensor marks one of its weights, lets the family check
 * the weight's stored tensors and describe the checkpoint, and lists each quantized weight
 * once as F32, decoded by its family on read.
 * Must not: know any layout (the families in qformat.h do), or write anything.
 */
#include "qformat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qs_impl {
    mk_source *inner;
    mk_qdec *t;              /* [n_tensors]; fam == NULL: a plain tensor, inner index main */
} qs_impl;

/* ---- helpers for the families --------------------------------------------------------------- */

long mk_qdec_find(const mk_source *in, const char *mod, const char *suffix)
{
    char name[MK_QMOD_MAX + 64];
    if ((size_t)snprintf(name, sizeof name, "%s%s", mod, suffix) >= sizeof name) return -1;
    return mk_source_find(in, name);
}

bool mk_qdec_module(const char *name, const char *suffix, char *mod)
{
    size_t len = strlen(name), sl = strlen(suffix);
    if (len <= sl || len - sl >= MK_QMOD_MAX || strcmp(name + len - sl, suffix) != 0) return false;
    memcpy(mod, name, len - sl);
    mod[len - sl] = 0;
    return true;
}

mk_status mk_qdec_expect(const mk_source *in, long i, mk_dtype dt, int ndim, const int64_t *shape, const char *what)
{
    const mk_tensor_info *t = &in->tensors[i];
    char want[160] = "[", got[160];
    size_t o = 1;
    for (int d = 0; d < ndim && o < 120; d++) o += (size_t)snprintf(want + o, sizeof want - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(want + o, sizeof want - o, "]");
    bool ok = t->dtype == dt && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s (%s): expected %s %s, found %s %s", in->path, t->name, what,
                        mk_dtype_name(dt), want, mk_dtype_name(t->dtype), mk_shape_str(t, got));
    return MK_OK;
}

mk_status mk_qdec_read_all(mk_source *in, size_t i, uint64_t cap, void **out)
{
    const mk_tensor_info *t = &in->tensors[i];
    *out = NULL;
    if (t->nbytes > cap) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu bytes, more than the %llu expected", in->path, t->name,
                                         (unsigned long long)t->nbytes, (unsigned long long)cap);
    return mk_qdec_read(in, i, 0, t->nbytes, out);
}

mk_status mk_qdec_read(mk_source *in, size_t i, uint64_t off, uint64_t len, void **buf)
{
    *buf = mk_malloc((size_t)len + 1);
    if (!*buf) return MK_ERR_NOMEM;
    mk_status s = in->ops->read(in, i, off, len, *buf);
    if (s != MK_OK) {
        free(*buf);
        *buf = NULL;
    }
    return s;
}

/* ---- configuration ------------------------------------------------------------------------ */

/* What config.json's quantization_config says, as the families read it. */
static mk_status load_config(mk_source *in, const mk_qfamily *const *fams, size_t nf, mk_json *j, mk_qcfg *c, bool *have)
{
    memset(c, 0, sizeof *c);
    c->group = -1;
    c->sym = true;
    *have = false;
    char *text = NULL;
    size_t len = 0;
    MK_TRY(in->ops->aux_read(in, "config.json", 16u << 20, &text, &len));
    if (!text) return MK_OK;
    mk_json_limits lim = {64, len / 2 + 16};
    mk_status s = mk_json_parse(j, text, len, &lim, "config.json");
    free(text);
    if (s != MK_OK) return mk_error_prefix(s, "%s", in->path);
    *have = true;
    uint32_t q = mk_json_get(j, 0, "quantization_config");
    if (!q || mk_json_at(j, q)->type != MK_JSON_OBJ) return MK_OK;
    for (size_t k = 0; k < nf; k++) {
        bool seen = false; /* families of one layout share their reader */
        for (size_t m = 0; m < k; m++) seen |= fams[m]->read_config == fams[k]->read_config;
        if (fams[k]->read_config && !seen) MK_TRY(fams[k]->read_config(in, j, q, c));
    }
    return MK_OK;
}

/* ---- the scan --------------------------------------------------------------------------------- */

typedef struct qs_scan {
    mk_qdec *t;           /* per inner tensor: the weight it carries the codes of (fam != NULL) */
    bool *aux;            /* per inner tensor: another stored tensor of some weight (not listed) */
    size_t n_logical;
} qs_scan;

static void mark(qs_scan *sc, long i)
{
    if (i >= 0) sc->aux[i] = true;
}

/* Stored tensor i: the weight it marks, if any, checked and counted into info. */
static mk_status scan_one(mk_source *in, size_t i, const mk_qfamily *const *fams, size_t nf, const mk_qcfg *c, qs_scan *sc,
                          mk_qinfo *info)
{
    char mod[MK_QMOD_MAX];
    long main = -1;
    const mk_qfamily *fam = NULL;
    for (size_t k = 0; k < nf && main < 0; k++) {
        MK_TRY(fams[k]->recognise(in, i, mod, &main));
        fam = fams[k];
    }
    if (main < 0) return MK_OK;
    mk_qdec *d = &sc->t[main];
    if (d->fam) return mk_error(MK_ERR_FORMAT, "%s: tensor %s is quantized twice", in->path, in->tensors[main].name);
    memset(d, 0, sizeof *d);
    d->fam = fam;
    d->main = (size_t)main;
    for (int k = 0; k < MK_QDEC_AUX; k++) d->aux[k] = -1;
    d->extra[0] = d->extra[1] = -1;
    MK_TRY(fam->parse(in, mod, i, c, d));
    uint64_t bytes = in->tensors[d->main].nbytes;
    for (int k = 0; k < MK_QDEC_AUX; k++) {
        mark(sc, d->aux[k]);
        if (d->aux[k] >= 0) bytes += in->tensors[d->aux[k]].nbytes;
    }
    mark(sc, d->extra[0]);
    mark(sc, d->extra[1]);
    bool first = info->n_quantized == 0;
    if (first) {
        info->quantized = true;
        info->dtype = d->orig;
        snprintf(info->format, sizeof info->format, "%s", d->fmt->name);
        info->layout = fam->layout;
        info->bits = d->fmt->bits;
    }
    fam->info(d, c, first, info);
    if (!first && strcmp(info->format, "mixed") != 0 && (strcmp(info->format, d->fmt->name) != 0 || info->asym != d->asym))
        snprintf(info->format, sizeof info->format, "mixed"); /* quantize --target-bpw: a format per weight */
    info->n_quantized++;
    info->q_numel += d->numel;
    info->q_bytes += bytes;
    return MK_OK;
}

static mk_status scan(mk_source *in, const mk_qfamily *const *fams, size_t nf, const mk_qcfg *c, qs_scan *sc, mk_qinfo *info)
{
    size_t n = in->n_tensors;
    sc->t = mk_calloc(n ? n : 1, sizeof *sc->t);
    sc->aux = mk_calloc(n ? n : 1, sizeof *sc->aux);
    if (!sc->t || !sc->aux) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) MK_TRY(scan_one(in, i, fams, nf, c, sc, info));
    for (size_t i = 0; i < n; i++) {
        if (sc->t[i].fam) sc->aux[i] = false;
        if (!sc->aux[i]) sc->n_logical++;
        if (!sc->aux[i] && !sc->t[i].fam) info->params += in->tensors[i].numel;
        info->stored_bytes += in->tensors[i].nbytes;
    }
    info->params += info->q_numel;
    return MK_OK;
}

/* config.json + the scan; the caller frees sc's arrays. */
static mk_status detect(mk_source *inner, qs_scan *sc, mk_qinfo *info)
{
    memset(info, 0, sizeof *info);
    memset(sc, 0, sizeof *sc);
    const mk_qfamily *fams[MK_QFAMILIES_MAX];
    size_t nf = mk_qfamilies(fams, MK_QFAMILIES_MAX - 1);
    fams[nf++] = &mk_qfam_gguf;
    mk_json j = {0};
    mk_qcfg c;
    bool have;
    mk_status s = load_config(inner, fams, nf, &j, &c, &have);
    if (s == MK_OK) s = scan(inner, fams, nf, &c, sc, info);
    if (have) mk_json_free(&j);
    return s;
}

mk_status mk_qsource_probe(mk_source *inner, mk_qinfo *info)
{
    qs_scan sc;
    mk_status s = detect(inner, &sc, info);
    free(sc.t);
    free(sc.aux);
    return s;
}

const char *mk_qinfo_describe(const mk_qinfo *q, char buf[160])
{
    if (!strcmp(q->format, "mixed")) {
        snprintf(buf, 160, "mixed (%s, a format per weight)", q->layout ? q->layout : "?");
        return buf;
    }
    int n = snprintf(buf, 160, "%s (%s", q->format, q->layout ? q->layout : "?");
    if (q->block) n += snprintf(buf + n, 160 - (size_t)n, ", %s %llu", q->block_word ? q->block_word : "block", (unsigned long long)q->block);
    if (q->per_channel) n += snprintf(buf + n, 160 - (size_t)n, ", per row");
    if (q->per_tensor) n += snprintf(buf + n, 160 - (size_t)n, ", per tensor");
    if (q->double_quant) n += snprintf(buf + n, 160 - (size_t)n, ", double quant");
    if (q->asym) n += snprintf(buf + n, 160 - (size_t)n, ", zero points");
    snprintf(buf + n, 160 - (size_t)n, ")");
    return buf;
}

/* ---- the dequantizing source ------------------------------------------------------------------ */

static mk_status qs_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    qs_impl *m = s->impl;
    const mk_qdec *q = &m->t[i];
    if (!q->fam) return m->inner->ops->read(m->inner, q->main, off, len, dst);
    if (off % 4 || len % 4 || !len) MK_BUG("dequantized tensors are read in whole f32 elements");
    if ((uintptr_t)dst % 4 == 0) return q->fam->decode(m->inner, q, off / 4, (size_t)(len / 4), dst);
    float *tmp = mk_malloc((size_t)len);
    if (!tmp) return MK_ERR_NOMEM;
    mk_status st = q->fam->decode(m->inner, q, off / 4, (size_t)(len / 4), tmp);
    memcpy(dst, tmp, (size_t)len);
    free(tmp);
    return st;
}

static const void *qs_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    const mk_qdec *q = &m->t[i];
    if (q->fam || !m->inner->ops->borrow) return NULL;
    return m->inner->ops->borrow(m->inner, q->main, off, len);
}

/* The stored bytes behind logical bytes [off, off + len). */
static void stored_range(const mk_source *in, const mk_qdec *q, uint64_t off, uint64_t len, uint64_t *so, uint64_t *sl)
{
    if (!q->fam) {
        *so = off;
        *sl = len;
        return;
    }
    uint64_t total = in->tensors[q->main].nbytes, e0 = off / 4, e1 = (off + len) / 4;
    *so = q->numel ? e0 * total / q->numel : 0;
    *sl = q->numel ? e1 * total / q->numel - *so : 0;
}

static void qs_release(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    if (!m->inner->ops->release) return;
    uint64_t so, sl;
    stored_range(m->inner, &m->t[i], off, len, &so, &sl);
    if (sl) m->inner->ops->release(m->inner, m->t[i].main, so, sl);
}

static void qs_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    if (!m->inner->ops->prefetch) return;
    uint64_t so, sl;
    stored_range(m->inner, &m->t[i], off, len, &so, &sl);
    if (sl) m->inner->ops->prefetch(m->inner, m->t[i].main, so, sl);
}

static mk_status qs_stream(mk_source *s, size_t i, uint64_t len, uint64_t reach, mk_dstream **out)
{
    qs_impl *m = s->impl;
    const mk_qdec *q = &m->t[i];
    *out = NULL;
    /* dequantized, or not the stored bytes as they are: read as before */
    if (q->fam || !m->inner->ops->stream || len > m->inner->tensors[q->main].nbytes) return MK_OK;
    return m->inner->ops->stream(m->inner, q->main, len, reach, out);
}

static mk_status qs_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    qs_impl *m = s->impl;
    return m->inner->ops->aux_read(m->inner, name, cap, data, len);
}

static const char *const *qs_aux_list(mk_source *s)
{
    qs_impl *m = s->impl;
    return m->inner->ops->aux_list ? m->inner->ops->aux_list(m->inner) : NULL;
}

static void qs_close(mk_source *s)
{
    if (!s) return;
    qs_impl *m = s->impl;
    if (m) {
        for (size_t i = 0; i < s->n_tensors; i++)
            if (m->t[i].fam) free(s->tensors[i].name);
        mk_source_close(m->inner);
        free(m->t);
        free(m);
    }
    mk_name_index_free(&s->index);
    free(s->tensors);
    free(s->kind);
    free(s);
}

static const mk_source_ops qs_ops = {qs_read, qs_borrow, qs_release, qs_prefetch, qs_aux_read, qs_aux_list, qs_close, qs_stream};

/* The logical tensors: each plain one as it is, each quantized weight once as F32 under its
 * ".weight" name; s->n_tensors counts the entries made so far (for cleanup). */
static mk_status list_logical(mk_source *s, qs_impl *m, const qs_scan *sc, mk_qinfo *info)
{
    mk_source *inner = m->inner;
    mk_status st = MK_OK;
    size_t k = 0;
    for (size_t i = 0; i < inner->n_tensors && st == MK_OK; i++) {
        if (sc->aux[i]) continue;
        mk_qdec *q = &m->t[k];
        mk_tensor_info *t = &s->tensors[k];
        if (!sc->t[i].fam) {
            *t = inner->tensors[i];
            q->main = i;
            q->orig = t->dtype;
        } else {
            *q = sc->t[i];
            const char *nm = inner->tensors[q->main].name;
            size_t keep = strlen(nm) - strlen(q->fam->main_suffix);
            t->name = q->fam->logical_name ? q->fam->logical_name(nm) : mk_asprintf("%.*s.weight", (int)keep, nm);
            t->dtype = MK_F32;
            t->ndim = q->ndim;
            memcpy(t->shape, q->shape, sizeof t->shape);
            if (!t->name) st = MK_ERR_NOMEM;
            else st = mk_tensor_info_finish(t);
        }
        s->n_tensors = ++k;
    }
    /* a layout that stores no dtype (LLM.int8): the weights had the model's (the plain tensors') */
    mk_dtype model_dt = MK_DTYPE_NONE;
    for (size_t i = 0; i < s->n_tensors && model_dt == MK_DTYPE_NONE; i++)
        if (!m->t[i].fam && mk_qdec_is_float(s->tensors[i].dtype)) model_dt = s->tensors[i].dtype;
    if (model_dt == MK_DTYPE_NONE) model_dt = MK_F16;
    for (size_t i = 0; i < s->n_tensors; i++)
        if (m->t[i].orig == MK_DTYPE_NONE) m->t[i].orig = model_dt;
    if (info->dtype == MK_DTYPE_NONE) info->dtype = model_dt;
    if (st == MK_OK) {
        size_t dup = 0;
        st = mk_name_index_build(&s->index, s->tensors, s->n_tensors, &dup);
        if (st != MK_OK) st = mk_error(MK_ERR_FORMAT, "%s: tensor %s appears both quantized and plain", inner->path, s->tensors[dup].name);
    }
    return st;
}

/* A half-made source, without closing its inner one. */
static void discard(mk_source *s, qs_impl *m)
{
    if (s && m) {
        for (size_t i = 0; s->tensors && i < s->n_tensors; i++)
            if (m->t && m->t[i].fam) free(s->tensors[i].name);
        free(m->t);
        mk_name_index_free(&s->index);
        free(s->tensors);
        free(s->kind);
    }
    free(m);
    free(s);
}

mk_status mk_qsource_open(mk_source *inner, mk_source **out, mk_qinfo *info)
{
    *out = NULL;
    qs_scan sc;
    mk_status st = detect(inner, &sc, info);
    if (st != MK_OK || !info->quantized) {
        free(sc.t);
        free(sc.aux);
        if (st == MK_OK) *out = inner;
        return st;
    }
    mk_source *s = mk_calloc(1, sizeof *s);
    qs_impl *m = mk_calloc(1, sizeof *m);
    if (s) {
        s->tensors = mk_calloc(sc.n_logical ? sc.n_logical : 1, sizeof *s->tensors);
        s->kind = mk_asprintf("%s, %s", inner->kind, info->format);
    }
    if (m) m->t = mk_calloc(sc.n_logical ? sc.n_logical : 1, sizeof *m->t);
    if (!s || !m || !s->tensors || !s->kind || !m->t) {
        st = MK_ERR_NOMEM;
    } else {
        s->ops = &qs_ops;
        s->impl = m;
        s->path = inner->path;
        s->n_files = inner->n_files;
        s->files = inner->files;
        m->inner = inner;
        st = list_logical(s, m, &sc, info);
    }
    free(sc.t);
    free(sc.aux);
    if (st != MK_OK) {
        discard(s, m);
        return st;
    }
    *out = s;
    return MK_OK;
}

mk_dtype mk_qsource_orig_dtype(const mk_source *s, size_t i)
{
    if (s->ops != &qs_ops) return s->tensors[i].dtype;
    const qs_impl *m = s->impl;
    return m->t[i].orig;
}
