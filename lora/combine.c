/* combine.c - see combine.h */
#include "combine.h"

#include "../core/mk_io.h"

#include <stdlib.h>
#include <string.h>

const char *const mk_lora_combine_names[MK_LORA_COMBINE_COUNT] = {"cat", "linear", "svd", "ties", "dare_linear"};

/* ---- plan ------------------------------------------------------------------------------ */

/* Module q of input i into the union: a new entry, or the one of the same path, whose
 * update shape must agree. */
static mk_status union_add(mk_lora_plan *p, const mk_lora_input *in, size_t n, size_t i, size_t q, bool cat)
{
    const mk_lora_in_module *pm = &in[i].m[q];
    const mk_tensor_info *A = &in[i].src->tensors[pm->a], *B = &in[i].src->tensors[pm->b];
    size_t z;
    for (z = 0; z < p->n_modules; z++)
        if (strcmp(p->m[z].module, pm->module) == 0) break;
    mk_lora_module *m = &p->m[z];
    if (z == p->n_modules) {
        m->module = mk_strdup(pm->module);
        m->from = mk_malloc(n * sizeof *m->from);
        if (!m->module || !m->from) {
            free(m->module);
            free(m->from);
            memset(m, 0, sizeof *m);
            return MK_ERR_NOMEM;
        }
        for (size_t e = 0; e < n; e++) m->from[e] = -1;
        m->embedding = pm->embedding;
        m->out = (uint64_t)B->shape[0];
        m->in = (uint64_t)A->shape[1];
        p->n_modules++;
    }
    if (m->embedding != pm->embedding || m->out != (uint64_t)B->shape[0] || m->in != (uint64_t)A->shape[1])
        return mk_error(MK_ERR_USAGE, "%s: module %s has a [%lld, %lld] %supdate, but %s's is [%llu, %llu]; adapters of "
                                      "different bases?", in[i].name, pm->module, (long long)B->shape[0],
                        (long long)A->shape[1], pm->embedding ? "embedding " : "", in[0].name, (unsigned long long)m->out,
                        (unsigned long long)m->in);
    m->from[i] = (long)q;
    if (cat) m->k += pm->r;
    return MK_OK;
}

/* The union of the inputs' modules, sorted by name (insertion sort: paths are distinct). */
static mk_status plan_union(mk_lora_plan *p, const mk_lora_input *in, size_t n, bool cat)
{
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) cap += in[i].n_modules;
    p->m = mk_calloc(cap + 1, sizeof *p->m);
    if (!p->m) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        for (size_t q = 0; q < in[i].n_modules; q++) MK_TRY(union_add(p, in, n, i, q, cat));
    for (size_t a = 1; a < p->n_modules; a++)
        for (size_t b = a; b > 0 && strcmp(p->m[b - 1].module, p->m[b].module) > 0; b--) {
            mk_lora_module tmp = p->m[b];
            p->m[b] = p->m[b - 1];
            p->m[b - 1] = tmp;
        }
    return MK_OK;
}

/* Whole tensors, in input order, and the union of the modules_to_save entries. */
static mk_status plan_whole(mk_lora_plan *p, const mk_lora_input *in, size_t n)
{
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) cap += in[i].n_whole;
    p->whole = mk_calloc(cap + 1, sizeof *p->whole);
    const char **seen = mk_calloc(cap + 1, sizeof *seen); /* base tensor names, per whole */
    mk_status s = p->whole && seen ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        for (size_t q = 0; q < in[i].n_whole && s == MK_OK; q++) {
            const mk_lora_in_whole *f = &in[i].whole[q];
            for (size_t z = 0; z < p->n_whole && s == MK_OK; z++)
                if (strcmp(seen[z], f->name) == 0)
                    s = mk_error(MK_ERR_USAGE, "%s and %s both save %s whole; PEFT cannot combine such adapters",
                                 in[p->whole[z].input].name, in[i].name, f->name);
            if (s != MK_OK) break;
            const mk_tensor_info *F = &in[i].src->tensors[f->index];
            seen[p->n_whole] = f->name;
            p->whole[p->n_whole++] = (mk_lora_whole){i, f->index, p->n_out};
            s = mk_lora_plan_add_whole(p, F, mk_strdup(F->name));
        }
        for (size_t q = 0; q < in[i].n_save && s == MK_OK; q++) s = mk_lora_plan_add_save(p, in[i].save[q]);
    }
    free(seen);
    return s;
}

mk_status mk_lora_combine_plan(const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, const mk_lora_names *names,
                               mk_lora_plan *p)
{
    memset(p, 0, sizeof *p);
    bool cat = o->method == MK_LORA_CAT;
    long sum_r = 0, max_r = 0;
    for (size_t i = 0; i < n; i++) {
        sum_r += in[i].max_r;
        if (in[i].max_r > max_r) max_r = in[i].max_r;
    }
    long target = o->rank ? o->rank : o->method == MK_LORA_LINEAR ? sum_r : max_r;
    mk_status s = plan_union(p, in, n, cat);
    for (size_t q = 0; q < p->n_modules && s == MK_OK; q++) {
        mk_lora_module *m = &p->m[q];
        if (!cat) {
            uint64_t mn = m->out < m->in ? m->out : m->in;
            m->k = target < (long)mn ? target : (long)mn;
        }
        s = mk_lora_plan_add_pair(p, m, o->dtype, names);
    }
    if (s == MK_OK) s = plan_whole(p, in, n);
    if (s == MK_OK && p->n_modules == 0 && p->n_whole == 0) s = mk_error(MK_ERR_USAGE, "the adapters have no modules to combine");
    if (s != MK_OK) mk_lora_plan_free(p);
    return s;
}

/* ---- run ------------------------------------------------------------------------------- */

/* PEFT cat: A rows (A_i * w_i) * s_i, B columns B_i, in input order. A [k, in], B [out, k]. */
static mk_status combine_cat(mk_lora_module *m, const mk_lora_input *in, size_t n, float *A, float *B)
{
    uint64_t row = 0, kk = (uint64_t)m->k;
    for (size_t i = 0; i < n; i++) {
        if (m->from[i] < 0) continue;
        const mk_lora_in_module *pm = &in[i].m[m->from[i]];
        mk_status st;
        float *Ai = mk_lora_read_all(in[i].src, pm->a, &st);
        float *Bi = Ai ? mk_lora_read_all(in[i].src, pm->b, &st) : NULL;
        if (!Ai || !Bi) {
            free(Ai);
            return st;
        }
        uint64_t r = (uint64_t)pm->r;
        float sc = (float)pm->scale, w = (float)in[i].weight;
        for (uint64_t e = 0; e < r * m->in; e++) A[row * m->in + e] = (Ai[e] * w) * sc;
        for (uint64_t row_o = 0; row_o < m->out; row_o++)
            for (uint64_t j = 0; j < r; j++) B[row_o * kk + row + j] = Bi[row_o * r + j];
        row += r;
        free(Ai);
        free(Bi);
    }
    m->kept = 1;
    return MK_OK;
}

/* The other methods: the inputs' full updates [out, in], pruned (ties, dare_linear), merged
 * into D, and D factored at rank k. */
static mk_status combine_svd(mk_lora_module *m, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, float *A,
                             float *B)
{
    uint64_t ne = m->out * m->in;
    float **d = mk_calloc(n, sizeof *d);
    float *D = mk_malloc((size_t)ne * sizeof *D + 1);
    float *dw = mk_calloc(n, sizeof *dw);
    mk_status s = d && D && dw ? MK_OK : MK_ERR_NOMEM;
    size_t nd = 0;
    mk_rng rng = mk_rng_key(o->seed, m->module);
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        if (m->from[i] < 0) continue; /* absent: PEFT combines the adapters that have the module */
        const mk_lora_in_module *pm = &in[i].m[m->from[i]];
        if (!(d[nd] = mk_malloc((size_t)ne * sizeof *d[nd] + 1))) {
            s = MK_ERR_NOMEM;
            break;
        }
        s = mk_lora_update_read(in[i].src, pm->a, pm->b, false, pm->scale, m->out, m->in, 0, m->out, d[nd]);
        if (s == MK_OK && o->method == MK_LORA_TIES) s = mk_lora_prune_magnitude(d[nd], ne, o->density);
        if (s == MK_OK && o->method == MK_LORA_DARE_LINEAR) mk_lora_prune_random(d[nd], ne, o->density, rng, i);
        dw[nd] = (float)in[i].weight;
        nd++;
    }
    if (s == MK_OK) {
        if (o->method == MK_LORA_TIES) mk_lora_ties_merge((const float *const *)d, dw, nd, ne, D);
        else mk_lora_weighted_sum((const float *const *)d, dw, nd, ne, D);
    }
    for (size_t i = 0; i < nd; i++) free(d[i]);
    free(d);
    free(dw);
    long got = 0;
    if (s == MK_OK) s = mk_lora_factor(&o->svd, D, m->out, m->in, m->k, B, A, &got, &m->kept, m->module);
    if (s == MK_OK && got != m->k) MK_BUG("rank mismatch");
    free(D);
    return s;
}

mk_status mk_lora_combine_run(mk_lora_plan *p, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, mk_sink *k)
{
    for (size_t q = 0; q < p->n_modules; q++) {
        mk_lora_module *m = &p->m[q];
        if (mk_interrupted()) return mk_error(MK_ERR_IO, "interrupted");
        uint64_t kk = (uint64_t)m->k;
        float *A = mk_calloc((size_t)(kk * m->in) + 1, sizeof *A), *B = mk_calloc((size_t)(m->out * kk) + 1, sizeof *B);
        mk_status s = A && B ? MK_OK : MK_ERR_NOMEM;
        if (s == MK_OK) s = o->method == MK_LORA_CAT ? combine_cat(m, in, n, A, B) : combine_svd(m, in, n, o, A, B);
        if (s == MK_OK) s = mk_lora_put_f32(k, p, m->oa, A);
        if (s == MK_OK) s = mk_lora_put_f32(k, p, m->ob, B);
        free(A);
        free(B);
        MK_TRY(s);
    }
    for (size_t q = 0; q < p->n_whole; q++)
        MK_TRY(mk_lora_put_raw(k, p->whole[q].out, in[p->whole[q].input].src, p->whole[q].src));
    return MK_OK;
}
