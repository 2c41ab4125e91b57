/* search.h - a calibration-free scale search for the group-wise integer formats (the
 * `--method search` of compressed-tensors int4/int8 output), after llama.cpp's
 * make_qx_quants (symmetric) and make_qkx2_quants (with a minimum), reference
 * quantization-formats.md 6.1 and 6.2; written from that description.
 *
 * For each group it tries 21 scales around the round-to-nearest one (the range divided by
 * qrange + 0.1 k, k = -10..10), rounds the values with each, refits the least-squares scale
 * for those codes, and keeps the candidate with the smallest squared error. The zero point
 * of the asymmetric form stays an integer (compressed-tensors stores it as int). The winner
 * is then rounded to the stored scale dtype, the codes are recomputed from the stored scale
 * by compressed-tensors' own rule, and the result is kept only if its real error is below
 * that of plain round-to-nearest: the output is never worse than `rtn` and is loaded the
 * same way.
 * Must not: allocate, or know tensors or files.
 */
#ifndef MK_SEARCH_H
#define MK_SEARCH_H

#include "ct.h"

/* Scale and zero point for one group of n values (n <= MK_SEARCH_MAX_GROUP); same
 * meaning as mk_ct_int_qparams. */
#define MK_SEARCH_MAX_GROUP 65536
void mk_search_int_qparams(const mk_ct_int *a, const float *x, size_t n, float *scale, int32_t *zp);

#endif
