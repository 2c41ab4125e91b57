/* plan.c - see plan.h */
#include "plan.h"
#include "../core/mk_dstream.h"
#include "../core/mk_dwrite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_CAP (16u << 20)

/* One model's tensors grouped by layer. */
typedef struct layer_map {
    long n_layers;       /* from the names: max layer + 1 */
    size_t *counts;      /* [n_layers] tensors per layer */
    size_t **idx;        /* [n_layers][counts] tensor indices, in file order */
    size_t n_other;
    size_t *other;       /* non-layer tensors, in file order */
    size_t *pre, *rest;  /* per tensor: name split around the layer number */
} layer_map;

typedef struct isrc {
    uint32_t model;
    long start, end;
    const mk_params *params;
    mk_pos pos;
} isrc;

typedef struct islice {
    size_t n;
    isrc *src;
    const mk_params *params;
    int base; /* model index, -1 = none */
    mk_pos pos;
} islice;

typedef struct builder {
    const mk_recipe *r;
    const mk_plan_opts *o;
    mk_plan *p;
    layer_map *lm;
    size_t cap;
} builder;

static mk_status rerr(const mk_recipe *r, mk_pos pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mk_status rerr(const mk_recipe *r, mk_pos pos, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (pos.line) return mk_error(MK_ERR_RECIPE, "%s:%d:%d: %s", r->path, pos.line, pos.col, msg);
    return mk_error(MK_ERR_RECIPE, "%s: %s", r->path, msg);
}

static void layer_map_free(layer_map *m)
{
    if (!m) return;
    for (long l = 0; l < m->n_layers; l++) free(m->idx[l]);
    free(m->idx);
    free(m->counts);
    free(m->other);
    free(m->pre);
    free(m->rest);
}

static mk_status layer_map_build(const mk_plan_model *pm, layer_map *m)
{
    memset(m, 0, sizeof *m);
    const mk_source *s = pm->src;
    size_t n = s->n_tensors;
    long *lay = mk_calloc(n ? n : 1, sizeof *lay);
    m->pre = mk_calloc(n ? n : 1, sizeof *m->pre);
    m->rest = mk_calloc(n ? n : 1, sizeof *m->rest);
    m->other = mk_calloc(n ? n : 1, sizeof *m->other);
    if (!lay || !m->pre || !m->rest || !m->other) {
        free(lay);
        return MK_ERR_NOMEM;
    }
    long maxl = -1;
    for (size_t i = 0; i < n; i++) {
        if (mk_arch_layer(&pm->arch, s->tensors[i].name, &lay[i], &m->pre[i], &m->rest[i])) {
            if (lay[i] > maxl) maxl = lay[i];
        } else {
            lay[i] = -1;
            m->other[m->n_other++] = i;
        }
    }
    m->n_layers = maxl + 1;
    m->counts = mk_calloc(m->n_layers ? (size_t)m->n_layers : 1, sizeof *m->counts);
    m->idx = mk_calloc(m->n_layers ? (size_t)m->n_layers : 1, sizeof *m->idx);
    if (!m->counts || !m->idx) {
        free(lay);
        return MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (lay[i] >= 0) m->counts[lay[i]]++;
    for (long l = 0; l < m->n_layers; l++) {
        m->idx[l] = mk_calloc(m->counts[l] ? m->counts[l] : 1, sizeof **m->idx);
        if (!m->idx[l]) {
            free(lay);
            return MK_ERR_NOMEM;
        }
        m->counts[l] = 0;
    }
    for (size_t i = 0; i < n; i++)
        if (lay[i] >= 0) m->idx[lay[i]][m->counts[lay[i]]++] = i;
    free(lay);
    return MK_OK;
}

/* ---- parameter names --------------------------------------------------------------- */

/* Every value written for parameter d (a scalar, each entry of a gradient, each
 * conditional's value) is one d accepts. */
static mk_status check_values(const mk_recipe *r, const mk_method *m, const mk_param_def *d, const mk_pvalue *v)
{
    char allowed[96];
    switch (v->kind) {
    case MK_PV_SCALAR:
        if (mk_param_ok(d, v->scalar)) return MK_OK;
        return rerr(r, v->pos, "%s: parameter '%s' is %g, outside what it accepts: %s", m->name, d->name, v->scalar,
                    mk_param_allowed(d, allowed));
    case MK_PV_GRADIENT:
        for (size_t k = 0; k < v->n; k++)
            if (!mk_param_ok(d, v->grad[k]))
                return rerr(r, v->pos, "%s: parameter '%s' has %g at gradient entry %zu, outside what it accepts: %s",
                            m->name, d->name, v->grad[k], k, mk_param_allowed(d, allowed));
        return MK_OK;
    case MK_PV_COND:
        for (size_t k = 0; k < v->n; k++) MK_TRY(check_values(r, m, d, v->cond[k].value));
        return MK_OK;
    }
    return MK_OK;
}

static mk_status check_param_block(const mk_recipe *r, const mk_method *m, const mk_params *ps)
{
    size_t np = mk_method_nparams(m);
    const char *names[MK_MAX_PARAMS + 1];
    for (size_t i = 0; i < np; i++) names[i] = m->params[i].name;
    for (size_t i = 0; i < ps->n; i++) {
        const mk_param *p = &ps->p[i];
        int pi = mk_method_param(m, p->name);
        if (pi >= 0) {
            MK_TRY(check_values(r, m, &m->params[pi], &p->value));
            continue;
        }
        const char *hint = mk_did_you_mean(p->name, names, np);
        if (hint) return rerr(r, p->pos, "unknown parameter '%s' for merge_method '%s' (did you mean '%s'?)", p->name, m->name, hint);
        if (mk_param_known_anywhere(p->name)) {
            mk_warn("%s:%d:%d: parameter '%s' is not used by merge_method '%s'; ignored", r->path, p->pos.line,
                    p->pos.col, p->name, m->name);
            continue;
        }
        return rerr(r, p->pos, "unknown parameter '%s' for merge_method '%s'", p->name, m->name);
    }
    return MK_OK;
}

static mk_status check_params(const mk_recipe *r, const mk_method *m)
{
    MK_TRY(check_param_block(r, m, &r->params));
    for (size_t i = 0; i < r->n_models; i++) MK_TRY(check_param_block(r, m, &r->models[i].params));
    for (size_t i = 0; i < r->n_slices; i++) {
        MK_TRY(check_param_block(r, m, &r->slices[i].params));
        for (size_t k = 0; k < r->slices[i].n_sources; k++) MK_TRY(check_param_block(r, m, &r->slices[i].sources[k].params));
    }
    return MK_OK;
}

/* ---- models ---------------------------------------------------------------------------- */

static int model_index(const mk_plan *p, const mk_model_ref *ref)
{
    for (size_t i = 0; i < p->n_models; i++)
        if (strcmp(p->models[i].ref->key, ref->key) == 0) return (int)i;
    return -1;
}

static mk_status open_models(builder *b, const mk_model_ref **refs, mk_source *const *sources, size_t n)
{
    mk_plan *p = b->p;
    p->models = mk_calloc(n ? n : 1, sizeof *p->models);
    b->lm = mk_calloc(n ? n : 1, sizeof *b->lm);
    if (!p->models || !b->lm) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        mk_plan_model *pm = &p->models[p->n_models++];
        pm->ref = refs[i];
        pm->src = sources[i];
        char *cfg = NULL;
        size_t len = 0;
        MK_TRY(pm->src->ops->aux_read(pm->src, "config.json", CONFIG_CAP, &cfg, &len));
        pm->has_config = cfg != NULL;
        mk_status s = mk_arch_from_config(cfg, pm->src->path, &pm->arch);
        free(cfg);
        MK_TRY(s);
        MK_TRY(layer_map_build(pm, &b->lm[i]));
        pm->n_layers = b->lm[i].n_layers;
        if (pm->arch.num_layers >= 0 && pm->arch.num_layers != pm->n_layers)
            mk_warn("%s: config.json says %ld layers but the tensors have %ld", pm->src->path, pm->arch.num_layers,
                    pm->n_layers);
    }
    /* mergekit requires one architecture unless --allow-crimes */
    for (size_t i = 1; i < n; i++) {
        const char *a = p->models[0].arch.arch_name, *c = p->models[i].arch.arch_name;
        if (a && c && strcmp(a, c) != 0 && !b->o->allow_crimes)
            return mk_error(MK_ERR_RECIPE, "%s is %s but %s is %s; pass --allow-crimes to merge different architectures",
                            p->models[0].ref->text, a, p->models[i].ref->text, c);
    }
    return MK_OK;
}

/* ---- slices ------------------------------------------------------------------------------ */

static void islices_free(islice *s, size_t n)
{
    for (size_t i = 0; i < n; i++) free(s[i].src);
    free(s);
}

static mk_status normalize_slices(builder *b, islice **out, size_t *n_out)
{
    const mk_recipe *r = b->r;
    mk_plan *p = b->p;
    int gbase = r->has_base ? model_index(p, &r->base) : -1;
    if (r->n_models) {
        islice *s = mk_calloc(1, sizeof *s);
        if (!s) return MK_ERR_NOMEM;
        s->src = mk_calloc(r->n_models + 1, sizeof *s->src);
        if (!s->src) {
            free(s);
            return MK_ERR_NOMEM;
        }
        s->base = gbase;
        bool base_listed = false;
        for (size_t i = 0; i < r->n_models; i++) {
            int mi = model_index(p, &r->models[i].ref);
            bool dup = false;
            for (size_t k = 0; k < s->n; k++) dup |= s->src[k].model == (uint32_t)mi;
            if (dup) {
                /* mergekit 0.1.5 InputContract.validate_ids: "Duplicate merge inputs" */
                const char *first = p->models[mi].ref->text, *now = r->models[i].ref.text;
                mk_status st = strcmp(first, now) == 0
                                   ? rerr(r, r->models[i].ref.pos, "model %s is listed twice; each model can be merged once", now)
                                   : rerr(r, r->models[i].ref.pos,
                                          "model %s is %s again (the same folder); each model can be merged once", now, first);
                islices_free(s, 1);
                return st;
            }
            base_listed |= mi == gbase;
            s->src[s->n++] = (isrc){(uint32_t)mi, 0, p->models[mi].n_layers, &r->models[i].params, r->models[i].ref.pos};
        }
        /* mergekit appends a base that is not listed as an extra input */
        if (gbase >= 0 && !base_listed)
            s->src[s->n++] = (isrc){(uint32_t)gbase, 0, p->models[gbase].n_layers, NULL, r->base.pos};
        for (size_t k = 1; k < s->n; k++) {
            long a = s->src[0].end, c = s->src[k].end;
            if (a != c) {
                mk_status st = rerr(r, s->src[k].pos, "models have different layer counts: %s has %ld, %s has %ld",
                                    p->models[s->src[0].model].ref->text, a, p->models[s->src[k].model].ref->text, c);
                islices_free(s, 1);
                return st;
            }
        }
        *out = s;
        *n_out = 1;
        return MK_OK;
    }
    islice *s = mk_calloc(r->n_slices, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    for (size_t i = 0; i < r->n_slices; i++) {
        const mk_output_slice *os = &r->slices[i];
        islice *is = &s[i];
        is->params = &os->params;
        is->pos = os->pos;
        is->base = os->has_base ? model_index(p, &os->base) : gbase;
        is->src = mk_calloc(os->n_sources, sizeof *is->src);
        if (!is->src) {
            islices_free(s, r->n_slices);
            return MK_ERR_NOMEM;
        }
        for (size_t k = 0; k < os->n_sources; k++) {
            const mk_input_slice *in = &os->sources[k];
            int mi = model_index(p, &in->ref);
            long nl = p->models[mi].n_layers;
            long a = in->has_range ? in->start : 0, e = in->has_range ? in->end : nl;
            if (e > nl) {
                mk_status st = rerr(r, in->pos, "slices[%zu].sources[%zu]: layer_range [%ld, %ld] but %s has %ld layers",
                                    i, k, a, e, in->ref.text, nl);
                islices_free(s, r->n_slices);
                return st;
            }
            bool dup = false;
            for (size_t q = 0; q < is->n; q++) dup |= is->src[q].model == (uint32_t)mi;
            if (dup) {
                /* mergekit 0.1.5 InputContract.validate_ids: "Duplicate merge inputs" */
                mk_status st = rerr(r, in->pos,
                                    "slices[%zu]: model %s appears twice in one slice; each model can be merged once per "
                                    "slice (use another slice, or a copy of the model)",
                                    i, in->ref.text);
                islices_free(s, r->n_slices);
                return st;
            }
            is->src[is->n++] = (isrc){(uint32_t)mi, a, e, &in->params, in->pos};
            if (e - a != is->src[0].end - is->src[0].start) {
                mk_status st = rerr(r, in->pos, "slices[%zu]: sources cover different numbers of layers (%ld vs %ld)", i,
                                    is->src[0].end - is->src[0].start, e - a);
                islices_free(s, r->n_slices);
                return st;
            }
        }
    }
    *out = s;
    *n_out = r->n_slices;
    return MK_OK;
}

/* ---- method input rules ----------------------------------------------------------------- */

/* mergekit 0.1.5 InputContract.validate_ids for one slice or tensor: `n` inputs, the base
 * configured or not, present among them or not. `what` names the slice or tensor. */
static mk_status check_contract(const mk_method *m, size_t n, bool base_configured, bool base_present, const char *what)
{
    bool has_base = m->base != MK_BASE_IGNORED && base_present;
    if (m->base != MK_BASE_IGNORED && base_configured && !base_present)
        return mk_error(MK_ERR_RECIPE, "%s: the base model is not among the inputs (merge_method '%s' uses it)", what,
                        m->name);
    if (m->base == MK_BASE_REQUIRED && !has_base)
        return mk_error(MK_ERR_RECIPE, "%s: merge_method '%s' needs a base_model among its inputs", what, m->name);
    size_t nb = n - (has_base ? 1 : 0);
    unsigned lo = 0, hi = 0;
    size_t got = 0;
    const char *which = "";
    if ((m->min_inputs && n < m->min_inputs) || (m->max_inputs && n > m->max_inputs)) {
        lo = m->min_inputs, hi = m->max_inputs, got = n;
    } else if ((m->min_non_base && nb < m->min_non_base) || (m->max_non_base && nb > m->max_non_base)) {
        lo = m->min_non_base, hi = m->max_non_base, got = nb, which = " besides the base";
    } else {
        return MK_OK;
    }
    char range[64];
    unsigned lim = got < lo ? lo : hi;
    if (lo == hi) snprintf(range, sizeof range, "exactly %u", lim);
    else snprintf(range, sizeof range, "%s %u", got < lo ? "at least" : "at most", lim);
    return mk_error(MK_ERR_RECIPE, "%s: merge_method '%s' takes %s model%s%s, got %zu", what, m->name, range,
                    lim == 1 ? "" : "s", which, got);
}

static mk_status check_slices(builder *b, const islice *sl, size_t ns)
{
    const mk_recipe *r = b->r;
    for (size_t i = 0; i < ns; i++) {
        bool present = false;
        for (size_t k = 0; k < sl[i].n; k++) present |= (int)sl[i].src[k].model == sl[i].base;
        char what[64];
        if (r->n_slices) snprintf(what, sizeof what, "slices[%zu]", i);
        else snprintf(what, sizeof what, "models");
        mk_status s = check_contract(b->p->method, sl[i].n, sl[i].base >= 0, present, what);
        mk_pos pos = sl[i].pos.line ? sl[i].pos : r->method_pos;
        if (s != MK_OK) return mk_error_prefix(s, "%s:%d:%d", r->path, pos.line, pos.col);
    }
    return MK_OK;
}

/* ---- parameters -------------------------------------------------------------------------- */

/* The setting of pname in ps that applies to tensor tname at t (its value in *v), or NULL. */
static const mk_param *lookup(const mk_params *ps, const char *pname, const char *tname, double t, double *v)
{
    if (!ps) return NULL;
    const mk_param *p = mk_params_find(ps, pname);
    return p && mk_pvalue_eval(&p->value, tname, t, v) ? p : NULL;
}

/* A value a gradient interpolated to (every written value was checked before): integers and
 * booleans between two written values need not be integers or booleans. */
static mk_status check_resolved(const mk_recipe *r, const mk_method *m, const mk_param_def *d, const mk_param *from,
                                const char *tname, double v)
{
    if (!from || mk_param_ok(d, v)) return MK_OK;
    char allowed[96];
    return rerr(r, from->pos, "%s: tensor %s: parameter '%s' interpolates to %g, outside what it accepts: %s", m->name,
                tname, d->name, v, mk_param_allowed(d, allowed));
}

/* Precedence (mergekit ConfigReader.parameter_sources): the input's own parameters, the
 * slice's, the top level's, then the default. Global parameters are read with the output
 * tensor name, per-input ones with that input's tensor name. The base gets no value of
 * a per-model (non-base) parameter. */
static mk_status resolve_params(builder *b, const islice *sl, mk_plan_tensor *pt, const isrc *const *srcs,
                                char *const *in_names)
{
    const mk_recipe *r = b->r;
    const mk_method *m = b->p->method;
    mk_merge_job *job = &pt->job;
    for (int i = 0; m->params[i].name; i++) {
        const mk_param_def *d = &m->params[i];
        if (d->scope == MK_PS_GLOBAL) {
            double v = d->def;
            const mk_param *from = lookup(sl->params, d->name, pt->out.name, pt->t, &v);
            if (!from) from = lookup(&r->params, d->name, pt->out.name, pt->t, &v);
            if (!from && d->required)
                return mk_error(MK_ERR_RECIPE, "%s: tensor %s: missing required parameter '%s'", r->path, pt->out.name,
                                d->name);
            MK_TRY(check_resolved(r, m, d, from, pt->out.name, v));
            job->g[i] = v;
            continue;
        }
        for (size_t k = 0; k < job->n_in; k++) {
            double v = d->def;
            pt->m[k][i] = v;
            pt->m_set[k][i] = false;
            if (d->scope == MK_PS_MODEL && (int)k == job->base) continue;
            const char *tn = in_names[k];
            const mk_param *from = lookup(srcs[k]->params, d->name, tn, pt->t, &v);
            if (!from) from = lookup(sl->params, d->name, tn, pt->t, &v);
            if (!from) from = lookup(&r->params, d->name, tn, pt->t, &v);
            bool set = from != NULL;
            MK_TRY(check_resolved(r, m, d, from, tn, v));
            if (!set && d->required)
                return mk_error(MK_ERR_RECIPE, "%s: tensor %s: model %s has no '%s' (give it under the model's parameters or in the top-level parameters)",
                                r->path, tn, b->p->models[srcs[k]->model].ref->text, d->name);
            pt->m[k][i] = v;
            pt->m_set[k][i] = set;
        }
    }
    return MK_OK;
}

/* ---- output tensors --------------------------------------------------------------------- */

/* torch.promote_types for the float dtypes we read: equal -> itself, bf16 + f16 -> f32,
 * anything + f32 -> f32, anything + f64 -> f64. */
static mk_dtype promote(mk_dtype a, mk_dtype c)
{
    if (a == c) return a;
    if (a == MK_F64 || c == MK_F64) return MK_F64;
    return MK_F32;
}

/* Tensor `name` in model pm, under its own spelling or its alias; -1 when absent. */
static long find_tensor(const mk_plan_model *pm, const char *name)
{
    long ti = mk_source_find(pm->src, name);
    if (ti >= 0) return ti;
    char *alt = mk_arch_alias(&pm->arch, name);
    if (alt) ti = mk_source_find(pm->src, alt);
    free(alt);
    return ti;
}

/* Add one output tensor named after tensor `ref_tensor` of source `ref` of the slice.
 * out_layer: output layer (-1 outside the layers); j: layer offset within the slice;
 * n_use: how many of the slice's sources take part. */
static mk_status add_tensor(builder *b, const islice *sl, size_t ref, size_t ref_tensor, long out_layer, long j,
                            size_t n_use)
{
    mk_plan *p = b->p;
    const mk_recipe *r = b->r;
    const mk_method *m = p->method;
    if (p->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        mk_plan_tensor *nt = mk_realloc_array(p->t, cap, sizeof *nt);
        if (!nt) return MK_ERR_NOMEM;
        p->t = nt;
        b->cap = cap;
    }
    mk_plan_tensor *pt = &p->t[p->n];
    memset(pt, 0, sizeof *pt);
    const isrc *rs = &sl->src[ref];
    const mk_plan_model *rpm = &p->models[rs->model];
    const layer_map *rlm = &b->lm[rs->model];
    const mk_tensor_info *rt = &rpm->src->tensors[ref_tensor];
    pt->out_layer = out_layer;
    char *renamed = out_layer >= 0 ? mk_arch_rename_layer(rt->name, rlm->pre[ref_tensor], rlm->rest[ref_tensor], out_layer)
                                   : mk_strdup(rt->name);
    pt->out.name = renamed ? mk_arch_canonical(&rpm->arch, renamed) : NULL;
    free(renamed);
    if (!pt->out.name) return MK_ERR_NOMEM;
    p->n++; /* owned from here: mk_plan_free releases it on error */
    long n_layers = out_layer >= 0 ? sl->src[0].end - sl->src[0].start : 0;
    pt->t = out_layer < 0 ? 0.0 : (n_layers <= 1 ? 1.0 : (double)j / (double)(n_layers - 1));

    pt->in = mk_calloc(sl->n, sizeof *pt->in);
    pt->m = mk_calloc(sl->n, sizeof *pt->m);
    pt->m_set = mk_calloc(sl->n, sizeof *pt->m_set);
    char **in_names = mk_calloc(sl->n, sizeof *in_names);
    const isrc **srcs = mk_calloc(sl->n, sizeof *srcs);
    mk_status s = (pt->in && pt->m && pt->m_set && in_names && srcs) ? MK_OK : MK_ERR_NOMEM;
    mk_merge_job *job = &pt->job;
    job->base = -1;
    uint64_t rows = 0;
    bool cut = false, embed = mk_arch_is_embed(&rpm->arch, rt->name);
    bool optional = mk_arch_is_optional(&rpm->arch, rt->name);
    size_t missing = 0;
    mk_dtype cdt = MK_DTYPE_NONE;
    for (size_t k = 0; k < n_use && s == MK_OK; k++) {
        const isrc *is = &sl->src[k];
        const mk_plan_model *pm = &p->models[is->model];
        char *iname = out_layer >= 0 ? mk_arch_rename_layer(rt->name, rlm->pre[ref_tensor], rlm->rest[ref_tensor],
                                                            is->start + j)
                                     : mk_strdup(rt->name);
        if (!iname) {
            s = MK_ERR_NOMEM;
            break;
        }
        long ti = find_tensor(pm, iname);
        if (ti < 0 && optional) {
            /* a model with tied embeddings lends its input embedding (mergekit tied_names) */
            const char *tied = mk_arch_tied_name(&pm->arch, iname);
            if (tied) ti = find_tensor(pm, tied);
            if (ti < 0) {
                missing++;
                free(iname);
                continue;
            }
        }
        if (ti < 0) {
            s = mk_error(MK_ERR_RECIPE, "tensor %s required but not present in model %s", iname, pm->ref->text);
            free(iname);
            break;
        }
        const mk_tensor_info *it = &pm->src->tensors[ti];
        size_t k2 = job->n_in++;
        in_names[k2] = iname;
        srcs[k2] = is;
        pt->in[k2] = (mk_plan_input){is->model, (uint32_t)ti, mk_tensor_cols(it), NULL};
        if ((int)is->model == sl->base) job->base = (int)k2;
        if (mk_dtype_info(it->dtype)->is_float) cdt = cdt == MK_DTYPE_NONE ? it->dtype : promote(cdt, it->dtype);
        if (k2 == 0) {
            pt->out.ndim = it->ndim;
            memcpy(pt->out.shape, it->shape, sizeof it->shape);
            rows = mk_tensor_rows(it);
            continue;
        }
        const mk_tensor_info *f = &p->models[pt->in[0].model].src->tensors[pt->in[0].tensor];
        if (mk_shape_eq(it, f)) continue;
        char a[160], c2[160];
        if (embed && b->o->tok && it->ndim == 2 && f->ndim == 2 && it->shape[1] == f->shape[1]) continue;
        if (embed && it->ndim == 2 && f->ndim == 2 && it->shape[1] == f->shape[1]) {
            /* vocabulary sizes differ: keep the common first rows (mergekit 0.1.5 does this
             * with --unsafe-truncate-embeddings; without it, it refuses) */
            if ((uint64_t)it->shape[0] < rows) rows = (uint64_t)it->shape[0];
            cut = true;
            continue;
        }
        s = mk_error(MK_ERR_RECIPE, "tensor %s: shape %s in model %s vs %s in model %s%s", pt->out.name,
                     mk_shape_str(f, a), p->models[pt->in[0].model].ref->text, mk_shape_str(it, c2), pm->ref->text,
                     embed ? " (only the vocabulary dimension may differ)" : "");
    }
    if (s == MK_OK && job->n_in == 0) s = mk_error(MK_ERR_RECIPE, "tensor %s: no model has it", pt->out.name);
    bool remap = s == MK_OK && embed && b->o->tok && pt->out.ndim == 2;
    if (remap) { /* rows gathered by the merged vocabulary's token permutation (tokmerge.h) */
        pt->out.shape[0] = (int64_t)b->o->tok->n_rows;
        for (size_t k = 0; k < job->n_in; k++) pt->in[k].rowmap = b->o->tok->perm[pt->in[k].model];
        p->vocab_rows = b->o->tok->n_rows;
    }
    /* optional tensors that only some inputs have (mergekit OptionalTensorPolicy) */
    bool passthrough = false, skip = false;
    if (s == MK_OK && missing && job->n_in) {
        bool only_base = job->n_in == 1 && job->base == 0;
        switch (m->missing) {
        case MK_MISSING_SINGLETON: passthrough = job->n_in == 1; break;
        case MK_MISSING_BASE_SINGLETON: passthrough = only_base; break;
        case MK_MISSING_BASE_OR_SKIP:
            if (m->min_inputs && job->n_in < m->min_inputs) {
                passthrough = only_base;
                skip = !only_base;
            }
            break;
        case MK_MISSING_ERROR: break;
        }
        if (skip) mk_warn("tensor %s: only %zu model(s) have it, too few for %s; left out", pt->out.name, job->n_in, m->name);
        else if (!passthrough) {
            char what[300];
            snprintf(what, sizeof what, "tensor %s (missing from %zu model(s))", pt->out.name, missing);
            s = check_contract(m, job->n_in, sl->base >= 0, job->base >= 0, what);
            if (s != MK_OK) mk_error_prefix(s, "%s", r->path);
        }
    }
    if (s == MK_OK && cut) {
        /* every model with its size: "[1000, 64] in base, [1100, 64] in ft1" */
        mk_buf sizes = {0};
        for (size_t k = 0; k < job->n_in; k++) {
            char a[160];
            const mk_plan_model *pm = &p->models[pt->in[k].model];
            mk_buf_printf(&sizes, "%s%s in %s", k ? ", " : "", mk_shape_str(&pm->src->tensors[pt->in[k].tensor], a),
                          pm->ref->text);
        }
        pt->out.shape[0] = (int64_t)rows;
        mk_warn("tensor %s: vocabulary sizes differ (%s); keeping the first %llu rows of every model "
                "(their token ids must mean the same)",
                pt->out.name, sizes.data ? sizes.data : "", (unsigned long long)rows);
        mk_buf_free(&sizes);
        if (!p->vocab_rows || rows < p->vocab_rows) p->vocab_rows = rows;
    }
    if (s == MK_OK && !skip) {
        const mk_tensor_info *f = &p->models[pt->in[0].model].src->tensors[pt->in[0].tensor];
        mk_dtype compute = r->dtype != MK_DTYPE_NONE ? r->dtype : cdt != MK_DTYPE_NONE ? cdt : f->dtype;
        bool runs = !passthrough;
        mk_dtype od = b->o->out_dtype != MK_DTYPE_NONE ? b->o->out_dtype
                      : r->out_dtype != MK_DTYPE_NONE  ? r->out_dtype
                      : runs && (m->flags & MK_M_RESULT_F32) && mk_dtype_info(compute)->is_float ? MK_F32
                                                       : compute;
        job->compute_dtype = compute;
        if (!mk_dtype_info(f->dtype)->is_float) {
            /* integer and bool buffers (position ids, masks) are copied from the first model */
            od = f->dtype;
            passthrough = true;
        }
        if (passthrough) {
            job->n_in = 1;
            job->base = -1;
            pt->identity = true;
        }
        pt->out.dtype = od;
        s = mk_tensor_info_finish(&pt->out);
    }
    if (s == MK_OK && !skip) {
        job->name = pt->out.name;
        job->numel = pt->out.numel;
        job->cols = mk_tensor_cols(&pt->out);
        job->rows = mk_tensor_rows(&pt->out);
        job->ndim = pt->out.ndim;
        job->shape = pt->out.shape;
        job->m = (const double(*)[MK_MAX_PARAMS])pt->m;
        job->m_set = (const bool(*)[MK_MAX_PARAMS])pt->m_set;
        job->is_embed = embed;
        if (!pt->identity) s = resolve_params(b, sl, pt, srcs, in_names);
    }
    if (s == MK_OK && !skip && !pt->identity && m->is_identity && m->is_identity(job)) pt->identity = true;
    if (s == MK_OK && !skip && pt->identity) {
        /* raw bytes only when nothing would round them: same dtype in, computed and out */
        const mk_tensor_info *f = &p->models[pt->in[0].model].src->tensors[pt->in[0].tensor];
        bool is_float = mk_dtype_info(f->dtype)->is_float;
        pt->raw = f->dtype == pt->out.dtype && (!is_float || f->dtype == job->compute_dtype) && !cut && !remap;
    }
    for (size_t k = 0; k < sl->n; k++) free(in_names ? in_names[k] : NULL);
    free(in_names);
    free(srcs);
    if (s == MK_OK && skip) {
        p->n--;
        free(pt->out.name);
        free(pt->in);
        free(pt->m);
        free(pt->m_set);
        memset(pt, 0, sizeof *pt);
    }
    return s;
}

static mk_status add_slice_layers(builder *b, const islice *sl, long *out_layer)
{
    const isrc *rs = &sl->src[0];
    const layer_map *rlm = &b->lm[rs->model];
    long n = rs->end - rs->start;
    for (long j = 0; j < n; j++) {
        long l = rs->start + j;
        if (l >= rlm->n_layers || rlm->counts[l] == 0)
            return mk_error(MK_ERR_RECIPE, "model %s has no tensors for layer %ld", b->p->models[rs->model].ref->text, l);
        for (size_t q = 0; q < rlm->counts[l]; q++) MK_TRY(add_tensor(b, sl, 0, rlm->idx[l][q], *out_layer, j, sl->n));
        (*out_layer)++;
    }
    return MK_OK;
}

/* Non-layer tensors of the slice's first n_use sources, pre (post = false) or post
 * weights, in source order then file order, each name once. */
static mk_status add_non_layer(builder *b, const islice *sl, bool post, size_t n_use)
{
    mk_plan *p = b->p;
    size_t first = p->n;
    for (size_t k = 0; k < n_use; k++) {
        const isrc *is = &sl->src[k];
        const mk_plan_model *pm = &p->models[is->model];
        const layer_map *lm = &b->lm[is->model];
        for (size_t q = 0; q < lm->n_other; q++) {
            const char *nm = pm->src->tensors[lm->other[q]].name;
            if (mk_arch_is_post(&pm->arch, nm) != post) continue;
            char *canon = mk_arch_canonical(&pm->arch, nm);
            if (!canon) return MK_ERR_NOMEM;
            bool seen = false;
            for (size_t i = first; i < p->n && !seen; i++) seen = strcmp(p->t[i].out.name, canon) == 0;
            free(canon);
            if (!seen) MK_TRY(add_tensor(b, sl, k, lm->other[q], -1, 0, n_use));
        }
    }
    return MK_OK;
}

/* mergekit (merge.py _model_out_config) writes the config.json of the base model, else of the
 * first model, and cannot merge at all when a model has none (AutoConfig fails). mergekit-c
 * reads models without one (a bare .safetensors file): when the donor has none, the first
 * model in recipe order that has one lends it (with a warning naming both); when none has
 * one, the output would not load, so it is an error. */
static mk_status pick_config_donor(const mk_recipe *r, mk_plan *p)
{
    p->config_donor = p->donor;
    if (p->models[p->donor].has_config) return MK_OK;
    for (size_t i = 0; i < p->n_models; i++)
        if (p->models[i].has_config) {
            p->config_donor = (int)i;
            mk_warn("%s: %s (the %s) has no config.json; the output's config.json is %s's, the first model that has one",
                    r->path, p->models[p->donor].ref->text, r->has_base ? "base model" : "first model",
                    p->models[i].ref->text);
            return MK_OK;
        }
    const mk_model_ref *d = p->models[p->donor].ref;
    return rerr(r, d->pos,
                "no input model has a config.json (%s%s): the output needs one to load; mergekit takes the base "
                "model's, else the first model's",
                p->n_models == 1 ? "" : "looked in ", p->n_models == 1 ? d->text : "every model");
}

mk_status mk_plan_build(const mk_recipe *r, mk_source *const *sources, size_t n_sources, const mk_plan_opts *o,
                        mk_plan *p)
{
    memset(p, 0, sizeof *p);
    p->recipe = r;
    p->out_layers = -1;
    p->tok = o->tok;
    builder b = {r, o, p, NULL, 0};

    const mk_method *m = mk_method_find(r->method);
    if (!m) {
        const char *names[64];
        size_t n = 0;
        for (const mk_method *const *q = mk_methods; *q && n < 64; q++) names[n++] = (*q)->name;
        const char *hint = mk_did_you_mean(r->method, names, n);
        char h[96] = "";
        if (hint) snprintf(h, sizeof h, " (did you mean '%s'?)", hint);
        return rerr(r, r->method_pos, "unknown merge_method '%s'%s", r->method, h);
    }
    p->method = m;
    MK_TRY(check_params(r, m));
    if (m->base == MK_BASE_REQUIRED && !r->has_base) {
        bool all = r->n_slices > 0;
        for (size_t i = 0; i < r->n_slices; i++) all &= r->slices[i].has_base;
        if (!all) return rerr(r, r->method_pos, "merge_method '%s' needs a base_model", m->name);
    }

    const mk_model_ref *refs[1024];
    size_t nr = mk_recipe_models(r, refs, 1024);
    if (nr != n_sources) MK_BUG("plan: sources do not match the recipe's models");
    mk_status s = open_models(&b, refs, sources, nr);
    islice *sl = NULL;
    size_t ns = 0;
    if (s == MK_OK) s = normalize_slices(&b, &sl, &ns);
    if (s == MK_OK) s = check_slices(&b, sl, ns);
    if (s == MK_OK) {
        int donor = r->has_base ? model_index(p, &r->base) : (int)sl[0].src[0].model;
        p->donor = donor;
        s = pick_config_donor(r, p);
        /* pre weights from the first slice, layers in order, post weights from the last */
        if (s == MK_OK) s = add_non_layer(&b, &sl[0], false, sl[0].n);
        long out_layer = 0;
        for (size_t i = 0; i < ns && s == MK_OK; i++) s = add_slice_layers(&b, &sl[i], &out_layer);
        /* mergekit 0.1.5 (plan.py plan_module) pairs the last slice's sources with as many
         * weight names as the FIRST slice has sources, so only that many take part */
        size_t n_post = sl[ns - 1].n < sl[0].n ? sl[ns - 1].n : sl[0].n;
        if (s == MK_OK && n_post < sl[ns - 1].n)
            mk_warn("%s: the final norm and lm_head are merged from the first %zu source(s) of the last slice only, "
                    "as mergekit does (the first slice has %zu)",
                    r->path, n_post, sl[0].n);
        if (s == MK_OK) s = add_non_layer(&b, &sl[ns - 1], true, n_post);
        if (r->n_slices) p->out_layers = out_layer;
    }
    if (s == MK_OK) {
        p->outs = mk_calloc(p->n ? p->n : 1, sizeof *p->outs);
        if (!p->outs) s = MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        p->outs[i] = p->t[i].out;
        p->total_bytes += p->t[i].out.nbytes;
        if (p->t[i].out.numel > p->max_numel) p->max_numel = p->t[i].out.numel;
    }
    if (s == MK_OK) {
        mk_name_index ix;
        size_t dup = 0;
        s = mk_name_index_build(&ix, p->outs, p->n, &dup);
        if (s != MK_OK) s = mk_error(MK_ERR_RECIPE, "%s: the recipe produces tensor %s twice", r->path, p->outs[dup].name);
        mk_name_index_free(&ix);
    }
    /* method rules last, so every structural error above is reported first */
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        if (p->t[i].identity || !m->check) continue;
        s = m->check(&p->t[i].job);
        if (s != MK_OK) mk_error_prefix(s, "%s", r->path);
    }
    if (b.lm)
        for (size_t i = 0; i < p->n_models; i++) layer_map_free(&b.lm[i]);
    free(b.lm);
    islices_free(sl, ns);
    if (s != MK_OK) mk_plan_free(p);
    return s;
}

void mk_plan_free(mk_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->t[i].out.name);
        free(p->t[i].in);
        free(p->t[i].m);
        free(p->t[i].m_set);
    }
    free(p->t);
    free(p->outs);
    for (size_t i = 0; i < p->n_models; i++) mk_arch_free(&p->models[i].arch);
    free(p->models);
    memset(p, 0, sizeof *p);
}

/* The streams of tensor t (exec.h): a ring of four blocks per input read in one pass, or the
 * inputs held for several passes (within hold_bytes) and a block per input for alignment. */
static uint64_t stream_memory(const mk_plan *p, const mk_plan_tensor *t, uint64_t hold_bytes, bool *one_pass)
{
    uint64_t in = 0, b = MK_DSTREAM_BLOCK;
    for (size_t k = 0; k < t->job.n_in; k++)
        in += t->job.rows * t->job.cols * mk_dtype_size(p->models[t->in[k].model].src->tensors[t->in[k].tensor].dtype);
    bool one = t->identity || (p->method->one_pass && p->method->one_pass(&t->job));
    *one_pass = one;
    if (one) return t->job.n_in * 4 * b < in + t->job.n_in * b ? t->job.n_in * 4 * b : in + t->job.n_in * b;
    return in <= hold_bytes ? in + t->job.n_in * b : 0;
}

/* The most stream memory at once: a tensor's streams and those of the tensors read ahead of
 * it, as exec.c reads ahead (the next tensor; where tensors take several passes, more while
 * what their reading brings in fits hold_bytes, eight at most). *largest: one tensor's most. */
static uint64_t streams_peak(const mk_plan *p, uint64_t hold_bytes, uint64_t *largest)
{
    uint64_t *sm = mk_calloc(p->n ? p->n : 1, sizeof *sm), *bud = mk_calloc(p->n ? p->n : 1, sizeof *bud), peak = 0;
    bool *one = mk_calloc(p->n ? p->n : 1, sizeof *one);
    *largest = 0;
    for (size_t i = 0; sm && bud && one && i < p->n; i++) {
        const mk_plan_tensor *t = &p->t[i];
        sm[i] = stream_memory(p, t, hold_bytes, &one[i]);
        /* read through the page cache: what exec.c asks the page cache for */
        for (size_t k = 0; !sm[i] && k < t->job.n_in; k++)
            bud[i] += p->models[t->in[k].model].src->tensors[t->in[k].tensor].nbytes;
        if (sm[i]) bud[i] = sm[i];
        if (sm[i] > *largest) *largest = sm[i];
    }
    for (size_t i = 0; sm && bud && one && i < p->n; i++) {
        uint64_t w = sm[i], sum = 0;
        for (size_t j = i + 1, cnt = 0; j < p->n && cnt < 8; j++, cnt++) {
            if (cnt && (one[j] || sum + bud[j] > hold_bytes)) break;
            sum += bud[j];
            w += sm[j];
        }
        if (w > peak) peak = w;
    }
    if (!sm || !bud || !one) peak = 2 * hold_bytes; /* out of memory here: the bound */
    free(sm);
    free(bud);
    free(one);
    return peak;
}

uint64_t mk_plan_peak_memory(const mk_plan *p, int threads, uint64_t chunk_elems, uint64_t keep_bytes, uint64_t hold_bytes)
{
    uint64_t per_thread = 0, meta = 0, keep = 0, streams = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_plan_tensor *t = &p->t[i];
        uint64_t cols = t->job.cols ? t->job.cols : 1;
        uint64_t rows = chunk_elems / cols ? chunk_elems / cols : 1;
        uint64_t ce = rows * cols < t->out.numel ? rows * cols : t->out.numel;
        /* inputs + output as f32, a raw-read scratch (8-byte elements at most), the
         * dtype conversion buffer on the way out; method scratch: deltas, keep flags and
         * keys of task-vector methods (5 bytes per input element + 4), a 256 KiB
         * histogram while selecting */
        uint64_t need = ce * (4 * (t->job.n_in + 1) + 8 + 8) + ce * (5 * t->job.n_in + 4) + (256u << 10);
        if (need > per_thread) per_thread = need;
        /* what a method keeps between passes (exec.h), at most a float per element, up to the cap */
        uint64_t in_bytes = t->out.numel * 4;
        if (in_bytes > keep) keep = in_bytes;
        meta += sizeof *t + strlen(t->out.name) + t->job.n_in * (sizeof *t->in + 2 * MK_MAX_PARAMS * 9);
    }
    for (size_t i = 0; i < p->n_models; i++) meta += p->models[i].src->n_tensors * (sizeof(mk_tensor_info) + 64);
    /* selections: two 512 KiB histograms per input model (select.h) */
    meta += (uint64_t)p->n_models * (1u << 20);
    /* the streams of the tensor computed and of those read ahead, and the rings of closed
     * streams kept for the next ones (mk_dstream.h), about a tensor's */
    uint64_t window = streams_peak(p, hold_bytes, &streams);
    uint64_t pool = streams < MK_DSTREAM_POOL_BYTES ? streams : MK_DSTREAM_POOL_BYTES;
    /* the output's windows gathering to be written around the page cache (mk_dwrite.h) */
    const uint64_t wcap = (uint64_t)MK_DWRITE_GATHER * MK_DWRITE_WIN;
    uint64_t out = p->total_bytes < wcap ? p->total_bytes : wcap;
    return per_thread * (uint64_t)(threads > 0 ? threads : 1) + meta + (keep < keep_bytes ? keep : keep_bytes) + window +
           pool + out;
}
