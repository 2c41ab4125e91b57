/* cmd_report.c - `mergekit-c report PATH [-o report.html]`: one self-contained HTML page with
 * SVG plots (eval/report.h) about
 *   a merge:      PATH = RECIPE.yaml, or a merge's OUT folder with --recipe (its copy of the
 *                 recipe, mergekit_config.yml): task-vector norms per layer, cosines between the
 *                 models' task vectors, TIES sign conflicts and kept density (merge/tvstats.h),
 *                 measured by streaming the inputs;
 *   quantization: PATH = the --json output of quantize, or a quantized folder with --ref ORIG
 *                 (the error recomputed by dequantizing it against ORIG): relative RMSE, SQNR and
 *                 bits per weight per tensor and per layer;
 *   eval:         PATH = the --json output of eval: the KL divergence per scored token as a
 *                 histogram, and its quantiles, per reference.
 * merge --report FILE and quantize --report FILE write the same pages at the end of a run
 * (mk_cli_report_merge, mk_cli_report_quant). The page is written atomically.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_json.h"
#include "../eval/report.h"
#include "../merge/plan.h"
#include "../merge/tvstats.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_JSON (256u << 20)
#define MAX_KINDS 64

static mk_status write_page(mk_report *r, const char *file)
{
    char *html;
    size_t len;
    MK_TRY(mk_report_end(r, &html, &len));
    mk_status s = mk_write_file_atomic(file, html, len);
    free(html);
    return s;
}

static const char *num(char b[32], double v, const char *fmt)
{
    if (isfinite(v)) snprintf(b, 32, fmt, v);
    else snprintf(b, 32, "%s", isnan(v) ? "-" : v > 0 ? "inf" : "-inf");
    return b;
}

/* The layer of a tensor name: its first dotted component of digits ("model.layers.3.mlp...");
 * *rest points after it. -1 when none. */
static long name_layer(const char *name, const char **rest)
{
    const char *p = name;
    while (*p) {
        const char *q = p;
        long v = 0;
        while (*q >= '0' && *q <= '9' && v < 1000000) v = v * 10 + (*q++ - '0');
        if (q > p && (*q == '.' || !*q) && (p == name || p[-1] == '.')) {
            *rest = *q ? q + 1 : q;
            return v;
        }
        const char *dot = strchr(p, '.');
        if (!dot) break;
        p = dot + 1;
    }
    *rest = name;
    return -1;
}

/* ---- quantization ---------------------------------------------------------------------------- */

typedef struct qrow {
    const char *name;
    double bpw, rel, sqnr, max_err;
    uint64_t in_bytes, out_bytes;
} qrow;

static void quant_page(mk_report *r, const char *what, const qrow *row, size_t n, const qrow *tot)
{
    char b[6][32], head[512];
    snprintf(head, sizeof head, "%zu quantized tensors: %s bits per weight, relative RMSE %s, SQNR %s dB", n,
             num(b[0], tot->bpw, "%.4f"), num(b[1], tot->rel, "%.5f"), num(b[2], tot->sqnr, "%.2f"));
    mk_report_h2(r, what);
    mk_report_p(r, head);
    /* per layer: one series per kind of tensor (self_attn.q_proj.weight, ...) */
    const char *kind[MAX_KINDS];
    size_t nk = 0;
    long layers = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rest;
        long l = name_layer(row[i].name, &rest);
        if (l < 0) continue;
        if (l + 1 > layers) layers = l + 1;
        size_t k = 0;
        while (k < nk && strcmp(kind[k], rest) != 0) k++;
        if (k == nk && nk < MAX_KINDS) kind[nk++] = rest;
    }
    if (layers > 0 && nk > 0) {
        double *rel = mk_calloc((size_t)layers * nk, sizeof *rel), *sq = mk_calloc((size_t)layers * nk, sizeof *sq);
        mk_report_series s1[MAX_KINDS], s2[MAX_KINDS];
        for (size_t i = 0; rel && sq && i < (size_t)layers * nk; i++) rel[i] = sq[i] = NAN;
        for (size_t i = 0; rel && sq && i < n; i++) {
            const char *rest;
            long l = name_layer(row[i].name, &rest);
            for (size_t k = 0; l >= 0 && k < nk; k++)
                if (strcmp(kind[k], rest) == 0) {
                    rel[k * (size_t)layers + (size_t)l] = row[i].rel;
                    sq[k * (size_t)layers + (size_t)l] = row[i].sqnr;
                }
        }
        for (size_t k = 0; rel && sq && k < nk; k++) {
            s1[k] = (mk_report_series){kind[k], rel + k * (size_t)layers};
            s2[k] = (mk_report_series){kind[k], sq + k * (size_t)layers};
        }
        if (rel && sq) {
            mk_report_lines(r, "Relative RMSE per layer (||w - dequant(quant(w))|| / ||w||)", "layer", "relative RMSE",
                            (size_t)layers, NULL, s1, nk);
            mk_report_lines(r, "SQNR per layer (10 log10 of signal over error power)", "layer", "SQNR (dB)", (size_t)layers, NULL, s2,
                            nk);
        }
        free(rel);
        free(sq);
    }
    const char **label = mk_calloc(n ? n : 1, sizeof *label);
    double *v = mk_calloc(n ? n : 1, sizeof *v), *e = mk_calloc(n ? n : 1, sizeof *e);
    for (size_t i = 0; label && v && e && i < n; i++) {
        label[i] = row[i].name;
        v[i] = row[i].bpw;
        e[i] = row[i].rel;
    }
    if (label && v && e) {
        mk_report_bars(r, "Relative RMSE per tensor", "tensor (in file order)", "relative RMSE", n, label, NULL, e);
        mk_report_bars(r, "Bits per weight per tensor (codes, scales and everything stored for it)", "tensor (in file order)",
                       "bits per weight", n, label, NULL, v);
    }
    free(e);
    free(v);
    free(label);
    static const char *const cols[] = {"tensor", "bits/weight", "rel RMSE", "SQNR dB", "max |err|", "bytes in", "bytes out"};
    const char **cells = mk_calloc((n + 1) * 7, sizeof *cells);
    char (*txt)[32] = mk_calloc((n + 1) * 7, sizeof *txt);
    for (size_t i = 0; cells && txt && i <= n; i++) {
        const qrow *q = i < n ? &row[i] : tot;
        char(*t)[32] = txt + i * 7;
        cells[i * 7] = i < n ? q->name : "total";
        cells[i * 7 + 1] = num(t[1], q->bpw, "%.4f");
        cells[i * 7 + 2] = num(t[2], q->rel, "%.6f");
        cells[i * 7 + 3] = num(t[3], q->sqnr, "%.2f");
        cells[i * 7 + 4] = num(t[4], q->max_err, "%.4g");
        snprintf(t[5], 32, "%llu", (unsigned long long)q->in_bytes);
        snprintf(t[6], 32, "%llu", (unsigned long long)q->out_bytes);
        cells[i * 7 + 5] = t[5];
        cells[i * 7 + 6] = t[6];
    }
    if (cells && txt) mk_report_table(r, cols, 7, cells, n + 1);
    free(cells);
    free(txt);
}

static double sqnr_of(double x2, double e2) { return e2 > 0 && x2 > 0 ? 10 * log10(x2 / e2) : e2 > 0 ? -INFINITY : INFINITY; }
static double rel_of(double x2, double e2) { return x2 > 0 ? sqrt(e2 / x2) : e2 > 0 ? INFINITY : 0; }

/* rows from the quantizer's own statistics (quantize --report, merge --quantize --report) */
mk_status mk_cli_report_quant(const mk_qplan *p, mk_consumer *cons, const char *file)
{
    qrow *row = mk_calloc(p->n ? p->n : 1, sizeof *row);
    if (!row) return MK_ERR_NOMEM;
    size_t n = 0;
    double x2 = 0, e2 = 0;
    qrow tot = {0};
    uint64_t numel = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_qstats *s = mk_quant_stats(cons, i);
        if (!s->quantized || !s->done || !s->numel) continue;
        row[n++] = (qrow){p->in[i].name, 8.0 * (double)s->out_bytes / (double)s->numel, rel_of(s->sum_x2, s->sum_e2),
                          sqnr_of(s->sum_x2, s->sum_e2), s->max_err, s->in_bytes, s->out_bytes};
        x2 += s->sum_x2, e2 += s->sum_e2, numel += s->numel;
        tot.in_bytes += s->in_bytes, tot.out_bytes += s->out_bytes;
        tot.max_err = s->max_err > tot.max_err ? s->max_err : tot.max_err;
    }
    tot.bpw = numel ? 8.0 * (double)tot.out_bytes / (double)numel : 0;
    tot.rel = rel_of(x2, e2);
    tot.sqnr = sqnr_of(x2, e2);
    char desc[160], title[256];
    snprintf(title, sizeof title, "Quantization report: %s", mk_qopts_describe(&p->o, desc));
    mk_report r;
    mk_report_begin(&r, title);
    quant_page(&r, "Quantization error and size", row, n, &tot);
    free(row);
    return write_page(&r, file);
}

static double jnum(const mk_json *j, uint32_t obj, const char *key)
{
    uint32_t v = mk_json_get(j, obj, key);
    return v && mk_json_at(j, v)->type == MK_JSON_NUM ? mk_json_at(j, v)->d : NAN; /* null: not finite */
}

static uint64_t jcount(const mk_json *j, uint32_t obj, const char *key)
{
    uint32_t v = mk_json_get(j, obj, key);
    return v && mk_json_at(j, v)->is_uint ? mk_json_at(j, v)->u : 0;
}

static qrow json_qrow(const mk_json *j, uint32_t o)
{
    uint32_t nm = mk_json_get(j, o, "name");
    return (qrow){nm && mk_json_at(j, nm)->type == MK_JSON_STR ? mk_json_strv(j, nm) : "?", jnum(j, o, "bits_per_weight"),
                  jnum(j, o, "rel_rmse"), jnum(j, o, "sqnr_db"), jnum(j, o, "max_abs_err"), jcount(j, o, "in_bytes"),
                  jcount(j, o, "out_bytes")};
}

/* quantize --json's document */
static mk_status quant_json_page(const mk_json *j, const char *path, uint32_t tensors, mk_report *r)
{
    const mk_json_node *a = mk_json_at(j, tensors);
    if (a->type != MK_JSON_ARR) return mk_error(MK_ERR_FORMAT, "%s: \"tensors\" is a %s, expected an array", path, mk_json_type_name(a->type));
    qrow *row = mk_calloc(a->count ? a->count : 1, sizeof *row);
    if (!row) return MK_ERR_NOMEM;
    size_t n = 0;
    for (uint32_t c = a->first; c; c = mk_json_at(j, c)->next) {
        if (mk_json_at(j, c)->type != MK_JSON_OBJ) {
            free(row);
            return mk_error(MK_ERR_FORMAT, "%s: tensors[%zu] is not an object", path, n);
        }
        row[n++] = json_qrow(j, c);
    }
    uint32_t t = mk_json_get(j, 0, "total"), d = mk_json_get(j, 0, "description");
    qrow tot = t && mk_json_at(j, t)->type == MK_JSON_OBJ ? json_qrow(j, t) : (qrow){0};
    char title[512];
    snprintf(title, sizeof title, "Quantization report: %s",
             d && mk_json_at(j, d)->type == MK_JSON_STR ? mk_json_strv(j, d) : path);
    mk_report_begin(r, title);
    quant_page(r, "Quantization error and size", row, n, &tot);
    free(row);
    return MK_OK;
}

/* The stored bytes of logical tensor `name`: every stored tensor named `name`, or `name`
 * followed by '.' or '_' (bitsandbytes' .absmax, .quant_map..., compressed-tensors' _packed,
 * _scale, _shape, _zero_point). */
static uint64_t stored_bytes(const mk_source *raw, const char *name)
{
    size_t ln = strlen(name);
    uint64_t b = 0;
    for (size_t i = 0; i < raw->n_tensors; i++) {
        const char *s = raw->tensors[i].name;
        if (strncmp(s, name, ln) == 0 && (s[ln] == 0 || s[ln] == '.' || s[ln] == '_')) b += raw->tensors[i].nbytes;
    }
    return b;
}

/* A quantized folder against the original: the error recomputed by dequantizing, tensor by
 * tensor in chunks. A logical tensor is quantized when the folder does not store it under
 * its name as the view lists it (packed codes, another dtype). */
static mk_status quant_ref_page(const char *path, const char *ref, mk_report *r)
{
    mk_source *raw = NULL, *inner = NULL, *view = NULL, *orig = NULL;
    mk_qinfo qi;
    float *a = NULL, *b = NULL;
    void *scratch = NULL;
    qrow *row = NULL;
    mk_status s = mk_cli_open_model(path, &raw);
    if (s == MK_OK) s = mk_cli_open_model(path, &inner);
    if (s == MK_OK) {
        s = mk_qsource_open(inner, &view, &qi);
        if (s == MK_OK) inner = NULL;
    }
    if (s == MK_OK && !qi.quantized) s = mk_error(MK_ERR_USAGE, "%s is not quantized; --ref compares a quantized model with its original", path);
    if (s == MK_OK) s = mk_cli_open_model_values(ref, &orig);
    const size_t chunk = 1u << 16;
    if (s == MK_OK) {
        a = mk_malloc(chunk * sizeof *a), b = mk_malloc(chunk * sizeof *b), scratch = mk_malloc(chunk * 8);
        row = mk_calloc(view->n_tensors ? view->n_tensors : 1, sizeof *row);
        if (!a || !b || !scratch || !row) s = MK_ERR_NOMEM;
    }
    size_t n = 0;
    double X2 = 0, E2 = 0;
    uint64_t numel_all = 0;
    qrow tot = {0};
    for (size_t i = 0; s == MK_OK && i < view->n_tensors; i++) {
        const mk_tensor_info *t = &view->tensors[i];
        long ri = mk_source_find(raw, t->name);
        if (ri >= 0 && raw->tensors[ri].dtype == t->dtype) continue; /* stored as it is: not quantized */
        long oi = mk_source_find(orig, t->name);
        if (oi < 0) {
            s = mk_error(MK_ERR_MISMATCH, "%s: tensor %s is not in %s", path, t->name, ref);
            break;
        }
        if (orig->tensors[oi].numel != t->numel) {
            s = mk_error(MK_ERR_MISMATCH, "tensor %s: %llu values in %s, %llu in %s", t->name, (unsigned long long)t->numel, path,
                         (unsigned long long)orig->tensors[oi].numel, ref);
            break;
        }
        double x2 = 0, e2 = 0, mx = 0;
        for (uint64_t e0 = 0; s == MK_OK && e0 < t->numel; e0 += chunk) {
            uint64_t m = t->numel - e0 < chunk ? t->numel - e0 : chunk;
            s = mk_source_read_f32(view, i, e0, m, a, scratch);
            if (s == MK_OK) s = mk_source_read_f32(orig, (size_t)oi, e0, m, b, scratch);
            for (uint64_t k = 0; s == MK_OK && k < m; k++) {
                double d = (double)a[k] - (double)b[k];
                x2 += (double)b[k] * b[k];
                e2 += d * d;
                mx = fabs(d) > mx ? fabs(d) : mx;
            }
        }
        uint64_t ob = stored_bytes(raw, t->name);
        row[n++] = (qrow){t->name, t->numel ? 8.0 * (double)ob / (double)t->numel : NAN, rel_of(x2, e2), sqnr_of(x2, e2), mx,
                          orig->tensors[oi].nbytes, ob};
        X2 += x2, E2 += e2, numel_all += t->numel;
        tot.in_bytes += orig->tensors[oi].nbytes, tot.out_bytes += ob;
        tot.max_err = mx > tot.max_err ? mx : tot.max_err;
    }
    if (s == MK_OK) {
        tot.bpw = numel_all ? 8.0 * (double)tot.out_bytes / (double)numel_all : 0;
        tot.rel = rel_of(X2, E2);
        tot.sqnr = sqnr_of(X2, E2);
        char d[160], title[512];
        snprintf(title, sizeof title, "Quantization report: %s, %s against %s", path, mk_qinfo_describe(&qi, d), ref);
        mk_report_begin(r, title);
        quant_page(r, "Quantization error and size (recomputed: dequantized against the original)", row, n, &tot);
    }
    free(row), free(a), free(b), free(scratch);
    mk_source_close(orig);
    mk_source_close(view);
    mk_source_close(inner);
    mk_source_close(raw);
    return s;
}

/* ---- eval ------------------------------------------------------------------------------------ */

static mk_status eval_json_page(const mk_json *j, const char *path, uint32_t refs, mk_report *r)
{
    const mk_json_node *a = mk_json_at(j, refs);
    if (a->type != MK_JSON_ARR) return mk_error(MK_ERR_FORMAT, "%s: \"refs\" is a %s, expected an array", path, mk_json_type_name(a->type));
    uint32_t m = mk_json_get(j, 0, "model");
    const char *model = m && mk_json_at(j, m)->type == MK_JSON_STR ? mk_json_strv(j, m) : path;
    char title[512], b[3][32], line[512];
    snprintf(title, sizeof title, "Eval report: %s", model);
    mk_report_begin(r, title);
    snprintf(line, sizeof line, "Perplexity %s +- %s over %llu scored tokens.", num(b[0], jnum(j, 0, "ppl"), "%.4f"),
             num(b[1], jnum(j, 0, "ppl_stderr"), "%.4f"), (unsigned long long)jcount(j, 0, "scored"));
    mk_report_p(r, line);
    if (!a->count) mk_report_p(r, "No reference model: eval --ref MODEL measures the KL divergence to it.");
    for (uint32_t c = a->first; c; c = mk_json_at(j, c)->next) {
        if (mk_json_at(j, c)->type != MK_JSON_OBJ) return mk_error(MK_ERR_FORMAT, "%s: an entry of \"refs\" is not an object", path);
        uint32_t rn = mk_json_get(j, c, "ref");
        const char *ref = rn && mk_json_at(j, rn)->type == MK_JSON_STR ? mk_json_strv(j, rn) : "?";
        snprintf(line, sizeof line, "KL divergence to %s", ref);
        mk_report_h2(r, line);
        snprintf(line, sizeof line, "mean %s, same top token %s, PPL ratio %s", num(b[0], jnum(j, c, "kl_mean"), "%.6g"),
                 num(b[1], jnum(j, c, "same_top"), "%.4f"), num(b[2], jnum(j, c, "ppl_ratio"), "%.5f"));
        mk_report_p(r, line);
        uint32_t h = mk_json_get(j, c, "kl_histogram");
        uint32_t he = h ? mk_json_get(j, h, "edges") : 0, hc = h ? mk_json_get(j, h, "counts") : 0;
        if (he && hc && mk_json_at(j, he)->type == MK_JSON_ARR && mk_json_at(j, hc)->type == MK_JSON_ARR &&
            mk_json_at(j, hc)->count == mk_json_at(j, he)->count + 1 && mk_json_at(j, hc)->count <= 256) {
            size_t nb = mk_json_at(j, hc)->count;
            double v[256], edge[256];
            char lab[256][40], tk[256][16];
            const char *lp[256], *tp[256];
            size_t k = 0;
            for (uint32_t e = mk_json_at(j, he)->first; e; e = mk_json_at(j, e)->next, k++) edge[k] = mk_json_at(j, e)->d;
            k = 0;
            for (uint32_t e = mk_json_at(j, hc)->first; e; e = mk_json_at(j, e)->next, k++) v[k] = mk_json_at(j, e)->d;
            for (k = 0; k < nb; k++) {
                if (k == 0) snprintf(lab[k], sizeof lab[k], "KL < %.3g", edge[0]);
                else if (k == nb - 1) snprintf(lab[k], sizeof lab[k], "KL >= %.3g", edge[k - 1]);
                else snprintf(lab[k], sizeof lab[k], "%.3g <= KL < %.3g", edge[k - 1], edge[k]);
                lp[k] = lab[k];
                snprintf(tk[k], sizeof tk[k], k ? "%.2g" : "0", k ? edge[k - 1] : 0.0);
                tp[k] = tk[k];
            }
            mk_report_bars(r, "Tokens per KL divergence bin (log-spaced bins, nats)", "KL divergence (nats; each bar from its tick to the next)", "tokens", nb, lp, tp, v);
        } else {
            mk_report_p(r, "This eval --json has no kl_histogram (an older mergekit-c): the quantiles only.");
        }
        static const char *const qk[] = {"kl_mean", "kl_median", "kl_p90", "kl_p95", "kl_p99", "kl_max"};
        static const char *const ql[] = {"mean", "median", "90 %", "95 %", "99 %", "max"};
        double qv[6];
        for (size_t q = 0; q < 6; q++) qv[q] = jnum(j, c, qk[q]);
        mk_report_bars(r, "KL divergence quantiles (nats per token)", "statistic", "KL (nats)", 6, ql, NULL, qv);
    }
    return MK_OK;
}

/* ---- merge ----------------------------------------------------------------------------------- */

mk_status mk_cli_report_merge(const mk_plan *p, const char *file)
{
    mk_tvstats st;
    MK_TRY(mk_tvstats_compute(p, &st));
    size_t nm = st.n_models, L = st.n_rows - 1;
    mk_report r;
    char title[512], line[512];
    snprintf(title, sizeof title, "Merge report: %s (%s)", p->recipe && p->recipe->path ? p->recipe->path : "recipe", p->method->name);
    mk_report_begin(&r, title);
    snprintf(line, sizeof line, "Base model %s; %zu other models; %zu tensors measured (%zu without a base input or another model), "
             "%zu layers.", p->models[st.base].ref->text, nm, st.tensors, st.skipped, L);
    mk_report_p(&r, line);
    mk_report_series *s = mk_calloc(nm ? nm : 1, sizeof *s);
    double *y = mk_calloc((L ? L : 1) * (nm ? nm : 1) * 2 + 2 * (L ? L : 1), sizeof *y);
    const char **names = mk_calloc(nm ? nm : 1, sizeof *names);
    mk_status ret = s && y && names ? MK_OK : MK_ERR_NOMEM;
    for (size_t k = 0; ret == MK_OK && k < nm; k++) names[k] = p->models[st.model[k]].ref->text;
    if (ret == MK_OK && L > 0) {
        mk_report_h2(&r, "Task vectors (model - base)");
        for (size_t k = 0; k < nm; k++) {
            for (size_t l = 0; l < L; l++) y[k * L + l] = st.elems[l] ? sqrt(st.sq[l * nm + k]) : NAN;
            s[k] = (mk_report_series){names[k], y + k * L};
        }
        mk_report_lines(&r, "Task-vector L2 norm per layer", "layer", "||model - base||", L, NULL, s, nm);
        /* cosines per layer: one series per pair (at most 8 pairs are drawn) */
        size_t np = 0;
        double *cy = y + nm * L;
        char pn[8][160];
        mk_report_series cs[8];
        for (size_t a = 0; a < nm && np < 8; a++)
            for (size_t b = a + 1; b < nm && np < 8; b++, np++) {
                for (size_t l = 0; l < L; l++) {
                    double d = sqrt(st.sq[l * nm + a]) * sqrt(st.sq[l * nm + b]);
                    cy[np * L + l] = d > 0 ? st.dot[(l * nm + a) * nm + b] / d : NAN;
                }
                snprintf(pn[np], sizeof pn[np], "%s vs %s", names[a], names[b]);
                cs[np] = (mk_report_series){pn[np], cy + np * L};
            }
        if (np) mk_report_lines(&r, "Cosine similarity of task vectors per layer", "layer", "cosine", L, NULL, cs, np);
        else mk_report_p(&r, "One model besides the base: no cosine similarities to draw.");
    }
    if (ret == MK_OK && nm > 0) {
        /* whole model: sums over every row */
        double *cm = mk_calloc(nm * nm, sizeof *cm);
        if (!cm) ret = MK_ERR_NOMEM;
        for (size_t a = 0; cm && a < nm; a++)
            for (size_t b = 0; b < nm; b++) {
                double d = 0, sa = 0, sb = 0;
                for (size_t l = 0; l < st.n_rows; l++)
                    d += st.dot[(l * nm + a) * nm + b], sa += st.sq[l * nm + a], sb += st.sq[l * nm + b];
                cm[a * nm + b] = a == b ? (sa > 0 ? 1 : NAN) : sa > 0 && sb > 0 ? d / sqrt(sa) / sqrt(sb) : NAN;
            }
        if (cm) mk_report_matrix(&r, "Cosine similarity of the whole task vectors", nm, names, cm);
        free(cm);
    }
    if (ret == MK_OK && L > 0) {
        mk_report_h2(&r, "TIES: trim by magnitude, elect a sign, keep what agrees");
        mk_report_p(&r, st.trimmed ? "Each task vector trimmed to the recipe's density (its largest magnitudes), the sign of the "
                                     "weighted sum elected per element."
                                   : "The method has no density: nothing is trimmed; the sign of the weighted sum is elected per element.");
        double *cr = y, *kd = y + L;
        for (size_t l = 0; l < L; l++) cr[l] = st.active[l] ? (double)st.conflict[l] / (double)st.active[l] : NAN;
        mk_report_series c1 = {"sign conflicts / elements with a kept delta", cr};
        mk_report_lines(&r, "Sign-conflict rate per layer", "layer", "share of elements", L, NULL, &c1, 1);
        for (size_t k = 0; k < nm; k++) {
            for (size_t l = 0; l < L; l++) kd[k * L + l] = st.elems[l] ? (double)st.kept[l * nm + k] / (double)st.elems[l] : NAN;
            s[k] = (mk_report_series){names[k], kd + k * L};
        }
        mk_report_lines(&r, "Kept density per layer (share of elements kept after trim and sign election)", "layer", "kept density",
                        L, NULL, s, nm);
    }
    free(s), free(y), free(names);
    mk_tvstats_free(&st);
    if (ret != MK_OK) {
        mk_report_free(&r);
        return ret;
    }
    return write_page(&r, file);
}

static mk_status merge_page(const char *recipe, const char *file, bool allow_crimes)
{
    mk_recipe rc;
    mk_status s = mk_recipe_load(recipe, &rc);
    if (s != MK_OK) {
        mk_recipe_free(&rc);
        return s == MK_ERR_USAGE ? mk_error_prefix(s, "cannot read recipe") : s;
    }
    const mk_model_ref *refs[1024];
    size_t n = mk_recipe_models(&rc, refs, 1024);
    mk_source **src = mk_calloc(n ? n : 1, sizeof *src);
    if (!src) s = MK_ERR_NOMEM;
    for (size_t i = 0; s == MK_OK && i < n; i++) {
        if (!mk_path_exists(refs[i]->path))
            s = mk_error(MK_ERR_RECIPE, "%s:%d:%d: model '%s' not found", rc.path, refs[i]->pos.line, refs[i]->pos.col, refs[i]->path);
        else if (refs[i]->lora) s = mk_cli_open_lora(refs[i]->path, refs[i]->lora, &src[i]);
        else s = mk_cli_open_model_values(refs[i]->path, &src[i]);
    }
    mk_plan p;
    memset(&p, 0, sizeof p);
    mk_plan_opts po = {allow_crimes, MK_DTYPE_NONE, NULL};
    if (s == MK_OK) s = mk_plan_build(&rc, src, n, &po, &p);
    if (s == MK_OK) s = mk_cli_report_merge(&p, file);
    mk_plan_free(&p);
    for (size_t i = 0; src && i < n; i++) mk_source_close(src[i]);
    free(src);
    mk_recipe_free(&rc);
    return s;
}

/* ---- the command ----------------------------------------------------------------------------- */

static mk_status json_page(const char *path, mk_report *r)
{
    char *text = NULL;
    size_t len = 0;
    MK_TRY(mk_read_file(path, MAX_JSON, &text, &len));
    mk_json j = {0};
    mk_json_limits lim = {64, len / 2 + 16};
    mk_status s = mk_json_parse(&j, text, len, &lim, path);
    if (s == MK_OK && mk_json_at(&j, 0)->type != MK_JSON_OBJ) s = mk_error(MK_ERR_USAGE, "%s: not a JSON object", path);
    uint32_t t = s == MK_OK ? mk_json_get(&j, 0, "tensors") : 0, rf = s == MK_OK ? mk_json_get(&j, 0, "refs") : 0;
    if (s == MK_OK && t && mk_json_get(&j, 0, "format")) s = quant_json_page(&j, path, t, r);
    else if (s == MK_OK && rf && mk_json_get(&j, 0, "ppl")) s = eval_json_page(&j, path, rf, r);
    else if (s == MK_OK)
        s = mk_error(MK_ERR_USAGE, "%s: neither the --json output of quantize (\"format\", \"tensors\") nor of eval (\"ppl\", \"refs\")",
                     path);
    if (s != MK_OK) mk_report_free(r);
    mk_json_free(&j);
    free(text);
    return s;
}

int mk_cmd_report(int argc, char **argv)
{
    mk_common c = {0};
    const char *out = "report.html", *ref = NULL;
    bool recipe = false, crimes = false;
    const mk_opt opts[] = {
        {"output", 'o', MK_OPT_STR, &out, "FILE", "the HTML page to write", "report.html"},
        {"recipe", 0, MK_OPT_FLAG, &recipe, NULL, "PATH is a merge's output folder: measure the merge of its recipe copy (mergekit_config.yml)", NULL},
        {"ref", 0, MK_OPT_STR, &ref, "ORIG", "PATH is a quantized model: recompute its error against the original ORIG", NULL},
        {"allow-crimes", 0, MK_OPT_FLAG, &crimes, NULL, "a recipe of different architectures (as merge --allow-crimes)", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "report", "PATH [-o report.html] [options]",
        "One self-contained HTML page with SVG plots (no script, nothing fetched) about a merge, a quantized\n"
        "model or an eval run.",
        "PATH is one of:\n"
        "  RECIPE.yaml          a merge: per layer, the norm of each model's task vector (model - base),\n"
        "                       the cosine similarity between the models' task vectors, the TIES\n"
        "                       sign-conflict rate and kept density; measured by streaming the inputs\n"
        "  OUT --recipe         the same for a merge's output folder, from its mergekit_config.yml\n"
        "  QUANT.json           the --json output of quantize: relative RMSE, SQNR and bits per weight\n"
        "                       per tensor and per layer\n"
        "  QUANT_DIR --ref ORIG a quantized folder: the same, recomputed by dequantizing it against ORIG\n"
        "  EVAL.json            the --json output of eval: the KL divergence per token as a histogram,\n"
        "                       and its quantiles, per reference\n"
        "merge --report FILE and quantize --report FILE write the page at the end of a run. Every name\n"
        "from the inputs is escaped; the same inputs give the same bytes.",
        opts, 1, 1, 0};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    const char *path = pos[0];
    mk_status s = MK_OK;
    mk_report r;
    memset(&r, 0, sizeof r);
    bool yaml = mk_str_ends_with(path, ".yaml") || mk_str_ends_with(path, ".yml");
    if (recipe && ref) s = mk_error(MK_ERR_USAGE, "report: --recipe (a merge) and --ref (a quantized model) exclude each other");
    else if (!mk_path_exists(path)) s = mk_error(MK_ERR_IO, "%s: no such file or folder", path);
    else if (recipe || yaml) {
        char *rp = recipe ? mk_asprintf("%s/mergekit_config.yml", path) : NULL;
        if (recipe && !rp) s = MK_ERR_NOMEM;
        else if (rp && !mk_path_exists(rp)) s = mk_error(MK_ERR_USAGE, "%s: no mergekit_config.yml (is it the output of a merge?)", path);
        else s = merge_page(rp ? rp : path, out, crimes);
        free(rp);
        if (s == MK_OK && !c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", out);
        return s == MK_OK ? 0 : mk_cli_fail(s);
    } else if (ref) s = quant_ref_page(path, ref, &r);
    else if (mk_is_dir(path))
        s = mk_error(MK_ERR_USAGE, "%s is a folder: name --recipe (the output of a merge) or --ref ORIG (a quantized model)", path);
    else s = json_page(path, &r);
    if (s == MK_OK) s = write_page(&r, out);
    if (s == MK_OK && !c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", out);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
