/* emu_lora.c - mk_cuda_lora.h on the CPU: the bodies of bodies_lora.h looped over their grid,
 * as emu.c does for mk_cuda.h. */
#include "mk_cuda_lora.h"

#include "bodies_lora.h"

void mk_cu_bias_add(float *y, const float *b, size_t T, size_t out)
{
    for (size_t i = 0; i < T * out; i++) mk_cu_bias_add_body(i, y, b, out);
}
void mk_cu_bias_bwd(const float *dy, size_t T, size_t out, float *db)
{
    for (size_t o = 0; o < out; o++) mk_cu_bias_bwd_body(o, dy, T, out, db);
}
void mk_cu_nf4_decode(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) mk_cu_nf4_body(i, codes, absmax, table, block, out);
}
