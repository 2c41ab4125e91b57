/* tokenizer.c - the encode pipeline of tokenizers' TokenizerImpl::encode (added tokens
 * that skip normalization, normalizers, added tokens matched on normalized text,
 * pre-tokenizers, the model, the post-processor), the decoders, and the public API.
 * Loading is in tok_load.c. */
#include "tok_internal.h"

#include "../core/mk_hash.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* ---- normalizers ------------------------------------------------------------------------ */

static void replace_all(mk_buf *out, const char *s, size_t n, const char *a, size_t alen, const char *b, size_t blen)
{
    size_t i = 0;
    while (i < n) {
        const char *hit = alen ? memmem(s + i, n - i, a, alen) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        mk_buf_put(out, s + i, at - i);
        mk_buf_put(out, b, blen);
        i = at + alen;
    }
    mk_buf_put(out, s + i, n - i);
}

/* leading / trailing White_Space (Rust's char::is_whitespace) */
static size_t space_prefix(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = mk_utf8_get((const unsigned char *)s + i, &cp);
        if (!mk_uni_is_space(cp)) break;
        i += l;
    }
    return i;
}

static size_t space_suffix_start(const char *s, size_t n)
{
    size_t e = n;
    while (e > 0) {
        size_t b = e - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        mk_utf8_get((const unsigned char *)s + b, &cp);
        if (!mk_uni_is_space(cp)) break;
        e = b;
    }
    return e;
}

/* One normalizer step from (s, n) into out (emptied first). */
static void norm_step(const tok_norm *nm, const char *s, size_t n, mk_buf *out)
{
    out->len = 0;
    switch (nm->kind) {
    case NORM_NFC: mk_uni_nfc(out, s, n); break;
    case NORM_NFD: mk_uni_nfd(out, s, n); break;
    case NORM_PREPEND:
        if (n) mk_buf_put(out, nm->a, nm->alen);
        mk_buf_put(out, s, n);
        break;
    case NORM_REPLACE: replace_all(out, s, n, nm->a, nm->alen, nm->b, nm->blen); break;
    case NORM_STRIP: {
        size_t a = nm->left ? space_prefix(s, n) : 0;
        size_t b = nm->right ? space_suffix_start(s, n) : n;
        if (b < a) b = a;
        mk_buf_put(out, s + a, b - a);
        break;
    }
    }
    mk_buf_put(out, "", 1); /* keep data non-NULL; the NUL is not counted */
    out->len--;
}

/* Normalize through every step; the result is in *res (one of the two buffers). */
static void normalize2(const mk_tokenizer *t, const char *s, size_t n, mk_buf *x, mk_buf *y, mk_buf **res)
{
    mk_buf *cur = NULL;
    for (size_t i = 0; i < t->n_norm; i++) {
        mk_buf *dst = cur == x ? y : x;
        norm_step(&t->norm[i], cur ? cur->data : s, cur ? cur->len : n, dst);
        cur = dst;
    }
    *res = cur;
}

void tok_normalize(const mk_tokenizer *t, const char *s, size_t n, mk_buf *out)
{
    mk_buf tmp = {0}, *res = NULL;
    mk_buf a = {0};
    normalize2(t, s, n, &a, &tmp, &res);
    out->len = 0;
    if (res) mk_buf_put(out, res->data, res->len);
    else mk_buf_put(out, s, n);
    if (a.failed || tmp.failed) out->failed = true;
    mk_buf_free(&a);
    mk_buf_free(&tmp);
}

/* ---- added tokens ------------------------------------------------------------------------ */

/* Leftmost-longest match at or after i; returns the added[] index or -1. */
static long match_added(const mk_tokenizer *t, const tok_matcher *m, const char *s, size_t n, size_t i, bool normalized,
                        size_t *at, size_t *len)
{
    if (!m->n) return -1;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        for (uint32_t k = m->start[c]; k < m->start[c + 1]; k++) {
            const tok_added *a = &t->added[m->cand[k]];
            const char *p = normalized && a->norm ? a->norm : a->content;
            size_t pl = normalized && a->norm ? a->norm_len : a->len;
            if (pl <= n - i && memcmp(s + i, p, pl) == 0) {
                *at = i;
                *len = pl;
                return m->cand[k];
            }
        }
    }
    return -1;
}

static bool word_char_before(const char *s, size_t at)
{
    if (at == 0) return false;
    size_t b = at - 1;
    while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    uint32_t cp;
    mk_utf8_get((const unsigned char *)s + b, &cp);
    return mk_uni_is_word(cp);
}

static bool word_char_at(const char *s, size_t n, size_t at)
{
    if (at >= n) return false;
    uint32_t cp;
    mk_utf8_get((const unsigned char *)s + at, &cp);
    return mk_uni_is_word(cp);
}

typedef struct enc enc;
typedef mk_status (*seg_fn)(enc *e, const char *s, size_t n, bool first);

/* tokenizers' AddedVocabulary::find_matches: cut s at the added tokens (single_word,
 * lstrip and rstrip as there); the text between goes to fn, the tokens to the ids. */
static mk_status split_added(enc *e, const tok_matcher *m, bool normalized, const char *s, size_t n, bool first,
                             seg_fn fn);

/* ---- encode ------------------------------------------------------------------------------- */

#define CACHE_MAX_SLOTS (1u << 17)
#define CACHE_MAX_PIECE 128u

typedef struct cache_entry {
    uint64_t h;
    uint32_t str_off, str_len, ids_off, ids_n;
} cache_entry;

struct enc {
    const mk_tokenizer *t;
    tok_ids ids;
    tok_scratch sc;
    mk_buf n1, n2;          /* normalizer buffers */
    mk_buf bufs[2 * MK_TOK_MAX_STAGES];
    tok_pipe pipe;
    /* per-call cache of pieces -> ids: text repeats its words */
    cache_entry *cache;
    size_t cache_mask, cache_n;
    mk_buf cache_strs;
    tok_ids cache_ids;
};

static mk_status model_piece(tok_pipe *p, const char *s, size_t n)
{
    enc *e = p->ctx;
    const tok_model *m = &e->t->model;
    if (n > CACHE_MAX_PIECE || !e->cache) return tok_model_encode(m, &e->sc, s, n, &e->ids);
    uint64_t h = mk_hash64(s, n);
    size_t i = (size_t)h & e->cache_mask;
    for (;; i = (i + 1) & e->cache_mask) {
        cache_entry *c = &e->cache[i];
        if (!c->str_len) break;
        if (c->h == h && c->str_len == n && memcmp(e->cache_strs.data + c->str_off, s, n) == 0) {
            for (uint32_t k = 0; k < c->ids_n; k++) MK_TRY(tok_ids_push(&e->ids, e->cache_ids.v[c->ids_off + k]));
            return MK_OK;
        }
    }
    size_t before = e->ids.n;
    MK_TRY(tok_model_encode(m, &e->sc, s, n, &e->ids));
    /* at most half full (so a probe always ends at an empty slot), and offsets fit u32 */
    if (e->cache_n + 1 > (e->cache_mask + 1) / 2 || e->cache_strs.len > UINT32_MAX / 2 || e->cache_ids.n > UINT32_MAX / 2)
        return MK_OK;
    cache_entry ce = {h, (uint32_t)e->cache_strs.len, (uint32_t)n, (uint32_t)e->cache_ids.n, (uint32_t)(e->ids.n - before)};
    mk_buf_put(&e->cache_strs, s, n);
    if (e->cache_strs.failed) return mk_error(MK_ERR_NOMEM, "out of memory tokenizing");
    for (size_t k = before; k < e->ids.n; k++) MK_TRY(tok_ids_push(&e->cache_ids, e->ids.v[k]));
    e->cache[i] = ce;
    e->cache_n++;
    return MK_OK;
}

/* text between normalized added tokens: pre-tokenize, then the model */
static mk_status pretok_segment(enc *e, const char *s, size_t n, bool first)
{
    return tok_pretok_run(&e->pipe, 0, s, n, first);
}

/* text between raw added tokens: normalize, cut at normalized added tokens */
static mk_status raw_segment(enc *e, const char *s, size_t n, bool first)
{
    const mk_tokenizer *t = e->t;
    if (t->n_norm) {
        mk_buf *res;
        normalize2(t, s, n, &e->n1, &e->n2, &res);
        if (e->n1.failed || e->n2.failed) return mk_error(MK_ERR_NOMEM, "out of memory normalizing");
        /* the result stays in n1/n2 while its pieces are processed: nothing below
         * normalizes again */
        s = res->data;
        n = res->len;
    }
    return split_added(e, &t->norm_match, true, s, n, first, pretok_segment);
}

static mk_status split_added(enc *e, const tok_matcher *m, bool normalized, const char *s, size_t n, bool first,
                             seg_fn fn)
{
    const mk_tokenizer *t = e->t;
    size_t start = 0, i = 0, at, len;
    long k;
    while ((k = match_added(t, m, s, n, i, normalized, &at, &len)) >= 0) {
        const tok_added *a = &t->added[k];
        size_t ms = at, me = at + len;
        i = me; /* matching resumes after the match, whatever happens to it */
        if (a->single_word && (word_char_before(s, ms) || word_char_at(s, n, me))) continue;
        if (a->lstrip) {
            size_t ns = space_suffix_start(s, ms);
            ms = ns > start ? ns : start;
        }
        if (a->rstrip) me += space_prefix(s + me, n - me);
        if (start < ms) MK_TRY(fn(e, s + start, ms - start, first && start == 0));
        MK_TRY(tok_ids_push(&e->ids, (int32_t)a->id));
        start = me;
    }
    if (start < n) MK_TRY(fn(e, s + start, n - start, first && start == 0));
    return MK_OK;
}

static void enc_free(enc *e)
{
    free(e->ids.v);
    tok_scratch_free(&e->sc);
    mk_buf_free(&e->n1);
    mk_buf_free(&e->n2);
    for (size_t i = 0; i < 2 * MK_TOK_MAX_STAGES; i++) mk_buf_free(&e->bufs[i]);
    free(e->cache);
    mk_buf_free(&e->cache_strs);
    free(e->cache_ids.v);
}

mk_status mk_tokenizer_encode(const mk_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids,
                              size_t *n)
{
    *ids = NULL;
    *n = 0;
    enc *e = calloc(1, sizeof *e);
    if (!e) return mk_error(MK_ERR_NOMEM, "out of memory tokenizing");
    e->t = t;
    e->pipe = (tok_pipe){t, e->bufs, model_piece, e};
    mk_status s = MK_OK;
    /* a cache sized to the text, up to its limit (64 Ki distinct pieces) */
    size_t cap = 64;
    while (cap < CACHE_MAX_SLOTS && cap < len / 2) cap *= 2;
    e->cache = calloc(cap, sizeof *e->cache);
    e->cache_mask = cap - 1;
    if (!e->cache) s = mk_error(MK_ERR_NOMEM, "out of memory tokenizing");
    mk_buf clean = {0};
    if (s == MK_OK && !mk_utf8_valid(text, len)) {
        mk_utf8_lossy(&clean, text, len);
        if (clean.failed) s = mk_error(MK_ERR_NOMEM, "out of memory tokenizing");
        text = clean.data;
        len = clean.len;
    }
    if (s == MK_OK && add_special)
        for (size_t i = 0; i < t->n_prefix && s == MK_OK; i++) s = tok_ids_push(&e->ids, t->prefix[i]);
    if (s == MK_OK) s = split_added(e, &t->raw_match, false, text ? text : "", len, true, raw_segment);
    if (s == MK_OK && add_special)
        for (size_t i = 0; i < t->n_suffix && s == MK_OK; i++) s = tok_ids_push(&e->ids, t->suffix[i]);
    if (s == MK_ERR_NOMEM && !*mk_errmsg()) s = mk_error(MK_ERR_NOMEM, "out of memory tokenizing");
    if (s == MK_OK) {
        *ids = e->ids.v;
        *n = e->ids.n;
        e->ids.v = NULL;
    }
    mk_buf_free(&clean);
    enc_free(e);
    free(e);
    return s;
}

typedef struct piece_cb {
    mk_tok_piece_fn fn;
    void *ctx;
} piece_cb;

static mk_status user_piece(tok_pipe *p, const char *s, size_t n)
{
    const piece_cb *cb = p->ctx;
    return cb->fn(cb->ctx, s, n);
}

mk_status mk_tokenizer_pretokenize(const mk_tokenizer *t, const char *text, size_t len, mk_tok_piece_fn fn, void *ctx)
{
    mk_buf bufs[2 * MK_TOK_MAX_STAGES] = {{0}}, clean = {0}, n1 = {0}, n2 = {0};
    piece_cb cb = {fn, ctx};
    tok_pipe pipe = {t, bufs, user_piece, &cb};
    if (!mk_utf8_valid(text, len)) {
        mk_utf8_lossy(&clean, text, len);
        text = clean.data;
        len = clean.len;
    }
    mk_status s = MK_OK;
    if (t->n_norm && len) {
        mk_buf *res;
        normalize2(t, text, len, &n1, &n2, &res);
        text = res->data;
        len = res->len;
    }
    if (clean.failed || n1.failed || n2.failed) s = mk_error(MK_ERR_NOMEM, "out of memory pre-tokenizing");
    if (s == MK_OK) s = tok_pretok_run(&pipe, 0, text ? text : "", len, true);
    for (size_t i = 0; i < 2 * MK_TOK_MAX_STAGES; i++) mk_buf_free(&bufs[i]);
    mk_buf_free(&clean);
    mk_buf_free(&n1);
    mk_buf_free(&n2);
    return s;
}

/* ---- decode --------------------------------------------------------------------------------- */

/* A list of strings in one buffer. */
typedef struct strlist {
    mk_buf text;
    size_t *off, *len;
    size_t n, cap;
    bool failed;
} strlist;

static void sl_add(strlist *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *o = realloc(l->off, cap * sizeof *o), *q = o ? realloc(l->len, cap * sizeof *q) : NULL;
        if (o) l->off = o;
        if (!o || !q) {
            l->failed = true;
            return;
        }
        l->len = q;
        l->cap = cap;
    }
    l->off[l->n] = l->text.len;
    l->len[l->n] = n;
    mk_buf_put(&l->text, s, n);
    l->n++;
}

/* start a new string of the list, then extend it with sl_more */
static void sl_begin(strlist *l) { sl_add(l, "", 0); }
static void sl_more(strlist *l, const char *s, size_t n)
{
    mk_buf_put(&l->text, s, n);
    l->len[l->n - 1] += n;
}

static void sl_free(strlist *l)
{
    mk_buf_free(&l->text);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

#define SL_STR(l, i) ((l)->text.data + (l)->off[i])

static int hexdig(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" as ByteFallback reads it (Rust's u8::from_str_radix on the two characters,
 * which also takes "+N") */
static int fallback_byte(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int a = hexdig(s[3]), b = hexdig(s[4]);
    if (s[3] == '+' && b >= 0) return b;
    return a >= 0 && b >= 0 ? a * 16 + b : -1;
}

static void flush_bytes(strlist *out, mk_buf *bytes)
{
    if (!bytes->len) return;
    if (mk_utf8_valid(bytes->data, bytes->len)) {
        sl_add(out, bytes->data, bytes->len);
    } else {
        for (size_t i = 0; i < bytes->len; i++) sl_add(out, "\xEF\xBF\xBD", 3);
    }
    bytes->len = 0;
}

static void decode_step(const tok_dec *d, const strlist *in, strlist *out)
{
    switch (d->kind) {
    case DEC_BYTELEVEL: {
        /* every token's chars back to bytes (a token with a char outside the map keeps its
         * own bytes), then one string, ill-formed UTF-8 replaced (from_utf8_lossy) */
        mk_buf raw = {0};
        for (size_t i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)SL_STR(in, i);
            size_t n = in->len[i], start = raw.len;
            bool ok = true;
            for (size_t j = 0; j < n && ok;) {
                uint32_t cp;
                j += mk_utf8_get(s + j, &cp);
                int b = tok_char_byte(cp);
                if (b < 0) ok = false;
                else {
                    char c = (char)b;
                    mk_buf_put(&raw, &c, 1);
                }
            }
            if (!ok) {
                raw.len = start;
                mk_buf_put(&raw, s, n);
            }
        }
        sl_begin(out);
        mk_buf lossy = {0};
        mk_utf8_lossy(&lossy, raw.data ? raw.data : "", raw.len);
        sl_more(out, lossy.data ? lossy.data : "", lossy.len);
        if (raw.failed || lossy.failed) out->failed = true;
        mk_buf_free(&raw);
        mk_buf_free(&lossy);
        break;
    }
    case DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t n = in->len[i];
            char rep[4];
            size_t rl = mk_utf8_put(d->ch, rep);
            sl_begin(out);
            size_t run = 0;
            for (size_t j = 0; j + rl <= n;) {
                if (memcmp(s + j, rep, rl) == 0) {
                    sl_more(out, s + run, j - run);
                    if (!(i == 0 && d->prepend != PREPEND_NEVER)) sl_more(out, " ", 1);
                    j += rl;
                    run = j;
                } else {
                    j += mk_utf8_len((unsigned char)s[j]);
                }
            }
            sl_more(out, s + run, n - run);
        }
        break;
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            mk_buf b = {0};
            replace_all(&b, SL_STR(in, i), in->len[i], d->a, d->alen, d->b, d->blen);
            sl_add(out, b.data ? b.data : "", b.len);
            if (b.failed) out->failed = true;
            mk_buf_free(&b);
        }
        break;
    case DEC_BYTEFALLBACK: {
        mk_buf bytes = {0};
        for (size_t i = 0; i < in->n; i++) {
            int b = fallback_byte(SL_STR(in, i), in->len[i]);
            if (b >= 0) {
                char c = (char)b;
                mk_buf_put(&bytes, &c, 1);
                continue;
            }
            flush_bytes(out, &bytes);
            sl_add(out, SL_STR(in, i), in->len[i]);
        }
        flush_bytes(out, &bytes);
        if (bytes.failed) out->failed = true;
        mk_buf_free(&bytes);
        break;
    }
    case DEC_FUSE:
        sl_begin(out);
        for (size_t i = 0; i < in->n; i++) sl_more(out, SL_STR(in, i), in->len[i]);
        break;
    case DEC_STRIP: {
        char c[4];
        size_t cl = mk_utf8_put(d->ch, c);
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t n = in->len[i], a = 0, b = n;
            for (size_t k = 0; k < d->start && a + cl <= n && memcmp(s + a, c, cl) == 0; k++) a += cl;
            for (size_t k = 0; k < d->stop && b >= a + cl && memcmp(s + b - cl, c, cl) == 0; k++) b -= cl;
            sl_add(out, s + a, b - a);
        }
        break;
    }
    }
}

mk_status mk_tokenizer_decode(const mk_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                              size_t *len)
{
    *text = NULL;
    *len = 0;
    strlist a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->vocab_size) {
            sl_free(&a);
            return mk_error(MK_ERR_USAGE, "token id %ld at position %zu is out of range (vocabulary of %zu)", (long)id, i,
                            t->vocab_size);
        }
        int32_t k = t->added_of_id[id];
        if (k >= 0) {
            const tok_added *ad = &t->added[k];
            if (skip_special && ad->special) continue;
            if (ad->norm) sl_add(&a, ad->norm, ad->norm_len);
            else sl_add(&a, ad->content, ad->len);
        } else {
            size_t tl;
            const char *s = mk_tokenizer_token(t, id, &tl);
            if (s) sl_add(&a, s, tl);
        }
    }
    strlist *cur = &a, *nxt = &b;
    for (size_t i = 0; i < t->n_dec && !cur->failed; i++) {
        sl_free(nxt);
        decode_step(&t->dec[i], cur, nxt);
        strlist *x = cur;
        cur = nxt;
        nxt = x;
    }
    mk_buf out = {0};
    for (size_t i = 0; i < cur->n; i++) {
        if (i && !t->has_decoder) mk_buf_put(&out, " ", 1); /* no decoder: tokens joined by spaces */
        mk_buf_put(&out, SL_STR(cur, i), cur->len[i]);
    }
    mk_buf_put(&out, "", 1);
    bool failed = out.failed || cur->failed || cur->text.failed;
    sl_free(&a);
    sl_free(&b);
    if (failed) {
        mk_buf_free(&out);
        return mk_error(MK_ERR_NOMEM, "out of memory decoding %zu tokens", n);
    }
    *text = out.data;
    *len = out.len - 1;
    return MK_OK;
}

/* ---- accessors -------------------------------------------------------------------------------- */

size_t mk_tokenizer_vocab_size(const mk_tokenizer *t) { return t->vocab_size; }

const char *mk_tokenizer_token(const mk_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->vocab_size) return NULL;
    int32_t k = t->added_of_id[id];
    if (k >= 0) {
        *len = t->added[k].len;
        return t->added[k].content;
    }
    if ((uint32_t)id >= t->model.vocab.n) return NULL;
    *len = t->model.vocab.len[id];
    return t->model.vocab.strs + t->model.vocab.off[id];
}

int32_t mk_tokenizer_id(const mk_tokenizer *t, const char *tok, size_t len)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].content, tok, len) == 0) return (int32_t)t->added[i].id;
    return tok_vocab_find(&t->model.vocab, tok, len);
}

int32_t mk_tokenizer_bos(const mk_tokenizer *t) { return t->bos; }
int32_t mk_tokenizer_eos(const mk_tokenizer *t) { return t->eos; }
int32_t mk_tokenizer_unk(const mk_tokenizer *t) { return t->model.unk_id; }
bool mk_tokenizer_is_special(const mk_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->vocab_size) return false;
    int32_t k = t->added_of_id[id];
    return k >= 0 && t->added[k].special;
}
const char *mk_tokenizer_describe(const mk_tokenizer *t) { return t->describe; }
