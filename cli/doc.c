/* doc.c - `mergekit-c help ...`: what the command line can do, generated from the command
 * table (main.c) and each command's option table, so that the help text, the man pages and
 * the shell completion can not drift apart.
 *
 * A command's option table lives on its stack; to read it without running the command, the
 * command is called with --help while mk_args_help_hook is set: the hook copies the spec
 * (the strings are literals that outlive the call) and the command returns at once.
 *
 *   help                      the top help
 *   help COMMAND [SUB]        COMMAND [SUB] --help
 *   help --commands           one command per line ("merge", "lora apply", ...)
 *   help --man-pages          the man page names, one per line (the Makefile makes each)
 *   help --man PAGE           one page in roff: mergekit-c, mergekit-c-COMMAND[-SUB],
 *                             mergekit-yaml, quantize
 *   help --completion SHELL   completion for bash or zsh of mergekit-c and its aliases
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 128
#define MAX_PAGES 64

/* One command as its tables describe it. */
typedef struct doc_cmd {
    char page[64];     /* man page name: "mergekit-c-merge", "mergekit-c-lora-apply", "mergekit-yaml" */
    char words[64];    /* what is typed: "mergekit-c merge", "mergekit-yaml" */
    char key[48];      /* completion key: "merge", "lora-apply", "mergekit-yaml" */
    const char *usage, *summary, *details;
    mk_opt opts[MAX_OPTS];
    size_t n_opts;
    bool found;
} doc_cmd;

static void capture(const mk_cmd_spec *spec, void *ctx)
{
    doc_cmd *d = ctx;
    d->usage = spec->usage;
    d->summary = spec->summary;
    d->details = spec->details;
    d->n_opts = 0;
    for (const mk_opt *o = spec->opts; o->name && d->n_opts < MAX_OPTS; o++) d->opts[d->n_opts++] = *o;
    d->found = true;
}

static const mk_cli_command *command(const char *name)
{
    for (size_t i = 0; i < mk_cli_n_commands; i++)
        if (strcmp(mk_cli_commands[i].name, name) == 0) return &mk_cli_commands[i];
    return NULL;
}

/* Read the spec of `cmd` (and subcommand `sub`, or NULL) as program `prog` (an alias name,
 * or NULL for mergekit-c). false when there is no such command. */
static bool describe(const char *cmd, const char *sub, const char *prog, doc_cmd *d)
{
    memset(d, 0, sizeof *d);
    const mk_cli_command *c = command(cmd);
    if (!c) return false;
    char a0[32], a1[32], a2[] = "--help";
    snprintf(a0, sizeof a0, "%s", prog ? prog : cmd);
    snprintf(a1, sizeof a1, "%s", sub ? sub : "");
    char *argv[4] = {a0, sub ? a1 : a2, sub ? a2 : NULL, NULL};
    mk_args_help_hook = capture;
    mk_args_help_ctx = d;
    c->fn(sub ? 3 : 2, argv);
    mk_args_help_hook = NULL;
    mk_args_help_ctx = NULL;
    if (prog) {
        snprintf(d->page, sizeof d->page, "%s", prog);
        snprintf(d->words, sizeof d->words, "%s", prog);
        snprintf(d->key, sizeof d->key, "%s", prog);
    } else {
        snprintf(d->page, sizeof d->page, "mergekit-c-%s%s%s", cmd, sub ? "-" : "", sub ? sub : "");
        snprintf(d->words, sizeof d->words, "mergekit-c %s%s%s", cmd, sub ? " " : "", sub ? sub : "");
        snprintf(d->key, sizeof d->key, "%s%s%s", cmd, sub ? "-" : "", sub ? sub : "");
    }
    return d->found;
}

/* Every leaf command (subcommands instead of their parent), then the aliases. Returns the
 * count; d has room for MAX_PAGES. */
static size_t describe_all(doc_cmd *d)
{
    size_t n = 0;
    for (size_t i = 0; i < mk_cli_n_commands && n < MAX_PAGES; i++) {
        const mk_cli_command *c = &mk_cli_commands[i];
        if (!c->subs) {
            if (describe(c->name, NULL, NULL, &d[n])) n++;
            continue;
        }
        for (const char *const *s = c->subs; *s && n < MAX_PAGES; s++)
            if (describe(c->name, *s, NULL, &d[n])) n++;
    }
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog && n < MAX_PAGES; al++)
        if (describe(al->command, NULL, al->prog, &d[n])) n++;
    return n;
}

/* ---- roff ------------------------------------------------------------------------------- */

/* Text for roff: backslashes escaped, hyphens as \- (so options copy and paste), a leading
 * '.' or '\'' kept from being a request. */
static void roff_text(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (i == 0 && (ch == '.' || ch == '\'')) fputs("\\&", f);
        if (ch == '\\') fputs("\\e", f);
        else if (ch == '-') fputs("\\-", f);
        else fputc(ch, f);
    }
}

static void roff_line(FILE *f, const char *s)
{
    roff_text(f, s, strlen(s));
    fputc('\n', f);
}

/* Paragraphs of help text: plain lines are filled, blank lines start a paragraph, indented
 * lines (lists, examples) are kept as they are. */
static void roff_paragraphs(FILE *f, const char *text)
{
    bool nofill = false;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool indented = n > 0 && p[0] == ' ';
        if (indented != nofill) {
            fputs(indented ? ".nf\n" : ".fi\n", f);
            nofill = indented;
        }
        if (n == 0) fputs(".PP\n", f);
        else {
            roff_text(f, p, n);
            fputc('\n', f);
        }
        p += n + (e ? 1 : 0);
    }
    if (nofill) fputs(".fi\n", f);
}

static void roff_header(FILE *f, const char *page, const char *summary)
{
    char up[64];
    size_t i = 0;
    for (; page[i] && i + 1 < sizeof up; i++) up[i] = (char)(page[i] >= 'a' && page[i] <= 'z' ? page[i] - 32 : page[i]);
    up[i] = 0;
    fprintf(f, ".\\\" generated by 'mergekit-c help --man %s' from the option tables; do not edit\n", page);
    fputs(".TH ", f);
    roff_text(f, up, strlen(up));
    fprintf(f, " 1 \"\" \"mergekit-c %s\" \"mergekit-c manual\"\n.SH NAME\n", MK_VERSION);
    roff_text(f, page, strlen(page));
    fputs(" \\- ", f);
    for (const char *p = summary; *p;) { /* one line */
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        roff_text(f, p, n);
        p += n;
        if (*p) fputc(' ', f), p++;
    }
    fputc('\n', f);
}

static void roff_exit_status(FILE *f)
{
    fputs(".SH EXIT STATUS\n.TP\n.B 0\nsuccess\n.TP\n.B 1\nruntime or I/O failure, or a damaged or hostile input file\n"
          ".TP\n.B 2\nusage or recipe error (including an existing non-empty OUT without \\-\\-force)\n",
          f);
}

static void man_command(FILE *f, const doc_cmd *d)
{
    roff_header(f, d->page, d->summary);
    fputs(".SH SYNOPSIS\n.B ", f);
    roff_line(f, d->words);
    roff_line(f, d->usage);
    fputs(".SH DESCRIPTION\n", f);
    roff_paragraphs(f, d->summary);
    if (d->details) {
        fputs(".PP\n", f);
        roff_paragraphs(f, d->details);
    }
    fputs(".SH OPTIONS\n", f);
    for (size_t i = 0; i < d->n_opts; i++) {
        const mk_opt *o = &d->opts[i];
        if (o->kind == MK_OPT_SECTION) {
            fputs(".SS ", f);
            roff_line(f, o->help);
            continue;
        }
        char left[96];
        mk_args_opt_usage(o, left);
        const char *l = left;
        while (*l == ' ') l++;
        fputs(".TP\n.B ", f);
        roff_line(f, l);
        roff_text(f, o->help, strlen(o->help));
        if (o->def) {
            fputs(" (default: ", f);
            roff_text(f, o->def, strlen(o->def));
            fputc(')', f);
        }
        fputc('\n', f);
    }
    fputs(".TP\n.B \\-h, \\-\\-help\nshow the help text\n", f);
    roff_exit_status(f);
    fputs(".SH SEE ALSO\n.BR mergekit-c (1)\n", f);
}

static void man_overview(FILE *f)
{
    roff_header(f, "mergekit-c", "merge, stack and quantize open-weight LLM checkpoints, streaming, on the CPU");
    fputs(".SH SYNOPSIS\n.B mergekit-c\nRECIPE.yaml OUT [options]\n.br\n.B mergekit-c\nCOMMAND [args] [options]\n"
          ".br\n.B mergekit-yaml\nRECIPE.yaml OUT [options]\n.br\n.B quantize\nIN OUT \\-\\-format FORMAT [options]\n"
          ".SH DESCRIPTION\nmergekit\\-c reads mergekit's YAML recipes and merges checkpoints by streaming their tensors,"
          " so memory stays flat whatever the model size; the same recipe and seed give the same bytes on any machine"
          " and at any thread count.\n.PP\nInstalled as\n.BR mergekit-yaml ,\nit takes mergekit\\-yaml's command line;"
          " installed as\n.BR quantize ,\nit runs the quantize command.\n.SH COMMANDS\n",
          f);
    for (size_t i = 0; i < mk_cli_n_commands; i++) {
        const mk_cli_command *c = &mk_cli_commands[i];
        fputs(".TP\n.B ", f);
        roff_line(f, c->name);
        roff_text(f, c->summary, strlen(c->summary));
        if (c->subs) {
            fputs("; see", f);
            for (const char *const *s = c->subs; *s; s++) {
                fputs(s == c->subs ? "\n.BR " : ",\n.BR ", f);
                fprintf(f, "mergekit\\-c\\-%s\\-%s (1)", c->name, *s);
            }
            fputc('\n', f);
        } else {
            fprintf(f, "; see\n.BR mergekit\\-c\\-%s (1)\n", c->name);
        }
    }
    fputs(".SH COMMON OPTIONS\n.TP\n.B \\-q, \\-\\-quiet\nerrors only\n.TP\n.B \\-v, \\-\\-verbose\n"
          "one line per tensor when not on a terminal; \\-vv for debug output\n.TP\n.B \\-j, \\-\\-threads N\n"
          "worker threads\n.TP\n.B \\-\\-json\none machine\\-readable document on stdout\n",
          f);
    fputs(".SH MODEL REFERENCES\nWherever a model is named (a recipe's models, a command's model arguments), a Hugging Face"
          " model id works as well as a local path:\n.IR org / name\n(the snapshot refs/main points to),\n"
          ".IR org / name @ revision\n(a branch, a tag or a 40\\-hex commit),\n.IR org / name / sub / folder\n"
          "(a subfolder or file inside the snapshot). They are read from the local cache as huggingface_hub lays it out"
          " (models\\-\\-org\\-\\-name/refs, snapshots, blobs); what the cache lacks is fetched from the Hub into it,"
          " weight files by the byte ranges the run reads (headers first, so a recipe error shows before any weight"
          " is downloaded). A local path that exists always wins. A malformed id exits 2; with HF_HUB_OFFLINE, an id,"
          " revision, snapshot or blob the cache lacks exits 1 with one line naming the cache folder; 401, 403 and 404"
          " from the Hub exit 1 with one line naming the repository and what to do.\n.B \\-\\-verify\\-cache\nchecks each"
          " weight blob's sha256 against its name.\n"
          ".SH ENVIRONMENT\n.TP\n.B HF_HUB_CACHE\nthe Hugging Face cache folder (also under its old name,"
          " HUGGINGFACE_HUB_CACHE)\n.TP\n.B HF_HOME\nthe cache is HF_HOME/hub when HF_HUB_CACHE is unset\n.TP\n"
          ".B XDG_CACHE_HOME\nthe cache is XDG_CACHE_HOME/huggingface/hub when neither is set (else"
          " ~/.cache/huggingface/hub)\n.TP\n.B HF_HUB_OFFLINE\n1, on, yes or true: the network is disallowed (nothing is"
          " fetched; error messages say so)\n.TP\n.B HF_ENDPOINT\nthe Hub to fetch from (default https://huggingface.co)\n"
          ".TP\n.B HF_TOKEN\nthe token for gated and private repositories (else HF_TOKEN_PATH, else HF_HOME/token, else"
          " ~/.cache/huggingface/token)\n.TP\n.B MK_HUB_RETRIES, MK_HUB_BACKOFF_MS\ntries per request (default 5) and the"
          " first delay between them (default 500 ms, doubled each time up to 8 s)\n",
          f);
    roff_exit_status(f);
    fputs(".SH SEE ALSO\n", f);
    doc_cmd *d = mk_calloc(MAX_PAGES, sizeof *d);
    size_t n = d ? describe_all(d) : 0;
    for (size_t i = 0; i < n; i++) fprintf(f, ".BR %s (1)%s\n", d[i].page, i + 1 < n ? "," : "");
    free(d);
}

static int man_page(const char *page)
{
    if (strcmp(page, "mergekit-c") == 0) {
        man_overview(stdout);
        return 0;
    }
    doc_cmd *d = mk_calloc(MAX_PAGES, sizeof *d);
    if (!d) return 1;
    size_t n = describe_all(d);
    int rc = 2;
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].page, page) == 0) {
            man_command(stdout, &d[i]);
            rc = 0;
        }
    if (rc) fprintf(stderr, "mergekit-c: error: help --man: no page '%s' (see 'mergekit-c help --man-pages')\n", page);
    free(d);
    return rc;
}

/* ---- completion ---------------------------------------------------------------------------- */

/* The command names (or c's subcommand names), each followed by `after` but the last, which
 * is followed by `last`. */
static void names(FILE *f, const mk_cli_command *c, const char *after, const char *last)
{
    size_t n = 0;
    if (c)
        while (c->subs[n]) n++;
    else n = mk_cli_n_commands;
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%s", c ? c->subs[i] : mk_cli_commands[i].name, i + 1 < n ? after : last);
}

static bool is_option(const mk_opt *o) { return o->kind != MK_OPT_SECTION; }
static bool has_value(const mk_opt *o)
{
    return o->kind != MK_OPT_FLAG && o->kind != MK_OPT_COUNT && o->kind != MK_OPT_BOOL && o->kind != MK_OPT_OPTSTR &&
           is_option(o);
}

/* Every spelling of d's options, space-separated: "--x -x --no-y ..." (values: only those
 * that take one). */
static void opt_words(FILE *f, const doc_cmd *d, bool values_only)
{
    bool first = true;
    for (size_t i = 0; i < d->n_opts; i++) {
        const mk_opt *o = &d->opts[i];
        if (!is_option(o) || (values_only && !has_value(o))) continue;
        fprintf(f, "%s--%s", first ? "" : " ", o->name);
        first = false;
        if (o->kind == MK_OPT_BOOL) fprintf(f, " --no-%s", o->name);
        if (o->short_name) fprintf(f, " -%c", o->short_name);
    }
    if (!values_only) fprintf(f, "%s--help -h", first ? "" : " ");
}

/* A metavar listing its choices ("error|warn") gives them as the completions of the value. */
static bool choices(const mk_opt *o) { return o->metavar && strchr(o->metavar, '|') && !strchr(o->metavar, ' '); }

static void bash_completion(FILE *f, const doc_cmd *d, size_t n)
{
    fputs("# bash completion for mergekit-c, mergekit-yaml and quantize\n"
          "# generated by 'mergekit-c help --completion bash' from the command and option tables; do not edit\n\n"
          "_mergekit_c_opts()\n{\n    case $1 in\n",
          f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "        %s) echo \"", d[i].key);
        opt_words(f, &d[i], false);
        fputs("\" ;;\n", f);
    }
    fputs("    esac\n}\n\n_mergekit_c_values()\n{\n    case $1 in\n", f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "        %s) echo \"", d[i].key);
        opt_words(f, &d[i], true);
        fputs("\" ;;\n", f);
    }
    fputs("    esac\n}\n\n_mergekit_c_choices()\n{\n    case $1 in\n", f);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < d[i].n_opts; k++) {
            const mk_opt *o = &d[i].opts[k];
            if (!is_option(o) || !choices(o)) continue;
            fprintf(f, "        %s:--%s) echo \"", d[i].key, o->name);
            for (const char *c = o->metavar; *c; c++) fputc(*c == '|' ? ' ' : *c, f);
            fputs("\" ;;\n", f);
        }
    }
    fputs("    esac\n}\n\n_mergekit_c()\n{\n"
          "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd\n"
          "    COMPREPLY=()\n"
          "    case ${COMP_WORDS[0]##*/} in\n",
          f);
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog; al++) fprintf(f, "        %s) cmd=%s ;;\n", al->prog, al->prog);
    fputs("        *)\n"
          "            if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
          "                COMPREPLY=($(compgen -W \"",
          f);
    names(f, NULL, " ", " ");
    fputs("help --help --version\" -- \"$cur\") $(compgen -f -- \"$cur\"))\n"
          "                return\n"
          "            fi\n"
          "            cmd=${COMP_WORDS[1]}\n"
          "            case $cmd in\n",
          f);
    for (size_t i = 0; i < mk_cli_n_commands; i++) {
        const mk_cli_command *c = &mk_cli_commands[i];
        if (!c->subs) continue;
        fprintf(f, "                %s)\n                    if [ \"$COMP_CWORD\" -eq 2 ]; then\n"
                   "                        COMPREPLY=($(compgen -W \"",
                c->name);
        names(f, c, " ", " ");
        fprintf(f, "--help\" -- \"$cur\"))\n                        return\n                    fi\n"
                   "                    cmd=%s-${COMP_WORDS[2]} ;;\n",
                c->name);
    }
    fputs("                ", f);
    names(f, NULL, "|", ") ;;\n");
    fputs("                *) cmd=merge ;; # mergekit-c RECIPE OUT\n            esac ;;\n    esac\n"
          "    local ch\n"
          "    ch=$(_mergekit_c_choices \"$cmd:$prev\")\n"
          "    if [ -n \"$ch\" ]; then\n"
          "        COMPREPLY=($(compgen -W \"$ch\" -- \"$cur\"))\n"
          "        return\n"
          "    fi\n"
          "    case \" $(_mergekit_c_values \"$cmd\") \" in\n"
          "        *\" $prev \"*)\n"
          "            COMPREPLY=($(compgen -f -- \"$cur\"))\n"
          "            return ;;\n"
          "    esac\n"
          "    case $cur in\n"
          "        -*) COMPREPLY=($(compgen -W \"$(_mergekit_c_opts \"$cmd\")\" -- \"$cur\")) ;;\n"
          "        *) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
          "    esac\n"
          "}\n\ncomplete -o filenames -F _mergekit_c mergekit-c",
          f);
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog; al++) fprintf(f, " %s", al->prog);
    fputs("\n", f);
}

/* Help text inside a zsh single-quoted _arguments spec: no quote, and no ':' '[' ']' '\'. */
static void zsh_text(FILE *f, const char *s)
{
    for (; *s && *s != '\n'; s++) {
        char ch = *s;
        if (ch == '\'') fputs("'\\''", f);
        else if (ch == '[' || ch == ']' || ch == ':' || ch == '\\') fputc(ch == '[' ? '(' : ch == ']' ? ')' : ' ', f);
        else fputc(ch, f);
    }
}

static void zsh_spec(FILE *f, const char *spelling, const mk_opt *o, const char *help)
{
    fprintf(f, " \\\n        '%s[", spelling);
    zsh_text(f, help);
    fputc(']', f);
    if (has_value(o)) {
        fputc(':', f);
        zsh_text(f, o->metavar ? o->metavar : "value");
        if (choices(o)) {
            fputs(":(", f);
            for (const char *c = o->metavar; *c; c++) fputc(*c == '|' ? ' ' : *c, f);
            fputc(')', f);
        } else {
            fputs(":_files", f);
        }
    }
    fputc('\'', f);
}

static void zsh_completion(FILE *f, const doc_cmd *d, size_t n)
{
    fputs("#compdef mergekit-c", f);
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog; al++) fprintf(f, " %s", al->prog);
    fputs("\n# zsh completion for mergekit-c, mergekit-yaml and quantize\n"
          "# generated by 'mergekit-c help --completion zsh' from the command and option tables; do not edit\n\n"
          "_mergekit_c_command()\n{\n    case $1 in\n",
          f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "    %s)\n        _arguments -s", d[i].key);
        for (size_t k = 0; k < d[i].n_opts; k++) {
            const mk_opt *o = &d[i].opts[k];
            if (!is_option(o)) continue;
            char sp[80];
            snprintf(sp, sizeof sp, "--%s", o->name);
            zsh_spec(f, sp, o, o->help);
            if (o->kind == MK_OPT_BOOL) {
                snprintf(sp, sizeof sp, "--no-%s", o->name);
                zsh_spec(f, sp, o, o->help);
            }
            if (o->short_name) {
                snprintf(sp, sizeof sp, "-%c", o->short_name);
                zsh_spec(f, sp, o, o->help);
            }
        }
        fputs(" \\\n        '(- *)--help[show the help text]' \\\n        '*:file:_files' ;;\n", f);
    }
    fputs("    esac\n}\n\n_mergekit_c()\n{\n    local cmd\n    case ${words[1]:t} in\n", f);
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog; al++)
        fprintf(f, "    %s) _mergekit_c_command %s; return ;;\n", al->prog, al->prog);
    fputs("    esac\n    if (( CURRENT == 2 )); then\n        local -a cmds\n        cmds=(", f);
    for (size_t i = 0; i < mk_cli_n_commands; i++) {
        fprintf(f, "%s'%s:", i ? " " : "", mk_cli_commands[i].name);
        zsh_text(f, mk_cli_commands[i].summary);
        fputc('\'', f);
    }
    fputs(")\n        _describe -t commands 'mergekit-c command' cmds\n        _files -g '*.(yaml|yml)'\n        return\n"
          "    fi\n    cmd=${words[2]}\n    case $cmd in\n",
          f);
    for (size_t i = 0; i < mk_cli_n_commands; i++) {
        const mk_cli_command *c = &mk_cli_commands[i];
        if (!c->subs) continue;
        fprintf(f, "    %s)\n        if (( CURRENT == 3 )); then\n            compadd -- ", c->name);
        names(f, c, " ", "\n");
        fprintf(f, "            return\n        fi\n        cmd=%s-${words[3]}\n"
                   "        words=(\"${(@)words[3,-1]}\")\n        (( CURRENT -= 2 )) ;;\n",
                c->name);
    }
    fputs("    ", f);
    names(f, NULL, "|", ")\n");
    fputs("        words=(\"${(@)words[2,-1]}\")\n        (( CURRENT -= 1 )) ;;\n"
          "    *) cmd=merge ;;\n    esac\n    _mergekit_c_command $cmd\n}\n\n_mergekit_c \"$@\"\n",
          f);
}

static int completion(const char *shell)
{
    bool bash = strcmp(shell, "bash") == 0, zsh = strcmp(shell, "zsh") == 0;
    if (!bash && !zsh) {
        fprintf(stderr, "mergekit-c: error: help --completion: expected bash or zsh, got '%s'\n", shell);
        return 2;
    }
    doc_cmd *d = mk_calloc(MAX_PAGES, sizeof *d);
    if (!d) return 1;
    size_t n = describe_all(d);
    if (bash) bash_completion(stdout, d, n);
    else zsh_completion(stdout, d, n);
    free(d);
    return 0;
}

/* ---- help ----------------------------------------------------------------------------------- */

int mk_cli_help(int argc, char **argv)
{
    if (argc < 2) {
        mk_cli_top_help(stdout);
        return 0;
    }
    const char *a = argv[1];
    if (strcmp(a, "--commands") == 0) {
        for (size_t i = 0; i < mk_cli_n_commands; i++) {
            printf("%s\n", mk_cli_commands[i].name);
            for (const char *const *s = mk_cli_commands[i].subs; s && *s; s++) printf("%s %s\n", mk_cli_commands[i].name, *s);
        }
        return 0;
    }
    if (strcmp(a, "--man-pages") == 0) {
        doc_cmd *d = mk_calloc(MAX_PAGES, sizeof *d);
        if (!d) return 1;
        size_t n = describe_all(d);
        printf("mergekit-c\n");
        for (size_t i = 0; i < n; i++) printf("%s\n", d[i].page);
        free(d);
        return 0;
    }
    if (strcmp(a, "--man") == 0 || strcmp(a, "--completion") == 0) {
        if (argc != 3) {
            fprintf(stderr, "mergekit-c: error: help %s: expected one %s\n", a, a[2] == 'm' ? "page name" : "shell (bash or zsh)");
            return 2;
        }
        return a[2] == 'm' ? man_page(argv[2]) : completion(argv[2]);
    }
    if (a[0] == '-') {
        fprintf(stderr, "mergekit-c: error: help: unknown option '%s' (--commands, --man-pages, --man PAGE, --completion SHELL)\n", a);
        return 2;
    }
    const mk_cli_command *c = command(a);
    if (!c) {
        fprintf(stderr, "mergekit-c: error: help: unknown command '%s' (see 'mergekit-c --help')\n", a);
        return 2;
    }
    char h[] = "--help", sub[32];
    snprintf(sub, sizeof sub, "%s", argc > 2 ? argv[2] : "");
    char *av[4] = {argv[1], argc > 2 ? sub : h, argc > 2 ? h : NULL, NULL};
    return c->fn(argc > 2 ? 3 : 2, av);
}
