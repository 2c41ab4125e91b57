/* cmd_methods.c - `mergekit-c methods`: every merge method with its parameters and defaults,
 * printed from the method table itself (the README's method table is checked against it). */
#include "cli.h"

#include "../merge/method.h"

#include <stdio.h>

/* "model": one value per model besides the base; "input": per model, the base too */
static const char *scope_name(mk_param_scope s)
{
    return s == MK_PS_MODEL ? "model" : s == MK_PS_INPUT ? "input" : "global";
}

int mk_cmd_methods(int argc, char **argv)
{
    mk_common c = {0};
    const mk_opt opts[] = {MK_COMMON_OPTS(c), {0}};
    const mk_cmd_spec spec = {"methods", "[options]", "List the merge methods, their parameters (per model or global), defaults and the values each accepts.",
                              NULL, opts, 0, 0, 0};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    if (c.json) printf("[");
    int k = 0;
    for (const mk_method *const *m = mk_methods; *m; m++, k++) {
        const mk_method *me = *m;
        if (c.json) {
            printf("%s\n  {\"name\": \"%s\", \"supported\": %s, \"needs_base\": %s, \"parameters\": [", k ? "," : "", me->name,
                   me->run ? "true" : "false", me->base == MK_BASE_REQUIRED ? "true" : "false");
            for (int i = 0; me->params[i].name; i++) {
                const mk_param_def *d = &me->params[i];
                char allowed[96], lo[32] = "null", hi[32] = "null";
                const mk_param_range *r = &d->range;
                if (d->boolean) snprintf(lo, sizeof lo, "0"), snprintf(hi, sizeof hi, "1");
                if (!d->boolean && (r->flags & MK_PR_LO)) snprintf(lo, sizeof lo, "%.17g", r->lo);
                if (!d->boolean && (r->flags & MK_PR_HI)) snprintf(hi, sizeof hi, "%.17g", r->hi);
                printf("%s{\"name\": \"%s\", \"scope\": \"%s\", \"required\": %s, \"default\": %.17g, \"allowed\": \"%s\", "
                       "\"min\": %s, \"min_exclusive\": %s, \"max\": %s, \"integer\": %s, \"boolean\": %s, \"mergekit_rule\": %s}",
                       i ? ", " : "", d->name, scope_name(d->scope), d->required ? "true" : "false", d->def,
                       mk_param_allowed(d, allowed), lo, (r->flags & MK_PR_LO_OPEN) ? "true" : "false", hi,
                       (r->flags & MK_PR_INT) || d->boolean ? "true" : "false", d->boolean ? "true" : "false",
                       mk_param_rule_is_mergekit(d) ? "true" : "false");
            }
            printf("]}");
            continue;
        }
        printf("%-18s %s%s\n", me->name, me->run ? "" : "[not supported yet] ", me->summary);
        for (int i = 0; me->params[i].name; i++) {
            const mk_param_def *d = &me->params[i];
            char def[32], allowed[96];
            if (d->required) snprintf(def, sizeof def, "required");
            else if (d->boolean) snprintf(def, sizeof def, "default %s", d->def != 0 ? "true" : "false");
            else snprintf(def, sizeof def, "default %g", d->def);
            printf("    %-18s %-6s %-16s %-26s %s\n", d->name, scope_name(d->scope), def, mk_param_allowed(d, allowed),
                   d->help ? d->help : "");
        }
    }
    if (c.json) printf("\n]\n");
    return 0;
}
