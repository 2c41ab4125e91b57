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
    const mk_cmd_spec spec = {"methods", "[options]", "List the merge methods, their parameters (per model or global) and defaults.",
                              NULL, opts, 0, 0};
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
                printf("%s{\"name\": \"%s\", \"scope\": \"%s\", \"required\": %s, \"default\": %.17g}", i ? ", " : "", d->name,
                       scope_name(d->scope), d->required ? "true" : "false", d->def);
            }
            printf("]}");
            continue;
        }
        printf("%-18s %s%s\n", me->name, me->run ? "" : "[not supported yet] ", me->summary);
        for (int i = 0; me->params[i].name; i++) {
            const mk_param_def *d = &me->params[i];
            printf("    %-18s %-6s ", d->name, scope_name(d->scope));
            if (d->required) printf("required");
            else if (d->boolean) printf("default %s", d->def != 0 ? "true" : "false");
            else printf("default %g", d->def);
            printf("  %s\n", d->help ? d->help : "");
        }
    }
    if (c.json) printf("\n]\n");
    return 0;
}
