/* test_slerp_bytes.c - the sphere methods (slerp, nuslerp, multislerp, karcher) give the
 * same bytes as the straightforward kernels they replaced. The expected values are 64-bit
 * FNV-1a hashes of each output's bits, recorded from those kernels (commit 1b3d8fc, before
 * the blocked and kept-data versions) on deterministic inputs: odd shapes (blocks and
 * chunks with tails), several chunk sizes, K = 2..4 models with and without a base,
 * float32 and bfloat16 compute, pass caches that keep everything, part of it or nothing,
 * and inputs with zeros, -0, denormals, tiny and huge values (and one set with NaN/Inf).
 * Tolerance: none, every bit (NaNs: that they are NaN, see fnv). MK_SLERP_PRINT=1 prints the table (to record it again when
 * the reference changes on purpose).
 */
#include "harness.h"
#include "methods_run.h"

#include "../../core/mk_rng.h"

#include <stdlib.h>

/* Input k of a case: base-like values plus a per-model delta, with special values at fixed
 * places. kind 0: ordinary; 1: zeros, -0, denormals, tiny and huge; 2: as 1 plus NaN/Inf. */
static void fill(float *x, uint64_t n, size_t k, int kind, float delta)
{
    mk_rng key = mk_rng_key(77, "slerp-bytes");
    for (uint64_t i = 0; i < n; i++) {
        float b = mk_rng_uniform(key, 0, i) - 0.5f;
        float d = mk_rng_uniform(key, 1 + k, i) - 0.5f;
        x[i] = k == 0 ? b : b + delta * d;
        if (kind == 0) continue;
        switch ((i * 7 + k * 3) % 61) {
        case 0: x[i] = 0.0f; break;
        case 5: x[i] = -0.0f; break;
        case 9: x[i] = 1e-39f * (float)(k + 1); break; /* denormal */
        case 17: x[i] = -3e-30f; break;
        case 23: x[i] = 3e4f * (k ? -1.0f : 1.0f); break;
        case 31: if (kind == 2 && i % 5 == 0) x[i] = k == 1 ? NAN : INFINITY; break;
        default: break;
        }
    }
}

/* FNV-1a over the bits, every NaN taken as 0x7fc00000: which NaN an operation returns
 * (sign, payload) follows the operand order the compiler picks, and that differs between
 * the SSE2 (MK_NO_CLONES) and AVX2 builds of these kernels, the old ones too. */
static uint64_t fnv(const float *x, uint64_t n, uint64_t h)
{
    for (uint64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) u = 0x7fc00000u;
        for (int b = 0; b < 4; b++) h = (h ^ ((u >> (8 * b)) & 0xffu)) * 0x100000001b3ull;
    }
    return h;
}

typedef struct sb_case {
    const char *method;
    uint64_t rows, cols, chunk_rows;
    size_t n_in;
    int base, kind;
    float delta;
} sb_case;

static const sb_case sb_cases[] = {
    {"multislerp", 37, 53, 7, 3, 0, 0, 0.3f},   {"multislerp", 37, 53, 7, 3, -1, 0, 0.3f},
    {"multislerp", 300, 67, 40, 4, 1, 0, 0.2f}, {"multislerp", 300, 67, 40, 2, -1, 1, 0.2f},
    {"multislerp", 1, 2500, 1, 5, 0, 1, 0.5f},  {"multislerp", 300, 67, 23, 4, -1, 0, 0.05f},
    {"karcher", 37, 53, 7, 3, -1, 0, 0.3f},     {"karcher", 300, 67, 40, 4, -1, 0, 0.4f},
    {"karcher", 300, 67, 40, 2, -1, 1, 0.2f},   {"karcher", 1, 2500, 1, 3, -1, 1, 0.5f},
    {"karcher", 129, 33, 16, 5, -1, 0, 0.9f},   {"nuslerp", 37, 53, 7, 3, 0, 0, 0.3f},
    {"nuslerp", 300, 67, 40, 2, -1, 1, 0.2f},   {"nuslerp", 1, 2500, 1, 3, 0, 1, 0.5f},
    {"slerp", 300, 67, 40, 2, 0, 1, 0.2f},      {"multislerp", 37, 53, 7, 3, 0, 2, 0.3f},
    {"karcher", 37, 53, 7, 3, -1, 2, 0.3f},
};
#define SB_NCASES (sizeof sb_cases / sizeof sb_cases[0])
/* per case: [dtype f32, bf16][keep: default 16 MiB, 24 KiB (some chunks), none] */
#define SB_VARIANTS 6

static const uint64_t sb_want[SB_NCASES][SB_VARIANTS] = {
    {0x593a631fa915850eull, 0x593a631fa915850eull, 0x593a631fa915850eull, 0xd7761c79fafa5c20ull, 0xd7761c79fafa5c20ull, 0xd7761c79fafa5c20ull},
    {0x6896c9a7f16f89e5ull, 0x6896c9a7f16f89e5ull, 0x6896c9a7f16f89e5ull, 0x424e50683b972ad4ull, 0x424e50683b972ad4ull, 0x424e50683b972ad4ull},
    {0xbd0f77afb80bf7c5ull, 0xbd0f77afb80bf7c5ull, 0xbd0f77afb80bf7c5ull, 0xf0d0c69b092c54bfull, 0xf0d0c69b092c54bfull, 0xf0d0c69b092c54bfull},
    {0x759a862ac8b31c4eull, 0x759a862ac8b31c4eull, 0x759a862ac8b31c4eull, 0x521064dec6a264deull, 0x521064dec6a264deull, 0x521064dec6a264deull},
    {0xff96c9622c9b23bfull, 0xff96c9622c9b23bfull, 0xff96c9622c9b23bfull, 0x2352d2f2dcaf852bull, 0x2352d2f2dcaf852bull, 0x2352d2f2dcaf852bull},
    {0x0e457e7ad8e791ddull, 0x0e457e7ad8e791ddull, 0x0e457e7ad8e791ddull, 0x75f1e54e645b6ed4ull, 0x75f1e54e645b6ed4ull, 0x75f1e54e645b6ed4ull},
    {0xc42a220a6adbbffbull, 0xc42a220a6adbbffbull, 0xc42a220a6adbbffbull, 0x6b1440576d0a8d80ull, 0x6b1440576d0a8d80ull, 0x6b1440576d0a8d80ull},
    {0xf1b443bfe7cf92e7ull, 0xf1b443bfe7cf92e7ull, 0xf1b443bfe7cf92e7ull, 0x98802b5a53eae185ull, 0x98802b5a53eae185ull, 0x98802b5a53eae185ull},
    {0xe1da57b3028455ecull, 0xe1da57b3028455ecull, 0xe1da57b3028455ecull, 0x96541137a7fc5c24ull, 0x96541137a7fc5c24ull, 0x96541137a7fc5c24ull},
    {0x77feea4ede7e9b78ull, 0x77feea4ede7e9b78ull, 0x77feea4ede7e9b78ull, 0x7eacd4b14ce079b8ull, 0x7eacd4b14ce079b8ull, 0x7eacd4b14ce079b8ull},
    {0x01e34f760e5a70baull, 0x01e34f760e5a70baull, 0x01e34f760e5a70baull, 0x631b30a049df8242ull, 0x631b30a049df8242ull, 0x631b30a049df8242ull},
    {0xc77fd5cb003fecc3ull, 0xc77fd5cb003fecc3ull, 0xc77fd5cb003fecc3ull, 0xa8902895b1a509f8ull, 0xa8902895b1a509f8ull, 0xa8902895b1a509f8ull},
    {0x2585178e61d59cbbull, 0x2585178e61d59cbbull, 0x2585178e61d59cbbull, 0xcb76be1142f3a252ull, 0xcb76be1142f3a252ull, 0xcb76be1142f3a252ull},
    {0xc78f6cc4faa3c7a0ull, 0xc78f6cc4faa3c7a0ull, 0xc78f6cc4faa3c7a0ull, 0x6d39b0cbbb307295ull, 0x6d39b0cbbb307295ull, 0x6d39b0cbbb307295ull},
    {0xd36985ad3319149bull, 0xd36985ad3319149bull, 0xd36985ad3319149bull, 0x4bb483b006fd96fbull, 0x4bb483b006fd96fbull, 0x4bb483b006fd96fbull},
    {0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull},
    {0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull, 0x83aee184dd14f7d8ull},
};

static uint64_t sb_run(const sb_case *c, int variant, float **in)
{
    static const uint64_t keeps[3] = {0, 24576, UINT64_MAX};
    const uint64_t n = c->rows * c->cols;
    mt_run r = {.method = c->method, .name = "model.layers.0.mlp.up_proj.weight", .rows = c->rows, .cols = c->cols,
                .n_in = c->n_in, .base = c->base, .in = (const float *const *)in, .chunk_rows = c->chunk_rows,
                .dtype = variant / 3 ? MK_BF16 : MK_F32, .keep_bytes = keeps[variant % 3]};
    if (strcmp(c->method, "slerp") == 0) {
        r.g_names[0] = "t";
        r.g_vals[0] = 0.3;
    } else if (strcmp(c->method, "karcher") != 0) {
        r.m_names[0] = "weight";
        for (size_t k = 0; k < c->n_in; k++) r.m_vals[0][k] = 0.2 + 0.3 * (double)k;
    }
    float *out = malloc((size_t)n * sizeof *out);
    for (uint64_t i = 0; i < n; i++) out[i] = -1.0f;
    mk_status s = mt_run_method(&r, out);
    uint64_t h = fnv(out, n, 0xcbf29ce484222325ull ^ (uint64_t)s);
    free(out);
    return h;
}

MK_TEST(sphere_methods_same_bytes_as_reference)
{
    const bool print = getenv("MK_SLERP_PRINT") != NULL;
    for (size_t ci = 0; ci < SB_NCASES; ci++) {
        const sb_case *c = &sb_cases[ci];
        const uint64_t n = c->rows * c->cols;
        float *in[8];
        for (size_t k = 0; k < c->n_in; k++) {
            in[k] = malloc((size_t)n * sizeof *in[k]);
            fill(in[k], n, k, c->kind, c->delta);
        }
        if (print) printf("    {");
        for (int v = 0; v < SB_VARIANTS; v++) {
            uint64_t h = sb_run(c, v, in);
            if (print) printf("0x%016llxull%s", (unsigned long long)h, v + 1 < SB_VARIANTS ? ", " : "},\n");
            else
                CHECK_MSG(h == sb_want[ci][v], "case %zu (%s %llux%llu, %zu inputs, base %d, kind %d) variant %d: hash %016llx, want %016llx",
                          ci, c->method, (unsigned long long)c->rows, (unsigned long long)c->cols, c->n_in, c->base,
                          c->kind, v, (unsigned long long)h, (unsigned long long)sb_want[ci][v]);
        }
        for (size_t k = 0; k < c->n_in; k++) free(in[k]);
    }
}

/* karcher reads no input to emit the chunks whose mean it kept, and makes no pass to sum a
 * tangent that every input skips (inputs this close give dots of 1 in bf16: no iteration) */
MK_TEST(karcher_emits_kept_means_without_inputs)
{
    const uint64_t rows = 64, cols = 48, n = rows * cols;
    float *in[3];
    for (size_t k = 0; k < 3; k++) {
        in[k] = malloc((size_t)n * sizeof *in[k]);
        fill(in[k], n, 0, 0, 0.0f);
        for (uint64_t i = 0; i < n; i += 97) in[k][i] *= 1.0f + 0.001f * (float)k;
    }
    const uint64_t keeps[3] = {0, 4096, UINT64_MAX}, want_no_input[3] = {8, 5, 0}; /* 4096 bytes: 5 chunks of 384 bf16 means */
    uint64_t h0 = 0;
    for (int v = 0; v < 3; v++) {
        mt_counts cnt = {0};
        mt_run r = {.method = "karcher", .name = "t", .rows = rows, .cols = cols, .n_in = 3, .base = -1,
                    .in = (const float *const *)in, .chunk_rows = 8, .dtype = MK_BF16, .keep_bytes = keeps[v], .counts = &cnt};
        float *out = malloc((size_t)n * sizeof *out);
        CHECK(mt_run_method(&r, out) == MK_OK);
        /* norms, the initial mean's norm, the dots, the output */
        CHECK_MSG(cnt.passes == 4, "keep %d: %u passes, want 4", v, cnt.passes);
        CHECK_MSG(cnt.chunks_no_input == want_no_input[v], "keep %d: %llu chunks emitted without input, want %llu", v,
                  (unsigned long long)cnt.chunks_no_input, (unsigned long long)want_no_input[v]);
        uint64_t h = fnv(out, n, 0xcbf29ce484222325ull);
        if (v == 0) h0 = h;
        CHECK_MSG(h == h0, "keep %d: other bytes than with every mean kept", v);
        free(out);
    }
    for (size_t k = 0; k < 3; k++) free(in[k]);
}
