/* output.c - see output.h */
#include "output.h"

#include "../core/mk_hash.h"
#include "../core/mk_dstream.h"
#include "mkz.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AUX_CAP (512u << 20) /* largest side file copied (tokenizer.json of big vocabularies) */

bool mk_output_is_container(const char *out, const mk_output_opts *o)
{
    return o->compress || mk_str_ends_with(out, ".mkz");
}

mk_status mk_output_split_build(const mk_tensor_info *t, size_t n, const mk_output_opts *opts, unsigned parts,
                                mk_output_split *sp)
{
    memset(sp, 0, sizeof *sp);
    mk_st_layout L;
    MK_TRY(mk_st_layout_build(t, n, opts->shard_size, opts->stem, &L));
    sp->n_shards = L.n_shards;
    sp->names = L.names;
    sp->size = L.size;
    L.names = NULL;
    L.size = NULL;
    size_t ns = L.n_shards;
    mk_st_layout_free(&L); /* the headers; names and sizes moved out */
    sp->part_of = mk_calloc(ns ? ns : 1, sizeof *sp->part_of);
    if (!sp->part_of) {
        sp->n_shards = ns;
        mk_output_split_free(sp);
        return MK_ERR_NOMEM;
    }
    mk_parts_split(sp->size, ns, parts ? parts : 1, sp->part_of);
    return MK_OK;
}

void mk_output_split_free(mk_output_split *sp)
{
    for (size_t k = 0; k < sp->n_shards && sp->names; k++) free(sp->names[k]);
    free(sp->names);
    free(sp->size);
    free(sp->part_of);
    memset(sp, 0, sizeof *sp);
}

/* OUT.tmp for a part (joined, shared) or for finalize (held alone, the parts checked); fills
 * the sink options that restrict it to the part's shards or adopt them all. */
static mk_status begin_parts(mk_output *o, const char *out, const mk_output_opts *opts, const mk_tensor_info *t, size_t n,
                             mk_st_sink_opts *so, mk_st_sink_split *sp2, char **journal)
{
    if (o->container)
        return mk_error(MK_ERR_USAGE, "%s: a split output (--part) is a folder of safetensors shards, not a .mkz container; "
                                      "pack the finished folder with 'mergekit-c pack'", out);
    if (!opts->manifest) MK_BUG("parts without a manifest");
    o->keep = true;
    o->manifest = opts->manifest;
    o->part = opts->part;
    o->finalize = opts->finalize;
    mk_output_split sp;
    MK_TRY(mk_output_split_build(t, n, opts, opts->manifest->n, &sp));
    mk_status s = MK_OK;
    if (opts->finalize) {
        /* the recorded command must name the OUT.tmp finalize read the manifest from */
        char *tmp = mk_parts_tmp_path(out), *abs = tmp ? mk_path_absolute(tmp) : NULL;
        if (!abs) s = MK_ERR_NOMEM;
        else if (!opts->manifest->self || strcmp(abs, opts->manifest->self) != 0 || !mk_is_dir(tmp))
            s = mk_error(MK_ERR_MISMATCH, "%s: its manifest names another output (%s, from %s); finalize it where the parts ran",
                         opts->manifest->self ? opts->manifest->self : "OUT.tmp", abs, opts->manifest->cwd);
        free(tmp);
        free(abs);
        if (s == MK_OK) s = mk_outdir_begin(&o->od, out, false, opts->force, true);
        if (s == MK_OK && !o->od.resumed) {
            mk_outdir_abort(&o->od); /* an empty one, made just now */
            s = mk_error(MK_ERR_IO, "%s: OUT.tmp disappeared during finalize", out);
        }
        if (s == MK_OK) o->begun = true;
        o->adopt = mk_calloc(sp.n_shards ? sp.n_shards : 1, sizeof *o->adopt);
        if (s == MK_OK && !o->adopt) s = MK_ERR_NOMEM;
        if (s == MK_OK) s = mk_parts_check(o->od.tmp_path, opts->manifest, sp.names, sp.size, sp.part_of, sp.n_shards, o->adopt,
                                           &o->inputs);
        for (size_t k = 0; o->adopt && k < sp.n_shards; k++) o->adopt[k].name = NULL; /* borrowed from sp */
        sp2->adopt = o->adopt;
    } else {
        o->od.lock_fd = -1;
        o->od.final_path = mk_strdup(out);
        o->od.tmp_path = mk_parts_tmp_path(out);
        if (!o->od.final_path || !o->od.tmp_path) s = MK_ERR_NOMEM;
        if (s == MK_OK && mk_path_exists(out) && !mk_dir_is_empty(out) && !opts->force)
            s = mk_error(MK_ERR_EXISTS, "%s: output already exists (use --force to replace it)", out);
        if (s == MK_OK) s = mk_parts_join(o->od.tmp_path, opts->manifest, opts->part, o->part_locks);
        if (s == MK_OK) o->begun = true;
        o->own = mk_calloc(sp.n_shards ? sp.n_shards : 1, 1);
        if (s == MK_OK && !o->own) s = MK_ERR_NOMEM;
        for (size_t k = 0; s == MK_OK && k < sp.n_shards; k++) o->own[k] = sp.part_of[k] == opts->part.i - 1;
        sp2->own = o->own;
        so->resume_key = opts->manifest->plan; /* the part's own journal: a rerun keeps its finished shards */
        so->resume = true;
        char *jp = mk_part_file(".", opts->part, "journal");
        *journal = jp ? mk_strdup(jp + 2) : NULL;
        free(jp);
        if (s == MK_OK && !*journal) s = MK_ERR_NOMEM;
        sp2->journal = *journal;
    }
    mk_output_split_free(&sp);
    return s;
}

mk_status mk_output_begin(mk_output *o, const char *out, const mk_output_opts *opts, const mk_tensor_info *t, size_t n)
{
    memset(o, 0, sizeof *o);
    o->part_locks[0] = o->part_locks[1] = -1;
    o->container = mk_output_is_container(out, opts);
    mk_st_sink_opts so = {opts->shard_size, opts->resume_key, opts->resume, mk_dstream_mode() != MK_DIO_OFF};
    mk_st_sink_split split = {NULL, NULL, NULL};
    char *journal = NULL;
    mk_status s = MK_OK;
    if (opts->part.n || opts->finalize) {
        s = begin_parts(o, out, opts, t, n, &so, &split, &journal);
    } else {
        s = mk_parts_refuse_plain(out); /* a plain run would start OUT.tmp afresh */
        if (s == MK_OK) s = mk_outdir_begin(&o->od, out, o->container, opts->force, opts->resume);
        if (s == MK_OK) o->begun = true;
    }
    if (s != MK_OK) {
        free(journal);
        return s;
    }
    if (o->container) {
        mk_mkz_sink_opts zo = {opts->level ? opts->level : MK_MKZ_LEVEL_DEFAULT, opts->shard_size, 0};
        s = mk_mkz_sink(o->od.tmp_path, &zo, &o->k);
    } else if (o->keep) {
        s = mk_safetensors_sink_split(o->od.tmp_path, opts->stem, &so, &split, &o->k);
    } else {
        s = opts->stem ? mk_safetensors_sink_stem(o->od.tmp_path, opts->stem, &so, &o->k)
                       : mk_safetensors_sink(o->od.tmp_path, &so, &o->k);
    }
    if (s == MK_OK && opts->write_behind && !o->container) s = mk_output_write_behind(&o->k);
    if (s == MK_OK) s = o->k->ops->begin(o->k, t, n);
    free(journal);
    return s;
}

mk_status mk_output_part_done(mk_output *o, const mk_out_file *in, size_t n_in)
{
    MK_TRY(mk_parts_record(o->od.tmp_path, o->part, o->manifest->plan, o->k->out_files, o->k->n_out_files, in, n_in));
    mk_parts_release(o->part_locks);
    return MK_OK;
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
    if (o->finalize) MK_TRY(mk_parts_cleanup(o->od.tmp_path));
    MK_TRY(mk_outdir_commit(&o->od));
    o->committed = true;
    return MK_OK;
}

void mk_output_close(mk_output *o)
{
    if (!o) return;
    mk_sink_close(o->k);
    o->k = NULL;
    if (o->begun && !o->committed && !o->keep) mk_outdir_abort(&o->od);
    if (o->keep && !o->committed) { /* the parts' OUT.tmp stays */
        if (o->od.lock_fd >= 0) close(o->od.lock_fd);
        o->od.lock_fd = -1;
        free(o->od.final_path);
        free(o->od.tmp_path);
        o->od.final_path = o->od.tmp_path = NULL;
    }
    mk_parts_release(o->part_locks);
    free(o->own);
    free(o->adopt);
    mk_parts_inputs_free(&o->inputs);
    o->own = NULL;
    o->adopt = NULL;
    o->begun = false;
    for (size_t i = 0; i < o->n_files; i++) free(o->files[i].name);
    o->n_files = 0;
}
