/* search.h - the scale search of the group-wise integer formats (the `--method search` of
 * compressed-tensors int4/int8 output), after llama.cpp's make_qx_quants (symmetric) and
 * make_qkx2_quants (with a minimum), reference quantization-formats.md 6.1 and 6.2, with
 * llama-quantize's importance weights; written from that description.
 *
 * It minimises the weighted squared error sum_i w_i (x_i - x^_i)^2, w_i the importance of the
 * value's input column: an imatrix's mean squared activation (what the output error of a
 * linear layer weighs each column's error by), the data-free proxy of search_proxy.h, or 1.
 * For each group it tries scales around the round-to-nearest one (the range divided by
 * qrange + 0.1 k: k = -9, -6, ..., 9, then the two neighbours of the best), rounds the values
 * with each, refits the weighted least-squares scale for those codes, keeps the candidate with
 * the smallest weighted error and refits it once. The zero point of the asymmetric form stays an
 * integer (compressed-tensors stores it as int). The winner is then rounded to the stored scale
 * dtype, the codes are recomputed from the stored scale by compressed-tensors' own rule, and the
 * result is kept only if its real weighted error is below that of plain round-to-nearest: the
 * output is never worse than `rtn` in that error and is loaded the same way.
 * Must not: allocate, or know tensors or files.
 */
#ifndef MK_SEARCH_H
#define MK_SEARCH_H

#include "ct.h"

/* Scale and zero point for one group of n values (n <= MK_SEARCH_MAX_GROUP); same
 * meaning as mk_ct_int_qparams. imp: the n values' importances (>= 0), or NULL: all 1. */
#define MK_SEARCH_MAX_GROUP 65536
void mk_search_int_qparams(const mk_ct_int *a, const float *x, const float *imp, size_t n, float *scale, int32_t *zp);

/* Tests: the parts of the search, each with ref (the reference: one pass per candidate) or its
 * fast path (the candidates side by side in one pass), which must agree bit for bit.
 * mk_search_fits: the weighted least-squares scale s[c] and error e[c] of the codes
 * clamp(rint(x * inv[c]) + z0[c], lo, hi) - z0[c], sxx = sum(w x^2) (w NULL: all 1).
 * mk_search_real_errors: the weighted squared error e[c] of the group as compressed-tensors
 * codes and decodes it with scale sc[c] and zero point zp[c], c = 0, 1.
 * mk_search_use_ref: 1 has mk_search_int_qparams take the reference paths; returns the
 * setting before. */
void mk_search_fits(const float *x, const float *w, size_t n, size_t nc, const float *inv, const float *z0, float lo, float hi,
                    double sxx, float *s, double *e, bool ref);
void mk_search_real_errors(const mk_ct_int *a, const float *x, const float *w, size_t n, const float *sc, const int32_t *zp, double *e,
                           bool ref);
int mk_search_use_ref(int on);

#endif
