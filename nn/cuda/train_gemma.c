/* train_gemma.c - see train_gemma.h. */
#include "train_gemma.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mk_cuda.h"
#include "mk_cuda_norm.h"

struct mk_cu_gemma {
    size_t n, H;
    float scale; /* sqrt(hidden) in f32, as nn/backward.c */
    float *w1p;  /* device [n, H]: each norm's 1 + w */
    float *ones; /* host [H] */
};

uint64_t mk_cu_gemma_bytes(size_t n_norms, size_t H) { return (uint64_t)n_norms * H * sizeof(float); }

mk_status mk_cu_gemma_open(const mk_model_config *c, size_t n_norms, size_t H, bool bf16, mk_cu_gemma **out)
{
    *out = NULL;
    const mk_arch_def *d = c->arch.def;
    if (!d || strcmp(d->name, "gemma") != 0) return MK_OK;
    if (bf16)
        return mk_error(MK_ERR_UNSUPPORTED, "the CUDA trainer's bf16 path trains llama and mistral; gemma (GeGLU, (1 + w) "
                                            "norms) runs in f32 on the device (--dtype f32), or in bf16 on the CPU");
    mk_cu_gemma *gm = mk_calloc(1, sizeof *gm);
    if (!gm) return MK_ERR_NOMEM;
    gm->n = n_norms, gm->H = H, gm->scale = (float)sqrt((double)H);
    gm->ones = mk_malloc((H ? H : 1) * sizeof(float));
    mk_status s = gm->ones ? mk_cu_alloc((void **)&gm->w1p, mk_cu_gemma_bytes(n_norms, H)) : MK_ERR_NOMEM;
    if (s != MK_OK) {
        mk_cu_gemma_close(gm);
        return s;
    }
    for (size_t i = 0; i < H; i++) gm->ones[i] = 1.0f;
    *out = gm;
    return MK_OK;
}

void mk_cu_gemma_close(mk_cu_gemma *gm)
{
    if (!gm) return;
    mk_cu_free(gm->w1p);
    free(gm->ones);
    free(gm);
}

mk_status mk_cu_gemma_norm_set(mk_cu_gemma *gm, size_t i, const float *w)
{
    if (!gm || i >= gm->n) return MK_OK;
    float *f = gm->w1p + i * gm->H;
    MK_TRY(mk_cu_put(f, gm->ones, gm->H * sizeof(float)));
    mk_cu_add(f, w, gm->H); /* 1 + w: the CPU's (1.0f + w[i]) */
    return MK_OK;
}

const float *mk_cu_gemma_norm(const mk_cu_gemma *gm, size_t i, const float *w)
{
    return gm && i < gm->n ? gm->w1p + i * gm->H : w;
}

void mk_cu_gemma_embed(const mk_cu_gemma *gm, float *x, size_t n)
{
    if (gm) mk_cu_scale(x, gm->scale, n);
}

void mk_cu_gemma_act(const mk_cu_gemma *gm, const float *gate, const float *up, float *out, size_t n)
{
    if (gm) mk_cu_geglu(gate, up, out, n);
    else mk_cu_swiglu(gate, up, out, n);
}

void mk_cu_gemma_act_bwd(const mk_cu_gemma *gm, const float *gate, const float *up, const float *dout, size_t n, float *dgate,
                         float *dup)
{
    if (gm) mk_cu_geglu_bwd(gate, up, dout, n, dgate, dup);
    else mk_cu_swiglu_bwd(gate, up, dout, n, dgate, dup);
}
