/* args.h - declarative option tables: one table per command drives both parsing and the
 * generated --help text.
 */
#ifndef MK_ARGS_H
#define MK_ARGS_H

#include "../core/mk_core.h"

#include <stdio.h>

typedef enum mk_opt_kind {
    MK_OPT_FLAG,   /* bool, set true */
    MK_OPT_COUNT,  /* int, incremented (-v -v) */
    MK_OPT_INT,    /* long */
    MK_OPT_U64,    /* uint64_t */
    MK_OPT_DOUBLE, /* double */
    MK_OPT_SIZE,   /* uint64_t, with K/M/G suffixes */
    MK_OPT_STR,    /* const char * */
    MK_OPT_LIST,   /* const char *, repeatable: values joined with ',' */
    MK_OPT_OPTSTR, /* const char *: "--x" sets "" , "--x=V" sets V (optional value) */
    MK_OPT_BOOL,   /* int: "--x" sets 1, "--no-x" sets -1; 0 when neither was given */
    MK_OPT_SECTION, /* not an option: the options after it are listed under `help` as a heading */
} mk_opt_kind;

typedef struct mk_opt {
    const char *name;    /* long name without dashes, e.g. "out-shard-size" */
    char short_name;     /* 'v', or 0 */
    mk_opt_kind kind;
    void *dst;
    const char *metavar; /* e.g. "SIZE" */
    const char *help;
    const char *def;     /* default shown in help, or NULL */
} mk_opt;

typedef struct mk_cmd_spec {
    const char *name;      /* "merge"; a program name ("mergekit-yaml") when it starts with "mergekit-" */
    const char *usage;     /* "RECIPE OUT [options]" */
    const char *summary;   /* one line */
    const char *details;   /* paragraphs after the usage, or NULL */
    const mk_opt *opts;    /* terminated by {0} */
    size_t min_pos, max_pos;
    unsigned model_pos;    /* bit i set: pos[i] names a model, and mk_cli_begin resolves a
                              Hugging Face id there to its cached folder */
} mk_cmd_spec;

/* Parse argv (argv[0] is the command name). Positionals go to pos[0..*npos). Returns
 * 0 on success, 1 when --help was printed (exit 0), 2 after printing a usage error. */
int mk_args_parse(const mk_cmd_spec *spec, int argc, char **argv, char **pos, size_t *npos);
void mk_args_help(const mk_cmd_spec *spec, FILE *f);
/* How the command is typed: "mergekit-c merge", or "mergekit-yaml" for a program name. */
const char *mk_args_prog(const mk_cmd_spec *spec, char buf[96]);
/* The left column of an option's help line: "-v, --verbose", "--out-shard-size SIZE",
 * "--[no-]cuda", "--compress[=LEVEL]". */
const char *mk_args_opt_usage(const mk_opt *o, char buf[96]);

/* When set, --help hands the spec to this function instead of printing the help text: the
 * man pages and shell completion are generated from the same tables (cli/doc.c). The spec
 * and its option table live only for the duration of the call. */
extern void (*mk_args_help_hook)(const mk_cmd_spec *spec, void *ctx);
extern void *mk_args_help_ctx;

#endif
