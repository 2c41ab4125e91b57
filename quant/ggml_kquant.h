/* ggml_kquant.h - llama.cpp's k-quant encoders (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of
 * 256 values), without an importance matrix: byte for byte what ggml-quants.c's
 * quantize_row_q*_K_ref write (and so what llama-quantize writes with no imatrix), in the same
 * f32 operations and order. One call encodes one super-block of x (256 values) into b (the
 * type's block bytes, mk_ggml_type_of(type)->bytes); mk_ggml_encode (ggml.h) dispatches here.
 * Must not: allocate, read files, or know tensor names (quant/ggml_mix.h chooses types).
 */
#ifndef MK_QUANT_GGML_KQUANT_H
#define MK_QUANT_GGML_KQUANT_H

#include <stdint.h>

void mk_ggml_q2_k(const float *x, uint8_t *b);
void mk_ggml_q3_k(const float *x, uint8_t *b);
void mk_ggml_q4_k(const float *x, uint8_t *b);
void mk_ggml_q5_k(const float *x, uint8_t *b);
void mk_ggml_q6_k(const float *x, uint8_t *b);

#endif
