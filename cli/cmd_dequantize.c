/* cmd_dequantize.c - `mergekit-c dequantize IN OUT [--dtype D]`: a quantized checkpoint
 * (bitsandbytes NF4/FP4/LLM.int8, compressed-tensors pack-quantized/float-quantized, ours
 * or the reference tools') back to plain safetensors, each weight computed exactly as the
 * consumer's own dequantizer does, then rounded once to the output dtype. A GGUF file (quantized or
 * not) becomes a Hugging Face folder the same way.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/output.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mk_status run(mk_common *c, const char *in, const char *out, const char *dtype_s, uint64_t shard, bool force, uint64_t chunk)
{
    mk_dtype want = MK_DTYPE_NONE;
    if (dtype_s) {
        want = mk_dtype_from_user(dtype_s);
        if (want != MK_BF16 && want != MK_F16 && want != MK_F32)
            return mk_error(MK_ERR_USAGE, "--dtype: '%s' is not bfloat16, float16 or float32", dtype_s);
    }
    mk_source *raw = NULL, *src = NULL;
    mk_qinfo qi;
    MK_TRY(mk_cli_open_model(in, &raw));
    mk_status s = mk_qsource_open(raw, &src, &qi);
    if (s != MK_OK) {
        mk_source_close(raw);
        return s;
    }
    mk_tensor_info *outs = NULL;
    size_t *idx = NULL;
    bool gguf = strcmp(raw->kind, "gguf") == 0; /* a GGUF file of plain tensors reads as safetensors too */
    if (!qi.quantized && gguf) {
        qi.layout = "gguf";
        snprintf(qi.format, sizeof qi.format, "plain");
        qi.dtype = MK_F32;
    }
    if (!qi.quantized && !gguf)
        s = mk_error(MK_ERR_USAGE, "%s is not a quantized checkpoint (no bitsandbytes, compressed-tensors or GGUF weights)", in);
    if (s == MK_OK) s = mk_cli_check_output(out, &in, 1);
    if (s == MK_OK) {
        outs = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *outs);
        idx = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *idx);
        if (!outs || !idx) s = MK_ERR_NOMEM;
    }
    /* each float tensor in --dtype, else in the dtype it had before quantization */
    mk_dtype cfg_dtype = want != MK_DTYPE_NONE ? want : qi.dtype;
    for (size_t i = 0; s == MK_OK && i < src->n_tensors; i++) {
        outs[i] = src->tensors[i];
        idx[i] = i;
        mk_dtype od = mk_qsource_orig_dtype(src, i);
        if (want != MK_DTYPE_NONE && mk_dtype_info(od)->is_float) od = want;
        outs[i].dtype = od;
        s = mk_tensor_info_finish(&outs[i]);
    }
    mk_output o = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = shard, .force = force};
    if (s == MK_OK) s = mk_output_begin(&o, out, &oo, outs, src->n_tensors);
    if (s == MK_OK) s = mk_consumer_plain(&cons, o.k, outs, src->n_tensors, false);
    mk_progress prog;
    mk_progress_init(&prog, "dequantize", c);
    double t0 = mk_now();
    mk_qstream_opts qso = {chunk, mk_progress_cb, &prog};
    if (s == MK_OK) s = mk_qstream_run(src, idx, outs, src->n_tensors, &cons, &qso);
    mk_progress_end(&prog);
    /* config.json in the output dtype, without its quantization_config */
    mk_hfconfig_edit e = {mk_dtype_info(cfg_dtype)->torch_name, NULL, 0, NULL, 0, NULL, true, NULL};
    bool found;
    if (s == MK_OK) s = mk_output_config(&o, src, &e, &found);
    if (s == MK_OK) s = mk_output_tokenizer(&o, src);
    if (s == MK_OK) s = mk_output_seal(&o);
    if (s == MK_OK) s = mk_output_commit(&o);
    if (s == MK_OK) {
        char a[32], d[160];
        uint64_t bytes = 0;
        for (size_t i = 0; i < src->n_tensors; i++) bytes += outs[i].nbytes;
        if (!c->quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %s dequantized (%zu weights), %zu tensors, %s in %.1f s\n", out,
                    mk_qinfo_describe(&qi, d), qi.n_quantized, src->n_tensors, mk_fmt_bytes(bytes, a), mk_now() - t0);
        if (c->json)
            printf("{\"out\": \"%s\", \"format\": \"%s\", \"layout\": \"%s\", \"dequantized\": %zu, \"tensors\": %zu, \"bytes\": %llu}\n",
                   out, qi.format, qi.layout, qi.n_quantized, src->n_tensors, (unsigned long long)bytes);
    }
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&o);
    free(outs);
    free(idx);
    mk_source_close(src);
    return s;
}

int mk_cmd_dequantize(int argc, char **argv)
{
    mk_common c = {0};
    const char *dtype = NULL;
    uint64_t shard = 5000000000ull, chunk = 0;
    bool force = false;
    const mk_opt opts[] = {
        {"dtype", 0, MK_OPT_STR, &dtype, "DTYPE", "output dtype of float tensors: bfloat16, float16 or float32", "the dtype before quantization"},
        {"out-shard-size", 0, MK_OPT_SIZE, &shard, "SIZE", "maximum bytes of tensor data per shard (5e9, 500M, 2G)", "5e9"},
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        {"chunk", 0, MK_OPT_U64, &chunk, "N", "elements per work chunk", "262144"},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "dequantize", "IN OUT [--dtype DTYPE]",
        "Turn a quantized checkpoint back into plain safetensors.",
        "Reads bitsandbytes NF4/FP4 (with or without double quant) and LLM.int8 checkpoints as transformers\n"
        "saves them, and compressed-tensors pack-quantized (int4/int8, with or without zero points) and\n"
        "float-quantized (FP8) ones; each weight is decoded as the library's own dequantizer does it.\n"
        "config.json loses its quantization_config; tokenizer files are copied. A llama.cpp .gguf file\n"
        "(any of the block types F32..Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4, decoded as\n"
        "ggml does) becomes a folder with Hugging Face tensor names, config.json and tokenizer.json.",
        opts, 2, 2, 0x1};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_status s = run(&c, pos[0], pos[1], dtype, shard, force, chunk);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
