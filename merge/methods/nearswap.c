/* nearswap.c - NearSwap (https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001),
 * as mergekit 0.1.5: take the other model's value where it is within t of the base,
 * interpolate toward the base as the difference grows:
 * w = clamp(t / max(|base - x|, 1e-6), 0, 1); out = w x + (1 - w) base. */
#include "kernel.h"

enum { P_T };

static const mk_param_def nearswap_params[] = {
    [P_T] = {"t", MK_PS_GLOBAL, 0, true, false, "distance below which the other model's value is taken", MK_PR_NONNEG},
    {0},
};

static mk_status nearswap_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)user;
    const mk_dtype dt = job->compute_dtype;
    const float *a = ch->in[job->base], *x = ch->in[job->base == 0 ? 1 : 0];
    const float t = (float)job->g[P_T], lo = RD(1e-6f);
    for (uint64_t i = 0; i < ch->n; i++) {
        float d = fabsf(RD(a[i] - x[i]));
        if (d < lo) d = lo;
        float w = RD(RD(1.0f / d) * t); /* Python t / tensor: reciprocal, then multiply */
        w = w < 0 ? 0 : w > 1 ? 1 : w;
        ch->out[i] = RD(RD(w * x[i]) + RD(RD(1.0f - w) * a[i]));
    }
    return MK_OK;
}

static mk_status nearswap_run(const mk_merge_job *job) { return job->pass(job, nearswap_chunk, NULL, true); }
static bool nearswap_identity(const mk_merge_job *job) { return job->n_in == 1; }

const mk_method mk_method_nearswap = {
    .name = "nearswap",
    .summary = "take the other model's values where they are near the base",
    .params = nearswap_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 2,
    .max_inputs = 2,
    .missing = MK_MISSING_BASE_SINGLETON,
    .run = nearswap_run,
    .one_pass = mk_method_one_pass,
    .is_identity = nearswap_identity,
};
