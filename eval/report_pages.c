/* report_pages.c - the quantization page and the pages read from quantize --json and
 * eval --json (report.h). */
#include "report.h"

#include "../core/mk_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KINDS 64   /* tensor kinds drawn per layer; more are left to the table */
#define MAX_LAYER 4095 /* a larger index in a name is drawn as no layer (a hostile file's 10^9 layers) */

static const char *num(char b[32], double v, const char *fmt)
{
    if (isfinite(v)) snprintf(b, 32, fmt, v);
    else snprintf(b, 32, "%s", isnan(v) ? "-" : v > 0 ? "inf" : "-inf");
    return b;
}

/* The layer of a tensor name: its first dotted component of digits ("model.layers.3.mlp...");
 * *rest points after it. -1 when none (or past MAX_LAYER: drawn as no layer). */
static long name_layer(const char *name, const char **rest)
{
    const char *p = name;
    while (*p) {
        const char *q = p;
        long v = 0;
        while (*q >= '0' && *q <= '9' && v <= MAX_LAYER) v = v * 10 + (*q++ - '0');
        if (q > p && v <= MAX_LAYER && (*q == '.' || !*q) && (p == name || p[-1] == '.')) {
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

void mk_report_quant(mk_report *r, const char *what, const mk_report_qrow *row, size_t n, const mk_report_qrow *tot)
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
        const mk_report_qrow *q = i < n ? &row[i] : tot;
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

static mk_report_qrow json_qrow(const mk_json *j, uint32_t o)
{
    uint32_t nm = mk_json_get(j, o, "name");
    return (mk_report_qrow){nm && mk_json_at(j, nm)->type == MK_JSON_STR ? mk_json_strv(j, nm) : "?", jnum(j, o, "bits_per_weight"),
                  jnum(j, o, "rel_rmse"), jnum(j, o, "sqnr_db"), jnum(j, o, "max_abs_err"), jcount(j, o, "in_bytes"),
                  jcount(j, o, "out_bytes")};
}

/* quantize --json's document */
static mk_status quant_json_page(const mk_json *j, const char *path, uint32_t tensors, mk_report *r)
{
    const mk_json_node *a = mk_json_at(j, tensors);
    if (a->type != MK_JSON_ARR) return mk_error(MK_ERR_FORMAT, "%s: \"tensors\" is a %s, expected an array", path, mk_json_type_name(a->type));
    mk_report_qrow *row = mk_calloc(a->count ? a->count : 1, sizeof *row);
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
    mk_report_qrow tot = t && mk_json_at(j, t)->type == MK_JSON_OBJ ? json_qrow(j, t) : (mk_report_qrow){0};
    char title[512];
    snprintf(title, sizeof title, "Quantization report: %s",
             d && mk_json_at(j, d)->type == MK_JSON_STR ? mk_json_strv(j, d) : path);
    mk_report_begin(r, title);
    mk_report_quant(r, "Quantization error and size", row, n, &tot);
    free(row);
    return MK_OK;
}

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

mk_status mk_report_json(mk_report *r, const char *text, size_t len, const char *path)
{
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
    return s;
}
