/* cmd_imatrix.c - `mergekit-c imatrix MODEL --text FILE -o OUT.gguf`: llama.cpp's importance
 * matrix of a model on a text. The text is cut into non-overlapping windows of --ctx tokens,
 * each starting with BOS (as llama-imatrix does); the forward pass (nn/) hands every linear
 * layer's input rows to a hook, which adds each column's squared activation to that matrix's
 * sums (in double) and the rows to its count. Written in llama-imatrix's GGUF layout
 * (formats/imatrix.h) under the matrices' llama.cpp names, so that `convert --imatrix` and
 * llama-quantize --imatrix read it. */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/gguf.h"
#include "../formats/imatrix.h"
#include "../model/config.h"
#include "../model/gguf_names.h"
#include "../nn/nn.h"
#include "../nn/tokenizer.h"
#include "../quant/qsource.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct acc {
    size_t n_tensors;
    double **sum2;   /* [n_tensors]: per source tensor, its input columns' sums (NULL: not a linear) */
    uint64_t *cols;
    double *count;
    bool failed;     /* an allocation failed in the hook */
} acc;

static void on_linear(void *ctx, size_t l, long tensor, const float *x, size_t N, size_t in)
{
    (void)l;
    acc *a = ctx;
    if (tensor < 0 || (size_t)tensor >= a->n_tensors || a->failed) return;
    if (!a->sum2[tensor]) {
        if (!(a->sum2[tensor] = mk_calloc(in, sizeof(double)))) {
            a->failed = true;
            return;
        }
        a->cols[tensor] = in;
    }
    if (a->cols[tensor] != in) {
        a->failed = true;
        return;
    }
    double *s = a->sum2[tensor];
    for (size_t t = 0; t < N; t++)
        for (size_t c = 0; c < in; c++) s[c] += (double)x[t * in + c] * (double)x[t * in + c];
    a->count[tensor] += (double)N;
}

/* the summary: on stderr, and with --json on stdout */
static void report(const mk_common *c, const char *out, size_t matrices, size_t windows, size_t T)
{
    if (!c->quiet) fprintf(stderr, "mergekit-c: wrote %s: %zu matrices, %zu windows of %zu tokens\n", out, matrices, windows, T);
    if (!c->json) return;
    mk_buf j = {0};
    mk_buf_puts(&j, "{\"out\": ");
    mk_buf_json_str(&j, out);
    mk_buf_printf(&j, ", \"matrices\": %zu, \"chunk_count\": %zu, \"chunk_size\": %zu, \"tokens\": %zu}\n", matrices, windows, T, windows * T);
    if (!j.failed) fputs(j.data, stdout);
    mk_buf_free(&j);
}

static mk_status run(const mk_common *c, const char *model, const char *text, const char *out, long ctx, long chunks, bool force)
{
    mk_source *raw = NULL, *src = NULL;
    mk_model_config cfg;
    bool has_cfg = false;
    mk_nn_model *nn = NULL;
    mk_tokenizer *tok = NULL;
    int32_t *ids = NULL, bos = -1, *win = NULL;
    float *hidden = NULL;
    acc a = {0};
    mk_imatrix_stat *st = NULL;
    size_t n = 0, nst = 0;
    MK_TRY(mk_cli_check_output(out, &model, 1));
    if (mk_path_exists(out) && !force) return mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", out);
    mk_status s = mk_cli_open_model(model, &raw);
    mk_qinfo qi;
    if (s == MK_OK && (s = mk_qsource_open(raw, &src, &qi)) != MK_OK) mk_source_close(raw);
    if (s == MK_OK) has_cfg = (s = mk_model_config_of_source(src, &cfg)) == MK_OK;
    const mk_gguf_arch *arch = NULL;
    if (s == MK_OK && !(arch = mk_gguf_arch_for_model_type(cfg.arch.model_type)))
        s = mk_error(MK_ERR_UNSUPPORTED, "%s: model_type '%s' has no llama.cpp tensor names here (llama, mistral, qwen2 and qwen3 have)", model,
                     cfg.arch.model_type ? cfg.arch.model_type : "(none)");
    if (s == MK_OK) s = mk_nn_open(src, &cfg, &nn);
    if (s == MK_OK) s = mk_cli_open_tokenizer(src, model, &tok);
    if (s == MK_OK) s = mk_cli_tokenize_file(tok, text, &ids, &n, &bos);
    size_t T = (size_t)ctx, nw = s == MK_OK ? n / T : 0;
    if (chunks > 0 && (size_t)chunks < nw) nw = (size_t)chunks;
    if (s == MK_OK && nw == 0) s = mk_error(MK_ERR_USAGE, "%s: %zu tokens, fewer than one window of %ld (--ctx)", text, n, ctx);
    if (s == MK_OK) {
        a.n_tensors = src->n_tensors;
        a.sum2 = mk_calloc(a.n_tensors, sizeof *a.sum2);
        a.cols = mk_calloc(a.n_tensors, sizeof *a.cols);
        a.count = mk_calloc(a.n_tensors, sizeof *a.count);
        win = mk_malloc(T * sizeof *win);
        hidden = mk_malloc(T * mk_nn_hidden(nn) * sizeof *hidden);
        if (!a.sum2 || !a.cols || !a.count || !win || !hidden) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) mk_nn_set_linear_hook(nn, on_linear, &a);
    for (size_t w = 0; w < nw && s == MK_OK; w++) {
        memcpy(win, ids + w * T, T * sizeof *win);
        if (bos >= 0) win[0] = bos;
        s = mk_nn_forward(nn, win, 1, T, hidden);
        if (s == MK_OK && a.failed) s = mk_error(MK_ERR_NOMEM, "imatrix: out of memory gathering statistics");
    }
    if (s == MK_OK && !(st = mk_calloc(a.n_tensors ? a.n_tensors : 1, sizeof *st))) s = MK_ERR_NOMEM;
    char(*names)[MK_GGUF_MAX_NAME] = s == MK_OK ? mk_calloc(a.n_tensors ? a.n_tensors : 1, sizeof *names) : NULL;
    if (s == MK_OK && !names) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < a.n_tensors && s == MK_OK; i++) {
        if (!a.sum2[i]) continue;
        char qk = 0;
        if (!mk_gguf_name(arch, src->tensors[i].name, names[i], sizeof names[i], &qk))
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s has no llama.cpp name", model, src->tensors[i].name);
        else st[nst++] = (mk_imatrix_stat){names[i], a.cols[i], a.sum2[i], a.count[i]};
    }
    const char *ds[1] = {text};
    if (s == MK_OK) s = mk_imatrix_write(out, st, nst, ds, 1, (uint32_t)nw, (uint32_t)T, force);
    if (s == MK_OK) report(c, out, nst, nw, T);
    for (size_t i = 0; i < a.n_tensors && a.sum2; i++) free(a.sum2[i]);
    free(a.sum2);
    free(a.cols);
    free(a.count);
    free(st);
    free(names);
    free(win);
    free(hidden);
    free(ids);
    mk_tokenizer_free(tok);
    mk_nn_close(nn);
    if (has_cfg) mk_model_config_free(&cfg);
    mk_source_close(src);
    return s;
}

int mk_cmd_imatrix(int argc, char **argv)
{
    mk_common c = {0};
    const char *text = NULL, *out = NULL;
    long ctx = 512, chunks = 0;
    bool force = false;
    const mk_opt opts[] = {
        {"text", 't', MK_OPT_STR, &text, "FILE", "the calibration text (UTF-8)", NULL},
        {"output", 'o', MK_OPT_STR, &out, "OUT.gguf", "the importance matrix to write (llama-imatrix's GGUF layout)", NULL},
        {"ctx", 'c', MK_OPT_INT, &ctx, "N", "window length in tokens (each window starts with BOS)", "512"},
        {"chunks", 0, MK_OPT_INT, &chunks, "N", "use only the first N windows", "all"},
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new file is complete)", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "imatrix", "MODEL --text FILE -o OUT.gguf [options]",
        "Compute llama.cpp's importance matrix of a model on a text (for convert --imatrix, llama-quantize --imatrix).",
        "For every linear weight of the transformer layers: per input column, the sum over the text's\n"
        "tokens of the squared input activation, and the number of tokens, gathered from our forward pass\n"
        "on non-overlapping windows of --ctx tokens, BOS first (as llama-imatrix does). Written as\n"
        "llama-imatrix's GGUF file (NAME.in_sum2, NAME.counts, general.type imatrix, imatrix.datasets,\n"
        "chunk_count, chunk_size) under llama.cpp's tensor names (Llama, Mistral, Qwen2, Qwen3 models).\n"
        "The output matrix and embeddings get none, as with llama-imatrix's defaults.",
        opts, 1, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    mk_status s = MK_OK;
    if (!text || !out) s = mk_error(MK_ERR_USAGE, "imatrix: --text FILE and -o OUT.gguf are required");
    else if (ctx < 2 || ctx > 1 << 20) s = mk_error(MK_ERR_USAGE, "--ctx %ld: must be 2 to %d", ctx, 1 << 20);
    if (s == MK_OK) s = run(&c, pos[0], text, out, ctx, chunks, force);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
