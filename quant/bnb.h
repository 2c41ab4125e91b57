/* bnb.h - the bitsandbytes quantizers, bit for bit: NF4 and FP4 blockwise 4-bit codes
 * (with the nested 8-bit "double quant" of the block absmax) and LLM.int8 row-wise int8,
 * plus their dequantizers.
 *
 * Owns: the code tables and the rounding rules of reference/quantization-formats.md
 * sections 1, 2 and 8. Every kernel has a plain reference version (`_ref`, the bytes that
 * define correctness: scalar, one rule per line) and a fast version tested against it.
 * The rules are those of bitsandbytes' torch backend ("default" ops, which runs on CPU):
 * full blocks multiply by the f32 reciprocal of the absmax (clamped to 1e-38), the last
 * partial block of a tensor divides by its clamped absmax and stores the clamped value,
 * a code is the number of f32 midpoints strictly below the scaled value (ties go to the
 * lower code, torch.bucketize right=False), and an odd element count is padded with the
 * code of 0.0 in the low nibble. The CUDA kernels agree except at exact ties.
 * Must not: allocate, or know about tensors, files or threads (callers size buffers).
 */
#ifndef MK_BNB_H
#define MK_BNB_H

#include "qerr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mk_bnb4_type { MK_BNB_NF4 = 0, MK_BNB_FP4 = 1 } mk_bnb4_type;

#define MK_BNB_NESTED_BLOCK 256 /* absmax entries per nested block (bnb: blocksize=256) */
#define MK_BNB_ABSMAX_FLOOR 1e-38f /* torch clamp(min=1e-38): f32 bits 0x006ce3ee, a subnormal */

/* The 16 code values of each 4-bit type, index = code, as bitsandbytes stores them in
 * `quant_map` (get_4bit_type, bitsandbytes 0.50.2). */
extern const float mk_bnb4_code[2][16];
/* The tables the kernels decode with: the same except FP4 code 8, which is -0.0 there
 * (bitsandbytes' CPU and CUDA dequantizers; bnb decodes with these, not with quant_map). */
extern const float mk_bnb4_decode[2][16];
/* The signed dynamic 8-bit map (`nested_quant_map`), 256 entries, sorted. */
extern const float mk_bnb_dynamic_map[256];

/* Blocks of `block` elements over n values: ceil(n / block). */
static inline uint64_t mk_bnb_nblocks(uint64_t n, uint64_t block) { return (n + block - 1) / block; }

/* Quantize n consecutive values of a flattened tensor that start on a block boundary.
 * Blocks are `block` long; a shorter last block is the tensor's last block. Writes
 * absmax[ceil(n/block)] and the packed codes, ceil(n/2) bytes, first element in the high
 * nibble. Values must be finite. */
void mk_bnb4_quantize_ref(mk_bnb4_type t, unsigned block, const float *x, size_t n, float *absmax, uint8_t *packed);
/* The same bytes; with err (else NULL), also adds the error sums of decoding with
 * dec_absmax[block] (the nested absmax of double quant), or with the block's own absmax
 * when dec_absmax is NULL. */
void mk_bnb4_quantize(mk_bnb4_type t, unsigned block, const float *x, size_t n, float *absmax, uint8_t *packed,
                      const float *dec_absmax, mk_qerr *err);
/* The same with x as f32 values or (xb) the bf16 bit patterns of a bf16 weight, widened
 * in the loads: the same bytes and sums as the f32 values. */
void mk_bnb4_quantize_x(mk_bnb4_type t, unsigned block, const void *x, bool xb, size_t n, float *absmax, uint8_t *packed,
                        const float *dec_absmax, mk_qerr *err);

/* The absmax values mk_bnb4_quantize stores for the same input: max |x| per block, the
 * partial last block clamped to MK_BNB_ABSMAX_FLOOR. */
void mk_bnb4_absmax(unsigned block, const float *x, size_t n, float *absmax);

/* The code values of n elements starting at element e0 (even) of packed codes, times the
 * absmax of each element's block: out[j] = code[q(e0 + j)] * absmax[(e0 + j) / block - e0 / block]
 * in f32 (bnb's dequantize_4bit before the cast to the model dtype). */
void mk_bnb4_dequant(mk_bnb4_type t, unsigned block, const uint8_t *packed, const float *absmax, uint64_t e0, size_t n,
                     float *out);
/* The decoded code values alone (|v| <= 1), for error statistics. */
void mk_bnb4_codes(mk_bnb4_type t, const uint8_t *packed, uint64_t e0, size_t n, float *out);

/* Double quant of nb block absmax values (bitsandbytes functional.quantize_4bit with
 * compress_statistics): offset = mean(absmax) (f32; computed in double, then rounded),
 * then blockwise 8-bit quantization of absmax - offset with the dynamic map in blocks of
 * 256: q[nb], nested_absmax[ceil(nb/256)]. */
float mk_bnb_absmax_mean(const float *absmax, size_t nb);
void mk_bnb_nested_quantize_ref(const float *absmax, size_t nb, float offset, uint8_t *q, float *nested_absmax);
void mk_bnb_nested_quantize(const float *absmax, size_t nb, float offset, uint8_t *q, float *nested_absmax);
/* absmax'[j] for blocks b0..b0+n: dyn[q] * nested_absmax[b / 256] + offset (f32). `q`
 * and `nested_absmax` are the whole tensor's arrays. */
void mk_bnb_nested_dequant(const uint8_t *q, const float *nested_absmax, float offset, uint64_t b0, size_t n, float *out);

/* LLM.int8 (Int8Params._quantize -> int8_vectorwise_quant): each row is cast to f16, its
 * absmax becomes SCB (f32) and q = round_half_even(f16(x) * ((1 / SCB) * 127)) as int8 (torch
 * computes 127.0 / SCB as a reciprocal times 127, rounded twice); a zero row gives zero codes. Values must be finite in f16 (the caller checks). */
void mk_bnb_int8_quantize_ref(const float *x, size_t rows, size_t cols, int8_t *q, float *scb);
/* The same bytes; with err (else NULL), also adds the error sums of mk_bnb_int8_dequant. */
void mk_bnb_int8_quantize(const float *x, size_t rows, size_t cols, int8_t *q, float *scb, mk_qerr *err);
/* The same with x as f32 values or (xb) bf16 bit patterns, widened in the loads. */
void mk_bnb_int8_quantize_x(const void *x, bool xb, size_t rows, size_t cols, int8_t *q, float *scb, mk_qerr *err);
/* Dequant as bnb's int8_vectorwise_dequant: (q * SCB) * f32(1/127). */
void mk_bnb_int8_dequant(const int8_t *q, const float *scb, size_t rows, size_t cols, float *out);

#endif
