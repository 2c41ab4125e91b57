/* test_nn_norm_geglu.c - LayerNorm's and GeGLU's CPU forward and backward (mk_nn_layernorm,
 * mk_nn_layernorm_bwd, mk_nn_act_gated with MK_ACT_GELU_TANH, mk_nn_geglu_bwd: the references
 * of the CUDA kernels in nn/cuda/mk_cuda_norm.h) against torch's autograd
 * (tests/golden/nn/, tools/gen-golden-nn-bwd.py: float64 on the same float32 inputs). */
#include "harness.h"

#include <stdlib.h>

#include "../../formats/model.h"
#include "../../nn/ops.h"
#include "../../nn/ops_bwd.h"

/* Tolerances against float64: our f32 arithmetic (double row sums). Measured worst absolute
 * errors: LayerNorm 3.5e-7 forward, 1.8e-7 dx, 4.8e-7 dw (values up to 4.2), db exact; GeGLU
 * 9.5e-7 forward (values up to 12), 7e-7 dgate (where gelu' nearly cancels), 4.8e-7 dup. */
#define NORM_ATOL 2e-6
#define GEGLU_ATOL 2e-6
#define RTOL 1e-6

/* tensor `case.field` of the golden (n values), or NULL */
static float *get(mk_source *s, const char *cs, const char *field, size_t n)
{
    char name[96];
    snprintf(name, sizeof name, "%s.%s", cs, field);
    long i = mk_source_find(s, name);
    float *b = i >= 0 && s->tensors[i].nbytes == n * 4 ? malloc(n * 4) : NULL;
    if (b && s->ops->read(s, (size_t)i, 0, n * 4, b) == MK_OK) return b;
    mk_test_fail(__FILE__, __LINE__, "golden %s: missing or not %zu floats", name, n);
    free(b);
    return NULL;
}

static void layernorm_case(mk_source *s, const char *cs, size_t T, size_t d, bool bias)
{
    float *x = get(s, cs, "x", T * d), *w = get(s, cs, "w", d), *dy = get(s, cs, "dy", T * d), *y = get(s, cs, "y", T * d);
    float *dx = get(s, cs, "dx", T * d), *dw = get(s, cs, "dw", d), *b = bias ? get(s, cs, "b", d) : NULL;
    float *db = bias ? get(s, cs, "db", d) : NULL;
    float *gy = malloc(T * d * 4), *gdx = calloc(T * d, 4), *gdw = calloc(d, 4), *gdb = calloc(d, 4), *st = malloc(2 * T * 4);
    char what[96];
    if (x && w && dy && y && dx && dw && (!bias || (b && db))) {
        mk_nn_layernorm(gy, x, w, b, T, d, 1e-5f);
        snprintf(what, sizeof what, "%s: layernorm forward", cs);
        CHECK_CLOSE(what, gy, y, T * d, NORM_ATOL, RTOL);
        mk_nn_layernorm_bwd(x, w, dy, T, d, 1e-5f, gdx, gdw, bias ? gdb : NULL, st);
        snprintf(what, sizeof what, "%s: layernorm dx", cs);
        CHECK_CLOSE(what, gdx, dx, T * d, NORM_ATOL, RTOL);
        snprintf(what, sizeof what, "%s: layernorm dw", cs);
        CHECK_CLOSE(what, gdw, dw, d, NORM_ATOL, RTOL);
        if (bias) {
            snprintf(what, sizeof what, "%s: layernorm db", cs);
            CHECK_CLOSE(what, gdb, db, d, NORM_ATOL, RTOL);
        }
    }
    free(x), free(w), free(dy), free(y), free(dx), free(dw), free(b), free(db);
    free(gy), free(gdx), free(gdw), free(gdb), free(st);
}

MK_TEST(nn_layernorm_geglu_match_torch)
{
    mk_source *s = mk_test_golden("nn/norm_geglu.safetensors");
    if (!s) return;
    layernorm_case(s, "ln_bias", 5, 64, true);
    layernorm_case(s, "ln_long", 3, 1000, false);
    size_t n = 1000;
    float *g = get(s, "geglu", "gate", n), *u = get(s, "geglu", "up", n), *dy = get(s, "geglu", "dy", n);
    float *y = get(s, "geglu", "y", n), *dg = get(s, "geglu", "dgate", n), *du = get(s, "geglu", "dup", n);
    float *gy = malloc(n * 4), *gdg = malloc(n * 4), *gdu = malloc(n * 4);
    if (g && u && dy && y && dg && du) {
        mk_nn_act_gated(MK_ACT_GELU_TANH, g, u, gy, n);
        CHECK_CLOSE("geglu forward", gy, y, n, GEGLU_ATOL, RTOL);
        mk_nn_geglu_bwd(g, u, dy, n, gdg, gdu);
        CHECK_CLOSE("geglu dgate", gdg, dg, n, GEGLU_ATOL, RTOL);
        CHECK_CLOSE("geglu dup", gdu, du, n, GEGLU_ATOL, RTOL);
    }
    free(g), free(u), free(dy), free(y), free(dg), free(du), free(gy), free(gdg), free(gdu);
    mk_source_close(s);
}
