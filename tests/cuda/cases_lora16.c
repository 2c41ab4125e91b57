/* cases_lora16.c - see cases.h (mk_cu_run_lora16_kernels): the bf16 kernels of
 * nn/cuda/mk_cuda_lora16.h against the CPU's bf16 functions they must match. The trainer's bf16
 * checks with LoRA, QLoRA and the qwen families are cases_lora.c's. */
#include "cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/mk_dtype.h"
#include "../../nn/cuda/mk_cuda_lora16.h"
#include "../../nn/ops_bwd.h"
#include "../../quant/bnb.h"

static mk_cu_report rep;
static int failed;

/* got (device f32, or bf16 when b16) against want: the worst |got - want| over max |want| */
static void cmp(const char *what, const void *dev, bool b16, const float *want, size_t n, double tol, const char *prec)
{
    float *got = malloc(n * sizeof *got + 4);
    uint16_t *h = malloc(n * 2 + 2);
    char detail[300] = "";
    mk_status s = mk_cu_sync();
    if (s == MK_OK) s = mk_cu_get(b16 ? (void *)h : (void *)got, dev, n * (b16 ? 2 : 4));
    for (size_t i = 0; b16 && s == MK_OK && i < n; i++) got[i] = mk_bf16_to_f32(h[i]);
    bool ok = s == MK_OK && mk_cu_worst_err(got, want, n, prec, tol, detail, sizeof detail) <= tol;
    if (!ok) failed++;
    rep(ok, what, s == MK_OK ? detail : mk_errmsg());
    free(got), free(h);
}

static uint16_t *dput16(const float *x, size_t n)
{
    uint16_t *h = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) h[i] = mk_f32_to_bf16(x[i]);
    uint16_t *d = mk_cu_dput(h, n * 2);
    free(h);
    return d;
}

static void *dnew(size_t bytes)
{
    void *d = NULL;
    return mk_cu_alloc(&d, bytes) == MK_OK ? d : NULL;
}

int mk_cu_run_lora16_kernels(const mk_cu_tol *tol, mk_cu_report report)
{
    rep = report, failed = 0;
    /* the bias gradient of a bf16 projection (mk_nn_linear_bwd_bf16's db) */
    size_t T = 37, out = 300;
    float *dy = mk_cu_rnd(T * out, 31, -1, 1), *db = mk_cu_rnd(out, 32, -1, 1), *wdb = malloc(out * 4);
    mk_nn_round_bf16(dy, T * out);
    memcpy(wdb, db, out * 4);
    float *scr = malloc(mk_nn_linear_bwd_bf16_scratch(T, 1) * 4 + 4);
    mk_nn_linear_bwd_bf16(dy, T, 1, db, out, dy, NULL, false, NULL, wdb, scr); /* x, w unused without dx and dw */
    uint16_t *dyd = dput16(dy, T * out);
    float *dbd = mk_cu_dput(db, out * 4);
    mk_cu_bias16_bwd(dyd, T, out, dbd);
    cmp("bf16 bias backward (mk_nn_linear_bwd_bf16's db)", dbd, false, wdb, out, tol->b16, tol->name);
    /* NF4 decoded into bf16 (held_load in bf16: mk_bnb4_dequant, rounded) */
    size_t n = 64 * 41 + 6;
    float *v = mk_cu_rnd(n, 33, -2, 2), *absmax = malloc(((n + 63) / 64) * 4), *dq = malloc(n * 4);
    uint8_t *codes = malloc((n + 1) / 2);
    mk_bnb4_quantize(MK_BNB_NF4, 64, v, n, absmax, codes, NULL, NULL);
    mk_bnb4_dequant(MK_BNB_NF4, 64, codes, absmax, 0, n, dq);
    mk_nn_round_bf16(dq, n);
    uint8_t *cd = mk_cu_dput(codes, (n + 1) / 2);
    float *ad = mk_cu_dput(absmax, ((n + 63) / 64) * 4), *td = mk_cu_dput(mk_bnb4_decode[MK_BNB_NF4], 16 * 4);
    uint16_t *od = dnew(n * 2);
    if (od) mk_cu_nf4_decode16(cd, ad, td, 64, n, od);
    cmp("bf16 NF4 decode (mk_bnb4_dequant, rounded)", od, true, dq, n, 0.0, tol->name);
    /* qwen3's per-head norm of a bf16 tensor, forward and backward (rows of 16 and of 300) */
    for (size_t d = 16; d <= 300; d += 284) {
        size_t rows = 23;
        float *x = mk_cu_rnd(rows * d, 40 + d, -2, 2), *w = mk_cu_rnd(d, 41 + d, 0.5f, 1.5f), *g = mk_cu_rnd(rows * d, 42 + d, -1, 1);
        float *o = malloc(rows * d * 4), *dx = calloc(rows * d, 4), *dw = mk_cu_rnd(d, 43 + d, -1, 1), *rs = malloc(rows * 4);
        float *dn = malloc(rows * d * 4), *dw0 = malloc(d * 4);
        mk_nn_round_bf16(x, rows * d);
        memcpy(dw0, dw, d * 4);
        mk_nn_rmsnorm_bf16(o, x, w, rows, d, 1e-6f);
        mk_nn_rmsnorm_bwd_bf16(x, w, g, rows, d, 1e-6f, dx, dw, rs, dn);
        float *xd = mk_cu_dput(x, rows * d * 4), *wd = mk_cu_dput(w, d * 4), *gd = mk_cu_dput(g, rows * d * 4);
        float *od2 = dnew(rows * d * 4), *dxd = dnew(rows * d * 4), *dwd = mk_cu_dput(dw0, d * 4), *rsd = dnew(rows * 4);
        char what[160];
        mk_cu_rmsnorm_b(od2, xd, wd, rows, d, 1e-6f);
        snprintf(what, sizeof what, "bf16 q/k norm forward [%zu, %zu] (mk_nn_rmsnorm_bf16)", rows, d);
        cmp(what, od2, false, o, rows * d, tol->b16, tol->name);
        mk_cu_rmsnorm_b_bwd(xd, wd, gd, rows, d, 1e-6f, dxd, dwd, rsd);
        snprintf(what, sizeof what, "bf16 q/k norm backward dx [%zu, %zu] (mk_nn_rmsnorm_bwd_bf16)", rows, d);
        cmp(what, dxd, false, dx, rows * d, tol->b16, tol->name);
        snprintf(what, sizeof what, "bf16 q/k norm backward dw [%zu] (mk_nn_rmsnorm_bwd_bf16)", d);
        cmp(what, dwd, false, dw, d, tol->reduce, tol->name);
        mk_cu_free(xd), mk_cu_free(wd), mk_cu_free(gd), mk_cu_free(od2), mk_cu_free(dxd), mk_cu_free(dwd), mk_cu_free(rsd);
        free(x), free(w), free(g), free(o), free(dx), free(dw), free(rs), free(dn), free(dw0);
    }
    mk_cu_free(dyd), mk_cu_free(dbd), mk_cu_free(cd), mk_cu_free(ad), mk_cu_free(td), mk_cu_free(od);
    free(dy), free(db), free(wdb), free(scr), free(v), free(absmax), free(dq), free(codes);
    return failed;
}
