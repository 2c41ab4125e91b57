/* common.c - the helpers every command shares (cli.h): starting a command, reporting an
 * error, opening inputs (a model, or a base with a LoRA adapter merged on the fly), the
 * output-overlap rule, and the quantization report of quantize and merge --quantize.
 */
#include "cli.h"

#include "../core/mk_dstream.h"
#include "../core/mk_hub.h"
#include "../core/mk_io.h"
#include "../core/mk_thread.h"
#include "../eval/eval.h"
#include "../formats/model.h"
#include "../formats/peft.h"
#include "../lora/lora.h"
#include "../nn/tokenizer.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_CAP ((uint64_t)1 << 30) /* the largest text eval reads */

/* ---- starting, failing, inputs and outputs ------------------------------------------------- */

void mk_cli_common(const mk_common *c)
{
    mk_log_set_level(c->quiet ? MK_LOG_ERROR : MK_LOG_WARN + c->verbose);
    mk_threads_set((int)c->threads);
    mk_hub_set_verify(c->verify_cache);
}

/* Model ids resolved on the command line; they live until exit. 64: the most positionals a
 * command takes (lora combine). */
#define MAX_RESOLVED 64
static char *g_resolved[MAX_RESOLVED];
static size_t g_n_resolved;

static void free_resolved(void)
{
    for (size_t i = 0; i < g_n_resolved; i++) free(g_resolved[i]);
    g_n_resolved = 0;
}

mk_status mk_cli_resolve_model(char **arg)
{
    char *got = NULL;
    bool cached = false;
    MK_TRY(mk_hub_resolve(*arg, NULL, &got, &cached));
    if (!cached || g_n_resolved == MAX_RESOLVED) {
        free(got);
        return cached ? mk_error(MK_ERR_USAGE, "more than %d model ids on one command line", MAX_RESOLVED) : MK_OK;
    }
    if (!g_n_resolved) atexit(free_resolved);
    mk_info("%s: %s", *arg, got);
    *arg = g_resolved[g_n_resolved++] = got;
    return MK_OK;
}

bool mk_cli_begin(const mk_cmd_spec *spec, int argc, char **argv, char **pos, size_t *npos, const mk_common *c,
                  bool writes, int *exit_code)
{
    int rc = mk_args_parse(spec, argc, argv, pos, npos);
    if (rc) {
        *exit_code = rc == 1 ? 0 : rc;
        return false;
    }
    mk_cli_common(c);
    const char *dio = c->direct_io ? c->direct_io : "auto";
    if (strcmp(dio, "auto") && strcmp(dio, "always") && strcmp(dio, "off")) {
        *exit_code = mk_cli_fail(mk_error(MK_ERR_USAGE, "--direct-io: '%s' is not auto, always or off", dio));
        return false;
    }
    mk_dstream_set_mode(!strcmp(dio, "always") ? MK_DIO_ALWAYS : !strcmp(dio, "off") ? MK_DIO_OFF : MK_DIO_AUTO);
    for (size_t i = 0; i < *npos && i < 32; i++) {
        mk_status s = spec->model_pos >> i & 1 ? mk_cli_resolve_model(&pos[i]) : MK_OK;
        if (s != MK_OK) {
            *exit_code = mk_cli_fail(s);
            return false;
        }
    }
    if (writes) mk_signal_install();
    return true;
}

int mk_cli_fail(mk_status s)
{
    fprintf(stderr, "mergekit-c: error: %s\n", mk_errmsg());
    return mk_status_exit_code(s);
}

mk_status mk_cli_open_model(const char *path, mk_source **out)
{
    char *local = NULL;
    *out = NULL;
    MK_TRY(mk_hub_resolve(path, NULL, &local, NULL));
    mk_status s = mk_model_open(local, out);
    free(local);
    return s;
}

mk_status mk_cli_open_model_values(const char *path, mk_source **out)
{
    mk_source *raw = NULL;
    MK_TRY(mk_cli_open_model(path, &raw));
    if (strcmp(raw->kind, "gguf") != 0) {
        *out = raw;
        return MK_OK;
    }
    mk_qinfo qi;
    mk_status s = mk_qsource_open(raw, out, &qi);
    if (s != MK_OK) mk_source_close(raw);
    return s;
}

void mk_cli_json_files(mk_buf *b, const mk_out_file *f, size_t n, bool *first, const char *indent)
{
    for (size_t i = 0; i < n; i++) {
        mk_buf_puts(b, *first ? "\n" : ",\n");
        mk_buf_puts(b, indent);
        *first = false;
        mk_buf_puts(b, "{\"name\": ");
        mk_buf_json_str(b, f[i].name);
        mk_buf_printf(b, ", \"size\": %llu, \"xxh128\": \"%s\"}", (unsigned long long)f[i].size, f[i].hash);
    }
}

mk_status mk_cli_check_output(const char *out, const char *const *inputs, size_t n)
{
    char *oa = mk_path_absolute(out);
    if (!oa) return MK_ERR_IO;
    char *ta = mk_asprintf("%s.tmp", oa);
    mk_status s = ta ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        if (!inputs[i]) continue;
        char *ia = mk_path_absolute(inputs[i]);
        if (!ia) {
            s = MK_ERR_IO;
            break;
        }
        /* inside an input folder, or the input file itself, or containing an input */
        bool inside = mk_is_dir(ia) ? mk_path_is_within(oa, ia) || mk_path_is_within(ta, ia) : !strcmp(oa, ia) || !strcmp(ta, ia);
        if (inside || mk_path_is_within(ia, oa) || mk_path_is_within(ia, ta))
            s = mk_error(MK_ERR_USAGE, "output %s overlaps input %s; choose another output", out, inputs[i]);
        free(ia);
    }
    free(oa);
    free(ta);
    return s;
}

/* ---- base + adapter as one source ------------------------------------------------------------ */

mk_status mk_cli_open_lora(const char *base_path, const char *adapter_path, mk_source **out)
{
    *out = NULL;
    mk_source *base = NULL;
    mk_peft_adapter *ad = NULL;
    mk_peft_binding bind = {0};
    MK_TRY(mk_cli_open_model_values(base_path, &base));
    mk_status s = mk_peft_open(adapter_path, &ad);
    if (s == MK_OK) s = mk_peft_bind(ad, base, &bind);
    mk_lora_target *t = NULL;
    mk_lora_extra *x = NULL;
    if (s == MK_OK) {
        t = mk_calloc(bind.n ? bind.n : 1, sizeof *t);
        x = mk_calloc(bind.n_extra ? bind.n_extra : 1, sizeof *x);
        if (!t || !x) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) {
        for (size_t i = 0; i < bind.n; i++)
            t[i] = (mk_lora_target){bind.t[i].base, bind.t[i].a,     bind.t[i].b,    bind.t[i].transposed,
                                    bind.t[i].r,    bind.t[i].scale, bind.t[i].wsrc, bind.t[i].round_update};
        for (size_t i = 0; i < bind.n_extra; i++)
            x[i] = (mk_lora_extra){bind.x[i].base, bind.x[i].src, bind.x[i].add, bind.x[i].scale};
        mk_info("%s: %zu LoRA module(s), %zu replaced tensor(s) merged into %s", adapter_path, bind.n, bind.n_extra, base_path);
        char *name = mk_asprintf("%s+%s", base_path, adapter_path);
        mk_source *adsrc = ad->src;
        ad->src = NULL; /* the merged source owns it now */
        s = name ? mk_lora_source_open(base, adsrc, t, bind.n, x, bind.n_extra, name, out) : MK_ERR_NOMEM;
        if (!name) mk_source_close(adsrc);
        base = NULL;
        free(name);
    }
    free(t);
    free(x);
    mk_peft_binding_free(&bind);
    mk_peft_close(ad);
    mk_source_close(base);
    return s;
}

/* ---- report ---------------------------------------------------------------------------------- */

static double rel_rmse(const mk_qstats *s) { return s->sum_x2 > 0 ? sqrt(s->sum_e2 / s->sum_x2) : (s->sum_e2 > 0 ? INFINITY : 0); }

static void fmt_sqnr(double x2, double e2, char b[16])
{
    if (e2 <= 0) snprintf(b, 16, "inf");
    else if (x2 <= 0) snprintf(b, 16, "-inf");
    else snprintf(b, 16, "%.2f", 10 * log10(x2 / e2));
}

static void json_num(mk_buf *b, double v)
{
    if (isfinite(v)) mk_buf_printf(b, "%.6g", v);
    else mk_buf_puts(b, "null");
}

mk_status mk_cli_quant_report(const struct mk_qplan *p, mk_consumer *cons, const mk_common *c, double secs, bool json,
                              const char *html)
{
    mk_qstats tot = {0};
    uint64_t in_all = 0, out_all = 0, numel_all = 0;
    bool bound = false;
    char a[32], b[32], sq[16], desc[160];
    mk_qopts_describe(&p->o, desc); /* for the JSON too, with -q */
    if (!c->quiet)
        fprintf(stderr, "quantize: %s\n  %-56s %6s %10s %8s %11s %21s\n", desc, "tensor", "bpw", "rel RMSE", "SQNR dB",
                "max |err|", "bytes in -> out");
    mk_buf j = {0};
    mk_buf_printf(&j, "{\"format\": \"%s\", \"description\": ", p->o.fmt->name);
    mk_buf_json_str(&j, desc);
    mk_buf_puts(&j, ", \"tensors\": [");
    size_t nj = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_qstats *s = mk_quant_stats(cons, i);
        in_all += p->in[i].nbytes;
        numel_all += p->in[i].numel;
        for (size_t k = 0; k < p->t[i].nout; k++) out_all += p->out[p->t[i].out0 + k].nbytes;
        if (!s->quantized || !s->done) continue;
        tot.numel += s->numel;
        tot.in_bytes += s->in_bytes;
        tot.out_bytes += s->out_bytes;
        tot.sum_x2 += s->sum_x2;
        tot.sum_e2 += s->sum_e2;
        tot.max_err = s->max_err > tot.max_err ? s->max_err : tot.max_err;
        bound |= s->max_err_bound;
        double bpw = 8.0 * (double)s->out_bytes / (double)s->numel;
        fmt_sqnr(s->sum_x2, s->sum_e2, sq);
        if (!c->quiet)
            fprintf(stderr, "  %-56s %6.3f %10.5f %8s %s%10.4g %9s -> %9s\n", p->in[i].name, bpw, rel_rmse(s), sq,
                    s->max_err_bound ? "<" : " ", s->max_err, mk_fmt_bytes(s->in_bytes, a), mk_fmt_bytes(s->out_bytes, b));
        mk_buf_puts(&j, nj++ ? ",\n  {\"name\": " : "\n  {\"name\": ");
        mk_buf_json_str(&j, p->in[i].name);
        mk_buf_printf(&j, ", \"bits_per_weight\": %.6g, \"rel_rmse\": ", bpw);
        json_num(&j, rel_rmse(s));
        mk_buf_puts(&j, ", \"sqnr_db\": ");
        json_num(&j, s->sum_e2 > 0 && s->sum_x2 > 0 ? 10 * log10(s->sum_x2 / s->sum_e2) : NAN);
        mk_buf_printf(&j, ", \"max_abs_err\": %.6g, \"max_abs_err_is_bound\": %s, \"in_bytes\": %llu, \"out_bytes\": %llu}",
                      s->max_err, s->max_err_bound ? "true" : "false", (unsigned long long)s->in_bytes,
                      (unsigned long long)s->out_bytes);
    }
    double tbpw = tot.numel ? 8.0 * (double)tot.out_bytes / (double)tot.numel : 0;
    fmt_sqnr(tot.sum_x2, tot.sum_e2, sq);
    double vps = secs > 0 ? (double)numel_all / secs : 0;
    if (!c->quiet) {
        fprintf(stderr, "  %-56s %6.3f %10.5f %8s %s%10.4g %9s -> %9s\n", "total of the quantized weights", tbpw, rel_rmse(&tot), sq,
                bound ? "<" : " ", tot.max_err, mk_fmt_bytes(tot.in_bytes, a), mk_fmt_bytes(tot.out_bytes, b));
        char kept[64] = "";
        if (p->n_kept_shape) snprintf(kept, sizeof kept, " (%zu weights kept for their shape)", p->n_kept_shape);
        fprintf(stderr, "  model: %s -> %s (%.1f%%); %zu of %zu tensors quantized%s; %.2f s, %.1f M values/s\n",
                mk_fmt_bytes(in_all, a), mk_fmt_bytes(out_all, b), in_all ? 100.0 * (double)out_all / (double)in_all : 0.0,
                p->n_quantized, p->n, kept, secs, vps / 1e6);
        if (bound) fprintf(stderr, "  (< : an upper bound; with double quant inside a merge the nested absmax is known only at the end)\n");
    }
    mk_buf_printf(&j, "\n], \"total\": {\"quantized_tensors\": %zu, \"parameters\": %llu, \"bits_per_weight\": %.6g, \"rel_rmse\": ",
                  p->n_quantized, (unsigned long long)tot.numel, tbpw);
    json_num(&j, rel_rmse(&tot));
    mk_buf_puts(&j, ", \"sqnr_db\": ");
    json_num(&j, tot.sum_e2 > 0 && tot.sum_x2 > 0 ? 10 * log10(tot.sum_x2 / tot.sum_e2) : NAN);
    mk_buf_printf(&j, ", \"max_abs_err\": %.6g, \"max_abs_err_is_bound\": %s, \"in_bytes\": %llu, \"out_bytes\": %llu}",
                  tot.max_err, bound ? "true" : "false", (unsigned long long)tot.in_bytes, (unsigned long long)tot.out_bytes);
    mk_buf_printf(&j, ", \"model\": {\"tensors\": %zu, \"in_bytes\": %llu, \"out_bytes\": %llu}, \"seconds\": %.3f, "
                      "\"values_per_second\": %.0f}\n",
                  p->n, (unsigned long long)in_all, (unsigned long long)out_all, secs, vps);
    if (json && !j.failed) fputs(j.data, stdout);
    mk_buf_free(&j);
    mk_status s = html ? mk_cli_report_quant(p, cons, html) : MK_OK;
    if (s == MK_OK && html && !c->quiet) fprintf(stderr, "mergekit-c: wrote %s\n", html);
    return s;
}


/* ---- eval: open models, tokenize the text, run, report ----------------------------------------- */

typedef struct eval_model {
    const char *path;
    mk_source *src;          /* dequantizing view when quantized */
    mk_model_config cfg;
    bool has_cfg;
    mk_nn_model *nn;
} eval_model;

static void eval_model_close(eval_model *em)
{
    mk_nn_close(em->nn);
    if (em->has_cfg) mk_model_config_free(&em->cfg);
    mk_source_close(em->src);
    memset(em, 0, sizeof *em);
}

static mk_status eval_model_open(const char *path, eval_model *em)
{
    memset(em, 0, sizeof *em);
    em->path = path;
    mk_source *raw = NULL;
    MK_TRY(mk_cli_open_model(path, &raw));
    mk_qinfo qi;
    mk_status s = mk_qsource_open(raw, &em->src, &qi); /* quantized layouts read dequantized */
    if (s != MK_OK) {
        mk_source_close(raw);
        return s;
    }
    s = mk_model_config_of_source(em->src, &em->cfg);
    em->has_cfg = s == MK_OK;
    if (s == MK_OK) s = mk_nn_open(em->src, &em->cfg, &em->nn);
    return s;
}

/* The model's tokenizer (tokenizer.json, and tokenizer_config.json for BOS/EOS names). */
mk_status mk_cli_open_tokenizer(mk_source *src, const char *path, mk_tokenizer **t)
{
    char *tj = NULL, *cj = NULL, *what = NULL;
    size_t tl = 0, cl = 0;
    *t = NULL;
    MK_TRY(src->ops->aux_read(src, "tokenizer.json", MK_TOK_MAX_JSON, &tj, &tl));
    if (!tj) return mk_error(MK_ERR_USAGE, "%s: no tokenizer.json (eval needs the model's tokenizer)", path);
    mk_status s = src->ops->aux_read(src, "tokenizer_config.json", 16u << 20, &cj, &cl);
    what = mk_asprintf("%s: tokenizer.json", path);
    if (s == MK_OK) s = what ? mk_tokenizer_load(tj, tl, what, t) : MK_ERR_NOMEM;
    free(what);
    what = cj ? mk_asprintf("%s: tokenizer_config.json", path) : NULL;
    if (s == MK_OK && cj) s = what ? mk_tokenizer_load_config(*t, cj, cl, what) : MK_ERR_NOMEM;
    free(what);
    free(tj);
    free(cj);
    return s;
}

/* The text as token ids, and the BOS each window starts with (what encode adds before an
 * empty text, when it adds anything). */
static mk_status tokenize_text(const mk_tokenizer *t, const char *file, int32_t **ids, size_t *n, int32_t *bos)
{
    char *text = NULL;
    size_t len = 0;
    int32_t *pre = NULL;
    size_t npre = 0;
    *ids = NULL;
    MK_TRY(mk_read_file(file, TEXT_CAP, &text, &len));
    mk_status s = mk_tokenizer_encode(t, text, len, true, ids, n);
    free(text);
    /* a vocabulary that does not cover the text scores the unknown token, not the text */
    int32_t unk = mk_tokenizer_unk(t);
    size_t n_unk = 0;
    for (size_t i = 0; s == MK_OK && unk >= 0 && i < *n; i++) n_unk += (*ids)[i] == unk;
    if (n_unk * 20 > *n) {
        size_t tl = 0;
        const char *tok = mk_tokenizer_token(t, unk, &tl);
        mk_warn("%s: %zu of its %zu tokens (%.0f %%) are the unknown token '%.*s': the model's tokenizer does not cover "
                "this text, so the perplexity measures little",
                file, n_unk, *n, 100.0 * (double)n_unk / (double)*n, (int)(tl < 32 ? tl : 32), tok ? tok : "");
    }
    if (s == MK_OK) s = mk_tokenizer_encode(t, "", 0, true, &pre, &npre);
    *bos = s == MK_OK && npre ? pre[0] : -1;
    free(pre);
    return s;
}

/* Bits per byte: the scored NLL over the bytes of text the scored tokens decode to; NaN
 * (printed n/a, null in JSON) when they decode to no text (only unknown or special tokens). */
static mk_status bits_per_byte(const mk_tokenizer *t, const int32_t *ids, size_t n, const mk_eval_opts *eo,
                               const mk_eval_result *r, double *bpb)
{
    size_t windows, first, scored;
    double bytes = 0;
    mk_eval_windows(n, eo, &windows, &first, &scored);
    for (size_t w = 0; w < windows; w++) {
        char *text = NULL;
        size_t len = 0;
        MK_TRY(mk_tokenizer_decode(t, ids + w * eo->ctx + first + 1, scored, true, &text, &len));
        free(text);
        bytes += (double)len;
    }
    *bpb = bytes > 0 ? r->nll_sum / log(2.0) / bytes : NAN;
    return MK_OK;
}

static void json_kl(mk_buf *b, const mk_eval_kl *k)
{
    mk_buf_printf(b, "\"kl_mean\": %.9g, \"kl_stderr\": %.9g, \"kl_median\": %.9g, \"kl_p90\": %.9g, \"kl_p95\": %.9g, "
                     "\"kl_p99\": %.9g, \"kl_max\": %.9g, \"same_top\": %.9g, \"delta_p_mean\": %.9g, \"delta_p_rms\": %.9g, "
                     "\"ppl_ratio\": %.9g, \"ppl_ratio_stderr\": %.9g, \"ref_ppl\": %.9g",
                  k->kl_mean, k->kl_se, k->kl_median, k->kl_p90, k->kl_p95, k->kl_p99, k->kl_max, k->same_top, k->dp_mean,
                  k->dp_rms, k->ppl_ratio, k->ppl_ratio_se, k->ppl_ref);
    mk_buf_puts(b, ", \"kl_histogram\": {\"edges\": [");
    for (size_t i = 0; i < MK_EVAL_KL_EDGES; i++) mk_buf_printf(b, "%s%.6g", i ? ", " : "", mk_eval_kl_edge(i));
    mk_buf_puts(b, "], \"counts\": [");
    for (size_t i = 0; i <= MK_EVAL_KL_EDGES; i++) mk_buf_printf(b, "%s%llu", i ? ", " : "", (unsigned long long)k->kl_hist[i]);
    mk_buf_puts(b, "]}");
}

static void eval_json(mk_buf *b, const char *model, const char *const *refs, const mk_cli_eval_opts *o, size_t n_tok,
                      const mk_eval_result *r, double bpb)
{
    mk_buf_puts(b, "{\"model\": ");
    mk_buf_json_str(b, model);
    mk_buf_puts(b, ", \"text\": ");
    mk_buf_json_str(b, o->text);
    mk_buf_printf(b, ", \"tokens\": %zu, \"ctx\": %ld, \"windows\": %zu, \"scored\": %zu, \"ppl\": %.9g, \"ppl_stderr\": %.9g, "
                     "\"nll_mean\": %.9g, \"bits_per_byte\": ",
                  n_tok, o->ctx, r->windows, r->scored, r->ppl, r->ppl_se, r->nll_mean);
    if (isnan(bpb)) mk_buf_puts(b, "null");
    else mk_buf_printf(b, "%.9g", bpb);
    mk_buf_printf(b, ", \"seconds\": %.3f, \"tokens_per_second\": %.1f, \"refs\": [", r->seconds, r->tokens_per_s);
    for (size_t i = 0; i < r->n_refs; i++) {
        mk_buf_puts(b, i ? ",\n  {\"ref\": " : "\n  {\"ref\": ");
        mk_buf_json_str(b, refs[i]);
        mk_buf_puts(b, ", ");
        json_kl(b, &r->kl[i]);
        mk_buf_puts(b, "}");
    }
    mk_buf_puts(b, r->n_refs ? "\n]" : "]");
    if (r->has_pair) {
        mk_buf_puts(b, ", \"between_refs\": {\"p\": ");
        mk_buf_json_str(b, refs[0]);
        mk_buf_puts(b, ", \"q\": ");
        mk_buf_json_str(b, refs[1]);
        mk_buf_puts(b, ", ");
        json_kl(b, &r->pair);
        mk_buf_puts(b, "}");
    }
    mk_buf_puts(b, "}\n");
}

static void text_kl(mk_buf *b, const char *label, const mk_eval_kl *k)
{
    mk_buf_printf(b, "%s (PPL %.4f)\n  KL divergence  mean %.6f +- %.6f  median %.6f  p90 %.6f  p95 %.6f  p99 %.6f  max %.6f\n"
                     "  same top token %.2f %%   delta p  mean %+.3f %%  RMS %.3f %%   PPL ratio %.5f +- %.5f\n",
                  label, k->ppl_ref, k->kl_mean, k->kl_se, k->kl_median, k->kl_p90, k->kl_p95, k->kl_p99, k->kl_max,
                  100 * k->same_top, 100 * k->dp_mean, 100 * k->dp_rms, k->ppl_ratio, k->ppl_ratio_se);
}

static void eval_text(mk_buf *b, const char *model, const char *const *refs, const mk_cli_eval_opts *o, size_t n_tok,
                      const mk_eval_result *r, double bpb)
{
    mk_buf_printf(b, "eval %s on %s: %zu tokens, %zu windows of %ld, %zu scored\n", model, o->text, n_tok, r->windows, o->ctx,
                  r->scored);
    char bpb_s[32] = "n/a";
    if (!isnan(bpb)) snprintf(bpb_s, sizeof bpb_s, "%.4f", bpb);
    mk_buf_printf(b, "perplexity %.4f +- %.4f   mean NLL %.5f   bits per byte %s   (%.1f s, %.0f tokens/s)\n", r->ppl, r->ppl_se,
                  r->nll_mean, bpb_s, r->seconds, r->tokens_per_s);
    for (size_t i = 0; i < r->n_refs; i++) {
        char *label = mk_asprintf("against %s", refs[i]);
        text_kl(b, label ? label : refs[i], &r->kl[i]);
        free(label);
    }
    if (r->has_pair) {
        char *label = mk_asprintf("between the references: %s against %s", refs[1], refs[0]);
        text_kl(b, label ? label : "between the references", &r->pair);
        free(label);
    }
}

/* A reference whose tokenizer.json differs from the model's is compared token id by token id:
 * say so, since the same id may then mean different text. */
static mk_status same_tokenizer(eval_model *a, eval_model *b)
{
    char *x = NULL, *y = NULL;
    size_t xl = 0, yl = 0;
    mk_status s = a->src->ops->aux_read(a->src, "tokenizer.json", MK_TOK_MAX_JSON, &x, &xl);
    if (s == MK_OK) s = b->src->ops->aux_read(b->src, "tokenizer.json", MK_TOK_MAX_JSON, &y, &yl);
    if (s == MK_OK && x && y && (xl != yl || memcmp(x, y, xl) != 0))
        mk_warn("%s: its tokenizer.json differs from %s's; the KL divergence compares token ids, which may not mean the same "
                "text", b->path, a->path);
    free(x);
    free(y);
    return s;
}

/* Open every model, the tokenizer and the text; run; report. */
static mk_status eval_all(eval_model *em, size_t nm, const mk_cli_eval_opts *o, const mk_common *c, bool own)
{
    mk_tokenizer *t = NULL;
    int32_t *ids = NULL, bos = -1;
    size_t n = 0;
    mk_status s = MK_OK;
    for (size_t i = 0; i < nm && s == MK_OK; i++) {
        s = eval_model_open(em[i].path, &em[i]);
        if (s == MK_OK && i && mk_nn_vocab(em[i].nn) != mk_nn_vocab(em[0].nn))
            s = mk_error(MK_ERR_USAGE, "%s has a vocabulary of %zu tokens, %s has %zu; KL divergence needs one vocabulary",
                         em[i].path, mk_nn_vocab(em[i].nn), em[0].path, mk_nn_vocab(em[0].nn));
    }
    for (size_t i = 1; i < nm && s == MK_OK; i++) s = same_tokenizer(&em[0], &em[i]);
    if (s == MK_OK) s = mk_cli_open_tokenizer(em[0].src, em[0].path, &t);
    if (s == MK_OK) s = tokenize_text(t, o->text, &ids, &n, &bos);
    if (s == MK_OK && n < (size_t)o->ctx)
        s = mk_error(MK_ERR_USAGE, "%s: %zu tokens, fewer than one window of %ld (--ctx)", o->text, n, o->ctx);
    mk_nn_model *refs[MK_CLI_EVAL_MAX_REFS];
    const char *ref_names[MK_CLI_EVAL_MAX_REFS];
    for (size_t i = 1; i < nm; i++) refs[i - 1] = em[i].nn, ref_names[i - 1] = em[i].path;
    mk_progress prog;
    mk_progress_init(&prog, "eval", c);
    mk_eval_opts eo = {(size_t)o->ctx, o->chunks > 0 ? (size_t)o->chunks : 0, o->batch > 0 ? (size_t)o->batch : 0, bos,
                       mk_progress_cb, &prog};
    if (s == MK_OK) {
        size_t batch = eo.batch ? eo.batch : (size_t)(2048 / o->ctx ? 2048 / o->ctx : 1);
        uint64_t mem = 0;
        for (size_t i = 0; i < nm; i++) mem += mk_nn_memory(em[i].nn, batch, (size_t)o->ctx, (size_t)o->ctx / 2);
        char mb[32];
        mk_info("eval: %zu tokens, BOS %d, %zu window(s) per pass, about %s of memory", n, bos, batch, mk_fmt_bytes(mem, mb));
    }
    mk_eval_result r;
    if (s == MK_OK) s = mk_eval_run(em[0].nn, refs, nm - 1, ids, n, &eo, &r);
    double bpb = 0;
    if (s == MK_OK) s = bits_per_byte(t, ids, n, &eo, &r, &bpb);
    mk_progress_end(&prog);
    if (s == MK_OK) {
        mk_buf b = {0};
        if (own && c->json) eval_json(&b, em[0].path, ref_names, o, n, &r, bpb);
        else eval_text(&b, em[0].path, ref_names, o, n, &r, bpb);
        if (b.failed) s = mk_error(MK_ERR_NOMEM, "out of memory");
        else if (own) fputs(b.data, stdout);
        else if (!c->quiet) fputs(b.data, stderr);
        mk_buf_free(&b);
    }
    free(ids);
    mk_tokenizer_free(t);
    return s;
}

mk_status mk_cli_eval(const char *model, const char *const *refs, size_t n_refs, const mk_cli_eval_opts *o,
                      const mk_common *c, bool own)
{
    if (n_refs > MK_CLI_EVAL_MAX_REFS) return mk_error(MK_ERR_USAGE, "at most %d reference models", MK_CLI_EVAL_MAX_REFS);
    if (o->ctx < 8 || o->ctx > 1 << 20) return mk_error(MK_ERR_USAGE, "--ctx %ld: between 8 and 1048576 tokens", o->ctx);
    eval_model em[1 + MK_CLI_EVAL_MAX_REFS];
    memset(em, 0, sizeof em);
    em[0].path = model;
    for (size_t i = 0; i < n_refs; i++) em[1 + i].path = refs[i];
    mk_status s = eval_all(em, 1 + n_refs, o, c, own);
    for (size_t i = 0; i <= n_refs; i++) eval_model_close(&em[i]);
    return s;
}

mk_status mk_cli_tokenize_file(const mk_tokenizer *t, const char *file, int32_t **ids, size_t *n, int32_t *bos)
{
    return tokenize_text(t, file, ids, n, bos);
}
