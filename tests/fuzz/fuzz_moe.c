/* fuzz_moe.c - mergekit-moe config parsing (merge/moe.h) and the model list it yields. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../merge/moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_moe_config c;
    if (mk_moe_config_parse((const char *)data, size, "fuzz.yaml", &c) == MK_OK) {
        const mk_model_ref *refs[64];
        size_t n = mk_moe_models(&c, refs, 64);
        for (size_t i = 0; i < n; i++) (void)refs[i]->key[0];
        (void)mk_moe_gate_name(c.gate);
    }
    mk_moe_config_free(&c);
    return 0;
}
