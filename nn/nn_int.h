/* nn_int.h - what nn/model.c (binding, loading) and nn/forward.c share. Private to nn/. */
#ifndef MK_NN_INT_H
#define MK_NN_INT_H

#include "nn.h"
#include "ops.h"

/* A layer's weights in f32, loaded for one forward pass: w[role][0] the weight,
 * w[role][1] the bias, NULL when the model has none. */
typedef struct nn_layer {
    float *w[MK_ROLE_COUNT][2];
} nn_layer;

struct mk_nn_model {
    mk_source *src;
    const mk_model_config *cfg;
    const mk_arch_def *def;
    size_t H, nh, nkv, hd, F, V, L;
    bool conv1d;              /* weights stored [in, out] */
    long (*idx)[MK_ROLE_COUNT][2]; /* [L]: tensor index per role and weight/bias, -1 absent */
    long g_idx[MK_ROLE_COUNT][2];  /* tensors outside the layers */
    long head;                /* lm_head's tensor (the token embedding when tied) */
    /* mixture of experts (0 experts: dense): E experts of which K run per token, each an
     * MLP of width Fe read when a token is routed to it; a shared expert of width Fs */
    size_t E, K, Fe, Fs;
    long *eidx;               /* [L][E][3]: the experts' gate, up, down tensors, -1 absent */
    nn_layer cur;             /* the layer loaded now */
    float *arena;             /* its storage */
    size_t cur_l;             /* its index */
    mk_nn_linear_fn lin_fn;   /* mk_nn_set_linear_hook */
    void *lin_ctx;
    size_t arena_cap;         /* floats */
};

/* Load layer l's weights into m->cur (reusing the arena). */
mk_status mk_nn_load_layer(mk_nn_model *m, size_t l);
/* Read tensor i's elements [e0, e0 + n) as f32 into dst, in parallel chunks. */
mk_status mk_nn_read(mk_nn_model *m, size_t i, uint64_t e0, uint64_t n, float *dst);

/* The MoE MLP of layer l (nn/moe.c): out[N, H] from the normed h[N, H] and the layer's
 * router (and shared expert) in w; the experts' weights are read as tokens need them. */
mk_status mk_nn_moe_mlp(mk_nn_model *m, size_t l, const nn_layer *w, size_t N, const float *h, float *out);

#endif
