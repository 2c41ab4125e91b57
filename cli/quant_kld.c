/* quant_kld.c - `quantize --target-bpw B --sensitivity kld-probe`: how much each group of weights
 * (the Linear modules of one parent: a layer's self_attn, a layer's mlp) moves the output
 * distribution when quantized. The model runs on a few windows of a text; for each group its
 * weights are replaced by their probe-format values (read, dequantized, from a probe
 * checkpoint of the whole model in that format) and the mean KL(original || probed) over the
 * scored positions is measured. A group's sensitivity is that KL over the sum of its
 * weights' squared probe error, so each weight's predicted error in a format is its squared
 * error times the sensitivity: predicted KL, additive over weights.
 * The original and the probed model read the same source through a view that presents
 * every weight of the table in f32 and switches the group's to the probe's values.
 *
 * `quantize --target-bpw B --sensitivity fisher`: the second-order (Fisher) approximation of
 * the same KL instead, KL(p || p_q) ~ 1/2 sum_i F_ii dw_i^2, with F the expected Fisher
 * diagonal per token (train/fisher.h) on windows of a text, computed once by one forward and
 * one backward pass per window (labels drawn from the model); each weight's predicted error
 * in a format is then sum over its elements of F/2 (x - q)^2 (quant/alloc.h,
 * mk_alloc_measure_elem): additive over weights and formats by construction.
 */
#include "cli.h"

#include "../nn/backward.h"
#include "../nn/nn.h"
#include "../nn/tokenizer.h"
#include "../quant/alloc.h"
#include "../quant/qsource.h"
#include "../train/fisher.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the switching view --------------------------------------------------------------------- */

typedef struct sw_impl {
    mk_source *o, *d;    /* the original, the probe (dequantizing view) */
    bool *f32;           /* [n]: presented in f32 */
    long *di;            /* [n]: its index in d */
    bool *use_d;         /* [n]: read from the probe now */
} sw_impl;

static mk_status sw_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    sw_impl *m = s->impl;
    if (!m->f32[i]) return m->o->ops->read(m->o, i, off, len, dst);
    if (m->use_d[i]) return m->d->ops->read(m->d, (size_t)m->di[i], off, len, dst);
    void *scratch = mk_malloc((size_t)(len / 4 * mk_dtype_size(m->o->tensors[i].dtype)) + 1);
    if (!scratch) return MK_ERR_NOMEM;
    mk_status st = mk_source_read_f32(m->o, i, off / 4, len / 4, dst, scratch);
    free(scratch);
    return st;
}

static const void *sw_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    sw_impl *m = s->impl;
    return !m->f32[i] && m->o->ops->borrow ? m->o->ops->borrow(m->o, i, off, len) : NULL;
}

static mk_status sw_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    sw_impl *m = s->impl;
    return m->o->ops->aux_read(m->o, name, cap, data, len);
}

static const char *const *sw_aux_list(mk_source *s)
{
    sw_impl *m = s->impl;
    return m->o->ops->aux_list ? m->o->ops->aux_list(m->o) : NULL;
}

static void sw_close(mk_source *s)
{
    sw_impl *m = s->impl;
    free(m->f32);
    free(m->di);
    free(m->use_d);
    free(m);
    free(s->tensors);
    mk_name_index_free(&s->index);
    free(s);
}

static const mk_source_ops sw_ops = {.read = sw_read, .borrow = sw_borrow, .aux_read = sw_aux_read, .aux_list = sw_aux_list,
                                     .close = sw_close};

static mk_status sw_open(mk_source *o, mk_source *d, const mk_alloc_table *t, mk_source **out)
{
    mk_source *s = mk_calloc(1, sizeof *s);
    sw_impl *m = mk_calloc(1, sizeof *m);
    size_t n = o->n_tensors;
    if (s) s->tensors = mk_calloc(n ? n : 1, sizeof *s->tensors);
    if (m) {
        m->f32 = mk_calloc(n ? n : 1, sizeof *m->f32);
        m->di = mk_calloc(n ? n : 1, sizeof *m->di);
        m->use_d = mk_calloc(n ? n : 1, sizeof *m->use_d);
    }
    if (!s || !m || !s->tensors || !m->f32 || !m->di || !m->use_d) {
        if (s) free(s->tensors);
        if (m) free(m->f32), free(m->di), free(m->use_d);
        free(s);
        free(m);
        return MK_ERR_NOMEM;
    }
    *s = (mk_source){.ops = &sw_ops, .path = o->path, .kind = o->kind, .n_tensors = n, .tensors = s->tensors, .impl = m};
    m->o = o;
    m->d = d;
    memcpy(s->tensors, o->tensors, n * sizeof *s->tensors);
    mk_status st = MK_OK;
    for (size_t k = 0; k < t->n && st == MK_OK; k++) {
        size_t i = t->w[k];
        m->f32[i] = true;
        m->di[i] = mk_source_find(d, o->tensors[i].name);
        if (m->di[i] < 0 || d->tensors[m->di[i]].dtype != MK_F32 || d->tensors[m->di[i]].numel != o->tensors[i].numel)
            st = mk_error(MK_ERR_MISMATCH, "the probe checkpoint has no f32 %s", o->tensors[i].name);
        s->tensors[i].dtype = MK_F32;
        if (st == MK_OK) st = mk_tensor_info_finish(&s->tensors[i]);
    }
    if (st == MK_OK) st = mk_name_index_build(&s->index, s->tensors, n, NULL);
    if (st != MK_OK) {
        sw_close(s);
        return st;
    }
    *out = s;
    return MK_OK;
}

/* ---- KL on the windows ---------------------------------------------------------------------- */

typedef struct kl_run {
    size_t windows, ctx, first, scored, V, H;
    int32_t *tok;        /* [windows * ctx] */
    float *hidden;       /* [windows * ctx * H] */
    float *logits;       /* [scored * V] */
    float *ref_lp;       /* [windows * scored * V]: the original's log-probabilities */
} kl_run;

static void log_softmax(float *x, size_t V)
{
    double mx = -INFINITY, sum = 0;
    for (size_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    for (size_t v = 0; v < V; v++) sum += exp((double)x[v] - mx);
    double lse = mx + log(sum);
    for (size_t v = 0; v < V; v++) x[v] = (float)((double)x[v] - lse);
}

/* Forward nn on the windows; with ref: keep the log-probabilities, else the mean KL to them. */
static mk_status kl_pass(kl_run *r, mk_nn_model *nn, bool ref, double *kl)
{
    MK_TRY(mk_nn_forward(nn, r->tok, r->windows, r->ctx, r->hidden));
    double sum = 0;
    for (size_t w = 0; w < r->windows; w++) {
        float *dst = ref ? r->ref_lp + w * r->scored * r->V : r->logits;
        MK_TRY(mk_nn_logits(nn, r->hidden + (w * r->ctx + r->first) * r->H, r->scored, dst));
        for (size_t p = 0; p < r->scored; p++) {
            log_softmax(dst + p * r->V, r->V);
            if (ref) continue;
            const float *a = r->ref_lp + (w * r->scored + p) * r->V, *b = dst + p * r->V;
            double k = 0;
            for (size_t v = 0; v < r->V; v++) k += exp((double)a[v]) * ((double)a[v] - (double)b[v]);
            sum += k;
        }
    }
    if (kl) *kl = sum / (double)(r->windows * r->scored);
    return MK_OK;
}

/* The group of weight name: its module's parent ("model.layers.3.mlp"). */
static size_t group_key(const char *name)
{
    const char *e = name + strlen(name);
    int dots = 0;
    while (e > name && dots < 2)
        if (*--e == '.') dots++;
    return (size_t)(e - name);
}

/* Tokens of the windows, the buffers, and the original's log-probabilities. */
static mk_status kl_setup(kl_run *r, mk_source *src, mk_nn_model *nn_ref, const char *text, size_t ctx, size_t chunks)
{
    mk_tokenizer *tk = NULL;
    int32_t *ids = NULL, bos = -1;
    size_t n = 0;
    mk_status s = mk_cli_open_tokenizer(src, src->path, &tk);
    if (s == MK_OK) s = mk_cli_tokenize_file(tk, text, &ids, &n, &bos);
    mk_tokenizer_free(tk);
    if (s == MK_OK) {
        r->ctx = ctx;
        r->windows = n / ctx < chunks ? n / ctx : chunks;
        r->first = ctx / 2;
        r->scored = ctx - 1 - r->first;
        r->V = mk_nn_vocab(nn_ref);
        r->H = mk_nn_hidden(nn_ref);
        if (!r->windows) s = mk_error(MK_ERR_USAGE, "%s: %zu tokens, fewer than one window of %zu (--sensitivity-ctx)", text, n, ctx);
    }
    if (s == MK_OK) {
        r->tok = mk_malloc(r->windows * ctx * sizeof *r->tok);
        r->hidden = mk_malloc(r->windows * ctx * r->H * sizeof *r->hidden);
        r->logits = mk_malloc(r->scored * r->V * sizeof *r->logits);
        r->ref_lp = mk_malloc(r->windows * r->scored * r->V * sizeof *r->ref_lp);
        if (!r->tok || !r->hidden || !r->logits || !r->ref_lp) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) {
        memcpy(r->tok, ids, r->windows * ctx * sizeof *r->tok);
        if (bos >= 0)
            for (size_t w = 0; w < r->windows; w++) r->tok[w * ctx] = bos;
        s = kl_pass(r, nn_ref, true, NULL);
    }
    free(ids);
    return s;
}

static bool same_group(const char *a, const char *b)
{
    size_t k = group_key(a);
    return group_key(b) == k && !strncmp(a, b, k);
}

/* Each group switched to the probe in turn: its KL, over its squared probe error, is the
 * sensitivity of its weights. */
static mk_status probe_groups(kl_run *r, mk_source *src, sw_impl *m, mk_nn_model *nn_sw, mk_alloc_table *t, size_t probe, size_t *ngroups)
{
    for (size_t a = 0; a < t->n; a++) {
        const char *na = src->tensors[t->w[a]].name;
        bool seen = false;
        for (size_t b = 0; b < a && !seen; b++) seen = same_group(na, src->tensors[t->w[b]].name);
        if (seen) continue;
        double se = 0, kl = 0;
        for (size_t b = a; b < t->n; b++) {
            bool in = same_group(na, src->tensors[t->w[b]].name);
            m->use_d[t->w[b]] = in;
            if (in) se += t->se2[b * t->k + probe];
        }
        mk_status s = kl_pass(r, nn_sw, false, &kl);
        for (size_t b = a; b < t->n; b++) {
            if (!same_group(na, src->tensors[t->w[b]].name)) continue;
            m->use_d[t->w[b]] = false;
            t->sens[b] = se > 0 ? kl / se : 0;
        }
        MK_TRY(s);
        (*ngroups)++;
        mk_info("kld-probe: %.*s: KL %.6g", (int)group_key(na), na, kl);
    }
    for (size_t b = 0; b < t->n; b++)
        for (size_t k = 0; k < t->k; k++) t->err[b * t->k + k] = t->sens[b] * t->se2[b * t->k + k];
    return MK_OK;
}

mk_status mk_cli_alloc_kld(mk_source *src, const char *probe_dir, mk_alloc_table *t, size_t probe, const char *text, size_t ctx,
                           size_t chunks, const mk_common *cm)
{
    mk_source *raw = NULL, *d = NULL, *sw = NULL;
    mk_qinfo qi;
    mk_model_config cfg;
    bool has_cfg = false;
    mk_nn_model *nn_ref = NULL, *nn_sw = NULL;
    kl_run r = {0};
    mk_status s = mk_cli_open_model(probe_dir, &raw);
    if (s == MK_OK && (s = mk_qsource_open(raw, &d, &qi)) != MK_OK) mk_source_close(raw);
    if (s == MK_OK) s = sw_open(src, d, t, &sw);
    if (s == MK_OK) has_cfg = (s = mk_model_config_of_source(src, &cfg)) == MK_OK;
    if (s == MK_OK) s = mk_nn_open(src, &cfg, &nn_ref);
    if (s == MK_OK) s = mk_nn_open(sw, &cfg, &nn_sw);
    if (s == MK_OK) s = kl_setup(&r, src, nn_ref, text, ctx, chunks);
    double kl0 = 0;
    if (s == MK_OK) s = kl_pass(&r, nn_sw, false, &kl0); /* nothing switched: must be 0 */
    if (s == MK_OK && kl0 != 0) s = mk_error(MK_ERR_MISMATCH, "the switching view changes the model (KL %g with nothing switched)", kl0);
    size_t ngroups = 0;
    if (s == MK_OK) s = probe_groups(&r, src, sw->impl, nn_sw, t, probe, &ngroups);
    if (s == MK_OK && !cm->quiet)
        fprintf(stderr, "mergekit-c: kld-probe: %zu groups of weights probed on %zu window(s) of %zu tokens of %s\n", ngroups, r.windows, ctx, text);
    free(r.tok), free(r.hidden), free(r.logits), free(r.ref_lp);
    mk_nn_close(nn_sw);
    mk_nn_close(nn_ref);
    if (has_cfg) mk_model_config_free(&cfg);
    if (sw) sw_close(sw);
    mk_source_close(d);
    return s;
}

/* ---- --sensitivity fisher ------------------------------------------------------------------ */

mk_status mk_cli_alloc_fisher(mk_source *src, const char *text, size_t ctx, size_t chunks, const mk_common *cm, float **F_out,
                              const float **wt)
{
    *F_out = NULL;
    mk_model_config cfg;
    mk_tokenizer *tk = NULL;
    mk_nn_train *tr = NULL;
    int32_t *ids = NULL, bos = -1;
    size_t n = 0, windows = 0;
    float *F = NULL;
    double t0 = mk_now();
    mk_status s = mk_model_config_of_source(src, &cfg);
    if (s != MK_OK) return s;
    s = mk_nn_train_check(src, &cfg);
    if (s == MK_OK) s = mk_cli_open_tokenizer(src, src->path, &tk);
    if (s == MK_OK) s = mk_cli_tokenize_file(tk, text, &ids, &n, &bos);
    mk_tokenizer_free(tk);
    if (s == MK_OK) {
        windows = n / ctx < chunks ? n / ctx : chunks;
        if (!windows) s = mk_error(MK_ERR_USAGE, "%s: %zu tokens, fewer than one window of %zu (--sensitivity-ctx)", text, n, ctx);
    }
    for (size_t w = 0; s == MK_OK && bos >= 0 && w < windows; w++) ids[w * ctx] = bos;
    if (s == MK_OK) s = mk_nn_train_open(src, &cfg, &tr);
    uint64_t numel = tr ? mk_nn_train_numel(tr) : 0;
    if (s == MK_OK && !(F = mk_malloc((size_t)(numel ? numel : 1) * sizeof *F))) s = MK_ERR_NOMEM;
    if (s == MK_OK) s = mk_fisher_diag(tr, ids, NULL, windows, ctx, MK_CLI_FISHER_SEED, F, NULL, NULL);
    for (uint64_t i = 0; s == MK_OK && i < numel; i++) F[i] *= 0.5f; /* KL ~ 1/2 sum F dw^2 */
    for (size_t p = 0; s == MK_OK && p < mk_nn_train_n_params(tr); p++) {
        const mk_nn_param *pp = mk_nn_train_param(tr, p);
        wt[pp->src_index] = F + pp->off;
    }
    mk_nn_train_close(tr);
    free(ids);
    mk_model_config_free(&cfg);
    if (s != MK_OK) {
        free(F);
        return s;
    }
    if (!cm->quiet)
        fprintf(stderr, "mergekit-c: fisher: %zu window(s) of %zu tokens of %s, labels drawn from the model, in %.1f s\n", windows, ctx,
                text, mk_now() - t0);
    *F_out = F;
    return MK_OK;
}
