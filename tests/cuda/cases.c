/* cases.c - see cases.h. */
#include "cases.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/mk_dtype.h"
#include "../../core/mk_io.h"
#include "../../core/mk_rng.h"
#include "../../formats/model.h"
#include "../../nn/cuda/cu_train.h"
#include "../../nn/cuda/mk_cuda.h"
#include "../../nn/cuda/mk_cuda16.h"
#include "../../nn/cuda/mk_cuda_flash.h"
#include "../../nn/cuda/mk_cuda_norm.h"
#include "../../nn/ops_bwd.h"
#include "../../train/optim.h"
#include "../../train/train.h"

typedef struct ctx {
    const mk_cu_tol *tol;
    mk_cu_report report;
    int failed;
} ctx;

static float *rnd(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof *x + 1);
    mk_rng key = mk_rng_key(seed, "cuda-cases");
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * mk_rng_uniform(key, 0, i);
    return x;
}

/* host -> a new device copy */
static void *dput(const void *h, size_t bytes)
{
    void *d = NULL;
    if (mk_cu_alloc(&d, bytes) != MK_OK) return NULL;
    mk_cu_put(d, h, bytes);
    return d;
}

/* The worst |got - want| over max |want| of n floats (detail: where); NaN is worst. */
static double worst_err(const float *got, const float *want, size_t n, const char *prec, double tol, char *detail, size_t cap)
{
    double big = 0, worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)want[i]) > big) big = fabs((double)want[i]);
    if (big == 0) big = 1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / big;
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e, wi = i;
    }
    if (n)
        snprintf(detail, cap, "%s: worst error %.3g of max |want| %.3g (tolerance %.3g) at [%zu]: got %.9g want %.9g", prec, worst,
                 big, tol, wi, (double)got[wi], (double)want[wi]);
    return worst;
}

float *mk_cu_rnd(size_t n, uint64_t seed, float lo, float hi) { return rnd(n, seed, lo, hi); }
void *mk_cu_dput(const void *h, size_t bytes) { return dput(h, bytes); }
double mk_cu_worst_err(const float *got, const float *want, size_t n, const char *prec, double tol, char *detail, size_t cap)
{
    return worst_err(got, want, n, prec, tol, detail, cap);
}

static void check(ctx *c, bool ok, const char *what, const char *detail)
{
    if (!ok) c->failed++;
    c->report(ok, what, detail);
}

/* Compare the device's n floats at dev with want; report under `what`. */
static void cmp(ctx *c, const char *what, const float *dev, const float *want, size_t n, double tol)
{
    float *got = malloc(n * sizeof *got + 1);
    char detail[256] = "";
    mk_status s = mk_cu_sync();
    if (s == MK_OK) s = mk_cu_get(got, dev, n * sizeof *got);
    if (s != MK_OK) check(c, false, what, mk_errmsg());
    else check(c, worst_err(got, want, n, c->tol->name, tol, detail, sizeof detail) <= tol, what, detail);
    free(got);
}

static void embed_case(ctx *c)
{
    size_t T = 37, H = 300, V = 11;
    int32_t tok[37];
    for (size_t t = 0; t < T; t++) tok[t] = (int32_t)((t * 7 + 3) % V); /* repeated ids: the backward sums them */
    float *emb = rnd(V * H, 1, -1, 1), *dx = rnd(T * H, 2, -1, 1), *x = malloc(T * H * sizeof *x), *de = rnd(V * H, 3, -1, 1);
    float *demb = dput(de, V * H * sizeof *de), *demb0 = dput(emb, V * H * sizeof *emb), *dxd = dput(dx, T * H * sizeof *dx);
    int32_t *dtok = dput(tok, sizeof tok);
    float *dxo = NULL;
    mk_cu_alloc((void **)&dxo, T * H * sizeof *dxo);
    mk_cu_embed_fwd(dtok, T, H, demb0, dxo);
    for (size_t t = 0; t < T; t++) memcpy(x + t * H, emb + (size_t)tok[t] * H, H * sizeof *x);
    cmp(c, "embedding forward", dxo, x, T * H, c->tol->elem);
    mk_cu_embed_bwd(dtok, T, H, dxd, demb);
    mk_nn_embed_bwd(tok, T, H, dx, de);
    cmp(c, "embedding backward (mk_nn_embed_bwd)", demb, de, V * H, c->tol->elem);
    mk_cu_free(demb), mk_cu_free(demb0), mk_cu_free(dxd), mk_cu_free(dtok), mk_cu_free(dxo);
    free(emb), free(dx), free(x), free(de);
}

static void rmsnorm_case(ctx *c, size_t T, size_t d)
{
    float eps = 1e-5f;
    float *x = rnd(T * d, 10 + d, -2, 2), *w = rnd(d, 11 + d, 0.5f, 1.5f), *dy = rnd(T * d, 12 + d, -1, 1);
    float *dx = rnd(T * d, 13 + d, -1, 1), *dw = rnd(d, 14 + d, -1, 1), *out = malloc(T * d * sizeof *out);
    float *rstd = malloc(T * sizeof *rstd);
    float *xd = dput(x, T * d * 4), *wd = dput(w, d * 4), *dyd = dput(dy, T * d * 4), *dxd = dput(dx, T * d * 4),
          *dwd = dput(dw, d * 4), *od = NULL, *rd = NULL;
    mk_cu_alloc((void **)&od, T * d * 4), mk_cu_alloc((void **)&rd, T * 4);
    char what[96];
    mk_cu_rmsnorm(od, xd, wd, T, d, eps, rd);
    mk_nn_rmsnorm(out, x, w, T, d, eps, false);
    snprintf(what, sizeof what, "rmsnorm forward [%zu, %zu] (mk_nn_rmsnorm)", T, d);
    cmp(c, what, od, out, T * d, c->tol->reduce);
    mk_cu_rmsnorm_bwd(xd, wd, dyd, T, d, eps, dxd, dwd, rd);
    mk_nn_rmsnorm_bwd(x, w, dy, T, d, eps, dx, dw, rstd);
    snprintf(what, sizeof what, "rmsnorm backward dx [%zu, %zu] (mk_nn_rmsnorm_bwd)", T, d);
    cmp(c, what, dxd, dx, T * d, c->tol->reduce);
    snprintf(what, sizeof what, "rmsnorm backward dw [%zu] (mk_nn_rmsnorm_bwd)", d);
    cmp(c, what, dwd, dw, d, c->tol->reduce);
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(dyd), mk_cu_free(dxd), mk_cu_free(dwd), mk_cu_free(od), mk_cu_free(rd);
    free(x), free(w), free(dy), free(dx), free(dw), free(out), free(rstd);
}

static void rope_case(ctx *c)
{
    size_t T = 19, nh = 3, hd = 16;
    mk_rope rp = {.type = MK_ROPE_DEFAULT, .theta = 10000, .factor = 1, .partial_rotary = 1};
    mk_nn_rope_tab tab;
    if (mk_nn_rope_init(&tab, &rp, hd, 64, T) != MK_OK) {
        check(c, false, "rope table", mk_errmsg());
        return;
    }
    float *x = rnd(T * nh * hd, 20, -1, 1), *xd = dput(x, T * nh * hd * 4);
    float *cd = dput(tab.cos, T * tab.half * 4), *sd = dput(tab.sin, T * tab.half * 4);
    for (int inv = 0; inv < 2; inv++) {
        mk_cu_rope(xd, T, nh, hd, tab.half, cd, sd, inv);
        mk_nn_rope_rotate(x, T, nh, hd, &tab, inv);
        cmp(c, inv ? "rope backward (mk_nn_rope_rotate inverse)" : "rope forward (mk_nn_rope_rotate)", xd, x, T * nh * hd,
            c->tol->elem);
    }
    mk_cu_free(xd), mk_cu_free(cd), mk_cu_free(sd);
    free(x);
    mk_nn_rope_free(&tab);
}

static void attention_case(ctx *c, size_t T, size_t nh, size_t nkv, size_t hd, long window)
{
    size_t qn = T * nh * hd, kn = T * nkv * hd, pn = nh * T * T;
    float scale = 3.0f / sqrtf((float)hd); /* sharp enough that a mask error shows */
    float *q = rnd(qn, 30 + T, -1, 1), *k = rnd(kn, 31 + T, -1, 1), *v = rnd(kn, 32 + T, -1, 1), *dout = rnd(qn, 33 + T, -1, 1);
    float *out = malloc(qn * 4), *p = malloc(pn * 4), *dq = malloc(qn * 4), *dk = rnd(kn, 34, -1, 1), *dv = rnd(kn, 35, -1, 1);
    float *scr = malloc(mk_nn_attention_bwd_scratch(T) * 4);
    float *qd = dput(q, qn * 4), *kd = dput(k, kn * 4), *vd = dput(v, kn * 4), *dod = dput(dout, qn * 4);
    float *dkd = dput(dk, kn * 4), *dvd = dput(dv, kn * 4), *outd = NULL, *pd = NULL, *dqd = NULL, *dsd = NULL;
    mk_cu_alloc((void **)&outd, qn * 4), mk_cu_alloc((void **)&pd, pn * 4), mk_cu_alloc((void **)&dqd, qn * 4);
    mk_cu_alloc((void **)&dsd, pn * 4);
    char what[128];
    mk_cu_attention(qd, kd, vd, T, nh, nkv, hd, scale, window, outd, pd);
    mk_nn_attention_train(q, k, v, T, nh, nkv, hd, scale, window, out, p);
    snprintf(what, sizeof what, "attention forward T %zu heads %zu/%zu window %ld (mk_nn_attention_train)", T, nh, nkv, window);
    cmp(c, what, outd, out, qn, c->tol->attn);
    snprintf(what, sizeof what, "attention probabilities T %zu heads %zu/%zu window %ld", T, nh, nkv, window);
    cmp(c, what, pd, p, pn, c->tol->attn);
    /* the backward from the CPU's probabilities, so only the backward's own error counts */
    mk_cu_put(pd, p, pn * 4);
    mk_cu_attention_bwd(qd, kd, vd, pd, dod, T, nh, nkv, hd, scale, dqd, dkd, dvd, dsd);
    mk_nn_attention_bwd(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scr);
    static const char *const nm[3] = {"dq", "dk", "dv"};
    const float *gd[3] = {dqd, dkd, dvd}, *gw[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "attention backward %s T %zu heads %zu/%zu window %ld (mk_nn_attention_bwd)", nm[i], T, nh,
                 nkv, window);
        cmp(c, what, gd[i], gw[i], i ? kn : qn, c->tol->attn);
    }
    mk_cu_free(qd), mk_cu_free(kd), mk_cu_free(vd), mk_cu_free(dod), mk_cu_free(dkd), mk_cu_free(dvd), mk_cu_free(outd);
    mk_cu_free(pd), mk_cu_free(dqd), mk_cu_free(dsd);
    free(q), free(k), free(v), free(dout), free(out), free(p), free(dq), free(dk), free(dv), free(scr);
}

/* a gated activation (SwiGLU, GeGLU) forward and backward against its CPU functions */
typedef void (*gated_fn)(const float *gate, const float *up, float *out, size_t n);
typedef void (*gated_bwd_fn)(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);
static void gated_case(ctx *c, const char *name, const char *cpu, gated_fn cu, gated_fn ref, gated_bwd_fn cu_bwd,
                       gated_bwd_fn ref_bwd, const char *cpu_bwd, uint64_t seed)
{
    size_t n = 1000;
    float *g = rnd(n, seed, -6, 6), *u = rnd(n, seed + 1, -2, 2), *dout = rnd(n, seed + 2, -1, 1);
    float *o = malloc(n * 4), *dg = malloc(n * 4), *du = malloc(n * 4);
    float *gd = dput(g, n * 4), *ud = dput(u, n * 4), *dod = dput(dout, n * 4), *od = NULL, *dgd = NULL, *dud = NULL;
    mk_cu_alloc((void **)&od, n * 4), mk_cu_alloc((void **)&dgd, n * 4), mk_cu_alloc((void **)&dud, n * 4);
    char what[128];
    cu(gd, ud, od, n);
    ref(g, u, o, n);
    snprintf(what, sizeof what, "%s forward (%s)", name, cpu);
    cmp(c, what, od, o, n, c->tol->elem);
    cu_bwd(gd, ud, dod, n, dgd, dud);
    ref_bwd(g, u, dout, n, dg, du);
    snprintf(what, sizeof what, "%s backward dgate (%s)", name, cpu_bwd);
    cmp(c, what, dgd, dg, n, c->tol->elem);
    snprintf(what, sizeof what, "%s backward dup (%s)", name, cpu_bwd);
    cmp(c, what, dud, du, n, c->tol->elem);
    mk_cu_free(gd), mk_cu_free(ud), mk_cu_free(dod), mk_cu_free(od), mk_cu_free(dgd), mk_cu_free(dud);
    free(g), free(u), free(dout), free(o), free(dg), free(du);
}
static void silu_gated(const float *gate, const float *up, float *out, size_t n) { mk_nn_act_gated(MK_ACT_SILU, gate, up, out, n); }
static void gelu_gated(const float *gate, const float *up, float *out, size_t n)
{
    mk_nn_act_gated(MK_ACT_GELU_TANH, gate, up, out, n);
}

static void xent_case(ctx *c)
{
    size_t n = 9, V = 700;
    float *x = rnd(n * V, 50, -8, 8), *wt = rnd(n, 51, 0, 2);
    wt[3] = 0; /* a prompt token: no gradient */
    int32_t tg[9];
    for (size_t i = 0; i < n; i++) tg[i] = (int32_t)((i * 131 + 5) % V);
    double nll[9], nlld_h[9];
    float *xd = dput(x, n * V * 4), *wd = dput(wt, n * 4);
    int32_t *tgd = dput(tg, sizeof tg);
    double *nlld = NULL;
    mk_cu_alloc((void **)&nlld, sizeof nll);
    mk_cu_xent(xd, n, V, tgd, wd, 0.25f, nlld);
    mk_nn_xent(x, n, V, tg, wt, 0.25f, nll);
    cmp(c, "cross-entropy gradient (mk_nn_xent)", xd, x, n * V, c->tol->reduce);
    float a[9], b[9];
    mk_cu_sync();
    mk_cu_get(nlld_h, nlld, sizeof nll);
    for (size_t i = 0; i < n; i++) a[i] = (float)nlld_h[i], b[i] = (float)nll[i];
    float *ad = dput(a, sizeof a);
    cmp(c, "cross-entropy loss per token (mk_nn_xent)", ad, b, n, c->tol->reduce);
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(tgd), mk_cu_free(nlld), mk_cu_free(ad);
    free(x), free(wt);
}

static void linear_case(ctx *c, size_t T, size_t in, size_t out)
{
    float *x = rnd(T * in, 60 + in, -1, 1), *w = rnd(out * in, 61 + in, -1, 1), *dy = rnd(T * out, 62 + in, -1, 1);
    float *dx = rnd(T * in, 63, -1, 1), *dw = rnd(out * in, 64, -1, 1), *y = malloc(T * out * 4);
    float *xd = dput(x, T * in * 4), *wd = dput(w, out * in * 4), *dyd = dput(dy, T * out * 4), *dxd = dput(dx, T * in * 4);
    float *dwd = dput(dw, out * in * 4), *yd = NULL;
    mk_cu_alloc((void **)&yd, T * out * 4);
    char what[96];
    mk_cu_linear(xd, T, in, wd, out, 0.0f, yd);
    mk_nn_linear_ref(x, T, in, w, out, false, NULL, y);
    snprintf(what, sizeof what, "linear forward [%zu, %zu] x [%zu, %zu]^T (mk_nn_linear_ref)", T, in, out, in);
    cmp(c, what, yd, y, T * out, c->tol->matmul);
    mk_cu_linear_bwd(xd, T, in, wd, out, dyd, dxd, dwd);
    mk_nn_linear_bwd_ref(x, T, in, w, out, dy, dx, dw, NULL);
    snprintf(what, sizeof what, "linear backward dx [%zu, %zu] (mk_nn_linear_bwd_ref)", T, in);
    cmp(c, what, dxd, dx, T * in, c->tol->matmul);
    snprintf(what, sizeof what, "linear backward dw [%zu, %zu] (mk_nn_linear_bwd_ref)", out, in);
    cmp(c, what, dwd, dw, out * in, c->tol->matmul);
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(dyd), mk_cu_free(dxd), mk_cu_free(dwd), mk_cu_free(yd);
    free(x), free(w), free(dy), free(dx), free(dw), free(y);
}

static void optim_case(ctx *c)
{
    size_t n = 70000; /* more than one block per thread of the norm's first pass */
    mk_adamw o = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
    float *w = rnd(n, 70, -1, 1), *g = rnd(n, 71, -1, 1), *m = rnd(n, 72, -0.1f, 0.1f), *v = rnd(n, 73, 0, 0.01f);
    float *wd = dput(w, n * 4), *gd = dput(g, n * 4), *md = dput(m, n * 4), *vd = dput(v, n * 4);
    uint16_t *w16d = NULL, *w16 = malloc(n * 2);
    mk_cu_alloc((void **)&w16d, n * 2);
    for (int step = 1; step <= 3; step++) {
        bool decay = step != 2;
        mk_cu_adamw(o.beta1, o.beta2, o.eps, o.weight_decay, 1e-3, step, decay, wd, gd, md, vd, w16d, n);
        mk_adamw_step(&o, 1e-3, step, decay, w, g, m, v, n);
    }
    cmp(c, "adamw weights after 3 steps (mk_adamw_step)", wd, w, n, c->tol->elem);
    cmp(c, "adamw first moment (mk_adamw_step)", md, m, n, c->tol->elem);
    cmp(c, "adamw second moment (mk_adamw_step)", vd, v, n, c->tol->elem);
    /* the bf16 copy is the f32 weights rounded to nearest even */
    float *wb = malloc(n * 4), *wr = malloc(n * 4);
    mk_cu_sync();
    mk_cu_get(w16, w16d, n * 2);
    mk_cu_get(wr, wd, n * 4);
    for (size_t i = 0; i < n; i++) wb[i] = mk_bf16_to_f32(w16[i]), wr[i] = mk_bf16_to_f32(mk_f32_to_bf16(wr[i]));
    float *wbd = dput(wb, n * 4);
    cmp(c, "adamw bf16 weight copy (mk_f32_to_bf16)", wbd, wr, n, 0.0);
    /* the global norm and clipping */
    double *part = NULL, norm = 0;
    mk_cu_alloc((void **)&part, mk_cu_norm_parts(n) * sizeof *part);
    mk_status s = mk_cu_grad_norm(gd, n, part, &norm);
    double want = mk_grad_norm(g, n);
    double e = fabs(norm - want) / want;
    char detail[160];
    snprintf(detail, sizeof detail, "%s: got %.12g want %.12g, relative error %.3g (tolerance %.3g)%s%s", c->tol->name, norm, want,
             e, c->tol->reduce, s ? ": " : "", s ? mk_errmsg() : "");
    check(c, s == MK_OK && e <= c->tol->reduce, "global gradient norm (mk_grad_norm)", detail);
    float cg = mk_cu_grad_clip(gd, n, want, 1.0), cw = mk_grad_clip(g, n, want, 1.0);
    snprintf(detail, sizeof detail, "coefficient %.9g want %.9g", (double)cg, (double)cw);
    check(c, cg == cw, "clip coefficient (mk_grad_clip)", detail);
    cmp(c, "clipped gradient (mk_grad_clip)", gd, g, n, c->tol->elem);
    mk_cu_free(wd), mk_cu_free(gd), mk_cu_free(md), mk_cu_free(vd), mk_cu_free(w16d), mk_cu_free(wbd), mk_cu_free(part);
    free(w), free(g), free(m), free(v), free(w16), free(wb), free(wr);
}

static void run_cases16(ctx *c);

int mk_cu_run_cases(const mk_cu_tol *tol, mk_cu_report report)
{
    ctx c = {tol, report, 0};
    embed_case(&c);
    rmsnorm_case(&c, 5, 64);
    rmsnorm_case(&c, 3, 1000); /* rows longer than a block */
    rope_case(&c);
    attention_case(&c, 17, 4, 2, 16, 0);
    attention_case(&c, 40, 6, 2, 8, 5);
    attention_case(&c, 300, 2, 1, 8, 0); /* rows longer than a block */
    gated_case(&c, "swiglu", "mk_nn_act_gated silu", mk_cu_swiglu, silu_gated, mk_cu_swiglu_bwd, mk_nn_swiglu_bwd, "mk_nn_swiglu_bwd",
               40);
    xent_case(&c);
    linear_case(&c, 7, 33, 20);
    linear_case(&c, 64, 96, 130);
    optim_case(&c);
    run_cases16(&c);
    return c.failed;
}

/* ---- a tiny model: one pass's gradients and 10 AdamW steps against the CPU trainer ---- */

/* The hyperparameters of tests/golden/train/ (cosine schedule with warmup, accumulation over
 * two micro-batches, clipping, weight decay). */
#define STEPS 10
#define ACCUM 2
#define B 2
#define SEQ 16
static const double LR = 3e-3, BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8, WD = 0.1, CLIP = 0.5;

bool mk_cu_tmodel_synth(const char *mk_bin, const char *dir, const char *args, char *err, size_t cap)
{
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "'%s' synth '%s' -q -f --dtype float32 %s", mk_bin, dir, args);
    if (system(cmd) == 0) return true;
    snprintf(err, cap, "%.1000s failed", cmd);
    return false;
}

mk_status mk_cu_tmodel_open(const char *dir, mk_cu_tmodel *m)
{
    memset(m, 0, sizeof *m);
    mk_status s = mk_model_open(dir, &m->src);
    if (s == MK_OK) s = mk_model_config_of_source(m->src, &m->cfg), m->has_cfg = s == MK_OK;
    if (s == MK_OK) s = mk_nn_train_open(m->src, &m->cfg, &m->t);
    return s;
}

void mk_cu_tmodel_close(mk_cu_tmodel *m)
{
    mk_nn_train_close(m->t);
    if (m->hold_free) m->hold_free(m->hold);
    if (m->has_cfg) mk_model_config_free(&m->cfg);
    mk_source_close(m->src);
    memset(m, 0, sizeof *m);
}

/* The step's data: tokens below V, weight 0.25 on each row's first 3 (a prompt), else 1. */
static void batch(size_t V, uint64_t seed, int32_t *tok, float *w)
{
    mk_rng key = mk_rng_key(seed, "cuda-batch");
    for (size_t i = 0; i < B * SEQ; i++) {
        tok[i] = (int32_t)(mk_rng_uniform(key, 0, i) * (float)V) % (int32_t)V;
        w[i] = i % SEQ < 3 ? 0.25f : 1.0f;
    }
}

static double wsum(const float *w)
{
    double s = 0;
    for (size_t r = 0; r < B; r++)
        for (size_t j = 1; j < SEQ; j++) s += w[r * SEQ + j];
    return s;
}

/* Every trained tensor of got against want; one report naming the worst tensor. */
static void cmp_tensors(ctx *c, const char *what, mk_nn_train *t, const float *got, const float *want, double tol)
{
    double worst = -1;
    char detail[512] = "", d[256];
    const char *wn = "";
    for (size_t i = 0; i < mk_nn_train_n_params(t); i++) {
        const mk_nn_param *p = mk_nn_train_param(t, i);
        double e = worst_err(got + p->off, want + p->off, p->numel, c->tol->name, tol, d, sizeof d);
        if (e > worst) worst = e, wn = p->name, snprintf(detail, sizeof detail, "%s", d);
    }
    char full[800];
    snprintf(full, sizeof full, "%zu tensors, worst %s: %s", mk_nn_train_n_params(t), wn, detail);
    check(c, worst <= tol, what, full);
}

static double weights_tol; /* the trained tensors after 10 steps (0: tol->grad; mk_cu_check_model) */

static void model_case(ctx *c, mk_cu_tmodel *m, const char *name, bool checkpointing)
{
    mk_nn_train *t = m->t;
    size_t V = mk_nn_train_vocab(t);
    uint64_t n = mk_nn_train_numel(t);
    mk_cu_train *g = NULL;
    char what[160], detail[256];
    mk_status s = mk_cu_train_open(t, B, SEQ, checkpointing, &g);
    snprintf(what, sizeof what, "%s: the CUDA trainer opens", name);
    check(c, s == MK_OK, what, s ? mk_errmsg() : "");
    if (s != MK_OK) return;
    float *gw = malloc(n * sizeof *gw), *gg = malloc(n * sizeof *gg), *mom = calloc(n, 4), *var = calloc(n, 4);
    float *cw = mk_nn_train_weights(t), *cg = mk_nn_train_grads(t);
    double closs[STEPS], gloss[STEPS];
    for (long st = 0; st < STEPS; st++) {
        double ctw = 0, cnll = 0, gnll = 0, gnorm = 0;
        int32_t toks[ACCUM][B * SEQ];
        float ws[ACCUM][B * SEQ];
        for (int a = 0; a < ACCUM; a++) batch(V, (uint64_t)(st * ACCUM + a), toks[a], ws[a]), ctw += wsum(ws[a]);
        memset(cg, 0, n * sizeof *cg);
        mk_cu_train_zero_grad(g);
        for (int a = 0; a < ACCUM && s == MK_OK; a++) {
            s = mk_nn_train_pass(t, toks[a], ws[a], B, SEQ, (float)(1.0 / ctw), checkpointing, true, &cnll, NULL);
            if (s == MK_OK) s = mk_cu_train_pass(g, toks[a], ws[a], B, SEQ, (float)(1.0 / ctw), true, &gnll);
        }
        if (s != MK_OK) break;
        closs[st] = cnll / ctw, gloss[st] = gnll / ctw;
        if (st == 0) { /* one step's gradients (both accumulated over the two micro-batches) */
            s = mk_cu_train_get(g, NULL, gg);
            snprintf(what, sizeof what, "%s: one step's gradients (mk_nn_train_pass)", name);
            if (s == MK_OK) cmp_tensors(c, what, t, gg, cg, c->tol->grad);
        }
        double lr = mk_sched_lr(MK_SCHED_COSINE, LR, st, 3, STEPS);
        double cnorm = mk_grad_norm(cg, n);
        mk_grad_clip(cg, n, cnorm, CLIP);
        mk_adamw o = {BETA1, BETA2, EPS, WD};
        for (size_t i = 0; i < mk_nn_train_n_params(t); i++) {
            const mk_nn_param *p = mk_nn_train_param(t, i);
            mk_adamw_step(&o, lr, st + 1, p->decay, cw + p->off, cg + p->off, mom + p->off, var + p->off, p->numel);
        }
        if (s == MK_OK) s = mk_cu_train_step(g, BETA1, BETA2, EPS, WD, lr, st + 1, CLIP, &gnorm);
        if (s == MK_OK && st == 0) {
            double e = fabs(gnorm - cnorm) / cnorm;
            snprintf(detail, sizeof detail, "%s: got %.9g want %.9g, relative error %.3g (tolerance %.3g)", c->tol->name, gnorm,
                     cnorm, e, c->tol->grad);
            snprintf(what, sizeof what, "%s: the first step's gradient norm (mk_grad_norm)", name);
            check(c, e <= c->tol->grad, what, detail);
        }
    }
    snprintf(what, sizeof what, "%s: the run", name);
    if (s != MK_OK) check(c, false, what, mk_errmsg());
    else {
        float a[STEPS], b[STEPS];
        for (int i = 0; i < STEPS; i++) a[i] = (float)gloss[i], b[i] = (float)closs[i];
        double e = worst_err(a, b, STEPS, c->tol->name, c->tol->loss, detail, sizeof detail);
        char full[400];
        snprintf(full, sizeof full, "losses %.6f .. %.6f; %s", closs[0], closs[STEPS - 1], detail);
        snprintf(what, sizeof what, "%s: the losses of 10 AdamW steps", name);
        check(c, e <= c->tol->loss, what, full);
        s = mk_cu_train_get(g, gw, NULL);
        snprintf(what, sizeof what, "%s: the weights after 10 steps", name);
        if (s == MK_OK) cmp_tensors(c, what, t, gw, cw, weights_tol > 0 ? weights_tol : c->tol->grad);
        else check(c, false, what, mk_errmsg());
    }
    mk_cu_train_close(g);
    free(gw), free(gg), free(mom), free(var);
}

static void loop_case(ctx *c, const char *dir, const char *tmpdir, bool bf16);
static void run_model16(ctx *c, const char *mk_bin, const char *tmpdir);

int mk_cu_check_model(mk_cu_tmodel *m, const char *name, bool checkpointing, double wtol, const mk_cu_tol *tol,
                      mk_cu_report report)
{
    ctx c = {tol, report, 0};
    weights_tol = wtol;
    model_case(&c, m, name, checkpointing);
    weights_tol = 0;
    return c.failed;
}

static mk_status (*loop_open)(const char *dir, mk_cu_tmodel *m) = mk_cu_tmodel_open;

int mk_cu_check_loop(const char *dir, const char *tmpdir, mk_status (*open)(const char *dir, mk_cu_tmodel *m),
                     const mk_cu_tol *tol, mk_cu_report report)
{
    ctx c = {tol, report, 0};
    loop_open = open;
    loop_case(&c, dir, tmpdir, false);
    loop_open = mk_cu_tmodel_open;
    return c.failed;
}

/* config.json of the model in dir with "sliding_window": w */
static bool set_window(const char *dir, int w)
{
    char p[1100], *text = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/config.json", dir);
    cJSON *cfg = mk_read_file(p, 1 << 20, &text, &len) == MK_OK ? cJSON_Parse(text) : NULL;
    free(text);
    if (!cfg) return false;
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "sliding_window");
    cJSON_AddNumberToObject(cfg, "sliding_window", w);
    char *out = cJSON_Print(cfg);
    bool ok = out && mk_write_file_atomic(p, out, strlen(out)) == MK_OK;
    free(out);
    cJSON_Delete(cfg);
    return ok;
}

int mk_cu_run_model(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report report)
{
    ctx c = {tol, report, 0};
    static const struct {
        const char *name, *extra;
        bool ckpt;
        int window; /* sliding_window written into config.json (0: none) */
    } cases[] = {{"llama", "--arch llama", false, 0},
                 {"llama tied, checkpointing", "--arch llama --tie", true, 0},
                 {"mistral, sliding window 5", "--arch mistral", false, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[1024], args[256], err[1200] = "";
        snprintf(dir, sizeof dir, "%s/cuda-model-%zu", tmpdir, i);
        snprintf(args, sizeof args, "--kv-heads 2 --hidden 32 --layers 2 --heads 4 --intermediate 64 --vocab 64 --std 0.2 "
                                    "--max-position 64 --seed 21 %s", cases[i].extra);
        mk_cu_tmodel m = {0};
        bool made = mk_cu_tmodel_synth(mk_bin, dir, args, err, sizeof err) &&
                    (!cases[i].window || set_window(dir, cases[i].window)) && mk_cu_tmodel_open(dir, &m) == MK_OK;
        if (!made) {
            check(&c, false, cases[i].name, err[0] ? err : mk_errmsg());
            mk_cu_tmodel_close(&m);
            continue;
        }
        model_case(&c, &m, cases[i].name, cases[i].ckpt);
        mk_cu_tmodel_close(&m);
        if (i == 0) loop_case(&c, dir, tmpdir, false);
    }
    run_model16(&c, mk_bin, tmpdir);
    return c.failed;
}

/* ---- the finetune loop (train/train.h) with the device's trainer ---- */

/* A fresh trainer on dir (bf16: mixed precision); run o over d; *w: a copy of the trained weights (malloc'd). */
static mk_status loop_run(const char *dir, bool bf16, mk_train_data *d, const mk_train_opts *o, mk_train_result *r, float **w,
                          uint64_t *n)
{
    mk_cu_tmodel m;
    memset(r, 0, sizeof *r);
    *w = NULL;
    mk_status s = loop_open(dir, &m);
    if (s == MK_OK && bf16) s = mk_nn_train_set_bf16(m.t);
    if (s == MK_OK) s = mk_train_run(m.t, d, o, NULL, r);
    if (s == MK_OK) {
        *n = mk_nn_train_numel(m.t);
        *w = malloc(*n * sizeof **w);
        memcpy(*w, mk_nn_train_weights(m.t), *n * sizeof **w);
    }
    mk_cu_tmodel_close(&m);
    return s;
}

static void loop_case(ctx *c, const char *dir, const char *tmpdir, bool bf16)
{
    const char *pre = bf16 ? "bf16 " : "";
    char what[200];
    mk_train_data d = {0};
    d.n_rows = 8, d.seq = SEQ, d.n_docs = 1, d.n_tokens = 8 * SEQ;
    d.tok = malloc(d.n_rows * SEQ * sizeof *d.tok), d.w = malloc(d.n_rows * SEQ * sizeof *d.w);
    for (size_t k = 0; k < d.n_rows / B; k++) batch(64, 100 + k, d.tok + k * B * SEQ, d.w + k * B * SEQ);
    char ckpt[1100];
    snprintf(ckpt, sizeof ckpt, "%s/cuda-loop.checkpoint", tmpdir);
    mk_train_opts o = {6, 2, LR, CLIP, MK_SCHED_COSINE, {BETA1, BETA2, EPS, WD}, B, ACCUM, 7, false, 0, 0, NULL, false, 0, NULL};
    mk_train_result rc, rg, r1, r2;
    float *wc = NULL, *wg = NULL, *w1 = NULL, *w2 = NULL;
    uint64_t n = 0;
    char detail[400];
    mk_status s = loop_run(dir, bf16, &d, &o, &rc, &wc, &n);
    o.device = &mk_cu_train_impl;
    if (s == MK_OK) s = loop_run(dir, bf16, &d, &o, &rg, &wg, &n);
    if (s == MK_OK) { /* stopped after 3 steps, then resumed from the checkpoint */
        o.ckpt_path = ckpt, o.stop_after = 3;
        s = loop_run(dir, bf16, &d, &o, &r1, &w1, &n);
        o.resume = true, o.stop_after = 0;
        if (s == MK_OK) s = loop_run(dir, bf16, &d, &o, &r2, &w2, &n);
    }
    if (s != MK_OK) {
        snprintf(what, sizeof what, "%sfinetune loop on the device (mk_train_run)", pre);
        check(c, false, what, mk_errmsg());
    } else {
        float a[6], b[6];
        for (int i = 0; i < 6; i++) a[i] = (float)rg.log[i].loss, b[i] = (float)rc.log[i].loss;
        bool ok = rg.n_log == 6 && rc.n_log == 6 && worst_err(a, b, 6, c->tol->name, c->tol->loss, detail, sizeof detail) <= c->tol->loss;
        snprintf(what, sizeof what, "%sfinetune loop: 6 steps' losses on the device = on the CPU (mk_train_run)", pre);
        check(c, ok, what, detail);
        snprintf(what, sizeof what, "%sfinetune loop: the trained weights on the device = on the CPU", pre);
        check(c, worst_err(wg, wc, n, c->tol->name, c->tol->grad, detail, sizeof detail) <= c->tol->grad,
              what, detail);
        bool same = r1.stopped && r2.resumed_at == 3 && r2.n_log == 6 && memcmp(w2, wg, n * sizeof *wg) == 0;
        snprintf(detail, sizeof detail, "stopped %d, resumed at %ld, %ld steps, %s", r1.stopped, r2.resumed_at, r2.n_log,
                 memcmp(w2, wg, n * sizeof *wg) == 0 ? "the same bytes" : "other bytes");
        snprintf(what, sizeof what, "%sfinetune loop: --stop-after 3 then --resume on the device gives the bytes of an uninterrupted run",
                 pre);
        check(c, same, what, detail);
    }
    mk_train_result_free(&rc), mk_train_result_free(&rg), mk_train_result_free(&r1), mk_train_result_free(&r2);
    free(wc), free(wg), free(w1), free(w2);
    remove(ckpt);
    mk_train_data_free(&d);
}

/* ---- bf16 mixed precision (nn/cuda/mk_cuda16.h) against the CPU's bf16 kernels ---- */

/* n values rounded to bf16 (the inputs of a bf16 kernel) */
static float *rnd16(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = rnd(n, seed, lo, hi);
    mk_nn_round_bf16(x, n);
    return x;
}
/* a device copy of x as bf16 */
static uint16_t *dput16(const float *x, size_t n)
{
    uint16_t *h = malloc(n * 2 + 2), *d;
    for (size_t i = 0; i < n; i++) h[i] = mk_f32_to_bf16(x[i]);
    d = dput(h, n * 2);
    free(h);
    return d;
}
static void *dnew(size_t bytes)
{
    void *d = NULL;
    return mk_cu_alloc(&d, bytes) == MK_OK ? d : NULL;
}
/* cmp of a bf16 device buffer */
static void cmp16(ctx *c, const char *what, const uint16_t *dev, const float *want, size_t n, double tol)
{
    uint16_t *h = malloc(n * 2 + 2);
    float *f = malloc(n * 4 + 4);
    mk_status s = mk_cu_sync();
    if (s == MK_OK) s = mk_cu_get(h, dev, n * 2);
    for (size_t i = 0; s == MK_OK && i < n; i++) f[i] = mk_bf16_to_f32(h[i]);
    float *fd = s == MK_OK ? dput(f, n * 4) : NULL;
    if (s != MK_OK) check(c, false, what, mk_errmsg());
    else cmp(c, what, fd, want, n, tol);
    mk_cu_free(fd);
    free(h), free(f);
}

static void rmsnorm16_case(ctx *c, size_t T, size_t d)
{
    float *x = rnd(T * d, 110 + d, -2, 2), *w = rnd(d, 111 + d, 0.5f, 1.5f), *out = malloc(T * d * 4);
    float *xd = dput(x, T * d * 4), *wd = dput(w, d * 4);
    uint16_t *od = dnew(T * d * 2);
    char what[96];
    mk_cu_rmsnorm16(od, xd, wd, T, d, 1e-5f);
    mk_nn_rmsnorm(out, x, w, T, d, 1e-5f, false);
    mk_nn_round_bf16(out, T * d);
    snprintf(what, sizeof what, "bf16 rmsnorm forward [%zu, %zu] (mk_nn_rmsnorm, rounded)", T, d);
    cmp16(c, what, od, out, T * d, c->tol->b16);
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(od);
    free(x), free(w), free(out);
}

static void elem16_case(ctx *c)
{
    size_t n = 1000, T = 19, nh = 3, hd = 16;
    float *g = rnd16(n, 140, -6, 6), *u = rnd16(n, 141, -2, 2), *dout = rnd16(n, 142, -1, 1);
    float *o = malloc(n * 4), *dg = malloc(n * 4), *du = malloc(n * 4);
    float *gd = dput(g, n * 4), *ud = dput(u, n * 4), *dod = dput(dout, n * 4), *dgd = dnew(n * 4), *dud = dnew(n * 4);
    uint16_t *od = dnew(n * 2);
    mk_cu_swiglu16(gd, ud, od, n);
    mk_nn_swiglu_bf16(g, u, o, n);
    cmp16(c, "bf16 swiglu forward (mk_nn_swiglu_bf16)", od, o, n, c->tol->elem);
    mk_cu_swiglu16_bwd(gd, ud, dod, n, dgd, dud);
    mk_nn_swiglu_bwd_bf16(g, u, dout, n, dg, du);
    cmp(c, "bf16 swiglu backward dgate (mk_nn_swiglu_bwd_bf16)", dgd, dg, n, c->tol->elem);
    cmp(c, "bf16 swiglu backward dup (mk_nn_swiglu_bwd_bf16)", dud, du, n, c->tol->elem);
    /* rounding, the conversion and the two ways a rounded gradient is added */
    float *y = rnd(n, 143, -3, 3), *yd = dput(y, n * 4), *y2 = malloc(n * 4), *y2d = dput(y, n * 4);
    uint16_t *cd = dput16(dout, n);
    mk_cu_add16(yd, cd, n, false);
    mk_cu_add16(y2d, cd, n, true);
    for (size_t i = 0; i < n; i++) y2[i] = mk_dtype_round(MK_BF16, y[i] + dout[i]), y[i] += dout[i];
    cmp(c, "bf16 gradient added in f32 (mk_nn_linear_bwd_bf16's dx)", yd, y, n, c->tol->elem);
    cmp(c, "bf16 gradient summed in bf16 (mk_nn_linear_bwd_bf16's dx of a bf16 tensor)", y2d, y2, n, c->tol->elem);
    mk_cu_round(yd, n);
    mk_nn_round_bf16(y, n);
    cmp(c, "bf16 rounding (mk_nn_round_bf16)", yd, y, n, c->tol->elem);
    /* RoPE's backward onto a bf16 tensor */
    mk_rope rp = {.type = MK_ROPE_DEFAULT, .theta = 10000, .factor = 1, .partial_rotary = 1};
    mk_nn_rope_tab tab;
    if (mk_nn_rope_init(&tab, &rp, hd, 64, T) == MK_OK) {
        float *x = rnd16(T * nh * hd, 144, -1, 1), *xd = dput(x, T * nh * hd * 4);
        float *cosd = dput(tab.cos, T * tab.half * 4), *sind = dput(tab.sin, T * tab.half * 4);
        mk_cu_rope16_bwd(xd, T, nh, hd, tab.half, cosd, sind);
        mk_nn_rope_bwd_bf16(x, T, nh, hd, &tab);
        cmp(c, "bf16 rope backward (mk_nn_rope_bwd_bf16)", xd, x, T * nh * hd, c->tol->elem);
        mk_cu_free(xd), mk_cu_free(cosd), mk_cu_free(sind);
        free(x);
        mk_nn_rope_free(&tab);
    } else {
        check(c, false, "rope table", mk_errmsg());
    }
    mk_cu_free(gd), mk_cu_free(ud), mk_cu_free(dod), mk_cu_free(dgd), mk_cu_free(dud), mk_cu_free(od), mk_cu_free(yd);
    mk_cu_free(y2d), mk_cu_free(cd);
    free(g), free(u), free(dout), free(o), free(dg), free(du), free(y), free(y2);
}

static void attention16_case(ctx *c, size_t T, size_t nh, size_t nkv, size_t hd, long window)
{
    size_t qn = T * nh * hd, kn = T * nkv * hd, pn = nh * T * T;
    float scale = 3.0f / sqrtf((float)hd);
    float *q = rnd16(qn, 130 + T, -1, 1), *k = rnd16(kn, 131 + T, -1, 1), *v = rnd16(kn, 132 + T, -1, 1);
    float *dout = rnd16(qn, 133 + T, -1, 1), *out = malloc(qn * 4), *p = malloc(pn * 4), *dq = malloc(qn * 4);
    float *dk = calloc(kn, 4), *dv = malloc(kn * 4), *scr = malloc(mk_nn_attention_bf16_scratch(T, hd) * 4);
    float *qd = dput(q, qn * 4), *kd = dput(k, kn * 4), *vd = dput(v, kn * 4), *dod = dput(dout, qn * 4), *dkd = dput(dk, kn * 4);
    float *dvd = dnew(kn * 4), *pd = dnew(pn * 4), *dqd = dnew(qn * 4), *dsd = dnew(pn * 4);
    uint16_t *outd = dnew(qn * 2);
    char what[128];
    mk_cu_attention16(qd, kd, vd, T, nh, nkv, hd, scale, window, outd, pd);
    mk_nn_attention_train_bf16(q, k, v, T, nh, nkv, hd, scale, window, out, p, scr);
    snprintf(what, sizeof what, "bf16 attention forward T %zu heads %zu/%zu window %ld (mk_nn_attention_train_bf16)", T, nh, nkv,
             window);
    cmp16(c, what, outd, out, qn, c->tol->b16);
    snprintf(what, sizeof what, "bf16 attention probabilities T %zu heads %zu/%zu window %ld", T, nh, nkv, window);
    cmp(c, what, pd, p, pn, c->tol->b16);
    mk_cu_put(pd, p, pn * 4); /* the backward from the CPU's probabilities */
    mk_cu_attention16_bwd(qd, kd, vd, pd, dod, T, nh, nkv, hd, scale, dqd, dkd, dvd, dsd);
    mk_nn_attention_bwd_bf16(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scr);
    static const char *const nm[3] = {"dq", "dk", "dv"};
    const float *gd[3] = {dqd, dkd, dvd}, *gw[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "bf16 attention backward %s T %zu heads %zu/%zu window %ld (mk_nn_attention_bwd_bf16)", nm[i],
                 T, nh, nkv, window);
        cmp(c, what, gd[i], gw[i], i ? kn : qn, c->tol->b16);
    }
    mk_cu_free(qd), mk_cu_free(kd), mk_cu_free(vd), mk_cu_free(dod), mk_cu_free(dkd), mk_cu_free(dvd), mk_cu_free(outd);
    mk_cu_free(pd), mk_cu_free(dqd), mk_cu_free(dsd);
    free(q), free(k), free(v), free(dout), free(out), free(p), free(dq), free(dk), free(dv), free(scr);
}

static void linear16_case(ctx *c, size_t T, size_t in, size_t out, bool x_bf16)
{
    float *x = rnd16(T * in, 160 + in, -1, 1), *w = rnd16(out * in, 161 + in, -1, 1), *dy = rnd16(T * out, 162 + in, -1, 1);
    float *dx = rnd16(T * in, 163, -1, 1), *dw = rnd(out * in, 164, -1, 1), *y = malloc(T * out * 4);
    float *scr = malloc(mk_nn_linear_bwd_bf16_scratch(T, in) * 4);
    uint16_t *xd = dput16(x, T * in), *wd = dput16(w, out * in), *dyd = dput16(dy, T * out);
    uint16_t *cd = dnew((T > out ? T : out) * in * 2);
    float *dxd = dput(dx, T * in * 4), *dwd = dput(dw, out * in * 4), *yd = dnew(T * out * 4);
    char what[128];
    mk_cu_linear16(xd, T, in, wd, out, yd);
    mk_nn_linear_ref(x, T, in, w, out, false, NULL, y);
    mk_nn_round_bf16(y, T * out);
    snprintf(what, sizeof what, "bf16 linear forward [%zu, %zu] x [%zu, %zu]^T (mk_nn_linear_ref, rounded)", T, in, out, in);
    cmp(c, what, yd, y, T * out, c->tol->b16);
    mk_cu_linear16_bwd(xd, T, in, wd, out, dyd, dxd, x_bf16, dwd, cd);
    mk_nn_linear_bwd_bf16(x, T, in, w, out, dy, dx, x_bf16, dw, NULL, scr);
    snprintf(what, sizeof what, "bf16 linear backward dx [%zu, %zu]%s (mk_nn_linear_bwd_bf16)", T, in, x_bf16 ? " summed in bf16" : "");
    cmp(c, what, dxd, dx, T * in, c->tol->b16);
    snprintf(what, sizeof what, "bf16 linear backward dw [%zu, %zu] (mk_nn_linear_bwd_bf16)", out, in);
    cmp(c, what, dwd, dw, out * in, c->tol->b16);
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(dyd), mk_cu_free(cd), mk_cu_free(dxd), mk_cu_free(dwd), mk_cu_free(yd);
    free(x), free(w), free(dy), free(dx), free(dw), free(y), free(scr);
}

/* LayerNorm (with and without a bias, rows longer than a block) and GeGLU, f32 */
static void layernorm_case(ctx *c, size_t T, size_t d, bool bias)
{
    float eps = 1e-5f;
    float *x = rnd(T * d, 170 + d, -2, 3), *w = rnd(d, 171 + d, 0.5f, 1.5f), *b = bias ? rnd(d, 172 + d, -1, 1) : NULL;
    float *dy = rnd(T * d, 173 + d, -1, 1), *dx = rnd(T * d, 174 + d, -1, 1), *dw = rnd(d, 175 + d, -1, 1);
    float *db = rnd(d, 176 + d, -1, 1), *out = malloc(T * d * 4), *st = malloc(2 * T * 4);
    float *xd = dput(x, T * d * 4), *wd = dput(w, d * 4), *bd = b ? dput(b, d * 4) : NULL, *dyd = dput(dy, T * d * 4);
    float *dxd = dput(dx, T * d * 4), *dwd = dput(dw, d * 4), *dbd = dput(db, d * 4), *od = dnew(T * d * 4), *sd = dnew(2 * T * 4);
    char what[112];
    mk_cu_layernorm(od, xd, wd, bd, T, d, eps);
    mk_nn_layernorm(out, x, w, b, T, d, eps);
    snprintf(what, sizeof what, "layernorm forward [%zu, %zu]%s (mk_nn_layernorm)", T, d, bias ? " with a bias" : "");
    cmp(c, what, od, out, T * d, c->tol->reduce);
    mk_cu_layernorm_bwd(xd, wd, dyd, T, d, eps, dxd, dwd, bias ? dbd : NULL, sd);
    mk_nn_layernorm_bwd(x, w, dy, T, d, eps, dx, dw, bias ? db : NULL, st);
    static const char *const nm[3] = {"dx", "dw", "db"};
    const float *gd[3] = {dxd, dwd, dbd}, *gw[3] = {dx, dw, db};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "layernorm backward %s [%zu, %zu] (mk_nn_layernorm_bwd)", nm[i], T, d);
        cmp(c, what, gd[i], gw[i], i ? d : T * d, c->tol->reduce);
    }
    mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(bd), mk_cu_free(dyd), mk_cu_free(dxd), mk_cu_free(dwd), mk_cu_free(dbd);
    mk_cu_free(od), mk_cu_free(sd);
    free(x), free(w), free(b), free(dy), free(dx), free(dw), free(db), free(out), free(st);
}

/* The fused attention (mk_cuda_flash.h) against the CPU's mk_nn_attention_train and
 * mk_nn_attention_bwd (bf: their _bf16 forms on rounded inputs). ramp: key j scaled by
 * (0.2 + j / 8) and the queries and keys positive, so every tile of keys raises each row's
 * maximum and the online softmax must rescale what it has summed (a missing or wrong rescale
 * moves the output by far more than the tolerance). */
static void flash_case(ctx *c, size_t T, size_t nh, size_t nkv, size_t hd, long window, bool bf, bool ramp)
{
    size_t qn = T * nh * hd, kn = T * nkv * hd, pn = nh * T * T;
    float scale = (ramp ? 0.3f : 3.0f) / sqrtf((float)hd);
    uint64_t sd = 190 + T + hd;
    float *q = rnd(qn, sd, ramp ? 0.0f : -1.0f, 1), *k = rnd(kn, sd + 1, ramp ? 0.0f : -1.0f, 1), *v = rnd(kn, sd + 2, -1, 1);
    float *dout = rnd(qn, sd + 3, -1, 1), *dk = rnd(kn, sd + 4, -1, 1), *dv = rnd(kn, sd + 5, -1, 1);
    for (size_t j = 0; ramp && j < T; j++)
        for (size_t e = 0; e < nkv * hd; e++) k[j * nkv * hd + e] *= 0.2f + (float)j / 8;
    if (bf) mk_nn_round_bf16(q, qn), mk_nn_round_bf16(k, kn), mk_nn_round_bf16(v, kn), mk_nn_round_bf16(dout, qn);
    float *qd = dput(q, qn * 4), *kd = dput(k, kn * 4), *vd = dput(v, kn * 4), *dod = dput(dout, qn * 4);
    float *dkd = dput(dk, kn * 4), *dvd = dput(dv, kn * 4), *od = dnew(qn * 4), *st = dnew(2 * nh * T * 4);
    float *dsum = dnew(nh * T * 4), *dqd = dnew(qn * 4);
    uint16_t *o16 = dnew(qn * 2);
    float *out = malloc(qn * 4), *p = malloc(pn * 4), *dq = malloc(qn * 4);
    size_t ns = bf ? mk_nn_attention_bf16_scratch(T, hd) : mk_nn_attention_bwd_scratch(T);
    float *scr = malloc((ns > pn ? ns : pn) * 4);
    char what[192], shape[112];
    snprintf(shape, sizeof shape, "T %zu heads %zu/%zu head_dim %zu window %ld%s", T, nh, nkv, hd, window,
             ramp ? ", rising scores" : "");
    double tol = bf ? c->tol->b16 : c->tol->attn;
    if (bf) {
        mk_cu_flash_attention16(qd, kd, vd, T, nh, nkv, hd, scale, window, o16, st);
        mk_nn_attention_train_bf16(q, k, v, T, nh, nkv, hd, scale, window, out, p, scr);
        snprintf(what, sizeof what, "bf16 fused attention forward %s (mk_nn_attention_train_bf16)", shape);
        cmp16(c, what, o16, out, qn, tol);
        mk_cu_flash_attention16_bwd(qd, kd, vd, st, dod, T, nh, nkv, hd, scale, window, dqd, dkd, dvd, dsum);
        mk_nn_attention_bwd_bf16(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scr);
    } else {
        mk_cu_flash_attention(qd, kd, vd, T, nh, nkv, hd, scale, window, od, st);
        mk_nn_attention_train(q, k, v, T, nh, nkv, hd, scale, window, out, p);
        snprintf(what, sizeof what, "fused attention forward %s (mk_nn_attention_train)", shape);
        cmp(c, what, od, out, qn, tol);
        mk_cu_flash_attention_bwd(qd, kd, vd, st, dod, T, nh, nkv, hd, scale, window, dqd, dkd, dvd, dsum);
        mk_nn_attention_bwd(q, k, v, p, dout, T, nh, nkv, hd, scale, dq, dk, dv, scr);
    }
    static const char *const nm[3] = {"dq", "dk", "dv"};
    const float *gd[3] = {dqd, dkd, dvd}, *gw[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "%sfused attention backward %s %s (mk_nn_attention_bwd%s)", bf ? "bf16 " : "", nm[i], shape,
                 bf ? "_bf16" : "");
        cmp(c, what, gd[i], gw[i], i ? kn : qn, tol);
    }
    mk_cu_free(qd), mk_cu_free(kd), mk_cu_free(vd), mk_cu_free(dod), mk_cu_free(dkd), mk_cu_free(dvd), mk_cu_free(od);
    mk_cu_free(st), mk_cu_free(dsum), mk_cu_free(dqd), mk_cu_free(o16);
    free(q), free(k), free(v), free(dout), free(dk), free(dv), free(out), free(p), free(dq), free(scr);
}

static void run_flash(ctx *c)
{
    /* T past whole tiles of 16, grouped-query ratios 1, 2, 4, head_dim 64, 80, 128 */
    flash_case(c, 17, 4, 4, 16, 0, false, false);
    flash_case(c, 40, 6, 3, 8, 5, false, false);   /* a window of 5 */
    flash_case(c, 37, 8, 2, 64, 0, false, false);
    flash_case(c, 21, 2, 1, 80, 0, false, false);
    flash_case(c, 19, 4, 1, 128, 7, false, false);
    flash_case(c, 150, 2, 1, 8, 40, false, false); /* a window over several tiles: the first ones skipped */
    flash_case(c, 70, 2, 2, 32, 0, false, true);   /* the online softmax's rescale */
    flash_case(c, 37, 8, 2, 64, 0, true, false);
    flash_case(c, 40, 6, 3, 8, 5, true, false);
    flash_case(c, 50, 4, 1, 80, 20, true, false);
    flash_case(c, 70, 2, 2, 32, 0, true, true);
}

static void run_cases16(ctx *c)
{
    run_flash(c);
    layernorm_case(c, 5, 64, true);
    layernorm_case(c, 3, 1000, false);
    gated_case(c, "geglu", "mk_nn_act_gated gelu_tanh", mk_cu_geglu, gelu_gated, mk_cu_geglu_bwd, mk_nn_geglu_bwd, "mk_nn_geglu_bwd",
               180);
    rmsnorm16_case(c, 5, 64);
    rmsnorm16_case(c, 3, 1000);
    elem16_case(c);
    attention16_case(c, 17, 4, 2, 16, 0);
    attention16_case(c, 40, 6, 2, 8, 5);
    attention16_case(c, 300, 2, 1, 8, 0);
    linear16_case(c, 7, 33, 20, false);
    linear16_case(c, 64, 96, 130, true);
}

/* The bf16 trainer on the tiny models against the CPU trainer set to bf16 (finetune --dtype bf16). */
static void run_model16(ctx *c0, const char *mk_bin, const char *tmpdir)
{
    mk_cu_tol t16 = *c0->tol;
    char name[64];
    snprintf(name, sizeof name, "%s, bf16", c0->tol->name);
    t16.name = name, t16.grad = c0->tol->b16_grad, t16.loss = c0->tol->b16_loss;
    ctx c = {&t16, c0->report, 0};
    static const struct {
        const char *name, *extra;
        bool ckpt;
    } cases[] = {{"bf16 llama", "--arch llama", false}, {"bf16 llama tied, checkpointing", "--arch llama --tie", true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[1024], args[256], err[1200] = "";
        snprintf(dir, sizeof dir, "%s/cuda-model16-%zu", tmpdir, i);
        snprintf(args, sizeof args, "--kv-heads 2 --hidden 32 --layers 2 --heads 4 --intermediate 64 --vocab 64 --std 0.2 "
                                    "--max-position 64 --seed 21 %s", cases[i].extra);
        mk_cu_tmodel m = {0};
        bool made = mk_cu_tmodel_synth(mk_bin, dir, args, err, sizeof err) && mk_cu_tmodel_open(dir, &m) == MK_OK &&
                    mk_nn_train_set_bf16(m.t) == MK_OK;
        if (made) model_case(&c, &m, cases[i].name, cases[i].ckpt);
        else check(&c, false, cases[i].name, err[0] ? err : mk_errmsg());
        mk_cu_tmodel_close(&m);
        if (made && i == 0) loop_case(&c, dir, tmpdir, true);
    }
    c0->failed += c.failed;
}
