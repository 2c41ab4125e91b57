/* test_dtype.c - dtype conversions: the book's table, edge cases, every dtype's round trip. */
#include "harness.h"

#include "../../core/mk_dtype.h"

/* float32 input -> fp16 result (exact) and bf16 result (6 significant digits), from the
 * table this project follows (issue 2). */
static const struct { float in; double f16; double bf16; } book[] = {
    {0.0123456789f, 0.0123443603515625, 0.0123291},
    {0.123456789f, 0.12347412109375, 0.123535},
    {1.23456789f, 1.234375, 1.23438},
    {12.3456789f, 12.34375, 12.375},
    {123.456789f, 123.4375, 123.5},
    {1234.56789f, 1235.0, 1232.0},
    {12345.6789f, 12344.0, 12352.0},
    {123456.789f, INFINITY, 123392.0},
    {1234567.89f, INFINITY, 1236990.0},
};

MK_TEST(dtype_book_table)
{
    for (size_t i = 0; i < sizeof book / sizeof book[0]; i++) {
        float h = mk_f16_to_f32(mk_f32_to_f16(book[i].in));
        float b = mk_bf16_to_f32(mk_f32_to_bf16(book[i].in));
        CHECK_MSG(h == (float)book[i].f16, "fp16(%.9g) = %.17g, want %.17g", book[i].in, h, book[i].f16);
        /* bf16 shown to 6 significant digits in the table */
        char got[32], want[32];
        snprintf(got, sizeof got, "%.6g", b);
        snprintf(want, sizeof want, "%.6g", book[i].bf16);
        CHECK_MSG(strcmp(got, want) == 0, "bf16(%.9g) = %s, want %s", book[i].in, got, want);
    }
}

MK_TEST(dtype_f16_edges)
{
    CHECK(mk_f32_to_f16(0.0f) == 0x0000);
    CHECK(mk_f32_to_f16(-0.0f) == 0x8000);
    CHECK(mk_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(mk_f32_to_f16(65519.99f) == 0x7bff);  /* below the rounding boundary */
    CHECK(mk_f32_to_f16(65520.0f) == 0x7c00);   /* ties to even -> Inf */
    CHECK(mk_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(mk_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(isnan(mk_f16_to_f32(mk_f32_to_f16(NAN))));
    /* subnormals: smallest 2^-24, ties to even at half of it */
    CHECK(mk_f32_to_f16(0x1p-24f) == 0x0001);
    CHECK(mk_f32_to_f16(0x1p-25f) == 0x0000);          /* exactly half: even (0) */
    CHECK(mk_f32_to_f16(0x1.8p-24f) == 0x0002);        /* 1.5 ulp: to even (2) */
    CHECK(mk_f32_to_f16(0x1p-14f) == 0x0400);          /* smallest normal */
    CHECK(mk_f16_to_f32(0x03ff) == 0x1.ff8p-15f);      /* largest subnormal */
    CHECK(mk_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);   /* tie -> even */
    CHECK(mk_f32_to_f16(1.0f + 0x3p-11f) == 0x3c02);   /* tie -> even (up) */
}

MK_TEST(dtype_bf16_edges)
{
    CHECK(mk_f32_to_bf16(-0.0f) == 0x8000);
    CHECK(mk_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);    /* tie -> even (down) */
    CHECK(mk_f32_to_bf16(1.0f + 0x3p-8f) == 0x3f82);    /* tie -> even (up) */
    CHECK(mk_f32_to_bf16(3.4e38f) == 0x7f80);           /* rounds past max -> Inf */
    CHECK(mk_f32_to_bf16(INFINITY) == 0x7f80);
    uint16_t n = mk_f32_to_bf16(NAN);
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f));        /* still NaN, not Inf */
    CHECK(mk_f32_to_bf16(0x1p-133f) == 0x0001);         /* f32 subnormal -> bf16 subnormal */
}

MK_TEST(dtype_fp8_edges)
{
    CHECK(mk_f32_to_e4m3(448.0f) == 0x7e);
    CHECK(mk_f32_to_e4m3(464.0f) == 0x7e);              /* tie to even: 448 */
    CHECK(mk_f32_to_e4m3(470.0f) == 0x7f);              /* past the boundary: NaN (non-saturating) */
    CHECK(mk_f32_to_e4m3(-1000.0f) == 0xff);
    CHECK(mk_f32_to_e4m3(1.0f) == 0x38);
    CHECK(mk_f32_to_e4m3(0x1p-9f) == 0x01);             /* smallest subnormal */
    CHECK(mk_f32_to_e4m3(0x1p-10f) == 0x00);            /* half of it: ties to even 0 */
    CHECK(mk_f32_to_e4m3(INFINITY) == 0x7f);
    CHECK(mk_e4m3_to_f32(0x7e) == 448.0f);
    CHECK(isnan(mk_e4m3_to_f32(0x7f)));
    CHECK(mk_f32_to_e5m2(57344.0f) == 0x7b);
    CHECK(mk_f32_to_e5m2(61440.0f) == 0x7c);            /* -> Inf */
    CHECK(mk_f32_to_e5m2(1.0f) == 0x3c);
    CHECK(mk_e5m2_to_f32(0x7c) == INFINITY);
    CHECK(mk_e5m2_to_f32(0x01) == 0x1p-16f);
    /* every code decodes and re-encodes to itself (NaNs stay NaN) */
    for (int v = 0; v < 256; v++) {
        float f = mk_e4m3_to_f32((uint8_t)v);
        CHECK_MSG(isnan(f) ? isnan(mk_e4m3_to_f32(mk_f32_to_e4m3(f))) : mk_f32_to_e4m3(f) == v, "e4m3 code %d", v);
        f = mk_e5m2_to_f32((uint8_t)v);
        CHECK_MSG(isnan(f) ? isnan(mk_e5m2_to_f32(mk_f32_to_e5m2(f))) : mk_f32_to_e5m2(f) == v, "e5m2 code %d", v);
    }
}

MK_TEST(dtype_f16_all_codes_round_trip)
{
    for (uint32_t v = 0; v < 65536; v++) {
        float f = mk_f16_to_f32((uint16_t)v);
        uint16_t back = mk_f32_to_f16(f);
        if (isnan(f)) CHECK_MSG(isnan(mk_f16_to_f32(back)), "f16 NaN code %u", v);
        else CHECK_MSG(back == v, "f16 code %u -> %g -> %u", v, f, back);
        float b = mk_bf16_to_f32((uint16_t)v);
        uint16_t bb = mk_f32_to_bf16(b);
        if (isnan(b)) CHECK_MSG(isnan(mk_bf16_to_f32(bb)), "bf16 NaN code %u", v);
        else CHECK_MSG(bb == v, "bf16 code %u -> %g -> %u", v, b, bb);
    }
}

MK_TEST(dtype_table_row_converters)
{
    float src[6] = {0.0f, -1.5f, 2.25f, 100.0f, -3.0f, 0.5f};
    for (int t = 0; t < MK_DTYPE_COUNT; t++) {
        const mk_dtype_traits *d = mk_dtype_info((mk_dtype)t);
        unsigned char buf[6 * 8];
        float back[6];
        d->from_f32(src, buf, 6);
        d->to_f32(buf, back, 6);
        CHECK(mk_dtype_from_name(d->name) == (mk_dtype)t);
        for (int i = 0; i < 6; i++) {
            float want = src[i];
            if (!d->is_float) want = t == MK_BOOL ? (src[i] != 0) : nearbyintf(src[i]);
            if ((t == MK_U8 || t == MK_U16 || t == MK_U32 || t == MK_U64) && want < 0) want = 0;
            if (t == MK_BOOL) want = src[i] != 0.0f;
            if (t == MK_F8_E4M3 || t == MK_F8_E5M2) want = t == MK_F8_E4M3 ? mk_e4m3_to_f32(mk_f32_to_e4m3(src[i]))
                                                                            : mk_e5m2_to_f32(mk_f32_to_e5m2(src[i]));
            CHECK_MSG(back[i] == want, "%s: %g -> %g, want %g", d->name, src[i], back[i], want);
        }
    }
    CHECK(mk_dtype_from_name("bf16") == MK_DTYPE_NONE); /* header names are exact */
    CHECK(mk_dtype_from_user("torch.bfloat16") == MK_BF16);
    CHECK(mk_dtype_from_user("fp16") == MK_F16);
}

MK_TEST(dtype_overflow_detection)
{
    float v[5] = {1.0f, 65504.0f, 65520.0f, -70000.0f, INFINITY};
    size_t first = 99;
    CHECK_EQ_INT(mk_dtype_count_overflow(MK_F16, v, 5, &first), 2); /* Inf input is not an overflow */
    CHECK_EQ_INT(first, 2);
    CHECK_EQ_INT(mk_dtype_count_overflow(MK_BF16, v, 5, &first), 0);
    float e[3] = {448.0f, 464.0f, 465.0f};
    CHECK_EQ_INT(mk_dtype_count_overflow(MK_F8_E4M3, e, 3, &first), 1);
    CHECK_EQ_INT(first, 2);
    /* agreement with the encoder, over a sweep of values around each boundary */
    const mk_dtype ts[] = {MK_F16, MK_F8_E4M3, MK_F8_E5M2};
    const double lim[] = {65504, 448, 57344};
    for (int k = 0; k < 3; k++) {
        for (double x = lim[k] * 0.99; x < lim[k] * 1.2; x += lim[k] / 4096) {
            float f = (float)x, out;
            unsigned char b[4];
            mk_dtype_info(ts[k])->from_f32(&f, b, 1);
            mk_dtype_info(ts[k])->to_f32(b, &out, 1);
            bool overflows = mk_dtype_count_overflow(ts[k], &f, 1, NULL) == 1;
            CHECK_MSG(overflows == !isfinite(out), "%s at %.9g: detector %d, encoder gives %g", mk_dtype_name(ts[k]), x,
                      overflows, out);
        }
    }
}

/* mk_dtype_from_f32_checked writes from_f32's bytes and returns mk_dtype_count_overflow's
 * count and first index, for every float dtype: random bit patterns (NaN and Inf among them)
 * mixed with values at and around each overflow boundary, at every length up to 70 (the
 * vector loops' tails) and with one overflow placed at each position. Exact: any byte or
 * count that differs fails, named by dtype, length and place. */
MK_TEST(dtype_from_f32_checked_matches_two_passes)
{
    enum { N = 70 };
    const mk_dtype ts[] = {MK_BF16, MK_F16, MK_F8_E4M3, MK_F8_E5M2, MK_F32, MK_F64, MK_I8};
    /* near the boundaries: bf16 2^128 - 2^119, f16 65520, e4m3 464, e5m2 61440 */
    const uint32_t edge[] = {0x7f7f7fffu, 0x7f7f8000u, 0x7f7f8001u, 0x7f7fffffu, 0x477fefffu, 0x477ff000u,
                             0x477ff001u, 0x43e80000u, 0x43e80001u, 0x476fffffu, 0x47700000u, 0x7f800000u,
                             0x7fc00001u, 0xff800000u, 0x00000001u, 0x80000000u};
    const size_t ne = sizeof edge / sizeof edge[0];
    float v[N];
    unsigned char got[8 * N], want[8 * N];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int fails = 0;
    for (int round = 0; round < 400 && fails < 5; round++) {
        for (size_t i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t u = (uint32_t)(x >> 32);
            if (round % 4 == 0) u = edge[(x >> 8) % ne] ^ (uint32_t)(x & 1) << 31; /* all edges, either sign */
            else if (round % 4 == 1) u = (u & 0x8000ffffu) | 0x47000000u;          /* |x| in [32768, 65536) */
            else if (round % 4 == 2) u &= 0xbfffffffu;                              /* |x| < 2, no overflow */
            memcpy(&v[i], &u, 4);
        }
        if (round % 4 == 2) v[round % N] = -1e30f; /* one overflow (not for the 8-bit and 16-bit formats alone) */
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            size_t n = (size_t)round % (N + 1), es = mk_dtype_size(ts[k]);
            size_t f1 = 12345, f2 = 12345;
            memset(got, 0x5a, sizeof got);
            memset(want, 0x5a, sizeof want);
            size_t c1 = mk_dtype_from_f32_checked(ts[k], v, got, n, &f1);
            size_t c2 = mk_dtype_count_overflow(ts[k], v, n, &f2);
            mk_dtype_info(ts[k])->from_f32(v, want, n);
            size_t at = 0;
            while (at < n * es && got[at] == want[at]) at++;
            if (c1 != c2 || (c2 && f1 != f2) || memcmp(got, want, sizeof got) != 0) {
                fails++;
                mk_test_fail(__FILE__, __LINE__, "%s round %d n %zu: count %zu first %zu, want %zu first %zu; byte %zu "
                             "is %02x, want %02x", mk_dtype_name(ts[k]), round, n, c1, f1, c2, f2, at,
                             at < sizeof got ? got[at] : 0, at < sizeof got ? want[at] : 0);
            }
        }
    }
    /* one overflow at each place of each length, among values that fit */
    const mk_dtype one[] = {MK_BF16, MK_F16, MK_F8_E4M3, MK_F8_E5M2};
    const float big[] = {-3.3962e38f, 65520.0f, 465.0f, -61440.0f};
    for (size_t k = 0; k < 4; k++)
        for (size_t n = 1; n <= N && fails < 5; n++)
            for (size_t at = 0; at < n; at++) {
                for (size_t i = 0; i < n; i++) v[i] = (float)i * 0.37f - 3.0f;
                v[at] = big[k];
                size_t first = 12345, c = mk_dtype_from_f32_checked(one[k], v, got, n, &first);
                if (c != 1 || first != at) {
                    fails++;
                    mk_test_fail(__FILE__, __LINE__, "%s n %zu overflow at %zu: count %zu first %zu, want 1 first %zu",
                                 mk_dtype_name(one[k]), n, at, c, first, at);
                }
            }
}

/* mk_dtype_to_f32_inplace (a read into the destination's tail, widened there) gives to_f32's
 * bits from a separate buffer, for every dtype of 4 bytes or fewer and every length up to
 * 600 (the 16-value steps, the 256-value blocks and their tails). Exact: compared as bits
 * (NaN included); the first differing element is named. */
MK_TEST(dtype_to_f32_inplace_matches_to_f32)
{
    enum { N = 600 };
    static float dst[N], want[N];
    static unsigned char raw[4 * N];
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < sizeof raw; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        raw[i] = (unsigned char)(x >> 24);
    }
    int fails = 0;
    for (int t = 0; t < MK_DTYPE_COUNT && fails < 5; t++) {
        unsigned es = mk_dtype_size((mk_dtype)t);
        if (es > 4) continue;
        for (size_t n = 0; n <= N && fails < 5; n += n < 40 ? 1 : 37) {
            mk_dtype_info((mk_dtype)t)->to_f32(raw, want, n);
            memset(dst, 0x77, sizeof dst);
            memcpy((unsigned char *)dst + (4 - es) * n, raw, es * n);
            mk_dtype_to_f32_inplace((mk_dtype)t, dst, n);
            if (memcmp(dst, want, 4 * n) != 0) {
                size_t i = 0;
                while (memcmp(dst + i, want + i, 4) == 0) i++;
                fails++;
                mk_test_fail(__FILE__, __LINE__, "%s n %zu: element %zu is %g, want %g", mk_dtype_name((mk_dtype)t), n, i,
                             (double)dst[i], (double)want[i]);
            }
        }
    }
}
