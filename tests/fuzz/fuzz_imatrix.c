/* fuzz_imatrix.c - the importance-matrix reader (formats/imatrix.h: GGUF and the legacy .dat
 * layout) on arbitrary file images: an accepted file's entries hold nmat x cols finite,
 * non-negative importances and sums, nmat finite non-negative counts (one for a legacy file),
 * and each is found by its name. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/imatrix.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_imatrix m;
    if (mk_imatrix_parse(data, size, "fuzz.gguf", &m) != MK_OK) {
        if (m.n || m.e) __builtin_trap();
        mk_error_clear();
        return 0;
    }
    for (size_t i = 0; i < m.n; i++) {
        const mk_imatrix_entry *e = &m.e[i];
        if (!e->name || !e->cols || !e->nmat || mk_imatrix_find(&m, e->name) == NULL || (m.legacy && e->nmat != 1)) __builtin_trap();
        for (uint64_t k = 0; k < e->cols * e->nmat; k++)
            if (!(e->imp[k] >= 0) || !isfinite(e->imp[k]) || !(e->sum[k] >= 0) || !isfinite(e->sum[k])) __builtin_trap();
        for (uint64_t j = 0; j < e->nmat; j++)
            if (!(e->count[j] >= 0) || !isfinite(e->count[j])) __builtin_trap();
    }
    mk_imatrix_free(&m);
    return 0;
}
