/* method.c - the method table. Names and parameters follow mergekit's registry
 * (reference/mergekit-semantics.md section 2). */
#include "method.h"

#include <string.h>

extern const mk_method mk_method_linear, mk_method_passthrough;

/* Methods mergekit has that this build does not compute yet: a recipe naming one fails
 * at plan time with "not supported yet", never silently does something else. */
#define PENDING(n) static const mk_method pending_##n = {.name = #n, .summary = "not supported yet", .params = (const mk_param_def[]){{0}}}
PENDING(slerp);
PENDING(nuslerp);
PENDING(multislerp);
PENDING(karcher);
PENDING(task_arithmetic);
PENDING(ties);
PENDING(dare_ties);
PENDING(dare_linear);
PENDING(breadcrumbs);
PENDING(breadcrumbs_ties);
PENDING(della);
PENDING(della_linear);
PENDING(model_stock);
PENDING(sce);
PENDING(nearswap);
PENDING(arcee_fusion);
PENDING(ram);
PENDING(ramplus_tl);

const mk_method *const mk_methods[] = {
    &mk_method_linear, &mk_method_passthrough,
    &pending_slerp, &pending_nuslerp, &pending_multislerp, &pending_karcher, &pending_task_arithmetic,
    &pending_ties, &pending_dare_ties, &pending_dare_linear, &pending_breadcrumbs, &pending_breadcrumbs_ties,
    &pending_della, &pending_della_linear, &pending_model_stock, &pending_sce, &pending_nearswap,
    &pending_arcee_fusion, &pending_ram, &pending_ramplus_tl,
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
