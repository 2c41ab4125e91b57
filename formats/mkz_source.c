/* mkz_source.c - a .mkz container as a tensor source (reads decode only the blocks they
 * touch, through a small cache of decoded blocks), and whole-container verify and unpack.
 * See mkz.h. */
#include "mkz_int.h"

#include "../core/mk_thread.h"
#include "modeldir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct cache_ent {
    uint32_t block;  /* global block id */
    bool valid;
    uint32_t refs;
    uint64_t tick;
    uint8_t *data;
} cache_ent;

typedef struct mkz_src {
    mkz_in in;
    mk_mkz_index ix;
    char **aux;               /* NULL-terminated */
    mkz_pool dctx;            /* mkz_dctx */
    pthread_mutex_t mu;       /* guards the cache */
    cache_ent *cache;
    size_t n_cache;
    uint64_t tick;
    mkz_base base;            /* delta containers: in.base */
    mk_source *base_src;
    size_t *base_idx;         /* [ix.n_delta]: the base's tensor for each delta record */
} mkz_src;

static const mk_source_ops mkz_ops;

static mk_status decode_to(mkz_src *z, uint32_t k, uint32_t j, uint8_t *out)
{
    mkz_dctx *c = mkz_pool_get(&z->dctx);
    if (!c && !(c = mk_calloc(1, sizeof *c))) return MK_ERR_NOMEM;
    mk_status s = mkz_block_decode(&z->in, &z->ix, k, j, c, out);
    mkz_pool_return(&z->dctx, c);
    return s;
}

/* A decoded block, shared: reads of part of a block (row windows, chunks that do not
 * line up with blocks) decode it once. When every entry is in use the block is decoded
 * into *temp instead, which the caller frees. */
static mk_status cache_get(mkz_src *z, uint32_t k, uint32_t j, cache_ent **out, uint8_t **temp)
{
    uint32_t g = z->ix.streams[k].first_block + j;
    *out = NULL;
    *temp = NULL;
    pthread_mutex_lock(&z->mu);
    for (size_t e = 0; e < z->n_cache; e++)
        if (z->cache[e].valid && z->cache[e].block == g) {
            z->cache[e].refs++;
            z->cache[e].tick = ++z->tick;
            *out = &z->cache[e];
            pthread_mutex_unlock(&z->mu);
            return MK_OK;
        }
    pthread_mutex_unlock(&z->mu);
    uint8_t *buf = mk_malloc((size_t)mkz_blk_raw(&z->ix.streams[k], j));
    if (!buf) return MK_ERR_NOMEM;
    mk_status s = decode_to(z, k, j, buf);
    if (s != MK_OK) {
        free(buf);
        return s;
    }
    pthread_mutex_lock(&z->mu);
    cache_ent *v = NULL;
    for (size_t e = 0; e < z->n_cache; e++) {
        cache_ent *c = &z->cache[e];
        if (c->refs) continue;
        if (!v || !c->valid || (v->valid && c->tick < v->tick)) v = c;
    }
    if (v) {
        free(v->data);
        v->data = buf;
        v->block = g;
        v->valid = true;
        v->refs = 1;
        v->tick = ++z->tick;
        *out = v;
    } else {
        *temp = buf;
    }
    pthread_mutex_unlock(&z->mu);
    return MK_OK;
}

static void cache_put(mkz_src *z, cache_ent *e)
{
    if (!e) return;
    pthread_mutex_lock(&z->mu);
    e->refs--;
    pthread_mutex_unlock(&z->mu);
}

static mk_status src_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    mkz_src *z = s->impl;
    uint32_t k = z->ix.model[i];
    const mk_mkz_stream *S = &z->ix.streams[k];
    if (off > S->raw_size || len > S->raw_size - off) MK_BUG("read past the end of a tensor");
    uint64_t bb = (uint64_t)S->block_elems * S->es;
    uint8_t *d = dst;
    while (len) {
        uint32_t j = (uint32_t)(off / bb);
        uint64_t boff = off - (uint64_t)j * bb, braw = mkz_blk_raw(S, j);
        uint64_t take = braw - boff < len ? braw - boff : len;
        if (boff == 0 && take == braw) {
            MK_TRY(decode_to(z, k, j, d)); /* whole block: straight into the caller's buffer */
        } else {
            cache_ent *e;
            uint8_t *temp;
            MK_TRY(cache_get(z, k, j, &e, &temp));
            memcpy(d, (temp ? temp : e->data) + boff, (size_t)take);
            free(temp);
            cache_put(z, e);
        }
        d += take;
        off += take;
        len -= take;
    }
    return MK_OK;
}

typedef struct membuf {
    uint8_t *p;
    size_t len;
} membuf;

static mk_status to_membuf(void *ctx, const uint8_t *data, size_t len)
{
    membuf *m = ctx;
    memcpy(m->p + m->len, data, len);
    m->len += len;
    return MK_OK;
}

static mk_status src_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    mkz_src *z = s->impl;
    *data = NULL;
    if (len) *len = 0;
    for (uint32_t f = 0; f < z->ix.n_files; f++) {
        mk_mkz_file *F = &z->ix.files[f];
        if (strcmp(F->name, name) != 0) continue;
        if (F->size > cap || F->size >= SIZE_MAX)
            return mk_error(MK_ERR_NOMEM, "%s: %s is %llu bytes, over the %llu-byte limit for this file", s->path, name,
                            (unsigned long long)F->size, (unsigned long long)cap);
        membuf m = {mk_malloc((size_t)F->size + 1), 0};
        if (!m.p) return MK_ERR_NOMEM;
        mkz_walker w;
        mk_status st = mkz_walker_init(&w, &z->in, &z->ix, false);
        if (st == MK_OK) st = mkz_walk_file(&w, f, to_membuf, &m);
        mkz_walker_free(&w);
        if (st != MK_OK) {
            free(m.p);
            return st;
        }
        m.p[m.len] = 0;
        *data = (char *)m.p;
        if (len) *len = m.len;
        return MK_OK;
    }
    return MK_OK;
}

static const char *const *src_aux_list(mk_source *s)
{
    mkz_src *z = s->impl;
    return (const char *const *)z->aux;
}

static void src_close(mk_source *s)
{
    if (!s) return;
    mkz_src *z = s->impl;
    if (z) {
        if (z->in.fd >= 0) close(z->in.fd);
        mk_mkz_index_free(&z->ix);
        for (char **a = z->aux; a && *a; a++) free(*a);
        free(z->aux);
        mkz_pool_free(&z->dctx);
        for (size_t e = 0; e < z->n_cache; e++) free(z->cache[e].data);
        free(z->cache);
        pthread_mutex_destroy(&z->mu);
        pthread_mutex_destroy(&z->base.mu);
        free(z->base.missing);
        free(z->base.checked);
        free(z->base_idx);
        mk_source_close(z->base_src);
        free(z);
    }
    mk_source_free_fields(s);
}

static const mk_source_ops mkz_ops = {src_read, NULL, NULL, NULL, src_aux_read, src_aux_list, src_close, NULL};

bool mk_mkz_probe(const char *path)
{
    if (!mk_is_file(path)) return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    unsigned char m[8];
    bool ok = pread(fd, m, 8, 0) == 8 && memcmp(m, mkz_magic, 8) == 0;
    close(fd);
    return ok;
}

/* Open path and parse its structure into z. */
static mk_status src_parse(mkz_src *z, const char *path, const char *what)
{
    struct stat st;
    z->in.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (z->in.fd < 0) return mk_error(MK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(z->in.fd, &st) != 0 || !S_ISREG(st.st_mode)) return mk_error(MK_ERR_FORMAT, "%s: not a regular file", path);
    z->in.size = (uint64_t)st.st_size;
    z->in.what = what;
    return mkz_parse_container(&z->in, &MK_MKZ_LIMITS_DEFAULT, &z->ix);
}

/* The source's tensor list (the model's) and auxiliary files. */
static mk_status src_fill(mk_source *s, mkz_src *z)
{
    s->tensors = mk_calloc(z->ix.n_model ? z->ix.n_model : 1, sizeof *s->tensors);
    z->aux = mk_calloc(z->ix.n_files + 1, sizeof *z->aux);
    z->n_cache = (size_t)(2 * mk_threads_get() + 2);
    z->cache = mk_calloc(z->n_cache, sizeof *z->cache);
    if (!s->tensors || !z->aux || !z->cache) return MK_ERR_NOMEM;
    for (size_t i = 0; i < z->ix.n_model; i++) {
        mk_tensor_info *t = &s->tensors[i];
        *t = z->ix.streams[z->ix.model[i]].t;
        t->file = 0;
        t->offset = 0;
        if (!(t->name = mk_strdup(t->name))) return MK_ERR_NOMEM;
        s->n_tensors++;
    }
    /* auxiliary files as a model folder lists them: not weights, not hidden */
    for (size_t f = 0, n = 0; f < z->ix.n_files; f++) {
        const char *nm = z->ix.files[f].name;
        if (nm[0] == '.' || mk_modeldir_is_weight_name(nm)) continue;
        if (!(z->aux[n++] = mk_strdup(nm))) return MK_ERR_NOMEM;
    }
    return mk_name_index_build(&s->index, s->tensors, s->n_tensors, NULL); /* unique: checked by the parser */
}

mk_status mk_mkz_open(const char *path, mk_source **out)
{
    *out = NULL;
    mk_source *s = mk_calloc(1, sizeof *s);
    mkz_src *z = mk_calloc(1, sizeof *z);
    if (!s || !z) {
        free(s);
        free(z);
        return MK_ERR_NOMEM;
    }
    pthread_mutex_init(&z->mu, NULL);
    pthread_mutex_init(&z->base.mu, NULL);
    mkz_pool_init(&z->dctx, mkz_dctx_destroy);
    z->in.fd = -1;
    z->in.base = &z->base;
    s->ops = &mkz_ops;
    s->impl = z;
    s->path = mk_strdup(path);
    s->kind = mk_strdup("mkz");
    s->files = mk_calloc(1, sizeof *s->files);
    mk_status r = (s->path && s->kind && s->files) ? MK_OK : MK_ERR_NOMEM;
    if (r == MK_OK) {
        s->files[0] = mk_strdup(path);
        s->n_files = s->files[0] ? 1 : 0;
        if (!s->files[0]) r = MK_ERR_NOMEM;
    }
    if (r == MK_OK) r = src_parse(z, path, s->path);
    if (r == MK_OK) r = src_fill(s, z);
    if (r == MK_OK && !(z->base.checked = mk_calloc(z->ix.n_delta ? z->ix.n_delta : 1, 1))) r = MK_ERR_NOMEM;
    if (r != MK_OK) {
        src_close(s);
        return r;
    }
    *out = s;
    return MK_OK;
}

static mk_status base_read(void *ctx, size_t d, uint64_t off, uint64_t len, void *dst)
{
    mkz_src *z = ctx;
    return z->base_src->ops->read(z->base_src, z->base_idx[d], off, len, dst);
}

mk_status mk_mkz_attach_base(mk_source *s, mk_source *base, const char *missing)
{
    if (s->ops != &mkz_ops) MK_BUG("a base attached to a source that is not a container");
    mkz_src *z = s->impl;
    if (missing && !(z->base.missing = mk_strdup(missing))) {
        mk_source_close(base);
        return MK_ERR_NOMEM;
    }
    if (!base) return MK_OK;
    if (mk_mkz_source_index(base) && mk_mkz_source_index(base)->n_delta) {
        mk_status e = mk_error(MK_ERR_UNSUPPORTED, "%s: the base of %s is itself a delta container (unpack it first)",
                               base->path, s->path);
        mk_source_close(base);
        return e;
    }
    z->base_src = base;
    if (!(z->base_idx = mk_calloc(z->ix.n_delta ? z->ix.n_delta : 1, sizeof *z->base_idx))) return MK_ERR_NOMEM;
    const mk_mkz_index *bx = mk_mkz_source_index(base);
    for (size_t d = 0; d < z->ix.n_delta; d++) {
        const mk_tensor_info *t = &z->ix.streams[z->ix.delta[d].stream].t;
        long i = mk_source_find(base, t->name);
        const mk_tensor_info *b = i >= 0 ? &base->tensors[i] : NULL;
        if (!b || b->dtype != t->dtype || !mk_shape_eq(b, t)) {
            char want[160], got[160];
            mk_shape_str(t, want);
            if (b) mk_shape_str(b, got);
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s is stored against a base tensor %s %s, base %s has %s%s%s (wrong base)",
                            s->path, t->name, mk_dtype_name(t->dtype), want, base->path, b ? mk_dtype_name(b->dtype) : "",
                            b ? " " : "no such tensor", b ? got : "");
        }
        z->base_idx[d] = (size_t)i;
        /* a container base records its tensors' hashes: no need to read them to check */
        if (bx && mk_hash128_eq(bx->streams[bx->model[i]].hash, z->ix.delta[d].base_hash)) z->base.checked[d] = 1;
    }
    z->base.read = base_read;
    z->base.ctx = z;
    return MK_OK;
}

const mk_mkz_index *mk_mkz_source_index(const mk_source *s)
{
    return s && s->ops == &mkz_ops ? &((const mkz_src *)s->impl)->ix : NULL;
}

uint64_t mk_mkz_source_bytes_read(const mk_source *s)
{
    if (!s || s->ops != &mkz_ops) return 0;
    const mkz_src *z = s->impl;
    return __atomic_load_n(&z->in.bytes_read, __ATOMIC_RELAXED);
}

/* Walk every file (and the streams of none) of source s in order, reporting progress. */
static mk_status src_walk_all(mk_source *s, mk_mkz_progress_fn progress, void *pctx,
                              mk_status (*open_file)(void *ctx, uint32_t f), mkz_walk_fn fn,
                              mk_status (*close_file)(void *ctx, uint32_t f), void *ctx)
{
    if (s->ops != &mkz_ops) return mk_error(MK_ERR_USAGE, "%s: not a .mkz container", s->path);
    mkz_src *z = s->impl;
    mkz_walker w;
    MK_TRY(mkz_walker_init(&w, &z->in, &z->ix, false));
    w.progress = progress;
    w.pctx = pctx;
    mk_status st = mkz_walk_all(&w, open_file, fn, close_file, ctx);
    mkz_walker_free(&w);
    return st;
}

mk_status mk_mkz_verify(mk_source *s, mk_mkz_progress_fn progress, void *ctx)
{
    return src_walk_all(s, progress, ctx, NULL, NULL, NULL, NULL);
}

typedef struct unpack_ctx {
    mkz_src *z;
    const char *dir;
    char *path;
    int fd;
} unpack_ctx;

static mk_status unpack_open(void *ctx, uint32_t f)
{
    unpack_ctx *u = ctx;
    free(u->path);
    u->path = mk_path_join(u->dir, u->z->ix.files[f].name);
    if (!u->path) return MK_ERR_NOMEM;
    u->fd = open(u->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (u->fd < 0) return mk_error(MK_ERR_IO, "%s: cannot create: %s", u->path, strerror(errno));
    return MK_OK;
}

static mk_status unpack_write(void *ctx, const uint8_t *data, size_t len)
{
    unpack_ctx *u = ctx;
    return mk_write_all(u->fd, data, len, u->path);
}

static mk_status unpack_close(void *ctx, uint32_t f)
{
    unpack_ctx *u = ctx;
    (void)f;
    if (u->fd < 0) return MK_OK;
    mk_status s = MK_OK;
    if (fsync(u->fd) != 0) s = mk_error(MK_ERR_IO, "%s: fsync failed: %s", u->path, strerror(errno));
    if (close(u->fd) != 0 && s == MK_OK) s = mk_error(MK_ERR_IO, "%s: close failed: %s", u->path, strerror(errno));
    u->fd = -1;
    return s;
}

mk_status mk_mkz_unpack(mk_source *s, const char *dir, mk_mkz_progress_fn progress, void *ctx)
{
    unpack_ctx u = {s->impl, dir, NULL, -1};
    mk_status st = src_walk_all(s, progress, ctx, unpack_open, unpack_write, unpack_close, &u);
    if (u.fd >= 0) close(u.fd);
    free(u.path);
    return st;
}
