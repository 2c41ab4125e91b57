/* fuzz_st_index.c - model.safetensors.index.json validation. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_st_index ix;
    if (mk_st_index_parse((const char *)data, size, "fuzz.index.json", &ix) == MK_OK) {
        for (size_t i = 0; i < ix.n_shards; i++)
            if (strchr(ix.shards[i], '/') || strstr(ix.shards[i], "..") == ix.shards[i]) __builtin_trap();
        for (size_t i = 0; i < ix.n; i++)
            if (ix.shard_of[i] >= ix.n_shards) __builtin_trap();
        mk_st_index_free(&ix);
    }
    return 0;
}
