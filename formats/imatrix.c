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
    e->name = mk_strdup(base);
    e->imp = mk_malloc(nv * sizeof *e->imp);
    if (!e->name || !e->imp) return MK_ERR_NOMEM;
    e->cols = nv / nc;
    e->nmat = nc;
    for (uint64_t j = 0; j < nc; j++) {
        float cnt = f32_at(cp + 4 * j);
        if (!(cnt >= 0 && cnt <= MK_IMATRIX_MAX_COUNT))
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s.counts[%llu] = %g is not a count (0 to %g)", what, base, (unsigned long long)j,
                            (double)cnt, MK_IMATRIX_MAX_COUNT);
        double rc = floor((double)cnt + 0.5); /* lround, for the non-negative */
        for (uint64_t i = 0; i < e->cols; i++) {
            float v = f32_at(sp + 4 * (j * e->cols + i));
            if (!(v >= 0 && isfinite(v)))
                return mk_error(MK_ERR_FORMAT, "%s: tensor %s.in_sum2[%llu] = %g is not a finite sum of squares", what, base,
                                (unsigned long long)(j * e->cols + i), (double)v);
            e->imp[j * e->cols + i] = rc > 0 ? v / (float)rc : 1.0f;
        }
    }
    return MK_OK;
}

mk_status mk_imatrix_parse(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m)
{
    memset(m, 0, sizeof *m);
    mk_gguf g;
    MK_TRY(mk_gguf_parse(buf, len, len, what, &g));
    mk_status r = MK_OK;
    char type[32] = "";
    int64_t v;
    if (mk_gguf_get_str(&g, "general.type", type, sizeof type) && strcmp(type, "imatrix") != 0)
        r = mk_error(MK_ERR_FORMAT, "%s: general.type is '%s', not 'imatrix'", what, type);
    if (r == MK_OK && mk_gguf_get_int(&g, "imatrix.chunk_count", &v) && v >= 0 && v <= UINT32_MAX) m->chunk_count = (uint32_t)v;
    if (r == MK_OK && mk_gguf_get_int(&g, "imatrix.chunk_size", &v) && v >= 0 && v <= UINT32_MAX) m->chunk_size = (uint32_t)v;
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

void mk_imatrix_free(mk_imatrix *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].name);
        free(m->e[i].imp);
    }
    free(m->e);
    memset(m, 0, sizeof *m);
}

mk_status mk_imatrix_write(const char *out, const mk_imatrix_stat *st, size_t n, const char *const *datasets, size_t n_datasets,
                           uint32_t chunk_count, uint32_t chunk_size, bool force)
{
    mk_gguf_w w;
    mk_gguf_w_init(&w);
    mk_gguf_w_str(&w, "general.type", "imatrix");
    mk_gguf_w_arr_str(&w, "imatrix.datasets", datasets, NULL, n_datasets);
    mk_gguf_w_u32(&w, "imatrix.chunk_count", chunk_count);
    mk_gguf_w_u32(&w, "imatrix.chunk_size", chunk_size);
    mk_status r = MK_OK;
    uint64_t widest = 1;
    for (size_t i = 0; i < n && r == MK_OK; i++) {
        char nm[MK_GGUF_MAX_NAME];
        uint64_t ne[4] = {st[i].cols, 1, 1, 1}, one[4] = {1, 1, 1, 1};
        if ((size_t)snprintf(nm, sizeof nm, "%s.in_sum2", st[i].name) >= sizeof nm || !st[i].cols)
            r = mk_error(MK_ERR_USAGE, "%s: matrix %s: name too long for GGUF or no columns", out, st[i].name);
        if (r == MK_OK) r = mk_gguf_w_tensor(&w, nm, 2, ne, 0);
        snprintf(nm, sizeof nm, "%s.counts", st[i].name);
        if (r == MK_OK) r = mk_gguf_w_tensor(&w, nm, 2, one, 0);
        if (st[i].cols > widest) widest = st[i].cols;
    }
    float *buf = r == MK_OK ? mk_malloc((size_t)widest * sizeof *buf) : NULL;
    if (r == MK_OK && !buf) r = MK_ERR_NOMEM;
    if (r == MK_OK) r = mk_gguf_w_begin(&w, out, force);
    for (size_t i = 0; i < n && r == MK_OK; i++) {
        for (uint64_t c = 0; c < st[i].cols; c++) buf[c] = (float)st[i].sum2[c];
        float cnt = (float)st[i].count;
        r = mk_gguf_w_data(&w, buf, (size_t)st[i].cols * sizeof *buf);
        if (r == MK_OK) r = mk_gguf_w_data(&w, &cnt, sizeof cnt);
    }
    if (r == MK_OK) r = mk_gguf_w_commit(&w);
    free(buf);
    mk_gguf_w_free(&w);
    return r;
}
