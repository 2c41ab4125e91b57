/* fuzz_hubref.c - model references (local path or Hugging Face id[/sub][@revision]):
 * the id, subfolder and revision syntax, against a cache folder that does not exist (the
 * target reads nothing but file metadata and writes nothing). */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../core/mk_hub.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    setenv("HF_HUB_CACHE", "/nonexistent/mergekit-c-fuzz/hub", 1);
    setenv("HF_HUB_OFFLINE", "1", 1); /* never the network */
    if (size > 4096) return 0;
    char *ref = malloc(size + 1);
    if (!ref) return 0;
    memcpy(ref, data, size);
    ref[size] = 0;
    char *out = NULL;
    bool cached = false;
    mk_status s = mk_hub_resolve(ref, NULL, &out, &cached);
    /* a reference that resolves without a cache is the input itself, never a cache path */
    if (s == MK_OK && (cached || !out)) abort();
    free(out);
    /* the recipe's dict form: the revision apart */
    const char *at = strchr(ref, '@');
    if (at) {
        ref[at - ref] = 0;
        out = NULL;
        (void)mk_hub_resolve(ref, at + 1, &out, NULL);
        free(out);
    }
    free(ref);
    return 0;
}
