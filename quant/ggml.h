/* ggml.h - llama.cpp's tensor block codecs. Decode side (ggml.c): the blocks of every ggml type
 * model/gguf_names.h marks decodable, to f32, with the arithmetic of ggml's reference
 * dequantize_row_* (ggml/src/ggml-quants.c) and gguf-py's gguf.quants, which agree: each
 * value is one f32 product (and one f32 subtraction or addition where the type has a
 * minimum), so results are exact to the bit.
 * Must not: allocate, read files, or know GGUF containers (formats/gguf.c does).
 */
#ifndef MK_QUANT_GGML_H
#define MK_QUANT_GGML_H

#include "../core/mk_core.h"

/* Decode `nblocks` whole blocks of ggml type `type` from src into dst (nblocks x block
 * values). Returns false for a type it cannot decode. */
bool mk_ggml_decode(uint32_t type, const void *src, uint64_t nblocks, float *dst);

/* Encode side (ggml_quant.c): `nblocks` blocks of type `type` from src (nblocks x block
 * values) into dst, byte for byte what llama.cpp's reference quantize_row_*_ref writes
 * (and gguf-py's gguf.quants). F32, F16, BF16 (round to nearest even, NaN kept quiet),
 * Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, TQ1_0, TQ2_0. Returns false for a type it cannot encode. */
bool mk_ggml_encode(uint32_t type, const float *src, uint64_t nblocks, void *dst);
/* The same bytes by the scalar reference code: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 one value at
 * a time (mk_ggml_encode runs them 8 lanes at a time, built for AVX2 too); the other types
 * as mk_ggml_encode. For the tests. */
bool mk_ggml_encode_ref(uint32_t type, const float *src, uint64_t nblocks, void *dst);
bool mk_ggml_encodable(uint32_t type);

#endif
