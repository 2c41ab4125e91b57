/* common16.c - nn.Linear's bf16 products (mk_cuda16.h) as column-major mk_cu_gemm16 calls, the
 * same for the device and the CPU emulation; the layouts as common.c's f32 ones. */
#include "mk_cuda16.h"

void mk_cu_linear16(const uint16_t *x, size_t T, size_t in, const uint16_t *w, size_t out, float *y)
{
    mk_cu_gemm16(true, false, out, T, in, w, in, x, in, y, out, false);
    mk_cu_round(y, T * out);
}

void mk_cu_linear16_bwd(const uint16_t *x, size_t T, size_t in, const uint16_t *w, size_t out, const uint16_t *dy, float *dx,
                        bool dx_bf16, float *dw, uint16_t *c16)
{
    if (dx) {
        mk_cu_gemm16(false, false, in, T, out, w, in, dy, out, c16, in, true);
        mk_cu_add16(dx, c16, T * in, dx_bf16);
    }
    if (dw) {
        mk_cu_gemm16(false, true, in, out, T, x, in, dy, out, c16, in, true);
        mk_cu_add16(dw, c16, out * in, false);
    }
}
