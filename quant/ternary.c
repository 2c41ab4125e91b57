/* ternary.c - see ternary.h: BitNet b1.58's absmean rule and transformers' 2-bit packing.
 * Must not: know tensor names or allocate.
 */
#include "ternary.h"

#include "ct.h"
#include "qvec.h"

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

void mk_ternary_pack_rows_ref(uint8_t *packed, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, const float *x, float s,
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

/* ---- fast paths: rows side by side ------------------------------------------------------------
 * Each row's double sums are one chain added in column order (the reference's order). Four rows
 * go side by side, one per double lane: 8 columns of 4 rows are loaded as rows, transposed to 8
 * vectors of 4 (one a column, in column order) and added lane by lane. (double)x * x and
 * (double)err * err are exact (24-bit significands), so each lane's terms and sums are the
 * reference's bits; row totals then go into the caller's sums in row order, as there. Two
 * (pack) or four (|x| sums) groups of 4 rows run at once, so that several chains hide the
 * latency of the additions. */
typedef double tn_vd __attribute__((vector_size(32)));
typedef uint8_t tn_vb32 __attribute__((vector_size(32)));

typedef double tn_vd8 __attribute__((vector_size(64)));
/* lanes 0-3 and 4-7 as double (all 8 converted at once: GCC makes two vcvtps2pd of it) */
#define TN_CV(u) __builtin_convertvector((u), tn_vd8)
#define TN_LO(w) __builtin_shufflevector((w), (w), 0, 1, 2, 3)
#define TN_HI(w) __builtin_shufflevector((w), (w), 4, 5, 6, 7)
#define TN_SQ(v) ((v) * (v))
#define TN_ID(v) (v)
/* acc[j] += F(r[j][c]) for rows j = 0..3 and columns c = 0..7 in that order; r: 4 rows of 8 f32. */
#define TN_ADD_COLS(acc, r, F)                                                                                         \
    do {                                                                                                               \
        const mk_vf t0_ = __builtin_shufflevector((r)[0], (r)[1], 0, 8, 1, 9, 4, 12, 5, 13);                            \
        const mk_vf t1_ = __builtin_shufflevector((r)[0], (r)[1], 2, 10, 3, 11, 6, 14, 7, 15);                          \
        const mk_vf t2_ = __builtin_shufflevector((r)[2], (r)[3], 0, 8, 1, 9, 4, 12, 5, 13);                            \
        const mk_vf t3_ = __builtin_shufflevector((r)[2], (r)[3], 2, 10, 3, 11, 6, 14, 7, 15);                          \
        const tn_vd8 c04_ = TN_CV(__builtin_shufflevector(t0_, t2_, 0, 1, 8, 9, 4, 5, 12, 13));                        \
        const tn_vd8 c15_ = TN_CV(__builtin_shufflevector(t0_, t2_, 2, 3, 10, 11, 6, 7, 14, 15));                      \
        const tn_vd8 c26_ = TN_CV(__builtin_shufflevector(t1_, t3_, 0, 1, 8, 9, 4, 5, 12, 13));                        \
        const tn_vd8 c37_ = TN_CV(__builtin_shufflevector(t1_, t3_, 2, 3, 10, 11, 6, 7, 14, 15));                      \
        tn_vd v_;                                                                                                      \
        v_ = TN_LO(c04_), (acc) += F(v_);                                                                              \
        v_ = TN_LO(c15_), (acc) += F(v_);                                                                              \
        v_ = TN_LO(c26_), (acc) += F(v_);                                                                              \
        v_ = TN_LO(c37_), (acc) += F(v_);                                                                              \
        v_ = TN_HI(c04_), (acc) += F(v_);                                                                              \
        v_ = TN_HI(c15_), (acc) += F(v_);                                                                              \
        v_ = TN_HI(c26_), (acc) += F(v_);                                                                              \
        v_ = TN_HI(c37_), (acc) += F(v_);                                                                              \
    } while (0)

/* Groups of fewer rows than lanes fill the spare lanes with their last row again and drop
 * those lanes' sums (in the pack, that row's codes are ORed twice into the same bits). */
#define TN_ROW(x, cols, j, nr) ((x) + (size_t)((size_t)(j) < (nr) ? (size_t)(j) : (nr) - 1) * (cols))

/* out[j] = mk_ternary_sum_abs of row j, for the nr <= 4 * G rows at x (G a constant after
 * inlining). */
MK_VINLINE void tn_abs_rows(const float *x, size_t cols, int G, size_t nr, double *out)
{
    tn_vd acc[4] = {{0}};
    const float *xr[16];
    for (int j = 0; j < 4 * G; j++) xr[j] = TN_ROW(x, cols, j, nr);
    size_t c = 0;
    for (; c + 8 <= cols; c += 8)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            mk_vf r[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) r[j] = mk_vf_abs(mk_vf_load(xr[4 * g + j] + c));
            TN_ADD_COLS(acc[g], r, TN_ID);
        }
    for (; c < cols; c++)
        for (size_t j = 0; j < nr; j++) acc[j / 4][j % 4] += fabs((double)xr[j][c]);
    for (size_t j = 0; j < nr; j++) out[j] = acc[j / 4][j % 4];
}

MK_QKERNEL void mk_ternary_row_abs(const float *x, size_t nrows, size_t cols, double *out)
{
    size_t i = 0;
    for (; i + 16 <= nrows; i += 16) tn_abs_rows(x + i * cols, cols, 4, 16, out + i);
    for (; i < nrows; i += 4) tn_abs_rows(x + i * cols, cols, 1, nrows - i < 4 ? nrows - i : 4, out + i);
}

void mk_ternary_row_abs_ref(const float *x, size_t nrows, size_t cols, double *out)
{
    for (size_t i = 0; i < nrows; i++) out[i] = mk_ternary_sum_abs(x + i * cols, cols);
}

/* What every row of a pack call shares: the scale and the two nonzero dequantized values. */
typedef struct tn_pack {
    float s, dm, dp;
    int32_t dmb, dpb; /* the bits of dm and dp */
    uint64_t R, cols;
} tn_pack;

/* Codes of 8 values of one row ORed into dst, their |errors| returned, mx (the largest error
 * so far, as bits) raised. q = clamp(rint(x * s), -1, 1) is 1 above 0.5, -1 below -0.5 and 0
 * between (rint(+-0.5) = 0, ties to even). No vector comparisons (GCC makes 8 scalar ones of
 * each in the baseline build): p > 0.5 is the sign of 0.5 - p, p < -0.5 that of p + 0.5
 * (rounding keeps the sign of a difference, which is +0 only at p = +-0.5); the errors are
 * >= 0 and not NaN, so their bits order as integers do. */
#define TN_CODES(k, xv, dst, shift, mx)                                                                                \
    ({                                                                                                                 \
        const mk_vf p_ = (xv) * mk_vf_set1((k)->s);                                                                    \
        const mk_vi gt_ = (mk_vi)(mk_vf_set1(0.5f) - p_) >> 31, lt_ = (mk_vi)(p_ + mk_vf_set1(0.5f)) >> 31;           \
        const mk_vf dq_ = (mk_vf)((gt_ & mk_vi_set1((k)->dpb)) | (lt_ & mk_vi_set1((k)->dmb)));                        \
        const mk_vf er_ = mk_vf_abs((xv) - dq_);                                                                       \
        const tn_vb32 cb_ = (tn_vb32)(((mk_vi_set1(1) - gt_) + lt_) << (shift));                                       \
        mk_vu8x8 b_;                                                                                                   \
        memcpy(&b_, (dst), 8);                                                                                         \
        b_ |= __builtin_shufflevector(cb_, cb_, 0, 4, 8, 12, 16, 20, 24, 28);                                          \
        memcpy((dst), &b_, 8);                                                                                         \
        const mk_vi d_ = (mk_vi)er_ - (mx);                                                                            \
        (mx) += d_ & ~(d_ >> 31);                                                                                      \
        er_;                                                                                                           \
    })

/* The reference's work on one value, into lane j of the row sums (column tails). */
MK_VINLINE void tn_pack1(const tn_pack *k, float xv, uint8_t *dst, unsigned shift, tn_vd *sx, tn_vd *se, int j, float *mx)
{
    const int q = code_of(xv, k->s);
    *dst |= (uint8_t)((q + 1) << shift);
    const float err = fabsf(xv - (q > 0 ? k->dp : q < 0 ? k->dm : 0.0f));
    (*sx)[j] += (double)xv * xv;
    (*se)[j] += (double)err * err;
    if (err > *mx) *mx = err;
}

/* Rows r .. r + nr - 1 (x: their values; nr <= 4 * G) of a pack call; sums as the reference's. */
MK_VINLINE void tn_pack_rows(const tn_pack *k, uint8_t *packed, uint64_t r, const float *x, int G, size_t nr, mk_qerr *e)
{
    const size_t cols = (size_t)k->cols;
    tn_vd sx[2] = {{0}}, se[2] = {{0}};
    mk_vi mxv = mk_vi_set1(0);
    const float *xr[8];
    uint8_t *dst[8];
    unsigned shift[8];
    for (int j = 0; j < 4 * G; j++) {
        const uint64_t rj = r + ((size_t)j < nr ? (uint64_t)j : nr - 1);
        xr[j] = TN_ROW(x, cols, j, nr);
        dst[j] = packed + (rj % k->R) * cols;
        shift[j] = (unsigned)(2 * (rj / k->R));
    }
    size_t c = 0;
    for (; c + 8 <= cols; c += 8)
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            mk_vf xv[4], er[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                xv[j] = mk_vf_load(xr[4 * g + j] + c);
                er[j] = TN_CODES(k, xv[j], dst[4 * g + j] + c, shift[4 * g + j], mxv);
            }
            TN_ADD_COLS(sx[g], xv, TN_SQ);
            TN_ADD_COLS(se[g], er, TN_SQ);
        }
    float mx = mk_vf_hmax((mk_vf)mxv);
    for (; c < cols; c++)
        for (size_t j = 0; j < nr; j++) tn_pack1(k, xr[j][c], dst[j] + c, shift[j], &sx[j / 4], &se[j / 4], (int)(j % 4), &mx);
    for (size_t j = 0; j < nr; j++) {
        e->sx2 += sx[j / 4][j % 4];
        e->se2 += se[j / 4][j % 4];
    }
    if (mx > e->maxe) e->maxe = mx;
}

MK_QKERNEL void mk_ternary_pack_rows(uint8_t *packed, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, const float *x,
                                     float s, mk_dtype dt, mk_qerr *e)
{
    tn_pack k = {s, mk_ct_round(dt, -1.0f / s), mk_ct_round(dt, 1.0f / s), 0, 0, mk_ternary_byte_rows(rows), cols};
    memcpy(&k.dmb, &k.dm, 4);
    memcpy(&k.dpb, &k.dp, 4);
    size_t i = 0;
    for (; i + 8 <= nrows; i += 8) tn_pack_rows(&k, packed, r0 + i, x + i * cols, 2, 8, e);
    for (; i < nrows; i += 4) tn_pack_rows(&k, packed, r0 + i, x + i * cols, 1, nrows - i < 4 ? nrows - i : 4, e);
}

float mk_ternary_value(const uint8_t *packed_row, uint64_t rows, uint64_t r, uint64_t c, float s, mk_dtype dt)
{
    const uint64_t R = mk_ternary_byte_rows(rows);
    int q = (int)((packed_row[c] >> (2 * (r / R))) & 3) - 1;
    return mk_ct_round(dt, (float)q / s);
}
