/* gguf_names.h - what llama.cpp's GGUF files mean, as far as the rest of mergekit-c cares:
 * the ggml tensor types (id, name, values per block, bytes per block) and, per architecture
 * model/ knows, the llama.cpp tensor names against the Hugging Face ones, whether the
 * converter permuted the rows of Q and K, and the Hugging Face model_type/class to
 * describe the model with. The GGUF reader (formats/gguf.c) and the block decoder
 * (quant/ggml.c) read the same table.
 * Sources: ggml/include/ggml.h (enum ggml_type), ggml/src/ggml-common.h (block structs),
 * gguf-py/gguf/constants.py (GGML_QUANT_SIZES, MODEL_TENSORS), convert_hf_to_gguf.py
 * (LlamaModel.permute).
 * Must not: read files or decode blocks.
 */
#ifndef MK_GGUF_NAMES_H
#define MK_GGUF_NAMES_H

#include "../core/mk_core.h"

/* enum ggml_type values (the ones missing were removed from ggml and are not valid). */
enum {
    MK_GGML_F32 = 0, MK_GGML_F16 = 1, MK_GGML_Q4_0 = 2, MK_GGML_Q4_1 = 3, MK_GGML_Q5_0 = 6, MK_GGML_Q5_1 = 7,
    MK_GGML_Q8_0 = 8, MK_GGML_Q8_1 = 9, MK_GGML_Q2_K = 10, MK_GGML_Q3_K = 11, MK_GGML_Q4_K = 12, MK_GGML_Q5_K = 13,
    MK_GGML_Q6_K = 14, MK_GGML_Q8_K = 15, MK_GGML_IQ2_XXS = 16, MK_GGML_IQ2_XS = 17, MK_GGML_IQ3_XXS = 18,
    MK_GGML_IQ1_S = 19, MK_GGML_IQ4_NL = 20, MK_GGML_IQ3_S = 21, MK_GGML_IQ2_S = 22, MK_GGML_IQ4_XS = 23,
    MK_GGML_I8 = 24, MK_GGML_I16 = 25, MK_GGML_I32 = 26, MK_GGML_I64 = 27, MK_GGML_F64 = 28, MK_GGML_IQ1_M = 29,
    MK_GGML_BF16 = 30, MK_GGML_TQ1_0 = 34, MK_GGML_TQ2_0 = 35, MK_GGML_MXFP4 = 39,
    MK_GGML_TYPE_LIMIT = 64 /* ids at or above are not types */
};

typedef struct mk_ggml_type {
    const char *name;   /* "Q4_K", as gguf-py and llama.cpp print it */
    unsigned block;     /* values per block (1 for plain numbers) */
    unsigned bytes;     /* bytes per block */
    int mk_dtype;       /* the mk_dtype it is stored as when plain (F32, F16, ...), else -1 */
    bool decodable;     /* quant/ggml.c decodes it */
} mk_ggml_type;

/* The type with this id, or NULL for an id ggml does not define. */
const mk_ggml_type *mk_ggml_type_of(uint32_t id);
/* The id of type name (case-insensitive), or -1. */
int mk_ggml_type_id(const char *name);

/* ---- architectures ---- */
typedef struct mk_gguf_arch {
    const char *name;        /* general.architecture: "llama" */
    const char *model_type;  /* config.json model_type */
    const char *hf_class;    /* config.json architectures[0] */
    bool permute_qk;         /* the converter permuted Q/K rows for its rotary layout */
    bool qk_norm;            /* per-head q/k norms (Qwen3) */
} mk_gguf_arch;

/* The architecture named `name`, or NULL when model/ does not know it. */
const mk_gguf_arch *mk_gguf_arch_find(const char *name);

/* The Hugging Face name of llama.cpp tensor `gguf` into out[cap]; false when the table has
 * no such name (the tensor then keeps its GGUF name). *role_qk = 'q' / 'k' for the weights
 * whose rows the converter permutes, else 0. */
bool mk_gguf_hf_name(const mk_gguf_arch *a, const char *gguf, char *out, size_t cap, char *role_qk);

/* The stored row that holds row `r` of a Hugging Face Q or K weight with `heads` heads of
 * `rows / heads` rows each (convert_hf_to_gguf.py LlamaModel.permute: within each head,
 * the two halves of the rotary pairs are interleaved). */
uint64_t mk_gguf_unpermute_row(uint64_t r, uint64_t rows, uint64_t heads);

/* ---- the reverse direction (writing GGUF) ---- */
/* The GGUF architecture convert_hf_to_gguf.py writes for config.json model_type (Llama and
 * Mistral both become "llama"), or NULL. */
const mk_gguf_arch *mk_gguf_arch_for_model_type(const char *model_type);
/* The llama.cpp name of Hugging Face tensor `hf` into out[cap]; false when it has none.
 * *role_qk as for mk_gguf_hf_name. */
bool mk_gguf_name(const mk_gguf_arch *a, const char *hf, char *out, size_t cap, char *role_qk);
/* The Hugging Face row stored at row `g` of a permuted Q or K weight (the inverse of
 * mk_gguf_unpermute_row). */
uint64_t mk_gguf_permute_src_row(uint64_t g, uint64_t rows, uint64_t heads);

#endif
