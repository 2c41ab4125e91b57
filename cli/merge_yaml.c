/* merge_yaml.c - mergekit-yaml's options on merge (cli.h MK_MERGEKIT_OPTS): what each one
 * given does here. mergekit 0.1.5's options.py lists them; merge.py says what changes the
 * output: --no-copy-tokenizer (no tokenizer files, unless the recipe builds a tokenizer),
 * --no-write-model-card (neither README.md nor mergekit_config.yml), --out-shard-size,
 * --random-seed, --allow-crimes. */
#include "cli.h"

#include "../merge/recipe.h"

#include <string.h>

/* Whether an option of the mergekit section was given so as to turn its feature on. */
static bool turned_on(const mk_opt *o)
{
    switch (o->kind) {
    case MK_OPT_BOOL: return *(const int *)o->dst > 0;
    case MK_OPT_FLAG: return *(const bool *)o->dst;
    case MK_OPT_STR: return *(const char *const *)o->dst != NULL;
    case MK_OPT_INT: return *(const long *)o->dst != 0;
    default: return false;
    }
}

mk_status mk_cli_mergekit_check(const mk_opt *opts, const mk_mergekit_opts *mo, bool quiet)
{
    if (mo->trust_remote_code > 0)
        return mk_error(MK_ERR_USAGE, "--trust-remote-code: refused: mergekit-c never runs code from a model repository; it "
                                      "reads config.json and the weights as data, so no model needs it");
    if (quiet) return MK_OK;
    if (mo->safe_serialization < 0)
        fprintf(stderr, "mergekit-c: warning: --no-safe-serialization: mergekit-c writes safetensors only (a pickle runs "
                        "code when it is loaded); transformers loads them the same way\n");
    bool in_section = false;
    for (const mk_opt *o = opts; o->name; o++) {
        if (o->kind == MK_OPT_SECTION) {
            in_section = strcmp(o->help, MK_MERGEKIT_HEADING) == 0;
            continue;
        }
        if (in_section && strncmp(o->help, "not needed", 10) == 0 && turned_on(o))
            fprintf(stderr, "mergekit-c: note: --%s: %s\n", o->name, o->help);
    }
    return MK_OK;
}

mk_status mk_cli_mergekit_recipe(const mk_mergekit_opts *mo, const struct mk_recipe *r, bool quiet)
{
    if (!mo->lora_merge_dtype) return MK_OK;
    const mk_model_ref *refs[1024];
    size_t n = mk_recipe_models(r, refs, 1024);
    bool adapters = false;
    for (size_t i = 0; i < n; i++) adapters |= refs[i]->lora != NULL;
    if (adapters)
        return mk_error(MK_ERR_USAGE,
                        "--lora-merge-dtype %s: not supported: adapters are merged on the fly as PEFT's merge_and_unload "
                        "does, in the base model's dtype",
                        mo->lora_merge_dtype);
    if (!quiet) fprintf(stderr, "mergekit-c: note: --lora-merge-dtype: not needed: the recipe applies no adapter\n");
    return MK_OK;
}
