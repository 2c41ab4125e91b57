/* mkz.c - see mkz.h; the byte layout is docs/mkz-format.md. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_literalCompressionMode (a stable-ABI parameter value) */
#include "mkz.h"
#include "sniff.h"

#include "../core/mk_io.h"
#include "../core/mk_thread.h"
#include "modeldir.h"
#include "safetensors.h"

#include <assert.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#ifdef _OPENMP
#include <omp.h>
#define MK_OMP(x) _Pragma(x)
static int thr_id(void) { return omp_get_thread_num(); }
#else
#define MK_OMP(x)
static int thr_id(void) { return 0; }
#endif

/* ---- on-disk layout (docs/mkz-format.md); every integer little-endian ------------------ */

#define HEADER_SIZE 16
#define FOOTER_SIZE 48
#define MAX_PLANES 8
#define TENSOR_BLOCK_ELEMS (1u << 20) /* rows of about 2^20 elements: the executor's default chunk */
#define BYTES_BLOCK (1u << 22)        /* byte streams (headers, config, tokenizer): 4 MiB */
#define METHOD_STORED 0
#define METHOD_ZSTD 1
#define NO_FILE UINT32_MAX

static const unsigned char MAGIC[8] = {0x89, 'M', 'K', 'Z', '\r', '\n', 0x1a, '\n'};
static const unsigned char END_MAGIC[8] = {'M', 'K', 'Z', 'E', 'N', 'D', 0x1a, '\n'};
static const unsigned char INDEX_MAGIC[4] = {'M', 'K', 'Z', 'I'};

typedef struct disk_header {
    uint8_t magic[8];
    uint32_t version;
    uint32_t flags;
} disk_header;

typedef struct disk_footer {
    uint64_t index_offset, index_size;
    uint64_t index_hash_lo, index_hash_hi; /* XXH3-128 of the index bytes */
    uint32_t version, flags;
    uint8_t magic[8];
} disk_footer;

typedef struct disk_index_head {
    uint8_t magic[4];
    uint32_t flags;
    uint32_t n_streams, n_blocks, n_files, n_parts, n_model, reserved0;
    uint64_t strings_size;
    uint64_t reserved[3];
} disk_index_head;

typedef struct disk_stream {
    uint64_t name_off;
    uint32_t name_len;
    uint8_t dtype, ndim, n_planes, reserved0;
    uint64_t shape[MK_MAX_DIMS];
    uint64_t raw_size;
    uint32_t block_elems, first_block, n_blocks, reserved1;
    uint64_t hash_lo, hash_hi;
    uint64_t reserved2;
} disk_stream;

typedef struct disk_block {
    uint64_t offset;
    uint32_t csize;
    uint8_t method[MAX_PLANES];
    uint32_t reserved;
    uint32_t plane_csize[MAX_PLANES];
    uint64_t hash;
} disk_block;

typedef struct disk_file {
    uint64_t name_off;
    uint32_t name_len, first_part, n_parts, reserved;
    uint64_t size, hash_lo, hash_hi;
} disk_file;

static_assert(MK_MAX_DIMS == 8, "the stream record holds 8 dimensions");
static_assert(sizeof(disk_header) == HEADER_SIZE, "header layout");
static_assert(sizeof(disk_footer) == FOOTER_SIZE && offsetof(disk_footer, magic) == 40, "footer layout");
static_assert(sizeof(disk_index_head) == 64 && offsetof(disk_index_head, strings_size) == 32, "index head layout");
static_assert(sizeof(disk_stream) == 128 && offsetof(disk_stream, shape) == 16 && offsetof(disk_stream, raw_size) == 80 &&
                  offsetof(disk_stream, hash_lo) == 104,
              "stream record layout");
static_assert(sizeof(disk_block) == 64 && offsetof(disk_block, method) == 12 && offsetof(disk_block, plane_csize) == 24 &&
                  offsetof(disk_block, hash) == 56,
              "block record layout");
static_assert(sizeof(disk_file) == 48 && offsetof(disk_file, size) == 24, "file record layout");

/* Byte order: records are memcpy'd and each field converted; the conversion is its own
 * inverse, so one function per record serves reading and writing. */
#define LE16(x) ((x) = le16toh(x))
#define LE32(x) ((x) = le32toh(x))
#define LE64(x) ((x) = le64toh(x))

static void le_header(disk_header *d)
{
    LE32(d->version);
    LE32(d->flags);
}
static void le_footer(disk_footer *d)
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
    LE32(d->reserved0);
    LE64(d->strings_size);
    for (int i = 0; i < 3; i++) LE64(d->reserved[i]);
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
    LE32(d->reserved);
    for (int i = 0; i < MAX_PLANES; i++) LE32(d->plane_csize[i]);
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

static uint8_t dtype_code(mk_dtype t)
{
    for (uint8_t c = 1; c < N_DTYPE_CODES; c++)
        if (strcmp(DTYPE_CODES[c], mk_dtype_name(t)) == 0) return c;
    return 0;
}

const mk_mkz_limits MK_MKZ_LIMITS_DEFAULT = {1ull << 30, 64ull << 20, 4096};

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t blk_elems(const mk_mkz_stream *S, uint32_t j)
{
    uint64_t e0 = (uint64_t)j * S->block_elems, left = S->n_elems - e0;
    return left < S->block_elems ? left : S->block_elems;
}
static uint64_t blk_raw(const mk_mkz_stream *S, uint32_t j) { return blk_elems(S, j) * S->es; }
static uint64_t plane_raw(const mk_mkz_stream *S, uint32_t j) { return S->n_planes == 1 ? blk_raw(S, j) : blk_elems(S, j); }

static const char *stream_label(const mk_mkz_index *ix, uint32_t k, char *buf, size_t n)
{
    const mk_mkz_stream *S = &ix->streams[k];
    if (S->is_tensor) snprintf(buf, n, "tensor %s", S->name);
    else if (S->file != NO_FILE)
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
    memset(ix, 0, sizeof *ix);
}

/* A file name the container may restore: a plain name inside the output folder. */
static bool file_name_ok(const char *s)
{
    if (!s[0] || strchr(s, '/') || strchr(s, '\\') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return !mk_str_starts_with(s, ".mergekit-c"); /* our own markers and journals */
}

static int cmp_names(const void *a, const void *b, void *ctx)
{
    const mk_mkz_file *f = ctx;
    return strcmp(f[*(const uint32_t *)a].name, f[*(const uint32_t *)b].name);
}

/* ---- index: parse and validate ------------------------------------------------------------ */

static mk_status damaged(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static mk_status damaged(const char *what, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mk_error(MK_ERR_FORMAT, "%s: %s", what, msg);
}

static mk_status take_name(const uint8_t *strings, uint64_t strings_size, uint64_t off, uint32_t len,
                           const mk_mkz_limits *lim, const char *what, const char *rec, uint64_t k, char **out)
{
    if (len > lim->max_name || off > strings_size || len > strings_size - off)
        return damaged(what, "index damaged: %s %llu: name [%llu, +%u) is outside the string table (%llu bytes)", rec,
                       (unsigned long long)k, (unsigned long long)off, len, (unsigned long long)strings_size);
    if (memchr(strings + off, 0, len))
        return damaged(what, "index damaged: %s %llu: name contains a NUL byte", rec, (unsigned long long)k);
    *out = mk_strndup((const char *)strings + off, len);
    return *out ? MK_OK : MK_ERR_NOMEM;
}

static bool zeros(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return false;
    return true;
}

/* Parse the index bytes ib[isz] of a container of file_size bytes whose index starts at
 * index_offset. Everything is checked; nothing in ix is trusted before this returns. */
static mk_status parse_index(const uint8_t *ib, uint64_t isz, uint64_t file_size, uint64_t index_offset,
                             const mk_mkz_limits *lim, const char *what, mk_mkz_index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->file_size = file_size;
    ix->index_offset = index_offset;
    ix->index_size = isz;
    disk_index_head h;
    if (isz < sizeof h) return damaged(what, "index damaged: %llu bytes, shorter than its header", (unsigned long long)isz);
    memcpy(&h, ib, sizeof h);
    le_index_head(&h);
    if (memcmp(h.magic, INDEX_MAGIC, 4) != 0) return damaged(what, "index damaged: bad index magic");
    if (h.flags || h.reserved0 || !zeros(h.reserved, sizeof h.reserved))
        return damaged(what, "index damaged: reserved fields of the index header are not zero");
    uint64_t fixed = sizeof h + (uint64_t)h.n_streams * sizeof(disk_stream) + (uint64_t)h.n_blocks * sizeof(disk_block) +
                     (uint64_t)h.n_files * sizeof(disk_file) + ((uint64_t)h.n_parts + h.n_model) * 4;
    if (fixed > isz || h.strings_size != isz - fixed)
        return damaged(what,
                       "index damaged: %u streams, %u blocks, %u files, %u parts, %u model tensors and %llu bytes of "
                       "names do not add up to the index size %llu",
                       h.n_streams, h.n_blocks, h.n_files, h.n_parts, h.n_model, (unsigned long long)h.strings_size,
                       (unsigned long long)isz);
    const uint8_t *p_streams = ib + sizeof h;
    const uint8_t *p_blocks = p_streams + (size_t)h.n_streams * sizeof(disk_stream);
    const uint8_t *p_files = p_blocks + (size_t)h.n_blocks * sizeof(disk_block);
    const uint8_t *p_parts = p_files + (size_t)h.n_files * sizeof(disk_file);
    const uint8_t *p_model = p_parts + (size_t)h.n_parts * 4;
    const uint8_t *strings = p_model + (size_t)h.n_model * 4;

    /* counts are bounded by the index size, itself bounded by the limit: allocations are too */
    ix->streams = mk_calloc(h.n_streams ? h.n_streams : 1, sizeof *ix->streams);
    ix->blocks = mk_calloc(h.n_blocks ? h.n_blocks : 1, sizeof *ix->blocks);
    ix->files = mk_calloc(h.n_files ? h.n_files : 1, sizeof *ix->files);
    ix->parts = mk_calloc(h.n_parts ? h.n_parts : 1, sizeof *ix->parts);
    ix->model = mk_calloc(h.n_model ? h.n_model : 1, sizeof *ix->model);
    uint8_t *used = mk_calloc(h.n_streams ? h.n_streams : 1, 1);
    uint32_t *order = mk_calloc(h.n_files ? h.n_files : 1, sizeof *order);
    mk_status s = MK_OK;
    if (!ix->streams || !ix->blocks || !ix->files || !ix->parts || !ix->model || !used || !order) {
        s = MK_ERR_NOMEM;
        goto done;
    }
    ix->n_blocks = h.n_blocks;
    ix->n_parts = h.n_parts;
    ix->n_model = h.n_model;

    uint64_t next_block = 0, pos = HEADER_SIZE;
    for (uint32_t k = 0; k < h.n_streams; k++) {
        disk_stream d;
        memcpy(&d, p_streams + (size_t)k * sizeof d, sizeof d);
        le_stream(&d);
        mk_mkz_stream *S = &ix->streams[k];
        ix->n_streams = k + 1;
        S->file = NO_FILE;
        if (d.reserved0 || d.reserved1 || d.reserved2) {
            s = damaged(what, "index damaged: stream %u: reserved fields are not zero", k);
            goto done;
        }
        if (d.dtype >= N_DTYPE_CODES) {
            s = damaged(what, "index damaged: stream %u: unknown dtype code %u", k, d.dtype);
            goto done;
        }
        if (d.ndim > MK_MAX_DIMS) {
            s = damaged(what, "index damaged: stream %u: %u dimensions (at most %d)", k, d.ndim, MK_MAX_DIMS);
            goto done;
        }
        for (int i = d.ndim; i < MK_MAX_DIMS; i++)
            if (d.shape[i]) {
                s = damaged(what, "index damaged: stream %u: unused dimension %d is not zero", k, i);
                goto done;
            }
        if (d.dtype == 0) {
            if (d.ndim || d.name_len || d.n_planes != 1) {
                s = damaged(what, "index damaged: byte stream %u has a name, a shape or several planes", k);
                goto done;
            }
            S->es = 1;
            S->n_elems = d.raw_size;
        } else {
            S->is_tensor = true;
            if (d.name_len == 0) {
                s = damaged(what, "index damaged: tensor stream %u has no name", k);
                goto done;
            }
            s = take_name(strings, h.strings_size, d.name_off, d.name_len, lim, what, "stream", k, &S->name);
            if (s) goto done;
            S->t.name = S->name;
            S->t.dtype = mk_dtype_from_name(DTYPE_CODES[d.dtype]);
            S->t.ndim = d.ndim;
            for (int i = 0; i < d.ndim; i++) {
                if (d.shape[i] > (uint64_t)INT64_MAX) {
                    s = damaged(what, "index damaged: tensor %s: dimension %d is too large", S->name, i);
                    goto done;
                }
                S->t.shape[i] = (int64_t)d.shape[i];
            }
            if ((s = mk_tensor_info_finish(&S->t)) != MK_OK) {
                mk_error_prefix(s, "%s: index damaged", what);
                goto done;
            }
            if (S->t.nbytes != d.raw_size) {
                s = damaged(what, "index damaged: tensor %s: %llu bytes recorded, its shape and dtype need %llu", S->name,
                            (unsigned long long)d.raw_size, (unsigned long long)S->t.nbytes);
                goto done;
            }
            S->es = mk_dtype_size(S->t.dtype);
            S->n_elems = S->t.numel;
        }
        char lab[400];
        S->raw_size = d.raw_size;
        S->n_planes = d.n_planes;
        S->block_elems = d.block_elems;
        S->first_block = d.first_block;
        S->n_blocks = d.n_blocks;
        S->hash = (mk_hash128){d.hash_hi, d.hash_lo};
        if (S->n_planes != 1 && S->n_planes != S->es) {
            s = damaged(what, "index damaged: %s: %u byte planes for %u-byte elements", stream_label(ix, k, lab, sizeof lab),
                        S->n_planes, S->es);
            goto done;
        }
        if (S->block_elems == 0 || (uint64_t)S->block_elems * S->es > lim->max_block_raw) {
            s = damaged(what, "index damaged: %s: block of %u elements (limit %llu bytes)", stream_label(ix, k, lab, sizeof lab),
                        S->block_elems, (unsigned long long)lim->max_block_raw);
            goto done;
        }
        uint64_t want = S->n_elems / S->block_elems + (S->n_elems % S->block_elems != 0);
        if (want != S->n_blocks || S->first_block != next_block || S->n_blocks > h.n_blocks - next_block) {
            s = damaged(what, "index damaged: %s: blocks [%u, +%u) where [%llu, +%llu) was expected",
                        stream_label(ix, k, lab, sizeof lab), S->first_block, S->n_blocks, (unsigned long long)next_block,
                        (unsigned long long)want);
            goto done;
        }
        next_block += S->n_blocks;
        for (uint32_t j = 0; j < S->n_blocks; j++) {
            uint32_t g = S->first_block + j;
            disk_block b;
            memcpy(&b, p_blocks + (size_t)g * sizeof b, sizeof b);
            le_block(&b);
            mk_mkz_block *B = &ix->blocks[g];
            B->offset = b.offset;
            B->csize = b.csize;
            B->hash = b.hash;
            memcpy(B->method, b.method, sizeof b.method);
            memcpy(B->plane_csize, b.plane_csize, sizeof b.plane_csize);
            if (b.reserved) {
                s = damaged(what, "index damaged: %s: block %u: reserved field is not zero", stream_label(ix, k, lab, sizeof lab), j);
                goto done;
            }
            if (b.offset != pos) {
                s = damaged(what, "index damaged: %s: block %u at offset %llu, expected %llu (blocks are contiguous)",
                            stream_label(ix, k, lab, sizeof lab), j, (unsigned long long)b.offset, (unsigned long long)pos);
                goto done;
            }
            uint64_t pr = plane_raw(S, j), sum = 0;
            for (unsigned p = 0; p < MAX_PLANES; p++) {
                uint32_t c = b.plane_csize[p];
                bool bad = false;
                if (p >= S->n_planes) bad = c != 0 || b.method[p] != METHOD_STORED;
                else if (b.method[p] == METHOD_STORED) bad = c != pr;
                else if (b.method[p] == METHOD_ZSTD) bad = c == 0 || c > ZSTD_compressBound((size_t)pr);
                else bad = true;
                if (bad) {
                    s = damaged(what, "index damaged: %s: block %u plane %u: method %u with %u bytes for %llu raw bytes",
                                stream_label(ix, k, lab, sizeof lab), j, p, b.method[p], c, (unsigned long long)pr);
                    goto done;
                }
                sum += c;
            }
            if (sum != b.csize) {
                s = damaged(what, "index damaged: %s: block %u: planes add up to %llu bytes, the block records %u",
                            stream_label(ix, k, lab, sizeof lab), j, (unsigned long long)sum, b.csize);
                goto done;
            }
            pos += b.csize;
            S->stored += b.csize;
            if (pos > index_offset) {
                s = damaged(what, "index damaged: %s: block %u runs past the start of the index",
                            stream_label(ix, k, lab, sizeof lab), j);
                goto done;
            }
        }
    }
    if (next_block != h.n_blocks || pos != index_offset) {
        s = damaged(what, "index damaged: the streams cover %llu of %u blocks and %llu of %llu data bytes",
                    (unsigned long long)next_block, h.n_blocks, (unsigned long long)(pos - HEADER_SIZE),
                    (unsigned long long)(index_offset - HEADER_SIZE));
        goto done;
    }
    for (uint32_t i = 0; i < h.n_parts; i++) {
        uint32_t v;
        memcpy(&v, p_parts + (size_t)i * 4, 4);
        ix->parts[i] = le32toh(v);
    }
    uint64_t next_part = 0;
    for (uint32_t f = 0; f < h.n_files; f++) {
        disk_file d;
        memcpy(&d, p_files + (size_t)f * sizeof d, sizeof d);
        le_file(&d);
        mk_mkz_file *F = &ix->files[f];
        ix->n_files = f + 1;
        s = take_name(strings, h.strings_size, d.name_off, d.name_len, lim, what, "file", f, &F->name);
        if (s) goto done;
        if (d.name_len > 255 || !file_name_ok(F->name)) {
            s = damaged(what, "index damaged: file %u: '%.200s' is not a plain file name", f, F->name);
            goto done;
        }
        if (d.reserved) {
            s = damaged(what, "index damaged: file %s: reserved field is not zero", F->name);
            goto done;
        }
        F->size = d.size;
        F->hash = (mk_hash128){d.hash_hi, d.hash_lo};
        F->first_part = d.first_part;
        F->n_parts = d.n_parts;
        if (d.first_part != next_part || d.n_parts > h.n_parts - next_part) {
            s = damaged(what, "index damaged: file %s: parts [%u, +%u) where [%llu, ...) was expected", F->name,
                        d.first_part, d.n_parts, (unsigned long long)next_part);
            goto done;
        }
        next_part += d.n_parts;
        uint64_t size = 0;
        for (uint32_t q = 0; q < d.n_parts; q++) {
            uint32_t k = ix->parts[d.first_part + q];
            if (k >= h.n_streams || used[k]) {
                s = damaged(what, "index damaged: file %s: part %u names stream %u, %s", F->name, q, k,
                            k >= h.n_streams ? "which does not exist" : "which is already a part of a file");
                goto done;
            }
            used[k] = 1;
            ix->streams[k].file = f;
            if (!mk_add_u64(size, ix->streams[k].raw_size, &size)) size = UINT64_MAX;
        }
        if (size != d.size) {
            s = damaged(what, "index damaged: file %s: %llu bytes recorded, its parts hold %llu", F->name,
                        (unsigned long long)d.size, (unsigned long long)size);
            goto done;
        }
        order[f] = f;
    }
    if (next_part != h.n_parts) {
        s = damaged(what, "index damaged: the files use %llu of %u parts", (unsigned long long)next_part, h.n_parts);
        goto done;
    }
    qsort_r(order, h.n_files, sizeof *order, cmp_names, ix->files);
    for (uint32_t f = 1; f < h.n_files; f++)
        if (strcmp(ix->files[order[f]].name, ix->files[order[f - 1]].name) == 0) {
            s = damaged(what, "index damaged: file %s is listed twice", ix->files[order[f]].name);
            goto done;
        }
    memset(used, 0, h.n_streams);
    for (uint32_t i = 0; i < h.n_model; i++) {
        uint32_t v;
        memcpy(&v, p_model + (size_t)i * 4, 4);
        uint32_t k = le32toh(v);
        if (k >= h.n_streams || !ix->streams[k].is_tensor || used[k]) {
            s = damaged(what, "index damaged: model tensor %u names stream %u, which is %s", i, k,
                        k >= h.n_streams ? "out of range" : !ix->streams[k].is_tensor ? "not a tensor" : "listed twice");
            goto done;
        }
        used[k] = 1;
        ix->model[i] = k;
    }
    if (h.n_model) {
        /* the model's tensor names are unique */
        mk_tensor_info *mt = mk_calloc(h.n_model, sizeof *mt);
        mk_name_index nix;
        size_t dup = 0;
        if (!mt) {
            s = MK_ERR_NOMEM;
            goto done;
        }
        for (uint32_t i = 0; i < h.n_model; i++) mt[i] = ix->streams[ix->model[i]].t;
        s = mk_name_index_build(&nix, mt, h.n_model, &dup);
        if (s == MK_ERR_FORMAT) s = damaged(what, "index damaged: the model lists tensor %s twice", mt[dup].name);
        mk_name_index_free(&nix);
        free(mt);
    }
done:
    free(used);
    free(order);
    if (s != MK_OK) mk_mkz_index_free(ix);
    return s;
}

/* ---- input: a file read with pread, or a memory image -------------------------------------- */

typedef struct mkz_in {
    int fd;                   /* -1 for a memory image */
    const unsigned char *mem;
    uint64_t size;
    const char *what;
    uint64_t bytes_read;      /* atomic */
} mkz_in;

static mk_status in_read(mkz_in *in, uint64_t off, uint64_t len, void *dst)
{
    if (off > in->size || len > in->size - off)
        return damaged(in->what, "read of [%llu, +%llu) past the end of the file (%llu bytes; truncated?)",
                       (unsigned long long)off, (unsigned long long)len, (unsigned long long)in->size);
    __atomic_fetch_add(&in->bytes_read, len, __ATOMIC_RELAXED);
    if (in->mem) {
        memcpy(dst, in->mem + off, (size_t)len);
        return MK_OK;
    }
    uint8_t *p = dst;
    while (len) {
        ssize_t r = pread(in->fd, p, len > (1u << 30) ? (1u << 30) : (size_t)len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mk_error(MK_ERR_IO, "%s: read failed: %s", in->what, strerror(errno));
        if (r == 0) return damaged(in->what, "file is shorter than it was when opened (truncated while reading?)");
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return MK_OK;
}

/* A file without the magic number: when its start says what it is (JSON, text, a pickle...),
 * an error saying so; MK_OK when it looks like nothing known (a damaged container). */
static mk_status other_kind(mkz_in *in)
{
    unsigned char head[MK_SNIFF_BYTES];
    size_t n = in->size < sizeof head ? (size_t)in->size : sizeof head;
    if (n) MK_TRY(in_read(in, 0, n, head));
    char kind[160];
    const char *other = mk_sniff(head, n, in->size, false, kind, sizeof kind);
    return other ? damaged(in->what, "not a .mkz container (%s)", other) : MK_OK;
}

/* Header, footer and index of the container behind `in`. */
static mk_status parse_container(mkz_in *in, const mk_mkz_limits *lim, mk_mkz_index *ix)
{
    const char *what = in->what;
    memset(ix, 0, sizeof *ix);
    if (in->size < HEADER_SIZE + FOOTER_SIZE) {
        MK_TRY(other_kind(in));
        return damaged(what, "%llu bytes, too short for a .mkz container", (unsigned long long)in->size);
    }
    disk_header h;
    disk_footer f;
    MK_TRY(in_read(in, 0, sizeof h, &h));
    MK_TRY(in_read(in, in->size - FOOTER_SIZE, sizeof f, &f));
    le_header(&h);
    le_footer(&f);
    if (memcmp(h.magic, MAGIC, sizeof MAGIC) != 0) {
        MK_TRY(other_kind(in));
        return damaged(what, "not a .mkz container, or its header is damaged (bad magic number)");
    }
    if (h.version != MK_MKZ_VERSION)
        return damaged(what, "header: format version %u, this build reads version %u (damaged, or newer than this build)",
                       h.version, MK_MKZ_VERSION);
    if (h.flags) return damaged(what, "header damaged: unknown flags 0x%x", h.flags);
    if (memcmp(f.magic, END_MAGIC, sizeof END_MAGIC) != 0)
        return damaged(what, "footer damaged or file truncated (bad end marker)");
    if (f.version != MK_MKZ_VERSION || f.flags)
        return damaged(what, "footer damaged: version %u, flags 0x%x (want %u, 0)", f.version, f.flags, MK_MKZ_VERSION);
    uint64_t room = in->size - HEADER_SIZE - FOOTER_SIZE;
    if (f.index_size > lim->max_index || f.index_size > room || f.index_offset != in->size - FOOTER_SIZE - f.index_size)
        return damaged(what, "footer damaged or file truncated: index of %llu bytes at %llu in a %llu-byte file (limit %llu)",
                       (unsigned long long)f.index_size, (unsigned long long)f.index_offset, (unsigned long long)in->size,
                       (unsigned long long)lim->max_index);
    uint8_t *ib = mk_malloc(f.index_size ? (size_t)f.index_size : 1);
    if (!ib) return MK_ERR_NOMEM;
    mk_status s = in_read(in, f.index_offset, f.index_size, ib);
    if (s == MK_OK) {
        mk_hash128 got = mk_hash128_bytes(ib, (size_t)f.index_size);
        if (got.hi != f.index_hash_hi || got.lo != f.index_hash_lo) {
            char a[33], b[33];
            mk_hash128_hex(got, a);
            mk_hash128_hex((mk_hash128){f.index_hash_hi, f.index_hash_lo}, b);
            s = damaged(what, "index damaged: XXH3-128 is %s, the footer records %s", a, b);
        }
    }
    if (s == MK_OK) s = parse_index(ib, f.index_size, in->size, f.index_offset, lim, what, ix);
    free(ib);
    return s;
}

mk_status mk_mkz_parse(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what, mk_mkz_index *ix)
{
    mkz_in in = {-1, buf, len, what, 0};
    return parse_container(&in, lim ? lim : &MK_MKZ_LIMITS_DEFAULT, ix);
}

/* ---- byte planes ---------------------------------------------------------------------------- */

/* Element i's byte p goes to plane p (little-endian bytes: plane es-1 holds the sign and
 * the high exponent bits of a float). SSE2 (baseline on x86-64) does 16 elements a step;
 * the scalar loops are the reference and finish the tails. */
static void split_scalar(const uint8_t *in, unsigned np, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++)
        for (unsigned p = 0; p < np; p++) out[p * n + i] = in[i * np + p];
}

static void merge_scalar(const uint8_t *const *pl, unsigned np, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++)
        for (unsigned p = 0; p < np; p++) out[i * np + p] = pl[p][i];
}

#ifdef __SSE2__
#include <emmintrin.h>
#define LD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define ST(p, v) _mm_storeu_si128((__m128i *)(void *)(p), (v))

/* 32 bytes of 16-bit lanes -> their 16 low bytes and their 16 high bytes */
static inline void unzip8(__m128i x, __m128i y, __m128i *even, __m128i *odd)
{
    const __m128i m = _mm_set1_epi16(0x00ff);
    *even = _mm_packus_epi16(_mm_and_si128(x, m), _mm_and_si128(y, m));
    *odd = _mm_packus_epi16(_mm_srli_epi16(x, 8), _mm_srli_epi16(y, 8));
}
#endif

static void planes_split(const uint8_t *in, unsigned np, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    if (np == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i e, o;
            unzip8(LD(in + 2 * i), LD(in + 2 * i + 16), &e, &o);
            ST(out + i, e);
            ST(out + n + i, o);
        }
    } else if (np == 4) {
        for (; i + 16 <= n; i += 16) {
            __m128i e0, o0, e1, o1, p0, p1, p2, p3;
            unzip8(LD(in + 4 * i), LD(in + 4 * i + 16), &e0, &o0);      /* bytes 0,2 / 1,3 of elements 0..7 */
            unzip8(LD(in + 4 * i + 32), LD(in + 4 * i + 48), &e1, &o1); /* ... of elements 8..15 */
            unzip8(e0, e1, &p0, &p2);
            unzip8(o0, o1, &p1, &p3);
            ST(out + i, p0);
            ST(out + n + i, p1);
            ST(out + 2 * n + i, p2);
            ST(out + 3 * n + i, p3);
        }
    }
#endif
    split_scalar(in, np, i, n, out);
}

static void planes_merge(const uint8_t *const *pl, unsigned np, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    if (np == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = LD(pl[0] + i), b = LD(pl[1] + i);
            ST(out + 2 * i, _mm_unpacklo_epi8(a, b));
            ST(out + 2 * i + 16, _mm_unpackhi_epi8(a, b));
        }
    } else if (np == 4) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = LD(pl[0] + i), b = LD(pl[1] + i), c = LD(pl[2] + i), d = LD(pl[3] + i);
            __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
            __m128i cd0 = _mm_unpacklo_epi8(c, d), cd1 = _mm_unpackhi_epi8(c, d);
            ST(out + 4 * i, _mm_unpacklo_epi16(ab0, cd0));
            ST(out + 4 * i + 16, _mm_unpackhi_epi16(ab0, cd0));
            ST(out + 4 * i + 32, _mm_unpacklo_epi16(ab1, cd1));
            ST(out + 4 * i + 48, _mm_unpackhi_epi16(ab1, cd1));
        }
    }
#endif
    merge_scalar(pl, np, i, n, out);
}

/* ---- block decoding ------------------------------------------------------------------------- */

typedef struct mkz_dctx {
    ZSTD_DCtx *dc;
    uint8_t *pay, *planes;
    size_t pay_cap, planes_cap;
} mkz_dctx;

static void dctx_free(mkz_dctx *c)
{
    if (!c) return;
    ZSTD_freeDCtx(c->dc);
    free(c->pay);
    free(c->planes);
    memset(c, 0, sizeof *c);
}

static mk_status grow(uint8_t **p, size_t *cap, size_t need)
{
    if (*cap >= need) return MK_OK;
    uint8_t *n = mk_realloc(*p, need ? need : 1);
    if (!n) return MK_ERR_NOMEM;
    *p = n;
    *cap = need;
    return MK_OK;
}

/* A stack of reusable objects (zstd contexts with their buffers), one per concurrent user. */
typedef struct obj_pool {
    pthread_mutex_t mu;
    void **v;
    size_t n, cap;
    void (*destroy)(void *);
} obj_pool;

static void pool_init(obj_pool *p, void (*destroy)(void *))
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->destroy = destroy;
}

static void *pool_get(obj_pool *p)
{
    pthread_mutex_lock(&p->mu);
    void *o = p->n ? p->v[--p->n] : NULL;
    pthread_mutex_unlock(&p->mu);
    return o;
}

static void pool_return(obj_pool *p, void *o)
{
    if (!o) return;
    pthread_mutex_lock(&p->mu);
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        void **nv = realloc(p->v, cap * sizeof *nv);
        if (nv) {
            p->v = nv;
            p->cap = cap;
        }
    }
    if (p->n < p->cap) {
        p->v[p->n++] = o;
        o = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (o) p->destroy(o);
}

static void pool_free(obj_pool *p)
{
    for (size_t i = 0; i < p->n; i++) p->destroy(p->v[i]);
    free(p->v);
    pthread_mutex_destroy(&p->mu);
}

static void dctx_destroy(void *o)
{
    dctx_free(o);
    free(o);
}

/* Decode block j of stream k into out (blk_raw bytes): stored bytes checked against the
 * block's XXH3-64 first, then each zstd frame must be one frame of exactly the plane size. */
static mk_status block_decode(mkz_in *in, const mk_mkz_index *ix, uint32_t k, uint32_t j, mkz_dctx *c, uint8_t *out)
{
    const mk_mkz_stream *S = &ix->streams[k];
    const mk_mkz_block *B = &ix->blocks[S->first_block + j];
    char lab[400];
    if (!c->dc && !(c->dc = ZSTD_createDCtx())) return mk_error(MK_ERR_NOMEM, "out of memory for a zstd context");
    const uint8_t *pay;
    if (in->mem && B->offset <= in->size && B->csize <= in->size - B->offset) {
        pay = in->mem + B->offset;
        __atomic_fetch_add(&in->bytes_read, B->csize, __ATOMIC_RELAXED);
    } else {
        MK_TRY(grow(&c->pay, &c->pay_cap, B->csize));
        MK_TRY(in_read(in, B->offset, B->csize, c->pay));
        pay = c->pay;
    }
    if (mk_hash64(pay, B->csize) != B->hash)
        return damaged(in->what, "%s: block %u of %u is damaged (checksum mismatch at bytes %llu..%llu)",
                       stream_label(ix, k, lab, sizeof lab), j, S->n_blocks, (unsigned long long)B->offset,
                       (unsigned long long)(B->offset + B->csize));
    uint64_t pr = plane_raw(S, j), n = blk_elems(S, j);
    const uint8_t *pl[MAX_PLANES];
    if (S->n_planes > 1) MK_TRY(grow(&c->planes, &c->planes_cap, (size_t)(pr * S->n_planes)));
    uint64_t at = 0;
    for (unsigned p = 0; p < S->n_planes; p++) {
        const uint8_t *src = pay + at;
        uint32_t cs = B->plane_csize[p];
        at += cs;
        if (B->method[p] == METHOD_STORED) {
            pl[p] = src;
            continue;
        }
        uint8_t *dst = S->n_planes == 1 ? out : c->planes + p * pr;
        unsigned long long fcs = ZSTD_getFrameContentSize(src, cs);
        size_t fsz = ZSTD_findFrameCompressedSize(src, cs);
        if (fcs != pr || ZSTD_isError(fsz) || fsz != cs)
            return damaged(in->what, "%s: block %u plane %u: the zstd frame declares %llu bytes in %zu, expected %llu in %u",
                           stream_label(ix, k, lab, sizeof lab), j, p, fcs, ZSTD_isError(fsz) ? 0 : fsz,
                           (unsigned long long)pr, cs);
        size_t r = ZSTD_decompressDCtx(c->dc, dst, (size_t)pr, src, cs);
        if (ZSTD_isError(r) || r != pr)
            return damaged(in->what, "%s: block %u plane %u does not decompress (%s)", stream_label(ix, k, lab, sizeof lab),
                           j, p, ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong size");
        pl[p] = dst;
    }
    if (S->n_planes > 1) planes_merge(pl, S->n_planes, (size_t)n, out);
    else if (pl[0] != out) memcpy(out, pl[0], (size_t)pr);
    return MK_OK;
}

/* ---- walking streams in order: verify, unpack, read-back ------------------------------------ */

typedef mk_status (*walk_fn)(void *ctx, const uint8_t *data, size_t len);

typedef struct walker {
    mkz_in *in;
    mk_mkz_index *ix;
    bool compute;           /* store the hashes (a writer reading back) instead of checking them */
    mk_mkz_progress_fn progress;
    void *pctx;
    size_t items_done, items_total;
    uint64_t bytes_done, bytes_total;
    size_t nb;              /* blocks decoded per parallel batch */
    uint8_t **buf;
    size_t *cap;
    mkz_dctx *dc;           /* one per thread */
    int nthr;
    struct went { uint32_t si, j; } *ents;
} walker;

static void walker_free(walker *w)
{
    for (size_t q = 0; q < w->nb && w->buf; q++) free(w->buf[q]);
    for (int t = 0; t < w->nthr && w->dc; t++) dctx_free(&w->dc[t]);
    free(w->buf);
    free(w->cap);
    free(w->dc);
    free(w->ents);
}

static mk_status walker_init(walker *w, mkz_in *in, mk_mkz_index *ix, bool compute)
{
    memset(w, 0, sizeof *w);
    w->in = in;
    w->ix = ix;
    w->compute = compute;
    w->nthr = mk_threads_get();
    w->nb = (size_t)(w->nthr < 2 ? 4 : 2 * w->nthr);
    w->buf = mk_calloc(w->nb, sizeof *w->buf);
    w->cap = mk_calloc(w->nb, sizeof *w->cap);
    w->dc = mk_calloc((size_t)w->nthr, sizeof *w->dc);
    w->ents = mk_calloc(w->nb, sizeof *w->ents);
    if (!w->buf || !w->cap || !w->dc || !w->ents) {
        walker_free(w);
        return MK_ERR_NOMEM;
    }
    for (size_t k = 0; k < ix->n_streams; k++) w->bytes_total += ix->streams[k].raw_size;
    w->items_total = ix->n_streams;
    return MK_OK;
}

static mk_status stream_hash_done(walker *w, uint32_t k, mk_hasher *sh)
{
    mk_mkz_stream *S = &w->ix->streams[k];
    mk_hash128 got = mk_hasher_digest(sh);
    if (w->compute) S->hash = got;
    else if (!mk_hash128_eq(got, S->hash)) {
        char a[33], b[33], lab[400];
        mk_hash128_hex(got, a);
        mk_hash128_hex(S->hash, b);
        return damaged(w->in->what, "%s: XXH3-128 of its bytes is %s, the index records %s",
                       stream_label(w->ix, k, lab, sizeof lab), a, b);
    }
    w->items_done++;
    w->bytes_done += S->raw_size;
    if (w->progress) {
        char lab[400];
        w->progress(w->pctx, w->items_done, w->items_total, w->bytes_done, w->bytes_total, stream_label(w->ix, k, lab, sizeof lab));
    }
    return MK_OK;
}

/* Decode streams list[n] in order, batches of blocks in parallel; check (or compute) each
 * stream's hash; feed every byte in order to the file hasher fh and to fn (both optional). */
static mk_status walk_streams(walker *w, const uint32_t *list, size_t n, mk_hasher *fh, walk_fn fn, void *ctx)
{
    mk_mkz_index *ix = w->ix;
    size_t ci = 0, hs = 0;
    uint32_t cj = 0;
    mk_hasher *sh = n ? mk_hasher_new() : NULL;
    if (n && !sh) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    while (s == MK_OK) {
        size_t m = 0;
        while (m < w->nb && ci < n) {
            if (cj < ix->streams[list[ci]].n_blocks) {
                w->ents[m].si = (uint32_t)ci;
                w->ents[m++].j = cj++;
            } else {
                ci++;
                cj = 0;
            }
        }
        if (m == 0) break;
        mk_status first = MK_OK;
        size_t first_q = SIZE_MAX;
        char msg[1024] = "";
        MK_OMP("omp parallel for schedule(dynamic, 1) if (m > 1)")
        for (int64_t qq = 0; qq < (int64_t)m; qq++) {
            size_t q = (size_t)qq;
            uint32_t k = list[w->ents[q].si], j = w->ents[q].j;
            mk_status st = grow(&w->buf[q], &w->cap[q], (size_t)blk_raw(&ix->streams[k], j));
            if (st == MK_OK) st = block_decode(w->in, ix, k, j, &w->dc[thr_id()], w->buf[q]);
            if (st != MK_OK) {
                MK_OMP("omp critical(mkz_walk_err)")
                if (q < first_q) {
                    first_q = q;
                    first = st;
                    snprintf(msg, sizeof msg, "%s", mk_errmsg());
                }
            }
        }
        if (first != MK_OK) {
            s = mk_error(first, "%s", msg);
            break;
        }
        for (size_t q = 0; q < m && s == MK_OK; q++) {
            while (hs < w->ents[q].si && s == MK_OK) {
                s = stream_hash_done(w, list[hs++], sh);
                mk_hasher_free(sh);
                if (!(sh = mk_hasher_new())) s = MK_ERR_NOMEM;
            }
            if (s != MK_OK) break;
            uint32_t k = list[w->ents[q].si];
            size_t len = (size_t)blk_raw(&ix->streams[k], w->ents[q].j);
            mk_hasher_update(sh, w->buf[q], len);
            if (fh) mk_hasher_update(fh, w->buf[q], len);
            if (fn) s = fn(ctx, w->buf[q], len);
        }
        if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    }
    while (s == MK_OK && hs < n) {
        s = stream_hash_done(w, list[hs++], sh);
        mk_hasher_free(sh);
        sh = NULL;
        if (s == MK_OK && hs < n && !(sh = mk_hasher_new())) s = MK_ERR_NOMEM;
    }
    mk_hasher_free(sh);
    return s;
}

/* Walk file f; check (or compute) its size and hash. */
static mk_status walk_file(walker *w, uint32_t f, walk_fn fn, void *ctx)
{
    mk_mkz_file *F = &w->ix->files[f];
    mk_hasher *fh = mk_hasher_new();
    if (!fh) return MK_ERR_NOMEM;
    mk_status s = walk_streams(w, w->ix->parts + F->first_part, F->n_parts, fh, fn, ctx);
    if (s == MK_OK) {
        mk_hash128 got = mk_hasher_digest(fh);
        if (w->compute) F->hash = got;
        else if (!mk_hash128_eq(got, F->hash)) {
            char a[33], b[33];
            mk_hash128_hex(got, a);
            mk_hash128_hex(F->hash, b);
            s = damaged(w->in->what, "file %s: XXH3-128 of its bytes is %s, the index records %s", F->name, a, b);
        }
    }
    mk_hasher_free(fh);
    return s;
}

/* Every file, then the streams that belong to no file. */
static mk_status walk_all(walker *w, mk_status (*open_file)(void *ctx, uint32_t f), walk_fn fn,
                          mk_status (*close_file)(void *ctx, uint32_t f), void *ctx)
{
    mk_mkz_index *ix = w->ix;
    for (uint32_t f = 0; f < ix->n_files; f++) {
        if (open_file) MK_TRY(open_file(ctx, f));
        mk_status s = walk_file(w, f, fn, ctx);
        if (close_file) {
            mk_status c = close_file(ctx, f);
            if (s == MK_OK) s = c;
        }
        MK_TRY(s);
    }
    size_t n = 0;
    uint32_t *loose = mk_calloc(ix->n_streams ? ix->n_streams : 1, sizeof *loose);
    if (!loose) return MK_ERR_NOMEM;
    for (size_t k = 0; k < ix->n_streams; k++)
        if (ix->streams[k].file == NO_FILE) loose[n++] = (uint32_t)k;
    mk_status s = walk_streams(w, loose, n, NULL, NULL, NULL);
    free(loose);
    return s;
}

mk_status mk_mkz_verify_buffer(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what)
{
    mkz_in in = {-1, buf, len, what, 0};
    mk_mkz_index ix;
    MK_TRY(parse_container(&in, lim ? lim : &MK_MKZ_LIMITS_DEFAULT, &ix));
    walker w;
    mk_status s = walker_init(&w, &in, &ix, false);
    if (s == MK_OK) s = walk_all(&w, NULL, NULL, NULL, NULL);
    walker_free(&w);
    mk_mkz_index_free(&ix);
    return s;
}

/* ---- the source ------------------------------------------------------------------------------ */

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
    obj_pool dctx;
    pthread_mutex_t mu;       /* guards the cache */
    cache_ent *cache;
    size_t n_cache;
    uint64_t tick;
} mkz_src;

static const mk_source_ops mkz_ops;

static mk_status decode_to(mkz_src *z, uint32_t k, uint32_t j, uint8_t *out)
{
    mkz_dctx *c = pool_get(&z->dctx);
    if (!c && !(c = mk_calloc(1, sizeof *c))) return MK_ERR_NOMEM;
    mk_status s = block_decode(&z->in, &z->ix, k, j, c, out);
    pool_return(&z->dctx, c);
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
    uint8_t *buf = mk_malloc((size_t)blk_raw(&z->ix.streams[k], j));
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
        uint64_t boff = off - (uint64_t)j * bb, braw = blk_raw(S, j);
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
        walker w;
        mk_status st = walker_init(&w, &z->in, &z->ix, false);
        if (st == MK_OK) st = walk_file(&w, f, to_membuf, &m);
        walker_free(&w);
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
        pool_free(&z->dctx);
        for (size_t e = 0; e < z->n_cache; e++) free(z->cache[e].data);
        free(z->cache);
        pthread_mutex_destroy(&z->mu);
        free(z);
    }
    mk_source_free_fields(s);
}

static const mk_source_ops mkz_ops = {src_read, NULL, NULL, NULL, src_aux_read, src_aux_list, src_close};

bool mk_mkz_probe(const char *path)
{
    if (!mk_is_file(path)) return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    unsigned char m[8];
    bool ok = pread(fd, m, 8, 0) == 8 && memcmp(m, MAGIC, 8) == 0;
    close(fd);
    return ok;
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
    pool_init(&z->dctx, dctx_destroy);
    z->in.fd = -1;
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
    struct stat st;
    if (r == MK_OK) {
        z->in.fd = open(path, O_RDONLY | O_CLOEXEC);
        if (z->in.fd < 0) r = mk_error(MK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        else if (fstat(z->in.fd, &st) != 0 || !S_ISREG(st.st_mode))
            r = mk_error(MK_ERR_FORMAT, "%s: not a regular file", path);
    }
    if (r == MK_OK) {
        z->in.size = (uint64_t)st.st_size;
        z->in.what = s->path;
        r = parse_container(&z->in, &MK_MKZ_LIMITS_DEFAULT, &z->ix);
    }
    if (r == MK_OK) {
        s->tensors = mk_calloc(z->ix.n_model ? z->ix.n_model : 1, sizeof *s->tensors);
        z->aux = mk_calloc(z->ix.n_files + 1, sizeof *z->aux);
        z->n_cache = (size_t)(2 * mk_threads_get() + 2);
        z->cache = mk_calloc(z->n_cache, sizeof *z->cache);
        if (!s->tensors || !z->aux || !z->cache) r = MK_ERR_NOMEM;
    }
    for (size_t i = 0; r == MK_OK && i < z->ix.n_model; i++) {
        mk_tensor_info *t = &s->tensors[i];
        *t = z->ix.streams[z->ix.model[i]].t;
        t->file = 0;
        t->offset = 0;
        if (!(t->name = mk_strdup(t->name))) r = MK_ERR_NOMEM;
        else s->n_tensors++;
    }
    /* auxiliary files as a model folder lists them: not weights, not hidden */
    for (size_t f = 0, n = 0; r == MK_OK && f < z->ix.n_files; f++) {
        const char *nm = z->ix.files[f].name;
        if (nm[0] == '.' || mk_modeldir_is_weight_name(nm)) continue;
        if (!(z->aux[n++] = mk_strdup(nm))) r = MK_ERR_NOMEM;
    }
    if (r == MK_OK) r = mk_name_index_build(&s->index, s->tensors, s->n_tensors, NULL); /* unique: checked by the parser */
    if (r != MK_OK) {
        src_close(s);
        return r;
    }
    *out = s;
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

mk_status mk_mkz_verify(mk_source *s, mk_mkz_progress_fn progress, void *ctx)
{
    if (s->ops != &mkz_ops) return mk_error(MK_ERR_USAGE, "%s: not a .mkz container", s->path);
    mkz_src *z = s->impl;
    walker w;
    MK_TRY(walker_init(&w, &z->in, &z->ix, false));
    w.progress = progress;
    w.pctx = ctx;
    mk_status st = walk_all(&w, NULL, NULL, NULL, NULL);
    walker_free(&w);
    return st;
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
    if (s->ops != &mkz_ops) return mk_error(MK_ERR_USAGE, "%s: not a .mkz container", s->path);
    mkz_src *z = s->impl;
    walker w;
    MK_TRY(walker_init(&w, &z->in, &z->ix, false));
    w.progress = progress;
    w.pctx = ctx;
    unpack_ctx u = {z, dir, NULL, -1};
    mk_status st = walk_all(&w, unpack_open, unpack_write, unpack_close, &u);
    if (u.fd >= 0) close(u.fd);
    free(u.path);
    walker_free(&w);
    return st;
}

/* ---- writer core: streams and files declared, blocks compressed anywhere, appended in order -- */

typedef struct wctx {
    ZSTD_CCtx *ent; /* "entropy" mode: no useful match search, Huffman-coded literals */
    ZSTD_CCtx *lz;  /* ordinary LZ + entropy coding at lz_level */
    int lz_level;
    uint8_t *planes, *out, *tmp;
    size_t planes_cap, out_cap, tmp_cap;
} wctx;

enum { WB_EMPTY = 0, WB_FILLING, WB_FULL, WB_READY, WB_SPILLED, WB_EMITTED };

typedef struct wblock {
    uint8_t state;
    uint8_t *raw;      /* sink: the block's bytes as they arrive */
    uint64_t filled;
    uint8_t *payload;  /* finished, waiting for its turn (WB_READY) */
    uint64_t spill_off;/* WB_SPILLED */
} wblock;

typedef struct wsrc {
    const uint8_t *base; /* the stream's bytes (pack: a mapping) */
    const mk_map *map;
    uint64_t map_off;
} wsrc;

typedef struct mkz_writer {
    int fd;
    char *path;
    int level;
    bool pack;               /* streams come from mappings: hash them as blocks are appended */
    mk_mkz_index ix;         /* what the index will say */
    size_t cap_streams, cap_blocks, cap_files, cap_parts, cap_model;
    wblock *wb;              /* [ix.n_blocks] */
    uint32_t *block_stream;  /* [ix.n_blocks] */
    wsrc *src;               /* [ix.n_streams] */
    pthread_mutex_t mu;      /* guards everything below and the appends */
    uint64_t pos;            /* end of the data written so far */
    uint32_t next_emit;      /* the block that must be appended next */
    uint64_t pending, pending_max;
    int spill_fd;
    uint64_t spill_pos;
    mk_status err;           /* sticky: the first failure */
    char errmsg[1024];
    obj_pool cctx;           /* wctx */
    mk_hasher *sh, *fh;      /* pack: the stream and the file being appended */
    uint32_t fh_file;
    mk_mkz_progress_fn progress;
    void *pctx;
    size_t items_done;
    uint64_t bytes_done, bytes_total;
} mkz_writer;

#define ENTROPY_LEVEL (-1000) /* zstd "fast" acceleration: practically no matches (3.4 of the reference notes) */

static void wctx_free(void *o)
{
    wctx *c = o;
    if (!c) return;
    ZSTD_freeCCtx(c->ent);
    ZSTD_freeCCtx(c->lz);
    free(c->planes);
    free(c->out);
    free(c->tmp);
    free(c);
}

static wctx *wctx_new(void)
{
    wctx *c = mk_calloc(1, sizeof *c);
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

static wctx *w_take(mkz_writer *w)
{
    wctx *c = pool_get(&w->cctx);
    return c ? c : wctx_new();
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

static mk_status w_err(mkz_writer *w) { return mk_error(w->err, "%s", w->errmsg); }

static mk_status lz_compress(wctx *c, int level, uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t *out)
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

/* One plane into dst (capacity ZSTD_compressBound(n)). Tensor planes: entropy mode, which
 * is both smaller and 2-3x faster than LZ on exponent planes (3.4 of the notes); LZ is
 * also tried at levels >= 2 on planes that entropy mode compresses at all (mantissa planes
 * are noise: no level finds anything there), or at any level when the plane is so skewed
 * (ratio > 3.5) that runs are likely. Byte streams (JSON, text): LZ at level >= 3. A plane
 * that gains less than 5 % is stored. */
static mk_status plane_encode(mkz_writer *w, wctx *c, bool tensor, const uint8_t *src, size_t n, uint8_t *dst,
                              uint8_t *method, uint32_t *csize)
{
    size_t cap = ZSTD_compressBound(n), best = SIZE_MAX;
    if (tensor) {
        size_t r = ZSTD_compress2(c->ent, dst, cap, src, n);
        if (ZSTD_isError(r)) return mk_error(MK_ERR_NOMEM, "zstd compression failed: %s", ZSTD_getErrorName(r));
        best = r;
    }
    bool gains = best < n - n / 20;
    if (!tensor || (w->level >= 2 && gains) || (uint64_t)best * 7 < (uint64_t)n * 2) {
        uint8_t *out = tensor ? c->tmp : dst;
        size_t r = 0;
        MK_TRY(lz_compress(c, tensor ? w->level : (w->level > 3 ? w->level : 3), out, cap, src, n, &r));
        if (r < best) {
            if (out != dst) memcpy(dst, out, r);
            best = r;
        }
    }
    if (best >= n - n / 20) {
        memcpy(dst, src, n);
        *method = METHOD_STORED;
        *csize = (uint32_t)n;
    } else {
        *method = METHOD_ZSTD;
        *csize = (uint32_t)best;
    }
    return MK_OK;
}

/* Compress block j of stream k from its raw bytes into c->out; fill the record (but
 * not its offset). */
static mk_status block_encode(mkz_writer *w, wctx *c, uint32_t k, uint32_t j, const uint8_t *raw, mk_mkz_block *rec)
{
    const mk_mkz_stream *S = &w->ix.streams[k];
    uint64_t n = blk_elems(S, j), pr = plane_raw(S, j);
    size_t bound = ZSTD_compressBound((size_t)pr);
    const uint8_t *pl[MAX_PLANES];
    if (S->n_planes > 1) {
        MK_TRY(grow(&c->planes, &c->planes_cap, (size_t)(pr * S->n_planes)));
        planes_split(raw, S->n_planes, (size_t)n, c->planes);
        for (unsigned p = 0; p < S->n_planes; p++) pl[p] = c->planes + p * pr;
    } else {
        pl[0] = raw;
    }
    MK_TRY(grow(&c->out, &c->out_cap, bound * S->n_planes));
    MK_TRY(grow(&c->tmp, &c->tmp_cap, bound));
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

/* pack: stream and file hashes from the source bytes, in file order, as blocks go out. */
static mk_status pack_hash(mkz_writer *w, uint32_t k, uint32_t j)
{
    mk_mkz_stream *S = &w->ix.streams[k];
    const wsrc *src = &w->src[k];
    uint64_t bb = (uint64_t)S->block_elems * S->es, len = blk_raw(S, j);
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
                        stream_label(&w->ix, k, lab, sizeof lab));
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
    w->wb[g].state = WB_EMITTED;
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
        wblock *b = &w->wb[g];
        uint32_t cs = w->ix.blocks[g].csize;
        if (b->state == WB_READY) {
            MK_TRY(emit_locked(w, g, b->payload));
            w->pending -= cs;
            free(b->payload);
            b->payload = NULL;
        } else if (b->state == WB_SPILLED) {
            uint8_t *buf = mk_malloc(cs ? cs : 1);
            if (!buf) return MK_ERR_NOMEM;
            mkz_in sp = {w->spill_fd, NULL, w->spill_pos, w->path, 0};
            mk_status s = in_read(&sp, b->spill_off, cs, buf);
            if (s == MK_OK) s = emit_locked(w, g, buf);
            free(buf);
            MK_TRY(s);
        } else {
            break;
        }
    }
    return MK_OK;
}

/* A finished block: append it now if it is next, else hold it (in memory up to
 * pending_max bytes, then in an unlinked spill file) until its turn. Thread-safe. */
static mk_status submit(mkz_writer *w, uint32_t g, const uint8_t *payload, const mk_mkz_block *rec)
{
    pthread_mutex_lock(&w->mu);
    mk_status s = w->err ? w_err(w) : MK_OK;
    if (s == MK_OK) {
        w->ix.blocks[g] = *rec;
        wblock *b = &w->wb[g];
        if (g == w->next_emit) {
            s = emit_locked(w, g, payload);
            if (s == MK_OK) s = drain_locked(w);
        } else if (w->pending + rec->csize <= w->pending_max) {
            b->payload = mk_malloc(rec->csize ? rec->csize : 1);
            if (!b->payload) s = MK_ERR_NOMEM;
            else {
                memcpy(b->payload, payload, rec->csize);
                w->pending += rec->csize;
                b->state = WB_READY;
            }
        } else {
            if (w->spill_fd < 0) {
                char *sp = mk_asprintf("%s.spill", w->path);
                if (!sp) s = MK_ERR_NOMEM;
                else {
                    unlink(sp);
                    w->spill_fd = open(sp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                    if (w->spill_fd < 0) s = mk_error(MK_ERR_IO, "%s: cannot create: %s", sp, strerror(errno));
                    else unlink(sp); /* nameless: gone when closed, whatever happens */
                    free(sp);
                }
            }
            if (s == MK_OK) s = mk_pwrite_all(w->spill_fd, payload, rec->csize, w->spill_pos, w->path);
            if (s == MK_OK) {
                b->spill_off = w->spill_pos;
                w->spill_pos += rec->csize;
                b->state = WB_SPILLED;
            }
        }
        if (s != MK_OK) w_fail_locked(w, s);
    }
    pthread_mutex_unlock(&w->mu);
    return s;
}

static mk_status compress_submit(mkz_writer *w, wctx *c, uint32_t g, const uint8_t *raw)
{
    uint32_t k = w->block_stream[g];
    mk_mkz_block rec;
    mk_status s = block_encode(w, c, k, g - w->ix.streams[k].first_block, raw, &rec);
    if (s != MK_OK) {
        pthread_mutex_lock(&w->mu);
        w_fail_locked(w, s);
        pthread_mutex_unlock(&w->mu);
        return s;
    }
    return submit(w, g, c->out, &rec);
}

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
    if (cols == 0 || cols >= TENSOR_BLOCK_ELEMS) return TENSOR_BLOCK_ELEMS;
    return (uint32_t)(TENSOR_BLOCK_ELEMS / cols * cols);
}

/* Declare a stream: a tensor (t) or `raw_size` plain bytes (t == NULL). Not while blocks
 * are being written. */
static mk_status w_add_stream(mkz_writer *w, const mk_tensor_info *t, uint64_t raw_size, uint32_t *id)
{
    size_t k = w->ix.n_streams;
    if (k >= UINT32_MAX - 1) return mk_error(MK_ERR_UNSUPPORTED, "%s: too many streams", w->path);
    size_t old_cap = w->cap_streams;
    GROW(w->ix.streams, k, w->cap_streams, k + 1);
    if (w->cap_streams != old_cap) {
        wsrc *ns = mk_realloc_array(w->src, w->cap_streams, sizeof *ns);
        if (!ns) return MK_ERR_NOMEM;
        memset(ns + old_cap, 0, (w->cap_streams - old_cap) * sizeof *ns);
        w->src = ns;
    }
    mk_mkz_stream *S = &w->ix.streams[k];
    memset(S, 0, sizeof *S);
    S->file = NO_FILE;
    if (t) {
        if (!dtype_code(t->dtype)) return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: dtype %s has no .mkz code", t->name, mk_dtype_name(t->dtype));
        if (strlen(t->name) > MK_MKZ_LIMITS_DEFAULT.max_name)
            return mk_error(MK_ERR_UNSUPPORTED, "tensor %.100s...: a name of %zu bytes is over the .mkz limit of %llu",
                            t->name, strlen(t->name), (unsigned long long)MK_MKZ_LIMITS_DEFAULT.max_name);
        if (!(S->name = mk_strdup(t->name))) return MK_ERR_NOMEM;
        S->is_tensor = true;
        S->t = *t;
        S->t.name = S->name;
        S->es = mk_dtype_size(t->dtype);
        S->n_planes = S->es;
        S->n_elems = t->numel;
        S->raw_size = t->nbytes;
        S->block_elems = tensor_block_elems(t);
    } else {
        S->es = 1;
        S->n_planes = 1;
        S->n_elems = S->raw_size = raw_size;
        S->block_elems = BYTES_BLOCK;
    }
    uint64_t nb = S->n_elems / S->block_elems + (S->n_elems % S->block_elems != 0);
    if (nb > UINT32_MAX - w->ix.n_blocks) return mk_error(MK_ERR_UNSUPPORTED, "%s: too many blocks", w->path);
    S->first_block = (uint32_t)w->ix.n_blocks;
    S->n_blocks = (uint32_t)nb;
    size_t want = w->ix.n_blocks + (size_t)nb, old = w->cap_blocks;
    GROW(w->ix.blocks, w->ix.n_blocks, w->cap_blocks, want);
    if (w->cap_blocks != old) {
        wblock *nw = mk_realloc_array(w->wb, w->cap_blocks, sizeof *nw);
        if (!nw) return MK_ERR_NOMEM;
        w->wb = nw;
        uint32_t *nbs = mk_realloc_array(w->block_stream, w->cap_blocks, sizeof *nbs);
        if (!nbs) return MK_ERR_NOMEM;
        w->block_stream = nbs;
    }
    for (size_t g = w->ix.n_blocks; g < want; g++) {
        memset(&w->wb[g], 0, sizeof w->wb[g]);
        w->block_stream[g] = (uint32_t)k;
    }
    w->ix.n_blocks = want;
    w->ix.n_streams = k + 1;
    w->bytes_total += S->raw_size;
    *id = (uint32_t)k;
    return MK_OK;
}

static mk_status w_add_file(mkz_writer *w, const char *name, const uint32_t *parts, size_t n, uint32_t *id)
{
    if (!file_name_ok(name) || strlen(name) > 255)
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

static mk_status w_add_model(mkz_writer *w, uint32_t k)
{
    GROW(w->ix.model, w->ix.n_model, w->cap_model, w->ix.n_model + 1);
    w->ix.model[w->ix.n_model++] = k;
    return MK_OK;
}

/* Compress blocks [g0, g1) whose streams have a source (w->src[k].base), in parallel. */
static mk_status w_compress_range(mkz_writer *w, uint32_t g0, uint32_t g1)
{
    mk_status first = MK_OK;
    uint32_t first_g = UINT32_MAX;
    char msg[1024] = "";
    int stop = 0;
    MK_OMP("omp parallel")
    {
        wctx *c = w_take(w);
        MK_OMP("omp for schedule(dynamic, 1)")
        for (int64_t gg = g0; gg < (int64_t)g1; gg++) {
            uint32_t g = (uint32_t)gg;
            int stopped;
            MK_OMP("omp atomic read")
            stopped = stop;
            if (stopped) continue;
            uint32_t k = w->block_stream[g];
            const mk_mkz_stream *S = &w->ix.streams[k];
            uint64_t bb = (uint64_t)S->block_elems * S->es;
            mk_status st = c ? MK_OK : MK_ERR_NOMEM;
            if (st == MK_OK) st = compress_submit(w, c, g, w->src[k].base + (uint64_t)(g - S->first_block) * bb);
            if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
            if (st != MK_OK) {
                MK_OMP("omp critical(mkz_w_err)")
                if (g < first_g) {
                    first_g = g;
                    first = st;
                    snprintf(msg, sizeof msg, "%s", mk_errmsg());
                }
                MK_OMP("omp atomic write")
                stop = 1;
            }
        }
        pool_return(&w->cctx, c);
    }
    if (first != MK_OK) {
        pthread_mutex_lock(&w->mu);
        mk_status s = w->err ? w_err(w) : mk_error(first, "%s", msg);
        pthread_mutex_unlock(&w->mu);
        return s;
    }
    return MK_OK;
}

/* A stream of bytes held in memory by the caller: compressed now, hashed now. */
static mk_status w_put_bytes(mkz_writer *w, const void *data, size_t len, uint32_t *id)
{
    MK_TRY(w_add_stream(w, NULL, len, id));
    mk_mkz_stream *S = &w->ix.streams[*id];
    S->hash = mk_hash128_bytes(data, len);
    w->src[*id].base = data;
    mk_status s = w_compress_range(w, S->first_block, S->first_block + S->n_blocks);
    w->src[*id].base = NULL;
    return s;
}

static mk_status w_open(const char *path, int level, uint64_t pending_max, mkz_writer **out)
{
    *out = NULL;
    if (level < 1 || level > MK_MKZ_LEVEL_MAX)
        return mk_error(MK_ERR_USAGE, "compression level %d is out of range (1..%d)", level, MK_MKZ_LEVEL_MAX);
    mkz_writer *w = mk_calloc(1, sizeof *w);
    if (!w) return MK_ERR_NOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pool_init(&w->cctx, wctx_free);
    w->fd = -1;
    w->spill_fd = -1;
    w->fh_file = NO_FILE;
    w->level = level;
    w->pending_max = pending_max ? pending_max : (64ull << 20) + (uint64_t)mk_threads_get() * (8ull << 20);
    w->pos = HEADER_SIZE;
    w->path = mk_strdup(path);
    *out = w;
    if (!w->path) return MK_ERR_NOMEM;
    w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (w->fd < 0) return mk_error(MK_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    disk_header h;
    memcpy(h.magic, MAGIC, sizeof MAGIC);
    h.version = MK_MKZ_VERSION;
    h.flags = 0;
    le_header(&h);
    return mk_pwrite_all(w->fd, &h, sizeof h, 0, path);
}

static void w_close(mkz_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->spill_fd >= 0) close(w->spill_fd);
    for (size_t g = 0; g < w->ix.n_blocks && w->wb; g++) {
        free(w->wb[g].raw);
        free(w->wb[g].payload);
    }
    pool_free(&w->cctx);
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

static void put_strings(mk_buf *strings, const char *name, uint64_t *off, uint32_t *len)
{
    *off = strings->len;
    *len = name ? (uint32_t)strlen(name) : 0;
    if (name) mk_buf_put(strings, name, *len);
}

/* The index bytes for what has been written. */
static mk_status encode_index(const mkz_writer *w, mk_buf *b)
{
    const mk_mkz_index *ix = &w->ix;
    mk_buf strings = {0};
    disk_index_head h = {{0}, 0, (uint32_t)ix->n_streams, (uint32_t)ix->n_blocks, (uint32_t)ix->n_files,
                         (uint32_t)ix->n_parts, (uint32_t)ix->n_model, 0, 0, {0}};
    memcpy(h.magic, INDEX_MAGIC, 4);
    disk_stream *ds = mk_calloc(ix->n_streams ? ix->n_streams : 1, sizeof *ds);
    disk_file *df = mk_calloc(ix->n_files ? ix->n_files : 1, sizeof *df);
    if (!ds || !df) {
        free(ds);
        free(df);
        return MK_ERR_NOMEM;
    }
    for (size_t k = 0; k < ix->n_streams; k++) {
        const mk_mkz_stream *S = &ix->streams[k];
        disk_stream *d = &ds[k];
        put_strings(&strings, S->is_tensor ? S->name : NULL, &d->name_off, &d->name_len);
        d->dtype = S->is_tensor ? dtype_code(S->t.dtype) : 0;
        d->ndim = S->is_tensor ? (uint8_t)S->t.ndim : 0;
        d->n_planes = (uint8_t)S->n_planes;
        for (int i = 0; i < d->ndim; i++) d->shape[i] = (uint64_t)S->t.shape[i];
        d->raw_size = S->raw_size;
        d->block_elems = S->block_elems;
        d->first_block = S->first_block;
        d->n_blocks = S->n_blocks;
        d->hash_lo = S->hash.lo;
        d->hash_hi = S->hash.hi;
        le_stream(d);
    }
    for (size_t f = 0; f < ix->n_files; f++) {
        const mk_mkz_file *F = &ix->files[f];
        disk_file *d = &df[f];
        put_strings(&strings, F->name, &d->name_off, &d->name_len);
        d->first_part = F->first_part;
        d->n_parts = F->n_parts;
        d->size = F->size;
        d->hash_lo = F->hash.lo;
        d->hash_hi = F->hash.hi;
        le_file(d);
    }
    h.strings_size = strings.len;
    le_index_head(&h);
    mk_buf_put(b, &h, sizeof h);
    mk_buf_put(b, ds, ix->n_streams * sizeof *ds);
    for (size_t g = 0; g < ix->n_blocks; g++) {
        const mk_mkz_block *B = &ix->blocks[g];
        disk_block d;
        memset(&d, 0, sizeof d);
        d.offset = B->offset;
        d.csize = B->csize;
        memcpy(d.method, B->method, sizeof d.method);
        memcpy(d.plane_csize, B->plane_csize, sizeof d.plane_csize);
        d.hash = B->hash;
        le_block(&d);
        mk_buf_put(b, &d, sizeof d);
    }
    mk_buf_put(b, df, ix->n_files * sizeof *df);
    for (size_t i = 0; i < ix->n_parts; i++) {
        uint32_t v = htole32(ix->parts[i]);
        mk_buf_put(b, &v, 4);
    }
    for (size_t i = 0; i < ix->n_model; i++) {
        uint32_t v = htole32(ix->model[i]);
        mk_buf_put(b, &v, 4);
    }
    if (strings.len) mk_buf_put(b, strings.data, strings.len);
    bool failed = strings.failed || b->failed;
    mk_buf_free(&strings);
    free(ds);
    free(df);
    return failed ? mk_error(MK_ERR_NOMEM, "out of memory building the container index") : MK_OK;
}

/* Every block is out: write the index and the footer, check the index reads back,
 * fsync. */
static mk_status w_finish(mkz_writer *w)
{
    if (w->err) return w_err(w);
    if (w->next_emit != w->ix.n_blocks) MK_BUG("finishing a container with blocks not yet written");
    if (w->pack) {
        if (w->fh) w->ix.files[w->fh_file].hash = mk_hasher_digest(w->fh);
        mk_hash128 empty = mk_hash128_bytes("", 0);
        for (size_t k = 0; k < w->ix.n_streams; k++)
            if (w->ix.streams[k].n_blocks == 0) w->ix.streams[k].hash = empty;
        for (size_t f = 0; f < w->ix.n_files; f++)
            if (w->ix.files[f].size == 0) w->ix.files[f].hash = empty;
    }
    mk_buf b = {0};
    mk_status s = encode_index(w, &b);
    if (s == MK_OK) {
        /* our own index must pass our own reader */
        mk_mkz_index check;
        mk_mkz_limits lim = MK_MKZ_LIMITS_DEFAULT;
        if (lim.max_index < b.len) lim.max_index = b.len;
        s = parse_index((const uint8_t *)b.data, b.len, w->pos + b.len + FOOTER_SIZE, w->pos, &lim, w->path, &check);
        if (s == MK_OK) mk_mkz_index_free(&check);
        else mk_error_prefix(s, "internal error: the container index does not validate");
    }
    if (s == MK_OK) s = mk_pwrite_all(w->fd, b.data, b.len, w->pos, w->path);
    if (s == MK_OK) {
        mk_hash128 ih = mk_hash128_bytes(b.data, b.len);
        disk_footer f = {w->pos, b.len, ih.lo, ih.hi, MK_MKZ_VERSION, 0, {0}};
        memcpy(f.magic, END_MAGIC, sizeof END_MAGIC);
        le_footer(&f);
        s = mk_pwrite_all(w->fd, &f, sizeof f, w->pos + b.len, w->path);
    }
    if (s == MK_OK && fsync(w->fd) != 0) s = mk_error(MK_ERR_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    if (s == MK_OK) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) s = mk_error(MK_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    }
    if (s == MK_OK) w->pos += b.len + FOOTER_SIZE;
    mk_buf_free(&b);
    return s;
}

/* ---- pack: a model folder or a .safetensors file ---------------------------------------------- */

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
        if (strlen(nm) > 255 || !file_name_ok(nm)) mk_warn("%s/%s: not packed (name not storable)", in, nm);
        else s = pack_add(j, nm, p);
        free(p);
    }
    if (dh) closedir(dh);
    mk_modeldir_free(&md);
    if (s == MK_OK) qsort(j->f, j->n, sizeof *j->f, cmp_pack_file);
    return s;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx)
{
    const mk_tensor_info *t = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (t[x].offset != t[y].offset) return t[x].offset < t[y].offset ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Declare file f's streams (safetensors: header then tensors in file order) and the file. */
static mk_status pack_declare(mkz_writer *w, pack_file *f)
{
    MK_TRY(mk_map_open(&f->map, f->path));
    const uint8_t *base = f->map.data;
    if (mk_str_ends_with(f->name, ".safetensors")) {
        MK_TRY(mk_st_parse(base ? base : (const uint8_t *)"", (size_t)f->map.size, f->map.size, f->path, &f->h));
        f->st = true;
        MK_TRY(mk_name_index_build(&f->names, f->h.t, f->h.n, NULL));
        size_t n = f->h.n;
        size_t *order = mk_calloc(n ? n : 1, sizeof *order);
        uint32_t *parts = mk_calloc(n + 1, sizeof *parts);
        f->stream_of = mk_calloc(n ? n : 1, sizeof *f->stream_of);
        mk_status s = order && parts && f->stream_of ? MK_OK : MK_ERR_NOMEM;
        if (s == MK_OK) s = w_add_stream(w, NULL, f->h.data_start, &parts[0]);
        if (s == MK_OK) w->src[parts[0]] = (wsrc){base, &f->map, 0};
        for (size_t i = 0; i < n; i++) order[i] = i;
        if (s == MK_OK) qsort_r(order, n, sizeof *order, cmp_by_offset, f->h.t);
        for (size_t q = 0; q < n && s == MK_OK; q++) {
            const mk_tensor_info *t = &f->h.t[order[q]];
            s = w_add_stream(w, t, 0, &parts[q + 1]);
            if (s == MK_OK) {
                w->src[parts[q + 1]] = (wsrc){base + t->offset, &f->map, t->offset};
                f->stream_of[order[q]] = parts[q + 1];
            }
        }
        if (s == MK_OK) s = w_add_file(w, f->name, parts, n + 1, NULL);
        free(order);
        free(parts);
        return s;
    }
    uint32_t id;
    MK_TRY(w_add_stream(w, NULL, f->map.size, &id));
    w->src[id] = (wsrc){base, &f->map, 0};
    return w_add_file(w, f->name, &id, 1, NULL);
}

mk_status mk_mkz_pack(const char *in, const char *out_path, const mk_mkz_pack_opts *o, mk_mkz_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    mk_source *src = NULL;
    MK_TRY(mk_safetensors_open(in, &src)); /* validates the model and gives its tensor list */
    pack_job job = {0};
    mkz_writer *w = NULL;
    mk_status s = pack_list(in, &job);
    if (s == MK_OK) s = w_open(out_path, o->level, 0, &w);
    if (s == MK_OK) {
        w->pack = true;
        w->progress = o->progress;
        w->pctx = o->progress_ctx;
    }
    for (size_t i = 0; i < job.n && s == MK_OK; i++) s = pack_declare(w, &job.f[i]);
    /* the model's tensor list, in the order the folder reader gives it */
    for (size_t i = 0; i < src->n_tensors && s == MK_OK; i++) {
        const mk_tensor_info *t = &src->tensors[i];
        const char *fp = src->files[t->file], *slash = strrchr(fp, '/');
        const char *fname = slash ? slash + 1 : fp;
        pack_file *f = NULL;
        for (size_t q = 0; q < job.n && !f; q++)
            if (strcmp(job.f[q].name, fname) == 0) f = &job.f[q];
        long ti = f && f->st ? mk_name_index_find(&f->names, t->name) : -1;
        if (ti < 0) s = mk_error(MK_ERR_IO, "%s: tensor %s: its file %s was not packed", in, t->name, fname);
        else s = w_add_model(w, f->stream_of[ti]);
    }
    if (s == MK_OK) s = w_compress_range(w, 0, (uint32_t)w->ix.n_blocks);
    if (s == MK_OK) s = w_finish(w);
    if (s == MK_OK) {
        stats->files = w->ix.n_files;
        stats->tensors = w->ix.n_model;
        for (size_t f = 0; f < w->ix.n_files; f++) stats->raw_bytes += w->ix.files[f].size;
        stats->container_bytes = w->pos;
    }
    w_close(w);
    pack_job_free(&job);
    mk_source_close(src);
    return s;
}

/* ---- the sink: an output written straight into a container ---------------------------------- */

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
        MK_TRY(w_add_stream(z->w, &t[i], 0, &id));
        MK_TRY(w_add_model(z->w, id));
    }
    z->n = n;
    z->begun = true;
    return MK_OK;
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
        uint32_t j = (uint32_t)(off / bb), g = S->first_block + j;
        uint64_t boff = off - (uint64_t)j * bb, braw = blk_raw(S, j);
        uint64_t take = braw - boff < len ? braw - boff : len;
        wblock *b = &w->wb[g];
        pthread_mutex_lock(&w->mu);
        mk_status s = w->err ? w_err(w) : MK_OK;
        if (s == MK_OK && b->state > WB_FILLING)
            s = mk_error(MK_ERR_IO, "%s: tensor %s: bytes at %llu written after their block was complete", w->path,
                         S->name, (unsigned long long)off);
        if (s == MK_OK && !b->raw) {
            if (!(b->raw = mk_malloc((size_t)braw))) s = MK_ERR_NOMEM;
            else b->state = WB_FILLING;
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
            b->state = WB_FULL;
        }
        pthread_mutex_unlock(&w->mu);
        MK_TRY(s);
        if (full) {
            wctx *c = w_take(w);
            s = c ? compress_submit(w, c, g, full) : MK_ERR_NOMEM;
            pool_return(&w->cctx, c);
            free(full);
            MK_TRY(s);
        }
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
    mk_status s = w->err ? w_err(w) : MK_OK;
    for (uint32_t j = 0; j < S->n_blocks && s == MK_OK; j++) {
        const wblock *b = &w->wb[S->first_block + j];
        if (b->state < WB_FULL)
            s = mk_error(MK_ERR_IO, "%s: tensor %s: block %u has %llu of %llu bytes at tensor_done", w->path, S->name, j,
                         (unsigned long long)b->filled, (unsigned long long)blk_raw(S, j));
    }
    pthread_mutex_unlock(&w->mu);
    return s;
}

static mk_status zs_put_file(mkz_writer *w, const char *name, const void *data, size_t len)
{
    uint32_t id, f;
    MK_TRY(w_put_bytes(w, data, len, &id));
    MK_TRY(w_add_file(w, name, &id, 1, &f));
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

/* The tensor data is complete: add the safetensors shards (header + tensors in file
 * order) and index that unpack restores, read every block back to compute the tensor
 * and shard hashes, and report the shards as the sink's files. */
static mk_status zs_commit(mk_sink *k)
{
    zsink *z = k->impl;
    mkz_writer *w = z->w;
    if (!z->begun || z->committed) MK_BUG("commit without begin, or twice");
    for (size_t i = 0; i < z->n; i++) MK_TRY(zs_tensor_done(k, i));
    if (w->err) return w_err(w);
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
    size_t *order = mk_calloc(z->n ? z->n : 1, sizeof *order);
    uint32_t *parts = mk_calloc(z->n + 1, sizeof *parts);
    uint32_t *shard_file = mk_calloc(L.n_shards, sizeof *shard_file);
    k->out_files = mk_calloc(L.n_shards + 1, sizeof *k->out_files);
    if (!order || !parts || !shard_file || !k->out_files) s = MK_ERR_NOMEM;
    mk_buf hb = {0};
    for (size_t sh = 0; sh < L.n_shards && s == MK_OK; sh++) {
        hb.len = 0;
        uint8_t len8[8];
        uint64_t hl = L.header[sh].len;
        for (int b = 0; b < 8; b++) len8[b] = (uint8_t)(hl >> (8 * b));
        mk_buf_put(&hb, len8, 8);
        mk_buf_put(&hb, L.header[sh].data, L.header[sh].len);
        if (hb.failed) s = MK_ERR_NOMEM;
        if (s == MK_OK) s = w_put_bytes(w, hb.data, hb.len, &parts[0]);
        size_t m = 0;
        for (size_t i = 0; i < z->n; i++) {
            t[i].offset = L.offset[i];
            if (L.shard_of[i] == sh) order[m++] = i;
        }
        qsort_r(order, m, sizeof *order, cmp_by_offset, t);
        for (size_t q = 0; q < m; q++) parts[q + 1] = (uint32_t)order[q];
        if (s == MK_OK) s = w_add_file(w, L.names[sh], parts, m + 1, &shard_file[sh]);
    }
    mk_buf_free(&hb);
    if (s == MK_OK && L.n_shards > 1) {
        mk_buf ij = {0};
        s = mk_st_index_json(t, z->n, L.shard_of, (const char *const *)L.names, &ij);
        if (s == MK_OK) s = zs_put_file(w, "model.safetensors.index.json", ij.data, ij.len);
        mk_buf_free(&ij);
    }
    /* read back what was written: tensor and shard hashes, and a check of every block */
    if (s == MK_OK) {
        mkz_in in = {w->fd, NULL, w->pos, w->path, 0};
        walker wk;
        s = walker_init(&wk, &in, &w->ix, true);
        for (size_t sh = 0; sh < L.n_shards && s == MK_OK; sh++) s = walk_file(&wk, shard_file[sh], NULL, NULL);
        walker_free(&wk);
        if (s != MK_OK) mk_error_prefix(s, "reading back the compressed output");
    }
    for (size_t sh = 0; sh < L.n_shards && s == MK_OK; sh++) s = out_file_add(k, &w->ix.files[shard_file[sh]]);
    if (s == MK_OK && L.n_shards > 1) s = out_file_add(k, &w->ix.files[w->ix.n_files - 1]);
    z->committed = s == MK_OK;
    free(order);
    free(parts);
    free(shard_file);
    free(t);
    mk_st_layout_free(&L);
    return s;
}

static mk_status zs_finish(mk_sink *k)
{
    zsink *z = k->impl;
    if (!z->committed) MK_BUG("finish before commit");
    return w_finish(z->w);
}

static void zs_close(mk_sink *k)
{
    if (!k) return;
    zsink *z = k->impl;
    if (z) {
        w_close(z->w);
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
    mk_status s = k->dir ? w_open(path, o->level, o->pending_max, &z->w) : MK_ERR_NOMEM;
    if (s != MK_OK) {
        zs_close(k);
        return s;
    }
    *out = k;
    return MK_OK;
}
