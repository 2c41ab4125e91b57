/* quant.c - see quant.h: the plan. Which tensors are quantized (the generic rules, then
 * the format's own), the stored tensor list (each format lays out its weights), the
 * quantization_config text (each format writes its own), and Python's float repr.
 * Must not: know what any format stores; that is its family's (qformat.h).
 */
#include "qformat.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- selection ----------------------------------------------------------------------------- */

/* A comma-separated list; a pattern with * ? or [ is a glob over the whole name,
 * otherwise a substring (as mergekit's filters). */
static bool name_matches(const char *list, const char *name)
{
    if (!list || !*list) return false;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char pat[512];
        if (len && len < sizeof pat) {
            memcpy(pat, p, len);
            pat[len] = 0;
            bool glob = strpbrk(pat, "*?[") != NULL;
            if (glob ? fnmatch(pat, name, 0) == 0 : strstr(name, pat) != NULL) return true;
        }
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static bool is_weight_matrix(const mk_tensor_info *t)
{
    return t->ndim == 2 && mk_str_ends_with(t->name, ".weight") && strlen(t->name) > 7 &&
           (t->dtype == MK_BF16 || t->dtype == MK_F16 || t->dtype == MK_F32) && t->numel > 0;
}

mk_status mk_qplan_init(mk_qplan *p, const mk_qopts *o, const mk_arch *arch, const mk_tensor_info *in, size_t n)
{
    memset(p, 0, sizeof *p);
    p->o = *o;
    p->n = n;
    if (!o->fam) MK_BUG("quantization plan from unresolved options");
    p->in = mk_calloc(n ? n : 1, sizeof *p->in);
    p->t = mk_calloc(n ? n : 1, sizeof *p->t);
    if (!p->in || !p->t) return MK_ERR_NOMEM;
    memcpy(p->in, in, n * sizeof *in);
    MK_TRY(mk_name_index_build(&p->index, p->in, n, NULL));
    for (size_t i = 0; i < n; i++) {
        const mk_tensor_info *ti = &in[i];
        mk_qtensor *q = &p->t[i];
        q->wdtype = ti->dtype;
        q->numel = ti->numel;
        q->cols = mk_tensor_cols(ti);
        q->rows = mk_tensor_rows(ti);
        p->in_bytes += ti->nbytes;
        q->role = mk_arch_role(arch, ti->name).role;
        if (!is_weight_matrix(ti)) continue;
        /* embedding tables are never Linear layers, and the loaders leave lm_head alone
         * (transformers skips the output embeddings; compressed-tensors presets ignore it) */
        bool forced = name_matches(o->include, ti->name);
        if (name_matches(o->skip, ti->name)) q->kept_why = "--skip";
        else if (mk_role_is_embedding(q->role) && !forced) q->kept_why = "embedding";
        else if (q->role == MK_ROLE_LM_HEAD && !forced) q->kept_why = "lm_head";
        else if (o->fam->select) q->kept_for_shape = (q->kept_why = o->fam->select(p, i, NULL)) != NULL;
        p->n_weights++;
        p->n_kept_shape += q->kept_for_shape;
        if (q->kept_why) continue;
        q->quantized = true;
        p->n_quantized++;
        p->q_numel += q->numel;
    }
    if (p->n_kept_shape && p->n_quantized) {
        size_t warned = 0;
        for (size_t i = 0; i < n; i++)
            if (p->t[i].kept_for_shape) (void)o->fam->select(p, i, &warned);
        if (warned > 8) mk_warn("... and %zu more weights kept for their shape", warned - 8);
        char note[256] = "", desc[160];
        if (o->fam->kept_note) o->fam->kept_note(p, false, note, sizeof note);
        mk_warn("%s: %zu of %zu weights quantized, %zu kept unquantized for their shape%s%s", mk_qopts_describe(o, desc),
                p->n_quantized, p->n_weights, p->n_kept_shape, *note ? ": " : "", note);
    }
    return MK_OK;
}

mk_status mk_qplan_check(const mk_qplan *p)
{
    if (p->n_quantized) return MK_OK;
    size_t skip = 0, kept = 0; /* by --skip; embeddings and lm_head */
    for (size_t i = 0; i < p->n; i++) {
        const char *why = p->t[i].kept_why;
        if (!why || p->t[i].kept_for_shape) continue;
        if (!strcmp(why, "--skip")) skip++;
        else kept++;
    }
    char why[320] = "", desc[160];
    if (p->n_kept_shape && p->o.fam->kept_note) {
        p->o.fam->kept_note(p, true, why, sizeof why);
    } else if (p->n_kept_shape) {
        snprintf(why, sizeof why, "all %zu weights are kept for their shape", p->n_kept_shape);
    } else if (skip) {
        snprintf(why, sizeof why, "--skip keeps %s%zu weight%s%s", skip == p->n_weights ? "all " : "", skip, skip == 1 ? "" : "s",
                 kept ? ", and embeddings and lm_head are kept unless --include names them" : "");
    } else if (kept) {
        snprintf(why, sizeof why, "its only weight matrices are embeddings or lm_head (%zu), kept unless --include names them", kept);
    } else {
        snprintf(why, sizeof why, "none of its %zu tensors is a 2-D float weight matrix", p->n);
    }
    return mk_error(MK_ERR_USAGE, "%s quantizes no weight: %s", mk_qopts_describe(&p->o, desc), why);
}

bool mk_qplan_wants_offset(const mk_qplan *p, size_t i)
{
    const mk_qfamily *f = p->o.fam;
    return p->t[i].quantized && !p->t[i].has_offset && f->offset_scratch && f->offset_scratch(p, i) > 0;
}

void mk_qplan_set_offset(mk_qplan *p, size_t i, float offset)
{
    p->t[i].has_offset = true;
    p->t[i].offset = offset;
}

/* ---- Python float repr ----------------------------------------------------------------------- */

const char *mk_fmt_pyfloat(double v, char buf[40])
{
    if (v != v) return strcpy(buf, "NaN");
    if (isinf(v)) return strcpy(buf, v < 0 ? "-Infinity" : "Infinity");
    if (v == 0) return strcpy(buf, signbit(v) ? "-0.0" : "0.0");
    char e[40];
    int prec;
    for (prec = 0; prec < 17; prec++) { /* fewest significant digits that round-trip */
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e = "[-]d[.ddd]e[+-]XX": digits and decimal exponent */
    char digits[24];
    size_t nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    digits[nd] = 0;
    int exp10 = atoi(q + 1);
    char *o = buf;
    if (neg) *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) { /* Python repr switches to exponent form here */
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, nd - 1);
            o += nd - 1;
        }
        int ax = exp10 < 0 ? -exp10 : exp10; /* |exponent| <= 324 for a double */
        snprintf(o, 16, "e%c%02d", exp10 < 0 ? '-' : '+', ax % 1000);
        return buf;
    }
    if (exp10 < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int k = 0; k < -exp10 - 1; k++) *o++ = '0';
        memcpy(o, digits, nd);
        o += nd;
    } else {
        for (int k = 0; k <= exp10; k++) *o++ = (size_t)k < nd ? digits[k] : '0';
        *o++ = '.';
        if ((size_t)exp10 + 1 < nd) {
            memcpy(o, digits + exp10 + 1, nd - (size_t)exp10 - 1);
            o += nd - (size_t)exp10 - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = 0;
    return buf;
}

/* ---- layout ------------------------------------------------------------------------------------ */

mk_status mk_qplan_add_out(mk_qplan *p, char *name, mk_dtype dt, int ndim, const int64_t *shape)
{
    if (!name) return MK_ERR_NOMEM;
    if (p->n_out == p->out_cap) {
        size_t nc = p->out_cap ? p->out_cap * 2 : 64;
        mk_tensor_info *o = mk_realloc_array(p->out, nc, sizeof *o);
        if (!o) {
            free(name);
            return MK_ERR_NOMEM;
        }
        p->out = o;
        p->out_cap = nc;
    }
    mk_tensor_info *t = &p->out[p->n_out++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    MK_TRY(mk_tensor_info_finish(t));
    p->out_bytes += t->nbytes;
    return MK_OK;
}

/* The module of weight "P.weight": "P". */
static char *module_name(const char *weight_name)
{
    size_t n = strlen(weight_name);
    return mk_strndup(weight_name, n - 7);
}

mk_status mk_qplan_layout(mk_qplan *p)
{
    for (size_t i = 0; i < p->n_out; i++) free(p->out[i].name);
    p->n_out = 0;
    p->out_bytes = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_tensor_info *ti = &p->in[i];
        mk_qtensor *q = &p->t[i];
        q->out0 = p->n_out;
        if (!q->quantized) {
            MK_TRY(mk_qplan_add_out(p, mk_strdup(ti->name), ti->dtype, ti->ndim, ti->shape));
        } else {
            char *mod = module_name(ti->name);
            if (!mod) return MK_ERR_NOMEM;
            mk_status s = p->o.fam->stored(p, i, mod);
            free(mod);
            MK_TRY(s);
        }
        q->nout = p->n_out - q->out0;
    }
    return MK_OK;
}

void mk_qplan_free(mk_qplan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_out; i++) free(p->out[i].name);
    for (size_t i = 0; p->t && i < p->n; i++) free(p->t[i].json);
    free(p->out);
    free(p->t);
    free(p->in);
    mk_name_index_free(&p->index);
    memset(p, 0, sizeof *p);
}

/* ---- quantization_config ------------------------------------------------------------------------ */

bool mk_qplan_module_list(const mk_qplan *p, mk_buf *b)
{
    size_t n = 0;
    bool lm_quantized = false;
    mk_buf_puts(b, "[");
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->in[i].name;
        if (strcmp(nm, "lm_head.weight") == 0 && p->t[i].quantized) lm_quantized = true;
    }
    if (!lm_quantized) {
        mk_buf_puts(b, "\n    \"lm_head\"");
        n++;
    }
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->in[i].name;
        if (!is_weight_matrix(&p->in[i]) || p->t[i].quantized || mk_role_is_embedding(p->t[i].role) || strcmp(nm, "lm_head.weight") == 0)
            continue;
        char *mod = module_name(nm);
        if (!mod) {
            b->failed = true;
            break;
        }
        mk_buf_puts(b, n++ ? ",\n    " : "\n    ");
        mk_buf_json_str(b, mod);
        free(mod);
    }
    mk_buf_puts(b, n ? "\n  ]" : "]");
    return n == 1 && !lm_quantized;
}

char *mk_qplan_config_json(const mk_qplan *p)
{
    mk_buf b = {0};
    p->o.fam->config_json(p, &b);
    if (b.failed) {
        mk_buf_free(&b);
        mk_error(MK_ERR_NOMEM, "out of memory building quantization_config");
        return NULL;
    }
    return b.data;
}

const char *mk_qplan_load_hint(const mk_qplan *p) { return p->o.fam->card; }
