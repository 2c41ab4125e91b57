/* test_nn_ops.c - the forward pass's fast kernels against their plain references (nn/ops.h):
 * the BLAS products split across threads, the blocked BLAS attention (grouped heads, sliding
 * window, soft-capping, sequences longer than one block), the column-block product of lm_head;
 * and the norms and RoPE against formulas written out here. */
#include "harness.h"

#include "../../core/mk_rng.h"
#include "../../core/mk_thread.h"
#include "../../nn/ops.h"

#include <stdlib.h>

/* Products and attention sum in float32 in BLAS's order, the references in double: 1e-5
 * relative to the largest output, for sums of up to ~600 terms of values in [-1, 1]. */
#define OPS_ATOL 2e-5
#define OPS_RTOL 1e-5

static float *rnd(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x + 1);
    mk_rng key = mk_rng_key(seed, "nn-ops");
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * mk_rng_uniform(key, 0, i) - 1.0f;
    return x;
}

MK_TEST(nn_linear_matches_reference)
{
    mk_nn_blas_init();
    static const size_t shapes[][3] = {{1, 7, 5}, {3, 64, 96}, {37, 129, 257}, {512, 64, 48}, {5, 300, 1000}};
    for (int th = 1; th <= 2; th++) {
        mk_threads_set(th);
        for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
            size_t T = shapes[c][0], in = shapes[c][1], out = shapes[c][2];
            float *x = rnd(T * in, 1 + c), *w = rnd(in * out, 100 + c), *b = rnd(out, 200 + c);
            float *y = malloc(T * out * sizeof *y), *r = malloc(T * out * sizeof *r);
            for (int conv = 0; conv < 2; conv++)
                for (int bias = 0; bias < 2; bias++) {
                    mk_nn_linear(x, T, in, w, out, conv, bias ? b : NULL, y);
                    mk_nn_linear_ref(x, T, in, w, out, conv, bias ? b : NULL, r);
                    char what[96];
                    snprintf(what, sizeof what, "linear [%zu,%zu]x[%zu] conv1d %d bias %d threads %d", T, in, out, conv, bias, th);
                    CHECK_CLOSE(what, y, r, T * out, OPS_ATOL * (double)in, OPS_RTOL);
                }
            /* a block of columns of a wider output (lm_head in row blocks) */
            float *wide = calloc(T * (out + 9), sizeof *wide);
            mk_nn_linear_into(x, T, in, w, out, wide + 4, out + 9);
            mk_nn_linear_ref(x, T, in, w, out, false, NULL, r);
            for (size_t t = 0; t < T; t++) {
                CHECK_CLOSE("linear_into", wide + t * (out + 9) + 4, r + t * out, out, OPS_ATOL * (double)in, OPS_RTOL);
                CHECK(wide[t * (out + 9)] == 0 && wide[t * (out + 9) + out + 8] == 0);
            }
            free(wide);
            free(x), free(w), free(b), free(y), free(r);
        }
    }
    mk_threads_set(0);
}

MK_TEST(nn_attention_matches_reference)
{
    mk_nn_blas_init();
    /* T, heads, kv heads, head dim, window, softcap */
    static const struct {
        size_t T, nh, nkv, hd;
        long window;
        float cap;
    } cases[] = {{1, 2, 1, 8, 0, 0}, {17, 4, 2, 16, 0, 0}, {40, 6, 2, 8, 5, 0}, {33, 4, 4, 32, 0, 50.0f},
                 {300, 3, 1, 16, 0, 0}, {600, 2, 1, 8, 128, 30.0f}};
    for (int th = 1; th <= 2; th++) {
        mk_threads_set(th);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            size_t T = cases[c].T, nh = cases[c].nh, nkv = cases[c].nkv, hd = cases[c].hd;
            float *q = rnd(T * nh * hd, 10 + c), *k = rnd(T * nkv * hd, 20 + c), *v = rnd(T * nkv * hd, 30 + c);
            float *o = malloc(T * nh * hd * sizeof *o), *r = malloc(T * nh * hd * sizeof *r);
            float *sc = malloc(mk_nn_attention_scratch(T) * sizeof *sc), *sr = malloc(T * sizeof *sr);
            float scale = 1.0f / sqrtf((float)hd) * 3.0f; /* sharp enough that a mask error shows */
            mk_nn_attention(q, k, v, T, nh, nkv, hd, scale, cases[c].cap, cases[c].window, o, sc);
            mk_nn_attention_ref(q, k, v, T, nh, nkv, hd, scale, cases[c].cap, cases[c].window, r, sr);
            char what[96];
            snprintf(what, sizeof what, "attention T %zu heads %zu/%zu window %ld cap %g threads %d", T, nh, nkv, cases[c].window,
                     (double)cases[c].cap, th);
            CHECK_CLOSE(what, o, r, T * nh * hd, OPS_ATOL, OPS_RTOL);
            free(q), free(k), free(v), free(o), free(r), free(sc), free(sr);
        }
    }
    mk_threads_set(0);
}

MK_TEST(nn_attention_masks)
{
    /* one head, values v_j = j: output i is the mean of the j it may see (equal scores) */
    size_t T = 10, hd = 1;
    float q[10], k[10], v[10], o[10], sr[10];
    for (size_t j = 0; j < T; j++) q[j] = 0, k[j] = 0, v[j] = (float)j;
    mk_nn_attention_ref(q, k, v, T, 1, 1, hd, 1.0f, 0, 3, o, sr);
    for (size_t i = 0; i < T; i++) {
        size_t j0 = i + 1 > 3 ? i + 1 - 3 : 0;
        double want = (double)(j0 + i) / 2.0;
        CHECK_MSG(fabs(o[i] - want) < 1e-6, "window 3: output %zu is %g, the mean of keys %zu..%zu is %g", i, (double)o[i], j0, i,
                  want);
    }
}

MK_TEST(nn_norms_and_rope)
{
    float x[8] = {1, -2, 3, -4, 0.5f, 0.25f, -1, 2}, w[4] = {1, 2, 0.5f, -1}, b[4] = {0.1f, 0, 0, -0.1f}, y[8];
    mk_nn_rmsnorm(y, x, w, 2, 4, 1e-6f, false);
    double ms = (1 + 4 + 9 + 16) / 4.0;
    CHECK(fabs(y[1] - (-2 / sqrt(ms + 1e-6)) * 2) < 1e-6);
    mk_nn_rmsnorm(y, x, w, 2, 4, 1e-6f, true); /* Gemma: x (1 + w) */
    CHECK(fabs(y[3] - (-4 / sqrt(ms + 1e-6)) * 0) < 1e-6 && fabs(y[0] - 2 / sqrt(ms + 1e-6)) < 1e-6);
    mk_nn_layernorm(y, x, w, b, 2, 4, 1e-5f);
    double m = (1 - 2 + 3 - 4) / 4.0, var = ((1 - m) * (1 - m) + (-2 - m) * (-2 - m) + (3 - m) * (3 - m) + (-4 - m) * (-4 - m)) / 4;
    CHECK(fabs(y[2] - ((3 - m) / sqrt(var + 1e-5) * 0.5)) < 1e-5);
    /* RoPE: element i turns with i + half by the angle position x theta^(-2i/d) */
    mk_rope rp = {.type = MK_ROPE_DEFAULT, .theta = 10000, .factor = 1, .partial_rotary = 1};
    mk_nn_rope_tab tab;
    CHECK(mk_nn_rope_init(&tab, &rp, 4, 64, 3) == MK_OK);
    float h[12] = {1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1}; /* 3 positions, one head of 4 */
    mk_nn_rope_apply(h, 3, 1, 4, &tab);
    double a = 2.0 * 1.0; /* position 2, i = 0: angle 2 */
    CHECK(fabs(h[8] - cos(a)) < 1e-6 && fabs(h[10] - sin(a)) < 1e-6);
    double a1 = 2.0 * pow(10000, -0.5); /* i = 1 */
    CHECK(fabs(h[9] - (-sin(a1))) < 1e-6 && fabs(h[11] - cos(a1)) < 1e-6);
    mk_nn_rope_free(&tab);
}
