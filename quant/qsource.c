/* qsource.c - see qsource.h */
#include "qsource.h"
#include "bnb.h"
#include "ct.h"

#include "../core/mk_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { QS_PASS = 0, QS_BNB4, QS_BNB8, QS_CT_INT, QS_CT_FP8 } qs_kind;

enum { A_ABSMAX = 0, A_QMAP, A_NESTED, A_NMAP, A_JSON };  /* bnb 4-bit auxiliaries */
enum { A_SCB = 0, A_FORMAT };                             /* LLM.int8 */
enum { A_SCALE = 0, A_SHAPE, A_ZP };                      /* compressed-tensors */

typedef struct qs_tensor {
    qs_kind kind;
    size_t main;             /* inner index of P.weight / P.weight_packed */
    long aux[5];             /* inner indices, -1 = absent */
    mk_dtype orig;
    uint64_t rows, cols, numel;
    int ndim;
    int64_t shape[MK_MAX_DIMS];  /* logical shape (bnb: from the JSON blob) */
    /* bnb 4-bit */
    mk_bnb4_type type;
    unsigned block;
    bool dq;
    float offset;
    float nmap[256];         /* the stored nested_quant_map */
    /* compressed-tensors */
    unsigned bits;
    uint64_t group, ngroups;
    bool asym, e5m2;
    mk_dtype sdtype;         /* scale dtype = arithmetic dtype of the dequantization */
} qs_tensor;

typedef struct qs_impl {
    mk_source *inner;
    qs_tensor *t;            /* [n_tensors] */
} qs_impl;

/* ---- configuration ------------------------------------------------------------------------ */

typedef struct qs_cfg {
    const char *method;      /* quant_method, or NULL */
    int ct_bits;             /* 0 = unknown */
    bool ct_float, ct_sym;
    long ct_group;           /* -1 = null */
    char strategy[16];
} qs_cfg;

static mk_status load_config(mk_source *in, mk_json *j, qs_cfg *c, bool *have)
{
    memset(c, 0, sizeof *c);
    c->ct_group = -1;
    c->ct_sym = true;
    *have = false;
    char *text = NULL;
    size_t len = 0;
    MK_TRY(in->ops->aux_read(in, "config.json", 16u << 20, &text, &len));
    if (!text) return MK_OK;
    mk_json_limits lim = {64, len / 2 + 16};
    mk_status s = mk_json_parse(j, text, len, &lim, "config.json");
    free(text);
    if (s != MK_OK) return mk_error_prefix(s, "%s", in->path);
    *have = true;
    uint32_t q = mk_json_get(j, 0, "quantization_config");
    if (!q || mk_json_at(j, q)->type != MK_JSON_OBJ) return MK_OK;
    uint32_t m = mk_json_get(j, q, "quant_method");
    if (m && mk_json_at(j, m)->type == MK_JSON_STR) c->method = mk_json_strv(j, m);
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
            return mk_error(MK_ERR_UNSUPPORTED, "%s: config.json: quantization_config group '%s': num_bits must be 1..8",
                            in->path, mk_json_key(j, g));
        if (ng++ && (bits != c->ct_bits || fl != c->ct_float || group != c->ct_group || sym != c->ct_sym))
            return mk_error(MK_ERR_UNSUPPORTED,
                            "%s: config.json: quantization_config has config groups with different weight settings "
                            "(mixed precision is not supported)",
                            in->path);
        c->ct_bits = bits;
        c->ct_float = fl;
        c->ct_group = group;
        c->ct_sym = sym;
        if (st && mk_json_at(j, st)->type == MK_JSON_STR) snprintf(c->strategy, sizeof c->strategy, "%s", mk_json_strv(j, st));
    }
    return MK_OK;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static long find_suffix(const mk_source *in, const char *mod, const char *suffix)
{
    char name[1024];
    if ((size_t)snprintf(name, sizeof name, "%s%s", mod, suffix) >= sizeof name) return -1;
    return mk_source_find(in, name);
}

static mk_status expect(const mk_source *in, long i, mk_dtype dt, int ndim, const int64_t *shape, const char *what)
{
    const mk_tensor_info *t = &in->tensors[i];
    char want[160] = "[", got[160];
    size_t o = 1;
    for (int d = 0; d < ndim && o < 120; d++) o += (size_t)snprintf(want + o, sizeof want - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(want + o, sizeof want - o, "]");
    bool ok = t->dtype == dt && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s (%s): expected %s %s, found %s %s", in->path, t->name, what,
                        mk_dtype_name(dt), want, mk_dtype_name(t->dtype), mk_shape_str(t, got));
    return MK_OK;
}

static bool is_float_dt(mk_dtype d) { return d == MK_F32 || d == MK_F16 || d == MK_BF16; }

static mk_status read_all(mk_source *in, size_t i, uint64_t cap, void **out)
{
    const mk_tensor_info *t = &in->tensors[i];
    *out = NULL;
    if (t->nbytes > cap) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu bytes, more than the %llu expected", in->path, t->name,
                                         (unsigned long long)t->nbytes, (unsigned long long)cap);
    void *b = mk_malloc((size_t)t->nbytes + 1);
    if (!b) return MK_ERR_NOMEM;
    mk_status s = in->ops->read(in, i, 0, t->nbytes, b);
    if (s != MK_OK) {
        free(b);
        return s;
    }
    *out = b;
    return MK_OK;
}

/* ---- recognising one weight ------------------------------------------------------------------- */

static mk_status parse_bnb4(mk_source *in, const char *mod, long js, mk_bnb4_type type, qs_tensor *q)
{
    char *blob = NULL;
    MK_TRY(read_all(in, (size_t)js, 1u << 16, (void **)&blob));
    const char *jname = in->tensors[js].name;
    size_t blen = (size_t)in->tensors[js].nbytes;
    blob[blen] = 0;
    mk_json j;
    mk_json_limits lim = {8, 512};
    mk_status s = mk_json_parse(&j, blob, blen, &lim, jname);
    free(blob);
    if (s != MK_OK) return mk_error_prefix(s, "%s", in->path);
#define BAD(...) do { s = mk_error(MK_ERR_FORMAT, __VA_ARGS__); goto out; } while (0)
#define CHK(expr) do { if ((s = (expr)) != MK_OK) goto out; } while (0)
    {
        uint32_t qt = mk_json_get(&j, 0, "quant_type"), bs = mk_json_get(&j, 0, "blocksize"), dt = mk_json_get(&j, 0, "dtype");
        uint32_t sh = mk_json_get(&j, 0, "shape");
        const char *tname = type == MK_BNB_NF4 ? "nf4" : "fp4";
        if (!qt || mk_json_at(&j, qt)->type != MK_JSON_STR || strcmp(mk_json_strv(&j, qt), tname) != 0)
            BAD("%s: tensor %s: quant_type must be \"%s\" (the tensor's name says so)", in->path, jname, tname);
        if (!bs || !mk_json_at(&j, bs)->is_uint || mk_json_at(&j, bs)->u < 16 || mk_json_at(&j, bs)->u > 65536 ||
            (mk_json_at(&j, bs)->u & (mk_json_at(&j, bs)->u - 1)))
            BAD("%s: tensor %s: blocksize must be a power of two from 16 to 65536", in->path, jname);
        q->block = (unsigned)mk_json_at(&j, bs)->u;
        q->orig = dt && mk_json_at(&j, dt)->type == MK_JSON_STR ? mk_dtype_from_user(mk_json_strv(&j, dt)) : MK_DTYPE_NONE;
        if (!is_float_dt(q->orig)) BAD("%s: tensor %s: dtype must be bfloat16, float16 or float32", in->path, jname);
        if (!sh || mk_json_at(&j, sh)->type != MK_JSON_ARR || mk_json_at(&j, sh)->count < 1 || mk_json_at(&j, sh)->count > MK_MAX_DIMS)
            BAD("%s: tensor %s: shape must be a list of 1 to %d sizes", in->path, jname, MK_MAX_DIMS);
        uint64_t n = 1, last = 1;
        q->ndim = 0;
        for (uint32_t c = mk_json_at(&j, sh)->first; c; c = mk_json_at(&j, c)->next) {
            const mk_json_node *v = mk_json_at(&j, c);
            if (!v->is_uint || v->u == 0 || !mk_mul_u64(n, v->u, &n) || n > (1ull << 40))
                BAD("%s: tensor %s: shape sizes must be positive and their product at most 2^40", in->path, jname);
            last = v->u;
            q->shape[q->ndim++] = (int64_t)v->u;
        }
        q->numel = n;
        q->cols = last;
        q->rows = n / last;
        q->type = type;
        uint64_t nb = mk_bnb_nblocks(n, q->block);
        CHK(expect(in, (long)q->main, MK_U8, 2, (int64_t[]){(int64_t)((n + 1) / 2), 1}, "packed 4-bit codes"));
        if (q->aux[A_QMAP] >= 0) CHK(expect(in, q->aux[A_QMAP], MK_F32, 1, (int64_t[]){16}, "quant_map"));
        else BAD("%s: %s.weight.quant_map is missing", in->path, mod);
        if (q->aux[A_ABSMAX] < 0) BAD("%s: %s.weight.absmax is missing", in->path, mod);
        q->dq = q->aux[A_NESTED] >= 0;
        if (!q->dq) {
            CHK(expect(in, q->aux[A_ABSMAX], MK_F32, 1, (int64_t[]){(int64_t)nb}, "absmax"));
            goto out;
        }
        uint32_t nbk = mk_json_get(&j, 0, "nested_blocksize"), off = mk_json_get(&j, 0, "nested_offset");
        if (!nbk || !mk_json_at(&j, nbk)->is_uint || mk_json_at(&j, nbk)->u != MK_BNB_NESTED_BLOCK)
            BAD("%s: tensor %s: nested_blocksize must be %d", in->path, jname, MK_BNB_NESTED_BLOCK);
        if (!off || mk_json_at(&j, off)->type != MK_JSON_NUM || !isfinite(mk_json_at(&j, off)->d))
            BAD("%s: tensor %s: nested_offset must be a finite number", in->path, jname);
        q->offset = (float)mk_json_at(&j, off)->d;
        if (q->aux[A_NMAP] < 0) BAD("%s: %s.weight.nested_quant_map is missing", in->path, mod);
        CHK(expect(in, q->aux[A_ABSMAX], MK_U8, 1, (int64_t[]){(int64_t)nb}, "nested absmax codes"));
        CHK(expect(in, q->aux[A_NESTED], MK_F32, 1, (int64_t[]){(int64_t)mk_bnb_nblocks(nb, MK_BNB_NESTED_BLOCK)}, "nested_absmax"));
        CHK(expect(in, q->aux[A_NMAP], MK_F32, 1, (int64_t[]){256}, "nested_quant_map"));
        s = in->ops->read(in, (size_t)q->aux[A_NMAP], 0, 1024, q->nmap);
        for (int k = 0; s == MK_OK && k < 256; k++)
            if (!isfinite(q->nmap[k])) BAD("%s: %s.weight.nested_quant_map: entry %d is not finite", in->path, mod, k);
    }
out:
#undef BAD
#undef CHK
    mk_json_free(&j);
    return s;
}

static mk_status parse_bnb8(mk_source *in, const char *mod, qs_tensor *q)
{
    const mk_tensor_info *w = &in->tensors[q->main];
    char sh[160];
    if (w->dtype != MK_I8 || w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: LLM.int8 weight must be I8 [rows, cols], found %s %s", in->path, w->name,
                        mk_dtype_name(w->dtype), mk_shape_str(w, sh));
    q->rows = (uint64_t)w->shape[0];
    q->cols = (uint64_t)w->shape[1];
    q->numel = w->numel;
    MK_TRY(expect(in, q->aux[A_SCB], MK_F32, 1, (int64_t[]){w->shape[0]}, "SCB"));
    if (q->aux[A_FORMAT] >= 0) {
        const mk_tensor_info *f = &in->tensors[q->aux[A_FORMAT]];
        uint8_t v = 0xff;
        if (f->dtype != MK_U8 || f->numel != 1 || in->ops->read(in, (size_t)q->aux[A_FORMAT], 0, 1, &v) != MK_OK || v != 0)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_format: only the row-major layout (0) is supported", in->path, mod);
    }
    q->orig = MK_DTYPE_NONE; /* the model's float dtype, found in mk_qsource_open */
    return MK_OK;
}

static mk_status parse_ct_int(mk_source *in, const char *mod, const qs_cfg *c, qs_tensor *q)
{
    const mk_tensor_info *w = &in->tensors[q->main];
    char sh[160];
    if (q->aux[A_SCALE] < 0 || q->aux[A_SHAPE] < 0)
        return mk_error(MK_ERR_FORMAT, "%s: %s.weight_packed needs %s.weight_scale and %s.weight_shape", in->path, mod, mod, mod);
    if (w->dtype != MK_I32 || w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected I32 [rows, words], found %s %s", in->path, w->name,
                        mk_dtype_name(w->dtype), mk_shape_str(w, sh));
    const mk_tensor_info *ws = &in->tensors[q->aux[A_SHAPE]];
    if ((ws->dtype != MK_I64 && ws->dtype != MK_I32) || ws->numel != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected I64 or I32 [2], found %s %s", in->path, ws->name,
                        mk_dtype_name(ws->dtype), mk_shape_str(ws, sh));
    int64_t shp[2];
    if (ws->dtype == MK_I64) MK_TRY(in->ops->read(in, (size_t)q->aux[A_SHAPE], 0, 16, shp));
    else {
        int32_t s32[2];
        MK_TRY(in->ops->read(in, (size_t)q->aux[A_SHAPE], 0, 8, s32));
        shp[0] = s32[0];
        shp[1] = s32[1];
    }
    if (shp[0] != w->shape[0] || shp[1] <= 0 || shp[1] > (1ll << 32))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: [%lld, %lld] does not fit %s %s", in->path, ws->name, (long long)shp[0],
                        (long long)shp[1], w->name, mk_shape_str(w, sh));
    q->rows = (uint64_t)shp[0];
    q->cols = (uint64_t)shp[1];
    q->numel = q->rows * q->cols;
    unsigned bits = (unsigned)c->ct_bits;
    if (!bits) { /* no config: infer from the packed width */
        uint64_t words = (uint64_t)w->shape[1];
        bool b4 = words == (q->cols * 4 + 31) / 32, b8 = words == (q->cols * 8 + 31) / 32;
        if (b4 == b8)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: cannot tell the bit width without config.json's quantization_config",
                            in->path, w->name);
        bits = b4 ? 4 : 8;
    }
    if (bits != 4 && bits != 8)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %d-bit pack-quantized weights are not supported (4 and 8 are)", in->path, c->ct_bits);
    q->bits = bits;
    MK_TRY(expect(in, (long)q->main, MK_I32, 2, (int64_t[]){(int64_t)q->rows, (int64_t)((q->cols * bits + 31) / 32)}, "packed codes"));
    const mk_tensor_info *sc = &in->tensors[q->aux[A_SCALE]];
    if (!is_float_dt(sc->dtype) || sc->ndim != 2 || sc->shape[0] != (int64_t)q->rows || sc->shape[1] < 1 ||
        q->cols % (uint64_t)sc->shape[1])
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expected a float [%llu, groups] scale with groups dividing %llu, found %s %s",
                        in->path, sc->name, (unsigned long long)q->rows, (unsigned long long)q->cols, mk_dtype_name(sc->dtype),
                        mk_shape_str(sc, sh));
    q->sdtype = sc->dtype;
    q->orig = sc->dtype;
    q->ngroups = (uint64_t)sc->shape[1];
    q->group = q->cols / q->ngroups;
    if (c->ct_group > 0 && q->ngroups > 1 && (uint64_t)c->ct_group != q->group)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu groups of %llu columns, but config.json says group_size %ld", in->path,
                        sc->name, (unsigned long long)q->ngroups, (unsigned long long)q->group, c->ct_group);
    q->asym = q->aux[A_ZP] >= 0;
    if (q->asym)
        MK_TRY(expect(in, q->aux[A_ZP], MK_I32, 2, (int64_t[]){(int64_t)((q->rows * bits + 31) / 32), (int64_t)q->ngroups}, "zero points"));
    if (find_suffix(in, mod, ".weight_g_idx") >= 0)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_g_idx: activation-ordered groups are not supported", in->path, mod);
    return MK_OK;
}

static mk_status parse_ct_fp8(mk_source *in, qs_tensor *q)
{
    const mk_tensor_info *w = &in->tensors[q->main], *sc = &in->tensors[q->aux[A_SCALE]];
    char sh[160];
    if (w->ndim != 2)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: FP8 weight must be 2-D, found %s", in->path, w->name, mk_shape_str(w, sh));
    q->rows = (uint64_t)w->shape[0];
    q->cols = (uint64_t)w->shape[1];
    q->numel = w->numel;
    q->e5m2 = w->dtype == MK_F8_E5M2;
    if (!is_float_dt(sc->dtype))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: scale dtype %s is not a float", in->path, sc->name, mk_dtype_name(sc->dtype));
    q->sdtype = sc->dtype;
    q->orig = sc->dtype;
    if (sc->numel == 1) {
        q->ngroups = 0; /* per tensor */
    } else if ((sc->ndim == 2 && sc->shape[0] == w->shape[0] && sc->shape[1] >= 1 && q->cols % (uint64_t)sc->shape[1] == 0) ||
               (sc->ndim == 1 && sc->shape[0] == w->shape[0])) {
        q->ngroups = sc->ndim == 2 ? (uint64_t)sc->shape[1] : 1;
        q->group = q->cols / q->ngroups;
    } else {
        return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: scale shape %s for weight %s is not per tensor, row or group (block-wise "
                                            "FP8 is not supported)",
                        in->path, sc->name, mk_shape_str(sc, sh), mk_shape_str(w, sh));
    }
    return MK_OK;
}

/* ---- the scan --------------------------------------------------------------------------------- */

typedef struct qs_scan {
    qs_tensor *t;         /* per inner tensor: the group it heads (kind != PASS) */
    bool *aux;            /* per inner tensor: an auxiliary of some group (not listed) */
    size_t n_logical;
} qs_scan;

static void mark(qs_scan *sc, long i)
{
    if (i >= 0) sc->aux[i] = true;
}

static mk_status scan(mk_source *in, const qs_cfg *c, qs_scan *sc, mk_qinfo *info)
{
    size_t n = in->n_tensors;
    sc->t = mk_calloc(n ? n : 1, sizeof *sc->t);
    sc->aux = mk_calloc(n ? n : 1, sizeof *sc->aux);
    if (!sc->t || !sc->aux) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = in->tensors[i].name;
        size_t len = strlen(name);
        char mod[1024];
        qs_tensor *q = NULL;
        long main = -1;
        qs_kind kind = QS_PASS;
        mk_bnb4_type bt = MK_BNB_NF4;
        static const char *const sfx4[2] = {".weight.quant_state.bitsandbytes__nf4", ".weight.quant_state.bitsandbytes__fp4"};
        for (int k = 0; k < 2 && kind == QS_PASS; k++) {
            size_t sl = strlen(sfx4[k]);
            if (len > sl && len - sl < sizeof mod && strcmp(name + len - sl, sfx4[k]) == 0) {
                memcpy(mod, name, len - sl);
                mod[len - sl] = 0;
                main = find_suffix(in, mod, ".weight");
                if (main < 0) return mk_error(MK_ERR_FORMAT, "%s: %s has no %s.weight", in->path, name, mod);
                kind = QS_BNB4;
                bt = k ? MK_BNB_FP4 : MK_BNB_NF4;
            }
        }
        if (kind == QS_PASS && len > 4 && len - 4 < sizeof mod && strcmp(name + len - 4, ".SCB") == 0) {
            memcpy(mod, name, len - 4);
            mod[len - 4] = 0;
            main = find_suffix(in, mod, ".weight");
            if (main >= 0) kind = QS_BNB8;
        }
        if (kind == QS_PASS && len > 14 && len - 14 < sizeof mod && strcmp(name + len - 14, ".weight_packed") == 0) {
            memcpy(mod, name, len - 14);
            mod[len - 14] = 0;
            main = (long)i;
            kind = QS_CT_INT;
        }
        if (kind == QS_PASS && len > 7 && len - 7 < sizeof mod && strcmp(name + len - 7, ".weight") == 0 &&
            (in->tensors[i].dtype == MK_F8_E4M3 || in->tensors[i].dtype == MK_F8_E5M2)) {
            memcpy(mod, name, len - 7);
            mod[len - 7] = 0;
            if (find_suffix(in, mod, ".weight_scale_inv") >= 0)
                return mk_error(MK_ERR_UNSUPPORTED, "%s: %s.weight_scale_inv: block-wise \"fp8\" checkpoints are not supported", in->path, mod);
            if (find_suffix(in, mod, ".weight_scale") < 0)
                return mk_error(MK_ERR_FORMAT, "%s: FP8 tensor %s has no %s.weight_scale", in->path, name, mod);
            main = (long)i;
            kind = QS_CT_FP8;
        }
        if (kind == QS_PASS) continue;
        q = &sc->t[main];
        if (q->kind != QS_PASS) return mk_error(MK_ERR_FORMAT, "%s: tensor %s is quantized twice", in->path, in->tensors[main].name);
        q->kind = kind;
        q->main = (size_t)main;
        for (int k = 0; k < 5; k++) q->aux[k] = -1;
        mk_status s = MK_OK;
        switch (kind) {
        case QS_BNB4:
            q->aux[A_ABSMAX] = find_suffix(in, mod, ".weight.absmax");
            q->aux[A_QMAP] = find_suffix(in, mod, ".weight.quant_map");
            q->aux[A_NESTED] = find_suffix(in, mod, ".weight.nested_absmax");
            q->aux[A_NMAP] = find_suffix(in, mod, ".weight.nested_quant_map");
            q->aux[A_JSON] = (long)i;
            s = parse_bnb4(in, mod, (long)i, bt, q);
            break;
        case QS_BNB8:
            q->aux[A_SCB] = (long)i;
            q->aux[A_FORMAT] = find_suffix(in, mod, ".weight_format");
            s = parse_bnb8(in, mod, q);
            break;
        case QS_CT_INT:
            q->aux[A_SCALE] = find_suffix(in, mod, ".weight_scale");
            q->aux[A_SHAPE] = find_suffix(in, mod, ".weight_shape");
            q->aux[A_ZP] = find_suffix(in, mod, ".weight_zero_point");
            s = parse_ct_int(in, mod, c, q);
            mark(sc, find_suffix(in, mod, ".input_scale"));
            break;
        default:
            q->aux[A_SCALE] = find_suffix(in, mod, ".weight_scale");
            s = parse_ct_fp8(in, q);
            mark(sc, find_suffix(in, mod, ".input_scale"));
            mark(sc, find_suffix(in, mod, ".weight_zero_point"));
            break;
        }
        MK_TRY(s);
        for (int k = 0; k < 5; k++) mark(sc, q->aux[k]);
        /* what it looks like, for inspect */
        uint64_t bytes = in->tensors[q->main].nbytes;
        for (int k = 0; k < 5; k++)
            if (q->aux[k] >= 0) bytes += in->tensors[q->aux[k]].nbytes;
        if (!info->n_quantized) {
            info->quantized = true;
            info->dtype = q->orig;
            switch (kind) {
            case QS_BNB4:
                snprintf(info->format, sizeof info->format, "%s", bt == MK_BNB_NF4 ? "nf4" : "fp4");
                info->layout = "bitsandbytes";
                info->bits = 4;
                info->block = q->block;
                info->double_quant = q->dq;
                break;
            case QS_BNB8:
                snprintf(info->format, sizeof info->format, "int8");
                info->layout = "bitsandbytes";
                info->bits = 8;
                info->per_channel = true;
                break;
            case QS_CT_INT:
                snprintf(info->format, sizeof info->format, "int%u", q->bits);
                info->layout = "compressed-tensors";
                info->bits = q->bits;
                info->block = q->ngroups > 1 ? q->group : 0;
                info->per_channel = q->ngroups == 1;
                info->asym = q->asym;
                break;
            default:
                snprintf(info->format, sizeof info->format, "%s", q->e5m2 ? "fp8-e5m2" : "fp8");
                info->layout = "compressed-tensors";
                info->bits = 8;
                info->per_tensor = q->ngroups == 0;
                info->per_channel = q->ngroups == 1;
                info->block = q->ngroups > 1 ? q->group : 0;
                break;
            }
        }
        if ((kind == QS_CT_INT || kind == QS_CT_FP8) && q->ngroups > 1 && !info->block) {
            /* a weight narrower than the group has one group per row: not what the file is */
            info->block = q->group;
            info->per_channel = false;
        }
        info->n_quantized++;
        info->q_numel += q->numel;
        info->q_bytes += bytes;
    }
    if (info->quantized && !strcmp(info->layout, "compressed-tensors") && c->ct_group > 0 && !strcmp(c->strategy, "group")) {
        info->block = (uint64_t)c->ct_group; /* the config says; narrow weights have one group per row */
        info->per_channel = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (sc->t[i].kind != QS_PASS) sc->aux[i] = false;
        if (!sc->aux[i]) sc->n_logical++;
    }
    return MK_OK;
}

/* config.json + the scan; the caller frees sc's arrays. */
static mk_status detect(mk_source *inner, qs_scan *sc, mk_qinfo *info)
{
    memset(info, 0, sizeof *info);
    memset(sc, 0, sizeof *sc);
    mk_json j = {0};
    qs_cfg c;
    bool have;
    mk_status s = load_config(inner, &j, &c, &have);
    if (s == MK_OK) s = scan(inner, &c, sc, info);
    if (have) mk_json_free(&j);
    return s;
}

mk_status mk_qsource_probe(mk_source *inner, mk_qinfo *info)
{
    qs_scan sc;
    mk_status s = detect(inner, &sc, info);
    free(sc.t);
    free(sc.aux);
    return s;
}

const char *mk_qinfo_describe(const mk_qinfo *q, char buf[160])
{
    int n = snprintf(buf, 160, "%s (%s", q->format, q->layout ? q->layout : "?");
    if (q->block && !strcmp(q->layout, "bitsandbytes")) n += snprintf(buf + n, 160 - (size_t)n, ", block %llu", (unsigned long long)q->block);
    else if (q->block) n += snprintf(buf + n, 160 - (size_t)n, ", group %llu", (unsigned long long)q->block);
    if (q->per_channel) n += snprintf(buf + n, 160 - (size_t)n, ", per row");
    if (q->per_tensor) n += snprintf(buf + n, 160 - (size_t)n, ", per tensor");
    if (q->double_quant) n += snprintf(buf + n, 160 - (size_t)n, ", double quant");
    if (q->asym) n += snprintf(buf + n, 160 - (size_t)n, ", zero points");
    snprintf(buf + n, 160 - (size_t)n, ")");
    return buf;
}

/* ---- the dequantizing source ------------------------------------------------------------------ */

static mk_status rd(mk_source *in, size_t i, uint64_t off, uint64_t len, void **buf)
{
    *buf = mk_malloc((size_t)len + 1);
    if (!*buf) return MK_ERR_NOMEM;
    mk_status s = in->ops->read(in, i, off, len, *buf);
    if (s != MK_OK) {
        free(*buf);
        *buf = NULL;
    }
    return s;
}

/* Scales of rows r0..r1 (all groups) as f32. */
static mk_status read_scales(mk_source *in, const qs_tensor *q, uint64_t first, uint64_t count, float **out)
{
    mk_dtype dt = in->tensors[q->aux[A_SCALE]].dtype;
    unsigned es = mk_dtype_size(dt);
    void *raw;
    MK_TRY(rd(in, (size_t)q->aux[A_SCALE], first * es, count * es, &raw));
    *out = mk_malloc((size_t)count * sizeof(float) + 1);
    if (!*out) {
        free(raw);
        return MK_ERR_NOMEM;
    }
    mk_dtype_info(dt)->to_f32(raw, *out, (size_t)count);
    free(raw);
    return MK_OK;
}

static mk_status decode(mk_source *in, const qs_tensor *q, uint64_t e0, size_t n, float *out)
{
    mk_status s = MK_OK;
    void *a = NULL, *b = NULL, *c = NULL;
    float *sc = NULL;
    const uint64_t e1 = e0 + n - 1;
    switch (q->kind) {
    case QS_BNB4: {
        uint64_t b0 = e0 / q->block, b1 = e1 / q->block;
        MK_TRY(rd(in, q->main, e0 / 2, e1 / 2 - e0 / 2 + 1, &a));
        float *am = mk_malloc((size_t)(b1 - b0 + 1) * sizeof *am);
        if (!am) s = MK_ERR_NOMEM;
        if (s == MK_OK && !q->dq) {
            s = in->ops->read(in, (size_t)q->aux[A_ABSMAX], b0 * 4, (b1 - b0 + 1) * 4, am);
        } else if (s == MK_OK) {
            uint64_t j0 = b0 / MK_BNB_NESTED_BLOCK, j1 = b1 / MK_BNB_NESTED_BLOCK;
            s = rd(in, (size_t)q->aux[A_ABSMAX], b0, b1 - b0 + 1, &b);
            if (s == MK_OK) s = rd(in, (size_t)q->aux[A_NESTED], j0 * 4, (j1 - j0 + 1) * 4, &c);
            for (uint64_t k = b0; s == MK_OK && k <= b1; k++) {
                float na;
                memcpy(&na, (const char *)c + (k / MK_BNB_NESTED_BLOCK - j0) * 4, 4);
                am[k - b0] = q->nmap[((const uint8_t *)b)[k - b0]] * na + q->offset;
            }
        }
        if (s == MK_OK) mk_bnb4_dequant(q->type, q->block, a, am, e0, n, out);
        free(am);
        break;
    }
    case QS_BNB8: {
        uint64_t r0 = e0 / q->cols, r1 = e1 / q->cols;
        MK_TRY(rd(in, q->main, e0, n, &a));
        s = rd(in, (size_t)q->aux[A_SCB], r0 * 4, (r1 - r0 + 1) * 4, &b);
        const float inv127 = (float)7.874015718698502e-3;
        for (size_t k = 0; s == MK_OK && k < n; k++) {
            float scb;
            memcpy(&scb, (const char *)b + ((e0 + k) / q->cols - r0) * 4, 4);
            out[k] = ((float)((const int8_t *)a)[k] * scb) * inv127;
        }
        break;
    }
    case QS_CT_INT: {
        const uint64_t r0 = e0 / q->cols, r1 = e1 / q->cols, per = 32 / q->bits;
        const uint64_t W = (q->cols * q->bits + 31) / 32;
        MK_TRY(rd(in, q->main, r0 * W * 4, (r1 - r0 + 1) * W * 4, &a));
        s = read_scales(in, q, r0 * q->ngroups, (r1 - r0 + 1) * q->ngroups, &sc);
        if (s == MK_OK && q->asym)
            s = rd(in, (size_t)q->aux[A_ZP], (r0 / per) * q->ngroups * 4, (r1 / per - r0 / per + 1) * q->ngroups * 4, &c);
        const uint32_t mask = (1u << q->bits) - 1u;
        for (size_t k = 0; s == MK_OK && k < n; k++) {
            uint64_t e = e0 + k, r = e / q->cols, col = e % q->cols, g = col / q->group;
            uint32_t w;
            memcpy(&w, (const char *)a + ((r - r0) * W + col / per) * 4, 4);
            int32_t v = (int32_t)((w >> ((col % per) * q->bits)) & mask) - (1 << (q->bits - 1));
            int32_t z = 0;
            if (q->asym) {
                uint32_t zw;
                memcpy(&zw, (const char *)c + ((r / per - r0 / per) * q->ngroups + g) * 4, 4);
                z = (int32_t)((zw >> ((r % per) * q->bits)) & mask) - (1 << (q->bits - 1));
            }
            out[k] = mk_ct_round(q->sdtype, (float)(v - z) * sc[(r - r0) * q->ngroups + g]);
        }
        break;
    }
    case QS_CT_FP8: {
        const uint64_t r0 = e0 / q->cols, r1 = e1 / q->cols;
        MK_TRY(rd(in, q->main, e0, n, &a));
        if (q->ngroups == 0) s = read_scales(in, q, 0, 1, &sc);
        else s = read_scales(in, q, r0 * q->ngroups, (r1 - r0 + 1) * q->ngroups, &sc);
        for (size_t k = 0; s == MK_OK && k < n; k++) {
            uint64_t e = e0 + k;
            uint8_t v = ((const uint8_t *)a)[k];
            float f = q->e5m2 ? mk_e5m2_to_f32(v) : mk_e4m3_to_f32(v);
            float scale = q->ngroups ? sc[(e / q->cols - r0) * q->ngroups + (e % q->cols) / q->group] : sc[0];
            out[k] = mk_ct_round(q->sdtype, f * scale);
        }
        break;
    }
    default: MK_BUG("decode of a plain tensor");
    }
    free(a);
    free(b);
    free(c);
    free(sc);
    return s;
}

static mk_status qs_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    qs_impl *m = s->impl;
    const qs_tensor *q = &m->t[i];
    if (q->kind == QS_PASS) return m->inner->ops->read(m->inner, q->main, off, len, dst);
    if (off % 4 || len % 4 || !len) MK_BUG("dequantized tensors are read in whole f32 elements");
    if ((uintptr_t)dst % 4 == 0) return decode(m->inner, q, off / 4, (size_t)(len / 4), dst);
    float *tmp = mk_malloc((size_t)len);
    if (!tmp) return MK_ERR_NOMEM;
    mk_status st = decode(m->inner, q, off / 4, (size_t)(len / 4), tmp);
    memcpy(dst, tmp, (size_t)len);
    free(tmp);
    return st;
}

static const void *qs_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    const qs_tensor *q = &m->t[i];
    if (q->kind != QS_PASS || !m->inner->ops->borrow) return NULL;
    return m->inner->ops->borrow(m->inner, q->main, off, len);
}

/* The stored bytes behind logical bytes [off, off + len). */
static void stored_range(const mk_source *in, const qs_tensor *q, uint64_t off, uint64_t len, uint64_t *so, uint64_t *sl)
{
    if (q->kind == QS_PASS) {
        *so = off;
        *sl = len;
        return;
    }
    uint64_t total = in->tensors[q->main].nbytes, e0 = off / 4, e1 = (off + len) / 4;
    *so = q->numel ? e0 * total / q->numel : 0;
    *sl = q->numel ? e1 * total / q->numel - *so : 0;
}

static void qs_release(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    if (!m->inner->ops->release) return;
    uint64_t so, sl;
    stored_range(m->inner, &m->t[i], off, len, &so, &sl);
    if (sl) m->inner->ops->release(m->inner, m->t[i].main, so, sl);
}

static void qs_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    qs_impl *m = s->impl;
    if (!m->inner->ops->prefetch) return;
    uint64_t so, sl;
    stored_range(m->inner, &m->t[i], off, len, &so, &sl);
    if (sl) m->inner->ops->prefetch(m->inner, m->t[i].main, so, sl);
}

static mk_status qs_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    qs_impl *m = s->impl;
    return m->inner->ops->aux_read(m->inner, name, cap, data, len);
}

static const char *const *qs_aux_list(mk_source *s)
{
    qs_impl *m = s->impl;
    return m->inner->ops->aux_list ? m->inner->ops->aux_list(m->inner) : NULL;
}

static void qs_close(mk_source *s)
{
    if (!s) return;
    qs_impl *m = s->impl;
    if (m) {
        for (size_t i = 0; i < s->n_tensors; i++)
            if (m->t[i].kind != QS_PASS) free(s->tensors[i].name);
        mk_source_close(m->inner);
        free(m->t);
        free(m);
    }
    mk_name_index_free(&s->index);
    free(s->tensors);
    free(s->kind);
    free(s);
}

static const mk_source_ops qs_ops = {qs_read, qs_borrow, qs_release, qs_prefetch, qs_aux_read, qs_aux_list, qs_close};

mk_status mk_qsource_open(mk_source *inner, mk_source **out, mk_qinfo *info)
{
    *out = NULL;
    qs_scan sc;
    mk_status st = detect(inner, &sc, info);
    if (st != MK_OK || !info->quantized) {
        free(sc.t);
        free(sc.aux);
        if (st == MK_OK) *out = inner;
        return st;
    }
    mk_source *s = mk_calloc(1, sizeof *s);
    qs_impl *m = mk_calloc(1, sizeof *m);
    if (s) {
        s->tensors = mk_calloc(sc.n_logical ? sc.n_logical : 1, sizeof *s->tensors);
        s->kind = mk_asprintf("%s, %s", inner->kind, info->format);
    }
    if (m) m->t = mk_calloc(sc.n_logical ? sc.n_logical : 1, sizeof *m->t);
    if (!s || !m || !s->tensors || !s->kind || !m->t) {
        st = MK_ERR_NOMEM;
    } else {
        s->ops = &qs_ops;
        s->impl = m;
        s->path = inner->path;
        s->n_files = inner->n_files;
        s->files = inner->files;
        m->inner = inner;
        size_t k = 0;
        for (size_t i = 0; i < inner->n_tensors && st == MK_OK; i++) {
            /* s->n_tensors counts the entries made so far (for cleanup) */
            if (sc.aux[i]) continue;
            qs_tensor *q = &m->t[k];
            mk_tensor_info *t = &s->tensors[k];
            if (sc.t[i].kind == QS_PASS) {
                *t = inner->tensors[i];
                q->main = i;
                q->orig = t->dtype;
            } else {
                *q = sc.t[i];
                const mk_tensor_info *w = &inner->tensors[q->main];
                const char *nm = w->name;
                size_t nl = strlen(nm);
                if (q->kind == QS_CT_INT) t->name = mk_asprintf("%.*s.weight", (int)(nl - 14), nm);
                else t->name = mk_strdup(nm);
                t->dtype = MK_F32;
                if (q->kind == QS_BNB4) { /* the shape in the blob, any rank */
                    t->ndim = q->ndim;
                    memcpy(t->shape, q->shape, sizeof t->shape);
                } else {
                    t->ndim = 2;
                    t->shape[0] = (int64_t)q->rows;
                    t->shape[1] = (int64_t)q->cols;
                }
                if (!t->name) st = MK_ERR_NOMEM;
                else st = mk_tensor_info_finish(t);
            }
            s->n_tensors = ++k;
        }
        /* LLM.int8 stores no dtype: the weights had the model's (the plain tensors') */
        mk_dtype model_dt = MK_DTYPE_NONE;
        for (size_t i = 0; i < s->n_tensors && model_dt == MK_DTYPE_NONE; i++)
            if (m->t[i].kind == QS_PASS && is_float_dt(s->tensors[i].dtype)) model_dt = s->tensors[i].dtype;
        if (model_dt == MK_DTYPE_NONE) model_dt = MK_F16;
        for (size_t i = 0; i < s->n_tensors; i++)
            if (m->t[i].orig == MK_DTYPE_NONE) m->t[i].orig = model_dt;
        if (info->dtype == MK_DTYPE_NONE) info->dtype = model_dt;
        if (st == MK_OK) {
            size_t dup = 0;
            st = mk_name_index_build(&s->index, s->tensors, s->n_tensors, &dup);
            if (st != MK_OK) st = mk_error(MK_ERR_FORMAT, "%s: tensor %s appears both quantized and plain", inner->path, s->tensors[dup].name);
        }
    }
    free(sc.t);
    free(sc.aux);
    if (st != MK_OK) {
        if (s && m) {
            m->inner = NULL;
            s->impl = m;
            for (size_t i = 0; s->tensors && i < s->n_tensors; i++)
                if (m->t && m->t[i].kind != QS_PASS) free(s->tensors[i].name);
            free(m->t);
            free(m);
            mk_name_index_free(&s->index);
            free(s->tensors);
            free(s->kind);
            free(s);
        } else {
            free(m);
            free(s);
        }
        return st;
    }
    *out = s;
    return MK_OK;
}

mk_dtype mk_qsource_orig_dtype(const mk_source *s, size_t i)
{
    if (s->ops != &qs_ops) return s->tensors[i].dtype;
    const qs_impl *m = s->impl;
    return m->t[i].orig;
}
