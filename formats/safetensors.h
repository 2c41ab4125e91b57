/* safetensors.h - Hugging Face safetensors: validated reader (single file, or a folder
 * with model.safetensors or a sharded model.safetensors.index.json) as an mk_source, and
 * a streaming sharded writer as an mk_sink.
 *
 * Reader rules (reference/formats-security-compression.md 1.4, 2.7, and stricter): header
 * length <= 100,000,000 and inside the file; one UTF-8 JSON object; __metadata__ a
 * string->string map; every other key a tensor {dtype, shape, data_offsets}; dtype known;
 * integers exact, non-negative, no fractions or exponents; shape product and byte size
 * overflow-checked; byte range == shape x dtype size; ranges sorted are contiguous from 0
 * with no gap or overlap; the last end + 8 + N == file size; duplicate names refused.
 * Index rules: shard names are plain file names ending in .safetensors (no '/', '\\',
 * '..', drive letters); every listed tensor is in its shard and in no other shard. The
 * index reader serves pytorch_model.bin.index.json too (torchbin.h), with .bin shards.
 *
 * Writer: all output tensors are declared up front, so shard assignment, headers and
 * offsets are fixed before any data is written; data goes in with pwrite at final offsets
 * (any order, any thread); a shard is fsynced and hashed when its last tensor is done.
 */
#ifndef MK_SAFETENSORS_H
#define MK_SAFETENSORS_H

#include "../core/mk_tensor.h"

#define MK_ST_MAX_HEADER 100000000ull /* the reference reader's cap (MAX_HEADER_SIZE) */

/* Parsed header of one file. */
typedef struct mk_st_header {
    uint64_t header_len;  /* N */
    uint64_t data_start;  /* 8 + N */
    size_t n;
    mk_tensor_info *t;    /* in header order; offset = absolute file offset, file = 0 */
    size_t n_meta;
    char **meta_keys, **meta_vals;
} mk_st_header;

/* Validate a whole file image (or its first `len` bytes when len < file_size; the
 * header must fit in them). `what` names the file in messages. The fuzz entry point. */
mk_status mk_st_parse(const unsigned char *buf, size_t len, uint64_t file_size, const char *what, mk_st_header *h);
void mk_st_header_free(mk_st_header *h);

/* Validate an index file's text; fills shard names (unique, in first-use order) and for
 * each tensor name its shard number. The fuzz entry point for indexes. */
typedef struct mk_st_index {
    size_t n_shards;
    char **shards;
    size_t n;
    char **names;
    uint32_t *shard_of;
    uint64_t total_size; /* metadata.total_size, or UINT64_MAX when absent */
} mk_st_index;
mk_status mk_st_index_parse(const char *text, size_t len, const char *what, mk_st_index *ix);
/* The same for shards whose names end in `suffix` (".bin": pytorch_model.bin.index.json). */
mk_status mk_st_index_parse_ext(const char *text, size_t len, const char *what, const char *suffix, mk_st_index *ix);
void mk_st_index_free(mk_st_index *ix);
/* Match an index with the tensors its shards hold (shard k: shard_t[k][0 .. shard_n[k])):
 * entry e is tensor pick[e] of shard ix->shard_of[e]. Fails when a listed tensor is not
 * in its shard or is also in another; warns about shard tensors the index does not list. */
mk_status mk_st_index_pick(const mk_st_index *ix, const char *index_path, const mk_tensor_info *const *shard_t,
                           const size_t *shard_n, size_t *pick);

/* Open a .safetensors file or a model folder. */
mk_status mk_safetensors_open(const char *path, mk_source **out);
/* True if `path` looks like something mk_safetensors_open reads. */
bool mk_safetensors_probe(const char *path);

typedef struct mk_st_sink_opts {
    uint64_t shard_size;     /* max bytes of tensor data per shard; 0 = one shard */
    const char *resume_key;  /* identity of the job, for --resume; NULL = no journal */
    bool resume;             /* reuse shards recorded in the journal when the key matches */
    bool direct;             /* write shards whose tensors lie in the order declared around the page cache (core/mk_dwrite.h) */
} mk_st_sink_opts;

/* An output written in parts (parts.h). */
typedef struct mk_st_sink_split {
    const char *journal;     /* the journal's file name; NULL = MK_ST_JOURNAL */
    /* own[shard]: the shards this process writes; the others belong to other parts: not
     * touched, reported done, left out of out_files, and no index is written. NULL: all. */
    const unsigned char *own;
    /* finalize: every shard is already written, with these hashes (layout order); only the
     * index is written. NULL: none. */
    const mk_out_file *adopt;
} mk_st_sink_split;

/* Greedy shard assignment in output order, as Hugging Face and mergekit do: a new shard
 * starts when the current one is non-empty and the next tensor would overflow it.
 * Fills shard_of[n]; returns the number of shards (at least 1). */
size_t mk_st_assign_shards(const mk_tensor_info *t, size_t n, uint64_t shard_size, uint32_t *shard_of);
/* Shard file name: model.safetensors, or model-0000k-of-0000N.safetensors. Allocates. */
char *mk_st_shard_name(size_t k, size_t n_shards);

/* The files the sink writes for these tensors, fixed before any data: each tensor's
 * shard and absolute offset in it, each shard's name, header JSON (space-padded to a
 * multiple of 8; the file starts with its u64 length) and file size. Shared with writers
 * that must restore the same shards byte for byte (the .mkz container). */
typedef struct mk_st_layout {
    size_t n, n_shards;
    uint32_t *shard_of;   /* [n] */
    uint64_t *offset;     /* [n] */
    char **names;         /* [n_shards] */
    mk_buf *header;       /* [n_shards] */
    uint64_t *size;       /* [n_shards] */
    size_t *n_tensors;    /* [n_shards] */
} mk_st_layout;
/* stem: shard file stem ("model" when NULL). */
mk_status mk_st_layout_build(const mk_tensor_info *t, size_t n, uint64_t shard_size, const char *stem, mk_st_layout *L);
void mk_st_layout_free(mk_st_layout *L);
/* model.safetensors.index.json for tensors t[n] in shards shard_of[i] (huggingface_hub's
 * format: keys sorted, indent 2). */
mk_status mk_st_index_json(const mk_tensor_info *t, size_t n, const uint32_t *shard_of, const char *const *shard_names,
                           mk_buf *b);

/* A sink writing into folder `dir` (which must exist). */
mk_status mk_safetensors_sink(const char *dir, const mk_st_sink_opts *opts, mk_sink **out);
/* The same with another file stem than "model" (PEFT adapters: "adapter_model"). */
mk_status mk_safetensors_sink_stem(const char *dir, const char *stem, const mk_st_sink_opts *opts, mk_sink **out);

/* The same for one part of a split output, or its finalize (sp: read during begin only). */
mk_status mk_safetensors_sink_split(const char *dir, const char *stem, const mk_st_sink_opts *opts, const mk_st_sink_split *sp,
                                    mk_sink **out);

#define MK_ST_JOURNAL ".mergekit-c-journal"

#endif
