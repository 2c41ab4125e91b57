/* tokmerge.c - the merged vocabulary and the token permutations (see tokmerge.h). */
#include "tokmerge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/mk_json.h"

#define TOK_FILE_CAP ((uint64_t)256 << 20)
#define TOK_MAX_IDS ((uint64_t)1 << 24)

/* string -> id, open addressing; keys borrowed */
typedef struct strmap {
    size_t cap;
    const char **k;
    int64_t *v;
} strmap;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static mk_status map_init(strmap *m, size_t n)
{
    m->cap = 16;
    while (m->cap < 2 * n + 16) m->cap *= 2;
    m->k = mk_calloc(m->cap, sizeof *m->k);
    m->v = mk_calloc(m->cap, sizeof *m->v);
    return m->k && m->v ? MK_OK : MK_ERR_NOMEM;
}

static void map_free(strmap *m)
{
    free(m->k);
    free(m->v);
}

static size_t map_slot(const strmap *m, const char *s)
{
    size_t i = (size_t)str_hash(s) & (m->cap - 1);
    while (m->k[i] && strcmp(m->k[i], s) != 0) i = (i + 1) & (m->cap - 1);
    return i;
}

static int64_t map_get(const strmap *m, const char *s)
{
    size_t i = map_slot(m, s);
    return m->k[i] ? m->v[i] : -1;
}

/* first id wins, as a Python dict built from the vocabulary keeps one */
static void map_put(strmap *m, const char *s, int64_t v)
{
    size_t i = map_slot(m, s);
    if (!m->k[i]) {
        m->k[i] = s;
        m->v[i] = v;
    }
}

/* One model's tokenizer.json: its tokens by id. */
typedef struct vocab {
    const char *path;
    char *text;
    size_t len;
    mk_json j;
    const char **tok;   /* [n] by id; NULL = no token */
    uint32_t *added;    /* [n] node of the added_tokens entry; 0 = not an added token */
    size_t n;           /* 1 + the highest id */
    size_t limit;       /* config.json vocab_size (mergekit strips ids at or above it) */
    strmap map;
    bool borrowed;      /* no tokenizer.json: the base's vocabulary, borrowed (as mergekit assumes) */
} vocab;

static mk_status json_load(mk_source *s, const char *name, char **text, size_t *len, mk_json *j)
{
    MK_TRY(s->ops->aux_read(s, name, TOK_FILE_CAP, text, len));
    if (!*text) return MK_OK;
    char what[512];
    snprintf(what, sizeof what, "%s/%s", s->path, name);
    mk_json_limits lim = {64, *len / 2 + 16};
    mk_status st = mk_json_parse(j, *text, *len, &lim, what);
    if (st != MK_OK) { /* nothing is left to free */
        free(*text);
        *text = NULL;
    }
    return st;
}

static mk_status vocab_load(vocab *v, mk_source *s)
{
    v->path = s->path;
    MK_TRY(json_load(s, "tokenizer.json", &v->text, &v->len, &v->j));
    if (!v->text) return MK_OK; /* mk_tokmerge_build decides */
    const mk_json *j = &v->j;
    uint32_t model = mk_json_get(j, 0, "model"), voc = model ? mk_json_get(j, model, "vocab") : 0;
    uint32_t add = mk_json_get(j, 0, "added_tokens");
    if (!voc || mk_json_at(j, voc)->type != MK_JSON_OBJ)
        return mk_error(MK_ERR_FORMAT, "%s/tokenizer.json: no model.vocab object (only tokenizers with a vocabulary "
                        "map can be merged)", s->path);
    if (add && mk_json_at(j, add)->type != MK_JSON_ARR)
        return mk_error(MK_ERR_FORMAT, "%s/tokenizer.json: added_tokens is not an array", s->path);
    /* ids: bounded by the entries' count (a few holes allowed), the table sized by the highest */
    uint64_t max_ids = 2 * ((uint64_t)mk_json_at(j, voc)->count + (add ? mk_json_at(j, add)->count : 0)) + 1024;
    if (max_ids > TOK_MAX_IDS) max_ids = TOK_MAX_IDS;
    for (int pass = 0; pass < 2; pass++) {
        for (int which = 0; which < 2; which++) {
            uint32_t c = which ? (add ? mk_json_at(j, add)->first : 0) : mk_json_at(j, voc)->first;
            for (; c; c = mk_json_at(j, c)->next) {
                const mk_json_node *e = mk_json_at(j, c);
                uint32_t idn = c, con = 0;
                if (which) {
                    idn = e->type == MK_JSON_OBJ ? mk_json_get(j, c, "id") : 0;
                    con = e->type == MK_JSON_OBJ ? mk_json_get(j, c, "content") : 0;
                    if (!con || mk_json_at(j, con)->type != MK_JSON_STR || mk_json_at(j, con)->has_nul) idn = 0;
                } else if (e->has_nul)
                    idn = 0;
                const mk_json_node *in = idn ? mk_json_at(j, idn) : NULL;
                if (!in || in->type != MK_JSON_NUM || !in->is_uint || in->u >= max_ids)
                    return mk_error(MK_ERR_FORMAT, "%s/tokenizer.json: %s entry at byte %u has no valid id", s->path,
                                    which ? "added_tokens" : "model.vocab", e->pos);
                size_t id = (size_t)in->u;
                if (pass == 0) {
                    if (id + 1 > v->n) v->n = id + 1;
                    continue;
                }
                const char *str = which ? mk_json_strv(j, con) : mk_json_key(j, c);
                if (!v->tok[id] || which) v->tok[id] = str;
                if (which) v->added[id] = c;
            }
        }
        if (pass == 0) {
            v->tok = mk_calloc(v->n + 1, sizeof *v->tok);
            v->added = mk_calloc(v->n + 1, sizeof *v->added);
            if (!v->tok || !v->added) return MK_ERR_NOMEM;
        }
    }
    v->limit = v->n;
    char *ct = NULL;
    size_t cl = 0;
    mk_json cj = {0};
    mk_status st = json_load(s, "config.json", &ct, &cl, &cj);
    if (st == MK_OK && ct) {
        uint32_t vs = mk_json_get(&cj, 0, "vocab_size");
        if (vs && mk_json_at(&cj, vs)->is_uint && mk_json_at(&cj, vs)->u < v->limit) v->limit = (size_t)mk_json_at(&cj, vs)->u;
    }
    if (ct) mk_json_free(&cj);
    free(ct);
    MK_TRY(st);
    MK_TRY(map_init(&v->map, v->n));
    for (size_t i = 0; i < v->n; i++)
        if (v->tok[i]) map_put(&v->map, v->tok[i], (int64_t)i);
    return MK_OK;
}

static void vocab_free(vocab *v)
{
    if (v->borrowed) return;
    if (v->text) mk_json_free(&v->j);
    free(v->text);
    free(v->tok);
    free(v->added);
    map_free(&v->map);
}

/* The byte offset of the bracket closing the array/object that opens at `open`. */
static size_t json_close(const char *s, size_t len, size_t open)
{
    int depth = 0;
    for (size_t i = open; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (c == '[' || c == '{')
            depth++;
        else if ((c == ']' || c == '}') && --depth == 0)
            return i;
    }
    return len;
}

static bool json_flag(const mk_json *j, uint32_t obj, const char *key, bool dflt)
{
    uint32_t n = obj ? mk_json_get(j, obj, key) : 0;
    return n && mk_json_at(j, n)->type == MK_JSON_BOOL ? mk_json_at(j, n)->b : dflt;
}

/* An added token's settings, as HF writes them; `src` is its added_tokens entry in `sv`
 * (NULL: a plain token that the union adds: normalized, not special). */
static void put_token(mk_buf *b, const vocab *sv, uint32_t src, const char *content)
{
    const mk_json *j = sv ? &sv->j : NULL;
    bool special = j && json_flag(j, src, "special", false);
    mk_buf_puts(b, "{\"content\": ");
    mk_buf_json_str(b, content);
    mk_buf_printf(b, ", \"single_word\": %s, \"lstrip\": %s, \"rstrip\": %s, \"normalized\": %s, \"special\": %s}",
                  j && json_flag(j, src, "single_word", false) ? "true" : "false",
                  j && json_flag(j, src, "lstrip", false) ? "true" : "false",
                  j && json_flag(j, src, "rstrip", false) ? "true" : "false",
                  (j ? json_flag(j, src, "normalized", !special) : true) ? "true" : "false", special ? "true" : "false");
}

/* text with entries for ids [from, t->n_tokens) inserted at the end of the array/object at
 * node `at` of `j` (tokenizer.json added_tokens, tokenizer_config.json added_tokens_decoder) */
static mk_status splice(const mk_tokmerge *t, size_t from, const vocab *vs, const uint32_t *src_node,
                        const uint32_t *src_model, const char *text, size_t len, const mk_json *j, uint32_t at,
                        char **out, size_t *out_len)
{
    const mk_json_node *a = mk_json_at(j, at);
    size_t open = a->pos, close = json_close(text, len, open);
    if (close >= len) return mk_error(MK_ERR_FORMAT, "tokenizer file: unbalanced brackets");
    bool obj = a->type == MK_JSON_OBJ, comma = a->count > 0;
    size_t cut = close; /* after the last entry, before the whitespace that ends the array */
    while (cut > open + 1 && (text[cut - 1] == ' ' || text[cut - 1] == '\n' || text[cut - 1] == '\r' || text[cut - 1] == '\t'))
        cut--;
    mk_buf b = {0};
    mk_buf_put(&b, text, cut);
    for (size_t i = from; i < t->n_tokens; i++) {
        mk_buf_puts(&b, comma ? ",\n    " : "\n    ");
        comma = true;
        const vocab *sv = src_node[i] ? &vs[src_model[i]] : NULL;
        if (obj) {
            mk_buf_printf(&b, "\"%zu\": ", i);
            put_token(&b, sv, src_node[i], t->tok[i]);
        } else {
            mk_buf_printf(&b, "{\"id\": %zu, ", i);
            mk_buf b2 = {0};
            put_token(&b2, sv, src_node[i], t->tok[i]);
            if (b2.data) mk_buf_put(&b, b2.data + 1, b2.len - 1);
            b.failed |= b2.failed || !b2.data;
            mk_buf_free(&b2);
        }
    }
    mk_buf_put(&b, text + cut, len - cut);
    if (b.failed) {
        mk_buf_free(&b);
        return MK_ERR_NOMEM;
    }
    *out = b.data;
    *out_len = b.len;
    return MK_OK;
}

static mk_status build_union(mk_tokmerge *t, vocab *vs, size_t n, size_t base, strmap *out, uint32_t *src_node,
                             uint32_t *src_model)
{
    const vocab *bv = &vs[base];
    size_t k = 0;
    for (size_t i = 0; i < bv->limit; i++) {
        if (!bv->tok[i]) return mk_error(MK_ERR_UNSUPPORTED, "%s/tokenizer.json: no token has id %zu", bv->path, i);
        t->tok[k] = (char *)bv->tok[i];
        map_put(out, bv->tok[i], (int64_t)k++);
    }
    /* a token is "added" if some model adds it: those come last */
    for (int added = 0; added < 2; added++)
        for (size_t o = 0; o < n; o++) {
            size_t m = o == 0 ? base : o <= base ? o - 1 : o;
            const vocab *v = &vs[m];
            for (size_t i = 0; i < v->limit; i++) {
                const char *s = v->tok[i];
                if (!s || (bool)v->added[i] != (bool)added || map_get(out, s) >= 0) continue;
                bool added_elsewhere = false;
                for (size_t q = 0; q < n && !added && !added_elsewhere; q++) {
                    int64_t id = map_get(&vs[q].map, s);
                    added_elsewhere = id >= 0 && (size_t)id < vs[q].limit && vs[q].added[id];
                }
                if (added_elsewhere) continue;
                src_node[k] = v->added[i];
                src_model[k] = (uint32_t)m;
                t->tok[k] = (char *)s;
                map_put(out, s, (int64_t)k++);
            }
        }
    t->n_tokens = k;
    return MK_OK;
}

/* Row sources of the tokens the recipe lists (tokenizer: tokens:); ovi[t] = its entry + 1. */
static mk_status override_fill(const mk_tokmerge *t, const vocab *vs, const mk_recipe *r, const mk_token_override *o,
                               size_t m, size_t tk, size_t *f)
{
    if (o->kind == MK_TOKSRC_ZERO) return MK_OK;
    int64_t row = o->kind == MK_TOKSRC_MODEL ? t->perm[m][tk] : o->src_token ? map_get(&vs[m].map, o->src_token) : o->src_id;
    if (row < 0 || (size_t)row >= vs[m].limit)
        return mk_error(MK_ERR_RECIPE, "%s:%d:%d: token '%s': model %s has no %s%s%s", r->path, o->model_pos.line,
                        o->model_pos.col, o->token, o->model, o->src_token || o->kind == MK_TOKSRC_MODEL ? "token '" : "row ",
                        o->kind == MK_TOKSRC_MODEL ? o->token : o->src_token ? o->src_token : "",
                        o->src_token || o->kind == MK_TOKSRC_MODEL ? "'" : "for that token_id");
    t->fill[*f] = (uint32_t)m;
    t->fill_row[(*f)++] = row;
    return MK_OK;
}

mk_status mk_tokmerge_build(mk_tokmerge *t, mk_source *const *srcs, size_t n, size_t base, const char *source,
                            size_t model, const mk_recipe *r, const size_t *ov_model)
{
    size_t n_ov = r ? r->n_token_overrides : 0;
    memset(t, 0, sizeof *t);
    vocab *vs = mk_calloc(n, sizeof *vs);
    if (!vs) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    size_t total = 0;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        s = vocab_load(&vs[i], srcs[i]);
        total += vs[i].n;
    }
    total += n_ov;
    if (s == MK_OK && !vs[base].text)
        s = mk_error(MK_ERR_RECIPE, "%s has no tokenizer.json: a merge of vocabularies (tokenizer_source) needs the "
                     "base model's", srcs[base]->path);
    for (size_t i = 0; i < n && s == MK_OK; i++)
        if (!vs[i].text) { /* mergekit: "Unable to load tokenizer ... Assuming same as" the base */
            mk_warn("%s has no tokenizer.json; its vocabulary is taken to be %s's", srcs[i]->path, srcs[base]->path);
            const char *path = vs[i].path;
            vs[i] = vs[base];
            vs[i].path = path;
            vs[i].text = NULL;
            vs[i].borrowed = true;
        }
    bool uni = source && strcmp(source, "union") == 0;
    t->src = source && strcmp(source, "base") == 0 ? base : uni ? base : model;
    strmap out = {0};
    uint32_t *src_node = NULL, *src_model = NULL;
    if (s == MK_OK) s = map_init(&out, total);
    if (s == MK_OK) {
        t->n_models = n;
        t->tok = mk_calloc(total + 1, sizeof *t->tok);
        src_node = mk_calloc(total + 1, sizeof *src_node);
        src_model = mk_calloc(total + 1, sizeof *src_model);
        t->perm = mk_calloc(n, sizeof *t->perm);
        if (!t->tok || !src_node || !src_model || !t->perm) s = MK_ERR_NOMEM;
    }
    const vocab *sv = &vs[t->src];
    if (s == MK_OK && sv->limit < sv->n && t->src == base)
        s = mk_error(MK_ERR_UNSUPPORTED, "%s/tokenizer.json has ids at or above config.json vocab_size %zu; "
                     "stripping them is not supported", sv->path, sv->limit);
    if (s == MK_OK && uni) s = build_union(t, vs, n, base, &out, src_node, src_model);
    else if (s == MK_OK) {
        for (size_t i = 0; i < sv->n && s == MK_OK; i++) {
            if (!sv->tok[i]) s = mk_error(MK_ERR_UNSUPPORTED, "%s/tokenizer.json: no token has id %zu", sv->path, i);
            else t->tok[i] = (char *)sv->tok[i];
        }
        t->n_tokens = sv->n;
        for (size_t i = 0; i < t->n_tokens && s == MK_OK; i++) map_put(&out, t->tok[i], (int64_t)i);
    }
    /* tokens the recipe lists are added if the vocabulary lacks them (mergekit add_tokens) */
    for (size_t i = 0; i < n_ov && s == MK_OK; i++)
        if (map_get(&out, r->token_overrides[i].token) < 0) {
            t->tok[t->n_tokens] = r->token_overrides[i].token;
            map_put(&out, r->token_overrides[i].token, (int64_t)t->n_tokens++);
        }
    /* permutations, and how a lacking model's row is filled */
    for (size_t m = 0; m < n && s == MK_OK; m++) {
        t->perm[m] = mk_calloc(t->n_tokens + 1, sizeof **t->perm);
        if (!t->perm[m]) s = MK_ERR_NOMEM;
        for (size_t i = 0; i < t->n_tokens && s == MK_OK; i++) {
            int64_t id = map_get(&vs[m].map, t->tok[i]);
            t->perm[m][i] = id >= 0 && (size_t)id < vs[m].limit ? id : -1;
        }
    }
    size_t *ovi = NULL; /* entry + 1 of each token's tokenizer tokens override; 0 = none */
    if (s == MK_OK) {
        t->fill_off = mk_calloc(t->n_tokens + 1, sizeof *t->fill_off);
        t->fill = mk_calloc(t->n_tokens * n + 1, sizeof *t->fill);
        t->fill_row = mk_calloc(t->n_tokens * n + 1, sizeof *t->fill_row);
        ovi = mk_calloc(t->n_tokens + 1, sizeof *ovi);
        if (!t->fill_off || !t->fill || !t->fill_row || !ovi) s = MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n_ov && s == MK_OK; i++)
        if (r->token_overrides[i].kind != MK_TOKSRC_DEFAULT) ovi[map_get(&out, r->token_overrides[i].token)] = i + 1;
    for (size_t i = 0, f = 0; i < t->n_tokens && s == MK_OK; i++) {
        t->fill_off[i] = (uint32_t)f;
        if (ovi[i]) {
            const mk_token_override *o = &r->token_overrides[ovi[i] - 1];
            s = override_fill(t, vs, r, o, ov_model[ovi[i] - 1], i, &f);
            t->fill_off[i + 1] = (uint32_t)f;
            continue;
        }
        size_t have = 0;
        for (size_t m = 0; m < n; m++) have += t->perm[m][i] >= 0;
        if (have > 0 && have < n) {
            bool only_base = have > 1 && t->perm[base][i] >= 0;
            for (size_t m = 0; m < n; m++)
                if (t->perm[m][i] >= 0 && (!only_base || m == base)) {
                    t->fill[f] = (uint32_t)m;
                    t->fill_row[f++] = t->perm[m][i];
                }
        }
        t->fill_off[i + 1] = (uint32_t)f;
    }
    /* force: every model takes the row from the source, its own or not */
    for (size_t i = 0; i < t->n_tokens && s == MK_OK; i++)
        if (ovi[i] && r->token_overrides[ovi[i] - 1].force)
            for (size_t m = 0; m < n; m++) t->perm[m][i] = -1;
    free(ovi);
    /* the output's tokenizer files: the source's, with the tokens the union appended */
    if (s == MK_OK && t->n_tokens > sv->n) {
        uint32_t at = mk_json_get(&sv->j, 0, "added_tokens");
        if (!at) s = mk_error(MK_ERR_UNSUPPORTED, "%s/tokenizer.json has no added_tokens array", sv->path);
        else
            s = splice(t, sv->n, vs, src_node, src_model, sv->text, sv->len, &sv->j, at, &t->tokenizer_json,
                       &t->tokenizer_json_len);
        char *ct = NULL;
        size_t cl = 0;
        mk_json cj = {0};
        if (s == MK_OK) s = json_load(srcs[t->src], "tokenizer_config.json", &ct, &cl, &cj);
        uint32_t dec = s == MK_OK && ct ? mk_json_get(&cj, 0, "added_tokens_decoder") : 0;
        if (dec && mk_json_at(&cj, dec)->type == MK_JSON_OBJ)
            s = splice(t, sv->n, vs, src_node, src_model, ct, cl, &cj, dec, &t->tokenizer_config,
                       &t->tokenizer_config_len);
        if (ct) mk_json_free(&cj);
        free(ct);
    }
    t->n_rows = t->n_tokens;
    long pad = r ? r->pad_to_multiple_of : 0;
    if (pad > 1 && t->n_rows % (size_t)pad) t->n_rows += (size_t)pad - t->n_rows % (size_t)pad;
    /* tokens point into the vocabularies, freed below: own them */
    size_t owned = 0;
    for (; owned < t->n_tokens && s == MK_OK; owned++)
        if (!(t->tok[owned] = mk_strdup(t->tok[owned]))) s = MK_ERR_NOMEM;
    if (s != MK_OK) { /* free what is owned; the rest is borrowed */
        for (size_t i = 0; i + 1 < owned; i++) free(t->tok[i]);
        t->n_tokens = 0;
    }
    map_free(&out);
    free(src_node);
    free(src_model);
    for (size_t i = 0; i < n; i++) vocab_free(&vs[i]);
    free(vs);
    if (s != MK_OK) mk_tokmerge_free(t);
    return s;
}

void mk_tokmerge_free(mk_tokmerge *t)
{
    if (!t) return;
    for (size_t i = 0; t->tok && i < t->n_tokens; i++) free(t->tok[i]);
    free(t->tok);
    for (size_t m = 0; t->perm && m < t->n_models; m++) free(t->perm[m]);
    free(t->perm);
    free(t->fill_off);
    free(t->fill);
    free(t->fill_row);
    free(t->tokenizer_json);
    free(t->tokenizer_config);
    memset(t, 0, sizeof *t);
}

/* a model's chat template, trimmed as Python's str.strip() trims ASCII whitespace; NULL = none */
static mk_status model_template(mk_source *s, char **out)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    MK_TRY(s->ops->aux_read(s, "chat_template.jinja", TOK_FILE_CAP, &text, &len));
    if (!text) {
        char *ct = NULL;
        size_t cl = 0;
        mk_json cj = {0};
        MK_TRY(json_load(s, "tokenizer_config.json", &ct, &cl, &cj));
        uint32_t n = ct ? mk_json_get(&cj, 0, "chat_template") : 0;
        if (n && mk_json_at(&cj, n)->type == MK_JSON_STR && !mk_json_at(&cj, n)->has_nul) {
            text = mk_strdup(mk_json_strv(&cj, n));
            len = text ? strlen(text) : 0;
        }
        if (ct) mk_json_free(&cj);
        free(ct);
        if (!text) return n ? MK_ERR_NOMEM : MK_OK;
    }
    size_t a = 0, b = len;
    while (a < b && strchr(" \t\n\r\f\v", text[a])) a++;
    while (b > a && strchr(" \t\n\r\f\v", text[b - 1])) b--;
    memmove(text, text + a, b - a);
    text[b - a] = 0;
    if (b == a) free(text);
    else *out = text;
    return MK_OK;
}

mk_status mk_chat_template_pick(mk_source *const *srcs, size_t n, const char *spec, char **out)
{
    *out = NULL;
    if (!spec) return MK_OK;
    if (strcmp(spec, "auto") != 0) return (*out = mk_strdup(spec)) ? MK_OK : MK_ERR_NOMEM;
    char **t = mk_calloc(n ? n : 1, sizeof *t);
    if (!t) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    for (size_t i = 0; i < n && s == MK_OK; i++) s = model_template(srcs[i], &t[i]);
    size_t best = n, best_count = 0;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        if (!t[i]) continue;
        size_t count = 0;
        for (size_t j = 0; j < n; j++) count += t[j] && strcmp(t[i], t[j]) == 0;
        if (count > best_count) best = i, best_count = count;
    }
    if (s == MK_OK && best < n) {
        *out = t[best];
        t[best] = NULL;
    }
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
    return s;
}
