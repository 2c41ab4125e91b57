/* gguf_tok.c - tokenizer.json (the Hugging Face tokenizers format nn/tok_load.c reads) from
 * a GGUF file's tokenizer.ggml.* metadata, for the byte-level BPE vocabularies llama.cpp
 * calls "gpt2": tokens (ids in order), token_type (3 = control and 4 = user-defined tokens
 * become added tokens, split out before the pre-tokenizer), merges ("a b"), the
 * pre-tokenizer by its llama.cpp name (llama-vocab.cpp: the regexes of each name, which
 * Hugging Face spells as below), bos/eos/unknown ids and add_bos_token.
 * SentencePiece vocabularies ("llama": scores, no merges) are not converted: the file then
 * has no tokenizer.json. Keys: gguf-py constants.py Keys.Tokenizer.
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

static mk_status make(const mk_gguf *g, const mk_gguf_kv *tok, const mk_gguf_kv *types, const mk_gguf_kv *merges,
                      const char *pre, char **out)
{
    mk_buf b = {0};
    int64_t bos = -1, unk = -1, v;
    bool add_bos = mk_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v) && v;
    if (mk_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && (uint64_t)v < tok->n) bos = v;
    if (mk_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && (uint64_t)v < tok->n) unk = v;
    /* a NUL-free copy of each token: tokens with a NUL byte cannot be JSON object keys here */
    const char **ts = mk_calloc((size_t)tok->n, sizeof *ts);
    uint64_t *tl = mk_calloc((size_t)tok->n, sizeof *tl);
    if (!ts || !tl) {
        free(ts);
        free(tl);
        return MK_ERR_NOMEM;
    }
    uint64_t pos = tok->off;
    for (uint64_t i = 0; i < tok->n; i++) mk_gguf_next_str(g, &pos, &ts[i], &tl[i]);
    mk_buf_puts(&b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n\"added_tokens\": [");
    bool first = true;
    for (uint64_t i = 0; i < tok->n; i++) {
        int64_t ty = 1;
        if (types) mk_gguf_arr_int(g, types, i, &ty);
        if (ty != 3 && ty != 4) continue;
        mk_buf_printf(&b, "%s\n{\"id\": %llu, \"content\": ", first ? "" : ",", (unsigned long long)i);
        put_str(&b, ts[i], tl[i]);
        mk_buf_printf(&b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": %s}",
                      ty == 3 ? "true" : "false");
        first = false;
    }
    mk_buf_printf(&b, "],\n\"normalizer\": null,\n\"pre_tokenizer\": %s,\n", pre);
    if (add_bos && bos >= 0) {
        mk_buf_puts(&b, "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": ");
        put_str(&b, ts[bos], tl[bos]);
        mk_buf_puts(&b, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {");
        put_str(&b, ts[bos], tl[bos]);
        mk_buf_puts(&b, ": {\"id\": ");
        put_str(&b, ts[bos], tl[bos]);
        mk_buf_printf(&b, ", \"ids\": [%lld], \"tokens\": [", (long long)bos);
        put_str(&b, ts[bos], tl[bos]);
        mk_buf_puts(&b, "]}}},\n");
    } else {
        mk_buf_puts(&b, "\"post_processor\": null,\n");
    }
    mk_buf_puts(&b, "\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n");
    mk_buf_puts(&b, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": ");
    if (unk >= 0) put_str(&b, ts[unk], tl[unk]);
    else mk_buf_puts(&b, "null");
    mk_buf_puts(&b, ", \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false,\n\"vocab\": {");
    for (uint64_t i = 0; i < tok->n; i++) {
        mk_buf_puts(&b, i ? ",\n" : "\n");
        put_str(&b, ts[i], tl[i]);
        mk_buf_printf(&b, ": %llu", (unsigned long long)i);
    }
    mk_buf_puts(&b, "},\n\"merges\": [");
    pos = merges ? merges->off : 0;
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
    if (b.failed) {
        mk_buf_free(&b);
        return mk_error(MK_ERR_NOMEM, "out of memory making tokenizer.json");
    }
    *out = b.data;
    return MK_OK;
}

mk_status mk_gguf_tokenizer_json(const mk_gguf *g, char **out)
{
    *out = NULL;
    char model[32] = "", pre[64] = "default";
    if (!mk_gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model) || strcmp(model, "gpt2") != 0) return MK_OK;
    mk_gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    const char *pj = NULL;
    for (size_t i = 0; i < sizeof pretoks / sizeof pretoks[0]; i++)
        if (strcmp(pretoks[i].name, pre) == 0) pj = pretoks[i].json;
    const mk_gguf_kv *tok = mk_gguf_find(g, "tokenizer.ggml.tokens");
    const mk_gguf_kv *types = mk_gguf_find(g, "tokenizer.ggml.token_type");
    const mk_gguf_kv *merges = mk_gguf_find(g, "tokenizer.ggml.merges");
    if (!pj || !tok || tok->type != MK_GGUF_ARRAY || tok->atype != MK_GGUF_STRING || tok->n == 0) return MK_OK;
    if (types && (types->type != MK_GGUF_ARRAY || types->atype == MK_GGUF_STRING || types->n != tok->n)) types = NULL;
    if (merges && (merges->type != MK_GGUF_ARRAY || merges->atype != MK_GGUF_STRING)) merges = NULL;
    return make(g, tok, types, merges, pj, out);
}
