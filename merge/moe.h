/* moe.h - mixture-of-experts upcycling as mergekit-moe does it (mergekit 0.1.5,
 * mergekit/moe/): a dense base model's attention, norms and embeddings, each expert model's
 * MLP as one expert of every layer, and a router per layer from gate vectors.
 *
 * Owns: the mergekit-moe YAML schema (parsed in recipe.c, the one file that includes yaml.h;
 * every structural error is "FILE:LINE:COL: ..."); choosing the output architecture
 * (Mixtral, Qwen2-MoE with one shared expert, Qwen3-MoE) as mergekit-moe's
 * select_output_arch does; the output tensor list (names in the layout transformers loads,
 * shapes checked against the base model before anything is written) and the config.json
 * keys; the random gate modes (torch's default generator, reproduced); and streaming the
 * tensors, one at a time in row chunks, into a consumer.
 * Must not: open files, run models (the prompt-based gates come from nn/moe.h, wired by the
 * CLI) or know output formats.
 */
#ifndef MK_MOE_H
#define MK_MOE_H

#include "../model/config.h"
#include "recipe.h"

typedef enum mk_moe_gate {
    MK_MOE_GATE_HIDDEN = 0,     /* hidden states of the prompts' last tokens, per layer */
    MK_MOE_GATE_CHEAP_EMBED,    /* the prompts' token embeddings, summed, same for each layer */
    MK_MOE_GATE_RANDOM,         /* torch.randn */
    MK_MOE_GATE_UNIFORM_RANDOM, /* torch.nn.Linear's default init, U(-1/sqrt(hidden), 1/sqrt(hidden)) */
    MK_MOE_GATE_COUNT
} mk_moe_gate;

const char *mk_moe_gate_name(mk_moe_gate g);

typedef struct mk_moe_expert {
    mk_model_ref ref;
    char **pos, **neg;          /* positive / negative prompts */
    size_t n_pos, n_neg;
    bool has_noise, has_residual;
    double noise_scale, residual_scale;
    mk_pos at;
} mk_moe_expert;

typedef enum mk_moe_arch { MK_MOE_MIXTRAL = 0, MK_MOE_QWEN2, MK_MOE_QWEN3, MK_MOE_ARCH_COUNT } mk_moe_arch;

typedef struct mk_moe_config {
    char *path, *text;          /* the config file and its text (copied into OUT) */
    size_t text_len;
    mk_model_ref base;
    mk_moe_gate gate;
    mk_pos gate_pos;
    mk_dtype dtype;             /* MK_DTYPE_NONE: the base model's torch_dtype */
    long experts_per_token;
    mk_pos ept_pos;
    mk_moe_expert *experts, *shared;
    size_t n_experts, n_shared;
    char *architecture;         /* as written, NULL when absent */
    mk_pos arch_pos;
} mk_moe_config;

/* Parse / read and parse a mergekit-moe config (the model references resolve like a
 * recipe's: local paths, or Hugging Face ids in the local cache). */
mk_status mk_moe_config_parse(const char *text, size_t len, const char *path, mk_moe_config *c);
mk_status mk_moe_config_load(const char *path, mk_moe_config *c);
void mk_moe_config_free(mk_moe_config *c);

/* The models a config names, each once (base first, then experts, then shared experts):
 * the mk_moe_plan's `srcs` follow this order. Borrowed from c. */
size_t mk_moe_models(const mk_moe_config *c, const mk_model_ref **out, size_t max);

/* Where an output tensor's values come from. */
typedef enum mk_moe_from {
    MK_MOE_COPY = 0,  /* a tensor of the base model, converted to the output dtype */
    MK_MOE_EXPERT,    /* experts' MLP tensors (+ noise, * residual_scale on down_proj), one
                         after another: transformers 5's fused [experts, 2F, hidden]
                         gate_up_proj (each expert's gate rows, then its up rows) and
                         [experts, hidden, F] down_proj, or one per-expert tensor */
    MK_MOE_ROUTER,    /* rows of the gate matrix of one layer */
    MK_MOE_ZEROS,     /* Qwen2-MoE's q/k/v biases for inputs without them */
} mk_moe_from;

typedef struct mk_moe_part {
    size_t model, tensor;        /* index into srcs and that source's tensors */
    const mk_moe_expert *expert; /* EXPERT: noise / residual_scale settings */
} mk_moe_part;

typedef struct mk_moe_out {
    mk_moe_from from;
    size_t n_parts;              /* COPY: 1; EXPERT: 1 or 2 x experts (gate, up) or experts */
    mk_moe_part *parts;          /* equal sizes, concatenated */
    bool residual;               /* EXPERT: down projections */
    long layer;                  /* ROUTER: the layer */
    bool shared;                 /* ROUTER: the shared expert's sigmoid gate */
} mk_moe_out;

#define MK_MOE_MAX_CFG_KEYS 24

typedef struct mk_moe_plan {
    const mk_moe_config *cfg;
    mk_moe_arch arch;
    mk_source **srcs;           /* per mk_moe_models entry (borrowed) */
    size_t n_srcs;
    const mk_model_config *base_cfg; /* borrowed */
    mk_dtype out_dtype;         /* MK_F32 when neither the config nor the base gives one */
    size_t n;                   /* output tensors */
    mk_tensor_info *outs;       /* names, shapes, out_dtype */
    mk_moe_out *how;
    size_t n_gate_experts;      /* experts with gate vectors: the experts, then the shared
                                   expert when it has prompts */
    float *gates;               /* [layers, n_gate_experts, hidden], filled by the caller for
                                   the prompt modes, by mk_moe_random_gates otherwise */
    uint64_t seed;              /* the random gates (torch.manual_seed) and noise_scale noise */
    /* config.json: the base model's, with these top-level keys set (key, JSON value text
     * pairs, NULL-terminated; for mk_hfconfig_edit.set) */
    char *cfg_set[2 * MK_MOE_MAX_CFG_KEYS + 1];
} mk_moe_plan;

/* Choose the architecture and list the output tensors. srcs[] / cfgs[] follow
 * mk_moe_models. Errors (exit 2 class): no architecture fits, an unknown `architecture`,
 * experts whose MLP shapes differ from the base model's, a missing tensor. */
mk_status mk_moe_plan_build(mk_moe_plan *p, const mk_moe_config *c, mk_source **srcs, const mk_model_config *const *cfgs,
                            size_t n_srcs);
void mk_moe_plan_free(mk_moe_plan *p);
const char *mk_moe_arch_name(mk_moe_arch a);

/* gates for gate_mode random / uniform_random, shaped [layers, n_gate_experts, hidden]: the
 * values torch.randn / torch.rand give after torch.manual_seed(p->seed) (mergekit-moe itself
 * draws from torch's default generator, which torch 2.15 seeds at random in each process).
 * uniform_random is exact; random differs from torch only by the last-ulp rounding of
 * log / sin / cos (torch's AVX2 path uses SLEEF's vector versions). */
mk_status mk_moe_random_gates(mk_moe_plan *p);

/* The gate vectors' post-processing shared by the prompt modes: row r of v[n, d] minus row r
 * of neg (NULL = none), then normalized to unit L2 norm (norm clamped at 1e-8). */
void mk_moe_gate_finish(float *v, const float *neg, size_t n, size_t d);


/* Stream every output tensor into c (mk_consumer_plain over the output sink), one tensor at
 * a time in row chunks. progress may be NULL. */
mk_status mk_moe_run(const mk_moe_plan *p, mk_consumer *c,
                     void (*progress)(void *ctx, size_t done, size_t total, uint64_t bd, uint64_t bt, const char *name),
                     void *pctx);

#endif
