/* mk_thread.c - see mk_thread.h */
#include "mk_thread.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int mk_threads_get(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void mk_threads_set(int n)
{
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
