/* cmd_eval.c - `mergekit-c eval MODEL --text FILE [--ref MODEL]...`: perplexity of a model on
 * a text and its KL divergence to each reference run side by side (eval/eval.h; the shared
 * run and report are mk_cli_eval in common.c, which merge and quantize --eval-text use too). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int mk_cmd_eval(int argc, char **argv)
{
    mk_common c = {0};
    mk_cli_eval_opts o = {NULL, 512, 0, 0};
    const char *refs = NULL;
    const mk_opt opts[] = {
        {"text", 't', MK_OPT_STR, &o.text, "FILE", "the text to score (UTF-8; any file of words, e.g. /usr/share/common-licenses/GPL-3)", NULL},
        {"ctx", 'c', MK_OPT_INT, &o.ctx, "N", "window length in tokens", "512"},
        {"chunks", 0, MK_OPT_INT, &o.chunks, "N", "score only the first N windows", "all"},
        {"batch", 0, MK_OPT_INT, &o.batch, "N", "windows per forward pass (each layer's weights are read once per pass)",
         "2048 tokens' worth"},
        {"ref", 'r', MK_OPT_LIST, &refs, "MODEL", "a reference model (repeatable): KL divergence, same top token, delta p, "
                                                  "PPL ratio against it", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "eval", "MODEL --text FILE [--ref MODEL]... [options]",
        "Perplexity of a model on a text, and its KL divergence to reference models (the parents of a merge,\n"
        "or the unquantized model), computed side by side on the same windows.",
        "As llama.cpp's perplexity tool: non-overlapping windows of --ctx tokens, BOS first, the second\n"
        "half of each window scored. Reports PPL with its uncertainty, mean NLL, bits per byte and\n"
        "tokens/s; per reference the mean KL divergence +- its standard error, median, 90/95/99 %\n"
        "and max, the share of positions with the same top token, delta p of the correct token (mean,\n"
        "RMS) and the PPL ratio; with two references also the KL divergence between them, as the\n"
        "scale. MODEL and references are folders, .safetensors, .mkz or .gguf files, plain or quantized\n"
        "(NF4, FP4, LLM.int8, int4/int8 pack-quantized, FP8, ggml block types), read one layer at a time;\n"
        "a .gguf file needs no tokenizer.json (it is made from the file's metadata).",
        opts, 1, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    if (!o.text) return mk_cli_fail(mk_error(MK_ERR_USAGE, "eval: --text FILE is required"));
    /* --ref values arrive joined by commas */
    char *list = refs ? mk_strdup(refs) : NULL;
    const char *ref[MK_CLI_EVAL_MAX_REFS];
    size_t n_refs = 0;
    mk_status s = refs && !list ? MK_ERR_NOMEM : MK_OK;
    for (char *p = list, *save = NULL, *tok; list && s == MK_OK && (tok = strtok_r(p, ",", &save)); p = NULL) {
        if (n_refs == MK_CLI_EVAL_MAX_REFS) s = mk_error(MK_ERR_USAGE, "--ref: at most %d reference models", MK_CLI_EVAL_MAX_REFS);
        else ref[n_refs++] = tok;
    }
    if (s == MK_OK) s = mk_cli_eval(pos[0], ref, n_refs, &o, &c, true);
    free(list);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
