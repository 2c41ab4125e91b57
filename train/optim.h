/* optim.h - the optimizer side of training: AdamW as torch.optim.AdamW computes it (decoupled
 * weight decay, bias-corrected moments, f32 state), the learning-rate schedules of
 * transformers' get_{constant,linear,cosine}_schedule_with_warmup, and global-norm clipping
 * as torch.nn.utils.clip_grad_norm_. Reductions run in fixed blocks in a fixed order: the
 * same bytes at any thread count.
 * Must not: know the model (it sees flat buffers).
 */
#ifndef MK_TRAIN_OPTIM_H
#define MK_TRAIN_OPTIM_H

#include "../core/mk_core.h"

typedef enum mk_sched { MK_SCHED_CONSTANT, MK_SCHED_LINEAR, MK_SCHED_COSINE, MK_SCHED_COUNT } mk_sched;

/* "constant" | "linear" | "cosine"; MK_SCHED_COUNT for anything else. */
mk_sched mk_sched_parse(const char *name);
const char *mk_sched_name(mk_sched s);
/* The learning rate of optimizer step `step` (0-based) of `total`: a linear warmup from 0
 * over `warmup` steps, then constant, linear to 0, or half a cosine to 0. */
double mk_sched_lr(mk_sched s, double lr, long step, long warmup, long total);

typedef struct mk_adamw {
    double beta1, beta2, eps, weight_decay;
} mk_adamw;

/* One AdamW step (step = 1, 2, ... for the bias correction) on n elements: w, m, v updated
 * in place from the gradient g; decay: whether weight decay applies to this tensor. */
void mk_adamw_step(const mk_adamw *o, double lr, long step, bool decay, float *w, const float *g, float *m, float *v,
                   uint64_t n);

/* The L2 norm of g[n] (summed in double in fixed blocks, in order). */
double mk_grad_norm(const float *g, uint64_t n);
/* Scale g so its norm is at most max_norm (torch: coefficient max_norm / (norm + 1e-6),
 * clamped to 1); returns the coefficient applied. max_norm <= 0: nothing. */
float mk_grad_clip(float *g, uint64_t n, double norm, double max_norm);

#endif
