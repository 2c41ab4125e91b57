/* sce_kernels.h - the per-block element kernels of the sce method (sce.c), exposed so the
 * tests can hold the fused fast paths to the step-by-step reference bit for bit.
 *
 * A block is n <= stride elements; T holds the K task vectors of the block, model k's at
 * T + k * stride (f32 values rounded to the compute dtype dt). With ref, or a K the fast
 * paths are not built for (more than MK_SCE_FUSED_K), each step is a loop over the block
 * (the reference); else one loop does every step of an element in registers. Both make
 * the same operations in the same order on each element, so the same bits.
 * Must not: allocate, read tensors, thread.
 */
#ifndef MK_SCE_KERNELS_H
#define MK_SCE_KERNELS_H

#include "../../core/mk_core.h"
#include "../../core/mk_dtype.h"

#define MK_SCE_FUSED_K 4

/* keys[i]: the order-preserving key of the population variance across the K models of
 * element i (double, then rounded to f32 and dt). scratch: 2 * stride doubles (reference). */
void mk_sce_keys(mk_dtype dt, size_t K, const float *T, size_t stride, uint64_t n, double *scratch, uint32_t *keys,
                 bool ref);

/* row[k] += RD(t * t) over the kept elements (keep[i] 0 or 1) of model k, in element order
 * (the fast path adds a block at once where that is the same sum: see sce.c). T is scratch
 * afterwards: the reference zeroes its dropped entries, the fast path stores the terms. */
void mk_sce_sum_sq(mk_dtype dt, size_t K, float *T, size_t stride, const uint8_t *keep, uint64_t n, double *row,
                   bool ref);

/* out[i] = b[i] + sum_k c_k E_k t_k / max(sum_k c_k E_k, 1e-6) over the kept entries, E_k:
 * t_k agrees with the sign of their sum. scratch: 3 * stride floats (reference); the
 * reference zeroes the dropped entries of T first. */
void mk_sce_out(mk_dtype dt, size_t K, const float *c, float *T, size_t stride, const uint8_t *keep, const float *b,
                uint64_t n, float *scratch, float *out, bool ref);

#endif
