/* mkz_sink.c - the streaming .mkz sink: a merge or quantize output written straight into a
 * container. Tensor bytes arrive in any order from any thread; a block is compressed as
 * soon as it is complete and appended at its turn. commit() adds the safetensors shards
 * (and index) that unpack restores and reads everything back to hash it. See mkz.h. */
#include "mkz_int.h"

#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

typedef struct zsink {
    mkz_writer *w;
    mk_mkz_sink_opts o;
    size_t n;          /* output tensors are streams 0..n-1 */
    bool begun, committed;
} zsink;

static mk_status zs_begin(mk_sink *k, const mk_tensor_info *t, size_t n)
{
    zsink *z = k->impl;
    for (size_t i = 0; i < n; i++) {
        uint32_t id;
        MK_TRY(mkz_w_add_stream(z->w, &t[i], 0, &id));
        MK_TRY(mkz_w_add_model(z->w, id));
    }
    z->n = n;
    z->begun = true;
    return MK_OK;
}

/* Copy `take` bytes into block j (global g) of stream S at boff; when that completes the
 * block, compress and submit it. */
static mk_status zs_fill(mkz_writer *w, const mk_mkz_stream *S, uint32_t j, uint64_t boff, const uint8_t *src,
                         uint64_t take, uint64_t off)
{
    uint32_t g = S->first_block + j;
    uint64_t braw = mkz_blk_raw(S, j);
    mkz_wblock *b = &w->wb[g];
    pthread_mutex_lock(&w->mu);
    mk_status s = w->err ? mkz_w_err(w) : MK_OK;
    if (s == MK_OK && b->state > MKZ_WB_FILLING)
        s = mk_error(MK_ERR_IO, "%s: tensor %s: bytes at %llu written after their block was complete", w->path, S->name,
                     (unsigned long long)off);
    if (s == MK_OK && !b->raw) {
        if (!(b->raw = mk_malloc((size_t)braw))) s = MK_ERR_NOMEM;
        else b->state = MKZ_WB_FILLING;
    }
    uint8_t *dst = b->raw;
    pthread_mutex_unlock(&w->mu);
    MK_TRY(s);
    memcpy(dst + boff, src, (size_t)take); /* disjoint ranges: no lock needed */
    pthread_mutex_lock(&w->mu);
    b->filled += take;
    uint8_t *full = NULL;
    if (b->filled > braw)
        s = mk_error(MK_ERR_IO, "%s: tensor %s: block %u received %llu bytes for %llu (overlapping writes)", w->path,
                     S->name, j, (unsigned long long)b->filled, (unsigned long long)braw);
    else if (b->filled == braw) {
        full = b->raw;
        b->raw = NULL;
        b->state = MKZ_WB_FULL;
    }
    pthread_mutex_unlock(&w->mu);
    MK_TRY(s);
    if (full) {
        mkz_wctx *c = mkz_w_take(w);
        s = c ? mkz_compress_submit(w, c, g, full) : MK_ERR_NOMEM;
        mkz_pool_return(&w->cctx, c);
        free(full);
    }
    return s;
}

static mk_status zs_write(mk_sink *k, size_t i, uint64_t off, const void *data, uint64_t len)
{
    zsink *z = k->impl;
    mkz_writer *w = z->w;
    if (i >= z->n) MK_BUG("write to an undeclared tensor");
    const mk_mkz_stream *S = &w->ix.streams[i];
    if (off > S->raw_size || len > S->raw_size - off) MK_BUG("write past the end of an output tensor");
    uint64_t bb = (uint64_t)S->block_elems * S->es;
    const uint8_t *src = data;
    while (len) {
        uint32_t j = (uint32_t)(off / bb);
        uint64_t boff = off - (uint64_t)j * bb, braw = mkz_blk_raw(S, j);
        uint64_t take = braw - boff < len ? braw - boff : len;
        MK_TRY(zs_fill(w, S, j, boff, src, take, off));
        src += take;
        off += take;
        len -= take;
    }
    return MK_OK;
}

static mk_status zs_tensor_done(mk_sink *k, size_t i)
{
    zsink *z = k->impl;
    mkz_writer *w = z->w;
    const mk_mkz_stream *S = &w->ix.streams[i];
    pthread_mutex_lock(&w->mu);
    mk_status s = w->err ? mkz_w_err(w) : MK_OK;
    for (uint32_t j = 0; j < S->n_blocks && s == MK_OK; j++) {
        const mkz_wblock *b = &w->wb[S->first_block + j];
        if (b->state < MKZ_WB_FULL)
            s = mk_error(MK_ERR_IO, "%s: tensor %s: block %u has %llu of %llu bytes at tensor_done", w->path, S->name, j,
                         (unsigned long long)b->filled, (unsigned long long)mkz_blk_raw(S, j));
    }
    pthread_mutex_unlock(&w->mu);
    return s;
}

static mk_status zs_put_file(mkz_writer *w, const char *name, const void *data, size_t len)
{
    uint32_t id, f;
    MK_TRY(mkz_w_put_bytes(w, data, len, &id));
    MK_TRY(mkz_w_add_file(w, name, &id, 1, &f));
    w->ix.files[f].hash = w->ix.streams[id].hash;
    return MK_OK;
}

static mk_status zs_add_file(mk_sink *k, const char *name, const void *data, size_t len)
{
    zsink *z = k->impl;
    return zs_put_file(z->w, name, data, len);
}

static mk_status out_file_add(mk_sink *k, const mk_mkz_file *F)
{
    mk_out_file *o = &k->out_files[k->n_out_files];
    o->name = mk_strdup(F->name);
    o->size = F->size;
    mk_hash128_hex(F->hash, o->hash);
    if (!o->name) return MK_ERR_NOMEM;
    k->n_out_files++;
    return MK_OK;
}

/* The shards of layout L as files: each its header (a new byte stream) then its tensors
 * (t: the output tensors, offsets filled in) in file order; their ids into shard_file. */
static mk_status add_shards(zsink *z, const mk_st_layout *L, mk_tensor_info *t, uint32_t *shard_file)
{
    mkz_writer *w = z->w;
    size_t *order = mk_calloc(z->n ? z->n : 1, sizeof *order);
    uint32_t *parts = mk_calloc(z->n + 1, sizeof *parts);
    mk_status s = order && parts ? MK_OK : MK_ERR_NOMEM;
    mk_buf hb = {0};
    for (size_t sh = 0; sh < L->n_shards && s == MK_OK; sh++) {
        hb.len = 0;
        uint8_t len8[8];
        uint64_t hl = L->header[sh].len;
        for (int b = 0; b < 8; b++) len8[b] = (uint8_t)(hl >> (8 * b));
        mk_buf_put(&hb, len8, 8);
        mk_buf_put(&hb, L->header[sh].data, L->header[sh].len);
        if (hb.failed) s = MK_ERR_NOMEM;
        if (s == MK_OK) s = mkz_w_put_bytes(w, hb.data, hb.len, &parts[0]);
        size_t m = 0;
        for (size_t i = 0; i < z->n; i++) {
            t[i].offset = L->offset[i];
            if (L->shard_of[i] == sh) order[m++] = i;
        }
        qsort_r(order, m, sizeof *order, mkz_cmp_by_offset, t);
        for (size_t q = 0; q < m; q++) parts[q + 1] = (uint32_t)order[q];
        if (s == MK_OK) s = mkz_w_add_file(w, L->names[sh], parts, m + 1, &shard_file[sh]);
    }
    mk_buf_free(&hb);
    free(order);
    free(parts);
    return s;
}

/* Read back what was written: tensor and shard hashes, and a check of every block. */
static mk_status read_back(mkz_writer *w, const uint32_t *shard_file, size_t n_shards)
{
    mkz_in in = {w->fd, NULL, w->pos, w->path, 0, NULL};
    mkz_walker wk;
    mk_status s = mkz_walker_init(&wk, &in, &w->ix, true);
    for (size_t sh = 0; sh < n_shards && s == MK_OK; sh++) s = mkz_walk_file(&wk, shard_file[sh], NULL, NULL);
    mkz_walker_free(&wk);
    if (s != MK_OK) mk_error_prefix(s, "reading back the compressed output");
    return s;
}

/* The tensor data is complete: add the safetensors shards (header + tensors in file
 * order) and index that unpack restores, read every block back to compute the tensor
 * and shard hashes, and report the shards as the sink's files. */
static mk_status zs_commit(mk_sink *k)
{
    zsink *z = k->impl;
    mkz_writer *w = z->w;
    if (!z->begun || z->committed) MK_BUG("commit without begin, or twice");
    for (size_t i = 0; i < z->n; i++) MK_TRY(zs_tensor_done(k, i));
    if (w->err) return mkz_w_err(w);
    if (w->next_emit != w->ix.n_blocks) MK_BUG("commit with blocks not yet written");
    mk_tensor_info *t = mk_calloc(z->n ? z->n : 1, sizeof *t);
    if (!t) return MK_ERR_NOMEM;
    for (size_t i = 0; i < z->n; i++) t[i] = w->ix.streams[i].t;
    mk_st_layout L;
    mk_status s = mk_st_layout_build(t, z->n, z->o.shard_size, NULL, &L);
    if (s != MK_OK) {
        free(t);
        return s;
    }
    uint32_t *shard_file = mk_calloc(L.n_shards, sizeof *shard_file);
    k->out_files = mk_calloc(L.n_shards + 1, sizeof *k->out_files);
    if (!shard_file || !k->out_files) s = MK_ERR_NOMEM;
    if (s == MK_OK) s = add_shards(z, &L, t, shard_file);
    if (s == MK_OK && L.n_shards > 1) {
        mk_buf ij = {0};
        s = mk_st_index_json(t, z->n, L.shard_of, (const char *const *)L.names, &ij);
        if (s == MK_OK) s = zs_put_file(w, "model.safetensors.index.json", ij.data, ij.len);
        mk_buf_free(&ij);
    }
    if (s == MK_OK) s = read_back(w, shard_file, L.n_shards);
    for (size_t sh = 0; sh < L.n_shards && s == MK_OK; sh++) s = out_file_add(k, &w->ix.files[shard_file[sh]]);
    if (s == MK_OK && L.n_shards > 1) s = out_file_add(k, &w->ix.files[w->ix.n_files - 1]);
    z->committed = s == MK_OK;
    free(shard_file);
    free(t);
    mk_st_layout_free(&L);
    return s;
}

static mk_status zs_finish(mk_sink *k)
{
    zsink *z = k->impl;
    if (!z->committed) MK_BUG("finish before commit");
    return mkz_w_finish(z->w);
}

static void zs_close(mk_sink *k)
{
    if (!k) return;
    zsink *z = k->impl;
    if (z) {
        mkz_w_close(z->w);
        free(z);
    }
    for (size_t i = 0; i < k->n_out_files; i++) free(k->out_files[i].name);
    free(k->out_files);
    free(k->dir);
    free(k);
}

static const mk_sink_ops zs_ops = {zs_begin, NULL, zs_write, zs_tensor_done, zs_add_file, zs_commit, zs_close, zs_finish};

mk_status mk_mkz_sink(const char *path, const mk_mkz_sink_opts *o, mk_sink **out)
{
    *out = NULL;
    mk_sink *k = mk_calloc(1, sizeof *k);
    zsink *z = mk_calloc(1, sizeof *z);
    if (!k || !z) {
        free(k);
        free(z);
        return MK_ERR_NOMEM;
    }
    k->ops = &zs_ops;
    k->impl = z;
    z->o = *o;
    k->dir = mk_strdup(path);
    mk_status s = k->dir ? mkz_w_open(path, o->level, o->pending_max, &z->w) : MK_ERR_NOMEM;
    if (s != MK_OK) {
        zs_close(k);
        return s;
    }
    *out = k;
    return MK_OK;
}
