/* nn_omp.h - OpenMP for nn's kernels (ops.c, ops_bwd.c): MK_OMP("omp ...") is the pragma, or
 * nothing in a build without OpenMP; mk_nn_thread_id() is this thread's number in its team.
 * Private to nn/. */
#ifndef MK_NN_OMP_H
#define MK_NN_OMP_H

#ifdef _OPENMP
#include <omp.h>
#define MK_OMP(x) _Pragma(x)
static inline int mk_nn_thread_id(void) { return omp_get_thread_num(); }
#else
#define MK_OMP(x)
static inline int mk_nn_thread_id(void) { return 0; }
#endif

#endif
