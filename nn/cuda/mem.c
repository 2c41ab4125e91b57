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

#include <string.h>

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
    if (c->arch.def && strcmp(c->arch.def->name, "gemma") == 0) floats += (2 * L + 1) * (uint64_t)c->hidden; /* (1 + w) */
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
