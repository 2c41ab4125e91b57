/* test_fisher.c - the Fisher diagonal of train/fisher.h: with given labels against PyTorch's
 * per-row squared gradients (tests/golden/fisher/, made by tools/gen-golden-fisher.py) on tiny
 * Llamas, tied and untied; with labels drawn from the model against the exact expected Fisher
 * (every label of the vocabulary enumerated, each weighted by its probability); the draw
 * itself; the same bytes at any thread count. */
#include "harness.h"

#include "../../core/mk_hash.h"
#include "../../core/mk_io.h"
#include "../../core/mk_thread.h"
#include "../../formats/model.h"
#include "../../model/config.h"
#include "../../nn/backward.h"
#include "../../train/fisher.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Against PyTorch in float32: the squares of gradients that agree to ~5e-7 absolute (the
 * training goldens), summed over 3 rows. Measured worst: 0.12 of the tolerance
 * (MK_TEST_VERBOSE prints it); a missing row or a label of the next token instead of the
 * target is off by far more. */
#define FISHER_ATOL 1e-6
#define FISHER_RTOL 1e-4
/* Drawn labels against the exact expectation: MC_ROWS rows, each an unbiased estimate; the
 * per-tensor sums of F over its elements within MC_REL (relative) of the exact ones. Measured
 * worst 0.017 (the draws are deterministic: the same on every run); the Fisher of one fixed
 * label (what a draw ignoring the distribution gives) misses by 0.82. */
#define MC_ROWS 4000
#define MC_REL 0.08

static const char *root(void) { return getenv("MK_ROOT") ? getenv("MK_ROOT") : "."; }
static const char *bin(void) { return getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c"; }

typedef struct tm {
    mk_source *src;
    mk_model_config cfg;
    mk_nn_train *t;
} tm;

static bool tm_open(const char *dir, tm *m)
{
    memset(m, 0, sizeof *m);
    mk_status s = mk_model_open(dir, &m->src);
    if (s == MK_OK) s = mk_model_config_of_source(m->src, &m->cfg);
    if (s == MK_OK) s = mk_nn_train_open(m->src, &m->cfg, &m->t);
    if (s != MK_OK) mk_test_fail(__FILE__, __LINE__, "%s: %s", dir, mk_errmsg());
    return s == MK_OK;
}

static void tm_close(tm *m)
{
    mk_nn_train_close(m->t);
    if (m->src) mk_model_config_free(&m->cfg);
    mk_source_close(m->src);
}

static bool synth(const char *dir, const char *args)
{
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s' synth '%s' -q -f %s", bin(), dir, args);
    return system(cmd) == 0;
}

/* A synth model named `name` in the test folder, opened for training. */
static bool tm_synth(const char *name, const char *args, tm *m)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", mk_test_tmpdir(), name);
    CHECK(synth(dir, args));
    return tm_open(dir, m);
}

static void *gold_get(mk_source *g, const char *name, size_t *n)
{
    long i = mk_source_find(g, name);
    if (i < 0) {
        mk_test_fail(__FILE__, __LINE__, "golden tensor %s is missing", name);
        return NULL;
    }
    void *buf = malloc(g->tensors[i].nbytes + 1);
    if (g->ops->read(g, (size_t)i, 0, g->tensors[i].nbytes, buf) != MK_OK) {
        free(buf);
        return NULL;
    }
    if (n) *n = g->tensors[i].numel;
    return buf;
}

MK_TEST(fisher_matches_pytorch)
{
    char p[1200], *text = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/tests/golden/fisher/MANIFEST.json", root());
    cJSON *man = mk_read_file(p, 1 << 20, &text, &len) == MK_OK ? cJSON_Parse(text) : NULL;
    mk_source *g = mk_test_golden("fisher/fisher.safetensors");
    if (!man || !g) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the Fisher goldens");
        cJSON_Delete(man), free(text);
        if (g) mk_source_close(g);
        return;
    }
    size_t W = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(man, "rows")), T = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(man, "T"));
    int32_t *tok = gold_get(g, "tokens", NULL), *tgt = gold_get(g, "targets", NULL);
    const cJSON *c;
    int cases = 0;
    double worst = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(man, "cases")) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/fisher-%s", mk_test_tmpdir(), c->string);
        mk_buf b = {0};
        const cJSON *a;
        bool first = true;
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(c, "synth")) {
            if (!first) mk_buf_printf(&b, " '%s'", a->valuestring);
            first = false;
        }
        bool made = synth(dir, b.data);
        mk_buf_free(&b);
        char got[33] = "";
        mk_hash128 h;
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (made && mk_hash_file(p, &h) == MK_OK) mk_hash128_hex(h, got);
        const char *want_h = cJSON_GetStringValue(cJSON_GetObjectItem(c, "weights_xxh128"));
        CHECK_MSG(want_h && !strcmp(got, want_h), "%s: synth made weights %s, the goldens were made from %s", c->string, got, want_h ? want_h : "?");
        tm m;
        if (!tok || !tgt || !tm_open(dir, &m)) continue;
        uint64_t n = mk_nn_train_numel(m.t);
        float *F = malloc(n * sizeof *F + 1);
        CHECK_OK(mk_fisher_diag(m.t, tok, tgt, W, T, 1, F, NULL, NULL));
        size_t np = 0;
        for (size_t i = 0; i < mk_nn_train_n_params(m.t); i++) {
            const mk_nn_param *pp = mk_nn_train_param(m.t, i);
            char name[600];
            snprintf(name, sizeof name, "%s.fisher.%s", c->string, pp->name);
            size_t nw;
            float *want = gold_get(g, name, &nw);
            if (want && nw == pp->numel) {
                CHECK_CLOSE(name, F + pp->off, want, nw, FISHER_ATOL, FISHER_RTOL);
                for (size_t e = 0; e < nw; e++) {
                    double d = fabs((double)F[pp->off + e] - want[e]) / (FISHER_ATOL + FISHER_RTOL * fabs(want[e]));
                    worst = d > worst ? d : worst;
                }
                np++;
            }
            free(want);
        }
        CHECK_EQ_INT(np, cJSON_GetArraySize(cJSON_GetObjectItem(c, "params")));
        free(F);
        tm_close(&m);
        cases++;
    }
    if (getenv("MK_TEST_VERBOSE")) fprintf(stderr, "fisher: worst error against PyTorch %.3g of the tolerance\n", worst);
    CHECK_MSG(cases == 2, "only %d cases compared", cases);
    free(tok), free(tgt);
    mk_source_close(g);
    cJSON_Delete(man);
    free(text);
}

MK_TEST(fisher_draw_follows_the_distribution)
{
    float lg[4] = {0.0f, logf(3.0f), -INFINITY, 0.0f}; /* probabilities 1/5, 3/5, 0, 1/5 */
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.0), 0);
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.19), 0);
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.21), 1);
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.79), 1);
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.81), 3);
    CHECK_EQ_INT(mk_fisher_draw(lg, 4, 0.999999999), 3);
    CHECK_EQ_INT(mk_fisher_draw(lg, 3, 0.9), 1); /* never a label of probability 0 */
}

/* The exact expected Fisher per token of rows tok[rows * T]: for every position j and label
 * y, p_j(y) g_{j,y}^2, g the gradient of position j's NLL of y alone. */
static float *exact_fisher(tm *m, const int32_t *tok, size_t T)
{
    size_t V = mk_nn_train_vocab(m->t);
    uint64_t n = mk_nn_train_numel(m->t);
    double *acc = calloc(n + 1, sizeof *acc);
    float *logits = malloc(T * V * sizeof *logits), *w = malloc(T * sizeof *w), *g = mk_nn_train_grads(m->t);
    int32_t *lab = malloc(T * sizeof *lab);
    double nll = 0;
    for (size_t j = 0; j < T; j++) w[j] = 1;
    CHECK_OK(mk_nn_train_pass(m->t, tok, w, 1, T, 1, false, false, &nll, logits));
    for (size_t j = 0; j + 1 < T; j++) {
        double mx = -INFINITY, z = 0;
        for (size_t v = 0; v < V; v++) mx = logits[j * V + v] > mx ? logits[j * V + v] : mx;
        for (size_t v = 0; v < V; v++) z += exp(logits[j * V + v] - mx);
        for (size_t k = 0; k < T; k++) w[k] = k == j + 1, lab[k] = 0;
        for (size_t y = 0; y < V; y++) {
            lab[j + 1] = (int32_t)y;
            memset(g, 0, n * sizeof *g);
            CHECK_OK(mk_nn_train_pass_targets(m->t, tok, lab, w, 1, T, 1, false, true, &nll, NULL));
            double py = exp(logits[j * V + y] - mx) / z;
            for (uint64_t i = 0; i < n; i++) acc[i] += py * (double)g[i] * g[i];
        }
    }
    float *F = malloc(n * sizeof *F + 1);
    for (uint64_t i = 0; i < n; i++) F[i] = (float)(acc[i] / (double)(T - 1));
    free(acc), free(logits), free(w), free(lab);
    return F;
}

/* Per parameter tensor, |sum F - sum E| / sum E; the worst in *worst_rel (and its name). */
static void tensor_sums(tm *m, const float *F, const float *E, double *worst_rel, const char **worst_name)
{
    *worst_rel = 0;
    for (size_t i = 0; i < mk_nn_train_n_params(m->t); i++) {
        const mk_nn_param *p = mk_nn_train_param(m->t, i);
        double a = 0, b = 0;
        for (uint64_t e = 0; e < p->numel; e++) a += F[p->off + e], b += E[p->off + e];
        double r = b > 0 ? fabs(a - b) / b : fabs(a);
        if (r > *worst_rel) *worst_rel = r, *worst_name = p->name;
    }
}

MK_TEST(fisher_drawn_labels_estimate_the_expected_fisher)
{
    tm m;
    if (!tm_synth("fisher-mc", "--arch llama --hidden 16 --layers 1 --heads 2 --kv-heads 1 --intermediate 32 --vocab 12 "
                               "--dtype float32 --std 0.5 --max-position 16 --seed 4", &m))
        return;
    size_t T = 3; /* two positions: their cross term vanishes only in expectation */
    int32_t row[3] = {1, 7, 4};
    int32_t *tok = malloc(MC_ROWS * T * sizeof *tok), *fixed = malloc(MC_ROWS * T * sizeof *fixed);
    for (size_t r = 0; r < MC_ROWS; r++)
        for (size_t j = 0; j < T; j++) tok[r * T + j] = row[j], fixed[r * T + j] = 5;
    uint64_t n = mk_nn_train_numel(m.t);
    float *E = exact_fisher(&m, row, T), *F = malloc(n * sizeof *F + 1), *G = malloc(n * sizeof *G + 1);
    CHECK_OK(mk_fisher_diag(m.t, tok, NULL, MC_ROWS, T, 9, F, NULL, NULL));
    CHECK_OK(mk_fisher_diag(m.t, tok, fixed, 1, T, 9, G, NULL, NULL)); /* every row the same */
    double rel, relg;
    const char *nm = "", *nmg = "";
    tensor_sums(&m, F, E, &rel, &nm);
    tensor_sums(&m, G, E, &relg, &nmg);
    if (getenv("MK_TEST_VERBOSE"))
        fprintf(stderr, "fisher: drawn labels, worst tensor sum %.3g relative (%s); one fixed label %.3g (%s)\n", rel, nm, relg, nmg);
    CHECK_MSG(rel <= MC_REL, "drawn labels: the sum of %s's Fisher is %.3g off the exact expectation (tolerance %g)", nm, rel, MC_REL);
    CHECK_MSG(relg > 2.5 * MC_REL, "a fixed label is within %.3g of the expected Fisher: the check cannot tell", relg);
    free(tok), free(fixed), free(E), free(F), free(G);
    tm_close(&m);
}

MK_TEST(fisher_same_bytes_at_any_thread_count)
{
    tm m;
    if (!tm_synth("fisher-det", "--arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 300 "
                                "--dtype float32 --std 0.1 --seed 3", &m))
        return;
    size_t W = 3, T = 70;
    int32_t *tok = malloc(W * T * sizeof *tok);
    for (size_t i = 0; i < W * T; i++) tok[i] = (int32_t)((i * 7919) % 300);
    uint64_t n = mk_nn_train_numel(m.t);
    float *a = malloc(n * sizeof *a + 1), *b = malloc(n * sizeof *b + 1), *c = malloc(n * sizeof *c + 1);
    int saved = mk_threads_get();
    mk_threads_set(1);
    CHECK_OK(mk_fisher_diag(m.t, tok, NULL, W, T, 5, a, NULL, NULL));
    mk_threads_set(3);
    CHECK_OK(mk_fisher_diag(m.t, tok, NULL, W, T, 5, b, NULL, NULL));
    CHECK_OK(mk_fisher_diag(m.t, tok, NULL, W, T, 6, c, NULL, NULL));
    mk_threads_set(saved);
    CHECK_MSG(memcmp(a, b, n * 4) == 0, "3 threads changed the Fisher");
    CHECK_MSG(memcmp(a, c, n * 4) != 0, "another seed drew the same labels");
    double s = 0;
    for (uint64_t i = 0; i < n; i++) s += a[i];
    CHECK_MSG(s > 0, "the Fisher is all zero");
    free(a), free(b), free(c), free(tok);
    tm_close(&m);
}
