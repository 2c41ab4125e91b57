/* mkz_pack.c - pack a model folder (every regular file in it, safetensors files split into
 * their header and tensors) or one .safetensors file into a new container. See mkz.h. */
#include "mkz_int.h"

#include "modeldir.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct pack_file {
    char *name, *path;
    mk_map map;
    bool st;               /* a safetensors file, stored as its header and its tensors */
    mk_st_header h;
    mk_name_index names;   /* tensor name -> index in h.t */
    uint32_t *stream_of;   /* [h.n] */
} pack_file;

typedef struct pack_job {
    size_t n, cap;
    pack_file *f;
} pack_job;

static void pack_job_free(pack_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        pack_file *f = &j->f[i];
        free(f->name);
        free(f->path);
        mk_map_close(&f->map);
        mk_st_header_free(&f->h);
        mk_name_index_free(&f->names);
        free(f->stream_of);
    }
    free(j->f);
}

static int cmp_pack_file(const void *a, const void *b)
{
    return strcmp(((const pack_file *)a)->name, ((const pack_file *)b)->name);
}

static mk_status pack_add(pack_job *j, const char *name, const char *path)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 16;
        pack_file *nf = mk_realloc_array(j->f, cap, sizeof *nf);
        if (!nf) return MK_ERR_NOMEM;
        j->f = nf;
        j->cap = cap;
    }
    pack_file *f = &j->f[j->n];
    memset(f, 0, sizeof *f);
    f->map.fd = -1;
    f->name = mk_strdup(name);
    f->path = mk_strdup(path);
    j->n++;
    return f->name && f->path ? MK_OK : MK_ERR_NOMEM;
}

/* The files to pack: every regular file of the folder (symlinks followed only inside
 * it, as the folder reader does), sorted by name; sub-folders are skipped with a warning. */
static mk_status pack_list(const char *in, pack_job *j)
{
    if (!mk_is_dir(in)) {
        char *base = mk_path_basename(in);
        mk_status s = base ? pack_add(j, base, in) : MK_ERR_NOMEM;
        free(base);
        return s;
    }
    mk_modeldir md;
    mk_status s = mk_modeldir_open(&md, in, false);
    DIR *dh = s == MK_OK ? opendir(in) : NULL;
    if (s == MK_OK && !dh) s = mk_error(MK_ERR_IO, "%s: cannot list: %s", in, strerror(errno));
    struct dirent *e;
    while (s == MK_OK && (e = readdir(dh))) {
        const char *nm = e->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 || mk_str_starts_with(nm, ".mergekit-c")) continue;
        char *p = NULL;
        if (mk_modeldir_resolve(&md, nm, &p) != MK_OK) {
            mk_warn("%s: not packed (%s)", nm, mk_errmsg());
            mk_error_clear();
            continue;
        }
        if (strlen(nm) > 255 || !mkz_file_name_ok(nm)) mk_warn("%s/%s: not packed (name not storable)", in, nm);
        else s = pack_add(j, nm, p);
        free(p);
    }
    if (dh) closedir(dh);
    mk_modeldir_free(&md);
    if (s == MK_OK) qsort(j->f, j->n, sizeof *j->f, cmp_pack_file);
    return s;
}

/* A safetensors file's streams: its header, then its tensors in file order. */
static mk_status declare_safetensors(mkz_writer *w, pack_file *f)
{
    const uint8_t *base = f->map.data;
    MK_TRY(mk_st_parse(base ? base : (const uint8_t *)"", (size_t)f->map.size, f->map.size, f->path, &f->h));
    f->st = true;
    MK_TRY(mk_name_index_build(&f->names, f->h.t, f->h.n, NULL));
    size_t n = f->h.n;
    size_t *order = mk_calloc(n ? n : 1, sizeof *order);
    uint32_t *parts = mk_calloc(n + 1, sizeof *parts);
    f->stream_of = mk_calloc(n ? n : 1, sizeof *f->stream_of);
    mk_status s = order && parts && f->stream_of ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) s = mkz_w_add_stream(w, NULL, f->h.data_start, &parts[0]);
    if (s == MK_OK) w->src[parts[0]] = (mkz_wsrc){base, &f->map, 0};
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (s == MK_OK) qsort_r(order, n, sizeof *order, mkz_cmp_by_offset, f->h.t);
    for (size_t q = 0; q < n && s == MK_OK; q++) {
        const mk_tensor_info *t = &f->h.t[order[q]];
        s = mkz_w_add_stream(w, t, 0, &parts[q + 1]);
        if (s == MK_OK) {
            w->src[parts[q + 1]] = (mkz_wsrc){base + t->offset, &f->map, t->offset};
            f->stream_of[order[q]] = parts[q + 1];
        }
    }
    if (s == MK_OK) s = mkz_w_add_file(w, f->name, parts, n + 1, NULL);
    free(order);
    free(parts);
    return s;
}

/* Declare file f's streams and the file. */
static mk_status pack_declare(mkz_writer *w, pack_file *f)
{
    MK_TRY(mk_map_open(&f->map, f->path));
    if (mk_str_ends_with(f->name, ".safetensors")) return declare_safetensors(w, f);
    uint32_t id;
    MK_TRY(mkz_w_add_stream(w, NULL, f->map.size, &id));
    w->src[id] = (mkz_wsrc){f->map.data, &f->map, 0};
    return mkz_w_add_file(w, f->name, &id, 1, NULL);
}

/* The model's tensor list, in the order the folder reader gives it. */
static mk_status pack_model(mkz_writer *w, const pack_job *job, const mk_source *src, const char *in)
{
    for (size_t i = 0; i < src->n_tensors; i++) {
        const mk_tensor_info *t = &src->tensors[i];
        const char *fp = src->files[t->file], *slash = strrchr(fp, '/');
        const char *fname = slash ? slash + 1 : fp;
        const pack_file *f = NULL;
        for (size_t q = 0; q < job->n && !f; q++)
            if (strcmp(job->f[q].name, fname) == 0) f = &job->f[q];
        long ti = f && f->st ? mk_name_index_find(&f->names, t->name) : -1;
        if (ti < 0) return mk_error(MK_ERR_IO, "%s: tensor %s: its file %s was not packed", in, t->name, fname);
        MK_TRY(mkz_w_add_model(w, f->stream_of[ti]));
    }
    return MK_OK;
}

/* The base's tensor behind each delta record. */
typedef struct pack_base {
    mk_source *src;
    size_t *idx, n;  /* [n_streams at most] */
} pack_base;

static mk_status pack_base_read(void *ctx, size_t d, uint64_t off, uint64_t len, void *dst)
{
    pack_base *b = ctx;
    return b->src->ops->read(b->src, b->idx[d], off, len, dst);
}

/* Every tensor stream with a base tensor of the same name, dtype and shape is stored
 * against it; the base tensor's XXH3-128 goes into the record. */
static mk_status pack_deltas(mkz_writer *w, pack_base *b, const char *hint)
{
    const mk_mkz_index *bx = mk_mkz_source_index(b->src);
    if (bx && bx->n_delta)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: the base is itself a delta container (unpack it first)", b->src->path);
    MK_TRY(mkz_w_set_base(w, hint, pack_base_read, b));
    if (!(b->idx = mk_calloc(w->ix.n_streams ? w->ix.n_streams : 1, sizeof *b->idx))) return MK_ERR_NOMEM;
    for (uint32_t k = 0; k < w->ix.n_streams; k++) {
        const mk_mkz_stream *S = &w->ix.streams[k];
        long i = S->is_tensor ? mk_source_find(b->src, S->name) : -1;
        if (i < 0) continue;
        const mk_tensor_info *t = &b->src->tensors[i];
        if (t->dtype != S->t.dtype || !mk_shape_eq(t, &S->t)) continue;
        b->idx[b->n++] = (size_t)i;
        mk_hash128 h;
        MK_TRY(mkz_base_hash(pack_base_read, b, b->n - 1, S->raw_size, &h));
        MK_TRY(mkz_w_add_delta(w, k, h));
    }
    return MK_OK;
}

mk_status mk_mkz_pack(const char *in, const char *out_path, const mk_mkz_pack_opts *o, mk_mkz_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    mk_source *src = NULL;
    MK_TRY(mk_safetensors_open(in, &src)); /* validates the model and gives its tensor list */
    pack_job job = {0};
    pack_base pb = {o->base, NULL, 0};
    mkz_writer *w = NULL;
    mk_status s = pack_list(in, &job);
    if (s == MK_OK) s = mkz_w_open(out_path, o->level, 0, &w);
    if (s == MK_OK) {
        w->pack = true;
        w->progress = o->progress;
        w->pctx = o->progress_ctx;
    }
    for (size_t i = 0; i < job.n && s == MK_OK; i++) s = pack_declare(w, &job.f[i]);
    if (s == MK_OK) s = pack_model(w, &job, src, in);
    if (s == MK_OK && o->base) s = pack_deltas(w, &pb, o->base_hint);
    if (s == MK_OK) s = mkz_w_compress_range(w, 0, (uint32_t)w->ix.n_blocks);
    if (s == MK_OK) s = mkz_w_finish(w);
    if (s == MK_OK) {
        stats->files = w->ix.n_files;
        stats->tensors = w->ix.n_model;
        for (size_t f = 0; f < w->ix.n_files; f++) stats->raw_bytes += w->ix.files[f].size;
        stats->container_bytes = w->pos;
        stats->deltas = w->ix.n_delta;
    }
    mkz_w_close(w);
    pack_job_free(&job);
    free(pb.idx);
    mk_source_close(src);
    return s;
}
