/* ops_bwd.h - the backward halves of the forward kernels of ops.h, for training on the CPU in
 * f32, each beside the forward it differentiates and with a plain reference (double sums,
 * one element at a time) the tests hold it to: linear (dx, dW, db), RMSNorm (also the
 * per-head q/k norms), rotary embeddings, causal attention with grouped key/value heads (a
 * training forward that keeps the probabilities), SwiGLU, the embedding lookup and softmax
 * cross-entropy with a weight per token.
 *
 * Deterministic: work is split into blocks whose size does not depend on the thread count,
 * and every reduction (over tokens for weight gradients, over the heads of a key/value group)
 * runs in one fixed order, so the bytes are the same at any -j.
 * Conventions: "+=" outputs accumulate (weight gradients over micro-batches, the residual
 * stream); "=" outputs are overwritten. Layouts as in ops.h ([T, d] rows, weights [out, in]).
 * Must not: read weights or know a model family (nn/backward.c does).
 */
#ifndef MK_NN_OPS_BWD_H
#define MK_NN_OPS_BWD_H

#include "ops.h"

/* For y = x W^T + b: dx[T, in] += dy W, dw[out, in] += dy^T x, db[out] += sum_t dy (any may be
 * NULL to skip it). */
void mk_nn_linear_bwd(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx, float *dw,
                      float *db);
void mk_nn_linear_bwd_ref(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx,
                          float *dw, float *db);

/* For y = w * x / sqrt(mean(x^2) + eps) per row of x [T, d]: dx += ..., dw[d] += ...;
 * (dw may be NULL: a frozen norm); rstd: scratch of T floats. */
void mk_nn_rmsnorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                       float *rstd);
void mk_nn_rmsnorm_bwd_ref(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                           float *dw);

/* The rotation of mk_nn_rope_apply undone on gradients, in place (its transpose). */
void mk_nn_rope_bwd(float *dx, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r);

/* Causal attention over one sequence as mk_nn_attention (no soft-capping), keeping the
 * probabilities p [nh, T, T] (zero above the diagonal and outside the window). */
void mk_nn_attention_train(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                           float scale, long window, float *out, float *p);
/* Its backward: dq = ..., dk and dv += ... (each key/value head summed over its query heads
 * in order); scratch: mk_nn_attention_bwd_scratch(T) floats. */
void mk_nn_attention_bwd(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T, size_t nh,
                         size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *scratch);
size_t mk_nn_attention_bwd_scratch(size_t T);
/* The same with plain loops from q, k, v (recomputing the probabilities; scratch 2T floats). */
void mk_nn_attention_bwd_ref(const float *q, const float *k, const float *v, const float *dout, size_t T, size_t nh,
                             size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                             float *scratch);

/* For out = silu(gate) * up: dgate = dout * up * silu'(gate), dup = dout * silu(gate). */
void mk_nn_swiglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

/* For x[t] = emb[tok[t]]: demb[tok[t], :] += dx[t] (tokens in order). */
void mk_nn_embed_bwd(const int32_t *tok, size_t T, size_t H, const float *dx, float *demb);

/* Softmax cross-entropy of rows of logits [n, V] against target ids: nll[i] = logsumexp -
 * logit[target] (in double); the gradient of sum_i weight[i] * scale * nll[i] written over the
 * logits (in place; a row of weight 0 gets zeros). */
void mk_nn_xent(float *logits, size_t n, size_t V, const int32_t *target, const float *weight, float scale, double *nll);

/* ---- mixed precision (finetune --dtype bf16), as torch.autocast("cpu", dtype=torch.bfloat16)
 * computes a transformers decoder layer: every product's inputs and output rounded to bf16 (ties
 * to even) with f32 sums, elementwise ops on bf16 tensors rounded after each op, norms, softmax
 * and the loss in f32. The values are held in f32 buffers; "bf16" below means rounded. */

/* v rounded to bf16 in place (n values). */
void mk_nn_round_bf16(float *v, size_t n);

/* For y = x W^T + b with x, W, dy bf16: the products as autocast's backward rounds them:
 * dW[out, in] += bf16(dy^T x), db += bf16(sum_t dy), and dx[T, in] gets bf16(dy W): added in
 * f32 (x_bf16 false: x is an f32 tensor cast for the product, each use's gradient summed in
 * f32) or summed in bf16 (x_bf16: dx = bf16(dx + bf16(dy W)), a bf16 tensor's gradients).
 * scratch: mk_nn_linear_bwd_bf16_scratch(T, in) floats. */
void mk_nn_linear_bwd_bf16(const float *x, size_t T, size_t in, const float *w, size_t out, const float *dy, float *dx,
                           bool x_bf16, float *dw, float *db, float *scratch);
size_t mk_nn_linear_bwd_bf16_scratch(size_t T, size_t in);

/* RMSNorm of a bf16 tensor (qwen3's q/k norms): w * bf16(x / sqrt(mean(x^2) + eps)), in f32;
 * its backward: dx = bf16(...) (written), dw += sum dy * bf16(normalised x); rstd: T floats,
 * dn: T * d floats of scratch. */
void mk_nn_rmsnorm_bf16(float *out, const float *x, const float *w, size_t T, size_t d, float eps);
void mk_nn_rmsnorm_bwd_bf16(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx,
                            float *dw, float *rstd, float *dn);

/* RoPE's backward onto a bf16 tensor: each of q * cos and rotate_half(q) * sin gives its
 * gradient rounded, and their sum is rounded (in place). */
void mk_nn_rope_bwd_bf16(float *dx, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r);

/* eager attention with bf16 products: S = bf16(q k^T), bf16(S * scale), P = softmax in f32
 * (kept in p), out = bf16(bf16(P) v); q, k, v bf16. scratch: mk_nn_attention_bf16_scratch(T,
 * hd) floats (also for the backward). */
void mk_nn_attention_train_bf16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                float scale, long window, float *out, float *p, float *scratch);
/* Its backward: dq = bf16(dS k) (written), dk += sum over the group of bf16(dS^T q) (f32: k
 * was an f32 tensor repeated, then cast), dv = bf16(sum over the group of bf16(bf16(P)^T
 * dout)) (written: v is bf16), with dS = bf16(bf16(P (dP - sum P dP)) * scale), dP =
 * bf16(dout v^T). */
void mk_nn_attention_bwd_bf16(const float *q, const float *k, const float *v, const float *p, const float *dout, size_t T,
                              size_t nh, size_t nkv, size_t hd, float scale, float *dq, float *dk, float *dv, float *scratch);
size_t mk_nn_attention_bf16_scratch(size_t T, size_t hd);

/* out = bf16(bf16(silu(gate)) * up), and its backward: dup = bf16(dout * bf16(silu(gate))),
 * dgate = bf16(silu'(gate) * bf16(dout * up)). */
void mk_nn_swiglu_bf16(const float *gate, const float *up, float *out, size_t n);
void mk_nn_swiglu_bwd_bf16(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

/* ---- LayerNorm and GeGLU (torch.nn.LayerNorm and gelu(approximate="tanh") * up, as autograd
 * computes their gradients; the references of the CUDA kernels, nn/cuda/mk_cuda_norm.h) ---- */

/* The backward of mk_nn_layernorm: with xhat = (x - mean) * rstd and g = dy * w,
 * dx += rstd (g - mean(g) - xhat mean(g xhat)), dw += sum_t dy xhat, db += sum_t dy (dw, db
 * may be NULL); mean and the variance as mk_nn_layernorm (two passes in double); stats:
 * scratch of 2T floats (each row's mean and rstd). */
void mk_nn_layernorm_bwd(const float *x, const float *w, const float *dy, size_t T, size_t d, float eps, float *dx, float *dw,
                         float *db, float *stats);
/* out = gelu_tanh(gate) * up is mk_nn_act_gated(MK_ACT_GELU_TANH, ...); its backward:
 * dup = dout gelu_tanh(gate), dgate = dout up gelu_tanh'(gate). */
void mk_nn_geglu_bwd(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);
/* In bf16 (gemma under autocast), as the SwiGLU pair: out = bf16(bf16(gelu_tanh(gate)) * up);
 * dup = bf16(dout * bf16(gelu_tanh(gate))), dgate = bf16(gelu_tanh'(gate) * bf16(dout * up)). */
void mk_nn_geglu_bf16(const float *gate, const float *up, float *out, size_t n);
void mk_nn_geglu_bwd_bf16(const float *gate, const float *up, const float *dout, size_t n, float *dgate, float *dup);

#endif
