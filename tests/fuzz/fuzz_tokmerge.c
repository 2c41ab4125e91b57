/* fuzz_tokmerge.c - merged vocabularies (merge/tokmerge.h): the input is one model's
 * tokenizer.json (a second model has a small fixed one), merged as a union, as base and
 * with the second model's vocabulary; then "auto" chat template picking over the input as
 * tokenizer_config.json. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../merge/tokmerge.h"

#include <stdlib.h>
#include <string.h>

typedef struct fake {
    const char *tok, *cfg; /* tokenizer.json, tokenizer_config.json (NULL: absent) */
    size_t tok_len, cfg_len;
} fake;

static mk_status fake_aux(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    const fake *f = s->impl;
    const char *p = strcmp(name, "tokenizer.json") == 0 ? f->tok : strcmp(name, "tokenizer_config.json") == 0 ? f->cfg : NULL;
    size_t n = p == f->tok ? f->tok_len : f->cfg_len;
    *data = NULL;
    *len = 0;
    if (!p || n > cap) return MK_OK;
    if (!(*data = malloc(n + 1))) return MK_ERR_NOMEM;
    memcpy(*data, p, n);
    (*data)[n] = 0;
    *len = n;
    return MK_OK;
}

static const mk_source_ops ops = {.aux_read = fake_aux};

static const char other[] = "{\"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"special\": true}],"
                            " \"model\": {\"type\": \"WordLevel\", \"vocab\": {\"<s>\": 0, \"a\": 1, \"b\": 2, \"zz\": 3}}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    fake f0 = {(const char *)data, (const char *)data, size, size}, f1 = {other, NULL, sizeof other - 1, 0};
    mk_source s0 = {.ops = &ops, .path = "fuzz", .impl = &f0}, s1 = {.ops = &ops, .path = "other", .impl = &f1};
    mk_source *srcs[2] = {&s0, &s1};
    static const char *const modes[] = {"union", "base", NULL};
    for (size_t m = 0; m < 3; m++)
        for (size_t base = 0; base < 2; base++) {
            mk_tokmerge t;
            if (mk_tokmerge_build(&t, srcs, 2, base, modes[m], 1, NULL, NULL) == MK_OK) mk_tokmerge_free(&t);
            mk_error_clear();
        }
    char *chat = NULL;
    if (mk_chat_template_pick(srcs, 2, "auto", &chat) == MK_OK) free(chat);
    mk_error_clear();
    return 0;
}
