/* gguf_tok.c - tokenizer.json (the Hugging Face tokenizers format nn/tok_load.c reads) from
 * a GGUF file's tokenizer.ggml.* metadata, for the byte-level BPE vocabularies llama.cpp
 * calls "gpt2": tokens (ids in order), token_type (3 = control and 4 = user-defined tokens
 * become added tokens, split out before the pre-tokenizer), merges ("a b"), the
 * pre-tokenizer by its llama.cpp name (llama-vocab.cpp: the regexes of each name, which
 * Hugging Face spells as below), bos/eos/unknown ids and add_bos_token.
 * SentencePiece vocabularies ("llama": tokens with scores, no merges) become the BPE with byte
 * fallback that transformers' LlamaConverter makes: a merge for every split of a token into two
 * tokens, ranked by the merged token's score (highest first), as llama.cpp's SPM tokenizer
 * merges the adjacent pair whose union scores highest; "▁" for spaces, prepended unless
 * add_space_prefix is false. Keys: gguf-py constants.py Keys.Tokenizer.
 * Must not: validate beyond what it needs (the tokenizer loader checks the result).
 */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BYTELEVEL(regex) "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": " regex "}"
#define SPLIT(re) "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"" re "\"}, \"behavior\": \"Isolated\", \"invert\": false}"
#define LLAMA3_RE                                                                                                           \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|" \
    "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"
#define QWEN2_RE                                                                                                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|" \
    "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

/* llama.cpp pre-tokenizer names and the Hugging Face pre_tokenizer that splits the same way */
static const struct {
    const char *name, *json;
} pretoks[] = {
    {"default", BYTELEVEL("true")},
    {"gpt-2", BYTELEVEL("true")},
    {"smollm", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, " BYTELEVEL("true") "]}"},
    {"llama-bpe", "{\"type\": \"Sequence\", \"pretokenizers\": [" SPLIT(LLAMA3_RE) ", " BYTELEVEL("false") "]}"},
    {"llama3", "{\"type\": \"Sequence\", \"pretokenizers\": [" SPLIT(LLAMA3_RE) ", " BYTELEVEL("false") "]}"},
    {"qwen2", "{\"type\": \"Sequence\", \"pretokenizers\": [" SPLIT(QWEN2_RE) ", " BYTELEVEL("false") "]}"},
};

static void put_str(mk_buf *b, const char *s, uint64_t n)
{
    char *z = mk_strndup(s, (size_t)n);
    if (!z) {
        b->failed = true;
        return;
    }
    mk_buf_json_str(b, z);
    free(z);
}

/* The tokens as (pointer, length) pairs into the image. */
static mk_status token_list(const mk_gguf *g, const mk_gguf_kv *tok, const char ***ts, uint64_t **tl)
{
    *ts = mk_calloc((size_t)tok->n, sizeof **ts);
    *tl = mk_calloc((size_t)tok->n, sizeof **tl);
    if (!*ts || !*tl) {
        free(*ts);
        free(*tl);
        *ts = NULL;
        *tl = NULL;
        return MK_ERR_NOMEM;
    }
    uint64_t pos = tok->off;
    for (uint64_t i = 0; i < tok->n; i++) mk_gguf_next_str(g, &pos, &(*ts)[i], &(*tl)[i]);
    return MK_OK;
}

/* added_tokens (control and user-defined types), normalizer, pre-tokenizer, post-processor
 * (BOS when add_bos_token) and decoder: everything before "model". */
static void head(mk_buf *b, const mk_gguf *g, const mk_gguf_kv *types, const char *const *ts, const uint64_t *tl, uint64_t n,
                 const char *norm, const char *pre, const char *dec)
{
    int64_t bos = -1, v;
    bool add_bos = mk_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v) && v;
    if (mk_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && (uint64_t)v < n) bos = v;
    mk_buf_puts(b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n\"added_tokens\": [");
    bool first = true;
    for (uint64_t i = 0; i < n; i++) {
        int64_t ty = 1;
        if (types) mk_gguf_arr_int(g, types, i, &ty);
        if (ty != 3 && ty != 4) continue;
        mk_buf_printf(b, "%s\n{\"id\": %llu, \"content\": ", first ? "" : ",", (unsigned long long)i);
        put_str(b, ts[i], tl[i]);
        mk_buf_printf(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": %s}",
                      ty == 3 ? "true" : "false");
        first = false;
    }
    mk_buf_printf(b, "],\n\"normalizer\": %s,\n\"pre_tokenizer\": %s,\n", norm, pre);
    if (add_bos && bos >= 0) {
        mk_buf_puts(b, "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": ");
        put_str(b, ts[bos], tl[bos]);
        mk_buf_puts(b, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {");
        put_str(b, ts[bos], tl[bos]);
        mk_buf_puts(b, ": {\"id\": ");
        put_str(b, ts[bos], tl[bos]);
        mk_buf_printf(b, ", \"ids\": [%lld], \"tokens\": [", (long long)bos);
        put_str(b, ts[bos], tl[bos]);
        mk_buf_puts(b, "]}}},\n");
    } else {
        mk_buf_puts(b, "\"post_processor\": null,\n");
    }
    mk_buf_printf(b, "\"decoder\": %s,\n", dec);
}

/* "model": {"type": "BPE", ...,  up to and including the vocabulary */
static void model_vocab(mk_buf *b, const mk_gguf *g, const char *const *ts, const uint64_t *tl, uint64_t n, bool byte_fallback)
{
    int64_t unk = -1, v;
    if (mk_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && (uint64_t)v < n) unk = v;
    mk_buf_puts(b, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": ");
    if (unk >= 0) put_str(b, ts[unk], tl[unk]);
    else mk_buf_puts(b, "null");
    mk_buf_printf(b, ", \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": %s, \"byte_fallback\": %s,\n\"vocab\": {",
                  byte_fallback ? "true" : "false", byte_fallback ? "true" : "false");
    for (uint64_t i = 0; i < n; i++) {
        mk_buf_puts(b, i ? ",\n" : "\n");
        put_str(b, ts[i], tl[i]);
        mk_buf_printf(b, ": %llu", (unsigned long long)i);
    }
    mk_buf_puts(b, "},\n\"merges\": [");
}

static mk_status finish(mk_buf *b, char **out)
{
    if (b->failed) {
        mk_buf_free(b);
        return mk_error(MK_ERR_NOMEM, "out of memory making tokenizer.json");
    }
    *out = b->data;
    return MK_OK;
}

static mk_status make_bpe(const mk_gguf *g, const mk_gguf_kv *tok, const mk_gguf_kv *types, const mk_gguf_kv *merges,
                          const char *pre, char **out)
{
    mk_buf b = {0};
    const char **ts;
    uint64_t *tl;
    MK_TRY(token_list(g, tok, &ts, &tl));
    head(&b, g, types, ts, tl, tok->n, "null", pre,
         "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}");
    model_vocab(&b, g, ts, tl, tok->n, false);
    uint64_t pos = merges ? merges->off : 0;
    for (uint64_t i = 0; merges && i < merges->n; i++) {
        const char *m;
        uint64_t ml;
        mk_gguf_next_str(g, &pos, &m, &ml);
        mk_buf_puts(&b, i ? ",\n" : "\n");
        put_str(&b, m, ml);
    }
    mk_buf_puts(&b, "]}}\n");
    free(ts);
    free(tl);
    return finish(&b, out);
}

/* ---- SentencePiece: merges from scores ---- */

typedef struct spm_merge {
    float score;      /* of the merged token */
    uint32_t id, l, r;
} spm_merge;

static int cmp_merge(const void *a, const void *b)
{
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

typedef struct strmap {
    uint32_t *slot; /* id + 1, 0 empty */
    size_t cap;
    const char *const *ts;
    const uint64_t *tl;
} strmap;

static uint64_t fnv(const char *s, uint64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static long map_find(const strmap *m, const char *s, uint64_t n)
{
    for (size_t k = (size_t)(fnv(s, n) & (m->cap - 1));; k = (k + 1) & (m->cap - 1)) {
        uint32_t v = m->slot[k];
        if (!v) return -1;
        if (m->tl[v - 1] == n && memcmp(m->ts[v - 1], s, (size_t)n) == 0) return (long)(v - 1);
    }
}

/* the first id of each distinct token (later duplicates are left out, as a JSON object keeps one) */
static mk_status map_build(strmap *m, const char *const *ts, const uint64_t *tl, uint64_t n)
{
    m->cap = 16;
    while (m->cap < 2 * n) m->cap *= 2;
    m->slot = mk_calloc(m->cap, sizeof *m->slot);
    m->ts = ts;
    m->tl = tl;
    if (!m->slot) return MK_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) {
        if (map_find(m, ts[i], tl[i]) >= 0) continue;
        size_t k = (size_t)(fnv(ts[i], tl[i]) & (m->cap - 1));
        while (m->slot[k]) k = (k + 1) & (m->cap - 1);
        m->slot[k] = (uint32_t)i + 1;
    }
    return MK_OK;
}

#define SPM_DECODER(strip)                                                                                           \
    "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, " \
    "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}" strip "]}"

static mk_status make_spm(const mk_gguf *g, const mk_gguf_kv *tok, const mk_gguf_kv *types, const mk_gguf_kv *scores, char **out)
{
    int64_t v;
    bool space_prefix = !mk_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &v) || v;
    const char **ts;
    uint64_t *tl;
    MK_TRY(token_list(g, tok, &ts, &tl));
    strmap m = {0};
    spm_merge *mg = NULL;
    size_t n = 0, cap = 0;
    mk_status s = map_build(&m, ts, tl, tok->n);
    for (uint64_t i = 0; s == MK_OK && i < tok->n; i++) {
        if (map_find(&m, ts[i], tl[i]) != (long)i) continue;
        uint32_t bits = (uint32_t)(g->img[scores->off + 4 * i] | g->img[scores->off + 4 * i + 1] << 8 |
                                   g->img[scores->off + 4 * i + 2] << 16 | (uint32_t)g->img[scores->off + 4 * i + 3] << 24);
        float sc;
        memcpy(&sc, &bits, 4);
        /* every split at a character boundary into two tokens */
        for (uint64_t k = 1; k < tl[i]; k++) {
            if (((unsigned char)ts[i][k] & 0xc0) == 0x80) continue;
            long a = map_find(&m, ts[i], k), c = map_find(&m, ts[i] + k, tl[i] - k);
            if (a < 0 || c < 0) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                spm_merge *nm = mk_realloc_array(mg, cap, sizeof *mg);
                if (!nm) {
                    s = MK_ERR_NOMEM;
                    break;
                }
                mg = nm;
            }
            mg[n++] = (spm_merge){sc, (uint32_t)i, (uint32_t)a, (uint32_t)c};
        }
    }
    mk_buf b = {0};
    if (s == MK_OK) {
        if (n) qsort(mg, n, sizeof *mg, cmp_merge); /* mg is NULL when there are no merges */
        head(&b, g, types, ts, tl, tok->n,
             space_prefix ? "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, "
                            "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}"
                          : "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}",
             "null",
             /* the prepended space comes off again */
             space_prefix ? SPM_DECODER(", {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}") : SPM_DECODER(""));
        model_vocab(&b, g, ts, tl, tok->n, true);
        for (size_t i = 0; i < n; i++) {
            mk_buf_puts(&b, i ? ",\n[" : "\n[");
            put_str(&b, ts[mg[i].l], tl[mg[i].l]);
            mk_buf_puts(&b, ", ");
            put_str(&b, ts[mg[i].r], tl[mg[i].r]);
            mk_buf_puts(&b, "]");
        }
        mk_buf_puts(&b, "]}}\n");
    }
    free(mg);
    free(m.slot);
    free(ts);
    free(tl);
    if (s != MK_OK) {
        mk_buf_free(&b);
        return s;
    }
    return finish(&b, out);
}

mk_status mk_gguf_tokenizer_json(const mk_gguf *g, char **out)
{
    *out = NULL;
    char model[32] = "", pre[64] = "default";
    if (!mk_gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model)) return MK_OK;
    const mk_gguf_kv *tok = mk_gguf_find(g, "tokenizer.ggml.tokens");
    const mk_gguf_kv *types = mk_gguf_find(g, "tokenizer.ggml.token_type");
    if (!tok || tok->type != MK_GGUF_ARRAY || tok->atype != MK_GGUF_STRING || tok->n == 0 || tok->n > UINT32_MAX) return MK_OK;
    if (types && (types->type != MK_GGUF_ARRAY || types->atype == MK_GGUF_STRING || types->atype == MK_GGUF_F32 ||
                  types->atype == MK_GGUF_F64 || types->n != tok->n))
        types = NULL;
    if (strcmp(model, "llama") == 0) {
        const mk_gguf_kv *sc = mk_gguf_find(g, "tokenizer.ggml.scores");
        if (!sc || sc->type != MK_GGUF_ARRAY || sc->atype != MK_GGUF_F32 || sc->n != tok->n) return MK_OK;
        return make_spm(g, tok, types, sc, out);
    }
    if (strcmp(model, "gpt2") != 0) return MK_OK;
    mk_gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    const char *pj = NULL;
    for (size_t i = 0; i < sizeof pretoks / sizeof pretoks[0]; i++)
        if (strcmp(pretoks[i].name, pre) == 0) pj = pretoks[i].json;
    const mk_gguf_kv *merges = mk_gguf_find(g, "tokenizer.ggml.merges");
    if (!pj) return MK_OK;
    if (merges && (merges->type != MK_GGUF_ARRAY || merges->atype != MK_GGUF_STRING)) merges = NULL;
    return make_bpe(g, tok, types, merges, pj, out);
}
