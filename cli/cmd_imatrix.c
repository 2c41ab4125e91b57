/* cmd_imatrix.c - `mergekit-c imatrix MODEL --text FILE -o OUT`: llama.cpp's importance
 * matrix of a model on a text. The text is cut into non-overlapping windows of --ctx tokens,
 * each starting with BOS (as llama-imatrix does); the forward pass (nn/) hands every linear
 * layer's input rows to a hook, which adds each column's squared activation to that matrix's
 * sums (in double) and the rows to its count. Mixture-of-experts layers: the router and the
 * shared expert see every token, each expert only the tokens routed to it, and an expert
 * tensor's statistics are one matrix per expert (llama.cpp's 3-D ffn_*_exps with per-expert
 * counts). --process-output adds lm_head's input (the final-norm hidden states), as
 * llama-imatrix --process-output does for output.weight. Written under the matrices'
 * llama.cpp names in llama-imatrix's GGUF layout or its legacy .dat (formats/imatrix.h), so
 * that `convert --imatrix`, `quantize --imatrix` and llama-quantize --imatrix read it.
 * `imatrix --in-file IN -o OUT` converts between the two layouts, as llama-imatrix --in-file. */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/gguf.h"
#include "../formats/imatrix.h"
#include "../model/config.h"
#include "../model/gguf_names.h"
#include "../nn/nn.h"
#include "../nn/tokenizer.h"
#include "../quant/qsource.h"
#include "gguf_moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per source tensor, its statistics: slots matrices (the experts of a fused 3-D expert
 * tensor, else 1) of cols sums, and a count per slot. */
typedef struct acc {
    size_t n_tensors;
    double **sum2;   /* [n_tensors] (NULL: no input seen) */
    double **count;
    uint64_t *cols;
    size_t *slots;
    bool failed;     /* an allocation failed, or a width changed, in the hook */
} acc;

static void add_rows(double *s, const float *x, size_t N, size_t in)
{
    for (size_t t = 0; t < N; t++)
        for (size_t c = 0; c < in; c++) s[c] += (double)x[t * in + c] * (double)x[t * in + c];
}

static void on_linear(void *ctx, size_t l, long tensor, long expert, const float *x, size_t N, size_t in)
{
    (void)l;
    acc *a = ctx;
    if (tensor < 0 || (size_t)tensor >= a->n_tensors || a->failed) return;
    size_t k = a->slots[tensor] > 1 ? (size_t)expert : 0;
    if (k >= a->slots[tensor]) {
        a->failed = true;
        return;
    }
    if (!a->sum2[tensor]) {
        a->sum2[tensor] = mk_calloc(in * a->slots[tensor], sizeof(double));
        a->count[tensor] = mk_calloc(a->slots[tensor], sizeof(double));
        if (!a->sum2[tensor] || !a->count[tensor]) {
            a->failed = true;
            return;
        }
        a->cols[tensor] = in;
    }
    if (a->cols[tensor] != in) {
        a->failed = true;
        return;
    }
    add_rows(a->sum2[tensor] + k * in, x, N, in);
    a->count[tensor][k] += (double)N;
}

static void acc_free(acc *a)
{
    for (size_t i = 0; i < a->n_tensors && a->sum2; i++) {
        free(a->sum2[i]);
        free(a->count[i]);
    }
    free(a->sum2);
    free(a->count);
    free(a->cols);
    free(a->slots);
}

/* The output's matrices, by llama.cpp name (expert tensors gathered from per-expert ones). */
typedef struct outm {
    char name[MK_GGUF_MAX_NAME];
    uint64_t cols, nmat;
    double *sum2, *count;
} outm;

typedef struct outs {
    outm *m;
    size_t n, cap;
} outs;

/* the matrix `name` (made with cols x nmat zeros when new), or NULL when out of memory or
 * its width disagrees */
static outm *out_get(outs *o, const char *name, uint64_t cols, uint64_t nmat)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->m[i].name, name)) return o->m[i].cols == cols && o->m[i].nmat == nmat ? &o->m[i] : NULL;
    size_t len = strlen(name);
    if (len >= sizeof o->m->name) return NULL;
    if (o->n == o->cap) {
        size_t nc = o->cap ? 2 * o->cap : 64;
        outm *p = realloc(o->m, nc * sizeof *p);
        if (!p) return NULL;
        o->m = p;
        o->cap = nc;
    }
    outm *m = &o->m[o->n];
    memset(m, 0, sizeof *m);
    memcpy(m->name, name, len + 1);
    m->cols = cols;
    m->nmat = nmat;
    m->sum2 = mk_calloc(cols * nmat, sizeof(double));
    m->count = mk_calloc(nmat, sizeof(double));
    if (!m->sum2 || !m->count) {
        free(m->sum2);
        free(m->count);
        return NULL;
    }
    o->n++;
    return m;
}

static void outs_free(outs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->m[i].sum2);
        free(o->m[i].count);
    }
    free(o->m);
}

/* Source tensor i's statistics into the output matrices under its llama.cpp name(s). */
static mk_status gather(const mk_source *src, const mk_model_config *cfg, const mk_gguf_arch *arch, const acc *a, size_t i, outs *o)
{
    const char *hf = src->tensors[i].name;
    mk_cli_gguf_part pt[2];
    size_t nn;
    char qk;
    MK_TRY(mk_cli_gguf_parts(cfg, arch, &src->tensors[i], src->path, pt, &nn, &qk));
    if (!nn) return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s has no llama.cpp name", src->path, hf);
    uint64_t cols = a->cols[i], nmat = pt[0].nmat, slot = pt[0].expert >= 0 ? (uint64_t)pt[0].expert : 0;
    for (size_t k = 0; k < nn; k++) {
        outm *m = out_get(o, pt[k].name, cols, nmat);
        if (!m) return mk_error(MK_ERR_NOMEM, "%s: %s: out of memory, or experts of different widths", src->path, pt[k].name);
        if (a->slots[i] > 1) { /* fused: every expert */
            for (uint64_t c = 0; c < cols * nmat; c++) m->sum2[c] += a->sum2[i][c];
            for (uint64_t j = 0; j < nmat; j++) m->count[j] += a->count[i][j];
        } else {
            for (uint64_t c = 0; c < cols; c++) m->sum2[slot * cols + c] += a->sum2[i][c];
            m->count[slot] += a->count[i][0];
        }
    }
    return MK_OK;
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

/* what the run gathers, and how it writes it */
typedef struct opts {
    const char *model, *text, *out, *in_file;
    long ctx, chunks;
    bool force, process_output, legacy;
} opts;

/* The windows' statistics, per source tensor, into a (the forward passes with the hook). */
static mk_status collect(const opts *op, mk_source *src, const mk_model_config *cfg, mk_nn_model *nn, const int32_t *ids, size_t nw,
                         int32_t bos, acc *a)
{
    size_t T = (size_t)op->ctx;
    long head = -1;
    a->n_tensors = src->n_tensors;
    a->sum2 = mk_calloc(a->n_tensors, sizeof *a->sum2);
    a->count = mk_calloc(a->n_tensors, sizeof *a->count);
    a->cols = mk_calloc(a->n_tensors, sizeof *a->cols);
    a->slots = mk_calloc(a->n_tensors, sizeof *a->slots);
    int32_t *win = mk_malloc(T * sizeof *win);
    float *hidden = mk_malloc(T * mk_nn_hidden(nn) * sizeof *hidden);
    mk_status s = a->sum2 && a->count && a->cols && a->slots && win && hidden ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < a->n_tensors && s == MK_OK; i++) {
        mk_tensor_role r = mk_arch_role(&cfg->arch, src->tensors[i].name);
        bool fused = r.role == MK_ROLE_EXPERTS_GATE_UP || r.role == MK_ROLE_EXPERTS_DOWN;
        a->slots[i] = fused && cfg->n_experts > 0 ? (size_t)cfg->n_experts : 1;
        if (r.role == MK_ROLE_LM_HEAD && !r.bias && op->process_output) head = (long)i; /* a tied head is token_embd: none, as llama.cpp */
    }
    if (s == MK_OK) mk_nn_set_linear_hook(nn, on_linear, a);
    for (size_t w = 0; w < nw && s == MK_OK; w++) {
        memcpy(win, ids + w * T, T * sizeof *win);
        if (bos >= 0) win[0] = bos;
        s = mk_nn_forward(nn, win, 1, T, hidden);
        if (s == MK_OK && head >= 0) on_linear(a, 0, head, -1, hidden, T, mk_nn_hidden(nn));
        if (s == MK_OK && a->failed) s = mk_error(MK_ERR_NOMEM, "imatrix: out of memory gathering statistics");
    }
    if (s == MK_OK && op->process_output && head < 0)
        mk_warn("%s: lm_head is tied to the embeddings: no output.weight statistics (llama-imatrix collects none for token_embd)", op->model);
    free(win);
    free(hidden);
    return s;
}

/* the output matrices as mk_imatrix_stat (borrowing) and the write */
static mk_status write_outs(const opts *op, const outs *o, const mk_imatrix_meta *meta)
{
    mk_imatrix_stat *st = mk_calloc(o->n ? o->n : 1, sizeof *st);
    if (!st) return MK_ERR_NOMEM;
    for (size_t i = 0; i < o->n; i++) st[i] = (mk_imatrix_stat){o->m[i].name, o->m[i].cols, o->m[i].nmat, o->m[i].sum2, o->m[i].count};
    mk_status s = mk_imatrix_write(op->out, st, o->n, meta, op->legacy, op->force);
    free(st);
    return s;
}

static mk_status run(const mk_common *c, const opts *op)
{
    mk_source *raw = NULL, *src = NULL;
    mk_model_config cfg;
    bool has_cfg = false;
    mk_nn_model *nn = NULL;
    mk_tokenizer *tok = NULL;
    int32_t *ids = NULL, bos = -1;
    acc a = {0};
    outs o = {0};
    size_t n = 0;
    const char *model = op->model;
    MK_TRY(mk_cli_check_output(op->out, &model, 1));
    if (mk_path_exists(op->out) && !op->force) return mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", op->out);
    mk_status s = mk_cli_open_model(model, &raw);
    mk_qinfo qi;
    if (s == MK_OK && (s = mk_qsource_open(raw, &src, &qi)) != MK_OK) mk_source_close(raw);
    if (s == MK_OK) has_cfg = (s = mk_model_config_of_source(src, &cfg)) == MK_OK;
    const mk_gguf_arch *arch = NULL;
    if (s == MK_OK && !(arch = mk_cli_gguf_names_for(cfg.arch.model_type)))
        s = mk_error(MK_ERR_UNSUPPORTED,
                     "%s: model_type '%s' has no llama.cpp tensor names here (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe and qwen3_moe have)",
                     model, cfg.arch.model_type ? cfg.arch.model_type : "(none)");
    if (s == MK_OK) s = mk_nn_open(src, &cfg, &nn);
    if (s == MK_OK) s = mk_cli_open_tokenizer(src, model, &tok);
    if (s == MK_OK) s = mk_cli_tokenize_file(tok, op->text, &ids, &n, &bos);
    size_t T = (size_t)op->ctx, nw = s == MK_OK ? n / T : 0;
    if (op->chunks > 0 && (size_t)op->chunks < nw) nw = (size_t)op->chunks;
    if (s == MK_OK && nw == 0) s = mk_error(MK_ERR_USAGE, "%s: %zu tokens, fewer than one window of %ld (--ctx)", op->text, n, op->ctx);
    if (s == MK_OK) s = collect(op, src, &cfg, nn, ids, nw, bos, &a);
    for (size_t i = 0; i < a.n_tensors && s == MK_OK; i++)
        if (a.sum2[i]) s = gather(src, &cfg, arch, &a, i, &o);
    const char *ds[1] = {op->text};
    mk_imatrix_meta meta = {ds, 1, (uint32_t)nw, (uint32_t)T};
    if (s == MK_OK) s = write_outs(op, &o, &meta);
    if (s == MK_OK) report(c, op->out, o.n, nw, T);
    outs_free(&o);
    acc_free(&a);
    free(ids);
    mk_tokenizer_free(tok);
    mk_nn_close(nn);
    if (has_cfg) mk_model_config_free(&cfg);
    mk_source_close(src);
    return s;
}

/* --in-file IN -o OUT: IN's statistics in OUT's layout, as llama-imatrix --in-file converts
 * them: a legacy file's sums and counts times the chunk size (--ctx), a GGUF's as stored with
 * its own chunk size (--ctx when it has none); the chunk count the largest count over the
 * chunk size. */
static mk_status convert_file(const mk_common *c, const opts *op)
{
    mk_imatrix m;
    mk_imatrix_stat *st = NULL;
    MK_TRY(mk_cli_check_output(op->out, &op->in_file, 1));
    if (mk_path_exists(op->out) && !op->force) return mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", op->out);
    MK_TRY(mk_imatrix_read(op->in_file, &m));
    uint32_t cs = m.legacy || !m.chunk_size ? (uint32_t)op->ctx : m.chunk_size;
    mk_status s = mk_imatrix_stats(&m, cs, &st);
    double mx = 0;
    for (size_t i = 0; s == MK_OK && i < m.n; i++)
        for (uint64_t j = 0; j < st[i].nmat; j++) mx = st[i].count[j] > mx ? st[i].count[j] : mx;
    uint32_t chunks = mx / cs < UINT32_MAX ? (uint32_t)(mx / cs) : UINT32_MAX;
    mk_imatrix_meta meta = {(const char *const *)m.datasets, m.n_datasets, chunks, cs};
    if (s == MK_OK) s = mk_imatrix_write(op->out, st, m.n, &meta, op->legacy, op->force);
    if (s == MK_OK) report(c, op->out, m.n, chunks, cs);
    mk_imatrix_stats_free(st, st ? m.n : 0);
    mk_imatrix_free(&m);
    return s;
}

static bool ends_with(const char *s, const char *sfx)
{
    size_t n = strlen(s), k = strlen(sfx);
    return n >= k && !strcmp(s + n - k, sfx);
}

int mk_cmd_imatrix(int argc, char **argv)
{
    mk_common c = {0};
    opts op = {.ctx = 512};
    const char *format = NULL;
    const mk_opt opts_[] = {
        {"text", 't', MK_OPT_STR, &op.text, "FILE", "the calibration text (UTF-8)", NULL},
        {"output", 'o', MK_OPT_STR, &op.out, "OUT", "the importance matrix to write (.gguf, or llama-imatrix's legacy .dat)", NULL},
        {"output-format", 0, MK_OPT_STR, &format, "F", "gguf or dat (llama-imatrix's legacy binary layout)", "dat when OUT ends in .dat, else gguf"},
        {"in-file", 0, MK_OPT_STR, &op.in_file, "FILE", "convert this imatrix file (GGUF or .dat) to OUT's layout instead of running a model", NULL},
        {"ctx", 'c', MK_OPT_INT, &op.ctx, "N", "window length in tokens (each window starts with BOS); --in-file: a .dat file's chunk size", "512"},
        {"chunks", 0, MK_OPT_INT, &op.chunks, "N", "use only the first N windows", "all"},
        {"process-output", 0, MK_OPT_FLAG, &op.process_output, NULL, "also gather lm_head's input (output.weight; none when tied to the embeddings)", NULL},
        {"force", 'f', MK_OPT_FLAG, &op.force, NULL, "replace OUT if it exists (only once the new file is complete)", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "imatrix", "MODEL --text FILE -o OUT [options] | --in-file IN -o OUT",
        "Compute llama.cpp's importance matrix of a model on a text (for convert --imatrix, llama-quantize --imatrix).",
        "For every linear weight of the transformer layers: per input column, the sum over the text's\n"
        "tokens of the squared input activation, and the number of tokens, gathered from our forward pass\n"
        "on non-overlapping windows of --ctx tokens, BOS first (as llama-imatrix does). Mixture-of-experts\n"
        "layers (Mixtral, Qwen2-MoE, Qwen3-MoE): the router and shared expert on every token, each expert on\n"
        "the tokens routed to it, stored as llama.cpp's ffn_*_exps with one sum row and count per expert.\n"
        "Written as llama-imatrix's GGUF file (NAME.in_sum2, NAME.counts, general.type imatrix,\n"
        "imatrix.datasets, chunk_count, chunk_size) under llama.cpp's tensor names (Llama, Mistral, Qwen2,\n"
        "Qwen3 and those MoE models), or with OUT.dat / --output-format dat as its legacy binary file\n"
        "((sum / count) x chunks per entry; no per-expert counts; entries that saw no token left out).\n"
        "The output matrix gets statistics only with --process-output, embeddings never, as with\n"
        "llama-imatrix. --in-file IN converts an imatrix between the two layouts (a .dat's sums and counts\n"
        "times --ctx, as llama-imatrix --in-file).",
        opts_, 0, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    mk_status s = MK_OK;
    op.model = npos ? pos[0] : NULL;
    if (!op.out) s = mk_error(MK_ERR_USAGE, "imatrix: -o OUT is required");
    else if (op.in_file && (op.model || op.text)) s = mk_error(MK_ERR_USAGE, "imatrix: --in-file converts a file: no MODEL or --text with it");
    else if (!op.in_file && (!op.model || !op.text)) s = mk_error(MK_ERR_USAGE, "imatrix: MODEL, --text FILE and -o OUT are required (or --in-file IN -o OUT)");
    else if (op.ctx < 2 || op.ctx > 1 << 20) s = mk_error(MK_ERR_USAGE, "--ctx %ld: must be 2 to %d", op.ctx, 1 << 20);
    else if (format && strcmp(format, "gguf") && strcmp(format, "dat")) s = mk_error(MK_ERR_USAGE, "--output-format %s: gguf or dat", format);
    op.legacy = format ? !strcmp(format, "dat") : op.out && ends_with(op.out, ".dat");
    if (s == MK_OK) s = op.in_file ? convert_file(&c, &op) : run(&c, &op);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
