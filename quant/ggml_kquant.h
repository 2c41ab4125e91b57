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

#endif
