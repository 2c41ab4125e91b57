/* recipe.c - see recipe.h.
 *
 * Walks the libyaml document directly. Aliases make a document a graph, so every walk is
 * bounded: a visit budget (alias "billion laughs" bombs) and a depth limit. */
#include "recipe.h"

#include "../core/mk_hub.h"
#include "../core/mk_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define RECIPE_MAX_BYTES (4u << 20)
#define RECIPE_MAX_VISITS 1000000
#define RECIPE_MAX_DEPTH 32

typedef struct ctx {
    yaml_document_t *doc;
    const char *path;
    long visits;
    mk_status err;
} ctx;

static mk_pos node_pos(const yaml_node_t *n)
{
    return (mk_pos){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
}

static mk_status ferr(ctx *c, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mk_status ferr(ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    if (c->err != MK_OK) return c->err;
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mk_pos p = n ? node_pos(n) : (mk_pos){0, 0};
    if (p.line) c->err = mk_error(MK_ERR_RECIPE, "%s:%d:%d: %s", c->path, p.line, p.col, msg);
    else c->err = mk_error(MK_ERR_RECIPE, "%s: %s", c->path, msg);
    return c->err;
}

static yaml_node_t *get(ctx *c, int idx)
{
    if (++c->visits > RECIPE_MAX_VISITS) {
        ferr(c, NULL, "recipe expands to too many values (alias bomb?)");
        return NULL;
    }
    return yaml_document_get_node(c->doc, idx);
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = sval(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* YAML 1.1 booleans (what PyYAML's safe_load, and so mergekit, accepts). */
static int parse_bool(const char *s)
{
    static const char *const t[] = {"true", "yes", "on"}, *const f[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, t[i]) == 0) return 1;
        if (strcasecmp(s, f[i]) == 0) return 0;
    }
    return -1;
}

/* A number as mergekit's pydantic models accept it: numeric scalars (quoted or not,
 * "1e-3" included) and booleans. Non-finite values are refused. */
static mk_status scalar_number(ctx *c, const yaml_node_t *n, const char *what, double *out)
{
    if (n->type != YAML_SCALAR_NODE) return ferr(c, n, "%s must be a number, found %s", what, kind_name(n));
    const char *s = sval(n);
    int b = parse_bool(s);
    if (b >= 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        *out = b;
        return MK_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE) {
        /* YAML spellings of special floats */
        if (strcasecmp(s, ".nan") == 0 || strcasecmp(s, ".inf") == 0 || strcasecmp(s, "-.inf") == 0 ||
            strcasecmp(s, "+.inf") == 0)
            return ferr(c, n, "%s must be a finite number, found '%s'", what, s);
        return ferr(c, n, "%s must be a number, found '%.60s'", what, s);
    }
    if (!isfinite(v)) return ferr(c, n, "%s must be a finite number, found '%s'", what, s);
    *out = v;
    return MK_OK;
}

static mk_status scalar_int(ctx *c, const yaml_node_t *n, const char *what, int64_t lo, int64_t hi, int64_t *out)
{
    if (n->type != YAML_SCALAR_NODE) return ferr(c, n, "%s must be an integer, found %s", what, kind_name(n));
    const char *s = sval(n);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno == ERANGE) return ferr(c, n, "%s must be an integer, found '%.60s'", what, s);
    if (v < lo || v > hi) return ferr(c, n, "%s must be between %lld and %lld, found %lld", what, (long long)lo, (long long)hi, v);
    *out = v;
    return MK_OK;
}

static mk_status scalar_string(ctx *c, const yaml_node_t *n, const char *what, char **out)
{
    if (n->type != YAML_SCALAR_NODE) return ferr(c, n, "%s must be a string, found %s", what, kind_name(n));
    if (strlen(sval(n)) != n->data.scalar.length) return ferr(c, n, "%s contains a NUL character", what);
    *out = mk_strdup(sval(n));
    return *out ? MK_OK : (c->err = MK_ERR_NOMEM);
}

/* Check a mapping: keys are scalars, known (when `keys` is given), and not repeated. */
static mk_status map_check(ctx *c, const yaml_node_t *n, const char *what, const char *const *keys, size_t nkeys)
{
    if (n->type != YAML_MAPPING_NODE) return ferr(c, n, "%s must be a mapping, found %s", what, kind_name(n));
    yaml_node_pair_t *a = n->data.mapping.pairs.start, *e = n->data.mapping.pairs.top;
    for (yaml_node_pair_t *p = a; p < e; p++) {
        yaml_node_t *k = get(c, p->key);
        if (!k) return c->err;
        if (k->type != YAML_SCALAR_NODE) return ferr(c, k, "%s: keys must be strings", what);
        for (yaml_node_pair_t *q = a; q < p; q++) {
            yaml_node_t *k2 = get(c, q->key);
            if (!k2) return c->err;
            if (k2->type == YAML_SCALAR_NODE && strcmp(sval(k2), sval(k)) == 0)
                return ferr(c, k, "%s: key '%s' is given twice", what, sval(k));
        }
        if (!keys) continue;
        bool known = false;
        for (size_t i = 0; i < nkeys && !known; i++) known = strcmp(keys[i], sval(k)) == 0;
        if (!known) {
            const char *hint = mk_did_you_mean(sval(k), keys, nkeys);
            if (hint) return ferr(c, k, "unknown key '%s' in %s (did you mean '%s'?)", sval(k), what, hint);
            return ferr(c, k, "unknown key '%s' in %s", sval(k), what);
        }
    }
    return MK_OK;
}

/* Value for key `key` in mapping n, or NULL. Keys were checked by map_check. */
static yaml_node_t *map_get(ctx *c, const yaml_node_t *n, const char *key)
{
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = get(c, p->key);
        if (!k) return NULL;
        if (k->type == YAML_SCALAR_NODE && strcmp(sval(k), key) == 0) return get(c, p->value);
    }
    return NULL;
}

/* ---- parameter values ------------------------------------------------------------------ */

static void pvalue_free(mk_pvalue *v)
{
    if (!v) return;
    free(v->grad);
    if (v->cond) {
        for (size_t i = 0; i < v->n; i++) {
            free(v->cond[i].filter);
            pvalue_free(v->cond[i].value);
            free(v->cond[i].value);
        }
    }
    free(v->cond);
    memset(v, 0, sizeof *v);
}

static mk_status parse_pvalue(ctx *c, const yaml_node_t *n, const char *what, int depth, mk_pvalue *v)
{
    memset(v, 0, sizeof *v);
    v->pos = node_pos(n);
    if (depth > RECIPE_MAX_DEPTH) return ferr(c, n, "%s: nested too deeply", what);
    if (n->type == YAML_SCALAR_NODE) {
        v->kind = MK_PV_SCALAR;
        return scalar_number(c, n, what, &v->scalar);
    }
    if (n->type == YAML_MAPPING_NODE)
        return ferr(c, n, "%s: a {filter, value} entry must be inside a list (write '- filter: ...')", what);
    if (n->type != YAML_SEQUENCE_NODE) return ferr(c, n, "%s: unexpected value", what);
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (len == 0) return ferr(c, n, "%s: empty list", what);
    yaml_node_t *first = get(c, n->data.sequence.items.start[0]);
    if (!first) return c->err;
    if (first->type == YAML_SCALAR_NODE) {
        v->kind = MK_PV_GRADIENT;
        v->grad = mk_calloc(len, sizeof *v->grad);
        if (!v->grad) return c->err = MK_ERR_NOMEM;
        v->n = len;
        for (size_t i = 0; i < len; i++) {
            yaml_node_t *e = get(c, n->data.sequence.items.start[i]);
            if (!e) return c->err;
            if (e->type != YAML_SCALAR_NODE)
                return ferr(c, e, "%s: a gradient is a list of numbers; element %zu is %s", what, i, kind_name(e));
            MK_TRY(scalar_number(c, e, what, &v->grad[i]));
        }
        return MK_OK;
    }
    v->kind = MK_PV_COND;
    v->cond = mk_calloc(len, sizeof *v->cond);
    if (!v->cond) return c->err = MK_ERR_NOMEM;
    v->n = len;
    static const char *const keys[] = {"filter", "value"};
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *e = get(c, n->data.sequence.items.start[i]);
        if (!e) return c->err;
        if (e->type != YAML_MAPPING_NODE)
            return ferr(c, e, "%s: expected a list of numbers or of {filter, value} entries; element %zu is %s", what,
                        i, kind_name(e));
        MK_TRY(map_check(c, e, what, keys, 2));
        yaml_node_t *f = map_get(c, e, "filter"), *val = map_get(c, e, "value");
        if (c->err) return c->err;
        if (!val) return ferr(c, e, "%s: entry %zu has no 'value'", what, i);
        if (f && !is_null(f)) MK_TRY(scalar_string(c, f, "filter", &v->cond[i].filter));
        v->cond[i].value = mk_calloc(1, sizeof(mk_pvalue));
        if (!v->cond[i].value) return c->err = MK_ERR_NOMEM;
        MK_TRY(parse_pvalue(c, val, what, depth + 1, v->cond[i].value));
    }
    return MK_OK;
}

static void params_free(mk_params *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->p[i].name);
        pvalue_free(&ps->p[i].value);
    }
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

static mk_status parse_params(ctx *c, const yaml_node_t *n, mk_params *ps)
{
    if (is_null(n)) return MK_OK;
    MK_TRY(map_check(c, n, "parameters", NULL, 0));
    size_t len = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    ps->p = mk_calloc(len ? len : 1, sizeof *ps->p);
    if (!ps->p) return c->err = MK_ERR_NOMEM;
    for (size_t i = 0; i < len; i++) {
        yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = get(c, pr->key), *v = get(c, pr->value);
        if (!k || !v) return c->err;
        mk_param *p = &ps->p[ps->n++];
        p->name = mk_strdup(sval(k));
        p->pos = node_pos(k);
        if (!p->name) return c->err = MK_ERR_NOMEM;
        char what[200];
        snprintf(what, sizeof what, "parameter '%s'", sval(k));
        MK_TRY(parse_pvalue(c, v, what, 0, &p->value));
    }
    return MK_OK;
}

/* ---- model references --------------------------------------------------------------- */

/* path without "." components and repeated or trailing slashes ("./a//b/." -> "a/b") */
static char *lexical_path(const char *p)
{
    size_t n = strlen(p);
    char *out = mk_malloc(n + 2);
    if (!out) return NULL;
    size_t o = 0;
    bool abs = p[0] == '/';
    if (abs) out[o++] = '/';
    for (const char *c = p; *c;) {
        while (*c == '/') c++;
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len && !(len == 1 && c[0] == '.')) {
            if (o && out[o - 1] != '/') out[o++] = '/';
            memcpy(out + o, c, len);
            o += len;
        }
        c += len;
    }
    if (!o) out[o++] = '.';
    out[o] = 0;
    return out;
}

static char *canonical_path(const char *p)
{
    char *real = realpath(p, NULL);
    if (real) {
        char *r = mk_strdup(real);
        free(real);
        return r;
    }
    return lexical_path(p);
}

char *mk_model_key(const char *path, const char *lora)
{
    char *a = canonical_path(path), *b = lora ? canonical_path(lora) : NULL;
    char *k = a && (b || !lora) ? (lora ? mk_asprintf("%s+%s", a, b) : mk_strdup(a)) : NULL;
    free(a);
    free(b);
    return k;
}

static void ref_free(mk_model_ref *r)
{
    free(r->key);
    free(r->text);
    free(r->path);
    free(r->lora);
    free(r->revision);
    free(r->lora_revision);
    memset(r, 0, sizeof *r);
}

static mk_status split_rev(ctx *c, const yaml_node_t *n, const char *part, char **path, char **rev)
{
    const char *at = strchr(part, '@');
    if (at && strchr(at + 1, '@')) return ferr(c, n, "model reference '%s' has more than one '@'", part);
    size_t len = at ? (size_t)(at - part) : strlen(part);
    if (!len) return ferr(c, n, "model reference '%s' has an empty path", part);
    if (at && !(*rev = mk_strdup(at + 1))) return c->err = MK_ERR_NOMEM;
    *path = mk_strndup(part, len);
    return *path ? MK_OK : (c->err = MK_ERR_NOMEM);
}

static mk_status parse_ref(ctx *c, const yaml_node_t *n, const char *what, mk_model_ref *r)
{
    memset(r, 0, sizeof *r);
    r->pos = node_pos(n);
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = sval(n);
        if (!*s) return ferr(c, n, "%s is empty", what);
        const char *plus = strchr(s, '+');
        if (plus && strchr(plus + 1, '+')) return ferr(c, n, "model reference '%s' has more than one '+'", s);
        r->text = mk_strdup(s);
        if (!r->text) return c->err = MK_ERR_NOMEM;
        char *base = plus ? mk_strndup(s, (size_t)(plus - s)) : mk_strdup(s);
        if (!base) return c->err = MK_ERR_NOMEM;
        mk_status st = split_rev(c, n, base, &r->path, &r->revision);
        free(base);
        MK_TRY(st);
        if (plus) MK_TRY(split_rev(c, n, plus + 1, &r->lora, &r->lora_revision));
        r->key = mk_model_key(r->path, r->lora);
        return r->key ? MK_OK : (c->err = MK_ERR_NOMEM);
    }
    /* dict form: {model: {path, revision}, lora: {path, revision}, override_architecture} */
    static const char *const keys[] = {"model", "lora", "override_architecture"};
    MK_TRY(map_check(c, n, what, keys, 3));
    static const char *const pkeys[] = {"path", "revision"};
    yaml_node_t *m = map_get(c, n, "model"), *l = map_get(c, n, "lora");
    if (c->err) return c->err;
    if (!m) return ferr(c, n, "%s has no 'model'", what);
    if (map_get(c, n, "override_architecture"))
        return ferr(c, n, "override_architecture is not supported yet");
    for (int pass = 0; pass < 2; pass++) {
        yaml_node_t *x = pass ? l : m;
        if (!x || is_null(x)) continue;
        char **dst = pass ? &r->lora : &r->path, **rev = pass ? &r->lora_revision : &r->revision;
        if (x->type == YAML_SCALAR_NODE) {
            MK_TRY(scalar_string(c, x, "path", dst));
            continue;
        }
        MK_TRY(map_check(c, x, pass ? "lora" : "model", pkeys, 2));
        yaml_node_t *p = map_get(c, x, "path");
        if (!p) return ferr(c, x, "'%s' has no 'path'", pass ? "lora" : "model");
        MK_TRY(scalar_string(c, p, "path", dst));
        yaml_node_t *rv = map_get(c, x, "revision");
        if (rv && !is_null(rv)) MK_TRY(scalar_string(c, rv, "revision", rev));
    }
    r->text = r->lora ? mk_asprintf("%s+%s", r->path, r->lora) : mk_strdup(r->path);
    r->key = mk_model_key(r->path, r->lora);
    return r->text && r->key ? MK_OK : (c->err = MK_ERR_NOMEM);
}

/* ---- the recipe ------------------------------------------------------------------------ */

static mk_status parse_dtype(ctx *c, const yaml_node_t *n, const char *what, mk_dtype *out)
{
    char *s = NULL;
    MK_TRY(scalar_string(c, n, what, &s));
    mk_dtype t = mk_dtype_from_user(s);
    mk_status st = MK_OK;
    if (t != MK_F32 && t != MK_F16 && t != MK_BF16 && t != MK_F64)
        st = ferr(c, n, "%s '%s' is not supported (use bfloat16, float16 or float32)", what, s);
    free(s);
    *out = t;
    return st;
}

static mk_status parse_models(ctx *c, const yaml_node_t *n, mk_recipe *r)
{
    if (n->type != YAML_SEQUENCE_NODE) return ferr(c, n, "'models' must be a list, found %s", kind_name(n));
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!len) return ferr(c, n, "'models' is empty");
    r->models = mk_calloc(len, sizeof *r->models);
    if (!r->models) return c->err = MK_ERR_NOMEM;
    static const char *const keys[] = {"model", "parameters"};
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *e = get(c, n->data.sequence.items.start[i]);
        if (!e) return c->err;
        mk_input_model *m = &r->models[r->n_models++];
        if (e->type == YAML_SCALAR_NODE) { /* "- path" shorthand */
            MK_TRY(parse_ref(c, e, "model", &m->ref));
            continue;
        }
        char what[64];
        snprintf(what, sizeof what, "models[%zu]", i);
        MK_TRY(map_check(c, e, what, keys, 2));
        yaml_node_t *mm = map_get(c, e, "model"), *pp = map_get(c, e, "parameters");
        if (c->err) return c->err;
        if (!mm) return ferr(c, e, "%s has no 'model'", what);
        MK_TRY(parse_ref(c, mm, "model", &m->ref));
        if (pp) MK_TRY(parse_params(c, pp, &m->params));
    }
    return MK_OK;
}

static mk_status parse_slices(ctx *c, const yaml_node_t *n, mk_recipe *r)
{
    if (n->type != YAML_SEQUENCE_NODE) return ferr(c, n, "'slices' must be a list, found %s", kind_name(n));
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!len) return ferr(c, n, "'slices' is empty");
    r->slices = mk_calloc(len, sizeof *r->slices);
    if (!r->slices) return c->err = MK_ERR_NOMEM;
    static const char *const keys[] = {"sources", "parameters", "base_model", "residual_weight"};
    static const char *const skeys[] = {"model", "layer_range", "parameters"};
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *e = get(c, n->data.sequence.items.start[i]);
        if (!e) return c->err;
        char what[64];
        snprintf(what, sizeof what, "slices[%zu]", i);
        MK_TRY(map_check(c, e, what, keys, 4));
        mk_output_slice *sl = &r->slices[r->n_slices++];
        sl->pos = node_pos(e);
        yaml_node_t *src = map_get(c, e, "sources"), *pp = map_get(c, e, "parameters"), *bm = map_get(c, e, "base_model");
        if (c->err) return c->err;
        if (pp) MK_TRY(parse_params(c, pp, &sl->params));
        if (bm && !is_null(bm)) {
            MK_TRY(parse_ref(c, bm, "base_model", &sl->base));
            sl->has_base = true;
        }
        if (!src) return ferr(c, e, "%s has no 'sources'", what);
        if (src->type != YAML_SEQUENCE_NODE) return ferr(c, src, "%s.sources must be a list", what);
        size_t ns = (size_t)(src->data.sequence.items.top - src->data.sequence.items.start);
        if (!ns) return ferr(c, src, "%s.sources is empty", what);
        sl->sources = mk_calloc(ns, sizeof *sl->sources);
        if (!sl->sources) return c->err = MK_ERR_NOMEM;
        for (size_t k = 0; k < ns; k++) {
            yaml_node_t *s = get(c, src->data.sequence.items.start[k]);
            if (!s) return c->err;
            char swhat[96];
            snprintf(swhat, sizeof swhat, "%s.sources[%zu]", what, k);
            MK_TRY(map_check(c, s, swhat, skeys, 3));
            mk_input_slice *is = &sl->sources[sl->n_sources++];
            is->pos = node_pos(s);
            yaml_node_t *m = map_get(c, s, "model"), *lr = map_get(c, s, "layer_range"), *sp = map_get(c, s, "parameters");
            if (c->err) return c->err;
            if (!m) return ferr(c, s, "%s has no 'model'", swhat);
            MK_TRY(parse_ref(c, m, "model", &is->ref));
            if (sp) MK_TRY(parse_params(c, sp, &is->params));
            if (lr) {
                if (lr->type != YAML_SEQUENCE_NODE || lr->data.sequence.items.top - lr->data.sequence.items.start != 2)
                    return ferr(c, lr, "%s.layer_range must be a list [start, end]", swhat);
                yaml_node_t *a = get(c, lr->data.sequence.items.start[0]), *b = get(c, lr->data.sequence.items.start[1]);
                if (!a || !b) return c->err;
                MK_TRY(scalar_int(c, a, "layer_range start", 0, 1000000, &is->start));
                MK_TRY(scalar_int(c, b, "layer_range end", 0, 1000000, &is->end));
                if (is->end < is->start)
                    return ferr(c, lr, "%s.layer_range [%lld, %lld] ends before it starts", swhat, (long long)is->start,
                                (long long)is->end);
                is->has_range = true;
            }
        }
    }
    return MK_OK;
}

static const char *const top_keys[] = {"merge_method", "base_model", "models", "slices", "modules", "parameters",
                                       "dtype", "out_dtype", "tokenizer_source", "tokenizer", "chat_template",
                                       "random_seed", "name"};

/* tokenizer: tokens: {TOKEN: {source: MODEL | {kind: model_token, model, token | token_id}
 * | {kind: zero}, force: BOOL}} */
static mk_status parse_token_overrides(ctx *c, const yaml_node_t *n, mk_recipe *r)
{
    if (n->type != YAML_MAPPING_NODE) return ferr(c, n, "tokenizer tokens must be a mapping, found %s", kind_name(n));
    yaml_node_pair_t *a = n->data.mapping.pairs.start, *e = n->data.mapping.pairs.top;
    size_t cnt = (size_t)(e - a);
    r->token_overrides = mk_calloc(cnt ? cnt : 1, sizeof *r->token_overrides);
    if (!r->token_overrides) return MK_ERR_NOMEM;
    for (yaml_node_pair_t *p = a; p < e; p++) {
        yaml_node_t *k = get(c, p->key), *v = get(c, p->value);
        if (!k || !v) return c->err;
        mk_token_override *o = &r->token_overrides[r->n_token_overrides++];
        o->pos = node_pos(k);
        MK_TRY(scalar_string(c, k, "tokenizer tokens key", &o->token));
        for (size_t q = 0; q + 1 < r->n_token_overrides; q++)
            if (strcmp(r->token_overrides[q].token, o->token) == 0)
                return ferr(c, k, "token '%s' has two conflicting entries in tokenizer tokens (the other at %d:%d)",
                            o->token, r->token_overrides[q].pos.line, r->token_overrides[q].pos.col);
        if (is_null(v)) continue;
        static const char *const keys[] = {"source", "force"};
        MK_TRY(map_check(c, v, "tokenizer tokens entry", keys, 2));
        yaml_node_t *f = map_get(c, v, "force"), *s = map_get(c, v, "source");
        if (c->err) return c->err;
        if (f && !is_null(f)) {
            int b = f->type == YAML_SCALAR_NODE ? parse_bool(sval(f)) : -1;
            if (b < 0) return ferr(c, f, "token '%s': force must be true or false", o->token);
            o->force = b;
        }
        if (!s || is_null(s)) {
            if (o->force) return ferr(c, v, "token '%s': force needs a source to force", o->token);
            continue;
        }
        if (s->type == YAML_SCALAR_NODE) {
            o->kind = MK_TOKSRC_MODEL;
            o->model_pos = node_pos(s);
            MK_TRY(scalar_string(c, s, "token source", &o->model));
            continue;
        }
        static const char *const skeys[] = {"kind", "model", "token", "token_id"};
        MK_TRY(map_check(c, s, "token source", skeys, 4));
        yaml_node_t *kd = map_get(c, s, "kind"), *md = map_get(c, s, "model"), *tt = map_get(c, s, "token"),
                    *ti = map_get(c, s, "token_id");
        if (c->err) return c->err;
        if (!kd || kd->type != YAML_SCALAR_NODE) return ferr(c, s, "token '%s': source needs a kind (model_token or zero)", o->token);
        if (strcmp(sval(kd), "zero") == 0) {
            if (md || tt || ti) return ferr(c, s, "token '%s': a zero source takes no model, token or token_id", o->token);
            o->kind = MK_TOKSRC_ZERO;
            continue;
        }
        if (strcmp(sval(kd), "model_token") != 0)
            return ferr(c, kd, "token '%s': unknown source kind '%s' (model_token or zero)", o->token, sval(kd));
        o->kind = MK_TOKSRC_MODEL_TOKEN;
        if (!md) return ferr(c, s, "token '%s': a model_token source needs a model", o->token);
        if ((tt != NULL) == (ti != NULL))
            return ferr(c, s, "token '%s': a model_token source needs exactly one of token and token_id", o->token);
        o->model_pos = node_pos(md);
        MK_TRY(scalar_string(c, md, "token source model", &o->model));
        if (tt) MK_TRY(scalar_string(c, tt, "token source token", &o->src_token));
        else MK_TRY(scalar_int(c, ti, "token source token_id", 0, INT32_MAX, &o->src_id));
    }
    return MK_OK;
}

static mk_status parse_root(ctx *c, const yaml_node_t *root, mk_recipe *r)
{
    MK_TRY(map_check(c, root, "the recipe", top_keys, sizeof top_keys / sizeof *top_keys));
    yaml_node_t *n;
    if ((n = map_get(c, root, "merge_method")) && !is_null(n)) {
        MK_TRY(scalar_string(c, n, "merge_method", &r->method));
        r->method_pos = node_pos(n);
    } else {
        return ferr(c, root, "missing 'merge_method'");
    }
    if ((n = map_get(c, root, "base_model")) && !is_null(n)) {
        MK_TRY(parse_ref(c, n, "base_model", &r->base));
        r->has_base = true;
    }
    yaml_node_t *models = map_get(c, root, "models"), *slices = map_get(c, root, "slices"),
                *modules = map_get(c, root, "modules");
    if (c->err) return c->err;
    int have = (models && !is_null(models)) + (slices && !is_null(slices)) + (modules && !is_null(modules));
    if (have != 1) return ferr(c, root, "exactly one of 'models', 'slices' or 'modules' must be present");
    if (modules && !is_null(modules))
        return ferr(c, modules, "'modules' (multi-module architectures) is not supported yet; use 'models' or 'slices'");
    if (models && !is_null(models)) MK_TRY(parse_models(c, models, r));
    if (slices && !is_null(slices)) MK_TRY(parse_slices(c, slices, r));
    if ((n = map_get(c, root, "parameters"))) MK_TRY(parse_params(c, n, &r->params));
    if ((n = map_get(c, root, "dtype")) && !is_null(n)) MK_TRY(parse_dtype(c, n, "dtype", &r->dtype));
    if ((n = map_get(c, root, "out_dtype")) && !is_null(n)) MK_TRY(parse_dtype(c, n, "out_dtype", &r->out_dtype));
    yaml_node_t *ts = map_get(c, root, "tokenizer_source"), *tk = map_get(c, root, "tokenizer");
    if (c->err) return c->err;
    if (ts && !is_null(ts) && tk && !is_null(tk))
        return ferr(c, tk, "'tokenizer' and 'tokenizer_source' cannot both be set");
    if (tk && !is_null(tk)) {
        static const char *const tkeys[] = {"source", "tokens", "pad_to_multiple_of"};
        MK_TRY(map_check(c, tk, "tokenizer", tkeys, 3));
        if ((n = map_get(c, tk, "tokens")) && !is_null(n)) MK_TRY(parse_token_overrides(c, n, r));
        if ((n = map_get(c, tk, "pad_to_multiple_of")) && !is_null(n)) {
            int64_t v;
            MK_TRY(scalar_int(c, n, "tokenizer pad_to_multiple_of", 1, 1 << 20, &v));
            r->pad_to_multiple_of = (long)v;
        }
        ts = map_get(c, tk, "source");
        if (c->err) return c->err;
        if (!ts || is_null(ts)) { /* mergekit's default */
            if (!(r->tokenizer_source = mk_strdup("union"))) return MK_ERR_NOMEM;
            r->tokenizer_pos = node_pos(tk);
        }
    }
    if (ts && !is_null(ts)) {
        MK_TRY(scalar_string(c, ts, "tokenizer_source", &r->tokenizer_source));
        r->tokenizer_pos = node_pos(ts);
    }
    if ((n = map_get(c, root, "chat_template")) && !is_null(n)) {
        MK_TRY(scalar_string(c, n, "chat_template", &r->chat_template));
        r->chat_template_pos = node_pos(n);
        const char *t = r->chat_template;
        static const char *const builtin[] = {"alpaca", "chatml", "exaone", "llama3", "mistral"};
        for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
            if (strcmp(t, builtin[i]) == 0)
                return ferr(c, n, "chat_template '%s' (one of mergekit's bundled templates) is not supported yet: give "
                            "the template's text, or 'auto'", t);
        if (strcmp(t, "auto") != 0 && (strlen(t) < 20 || !strchr(t, '{')))
            return ferr(c, n, "chat_template '%s' is not 'auto' nor a Jinja template (at least 20 characters, with '{')", t);
    }
    if ((n = map_get(c, root, "random_seed")) && !is_null(n)) {
        int64_t v;
        MK_TRY(scalar_int(c, n, "random_seed", 0, INT64_MAX, &v));
        r->seed = (uint64_t)v;
        r->has_seed = true;
    }
    return c->err;
}

typedef mk_status (*root_fn)(ctx *c, const yaml_node_t *root, void *out);

/* Parse YAML text[0..len) and hand its root to fn; `what` ("recipe", "config") names the file
 * kind in messages. A second document (a mergekit-multi file) is refused. */
static mk_status parse_yaml(const char *text, size_t len, const char *path, const char *what, root_fn fn, void *out)
{
    if (len > RECIPE_MAX_BYTES) return mk_error(MK_ERR_RECIPE, "%s: %s is over %u bytes", path, what, RECIPE_MAX_BYTES);
    if (memchr(text, 0, len)) return mk_error(MK_ERR_RECIPE, "%s: %s contains a NUL byte", path, what);

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return mk_error(MK_ERR_NOMEM, "out of memory starting the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    mk_status s = MK_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        s = mk_error(MK_ERR_RECIPE, "%s:%zu:%zu: YAML error: %s%s%s", path, parser.problem_mark.line + 1,
                     parser.problem_mark.column + 1, parser.problem ? parser.problem : "invalid YAML",
                     parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return s;
    }
    ctx c = {&doc, path, 0, MK_OK};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        s = mk_error(MK_ERR_RECIPE, "%s: %s is empty", path, what);
    } else {
        s = fn(&c, root, out);
        if (s == MK_OK) {
            /* a second document means a mergekit-multi file */
            yaml_document_t doc2;
            if (yaml_parser_load(&parser, &doc2)) {
                if (yaml_document_get_root_node(&doc2))
                    s = mk_error(MK_ERR_RECIPE, "%s: several YAML documents (mergekit-multi) are not supported", path);
                yaml_document_delete(&doc2);
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return s;
}

static mk_status recipe_root(ctx *c, const yaml_node_t *root, void *out) { return parse_root(c, root, out); }

mk_status mk_recipe_parse(const char *text, size_t len, const char *path, mk_recipe *r)
{
    memset(r, 0, sizeof *r);
    r->dtype = r->out_dtype = MK_DTYPE_NONE;
    r->path = mk_strdup(path);
    r->text = mk_strndup(text, len);
    r->text_len = len;
    if (!r->path || !r->text) return MK_ERR_NOMEM;
    return parse_yaml(text, len, path, "recipe", recipe_root, r);
}

/* One model reference: Hub ids -> cached snapshot folders, and the key again. */
static mk_status resolve_ref(const mk_recipe *r, mk_model_ref *ref)
{
    for (int pass = 0; pass < 2; pass++) {
        char **p = pass ? &ref->lora : &ref->path;
        if (!*p) continue;
        char *got = NULL;
        mk_status s = mk_hub_resolve(*p, pass ? ref->lora_revision : ref->revision, &got, NULL);
        if (s != MK_OK)
            return mk_error_prefix(s == MK_ERR_USAGE ? MK_ERR_RECIPE : s, "%s:%d:%d", r->path, ref->pos.line, ref->pos.col);
        free(*p);
        *p = got;
    }
    free(ref->key);
    ref->key = mk_model_key(ref->path, ref->lora);
    return ref->key ? MK_OK : MK_ERR_NOMEM;
}

static mk_status resolve_refs(mk_recipe *r)
{
    if (r->has_base) MK_TRY(resolve_ref(r, &r->base));
    for (size_t i = 0; i < r->n_models; i++) MK_TRY(resolve_ref(r, &r->models[i].ref));
    for (size_t i = 0; i < r->n_slices; i++) {
        if (r->slices[i].has_base) MK_TRY(resolve_ref(r, &r->slices[i].base));
        for (size_t k = 0; k < r->slices[i].n_sources; k++) MK_TRY(resolve_ref(r, &r->slices[i].sources[k].ref));
    }
    /* a tokenizer_source id must resolve too; its key says which model it names (a Hub id
     * names the model its cached snapshot is: org/name matches org/name@main), which the
     * merge checks against the plan's models */
    const char *ts = r->tokenizer_source;
    if (ts && strcmp(ts, "base") != 0 && strcmp(ts, "union") != 0) {
        char *got = NULL;
        mk_status s = mk_hub_resolve(ts, NULL, &got, NULL);
        if (s != MK_OK)
            return mk_error_prefix(s == MK_ERR_USAGE ? MK_ERR_RECIPE : s, "%s:%d:%d: tokenizer_source", r->path,
                                   r->tokenizer_pos.line, r->tokenizer_pos.col);
        r->tokenizer_key = mk_model_key(got, NULL);
        free(got);
        if (!r->tokenizer_key) return MK_ERR_NOMEM;
    }
    return MK_OK;
}

/* A recipe or config file's text (at most 4 MB); a missing or unreadable file is a usage
 * problem, not a runtime failure. */
static mk_status read_yaml_file(const char *path, char **text, size_t *len)
{
    mk_status s = mk_read_file(path, RECIPE_MAX_BYTES, text, len);
    return s == MK_OK ? MK_OK : s == MK_ERR_IO ? MK_ERR_USAGE : (s == MK_ERR_FORMAT ? MK_ERR_RECIPE : s);
}

mk_status mk_recipe_load(const char *path, mk_recipe *r)
{
    char *text = NULL;
    size_t len = 0;
    mk_status s = read_yaml_file(path, &text, &len);
    if (s != MK_OK) {
        memset(r, 0, sizeof *r);
        return s;
    }
    s = mk_recipe_parse(text, len, path, r);
    free(text);
    return s == MK_OK ? resolve_refs(r) : s;
}

void mk_recipe_free(mk_recipe *r)
{
    if (!r) return;
    free(r->path);
    free(r->text);
    free(r->method);
    ref_free(&r->base);
    for (size_t i = 0; i < r->n_models; i++) {
        ref_free(&r->models[i].ref);
        params_free(&r->models[i].params);
    }
    free(r->models);
    for (size_t i = 0; i < r->n_slices; i++) {
        mk_output_slice *sl = &r->slices[i];
        for (size_t k = 0; k < sl->n_sources; k++) {
            ref_free(&sl->sources[k].ref);
            params_free(&sl->sources[k].params);
        }
        free(sl->sources);
        params_free(&sl->params);
        ref_free(&sl->base);
    }
    free(r->slices);
    params_free(&r->params);
    free(r->tokenizer_source);
    free(r->tokenizer_key);
    for (size_t i = 0; i < r->n_token_overrides; i++) {
        free(r->token_overrides[i].token);
        free(r->token_overrides[i].model);
        free(r->token_overrides[i].src_token);
    }
    free(r->token_overrides);
    free(r->chat_template);
    memset(r, 0, sizeof *r);
}

static void add_ref(const mk_model_ref **out, size_t max, size_t *n, const mk_model_ref *ref)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(out[i]->key, ref->key) == 0) return;
    if (*n < max) out[(*n)++] = ref;
}

size_t mk_recipe_models(const mk_recipe *r, const mk_model_ref **out, size_t max)
{
    size_t n = 0;
    if (r->has_base) add_ref(out, max, &n, &r->base);
    for (size_t i = 0; i < r->n_models; i++) add_ref(out, max, &n, &r->models[i].ref);
    for (size_t i = 0; i < r->n_slices; i++) {
        if (r->slices[i].has_base) add_ref(out, max, &n, &r->slices[i].base);
        for (size_t k = 0; k < r->slices[i].n_sources; k++) add_ref(out, max, &n, &r->slices[i].sources[k].ref);
    }
    return n;
}

bool mk_pvalue_eval(const mk_pvalue *v, const char *name, double t, double *out)
{
    switch (v->kind) {
    case MK_PV_SCALAR: *out = v->scalar; return true;
    case MK_PV_GRADIENT: {
        /* mergekit: s = t*(L-1), i0 = floor(s), i1 = min(L-1, i0+1), f = s - i0 */
        size_t L = v->n;
        if (L == 1) {
            *out = v->grad[0];
            return true;
        }
        double s = t * (double)(L - 1);
        double fi = floor(s);
        size_t i0 = fi < 0 ? 0 : (size_t)fi;
        if (i0 > L - 1) i0 = L - 1;
        size_t i1 = i0 + 1 > L - 1 ? L - 1 : i0 + 1;
        double f = s - (double)i0;
        *out = (1.0 - f) * v->grad[i0] + f * v->grad[i1];
        return true;
    }
    case MK_PV_COND:
        for (size_t i = 0; i < v->n; i++) {
            const char *f = v->cond[i].filter;
            if (!f || strcmp(f, "*") == 0 || strstr(name, f)) return mk_pvalue_eval(v->cond[i].value, name, t, out);
        }
        return false;
    }
    return false;
}

const mk_param *mk_params_find(const mk_params *ps, const char *name)
{
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return &ps->p[i];
    return NULL;
}

/* ---- mergekit-moe configs (moe.h) ---------------------------------------------------------
 * mergekit 0.1.5's MoEMergeConfig and Expert pydantic models: the same keys, types and
 * defaults (gate_mode hidden, experts_per_token 2). */

#include "moe.h"

static mk_status parse_prompts(ctx *c, const yaml_node_t *n, const char *what, char ***out, size_t *count)
{
    if (is_null(n)) return MK_OK;
    if (n->type != YAML_SEQUENCE_NODE) return ferr(c, n, "%s must be a list of strings, found %s", what, kind_name(n));
    size_t k = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    *out = k ? mk_calloc(k, sizeof **out) : NULL;
    if (k && !*out) return c->err = MK_ERR_NOMEM;
    for (size_t i = 0; i < k; i++) {
        yaml_node_t *e = get(c, n->data.sequence.items.start[i]);
        if (!e) return c->err;
        MK_TRY(scalar_string(c, e, what, &(*out)[i]));
        *count = i + 1;
    }
    return MK_OK;
}

static const char *const expert_keys[] = {"source_model", "positive_prompts", "negative_prompts", "noise_scale",
                                          "residual_scale"};

static mk_status parse_experts(ctx *c, const yaml_node_t *n, const char *what, mk_moe_expert **out, size_t *count)
{
    if (n->type != YAML_SEQUENCE_NODE) return ferr(c, n, "'%s' must be a list, found %s", what, kind_name(n));
    size_t k = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    *out = k ? mk_calloc(k, sizeof **out) : NULL;
    if (k && !*out) return c->err = MK_ERR_NOMEM;
    for (size_t i = 0; i < k; i++) {
        mk_moe_expert *x = &(*out)[i];
        yaml_node_t *e = get(c, n->data.sequence.items.start[i]), *v;
        if (!e) return c->err;
        *count = i + 1;
        x->at = node_pos(e);
        MK_TRY(map_check(c, e, what, expert_keys, sizeof expert_keys / sizeof *expert_keys));
        if (!(v = map_get(c, e, "source_model")) || is_null(v)) return ferr(c, e, "%s entry has no 'source_model'", what);
        MK_TRY(parse_ref(c, v, "source_model", &x->ref));
        if ((v = map_get(c, e, "positive_prompts"))) MK_TRY(parse_prompts(c, v, "positive_prompts", &x->pos, &x->n_pos));
        if ((v = map_get(c, e, "negative_prompts"))) MK_TRY(parse_prompts(c, v, "negative_prompts", &x->neg, &x->n_neg));
        if ((v = map_get(c, e, "noise_scale")) && !is_null(v)) {
            MK_TRY(scalar_number(c, v, "noise_scale", &x->noise_scale));
            x->has_noise = true;
        }
        if ((v = map_get(c, e, "residual_scale")) && !is_null(v)) {
            MK_TRY(scalar_number(c, v, "residual_scale", &x->residual_scale));
            x->has_residual = true;
        }
    }
    return c->err;
}

static const char *const moe_keys[] = {"base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts",
                                       "architecture"};
static const char *const gate_names[MK_MOE_GATE_COUNT] = {"hidden", "cheap_embed", "random", "uniform_random"};

const char *mk_moe_gate_name(mk_moe_gate g) { return g < MK_MOE_GATE_COUNT ? gate_names[g] : "?"; }

static mk_status parse_moe_root(ctx *c, const yaml_node_t *root, mk_moe_config *m)
{
    MK_TRY(map_check(c, root, "the MoE config", moe_keys, sizeof moe_keys / sizeof *moe_keys));
    yaml_node_t *n;
    if (!(n = map_get(c, root, "base_model")) || is_null(n)) return ferr(c, root, "missing 'base_model'");
    MK_TRY(parse_ref(c, n, "base_model", &m->base));
    if (!(n = map_get(c, root, "experts")) || is_null(n)) return ferr(c, root, "missing 'experts'");
    MK_TRY(parse_experts(c, n, "experts", &m->experts, &m->n_experts));
    if ((n = map_get(c, root, "shared_experts")) && !is_null(n))
        MK_TRY(parse_experts(c, n, "shared_experts", &m->shared, &m->n_shared));
    m->gate = MK_MOE_GATE_HIDDEN;
    if ((n = map_get(c, root, "gate_mode")) && !is_null(n)) {
        char *g = NULL;
        MK_TRY(scalar_string(c, n, "gate_mode", &g));
        m->gate_pos = node_pos(n);
        int k = 0;
        while (k < MK_MOE_GATE_COUNT && strcmp(g, gate_names[k]) != 0) k++;
        if (k == MK_MOE_GATE_COUNT) {
            const char *hint = mk_did_you_mean(g, gate_names, MK_MOE_GATE_COUNT);
            ferr(c, n, "unknown gate_mode '%s' (%s%s%shidden, cheap_embed, random, uniform_random)", g,
                 hint ? "did you mean '" : "", hint ? hint : "", hint ? "'? " : "");
        }
        free(g);
        MK_TRY(c->err);
        m->gate = (mk_moe_gate)k;
    }
    if ((n = map_get(c, root, "dtype")) && !is_null(n)) MK_TRY(parse_dtype(c, n, "dtype", &m->dtype));
    m->experts_per_token = 2;
    if ((n = map_get(c, root, "experts_per_token")) && !is_null(n)) {
        int64_t v;
        MK_TRY(scalar_int(c, n, "experts_per_token", 1, 1 << 16, &v));
        m->experts_per_token = (long)v;
        m->ept_pos = node_pos(n);
    }
    if ((n = map_get(c, root, "architecture")) && !is_null(n)) {
        MK_TRY(scalar_string(c, n, "architecture", &m->architecture));
        m->arch_pos = node_pos(n);
    }
    /* mergekit's is_bad_config */
    if (!m->n_experts) return ferr(c, root, "'experts' is empty");
    if ((size_t)m->experts_per_token > m->n_experts)
        return ferr(c, (n = map_get(c, root, "experts_per_token")) ? n : root, "experts_per_token %ld is more than the %zu experts", m->experts_per_token, m->n_experts);
    if (m->gate != MK_MOE_GATE_RANDOM) { /* uniform_random too, as mergekit checks */
        bool all_same = m->n_experts > 1;
        for (size_t i = 0; i < m->n_experts; i++) {
            const mk_moe_expert *x = &m->experts[i], *f = &m->experts[0];
            if (!x->n_pos) {
                c->err = mk_error(MK_ERR_RECIPE, "%s:%d:%d: expert %zu has no positive_prompts (gate_mode %s needs them)", c->path,
                                  x->at.line, x->at.col, i, gate_names[m->gate]);
                return c->err;
            }
            bool same = x->n_pos == f->n_pos && x->n_neg == f->n_neg;
            for (size_t k = 0; same && k < x->n_pos; k++) same = strcmp(x->pos[k], f->pos[k]) == 0;
            for (size_t k = 0; same && k < x->n_neg; k++) same = strcmp(x->neg[k], f->neg[k]) == 0;
            all_same &= same;
        }
        if (all_same)
            return ferr(c, root, "the positive and negative prompts are the same for every expert: the router could not tell "
                                 "them apart");
        bool some = false, all = true;
        for (size_t i = 0; i < m->n_shared; i++) some |= m->shared[i].n_pos > 0, all &= m->shared[i].n_pos > 0;
        if (some && !all) return ferr(c, root, "give prompts to every shared expert or to none");
    }
    return c->err;
}

static mk_status moe_root(ctx *c, const yaml_node_t *root, void *out) { return parse_moe_root(c, root, out); }

mk_status mk_moe_config_parse(const char *text, size_t len, const char *path, mk_moe_config *m)
{
    memset(m, 0, sizeof *m);
    m->dtype = MK_DTYPE_NONE;
    m->path = mk_strdup(path);
    m->text = mk_strndup(text, len);
    m->text_len = len;
    if (!m->path || !m->text) return MK_ERR_NOMEM;
    return parse_yaml(text, len, path, "config", moe_root, m);
}

static void experts_free(mk_moe_expert *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ref_free(&x[i].ref);
        for (size_t k = 0; k < x[i].n_pos; k++) free(x[i].pos[k]);
        for (size_t k = 0; k < x[i].n_neg; k++) free(x[i].neg[k]);
        free(x[i].pos);
        free(x[i].neg);
    }
    free(x);
}

void mk_moe_config_free(mk_moe_config *m)
{
    if (!m) return;
    free(m->path);
    free(m->text);
    ref_free(&m->base);
    experts_free(m->experts, m->n_experts);
    experts_free(m->shared, m->n_shared);
    free(m->architecture);
    memset(m, 0, sizeof *m);
}

mk_status mk_moe_config_load(const char *path, mk_moe_config *m)
{
    char *text = NULL;
    size_t len = 0;
    memset(m, 0, sizeof *m);
    mk_status s = read_yaml_file(path, &text, &len);
    if (s == MK_OK) s = mk_moe_config_parse(text, len, path, m);
    free(text);
    mk_recipe r = {.path = m->path}; /* resolve_ref names the file in its messages */
    if (s == MK_OK) s = resolve_ref(&r, &m->base);
    for (size_t i = 0; s == MK_OK && i < m->n_experts; i++) s = resolve_ref(&r, &m->experts[i].ref);
    for (size_t i = 0; s == MK_OK && i < m->n_shared; i++) s = resolve_ref(&r, &m->shared[i].ref);
    return s;
}

size_t mk_moe_models(const mk_moe_config *c, const mk_model_ref **out, size_t max)
{
    size_t n = 0;
    add_ref(out, max, &n, &c->base);
    for (size_t i = 0; i < c->n_experts; i++) add_ref(out, max, &n, &c->experts[i].ref);
    for (size_t i = 0; i < c->n_shared; i++) add_ref(out, max, &n, &c->shared[i].ref);
    return n;
}
