/* method.c - the method table. Names and parameters follow mergekit's registry
 * (reference/mergekit-semantics.md section 2). */
#include "method.h"

#include <string.h>

extern const mk_method mk_method_linear, mk_method_passthrough, mk_method_slerp, mk_method_nuslerp,
    mk_method_multislerp, mk_method_karcher, mk_method_task_arithmetic, mk_method_ties, mk_method_dare_ties,
    mk_method_dare_linear, mk_method_breadcrumbs, mk_method_breadcrumbs_ties, mk_method_della, mk_method_della_linear,
    mk_method_model_stock, mk_method_sce, mk_method_nearswap, mk_method_arcee_fusion, mk_method_ram,
    mk_method_ramplus_tl;

/* Every method mergekit 0.1.5 registers (merge_methods/registry.py), in its order of
 * families: interpolation, task vectors, the rest. */
const mk_method *const mk_methods[] = {
    &mk_method_linear,
    &mk_method_slerp,
    &mk_method_nuslerp,
    &mk_method_multislerp,
    &mk_method_karcher,
    &mk_method_task_arithmetic,
    &mk_method_ties,
    &mk_method_dare_ties,
    &mk_method_dare_linear,
    &mk_method_breadcrumbs,
    &mk_method_breadcrumbs_ties,
    &mk_method_della,
    &mk_method_della_linear,
    &mk_method_model_stock,
    &mk_method_sce,
    &mk_method_ram,
    &mk_method_ramplus_tl,
    &mk_method_nearswap,
    &mk_method_arcee_fusion,
    &mk_method_passthrough,
    NULL,
};

const mk_method *mk_method_find(const char *name)
{
    for (const mk_method *const *m = mk_methods; *m; m++)
        if (strcmp((*m)->name, name) == 0) return *m;
    return NULL;
}

int mk_method_param(const mk_method *m, const char *name)
{
    for (int i = 0; m->params[i].name; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

size_t mk_method_nparams(const mk_method *m)
{
    size_t n = 0;
    while (m->params[n].name) n++;
    return n;
}

bool mk_param_known_anywhere(const char *name)
{
    /* parameters of every mergekit method, implemented or not */
    static const char *const all[] = {"weight", "normalize", "t", "density", "epsilon", "lambda", "gamma", "rescale",
                                      "int8_mask", "filter_wise", "select_topk", "nuslerp_flatten",
                                      "nuslerp_row_wise", "normalize_weights", "eps", "max_iter", "tol", "scale",
                                      "r", "alpha", "embed_slerp", NULL};
    for (const char *const *p = all; *p; p++)
        if (strcmp(*p, name) == 0) return true;
    for (const mk_method *const *m = mk_methods; *m; m++)
        if (mk_method_param(*m, name) >= 0) return true;
    return false;
}
