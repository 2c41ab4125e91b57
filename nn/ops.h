/* ops.h - the kernels of a transformer forward pass on the CPU, in f32: matrix products
 * (BLAS, and a plain reference the tests hold it to), RMSNorm (also Gemma's 1 + w form),
 * LayerNorm, rotary position embeddings with Hugging Face's pairing (element i with
 * i + rot/2, "rotate_half") and its scaling variants, causal attention with grouped
 * key/value heads, soft-capping and a sliding window, and the activations.
 *
 * Layouts: activations are row-major [T, d] (one row per position); weights [out, in] as
 * nn.Linear stores them, or [in, out] for Conv1D (GPT-2). Kernels never allocate unless they
 * say so; callers size the buffers.
 * Must not: read weights or know a model family (nn/model.c and nn/forward.c do).
 */
#ifndef MK_NN_OPS_H
#define MK_NN_OPS_H

#include "../model/config.h"

/* BLAS runs single-threaded under the kernels' own OpenMP split; call once before using them. */
void mk_nn_blas_init(void);

/* y[T, out] = x[T, in] W^T (+ bias[out]); W is [out, in], or [in, out] when w_in_out. */
void mk_nn_linear(const float *x, size_t T, size_t in, const float *w, size_t out, bool w_in_out, const float *bias,
                  float *y);
/* y[t * ldy + o] = x[T, in] . W[o] for W [out, in] (a block of columns of a wider y). */
void mk_nn_linear_into(const float *x, size_t T, size_t in, const float *w, size_t out, float *y, size_t ldy);
/* The same with plain loops and double sums: the reference for tests. */
void mk_nn_linear_ref(const float *x, size_t T, size_t in, const float *w, size_t out, bool w_in_out, const float *bias,
                      float *y);

/* Each row of x [T, d]: x / sqrt(mean(x^2) + eps) * w (one_plus: * (1 + w)); in place allowed. */
void mk_nn_rmsnorm(float *out, const float *x, const float *w, size_t T, size_t d, float eps, bool one_plus);
/* (x - mean) / sqrt(var + eps) * w + b per row (b may be NULL). */
void mk_nn_layernorm(float *out, const float *x, const float *w, const float *b, size_t T, size_t d, float eps);

/* Rotary tables for positions [0, T): cos and sin [T, rot/2], already multiplied by the
 * variant's attention factor (yarn, longrope). rot = the rotated dimensions of a head. */
typedef struct mk_nn_rope_tab {
    size_t T, half;
    float *cos, *sin; /* [T, half] */
} mk_nn_rope_tab;
mk_status mk_nn_rope_init(mk_nn_rope_tab *r, const mk_rope *rope, size_t head_dim, long max_pos, size_t T);
void mk_nn_rope_free(mk_nn_rope_tab *r);
/* Rotate the first 2*half dims of each of n_heads heads of x [T, n_heads * head_dim]. */
void mk_nn_rope_apply(float *x, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r);
/* The same rotation, or with `inverse` its transpose (by -angle: RoPE's backward pass). */
void mk_nn_rope_rotate(float *x, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r, bool inverse);

/* Causal attention over one sequence: q [T, nh * hd], k and v [T, nkv * hd], out [T, nh *
 * hd]. Scores are q.k x scale, then softcap x tanh(s / softcap) when softcap > 0; a key j is
 * seen by query i when j <= i and (window == 0 or i - j < window). Head h reads key/value
 * head h / (nh / nkv). Heads and blocks of query rows through BLAS, in parallel: scratch holds
 * mk_nn_attention_scratch(T) floats. */
void mk_nn_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                     float scale, float softcap, long window, float *out, float *scratch);
size_t mk_nn_attention_scratch(size_t T);
/* Scores of query rows [i0, i1) against keys [0, i1) are in s (row stride ld): scale,
 * soft-cap, mask (causal and window), softmax in place; entries outside become 0. */
void mk_nn_softmax_rows(float *s, size_t ld, size_t i0, size_t i1, float scale, float softcap, long window);
/* The same, one query and key at a time with double sums (the reference); scratch: T floats. */
void mk_nn_attention_ref(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                         float scale, float softcap, long window, float *out, float *scratch);

/* x = act(x) in place. */
void mk_nn_act(mk_act a, float *x, size_t n);
/* out = act(gate) * up (gated MLPs: SwiGLU, GeGLU). */
void mk_nn_act_gated(mk_act a, const float *gate, const float *up, float *out, size_t n);

/* y += x */
void mk_nn_add(float *y, const float *x, size_t n);

#endif
