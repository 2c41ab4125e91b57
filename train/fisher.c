/* fisher.c - the Fisher diagonal by one backward pass per row (fisher.h). */
#include "fisher.h"

#include "../core/mk_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

int32_t mk_fisher_draw(const float *logits, size_t V, double u)
{
    double mx = -INFINITY, sum = 0;
    for (size_t v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (size_t v = 0; v < V; v++) sum += exp((double)logits[v] - mx);
    double target = u * sum, c = 0;
    int32_t last = 0;
    for (size_t v = 0; v < V; v++) {
        double e = exp((double)logits[v] - mx);
        if (e > 0) last = (int32_t)v;
        c += e;
        if (c > target && e > 0) return (int32_t)v;
    }
    return last;
}

/* Labels of row r: position j's at lab[j + 1], drawn from the model's logits there. */
static mk_status draw_row(mk_nn_train *t, const int32_t *tok, size_t r, size_t T, const float *w, mk_rng key, float *logits, int32_t *lab)
{
    size_t V = mk_nn_train_vocab(t);
    double nll = 0;
    MK_TRY(mk_nn_train_pass(t, tok, w, 1, T, 1.0f, false, false, &nll, logits));
    lab[0] = 0;
    for (size_t j = 0; j + 1 < T; j++) {
        uint32_t a = mk_rng_u32(key, r, 2 * j), b = mk_rng_u32(key, r, 2 * j + 1);
        double u = ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) / 9007199254740992.0; /* 53 bits */
        lab[j + 1] = mk_fisher_draw(logits + j * V, V, u);
    }
    return MK_OK;
}

mk_status mk_fisher_diag(mk_nn_train *t, const int32_t *tok, const int32_t *tgt, size_t windows, size_t T, uint64_t seed, float *F,
                         void (*progress)(void *ctx, size_t done, size_t windows), void *ctx)
{
    if (!windows || T < 2) return mk_error(MK_ERR_USAGE, "the Fisher needs a window of at least 2 tokens");
    uint64_t n = mk_nn_train_numel(t);
    size_t V = mk_nn_train_vocab(t);
    float *g = mk_nn_train_grads(t);
    float *w = mk_malloc(T * sizeof *w);
    int32_t *lab = tgt ? NULL : mk_malloc(T * sizeof *lab);
    float *logits = tgt ? NULL : mk_malloc(T * V * sizeof *logits);
    mk_status s = w && (tgt || (lab && logits)) ? MK_OK : MK_ERR_NOMEM;
    for (size_t j = 0; w && j < T; j++) w[j] = 1.0f;
    if (s == MK_OK) memset(F, 0, (size_t)n * sizeof *F);
    mk_rng key = mk_rng_key(seed, "fisher labels");
    for (size_t r = 0; r < windows && s == MK_OK; r++) {
        const int32_t *row = tok + r * T;
        if (!tgt) s = draw_row(t, row, r, T, w, key, logits, lab);
        memset(g, 0, (size_t)n * sizeof *g);
        double nll = 0;
        if (s == MK_OK) s = mk_nn_train_pass_targets(t, row, tgt ? tgt + r * T : lab, w, 1, T, 1.0f, false, true, &nll, NULL);
        if (s != MK_OK) break;
        MK_OMP("omp parallel for schedule(static) if (n > 65536)")
        for (uint64_t i = 0; i < n; i++) F[i] += g[i] * g[i];
        if (progress) progress(ctx, r + 1, windows);
    }
    float inv = (float)(1.0 / ((double)windows * (double)(T - 1)));
    if (s == MK_OK) {
        MK_OMP("omp parallel for schedule(static) if (n > 65536)")
        for (uint64_t i = 0; i < n; i++) F[i] *= inv;
    }
    memset(g, 0, (size_t)n * sizeof *g);
    free(w), free(lab), free(logits);
    return s;
}
