/* train_lora.c - see train_ext.h: LoRA, QLoRA, biases and q/k norms for the CUDA trainer. */
#include "train_ext.h"

#include <stdlib.h>
#include <string.h>

#include "cu_train.h"
#include "ext_priv.h"
#include "mem.h"
#include "mk_cuda_lora.h"
#include "mk_cuda_lora16.h"

/* a projection's [out, in] (mem.c) */
static void dims(const mk_model_config *c, size_t k, uint64_t *in, uint64_t *out) { mk_cu_proj_dims(c, proj_roles[k], in, out); }

static bool is_held(mk_nn_train *t, long l, size_t k)
{
    return mk_nn_train_held(t) && mk_nn_train_offset(t, l, proj_roles[k], false) < 0 &&
           mk_nn_train_src_index(t, l, proj_roles[k]) >= 0;
}

/* The parameter index of the LoRA A of layer l's role k (B is the next one), or -1. */
static long adapter_of(mk_nn_train *t, long l, size_t k)
{
    if (mk_nn_train_lora_scale(t) == 0) return -1;
    long si = mk_nn_train_src_index(t, l, proj_roles[k]);
    size_t n = mk_nn_train_n_params(t);
    for (size_t i = 0; si >= 0 && i + 1 < n; i += 2)
        if (mk_nn_train_param(t, i)->src_index == (size_t)si) return (long)i;
    return -1;
}

static void plan_of(mk_nn_train *t, size_t nseq, size_t T, bool ckpt, plan *p)
{
    const mk_model_config *c = mk_nn_train_config(t);
    uint64_t N = (uint64_t)nseq * T, L = (uint64_t)c->layers, q = (uint64_t)c->heads * (uint64_t)c->head_dim;
    uint64_t kv = (uint64_t)c->kv_heads * (uint64_t)c->head_dim;
    memset(p, 0, sizeof *p);
    p->nslots = ckpt ? 1 : (size_t)L;
    if (mk_nn_train_lora_scale(t) != 0) mk_nn_train_frozen(t, &p->frozen);
    bool norms = false;
    for (size_t l = 0; l < L; l++) {
        for (size_t k = 0; k < NP; k++) {
            uint64_t in, out;
            dims(c, k, &in, &out);
            if (is_held(t, (long)l, k)) {
                p->codes += (in * out + 1) / 2, p->absmax += mk_cu_nf4_blocks(in * out), p->table = 16;
                if (l == 0) p->scratch += in * out;
            }
            long a = adapter_of(t, (long)l, k);
            if (a >= 0 && l == 0) p->nad++, p->r = (size_t)(mk_nn_train_param(t, (size_t)a)->numel / in);
        }
        norms = norms || mk_nn_train_offset(t, (long)l, MK_ROLE_Q_NORM, false) >= 0 ||
                mk_nn_train_offset(t, (long)l, MK_ROLE_K_NORM, false) >= 0;
    }
    if (p->nad) p->xa = p->nslots * p->nad * N * p->r, p->lxa = N * p->r;
    if (norms) p->qk = p->nslots * N * (q + kv), p->dqp = N * q, p->rstd = N * (uint64_t)c->heads;
    if (mk_nn_train_bf16(t)) mk_cu_ext16_plan(t, N, p);
}

static uint64_t plan_floats(const plan *p)
{
    return p->frozen + p->absmax + p->table + p->scratch + p->xa + p->lxa + p->qk + p->dqp + p->rstd;
}

uint64_t mk_cu_ext_bytes(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing)
{
    plan p;
    plan_of(t, nseq, T, checkpointing, &p);
    return 4 * plan_floats(&p) + p.codes + 2 * (p.fz16 + p.scr16 + p.xa16 + p.lxa16 + p.lc16);
}

uint64_t mk_cu_train_need(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing)
{
    return (mk_nn_train_bf16(t) ? mk_cu_train_bytes16 : mk_cu_train_bytes)(mk_nn_train_config(t), mk_nn_train_numel(t), nseq, T,
                                                                           checkpointing) +
           mk_cu_ext_bytes(t, nseq, T, checkpointing);
}

void mk_cu_ext_close(mk_cu_ext *x)
{
    if (!x) return;
    mk_cu_free(x->arena), mk_cu_free(x->codes), mk_cu_free(x->arena16);
    free(x->hl), free(x->ad), free(x->bias), free(x->qn), free(x->side_from), free(x->side_to);
    free(x);
}

/* The NF4 codes of every held projection to the device. */
static mk_status put_held(mk_cu_ext *x, float **fb)
{
    const mk_nn_held *h = mk_nn_train_held(x->t);
    if (!h->nf4) return mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer needs the held base's NF4 codes (mk_nn_held.nf4)");
    const mk_model_config *c = mk_nn_train_config(x->t);
    uint8_t *cb = x->codes;
    for (size_t l = 0; l < x->L; l++)
        for (size_t k = 0; k < NP; k++) {
            if (!is_held(x->t, (long)l, k)) continue;
            uint64_t in, out;
            dims(c, k, &in, &out);
            uint64_t n = in * out, nb = mk_cu_nf4_blocks(n);
            const uint8_t *codes;
            const float *absmax, *table;
            MK_TRY(h->nf4(h->ctx, (size_t)mk_nn_train_src_index(x->t, (long)l, proj_roles[k]), n, &codes, &absmax, &table));
            if (!x->table) {
                MK_TRY(mk_cu_put(*fb, table, 16 * sizeof(float)));
                x->table = *fb, *fb += 16;
            }
            MK_TRY(mk_cu_put(cb, codes, (n + 1) / 2));
            MK_TRY(mk_cu_put(*fb, absmax, nb * sizeof(float)));
            x->hl[l][k] = (held_t){cb, *fb, n};
            cb += (n + 1) / 2, *fb += nb;
        }
    return MK_OK;
}

static mk_status ext_init(mk_cu_ext *x)
{
    mk_nn_train *t = x->t;
    const mk_model_config *c = mk_nn_train_config(t);
    if (x->held && !x->lora)
        return mk_error(MK_ERR_USAGE, "a quantized base is frozen: only LoRA adapters train on it (--lora R)");
    float *fb = x->arena;
    if (x->p.frozen) {
        uint64_t n;
        const float *fz = mk_nn_train_frozen(t, &n);
        if (!x->bf16) MK_TRY(mk_cu_put(fb, fz, n * sizeof(float))); /* bf16: its f32-read tensors (train_lora16.c) */
        x->fz = fb, fb += x->p.frozen;
    }
    x->base = x->lora ? x->fz : x->w, x->gbase = x->lora ? NULL : x->gr;
    if (x->held) MK_TRY(put_held(x, &fb));
    uint64_t so = 0;
    for (size_t k = 0; k < NP; k++) {
        uint64_t in, out;
        dims(c, k, &in, &out);
        if (is_held(t, 0, k)) x->scr_off[k] = so, so += in * out;
    }
    x->scr = fb, fb += x->p.scratch;
    int ns = 0;
    for (size_t k = 0; k < NP; k++) x->xslot[k] = adapter_of(t, 0, k) >= 0 ? ns++ : -1;
    x->xa = fb, fb += x->p.xa;
    x->lxa = fb, fb += x->p.lxa;
    x->qpre = fb, fb += x->p.nslots * x->N_cap * x->q * (x->p.qk > 0);
    x->kpre = fb, fb += x->p.nslots * x->N_cap * x->kv * (x->p.qk > 0);
    x->dqp = fb, fb += x->p.dqp;
    x->rstd = fb, fb += x->p.rstd;
    for (size_t l = 0; l < x->L; l++) {
        for (size_t k = 0; k < NP; k++) {
            x->bias[l][k] = mk_nn_train_offset(t, (long)l, proj_roles[k], true);
            x->ad[l][k] = adapter_of(t, (long)l, k);
            if ((x->ad[l][k] >= 0) != (x->xslot[k] >= 0))
                return mk_error(MK_ERR_UNSUPPORTED,
                                "the CUDA trainer needs the same LoRA targets in every layer (layer %zu "
                                "differs from layer 0 in %s)",
                                l, mk_role_name(proj_roles[k]));
        }
        x->qn[l][0] = mk_nn_train_offset(t, (long)l, MK_ROLE_Q_NORM, false);
        x->qn[l][1] = mk_nn_train_offset(t, (long)l, MK_ROLE_K_NORM, false);
    }
    return MK_OK;
}

mk_status mk_cu_ext_open(mk_nn_train *t, size_t nseq, size_t T, bool checkpointing, float *w, float *gr, mk_cu_ext **out)
{
    *out = NULL;
    const mk_model_config *c = mk_nn_train_config(t);
    mk_cu_ext *x = mk_calloc(1, sizeof *x);
    if (!x) return MK_ERR_NOMEM;
    x->t = t, x->w = w, x->gr = gr, x->ckpt = checkpointing, x->cur = -1;
    x->L = (size_t)c->layers, x->H = (size_t)c->hidden, x->nh = (size_t)c->heads, x->nkv = (size_t)c->kv_heads;
    x->hd = (size_t)c->head_dim, x->q = x->nh * x->hd, x->kv = x->nkv * x->hd, x->F = (size_t)c->intermediate;
    x->eps = (float)c->norm_eps, x->ls = mk_nn_train_lora_scale(t), x->lora = x->ls != 0, x->held = mk_nn_train_held(t) != NULL;
    x->bf16 = mk_nn_train_bf16(t);
    x->N_cap = nseq * T;
    plan_of(t, nseq, T, checkpointing, &x->p);
    size_t L1 = x->L ? x->L : 1;
    x->hl = mk_calloc(L1, sizeof *x->hl), x->ad = mk_calloc(L1, sizeof *x->ad);
    x->bias = mk_calloc(L1, sizeof *x->bias), x->qn = mk_calloc(L1, sizeof *x->qn);
    mk_status s = x->hl && x->ad && x->bias && x->qn ? MK_OK : MK_ERR_NOMEM;
    uint64_t nf = plan_floats(&x->p);
    if (s == MK_OK && nf) s = mk_cu_alloc((void **)&x->arena, nf * sizeof(float));
    if (s == MK_OK && x->p.codes) s = mk_cu_alloc((void **)&x->codes, x->p.codes);
    if (s == MK_OK) s = ext_init(x);
    if (s == MK_OK && x->bf16) s = mk_cu_ext16_init(x);
    if (s != MK_OK) {
        mk_cu_ext_close(x);
        return s;
    }
    *out = x;
    return MK_OK;
}

const float *mk_cu_ext_base(const mk_cu_ext *x) { return x->base; }
bool mk_cu_ext_frozen(const mk_cu_ext *x) { return x->gbase == NULL; }

size_t mk_cu_ext_role_k(mk_role r)
{
    size_t k = 0;
    while (k < NP && proj_roles[k] != r) k++;
    return k;
}

const float *mk_cu_ext_weight(const mk_cu_ext *x, size_t l, mk_role r)
{
    (void)l;
    return x->scr + x->scr_off[mk_cu_ext_role_k(r)];
}

void mk_cu_ext_layer(mk_cu_ext *x, size_t l)
{
    if (!x->held || x->cur == (long)l) return;
    for (size_t k = 0; k < NP; k++) {
        const held_t *h = &x->hl[l][k];
        if (!h->codes) continue;
        if (x->bf16) mk_cu_nf4_decode16(h->codes, h->absmax, x->table, MK_NN_HELD_BLOCK, h->n, x->scr16 + x->scr_off[k]);
        else mk_cu_nf4_decode(h->codes, h->absmax, x->table, MK_NN_HELD_BLOCK, h->n, x->scr + x->scr_off[k]);
    }
    x->cur = (long)l;
}

/* x A^T of layer l's role k: its slot in the kept activations */
static float *xa_of(const mk_cu_ext *x, size_t l, size_t k)
{
    size_t slot = x->ckpt ? 0 : l;
    return x->xa + ((uint64_t)slot * x->p.nad + (uint64_t)x->xslot[k]) * x->N_cap * x->p.r;
}

void mk_cu_ext_proj(mk_cu_ext *x, size_t l, mk_role r, const float *in, size_t N, float *y)
{
    size_t k = mk_cu_ext_role_k(r);
    uint64_t ni, no;
    dims(mk_nn_train_config(x->t), k, &ni, &no);
    if (x->bias[l][k] >= 0) mk_cu_bias_add(y, x->base + x->bias[l][k], N, no);
    long ia = x->ad[l][k];
    if (ia < 0) return;
    const float *A = x->w + mk_nn_train_param(x->t, (size_t)ia)->off, *B = x->w + mk_nn_train_param(x->t, (size_t)ia + 1)->off;
    float *xa = xa_of(x, l, k);
    size_t rk = x->p.r;
    mk_cu_linear(in, N, ni, A, rk, 0.0f, xa);
    mk_cu_gemm(true, false, no, N, rk, x->ls, B, rk, xa, rk, 1.0f, y, no); /* y += s (x A^T) B^T */
}

void mk_cu_ext_proj_bwd(mk_cu_ext *x, size_t l, mk_role r, const float *in, size_t N, const float *dy, float *dx)
{
    size_t k = mk_cu_ext_role_k(r);
    uint64_t ni, no;
    dims(mk_nn_train_config(x->t), k, &ni, &no);
    if (x->bias[l][k] >= 0 && x->gbase) mk_cu_bias_bwd(dy, N, no, x->gbase + x->bias[l][k]);
    long ia = x->ad[l][k];
    if (ia < 0) return;
    uint64_t oa = mk_nn_train_param(x->t, (size_t)ia)->off, ob = mk_nn_train_param(x->t, (size_t)ia + 1)->off;
    size_t rk = x->p.r;
    const float *xa = xa_of(x, l, k);
    mk_cu_gemm(false, false, rk, N, no, x->ls, x->w + ob, rk, dy, no, 0.0f, x->lxa, rk); /* s dy B */
    mk_cu_gemm(false, true, rk, no, N, x->ls, xa, rk, dy, no, 1.0f, x->gr + ob, rk);     /* dB += s dy^T (x A^T) */
    mk_cu_linear_bwd(in, N, ni, x->w + oa, rk, x->lxa, dx, x->gr + oa);
}

/* y[rows, hd] -> kept copy in keep, y normalised per head with w */
static void norm_fwd(const mk_cu_ext *x, float *y, float *keep, const float *w, size_t rows)
{
    mk_cu_zero(keep, rows * x->hd * sizeof(float));
    mk_cu_add(keep, y, rows * x->hd);
    mk_cu_rmsnorm(y, keep, w, rows, x->hd, x->eps, NULL);
}

void mk_cu_ext_qk(mk_cu_ext *x, size_t l, float *q, float *k, size_t N)
{
    if (x->bf16) {
        mk_cu_ext16_qk(x, l, q, k, N);
        return;
    }
    size_t slot = x->ckpt ? 0 : l;
    if (x->qn[l][0] >= 0) norm_fwd(x, q, x->qpre + slot * x->N_cap * x->q, x->base + x->qn[l][0], N * x->nh);
    if (x->qn[l][1] >= 0) norm_fwd(x, k, x->kpre + slot * x->N_cap * x->kv, x->base + x->qn[l][1], N * x->nkv);
}

static void norm_bwd(const mk_cu_ext *x, const float *keep, int64_t off, float *d, size_t rows)
{
    size_t n = rows * x->hd;
    mk_cu_zero(x->dqp, n * sizeof(float));
    mk_cu_rmsnorm_bwd(keep, x->base + off, d, rows, x->hd, x->eps, x->dqp, x->gbase ? x->gbase + off : NULL, x->rstd);
    mk_cu_zero(d, n * sizeof(float));
    mk_cu_add(d, x->dqp, n);
}

void mk_cu_ext_qk_bwd(mk_cu_ext *x, size_t l, float *dq, float *dk, size_t N)
{
    if (x->bf16) {
        mk_cu_ext16_qk_bwd(x, l, dq, dk, N);
        return;
    }
    size_t slot = x->ckpt ? 0 : l;
    if (x->qn[l][0] >= 0) norm_bwd(x, x->qpre + slot * x->N_cap * x->q, x->qn[l][0], dq, N * x->nh);
    if (x->qn[l][1] >= 0) norm_bwd(x, x->kpre + slot * x->N_cap * x->kv, x->qn[l][1], dk, N * x->nkv);
}
