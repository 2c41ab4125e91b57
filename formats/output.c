/* output.c - see output.h */
#include "output.h"

#include "../core/mk_hash.h"
#include "mkz.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#define AUX_CAP (512u << 20) /* largest side file copied (tokenizer.json of big vocabularies) */

bool mk_output_is_container(const char *out, const mk_output_opts *o)
{
    return o->compress || mk_str_ends_with(out, ".mkz");
}

mk_status mk_output_begin(mk_output *o, const char *out, const mk_output_opts *opts, const mk_tensor_info *t, size_t n)
{
    memset(o, 0, sizeof *o);
    o->container = mk_output_is_container(out, opts);
    MK_TRY(mk_outdir_begin(&o->od, out, o->container, opts->force, opts->resume));
    o->begun = true;
    mk_status s;
    if (o->container) {
        mk_mkz_sink_opts zo = {opts->level ? opts->level : MK_MKZ_LEVEL_DEFAULT, opts->shard_size, 0};
        s = mk_mkz_sink(o->od.tmp_path, &zo, &o->k);
    } else {
        mk_st_sink_opts so = {opts->shard_size, opts->resume_key, opts->resume};
        s = opts->stem ? mk_safetensors_sink_stem(o->od.tmp_path, opts->stem, &so, &o->k)
                       : mk_safetensors_sink(o->od.tmp_path, &so, &o->k);
    }
    if (s == MK_OK) s = o->k->ops->begin(o->k, t, n);
    return s;
}

mk_status mk_output_file(mk_output *o, const char *name, const void *data, size_t len)
{
    MK_TRY(o->k->ops->add_file(o->k, name, data, len));
    if (o->n_files >= MK_OUTPUT_MAX_FILES) MK_BUG("too many side files");
    mk_out_file *f = &o->files[o->n_files];
    f->name = mk_strdup(name);
    if (!f->name) return MK_ERR_NOMEM;
    f->size = len;
    mk_hash128_hex(mk_hash128_bytes(data, len), f->hash);
    o->n_files++;
    return MK_OK;
}

mk_status mk_output_config(mk_output *o, mk_source *donor, const mk_hfconfig_edit *e, bool *found)
{
    char *cfg = NULL, *text = NULL;
    size_t len = 0;
    *found = false;
    MK_TRY(donor->ops->aux_read(donor, "config.json", 16u << 20, &cfg, &len));
    if (!cfg) return MK_OK;
    *found = true;
    mk_status s = MK_OK;
    if (e) {
        s = mk_hfconfig_rewrite(cfg, donor->path, e, &text);
        if (s == MK_OK) len = strlen(text);
    }
    if (s == MK_OK) s = mk_output_file(o, "config.json", e ? text : cfg, len);
    free(cfg);
    free(text);
    return s;
}

/* Copy donor's file `name` when it has one. */
static mk_status copy_one(mk_output *o, mk_source *donor, const char *name)
{
    char *data = NULL;
    size_t len = 0;
    MK_TRY(donor->ops->aux_read(donor, name, AUX_CAP, &data, &len));
    if (!data) return MK_OK;
    mk_status s = mk_output_file(o, name, data, len);
    free(data);
    return s;
}

mk_status mk_output_tokenizer(mk_output *o, mk_source *donor)
{
    for (const char *const *f = mk_tokenizer_files; *f; f++) MK_TRY(copy_one(o, donor, *f));
    return MK_OK;
}

mk_status mk_output_copy_aux(mk_output *o, mk_source *donor, const char *const *skip)
{
    const char *const *aux = donor->ops->aux_list ? donor->ops->aux_list(donor) : NULL;
    for (size_t i = 0; aux && aux[i]; i++) {
        bool skipped = false;
        for (const char *const *k = skip; k && *k && !skipped; k++) skipped = strcmp(*k, aux[i]) == 0;
        if (!skipped) MK_TRY(copy_one(o, donor, aux[i]));
    }
    return MK_OK;
}

mk_status mk_output_seal(mk_output *o) { return o->k->ops->commit(o->k); }

mk_status mk_output_commit(mk_output *o)
{
    MK_TRY(mk_sink_finish(o->k));
    MK_TRY(mk_outdir_commit(&o->od));
    o->committed = true;
    return MK_OK;
}

void mk_output_close(mk_output *o)
{
    if (!o) return;
    mk_sink_close(o->k);
    o->k = NULL;
    if (o->begun && !o->committed) mk_outdir_abort(&o->od);
    o->begun = false;
    for (size_t i = 0; i < o->n_files; i++) free(o->files[i].name);
    o->n_files = 0;
}
