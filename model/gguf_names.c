/* gguf_names.c - see gguf_names.h */
#include "gguf_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PLAIN(n, b, dt) {n, 1, b, dt, true}
#define BLOCK(n, k, b) {n, k, b, -1, true}
#define OTHER(n, k, b) {n, k, b, -1, false}

/* Block sizes and bytes: ggml-common.h (static_assert'ed block structs there); QK_K = 256.
 * mk_dtype values: F32 1, F16 2, BF16 3, F64 0, I64 6, I32 7, I16 8, I8 9 (core/mk_dtype.h). */
static const mk_ggml_type types[MK_GGML_TYPE_LIMIT] = {
    [MK_GGML_F32] = PLAIN("F32", 4, 1),
    [MK_GGML_F16] = PLAIN("F16", 2, 2),
    [MK_GGML_Q4_0] = BLOCK("Q4_0", 32, 18),       /* f16 d, 16 bytes of nibbles */
    [MK_GGML_Q4_1] = BLOCK("Q4_1", 32, 20),       /* f16 d, f16 m, 16 bytes */
    [MK_GGML_Q5_0] = BLOCK("Q5_0", 32, 22),       /* f16 d, u32 high bits, 16 bytes */
    [MK_GGML_Q5_1] = BLOCK("Q5_1", 32, 24),       /* f16 d, f16 m, u32 high bits, 16 bytes */
    [MK_GGML_Q8_0] = BLOCK("Q8_0", 32, 34),       /* f16 d, 32 int8 */
    [MK_GGML_Q8_1] = OTHER("Q8_1", 32, 36),
    [MK_GGML_Q2_K] = BLOCK("Q2_K", 256, 84),      /* 16 scales, 64 qs, f16 d, f16 dmin */
    [MK_GGML_Q3_K] = BLOCK("Q3_K", 256, 110),     /* 32 hmask, 64 qs, 12 scales, f16 d */
    [MK_GGML_Q4_K] = BLOCK("Q4_K", 256, 144),     /* f16 d, f16 dmin, 12 scales, 128 qs */
    [MK_GGML_Q5_K] = BLOCK("Q5_K", 256, 176),     /* f16 d, f16 dmin, 12 scales, 32 qh, 128 qs */
    [MK_GGML_Q6_K] = BLOCK("Q6_K", 256, 210),     /* 128 ql, 64 qh, 16 int8 scales, f16 d */
    [MK_GGML_Q8_K] = OTHER("Q8_K", 256, 292),
    [MK_GGML_IQ2_XXS] = OTHER("IQ2_XXS", 256, 66),
    [MK_GGML_IQ2_XS] = OTHER("IQ2_XS", 256, 74),
    [MK_GGML_IQ3_XXS] = OTHER("IQ3_XXS", 256, 98),
    [MK_GGML_IQ1_S] = OTHER("IQ1_S", 256, 50),
    [MK_GGML_IQ4_NL] = BLOCK("IQ4_NL", 32, 18),   /* f16 d, 16 bytes of codebook indices */
    [MK_GGML_IQ3_S] = OTHER("IQ3_S", 256, 110),
    [MK_GGML_IQ2_S] = OTHER("IQ2_S", 256, 82),
    [MK_GGML_IQ4_XS] = BLOCK("IQ4_XS", 256, 136), /* f16 d, u16 scales_h, 4 scales_l, 128 qs */
    [MK_GGML_I8] = PLAIN("I8", 1, 9),
    [MK_GGML_I16] = PLAIN("I16", 2, 8),
    [MK_GGML_I32] = PLAIN("I32", 4, 7),
    [MK_GGML_I64] = PLAIN("I64", 8, 6),
    [MK_GGML_F64] = PLAIN("F64", 8, 0),
    [MK_GGML_IQ1_M] = OTHER("IQ1_M", 256, 56),
    [MK_GGML_BF16] = PLAIN("BF16", 2, 3),
    [MK_GGML_TQ1_0] = BLOCK("TQ1_0", 256, 54),    /* 48 qs (5 trits a byte), 4 qh, f16 d */
    [MK_GGML_TQ2_0] = BLOCK("TQ2_0", 256, 66),    /* 64 qs (4 trits a byte), f16 d */
    [MK_GGML_MXFP4] = BLOCK("MXFP4", 32, 17),     /* e8m0 exponent, 16 bytes of e2m1 */
};

const mk_ggml_type *mk_ggml_type_of(uint32_t id)
{
    return id < MK_GGML_TYPE_LIMIT && types[id].name ? &types[id] : NULL;
}

int mk_ggml_type_id(const char *name)
{
    for (int i = 0; i < MK_GGML_TYPE_LIMIT; i++)
        if (types[i].name && strcasecmp(types[i].name, name) == 0) return i;
    return -1;
}

/* convert_hf_to_gguf.py: Llama and Mistral checkpoints both become "llama" and are
 * permuted; Qwen2 and Qwen3 use the rotary halves layout as stored and are not. */
static const mk_gguf_arch archs[] = {
    {"llama", "llama", "LlamaForCausalLM", true, false},
    {"mistral", "mistral", "MistralForCausalLM", true, false},
    {"qwen2", "qwen2", "Qwen2ForCausalLM", false, false},
    {"qwen3", "qwen3", "Qwen3ForCausalLM", false, true},
};

const mk_gguf_arch *mk_gguf_arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i].name, name) == 0) return &archs[i];
    return NULL;
}

/* gguf-py constants.py TENSOR_NAMES / tensor_mapping.py, for the Llama-family layouts. */
static const struct {
    const char *gguf, *hf;
} global_names[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};
static const struct {
    const char *gguf, *hf;
    char qk;
} layer_names[] = {
    {"attn_norm", "input_layernorm", 0},
    {"attn_q", "self_attn.q_proj", 'q'},
    {"attn_k", "self_attn.k_proj", 'k'},
    {"attn_v", "self_attn.v_proj", 0},
    {"attn_output", "self_attn.o_proj", 0},
    {"attn_q_norm", "self_attn.q_norm", 0},
    {"attn_k_norm", "self_attn.k_norm", 0},
    {"ffn_norm", "post_attention_layernorm", 0},
    {"ffn_gate", "mlp.gate_proj", 0},
    {"ffn_up", "mlp.up_proj", 0},
    {"ffn_down", "mlp.down_proj", 0},
};

/* One name in either direction (to_gguf: Hugging Face to llama.cpp): the global names, then
 * "PREFIX<layer>.<layer name>" with the layer number without leading zeros (one name per
 * tensor). Writing refuses q/k norms for an architecture without them. */
static bool map_name(const mk_gguf_arch *a, const char *in, char *out, size_t cap, char *role_qk, bool to_gguf)
{
    *role_qk = 0;
    if (!a) return false;
    const char *dot = strrchr(in, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0)) return false;
    size_t stem = (size_t)(dot - in);
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++) {
        const char *from = to_gguf ? global_names[i].hf : global_names[i].gguf, *to = to_gguf ? global_names[i].gguf : global_names[i].hf;
        if (strlen(from) == stem && strncmp(in, from, stem) == 0) return (size_t)snprintf(out, cap, "%s%s", to, dot) < cap;
    }
    const char *pre = to_gguf ? "model.layers." : "blk.", *opre = to_gguf ? "blk." : "model.layers.";
    size_t pl = strlen(pre);
    const char *num = in + pl;
    if (strncmp(in, pre, pl) != 0 || *num < '0' || *num > '9' || (*num == '0' && num[1] != '.')) return false;
    char *after;
    unsigned long layer = strtoul(num, &after, 10);
    if (*after != '.' || after >= dot) return false;
    const char *rest = after + 1;
    size_t rl = (size_t)(dot - rest);
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        const char *from = to_gguf ? layer_names[i].hf : layer_names[i].gguf, *to = to_gguf ? layer_names[i].gguf : layer_names[i].hf;
        if (strlen(from) != rl || strncmp(rest, from, rl) != 0) continue;
        if (to_gguf && !a->qk_norm && strstr(layer_names[i].gguf, "_norm") && layer_names[i].gguf[6] == '_') return false;
        if (layer_names[i].qk && strcmp(dot, ".weight") == 0 && a->permute_qk) *role_qk = layer_names[i].qk;
        return (size_t)snprintf(out, cap, "%s%lu.%s%s", opre, layer, to, dot) < cap;
    }
    return false;
}

bool mk_gguf_hf_name(const mk_gguf_arch *a, const char *g, char *out, size_t cap, char *role_qk)
{
    return map_name(a, g, out, cap, role_qk, false);
}

uint64_t mk_gguf_unpermute_row(uint64_t r, uint64_t rows, uint64_t heads)
{
    uint64_t hd = rows / heads, half = hd / 2;
    uint64_t h = r / hd, w = r % hd;
    uint64_t i = w / half, j = w % half; /* HF: half i, pair j */
    return h * hd + 2 * j + i;           /* GGUF: pair j, element i */
}

const mk_gguf_arch *mk_gguf_arch_for_model_type(const char *model_type)
{
    if (!model_type) return NULL;
    if (strcmp(model_type, "mistral") == 0) return mk_gguf_arch_find("llama");
    return mk_gguf_arch_find(model_type);
}

bool mk_gguf_name(const mk_gguf_arch *a, const char *hf, char *out, size_t cap, char *role_qk)
{
    return map_name(a, hf, out, cap, role_qk, true);
}

uint64_t mk_gguf_permute_src_row(uint64_t g, uint64_t rows, uint64_t heads)
{
    uint64_t hd = rows / heads, half = hd / 2;
    uint64_t h = g / hd, w = g % hd;
    return h * hd + (w % 2) * half + w / 2; /* GGUF pair w / 2, element w % 2 */
}
