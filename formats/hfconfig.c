/* hfconfig.c - see hfconfig.h */
#include "hfconfig.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const char *const mk_tokenizer_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "added_tokens.json",
    "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json", "generation_config.json", NULL,
};

static mk_status set_number(cJSON *cfg, const char *key, double v)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (item) {
        cJSON_SetNumberValue(item, v);
        if (!cJSON_IsNumber(item)) return mk_error(MK_ERR_FORMAT, "config.json: '%s' is not a number", key);
        return MK_OK;
    }
    return cJSON_AddNumberToObject(cfg, key, v) ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory editing config.json");
}

static mk_status set_string(cJSON *cfg, const char *key, const char *v)
{
    cJSON *s = cJSON_CreateString(v);
    if (!s) return mk_error(MK_ERR_NOMEM, "out of memory editing config.json");
    if (cJSON_GetObjectItemCaseSensitive(cfg, key)) cJSON_ReplaceItemInObjectCaseSensitive(cfg, key, s);
    else cJSON_AddItemToObject(cfg, key, s);
    return MK_OK;
}

/* cJSON keeps numbers as doubles and prints 30.0 as 30, which transformers' strict config
 * classes reject where they expect a float (Gemma2's softcapping values). So every number
 * written with a fraction or exponent keeps its original text: the number tokens of the
 * text, in document order, pair with the number nodes of the tree in the same order. */
typedef struct num_tokens {
    size_t n, i;
    const char **start;
    size_t *len;
} num_tokens;

static bool scan_numbers(const char *text, num_tokens *t)
{
    size_t cap = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '"') { /* skip a string, escapes included */
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (!*p) break;
            continue;
        }
        if (*p != '-' && (*p < '0' || *p > '9')) continue;
        const char *q = p;
        while (*q && strchr("+-0123456789.eE", *q)) q++;
        if (t->n == cap) {
            cap = cap ? 2 * cap : 64;
            const char **ns = mk_realloc_array(t->start, cap, sizeof *ns);
            if (!ns) return false;
            t->start = ns;
            size_t *nl = mk_realloc_array(t->len, cap, sizeof *nl);
            if (!nl) return false;
            t->len = nl;
        }
        t->start[t->n] = p;
        t->len[t->n++] = (size_t)(q - p);
        p = q - 1;
    }
    return true;
}

static bool keep_float_literals(cJSON *node, num_tokens *t)
{
    for (cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsNumber(c)) {
            if (t->i >= t->n) return true; /* cannot happen for text cJSON parsed */
            const char *tok = t->start[t->i];
            size_t len = t->len[t->i++];
            bool is_float = false;
            for (size_t k = 0; k < len; k++) is_float |= tok[k] == '.' || tok[k] == 'e' || tok[k] == 'E';
            if (!is_float) continue;
            char *lit = mk_strndup(tok, len);
            cJSON *raw = lit ? cJSON_CreateRaw(lit) : NULL;
            free(lit);
            if (!raw) return false;
            raw->string = c->string; /* the member's key moves to the new node */
            c->string = NULL;
            cJSON_ReplaceItemViaPointer(node, c, raw);
            c = raw;
        } else if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            if (!keep_float_literals(c, t)) return false;
        }
    }
    return true;
}

/* cJSON indents with tabs; Hugging Face files use two spaces. */
static char *tabs_to_spaces(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++) n += *p == '\t' ? 2 : 1;
    char *o = mk_malloc(n + 2);
    if (!o) return NULL;
    char *q = o;
    bool in_str = false;
    for (const char *p = s; *p; p++) {
        if (*p == '"' && (p == s || p[-1] != '\\')) in_str = !in_str;
        if (*p == '\t' && !in_str) {
            *q++ = ' ';
            if (p == s || p[-1] != ':') *q++ = ' '; /* "key": value, with one space */
        } else {
            *q++ = *p;
        }
    }
    *q++ = '\n';
    *q = 0;
    return o;
}

/* Continuation lines of a nested raw value get the two spaces of its nesting level. */
static char *indent_raw(const char *t)
{
    size_t n = 0;
    for (const char *p = t; *p; p++) n += *p == '\n' ? 3 : 1;
    char *o = mk_malloc(n + 1);
    if (!o) return NULL;
    char *q = o;
    for (const char *p = t; *p; p++) {
        *q++ = *p;
        if (*p == '\n') {
            *q++ = ' ';
            *q++ = ' ';
        }
    }
    *q = 0;
    return o;
}

mk_status mk_hfconfig_rewrite(const char *text, const char *what, const mk_hfconfig_edit *e, char **out)
{
    *out = NULL;
    cJSON *cfg = cJSON_Parse(text);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return mk_error(MK_ERR_FORMAT, "%s: config.json is not a JSON object", what);
    }
    num_tokens nt = {0};
    mk_status s = scan_numbers(text, &nt) && keep_float_literals(cfg, &nt) ? MK_OK
                                                                          : mk_error(MK_ERR_NOMEM, "out of memory editing config.json");
    free(nt.start);
    free(nt.len);
    if (s == MK_OK && e->torch_dtype) {
        s = set_string(cfg, "torch_dtype", e->torch_dtype);
        /* transformers 5 writes "dtype"; keep both in step when the donor has it */
        if (s == MK_OK && cJSON_GetObjectItemCaseSensitive(cfg, "dtype")) s = set_string(cfg, "dtype", e->torch_dtype);
    }
    if (s == MK_OK && e->layers_key) s = set_number(cfg, e->layers_key, (double)e->layers);
    if (s == MK_OK && e->vocab_key) s = set_number(cfg, e->vocab_key, (double)e->vocab);
    if (s == MK_OK && (e->drop_quant_config || e->quant_config)) cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    if (s == MK_OK && e->quant_config) {
        /* verbatim, indented one level: the text is already formatted as its tools write it */
        cJSON *q = cJSON_Parse(e->quant_config);
        bool obj = cJSON_IsObject(q);
        cJSON_Delete(q);
        char *ind = obj ? indent_raw(e->quant_config) : NULL;
        cJSON *raw = ind ? cJSON_CreateRaw(ind) : NULL;
        free(ind);
        if (!obj) s = mk_error(MK_ERR_FORMAT, "quantization_config is not a JSON object");
        else if (!raw) s = mk_error(MK_ERR_NOMEM, "out of memory editing config.json");
        else cJSON_AddItemToObject(cfg, "quantization_config", raw);
    }
    for (size_t i = 0; s == MK_OK && e->set && e->set[i] && e->set[i + 1]; i += 2) {
        /* checked as JSON, written as given (a float keeps its ".0") */
        cJSON *chk = cJSON_Parse(e->set[i + 1]), *v = chk ? cJSON_CreateRaw(e->set[i + 1]) : NULL;
        cJSON_Delete(chk);
        if (!v) s = mk_error(MK_ERR_FORMAT, "config.json: value of '%s' is not JSON: %s", e->set[i], e->set[i + 1]);
        else if (cJSON_GetObjectItemCaseSensitive(cfg, e->set[i])) cJSON_ReplaceItemInObjectCaseSensitive(cfg, e->set[i], v);
        else cJSON_AddItemToObject(cfg, e->set[i], v);
    }
    if (s == MK_OK) {
        char *p = cJSON_Print(cfg);
        if (!p) s = mk_error(MK_ERR_NOMEM, "out of memory writing config.json");
        else {
            *out = tabs_to_spaces(p);
            cJSON_free(p);
            if (!*out) s = MK_ERR_NOMEM;
        }
    }
    cJSON_Delete(cfg);
    return s;
}
