/* mkz_int.h - what the .mkz files share; internal to formats/mkz_*.c (mkz.h is the API).
 *   mkz_index.c   on-disk layout, byte order, index parse/validate and encode
 *   mkz_read.c    input, container parse, byte planes, block decoding, the stream walker
 *   mkz_source.c  the mk_source, verify, unpack
 *   mkz_write.c   the writer core: streams and files declared, blocks compressed anywhere,
 *                 appended in order, the index and footer written
 *   mkz_pack.c    pack a model folder or a .safetensors file
 *   mkz_sink.c    the streaming mk_sink (a merge or quantize output written as a container)
 * Internal names carry the prefix mkz_.
 * Must not: be included outside formats/mkz_*.c.
 */
#ifndef MK_MKZ_INT_H
#define MK_MKZ_INT_H

#include "mkz.h"

#include "../core/mk_io.h"

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <zstd.h>

/* ---- on-disk layout (docs/mkz-format.md); every integer little-endian ------------------ */

#define MKZ_HEADER_SIZE 16
#define MKZ_FOOTER_SIZE 48
#define MKZ_MAX_PLANES 8
#define MKZ_TENSOR_BLOCK_ELEMS (1u << 20) /* rows of about 2^20 elements: the executor's default chunk */
#define MKZ_BYTES_BLOCK (1u << 22)        /* byte streams (headers, config, tokenizer): 4 MiB */
#define MKZ_METHOD_STORED 0
#define MKZ_METHOD_ZSTD 1
#define MKZ_METHOD_RANS 2 /* plane codec 2: static rANS (mkz_rans.c); version 3 */
#define MKZ_LAYOUT_BYTES 0  /* stream plane layouts: byte p of each element in plane p */
#define MKZ_LAYOUT_FIELDS 1 /* bf16, f32: the top 2 bytes as sign + mantissa, then the exponent; version 3 */
#define MKZ_XFORM_NONE 0 /* block transforms (delta containers): the bytes as they are */
#define MKZ_XFORM_XOR 1  /* byte-wise XOR with the base tensor's bytes */
#define MKZ_XFORM_SUB 2  /* element-wise two's-complement difference of the bit patterns, new - base */
#define MKZ_XFORM_COUNT 3
#define MKZ_MAX_HINT 4096 /* bytes of the base hint path */
#define MKZ_NO_FILE UINT32_MAX

extern const unsigned char mkz_magic[8], mkz_end_magic[8], mkz_index_magic[4];

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
    uint32_t n_streams, n_blocks, n_files, n_parts, n_model;
    uint32_t n_delta;          /* version 2; 0 in version 1 */
    uint64_t strings_size;
    uint64_t hint_off, hint_len; /* version 2: the base hint in the strings; 0 in version 1 */
    uint64_t reserved;
} disk_index_head;

typedef struct disk_delta {    /* version 2 */
    uint32_t stream, reserved;
    uint64_t base_hash_lo, base_hash_hi;
} disk_delta;

typedef struct disk_stream {
    uint64_t name_off;
    uint32_t name_len;
    uint8_t dtype, ndim, n_planes, layout; /* layout: version 3; 0 before */
    uint64_t shape[MK_MAX_DIMS];
    uint64_t raw_size;
    uint32_t block_elems, first_block, n_blocks, reserved1;
    uint64_t hash_lo, hash_hi;
    uint64_t reserved2;
} disk_stream;

typedef struct disk_block {
    uint64_t offset;
    uint32_t csize;
    uint8_t method[MKZ_MAX_PLANES];
    uint32_t transform;        /* version 2: MKZ_XFORM_*; 0 in version 1 */
    uint32_t plane_csize[MKZ_MAX_PLANES];
    uint64_t hash;
} disk_block;

typedef struct disk_file {
    uint64_t name_off;
    uint32_t name_len, first_part, n_parts, reserved;
    uint64_t size, hash_lo, hash_hi;
} disk_file;

static_assert(MK_MAX_DIMS == 8, "the stream record holds 8 dimensions");
static_assert(sizeof(disk_header) == MKZ_HEADER_SIZE, "header layout");
static_assert(sizeof(disk_footer) == MKZ_FOOTER_SIZE && offsetof(disk_footer, magic) == 40, "footer layout");
static_assert(sizeof(disk_index_head) == 64 && offsetof(disk_index_head, strings_size) == 32, "index head layout");
static_assert(sizeof(disk_stream) == 128 && offsetof(disk_stream, shape) == 16 && offsetof(disk_stream, raw_size) == 80 &&
                  offsetof(disk_stream, hash_lo) == 104,
              "stream record layout");
static_assert(sizeof(disk_block) == 64 && offsetof(disk_block, method) == 12 && offsetof(disk_block, plane_csize) == 24 &&
                  offsetof(disk_block, hash) == 56,
              "block record layout");
static_assert(sizeof(disk_delta) == 24 && offsetof(disk_delta, base_hash_lo) == 8, "delta record layout");
static_assert(sizeof(disk_file) == 48 && offsetof(disk_file, size) == 24, "file record layout");

/* Byte order of the header and footer records (each conversion is its own inverse). */
void mkz_le_header(disk_header *d);
void mkz_le_footer(disk_footer *d);

/* The on-disk dtype code of t (0: none; 0 is also the code of a byte stream). */
uint8_t mkz_dtype_code(mk_dtype t);

/* ---- the index (mkz_index.c) ------------------------------------------------------------ */

/* Elements, bytes and bytes per plane of block j of stream S. */
static inline uint64_t mkz_blk_elems(const mk_mkz_stream *S, uint32_t j)
{
    uint64_t e0 = (uint64_t)j * S->block_elems, left = S->n_elems - e0;
    return left < S->block_elems ? left : S->block_elems;
}
static inline uint64_t mkz_blk_raw(const mk_mkz_stream *S, uint32_t j) { return mkz_blk_elems(S, j) * S->es; }
static inline uint64_t mkz_plane_raw(const mk_mkz_stream *S, uint32_t j)
{
    return S->n_planes == 1 ? mkz_blk_raw(S, j) : mkz_blk_elems(S, j);
}

/* "tensor NAME", "file NAME" or "byte stream K", for messages. */
const char *mkz_stream_label(const mk_mkz_index *ix, uint32_t k, char *buf, size_t n);
/* A file name the container may restore: a plain name inside the output folder. */
bool mkz_file_name_ok(const char *s);
/* MK_ERR_FORMAT with "WHAT: message". */
mk_status mkz_damaged(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse the index bytes ib[isz] of a container (format `version`) of file_size bytes whose
 * index starts at index_offset. Everything is checked; nothing in ix is trusted before this
 * returns. */
mk_status mkz_parse_index(const uint8_t *ib, uint64_t isz, uint32_t version, uint64_t file_size, uint64_t index_offset,
                          const mk_mkz_limits *lim, const char *what, mk_mkz_index *ix);
/* The index bytes for ix, appended to b. */
mk_status mkz_encode_index(const mk_mkz_index *ix, mk_buf *b);

/* ---- input, block decoding, walking streams (mkz_read.c) -------------------------------- */

/* The base of a delta container, as a reader sees it. */
typedef struct mkz_base {
    mk_mkz_base_read_fn read; /* NULL: no base (reads of delta blocks fail, naming `missing`) */
    void *ctx;
    char *missing;            /* where the base was looked for */
    pthread_mutex_t mu;       /* guards checked */
    uint8_t *checked;         /* [n_delta]: the base tensor's hash was found right */
} mkz_base;

/* A container: a file read with pread, or a memory image. */
typedef struct mkz_in {
    int fd;                   /* -1 for a memory image */
    const unsigned char *mem;
    uint64_t size;
    const char *what;
    uint64_t bytes_read;      /* atomic */
    mkz_base *base;           /* delta containers */
} mkz_in;

mk_status mkz_in_read(mkz_in *in, uint64_t off, uint64_t len, void *dst);
/* Header, footer and index of the container behind `in`. */
mk_status mkz_parse_container(mkz_in *in, const mk_mkz_limits *lim, mk_mkz_index *ix);

/* Byte planes: element i's byte p goes to plane p ([np][n] bytes) and back. */
void mkz_planes_split(const uint8_t *in, unsigned np, size_t n, uint8_t *out);
void mkz_planes_merge(const uint8_t *const *pl, unsigned np, size_t n, uint8_t *out);
/* bf16 field planes (layout MKZ_LAYOUT_FIELDS): n elements -> [sign|mantissa][exponent]
 * ([2][n] bytes), and back. */
void mkz_fields_split(const uint8_t *in, size_t n, uint8_t *out);
void mkz_fields_merge(const uint8_t *sm, const uint8_t *ex, size_t n, uint8_t *out);
/* The same on byte planes already split: the high two bytes' planes (lo = byte es-2, hi =
 * byte es-1) to the field planes, and back (each may be done in place). */
void mkz_fields_from_bytes(const uint8_t *lo, const uint8_t *hi, size_t n, uint8_t *sm, uint8_t *ex);
void mkz_fields_to_bytes(const uint8_t *sm, const uint8_t *ex, size_t n, uint8_t *lo, uint8_t *hi);

/* Make *p at least `need` bytes (contents kept). */
mk_status mkz_grow(uint8_t **p, size_t *cap, size_t need);

/* A stack of reusable objects (zstd contexts with their buffers), one per concurrent user. */
typedef struct mkz_pool {
    pthread_mutex_t mu;
    void **v;
    size_t n, cap;
    void (*destroy)(void *);
} mkz_pool;

void mkz_pool_init(mkz_pool *p, void (*destroy)(void *));
void *mkz_pool_get(mkz_pool *p); /* NULL when empty */
void mkz_pool_return(mkz_pool *p, void *o);
void mkz_pool_free(mkz_pool *p);

/* A zstd decompression context with its buffers (the context is made on first use). */
typedef struct mkz_dctx {
    ZSTD_DCtx *dc;
    uint8_t *pay, *planes, *base;
    size_t pay_cap, planes_cap, base_cap;
    struct mkz_rans_table *rt; /* plane codec 2's decoding table, made on first use */
    mkz_pool *home;           /* the pool it goes back to (walker threads) */
} mkz_dctx;

void mkz_dctx_destroy(void *o);
/* Apply (inverse false) or undo (inverse true) transform t of block bytes x[n] against the
 * base's b[n], in place; es: the element size. */
void mkz_xform(unsigned t, bool inverse, unsigned es, uint8_t *x, const uint8_t *b, size_t n);
/* XXH3-128 of the base tensor of delta record d (raw_size bytes), read through `read`. */
mk_status mkz_base_hash(mk_mkz_base_read_fn read, void *ctx, size_t d, uint64_t raw_size, mk_hash128 *out);
/* Decode block j of stream k into out (mkz_blk_raw bytes), checking it. */
mk_status mkz_block_decode(mkz_in *in, const mk_mkz_index *ix, uint32_t k, uint32_t j, mkz_dctx *c, uint8_t *out);

typedef mk_status (*mkz_walk_fn)(void *ctx, const uint8_t *data, size_t len);

/* Decodes streams in order (batches of blocks in parallel) and checks, or computes, the
 * stream and file hashes. */
typedef struct mkz_walker {
    mkz_in *in;
    mk_mkz_index *ix;
    bool compute;           /* store the hashes (a writer reading back) instead of checking them */
    mk_mkz_progress_fn progress;
    void *pctx;
    size_t items_done, items_total;
    uint64_t bytes_done, bytes_total;
    size_t nb;              /* blocks decoded per parallel batch */
    uint8_t **buf;          /* [nb] */
    size_t *cap;
    mkz_pool dctx;          /* mkz_dctx, one per thread at work */
    struct mkz_went { uint32_t si, j; } *ents;
} mkz_walker;

mk_status mkz_walker_init(mkz_walker *w, mkz_in *in, mk_mkz_index *ix, bool compute);
/* Safe after a failed mkz_walker_init, and twice. */
void mkz_walker_free(mkz_walker *w);
/* Walk file f (feeding its bytes in order to fn, if any); check or compute size and hash. */
mk_status mkz_walk_file(mkz_walker *w, uint32_t f, mkz_walk_fn fn, void *ctx);
/* Every file, then the streams that belong to no file. */
mk_status mkz_walk_all(mkz_walker *w, mk_status (*open_file)(void *ctx, uint32_t f), mkz_walk_fn fn,
                       mk_status (*close_file)(void *ctx, uint32_t f), void *ctx);

/* ---- plane codec 2: static order-0 rANS (mkz_rans.c; docs/mkz-format.md) ----------------- */

#define MKZ_RANS_LANES 32 /* interleaved states: four 8-lane vectors for a SIMD decoder */
#define MKZ_RANS_PREC 12  /* frequencies sum to 2^12 */
#define MKZ_RANS_HEAD_MIN (1 + 32 + 4 * MKZ_RANS_LANES) /* precision, symbol bitmap, states */
#define MKZ_RANS_HEAD_MAX (MKZ_RANS_HEAD_MIN + 2 * 256) /* ... and a frequency per symbol */

/* The decoder's table: slot -> frequency << 20 | (slot - cumulative frequency) << 8 | symbol
 * (a plane of one symbol, frequency 2^12, has none). */
typedef struct mkz_rans_table {
    uint32_t e[1u << MKZ_RANS_PREC];
} mkz_rans_table;

/* Byte counts of src[n]. */
void mkz_rans_hist(const uint8_t *src, size_t n, uint32_t hist[256]);
/* About the size mkz_rans_encode gives for a plane with these counts (order-0 entropy plus
 * the header). */
uint64_t mkz_rans_estimate(const uint32_t hist[256], size_t n);
/* Capacity of dst that mkz_rans_encode never exceeds for n bytes. */
size_t mkz_rans_bound(size_t n);
/* Encode src[n] (n >= 1; hist: its counts) into dst[cap]: the size, or 0 when it does not
 * fit in cap. */
size_t mkz_rans_encode(const uint8_t *src, size_t n, const uint32_t hist[256], uint8_t *dst, size_t cap);
/* Decode exactly n bytes from src[cs] into dst, every field checked; on failure
 * MK_ERR_FORMAT and *why says what is wrong (nothing is reported through mk_error). */
mk_status mkz_rans_decode(const uint8_t *src, size_t cs, uint8_t *dst, size_t n, mkz_rans_table *t, const char **why);
/* mkz_rans_decode of a bf16 exponent plane, put together with its sign+mantissa plane sm[n]
 * as it is decoded: out[2n] gets what mkz_fields_merge(sm, exponents, n, out) would. */
mk_status mkz_rans_decode_fields(const uint8_t *src, size_t cs, const uint8_t *sm, uint8_t *out, size_t n, mkz_rans_table *t,
                                 const char **why);

/* ---- the writer core (mkz_write.c) ------------------------------------------------------- */

/* A compression context: two zstd contexts and the buffers of one block. */
typedef struct mkz_wctx {
    ZSTD_CCtx *ent; /* "entropy" mode: no useful match search, Huffman-coded literals */
    ZSTD_CCtx *lz;  /* ordinary LZ + entropy coding at lz_level */
    int lz_level;
    uint8_t *planes, *out, *tmp, *alt, *base, *x;
    size_t planes_cap, out_cap, tmp_cap, alt_cap, base_cap, x_cap;
    mkz_pool *home; /* the writer's pool it goes back to */
} mkz_wctx;

enum { MKZ_WB_EMPTY = 0, MKZ_WB_FILLING, MKZ_WB_FULL, MKZ_WB_READY, MKZ_WB_SPILLED, MKZ_WB_EMITTED };

typedef struct mkz_wblock {
    uint8_t state;
    uint8_t *raw;       /* sink: the block's bytes as they arrive */
    uint64_t filled;
    uint8_t *payload;   /* finished, waiting for its turn (MKZ_WB_READY) */
    uint64_t spill_off; /* MKZ_WB_SPILLED */
} mkz_wblock;

typedef struct mkz_wsrc {
    const uint8_t *base; /* the stream's bytes (pack: a mapping) */
    const mk_map *map;
    uint64_t map_off;
} mkz_wsrc;

typedef struct mkz_writer {
    int fd;
    char *path;
    int level;
    bool pack;               /* streams come from mappings: hash them as blocks are appended */
    mk_mkz_index ix;         /* what the index will say */
    size_t cap_streams, cap_blocks, cap_files, cap_parts, cap_model;
    mkz_wblock *wb;          /* [ix.n_blocks] */
    uint32_t *block_stream;  /* [ix.n_blocks] */
    mkz_wsrc *src;           /* [ix.n_streams] */
    pthread_mutex_t mu;      /* guards everything below and the appends */
    uint64_t pos;            /* end of the data written so far */
    uint32_t next_emit;      /* the block that must be appended next */
    uint64_t pending, pending_max;
    int spill_fd;
    uint64_t spill_pos;
    mk_status err;           /* sticky: the first failure */
    char errmsg[1024];
    mkz_pool cctx;           /* mkz_wctx */
    mk_hasher *sh, *fh;      /* pack: the stream and the file being appended */
    uint32_t fh_file;
    mk_mkz_progress_fn progress;
    void *pctx;
    size_t items_done;
    uint64_t bytes_done, bytes_total;
    mk_mkz_base_read_fn base_read; /* a delta container: the base's tensor of each delta record */
    void *base_ctx;
} mkz_writer;

/* Create `path` (must not exist) and write its header; on failure *out may still need
 * mkz_w_close. pending_max 0: the default. */
mk_status mkz_w_open(const char *path, int level, uint64_t pending_max, mkz_writer **out);
void mkz_w_close(mkz_writer *w);
/* The sticky first failure, reported again. */
mk_status mkz_w_err(mkz_writer *w);
/* Declare a stream: a tensor (t) or `raw_size` plain bytes (t == NULL). Not while blocks
 * are being written. */
mk_status mkz_w_add_stream(mkz_writer *w, const mk_tensor_info *t, uint64_t raw_size, uint32_t *id);
mk_status mkz_w_add_file(mkz_writer *w, const char *name, const uint32_t *parts, size_t n, uint32_t *id);
mk_status mkz_w_add_model(mkz_writer *w, uint32_t k);
/* Make the container a delta container against the base at `hint` (before any block). */
mk_status mkz_w_set_base(mkz_writer *w, const char *hint, mk_mkz_base_read_fn read, void *ctx);
/* Store stream k against the base tensor whose XXH3-128 is h (streams in ascending order). */
mk_status mkz_w_add_delta(mkz_writer *w, uint32_t k, mk_hash128 h);
/* Compress blocks [g0, g1) whose streams have a source (w->src[k].base), in parallel. */
mk_status mkz_w_compress_range(mkz_writer *w, uint32_t g0, uint32_t g1);
/* A stream of bytes held in memory by the caller: compressed now, hashed now. */
mk_status mkz_w_put_bytes(mkz_writer *w, const void *data, size_t len, uint32_t *id);
/* A compression context from the writer's pool (NULL + mk_error when none can be made);
 * give it back with mkz_pool_return(c->home, c). */
mkz_wctx *mkz_w_take(mkz_writer *w);
/* Compress block g from its raw bytes and hand it to the in-order appender. Thread-safe. */
mk_status mkz_compress_submit(mkz_writer *w, mkz_wctx *c, uint32_t g, const uint8_t *raw);
/* Every block is out: write the index and the footer, check the index reads back, fsync. */
mk_status mkz_w_finish(mkz_writer *w);

/* qsort_r order of tensor indices (size_t) by their offset in ctx (mk_tensor_info[]). */
int mkz_cmp_by_offset(const void *a, const void *b, void *ctx);

#endif
