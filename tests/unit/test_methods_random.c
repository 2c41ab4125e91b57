/* test_methods_random.c - DARE and DELLA cannot match mergekit's torch masks bit for bit,
 * so their rules are tested statistically, each bound stated next to it:
 *   keep rate = density (binomial: 6 standard deviations),
 *   rescale keeps the L1 norm of every delta (float32 sums: relative 1e-5),
 *   DELLA keeps small magnitudes with probability density - epsilon and large ones with
 *   density + epsilon (per decile of rank, 6 standard deviations),
 *   sign election keeps only deltas that agree with the sign of the weighted sum,
 *   and masks depend only on (seed, tensor name, model, element).
 */
#include "harness.h"
#include "methods_run.h"

#include "../../core/mk_rng.h"
#include "../../merge/methods/kernel.h"

#include <stdlib.h>

#define ROWS 500
#define COLS 400
#define N ((uint64_t)ROWS * COLS)

/* base = 0; model k's delta is a random field with no zeros. */
static float *field(uint64_t stream, float scale)
{
    float *x = malloc(N * sizeof *x);
    mk_rng key = mk_rng_key(21, "field");
    for (uint64_t i = 0; i < N; i++) {
        float u = mk_rng_uniform(key, stream, i) - 0.5f;
        x[i] = scale * (u + (u < 0 ? -0.01f : 0.01f));
    }
    return x;
}

static double l1(const float *x)
{
    double s = 0;
    for (uint64_t i = 0; i < N; i++) s += fabs((double)x[i]);
    return s;
}

MK_TEST(dare_keep_rate_and_l1_rescale)
{
    float *zero = calloc(N, sizeof *zero), *x = field(1, 0.02f), *out = malloc(N * sizeof *out);
    const float *in[2] = {zero, x};
    double dens[] = {0.1, 0.3, 0.9};
    for (int d = 0; d < 3; d++) {
        for (int rescale = 0; rescale < 2; rescale++) {
            mt_run r = {.method = "dare_linear", .name = "model.layers.3.mlp.down_proj.weight", .rows = ROWS, .cols = COLS,
                        .n_in = 2, .base = 0, .in = in, .seed = 1, .m_names = {"weight", "density"},
                        .m_vals = {{0, 1}, {0, dens[d]}}, .g_names = {"rescale"}, .g_vals = {rescale}};
            CHECK_OK(mt_run_method(&r, out));
            uint64_t kept = 0, changed = 0;
            double ratio = 0;
            for (uint64_t i = 0; i < N; i++) {
                if (out[i] == 0) continue;
                kept++;
                if (!rescale && out[i] != x[i]) changed++;
                ratio = out[i] / x[i];
            }
            /* KEEP_RATE: binomial(N, p), 6 standard deviations */
            double p = dens[d], sd = sqrt(p * (1 - p) / (double)N);
            double rate = (double)kept / (double)N;
            CHECK_MSG(fabs(rate - p) < 6 * sd, "density %g: keep rate %.5f, want within %.5f", p, rate, 6 * sd);
            if (!rescale) {
                CHECK_MSG(changed == 0, "rescale off: %llu kept values changed", (unsigned long long)changed);
            } else {
                /* L1_RESCALE: kept values scaled by ||delta||_1 / ||kept||_1 (one factor) */
                double got = l1(out), want = l1(x);
                CHECK_MSG(fabs(got - want) <= 1e-5 * want, "density %g: L1 %.9g after rescale, want %.9g", p, got, want);
                CHECK_MSG(fabs(ratio - 1.0 / rate) < 0.05 / rate, "density %g: rescale factor %g, expected near 1/rate %g", p,
                          ratio, 1.0 / rate);
            }
        }
    }
    free(zero);
    free(x);
    free(out);
}

MK_TEST(dare_masks_are_keyed_and_reproducible)
{
    float *zero = calloc(N, sizeof *zero), *x = field(1, 0.02f);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    const float *in[3] = {zero, x, x};
    mt_run r = {.method = "dare_linear", .name = "a.weight", .rows = ROWS, .cols = COLS, .n_in = 2, .base = 0, .in = in,
                .seed = 1, .m_names = {"weight", "density"}, .m_vals = {{0, 1, 1}, {0, 0.5, 0.5}},
                .g_names = {"rescale"}, .g_vals = {0}};
    CHECK_OK(mt_run_method(&r, a));
    r.chunk_rows = 64;
    r.order = 1;
    CHECK_OK(mt_run_method(&r, b));
    CHECK_MSG(memcmp(a, b, N * sizeof *a) == 0, "same seed and name, other chunking: masks differ");
    uint64_t same = 0;
    r.seed = 2;
    CHECK_OK(mt_run_method(&r, b));
    for (uint64_t i = 0; i < N; i++) same += (a[i] != 0) == (b[i] != 0);
    /* independent masks agree on about half the elements (p^2 + (1-p)^2 = 0.5) */
    CHECK_MSG(fabs((double)same / N - 0.5) < 0.01, "another seed: %.4f of the mask agrees, want ~0.5", (double)same / N);
    r.seed = 1;
    r.name = "b.weight";
    CHECK_OK(mt_run_method(&r, b));
    same = 0;
    for (uint64_t i = 0; i < N; i++) same += (a[i] != 0) == (b[i] != 0);
    CHECK_MSG(fabs((double)same / N - 0.5) < 0.01, "another tensor name: %.4f of the mask agrees", (double)same / N);
    /* two models: independent streams (with weights 1 and no rescale, out = m1 x + m2 x) */
    r.name = "a.weight";
    r.n_in = 3;
    CHECK_OK(mt_run_method(&r, b));
    uint64_t both = 0;
    for (uint64_t i = 0; i < N; i++) both += b[i] == 2 * x[i];
    CHECK_MSG(fabs((double)both / N - 0.25) < 0.01, "two models: both kept on %.4f, want ~0.25", (double)both / N);
    free(zero);
    free(x);
    free(a);
    free(b);
}

MK_TEST(dare_ties_sign_election)
{
    float *zero = calloc(N, sizeof *zero), *x1 = field(1, 0.02f), *x2 = field(2, 0.03f), *x3 = field(3, 0.01f);
    float *out = malloc(N * sizeof *out);
    const float *in[4] = {zero, x1, x2, x3};
    mt_run r = {.method = "dare_ties", .name = "t.weight", .rows = ROWS, .cols = COLS, .n_in = 4, .base = 0, .in = in,
                .seed = 4, .m_names = {"weight", "density"}, .m_vals = {{0, 0.5, 0.3, 0.9}, {0, 0.7, 0.7, 0.7}},
                .g_names = {"rescale"}, .g_vals = {0}};
    CHECK_OK(mt_run_method(&r, out));
    /* rebuild every element from the three masks: kept deltas are x_k exactly (rescale
     * off), so out = sum of the agreeing weighted deltas */
    uint64_t bad = 0, first = 0;
    const float *xs[3] = {x1, x2, x3};
    const double w[3] = {0.5, 0.3, 0.9};
    mk_rng key = mk_rng_key(4, "t.weight");
    for (uint64_t i = 0; i < N; i++) {
        double wd[3], sum = 0;
        for (int k = 0; k < 3; k++) {
            bool keep = mk_rng_uniform(key, (uint64_t)k + 1, i) < 0.7f;
            wd[k] = keep ? (double)(float)(xs[k][i] * (float)w[k]) : 0;
            sum += wd[k];
        }
        double want = 0;
        for (int k = 0; k < 3; k++)
            if ((sum >= 0 && wd[k] > 0) || (sum < 0 && wd[k] < 0)) want += wd[k];
        if (fabs(out[i] - want) > 1e-6 * fabs(want) + 1e-12 && !bad++) first = i;
    }
    CHECK_MSG(bad == 0, "%llu elements break the sign-election rule; first [%llu]: got %g", (unsigned long long)bad,
              (unsigned long long)first, out[first]);
    free(zero);
    free(x1);
    free(x2);
    free(x3);
    free(out);
}

MK_TEST(della_keep_probability_follows_rank)
{
    float *zero = calloc(N, sizeof *zero), *x = field(5, 0.02f), *out = malloc(N * sizeof *out);
    const float *in[2] = {zero, x};
    const double dens = 0.5, eps = 0.2;
    mt_run r = {.method = "della_linear", .name = "d.weight", .rows = ROWS, .cols = COLS, .n_in = 2, .base = 0, .in = in,
                .seed = 9, .m_names = {"weight", "density", "epsilon"}, .m_vals = {{0, 1}, {0, dens}, {0, eps}},
                .g_names = {"rescale"}, .g_vals = {1}};
    CHECK_OK(mt_run_method(&r, out));
    /* per row, rank by |delta|; decile 0 = smallest magnitudes */
    uint64_t kept[10] = {0}, total[10] = {0}, all = 0;
    uint32_t *rank = malloc(COLS * sizeof *rank);
    for (uint64_t row = 0; row < ROWS; row++) {
        const float *xr = x + row * COLS;
        for (uint64_t j = 0; j < COLS; j++) {
            uint32_t rk = 0;
            for (uint64_t q = 0; q < COLS; q++) rk += fabsf(xr[q]) < fabsf(xr[j]) || (fabsf(xr[q]) == fabsf(xr[j]) && q < j);
            rank[j] = rk;
        }
        for (uint64_t j = 0; j < COLS; j++) {
            int dec = (int)(rank[j] * 10 / COLS);
            total[dec]++;
            bool k = out[row * COLS + j] != 0;
            kept[dec] += k;
            all += k;
        }
    }
    /* DELLA_RATE: p(rank) = density - eps + 2 eps (rank - 1)/(n - 1); decile mean, 6 sd */
    for (int d = 0; d < 10; d++) {
        double p = dens - eps + 2 * eps * (d + 0.5) / 10.0;
        double sd = sqrt(p * (1 - p) / (double)total[d]);
        double got = (double)kept[d] / (double)total[d];
        CHECK_MSG(fabs(got - p) < 6 * sd + 0.002, "decile %d: keep rate %.4f, want %.4f +- %.4f", d, got, p, 6 * sd);
    }
    double rate = (double)all / N;
    CHECK_MSG(fabs(rate - dens) < 6 * sqrt(dens * (1 - dens) / N), "overall keep rate %.4f, want %.2f", rate, dens);
    /* L1_RESCALE */
    double got = l1(out), want = l1(x);
    CHECK_MSG(fabs(got - want) <= 1e-5 * want, "L1 after rescale %.9g, want %.9g", got, want);
    free(rank);
    free(zero);
    free(x);
    free(out);
}

MK_TEST(della_rejects_epsilon_out_of_range)
{
    float z[4] = {0}, x[4] = {1, 2, 3, 4}, out[4];
    const float *in[2] = {z, x};
    mt_run r = {.method = "della", .rows = 1, .cols = 4, .n_in = 2, .base = 0, .in = in,
                .m_names = {"weight", "density", "epsilon"}, .m_vals = {{0, 1}, {0, 0.9}, {0, 0.15}}};
    CHECK_ERR(mt_run_method(&r, out), MK_ERR_RECIPE, "density + epsilon < 1");
}

MK_TEST(rng_blocks_match_single_blocks)
{
    mk_rng key = mk_rng_key(77, "blocks");
    uint32_t many[4 * 37], one[4];
    mk_rng_blocks(key, 3, 0xfffffff0u, 37, many); /* crosses a 32-bit counter boundary */
    for (uint64_t b = 0; b < 37; b++) {
        mk_rng_block(key, 3, 0xfffffff0u + b, one);
        CHECK_MSG(memcmp(one, many + 4 * b, sizeof one) == 0, "block %llu differs", (unsigned long long)b);
    }
}

/* The dispatched mk_rng_blocks (AVX2 eight blocks at a time where the CPU has it) gives the
 * portable loop's words bit for bit: many keys and streams (64-bit, both halves set), counters
 * that carry across 2^32 and wrap at 2^64, every n from 0 to 40 and some larger odd ones,
 * at an unaligned output. Exact: any differing word fails, named by its place. */
MK_TEST(rng_blocks_simd_matches_reference)
{
    static const uint64_t counters[] = {0, 1, 7, 0xfffffff0u, 0xfffffffbu, 0x123456789abcdefull, UINT64_MAX - 20};
    static const size_t big[] = {63, 64, 65, 127, 1001, 4099};
    uint32_t *want = malloc(4 * 4100 * sizeof *want), *raw = malloc((4 * 4100 + 1) * sizeof *raw);
    uint32_t *got = raw + 1; /* 4-byte aligned only */
    long bad = 0, runs = 0;
    for (int ki = 0; ki < 24; ki++) {
        mk_rng key = mk_rng_key((uint64_t)ki * 977, ki & 1 ? "model.layers.3.mlp.down_proj.weight" : "k");
        uint64_t stream = ki % 3 == 0 ? (uint64_t)ki : ((uint64_t)ki << 32) | 0x80000001u;
        for (size_t ci = 0; ci < sizeof counters / sizeof counters[0]; ci++)
            for (size_t t = 0; t < 41 + sizeof big / sizeof big[0]; t++) {
                size_t n = t < 41 ? t : big[t - 41];
                memset(got, 0xa5, 4 * (n + 1) * sizeof *got);
                mk_rng_blocks_ref(key, stream, counters[ci], n, want);
                mk_rng_blocks(key, stream, counters[ci], n, got);
                runs++;
                for (size_t w = 0; w < 4 * n; w++)
                    if (got[w] != want[w]) {
                        if (bad++ < 5)
                            mk_test_fail(__FILE__, __LINE__, "key %d stream %llx counter %llx n %zu: word %zu is %08x, want %08x",
                                         ki, (unsigned long long)stream, (unsigned long long)counters[ci], n, w, got[w], want[w]);
                        break;
                    }
                CHECK_MSG(got[4 * n] == 0xa5a5a5a5u, "n %zu: wrote past the last block", n);
            }
    }
    CHECK_MSG(bad == 0, "%ld of %ld runs differ", bad, runs);
    /* Random123's known answers for Philox4x32-10 (counter = our counter and stream, key) */
    uint32_t w[4];
    mk_rng_blocks((mk_rng){0, 0}, 0, 0, 1, w);
    CHECK_MSG(w[0] == 0x6627e8d5u && w[1] == 0xe169c58du && w[2] == 0xbc57ac4cu && w[3] == 0x9b00dbd8u,
              "zero key and counter: %08x %08x %08x %08x", w[0], w[1], w[2], w[3]);
    free(want);
    free(raw);
}

/* Masks and selections kept between passes (job keep_bytes: all chunks, some, none) and the
 * executor's chunk order give the same output bytes: the kept bits are the ones a pass would
 * compute again. Two models of 70 x 33 (odd widths: bit slots end mid-byte), chunks of 4 rows. */
MK_TEST(kept_masks_same_output_at_any_cap)
{
    enum { R = 70, C = 33, NN = R * C };
    float *x[3];
    for (int k = 0; k < 3; k++) {
        x[k] = malloc(NN * sizeof *x[k]);
        mk_rng key = mk_rng_key(5, "kept");
        for (uint64_t i = 0; i < NN; i++) x[k][i] = k ? x[0][i] + 0.05f * (mk_rng_uniform(key, (uint64_t)k, i) - 0.5f) : mk_rng_uniform(key, 0, i);
    }
    const float *in[3] = {x[0], x[1], x[2]};
    float *ref = malloc(NN * sizeof *ref), *out = malloc(NN * sizeof *out);
    const char *methods[] = {"dare_ties", "dare_linear", "della", "della_linear", "ties", "breadcrumbs_ties"};
    /* per chunk: 4 x 33 bits per model = 17 bytes, 34 for both: 40 keeps one chunk of 18 */
    const uint64_t caps[] = {UINT64_MAX, 40, 300, 0};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++)
        for (size_t c = 0; c < sizeof caps / sizeof *caps; c++)
            for (int order = 0; order < 3; order++) {
                mt_run r = {.method = methods[m], .name = "w", .rows = R, .cols = C, .n_in = 3, .base = 0, .in = in,
                            .seed = 3, .m_names = {"weight", "density"}, .m_vals = {{0, 0.6, 0.4}, {0, 0.5, 0.7}},
                            .g_names = {"rescale"}, .g_vals = {1}, .chunk_rows = 4, .keep_bytes = caps[c], .order = order};
                CHECK_OK(mt_run_method(&r, c == 0 && order == 0 ? ref : out));
                if (c == 0 && order == 0) continue;
                size_t i = 0;
                while (i < NN && memcmp(&ref[i], &out[i], sizeof *out) == 0) i++;
                CHECK_MSG(i == NN, "%s, keep_bytes %llu, order %d: element %zu is %.9g, %.9g without keeping", methods[m],
                          (unsigned long long)caps[c], order, i, i < NN ? out[i] : 0.0, i < NN ? ref[i] : 0.0);
            }
    for (int k = 0; k < 3; k++) free(x[k]);
    free(ref);
    free(out);
}

MK_TEST(bits_pack_round_trip)
{
    uint8_t f[77], g[77], bits[10];
    mk_rng key = mk_rng_key(8, "bits");
    for (uint64_t n = 0; n <= 77; n++) {
        for (uint64_t i = 0; i < n; i++) f[i] = mk_rng_uniform(key, n, i) < 0.5f;
        mk_bits_pack(f, n, bits);
        mk_bits_unpack(bits, n, g);
        CHECK_MSG(n == 0 || memcmp(f, g, (size_t)n) == 0, "%llu flags do not come back", (unsigned long long)n);
    }
}

/* every byte value unpacks to its eight bits, in the eight-at-a-time body and the tail */
MK_TEST(bits_unpack_every_byte)
{
    enum { NB = 257 };
    uint8_t bits[NB], g[8 * NB];
    for (int j = 0; j < NB; j++) bits[j] = (uint8_t)(j == 256 ? 0xa5 : j);
    for (uint64_t n = 8 * NB - 13; n <= 8 * NB; n++) {
        memset(g, 0xee, sizeof g);
        mk_bits_unpack(bits, n, g);
        uint64_t bad = 0;
        for (uint64_t i = 0; i < n; i++) bad += g[i] != ((bits[i / 8] >> (i % 8)) & 1);
        CHECK_MSG(bad == 0, "n %llu: %llu flags wrong", (unsigned long long)n, (unsigned long long)bad);
        CHECK_MSG(n == 8 * NB || g[n] == 0xee, "n %llu: wrote past the end", (unsigned long long)n);
    }
}
