/* cli.h - shared pieces of the command-line front end: common options, error reporting
 * (the only place that prints errors and chooses exit codes), progress display, and the
 * command entry points.
 */
#ifndef MK_CLI_H
#define MK_CLI_H

#include "../core/mk_core.h"
#include "../core/mk_tensor.h"
#include "args.h"

#include <stdio.h>

typedef struct mk_common {
    int verbose;
    bool quiet;
    long threads;
    bool json;
} mk_common;

#define MK_COMMON_OPTS(c)                                                                                     \
    {"quiet", 'q', MK_OPT_FLAG, &(c).quiet, NULL, "errors only: no progress, no warnings", NULL},            \
    {"verbose", 'v', MK_OPT_COUNT, &(c).verbose, NULL, "more detail; -vv for debug output", NULL},           \
    {"threads", 'j', MK_OPT_INT, &(c).threads, "N", "worker threads", "all cores"},                           \
    {"json", 0, MK_OPT_FLAG, &(c).json, NULL, "print a machine-readable summary on stdout", NULL}

/* Apply -q/-v/--threads. */
void mk_cli_common(const mk_common *c);
/* Start a command: parse argv against spec, apply the common options, and for commands that
 * write (writes = true) catch SIGINT/SIGTERM so partial outputs are cleaned up. Returns false
 * when the command must stop now with *exit_code (0 after --help, 2 after a usage error). */
bool mk_cli_begin(const mk_cmd_spec *spec, int argc, char **argv, char **pos, size_t *npos, const mk_common *c,
                  bool writes, int *exit_code);
/* Print "mergekit-c: error: <detail>" and return the exit code for s. */
int mk_cli_fail(mk_status s);

/* Progress on stderr: a bar on a terminal, one line per item at -v otherwise. The callback
 * takes items done/total and bytes done/total; bytes_total = 0 when only items are counted
 * (then the bar shows items and items/s). */
typedef struct mk_progress {
    const char *what;   /* "merge", "quantize" */
    bool tty, enabled, per_item;
    double t0, last;
} mk_progress;
void mk_progress_init(mk_progress *p, const char *what, const mk_common *c);
void mk_progress_cb(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
void mk_progress_end(mk_progress *p);

/* OUT (and OUT.tmp) must not be an input file, lie inside an input folder, or contain an
 * input (--force would delete it). NULL entries are skipped. */
mk_status mk_cli_check_output(const char *out, const char *const *inputs, size_t n);

/* Append the files of an output as JSON objects {"name", "size", "xxh128"}, comma-separated
 * (a comma first unless *first), one per line with `indent`. */
void mk_cli_json_files(mk_buf *b, const mk_out_file *f, size_t n, bool *first, const char *indent);

/* Open every input path named on a command line or in a recipe (any format). */
mk_status mk_cli_open_model(const char *path, mk_source **out);

struct mk_qplan;
/* The quantization report: per tensor and total bits per weight, relative RMSE, SQNR, max
 * abs error and sizes on stderr (unless -q); with json, the same on stdout. */
void mk_cli_quant_report(const struct mk_qplan *p, mk_consumer *cons, const mk_common *c, double secs, bool json);

/* Perplexity and KL divergence (eval, merge --eval-text, quantize --eval-text). */
#define MK_CLI_EVAL_MAX_REFS 8
typedef struct mk_cli_eval_opts {
    const char *text;      /* the file to score */
    long ctx, chunks, batch;
} mk_cli_eval_opts;
/* Score MODEL on o->text, with KL divergence to each of refs[n_refs] (same vocabulary), and
 * print the report: on stdout (JSON with c->json) when `own` (the eval command), else on
 * stderr after another command's output. */
mk_status mk_cli_eval(const char *model, const char *const *refs, size_t n_refs, const mk_cli_eval_opts *o,
                      const mk_common *c, bool own);

/* The command table (main.c): help, dispatch, man pages, completion and the test loops
 * read it. */
typedef struct mk_cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *const *subs; /* subcommand names (lora), NULL-terminated; or NULL */
} mk_cli_command;
extern const mk_cli_command mk_cli_commands[];
extern const size_t mk_cli_n_commands;

/* Programs installed as links to mergekit-c, and the command each runs (argv[0] selects). */
typedef struct mk_cli_alias {
    const char *prog, *command;
} mk_cli_alias;
extern const mk_cli_alias mk_cli_aliases[]; /* terminated by {NULL} */

/* `mergekit-c help ...` (doc.c): the top help, a command's help, the machine-readable
 * command list (--commands), man pages (--man-pages, --man PAGE) and shell completion
 * (--completion bash|zsh), all generated from the tables. */
int mk_cli_help(int argc, char **argv);
void mk_cli_top_help(FILE *f);

int mk_cmd_merge(int argc, char **argv);
int mk_cmd_eval(int argc, char **argv);
int mk_cmd_synth(int argc, char **argv);
int mk_cmd_inspect(int argc, char **argv);
int mk_cmd_compare(int argc, char **argv);
int mk_cmd_quantize(int argc, char **argv);
int mk_cmd_dequantize(int argc, char **argv);
int mk_cmd_methods(int argc, char **argv);
int mk_cmd_lora(int argc, char **argv);
int mk_cmd_estimate(int argc, char **argv);
int mk_cmd_pack(int argc, char **argv);
int mk_cmd_unpack(int argc, char **argv);
int mk_cmd_verify(int argc, char **argv);
int mk_cmd_tokenize(int argc, char **argv);

/* A base model with a PEFT adapter merged in on the fly (recipes' `base+adapter`). */
mk_status mk_cli_open_lora(const char *base_path, const char *adapter_path, mk_source **out);

#endif
