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
