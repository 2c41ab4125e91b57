/* data.c - see data.h. */
#include "data.h"

#include "../core/mk_rng.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS ((uint64_t)1 << 34)

typedef struct stream {
    int32_t *tok;
    float *w;
    size_t n, cap;
} stream;

static mk_status push(stream *s, const int32_t *ids, size_t n, float w)
{
    if (n > MAX_TOKENS - s->n) return mk_error(MK_ERR_NOMEM, "more than %llu training tokens", (unsigned long long)MAX_TOKENS);
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + n) cap *= 2;
        int32_t *t = realloc(s->tok, cap * sizeof *t);
        if (t) s->tok = t;
        float *f = t ? realloc(s->w, cap * sizeof *f) : NULL;
        if (f) s->w = f;
        if (!t || !f) return mk_error(MK_ERR_NOMEM, "out of memory for %zu training tokens", s->n + n);
        s->cap = cap;
    }
    memcpy(s->tok + s->n, ids, n * sizeof *ids);
    for (size_t i = 0; i < n; i++) s->w[s->n + i] = w;
    s->n += n;
    return MK_OK;
}

/* Tokens of one piece of text, weighted w. */
static mk_status add_text(stream *s, const mk_tokenizer *tk, const char *text, size_t len, bool special, float w)
{
    int32_t *ids = NULL;
    size_t n = 0;
    MK_TRY(mk_tokenizer_encode(tk, text, len, special, &ids, &n));
    mk_status st = push(s, ids, n, w);
    free(ids);
    return st;
}

static mk_status end_doc(stream *s, const mk_tokenizer *tk)
{
    int32_t eos = mk_tokenizer_eos(tk);
    if (eos < 0 || (s->n && s->tok[s->n - 1] == eos)) return MK_OK;
    return push(s, &eos, 1, 1.0f);
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static mk_status jsonl_line(stream *s, const mk_tokenizer *tk, const char *what, size_t lineno, const char *line, size_t len,
                            float pw)
{
    cJSON *o = cJSON_ParseWithLength(line, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return mk_error(MK_ERR_FORMAT, "%s:%zu: not a JSON object (each line must be {\"text\": ...} or {\"prompt\": ..., "
                                       "\"response\": ...})", what, lineno);
    }
    const char *text = str_of(o, "text"), *p = str_of(o, "prompt"), *r = str_of(o, "response");
    mk_status st = MK_OK;
    if (text) st = add_text(s, tk, text, strlen(text), true, 1.0f);
    else if (p && r) {
        st = add_text(s, tk, p, strlen(p), true, pw);
        if (st == MK_OK) st = add_text(s, tk, r, strlen(r), false, 1.0f);
    } else
        st = mk_error(MK_ERR_FORMAT, "%s:%zu: the object has no string \"text\", nor string \"prompt\" and \"response\"", what,
                      lineno);
    if (st == MK_OK) st = end_doc(s, tk);
    cJSON_Delete(o);
    return st;
}

mk_status mk_train_data_load(const char *what, const char *text, size_t len, bool jsonl, const mk_tokenizer *tk, size_t seq,
                             double prompt_weight, mk_train_data *out)
{
    memset(out, 0, sizeof *out);
    if (seq < 2) return mk_error(MK_ERR_USAGE, "--seq %zu: a row needs at least 2 tokens", seq);
    stream s = {0};
    mk_status st = MK_OK;
    size_t docs = 0;
    if (jsonl) {
        size_t lineno = 0;
        for (size_t i = 0; i < len && st == MK_OK;) {
            const char *nl = memchr(text + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - text) : len;
            lineno++;
            size_t a = i;
            while (a < e && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
            if (a < e) {
                st = jsonl_line(&s, tk, what, lineno, text + a, e - a, (float)prompt_weight);
                docs++;
            }
            i = e + 1;
        }
    } else {
        size_t a = 0;
        while (a < len && (text[a] == ' ' || text[a] == '\n' || text[a] == '\t' || text[a] == '\r')) a++;
        if (a < len) {
            st = add_text(&s, tk, text, len, true, 1.0f);
            if (st == MK_OK) st = end_doc(&s, tk);
            docs = 1;
        }
    }
    if (st == MK_OK && s.n < 2) st = mk_error(MK_ERR_FORMAT, "%s: no training text (%zu tokens)", what, s.n);
    if (st == MK_OK) {
        size_t rows = (s.n + seq - 1) / seq, pad = rows * seq - s.n;
        int32_t p = mk_tokenizer_eos(tk) >= 0 ? mk_tokenizer_eos(tk) : 0;
        for (size_t i = 0; i < pad && st == MK_OK; i++) st = push(&s, &p, 1, 0.0f);
        out->tok = s.tok, out->w = s.w;
        out->n_rows = rows, out->seq = seq, out->n_tokens = s.n - pad, out->n_docs = docs;
        return st;
    }
    free(s.tok), free(s.w);
    return st;
}

void mk_train_data_free(mk_train_data *d)
{
    free(d->tok), free(d->w), free(d->perm);
    memset(d, 0, sizeof *d);
}

mk_status mk_train_data_row(mk_train_data *d, uint64_t seed, uint64_t k, size_t *row)
{
    uint64_t n = d->n_rows, epoch = k / n;
    if (!d->perm || d->perm_epoch != epoch) { /* Fisher-Yates from (seed, epoch), kept for the epoch */
        if (!d->perm && !(d->perm = mk_malloc(n * sizeof *d->perm))) return MK_ERR_NOMEM;
        mk_rng key = mk_rng_key(seed, "finetune-order");
        for (size_t i = 0; i < n; i++) d->perm[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(mk_rng_u32(key, epoch, i) % i), t = d->perm[i - 1];
            d->perm[i - 1] = d->perm[j], d->perm[j] = t;
        }
        d->perm_epoch = epoch;
    }
    *row = d->perm[k % n];
    return MK_OK;
}
