/* arcee_fusion.h - the pieces of arcee_fusion.c that replace libm calls and in-order
 * loops by vectorised ones giving the same bits, exposed for tests/unit/test_arcee_exact.c.
 * Must not: be used where the bits of libm's expf/logf are not what is wanted. */
#ifndef MK_ARCEE_FUSION_H
#define MK_ARCEE_FUSION_H

#include <stdint.h>

/* out[j] = expf(x[j] - sub), j < n, bit for bit as libm's expf gives it. */
void mk_fusion_exp_shifted(const float *x, float sub, uint64_t n, float *out);
/* The largest of x[0, n), as `if (x[j] > mx) mx = x[j]` from -Inf finds it. */
float mk_fusion_row_max(const float *x, uint64_t n);
/* sum of (double)t[j], j < n, as `s += t[j]` from s = 0 in index order gives it. */
double mk_fusion_sum_in_order(const float *t, uint64_t n);
/* [65536] logf of every bf16 value, indexed by its top 16 bits (built on first use). */
const float *mk_fusion_log_bf16(void);

#endif
