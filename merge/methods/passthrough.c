/* passthrough.c - copy one model's tensor, optionally multiplied by `scale` (used for
 * frankenmerges and depth up-scaling; `scale` with filters such as o_proj/down_proj).
 * mergekit 0.1.5: scale is per input with no default; without it the tensor is copied. */
#include "kernel.h"

enum { P_SCALE };

static const mk_param_def passthrough_params[] = {
    [P_SCALE] = {"scale", MK_PS_INPUT, 1, false, false, "multiply the tensor by this", MK_PR_ANY},
    {0},
};

static mk_status passthrough_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)user;
    const mk_dtype dt = job->compute_dtype;
    float s = (float)job->m[0][P_SCALE];
    const float *x = ch->in[0];
    for (uint64_t i = 0; i < ch->n; i++) ch->out[i] = RD(x[i] * s);
    return MK_OK;
}

static mk_status passthrough_run(const mk_merge_job *job)
{
    return job->pass(job, passthrough_chunk, NULL, true);
}

static bool passthrough_identity(const mk_merge_job *job) { return !job->m_set[0][P_SCALE] || job->m[0][P_SCALE] == 1.0; }

const mk_method mk_method_passthrough = {
    .name = "passthrough",
    .summary = "copy one model's tensors (layer stacking), optionally scaled",
    .params = passthrough_params,
    .base = MK_BASE_IGNORED,
    .min_inputs = 1,
    .max_inputs = 1,
    .run = passthrough_run,
    .one_pass = mk_method_one_pass,
    .is_identity = passthrough_identity,
};
