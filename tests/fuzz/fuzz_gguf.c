/* fuzz_gguf.c - the GGUF header validator on arbitrary file images; on an accepted image,
 * what a reader does next: every tensor's bytes lie inside the image and decode (the first
 * and last blocks), names map, the metadata getters and the tokenizer.json maker run, and
 * the tokenizer loader takes or refuses what it made. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/gguf.h"
#include "../../model/gguf_names.h"
#include "../../nn/tokenizer.h"
#include "../../quant/ggml.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_gguf g;
    if (mk_gguf_parse(data, size, size, "fuzz.gguf", &g) != MK_OK) {
        mk_error_clear();
        return 0;
    }
    char arch[64] = "";
    mk_gguf_get_str(&g, "general.architecture", arch, sizeof arch);
    const mk_gguf_arch *a = mk_gguf_arch_find(arch);
    float out[2 * 256];
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const mk_gguf_tensor *t = &g.t[i];
        if (g.data_offset + t->offset > size || t->nbytes > size - g.data_offset - t->offset) __builtin_trap();
        const mk_ggml_type *ty = mk_ggml_type_of(t->type);
        if (!ty || t->ne[0] % ty->block || t->nbytes % ty->bytes) __builtin_trap();
        const uint8_t *p = data + g.data_offset + t->offset;
        uint64_t nb = t->nbytes / ty->bytes;
        if (ty->mk_dtype < 0 && nb) {
            if (!mk_ggml_decode(t->type, p, 1, out)) __builtin_trap();
            mk_ggml_decode(t->type, p + (nb - 1) * ty->bytes, 1, out + 256);
        }
        char hf[256], qk;
        if (mk_gguf_hf_name(a, t->name, hf, sizeof hf, &qk) && strlen(hf) >= sizeof hf) __builtin_trap();
    }
    int64_t v;
    double f;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        mk_gguf_get_int(&g, g.kv[i].key, &v);
        mk_gguf_get_float(&g, g.kv[i].key, &f);
    }
    char *tj = NULL;
    if (mk_gguf_tokenizer_json(&g, &tj) == MK_OK && tj) {
        mk_tokenizer *tok = NULL;
        if (mk_tokenizer_load(tj, strlen(tj), "fuzz tokenizer.json", &tok) == MK_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (mk_tokenizer_encode(tok, "ab c", 4, true, &ids, &n) == MK_OK) free(ids);
            mk_tokenizer_free(tok);
        }
        free(tj);
    }
    mk_error_clear();
    mk_gguf_free(&g);
    return 0;
}
