/* peft.c - see peft.h */
#include "peft.h"

#include "../core/mk_io.h"
#include "../core/mk_json.h"
#include "../model/arch.h"
#include "modeldir.h"
#include "safetensors.h"
#include "torchbin.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CONFIG (16u << 20)

/* ---- regular expressions ------------------------------------------------------------------
 * PEFT matches with Python's `re`. We compile the common subset with POSIX extended
 * expressions: \d \w \s and their negations become bracket classes, (?: becomes (, other
 * (?...) constructs, backreferences and lazy quantifiers are refused with a message. */

static char *py_to_ere(const char *py, const char *what, const char *key, mk_status *st)
{
    mk_buf b = {0};
    *st = MK_OK;
    for (const char *p = py; *p; p++) {
        if (*p == '\\') {
            char c = p[1];
            if (!c) {
                *st = mk_error(MK_ERR_FORMAT, "%s: %s: regular expression '%s' ends with a backslash", what, key, py);
                break;
            }
            p++;
            switch (c) {
            case 'd': mk_buf_puts(&b, "[0-9]"); break;
            case 'D': mk_buf_puts(&b, "[^0-9]"); break;
            case 'w': mk_buf_puts(&b, "[A-Za-z0-9_]"); break;
            case 'W': mk_buf_puts(&b, "[^A-Za-z0-9_]"); break;
            case 's': mk_buf_puts(&b, "[[:space:]]"); break;
            case 'S': mk_buf_puts(&b, "[^[:space:]]"); break;
            default:
                if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
                    *st = mk_error(MK_ERR_UNSUPPORTED, "%s: %s: regular expression '%s': escape \\%c is not supported", what,
                                   key, py, c);
                } else {
                    char e[3] = {'\\', c, 0};
                    mk_buf_puts(&b, e);
                }
            }
            if (*st != MK_OK) break;
        } else if (*p == '(' && p[1] == '?') {
            if (p[2] != ':') {
                *st = mk_error(MK_ERR_UNSUPPORTED, "%s: %s: regular expression '%s': (?%c...) is not supported", what, key,
                               py, p[2] ? p[2] : ' ');
                break;
            }
            mk_buf_puts(&b, "(");
            p += 2;
        } else if ((*p == '*' || *p == '+' || *p == '?' || *p == '}') && p[1] == '?') {
            *st = mk_error(MK_ERR_UNSUPPORTED, "%s: %s: regular expression '%s': lazy quantifiers are not supported", what,
                           key, py);
            break;
        } else {
            char e[2] = {*p, 0};
            mk_buf_puts(&b, e);
        }
    }
    if (*st == MK_OK && b.failed) *st = MK_ERR_NOMEM;
    if (*st != MK_OK) {
        mk_buf_free(&b);
        return NULL;
    }
    return b.data ? b.data : mk_strdup("");
}

#define MK_STR_(x) #x
#define MK_STR(x) MK_STR_(x)

/* glibc's regcomp copies the sub-expression under `+` and `{n,m}` (x+ is compiled as x x*), so
 * stacked or nested repetitions grow the compiled program exponentially: a hostile adapter
 * exhausted gigabytes with a 700-byte exclude_modules pattern (found by fuzz_peft). Estimate
 * the compiled size of an ERE and refuse it over a bound that no real module pattern nears. */
#define RE_MAX_COST 20000.0
/* Every repetition adds epsilon transitions, and regcomp's closure computation grows with
 * their product (nested groups, or many optional alternatives under one star: a 9 KB
 * pattern took gigabytes). Real module patterns use a handful of each. */
#define RE_MAX_DEPTH 16
#define RE_MAX_REPS 100

static const char *ere_problem(const char *e)
{
    double stack[RE_MAX_DEPTH], cur = 0, last = 0;
    int depth = 0, n_rep = 0;
    bool after_rep = false; /* the previous token was a repetition operator */
    for (const char *p = e; *p; p++) {
        bool rep = false;
        switch (*p) {
        case '\\':
            if (p[1]) p++;
            cur += 1;
            last = 1;
            break;
        case '[':
            p++;
            if (*p == '^') p++;
            if (*p == ']') p++;
            while (*p && *p != ']') p++;
            if (!*p) return NULL; /* unterminated: regcomp reports it */
            cur += 1;
            last = 1;
            break;
        case '(':
            if (depth == RE_MAX_DEPTH) return "is nested too deeply (more than " MK_STR(RE_MAX_DEPTH) " groups)";
            stack[depth++] = cur;
            cur = 0;
            last = 0;
            break;
        case ')':
            /* a stray ')' would close the group compile_re wraps the pattern in */
            if (depth == 0) return "has an unbalanced parenthesis";
            last = cur;
            cur = stack[--depth] + cur;
            break;
        case '|':
            cur += 1;
            last = 0;
            break;
        case '*':
        case '?':
            rep = true; /* x* and x? are compiled without copying x */
            break;
        case '+':
            rep = true;
            cur += last;
            last *= 2;
            break;
        case '{': {
            double n = 0, m = -1;
            const char *q = p + 1;
            while (*q >= '0' && *q <= '9' && n < 1e6) n = n * 10 + (*q++ - '0');
            if (*q == ',') {
                q++;
                if (*q >= '0' && *q <= '9') m = 0;
                while (*q >= '0' && *q <= '9' && m < 1e6) m = m * 10 + (*q++ - '0');
            }
            if (*q != '}') { /* not a bound: a literal brace */
                cur += 1;
                last = 1;
                break;
            }
            rep = true;
            double k = (m > n ? m : n) + 1;
            cur += last * (k - 1);
            last *= k;
            p = q;
            break;
        }
        default:
            cur += 1;
            last = 1;
        }
        /* x** or x+{2}: Python refuses these ("multiple repeat") or reads them as possessive,
         * and glibc's closure computation grows with every stacked operator */
        if (rep && after_rep) return "stacks repetition operators (like a** or a+*)";
        if (rep && ++n_rep > RE_MAX_REPS) return "has more than " MK_STR(RE_MAX_REPS) " repetition operators";
        if (rep && last == 0) return "has a repetition with nothing to repeat";
        after_rep = rep;
        if (cur > RE_MAX_COST) return "is too complex (nested or stacked repetitions)";
    }
    return depth != 0 ? "has an unbalanced parenthesis" : NULL;
}

/* Compile `^(prefix)(body)(suffix)$` from a Python expression. */
static mk_status compile_re(regex_t *re, const char *prefix, const char *py, const char *suffix, const char *what,
                            const char *key)
{
    mk_status st;
    char *ere = py_to_ere(py, what, key, &st);
    if (!ere) return st;
    const char *why = ere_problem(ere);
    if (why) {
        free(ere);
        return mk_error(MK_ERR_FORMAT, "%s: %s: regular expression '%s' %s", what, key, py, why);
    }
    char *full = mk_asprintf("^%s(%s)%s$", prefix, ere, suffix);
    free(ere);
    if (!full) return MK_ERR_NOMEM;
    int rc = regcomp(re, full, REG_EXTENDED | REG_NOSUB);
    free(full);
    if (rc != 0) return mk_error(MK_ERR_FORMAT, "%s: %s: '%s' is not a valid regular expression", what, key, py);
    return MK_OK;
}

static bool rx_match(const void *re, const char *s) { return regexec((const regex_t *)re, s, 0, NULL, 0) == 0; }

/* ---- config ------------------------------------------------------------------------------ */

static mk_status json_str(const mk_json *j, uint32_t v, const char *what, const char *key, char **out)
{
    const mk_json_node *n = mk_json_at(j, v);
    if (n->type != MK_JSON_STR || n->has_nul)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a string, found %s", what, key, mk_json_type_name(n->type));
    *out = mk_strndup(mk_json_strv(j, v), n->str_len);
    return *out ? MK_OK : MK_ERR_NOMEM;
}

static mk_status json_bool(const mk_json *j, uint32_t obj, const char *what, const char *key, bool *out)
{
    uint32_t v = mk_json_get(j, obj, key);
    if (!v || mk_json_at(j, v)->type == MK_JSON_NULL) return MK_OK;
    if (mk_json_at(j, v)->type != MK_JSON_BOOL)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected true or false, found %s", what, key,
                        mk_json_type_name(mk_json_at(j, v)->type));
    *out = mk_json_at(j, v)->b;
    return MK_OK;
}

static mk_status json_rank(const mk_json *j, uint32_t v, const char *what, const char *key, long *out)
{
    const mk_json_node *n = mk_json_at(j, v);
    if (n->type != MK_JSON_NUM)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a positive integer rank, found %s", what, key,
                        mk_json_type_name(n->type));
    if (!n->is_uint || n->u == 0 || n->u > MK_PEFT_MAX_R)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a positive integer rank (at most %d), found %.17g", what, key,
                        MK_PEFT_MAX_R, n->d);
    *out = (long)n->u;
    return MK_OK;
}

static mk_status json_alpha(const mk_json *j, uint32_t v, const char *what, const char *key, double *out)
{
    const mk_json_node *n = mk_json_at(j, v);
    if (n->type != MK_JSON_NUM || !isfinite(n->d))
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a number, found %s", what, key,
                        mk_json_type_name(n->type));
    *out = n->d;
    return MK_OK;
}

static mk_status parse_names(const mk_json *j, uint32_t obj, const char *what, const char *key, mk_peft_names *nm,
                             bool allow_all_linear)
{
    uint32_t v = mk_json_get(j, obj, key);
    if (!v || mk_json_at(j, v)->type == MK_JSON_NULL) return MK_OK;
    const mk_json_node *n = mk_json_at(j, v);
    if (n->type == MK_JSON_STR) {
        MK_TRY(json_str(j, v, what, key, &nm->regex));
        if (allow_all_linear && strcasecmp(nm->regex, "all-linear") == 0) {
            nm->kind = MK_PEFT_MATCH_ALL_LINEAR;
            return MK_OK;
        }
        nm->kind = MK_PEFT_MATCH_REGEX;
        nm->re = mk_calloc(1, sizeof(regex_t));
        if (!nm->re) return MK_ERR_NOMEM;
        mk_status s = compile_re(nm->re, "", nm->regex, "", what, key);
        if (s != MK_OK) {
            free(nm->re);
            nm->re = NULL;
        }
        return s;
    }
    if (n->type != MK_JSON_ARR)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected a list of module names or a string, found %s", what, key,
                        mk_json_type_name(n->type));
    nm->kind = MK_PEFT_MATCH_LIST;
    nm->names = mk_calloc(n->count + 1, sizeof *nm->names);
    if (!nm->names) return MK_ERR_NOMEM;
    for (uint32_t c = n->first; c; c = mk_json_at(j, c)->next) {
        MK_TRY(json_str(j, c, what, key, &nm->names[nm->n]));
        nm->n++;
        if (!nm->names[nm->n - 1][0]) return mk_error(MK_ERR_FORMAT, "%s: %s: an empty module name", what, key);
        if (allow_all_linear && strcasecmp(nm->names[nm->n - 1], "all-linear") == 0 && n->count == 1)
            nm->kind = MK_PEFT_MATCH_ALL_LINEAR;
    }
    return MK_OK;
}

static void names_free(mk_peft_names *nm)
{
    for (size_t i = 0; i < nm->n; i++) free(nm->names[i]);
    free(nm->names);
    free(nm->regex);
    if (nm->re) {
        regfree(nm->re);
        free(nm->re);
    }
    memset(nm, 0, sizeof *nm);
}

static mk_status parse_pattern(const mk_json *j, uint32_t obj, const char *what, const char *key, bool rank,
                               mk_peft_pattern **out, size_t *n_out, void **res)
{
    uint32_t v = mk_json_get(j, obj, key);
    if (!v || mk_json_at(j, v)->type == MK_JSON_NULL) return MK_OK;
    const mk_json_node *n = mk_json_at(j, v);
    if (n->type != MK_JSON_OBJ)
        return mk_error(MK_ERR_FORMAT, "%s: %s: expected an object mapping module patterns to %s, found %s", what, key,
                        rank ? "ranks" : "alphas", mk_json_type_name(n->type));
    uint32_t dup = mk_json_dup_key(j, v);
    if (dup) return mk_error(MK_ERR_FORMAT, "%s: %s: duplicate key '%s'", what, key, mk_json_key(j, dup));
    *out = mk_calloc(n->count ? n->count : 1, sizeof **out);
    regex_t *re = mk_calloc(n->count ? n->count : 1, sizeof *re);
    *res = re;
    if (!*out || !re) return MK_ERR_NOMEM;
    for (uint32_t c = n->first; c; c = mk_json_at(j, c)->next) {
        mk_peft_pattern *p = &(*out)[*n_out];
        if (mk_json_at(j, c)->has_nul) return mk_error(MK_ERR_FORMAT, "%s: %s: a key contains a NUL character", what, key);
        p->key = mk_strndup(mk_json_key(j, c), mk_json_at(j, c)->key_len);
        if (!p->key) return MK_ERR_NOMEM;
        char *k2 = mk_asprintf("%s['%s']", key, p->key);
        if (!k2) return MK_ERR_NOMEM;
        mk_status s;
        if (rank) {
            long r = 0;
            s = json_rank(j, c, what, k2, &r);
            p->value = (double)r;
        } else {
            s = json_alpha(j, c, what, k2, &p->value);
        }
        /* get_pattern_key: re.match(rf"(.*\.)?({key})$", module) */
        if (s == MK_OK) s = compile_re(&re[*n_out], "(.*\\.)?", p->key, "", what, k2);
        free(k2);
        if (s != MK_OK) {
            free(p->key);
            p->key = NULL;
            return s;
        }
        (*n_out)++;
    }
    return MK_OK;
}

static void pattern_free(mk_peft_pattern *p, size_t n, void *res)
{
    regex_t *re = res;
    for (size_t i = 0; i < n; i++) {
        free(p[i].key);
        if (re) regfree(&re[i]);
    }
    free(p);
    free(re);
}

static mk_status check_known_unsupported(const mk_json *j, uint32_t root, const char *what)
{
    bool b = false;
    MK_TRY(json_bool(j, root, what, "use_dora", &b));
    if (b) return mk_error(MK_ERR_UNSUPPORTED, "%s: use_dora: DoRA adapters are not supported (plain LoRA only)", what);
    static const char *const nonnull[] = {"trainable_token_indices", "layer_replication", "target_parameters", NULL};
    for (const char *const *k = nonnull; *k; k++) {
        uint32_t v = mk_json_get(j, root, *k);
        if (!v) continue;
        const mk_json_node *n = mk_json_at(j, v);
        if (n->type == MK_JSON_NULL || ((n->type == MK_JSON_ARR || n->type == MK_JSON_OBJ) && n->count == 0)) continue;
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %s is set; adapters using it are not supported", what, *k);
    }
    return MK_OK;
}

mk_status mk_peft_config_parse(const char *text, size_t len, const char *what, mk_peft_config *c)
{
    memset(c, 0, sizeof *c);
    c->r = 8;      /* LoraConfig defaults */
    c->alpha = 8;
    mk_json j;
    mk_json_limits lim = {32, len / 2 + 16};
    MK_TRY(mk_json_parse(&j, text, len, &lim, what));
    mk_status s = MK_OK;
    uint32_t v;
    if (mk_json_at(&j, 0)->type != MK_JSON_OBJ) {
        s = mk_error(MK_ERR_FORMAT, "%s: expected a JSON object, found %s", what, mk_json_type_name(mk_json_at(&j, 0)->type));
        goto out;
    }
    if ((v = mk_json_dup_key(&j, 0))) {
        s = mk_error(MK_ERR_FORMAT, "%s: duplicate key '%s'", what, mk_json_key(&j, v));
        goto out;
    }
    if ((v = mk_json_get(&j, 0, "peft_type")) && mk_json_at(&j, v)->type != MK_JSON_NULL) {
        const mk_json_node *n = mk_json_at(&j, v);
        if (n->type != MK_JSON_STR || strcmp(mk_json_strv(&j, v), "LORA") != 0) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: peft_type: expected \"LORA\", found %s%s%s", what,
                         n->type == MK_JSON_STR ? "\"" : "", n->type == MK_JSON_STR ? mk_json_strv(&j, v) : mk_json_type_name(n->type),
                         n->type == MK_JSON_STR ? "\"" : "");
            goto out;
        }
    }
    if ((s = check_known_unsupported(&j, 0, what)) != MK_OK) goto out;
    if ((v = mk_json_get(&j, 0, "r")) && (s = json_rank(&j, v, what, "r", &c->r)) != MK_OK) goto out;
    if ((v = mk_json_get(&j, 0, "lora_alpha")) && (s = json_alpha(&j, v, what, "lora_alpha", &c->alpha)) != MK_OK) goto out;
    if ((s = json_bool(&j, 0, what, "use_rslora", &c->use_rslora)) != MK_OK) goto out;
    if ((s = json_bool(&j, 0, what, "fan_in_fan_out", &c->fan_in_fan_out)) != MK_OK) goto out;
    if ((s = json_bool(&j, 0, what, "lora_bias", &c->lora_bias)) != MK_OK) goto out;
    if ((s = parse_names(&j, 0, what, "target_modules", &c->targets, true)) != MK_OK) goto out;
    if ((s = parse_names(&j, 0, what, "exclude_modules", &c->exclude, false)) != MK_OK) goto out;
    {
        mk_peft_names save = {0};
        s = parse_names(&j, 0, what, "modules_to_save", &save, false);
        if (s == MK_OK && save.kind == MK_PEFT_MATCH_REGEX)
            s = mk_error(MK_ERR_FORMAT, "%s: modules_to_save: expected a list of module names, found a string", what);
        if (s == MK_OK) {
            c->modules_to_save = save.names;
            c->n_save = save.n;
            save.names = NULL;
            save.n = 0;
        }
        names_free(&save);
        if (s != MK_OK) goto out;
    }
    if ((s = parse_pattern(&j, 0, what, "rank_pattern", true, &c->rank_pattern, &c->n_rank, &c->rank_re)) != MK_OK) goto out;
    if ((s = parse_pattern(&j, 0, what, "alpha_pattern", false, &c->alpha_pattern, &c->n_alpha, &c->alpha_re)) != MK_OK)
        goto out;
    if ((v = mk_json_get(&j, 0, "layers_to_transform")) && mk_json_at(&j, v)->type != MK_JSON_NULL) {
        const mk_json_node *n = mk_json_at(&j, v);
        c->layers = mk_calloc(n->type == MK_JSON_ARR && n->count ? n->count : 1, sizeof *c->layers);
        if (!c->layers) {
            s = MK_ERR_NOMEM;
            goto out;
        }
        if (n->type == MK_JSON_NUM && n->is_uint && n->u < (1u << 30)) {
            c->layers[c->n_layers++] = (long)n->u;
            c->has_layers = true;
        } else if (n->type == MK_JSON_ARR) {
            for (uint32_t e = n->first; e; e = mk_json_at(&j, e)->next) {
                const mk_json_node *x = mk_json_at(&j, e);
                if (x->type != MK_JSON_NUM || !x->is_uint || x->u >= (1u << 30)) {
                    s = mk_error(MK_ERR_FORMAT, "%s: layers_to_transform: expected layer numbers, found %s", what,
                                 mk_json_type_name(x->type));
                    goto out;
                }
                c->layers[c->n_layers++] = (long)x->u;
            }
            c->has_layers = c->n_layers > 0;
        } else {
            s = mk_error(MK_ERR_FORMAT, "%s: layers_to_transform: expected a layer number or a list of them, found %s", what,
                         mk_json_type_name(n->type));
            goto out;
        }
    }
    {
        mk_peft_names lp = {0};
        s = parse_names(&j, 0, what, "layers_pattern", &lp, false);
        if (s == MK_OK && lp.kind == MK_PEFT_MATCH_REGEX) {
            c->layers_pattern = mk_calloc(1, sizeof *c->layers_pattern);
            if (!c->layers_pattern) s = MK_ERR_NOMEM;
            else {
                c->layers_pattern[0] = lp.regex;
                lp.regex = NULL;
                c->n_layers_pattern = 1;
            }
        } else if (s == MK_OK && lp.kind == MK_PEFT_MATCH_LIST) {
            c->layers_pattern = lp.names;
            c->n_layers_pattern = lp.n;
            lp.names = NULL;
            lp.n = 0;
        }
        names_free(&lp);
        if (s != MK_OK) goto out;
    }
    if ((v = mk_json_get(&j, 0, "base_model_name_or_path")) && mk_json_at(&j, v)->type == MK_JSON_STR &&
        (s = json_str(&j, v, what, "base_model_name_or_path", &c->base_model)) != MK_OK)
        goto out;
    if ((v = mk_json_get(&j, 0, "task_type")) && mk_json_at(&j, v)->type == MK_JSON_STR &&
        (s = json_str(&j, v, what, "task_type", &c->task_type)) != MK_OK)
        goto out;
    if (c->targets.kind == MK_PEFT_MATCH_NONE)
        s = mk_error(MK_ERR_FORMAT, "%s: target_modules is missing; cannot tell which modules the adapter targets", what);
out:
    mk_json_free(&j);
    if (s != MK_OK) mk_peft_config_free(c);
    return s;
}

void mk_peft_config_free(mk_peft_config *c)
{
    if (!c) return;
    names_free(&c->targets);
    names_free(&c->exclude);
    for (size_t i = 0; i < c->n_save; i++) free(c->modules_to_save[i]);
    free(c->modules_to_save);
    pattern_free(c->rank_pattern, c->n_rank, c->rank_re);
    pattern_free(c->alpha_pattern, c->n_alpha, c->alpha_re);
    free(c->layers);
    for (size_t i = 0; i < c->n_layers_pattern; i++) free(c->layers_pattern[i]);
    free(c->layers_pattern);
    free(c->base_model);
    free(c->task_type);
    memset(c, 0, sizeof *c);
}

void mk_peft_module_ra(const mk_peft_config *c, const char *module, long *r, double *alpha)
{
    *r = c->r;
    *alpha = c->alpha;
    for (size_t i = 0; i < c->n_rank; i++)
        if (rx_match(&((regex_t *)c->rank_re)[i], module)) {
            *r = (long)c->rank_pattern[i].value;
            break;
        }
    for (size_t i = 0; i < c->n_alpha; i++)
        if (rx_match(&((regex_t *)c->alpha_re)[i], module)) {
            *alpha = c->alpha_pattern[i].value;
            break;
        }
}

double mk_peft_scaling(bool rslora, long r, double alpha) { return rslora ? alpha / sqrt((double)r) : alpha / (double)r; }

static bool list_match(const mk_peft_names *nm, const char *module)
{
    size_t ml = strlen(module);
    for (size_t i = 0; i < nm->n; i++) {
        size_t kl = strlen(nm->names[i]);
        if (strcmp(module, nm->names[i]) == 0) return true;
        if (ml > kl && module[ml - kl - 1] == '.' && strcmp(module + ml - kl, nm->names[i]) == 0) return true;
    }
    return false;
}

/* The layer number PEFT would read from a module name, or -1. */
static long layer_index(const mk_peft_config *c, const char *module)
{
    if (c->n_layers_pattern == 0) {
        /* r".*?\.[^.]*\.(\d+)\." : the first numbered segment after at least two dots */
        const char *p = strchr(module, '.');
        while (p) {
            const char *q = strchr(p + 1, '.');
            if (!q) return -1;
            const char *d = q + 1;
            const char *e = d;
            while (*e >= '0' && *e <= '9') e++;
            if (e > d && *e == '.') return strtol(d, NULL, 10);
            p = q;
        }
        return -1;
    }
    for (size_t i = 0; i < c->n_layers_pattern; i++) {
        const char *pat = c->layers_pattern[i];
        size_t pl = strlen(pat);
        if (pl == 0) continue; /* the parser refuses empty names; strstr would never advance */
        for (const char *p = module; (p = strstr(p, pat)) != NULL; p++) {
            if (p != module && p[-1] != '.') continue;
            if (p[pl] != '.') continue;
            const char *d = p + pl + 1, *e = d;
            while (*e >= '0' && *e <= '9') e++;
            if (e > d && *e == '.') return strtol(d, NULL, 10);
        }
    }
    return -1;
}

bool mk_peft_targets(const mk_peft_config *c, const char *module)
{
    if (c->exclude.kind == MK_PEFT_MATCH_REGEX && rx_match(c->exclude.re, module)) return false;
    if (c->exclude.kind == MK_PEFT_MATCH_LIST && list_match(&c->exclude, module)) return false;
    for (size_t i = 0; i < c->n_save; i++)
        if (mk_str_has_component(module, c->modules_to_save[i])) return false;
    if (c->targets.kind == MK_PEFT_MATCH_REGEX) return rx_match(c->targets.re, module);
    if (c->targets.kind == MK_PEFT_MATCH_ALL_LINEAR) return true;
    if (c->targets.kind != MK_PEFT_MATCH_LIST) return false;
    for (size_t i = 0; i < c->targets.n; i++)
        if (strcmp(module, c->targets.names[i]) == 0) return true;
    if (!list_match(&c->targets, module)) return false;
    if (!c->has_layers) return true;
    long li = layer_index(c, module);
    if (li < 0) return false;
    for (size_t i = 0; i < c->n_layers; i++)
        if (c->layers[i] == li) return true;
    return false;
}

/* ---- layout ------------------------------------------------------------------------------ */

typedef enum { PART_A, PART_B, PART_BIAS, PART_EA, PART_EB, PART_COUNT } lora_part;
static const char *const part_suffix[PART_COUNT] = {".lora_A.weight", ".lora_B.weight", ".lora_B.bias",
                                                    ".lora_embedding_A", ".lora_embedding_B"};

static int cmp_module(const void *a, const void *b)
{
    return strcmp(((const mk_peft_module *)a)->module, ((const mk_peft_module *)b)->module);
}

mk_status mk_peft_layout_build(const mk_peft_config *c, const mk_tensor_info *t, size_t n, const char *what,
                               mk_peft_layout *out)
{
    memset(out, 0, sizeof *out);
    out->m = mk_calloc(n ? n : 1, sizeof *out->m);
    out->full = mk_calloc(n ? n : 1, sizeof *out->full);
    /* per module: indices of its parts, -1 when absent */
    long(*parts)[PART_COUNT] = mk_calloc(n ? n : 1, sizeof *parts);
    if (!out->m || !out->full || !parts) {
        free(parts);
        mk_peft_layout_free(out);
        return MK_ERR_NOMEM;
    }
    mk_status s = MK_OK;
    size_t pl = strlen(MK_PEFT_PREFIX);
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        const char *nm = t[i].name;
        if (!mk_str_starts_with(nm, MK_PEFT_PREFIX) || strlen(nm) == pl) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s does not start with '%s' (not a PEFT LoRA adapter?)", what, nm,
                         MK_PEFT_PREFIX);
            break;
        }
        const char *rest = nm + pl;
        if (strstr(rest, "lora_magnitude_vector")) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: DoRA adapters are not supported (plain LoRA only)", what, nm);
            break;
        }
        if (strstr(rest, "token_adapter") || strstr(rest, "trainable_tokens")) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: trainable-token adapters are not supported", what, nm);
            break;
        }
        int part = -1;
        size_t rl = strlen(rest);
        for (int p = 0; p < PART_COUNT; p++)
            if (mk_str_ends_with(rest, part_suffix[p]) && rl > strlen(part_suffix[p])) part = p;
        if (part < 0) {
            if (strstr(rest, "lora_")) {
                s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: unknown LoRA tensor (expected lora_A.weight, lora_B.weight, "
                                            "lora_B.bias, lora_embedding_A or lora_embedding_B)", what, nm);
                break;
            }
            mk_peft_full *f = &out->full[out->n_full];
            /* PEFT saves the base weight of a targeted embedding (save_embedding_layers) as
             * <module>.base_layer.weight: it is the base's <module>.weight */
            const char *bl = strstr(rest, ".base_layer.");
            f->name = bl ? mk_asprintf("%.*s%s", (int)(bl - rest), rest, bl + 11) : mk_strdup(rest);
            f->index = i;
            if (!f->name) s = MK_ERR_NOMEM;
            else out->n_full++;
            continue;
        }
        size_t ml = rl - strlen(part_suffix[part]);
        size_t k;
        for (k = 0; k < out->n_modules; k++)
            if (strlen(out->m[k].module) == ml && memcmp(out->m[k].module, rest, ml) == 0) break;
        if (k == out->n_modules) {
            out->m[k].module = mk_strndup(rest, ml);
            if (!out->m[k].module) {
                s = MK_ERR_NOMEM;
                break;
            }
            for (int p = 0; p < PART_COUNT; p++) parts[k][p] = -1;
            out->n_modules++;
        }
        if (parts[k][part] >= 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s appears twice", what, nm);
            break;
        }
        parts[k][part] = (long)i;
    }
    for (size_t k = 0; k < out->n_modules && s == MK_OK; k++) {
        mk_peft_module *m = &out->m[k];
        long *pp = parts[k];
        bool lin = pp[PART_A] >= 0 || pp[PART_B] >= 0, emb = pp[PART_EA] >= 0 || pp[PART_EB] >= 0;
        if (lin && emb) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s has both lora_A/lora_B and lora_embedding_A/B tensors", what, m->module);
            break;
        }
        m->embedding = emb;
        long ia = emb ? pp[PART_EA] : pp[PART_A], ib = emb ? pp[PART_EB] : pp[PART_B];
        if (ia < 0 || ib < 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s has %s but no %s", what, m->module,
                         ia < 0 ? (emb ? "lora_embedding_B" : "lora_B.weight") : (emb ? "lora_embedding_A" : "lora_A.weight"),
                         ia < 0 ? (emb ? "lora_embedding_A" : "lora_A.weight") : (emb ? "lora_embedding_B" : "lora_B.weight"));
            if (pp[PART_BIAS] >= 0 && !lin) s = mk_error(MK_ERR_FORMAT, "%s: module %s has lora_B.bias but no lora_A/lora_B", what, m->module);
            break;
        }
        m->a = (size_t)ia;
        m->b = (size_t)ib;
        m->bias = pp[PART_BIAS];
        mk_peft_module_ra(c, m->module, &m->r, &m->alpha);
        m->scale = mk_peft_scaling(c->use_rslora, m->r, m->alpha);
        const mk_tensor_info *A = &t[ia], *B = &t[ib];
        char sa[160], sb[160];
        if (!mk_dtype_info(A->dtype)->is_float || !mk_dtype_info(B->dtype)->is_float) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: LoRA tensors must be floating point, found %s and %s", what,
                         m->module, mk_dtype_name(A->dtype), mk_dtype_name(B->dtype));
            break;
        }
        if (A->ndim != 2 || B->ndim != 2) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: A %s and B %s must be matrices", what, m->module,
                         mk_shape_str(A, sa), mk_shape_str(B, sb));
            break;
        }
        if (A->shape[0] != m->r || B->shape[1] != m->r) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: r = %ld (from %s) but A is %s and B is %s (expected [%ld, in] and [out, %ld])",
                         what, m->module, m->r, c->n_rank ? "r / rank_pattern" : "r", mk_shape_str(A, sa),
                         mk_shape_str(B, sb), m->r, m->r);
            break;
        }
        if (A->shape[1] <= 0 || B->shape[0] <= 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: empty LoRA tensors A %s, B %s", what, m->module, mk_shape_str(A, sa),
                         mk_shape_str(B, sb));
            break;
        }
        if (m->bias >= 0) {
            const mk_tensor_info *bi = &t[m->bias];
            if (bi->ndim != 1 || bi->shape[0] != B->shape[0] || !mk_dtype_info(bi->dtype)->is_float) {
                s = mk_error(MK_ERR_FORMAT, "%s: module %s: lora_B.bias is %s %s, expected a float vector [%lld]", what,
                             m->module, mk_dtype_name(bi->dtype), mk_shape_str(bi, sa), (long long)B->shape[0]);
                break;
            }
        }
        if (!mk_peft_targets(c, m->module) && c->targets.kind != MK_PEFT_MATCH_ALL_LINEAR) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s has LoRA tensors but is not among target_modules (PEFT would ignore them)",
                         what, m->module);
            break;
        }
    }
    free(parts);
    if (s == MK_OK) qsort(out->m, out->n_modules, sizeof *out->m, cmp_module);
    if (s != MK_OK) mk_peft_layout_free(out);
    return s;
}

void mk_peft_layout_free(mk_peft_layout *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n_modules; i++) free(l->m ? l->m[i].module : NULL);
    for (size_t i = 0; i < l->n_full; i++) free(l->full ? l->full[i].name : NULL);
    free(l->m);
    free(l->full);
    memset(l, 0, sizeof *l);
}

/* ---- adapter folder ---------------------------------------------------------------------- */

mk_status mk_peft_open(const char *path, mk_peft_adapter **out)
{
    *out = NULL;
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such adapter folder", path);
    mk_peft_adapter *a = mk_calloc(1, sizeof *a);
    if (!a) return MK_ERR_NOMEM;
    char *dir = mk_is_dir(path) ? mk_strdup(path) : mk_path_dirname(path);
    a->path = mk_strdup(path);
    mk_status s = dir && a->path ? MK_OK : MK_ERR_NOMEM;
    mk_modeldir md = {0};
    char *text = NULL, *wpath = NULL;
    size_t len = 0;
    if (s == MK_OK) s = mk_modeldir_open(&md, dir, false);
    if (s == MK_OK) s = mk_modeldir_read(&md, MK_PEFT_CONFIG, MAX_CONFIG, &text, &len);
    if (s == MK_OK && !text) {
        s = mk_modeldir_resolve(&md, "model.safetensors", &wpath) == MK_OK
                ? mk_error(MK_ERR_FORMAT, "%s: no %s here; this looks like a full model, not a LoRA adapter", dir, MK_PEFT_CONFIG)
                : mk_error(MK_ERR_FORMAT, "%s: no %s (not a PEFT adapter folder)", dir, MK_PEFT_CONFIG);
        free(wpath);
        wpath = NULL;
    }
    if (s == MK_OK) {
        a->config_path = mk_path_join(dir, MK_PEFT_CONFIG);
        if (!a->config_path) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) s = mk_peft_config_parse(text, len, a->config_path, &a->cfg);
    bool pickled = false;
    if (s == MK_OK && mk_modeldir_resolve(&md, MK_PEFT_WEIGHTS, &wpath) != MK_OK) {
        mk_error_clear();
        /* PEFT's torch.save fallback, read without unpickling (torchbin.h) */
        pickled = mk_modeldir_resolve(&md, MK_PEFT_WEIGHTS_BIN, &wpath) == MK_OK;
        if (!pickled) s = mk_error(MK_ERR_FORMAT, "%s: no %s or %s", dir, MK_PEFT_WEIGHTS, MK_PEFT_WEIGHTS_BIN);
    }
    if (s == MK_OK) s = pickled ? mk_torchbin_open(wpath, &a->src) : mk_safetensors_open(wpath, &a->src);
    if (s == MK_OK) {
        /* the adapter's config travels with its weights for provenance */
        char **files = mk_realloc_array(a->src->files, a->src->n_files + 1, sizeof *files);
        if (!files) s = MK_ERR_NOMEM;
        else {
            a->src->files = files;
            files[a->src->n_files] = mk_strdup(a->config_path);
            if (!files[a->src->n_files]) s = MK_ERR_NOMEM;
            else a->src->n_files++;
        }
    }
    if (s == MK_OK) s = mk_peft_layout_build(&a->cfg, a->src->tensors, a->src->n_tensors, wpath, &a->lay);
    free(text);
    free(wpath);
    free(dir);
    mk_modeldir_free(&md);
    if (s != MK_OK) {
        mk_peft_close(a);
        return s;
    }
    *out = a;
    return MK_OK;
}

void mk_peft_close(mk_peft_adapter *a)
{
    if (!a) return;
    mk_peft_layout_free(&a->lay);
    mk_source_close(a->src);
    mk_peft_config_free(&a->cfg);
    free(a->path);
    free(a->config_path);
    free(a);
}

/* ---- binding ----------------------------------------------------------------------------- */

long mk_peft_base_find(mk_source *base, const mk_arch *arch, const char *name)
{
    long i = mk_source_find(base, name);
    if (i >= 0 || !arch) return i;
    char *alias = mk_arch_alias(arch, name);
    if (alias) i = mk_source_find(base, alias);
    free(alias);
    return i;
}

/* Whether a 2-D weight of the base is module `want` or ends with ".want". */
static bool base_has_module(mk_source *base, const char *want)
{
    size_t wl = strlen(want);
    for (size_t i = 0; i < base->n_tensors; i++) {
        const char *nm = base->tensors[i].name;
        if (!mk_str_ends_with(nm, ".weight")) continue;
        size_t ml = strlen(nm) - 7;
        if (ml == wl && memcmp(nm, want, wl) == 0) return true;
        if (ml > wl && nm[ml - wl - 1] == '.' && memcmp(nm + ml - wl, want, wl) == 0) return true;
    }
    return false;
}

/* A list entry of target_modules must match some module of the base (PEFT: "Target modules
 * {...} not found in the base model"), under either spelling of its path. */
static mk_status check_targets_exist(const mk_peft_adapter *a, mk_source *base, const mk_arch *arch)
{
    const mk_peft_config *c = &a->cfg;
    if (c->targets.kind != MK_PEFT_MATCH_LIST) return MK_OK;
    for (size_t k = 0; k < c->targets.n; k++) {
        const char *want = c->targets.names[k];
        bool found = base_has_module(base, want);
        char *alias = !found && arch ? mk_arch_alias(arch, want) : NULL;
        if (alias) found = base_has_module(base, alias);
        free(alias);
        if (!found)
            return mk_error(MK_ERR_FORMAT, "%s: target module '%s' is not in the base model %s", a->config_path, want,
                            base->path);
    }
    return MK_OK;
}

mk_status mk_peft_bind(const mk_peft_adapter *a, mk_source *base, mk_peft_binding *out)
{
    memset(out, 0, sizeof *out);
    const mk_peft_layout *l = &a->lay;
    const mk_tensor_info *at = a->src->tensors;
    const char *what = a->src->files[0];
    /* the base's architecture: Conv1D layout, and the other spelling of its tensor names */
    mk_arch arch_v = {0}, *arch = &arch_v;
    if (mk_arch_of_source(base, arch) != MK_OK) {
        mk_error_clear();
        mk_arch_free(arch);
        arch = NULL;
    }
    bool conv1d = arch && mk_arch_is_conv1d(arch);
    out->t = mk_calloc(l->n_modules ? l->n_modules : 1, sizeof *out->t);
    out->x = mk_calloc(l->n_full + l->n_modules + 1, sizeof *out->x);
    mk_status s = out->t && out->x ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) s = check_targets_exist(a, base, arch);
    bool warned_fifo = false;
    for (size_t k = 0; k < l->n_modules && s == MK_OK; k++) {
        const mk_peft_module *m = &l->m[k];
        char *wname = mk_asprintf("%s.weight", m->module);
        if (!wname) {
            s = MK_ERR_NOMEM;
            break;
        }
        long bi = mk_peft_base_find(base, arch, wname);
        if (bi < 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: the base model %s has no tensor %s", what, m->module, base->path, wname);
            free(wname);
            break;
        }
        const mk_tensor_info *W = &base->tensors[bi], *A = &at[m->a], *B = &at[m->b];
        bool transposed = m->embedding || conv1d;
        if (!m->embedding && conv1d != a->cfg.fan_in_fan_out && !warned_fifo) {
            mk_warn("%s: fan_in_fan_out is %s but the base's %s layers are %s; using %s, as PEFT does", a->config_path,
                    a->cfg.fan_in_fan_out ? "true" : "false", conv1d ? "Conv1D" : "Linear", conv1d ? "Conv1D" : "Linear",
                    conv1d ? "true" : "false");
            warned_fifo = true;
        }
        /* delta = B A is [B rows, A cols]; transposed: [A cols, B rows] */
        int64_t rows = transposed ? A->shape[1] : B->shape[0], cols = transposed ? B->shape[0] : A->shape[1];
        char sw[160], sa[160], sb[160];
        if (W->ndim != 2 || W->shape[0] != rows || W->shape[1] != cols) {
            s = mk_error(MK_ERR_FORMAT, "%s: module %s: A %s and B %s give a [%lld, %lld] update, but the base's %s is %s", what,
                         m->module, mk_shape_str(A, sa), mk_shape_str(B, sb), (long long)rows, (long long)cols, wname,
                         mk_shape_str(W, sw));
            free(wname);
            break;
        }
        if (!mk_dtype_info(W->dtype)->is_float) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: module %s: the base's %s is %s, not a float dtype", what, m->module, wname,
                         mk_dtype_name(W->dtype));
            free(wname);
            break;
        }
        free(wname);
        mk_peft_bound *bd = &out->t[out->n++];
        bd->base = (size_t)bi;
        bd->a = m->a;
        bd->b = m->b;
        bd->transposed = transposed;
        bd->r = m->r;
        bd->scale = m->scale;
        bd->wsrc = -1;
        bd->round_update = m->embedding;
        if (m->bias >= 0) {
            if (!a->cfg.lora_bias) {
                mk_warn("%s: module %s has lora_B.bias but lora_bias is false; PEFT ignores it and so do we", what, m->module);
                continue;
            }
            char *bname = mk_asprintf("%s.bias", m->module);
            if (!bname) {
                s = MK_ERR_NOMEM;
                break;
            }
            long bb = mk_peft_base_find(base, arch, bname);
            if (bb < 0 || base->tensors[bb].numel != at[m->bias].numel)
                s = mk_error(MK_ERR_FORMAT, "%s: module %s has lora_B.bias but the base has no matching %s", what, m->module,
                             bname);
            free(bname);
            if (s != MK_OK) break;
            mk_peft_bound_extra *x = &out->x[out->n_extra++];
            x->base = (size_t)bb;
            x->src = (size_t)m->bias;
            x->add = true;
            x->scale = m->scale;
        }
    }
    for (size_t k = 0; k < l->n_full && s == MK_OK; k++) {
        const mk_peft_full *f = &l->full[k];
        long bi = mk_peft_base_find(base, arch, f->name);
        const mk_tensor_info *F = &at[f->index];
        char sf[160], sw[160];
        if (bi < 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s%s replaces %s, which the base model %s does not have", what,
                         MK_PEFT_PREFIX, f->name, f->name, base->path);
            break;
        }
        const mk_tensor_info *W = &base->tensors[bi];
        if (!mk_shape_eq(W, F)) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s%s is %s but the base's %s is %s (resize the base's embeddings first?)",
                         what, MK_PEFT_PREFIX, f->name, mk_shape_str(F, sf), f->name, mk_shape_str(W, sw));
            break;
        }
        bool updated = false;
        for (size_t q = 0; q < out->n; q++)
            if (out->t[q].base == (size_t)bi) {
                out->t[q].wsrc = (long)f->index; /* replaced, then updated */
                updated = true;
            }
        if (updated) continue;
        mk_peft_bound_extra *x = &out->x[out->n_extra++];
        x->base = (size_t)bi;
        x->src = f->index;
        x->add = false;
        x->scale = 1;
    }
    mk_arch_free(arch);
    if (s != MK_OK) mk_peft_binding_free(out);
    return s;
}

void mk_peft_binding_free(mk_peft_binding *b)
{
    if (!b) return;
    free(b->t);
    free(b->x);
    memset(b, 0, sizeof *b);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

char *mk_peft_config_text(const char *base_model, long r, const mk_peft_out_module *m, size_t n,
                          const char *const *modules_to_save, size_t n_save, bool lora_bias, bool layer_bias,
                          bool fan_in_fan_out)
{
    /* target_modules: distinct last components, sorted (deterministic output) */
    const char **last = mk_calloc(n ? n : 1, sizeof *last);
    if (!last) return NULL;
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *d = strrchr(m[i].module, '.');
        last[nl++] = d ? d + 1 : m[i].module;
    }
    qsort(last, nl, sizeof *last, cmp_cstr);
    mk_buf b = {0};
    mk_buf_puts(&b, "{\n  \"alpha_pattern\": {");
    for (int pass = 0; pass < 2; pass++) {
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            if (m[i].r == r) continue;
            mk_buf_puts(&b, first ? "\n    " : ",\n    ");
            first = false;
            mk_buf_json_str(&b, m[i].module);
            mk_buf_printf(&b, ": %ld", m[i].r);
        }
        mk_buf_puts(&b, first ? "}" : "\n  }");
        if (pass == 0) {
            mk_buf_puts(&b, ",\n  \"base_model_name_or_path\": ");
            if (base_model) mk_buf_json_str(&b, base_model);
            else mk_buf_puts(&b, "null");
            mk_buf_printf(&b, ",\n  \"bias\": \"%s\",\n  \"fan_in_fan_out\": %s,\n  \"inference_mode\": true,\n",
                          layer_bias ? "lora_only" : "none", fan_in_fan_out ? "true" : "false");
            mk_buf_printf(&b, "  \"lora_alpha\": %ld,\n  \"lora_bias\": %s,\n  \"lora_dropout\": 0.0,\n  \"modules_to_save\": ",
                          r, lora_bias ? "true" : "false");
            if (n_save) {
                mk_buf_puts(&b, "[");
                for (size_t i = 0; i < n_save; i++) {
                    if (i) mk_buf_puts(&b, ", ");
                    mk_buf_json_str(&b, modules_to_save[i]);
                }
                mk_buf_puts(&b, "]");
            } else {
                mk_buf_puts(&b, "null");
            }
            mk_buf_printf(&b, ",\n  \"peft_type\": \"LORA\",\n  \"r\": %ld,\n  \"rank_pattern\": {", r);
        }
    }
    mk_buf_puts(&b, ",\n  \"target_modules\": [");
    size_t w = 0;
    for (size_t i = 0; i < nl; i++) {
        if (i && strcmp(last[i], last[i - 1]) == 0) continue;
        mk_buf_puts(&b, w++ ? ", " : "");
        mk_buf_json_str(&b, last[i]);
    }
    mk_buf_puts(&b, "],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n  \"use_rslora\": false\n}\n");
    free(last);
    if (b.failed) {
        mk_buf_free(&b);
        mk_error(MK_ERR_NOMEM, "out of memory building adapter_config.json");
        return NULL;
    }
    return b.data;
}
