/* fuzz_peft.c - PEFT adapters: adapter_config.json, then (after a NUL byte) an
 * adapter_model.safetensors image whose tensors are paired into LoRA modules. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/peft.h"
#include "../../formats/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    const uint8_t *nul = memchr(data, 0, size);
    size_t clen = nul ? (size_t)(nul - data) : size;
    mk_peft_config c;
    if (mk_peft_config_parse((const char *)data, clen, "fuzz/adapter_config.json", &c) != MK_OK) return 0;
    long r;
    double a;
    mk_peft_module_ra(&c, "model.layers.3.self_attn.q_proj", &r, &a);
    if (r <= 0 || r > MK_PEFT_MAX_R) __builtin_trap();
    (void)mk_peft_targets(&c, "model.layers.3.self_attn.q_proj");
    (void)mk_peft_targets(&c, "transformer.h.0.attn.c_attn");
    if (nul) {
        size_t off = clen + 1;
        mk_st_header h;
        if (mk_st_parse(data + off, size - off, size - off, "fuzz/adapter_model.safetensors", &h) == MK_OK) {
            mk_peft_layout l;
            if (mk_peft_layout_build(&c, h.t, h.n, "fuzz", &l) == MK_OK) {
                for (size_t i = 0; i < l.n_modules; i++)
                    if (l.m[i].a >= h.n || l.m[i].b >= h.n || h.t[l.m[i].a].shape[0] != l.m[i].r) __builtin_trap();
                mk_peft_layout_free(&l);
            }
            mk_st_header_free(&h);
        }
    }
    mk_peft_config_free(&c);
    return 0;
}
