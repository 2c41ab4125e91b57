/* ternary.h - BitNet b1.58's absmean ternary quantization, as transformers' BitNet
 * integration stores it (integrations/bitnet.py: WeightQuant, pack_weights, BitLinear).
 * One scale per tensor: mean = max(mean |W|, 1e-5) (the mean summed in double, rounded to
 * f32), the stored weight_scale s = dt(1 / mean) in the weight's dtype dt, codes
 * q = clamp(round_half_even(w * s), -1, 1) in f32, and the value BitLinear computes with is
 * W' = dt(q / s) (it divides its output by weight_scale).
 * Packing (pack_weights): 4 codes a byte along dim 0. With R = ceil(rows / 4) byte rows, the
 * code of row r, column c is (q + 1) << 2 * (r / R) in byte (r % R) * cols + c; slots past
 * the last row stay 0.
 * Must not: know the layout's tensor names (fmt_bitnet.c) or allocate.
 */
#ifndef MK_TERNARY_H
#define MK_TERNARY_H

#include "qerr.h"

#include "../core/mk_dtype.h"

#include <stddef.h>
#include <stdint.h>

/* BitNet's floor on the mean |W| (WeightQuant's clamp). */
#define MK_TERNARY_EPS 1e-5f

/* The stored weight_scale (as f32, exactly representable in dt) of a tensor whose |values|
 * sum to sum_abs over numel elements. A scale past dt's range (float16 with mean |W| below
 * about 1.5e-5) is the largest finite value of dt. */
float mk_ternary_scale(double sum_abs, uint64_t numel, mk_dtype dt);
/* sum |x[k]| in double, in element order. */
double mk_ternary_sum_abs(const float *x, size_t n);
/* out[i] = mk_ternary_sum_abs(row i) for the nrows rows of cols values at x, the same bits:
 * the fast version adds 4 rows side by side (one per double lane), each in column order;
 * the _ref calls mk_ternary_sum_abs row by row. */
void mk_ternary_row_abs(const float *x, size_t nrows, size_t cols, double *out);
void mk_ternary_row_abs_ref(const float *x, size_t nrows, size_t cols, double *out);
/* Encode rows [r0, r0 + nrows) (x: nrows * cols values, finite) with stored scale s into
 * the packed tensor of a [rows, cols] weight: ORs each row's codes into its byte slots
 * (packed starts zeroed; rows of different calls touch different bits). Adds the error
 * sums against dt(q / s): each row's sx2 and se2 summed in double in column order, then
 * added to e's in row order. The _ref does it a value at a time; the fast version gives the
 * same bytes and the same double bits with 4 or 8 rows side by side, one per double lane. */
void mk_ternary_pack_rows(uint8_t *packed, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, const float *x, float s,
                          mk_dtype dt, mk_qerr *e);
void mk_ternary_pack_rows_ref(uint8_t *packed, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, const float *x, float s,
                              mk_dtype dt, mk_qerr *e);
/* The value of element (r, c) of a [rows, cols] weight from its packed bytes, as
 * transformers unpacks it ((code >> 2 * (r / R) & 3) - 1; a stray code 3 is 2) divided by
 * s and rounded to dt. packed_row: byte row r % R (cols bytes). */
float mk_ternary_value(const uint8_t *packed_row, uint64_t rows, uint64_t r, uint64_t c, float s, mk_dtype dt);
/* Byte rows of a [rows, cols] weight: ceil(rows / 4). */
static inline uint64_t mk_ternary_byte_rows(uint64_t rows) { return (rows + 3) / 4; }

#endif
