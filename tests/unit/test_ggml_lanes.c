/* test_ggml_lanes.c - the vector (lane) paths of the GGUF encoders against their scalar
 * references, byte for byte (tolerance: none), on awkward blocks: zeros, -0, subnormals,
 * values whose scale underflows or whose inverse scale overflows, huge values, infinities,
 * NaN (the references' NaN policy, whatever it is, is what the lanes must reproduce), ties
 * at half steps, equal magnitudes of both signs, constants and outliers, mixed with normal
 * blocks at several scales. mk_ggml_encode (built for the baseline and for AVX2, picked at
 * start; `make check` also runs this with MK_NO_CLONES, the baseline build alone) against
 * mk_ggml_encode_ref; the weighted encoders (mk_ggml_kquant_encode_w) against
 * mk_ggml_kquant_encode_w_ref, with awkward importances too. A failure names the type, the
 * block and the first differing byte. */
#include "harness.h"

#include "../../model/gguf_names.h"
#include "../../quant/ggml.h"
#include "../../quant/ggml_kquant.h"

#include <float.h>
#include <stdlib.h>

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
static float unit(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0) * 2.0f - 1.0f; }

#define KINDS 16

/* 32 values of kind `kind` (cycled block by block) */
static void awkward32(float *x, int kind, uint64_t *s)
{
    static const float scales[3] = {1e-3f, 1.0f, 1e3f};
    float sc = scales[rng_next(s) % 3];
    for (int j = 0; j < 32; j++) x[j] = unit(s) * sc;
    int at = (int)(rng_next(s) % 32);
    switch (kind) {
    case 0: break;
    case 1: memset(x, 0, 32 * sizeof *x); break;
    case 2: for (int j = 0; j < 32; j++) x[j] = -0.0f; break;
    case 3: for (int j = 0; j < 32; j++) x[j] = (rng_next(s) & 1) ? -0.0f : 0.0f; break;
    case 4: for (int j = 0; j < 32; j++) x[j] = unit(s) * 1e-40f; break;          /* subnormal */
    case 5: for (int j = 0; j < 32; j++) x[j] = unit(s) * 4e-38f; break;          /* 1 / scale overflows */
    case 6: for (int j = 0; j < 32; j++) x[j] = unit(s) * FLT_MAX; break;         /* huge */
    case 7: x[at] = (rng_next(s) & 1) ? INFINITY : -INFINITY; break;
    case 8: x[at] = NAN; break;
    case 9: for (int j = 0; j < 32; j++) x[j] = NAN; break;
    case 10: for (int j = 0; j < 32; j++) x[j] = x[0]; break;                      /* constant */
    case 11: /* the largest magnitude with both signs, and halves between codes */
        for (int j = 0; j < 32; j++) x[j] = (float)((int)(rng_next(s) % 255) - 127) + 0.5f;
        x[at] = -127.0f;
        x[(at + 7) % 32] = 127.0f;
        break;
    case 12: x[at] = 1e30f * sc; break;                                               /* outlier */
    case 13: for (int j = 0; j < 32; j++) x[j] = (rng_next(s) & 1) ? INFINITY : -INFINITY; break;
    case 14: for (int j = 0; j < 32; j++) x[j] = fabsf(x[j]) + 1.0f; break;          /* one-signed */
    default: for (int j = 0; j < 32; j++) x[j] = (float)(j % 4) * 0.25f * sc - 0.375f * sc; break; /* few levels, ties */
    }
}

/* n values, blocks of 32 of each kind in turn, `per` blocks a kind (8: a whole super-block, so
 * that its mean square, which weights every group, is not always infinite or NaN) */
static float *awkward(uint64_t n, uint64_t per, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    uint64_t s = seed;
    for (uint64_t b = 0; x && b < n / 32; b++) awkward32(x + 32 * b, (int)(b / per % KINDS), &s);
    return x;
}

static void first_diff(const char *what, uint32_t type, const uint8_t *got, const uint8_t *want, uint64_t len, unsigned bytes)
{
    uint64_t off = 0;
    while (off < len && got[off] == want[off]) off++;
    if (off == len) return;
    mk_test_fail(__FILE__, __LINE__, "%s %s: block %llu differs first at byte %llu of %u: lanes %02x, scalar %02x (tolerance: none)", what,
                 mk_ggml_type_of(type)->name, (unsigned long long)(off / bytes), (unsigned long long)(off % bytes), bytes, got[off], want[off]);
}

MK_TEST(ggml_encode_lanes_equal_scalar)
{
    static const uint32_t types[] = {MK_GGML_Q8_0, MK_GGML_Q4_0, MK_GGML_Q4_1, MK_GGML_Q5_0, MK_GGML_Q5_1};
    const uint64_t nb = 32 * KINDS + 5;
    float *x = awkward(nb * 32, 1, 0x9e3779b97f4a7c15ull);
    uint8_t *got = malloc(nb * 34), *want = malloc(nb * 34);
    CHECK(x && got && want);
    for (size_t k = 0; x && got && want && k < sizeof types / sizeof *types; k++) {
        const mk_ggml_type *t = mk_ggml_type_of(types[k]);
        memset(got, 0xa5, nb * t->bytes);
        memset(want, 0x5a, nb * t->bytes);
        CHECK(mk_ggml_encode(types[k], x, nb, got));
        CHECK(mk_ggml_encode_ref(types[k], x, nb, want));
        first_diff("unweighted", types[k], got, want, nb * t->bytes, t->bytes);
    }
    free(x);
    free(got);
    free(want);
}

/* importances of several kinds per 32 columns: spread, zero, subnormal, huge, constant */
static float *awkward_qw(uint64_t n, uint64_t seed)
{
    float *w = malloc(n * sizeof *w);
    uint64_t s = seed;
    for (uint64_t b = 0; w && b < n / 32; b++)
        for (int j = 0; j < 32; j++) {
            float u = unit(&s) + 1.0f;
            switch (b % 6) {
            case 0: w[32 * b + j] = u * u * 10.0f; break;
            case 1: w[32 * b + j] = 0; break;
            case 2: w[32 * b + j] = u * 1e-40f; break;
            case 3: w[32 * b + j] = u * 1e30f; break;
            case 4: w[32 * b + j] = 1.0f; break;
            default: w[32 * b + j] = (j % 5 == 0) ? 0 : u; break;
            }
        }
    return w;
}

MK_TEST(ggml_encode_w_lanes_equal_scalar)
{
    static const uint32_t types[] = {MK_GGML_Q4_0, MK_GGML_Q4_1, MK_GGML_Q5_0, MK_GGML_Q5_1, MK_GGML_Q2_K,
                                     MK_GGML_Q3_K, MK_GGML_Q4_K, MK_GGML_Q5_K, MK_GGML_Q6_K, MK_GGML_IQ4_NL};
    /* rows of 5 super-blocks (an odd count: Q4_K / Q5_K fit two at a time) and of 3 x 32 */
    const uint64_t rows = 2 * KINDS, wide = 5 * 256, narrow = 96;
    float *x = awkward(rows * wide, 8, 0x2545f4914f6cdd1dull), *qw = awkward_qw(wide, 7);
    uint8_t *got = malloc(rows * wide), *want = malloc(rows * wide);
    CHECK(x && qw && got && want);
    for (size_t k = 0; x && qw && got && want && k < sizeof types / sizeof *types; k++) {
        const mk_ggml_type *t = mk_ggml_type_of(types[k]);
        for (int pass = 0; pass < 2; pass++) {
            uint64_t cols = pass == 0 || t->block == 256 ? wide : narrow, len = rows * wide / cols * (cols / t->block) * t->bytes;
            memset(got, 0xa5, len);
            memset(want, 0x5a, len);
            CHECK(mk_ggml_kquant_encode_w(types[k], x, rows * wide / cols, cols, qw, got));
            CHECK(mk_ggml_kquant_encode_w_ref(types[k], x, rows * wide / cols, cols, qw, want));
            first_diff("weighted", types[k], got, want, len, t->bytes);
        }
    }
    CHECK(!mk_ggml_kquant_encode_w_ref(MK_GGML_Q8_0, x, 1, 256, qw, got));
    free(x);
    free(qw);
    free(got);
    free(want);
}
