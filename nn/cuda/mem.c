/* mem.c - see mem.h and cu_train.h (mk_cu_train_bytes, mk_cu_train_bytes16). */
#include "mem.h"

#include <stdlib.h>
#include <string.h>

#include "cu_train.h"
#include "mk_cuda.h"
#include "mk_cuda_flash.h"

bool mk_cu_attn_flash(const mk_model_config *c)
{
    const char *e = getenv("MK_CUDA_ATTENTION");
    return (!e || strcmp(e, "simple") != 0) && mk_cu_flash_fits((size_t)c->head_dim);
}
uint64_t mk_cu_att_floats(const mk_model_config *c, uint64_t nseq, uint64_t T)
{
    return nseq * (uint64_t)c->heads * T * (mk_cu_attn_flash(c) ? 2 : T);
}

/* floats of one layer's activations, and of the rest of a pass */
uint64_t mk_cu_acts_floats(const mk_model_config *c, uint64_t N, uint64_t nseq, uint64_t T)
{
    uint64_t H = (uint64_t)c->hidden, hd = (uint64_t)c->head_dim, q = (uint64_t)c->heads * hd, kv = (uint64_t)c->kv_heads * hd;
    uint64_t F = (uint64_t)c->intermediate;
    return N * (3 * H + 2 * q + 2 * kv + 3 * F) + mk_cu_att_floats(c, nseq, T);
}
uint64_t mk_cu_rest_floats(const mk_model_config *c, uint64_t N, uint64_t T)
{
    uint64_t H = (uint64_t)c->hidden, hd = (uint64_t)c->head_dim, q = (uint64_t)c->heads * hd, kv = (uint64_t)c->kv_heads * hd;
    uint64_t F = (uint64_t)c->intermediate, V = (uint64_t)c->vocab, L = (uint64_t)c->layers;
    /* xs (L + 1 rows of N x H), hf, dh, dx; logits; dq, datt, dk, dv; da, dg, du; ds (attention's
     * scratch, one sequence's mk_cu_att_floats: fused, D [nh, T] in it; simple, dS [nh, T, T]); rstd, wt; tok, tgt (as floats); nll (2
     * each); rope tables */
    return (L + 4) * N * H + N * V + 2 * N * q + 2 * N * kv + 3 * N * F + mk_cu_att_floats(c, 1, T) + 6 * N + T * hd;
}

uint64_t mk_cu_train_bytes(const mk_model_config *c, uint64_t numel, size_t nseq, size_t T, bool checkpointing)
{
    uint64_t N = (uint64_t)nseq * T, L = (uint64_t)c->layers;
    uint64_t floats = 4 * numel + mk_cu_acts_floats(c, N, nseq, T) * (checkpointing ? 1 : L) + mk_cu_rest_floats(c, N, T) +
                      2 * MK_CU_NORM_PARTS_MAX;
    return floats * sizeof(float);
}

/* ---- bf16 mixed precision: sizes ---- */

/* f32 floats of one layer's activations that bf16 keeps as bf16 instead: h1, h2, att, a */
uint64_t mk_cu_acts16_floats(const mk_model_config *c, uint64_t N)
{
    return N * (2 * (uint64_t)c->hidden + (uint64_t)c->heads * (uint64_t)c->head_dim + (uint64_t)c->intermediate);
}
static uint64_t max3(uint64_t a, uint64_t b, uint64_t c) { return a > b ? (a > c ? a : c) : b > c ? b : c; }
/* bf16 values of the bf16 arena besides the activations: hf16 [N, H]; dy16, an output gradient
 * as a product reads it [N, max(H, q, F, V)]; c16, a product's rounded output before it is added
 * (max(N x in, out x in) over the products) */
void mk_cu_scratch16(const mk_model_config *c, uint64_t N, uint64_t *dy, uint64_t *cs)
{
    uint64_t H = (uint64_t)c->hidden, q = (uint64_t)c->heads * (uint64_t)c->head_dim, F = (uint64_t)c->intermediate;
    uint64_t V = (uint64_t)c->vocab, in = max3(H, q, F);
    *dy = N * max3(in, F, V);
    *cs = max3(N * in, H * max3(V, F, q), 0);
}

uint64_t mk_cu_train_bytes16(const mk_model_config *c, uint64_t numel, size_t nseq, size_t T, bool checkpointing)
{
    uint64_t N = (uint64_t)nseq * T, nacts = checkpointing ? 1 : (uint64_t)c->layers, dy, cs;
    mk_cu_scratch16(c, N, &dy, &cs);
    uint64_t b16 = numel + mk_cu_acts16_floats(c, N) * nacts + N * (uint64_t)c->hidden + dy + cs; /* bf16 values */
    return mk_cu_train_bytes(c, numel, nseq, T, checkpointing) - 4 * mk_cu_acts16_floats(c, N) * nacts + 2 * b16;
}

/* ---- LoRA, QLoRA, qwen3's norms (train_lora.c, train_lora16.c): sizes ---- */

void mk_cu_proj_dims(const mk_model_config *c, mk_role r, uint64_t *in, uint64_t *out)
{
    uint64_t H = (uint64_t)c->hidden, q = (uint64_t)c->heads * (uint64_t)c->head_dim;
    uint64_t kv = (uint64_t)c->kv_heads * (uint64_t)c->head_dim, F = (uint64_t)c->intermediate;
    switch (r) {
    case MK_ROLE_Q: *in = H, *out = q; break;
    case MK_ROLE_K:
    case MK_ROLE_V: *in = H, *out = kv; break;
    case MK_ROLE_O: *in = q, *out = H; break;
    case MK_ROLE_DOWN: *in = F, *out = H; break;
    default: *in = H, *out = F; break;
    }
}

uint64_t mk_cu_nf4_blocks(uint64_t n) { return (n + MK_NN_HELD_BLOCK - 1) / MK_NN_HELD_BLOCK; }

uint64_t mk_cu_side_floats(const mk_model_config *c, bool qk_norm)
{
    uint64_t H = (uint64_t)c->hidden, L = (uint64_t)c->layers;
    return (uint64_t)c->vocab * H + H + L * (2 * H + (qk_norm ? 2 * (uint64_t)c->head_dim : 0));
}

uint64_t mk_cu_lora_c16(const mk_model_config *c, uint64_t N, uint64_t r)
{
    uint64_t H = (uint64_t)c->hidden, q = (uint64_t)c->heads * (uint64_t)c->head_dim, F = (uint64_t)c->intermediate;
    uint64_t wide = max3(H, q, F);
    return r * (N > wide ? N : wide);
}

static const mk_role proj_roles[] = {MK_ROLE_Q, MK_ROLE_K, MK_ROLE_V, MK_ROLE_O, MK_ROLE_GATE, MK_ROLE_UP, MK_ROLE_DOWN};

uint64_t mk_cu_train_bytes_of(const mk_model_config *c, const mk_cu_train_req *r)
{
    uint64_t N = (uint64_t)r->nseq * r->T, L = (uint64_t)c->layers, slots = r->checkpointing ? 1 : L;
    uint64_t q = (uint64_t)c->heads * (uint64_t)c->head_dim, kv = (uint64_t)c->kv_heads * (uint64_t)c->head_dim;
    uint64_t trained = r->params, floats = 0, codes = 0, b16 = 0, rr = r->lora_r > 0 ? (uint64_t)r->lora_r : 0;
    if (rr) {
        uint64_t adapters = 0, nad = 0, held = 0, absmax = 0;
        for (size_t k = 0; k < sizeof proj_roles / sizeof proj_roles[0]; k++) {
            uint64_t in, out;
            mk_cu_proj_dims(c, proj_roles[k], &in, &out);
            if (r->targets & (1u << proj_roles[k])) adapters += rr * (in + out), nad++;
            if (r->qlora) held += in * out, codes += L * ((in * out + 1) / 2), absmax += L * mk_cu_nf4_blocks(in * out);
        }
        trained = L * adapters;
        uint64_t frozen = r->params - L * held;
        if (r->qlora) floats += 16 + absmax; /* the NF4 scales and code table */
        if (r->bf16) { /* the base in bf16 (its f32-read tensors also f32), one layer decoded in bf16 */
            b16 += frozen + held, floats += mk_cu_side_floats(c, r->qk_norm);
            if (nad) b16 += slots * nad * N * rr + N * rr + mk_cu_lora_c16(c, N, rr), floats += N * rr;
        } else { /* the base in f32, one layer decoded in f32 */
            floats += frozen + held;
            if (nad) floats += slots * nad * N * rr + N * rr; /* x A^T kept, its gradient */
        }
    }
    if (r->qk_norm) floats += slots * N * (q + kv) + N * q + N * (uint64_t)c->heads;
    return (r->bf16 ? mk_cu_train_bytes16 : mk_cu_train_bytes)(c, trained, r->nseq, r->T, r->checkpointing) + 4 * floats + codes +
           2 * b16;
}
