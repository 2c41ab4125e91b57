/* mk_cuda_lora.h - the kernels LoRA, QLoRA and the qwen families add to mk_cuda.h (same
 * conventions: device pointers, asynchronous launches, errors at the next mk_cu_sync). Two
 * implementations, as mk_cuda.h: kernels_lora.cu (the device) and emu_lora.c (the CPU
 * emulation). Bodies: bodies_lora.h. */
#ifndef MK_NN_CUDA_LORA_H
#define MK_NN_CUDA_LORA_H

#include "mk_cuda.h"

/* y[T, out] += b (the bias of nn.Linear); backward: db += the column sums of dy (mk_nn_linear_bwd's db) */
void mk_cu_bias_add(float *y, const float *b, size_t T, size_t out);
void mk_cu_bias_bwd(const float *dy, size_t T, size_t out, float *db);
/* out[n] = the NF4 values of codes (mk_bnb4_dequant with blocks of `block`); table: the 16
 * code values on the device */
void mk_cu_nf4_decode(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n, float *out);

/* The device only (kernels.cu): keep the error of the launch just made, naming it, for mk_cu_sync. */
void mk_cu_launched(const char *name);

#endif
