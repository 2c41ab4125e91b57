/* ggml_kquant.h - llama.cpp's k-quant encoders (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of
 * 256 values) and IQ4_NL (32 values), without an importance matrix: byte for byte what
 * ggml-quants.c's quantize_row_q*_K_ref and quantize_iq4_nl write (and so what llama-quantize
 * writes with no imatrix), in the same f32 operations and order. mk_ggml_encode (ggml.h) dispatches here.
 * Must not: allocate, read files, or know tensor names (quant/ggml_mix.h chooses types).
 */
#ifndef MK_QUANT_GGML_KQUANT_H
#define MK_QUANT_GGML_KQUANT_H

#include <stdbool.h>
#include <stdint.h>

/* nblocks blocks of type (MK_GGML_Q2_K ... MK_GGML_Q6_K: 256 values each; MK_GGML_IQ4_NL: 32)
 * from src into dst (the type's block bytes each). False for another type. */
bool mk_ggml_kquant_encode(uint32_t type, const float *src, uint64_t nblocks, void *dst);

/* nrows rows of n_per_row values (a multiple of the type's block) quantized with importance
 * weights qw[n_per_row] (the same for every row: an imatrix's per-column mean squared
 * activations), byte for byte ggml's quantize_q4_0 / q4_1 / q5_0 / q5_1 / q2_K ... q6_K /
 * iq4_nl(src, dst, nrows, n_per_row, qw). qw NULL: the unweighted encoders (mk_ggml_encode).
 * False for another type or a row length not a positive multiple of the block. */
bool mk_ggml_kquant_encode_w(uint32_t type, const float *src, uint64_t nrows, uint64_t n_per_row, const float *qw, void *dst);
/* The same bytes by the scalar group fits, one group at a time (mk_ggml_kquant_encode_w runs
 * them 16 groups or blocks at a time in SIMD lanes, built for AVX2 too; IQ4_NL has the lane
 * code only). For the tests. */
bool mk_ggml_kquant_encode_w_ref(uint32_t type, const float *src, uint64_t nrows, uint64_t n_per_row, const float *qw, void *dst);

#endif
