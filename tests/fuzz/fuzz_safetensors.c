/* fuzz_safetensors.c - the safetensors header validator on arbitrary file images. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_st_header h;
    if (mk_st_parse(data, size, size, "fuzz.safetensors", &h) == MK_OK) {
        /* what a reader does next: every tensor's bytes lie inside the image */
        for (size_t i = 0; i < h.n; i++)
            if (h.t[i].offset > size || h.t[i].nbytes > size - h.t[i].offset) __builtin_trap();
        mk_st_header_free(&h);
    }
    return 0;
}
