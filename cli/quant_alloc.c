/* quant_alloc.c - `quantize IN OUT --target-bpw B [--formats LIST] [--sensitivity weight]`:
 * mixed precision under a size budget (quant/alloc.h). IN -> every candidate format measured
 * on every quantizable weight (one read) -> a format per weight -> the allocation table
 * (stderr; --json on stdout) -> OUT.tmp: the shards, config.json whose quantization_config
 * has a config group per chosen format, the tokenizer files, a model card with the
 * allocation -> rename to OUT.
 * --sensitivity imatrix: the importances of an imatrix file (formats/imatrix.h) matched to the
 * model's weights by their llama.cpp names, as convert --imatrix matches them.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/gguf.h"
#include "../formats/imatrix.h"
#include "../formats/output.h"
#include "../model/gguf_names.h"
#include "../quant/alloc.h"
#include "../quant/qsource.h"
#include "gguf_moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The objective and bits of every candidate used alone (-1 bits: it cannot quantize some
 * weight), for comparison with the allocation. */
static void single_format(const mk_alloc_table *t, size_t k, double *bpw, double *err)
{
    double bits = 0, numel = 0;
    *err = 0;
    for (size_t m = 0; m < t->n; m++) {
        double b = t->bits[m * t->k + k];
        if (b < 0) {
            *bpw = -1;
            return;
        }
        bits += b;
        numel += (double)t->numel[m];
        *err += t->err[m * t->k + k];
    }
    *bpw = bits / numel;
}

static double total_err(const mk_alloc_table *t, const size_t *choice)
{
    double e = 0;
    for (size_t m = 0; m < t->n; m++) e += t->err[m * t->k + choice[m]];
    return e;
}

static const char *error_definition(const char *sensitivity)
{
    if (!strcmp(sensitivity, "kld-probe"))
        return "predicted KL divergence (nats per token): the weight's squared quantization error times the KL its group causes in "
               "the probe format per unit of the group's squared error";
    if (!strcmp(sensitivity, "fisher"))
        return "predicted KL divergence (nats per token): sum over the weight's elements of half the expected Fisher diagonal per token "
               "(from one backward pass per window of --sensitivity-text) times the squared quantization error";
    if (!strcmp(sensitivity, "imatrix"))
        return "sum over the weight's rows and columns of the column's importance (mean squared input activation, from the imatrix) "
               "times the squared quantization error: the expected squared error of the layer's output per token";
    return "sum over the weight of its squared quantization error";
}

/* --sensitivity imatrix: per tensor of src the importances of its columns (NULL: none),
 * found under the tensor's llama.cpp name (an expert's: its row of ffn_*_exps, gguf_moe.h);
 * each must have one per column. */
static mk_status load_imatrix(const char *path, mk_source *src, const mk_arch *arch, mk_imatrix *im, const float **imp)
{
    const mk_gguf_arch *ga = mk_cli_gguf_names_for(arch->model_type);
    if (!ga)
        return mk_error(MK_ERR_UNSUPPORTED, "--imatrix %s: model_type '%s' has no llama.cpp tensor names here, so the file's cannot be matched",
                        path, arch->model_type ? arch->model_type : "(none)");
    MK_TRY(mk_imatrix_read(path, im));
    mk_model_config cfg;
    MK_TRY(mk_model_config_of_source(src, &cfg));
    size_t used = 0;
    mk_status s = MK_OK;
    for (size_t i = 0; s == MK_OK && i < src->n_tensors; i++) {
        s = mk_cli_imatrix_for(im, path, src->path, &cfg, ga, &src->tensors[i], "matrix", &imp[i]);
        used += imp[i] != NULL;
    }
    mk_model_config_free(&cfg);
    MK_TRY(s);
    if (!used)
        return mk_error(MK_ERR_FORMAT, "%s: none of its %zu matrices (the first: %s) is a tensor of this model", path, im->n,
                        im->n ? im->e[0].name : "-");
    return MK_OK;
}

/* The allocation as JSON: self-describing (every weight's options too, for plots). */
static void alloc_json(mk_buf *j, const mk_cli_alloc_opts *a, const mk_alloc_cand *c, size_t nc, const mk_alloc_table *t,
                       const mk_tensor_info *in, const size_t *choice, double secs, double cpu)
{
    double bq, ba;
    mk_alloc_bpw(t, choice, &bq, &ba);
    mk_buf_printf(j, "{\"kind\": \"mergekit-c quantize allocation\", \"target_bpw\": %.6f, \"bpw_quantizable\": %.6f, "
                     "\"bpw_model\": %.6f, \"bpw_definition\": \"stored bits of the quantizable weights (codes, scales, zero "
                     "points, shapes) over their elements; bpw_model: every stored tensor over every parameter\", ",
                  a->target_bpw, bq, ba);
    mk_buf_printf(j, "\"sensitivity\": \"%s\", \"error_definition\": \"%s\", \"objective\": %.9g, \"seconds\": %.3f, \"cpu_seconds\": %.3f, \"formats\": [",
                  a->sensitivity, error_definition(a->sensitivity),
                  total_err(t, choice), secs, cpu);
    for (size_t k = 0; k < nc; k++) {
        double bpw, err;
        single_format(t, k, &bpw, &err);
        mk_buf_puts(j, k ? ", {\"format\": " : "{\"format\": ");
        mk_buf_json_str(j, c[k].name);
        if (bpw < 0) mk_buf_puts(j, ", \"alone_bpw\": null, \"alone_objective\": null}");
        else mk_buf_printf(j, ", \"alone_bpw\": %.6f, \"alone_objective\": %.9g}", bpw, err);
    }
    mk_buf_puts(j, "], \"tensors\": [");
    for (size_t m = 0; m < t->n; m++) {
        size_t k = choice[m];
        mk_buf_puts(j, m ? ",\n  {\"name\": " : "\n  {\"name\": ");
        mk_buf_json_str(j, in[t->w[m]].name);
        mk_buf_printf(j, ", \"numel\": %llu, \"format\": ", (unsigned long long)t->numel[m]);
        mk_buf_json_str(j, c[k].name);
        mk_buf_printf(j, ", \"bits_per_weight\": %.6f, \"predicted_error\": %.9g, \"sum_sq_error\": %.9g, \"sum_sq_weight\": %.9g, "
                         "\"sensitivity\": %.9g, \"options\": [",
                      t->bits[m * t->k + k] / (double)t->numel[m], t->err[m * t->k + k], t->se2[m * t->k + k], t->sx2[m], t->sens[m]);
        for (size_t q = 0, f = 0; q < nc; q++) {
            double b = t->bits[m * t->k + q];
            if (b < 0) continue;
            mk_buf_puts(j, f++ ? ", {\"format\": " : "{\"format\": ");
            mk_buf_json_str(j, c[q].name);
            mk_buf_printf(j, ", \"bits_per_weight\": %.6f, \"predicted_error\": %.9g}", b / (double)t->numel[m], t->err[m * t->k + q]);
        }
        mk_buf_puts(j, "]}");
    }
    mk_buf_puts(j, "\n]}\n");
}

/* The table (stderr, or the model card's body as Markdown). */
static void alloc_table(mk_buf *b, bool md, const mk_alloc_cand *c, const mk_alloc_table *t, const mk_tensor_info *in,
                        const size_t *choice)
{
    if (md) mk_buf_puts(b, "| tensor | format | bits/weight | predicted error | rel. RMSE |\n|---|---|---:|---:|---:|\n");
    else mk_buf_printf(b, "  %-56s %-18s %8s %14s %10s\n", "tensor", "format", "bits/w", "pred. error", "rel RMSE");
    for (size_t m = 0; m < t->n; m++) {
        size_t k = choice[m];
        double bpw = t->bits[m * t->k + k] / (double)t->numel[m];
        double rel = t->sx2[m] > 0 ? sqrt(t->se2[m * t->k + k] / t->sx2[m]) : 0;
        if (md) mk_buf_printf(b, "| `%s` | %s | %.3f | %.4g | %.4f |\n", in[t->w[m]].name, c[k].name, bpw, t->err[m * t->k + k], rel);
        else mk_buf_printf(b, "  %-56s %-18s %8.3f %14.5g %10.5f\n", in[t->w[m]].name, c[k].name, bpw, t->err[m * t->k + k], rel);
    }
}

static void alloc_summary(mk_buf *b, const mk_cli_alloc_opts *a, const mk_alloc_cand *c, size_t nc, const mk_alloc_table *t,
                          const size_t *choice)
{
    double bq, ba;
    mk_alloc_bpw(t, choice, &bq, &ba);
    mk_buf_printf(b, "target %.4f bits per weight: achieved %.4f over the %zu quantizable weights, %.4f over the whole model; "
                     "predicted error (%s) %.6g\n",
                  a->target_bpw, bq, t->n, ba, a->sensitivity, total_err(t, choice));
    for (size_t k = 0; k < nc; k++) {
        size_t used = 0;
        for (size_t m = 0; m < t->n; m++) used += choice[m] == k;
        double bpw, err;
        single_format(t, k, &bpw, &err);
        if (bpw < 0) mk_buf_printf(b, "  %-18s %4zu weights; alone: not every weight\n", c[k].name, used);
        else mk_buf_printf(b, "  %-18s %4zu weights; alone: %.4f bits per weight, predicted error %.6g\n", c[k].name, used, bpw, err);
    }
}

mk_status mk_cli_quant_config_files(mk_source *src, mk_output *o, char *qc, const char *in_path)
{
    if (!qc) return MK_ERR_NOMEM;
    mk_hfconfig_edit e = {NULL, NULL, 0, NULL, 0, qc, false, NULL};
    bool found;
    mk_status s = mk_output_config(o, src, &e, &found);
    free(qc);
    if (s == MK_OK && !found)
        mk_warn("%s has no config.json; the output has none, so loaders will not know its quantization", in_path);
    if (s == MK_OK) s = mk_output_tokenizer(o, src);
    return s;
}

mk_status mk_cli_quant_split(const char *qc, uint64_t shard_size, mk_source *src, const mk_tensor_info *t, size_t n, const char *out,
                             mk_part part, const mk_parts_manifest *finalize, int argc, char **argv, mk_parts_manifest *man, bool *done)
{
    mk_buf b = {0};
    mk_buf_printf(&b, "quantize|mergekit-c %s|%llu|%s", MK_VERSION, (unsigned long long)shard_size, qc);
    mk_cli_parts_hash_inputs(&b, src);
    char *key = !b.failed ? mk_parts_plan_hash(b.data, b.len, t, n) : NULL;
    mk_buf_free(&b);
    if (!key) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    if (finalize && strcmp(key, finalize->plan) != 0)
        s = mk_error(MK_ERR_MISMATCH,
                     "%s.tmp: the parts were written for another plan than this input and these options make now; rerun "
                     "every part, then finalize",
                     out);
    if (s == MK_OK && !finalize) s = mk_cli_parts_manifest(man, "quantize", argc, argv, key, part.n);
    char *tmp = s == MK_OK && !finalize ? mk_parts_tmp_path(out) : NULL;
    if (tmp) *done = mk_parts_complete(tmp, part, key);
    free(tmp);
    free(key);
    return s;
}

/* config.json, the tokenizer files, the model card with the allocation. */
static mk_status write_aux(mk_source *src, mk_output *o, const mk_alloc_write *w, const mk_cli_alloc_opts *a, const mk_alloc_cand *c,
                           size_t nc, const mk_alloc_table *t, const mk_tensor_info *in, const size_t *choice, const char *in_path,
                           const char *out_path)
{
    mk_status s = mk_cli_quant_config_files(src, o, mk_alloc_config_json(w), in_path);
    if (s != MK_OK) return s;
    char *title = mk_path_basename(out_path);
    mk_buf b = {0};
    mk_buf_printf(&b, "---\nlibrary_name: transformers\ntags:\n- mergekit-c\n- quantized\n- mixed-precision\n---\n# %s\n\n",
                  title ? title : "quantized");
    free(title);
    char *imx = a->imatrix ? mk_path_basename(a->imatrix) : NULL;
    mk_buf_printf(&b, "`%s` quantized with mergekit-c %s (`quantize --target-bpw %g --sensitivity %s%s%s`): a format per weight, "
                      "chosen to minimise the total predicted error within the size budget.\n\n",
                  in_path, MK_VERSION, a->target_bpw, a->sensitivity, imx ? " --imatrix " : "", imx ? imx : "");
    free(imx);
    alloc_summary(&b, a, c, nc, t, choice);
    mk_buf_puts(&b, "\nEmbeddings, lm_head, norms and biases keep their dtype.\n\n## Allocation\n\n");
    alloc_table(&b, true, c, t, in, choice);
    mk_buf_puts(&b, "\nLoad it with vLLM, or with transformers and compressed-tensors "
                    "(`CompressedTensorsConfig(run_compressed=False)` to decompress).\n");
    s = b.failed ? MK_ERR_NOMEM : mk_output_file(o, "README.md", b.data, b.len);
    mk_buf_free(&b);
    return s;
}

static mk_status write_out(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_cli_alloc_opts *a, const mk_common *cm,
                           const mk_alloc_cand *c, size_t nc, const mk_alloc_table *t, const size_t *choice, const char *in,
                           const char *out, bool probe)
{
    mk_alloc_write *w = NULL;
    const mk_tensor_info *list;
    size_t nlist;
    mk_status s = mk_alloc_write_plan(&w, src, idx, arch, src->tensors, src->n_tensors, c, nc, t, choice, a->skip, a->chunk, &list, &nlist);
    mk_output oo = {0};
    mk_consumer cons = {0};
    /* --part I/N and finalize (not the kld probe): every part computes the same allocation,
     * which the plan's hash holds (the config groups' targets) */
    mk_parts_manifest man = {0};
    bool split = !probe && (a->part.n || a->finalize), done = false;
    char *qc = s == MK_OK && split ? mk_alloc_config_json(w) : NULL;
    if (s == MK_OK && split)
        s = qc ? mk_cli_quant_split(qc, a->shard_size, src, list, nlist, out, a->part, a->finalize, a->argc, a->argv, &man, &done) : MK_ERR_NOMEM;
    free(qc);
    if (s == MK_OK && done) {
        if (!cm->quiet) fprintf(stderr, "mergekit-c: part %u/%u of %s is already complete; nothing to do\n", a->part.i, a->part.n, out);
        mk_parts_manifest_free(&man);
        mk_alloc_write_free(w);
        return MK_OK;
    }
    mk_output_opts opt = {.shard_size = a->shard_size, .force = a->force || probe, .part = split ? a->part : (mk_part){0},
                          .finalize = split && a->finalize, .manifest = a->finalize ? a->finalize : &man};
    if (s == MK_OK) s = mk_output_begin(&oo, out, &opt, list, nlist);
    if (s == MK_OK) s = mk_alloc_consumer(w, oo.k, &cons);
    mk_progress prog;
    mk_progress_init(&prog, probe ? "probe" : "quantize", cm);
    mk_qstream_opts qso = {a->chunk, mk_progress_cb, &prog};
    if (s == MK_OK) s = mk_qstream_run(src, idx, src->tensors, src->n_tensors, &cons, &qso);
    mk_progress_end(&prog);
    /* the writer's own error equals the measured one (the same encoders on the same values;
     * chunks may differ, so the sums' order: 1e-9 relative) */
    for (size_t m = 0; s == MK_OK && !split && m < t->n; m++) { /* a part writes some weights */
        double got = mk_alloc_written_se2(w, t->w[m]), want = t->se2[m * t->k + choice[m]];
        if (fabs(got - want) > 1e-9 * fabs(want))
            s = mk_error(MK_ERR_MISMATCH, "%s: written with squared error %.9g, measured %.9g", src->tensors[t->w[m]].name, got, want);
    }
    bool part = split && a->part.n;
    if (s == MK_OK && !part) s = write_aux(src, &oo, w, a, c, nc, t, src->tensors, choice, in, out);
    if (s == MK_OK) s = mk_output_seal(&oo);
    if (s == MK_OK) s = part ? mk_output_part_done(&oo, NULL, 0) : mk_output_commit(&oo);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&oo);
    mk_parts_manifest_free(&man);
    mk_alloc_write_free(w);
    if (s == MK_OK && !cm->quiet && part)
        fprintf(stderr, "mergekit-c: wrote part %u/%u of %s; once every part is done: mergekit-c finalize %s\n", a->part.i, a->part.n, out, out);
    else if (s == MK_OK && !cm->quiet && !probe) fprintf(stderr, "mergekit-c: wrote %s%s\n", out, split ? " (finalized from its parts)" : "");
    return s;
}

/* --sensitivity kld-probe: the cheapest format that quantizes every weight is the probe; the
 * whole model written in it to a scratch folder; then the KL of each group (quant_kld.c). */
static mk_status kld_sensitivity(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_cli_alloc_opts *a, const mk_common *cm,
                                 const mk_alloc_cand *c, size_t nc, mk_alloc_table *t, size_t *choice, const char *in)
{
    size_t probe = SIZE_MAX;
    double best = 0;
    for (size_t k = 0; k < nc; k++) {
        double bpw, err;
        single_format(t, k, &bpw, &err);
        if (!c[k].keep && bpw >= 0 && (probe == SIZE_MAX || bpw < best)) probe = k, best = bpw;
    }
    if (probe == SIZE_MAX)
        return mk_error(MK_ERR_USAGE, "--sensitivity kld-probe probes with a format that quantizes every weight; --formats has none");
    for (size_t m = 0; m < t->n; m++) choice[m] = probe;
    const char *tmp = getenv("TMPDIR");
    char *dir = mk_asprintf("%s/mergekit-c-kld-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!dir) return MK_ERR_NOMEM;
    if (!mkdtemp(dir)) {
        mk_status s = mk_error(MK_ERR_IO, "%s: cannot make a scratch folder for the probe checkpoint", dir);
        free(dir);
        return s;
    }
    char *pdir = mk_asprintf("%s/probe", dir);
    mk_status s = pdir ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !cm->quiet) fprintf(stderr, "mergekit-c: kld-probe: probing with %s\n", c[probe].name);
    if (s == MK_OK) s = write_out(src, idx, arch, a, cm, c, nc, t, choice, in, pdir, true);
    if (s == MK_OK) s = mk_cli_alloc_kld(src, pdir, t, probe, a->text, (size_t)(a->ctx ? a->ctx : 128), (size_t)(a->chunks ? a->chunks : 2), cm);
    (void)mk_rm_rf(dir);
    free(pdir);
    free(dir);
    return s;
}

/* The measuring pass with the sensitivity's weights: none (weight, kld: kld_sensitivity
 * rescales afterwards), the imatrix's per column, or half the Fisher diagonal per element
 * (computed first on the text: ctx x chunks). */
static mk_status measure_table(mk_source *src, const size_t *idx, const mk_arch *arch, const mk_cli_alloc_opts *a, const mk_common *cm,
                               const mk_alloc_cand *c, size_t nc, size_t ctx, size_t chunks, mk_alloc_table *t)
{
    bool imx = !strcmp(a->sensitivity, "imatrix"), fis = !strcmp(a->sensitivity, "fisher");
    mk_imatrix im = {0};
    size_t n = src->n_tensors ? src->n_tensors : 1;
    const float **wt = imx || fis ? mk_calloc(n, sizeof *wt) : NULL; /* per tensor: importances, or F/2 */
    float *fisher = NULL; /* F/2 of every trained parameter (one f32 each) */
    mk_status s = (imx || fis) && !wt ? MK_ERR_NOMEM : MK_OK;
    if (s == MK_OK && imx) s = load_imatrix(a->imatrix, src, arch, &im, wt);
    if (s == MK_OK && fis) s = mk_cli_alloc_fisher(src, a->text, ctx, chunks, cm, &fisher, wt);
    if (s == MK_OK && fis) s = mk_alloc_measure_elem(src, idx, arch, src->tensors, src->n_tensors, c, nc, a->skip, wt, t);
    if (s == MK_OK && !fis) {
        s = mk_alloc_measure(src, idx, arch, src->tensors, src->n_tensors, c, nc, a->skip, wt, t);
        if (s != MK_OK && imx) s = mk_error_prefix(s, "%s", a->imatrix);
    }
    free(fisher);
    free(wt);
    mk_imatrix_free(&im);
    return s;
}

mk_status mk_cli_quant_alloc(const mk_cli_alloc_opts *a, const mk_common *cm, const char *in, const char *out)
{
    mk_alloc_cand c[MK_ALLOC_MAX_CANDS];
    size_t nc = 0;
    MK_TRY(mk_alloc_cands_parse(a->formats, c, &nc));
    bool kld = !strcmp(a->sensitivity, "kld-probe"), imx = !strcmp(a->sensitivity, "imatrix"), fis = !strcmp(a->sensitivity, "fisher");
    if (strcmp(a->sensitivity, "weight") != 0 && !kld && !imx && !fis)
        return mk_error(MK_ERR_USAGE, "--sensitivity %s: expected weight, imatrix, kld (also named fisher) or kld-probe", a->sensitivity);
    if (imx != (a->imatrix != NULL))
        return mk_error(MK_ERR_USAGE, imx ? "--sensitivity imatrix weighs the error by an importance matrix: give --imatrix FILE"
                                          : "--imatrix is for --sensitivity imatrix");
    if ((kld || fis) && !a->text)
        return mk_error(MK_ERR_USAGE, "--sensitivity %s runs the model on a text: give --sensitivity-text FILE", a->sensitivity);
    if (!kld && !fis && a->text) return mk_error(MK_ERR_USAGE, "--sensitivity-text is for --sensitivity kld (fisher) or kld-probe");
    long ctx = a->ctx ? a->ctx : fis ? 512 : 128, chunks = a->chunks ? a->chunks : fis ? 16 : 2; /* 0: the sensitivity's default */
    if ((kld || fis) && (ctx < 8 || ctx > 65536 || chunks < 1 || chunks > 4096))
        return mk_error(MK_ERR_USAGE, "--sensitivity-ctx %ld / --sensitivity-chunks %ld: expected 8..65536 tokens and 1..4096 windows",
                        ctx, chunks);
    if (!(a->target_bpw > 0) || a->target_bpw > 64) return mk_error(MK_ERR_USAGE, "--target-bpw %g: expected a number in (0, 64]", a->target_bpw);
    mk_source *src = NULL;
    mk_qinfo qi;
    mk_status s = mk_cli_open_model(in, &src);
    if (s == MK_OK) s = mk_qsource_probe(src, &qi);
    if (s == MK_OK && qi.quantized) {
        char d[160];
        s = mk_error(MK_ERR_USAGE, "%s is already quantized (%s); dequantize it first (mergekit-c dequantize)", in, mk_qinfo_describe(&qi, d));
    }
    if (s == MK_OK && !a->dry_run) s = mk_cli_check_output(out, &in, 1);
    mk_arch arch = {0};
    if (s == MK_OK) s = mk_arch_of_source(src, &arch);
    size_t *idx = s == MK_OK ? mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *idx) : NULL;
    if (s == MK_OK && !idx) s = MK_ERR_NOMEM;
    for (size_t i = 0; idx && i < src->n_tensors; i++) idx[i] = i;
    mk_alloc_table t = {0};
    double t0 = mk_now(), c0 = (double)clock() / CLOCKS_PER_SEC; /* clock(): the CPU time of every thread */
    if (s == MK_OK) s = measure_table(src, idx, &arch, a, cm, c, nc, (size_t)ctx, (size_t)chunks, &t);
    size_t *choice = s == MK_OK ? mk_calloc(t.n, sizeof *choice) : NULL;
    if (s == MK_OK && !choice) s = MK_ERR_NOMEM;
    if (s == MK_OK && kld) s = kld_sensitivity(src, idx, &arch, a, cm, c, nc, &t, choice, in);
    double numel = 0, t1 = mk_now();
    for (size_t m = 0; s == MK_OK && m < t.n; m++) numel += (double)t.numel[m];
    if (s == MK_OK) {
        mk_alloc_problem pr = {t.n, t.k, t.bits, t.err, t.numel};
        s = mk_alloc_solve(&pr, a->target_bpw * numel, choice);
        if (s != MK_OK) s = mk_error_prefix(s, "--target-bpw %g", a->target_bpw);
    }
    double secs = mk_now() - t0, solve_secs = mk_now() - t1, cpu = (double)clock() / CLOCKS_PER_SEC - c0;
    if (s == MK_OK) {
        mk_buf b = {0};
        if (cm->json) {
            alloc_json(&b, a, c, nc, &t, src->tensors, choice, secs, cpu);
            if (!b.failed) fputs(b.data, stdout);
        } else if (!cm->quiet) {
            alloc_table(&b, false, c, &t, src->tensors, choice);
            alloc_summary(&b, a, c, nc, &t, choice);
            mk_buf_printf(&b, "measured and allocated in %.2f s, %.2f s of CPU (the allocation itself %.3f s)\n", secs, cpu, solve_secs);
            if (!b.failed) fputs(b.data, stderr);
        }
        mk_buf_free(&b);
    }
    if (s == MK_OK && !a->dry_run) s = write_out(src, idx, &arch, a, cm, c, nc, &t, choice, in, out, false);
    free(choice);
    mk_alloc_table_free(&t);
    free(idx);
    mk_arch_free(&arch);
    mk_source_close(src);
    return s;
}
