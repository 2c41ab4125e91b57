/* exec.h - the streaming executor: runs a plan one output tensor at a time, in row
 * chunks, OpenMP over chunks, handing results to a consumer.
 *
 * Inputs are read around the page cache where they can be (core/mk_dstream.h, unless
 * --direct-io off): a tensor the method reads in one pass (mk_method.one_pass) through
 * streams, a tensor whose inputs fit hold_bytes held in memory for all its passes. The next
 * tensor's streams open while one is computed; where tensors take several passes, those of
 * the tensors after it too, while their held inputs fit hold_bytes, so that the disk stays
 * busy during a last pass computed from memory. Other tensors are read through the page
 * cache, each pass again.
 *
 * Memory: per thread, one chunk of every input and of the output as f32 (about
 * chunk_elems x 4 x (inputs + 1) bytes), whatever the model size; mapped input pages are
 * dropped from the resident set as soon as a chunk is done; the streams' rings (a few 2 MiB
 * blocks per input) and the held inputs (up to 2 x hold_bytes). Methods that make several
 * passes over a tensor may keep up to keep_bytes of state between passes (masks, selections,
 * means). Chunk boundaries depend only
 * on the tensor shape and chunk_elems, never on the thread count, so results are the
 * same bytes at any thread count.
 * Must not: know file formats or output layout (the consumer and its sink do).
 */
#ifndef MK_EXEC_H
#define MK_EXEC_H

#include "plan.h"

/* Elements per chunk (256 KiB of f32): small enough that a chunk of every input stays in
 * cache while a method sweeps it several times (measured 1.3-2.3x faster than 1 Mi
 * elements on the method benchmark), large enough that per-chunk costs vanish. */
#define MK_EXEC_CHUNK_DEFAULT (1u << 16)

/* Bytes a method that makes several passes over a tensor may keep from one pass to the next
 * (its masks, selections, per-row or per-element state: mk_merge_job.keep_bytes), so a pass
 * reads them instead of computing them again; chunks past the cap compute them again. */
#define MK_EXEC_KEEP_DEFAULT (16u << 20)

/* Input bytes of one tensor held for a method's passes (mk_exec_opts.hold_bytes; merge --hold):
 * by default 1/16 of the memory available (mk_mem_available), from MK_EXEC_HOLD_DEFAULT (also
 * where that is not known) to MK_EXEC_HOLD_MAX. Measured on a 7B-shaped two-layer ties merge:
 * 64 MiB held none of its tensors (the attention matrices of two models are 67 MB), 1 GiB all
 * of them, 1.8x faster. */
#define MK_EXEC_HOLD_DEFAULT (64u << 20)
#define MK_EXEC_HOLD_MAX (1ull << 30)
uint64_t mk_exec_hold_auto(void);

typedef enum mk_nonfinite {
    MK_NONFINITE_WARN = 0, /* report each input tensor holding NaN/Inf, carry on */
    MK_NONFINITE_ERROR,    /* stop at the first such tensor */
} mk_nonfinite;

typedef struct mk_exec_opts {
    uint64_t chunk_elems; /* 0 = MK_EXEC_CHUNK_DEFAULT */
    uint64_t seed;
    /* Called after each output tensor from the calling thread. May be NULL. */
    void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
    void *progress_ctx;
    mk_nonfinite on_nonfinite;
    uint64_t keep_bytes; /* what methods may keep between passes (MK_EXEC_KEEP_DEFAULT); 0 = none */
    /* Called from the calling thread before each output tensor is computed, with the output
     * bytes up to the end of that tensor and in all (of those computed now): how far the
     * inputs are about to be read, for a reader of the same files to keep pace. May be NULL. */
    void (*reading)(void *ctx, uint64_t bytes_through, uint64_t bytes_total);
    void *reading_ctx;
    /* Input bytes of one tensor that a method making several passes may hold in memory, read
     * once around the page cache (core/mk_dstream.h) instead of read again each pass; up to
     * twice this is held: the tensors after the one computed are read ahead while what their
     * reading brings into memory fits it (the next tensor always). 0: none. */
    uint64_t hold_bytes;
    /* Called from the calling thread after each output tensor, once per input tensor it read
     * (its source and index), for a reader of the same files to follow. ctx: reading_ctx. May
     * be NULL. */
    void (*read_input)(void *ctx, const mk_source *src, size_t tensor);
} mk_exec_opts;

/* What a run did: tensors computed now, and tensors the consumer already had (--resume: in
 * shards kept from an interrupted run). */
typedef struct mk_exec_stats {
    size_t computed, reused;
    uint64_t bytes_computed, bytes_reused;
} mk_exec_stats;

/* Progress counts the tensors computed now (out of those not already done). st may be NULL. */
mk_status mk_exec_run(mk_plan *p, mk_consumer *c, const mk_exec_opts *o, mk_exec_stats *st);

#endif
