/* train_lora16.c - see train_ext.h's bf16 part: LoRA, QLoRA, qwen2's biases and qwen3's q/k
 * norms in bf16 mixed precision, as nn/backward.c computes them with t->bf16 (proj, proj_bwd,
 * head_norm, held_load): every product reads bf16 operands and rounds its output, a bias is
 * added to a product's f32 sums before they are rounded, LoRA's sum and scaled gradient round
 * after each op. Under LoRA the frozen base lives on the device in bf16 (what the CPU rounded in
 * place: the projections, their biases, lm_head; a tied head is the embedding rounded), and only
 * the tensors read in f32 (the embedding, the norms) also in f32; QLoRA's NF4 layer is decoded
 * straight into bf16. */
#include <stdlib.h>

#include "cu_train.h"
#include "ext_priv.h"
#include "mem.h"
#include "mk_cuda16.h"
#include "mk_cuda_lora16.h"

/* The frozen base's tensors read in f32 (offsets and floats into from, len), in the order fz
 * holds them; their count (only counted when from is NULL). */
static size_t side_tensors(mk_nn_train *t, int64_t *from, uint64_t *len)
{
    const mk_model_config *c = mk_nn_train_config(t);
    size_t n = 0, L = (size_t)c->layers;
    uint64_t H = (uint64_t)c->hidden, hd = (uint64_t)c->head_dim;
#define ADD(o, sz)                                                                                                               \
    do {                                                                                                                         \
        int64_t o_ = (o);                                                                                                        \
        if (o_ >= 0) {                                                                                                           \
            if (from) from[n] = o_, len[n] = (sz);                                                                               \
            n++;                                                                                                                 \
        }                                                                                                                        \
    } while (0)
    ADD(mk_nn_train_offset(t, -1, MK_ROLE_TOK_EMBED, false), (uint64_t)mk_nn_train_vocab(t) * H);
    ADD(mk_nn_train_offset(t, -1, MK_ROLE_FINAL_NORM, false), H);
    for (size_t l = 0; l < L; l++) {
        ADD(mk_nn_train_offset(t, (long)l, MK_ROLE_ATTN_NORM, false), H);
        ADD(mk_nn_train_offset(t, (long)l, MK_ROLE_MLP_NORM, false), H);
        ADD(mk_nn_train_offset(t, (long)l, MK_ROLE_Q_NORM, false), hd);
        ADD(mk_nn_train_offset(t, (long)l, MK_ROLE_K_NORM, false), hd);
    }
#undef ADD
    return n;
}

void mk_cu_ext16_plan(mk_nn_train *t, uint64_t N, plan *p)
{
    if (p->frozen) { /* LoRA: the frozen base in bf16, its f32-read tensors in f32 */
        size_t n = side_tensors(t, NULL, NULL);
        int64_t *from = malloc((n + 1) * sizeof *from);
        uint64_t *len = malloc((n + 1) * sizeof *len), side = 0;
        if (from && len) {
            side_tensors(t, from, len);
            for (size_t i = 0; i < n; i++) side += len[i];
        }
        free(from), free(len);
        p->fz16 = p->frozen, p->frozen = side;
    }
    p->scr16 = p->scratch, p->scratch = 0;
    if (p->nad) {
        p->xa16 = p->xa, p->xa = 0, p->lxa16 = N * p->r;
        p->lc16 = mk_cu_lora_c16(mk_nn_train_config(t), N, p->r);
    }
}

/* The frozen base to the device in bf16 (exact: what the products read the CPU rounded in
 * place), its f32-read tensors into fz (side_from -> side_to). */
static mk_status put_frozen16(mk_cu_ext *x)
{
    uint64_t n;
    const float *fz = mk_nn_train_frozen(x->t, &n);
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    size_t ns = side_tensors(x->t, NULL, NULL);
    uint64_t *len = malloc((ns + 1) * sizeof *len);
    x->side_from = malloc((ns + 1) * sizeof *x->side_from), x->side_to = malloc((ns + 1) * sizeof *x->side_to);
    mk_status s = h && len && x->side_from && x->side_to ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) {
        for (uint64_t i = 0; i < n; i++) h[i] = mk_f32_to_bf16(fz[i]);
        s = mk_cu_put(x->fz16, h, n * sizeof *h);
    }
    if (s == MK_OK) {
        x->n_side = side_tensors(x->t, x->side_from, len);
        int64_t to = 0;
        for (size_t i = 0; s == MK_OK && i < x->n_side; i++) {
            x->side_to[i] = to;
            s = mk_cu_put(x->fz + to, fz + x->side_from[i], len[i] * sizeof(float));
            to += (int64_t)len[i];
        }
    }
    free(h), free(len);
    return s;
}

int64_t mk_cu_ext_f32_off(const mk_cu_ext *x, int64_t off)
{
    for (size_t i = 0; off >= 0 && i < x->n_side; i++)
        if (x->side_from[i] == off) return x->side_to[i];
    return off;
}

mk_status mk_cu_ext16_init(mk_cu_ext *x)
{
    const plan *p = &x->p;
    if (p->nad && p->r > x->H)
        return mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer's bf16 path takes a LoRA rank up to the hidden size %zu "
                                             "(--lora %zu)", x->H, p->r);
    uint64_t n16 = p->fz16 + p->scr16 + p->xa16 + p->lxa16 + p->lc16;
    if (n16) MK_TRY(mk_cu_alloc((void **)&x->arena16, n16 * sizeof(uint16_t)));
    uint16_t *b = x->arena16;
    x->fz16 = b, b += p->fz16;
    x->scr16 = b, b += p->scr16;
    x->xa16 = b, b += p->xa16;
    x->lxa16 = b, b += p->lxa16;
    x->lc16 = b;
    if (p->fz16) {
        MK_TRY(put_frozen16(x));
        x->base16 = x->fz16;
        for (size_t l = 0; l < x->L; l++)
            for (int i = 0; i < 2; i++) x->qn[l][i] = mk_cu_ext_f32_off(x, x->qn[l][i]);
    }
    return MK_OK;
}

void mk_cu_ext_set16(mk_cu_ext *x, const uint16_t *w16)
{
    x->w16 = w16;
    if (!x->fz16) x->base16 = w16;
}
const uint16_t *mk_cu_ext_base16(const mk_cu_ext *x) { return x->base16; }
const uint16_t *mk_cu_ext_weight16(const mk_cu_ext *x, size_t l, mk_role r)
{
    (void)l;
    return x->scr16 + x->scr_off[mk_cu_ext_role_k(r)];
}
bool mk_cu_ext_has_norm(const mk_cu_ext *x, size_t l, int which) { return x->qn[l][which] >= 0; }

/* x A^T of layer l's role k (bf16): its slot in the kept activations */
static uint16_t *xa16_of(const mk_cu_ext *x, size_t l, size_t k)
{
    size_t slot = x->ckpt ? 0 : l;
    return x->xa16 + ((uint64_t)slot * x->p.nad + (uint64_t)x->xslot[k]) * x->N_cap * x->p.r;
}

void mk_cu_ext_proj16(mk_cu_ext *x, size_t l, mk_role r, const uint16_t *in, size_t N, const uint16_t *w, float *y,
                      uint16_t *tmp16)
{
    size_t k = mk_cu_ext_role_k(r);
    uint64_t ni, no;
    mk_cu_proj_dims(mk_nn_train_config(x->t), r, &ni, &no);
    if (x->bias[l][k] >= 0) { /* the bias joins the f32 sums, then the output is rounded */
        mk_cu_gemm16(true, false, no, N, ni, w, ni, in, ni, y, no, false);
        mk_cu_bias16_add(y, x->base16 + x->bias[l][k], N, no);
    } else {
        mk_cu_linear16(in, N, ni, w, no, y);
    }
    long ia = x->ad[l][k];
    if (ia < 0) return;
    const uint16_t *A = x->w16 + mk_nn_train_param(x->t, (size_t)ia)->off, *B = x->w16 + mk_nn_train_param(x->t, (size_t)ia + 1)->off;
    uint16_t *xa = xa16_of(x, l, k);
    size_t rk = x->p.r;
    mk_cu_gemm16(true, false, rk, N, ni, A, ni, in, ni, xa, rk, true);    /* bf16(x A^T), kept */
    mk_cu_gemm16(true, false, no, N, rk, B, rk, xa, rk, tmp16, no, true); /* bf16(x A^T B^T) */
    mk_cu_lora16_add(y, tmp16, x->ls, N * no);
}

void mk_cu_ext_proj16_bwd(mk_cu_ext *x, size_t l, mk_role r, const uint16_t *in, size_t N, const uint16_t *w, const float *dy,
                          float *dx, bool dx_bf16, float *gw, uint16_t *dy16, uint16_t *c16)
{
    size_t k = mk_cu_ext_role_k(r);
    uint64_t ni, no;
    mk_cu_proj_dims(mk_nn_train_config(x->t), r, &ni, &no);
    mk_cu_to16(dy, dy16, N * no);
    mk_cu_linear16_bwd(in, N, ni, w, no, dy16, dx, dx_bf16, gw, c16);
    if (x->bias[l][k] >= 0 && x->gbase) mk_cu_bias16_bwd(dy16, N, no, x->gbase + x->bias[l][k]);
    long ia = x->ad[l][k];
    if (ia < 0) return;
    uint64_t oa = mk_nn_train_param(x->t, (size_t)ia)->off, ob = mk_nn_train_param(x->t, (size_t)ia + 1)->off;
    size_t rk = x->p.r;
    mk_cu_scale16(dy16, x->ls, N * no); /* bf16(dy s) */
    mk_cu_zero(x->lxa, N * rk * sizeof(float));
    mk_cu_linear16_bwd(xa16_of(x, l, k), N, rk, x->w16 + ob, no, dy16, x->lxa, true, x->gr + ob, x->lc16);
    mk_cu_to16(x->lxa, x->lxa16, N * rk);
    mk_cu_linear16_bwd(in, N, ni, x->w16 + oa, rk, x->lxa16, dx, dx_bf16, x->gr + oa, c16);
}

/* y[rows, hd] kept in keep, then y = w * bf16(keep rstd) (mk_nn_rmsnorm_bf16) */
static void norm16_fwd(const mk_cu_ext *x, float *y, float *keep, const float *w, size_t rows)
{
    mk_cu_zero(keep, rows * x->hd * sizeof(float));
    mk_cu_add(keep, y, rows * x->hd);
    mk_cu_rmsnorm_b(y, keep, w, rows, x->hd, x->eps);
}

void mk_cu_ext16_qk(mk_cu_ext *x, size_t l, float *q, float *k, size_t N)
{
    size_t slot = x->ckpt ? 0 : l;
    if (x->qn[l][0] >= 0) norm16_fwd(x, q, x->qpre + slot * x->N_cap * x->q, x->base + x->qn[l][0], N * x->nh);
    if (x->qn[l][1] >= 0) norm16_fwd(x, k, x->kpre + slot * x->N_cap * x->kv, x->base + x->qn[l][1], N * x->nkv);
}

/* d = mk_nn_rmsnorm_bwd_bf16's dx of keep (through dqp); the weight's gradient when it trains */
static void norm16_bwd(const mk_cu_ext *x, const float *keep, int64_t off, float *d, size_t rows)
{
    size_t n = rows * x->hd;
    mk_cu_rmsnorm_b_bwd(keep, x->base + off, d, rows, x->hd, x->eps, x->dqp, x->gbase ? x->gbase + off : NULL, x->rstd);
    mk_cu_zero(d, n * sizeof(float));
    mk_cu_add(d, x->dqp, n);
}

void mk_cu_ext16_qk_bwd(mk_cu_ext *x, size_t l, float *dq, float *dk, size_t N)
{
    size_t slot = x->ckpt ? 0 : l;
    /* a gradient only in full finetuning, where off indexes the trained buffer (under LoRA, fz) */
    if (x->qn[l][0] >= 0) norm16_bwd(x, x->qpre + slot * x->N_cap * x->q, x->qn[l][0], dq, N * x->nh);
    if (x->qn[l][1] >= 0) norm16_bwd(x, x->kpre + slot * x->N_cap * x->kv, x->qn[l][1], dk, N * x->nkv);
}
