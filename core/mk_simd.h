/* mk_simd.h - small vector kernels whose results are the same bits on every CPU: each
 * has a plain C reference (using correctly rounded libm operations such as fmaf) and, on
 * x86-64 CPUs that have them, an AVX2/FMA path chosen at run time that rounds the same way.
 * Must not: allocate or thread.
 */
#ifndef MK_SIMD_H
#define MK_SIMD_H

#include <stddef.h>

/* y[i] = fma(x[i], a, y[i]): one rounding, as PyTorch's addcmul_ does on CPU. */
void mk_axpy_fma(float *y, const float *x, float a, size_t n);
void mk_axpy_fma_ref(float *y, const float *x, float a, size_t n);

#endif
