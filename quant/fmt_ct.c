/* fmt_ct.c - the compressed-tensors layouts, as compressed-tensors 0.20.1 compresses them
 * (reference quantization-formats.md 4.2 and 5): pack-quantized integers (int4, int8; per
 * group or per channel, symmetric or with zero points, rounding or the scale search) and
 * float-quantized FP8 (E4M3, and E5M2 in the same layout; per row or per tensor), with the
 * quantization_config ModelCompressor writes and reads.
 * A quantized weight P.weight (row-major [rows, cols]) becomes:
 *   int  P.weight_packed I32 [rows, ceil(cols * bits / 32)], P.weight_scale [rows, groups]
 *        in the weight dtype, P.weight_shape I64 [2], with zero points
 *        P.weight_zero_point I32 [ceil(rows * bits / 32), groups]
 *   fp8  P.weight F8_E4M3 (or F8_E5M2) [rows, cols], P.weight_scale [rows, 1] (or [1]) in
 *        the weight dtype
 * Owns: both families' settings, plans, encoders, config text and decoders. The arithmetic
 * is ct.c's and search.c's (bit-exact kernels); this file only arranges their bytes.
 * Must not: read files other than through the mk_source it is given, or know the other
 * layouts.
 */
#include "ct.h"
#include "mx.h"
#include "qformat.h"
#include "search.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* compressed-tensors version whose config we write (tools/venv-versions.txt). */
#define CT_VERSION "0.20.1"

extern const mk_qfamily mk_qfam_ct_int, mk_qfam_ct_fp8, mk_qfam_ct_fp4, mk_qfam_ct_mxfp8;

static const char *const ct_card = "\nLoad it with vLLM, or with transformers and compressed-tensors "
                                   "(`CompressedTensorsConfig(run_compressed=False)` to decompress).\n";

/* ---- quantization_config (ModelCompressor.update_config, keys sorted) --------------------- */

typedef struct ct_config {
    const char *format;     /* "pack-quantized", "float-quantized" */
    bool dynamic_act;       /* FP8_DYNAMIC: per-token dynamic FP8 activations */
    const char *strategy;   /* "group", "channel", "tensor" */
    long group;             /* group_size; 0 = null */
    const char *type;       /* "int", "float" */
    const char *scale_dtype; /* "torch.uint8" (MX), "torch.float8_e4m3fn" (NVFP4); NULL = not said */
} ct_config;

/* One entry of config_groups (indented for its place), its targets a JSON list. */
static void group_json(const mk_qplan *p, mk_buf *b, const ct_config *c, const char *targets)
{
    const mk_qopts *o = &p->o;
    mk_buf_printf(b, "{\n      \"format\": \"%s\",\n", c->format);
    if (c->dynamic_act)
        mk_buf_puts(b, "      \"input_activations\": {\n        \"dynamic\": true,\n        \"group_size\": null,\n"
                       "        \"num_bits\": 8,\n        \"strategy\": \"token\",\n        \"symmetric\": true,\n"
                       "        \"type\": \"float\"\n      },\n");
    else mk_buf_puts(b, "      \"input_activations\": null,\n");
    mk_buf_printf(b, "      \"output_activations\": null,\n      \"targets\": %s,\n", targets);
    mk_buf_puts(b, "      \"weights\": {\n        \"dynamic\": false,\n");
    if (c->group) mk_buf_printf(b, "        \"group_size\": %ld,\n", c->group);
    else mk_buf_puts(b, "        \"group_size\": null,\n");
    mk_buf_printf(b, "        \"num_bits\": %u,\n", o->fmt->bits);
    if (c->scale_dtype) mk_buf_printf(b, "        \"scale_dtype\": \"%s\",\n", c->scale_dtype);
    mk_buf_printf(b, "        \"strategy\": \"%s\",\n        \"symmetric\": %s,\n", c->strategy, o->asym ? "false" : "true");
    mk_buf_printf(b, "        \"type\": \"%s\"\n      }\n    }", c->type);
}

/* What follows config_groups: the format, the modules left alone (view: which weights are
 * quantized) and the constant keys. */
static void config_tail(const mk_qplan *view, mk_buf *b, const char *format)
{
    mk_buf_printf(b, "  \"format\": \"%s\",\n  \"global_compression_ratio\": null,\n  \"ignore\": ", format);
    mk_qplan_module_list(view, b);
    mk_buf_puts(b, ",\n");
    mk_buf_puts(b, "  \"kv_cache_scheme\": null,\n  \"moe_sparsity_config\": null,\n  \"quant_method\": \"compressed-tensors\",\n");
    mk_buf_puts(b, "  \"quantization_status\": \"compressed\",\n  \"sparsity_config\": {},\n  \"transform_config\": {},\n");
    mk_buf_puts(b, "  \"version\": \"" CT_VERSION "\"\n}");
}

static void config_json(const mk_qplan *p, mk_buf *b, const ct_config *c)
{
    mk_buf_puts(b, "{\n  \"config_groups\": {\n    \"group_0\": ");
    group_json(p, b, c, "[\n        \"Linear\"\n      ]");
    mk_buf_puts(b, "\n  },\n");
    config_tail(p, b, c->format);
}

/* config_groups: the weights' settings when every group has the same; when they differ
 * (mixed precision: a group per format, `quantize --target-bpw`) the config says nothing
 * that holds for every weight, and each weight's stored tensors tell its format. */
static mk_status read_config(const mk_source *in, const mk_json *j, uint32_t q, mk_qcfg *c)
{
    uint32_t groups = mk_json_get(j, q, "config_groups");
    if (!groups || mk_json_at(j, groups)->type != MK_JSON_OBJ) return MK_OK;
    int ng = 0;
    for (uint32_t g = mk_json_at(j, groups)->first; g; g = mk_json_at(j, g)->next) {
        uint32_t w = mk_json_get(j, g, "weights");
        if (!w || mk_json_at(j, w)->type != MK_JSON_OBJ) continue;
        uint32_t nb = mk_json_get(j, w, "num_bits"), ty = mk_json_get(j, w, "type"), gs = mk_json_get(j, w, "group_size");
        uint32_t sy = mk_json_get(j, w, "symmetric"), st = mk_json_get(j, w, "strategy");
        int bits = nb && mk_json_at(j, nb)->is_uint && mk_json_at(j, nb)->u <= 8 ? (int)mk_json_at(j, nb)->u : -1;
        bool fl = ty && mk_json_at(j, ty)->type == MK_JSON_STR && strcmp(mk_json_strv(j, ty), "float") == 0;
        long group = gs && mk_json_at(j, gs)->is_uint && mk_json_at(j, gs)->u < (1u << 30) ? (long)mk_json_at(j, gs)->u : -1;
        bool sym = !sy || mk_json_at(j, sy)->type != MK_JSON_BOOL || mk_json_at(j, sy)->b;
        if (bits < 1)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: config.json: quantization_config group '%s': num_bits must be 1..8", in->path,
                            mk_json_key(j, g));
        if (ng < 0) continue; /* mixed: each group is still checked */
        if (ng++ && (bits != c->bits || fl != c->is_float || group != c->group || sym != c->sym)) {
            c->bits = 0;
            c->is_float = false;
            c->group = -1;
            c->sym = true;
            c->strategy[0] = 0;
            ng = -1;
            continue;
        }
        c->bits = bits;
        c->is_float = fl;
        c->group = group;
        c->sym = sym;
        if (st && mk_json_at(j, st)->type == MK_JSON_STR) snprintf(c->strategy, sizeof c->strategy, "%s", mk_json_strv(j, st));
    }
    return MK_OK;
}

/* Scale entries [first, first + count) as f32. */
static mk_status read_scales(mk_source *in, long si, uint64_t first, uint64_t count, float **out)
{
    mk_dtype dt = in->tensors[si].dtype;
    unsigned es = mk_dtype_size(dt);
    void *raw;
    MK_TRY(mk_qdec_read(in, (size_t)si, first * es, count * es, &raw));
    *out = mk_malloc((size_t)count * sizeof(float) + 1);
    if (!*out) {
        free(raw);
        return MK_ERR_NOMEM;
    }
    mk_dtype_info(dt)->to_f32(raw, *out, (size_t)count);
    free(raw);
    return MK_OK;
}

/* What every compressed-tensors weight tells about the checkpoint. */
static void ct_info(const mk_qdec *d, const mk_qcfg *c, mk_qinfo *info)
{
    if (d->ngroups > 1 && !info->block) {
        /* a weight narrower than the group has one group per row: not what the file is */
        info->block = d->group;
        info->per_channel = false;
    }
    if (c->group > 0 && !strcmp(c->strategy, "group") && info->layout && !strcmp(info->layout, d->fam->layout)) {
        info->block = (uint64_t)c->group; /* the config says; narrow weights have one group per row */
        info->per_channel = false;
    }
}

/* ======== pack-quantized integers: int4, int8 ==================================================== */

static mk_status int_resolve(mk_qopts *o, bool streaming)
{
    (void)streaming;
    if (o->group < 0) o->group = o->fmt->group;
    if (o->group > (1L << 20)) return mk_error(MK_ERR_USAGE, "--group-size %ld is too large", o->group);
    return MK_OK;
}

static void int_describe(const mk_qopts *o, char *buf, size_t len)
{
    int n = o->group ? snprintf(buf, len, ", group %ld", o->group) : snprintf(buf, len, ", per channel");
    snprintf(buf + n, len - (size_t)n, ", %s, %s", o->asym ? "asymmetric" : "symmetric",
             o->method == MK_QM_SEARCH ? "scale search" : "round to nearest");
}

/* compressed-tensors needs the width to be a multiple of the group. */
static const char *int_select(mk_qplan *p, size_t i, size_t *warned)
{
    mk_qtensor *q = &p->t[i];
    q->group = p->o.group ? (uint64_t)p->o.group : q->cols;
    if (q->cols % q->group == 0) return NULL;
    if (warned && (*warned)++ < 8)
        mk_warn("%s: %llu columns are not a multiple of the group size %llu (compressed-tensors needs that); "
                "kept unquantized and listed in \"ignore\"",
                p->in[i].name, (unsigned long long)q->cols, (unsigned long long)q->group);
    return "columns not a multiple of the group size";
}

/* The widths the group size did not divide, and a group size for them all: the largest power
 * of two that divides every width select saw, at most 128 or the group asked for when larger
 * (the group sizes in use are powers of two: 128 in the W4A16 presets, ref. 5; 64 in HQQ's
 * defaults, ref. 6.3); below 8, one scale per row. */
static void int_kept_note(const mk_qplan *p, bool none, char *buf, size_t len)
{
    uint64_t g = 0, widths[6];
    size_t nw = 0;
    bool more = false;
    for (size_t i = 0; i < p->n; i++) {
        const mk_qtensor *q = &p->t[i];
        if (!q->quantized && !q->kept_for_shape) continue;
        g = mk_gcd_u64(g, q->cols);
        if (!q->kept_for_shape) continue;
        size_t k = 0;
        while (k < nw && widths[k] != q->cols) k++;
        if (k == nw && nw < 6) widths[nw++] = q->cols;
        else if (k == nw) more = true;
    }
    uint64_t cap = 128, pow2 = 1;
    while (cap * 2 <= (uint64_t)p->o.group) cap *= 2;
    while (pow2 * 2 <= cap && g % (pow2 * 2) == 0) pow2 *= 2;
    char list[128];
    size_t o = 0;
    list[0] = 0;
    for (size_t k = 0; k < nw && o < sizeof list; k++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%llu", k ? ", " : "", (unsigned long long)widths[k]);
    if (more && o < sizeof list) snprintf(list + o, sizeof list - o, ", ...");
    char fix[96];
    if (pow2 >= 8) snprintf(fix, sizeof fix, "--group-size %llu divides %s", (unsigned long long)pow2, none ? "them all" : "the columns of every weight");
    else snprintf(fix, sizeof fix, "--group-size 0 (one scale per row) fits %s", none ? "them all" : "every weight");
    if (none) snprintf(buf, len, "--group-size %ld divides the columns of no weight (%s); %s", p->o.group, list, fix);
    else snprintf(buf, len, "--group-size %ld does not divide their columns (%s); %s", p->o.group, list, fix);
}

static mk_status int_layout(mk_qplan *p, size_t i, const char *mod)
{
    const mk_qtensor *q = &p->t[i];
    unsigned bits = p->o.fmt->bits;
    int64_t groups = (int64_t)(q->cols / q->group);
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight_packed", mod), MK_I32, 2, MK_QSHAPE((int64_t)q->rows, mk_qcdiv(q->cols * bits, 32))));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight_scale", mod), q->wdtype, 2, MK_QSHAPE((int64_t)q->rows, groups)));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight_shape", mod), MK_I64, 1, MK_QSHAPE(2)));
    if (!p->o.asym) return MK_OK;
    return mk_qplan_add_out(p, mk_asprintf("%s.weight_zero_point", mod), MK_I32, 2, MK_QSHAPE(mk_qcdiv(q->rows * bits, 32), groups));
}

static ct_config int_cfg(const mk_qplan *p)
{
    return (ct_config){"pack-quantized", false, p->o.group ? "group" : "channel", p->o.group, "int", NULL};
}

static void int_config(const mk_qplan *p, mk_buf *b)
{
    ct_config c = int_cfg(p);
    config_json(p, b, &c);
}

/* Zero points are packed along rows: chunks start on a word row. */
static uint64_t int_align(const mk_qplan *p, size_t i)
{
    return p->o.asym ? (32 / p->o.fmt->bits) * p->t[i].cols : 1;
}

/* x: f32 values, or (xb) the bf16 bit patterns of a bf16 weight */
static mk_status int_rows_x(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool xb)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    const mk_ct_int a = {p->o.fmt->bits, p->o.asym, qt->wdtype};
    const size_t cols = (size_t)qt->cols, rows = n / cols, group = (size_t)qt->group, G = cols / group;
    const size_t per = 32 / a.bits, W = (cols * a.bits + 31) / 32, r0 = (size_t)(e0 / cols);
    const unsigned es = mk_dtype_size(qt->wdtype);
    uint32_t *words = mk_qc_scratch(q, MK_QSCR_AUX, rows * W * 4 + (rows + per) / per * G * 4);
    int8_t *codes = mk_qc_scratch(q, MK_QSCR_CODES, cols);
    float *scales = mk_qc_scratch(q, MK_QSCR_SCALES, rows * G * sizeof *scales);
    int32_t *zps = mk_qc_scratch(q, MK_QSCR_ZP, rows * G * sizeof *zps);
    void *sbytes = mk_qc_scratch(q, MK_QSCR_BYTES, rows * G * es);
    if (!words || !codes || !scales || !zps || !sbytes) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        if (xb) {
            mk_ct_int_row_bf16_packed(&a, (const uint16_t *)x + r * cols, cols, group, scales + r * G, zps + r * G, words + r * W, codes,
                                      &e);
            continue;
        }
        if (p->o.method != MK_QM_SEARCH) {
            mk_ct_int_row(&a, (const float *)x + r * cols, cols, group, scales + r * G, zps + r * G, codes, &e);
        } else {
            for (size_t g = 0; g < G; g++) {
                const float *xg = (const float *)x + r * cols + g * group;
                float *sc = &scales[r * G + g];
                int32_t *z = &zps[r * G + g];
                mk_search_int_qparams(&a, xg, qt->imp ? qt->imp + g * group : NULL, group, sc, z);
                mk_ct_int_codes(&a, xg, group, *sc, *z, codes + g * group, &e);
            }
        }
        mk_ct_pack_row(a.bits, codes, cols, words + r * W);
    }
    MK_TRY(mk_qc_put(q, qt->out0, (uint64_t)r0 * W * 4, words, rows * W * 4));
    mk_dtype_info(qt->wdtype)->from_f32(scales, sbytes, rows * G);
    MK_TRY(mk_qc_put(q, qt->out0 + 1, (uint64_t)r0 * G * es, sbytes, rows * G * es));
    if (a.asym) {
        size_t wr = (rows + per - 1) / per;
        uint32_t *zw = words + rows * W;
        for (size_t k = 0; k < wr; k++) {
            size_t nr = rows - k * per < per ? rows - k * per : per;
            mk_ct_pack_zp(a.bits, zps + k * per * G, nr, G, zw + k * G);
        }
        MK_TRY(mk_qc_put(q, qt->out0 + 3, (uint64_t)(r0 / per) * G * 4, zw, wr * G * 4));
    }
    return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
}

/* The scale search reads f32 values. */
static bool int_bf16_ok(const mk_qplan *p, size_t i)
{
    (void)i;
    return p->o.method != MK_QM_SEARCH;
}

static mk_status int_end(mk_qcons *q, size_t i)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    int64_t shape[2] = {(int64_t)qt->rows, (int64_t)qt->cols};
    return mk_qc_put(q, qt->out0 + 2, 0, shape, 16);
}

enum { A_SCALE = 0, A_SHAPE, A_ZP };

static mk_status int_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    if (in->tensors[i].dtype != MK_U8 && mk_qdec_module(in->tensors[i].name, ".weight_packed", mod)) *main = (long)i;
    return MK_OK; /* uint8 codes are E2M1 (the MX family's) */
}

/* The bit width: the config's, or the one row of the table whose packed width fits. */
static mk_status int_bits(const mk_source *in, const mk_tensor_info *w, uint64_t cols, const mk_qcfg *c, unsigned *bits)
{
    char have[64];
    size_t n = 0;
    *bits = (unsigned)c->bits;
    unsigned fits = 0, nfit = 0;
    have[0] = 0;
    for (const mk_qformat *f = mk_qformats; f->name; f++) {
        if (!mk_qformat_has(f, &mk_qfam_ct_int) || n >= sizeof have) continue;
        n += (size_t)snprintf(have + n, sizeof have - n, "%s%u", n ? " and " : "", f->bits);
        if ((uint64_t)w->shape[1] == (cols * f->bits + 31) / 32) fits = f->bits, nfit++;
    }
    if (!*bits && nfit != 1)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: cannot tell the bit width without config.json's quantization_config", in->path,
                        w->name);
    if (!*bits) *bits = fits;
    if (!mk_qformat_of(&mk_qfam_ct_int, 0, *bits))
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %d-bit pack-quantized weights are not supported (%s are)", in->path, c->bits, have);
    return MK_OK;
}

/* P.weight_shape: [rows, cols], I64 or I32, rows matching the packed tensor. */
static mk_status int_shape(mk_source *in, const mk_tensor_info *w, long si, mk_qdec *d)
{
    const mk_tensor_info *ws = &in->tensors[si];
    char sh[160];
    if ((ws->dtype != MK_I64 && ws->dtype != MK_I32) || ws->numel != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected I64 or I32 [2], found %s %s", in->path, ws->name, mk_dtype_name(ws->dtype),
                        mk_shape_str(ws, sh));
    int64_t shp[2];
    if (ws->dtype == MK_I64) MK_TRY(in->ops->read(in, (size_t)si, 0, 16, shp));
    else {
        int32_t s32[2];
        MK_TRY(in->ops->read(in, (size_t)si, 0, 8, s32));
        shp[0] = s32[0];
        shp[1] = s32[1];
    }
    if (shp[0] != w->shape[0] || shp[1] <= 0 || shp[1] > (1ll << 32))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: [%lld, %lld] does not fit %s %s", in->path, ws->name, (long long)shp[0],
                        (long long)shp[1], w->name, mk_shape_str(w, sh));
    mk_qdec_shape2(d, (uint64_t)shp[0], (uint64_t)shp[1]);
    return MK_OK;
}

static mk_status int_parse(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d)
{
    const mk_tensor_info *w = &in->tensors[d->main];
    char sh[160];
    d->aux[A_SCALE] = mk_qdec_find(in, mod, ".weight_scale");
    d->aux[A_SHAPE] = mk_qdec_find(in, mod, ".weight_shape");
    d->aux[A_ZP] = mk_qdec_find(in, mod, ".weight_zero_point");
    d->extra[0] = mk_qdec_find(in, mod, ".input_scale");
    (void)i;
    if (d->aux[A_SCALE] < 0 || d->aux[A_SHAPE] < 0)
        return mk_error(MK_ERR_FORMAT, "%s: %s.weight_packed needs %s.weight_scale and %s.weight_shape", in->path, mod, mod, mod);
    if (w->dtype != MK_I32 || w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected I32 [rows, words], found %s %s", in->path, w->name, mk_dtype_name(w->dtype),
                        mk_shape_str(w, sh));
    MK_TRY(int_shape(in, w, d->aux[A_SHAPE], d));
    unsigned bits;
    MK_TRY(int_bits(in, w, d->cols, c, &bits));
    d->fmt = mk_qformat_of(&mk_qfam_ct_int, 0, bits);
    MK_TRY(mk_qdec_expect(in, (long)d->main, MK_I32, 2, MK_QSHAPE((int64_t)d->rows, (int64_t)((d->cols * bits + 31) / 32)), "packed codes"));
    const mk_tensor_info *sc = &in->tensors[d->aux[A_SCALE]];
    if (!mk_qdec_is_float(sc->dtype) || sc->ndim != 2 || sc->shape[0] != (int64_t)d->rows || sc->shape[1] < 1 ||
        d->cols % (uint64_t)sc->shape[1])
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected a float [%llu, groups] scale with groups dividing %llu, found %s %s",
                        in->path, sc->name, (unsigned long long)d->rows, (unsigned long long)d->cols, mk_dtype_name(sc->dtype),
                        mk_shape_str(sc, sh));
    d->sdtype = d->orig = sc->dtype;
    d->ngroups = (uint64_t)sc->shape[1];
    d->group = d->cols / d->ngroups;
    if (c->group > 0 && d->ngroups > 1 && (uint64_t)c->group != d->group)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu groups of %llu columns, but config.json says group_size %ld", in->path, sc->name,
                        (unsigned long long)d->ngroups, (unsigned long long)d->group, c->group);
    d->asym = d->aux[A_ZP] >= 0;
    if (d->asym)
        MK_TRY(mk_qdec_expect(in, d->aux[A_ZP], MK_I32, 2, MK_QSHAPE((int64_t)((d->rows * bits + 31) / 32), (int64_t)d->ngroups),
                              "zero points"));
    if (mk_qdec_find(in, mod, ".weight_g_idx") >= 0)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_g_idx: activation-ordered groups are not supported", in->path, mod);
    return MK_OK;
}

static void int_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    if (first) {
        info->block = d->ngroups > 1 ? d->group : 0;
        info->block_word = "group";
        info->per_channel = d->ngroups == 1;
        info->asym = d->asym;
    }
    ct_info(d, c, info);
}

/* dt((q - zero point) * scale). */
static mk_status int_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const unsigned bits = d->fmt->bits;
    const uint64_t e1 = e0 + n - 1, r0 = e0 / d->cols, r1 = e1 / d->cols, per = 32 / bits;
    const uint64_t W = (d->cols * bits + 31) / 32;
    void *words = NULL, *zw = NULL;
    float *sc = NULL;
    MK_TRY(mk_qdec_read(in, d->main, r0 * W * 4, (r1 - r0 + 1) * W * 4, &words));
    mk_status s = read_scales(in, d->aux[A_SCALE], r0 * d->ngroups, (r1 - r0 + 1) * d->ngroups, &sc);
    if (s == MK_OK && d->asym)
        s = mk_qdec_read(in, (size_t)d->aux[A_ZP], (r0 / per) * d->ngroups * 4, (r1 / per - r0 / per + 1) * d->ngroups * 4, &zw);
    const uint32_t mask = (1u << bits) - 1u;
    for (size_t k = 0; s == MK_OK && k < n; k++) {
        uint64_t e = e0 + k, r = e / d->cols, col = e % d->cols, g = col / d->group;
        uint32_t w;
        memcpy(&w, (const char *)words + ((r - r0) * W + col / per) * 4, 4);
        int32_t v = (int32_t)((w >> ((col % per) * bits)) & mask) - (1 << (bits - 1));
        int32_t z = 0;
        if (d->asym) {
            uint32_t zv;
            memcpy(&zv, (const char *)zw + ((r / per - r0 / per) * d->ngroups + g) * 4, 4);
            z = (int32_t)((zv >> ((r % per) * bits)) & mask) - (1 << (bits - 1));
        }
        out[k] = mk_ct_round(d->sdtype, (float)(v - z) * sc[(r - r0) * d->ngroups + g]);
    }
    free(words);
    free(zw);
    free(sc);
    return s;
}

const mk_qfamily mk_qfam_ct_int = {
    .layout = "compressed-tensors",
    .loaders = "vLLM; transformers + compressed-tensors",
    .card = ct_card,
    .main_suffix = ".weight_packed",
    .settings = MK_QS_GROUP | MK_QS_SCHEME | MK_QS_METHOD,
    .resolve = int_resolve,
    .describe = int_describe,
    .select = int_select,
    .kept_note = int_kept_note,
    .stored = int_layout,
    .config_json = int_config,
    .align = int_align,
    .rows_x = int_rows_x,
    .bf16_ok = int_bf16_ok,
    .end = int_end,
    .read_config = read_config,
    .recognise = int_recognise,
    .parse = int_parse,
    .info = int_info,
    .decode = int_decode,
};

/* ======== float-quantized FP8: fp8 (E4M3), fp8-e5m2 ============================================== */

static mk_status fp8_resolve(mk_qopts *o, bool streaming)
{
    if (o->per_tensor && streaming)
        return mk_error(MK_ERR_USAGE, "fp8 with a per-tensor scale needs the whole tensor before its first value; "
                                      "quantize the merged model instead, or use the per-row default");
    return MK_OK;
}

static void fp8_describe(const mk_qopts *o, char *buf, size_t len) { snprintf(buf, len, ", %s", o->per_tensor ? "per tensor" : "per row"); }

static mk_status fp8_layout(mk_qplan *p, size_t i, const char *mod)
{
    const mk_qtensor *q = &p->t[i];
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight", mod), p->o.fmt->variant ? MK_F8_E5M2 : MK_F8_E4M3, 2,
                            MK_QSHAPE((int64_t)q->rows, (int64_t)q->cols)));
    if (p->o.per_tensor) return mk_qplan_add_out(p, mk_asprintf("%s.weight_scale", mod), q->wdtype, 1, MK_QSHAPE(1));
    return mk_qplan_add_out(p, mk_asprintf("%s.weight_scale", mod), q->wdtype, 2, MK_QSHAPE((int64_t)q->rows, 1));
}

static ct_config fp8_cfg(const mk_qplan *p)
{
    return (ct_config){"float-quantized", true, p->o.per_tensor ? "tensor" : "channel", 0, "float", NULL};
}

static void fp8_config(const mk_qplan *p, mk_buf *b)
{
    ct_config c = fp8_cfg(p);
    config_json(p, b, &c);
}

/* A scale for the whole tensor (fp8 per tensor, nvfp4's global scale): the absmax of the
 * whole tensor (prepass) and the scale made of it. */
typedef struct tensor_state {
    float absmax, scale;
} tensor_state;

static mk_status fp8_begin(mk_qcons *q, size_t i, void **state)
{
    (void)i;
    if (!mk_qc_plan(q)->o.per_tensor) return MK_OK;
    *state = mk_calloc(1, sizeof(tensor_state));
    return *state ? MK_OK : MK_ERR_NOMEM;
}

/* x: f32 values, or (xb: per row scales) the bf16 bit patterns of a bf16 weight */
static mk_status fp8_rows_x(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool xb)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    const tensor_state *s = mk_qc_state(q, i); /* NULL per row */
    const mk_ct_fp8 a = {p->o.fmt->variant != 0, qt->wdtype};
    const size_t cols = (size_t)qt->cols, rows = n / cols;
    const unsigned es = mk_dtype_size(qt->wdtype);
    uint8_t *cq = mk_qc_scratch(q, MK_QSCR_CODES, n);
    float *scales = mk_qc_scratch(q, MK_QSCR_SCALES, rows * sizeof *scales);
    void *sbytes = mk_qc_scratch(q, MK_QSCR_BYTES, rows * es);
    if (!cq || !scales || !sbytes) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        if (xb) {
            scales[r] = mk_ct_fp8_row_bf16(&a, (const uint16_t *)x + r * cols, cols, cq + r * cols, &e);
            continue;
        }
        const float *xr = (const float *)x + r * cols;
        float sc = s ? s->scale : mk_ct_fp8_scale(&a, mk_ct_absmax(xr, cols));
        scales[r] = sc;
        mk_ct_fp8_quantize(&a, xr, cols, sc, cq + r * cols, &e);
    }
    MK_TRY(mk_qc_put(q, qt->out0, e0, cq, n));
    if (!s) {
        mk_dtype_info(qt->wdtype)->from_f32(scales, sbytes, rows);
        MK_TRY(mk_qc_put(q, qt->out0 + 1, e0 / cols * es, sbytes, rows * es));
    }
    return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
}

/* --per-tensor scales come from the prepass, which reads f32 values. */
static bool fp8_bf16_ok(const mk_qplan *p, size_t i)
{
    (void)i;
    return !p->o.per_tensor;
}

static mk_status fp8_end(mk_qcons *q, size_t i)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    const tensor_state *s = mk_qc_state(q, i);
    if (!s) return MK_OK;
    uint8_t b[4];
    mk_dtype_info(qt->wdtype)->from_f32(&s->scale, b, 1);
    return mk_qc_put(q, qt->out0 + 1, 0, b, mk_dtype_size(qt->wdtype));
}

static bool fp8_wants_prepass(const mk_qplan *p, size_t i)
{
    (void)i;
    return p->o.per_tensor;
}

static mk_status tensor_observe(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    (void)e0;
    tensor_state *s = mk_qc_state(q, i);
    float am = mk_ct_absmax(x, n);
    mk_qc_lock(q, i);
    s->absmax = am > s->absmax ? am : s->absmax;
    mk_qc_unlock(q, i);
    return MK_OK;
}

static mk_status fp8_observe_end(mk_qcons *q, size_t i)
{
    const mk_qplan *p = mk_qc_plan(q);
    tensor_state *s = mk_qc_state(q, i);
    const mk_ct_fp8 a = {p->o.fmt->variant != 0, p->t[i].wdtype};
    s->scale = mk_ct_fp8_scale(&a, s->absmax);
    return MK_OK;
}

static mk_status fp8_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const mk_tensor_info *t = &in->tensors[i];
    if ((t->dtype != MK_F8_E4M3 && t->dtype != MK_F8_E5M2) || !mk_qdec_module(t->name, ".weight", mod)) return MK_OK;
    if (mk_qdec_find(in, mod, ".weight_scale_inv") >= 0)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_scale_inv: block-wise \"fp8\" checkpoints are not supported", in->path, mod);
    long si = mk_qdec_find(in, mod, ".weight_scale");
    if (si < 0) return mk_error(MK_ERR_FORMAT, "%s: FP8 tensor %s has no %s.weight_scale", in->path, t->name, mod);
    if (in->tensors[si].dtype == MK_U8) return MK_OK; /* E8M0 scales: MXFP8, the MX family's */
    *main = (long)i;
    return MK_OK;
}

static mk_status fp8_parse(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d)
{
    (void)i, (void)c;
    d->aux[A_SCALE] = mk_qdec_find(in, mod, ".weight_scale");
    d->extra[0] = mk_qdec_find(in, mod, ".input_scale");
    d->extra[1] = mk_qdec_find(in, mod, ".weight_zero_point");
    const mk_tensor_info *w = &in->tensors[d->main], *sc = &in->tensors[d->aux[A_SCALE]];
    char sh[160], sh2[160];
    if (w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: FP8 weight must be 2-D, found %s", in->path, w->name, mk_shape_str(w, sh));
    mk_qdec_shape2(d, (uint64_t)w->shape[0], (uint64_t)w->shape[1]);
    d->fmt = mk_qformat_of(&mk_qfam_ct_fp8, w->dtype == MK_F8_E5M2, 8);
    if (!d->fmt) return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: %s weights are not read by this build", in->path, w->name, mk_dtype_name(w->dtype));
    if (!mk_qdec_is_float(sc->dtype))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: scale dtype %s is not a float", in->path, sc->name, mk_dtype_name(sc->dtype));
    d->sdtype = d->orig = sc->dtype;
    if (sc->numel == 1) {
        d->ngroups = 0; /* per tensor */
    } else if ((sc->ndim == 2 && sc->shape[0] == w->shape[0] && sc->shape[1] >= 1 && d->cols % (uint64_t)sc->shape[1] == 0) ||
               (sc->ndim == 1 && sc->shape[0] == w->shape[0])) {
        d->ngroups = sc->ndim == 2 ? (uint64_t)sc->shape[1] : 1;
        d->group = d->cols / d->ngroups;
    } else {
        return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: scale shape %s for weight %s is not per tensor, row or group (block-wise "
                                            "FP8 is not supported)",
                        in->path, sc->name, mk_shape_str(sc, sh), mk_shape_str(w, sh2));
    }
    return MK_OK;
}

static void fp8_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    if (first) {
        info->block_word = "group";
        info->per_tensor = d->ngroups == 0;
        info->per_channel = d->ngroups == 1;
        info->block = d->ngroups > 1 ? d->group : 0;
    }
    ct_info(d, c, info);
}

/* dt(f8 value * scale). */
static mk_status fp8_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const uint64_t e1 = e0 + n - 1, r0 = e0 / d->cols, r1 = e1 / d->cols;
    const bool e5m2 = d->fmt->variant != 0;
    void *codes = NULL;
    float *sc = NULL;
    MK_TRY(mk_qdec_read(in, d->main, e0, n, &codes));
    mk_status s;
    if (d->ngroups == 0) s = read_scales(in, d->aux[A_SCALE], 0, 1, &sc);
    else s = read_scales(in, d->aux[A_SCALE], r0 * d->ngroups, (r1 - r0 + 1) * d->ngroups, &sc);
    for (size_t k = 0; s == MK_OK && k < n; k++) {
        uint64_t e = e0 + k;
        uint8_t v = ((const uint8_t *)codes)[k];
        float f = e5m2 ? mk_e5m2_to_f32(v) : mk_e4m3_to_f32(v);
        float scale = d->ngroups ? sc[(e / d->cols - r0) * d->ngroups + (e % d->cols) / d->group] : sc[0];
        out[k] = mk_ct_round(d->sdtype, f * scale);
    }
    free(codes);
    free(sc);
    return s;
}

const mk_qfamily mk_qfam_ct_fp8 = {
    .layout = "compressed-tensors",
    .loaders = "vLLM; transformers + compressed-tensors",
    .card = ct_card,
    .main_suffix = ".weight",
    .settings = MK_QS_PER_TENSOR,
    .resolve = fp8_resolve,
    .describe = fp8_describe,
    .stored = fp8_layout,
    .config_json = fp8_config,
    .begin = fp8_begin,
    .state_free = free,
    .rows_x = fp8_rows_x,
    .bf16_ok = fp8_bf16_ok,
    .end = fp8_end,
    .wants_prepass = fp8_wants_prepass,
    .observe = tensor_observe,
    .observe_end = fp8_observe_end,
    .read_config = read_config,
    .recognise = fp8_recognise,
    .parse = fp8_parse,
    .info = fp8_info,
    .decode = fp8_decode,
};

/* ======== 4-bit floats and MX: nvfp4, mxfp4 (E2M1 packed in uint8), mxfp8 ========================
 * P.weight_packed U8 [rows, cols / 2] (two E2M1 codes a byte, the first in the low nibble)
 * with P.weight_scale F8_E4M3 [rows, cols / 16] and P.weight_global_scale F32 [1] (nvfp4)
 * or U8 E8M0 exponents [rows, cols / 32] (mxfp4); mxfp8: P.weight F8_E4M3 [rows, cols] with
 * P.weight_scale U8 [rows, cols / 32]. The arithmetic is mx.c's. */

enum { MX_NV = 0, MX_FP4 = 1, MX_FP8 = 2 };

static int mx_kind(const mk_qformat *f) { return f->variant; }

static mk_status mx_resolve(mk_qopts *o, bool streaming)
{
    if (streaming && mx_kind(o->fmt) == MX_NV)
        return mk_error(MK_ERR_USAGE, "nvfp4's global scale needs the whole tensor before its first value; quantize the merged model instead");
    o->group = (long)o->fmt->block;
    return MK_OK;
}

static void mx_describe(const mk_qopts *o, char *buf, size_t len)
{
    if (mx_kind(o->fmt) == MX_NV) snprintf(buf, len, ", groups of %u, E4M3 scales, f32 global scale", o->fmt->block);
    else snprintf(buf, len, ", groups of %u, E8M0 scales", o->fmt->block);
}

/* compressed-tensors needs the width to be a multiple of the group. */
static const char *mx_select(mk_qplan *p, size_t i, size_t *warned)
{
    mk_qtensor *q = &p->t[i];
    q->group = p->o.fmt->block;
    if (q->cols % q->group == 0) return NULL;
    if (warned && (*warned)++ < 8)
        mk_warn("%s: %llu columns are not a multiple of %s's group of %llu; kept unquantized and listed in \"ignore\"", p->in[i].name,
                (unsigned long long)q->cols, p->o.fmt->name, (unsigned long long)q->group);
    return "columns not a multiple of the group size";
}

static void mx_kept_note(const mk_qplan *p, bool none, char *buf, size_t len)
{
    snprintf(buf, len, "%s needs columns that are a multiple of %u%s", p->o.fmt->name, p->o.fmt->block,
             none ? "; no weight has them" : "");
}

static mk_status mx_layout(mk_qplan *p, size_t i, const char *mod)
{
    const mk_qtensor *q = &p->t[i];
    const int k = mx_kind(p->o.fmt);
    int64_t rows = (int64_t)q->rows, G = (int64_t)(q->cols / q->group);
    if (k == MX_FP8) MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight", mod), MK_F8_E4M3, 2, MK_QSHAPE(rows, (int64_t)q->cols)));
    else MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight_packed", mod), MK_U8, 2, MK_QSHAPE(rows, (int64_t)q->cols / 2)));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight_scale", mod), k == MX_NV ? MK_F8_E4M3 : MK_U8, 2, MK_QSHAPE(rows, G)));
    if (k != MX_NV) return MK_OK;
    return mk_qplan_add_out(p, mk_asprintf("%s.weight_global_scale", mod), MK_F32, 1, MK_QSHAPE(1));
}

static ct_config mx_cfg(const mk_qplan *p)
{
    static const char *const fmt[] = {"nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp8-quantized"};
    const int k = mx_kind(p->o.fmt);
    return (ct_config){fmt[k], false, k == MX_NV ? "tensor_group" : "group", (long)p->o.fmt->block, "float",
                       k == MX_NV ? "torch.float8_e4m3fn" : "torch.uint8"};
}

static void mx_config(const mk_qplan *p, mk_buf *b)
{
    ct_config c = mx_cfg(p);
    config_json(p, b, &c);
}

/* nvfp4: tensor_state, scale = the global scale */
static mk_status mx_begin(mk_qcons *q, size_t i, void **state)
{
    (void)i;
    if (mx_kind(mk_qc_plan(q)->o.fmt) != MX_NV) return MK_OK;
    *state = mk_calloc(1, sizeof(tensor_state));
    return *state ? MK_OK : MK_ERR_NOMEM;
}

static bool mx_wants_prepass(const mk_qplan *p, size_t i)
{
    (void)i;
    return mx_kind(p->o.fmt) == MX_NV;
}

static mk_status mx_observe_end(mk_qcons *q, size_t i)
{
    tensor_state *s = mk_qc_state(q, i);
    s->scale = mk_nvfp4_global_scale(mk_qc_plan(q)->t[i].wdtype, s->absmax);
    return MK_OK;
}

/* x: f32 values, or (xb: mxfp4, mxfp8) the bf16 bit patterns of a bf16 weight */
static mk_status mx_rows_x(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool xb)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    const tensor_state *s = mk_qc_state(q, i); /* nvfp4 only */
    const int k = mx_kind(p->o.fmt);
    const unsigned bits = p->o.fmt->bits;
    const size_t group = (size_t)qt->group, G = n / group;
    uint8_t *codes = mk_qc_scratch(q, MK_QSCR_CODES, n);
    uint8_t *scales = mk_qc_scratch(q, MK_QSCR_SCALES, G);
    if (!codes || !scales) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    if (k == MX_NV) mk_nvfp4_quantize_groups(qt->wdtype, x, G, group, s->scale, scales, codes, &e); /* f32 (mx_bf16_ok) */
    for (size_t g = 0; k != MX_NV && g < G; g++) {
        const float *xg = (const float *)x + g * group;
        const uint16_t *xbg = (const uint16_t *)x + g * group;
        float am = xb ? mk_ct_absmax_bf16(xbg, group) : mk_ct_absmax(xg, group);
        uint8_t ex = mk_mx_scale_exp(qt->wdtype, bits, am);
        if (xb) mk_mx_quantize_bf16(bits, xbg, group, ex, codes + g * group, &e);
        else mk_mx_quantize(qt->wdtype, bits, xg, group, ex, codes + g * group, &e);
        scales[g] = mk_mx_stored_exp(ex);
    }
    if (k == MX_FP8) {
        MK_TRY(mk_qc_put(q, qt->out0, e0, codes, n));
    } else {
        mk_fp4_pack(codes, n, codes); /* in place: byte j is written after codes 2j, 2j + 1 are read */
        MK_TRY(mk_qc_put(q, qt->out0, e0 / 2, codes, n / 2));
    }
    MK_TRY(mk_qc_put(q, qt->out0 + 1, e0 / group, scales, G));
    return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
}

/* nvfp4's kernel reads f32 values (its prepass holds them anyway). */
static bool mx_bf16_ok(const mk_qplan *p, size_t i)
{
    (void)i;
    return mx_kind(p->o.fmt) != MX_NV;
}

static mk_status mx_end(mk_qcons *q, size_t i)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    const tensor_state *s = mk_qc_state(q, i);
    if (!s) return MK_OK;
    return mk_qc_put(q, qt->out0 + 2, 0, &s->scale, 4);
}

enum { X_SCALE = 0, X_GLOBAL };

static mk_status fp4_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const mk_tensor_info *t = &in->tensors[i];
    if (t->dtype == MK_U8 && mk_qdec_module(t->name, ".weight_packed", mod)) *main = (long)i;
    return MK_OK;
}

static mk_status mxfp8_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const mk_tensor_info *t = &in->tensors[i];
    if (t->dtype != MK_F8_E4M3 || !mk_qdec_module(t->name, ".weight", mod)) return MK_OK;
    long si = mk_qdec_find(in, mod, ".weight_scale");
    if (si >= 0 && in->tensors[si].dtype == MK_U8) *main = (long)i;
    return MK_OK;
}

static mk_status mx_parse(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d)
{
    (void)i;
    const mk_tensor_info *w = &in->tensors[d->main];
    char sh[160];
    d->aux[X_SCALE] = mk_qdec_find(in, mod, ".weight_scale");
    d->aux[X_GLOBAL] = mk_qdec_find(in, mod, ".weight_global_scale");
    d->extra[0] = mk_qdec_find(in, mod, ".input_global_scale");
    d->extra[1] = mk_qdec_find(in, mod, ".weight_zero_point");
    if (d->aux[X_SCALE] < 0) return mk_error(MK_ERR_FORMAT, "%s: %s needs %s.weight_scale", in->path, w->name, mod);
    const mk_tensor_info *sc = &in->tensors[d->aux[X_SCALE]];
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected [rows, columns], found %s", in->path, w->name, mk_shape_str(w, sh));
    const bool fp8 = w->dtype == MK_F8_E4M3;
    int kind = fp8 ? MX_FP8 : sc->dtype == MK_F8_E4M3 ? MX_NV : MX_FP4;
    if (!fp8 && sc->dtype != MK_F8_E4M3 && sc->dtype != MK_U8)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected F8_E4M3 (nvfp4) or U8 (mxfp4) scales, found %s", in->path, sc->name,
                        mk_dtype_name(sc->dtype));
    d->fmt = mk_qformat_of(d->fam, kind, 0);
    if (!d->fmt) MK_BUG("no MX row of this variant");
    mk_qdec_shape2(d, (uint64_t)w->shape[0], (uint64_t)w->shape[1] * (fp8 ? 1 : 2));
    d->group = d->fmt->block;
    if (d->cols % d->group)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu columns are not a multiple of %s's group of %llu", in->path, w->name,
                        (unsigned long long)d->cols, d->fmt->name, (unsigned long long)d->group);
    d->ngroups = d->cols / d->group;
    if (c->group > 0 && (uint64_t)c->group != d->group)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %s has groups of %llu, but config.json says group_size %ld", in->path, w->name,
                        d->fmt->name, (unsigned long long)d->group, c->group);
    MK_TRY(mk_qdec_expect(in, d->aux[X_SCALE], kind == MX_NV ? MK_F8_E4M3 : MK_U8, 2, MK_QSHAPE((int64_t)d->rows, (int64_t)d->ngroups),
                          "group scales"));
    if (kind == MX_NV) {
        if (d->aux[X_GLOBAL] < 0) return mk_error(MK_ERR_FORMAT, "%s: %s needs %s.weight_global_scale", in->path, w->name, mod);
        MK_TRY(mk_qdec_expect(in, d->aux[X_GLOBAL], MK_F32, 1, MK_QSHAPE(1), "global scale"));
    }
    if (d->extra[1] >= 0)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_zero_point: asymmetric %s is not supported", in->path, mod, d->fmt->name);
    d->sdtype = MK_BF16; /* compressed-tensors decompresses these to bf16 */
    d->orig = MK_DTYPE_NONE;
    return MK_OK;
}

static void mx_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    (void)c;
    if (!first) return;
    info->block = d->group;
    info->block_word = "group";
}

static mk_status mx_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const int kind = mx_kind(d->fmt);
    const unsigned bits = d->fmt->bits;
    const uint64_t g0 = e0 / d->group, g1 = (e0 + n - 1) / d->group, c0 = e0 / 2 * 2, c1 = (e0 + n + 1) / 2 * 2;
    uint8_t *raw = NULL, *sc = NULL, codes[64];
    float gs = 1.0f, vals[64];
    mk_status s = bits == 8 ? mk_qdec_read(in, d->main, e0, n, (void **)&raw) : mk_qdec_read(in, d->main, c0 / 2, (c1 - c0) / 2, (void **)&raw);
    if (s == MK_OK) s = mk_qdec_read(in, (size_t)d->aux[X_SCALE], g0, g1 - g0 + 1, (void **)&sc);
    if (s == MK_OK && kind == MX_NV) {
        void *g = NULL;
        s = mk_qdec_read(in, (size_t)d->aux[X_GLOBAL], 0, 4, &g);
        if (s == MK_OK) memcpy(&gs, g, 4);
        free(g);
    }
    for (size_t k = 0; s == MK_OK && k < n;) {
        uint64_t e = e0 + k, g = e / d->group, m = (g + 1) * d->group - e;
        size_t cnt = m < n - k ? (size_t)m : n - k;
        cnt = cnt < 64 ? cnt : 64;
        for (size_t j = 0; j < cnt; j++) {
            uint64_t ej = e + j;
            codes[j] = bits == 8 ? raw[ej - e0] : (uint8_t)((raw[(ej - c0) / 2] >> ((ej & 1) * 4)) & 15);
        }
        if (kind == MX_NV) mk_nvfp4_dequant(codes, cnt, gs, sc[g - g0], vals);
        else mk_mx_dequant(bits, codes, cnt, sc[g - g0], vals);
        memcpy(out + k, vals, cnt * sizeof *vals);
        k += cnt;
    }
    free(raw);
    free(sc);
    return s;
}

#define MX_FAMILY(suffix, recognise_fn)                                                   \
    {                                                                                      \
        .layout = "compressed-tensors", .loaders = "vLLM; transformers + compressed-tensors", \
        .card = ct_card, .main_suffix = suffix, .settings = 0, .resolve = mx_resolve,      \
        .describe = mx_describe, .select = mx_select, .kept_note = mx_kept_note,           \
        .stored = mx_layout, .config_json = mx_config, .begin = mx_begin,                  \
        .state_free = free, .rows_x = mx_rows_x, .bf16_ok = mx_bf16_ok, .end = mx_end,     \
        .wants_prepass = mx_wants_prepass, .observe = tensor_observe,                          \
        .observe_end = mx_observe_end, .read_config = read_config,                         \
        .recognise = recognise_fn, .parse = mx_parse, .info = mx_info, .decode = mx_decode, \
    }
/* nvfp4 and mxfp4 (codes in P.weight_packed), and mxfp8 (codes in P.weight) */
const mk_qfamily mk_qfam_ct_fp4 = MX_FAMILY(".weight_packed", fp4_recognise);
const mk_qfamily mk_qfam_ct_mxfp8 = MX_FAMILY(".weight", mxfp8_recognise);

/* ======== mixed precision: one config group per plan ============================================== */

static bool ct_cfg_of(const mk_qplan *p, ct_config *c)
{
    const mk_qfamily *f = p->o.fam;
    if (f == &mk_qfam_ct_int) *c = int_cfg(p);
    else if (f == &mk_qfam_ct_fp8) *c = fp8_cfg(p);
    else if (f == &mk_qfam_ct_fp4 || f == &mk_qfam_ct_mxfp8) *c = mx_cfg(p);
    else return false;
    return true;
}

bool mk_ct_can_mix(const mk_qfamily *fam)
{
    return fam == &mk_qfam_ct_int || fam == &mk_qfam_ct_fp8 || fam == &mk_qfam_ct_fp4 || fam == &mk_qfam_ct_mxfp8;
}

void mk_ct_mixed_config(const mk_qplan *const *plans, const char *const *targets, size_t np, const mk_qplan *view, mk_buf *b)
{
    const char *format = NULL;
    mk_buf_puts(b, "{\n  \"config_groups\": {");
    for (size_t k = 0; k < np; k++) {
        ct_config c;
        if (!ct_cfg_of(plans[k], &c)) MK_BUG("mixed precision of a layout other than compressed-tensors");
        if (!format) format = c.format;
        else if (strcmp(format, c.format) != 0) format = "mixed-precision";
        mk_buf_printf(b, "%s\n    \"group_%zu\": ", k ? "," : "", k);
        group_json(plans[k], b, &c, targets[k]);
    }
    mk_buf_puts(b, "\n  },\n");
    config_tail(view, b, format ? format : "dense");
}
