/* fuzz_estimate.c - the model shape `estimate` reads from config.json, and the formulas on it. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../model/estimate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_est_shape s;
    if (mk_est_shape_from_config((const char *)data, size, "fuzz/config.json", &s) != MK_OK) return 0;
    uint64_t total, linear, n;
    mk_est_params_shape(&s, &total, &linear);
    if (linear > total && !s.matrix) __builtin_trap();
    (void)mk_est_lora_shape(&s, "q,k,v,o,up,down", 8, &n);
    (void)mk_est_kv_cache(&s, 8, 2048, 2);
    (void)mk_est_activations(&s, 8, 2048, 2);
    return 0;
}
