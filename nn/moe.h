/* moe.h - router vectors from prompts, as mergekit-moe's router.py computes them (mergekit
 * 0.1.5 get_gate_params), for `mergekit-c moe`. The forward pass of mixture-of-experts
 * models themselves is part of nn.h.
 * Must not: tokenize (the caller passes token ids) or decide the output layout.
 */
#ifndef MK_NN_MOE_H
#define MK_NN_MOE_H

#include "nn.h"

/* out[layers, hidden] for one set of prompts (ids[i][0..n_ids[i]), BOS included):
 *  - cheap_embed (hidden = false): the prompts' token embeddings summed in f32, token by
 *    token then prompt by prompt (torch's order for these sizes), scaled to unit L2 norm
 *    (clamped at 1e-8), the same row for every layer;
 *  - hidden: per layer l, the last token's residual stream entering layer l
 *    (hidden_states[l]), averaged over the prompts; not normalized.
 * A prompt longer than the model's max_position_embeddings is an error. */
mk_status mk_nn_moe_prompt_vectors(mk_nn_model *m, bool hidden, int32_t *const *ids, const size_t *n_ids, size_t n, float *out);

#endif
