/* fuzz_recipe.c - recipe YAML parsing and parameter evaluation. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../merge/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_recipe r;
    if (mk_recipe_parse((const char *)data, size, "fuzz.yaml", &r) == MK_OK) {
        const mk_model_ref *refs[64];
        (void)mk_recipe_models(&r, refs, 64);
        double v;
        for (size_t i = 0; i < r.params.n; i++)
            for (int k = 0; k <= 4; k++) (void)mk_pvalue_eval(&r.params.p[i].value, "model.layers.1.mlp.up_proj.weight", k / 4.0, &v);
        for (size_t m = 0; m < r.n_models; m++)
            for (size_t i = 0; i < r.models[m].params.n; i++)
                (void)mk_pvalue_eval(&r.models[m].params.p[i].value, "lm_head.weight", 0.5, &v);
    }
    mk_recipe_free(&r);
    return 0;
}
