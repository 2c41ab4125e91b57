/* linear.c - weighted average ("model soups", Wortsman et al. 2022,
 * https://arxiv.org/abs/2203.05482), as mergekit 0.1.5's linear method:
 * out = sum_k w_k x_k, divided by sum_k w_k when normalize (the default).
 *
 * mergekit 0.1.5 packs the weights as float32 and accumulates in float32 whatever the
 * compute dtype, then casts the result to it (0.1.4 and older materialised the weights
 * in the compute dtype, so bf16 merges used 0.30078125 for 0.3). PyTorch's addcmul_ is a
 * fused multiply-add on CPU (one rounding per model): mk_axpy_fma does the same, so results
 * match bit for bit. The base model is an ordinary input here and needs a weight like the
 * others. */
#include "kernel.h"

#include "../../core/mk_simd.h"

enum { P_WEIGHT, P_NORMALIZE };

static const mk_param_def linear_params[] = {
    [P_WEIGHT] = {"weight", MK_PS_INPUT, 0, true, false, "weight of this model", MK_PR_ANY},
    [P_NORMALIZE] = {"normalize", MK_PS_GLOBAL, 1, false, true, "divide by the sum of the weights", MK_PR_ANY},
    {0},
};

static mk_status linear_check(const mk_merge_job *job)
{
    MK_TRY(mk_check_inputs_max(job, "linear"));
    if (job->g[P_NORMALIZE] != 0) {
        float sum = 0;
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
    float w[MK_KMAX];
    float sum;
    bool normalize;
} linear_state;

static inline MK_HOT void linear_finish(const mk_dtype dt, float *out, uint64_t n, bool normalize, float sum)
{
    if (normalize) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(out[i] / sum);
    } else {
        MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(out[i]);
    }
}

MK_KCLONE static mk_status linear_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    const linear_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    float *out = ch->out;
    memset(out, 0, (size_t)ch->n * sizeof *out); /* torch starts from zeros */
    for (size_t k = 0; k < job->n_in; k++) mk_axpy_fma(out, ch->in[k], st->w[k], (size_t)ch->n);
    /* a true division, as torch does, not a multiply by the reciprocal */
    MK_DT_DISPATCH(dt, linear_finish, out, ch->n, st->normalize, st->sum);
    return MK_OK;
}

static mk_status linear_run(const mk_merge_job *job)
{
    linear_state st;
    memset(&st, 0, sizeof st);
    MK_TRY(mk_check_inputs_max(job, "linear"));
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
    .base = MK_BASE_IGNORED,
    .min_inputs = 1,
    .check = linear_check,
    .run = linear_run,
    .one_pass = mk_method_one_pass,
};
