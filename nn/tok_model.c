/* tok_model.c - vocabulary hash, BPE merges, and the two models: BPE (as tokenizers'
 * models/bpe: a priority queue of candidate merges by (rank, position) over a linked list
 * of symbols, O(n log n) per word) and WordLevel (one lookup per piece). */
#include "tok_internal.h"

#include "../core/mk_hash.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* ---- vocabulary -------------------------------------------------------------------- */

mk_status tok_vocab_init(tok_vocab *v, uint32_t n_expected)
{
    memset(v, 0, sizeof *v);
    size_t cap = 64;
    while (cap < (size_t)n_expected * 2) cap *= 2;
    v->slots = calloc(cap, sizeof *v->slots);
    v->off = malloc(((size_t)n_expected + 1) * sizeof *v->off);
    v->len = malloc(((size_t)n_expected + 1) * sizeof *v->len);
    if (!v->slots || !v->off || !v->len) {
        tok_vocab_free(v);
        return mk_error(MK_ERR_NOMEM, "out of memory for a vocabulary of %u tokens", n_expected);
    }
    v->mask = cap - 1;
    v->ids_cap = n_expected + 1;
    for (int i = 0; i < 128; i++) v->ascii[i] = -1;
    return MK_OK;
}

static size_t slot_of(const tok_vocab *v, const char *s, size_t len)
{
    return (size_t)mk_hash64(s, len) & v->mask;
}

int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len)
{
    if (len == 1 && (unsigned char)s[0] < 128) return v->ascii[(unsigned char)s[0]];
    if (!v->slots) return -1;
    for (size_t i = slot_of(v, s, len);; i = (i + 1) & v->mask) {
        uint32_t e = v->slots[i];
        if (!e) return -1;
        uint32_t id = e - 1;
        if (v->len[id] == len && memcmp(v->strs + v->off[id], s, len) == 0) return (int32_t)id;
    }
}

static mk_status vocab_grow(tok_vocab *v)
{
    size_t cap = (v->mask + 1) * 2;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return mk_error(MK_ERR_NOMEM, "out of memory growing a vocabulary");
    for (uint32_t id = 0; id < v->n; id++) {
        size_t i = (size_t)mk_hash64(v->strs + v->off[id], v->len[id]) & (cap - 1);
        while (slots[i]) i = (i + 1) & (cap - 1);
        slots[i] = id + 1;
    }
    free(v->slots);
    v->slots = slots;
    v->mask = cap - 1;
    return MK_OK;
}

mk_status tok_vocab_add(tok_vocab *v, const char *s, size_t len, bool *dup, uint32_t *dup_id)
{
    *dup = false;
    int32_t have = tok_vocab_find(v, s, len);
    if (have >= 0) {
        *dup = true;
        *dup_id = (uint32_t)have;
        return MK_OK;
    }
    if ((size_t)(v->n + 1) * 2 > v->mask + 1) MK_TRY(vocab_grow(v));
    if (v->n == v->ids_cap) {
        if (v->ids_cap > UINT32_MAX / 2) return mk_error(MK_ERR_NOMEM, "vocabulary too large");
        uint32_t cap = v->ids_cap * 2;
        uint32_t *off = mk_realloc_array(v->off, cap, sizeof *off);
        if (!off) return MK_ERR_NOMEM;
        v->off = off;
        uint32_t *len2 = mk_realloc_array(v->len, cap, sizeof *len2);
        if (!len2) return MK_ERR_NOMEM;
        v->len = len2;
        v->ids_cap = cap;
    }
    if (v->strs_len + len + 1 > v->strs_cap) {
        size_t cap = v->strs_cap ? v->strs_cap : 4096;
        while (cap < v->strs_len + len + 1) cap *= 2;
        char *p = realloc(v->strs, cap);
        if (!p) return mk_error(MK_ERR_NOMEM, "out of memory for vocabulary strings");
        v->strs = p;
        v->strs_cap = cap;
    }
    if (v->strs_len > UINT32_MAX - len - 1) return mk_error(MK_ERR_NOMEM, "vocabulary strings over 4 GB");
    memcpy(v->strs + v->strs_len, s, len);
    v->strs[v->strs_len + len] = 0;
    v->off[v->n] = (uint32_t)v->strs_len;
    v->len[v->n] = (uint32_t)len;
    v->strs_len += len + 1;
    uint32_t id = v->n++;
    if (len == 1 && (unsigned char)s[0] < 128) {
        v->ascii[(unsigned char)s[0]] = (int32_t)id;
    } else {
        size_t i = slot_of(v, s, len);
        while (v->slots[i]) i = (i + 1) & v->mask;
        v->slots[i] = id + 1;
    }
    return MK_OK;
}

void tok_vocab_free(tok_vocab *v)
{
    if (!v) return;
    free(v->off);
    free(v->len);
    free(v->strs);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

/* ---- merges: (left, right) -> (rank, merged id) ---------------------------------------- */

static inline size_t pair_slot(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
}

mk_status tok_merges_init(tok_merges *g, size_t n_expected)
{
    memset(g, 0, sizeof *g);
    size_t cap = 64;
    while (cap < n_expected * 2) cap *= 2;
    g->keys = calloc(cap, sizeof *g->keys);
    g->rank = malloc(cap * sizeof *g->rank);
    g->out = malloc(cap * sizeof *g->out);
    if (!g->keys || !g->rank || !g->out) {
        free(g->keys);
        free(g->rank);
        free(g->out);
        memset(g, 0, sizeof *g);
        return mk_error(MK_ERR_NOMEM, "out of memory for %zu merges", n_expected);
    }
    g->mask = cap - 1;
    return MK_OK;
}

static inline uint64_t pair_key(uint32_t a, uint32_t b) { return ((uint64_t)a + 1) << 32 | ((uint64_t)b + 1); }

/* A pair listed twice keeps the later rank, as tokenizers' map built from the list does. */
mk_status tok_merges_add(tok_merges *g, uint32_t a, uint32_t b, uint32_t rank, uint32_t out)
{
    if ((g->n + 1) * 2 > g->mask + 1) return mk_error(MK_ERR_NOMEM, "merge table full");
    uint64_t key = pair_key(a, b);
    size_t i = pair_slot(key, g->mask);
    while (g->keys[i] && g->keys[i] != key) i = (i + 1) & g->mask;
    if (!g->keys[i]) g->n++;
    g->keys[i] = key;
    g->rank[i] = rank;
    g->out[i] = out;
    return MK_OK;
}

static inline bool merges_get(const tok_merges *g, int32_t a, int32_t b, uint32_t *rank, uint32_t *out)
{
    if (!g->keys) return false;
    uint64_t key = pair_key((uint32_t)a, (uint32_t)b);
    for (size_t i = pair_slot(key, g->mask);; i = (i + 1) & g->mask) {
        if (g->keys[i] == key) {
            *rank = g->rank[i];
            *out = g->out[i];
            return true;
        }
        if (!g->keys[i]) return false;
    }
}

void tok_model_free(tok_model *m)
{
    if (!m) return;
    tok_vocab_free(&m->vocab);
    free(m->merges.keys);
    free(m->merges.rank);
    free(m->merges.out);
    free(m->unk);
    memset(m, 0, sizeof *m);
}

/* ---- encode scratch ---------------------------------------------------------------------- */

typedef struct tok_sym {
    int32_t id;
    int32_t prev, next; /* -1 = none */
    uint32_t len;       /* bytes; 0 = merged away */
} tok_sym;

typedef struct tok_heap_item {
    uint32_t rank, pos, out;
} tok_heap_item;

void tok_scratch_free(tok_scratch *s)
{
    if (!s) return;
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

mk_status tok_ids_push(tok_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        int32_t *v = mk_realloc_array(ids->v, cap, sizeof *v);
        if (!v) return MK_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return MK_OK;
}

static mk_status reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return MK_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = mk_realloc_array(*p, c, elem);
    if (!q) return MK_ERR_NOMEM;
    *p = q;
    *cap = c;
    return MK_OK;
}

/* lower rank first, then the leftmost position (tokenizers' Merge ordering) */
static inline bool heap_less(const tok_heap_item *a, const tok_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(tok_heap_item *h, size_t *n, tok_heap_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static tok_heap_item heap_pop(tok_heap_item *h, size_t *n)
{
    tok_heap_item top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        const tok_heap_item *best = &x;
        if (l < m && heap_less(&h[l], best)) { s = l; best = &h[l]; }
        if (r < m && heap_less(&h[r], best)) s = r;
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    if (m) h[i] = x;
    return top;
}

/* ---- BPE ------------------------------------------------------------------------------ */

static mk_status unk_id_or_error(const tok_model *m, int32_t *id)
{
    if (m->unk_id < 0) return mk_error(MK_ERR_FORMAT, "model.unk_token '%.80s' is not in the vocabulary", m->unk);
    *id = m->unk_id;
    return MK_OK;
}

static mk_status bpe_encode(const tok_model *m, tok_scratch *sc, const char *s, size_t n, tok_ids *ids)
{
    if (n == 0) return MK_OK;
    if (m->ignore_merges) {
        int32_t id = tok_vocab_find(&m->vocab, s, n);
        if (id >= 0) return tok_ids_push(ids, id);
    }
    /* at most one symbol per byte */
    if (reserve((void **)&sc->sym, &sc->sym_cap, n, sizeof *sc->sym) != MK_OK) return MK_ERR_NOMEM;
    tok_sym *sym = sc->sym;
    size_t ns = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
#define ADD_SYM(ID, LEN)                                                                         \
    do {                                                                                         \
        sym[ns].id = (ID);                                                                       \
        sym[ns].len = (LEN);                                                                     \
        sym[ns].prev = (int32_t)ns - 1;                                                          \
        sym[ns].next = (int32_t)ns + 1;                                                          \
        ns++;                                                                                    \
    } while (0)
    for (size_t i = 0; i < n;) {
        size_t cl = mk_utf8_len((unsigned char)s[i]);
        if (cl > n - i) cl = n - i;
        int32_t id = tok_vocab_find(&m->vocab, s + i, cl);
        if (id >= 0) {
            if (unk >= 0) {
                ADD_SYM(unk, unk_len);
                unk = -1;
            }
            ADD_SYM(id, (uint32_t)cl);
        } else {
            bool done = false;
            if (m->byte_fallback) {
                done = true;
                for (size_t k = 0; k < cl; k++)
                    if (m->byte_id[(unsigned char)s[i + k]] < 0) done = false;
                /* as tokenizers: a pending unk is not flushed before the byte tokens */
                if (done)
                    for (size_t k = 0; k < cl; k++) ADD_SYM(m->byte_id[(unsigned char)s[i + k]], 1);
            }
            if (!done && m->unk) {
                if (unk >= 0 && m->fuse_unk) {
                    unk_len += (uint32_t)cl;
                } else {
                    if (unk >= 0) ADD_SYM(unk, unk_len);
                    MK_TRY(unk_id_or_error(m, &unk));
                    unk_len = (uint32_t)cl;
                }
            }
            /* neither: tokenizers drops the character */
        }
        i += cl;
    }
    if (unk >= 0) ADD_SYM(unk, unk_len);
#undef ADD_SYM
    if (ns == 0) return MK_OK;
    sym[ns - 1].next = -1;

    if (ns > 1 && m->merges.n) {
        if (reserve((void **)&sc->heap, &sc->heap_cap, 2 * ns, sizeof *sc->heap) != MK_OK) return MK_ERR_NOMEM;
        tok_heap_item *heap = sc->heap;
        size_t nh = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            uint32_t rank, out;
            if (merges_get(&m->merges, sym[i].id, sym[i + 1].id, &rank, &out))
                heap_push(heap, &nh, (tok_heap_item){rank, (uint32_t)i, out});
        }
        while (nh) {
            tok_heap_item top = heap_pop(heap, &nh);
            tok_sym *a = &sym[top.pos];
            if (a->len == 0 || a->next < 0) continue;
            tok_sym *b = &sym[a->next];
            uint32_t rank, out;
            /* a stale entry: the pair at this position has changed since it was queued */
            if (!merges_get(&m->merges, a->id, b->id, &rank, &out) || out != top.out) continue;
            a->id = (int32_t)top.out;
            a->len += b->len;
            b->len = 0;
            a->next = b->next;
            if (a->next >= 0) sym[a->next].prev = (int32_t)top.pos;
            /* each merge removes a symbol and queues at most two pairs: 2 * ns bounds the heap */
            if (nh + 2 > sc->heap_cap) {
                if (reserve((void **)&sc->heap, &sc->heap_cap, nh + 2, sizeof *sc->heap) != MK_OK) return MK_ERR_NOMEM;
                heap = sc->heap;
            }
            if (a->prev >= 0 && merges_get(&m->merges, sym[a->prev].id, a->id, &rank, &out))
                heap_push(heap, &nh, (tok_heap_item){rank, (uint32_t)a->prev, out});
            if (a->next >= 0 && merges_get(&m->merges, a->id, sym[a->next].id, &rank, &out))
                heap_push(heap, &nh, (tok_heap_item){rank, top.pos, out});
        }
    }
    for (size_t i = 0; i < ns; i++)
        if (sym[i].len) MK_TRY(tok_ids_push(ids, sym[i].id));
    return MK_OK;
}

static mk_status wordlevel_encode(const tok_model *m, const char *s, size_t n, tok_ids *ids)
{
    int32_t id = tok_vocab_find(&m->vocab, s, n);
    if (id >= 0) return tok_ids_push(ids, id);
    if (!m->unk) return mk_error(MK_ERR_FORMAT, "WordLevel model has no unk_token for '%.*s'", (int)(n > 80 ? 80 : n), s);
    MK_TRY(unk_id_or_error(m, &id));
    return tok_ids_push(ids, id);
}

mk_status tok_model_encode(const tok_model *m, tok_scratch *sc, const char *s, size_t n, tok_ids *ids)
{
    if (n == 0) return MK_OK;
    return m->kind == TOK_MODEL_BPE ? bpe_encode(m, sc, s, n, ids) : wordlevel_encode(m, s, n, ids);
}
