/* backward.h - a causal language model held for training on the CPU: every weight resident
 * in one f32 buffer (in the source's tensor order), a gradient buffer of the same layout, and
 * one forward + backward pass over a micro-batch that accumulates the gradient of
 * sum_t weight_t * scale * NLL_t. The families: llama, mistral (sliding window), qwen2 (q/k/v
 * biases), qwen3 (q/k norms), gemma (GeGLU, (1 + w) norms, embeddings times sqrt(hidden));
 * anything else is refused naming the architecture and what is missing. Kernels: ops.h and ops_bwd.h. With LoRA (mk_nn_train_lora) only adapters on the
 * projections train, the base frozen.
 *
 * Activations: the pass keeps what the backward pass needs; with checkpointing it keeps only
 * each layer's input and runs the layer's forward again just before its backward, with the
 * same code on the same input, so the gradients are the same bytes. Deterministic at any
 * thread count (ops_bwd.h).
 * Must not: open files, print, or know the tokenizer or the optimizer (train/ does).
 */
#ifndef MK_NN_BACKWARD_H
#define MK_NN_BACKWARD_H

#include "../model/config.h"

typedef struct mk_nn_train mk_nn_train;

/* One trainable tensor: source tensor `src_index`, elements [off, off + numel) of the
 * buffers; `decay`: a matrix (weight decay applies), not a norm or a bias. */
typedef struct mk_nn_param {
    size_t src_index;
    uint64_t off, numel;
    bool decay;
    const char *name;  /* the tensor's name (a LoRA tensor: PEFT's name for it) */
} mk_nn_param;

/* Whether the model is one this backward pass trains (an error naming what is missing). */
mk_status mk_nn_train_check(const mk_source *src, const mk_model_config *cfg);
/* Bind src's tensors (borrowed with cfg for the model's life) and read them all as f32. */
mk_status mk_nn_train_open(mk_source *src, const mk_model_config *cfg, mk_nn_train **out);
void mk_nn_train_close(mk_nn_train *t);

/* A frozen base held elsewhere (QLoRA: NF4 codes in train/): the projection weights of the
 * layers (q, k, v, o, gate, up, down; not their biases) are not read into the f32 buffer;
 * before each layer's forward and backward `fill` writes source tensor i's numel values
 * into a scratch of one layer. Only LoRA adapters train then (mk_nn_train_lora first), and
 * the source view (mk_nn_train_source) lists the resident tensors only. */
typedef struct mk_nn_held {
    void *ctx;
    mk_status (*fill)(void *ctx, size_t src_index, float *dst, uint64_t numel);
    /* Optional (NULL: none): the NF4 form of source tensor i (numel values) itself, for a
     * trainer that decodes it elsewhere (the CUDA one): the packed codes (two a byte, the
     * even element in the high nibble), an f32 absmax per MK_NN_HELD_BLOCK elements and the
     * 16 code values; borrowed while ctx lives. */
    mk_status (*nf4)(void *ctx, size_t src_index, uint64_t numel, const uint8_t **codes, const float **absmax,
                     const float **table);
} mk_nn_held;
#define MK_NN_HELD_BLOCK 64 /* quant/nf4hold.h's MK_QLORA_BLOCK */
mk_status mk_nn_train_open_held(mk_source *src, const mk_model_config *cfg, const mk_nn_held *held, mk_nn_train **out);
/* Bytes of that scratch (one layer's projections in f32) for a model of config c. */
uint64_t mk_nn_train_held_scratch(const mk_model_config *c);

size_t mk_nn_train_n_params(const mk_nn_train *t);
const mk_nn_param *mk_nn_train_param(const mk_nn_train *t, size_t i);
uint64_t mk_nn_train_numel(const mk_nn_train *t);
float *mk_nn_train_weights(mk_nn_train *t);
float *mk_nn_train_grads(mk_nn_train *t);
size_t mk_nn_train_vocab(const mk_nn_train *t);
/* Where layer `layer`'s role r weight (bias: its bias) lives in the weight and gradient
 * buffers, as an element offset; -1 when the model has none (or it is held elsewhere). Layer
 * -1: MK_ROLE_TOK_EMBED, MK_ROLE_FINAL_NORM and MK_ROLE_LM_HEAD (the embedding when tied).
 * For a trainer that keeps these buffers elsewhere (the CUDA one, nn/cuda/). */
int64_t mk_nn_train_offset(const mk_nn_train *t, long layer, mk_role r, bool bias);
/* The source tensor index of layer `layer`'s role r weight (held or not); -1: none. */
long mk_nn_train_src_index(const mk_nn_train *t, long layer, mk_role r);
/* The frozen base held elsewhere (mk_nn_train_open_held), or NULL. */
const mk_nn_held *mk_nn_train_held(const mk_nn_train *t);
/* The config the trainer was opened with. */
const mk_model_config *mk_nn_train_config(const mk_nn_train *t);

/* Bytes one pass over nseq sequences of T tokens allocates (activations and scratch) for a
 * model of config c; lora_cols: LoRA rank x adapted projections per layer (0: none). */
uint64_t mk_nn_train_act_bytes(const mk_model_config *c, size_t nseq, size_t T, bool checkpointing, uint64_t lora_cols,
                               bool bf16);

/* Mixed precision, as torch.autocast("cpu", dtype=torch.bfloat16) around transformers' forward
 * (finetune --dtype bf16): every product (the projections, LoRA's A and B, attention's two
 * and the head) reads bf16-rounded inputs and weights and rounds its output; elementwise ops
 * on bf16 tensors (SiLU * up, RoPE's gradient, the LoRA sum) round after each op; the norms,
 * softmax, the residual stream and the loss stay f32, as do the master weights, gradients
 * and moments (ops_bwd.h lists each rounding). Costs a rounded copy of the weights in full
 * finetuning (mk_nn_train_numel floats); under LoRA the frozen base is rounded in place (a
 * tied head: a copy of the embedding) and the adapters copied. Call after mk_nn_train_lora. */
mk_status mk_nn_train_set_bf16(mk_nn_train *t);
bool mk_nn_train_bf16(const mk_nn_train *t);

/* LoRA: train only adapters on the projections named in `targets` (bits 1 << MK_ROLE_Q,
 * _K, _V, _O, _GATE, _UP, _DOWN) of every layer, the base frozen. A [r, in] starts uniform in
 * +-1/sqrt(in) (PEFT's kaiming-uniform bound) from (seed, tensor name), B [out, r] at 0; the
 * update is scale (x A^T) B^T, scale = alpha / r (alpha / sqrt(r) with rslora). After this the
 * trained tensors (mk_nn_train_param, _weights, _grads) are the adapters, named as PEFT
 * saves them (base_model.model.MODULE.lora_A.weight). */
typedef struct mk_nn_lora {
    long r;
    double alpha;
    bool rslora;
    unsigned targets;
    uint64_t seed;
} mk_nn_lora;
mk_status mk_nn_train_lora(mk_nn_train *t, const mk_nn_lora *o);
/* The frozen base weights under LoRA (NULL, *n = 0, in full finetuning). */
const float *mk_nn_train_frozen(const mk_nn_train *t, uint64_t *n);
/* The scale of the LoRA update (0 without LoRA). */
float mk_nn_train_lora_scale(const mk_nn_train *t);

/* Forward and backward over tok[nseq * T] (each row its own sequence, positions 0..T-1):
 * position j predicts token j + 1 of its row, weighted by w[row * T + j + 1] (w of a row's
 * first token is unused). Adds the gradient of scale * sum weight * NLL to the gradient
 * buffer and sum weight * NLL to *wnll. logits (may be NULL): the logits [nseq * T, vocab].
 * backward = false: the forward and the loss only. */
mk_status mk_nn_train_pass(mk_nn_train *t, const int32_t *tok, const float *w, size_t nseq, size_t T, float scale,
                           bool checkpointing, bool backward, double *wnll, float *logits);
/* The same with other targets than the next tokens: position j of a row predicts tgt[row * T
 * + j + 1] (tgt[nseq * T], each id in the vocabulary; a row's first entry is unused). For the
 * expected Fisher, whose labels are drawn from the model's own distribution. */
mk_status mk_nn_train_pass_targets(mk_nn_train *t, const int32_t *tok, const int32_t *tgt, const float *w, size_t nseq, size_t T,
                                   float scale, bool checkpointing, bool backward, double *wnll, float *logits);

/* A source over the current weights (f32, borrowed from the buffer, the trained tensors with
 * the names and shapes of the input; auxiliary files read from the input): for eval/ and
 * for writing the trained model. Valid while t is open; closed with mk_source_close. */
mk_status mk_nn_train_source(mk_nn_train *t, mk_source **out);
#endif
