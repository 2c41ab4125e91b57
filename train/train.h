/* train.h - the finetune loop on the CPU: for each optimizer step, `accum` micro-batches of
 * `batch` rows (data.h's seeded order), forward and backward through nn/backward.h, the loss
 * normalised by the step's total token weight (so accumulation equals one large batch),
 * global-norm clipping, the schedule's learning rate and AdamW with f32 master weights and
 * moments (optim.h). Checkpoints (weights, moments, step, the log so far) are one file
 * written atomically; a resumed run continues from one and gives the same bytes as a run
 * that was never stopped. A checkpoint of another run (other model, data or options) is
 * refused. Ctrl-C saves a checkpoint at the end of the step and stops. The steps run on the
 * CPU, or on a CUDA device (mk_train_opts.device) with the same data order, loss, clipping,
 * schedule and AdamW, and the same checkpoints.
 * Must not: print (progress through the hooks).
 */
#ifndef MK_TRAIN_H
#define MK_TRAIN_H

#include "../nn/backward.h"
#include "data.h"
#include "optim.h"

typedef struct mk_train_opts {
    long steps, warmup;
    double lr, clip;
    mk_sched sched;
    mk_adamw adam;
    size_t batch, accum;
    uint64_t seed;
    bool checkpointing;
    long save_every, eval_every; /* 0 = never (a checkpoint is still saved when interrupted) */
    const char *ckpt_path;       /* NULL: no checkpoints */
    bool resume;
    long stop_after;             /* > 0: after this step save the checkpoint and stop */
    /* NULL: train on the CPU; else on a CUDA device through these functions (finetune
     * --device cuda; nn/cuda/cu_train.h): the weights and moments live there and come back to
     * t at each checkpoint, evaluation and the end */
    const struct mk_cu_train_api *device;
} mk_train_opts;

/* One line of train_log.jsonl. eval_ppl: NaN when not evaluated at this step; eval_kl: the
 * held-out KL divergence of the trained model from the base, NaN when not measured. */
typedef struct mk_train_rec {
    long step;
    double loss, lr, grad_norm, tokens_per_s, eval_ppl, eval_kl;
} mk_train_rec;

typedef struct mk_train_hooks {
    void *ctx;
    /* after each step; eta in seconds */
    void (*step)(void *ctx, const mk_train_rec *r, long steps, double eta);
    /* perplexity on held-out text with the current weights (and, where the hook can, *kl: the
     * KL divergence from the base; left NaN otherwise) */
    mk_status (*eval)(void *ctx, long step, double *ppl, double *kl);
    /* a checkpoint was written after `step` */
    void (*saved)(void *ctx, const char *path, long step);
} mk_train_hooks;

typedef struct mk_train_result {
    mk_train_rec *log;  /* [n_log], one per step done (with those of a resumed checkpoint) */
    long n_log;
    long resumed_at;    /* steps a resumed checkpoint had done; 0 */
    bool stopped;       /* stopped at stop_after, before the last step */
    uint64_t tokens;    /* tokens trained on in this process */
    double seconds;
} mk_train_result;

/* Identity of a run: the initial weights, the data and every option that changes the bytes. */
uint64_t mk_train_run_id(mk_nn_train *t, const mk_train_data *d, const mk_train_opts *o);

mk_status mk_train_run(mk_nn_train *t, mk_train_data *d, const mk_train_opts *o, const mk_train_hooks *h, mk_train_result *r);
void mk_train_result_free(mk_train_result *r);

/* Bytes of the optimizer state training keeps: gradients, two moments (weights aside). */
uint64_t mk_train_state_bytes(const mk_nn_train *t);

#endif
