/* train.c - see train.h. Checkpoint file: a 64-byte header ("MKCKPT01", run id, step,
 * elements, log records, then zeros; little-endian u64), the weights, the first and second
 * moments (f32, numel each) and the log records (7 doubles each). */
#include "train.h"

#include "../core/mk_hash.h"
#include "../core/mk_io.h"
#include "../nn/cuda/cu_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_MAGIC "MKCKPT02"
#define HDR 64

uint64_t mk_train_state_bytes(const mk_nn_train *t) { return 12 * mk_nn_train_numel(t); }

uint64_t mk_train_run_id(mk_nn_train *t, const mk_train_data *d, const mk_train_opts *o)
{
    mk_hasher *h = mk_hasher_new();
    if (!h) return 0;
    mk_hasher_update(h, mk_nn_train_weights(t), mk_nn_train_numel(t) * sizeof(float));
    uint64_t nf;
    const float *frozen = mk_nn_train_frozen(t, &nf); /* LoRA: the base it adapts */
    if (frozen) mk_hasher_update(h, frozen, nf * sizeof(float));
    mk_hasher_update(h, d->tok, d->n_rows * d->seq * sizeof *d->tok);
    mk_hasher_update(h, d->w, d->n_rows * d->seq * sizeof *d->w);
    double f[] = {o->lr, o->clip, o->adam.beta1, o->adam.beta2, o->adam.eps, o->adam.weight_decay};
    uint64_t u[] = {(uint64_t)o->steps, (uint64_t)o->warmup, o->sched, o->batch, o->accum, o->seed, d->seq,
                    mk_nn_train_bf16(t) ? 16u : 32u}; /* the compute precision */
    mk_hasher_update(h, f, sizeof f);
    mk_hasher_update(h, u, sizeof u);
    mk_hash128 r = mk_hasher_digest(h);
    mk_hasher_free(h);
    return r.lo ^ r.hi;
}

typedef struct state {
    float *m, *v;
    mk_train_rec *log;
    long n_log, cap;
    uint64_t run_id;
    const mk_cu_train_api *dev; /* the device's trainer, or NULL */
    mk_cu_train *g;
} state;

/* The device's weights (and moments) back into t's buffer (and s's). */
static mk_status from_device(mk_nn_train *t, state *s, bool moments)
{
    if (!s->g) return MK_OK;
    MK_TRY(s->dev->get(s->g, mk_nn_train_weights(t), NULL));
    return moments ? s->dev->get_moments(s->g, s->m, s->v) : MK_OK;
}

static mk_status write_all(FILE *f, const void *p, size_t n, const char *path)
{
    return fwrite(p, 1, n, f) == n ? MK_OK : mk_error(MK_ERR_IO, "%s: write failed", path);
}

static mk_status ckpt_save(mk_nn_train *t, state *s, long step, const char *path)
{
    MK_TRY(from_device(t, s, true));
    mk_outdir od;
    MK_TRY(mk_outdir_begin(&od, path, true, true, false));
    uint64_t n = mk_nn_train_numel(t), hdr[HDR / 8] = {0};
    memcpy(hdr, CKPT_MAGIC, 8);
    hdr[1] = s->run_id, hdr[2] = (uint64_t)step, hdr[3] = n, hdr[4] = (uint64_t)s->n_log;
    FILE *f = fopen(od.tmp_path, "wb");
    mk_status st = f ? MK_OK : mk_error(MK_ERR_IO, "%s: cannot create", od.tmp_path);
    if (st == MK_OK) st = write_all(f, hdr, HDR, path);
    if (st == MK_OK) st = write_all(f, mk_nn_train_weights(t), n * 4, path);
    if (st == MK_OK) st = write_all(f, s->m, n * 4, path);
    if (st == MK_OK) st = write_all(f, s->v, n * 4, path);
    for (long i = 0; i < s->n_log && st == MK_OK; i++) {
        const mk_train_rec *r = &s->log[i];
        double rec[7] = {(double)r->step, r->loss, r->lr, r->grad_norm, r->tokens_per_s, r->eval_ppl, r->eval_kl};
        st = write_all(f, rec, sizeof rec, path);
    }
    if (f && fclose(f) != 0 && st == MK_OK) st = mk_error(MK_ERR_IO, "%s: write failed", path);
    if (st == MK_OK) st = mk_outdir_commit(&od);
    else mk_outdir_abort(&od);
    return st;
}

static mk_status log_push(state *s, const mk_train_rec *r)
{
    if (s->n_log == s->cap) {
        long cap = s->cap ? 2 * s->cap : 256;
        mk_train_rec *n = realloc(s->log, (size_t)cap * sizeof *n);
        if (!n) return MK_ERR_NOMEM;
        s->log = n, s->cap = cap;
    }
    s->log[s->n_log++] = *r;
    return MK_OK;
}

static mk_status read_all(FILE *f, void *p, size_t n, const char *path)
{
    return fread(p, 1, n, f) == n ? MK_OK : mk_error(MK_ERR_FORMAT, "%s: the checkpoint is truncated", path);
}

static mk_status ckpt_load(mk_nn_train *t, state *s, long steps, const char *path, long *step)
{
    FILE *f = fopen(path, "rb");
    if (!f) return mk_error(MK_ERR_USAGE, "--resume: no checkpoint %s (it is written every --save-every steps)", path);
    uint64_t hdr[HDR / 8], n = mk_nn_train_numel(t);
    mk_status st = read_all(f, hdr, HDR, path);
    if (st == MK_OK && memcmp(hdr, CKPT_MAGIC, 8) != 0) st = mk_error(MK_ERR_FORMAT, "%s: not a finetune checkpoint", path);
    if (st == MK_OK && (hdr[1] != s->run_id || hdr[3] != n))
        st = mk_error(MK_ERR_USAGE, "%s is the checkpoint of another run (another model, data or options); --resume continues "
                                    "only the run that wrote it", path);
    if (st == MK_OK && (hdr[2] > (uint64_t)steps || hdr[4] != hdr[2]))
        st = mk_error(MK_ERR_FORMAT, "%s: the checkpoint's step count is inconsistent", path);
    if (st == MK_OK) st = read_all(f, mk_nn_train_weights(t), n * 4, path);
    if (st == MK_OK) st = read_all(f, s->m, n * 4, path);
    if (st == MK_OK) st = read_all(f, s->v, n * 4, path);
    for (uint64_t i = 0; i < hdr[4] && st == MK_OK; i++) {
        double rec[7];
        st = read_all(f, rec, sizeof rec, path);
        mk_train_rec r = {(long)rec[0], rec[1], rec[2], rec[3], rec[4], rec[5], rec[6]};
        if (st == MK_OK) st = log_push(s, &r);
    }
    fclose(f);
    if (st == MK_OK) *step = (long)hdr[2];
    return st;
}

/* One optimizer step: accum micro-batches, then clip and AdamW. */
static mk_status one_step(mk_nn_train *t, mk_train_data *d, const mk_train_opts *o, state *s, long step, int32_t *tok,
                          float *w, mk_train_rec *rec)
{
    size_t B = o->batch, T = d->seq;
    uint64_t n = mk_nn_train_numel(t);
    float *g = mk_nn_train_grads(t), *wt = mk_nn_train_weights(t);
    double tw = 0, wnll = 0;
    uint64_t k0 = (uint64_t)step * o->accum * B;
    for (uint64_t k = 0; k < o->accum * B; k++) { /* the step's total weight first: accumulation = one big batch */
        size_t row;
        MK_TRY(mk_train_data_row(d, o->seed, k0 + k, &row));
        for (size_t j = 1; j < T; j++) tw += d->w[row * T + j];
    }
    if (s->g) s->dev->zero_grad(s->g);
    else memset(g, 0, n * sizeof *g);
    for (size_t a = 0; a < o->accum; a++) {
        for (size_t b = 0; b < B; b++) {
            size_t row;
            MK_TRY(mk_train_data_row(d, o->seed, k0 + a * B + b, &row));
            memcpy(tok + b * T, d->tok + row * T, T * sizeof *tok);
            memcpy(w + b * T, d->w + row * T, T * sizeof *w);
        }
        float scale = tw > 0 ? (float)(1.0 / tw) : 0.0f;
        MK_TRY(s->g ? s->dev->pass(s->g, tok, w, B, T, scale, true, &wnll)
                    : mk_nn_train_pass(t, tok, w, B, T, scale, o->checkpointing, true, &wnll, NULL));
    }
    double lr = mk_sched_lr(o->sched, o->lr, step, o->warmup, o->steps), norm = 0;
    if (s->g) { /* on the device: clip and AdamW there (not over a norm that is not finite) */
        const mk_adamw *a = &o->adam;
        MK_TRY(s->dev->step(s->g, a->beta1, a->beta2, a->eps, a->weight_decay, lr, step + 1, o->clip, &norm));
        if (!isfinite(norm)) return mk_error(MK_ERR_NUMERIC, "step %ld: the gradient norm is %g (lower --lr?)", step + 1, norm);
        *rec = (mk_train_rec){step + 1, tw > 0 ? wnll / tw : 0, lr, norm, 0, NAN, NAN};
        return MK_OK;
    }
    norm = mk_grad_norm(g, n);
    if (!isfinite(norm)) return mk_error(MK_ERR_NUMERIC, "step %ld: the gradient norm is %g (lower --lr?)", step + 1, norm);
    mk_grad_clip(g, n, norm, o->clip);
    for (size_t i = 0; i < mk_nn_train_n_params(t); i++) {
        const mk_nn_param *p = mk_nn_train_param(t, i);
        mk_adamw_step(&o->adam, lr, step + 1, p->decay, wt + p->off, g + p->off, s->m + p->off, s->v + p->off, p->numel);
    }
    *rec = (mk_train_rec){step + 1, tw > 0 ? wnll / tw : 0, lr, norm, 0, NAN, NAN};
    return MK_OK;
}

mk_status mk_train_run(mk_nn_train *t, mk_train_data *d, const mk_train_opts *o, const mk_train_hooks *h, mk_train_result *r)
{
    memset(r, 0, sizeof *r);
    if (o->steps < 1 || !o->batch || !o->accum) return mk_error(MK_ERR_USAGE, "finetune: nothing to do (0 steps or rows)");
    uint64_t n = mk_nn_train_numel(t);
    state s = {0};
    s.run_id = mk_train_run_id(t, d, o);
    s.m = mk_calloc(n ? n : 1, sizeof(float));
    s.v = mk_calloc(n ? n : 1, sizeof(float));
    int32_t *tok = mk_malloc(o->batch * d->seq * sizeof *tok);
    float *w = mk_malloc(o->batch * d->seq * sizeof *w);
    mk_status st = s.m && s.v && tok && w ? MK_OK : MK_ERR_NOMEM;
    long step = 0;
    if (st == MK_OK && o->resume && o->ckpt_path) st = ckpt_load(t, &s, o->steps, o->ckpt_path, &step);
    r->resumed_at = step;
    if (st == MK_OK && o->device) {
        s.dev = o->device;
        st = s.dev->open(t, o->batch, d->seq, o->checkpointing, &s.g);
        if (st == MK_OK && step > 0) st = s.dev->put(s.g, mk_nn_train_weights(t), s.m, s.v);
    }
    double t0 = mk_now();
    for (; step < o->steps && st == MK_OK; step++) {
        double ts = mk_now();
        mk_train_rec rec;
        st = one_step(t, d, o, &s, step, tok, w, &rec);
        if (st != MK_OK) break;
        double dt = mk_now() - ts;
        uint64_t ntok = (uint64_t)o->accum * o->batch * d->seq;
        r->tokens += ntok;
        rec.tokens_per_s = dt > 0 ? (double)ntok / dt : 0;
        if (h && h->eval && o->eval_every > 0 && (rec.step % o->eval_every == 0 || rec.step == o->steps)) {
            st = from_device(t, &s, false);
            if (st == MK_OK) st = h->eval(h->ctx, rec.step, &rec.eval_ppl, &rec.eval_kl);
        }
        if (st == MK_OK) st = log_push(&s, &rec);
        if (st != MK_OK) break;
        double el = mk_now() - t0, eta = el / (double)(step + 1 - r->resumed_at) * (double)(o->steps - step - 1);
        if (h && h->step) h->step(h->ctx, &rec, o->steps, eta);
        bool stop = mk_interrupted(), pause = o->stop_after > 0 && rec.step == o->stop_after && rec.step < o->steps;
        if (o->ckpt_path && ((o->save_every > 0 && rec.step % o->save_every == 0 && rec.step < o->steps) || stop || pause)) {
            st = ckpt_save(t, &s, rec.step, o->ckpt_path);
            if (st == MK_OK && h && h->saved) h->saved(h->ctx, o->ckpt_path, rec.step);
        }
        if (st == MK_OK && pause && !stop) {
            if (!o->ckpt_path) st = mk_error(MK_ERR_USAGE, "stopping after step %ld needs a checkpoint path", rec.step);
            r->stopped = true;
            break;
        }
        if (st == MK_OK && stop)
            st = mk_error(MK_ERR_IO, "interrupted after step %ld of %ld%s", rec.step, o->steps,
                          o->ckpt_path ? "; the checkpoint is saved, --resume continues" : "");
    }
    r->seconds = mk_now() - t0;
    if (s.g) { /* the trained weights back in t, for the output */
        mk_status gs = from_device(t, &s, false);
        if (st == MK_OK) st = gs;
        s.dev->close(s.g);
    }
    r->log = s.log, r->n_log = s.n_log;
    free(s.m), free(s.v), free(tok), free(w);
    return st;
}

void mk_train_result_free(mk_train_result *r)
{
    free(r->log);
    memset(r, 0, sizeof *r);
}
