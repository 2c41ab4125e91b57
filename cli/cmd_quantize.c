/* cmd_quantize.c - `quantize IN OUT --format F` (also `mergekit-c quantize`): post-training
 * quantization of a checkpoint into the layouts transformers + bitsandbytes and
 * compressed-tensors / vLLM load.
 *
 * IN (headers) -> plan: which tensors are quantized and what they become -> [double quant:
 * one pass for the absmax means] -> OUT.tmp: shards streamed tensor by tensor, config.json
 * with quantization_config, tokenizer files, README.md -> rename to OUT. Then the report:
 * per tensor and in total, bits per weight, relative RMSE, SQNR, max abs error, sizes.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/output.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct quant_cli {
    mk_common c;
    const char *format, *scheme, *target, *method;
    long block, group;
    bool double_quant, per_tensor, force, dry_run;
    const char *skip, *include, *compute_dtype;
    uint64_t shard_size, chunk;
} quant_cli;

/* ---- the run ---------------------------------------------------------------------------------- */

/* config.json with quantization_config, the tokenizer files, a model card. */
static mk_status write_aux(mk_source *src, mk_output *o, const mk_qplan *p, const char *in_path, const char *out_path)
{
    char *qc = mk_qplan_config_json(p);
    if (!qc) return MK_ERR_NOMEM;
    mk_hfconfig_edit e = {NULL, NULL, 0, NULL, 0, qc, false};
    bool found;
    mk_status s = mk_output_config(o, src, &e, &found);
    free(qc);
    if (s == MK_OK && !found)
        mk_warn("%s has no config.json; the output has none, so loaders will not know its quantization", in_path);
    if (s == MK_OK) s = mk_output_tokenizer(o, src);
    if (s == MK_OK) {
        char desc[160];
        char *title = mk_path_basename(out_path);
        mk_buf b = {0};
        mk_buf_printf(&b, "---\nlibrary_name: transformers\ntags:\n- mergekit-c\n- quantized\n- %s\n---\n# %s\n\n",
                      MK_QFORMATS[p->o.fmt].name, title ? title : "quantized");
        mk_buf_printf(&b, "`%s` quantized to %s with mergekit-c %s (`quantize`).\n\n", in_path, mk_qopts_describe(&p->o, desc),
                      MK_VERSION);
        mk_buf_printf(&b, "%zu of %zu tensors are quantized; embeddings, lm_head, norms and biases keep their dtype.\n",
                      p->n_quantized, p->n);
        if (p->o.target == MK_QT_BNB)
            mk_buf_puts(&b, "\nLoad it with transformers and bitsandbytes: `AutoModelForCausalLM.from_pretrained(path)`.\n");
        else
            mk_buf_puts(&b, "\nLoad it with vLLM, or with transformers and compressed-tensors "
                            "(`CompressedTensorsConfig(run_compressed=False)` to decompress).\n");
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
                      MK_QFORMATS[p->o.fmt].name, p->n_quantized, (unsigned long long)p->in_bytes, (unsigned long long)p->out_bytes);
        for (size_t i = 0; i < p->n; i++) {
            mk_buf_puts(&j, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
            mk_buf_json_str(&j, p->in[i].name);
            mk_buf_printf(&j, ", \"quantized\": %s, \"stored\": [", p->t[i].kind ? "true" : "false");
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
        printf("  %-60s %-6s %12llu -> %12llu  %s\n", p->in[i].name, q->kind ? MK_QFORMATS[p->o.fmt].name : "keep",
               (unsigned long long)p->in[i].nbytes, (unsigned long long)ob, q->kind ? "" : (q->kept_why ? q->kept_why : ""));
    }
}

static mk_status run(quant_cli *o, mk_qopts *qo, const char *in, const char *out)
{
    mk_source *src = NULL;
    mk_qplan plan;
    memset(&plan, 0, sizeof plan);
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
    mk_arch_free(&arch);
    if (s == MK_OK && !plan.n_quantized)
        mk_warn("%s: no tensor is quantized (no 2-D float weight outside embeddings and lm_head, or all skipped)", in);
    if (s == MK_OK) {
        idx = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *idx);
        if (!idx) s = MK_ERR_NOMEM;
        for (size_t i = 0; idx && i < src->n_tensors; i++) idx[i] = i;
    }
    if (s == MK_OK && o->dry_run) {
        s = mk_qplan_layout(&plan); /* offsets unknown: blob lengths are estimates */
        if (s == MK_OK) print_dry_run(&plan, &o->c);
        goto done;
    }
    double t0 = mk_now();
    if (s == MK_OK) s = mk_qstream_offsets(src, idx, &plan, o->chunk);
    if (s == MK_OK) s = mk_qplan_layout(&plan);
    if (s != MK_OK) goto done;
    mk_output out_o = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = o->shard_size, .force = o->force};
    s = mk_output_begin(&out_o, out, &oo, plan.out, plan.n_out);
    if (s == MK_OK) s = mk_quant_consumer(&cons, out_o.k, &plan, true, false);
    mk_progress prog;
    mk_progress_init(&prog, "quantize", &o->c);
    mk_qstream_opts qso = {o->chunk, mk_progress_cb, &prog, true};
    if (s == MK_OK) s = mk_qstream_run(src, idx, src->tensors, src->n_tensors, &cons, &qso);
    mk_progress_end(&prog);
    if (s == MK_OK) s = write_aux(src, &out_o, &plan, in, out);
    if (s == MK_OK) s = mk_output_seal(&out_o);
    if (s == MK_OK) s = mk_output_commit(&out_o);
    double secs = mk_now() - t0;
    if (s == MK_OK) {
        mk_cli_quant_report(&plan, &cons, &o->c, secs, o->c.json);
        if (!o->c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", out);
    }
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&out_o);
done:
    free(idx);
    mk_qplan_free(&plan);
    mk_source_close(src);
    return s;
}

/* Flags -> options; a usage error names the flag. */
static mk_status to_qopts(const quant_cli *o, mk_qopts *q)
{
    memset(q, 0, sizeof *q);
    q->group = o->group;
    if (!o->format) return mk_error(MK_ERR_USAGE, "--format is required (nf4, fp4, int8, int4, fp8 or fp8-e5m2)");
    int f = mk_qformat_find(o->format);
    if (f < 0) {
        const char *names[MK_QF_COUNT];
        for (int i = 0; i < MK_QF_COUNT; i++) names[i] = MK_QFORMATS[i].name;
        const char *hint = mk_did_you_mean(o->format, names, MK_QF_COUNT);
        return mk_error(MK_ERR_USAGE, "--format: unknown format '%s'%s%s%s (nf4, fp4, int8, int4, fp8, fp8-e5m2)", o->format,
                        hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
    }
    q->fmt = (mk_qfmt)f;
    if (o->block < 0 || o->block > (1L << 20)) return mk_error(MK_ERR_USAGE, "--block-size %ld is out of range", o->block);
    q->block = (unsigned)o->block;
    q->double_quant = o->double_quant;
    q->per_tensor = o->per_tensor;
    q->skip = o->skip;
    q->include = o->include;
    q->compute_dtype = o->compute_dtype;
    if (o->group < -1) return mk_error(MK_ERR_USAGE, "--group-size must be 0 (per channel) or positive, got %ld", o->group);
    if (o->scheme) {
        if (strcmp(o->scheme, "sym") != 0 && strcmp(o->scheme, "asym") != 0)
            return mk_error(MK_ERR_USAGE, "--scheme: expected sym or asym, got '%s'", o->scheme);
        q->asym = o->scheme[0] == 'a';
    }
    if (o->method) {
        if (strcmp(o->method, "rtn") != 0 && strcmp(o->method, "search") != 0)
            return mk_error(MK_ERR_USAGE, "--method: expected rtn or search, got '%s'", o->method);
        q->method = o->method[0] == 's' ? MK_QM_SEARCH : MK_QM_RTN;
    }
    if (o->target) {
        if (strcmp(o->target, "bitsandbytes") == 0 || strcmp(o->target, "bnb") == 0) q->target = MK_QT_BNB;
        else if (strcmp(o->target, "compressed-tensors") == 0) q->target = MK_QT_CT;
        else return mk_error(MK_ERR_USAGE, "--target: expected bitsandbytes or compressed-tensors, got '%s'", o->target);
    }
    return mk_qopts_resolve(q, false);
}

int mk_cmd_quantize(int argc, char **argv)
{
    quant_cli o = {.block = 0, .group = -1, .shard_size = 5000000000ull};
    const mk_opt opts[] = {
        {"format", 'F', MK_OPT_STR, &o.format, "FORMAT", "nf4, fp4, int8, int4, fp8 or fp8-e5m2 (see below)", NULL},
        {"double-quant", 0, MK_OPT_FLAG, &o.double_quant, NULL, "nf4/fp4: quantize the block absmax to 8 bits (QLoRA)", NULL},
        {"block-size", 0, MK_OPT_INT, &o.block, "N", "nf4/fp4: values per absmax, a power of two 32..4096", "64"},
        {"group-size", 0, MK_OPT_INT, &o.group, "N", "int4, compressed-tensors int8: columns per scale; 0 = one per row", "128 for int4, 0 for int8"},
        {"scheme", 0, MK_OPT_STR, &o.scheme, "sym|asym", "int4, compressed-tensors int8: symmetric, or with zero points", "sym"},
        {"method", 0, MK_OPT_STR, &o.method, "rtn|search", "int4, compressed-tensors int8: round to nearest, or search the scale that minimises the error", "rtn"},
        {"target", 0, MK_OPT_STR, &o.target, "LAYOUT", "int8: bitsandbytes (LLM.int8) or compressed-tensors (W8A16)", "bitsandbytes"},
        {"per-tensor", 0, MK_OPT_FLAG, &o.per_tensor, NULL, "fp8: one scale for the whole tensor instead of one per row", NULL},
        {"skip", 0, MK_OPT_LIST, &o.skip, "PATTERN", "keep matching tensors unquantized (glob with * or substring; repeatable)", NULL},
        {"include", 0, MK_OPT_LIST, &o.include, "PATTERN", "quantize matching 2-D weights kept by default (embeddings, lm_head)", NULL},
        {"compute-dtype", 0, MK_OPT_STR, &o.compute_dtype, "DTYPE", "nf4/fp4: bnb_4bit_compute_dtype in config.json", "the weights' dtype"},
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard_size, "SIZE", "maximum bytes of tensor data per shard (5e9, 500M, 2G)", "5e9"},
        {"dry-run", 'n', MK_OPT_FLAG, &o.dry_run, NULL, "print what each tensor becomes, with sizes; write nothing", NULL},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        {"chunk", 0, MK_OPT_U64, &o.chunk, "N", "elements per work chunk", "262144"},
        MK_COMMON_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {
        "quantize", "IN OUT --format FORMAT [options]",
        "Quantize a checkpoint (post-training, no calibration data) into the layouts the ecosystem loads.",
        "formats:\n"
        "  nf4       4-bit NormalFloat, blocks of 64, bitsandbytes layout (transformers load_in_4bit)\n"
        "  fp4       4-bit float, blocks of 64, bitsandbytes layout\n"
        "  int8      LLM.int8: int8 per row + SCB (bitsandbytes load_in_8bit); --target compressed-tensors: W8A16\n"
        "  int4      compressed-tensors pack-quantized W4A16 (vLLM), group 128, --scheme asym for zero points\n"
        "  fp8       compressed-tensors float-quantized E4M3, one scale per row (FP8_DYNAMIC)\n"
        "  fp8-e5m2  the same layout with E5M2 values\n"
        "Embeddings, lm_head, norms, biases and 1-D tensors stay as they are. The output is bit for bit\n"
        "what bitsandbytes and compressed-tensors produce for the same weights. Each run reports bits per\n"
        "weight, relative RMSE, SQNR and max abs error per tensor and in total (stderr; --json on stdout).",
        opts, 2, 2};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, true, &rc)) return rc;
    mk_qopts qo;
    mk_status s = to_qopts(&o, &qo);
    if (s == MK_OK) s = run(&o, &qo, pos[0], pos[1]);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
