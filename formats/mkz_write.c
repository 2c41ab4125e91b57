/* mkz_write.c - the .mkz writer core: streams and files declared, blocks compressed
 * anywhere (any thread, any order), appended in block order, then the index and footer.
 * The container's bytes do not depend on the thread count: every block is compressed
 * independently and appended at its turn. See mkz_int.h. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_literalCompressionMode (a stable-ABI parameter value) */
#include "mkz_int.h"

#include "../core/mk_parallel.h"
#include "../core/mk_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENTROPY_LEVEL (-1000) /* zstd "fast" acceleration: practically no matches (3.4 of the reference notes) */

/* ---- compression contexts ------------------------------------------------------------------- */

static void wctx_free(void *o)
{
    mkz_wctx *c = o;
    if (!c) return;
    ZSTD_freeCCtx(c->ent);
    ZSTD_freeCCtx(c->lz);
    free(c->planes);
    free(c->out);
    free(c->tmp);
    free(c->alt);
    free(c->base);
    free(c->x);
    free(c);
}

static mkz_wctx *wctx_new(void)
{
    mkz_wctx *c = mk_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ent = ZSTD_createCCtx();
    c->lz = ZSTD_createCCtx();
    if (!c->ent || !c->lz) {
        wctx_free(c);
        mk_error(MK_ERR_NOMEM, "out of memory for a zstd context");
        return NULL;
    }
    int lvl = ZSTD_minCLevel() > ENTROPY_LEVEL ? ZSTD_minCLevel() : ENTROPY_LEVEL;
    ZSTD_CCtx_setParameter(c->ent, ZSTD_c_compressionLevel, lvl);
#if defined(ZSTD_c_literalCompressionMode) && ZSTD_VERSION_NUMBER >= 10501 /* ZSTD_ps_enable since 1.5.1 */
    ZSTD_CCtx_setParameter(c->ent, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
#else
    ZSTD_CCtx_setParameter(c->ent, ZSTD_c_compressionLevel, 1); /* no literal-only mode: plain level 1 */
#endif
    return c;
}

mkz_wctx *mkz_w_take(mkz_writer *w)
{
    mkz_wctx *c = mkz_pool_get(&w->cctx);
    if (!c) c = wctx_new();
    if (c) c->home = &w->cctx;
    return c;
}

/* Record the first failure; later calls report it again. Call with mu held. */
static mk_status w_fail_locked(mkz_writer *w, mk_status s)
{
    if (w->err == MK_OK) {
        w->err = s;
        snprintf(w->errmsg, sizeof w->errmsg, "%s", mk_errmsg());
    }
    return s;
}

mk_status mkz_w_err(mkz_writer *w) { return mk_error(w->err, "%s", w->errmsg); }

/* ---- compressing a block -------------------------------------------------------------------- */

static mk_status lz_compress(mkz_wctx *c, int level, uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t *out)
{
    if (c->lz_level != level) {
        ZSTD_CCtx_setParameter(c->lz, ZSTD_c_compressionLevel, level);
        c->lz_level = level;
    }
    size_t r = ZSTD_compress2(c->lz, dst, cap, src, n);
    if (ZSTD_isError(r)) return mk_error(MK_ERR_NOMEM, "zstd compression failed: %s", ZSTD_getErrorName(r));
    *out = r;
    return MK_OK;
}

/* One plane into dst (capacity ZSTD_compressBound(n)). Tensor planes: plane codec 2 (rANS)
 * when the plane's order-0 entropy promises a gain; zstd's entropy mode (no useful match
 * search, Huffman-coded literals) is also tried on small planes, where the rANS header
 * weighs, and on planes so skewed (ratio > 3.5) that runs are likely, where LZ at the level
 * is tried too, as it is at levels >= 2 on planes that gain at all (mantissa planes are
 * noise: no coder finds anything there). Byte streams (JSON, text): LZ at level >= 3. The
 * smallest is kept; a plane that gains less than 5 % is stored. */
#define SMALL_PLANE (1u << 16)
static mk_status plane_encode(mkz_writer *w, mkz_wctx *c, bool tensor, const uint8_t *src, size_t n, uint8_t *dst,
                              uint8_t *method, uint32_t *csize)
{
    size_t cap = ZSTD_compressBound(n), best = SIZE_MAX, keep = n - n / 20;
    uint8_t m = MKZ_METHOD_STORED;
    if (tensor) {
        uint32_t hist[256];
        /* a plane of noise (mantissa bits) is known from every 16th byte: stored, no more work */
        size_t ns = 0;
        if (n >= SMALL_PLANE) {
            memset(hist, 0, sizeof hist);
            for (size_t i = 0; i < n; i += 16, ns++) hist[src[i]]++;
        }
        if (ns && mkz_rans_estimate(hist, ns) >= ns - ns / 20) {
            memcpy(dst, src, n);
            *method = MKZ_METHOD_STORED;
            *csize = (uint32_t)n;
            return MK_OK;
        }
        mkz_rans_hist(src, n, hist);
        if (mkz_rans_estimate(hist, n) < keep) {
            size_t r = mkz_rans_encode(src, n, hist, dst, keep); /* n <= cap: dst has room */
            if (r) {
                best = r;
                m = MKZ_METHOD_RANS;
            }
        }
        if (n < SMALL_PLANE || (uint64_t)best * 7 < (uint64_t)n * 2) {
            size_t r = ZSTD_compress2(c->ent, c->tmp, cap, src, n);
            if (ZSTD_isError(r)) return mk_error(MK_ERR_NOMEM, "zstd compression failed: %s", ZSTD_getErrorName(r));
            if (r < best) {
                memcpy(dst, c->tmp, r);
                best = r;
                m = MKZ_METHOD_ZSTD;
            }
        }
    }
    bool gains = best < keep;
    if (!tensor || (w->level >= 2 && gains) || (uint64_t)best * 7 < (uint64_t)n * 2) {
        uint8_t *out = tensor ? c->tmp : dst;
        size_t r = 0;
        MK_TRY(lz_compress(c, tensor ? w->level : (w->level > 3 ? w->level : 3), out, cap, src, n, &r));
        if (r < best) {
            if (out != dst) memcpy(dst, out, r);
            best = r;
            m = MKZ_METHOD_ZSTD;
        }
    }
    if (best >= keep) {
        memcpy(dst, src, n);
        m = MKZ_METHOD_STORED;
        best = n;
    }
    *method = m;
    *csize = (uint32_t)best;
    return MK_OK;
}

/* Compress block j of stream k from its raw bytes into c->out; fill the record (but
 * not its offset). */
static mk_status block_encode(mkz_writer *w, mkz_wctx *c, uint32_t k, uint32_t j, const uint8_t *raw, mk_mkz_block *rec)
{
    const mk_mkz_stream *S = &w->ix.streams[k];
    uint64_t n = mkz_blk_elems(S, j), pr = mkz_plane_raw(S, j);
    size_t bound = ZSTD_compressBound((size_t)pr);
    const uint8_t *pl[MKZ_MAX_PLANES];
    if (S->n_planes > 1) {
        MK_TRY(mkz_grow(&c->planes, &c->planes_cap, (size_t)(pr * S->n_planes)));
        if (S->layout == MKZ_LAYOUT_FIELDS && S->n_planes == 2) {
            mkz_fields_split(raw, (size_t)n, c->planes);
        } else {
            mkz_planes_split(raw, S->n_planes, (size_t)n, c->planes);
            if (S->layout == MKZ_LAYOUT_FIELDS) { /* f32: the top two bytes as fields, in place */
                uint8_t *lo = c->planes + (S->n_planes - 2) * pr, *hi = lo + pr;
                mkz_fields_from_bytes(lo, hi, (size_t)n, lo, hi);
            }
        }
        for (unsigned p = 0; p < S->n_planes; p++) pl[p] = c->planes + p * pr;
    } else {
        pl[0] = raw;
    }
    MK_TRY(mkz_grow(&c->out, &c->out_cap, bound * S->n_planes));
    MK_TRY(mkz_grow(&c->tmp, &c->tmp_cap, bound));
    memset(rec, 0, sizeof *rec);
    uint64_t at = 0;
    for (unsigned p = 0; p < S->n_planes; p++) {
        MK_TRY(plane_encode(w, c, S->is_tensor, pl[p], (size_t)pr, c->out + at, &rec->method[p], &rec->plane_csize[p]));
        at += rec->plane_csize[p];
    }
    rec->csize = (uint32_t)at;
    rec->hash = mk_hash64(c->out, (size_t)at);
    return MK_OK;
}

/* ---- appending blocks in order -------------------------------------------------------------- */

/* pack: stream and file hashes from the source bytes, in file order, as blocks go out. */
static mk_status pack_hash(mkz_writer *w, uint32_t k, uint32_t j)
{
    mk_mkz_stream *S = &w->ix.streams[k];
    const mkz_wsrc *src = &w->src[k];
    uint64_t bb = (uint64_t)S->block_elems * S->es, len = mkz_blk_raw(S, j);
    const uint8_t *raw = src->base + (uint64_t)j * bb;
    if (j == 0 && !(w->sh = mk_hasher_new())) return MK_ERR_NOMEM;
    mk_hasher_update(w->sh, raw, (size_t)len);
    if (S->file != w->fh_file) {
        if (w->fh) w->ix.files[w->fh_file].hash = mk_hasher_digest(w->fh);
        mk_hasher_free(w->fh);
        if (!(w->fh = mk_hasher_new())) return MK_ERR_NOMEM;
        w->fh_file = S->file;
    }
    mk_hasher_update(w->fh, raw, (size_t)len);
    if (src->map) mk_map_done(src->map, src->map_off + (uint64_t)j * bb, len);
    if (j + 1 == S->n_blocks) {
        S->hash = mk_hasher_digest(w->sh);
        mk_hasher_free(w->sh);
        w->sh = NULL;
        w->items_done++;
        w->bytes_done += S->raw_size;
        if (w->progress) {
            char lab[400];
            w->progress(w->pctx, w->items_done, w->ix.n_streams, w->bytes_done, w->bytes_total,
                        mkz_stream_label(&w->ix, k, lab, sizeof lab));
        }
    }
    return MK_OK;
}

/* Append block g (the next in order). mu held. */
static mk_status emit_locked(mkz_writer *w, uint32_t g, const uint8_t *payload)
{
    mk_mkz_block *B = &w->ix.blocks[g];
    B->offset = w->pos;
    MK_TRY(mk_pwrite_all(w->fd, payload, B->csize, w->pos, w->path));
    w->pos += B->csize;
    w->wb[g].state = MKZ_WB_EMITTED;
    w->next_emit = g + 1;
    uint32_t k = w->block_stream[g];
    w->ix.streams[k].stored += B->csize;
    if (w->pack) MK_TRY(pack_hash(w, k, g - w->ix.streams[k].first_block));
    return MK_OK;
}

/* Append every finished block that is next in order. mu held. */
static mk_status drain_locked(mkz_writer *w)
{
    while (w->next_emit < w->ix.n_blocks) {
        uint32_t g = w->next_emit;
        mkz_wblock *b = &w->wb[g];
        uint32_t cs = w->ix.blocks[g].csize;
        if (b->state == MKZ_WB_READY) {
            MK_TRY(emit_locked(w, g, b->payload));
            w->pending -= cs;
            free(b->payload);
            b->payload = NULL;
        } else if (b->state == MKZ_WB_SPILLED) {
            uint8_t *buf = mk_malloc(cs ? cs : 1);
            if (!buf) return MK_ERR_NOMEM;
            mkz_in sp = {w->spill_fd, NULL, w->spill_pos, w->path, 0, NULL};
            mk_status s = mkz_in_read(&sp, b->spill_off, cs, buf);
            if (s == MK_OK) s = emit_locked(w, g, buf);
            free(buf);
            MK_TRY(s);
        } else {
            break;
        }
    }
    return MK_OK;
}

/* Hold a finished block that is not next in an unlinked spill file (made on first use). mu held. */
static mk_status spill_locked(mkz_writer *w, mkz_wblock *b, const uint8_t *payload, uint32_t csize)
{
    if (w->spill_fd < 0) {
        char *sp = mk_asprintf("%s.spill", w->path);
        if (!sp) return MK_ERR_NOMEM;
        unlink(sp);
        w->spill_fd = open(sp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        mk_status s = MK_OK;
        if (w->spill_fd < 0) s = mk_error(MK_ERR_IO, "%s: cannot create: %s", sp, strerror(errno));
        else unlink(sp); /* nameless: gone when closed, whatever happens */
        free(sp);
        MK_TRY(s);
    }
    MK_TRY(mk_pwrite_all(w->spill_fd, payload, csize, w->spill_pos, w->path));
    b->spill_off = w->spill_pos;
    w->spill_pos += csize;
    b->state = MKZ_WB_SPILLED;
    return MK_OK;
}

/* A finished block: append it now if it is next, else hold it (in memory up to
 * pending_max bytes, then in the spill file) until its turn. Thread-safe. */
static mk_status submit(mkz_writer *w, uint32_t g, const uint8_t *payload, const mk_mkz_block *rec)
{
    pthread_mutex_lock(&w->mu);
    mk_status s = w->err ? mkz_w_err(w) : MK_OK;
    if (s == MK_OK) {
        w->ix.blocks[g] = *rec;
        mkz_wblock *b = &w->wb[g];
        if (g == w->next_emit) {
            s = emit_locked(w, g, payload);
            if (s == MK_OK) s = drain_locked(w);
        } else if (w->pending + rec->csize <= w->pending_max) {
            b->payload = mk_malloc(rec->csize ? rec->csize : 1);
            if (!b->payload) s = MK_ERR_NOMEM;
            else {
                memcpy(b->payload, payload, rec->csize);
                w->pending += rec->csize;
                b->state = MKZ_WB_READY;
            }
        } else {
            s = spill_locked(w, b, payload, rec->csize);
        }
        if (s != MK_OK) w_fail_locked(w, s);
    }
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* A block of a tensor stored against the base: its bytes, their XOR with the base's and
 * their difference from the base's are each compressed, and the smallest is kept (ties go
 * to the earlier of that order, so the choice is deterministic). The result is in c->out. */
static mk_status delta_encode(mkz_writer *w, mkz_wctx *c, uint32_t k, uint32_t j, const uint8_t *raw, mk_mkz_block *rec)
{
    const mk_mkz_stream *S = &w->ix.streams[k];
    size_t n = (size_t)mkz_blk_raw(S, j);
    MK_TRY(block_encode(w, c, k, j, raw, rec));
    MK_TRY(mkz_grow(&c->base, &c->base_cap, n));
    MK_TRY(mkz_grow(&c->x, &c->x_cap, n));
    MK_TRY(w->base_read(w->base_ctx, S->delta, (uint64_t)j * S->block_elems * S->es, n, c->base));
    for (unsigned t = MKZ_XFORM_XOR; t < MKZ_XFORM_COUNT; t++) {
        memcpy(c->x, raw, n);
        mkz_xform(t, false, S->es, c->x, c->base, n);
        /* encode into the spare output buffer; keep whichever is smaller in c->out */
        uint8_t *keep = c->out;
        size_t keep_cap = c->out_cap;
        c->out = c->alt;
        c->out_cap = c->alt_cap;
        mk_mkz_block r2;
        mk_status s = block_encode(w, c, k, j, c->x, &r2);
        c->alt = c->out;
        c->alt_cap = c->out_cap;
        c->out = keep;
        c->out_cap = keep_cap;
        MK_TRY(s);
        if (r2.csize < rec->csize) {
            uint8_t *tp = c->out;
            size_t tc = c->out_cap;
            c->out = c->alt;
            c->out_cap = c->alt_cap;
            c->alt = tp;
            c->alt_cap = tc;
            *rec = r2;
            rec->transform = (uint8_t)t;
        }
    }
    return MK_OK;
}

mk_status mkz_compress_submit(mkz_writer *w, mkz_wctx *c, uint32_t g, const uint8_t *raw)
{
    uint32_t k = w->block_stream[g];
    mk_mkz_block rec;
    uint32_t j = g - w->ix.streams[k].first_block;
    mk_status s = w->ix.streams[k].delta != UINT32_MAX ? delta_encode(w, c, k, j, raw, &rec)
                                                       : block_encode(w, c, k, j, raw, &rec);
    if (s != MK_OK) {
        pthread_mutex_lock(&w->mu);
        w_fail_locked(w, s);
        pthread_mutex_unlock(&w->mu);
        return s;
    }
    return submit(w, g, c->out, &rec);
}

/* ---- declaring streams, files and the model ------------------------------------------------- */

#define GROW(arr, n, cap, want)                                                            \
    do {                                                                                   \
        if ((want) > (cap)) {                                                              \
            size_t nc_ = (cap) ? (cap) : 16;                                               \
            while (nc_ < (want)) nc_ *= 2;                                                 \
            void *np_ = mk_realloc_array((arr), nc_, sizeof *(arr));                       \
            if (!np_) return MK_ERR_NOMEM;                                                 \
            (arr) = np_;                                                                   \
            memset((arr) + (cap), 0, (nc_ - (cap)) * sizeof *(arr));                       \
            (cap) = nc_;                                                                   \
        }                                                                                  \
    } while (0)

static uint32_t tensor_block_elems(const mk_tensor_info *t)
{
    uint64_t cols = mk_tensor_cols(t);
    if (cols == 0 || cols >= MKZ_TENSOR_BLOCK_ELEMS) return MKZ_TENSOR_BLOCK_ELEMS;
    return (uint32_t)(MKZ_TENSOR_BLOCK_ELEMS / cols * cols);
}

/* Room for one more stream record and its source. */
static mk_status reserve_stream(mkz_writer *w)
{
    size_t k = w->ix.n_streams;
    if (k >= UINT32_MAX - 1) return mk_error(MK_ERR_UNSUPPORTED, "%s: too many streams", w->path);
    size_t old_cap = w->cap_streams;
    GROW(w->ix.streams, k, w->cap_streams, k + 1);
    if (w->cap_streams != old_cap) {
        mkz_wsrc *ns = mk_realloc_array(w->src, w->cap_streams, sizeof *ns);
        if (!ns) return MK_ERR_NOMEM;
        memset(ns + old_cap, 0, (w->cap_streams - old_cap) * sizeof *ns);
        w->src = ns;
    }
    return MK_OK;
}

/* Room for nb more blocks, recorded as stream k's. */
static mk_status add_blocks(mkz_writer *w, uint32_t k, uint64_t nb)
{
    if (nb > UINT32_MAX - w->ix.n_blocks) return mk_error(MK_ERR_UNSUPPORTED, "%s: too many blocks", w->path);
    size_t want = w->ix.n_blocks + (size_t)nb, old = w->cap_blocks;
    GROW(w->ix.blocks, w->ix.n_blocks, w->cap_blocks, want);
    if (w->cap_blocks != old) {
        mkz_wblock *nw = mk_realloc_array(w->wb, w->cap_blocks, sizeof *nw);
        if (!nw) return MK_ERR_NOMEM;
        w->wb = nw;
        uint32_t *nbs = mk_realloc_array(w->block_stream, w->cap_blocks, sizeof *nbs);
        if (!nbs) return MK_ERR_NOMEM;
        w->block_stream = nbs;
    }
    for (size_t g = w->ix.n_blocks; g < want; g++) {
        memset(&w->wb[g], 0, sizeof w->wb[g]);
        w->block_stream[g] = k;
    }
    w->ix.n_blocks = want;
    return MK_OK;
}

mk_status mkz_w_add_stream(mkz_writer *w, const mk_tensor_info *t, uint64_t raw_size, uint32_t *id)
{
    MK_TRY(reserve_stream(w));
    size_t k = w->ix.n_streams;
    mk_mkz_stream *S = &w->ix.streams[k];
    memset(S, 0, sizeof *S);
    S->file = MKZ_NO_FILE;
    S->delta = UINT32_MAX;
    if (t) {
        if (!mkz_dtype_code(t->dtype))
            return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: dtype %s has no .mkz code", t->name, mk_dtype_name(t->dtype));
        if (strlen(t->name) > MK_MKZ_LIMITS_DEFAULT.max_name)
            return mk_error(MK_ERR_UNSUPPORTED, "tensor %.100s...: a name of %zu bytes is over the .mkz limit of %llu",
                            t->name, strlen(t->name), (unsigned long long)MK_MKZ_LIMITS_DEFAULT.max_name);
        if (!(S->name = mk_strdup(t->name))) return MK_ERR_NOMEM;
        S->is_tensor = true;
        S->t = *t;
        S->t.name = S->name;
        S->es = mk_dtype_size(t->dtype);
        S->n_planes = S->es;
        S->layout = t->dtype == MK_BF16 || t->dtype == MK_F32 ? MKZ_LAYOUT_FIELDS : MKZ_LAYOUT_BYTES;
        S->n_elems = t->numel;
        S->raw_size = t->nbytes;
        S->block_elems = tensor_block_elems(t);
    } else {
        S->es = 1;
        S->n_planes = 1;
        S->n_elems = S->raw_size = raw_size;
        S->block_elems = MKZ_BYTES_BLOCK;
    }
    uint64_t nb = S->n_elems / S->block_elems + (S->n_elems % S->block_elems != 0);
    S->first_block = (uint32_t)w->ix.n_blocks;
    S->n_blocks = (uint32_t)nb;
    mk_status s = add_blocks(w, (uint32_t)k, nb);
    if (s != MK_OK) {
        free(S->name); /* not counted yet: mk_mkz_index_free would miss it */
        S->name = NULL;
        return s;
    }
    w->ix.n_streams = k + 1;
    w->bytes_total += S->raw_size;
    *id = (uint32_t)k;
    return MK_OK;
}

mk_status mkz_w_add_file(mkz_writer *w, const char *name, const uint32_t *parts, size_t n, uint32_t *id)
{
    if (!mkz_file_name_ok(name) || strlen(name) > 255)
        return mk_error(MK_ERR_USAGE, "'%s' cannot be stored: not a plain file name", name);
    for (size_t f = 0; f < w->ix.n_files; f++)
        if (strcmp(w->ix.files[f].name, name) == 0) return mk_error(MK_ERR_USAGE, "%s: file %s is added twice", w->path, name);
    GROW(w->ix.files, w->ix.n_files, w->cap_files, w->ix.n_files + 1);
    GROW(w->ix.parts, w->ix.n_parts, w->cap_parts, w->ix.n_parts + n);
    mk_mkz_file *F = &w->ix.files[w->ix.n_files];
    memset(F, 0, sizeof *F);
    if (!(F->name = mk_strdup(name))) return MK_ERR_NOMEM;
    F->first_part = (uint32_t)w->ix.n_parts;
    F->n_parts = (uint32_t)n;
    for (size_t q = 0; q < n; q++) {
        w->ix.parts[w->ix.n_parts++] = parts[q];
        w->ix.streams[parts[q]].file = (uint32_t)w->ix.n_files;
        F->size += w->ix.streams[parts[q]].raw_size;
    }
    if (id) *id = (uint32_t)w->ix.n_files;
    w->ix.n_files++;
    return MK_OK;
}

mk_status mkz_w_add_model(mkz_writer *w, uint32_t k)
{
    GROW(w->ix.model, w->ix.n_model, w->cap_model, w->ix.n_model + 1);
    w->ix.model[w->ix.n_model++] = k;
    return MK_OK;
}

mk_status mkz_w_set_base(mkz_writer *w, const char *hint, mk_mkz_base_read_fn read, void *ctx)
{
    size_t len = strlen(hint);
    if (len == 0 || len > MKZ_MAX_HINT || memchr(hint, 0, len))
        return mk_error(MK_ERR_USAGE, "%s: the base's path (%zu bytes) cannot be recorded (1..%d bytes)", w->path, len,
                        MKZ_MAX_HINT);
    if (!(w->ix.base_hint = mk_strdup(hint))) return MK_ERR_NOMEM;
    w->ix.version = MK_MKZ_VERSION_RANS; /* the hint makes it a delta container */
    w->base_read = read;
    w->base_ctx = ctx;
    disk_header h;
    memcpy(h.magic, mkz_magic, sizeof mkz_magic);
    h.version = w->ix.version;
    h.flags = 0;
    mkz_le_header(&h);
    return mk_pwrite_all(w->fd, &h, sizeof h, 0, w->path);
}

mk_status mkz_w_add_delta(mkz_writer *w, uint32_t k, mk_hash128 h)
{
    if (!w->ix.base_hint || k >= w->ix.n_streams || !w->ix.streams[k].is_tensor ||
        (w->ix.n_delta && w->ix.delta[w->ix.n_delta - 1].stream >= k))
        MK_BUG("a delta record out of order or without a base");
    size_t cap = w->ix.n_delta; /* grown one at a time: pack adds them in one pass */
    mk_mkz_delta *nd = mk_realloc_array(w->ix.delta, cap + 1, sizeof *nd);
    if (!nd) return MK_ERR_NOMEM;
    w->ix.delta = nd;
    nd[w->ix.n_delta] = (mk_mkz_delta){k, h};
    w->ix.streams[k].delta = (uint32_t)w->ix.n_delta++;
    return MK_OK;
}

/* ---- compressing blocks from memory, in parallel -------------------------------------------- */

typedef struct compress_job {
    mkz_writer *w;
    uint32_t g0;
} compress_job;

static mk_status compress_chunk(void *ctx, uint64_t c, void *tls)
{
    compress_job *job = ctx;
    mkz_writer *w = job->w;
    uint32_t g = job->g0 + (uint32_t)c, k = w->block_stream[g];
    const mk_mkz_stream *S = &w->ix.streams[k];
    uint64_t bb = (uint64_t)S->block_elems * S->es;
    return mkz_compress_submit(w, tls, g, w->src[k].base + (uint64_t)(g - S->first_block) * bb);
}

static void *compress_tls_new(void *ctx) { return mkz_w_take(((compress_job *)ctx)->w); }

static void compress_tls_free(void *tls)
{
    mkz_wctx *c = tls;
    mkz_pool_return(c->home, c);
}

mk_status mkz_w_compress_range(mkz_writer *w, uint32_t g0, uint32_t g1)
{
    compress_job job = {w, g0};
    mk_status s = mk_parallel_chunks(g1 - g0, compress_chunk, &job, compress_tls_new, compress_tls_free);
    if (s == MK_OK) return MK_OK;
    /* the appender's first failure, when there is one, is the cause of the rest */
    pthread_mutex_lock(&w->mu);
    if (w->err) s = mkz_w_err(w);
    pthread_mutex_unlock(&w->mu);
    return s;
}

mk_status mkz_w_put_bytes(mkz_writer *w, const void *data, size_t len, uint32_t *id)
{
    MK_TRY(mkz_w_add_stream(w, NULL, len, id));
    mk_mkz_stream *S = &w->ix.streams[*id];
    S->hash = mk_hash128_bytes(data, len);
    w->src[*id].base = data;
    mk_status s = mkz_w_compress_range(w, S->first_block, S->first_block + S->n_blocks);
    w->src[*id].base = NULL;
    return s;
}

/* ---- open, finish, close -------------------------------------------------------------------- */

mk_status mkz_w_open(const char *path, int level, uint64_t pending_max, mkz_writer **out)
{
    *out = NULL;
    if (level < 1 || level > MK_MKZ_LEVEL_MAX)
        return mk_error(MK_ERR_USAGE, "compression level %d is out of range (1..%d)", level, MK_MKZ_LEVEL_MAX);
    mkz_writer *w = mk_calloc(1, sizeof *w);
    if (!w) return MK_ERR_NOMEM;
    pthread_mutex_init(&w->mu, NULL);
    mkz_pool_init(&w->cctx, wctx_free);
    w->fd = -1;
    w->spill_fd = -1;
    w->fh_file = MKZ_NO_FILE;
    w->level = level;
    w->pending_max = pending_max ? pending_max : (64ull << 20) + (uint64_t)mk_threads_get() * (8ull << 20);
    w->pos = MKZ_HEADER_SIZE;
    w->ix.version = MK_MKZ_VERSION_RANS;
    w->path = mk_strdup(path);
    *out = w;
    if (!w->path) return MK_ERR_NOMEM;
    w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (w->fd < 0) return mk_error(MK_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    disk_header h;
    memcpy(h.magic, mkz_magic, sizeof mkz_magic);
    h.version = MK_MKZ_VERSION_RANS;
    h.flags = 0;
    mkz_le_header(&h);
    return mk_pwrite_all(w->fd, &h, sizeof h, 0, path);
}

void mkz_w_close(mkz_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->spill_fd >= 0) close(w->spill_fd);
    for (size_t g = 0; g < w->ix.n_blocks && w->wb; g++) {
        free(w->wb[g].raw);
        free(w->wb[g].payload);
    }
    mkz_pool_free(&w->cctx);
    mk_hasher_free(w->sh);
    mk_hasher_free(w->fh);
    mk_mkz_index_free(&w->ix);
    free(w->wb);
    free(w->block_stream);
    free(w->src);
    free(w->path);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* The index for what has been written, checked with our own reader. */
static mk_status finish_index(mkz_writer *w, mk_buf *b)
{
    if (w->pack) {
        if (w->fh) w->ix.files[w->fh_file].hash = mk_hasher_digest(w->fh);
        mk_hash128 empty = mk_hash128_bytes("", 0);
        for (size_t k = 0; k < w->ix.n_streams; k++)
            if (w->ix.streams[k].n_blocks == 0) w->ix.streams[k].hash = empty;
        for (size_t f = 0; f < w->ix.n_files; f++)
            if (w->ix.files[f].size == 0) w->ix.files[f].hash = empty;
    }
    MK_TRY(mkz_encode_index(&w->ix, b));
    /* our own index must pass our own reader */
    mk_mkz_index check;
    mk_mkz_limits lim = MK_MKZ_LIMITS_DEFAULT;
    if (lim.max_index < b->len) lim.max_index = b->len;
    mk_status s = mkz_parse_index((const uint8_t *)b->data, b->len, w->ix.version, w->pos + b->len + MKZ_FOOTER_SIZE,
                                  w->pos, &lim, w->path, &check);
    if (s == MK_OK) mk_mkz_index_free(&check);
    else mk_error_prefix(s, "internal error: the container index does not validate");
    return s;
}

mk_status mkz_w_finish(mkz_writer *w)
{
    if (w->err) return mkz_w_err(w);
    if (w->next_emit != w->ix.n_blocks) MK_BUG("finishing a container with blocks not yet written");
    mk_buf b = {0};
    mk_status s = finish_index(w, &b);
    if (s == MK_OK) s = mk_pwrite_all(w->fd, b.data, b.len, w->pos, w->path);
    if (s == MK_OK) {
        mk_hash128 ih = mk_hash128_bytes(b.data, b.len);
        disk_footer f = {w->pos, b.len, ih.lo, ih.hi, w->ix.version, 0, {0}};
        memcpy(f.magic, mkz_end_magic, sizeof mkz_end_magic);
        mkz_le_footer(&f);
        s = mk_pwrite_all(w->fd, &f, sizeof f, w->pos + b.len, w->path);
    }
    if (s == MK_OK && fsync(w->fd) != 0) s = mk_error(MK_ERR_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    if (s == MK_OK) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) s = mk_error(MK_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    }
    if (s == MK_OK) w->pos += b.len + MKZ_FOOTER_SIZE;
    mk_buf_free(&b);
    return s;
}

int mkz_cmp_by_offset(const void *a, const void *b, void *ctx)
{
    const mk_tensor_info *t = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (t[x].offset != t[y].offset) return t[x].offset < t[y].offset ? -1 : 1;
    return x < y ? -1 : x > y;
}
