/* train_attn.c - see train_attn.h. */
#include "train_attn.h"

#include <stdlib.h>
#include <string.h>

#include "mk_cuda.h"
#include "mk_cuda16.h"
#include "mk_cuda_flash.h"

/* the floats of one sequence's part of the kept buffer */
static size_t per_seq(const mk_cu_tattn *a) { return a->nh * a->T * (a->flash ? 2 : a->T); }

void mk_cu_tattn_fwd(const mk_cu_tattn *a, size_t s, const float *q, const float *k, const float *v, void *out, float *p)
{
    float *ps = p + s * per_seq(a);
    if (a->flash && a->bf16) mk_cu_flash_attention16(q, k, v, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, out, ps);
    else if (a->flash) mk_cu_flash_attention(q, k, v, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, out, ps);
    else if (a->bf16) mk_cu_attention16(q, k, v, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, out, ps);
    else mk_cu_attention(q, k, v, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, out, ps);
}

void mk_cu_tattn_bwd(const mk_cu_tattn *a, size_t s, const float *q, const float *k, const float *v, const float *p,
                     const float *dout, float *dq, float *dk, float *dv, float *ds)
{
    const float *ps = p + s * per_seq(a);
    if (a->flash && a->bf16)
        mk_cu_flash_attention16_bwd(q, k, v, ps, dout, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, dq, dk, dv, ds);
    else if (a->flash) mk_cu_flash_attention_bwd(q, k, v, ps, dout, a->T, a->nh, a->nkv, a->hd, a->scale, a->window, dq, dk, dv, ds);
    else if (a->bf16) mk_cu_attention16_bwd(q, k, v, ps, dout, a->T, a->nh, a->nkv, a->hd, a->scale, dq, dk, dv, ds);
    else mk_cu_attention_bwd(q, k, v, ps, dout, a->T, a->nh, a->nkv, a->hd, a->scale, dq, dk, dv, ds);
}

mk_status mk_cu_tattn_check(void)
{
    const char *e = getenv("MK_CUDA_ATTENTION");
    if (e && strcmp(e, "flash") != 0 && strcmp(e, "simple") != 0)
        return mk_error(MK_ERR_USAGE, "MK_CUDA_ATTENTION is \"%s\": flash (the fused kernel, the default) or simple", e);
    return MK_OK;
}
