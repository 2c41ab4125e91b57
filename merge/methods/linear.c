/* linear.c - weighted average ("model soups", Wortsman et al. 2022), as mergekit's
 * linear method: out = sum_k w_k x_k, divided by sum_k w_k when normalize (default).
 *
 * mergekit 0.1.5 computes in f32 whatever the recipe dtype: weights as f32, a running sum
 * with PyTorch's addcmul_ (one fused multiply-add per model, so one rounding), then a true
 * division by the f32 sum of the weights, then the cast to the output dtype. We do the
 * same operations in the same order, so results match bit for bit. (Before 0.1.5 the
 * weights were materialised in the compute dtype: 0.3 became 0.30078125 in bf16.) */
#include "../method.h"

#include "../../core/mk_simd.h"

#include <math.h>
#include <string.h>

enum { P_WEIGHT, P_NORMALIZE };

static const mk_param_def linear_params[] = {
    [P_WEIGHT] = {"weight", MK_PS_MODEL, 0, true, false, "weight of this model"},
    [P_NORMALIZE] = {"normalize", MK_PS_GLOBAL, 1, false, true, "divide by the sum of the weights"},
    {0},
};

static mk_status linear_check(const mk_merge_job *job)
{
    if (job->n_in == 0) return mk_error(MK_ERR_RECIPE, "tensor %s: no input model has it", job->name);
    if (job->g[P_NORMALIZE] != 0) {
        double sum = 0;
        for (size_t k = 0; k < job->n_in; k++) sum += (float)job->m[k][P_WEIGHT];
        if (sum == 0)
            return mk_error(MK_ERR_RECIPE,
                            "tensor %s: the weights sum to 0, so normalize would divide by zero "
                            "(set normalize: false or change the weights)",
                            job->name);
    }
    return MK_OK;
}

typedef struct linear_state {
    float w[64];
    float sum;
    bool normalize;
} linear_state;

static mk_status linear_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    const linear_state *st = user;
    float *out = ch->out;
    memset(out, 0, (size_t)ch->n * sizeof *out);
    for (size_t k = 0; k < job->n_in; k++) mk_axpy_fma(out, ch->in[k], st->w[k], (size_t)ch->n);
    if (st->normalize) {
        /* a true division, as torch does, not a multiply by the reciprocal */
        float s = st->sum;
        for (uint64_t i = 0; i < ch->n; i++) out[i] = out[i] / s;
    }
    return MK_OK;
}

static mk_status linear_run(const mk_merge_job *job)
{
    linear_state st;
    memset(&st, 0, sizeof st);
    if (job->n_in > 64) return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: linear supports at most 64 models", job->name);
    for (size_t k = 0; k < job->n_in; k++) {
        st.w[k] = (float)job->m[k][P_WEIGHT];
        st.sum += st.w[k];
    }
    st.normalize = job->g[P_NORMALIZE] != 0;
    return job->pass(job, linear_chunk, &st, true);
}

const mk_method mk_method_linear = {
    .name = "linear",
    .summary = "weighted average of the models (model soups)",
    .params = linear_params,
    .check = linear_check,
    .run = linear_run,
};
