/* search_proxy.h - the data-free importances of `quantize --method search` (search.h): what
 * an input channel's mean square would be if each layer's normalised hidden state were white
 * (every component of mean square 1), told by the model's own weights. Without them the
 * search weighs every value alike.
 *   Q, K, V (after input_layernorm), gate and up (after post_attention_layernorm): the
 *     norm's weight squared, g_j^2.
 *   o_proj: column j reads V's output row r(j) (its KV head, grouped-query attention's
 *     sharing undone with head_dim): sum_k (V[r, k] g_k)^2, attention's averaging aside.
 *   down_proj: column j reads silu(gate_j) up_j: sum_k (gate[j, k] g_k)^2 times
 *     sum_k (up[j, k] g_k)^2 (silu(a) about a / 2 to a for a Gaussian a, a constant factor).
 * Names are the Hugging Face Llama family's (model.layers.N.self_attn.q_proj.weight, ...);
 * other weights keep no importances.
 * Must not: quantize, or write files.
 */
#ifndef MK_SEARCH_PROXY_H
#define MK_SEARCH_PROXY_H

#include "quant.h"

typedef struct mk_search_imps {
    float **buf; /* the arrays the plan's weights point at */
    size_t n;
} mk_search_imps;

/* Set p->t[i].imp for each quantized weight of p that has none yet and whose input the
 * rules above cover (reading the norms, and V, gate and up, from src); head_dim of the
 * attention (0: unknown, then o_proj only without grouped-query sharing). */
mk_status mk_search_proxy(mk_source *src, mk_qplan *p, long head_dim, mk_search_imps *m);
void mk_search_imps_free(mk_search_imps *m);
/* out[r] = sum_k (rows[r, k] g_k)^2, summed in double in k order, for the nr rows
 * ([nr, cols]); ref: one row at a time (the reference), else several side by side (the
 * same bits). */
void mk_search_row_energies(const float *rows, size_t nr, const float *g, uint64_t cols, float *out, bool ref);

#endif
