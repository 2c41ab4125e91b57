/* ternary.c - see ternary.h: BitNet b1.58's absmean rule and transformers' 2-bit packing.
 * Must not: know tensor names or allocate.
 */
#include "ternary.h"

#include "ct.h"

#include <float.h>
#include <math.h>

double mk_ternary_sum_abs(const float *x, size_t n)
{
    double s = 0;
    for (size_t k = 0; k < n; k++) s += fabs((double)x[k]);
    return s;
}

float mk_ternary_scale(double sum_abs, uint64_t numel, mk_dtype dt)
{
    float mean = numel ? (float)(sum_abs / (double)numel) : 0.0f;
    if (!(mean >= MK_TERNARY_EPS)) mean = MK_TERNARY_EPS;
    float s = 1.0f / mean;
    if (dt == MK_F16 && s >= 65520.0f) return 65504.0f; /* would round to Inf */
    return mk_ct_round(dt, s);
}

static inline int code_of(float x, float s)
{
    float v = rintf(x * s);
    return v > 1.0f ? 1 : v < -1.0f ? -1 : (int)v;
}

void mk_ternary_pack_rows(uint8_t *packed, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, const float *x, float s,
                          mk_dtype dt, mk_qerr *e)
{
    const uint64_t R = mk_ternary_byte_rows(rows);
    const float deq[3] = {mk_ct_round(dt, -1.0f / s), 0.0f, mk_ct_round(dt, 1.0f / s)};
    for (size_t i = 0; i < nrows; i++) {
        const uint64_t r = r0 + i;
        const unsigned shift = (unsigned)(2 * (r / R));
        uint8_t *dst = packed + (r % R) * cols;
        const float *xr = x + i * cols;
        double sx2 = 0, se2 = 0;
        for (uint64_t c = 0; c < cols; c++) {
            int q = code_of(xr[c], s);
            dst[c] |= (uint8_t)((q + 1) << shift);
            float err = fabsf(xr[c] - deq[q + 1]);
            sx2 += (double)xr[c] * xr[c];
            se2 += (double)err * err;
            if (err > e->maxe) e->maxe = err;
        }
        e->sx2 += sx2;
        e->se2 += se2;
    }
}

float mk_ternary_value(const uint8_t *packed_row, uint64_t rows, uint64_t r, uint64_t c, float s, mk_dtype dt)
{
    const uint64_t R = mk_ternary_byte_rows(rows);
    int q = (int)((packed_row[c] >> (2 * (r / R))) & 3) - 1;
    return mk_ct_round(dt, (float)q / s);
}
