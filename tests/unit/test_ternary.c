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
