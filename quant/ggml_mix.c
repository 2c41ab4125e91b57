/* ggml_mix.c - see ggml_mix.h. Only the branches llama-quantize takes for the k-quant mixes on
 * llama-family models (dense or with experts; not Falcon, no overrides) are here. */
#include "ggml_mix.h"

#include "../model/gguf_names.h"

#include <stdio.h>
#include <string.h>

bool mk_ggml_mix_base(uint32_t ftype, uint32_t *base)
{
    switch (ftype) {
    case MK_FTYPE_Q2_K: *base = MK_GGML_Q2_K; return true;
    case MK_FTYPE_Q3_K_S: case MK_FTYPE_Q3_K_M: case MK_FTYPE_Q3_K_L: *base = MK_GGML_Q3_K; return true;
    case MK_FTYPE_Q4_K_S: case MK_FTYPE_Q4_K_M: *base = MK_GGML_Q4_K; return true;
    case MK_FTYPE_Q5_K_S: case MK_FTYPE_Q5_K_M: *base = MK_GGML_Q5_K; return true;
    case MK_FTYPE_Q6_K: *base = MK_GGML_Q6_K; return true;
    case MK_FTYPE_IQ4_NL: *base = MK_GGML_IQ4_NL; return true;
    default: return false;
    }
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between */
static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

typedef enum { T_OTHER, T_OUTPUT, T_EMBD, T_ATTN_V, T_ATTN_K, T_ATTN_OUT, T_FFN_DOWN } category;

static category category_of(const char *name)
{
    if (strcmp(name, "output.weight") == 0) return T_OUTPUT;
    if (strcmp(name, "token_embd.weight") == 0) return T_EMBD;
    if (strstr(name, "attn_v.weight")) return T_ATTN_V;
    if (strstr(name, "attn_k.weight")) return T_ATTN_K;
    if (strstr(name, "attn_q.weight")) return T_OTHER;
    if (strstr(name, "attn_output.weight")) return T_ATTN_OUT;
    if (strstr(name, "ffn_up") || strstr(name, "ffn_gate")) return T_OTHER;
    if (strstr(name, "ffn_down")) return T_FFN_DOWN;
    return T_OTHER;
}

/* attn_v of layer i of n */
static uint32_t attn_v(uint32_t ftype, uint32_t t, const mk_ggml_mix_model *m, int i)
{
    int n = m->layers;
    switch (ftype) {
    case MK_FTYPE_Q2_K: t = m->gqa >= 4 ? MK_GGML_Q4_K : MK_GGML_Q3_K; break;
    case MK_FTYPE_Q3_K_M: t = i < 2 ? MK_GGML_Q5_K : MK_GGML_Q4_K; break;
    case MK_FTYPE_Q3_K_L: t = MK_GGML_Q5_K; break;
    case MK_FTYPE_Q4_K_M: case MK_FTYPE_Q5_K_M: if (more_bits(i, n)) t = MK_GGML_Q6_K; break;
    case MK_FTYPE_Q4_K_S: if (i < 4) t = MK_GGML_Q5_K; break;
    case MK_FTYPE_IQ4_NL: if (m->gqa >= 4) t = MK_GGML_Q5_K; break;
    default: break;
    }
    /* 70B: its attn_v is 8 times smaller than attn_q, so a few more bits cost little */
    if (m->is_70b && (t == MK_GGML_Q3_K || t == MK_GGML_Q4_K)) t = MK_GGML_Q5_K;
    return m->n_expert == 8 ? MK_GGML_Q8_0 : t; /* Mixtral 8x: a few more bytes for attn_v */
}

/* ffn_down of layer i of n (a shared expert's ffn_down_shexp too: the layer read from its name) */
static uint32_t ffn_down(uint32_t ftype, uint32_t t, int i, int n, bool imatrix)
{
    switch (ftype) {
    case MK_FTYPE_Q2_K: return MK_GGML_Q3_K;
    case MK_FTYPE_Q3_K_M: return i < n / 16 ? MK_GGML_Q5_K : MK_GGML_Q4_K;
    case MK_FTYPE_Q3_K_L: return MK_GGML_Q5_K;
    case MK_FTYPE_Q4_K_M: case MK_FTYPE_Q5_K_M: return more_bits(i, n) ? MK_GGML_Q6_K : t;
    case MK_FTYPE_Q4_K_S: return i < n / 8 ? MK_GGML_Q5_K : t;
    case MK_FTYPE_IQ4_NL: return i < n / 8 && !imatrix ? MK_GGML_Q5_K : t;
    default: return t;
    }
}

static uint32_t attn_output(uint32_t ftype, uint32_t t, const mk_ggml_mix_model *m)
{
    if (m->n_expert == 8)
        switch (ftype) {
        case MK_FTYPE_Q2_K: case MK_FTYPE_Q3_K_S: case MK_FTYPE_Q3_K_M: case MK_FTYPE_IQ4_NL: case MK_FTYPE_Q4_K_S:
        case MK_FTYPE_Q4_K_M: return MK_GGML_Q5_K;
        default: return t;
        }
    switch (ftype) {
    case MK_FTYPE_Q2_K: return MK_GGML_Q3_K;
    case MK_FTYPE_Q3_K_M: return MK_GGML_Q4_K;
    case MK_FTYPE_Q3_K_L: return MK_GGML_Q5_K;
    default: return t;
    }
}

uint32_t mk_ggml_mix_fallback(uint32_t t, uint64_t cols)
{
    if (cols % mk_ggml_type_of(t)->block == 0) return t;
    switch (t) {
    case MK_GGML_Q2_K: case MK_GGML_Q3_K: t = MK_GGML_Q4_0; break;
    case MK_GGML_Q4_K: t = MK_GGML_Q5_0; break;
    case MK_GGML_Q5_K: t = MK_GGML_Q5_1; break;
    case MK_GGML_Q6_K: t = MK_GGML_Q8_0; break;
    default: break;
    }
    return cols % mk_ggml_type_of(t)->block == 0 ? t : MK_GGML_F16;
}

uint32_t mk_ggml_mix_type(uint32_t ftype, const mk_ggml_mix_model *m, const char *name, uint64_t cols)
{
    uint32_t base = MK_GGML_F16, t;
    if (!mk_ggml_mix_base(ftype, &base)) return MK_GGML_F16;
    int layer = -1;
    if (sscanf(name, "blk.%d.", &layer) != 1) layer = -1;
    category c = category_of(name);
    if (c == T_OUTPUT || (c == T_EMBD && m->tied)) /* the output matrix: Q8_0 when rows are not whole base blocks */
        t = cols % mk_ggml_type_of(base)->block ? MK_GGML_Q8_0 : MK_GGML_Q6_K;
    else if (c == T_ATTN_V) t = attn_v(ftype, base, m, layer);
    else if (c == T_ATTN_K) t = m->n_expert == 8 ? MK_GGML_Q8_0 : base;
    else if (c == T_FFN_DOWN) t = ffn_down(ftype, base, layer, m->layers, m->imatrix);
    else if (c == T_ATTN_OUT) t = attn_output(ftype, base, m);
    else t = base;
    return mk_ggml_mix_fallback(t, cols);
}

uint32_t mk_ggml_plain_type(uint32_t t, const mk_ggml_mix_model *m, const char *name)
{
    category c = category_of(name);
    if ((c == T_ATTN_V || c == T_ATTN_K) && m->n_expert == 8) return MK_GGML_Q8_0;
    int layer = -1, n = m->layers;
    if (c == T_FFN_DOWN && m->imatrix && (t == MK_GGML_Q4_0 || t == MK_GGML_Q5_0) && sscanf(name, "blk.%d.", &layer) == 1 && layer < n / 8)
        return t == MK_GGML_Q4_0 ? MK_GGML_Q4_1 : MK_GGML_Q5_1;
    return t;
}
