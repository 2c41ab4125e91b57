/* args.c - see args.h */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void (*mk_args_help_hook)(const mk_cmd_spec *spec, void *ctx);
void *mk_args_help_ctx;

const char *mk_args_prog(const mk_cmd_spec *spec, char buf[96])
{
    if (strncmp(spec->name, "mergekit-", 9) == 0) snprintf(buf, 96, "%s", spec->name);
    else snprintf(buf, 96, "mergekit-c %s", spec->name);
    return buf;
}

static int usage_error(const mk_cmd_spec *spec, const char *fmt, const char *a, const char *b)
{
    char prog[96];
    fprintf(stderr, "mergekit-c: error: %s: ", spec->name);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see '%s --help')\n", mk_args_prog(spec, prog));
    return 2;
}

static const mk_opt *find_long(const mk_cmd_spec *spec, const char *name, size_t len)
{
    for (const mk_opt *o = spec->opts; o->name; o++)
        if (o->kind != MK_OPT_SECTION && strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

static int set_value(const mk_cmd_spec *spec, const mk_opt *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case MK_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno) return usage_error(spec, "--%s expects an integer, got '%s'", o->name, v);
        *(long *)o->dst = x;
        return 0;
    }
    case MK_OPT_U64: {
        if (*v == '-') return usage_error(spec, "--%s expects a non-negative integer, got '%s'", o->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno) return usage_error(spec, "--%s expects a non-negative integer, got '%s'", o->name, v);
        *(uint64_t *)o->dst = x;
        return 0;
    }
    case MK_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x)) return usage_error(spec, "--%s expects a number, got '%s'", o->name, v);
        *(double *)o->dst = x;
        return 0;
    }
    case MK_OPT_SIZE:
        if (!mk_parse_size(v, (uint64_t *)o->dst))
            return usage_error(spec, "--%s expects a size such as 5e9, 500M or 2G, got '%s'", o->name, v);
        return 0;
    case MK_OPT_STR:
    case MK_OPT_OPTSTR:
        *(const char **)o->dst = v;
        return 0;
    case MK_OPT_LIST: {
        const char *old = *(const char **)o->dst;
        if (!old) {
            *(const char **)o->dst = v;
            return 0;
        }
        /* repeated: join (kept for the life of the process) */
        char *j = mk_asprintf("%s,%s", old, v);
        if (!j) return 2;
        *(const char **)o->dst = j;
        return 0;
    }
    default: return 0;
    }
}

static bool takes_value(const mk_opt *o)
{
    return o->kind != MK_OPT_FLAG && o->kind != MK_OPT_COUNT && o->kind != MK_OPT_OPTSTR && o->kind != MK_OPT_BOOL;
}

/* "--name" or "--name=value" (or "--no-name" for MK_OPT_BOOL: *negated): *o and *val (NULL
 * when not attached). Returns 0 or 2. */
static int parse_long(const mk_cmd_spec *spec, const char *a, const mk_opt **o, const char **val, bool *negated)
{
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    *o = find_long(spec, name, len);
    *negated = false;
    if (!*o && len > 3 && strncmp(name, "no-", 3) == 0) {
        /* --no-NAME of a two-way switch */
        const mk_opt *q = find_long(spec, name + 3, len - 3);
        if (q && q->kind == MK_OPT_BOOL) {
            *o = q;
            *negated = true;
        }
    }
    if (!*o) {
        const char *names[256];
        size_t n = 0;
        for (const mk_opt *q = spec->opts; q->name && n < 256; q++)
            if (q->kind != MK_OPT_SECTION) names[n++] = q->name;
        char word[128];
        snprintf(word, sizeof word, "%.*s", (int)(len < 120 ? len : 120), name);
        const char *hint = mk_did_you_mean(word, names, n);
        if (hint) return usage_error(spec, "unknown option '--%s' (did you mean '--%s'?)", word, hint);
        return usage_error(spec, "unknown option '--%s'%s", word, "");
    }
    if (eq) {
        if (!takes_value(*o) && (*o)->kind != MK_OPT_OPTSTR)
            return usage_error(spec, "option '--%s' takes no value%s", (*o)->name, "");
        *val = eq + 1;
    }
    return 0;
}

/* "-x", "-j4" (value attached) or bundled flags "-vq". *o = NULL when the flags were set here.
 * Returns 0 or 2. */
static int parse_short(const mk_cmd_spec *spec, const char *a, const mk_opt **o, const char **val)
{
    *o = NULL;
    for (const mk_opt *q = spec->opts; q->name; q++)
        if (q->short_name && q->short_name == a[1]) *o = q;
    if (*o && a[2] && takes_value(*o)) {
        *val = a + 2; /* -j4: the value attached */
        return 0;
    }
    if (*o && !a[2]) return 0;
    /* bundled flags like -vv */
    bool all = a[1] != 0;
    for (const char *c = a + 1; *c && all; c++) {
        const mk_opt *f = NULL;
        for (const mk_opt *q = spec->opts; q->name; q++)
            if (q->short_name == *c) f = q;
        if (!f || takes_value(f)) all = false;
    }
    if (!all) return usage_error(spec, "unknown option '%s'%s", a, "");
    for (const char *c = a + 1; *c; c++)
        for (const mk_opt *q = spec->opts; q->name; q++)
            if (q->short_name == *c) {
                if (q->kind == MK_OPT_COUNT) (*(int *)q->dst)++;
                else if (q->kind == MK_OPT_BOOL) *(int *)q->dst = 1;
                else *(bool *)q->dst = true;
            }
    *o = NULL;
    return 0;
}

int mk_args_parse(const mk_cmd_spec *spec, int argc, char **argv, char **pos, size_t *npos)
{
    *npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == 0) {
            if (*npos >= spec->max_pos) return usage_error(spec, "unexpected argument '%s'%s", a, "");
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (mk_args_help_hook) mk_args_help_hook(spec, mk_args_help_ctx);
            else mk_args_help(spec, stdout);
            return 1;
        }
        const mk_opt *o = NULL;
        const char *val = NULL;
        bool negated = false;
        int rc = a[1] == '-' ? parse_long(spec, a, &o, &val, &negated) : parse_short(spec, a, &o, &val);
        if (rc) return rc;
        if (!o) continue; /* bundled flags, already set */
        switch (o->kind) {
        case MK_OPT_FLAG: *(bool *)o->dst = true; break;
        case MK_OPT_BOOL: *(int *)o->dst = negated ? -1 : 1; break;
        case MK_OPT_COUNT: (*(int *)o->dst)++; break;
        case MK_OPT_OPTSTR: *(const char **)o->dst = val ? val : ""; break;
        default:
            if (!val) {
                if (i + 1 >= argc) return usage_error(spec, "option '--%s' needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
                val = argv[++i];
            }
            if (set_value(spec, o, val)) return 2;
        }
    }
    if (*npos < spec->min_pos) {
        char prog[96];
        fprintf(stderr, "mergekit-c: error: %s: missing arguments; usage: %s %s\n", spec->name, mk_args_prog(spec, prog),
                spec->usage);
        return 2;
    }
    return 0;
}

const char *mk_args_opt_usage(const mk_opt *o, char buf[96])
{
    const char *mv = o->metavar ? o->metavar : "X";
    char sh[8] = "    ";
    if (o->short_name) snprintf(sh, sizeof sh, "-%c, ", o->short_name);
    switch (o->kind) {
    case MK_OPT_FLAG:
    case MK_OPT_COUNT: snprintf(buf, 96, "%s--%s", sh, o->name); break;
    case MK_OPT_BOOL: snprintf(buf, 96, "%s--[no-]%s", sh, o->name); break;
    case MK_OPT_OPTSTR: snprintf(buf, 96, "%s--%s[=%s]", sh, o->name, mv); break;
    default: snprintf(buf, 96, "%s--%s %s", sh, o->name, mv); break;
    }
    return buf;
}

void mk_args_help(const mk_cmd_spec *spec, FILE *f)
{
    char prog[96];
    fprintf(f, "usage: %s %s\n\n%s\n", mk_args_prog(spec, prog), spec->usage, spec->summary);
    if (spec->details) fprintf(f, "\n%s\n", spec->details);
    fprintf(f, "\noptions:\n");
    bool first_section = true;
    for (const mk_opt *o = spec->opts; o->name; o++) {
        if (o->kind == MK_OPT_SECTION) {
            if (first_section) fprintf(f, "  %-28s %s\n", "-h, --help", "show this help");
            first_section = false;
            fprintf(f, "\n%s:\n", o->help);
            continue;
        }
        char left[96];
        mk_args_opt_usage(o, left);
        if (strlen(left) > 28) fprintf(f, "  %s\n  %-28s %s", left, "", o->help); /* a long option: help below */
        else fprintf(f, "  %-28s %s", left, o->help);
        if (o->def) fprintf(f, " (default: %s)", o->def);
        fprintf(f, "\n");
    }
    if (first_section) fprintf(f, "  %-28s %s\n", "-h, --help", "show this help");
}
