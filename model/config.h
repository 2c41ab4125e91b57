/* config.h - the numbers of a model's config.json that running, estimating and
 * generating models need, read with the keys and defaults of each family's transformers
 * config class (LlamaConfig's hidden_size / num_attention_heads / rms_norm_eps, GPT2Config's
 * n_embd / n_head / layer_norm_epsilon, ...).
 *
 * Owns: parsing those fields strictly (types checked, sizes bounded, heads dividing the
 * hidden size unless head_dim says otherwise, key/value heads dividing the heads) and the
 * RoPE scaling variants (linear, dynamic, yarn, llama3, longrope).
 * Must not: read files (it is given the text) or decide what to do with a model.
 */
#ifndef MK_MODEL_CONFIG_H
#define MK_MODEL_CONFIG_H

#include "arch.h"

typedef enum mk_act {
    MK_ACT_SILU = 0,   /* silu / swish */
    MK_ACT_GELU,       /* exact (erf) */
    MK_ACT_GELU_TANH,  /* tanh approximation: gelu_new, gelu_pytorch_tanh, gelu_fast */
    MK_ACT_RELU,
    MK_ACT_COUNT
} mk_act;

typedef enum mk_rope_type {
    MK_ROPE_DEFAULT = 0,
    MK_ROPE_LINEAR,    /* positions / factor */
    MK_ROPE_DYNAMIC,   /* NTK: theta grows with the sequence past the original length */
    MK_ROPE_YARN,
    MK_ROPE_LLAMA3,
    MK_ROPE_LONGROPE,  /* per-frequency factors (Phi-3 "su" / longrope) */
    MK_ROPE_COUNT
} mk_rope_type;

#define MK_ROPE_MAX_FACTORS 1024 /* longrope factor lists: head_dim / 2 entries */

typedef struct mk_rope {
    mk_rope_type type;
    double theta;              /* rope_theta, default 10000 */
    double factor;             /* scaling factor (1 = none) */
    bool factor_set;           /* config.json gives it (yarn and longrope derive it otherwise) */
    long original_max_pos;     /* original_max_position_embeddings (top level wins, as for Phi-3);
                                  0 = max_position_embeddings */
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow, attention_factor; /* yarn (attention_factor 0 = derived) */
    double mscale, mscale_all_dim;                 /* yarn variants (0 = absent) */
    size_t n_long, n_short;    /* longrope */
    double *long_factor, *short_factor;
    double partial_rotary;     /* share of head_dim rotated (1 = all) */
} mk_rope;

typedef struct mk_model_config {
    mk_arch arch;              /* identification (arch.def NULL for unknown families) */
    long vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, max_pos;
    double norm_eps;
    mk_act act;
    char act_name[32];         /* as written (or the family default), cut to 31 bytes */
    mk_rope rope;
    bool tied;                 /* lm_head tied to the token embedding */
    bool qkv_bias;             /* q/k/v projections have biases */
    bool o_bias, mlp_bias;     /* attention output / MLP biases (attention_bias, mlp_bias keys) */
    long sliding_window;       /* 0 = none */
    long sliding_pattern;      /* layers l with l % pattern == 0 slide (Gemma2: 2); 1 = all */
    uint8_t *layer_sliding;    /* [layers] from config.json's layer_types (1 = sliding_attention),
                                  which wins over the pattern; NULL when absent */
    double attn_softcap;       /* 0 = none (Gemma2 attn_logit_softcapping) */
    double final_softcap;      /* 0 = none (final_logit_softcapping) */
    double query_scale;        /* attention scores x this; default 1 / sqrt(head_dim) (Gemma2:
                                  query_pre_attn_scalar^-0.5) */
    long n_experts, experts_per_tok; /* MoE; 0 when dense */
    long moe_intermediate, shared_intermediate;
    bool norm_topk;            /* top-k routing weights renormalized to sum 1 (Mixtral always;
                                  Qwen2/3-MoE norm_topk_prob, default false) */
    long bos_id, eos_id;       /* -1 when absent */
} mk_model_config;

/* Whether layer l attends through the sliding window. */
bool mk_model_config_sliding(const mk_model_config *c, long l);

/* Parse config.json text. `what` names it in messages. Missing required fields (hidden
 * size, layers, heads, vocabulary) are errors naming the key. */
mk_status mk_model_config_parse(const char *text, size_t len, const char *what, mk_model_config *c);
/* The same from a model's config.json through its source; a model without one is an error. */
mk_status mk_model_config_of_source(mk_source *src, mk_model_config *c);
void mk_model_config_free(mk_model_config *c);
const char *mk_act_name(mk_act a);
const char *mk_rope_type_name(mk_rope_type t);

#endif
