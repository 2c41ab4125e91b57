/* ggml_mix.h - llama.cpp's k-quant file types ("mixes": Q4_K_M and the like, and IQ4_NL): which ggml type
 * each tensor of a llama-family GGUF gets, as llama-quantize chooses it
 * (llama_tensor_get_type in src/llama-quant.cpp of the llama.cpp that llama-cpp-python 0.3.36
 * builds; tools/check-gguf-quantize.py compares): the output matrix (the token embedding when
 * it is tied) in Q6_K, attn_v / ffn_down / attn_output promoted in some layers, and a
 * fallback type for a matrix whose rows are not whole 256-value super-blocks.
 * Must not: read tensors or files; it sees GGUF tensor names (model/gguf_names.h) only.
 */
#ifndef MK_QUANT_GGML_MIX_H
#define MK_QUANT_GGML_MIX_H

#include <stdbool.h>
#include <stdint.h>

/* llama.cpp's LLAMA_FTYPE_MOSTLY_* of the mixes (general.file_type) */
enum {
    MK_FTYPE_Q2_K = 10, MK_FTYPE_Q3_K_S = 11, MK_FTYPE_Q3_K_M = 12, MK_FTYPE_Q3_K_L = 13, MK_FTYPE_Q4_K_S = 14,
    MK_FTYPE_Q4_K_M = 15, MK_FTYPE_Q5_K_S = 16, MK_FTYPE_Q5_K_M = 17, MK_FTYPE_Q6_K = 18, MK_FTYPE_IQ4_NL = 25,
};

typedef struct mk_ggml_mix_model {
    int layers;   /* block_count: the number of attn_v and of ffn_down tensors */
    int gqa;      /* attention heads / key-value heads (0 when unknown) */
    bool tied;    /* no output.weight: token_embd.weight is the output matrix too */
    bool is_70b;  /* llama.cpp's LLM_TYPE_70B (llama with 80 layers and grouped KV; qwen2 with 80) */
    int n_expert;   /* experts a layer (0 or 1: dense); 8 moves attn_v / attn_k to Q8_0, attn_output to Q5_K */
    bool imatrix;   /* quantized with an importance matrix (llama-quantize --imatrix) */
} mk_ggml_mix_model;

/* True when ftype is one of the mixes above; *base = its default tensor type. */
bool mk_ggml_mix_base(uint32_t ftype, uint32_t *base);

/* The type of the matrix `name` (a GGUF tensor name: "blk.N.attn_v.weight", "output.weight",
 * ...) with rows of `cols` values under mix ftype. Only for matrices llama-quantize
 * quantizes (2-D "*.weight", not norms). */
uint32_t mk_ggml_mix_type(uint32_t ftype, const mk_ggml_mix_model *m, const char *name, uint64_t cols);

/* What llama-quantize makes of the matrix `name` under a plain file type whose type is t (q4_0,
 * q4_1, q5_0, q5_1, q8_0): with 8 experts attn_v and attn_k in Q8_0; with an imatrix the
 * ffn_down of the first eighth of the layers in Q4_1 (for Q4_0) or Q5_1 (for Q5_0). */
uint32_t mk_ggml_plain_type(uint32_t t, const mk_ggml_mix_model *m, const char *name);

/* t for rows of `cols` values, or llama-quantize's fallback when they are not whole blocks
 * of t: Q2_K, Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; F16 when not even
 * those fit. */
uint32_t mk_ggml_mix_fallback(uint32_t t, uint64_t cols);

#endif
