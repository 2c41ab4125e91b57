/* eval.c - see eval.h. Statistics as llama.cpp's llama-perplexity prints them
 * (tools/perplexity/perplexity.cpp: PPL +- PPL sqrt(var / (N - 1)), KLD mean +- sqrt(var /
 * (N - 1)), percentiles of the sorted values, "same top p", dp = p(correct) difference). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

#define MAX_MODELS (1 + MK_EVAL_MAX_REFS)

/* Per scored position: each model's NLL of the correct token, p(correct), top token and
 * log-sum-exp of its logits. */
typedef struct pos_stats {
    double *nll[MAX_MODELS], *p[MAX_MODELS];
    int32_t *top[MAX_MODELS];
    double *kl[MAX_MODELS]; /* kl[i]: KL(ref_i || model); kl[n_refs]: KL(ref_0 || ref_1) */
} pos_stats;

typedef struct run {
    mk_nn_model *m[MAX_MODELS];
    size_t nm, n_refs, ctx, first, scored, V;
    float *hidden[MAX_MODELS], *logits[MAX_MODELS];
    double *lse;            /* [nm][scored] */
    pos_stats ps;
    size_t n_pos;           /* positions recorded so far */
} run;

/* log-sum-exp, top token and the correct token's log-probability of one row of logits. */
static void row_stats(const float *x, size_t V, int32_t target, double *lse, int32_t *top, double *logp)
{
    float mx = x[0];
    size_t arg = 0;
    for (size_t v = 1; v < V; v++)
        if (x[v] > mx) mx = x[v], arg = v;
    double s = 0;
    for (size_t v = 0; v < V; v++) s += exp((double)x[v] - (double)mx);
    *lse = (double)mx + log(s);
    *top = (int32_t)arg;
    *logp = (double)x[target] - *lse;
}

/* KL(p || q) for rows of logits with their log-sum-exps, in double over the whole vocabulary. */
static double kl_div(const float *xp, double lse_p, const float *xq, double lse_q, size_t V)
{
    double s = 0;
    for (size_t v = 0; v < V; v++) {
        double lp = (double)xp[v] - lse_p, lq = (double)xq[v] - lse_q;
        s += exp(lp) * (lp - lq);
    }
    return s > 0 ? s : 0; /* rounding can leave -1e-17 for identical rows */
}

/* Statistics of one window's scored positions: targets[j] follows position j. */
static void score_window(run *r, const int32_t *targets)
{
    size_t base = r->n_pos, S = r->scored, V = r->V;
    MK_OMP("omp parallel for schedule(static)")
    for (size_t j = 0; j < S; j++) {
        for (size_t k = 0; k < r->nm; k++) {
            double logp;
            row_stats(r->logits[k] + j * V, V, targets[j], &r->lse[k * S + j], &r->ps.top[k][base + j], &logp);
            r->ps.nll[k][base + j] = -logp;
            r->ps.p[k][base + j] = exp(logp);
        }
        const float *xm = r->logits[0] + j * V;
        for (size_t i = 0; i < r->n_refs; i++)
            r->ps.kl[i][base + j] = kl_div(r->logits[1 + i] + j * V, r->lse[(1 + i) * S + j], xm, r->lse[j], V);
        if (r->n_refs >= 2)
            r->ps.kl[r->n_refs][base + j] =
                kl_div(r->logits[1] + j * V, r->lse[S + j], r->logits[2] + j * V, r->lse[2 * S + j], V);
    }
    r->n_pos += S;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static double pct(const double *s, size_t n, double p)
{
    size_t k = (size_t)ceil(p * (double)n);
    return s[k ? k - 1 : 0];
}

static double mean_se(const double *x, size_t n, double *se)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += x[i], s2 += x[i] * x[i];
    double m = s / (double)n, var = s2 / (double)n - m * m;
    *se = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0;
    return m;
}

double mk_eval_kl_edge(size_t i) { return 1e-6 * pow(10.0, (double)i / 4); }

/* The comparison of model `q` with reference `p` (indices into the runs), KL values kl[n]. */
static mk_status compare(const run *r, size_t p, size_t q, double *kl, mk_eval_kl *out)
{
    size_t n = r->n_pos;
    memset(out, 0, sizeof *out);
    out->kl_mean = mean_se(kl, n, &out->kl_se);
    double *sorted = mk_malloc(n * sizeof *sorted);
    double *d = mk_malloc(n * sizeof *d);
    if (!sorted || !d) {
        free(sorted);
        free(d);
        return MK_ERR_NOMEM;
    }
    memcpy(sorted, kl, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_double);
    out->kl_median = pct(sorted, n, 0.5);
    out->kl_p90 = pct(sorted, n, 0.9);
    out->kl_p95 = pct(sorted, n, 0.95);
    out->kl_p99 = pct(sorted, n, 0.99);
    out->kl_max = sorted[n - 1];
    for (size_t i = 0, b = 0; i < n; i++) { /* sorted: the bins fill in order */
        while (b < MK_EVAL_KL_EDGES && !(sorted[i] < mk_eval_kl_edge(b))) b++;
        out->kl_hist[b]++;
    }
    size_t same = 0;
    double dp = 0, dp2 = 0, se;
    for (size_t i = 0; i < n; i++) {
        same += r->ps.top[p][i] == r->ps.top[q][i];
        double x = r->ps.p[q][i] - r->ps.p[p][i];
        dp += x, dp2 += x * x;
        d[i] = r->ps.nll[q][i] - r->ps.nll[p][i];
    }
    out->same_top = (double)same / (double)n;
    out->dp_mean = dp / (double)n;
    out->dp_rms = sqrt(dp2 / (double)n);
    double ln_ratio = mean_se(d, n, &se);
    out->ppl_ratio = exp(ln_ratio);
    out->ppl_ratio_se = out->ppl_ratio * se;
    out->ppl_ref = exp(mean_se(r->ps.nll[p], n, &se));
    free(sorted);
    free(d);
    return MK_OK;
}

static void run_free(run *r)
{
    for (size_t k = 0; k < MAX_MODELS; k++) {
        free(r->hidden[k]), free(r->logits[k]);
        free(r->ps.nll[k]), free(r->ps.p[k]), free(r->ps.top[k]), free(r->ps.kl[k]);
    }
    free(r->lse);
}

static mk_status run_alloc(run *r, size_t batch, size_t total_pos)
{
    for (size_t k = 0; k < r->nm; k++) {
        r->hidden[k] = mk_malloc(batch * r->ctx * mk_nn_hidden(r->m[k]) * sizeof(float));
        r->logits[k] = mk_malloc(r->scored * r->V * sizeof(float));
        r->ps.nll[k] = mk_malloc(total_pos * sizeof(double));
        r->ps.p[k] = mk_malloc(total_pos * sizeof(double));
        r->ps.top[k] = mk_malloc(total_pos * sizeof(int32_t));
        r->ps.kl[k] = mk_malloc(total_pos * sizeof(double));
        if (!r->hidden[k] || !r->logits[k] || !r->ps.nll[k] || !r->ps.p[k] || !r->ps.top[k] || !r->ps.kl[k])
            return MK_ERR_NOMEM;
    }
    r->lse = mk_malloc(r->nm * r->scored * sizeof(double));
    return r->lse ? MK_OK : MK_ERR_NOMEM;
}

/* Windows [w0, w0 + nb): forward every model, then score each window. */
static mk_status run_batch(run *r, const int32_t *tokens, size_t w0, size_t nb, const mk_eval_opts *o, int32_t *tok)
{
    memcpy(tok, tokens + w0 * r->ctx, nb * r->ctx * sizeof *tok);
    if (o->bos >= 0)
        for (size_t w = 0; w < nb; w++) tok[w * r->ctx] = o->bos;
    for (size_t k = 0; k < r->nm; k++) MK_TRY(mk_nn_forward(r->m[k], tok, nb, r->ctx, r->hidden[k]));
    for (size_t w = 0; w < nb; w++) {
        for (size_t k = 0; k < r->nm; k++) {
            size_t H = mk_nn_hidden(r->m[k]);
            MK_TRY(mk_nn_logits(r->m[k], r->hidden[k] + (w * r->ctx + r->first) * H, r->scored, r->logits[k]));
        }
        score_window(r, tokens + (w0 + w) * r->ctx + r->first + 1);
    }
    return MK_OK;
}

void mk_eval_windows(size_t n, const mk_eval_opts *o, size_t *windows, size_t *first, size_t *scored)
{
    *windows = o->ctx ? n / o->ctx : 0;
    if (o->chunks && o->chunks < *windows) *windows = o->chunks;
    *first = o->ctx / 2;
    *scored = o->ctx ? o->ctx - 1 - *first : 0;
}

mk_status mk_eval_run(mk_nn_model *model, mk_nn_model *const *refs, size_t n_refs, const int32_t *tokens, size_t n,
                      const mk_eval_opts *o, mk_eval_result *res)
{
    memset(res, 0, sizeof *res);
    if (n_refs > MK_EVAL_MAX_REFS) return mk_error(MK_ERR_USAGE, "at most %d reference models", MK_EVAL_MAX_REFS);
    if (o->ctx < 4) return mk_error(MK_ERR_USAGE, "--ctx %zu: a window needs at least 4 tokens", o->ctx);
    size_t windows;
    run r = {.nm = 1 + n_refs, .n_refs = n_refs, .ctx = o->ctx, .V = mk_nn_vocab(model)};
    mk_eval_windows(n, o, &windows, &r.first, &r.scored);
    if (!windows) return mk_error(MK_ERR_USAGE, "%zu tokens are fewer than one window of %zu (--ctx)", n, o->ctx);
    r.m[0] = model;
    for (size_t i = 0; i < n_refs; i++) {
        r.m[1 + i] = refs[i];
        if (mk_nn_vocab(refs[i]) != r.V)
            return mk_error(MK_ERR_USAGE, "reference %zu has a vocabulary of %zu tokens, the model %zu; KL divergence needs one "
                                          "vocabulary", i + 1, mk_nn_vocab(refs[i]), r.V);
    }
    size_t batch = o->batch ? o->batch : (2048 / o->ctx ? 2048 / o->ctx : 1);
    if (batch > windows) batch = windows;
    int32_t *tok = mk_malloc(batch * o->ctx * sizeof *tok);
    mk_status s = tok ? run_alloc(&r, batch, windows * r.scored) : MK_ERR_NOMEM;
    double t0 = mk_now();
    for (size_t w0 = 0; w0 < windows && s == MK_OK; w0 += batch) {
        size_t nb = windows - w0 < batch ? windows - w0 : batch;
        s = run_batch(&r, tokens, w0, nb, o, tok);
        if (s == MK_OK && o->progress)
            o->progress(o->progress_ctx, w0 + nb, windows, (w0 + nb) * o->ctx, windows * o->ctx, "windows");
    }
    res->seconds = mk_now() - t0;
    if (s == MK_OK) {
        res->windows = windows;
        res->scored = r.n_pos;
        res->nll_mean = mean_se(r.ps.nll[0], r.n_pos, &res->ppl_se);
        res->ppl = exp(res->nll_mean);
        res->ppl_se *= res->ppl;
        res->tokens_per_s = res->seconds > 0 ? (double)(windows * o->ctx) / res->seconds : 0;
        res->nll_sum = res->nll_mean * (double)r.n_pos;
        res->n_refs = n_refs;
        for (size_t i = 0; i < n_refs && s == MK_OK; i++) s = compare(&r, 1 + i, 0, r.ps.kl[i], &res->kl[i]);
        if (n_refs >= 2 && s == MK_OK) {
            s = compare(&r, 1, 2, r.ps.kl[n_refs], &res->pair);
            res->has_pair = true;
        }
    }
    free(tok);
    run_free(&r);
    return s;
}
