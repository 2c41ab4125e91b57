/* emu.c - mk_cuda.h on the CPU: every kernel's per-thread bodies (bodies.h) run in a loop over
 * the grid, a row kernel's phases one after the other for all MK_CU_NT threads of its block
 * (what its barriers guarantee on the device), "device" memory is host memory and the product
 * is BLAS's column-major sgemm with cuBLAS's arguments. The unit tests hold it to the CPU
 * kernels, so a wrong index, mask or transpose in a body or a launch shows without a GPU. */
#include "mk_cuda.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bodies.h"
#include "launch.h"

/* the block's shared memory (two reductions at most) */
static double sh[2 * MK_CU_NT];

static void tree(double *s, bool is_max)
{
    for (unsigned stride = MK_CU_NT / 2; stride > 0; stride /= 2)
        for (unsigned tid = 0; tid < MK_CU_NT; tid++) is_max ? mk_cu_tree_max(s, tid, stride) : mk_cu_tree_add(s, tid, stride);
}

#define FLAT(n, body)                                                                                                  \
    for (size_t i_ = 0; i_ < (n); i_++) body
#define THREADS(stmt)                                                                                                  \
    for (unsigned tid = 0; tid < MK_CU_NT; tid++) stmt

bool mk_cu_available(char *why, size_t n)
{
    snprintf(why, n, "emulated on the CPU");
    return true;
}

/* "device" memory: a size of its own (mk_cu_emu_memory; 0: no limit, none reported) and the
 * bytes allocated now and at most, each block led by its size */
static uint64_t emu_total, emu_now, emu_peak;
#define EMU_HDR 16

void mk_cu_emu_memory(uint64_t total, uint64_t *peak)
{
    emu_total = total;
    if (peak) *peak = emu_peak;
    emu_peak = emu_now;
}

mk_status mk_cu_mem_info(uint64_t *free_b, uint64_t *total_b)
{
    *total_b = emu_total, *free_b = emu_total > emu_now ? emu_total - emu_now : 0;
    return emu_total ? MK_OK : mk_error(MK_ERR_UNSUPPORTED, "the CPU emulation has no memory size (mk_cu_emu_memory)");
}

mk_status mk_cu_alloc(void **dev, size_t bytes)
{
    char *p = mk_malloc(bytes + EMU_HDR);
    *dev = p ? p + EMU_HDR : NULL;
    if (!p) return MK_ERR_NOMEM;
    memcpy(p, &bytes, sizeof bytes);
    emu_now += bytes;
    if (emu_now > emu_peak) emu_peak = emu_now;
    return MK_OK;
}
void mk_cu_free(void *dev)
{
    if (!dev) return;
    char *p = (char *)dev - EMU_HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    emu_now -= bytes;
    free(p);
}
mk_status mk_cu_put(void *dev, const void *host, size_t bytes)
{
    memcpy(dev, host, bytes);
    return MK_OK;
}
mk_status mk_cu_get(void *host, const void *dev, size_t bytes)
{
    memcpy(host, dev, bytes);
    return MK_OK;
}
void mk_cu_zero(void *dev, size_t bytes) { memset(dev, 0, bytes); }
mk_status mk_cu_sync(void) { return MK_OK; }

void mk_cu_embed_fwd(const int32_t *tok, size_t T, size_t H, const float *emb, float *x)
{
    FLAT(T * H, mk_cu_embed_fwd_body(i_, tok, H, emb, x));
}
void mk_cu_embed_bwd(const int32_t *tok, size_t T, size_t H, const float *dx, float *demb)
{
    FLAT(H, mk_cu_embed_bwd_body(i_, tok, T, H, dx, demb));
}

void mk_cu_rmsnorm(float *out, const float *x, const float *w, size_t T, size_t d, float eps, float *rstd)
{
    for (size_t row = 0; row < T; row++) {
        THREADS(mk_cu_rms_part(row, tid, x, d, sh));
        tree(sh, false);
        double ss = sh[0];
        THREADS(mk_cu_rms_fin(row, tid, x, w, d, eps, ss, out, rstd));
    }
}

void mk_cu_rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                       float *rstd)
{
    for (size_t row = 0; row < T; row++) {
        THREADS(mk_cu_rms_bwd_part(row, tid, x, w, dy, d, sh));
        tree(sh, false);
        tree(sh + MK_CU_NT, false);
        double ss = sh[0], dot = sh[MK_CU_NT];
        THREADS(mk_cu_rms_bwd_fin(row, tid, x, w, dy, d, eps, ss, dot, dx, rstd));
    }
    if (dw) FLAT(d, mk_cu_rms_dw_body(i_, x, dy, rstd, T, d, dw));
}

void mk_cu_rope(float *x, size_t T, size_t nh, size_t hd, size_t half, const float *cos_t, const float *sin_t, bool inverse)
{
    FLAT(T * nh * half, mk_cu_rope_body(i_, x, nh, hd, half, cos_t, sin_t, inverse ? -1.0f : 1.0f));
}

void mk_cu_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd, float scale,
                     long window, float *out, float *p)
{
    for (size_t row = 0; row < nh * T; row++) {
        THREADS(mk_cu_att_score_part(row, tid, q, k, T, nh, nkv, hd, scale, window, p, sh));
        tree(sh, true);
        float mx = (float)sh[0];
        THREADS(mk_cu_att_exp_part(row, tid, T, window, mx, p, sh));
        tree(sh, false);
        double sum = sh[0];
        THREADS(mk_cu_att_norm_fin(row, tid, T, window, sum, p));
    }
    FLAT(T * nh * hd, mk_cu_att_out_body(i_, p, v, T, nh, nkv, hd, out));
}

void mk_cu_attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                         size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *ds)
{
    FLAT(T * nkv * hd, mk_cu_att_dv_body(i_, p, dout, T, nh, nkv, hd, dv));
    for (size_t row = 0; row < nh * T; row++) {
        THREADS(mk_cu_att_dp_part(row, tid, p, dout, v, T, nh, nkv, hd, ds, sh));
        tree(sh, false);
        double dot = sh[0];
        THREADS(mk_cu_att_ds_fin(row, tid, p, T, scale, dot, ds));
    }
    FLAT(T * nh * hd, mk_cu_att_dq_body(i_, ds, k, T, nh, nkv, hd, dq));
    FLAT(T * nkv * hd, mk_cu_att_dk_body(i_, ds, q, T, nh, nkv, hd, dk));
}

void mk_cu_swiglu(const float *gate, const float *up, float *out, size_t n) { FLAT(n, mk_cu_swiglu_body(i_, gate, up, out)); }
void mk_cu_swiglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup)
{
    FLAT(n, mk_cu_swiglu_bwd_body(i_, gate, up, dout, dgate, dup));
}
void mk_cu_add(float *y, const float *x, size_t n) { FLAT(n, mk_cu_add_body(i_, y, x)); }
void mk_cu_scale(float *x, float c, size_t n) { FLAT(n, mk_cu_scale_body(i_, x, c)); }

void mk_cu_xent(float *logits, size_t n, size_t V, const int32_t *target, const float *weight, float scale, double *nll)
{
    for (size_t row = 0; row < n; row++) {
        THREADS(mk_cu_xent_max_part(row, tid, logits, V, sh));
        tree(sh, true);
        float mx = (float)sh[0];
        THREADS(mk_cu_xent_sum_part(row, tid, logits, V, mx, sh));
        tree(sh, false);
        double sum = sh[0];
        THREADS(mk_cu_xent_fin(row, tid, logits, V, target, weight, scale, mx, sum, nll));
    }
}

void mk_cu_adamw(double beta1, double beta2, double eps, double weight_decay, double lr, long step, bool decay, float *w,
                 const float *g, float *m, float *v, uint16_t *w16, size_t n)
{
    mk_cu_adamw_k k = mk_cu_adamw_consts(beta1, beta2, eps, weight_decay, lr, step, decay);
    FLAT(n, mk_cu_adamw_body(i_, k, decay, w, g, m, v, w16));
}

mk_status mk_cu_grad_norm(const float *g, size_t n, double *part, double *norm)
{
    size_t nb = mk_cu_norm_blocks(n);
    for (size_t b = 0; b < nb; b++) {
        THREADS(mk_cu_sumsq_part(b, tid, g, n, nb, sh));
        tree(sh, false);
        part[b] = sh[0];
    }
    THREADS(mk_cu_sum_part(tid, part, nb, sh));
    tree(sh, false);
    *norm = sqrt(sh[0]);
    return MK_OK;
}

void mk_cu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda, const float *B,
                size_t ldb, float beta, float *C, size_t ldc)
{
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, A,
                (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
