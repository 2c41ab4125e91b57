/* formats.c - the quant-format table: one row per format, naming the families (one per
 * layout) that hold its behaviour, and the settings table that drives quantize's options,
 * merge --quantize's keys, their help and their checks. Adding a format is a row here (and
 * for a new layout, a family in its own file, declared below).
 * Owns: lookup, the generic option checks (which setting applies to which format), parsing
 * of "FORMAT,key=value" specs, describing options, and bits per weight from the layout.
 * Must not: know what a format stores or how it encodes (that is the family's).
 */
#include "bnb.h"
#include "qformat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const mk_qfamily mk_qfam_bnb4, mk_qfam_bnb8, mk_qfam_ct_int, mk_qfam_ct_fp8, mk_qfam_ct_fp4, mk_qfam_ct_mxfp8, mk_qfam_bitnet;

/* max_rel_rmse: measured on N(0, 1) bf16 [64, 512] weights (test_quant.c prints them with
 * MK_QUANT_REPORT=1): nf4 0.092, fp4 0.121, int8 0.0074 (bitsandbytes) / 0.0081
 * (compressed-tensors), int4 0.110, fp8 0.026, fp8-e5m2 0.053, nvfp4 0.095, mxfp4 0.111, mxfp8 0.027; the bounds leave room. */
const mk_qformat mk_qformats[] = {
    {.name = "nf4", .summary = "4-bit NormalFloat, blocks of 64 with f32 absmax (bitsandbytes, QLoRA)", .bits = 4,
     .variant = MK_BNB_NF4, .block = 64, .max_rel_rmse = 0.11, .layouts = {&mk_qfam_bnb4}},
    {.name = "fp4", .summary = "4-bit float (E2M1-style), blocks of 64 with f32 absmax (bitsandbytes)", .bits = 4,
     .variant = MK_BNB_FP4, .block = 64, .max_rel_rmse = 0.14, .layouts = {&mk_qfam_bnb4}},
    {.name = "int8", .summary = "8-bit integers, one scale per row (LLM.int8; or compressed-tensors W8A16)", .bits = 8, .group = 0,
     .max_rel_rmse = 0.01, .layouts = {&mk_qfam_bnb8, &mk_qfam_ct_int}},
    {.name = "int4", .summary = "4-bit integers, one scale per 128 columns (compressed-tensors W4A16)", .bits = 4, .group = 128,
     .max_rel_rmse = 0.13, .layouts = {&mk_qfam_ct_int}},
    {.name = "fp8", .summary = "FP8 E4M3, one scale per row (compressed-tensors FP8_DYNAMIC)", .bits = 8, .max_rel_rmse = 0.03,
     .layouts = {&mk_qfam_ct_fp8}},
    {.name = "fp8-e5m2", .summary = "FP8 E5M2, one scale per row (compressed-tensors layout)", .bits = 8, .variant = 1 /* E5M2 */,
     .max_rel_rmse = 0.06, .loaders = "transformers + compressed-tensors (vLLM's FP8 kernels assume E4M3)",
     .layouts = {&mk_qfam_ct_fp8}},
    {.name = "nvfp4", .summary = "FP4 E2M1 in groups of 16, FP8 E4M3 group scales, f32 global scale (compressed-tensors NVFP4)", .bits = 4,
     .variant = 0, .block = 16, .max_rel_rmse = 0.11, .layouts = {&mk_qfam_ct_fp4}},
    {.name = "mxfp4", .summary = "FP4 E2M1 in groups of 32, power-of-two E8M0 scales (compressed-tensors MXFP4, OCP MX)", .bits = 4,
     .variant = 1, .block = 32, .max_rel_rmse = 0.13, .layouts = {&mk_qfam_ct_fp4}},
    {.name = "mxfp8", .summary = "FP8 E4M3 in groups of 32, power-of-two E8M0 scales (compressed-tensors MXFP8, OCP MX)", .bits = 8,
     .variant = 2, .block = 32, .max_rel_rmse = 0.03, .layouts = {&mk_qfam_ct_mxfp8}},
    {.name = "ternary", .summary = "BitNet b1.58 ternary {-1, 0, 1}, absmean scale per tensor, 4 codes a byte (transformers BitNet); no training: experiments only",
     .bits = 2, .max_rel_rmse = 0.60, .layouts = {&mk_qfam_bitnet}},
    {.name = NULL},
};

size_t mk_qformat_count(void)
{
    size_t n = 0;
    while (mk_qformats[n].name) n++;
    return n;
}

const mk_qformat *mk_qformat_find(const char *name)
{
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        if (strcmp(name, f->name) == 0) return f;
    return NULL;
}

const char *mk_qformat_names(char *buf, size_t len, const char *last)
{
    size_t n = mk_qformat_count(), o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i == 0 ? "" : i + 1 == n ? last : ", ", mk_qformats[i].name);
    return buf;
}

mk_status mk_qformat_lookup(const char *name, const char *what, const mk_qformat **out)
{
    *out = name ? mk_qformat_find(name) : NULL;
    if (*out) return MK_OK;
    const char *names[64];
    size_t n = 0;
    for (const mk_qformat *f = mk_qformats; f->name && n < 64; f++) names[n++] = f->name;
    const char *hint = name ? mk_did_you_mean(name, names, n) : NULL;
    char list[256];
    return mk_error(MK_ERR_USAGE, "%s: unknown format '%s'%s%s%s (formats: %s)", what, name ? name : "", hint ? " (did you mean '" : "",
                    hint ? hint : "", hint ? "'?)" : "", mk_qformat_names(list, sizeof list, ", "));
}

size_t mk_qformat_nlayouts(const mk_qformat *f)
{
    size_t n = 0;
    while (n < MK_QFORMAT_MAX_LAYOUTS && f->layouts[n]) n++;
    return n;
}

const char *mk_qfamily_layout(const mk_qfamily *fam) { return fam->layout; }

const char *mk_qformat_loaders(const mk_qformat *f, const mk_qfamily *fam) { return f->loaders ? f->loaders : fam->loaders; }

bool mk_qformat_has(const mk_qformat *f, const mk_qfamily *fam)
{
    for (size_t k = 0; k < mk_qformat_nlayouts(f); k++)
        if (f->layouts[k] == fam) return true;
    return false;
}

const mk_qformat *mk_qformat_of(const mk_qfamily *fam, int variant, unsigned bits)
{
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        if (f->variant == variant && (!bits || f->bits == bits) && mk_qformat_has(f, fam)) return f;
    return NULL;
}

size_t mk_qfamilies(const mk_qfamily **out, size_t cap)
{
    size_t n = 0;
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        for (size_t k = 0; k < mk_qformat_nlayouts(f); k++) {
            size_t j = 0;
            while (j < n && out[j] != f->layouts[k]) j++;
            if (j == n && n < cap) out[n++] = f->layouts[k];
        }
    return n;
}

/* ---- settings ------------------------------------------------------------------------------ */

static mk_status set_uint(const char *key, const char *val, const char *who, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    unsigned long v = val && *val && *val != '-' ? strtoul(val, &end, 10) : 0;
    if (!val || !*val || *val == '-' || *end || v > max)
        return mk_error(MK_ERR_USAGE, "%s%s expects an integer from 0 to %lu, got '%s'", who, key, max, val ? val : "");
    *out = v;
    return MK_OK;
}

static const char *show_num(long v, char buf[48])
{
    snprintf(buf, 48, "%ld", v);
    return buf;
}

static bool given_block(const mk_qopts *o) { return o->block != 0; }
static mk_status set_block(mk_qopts *o, const char *val, const char *who)
{
    unsigned long v = 0;
    mk_status s = set_uint("block-size", val, who, 1ul << 20, &v);
    o->block = s == MK_OK ? (unsigned)v : o->block;
    return s;
}
static const char *show_block(const mk_qopts *o, char buf[48]) { return show_num((long)o->block, buf); }

static bool given_dq(const mk_qopts *o) { return o->double_quant; }

static bool given_group(const mk_qopts *o) { return o->group >= 0; }
static mk_status set_group(mk_qopts *o, const char *val, const char *who)
{
    unsigned long v = 0;
    mk_status s = set_uint("group-size", val, who, 1ul << 20, &v);
    o->group = s == MK_OK ? (long)v : o->group;
    return s;
}
static const char *show_group(const mk_qopts *o, char buf[48]) { return show_num(o->group, buf); }

static bool given_asym(const mk_qopts *o) { return o->asym; }
static mk_status set_scheme(mk_qopts *o, const char *val, const char *who)
{
    if (!val || (strcmp(val, "sym") != 0 && strcmp(val, "asym") != 0))
        return mk_error(MK_ERR_USAGE, "%sscheme expects sym or asym, got '%s'", who, val ? val : "");
    o->asym = val[0] == 'a';
    return MK_OK;
}
static const char *show_scheme(const mk_qopts *o, char buf[48]) { return strcpy(buf, o->asym ? "asym" : "sym"); }

static bool given_search(const mk_qopts *o) { return o->method == MK_QM_SEARCH; }
static mk_status set_method(mk_qopts *o, const char *val, const char *who)
{
    if (!val || (strcmp(val, "rtn") != 0 && strcmp(val, "search") != 0))
        return mk_error(MK_ERR_USAGE, "%smethod expects rtn or search, got '%s'", who, val ? val : "");
    o->method = val[0] == 's' ? MK_QM_SEARCH : MK_QM_RTN;
    return MK_OK;
}
static const char *show_method(const mk_qopts *o, char buf[48]) { return strcpy(buf, o->method == MK_QM_SEARCH ? "search" : "rtn"); }

static bool given_per_tensor(const mk_qopts *o) { return o->per_tensor; }

static bool given_target(const mk_qopts *o) { return o->target != NULL; }
static mk_status set_target(mk_qopts *o, const char *val, const char *who)
{
    const mk_qfamily *fams[MK_QFAMILIES_MAX];
    size_t n = mk_qfamilies(fams, MK_QFAMILIES_MAX);
    char names[256] = "";
    size_t len = 0;
    for (size_t k = 0; k < n; k++) {
        if (val && (strcmp(val, fams[k]->layout) == 0 || (fams[k]->alias && strcmp(val, fams[k]->alias) == 0))) {
            o->target = fams[k]->layout;
            return MK_OK;
        }
        if (!strstr(names, fams[k]->layout) && len < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? " or " : "", fams[k]->layout);
    }
    return mk_error(MK_ERR_USAGE, "%starget expects %s, got '%s'", who, names, val ? val : "");
}
static const char *show_target(const mk_qopts *o, char buf[48])
{
    snprintf(buf, 48, "%s", o->fam->layout);
    return buf;
}

/* Order: the help's and the checks'. */
const mk_qsetting mk_qsettings[] = {
    {"block-size", "N", "values per absmax, a power of two 32..4096", "--block-size", MK_QS_BLOCK, given_block, set_block, show_block},
    {"double-quant", NULL, "quantize the block absmax to 8 bits (QLoRA)", "--double-quant", MK_QS_DOUBLE_QUANT, given_dq, NULL, NULL},
    {"group-size", "N", "columns per scale; 0 = one per row", "--group-size", MK_QS_GROUP, given_group, set_group, show_group},
    {"scheme", "sym|asym", "symmetric, or with zero points", "--scheme asym", MK_QS_SCHEME, given_asym, set_scheme, show_scheme},
    {"method", "rtn|search", "round to nearest, or search the scale that minimises the error", "--method search", MK_QS_METHOD,
     given_search, set_method, show_method},
    {"target", "LAYOUT", "the layout to write (each format's layouts: --list-formats)", "--target", MK_QS_TARGET, given_target, set_target, show_target},
    {"per-tensor", NULL, "one scale for the whole tensor instead of one per row", "--per-tensor", MK_QS_PER_TENSOR, given_per_tensor, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL},
};

const mk_qsetting *mk_qsetting_find(const char *key)
{
    for (const mk_qsetting *s = mk_qsettings; s->key; s++)
        if (strcmp(s->key, key) == 0) return s;
    return NULL;
}

static unsigned family_settings(const mk_qformat *f, const mk_qfamily *fam)
{
    return fam->settings | (mk_qformat_nlayouts(f) > 1 ? MK_QS_TARGET : 0);
}

bool mk_qsetting_applies(const mk_qsetting *s, const mk_qformat *f, const mk_qfamily *fam)
{
    return (family_settings(f, fam) & s->bit) != 0;
}

/* Does f take s in every layout (then its layouts are not named)? */
static bool applies_everywhere(const mk_qsetting *s, const mk_qformat *f)
{
    for (size_t k = 0; k < mk_qformat_nlayouts(f); k++)
        if (!mk_qsetting_applies(s, f, f->layouts[k])) return false;
    return true;
}

const char *mk_qsetting_formats(const mk_qsetting *s, char *buf, size_t len)
{
    char item[32][64];
    size_t n = 0, o = 0;
    for (const mk_qformat *f = mk_qformats; f->name && n < 32; f++) {
        if (applies_everywhere(s, f)) {
            snprintf(item[n++], sizeof item[0], "%s", f->name);
            continue;
        }
        for (size_t k = 0; k < mk_qformat_nlayouts(f) && n < 32; k++)
            if (mk_qsetting_applies(s, f, f->layouts[k])) snprintf(item[n++], sizeof item[0], "%s (%s)", f->name, f->layouts[k]->layout);
    }
    buf[0] = 0;
    for (size_t k = 0; k < n && o < len; k++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", k == 0 ? "" : k + 1 == n ? " and " : ", ", item[k]);
    return buf;
}

const char *mk_qsetting_default(const mk_qsetting *s, char *buf, size_t len)
{
    if (!s->show) return NULL;
    char vals[16][48], who[16][64];
    size_t n = 0;
    bool same = true;
    for (const mk_qformat *f = mk_qformats; f->name; f++)
        for (size_t k = 0; k < mk_qformat_nlayouts(f) && n < 16; k++) {
            mk_qopts o;
            mk_qopts_init(&o, f);
            if (s->bit == MK_QS_TARGET && k > 0) break; /* its default is the first layout */
            if (s->bit != MK_QS_TARGET) o.target = f->layouts[k]->layout;
            if (!mk_qsetting_applies(s, f, f->layouts[k]) || mk_qopts_resolve(&o, false) != MK_OK) continue;
            s->show(&o, vals[n]);
            if (applies_everywhere(s, f)) snprintf(who[n], sizeof who[n], "%s", f->name);
            else snprintf(who[n], sizeof who[n], "%s (%s)", f->name, f->layouts[k]->layout);
            same &= strcmp(vals[n], vals[0]) == 0;
            n++;
        }
    if (!n) return NULL;
    if (same) {
        snprintf(buf, len, "%s", vals[0]);
        return buf;
    }
    size_t o = 0;
    buf[0] = 0;
    for (size_t k = 0; k < n && o < len; k++) {
        if (k && strcmp(who[k], who[k - 1]) == 0) continue; /* a format with the setting in several layouts */
        o += (size_t)snprintf(buf + o, len - o, "%s%s for %s", k ? ", " : "", vals[k], who[k]);
    }
    return buf;
}

mk_status mk_qopts_set(mk_qopts *o, const char *key, const char *val, const char *who)
{
    const mk_qsetting *s = mk_qsetting_find(key);
    if (!s) return mk_error(MK_ERR_USAGE, "%sunknown setting '%s'", who, key);
    if (!s->set) {
        if (val) return mk_error(MK_ERR_USAGE, "%s%s takes no value, got '%s'", who, key, val);
        if (s->bit == MK_QS_DOUBLE_QUANT) o->double_quant = true;
        else o->per_tensor = true;
        return MK_OK;
    }
    return s->set(o, val, who);
}

/* ---- options ------------------------------------------------------------------------------- */

void mk_qopts_init(mk_qopts *o, const mk_qformat *f)
{
    memset(o, 0, sizeof *o);
    o->fmt = f;
    o->group = -1;
}

/* "--group-size applies to int8 (compressed-tensors), int4, not int8 for bitsandbytes". */
static mk_status not_applicable(const mk_qsetting *s, const mk_qopts *o)
{
    char list[256];
    bool several = mk_qformat_nlayouts(o->fmt) > 1;
    return mk_error(MK_ERR_USAGE, "%s applies to %s, not %s%s%s", s->what, mk_qsetting_formats(s, list, sizeof list), o->fmt->name,
                    several ? " for " : "", several ? o->fam->layout : "");
}

mk_status mk_qopts_resolve(mk_qopts *o, bool streaming)
{
    const mk_qformat *f = o->fmt;
    if (!f) MK_BUG("quantization options without a format");
    o->fam = f->layouts[0];
    if (o->target) {
        size_t k = 0, n = mk_qformat_nlayouts(f);
        while (k < n && strcmp(f->layouts[k]->layout, o->target) != 0 && !(f->layouts[k]->alias && !strcmp(f->layouts[k]->alias, o->target)))
            k++;
        if (k == n) {
            char list[128];
            size_t m = 0;
            for (size_t j = 0; j < n && m < sizeof list; j++)
                m += (size_t)snprintf(list + m, sizeof list - m, "%s%s", j ? " and " : "", f->layouts[j]->layout);
            return mk_error(MK_ERR_USAGE, "--target %s: format %s is only written for %s", o->target, f->name, list);
        }
        o->fam = f->layouts[k];
    }
    if (o->group == 0 && o->fam->per_row) o->group = -1; /* one scale per row is what it does */
    for (const mk_qsetting *s = mk_qsettings; s->key; s++)
        if (s->bit != MK_QS_TARGET && s->given(o) && !mk_qsetting_applies(s, f, o->fam)) return not_applicable(s, o);
    if (o->group < 0 && !(o->fam->settings & MK_QS_GROUP)) o->group = 0;
    if (o->fam->resolve) MK_TRY(o->fam->resolve(o, streaming));
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
    mk_qopts_init(o, NULL);
    char *s = mk_strdup(spec);
    if (!s) return MK_ERR_NOMEM;
    char *save = NULL;
    char *tok = strtok_r(s, ",", &save);
    mk_status st = mk_qformat_lookup(tok, "--quantize", &o->fmt);
    while (st == MK_OK && (tok = strtok_r(NULL, ",", &save))) {
        char *eq = strchr(tok, '=');
        if (eq) *eq = 0;
        if (!mk_qsetting_find(tok)) {
            char keys[512];
            size_t n = 0;
            for (const mk_qsetting *k = mk_qsettings; k->key && n < sizeof keys; k++)
                n += (size_t)snprintf(keys + n, sizeof keys - n, "%s%s%s%s", n ? ", " : "", k->key, k->metavar ? "=" : "",
                                      k->metavar ? k->metavar : "");
            st = mk_error(MK_ERR_USAGE, "--quantize: unknown setting '%s%s%s' (expected %s)", tok, eq ? "=" : "", eq ? eq + 1 : "", keys);
        } else {
            st = mk_qopts_set(o, tok, eq ? eq + 1 : NULL, "--quantize: ");
        }
    }
    free(s);
    return st;
}

const char *mk_qopts_settings(const mk_qopts *o, char buf[160])
{
    char t[160] = "";
    if (o->fam->describe) o->fam->describe(o, t, sizeof t);
    snprintf(buf, 160, "%s", strncmp(t, ", ", 2) == 0 ? t + 2 : t);
    return buf;
}

const char *mk_qopts_describe(const mk_qopts *o, char buf[160])
{
    char t[160];
    mk_qopts_settings(o, t);
    snprintf(buf, 160, "%s (%s%s%.100s)", o->fmt->name, o->fam->layout, *t ? ", " : "", t);
    return buf;
}

mk_status mk_qopts_bits_per_weight(const mk_qopts *o, double *bpw)
{
    mk_tensor_info w = {.name = "model.layers.0.self_attn.q_proj.weight", .dtype = MK_BF16, .ndim = 2, .shape = {4096, 4096}};
    MK_TRY(mk_tensor_info_finish(&w));
    mk_qplan p;
    mk_status s = mk_qplan_init(&p, o, NULL, &w, 1);
    if (s == MK_OK && mk_qplan_wants_offset(&p, 0)) mk_qplan_set_offset(&p, 0, 0.0123f); /* a typical absmax mean */
    if (s == MK_OK) s = mk_qplan_layout(&p);
    if (s == MK_OK) *bpw = 8.0 * (double)p.out_bytes / (double)w.numel;
    mk_qplan_free(&p);
    return s;
}
