/* mkz.h - the .mkz container (spec: docs/mkz-format.md): a model folder (or one
 * .safetensors file) in one file, losslessly compressed, restorable byte for byte, with
 * random access to every tensor and every row range of it.
 *
 * Owns: the container layout, its validating reader (an mk_source, plus whole-container
 * verify and unpack), the packer (folder or .safetensors file -> container) and the
 * streaming writer (an mk_sink: a merge or quantize output written straight into a
 * container, shards and index included as `unpack` will restore them).
 * Layout in one paragraph: a 16-byte header, then blocks, then the index, then a 48-byte
 * footer. Each tensor is cut into blocks of whole rows (about 2^20 elements); a block
 * holds one independent zstd frame (or the stored bytes) per byte plane (bf16: 2 planes,
 * f32: 4, 1-byte types: 1). The index lists every stream (tensor or byte stream), block
 * (offset, per-plane sizes and methods, XXH3-64 of its stored bytes), file (name, size,
 * XXH3-128, the streams that concatenate to it) and the model's tensor list; the footer
 * holds the index's XXH3-128. Every byte of the file is covered by a check.
 * Reading is hostile-input safe: every count, size and offset is checked against the file
 * size and the limits before anything is allocated, and a zstd frame must decode to
 * exactly the size the index gives.
 * Writing is deterministic: the same bytes at any thread count (blocks are compressed
 * independently and appended in a fixed order).
 * Must not: know about merge methods or quantizers; print.
 */
#ifndef MK_MKZ_H
#define MK_MKZ_H

#include "../core/mk_hash.h"
#include "../core/mk_tensor.h"

#define MK_MKZ_VERSION 1u       /* a plain container */
#define MK_MKZ_VERSION_DELTA 2u /* a container holding deltas against a base model */
#define MK_MKZ_VERSION_RANS 3u  /* plane codec 2 (rANS) and bf16 field planes; deltas optional */
#define MK_MKZ_LEVEL_DEFAULT 1
#define MK_MKZ_LEVEL_MAX 22

/* Limits a reader applies before trusting a size. */
typedef struct mk_mkz_limits {
    uint64_t max_index;     /* bytes of index accepted */
    uint64_t max_block_raw; /* uncompressed bytes of one block */
    uint64_t max_name;      /* bytes of one tensor or file name */
} mk_mkz_limits;
extern const mk_mkz_limits MK_MKZ_LIMITS_DEFAULT; /* 1 GiB, 64 MiB, 4096 */

/* The parsed index (all sizes validated). */
typedef struct mk_mkz_stream {
    char *name;          /* tensor name; NULL for a byte stream */
    bool is_tensor;
    mk_tensor_info t;    /* tensors: dtype, shape, numel, nbytes (t.name == name) */
    uint64_t raw_size;   /* uncompressed bytes */
    uint64_t n_elems;    /* elements (bytes for a byte stream) */
    unsigned es;         /* element size (1 for a byte stream) */
    unsigned n_planes;   /* 1 or es */
    unsigned layout;     /* 0: byte planes; 1 (bf16): sign + mantissa, then exponent */
    uint32_t block_elems, first_block, n_blocks;
    mk_hash128 hash;     /* XXH3-128 of the uncompressed bytes */
    uint32_t file;       /* the file it is a part of, or UINT32_MAX */
    uint64_t stored;     /* bytes its blocks take in the container */
    uint32_t delta;      /* its record in the delta table (stored against the base), or UINT32_MAX */
} mk_mkz_stream;

typedef struct mk_mkz_block {
    uint64_t offset;          /* in the container */
    uint32_t csize;           /* stored bytes (all planes) */
    uint8_t method[8];        /* per plane: 0 stored, 1 zstd, 2 rANS */
    uint8_t transform;        /* 0 the bytes, 1 XOR with the base's, 2 difference from the base's */
    uint32_t plane_csize[8];
    uint64_t hash;            /* XXH3-64 of the csize stored bytes */
} mk_mkz_block;

typedef struct mk_mkz_file {
    char *name;
    uint64_t size;
    mk_hash128 hash;          /* XXH3-128 of the file (as `xxhsum -H2` prints it) */
    uint32_t first_part, n_parts;
} mk_mkz_file;

/* A tensor stored against the base: the base tensor has its name, dtype and shape. */
typedef struct mk_mkz_delta {
    uint32_t stream;
    mk_hash128 base_hash;     /* XXH3-128 of the base tensor's bytes */
} mk_mkz_delta;

typedef struct mk_mkz_index {
    uint64_t file_size, index_offset, index_size;
    size_t n_streams, n_blocks, n_files, n_parts, n_model;
    mk_mkz_stream *streams;
    mk_mkz_block *blocks;
    mk_mkz_file *files;
    uint32_t *parts;          /* stream ids; file f is parts[first_part .. +n_parts) */
    uint32_t *model;          /* stream ids of the model's tensor list, in order */
    uint32_t version;         /* MK_MKZ_VERSION, MK_MKZ_VERSION_DELTA or MK_MKZ_VERSION_RANS */
    char *base_hint;          /* delta containers (set exactly then): where the base was, relative to the container */
    size_t n_delta;
    mk_mkz_delta *delta;      /* [n_delta], by stream id, ascending */
} mk_mkz_index;

/* Validate the header, footer and index of a container image of `len` bytes (the whole
 * file). The fuzz entry point for the structure. */
mk_status mk_mkz_parse(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what,
                       mk_mkz_index *ix);
/* Structure, then every block, stream and file checksum. The fuzz entry point for the
 * decoder. */
mk_status mk_mkz_verify_buffer(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what);

/* The base's bytes [off, off+len) of the tensor that delta record d is stored against. */
typedef mk_status (*mk_mkz_base_read_fn)(void *ctx, size_t d, uint64_t off, uint64_t len, void *dst);
/* As mk_mkz_verify_buffer, for a delta container, with its base behind `read`. */
mk_status mk_mkz_verify_buffer_base(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what,
                                    mk_mkz_base_read_fn read, void *ctx);
void mk_mkz_index_free(mk_mkz_index *ix);

/* Plane codec 2 on its own (static rANS; docs/mkz-format.md): the capacity an encoding of n
 * bytes never exceeds; encode src[n] (n >= 1) into dst[cap] (the size, or 0 when it does not
 * fit); decode exactly n bytes from src[len], every field checked (MK_ERR_FORMAT naming what
 * is wrong). The decoder is the fuzz entry point for the entropy coder. */
size_t mk_mkz_rans_bound(size_t n);
size_t mk_mkz_rans_encode(const unsigned char *src, size_t n, unsigned char *dst, size_t cap);
mk_status mk_mkz_rans_decode(const unsigned char *src, size_t len, unsigned char *dst, size_t n);
/* The same for a bf16 exponent plane, each decoded exponent put together with sm[i] (sign
 * << 7 | mantissa) into the element's two bytes out[2i..2i+1]. */
mk_status mk_mkz_rans_decode_fields(const unsigned char *src, size_t len, const unsigned char *sm, unsigned char *out, size_t n);

/* True when `path` is a regular file that starts with the container magic. */
bool mk_mkz_probe(const char *path);
/* Open a container as a tensor source: the model's tensors (reads decode only the
 * blocks they touch) and its auxiliary files. */
mk_status mk_mkz_open(const char *path, mk_source **out);
/* A delta container's base: a model holding, for every delta record, a tensor of the same
 * name, dtype and shape (else an error naming the tensor). The source takes `base` (also on
 * failure). Each base tensor's XXH3-128 is checked against the record the first time it is
 * used. Without a base, reads of delta tensors fail with a line naming the base wanted and
 * `missing` (where it was looked for). */
mk_status mk_mkz_attach_base(mk_source *s, mk_source *base, const char *missing);
/* The index of a source opened by mk_mkz_open, else NULL. */
const mk_mkz_index *mk_mkz_source_index(const mk_source *s);
/* Container bytes read by the source so far (payloads and index), for access tests. */
uint64_t mk_mkz_source_bytes_read(const mk_source *s);

typedef void (*mk_mkz_progress_fn)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total,
                                   const char *name);

/* Check every block, stream and file checksum. On damage the message names the tensor
 * or file and the block. */
mk_status mk_mkz_verify(mk_source *s, mk_mkz_progress_fn progress, void *ctx);
/* Restore every file into `dir` (an existing, empty folder), verifying as it goes. */
mk_status mk_mkz_unpack(mk_source *s, const char *dir, mk_mkz_progress_fn progress, void *ctx);

typedef struct mk_mkz_stats {
    size_t files, tensors;
    uint64_t raw_bytes;      /* sum of file sizes */
    uint64_t container_bytes;
    size_t deltas;           /* tensors stored against the base */
} mk_mkz_stats;

typedef struct mk_mkz_pack_opts {
    int level;               /* zstd level 1..22 (1 = fastest) */
    mk_source *base;         /* store tensors matching one of base's (name, dtype, shape) as deltas */
    const char *base_hint;   /* with base: its path relative to the container's folder */
    mk_mkz_progress_fn progress;
    void *progress_ctx;
} mk_mkz_pack_opts;

/* Pack a model folder (every regular file in it, safetensors files split into their
 * tensors) or one .safetensors file into a new container file at `out_path`. */
mk_status mk_mkz_pack(const char *in, const char *out_path, const mk_mkz_pack_opts *o, mk_mkz_stats *stats);

typedef struct mk_mkz_sink_opts {
    int level;
    uint64_t shard_size;     /* the safetensors shards `unpack` restores (as --out-shard-size) */
    uint64_t pending_max;    /* bytes of finished blocks held for in-order writing before they
                                go to a spill file; 0 = default */
} mk_mkz_sink_opts;

/* A sink writing container file `path` (created; must not exist). commit() makes the
 * tensor data complete, reads it back to check it and fills out_files with the shards
 * (and index) that unpack restores; add_file() may follow; finish() writes the index. */
mk_status mk_mkz_sink(const char *path, const mk_mkz_sink_opts *o, mk_sink **out);

#endif
