/* estimate.h - memory math for serving and finetuning a model (reference/eval-and-finetune.md
 * section 6, and the rules of thumb of Chip Huyen, "AI Engineering", ch. 7, that the
 * `estimate` command follows; GB = 1e9 bytes):
 *
 *   weights         = N x bytes per value
 *   serving         = weights x 1.2 (rule of thumb), plus the KV cache when a batch and
 *                     sequence length are given: 2 x layers x kv_heads x head_dim x batch x
 *                     seq x bytes per value
 *   training        = weights + activations + gradients + optimizer states, where
 *                     gradients + states = trainable x bytes per value x (1 + k), with
 *                     k = 0 (SGD), 1 (momentum), 2 (Adam)
 *   activations     = batch x seq x layers x bytes per value x (6 hidden + 2 kv_dim +
 *                     3 intermediate) (a Llama block with flash attention and no
 *                     recomputation; eval-and-finetune.md 6, derived) + logits batch x seq x
 *                     vocab x 4 bytes
 *   LoRA trainables = sum over targeted matrices [out, in] of r x (in + out)
 *   QLoRA weights   = linear-layer weights in NF4 with double quantisation, 4 + 8/64 +
 *                     32/(64 x 256) = 4.127 bits each (Dettmers et al. 2023, section 3),
 *                     the rest (embeddings, norms, lm_head) at the chosen dtype
 *   a model stored quantized, weights not priced at a dtype: the bytes as stored serve,
 *                     and are the frozen base of LoRA and QLoRA; a full finetune trains
 *                     every parameter, so its weights are N x bytes per value
 *
 * Owns: the shape of a model read from config.json (Llama- and GPT-2-style keys), the
 * parameter count by formula or from tensor headers, LoRA trainable counts, and the
 * formulas above. Must not: open files or print.
 */
#ifndef MK_ESTIMATE_H
#define MK_ESTIMATE_H

#include "arch.h"

typedef struct mk_est_shape {
    long layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, positions;
    bool gated;    /* gate/up/down MLP (Llama family); else up/down (GPT-2) */
    bool tied;     /* lm_head shares the embedding matrix */
    bool biases;   /* GPT-2-style biases on every linear layer and LayerNorm */
    bool qkv_bias; /* Qwen2-style q/k/v biases */
    bool matrix;   /* one [intermediate, hidden] matrix (mk_est_shape_matrix) */
} mk_est_shape;

/* Read the shape from config.json text. `what` names it in messages. */
mk_status mk_est_shape_from_config(const char *text, size_t len, const char *what, mk_est_shape *s);
/* A model made of one [out, in] matrix (for per-matrix arithmetic: --matrix). */
void mk_est_shape_matrix(mk_est_shape *s, long out, long in);
/* Parameters by formula: total, and those in linear layers inside the blocks. */
void mk_est_params_shape(const mk_est_shape *s, uint64_t *total, uint64_t *linear);
/* Parameters from tensor headers: total, and those of 2-D tensors other than
 * embeddings and lm_head (what QLoRA quantises). */
void mk_est_params_tensors(const mk_arch *a, const mk_tensor_info *t, size_t n, uint64_t *total, uint64_t *linear);

/* LoRA trainable parameters at rank r on `targets` (comma list: q,k,v,o,gate,up,down,
 * their HF names q_proj..down_proj, or all-linear). From the shape, or from tensors (then
 * an alias takes the weights of that role, experts' included, and any other name matches
 * a module's last component, as PEFT's target_modules; *matched counts matrices). */
mk_status mk_est_lora_shape(const mk_est_shape *s, const char *targets, long r, uint64_t *out);
mk_status mk_est_lora_tensors(const mk_arch *a, const mk_tensor_info *t, size_t n, const char *targets, long r,
                              uint64_t *out, uint64_t *matched);

typedef enum mk_est_optim { MK_OPTIM_SGD = 0, MK_OPTIM_MOMENTUM, MK_OPTIM_ADAM, MK_OPTIM_COUNT } mk_est_optim;
extern const char *const mk_est_optim_names[MK_OPTIM_COUNT];
/* Optimizer states per trainable value: 0, 1, 2. */
unsigned mk_est_optim_states(mk_est_optim o);

#define MK_EST_NF4_BITS (4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0))

double mk_est_weights(uint64_t n, double bytes_per_value);
double mk_est_serve(double weight_bytes); /* x 1.2, computed as x 6 / 5 so 26e9 -> 31.2e9 exactly */
double mk_est_grad_optim(uint64_t trainable, double bytes_per_value, mk_est_optim o);
double mk_est_kv_cache(const mk_est_shape *s, uint64_t batch, uint64_t seq, double bytes_per_value);
double mk_est_activations(const mk_est_shape *s, uint64_t batch, uint64_t seq, double bytes_per_value);
double mk_est_qlora_weights(uint64_t linear, uint64_t other, double bytes_per_value);
/* Serving n finetunes of a model of `base` parameters: n full copies, or one base plus n
 * adapters of `adapter` parameters. */
void mk_est_fleet(uint64_t base, uint64_t adapter, uint64_t n, uint64_t *full, uint64_t *shared);

/* Every figure `estimate` reports, from the model's counts and the request. */
typedef enum mk_est_train { MK_TRAIN_NONE = 0, MK_TRAIN_FULL, MK_TRAIN_LORA, MK_TRAIN_QLORA, MK_TRAIN_COUNT } mk_est_train;
extern const char *const mk_est_train_names[MK_TRAIN_COUNT];

typedef struct mk_est_request {
    double bpv;              /* bytes per value */
    double stored;           /* > 0: the weights' bytes as stored (a quantized model), which
                                replace N x bpv for serving and as the LoRA / QLoRA base */
    mk_est_train train;
    mk_est_optim optim;
    uint64_t batch, seq;     /* 0 = no KV cache or activations */
    uint64_t adapters;       /* 0 = no fleet comparison */
} mk_est_request;

typedef struct mk_est_figures {
    double weights, serve, kv, act;       /* serving: weights, x 1.2, KV cache */
    uint64_t trainable;
    double train_weights, grads, states, grad_optim, train_total;
    uint64_t fleet_full, fleet_shared;    /* parameters of n full copies / base + n adapters */
    double fleet_full_bytes, fleet_shared_bytes; /* ... and their weights' bytes */
} mk_est_figures;

/* shape may be NULL (only --params known: no KV cache or activations). lora = LoRA
 * trainable parameters (for lora, qlora and the fleet). */
void mk_est_compute(const mk_est_shape *shape, uint64_t params, uint64_t linear, uint64_t lora, const mk_est_request *r,
                    mk_est_figures *f);

/* Three significant digits: "26.0 GB", "6.55 MB", "140 GB" (decimal units). */
const char *mk_est_fmt_bytes(double bytes, char buf[32]);
/* "18,874,368" and "3.28M" / "1.68B" (K = 1e3, M = 1e6, B = 1e9, T = 1e12). */
const char *mk_est_fmt_int(uint64_t v, char buf[32]);
const char *mk_est_fmt_count(uint64_t v, char buf[32]);

#endif
