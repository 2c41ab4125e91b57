/* mk_thread.h - the worker-thread count (OpenMP's when built with it, else 1), and which
 * worker of mk_parallel_chunks' pool the calling thread is.
 * Results never depend on either: work is split into fixed chunks and reduced in chunk order.
 */
#ifndef MK_THREAD_H
#define MK_THREAD_H

int mk_threads_get(void);
/* n <= 0 means "all cores". */
void mk_threads_set(int n);

/* This thread's number among mk_parallel_chunks' threads: 0 for the thread that called it
 * (and for any thread outside a parallel loop), 1..mk_threads_get()-1 for the pool's workers.
 * Per-thread state indexed by it needs mk_threads_get() entries. */
int mk_thread_index(void);
/* For the pool (mk_parallel.c) only: this thread is worker k. */
void mk_thread_index_set(int k);

#endif
