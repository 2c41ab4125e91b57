/* tok_load.c - tokenizer.json -> mk_tokenizer. The file is hostile: every count is
 * bounded (tokenizer.h), every id checked against the vocabulary, every string read as
 * validated UTF-8 by core/mk_json, and every refusal is one line naming the key and what
 * was wrong ("tokenizer.json: model.merges[17]: 'ab' is not in the vocabulary"). What the
 * file may contain, and how ids are given to added tokens, follow tokenizers 0.2x
 * (tokenizer/serialization.rs, added_vocabulary.rs, models/bpe/serialization.rs). */
#include "tok_internal.h"

#include "../core/mk_json.h"
#include "unicode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 8 /* Sequence inside Sequence ... */

typedef struct ld {
    const mk_json *j;
    const char *what;
    mk_tokenizer *t;
} ld;

static mk_status bad(ld *L, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mk_status bad(ld *L, const char *key, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mk_error(MK_ERR_FORMAT, "%s: %s: %s", L->what, key, msg);
}

static const mk_json_node *N(ld *L, uint32_t i) { return mk_json_at(L->j, i); }
static const char *S(ld *L, uint32_t i) { return mk_json_strv(L->j, i); }

/* A short, printable rendering of a string from the file for messages. */
static const char *q(const char *s, size_t n, char buf[72])
{
    size_t k = n < 60 ? n : 60;
    /* do not cut a UTF-8 sequence */
    while (k < n && k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    memcpy(buf, s, k);
    strcpy(buf + k, k < n ? "..." : "");
    for (size_t i = 0; i < k; i++)
        if (!buf[i]) buf[i] = '?';
    return buf;
}

static mk_status want(ld *L, uint32_t i, mk_json_type type, const char *key)
{
    if (N(L, i)->type != type)
        return bad(L, key, "expected %s, found %s", mk_json_type_name(type), mk_json_type_name(N(L, i)->type));
    return MK_OK;
}

/* Optional member: 0 when absent or null. */
static mk_status opt(ld *L, uint32_t obj, const char *name, mk_json_type type, const char *path, uint32_t *out)
{
    *out = mk_json_get(L->j, obj, name);
    if (*out && N(L, *out)->type == MK_JSON_NULL) *out = 0;
    if (!*out) return MK_OK;
    char key[256];
    snprintf(key, sizeof key, "%s.%s", path, name);
    return want(L, *out, type, key);
}

static mk_status req(ld *L, uint32_t obj, const char *name, mk_json_type type, const char *path, uint32_t *out)
{
    MK_TRY(opt(L, obj, name, type, path, out));
    if (!*out) return bad(L, path, "missing '%s'", name);
    return MK_OK;
}

static mk_status opt_bool(ld *L, uint32_t obj, const char *name, const char *path, bool def, bool *out)
{
    uint32_t i;
    MK_TRY(opt(L, obj, name, MK_JSON_BOOL, path, &i));
    *out = i ? N(L, i)->b : def;
    return MK_OK;
}

static mk_status opt_uint(ld *L, uint32_t obj, const char *name, const char *path, uint64_t max, uint64_t def,
                          uint64_t *out)
{
    uint32_t i;
    MK_TRY(opt(L, obj, name, MK_JSON_NUM, path, &i));
    if (!i) {
        *out = def;
        return MK_OK;
    }
    if (!N(L, i)->is_uint || N(L, i)->u > max)
        return bad(L, path, "'%s' must be an integer in 0..%llu, found %g", name, (unsigned long long)max, N(L, i)->d);
    *out = N(L, i)->u;
    return MK_OK;
}

static mk_status type_of(ld *L, uint32_t obj, const char *path, const char **type)
{
    MK_TRY(want(L, obj, MK_JSON_OBJ, path));
    uint32_t ti;
    MK_TRY(req(L, obj, "type", MK_JSON_STR, path, &ti));
    *type = S(L, ti);
    return MK_OK;
}

static mk_status unsupported(ld *L, const char *path, const char *type, const char *supported)
{
    char b[72];
    return mk_error(MK_ERR_UNSUPPORTED, "%s: %s: type '%s' is not supported (supported: %s)", L->what, path,
                    q(type, strlen(type), b), supported);
}

/* A string member holding exactly one character. */
static mk_status one_char(ld *L, uint32_t obj, const char *name, const char *path, uint32_t *cp)
{
    uint32_t i;
    MK_TRY(req(L, obj, name, MK_JSON_STR, path, &i));
    const unsigned char *s = (const unsigned char *)S(L, i);
    size_t n = N(L, i)->str_len;
    if (n == 0 || mk_utf8_len(s[0]) != n) {
        char b[72];
        return bad(L, path, "'%s' must be one character, found '%s'", name, q((const char *)s, n, b));
    }
    mk_utf8_get(s, cp);
    return MK_OK;
}

static mk_status dup_str(const char *s, size_t n, char **out)
{
    *out = mk_malloc(n + 1);
    if (!*out) return MK_ERR_NOMEM;
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return MK_OK;
}

/* {"String": s} -> s; {"Regex": r} -> *regex = r */
static mk_status pattern(ld *L, uint32_t obj, const char *path, uint32_t *str, uint32_t *regex)
{
    uint32_t p;
    MK_TRY(req(L, obj, "pattern", MK_JSON_OBJ, path, &p));
    char key[256];
    snprintf(key, sizeof key, "%s.pattern", path);
    MK_TRY(opt(L, p, "String", MK_JSON_STR, key, str));
    MK_TRY(opt(L, p, "Regex", MK_JSON_STR, key, regex));
    if (!*str && !*regex) return bad(L, key, "expected {\"String\": ...} or {\"Regex\": ...}");
    return MK_OK;
}

/* ---- model ------------------------------------------------------------------------------- */

static mk_status load_vocab(ld *L, uint32_t vo, tok_vocab *v)
{
    uint32_t n = N(L, vo)->count;
    if (n > MK_TOK_MAX_VOCAB) return bad(L, "model.vocab", "%u tokens, over the limit of %u", n, MK_TOK_MAX_VOCAB);
    /* ids must be 0..n-1, each once: place each member at its id, then add in id order */
    uint32_t *at = calloc((size_t)n + 1, sizeof *at);
    if (!at) return mk_error(MK_ERR_NOMEM, "out of memory for a vocabulary of %u tokens", n);
    mk_status s = MK_OK;
    char b[72], b2[72];
    for (uint32_t c = N(L, vo)->first; c && s == MK_OK; c = N(L, c)->next) {
        const mk_json_node *m = N(L, c);
        const char *key = mk_json_key(L->j, c);
        if (m->type != MK_JSON_NUM || !m->is_uint)
            s = bad(L, "model.vocab", "'%s': the id must be a non-negative integer, found %s", q(key, m->key_len, b),
                    m->type == MK_JSON_NUM ? "a number that is not one" : mk_json_type_name(m->type));
        else if (m->u >= n)
            s = bad(L, "model.vocab", "'%s': id %llu out of range (%u tokens: ids 0..%u)", q(key, m->key_len, b),
                    (unsigned long long)m->u, n, n ? n - 1 : 0);
        else if (m->key_len > MK_TOK_MAX_TOKEN_BYTES)
            s = bad(L, "model.vocab", "token of %u bytes, over the limit of %u", m->key_len, MK_TOK_MAX_TOKEN_BYTES);
        else if (at[m->u])
            s = bad(L, "model.vocab", "id %llu given to both '%s' and '%s'", (unsigned long long)m->u,
                    q(mk_json_key(L->j, at[m->u]), N(L, at[m->u])->key_len, b), q(key, m->key_len, b2));
        else at[m->u] = c;
    }
    if (s == MK_OK) s = tok_vocab_init(v, n);
    for (uint32_t id = 0; id < n && s == MK_OK; id++) {
        bool dup;
        uint32_t other;
        const mk_json_node *m = N(L, at[id]);
        s = tok_vocab_add(v, mk_json_key(L->j, at[id]), m->key_len, &dup, &other);
        if (s == MK_OK && dup)
            s = bad(L, "model.vocab", "token '%s' listed twice", q(mk_json_key(L->j, at[id]), m->key_len, b));
    }
    free(at);
    return s;
}

static mk_status merge_side(ld *L, const tok_vocab *v, const char *s, size_t n, size_t rank, int32_t *id)
{
    *id = tok_vocab_find(v, s, n);
    if (*id < 0) {
        char b[72], key[64];
        snprintf(key, sizeof key, "model.merges[%zu]", rank);
        return bad(L, key, "'%s' is not in the vocabulary", q(s, n, b));
    }
    return MK_OK;
}

static mk_status load_merges(ld *L, uint32_t mo, tok_model *m)
{
    uint32_t n = N(L, mo)->count;
    if (n > MK_TOK_MAX_MERGES) return bad(L, "model.merges", "%u merges, over the limit of %u", n, MK_TOK_MAX_MERGES);
    MK_TRY(tok_merges_init(&m->merges, n));
    char *cat = malloc(2 * MK_TOK_MAX_TOKEN_BYTES + 1);
    if (!cat) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    size_t rank = 0, idx = 0;
    char key[64], b[72];
    for (uint32_t c = N(L, mo)->first; c && s == MK_OK; c = N(L, c)->next, idx++) {
        const char *a, *bb;
        size_t an, bn;
        snprintf(key, sizeof key, "model.merges[%zu]", idx);
        const mk_json_node *e = N(L, c);
        /* one form for the whole list, as tokenizers reads it (an untagged enum) */
        if (idx > 0 && (e->type == MK_JSON_STR) != (N(L, N(L, mo)->first)->type == MK_JSON_STR)) {
            s = bad(L, key, "mixes \"a b\" strings and [\"a\", \"b\"] pairs");
            break;
        }
        if (e->type == MK_JSON_STR) {
            const char *str = S(L, c);
            /* "a b": exactly one space (tokenizers' convert_merges_to_hashmap); "#version"
             * lines of merges.txt are skipped there too */
            if (mk_str_starts_with(str, "#version")) continue;
            const char *sp = memchr(str, ' ', e->str_len);
            if (!sp || memchr(sp + 1, ' ', e->str_len - (size_t)(sp + 1 - str))) {
                s = bad(L, key, "'%s' is not two tokens separated by one space", q(str, e->str_len, b));
                break;
            }
            a = str, an = (size_t)(sp - str), bb = sp + 1, bn = e->str_len - an - 1;
        } else if (e->type == MK_JSON_ARR && e->count == 2 && N(L, e->first)->type == MK_JSON_STR &&
                   N(L, N(L, e->first)->next)->type == MK_JSON_STR) {
            uint32_t x = e->first, y = N(L, x)->next;
            a = S(L, x), an = N(L, x)->str_len, bb = S(L, y), bn = N(L, y)->str_len;
        } else {
            s = bad(L, key, "expected \"a b\" or [\"a\", \"b\"], found %s%s", mk_json_type_name(e->type),
                    e->type == MK_JSON_ARR ? " of another shape" : "");
            break;
        }
        int32_t ia, ib, io;
        if ((s = merge_side(L, &m->vocab, a, an, idx, &ia)) != MK_OK) break;
        if ((s = merge_side(L, &m->vocab, bb, bn, idx, &ib)) != MK_OK) break;
        memcpy(cat, a, an); /* both are vocabulary tokens, so an + bn <= 2 * MAX_TOKEN_BYTES */
        memcpy(cat + an, bb, bn);
        if ((s = merge_side(L, &m->vocab, cat, an + bn, idx, &io)) != MK_OK) break;
        s = tok_merges_add(&m->merges, (uint32_t)ia, (uint32_t)ib, (uint32_t)rank, (uint32_t)io);
        rank++;
    }
    free(cat);
    return s;
}

static mk_status load_model(ld *L, uint32_t mo)
{
    tok_model *m = &L->t->model;
    const char *type;
    MK_TRY(type_of(L, mo, "model", &type));
    uint32_t vo, u;
    m->unk_id = -1;
    for (int i = 0; i < 256; i++) m->byte_id[i] = -1;
    if (strcmp(type, "BPE") == 0) {
        m->kind = TOK_MODEL_BPE;
        uint32_t mg, x;
        MK_TRY(req(L, mo, "vocab", MK_JSON_OBJ, "model", &vo));
        MK_TRY(req(L, mo, "merges", MK_JSON_ARR, "model", &mg));
        MK_TRY(opt(L, mo, "dropout", MK_JSON_NUM, "model", &x));
        if (x && N(L, x)->d != 0)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: model.dropout: %g is not supported (BPE dropout is random; only null or 0)",
                            L->what, N(L, x)->d);
        const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
        for (int i = 0; i < 2; i++) {
            MK_TRY(opt(L, mo, affix[i], MK_JSON_STR, "model", &x));
            if (x && N(L, x)->str_len)
                return mk_error(MK_ERR_UNSUPPORTED, "%s: model.%s: a non-empty value is not supported", L->what, affix[i]);
        }
        MK_TRY(opt_bool(L, mo, "fuse_unk", "model", false, &m->fuse_unk));
        MK_TRY(opt_bool(L, mo, "byte_fallback", "model", false, &m->byte_fallback));
        MK_TRY(opt_bool(L, mo, "ignore_merges", "model", false, &m->ignore_merges));
        MK_TRY(load_vocab(L, vo, &m->vocab));
        MK_TRY(load_merges(L, mg, m));
        for (int i = 0; i < 256; i++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", i);
            m->byte_id[i] = tok_vocab_find(&m->vocab, name, 6);
        }
    } else if (strcmp(type, "WordLevel") == 0) {
        m->kind = TOK_MODEL_WORDLEVEL;
        MK_TRY(req(L, mo, "vocab", MK_JSON_OBJ, "model", &vo));
        MK_TRY(load_vocab(L, vo, &m->vocab));
    } else {
        return unsupported(L, "model", type, "BPE, WordLevel");
    }
    MK_TRY(opt(L, mo, "unk_token", MK_JSON_STR, "model", &u));
    if (u) {
        MK_TRY(dup_str(S(L, u), N(L, u)->str_len, &m->unk));
        m->unk_id = tok_vocab_find(&m->vocab, S(L, u), N(L, u)->str_len);
    }
    return MK_OK;
}

typedef mk_status (*load_fn)(ld *L, uint32_t o, const char *path, int depth);

/* A Sequence: each element of o[member] through fn, one level deeper (the steps of nested
 * Sequences run in the same order as one flat list). */
static mk_status load_sequence(ld *L, uint32_t o, const char *path, int depth, const char *member, load_fn fn)
{
    if (depth >= MAX_NESTING) return bad(L, path, "Sequences nested more than %d deep", MAX_NESTING);
    uint32_t arr;
    MK_TRY(req(L, o, member, MK_JSON_ARR, path, &arr));
    size_t i = 0;
    for (uint32_t c = N(L, arr)->first; c; c = N(L, c)->next, i++) {
        char key[256];
        snprintf(key, sizeof key, "%s.%s[%zu]", path, member, i);
        MK_TRY(fn(L, c, key, depth + 1));
    }
    return MK_OK;
}

/* ---- normalizers ----------------------------------------------------------------------- */

static mk_status add_stage(ld *L, const char *path, void **arr, size_t *n, size_t elem, void **slot)
{
    if (*n >= MK_TOK_MAX_STAGES) return bad(L, path, "more than %u steps", MK_TOK_MAX_STAGES);
    void *p = mk_realloc_array(*arr, *n + 1, elem);
    if (!p) return MK_ERR_NOMEM;
    *arr = p;
    *slot = (char *)p + *n * elem;
    memset(*slot, 0, elem);
    (*n)++;
    return MK_OK;
}

static mk_status load_normalizer(ld *L, uint32_t o, const char *path, int depth)
{
    mk_tokenizer *t = L->t;
    const char *type;
    MK_TRY(type_of(L, o, path, &type));
    if (strcmp(type, "Sequence") == 0) return load_sequence(L, o, path, depth, "normalizers", load_normalizer);
    tok_norm *nm;
    static const char supported[] = "NFC, NFD, Prepend, Replace with a String pattern, Strip, Sequence";
    if (strcmp(type, "NFC") && strcmp(type, "NFD") && strcmp(type, "Prepend") && strcmp(type, "Replace") &&
        strcmp(type, "Strip"))
        return unsupported(L, path, type, supported);
    MK_TRY(add_stage(L, path, (void **)&t->norm, &t->n_norm, sizeof *t->norm, (void **)&nm));
    if (strcmp(type, "NFC") == 0) {
        nm->kind = NORM_NFC;
    } else if (strcmp(type, "NFD") == 0) {
        nm->kind = NORM_NFD;
    } else if (strcmp(type, "Prepend") == 0) {
        uint32_t p;
        nm->kind = NORM_PREPEND;
        MK_TRY(req(L, o, "prepend", MK_JSON_STR, path, &p));
        MK_TRY(dup_str(S(L, p), N(L, p)->str_len, &nm->a));
        nm->alen = N(L, p)->str_len;
    } else if (strcmp(type, "Replace") == 0) {
        uint32_t str, re, content;
        nm->kind = NORM_REPLACE;
        MK_TRY(pattern(L, o, path, &str, &re));
        if (!str)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.pattern: a Regex pattern is not supported (only String)", L->what, path);
        if (!N(L, str)->str_len) return bad(L, path, "empty pattern");
        MK_TRY(req(L, o, "content", MK_JSON_STR, path, &content));
        MK_TRY(dup_str(S(L, str), N(L, str)->str_len, &nm->a));
        nm->alen = N(L, str)->str_len;
        MK_TRY(dup_str(S(L, content), N(L, content)->str_len, &nm->b));
        nm->blen = N(L, content)->str_len;
    } else {
        nm->kind = NORM_STRIP;
        MK_TRY(opt_bool(L, o, "strip_left", path, true, &nm->left));
        MK_TRY(opt_bool(L, o, "strip_right", path, true, &nm->right));
    }
    return MK_OK;
}

/* ---- pre-tokenizers ---------------------------------------------------------------------- */

/* The Split regexes we run by hand (tok_pretok.c), as they appear in tokenizer.json. */
static const struct {
    const char *name, *regex;
    tok_pretok_kind kind;
} known_regex[] = {
    {"gpt2", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", PT_SPLIT_GPT2},
    {"llama3",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     PT_SPLIT_LLAMA3},
    {"qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     PT_SPLIT_QWEN2},
};

static mk_status load_pretok(ld *L, uint32_t o, const char *path, int depth)
{
    mk_tokenizer *t = L->t;
    const char *type;
    MK_TRY(type_of(L, o, path, &type));
    if (strcmp(type, "Sequence") == 0) return load_sequence(L, o, path, depth, "pretokenizers", load_pretok);
    static const char supported[] =
        "ByteLevel, Split (GPT-2, Llama-3 or Qwen2 regex, or a String), Digits, Whitespace, WhitespaceSplit, Metaspace, Sequence";
    static const char *const types[] = {"ByteLevel", "Split", "Digits", "Whitespace", "WhitespaceSplit", "Metaspace"};
    size_t ti = 0;
    while (ti < 6 && strcmp(type, types[ti])) ti++;
    if (ti == 6) return unsupported(L, path, type, supported);
    tok_pretok *pt;
    MK_TRY(add_stage(L, path, (void **)&t->pre, &t->n_pre, sizeof *t->pre, (void **)&pt));
    char b[72];
    switch (ti) {
    case 0:
        pt->kind = PT_BYTELEVEL;
        MK_TRY(opt_bool(L, o, "add_prefix_space", path, true, &pt->add_prefix_space));
        MK_TRY(opt_bool(L, o, "use_regex", path, true, &pt->use_regex));
        break;
    case 1: {
        uint32_t str, re, beh;
        MK_TRY(pattern(L, o, path, &str, &re));
        if (str) {
            pt->kind = PT_SPLIT_STRING;
            MK_TRY(dup_str(S(L, str), N(L, str)->str_len, &pt->pattern));
            pt->pattern_len = N(L, str)->str_len;
        } else {
            size_t k = 0;
            while (k < 3 && strcmp(S(L, re), known_regex[k].regex)) k++;
            if (k == 3)
                return mk_error(MK_ERR_UNSUPPORTED,
                                "%s: %s.pattern.Regex: '%s' is not a known split pattern (known: the GPT-2, Llama-3 and "
                                "Qwen2 patterns; there is no general regex engine)",
                                L->what, path, q(S(L, re), N(L, re)->str_len, b));
            pt->kind = known_regex[k].kind;
        }
        MK_TRY(req(L, o, "behavior", MK_JSON_STR, path, &beh));
        static const char *const behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        size_t bi = 0;
        while (bi < 5 && strcmp(S(L, beh), behaviors[bi])) bi++;
        if (bi == 5)
            return bad(L, path, "unknown behavior '%s' (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)",
                       q(S(L, beh), N(L, beh)->str_len, b));
        pt->behavior = (tok_split_behavior)bi;
        MK_TRY(opt_bool(L, o, "invert", path, false, &pt->invert));
        break;
    }
    case 2:
        pt->kind = PT_DIGITS;
        MK_TRY(opt_bool(L, o, "individual_digits", path, false, &pt->individual));
        break;
    case 3: pt->kind = PT_WHITESPACE; break;
    case 4: pt->kind = PT_WHITESPACE_SPLIT; break;
    case 5: {
        pt->kind = PT_METASPACE;
        MK_TRY(one_char(L, o, "replacement", path, &pt->replacement));
        pt->rep_len = mk_utf8_put(pt->replacement, pt->rep);
        uint32_t ps;
        MK_TRY(opt(L, o, "prepend_scheme", MK_JSON_STR, path, &ps));
        pt->prepend = PREPEND_ALWAYS;
        if (ps) {
            const char *v = S(L, ps);
            if (!strcmp(v, "always")) pt->prepend = PREPEND_ALWAYS;
            else if (!strcmp(v, "first")) pt->prepend = PREPEND_FIRST;
            else if (!strcmp(v, "never")) pt->prepend = PREPEND_NEVER;
            else return bad(L, path, "unknown prepend_scheme '%s' (always, first, never)", q(v, N(L, ps)->str_len, b));
        }
        bool aps;
        MK_TRY(opt_bool(L, o, "add_prefix_space", path, true, &aps));
        if (!aps) {
            if (ps && pt->prepend != PREPEND_NEVER) return bad(L, path, "add_prefix_space false contradicts prepend_scheme");
            pt->prepend = PREPEND_NEVER;
        }
        MK_TRY(opt_bool(L, o, "split", path, true, &pt->split));
        break;
    }
    }
    return MK_OK;
}

/* ---- decoders ----------------------------------------------------------------------------- */

static mk_status load_decoder(ld *L, uint32_t o, const char *path, int depth)
{
    mk_tokenizer *t = L->t;
    const char *type;
    MK_TRY(type_of(L, o, path, &type));
    if (strcmp(type, "Sequence") == 0) return load_sequence(L, o, path, depth, "decoders", load_decoder);
    static const char *const types[] = {"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"};
    size_t ti = 0;
    while (ti < 6 && strcmp(type, types[ti])) ti++;
    if (ti == 6) return unsupported(L, path, type, "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
    tok_dec *d;
    MK_TRY(add_stage(L, path, (void **)&t->dec, &t->n_dec, sizeof *t->dec, (void **)&d));
    d->kind = (tok_dec_kind)ti;
    if (d->kind == DEC_METASPACE) {
        MK_TRY(one_char(L, o, "replacement", path, &d->ch));
        uint32_t ps;
        MK_TRY(opt(L, o, "prepend_scheme", MK_JSON_STR, path, &ps));
        d->prepend = PREPEND_ALWAYS;
        if (ps && !strcmp(S(L, ps), "never")) d->prepend = PREPEND_NEVER;
        else if (ps && !strcmp(S(L, ps), "first")) d->prepend = PREPEND_FIRST;
        else if (ps && strcmp(S(L, ps), "always")) return bad(L, path, "unknown prepend_scheme (always, first, never)");
        bool aps;
        MK_TRY(opt_bool(L, o, "add_prefix_space", path, true, &aps));
        if (!aps) d->prepend = PREPEND_NEVER;
    } else if (d->kind == DEC_REPLACE) {
        uint32_t str, re, content;
        MK_TRY(pattern(L, o, path, &str, &re));
        if (!str)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.pattern: a Regex pattern is not supported (only String)", L->what, path);
        if (!N(L, str)->str_len) return bad(L, path, "empty pattern");
        MK_TRY(req(L, o, "content", MK_JSON_STR, path, &content));
        MK_TRY(dup_str(S(L, str), N(L, str)->str_len, &d->a));
        d->alen = N(L, str)->str_len;
        MK_TRY(dup_str(S(L, content), N(L, content)->str_len, &d->b));
        d->blen = N(L, content)->str_len;
    } else if (d->kind == DEC_STRIP) {
        uint64_t a, b;
        MK_TRY(one_char(L, o, "content", path, &d->ch));
        MK_TRY(opt_uint(L, o, "start", path, 1u << 20, 0, &a));
        MK_TRY(opt_uint(L, o, "stop", path, 1u << 20, 0, &b));
        d->start = (size_t)a;
        d->stop = (size_t)b;
    }
    return MK_OK;
}

/* ---- added tokens --------------------------------------------------------------------------- */

static mk_status load_added(ld *L, uint32_t arr)
{
    mk_tokenizer *t = L->t;
    uint32_t n = N(L, arr)->count;
    if (n > MK_TOK_MAX_ADDED) return bad(L, "added_tokens", "%u tokens, over the limit of %u", n, MK_TOK_MAX_ADDED);
    t->added = mk_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return MK_ERR_NOMEM;
    size_t model_n = t->model.vocab.n;
    uint64_t max_id = 0, next_id = model_n;
    bool any = false;
    size_t i = 0;
    char key[64], b[72];
    for (uint32_t c = N(L, arr)->first; c; c = N(L, c)->next, i++) {
        snprintf(key, sizeof key, "added_tokens[%zu]", i);
        MK_TRY(want(L, c, MK_JSON_OBJ, key));
        uint32_t ci, ii;
        MK_TRY(req(L, c, "content", MK_JSON_STR, key, &ci));
        MK_TRY(req(L, c, "id", MK_JSON_NUM, key, &ii));
        const char *content = S(L, ci);
        size_t len = N(L, ci)->str_len;
        if (len == 0) return bad(L, key, "empty content");
        if (len > MK_TOK_MAX_TOKEN_BYTES) return bad(L, key, "content of %zu bytes, over the limit of %u", len, MK_TOK_MAX_TOKEN_BYTES);
        if (!N(L, ii)->is_uint || N(L, ii)->u > (uint64_t)MK_TOK_MAX_VOCAB + MK_TOK_MAX_ADDED)
            return bad(L, key, "id must be an integer in 0..%u, found %g", MK_TOK_MAX_VOCAB + MK_TOK_MAX_ADDED, N(L, ii)->d);
        tok_added a = {0};
        MK_TRY(opt_bool(L, c, "special", key, false, &a.special));
        MK_TRY(opt_bool(L, c, "single_word", key, false, &a.single_word));
        MK_TRY(opt_bool(L, c, "lstrip", key, false, &a.lstrip));
        MK_TRY(opt_bool(L, c, "rstrip", key, false, &a.rstrip));
        MK_TRY(opt_bool(L, c, "normalized", key, !a.special, &a.normalized));
        /* the id tokenizers gives it (AddedVocabulary::add_tokens): an added token's or the
         * model's id for the same content, else the next id after the model's, counting up
         * over the new ones. A file that declares another id is refused. */
        uint64_t id = 0;
        bool found = false;
        for (size_t k = 0; k < t->n_added && !found; k++)
            if (t->added[k].len == len && memcmp(t->added[k].content, content, len) == 0) id = t->added[k].id, found = true;
        if (!found) {
            int32_t v = tok_vocab_find(&t->model.vocab, content, len);
            if (v >= 0) id = (uint64_t)v, found = true;
        }
        if (!found) id = next_id++;
        if (N(L, ii)->u != id)
            return bad(L, key, "'%s' has id %llu, but tokenizers gives it id %llu (%s)", q(content, len, b),
                       (unsigned long long)N(L, ii)->u, (unsigned long long)id,
                       found ? "the id of the same token earlier" : "the next id after the vocabulary and the new added tokens before it");
        /* the same content again with the same id: tokenizers updates its flags */
        size_t slot = t->n_added;
        for (size_t k = 0; k < t->n_added; k++)
            if (t->added[k].id == id) slot = k;
        a.id = (uint32_t)id;
        a.len = len;
        if (slot < t->n_added) {
            a.content = t->added[slot].content;
            t->added[slot] = a;
        } else {
            MK_TRY(dup_str(content, len, &a.content));
            t->added[t->n_added++] = a;
        }
        if (!any || id > max_id) max_id = id;
        any = true;
    }
    t->vocab_size = model_n;
    if (any && max_id + 1 > t->vocab_size) t->vocab_size = (size_t)max_id + 1;
    return MK_OK;
}

static int cmp_by_first_then_longest(const void *x, const void *y, void *ctx)
{
    const mk_tokenizer *t = ((const void **)ctx)[0];
    bool norm = *(const bool *)((const void **)ctx)[1];
    const tok_added *a = &t->added[*(const uint32_t *)x], *b = &t->added[*(const uint32_t *)y];
    const char *as = norm && a->norm ? a->norm : a->content, *bs = norm && b->norm ? b->norm : b->content;
    size_t al = norm && a->norm ? a->norm_len : a->len, bl = norm && b->norm ? b->norm_len : b->len;
    if ((unsigned char)as[0] != (unsigned char)bs[0]) return (unsigned char)as[0] < (unsigned char)bs[0] ? -1 : 1;
    if (al != bl) return al > bl ? -1 : 1;
    return memcmp(as, bs, al);
}

static mk_status build_matcher(mk_tokenizer *t, tok_matcher *m, bool normalized)
{
    m->cand = mk_calloc(t->n_added ? t->n_added : 1, sizeof *m->cand);
    if (!m->cand) return MK_ERR_NOMEM;
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        size_t len = normalized && a->norm ? a->norm_len : a->len;
        if (a->normalized == normalized && len) m->cand[m->n++] = (uint32_t)i;
    }
    const void *ctx[2] = {t, &normalized};
    qsort_r(m->cand, m->n, sizeof *m->cand, cmp_by_first_then_longest, ctx);
    memset(m->start, 0, sizeof m->start);
    for (size_t i = 0; i < m->n; i++) {
        const tok_added *a = &t->added[m->cand[i]];
        unsigned char c = (unsigned char)(normalized && a->norm ? a->norm[0] : a->content[0]);
        m->start[c + 1]++;
    }
    for (int c = 0; c < 256; c++) m->start[c + 1] += m->start[c];
    return MK_OK;
}

/* ---- post-processor --------------------------------------------------------------------------- */

static mk_status push_id(ld *L, const char *path, int32_t **v, size_t *n, uint64_t id)
{
    if (id >= L->t->vocab_size)
        return bad(L, path, "token id %llu out of range (vocabulary of %zu)", (unsigned long long)id, L->t->vocab_size);
    if (*n >= 64) return bad(L, path, "more than 64 special tokens");
    int32_t *p = mk_realloc_array(*v, *n + 1, sizeof **v);
    if (!p) return MK_ERR_NOMEM;
    p[(*n)++] = (int32_t)id;
    *v = p;
    return MK_OK;
}

/* ["<s>", 1] */
static mk_status name_id(ld *L, uint32_t o, const char *name, const char *path, uint64_t *id)
{
    uint32_t a;
    MK_TRY(req(L, o, name, MK_JSON_ARR, path, &a));
    uint32_t x = N(L, a)->first, y = x ? N(L, x)->next : 0;
    if (N(L, a)->count != 2 || N(L, x)->type != MK_JSON_STR || N(L, y)->type != MK_JSON_NUM || !N(L, y)->is_uint)
        return bad(L, path, "'%s' must be [token, id]", name);
    *id = N(L, y)->u;
    return MK_OK;
}

static mk_status load_post(ld *L, uint32_t o, const char *path, int depth, int32_t **pre, size_t *npre, int32_t **suf,
                           size_t *nsuf)
{
    const char *type;
    MK_TRY(type_of(L, o, path, &type));
    if (strcmp(type, "Sequence") == 0) {
        if (depth >= MAX_NESTING) return bad(L, path, "Sequences nested more than %d deep", MAX_NESTING);
        uint32_t arr;
        MK_TRY(req(L, o, "processors", MK_JSON_ARR, path, &arr));
        size_t i = 0;
        for (uint32_t c = N(L, arr)->first; c; c = N(L, c)->next, i++) {
            char key[256];
            snprintf(key, sizeof key, "%s.processors[%zu]", path, i);
            /* each processor wraps what the ones before made */
            int32_t *p2 = NULL, *s2 = NULL;
            size_t np2 = 0, ns2 = 0;
            mk_status s = load_post(L, c, key, depth + 1, &p2, &np2, &s2, &ns2);
            for (size_t k = 0; k < *npre && s == MK_OK; k++) s = push_id(L, key, &p2, &np2, (uint64_t)(*pre)[k]);
            for (size_t k = 0; k < ns2 && s == MK_OK; k++) s = push_id(L, key, suf, nsuf, (uint64_t)s2[k]);
            free(s2);
            if (s != MK_OK) {
                free(p2);
                return s;
            }
            free(*pre);
            *pre = p2;
            *npre = np2;
        }
        return MK_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) return MK_OK;
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        uint64_t cls, sep;
        MK_TRY(name_id(L, o, "cls", path, &cls));
        MK_TRY(name_id(L, o, "sep", path, &sep));
        MK_TRY(push_id(L, path, pre, npre, cls));
        return push_id(L, path, suf, nsuf, sep);
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return unsupported(L, path, type, "TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence");
    uint32_t single, sp;
    MK_TRY(req(L, o, "single", MK_JSON_ARR, path, &single));
    MK_TRY(opt(L, o, "special_tokens", MK_JSON_OBJ, path, &sp));
    bool seen_a = false;
    size_t i = 0;
    char b[72];
    for (uint32_t c = N(L, single)->first; c; c = N(L, c)->next, i++) {
        char key[256];
        snprintf(key, sizeof key, "%s.single[%zu]", path, i);
        MK_TRY(want(L, c, MK_JSON_OBJ, key));
        uint32_t st, sq;
        MK_TRY(opt(L, c, "SpecialToken", MK_JSON_OBJ, key, &st));
        MK_TRY(opt(L, c, "Sequence", MK_JSON_OBJ, key, &sq));
        if (sq) {
            uint32_t id;
            MK_TRY(req(L, sq, "id", MK_JSON_STR, key, &id));
            if (strcmp(S(L, id), "A") || seen_a) return bad(L, key, "the single template must hold sequence A once");
            seen_a = true;
            continue;
        }
        if (!st) return bad(L, key, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        uint32_t name, def = 0, ids;
        MK_TRY(req(L, st, "id", MK_JSON_STR, key, &name));
        if (sp) def = mk_json_get(L->j, sp, S(L, name));
        if (!def)
            return bad(L, key, "special token '%s' is not in special_tokens", q(S(L, name), N(L, name)->str_len, b));
        MK_TRY(want(L, def, MK_JSON_OBJ, key));
        MK_TRY(req(L, def, "ids", MK_JSON_ARR, key, &ids));
        for (uint32_t x = N(L, ids)->first; x; x = N(L, x)->next) {
            if (N(L, x)->type != MK_JSON_NUM || !N(L, x)->is_uint) return bad(L, key, "ids must be non-negative integers");
            MK_TRY(push_id(L, key, seen_a ? suf : pre, seen_a ? nsuf : npre, N(L, x)->u));
        }
    }
    if (!seen_a) return bad(L, path, "the single template has no sequence $A");
    return MK_OK;
}

/* ---- the whole file ------------------------------------------------------------------------ */

void mk_tokenizer_free(mk_tokenizer *t)
{
    if (!t) return;
    tok_model_free(&t->model);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++) free(t->pre[i].pattern);
    free(t->pre);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    free(t->raw_match.cand);
    free(t->norm_match.cand);
    free(t->added_of_id);
    free(t->prefix);
    free(t->suffix);
    free(t);
}

static void describe(mk_tokenizer *t)
{
    static const char *const pre_names[] = {"ByteLevel", "Split(gpt2)", "Split(llama3)", "Split(qwen2)", "Split(string)",
                                            "Digits", "Whitespace", "WhitespaceSplit", "Metaspace"};
    static const char *const norm_names[] = {"NFC", "NFD", "Prepend", "Replace", "Strip"};
    mk_buf b = {0};
    if (t->model.kind == TOK_MODEL_BPE)
        mk_buf_printf(&b, "BPE (%u tokens, %zu merges%s%s)", t->model.vocab.n, t->model.merges.n,
                      t->model.byte_fallback ? ", byte fallback" : "", t->model.ignore_merges ? ", ignore_merges" : "");
    else mk_buf_printf(&b, "WordLevel (%u tokens)", t->model.vocab.n);
    mk_buf_printf(&b, ", %zu added", t->n_added);
    mk_buf_puts(&b, "; normalizer:");
    for (size_t i = 0; i < t->n_norm; i++) mk_buf_printf(&b, " %s", norm_names[t->norm[i].kind]);
    if (!t->n_norm) mk_buf_puts(&b, " none");
    mk_buf_puts(&b, "; pre-tokenizer:");
    for (size_t i = 0; i < t->n_pre; i++) mk_buf_printf(&b, " %s", pre_names[t->pre[i].kind]);
    if (!t->n_pre) mk_buf_puts(&b, " none");
    mk_buf_printf(&b, "; special: %zu before, %zu after", t->n_prefix, t->n_suffix);
    snprintf(t->describe, sizeof t->describe, "%s", b.data ? b.data : "");
    mk_buf_free(&b);
}

static mk_status load_all(ld *L)
{
    mk_tokenizer *t = L->t;
    const mk_json *j = L->j;
    if (j->nodes[0].type != MK_JSON_OBJ)
        return bad(L, "top level", "expected an object, found %s", mk_json_type_name(j->nodes[0].type));
    uint32_t dup = mk_json_dup_key(j, 0);
    if (dup) return bad(L, "top level", "key '%s' appears twice", mk_json_key(j, dup));
    uint32_t v, m, a, nz, pt, pp, dc;
    MK_TRY(opt(L, 0, "version", MK_JSON_STR, "top level", &v));
    if (v && strcmp(S(L, v), "1.0")) {
        char b[72];
        return bad(L, "version", "'%s' is not a known version (1.0)", q(S(L, v), N(L, v)->str_len, b));
    }
    MK_TRY(req(L, 0, "model", MK_JSON_OBJ, "top level", &m));
    MK_TRY(opt(L, 0, "added_tokens", MK_JSON_ARR, "top level", &a));
    MK_TRY(opt(L, 0, "normalizer", MK_JSON_OBJ, "top level", &nz));
    MK_TRY(opt(L, 0, "pre_tokenizer", MK_JSON_OBJ, "top level", &pt));
    MK_TRY(opt(L, 0, "post_processor", MK_JSON_OBJ, "top level", &pp));
    MK_TRY(opt(L, 0, "decoder", MK_JSON_OBJ, "top level", &dc));
    MK_TRY(load_model(L, m));
    t->vocab_size = t->model.vocab.n;
    if (a) MK_TRY(load_added(L, a));
    if (nz) MK_TRY(load_normalizer(L, nz, "normalizer", 0));
    if (pt) MK_TRY(load_pretok(L, pt, "pre_tokenizer", 0));
    if (dc) MK_TRY(load_decoder(L, dc, "decoder", 0));
    t->has_decoder = dc != 0;
    if (pp) MK_TRY(load_post(L, pp, "post_processor", 0, &t->prefix, &t->n_prefix, &t->suffix, &t->n_suffix));
    /* normalized contents of normalized added tokens (matched on normalized text) */
    for (size_t i = 0; i < t->n_added && t->n_norm; i++) {
        tok_added *ad = &t->added[i];
        if (!ad->normalized) continue;
        mk_buf nb = {0};
        tok_normalize(t, ad->content, ad->len, &nb);
        if (nb.failed) {
            mk_buf_free(&nb);
            return MK_ERR_NOMEM;
        }
        if (nb.len != ad->len || memcmp(nb.data, ad->content, ad->len)) {
            ad->norm = nb.data ? nb.data : mk_strdup("");
            ad->norm_len = nb.len;
            if (!ad->norm) return MK_ERR_NOMEM;
        } else {
            mk_buf_free(&nb);
        }
    }
    MK_TRY(build_matcher(t, &t->raw_match, false));
    MK_TRY(build_matcher(t, &t->norm_match, true));
    t->added_of_id = mk_malloc((t->vocab_size ? t->vocab_size : 1) * sizeof *t->added_of_id);
    if (!t->added_of_id) return MK_ERR_NOMEM;
    for (size_t i = 0; i < t->vocab_size; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    t->bos = t->n_prefix ? t->prefix[0] : -1;
    t->eos = t->n_suffix ? t->suffix[t->n_suffix - 1] : -1;
    describe(t);
    return MK_OK;
}

mk_status mk_tokenizer_load(const char *json, size_t len, const char *what, mk_tokenizer **out)
{
    *out = NULL;
    if (len > MK_TOK_MAX_JSON)
        return mk_error(MK_ERR_FORMAT, "%s: %zu bytes, over the limit of %zu for a tokenizer.json", what, len, MK_TOK_MAX_JSON);
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    MK_TRY(mk_json_parse(&j, json, len, &lim, what));
    mk_tokenizer *t = mk_calloc(1, sizeof *t);
    if (!t) {
        mk_json_free(&j);
        return MK_ERR_NOMEM;
    }
    ld L = {&j, what, t};
    mk_status s = load_all(&L);
    mk_json_free(&j);
    if (s != MK_OK) {
        if (s == MK_ERR_NOMEM && !strstr(mk_errmsg(), "memory")) mk_error(MK_ERR_NOMEM, "%s: out of memory", what);
        mk_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MK_OK;
}

/* ---- tokenizer_config.json ------------------------------------------------------------------- */

static mk_status config_token(ld *L, const char *name, int32_t *id)
{
    uint32_t v = mk_json_get(L->j, 0, name);
    if (!v || N(L, v)->type == MK_JSON_NULL) return MK_OK;
    if (N(L, v)->type == MK_JSON_OBJ) {
        uint32_t c;
        MK_TRY(req(L, v, "content", MK_JSON_STR, name, &c));
        v = c;
    } else {
        MK_TRY(want(L, v, MK_JSON_STR, name));
    }
    int32_t k = mk_tokenizer_id(L->t, S(L, v), N(L, v)->str_len);
    if (k < 0) {
        char b[72];
        return bad(L, name, "'%s' is not a token of the tokenizer", q(S(L, v), N(L, v)->str_len, b));
    }
    *id = k;
    return MK_OK;
}

mk_status mk_tokenizer_load_config(mk_tokenizer *t, const char *json, size_t len, const char *what)
{
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    MK_TRY(mk_json_parse(&j, json, len, &lim, what));
    ld L = {&j, what, t};
    mk_status s = j.nodes[0].type == MK_JSON_OBJ ? MK_OK : bad(&L, "top level", "expected an object");
    int32_t bos = t->bos, eos = t->eos;
    if (s == MK_OK) s = config_token(&L, "bos_token", &bos);
    if (s == MK_OK) s = config_token(&L, "eos_token", &eos);
    if (s == MK_OK) {
        t->bos = bos;
        t->eos = eos;
    }
    mk_json_free(&j);
    return s;
}
