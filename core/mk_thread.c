/* mk_thread.c - see mk_thread.h */
#include "mk_thread.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local int tl_index;

#ifdef _OPENMP
/* The count, kept here as well as in OpenMP: OpenMP's is per thread, and the pool's workers
 * (and the caller, during its share of a loop) set theirs to 1 so that an OpenMP loop inside
 * a chunk runs on the thread that took the chunk, as a nested region did. 0: not asked yet. */
static int g_threads;
#endif

int mk_threads_get(void)
{
#ifdef _OPENMP
    int n = __atomic_load_n(&g_threads, __ATOMIC_RELAXED);
    if (n > 0) return n;
    n = omp_get_max_threads();
    __atomic_store_n(&g_threads, n, __ATOMIC_RELAXED);
    return n;
#else
    return 1;
#endif
}

void mk_threads_set(int n)
{
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    __atomic_store_n(&g_threads, n, __ATOMIC_RELAXED);
#else
    (void)n;
#endif
}

int mk_thread_index(void) { return tl_index; }

void mk_thread_index_set(int k) { tl_index = k; }
