/* mk_parallel.h - the one parallel loop over work chunks that the executor and the merge
 * methods, the quantizer, synth and the .mkz reader and writer share: the threads of one
 * sleeping pool (mk_threads_get() of them, the caller's included; mk_parallel.c) take chunk
 * numbers in increasing order, each with its own state; a failure stops the chunks above it
 * while every chunk below it still runs, and the error reported is the lowest failing
 * chunk's (with its message), so a run fails the same way at any thread count. A loop inside
 * a chunk, or started while the pool is busy, runs on its own thread. Ctrl-C
 * (mk_interrupted) stops it at a chunk boundary. mk_thread_index() says which of the
 * threads a chunk runs on.
 * Must not: know what a chunk is (the task decides), allocate per chunk.
 */
#ifndef MK_PARALLEL_H
#define MK_PARALLEL_H

#include "mk_core.h"
#include "mk_tensor.h"

typedef mk_status (*mk_chunk_task)(void *ctx, uint64_t chunk, void *tls);

/* Run task(ctx, c, tls) for c = 0..n-1. tls_new(ctx) makes each thread's state when it takes
 * its first chunk (NULL + mk_error on failure) and tls_free releases it after its last; both
 * may be NULL (tls is then NULL). */
mk_status mk_parallel_chunks(uint64_t n, mk_chunk_task task, void *ctx, void *(*tls_new)(void *ctx),
                             void (*tls_free)(void *tls));

/* Rows per chunk for rows of `cols` elements: about `chunk` elements, at least one row, and a
 * multiple of the rows that make `align` elements (so blocks never straddle chunks). */
uint64_t mk_rows_per_chunk(uint64_t cols, uint64_t align, uint64_t chunk);

/* Pass tensor i's raw bytes to fn in slices of at most 8 MiB, in order. */
mk_status mk_source_copy_raw(mk_source *src, size_t i,
                             mk_status (*fn)(void *ctx, uint64_t off, const void *data, uint64_t len), void *ctx);

#endif
