/* cmd_quantize.c - `quantize IN OUT --format F` (also `mergekit-c quantize`): post-training
 * quantization of a checkpoint into the layouts transformers + bitsandbytes and
 * compressed-tensors / vLLM load; `quantize --list-formats` lists the format table.
 *
 * IN (headers) -> plan: which tensors are quantized and what they become -> [the formats'
 * offsets: one pass over the weights that need one] -> OUT.tmp: shards streamed tensor by
 * tensor, config.json with quantization_config, tokenizer files, README.md -> rename to
 * OUT. Then the report: per tensor and in total, bits per weight, relative RMSE, SQNR, max
 * abs error, sizes. The format list, the format options, their help and their defaults come
 * from quant/'s format and settings tables; this file names no format.
 */
#include "cli.h"

#include "../core/mk_dstream.h"
#include "../core/mk_io.h"
#include "../formats/gguf.h"
#include "../formats/imatrix.h"
#include "gguf_moe.h"
#include "../formats/output.h"
#include "../model/gguf_names.h"
#include "../quant/qsource.h"
#include "../quant/alloc.h"
#include "../quant/search_proxy.h"
#include "../model/config.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETTINGS 16

typedef struct quant_cli {
    mk_common c;
    const char *format;
    const char *value[MAX_SETTINGS]; /* per entry of mk_qsettings: the value given */
    bool flag[MAX_SETTINGS];         /* ... or the flag */
    bool force, dry_run, list_formats;
    const char *skip, *include, *compute_dtype;
    uint64_t shard_size, chunk;
    mk_cli_eval_opts eval;           /* --eval-text: score OUT against IN at the end */
    const char *report;              /* --report FILE: the HTML page of the run's statistics */
    const char *imatrix;             /* --imatrix FILE: --method search, or --target-bpw --sensitivity imatrix, weighs its error by it */
    mk_imatrix im;                   /* ... read; with the data-free importances for the rest */
    mk_search_imps pimp;
    mk_cli_parts parts;              /* --part I/N: one part of a split output */
    const mk_parts_manifest *finalize; /* `finalize`: OUT from the parts in OUT.tmp */
    const char *target_bpw, *formats, *sensitivity, *sens_text; /* --target-bpw: mixed precision (quant_alloc.c) */
    long sens_ctx, sens_chunks;
    int argc;                        /* the command line, for a part's manifest */
    char **argv;
} quant_cli;

/* ---- the run ---------------------------------------------------------------------------------- */

/* config.json with quantization_config, the tokenizer files, a model card. */
static mk_status write_aux(mk_source *src, mk_output *o, const mk_qplan *p, const char *in_path, const char *out_path, const char *imatrix)
{
    mk_status s = mk_cli_quant_config_files(src, o, mk_qplan_config_json(p), in_path);
    if (s == MK_OK) {
        char desc[160];
        char *title = mk_path_basename(out_path);
        mk_buf b = {0};
        mk_buf_printf(&b, "---\nlibrary_name: transformers\ntags:\n- mergekit-c\n- quantized\n- %s\n---\n# %s\n\n",
                      p->o.fmt->name, title ? title : "quantized");
        mk_buf_printf(&b, "`%s` quantized to %s with mergekit-c %s (`quantize`).\n\n", in_path, mk_qopts_describe(&p->o, desc),
                      MK_VERSION);
        mk_buf_printf(&b, "%zu of %zu tensors are quantized; embeddings, lm_head, norms and biases keep their dtype.\n",
                      p->n_quantized, p->n);
        if (imatrix) mk_buf_printf(&b, "The scale search weighed each column's error by the importance matrix `%s`.\n", imatrix);
        mk_buf_puts(&b, mk_qplan_load_hint(p));
        free(title);
        s = b.failed ? MK_ERR_NOMEM : mk_output_file(o, "README.md", b.data, b.len);
        mk_buf_free(&b);
    }
    return s;
}

static void print_dry_run(const mk_qplan *p, const mk_common *c)
{
    char a[32], b[32], desc[160];
    if (c->json) {
        mk_buf j = {0};
        mk_buf_printf(&j, "{\"format\": \"%s\", \"quantized_tensors\": %zu, \"in_bytes\": %llu, \"out_bytes\": %llu, \"tensors\": [",
                      p->o.fmt->name, p->n_quantized, (unsigned long long)p->in_bytes, (unsigned long long)p->out_bytes);
        for (size_t i = 0; i < p->n; i++) {
            mk_buf_puts(&j, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
            mk_buf_json_str(&j, p->in[i].name);
            mk_buf_printf(&j, ", \"quantized\": %s, \"stored\": [", p->t[i].quantized ? "true" : "false");
            for (size_t k = 0; k < p->t[i].nout; k++) {
                const mk_tensor_info *o = &p->out[p->t[i].out0 + k];
                char sh[160];
                mk_buf_puts(&j, k ? ", {\"name\": " : "{\"name\": ");
                mk_buf_json_str(&j, o->name);
                mk_buf_printf(&j, ", \"dtype\": \"%s\", \"shape\": %s, \"bytes\": %llu}", mk_dtype_name(o->dtype), mk_shape_str(o, sh),
                              (unsigned long long)o->nbytes);
            }
            mk_buf_puts(&j, "]}");
        }
        mk_buf_puts(&j, "\n]}\n");
        if (!j.failed) fputs(j.data, stdout);
        mk_buf_free(&j);
        return;
    }
    printf("quantize plan: %s: %zu of %zu tensors quantized, %s -> %s\n", mk_qopts_describe(&p->o, desc), p->n_quantized, p->n,
           mk_fmt_bytes(p->in_bytes, a), mk_fmt_bytes(p->out_bytes, b));
    for (size_t i = 0; i < p->n; i++) {
        const mk_qtensor *q = &p->t[i];
        uint64_t ob = 0;
        for (size_t k = 0; k < q->nout; k++) ob += p->out[q->out0 + k].nbytes;
        printf("  %-60s %-6s %12llu -> %12llu  %s\n", p->in[i].name, q->quantized ? p->o.fmt->name : "keep",
               (unsigned long long)p->in[i].nbytes, (unsigned long long)ob, q->quantized ? "" : (q->kept_why ? q->kept_why : ""));
    }
}

/* A split output: its plan (format settings, shard size, inputs, stored tensors; quant_alloc.c). */
static mk_status split_plan(quant_cli *o, mk_source *src, const mk_qplan *plan, const char *out, mk_parts_manifest *man,
                            bool *done)
{
    char *qc = mk_qplan_config_json(plan);
    mk_status s = qc ? mk_cli_quant_split(qc, o->shard_size, src, plan->out, plan->n_out, out, o->parts.p, o->finalize, o->argc, o->argv, man, done)
                     : MK_ERR_NOMEM;
    free(qc);
    return s;
}

/* --imatrix FILE: each quantized weight the file has importances for (under its llama.cpp name,
 * as `mergekit-c imatrix` and llama-imatrix write them; an expert's weight its row of
 * ffn_*_exps, gguf_moe.h) gets them; the others keep the data-free weighting, with a warning.
 * The file must cover at least one weight, with one importance per column. */
static mk_status attach_imatrix(const char *f, mk_source *src, const char *model_type, mk_qplan *p, mk_imatrix *im)
{
    const mk_gguf_arch *ga = mk_cli_gguf_names_for(model_type);
    if (!ga)
        return mk_error(MK_ERR_UNSUPPORTED,
                        "--imatrix %s: model_type '%s' has no llama.cpp tensor names here (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe and qwen3_moe have)", f,
                        model_type ? model_type : "(none)");
    MK_TRY(mk_imatrix_read(f, im));
    mk_model_config cfg;
    MK_TRY(mk_model_config_of_source(src, &cfg));
    size_t used = 0;
    mk_status s = MK_OK;
    for (size_t i = 0; s == MK_OK && i < p->n; i++) {
        const float *imp = NULL;
        if (p->t[i].quantized) s = mk_cli_imatrix_for(im, f, src->path, &cfg, ga, &p->in[i], "weight", &imp);
        if (imp) p->t[i].imp = imp, used++;
    }
    mk_model_config_free(&cfg);
    MK_TRY(s);
    if (!used)
        return mk_error(MK_ERR_FORMAT, "%s: none of its %zu matrices (the first: %s) is a weight this run quantizes", f, im->n,
                        im->n ? im->e[0].name : "-");
    if (used < p->n_quantized)
        mk_warn("%s has importances for %zu of the %zu quantized weights; the others are weighted without it", f, used, p->n_quantized);
    return MK_OK;
}

/* --method search without importances from --imatrix: the data-free ones (search_proxy.h),
 * attention's head_dim from config.json when it has one. */
static mk_status search_proxy(mk_source *src, mk_qplan *p, mk_search_imps *m)
{
    mk_model_config cfg;
    long hd = 0;
    if (mk_model_config_of_source(src, &cfg) == MK_OK) {
        hd = cfg.head_dim;
        mk_model_config_free(&cfg);
    }
    return mk_search_proxy(src, p, hd, m);
}

/* --method search's importances: --imatrix's, then the data-free ones for the rest. */
static mk_status search_weights(const char *imatrix, const char *model_type, mk_source *src, mk_qplan *p, mk_imatrix *im,
                                mk_search_imps *pimp)
{
    if (imatrix) MK_TRY(attach_imatrix(imatrix, src, model_type, p, im));
    return search_proxy(src, p, pimp);
}

/* The end of the tensors' progress line; after a run that went well, with -v, how the
 * tensors read once came in (core/mk_dstream.h). */
static void progress_end(mk_progress *prog, mk_status s)
{
    uint64_t dio = 0, cached = 0;
    mk_progress_end(prog);
    mk_dstream_totals(&dio, &cached);
    if (s == MK_OK && dio + cached)
        mk_info("streamed %.1f MiB of tensors read once: %.1f MiB with O_DIRECT, %.1f MiB from the page cache",
                (double)(dio + cached) / 1048576.0, (double)dio / 1048576.0, (double)cached / 1048576.0);
}

static mk_status run(quant_cli *o, mk_qopts *qo, const char *in, const char *out)
{
    mk_source *src = NULL;
    mk_qplan plan = {0};
    mk_qinfo qi;
    size_t *idx = NULL;
    mk_status s = mk_cli_open_model(in, &src);
    if (s == MK_OK) s = mk_qsource_probe(src, &qi);
    if (s == MK_OK && qi.quantized) {
        char d[160];
        s = mk_error(MK_ERR_USAGE, "%s is already quantized (%s); dequantize it first (mergekit-c dequantize)", in,
                     mk_qinfo_describe(&qi, d));
    }
    if (s == MK_OK && !o->dry_run) s = mk_cli_check_output(out, &in, 1);
    mk_arch arch = {0};
    if (s == MK_OK) s = mk_arch_of_source(src, &arch);
    if (s == MK_OK) s = mk_qplan_init(&plan, qo, &arch, src->tensors, src->n_tensors);
    if (s == MK_OK && (s = mk_qplan_check(&plan)) != MK_OK) s = mk_error_prefix(s, "%s", in); /* nothing to write */
    if (s == MK_OK && qo->method == MK_QM_SEARCH) s = search_weights(o->imatrix, arch.model_type, src, &plan, &o->im, &o->pimp);
    mk_arch_free(&arch);
    if (s == MK_OK) {
        idx = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *idx);
        if (!idx) s = MK_ERR_NOMEM;
        for (size_t i = 0; idx && i < src->n_tensors; i++) idx[i] = i;
    }
    if (s == MK_OK && o->dry_run) {
        s = mk_qplan_layout(&plan); /* offsets unknown: blob lengths are estimates */
        unsigned np = o->parts.parts ? (unsigned)o->parts.parts : o->parts.p.n;
        mk_output_opts so = {.shard_size = o->shard_size};
        mk_output_split sp;
        if (s == MK_OK && np && (s = mk_output_split_build(plan.out, plan.n_out, &so, np, &sp)) == MK_OK) {
            mk_cli_parts_print(&sp, np, o->c.json, "shard");
            mk_output_split_free(&sp);
        } else if (s == MK_OK) {
            print_dry_run(&plan, &o->c);
        }
        goto done;
    }
    double t0 = mk_now();
    if (s == MK_OK) s = mk_qstream_offsets(src, idx, &plan, o->chunk);
    if (s == MK_OK) s = mk_qplan_layout(&plan);
    mk_parts_manifest man = {0};
    bool split = o->parts.p.n || o->finalize, done = false;
    if (s == MK_OK && split) s = split_plan(o, src, &plan, out, &man, &done);
    if (s == MK_OK && done && !o->c.quiet)
        fprintf(stderr, "mergekit-c: part %u/%u of %s is already complete; nothing to do\n", o->parts.p.i, o->parts.p.n, out);
    if (s != MK_OK || done) {
        mk_parts_manifest_free(&man);
        goto done;
    }
    mk_output out_o = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = o->shard_size, .force = o->force, .part = o->parts.p, .finalize = o->finalize != NULL,
                         .manifest = o->finalize ? o->finalize : &man, .write_behind = true};
    s = mk_output_begin(&out_o, out, &oo, plan.out, plan.n_out);
    if (s == MK_OK) s = mk_quant_consumer(&cons, out_o.k, &plan, true, false);
    mk_progress prog;
    mk_progress_init(&prog, "quantize", &o->c);
    mk_qstream_opts qso = {o->chunk, mk_progress_cb, &prog};
    if (s == MK_OK) s = mk_qstream_run(src, idx, src->tensors, src->n_tensors, &cons, &qso);
    progress_end(&prog, s);
    if (s == MK_OK && !o->parts.p.n) s = write_aux(src, &out_o, &plan, in, out, o->imatrix);
    if (s == MK_OK) s = mk_output_seal(&out_o);
    if (s == MK_OK) s = o->parts.p.n ? mk_output_part_done(&out_o, NULL, 0) : mk_output_commit(&out_o);
    double secs = mk_now() - t0;
    if (s == MK_OK) {
        if (!o->finalize) s = mk_cli_quant_report(&plan, &cons, &o->c, secs, o->c.json, o->report);
        if (!o->c.quiet && o->parts.p.n)
            fprintf(stderr, "mergekit-c: wrote part %u/%u of %s%s%s\n", o->parts.p.i, o->parts.p.n, out,
                    o->parts.mpi ? "" : "; once every part is done: mergekit-c finalize ", o->parts.mpi ? "" : out);
        else if (!o->c.quiet) fprintf(stderr, "mergekit-c: wrote %s%s\n", out, o->finalize ? " (finalized from its parts)" : "");
    }
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&out_o);
    mk_parts_manifest_free(&man);
done:
    free(idx);
    mk_qplan_free(&plan);
    mk_source_close(src);
    return s;
}

/* ---- options ----------------------------------------------------------------------------------- */

/* Flags -> options; a usage error names the flag. */
static mk_status to_qopts(const quant_cli *o, mk_qopts *q)
{
    char names[256];
    if (!o->format) return mk_error(MK_ERR_USAGE, "--format is required (%s)", mk_qformat_names(names, sizeof names, " or "));
    const mk_qformat *f;
    MK_TRY(mk_qformat_lookup(o->format, "--format", &f));
    mk_qopts_init(q, f);
    for (size_t k = 0; mk_qsettings[k].key && k < MAX_SETTINGS; k++) {
        const mk_qsetting *s = &mk_qsettings[k];
        if ((s->metavar && o->value[k]) || (!s->metavar && o->flag[k]))
            MK_TRY(mk_qopts_set(q, s->key, s->metavar ? o->value[k] : NULL, "--"));
    }
    q->skip = o->skip;
    q->include = o->include;
    q->compute_dtype = o->compute_dtype;
    return mk_qopts_resolve(q, false);
}

/* One option per setting, its help naming the formats it applies to and their defaults.
 * The strings live as long as the program. */
static size_t setting_opts(quant_cli *o, mk_opt *opts, size_t cap)
{
    static char help[MAX_SETTINGS][320], def[MAX_SETTINGS][128];
    size_t n = 0;
    for (size_t k = 0; mk_qsettings[k].key && k < MAX_SETTINGS && n < cap; k++) {
        const mk_qsetting *s = &mk_qsettings[k];
        char fmts[200];
        snprintf(help[k], sizeof help[k], "%s: %s", mk_qsetting_formats(s, fmts, sizeof fmts), s->help);
        const char *d = mk_qsetting_default(s, def[k], sizeof def[k]);
        if (s->metavar) opts[n++] = (mk_opt){s->key, 0, MK_OPT_STR, &o->value[k], s->metavar, help[k], d};
        else opts[n++] = (mk_opt){s->key, 0, MK_OPT_FLAG, &o->flag[k], NULL, help[k], NULL};
    }
    return n;
}

/* The help's paragraphs: the format table and what the output is. */
static const char *details(void)
{
    static char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "formats (--list-formats: bits per weight, layouts and who loads them):\n");
    for (const mk_qformat *f = mk_qformats; f->name && n < sizeof text; f++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "  %-9s %s", f->name, f->summary);
        for (size_t k = 1; k < mk_qformat_nlayouts(f) && n < sizeof text; k++)
            n += (size_t)snprintf(text + n, sizeof text - n, "%s%s", k == 1 ? "; also --target " : ", ", mk_qfamily_layout(f->layouts[k]));
        if (n < sizeof text) n += (size_t)snprintf(text + n, sizeof text - n, "\n");
    }
    if (n < sizeof text)
        snprintf(text + n, sizeof text - n, "%s",
                 "  gguf-T    OUT.gguf in llama.cpp type or mix T (q8_0, q4_k_m, iq4_nl, ...), as 'convert --type T'\n"
                 "Embeddings, lm_head, norms, biases and 1-D tensors stay as they are. The output is bit for bit\n"
                 "what bitsandbytes and compressed-tensors (for ternary: transformers' BitNet packing) produce for\n"
                 "the same weights. Each run reports bits per weight, relative RMSE, SQNR and max abs error per\n"
                 "tensor and in total (stderr; --json on stdout).\n"
                 "On a cluster, with --part I/N each task writes part I of N of OUT's shards into the shared\n"
                 "OUT.tmp, and 'mergekit-c finalize OUT' finishes it (docs/cluster.md).\n"
                 "With --target-bpw B instead of --format: a compressed-tensors format per weight (from --formats),\n"
                 "chosen to minimise the total predicted error (--sensitivity) within B bits per weight of the\n"
                 "quantizable weights, written as one mixed-precision checkpoint; the allocation is printed and\n"
                 "written into the model card (docs/quantization.md, \"Mixed precision\"); with --part I/N every\n"
                 "part allocates alike and writes its shards. For GGUF: convert --target-bpw.");
    return text;
}

/* ---- --list-formats ---------------------------------------------------------------------------- */

/* Format f written in its k-th layout with the default settings, its bits per weight, and
 * " 4.127 with --double-quant" for each flag that changes them. */
static mk_status list_one(const mk_qformat *f, size_t k, bool json, bool first)
{
    mk_qopts q;
    mk_qopts_init(&q, f);
    q.target = mk_qfamily_layout(f->layouts[k]);
    double bpw;
    char set[160], var[256] = "";
    size_t nv = 0;
    MK_TRY(mk_qopts_resolve(&q, false));
    MK_TRY(mk_qopts_bits_per_weight(&q, &bpw));
    for (const mk_qsetting *s = mk_qsettings; s->key && nv < sizeof var; s++) {
        mk_qopts v;
        double b2;
        mk_qopts_init(&v, f);
        v.target = q.target;
        if (s->metavar || !mk_qsetting_applies(s, f, f->layouts[k]) || mk_qopts_set(&v, s->key, NULL, "") != MK_OK ||
            mk_qopts_resolve(&v, false) != MK_OK || mk_qopts_bits_per_weight(&v, &b2) != MK_OK)
            continue;
        if (json) nv += (size_t)snprintf(var + nv, sizeof var - nv, "%s{\"option\": \"--%s\", \"bits_per_weight\": %.4f}", nv ? ", " : "", s->key, b2);
        else nv += (size_t)snprintf(var + nv, sizeof var - nv, "; %.3f with --%s", b2, s->key);
    }
    const char *layout = mk_qfamily_layout(f->layouts[k]), *loaders = mk_qformat_loaders(f, f->layouts[k]);
    mk_qopts_settings(&q, set);
    if (!json) {
        char d[400];
        snprintf(d, sizeof d, "%s%s", set, var);
        printf("%-9s %4u  %6.3f  %-19s %-44s %s\n", f->name, f->bits, bpw, layout, d, loaders);
        return MK_OK;
    }
    printf("%s\n  {\"name\": \"%s\", \"bits\": %u, \"layout\": \"%s\", \"default_layout\": %s, \"settings\": \"%s\", ", first ? "" : ",",
           f->name, f->bits, layout, k == 0 ? "true" : "false", set);
    printf("\"bits_per_weight\": %.4f, \"variants\": [%s], \"loaded_by\": \"%s\", \"max_rel_rmse\": %g, \"summary\": \"%s\"}", bpw, var,
           loaders, f->max_rel_rmse, f->summary);
    return MK_OK;
}

/* One line (or JSON object) per format and layout. */
static mk_status list_formats(bool json)
{
    if (json) printf("[");
    else printf("%-9s %4s  %6s  %-19s %-44s %s\n", "format", "bits", "bpw", "layout", "settings (defaults)", "loaded by");
    bool first = true;
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        for (size_t k = 0; k < mk_qformat_nlayouts(f); k++, first = false) MK_TRY(list_one(f, k, json, first));
    if (json) printf("\n]\n");
    else printf("bpw: bits per weight of a bf16 [4096, 4096] weight with everything stored for it (codes, scales, maps, shapes).\n");
    return MK_OK;
}

/* The first format setting (--group-size, --double-quant, ...) given on the command line, or
 * NULL: --target-bpw and --format gguf-T take none. */
static const char *setting_given(const quant_cli *o)
{
    for (size_t k = 0; k < MAX_SETTINGS && mk_qsettings[k].key; k++)
        if (o->value[k] || o->flag[k]) return mk_qsettings[k].key;
    return NULL;
}

/* --target-bpw: the options it takes and the run; then --eval-text as for one format. */
static mk_status alloc_main(quant_cli *o, const char *in, const char *out)
{
    char *end = NULL;
    /* kld is the predicted KL divergence, which the Fisher gives: fisher is its other name */
    const char *sens = !o->sensitivity ? "weight" : !strcmp(o->sensitivity, "kld") ? "fisher" : o->sensitivity;
    mk_cli_alloc_opts a = {0,        o->formats,         sens,
                           o->sens_text, o->sens_ctx,  o->sens_chunks,
                           o->skip,  o->shard_size,      o->chunk,
                           o->force, o->dry_run,         o->imatrix,
                           {0, 0},   NULL,               0,
                           NULL};
    if (!o->target_bpw) return mk_error(MK_ERR_USAGE, "--formats and --sensitivity choose how --target-bpw allocates; give --target-bpw");
    a.target_bpw = strtod(o->target_bpw, &end);
    if (end == o->target_bpw || *end) return mk_error(MK_ERR_USAGE, "--target-bpw '%s': expected a number", o->target_bpw);
    if (o->format) return mk_error(MK_ERR_USAGE, "--target-bpw chooses the formats (--formats); not with --format");
    const char *set = setting_given(o);
    if (set) return mk_error(MK_ERR_USAGE, "--%s: with --target-bpw, settings go in --formats (NAME:%s=...)", set, set);
    if (o->include || o->compute_dtype || o->parts.parts)
        return mk_error(MK_ERR_USAGE, "--target-bpw takes none of --include, --compute-dtype, --parts");
    MK_TRY(mk_cli_parts_resolve(&o->parts, o->dry_run, !o->finalize && !o->dry_run));
    if ((o->parts.p.n || o->finalize) && (o->report || o->eval.text || (o->sensitivity && !strcmp(o->sensitivity, "kld-probe"))))
        return mk_error(MK_ERR_USAGE, "--target-bpw with --part or finalize takes none of --report, --eval-text, --sensitivity kld-probe");
    a.part = o->parts.p, a.finalize = o->finalize, a.argc = o->argc, a.argv = o->argv;
    if (o->eval.text && o->dry_run) return mk_error(MK_ERR_USAGE, "--eval-text scores the output; not with --dry-run");
    if (o->report && o->dry_run) return mk_error(MK_ERR_USAGE, "--report describes a whole run; not with --dry-run");
    MK_TRY(mk_cli_quant_alloc(&a, &o->c, in, out));
    if (o->report) MK_TRY(mk_cli_report_quant_ref(out, in, o->report));
    if (!o->eval.text) return MK_OK;
    return mk_cli_eval(out, &in, 1, &o->eval, &o->c, false);
}

/* --format gguf-T: OUT.gguf as 'convert IN OUT.gguf --type T' writes it; then --eval-text. */
static mk_status gguf_main(quant_cli *o, const char *in, const char *out)
{
    MK_TRY(mk_cli_gguf_type_check("--format gguf-T", o->format + 5));
    const char *set = setting_given(o);
    if (set) return mk_error(MK_ERR_USAGE, "--%s: not with --format %s (llama.cpp's types fix their own blocks)", set, o->format);
    if (o->skip || o->include || o->compute_dtype || o->report || o->dry_run || o->parts.p.n || o->parts.parts || o->finalize)
        return mk_error(MK_ERR_USAGE, "--format %s takes none of --skip, --include, --compute-dtype, --report, --dry-run, --part, --parts "
                                      "(see 'convert --help' for --dry-run and --part)", o->format);
    if (o->imatrix)
        return mk_error(MK_ERR_USAGE, "--imatrix: for --format %s use 'mergekit-c convert IN OUT.gguf --type %s --imatrix %s'", o->format, o->format + 5, o->imatrix);
    if (!mk_str_ends_with(out, ".gguf")) return mk_error(MK_ERR_USAGE, "--format %s writes one GGUF file: OUT must end in .gguf (not '%s')", o->format, out);
    MK_TRY(mk_cli_convert_gguf(&o->c, in, out, o->format + 5, o->force, NULL));
    if (!o->eval.text) return MK_OK;
    return mk_cli_eval(out, &in, 1, &o->eval, &o->c, false);
}

static int quantize_main(int argc, char **argv, const mk_parts_manifest *finalize)
{
    quant_cli o = {.shard_size = 5000000000ull, .eval = {NULL, 512, 0, 0}, .sens_ctx = 0, .sens_chunks = 0, .finalize = finalize, .argc = argc, .argv = argv};
    mk_opt opts[48] = {{"format", 'F', MK_OPT_STR, &o.format, "FORMAT", "the format (see below and --list-formats)", NULL}};
    size_t n = 1 + setting_opts(&o, opts + 1, 16);
    const mk_opt rest[] = {
        {"skip", 0, MK_OPT_LIST, &o.skip, "PATTERN", "keep matching tensors unquantized (glob with * or substring; repeatable)", NULL},
        {"include", 0, MK_OPT_LIST, &o.include, "PATTERN", "quantize matching 2-D weights kept by default (embeddings, lm_head)", NULL},
        {"compute-dtype", 0, MK_OPT_STR, &o.compute_dtype, "DTYPE", "bitsandbytes: bnb_4bit_compute_dtype in config.json", "the weights' dtype"},
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard_size, "SIZE", "maximum bytes of tensor data per shard (5e9, 500M, 2G)", "5e9"},
        {"dry-run", 'n', MK_OPT_FLAG, &o.dry_run, NULL, "print what each tensor becomes, with sizes; write nothing", NULL},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        {"chunk", 0, MK_OPT_U64, &o.chunk, "N", "elements per work chunk", "262144"},
        {"list-formats", 0, MK_OPT_FLAG, &o.list_formats, NULL, "list the formats: bits per weight, layouts, who loads them (--json too)", NULL},
        {"target-bpw", 0, MK_OPT_STR, &o.target_bpw, "B", "mixed precision instead of --format: a format per weight (from --formats) minimising the total predicted error within B bits per weight of the quantizable weights", NULL},
        {"formats", 0, MK_OPT_STR, &o.formats, "LIST", "--target-bpw's candidates: compressed-tensors formats, NAME[:setting=value...], and keep (the weight as stored)", mk_alloc_default_formats},
        {"sensitivity", 0, MK_OPT_STR, &o.sensitivity, "KIND", "--target-bpw's error measure: weight (each weight's squared quantization error), imatrix (that error per input column weighted by the column's mean squared activation from --imatrix), kld or its other name fisher (the predicted KL divergence from the original: the squared error of each element times half its expected Fisher information per token, from one backward pass per window of --sensitivity-text) or kld-probe (the squared error times the KL divergence per unit of it that its layer's attention or MLP causes in a probe format, measured on --sensitivity-text)", "weight"},
        {"sensitivity-text", 0, MK_OPT_STR, &o.sens_text, "FILE", "--sensitivity kld (fisher) or kld-probe: the text the model runs on", NULL},
        {"sensitivity-ctx", 0, MK_OPT_INT, &o.sens_ctx, "N", "--sensitivity kld (fisher) or kld-probe: window length in tokens (default: 512 for kld, 128 for kld-probe)", NULL},
        {"sensitivity-chunks", 0, MK_OPT_INT, &o.sens_chunks, "N", "--sensitivity kld (fisher) or kld-probe: windows, at most (default: 16 for kld, 2 for kld-probe)", NULL},
        {"eval-text", 0, MK_OPT_STR, &o.eval.text, "FILE", "at the end, perplexity of OUT on FILE and its KL divergence to IN (see 'eval --help')", NULL},
        {"eval-ctx", 0, MK_OPT_INT, &o.eval.ctx, "N", "window length of --eval-text, in tokens", "512"},
        {"eval-chunks", 0, MK_OPT_INT, &o.eval.chunks, "N", "windows --eval-text scores", "all"},
        {"imatrix", 0, MK_OPT_STR, &o.imatrix, "FILE", "an importance matrix (GGUF or legacy .dat, from mergekit-c imatrix or llama-imatrix; a mixture of experts' per-expert weight takes its expert's row of ffn_*_exps): --method search weighs each column's error by it instead of the data-free proxy; --target-bpw uses it with --sensitivity imatrix", NULL},
        {"report", 0, MK_OPT_STR, &o.report, "FILE", "at the end, an HTML page of the error and bits per weight per tensor and layer (see 'report --help')", NULL},
        MK_PART_OPTS(o.parts),
        MK_COMMON_OPTS(o.c),
        MK_HUB_OPTS(o.c),
        MK_DIRECT_IO_OPTS(o.c),
    };
    memcpy(opts + n, rest, sizeof rest); /* the last entry of opts stays {0} */
    const mk_cmd_spec spec = {"quantize", "IN OUT --format FORMAT | --target-bpw B [options]",
                              "Quantize a checkpoint (post-training, no calibration data needed) into the layouts the ecosystem loads.",
                              details(), opts, 0, 2, 0x1};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, true, &rc)) return rc;
    mk_status s = MK_OK;
    if (o.list_formats) s = list_formats(o.c.json);
    else if (npos < 2)
        s = mk_error(MK_ERR_USAGE, "quantize: missing arguments; usage: mergekit-c quantize %s", spec.usage);
    bool alloc = o.target_bpw || o.formats || o.sensitivity || o.sens_text;
    if (s == MK_OK && !o.list_formats && alloc) s = alloc_main(&o, pos[0], pos[1]);
    bool gguf = !alloc && o.format && !strncmp(o.format, "gguf-", 5), listed = o.list_formats;
    if (s == MK_OK && !o.list_formats && gguf && npos == 2) s = gguf_main(&o, pos[0], pos[1]);
    if (alloc || gguf) o.list_formats = true; /* done: no single-format run */
    mk_qopts qo;
    if (s == MK_OK && !o.list_formats) s = to_qopts(&o, &qo);
    if (s == MK_OK && !o.list_formats && o.report && (o.dry_run || o.parts.p.n || o.finalize))
        s = mk_error(MK_ERR_USAGE, "--report describes a whole run; not with --dry-run, --part or finalize");
    if (s == MK_OK && !o.list_formats && o.eval.text && o.dry_run)
        s = mk_error(MK_ERR_USAGE, "--eval-text scores the output; not with --dry-run");
    if (s == MK_OK && !o.list_formats && o.imatrix && qo.method != MK_QM_SEARCH)
        s = mk_error(MK_ERR_USAGE, "--imatrix weighs the error --method search minimises (int4, int8), or --target-bpw's with --sensitivity imatrix; give one of them");
    if (s == MK_OK && !o.list_formats) s = mk_cli_parts_resolve(&o.parts, o.dry_run, !o.finalize && !o.dry_run);
    if (s == MK_OK && !o.list_formats && o.imatrix && (o.parts.p.n || o.parts.parts || o.finalize))
        s = mk_error(MK_ERR_USAGE, "--imatrix cannot be combined with --part or finalize yet");
    if (s == MK_OK && !o.list_formats) s = run(&o, &qo, pos[0], pos[1]);
    mk_imatrix_free(&o.im);
    mk_search_imps_free(&o.pimp);
    const char *in = npos ? pos[0] : NULL;
    if (s == MK_OK && !o.list_formats && o.eval.text && !o.parts.p.n) s = mk_cli_eval(pos[1], &in, 1, &o.eval, &o.c, false);
    rc = s == MK_OK ? 0 : mk_cli_fail(s);
    return listed || gguf || npos < 2 ? rc : mk_cli_parts_after(&o.parts, rc, pos[1], &o.c);
}

int mk_cmd_quantize(int argc, char **argv) { return quantize_main(argc, argv, NULL); }

int mk_cmd_quantize_finalize(int argc, char **argv, const mk_parts_manifest *m) { return quantize_main(argc, argv, m); }
