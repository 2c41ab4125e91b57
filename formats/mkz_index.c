/* mkz_index.c - the .mkz on-disk layout: byte order of the records, dtype codes, and the
 * index, parsed and validated record by record, and encoded. See mkz_int.h; the byte
 * layout is docs/mkz-format.md. */
#include "mkz_int.h"

#include <endian.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const unsigned char mkz_magic[8] = {0x89, 'M', 'K', 'Z', '\r', '\n', 0x1a, '\n'};
const unsigned char mkz_end_magic[8] = {'M', 'K', 'Z', 'E', 'N', 'D', 0x1a, '\n'};
const unsigned char mkz_index_magic[4] = {'M', 'K', 'Z', 'I'};

const mk_mkz_limits MK_MKZ_LIMITS_DEFAULT = {1ull << 30, 64ull << 20, 4096};

/* ---- byte order --------------------------------------------------------------------------- */

/* Records are memcpy'd and each field converted; the conversion is its own inverse, so
 * one function per record serves reading and writing. */
#define LE32(x) ((x) = le32toh(x))
#define LE64(x) ((x) = le64toh(x))

void mkz_le_header(disk_header *d)
{
    LE32(d->version);
    LE32(d->flags);
}

void mkz_le_footer(disk_footer *d)
{
    LE64(d->index_offset);
    LE64(d->index_size);
    LE64(d->index_hash_lo);
    LE64(d->index_hash_hi);
    LE32(d->version);
    LE32(d->flags);
}

static void le_index_head(disk_index_head *d)
{
    LE32(d->flags);
    LE32(d->n_streams);
    LE32(d->n_blocks);
    LE32(d->n_files);
    LE32(d->n_parts);
    LE32(d->n_model);
    LE32(d->n_delta);
    LE64(d->strings_size);
    LE64(d->hint_off);
    LE64(d->hint_len);
    LE64(d->reserved);
}

static void le_delta(disk_delta *d)
{
    LE32(d->stream);
    LE32(d->reserved);
    LE64(d->base_hash_lo);
    LE64(d->base_hash_hi);
}

static void le_stream(disk_stream *d)
{
    LE64(d->name_off);
    LE32(d->name_len);
    for (int i = 0; i < MK_MAX_DIMS; i++) LE64(d->shape[i]);
    LE64(d->raw_size);
    LE32(d->block_elems);
    LE32(d->first_block);
    LE32(d->n_blocks);
    LE32(d->reserved1);
    LE64(d->hash_lo);
    LE64(d->hash_hi);
    LE64(d->reserved2);
}

static void le_block(disk_block *d)
{
    LE64(d->offset);
    LE32(d->csize);
    LE32(d->transform);
    for (int i = 0; i < MKZ_MAX_PLANES; i++) LE32(d->plane_csize[i]);
    LE64(d->hash);
}

static void le_file(disk_file *d)
{
    LE64(d->name_off);
    LE32(d->name_len);
    LE32(d->first_part);
    LE32(d->n_parts);
    LE32(d->reserved);
    LE64(d->size);
    LE64(d->hash_lo);
    LE64(d->hash_hi);
}

/* On-disk dtype codes (fixed by the spec; 0 = a byte stream). */
static const char *const DTYPE_CODES[] = {NULL, "F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64",
                                          "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"};
#define N_DTYPE_CODES (sizeof DTYPE_CODES / sizeof DTYPE_CODES[0])
#define F32_CODE 2
#define BF16_CODE 4

uint8_t mkz_dtype_code(mk_dtype t)
{
    for (uint8_t c = 1; c < N_DTYPE_CODES; c++)
        if (strcmp(DTYPE_CODES[c], mk_dtype_name(t)) == 0) return c;
    return 0;
}

/* ---- small helpers ---------------------------------------------------------------------- */

const char *mkz_stream_label(const mk_mkz_index *ix, uint32_t k, char *buf, size_t n)
{
    const mk_mkz_stream *S = &ix->streams[k];
    if (S->is_tensor) snprintf(buf, n, "tensor %s", S->name);
    else if (S->file != MKZ_NO_FILE)
        snprintf(buf, n, ix->files[S->file].n_parts > 1 ? "file %s (safetensors header)" : "file %s",
                 ix->files[S->file].name);
    else snprintf(buf, n, "byte stream %u", k);
    return buf;
}

void mk_mkz_index_free(mk_mkz_index *ix)
{
    if (!ix) return;
    for (size_t k = 0; k < ix->n_streams && ix->streams; k++) free(ix->streams[k].name);
    for (size_t f = 0; f < ix->n_files && ix->files; f++) free(ix->files[f].name);
    free(ix->streams);
    free(ix->blocks);
    free(ix->files);
    free(ix->parts);
    free(ix->model);
    free(ix->base_hint);
    free(ix->delta);
    memset(ix, 0, sizeof *ix);
}

bool mkz_file_name_ok(const char *s)
{
    if (!s[0] || strchr(s, '/') || strchr(s, '\\') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return !mk_str_starts_with(s, ".mergekit-c"); /* our own markers and journals */
}

static int cmp_names(const void *a, const void *b, void *ctx)
{
    const mk_mkz_file *f = ctx;
    return strcmp(f[*(const uint32_t *)a].name, f[*(const uint32_t *)b].name);
}

mk_status mkz_damaged(const char *what, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mk_error(MK_ERR_FORMAT, "%s: %s", what, msg);
}

/* ---- index: parse and validate, one record at a time ------------------------------------- */

/* The index being parsed: its tables, and what the records read so far imply for the next. */
typedef struct index_reader {
    disk_index_head h;
    const uint8_t *p_streams, *p_blocks, *p_files, *p_parts, *p_model, *p_delta, *strings;
    uint32_t version;
    bool has_base;       /* a delta container: the base hint and delta records */
    uint64_t index_offset;
    const mk_mkz_limits *lim;
    const char *what;
    mk_mkz_index *ix;
    uint8_t *used;       /* [n_streams]: a stream already claimed (by a file, then by the model) */
    uint64_t next_block; /* the first block of the next stream */
    uint64_t pos;        /* the offset of the next block */
    uint64_t next_part;  /* the first part of the next file */
} index_reader;

/* The header; the tables' sizes must add up to the index size. */
static mk_status read_head(index_reader *r, const uint8_t *ib, uint64_t isz)
{
    const char *what = r->what;
    disk_index_head *h = &r->h;
    if (isz < sizeof *h) return mkz_damaged(what, "index damaged: %llu bytes, shorter than its header", (unsigned long long)isz);
    memcpy(h, ib, sizeof *h);
    le_index_head(h);
    if (memcmp(h->magic, mkz_index_magic, 4) != 0) return mkz_damaged(what, "index damaged: bad index magic");
    /* version 1: no base; 2: a base; 3: a base exactly when the hint is there */
    bool nobase = r->version == MK_MKZ_VERSION || (r->version == MK_MKZ_VERSION_RANS && h->hint_len == 0);
    if (h->flags || h->reserved || (nobase && (h->n_delta || h->hint_off || h->hint_len)))
        return mkz_damaged(what, "index damaged: reserved fields of the index header are not zero");
    r->has_base = !nobase;
    if (!nobase && (h->hint_len == 0 || h->hint_len > MKZ_MAX_HINT))
        return mkz_damaged(what, "index damaged: a delta container's base path of %llu bytes (1..%d)",
                           (unsigned long long)h->hint_len, MKZ_MAX_HINT);
    uint64_t fixed = sizeof *h + (uint64_t)h->n_streams * sizeof(disk_stream) + (uint64_t)h->n_blocks * sizeof(disk_block) +
                     (uint64_t)h->n_files * sizeof(disk_file) + ((uint64_t)h->n_parts + h->n_model) * 4 +
                     (uint64_t)h->n_delta * sizeof(disk_delta);
    if (fixed > isz || h->strings_size != isz - fixed)
        return mkz_damaged(what,
                           "index damaged: %u streams, %u blocks, %u files, %u parts, %u model tensors, %u deltas and %llu "
                           "bytes of names do not add up to the index size %llu",
                           h->n_streams, h->n_blocks, h->n_files, h->n_parts, h->n_model, h->n_delta,
                           (unsigned long long)h->strings_size, (unsigned long long)isz);
    r->p_streams = ib + sizeof *h;
    r->p_blocks = r->p_streams + (size_t)h->n_streams * sizeof(disk_stream);
    r->p_files = r->p_blocks + (size_t)h->n_blocks * sizeof(disk_block);
    r->p_parts = r->p_files + (size_t)h->n_files * sizeof(disk_file);
    r->p_model = r->p_parts + (size_t)h->n_parts * 4;
    r->p_delta = r->p_model + (size_t)h->n_model * 4;
    r->strings = r->p_delta + (size_t)h->n_delta * sizeof(disk_delta);
    return MK_OK;
}

static mk_status take_name(const index_reader *r, uint64_t off, uint32_t len, const char *rec, uint64_t k, char **out)
{
    uint64_t size = r->h.strings_size;
    if (len > r->lim->max_name || off > size || len > size - off)
        return mkz_damaged(r->what, "index damaged: %s %llu: name [%llu, +%u) is outside the string table (%llu bytes)", rec,
                           (unsigned long long)k, (unsigned long long)off, len, (unsigned long long)size);
    if (memchr(r->strings + off, 0, len))
        return mkz_damaged(r->what, "index damaged: %s %llu: name contains a NUL byte", rec, (unsigned long long)k);
    *out = mk_strndup((const char *)r->strings + off, len);
    return *out ? MK_OK : MK_ERR_NOMEM;
}

/* Stream k's dtype code, dimensions, and name and shape (tensors) or size (byte streams). */
static mk_status read_stream_kind(const index_reader *r, uint32_t k, const disk_stream *d, mk_mkz_stream *S)
{
    const char *what = r->what;
    if (d->reserved1 || d->reserved2 || (d->layout && r->version != MK_MKZ_VERSION_RANS))
        return mkz_damaged(what, "index damaged: stream %u: reserved fields are not zero", k);
    if (d->dtype >= N_DTYPE_CODES) return mkz_damaged(what, "index damaged: stream %u: unknown dtype code %u", k, d->dtype);
    if (d->ndim > MK_MAX_DIMS)
        return mkz_damaged(what, "index damaged: stream %u: %u dimensions (at most %d)", k, d->ndim, MK_MAX_DIMS);
    for (int i = d->ndim; i < MK_MAX_DIMS; i++)
        if (d->shape[i]) return mkz_damaged(what, "index damaged: stream %u: unused dimension %d is not zero", k, i);
    if (d->dtype == 0) {
        if (d->ndim || d->name_len || d->n_planes != 1)
            return mkz_damaged(what, "index damaged: byte stream %u has a name, a shape or several planes", k);
        S->es = 1;
        S->n_elems = d->raw_size;
        return MK_OK;
    }
    S->is_tensor = true;
    if (d->name_len == 0) return mkz_damaged(what, "index damaged: tensor stream %u has no name", k);
    MK_TRY(take_name(r, d->name_off, d->name_len, "stream", k, &S->name));
    S->t.name = S->name;
    S->t.dtype = mk_dtype_from_name(DTYPE_CODES[d->dtype]);
    S->t.ndim = d->ndim;
    for (int i = 0; i < d->ndim; i++) {
        if (d->shape[i] > (uint64_t)INT64_MAX)
            return mkz_damaged(what, "index damaged: tensor %s: dimension %d is too large", S->name, i);
        S->t.shape[i] = (int64_t)d->shape[i];
    }
    mk_status s = mk_tensor_info_finish(&S->t);
    if (s != MK_OK) return mk_error_prefix(s, "%s: index damaged", what);
    if (S->t.nbytes != d->raw_size)
        return mkz_damaged(what, "index damaged: tensor %s: %llu bytes recorded, its shape and dtype need %llu", S->name,
                           (unsigned long long)d->raw_size, (unsigned long long)S->t.nbytes);
    S->es = mk_dtype_size(S->t.dtype);
    S->n_elems = S->t.numel;
    return MK_OK;
}

/* Block j of stream k: at the next data offset, its planes consistent with the stream. */
static mk_status read_block(index_reader *r, uint32_t k, uint32_t j)
{
    mk_mkz_index *ix = r->ix;
    mk_mkz_stream *S = &ix->streams[k];
    const char *what = r->what;
    char lab[400];
    uint32_t g = S->first_block + j;
    disk_block b;
    memcpy(&b, r->p_blocks + (size_t)g * sizeof b, sizeof b);
    le_block(&b);
    mk_mkz_block *B = &ix->blocks[g];
    B->offset = b.offset;
    B->csize = b.csize;
    B->hash = b.hash;
    B->transform = (uint8_t)b.transform;
    memcpy(B->method, b.method, sizeof b.method);
    memcpy(B->plane_csize, b.plane_csize, sizeof b.plane_csize);
    if (b.transform && (b.transform >= MKZ_XFORM_COUNT || S->delta == UINT32_MAX))
        return mkz_damaged(what, "index damaged: %s: block %u: transform %u (%s)", mkz_stream_label(ix, k, lab, sizeof lab), j,
                           b.transform, S->delta == UINT32_MAX ? "the tensor is not stored against a base" : "unknown");
    if (b.offset != r->pos)
        return mkz_damaged(what, "index damaged: %s: block %u at offset %llu, expected %llu (blocks are contiguous)",
                           mkz_stream_label(ix, k, lab, sizeof lab), j, (unsigned long long)b.offset,
                           (unsigned long long)r->pos);
    uint64_t pr = mkz_plane_raw(S, j), sum = 0;
    for (unsigned p = 0; p < MKZ_MAX_PLANES; p++) {
        uint32_t c = b.plane_csize[p];
        bool bad = false;
        if (p >= S->n_planes) bad = c != 0 || b.method[p] != MKZ_METHOD_STORED;
        else if (b.method[p] == MKZ_METHOD_STORED) bad = c != pr;
        else if (b.method[p] == MKZ_METHOD_ZSTD) bad = c == 0 || c > ZSTD_compressBound((size_t)pr);
        else if (b.method[p] == MKZ_METHOD_RANS)
            bad = r->version != MK_MKZ_VERSION_RANS || c < MKZ_RANS_HEAD_MIN || c > mkz_rans_bound((size_t)pr);
        else bad = true;
        if (bad)
            return mkz_damaged(what, "index damaged: %s: block %u plane %u: method %u with %u bytes for %llu raw bytes",
                               mkz_stream_label(ix, k, lab, sizeof lab), j, p, b.method[p], c, (unsigned long long)pr);
        sum += c;
    }
    if (sum != b.csize)
        return mkz_damaged(what, "index damaged: %s: block %u: planes add up to %llu bytes, the block records %u",
                           mkz_stream_label(ix, k, lab, sizeof lab), j, (unsigned long long)sum, b.csize);
    r->pos += b.csize;
    S->stored += b.csize;
    if (r->pos > r->index_offset)
        return mkz_damaged(what, "index damaged: %s: block %u runs past the start of the index",
                           mkz_stream_label(ix, k, lab, sizeof lab), j);
    return MK_OK;
}

/* Stream k, then its blocks, which must follow the previous stream's. */
static mk_status read_stream(index_reader *r, uint32_t k)
{
    mk_mkz_index *ix = r->ix;
    const char *what = r->what;
    disk_stream d;
    memcpy(&d, r->p_streams + (size_t)k * sizeof d, sizeof d);
    le_stream(&d);
    mk_mkz_stream *S = &ix->streams[k];
    ix->n_streams = k + 1;
    S->file = MKZ_NO_FILE;
    MK_TRY(read_stream_kind(r, k, &d, S));
    char lab[400];
    S->raw_size = d.raw_size;
    S->n_planes = d.n_planes;
    S->layout = d.layout;
    S->block_elems = d.block_elems;
    S->first_block = d.first_block;
    S->n_blocks = d.n_blocks;
    S->hash = (mk_hash128){d.hash_hi, d.hash_lo};
    if (S->n_planes != 1 && S->n_planes != S->es)
        return mkz_damaged(what, "index damaged: %s: %u byte planes for %u-byte elements",
                           mkz_stream_label(ix, k, lab, sizeof lab), S->n_planes, S->es);
    if (d.layout > MKZ_LAYOUT_FIELDS ||
        (d.layout == MKZ_LAYOUT_FIELDS && !(d.dtype == BF16_CODE && d.n_planes == 2) && !(d.dtype == F32_CODE && d.n_planes == 4)))
        return mkz_damaged(what, "index damaged: %s: plane layout %u for dtype code %u with %u planes",
                           mkz_stream_label(ix, k, lab, sizeof lab), d.layout, d.dtype, d.n_planes);
    if (S->block_elems == 0 || (uint64_t)S->block_elems * S->es > r->lim->max_block_raw)
        return mkz_damaged(what, "index damaged: %s: block of %u elements (limit %llu bytes)",
                           mkz_stream_label(ix, k, lab, sizeof lab), S->block_elems,
                           (unsigned long long)r->lim->max_block_raw);
    uint64_t want = S->n_elems / S->block_elems + (S->n_elems % S->block_elems != 0);
    if (want != S->n_blocks || S->first_block != r->next_block || S->n_blocks > r->h.n_blocks - r->next_block)
        return mkz_damaged(what, "index damaged: %s: blocks [%u, +%u) where [%llu, +%llu) was expected",
                           mkz_stream_label(ix, k, lab, sizeof lab), S->first_block, S->n_blocks,
                           (unsigned long long)r->next_block, (unsigned long long)want);
    r->next_block += S->n_blocks;
    for (uint32_t j = 0; j < S->n_blocks; j++) MK_TRY(read_block(r, k, j));
    return MK_OK;
}

/* File f: a plain name, the next run of parts, each a stream no other file claims, whose
 * sizes add up to the file's. */
static mk_status read_file(index_reader *r, uint32_t f)
{
    mk_mkz_index *ix = r->ix;
    const char *what = r->what;
    disk_file d;
    memcpy(&d, r->p_files + (size_t)f * sizeof d, sizeof d);
    le_file(&d);
    mk_mkz_file *F = &ix->files[f];
    ix->n_files = f + 1;
    MK_TRY(take_name(r, d.name_off, d.name_len, "file", f, &F->name));
    if (d.name_len > 255 || !mkz_file_name_ok(F->name))
        return mkz_damaged(what, "index damaged: file %u: '%.200s' is not a plain file name", f, F->name);
    if (d.reserved) return mkz_damaged(what, "index damaged: file %s: reserved field is not zero", F->name);
    F->size = d.size;
    F->hash = (mk_hash128){d.hash_hi, d.hash_lo};
    F->first_part = d.first_part;
    F->n_parts = d.n_parts;
    if (d.first_part != r->next_part || d.n_parts > r->h.n_parts - r->next_part)
        return mkz_damaged(what, "index damaged: file %s: parts [%u, +%u) where [%llu, ...) was expected", F->name,
                           d.first_part, d.n_parts, (unsigned long long)r->next_part);
    r->next_part += d.n_parts;
    uint64_t size = 0;
    for (uint32_t q = 0; q < d.n_parts; q++) {
        uint32_t k = ix->parts[d.first_part + q];
        if (k >= r->h.n_streams || r->used[k])
            return mkz_damaged(what, "index damaged: file %s: part %u names stream %u, %s", F->name, q, k,
                               k >= r->h.n_streams ? "which does not exist" : "which is already a part of a file");
        r->used[k] = 1;
        ix->streams[k].file = f;
        if (!mk_add_u64(size, ix->streams[k].raw_size, &size)) size = UINT64_MAX;
    }
    if (size != d.size)
        return mkz_damaged(what, "index damaged: file %s: %llu bytes recorded, its parts hold %llu", F->name,
                           (unsigned long long)d.size, (unsigned long long)size);
    return MK_OK;
}

/* Every file, each name once (order: scratch for n_files ids). */
static mk_status read_files(index_reader *r, uint32_t *order)
{
    mk_mkz_index *ix = r->ix;
    uint32_t n = r->h.n_files;
    for (uint32_t i = 0; i < r->h.n_parts; i++) {
        uint32_t v;
        memcpy(&v, r->p_parts + (size_t)i * 4, 4);
        ix->parts[i] = le32toh(v);
    }
    for (uint32_t f = 0; f < n; f++) {
        MK_TRY(read_file(r, f));
        order[f] = f;
    }
    if (r->next_part != r->h.n_parts)
        return mkz_damaged(r->what, "index damaged: the files use %llu of %u parts", (unsigned long long)r->next_part,
                           r->h.n_parts);
    qsort_r(order, n, sizeof *order, cmp_names, ix->files);
    for (uint32_t f = 1; f < n; f++)
        if (strcmp(ix->files[order[f]].name, ix->files[order[f - 1]].name) == 0)
            return mkz_damaged(r->what, "index damaged: file %s is listed twice", ix->files[order[f]].name);
    return MK_OK;
}

/* The model's tensor list: tensor streams, each once, their names unique. */
static mk_status read_model(index_reader *r)
{
    mk_mkz_index *ix = r->ix;
    uint32_t n = r->h.n_model;
    memset(r->used, 0, r->h.n_streams);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, r->p_model + (size_t)i * 4, 4);
        uint32_t k = le32toh(v);
        if (k >= r->h.n_streams || !ix->streams[k].is_tensor || r->used[k])
            return mkz_damaged(r->what, "index damaged: model tensor %u names stream %u, which is %s", i, k,
                               k >= r->h.n_streams           ? "out of range"
                               : !ix->streams[k].is_tensor ? "not a tensor"
                                                           : "listed twice");
        r->used[k] = 1;
        ix->model[i] = k;
    }
    if (!n) return MK_OK;
    mk_tensor_info *mt = mk_calloc(n, sizeof *mt);
    mk_name_index nix;
    size_t dup = 0;
    if (!mt) return MK_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) mt[i] = ix->streams[ix->model[i]].t;
    mk_status s = mk_name_index_build(&nix, mt, n, &dup);
    if (s == MK_ERR_FORMAT) s = mkz_damaged(r->what, "index damaged: the model lists tensor %s twice", mt[dup].name);
    mk_name_index_free(&nix);
    free(mt);
    return s;
}

/* Version 2: the base hint and the delta records (before the streams, which need them:
 * stream ids ascending, each a tensor, checked once the streams are read). */
static mk_status read_deltas(index_reader *r)
{
    mk_mkz_index *ix = r->ix;
    const disk_index_head *h = &r->h;
    for (uint32_t k = 0; k < h->n_streams; k++) ix->streams[k].delta = UINT32_MAX;
    if (!r->has_base) return MK_OK;
    if (h->hint_off > h->strings_size || h->hint_len > h->strings_size - h->hint_off)
        return mkz_damaged(r->what, "index damaged: the base path [%llu, +%llu) is outside the string table (%llu bytes)",
                           (unsigned long long)h->hint_off, (unsigned long long)h->hint_len,
                           (unsigned long long)h->strings_size);
    if (memchr(r->strings + h->hint_off, 0, (size_t)h->hint_len))
        return mkz_damaged(r->what, "index damaged: the base path contains a NUL byte");
    if (!(ix->base_hint = mk_strndup((const char *)r->strings + h->hint_off, (size_t)h->hint_len))) return MK_ERR_NOMEM;
    for (uint32_t d = 0; d < h->n_delta; d++) {
        disk_delta dd;
        memcpy(&dd, r->p_delta + (size_t)d * sizeof dd, sizeof dd);
        le_delta(&dd);
        if (dd.reserved || dd.stream >= h->n_streams || (d && dd.stream <= ix->delta[d - 1].stream))
            return mkz_damaged(r->what, "index damaged: delta record %u names stream %u (%s)", d, dd.stream,
                               dd.reserved                  ? "reserved field not zero"
                               : dd.stream >= h->n_streams ? "out of range"
                                                           : "not in ascending order");
        ix->delta[d] = (mk_mkz_delta){dd.stream, {dd.base_hash_hi, dd.base_hash_lo}};
        ix->streams[dd.stream].delta = d;
    }
    return MK_OK;
}

mk_status mkz_parse_index(const uint8_t *ib, uint64_t isz, uint32_t version, uint64_t file_size, uint64_t index_offset,
                          const mk_mkz_limits *lim, const char *what, mk_mkz_index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->file_size = file_size;
    ix->index_offset = index_offset;
    ix->index_size = isz;
    ix->version = version;
    index_reader r = {.version = version, .index_offset = index_offset, .lim = lim, .what = what, .ix = ix,
                      .pos = MKZ_HEADER_SIZE};
    MK_TRY(read_head(&r, ib, isz));
    const disk_index_head *h = &r.h;
    /* counts are bounded by the index size, itself bounded by the limit: allocations are too */
    ix->streams = mk_calloc(h->n_streams ? h->n_streams : 1, sizeof *ix->streams);
    ix->blocks = mk_calloc(h->n_blocks ? h->n_blocks : 1, sizeof *ix->blocks);
    ix->files = mk_calloc(h->n_files ? h->n_files : 1, sizeof *ix->files);
    ix->parts = mk_calloc(h->n_parts ? h->n_parts : 1, sizeof *ix->parts);
    ix->model = mk_calloc(h->n_model ? h->n_model : 1, sizeof *ix->model);
    ix->delta = mk_calloc(h->n_delta ? h->n_delta : 1, sizeof *ix->delta);
    r.used = mk_calloc(h->n_streams ? h->n_streams : 1, 1);
    uint32_t *order = mk_calloc(h->n_files ? h->n_files : 1, sizeof *order);
    mk_status s = MK_OK;
    if (!ix->streams || !ix->blocks || !ix->files || !ix->parts || !ix->model || !ix->delta || !r.used || !order)
        s = MK_ERR_NOMEM;
    ix->n_blocks = h->n_blocks;
    ix->n_parts = h->n_parts;
    ix->n_model = h->n_model;
    ix->n_delta = h->n_delta;
    if (s == MK_OK) s = read_deltas(&r);
    for (uint32_t k = 0; k < h->n_streams && s == MK_OK; k++) s = read_stream(&r, k);
    for (uint32_t d = 0; d < h->n_delta && s == MK_OK; d++)
        if (!ix->streams[ix->delta[d].stream].is_tensor)
            s = mkz_damaged(what, "index damaged: delta record %u names byte stream %u, not a tensor", d, ix->delta[d].stream);
    if (s == MK_OK && (r.next_block != h->n_blocks || r.pos != index_offset))
        s = mkz_damaged(what, "index damaged: the streams cover %llu of %u blocks and %llu of %llu data bytes",
                        (unsigned long long)r.next_block, h->n_blocks, (unsigned long long)(r.pos - MKZ_HEADER_SIZE),
                        (unsigned long long)(index_offset - MKZ_HEADER_SIZE));
    if (s == MK_OK) s = read_files(&r, order);
    if (s == MK_OK) s = read_model(&r);
    free(r.used);
    free(order);
    if (s != MK_OK) mk_mkz_index_free(ix);
    return s;
}

/* ---- index: encode ------------------------------------------------------------------------ */

static void put_strings(mk_buf *strings, const char *name, uint64_t *off, uint32_t *len)
{
    *off = strings->len;
    *len = name ? (uint32_t)strlen(name) : 0;
    if (name) mk_buf_put(strings, name, *len);
}

static void encode_stream(const mk_mkz_stream *S, mk_buf *strings, disk_stream *d)
{
    put_strings(strings, S->is_tensor ? S->name : NULL, &d->name_off, &d->name_len);
    d->dtype = S->is_tensor ? mkz_dtype_code(S->t.dtype) : 0;
    d->ndim = S->is_tensor ? (uint8_t)S->t.ndim : 0;
    d->n_planes = (uint8_t)S->n_planes;
    d->layout = (uint8_t)S->layout;
    for (int i = 0; i < d->ndim; i++) d->shape[i] = (uint64_t)S->t.shape[i];
    d->raw_size = S->raw_size;
    d->block_elems = S->block_elems;
    d->first_block = S->first_block;
    d->n_blocks = S->n_blocks;
    d->hash_lo = S->hash.lo;
    d->hash_hi = S->hash.hi;
    le_stream(d);
}

static void encode_file(const mk_mkz_file *F, mk_buf *strings, disk_file *d)
{
    put_strings(strings, F->name, &d->name_off, &d->name_len);
    d->first_part = F->first_part;
    d->n_parts = F->n_parts;
    d->size = F->size;
    d->hash_lo = F->hash.lo;
    d->hash_hi = F->hash.hi;
    le_file(d);
}

static void encode_block(const mk_mkz_block *B, mk_buf *b)
{
    disk_block d;
    memset(&d, 0, sizeof d);
    d.offset = B->offset;
    d.csize = B->csize;
    memcpy(d.method, B->method, sizeof d.method);
    memcpy(d.plane_csize, B->plane_csize, sizeof d.plane_csize);
    d.hash = B->hash;
    d.transform = B->transform;
    le_block(&d);
    mk_buf_put(b, &d, sizeof d);
}

mk_status mkz_encode_index(const mk_mkz_index *ix, mk_buf *b)
{
    mk_buf strings = {0};
    disk_index_head h = {{0}, 0, (uint32_t)ix->n_streams, (uint32_t)ix->n_blocks, (uint32_t)ix->n_files,
                         (uint32_t)ix->n_parts, (uint32_t)ix->n_model, (uint32_t)ix->n_delta, 0, 0, 0, 0};
    memcpy(h.magic, mkz_index_magic, 4);
    disk_stream *ds = mk_calloc(ix->n_streams ? ix->n_streams : 1, sizeof *ds);
    disk_file *df = mk_calloc(ix->n_files ? ix->n_files : 1, sizeof *df);
    if (!ds || !df) {
        free(ds);
        free(df);
        return MK_ERR_NOMEM;
    }
    /* names go into the string table in this order: streams, then files */
    for (size_t k = 0; k < ix->n_streams; k++) encode_stream(&ix->streams[k], &strings, &ds[k]);
    for (size_t f = 0; f < ix->n_files; f++) encode_file(&ix->files[f], &strings, &df[f]);
    if (ix->base_hint) {
        h.hint_off = strings.len;
        h.hint_len = strlen(ix->base_hint);
        mk_buf_put(&strings, ix->base_hint, (size_t)h.hint_len);
    }
    h.strings_size = strings.len;
    le_index_head(&h);
    mk_buf_put(b, &h, sizeof h);
    mk_buf_put(b, ds, ix->n_streams * sizeof *ds);
    for (size_t g = 0; g < ix->n_blocks; g++) encode_block(&ix->blocks[g], b);
    mk_buf_put(b, df, ix->n_files * sizeof *df);
    for (size_t i = 0; i < ix->n_parts; i++) {
        uint32_t v = htole32(ix->parts[i]);
        mk_buf_put(b, &v, 4);
    }
    for (size_t i = 0; i < ix->n_model; i++) {
        uint32_t v = htole32(ix->model[i]);
        mk_buf_put(b, &v, 4);
    }
    for (size_t d = 0; d < ix->n_delta; d++) {
        disk_delta dd = {ix->delta[d].stream, 0, ix->delta[d].base_hash.lo, ix->delta[d].base_hash.hi};
        le_delta(&dd);
        mk_buf_put(b, &dd, sizeof dd);
    }
    if (strings.len) mk_buf_put(b, strings.data, strings.len);
    bool failed = strings.failed || b->failed;
    mk_buf_free(&strings);
    free(ds);
    free(df);
    return failed ? mk_error(MK_ERR_NOMEM, "out of memory building the container index") : MK_OK;
}
