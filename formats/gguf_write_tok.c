/* gguf_write_tok.c - tokenizer.ggml.* metadata from a model's tokenizer.json and
 * tokenizer_config.json, as convert_hf_to_gguf.py (_set_vocab_gpt2, get_vocab_base) and
 * gguf-py's SpecialVocab write it, for byte-level BPE vocabularies ("gpt2"): tokens by id
 * (ids the vocabulary lacks up to vocab_size become "[PAD<id>]", type unused), token types
 * (added tokens: control when special, else user-defined; the rest normal), merges as
 * "a b", the pre-tokenizer by the llama.cpp name whose splitting formats/gguf_tok.c maps
 * back to the same Hugging Face pre_tokenizer, bos/eos/unk/padding ids (tokenizer_config.json
 * tokens looked up among the added tokens, then config.json's ids), add_bos_token and the
 * chat template (tokenizer_config.json, else chat_template.jinja). Other vocabularies
 * (WordLevel, SentencePiece) are written as "no_vocab", with a warning.
 * Must not: tokenize.
 */
#include "gguf_write.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_CAP (256u << 20)
#define MAX_VOCAB 10000000L

/* a token id: an integer in [0, MAX_VOCAB) */
static bool good_id(const cJSON *v)
{
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < (double)MAX_VOCAB && v->valuedouble == (double)(long)v->valuedouble;
}

static cJSON *aux_json(mk_source *s, const char *name, mk_status *st)
{
    char *t = NULL;
    size_t n = 0;
    *st = s->ops->aux_read ? s->ops->aux_read(s, name, TOK_CAP, &t, &n) : MK_OK;
    if (*st != MK_OK || !t) return NULL;
    cJSON *j = cJSON_ParseWithLength(t, n);
    free(t);
    if (!j) *st = mk_error(MK_ERR_FORMAT, "%s/%s: not valid JSON", s->path, name);
    return j;
}

static bool is_type(const cJSON *o, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

/* llama.cpp's name for a Hugging Face pre_tokenizer (the inverse of gguf_tok.c's table). */
static const char *pre_name(const cJSON *pre)
{
    if (is_type(pre, "ByteLevel")) return "gpt-2";
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!is_type(pre, "Sequence") || cJSON_GetArraySize(seq) != 2) return NULL;
    const cJSON *a = cJSON_GetArrayItem(seq, 0), *b = cJSON_GetArrayItem(seq, 1);
    if (!is_type(b, "ByteLevel")) return NULL;
    if (is_type(a, "Digits")) return "smollm";
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "pattern"), "Regex");
    if (!is_type(a, "Split") || !cJSON_IsString(re)) return NULL;
    if (strstr(re->valuestring, "\\p{N}{1,3}")) return "llama-bpe";
    if (strstr(re->valuestring, "\\p{N}|")) return "qwen2";
    return NULL;
}

static const char *special_content(const cJSON *tc, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(tc, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The id of special token `key` in tokenizer_config.json (a string or {"content": ...}). */
static long special_id(const cJSON *tc, const cJSON *vocab, const cJSON *added, const char *key)
{
    const char *want = special_content(tc, key);
    if (!want) return -1;
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content"), *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (cJSON_IsString(c) && cJSON_IsNumber(id) && strcmp(c->valuestring, want) == 0) return (long)id->valuedouble;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(vocab, want);
    return cJSON_IsNumber(id) ? (long)id->valuedouble : -1;
}

/* gguf-py SpecialVocab: a TemplateProcessing post-processor of more than one piece whose first
 * piece is the BOS token adds BOS, whose last is the EOS token adds EOS (tokenizer_config.json's
 * add_*_token wins over both). */
static void template_adds(const cJSON *tj, const cJSON *tc, int add[2])
{
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor"), *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    const cJSON *one = cJSON_IsArray(list) ? list->child : pp;
    for (; one; one = cJSON_IsArray(list) ? one->next : NULL) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(one, "single");
        if (!is_type(one, "TemplateProcessing") || cJSON_GetArraySize(single) < 2) continue;
        const char *bos = special_content(tc, "bos_token"), *eos = special_content(tc, "eos_token");
        const cJSON *first = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(single->child, "SpecialToken"), "id");
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, cJSON_GetArraySize(single) - 1), "SpecialToken"), "id");
        if (cJSON_IsString(first)) add[0] = bos && strcmp(first->valuestring, bos) == 0;
        if (cJSON_IsString(last)) add[1] = eos && strcmp(last->valuestring, eos) == 0;
    }
}

static mk_status bpe(mk_gguf_w *w, const cJSON *tj, const cJSON *tc, const cJSON *cfg, long vocab_size, const char *pre,
                     const char *what)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model"), *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    long n = vocab_size > 0 ? vocab_size : 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!good_id(e)) return mk_error(MK_ERR_FORMAT, "%s: vocab entry \"%.64s\": the id is not an integer in [0, %ld)", what, e->string, MAX_VOCAB);
        if ((long)e->valuedouble + 1 > n) n = (long)e->valuedouble + 1;
    }
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!good_id(id)) return mk_error(MK_ERR_FORMAT, "%s: an added token's id is not an integer in [0, %ld)", what, MAX_VOCAB);
        if ((long)id->valuedouble + 1 > n) n = (long)id->valuedouble + 1;
    }
    if (n <= 0 || n > MAX_VOCAB) return mk_error(MK_ERR_FORMAT, "%s: a vocabulary of %ld tokens", what, n);
    const char **tok = mk_calloc((size_t)n, sizeof *tok);
    char **pads = mk_calloc((size_t)n, sizeof *pads);
    int32_t *type = mk_calloc((size_t)n, sizeof *type);
    long nm = cJSON_GetArraySize(merges);
    const char **mg = mk_calloc((size_t)nm + 1, sizeof *mg);
    char **mgown = mk_calloc((size_t)nm + 1, sizeof *mgown);
    mk_status s = tok && pads && type && mg && mgown ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) {
        cJSON_ArrayForEach(e, vocab)
        {
            tok[(long)e->valuedouble] = e->string;
            type[(long)e->valuedouble] = 1;
        }
        cJSON_ArrayForEach(e, added)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"), *c = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (!cJSON_IsString(c)) continue;
            long i = (long)id->valuedouble;
            tok[i] = c->valuestring;
            type[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4;
        }
        for (long i = 0; s == MK_OK && i < n; i++)
            if (!tok[i]) {
                pads[i] = mk_asprintf("[PAD%ld]", i);
                tok[i] = pads[i];
                type[i] = 5;
                if (!pads[i]) s = MK_ERR_NOMEM;
            }
        long k = 0;
        cJSON_ArrayForEach(e, merges)
        {
            if (cJSON_IsString(e)) mg[k++] = e->valuestring;
            else if (cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
                mgown[k] = mk_asprintf("%s %s", cJSON_GetArrayItem(e, 0)->valuestring, cJSON_GetArrayItem(e, 1)->valuestring);
                if (!(mg[k] = mgown[k])) s = MK_ERR_NOMEM;
                k++;
            } else s = mk_error(MK_ERR_FORMAT, "%s: merge %ld is neither \"a b\" nor [a, b]", what, k);
            if (s != MK_OK) break;
        }
        nm = k;
    }
    if (s == MK_OK) {
        mk_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
        mk_gguf_w_str(w, "tokenizer.ggml.pre", pre);
        mk_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok, NULL, (uint64_t)n);
        mk_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (uint64_t)n);
        mk_gguf_w_arr_str(w, "tokenizer.ggml.merges", mg, NULL, (uint64_t)nm);
        static const char *const keys[][3] = {{"bos_token", "bos_token_id", "tokenizer.ggml.bos_token_id"},
                                              {"eos_token", "eos_token_id", "tokenizer.ggml.eos_token_id"},
                                              {"unk_token", NULL, "tokenizer.ggml.unknown_token_id"},
                                              {"pad_token", "pad_token_id", "tokenizer.ggml.padding_token_id"}};
        for (size_t i = 0; i < 4; i++) {
            long id = special_id(tc, vocab, added, keys[i][0]);
            const cJSON *c = keys[i][1] ? cJSON_GetObjectItemCaseSensitive(cfg, keys[i][1]) : NULL;
            if (id < 0 && good_id(c)) id = (long)c->valuedouble;
            if (id >= 0 && id < n) mk_gguf_w_u32(w, keys[i][2], (uint32_t)id);
        }
        int add[2] = {-1, -1}; /* BOS, EOS: -1 unknown */
        template_adds(tj, tc, add);
        static const char *const akeys[2][2] = {{"add_bos_token", "tokenizer.ggml.add_bos_token"}, {"add_eos_token", "tokenizer.ggml.add_eos_token"}};
        for (int i = 0; i < 2; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(tc, akeys[i][0]);
            if (cJSON_IsBool(v)) add[i] = cJSON_IsTrue(v);
            if (add[i] >= 0) mk_gguf_w_bool(w, akeys[i][1], add[i] == 1);
        }
    }
    for (long i = 0; pads && i < n; i++) free(pads[i]);
    for (long i = 0; mgown && i < nm; i++) free(mgown[i]);
    free(tok);
    free(pads);
    free(type);
    free(mg);
    free(mgown);
    return s;
}

mk_status mk_gguf_w_tokenizer(mk_gguf_w *w, mk_source *src, long vocab_size, bool *vocab)
{
    *vocab = false;
    mk_status s1, s2, s3;
    cJSON *tj = aux_json(src, "tokenizer.json", &s1), *tc = aux_json(src, "tokenizer_config.json", &s2),
          *cfg = aux_json(src, "config.json", &s3);
    mk_status s = s1 != MK_OK ? s1 : s2 != MK_OK ? s2 : s3;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const char *pre = pre_name(cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer"));
    char what[1024];
    snprintf(what, sizeof what, "%s/tokenizer.json", src->path);
    if (s == MK_OK && is_type(model, "BPE") && pre) {
        s = bpe(w, tj, tc, cfg, vocab_size, pre, what);
        *vocab = s == MK_OK;
    } else if (s == MK_OK) {
        mk_warn("%s: %s; the GGUF file gets no vocabulary (tokenizer.ggml.model \"no_vocab\"): llama.cpp runs it on token ids only",
                what, !tj ? "absent" : !is_type(model, "BPE") ? "not a byte-level BPE vocabulary" : "a pre-tokenizer llama.cpp has no name for");
        mk_gguf_w_str(w, "tokenizer.ggml.model", "no_vocab");
    }
    if (s == MK_OK) { /* the chat template: tokenizer_config.json's, else chat_template.jinja */
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
        char *jt = NULL;
        size_t jn = 0;
        if (cJSON_IsString(ct)) mk_gguf_w_str(w, "tokenizer.chat_template", ct->valuestring);
        else if (src->ops->aux_read && (s = src->ops->aux_read(src, "chat_template.jinja", TOK_CAP, &jt, &jn)) == MK_OK && jt)
            mk_gguf_w_str(w, "tokenizer.chat_template", jt);
        free(jt);
    }
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    cJSON_Delete(cfg);
    return s;
}
