/* emu_lora16.c - mk_cuda_lora16.h on the CPU: the bodies of bodies_lora16.h looped over their
 * grid, a row kernel's phases one after the other for all threads of its block, as emu.c. */
#include "mk_cuda_lora16.h"

#include "bodies_lora16.h"

static double shl[2 * MK_CU_NT];

#define EACH(n, body) for (size_t i_ = 0; i_ < (n); i_++) body
#define THREADS(stmt) for (unsigned tid = 0; tid < MK_CU_NT; tid++) stmt

/* the tree over sh (the barriers' order: one level for all threads at a time) */
static void tree_add(double *sh)
{
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2)
        for (unsigned tid = 0; tid < MK_CU_NT; tid++) mk_cu_tree_add(sh, tid, stride);
}

void mk_cu_bias16_add(float *y, const uint16_t *b, size_t T, size_t out) { EACH(T * out, mk_cu_bias16_add_body(i_, y, b, out)); }
void mk_cu_bias16_bwd(const uint16_t *dy, size_t T, size_t out, float *db)
{
    EACH(out, mk_cu_bias16_bwd_body(i_, dy, T, out, db));
}
void mk_cu_lora16_add(float *y, const uint16_t *t, float s, size_t n) { EACH(n, mk_cu_lora16_add_body(i_, y, t, s)); }
void mk_cu_scale16(uint16_t *y16, float s, size_t n) { EACH(n, mk_cu_scale16_body(i_, y16, s)); }
void mk_cu_nf4_decode16(const uint8_t *codes, const float *absmax, const float *table, size_t block, size_t n, uint16_t *out)
{
    EACH(n, mk_cu_nf4_16_body(i_, codes, absmax, table, block, out));
}

void mk_cu_rmsnorm_b(float *out, const float *x, const float *w, size_t T, size_t d, float eps)
{
    for (size_t row = 0; row < T; row++) {
        THREADS(mk_cu_rms_part(row, tid, x, d, shl));
        tree_add(shl);
        double ss = shl[0];
        THREADS(mk_cu_rmsb_fin(row, tid, x, w, d, eps, ss, out));
    }
}

void mk_cu_rmsnorm_b_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *rstd)
{
    for (size_t row = 0; row < T; row++) {
        THREADS(mk_cu_rms_bwd_part_any(row, tid, x, w, dy, d, shl, 1));
        tree_add(shl);
        tree_add(shl + MK_CU_NT);
        double ss = shl[0], dot = shl[MK_CU_NT];
        THREADS(mk_cu_rms_bwd_fin_any(row, tid, x, w, dy, d, eps, ss, dot, dx, rstd, 1));
    }
    if (dw) EACH(d, mk_cu_rmsb_dw_body(i_, x, dy, rstd, T, d, dw));
}
