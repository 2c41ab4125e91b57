/* fisher.h - the diagonal of a causal language model's Fisher information, for predicting
 * how far quantizing its weights moves the output distribution (quantize --target-bpw
 * --sensitivity fisher): KL(p || p + dp) ~ 1/2 sum_i F_ii dw_i^2 per token.
 *
 * Over `windows` rows of T tokens of a text, each row run through nn/backward.h once with the
 * gradient of sum_j NLL_j (positions 0 .. T-2 predicting a label each):
 * - expected Fisher (sample): position j's label is drawn from the model's own distribution
 *   there (a forward pass first; the draw from Philox (seed, row, j), so the same at any
 *   thread count). The labels are independent given the text and each score has mean 0, so
 *   the cross terms of (sum_j g_j)^2 vanish in expectation: each row's squared gradient is an
 *   unbiased estimate of the sum over its positions of the per-token Fisher diagonal.
 * - empirical Fisher: the labels given (tgt; the text's next tokens when tgt is the text).
 * F[i] = sum over rows of g_i^2 / (rows * (T - 1)): the Fisher diagonal per token, in the
 * trainer's buffer layout (mk_nn_train_param: one f32 per trained parameter).
 * Memory: the trainer's weights and gradient (two f32 per parameter) and F (one), the
 * activations of one row and, when sampling, its logits [T, vocab].
 * Must not: print or open files.
 */
#ifndef MK_TRAIN_FISHER_H
#define MK_TRAIN_FISHER_H

#include "../nn/backward.h"

/* tok[windows * T]; tgt: NULL to draw the labels (expected Fisher), else [windows * T] (label
 * of position j at tgt[row * T + j + 1]). F[mk_nn_train_numel(t)] is overwritten. progress
 * (may be NULL): called after each row. */
mk_status mk_fisher_diag(mk_nn_train *t, const int32_t *tok, const int32_t *tgt, size_t windows, size_t T, uint64_t seed, float *F,
                         void (*progress)(void *ctx, size_t done, size_t windows), void *ctx);

/* The label drawn from logits[V] with uniform u in [0, 1): the first v whose cumulative
 * softmax probability (in double) exceeds u (the last one with a positive probability if
 * rounding leaves u above them all). */
int32_t mk_fisher_draw(const float *logits, size_t V, double u);

#endif
