/* nn.h - run a causal language model on the CPU, in f32: bind a model's tensors by their
 * roles (model/arch.h) and check their shapes against its config, then the forward pass of
 * the families model/ knows that synth makes: llama, mistral, qwen2, qwen3 (q/k norms),
 * gemma (GeGLU, scaled embeddings, 1 + w norms), gemma2 (soft-capping, sandwich norms,
 * sliding window), phi3 (fused qkv and gate_up) and gpt2 (LayerNorm, learned positions,
 * Conv1D layout), and the mixture-of-experts layers of mixtral, qwen2_moe and qwen3_moe
 * (nn/moe.c: top-k routing, per-expert tensors).
 *
 * Weights are read through the tensor source, so every input format runs directly: bf16,
 * f16 or f32 safetensors, .mkz containers, and the quantized layouts quant/qsource.h
 * presents dequantized. Memory: one layer's weights in f32 at a time plus the activations
 * of the sequences being run; the embedding table is read by the rows the tokens need and
 * lm_head in row blocks, so a model is never resident.
 * Must not: open files, print, or know the tokenizer.
 */
#ifndef MK_NN_H
#define MK_NN_H

#include "../model/config.h"

typedef struct mk_nn_model mk_nn_model;

/* Bind src's tensors (borrowed, as is cfg, for the model's life). An architecture it cannot
 * run, a missing tensor or a shape that disagrees with the config is an error naming it. */
mk_status mk_nn_open(mk_source *src, const mk_model_config *cfg, mk_nn_model **out);
void mk_nn_close(mk_nn_model *m);

size_t mk_nn_hidden(const mk_nn_model *m);
size_t mk_nn_vocab(const mk_nn_model *m);
/* Bytes mk_nn_forward and mk_nn_logits allocate for nseq sequences of T tokens, scoring n_logit rows. */
uint64_t mk_nn_memory(const mk_nn_model *m, size_t nseq, size_t T, size_t n_logit);

/* Run nseq independent sequences of T tokens (tok[nseq * T], positions 0..T-1 in each) and
 * leave the final-norm hidden states in hidden[nseq * T, hidden]. */
mk_status mk_nn_forward(mk_nn_model *m, const int32_t *tok, size_t nseq, size_t T, float *hidden);
/* The same, calling fn(ctx, l, x, nseq, T, hidden) with the residual stream x[nseq * T,
 * hidden] entering each layer l, before it runs (transformers' hidden_states[l]). */
typedef void (*mk_nn_layer_fn)(void *ctx, size_t l, const float *x, size_t nseq, size_t T, size_t hidden);
mk_status mk_nn_forward_hook(mk_nn_model *m, const int32_t *tok, size_t nseq, size_t T, float *hidden, mk_nn_layer_fn fn,
                             void *ctx);
/* Call fn(ctx, l, tensor, expert, x, N, in) with the input x[N, in] of every linear layer of
 * the transformer layers (tensor: the weight's index in the source; fused projections once)
 * as the forward passes run them; NULL fn: none. Mixture-of-experts layers: the router and
 * shared expert on every token; each expert's gate / up / down (expert: its number, else
 * -1) on the rows of the tokens routed to it, once per forward pass, none when no token
 * chose it. For statistics such as an importance matrix. */
typedef void (*mk_nn_linear_fn)(void *ctx, size_t l, long tensor, long expert, const float *x, size_t N, size_t in);
void mk_nn_set_linear_hook(mk_nn_model *m, mk_nn_linear_fn fn, void *ctx);
/* logits[n, vocab] for hidden rows [n, hidden] (lm_head, or the tied embeddings; final
 * soft-capping where the family has it). */
mk_status mk_nn_logits(mk_nn_model *m, const float *hidden, size_t n, float *logits);

#endif
