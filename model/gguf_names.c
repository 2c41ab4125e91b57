/* gguf_names.c - see gguf_names.h */
#include "gguf_names.h"

#include <stdio.h>
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

bool mk_gguf_hf_name(const mk_gguf_arch *a, const char *g, char *out, size_t cap, char *role_qk)
{
    *role_qk = 0;
    if (!a) return false;
    const char *dot = strrchr(g, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0)) return false;
    size_t stem = (size_t)(dot - g);
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++)
        if (strlen(global_names[i].gguf) == stem && strncmp(g, global_names[i].gguf, stem) == 0)
            return (size_t)snprintf(out, cap, "%s%s", global_names[i].hf, dot) < cap;
    unsigned long layer = 0;
    int used = 0;
    if (sscanf(g, "blk.%lu.%n", &layer, &used) != 1 || used == 0 || g[4] < '0' || g[4] > '9') return false;
    if (g[4] == '0' && g[5] != '.') return false; /* no leading zeros: one name per tensor */
    const char *rest = g + used;
    size_t rl = (size_t)(dot - rest);
    if (dot < rest) return false;
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        if (strlen(layer_names[i].gguf) != rl || strncmp(rest, layer_names[i].gguf, rl) != 0) continue;
        if (layer_names[i].qk && strcmp(dot, ".weight") == 0 && a->permute_qk) *role_qk = layer_names[i].qk;
        return (size_t)snprintf(out, cap, "model.layers.%lu.%s%s", layer, layer_names[i].hf, dot) < cap;
    }
    return false;
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
    *role_qk = 0;
    if (!a) return false;
    const char *dot = strrchr(hf, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0)) return false;
    size_t stem = (size_t)(dot - hf);
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++)
        if (strlen(global_names[i].hf) == stem && strncmp(hf, global_names[i].hf, stem) == 0)
            return (size_t)snprintf(out, cap, "%s%s", global_names[i].gguf, dot) < cap;
    unsigned long layer = 0;
    int used = 0;
    static const char pre[] = "model.layers.";
    const char *num = hf + sizeof pre - 1;
    if (strncmp(hf, pre, sizeof pre - 1) != 0 || *num < '0' || *num > '9' || (*num == '0' && num[1] != '.')) return false;
    if (sscanf(hf, "model.layers.%lu.%n", &layer, &used) != 1 || used == 0) return false;
    const char *rest = hf + used;
    if (dot < rest) return false;
    size_t rl = (size_t)(dot - rest);
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        if (strlen(layer_names[i].hf) != rl || strncmp(rest, layer_names[i].hf, rl) != 0) continue;
        if ((layer_names[i].gguf[5] == 'q' || layer_names[i].gguf[5] == 'k') && layer_names[i].gguf[6] == '_' && !a->qk_norm) return false;
        if (layer_names[i].qk && strcmp(dot, ".weight") == 0 && a->permute_qk) *role_qk = layer_names[i].qk;
        return (size_t)snprintf(out, cap, "blk.%lu.%s%s", layer, layer_names[i].gguf, dot) < cap;
    }
    return false;
}

uint64_t mk_gguf_permute_src_row(uint64_t g, uint64_t rows, uint64_t heads)
{
    uint64_t hd = rows / heads, half = hd / 2;
    uint64_t h = g / hd, w = g % hd;
    return h * hd + (w % 2) * half + w / 2; /* GGUF pair w / 2, element w % 2 */
}
