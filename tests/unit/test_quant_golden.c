/* test_quant_golden.c - the quantizers against the bytes bitsandbytes and compressed-tensors
 * produce (tests/golden/quant/edge.safetensors, made by tools/gen-golden-quant.py, and
 * fp4.safetensors for NVFP4 / MXFP4 / MXFP8, made by tools/gen-golden-fp4.py).
 *
 * Each case's input is regenerated from the recipe in the file's metadata with the same
 * integer generator as the script (checked through an FNV-1a hash of the input bytes).
 * Tolerance everywhere: none. Codes, scales, absmax, nested values, JSON blobs and the
 * dequantized values must be the same bits; the reference kernel and the fast kernel are
 * both checked. A failure names the case, the tensor and the first differing element.
 * One exception, the sign of a decoded FP4 zero: bitsandbytes' CPU dequantizer decodes
 * code 8 as -0.0 (its built-in table, as CUDA does) but falls back to the torch path, where
 * it is +0.0 (get_4bit_type), when the last dimension is odd; we always give -0.0.
 */
#include "harness.h"

#include "../../core/mk_io.h"
#include "../../core/mk_json.h"
#include "../../formats/safetensors.h"
#include "../../quant/bnb.h"
#include "../../quant/ct.h"
#include "../../quant/mx.h"
#include "../../quant/quant.h"

#include <stdlib.h>

typedef struct golden {
    mk_source *src;
    mk_map map;
    mk_st_header hdr;
    mk_json cases, pyf;
    bool ok;
} golden;

static const char *meta(const mk_st_header *h, const char *key)
{
    for (size_t i = 0; i < h->n_meta; i++)
        if (strcmp(h->meta_keys[i], key) == 0) return h->meta_vals[i];
    return NULL;
}

static bool golden_open(golden *g, const char *file)
{
    memset(g, 0, sizeof *g);
    const char *root = getenv("MK_ROOT") ? getenv("MK_ROOT") : ".";
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/quant/%s", root, file);
    if (mk_safetensors_open(path, &g->src) != MK_OK || mk_map_open(&g->map, path) != MK_OK ||
        mk_st_parse(g->map.data, (size_t)g->map.size, g->map.size, path, &g->hdr) != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, mk_errmsg());
        return false;
    }
    const char *c = meta(&g->hdr, "cases"), *p = meta(&g->hdr, "pyfloat");
    mk_json_limits lim = {32, 1u << 22};
    if (!c || !p || mk_json_parse(&g->cases, c, strlen(c), &lim, "cases") != MK_OK ||
        mk_json_parse(&g->pyf, p, strlen(p), &lim, "pyfloat") != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "%s: bad metadata: %s", path, mk_errmsg());
        return false;
    }
    g->ok = true;
    return true;
}

static void golden_close(golden *g)
{
    mk_source_close(g->src);
    mk_st_header_free(&g->hdr);
    mk_map_close(&g->map);
    mk_json_free(&g->cases);
    mk_json_free(&g->pyf);
}

/* Bytes of golden tensor `name` (malloc'd), or NULL with a failure recorded. */
static void *gtensor(golden *g, const char *name, uint64_t *nbytes)
{
    long i = mk_source_find(g->src, name);
    if (i < 0) {
        mk_test_fail(__FILE__, __LINE__, "golden tensor %s missing", name);
        return NULL;
    }
    const mk_tensor_info *t = &g->src->tensors[i];
    void *b = malloc(t->nbytes + 1);
    if (g->src->ops->read(g->src, (size_t)i, 0, t->nbytes, b) != MK_OK) {
        free(b);
        return NULL;
    }
    *nbytes = t->nbytes;
    return b;
}

/* Compare n elements of `es` bytes with the golden tensor; report the first difference. */
static bool zero_sign_ok; /* +0.0 == -0.0 for the next check_bytes (FP4 decode) */

static void check_bytes(golden *g, const char *cname, const char *tname, const char *which, const void *got, uint64_t n,
                        unsigned es)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", cname, tname);
    uint64_t nb = 0;
    unsigned char *want = gtensor(g, name, &nb);
    if (!want) return;
    if (nb != n * es) {
        mk_test_fail(__FILE__, __LINE__, "%s (%s): %llu bytes, want %llu", name, which, (unsigned long long)(n * es),
                     (unsigned long long)nb);
    } else {
        const unsigned char *gb = got;
        for (uint64_t i = 0; i < n; i++) {
            if (memcmp(gb + i * es, want + i * es, es) == 0) continue;
            if (zero_sign_ok && es == 4) {
                float x, y;
                memcpy(&x, gb + i * es, 4);
                memcpy(&y, want + i * es, 4);
                if (x == 0 && y == 0) continue;
            }
            uint64_t a = 0, b = 0;
            memcpy(&a, gb + i * es, es);
            memcpy(&b, want + i * es, es);
            float fa = 0, fb = 0;
            if (es == 4) {
                memcpy(&fa, gb + i * es, 4);
                memcpy(&fb, want + i * es, 4);
            }
            mk_test_fail(__FILE__, __LINE__, "%s (%s): element %llu: got 0x%llx (%.9g), want 0x%llx (%.9g)", name, which,
                         (unsigned long long)i, (unsigned long long)a, (double)fa, (unsigned long long)b, (double)fb);
            break;
        }
    }
    free(want);
}

/* ---- the input generator of tools/gen-golden-quant.py ------------------------------------ */
static uint64_t splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct gcase {
    const char *name, *kind;
    mk_dtype dtype;
    uint64_t rows, cols, n;
    float *x;            /* the values */
    uint32_t c;          /* its node in the cases JSON */
} gcase;

static double jnum(const mk_json *j, uint32_t obj, const char *key, double def)
{
    uint32_t v = mk_json_get(j, obj, key);
    if (!v) return def;
    const mk_json_node *nd = mk_json_at(j, v);
    return nd->type == MK_JSON_BOOL ? (double)nd->b : nd->d;
}

static bool case_load(golden *g, uint32_t c, gcase *k)
{
    const mk_json *j = &g->cases;
    memset(k, 0, sizeof *k);
    k->c = c;
    k->name = mk_json_strv(j, mk_json_get(j, c, "name"));
    k->kind = mk_json_strv(j, mk_json_get(j, c, "kind"));
    k->dtype = mk_dtype_from_name(mk_json_strv(j, mk_json_get(j, c, "dtype")));
    uint32_t sh = mk_json_get(j, c, "shape");
    k->rows = mk_json_at(j, mk_json_at(j, sh)->first)->u;
    k->cols = mk_json_at(j, mk_json_at(j, mk_json_at(j, sh)->first)->next)->u;
    k->n = k->rows * k->cols;
    uint64_t seed = mk_json_at(j, mk_json_get(j, c, "seed"))->u;
    uint32_t mask = k->dtype == MK_BF16 ? 0x7F0000u : k->dtype == MK_F16 ? 0x7FE000u : 0x7FFFFFu;
    uint32_t *bits = malloc(k->n * 4);
    for (uint64_t i = 0; i < k->n; i++) {
        uint64_t u = splitmix64(((seed & 0xFFFFFFFFu) << 32) | i);
        bits[i] = (uint32_t)((u >> 63) << 31 | (117 + (u >> 40) % 10) << 23 | (u & mask));
    }
    for (uint32_t z = mk_json_at(j, mk_json_get(j, c, "zero_rows"))->first; z; z = mk_json_at(j, z)->next)
        memset(bits + mk_json_at(j, z)->u * k->cols, 0, k->cols * 4);
    for (uint32_t s = mk_json_at(j, mk_json_get(j, c, "sets"))->first; s; s = mk_json_at(j, s)->next) {
        uint32_t a = mk_json_at(j, s)->first;
        bits[mk_json_at(j, a)->u] = (uint32_t)mk_json_at(j, mk_json_at(j, a)->next)->u;
    }
    k->x = (float *)bits;
    /* FNV-1a of the input bytes in its dtype, as the script hashed them */
    unsigned es = mk_dtype_size(k->dtype);
    unsigned char *raw = malloc(k->n * es);
    mk_dtype_info(k->dtype)->from_f32(k->x, raw, k->n);
    uint64_t h = 0xCBF29CE484222325ull;
    for (uint64_t i = 0; i < k->n * es; i++) h = (h ^ raw[i]) * 0x100000001B3ull;
    free(raw);
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    const char *want = mk_json_strv(j, mk_json_get(j, c, "fnv1a"));
    if (strcmp(hex, want) != 0) {
        mk_test_fail(__FILE__, __LINE__, "%s: regenerated input hash %s, want %s (generator differs from the script)", k->name,
                     hex, want);
        return false;
    }
    return true;
}

static uint32_t params(const golden *g, const gcase *k) { return mk_json_get(&g->cases, k->c, "params"); }

/* ---- per kind ------------------------------------------------------------------------------ */

static void run_bnb4(golden *g, gcase *k)
{
    uint32_t p = params(g, k);
    const char *qt = mk_json_strv(&g->cases, mk_json_get(&g->cases, p, "quant_type"));
    mk_bnb4_type t = strcmp(qt, "nf4") == 0 ? MK_BNB_NF4 : MK_BNB_FP4;
    unsigned block = (unsigned)jnum(&g->cases, p, "block", 64);
    bool dq = jnum(&g->cases, p, "dq", 0) != 0;
    uint64_t nb = mk_bnb_nblocks(k->n, block);
    uint8_t *pr = calloc(k->n / 2 + 1, 1), *pf = calloc(k->n / 2 + 1, 1);
    float *ar = malloc(nb * 4), *af = malloc(nb * 4), *am2 = malloc(nb * 4);
    mk_bnb4_quantize_ref(t, block, k->x, k->n, ar, pr);
    mk_bnb4_quantize(t, block, k->x, k->n, af, pf, NULL, NULL);
    mk_bnb4_absmax(block, k->x, k->n, am2);
    check_bytes(g, k->name, "weight", "reference", pr, (k->n + 1) / 2, 1);
    check_bytes(g, k->name, "weight", "fast", pf, (k->n + 1) / 2, 1);
    CHECK_MSG(memcmp(ar, af, nb * 4) == 0 && memcmp(ar, am2, nb * 4) == 0, "%s: absmax differs between kernels", k->name);
    check_bytes(g, k->name, "quant_map", "table", mk_bnb4_code[t], 16, 4);
    float *deq = malloc(k->n * 4);
    float offset = 0;
    if (!dq) {
        check_bytes(g, k->name, "absmax", "reference", ar, nb, 4);
        mk_bnb4_dequant(t, block, pr, ar, 0, k->n, deq);
    } else {
        size_t nn = (nb + 255) / 256;
        uint8_t *q = malloc(nb), *qf = malloc(nb);
        float *na = malloc(nn * 4), *naf = malloc(nn * 4), *a2 = malloc(nb * 4);
        offset = mk_bnb_absmax_mean(ar, nb);
        check_bytes(g, k->name, "offset", "mean of absmax", &offset, 1, 4);
        mk_bnb_nested_quantize_ref(ar, nb, offset, q, na);
        mk_bnb_nested_quantize(ar, nb, offset, qf, naf);
        check_bytes(g, k->name, "absmax", "nested codes", q, nb, 1);
        check_bytes(g, k->name, "absmax", "nested codes, fast", qf, nb, 1);
        check_bytes(g, k->name, "nested_absmax", "reference", na, nn, 4);
        check_bytes(g, k->name, "nested_absmax", "nested, fast", naf, nn, 4);
        check_bytes(g, k->name, "nested_quant_map", "table", mk_bnb_dynamic_map, 256, 4);
        mk_bnb_nested_dequant(q, na, offset, 0, nb, a2);
        mk_bnb4_dequant(t, block, pr, a2, 0, k->n, deq);
        free(q);
        free(qf);
        free(na);
        free(naf);
        free(a2);
    }
    char dn[160];
    snprintf(dn, sizeof dn, "%s.deq", k->name);
    zero_sign_ok = t == MK_BNB_FP4;
    if (mk_source_find(g->src, dn) >= 0) check_bytes(g, k->name, "deq", "dequantized", deq, k->n, 4);
    zero_sign_ok = false;
    /* the JSON blob, through the plan that writes it */
    mk_qopts o;
    mk_qopts_init(&o, mk_qformat_find(t == MK_BNB_NF4 ? "nf4" : "fp4"));
    o.block = block;
    o.double_quant = dq;
    CHECK_OK(mk_qopts_resolve(&o, false));
    mk_tensor_info ti = {.name = "m.weight", .dtype = k->dtype, .ndim = 2, .shape = {(int64_t)k->rows, (int64_t)k->cols}};
    CHECK_OK(mk_tensor_info_finish(&ti));
    mk_qplan plan;
    CHECK_OK(mk_qplan_init(&plan, &o, NULL, &ti, 1));
    if (dq) mk_qplan_set_offset(&plan, 0, offset);
    CHECK_OK(mk_qplan_layout(&plan));
    char js[64];
    snprintf(js, sizeof js, "quant_state.bitsandbytes__%s", qt);
    if (plan.t[0].json) check_bytes(g, k->name, js, "JSON blob", plan.t[0].json, strlen(plan.t[0].json), 1);
    mk_qplan_free(&plan);
    free(pr);
    free(pf);
    free(ar);
    free(af);
    free(am2);
    free(deq);
}

static void run_int8(golden *g, gcase *k)
{
    int8_t *qr = malloc(k->n), *qf = malloc(k->n);
    float *sr = malloc(k->rows * 4), *sf = malloc(k->rows * 4), *deq = malloc(k->n * 4);
    mk_bnb_int8_quantize_ref(k->x, k->rows, k->cols, qr, sr);
    mk_bnb_int8_quantize(k->x, k->rows, k->cols, qf, sf, NULL);
    check_bytes(g, k->name, "weight", "reference", qr, k->n, 1);
    check_bytes(g, k->name, "weight", "fast", qf, k->n, 1);
    check_bytes(g, k->name, "SCB", "reference", sr, k->rows, 4);
    check_bytes(g, k->name, "SCB", "fast", sf, k->rows, 4);
    mk_bnb_int8_dequant(qr, sr, k->rows, k->cols, deq);
    check_bytes(g, k->name, "deq", "dequantized", deq, k->n, 4);
    free(qr);
    free(qf);
    free(sr);
    free(sf);
    free(deq);
}

static void run_ctint(golden *g, gcase *k)
{
    uint32_t p = params(g, k);
    mk_ct_int a = {(unsigned)jnum(&g->cases, p, "bits", 4), jnum(&g->cases, p, "asym", 0) != 0, k->dtype};
    uint64_t group = (uint64_t)jnum(&g->cases, p, "group", 0);
    if (!group) group = k->cols;
    uint64_t G = k->cols / group, W = (k->cols * a.bits + 31) / 32, per = 32 / a.bits;
    uint32_t *wr = calloc(k->rows * W, 4), *wf = calloc(k->rows * W, 4);
    int8_t *cr = malloc(k->n), *cf = malloc(k->n);
    float *sc = malloc(k->rows * G * 4), *deq = malloc(k->n * 4);
    int32_t *zp = malloc(k->rows * G * 4);
    for (uint64_t r = 0; r < k->rows; r++)
        for (uint64_t gi = 0; gi < G; gi++) {
            uint64_t o = r * k->cols + gi * group;
            mk_ct_int_qparams(&a, k->x + o, group, &sc[r * G + gi], &zp[r * G + gi]);
            mk_ct_int_codes_ref(&a, k->x + o, group, sc[r * G + gi], zp[r * G + gi], cr + o);
            mk_ct_int_codes(&a, k->x + o, group, sc[r * G + gi], zp[r * G + gi], cf + o, NULL);
            mk_ct_int_dequant(&a, cr + o, group, sc[r * G + gi], zp[r * G + gi], deq + o);
        }
    for (uint64_t r = 0; r < k->rows; r++) {
        mk_ct_pack_row(a.bits, cr + r * k->cols, k->cols, wr + r * W);
        mk_ct_pack_row(a.bits, cf + r * k->cols, k->cols, wf + r * W);
    }
    check_bytes(g, k->name, "weight_packed", "reference", wr, k->rows * W, 4);
    check_bytes(g, k->name, "weight_packed", "fast", wf, k->rows * W, 4);
    unsigned es = mk_dtype_size(k->dtype);
    unsigned char *sb = malloc(k->rows * G * es);
    mk_dtype_info(k->dtype)->from_f32(sc, sb, k->rows * G);
    check_bytes(g, k->name, "weight_scale", "scales", sb, k->rows * G, es);
    int64_t shape[2] = {(int64_t)k->rows, (int64_t)k->cols};
    check_bytes(g, k->name, "weight_shape", "shape", shape, 2, 8);
    if (a.asym) {
        uint64_t wrows = (k->rows + per - 1) / per;
        uint32_t *zw = calloc(wrows * G, 4);
        for (uint64_t w = 0; w < wrows; w++) {
            uint64_t nr = k->rows - w * per < per ? k->rows - w * per : per;
            mk_ct_pack_zp(a.bits, zp + w * per * G, nr, G, zw + w * G);
        }
        check_bytes(g, k->name, "weight_zero_point", "zero points", zw, wrows * G, 4);
        /* and back */
        for (uint64_t r = 0; r < k->rows; r++)
            for (uint64_t gi = 0; gi < G; gi++)
                CHECK_EQ_INT(mk_ct_unpack_zp(a.bits, zw + (r / per) * G, r % per, gi), zp[r * G + gi]);
        free(zw);
    }
    int8_t *un = malloc(k->cols);
    for (uint64_t r = 0; r < k->rows; r++) {
        mk_ct_unpack_row(a.bits, wr + r * W, k->cols, un);
        CHECK_MSG(memcmp(un, cr + r * k->cols, k->cols) == 0, "%s: row %llu does not unpack to its codes", k->name,
                  (unsigned long long)r);
    }
    check_bytes(g, k->name, "deq", "dequantized", deq, k->n, 4);
    free(un);
    free(wr);
    free(wf);
    free(cr);
    free(cf);
    free(sc);
    free(deq);
    free(zp);
    free(sb);
}

static void run_fp8(golden *g, gcase *k)
{
    bool tensor = jnum(&g->cases, params(g, k), "tensor", 0) != 0;
    mk_ct_fp8 a = {false, k->dtype};
    uint8_t *qr = malloc(k->n), *qf = malloc(k->n);
    float *sc = malloc(k->rows * 4), *deq = malloc(k->n * 4);
    float tam = 0;
    for (uint64_t i = 0; i < k->n; i++) tam = fabsf(k->x[i]) > tam ? fabsf(k->x[i]) : tam;
    for (uint64_t r = 0; r < k->rows; r++) {
        const float *xr = k->x + r * k->cols;
        float am = 0;
        for (uint64_t c = 0; c < k->cols; c++) am = fabsf(xr[c]) > am ? fabsf(xr[c]) : am;
        sc[r] = mk_ct_fp8_scale(&a, tensor ? tam : am);
        mk_ct_fp8_quantize_ref(&a, xr, k->cols, sc[r], qr + r * k->cols);
        mk_ct_fp8_quantize(&a, xr, k->cols, sc[r], qf + r * k->cols, NULL);
        mk_ct_fp8_dequant(&a, qr + r * k->cols, k->cols, sc[r], deq + r * k->cols);
    }
    check_bytes(g, k->name, "weight", "reference", qr, k->n, 1);
    check_bytes(g, k->name, "weight", "fast", qf, k->n, 1);
    unsigned es = mk_dtype_size(k->dtype);
    unsigned char sb[4096];
    mk_dtype_info(k->dtype)->from_f32(sc, sb, tensor ? 1 : k->rows);
    check_bytes(g, k->name, "weight_scale", "scales", sb, tensor ? 1 : k->rows, es);
    check_bytes(g, k->name, "deq", "dequantized", deq, k->n, 4);
    free(qr);
    free(qf);
    free(sc);
    free(deq);
}

/* nvfp4, mxfp4, mxfp8: codes (packed as the library packs them), group scales, the global
 * scale and the library's decompression (bf16 values). */
static void run_mx(golden *g, gcase *k)
{
    const bool nv = strcmp(k->kind, "nvfp4") == 0, fp8 = strcmp(k->kind, "mxfp8") == 0;
    const unsigned bits = fp8 ? 8 : 4;
    const uint64_t group = nv ? 16 : 32, G = k->n / group;
    uint8_t *codes = malloc(k->n), *sc = malloc(G);
    float *deq = malloc(k->n * 4);
    const float gs = nv ? mk_nvfp4_global_scale(k->dtype, mk_ct_absmax(k->x, k->n)) : 0;
    for (uint64_t g0 = 0; g0 < G; g0++) {
        const float *xg = k->x + g0 * group;
        uint8_t *cg = codes + g0 * group;
        if (nv) {
            sc[g0] = mk_nvfp4_group_scale(k->dtype, gs, mk_ct_absmax(xg, group));
            mk_nvfp4_quantize(xg, group, gs, sc[g0], cg, NULL);
            mk_nvfp4_dequant(cg, group, gs, sc[g0], deq + g0 * group);
        } else {
            uint8_t e = mk_mx_scale_exp(k->dtype, bits, mk_ct_absmax(xg, group));
            mk_mx_quantize(k->dtype, bits, xg, group, e, cg, NULL);
            sc[g0] = mk_mx_stored_exp(e);
            mk_mx_dequant(bits, cg, group, sc[g0], deq + g0 * group);
        }
    }
    if (fp8) {
        check_bytes(g, k->name, "weight", "codes", codes, k->n, 1);
    } else {
        uint8_t *packed = malloc(k->n / 2);
        mk_fp4_pack(codes, k->n, packed);
        check_bytes(g, k->name, "weight_packed", "codes", packed, k->n / 2, 1);
        free(packed);
    }
    check_bytes(g, k->name, "weight_scale", "group scales", sc, G, 1);
    if (nv) check_bytes(g, k->name, "weight_global_scale", "global scale", &gs, 1, 4);
    check_bytes(g, k->name, "deq", "decompressed", deq, k->n, 4);
    free(codes);
    free(sc);
    free(deq);
}

static size_t run_kind(const char *kind)
{
    golden g;
    size_t ran = 0;
    const bool mx = strcmp(kind, "nvfp4") == 0 || strcmp(kind, "mxfp4") == 0 || strcmp(kind, "mxfp8") == 0;
    if (!golden_open(&g, mx ? "fp4.safetensors" : "edge.safetensors")) return 0;
    for (uint32_t c = mk_json_at(&g.cases, 0)->first; c; c = mk_json_at(&g.cases, c)->next) {
        gcase k;
        const char *kd = mk_json_strv(&g.cases, mk_json_get(&g.cases, c, "kind"));
        if (strcmp(kd, kind) != 0) continue;
        if (case_load(&g, c, &k)) {
            if (strcmp(kind, "bnb4") == 0) run_bnb4(&g, &k);
            else if (strcmp(kind, "int8") == 0) run_int8(&g, &k);
            else if (strcmp(kind, "ctint") == 0) run_ctint(&g, &k);
            else if (mx) run_mx(&g, &k);
            else run_fp8(&g, &k);
            ran++;
        }
        free(k.x);
    }
    golden_close(&g);
    return ran;
}

MK_TEST(quant_golden_bnb4)
{
    CHECK(run_kind("bnb4") >= 9);
}

MK_TEST(quant_golden_int8)
{
    CHECK(run_kind("int8") >= 2);
}

MK_TEST(quant_golden_ct_int)
{
    CHECK(run_kind("ctint") >= 14);
}

MK_TEST(quant_golden_fp8)
{
    CHECK(run_kind("fp8") >= 4);
}

MK_TEST(quant_golden_fp4_mx)
{
    CHECK(run_kind("nvfp4") >= 5);
    CHECK(run_kind("mxfp4") >= 5);
    CHECK(run_kind("mxfp8") >= 3);
}

MK_TEST(quant_golden_tables)
{
    golden g;
    if (!golden_open(&g, "edge.safetensors")) return;
    check_bytes(&g, "table", "nf4", "NF4 codes", mk_bnb4_code[MK_BNB_NF4], 16, 4);
    check_bytes(&g, "table", "fp4", "FP4 codes", mk_bnb4_code[MK_BNB_FP4], 16, 4);
    check_bytes(&g, "table", "dynamic", "dynamic map", mk_bnb_dynamic_map, 256, 4);
    CHECK_MSG(*(const uint32_t *)&(float){MK_BNB_ABSMAX_FLOOR} == 0x006ce3eeu, "f32(1e-38) bits");
    golden_close(&g);
}

/* Python's repr of floats (the nested_offset text): [hex bits of the double, repr]. */
MK_TEST(quant_golden_pyfloat)
{
    golden g;
    if (!golden_open(&g, "edge.safetensors")) return;
    size_t n = 0;
    for (uint32_t c = mk_json_at(&g.pyf, 0)->first; c; c = mk_json_at(&g.pyf, c)->next, n++) {
        uint32_t a = mk_json_at(&g.pyf, c)->first;
        uint64_t bits = strtoull(mk_json_strv(&g.pyf, a), NULL, 16);
        const char *want = mk_json_strv(&g.pyf, mk_json_at(&g.pyf, a)->next);
        double v;
        memcpy(&v, &bits, 8);
        char buf[40];
        CHECK_STR(mk_fmt_pyfloat(v, buf), want);
    }
    CHECK(n >= 50);
    golden_close(&g);
}
