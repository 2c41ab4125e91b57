/* test_ternary.c - the ternary (BitNet b1.58) quantizer against transformers' own packing
 * (tests/golden/quant/ternary.safetensors, made by tools/gen-golden-ternary.py with
 * transformers' pack_weights; the codes and scale follow the absmean rule written there).
 * Tolerance: none. The packed bytes, the stored scale and the dequantized values must be the
 * same bits; a failure names the case and the first differing byte or element. The rows are
 * encoded in two calls (as two chunks would), so bits of one byte come from both.
 */
#include "harness.h"

#include "../../formats/safetensors.h"
#include "../../quant/ternary.h"

#include <stdlib.h>

static void *read_tensor(mk_source *src, const char *cs, const char *suffix, const mk_tensor_info **info)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s", cs, suffix);
    long i = mk_source_find(src, name);
    if (i < 0) {
        mk_test_fail(__FILE__, __LINE__, "ternary.safetensors: no tensor %s", name);
        return NULL;
    }
    *info = &src->tensors[i];
    void *b = malloc((size_t)(*info)->nbytes + 1);
    if (b && src->ops->read(src, (size_t)i, 0, (*info)->nbytes, b) != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "%s: %s", name, mk_errmsg());
        free(b);
        return NULL;
    }
    return b;
}

/* The first byte where got and want differ, or -1. */
static long first_diff(const uint8_t *got, const uint8_t *want, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (got[k] != want[k]) return (long)k;
    return -1;
}

static void check_case(mk_source *src, const char *cs)
{
    const mk_tensor_info *ti, *tw, *ts, *td;
    void *raw = read_tensor(src, cs, ".input", &ti), *want = read_tensor(src, cs, ".weight", &tw);
    void *wscale = read_tensor(src, cs, ".weight_scale", &ts);
    float *deq = read_tensor(src, cs, ".deq", &td);
    float *x = raw ? malloc((size_t)ti->numel * sizeof *x + 1) : NULL;
    uint8_t *packed = calloc((size_t)tw->numel + 1, 1);
    if (!raw || !want || !wscale || !deq || !x || !packed) goto done;
    const mk_dtype dt = ti->dtype;
    const uint64_t rows = (uint64_t)ti->shape[0], cols = (uint64_t)ti->shape[1];
    mk_dtype_info(dt)->to_f32(raw, x, (size_t)ti->numel);
    float s = mk_ternary_scale(mk_ternary_sum_abs(x, (size_t)ti->numel), ti->numel, dt);
    uint8_t sb[4];
    mk_dtype_info(dt)->from_f32(&s, sb, 1);
    float gs = 0;
    mk_dtype_info(ts->dtype)->to_f32(wscale, &gs, 1);
    CHECK_MSG(ts->dtype == dt && memcmp(sb, wscale, mk_dtype_size(dt)) == 0, "%s: weight_scale %.9g, the golden %.9g", cs, (double)s, (double)gs);
    s = gs; /* go on with the golden scale so the bytes are checked independently */
    CHECK_MSG(tw->numel == mk_ternary_byte_rows(rows) * cols, "%s: packed has %llu bytes, want %llu", cs,
              (unsigned long long)tw->numel, (unsigned long long)(mk_ternary_byte_rows(rows) * cols));
    mk_qerr e = {0, 0, 0};
    const uint64_t half = rows / 2;
    mk_ternary_pack_rows(packed, rows, cols, 0, (size_t)half, x, s, dt, &e);
    mk_ternary_pack_rows(packed, rows, cols, half, (size_t)(rows - half), x + half * cols, s, dt, &e);
    long d = first_diff(packed, want, (size_t)tw->numel);
    CHECK_MSG(d < 0, "%s: packed byte %ld (byte row %ld, column %ld) is 0x%02x, transformers' 0x%02x", cs, d, d / (long)cols,
              d % (long)cols, d >= 0 ? packed[d] : 0, d >= 0 ? ((const uint8_t *)want)[d] : 0);
    /* the decoder and the error sums against the golden dequantized values */
    double se2 = 0;
    float maxe = 0;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++) {
            uint64_t k = r * cols + c;
            float v = mk_ternary_value((const uint8_t *)want + (r % mk_ternary_byte_rows(rows)) * cols, rows, r, c, s, dt);
            if (memcmp(&v, &deq[k], 4) != 0) {
                mk_test_fail(__FILE__, __LINE__, "%s: dequantized [%llu, %llu] = %.9g, transformers' %.9g", cs, (unsigned long long)r,
                             (unsigned long long)c, (double)v, (double)deq[k]);
                goto done;
            }
            float err = fabsf(x[k] - v);
            se2 += (double)err * err;
            maxe = err > maxe ? err : maxe;
        }
    CHECK_MSG(e.maxe == maxe, "%s: max abs error %.9g, want %.9g", cs, (double)e.maxe, (double)maxe);
    CHECK_MSG(fabs(e.se2 - se2) <= 1e-12 * se2 || (isinf(se2) && isinf(e.se2)), "%s: squared error %.17g, want %.17g", cs, e.se2, se2);
done:
    free(raw), free(want), free(wscale), free(deq), free(x), free(packed);
}

MK_TEST(ternary_golden)
{
    mk_source *src = mk_test_golden("quant/ternary.safetensors");
    if (!src) return;
    size_t ncases = 0;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const char *nm = src->tensors[i].name;
        size_t len = strlen(nm);
        if (len <= 6 || strcmp(nm + len - 6, ".input") != 0 || len - 6 >= 128) continue;
        char cs[128];
        memcpy(cs, nm, len - 6);
        cs[len - 6] = 0;
        check_case(src, cs);
        ncases++;
    }
    CHECK_MSG(ncases >= 10, "only %zu cases in quant/ternary.safetensors", ncases);
    mk_source_close(src);
}

/* float16 cannot hold 1 / 1e-5: the scale of a (near) zero f16 tensor is its largest value. */
MK_TEST(ternary_scale_edges)
{
    CHECK(mk_ternary_scale(0, 16, MK_F16) == 65504.0f);
    CHECK(mk_ternary_scale(0, 16, MK_F32) == 1.0f / 1e-5f);
    CHECK(mk_ternary_scale(4.0, 4, MK_BF16) == 1.0f);
    CHECK(mk_ternary_scale(0, 0, MK_F32) == 1.0f / 1e-5f);
}

/* ---- the fast kernels against their references -----------------------------------------------
 * mk_ternary_pack_rows and mk_ternary_row_abs against their _ref on random and edge rows: odd
 * column counts, row counts on either side of the groups of 4 and 8, calls starting at odd
 * rows, few rows (byte rows shared inside a group), zeros, ties of x * s at +-0.5 and +-1.5,
 * huge, tiny, subnormal and infinite values, f32, bf16 and f16 dequantized values.
 * Tolerance: none. The bytes (packed starts from the same random bits, so an overwrite shows),
 * the double sums and maxe must be the same bits; a failure names the case and the first
 * difference. */

static uint64_t tn_next(uint64_t *st)
{
    *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
    return *st;
}

static float tn_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One value of kind `mode` for scale s: 0 spread around the code thresholds, 1 zero, 2 edges,
 * 3 any finite bit pattern (subnormals included). */
static float tn_value(uint64_t *st, int mode, float s)
{
    uint64_t r = tn_next(st);
    float u = (float)(r >> 40) / (float)(1u << 24) * 4.0f - 2.0f; /* [-2, 2) */
    switch (mode) {
    case 0: return (r & 63) == 0 ? 0.0f : u / s;
    case 1: return 0.0f;
    case 2: {
        static const float edge[] = {0.5f, -0.5f, 1.5f, -1.5f, 0.0f, -0.0f, 3e38f, -3e38f, 1e-38f, -1e-38f, INFINITY, -INFINITY};
        unsigned k = (unsigned)(r >> 8) % 16;
        if (k < 6) return edge[k] / s;
        if (k < 12) return edge[k];
        if (k < 14) return nextafterf(edge[k - 12] / s, (r >> 32) & 1 ? INFINITY : -INFINITY);
        return tn_bits((uint32_t)(r >> 16) & 0x807fffffu); /* subnormal */
    }
    default: {
        uint32_t b = (uint32_t)(r >> 20);
        return (b & 0x7f800000u) == 0x7f800000u ? u : tn_bits(b);
    }
    }
}

static bool tn_same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void tn_compare(const char *what, const float *x, uint64_t rows, uint64_t cols, uint64_t r0, size_t nrows, float s, mk_dtype dt,
                       uint64_t *st)
{
    const size_t nb = (size_t)(mk_ternary_byte_rows(rows) * cols);
    uint8_t *a = malloc(nb + 1), *b = malloc(nb + 1);
    double *ra = malloc(nrows * sizeof *ra + 1), *rb = malloc(nrows * sizeof *rb + 1);
    if (!a || !b || !ra || !rb) goto done;
    for (size_t k = 0; k < nb; k++) a[k] = b[k] = (uint8_t)tn_next(st);
    mk_qerr ea = {1.25, 3.5, 0.125f}, eb = ea;
    mk_ternary_pack_rows(a, rows, cols, r0, nrows, x, s, dt, &ea);
    mk_ternary_pack_rows_ref(b, rows, cols, r0, nrows, x, s, dt, &eb);
    long d = first_diff(a, b, nb);
    CHECK_MSG(d < 0, "%s: packed byte %ld is 0x%02x, the reference's 0x%02x", what, d, d >= 0 ? a[d] : 0, d >= 0 ? b[d] : 0);
    CHECK_MSG(tn_same_double(ea.sx2, eb.sx2), "%s: sx2 %a, the reference's %a", what, ea.sx2, eb.sx2);
    CHECK_MSG(tn_same_double(ea.se2, eb.se2), "%s: se2 %a, the reference's %a", what, ea.se2, eb.se2);
    CHECK_MSG(memcmp(&ea.maxe, &eb.maxe, 4) == 0, "%s: maxe %a, the reference's %a", what, (double)ea.maxe, (double)eb.maxe);
    mk_ternary_row_abs(x, nrows, (size_t)cols, ra);
    mk_ternary_row_abs_ref(x, nrows, (size_t)cols, rb);
    for (size_t i = 0; i < nrows; i++)
        if (!tn_same_double(ra[i], rb[i])) {
            mk_test_fail(__FILE__, __LINE__, "%s: row %zu |x| sum %a, the reference's %a", what, i, ra[i], rb[i]);
            break;
        }
done:
    free(a), free(b), free(ra), free(rb);
}

MK_TEST(ternary_fast_vs_ref)
{
    static const uint64_t colsv[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1000, 2051};
    static const size_t nrowsv[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 24, 37};
    static const mk_dtype dts[] = {MK_F32, MK_BF16, MK_F16};
    uint64_t st = 0x9e3779b97f4a7c15u;
    size_t ncase = 0;
    float *x = malloc(37 * 2051 * sizeof *x);
    if (!x) return;
    for (size_t ci = 0; ci < sizeof colsv / sizeof *colsv; ci++)
        for (size_t ni = 0; ni < sizeof nrowsv / sizeof *nrowsv; ni++)
            for (int mode = 0; mode < 4; mode++, ncase++) {
                const uint64_t cols = colsv[ci], r0 = ncase % 5, rows = r0 + nrowsv[ni] + (ncase % 3) * 3;
                const size_t nrows = nrowsv[ni], n = (size_t)(nrows * cols);
                const mk_dtype dt = dts[ncase % 3];
                float s = mode == 2 ? 4.0f : mode == 1 ? mk_ternary_scale(0, n, dt) : 1.0f / 0.03f;
                for (size_t k = 0; k < n; k++) x[k] = tn_value(&st, mode, s);
                if (mode == 0 && nrows > 2) memset(x + cols, 0, (size_t)cols * sizeof *x); /* a zero row */
                if (mode == 3) s = mk_ternary_scale(mk_ternary_sum_abs(x, n), n, dt);
                char what[96];
                snprintf(what, sizeof what, "cols %llu, rows %zu from %llu of %llu, mode %d, %s", (unsigned long long)cols, nrows,
                         (unsigned long long)r0, (unsigned long long)rows, mode, mk_dtype_name(dt));
                tn_compare(what, x, rows, cols, r0, nrows, s, dt, &st);
            }
    free(x);
}
