/* common.c - the helpers every command shares (cli.h): starting a command, reporting an
 * error, opening inputs (a model, or a base with a LoRA adapter merged on the fly), the
 * output-overlap rule, and the quantization report of quantize and merge --quantize.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_thread.h"
#include "../formats/model.h"
#include "../formats/peft.h"
#include "../lora/lora.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- starting, failing, inputs and outputs ------------------------------------------------- */

void mk_cli_common(const mk_common *c)
{
    mk_log_set_level(c->quiet ? MK_LOG_ERROR : MK_LOG_WARN + c->verbose);
    mk_threads_set((int)c->threads);
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
    if (writes) mk_signal_install();
    return true;
}

int mk_cli_fail(mk_status s)
{
    fprintf(stderr, "mergekit-c: error: %s\n", mk_errmsg());
    return mk_status_exit_code(s);
}

mk_status mk_cli_open_model(const char *path, mk_source **out) { return mk_model_open(path, out); }

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
    MK_TRY(mk_cli_open_model(base_path, &base));
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

void mk_cli_quant_report(const struct mk_qplan *p, mk_consumer *cons, const mk_common *c, double secs, bool json)
{
    mk_qstats tot = {0};
    uint64_t in_all = 0, out_all = 0, numel_all = 0;
    bool bound = false;
    char a[32], b[32], sq[16], desc[160];
    if (!c->quiet)
        fprintf(stderr, "quantize: %s\n  %-56s %6s %10s %8s %11s %21s\n", mk_qopts_describe(&p->o, desc), "tensor", "bpw",
                "rel RMSE", "SQNR dB", "max |err|", "bytes in -> out");
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
        fprintf(stderr, "  model: %s -> %s (%.1f%%); %zu of %zu tensors quantized; %.2f s, %.1f M values/s\n",
                mk_fmt_bytes(in_all, a), mk_fmt_bytes(out_all, b), in_all ? 100.0 * (double)out_all / (double)in_all : 0.0,
                p->n_quantized, p->n, secs, vps / 1e6);
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
}

