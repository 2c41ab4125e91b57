/* method.c - the method table. Names and parameters follow mergekit's registry
 * (reference/mergekit-semantics.md section 2). */
#include "method.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

extern const mk_method mk_method_linear, mk_method_passthrough, mk_method_slerp, mk_method_nuslerp,
    mk_method_multislerp, mk_method_karcher, mk_method_task_arithmetic, mk_method_ties, mk_method_dare_ties,
    mk_method_dare_linear, mk_method_breadcrumbs, mk_method_breadcrumbs_ties, mk_method_della, mk_method_della_linear,
    mk_method_model_stock, mk_method_sce, mk_method_nearswap, mk_method_arcee_fusion, mk_method_ram,
    mk_method_ramplus_tl, mk_method_tsv, mk_method_iso_c, mk_method_iso_cts, mk_method_cart;

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
    /* beyond mergekit: merges on the singular vectors of each layer's task matrices */
    &mk_method_tsv,
    &mk_method_iso_c,
    &mk_method_iso_cts,
    &mk_method_cart,
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

bool mk_method_one_pass(const mk_merge_job *job)
{
    (void)job;
    return true;
}

bool mk_param_ok(const mk_param_def *d, double v)
{
    if (!isfinite(v)) return false;
    if (d->boolean) return v == 0 || v == 1;
    const mk_param_range *r = &d->range;
    if ((r->flags & MK_PR_INT) && v != floor(v)) return false;
    if (r->flags & MK_PR_LO) {
        if ((r->flags & MK_PR_LO_OPEN) ? !(v > r->lo) : !(v >= r->lo)) return false;
    }
    if ((r->flags & MK_PR_HI) && !(v <= r->hi)) return false;
    return true;
}

const char *mk_param_allowed(const mk_param_def *d, char buf[96])
{
    const mk_param_range *r = &d->range;
    const char *what = (r->flags & MK_PR_INT) ? "an integer" : "a number";
    if (d->boolean) snprintf(buf, 96, "true or false");
    else if ((r->flags & MK_PR_LO) && (r->flags & MK_PR_HI))
        snprintf(buf, 96, "%s in %c%g, %g]", what, (r->flags & MK_PR_LO_OPEN) ? '(' : '[', r->lo, r->hi);
    else if (r->flags & MK_PR_LO) snprintf(buf, 96, "%s %s %g", what, (r->flags & MK_PR_LO_OPEN) ? ">" : ">=", r->lo);
    else if (r->flags & MK_PR_HI) snprintf(buf, 96, "%s <= %g", what, r->hi);
    else snprintf(buf, 96, "%s", (r->flags & MK_PR_INT) ? "any integer" : "any number");
    return buf;
}

bool mk_param_rule_is_mergekit(const mk_param_def *d)
{
    /* pydantic validates bool and int parameters; every range is mergekit-c's own unless marked */
    if (d->boolean) return true;
    if (!(d->range.flags & (MK_PR_LO | MK_PR_HI))) return (d->range.flags & MK_PR_INT) != 0 || d->range.flags == 0;
    return (d->range.flags & MK_PR_MERGEKIT) != 0;
}
