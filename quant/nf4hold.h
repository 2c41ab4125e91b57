/* nf4hold.h - the frozen base of QLoRA: a source's tensors held as NF4 codes in blocks of 64
 * with an f32 absmax per block (the layout and rounding of `quantize --format nf4`, bnb.h),
 * decoded on demand into the caller's buffer (finetune --qlora wires mk_nf4_hold_fill into
 * nn/backward.h's mk_nn_held: one layer's projections at a time). A tensor is quantized the first time it is asked for, from
 * the source's values; after that only its codes stay. An input that is NF4 already (read
 * dequantized through quant/qsource.h) is held again without loss: its values are code x
 * absmax, which quantize to the same codes and absmax.
 * Must not: print, or keep a tensor's f32 values beyond the caller's one-layer scratch.
 */
#ifndef MK_QUANT_NF4HOLD_H
#define MK_QUANT_NF4HOLD_H

#include "../core/mk_tensor.h"

#define MK_QLORA_BLOCK 64

typedef struct mk_qlora mk_qlora;

/* A holder over src (borrowed for its life). */
mk_status mk_qlora_new(mk_source *src, mk_qlora **out);
/* Tensor i's n values (n: its element count) into dst, decoded from its NF4 codes; the
 * first call for a tensor reads it from the source (through dst) and quantizes it.
 * ctx: the holder. The signature of mk_nn_held's fill. */
mk_status mk_nf4_hold_fill(void *ctx, size_t i, float *dst, uint64_t n);
/* Tensor i's NF4 form (quantized first if it was not yet): packed codes, absmax per block,
 * the 16 NF4 values (bnb.h); borrowed while q lives. The signature of mk_nn_held's nf4. */
mk_status mk_nf4_hold_codes(void *ctx, size_t i, uint64_t n, const uint8_t **codes, const float **absmax, const float **table);
void mk_qlora_free(mk_qlora *q);
/* Bytes NF4 holds for a tensor of n elements: codes ceil(n/2), absmax 4 ceil(n/64). */
uint64_t mk_qlora_bytes(uint64_t n);

#endif
