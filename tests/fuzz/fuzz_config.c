/* fuzz_config.c - config.json handling: architecture detection and the rewrite of outputs. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/hfconfig.h"
#include "../../model/arch.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    mk_arch a;
    if (mk_arch_from_config(text, "fuzz/config.json", &a) == MK_OK) {
        long layer;
        size_t pre, rest;
        (void)mk_arch_layer(&a, "model.layers.12.mlp.up_proj.weight", &layer, &pre, &rest);
        mk_arch_free(&a);
    }
    mk_hfconfig_edit e = {"bfloat16", "num_hidden_layers", 48, "vocab_size", 32000, NULL, false, NULL};
    char *out = NULL;
    if (mk_hfconfig_rewrite(text, "fuzz/config.json", &e, &out) == MK_OK) free(out);
    free(text);
    return 0;
}
