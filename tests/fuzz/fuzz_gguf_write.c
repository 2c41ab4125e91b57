/* fuzz_gguf_write.c - convert's tokenizer metadata (formats/gguf_write_tok.c) from arbitrary
 * tokenizer.json / tokenizer_config.json / config.json texts (the input split at NUL bytes),
 * then the header the writer would write: whatever the texts, it is refused with an error
 * or it is a GGUF header our own reader accepts, whose tokenizer.json maker then runs. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/gguf_write.h"
#include "../../model/gguf_names.h"

#include <stdlib.h>
#include <string.h>

typedef struct fake {
    const char *text[3];
    size_t len[3];
} fake;

static const char *const names[3] = {"tokenizer.json", "tokenizer_config.json", "config.json"};

static mk_status aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    (void)cap;
    fake *f = s->impl;
    *data = NULL;
    *len = 0;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0 && f->text[i]) {
            *data = mk_strndup(f->text[i], f->len[i]);
            *len = f->len[i];
            return *data ? MK_OK : MK_ERR_NOMEM;
        }
    return MK_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    fake f = {{0}, {0}};
    const char *p = (const char *)data, *end = p + size;
    for (int i = 0; i < 3 && p <= end; i++) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        f.text[i] = p;
        f.len[i] = (size_t)((z ? z : end) - p);
        p += f.len[i] + 1;
    }
    mk_source_ops ops = {0};
    ops.aux_read = aux_read;
    mk_source src = {0};
    src.ops = &ops;
    src.path = "fuzz";
    src.impl = &f;
    mk_gguf_w w;
    mk_gguf_w_init(&w);
    mk_gguf_w_str(&w, "general.architecture", "llama");
    bool vocab;
    long vocab_size = size ? data[0] * 3 : 0;
    if (mk_gguf_w_tokenizer(&w, &src, vocab_size, &vocab) == MK_OK) {
        uint64_t ne[4] = {32, 2, 1, 1};
        if (mk_gguf_w_tensor(&w, "token_embd.weight", 2, ne, MK_GGML_Q8_0) != MK_OK) __builtin_trap();
        mk_buf h = {0};
        mk_gguf_w_header(&w, &h);
        if (!h.failed) {
            /* the image: the header and zeroed tensor data */
            size_t n = h.len + 2 * 34 + 32;
            unsigned char *img = calloc(n, 1);
            if (img) {
                memcpy(img, h.data, h.len);
                mk_gguf g;
                if (mk_gguf_parse(img, n, n, "fuzz.gguf", &g) != MK_OK) __builtin_trap();
                char *tj = NULL;
                if (mk_gguf_tokenizer_json(&g, &tj) != MK_OK) mk_error_clear();
                free(tj);
                mk_gguf_free(&g);
                free(img);
            }
        }
        mk_buf_free(&h);
    }
    mk_error_clear();
    mk_gguf_w_free(&w);
    return 0;
}
