/* search_proxy.c - see search_proxy.h */
#include "search_proxy.h"

#include <stdlib.h>
#include <string.h>

enum { P_NORM, P_OPROJ, P_DOWN };

static const struct {
    const char *suffix, *norm;
    int kind;
} rules[] = {
    {"self_attn.q_proj.weight", "input_layernorm.weight", P_NORM},
    {"self_attn.k_proj.weight", "input_layernorm.weight", P_NORM},
    {"self_attn.v_proj.weight", "input_layernorm.weight", P_NORM},
    {"self_attn.o_proj.weight", "input_layernorm.weight", P_OPROJ},
    {"mlp.gate_proj.weight", "post_attention_layernorm.weight", P_NORM},
    {"mlp.up_proj.weight", "post_attention_layernorm.weight", P_NORM},
    {"mlp.down_proj.weight", "post_attention_layernorm.weight", P_DOWN},
};

/* Tensor `prefix` + `suffix` of src: its index if it is [rows, cols] (rows 0: 1-D of cols),
 * else -1. */
static long sibling(const mk_source *src, const char *prefix, size_t lp, const char *suffix, uint64_t rows, uint64_t cols)
{
    char *nm = mk_asprintf("%.*s%s", (int)lp, prefix, suffix);
    long j = nm ? mk_source_find(src, nm) : -1;
    free(nm);
    if (j < 0) return -1;
    const mk_tensor_info *t = &src->tensors[j];
    if (rows ? t->ndim != 2 || (uint64_t)t->shape[0] != rows || (uint64_t)t->shape[1] != cols : t->numel != cols) return -1;
    return j;
}

/* sum_k (row[k] g_k)^2 in double, k in order: the reference, one row at a time. */
static float energy1(const float *row, const float *g, uint64_t cols)
{
    double e = 0;
    for (uint64_t k = 0; k < cols; k++) e += (double)row[k] * g[k] * row[k] * g[k];
    return (float)e;
}

/* energy1 of ENERGY_ROWS rows ([ENERGY_ROWS, cols]) side by side: each row's sum is a chain
 * of its own, in the same operations and order as energy1, so the chains overlap and each
 * result is energy1's bit for bit. */
enum { ENERGY_ROWS = 4 };
static void energy_rows(const float *rows, const float *g, uint64_t cols, float *out)
{
    const float *r0 = rows, *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
    double e0 = 0, e1 = 0, e2 = 0, e3 = 0; /* scalars: an array would live in memory */
    for (uint64_t k = 0; k < cols; k++) {
        e0 += (double)r0[k] * g[k] * r0[k] * g[k];
        e1 += (double)r1[k] * g[k] * r1[k] * g[k];
        e2 += (double)r2[k] * g[k] * r2[k] * g[k];
        e3 += (double)r3[k] * g[k] * r3[k] * g[k];
    }
    out[0] = (float)e0;
    out[1] = (float)e1;
    out[2] = (float)e2;
    out[3] = (float)e3;
}

void mk_search_row_energies(const float *rows, size_t nr, const float *g, uint64_t cols, float *out, bool ref)
{
    size_t r = 0;
    if (!ref)
        for (; r + ENERGY_ROWS <= nr; r += ENERGY_ROWS) energy_rows(rows + r * cols, g, cols, out + r);
    for (; r < nr; r++) out[r] = energy1(rows + r * cols, g, cols);
}

/* out[r] = sum_k (W[r, k] g_k)^2 over the rows of tensor j ([rows, len(g)]). */
static mk_status row_energy(mk_source *src, long j, const float *g, uint64_t rows, uint64_t cols, float *out)
{
    float *buf = mk_malloc(ENERGY_ROWS * cols * sizeof *buf);
    void *scr = mk_malloc(ENERGY_ROWS * cols * 8);
    mk_status s = buf && scr ? MK_OK : MK_ERR_NOMEM;
    for (uint64_t r = 0; s == MK_OK && r < rows; r += ENERGY_ROWS) {
        size_t nr = rows - r < ENERGY_ROWS ? (size_t)(rows - r) : ENERGY_ROWS;
        s = mk_source_read_f32(src, (size_t)j, r * cols, nr * cols, buf, scr);
        if (s == MK_OK) mk_search_row_energies(buf, nr, g, cols, out + r, false);
    }
    free(buf);
    free(scr);
    return s;
}

/* The importances of weight i by rule k, into imp[cols]; false when its siblings are not there. */
static mk_status one(mk_source *src, const mk_qplan *p, size_t i, size_t k, long head_dim, float *imp, bool *done)
{
    const char *name = p->in[i].name;
    const uint64_t cols = p->t[i].cols;
    const size_t lp = strlen(name) - strlen(rules[k].suffix);
    *done = false;
    if (rules[k].kind == P_NORM) {
        long jn = sibling(src, name, lp, rules[k].norm, 0, cols);
        if (jn < 0) return MK_OK;
        void *scr = mk_malloc(cols * 8);
        mk_status s = scr ? mk_source_read_f32(src, (size_t)jn, 0, cols, imp, scr) : MK_ERR_NOMEM;
        free(scr);
        for (uint64_t c = 0; s == MK_OK && c < cols; c++) imp[c] *= imp[c];
        *done = s == MK_OK;
        return s;
    }
    /* the hidden width: the norm's length, read off the norm itself */
    char *nm = mk_asprintf("%.*s%s", (int)lp, name, rules[k].norm);
    long j = nm ? mk_source_find(src, nm) : -1;
    free(nm);
    if (j < 0 || src->tensors[j].ndim != 1) return MK_OK;
    const uint64_t hidden = (uint64_t)src->tensors[j].numel;
    float *g = mk_malloc(hidden * sizeof *g);
    void *scr = mk_malloc(hidden * 8);
    mk_status s = g && scr ? mk_source_read_f32(src, (size_t)j, 0, hidden, g, scr) : MK_ERR_NOMEM;
    free(scr);
    if (s == MK_OK && rules[k].kind == P_OPROJ) {
        const mk_tensor_info *v = NULL;
        long jv = -1;
        char *vn = mk_asprintf("%.*sself_attn.v_proj.weight", (int)lp, name);
        if (vn && (jv = mk_source_find(src, vn)) >= 0) v = &src->tensors[jv];
        free(vn);
        uint64_t kv = v && v->ndim == 2 && (uint64_t)v->shape[1] == hidden ? (uint64_t)v->shape[0] : 0;
        uint64_t rep = kv && cols % kv == 0 ? cols / kv : 0, hd = rep == 1 ? cols : (uint64_t)(head_dim > 0 ? head_dim : 0);
        float *e = rep && hd && kv % hd == 0 ? mk_malloc(kv * sizeof *e) : NULL;
        if (e && (s = row_energy(src, jv, g, kv, hidden, e)) == MK_OK) {
            for (uint64_t c = 0; c < cols; c++) imp[c] = e[(c / hd) / rep * hd + c % hd];
            *done = true;
        }
        free(e);
    } else if (s == MK_OK) {
        long ju = sibling(src, name, lp, "mlp.up_proj.weight", cols, hidden), jg = sibling(src, name, lp, "mlp.gate_proj.weight", cols, hidden);
        float *e = ju >= 0 && jg >= 0 ? mk_malloc(cols * sizeof *e) : NULL;
        if (e && (s = row_energy(src, ju, g, cols, hidden, imp)) == MK_OK && (s = row_energy(src, jg, g, cols, hidden, e)) == MK_OK) {
            for (uint64_t c = 0; c < cols; c++) imp[c] *= e[c];
            *done = true;
        }
        free(e);
    }
    free(g);
    return s;
}

mk_status mk_search_proxy(mk_source *src, mk_qplan *p, long head_dim, mk_search_imps *m)
{
    memset(m, 0, sizeof *m);
    if (!(m->buf = mk_calloc(p->n ? p->n : 1, sizeof *m->buf))) return MK_ERR_NOMEM;
    for (size_t i = 0; i < p->n; i++) {
        mk_qtensor *t = &p->t[i];
        size_t ln = strlen(p->in[i].name);
        if (!t->quantized || t->imp) continue;
        for (size_t k = 0; k < sizeof rules / sizeof *rules; k++) {
            size_t lk = strlen(rules[k].suffix);
            if (ln < lk || strcmp(p->in[i].name + ln - lk, rules[k].suffix) != 0) continue;
            float *imp = mk_malloc(t->cols * sizeof *imp);
            bool done = false;
            mk_status s = imp ? one(src, p, i, k, head_dim, imp, &done) : MK_ERR_NOMEM;
            if (s != MK_OK || !done) {
                free(imp);
                if (s != MK_OK) return s;
                break;
            }
            t->imp = m->buf[m->n++] = imp;
            break;
        }
    }
    return MK_OK;
}

void mk_search_imps_free(mk_search_imps *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->buf[i]);
    free(m->buf);
    memset(m, 0, sizeof *m);
}
