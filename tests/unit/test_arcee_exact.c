/* test_arcee_exact.c - arcee_fusion's replacements for libm calls and in-order loops
 * (arcee_fusion.h) against what they replace, bit for bit: expf over the negative floats
 * stepped widely and at the edges, the bf16 logf table, the vectorised row maximum and the
 * lane sum that must equal the in-order sum. */
#include "harness.h"

#include "../../core/mk_rng.h"
#include "../../merge/methods/arcee_fusion.h"

#include <stdlib.h>

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t u_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* exp of n arguments x - sub against libm; returns the mismatches, reports the first */
static uint64_t check_exp(const float *x, float sub, uint64_t n, float *out)
{
    mk_fusion_exp_shifted(x, sub, n, out);
    uint64_t bad = 0;
    /* volatile: the subtraction at run time, as the kernel makes it (clang would fold
     * x - NaN to its own NaN, not the first operand's as the hardware gives it) */
    volatile float vsub = sub;
    for (uint64_t i = 0; i < n; i++) {
        const float want = expf(x[i] - vsub);
        if (u_of(out[i]) != u_of(want) && !bad++)
            mk_test_fail(__FILE__, __LINE__, "expf(%a - %a): got %a want %a", x[i], sub, out[i], want);
    }
    return bad;
}

MK_TEST(arcee_exp_matches_libm)
{
    enum { B = 4096 };
    float *x = malloc(B * sizeof *x), *out = malloc(B * sizeof *out);
    /* every 61st float from -0 to -88 (about 18 million), where the fast path answers */
    uint64_t bad = 0, tested = 0;
    for (uint32_t u = 0x80000000u; u <= 0xc2b00000u && bad == 0;) {
        uint64_t m = 0;
        for (; m < B && u <= 0xc2b00000u; m++, u += 61) x[m] = f_of(u);
        bad += check_exp(x, 0.0f, m, out);
        tested += m;
    }
    CHECK_MSG(tested > 17000000, "tested %llu", (unsigned long long)tested);
    /* every float in a stretch of arguments near 0, -1 and the edge at -87 */
    const float from[] = {-1e-6f, -1.0f, -87.0f, -0.35f};
    for (int k = 0; k < 4; k++) {
        uint32_t u = u_of(from[k]);
        for (int blk = 0; blk < 64; blk++) {
            for (uint64_t m = 0; m < B; m++) x[m] = f_of(u++);
            bad += check_exp(x, 0.0f, B, out);
        }
    }
    /* special arguments, with and without something to subtract, lengths 0 .. 100 */
    const float sp[] = {0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, -87.0f, -87.00001f, -88.0f, -103.9f, -104.0f,
                        -200.0f, 0x1p-149f, -0x1p-149f, -0x1p-126f, 0.5f, 1.0f, 88.0f, 89.0f, 1e-30f, -1e-30f};
    const int nsp = (int)(sizeof sp / sizeof sp[0]);
    mk_rng key = mk_rng_key(5, "arcee-exp");
    for (uint64_t n = 0; n <= 100; n++) {
        for (uint64_t i = 0; i < n; i++) {
            const uint32_t r = mk_rng_u32(key, n, i);
            x[i] = r % 5 == 0 ? sp[r / 5 % (uint32_t)nsp] : (mk_rng_uniform(key, 1000 + n, i) - 0.5f) * 40.0f;
        }
        bad += check_exp(x, 0.0f, n, out);
        bad += check_exp(x, 20.0f, n, out);
        bad += check_exp(x, -3.5f, n, out);
        bad += check_exp(x, NAN, n, out);
    }
    CHECK_MSG(bad == 0, "%llu results differ from libm's expf", (unsigned long long)bad);
    free(x);
    free(out);
}

MK_TEST(arcee_log_bf16_table_matches_libm)
{
    const float *t = mk_fusion_log_bf16();
    uint64_t bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float want = logf(f_of(h << 16));
        if (u_of(t[h]) != u_of(want) && !bad++)
            mk_test_fail(__FILE__, __LINE__, "logf(bf16 %04x): got %a want %a", h, t[h], want);
    }
}

static float max_in_order(const float *x, uint64_t n)
{
    float mx = -INFINITY;
    for (uint64_t j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    return mx;
}

static double sum_in_order(const float *t, uint64_t n)
{
    double s = 0;
    for (uint64_t j = 0; j < n; j++) s += (double)t[j];
    return s;
}

/* A value of kind k: narrow (one scale), wide (20 decades), signs, specials. */
static float draw(mk_rng key, int kind, uint64_t n, uint64_t i)
{
    const float u = mk_rng_uniform(key, 2 * n, i) - 0.5f;
    const uint32_t r = mk_rng_u32(key, 2 * n + 1, i);
    switch (kind) {
    case 0: return u * 1e-3f;
    case 1: return fabsf(u) * 1e-3f;
    case 2: return u * powf(10.0f, (float)(r % 40) - 20.0f);
    case 3: return r % 7 == 0 ? 0.0f : r % 7 == 1 ? -0.0f : u;
    case 4: return r % 11 == 0 ? NAN : u;
    case 5: return r % 13 == 0 ? (r & 64 ? INFINITY : -INFINITY) : u;
    case 6: return f_of(r & 0x807fffffu); /* subnormals and zeros */
    case 7: return r % 3 == 0 ? 1.0f : r % 3 == 1 ? -1.0f : 0x1p-60f; /* cancels: the lanes would round */
    case 8: return r % 5 == 0 ? -u * 1e-3f : (float)(r % 2) * 2.0f - 1.0f;
    /* bf16 terms of one scale, as arcee_fusion's KL terms: the lanes answer */
    case 9: return f_of(u_of(u * 1e-3f) & 0xffff0000u);
    case 10: return f_of(u_of(fabsf(u) + 0.25f) & 0xffff0000u) * (r & 1 ? 1.0f : -1.0f);
    case 11: return f_of(u_of((u + 1.0f) * 0x1p-11f) & 0xffffff00u); /* 16 significant bits */
    /* sums just past 2^53 of the smallest ulp: in order they round */
    default: return r % 2 ? (r & 2 ? 1.0f : -1.0f) : (u + 1.0f) * 0x1p-30f;
    }
}

MK_TEST(arcee_row_max_and_sum_match_in_order_loops)
{
    enum { N = 1500 };
    float *x = malloc(N * sizeof *x);
    mk_rng key = mk_rng_key(6, "arcee-sum");
    const uint64_t lens[] = {1000, 1024, 1499, N};
    uint64_t bad_max = 0, bad_sum = 0;
    for (int kind = 0; kind < 13; kind++)
        for (uint64_t li = 0; li < 101 + 4; li++) {
            const uint64_t n = li <= 100 ? li : lens[li - 101];
            for (uint64_t i = 0; i < n; i++) x[i] = draw(key, kind, n + 7 * (uint64_t)kind, i);
            const float gm = mk_fusion_row_max(x, n), wm = max_in_order(x, n);
            if (u_of(gm) != u_of(wm) && !bad_max++)
                mk_test_fail(__FILE__, __LINE__, "max kind %d n %llu: got %a want %a", kind, (unsigned long long)n, gm, wm);
            const double gs = mk_fusion_sum_in_order(x, n), ws = sum_in_order(x, n);
            if (memcmp(&gs, &ws, 8) != 0 && !bad_sum++)
                mk_test_fail(__FILE__, __LINE__, "sum kind %d n %llu: got %a want %a", kind, (unsigned long long)n, gs, ws);
        }
    /* zero maxima: which zero comes first decides the sign */
    const float z[] = {-0.0f, -1.0f, 0.0f, -2.0f, -3.0f, -4.0f, -5.0f, -6.0f, 0.0f, -0.0f};
    for (uint64_t n = 1; n <= 10; n++) CHECK(u_of(mk_fusion_row_max(z, n)) == u_of(max_in_order(z, n)));
    for (uint64_t n = 1; n <= 10; n++) CHECK(u_of(mk_fusion_row_max(z + 1, n - 1 ? n - 1 : 1)) == u_of(max_in_order(z + 1, n - 1 ? n - 1 : 1)));
    /* +0 in lane 0 after -0 in lane 1: the in-order scan keeps the -0 */
    float z2[16];
    for (int i = 0; i < 16; i++) z2[i] = i == 1 ? -0.0f : i == 8 ? 0.0f : -1.0f;
    CHECK(u_of(mk_fusion_row_max(z2, 16)) == u_of(max_in_order(z2, 16)));
    free(x);
}

/* ---- the whole method against the formula computed plainly ---------------------------- */

#include "../../merge/methods/kernel.h"
#include "methods_run.h"

static void ref_softmax(mk_dtype dt, const float *x, uint64_t n, float *out)
{
    float mx = -INFINITY, s = 0;
    for (uint64_t j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    for (uint64_t j = 0; j < n; j++) {
        out[j] = expf(x[j] - mx);
        s += out[j];
    }
    const float inv = 1.0f / s, eps = mk_dtype_round(dt, 1e-8f);
    for (uint64_t j = 0; j < n; j++) out[j] = mk_dtype_round(dt, mk_dtype_round(dt, out[j] * inv) + eps);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* arcee_fusion of x over base b ([rows, cols]) as its comment says, one step at a time */
static void ref_fusion(mk_dtype dt, const float *x, const float *b, uint64_t rows, uint64_t cols, float *out)
{
#define R(v) mk_dtype_round(dt, (v))
    const uint64_t n = rows * cols;
    float *p = malloc(cols * 4), *q = malloc(cols * 4), *imp = malloc(n * 4);
    uint32_t *k = malloc(n * 4);
    for (uint64_t r = 0; r < rows; r++) {
        ref_softmax(dt, x + r * cols, cols, p);
        ref_softmax(dt, b + r * cols, cols, q);
        double kl = 0;
        for (uint64_t j = 0; j < cols; j++) kl += (double)R(p[j] * R(logf(R(p[j] / q[j]))));
        const float klr = R((float)kl);
        for (uint64_t j = 0; j < cols; j++) imp[r * cols + j] = R(fabsf(R(x[r * cols + j] - b[r * cols + j])) * klr);
    }
    for (uint64_t i = 0; i < n; i++) k[i] = mk_key_f32(imp[i] + 0.0f);
    qsort(k, n, 4, cmp_u32);
    const float q1 = mk_key_f32_value(k[(uint64_t)(0.25f * (float)(n - 1))]);
    const float med = mk_key_f32_value(k[(uint64_t)(0.5f * (float)(n - 1))]);
    const float q3 = mk_key_f32_value(k[(uint64_t)(0.75f * (float)(n - 1))]);
    const float thr = R(med + R(1.5f * R(q3 - q1)));
    for (uint64_t i = 0; i < n; i++) out[i] = imp[i] >= thr ? b[i] + R(x[i] - b[i]) : b[i];
#undef R
    free(p);
    free(q);
    free(imp);
    free(k);
}

MK_TEST(arcee_fusion_matches_plain_formula)
{
    const uint64_t shapes[][2] = {{37, 53}, {20, 301}, {1, 1000}, {64, 7}, {3, 1}};
    const uint32_t odd[] = {0x7fc00000u, 0xffc10000u, 0x7f810000u, 0x7f800000u, 0xff800000u, 0x80000000u};
    mk_rng key = mk_rng_key(9, "arcee-fusion");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int dti = 0; dti < 3; dti++)
            for (int nonfinite = 0; nonfinite < 2; nonfinite++)
                for (int cache = 0; cache < 2; cache++) {
                    /* f16: the reference's own NaN payloads go through the f16 conversions
                     * differently (as before this file was vectorised): finite inputs only */
                    if (dti == 2 && nonfinite) continue;
                    const uint64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
                    const mk_dtype dt = dti == 0 ? MK_F32 : dti == 1 ? MK_BF16 : MK_F16;
                    float *b = malloc(n * 4), *x = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
                    for (uint64_t i = 0; i < n; i++) {
                        b[i] = mk_dtype_round(dt, (mk_rng_uniform(key, 10 * si + 1, i) - 0.5f) * 0.2f);
                        x[i] = mk_dtype_round(dt, b[i] + (mk_rng_uniform(key, 10 * si + 2, i) - 0.5f) * 0.05f);
                        const uint32_t r = mk_rng_u32(key, 10 * si + 3, i);
                        if (nonfinite && r % 29 == 0) memcpy(r & 64 ? &x[i] : &b[i], &odd[r / 29 % 6], 4);
                    }
                    const float *in[2] = {b, x};
                    mt_run run = {.method = "arcee_fusion", .name = "t", .rows = rows, .cols = cols, .n_in = 2,
                                  .base = 0, .in = in, .dtype = dt, .keep_bytes = cache ? 0 : UINT64_MAX};
                    CHECK_OK(mt_run_method(&run, got));
                    ref_fusion(dt, x, b, rows, cols, want);
                    uint64_t bad = 0, first = 0;
                    for (uint64_t i = 0; i < n; i++)
                        if (u_of(got[i]) != u_of(want[i]) && !bad++) first = i;
                    CHECK_MSG(bad == 0, "[%llu, %llu] dtype %d nonfinite %d cache %d: %llu differ, first [%llu] got %a want %a",
                              (unsigned long long)rows, (unsigned long long)cols, dti, nonfinite, cache,
                              (unsigned long long)bad, (unsigned long long)first, got[first], want[first]);
                    free(b);
                    free(x);
                    free(got);
                    free(want);
                }
}
