/* nf4hold.c - see nf4hold.h. */
#include "nf4hold.h"

#include "bnb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct held_tensor {
    uint8_t *codes;
    float *absmax;
} held_tensor;

struct mk_qlora {
    mk_source *src;
    held_tensor *t; /* [src->n_tensors] */
};

uint64_t mk_qlora_bytes(uint64_t n) { return (n + 1) / 2 + 4 * mk_bnb_nblocks(n, MK_QLORA_BLOCK); }

/* The first time: read the values into dst (the caller's scratch), check them, keep the codes. */
static mk_status hold(mk_qlora *q, size_t i, float *dst, uint64_t n)
{
    const mk_tensor_info *ti = &q->src->tensors[i];
    void *scratch = mk_malloc(n * mk_dtype_size(ti->dtype) + 1);
    if (!scratch) return MK_ERR_NOMEM;
    mk_status s = mk_source_read_f32(q->src, i, 0, n, dst, scratch);
    free(scratch);
    MK_TRY(s);
    for (uint64_t e = 0; e < n; e++)
        if (!isfinite(dst[e]))
            return mk_error(MK_ERR_NUMERIC, "%s: tensor %s: element %llu is %g; NF4 holds finite values only", q->src->path,
                            ti->name, (unsigned long long)e, dst[e]);
    held_tensor *h = &q->t[i];
    h->codes = mk_malloc((n + 1) / 2);
    h->absmax = mk_malloc(mk_bnb_nblocks(n, MK_QLORA_BLOCK) * sizeof(float));
    if (!h->codes || !h->absmax) {
        free(h->codes), free(h->absmax);
        *h = (held_tensor){0};
        return MK_ERR_NOMEM;
    }
    mk_bnb4_quantize(MK_BNB_NF4, MK_QLORA_BLOCK, dst, (size_t)n, h->absmax, h->codes, NULL, NULL);
    return MK_OK;
}

mk_status mk_nf4_hold_fill(void *ctx, size_t i, float *dst, uint64_t n)
{
    mk_qlora *q = ctx;
    if (i >= q->src->n_tensors || n != q->src->tensors[i].numel)
        return mk_error(MK_ERR_USAGE, "qlora: tensor %zu: %llu elements asked", i, (unsigned long long)n);
    if (!q->t[i].codes) MK_TRY(hold(q, i, dst, n));
    mk_bnb4_dequant(MK_BNB_NF4, MK_QLORA_BLOCK, q->t[i].codes, q->t[i].absmax, 0, (size_t)n, dst);
    return MK_OK;
}

mk_status mk_nf4_hold_codes(void *ctx, size_t i, uint64_t n, const uint8_t **codes, const float **absmax, const float **table)
{
    mk_qlora *q = ctx;
    if (i >= q->src->n_tensors || n != q->src->tensors[i].numel)
        return mk_error(MK_ERR_USAGE, "qlora: tensor %zu: %llu elements asked", i, (unsigned long long)n);
    if (!q->t[i].codes) {
        float *tmp = mk_malloc((n ? n : 1) * sizeof *tmp);
        mk_status s = tmp ? hold(q, i, tmp, n) : MK_ERR_NOMEM;
        free(tmp);
        MK_TRY(s);
    }
    *codes = q->t[i].codes, *absmax = q->t[i].absmax, *table = mk_bnb4_decode[MK_BNB_NF4];
    return MK_OK;
}

mk_status mk_qlora_new(mk_source *src, mk_qlora **out)
{
    *out = NULL;
    mk_qlora *q = mk_calloc(1, sizeof *q);
    if (!q || !(q->t = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *q->t))) {
        free(q);
        return MK_ERR_NOMEM;
    }
    q->src = src;
    *out = q;
    return MK_OK;
}

void mk_qlora_free(mk_qlora *q)
{
    if (!q) return;
    for (size_t i = 0; i < q->src->n_tensors; i++) free(q->t[i].codes), free(q->t[i].absmax);
    free(q->t);
    free(q);
}
