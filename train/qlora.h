/* qlora.h - the frozen base of QLoRA: the layers' projection weights held as NF4 codes in
 * blocks of 64 with an f32 absmax per block (the layout and rounding of `quantize --format
 * nf4`, quant/bnb.h), decoded one layer at a time for the forward and backward passes
 * (nn/backward.h's mk_nn_held). A tensor is quantized the first time it is asked for, from
 * the source's values; after that only its codes stay. An input that is NF4 already (read
 * dequantized through quant/qsource.h) is held again without loss: its values are code x
 * absmax, which quantize to the same codes and absmax.
 * Must not: print, or keep a tensor's f32 values beyond the caller's one-layer scratch.
 */
#ifndef MK_TRAIN_QLORA_H
#define MK_TRAIN_QLORA_H

#include "../nn/backward.h"

#define MK_QLORA_BLOCK 64

typedef struct mk_qlora mk_qlora;

/* A holder over src (borrowed for its life); *held is what mk_nn_train_open_held takes. */
mk_status mk_qlora_new(mk_source *src, mk_qlora **out, mk_nn_held *held);
void mk_qlora_free(mk_qlora *q);
/* Bytes NF4 holds for a tensor of n elements: codes ceil(n/2), absmax 4 ceil(n/64). */
uint64_t mk_qlora_bytes(uint64_t n);
/* Bytes held so far (all tensors once a pass has run). */
uint64_t mk_qlora_held_bytes(const mk_qlora *q);

#endif
