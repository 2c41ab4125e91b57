/* cmd_tokenize.c - `mergekit-c tokenize MODEL|tokenizer.json [TEXT...]`: text to token ids
 * (or ids to text with --decode) with a model's tokenizer.json (nn/tokenizer.h). The
 * tokenizer files are read through the model source (folder, .mkz container) or from a
 * .json path; a folder holding only tokenizer files works too. */
#include "cli.h"

#include "../core/mk_io.h"
#include "../nn/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT_ARGS 256

typedef struct tok_opts {
    mk_common c;
    const char *text_file, *decode;
    bool ids_only, no_special, pieces;
} tok_opts;

/* tokenizer.json (required) and tokenizer_config.json (optional) of PATH */
static mk_status read_tokenizer_files(const char *path, char **tj, size_t *tl, char **cj, size_t *cl, char **what)
{
    *tj = *cj = NULL;
    *what = NULL;
    if (mk_is_file(path) && mk_str_ends_with(path, ".json")) {
        *what = mk_strdup(path);
        if (!*what) return MK_ERR_NOMEM;
        MK_TRY(mk_read_file(path, MK_TOK_MAX_JSON, tj, tl));
        /* tokenizer_config.json beside it, when there is one */
        const char *slash = strrchr(path, '/');
        char *dir = slash ? mk_strndup(path, (size_t)(slash - path)) : mk_strdup(".");
        char *cfg = dir ? mk_path_join(dir, "tokenizer_config.json") : NULL;
        free(dir);
        mk_status s = MK_OK;
        if (cfg && mk_is_file(cfg)) s = mk_read_file(cfg, 16u << 20, cj, cl);
        free(cfg);
        return s;
    }
    *what = mk_asprintf("%s: tokenizer.json", path);
    if (!*what) return MK_ERR_NOMEM;
    char *direct = mk_path_join(path, "tokenizer.json");
    if (!direct) return MK_ERR_NOMEM;
    mk_source *src = NULL;
    mk_status s = mk_cli_open_model(path, &src);
    if (s != MK_OK && mk_is_dir(path) && mk_is_file(direct)) {
        /* a folder with tokenizer files and no weights */
        char *cfg = mk_path_join(path, "tokenizer_config.json");
        s = mk_read_file(direct, MK_TOK_MAX_JSON, tj, tl);
        if (s == MK_OK && cfg && mk_is_file(cfg)) s = mk_read_file(cfg, 16u << 20, cj, cl);
        free(cfg);
        free(direct);
        return s;
    }
    free(direct);
    if (s != MK_OK) return s;
    s = src->ops->aux_read(src, "tokenizer.json", MK_TOK_MAX_JSON, tj, tl);
    if (s == MK_OK && !*tj) s = mk_error(MK_ERR_USAGE, "%s: the model has no tokenizer.json", path);
    if (s == MK_OK) s = src->ops->aux_read(src, "tokenizer_config.json", 16u << 20, cj, cl);
    mk_source_close(src);
    return s;
}

static mk_status read_stream(FILE *f, const char *name, char **out, size_t *len)
{
    mk_buf b = {0};
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) mk_buf_put(&b, chunk, k);
    if (ferror(f)) {
        mk_buf_free(&b);
        return mk_error(MK_ERR_IO, "%s: read failed: %s", name, strerror(errno));
    }
    if (b.failed) {
        mk_buf_free(&b);
        return mk_error(MK_ERR_NOMEM, "%s: out of memory", name);
    }
    *out = b.data;
    *len = b.len;
    return MK_OK;
}

/* "1,2,3" or "1 2 3" */
static mk_status parse_ids(const char *s, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            free(*ids);
            *ids = NULL;
            return mk_error(MK_ERR_USAGE, "--decode: '%.40s' is not a list of token ids (e.g. 1,2,3)", p);
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int32_t *q = mk_realloc_array(*ids, cap, sizeof *q);
            if (!q) {
                free(*ids);
                *ids = NULL;
                return MK_ERR_NOMEM;
            }
            *ids = q;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return MK_OK;
}

static mk_status print_piece(void *ctx, const char *piece, size_t len)
{
    (void)ctx;
    mk_buf b = {0};
    char *z = mk_strndup(piece, len);
    if (!z) return MK_ERR_NOMEM;
    mk_buf_json_str(&b, z);
    mk_buf_puts(&b, "\n");
    free(z);
    if (b.failed) return mk_error(MK_ERR_NOMEM, "out of memory");
    fwrite(b.data, 1, b.len, stdout);
    mk_buf_free(&b);
    return MK_OK;
}

/* The tokenizer of PATH (tokenizer.json, and tokenizer_config.json's BOS/EOS when present). */
static mk_status load(const char *path, mk_tokenizer **t)
{
    char *tj = NULL, *cj = NULL, *what = NULL;
    size_t tl = 0, cl = 0;
    *t = NULL;
    mk_status s = read_tokenizer_files(path, &tj, &tl, &cj, &cl, &what);
    if (s == MK_OK) s = mk_tokenizer_load(tj, tl, what, t);
    if (s == MK_OK && cj) {
        char *cw = mk_asprintf("%s: tokenizer_config.json", path);
        s = cw ? mk_tokenizer_load_config(*t, cj, cl, cw) : MK_ERR_NOMEM;
        free(cw);
    }
    if (s == MK_OK) mk_info("%s: %s", what, mk_tokenizer_describe(*t));
    free(tj);
    free(cj);
    free(what);
    return s;
}

/* --decode IDS: the text (JSON with --json). */
static mk_status decode(const tok_opts *o, const mk_tokenizer *t)
{
    int32_t *ids = NULL;
    size_t n = 0, olen = 0;
    char *out = NULL;
    mk_status s = parse_ids(o->decode, &ids, &n);
    if (s == MK_OK) s = mk_tokenizer_decode(t, ids, n, o->no_special, &out, &olen);
    if (s == MK_OK && o->c.json) {
        mk_buf b = {0};
        mk_buf_printf(&b, "{\"tokens\": %zu, \"text\": ", n);
        mk_buf_json_str(&b, out);
        mk_buf_puts(&b, "}\n");
        if (b.failed) s = mk_error(MK_ERR_NOMEM, "out of memory");
        else fputs(b.data, stdout);
        mk_buf_free(&b);
    } else if (s == MK_OK) {
        fwrite(out, 1, olen, stdout);
        fputc('\n', stdout);
    }
    free(out);
    free(ids);
    return s;
}

/* The text: --text FILE ('-': standard input), else the TEXT words joined by spaces. */
static mk_status read_text(const tok_opts *o, char **pos, size_t npos, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    if (o->text_file && strcmp(o->text_file, "-") == 0) return read_stream(stdin, "stdin", text, len);
    if (o->text_file) {
        FILE *f = fopen(o->text_file, "rb");
        if (!f) return mk_error(MK_ERR_IO, "%s: %s", o->text_file, strerror(errno));
        mk_status s = read_stream(f, o->text_file, text, len);
        fclose(f);
        return s;
    }
    mk_buf b = {0};
    for (size_t i = 1; i < npos; i++) {
        if (i > 1) mk_buf_put(&b, " ", 1);
        mk_buf_puts(&b, pos[i]);
    }
    mk_buf_put(&b, "", 1);
    if (b.failed) {
        mk_buf_free(&b);
        return MK_ERR_NOMEM;
    }
    *text = b.data;
    *len = b.len ? b.len - 1 : 0;
    return MK_OK;
}

/* The ids of text: one line, a line per id with its token (-v), or JSON. */
static mk_status encode(const tok_opts *o, const mk_tokenizer *t, const char *text, size_t text_len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    double t0 = mk_now();
    MK_TRY(mk_tokenizer_encode(t, text, text_len, !o->no_special, &ids, &n));
    double secs = mk_now() - t0;
    mk_info("%zu bytes -> %zu tokens in %.3f s (%.0f tokens/s)", text_len, n, secs, secs > 0 ? (double)n / secs : 0.0);
    mk_buf b = {0};
    if (o->c.json) {
        mk_buf_printf(&b, "{\"tokens\": %zu, \"bytes\": %zu, \"seconds\": %.6f, \"ids\": [", n, text_len, secs);
        for (size_t i = 0; i < n; i++) mk_buf_printf(&b, "%s%d", i ? ", " : "", ids[i]);
        mk_buf_puts(&b, "]}\n");
    } else if (o->c.verbose && !o->ids_only) {
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *tok = mk_tokenizer_token(t, ids[i], &len);
            char *z = mk_strndup(tok ? tok : "", tok ? len : 0);
            mk_buf_printf(&b, "%d\t", ids[i]);
            mk_buf_json_str(&b, z ? z : "");
            mk_buf_puts(&b, "\n");
            free(z);
        }
        mk_buf_printf(&b, "%zu tokens\n", n);
    } else {
        for (size_t i = 0; i < n; i++) mk_buf_printf(&b, "%s%d", i ? " " : "", ids[i]);
        mk_buf_puts(&b, "\n");
        if (!o->ids_only) mk_buf_printf(&b, "%zu tokens\n", n);
    }
    mk_status s = b.failed ? mk_error(MK_ERR_NOMEM, "out of memory") : MK_OK;
    if (s == MK_OK) fwrite(b.data, 1, b.len, stdout);
    mk_buf_free(&b);
    free(ids);
    return s;
}

static int run(tok_opts *o, char **pos, size_t npos)
{
    mk_tokenizer *t = NULL;
    char *text = NULL;
    size_t text_len = 0;
    mk_status s = load(pos[0], &t);
    if (s == MK_OK && o->decode) s = decode(o, t);
    else if (s == MK_OK) s = read_text(o, pos, npos, &text, &text_len);
    if (s == MK_OK && !o->decode && o->pieces) s = mk_tokenizer_pretokenize(t, text ? text : "", text_len, print_piece, NULL);
    else if (s == MK_OK && !o->decode) s = encode(o, t, text, text_len);
    free(text);
    mk_tokenizer_free(t);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

int mk_cmd_tokenize(int argc, char **argv)
{
    tok_opts o = {0};
    const mk_opt opts[] = {
        {"text", 0, MK_OPT_STR, &o.text_file, "FILE", "tokenize the bytes of FILE ('-': standard input) instead of TEXT", NULL},
        {"ids", 0, MK_OPT_FLAG, &o.ids_only, NULL, "print only the ids, on one line", NULL},
        {"pieces", 0, MK_OPT_FLAG, &o.pieces, NULL,
         "print the pieces the model sees after normalization and pre-tokenization (one JSON string a line; no "
         "added-token matching)", NULL},
        {"decode", 0, MK_OPT_STR, &o.decode, "IDS", "turn token ids (1,2,3 or \"1 2 3\") back into text", NULL},
        {"no-special", 0, MK_OPT_FLAG, &o.no_special, NULL,
         "encode without the post-processor's special tokens (BOS/EOS); decode without special tokens", NULL},
        MK_COMMON_OPTS(o.c),
        MK_HUB_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {
        "tokenize", "MODEL|tokenizer.json [TEXT...] [options]",
        "Turn text into token ids with a model's tokenizer.json (or ids back into text with --decode).",
        "MODEL is a model folder, a .mkz container or a tokenizer.json file. TEXT words are joined by spaces; "
        "--text FILE reads the bytes of a file. The ids are those Hugging Face tokenizers gives for "
        "encode(text) (add_special_tokens=True unless --no-special); ill-formed UTF-8 is read as Python's "
        "errors='replace' reads it. -v prints each id with its token, and the tokenizer in use on stderr.",
        opts, 1, 1 + MAX_TEXT_ARGS, 0x1};
    char *pos[1 + MAX_TEXT_ARGS];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, false, &rc)) return rc;
    if (o.decode && (o.text_file || npos > 1)) {
        fprintf(stderr, "mergekit-c: error: tokenize: --decode takes no TEXT and no --text\n");
        return 2;
    }
    if (o.text_file && npos > 1) {
        fprintf(stderr, "mergekit-c: error: tokenize: give TEXT or --text FILE, not both\n");
        return 2;
    }
    return run(&o, pos, npos);
}
