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
#include "../eval/report.h"
#include "../merge/plan.h"
#include "../merge/tvstats.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_JSON (256u << 20)

/* the page last written, for report --json */
static struct {
    unsigned plots;
    size_t bytes;
} written;

static mk_status write_page(mk_report *r, const char *file)
{
    char *html;
    size_t len;
    unsigned plots = r->plots;
    MK_TRY(mk_report_end(r, &html, &len));
    mk_status s = mk_write_file_atomic(file, html, len);
    free(html);
    if (s == MK_OK) written.plots = plots, written.bytes = len;
    return s;
}

/* ---- quantization ---------------------------------------------------------------------------- */

static double sqnr_of(double x2, double e2) { return e2 > 0 && x2 > 0 ? 10 * log10(x2 / e2) : e2 > 0 ? -INFINITY : INFINITY; }
static double rel_of(double x2, double e2) { return x2 > 0 ? sqrt(e2 / x2) : e2 > 0 ? INFINITY : 0; }

/* rows from the quantizer's own statistics (quantize --report, merge --quantize --report) */
mk_status mk_cli_report_quant(const mk_qplan *p, mk_consumer *cons, const char *file)
{
    mk_report_qrow *row = mk_calloc(p->n ? p->n : 1, sizeof *row);
    if (!row) return MK_ERR_NOMEM;
    size_t n = 0;
    double x2 = 0, e2 = 0;
    mk_report_qrow tot = {0};
    uint64_t numel = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_qstats *s = mk_quant_stats(cons, i);
        if (!s->quantized || !s->done || !s->numel) continue;
        row[n++] = (mk_report_qrow){p->in[i].name, 8.0 * (double)s->out_bytes / (double)s->numel, rel_of(s->sum_x2, s->sum_e2),
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
    mk_report_quant(&r, "Quantization error and size", row, n, &tot);
    free(row);
    return write_page(&r, file);
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
    mk_report_qrow *row = NULL;
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
    mk_report_qrow tot = {0};
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
        row[n++] = (mk_report_qrow){t->name, t->numel ? 8.0 * (double)ob / (double)t->numel : NAN, rel_of(x2, e2), sqnr_of(x2, e2), mx,
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
        mk_report_quant(r, "Quantization error and size (recomputed: dequantized against the original)", row, n, &tot);
    }
    free(row), free(a), free(b), free(scratch);
    mk_source_close(orig);
    mk_source_close(view);
    mk_source_close(inner);
    mk_source_close(raw);
    return s;
}

/* The page of a quantized folder against its original, written to `file` (quantize
 * --target-bpw --report: the formats differ per weight, so the page is read back). */
mk_status mk_cli_report_quant_ref(const char *path, const char *ref, const char *file)
{
    mk_report r;
    MK_TRY(quant_ref_page(path, ref, &r));
    return write_page(&r, file);
}

/* ---- eval ------------------------------------------------------------------------------------ */

/* ---- merge ----------------------------------------------------------------------------------- */

/* per layer: the task-vector norms, and the cosine of each pair (at most 8 pairs drawn) */
static mk_status tv_layers(mk_report *r, const mk_tvstats *st, const char *const *names)
{
    size_t nm = st->n_models, L = st->n_rows - 1, np = 0;
    mk_report_series *s = mk_calloc(nm + 8, sizeof *s);
    double *y = mk_calloc((nm + 8) * L, sizeof *y);
    char(*pn)[160] = mk_calloc(8, sizeof *pn);
    if (!s || !y || !pn) {
        free(s), free(y), free(pn);
        return MK_ERR_NOMEM;
    }
    mk_report_h2(r, "Task vectors (model - base)");
    for (size_t k = 0; k < nm; k++) {
        for (size_t l = 0; l < L; l++) y[k * L + l] = st->elems[l] ? sqrt(st->sq[l * nm + k]) : NAN;
        s[k] = (mk_report_series){names[k], y + k * L};
    }
    mk_report_lines(r, "Task-vector L2 norm per layer", "layer", "||model - base||", L, NULL, s, nm);
    for (size_t a = 0; a < nm && np < 8; a++)
        for (size_t b = a + 1; b < nm && np < 8; b++, np++) {
            double *cy = y + (nm + np) * L;
            for (size_t l = 0; l < L; l++) {
                double d = sqrt(st->sq[l * nm + a]) * sqrt(st->sq[l * nm + b]);
                cy[l] = d > 0 ? st->dot[(l * nm + a) * nm + b] / d : NAN;
            }
            snprintf(pn[np], sizeof pn[np], "%s vs %s", names[a], names[b]);
            s[nm + np] = (mk_report_series){pn[np], cy};
        }
    if (np) mk_report_lines(r, "Cosine similarity of task vectors per layer", "layer", "cosine", L, NULL, s + nm, np);
    else mk_report_p(r, "One model besides the base: no cosine similarities to draw.");
    free(s), free(y), free(pn);
    return MK_OK;
}

/* the whole model: cosines from the sums over every row */
static mk_status tv_matrix(mk_report *r, const mk_tvstats *st, const char *const *names)
{
    size_t nm = st->n_models;
    double *cm = mk_calloc(nm * nm, sizeof *cm);
    if (!cm) return MK_ERR_NOMEM;
    for (size_t a = 0; a < nm; a++)
        for (size_t b = 0; b < nm; b++) {
            double d = 0, sa = 0, sb = 0;
            for (size_t l = 0; l < st->n_rows; l++)
                d += st->dot[(l * nm + a) * nm + b], sa += st->sq[l * nm + a], sb += st->sq[l * nm + b];
            cm[a * nm + b] = a == b ? (sa > 0 ? 1 : NAN) : sa > 0 && sb > 0 ? d / sqrt(sa) / sqrt(sb) : NAN;
        }
    mk_report_matrix(r, "Cosine similarity of the whole task vectors", nm, names, cm);
    free(cm);
    return MK_OK;
}

/* TIES per layer: the sign-conflict rate and each model's kept density */
static mk_status tv_ties(mk_report *r, const mk_tvstats *st, const char *const *names)
{
    size_t nm = st->n_models, L = st->n_rows - 1;
    mk_report_series *s = mk_calloc(nm, sizeof *s);
    double *y = mk_calloc((nm + 1) * L, sizeof *y);
    if (!s || !y) {
        free(s), free(y);
        return MK_ERR_NOMEM;
    }
    mk_report_h2(r, "TIES: trim by magnitude, elect a sign, keep what agrees");
    mk_report_p(r, st->trimmed ? "Each task vector trimmed to the recipe's density (its largest magnitudes), the sign of the "
                                 "weighted sum elected per element."
                               : "The method has no density: nothing is trimmed; the sign of the weighted sum is elected per element.");
    for (size_t l = 0; l < L; l++) y[l] = st->active[l] ? (double)st->conflict[l] / (double)st->active[l] : NAN;
    mk_report_series c1 = {"sign conflicts / elements with a kept delta", y};
    mk_report_lines(r, "Sign-conflict rate per layer", "layer", "share of elements", L, NULL, &c1, 1);
    for (size_t k = 0; k < nm; k++) {
        double *kd = y + (k + 1) * L;
        for (size_t l = 0; l < L; l++) kd[l] = st->elems[l] ? (double)st->kept[l * nm + k] / (double)st->elems[l] : NAN;
        s[k] = (mk_report_series){names[k], kd};
    }
    mk_report_lines(r, "Kept density per layer (share of elements kept after trim and sign election)", "layer", "kept density", L,
                    NULL, s, nm);
    free(s), free(y);
    return MK_OK;
}

mk_status mk_cli_report_merge(const mk_plan *p, const char *file, const mk_common *c)
{
    if (!p->method) /* merge --resume found OUT complete */
        return mk_error(MK_ERR_USAGE, "--report: nothing was planned (the output was already complete); run 'mergekit-c report OUT --recipe'");
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
    const char **names = mk_calloc(nm ? nm : 1, sizeof *names);
    mk_status s = names ? MK_OK : MK_ERR_NOMEM;
    for (size_t k = 0; s == MK_OK && k < nm; k++) names[k] = p->models[st.model[k]].ref->text;
    if (s == MK_OK && L > 0) s = tv_layers(&r, &st, names);
    if (s == MK_OK && nm > 0) s = tv_matrix(&r, &st, names);
    if (s == MK_OK && L > 0) s = tv_ties(&r, &st, names);
    free(names);
    mk_tvstats_free(&st);
    if (s != MK_OK) {
        mk_report_free(&r);
        return s;
    }
    s = write_page(&r, file);
    if (s == MK_OK && c && !c->quiet) fprintf(stderr, "mergekit-c: wrote %s\n", file);
    return s;
}

static mk_status merge_page(const char *recipe, const char *file, bool allow_crimes, const mk_common *c)
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
    if (s == MK_OK) s = mk_cli_report_merge(&p, file, c);
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
    mk_status s = mk_report_json(r, text, len, path);
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
        else s = merge_page(rp ? rp : path, out, crimes, &c);
        free(rp);
    } else if (ref) s = quant_ref_page(path, ref, &r);
    else if (mk_is_dir(path))
        s = mk_error(MK_ERR_USAGE, "%s is a folder: name --recipe (the output of a merge) or --ref ORIG (a quantized model)", path);
    else s = json_page(path, &r);
    if (s == MK_OK && !recipe && !yaml && (s = write_page(&r, out)) == MK_OK && !c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", out);
    if (s == MK_OK && c.json) {
        mk_buf j = {0};
        mk_buf_puts(&j, "{\"page\": ");
        mk_buf_json_str(&j, out);
        mk_buf_printf(&j, ", \"of\": \"%s\", \"plots\": %u, \"bytes\": %zu}\n", recipe || yaml ? "merge" : ref ? "quantization" : "json",
                      written.plots, written.bytes);
        if (!j.failed) fputs(j.data, stdout);
        mk_buf_free(&j);
    }
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
