/* common.c - the parts of mk_cuda.h built on the backend's primitives, the same for the
 * device (kernels.cu) and the CPU emulation (emu.c): nn.Linear's products as column-major
 * gemm calls, the norm's block count and clipping. */
#include "mk_cuda.h"

#include "launch.h"

/* Row-major [r, c] is column-major [c, r]: y^T = W x^T etc. with W [out, in] read as [in, out]. */
void mk_cu_linear(const float *x, size_t T, size_t in, const float *w, size_t out, float beta, float *y)
{
    mk_cu_gemm(true, false, out, T, in, 1.0f, w, in, x, in, beta, y, out);
}

void mk_cu_linear_bwd(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx, float *dw)
{
    if (dx) mk_cu_gemm(false, false, in, T, out, 1.0f, w, in, dy, out, 1.0f, dx, in);
    if (dw) mk_cu_gemm(false, true, in, out, T, 1.0f, x, in, dy, out, 1.0f, dw, in);
}

size_t mk_cu_norm_parts(size_t n) { return mk_cu_norm_blocks(n) + 1; }

float mk_cu_grad_clip(float *g, size_t n, double norm, double max_norm)
{
    if (max_norm <= 0) return 1.0f;
    float c = (float)(max_norm / (norm + 1e-6));
    if (c >= 1.0f) return 1.0f;
    mk_cu_scale(g, c, n);
    return c;
}
