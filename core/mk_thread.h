/* mk_thread.h - the worker-thread count (OpenMP when built with it, else 1).
 * Results never depend on it: work is split into fixed chunks and reduced in chunk order.
 */
#ifndef MK_THREAD_H
#define MK_THREAD_H

int mk_threads_get(void);
/* n <= 0 means "all cores". */
void mk_threads_set(int n);

#endif
