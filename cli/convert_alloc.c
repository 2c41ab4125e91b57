/* convert_alloc.c - `convert MODEL OUT.gguf --target-bpw B [--types LIST] [--sensitivity
 * weight|imatrix]`: a llama.cpp type per matrix (quant/alloc_gguf.h measures, mk_alloc_solve
 * chooses) minimising the total predicted error within B bits per weight of the file's
 * matrices; the allocation printed (table on stderr, --json on stdout) and recorded in the
 * GGUF metadata (mergekit-c.quantize.*). cmd_convert.c plans the tensors and writes the
 * bytes with the encoders of `convert --type T`.
 * Rules: the output matrix (the token embedding when tied) keeps the type llama-quantize's
 * mixes give it (q6_k; q8_0 when its rows are not whole 256-value blocks) and counts in the
 * budget; every other matrix takes a candidate, or llama-quantize's fallback for it where a
 * row is not whole blocks of it (q2_k, q3_k -> q4_0, q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0;
 * f16 when not even those fit).
 */
#include "cli.h"

#include "../formats/gguf_write.h"
#include "../model/gguf_names.h"
#include "../quant/alloc.h"
#include "../quant/alloc_gguf.h"
#include "../quant/ggml_mix.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bpw_run {
    const mk_cli_bpw_opts *o;
    mk_cli_bpw_mat *m;
    size_t n, nt, k;            /* matrices, candidate types, columns (nt + the fixed one) */
    uint32_t cand[MK_ALLOC_GGUF_MAX_TYPES];
    uint32_t *type;             /* [n * k] */
    double *bits, *se2, *err;   /* [n * k] */
    uint64_t *numel;            /* [n] */
    size_t *choice;             /* [n] */
    double numel_all;
} bpw_run;

static const char *lower(uint32_t t, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", mk_ggml_type_of(t)->name);
    for (char *p = buf; *p; p++) *p = (char)tolower((unsigned char)*p);
    return buf;
}

/* The bits and objective of the choice, and of candidate j everywhere (the fixed matrices as
 * they are); -1 bits where j reaches no matrix. */
static void totals(const bpw_run *r, const size_t *choice, size_t j, double *bits, double *err)
{
    *bits = *err = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t c = choice ? choice[i] : r->m[i].fixed ? r->nt : j;
        *bits += r->bits[i * r->k + c];
        *err += r->err[i * r->k + c];
    }
}

static const char *error_definition(const char *sens)
{
    return !strcmp(sens, "imatrix") ? "sum over the matrix of the column's importance (the imatrix's mean squared input activation) "
                                      "times the squared error of the type's round trip"
                                    : "sum over the matrix of the squared error of the type's round trip (encode, decode)";
}

/* The allocation as one JSON object (convert's --json summary holds it as "allocation"). */
static char *alloc_json(const bpw_run *r, double secs)
{
    double bits, err;
    char nb[16];
    totals(r, r->choice, 0, &bits, &err);
    mk_buf j = {0};
    mk_buf_printf(&j, "{\"kind\": \"mergekit-c convert allocation\", \"target_bpw\": %.6f, \"bpw\": %.6f, \"bpw_definition\": \"stored "
                      "bits of the file's matrices (every 2-D weight, the output matrix included) over their elements\", "
                      "\"sensitivity\": \"%s\", \"error_definition\": \"%s\", \"objective\": %.9g, \"seconds\": %.3f, \"types\": [",
                  r->o->target, bits / r->numel_all, r->o->sensitivity, error_definition(r->o->sensitivity), err, secs);
    for (size_t c = 0; c < r->nt; c++) {
        double b, e;
        totals(r, NULL, c, &b, &e);
        mk_buf_printf(&j, "%s{\"type\": \"%s\", \"alone_bpw\": %.6f, \"alone_objective\": %.9g}", c ? ", " : "",
                      lower(r->cand[c], nb, sizeof nb), b / r->numel_all, e);
    }
    mk_buf_puts(&j, "], \"tensors\": [");
    for (size_t i = 0; i < r->n; i++) {
        size_t c = r->choice[i], at = i * r->k + c;
        mk_buf_puts(&j, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
        mk_buf_json_str(&j, r->m[i].name);
        mk_buf_printf(&j, ", \"numel\": %llu, \"type\": \"%s\", \"fixed\": %s, \"bits_per_weight\": %.6f, \"predicted_error\": %.9g, "
                          "\"sum_sq_error\": %.9g, \"options\": [",
                      (unsigned long long)r->numel[i], lower(r->type[at], nb, sizeof nb), r->m[i].fixed ? "true" : "false",
                      r->bits[at] / (double)r->numel[i], r->err[at], r->se2[at]);
        for (size_t q = 0, f = 0; q < r->k; q++) {
            size_t a = i * r->k + q;
            if (r->bits[a] < 0) continue;
            mk_buf_printf(&j, "%s{\"candidate\": \"%s\", \"type\": \"%s\", \"bits_per_weight\": %.6f, \"predicted_error\": %.9g}",
                          f++ ? ", " : "", q < r->nt ? lower(r->cand[q], nb, sizeof nb) : "fixed", mk_ggml_type_of(r->type[a])->name,
                          r->bits[a] / (double)r->numel[i], r->err[a]);
        }
        mk_buf_puts(&j, "]}");
    }
    mk_buf_puts(&j, "\n]}");
    if (j.failed) mk_buf_free(&j);
    return j.data;
}

static void print_table(const bpw_run *r, double secs)
{
    double bits, err;
    char nb[16];
    totals(r, r->choice, 0, &bits, &err);
    mk_buf b = {0};
    mk_buf_printf(&b, "  %-40s %-7s %8s %14s\n", "tensor", "type", "bits/w", "pred. error");
    for (size_t i = 0; i < r->n; i++) {
        size_t at = i * r->k + r->choice[i];
        mk_buf_printf(&b, "  %-40s %-7s %8.3f %14.5g%s\n", r->m[i].name, lower(r->type[at], nb, sizeof nb), r->bits[at] / (double)r->numel[i],
                      r->err[at], r->m[i].fixed ? "  (output matrix: fixed)" : "");
    }
    mk_buf_printf(&b, "target %.4f bits per weight: achieved %.4f over the %zu matrices; predicted error (%s) %.6g\n", r->o->target,
                  bits / r->numel_all, r->n, r->o->sensitivity, err);
    for (size_t c = 0; c < r->nt; c++) {
        size_t used = 0;
        for (size_t i = 0; i < r->n; i++) used += r->choice[i] == c;
        double bb, e;
        totals(r, NULL, c, &bb, &e);
        mk_buf_printf(&b, "  %-7s %4zu matrices; alone: %.4f bits per weight, predicted error %.6g\n", lower(r->cand[c], nb, sizeof nb), used,
                      bb / r->numel_all, e);
    }
    mk_buf_printf(&b, "measured and allocated in %.2f s\n", secs);
    if (!b.failed) fputs(b.data, stderr);
    mk_buf_free(&b);
}

/* --sensitivity imatrix: a matrix without importances (an untied token embedding: llama-imatrix
 * sees no product with it) has its squared error weighted by the mean importance of the rest. */
static void weigh_uncovered(bpw_run *r, const mk_alloc_gguf_mat *mm)
{
    double sum = 0, cnt = 0;
    for (size_t i = 0; i < r->n; i++)
        for (uint64_t c = 0; mm[i].imp && c < mm[i].cols; c++) sum += mm[i].imp[c], cnt++;
    double mean = cnt ? sum / cnt : 1;
    for (size_t i = 0; i < r->n; i++) {
        if (mm[i].weigh_error) continue;
        if (!r->m[i].fixed) mk_warn("--imatrix has no importances for %s: its squared error is weighted by the mean importance %.4g", r->m[i].name, mean);
        for (size_t c = 0; c < r->k; c++) r->err[i * r->k + c] = r->se2[i * r->k + c] * mean;
    }
}

static mk_status run(bpw_run *r, mk_source *src, const mk_common *cm, char **json)
{
    const mk_cli_bpw_opts *o = r->o;
    size_t n = r->n, k = r->k;
    mk_alloc_gguf_mat *mm = mk_calloc(n ? n : 1, sizeof *mm);
    r->type = mk_calloc(n * k + 1, sizeof *r->type);
    r->bits = mk_calloc(n * k + 1, sizeof *r->bits);
    r->se2 = mk_calloc(n * k + 1, sizeof *r->se2);
    r->err = mk_calloc(n * k + 1, sizeof *r->err);
    r->numel = mk_calloc(n + 1, sizeof *r->numel);
    r->choice = mk_calloc(n + 1, sizeof *r->choice);
    if (!mm || !r->type || !r->bits || !r->se2 || !r->err || !r->numel || !r->choice) {
        free(mm);
        return MK_ERR_NOMEM;
    }
    bool imx = !strcmp(o->sensitivity, "imatrix");
    for (size_t i = 0; i < n; i++) {
        const mk_cli_bpw_mat *q = &r->m[i];
        mm[i] = (mk_alloc_gguf_mat){q->src, q->rows, q->cols, q->imp, imx && q->imp};
        for (size_t c = 0; c < k; c++)
            r->type[i * k + c] = q->fixed ? (c == r->nt ? q->type : UINT32_MAX) : c == r->nt ? UINT32_MAX : mk_ggml_mix_fallback(r->cand[c], q->cols);
        r->numel[i] = q->rows * q->cols;
        r->numel_all += (double)r->numel[i];
    }
    double t0 = mk_now();
    mk_status s = mk_alloc_gguf_measure(src, mm, n, r->type, k, r->bits, r->se2, r->err);
    if (s == MK_OK && imx) weigh_uncovered(r, mm);
    free(mm);
    if (s == MK_OK) {
        mk_alloc_problem p = {n, k, r->bits, r->err, r->numel};
        s = mk_alloc_solve(&p, o->target * r->numel_all, r->choice);
        if (s != MK_OK) s = mk_error_prefix(s, "--target-bpw %g", o->target);
    }
    if (s != MK_OK) return s;
    for (size_t i = 0; i < n; i++) r->m[i].type = r->type[i * k + r->choice[i]];
    if (cm->json && !(*json = alloc_json(r, mk_now() - t0))) return MK_ERR_NOMEM;
    if (!cm->json && !cm->quiet) print_table(r, mk_now() - t0);
    return MK_OK;
}

mk_status mk_cli_convert_alloc(const mk_cli_bpw_opts *o, const mk_common *cm, mk_source *src, mk_cli_bpw_mat *m, size_t n,
                               mk_cli_bpw_result *res)
{
    bpw_run r = {.o = o, .m = m, .n = n};
    if (!(o->target > 0) || o->target > 32) return mk_error(MK_ERR_USAGE, "--target-bpw %g: expected a number in (0, 32]", o->target);
    if (strcmp(o->sensitivity, "weight") != 0 && strcmp(o->sensitivity, "imatrix") != 0)
        return mk_error(MK_ERR_USAGE, "--sensitivity %s: expected weight or imatrix", o->sensitivity);
    if (!strcmp(o->sensitivity, "imatrix") && !o->imatrix)
        return mk_error(MK_ERR_USAGE, "--sensitivity imatrix weighs the error by an importance matrix: give --imatrix FILE");
    MK_TRY(mk_alloc_gguf_types_parse("--types", o->types, r.cand, &r.nt));
    if (!n) return mk_error(MK_ERR_USAGE, "the model has no matrix to quantize");
    r.k = r.nt + 1;
    res->json = NULL;
    mk_status s = run(&r, src, cm, &res->json);
    if (s == MK_OK) {
        double bits, err;
        totals(&r, r.choice, 0, &bits, &err);
        res->bpw = bits / r.numel_all;
        res->objective = err;
        /* the type holding the most elements names the file type */
        double best = -1;
        for (size_t i = 0; i < n; i++) {
            double e = 0;
            for (size_t a = 0; a < n; a++) e += m[a].type == m[i].type ? (double)r.numel[a] : 0;
            if (e > best) best = e, res->main_type = m[i].type;
        }
    }
    free(r.type);
    free(r.bits);
    free(r.se2);
    free(r.err);
    free(r.numel);
    free(r.choice);
    return s;
}

void mk_cli_convert_alloc_metadata(mk_gguf_w *w, const mk_cli_bpw_opts *o, const mk_cli_bpw_result *res)
{
    mk_gguf_w_f32(w, "mergekit-c.quantize.target_bpw", (float)o->target);
    mk_gguf_w_f32(w, "mergekit-c.quantize.bpw", (float)res->bpw);
    mk_gguf_w_str(w, "mergekit-c.quantize.types", o->types ? o->types : mk_alloc_gguf_default_types);
    mk_gguf_w_str(w, "mergekit-c.quantize.sensitivity", o->sensitivity);
    mk_gguf_w_f32(w, "mergekit-c.quantize.objective", (float)res->objective);
}
