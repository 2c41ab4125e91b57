/* test_train.c - training on the CPU: the backward kernels (nn/ops_bwd.h) against their plain
 * references; one forward/backward of tiny models of every trained family against PyTorch's
 * debug state (tests/golden/train/, made by tools/gen-golden-train.py: logits, loss, every
 * parameter's gradient, with per-token loss weights) and 10 AdamW steps (cosine schedule with
 * warmup, gradient accumulation, clipping, weight decay) against its losses; checkpointing
 * and the thread count change no byte of the gradients; QLoRA (quant/nf4hold.c) gives LoRA's
 * gradients on the NF4-quantized model exactly. The gemma family's goldens (GeGLU, (1 + w)
 * norms, scaled embeddings) are in tests/golden/train/gemma/ (tools/gen-golden-train-gemma.py:
 * also the weights after its 5 AdamW steps, compared by STEPS_WEIGHT_ATOL). */
#include "harness.h"

#include "../../core/mk_hash.h"
#include "../../core/mk_io.h"
#include "../../core/mk_rng.h"
#include "../../core/mk_thread.h"
#include "../../formats/model.h"
#include "../../model/config.h"
#include "../../nn/backward.h"
#include "../../nn/ops.h"
#include "../../nn/ops_bwd.h"
#include "../../train/data.h"
#include "../../train/optim.h"
#include "../../quant/nf4hold.h"
#include "../../quant/qsource.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Kernels against references: f32 BLAS sums against double sums of up to ~300 terms. */
#define BWD_ATOL 2e-5
#define BWD_RTOL 1e-4
/* Against PyTorch in float32: both sum in f32 in different orders through a 2-layer model.
 * Measured worst: logits 2.5e-6, gradients 4.2e-7 absolute, the 10-step losses 5e-7; the
 * tolerances leave about ten times that, and a wrong term (a missing norm gradient, RoPE's
 * sign, a bias, the loss weights) is off by 1e-3 or more. */
#define LOGIT_ATOL 2e-5
#define LOGIT_RTOL 2e-5
#define LOSS_ATOL 2e-6
#define GRAD_ATOL 5e-6
#define GRAD_RTOL 1e-4
#define STEPS_LOSS_ATOL 1e-5
/* The weights after the AdamW steps (gemma's goldens): Adam's first steps move each weight by
 * about lr whatever its gradient's size, so a gradient near 0 may flip an update's sign; the
 * measured worst is in the header of the gemma test. */
#define STEPS_WEIGHT_ATOL 1e-4
/* gemma's gradients are larger (the embeddings times sqrt(hidden) = 5.7, norms by 1 + w; up to
 * 2.8): PyTorch's own f32 gradients are up to 2.9e-5 from its float64 ones, ours up to 1e-5
 * from its f32 ones; a wrong term (the embedding scale, the (1 + w), gelu's derivative) is off
 * by 1e-2 or more. */
#define GEMMA_GRAD_ATOL 5e-5
/* Mixed precision (--dtype bf16) against torch.autocast("cpu", bfloat16), relative errors. bf16
 * keeps 8 bits, so a sum that BLAS and oneDNN round to the two sides of a bf16 tie moves a value
 * by 2^-8 of itself: such flips set the floor. Measured worst, bf16 trainer / f32 trainer:
 * gradients of one pass (relative L2 per tensor) 3.7e-4 / 2.4e-2 (LoRA adapters 0 / 6e-2), the
 * loss 4e-8; over the 10 AdamW steps, where Adam turns the flips' noise into whole updates
 * (k_proj's bias, whose true gradient is 0, most), the step losses 1.2e-3 / 1.5e-3 and the
 * update of all the weights (final - initial, relative L2) 1.3e-2 / 2.8e-2. The gradients tell
 * the two apart (the test checks that the f32 trainer fails them); the steps' tolerances hold
 * the optimizer, accumulation and clipping to within a few flips. */
#define BF16_GRAD_REL 4e-3
#define BF16_LOSS_REL 5e-4
#define BF16_STEPS_REL 3e-3
#define BF16_UPDATE_REL 4e-2

static const char *root(void) { return getenv("MK_ROOT") ? getenv("MK_ROOT") : "."; }
static const char *bin(void) { return getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c"; }

static float *rnd(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x + 1);
    mk_rng key = mk_rng_key(seed, "train");
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * mk_rng_uniform(key, 0, i) - 1.0f;
    return x;
}

static float *zeros(size_t n) { return calloc(n + 1, sizeof(float)); }

MK_TEST(train_linear_bwd_matches_reference)
{
    mk_nn_blas_init();
    static const size_t shapes[][3] = {{1, 7, 5}, {37, 129, 70}, {130, 64, 200}};
    for (size_t c = 0; c < 3; c++) {
        size_t T = shapes[c][0], in = shapes[c][1], out = shapes[c][2];
        float *x = rnd(T * in, 1 + c), *w = rnd(in * out, 10 + c), *dy = rnd(T * out, 20 + c);
        float *dx = rnd(T * in, 30 + c), *dw = rnd(in * out, 40 + c), *db = rnd(out, 50 + c);
        float *rx = malloc(T * in * 4), *rw = malloc(in * out * 4), *rb = malloc(out * 4);
        memcpy(rx, dx, T * in * 4), memcpy(rw, dw, in * out * 4), memcpy(rb, db, out * 4);
        mk_nn_linear_bwd(x, T, in, w, out, dy, dx, dw, db);
        mk_nn_linear_bwd_ref(x, T, in, w, out, dy, rx, rw, rb);
        CHECK_CLOSE("linear dx", dx, rx, T * in, BWD_ATOL, BWD_RTOL);
        CHECK_CLOSE("linear dw", dw, rw, in * out, BWD_ATOL, BWD_RTOL);
        CHECK_CLOSE("linear db", db, rb, out, BWD_ATOL, BWD_RTOL);
        free(x), free(w), free(dy), free(dx), free(dw), free(db), free(rx), free(rw), free(rb);
    }
}

MK_TEST(train_rmsnorm_rope_attention_bwd_match_reference)
{
    mk_nn_blas_init();
    size_t T = 70, d = 48;
    float *x = rnd(T * d, 1), *w = rnd(d, 2), *dy = rnd(T * d, 3), *rstd = malloc(T * 4);
    float *dx = zeros(T * d), *dw = zeros(d), *rx = zeros(T * d), *rw = zeros(d);
    mk_nn_rmsnorm_bwd(x, w, dy, T, d, 1e-6f, dx, dw, rstd);
    mk_nn_rmsnorm_bwd_ref(x, w, dy, T, d, 1e-6f, rx, rw);
    CHECK_CLOSE("rmsnorm dx", dx, rx, T * d, BWD_ATOL, BWD_RTOL);
    CHECK_CLOSE("rmsnorm dw", dw, rw, d, BWD_ATOL, BWD_RTOL);
    /* RoPE's backward is its adjoint: <rope(a), b> = <a, rope_bwd(b)> */
    mk_rope rp = {.type = MK_ROPE_DEFAULT, .theta = 10000, .partial_rotary = 1};
    mk_nn_rope_tab tab;
    CHECK_OK(mk_nn_rope_init(&tab, &rp, 16, 64, T));
    float *a = rnd(T * 3 * 16, 4), *b = rnd(T * 3 * 16, 5);
    double l = 0, r = 0;
    for (size_t i = 0; i < T * 48; i++) r -= (double)a[i] * b[i] * 0; /* keep r at 0 */
    float *ra = malloc(T * 48 * 4), *rb = malloc(T * 48 * 4);
    memcpy(ra, a, T * 48 * 4), memcpy(rb, b, T * 48 * 4);
    mk_nn_rope_apply(ra, T, 3, 16, &tab);
    mk_nn_rope_bwd(rb, T, 3, 16, &tab);
    for (size_t i = 0; i < T * 48; i++) l += (double)ra[i] * b[i], r += (double)a[i] * rb[i];
    CHECK_MSG(fabs(l - r) < 1e-4 * (fabs(l) + 1), "rope adjoint: <rope a, b> %.9g, <a, rope_bwd b> %.9g", l, r);
    mk_nn_rope_free(&tab);
    /* attention: 4 query heads on 2 key/value heads, with and without a window */
    size_t nh = 4, nkv = 2, hd = 8;
    float *q = rnd(T * nh * hd, 6), *k = rnd(T * nkv * hd, 7), *v = rnd(T * nkv * hd, 8), *dout = rnd(T * nh * hd, 9);
    float *out = malloc(T * nh * hd * 4), *p = malloc(nh * T * T * 4), *ref = malloc(T * nh * hd * 4);
    float *scratch = malloc(2 * T * 4);
    for (long window = 0; window <= 9; window += 9) {
        float *dq = zeros(T * nh * hd), *dk = zeros(T * nkv * hd), *dv = zeros(T * nkv * hd);
        float *rq = zeros(T * nh * hd), *rk = zeros(T * nkv * hd), *rv = zeros(T * nkv * hd);
        mk_nn_attention_train(q, k, v, T, nh, nkv, hd, 0.35f, window, out, p);
        mk_nn_attention_ref(q, k, v, T, nh, nkv, hd, 0.35f, 0, window, ref, scratch);
        CHECK_CLOSE("attention_train out", out, ref, T * nh * hd, BWD_ATOL, BWD_RTOL);
        float *bs = malloc(mk_nn_attention_bwd_scratch(T) * sizeof(float));
        mk_nn_attention_bwd(q, k, v, p, dout, T, nh, nkv, hd, 0.35f, dq, dk, dv, bs);
        free(bs);
        mk_nn_attention_bwd_ref(q, k, v, dout, T, nh, nkv, hd, 0.35f, window, rq, rk, rv, scratch);
        CHECK_CLOSE("attention dq", dq, rq, T * nh * hd, BWD_ATOL, BWD_RTOL);
        CHECK_CLOSE("attention dk", dk, rk, T * nkv * hd, BWD_ATOL, BWD_RTOL);
        CHECK_CLOSE("attention dv", dv, rv, T * nkv * hd, BWD_ATOL, BWD_RTOL);
        free(dq), free(dk), free(dv), free(rq), free(rk), free(rv);
    }
    /* SwiGLU and cross-entropy against central differences in double */
    float g[3] = {-2.0f, 0.3f, 1.7f}, u[3] = {0.5f, -1.2f, 2.0f}, one[3] = {1, 1, 1}, dg[3], du[3];
    mk_nn_swiglu_bwd(g, u, one, 3, dg, du);
    for (int i = 0; i < 3; i++) {
        double h = 1e-4, s = 1 / (1 + exp(-(double)g[i]));
        double fp = (g[i] + h) / (1 + exp(-(g[i] + h))) * u[i], fm = (g[i] - h) / (1 + exp(-(g[i] - h))) * u[i];
        CHECK_MSG(fabs(dg[i] - (fp - fm) / (2 * h)) < 1e-4, "swiglu dgate[%d] %.7g, numeric %.7g", i, dg[i], (fp - fm) / (2 * h));
        CHECK_MSG(fabs(du[i] - g[i] * s) < 1e-6, "swiglu dup[%d] %.7g, want %.7g", i, du[i], g[i] * s);
    }
    float lg[5] = {0.1f, -0.4f, 1.3f, 0.0f, 0.7f}, l2[5];
    int32_t tgt = 2;
    float wt = 0.5f;
    double nll;
    memcpy(l2, lg, sizeof lg);
    mk_nn_xent(l2, 1, 5, &tgt, &wt, 2.0f, &nll);
    double lse = 0;
    for (int j = 0; j < 5; j++) lse += exp(lg[j]);
    lse = log(lse);
    CHECK_MSG(fabs(nll - (lse - lg[2])) < 1e-9, "xent nll %.9g, want %.9g", nll, lse - lg[2]);
    for (int j = 0; j < 5; j++) {
        double want = (exp(lg[j] - lse) - (j == 2)) * 1.0;
        CHECK_MSG(fabs(l2[j] - want) < 1e-6, "xent dlogit[%d] %.7g, want %.7g", j, l2[j], want);
    }
    free(x), free(w), free(dy), free(rstd), free(dx), free(dw), free(rx), free(rw), free(a), free(b), free(ra), free(rb);
    free(q), free(k), free(v), free(dout), free(out), free(p), free(ref), free(scratch);
}

MK_TEST(train_schedules_and_clip)
{
    /* transformers' schedulers with 2 warmup steps of 10 */
    CHECK(fabs(mk_sched_lr(MK_SCHED_COSINE, 1.0, 0, 2, 10) - 0.0) < 1e-12);
    CHECK(fabs(mk_sched_lr(MK_SCHED_COSINE, 1.0, 1, 2, 10) - 0.5) < 1e-12);
    CHECK(fabs(mk_sched_lr(MK_SCHED_COSINE, 1.0, 6, 2, 10) - 0.5) < 1e-12);
    CHECK(fabs(mk_sched_lr(MK_SCHED_LINEAR, 1.0, 6, 2, 10) - 0.5) < 1e-12);
    CHECK(fabs(mk_sched_lr(MK_SCHED_CONSTANT, 1.0, 9, 2, 10) - 1.0) < 1e-12);
    CHECK(mk_sched_parse("cosine") == MK_SCHED_COSINE && mk_sched_parse("step") == MK_SCHED_COUNT);
    float g[4] = {3, 4, 0, 0};
    double n = mk_grad_norm(g, 4);
    CHECK(fabs(n - 5.0) < 1e-12);
    float c = mk_grad_clip(g, 4, n, 1.0);
    CHECK_MSG(fabs(c - 1.0 / (5.0 + 1e-6)) < 1e-7 && fabs(g[1] - 4 * c) < 1e-7, "clip coefficient %.9g", c);
    CHECK(mk_grad_clip(g, 4, 1.0, 2.0) == 1.0f);
}

/* ---- against PyTorch ------------------------------------------------------------------------ */

typedef struct gold {
    mk_source *src;
    cJSON *man;
    char *text;
} gold;

/* The goldens of tests/golden/train/DIR (dir "" or "gemma/"): its MANIFEST.json and `file`. */
static bool gold_open_dir(gold *g, const char *dir, const char *file)
{
    char p[1200];
    size_t len;
    memset(g, 0, sizeof *g);
    snprintf(p, sizeof p, "%s/tests/golden/train/%sMANIFEST.json", root(), dir);
    if (mk_read_file(p, 1 << 20, &g->text, &len) != MK_OK) return false;
    g->man = cJSON_Parse(g->text);
    snprintf(p, sizeof p, "%s/tests/golden/train/%s%s", root(), dir, file);
    return g->man && mk_model_open(p, &g->src) == MK_OK;
}


static void gold_close(gold *g)
{
    mk_source_close(g->src);
    cJSON_Delete(g->man);
    free(g->text);
}

/* A golden tensor as f32 (malloc'd), *n its elements; NULL (and a failure) when absent. */
static void *gold_get(gold *g, const char *name, size_t *n)
{
    long i = mk_source_find(g->src, name);
    if (i < 0) {
        mk_test_fail(__FILE__, __LINE__, "golden tensor %s is missing", name);
        return NULL;
    }
    const mk_tensor_info *t = &g->src->tensors[i];
    void *buf = malloc(t->nbytes + 1);
    if (g->src->ops->read(g->src, (size_t)i, 0, t->nbytes, buf) != MK_OK) {
        free(buf);
        return NULL;
    }
    if (n) *n = t->numel;
    return buf;
}

/* Make case c's model with its recorded synth command and config edits; its folder in dir. */
static bool make_model(const cJSON *c, char *dir, size_t cap)
{
    snprintf(dir, cap, "%s/train-%s", mk_test_tmpdir(), c->string);
    mk_buf b = {0};
    mk_buf_printf(&b, "'%s' synth '%s' -q -f", bin(), dir);
    const cJSON *a;
    bool first = true;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(c, "synth")) {
        if (!first) mk_buf_printf(&b, " '%s'", a->valuestring);
        first = false;
    }
    int rc = system(b.data);
    mk_buf_free(&b);
    if (rc != 0) {
        mk_test_fail(__FILE__, __LINE__, "%s: synth failed", c->string);
        return false;
    }
    char p[1100], got[33] = "";
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    mk_hash128 h;
    if (mk_hash_file(p, &h) == MK_OK) mk_hash128_hex(h, got);
    const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(c, "weights_xxh128"));
    if (!want || strcmp(got, want) != 0) {
        mk_test_fail(__FILE__, __LINE__, "%s: synth made weights %s, the goldens were made from %s", c->string, got,
                     want ? want : "?");
        return false;
    }
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *text = NULL;
    size_t len;
    cJSON *cfg = mk_read_file(p, 1 << 20, &text, &len) == MK_OK ? cJSON_Parse(text) : NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(c, "config_edits")) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, e->string);
        cJSON_AddItemToObject(cfg, e->string, cJSON_Duplicate(e, true));
    }
    char *out = cfg ? cJSON_Print(cfg) : NULL;
    bool ok = out && mk_write_file_atomic(p, out, strlen(out)) == MK_OK;
    free(out), free(text);
    cJSON_Delete(cfg);
    return ok;
}

typedef struct tmodel {
    mk_source *src;
    mk_model_config cfg;
    mk_nn_train *t;
    mk_qlora *q; /* QLoRA: the NF4 holder of the projections */
} tmodel;

static bool tmodel_open_q(const char *dir, tmodel *m, bool qlora)
{
    memset(m, 0, sizeof *m);
    mk_status s = mk_model_open(dir, &m->src);
    if (s == MK_OK) s = mk_model_config_of_source(m->src, &m->cfg);
    if (s == MK_OK && qlora) s = mk_qlora_new(m->src, &m->q);
    mk_nn_held held = {m->q, mk_nf4_hold_fill, mk_nf4_hold_codes};
    if (s == MK_OK) s = qlora ? mk_nn_train_open_held(m->src, &m->cfg, &held, &m->t) : mk_nn_train_open(m->src, &m->cfg, &m->t);
    if (s != MK_OK) mk_test_fail(__FILE__, __LINE__, "%s: %s", dir, mk_errmsg());
    return s == MK_OK;
}

static bool tmodel_open(const char *dir, tmodel *m) { return tmodel_open_q(dir, m, false); }

static void tmodel_close(tmodel *m)
{
    mk_nn_train_close(m->t);
    mk_qlora_free(m->q);
    if (m->src) mk_model_config_free(&m->cfg);
    mk_source_close(m->src);
}

static double wsum(const float *w, size_t nseq, size_t T)
{
    double s = 0;
    for (size_t r = 0; r < nseq; r++)
        for (size_t j = 1; j < T; j++) s += w[r * T + j];
    return s;
}

/* 10 steps as the golden's hyperparameters say, through train/optim.h; losses[steps]. */
static void run_steps(tmodel *m, const cJSON *hp, const int32_t *st, const float *sw, size_t B, size_t T, double *losses)
{
    long steps = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "steps"));
    long accum = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "accum"));
    long warmup = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "warmup"));
    double lr = cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "lr")), clip = cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "clip"));
    const cJSON *betas = cJSON_GetObjectItem(hp, "betas");
    mk_adamw o = {cJSON_GetNumberValue(cJSON_GetArrayItem(betas, 0)), cJSON_GetNumberValue(cJSON_GetArrayItem(betas, 1)),
                  cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "eps")),
                  cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "weight_decay"))};
    uint64_t n = mk_nn_train_numel(m->t);
    float *mom = zeros(n), *var = zeros(n), *w = mk_nn_train_weights(m->t), *g = mk_nn_train_grads(m->t);
    for (long s = 0; s < steps; s++) {
        double tw = 0, wnll = 0;
        for (long a = 0; a < accum; a++) tw += wsum(sw + (s * accum + a) * B * T, B, T);
        memset(g, 0, n * sizeof *g);
        for (long a = 0; a < accum; a++)
            CHECK_OK(mk_nn_train_pass(m->t, st + (s * accum + a) * B * T, sw + (s * accum + a) * B * T, B, T, (float)(1.0 / tw),
                                      false, true, &wnll, NULL));
        losses[s] = wnll / tw;
        mk_grad_clip(g, n, mk_grad_norm(g, n), clip);
        double l = mk_sched_lr(MK_SCHED_COSINE, lr, s, warmup, steps);
        for (size_t i = 0; i < mk_nn_train_n_params(m->t); i++) {
            const mk_nn_param *p = mk_nn_train_param(m->t, i);
            mk_adamw_step(&o, l, s + 1, p->decay, w + p->off, g + p->off, mom + p->off, var + p->off, p->numel);
        }
    }
    free(mom), free(var);
}

/* Relative L2 error ||got - want|| / ||want|| of n values, and the worst element (by absolute
 * error) in *worst. */
static double rel_l2(const float *got, const float *want, size_t n, size_t *worst)
{
    double d = 0, w = 0, mx = -1;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - want[i];
        d += e * e, w += (double)want[i] * want[i];
        if (fabs(e) > mx) mx = fabs(e), *worst = i;
    }
    return w > 0 ? sqrt(d / w) : sqrt(d);
}

/* The f32 cases of the goldens in gdir against the trainer; *worst_w: the worst error of the
 * weights after the steps where the goldens have them ("CASE.final.NAME"). */
static int matches_pytorch(const char *gdir, double gatol, double *worst_w)
{
    gold g;
    *worst_w = 0;
    if (!gold_open_dir(&g, gdir, "debug_state.safetensors")) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the training goldens: %s", mk_errmsg());
        gold_close(&g);
        return 0;
    }
    size_t nt, nst;
    int32_t *tok = gold_get(&g, "tokens", &nt), *st = gold_get(&g, "steps.tokens", &nst);
    float *wt = gold_get(&g, "weights", NULL), *sw = gold_get(&g, "steps.weights", NULL);
    long ti = mk_source_find(g.src, "tokens");
    size_t B = ti >= 0 ? (size_t)g.src->tensors[ti].shape[0] : 0, T = ti >= 0 ? (size_t)g.src->tensors[ti].shape[1] : 0;
    const cJSON *hp = cJSON_GetObjectItem(g.man, "hyperparameters"), *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g.man, "cases")) {
        char dir[1024], name[600];
        tmodel m;
        if (!tok || !make_model(c, dir, sizeof dir) || !tmodel_open(dir, &m)) continue;
        size_t V = mk_nn_train_vocab(m.t), nl;
        float *logits = malloc(B * T * V * sizeof(float));
        double wnll = 0, tw = wsum(wt, B, T);
        CHECK_OK(mk_nn_train_pass(m.t, tok, wt, B, T, (float)(1.0 / tw), false, true, &wnll, logits));
        snprintf(name, sizeof name, "%s.logits", c->string);
        float *want = gold_get(&g, name, &nl);
        if (want && nl == B * T * V) CHECK_CLOSE(name, logits, want, nl, LOGIT_ATOL, LOGIT_RTOL);
        free(want);
        snprintf(name, sizeof name, "%s.loss", c->string);
        want = gold_get(&g, name, NULL);
        if (want) CHECK_MSG(fabs(wnll / tw - want[0]) < LOSS_ATOL, "%s: loss %.7g, PyTorch %.7g", c->string, wnll / tw, want[0]);
        free(want);
        size_t ng = 0;
        for (size_t i = 0; i < mk_nn_train_n_params(m.t); i++) {
            const mk_nn_param *p = mk_nn_train_param(m.t, i);
            snprintf(name, sizeof name, "%s.grad.%s", c->string, p->name);
            size_t n;
            want = gold_get(&g, name, &n);
            if (want && n == p->numel) CHECK_CLOSE(name, mk_nn_train_grads(m.t) + p->off, want, n, gatol, GRAD_RTOL), ng++;
            free(want);
        }
        CHECK_EQ_INT(ng, cJSON_GetArraySize(cJSON_GetObjectItem(c, "grads")));
        double losses[64];
        long steps = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "steps"));
        snprintf(name, sizeof name, "%s.losses", c->string);
        size_t nls;
        want = gold_get(&g, name, &nls);
        if (want && nls == (size_t)steps && steps <= 64) {
            run_steps(&m, hp, st, sw, B, T, losses);
            float got[64];
            for (long s = 0; s < steps; s++) got[s] = (float)losses[s];
            snprintf(name, sizeof name, "%s: losses of %ld AdamW steps", c->string, steps);
            CHECK_CLOSE(name, got, want, (size_t)steps, STEPS_LOSS_ATOL, 0);
            for (size_t i = 0; i < mk_nn_train_n_params(m.t); i++) { /* the weights after the steps */
                const mk_nn_param *p = mk_nn_train_param(m.t, i);
                snprintf(name, sizeof name, "%s.final.%s", c->string, p->name);
                if (mk_source_find(g.src, name) < 0) continue;
                size_t n, worst = 0;
                float *wf = gold_get(&g, name, &n);
                if (!wf || n != p->numel) {
                    free(wf);
                    continue;
                }
                const float *w = mk_nn_train_weights(m.t) + p->off;
                (void)rel_l2(w, wf, n, &worst);
                double e = fabs((double)w[worst] - wf[worst]);
                *worst_w = e > *worst_w ? e : *worst_w;
                CHECK_CLOSE(name, w, wf, n, STEPS_WEIGHT_ATOL, 0);
                free(wf);
            }
        }
        free(want);
        free(logits);
        tmodel_close(&m);
        cases++;
    }
    free(tok), free(st), free(wt), free(sw);
    gold_close(&g);
    return cases;
}

MK_TEST(train_matches_pytorch)
{
    double ww;
    int cases = matches_pytorch("", GRAD_ATOL, &ww);
    CHECK_MSG(cases >= 5, "only %d cases compared", cases);
}

/* gemma: GeGLU (gelu tanh), RMSNorm times (1 + w), the embeddings times sqrt(hidden) (f32),
 * the head tied; the loss, gradients and 5 AdamW steps' losses and weights. */
MK_TEST(train_gemma_matches_pytorch)
{
    double ww;
    int cases = matches_pytorch("gemma/", GEMMA_GRAD_ATOL, &ww);
    CHECK_MSG(cases >= 1, "only %d gemma cases compared", cases);
    if (getenv("MK_TEST_VERBOSE")) fprintf(stderr, "gemma: worst weight error after the steps %.3g\n", ww);
}

/* ---- mixed precision against torch.autocast ------------------------------------------------ */

/* LoRA case c (a "lora" entry of the manifest) against g's loss and adapter gradients: PEFT's in
 * f32 (mode LORA_F32), or under autocast by relative L2 error BF16_GRAD_REL (LORA_BF16; *err:
 * the worst), or the f32 trainer's error to those measured only (LORA_F32_VS_BF16); the tokens
 * from in. Returns whether it ran. */
enum { LORA_F32, LORA_BF16, LORA_F32_VS_BF16, LORA_QLORA };
static bool lora_case(gold *g, gold *in, const char *cname, const cJSON *c, int mode, double gatol, double *err)
{
    bool bf16 = mode == LORA_BF16, check = mode != LORA_F32_VS_BF16;

    if (!check) bf16 = false;
    int32_t *tok = gold_get(in, "tokens", NULL);
    float *wt = gold_get(in, "weights", NULL);
    long ti = mk_source_find(in->src, "tokens");
    size_t B = ti >= 0 ? (size_t)in->src->tensors[ti].shape[0] : 0, T = ti >= 0 ? (size_t)in->src->tensors[ti].shape[1] : 0;
    /* a QLoRA case names its own model */
    const cJSON *base = mode == LORA_QLORA ? c
                                           : cJSON_GetObjectItem(cJSON_GetObjectItem(g->man, "cases"),
                                                                 cJSON_GetStringValue(cJSON_GetObjectItem(c, "base")));
    char dir[1024], name[700];
    tmodel m;
    *err = 0;
    if (!tok || !wt || !base || !make_model(base, dir, sizeof dir) || !tmodel_open_q(dir, &m, mode == LORA_QLORA)) {
        free(tok), free(wt);
        return false;
    }
    mk_nn_lora lo = {(long)cJSON_GetNumberValue(cJSON_GetObjectItem(c, "r")), cJSON_GetNumberValue(cJSON_GetObjectItem(c, "alpha")),
                     cJSON_IsTrue(cJSON_GetObjectItem(c, "rslora")), 0, 1};
    for (mk_role r = MK_ROLE_Q; r <= MK_ROLE_DOWN; r++)
        if (r == MK_ROLE_Q || r == MK_ROLE_K || r == MK_ROLE_V || r == MK_ROLE_O || r == MK_ROLE_GATE || r == MK_ROLE_UP ||
            r == MK_ROLE_DOWN)
            lo.targets |= 1u << r;
    CHECK_OK(mk_nn_train_lora(m.t, &lo));
    if (bf16) CHECK_OK(mk_nn_train_set_bf16(m.t));
    size_t n = mk_nn_train_n_params(m.t), ng = 0;
    for (size_t i = 0; i < n; i++) { /* PEFT's random A and B (those of the f32 goldens) */
        const mk_nn_param *p = mk_nn_train_param(m.t, i);
        size_t k;
        snprintf(name, sizeof name, "%s.init.%s", cname, p->name);
        float *v = gold_get(in, name, &k);
        if (v && k == p->numel) memcpy(mk_nn_train_weights(m.t) + p->off, v, k * sizeof *v);
        free(v);
    }
    double wnll = 0, tw = wsum(wt, B, T);
    CHECK_OK(mk_nn_train_pass(m.t, tok, wt, B, T, (float)(1.0 / tw), false, true, &wnll, NULL));
    snprintf(name, sizeof name, "%s.loss", cname);
    float *want = gold_get(g, name, NULL);
    if (want && (mode == LORA_F32 || mode == LORA_QLORA))
        CHECK_MSG(fabs(wnll / tw - want[0]) < LOSS_ATOL, "%s: loss %.7g, PEFT %.7g", cname, wnll / tw, want[0]);
    if (want && bf16)
        CHECK_MSG(fabs(wnll / tw - want[0]) < BF16_LOSS_REL * fabs(want[0]), "%s (bf16): loss %.7g, PEFT under autocast %.7g",
                  cname, wnll / tw, want[0]);
    free(want);
    for (size_t i = 0; i < n; i++) {
        const mk_nn_param *p = mk_nn_train_param(m.t, i);
        size_t k, worst = 0;
        snprintf(name, sizeof name, "%s.grad.%s", cname, p->name);
        want = gold_get(g, name, &k);
        const float *got = mk_nn_train_grads(m.t) + p->off;
        if (want && k == p->numel && (mode == LORA_F32 || mode == LORA_QLORA)) {
            CHECK_CLOSE(name, got, want, k, gatol, GRAD_RTOL), ng++;
            (void)rel_l2(got, want, k, &worst);
            double d = fabs((double)got[worst] - want[worst]);
            *err = d > *err ? d : *err; /* the worst absolute error */
        }
        else if (want && k == p->numel) {
            double r = rel_l2(got, want, k, &worst);
            *err = r > *err ? r : *err;
            if (check)
                CHECK_MSG(r <= BF16_GRAD_REL, "%s (bf16): relative L2 error %.3g over %.3g; worst element %zu: %.9g, PEFT under "
                                          "autocast %.9g", name, r, BF16_GRAD_REL, worst, got[worst], want[worst]);
            ng++;
        }
        free(want);
    }
    CHECK_EQ_INT(ng, cJSON_GetArraySize(cJSON_GetObjectItem(c, "grads")));
    tmodel_close(&m);
    free(tok), free(wt);
    return true;
}

/* The LoRA and QLoRA cases of the goldens in dir; at least min_lora and min_qlora of them. */
static void lora_matches_peft(const char *dir, double gatol, int min_lora, int min_qlora)
{
    gold g;
    if (!gold_open_dir(&g, dir, "debug_state.safetensors")) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the training goldens: %s", mk_errmsg());
        gold_close(&g);
        return;
    }
    const cJSON *c;
    int cases = 0;
    double err;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g.man, "lora")) cases += lora_case(&g, &g, c->string, c, LORA_F32, gatol, &err);
    CHECK_MSG(cases >= min_lora, "only %d LoRA cases compared", cases);
    /* QLoRA against PEFT on a bitsandbytes NF4 base (blocks of 64, f32 compute): our NF4 codes
     * and decoding are bitsandbytes', so the gradients are LoRA's tolerance away */
    cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g.man, "qlora")) {
        cases += lora_case(&g, &g, c->string, c, LORA_QLORA, gatol, &err);
        if (getenv("MK_TEST_VERBOSE")) fprintf(stderr, "%s: worst gradient error %.3g against PEFT + bitsandbytes\n", c->string, err);
    }
    CHECK_MSG(cases >= min_qlora, "only %d QLoRA cases compared", cases);
    gold_close(&g);
}

MK_TEST(train_lora_matches_peft)
{
    lora_matches_peft("", GRAD_ATOL, 2, 1);
    lora_matches_peft("gemma/", GEMMA_GRAD_ATOL, 1, 1);
}

/* The worst relative L2 error over a case's tensors: gradients after one pass (gi), the
 * weights after the AdamW steps (fi), the loss and the step losses (li); bf16: the trainer in
 * mixed precision. Prints every tensor over `tol` with its worst element when `report`. */
typedef struct bf16_err {
    double grad, final, loss, losses;
} bf16_err;

static void bf16_case(gold *g, const cJSON *hp, const char *cname, const char *dir, const int32_t *tok, const float *wt,
                      const int32_t *st, const float *sw, size_t B, size_t T, bool bf16, const bf16_err *tol, bf16_err *e)
{
    tmodel m;
    memset(e, 0, sizeof *e);
    if (!tmodel_open(dir, &m)) return;
    if (bf16) CHECK_OK(mk_nn_train_set_bf16(m.t));
    double wnll = 0, tw = wsum(wt, B, T);
    CHECK_OK(mk_nn_train_pass(m.t, tok, wt, B, T, (float)(1.0 / tw), false, true, &wnll, NULL));
    char name[700];
    snprintf(name, sizeof name, "%s.loss", cname);
    float *want = gold_get(g, name, NULL);
    if (want) e->loss = fabs(wnll / tw - want[0]) / fabs(want[0]);
    if (want && tol && e->loss > tol->loss)
        mk_test_fail(__FILE__, __LINE__, "%s (bf16): loss %.7g, torch autocast %.7g", cname, wnll / tw, want[0]);
    free(want);
    uint64_t nw = mk_nn_train_numel(m.t);
    float *init = malloc(nw * sizeof(float)), *dgot = malloc(nw * sizeof(float)), *dwant = malloc(nw * sizeof(float));
    if (init) memcpy(init, mk_nn_train_weights(m.t), nw * sizeof(float));
    for (int phase = 0; phase < 2 && init && dgot && dwant; phase++) {
        size_t np = mk_nn_train_n_params(m.t), ng = 0;
        for (size_t i = 0; i < np; i++) {
            const mk_nn_param *p = mk_nn_train_param(m.t, i);
            size_t n, worst = 0;
            snprintf(name, sizeof name, "%s.%s.%s", cname, phase ? "final" : "grad", p->name);
            want = gold_get(g, name, &n);
            if (want && n == p->numel && phase) { /* the update of the steps, over every weight at once */
                for (size_t k = 0; k < n; k++)
                    dgot[p->off + k] = mk_nn_train_weights(m.t)[p->off + k] - init[p->off + k],
                    dwant[p->off + k] = want[k] - init[p->off + k];
                ng++;
            } else if (want && n == p->numel) {
                const float *got = mk_nn_train_grads(m.t) + p->off;
                double r = rel_l2(got, want, n, &worst);
                e->grad = r > e->grad ? r : e->grad;
                if (tol && r > tol->grad)
                    mk_test_fail(__FILE__, __LINE__, "%s (bf16): relative L2 error %.3g over %.3g; worst element %zu: %.9g, torch "
                                                     "autocast %.9g", name, r, tol->grad, worst, got[worst], want[worst]);
                ng++;
            }
            free(want);
        }
        CHECK_MSG(ng == np, "%s: %zu of %zu tensors compared", cname, ng, np);
        if (phase) {
            size_t worst = 0;
            e->final = rel_l2(dgot, dwant, nw, &worst);
            if (tol && e->final > tol->final)
                mk_test_fail(__FILE__, __LINE__, "%s (bf16): the weights' update over the steps has relative L2 error %.3g, over %.3g; "
                                                 "worst element %zu: %.9g, torch autocast %.9g", cname, e->final, tol->final,
                             worst, init[worst] + dgot[worst], init[worst] + dwant[worst]);
            break;
        }
        double losses[64];
        long steps = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "steps"));
        snprintf(name, sizeof name, "%s.losses", cname);
        size_t nls;
        want = gold_get(g, name, &nls);
        if (!want || nls != (size_t)steps || steps > 64) {
            free(want);
            break;
        }
        run_steps(&m, hp, st, sw, B, T, losses);
        for (long s = 0; s < steps; s++) {
            double r = fabs(losses[s] - want[s]) / fabs(want[s]);
            e->losses = r > e->losses ? r : e->losses;
            if (tol && r > tol->losses)
                mk_test_fail(__FILE__, __LINE__, "%s (bf16): step %ld's loss %.7g, torch autocast %.7g", cname, s + 1, losses[s],
                             want[s]);
        }
        free(want);
    }
    free(init), free(dgot), free(dwant);
    tmodel_close(&m);
}

/* The bf16 cases of the goldens in gdir; at least min_full and min_lora of them. */
static void bf16_matches_autocast(const char *gdir, int min_full, int min_lora)
{
    gold g;
    if (!gold_open_dir(&g, gdir, "debug_state_bf16.safetensors")) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the bf16 training goldens: %s", mk_errmsg());
        gold_close(&g);
        return;
    }
    gold g32;
    if (!gold_open_dir(&g32, gdir, "debug_state.safetensors")) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the training goldens: %s", mk_errmsg());
        gold_close(&g), gold_close(&g32);
        return;
    }
    int32_t *tok = gold_get(&g32, "tokens", NULL), *st = gold_get(&g32, "steps.tokens", NULL);
    float *wt = gold_get(&g32, "weights", NULL), *sw = gold_get(&g32, "steps.weights", NULL);
    long ti = mk_source_find(g32.src, "tokens");
    size_t B = ti >= 0 ? (size_t)g32.src->tensors[ti].shape[0] : 0, T = ti >= 0 ? (size_t)g32.src->tensors[ti].shape[1] : 0;
    const cJSON *hp = cJSON_GetObjectItem(g.man, "hyperparameters"), *c;
    const bf16_err tol = {BF16_GRAD_REL, BF16_UPDATE_REL, BF16_LOSS_REL, BF16_STEPS_REL};
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(g.man, "bf16"), "cases")) {
        const char *name = cJSON_GetStringValue(c);
        const cJSON *mc = cJSON_GetObjectItem(cJSON_GetObjectItem(g.man, "cases"), name ? name : "");
        char dir[1024];
        if (!tok || !st || !mc || !make_model(mc, dir, sizeof dir)) continue;
        bf16_err e, e32;
        bf16_case(&g, hp, name, dir, tok, wt, st, sw, B, T, true, &tol, &e);
        bf16_case(&g, hp, name, dir, tok, wt, st, sw, B, T, false, NULL, &e32);
        if (getenv("MK_TEST_VERBOSE"))
            fprintf(stderr, "%s: relative L2 error to autocast: bf16 grads %.3g final %.3g loss %.3g losses %.3g; f32 grads "
                            "%.3g final %.3g loss %.3g losses %.3g\n", name, e.grad, e.final, e.loss, e.losses, e32.grad,
                    e32.final, e32.loss, e32.losses);
        /* the comparison can tell: the f32 trainer misses the gradients' tolerance */
        CHECK_MSG(e32.grad > BF16_GRAD_REL, "%s: the f32 trainer's gradients are within the bf16 tolerance (%.3g)", name,
                  e32.grad);
        cases++;
    }
    CHECK_MSG(cases >= min_full, "only %d bf16 cases compared", cases);
    cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(g.man, "bf16"), "lora")) {
        const char *name = cJSON_GetStringValue(c);
        const cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(g.man, "lora"), name ? name : "");
        double err = 0, err32 = 0;
        if (!lc || !lora_case(&g, &g32, name, lc, LORA_BF16, GRAD_ATOL, &err) ||
            !lora_case(&g, &g32, name, lc, LORA_F32_VS_BF16, GRAD_ATOL, &err32))
            continue;
        if (getenv("MK_TEST_VERBOSE"))
            fprintf(stderr, "%s: adapter gradients' relative L2 error to PEFT under autocast: bf16 %.3g, f32 %.3g\n", name, err,
                    err32);
        CHECK_MSG(err32 > BF16_GRAD_REL, "%s: the f32 LoRA trainer's gradients are within the bf16 tolerance (%.3g)", name, err32);
        cases++;
    }
    CHECK_MSG(cases >= min_lora, "only %d bf16 LoRA cases compared", cases);
    free(tok), free(st), free(wt), free(sw);
    gold_close(&g), gold_close(&g32);
}

MK_TEST(train_bf16_matches_autocast)
{
    bf16_matches_autocast("", 4, 1);
    bf16_matches_autocast("gemma/", 1, 0);
}

/* Gradients of one pass (malloc'd copy). */
static float *grads_of(tmodel *m, const int32_t *tok, const float *w, size_t B, size_t T, bool ckpt, int threads)
{
    mk_threads_set(threads);
    uint64_t n = mk_nn_train_numel(m->t);
    memset(mk_nn_train_grads(m->t), 0, n * sizeof(float));
    double wnll = 0;
    CHECK_OK(mk_nn_train_pass(m->t, tok, w, B, T, 0.01f, ckpt, true, &wnll, NULL));
    float *g = malloc(n * sizeof *g);
    memcpy(g, mk_nn_train_grads(m->t), n * sizeof *g);
    return g;
}

MK_TEST(train_checkpointing_and_threads_same_bytes)
{
    static const char *const archs[] = {"qwen3", "gemma"};
    for (size_t k = 0; k < sizeof archs / sizeof archs[0]; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/train-det-%s", mk_test_tmpdir(), archs[k]);
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "'%s' synth '%s' -q -f --arch %s --hidden 64 --layers 3 --heads 4 --kv-heads 2 "
                                  "--intermediate 96 --vocab 300 --dtype float32 --std 0.1 --seed 3", bin(), dir, archs[k]);
        CHECK(system(cmd) == 0);
        tmodel m;
        if (!tmodel_open(dir, &m)) return;
        size_t B = 3, T = 70; /* more rows than one block of every kernel */
        int32_t *tok = malloc(B * T * sizeof *tok);
        float *w = malloc(B * T * sizeof *w);
        for (size_t i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 7919) % 300), w[i] = i % 5 ? 1.0f : 0.1f;
        int saved = mk_threads_get();
        float *a = grads_of(&m, tok, w, B, T, false, 1), *b = grads_of(&m, tok, w, B, T, true, 1);
        float *c = grads_of(&m, tok, w, B, T, true, 2), *d = grads_of(&m, tok, w, B, T, false, 3);
        mk_threads_set(saved);
        size_t n = mk_nn_train_numel(m.t);
        CHECK_MSG(memcmp(a, b, n * 4) == 0, "%s: --checkpointing changed the gradients", archs[k]);
        CHECK_MSG(memcmp(a, c, n * 4) == 0, "%s: 2 threads with checkpointing changed the gradients", archs[k]);
        CHECK_MSG(memcmp(a, d, n * 4) == 0, "%s: 3 threads changed the gradients", archs[k]);
        double s = 0;
        for (size_t i = 0; i < n; i++) s += fabs(a[i]);
        CHECK_MSG(s > 0, "%s: the gradients are all zero", archs[k]);
        free(a), free(b), free(c), free(d), free(tok), free(w);
        tmodel_close(&m);
    }
}

/* One LoRA pass's adapter gradients on model `dir` (read dequantized when quantized); with
 * qlora its projections held as NF4 by quant/nf4hold.c. */
static float *lora_grads(const char *dir, bool qlora, const int32_t *tok, const float *w, size_t B, size_t T, size_t *n)
{
    mk_source *raw = NULL, *src = NULL;
    mk_qinfo qi;
    mk_model_config cfg;
    mk_nn_train *t = NULL;
    mk_qlora *q = NULL;
    mk_nn_held held;
    float *g = NULL;
    CHECK_OK(mk_model_open(dir, &raw));
    if (!raw) return NULL;
    CHECK_OK(mk_qsource_open(raw, &src, &qi));
    CHECK_OK(mk_model_config_of_source(src, &cfg));
    if (qlora) CHECK_OK(mk_qlora_new(src, &q));
    held = (mk_nn_held){q, mk_nf4_hold_fill, mk_nf4_hold_codes};
    CHECK_OK(qlora ? mk_nn_train_open_held(src, &cfg, &held, &t) : mk_nn_train_open(src, &cfg, &t));
    mk_nn_lora lo = {4, 8.0, false, ~0u, 7};
    double wnll = 0;
    if (t) {
        CHECK_OK(mk_nn_train_lora(t, &lo));
        /* B starts at 0: give it values so that A's gradients are not zero */
        for (size_t i = 0; i < mk_nn_train_n_params(t); i++) {
            const mk_nn_param *p = mk_nn_train_param(t, i);
            if (strstr(p->name, "lora_B"))
                for (uint64_t e = 0; e < p->numel; e++) mk_nn_train_weights(t)[p->off + e] = 0.01f * (float)((e * 37) % 11) - 0.05f;
        }
        CHECK_OK(mk_nn_train_pass(t, tok, w, B, T, 0.01f, false, true, &wnll, NULL));
        *n = mk_nn_train_numel(t);
        g = malloc(*n * sizeof *g + 1);
        memcpy(g, mk_nn_train_grads(t), *n * sizeof *g);
    }
    mk_nn_train_close(t);
    mk_qlora_free(q);
    mk_model_config_free(&cfg);
    mk_source_close(src);
    return g;
}

/* QLoRA's gradients are LoRA's on the NF4-quantized model (quantize --format nf4 read
 * dequantized): the same values decoded the same way, so equal to the bit (tolerance 0). */
MK_TEST(train_qlora_equals_lora_on_nf4_base)
{
    char dir[1024], qdir[1100], cmd[4800];
    snprintf(dir, sizeof dir, "%s/train-qlora", mk_test_tmpdir());
    snprintf(qdir, sizeof qdir, "%s-nf4", dir);
    snprintf(cmd, sizeof cmd, "'%s' synth '%s' -q -f --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 "
                              "--intermediate 96 --vocab 200 --dtype bfloat16 --std 0.1 --seed 4 && "
                              "'%s' quantize '%s' '%s' --format nf4 -q -f", bin(), dir, bin(), dir, qdir);
    CHECK(system(cmd) == 0);
    size_t B = 2, T = 40, na = 0, nb = 0, nc = 0;
    int32_t *tok = malloc(B * T * sizeof *tok);
    float *w = malloc(B * T * sizeof *w);
    for (size_t i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 7919) % 200), w[i] = 1.0f;
    float *a = lora_grads(dir, true, tok, w, B, T, &na), *b = lora_grads(qdir, false, tok, w, B, T, &nb);
    float *c = lora_grads(dir, false, tok, w, B, T, &nc);
    CHECK(a && b && c && na == nb && na == nc && na > 0);
    if (a && b && c && na == nb && na == nc) {
        size_t worst = 0;
        double wd = 0, s = 0, dplain = 0;
        for (size_t i = 0; i < na; i++) {
            double d = fabs((double)a[i] - (double)b[i]);
            if (d > wd) wd = d, worst = i;
            s += fabs(a[i]), dplain += fabs((double)a[i] - (double)c[i]);
        }
        CHECK_MSG(wd == 0, "QLoRA gradient %zu is %.9g, LoRA on the NF4 model's %.9g", worst, a[worst], b[worst]);
        CHECK_MSG(s > 0, "the gradients are all zero");
        CHECK_MSG(dplain > 0, "QLoRA gave the gradients of the unquantized base: the NF4 base is not used");
    }
    free(a), free(b), free(c), free(tok), free(w);
}

MK_TEST(train_refuses_other_families)
{
    char dir[1024], cmd[1400];
    snprintf(dir, sizeof dir, "%s/train-gemma2", mk_test_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' synth '%s' -q -f --arch gemma2 --hidden 32 --layers 1 --heads 2 --intermediate 64 "
                              "--vocab 64 --dtype float32", bin(), dir);
    CHECK(system(cmd) == 0);
    mk_source *src = NULL;
    mk_model_config cfg;
    mk_nn_train *t = NULL;
    CHECK_OK(mk_model_open(dir, &src));
    if (!src) return;
    CHECK_OK(mk_model_config_of_source(src, &cfg));
    CHECK_ERR(mk_nn_train_open(src, &cfg, &t), MK_ERR_UNSUPPORTED, "no backward pass for gemma2 yet (soft-capping");
    mk_model_config_free(&cfg);
    mk_source_close(src);
}

/* ---- data ---------------------------------------------------------------------------------- */

static const char word_tok[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false}],"
    " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"post_processor\": null, \"decoder\": null,"
    " \"model\": {\"type\": \"WordLevel\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2,"
    " \"a\": 3, \"b\": 4}}}";

MK_TEST(train_data_packs_with_prompt_weights)
{
    mk_tokenizer *t = NULL;
    CHECK_OK(mk_tokenizer_load(word_tok, sizeof word_tok - 1, "test tokenizer", &t));
    if (!t) return;
    CHECK_OK(mk_tokenizer_load_config(t, "{\"eos_token\": \"</s>\"}", 21, "test config"));
    const char *jl = "{\"prompt\": \"a b\", \"response\": \"b\"}\n\n  {\"text\": \"a\"}\r\n";
    mk_train_data d;
    CHECK_OK(mk_train_data_load("d.jsonl", jl, strlen(jl), true, t, 4, 0.25, &d));
    /* prompt a b (0.25), response b, EOS; text a, EOS; then padding (weight 0) to 2 rows of 4 */
    static const int32_t want_t[8] = {3, 4, 4, 2, 3, 2, 2, 2};
    static const float want_w[8] = {0.25f, 0.25f, 1, 1, 1, 1, 0, 0};
    CHECK_EQ_INT(d.n_rows, 2);
    CHECK_EQ_INT(d.n_tokens, 6);
    CHECK_EQ_INT(d.n_docs, 2);
    if (d.n_rows == 2) {
        CHECK(memcmp(d.tok, want_t, sizeof want_t) == 0);
        CHECK(memcmp(d.w, want_w, sizeof want_w) == 0);
    }
    /* each epoch a permutation of the rows, the same for the same seed */
    size_t seen = 0, r, r2;
    for (uint64_t k = 0; k < 2; k++) {
        CHECK_OK(mk_train_data_row(&d, 9, 2 + k, &r));
        seen |= (size_t)1 << r;
    }
    CHECK_EQ_INT(seen, 3);
    CHECK_OK(mk_train_data_row(&d, 9, 0, &r));
    CHECK_OK(mk_train_data_row(&d, 9, 0, &r2));
    CHECK_EQ_INT(r, r2);
    mk_train_data_free(&d);
    const char *bad = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"prompt\": 3, \"response\": \"b\"}\n";
    CHECK_ERR(mk_train_data_load("d.jsonl", bad, strlen(bad), true, t, 4, 0, &d), MK_ERR_FORMAT, "d.jsonl:3: the object has no");
    CHECK_ERR(mk_train_data_load("d.jsonl", "\n{\"text\":\n", 10, true, t, 4, 0, &d), MK_ERR_FORMAT, "d.jsonl:2: not a JSON");
    CHECK_ERR(mk_train_data_load("e.txt", " \n\t", 3, false, t, 4, 0, &d), MK_ERR_FORMAT, "e.txt: no training text");
    CHECK_OK(mk_train_data_load("p.txt", "a b a b a", 9, false, t, 2, 0, &d));
    CHECK_EQ_INT(d.n_rows, 3); /* 5 words and EOS */
    mk_train_data_free(&d);
    mk_tokenizer_free(t);
}
