/* cmd_compare.c - `mergekit-c compare GOT WANT`: compare two checkpoints tensor by tensor
 * (any formats we read), with named tolerances, reporting the worst element of every
 * tensor (index, got, want). Exit 0 when within tolerance, 1 otherwise.
 *
 * An element passes when it is bit-equal after converting both values to WANT's dtype,
 * or within --max-ulp units in the last place of that dtype, or within --rel times the
 * largest magnitude in WANT's tensor. --max-diff-share bounds the share of elements that
 * may differ at all; --max-bad-share lets that share of a tensor's elements be out of
 * tolerance (for methods whose per-element decisions sit on a rounding knife-edge).
 */
#include "cli.h"

#include "../core/mk_compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Counts over the whole comparison, and the --json document being built. */
typedef struct cmp_run {
    const mk_common *c;
    const mk_cmp_tol *tol;
    size_t n_bad_tensors, compared;
    uint64_t total, total_differ;
    mk_buf json;
    bool first;
} cmp_run;

/* A JSON number, or null for NaN and infinities (JSON has neither). */
static void json_num(mk_buf *b, double v)
{
    if (isfinite(v)) mk_buf_printf(b, "%.9g", v);
    else mk_buf_puts(b, "null");
}

/* One tensor's line (text) or entry (JSON): status "ok", "out_of_tolerance", "missing",
 * "shape" or "extra". */
static void report(cmp_run *r, const char *name, const char *status, const mk_cmp_stats *st, const char *detail)
{
    bool bad = strcmp(status, "ok") != 0;
    if (bad) r->n_bad_tensors++;
    if (r->c->json) {
        mk_buf *b = &r->json;
        mk_buf_puts(b, r->first ? "\n    {\"name\": " : ",\n    {\"name\": ");
        r->first = false;
        mk_buf_json_str(b, name);
        mk_buf_printf(b, ", \"status\": \"%s\"", status);
        if (detail) {
            mk_buf_puts(b, ", \"detail\": ");
            mk_buf_json_str(b, detail);
        }
        if (st) {
            mk_buf_printf(b, ", \"elements\": %llu, \"differ\": %llu, \"out_of_tolerance\": %llu, \"max_abs_diff\": ",
                          (unsigned long long)st->n, (unsigned long long)st->differ, (unsigned long long)st->bad);
            json_num(b, st->max_abs);
            mk_buf_printf(b, ", \"max_ulp\": %lld, \"worst\": {\"index\": %llu, \"got\": ", (long long)st->max_ulp,
                          (unsigned long long)st->worst_i);
            json_num(b, st->worst_got);
            mk_buf_puts(b, ", \"want\": ");
            json_num(b, st->worst_want);
            mk_buf_puts(b, "}");
        }
        mk_buf_puts(b, "}");
        return;
    }
    if (!st) printf("%s: %s\n", name, detail);
    else if (bad)
        printf("%s: %llu of %llu elements differ (%llu out of tolerance), max |diff| %.9g, max ulp %lld; "
               "worst at [%llu]: got %.9g, want %.9g\n",
               name, (unsigned long long)st->differ, (unsigned long long)st->n, (unsigned long long)st->bad, st->max_abs,
               (long long)st->max_ulp, (unsigned long long)st->worst_i, (double)st->worst_got, (double)st->worst_want);
    else if (r->c->verbose && st->differ)
        printf("%s: %llu of %llu elements differ, max |diff| %.9g, max ulp %lld (within tolerance)\n", name,
               (unsigned long long)st->differ, (unsigned long long)st->n, st->max_abs, (long long)st->max_ulp);
}

/* Every tensor of WANT against GOT's tensor of the same name; then GOT's extras. */
static mk_status compare_all(cmp_run *r, mk_source *a, mk_source *b, bool subset, const char *got_path,
                             const char *want_path)
{
    char detail[400];
    for (size_t i = 0; i < b->n_tensors; i++) {
        const mk_tensor_info *tb = &b->tensors[i];
        long ia = mk_source_find(a, tb->name);
        if (ia < 0) {
            snprintf(detail, sizeof detail, "missing from %s", got_path);
            report(r, tb->name, "missing", NULL, detail);
            continue;
        }
        const mk_tensor_info *ta = &a->tensors[ia];
        char sa[160], sb[160];
        if (!mk_shape_eq(ta, tb)) {
            snprintf(detail, sizeof detail, "shape %s, want %s", mk_shape_str(ta, sa), mk_shape_str(tb, sb));
            report(r, tb->name, "shape", NULL, detail);
            continue;
        }
        mk_cmp_stats st;
        MK_TRY(mk_compare_tensor(a, (size_t)ia, b, i, r->tol, &st));
        r->total += st.n;
        r->total_differ += st.differ;
        r->compared++;
        report(r, tb->name, st.out_of_tolerance ? "out_of_tolerance" : "ok", &st, NULL);
    }
    for (size_t i = 0; i < a->n_tensors && !subset; i++)
        if (mk_source_find(b, a->tensors[i].name) < 0) {
            snprintf(detail, sizeof detail, "not in %s", want_path);
            report(r, a->tensors[i].name, "extra", NULL, detail);
        }
    return MK_OK;
}

int mk_cmd_compare(int argc, char **argv)
{
    mk_common c = {0};
    mk_cmp_tol tol = {0, 0, 1, 0};
    bool subset = false;
    const mk_opt opts[] = {
        {"rel", 0, MK_OPT_DOUBLE, &tol.rel, "R", "allow |got - want| <= R x (largest |want| in the tensor)", "0"},
        {"max-ulp", 0, MK_OPT_INT, &tol.max_ulp, "N", "allow N units in the last place of WANT's dtype", "0"},
        {"max-diff-share", 0, MK_OPT_DOUBLE, &tol.diff_share, "S", "allow at most this share of elements to differ at all", "1"},
        {"max-bad-share", 0, MK_OPT_DOUBLE, &tol.bad_share, "S", "allow this share of a tensor's elements to be out of tolerance",
         "0"},
        {"subset", 0, MK_OPT_FLAG, &subset, NULL, "GOT may have tensors WANT lacks", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {"compare", "GOT WANT [options]",
                              "Compare two checkpoints tensor by tensor; print each tensor that is out of tolerance with its\n"
                              "worst element (index, got, want). Exit 0 when all are within tolerance, 1 otherwise.",
                              "--json prints one document: every tensor with its status (ok, out_of_tolerance, missing,\n"
                              "shape, extra), counts, largest difference and worst element, and the totals.",
                              opts, 2, 2, 0x3};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    mk_source *a = NULL, *b = NULL;
    mk_status s = mk_cli_open_model_values(pos[0], &a);
    if (s == MK_OK) s = mk_cli_open_model_values(pos[1], &b);
    cmp_run r = {&c, &tol, 0, 0, 0, 0, {0}, true};
    if (s == MK_OK) s = compare_all(&r, a, b, subset, pos[0], pos[1]);
    mk_source_close(a);
    mk_source_close(b);
    if (s != MK_OK) {
        mk_buf_free(&r.json);
        return mk_cli_fail(s);
    }
    if (c.json) {
        printf("{\"got\": ");
        mk_buf h = {0};
        mk_buf_json_str(&h, pos[0]);
        mk_buf_puts(&h, ", \"want\": ");
        mk_buf_json_str(&h, pos[1]);
        printf("%s, \"tolerance\": {\"rel\": %.9g, \"max_ulp\": %ld, \"max_diff_share\": %.9g, \"max_bad_share\": %.9g},\n"
               "  \"tensors\": [%s\n  ],\n  \"compared\": %zu, \"elements\": %llu, \"differ\": %llu, \"out_of_tolerance\": %zu}\n",
               h.data ? h.data : "", tol.rel, tol.max_ulp, tol.diff_share, tol.bad_share, r.json.data ? r.json.data : "",
               r.compared, (unsigned long long)r.total, (unsigned long long)r.total_differ, r.n_bad_tensors);
        mk_buf_free(&h);
    } else {
        printf("compared %zu tensors, %llu elements: %llu differ, %zu tensor(s) out of tolerance (rel %g, max-ulp %ld, "
               "max-diff-share %g, max-bad-share %g)\n",
               r.compared, (unsigned long long)r.total, (unsigned long long)r.total_differ, r.n_bad_tensors, tol.rel,
               tol.max_ulp, tol.diff_share, tol.bad_share);
    }
    mk_buf_free(&r.json);
    return r.n_bad_tensors ? 1 : 0;
}
