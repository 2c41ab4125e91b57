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
