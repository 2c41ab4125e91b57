/* mk_simd.c - see mk_simd.h */
#include "mk_simd.h"

#include <math.h>

void mk_axpy_fma_ref(float *y, const float *x, float a, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = fmaf(x[i], a, y[i]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void axpy_fma_avx2(float *y, const float *x, float a, size_t n)
{
    __m256 av = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), av, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(x[i], a, y[i]);
}

static int have_fma(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

void mk_axpy_fma(float *y, const float *x, float a, size_t n)
{
    if (have_fma()) axpy_fma_avx2(y, x, a, n);
    else mk_axpy_fma_ref(y, x, a, n);
}
#else
void mk_axpy_fma(float *y, const float *x, float a, size_t n) { mk_axpy_fma_ref(y, x, a, n); }
#endif
