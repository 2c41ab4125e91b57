/* quant.c - see quant.h: the format table, options, the plan (tensor selection and the
 * stored layout) and the quantization_config text. */
#include "quant.h"
#include "bnb.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const mk_qformat_info MK_QFORMATS[MK_QF_COUNT] = {
    [MK_QF_NF4] = {"nf4", "4-bit NormalFloat, blocks of 64 with f32 absmax (bitsandbytes, QLoRA)", 4, MK_QT_BNB, true, false},
    [MK_QF_FP4] = {"fp4", "4-bit float (E2M1-style), blocks of 64 with f32 absmax (bitsandbytes)", 4, MK_QT_BNB, true, false},
    [MK_QF_INT8] = {"int8", "8-bit integers, one scale per row (LLM.int8; or compressed-tensors W8A16)", 8, MK_QT_BNB, true, true},
    [MK_QF_INT4] = {"int4", "4-bit integers, one scale per 128 columns (compressed-tensors W4A16)", 4, MK_QT_CT, false, true},
    [MK_QF_FP8] = {"fp8", "FP8 E4M3, one scale per row (compressed-tensors FP8_DYNAMIC)", 8, MK_QT_CT, false, true},
    [MK_QF_FP8_E5M2] = {"fp8-e5m2", "FP8 E5M2, one scale per row (compressed-tensors layout)", 8, MK_QT_CT, false, true},
};

/* compressed-tensors version whose config we write (tools/venv-versions.txt). */
#define CT_VERSION "0.20.1"

int mk_qformat_find(const char *name)
{
    for (int i = 0; i < MK_QF_COUNT; i++)
        if (strcmp(name, MK_QFORMATS[i].name) == 0) return i;
    return -1;
}

mk_status mk_qopts_resolve(mk_qopts *o, bool streaming)
{
    const mk_qformat_info *f = &MK_QFORMATS[o->fmt];
    if (o->target == MK_QT_DEFAULT) o->target = f->target;
    if (o->target == MK_QT_BNB && !f->allow_bnb)
        return mk_error(MK_ERR_USAGE, "--target bitsandbytes: format %s is only written for compressed-tensors", f->name);
    if (o->target == MK_QT_CT && !f->allow_ct)
        return mk_error(MK_ERR_USAGE, "--target compressed-tensors: format %s is only written for bitsandbytes", f->name);
    bool bnb4 = o->fmt == MK_QF_NF4 || o->fmt == MK_QF_FP4;
    bool ct_int = o->target == MK_QT_CT && (o->fmt == MK_QF_INT4 || o->fmt == MK_QF_INT8);
    bool fp8 = o->fmt == MK_QF_FP8 || o->fmt == MK_QF_FP8_E5M2;
    if (o->block && !bnb4) return mk_error(MK_ERR_USAGE, "--block-size applies to nf4 and fp4, not %s", f->name);
    if (o->double_quant && !bnb4) return mk_error(MK_ERR_USAGE, "--double-quant applies to nf4 and fp4, not %s", f->name);
    if (bnb4) {
        if (!o->block) o->block = 64;
        if (o->block < 32 || o->block > 4096 || (o->block & (o->block - 1)))
            return mk_error(MK_ERR_USAGE, "--block-size must be a power of two from 32 to 4096 (bitsandbytes), got %u", o->block);
    }
    if (o->group >= 0 && !ct_int && !(o->group == 0 && o->fmt == MK_QF_INT8 && o->target == MK_QT_BNB))
        return mk_error(MK_ERR_USAGE, "--group-size applies to int4 and to int8 with --target compressed-tensors, not %s%s",
                        f->name, o->fmt == MK_QF_INT8 ? " for bitsandbytes" : "");
    if (ct_int) {
        if (o->group < 0) o->group = o->fmt == MK_QF_INT4 ? 128 : 0;
        if (o->group > (1L << 20)) return mk_error(MK_ERR_USAGE, "--group-size %ld is too large", o->group);
    } else if (o->group < 0) {
        o->group = 0;
    }
    if (o->asym && !ct_int) return mk_error(MK_ERR_USAGE, "--scheme asym applies to int4 and compressed-tensors int8, not %s", f->name);
    if (o->method == MK_QM_SEARCH && !ct_int)
        return mk_error(MK_ERR_USAGE, "--method search applies to the group-wise integer formats (int4, compressed-tensors int8), not %s",
                        f->name);
    if (o->per_tensor && !fp8) return mk_error(MK_ERR_USAGE, "--per-tensor applies to fp8, not %s", f->name);
    if (o->per_tensor && streaming)
        return mk_error(MK_ERR_USAGE, "fp8 with a per-tensor scale needs the whole tensor before its first value; "
                                      "quantize the merged model instead, or use the per-row default");
    if (o->compute_dtype) {
        mk_dtype d = mk_dtype_from_user(o->compute_dtype);
        if (d != MK_BF16 && d != MK_F16 && d != MK_F32)
            return mk_error(MK_ERR_USAGE, "--compute-dtype: '%s' is not bfloat16, float16 or float32", o->compute_dtype);
        o->compute_dtype = mk_dtype_info(d)->torch_name;
    }
    return MK_OK;
}

mk_status mk_qopts_parse(const char *spec, mk_qopts *o)
{
    memset(o, 0, sizeof *o);
    o->group = -1;
    char *s = mk_strdup(spec);
    if (!s) return MK_ERR_NOMEM;
    mk_status st = MK_OK;
    char *save = NULL;
    char *tok = strtok_r(s, ",", &save);
    int f = tok ? mk_qformat_find(tok) : -1;
    if (f < 0) {
        const char *names[MK_QF_COUNT];
        for (int i = 0; i < MK_QF_COUNT; i++) names[i] = MK_QFORMATS[i].name;
        const char *hint = tok ? mk_did_you_mean(tok, names, MK_QF_COUNT) : NULL;
        st = mk_error(MK_ERR_USAGE, "--quantize: unknown format '%s'%s%s%s (formats: nf4, fp4, int8, int4, fp8, fp8-e5m2)",
                      tok ? tok : "", hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
    } else {
        o->fmt = (mk_qfmt)f;
    }
    while (st == MK_OK && (tok = strtok_r(NULL, ",", &save))) {
        char *eq = strchr(tok, '=');
        const char *val = eq ? eq + 1 : NULL;
        if (eq) *eq = 0;
        char *end = NULL;
        if (strcmp(tok, "double-quant") == 0 && !val) o->double_quant = true;
        else if (strcmp(tok, "per-tensor") == 0 && !val) o->per_tensor = true;
        else if (strcmp(tok, "block-size") == 0 && val) {
            unsigned long v = strtoul(val, &end, 10);
            if (!*val || *end || v > 1u << 20) st = mk_error(MK_ERR_USAGE, "--quantize: block-size expects an integer, got '%s'", val);
            o->block = (unsigned)v;
        } else if (strcmp(tok, "group-size") == 0 && val) {
            long v = strtol(val, &end, 10);
            if (!*val || *end || v < 0) st = mk_error(MK_ERR_USAGE, "--quantize: group-size expects a non-negative integer, got '%s'", val);
            o->group = v;
        } else if (strcmp(tok, "scheme") == 0 && val && (strcmp(val, "sym") == 0 || strcmp(val, "asym") == 0)) {
            o->asym = val[0] == 'a';
        } else if (strcmp(tok, "method") == 0 && val && (strcmp(val, "rtn") == 0 || strcmp(val, "search") == 0)) {
            o->method = val[0] == 's' ? MK_QM_SEARCH : MK_QM_RTN;
        } else if (strcmp(tok, "target") == 0 && val && (strcmp(val, "bnb") == 0 || strcmp(val, "bitsandbytes") == 0)) {
            o->target = MK_QT_BNB;
        } else if (strcmp(tok, "target") == 0 && val && strcmp(val, "compressed-tensors") == 0) {
            o->target = MK_QT_CT;
        } else {
            st = mk_error(MK_ERR_USAGE,
                          "--quantize: unknown setting '%s%s%s' (expected double-quant, per-tensor, block-size=N, group-size=N, "
                          "scheme=sym|asym, method=rtn|search, target=bnb|compressed-tensors)",
                          tok, val ? "=" : "", val ? val : "");
        }
    }
    free(s);
    return st;
}

const char *mk_qopts_describe(const mk_qopts *o, char buf[160])
{
    const mk_qformat_info *f = &MK_QFORMATS[o->fmt];
    int n = snprintf(buf, 160, "%s (%s", f->name, o->target == MK_QT_BNB ? "bitsandbytes" : "compressed-tensors");
    if (o->fmt == MK_QF_NF4 || o->fmt == MK_QF_FP4)
        n += snprintf(buf + n, 160 - (size_t)n, ", block %u%s", o->block, o->double_quant ? ", double quant" : "");
    else if (o->target == MK_QT_CT && (o->fmt == MK_QF_INT4 || o->fmt == MK_QF_INT8)) {
        if (o->group) n += snprintf(buf + n, 160 - (size_t)n, ", group %ld", o->group);
        else n += snprintf(buf + n, 160 - (size_t)n, ", per channel");
        n += snprintf(buf + n, 160 - (size_t)n, ", %s, %s", o->asym ? "asymmetric" : "symmetric",
                      o->method == MK_QM_SEARCH ? "scale search" : "round to nearest");
    } else if (o->fmt == MK_QF_INT8) {
        n += snprintf(buf + n, 160 - (size_t)n, ", per row");
    } else {
        n += snprintf(buf + n, 160 - (size_t)n, ", %s", o->per_tensor ? "per tensor" : "per row");
    }
    snprintf(buf + n, 160 - (size_t)n, ")");
    return buf;
}

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
    p->in = mk_calloc(n ? n : 1, sizeof *p->in);
    p->t = mk_calloc(n ? n : 1, sizeof *p->t);
    if (!p->in || !p->t) return MK_ERR_NOMEM;
    memcpy(p->in, in, n * sizeof *in);
    MK_TRY(mk_name_index_build(&p->index, p->in, n, NULL));
    bool bnb4 = o->fmt == MK_QF_NF4 || o->fmt == MK_QF_FP4;
    size_t warned = 0;
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
        if (q->kept_why) continue;
        if (bnb4) q->kind = MK_QK_BNB4;
        else if (o->fmt == MK_QF_INT8 && o->target == MK_QT_BNB) q->kind = MK_QK_BNB8;
        else if (o->fmt == MK_QF_INT4 || o->fmt == MK_QF_INT8) {
            q->group = o->group ? (uint64_t)o->group : q->cols;
            if (q->cols % q->group) {
                q->kept_why = "columns not a multiple of the group size";
                if (warned++ < 8)
                    mk_warn("%s: %llu columns are not a multiple of the group size %llu (compressed-tensors needs that); "
                            "kept unquantized and listed in \"ignore\"",
                            ti->name, (unsigned long long)q->cols, (unsigned long long)q->group);
                continue;
            }
            q->kind = MK_QK_CT_INT;
        } else {
            q->kind = MK_QK_CT_FP8;
        }
        p->n_quantized++;
        p->q_numel += q->numel;
    }
    if (warned > 8) mk_warn("... and %zu more weights kept for their shape", warned - 8);
    return MK_OK;
}

bool mk_qplan_wants_offset(const mk_qplan *p, size_t i)
{
    return p->t[i].kind == MK_QK_BNB4 && p->o.double_quant && !p->t[i].has_offset;
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

#define PYFLOAT_RESERVE 26 /* longest repr of an f32 widened to double, with sign and exponent */

static char *module_name(const char *weight_name)
{
    size_t n = strlen(weight_name);
    return mk_strndup(weight_name, n - 7); /* without ".weight" */
}

/* bitsandbytes QuantState.as_dict(packed=True) blob: json.dumps with the default
 * separators, keys in insertion order (reference 1.6). */
static char *quant_state_json(const mk_qplan *p, size_t i, const char *offset_text)
{
    const mk_tensor_info *ti = &p->in[i];
    mk_buf b = {0};
    mk_buf_printf(&b, "{\"quant_type\": \"%s\", \"blocksize\": %u, \"dtype\": \"%s\", \"shape\": [",
                  p->o.fmt == MK_QF_NF4 ? "nf4" : "fp4", p->o.block, mk_dtype_info(ti->dtype)->torch_name);
    for (int d = 0; d < ti->ndim; d++) mk_buf_printf(&b, "%s%lld", d ? ", " : "", (long long)ti->shape[d]);
    mk_buf_puts(&b, "]");
    if (p->o.double_quant)
        mk_buf_printf(&b, ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s", MK_BNB_NESTED_BLOCK,
                      offset_text);
    mk_buf_puts(&b, "}");
    if (b.failed) {
        mk_buf_free(&b);
        mk_error(MK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return b.data;
}

char *mk_qplan_final_json(const mk_qplan *p, size_t i, float offset, size_t len)
{
    char num[40];
    char *j = quant_state_json(p, i, mk_fmt_pyfloat((double)offset, num));
    if (!j) return NULL;
    size_t n = strlen(j);
    if (n > len) {
        free(j);
        MK_BUG("quant_state blob longer than its reservation");
    }
    char *o = mk_realloc(j, len + 1);
    if (!o) {
        free(j);
        return NULL;
    }
    memset(o + n, ' ', len - n);
    o[len] = 0;
    return o;
}

static mk_status add_out(mk_qplan *p, size_t *cap, char *name, mk_dtype dt, int ndim, const int64_t *shape)
{
    if (!name) return MK_ERR_NOMEM;
    if (p->n_out == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        mk_tensor_info *o = mk_realloc_array(p->out, nc, sizeof *o);
        if (!o) {
            free(name);
            return MK_ERR_NOMEM;
        }
        p->out = o;
        *cap = nc;
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

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static inline int64_t cdiv(uint64_t a, uint64_t b) { return (int64_t)((a + b - 1) / b); }

mk_status mk_qplan_layout(mk_qplan *p)
{
    size_t cap = 0;
    p->out_bytes = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_tensor_info *ti = &p->in[i];
        mk_qtensor *q = &p->t[i];
        q->out0 = p->n_out;
        char *mod = q->kind != MK_QK_KEEP ? module_name(ti->name) : NULL;
        if (q->kind != MK_QK_KEEP && !mod) return MK_ERR_NOMEM;
        mk_status s = MK_OK;
        switch (q->kind) {
        case MK_QK_KEEP:
            s = add_out(p, &cap, mk_strdup(ti->name), ti->dtype, ti->ndim, ti->shape);
            break;
        case MK_QK_BNB4: {
            int64_t nb = cdiv(q->numel, p->o.block);
            const char *qt = p->o.fmt == MK_QF_NF4 ? "nf4" : "fp4";
            char num[40];
            free(q->json);
            if (q->has_offset || !p->o.double_quant) {
                q->json = quant_state_json(p, i, mk_fmt_pyfloat((double)q->offset, num));
            } else {
                memset(num, '0', PYFLOAT_RESERVE);
                num[PYFLOAT_RESERVE] = 0;
                q->json = quant_state_json(p, i, num);
            }
            if (!q->json) s = MK_ERR_NOMEM;
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight", mod), MK_U8, 2, SHAPE(cdiv(q->numel, 2), 1));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight.absmax", mod), p->o.double_quant ? MK_U8 : MK_F32, 1, SHAPE(nb));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight.quant_map", mod), MK_F32, 1, SHAPE(16));
            if (s == MK_OK && p->o.double_quant) {
                s = add_out(p, &cap, mk_asprintf("%s.weight.nested_absmax", mod), MK_F32, 1, SHAPE(cdiv((uint64_t)nb, MK_BNB_NESTED_BLOCK)));
                if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight.nested_quant_map", mod), MK_F32, 1, SHAPE(256));
            }
            if (s == MK_OK)
                s = add_out(p, &cap, mk_asprintf("%s.weight.quant_state.bitsandbytes__%s", mod, qt), MK_U8, 1,
                            SHAPE((int64_t)strlen(q->json)));
            break;
        }
        case MK_QK_BNB8:
            s = add_out(p, &cap, mk_asprintf("%s.weight", mod), MK_I8, 2, SHAPE((int64_t)q->rows, (int64_t)q->cols));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.SCB", mod), MK_F32, 1, SHAPE((int64_t)q->rows));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight_format", mod), MK_U8, 0, NULL);
            break;
        case MK_QK_CT_INT: {
            unsigned bits = MK_QFORMATS[p->o.fmt].bits;
            int64_t groups = (int64_t)(q->cols / q->group);
            s = add_out(p, &cap, mk_asprintf("%s.weight_packed", mod), MK_I32, 2, SHAPE((int64_t)q->rows, cdiv(q->cols * bits, 32)));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight_scale", mod), q->wdtype, 2, SHAPE((int64_t)q->rows, groups));
            if (s == MK_OK) s = add_out(p, &cap, mk_asprintf("%s.weight_shape", mod), MK_I64, 1, SHAPE(2));
            if (s == MK_OK && p->o.asym)
                s = add_out(p, &cap, mk_asprintf("%s.weight_zero_point", mod), MK_I32, 2, SHAPE(cdiv(q->rows * bits, 32), groups));
            break;
        }
        case MK_QK_CT_FP8:
            s = add_out(p, &cap, mk_asprintf("%s.weight", mod), p->o.fmt == MK_QF_FP8_E5M2 ? MK_F8_E5M2 : MK_F8_E4M3, 2,
                        SHAPE((int64_t)q->rows, (int64_t)q->cols));
            if (s == MK_OK) {
                if (p->o.per_tensor) s = add_out(p, &cap, mk_asprintf("%s.weight_scale", mod), q->wdtype, 1, SHAPE(1));
                else s = add_out(p, &cap, mk_asprintf("%s.weight_scale", mod), q->wdtype, 2, SHAPE((int64_t)q->rows, 1));
            }
            break;
        }
        free(mod);
        MK_TRY(s);
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

/* The JSON list (2-space indented at the top level) of the modules the loader must leave
 * alone: lm_head unless it was quantized, and every other matrix kept unquantized that is
 * not an embedding (they are Linear layers). Returns true when that is just ["lm_head"],
 * the loaders' default. */
static bool module_list(const mk_qplan *p, mk_buf *b)
{
    size_t n = 0;
    bool lm_quantized = false;
    mk_buf_puts(b, "[");
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->in[i].name;
        if (strcmp(nm, "lm_head.weight") == 0 && p->t[i].kind != MK_QK_KEEP) lm_quantized = true;
    }
    if (!lm_quantized) {
        mk_buf_puts(b, "\n    \"lm_head\"");
        n++;
    }
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->in[i].name;
        if (!is_weight_matrix(&p->in[i]) || p->t[i].kind != MK_QK_KEEP || mk_role_is_embedding(p->t[i].role) ||
            strcmp(nm, "lm_head.weight") == 0)
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
    const mk_qopts *o = &p->o;
    if (o->target == MK_QT_BNB) {
        bool b4 = o->fmt != MK_QF_INT8;
        const char *cd = o->compute_dtype;
        if (!cd) { /* the dtype of the first quantized weight */
            cd = "float32";
            for (size_t i = 0; i < p->n && b4; i++)
                if (p->t[i].kind != MK_QK_KEEP) {
                    cd = mk_dtype_info(p->t[i].wdtype)->torch_name;
                    break;
                }
        }
        mk_buf list = {0};
        bool dflt = module_list(p, &list);
        mk_buf_printf(&b, "{\n  \"_load_in_4bit\": %s,\n  \"_load_in_8bit\": %s,\n", b4 ? "true" : "false", b4 ? "false" : "true");
        mk_buf_printf(&b, "  \"bnb_4bit_compute_dtype\": \"%s\",\n  \"bnb_4bit_quant_storage\": \"uint8\",\n", cd);
        mk_buf_printf(&b, "  \"bnb_4bit_quant_type\": \"%s\",\n  \"bnb_4bit_use_double_quant\": %s,\n",
                      o->fmt == MK_QF_NF4 ? "nf4" : "fp4", o->double_quant ? "true" : "false");
        mk_buf_puts(&b, "  \"llm_int8_enable_fp32_cpu_offload\": false,\n  \"llm_int8_has_fp16_weight\": false,\n");
        /* null = transformers' default (skip lm_head); a list replaces the default */
        mk_buf_puts(&b, "  \"llm_int8_skip_modules\": ");
        if (dflt) mk_buf_puts(&b, "null");
        else mk_buf_put(&b, list.data, list.len);
        mk_buf_puts(&b, ",\n");
        b.failed |= list.failed;
        mk_buf_free(&list);
        mk_buf_printf(&b, "  \"llm_int8_threshold\": 6.0,\n  \"load_in_4bit\": %s,\n  \"load_in_8bit\": %s,\n", b4 ? "true" : "false",
                      b4 ? "false" : "true");
        mk_buf_puts(&b, "  \"quant_method\": \"bitsandbytes\"\n}");
    } else {
        bool fp8 = o->fmt == MK_QF_FP8 || o->fmt == MK_QF_FP8_E5M2;
        const char *format = fp8 ? "float-quantized" : "pack-quantized";
        mk_buf_printf(&b, "{\n  \"config_groups\": {\n    \"group_0\": {\n      \"format\": \"%s\",\n", format);
        if (fp8)
            mk_buf_puts(&b, "      \"input_activations\": {\n        \"dynamic\": true,\n        \"group_size\": null,\n"
                            "        \"num_bits\": 8,\n        \"strategy\": \"token\",\n        \"symmetric\": true,\n"
                            "        \"type\": \"float\"\n      },\n");
        else mk_buf_puts(&b, "      \"input_activations\": null,\n");
        mk_buf_puts(&b, "      \"output_activations\": null,\n      \"targets\": [\n        \"Linear\"\n      ],\n");
        mk_buf_puts(&b, "      \"weights\": {\n        \"dynamic\": false,\n");
        const char *strategy;
        if (fp8) strategy = o->per_tensor ? "tensor" : "channel";
        else strategy = o->group ? "group" : "channel";
        if (!fp8 && o->group) mk_buf_printf(&b, "        \"group_size\": %ld,\n", o->group);
        else mk_buf_puts(&b, "        \"group_size\": null,\n");
        mk_buf_printf(&b, "        \"num_bits\": %u,\n        \"strategy\": \"%s\",\n        \"symmetric\": %s,\n", MK_QFORMATS[o->fmt].bits,
                      strategy, o->asym ? "false" : "true");
        mk_buf_printf(&b, "        \"type\": \"%s\"\n      }\n    }\n  },\n", fp8 ? "float" : "int");
        mk_buf_printf(&b, "  \"format\": \"%s\",\n  \"global_compression_ratio\": null,\n  \"ignore\": ", format);
        module_list(p, &b);
        mk_buf_puts(&b, ",\n");
        mk_buf_puts(&b, "  \"kv_cache_scheme\": null,\n  \"moe_sparsity_config\": null,\n  \"quant_method\": \"compressed-tensors\",\n");
        mk_buf_puts(&b, "  \"quantization_status\": \"compressed\",\n  \"sparsity_config\": {},\n  \"transform_config\": {},\n");
        mk_buf_puts(&b, "  \"version\": \"" CT_VERSION "\"\n}");
    }
    if (b.failed) {
        mk_buf_free(&b);
        mk_error(MK_ERR_NOMEM, "out of memory building quantization_config");
        return NULL;
    }
    return b.data;
}
