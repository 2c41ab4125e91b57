/* fmt_bnb.c - the bitsandbytes layouts, as transformers saves them (reference
 * quantization-formats.md 1.6 and 2): the 4-bit family (nf4, fp4; blocks with an f32
 * absmax, or with double quant an 8-bit absmax in nested blocks of 256) and LLM.int8 (int8
 * codes with one f32 scale per row), with the quantization_config transformers writes.
 * A quantized weight P.weight (row-major [rows, cols], n elements) becomes:
 *   4-bit  P.weight U8 [(n+1)/2, 1], P.weight.absmax F32 [ceil(n/block)] (U8 with double
 *          quant, plus P.weight.nested_absmax F32 [ceil(blocks/256)] and
 *          P.weight.nested_quant_map F32 [256]), P.weight.quant_map F32 [16],
 *          P.weight.quant_state.bitsandbytes__nf4 U8 (the JSON blob)
 *   int8   P.weight I8 [rows, cols], P.SCB F32 [rows], P.weight_format U8 [] (= 0)
 * Owns: both families' settings, plans, encoders, config text and decoders. The arithmetic
 * is bnb.c's (bit-exact kernels); this file only arranges their bytes.
 * Must not: read files other than through the mk_source it is given, or know the other
 * layouts.
 */
#include "bnb.h"
#include "qformat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bitsandbytes' quant_type of each 4-bit code table (mk_qformat.variant = mk_bnb4_type). */
static const char *const quant_type[2] = {[MK_BNB_NF4] = "nf4", [MK_BNB_FP4] = "fp4"};

/* ---- quantization_config (transformers' BitsAndBytesConfig.to_dict, keys sorted) ------------- */

static void config_json(const mk_qplan *p, mk_buf *b, bool b4)
{
    const mk_qopts *o = &p->o;
    const char *cd = o->compute_dtype;
    if (!cd) { /* the dtype of the first quantized weight */
        cd = "float32";
        for (size_t i = 0; i < p->n && b4; i++)
            if (p->t[i].quantized) {
                cd = mk_dtype_info(p->t[i].wdtype)->torch_name;
                break;
            }
    }
    mk_buf list = {0};
    bool dflt = mk_qplan_module_list(p, &list);
    mk_buf_printf(b, "{\n  \"_load_in_4bit\": %s,\n  \"_load_in_8bit\": %s,\n", b4 ? "true" : "false", b4 ? "false" : "true");
    mk_buf_printf(b, "  \"bnb_4bit_compute_dtype\": \"%s\",\n  \"bnb_4bit_quant_storage\": \"uint8\",\n", cd);
    /* LLM.int8 keeps transformers' default 4-bit settings: fp4, no double quant */
    mk_buf_printf(b, "  \"bnb_4bit_quant_type\": \"%s\",\n  \"bnb_4bit_use_double_quant\": %s,\n",
                  b4 ? quant_type[o->fmt->variant] : "fp4", o->double_quant ? "true" : "false");
    mk_buf_puts(b, "  \"llm_int8_enable_fp32_cpu_offload\": false,\n  \"llm_int8_has_fp16_weight\": false,\n");
    /* null = transformers' default (skip lm_head); a list replaces the default */
    mk_buf_puts(b, "  \"llm_int8_skip_modules\": ");
    if (dflt) mk_buf_puts(b, "null");
    else mk_buf_put(b, list.data, list.len);
    mk_buf_puts(b, ",\n");
    b->failed |= list.failed;
    mk_buf_free(&list);
    mk_buf_printf(b, "  \"llm_int8_threshold\": 6.0,\n  \"load_in_4bit\": %s,\n  \"load_in_8bit\": %s,\n", b4 ? "true" : "false",
                  b4 ? "false" : "true");
    mk_buf_puts(b, "  \"quant_method\": \"bitsandbytes\"\n}");
}

/* ======== 4-bit: nf4, fp4 ======================================================================= */

static mk_status b4_resolve(mk_qopts *o, bool streaming)
{
    (void)streaming; /* double quant inside a merge pads its blob and bounds its max error */
    if (!o->block) o->block = o->fmt->block;
    if (o->block < 32 || o->block > 4096 || (o->block & (o->block - 1)))
        return mk_error(MK_ERR_USAGE, "--block-size must be a power of two from 32 to 4096 (bitsandbytes), got %u", o->block);
    return MK_OK;
}

static void b4_describe(const mk_qopts *o, char *buf, size_t len)
{
    snprintf(buf, len, ", block %u%s", o->block, o->double_quant ? ", double quant" : "");
}

/* ---- plan ---- */

#define PYFLOAT_RESERVE 26 /* longest repr of an f32 widened to double, with sign and exponent */

/* QuantState.as_dict(packed=True) blob: json.dumps with the default separators, keys in
 * insertion order (reference 1.6). */
static char *quant_state_json(const mk_qplan *p, size_t i, const char *offset_text)
{
    const mk_tensor_info *ti = &p->in[i];
    mk_buf b = {0};
    mk_buf_printf(&b, "{\"quant_type\": \"%s\", \"blocksize\": %u, \"dtype\": \"%s\", \"shape\": [", quant_type[p->o.fmt->variant],
                  p->o.block, mk_dtype_info(ti->dtype)->torch_name);
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

static mk_status b4_layout(mk_qplan *p, size_t i, const char *mod)
{
    mk_qtensor *q = &p->t[i];
    const bool dq = p->o.double_quant;
    int64_t nb = mk_qcdiv(q->numel, p->o.block);
    char num[40];
    free(q->json);
    if (q->has_offset || !dq) {
        q->json = quant_state_json(p, i, mk_fmt_pyfloat((double)q->offset, num));
    } else { /* the offset is known at the end: reserve the longest */
        memset(num, '0', PYFLOAT_RESERVE);
        num[PYFLOAT_RESERVE] = 0;
        q->json = quant_state_json(p, i, num);
    }
    if (!q->json) return MK_ERR_NOMEM;
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight", mod), MK_U8, 2, MK_QSHAPE(mk_qcdiv(q->numel, 2), 1)));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight.absmax", mod), dq ? MK_U8 : MK_F32, 1, MK_QSHAPE(nb)));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight.quant_map", mod), MK_F32, 1, MK_QSHAPE(16)));
    if (dq) {
        MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight.nested_absmax", mod), MK_F32, 1,
                                MK_QSHAPE(mk_qcdiv((uint64_t)nb, MK_BNB_NESTED_BLOCK))));
        MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight.nested_quant_map", mod), MK_F32, 1, MK_QSHAPE(256)));
    }
    return mk_qplan_add_out(p, mk_asprintf("%s.weight.quant_state.bitsandbytes__%s", mod, quant_type[p->o.fmt->variant]), MK_U8, 1,
                            MK_QSHAPE((int64_t)strlen(q->json)));
}

static void b4_config(const mk_qplan *p, mk_buf *b) { config_json(p, b, true); }

/* Double quant: the absmax mean, so that the blob has its exact length. */
static uint64_t b4_offset_scratch(const mk_qplan *p, size_t i)
{
    return p->o.double_quant ? mk_bnb_nblocks(p->t[i].numel, p->o.block) : 0;
}

static void b4_offset_rows(const mk_qplan *p, size_t i, float *absmax, uint64_t e0, const float *x, uint64_t n)
{
    (void)i;
    mk_bnb4_absmax(p->o.block, x, (size_t)n, absmax + e0 / p->o.block);
}

static float b4_offset_end(const mk_qplan *p, size_t i, const float *absmax)
{
    return mk_bnb_absmax_mean(absmax, (size_t)mk_bnb_nblocks(p->t[i].numel, p->o.block));
}

/* ---- encoding ---- */

/* Double quant only (single quant keeps no state). */
typedef struct b4_state {
    uint64_t nb;               /* blocks */
    float *absmax;             /* f32 block absmax [nb] */
    bool dq_ready;             /* nested codes and decoded absmax are known */
    uint8_t *dq_q;             /* [nb] */
    float *dq_nested;          /* [ceil(nb / 256)] */
    float *dq_absmax;          /* decoded absmax [nb] */
    float dq_offset;
    float *blk;                /* without a prepass: 4 sums per block */
} b4_state;

enum { BLK_E, BLK_C, BLK_V, BLK_M }; /* sum (x - v a)^2, sum (x - v a) v, sum v^2, max |x - v a| */

static uint64_t b4_align(const mk_qplan *p, size_t i)
{
    (void)i;
    return p->o.block;
}

static void b4_state_free(void *state)
{
    b4_state *s = state;
    if (!s) return;
    free(s->absmax);
    free(s->dq_q);
    free(s->dq_nested);
    free(s->dq_absmax);
    free(s->blk);
    free(s);
}

static mk_status b4_begin(mk_qcons *q, size_t i, void **state)
{
    const mk_qplan *p = mk_qc_plan(q);
    if (!p->o.double_quant) return MK_OK;
    b4_state *s = *state = mk_calloc(1, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    s->nb = mk_bnb_nblocks(p->t[i].numel, p->o.block);
    s->absmax = mk_malloc((size_t)s->nb * sizeof *s->absmax);
    s->blk = mk_malloc((size_t)s->nb * 4 * sizeof *s->blk);
    if (!s->absmax || !s->blk) return MK_ERR_NOMEM;
    return MK_OK;
}

/* Double quant without a prepass: the decoding absmax is not known yet, so keep per block
 * the sums from which the end computes the exact squared error (v: scratch for codes). */
static void b4_block_sums(b4_state *s, unsigned B, mk_bnb4_type ty, uint64_t e0, const float *x, size_t n, const uint8_t *packed,
                               const float *am, float *v, double *sx2)
{
    const uint64_t b0 = e0 / B;
    const size_t nb = (size_t)mk_bnb_nblocks(n, B);
    mk_bnb4_codes(ty, packed, e0, n, v);
    *sx2 = 0;
    for (size_t b = 0; b < nb; b++) {
        float se = 0, sc = 0, sv2 = 0, m = 0, a = am[b];
        for (size_t j = b * B; j < (b + 1) * B && j < n; j++) {
            float d = x[j] - v[j] * a;
            se += d * d;
            sc += d * v[j];
            sv2 += v[j] * v[j];
            m = fabsf(d) > m ? fabsf(d) : m;
            *sx2 += (double)x[j] * x[j];
        }
        float *k = s->blk + 4 * (b0 + b);
        k[BLK_E] = se;
        k[BLK_C] = sc;
        k[BLK_V] = sv2;
        k[BLK_M] = m;
    }
}

/* x: f32 values, or (xb: single quant) the bf16 bit patterns of a bf16 weight */
static mk_status b4_rows_x(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool xb)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    b4_state *s = mk_qc_state(q, i); /* NULL without double quant */
    const unsigned B = p->o.block;
    const mk_bnb4_type ty = (mk_bnb4_type)p->o.fmt->variant;
    const size_t nb = (size_t)mk_bnb_nblocks(n, B);
    const uint64_t b0 = e0 / B;
    uint8_t *packed = mk_qc_scratch(q, MK_QSCR_CODES, (n + 1) / 2);
    float *am = mk_qc_scratch(q, MK_QSCR_AUX, nb * sizeof *am);
    if (!packed || !am) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    bool sums = s && !s->dq_ready; /* double quant inside a merge */
    mk_bnb4_quantize_x(ty, B, x, xb, n, am, packed, s && s->dq_ready ? s->dq_absmax + b0 : NULL, sums ? NULL : &e);
    MK_TRY(mk_qc_put(q, qt->out0, e0 / 2, packed, (n + 1) / 2));
    if (!s) MK_TRY(mk_qc_put(q, qt->out0 + 1, b0 * 4, am, nb * 4));
    else memcpy(s->absmax + b0, am, nb * sizeof *am);
    if (!sums) return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
    /* the nested absmax is known only at the end: keep per-block sums for the correction */
    float *v = mk_qc_scratch(q, MK_QSCR_XH, n * sizeof *v);
    if (!v) return MK_ERR_NOMEM;
    double sx2;
    b4_block_sums(s, B, ty, e0, x, n, packed, am, v, &sx2); /* f32: bf16_ok keeps bf16 from double quant */
    return mk_qc_add_rec(q, i, e0, sx2, 0, 0);
}

/* Double quant reads f32 values (the prepass, the per-block sums). */
static bool b4_bf16_ok(const mk_qplan *p, size_t i)
{
    (void)i;
    return !p->o.double_quant;
}

/* Nested quantization of the block absmax (once the whole array is known). */
static mk_status dq_compute(const mk_qplan *p, size_t i, b4_state *s)
{
    const mk_qtensor *qt = &p->t[i];
    size_t nb = (size_t)s->nb, nn = (nb + MK_BNB_NESTED_BLOCK - 1) / MK_BNB_NESTED_BLOCK;
    s->dq_q = mk_malloc(nb ? nb : 1);
    s->dq_nested = mk_malloc((nn ? nn : 1) * sizeof *s->dq_nested);
    s->dq_absmax = mk_malloc((nb ? nb : 1) * sizeof *s->dq_absmax);
    if (!s->dq_q || !s->dq_nested || !s->dq_absmax) return MK_ERR_NOMEM;
    s->dq_offset = qt->has_offset ? qt->offset : mk_bnb_absmax_mean(s->absmax, nb);
    mk_bnb_nested_quantize(s->absmax, nb, s->dq_offset, s->dq_q, s->dq_nested);
    mk_bnb_nested_dequant(s->dq_q, s->dq_nested, s->dq_offset, 0, nb, s->dq_absmax);
    s->dq_ready = true;
    return MK_OK;
}

/* Double quant's nested tensors; without a prepass, the exact sum of squared errors from the
 * per-block sums, and a bound of the max error. */
static mk_status b4_end_nested(mk_qcons *q, size_t i, b4_state *s)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    bool had_prepass = s->dq_ready;
    if (!had_prepass) MK_TRY(dq_compute(p, i, s));
    size_t nb = (size_t)s->nb;
    MK_TRY(mk_qc_put(q, qt->out0 + 1, 0, s->dq_q, nb));
    MK_TRY(mk_qc_put(q, qt->out0 + 3, 0, s->dq_nested, p->out[qt->out0 + 3].nbytes));
    MK_TRY(mk_qc_put(q, qt->out0 + 4, 0, mk_bnb_dynamic_map, 1024));
    if (had_prepass) return MK_OK;
    double se2 = 0;
    float mb = 0;
    for (size_t b = 0; b < nb; b++) {
        const float *k = s->blk + 4 * b;
        double d = (double)s->absmax[b] - s->dq_absmax[b];
        se2 += k[BLK_E] + 2 * d * k[BLK_C] + d * d * k[BLK_V];
        float m = k[BLK_M] + (float)fabs(d);
        mb = m > mb ? m : mb;
    }
    mk_qc_set_error(q, i, se2, mb);
    return MK_OK;
}

static mk_status b4_end(mk_qcons *q, size_t i)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    b4_state *s = mk_qc_state(q, i);
    MK_TRY(mk_qc_put(q, qt->out0 + 2, 0, mk_bnb4_code[p->o.fmt->variant], 64));
    size_t json_out = qt->out0 + 3;
    float offset = 0;
    if (s) {
        MK_TRY(b4_end_nested(q, i, s));
        json_out = qt->out0 + 5;
        offset = s->dq_offset;
    }
    uint64_t len = p->out[json_out].nbytes;
    char *j = mk_qplan_final_json(p, i, offset, (size_t)len);
    if (!j) return MK_ERR_NOMEM;
    mk_status st = mk_qc_put(q, json_out, 0, j, len);
    free(j);
    return st;
}

/* Double quant: the whole absmax first gives exact statistics and the exact offset. */
static bool b4_wants_prepass(const mk_qplan *p, size_t i)
{
    (void)i;
    return p->o.double_quant;
}

static mk_status b4_observe(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n)
{
    const mk_qplan *p = mk_qc_plan(q);
    b4_state *s = mk_qc_state(q, i);
    mk_bnb4_absmax(p->o.block, x, n, s->absmax + e0 / p->o.block);
    return MK_OK;
}

static mk_status b4_observe_end(mk_qcons *q, size_t i) { return dq_compute(mk_qc_plan(q), i, mk_qc_state(q, i)); }

/* ---- decoding ---- */

enum { A_ABSMAX = 0, A_QMAP, A_NESTED, A_NMAP, A_JSON };

static mk_status b4_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const char *name = in->tensors[i].name;
    for (int t = 0; t < 2; t++) {
        char sfx[64];
        snprintf(sfx, sizeof sfx, ".weight.quant_state.bitsandbytes__%s", quant_type[t]);
        if (!mk_qdec_module(name, sfx, mod)) continue;
        *main = mk_qdec_find(in, mod, ".weight");
        if (*main < 0) return mk_error(MK_ERR_FORMAT, "%s: %s has no %s.weight", in->path, name, mod);
        return MK_OK;
    }
    return MK_OK;
}

extern const mk_qfamily mk_qfam_bnb4;

/* The blob's quant_type, blocksize, dtype and shape. */
static mk_status b4_parse_blob(mk_source *in, size_t js, mk_qdec *d, mk_json *j)
{
    const char *jname = in->tensors[js].name;
    uint32_t qt = mk_json_get(j, 0, "quant_type"), bs = mk_json_get(j, 0, "blocksize"), dt = mk_json_get(j, 0, "dtype");
    uint32_t sh = mk_json_get(j, 0, "shape");
    const char *tname = quant_type[d->fmt->variant];
    if (!qt || mk_json_at(j, qt)->type != MK_JSON_STR || strcmp(mk_json_strv(j, qt), tname) != 0)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: quant_type must be \"%s\" (the tensor's name says so)", in->path, jname, tname);
    const mk_json_node *b = bs ? mk_json_at(j, bs) : NULL;
    if (!b || !b->is_uint || b->u < 16 || b->u > 65536 || (b->u & (b->u - 1)))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: blocksize must be a power of two from 16 to 65536", in->path, jname);
    d->block = (unsigned)b->u;
    d->orig = dt && mk_json_at(j, dt)->type == MK_JSON_STR ? mk_dtype_from_user(mk_json_strv(j, dt)) : MK_DTYPE_NONE;
    if (!mk_qdec_is_float(d->orig))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: dtype must be bfloat16, float16 or float32", in->path, jname);
    if (!sh || mk_json_at(j, sh)->type != MK_JSON_ARR || mk_json_at(j, sh)->count < 1 || mk_json_at(j, sh)->count > MK_MAX_DIMS)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: shape must be a list of 1 to %d sizes", in->path, jname, MK_MAX_DIMS);
    uint64_t n = 1, last = 1;
    d->ndim = 0;
    for (uint32_t c = mk_json_at(j, sh)->first; c; c = mk_json_at(j, c)->next) {
        const mk_json_node *v = mk_json_at(j, c);
        if (!v->is_uint || v->u == 0 || !mk_mul_u64(n, v->u, &n) || n > (1ull << 40))
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: shape sizes must be positive and their product at most 2^40", in->path, jname);
        last = v->u;
        d->shape[d->ndim++] = (int64_t)v->u;
    }
    d->numel = n;
    d->cols = last;
    d->rows = n / last;
    return MK_OK;
}

/* Double quant: the nested blocks, offset and the stored nested map (finite). */
static mk_status b4_parse_nested(mk_source *in, const char *mod, size_t js, const mk_json *j, mk_qdec *d, uint64_t nb)
{
    const char *jname = in->tensors[js].name;
    uint32_t nbk = mk_json_get(j, 0, "nested_blocksize"), off = mk_json_get(j, 0, "nested_offset");
    if (!nbk || !mk_json_at(j, nbk)->is_uint || mk_json_at(j, nbk)->u != MK_BNB_NESTED_BLOCK)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: nested_blocksize must be %d", in->path, jname, MK_BNB_NESTED_BLOCK);
    if (!off || mk_json_at(j, off)->type != MK_JSON_NUM || !isfinite(mk_json_at(j, off)->d))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: nested_offset must be a finite number", in->path, jname);
    d->offset = (float)mk_json_at(j, off)->d;
    if (d->aux[A_NMAP] < 0) return mk_error(MK_ERR_FORMAT, "%s: %s.weight.nested_quant_map is missing", in->path, mod);
    MK_TRY(mk_qdec_expect(in, d->aux[A_ABSMAX], MK_U8, 1, MK_QSHAPE((int64_t)nb), "nested absmax codes"));
    MK_TRY(mk_qdec_expect(in, d->aux[A_NESTED], MK_F32, 1, MK_QSHAPE((int64_t)mk_bnb_nblocks(nb, MK_BNB_NESTED_BLOCK)), "nested_absmax"));
    MK_TRY(mk_qdec_expect(in, d->aux[A_NMAP], MK_F32, 1, MK_QSHAPE(256), "nested_quant_map"));
    float nmap[256];
    MK_TRY(in->ops->read(in, (size_t)d->aux[A_NMAP], 0, 1024, nmap));
    for (int k = 0; k < 256; k++)
        if (!isfinite(nmap[k])) return mk_error(MK_ERR_FORMAT, "%s: %s.weight.nested_quant_map: entry %d is not finite", in->path, mod, k);
    return MK_OK;
}

static mk_status b4_parse(mk_source *in, const char *mod, size_t js, const mk_qcfg *c, mk_qdec *d)
{
    (void)c;
    const char *name = in->tensors[js].name;
    int t = mk_str_ends_with(name, quant_type[MK_BNB_FP4]) ? MK_BNB_FP4 : MK_BNB_NF4;
    d->fmt = mk_qformat_of(&mk_qfam_bnb4, t, 0);
    if (!d->fmt) return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: bitsandbytes %s is not a format this build reads", in->path, name, quant_type[t]);
    d->aux[A_ABSMAX] = mk_qdec_find(in, mod, ".weight.absmax");
    d->aux[A_QMAP] = mk_qdec_find(in, mod, ".weight.quant_map");
    d->aux[A_NESTED] = mk_qdec_find(in, mod, ".weight.nested_absmax");
    d->aux[A_NMAP] = mk_qdec_find(in, mod, ".weight.nested_quant_map");
    d->aux[A_JSON] = (long)js;
    char *blob = NULL;
    MK_TRY(mk_qdec_read_all(in, js, 1u << 16, (void **)&blob));
    size_t blen = (size_t)in->tensors[js].nbytes;
    blob[blen] = 0;
    mk_json j;
    mk_json_limits lim = {8, 512};
    mk_status s = mk_json_parse(&j, blob, blen, &lim, name);
    free(blob);
    if (s != MK_OK) return mk_error_prefix(s, "%s", in->path);
    s = b4_parse_blob(in, js, d, &j);
    uint64_t nb = s == MK_OK ? mk_bnb_nblocks(d->numel, d->block) : 0; /* block is checked non-zero */
    if (s == MK_OK) s = mk_qdec_expect(in, (long)d->main, MK_U8, 2, MK_QSHAPE((int64_t)((d->numel + 1) / 2), 1), "packed 4-bit codes");
    if (s == MK_OK && d->aux[A_QMAP] < 0) s = mk_error(MK_ERR_FORMAT, "%s: %s.weight.quant_map is missing", in->path, mod);
    if (s == MK_OK) s = mk_qdec_expect(in, d->aux[A_QMAP], MK_F32, 1, MK_QSHAPE(16), "quant_map");
    if (s == MK_OK && d->aux[A_ABSMAX] < 0) s = mk_error(MK_ERR_FORMAT, "%s: %s.weight.absmax is missing", in->path, mod);
    d->dq = d->aux[A_NESTED] >= 0;
    if (s == MK_OK && !d->dq) s = mk_qdec_expect(in, d->aux[A_ABSMAX], MK_F32, 1, MK_QSHAPE((int64_t)nb), "absmax");
    else if (s == MK_OK) s = b4_parse_nested(in, mod, js, &j, d, nb);
    mk_json_free(&j);
    return s;
}

static void b4_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    (void)c;
    if (!first) return;
    info->block = d->block;
    info->block_word = "block";
    info->double_quant = d->dq;
}

static mk_status b4_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const uint64_t e1 = e0 + n - 1, b0 = e0 / d->block, b1 = e1 / d->block;
    void *codes = NULL, *qa = NULL, *na = NULL;
    MK_TRY(mk_qdec_read(in, d->main, e0 / 2, e1 / 2 - e0 / 2 + 1, &codes));
    float *am = mk_malloc((size_t)(b1 - b0 + 1) * sizeof *am);
    float nmap[256];
    mk_status s = am ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !d->dq) {
        s = in->ops->read(in, (size_t)d->aux[A_ABSMAX], b0 * 4, (b1 - b0 + 1) * 4, am);
    } else if (s == MK_OK) { /* absmax = nested_quant_map[code] x nested_absmax + offset, in f32 */
        uint64_t j0 = b0 / MK_BNB_NESTED_BLOCK, j1 = b1 / MK_BNB_NESTED_BLOCK;
        s = in->ops->read(in, (size_t)d->aux[A_NMAP], 0, 1024, nmap);
        if (s == MK_OK) s = mk_qdec_read(in, (size_t)d->aux[A_ABSMAX], b0, b1 - b0 + 1, &qa);
        if (s == MK_OK) s = mk_qdec_read(in, (size_t)d->aux[A_NESTED], j0 * 4, (j1 - j0 + 1) * 4, &na);
        for (uint64_t k = b0; s == MK_OK && k <= b1; k++) {
            float nv;
            memcpy(&nv, (const char *)na + (k / MK_BNB_NESTED_BLOCK - j0) * 4, 4);
            am[k - b0] = nmap[((const uint8_t *)qa)[k - b0]] * nv + d->offset;
        }
    }
    if (s == MK_OK) mk_bnb4_dequant((mk_bnb4_type)d->fmt->variant, d->block, codes, am, e0, n, out);
    free(am);
    free(codes);
    free(qa);
    free(na);
    return s;
}

const mk_qfamily mk_qfam_bnb4 = {
    .layout = "bitsandbytes",
    .alias = "bnb",
    .loaders = "transformers + bitsandbytes (load_in_4bit)",
    .card = "\nLoad it with transformers and bitsandbytes: `AutoModelForCausalLM.from_pretrained(path)`.\n",
    .main_suffix = ".weight",
    .settings = MK_QS_BLOCK | MK_QS_DOUBLE_QUANT,
    .resolve = b4_resolve,
    .describe = b4_describe,
    .stored = b4_layout,
    .config_json = b4_config,
    .offset_scratch = b4_offset_scratch,
    .offset_rows = b4_offset_rows,
    .offset_end = b4_offset_end,
    .align = b4_align,
    .begin = b4_begin,
    .state_free = b4_state_free,
    .rows_x = b4_rows_x,
    .bf16_ok = b4_bf16_ok,
    .end = b4_end,
    .wants_prepass = b4_wants_prepass,
    .observe = b4_observe,
    .observe_end = b4_observe_end,
    .recognise = b4_recognise,
    .parse = b4_parse,
    .info = b4_info,
    .decode = b4_decode,
};

/* ======== LLM.int8 ============================================================================== */

static void b8_describe(const mk_qopts *o, char *buf, size_t len)
{
    (void)o;
    snprintf(buf, len, ", per row");
}

static mk_status b8_layout(mk_qplan *p, size_t i, const char *mod)
{
    const mk_qtensor *q = &p->t[i];
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.weight", mod), MK_I8, 2, MK_QSHAPE((int64_t)q->rows, (int64_t)q->cols)));
    MK_TRY(mk_qplan_add_out(p, mk_asprintf("%s.SCB", mod), MK_F32, 1, MK_QSHAPE((int64_t)q->rows)));
    return mk_qplan_add_out(p, mk_asprintf("%s.weight_format", mod), MK_U8, 0, NULL);
}

static void b8_config(const mk_qplan *p, mk_buf *b) { config_json(p, b, false); }

/* The first of n values that rounds to Inf in f16 (|x| >= 65520; a bf16 value: >= 65536,
 * bits 0x4780), or n: a pass without early exit (it vectorizes), then the search. */
static size_t f16_overflow_at(const void *x, bool xb, size_t n)
{
    const uint16_t *h = x;
    const float *f = x;
    unsigned any = 0;
    if (xb)
        for (size_t j = 0; j < n; j++) any |= (h[j] & 0x7fffu) >= 0x4780u;
    else
        for (size_t j = 0; j < n; j++) any |= fabsf(f[j]) >= 65520.0f;
    for (size_t j = 0; any && j < n; j++)
        if (xb ? (h[j] & 0x7fffu) >= 0x4780u : fabsf(f[j]) >= 65520.0f) return j;
    return n;
}

/* x: f32 values, or (xb) the bf16 bit patterns of a bf16 weight */
static mk_status b8_rows_x(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool xb)
{
    const mk_qplan *p = mk_qc_plan(q);
    const mk_qtensor *qt = &p->t[i];
    const size_t cols = (size_t)qt->cols, rows = n / cols;
    size_t j = f16_overflow_at(x, xb, n);
    if (j < n)
        return mk_error(MK_ERR_NUMERIC, "tensor %s: value %g at element %llu overflows float16, which LLM.int8 quantizes from",
                        p->in[i].name, xb ? (double)mk_bf16_to_f32(((const uint16_t *)x)[j]) : (double)((const float *)x)[j],
                        (unsigned long long)(e0 + j));
    int8_t *cq = mk_qc_scratch(q, MK_QSCR_CODES, n);
    float *scb = mk_qc_scratch(q, MK_QSCR_SCALES, rows * sizeof *scb);
    if (!cq || !scb) return MK_ERR_NOMEM;
    mk_qerr e = {0, 0, 0};
    mk_bnb_int8_quantize_x(x, xb, rows, cols, cq, scb, &e);
    MK_TRY(mk_qc_put(q, qt->out0, e0, cq, n));
    MK_TRY(mk_qc_put(q, qt->out0 + 1, e0 / cols * 4, scb, rows * 4));
    return mk_qc_add_rec(q, i, e0, e.sx2, e.se2, e.maxe);
}

static mk_status b8_end(mk_qcons *q, size_t i)
{
    uint8_t zero = 0; /* weight_format "row" */
    return mk_qc_put(q, mk_qc_plan(q)->t[i].out0 + 2, 0, &zero, 1);
}

enum { A_SCB = 0, A_FORMAT };

static mk_status b8_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    if (mk_qdec_module(in->tensors[i].name, ".SCB", mod)) *main = mk_qdec_find(in, mod, ".weight");
    return MK_OK;
}

extern const mk_qfamily mk_qfam_bnb8;

static mk_status b8_parse(mk_source *in, const char *mod, size_t scb, const mk_qcfg *c, mk_qdec *d)
{
    (void)c;
    const mk_tensor_info *w = &in->tensors[d->main];
    char sh[160];
    d->fmt = mk_qformat_of(&mk_qfam_bnb8, 0, 8);
    d->aux[A_SCB] = (long)scb;
    d->aux[A_FORMAT] = mk_qdec_find(in, mod, ".weight_format");
    if (w->dtype != MK_I8 || w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: LLM.int8 weight must be I8 [rows, cols], found %s %s", in->path, w->name,
                        mk_dtype_name(w->dtype), mk_shape_str(w, sh));
    mk_qdec_shape2(d, (uint64_t)w->shape[0], (uint64_t)w->shape[1]);
    MK_TRY(mk_qdec_expect(in, d->aux[A_SCB], MK_F32, 1, MK_QSHAPE(w->shape[0]), "SCB"));
    if (d->aux[A_FORMAT] >= 0) {
        const mk_tensor_info *f = &in->tensors[d->aux[A_FORMAT]];
        uint8_t v = 0xff;
        if (f->dtype != MK_U8 || f->numel != 1 || in->ops->read(in, (size_t)d->aux[A_FORMAT], 0, 1, &v) != MK_OK || v != 0)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_format: only the row-major layout (0) is supported", in->path, mod);
    }
    d->orig = MK_DTYPE_NONE; /* LLM.int8 stores no dtype: the model's float dtype */
    return MK_OK;
}

static void b8_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    (void)d, (void)c;
    if (!first) return;
    info->per_channel = true;
    info->block_word = "block";
}

/* bnb's int8_vectorwise_dequant: (q * SCB) * f32(1/127). */
static mk_status b8_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const uint64_t e1 = e0 + n - 1, r0 = e0 / d->cols, r1 = e1 / d->cols;
    void *codes = NULL, *scb = NULL;
    MK_TRY(mk_qdec_read(in, d->main, e0, n, &codes));
    mk_status s = mk_qdec_read(in, (size_t)d->aux[A_SCB], r0 * 4, (r1 - r0 + 1) * 4, &scb);
    const float inv127 = (float)7.874015718698502e-3;
    for (size_t k = 0; s == MK_OK && k < n; k++) {
        float v;
        memcpy(&v, (const char *)scb + ((e0 + k) / d->cols - r0) * 4, 4);
        out[k] = ((float)((const int8_t *)codes)[k] * v) * inv127;
    }
    free(codes);
    free(scb);
    return s;
}

const mk_qfamily mk_qfam_bnb8 = {
    .layout = "bitsandbytes",
    .alias = "bnb",
    .loaders = "transformers + bitsandbytes (load_in_8bit)",
    .card = "\nLoad it with transformers and bitsandbytes: `AutoModelForCausalLM.from_pretrained(path)`.\n",
    .main_suffix = ".weight",
    .per_row = true,
    .describe = b8_describe,
    .stored = b8_layout,
    .config_json = b8_config,
    .rows_x = b8_rows_x,
    .end = b8_end,
    .recognise = b8_recognise,
    .parse = b8_parse,
    .info = b8_info,
    .decode = b8_decode,
};
