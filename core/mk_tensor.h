/* mk_tensor.h - tensor descriptors and the interfaces through which formats, merge and
 * quant meet: a tensor SOURCE (list, describe, read bytes), a tensor SINK (declare all
 * output tensors, write bytes at offsets, commit) and an f32 CONSUMER (takes computed
 * values row-chunk by row-chunk; the plain one converts to a dtype and writes to a sink,
 * a quantizer is another).
 *
 * formats/ implements sources and sinks; merge/ produces f32 rows; quant/ implements a
 * consumer; cli/ wires them. None of those include each other, only this header.
 * Must not: know any file format or merge method.
 */
#ifndef MK_TENSOR_H
#define MK_TENSOR_H

#include "mk_core.h"
#include "mk_dtype.h"

#define MK_MAX_DIMS 8

typedef struct mk_tensor_info {
    char *name;
    mk_dtype dtype;
    int ndim;
    int64_t shape[MK_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    /* Where the bytes live, for the source that owns the entry. */
    uint32_t file;   /* index into the source's data-file list */
    uint64_t offset; /* absolute byte offset in that file */
} mk_tensor_info;

/* "[4096, 11008]" into buf. */
const char *mk_shape_str(const mk_tensor_info *t, char buf[160]);
bool mk_shape_eq(const mk_tensor_info *a, const mk_tensor_info *b);
/* Rows and columns of the row-major 2-D view: cols = last dim (1 for scalars). */
uint64_t mk_tensor_cols(const mk_tensor_info *t);
uint64_t mk_tensor_rows(const mk_tensor_info *t);
/* Fill numel/nbytes from dtype+shape with overflow checks. */
mk_status mk_tensor_info_finish(mk_tensor_info *t);

/* ---- name -> index map (open addressing, O(1) lookups over many tensors) ------------ */
typedef struct mk_name_index {
    uint32_t *slots; /* index + 1, 0 = empty */
    size_t cap;
    const mk_tensor_info *t;
} mk_name_index;

/* Builds the map; on a duplicate name returns MK_ERR_FORMAT with *dup = its index. */
mk_status mk_name_index_build(mk_name_index *ix, const mk_tensor_info *t, size_t n, size_t *dup);
long mk_name_index_find(const mk_name_index *ix, const char *name);
void mk_name_index_free(mk_name_index *ix);

/* ---- source ------------------------------------------------------------------------ */
typedef struct mk_source mk_source;

typedef struct mk_dstream mk_dstream; /* core/mk_dstream.h */

typedef struct mk_source_ops {
    /* Copy raw bytes [off, off+len) of tensor i (offsets relative to the tensor). */
    mk_status (*read)(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst);
    /* Borrow the same bytes without a copy, or NULL when the source cannot. */
    const void *(*borrow)(mk_source *s, size_t i, uint64_t off, uint64_t len);
    /* Done with these bytes for now: let them leave memory. May be NULL. */
    void (*release)(mk_source *s, size_t i, uint64_t off, uint64_t len);
    /* Hint: these bytes will be read soon. May be NULL. */
    void (*prefetch)(mk_source *s, size_t i, uint64_t off, uint64_t len);
    /* An auxiliary file of the model (config.json, tokenizer.json, ...): *data = NULL
     * when absent. `cap` bounds the size accepted. */
    mk_status (*aux_read)(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len);
    /* Names of auxiliary files, NULL-terminated; owned by the source. */
    const char *const *(*aux_list)(mk_source *s);
    void (*close)(mk_source *s);
    /* A stream over bytes [0, len) of tensor i, read once around the page cache, `reach` bytes
     * ahead of its first unread byte at most (core/mk_dstream.h); *out = NULL where the source
     * or the file has none. May be NULL. */
    mk_status (*stream)(mk_source *s, size_t i, uint64_t len, uint64_t reach, mk_dstream **out);
} mk_source_ops;

struct mk_source {
    const mk_source_ops *ops;
    char *path;      /* as the user named it */
    char *kind;      /* "safetensors", "mkz", ... for messages */
    size_t n_tensors;
    mk_tensor_info *tensors;
    mk_name_index index;
    size_t n_files;  /* data files (shards), for provenance */
    char **files;
    void *impl;
};

static inline long mk_source_find(const mk_source *s, const char *name)
{
    return mk_name_index_find(&s->index, name);
}
/* Values [elem0, elem0+n) of tensor i as f32. `scratch` must hold n * dtype size bytes
 * when the source cannot lend its bytes. */
mk_status mk_source_read_f32(mk_source *s, size_t i, uint64_t elem0, uint64_t n, float *dst, void *scratch);
/* As mk_source_read_f32 for a tensor of dtype dt (1-4 byte elements) read through stream ds
 * (mk_source_ops.stream), whose range starts at the tensor's first byte. */
mk_status mk_stream_read_f32(mk_dstream *ds, mk_dtype dt, uint64_t elem0, uint64_t n, float *dst);
/* A row-major window: rows [row0, row0+nrows), first `ncols` columns of each row of a
 * tensor whose rows have `src_cols` columns (for cutting embeddings to a common size). */
mk_status mk_source_read_f32_window(mk_source *s, size_t i, uint64_t src_cols, uint64_t row0, uint64_t nrows,
                                    uint64_t ncols, float *dst, void *scratch);
void mk_source_close(mk_source *s);
/* For close implementations: free the tensors, name index, file list, path, kind and s
 * itself (impl is the caller's). */
void mk_source_free_fields(mk_source *s);

/* ---- sink -------------------------------------------------------------------------- */
typedef struct mk_sink mk_sink;

typedef struct mk_sink_ops {
    /* Declare every output tensor, in output order, before any data. */
    mk_status (*begin)(mk_sink *k, const mk_tensor_info *t, size_t n);
    /* True if tensor i is already complete on disk (resume); its data need not be
     * computed or written again. May be NULL. */
    bool (*is_done)(mk_sink *k, size_t i);
    /* Raw bytes [off, off+len) of output tensor i. Safe from several threads for
     * disjoint ranges. */
    mk_status (*write)(mk_sink *k, size_t i, uint64_t off, const void *data, uint64_t len);
    /* Every byte of tensor i is written. Called once per tensor, in output order. */
    mk_status (*tensor_done)(mk_sink *k, size_t i);
    /* A non-tensor file of the output (config.json, README.md, ...). */
    mk_status (*add_file)(mk_sink *k, const char *name, const void *data, size_t len);
    /* Make everything durable and write the index. */
    mk_status (*commit)(mk_sink *k);
    void (*close)(mk_sink *k);
    /* After commit and the add_file calls that follow it: write what must come last (a
     * single-file container's index). May be NULL; callers use mk_sink_finish. */
    mk_status (*finish)(mk_sink *k);
} mk_sink_ops;

/* Hashes of the files a sink produced, for provenance and --check. */
typedef struct mk_out_file {
    char *name;
    uint64_t size;
    char hash[33]; /* XXH3-128 hex */
} mk_out_file;

struct mk_sink {
    const mk_sink_ops *ops;
    char *dir;              /* where it writes (the temporary output folder or file) */
    size_t n_out_files;     /* filled by commit */
    mk_out_file *out_files;
    void *impl;
};

void mk_sink_close(mk_sink *k);
/* Call finish when the sink has one. */
mk_status mk_sink_finish(mk_sink *k);

/* ---- f32 consumer -------------------------------------------------------------------- */
typedef struct mk_consumer mk_consumer;

typedef struct mk_consumer_ops {
    /* Element alignment that chunk boundaries of logical tensor t must respect (chunks
     * are also always whole rows). 1 = none. */
    uint64_t (*align)(mk_consumer *c, const mk_tensor_info *t);
    /* Whether tensor t may be passed through as raw bytes of its source dtype. */
    bool (*raw_ok)(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype src_dtype);
    mk_status (*begin)(mk_consumer *c, size_t i, const mk_tensor_info *t);
    /* Values [elem0, elem0+n) of logical tensor i. Called from several threads at once
     * for disjoint ranges. */
    mk_status (*rows)(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n);
    /* Raw bytes of the tensor, when raw_ok said yes. */
    mk_status (*raw)(mk_consumer *c, size_t i, uint64_t off, const void *data, uint64_t len);
    mk_status (*end)(mk_consumer *c, size_t i);
    /* True if logical tensor i is already complete in the output (resume). May be NULL. */
    bool (*is_done)(mk_consumer *c, size_t i);
    void (*close)(mk_consumer *c);
    /* Optional prepass, between begin and the first rows: a consumer that needs a
     * whole-tensor statistic before its first output (a quantizer's per-tensor scale) says
     * so for tensor i, then sees every value once through observe (several threads,
     * disjoint ranges, the same chunking as rows) and observe_end. A driver that can
     * read its values twice runs it (mk_qstream_run); one that cannot afford to (the
     * merge executor, whose values are computed) never calls it, and the consumer must
     * then manage without, or refuse such settings up front. All three may be NULL. */
    bool (*wants_prepass)(mk_consumer *c, size_t i);
    mk_status (*observe)(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n);
    mk_status (*observe_end)(mk_consumer *c, size_t i);
    /* Optional: whether tensor i (without a prepass) may have its chunks passed as the
     * source's raw bytes of dtype src through rows_raw instead of as f32 through rows (a
     * consumer that converts them in its own loops); both may be NULL. */
    bool (*takes_raw)(mk_consumer *c, size_t i, mk_dtype src);
    mk_status (*rows_raw)(mk_consumer *c, size_t i, uint64_t elem0, const void *data, mk_dtype src, uint64_t n);
} mk_consumer_ops;

struct mk_consumer {
    const mk_consumer_ops *ops;
    void *impl;
};

/* The plain consumer: logical tensor i is output tensor i of `sink`, values are
 * converted to its dtype (round to nearest even). A finite value that overflows the
 * dtype (e.g. 70000 into F16) is an error naming the tensor unless allow_overflow. */
mk_status mk_consumer_plain(mk_consumer *c, mk_sink *sink, const mk_tensor_info *out, size_t n, bool allow_overflow);

#endif
