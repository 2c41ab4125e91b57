/* ggml.h - llama.cpp's tensor block codecs, decode side: the blocks of every ggml type
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

#endif
