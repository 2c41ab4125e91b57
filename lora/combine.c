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

/* Whether tensors `a` (of input ia) and `b` (of input ib) are the same base tensor: by base
 * index when the base is known (the adapters may spell a name differently), else by name. */
static bool same_target(const mk_lora_in_whole *a, const mk_lora_in_whole *b, bool with_base)
{
    return with_base ? a->base == b->base : strcmp(a->name, b->name) == 0;
}

/* Whole tensor q of input i into the plan: a new output, or one more saver of an earlier one. */
static mk_status whole_add(mk_lora_plan *p, const mk_lora_input *in, size_t i, size_t q, const mk_lora_combine_opts *o,
                           const mk_lora_in_whole **seen)
{
    const mk_lora_in_whole *f = &in[i].whole[q];
    const mk_tensor_info *F = &in[i].src->tensors[f->index];
    char sa[160], sb[160];
    if (o->base) {
        if (f->base < 0)
            return mk_error(MK_ERR_USAGE, "%s: tensor %s replaces %s, which the base model %s does not have", in[i].name,
                            F->name, f->name, o->base->path);
        const mk_tensor_info *W = &o->base->tensors[f->base];
        if (!mk_shape_eq(W, F) || !mk_dtype_info(F->dtype)->is_float)
            return mk_error(MK_ERR_USAGE, "%s: tensor %s is %s %s but the base's %s is %s; adapters of another base?",
                            in[i].name, F->name, mk_dtype_name(F->dtype), mk_shape_str(F, sa), W->name, mk_shape_str(W, sb));
    }
    for (size_t z = 0; z < p->n_whole; z++) {
        if (!same_target(seen[z], f, o->base != NULL)) continue;
        const mk_lora_input *first = &in[p->whole[z].input];
        const mk_tensor_info *G = &first->src->tensors[p->whole[z].src];
        if (!o->base)
            return mk_error(MK_ERR_USAGE, "%s and %s both save %s whole; combining them needs the base model they were "
                                          "made from (lora combine --base)", first->name, in[i].name, f->name);
        if (!mk_shape_eq(G, F))
            return mk_error(MK_ERR_USAGE, "%s saves %s as %s, but %s as %s", in[i].name, f->name, mk_shape_str(F, sa),
                            first->name, mk_shape_str(G, sb));
        seen[p->n_whole] = f;
        p->whole[p->n_whole++] = (mk_lora_whole){i, f->index, p->whole[z].out, f->base};
        return MK_OK;
    }
    seen[p->n_whole] = f;
    p->whole[p->n_whole++] = (mk_lora_whole){i, f->index, p->n_out, o->base ? f->base : -1};
    return mk_lora_plan_add_whole(p, F, mk_strdup(F->name));
}

/* A tensor saved by one adapter of weight 1 and not pruned combines to itself: copied. */
static void mark_copies(mk_lora_plan *p, const mk_lora_input *in, const mk_lora_combine_opts *o)
{
    bool pruned = o->method == MK_LORA_TIES || o->method == MK_LORA_DARE_LINEAR;
    for (size_t q = 0; q < p->n_whole; q++) {
        size_t savers = 0;
        for (size_t z = 0; z < p->n_whole; z++) savers += p->whole[z].out == p->whole[q].out;
        if (savers == 1 && in[p->whole[q].input].weight == 1 && !pruned) p->whole[q].base = -1;
    }
}

/* Whole tensors, in input order, and the union of the modules_to_save entries. */
static mk_status plan_whole(mk_lora_plan *p, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o)
{
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) cap += in[i].n_whole;
    p->whole = mk_calloc(cap + 1, sizeof *p->whole);
    const mk_lora_in_whole **seen = mk_calloc(cap + 1, sizeof *seen); /* per whole entry */
    mk_status s = p->whole && seen ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        for (size_t q = 0; q < in[i].n_whole && s == MK_OK; q++) s = whole_add(p, in, i, q, o, seen);
        for (size_t q = 0; q < in[i].n_save && s == MK_OK; q++) s = mk_lora_plan_add_save(p, in[i].save[q]);
    }
    free(seen);
    if (s == MK_OK && o->base) mark_copies(p, in, o);
    return s;
}

/* No module of the union may be saved whole by another input: PEFT takes a module that
 * matches a modules_to_save entry out of LoRA's targets (check_target_module_exists), so
 * one adapter cannot carry both. */
static mk_status check_saved_vs_lora(const mk_lora_plan *p, const mk_lora_input *in, size_t n)
{
    for (size_t z = 0; z < p->n_modules; z++) {
        const mk_lora_module *m = &p->m[z];
        for (size_t i = 0; i < n; i++)
            for (size_t q = 0; q < in[i].n_save; q++) {
                if (!mk_str_has_component(m->module, in[i].save[q])) continue;
                size_t j = 0;
                while (j < n && m->from[j] < 0) j++;
                return mk_error(MK_ERR_USAGE, "%s saves %s whole (modules_to_save) but %s adapts module %s with LoRA; "
                                              "PEFT cannot load one adapter that does both", in[i].name, in[i].save[q],
                                in[j < n ? j : 0].name, m->module);
            }
    }
    return MK_OK;
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
    if (s == MK_OK) s = plan_whole(p, in, n, o);
    if (s == MK_OK) s = check_saved_vs_lora(p, in, n);
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

/* The inputs' differences for one output tensor of ne elements (full updates, or whole
 * tensors minus the base), each pruned as the method says when it comes in (ties: by
 * magnitude; dare_linear: at random, keyed by (seed, `key`) and the input's index), then
 * merged: TIES, or the weighted sum. */
typedef struct diffs {
    float **d;
    float *w;
    size_t n, cap;
    uint64_t ne;
    mk_rng rng;
} diffs;

static mk_status diffs_init(diffs *x, size_t cap, uint64_t ne, const mk_lora_combine_opts *o, const char *key)
{
    *x = (diffs){mk_calloc(cap + 1, sizeof *x->d), mk_calloc(cap + 1, sizeof *x->w), 0, cap, ne, mk_rng_key(o->seed, key)};
    return x->d && x->w ? MK_OK : MK_ERR_NOMEM;
}

/* Difference v [ne] of input i (taken), pruned. */
static mk_status diffs_push(diffs *x, float *v, const mk_lora_combine_opts *o, size_t i, double weight)
{
    if (x->n == x->cap) MK_BUG("too many differences");
    x->d[x->n] = v;
    x->w[x->n++] = (float)weight;
    if (o->method == MK_LORA_TIES) return mk_lora_prune_magnitude(v, x->ne, o->density);
    if (o->method == MK_LORA_DARE_LINEAR) mk_lora_prune_random(v, x->ne, o->density, x->rng, i);
    return MK_OK;
}

static void diffs_merge(const diffs *x, const mk_lora_combine_opts *o, float *D)
{
    if (o->method == MK_LORA_TIES) mk_lora_ties_merge((const float *const *)x->d, x->w, x->n, x->ne, D);
    else mk_lora_weighted_sum((const float *const *)x->d, x->w, x->n, x->ne, D);
}

static void diffs_free(diffs *x)
{
    for (size_t i = 0; i < x->n; i++) free(x->d[i]);
    free(x->d);
    free(x->w);
}

/* The other methods: the inputs' full updates [out, in], pruned (ties, dare_linear), merged
 * into D, and D factored at rank k. */
static mk_status combine_svd(mk_lora_module *m, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o, float *A,
                             float *B)
{
    uint64_t ne = m->out * m->in;
    float *D = mk_malloc((size_t)ne * sizeof *D + 1);
    diffs x;
    mk_status s = diffs_init(&x, n, ne, o, m->module);
    if (s == MK_OK && !D) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        if (m->from[i] < 0) continue; /* absent: PEFT combines the adapters that have the module */
        const mk_lora_in_module *pm = &in[i].m[m->from[i]];
        float *v = mk_malloc((size_t)ne * sizeof *v + 1);
        s = v ? mk_lora_update_read(in[i].src, pm->a, pm->b, false, pm->scale, m->out, m->in, 0, m->out, v) : MK_ERR_NOMEM;
        if (s == MK_OK) s = diffs_push(&x, v, o, i, in[i].weight);
        else free(v);
    }
    if (s == MK_OK) diffs_merge(&x, o, D);
    diffs_free(&x);
    long got = 0;
    if (s == MK_OK) s = mk_lora_factor(&o->svd, D, m->out, m->in, m->k, B, A, &got, &m->kept, m->module);
    if (s == MK_OK && got != m->k) MK_BUG("rank mismatch");
    free(D);
    return s;
}

/* The output of whole entry q and the entries after it that share its output: the base's
 * tensor plus the combination of the savers' differences from it, rounded to its dtype. */
static mk_status combine_whole(const mk_lora_plan *p, size_t q, const mk_lora_input *in, size_t n,
                               const mk_lora_combine_opts *o, mk_sink *k)
{
    const mk_lora_whole *w0 = &p->whole[q];
    const mk_tensor_info *T = &p->out[w0->out];
    mk_status s;
    float *b0 = mk_lora_read_all(o->base, (size_t)w0->base, &s);
    if (!b0) return s;
    float *D = mk_malloc((size_t)T->numel * sizeof *D + 1);
    diffs x;
    s = diffs_init(&x, n, T->numel, o, T->name);
    if (s == MK_OK && !D) s = MK_ERR_NOMEM;
    for (size_t z = q; z < p->n_whole && s == MK_OK; z++) {
        const mk_lora_whole *w = &p->whole[z];
        if (w->out != w0->out) continue;
        float *v = mk_lora_read_all(in[w->input].src, w->src, &s);
        if (!v) break;
        for (uint64_t e = 0; e < T->numel; e++) v[e] -= b0[e];
        s = diffs_push(&x, v, o, w->input, in[w->input].weight);
    }
    if (s == MK_OK) {
        diffs_merge(&x, o, D);
        for (uint64_t e = 0; e < T->numel; e++) D[e] += b0[e];
        s = mk_lora_put_f32(k, p, w0->out, D);
    }
    diffs_free(&x);
    free(D);
    free(b0);
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
    for (size_t q = 0; q < p->n_whole; q++) {
        const mk_lora_whole *w = &p->whole[q];
        bool first = true; /* entries sharing an output are written at the first */
        for (size_t z = 0; z < q && first; z++) first = p->whole[z].out != w->out;
        if (!first) continue;
        if (mk_interrupted()) return mk_error(MK_ERR_IO, "interrupted");
        MK_TRY(w->base < 0 ? mk_lora_put_raw(k, w->out, in[w->input].src, w->src) : combine_whole(p, q, in, n, o, k));
    }
    return MK_OK;
}
