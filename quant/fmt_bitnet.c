/* fmt_bitnet.c - the BitNet layout transformers loads (quant_method "bitnet", BitLinear;
 * transformers' integrations/bitnet.py), written with BitNet b1.58's absmean rule
 * (ternary.h). A quantized weight P.weight [rows, cols] (rows a multiple of 4, as BitLinear's
 * buffer of [rows / 4, cols] needs) becomes:
 *   P.weight U8 [rows / 4, cols]: four ternary codes a byte, packed along dim 0
 *   P.weight_scale [1] in the weight's dtype: 1 / mean |W| (BitLinear divides by it)
 * Owns: the family's plan, encoder, quantization_config and decoder.
 * Must not: read files other than through the mk_source it is given, or know other layouts.
 */
#include "qformat.h"
#include "ternary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const mk_qfamily mk_qfam_bitnet;

static mk_status bn_resolve(mk_qopts *o, bool streaming)
{
    (void)o;
    if (streaming)
        return mk_error(MK_ERR_USAGE, "ternary's per-tensor scale needs the whole tensor before its first value; quantize the "
                                      "merged model instead");
    return MK_OK;
}

static void bn_describe(const mk_qopts *o, char *buf, size_t len)
{
    (void)o;
    snprintf(buf, len, ", per tensor absmean");
}

static const char *bn_select(mk_qplan *p, size_t i, size_t *warned)
{
    const mk_qtensor *q = &p->t[i];
    if (q->rows % 4 == 0) return NULL;
    if (warned && (*warned)++ < 8)
        mk_warn("%s: %llu rows are not a multiple of 4 (BitLinear packs 4 rows a byte); kept unquantized and listed in "
                "\"modules_to_not_convert\"",
                p->in[i].name, (unsigned long long)q->rows);
    return "rows not a multiple of 4";
}

static mk_status bn_stored(mk_qplan *p, size_t i, const char *mod)
{
    const mk_qtensor *q = &p->t[i];
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight", mod), MK_U8, 2,
                            MK_QSHAPE((int64_t)mk_ternary_byte_rows(q->rows), (int64_t)q->cols)));
    return mk_qplan_add_out(p, mk_asprintf("%s.weight_scale", mod), q->wdtype, 1, MK_QSHAPE(1));
}

/* BitNetQuantConfig.to_dict, keys sorted. */
static void bn_config(const mk_qplan *p, mk_buf *b)
{
    mk_buf_puts(b, "{\n  \"linear_class\": \"bitlinear\",\n  \"modules_to_not_convert\": ");
    mk_qplan_module_list(p, b);
    mk_buf_puts(b, ",\n  \"quant_method\": \"bitnet\",\n  \"quantization_mode\": \"offline\",\n");
    mk_buf_puts(b, "  \"rms_norm_eps\": 1e-06,\n  \"use_rms_norm\": false\n}");
}

/* Per weight: the |W| sum of each row (the prepass; added in row order at its end), the
 * stored scale, and the packed codes (chunks OR their rows' bits in; written at the end). */
typedef struct bn_state {
    double *row_abs;
    float scale;
    uint8_t *packed;
} bn_state;

static void bn_state_free(void *state)
{
    bn_state *s = state;
    if (!s) return;
    free(s->row_abs);
    free(s->packed);
    free(s);
}

static mk_status bn_begin(mk_qcons *q, size_t i, void **state)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    bn_state *s = mk_calloc(1, sizeof *s);
    if (s) s->row_abs = mk_calloc(qt->rows ? qt->rows : 1, sizeof *s->row_abs);
    if (s && s->row_abs) s->packed = mk_calloc(qt->numel / 4 ? qt->numel / 4 : 1, 1);
    *state = s;
    return s && s->packed ? MK_OK : MK_ERR_NOMEM;
}

static bool bn_wants_prepass(const mk_qplan *p, size_t i)
{
    (void)p, (void)i;
    return true;
}

static mk_status bn_observe(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    bn_state *s = mk_qc_state(q, i);
    const uint64_t cols = mk_qc_plan(q)->t[i].cols;
    mk_ternary_row_abs(x, n / cols, (size_t)cols, s->row_abs + e0 / cols);
    return MK_OK;
}

static mk_status bn_observe_end(mk_qcons *q, size_t i)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    bn_state *s = mk_qc_state(q, i);
    double sum = 0;
    for (uint64_t r = 0; r < qt->rows; r++) sum += s->row_abs[r];
    s->scale = mk_ternary_scale(sum, qt->numel, qt->wdtype);
    return MK_OK;
}

static mk_status bn_rows(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    bn_state *s = mk_qc_state(q, i);
    mk_qerr e = {0, 0, 0};
    mk_qc_lock(q, i); /* rows of other chunks share bytes */
    mk_ternary_pack_rows(s->packed, qt->rows, qt->cols, e0 / qt->cols, n / qt->cols, x, s->scale, qt->wdtype, &e);
    mk_qc_unlock(q, i);
    return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
}

static mk_status bn_end(mk_qcons *q, size_t i)
{
    const mk_qtensor *qt = &mk_qc_plan(q)->t[i];
    const bn_state *s = mk_qc_state(q, i);
    uint8_t b[4];
    mk_dtype_info(qt->wdtype)->from_f32(&s->scale, b, 1);
    MK_TRY(mk_qc_put(q, qt->out0, 0, s->packed, qt->numel / 4));
    return mk_qc_put(q, qt->out0 + 1, 0, b, mk_dtype_size(qt->wdtype));
}

/* ---- decoding ---- */

enum { A_SCALE = 0 };

/* P.weight U8 2-D with a one-element float P.weight_scale (compressed-tensors' U8 weights are
 * P.weight_packed; MXFP8's P.weight is F8; bitsandbytes has no weight_scale). */
static mk_status bn_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const mk_tensor_info *t = &in->tensors[i];
    if (t->dtype != MK_U8 || t->ndim != 2 || !mk_qdec_module(t->name, ".weight", mod)) return MK_OK;
    long si = mk_qdec_find(in, mod, ".weight_scale");
    if (si < 0 || !mk_qdec_is_float(in->tensors[si].dtype) || in->tensors[si].numel != 1) return MK_OK;
    *main = (long)i;
    return MK_OK;
}

static mk_status bn_parse(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d)
{
    (void)i, (void)c;
    const mk_tensor_info *w = &in->tensors[d->main];
    d->aux[A_SCALE] = mk_qdec_find(in, mod, ".weight_scale");
    uint64_t rows, numel;
    if (w->shape[0] <= 0 || w->shape[1] <= 0 || __builtin_mul_overflow((uint64_t)w->shape[0], 4u, &rows) ||
        __builtin_mul_overflow(rows, (uint64_t)w->shape[1], &numel) || numel > (UINT64_MAX >> 3)) {
        char sh[160];
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: packed ternary shape %s is empty or too large", in->path, w->name,
                        mk_shape_str(w, sh));
    }
    mk_qdec_shape2(d, rows, (uint64_t)w->shape[1]);
    d->fmt = mk_qformat_of(&mk_qfam_bitnet, 0, 0);
    d->sdtype = d->orig = in->tensors[d->aux[A_SCALE]].dtype;
    d->ngroups = 0;
    return MK_OK;
}

static void bn_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    (void)d, (void)c;
    if (first) info->per_tensor = true;
}

static mk_status bn_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const uint64_t R = d->rows / 4, r0 = e0 / d->cols, r1 = (e0 + n - 1) / d->cols;
    /* the byte rows behind rows r0..r1: a range within one quarter, else all of them */
    const uint64_t b0 = r0 / R == r1 / R ? r0 % R : 0, b1 = r0 / R == r1 / R ? r1 % R : R - 1;
    void *bytes = NULL, *sraw = NULL;
    float s;
    MK_TRY(mk_qdec_read(in, d->main, b0 * d->cols, (b1 - b0 + 1) * d->cols, &bytes));
    mk_status st = mk_qdec_read(in, (size_t)d->aux[A_SCALE], 0, mk_dtype_size(d->sdtype), &sraw);
    if (st == MK_OK) mk_dtype_info(d->sdtype)->to_f32(sraw, &s, 1);
    for (size_t k = 0; st == MK_OK && k < n; k++) {
        uint64_t e = e0 + k, r = e / d->cols;
        out[k] = mk_ternary_value((const uint8_t *)bytes + (r % R - b0) * d->cols, d->rows, r, e % d->cols, s, d->sdtype);
    }
    free(bytes);
    free(sraw);
    return st;
}

const mk_qfamily mk_qfam_bitnet = {
    .layout = "bitnet",
    .loaders = "transformers (BitNet BitLinear)",
    .card = "\nLoad it with transformers: `AutoModelForCausalLM.from_pretrained(path)` (BitNet's BitLinear, which also quantizes "
            "activations to 8 bits). Ternary weights made without training lose most of the model's quality: a starting point "
            "for quantization-aware training, not a model to use as is.\n",
    .main_suffix = ".weight",
    .resolve = bn_resolve,
    .describe = bn_describe,
    .select = bn_select,
    .stored = bn_stored,
    .config_json = bn_config,
    .begin = bn_begin,
    .state_free = bn_state_free,
    .rows = bn_rows,
    .end = bn_end,
    .wants_prepass = bn_wants_prepass,
    .observe = bn_observe,
    .observe_end = bn_observe_end,
    .recognise = bn_recognise,
    .parse = bn_parse,
    .info = bn_info,
    .decode = bn_decode,
};
